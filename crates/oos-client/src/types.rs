//! Typed requests and responses of the five chat actions, and their JSON wire forms.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::secret::{ExposeSecret, SecretString, secret_eq};

use super::error::OosError;

/// What Get returns instead of `DingTalkClientSecret` (six asterisks).
pub const MASKED_SECRET: &str = "******";

/// A point in time returned by the service.
pub type RemoteDate = chrono::DateTime<chrono::Utc>;

/// Parse the three date forms the service uses: `2025-12-11T13:49:10+00:00`,
/// `2025-12-23T10:16:37.178097` (no zone: read as UTC) and `2026-01-02T03:04:05Z`.
pub fn parse_remote_date(s: &str) -> Option<RemoteDate> {
    let s = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    // No zone: the doc calls the field ISO 8601 without saying more; UTC is the only sane reading.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// `Type` of a chat configuration. `WeChat` means WeCom (Enterprise WeChat).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatType {
    DingTalk,
    WeChat,
    /// Any value the service may add later, kept verbatim.
    Other(String),
}

impl ChatType {
    pub fn as_str(&self) -> &str {
        match self {
            ChatType::DingTalk => "DingTalk",
            ChatType::WeChat => "WeChat",
            ChatType::Other(s) => s,
        }
    }

    /// Exact (case-sensitive) wire value.
    pub fn parse(s: &str) -> Self {
        match s {
            "DingTalk" => ChatType::DingTalk,
            "WeChat" => ChatType::WeChat,
            other => ChatType::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for ChatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ChatType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChatType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ChatType::parse(&String::deserialize(d)?))
    }
}

/// Substrings that make a JSON key sensitive (compared with the key in ASCII lowercase).
pub const SENSITIVE_KEY_PARTS: [&str; 7] = [
    "secret",
    "token",
    "password",
    "passwd",
    "aeskey",
    "privatekey",
    "credential",
];

/// The one masking rule of the client (CLI printing, `Debug`, error scrubbing): a JSON key is
/// sensitive iff its ASCII-lowercase form contains any of [`SENSITIVE_KEY_PARTS`]. The WeCom
/// keys are not published, so anything that looks like a credential is treated as one.
pub fn is_sensitive_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SENSITIVE_KEY_PARTS.iter().any(|s| k.contains(s))
}

/// Replace the value of every sensitive key (whatever its JSON type) by [`MASKED_SECRET`], at
/// every depth: inside nested objects and inside arrays.
pub fn mask_sensitive(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_sensitive_key(k) {
                    *v = Value::String(MASKED_SECRET.into());
                } else {
                    mask_sensitive(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_sensitive),
        _ => {}
    }
}

