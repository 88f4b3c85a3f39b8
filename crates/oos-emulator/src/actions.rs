//! The five chat-configuration actions: parameter validation and semantics (assumptions A7–A15).

use super::assumptions as a;
use super::codec::{b64_decode, b64_encode, python_json, random_alnum, random_hex};
use super::error::{ApiError, invalid};
use super::store::{Record, Store};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Decoded request parameters (query, plus a form body when there is one).
pub type Params = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Get,
    List,
    Delete,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Self::Create,
        Self::Update,
        Self::Get,
        Self::List,
        Self::Delete,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "CreateChatConfiguration",
            Self::Update => "UpdateChatConfiguration",
            Self::Get => "GetChatConfiguration",
            Self::List => "ListChatConfigurations",
            Self::Delete => "DeleteChatConfiguration",
        }
    }
}

/// What an action needs besides its parameters.
pub struct Ctx<'a> {
    pub owner: &'a str,
    pub store: &'a Store,
    pub default_region: &'a str,
    pub zoneless_update_date: bool,
    pub now: DateTime<Utc>,
}

/// Run `action`; the result is the response body without `RequestId`.
pub fn execute(action: Action, p: &Params, ctx: &Ctx<'_>) -> Result<Map<String, Value>, ApiError> {
    let region = region(p, ctx.default_region)?;
    let key = (ctx.owner.to_string(), region);
    let out = match action {
        Action::Create => create(p, ctx, key),
        Action::Update => update(p, ctx, key),
        Action::Get => get(p, ctx, key),
        Action::List => list(p, ctx, key),
        Action::Delete => delete(p, ctx, key),
    }?;
    match out {
        Value::Object(m) => Ok(m),
        _ => unreachable!("actions build objects"),
    }
}

/// A parameter, with an empty value counting as absent (A9).
fn opt<'p>(p: &'p Params, k: &str) -> Option<&'p str> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

fn region(p: &Params, default: &str) -> Result<String, ApiError> {
    match opt(p, "RegionId") {
        None => Ok(default.to_string()),
        Some(r)
            if r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Ok(r.to_string())
        }
        Some(_) => Err(invalid(
            "RegionId",
            "Use lowercase letters, digits and hyphens.",
        )),
    }
}

fn name(p: &Params) -> Result<String, ApiError> {
    let n = opt(p, "Name").ok_or(ApiError::Missing("Name"))?;
    if !a::name_is_valid(n) {
        return Err(invalid(
            "Name",
            format!(
                "Use 1-{} characters: letters, digits, '.', '_' or '-'.",
                a::NAME_MAX_LEN
            ),
        ));
    }
    Ok(n.to_string())
}

fn kind(p: &Params) -> Result<Option<String>, ApiError> {
    match opt(p, "Type") {
        None => Ok(None),
        Some(t) if a::TYPES.contains(&t) => Ok(Some(t.to_string())),
        Some(_) => Err(invalid(
            "Type",
            format!("Valid values: {}.", a::TYPES.join(", ")),
        )),
    }
}

fn configuration(p: &Params) -> Result<Option<Map<String, Value>>, ApiError> {
    match opt(p, "Configuration") {
        None => Ok(None),
        Some(c) => match serde_json::from_str::<Value>(c) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err(invalid("Configuration", "It must be a JSON object.")),
        },
    }
}

fn ram_role(p: &Params) -> Result<Option<String>, ApiError> {
    match opt(p, "RamRole") {
        None => Ok(None),
        Some(r)
            if r.len() <= a::RAM_ROLE_MAX_LEN
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
        {
            Ok(Some(r.to_string()))
        }
        Some(_) => Err(invalid("RamRole", "Use 1-64 letters, digits, '.' or '-'.")),
    }
}

fn resource_group(p: &Params) -> Result<Option<String>, ApiError> {
    match opt(p, "ResourceGroupId") {
        None => Ok(None),
        Some(r)
            if r.len() <= a::RESOURCE_GROUP_MAX_LEN
                && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(Some(r.to_string()))
        }
        Some(_) => Err(invalid(
            "ResourceGroupId",
            "Use at most 64 letters, digits or '-'.",
        )),
    }
}

fn date(d: &DateTime<Utc>) -> String {
    d.format(a::DATE_FORMAT).to_string()
}

