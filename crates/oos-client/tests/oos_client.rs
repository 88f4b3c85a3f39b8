//! The OOS client against a local, signature-verifying test server (127.0.0.1 only).
//!
//! The server verifies ACS3-HMAC-SHA256 with its own straightforward code below (form-decoding
//! the wire query, RFC 3986 re-encoding, canonical headers from `SignedHeaders`), not with the
//! crate's signer, and also serves a stub STS `AssumeRoleWithOIDC` on `GET /`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Handle the request normally (it commits), then answer with this error instead.
    ErrorAfterCommit { status: u16, code: &'static str },
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
    /// Every request received, before any check (what a redirect target would see).
    hits: AtomicUsize,
    /// Answer everything with a 302 to this base URL (plus the original path and query).
    redirect_to: Mutex<Option<String>>,
    /// STS: wait this long before answering.
    sts_delay: Mutex<Duration>,
    /// STS: answer 503 ServiceUnavailable.
    sts_down: AtomicBool,
    /// STS: lifetime of the issued credentials (default 1 h).
    sts_lifetime: Mutex<Option<Duration>>,
    /// Answer every Create signed with this AccessKeyId with `Throttling.User` until then.
    throttle_creates: Mutex<Option<(String, Instant)>>,
    /// Serial for RequestIds.
    request_serial: AtomicUsize,
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
    s.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(target) = s.redirect_to.lock().unwrap().clone() {
        let location = format!("{target}{uri}");
        let mut resp = (
            StatusCode::FOUND,
            format!("<html><a href=\"{location}\">moved</a></html>"),
        )
            .into_response();
        resp.headers_mut()
            .insert("location", location.parse().unwrap());
        return resp;
    }
    if method == Method::GET {
        let delay = *s.sts_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
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
        access_key_id: ak.clone(),
        params: params.clone(),
    });
    let throttled = matches!(
        &*s.throttle_creates.lock().unwrap(),
        Some((key, until)) if *key == ak && action == "CreateChatConfiguration" && Instant::now() < *until
    );
    if throttled {
        return err_response(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
            None,
        );
    }
    let fault = s.faults.lock().unwrap().pop_front();
    let mut slow = None;
    let mut after_commit = None;
    match fault {
        Some(Fault::Error {
            status,
            code,
            message,
            retry_after_ms,
        }) => return err_response(status, code, &message, retry_after_ms),
        Some(Fault::Slow(d)) => slow = Some(d),
        Some(Fault::ErrorAfterCommit { status, code }) => after_commit = Some((status, code)),
        None => {}
    }
    let resp = act(&s, &action, &params);
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    if let Some((status, code)) = after_commit {
        return err_response(status, code, "failed after the write", None);
    }
    resp
}

