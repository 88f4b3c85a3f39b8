//! The OOS client against a local, signature-verifying test server (127.0.0.1 only).
//!
//! The server verifies ACS3-HMAC-SHA256 with its own straightforward code below (form-decoding
//! the wire query, RFC 3986 re-encoding, canonical headers from `SignedHeaders`), not with the
//! crate's signer, and also serves a stub STS `AssumeRoleWithOIDC` on `GET /`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use oos_client::secret::{ExposeSecret, SecretString};
use oos_client::*;

const AK: &str = "testAccessKeyId";
const SK: &str = "testAccessKeySecret-Do-Not-Leak";
const DING_SECRET: &str = "din g+secret/*~=中";

// ------------------------------------------------------------------ test server

#[derive(Clone, Debug)]
struct Record {
    chat_type: String,
    ram_role: Option<String>,
    rg: Option<String>,
    configuration: Option<String>,
    created: String,
    updated: String,
}

#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this error instead of handling the request.
    Error {
        status: u16,
        code: &'static str,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Handle the request normally, then wait before answering.
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Seen {
    action: String,
    at: Instant,
    nonce: String,
    signed_headers: String,
    host: String,
    access_key_id: String,
    params: BTreeMap<String, String>,
}

#[derive(Default)]
struct ServerState {
    /// AccessKeyId → (secret, required security token).
    keys: Mutex<HashMap<String, (String, Option<String>)>>,
    records: Mutex<BTreeMap<String, Record>>,
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Seen>>,
    nonces: Mutex<HashSet<(String, String)>>,
    rejected: Mutex<Vec<String>>,
    sts_tokens: Mutex<Vec<String>>,
    sts_params: Mutex<Vec<BTreeMap<String, String>>>,
}

struct TestServer {
    url: String,
    state: Arc<ServerState>,
}

impl TestServer {
    async fn start() -> Self {
        let state = Arc::new(ServerState::default());
        state
            .keys
            .lock()
            .unwrap()
            .insert(AK.into(), (SK.into(), None));
        let app = axum::Router::new()
            .route("/", axum::routing::any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    fn fault(&self, f: Fault) {
        self.state.faults.lock().unwrap().push_back(f);
    }

    fn seen(&self, action: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.action == action)
            .cloned()
            .collect()
    }

    fn assert_no_rejections(&self) {
        let r = self.state.rejected.lock().unwrap();
        assert!(r.is_empty(), "server rejected requests: {r:?}");
    }
}

fn err_response(status: u16, code: &str, message: &str, retry_after_ms: Option<u64>) -> Response {
    let body = serde_json::json!({
        "RequestId": "5E3F0C2A-0000-4000-8000-000000000001",
        "HostId": "oos.cn-hangzhou.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product=Oos"),
    });
    let mut resp = (StatusCode::from_u16(status).unwrap(), body.to_string()).into_response();
    resp.headers_mut().insert(
        "content-type",
        "application/json;charset=utf-8".parse().unwrap(),
    );
    if let Some(ms) = retry_after_ms {
        resp.headers_mut()
            .insert("x-acs-retry-after", ms.to_string().parse().unwrap());
    }
    resp
}

fn ok_json(v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(
        "content-type",
        "application/json;charset=utf-8".parse().unwrap(),
    );
    resp
}

/// Form-style decoding of a raw query: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// Independent V3 verification. Returns (AccessKeyId, nonce, SignedHeaders) or an error code.
fn verify(
    state: &ServerState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, String, String), (u16, &'static str, String)> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or((400, "IncompleteSignature", "no Authorization".into()))?;
    let rest = auth.strip_prefix("ACS3-HMAC-SHA256 ").ok_or((
        400,
        "InvalidSignatureMethod",
        auth.into(),
    ))?;
    let mut parts = HashMap::new();
    for p in rest.split(',') {
        let (k, v) = p
            .split_once('=')
            .ok_or((400, "IncompleteSignature", p.into()))?;
        parts.insert(k, v);
    }
    let (ak, signed, sig) = match (
        parts.get("Credential"),
        parts.get("SignedHeaders"),
        parts.get("Signature"),
    ) {
        (Some(a), Some(s), Some(g)) => (a.to_string(), s.to_string(), g.to_string()),
        _ => return Err((400, "IncompleteSignature", "missing part".into())),
    };
    let names: Vec<&str> = signed.split(';').collect();
    // Policy of this server: host and every received x-acs-* header must be signed.
    if !names.contains(&"host") {
        return Err((400, "IncompleteSignature", "host not signed".into()));
    }
    for h in headers.keys() {
        if h.as_str().starts_with("x-acs-") && !names.contains(&h.as_str()) {
            return Err((400, "IncompleteSignature", format!("{h} not signed")));
        }
    }
    let body_hash = hex::encode(Sha256::digest(body));
    if headers
        .get("x-acs-content-sha256")
        .and_then(|v| v.to_str().ok())
        != Some(body_hash.as_str())
    {
        return Err((400, "InvalidParameter", "payload hash".into()));
    }
    let mut q = parse_query(uri.query().unwrap_or(""));
    q.sort();
    let cq = q
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut ch = String::new();
    for n in &names {
        let mut vals: Vec<String> = headers
            .get_all(*n)
            .iter()
            .map(|v| v.to_str().unwrap().trim().to_string())
            .collect();
        vals.sort();
        ch.push_str(&format!("{n}:{}\n", vals.join(",")));
    }
    let creq = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.as_str(),
        uri.path(),
        cq,
        ch,
        signed,
        body_hash
    );
    let sts = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(Sha256::digest(creq.as_bytes()))
    );
    let (secret, token) = state.keys.lock().unwrap().get(&ak).cloned().ok_or((
        404,
        "InvalidAccessKeyId.NotFound",
        ak.clone(),
    ))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    if hex::encode(mac.finalize().into_bytes()) != sig {
        return Err((
            400,
            "SignatureDoesNotMatch",
            "Specified signature does not match our calculation.".into(),
        ));
    }
    if let Some(t) = token {
        let got = headers
            .get("x-acs-security-token")
            .and_then(|v| v.to_str().ok());
        if got != Some(t.as_str()) {
            return Err((
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "token".into(),
            ));
        }
    }
    let date = headers
        .get("x-acs-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let d = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|_| (400, "InvalidTimeStamp.Format", date.to_string()))?;
    if (chrono::Utc::now().naive_utc() - d).num_seconds().abs() > 15 * 60 {
        return Err((400, "InvalidTimeStamp.Expired", date.into()));
    }
    let nonce = headers
        .get("x-acs-signature-nonce")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !state
        .nonces
        .lock()
        .unwrap()
        .insert((ak.clone(), nonce.clone()))
    {
        return Err((
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.".into(),
        ));
    }
    Ok((ak, nonce, signed))
}

