//! The `ChatConfiguration` custom resource: types only, no I/O.
//!
//! The committed `crds/` YAML is generated from these types by the `crdgen` binary; a test fails
//! when the two differ. Validation lives here too (OpenAPI + CEL), so bad specs are rejected at
//! admission with messages that name the field.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group owned by this project.
pub const GROUP: &str = "oos.chatops.dev";
/// Name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "chatconfigurations.oos.chatops.dev";
/// Finalizer guarding the remote configuration.
pub const FINALIZER: &str = "oos.chatops.dev/remote-cleanup";

/// Marks a Secret value that a human still has to fill in (written by `remote export`). A value
/// containing it is never sent to OOS: the object reports `SecretPlaceholder` instead.
pub const SECRET_PLACEHOLDER_MARKER: &str = "oos-chat-operator-placeholder";

/// Annotations understood by the controller.
pub mod annotations {
    /// `Delete` | `Orphan` on a Namespace: default deletion policy for objects in it.
    pub const NAMESPACE_DELETION_POLICY: &str = "oos.chatops.dev/deletion-policy";
    /// `"true"`: stop reconciling this object (no remote calls, no status changes but the condition).
    pub const PAUSED: &str = "oos.chatops.dev/paused";
    /// `"true"`: compute the plan and report it in the `DryRun` condition, never write remotely.
    pub const DRY_RUN: &str = "oos.chatops.dev/dry-run";
    /// `"true"`: on deletion, drop the finalizer without calling OOS (credentials gone, account closed…).
    pub const FORCE_ORPHAN: &str = "oos.chatops.dev/force-orphan";
    /// Duration such as `30s`, `5m`, `1h`: per-object override of the remote resync interval.
    pub const RESYNC_INTERVAL: &str = "oos.chatops.dev/resync-interval";
    /// Flux's "reconcile now" request; its value is echoed to `status.lastHandledReconcileAt`.
    pub const FLUX_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
}

/// Condition types (kstatus semantics).
pub mod condition_types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const DRY_RUN: &str = "DryRun";
}

/// Desired state of an Alibaba Cloud OOS chat configuration (a DingTalk or WeCom chatbot integration).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "oos.chatops.dev",
    version = "v1alpha1",
    kind = "ChatConfiguration",
    namespaced,
    status = "ChatConfigurationStatus",
    shortname = "chatcfg",
    category = "oos",
    category = "alibabacloud",
    doc = "An Alibaba Cloud OOS chat configuration (DingTalk or WeCom chatbot integration) managed from Kubernetes.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type", description = "Chat platform"),
    printcolumn(name = "Remote", type_ = "string", json_path = ".status.remoteName", description = "Remote configuration name"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Webhook", type_ = "string", json_path = ".status.webhookUrl", description = "Webhook URL"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Ready reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.name) ? (has(oldSelf.spec.name) ? self.spec.name == oldSelf.spec.name : self.spec.name == self.metadata.name) : (!has(oldSelf.spec.name) || oldSelf.spec.name == self.metadata.name)").message("spec.name is immutable (it is the remote configuration's identity)").field_path(".spec.name"),
    validation = Rule::new("has(self.spec.name) || self.metadata.name.size() <= 128").message("metadata.name is used as the remote name when spec.name is unset, and must then be at most 128 characters").field_path(".spec.name"),
)]
#[x_kube(
    validation = Rule::new("self.type != 'DingTalk' || has(self.dingTalk)").message("spec.dingTalk is required when spec.type is DingTalk").field_path(".dingTalk"),
    validation = Rule::new("self.type != 'DingTalk' || !has(self.weChat)").message("spec.weChat must not be set when spec.type is DingTalk").field_path(".weChat"),
    validation = Rule::new("self.type != 'WeChat' || has(self.weChat)").message("spec.weChat is required when spec.type is WeChat").field_path(".weChat"),
    validation = Rule::new("self.type != 'WeChat' || !has(self.dingTalk)").message("spec.dingTalk must not be set when spec.type is WeChat").field_path(".dingTalk"),
    validation = Rule::new("self.type == oldSelf.type").message("spec.type is immutable; create a new ChatConfiguration instead").field_path(".type"),
    validation = Rule::new("(has(self.regionId) ? self.regionId : '') == (has(oldSelf.regionId) ? oldSelf.regionId : '')").message("spec.regionId is immutable").field_path(".regionId"),
    validation = Rule::new("!has(oldSelf.ramRole) || has(self.ramRole)").message("spec.ramRole cannot be removed once set: OOS keeps the role when an update omits it; set another role instead").field_path(".ramRole"),
    validation = Rule::new("!has(oldSelf.resourceGroupId) || has(self.resourceGroupId)").message("spec.resourceGroupId cannot be removed once set: OOS keeps the resource group when an update omits it; set another one instead").field_path(".resourceGroupId"),
    validation = Rule::new("!has(self.outputSecretRef) || ((!has(self.dingTalk) || self.dingTalk.clientSecretRef.name != self.outputSecretRef.name) && (!has(self.weChat) || self.weChat.clientSecretRef.name != self.outputSecretRef.name) && (!has(self.credentialsRef) || self.credentialsRef.name != self.outputSecretRef.name) && (!has(self.extraSecretConfiguration) || self.extraSecretConfiguration.all(k, self.extraSecretConfiguration[k].name != self.outputSecretRef.name)))").message("spec.outputSecretRef must name a Secret this object does not read: the operator owns that Secret and overwrites it").field_path(".outputSecretRef"),
)]
#[serde(rename_all = "camelCase")]
pub struct ChatConfigurationSpec {
    /// Remote configuration name (the OOS `Name`, its identity within a region). Defaults to
    /// `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub name: Option<String>,