/// The values [`mask_sensitive`] would hide, as text (every string or number leaf under a
/// sensitive key, at any depth): the client masks them in service error messages.
pub fn sensitive_values(value: &Value) -> Vec<String> {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
            Value::Object(map) => map.values().for_each(|i| leaves(i, out)),
            Value::Bool(_) | Value::Null => {}
        }
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if is_sensitive_key(k) {
                        leaves(v, out);
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

/// Whether `desired` equals `remote` where the service masks secrets: a remote
/// [`MASKED_SECRET`] under a sensitive key (at any depth) matches any desired value.
fn matches_masked(key_sensitive: bool, desired: &Value, remote: &Value) -> bool {
    match (desired, remote) {
        (_, Value::String(r)) if key_sensitive && r == MASKED_SECRET => true,
        (Value::Object(d), Value::Object(r)) => {
            d.len() == r.len()
                && d.iter().all(|(k, dv)| {
                    r.get(k)
                        .is_some_and(|rv| matches_masked(is_sensitive_key(k), dv, rv))
                })
        }
        (Value::Array(d), Value::Array(r)) => {
            d.len() == r.len()
                && d.iter()
                    .zip(r)
                    .all(|(dv, rv)| matches_masked(key_sensitive, dv, rv))
        }
        (d, r) => d == r,
    }
}

const K_CLIENT_ID: &str = "DingTalkClientId";
const K_CLIENT_SECRET: &str = "DingTalkClientSecret";
const K_TEMPLATE_ID: &str = "DingTalkTemplateId";

/// The `Configuration` JSON object (sent and returned as a JSON *string*).
/// `PartialEq` compares secrets by value.
#[derive(Clone, Default)]
pub struct ChatSettings {
    pub ding_talk_client_id: Option<String>,
    pub ding_talk_client_secret: Option<SecretString>,
    pub ding_talk_template_id: Option<String>,
    /// Every other key (WeCom keys are not published), kept as-is.
    pub extra: BTreeMap<String, Value>,
}

impl ChatSettings {
    /// Compact JSON, known keys first, then `extra` in key order.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("a map of strings and JSON values always serialises")
    }

    /// Parse the JSON string of `Configuration`.
    pub fn from_json_str(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// A copy with every secret value replaced by [`MASKED_SECRET`] (for printing): the
    /// typed `DingTalkClientSecret` and, through [`mask_sensitive`], every sensitive key of
    /// `extra` at any depth.
    pub fn masked(&self) -> ChatSettings {
        let mut v = Value::Object(self.to_map());
        mask_sensitive(&mut v);
        serde_json::from_value(v).expect("a JSON object always parses as ChatSettings")
    }

    /// The JSON object with [`mask_sensitive`] applied (for printing).
    pub fn masked_json(&self) -> Value {
        let mut v = Value::Object(self.to_map());
        mask_sensitive(&mut v);
        v
    }

    /// The values [`masked`](Self::masked) hides (for scrubbing error messages).
    pub(crate) fn secret_values(&self) -> Vec<String> {
        sensitive_values(&Value::Object(self.to_map()))
    }

    /// Whether `remote` (as returned by Get, secrets masked) matches this desired state.
    /// A remote value equal to `******` under a sensitive key (at any depth) matches any
    /// desired value: Get never reveals secrets, so secret drift cannot be seen. Everything
    /// else must match as parsed JSON.
    pub fn matches_remote(&self, remote: &ChatSettings) -> bool {
        matches_masked(
            false,
            &Value::Object(self.to_map()),
            &Value::Object(remote.to_map()),
        )
    }

    fn to_map(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        if let Some(v) = &self.ding_talk_client_id {
            m.insert(K_CLIENT_ID.into(), Value::String(v.clone()));
        }
        if let Some(v) = &self.ding_talk_client_secret {
            m.insert(
                K_CLIENT_SECRET.into(),
                Value::String(v.expose_secret().to_owned()),
            );
        }
        if let Some(v) = &self.ding_talk_template_id {
            m.insert(K_TEMPLATE_ID.into(), Value::String(v.clone()));
        }
        m
    }
}

impl PartialEq for ChatSettings {
    fn eq(&self, other: &Self) -> bool {
        self.ding_talk_client_id == other.ding_talk_client_id
            && secret_eq(
                self.ding_talk_client_secret.as_ref(),
                other.ding_talk_client_secret.as_ref(),
            )
            && self.ding_talk_template_id == other.ding_talk_template_id
            && self.extra == other.extra
    }
}

impl Serialize for ChatSettings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // Typed fields win over a same-named `extra` entry, so a key is never emitted twice.
        let typed = [
            (K_CLIENT_ID, self.ding_talk_client_id.as_deref()),
            (
                K_CLIENT_SECRET,
                self.ding_talk_client_secret
                    .as_ref()
                    .map(|s| s.expose_secret()),
            ),
            (K_TEMPLATE_ID, self.ding_talk_template_id.as_deref()),
        ];
        let mut map = s.serialize_map(None)?;
        for (k, v) in typed {
            if let Some(v) = v {
                map.serialize_entry(k, v)?;
            }
        }
        for (k, v) in &self.extra {
            if typed.iter().any(|(tk, tv)| tk == k && tv.is_some()) {
                continue;
            }
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChatSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut extra: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
        // A known key with a non-string value stays in `extra`, so nothing is lost.
        let mut take = |k: &str| match extra.get(k) {
            Some(Value::String(_)) => match extra.remove(k) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        };
        let ding_talk_client_id = take(K_CLIENT_ID);
        let ding_talk_client_secret = take(K_CLIENT_SECRET).map(SecretString::from);
        let ding_talk_template_id = take(K_TEMPLATE_ID);
        Ok(ChatSettings {
            ding_talk_client_id,
            ding_talk_client_secret,
            ding_talk_template_id,
            extra,
        })
    }
}

