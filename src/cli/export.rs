//! `remote export`: turns the chat configurations that already exist in OOS into
//! `ChatConfiguration` manifests (`adoptionPolicy: Adopt`) plus Secret stubs, printed as
//! multi-document YAML for a Git repository.
//!
//! Everything but [`run_export`] is pure (no I/O) and unit-tested: the Kubernetes name mapping
//! ([`object_names`]), the per-remote manifest ([`build_manifest`]) and the whole document
//! ([`render`]). Secret values never reach the output: OOS masks most of them, and the ones it
//! returns in clear (keys matching [`is_sensitive_key`]) are replaced by placeholders too.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use sha2::{Digest, Sha256};

use oos_client::{
    ChatConfiguration as RemoteConfiguration, ChatSettings, ChatType, Filter, MASKED_SECRET,
    OosError,
};

use super::remote::{ConnectionArgs, client, parse_filter};
use crate::crd::{
    AdoptionPolicy, ChatConfiguration, ChatConfigurationSpec, ChatPlatform, PlatformSettings,
    SECRET_PLACEHOLDER_MARKER, SecretKeyRef,
};

// Limits of the CRD's admission rules (src/crd.rs); `limits_match_the_crd` checks them against
// the generated schema, so a change there fails the unit tests here.
/// `spec.name`: 1–128 characters, `^[A-Za-z0-9][A-Za-z0-9._-]*$`.
pub const SPEC_NAME_MAX: usize = 128;
/// `clientId`, `templateId`: 1–256 characters.
pub const PLATFORM_VALUE_MAX: usize = 256;
/// `ramRole`, `resourceGroupId`: 1–64 characters.
pub const RAM_ROLE_MAX: usize = 64;
pub const RESOURCE_GROUP_MAX: usize = 64;
/// `extraConfiguration`: at most 32 keys of at most 64 characters, values at most 4096.
pub const EXTRA_MAX: usize = 32;
pub const EXTRA_KEY_MAX: usize = 64;
pub const EXTRA_VALUE_MAX: usize = 4096;
/// Bytes of keys and values in `spec.extraConfiguration` altogether.
pub const EXTRA_TOTAL_MAX: usize = 16384;
/// Characters of `spec.regionId`.
pub const REGION_MAX: usize = 32;
/// `extraSecretConfiguration`: at most 16 keys of at most 64 characters.
pub const EXTRA_SECRET_MAX: usize = 16;
/// Keys the CRD models; none of them may appear in `extraConfiguration` /
/// `extraSecretConfiguration`, whatever the type.
pub const MODELLED_KEYS: [&str; 6] = [
    "DingTalkClientId",
    "DingTalkClientSecret",
    "DingTalkTemplateId",
    "WeChatClientId",
    "WeChatClientSecret",
    "WeChatTemplateId",
];

/// `metadata.name` of exported objects: a DNS-1123 label (valid for every kind and as a label
/// value), even though custom resources would accept longer subdomain names.
pub const OBJECT_NAME_MAX: usize = 63;
/// Suffix of the Secret stub's name: `<metadata.name>-secrets`.
pub const SECRET_NAME_SUFFIX: &str = "-secrets";
/// Secret data keys (and `secretKeyRef.key`): `[-._a-zA-Z0-9]+`, at most 253 characters.
const SECRET_KEY_MAX: usize = 253;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretsMode {
    /// Print a Secret stub per object, values being placeholders to replace.
    Stub,
    /// Print no Secrets (they come from external-secrets, sealed-secrets, SOPS…); the comments
    /// name the Secret and keys each object reads.
    #[value(name = "none")]
    Omit,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Filter as Name=Value (repeatable; sent as Filters.N.Name / Filters.N.Value).
    #[arg(long = "filter", value_name = "NAME=VALUE", value_parser = parse_filter)]
    pub filters: Vec<Filter>,
    /// metadata.namespace of every printed object (omitted when unset: `kubectl apply -n`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// `stub`: a Secret per object with placeholder values; `none`: no Secrets.
    #[arg(long, value_enum, default_value_t = SecretsMode::Stub)]
    pub secrets: SecretsMode,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What does not depend on the remote: where the objects go and what else is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub region: String,
    pub namespace: Option<String>,
    pub secrets: SecretsMode,
    /// `--filter` values, echoed in the header.
    pub filters: Vec<Filter>,
}

/// One remote configuration as the exporter saw it.
#[derive(Debug, Clone)]
pub enum RemoteItem {
    /// GetChatConfiguration answered.
    Found(Box<RemoteConfiguration>),
    /// Listed, then not found by Get (deleted in between): nothing to adopt.
    Vanished(String),
    /// Get answered with something that is not a chat configuration we can read (a
    /// `Configuration` that is not a JSON object): cannot be expressed.
    Unreadable { name: String, problem: String },
    /// Get failed (network, throttling, permissions): a real error.
    Failed { name: String, error: String },
}

impl RemoteItem {
    pub fn name(&self) -> &str {
        match self {
            RemoteItem::Found(c) => &c.name,
            RemoteItem::Vanished(n)
            | RemoteItem::Unreadable { name: n, .. }
            | RemoteItem::Failed { name: n, .. } => n,
        }
    }
}

/// A remote configuration expressed as a `ChatConfiguration` and what its Secret must hold.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub remote_name: String,
    pub object: ChatConfiguration,
    pub secret_name: String,
    /// Secret data key → the `Configuration` key it supplies.
    pub secret_keys: BTreeMap<String, String>,
}

/// The printed text and what to tell the user on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub yaml: String,
    /// One line per remote not exported (and why).
    pub warnings: Vec<String>,
    pub exported: usize,
    /// Remotes that could not be read because of an error (the command fails).
    pub failed: usize,
}

/// Whether a `Configuration` key holds a secret by its name alone (the client's one rule):
/// Get masks only some of these, so the name decides too.
pub use oos_client::is_sensitive_key;

/// A secret `Configuration` entry: a sensitive key, or a value Get masked.
fn is_secret_entry(key: &str, value: &Value) -> bool {
    is_sensitive_key(key) || value.as_str() == Some(MASKED_SECRET)
}

/// DNS-1123 label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= OBJECT_NAME_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A valid Secret data key (Kubernetes' config-map key rule).
pub fn is_secret_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SECRET_KEY_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !s.starts_with("..")
        && s != "."
}

