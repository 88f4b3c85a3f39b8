//! Observe: read the Secrets a reconcile needs (one by one, never a cluster-wide cache), turn
//! the spec into the desired remote state, and look at the remote (shared inventory, Get only
//! when the plan needs it).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use super::error::{self, Error, Result};
use super::inventory::InventoryKey;
use super::plan::{
    self, Desired, PendingCreate, Recorded, RemoteDeletedPolicy, RemoteDetail, RemoteSummary,
};
use super::status::parse_rfc3339;
use crate::crd::{ChatConfiguration, ChatConfigurationStatus, SecretKeyRef};
use oos_client::client::OosClient;
use oos_client::credentials::{Credentials, StaticCredentials};
use oos_client::secret::{ExposeSecret, SecretString};
use oos_client::types::{
    ChatConfiguration as RemoteChatConfiguration, ChatConfigurationInput, ChatConfigurationSummary,
    ChatSettings, ChatType,
};

/// Everything read for one reconcile; secret values stay in `SecretString`s.
pub struct Inputs {
    pub desired: Desired,
    /// Secret `Configuration` key → value.
    pub secret_values: BTreeMap<String, SecretString>,
}

/// Reads Secrets by name within one namespace, each at most once per reconcile.
pub struct SecretReader {
    api: Api<Secret>,
    namespace: String,
    cache: BTreeMap<String, Option<Secret>>,
}

impl SecretReader {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            cache: BTreeMap::new(),
        }
    }

    /// Reads each of `names` (once; later reads in this reconcile use the copy).
    pub async fn prefetch(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            self.secret(name).await?;
        }
        Ok(())
    }

    /// Every Secret read so far with its resourceVersion (`None`: it does not exist): what the
    /// reconcile's inputs were, without their values.
    pub fn versions(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.cache.iter().map(|(name, s)| {
            (
                name.as_str(),
                s.as_ref()
                    .map(|s| s.metadata.resource_version.as_deref().unwrap_or_default()),
            )
        })
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>> {
        if !self.cache.contains_key(name) {
            let found = self.api.get_opt(name).await?;
            self.cache.insert(name.to_string(), found);
        }
        Ok(self.cache.get(name).and_then(Option::as_ref))
    }

    /// The value of `key` in Secret `name`; a missing Secret or key is an error naming both, a
    /// value that can never be sent (not UTF-8, a control or invisible character) one naming
    /// the key and the problem, never the value.
    pub async fn value(&mut self, name: &str, key: &str) -> Result<SecretString> {
        let namespace = self.namespace.clone();
        let missing = |problem: String| Error::SecretMissing {
            namespace: namespace.clone(),
            name: name.to_string(),
            problem,
        };
        let invalid = |problem: String| Error::SecretInvalid {
            namespace: namespace.clone(),
            name: name.to_string(),
            key: key.to_string(),
            problem,
        };
        let Some(secret) = self.secret(name).await? else {
            return Err(missing("not found".into()));
        };
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
            return Err(missing(format!(
                "has no key {key:?} ({})",
                describe_keys(secret)
            )));
        };
        let text = std::str::from_utf8(&bytes.0)
            .map_err(|_| invalid("is not UTF-8 text; store the value as text".into()))?;
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(missing(format!("key {key:?} is empty")));
        }
        if trimmed.contains(crate::crd::SECRET_PLACEHOLDER_MARKER) {
            return Err(Error::SecretPlaceholder {
                namespace,
                name: name.to_string(),
                key: key.to_string(),
            });
        }
        if let Some(c) = trimmed.chars().find(|c| crate::crd::is_forbidden_char(*c)) {
            return Err(invalid(format!(
                "contains a control or invisible character (U+{:04X}); remove it",
                c as u32
            )));
        }
        Ok(SecretString::from(trimmed))
    }

    /// A value sent in `Configuration`: [`value`](Self::value), at most
    /// [`MAX_SECRET_VALUE_CHARS`] characters (the limit admission puts on the non-secret ones).
    pub async fn key_ref(&mut self, r: &SecretKeyRef) -> Result<SecretString> {
        let value = self.value(&r.name, &r.key).await?;
        let chars = value.expose_secret().chars().count();
        if chars > MAX_SECRET_VALUE_CHARS {
            return Err(Error::SecretInvalid {
                namespace: self.namespace.clone(),
                name: r.name.clone(),
                key: r.key.clone(),
                problem: format!(
                    "is {chars} characters long; at most {MAX_SECRET_VALUE_CHARS} are sent to OOS"
                ),
            });
        }
        Ok(value)
    }

    /// Refuses, before the first remote write, an output Secret that exists and is not this
    /// object's: otherwise the remote would be written first and the conflict found after.
    async fn check_output_secret(&mut self, obj: &ChatConfiguration) -> Result<()> {
        let Some(r) = &obj.spec.output_secret_ref else {
            return Ok(());
        };
        let Some(existing) = self.secret(&r.name).await? else {
            return Ok(());
        };
        let owned = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == obj.metadata.uid.as_ref());
        if owned {
            return Ok(());
        }
        Err(Error::InvalidSpec(format!(
            "spec.outputSecretRef: Secret {}/{} exists and is not owned by this ChatConfiguration",
            self.namespace, r.name
        )))
    }

    /// Explicit credentials from `spec.credentialsRef`.
    pub async fn credentials(&mut self, name: &str) -> Result<Credentials> {
        let access_key_id = self
            .value(name, "AccessKeyId")
            .await?
            .expose_secret()
            .to_string();
        let access_key_secret = self.value(name, "AccessKeySecret").await?;
        let has_token = self
            .secret(name)
            .await?
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key("SecurityToken"));
        let security_token = if has_token {
            Some(self.value(name, "SecurityToken").await?)
        } else {
            None
        };
        Ok(Credentials {
            access_key_id,
            access_key_secret,
            security_token,
        })
    }
}