    /// Alibaba Cloud region, e.g. `cn-hangzhou`. Defaults to the operator's `--default-region`.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^[a-z]{2}(-[a-z0-9]+)+$"))]
    pub region_id: Option<String>,

    /// Chat platform: `DingTalk` or `WeChat` (WeCom). Immutable.
    #[serde(rename = "type")]
    pub chat_type: ChatPlatform,

    /// RAM role that OOS assumes to run operations, e.g. `OOSServiceRole` (a RAM role name:
    /// letters, digits, `.` and `-`). Cannot be removed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9.-]+$"))]
    pub ram_role: Option<String>,

    /// Resource group of the remote configuration, e.g. `rg-acfmxsn4m4xxxxx`. Cannot be removed
    /// once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub resource_group_id: Option<String>,

    /// DingTalk settings; required when `type` is `DingTalk`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ding_talk: Option<PlatformSettings>,

    /// WeCom settings; required when `type` is `WeChat`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub we_chat: Option<PlatformSettings>,

    /// Extra non-secret `Configuration` keys sent verbatim, for platform keys this CRD does not
    /// model yet. Keys containing `Secret` belong in `extraSecretConfiguration`. At most 32 ASCII
    /// keys of at most 64 characters; values at most 4096 characters and 16 KiB in all, without
    /// control or invisible characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.all(k, !k.lowerAscii().contains('secret') && !(k in ['DingTalkClientId', 'DingTalkTemplateId', 'WeChatClientId', 'WeChatTemplateId']))").message("spec.extraConfiguration must not hold modelled keys or keys containing 'Secret' (use spec.extraSecretConfiguration)"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 64 && size(self[k]) <= 4096)").message("spec.extraConfiguration keys must be at most 64 and values at most 4096 characters"))]
    #[x_kube(validation = Rule::new(KEY_RULE).message("spec.extraConfiguration keys must start with an ASCII letter or digit and hold only ASCII letters, digits, '_', '.' or '-'"))]
    #[x_kube(validation = Rule::new(VALUE_RULE).message("spec.extraConfiguration values must not contain control or invisible characters (C0/C1 controls other than tab and newline, zero-width space, word joiner, byte order mark, bidirectional embeddings, overrides or isolates)"))]
    #[x_kube(validation = Rule::new(EXTRA_TOTAL_RULE).message("spec.extraConfiguration must hold at most 16384 bytes (UTF-8) of keys and values in all: OOS refuses requests over 64 KiB, and the values are sent percent-encoded together with the secret ones"))]
    pub extra_configuration: Option<BTreeMap<String, String>>,

    /// Extra secret `Configuration` keys (at most 16 ASCII keys), each read from a Secret key in
    /// this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 64 && !(k in ['DingTalkClientSecret', 'WeChatClientSecret']))").message("spec.extraSecretConfiguration keys must be at most 64 characters and must not repeat a modelled secret key"))]
    #[x_kube(validation = Rule::new(KEY_RULE).message("spec.extraSecretConfiguration keys must start with an ASCII letter or digit and hold only ASCII letters, digits, '_', '.' or '-'"))]
    pub extra_secret_configuration: Option<BTreeMap<String, SecretKeyRef>>,

    /// What happens to the remote configuration when this object is deleted: `Delete` or
    /// `Orphan`. Defaults to the namespace annotation `oos.chatops.dev/deletion-policy`, else the
    /// operator's `--default-deletion-policy`, else `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Whether this object may take over a remote configuration it did not create. `Refuse`
    /// (default) reports a conflict; `Adopt` takes over an existing one and never creates;
    /// `AdoptOrCreate` takes over an existing one or creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption_policy: Option<AdoptionPolicy>,

    /// `Manage` (default) writes the remote configuration; `ObserveOnly` only reads it and
    /// reports its state and drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,

    /// Secret in this namespace with `AccessKeyId`, `AccessKeySecret` and optional
    /// `SecurityToken`, overriding the operator's default credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<LocalSecretRef>,

