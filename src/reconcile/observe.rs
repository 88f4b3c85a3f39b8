//! Observe: read the Secrets a reconcile needs (one by one, never a cluster-wide cache) and turn
//! the spec into the desired remote state.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use super::plan::{Desired, RemoteDeletedPolicy};
use crate::crd::{ChatConfiguration, SecretKeyRef};
use oos_client::credentials::Credentials;
use oos_client::secret::SecretString;
use oos_client::types::{ChatConfigurationInput, ChatSettings, ChatType};

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

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>> {
        if !self.cache.contains_key(name) {
            let found = self.api.get_opt(name).await?;
            self.cache.insert(name.to_string(), found);
        }
        Ok(self.cache.get(name).and_then(Option::as_ref))
    }

    /// The value of `key` in Secret `name`; a missing Secret or key is an error naming both.
    pub async fn value(&mut self, name: &str, key: &str) -> Result<SecretString> {
        let namespace = self.namespace.clone();
        let missing = |problem: String| Error::SecretMissing {
            namespace: namespace.clone(),
            name: name.to_string(),
            problem,
        };
        let Some(secret) = self.secret(name).await? else {
            return Err(missing("not found".into()));
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| missing(format!("has no key {key:?}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| missing(format!("key {key:?} is not UTF-8 text")))?;
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
        Ok(SecretString::new(trimmed))
    }

    pub async fn key_ref(&mut self, r: &SecretKeyRef) -> Result<SecretString> {
        self.value(&r.name, &r.key).await
    }

    /// Explicit credentials from `spec.credentialsRef`.
    pub async fn credentials(&mut self, name: &str) -> Result<Credentials> {
        let access_key_id = self.value(name, "AccessKeyId").await?.expose().to_string();
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

/// Builds the desired state; reads every referenced secret value.
pub async fn read_inputs(
    obj: &ChatConfiguration,
    secrets: &mut SecretReader,
    hash_key: &[u8],
    on_remote_deleted: RemoteDeletedPolicy,
) -> Result<Inputs> {
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

    let mut secret_values = BTreeMap::new();
    secret_values.insert(
        keys.client_secret.to_string(),
        secrets.key_ref(&settings.client_secret_ref).await?,
    );
    for (k, r) in spec.extra_secret_configuration.iter().flatten() {
        secret_values.insert(k.clone(), secrets.key_ref(r).await?);
    }

    let secret_keys: Vec<String> = secret_values.keys().cloned().collect();
    let spec_hash = {
        let canonical = serde_json::json!({
            "type": spec.chat_type.as_str(),
            "ramRole": spec.ram_role,
            "resourceGroupId": spec.resource_group_id,
            "configuration": configuration,
            "secretKeys": secret_keys,
        });
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
        )
    };
    let secret_hash = secret_hmac(
        hash_key,
        obj.uid().as_deref().unwrap_or_default(),
        &secret_values,
    );

    Ok(Inputs {
        desired: Desired {
            chat_type: spec.chat_type.as_str().to_string(),
            ram_role: spec.ram_role.clone(),
            resource_group_id: spec.resource_group_id.clone(),
            configuration,
            secret_keys,
            spec_hash,
            secret_hash,
            management: spec.management_policy.unwrap_or_default(),
            adoption: spec.adoption_policy.unwrap_or_default(),
            on_remote_deleted,
        },
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
        mac.update(v.expose().as_bytes());
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
                settings
                    .extra
                    .insert(k.clone(), serde_json::Value::String(v.expose().to_string()));
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
        map.insert("DingTalkClientSecret".into(), v.expose().to_string().into());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hash_is_keyed_per_object_and_changes_with_the_value() {
        let v1 = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            SecretString::new("s3cr3t"),
        )]);
        let v2 = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            SecretString::new("s3cr3t2"),
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
}