/// Lowercase; every run of characters outside `[a-z0-9]` becomes one `-`; trimmed.
fn normalize_label(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Every run of characters outside `[-._a-zA-Z0-9]` becomes one `-`; no leading dots.
fn normalize_secret_key(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_start_matches('.').to_string()
}

/// Maps each original to a unique valid name: a valid original is kept as is (it takes
/// precedence); any other becomes `normalize(original)`, truncated, plus `-` and the first hex
/// digits of SHA-256(original) — 4 of them, more only if that still collides. Deterministic for
/// a given set, whatever the order the originals come in.
fn assign_unique(
    originals: &BTreeSet<String>,
    valid: fn(&str) -> bool,
    normalize: fn(&str) -> String,
    max_len: usize,
    fallback: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for o in originals.iter().filter(|o| valid(o)) {
        used.insert(o.clone());
        out.insert(o.clone(), o.clone());
    }
    for o in originals.iter().filter(|o| !valid(o)) {
        let digest = hex::encode(Sha256::digest(o.as_bytes()));
        let base = normalize(o);
        let candidate = |hash: &str| {
            let room = max_len - 1 - hash.len();
            let mut b: String = base.chars().take(room).collect();
            while b.ends_with(['-', '.']) {
                b.pop();
            }
            if b.is_empty() {
                b = fallback.to_string();
            }
            format!("{b}-{hash}")
        };
        let chosen = (1..=8)
            .map(|n| candidate(&digest[..4 * n]))
            .chain((2..).map(|i| candidate(&format!("{}{i}", &digest[..32]))))
            .find(|c| !used.contains(c))
            .expect("an endless candidate list has a free name");
        used.insert(chosen.clone());
        out.insert(o.clone(), chosen);
    }
    out
}

/// `metadata.name` for each remote Name: DNS-1123 labels, unchanged when already valid, else
/// lowercased, invalid runs → `-`, trimmed, truncated and suffixed with a short stable hash of
/// the remote Name, so two remote Names never map to the same object name.
pub fn object_names<'a>(
    remote_names: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    let set: BTreeSet<String> = remote_names.into_iter().map(str::to_string).collect();
    assign_unique(
        &set,
        is_dns_label,
        normalize_label,
        OBJECT_NAME_MAX,
        "chatcfg",
    )
}

/// Secret data key for each secret `Configuration` key (the key itself when valid).
fn secret_data_keys(config_keys: &BTreeSet<String>) -> BTreeMap<String, String> {
    assign_unique(
        config_keys,
        is_secret_data_key,
        normalize_secret_key,
        SECRET_KEY_MAX,
        "key",
    )
}