/// Longest secret value sent in `Configuration`, in characters: the limit admission puts on
/// `spec.extraConfiguration` values.
pub const MAX_SECRET_VALUE_CHARS: usize = 4096;

/// Largest `Configuration` parameter, percent-encoded as the client sends it in the query: OOS
/// refuses a query over 64 KiB (emulator assumption A16); the other parameters (Name, RegionId,
/// Type, RamRole, ResourceGroupId and the parameter names) take less than 512 bytes.
pub const MAX_CONFIGURATION_QUERY_BYTES: usize = 64 * 1024 - 512;

/// `it is of type kubernetes.io/tls, with keys tls.crt, tls.key`: what a Secret lacking a key has
/// instead (key names only, never values).
fn describe_keys(secret: &Secret) -> String {
    let mut keys: Vec<&str> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let listed = if keys.is_empty() {
        "no keys".to_string()
    } else {
        let more = keys.len().saturating_sub(10);
        keys.truncate(10);
        let mut l = format!("keys {}", keys.join(", "));
        if more > 0 {
            l.push_str(&format!(" and {more} more"));
        }
        l
    };
    match secret.type_.as_deref() {
        Some(t) if t != "Opaque" => format!("it is of type {t}, with {listed}"),
        _ => format!("it has {listed}"),
    }
}

/// Upper bound of the length of `s` as a JSON string's content, percent-encoded (RFC 3986
/// unreserved bytes stay, every other byte takes 3).
fn encoded_json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' => 1,
            '"' | '\\' => 6,
            c if (c as u32) < 0x20 => 8,
            c => 3 * c.len_utf8(),
        })
        .sum()
}

/// Upper bound of the percent-encoded `Configuration` JSON object of `configuration` and
/// `secrets` (each entry: two quoted strings, a colon and a comma; the braces).
fn encoded_configuration_len(
    configuration: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretString>,
) -> usize {
    let entry = |k: &str, v: &str| encoded_json_len(k) + encoded_json_len(v) + 6 * 3;
    6 + configuration
        .iter()
        .map(|(k, v)| entry(k, v))
        .chain(secrets.iter().map(|(k, v)| entry(k, v.expose_secret())))
        .sum::<usize>()
}