fn outputs(r: &Record) -> String {
    let mut m = Map::new();
    m.insert("URL".into(), Value::String(r.url.clone()));
    if let Some(k) = &r.aes_key {
        m.insert("AesKey".into(), Value::String(k.clone()));
    }
    python_json(&Value::Object(m))
}

fn aes_key_for(kind: &str) -> Option<String> {
    (kind == "WeChat").then(|| random_alnum(a::AES_KEY_LEN))
}

/// Mask (A11) every value whose key ends in `Secret`, at any depth.
pub fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                if k.ends_with(a::SECRET_KEY_SUFFIX) {
                    *item = Value::String(a::MASK.into());
                } else {
                    mask_secrets(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

fn summary(r: &Record) -> Value {
    json!({"Name": r.name, "CreatedDate": date(&r.created), "UpdatedDate": date(&r.updated)})
}

fn create(p: &Params, ctx: &Ctx<'_>, key: (String, String)) -> Result<Value, ApiError> {
    let name = name(p)?;
    let kind = kind(p)?.ok_or(ApiError::Missing("Type"))?;
    let configuration = configuration(p)?.ok_or(ApiError::Missing("Configuration"))?;
    let ram_role = ram_role(p)?;
    let resource_group_id = resource_group(p)?;
    let record = Record {
        url: format!(
            "https://{}{}{}",
            ctx.owner,
            a::WEBHOOK_HOST_SUFFIX,
            random_hex(16)
        ),
        aes_key: aes_key_for(&kind),
        name: name.clone(),
        kind,
        ram_role,
        configuration,
        resource_group_id,
        created: ctx.now,
        updated: ctx.now,
    };
    ctx.store
        .with(|t| {
            let table = t.entry(key).or_default();
            if table.contains_key(&name) {
                return (Err(ApiError::AlreadyExists), false);
            }
            let body = json!({"ChatConfiguration": summary(&record)});
            table.insert(name, record);
            (Ok(body), true)
        })
        .map_err(persist_failed)?
}

fn update(p: &Params, ctx: &Ctx<'_>, key: (String, String)) -> Result<Value, ApiError> {
    let name = name(p)?;
    let (kind, configuration) = (kind(p)?, configuration(p)?);
    let (ram_role, resource_group_id) = (ram_role(p)?, resource_group(p)?);
    ctx.store
        .with(|t| {
            let Some(r) = t.get_mut(&key).and_then(|tb| tb.get_mut(&name)) else {
                return (Err(ApiError::NotFound), false);
            };
            if let Some(k) = kind {
                if k != r.kind {
                    r.aes_key = aes_key_for(&k);
                }
                r.kind = k;
            }
            if let Some(c) = configuration {
                r.configuration = c;
            }
            if ram_role.is_some() {
                r.ram_role = ram_role;
            }
            if resource_group_id.is_some() {
                r.resource_group_id = resource_group_id;
            }
            r.updated = ctx.now;
            let mut s = summary(r);
            if ctx.zoneless_update_date {
                s["UpdatedDate"] =
                    Value::String(r.updated.format(a::ZONELESS_DATE_FORMAT).to_string());
            }
            (Ok(json!({"ChatConfiguration": s})), true)
        })
        .map_err(persist_failed)?
}

fn get(p: &Params, ctx: &Ctx<'_>, key: (String, String)) -> Result<Value, ApiError> {
    let name = name(p)?;
    ctx.store.read(|t| {
        let r = t
            .get(&key)
            .and_then(|tb| tb.get(&name))
            .ok_or(ApiError::NotFound)?;
        let mut conf = Value::Object(r.configuration.clone());
        mask_secrets(&mut conf);
        let mut c = Map::new();
        c.insert("Name".into(), r.name.clone().into());
        c.insert("Type".into(), r.kind.clone().into());
        if let Some(role) = &r.ram_role {
            c.insert("RamRole".into(), role.clone().into());
        }
        c.insert("Configuration".into(), python_json(&conf).into());
        if let Some(rg) = &r.resource_group_id {
            c.insert("ResourceGroupId".into(), rg.clone().into());
        }
        c.insert("CreatedDate".into(), date(&r.created).into());
        c.insert("UpdatedDate".into(), date(&r.updated).into());
        c.insert("Outputs".into(), outputs(r).into());
        Ok(json!({"ChatConfiguration": c}))
    })
}

fn delete(p: &Params, ctx: &Ctx<'_>, key: (String, String)) -> Result<Value, ApiError> {
    let name = name(p)?;
    ctx.store
        .with(|t| match t.get_mut(&key).and_then(|tb| tb.remove(&name)) {
            Some(_) => (Ok(json!({"Content": a::DELETE_CONTENT})), true),
            None => (Err(ApiError::NotFound), false),
        })
        .map_err(persist_failed)?
}

/// Parsed `Filters.N.Name` / `Filters.N.Value` pairs (A14).
fn filters(p: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let mut by_index: BTreeMap<u32, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for (k, v) in p.range::<str, _>((Bound::Included("Filters."), Bound::Unbounded)) {
        let Some(rest) = k.strip_prefix("Filters.") else {
            break;
        };
        let bad = || {
            invalid(
                k.clone(),
                "Use Filters.N.Name and Filters.N.Value with N from 1.",
            )
        };
        let (n, field) = rest.split_once('.').ok_or_else(bad)?;
        let idx: u32 = n
            .parse()
            .ok()
            .filter(|i| *i >= 1 && !n.starts_with('0'))
            .ok_or_else(bad)?;
        let slot = by_index.entry(idx).or_default();
        match field {
            "Name" => slot.0 = Some(v),
            "Value" => slot.1 = Some(v),
            _ => return Err(bad()),
        }
    }
    if by_index.len() > a::MAX_FILTERS {
        return Err(invalid(
            "Filters",
            format!("At most {} filters.", a::MAX_FILTERS),
        ));
    }
    by_index
        .into_iter()
        .map(|(i, (n, v))| {
            let n = n.ok_or_else(|| invalid(format!("Filters.{i}.Name"), "It is required."))?;
            if !a::FILTER_NAMES.contains(&n) {
                return Err(invalid(
                    format!("Filters.{i}.Name"),
                    format!("Supported filter names: {}.", a::FILTER_NAMES.join(", ")),
                ));
            }
            let v = v.ok_or_else(|| invalid(format!("Filters.{i}.Value"), "It is required."))?;
            Ok((n.to_string(), v.to_string()))
        })
        .collect()
}

/// Encode a page position as an opaque token (A14).
pub fn encode_next_token(last_name: &str) -> String {
    let mut b = a::NEXT_TOKEN_MAGIC.to_vec();
    b.extend_from_slice(a::NEXT_TOKEN_VERSION.as_bytes());
    b.extend_from_slice(last_name.as_bytes());
    b64_encode(&b)
}

fn decode_next_token(token: &str) -> Result<String, ApiError> {
    let bad = || invalid("NextToken", "It was not issued by this service.");
    let b = b64_decode(token).ok_or_else(bad)?;
    let prefix_len = a::NEXT_TOKEN_MAGIC.len() + a::NEXT_TOKEN_VERSION.len();
    if b.len() < prefix_len
        || b[..3] != a::NEXT_TOKEN_MAGIC
        || &b[3..prefix_len] != a::NEXT_TOKEN_VERSION.as_bytes()
    {
        return Err(bad());
    }
    String::from_utf8(b[prefix_len..].to_vec()).map_err(|_| bad())
}

fn list(p: &Params, ctx: &Ctx<'_>, key: (String, String)) -> Result<Value, ApiError> {
    let filters = filters(p)?;
    let max = match opt(p, "MaxResults") {
        None => a::MAX_RESULTS_DEFAULT,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=a::MAX_RESULTS_MAX).contains(m))
            .ok_or_else(|| invalid("MaxResults", format!("Use 1-{}.", a::MAX_RESULTS_MAX)))?,
    };
    let after = opt(p, "NextToken").map(decode_next_token).transpose()?;
    ctx.store.read(|t| {
        let Some(table) = t.get(&key) else {
            return Ok(json!({"ChatConfigurations": []}));
        };
        let lower = match &after {
            Some(n) => Bound::Excluded(n.clone()),
            None => Bound::Unbounded,
        };
        let mut matching = table
            .range((lower, Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| {
                filters.iter().all(|(n, v)| match n.as_str() {
                    "Name" => &r.name == v,
                    _ => &r.kind == v,
                })
            });
        let page: Vec<&Record> = matching.by_ref().take(max).collect();
        let more = matching.next().is_some();
        let items: Vec<Value> = page
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("Name".into(), r.name.clone().into());
                m.insert("Type".into(), r.kind.clone().into());
                if let Some(role) = &r.ram_role {
                    m.insert("RamRole".into(), role.clone().into());
                }
                m.insert("Outputs".into(), outputs(r).into());
                m.insert("CreatedDate".into(), date(&r.created).into());
                m.insert("UpdatedDate".into(), date(&r.updated).into());
                Value::Object(m)
            })
            .collect();
        let mut body = json!({"ChatConfigurations": items});
        if more && let Some(last) = page.last() {
            body["NextToken"] = Value::String(encode_next_token(&last.name));
        }
        Ok(body)
    })
}