fn act(s: &ServerState, action: &str, p: &BTreeMap<String, String>) -> Response {
    let rid = format!("RID-{}", s.request_serial.fetch_add(1, Ordering::SeqCst));
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
            let body = serde_json::json!({"RequestId": rid, "ChatConfiguration": {"Name": name, "CreatedDate": rec.created, "UpdatedDate": rec.updated}});
            records.insert(name, rec);
            ok_json(body)
        }
        "GetChatConfiguration" => match records.get(&name) {
            None => not_found(),
            Some(r) => ok_json(serde_json::json!({"RequestId": rid, "ChatConfiguration": {
                "Name": name, "Type": r.chat_type, "RamRole": r.ram_role, "ResourceGroupId": r.rg,
                "Configuration": r.configuration.as_deref().map(masked_config),
                "Outputs": outputs_for(&name, &r.chat_type),
                "CreatedDate": r.created, "UpdatedDate": r.updated}})),
        },
        "DeleteChatConfiguration" => match records.remove(&name) {
            None => not_found(),
            Some(_) => ok_json(
                serde_json::json!({"RequestId": rid, "Content": "Chat configuration deleted successfully."}),
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
            let mut body = serde_json::json!({"RequestId": rid, "ChatConfigurations": page});
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
    if s.sts_down.load(Ordering::SeqCst) {
        return err_response(503, "ServiceUnavailable", "STS is down", None);
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
    let lifetime = s
        .sts_lifetime
        .lock()
        .unwrap()
        .unwrap_or(Duration::from_secs(3600));
    let exp = (chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    ok_json(serde_json::json!({"RequestId": "S", "Credentials": {
        "AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": sec_token, "Expiration": exp}}))
}

// ------------------------------------------------------------------ helpers

/// (action, attempts, error code) per logical call, as reported to the observer.
type CallRecord = (String, u32, Option<String>);

/// Everything else the observer reported for one call.
#[derive(Clone, Debug)]
struct CallExtra {
    throttled_wait: Duration,
    request_id: Option<String>,
}

#[derive(Default, Clone)]
struct Calls(Arc<Mutex<Vec<(CallRecord, CallExtra)>>>);

impl Calls {
    fn observer(&self) -> CallObserver {
        let me = self.0.clone();
        Arc::new(move |e: &CallEvent<'_>| {
            me.lock().unwrap().push((
                (
                    e.action.to_string(),
                    e.attempts,
                    e.error.and_then(|e| e.code()).map(String::from),
                ),
                CallExtra {
                    throttled_wait: e.throttled_wait,
                    request_id: e.request_id.map(String::from),
                },
            ));
        })
    }
    fn last(&self) -> CallRecord {
        self.0.lock().unwrap().last().cloned().unwrap().0
    }
    fn last_extra(&self) -> CallExtra {
        self.0.lock().unwrap().last().cloned().unwrap().1
    }
    fn all(&self) -> Vec<(CallRecord, CallExtra)> {
        self.0.lock().unwrap().clone()
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
    // Small gate closures, so throttling tests without x-acs-retry-after stay fast.
    c.throttle = ThrottlePolicy {
        base: Duration::from_millis(2),
        max: Duration::from_millis(10),
    };
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
    // The STS key changed; the identity (the role) did not.
    assert_eq!(
        c.credentials_identity(),
        "role:acs:ram::1234567890123456:role/pod-role"
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

// ------------------------------------------------------------------ adversity

fn oidc_provider(sts_url: &str, token_file: &std::path::Path) -> OidcCredentials {
    OidcCredentials::new(OidcConfig {
        role_arn: "acs:ram::1234567890123456:role/pod-role".into(),
        oidc_provider_arn: "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c123".into(),
        token_file: token_file.to_path_buf(),
        role_session_name: "test-session".into(),
        sts_endpoint: sts_url.to_string(),
        duration_seconds: 3600,
        policy: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn token_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("token");
    std::fs::write(&p, "eyJ-oidc-TOKEN-secret\n").unwrap();
    p
}

/// A 302 (whose Location and body repeat the signed query, secrets included) is never
/// followed, by the OOS client or by the STS exchange, and the error names the status only.
#[tokio::test]
async fn redirects_are_not_followed_and_leak_nothing() {
    let target = TestServer::start().await;
    let redirector = TestServer::start().await;
    *redirector.state.redirect_to.lock().unwrap() = Some(target.url.clone());
    let target_port = target.url.rsplit(':').next().unwrap().to_string();

    let calls = Calls::default();
    let c = OosClient::new(config(&redirector.url, &calls), static_creds()).unwrap();
    let e = c
        .create_chat_configuration(REGION, &ding_input("r"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(REDIRECT_CODE));
    assert!(matches!(e, OosError::Api { status: 302, .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(calls.last().1, 1);
    assert_eq!(redirector.state.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target.state.hits.load(Ordering::SeqCst),
        0,
        "redirect followed"
    );
    let text = format!("{e} {e:?}");
    assert!(text.contains("302"), "{text}");
    for leak in [
        DING_SECRET,
        &rfc3986(DING_SECRET),
        "Configuration",
        &target_port,
        "http://",
        SK,
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked in {text}");
    }

    // STS behind a redirect: the OIDC token (in the query) goes nowhere else.
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(oidc_provider(&redirector.url, &token_file(&dir)));
    let c = OosClient::new(config(&target.url, &calls), provider.clone()).unwrap();
    let e = c.get_chat_configuration(REGION, "r").await.unwrap_err();
    assert!(matches!(e, OosError::Credentials(_)), "{e:?}");
    assert!(!e.is_retryable(), "a redirect is terminal: {e:?}");
    assert_eq!(
        target.state.hits.load(Ordering::SeqCst),
        0,
        "redirect followed"
    );
    assert_eq!(provider.exchange_count(), 1);
    let text = format!("{e} {e:?}");
    assert!(text.contains("302"), "{text}");
    for leak in ["eyJ", "TOKEN", &target_port, "http://", "OIDCToken"] {
        assert!(!text.contains(leak), "{leak:?} leaked in {text}");
    }
}

/// Concurrent callers share one exchange, also when it is slow and fails (they used to run
/// one exchange each, one after another).
#[tokio::test]
async fn oidc_concurrent_callers_share_one_exchange() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir);
    *srv.state.sts_delay.lock().unwrap() = Duration::from_millis(400);
    let calls = Calls::default();
    let mut cfg = config(&srv.url, &calls);
    cfg.retry = RetryPolicy::none();

    // Slow and failing: one exchange, every caller gets its error at about the same time.
    srv.state.sts_down.store(true, Ordering::SeqCst);
    let provider = Arc::new(oidc_provider(&srv.url, &file));
    let c = OosClient::new(cfg.clone(), provider.clone()).unwrap();
    let started = Instant::now();
    let results = futures::future::join_all((0..12).map(|_| {
        let c = c.clone();
        async move { c.get_chat_configuration(REGION, "x").await }
    }))
    .await;
    let elapsed = started.elapsed();
    assert_eq!(provider.exchange_count(), 1);
    assert_eq!(srv.state.sts_params.lock().unwrap().len(), 1);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, OosError::Credentials(_)) && e.is_retryable(),
            "{e:?}"
        );
    }
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");

    // Slow and working: one exchange for all.
    srv.state.sts_down.store(false, Ordering::SeqCst);
    let provider = Arc::new(oidc_provider(&srv.url, &file));
    let c = OosClient::new(cfg, provider.clone()).unwrap();
    let results = futures::future::join_all((0..12).map(|_| {
        let c = c.clone();
        async move { c.get_chat_configuration(REGION, "x").await }
    }))
    .await;
    for r in &results {
        assert!(r.as_ref().unwrap_err().is_not_found(), "{r:?}");
    }
    assert_eq!(provider.exchange_count(), 1);
    srv.assert_no_rejections();
}

/// STS outage: still-valid cached credentials keep serving (refresh retried with backoff, not
/// per call); once they expired, calls fail fast with a transient error; STS back → recovery.
#[tokio::test]
async fn oidc_sts_outage_uses_valid_cache_and_backs_off() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 2 s sessions: refresh after ~1 s, expiry after ~2 s.
    *srv.state.sts_lifetime.lock().unwrap() = Some(Duration::from_secs(2));
    let provider = Arc::new(
        oidc_provider(&srv.url, &token_file(&dir))
            .with_refresh_backoff(Duration::from_millis(400), Duration::from_secs(5)),
    );
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), provider.clone()).unwrap();
    c.create_chat_configuration(REGION, &ding_input("o"))
        .await
        .unwrap();
    assert_eq!(provider.exchange_count(), 1);
    let issued = Instant::now();

    tokio::time::sleep(Duration::from_millis(1150)).await;
    srv.state.sts_down.store(true, Ordering::SeqCst);
    let mut n = 0;
    while issued.elapsed() < Duration::from_millis(1750) {
        c.get_chat_configuration(REGION, "o").await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(n >= 5, "{n}");
    let refreshes = provider.exchange_count() - 1;
    // Backoff 200-400 ms, then 400-800 ms: at most 3 tries in the 600 ms window.
    assert!(
        (1..=3).contains(&refreshes) && refreshes < n,
        "{refreshes} refresh exchanges for {n} calls"
    );
    assert!(
        srv.seen("GetChatConfiguration")
            .iter()
            .all(|s| s.access_key_id == "STS.key1")
    );

    // Expired and STS still down: a transient credentials error, quickly.
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(issued.elapsed())).await;
    let before = provider.exchange_count();
    let started = Instant::now();
    let e = c.get_chat_configuration(REGION, "o").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, OosError::Credentials(_)), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(calls.last().1, 4, "the call's attempts");
    assert!(
        provider.exchange_count() - before <= 1,
        "backoff, not one exchange per attempt"
    );
    assert!(!format!("{e:?}").contains("eyJ"));

    // STS is back: the next exchange after the backoff succeeds.
    srv.state.sts_down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match c.get_chat_configuration(REGION, "o").await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_ne!(
        srv.seen("GetChatConfiguration")
            .pop()
            .unwrap()
            .access_key_id,
        "STS.key1"
    );
    srv.assert_no_rejections();
}

/// A hanging STS holds a caller no longer than its call's time budget.
#[tokio::test]
async fn oidc_exchange_waits_no_longer_than_the_call_budget() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    *srv.state.sts_delay.lock().unwrap() = Duration::from_secs(3);
    let calls = Calls::default();
    let mut cfg = config(&srv.url, &calls);
    cfg.retry.max_elapsed = Duration::from_millis(400);
    let provider = Arc::new(oidc_provider(&srv.url, &token_file(&dir)));
    let c = OosClient::new(cfg, provider.clone()).unwrap();
    let started = Instant::now();
    let e = c.get_chat_configuration(REGION, "x").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    assert!(
        matches!(e, OosError::Credentials(_)) && e.is_retryable(),
        "{e:?}"
    );
    assert_eq!(provider.exchange_count(), 1);
}

/// A non-throttling 5xx on Create may come after the write committed: the retry's
/// EntityAlreadyExists is resolved through Get, like a lost answer.
#[tokio::test]
async fn create_after_committed_5xx_is_recovered_via_get() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    srv.fault(Fault::ErrorAfterCommit {
        status: 500,
        code: "InternalError",
    });
    let st = c
        .create_chat_configuration(REGION, &ding_input("five"))
        .await
        .unwrap();
    assert_eq!(st.name, "five");
    assert!(st.request_id.is_some());
    assert_eq!(srv.seen("CreateChatConfiguration").len(), 2);
    assert_eq!(srv.seen("GetChatConfiguration").len(), 1);

    // Same with a 502 from a gateway; but a record that differs is still an error.
    let mut other = ding_input("five");
    other.ram_role = Some("AnotherRole".into());
    srv.fault(Fault::Error {
        status: 502,
        code: "BadGateway",
        message: "upstream".into(),
        retry_after_ms: None,
    });
    let e = c
        .create_chat_configuration(REGION, &other)
        .await
        .unwrap_err();
    assert!(e.is_already_exists(), "{e:?}");
    assert_eq!(srv.seen("GetChatConfiguration").len(), 2);
    srv.assert_no_rejections();
}