/// The desired state of everything but the secret values (`secret_hash` is empty): what
/// deletion's ownership fence needs, without reading the chat platform's ClientSecret.
pub fn desired_without_secrets(
    obj: &ChatConfiguration,
    on_remote_deleted: RemoteDeletedPolicy,
) -> Result<Desired> {
    let spec = &obj.spec;
    let keys = spec.chat_type.keys();
    let settings = spec.platform_settings().ok_or_else(|| {
        Error::InvalidSpec(format!(
            "spec.{} is required when spec.type is {}",
            if keys.client_id.starts_with("DingTalk") {
                "dingTalk"
            } else {
                "weChat"
            },
            spec.chat_type.as_str()
        ))
    })?;

    let mut configuration = BTreeMap::new();
    configuration.insert(keys.client_id.to_string(), settings.client_id.clone());
    if let Some(t) = &settings.template_id {
        configuration.insert(keys.template_id.to_string(), t.clone());
    }
    for (k, v) in spec.extra_configuration.iter().flatten() {
        configuration.insert(k.clone(), v.clone());
    }
    let mut secret_keys: Vec<String> = std::iter::once(keys.client_secret.to_string())
        .chain(
            spec.extra_secret_configuration
                .iter()
                .flatten()
                .map(|(k, _)| k.clone()),
        )
        .collect();
    secret_keys.sort();
    secret_keys.dedup();
    let spec_hash = plan::spec_hash(
        spec.chat_type.as_str(),
        spec.ram_role.as_deref(),
        spec.resource_group_id.as_deref(),
        &configuration,
        &secret_keys,
    );
    Ok(Desired {
        chat_type: spec.chat_type.as_str().to_string(),
        ram_role: spec.ram_role.clone(),
        resource_group_id: spec.resource_group_id.clone(),
        configuration,
        secret_keys,
        spec_hash,
        secret_hash: String::new(),
        management: spec.management_policy.unwrap_or_default(),
        adoption: spec.adoption_policy.unwrap_or_default(),
        on_remote_deleted,
    })
}

/// Whether the object holds a remote. Until it does, an output Secret that exists must be its
/// own (`check_output_secret`).
fn owns_remote(obj: &ChatConfiguration) -> bool {
    matches!(
        obj.status.as_ref().and_then(|s| s.ownership.as_deref()),
        Some("Created" | "Adopted")
    )
}

/// The Secrets a reconcile of `obj` reads: the referenced ones, and the output Secret until the
/// object holds a remote.
pub fn secrets_read_by(obj: &ChatConfiguration) -> Vec<String> {
    let mut names = obj.referenced_secrets();
    if let Some(o) = obj
        .spec
        .output_secret_ref
        .as_ref()
        .filter(|_| !owns_remote(obj))
    {
        names.push(o.name.clone());
    }
    names
}

/// Builds the desired state; reads every referenced secret value.
pub async fn read_inputs(
    obj: &ChatConfiguration,
    secrets: &mut SecretReader,
    hash_key: &[u8],
    on_remote_deleted: RemoteDeletedPolicy,
) -> Result<Inputs> {
    let mut desired = desired_without_secrets(obj, on_remote_deleted)?;
    let spec = &obj.spec;
    if !owns_remote(obj) {
        secrets.check_output_secret(obj).await?;
    }
    let settings = spec
        .platform_settings()
        .expect("desired_without_secrets checked the platform settings");
    let mut secret_values = BTreeMap::new();
    secret_values.insert(
        spec.chat_type.keys().client_secret.to_string(),
        secrets.key_ref(&settings.client_secret_ref).await?,
    );
    for (k, r) in spec.extra_secret_configuration.iter().flatten() {
        secret_values.insert(k.clone(), secrets.key_ref(r).await?);
    }
    let size = encoded_configuration_len(&desired.configuration, &secret_values);
    if size > MAX_CONFIGURATION_QUERY_BYTES {
        return Err(Error::InvalidSpec(format!(
            "the Configuration would take {size} bytes of the request once encoded; OOS accepts at most {MAX_CONFIGURATION_QUERY_BYTES}: shorten spec.extraConfiguration or the Secret values it reads"
        )));
    }
    desired.secret_hash = secret_hmac(
        hash_key,
        obj.uid().as_deref().unwrap_or_default(),
        &secret_values,
    );
    Ok(Inputs {
        desired,
        secret_values,
    })
}

/// HMAC-SHA256 of the secret values, keyed per object (operator key + object UID), so status
/// reveals nothing that could confirm a guessed secret without the operator's key.
pub fn secret_hmac(
    operator_key: &[u8],
    uid: &str,
    values: &BTreeMap<String, SecretString>,
) -> String {
    let mut key = Sha256::new();
    key.update(b"oos-chat-operator/secret-hash/v1\0");
    key.update(operator_key);
    key.update(b"\0");
    key.update(uid.as_bytes());
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key.finalize()).expect("HMAC takes any key length");
    for (k, v) in values {
        mac.update(k.as_bytes());
        mac.update(b"\0");
        mac.update(v.expose_secret().as_bytes());
        mac.update(b"\0");
    }
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The Create/Update request for the desired state.
pub fn remote_input(name: &str, inputs: &Inputs) -> ChatConfigurationInput {
    let d = &inputs.desired;
    let mut settings = ChatSettings::default();
    for (k, v) in &d.configuration {
        match k.as_str() {
            "DingTalkClientId" => settings.ding_talk_client_id = Some(v.clone()),
            "DingTalkTemplateId" => settings.ding_talk_template_id = Some(v.clone()),
            _ => {
                settings
                    .extra
                    .insert(k.clone(), serde_json::Value::String(v.clone()));
            }
        }
    }
    for (k, v) in &inputs.secret_values {
        match k.as_str() {
            "DingTalkClientSecret" => settings.ding_talk_client_secret = Some(v.clone()),
            _ => {
                settings.extra.insert(
                    k.clone(),
                    serde_json::Value::String(v.expose_secret().to_string()),
                );
            }
        }
    }
    ChatConfigurationInput {
        name: name.to_string(),
        chat_type: ChatType::parse(&d.chat_type),
        ram_role: d.ram_role.clone(),
        resource_group_id: d.resource_group_id.clone(),
        configuration: Some(settings),
    }
}