impl std::fmt::Debug for ChatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `masked_json()` replaces secret values, so Debug cannot leak them.
        match self.masked_json() {
            Value::Object(m) => f.debug_map().entries(m.iter()).finish(),
            _ => unreachable!("masked_json builds an object"),
        }
    }
}

/// The `Outputs` JSON string: webhook `URL` and, for WeCom, `AesKey`.
/// `PartialEq` compares secrets by value.
#[derive(Clone, Default)]
pub struct Outputs {
    pub url: Option<String>,
    pub aes_key: Option<SecretString>,
    pub extra: BTreeMap<String, Value>,
}

impl Outputs {
    pub fn from_json_str(s: &str) -> Result<Self, serde_json::Error> {
        let mut extra: BTreeMap<String, Value> = serde_json::from_str(s)?;
        let mut take = |k: &str| match extra.get(k) {
            Some(Value::String(_)) => match extra.remove(k) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        };
        let url = take("URL");
        let aes_key = take("AesKey").map(SecretString::from);
        Ok(Outputs {
            url,
            aes_key,
            extra,
        })
    }

    /// JSON object with [`mask_sensitive`] applied (for printing): `AesKey` and every
    /// sensitive key at any depth become [`MASKED_SECRET`].
    pub fn masked_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        if let Some(u) = &self.url {
            m.insert("URL".into(), Value::String(u.clone()));
        }
        if let Some(a) = &self.aes_key {
            m.insert("AesKey".into(), Value::String(a.expose_secret().to_owned()));
        }
        let mut v = Value::Object(m);
        mask_sensitive(&mut v);
        v
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && secret_eq(self.aes_key.as_ref(), other.aes_key.as_ref())
            && self.extra == other.extra
    }
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.masked_json() {
            Value::Object(m) => f.debug_map().entries(m.iter()).finish(),
            _ => unreachable!("masked_json builds an object"),
        }
    }
}

/// Parameters of Create and Update (Update identifies the record by `name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfigurationInput {
    pub name: String,
    pub chat_type: ChatType,
    pub ram_role: Option<String>,
    pub resource_group_id: Option<String>,
    pub configuration: Option<ChatSettings>,
}

/// Create/Update response.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfigurationStamp {
    pub name: String,
    pub created_date: Option<RemoteDate>,
    pub updated_date: Option<RemoteDate>,
    /// `RequestId` of the answer (for logs and support tickets).
    pub request_id: Option<String>,
    /// An earlier attempt of this call got no answer (timeout, reset, 5xx): the service may
    /// still run it after this answer.
    pub unanswered_attempts: bool,
}

/// Get response. `configuration`'s secret comes back as [`MASKED_SECRET`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfiguration {
    pub name: String,
    pub chat_type: ChatType,
    pub ram_role: Option<String>,
    pub resource_group_id: Option<String>,
    pub configuration: Option<ChatSettings>,
    pub outputs: Option<Outputs>,
    pub created_date: Option<RemoteDate>,
    pub updated_date: Option<RemoteDate>,
}

/// List item: no `Configuration`, no `ResourceGroupId` (call Get for those).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfigurationSummary {
    pub name: String,
    pub chat_type: ChatType,
    pub ram_role: Option<String>,
    pub outputs: Option<Outputs>,
    pub created_date: Option<RemoteDate>,
    pub updated_date: Option<RemoteDate>,
}

/// One `ListChatConfigurations` filter (sent as `Filters.N.Name` / `Filters.N.Value`, N from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub value: String,
}

// ---- wire forms (PascalCase JSON) ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WireChatConfiguration {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Type")]
    chat_type: Option<String>,
    #[serde(rename = "RamRole")]
    ram_role: Option<String>,
    #[serde(rename = "ResourceGroupId")]
    resource_group_id: Option<String>,
    #[serde(rename = "Configuration")]
    configuration: Option<String>,
    #[serde(rename = "Outputs")]
    outputs: Option<String>,
    #[serde(rename = "CreatedDate")]
    created_date: Option<String>,
    #[serde(rename = "UpdatedDate")]
    updated_date: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireSingle {
    #[serde(rename = "ChatConfiguration")]
    pub chat_configuration: Option<WireChatConfiguration>,
}