fn persist_failed(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "persisting emulator state failed");
    ApiError::internal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(store: &'a Store, owner: &'a str) -> Ctx<'a> {
        Ctx {
            owner,
            store,
            default_region: a::DEFAULT_REGION,
            zoneless_update_date: false,
            now: Utc::now(),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CONF: &str =
        r#"{"DingTalkClientId":"id","DingTalkClientSecret":"s3cr3t","Nested":{"OtherSecret":"x"}}"#;

    #[test]
    fn create_get_mask_and_conflict() {
        let store = Store::open(None).unwrap();
        let c = ctx(&store, "42");
        let p = params(&[("Name", "a"), ("Type", "DingTalk"), ("Configuration", CONF)]);
        execute(Action::Create, &p, &c).unwrap();
        assert_eq!(
            execute(Action::Create, &p, &c).unwrap_err(),
            ApiError::AlreadyExists
        );
        let got = execute(Action::Get, &params(&[("Name", "a")]), &c).unwrap();
        let conf = got["ChatConfiguration"]["Configuration"].as_str().unwrap();
        assert_eq!(
            conf,
            r#"{"DingTalkClientId": "id", "DingTalkClientSecret": "******", "Nested": {"OtherSecret": "******"}}"#
        );
        assert!(!serde_json::to_string(&got).unwrap().contains("s3cr3t"));
        // Another owner does not see it (A: state keyed by owner).
        let other = ctx(&store, "43");
        assert_eq!(
            execute(Action::Get, &params(&[("Name", "a")]), &other).unwrap_err(),
            ApiError::NotFound
        );
    }

    #[test]
    fn paging_tokens_and_filters() {
        let store = Store::open(None).unwrap();
        let c = ctx(&store, "1");
        for i in 0..5 {
            let t = if i % 2 == 0 { "DingTalk" } else { "WeChat" };
            let n = format!("n{i}");
            execute(
                Action::Create,
                &params(&[("Name", &n), ("Type", t), ("Configuration", "{}")]),
                &c,
            )
            .unwrap();
        }
        let page1 = execute(Action::List, &params(&[("MaxResults", "2")]), &c).unwrap();
        let token = page1["NextToken"].as_str().unwrap().to_string();
        assert!(token.starts_with("+/+/"));
        let page2 = execute(
            Action::List,
            &params(&[("MaxResults", "3"), ("NextToken", &token)]),
            &c,
        )
        .unwrap();
        let names: Vec<&str> = page2["ChatConfigurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n2", "n3", "n4"]);
        assert!(page2.get("NextToken").is_none());
        let wechat = execute(
            Action::List,
            &params(&[("Filters.1.Name", "Type"), ("Filters.1.Value", "WeChat")]),
            &c,
        )
        .unwrap();
        assert_eq!(wechat["ChatConfigurations"].as_array().unwrap().len(), 2);
        let bad = execute(
            Action::List,
            &params(&[("Filters.1.Name", "type"), ("Filters.1.Value", "x")]),
            &c,
        );
        assert_eq!(bad.unwrap_err().code(), "InvalidParameter");
        for m in ["0", "101", "x"] {
            assert!(
                execute(Action::List, &params(&[("MaxResults", m)]), &c).is_err(),
                "{m}"
            );
        }
        assert!(execute(Action::List, &params(&[("NextToken", "AAAA")]), &c).is_err());
    }
}