    /// Secret in this namespace that the operator creates and owns, receiving the webhook URL
    /// (`webhookUrl`) and, for WeCom, the AES key (`aesKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_secret_ref: Option<LocalSecretRef>,
}

/// Client credentials of the chat platform's app.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSettings {
    /// App client id (DingTalk `DingTalkClientId`, WeCom `WeChatClientId`): printable ASCII,
    /// no spaces.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(ID_RULE).message(ID_MESSAGE))]
    pub client_id: String,
    /// Card template id (DingTalk `DingTalkTemplateId`, WeCom `WeChatTemplateId`): printable
    /// ASCII, no spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(ID_RULE).message(ID_MESSAGE))]
    pub template_id: Option<String>,
    /// Secret key in this namespace holding the app client secret.
    pub client_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the object's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = forbidden_namespace_property)]
#[x_kube(validation = Rule::new("!has(self.namespace)").message(NAMESPACE_MESSAGE).field_path(".namespace"))]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A Secret in the object's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = forbidden_namespace_property)]
#[x_kube(validation = Rule::new("!has(self.namespace)").message(NAMESPACE_MESSAGE).field_path(".namespace"))]
pub struct LocalSecretRef {
    /// Secret name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// CEL: `self` (a string) is printable ASCII without spaces. Client and template ids are
/// ASCII tokens; a space, zero-width or right-to-left character pasted into one would be sent
/// as is and break the bot silently.
const ID_RULE: &str = "self.matches('^[!-~]+$')";
const ID_MESSAGE: &str = "must be printable ASCII without spaces: no whitespace, control, invisible or non-ASCII characters";

/// CEL over a map: every key is an ASCII token, like the platform's own `Configuration` keys.
const KEY_RULE: &str = "self.all(k, k.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$'))";

/// CEL over a map of strings: no value holds a character that is invisible or reorders text.
/// The same set as [`is_forbidden_char`], which the controller applies to Secret values.
const VALUE_RULE: &str = r"self.all(k, !self[k].matches('[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F\\x{200B}\\x{2060}\\x{FEFF}\\x{202A}-\\x{202E}\\x{2066}-\\x{2069}]'))";

/// CEL over `extraConfiguration`: keys and values together at most 16 KiB of UTF-8.
const EXTRA_TOTAL_RULE: &str = "self.map(k, size(bytes(k)) + size(bytes(self[k]))).sum() <= 16384";

/// Whether `c` may not appear in a value sent to OOS: a C0 or C1 control other than tab, line
/// feed and carriage return, a zero-width space, word joiner or byte order mark, or a
/// bidirectional embedding, override or isolate. (Zero-width joiners and directional marks
/// stay allowed: text in some scripts needs them.) Admission applies the same set
/// ([`VALUE_RULE`]) to `spec.extraConfiguration`.
pub fn is_forbidden_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{7F}'..='\u{9F}'
        | '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

const NAMESPACE_MESSAGE: &str = "is not supported: Secrets are read from the ChatConfiguration's own namespace only; create the Secret there";

/// Declares `namespace` on Secret references so that setting it is refused (by the rule using
/// [`NAMESPACE_MESSAGE`]) instead of being pruned silently by a client that does not ask for
/// strict field validation, which would read a same-named Secret of this namespace instead.
fn forbidden_namespace_property(schema: &mut schemars::Schema) {
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        props.insert(
            "namespace".into(),
            serde_json::json!({
                "type": "string",
                "description": "Not supported: Secrets are read from the ChatConfiguration's own namespace only. Setting it is refused at admission.",
            }),
        );
    }
}

// Chat platform (field docs describe it in the schema).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ChatPlatform {
    /// DingTalk.
    #[default]
    DingTalk,
    /// WeCom (Enterprise WeChat); the OOS API calls it `WeChat`.
    WeChat,
}

impl ChatPlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatPlatform::DingTalk => "DingTalk",
            ChatPlatform::WeChat => "WeChat",
        }
    }

    /// `Configuration` key names of this platform's modelled settings.
    pub fn keys(self) -> PlatformKeys {
        match self {
            ChatPlatform::DingTalk => PlatformKeys {
                client_id: "DingTalkClientId",
                client_secret: "DingTalkClientSecret",
                template_id: "DingTalkTemplateId",
            },
            // WeCom keys are not published by Alibaba; see docs/emulator.md "Assumptions".
            ChatPlatform::WeChat => PlatformKeys {
                client_id: "WeChatClientId",
                client_secret: "WeChatClientSecret",
                template_id: "WeChatTemplateId",
            },
        }
    }
}

/// `Configuration` key names of one platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformKeys {
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub template_id: &'static str,
}

// Deletion policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DeletionPolicy {
    /// Delete the remote configuration with this object.
    #[default]
    Delete,
    /// Keep the remote configuration.
    Orphan,
}