#[derive(Deserialize)]
pub(crate) struct WireList {
    #[serde(rename = "ChatConfigurations", default)]
    pub chat_configurations: Vec<WireChatConfiguration>,
    #[serde(rename = "NextToken", default)]
    pub next_token: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn date(field: &str, s: Option<String>) -> Option<RemoteDate> {
    let s = non_empty(s)?;
    let d = parse_remote_date(&s);
    if d.is_none() {
        // Lenient on purpose: an odd date must not block reconciliation.
        tracing::warn!(field, value = %s, "unparseable date from OOS, ignored");
    }
    d
}

impl WireChatConfiguration {
    fn name(&self) -> Result<String, OosError> {
        non_empty(self.name.clone())
            .ok_or_else(|| OosError::Decode("chat configuration without Name".into()))
    }

    pub(crate) fn into_stamp(
        self,
        request_id: Option<String>,
    ) -> Result<ChatConfigurationStamp, OosError> {
        Ok(ChatConfigurationStamp {
            name: self.name()?,
            created_date: date("CreatedDate", self.created_date),
            updated_date: date("UpdatedDate", self.updated_date),
            request_id,
            unanswered_attempts: false,
        })
    }

    fn outputs(&self) -> Result<Option<Outputs>, OosError> {
        match non_empty(self.outputs.clone()) {
            None => Ok(None),
            Some(s) => Outputs::from_json_str(&s)
                .map(Some)
                // serde_json's message names position and kind, never the input text.
                .map_err(|e| OosError::Decode(format!("Outputs is not a JSON object: {e}"))),
        }
    }

    pub(crate) fn into_full(self) -> Result<ChatConfiguration, OosError> {
        let name = self.name()?;
        let outputs = self.outputs()?;
        let configuration = match non_empty(self.configuration) {
            None => None,
            Some(s) => Some(ChatSettings::from_json_str(&s).map_err(|e| {
                OosError::Decode(format!("Configuration is not a JSON object: {e}"))
            })?),
        };
        Ok(ChatConfiguration {
            name,
            chat_type: ChatType::parse(self.chat_type.as_deref().unwrap_or_default()),
            ram_role: non_empty(self.ram_role),
            resource_group_id: non_empty(self.resource_group_id),
            configuration,
            outputs,
            created_date: date("CreatedDate", self.created_date),
            updated_date: date("UpdatedDate", self.updated_date),
        })
    }