#[tokio::test]
async fn request_ids_are_returned_and_observed() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    let st = c
        .create_chat_configuration(REGION, &ding_input("rid"))
        .await
        .unwrap();
    let rid = st.request_id.clone().unwrap();
    assert!(rid.starts_with("RID-"), "{rid}");
    assert_eq!(calls.last_extra().request_id.as_deref(), Some(rid.as_str()));
    let up = c
        .update_chat_configuration(REGION, &ding_input("rid"))
        .await
        .unwrap();
    assert!(up.request_id.is_some() && up.request_id != st.request_id);
    let del = c.delete_chat_configuration(REGION, "rid").await.unwrap();
    assert!(del.as_deref().unwrap().starts_with("RID-"));
    assert_eq!(calls.last_extra().request_id, del);
    // Errors: the error's RequestId is the event's.
    let e = c.get_chat_configuration(REGION, "rid").await.unwrap_err();
    assert_eq!(calls.last_extra().request_id.as_deref(), e.request_id());
    assert!(e.request_id().is_some());
    assert_eq!(calls.last_extra().throttled_wait, Duration::ZERO);
}

/// A service error message that echoes nested secrets of the Configuration is scrubbed with
/// the same rule that masks printing.
#[tokio::test]
async fn nested_configuration_secrets_are_scrubbed_from_errors() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(config(&srv.url, &calls), static_creds()).unwrap();
    let mut input = ding_input("nested");
    input.configuration.as_mut().unwrap().extra.insert(
        "WeCom".into(),
        serde_json::json!({"Apps": [{"CorpSecret": "NESTED-SECRET-1"}], "Auth": {"PrivateKey": ["NESTED-SECRET-2"]}}),
    );
    srv.fault(Fault::Error {
        status: 400,
        code: "InvalidParameter",
        message: "bad value NESTED-SECRET-1 near NESTED-SECRET-2".into(),
        retry_after_ms: None,
    });
    let e = c
        .create_chat_configuration(REGION, &input)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("NESTED-SECRET"), "{text}");
    assert!(text.contains(MASKED_SECRET), "{text}");
    assert!(!format!("{input:?}").contains("NESTED-SECRET"));
}

