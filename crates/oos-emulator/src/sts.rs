//! STS stub: unsigned `AssumeRoleWithOIDC` (reference 8.3, assumption A18). Issued credentials
//! are accepted by the OOS actions until they expire; their owner is the role ARN's account.

use super::actions::Params;
use super::assumptions as a;
use super::codec::{b64_decode, b64_encode, random_alnum, random_hex};
use super::error::ApiError;
use super::{KeyEntry, Shared};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

pub const ACTION: &str = "AssumeRoleWithOIDC";

fn required<'p>(p: &'p Params, k: &'static str) -> Result<&'p str, ApiError> {
    p.get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::Missing(k))
}

/// `acs:ram::<account digits>:<kind>/<name>` → (account, name).
fn parse_arn<'s>(arn: &'s str, kind: &str) -> Option<(&'s str, &'s str)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (account, res) = rest.split_once(':')?;
    let name = res.strip_prefix(kind)?.strip_prefix('/')?;
    let ok = !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@".contains(&b));
    ok.then_some((account, name))
}

/// Claims of a JWT-looking token, for `OIDCTokenInfo`; not a verification.
fn jwt_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    match serde_json::from_slice(&b64_decode(payload)?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

pub fn assume_role_with_oidc(
    sh: &Shared,
    p: &Params,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, ApiError> {
    let bad = |k: &'static str, why: &str| ApiError::StsInvalidParameter(k, why.to_string());
    let role_arn = required(p, "RoleArn")?;
    let (account, role) = parse_arn(role_arn, "role")
        .ok_or_else(|| bad("RoleArn", "Use acs:ram::<account>:role/<name>."))?;
    let provider_arn = required(p, "OIDCProviderArn")?;
    let (provider_account, _) = parse_arn(provider_arn, "oidc-provider").ok_or_else(|| {
        bad(
            "OIDCProviderArn",
            "Use acs:ram::<account>:oidc-provider/<name>.",
        )
    })?;
    if provider_account != account {
        return Err(bad(
            "OIDCProviderArn",
            "It must belong to the role's account.",
        ));
    }
    let token = required(p, "OIDCToken")?.trim();
    if !(a::OIDC_TOKEN_MIN..=a::OIDC_TOKEN_MAX).contains(&token.chars().count()) {
        return Err(bad("OIDCToken", "Its length must be 4-20000 characters."));
    }
    if let Some(want) = &sh.expected_oidc_token
        && !bool::from(want.trim().as_bytes().ct_eq(token.as_bytes()))
    {
        return Err(bad("OIDCToken", "The token was not accepted."));
    }
    let session = required(p, "RoleSessionName")?;
    let session_ok = (2..=64).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".@_-".contains(&b));
    if !session_ok {
        return Err(bad(
            "RoleSessionName",
            "Use 2-64 letters, digits, '.', '@', '_' or '-'.",
        ));
    }
    let duration = match p.get("DurationSeconds").filter(|v| !v.is_empty()) {
        None => a::STS_DURATION_DEFAULT,
        Some(d) => d
            .parse::<u64>()
            .ok()
            .filter(|d| (a::STS_DURATION_MIN..=a::STS_DURATION_MAX).contains(d))
            .ok_or_else(|| bad("DurationSeconds", "Use 900-43200."))?,
    };
    let expires = now + Duration::seconds(duration as i64);
    let id = format!("STS.{}", random_alnum(24));
    let secret = random_alnum(40);
    // Real tokens are long base64 strings: include '+', '/' and '=' so clients prove they pass
    // the header through verbatim.
    let mut raw = vec![0xFBu8, 0xFF];
    raw.extend((0..96).map(|_| rand::rng().random::<u8>()));
    let token_value = format!("CAIS{}", b64_encode(&raw));
    {
        let mut keys = sh.keys.write().expect("keys lock");
        keys.retain(|_, k| k.expires.is_none_or(|e| e > now));
        keys.insert(
            id.clone(),
            KeyEntry {
                secret: secret.clone(),
                token: Some(token_value.clone()),
                owner: account.to_string(),
                expires: Some(expires),
            },
        );
    }
    let exp = expires.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut info = json!({"VerificationInfo": "Success"});
    if let Some(c) = jwt_claims(token) {
        for (claim, field) in [("sub", "Subject"), ("iss", "Issuer"), ("aud", "ClientIds")] {
            match c.get(claim) {
                Some(Value::String(s)) => info[field] = Value::String(s.clone()),
                Some(Value::Array(v)) => {
                    let ids: Vec<&str> = v.iter().filter_map(Value::as_str).collect();
                    info[field] = Value::String(ids.join(","));
                }
                _ => {}
            }
        }
        for (claim, field) in [("exp", "ExpirationTime"), ("iat", "IssuanceTime")] {
            if let Some(t) = c
                .get(claim)
                .and_then(Value::as_i64)
                .and_then(|t| DateTime::from_timestamp(t, 0))
            {
                info[field] = Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        }
    }
    let body = json!({
        "AssumedRoleUser": {
            "AssumedRoleId": format!("{}:{session}", random_hex(8)),
            "Arn": format!("acs:ram::{account}:role/{role}/{session}"),
        },
        "Credentials": {
            "AccessKeyId": id,
            "AccessKeySecret": secret,
            "SecurityToken": token_value,
            "Expiration": exp,
        },
        "OIDCTokenInfo": info,
    });
    match body {
        Value::Object(m) => Ok(m),
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_parsing() {
        assert_eq!(
            parse_arn("acs:ram::123:role/pod-role", "role"),
            Some(("123", "pod-role"))
        );
        assert_eq!(
            parse_arn("acs:ram::123:oidc-provider/ack-rrsa-c1", "oidc-provider"),
            Some(("123", "ack-rrsa-c1"))
        );
        assert_eq!(parse_arn("acs:ram::12a:role/x", "role"), None);
        assert_eq!(parse_arn("acs:ram::123:user/x", "role"), None);
        assert_eq!(parse_arn("acs:ram::123:role/", "role"), None);
    }
}