    pub(crate) fn into_summary(self) -> Result<ChatConfigurationSummary, OosError> {
        let name = self.name()?;
        let outputs = self.outputs()?;
        Ok(ChatConfigurationSummary {
            name,
            chat_type: ChatType::parse(self.chat_type.as_deref().unwrap_or_default()),
            ram_role: non_empty(self.ram_role),
            outputs,
            created_date: date("CreatedDate", self.created_date),
            updated_date: date("UpdatedDate", self.updated_date),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_three_forms() {
        let utc = |y, mo, d, h, mi, s| chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        assert_eq!(
            parse_remote_date("2025-12-11T13:49:10+00:00"),
            Some(utc(2025, 12, 11, 13, 49, 10))
        );
        assert_eq!(
            parse_remote_date("2026-01-02T03:04:05Z"),
            Some(utc(2026, 1, 2, 3, 4, 5))
        );
        let micro = parse_remote_date("2025-12-23T10:16:37.178097").unwrap();
        assert_eq!(
            micro,
            utc(2025, 12, 23, 10, 16, 37) + chrono::Duration::microseconds(178_097)
        );
        // A real offset is applied, not dropped.
        assert_eq!(
            parse_remote_date("2025-12-11T21:49:10+08:00"),
            Some(utc(2025, 12, 11, 13, 49, 10))
        );
        assert_eq!(
            parse_remote_date("2025-12-11T13:49:10"),
            Some(utc(2025, 12, 11, 13, 49, 10))
        );
        assert_eq!(parse_remote_date("yesterday"), None);
        assert_eq!(parse_remote_date(""), None);
    }

    #[test]
    fn chat_type_round_trip() {
        assert_eq!(ChatType::parse("DingTalk"), ChatType::DingTalk);
        assert_eq!(ChatType::parse("WeChat"), ChatType::WeChat);
        assert_eq!(
            ChatType::parse("dingtalk"),
            ChatType::Other("dingtalk".into())
        );
        assert_eq!(ChatType::Other("Lark".into()).as_str(), "Lark");
        assert_eq!(
            serde_json::to_string(&ChatType::WeChat).unwrap(),
            "\"WeChat\""
        );
        let t: ChatType = serde_json::from_str("\"DingTalk\"").unwrap();
        assert_eq!(t, ChatType::DingTalk);
    }

    #[test]
    fn settings_round_trip_and_extra() {
        let s = ChatSettings {
            ding_talk_client_id: Some("ding abc*~/+".into()),
            ding_talk_client_secret: Some("s3cr3t".into()),
            ding_talk_template_id: Some("tpl-1.schema".into()),
            extra: BTreeMap::new(),
        };
        // Same compact JSON as the OOS-CREATE vector.
        assert_eq!(
            s.to_json_string(),
            r#"{"DingTalkClientId":"ding abc*~/+","DingTalkClientSecret":"s3cr3t","DingTalkTemplateId":"tpl-1.schema"}"#
        );
        let back = ChatSettings::from_json_str(&s.to_json_string()).unwrap();
        assert_eq!(back, s);

        let doc = r#"{"DingTalkClientId": "dingpx", "DingTalkClientSecret": "******", "DingTalkTemplateId": "381c.schema", "WeComCorpId": "ww1", "Nested": {"a": [1, 2]}, "DingTalkX": 5}"#;
        let parsed = ChatSettings::from_json_str(doc).unwrap();
        assert_eq!(parsed.ding_talk_client_id.as_deref(), Some("dingpx"));
        assert_eq!(
            parsed.extra.get("WeComCorpId"),
            Some(&Value::String("ww1".into()))
        );
        assert_eq!(
            parsed.extra.get("Nested"),
            Some(&serde_json::json!({"a": [1, 2]}))
        );
        let reparsed: Value = serde_json::from_str(&parsed.to_json_string()).unwrap();
        let original: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(reparsed, original);
        assert!(ChatSettings::from_json_str("[1]").is_err());
    }

    #[test]
    fn typed_field_wins_over_extra_duplicate() {
        let mut s = ChatSettings {
            ding_talk_client_id: Some("typed".into()),
            ..Default::default()
        };
        s.extra
            .insert("DingTalkClientId".into(), Value::String("extra".into()));
        assert_eq!(s.to_json_string(), r#"{"DingTalkClientId":"typed"}"#);
        // A non-string known key stays in extra and survives.
        let p = ChatSettings::from_json_str(r#"{"DingTalkClientId":7}"#).unwrap();
        assert_eq!(p.ding_talk_client_id, None);
        assert_eq!(p.to_json_string(), r#"{"DingTalkClientId":7}"#);
    }

    #[test]
    fn matches_remote_ignores_masked_secret_only() {
        let desired = ChatSettings::from_json_str(
            r#"{"DingTalkClientId":"c","DingTalkClientSecret":"real","DingTalkTemplateId":"t","AppSecret":"x","Mode":"a"}"#,
        )
        .unwrap();
        let remote = ChatSettings::from_json_str(
            r#"{"DingTalkClientId": "c", "DingTalkClientSecret": "******", "DingTalkTemplateId": "t", "AppSecret": "******", "Mode": "a"}"#,
        )
        .unwrap();
        assert!(desired.matches_remote(&remote));
        let mut changed = remote.clone();
        changed.ding_talk_template_id = Some("other".into());
        assert!(!desired.matches_remote(&changed));
        let mut changed = remote.clone();
        changed
            .extra
            .insert("Mode".into(), Value::String("b".into()));
        assert!(!desired.matches_remote(&changed));
        let mut missing = remote.clone();
        missing.ding_talk_client_secret = None;
        assert!(!desired.matches_remote(&missing));
        // "******" only stands for secrets: a masked non-secret key does not match.
        let mut odd = remote;
        odd.extra
            .insert("Mode".into(), Value::String(MASKED_SECRET.into()));
        assert!(!desired.matches_remote(&odd));
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = ChatSettings::from_json_str(
            r#"{"DingTalkClientId":"visible-id","DingTalkClientSecret":"TOPSECRET1","CorpSecret":"TOPSECRET2","EncodingAesKey":"TOPSECRET3","aeskey":"TOPSECRET4"}"#,
        )
        .unwrap();
        let o = Outputs::from_json_str(
            r#"{"URL":"https://x/webhook/","AesKey":"TOPSECRET5","Token":"TOPSECRET6"}"#,
        )
        .unwrap();
        let full = ChatConfiguration {
            name: "n".into(),
            chat_type: ChatType::WeChat,
            ram_role: None,
            resource_group_id: None,
            configuration: Some(s.clone()),
            outputs: Some(o.clone()),
            created_date: None,
            updated_date: None,
        };
        let input = ChatConfigurationInput {
            name: "n".into(),
            chat_type: ChatType::DingTalk,
            ram_role: None,
            resource_group_id: None,
            configuration: Some(s.clone()),
        };
        let summary = ChatConfigurationSummary {
            name: "n".into(),
            chat_type: ChatType::WeChat,
            ram_role: None,
            outputs: Some(o.clone()),
            created_date: None,
            updated_date: None,
        };
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{o:?}"),
            format!("{full:?}"),
            format!("{full:#?}"),
            format!("{input:?}"),
            format!("{summary:?}"),
            format!("{:?}", s.masked()),
            o.masked_json().to_string(),
            s.masked().to_json_string(),
        ] {
            assert!(!text.contains("TOPSECRET"), "leak in {text}");
        }
        assert!(format!("{s:?}").contains("visible-id"));
        assert!(format!("{o:?}").contains("https://x/webhook/"));
        assert_eq!(o.aes_key.as_ref().unwrap().expose_secret(), "TOPSECRET5");
    }

    #[test]
    fn sensitive_keys_rule() {
        for k in [
            "DingTalkClientSecret",
            "SECRET",
            "AccessToken",
            "password",
            "DbPasswd",
            "EncodingAESKey",
            "aeskey",
            "PrivateKey",
            "privateKeyPem",
            "Credentials",
            "ServiceCredential",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "DingTalkClientId",
            "URL",
            "Mode",
            "Key",
            "Private",
            "Pass",
            "Aes",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }

    #[test]
    fn mask_sensitive_is_recursive_and_type_agnostic() {
        let mut v = serde_json::json!({
            "Id": "visible",
            "Token": 12345,
            "Nested": {
                "CorpSecret": {"a": "S1"},
                "List": [{"Password": ["S2", "S3"]}, {"Plain": "ok"}, "top-level-string"],
                "Credential": null,
                "Flag": true
            },
            "Arr": [[{"AesKey": false}]]
        });
        mask_sensitive(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "Id": "visible",
                "Token": "******",
                "Nested": {
                    "CorpSecret": "******",
                    "List": [{"Password": "******"}, {"Plain": "ok"}, "top-level-string"],
                    "Credential": "******",
                    "Flag": true
                },
                "Arr": [[{"AesKey": "******"}]]
            })
        );
        let orig =
            serde_json::json!({"A": {"B": [{"my_token": "S9", "n": 1}]}, "Secret": {"x": 7}});
        let mut vals = sensitive_values(&orig);
        vals.sort();
        assert_eq!(vals, ["7", "S9"]);
    }

    #[test]
    fn settings_and_outputs_mask_at_every_depth() {
        let s = ChatSettings::from_json_str(
            r#"{"DingTalkClientId":"id","DingTalkClientSecret":"TOPSECRET0","WeCom":{"Apps":[{"CorpSecret":"TOPSECRET1","AgentId":7}]},"Keys":[{"PrivateKey":{"pem":"TOPSECRET2"}}]}"#,
        )
        .unwrap();
        let o = Outputs::from_json_str(
            r#"{"URL":"https://x/","AesKey":"TOPSECRET3","Extra":{"deep":[{"callbackToken":"TOPSECRET4"}]}}"#,
        )
        .unwrap();
        let masked = s.masked();
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{o:?}"),
            format!("{masked:?}"),
            masked.to_json_string(),
            s.masked_json().to_string(),
            o.masked_json().to_string(),
        ] {
            assert!(!text.contains("TOPSECRET"), "leak in {text}");
        }
        assert_eq!(
            masked.to_json_string(),
            r#"{"DingTalkClientId":"id","DingTalkClientSecret":"******","Keys":[{"PrivateKey":"******"}],"WeCom":{"Apps":[{"AgentId":7,"CorpSecret":"******"}]}}"#
        );
        assert_eq!(
            o.masked_json(),
            serde_json::json!({"URL":"https://x/","AesKey":"******","Extra":{"deep":[{"callbackToken":"******"}]}})
        );
        let mut vals = s.secret_values();
        vals.sort();
        assert_eq!(vals, ["TOPSECRET0", "TOPSECRET1", "TOPSECRET2"]);
        // A remote that masks nested secrets still matches; a changed nested non-secret does not.
        assert!(s.matches_remote(&masked));
        let mut changed = masked.clone();
        changed.extra.insert(
            "WeCom".into(),
            serde_json::json!({"Apps":[{"CorpSecret":"******","AgentId":8}]}),
        );
        assert!(!s.matches_remote(&changed));
    }

    #[test]
    fn wire_get_example_decodes() {
        let body = r#"{"RequestId": "4DB0****1234",
 "ChatConfiguration": {"Name": "chatops", "Type": "DingTalk", "RamRole": "OOSServiceRole",
   "Configuration": "{\"DingTalkClientId\": \"dingpxlbxp0rgs7uxmtb\", \"DingTalkClientSecret\": \"******\", \"DingTalkTemplateId\": \"381c5aee-f8af-48a4-94be-cce587e42ea4.schema\"}",
   "ResourceGroupId": "s", "CreatedDate": "2025-12-26T09:53:02+00:00", "UpdatedDate": "2026-01-07T02:14:55+00:00",
   "Outputs": "{\"URL\": \"https://1407907063606569.appflow.aliyunnest.com/webhook/\"}"}}"#;
        let w: WireSingle = serde_json::from_str(body).unwrap();
        let c = w.chat_configuration.unwrap().into_full().unwrap();
        assert_eq!(c.name, "chatops");
        assert_eq!(c.chat_type, ChatType::DingTalk);
        assert_eq!(c.resource_group_id.as_deref(), Some("s"));
        let cfg = c.configuration.unwrap();
        assert_eq!(
            cfg.ding_talk_client_secret.unwrap().expose_secret(),
            MASKED_SECRET
        );
        assert_eq!(
            cfg.ding_talk_template_id.as_deref(),
            Some("381c5aee-f8af-48a4-94be-cce587e42ea4.schema")
        );
        assert_eq!(
            c.outputs.unwrap().url.as_deref(),
            Some("https://1407907063606569.appflow.aliyunnest.com/webhook/")
        );
        assert_eq!(c.updated_date, parse_remote_date("2026-01-07T02:14:55Z"));
    }

    #[test]
    fn wire_list_and_update_examples_decode() {
        let body = r#"{"RequestId": "4DB0****1234", "ChatConfigurations": [{"Name": "test-wechat", "CreatedDate": "2025-12-10T10:09:32+00:00", "UpdatedDate": "2025-12-28T13:59:48+00:00", "RamRole": "OOSServiceRole", "Type": "WeChat", "Outputs": "{\"URL\": \"https://1407907063606569.appflow.aliyunnes\", \"AesKey\": \"UKAxyRabaJlaDxS3XZ6st18grPteemRtGeDVVgF\"}"}]}"#;
        let w: WireList = serde_json::from_str(body).unwrap();
        assert_eq!(w.next_token, None);
        let items: Vec<_> = w
            .chat_configurations
            .into_iter()
            .map(|i| i.into_summary().unwrap())
            .collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].chat_type, ChatType::WeChat);
        let out = items[0].outputs.as_ref().unwrap();
        assert_eq!(
            out.aes_key.as_ref().unwrap().expose_secret(),
            "UKAxyRabaJlaDxS3XZ6st18grPteemRtGeDVVgF"
        );

        let upd = r#"{"RequestId":"r","ChatConfiguration":{"Name": "dingtalk", "CreatedDate": "2025-12-23T10:14:28+00:00", "UpdatedDate": "2025-12-23T10:16:37.178097"}}"#;
        let st = serde_json::from_str::<WireSingle>(upd)
            .unwrap()
            .chat_configuration
            .unwrap()
            .into_stamp(Some("r".into()))
            .unwrap();
        assert_eq!(st.request_id.as_deref(), Some("r"));
        assert_eq!(st.name, "dingtalk");
        assert!(st.updated_date.unwrap() > st.created_date.unwrap());

        let bad = r#"{"ChatConfiguration":{"Name":"x","Configuration":"not json"}}"#;
        let e = serde_json::from_str::<WireSingle>(bad)
            .unwrap()
            .chat_configuration
            .unwrap()
            .into_full()
            .unwrap_err();
        assert!(matches!(e, OosError::Decode(_)));
    }
}