fn throttling_config(calls: &Calls, srv: &TestServer) -> ClientConfig {
    let mut cfg = config(&srv.url, calls);
    cfg.retry = RetryPolicy {
        max_attempts: 20,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(20),
    };
    cfg.throttle = ThrottlePolicy {
        base: Duration::from_millis(100),
        max: Duration::from_millis(1600),
    };
    cfg
}

/// Every Create is throttled for 3 s. One caller: attempts grow with the logarithm of the
/// throttled time (gate closures 100 ms doubling up to 1.6 s), not with time / backoff.
#[tokio::test]
async fn throttled_create_attempts_stay_logarithmic() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(throttling_config(&calls, &srv), static_creds()).unwrap();
    let throttled_for = Duration::from_secs(3);
    *srv.state.throttle_creates.lock().unwrap() = Some((AK.into(), Instant::now() + throttled_for));
    let started = Instant::now();
    c.create_chat_configuration(REGION, &ding_input("slow"))
        .await
        .unwrap();
    assert!(started.elapsed() >= throttled_for);
    let attempts = srv.seen("CreateChatConfiguration").len();
    eprintln!("single caller: {attempts} Create attempts");
    // log2(3 s / 100 ms) ≈ 5 closures (+ jitter, + the final success).
    assert!((5..=9).contains(&attempts), "{attempts} attempts");
    let (rec, extra) = calls.all().pop().unwrap();
    assert_eq!(
        rec,
        ("CreateChatConfiguration".into(), attempts as u32, None)
    );
    assert!(
        extra.throttled_wait >= Duration::from_millis(2500),
        "{:?}",
        extra.throttled_wait
    );
    srv.assert_no_rejections();
}

