//! Masking for the emulator's own admin output (request log, `GET /state`), by the project's one
//! rule (A22): a key is sensitive iff its ASCII-lowercase form contains one of
//! [`assumptions::SENSITIVE_KEY_PARTS`](super::assumptions::SENSITIVE_KEY_PARTS); its value, of
//! any JSON type, becomes `******`. Not to be confused with A11, what the modelled service masks
//! in Get.

use super::actions::Params;
use super::assumptions::{MASK, is_sensitive_key};
use serde_json::Value;
use std::collections::BTreeMap;

/// Mask, at every depth of objects and arrays, the value of every sensitive key.
pub fn mask_sensitive(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                if is_sensitive_key(k) {
                    *item = Value::String(MASK.into());
                } else {
                    mask_sensitive(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_sensitive),
        _ => {}
    }
}

/// A `Configuration` parameter for the log: JSON objects and arrays come back compact with
/// sensitive values masked; anything else (a bare string, invalid JSON) is masked whole.
pub fn redact_configuration(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(mut v @ (Value::Object(_) | Value::Array(_))) => {
            mask_sensitive(&mut v);
            v.to_string()
        }
        _ => MASK.to_string(),
    }
}

/// Request parameters for the log: a parameter with a sensitive name (`OIDCToken`, `NextToken`)
/// is masked; `Configuration` is masked inside.
pub fn redact_params(params: &Params) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(k, v)| {
            let v = if is_sensitive_key(k) {
                MASK.to_string()
            } else if k == "Configuration" {
                redact_configuration(v)
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rule_matches_each_part_in_any_case() {
        for k in [
            "DingTalkClientSecret",
            "SECRET",
            "AccessToken",
            "OIDCToken",
            "Password",
            "db_passwd",
            "AesKey",
            "EncodingAESKey",
            "PrivateKeyPem",
            "rsaPRIVATEKEY",
            "Credentials",
            "credential",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        // "key" alone is not a part: ids, names and templates stay readable.
        for k in [
            "DingTalkClientId",
            "AccessKeyId",
            "Key",
            "ApiKey",
            "DingTalkTemplateId",
            "Aes_Key",
            "Private-Key",
            "private_key",
            "Name",
            "Configuration",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }

    #[test]
    fn masks_any_value_type_at_any_depth() {
        let mut v = json!({
            "DingTalkClientId": "id",
            "ClientSecret": {"nested": "object"},
            "Robots": [
                {"Name": "a", "Token": 12345},
                [{"deep": {"password": ["x", "y"]}}],
                "plain"
            ],
            "Flags": {"aesKey": null, "enabled": true, "credential": false}
        });
        mask_sensitive(&mut v);
        assert_eq!(
            v,
            json!({
                "DingTalkClientId": "id",
                "ClientSecret": "******",
                "Robots": [
                    {"Name": "a", "Token": "******"},
                    [{"deep": {"password": "******"}}],
                    "plain"
                ],
                "Flags": {"aesKey": "******", "enabled": true, "credential": "******"}
            })
        );
    }

    #[test]
    fn redaction_hides_configuration_secrets_and_tokens() {
        let mut p = Params::new();
        p.insert(
            "Configuration".into(),
            r#"{"DingTalkClientId":"id","DingTalkClientSecret":"s3cr3t-1","Inner":[{"AesKey":"k-2"}]}"#.into(),
        );
        p.insert("OIDCToken".into(), "tok-3".into());
        p.insert("NextToken".into(), "+/+/dj-4".into());
        p.insert("Name".into(), "n".into());
        let r = redact_params(&p);
        let text = format!("{r:?}");
        for s in ["s3cr3t-1", "k-2", "tok-3", "dj-4"] {
            assert!(!text.contains(s), "{s} leaked: {text}");
        }
        assert_eq!(r["Name"], "n");
        assert_eq!(
            r["Configuration"],
            r#"{"DingTalkClientId":"id","DingTalkClientSecret":"******","Inner":[{"AesKey":"******"}]}"#
        );
        assert_eq!(redact_configuration("not json s3cr3t"), MASK);
        assert_eq!(redact_configuration(r#""s3cr3t""#), MASK);
        assert_eq!(
            redact_configuration(r#"[{"Token":"t"}]"#),
            r#"[{"Token":"******"}]"#
        );
    }
}
