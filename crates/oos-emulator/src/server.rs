//! The API listener: connection wrapper (for resets), the gateway checks of section 6.11 in the
//! order of assumption A1, dispatch, fault injection, logging.

use super::actions::{self, Action, Ctx, Params};
use super::assumptions as a;
use super::codec::{parse_form, request_id};
use super::error::{ApiError, invalid};
use super::faults::Fault;
use super::redact::redact_params;
use super::sigv3;
use super::{Shared, sts};
use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use chrono::{NaiveDateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(crate) const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// Accepts TCP connections wrapped in [`FaultIo`].
pub(crate) struct FaultListener(pub TcpListener);

/// A TCP stream that can be told to fail and close with RST (SO_LINGER 0).
pub(crate) struct FaultIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Listener for FaultListener {
    type Io = FaultIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultIo, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        FaultIo {
                            stream,
                            reset: Arc::default(),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn reset_err() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "fault injection: reset")
}

impl AsyncRead for FaultIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::Acquire) {
            return Poll::Ready(Err(reset_err()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.load(Ordering::Acquire) {
            return Poll::Ready(Err(reset_err()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::Acquire) {
            return Poll::Ready(Err(reset_err()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Drop for FaultIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            // Linger 0 turns the close into a TCP RST.
            let _ = self.stream.set_zero_linger();
        }
    }
}

/// Per-connection handle given to the handler.
#[derive(Clone)]
pub(crate) struct Conn {
    reset: Arc<AtomicBool>,
}

impl Connected<IncomingStream<'_, FaultListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        Conn {
            reset: stream.io().reset.clone(),
        }
    }
}

pub(crate) fn spawn_api(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let mut rx = shared.shutdown.clone();
    let app = Router::new().fallback(api).with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(
            FaultListener(listener),
            app.into_make_service_with_connect_info::<Conn>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
    })
}

/// (AccessKeyId, nonce) pairs seen in the last `NONCE_MEMORY_SECS` (A5).
#[derive(Default)]
pub(crate) struct Nonces {
    seen: HashSet<(String, String)>,
    order: VecDeque<(i64, (String, String))>,
}

impl Nonces {
    /// Record the pair; false when it was already used.
    fn record(&mut self, key_id: &str, nonce: &str, now: i64) -> bool {
        while let Some((t, _)) = self.order.front() {
            if *t >= now - a::NONCE_MEMORY_SECS {
                break;
            }
            let (_, k) = self.order.pop_front().expect("front exists");
            self.seen.remove(&k);
        }
        let k = (key_id.to_string(), nonce.to_string());
        if self.seen.contains(&k) {
            return false;
        }
        self.seen.insert(k.clone());
        self.order.push_back((now, k));
        true
    }
}

/// One entry of `GET /requests`. Secrets are redacted from `params`.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    pub action: Option<String>,
    pub access_key_id: Option<String>,
    pub owner: Option<String>,
    pub params: BTreeMap<String, String>,
    pub status: u16,
    pub code: Option<String>,
    pub fault: Option<String>,
}

#[derive(Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
    next_seq: u64,
}