/// Flattens a Get response's `Configuration` into key → JSON value for the diff.
pub fn configuration_map(settings: &ChatSettings) -> BTreeMap<String, serde_json::Value> {
    let mut map = settings.extra.clone();
    if let Some(v) = &settings.ding_talk_client_id {
        map.insert("DingTalkClientId".into(), v.clone().into());
    }
    if let Some(v) = &settings.ding_talk_template_id {
        map.insert("DingTalkTemplateId".into(), v.clone().into());
    }
    if let Some(v) = &settings.ding_talk_client_secret {
        map.insert(
            "DingTalkClientSecret".into(),
            v.expose_secret().to_string().into(),
        );
    }
    map
}

/// The OOS client for `obj` (its `credentialsRef`, else the operator's chain) and the
/// identity of those credentials (never a secret), which keys the inventory and fences
/// ownership against a changed account.
pub async fn client_for(
    obj: &ChatConfiguration,
    ctx: &Context,
    secrets: &mut SecretReader,
) -> Result<(OosClient, String)> {
    let Some(r) = &obj.spec.credentials_ref else {
        return Ok((ctx.oos.clone(), ctx.oos.credentials_identity()));
    };
    let creds = secrets.credentials(&r.name).await?;
    let id = creds.access_key_id.clone();
    let provider = StaticCredentials::new(
        creds.access_key_id,
        creds.access_key_secret,
        creds.security_token,
    );
    Ok((ctx.oos.with_credentials(Arc::new(provider)), id))
}

/// What the status records about the remote this object owns.
pub fn recorded(status: &ChatConfigurationStatus, credentials_id: &str) -> Recorded {
    let owns = matches!(status.ownership.as_deref(), Some("Created" | "Adopted"));
    let date = |d: Option<&String>| if owns { parse_rfc3339(d) } else { None };
    Recorded {
        created_date: date(status.created_date.as_ref()),
        updated_date: date(status.updated_date.as_ref()),
        spec_hash: status.last_applied_spec_hash.clone(),
        secret_hash: status.last_applied_secret_hash.clone(),
        pending: parse_rfc3339(status.create_requested_at.as_ref()).map(|requested_at| {
            PendingCreate {
                requested_at,
                spec_hash: status.create_requested_spec_hash.clone(),
                secret_hash: status.create_requested_secret_hash.clone(),
            }
        }),
        credentials_changed: status
            .credentials_id
            .as_deref()
            .is_some_and(|recorded| recorded != credentials_id),
        late_create_until: parse_rfc3339(status.late_create_until.as_ref()),
    }
}

pub fn summary_view(s: &ChatConfigurationSummary) -> RemoteSummary {
    RemoteSummary {
        chat_type: s.chat_type.as_str().to_string(),
        ram_role: s.ram_role.clone(),
        webhook_url: s.outputs.as_ref().and_then(|o| o.url.clone()),
        created_date: s.created_date,
        updated_date: s.updated_date,
    }
}

pub fn summary_of(full: &RemoteChatConfiguration) -> ChatConfigurationSummary {
    ChatConfigurationSummary {
        name: full.name.clone(),
        chat_type: full.chat_type.clone(),
        ram_role: full.ram_role.clone(),
        outputs: full.outputs.clone(),
        created_date: full.created_date,
        updated_date: full.updated_date,
    }
}

pub fn detail_of(full: &RemoteChatConfiguration) -> RemoteDetail {
    RemoteDetail {
        resource_group_id: full.resource_group_id.clone(),
        configuration: full
            .configuration
            .as_ref()
            .map(configuration_map)
            .unwrap_or_default(),
    }
}