/// The placeholder written into a Secret stub for `config_key`.
pub fn placeholder(config_key: &str) -> String {
    format!("{SECRET_PLACEHOLDER_MARKER}: replace with the real value of {config_key}")
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn valid_spec_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= SPEC_NAME_MAX
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The CRD's `spec.regionId` rule: `^[a-z]{2}(-[a-z0-9]+)+$`, 2–32 characters.
pub fn valid_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let head = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    s.len() <= REGION_MAX
        && head.len() == 2
        && head.bytes().all(|b| b.is_ascii_lowercase())
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The CRD's rule for extra keys: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`.
fn valid_extra_key(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Every `Configuration` key with its value (secrets as Get returned them: masked or not).
fn configuration_entries(settings: Option<&ChatSettings>) -> BTreeMap<String, Value> {
    settings
        .map(crate::reconcile::observe::configuration_map)
        .unwrap_or_default()
}

/// Expresses one remote configuration as a `ChatConfiguration` named `object_name` that adopts
/// it without changing anything but re-sending its secrets. `Err` lists every reason it cannot
/// be expressed within the CRD's admission rules (key names only, never values).
pub fn build_manifest(
    remote: &RemoteConfiguration,
    object_name: &str,
    opts: &ExportOptions,
) -> Result<Manifest, Vec<String>> {
    let mut why = Vec::new();
    let platform = match &remote.chat_type {
        ChatType::DingTalk => ChatPlatform::DingTalk,
        ChatType::WeChat => ChatPlatform::WeChat,
        ChatType::Other(t) => {
            return Err(vec![format!(
                "Type {t:?} is neither DingTalk nor WeChat (spec.type)"
            )]);
        }
    };
    let keys = platform.keys();
    let field = match platform {
        ChatPlatform::DingTalk => "spec.dingTalk",
        ChatPlatform::WeChat => "spec.weChat",
    };

    if !valid_spec_name(&remote.name) {
        why.push(format!(
            "Name {:?} does not fit spec.name (1-{SPEC_NAME_MAX} characters, starting with a letter or digit, then letters, digits, '.', '_' or '-')",
            remote.name
        ));
    }
    let fits = |s: &str, max: usize, ok: fn(u8) -> bool| {
        !s.is_empty() && s.len() <= max && s.bytes().all(ok)
    };
    if let Some(r) = &remote.ram_role
        && !fits(r, RAM_ROLE_MAX, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
        })
    {
        why.push(format!(
            "RamRole {r:?} does not fit spec.ramRole (a RAM role name: 1-{RAM_ROLE_MAX} letters, digits, '.' or '-')"
        ));
    }
    if let Some(g) = &remote.resource_group_id
        && !fits(g, RESOURCE_GROUP_MAX, |b| {
            b.is_ascii_alphanumeric() || b == b'-'
        })
    {
        why.push(format!(
            "ResourceGroupId {g:?} does not fit spec.resourceGroupId (1-{RESOURCE_GROUP_MAX} letters, digits or '-')"
        ));
    }

    let mut client_id = None;
    let mut template_id = None;
    let (mut seen_client_id, mut seen_client_secret) = (false, false);
    let mut extra = BTreeMap::new();
    let mut extra_secret_keys = BTreeSet::new();
    let platform_value = |k: &str, v: &Value, what: &str, why: &mut Vec<String>| match v {
        Value::String(s) if !s.is_empty() && !s.bytes().all(|b| b.is_ascii_graphic()) => {
            why.push(format!(
                "Configuration key {k:?} holds spaces, control or non-ASCII characters; {field}.{what} takes printable ASCII without spaces"
            ));
            None
        }
        Value::String(s) if !s.is_empty() && s.chars().count() <= PLATFORM_VALUE_MAX => {
            Some(s.clone())
        }
        Value::String(s) => {
            why.push(format!(
                "Configuration key {k:?} is {} characters long; {field}.{what} takes 1-{PLATFORM_VALUE_MAX}",
                s.chars().count()
            ));
            None
        }
        other => {
            why.push(format!(
                "Configuration key {k:?} holds a JSON {}; {field}.{what} is a string",
                json_kind(other)
            ));
            None
        }
    };
    for (k, v) in configuration_entries(remote.configuration.as_ref()) {
        if k == keys.client_id {
            seen_client_id = true;
            client_id = platform_value(&k, &v, "clientId", &mut why);
        } else if k == keys.template_id {
            template_id = platform_value(&k, &v, "templateId", &mut why);
        } else if k == keys.client_secret {
            seen_client_secret = true;
            if !v.is_string() {
                why.push(format!(
                    "Configuration key {k:?} holds a JSON {}; the operator sends the client secret as a string",
                    json_kind(&v)
                ));
            }
        } else if MODELLED_KEYS.contains(&k.as_str()) {
            why.push(format!(
                "Configuration key {k:?} belongs to the other platform's settings; the CRD accepts it neither in spec.extraConfiguration nor in spec.extraSecretConfiguration"
            ));
        } else if k.chars().count() > EXTRA_KEY_MAX {
            why.push(format!(
                "Configuration key {k:?} is longer than {EXTRA_KEY_MAX} characters, the CRD's limit for extra keys"
            ));
        } else if !valid_extra_key(&k) {
            why.push(format!(
                "Configuration key {k:?} is not an ASCII token (a letter or digit, then letters, digits, '_', '.' or '-'), which the CRD requires of extra keys"
            ));
        } else if is_secret_entry(&k, &v) {
            if v.is_string() {
                extra_secret_keys.insert(k);
            } else {
                why.push(format!(
                    "secret Configuration key {k:?} holds a JSON {}; secret values are sent as strings",
                    json_kind(&v)
                ));
            }
        } else {
            match v {
                Value::String(s) if s.chars().any(crate::crd::is_forbidden_char) => why.push(format!(
                    "the value of Configuration key {k:?} holds control or invisible characters, which spec.extraConfiguration refuses"
                )),
                Value::String(s) if s.chars().count() <= EXTRA_VALUE_MAX => {
                    extra.insert(k, s);
                }
                Value::String(s) => why.push(format!(
                    "the value of Configuration key {k:?} is {} characters long; spec.extraConfiguration values take at most {EXTRA_VALUE_MAX}",
                    s.chars().count()
                )),
                other => why.push(format!(
                    "Configuration key {k:?} holds a JSON {}; spec.extraConfiguration values are strings",
                    json_kind(&other)
                )),
            }
        }
    }
    if !seen_client_id {
        why.push(format!(
            "Configuration has no {}; {field}.clientId is required",
            keys.client_id
        ));
    }
    if !seen_client_secret {
        why.push(format!(
            "Configuration has no {}; {field}.clientSecretRef is required, so adopting would add the key",
            keys.client_secret
        ));
    }
    let extra_bytes: usize = extra.iter().map(|(k, v)| k.len() + v.len()).sum();
    if extra_bytes > EXTRA_TOTAL_MAX {
        why.push(format!(
            "the non-secret Configuration keys and values hold {extra_bytes} bytes; spec.extraConfiguration holds at most {EXTRA_TOTAL_MAX}"
        ));
    }
    if extra.len() > EXTRA_MAX {
        why.push(format!(
            "{} further non-secret Configuration keys; spec.extraConfiguration holds at most {EXTRA_MAX}",
            extra.len()
        ));
    }
    if extra_secret_keys.len() > EXTRA_SECRET_MAX {
        why.push(format!(
            "{} further secret Configuration keys; spec.extraSecretConfiguration holds at most {EXTRA_SECRET_MAX}",
            extra_secret_keys.len()
        ));
    }
    if !why.is_empty() {
        return Err(why);
    }

    let secret_name = format!("{object_name}{SECRET_NAME_SUFFIX}");
    let mut all_secret_keys = extra_secret_keys.clone();
    all_secret_keys.insert(keys.client_secret.to_string());
    let data_keys = secret_data_keys(&all_secret_keys);
    let key_ref = |config_key: &str| SecretKeyRef {
        name: secret_name.clone(),
        key: data_keys[config_key].clone(),
    };
    let settings = PlatformSettings {
        client_id: client_id.expect("checked above"),
        template_id,
        client_secret_ref: key_ref(keys.client_secret),
    };
    let spec = ChatConfigurationSpec {
        name: Some(remote.name.clone()),
        region_id: Some(opts.region.clone()),
        chat_type: platform,
        ram_role: remote.ram_role.clone(),
        resource_group_id: remote.resource_group_id.clone(),
        ding_talk: (platform == ChatPlatform::DingTalk).then(|| settings.clone()),
        we_chat: (platform == ChatPlatform::WeChat).then_some(settings),
        extra_configuration: (!extra.is_empty()).then_some(extra),
        extra_secret_configuration: (!extra_secret_keys.is_empty()).then(|| {
            extra_secret_keys
                .iter()
                .map(|k| (k.clone(), key_ref(k)))
                .collect()
        }),
        adoption_policy: Some(AdoptionPolicy::Adopt),
        ..Default::default()
    };
    let mut object = ChatConfiguration::new(object_name, spec);
    object.metadata.namespace = opts.namespace.clone();
    Ok(Manifest {
        remote_name: remote.name.clone(),
        object,
        secret_name,
        secret_keys: data_keys.into_iter().map(|(c, d)| (d, c)).collect(),
    })
}

/// The Secret stub of a manifest: every key holds [`placeholder`].
pub fn secret_stub(m: &Manifest) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(m.secret_name.clone()),
            namespace: m.object.metadata.namespace.clone(),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(
            m.secret_keys
                .iter()
                .map(|(data_key, config_key)| (data_key.clone(), placeholder(config_key)))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A comment line: no line break can escape it.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let line = format!("# {line}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if text.is_empty() {
        out.push_str("#\n");
    }
}

fn yaml_doc(out: &mut String, value: &impl serde::Serialize) {
    out.push_str(&serde_yaml::to_string(value).expect("Kubernetes objects serialise to YAML"));
}

fn header(out: &mut String, opts: &ExportOptions, total: usize, exported: usize) {
    let filters = if opts.filters.is_empty() {
        String::new()
    } else {
        let f: Vec<String> = opts
            .filters
            .iter()
            .map(|f| format!("{}={}", f.name, f.value))
            .collect();
        format!(", filters {}", f.join(" "))
    };
    comment(
        out,
        &format!(
            "ChatConfiguration manifests written by `oos-chat-operator remote export` (region {}{filters}).
{total} remote chat configuration(s): {exported} exported, {} not exported (the comments in their place say why).

Each ChatConfiguration has adoptionPolicy: Adopt and spec.name set to the remote Name: it takes over
the existing remote configuration and never creates one. Its first reconcile sends one
UpdateChatConfiguration carrying the same settings as now plus the secrets, because OOS never
returns secret values; later reconciles write only on change. deletionPolicy is not set, so the
namespace annotation oos.chatops.dev/deletion-policy or the operator's --default-deletion-policy
decides what deleting an object does to the remote (set deletionPolicy: Orphan to keep it).

",
            opts.region,
            total - exported,
        ),
    );
    let fill = match opts.secrets {
        SecretsMode::Stub => format!(
            "TO FILL IN: every Secret below holds placeholders (values containing \"{SECRET_PLACEHOLDER_MARKER}\").
Replace each with the real secret (the app client secret, and any extra secret key) before
applying. An object whose Secret still holds a placeholder reports Stalled with reason
SecretPlaceholder and sends nothing to OOS. Keep filled-in Secrets out of Git in clear text
(SOPS, sealed-secrets, external-secrets); re-run with --secrets=none to print no Secrets."
        ),
        SecretsMode::Omit => "TO FILL IN: no Secrets are printed (--secrets=none). Each object's comment names the Secret
and keys it reads; provide them (external-secrets, sealed-secrets, SOPS…) with the real values
before or together with the ChatConfigurations."
            .to_string(),
    };
    comment(out, &fill);
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The whole export: a header comment, then per remote Name (byte order) either a commented
/// ChatConfiguration (and its Secret stub) or a comment saying why it is not there.
pub fn render(items: &[RemoteItem], opts: &ExportOptions) -> Rendered {
    let mut items: Vec<&RemoteItem> = items.iter().collect();
    items.sort_by(|a, b| a.name().cmp(b.name()));
    items.dedup_by(|a, b| a.name() == b.name());
    let names = object_names(items.iter().map(|i| i.name()));

    let mut body = String::new();
    let mut warnings = Vec::new();
    let mut exported = 0;
    let mut failed = 0;
    for item in &items {
        let name = item.name();
        body.push_str("---\n");
        let not_exported = |body: &mut String, warnings: &mut Vec<String>, why: &[String]| {
            comment(body, &format!("remote Name {name:?}: NOT EXPORTED"));
            for w in why {
                comment(body, &format!("  - {}", one_line(w)));
            }
            warnings.push(format!(
                "remote {name:?} not exported: {}",
                why.iter()
                    .map(|w| one_line(w))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        };
        let remote = match item {
            RemoteItem::Found(r) => r,
            RemoteItem::Vanished(_) => {
                not_exported(
                    &mut body,
                    &mut warnings,
                    &["listed, then deleted before GetChatConfiguration: nothing to adopt".into()],
                );
                continue;
            }
            RemoteItem::Unreadable { problem, .. } => {
                not_exported(
                    &mut body,
                    &mut warnings,
                    &[format!("cannot be expressed: {problem}")],
                );
                comment(
                    &mut body,
                    "Manage it by hand, or fix it remotely and export again.",
                );
                continue;
            }
            RemoteItem::Failed { error, .. } => {
                failed += 1;
                not_exported(
                    &mut body,
                    &mut warnings,
                    &[format!("GetChatConfiguration failed: {error}")],
                );
                continue;
            }
        };
        let object_name = &names[name];
        match build_manifest(remote, object_name, opts) {
            Err(why) => {
                let why: Vec<String> = std::iter::once(format!(
                    "{} configuration that cannot be expressed as a ChatConfiguration:",
                    remote.chat_type
                ))
                .chain(why)
                .collect();
                comment(
                    &mut body,
                    &format!("remote Name {name:?}: NOT EXPORTED, a {}", why[0]),
                );
                for w in &why[1..] {
                    comment(&mut body, &format!("  - {}", one_line(w)));
                }
                comment(
                    &mut body,
                    "Manage it by hand, or change it remotely and export again.",
                );
                warnings.push(format!(
                    "remote {name:?} not exported: {}",
                    why[1..].join("; ")
                ));
            }
            Ok(m) => {
                exported += 1;
                if object_name != name {
                    comment(
                        &mut body,
                        &format!("remote Name {name:?} → metadata.name {object_name:?}"),
                    );
                }
                let secret_list: Vec<String> = m
                    .secret_keys
                    .iter()
                    .map(|(data_key, config_key)| {
                        if data_key == config_key {
                            data_key.clone()
                        } else {
                            format!("{data_key} (for {config_key})")
                        }
                    })
                    .collect();
                let secret_line = match opts.secrets {
                    SecretsMode::Stub => format!(
                        "Fill in Secret {:?} below: {}",
                        m.secret_name,
                        secret_list.join(", ")
                    ),
                    SecretsMode::Omit => format!(
                        "Reads Secret {:?} (not printed), keys: {}",
                        m.secret_name,
                        secret_list.join(", ")
                    ),
                };
                comment(
                    &mut body,
                    &format!(
                        "{} {name:?}: adopting sends one Update that re-sends {} secret key(s).\n{secret_line}",
                        remote.chat_type,
                        m.secret_keys.len()
                    ),
                );
                yaml_doc(&mut body, &m.object);
                if opts.secrets == SecretsMode::Stub {
                    body.push_str("---\n");
                    yaml_doc(&mut body, &secret_stub(&m));
                }
            }
        }
    }
    let mut yaml = String::new();
    header(&mut yaml, opts, items.len(), exported);
    yaml.push_str(&body);
    Rendered {
        yaml,
        warnings,
        exported,
        failed,
    }
}

/// Entry point of `oos-chat-operator remote export`: List (all pages), Get each, print.
pub async fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    let region = &args.connection.region;
    anyhow::ensure!(
        valid_region(region),
        "--region {region:?} does not fit spec.regionId (e.g. cn-hangzhou)"
    );
    if let Some(ns) = &args.namespace {
        anyhow::ensure!(
            is_dns_label(ns),
            "--namespace {ns:?} is not a valid namespace name"
        );
    }
    let oos = client(&args.connection)?;
    let mut names: Vec<String> = oos
        .list_chat_configurations(region, &args.filters, None)
        .await
        .context("ListChatConfigurations")?
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names.dedup();
    let mut items = Vec::with_capacity(names.len());
    for name in names {
        items.push(match oos.get_chat_configuration(region, &name).await {
            Ok(c) => RemoteItem::Found(Box::new(c)),
            Err(e) if e.is_not_found() => RemoteItem::Vanished(name),
            Err(OosError::Decode(problem)) => RemoteItem::Unreadable { name, problem },
            Err(e) => RemoteItem::Failed {
                name,
                error: e.to_string(),
            },
        });
    }
    let opts = ExportOptions {
        region: region.clone(),
        namespace: args.namespace.clone(),
        secrets: args.secrets,
        filters: args.filters.clone(),
    };
    let out = render(&items, &opts);
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.yaml.as_bytes())?;
        stdout.flush()?;
    }
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "exported {} of {} remote chat configuration(s)",
        out.exported,
        items.len()
    );
    anyhow::ensure!(
        out.failed == 0,
        "{} remote chat configuration(s) could not be read (see the warnings); the output is incomplete",
        out.failed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oos_client::parse_remote_date;

    fn opts() -> ExportOptions {
        ExportOptions {
            region: "cn-hangzhou".into(),
            namespace: Some("team-a".into()),
            secrets: SecretsMode::Stub,
            filters: Vec::new(),
        }
    }

    fn remote(name: &str, chat_type: ChatType, configuration: &str) -> RemoteConfiguration {
        RemoteConfiguration {
            name: name.into(),
            chat_type,
            ram_role: Some("OOSServiceRole".into()),
            resource_group_id: None,
            configuration: Some(ChatSettings::from_json_str(configuration).unwrap()),
            outputs: None,
            created_date: parse_remote_date("2025-12-11T13:49:10+00:00"),
            updated_date: parse_remote_date("2026-01-07T02:14:55+00:00"),
        }
    }

    /// A DingTalk remote with every kind of key: modelled, extra non-secret, extra secret masked by
    /// Get, extra secret returned in clear (caught by the name rule), and an unknown masked key.
    fn dingtalk_full() -> RemoteConfiguration {
        let mut r = remote(
            "Ops_Bot",
            ChatType::DingTalk,
            r#"{"DingTalkClientId": "dingabc", "DingTalkClientSecret": "******", "DingTalkTemplateId": "381c.schema",
                "Mode": "card", "AppSecret": "******", "WebhookToken": "LEAK-token", "Opaque": "******"}"#,
        );
        r.resource_group_id = Some("rg-acfm123".into());
        r
    }

    fn wecom() -> RemoteConfiguration {
        let mut r = remote(
            "wecom-alerts",
            ChatType::WeChat,
            r#"{"WeChatClientId": "ww-corp", "WeChatClientSecret": "******", "WeChatTemplateId": "tpl-w",
                "CorpId": "ww123", "EncodingAESKey": "LEAK-aes"}"#,
        );
        r.ram_role = None;
        r
    }

    #[test]
    fn sensitive_key_rule() {
        for k in [
            "AppSecret",
            "secret",
            "WebhookToken",
            "DbPassword",
            "smtp_passwd",
            "EncodingAESKey",
            "aeskey",
            "PrivateKey",
            "Credentials",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "Mode",
            "CorpId",
            "DingTalkClientId",
            "AgentId",
            "Private",
            "Key",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
        assert!(is_secret_entry("Opaque", &Value::String("******".into())));
        assert!(!is_secret_entry("Opaque", &Value::String("*****".into())));
    }

    #[test]
    fn object_names_keep_valid_and_map_the_rest() {
        let long = format!("Team_{}", "x".repeat(120));
        let names = object_names([
            "alerts",
            "Ops_Bot",
            "prod.alerts",
            "-edge-",
            "___",
            "Ünïcode Bot",
            long.as_str(),
            "a1",
        ]);
        assert_eq!(names["alerts"], "alerts");
        assert_eq!(names["a1"], "a1");
        // Stable across runs and versions: a changed hash would rename objects in Git.
        assert_eq!(names["Ops_Bot"], "ops-bot-3bf7");
        assert!(names["prod.alerts"].starts_with("prod-alerts-"));
        assert!(names["-edge-"].starts_with("edge-"));
        assert!(names["___"].starts_with("chatcfg-"));
        assert!(
            names["Ünïcode Bot"].starts_with("n-code-bot-"),
            "{}",
            names["Ünïcode Bot"]
        );
        assert!(names[&long].starts_with("team-xxxx"));
        assert_eq!(names[&long].len(), OBJECT_NAME_MAX);
        for (remote, object) in &names {
            assert!(is_dns_label(object), "{remote:?} → {object:?}");
            let secret = format!("{object}{SECRET_NAME_SUFFIX}");
            assert!(
                secret.len() <= 253
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            if object != remote {
                let hash = object.rsplit('-').next().unwrap();
                assert_eq!(hash.len(), 4, "{object}");
                assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
    }

    #[test]
    fn object_names_never_collide() {
        let a = format!("{}A", "Z".repeat(100));
        let b = format!("{}B", "Z".repeat(100));
        let input = [
            "Ops_Bot", "ops.bot", "OPS-BOT", "ops-bot", "ops_bot", &a, &b,
        ];
        let names = object_names(input);
        let distinct: BTreeSet<&String> = names.values().collect();
        assert_eq!(distinct.len(), input.len(), "{names:?}");
        assert_eq!(names["ops-bot"], "ops-bot", "a valid name is kept");
        // The same base but different truncated tails: told apart by the hash.
        assert_ne!(names[&a], names[&b]);

        // A valid remote Name that happens to equal another's mapped name keeps it; the mapped
        // one gets a longer hash.
        let mapped = object_names(["Ops_Bot"])["Ops_Bot"].clone();
        let names = object_names(["Ops_Bot", mapped.as_str()]);
        assert_eq!(names[&mapped], mapped);
        assert_ne!(names["Ops_Bot"], mapped);
        assert!(names["Ops_Bot"].starts_with("ops-bot-"));
        assert_eq!(names["Ops_Bot"].len(), "ops-bot-".len() + 8);

        // Order of the input does not matter.
        let mut reversed = input.to_vec();
        reversed.reverse();
        assert_eq!(object_names(reversed), object_names(input));
    }

    #[test]
    fn secret_data_keys_are_valid_and_unique() {
        let keys: BTreeSet<String> = [
            "AppSecret",
            "App Secret",
            "App/Secret",
            "..Token",
            "a.b_c-d",
        ]
        .map(String::from)
        .into();
        let m = secret_data_keys(&keys);
        assert_eq!(m["AppSecret"], "AppSecret");
        assert_eq!(m["a.b_c-d"], "a.b_c-d");
        assert!(m["App Secret"].starts_with("App-Secret-"));
        assert!(m["..Token"].starts_with("Token-"));
        let distinct: BTreeSet<&String> = m.values().collect();
        assert_eq!(distinct.len(), keys.len());
        assert!(m.values().all(|k| is_secret_data_key(k)), "{m:?}");
    }

    #[test]
    fn dingtalk_with_extra_keys_resource_group_and_masked_keys() {
        let m = build_manifest(&dingtalk_full(), "ops-bot-3bf7", &opts()).unwrap();
        let o = &m.object;
        assert_eq!(o.metadata.name.as_deref(), Some("ops-bot-3bf7"));
        assert_eq!(o.metadata.namespace.as_deref(), Some("team-a"));
        let s = &o.spec;
        assert_eq!(s.name.as_deref(), Some("Ops_Bot"), "spec.name always set");
        assert_eq!(s.region_id.as_deref(), Some("cn-hangzhou"));
        assert_eq!(s.chat_type, ChatPlatform::DingTalk);
        assert_eq!(s.ram_role.as_deref(), Some("OOSServiceRole"));
        assert_eq!(s.resource_group_id.as_deref(), Some("rg-acfm123"));
        assert_eq!(s.adoption_policy, Some(AdoptionPolicy::Adopt));
        assert_eq!(s.deletion_policy, None);
        assert!(s.we_chat.is_none());
        let d = s.ding_talk.as_ref().unwrap();
        assert_eq!(d.client_id, "dingabc");
        assert_eq!(d.template_id.as_deref(), Some("381c.schema"));
        let r = |key: &str| SecretKeyRef {
            name: "ops-bot-3bf7-secrets".into(),
            key: key.into(),
        };
        assert_eq!(d.client_secret_ref, r("DingTalkClientSecret"));
        assert_eq!(
            s.extra_configuration,
            Some(BTreeMap::from([("Mode".to_string(), "card".to_string())]))
        );
        assert_eq!(
            s.extra_secret_configuration,
            Some(BTreeMap::from([
                ("AppSecret".to_string(), r("AppSecret")),
                ("Opaque".to_string(), r("Opaque")),
                ("WebhookToken".to_string(), r("WebhookToken")),
            ]))
        );
        assert_eq!(m.secret_name, "ops-bot-3bf7-secrets");
        assert_eq!(
            m.secret_keys.keys().collect::<Vec<_>>(),
            [
                "AppSecret",
                "DingTalkClientSecret",
                "Opaque",
                "WebhookToken"
            ]
        );
        let stub = secret_stub(&m);
        assert_eq!(stub.metadata.namespace.as_deref(), Some("team-a"));
        let data = stub.string_data.unwrap();
        assert_eq!(data.len(), 4);
        assert!(data.values().all(|v| v.contains(SECRET_PLACEHOLDER_MARKER)));
        assert!(!format!("{data:?}{o:?}").contains("LEAK"));
        // The CRD's own validation of things serde can see: it round-trips as the real type.
        let yaml = serde_yaml::to_string(o).unwrap();
        let back: ChatConfiguration = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back.spec, o.spec);
        assert!(!yaml.contains("status"));
    }

    #[test]
    fn wecom_uses_wechat_settings() {
        let m = build_manifest(&wecom(), "wecom-alerts", &opts()).unwrap();
        let s = &m.object.spec;
        assert_eq!(s.chat_type, ChatPlatform::WeChat);
        assert!(s.ding_talk.is_none());
        assert_eq!(s.ram_role, None);
        assert_eq!(s.resource_group_id, None);
        let w = s.we_chat.as_ref().unwrap();
        assert_eq!(w.client_id, "ww-corp");
        assert_eq!(w.template_id.as_deref(), Some("tpl-w"));
        assert_eq!(w.client_secret_ref.key, "WeChatClientSecret");
        assert_eq!(
            s.extra_configuration,
            Some(BTreeMap::from([(
                "CorpId".to_string(),
                "ww123".to_string()
            )]))
        );
        let extra_secret = s.extra_secret_configuration.as_ref().unwrap();
        assert_eq!(extra_secret.keys().collect::<Vec<_>>(), ["EncodingAESKey"]);

        // Without a template and without extra keys, those fields are absent.
        let bare = remote(
            "bare",
            ChatType::WeChat,
            r#"{"WeChatClientId":"c","WeChatClientSecret":"******"}"#,
        );
        let s = build_manifest(&bare, "bare", &opts()).unwrap().object.spec;
        assert_eq!(s.we_chat.unwrap().template_id, None);
        assert_eq!(s.extra_configuration, None);
        assert_eq!(s.extra_secret_configuration, None);
    }

    #[test]
    fn what_cannot_be_expressed_is_explained() {
        let dt = |cfg: &str| remote("x", ChatType::DingTalk, cfg);
        let base = r#""DingTalkClientId":"c","DingTalkClientSecret":"******""#;
        let many = |n: usize, secret: bool| {
            let keys: Vec<String> = (0..n)
                .map(|i| {
                    if secret {
                        format!(r#""Extra{i}Token":"******""#)
                    } else {
                        format!(r#""Extra{i}":"v""#)
                    }
                })
                .collect();
            dt(&format!("{{{base},{}}}", keys.join(",")))
        };
        let mut bad_name = dt(&format!("{{{base}}}"));
        bad_name.name = "_starts-with-underscore".into();
        let mut bad_role = dt(&format!("{{{base}}}"));
        bad_role.ram_role = Some("role with spaces".into());
        let mut bad_group = dt(&format!("{{{base}}}"));
        bad_group.resource_group_id = Some("rg_underscore".into());
        let mut no_config = dt("{}");
        no_config.configuration = None;
        let mut underscore_role = dt(&format!("{{{base}}}"));
        underscore_role.ram_role = Some("Role_With_Underscore".into());
        let cases: Vec<(RemoteConfiguration, &str)> = vec![
            (
                underscore_role,
                "RamRole \"Role_With_Underscore\" does not fit",
            ),
            (
                dt(r#"{"DingTalkClientId":"c d","DingTalkClientSecret":"******"}"#),
                "printable ASCII without spaces",
            ),
            (
                dt(&format!(r#"{{{base},"Größe":"v"}}"#)),
                "is not an ASCII token",
            ),
            (
                dt(&format!("{{{base},\"Note\":\"a\u{200b}b\"}}")),
                "control or invisible characters",
            ),
            (
                dt(&format!(r#"{{{base},"Retries":3}}"#)),
                "\"Retries\" holds a JSON number",
            ),
            (
                dt(&format!(r#"{{{base},"Nested":{{"a":1}}}}"#)),
                "\"Nested\" holds a JSON object",
            ),
            (
                dt(&format!(r#"{{{base},"WeChatClientId":"w"}}"#)),
                "\"WeChatClientId\" belongs to the other platform",
            ),
            (
                dt(&format!(r#"{{{base},"WeChatClientSecret":"******"}}"#)),
                "\"WeChatClientSecret\" belongs to the other platform",
            ),
            (
                dt(r#"{"DingTalkClientSecret":"******"}"#),
                "has no DingTalkClientId",
            ),
            (
                dt(r#"{"DingTalkClientId":"c"}"#),
                "has no DingTalkClientSecret",
            ),
            (no_config, "has no DingTalkClientId"),
            (
                dt(r#"{"DingTalkClientId":"","DingTalkClientSecret":"******"}"#),
                "takes 1-256",
            ),
            (
                dt(&format!(
                    r#"{{"DingTalkClientId":"{}","DingTalkClientSecret":"******"}}"#,
                    "c".repeat(257)
                )),
                "takes 1-256",
            ),
            (
                dt(&format!(r#"{{{base},"DingTalkTemplateId":7}}"#)),
                "templateId is a string",
            ),
            (
                dt(&format!(r#"{{{base},"{}":"v"}}"#, "K".repeat(65))),
                "longer than 64",
            ),
            (
                dt(&format!(r#"{{{base},"Big":"{}"}}"#, "v".repeat(4097))),
                "at most 4096",
            ),
            (
                dt(&format!(r#"{{{base},"ApiToken":5}}"#)),
                "secret Configuration key \"ApiToken\" holds a JSON number",
            ),
            (many(33, false), "spec.extraConfiguration holds at most 32"),
            (
                many(17, true),
                "spec.extraSecretConfiguration holds at most 16",
            ),
            (bad_name, "does not fit spec.name"),
            (bad_role, "does not fit spec.ramRole"),
            (bad_group, "does not fit spec.resourceGroupId"),
            (
                remote("x", ChatType::Other("Lark".into()), "{}"),
                "\"Lark\" is neither",
            ),
        ];
        for (r, expected) in cases {
            let why = build_manifest(&r, "x", &opts()).expect_err(expected);
            assert!(
                why.iter().any(|w| w.contains(expected)),
                "{expected:?} not in {why:?}"
            );
            assert!(why.iter().all(|w| !w.contains("LEAK")));
        }
        // At the limits it still works.
        assert!(build_manifest(&many(32, false), "x", &opts()).is_ok());
        assert!(build_manifest(&many(16, true), "x", &opts()).is_ok());
    }

    fn docs(yaml: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect()
    }

    #[test]
    fn render_is_complete_deterministic_and_leak_free() {
        let weird = remote(
            "weird",
            ChatType::DingTalk,
            r#"{"DingTalkClientId":"c","DingTalkClientSecret":"******","Retries":3}"#,
        );
        let items = vec![
            RemoteItem::Found(Box::new(wecom())),
            RemoteItem::Found(Box::new(dingtalk_full())),
            RemoteItem::Found(Box::new(weird)),
            RemoteItem::Vanished("gone".into()),
            RemoteItem::Unreadable {
                name: "broken".into(),
                problem: "Configuration is not a JSON object: expected value at line 1".into(),
            },
        ];
        let out = render(&items, &opts());
        let yaml = &out.yaml;
        assert_eq!((out.exported, out.failed), (2, 0));
        assert!(!yaml.contains("LEAK"), "{yaml}");
        assert!(yaml.starts_with("# ChatConfiguration manifests written by `oos-chat-operator remote export` (region cn-hangzhou)."));
        assert!(yaml.contains("# 5 remote chat configuration(s): 2 exported, 3 not exported"));
        assert!(yaml.contains("TO FILL IN"));
        // The mapping is stated right above the object it concerns.
        let mapping = "# remote Name \"Ops_Bot\" → metadata.name \"ops-bot-3bf7\"\n";
        let at = yaml.find(mapping).expect("mapping comment");
        let next_doc = &yaml[at..];
        assert!(next_doc.find("name: ops-bot-3bf7\n").unwrap() < next_doc.find("---").unwrap());
        assert!(
            !yaml.contains("remote Name \"wecom-alerts\" →"),
            "unchanged names need no mapping line"
        );
        for (name, why) in [
            ("weird", "\"Retries\" holds a JSON number"),
            ("gone", "deleted before"),
            ("broken", "not a JSON object"),
        ] {
            assert!(
                yaml.contains(&format!("# remote Name {name:?}: NOT EXPORTED")),
                "{name}"
            );
            assert!(yaml.contains(why), "{why}");
            assert!(
                out.warnings
                    .iter()
                    .any(|w| w.contains(name) && w.contains(why)),
                "{:?}",
                out.warnings
            );
        }
        assert_eq!(out.warnings.len(), 3);
        // Every line is a comment, a document separator or YAML of an object.
        let parsed = docs(yaml);
        let kinds: Vec<(&str, &str)> = parsed
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("ChatConfiguration", "ops-bot-3bf7"),
                ("Secret", "ops-bot-3bf7-secrets"),
                ("ChatConfiguration", "wecom-alerts"),
                ("Secret", "wecom-alerts-secrets"),
            ],
            "sorted by remote Name"
        );
        for d in &parsed {
            assert_eq!(d["metadata"]["namespace"], "team-a");
            if d["kind"] == "Secret" {
                for v in d["stringData"].as_object().unwrap().values() {
                    assert!(v.as_str().unwrap().contains(SECRET_PLACEHOLDER_MARKER));
                }
            } else {
                let o: ChatConfiguration = serde_json::from_value(d.clone()).unwrap();
                assert_eq!(o.spec.adoption_policy, Some(AdoptionPolicy::Adopt));
            }
        }
        // Same input in another order → byte-identical output.
        let mut reversed = items.clone();
        reversed.reverse();
        assert_eq!(render(&reversed, &opts()).yaml, out.yaml);
    }

    #[test]
    fn render_without_secrets_and_with_failures() {
        let mut o = opts();
        o.secrets = SecretsMode::Omit;
        o.namespace = None;
        o.filters = vec![Filter {
            name: "Type".into(),
            value: "DingTalk".into(),
        }];
        let items = vec![
            RemoteItem::Found(Box::new(dingtalk_full())),
            RemoteItem::Failed {
                name: "flaky".into(),
                error: "OOS API error Throttling.User (HTTP 400): slow down".into(),
            },
        ];
        let out = render(&items, &o);
        assert_eq!((out.exported, out.failed), (1, 1));
        assert!(
            out.yaml
                .contains("(region cn-hangzhou, filters Type=DingTalk)")
        );
        assert!(out.yaml.contains("--secrets=none"));
        assert!(out.yaml.contains("# Reads Secret \"ops-bot-3bf7-secrets\" (not printed), keys: AppSecret, DingTalkClientSecret, Opaque, WebhookToken"));
        assert!(
            out.yaml
                .contains("GetChatConfiguration failed: OOS API error Throttling.User")
        );
        let parsed = docs(&out.yaml);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0]["kind"], "ChatConfiguration");
        assert!(parsed[0]["metadata"].get("namespace").is_none());
        assert_eq!(
            parsed[0]["spec"]["dingTalk"]["clientSecretRef"]["name"],
            "ops-bot-3bf7-secrets"
        );
        // Nothing remote → a header and no documents.
        let empty = render(&[], &opts());
        assert!(docs(&empty.yaml).is_empty());
        assert!(empty.yaml.contains("0 remote chat configuration(s)"));
    }

    #[test]
    fn names_in_comments_cannot_break_out() {
        let mut r = dingtalk_full();
        r.name = "evil\nkind: Secret".into();
        let out = render(&[RemoteItem::Found(Box::new(r))], &opts());
        assert!(out.yaml.lines().all(|l| !l.starts_with("kind: Secret")));
        assert!(docs(&out.yaml).is_empty());
    }

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            export: ExportArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.export)
        };
        let a = parse(&[
            "--region",
            "cn-hangzhou",
            "--filter",
            "Type=DingTalk",
            "--filter",
            "Name=ops",
            "--namespace",
            "team-a",
            "--secrets=none",
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(a.filters.len(), 2);
        assert_eq!(a.filters[1].value, "ops");
        assert_eq!(a.namespace.as_deref(), Some("team-a"));
        assert_eq!(a.secrets, SecretsMode::Omit);
        assert_eq!(a.connection.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        let d = parse(&["--region", "cn-hangzhou"]).unwrap();
        assert_eq!((d.secrets, d.namespace), (SecretsMode::Stub, None));
        assert!(parse(&["--region", "r", "--secrets=all"]).is_err());
        assert!(parse(&["--region", "r", "--filter", "novalue"]).is_err());
    }

    #[test]
    fn region_rule() {
        for r in ["cn-hangzhou", "ap-southeast-1", "us-west-1"] {
            assert!(valid_region(r), "{r}");
        }
        for r in [
            "",
            "cn",
            "CN-hangzhou",
            "cn-",
            "cn--x",
            "china-east",
            "cn_hangzhou",
        ] {
            assert!(!valid_region(r), "{r}");
        }
    }

    #[test]
    fn limits_match_the_crd() {
        let crd: Value = serde_yaml::from_str(&crate::crd::crd_yaml()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let p = &spec["properties"];
        assert_eq!(p["name"]["maxLength"], SPEC_NAME_MAX);
        assert_eq!(p["ramRole"]["maxLength"], RAM_ROLE_MAX);
        assert_eq!(p["ramRole"]["pattern"], "^[A-Za-z0-9.-]+$");
        assert_eq!(p["regionId"]["maxLength"], REGION_MAX);
        assert_eq!(p["resourceGroupId"]["maxLength"], RESOURCE_GROUP_MAX);
        for platform in ["dingTalk", "weChat"] {
            for f in ["clientId", "templateId"] {
                assert_eq!(
                    p[platform]["properties"][f]["maxLength"],
                    PLATFORM_VALUE_MAX
                );
            }
        }
        assert_eq!(p["extraConfiguration"]["maxProperties"], EXTRA_MAX);
        assert_eq!(
            p["extraSecretConfiguration"]["maxProperties"],
            EXTRA_SECRET_MAX
        );
        let rules = |field: &str| {
            p[field]["x-kubernetes-validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["rule"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let extra = rules("extraConfiguration");
        assert!(extra.contains(&format!("<= {EXTRA_TOTAL_MAX}")));
        assert!(extra.contains("^[A-Za-z0-9][A-Za-z0-9_.-]*$"));
        assert!(extra.contains(&format!("size(k) <= {EXTRA_KEY_MAX}")));
        assert!(extra.contains(&format!("size(self[k]) <= {EXTRA_VALUE_MAX}")));
        assert!(extra.contains("contains('secret')"));
        for k in MODELLED_KEYS.iter().filter(|k| !k.ends_with("Secret")) {
            assert!(extra.contains(&format!("'{k}'")), "{k}");
        }
        let extra_secret = rules("extraSecretConfiguration");
        assert!(extra_secret.contains(&format!("size(k) <= {EXTRA_KEY_MAX}")));
        for k in MODELLED_KEYS.iter().filter(|k| k.ends_with("Secret")) {
            assert!(extra_secret.contains(&format!("'{k}'")), "{k}");
        }
        for platform in [ChatPlatform::DingTalk, ChatPlatform::WeChat] {
            let k = platform.keys();
            for key in [k.client_id, k.client_secret, k.template_id] {
                assert!(MODELLED_KEYS.contains(&key));
            }
        }
        // The placeholder is refused by the controller, which looks for the marker.
        assert!(placeholder("X").contains(SECRET_PLACEHOLDER_MARKER));
    }
}