impl RequestLog {
    fn push(&mut self, mut e: LoggedRequest) {
        e.seq = self.next_seq;
        self.next_seq += 1;
        if self.entries.len() == a::REQUEST_LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// What handling produced, before it becomes a response.
struct Outcome {
    action: Option<String>,
    access_key_id: Option<String>,
    owner: Option<String>,
    params: Params,
    result: Result<serde_json::Map<String, serde_json::Value>, ApiError>,
    reset: bool,
    fault: Option<String>,
    /// Already counted in `GET /calls?by=code` (as `stall`).
    answer_counted: bool,
    product: &'static str,
}

impl Outcome {
    fn new() -> Self {
        Self {
            action: None,
            access_key_id: None,
            owner: None,
            params: Params::new(),
            result: Ok(Default::default()),
            reset: false,
            fault: None,
            answer_counted: false,
            product: "Oos",
        }
    }

    fn fail(mut self, e: ApiError) -> Self {
        self.result = Err(e);
        self
    }
}

async fn api(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The request runs to its end in its own task even when the client goes away (as on a real
    // server: a stalled Update still commits, and is logged and counted); the connection only
    // waits for the answer.
    let host = header_str(&headers, header::HOST.as_str())
        .unwrap_or("oos.aliyuncs.com")
        .to_string();
    match tokio::spawn(serve_one(sh, conn, method, uri, headers, body)).await {
        Ok(r) => r,
        Err(_) => error_response(&ApiError::internal(), &request_id(), &host, "Oos"),
    }
}

async fn serve_one(
    sh: Arc<Shared>,
    conn: Conn,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let rid = request_id();
    let latency = sh.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let out = handle(&sh, &method, &uri, &headers, body).await;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("oos.aliyuncs.com");
    let (status, code) = match &out.result {
        Ok(_) => (200, None),
        Err(e) => (e.status(), Some(e.code())),
    };
    if let Some(action) = &out.action
        && !out.answer_counted
    {
        let answer = match (&code, out.reset) {
            (_, true) => ANSWER_RESET,
            (Some(c), false) => c.as_str(),
            (None, false) => ANSWER_OK,
        };
        count_answer(&sh, action, answer);
    }
    let entry = LoggedRequest {
        seq: 0,
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        request_id: rid.clone(),
        action: out.action.clone(),
        access_key_id: out.access_key_id.clone(),
        owner: out.owner.clone(),
        params: redact_params(&out.params),
        status: if out.reset { 0 } else { status },
        code,
        fault: out.fault.clone(),
    };
    sh.log.lock().expect("log lock").push(entry);
    if out.reset {
        conn.reset.store(true, Ordering::Release);
    }
    match out.result {
        Ok(mut body) => {
            body.insert("RequestId".into(), rid.clone().into());
            json_response(200, &rid, serde_json::Value::Object(body).to_string(), None)
        }
        Err(e) => error_response(&e, &rid, host, out.product),
    }
}

fn json_response(status: u16, rid: &str, body: String, retry_after_ms: Option<u64>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-acs-request-id", v);
    }
    if let Some(ms) = retry_after_ms {
        h.insert("x-acs-retry-after", HeaderValue::from(ms));
    }
    r
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: &'a str,
    message: String,
    recommend: String,
}

/// Alibaba's JSON error body (reference 7.1).
pub(crate) fn error_response(e: &ApiError, rid: &str, host: &str, product: &str) -> Response {
    let code = e.code();
    let body = ErrorBody {
        request_id: rid,
        host_id: host,
        code: &code,
        message: e.to_string().trim_end().to_string(),
        recommend: format!(
            "https://api.aliyun.com/troubleshoot?q={code}&product={product}&requestId={rid}"
        ),
    };
    let text = serde_json::to_string(&body).expect("error body serialises");
    json_response(e.status(), rid, text, e.retry_after_ms())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Answer keys of `GET /calls?by=code` besides error codes (A19).
pub(crate) const ANSWER_OK: &str = "OK";
pub(crate) const ANSWER_RESET: &str = "reset";
pub(crate) const ANSWER_STALL: &str = "stall";

fn count_answer(sh: &Shared, action: &str, answer: &str) {
    *sh.answers
        .lock()
        .expect("answers lock")
        .entry(action.to_string())
        .or_default()
        .entry(answer.to_string())
        .or_insert(0) += 1;
}

fn count(sh: &Shared, action: &str) {
    *sh.calls
        .lock()
        .expect("calls lock")
        .entry(action.to_string())
        .or_insert(0) += 1;
}

/// Decoded pairs as parameters; invalid UTF-8 or a repeated name is `InvalidParameter`.
fn to_params(pairs: Vec<(Vec<u8>, Vec<u8>)>, into: &mut Params) -> Result<(), ApiError> {
    for (k, v) in pairs {
        let k = String::from_utf8(k).map_err(|_| invalid("QueryString", "It is not UTF-8."))?;
        let v = String::from_utf8(v).map_err(|_| invalid(k.clone(), "It is not UTF-8."))?;
        if into.contains_key(&k) {
            return Err(invalid(k, "It is repeated."));
        }
        into.insert(k, v);
    }
    Ok(())
}

/// Lossy decode for the log when strict decoding failed.
fn lossy_params(pairs: &[(Vec<u8>, Vec<u8>)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

async fn stall(sh: &Shared, d: Duration) {
    let mut rx = sh.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rx.wait_for(|s| *s) => {}
    }
}

/// Apply a fault that fired; `true` means the request ends here. `after_commit` only labels the
/// log entry (`reset after_commit`).
async fn apply_fault(sh: &Shared, f: Option<Fault>, after_commit: bool, out: &mut Outcome) -> bool {
    let phase = if after_commit { " after_commit" } else { "" };
    match f {
        None => false,
        Some(Fault::Stall(d)) => {
            out.fault = Some(format!("stall {}ms{phase}", d.as_millis()));
            // A stalled request counts as `stall` now, whatever it answers later: its client may
            // well have given up by then.
            if let Some(action) = &out.action {
                count_answer(sh, action, ANSWER_STALL);
                out.answer_counted = true;
            }
            stall(sh, d).await;
            false
        }
        Some(Fault::Reset) => {
            out.fault = Some(format!("reset{phase}"));
            out.reset = true;
            true
        }
        Some(Fault::Error(e)) => {
            out.fault = Some(format!("error {}{phase}", e.code()));
            out.result = Err(e);
            true
        }
    }
}

async fn handle(
    sh: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Outcome {
    let mut out = Outcome::new();
    let raw_query = uri.query().unwrap_or("");
    let pairs = parse_form(raw_query);
    out.params = lossy_params(&pairs);
    let x_action = header_str(headers, "x-acs-action");
    let sts_action = x_action.is_none()
        && pairs
            .iter()
            .any(|(k, v)| k == b"Action" && v == sts::ACTION.as_bytes());
    let action_name = if sts_action {
        Some(sts::ACTION)
    } else {
        x_action
    };
    if let Some(n) = action_name
        && (sts_action || Action::parse(n).is_some())
    {
        count(sh, n);
        out.action = Some(n.to_string());
    }
    if raw_query.len() > a::MAX_QUERY_BYTES {
        return out.fail(invalid(
            "QueryString",
            format!("It is longer than {} bytes.", a::MAX_QUERY_BYTES),
        ));
    }
    let body = match axum::body::to_bytes(body, a::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return out.fail(invalid(
                "Body",
                format!("It is longer than {} bytes.", a::MAX_BODY_BYTES),
            ));
        }
    };
    if !(method == Method::POST || method == Method::GET) || uri.path() != "/" {
        return out.fail(ApiError::InvalidApi);
    }
    let is_form = header_str(headers, "content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let form_pairs = if is_form {
        parse_form(&String::from_utf8_lossy(&body))
    } else {
        Vec::new()
    };
    out.params.extend(lossy_params(&form_pairs));

    if sts_action {
        out.product = "Sts";
        let mut params = Params::new();
        if let Err(e) =
            to_params(pairs, &mut params).and_then(|_| to_params(form_pairs, &mut params))
        {
            return out.fail(e);
        }
        out.params = params;
        if apply_fault(sh, sh.faults.pick(sts::ACTION, false), false, &mut out).await {
            return out;
        }
        out.result = sts::assume_role_with_oidc(sh, &out.params, Utc::now());
        if out.result.is_ok() {
            apply_fault(sh, sh.faults.pick(sts::ACTION, true), true, &mut out).await;
        }
        return out;
    }

    // Gateway checks, in the order of A1.
    let now = Utc::now();
    let auth = match sigv3::parse_authorization(header_str(headers, "authorization")) {
        Ok(a) => a,
        Err(e) => return out.fail(e),
    };
    out.access_key_id = Some(auth.credential.clone());
    if let Err(e) = sigv3::check_signed_header_policy(&auth, headers) {
        return out.fail(e);
    }
    for required in [
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        if header_str(headers, required).is_none_or(str::is_empty) {
            return out.fail(ApiError::IncompleteSignature(format!(
                "The header {required} is required."
            )));
        }
    }
    let payload_hash = header_str(headers, "x-acs-content-sha256").unwrap_or_default();
    if payload_hash != sigv3::sha256_hex(&body) {
        return out.fail(ApiError::PayloadHashMismatch);
    }
    let key = sh
        .keys
        .read()
        .expect("keys lock")
        .get(&auth.credential)
        .cloned();
    let Some(key) = key else {
        return out.fail(ApiError::AccessKeyNotFound);
    };
    let canonical = sigv3::canonical_request(
        method.as_str(),
        uri.path(),
        raw_query,
        &auth,
        headers,
        payload_hash,
    );
    if !sigv3::signatures_match(
        &auth.signature,
        &sigv3::expected_signature(&key.secret, &canonical),
    ) {
        return out.fail(ApiError::SignatureDoesNotMatch);
    }
    let token = header_str(headers, "x-acs-security-token");
    match (&key.token, token) {
        (Some(_), None) => return out.fail(ApiError::MissingSecurityToken),
        (Some(want), Some(got)) if !bool::from(want.as_bytes().ct_eq(got.as_bytes())) => {
            return out.fail(ApiError::SecurityTokenMismatch);
        }
        (None, Some(_)) => return out.fail(ApiError::SecurityTokenMismatch),
        _ => {}
    }
    if header_str(headers, "x-acs-accesskey-id").is_some_and(|id| id != auth.credential) {
        return out.fail(ApiError::SecurityTokenMismatch);
    }
    if key.expires.is_some_and(|e| e <= now) {
        return out.fail(ApiError::SecurityTokenExpired);
    }
    let date = header_str(headers, "x-acs-date").unwrap_or_default();
    let Ok(date) = NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ") else {
        return out.fail(ApiError::TimeStampFormat);
    };
    if let Some(window) = sh.date_window
        && (now.timestamp() - date.and_utc().timestamp()).abs() > window
    {
        return out.fail(ApiError::TimeStampExpired);
    }
    let nonce = header_str(headers, "x-acs-signature-nonce").unwrap_or_default();
    if !sh
        .nonces
        .lock()
        .expect("nonce lock")
        .record(&auth.credential, nonce, now.timestamp())
    {
        return out.fail(ApiError::SignatureNonceUsed);
    }
    out.owner = Some(key.owner.clone());
    let version_ok = header_str(headers, "x-acs-version") == Some(a::API_VERSION);
    let Some(action) = x_action.and_then(Action::parse).filter(|_| version_ok) else {
        return out.fail(ApiError::InvalidApi);
    };
    if let Err(e) = sh.faults.admit(&key.owner, now.timestamp() as u64) {
        out.fault = Some("qps_limit".into());
        return out.fail(e);
    }
    if apply_fault(sh, sh.faults.pick(action.name(), false), false, &mut out).await {
        return out;
    }
    let mut params = Params::new();
    if let Err(e) = to_params(pairs, &mut params).and_then(|_| to_params(form_pairs, &mut params)) {
        return out.fail(e);
    }
    out.params = params;
    let run = move |sh: &Shared, params: &Params| {
        let ctx = Ctx {
            owner: &key.owner,
            store: &sh.store,
            default_region: &sh.default_region,
            zoneless_update_date: sh.zoneless_update_date,
            now: Utc::now(),
        };
        actions::execute(action, params, &ctx)
    };
    out.result = if sh.store.has_file() && action != Action::Get && action != Action::List {
        // Writes fsync the state file: keep that off the async workers.
        let (sh2, params) = (sh.clone(), out.params.clone());
        tokio::task::spawn_blocking(move || run(&sh2, &params))
            .await
            .unwrap_or_else(|_| Err(ApiError::internal()))
    } else {
        run(sh, &out.params)
    };
    if out.result.is_ok() {
        apply_fault(sh, sh.faults.pick(action.name(), true), true, &mut out).await;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_within_memory() {
        let mut n = Nonces::default();
        assert!(n.record("k", "a", 1000));
        assert!(!n.record("k", "a", 1000 + a::NONCE_MEMORY_SECS));
        assert!(n.record("other", "a", 1000));
        // Forgotten once older than the memory.
        assert!(n.record("k", "a", 1001 + a::NONCE_MEMORY_SECS));
    }
}