/// What is known of the remote after observing it.
#[derive(Default)]
pub struct Observation {
    pub summary: Option<ChatConfigurationSummary>,
    /// Present when GetChatConfiguration was called.
    pub detail: Option<RemoteDetail>,
}

impl Observation {
    pub fn view(&self) -> Option<RemoteSummary> {
        self.summary.as_ref().map(summary_view)
    }
}

/// GetChatConfiguration, with not-found as `None`.
pub async fn get_remote(oos: &OosClient, region: &str, name: &str) -> Result<Observation> {
    match oos.get_chat_configuration(region, name).await {
        Ok(full) => Ok(Observation {
            summary: Some(summary_of(&full)),
            detail: Some(detail_of(&full)),
        }),
        Err(e) if e.is_not_found() => Ok(Observation::default()),
        Err(e) => Err(error::oos("GetChatConfiguration")(e)),
    }
}

/// The remote by name: from the shared inventory (one List per interval for every object of
/// the account and region), plus a Get when the plan needs `Configuration`.
#[allow(clippy::too_many_arguments)]
pub async fn observe_remote(
    ctx: &Context,
    oos: &OosClient,
    key: &InventoryKey,
    name: &str,
    desired: &Desired,
    recorded: &Recorded,
    max_age: Duration,
    forced: bool,
) -> Result<Observation> {
    let summary = ctx
        .inventory
        .lookup(key, oos, name, max_age, forced)
        .await
        .map_err(error::oos("ListChatConfigurations"))?;
    ctx.metrics.inventory_size.set(ctx.inventory.len() as i64);
    let Some(summary) = summary else {
        return Ok(Observation::default());
    };
    if !plan::needs_detail(desired, recorded, &summary_view(&summary), forced) {
        return Ok(Observation {
            summary: Some(summary),
            detail: None,
        });
    }
    let observed = get_remote(oos, &key.region, name).await?;
    match &observed.summary {
        Some(s) => ctx.inventory.upsert(key, s.clone()).await,
        None => ctx.inventory.remove(key, name).await,
    }
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hash_is_keyed_per_object_and_changes_with_the_value() {
        let v1 = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            SecretString::from("s3cr3t"),
        )]);
        let v2 = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            SecretString::from("s3cr3t2"),
        )]);
        let a = secret_hmac(b"", "uid-a", &v1);
        assert_eq!(a, secret_hmac(b"", "uid-a", &v1), "deterministic");
        assert_ne!(a, secret_hmac(b"", "uid-b", &v1), "keyed per object");
        assert_ne!(
            a,
            secret_hmac(b"k", "uid-a", &v1),
            "keyed by the operator key"
        );
        assert_ne!(a, secret_hmac(b"", "uid-a", &v2), "changes with the value");
        let plain = hex::encode(Sha256::digest(b"s3cr3t"));
        assert!(!a.contains(&plain), "never a plain hash");
        assert!(!a.contains("s3cr3t"));
    }

    #[test]
    fn encoded_configuration_len_bounds_what_the_client_sends() {
        let configuration = BTreeMap::from([
            ("DingTalkClientId".to_string(), "ding-1".to_string()),
            (
                "Title".to_string(),
                "中文 \"quoted\" \\ a/b?c=d&e\n\t".to_string(),
            ),
        ]);
        let secrets = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            SecretString::from("s3cr3t+/=~\u{1}"),
        )]);
        let mut all: BTreeMap<String, String> = configuration.clone();
        for (k, v) in &secrets {
            all.insert(k.clone(), v.expose_secret().to_string());
        }
        let sent = oos_client::signer::percent_encode(&serde_json::to_string(&all).unwrap());
        let bound = encoded_configuration_len(&configuration, &secrets);
        assert!(sent.len() <= bound, "{} > {bound}", sent.len());
        assert!(
            bound < sent.len() + 64,
            "a tight bound: {bound} vs {}",
            sent.len()
        );
    }

    #[test]
    fn a_secret_lacking_a_key_says_what_it_has() {
        let mut s = Secret {
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        s.data = Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                k8s_openapi::ByteString(b"x".to_vec()),
            ),
            (
                "tls.key".to_string(),
                k8s_openapi::ByteString(b"y".to_vec()),
            ),
        ]));
        assert_eq!(
            describe_keys(&s),
            "it is of type kubernetes.io/tls, with keys tls.crt, tls.key"
        );
        assert_eq!(describe_keys(&Secret::default()), "it has no keys");
    }
}