// Adoption policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum AdoptionPolicy {
    /// Never take over a remote configuration this object did not create.
    #[default]
    Refuse,
    /// Take over an existing remote configuration; never create one.
    Adopt,
    /// Take over an existing remote configuration, or create it.
    AdoptOrCreate,
}

// Management policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ManagementPolicy {
    /// Create, update and delete the remote configuration.
    #[default]
    Manage,
    /// Only read the remote configuration.
    ObserveOnly,
}

/// Observed state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatConfigurationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus semantics) and, with the dry-run annotation, `DryRun`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Webhook URL from the remote configuration's `Outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Remote configuration name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    /// Region of the remote configuration, fixed at the first remote write: a later change of
    /// the operator's `--default-region` never moves the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<String>,
    /// Whose credentials wrote the remote (an AccessKeyId or `role:<RoleArn>`, never a secret),
    /// fixed at the first remote write: credentials of another account are reported as
    /// `AccountChanged` instead of creating a second remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_id: Option<String>,
    /// Alibaba Cloud account that holds the remote, when the webhook URL reveals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Remote `CreatedDate` (RFC 3339) of the configuration this object owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<String>,
    /// Remote `UpdatedDate` (RFC 3339) after this operator's last write or observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_date: Option<String>,
    /// HMAC (keyed per object) of the secret values last sent; never a plain hash of a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_secret_hash: Option<String>,
    /// Hash of the non-secret desired state last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec_hash: Option<String>,
    /// How this object holds the remote: `Created` or `Adopted` (it may write and delete it).
    /// Unset while it only observes or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<String>,
    /// Set just before a Create call and kept only while its outcome is unknown (timeout, reset,
    /// 5xx); identifies a configuration created by an interrupted attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_at: Option<String>,
    /// Hash of the non-secret configuration that pending Create sent: a remote found later is
    /// resumed as this object's own only if it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_spec_hash: Option<String>,
    /// Until when an unanswered attempt of the Create call that made the remote may still be
    /// run by the service (set only when that call had one): a deletion before then waits, so
    /// such a late configuration is deleted rather than leaked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_create_until: Option<String>,
    /// Keyed HMAC of the secrets that pending Create sent (an Update re-sends them if they changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_secret_hash: Option<String>,
    /// Names of remote fields found to differ from the desired state (no values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// The last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A Kubernetes-standard condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail; never contains a secret.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ChatConfigurationSpec {
    /// The platform settings matching `type`.
    pub fn platform_settings(&self) -> Option<&PlatformSettings> {
        match self.chat_type {
            ChatPlatform::DingTalk => self.ding_talk.as_ref(),
            ChatPlatform::WeChat => self.we_chat.as_ref(),
        }
    }
}

impl ChatConfiguration {
    /// The remote name: `spec.name`, else `metadata.name`.
    pub fn remote_name(&self) -> String {
        self.spec
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// Every Secret (name) this object reads: client secret, extra secret keys, credentials.
    pub fn referenced_secrets(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for settings in [&self.spec.ding_talk, &self.spec.we_chat]
            .into_iter()
            .flatten()
        {
            names.push(settings.client_secret_ref.name.clone());
        }
        for r in self
            .spec
            .extra_secret_configuration
            .iter()
            .flat_map(|m| m.values())
        {
            names.push(r.name.clone());
        }
        if let Some(c) = &self.spec.credentials_ref {
            names.push(c.name.clone());
        }
        names.sort();
        names.dedup();
        names
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    pub fn annotation_is_true(&self, key: &str) -> bool {
        self.annotation(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The CRD manifest as YAML, exactly as committed in `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ChatConfiguration::crd();
    format!(
        "# Generated by `cargo run --bin crdgen`; do not edit.\n{}",
        serde_yaml::to_string(&crd).expect("CRD serialises to YAML")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_chars_are_the_invisible_and_control_ones() {
        for c in [
            '\0', '\u{7}', '\u{1B}', '\u{7F}', '\u{85}', '\u{200B}', '\u{2060}', '\u{FEFF}',
            '\u{202E}', '\u{2067}',
        ] {
            assert!(is_forbidden_char(c), "{:?}", c);
        }
        for c in [
            'a', ' ', '\t', '\n', '\r', 'é', '中', '\u{200D}', '\u{200F}', '😀',
        ] {
            assert!(!is_forbidden_char(c), "{:?}", c);
        }
        // The admission rule names the same ranges.
        for range in [
            "\\\\x0E-\\\\x1F",
            "\\\\x7F-\\\\x9F",
            "\\\\x{202A}-\\\\x{202E}",
            "\\\\x{2066}-\\\\x{2069}",
            "\\\\x{FEFF}",
        ] {
            assert!(VALUE_RULE.contains(range), "{range}");
        }
    }
}