/// Twenty concurrent callers during the same 3 s: one wave, then one probe per gate opening,
/// then one attempt each; not twenty times the attempts of one caller.
#[tokio::test]
async fn concurrent_throttled_callers_do_not_multiply_attempts() {
    let srv = TestServer::start().await;
    let calls = Calls::default();
    let c = OosClient::new(throttling_config(&calls, &srv), static_creds()).unwrap();
    *srv.state.throttle_creates.lock().unwrap() =
        Some((AK.into(), Instant::now() + Duration::from_secs(3)));
    const N: usize = 20;
    let results = futures::future::join_all((0..N).map(|i| {
        // Clones and `with_credentials` clones share the gate.
        let c = if i % 2 == 0 {
            c.clone()
        } else {
            c.with_credentials(static_creds())
        };
        async move {
            c.create_chat_configuration(REGION, &ding_input(&format!("many-{i}")))
                .await
        }
    }))
    .await;
    for r in &results {
        r.as_ref().unwrap();
    }
    let attempts = srv.seen("CreateChatConfiguration").len();
    eprintln!("{N} callers: {attempts} Create attempts");
    // 20 (first wave) + ~5-8 probes + 19 after the gate opened for good.
    assert!(
        attempts <= 2 * N + 10,
        "{attempts} attempts for {N} callers"
    );
    for (rec, extra) in calls.all() {
        assert!(rec.1 <= 10, "{rec:?}");
        assert!(extra.throttled_wait > Duration::ZERO, "{extra:?}");
    }
    srv.assert_no_rejections();
}

/// A closed gate holds only its (AccessKeyId, action): Get with the same key and Create with
/// another key go through at once; a clone with the same key waits.
#[tokio::test]
async fn throttle_gate_is_per_key_and_action() {
    let srv = TestServer::start().await;
    srv.state
        .keys
        .lock()
        .unwrap()
        .insert("otherKeyId".into(), ("other-secret".into(), None));
    let calls = Calls::default();
    let mut cfg = throttling_config(&calls, &srv);
    cfg.throttle = ThrottlePolicy {
        base: Duration::from_millis(1500),
        max: Duration::from_millis(1500),
    };
    let c = OosClient::new(cfg, static_creds()).unwrap();
    *srv.state.throttle_creates.lock().unwrap() =
        Some((AK.into(), Instant::now() + Duration::from_millis(200)));
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.create_chat_configuration(REGION, &ding_input("a")).await }
    });
    // Wait for the first throttled answer: the gate is now closed for 750-1500 ms.
    while srv.seen("CreateChatConfiguration").is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    assert!(
        c.get_chat_configuration(REGION, "none")
            .await
            .unwrap_err()
            .is_not_found()
    );
    let other = c.with_credentials(Arc::new(StaticCredentials::new(
        "otherKeyId",
        "other-secret",
        None,
    )));
    other
        .create_chat_configuration(REGION, &ding_input("b"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Same key and action through another clone: waits for the gate.
    c.with_credentials(static_creds())
        .create_chat_configuration(REGION, &ding_input("c"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "{:?}",
        started.elapsed()
    );
    slow.await.unwrap().unwrap();
    srv.assert_no_rejections();
}