fn masked_config(raw: &str) -> String {
    // Alibaba style: ", " and ": " separators, secret masked.
    let v: BTreeMap<String, serde_json::Value> = serde_json::from_str(raw).unwrap();
    let items: Vec<String> = v
        .iter()
        .map(|(k, v)| {
            let v = if k == "DingTalkClientSecret" {
                serde_json::json!("******")
            } else {
                v.clone()
            };
            format!("{}: {}", serde_json::json!(k), v)
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn outputs_for(name: &str, t: &str) -> String {
    if t == "WeChat" {
        format!(
            r#"{{"URL": "https://1.appflow.aliyunnest.com/webhook/{name}", "AesKey": "AESKEY-{name}-SECRET"}}"#
        )
    } else {
        format!(r#"{{"URL": "https://1.appflow.aliyunnest.com/webhook/{name}"}}"#)
    }
}

async fn handle(
    State(s): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET {
        return sts(&s, &uri);
    }
    let (ak, nonce, signed) = match verify(&s, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err((status, code, msg)) => {
            s.rejected.lock().unwrap().push(format!("{code}: {msg}"));
            return err_response(status, code, &msg, None);
        }
    };
    let action = headers
        .get("x-acs-action")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let params: BTreeMap<String, String> =
        parse_query(uri.query().unwrap_or("")).into_iter().collect();
    s.seen.lock().unwrap().push(Seen {
        action: action.clone(),
        at: Instant::now(),
        nonce,
        signed_headers: signed,
        host: headers.get("host").unwrap().to_str().unwrap().into(),
        access_key_id: ak,
        params: params.clone(),
    });
    let fault = s.faults.lock().unwrap().pop_front();
    let mut slow = None;
    match fault {
        Some(Fault::Error {
            status,
            code,
            message,
            retry_after_ms,
        }) => return err_response(status, code, &message, retry_after_ms),
        Some(Fault::Slow(d)) => slow = Some(d),
        None => {}
    }
    let resp = act(&s, &action, &params);
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    resp
}

fn act(s: &ServerState, action: &str, p: &BTreeMap<String, String>) -> Response {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    let name = p.get("Name").cloned().unwrap_or_default();
    let mut records = s.records.lock().unwrap();
    let not_found = || {
        err_response(
            404,
            "EntityNotExists.ChatConfiguration",
            "The specified chat configuration does not exist.",
            None,
        )
    };
    match action {
        "CreateChatConfiguration" | "UpdateChatConfiguration" => {
            let existing = records.get(&name).cloned();
            let create = action.starts_with("Create");
            match (&existing, create) {
                (Some(_), true) => {
                    return err_response(
                        409,
                        "EntityAlreadyExists.ChatConfiguration",
                        "The specified chat configuration already exists.",
                        None,
                    );
                }
                (None, false) => return not_found(),
                _ => {}
            }
            let rec = Record {
                chat_type: p.get("Type").cloned().unwrap_or_default(),
                ram_role: p.get("RamRole").cloned(),
                rg: p.get("ResourceGroupId").cloned(),
                configuration: p.get("Configuration").cloned(),
                created: existing.map(|e| e.created).unwrap_or_else(|| now.clone()),
                // The Update example's zone-less microsecond form.
                updated: if create {
                    now.clone()
                } else {
                    chrono::Utc::now()
                        .format("%Y-%m-%dT%H:%M:%S%.6f")
                        .to_string()
                },
            };
            let body = serde_json::json!({"RequestId": "R", "ChatConfiguration": {"Name": name, "CreatedDate": rec.created, "UpdatedDate": rec.updated}});
            records.insert(name, rec);
            ok_json(body)
        }
        "GetChatConfiguration" => match records.get(&name) {
            None => not_found(),
            Some(r) => ok_json(serde_json::json!({"RequestId": "R", "ChatConfiguration": {
                "Name": name, "Type": r.chat_type, "RamRole": r.ram_role, "ResourceGroupId": r.rg,
                "Configuration": r.configuration.as_deref().map(masked_config),
                "Outputs": outputs_for(&name, &r.chat_type),
                "CreatedDate": r.created, "UpdatedDate": r.updated}})),
        },
        "DeleteChatConfiguration" => match records.remove(&name) {
            None => not_found(),
            Some(_) => ok_json(
                serde_json::json!({"RequestId": "R", "Content": "Chat configuration deleted successfully."}),
            ),
        },
        "ListChatConfigurations" => {
            // Group Filters.N.Name / Filters.N.Value by N.
            let mut filters: BTreeMap<u32, (String, String)> = BTreeMap::new();
            for (k, v) in p {
                let parts: Vec<&str> = k.split('.').collect();
                if parts.len() == 3 && parts[0] == "Filters" {
                    let e = filters.entry(parts[1].parse().unwrap()).or_default();
                    if parts[2] == "Name" {
                        e.0 = v.clone()
                    } else {
                        e.1 = v.clone()
                    }
                }
            }
            let matching: Vec<(&String, &Record)> = records
                .iter()
                .filter(|(n, r)| {
                    filters.values().all(|(f, v)| match f.as_str() {
                        "Type" => &r.chat_type == v,
                        "Name" => n.contains(v.as_str()),
                        _ => true,
                    })
                })
                .collect();
            let size: usize = p
                .get("MaxResults")
                .map(|m| m.parse().unwrap())
                .unwrap_or(100);
            let start: usize = p
                .get("NextToken")
                .map(|t| t.trim_start_matches("tok=").parse().unwrap())
                .unwrap_or(0);
            let page: Vec<serde_json::Value> = matching
                .iter()
                .skip(start)
                .take(size)
                .map(|(n, r)| serde_json::json!({"Name": n, "Type": r.chat_type, "RamRole": r.ram_role,
                    "Outputs": outputs_for(n, &r.chat_type), "CreatedDate": r.created, "UpdatedDate": r.updated}))
                .collect();
            let mut body = serde_json::json!({"RequestId": "R", "ChatConfigurations": page});
            if start + size < matching.len() {
                // Contains '=' on purpose (encoding edge case).
                body["NextToken"] = serde_json::json!(format!("tok={}", start + size));
            }
            ok_json(body)
        }
        _ => err_response(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
            None,
        ),
    }
}

/// Stub STS: unsigned AssumeRoleWithOIDC; issues `STS.key<n>` bound to `token-<n>`.
fn sts(s: &ServerState, uri: &Uri) -> Response {
    let p: BTreeMap<String, String> = parse_query(uri.query().unwrap_or("")).into_iter().collect();
    s.sts_params.lock().unwrap().push(p.clone());
    if p.get("Action").map(String::as_str) != Some("AssumeRoleWithOIDC")
        || p.contains_key("Signature")
    {
        return err_response(400, "InvalidParameter", "bad STS call", None);
    }
    let token = p.get("OIDCToken").cloned().unwrap_or_default();
    if token != token.trim() || token.len() < 4 {
        return err_response(400, "InvalidParameter.OIDCToken", "token not trimmed", None);
    }
    let mut toks = s.sts_tokens.lock().unwrap();
    toks.push(token);
    let n = toks.len();
    let (id, secret, sec_token) = (
        format!("STS.key{n}"),
        format!("sts-secret-{n}"),
        format!("sts+token/{n}=="),
    );
    s.keys
        .lock()
        .unwrap()
        .insert(id.clone(), (secret.clone(), Some(sec_token.clone())));
    let exp = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    ok_json(serde_json::json!({"RequestId": "S", "Credentials": {
        "AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": sec_token, "Expiration": exp}}))
}

// ------------------------------------------------------------------ helpers

/// (action, attempts, error code) per logical call, as reported to the observer.
type CallRecord = (String, u32, Option<String>);

#[derive(Default, Clone)]
struct Calls(Arc<Mutex<Vec<CallRecord>>>);

impl Calls {
    fn observer(&self) -> CallObserver {
        let me = self.0.clone();
        Arc::new(move |e: &CallEvent<'_>| {
            me.lock().unwrap().push((
                e.action.to_string(),
                e.attempts,
                e.error.and_then(|e| e.code()).map(String::from),
            ));
        })
    }
    fn last(&self) -> CallRecord {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

fn config(url: &str, calls: &Calls) -> ClientConfig {
    let mut c = ClientConfig::new(Endpoint::Url(url.to_string()));
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
    };
    c.rate_limiter = TokenBucket::unlimited();
    c.observer = Some(calls.observer());
    c
}

fn static_creds() -> Arc<dyn CredentialProvider> {
    Arc::new(StaticCredentials::new(AK, SK, None))
}

fn ding_input(name: &str) -> ChatConfigurationInput {
    ChatConfigurationInput {
        name: name.into(),
        chat_type: ChatType::DingTalk,
        ram_role: Some("OOSServiceRole".into()),
        resource_group_id: Some("rg-acfm".into()),
        configuration: Some(ChatSettings {
            ding_talk_client_id: Some("ding abc*~/+".into()),
            ding_talk_client_secret: Some(SecretString::from(DING_SECRET)),
            ding_talk_template_id: Some("tpl-1.schema".into()),
            extra: Default::default(),
        }),
    }
}

const REGION: &str = "cn-hangzhou";

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn five_actions_with_static_key() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();

    let input = ding_input("chatops-1");
    let stamp = c.create_chat_configuration(REGION, &input).await.unwrap();
    assert_eq!(stamp.name, "chatops-1");
    assert!(stamp.created_date.is_some());
    // The server decoded exactly what we meant: the Configuration JSON round-trips.
    let sent = &srv.seen("CreateChatConfiguration")[0];
    assert_eq!(
        sent.params.get("RegionId").map(String::as_str),
        Some(REGION)
    );
    assert_eq!(
        sent.params.get("ResourceGroupId").map(String::as_str),
        Some("rg-acfm")
    );
    let sent_cfg = ChatSettings::from_json_str(&sent.params["Configuration"]).unwrap();
    assert_eq!(
        sent_cfg.ding_talk_client_secret.unwrap().expose_secret(),
        DING_SECRET
    );
    // Signed: host with port, and the six headers.
    let port = srv.url.rsplit(':').next().unwrap();
    assert_eq!(sent.host, format!("127.0.0.1:{port}"));
    assert_eq!(
        sent.signed_headers,
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
    );

    let got = c.get_chat_configuration(REGION, "chatops-1").await.unwrap();
    assert_eq!(got.chat_type, ChatType::DingTalk);
    assert_eq!(got.ram_role.as_deref(), Some("OOSServiceRole"));
    assert_eq!(got.resource_group_id.as_deref(), Some("rg-acfm"));
    let cfg = got.configuration.clone().unwrap();
    assert_eq!(
        cfg.ding_talk_client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        MASKED_SECRET
    );
    assert!(input.configuration.as_ref().unwrap().matches_remote(&cfg));
    assert!(
        got.outputs
            .as_ref()
            .unwrap()
            .url
            .as_deref()
            .unwrap()
            .ends_with("/webhook/chatops-1")
    );

    let mut upd = input.clone();
    upd.ram_role = Some("AliyunOOSDefaultRole".into());
    let st = c.update_chat_configuration(REGION, &upd).await.unwrap();
    assert!(
        st.updated_date.is_some(),
        "zone-less microsecond date parsed"
    );
    assert_eq!(
        c.get_chat_configuration(REGION, "chatops-1")
            .await
            .unwrap()
            .ram_role
            .as_deref(),
        Some("AliyunOOSDefaultRole")
    );

    let mut wecom = ding_input("wecom-1");
    wecom.chat_type = ChatType::WeChat;
    c.create_chat_configuration(REGION, &wecom).await.unwrap();
    let list = c.list_chat_configurations(REGION, &[], None).await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["chatops-1", "wecom-1"]
    );
    let w = list
        .iter()
        .find(|s| s.chat_type == ChatType::WeChat)
        .unwrap();
    assert_eq!(
        w.outputs
            .as_ref()
            .unwrap()
            .aes_key
            .as_ref()
            .unwrap()
            .expose_secret(),
        "AESKEY-wecom-1-SECRET"
    );
    assert!(!format!("{list:?}").contains("AESKEY"));

    let only = c
        .list_chat_configurations(
            REGION,
            &[Filter {
                name: "Type".into(),
                value: "WeChat".into(),
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let l = srv.seen("ListChatConfigurations").pop().unwrap();
    assert_eq!(
        l.params.get("Filters.1.Name").map(String::as_str),
        Some("Type")
    );
    assert_eq!(
        l.params.get("Filters.1.Value").map(String::as_str),
        Some("WeChat")
    );

    c.delete_chat_configuration(REGION, "chatops-1")
        .await
        .unwrap();
    let e = c
        .get_chat_configuration(REGION, "chatops-1")
        .await
        .unwrap_err();
    assert!(e.is_not_found() && !e.is_retryable(), "{e:?}");
    assert_eq!(calls.last().1, 1, "not-found is not retried");
    assert!(
        c.delete_chat_configuration(REGION, "chatops-1")
            .await
            .unwrap_err()
            .is_not_found()
    );

    let e = c
        .create_chat_configuration(REGION, &wecom)
        .await
        .unwrap_err();
    assert!(e.is_already_exists());
    assert_eq!(
        calls.last(),
        (
            "CreateChatConfiguration".into(),
            1,
            Some("EntityAlreadyExists.ChatConfiguration".into())
        )
    );
    srv.assert_no_rejections();
}

#[tokio::test]
async fn sts_token_is_sent_and_signed() {
    let srv = TestServer::start().await;
    srv.state.keys.lock().unwrap().insert(
        "STS.fixed".into(),
        ("sts-fixed-secret".into(), Some("CAIS+tok/en==".into())),
    );
    let calls = Calls::default();
    let creds = Arc::new(StaticCredentials::new(
        "STS.fixed",
        "sts-fixed-secret",
        Some("CAIS+tok/en==".into()),
    ));
    let c = OosClient::new(config(&srv.url, &calls), creds).unwrap();
    c.create_chat_configuration(REGION, &ding_input("a"))
        .await
        .unwrap();
    c.get_chat_configuration(REGION, "a").await.unwrap();
    let s = srv.seen("GetChatConfiguration").pop().unwrap();
    assert_eq!(s.access_key_id, "STS.fixed");
    assert!(
        s.signed_headers
            .split(';')
            .any(|h| h == "x-acs-security-token")
    );
    srv.assert_no_rejections();

    // A wrong token is rejected by the server (the check is real) and is terminal.
    let bad = Arc::new(StaticCredentials::new(
        "STS.fixed",
        "sts-fixed-secret",
        Some("other".into()),
    ));
    let e = c
        .with_credentials(bad)
        .get_chat_configuration(REGION, "a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidSecurityToken.MismatchWithAccessKey"));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn oidc_exchange_cache_reread_and_expired_token_refresh() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ-first-token\n").unwrap();
    let provider = Arc::new(
        OidcCredentials::new(OidcConfig {
            role_arn: "acs:ram::1234567890123456:role/pod-role".into(),
            oidc_provider_arn: "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c123".into(),
            token_file: token_file.clone(),
            role_session_name: "test-session".into(),
            sts_endpoint: srv.url.clone(),
            duration_seconds: 3600,
            policy: None,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), provider.clone()).unwrap();
    c.create_chat_configuration(REGION, &ding_input("o"))
        .await
        .unwrap();
    c.get_chat_configuration(REGION, "o").await.unwrap();
    assert_eq!(
        provider.exchange_count(),
        1,
        "credentials cached between calls"
    );
    assert_eq!(
        *srv.state.sts_tokens.lock().unwrap(),
        ["eyJ-first-token"],
        "token trimmed"
    );
    let p = srv.state.sts_params.lock().unwrap()[0].clone();
    assert_eq!(p["RoleArn"], "acs:ram::1234567890123456:role/pod-role");
    assert_eq!(
        p["OIDCProviderArn"],
        "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c123"
    );
    assert_eq!(p["RoleSessionName"], "test-session");
    assert_eq!(
        (
            p["Version"].as_str(),
            p["Format"].as_str(),
            p["DurationSeconds"].as_str()
        ),
        ("2015-04-01", "JSON", "3600")
    );
    assert!(p.contains_key("Timestamp"));
    let g = srv.seen("GetChatConfiguration").pop().unwrap();
    assert_eq!(g.access_key_id, "STS.key1");
    assert!(g.signed_headers.contains("x-acs-security-token"));

    // Kubelet rotated the token; the service says the STS token expired: refresh once, retry.
    std::fs::write(&token_file, "  eyJ-second-token \n").unwrap();
    srv.fault(Fault::Error {
        status: 400,
        code: "InvalidSecurityToken.Expired",
        message: "expired".into(),
        retry_after_ms: None,
    });
    c.get_chat_configuration(REGION, "o").await.unwrap();
    assert_eq!(calls.last().1, 2);
    assert_eq!(provider.exchange_count(), 2);
    assert_eq!(
        srv.state.sts_tokens.lock().unwrap()[1],
        "eyJ-second-token",
        "file re-read"
    );
    assert_eq!(
        srv.seen("GetChatConfiguration")
            .pop()
            .unwrap()
            .access_key_id,
        "STS.key2"
    );

    // A second Expired in a row is not retried again.
    for _ in 0..2 {
        srv.fault(Fault::Error {
            status: 400,
            code: "InvalidSecurityToken.Expired",
            message: "expired".into(),
            retry_after_ms: None,
        });
    }
    let e = c.get_chat_configuration(REGION, "o").await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidSecurityToken.Expired"));
    assert_eq!(calls.last().1, 2);
    srv.assert_no_rejections();
    let dbg = format!("{provider:?} {c:?}");
    assert!(
        !dbg.contains("eyJ") && !dbg.contains("sts-secret") && !dbg.contains("sts+token"),
        "{dbg}"
    );
}

#[tokio::test]
async fn throttling_retried_with_retry_after_and_fresh_nonces() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    c.create_chat_configuration(REGION, &ding_input("t"))
        .await
        .unwrap();
    for _ in 0..2 {
        srv.fault(Fault::Error {
            status: 400,
            code: "Throttling.User",
            message: "Request was denied due to user flow control.".into(),
            retry_after_ms: Some(300),
        });
    }
    let started = Instant::now();
    c.get_chat_configuration(REGION, "t").await.unwrap();
    assert_eq!(calls.last(), ("GetChatConfiguration".into(), 3, None));
    let seen = srv.seen("GetChatConfiguration");
    assert_eq!(seen.len(), 3);
    let nonces: HashSet<_> = seen.iter().map(|s| s.nonce.clone()).collect();
    assert_eq!(nonces.len(), 3);
    // The backoff alone is ≤ 5 ms here, so these gaps come from x-acs-retry-after.
    for w in seen.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(290), "gap {gap:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    srv.assert_no_rejections();
}

#[tokio::test]
async fn terminal_errors_are_not_retried_and_never_leak_secrets() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    // A gateway that echoes its canonical request (with the query, i.e. the secret) in the message.
    let q = format!(
        "Configuration={}",
        rfc3986(&ding_input("x").configuration.unwrap().to_json_string())
    );
    srv.fault(Fault::Error {
        status: 400,
        code: "SignatureDoesNotMatch",
        message: format!("Specified signature does not match our calculation. server string to sign is:ACS3 CanonicalRequest:POST\n/\n{q} raw {DING_SECRET} key {SK}"),
        retry_after_ms: None,
    });
    let e = c
        .create_chat_configuration(REGION, &ding_input("x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("SignatureDoesNotMatch"));
    assert!(!e.is_retryable());
    assert_eq!(calls.last().1, 1);
    assert_eq!(srv.seen("CreateChatConfiguration").len(), 1);
    let texts = [e.to_string(), format!("{e:?}"), format!("{e:#?}")];
    for t in &texts {
        for secret in [DING_SECRET, SK, &rfc3986(DING_SECRET), "Configuration="] {
            assert!(!t.contains(secret), "{secret:?} leaked in {t}");
        }
    }
    assert!(e.request_id().is_some());

    srv.fault(Fault::Error {
        status: 400,
        code: "InvalidParameter",
        message: "Specified parameter Type is not valid.".into(),
        retry_after_ms: None,
    });
    let e = c.get_chat_configuration(REGION, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidParameter"));
    assert_eq!(calls.last().1, 1);

    // 5xx is retryable; with a 4-attempt budget a persistent 503 gives up after 4.
    for _ in 0..4 {
        srv.fault(Fault::Error {
            status: 503,
            code: "ServiceUnavailable",
            message: "down".into(),
            retry_after_ms: None,
        });
    }
    let e = c.get_chat_configuration(REGION, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("ServiceUnavailable"));
    assert_eq!(calls.last().1, 4);

    // A wrong secret fails verification on the real check path.
    let wrong = c.with_credentials(Arc::new(StaticCredentials::new(AK, "wrong-secret", None)));
    let e = wrong
        .list_chat_configurations(REGION, &[], None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("SignatureDoesNotMatch"));
    assert!(!e.to_string().contains("wrong-secret"));
}

#[tokio::test]
async fn next_token_pages_are_followed() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    for i in 0..5 {
        c.create_chat_configuration(REGION, &ding_input(&format!("page-{i}")))
            .await
            .unwrap();
    }
    let filters = [
        Filter {
            name: "Name".into(),
            value: "page".into(),
        },
        Filter {
            name: "Type".into(),
            value: "DingTalk".into(),
        },
    ];
    let all = c
        .list_chat_configurations(REGION, &filters, Some(2))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>()
    );
    let pages = srv.seen("ListChatConfigurations");
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].params.get("NextToken"), None);
    assert_eq!(
        pages[1].params.get("NextToken").map(String::as_str),
        Some("tok=2")
    );
    assert_eq!(
        pages[2].params.get("NextToken").map(String::as_str),
        Some("tok=4")
    );
    for p in &pages {
        assert_eq!(p.params["MaxResults"], "2");
        assert_eq!(p.params["Filters.2.Name"], "Type");
        assert_eq!(p.params["Filters.1.Value"], "page");
    }
    srv.assert_no_rejections();
}

#[tokio::test]
async fn token_bucket_limits_every_attempt() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let mut cfg = config(&srv.url, &calls);
    cfg.rate_limiter = TokenBucket::new(10.0, 2);
    let c = OosClient::new(cfg, static_creds()).unwrap();
    // A clone and a second client sharing the same bucket count against the same budget.
    let other = c.with_credentials(static_creds());
    let started = Instant::now();
    tokio::join!(
        async {
            for _ in 0..3 {
                let _ = c.get_chat_configuration(REGION, "none").await;
            }
        },
        async {
            for _ in 0..3 {
                let _ = other.get_chat_configuration(REGION, "none").await;
            }
        }
    );
    // 6 attempts, 2 from the burst, 4 at 10/s: at least ~400 ms.
    let e = started.elapsed();
    assert!(e >= Duration::from_millis(380), "{e:?}");
    assert!(e < Duration::from_secs(3), "{e:?}");

    // Retries consume tokens too: 1 call, 3 throttled attempts + 1 success = 4 tokens.
    let calls2 = Calls::default();
    let mut cfg = config(&srv.url, &calls2);
    cfg.rate_limiter = TokenBucket::new(10.0, 1);
    let c = OosClient::new(cfg, static_creds()).unwrap();
    for _ in 0..3 {
        srv.fault(Fault::Error {
            status: 400,
            code: "Throttling",
            message: "t".into(),
            retry_after_ms: None,
        });
    }
    let started = Instant::now();
    let _ = c.get_chat_configuration(REGION, "none").await;
    assert_eq!(calls2.last().1, 4);
    let e = started.elapsed();
    assert!(e >= Duration::from_millis(280), "{e:?}");
}

#[tokio::test]
async fn lost_create_response_is_recovered_via_get() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let mut cfg = config(&srv.url, &calls);
    cfg.timeout = Duration::from_millis(300);
    let c = OosClient::new(cfg, static_creds()).unwrap();
    // The server stores the record but answers too late; the retry then sees AlreadyExists.
    srv.fault(Fault::Slow(Duration::from_millis(800)));
    let st = c
        .create_chat_configuration(REGION, &ding_input("lost"))
        .await
        .unwrap();
    assert_eq!(st.name, "lost");
    assert_eq!(srv.seen("CreateChatConfiguration").len(), 2);
    assert_eq!(srv.seen("GetChatConfiguration").len(), 1);

    // A plain AlreadyExists (no lost answer before it) is reported as such.
    let e = c
        .create_chat_configuration(REGION, &ding_input("lost"))
        .await
        .unwrap_err();
    assert!(e.is_already_exists());
    assert_eq!(srv.seen("GetChatConfiguration").len(), 1);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported_without_the_query() {
    // Bind then drop: nothing listens on this loopback port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let calls = Calls::default();
    let c = OosClient::new(
        config(&format!("http://127.0.0.1:{port}"), &calls),
        static_creds(),
    )
    .unwrap();
    let e = c
        .create_chat_configuration(REGION, &ding_input("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, OosError::Transport(_)), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(calls.last().1, 4);
    let t = format!("{e} {e:?}");
    assert!(
        !t.contains("Configuration") && !t.contains("secret") && !t.contains(&port.to_string()),
        "{t}"
    );
}

#[tokio::test]
async fn debug_output_has_no_secrets() {
    let c = OosClient::new(
        ClientConfig::new(Endpoint::Public),
        Arc::new(StaticCredentials::new(
            AK,
            SK,
            Some("STS-TOKEN-VALUE".into()),
        )),
    )
    .unwrap();
    let creds = Credentials {
        access_key_id: AK.into(),
        access_key_secret: SK.into(),
        security_token: Some("STS-TOKEN-VALUE".into()),
    };
    let input = ding_input("n");
    for t in [
        format!("{c:?}"),
        format!("{creds:?}"),
        format!("{input:?}"),
        format!("{input:#?}"),
        format!("{:?}", input.configuration),
    ] {
        assert!(
            !t.contains(SK) && !t.contains("STS-TOKEN-VALUE") && !t.contains(DING_SECRET),
            "{t}"
        );
    }
}
