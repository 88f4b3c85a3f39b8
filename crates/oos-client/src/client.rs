//! The OOS HTTP client: endpoint selection, V3 signing per attempt, error decoding, retries
//! with full-jitter backoff, the per-key throttle gate, a shared token bucket, and the five
//! chat actions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::credentials::{CredentialProvider, Credentials};
use super::error::{OosError, error_code_message, json_field};
use super::ratelimit::TokenBucket;
use super::secret::ExposeSecret;
use super::signer::{self, EMPTY_PAYLOAD_HASH, SigningRequest, percent_encode};
use super::throttle::{Outcome, ThrottleGate, ThrottlePolicy};
use super::types::*;

pub const API_VERSION: &str = "2019-06-01";
const USER_AGENT: &str = concat!(
    "oos-chat-operator/",
    env!("CARGO_PKG_VERSION"),
    " (rust; reqwest)"
);
/// Largest encoded query a Create or Update sends (what the gateway accepts is not published;
/// the emulator refuses more than 64 KiB, docs/emulator.md A16).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Stop following `NextToken` after this many pages (protects against a looping server).
const MAX_PAGES: usize = 10_000;
/// Code of the error an attempt gets when its key's throttle gate stays closed beyond the
/// call's time budget and no earlier attempt of the call has an error to report.
pub const GATE_CLOSED_CODE: &str = "Throttling.ClientGate";
/// Code of the error for a 3xx answer (redirects are never followed).
pub const REDIRECT_CODE: &str = "UnexpectedRedirect";

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://oos.<region>.aliyuncs.com`
    Public,
    /// `https://oos-vpc.<region>.aliyuncs.com`
    Vpc,
    /// Full override, e.g. `http://127.0.0.1:PORT` (the emulator); the region is then only `RegionId`.
    Url(String),
}

/// Bounded retries with exponential backoff and full jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per logical call, the first included (min 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry is started if its delay would end after this much time since the call began.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Full jitter: uniform in `[0, min(max_delay, base_delay * 2^(attempt-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_delay);
        cap.mul_f64(rand::random::<f64>())
    }
}

/// What an observer learns about each logical call (after retries).
#[derive(Debug)]
pub struct CallEvent<'a> {
    pub action: &'a str,
    pub region: &'a str,
    /// Attempts made, the first included (retries = `attempts - 1`). An attempt that failed
    /// before sending (credentials, closed gate) counts too.
    pub attempts: u32,
    pub elapsed: Duration,
    /// Total time the call spent waiting for its throttle gate to open.
    pub throttled_wait: Duration,
    /// `RequestId` of the last answer (success or error), if the service sent one.
    pub request_id: Option<&'a str>,
    /// `None` on success.
    pub error: Option<&'a OosError>,
}

/// Metrics hook, called once per logical call.
pub type CallObserver = Arc<dyn Fn(&CallEvent<'_>) + Send + Sync>;

#[derive(Clone)]
pub struct ClientConfig {
    pub endpoint: Endpoint,
    /// Per-attempt HTTP timeout.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Share one bucket across every client of the process.
    pub rate_limiter: Arc<TokenBucket>,
    /// How long a throttled (AccessKeyId, action) stays closed (see [`ThrottlePolicy`]).
    pub throttle: ThrottlePolicy,
    pub user_agent_suffix: Option<String>,
    pub observer: Option<CallObserver>,
}

impl ClientConfig {
    /// Defaults: 30 s per attempt, [`RetryPolicy::default`], 10 QPS with a burst of 20,
    /// [`ThrottlePolicy::default`] (1 s doubling up to 30 s).
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limiter: TokenBucket::new(10.0, 20),
            throttle: ThrottlePolicy::default(),
            user_agent_suffix: None,
            observer: None,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::new(Endpoint::Public)
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("rate_limiter", &self.rate_limiter)
            .field("throttle", &self.throttle)
            .field("user_agent_suffix", &self.user_agent_suffix)
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    /// Shared by every clone, `with_credentials` included.
    gate: ThrottleGate,
    override_url: Option<reqwest::Url>,
    user_agent: String,
}

/// OOS chat-configuration client. Cheap to clone.
#[derive(Clone)]
pub struct OosClient {
    inner: Arc<Inner>,
    credentials: Arc<dyn CredentialProvider>,
}

impl std::fmt::Debug for OosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OosClient")
            .field("config", &self.inner.config)
            .field("credentials", &self.credentials.kind())
            .finish()
    }
}

/// Where one attempt goes: URL without query, canonical URI, signed `host` value.
struct Target {
    base: String,
    path: String,
    host: String,
}

impl OosClient {
    pub fn new(
        config: ClientConfig,
        credentials: Arc<dyn CredentialProvider>,
    ) -> Result<Self, OosError> {
        let override_url = match &config.endpoint {
            Endpoint::Url(s) => {
                let u = reqwest::Url::parse(s)
                    .map_err(|e| OosError::Config(format!("endpoint {s:?}: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(OosError::Config(format!(
                        "endpoint {s:?} must be an http(s) URL with a host"
                    )));
                }
                if u.query().is_some() || u.fragment().is_some() {
                    return Err(OosError::Config(format!(
                        "endpoint {s:?} must not carry a query or fragment"
                    )));
                }
                Some(u)
            }
            _ => None,
        };
        // Never follow a redirect: the URL carries the signed query (secrets included) and a
        // signature is only valid for the host it was computed for.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OosError::Config(format!("HTTP client: {}", e.without_url())))?;
        let user_agent = match &config.user_agent_suffix {
            Some(s) if !s.is_empty() => format!("{USER_AGENT} {s}"),
            _ => USER_AGENT.to_owned(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                gate: ThrottleGate::new(config.throttle.clone()),
                config,
                override_url,
                user_agent,
            }),
            credentials,
        })
    }

    /// Same HTTP pool, token bucket and throttle gate, other credentials (e.g. per-resource
    /// Secret).
    pub fn with_credentials(&self, credentials: Arc<dyn CredentialProvider>) -> Self {
        Self {
            inner: self.inner.clone(),
            credentials,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn credentials_kind(&self) -> &'static str {
        self.credentials.kind()
    }

    /// [`CredentialProvider::identity`] of this client's credentials (never a secret).
    pub fn credentials_identity(&self) -> String {
        self.credentials.identity()
    }

    fn target(&self, region: &str) -> Result<Target, OosError> {
        let url = match &self.inner.override_url {
            Some(u) => u.clone(),
            None => {
                let prefix = if self.inner.config.endpoint == Endpoint::Vpc {
                    "oos-vpc"
                } else {
                    "oos"
                };
                reqwest::Url::parse(&format!("https://{prefix}.{region}.aliyuncs.com/"))
                    .map_err(|e| OosError::InvalidRequest(format!("region {region:?}: {e}")))?
            }
        };
        let host_name = url.host_str().unwrap_or_default();
        // `port()` is None for the scheme's default port, matching what goes in `Host`.
        let host = match url.port() {
            Some(p) => format!("{host_name}:{p}"),
            None => host_name.to_owned(),
        };
        let path = url.path().to_owned();
        let mut base = url;
        base.set_query(None);
        Ok(Target {
            base: base.to_string(),
            path,
            host,
        })
    }

    // ------------------------------------------------------------ actions

    /// Create. `request_id` of the stamp is the answer's `RequestId`; after a recovered
    /// ambiguous create (see docs/client.md) it is the one of the `EntityAlreadyExists` answer.
    pub async fn create_chat_configuration(
        &self,
        region: &str,
        input: &ChatConfigurationInput,
    ) -> Result<ChatConfigurationStamp, OosError> {
        let (params, scrub) = write_params(region, input)?;
        let out = self
            .call::<WireSingle>("CreateChatConfiguration", region, &params, &scrub)
            .await;
        match out.result {
            Ok(w) => stamp_or_input(w, &input.name, out.request_id).map(|mut s| {
                s.unanswered_attempts = out.ambiguous;
                s
            }),
            // A lost answer (or a 5xx, which may come after the commit) may hide our own
            // success: if the record now matches what we sent, the create did happen.
            Err(e) if out.ambiguous && e.is_already_exists() => {
                let remote = self.get_chat_configuration(region, &input.name).await?;
                if input_matches(input, &remote) {
                    tracing::info!(name = %input.name, request_id = ?e.request_id(), "create answered EntityAlreadyExists after an ambiguous attempt; record matches, treating as created");
                    Ok(ChatConfigurationStamp {
                        name: remote.name,
                        created_date: remote.created_date,
                        updated_date: remote.updated_date,
                        request_id: e.request_id().map(str::to_owned),
                        unanswered_attempts: true,
                    })
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn update_chat_configuration(
        &self,
        region: &str,
        input: &ChatConfigurationInput,
    ) -> Result<ChatConfigurationStamp, OosError> {
        let (params, scrub) = write_params(region, input)?;
        let out = self
            .call::<WireSingle>("UpdateChatConfiguration", region, &params, &scrub)
            .await;
        let mut stamp = stamp_or_input(out.result?, &input.name, out.request_id)?;
        stamp.unanswered_attempts = out.ambiguous;
        Ok(stamp)
    }

    pub async fn get_chat_configuration(
        &self,
        region: &str,
        name: &str,
    ) -> Result<ChatConfiguration, OosError> {
        let params = name_params(region, name)?;
        let out = self
            .call::<WireSingle>("GetChatConfiguration", region, &params, &[])
            .await;
        out.result?
            .chat_configuration
            .ok_or_else(|| {
                OosError::Decode("GetChatConfiguration response has no ChatConfiguration".into())
            })?
            .into_full()
    }

    /// All pages: follows `NextToken` with the same filters and `MaxResults` until it is absent.
    pub async fn list_chat_configurations(
        &self,
        region: &str,
        filters: &[Filter],
        max_results: Option<u32>,
    ) -> Result<Vec<ChatConfigurationSummary>, OosError> {
        check_region(region)?;
        let mut base = vec![("RegionId".to_owned(), region.to_owned())];
        for (i, f) in filters.iter().enumerate() {
            base.push((format!("Filters.{}.Name", i + 1), f.name.clone()));
            base.push((format!("Filters.{}.Value", i + 1), f.value.clone()));
        }
        if let Some(m) = max_results {
            base.push(("MaxResults".into(), m.to_string()));
        }
        let mut out = Vec::new();
        let mut seen_tokens = std::collections::HashSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = base.clone();
            if let Some(t) = &token {
                params.push(("NextToken".into(), t.clone()));
            }
            let page = self
                .call::<WireList>("ListChatConfigurations", region, &params, &[])
                .await
                .result?;
            for item in page.chat_configurations {
                out.push(item.into_summary()?);
            }
            match page.next_token.filter(|t| !t.is_empty()) {
                None => return Ok(out),
                Some(t) => {
                    if !seen_tokens.insert(t.clone()) {
                        return Err(OosError::Decode(
                            "ListChatConfigurations repeated a NextToken".into(),
                        ));
                    }
                    token = Some(t);
                }
            }
        }
        Err(OosError::Decode(format!(
            "ListChatConfigurations returned more than {MAX_PAGES} pages"
        )))
    }

    /// Delete. `Ok` carries the answer's `RequestId` (for logs), `None` if it had none.
    pub async fn delete_chat_configuration(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Option<String>, OosError> {
        let params = name_params(region, name)?;
        let out = self
            .call::<serde::de::IgnoredAny>("DeleteChatConfiguration", region, &params, &[])
            .await;
        out.result.map(|_| out.request_id)
    }

    // ------------------------------------------------------------ transport

    /// One logical call with retries.
    async fn call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        region: &str,
        params: &[(String, String)],
        scrub: &[String],
    ) -> CallOutput<T> {
        let started = Instant::now();
        let policy = &self.inner.config.retry;
        let deadline = started + policy.max_elapsed;
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut refreshed = false;
        let mut ambiguous = false;
        let mut throttled_wait = Duration::ZERO;
        let mut request_id = None;
        let mut last_err: Option<OosError> = None;
        let result = loop {
            attempt += 1;
            let out = self
                .attempt::<T>(action, region, params, scrub, deadline)
                .await;
            throttled_wait += out.gate_wait;
            let err = match out.result {
                Ok(v) => {
                    request_id = out.request_id;
                    break Ok(v);
                }
                // The gate stayed closed past the budget: report the error that closed it.
                Err(e) if out.gate_timeout => break Err(last_err.take().unwrap_or(e)),
                Err(e) => e,
            };
            request_id = err.request_id().map(str::to_owned);
            ambiguous |= err.is_ambiguous();
            tracing::debug!(action, region, attempt, error = %err, "OOS attempt failed");
            if !refreshed && err.code() == Some("InvalidSecurityToken.Expired") {
                // Temporary credentials expired early: refresh and retry once, right away.
                refreshed = true;
                self.credentials.invalidate();
                last_err = Some(err);
                continue;
            }
            if !err.is_retryable() || attempt >= max_attempts {
                break Err(err);
            }
            // A throttled key waits at its gate (which honours x-acs-retry-after); anything
            // else backs off with full jitter.
            let delay = match (&err, &out.access_key_id) {
                (e, Some(id)) if e.is_throttling() => self.inner.gate.remaining(id, action),
                _ => policy.backoff(attempt),
            };
            if started.elapsed() + delay > policy.max_elapsed {
                break Err(err);
            }
            if !err.is_throttling() {
                tokio::time::sleep(delay).await;
            }
            last_err = Some(err);
        };
        if let Some(obs) = &self.inner.config.observer {
            obs(&CallEvent {
                action,
                region,
                attempts: attempt,
                elapsed: started.elapsed(),
                throttled_wait,
                request_id: request_id.as_deref(),
                error: result.as_ref().err(),
            });
        }
        CallOutput {
            result,
            ambiguous,
            request_id,
        }
    }

    /// One signed HTTP attempt: credentials, the key's throttle gate, one token from the
    /// bucket, then a fresh date and nonce and a new signature. Nothing waits past `deadline`.
    async fn attempt<T: DeserializeOwned>(
        &self,
        action: &'static str,
        region: &str,
        params: &[(String, String)],
        scrub: &[String],
        deadline: Instant,
    ) -> AttemptOutput<T> {
        let mut out = AttemptOutput {
            result: Err(OosError::Timeout),
            request_id: None,
            gate_wait: Duration::ZERO,
            gate_timeout: false,
            access_key_id: None,
        };
        let target = match self.target(region) {
            Ok(t) => t,
            Err(e) => {
                out.result = Err(e);
                return out;
            }
        };
        let attempt_deadline = deadline.min(Instant::now() + self.inner.config.timeout);
        // Credentials (an STS exchange, maybe) never take longer than the attempt may.
        let creds =
            match tokio::time::timeout_at(attempt_deadline, self.credentials.credentials()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    out.result = Err(e);
                    return out;
                }
                Err(_) => {
                    out.result = Err(OosError::credentials_transient(
                        "timed out waiting for credentials (the call's time budget is spent)",
                    ));
                    return out;
                }
            };
        out.access_key_id = Some(creds.access_key_id.clone());
        let mut pass = match self
            .inner
            .gate
            .pass(&creds.access_key_id, action, deadline)
            .await
        {
            Ok((pass, waited)) => {
                out.gate_wait = waited;
                pass
            }
            Err(waited) => {
                out.gate_wait = waited;
                out.gate_timeout = true;
                out.result = Err(gate_closed_error(
                    self.inner.gate.remaining(&creds.access_key_id, action),
                ));
                return out;
            }
        };
        self.inner.config.rate_limiter.acquire().await;
        pass.mark_sent();
        let (result, request_id) = self
            .send::<T>(action, &target, params, scrub, &creds, deadline)
            .await;
        pass.finish(match &result {
            Ok(_) => Outcome::Success,
            Err(e) if e.is_throttling() => Outcome::Throttled(e.retry_after()),
            Err(OosError::Api { .. } | OosError::Decode(_)) => Outcome::OtherAnswer,
            Err(_) => Outcome::NoAnswer,
        });
        out.result = result;
        out.request_id = request_id;
        out
    }

    /// Sign and send; the answer's `RequestId` comes back with a success.
    async fn send<T: DeserializeOwned>(
        &self,
        action: &'static str,
        target: &Target,
        params: &[(String, String)],
        scrub: &[String],
        creds: &Credentials,
        deadline: Instant,
    ) -> (Result<T, OosError>, Option<String>) {
        let mut secrets: Vec<&str> = scrub.iter().map(String::as_str).collect();
        secrets.push(creds.access_key_secret.expose_secret());
        if let Some(t) = &creds.security_token {
            secrets.push(t.expose_secret());
        }
        let req = build_request(action, target, params, creds, &Utc::now(), &nonce());
        // The URL holds the query, secrets included: zeroized when dropped.
        let url = Zeroizing::new(format!("{}?{}", target.base, req.signature.canonical_query));
        let timeout = self
            .inner
            .config
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let mut builder = self
            .inner
            .http
            .post(url.as_str())
            .timeout(timeout)
            .header("accept", "application/json")
            .header("user-agent", &self.inner.user_agent)
            .body(Vec::new());
        for (name, value) in req.headers.iter().chain(std::iter::once(&(
            "authorization".to_owned(),
            req.signature.authorization.clone(),
        ))) {
            let Ok(mut v) = HeaderValue::from_str(value) else {
                let e = OosError::InvalidRequest(format!(
                    "header {name} has a value that cannot be sent"
                ));
                return (Err(e), None);
            };
            if name == "authorization" || name == "x-acs-security-token" {
                v.set_sensitive(true);
            }
            builder = builder.header(name.as_str(), v);
        }

        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => return (Err(transport_error(e)), None),
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        let retry_after = header("x-acs-retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let header_request_id = header("x-acs-request-id").filter(|r| !r.is_empty());
        if (300..400).contains(&status) {
            // Neither the Location nor the body (which usually repeats it) is kept.
            return (Err(redirect_error(status, header_request_id)), None);
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(transport_error(e)), None),
        };
        if (200..300).contains(&status) {
            let request_id = serde_json::from_slice::<WireRequestId>(&body)
                .ok()
                .and_then(|w| w.request_id)
                .filter(|r| !r.is_empty())
                .or(header_request_id);
            let result = serde_json::from_slice(&body)
                .map_err(|e| OosError::Decode(format!("{action} response (HTTP {status}): {e}")));
            return (result, request_id);
        }
        let mut err = api_error(status, &body, retry_after, &secrets);
        if let OosError::Api { request_id, .. } = &mut err
            && request_id.is_none()
        {
            *request_id = header_request_id;
        }
        (Err(err), None)
    }
}

/// What [`OosClient::call`] returns: the result, whether any attempt may have been executed
/// without our seeing the answer, and the `RequestId` of the successful answer.
struct CallOutput<T> {
    result: Result<T, OosError>,
    ambiguous: bool,
    request_id: Option<String>,
}

struct AttemptOutput<T> {
    result: Result<T, OosError>,
    request_id: Option<String>,
    gate_wait: Duration,
    /// The gate stayed closed until the call's deadline; nothing was sent.
    gate_timeout: bool,
    access_key_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct WireRequestId {
    #[serde(rename = "RequestId", alias = "requestId", default)]
    request_id: Option<String>,
}

fn redirect_error(status: u16, request_id: Option<String>) -> OosError {
    OosError::Api {
        status,
        code: REDIRECT_CODE.into(),
        message: format!(
            "the endpoint answered HTTP {status} (a redirect); redirects are not followed, check the endpoint"
        ),
        request_id,
        host_id: None,
        recommend: None,
        retry_after: None,
    }
}

fn gate_closed_error(remaining: Duration) -> OosError {
    OosError::Api {
        status: 429,
        code: GATE_CLOSED_CODE.into(),
        message: format!(
            "the client-side throttle gate of this AccessKeyId and action stays closed for another {} ms, beyond the call's time budget",
            remaining.as_millis()
        ),
        request_id: None,
        host_id: None,
        recommend: None,
        retry_after: Some(remaining).filter(|d| !d.is_zero()),
    }
}

/// The signed headers and signature of one attempt (pure; tests build it with fixed inputs).
/// `Debug` shows header names only (the STS token is one of the values); the header values
/// are zeroized on drop.
pub(crate) struct BuiltRequest {
    pub headers: Zeroizing<Vec<(String, String)>>,
    pub signature: signer::Signature,
}

impl std::fmt::Debug for BuiltRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("BuiltRequest")
            .field("header_names", &names)
            .field("signature", &self.signature)
            .finish()
    }
}

fn build_request(
    action: &str,
    target: &Target,
    params: &[(String, String)],
    creds: &Credentials,
    now: &chrono::DateTime<Utc>,
    nonce: &str,
) -> BuiltRequest {
    let mut headers: Zeroizing<Vec<(String, String)>> = Zeroizing::new(vec![
        ("host".into(), target.host.clone()),
        ("x-acs-action".into(), action.to_owned()),
        ("x-acs-version".into(), API_VERSION.into()),
        (
            "x-acs-date".into(),
            now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        ("x-acs-signature-nonce".into(), nonce.to_owned()),
        ("x-acs-content-sha256".into(), EMPTY_PAYLOAD_HASH.into()),
    ]);
    if let Some(t) = &creds.security_token {
        headers.push(("x-acs-security-token".into(), t.expose_secret().to_owned()));
    }
    let signature = signer::sign(
        &creds.access_key_id,
        creds.access_key_secret.expose_secret(),
        &SigningRequest {
            method: "POST",
            path: &target.path,
            query: params,
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_HASH,
        },
    );
    BuiltRequest { headers, signature }
}

fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn transport_error(e: reqwest::Error) -> OosError {
    if e.is_timeout() {
        return OosError::Timeout;
    }
    // `without_url`: the URL holds the query string, and Create/Update queries carry secrets.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    OosError::Transport(text)
}

fn api_error(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    secrets: &[&str],
) -> OosError {
    let obj = serde_json::from_slice::<serde_json::Value>(body).ok();
    let obj = obj.as_ref().and_then(|v| v.as_object());
    let (code, message) = error_code_message(body);
    let get = |names: &[&str]| obj.and_then(|o| json_field(o, names));
    OosError::Api {
        status,
        code,
        message: scrub_message(&message, secrets),
        request_id: get(&["RequestId", "requestId"]),
        host_id: get(&["HostId", "hostId"]),
        recommend: get(&["Recommend", "recommend"]),
        retry_after,
    }
}

/// Keep service messages free of secrets: drop an echoed StringToSign/CanonicalRequest (it holds
/// the whole query, secrets included), mask any known secret in raw or encoded form, cap length.
pub(crate) fn scrub_message(message: &str, secrets: &[&str]) -> String {
    let lower = message.to_ascii_lowercase();
    let cut = [
        "stringtosign",
        "canonicalrequest",
        "canonical request",
        "string to sign",
    ]
    .iter()
    .filter_map(|m| lower.find(m))
    .min();
    let mut out = match cut {
        Some(i) => format!("{} [server echo omitted]", message[..i].trim_end()),
        None => message.to_owned(),
    };
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        let encoded = percent_encode(s);
        for variant in [s.to_string(), encoded.clone(), encoded.replace("%20", "+")] {
            out = out.replace(&variant, MASKED_SECRET);
        }
    }
    if out.chars().count() > 1000 {
        out = out.chars().take(1000).collect::<String>() + "…";
    }
    out
}

fn check_region(region: &str) -> Result<(), OosError> {
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(OosError::InvalidRequest(format!(
            "invalid region {region:?}"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), OosError> {
    if name.is_empty() {
        return Err(OosError::InvalidRequest(
            "chat configuration name is empty".into(),
        ));
    }
    Ok(())
}

fn name_params(region: &str, name: &str) -> Result<Vec<(String, String)>, OosError> {
    check_region(region)?;
    check_name(name)?;
    Ok(vec![
        ("RegionId".into(), region.into()),
        ("Name".into(), name.into()),
    ])
}

type Params = Vec<(String, String)>;

/// Create/Update parameters, plus the secret values to mask in any error message (both
/// zeroized when dropped).
fn write_params(
    region: &str,
    input: &ChatConfigurationInput,
) -> Result<(Zeroizing<Params>, Zeroizing<Vec<String>>), OosError> {
    let mut params = Zeroizing::new(name_params(region, &input.name)?);
    params.push(("Type".into(), input.chat_type.as_str().to_owned()));
    if let Some(r) = &input.ram_role {
        params.push(("RamRole".into(), r.clone()));
    }
    if let Some(g) = &input.resource_group_id {
        params.push(("ResourceGroupId".into(), g.clone()));
    }
    let mut scrub = Zeroizing::new(Vec::new());
    if let Some(c) = &input.configuration {
        params.push(("Configuration".into(), c.to_json_string()));
        scrub.extend(c.secret_values());
    }
    // Too large for any gateway: terminal, not a transport error that would be retried forever.
    let size = Zeroizing::new(signer::canonical_query(&params)).len();
    if size > MAX_QUERY_BYTES {
        return Err(OosError::InvalidRequest(format!(
            "the request's parameters take {size} bytes encoded; at most {MAX_QUERY_BYTES} can be sent"
        )));
    }
    Ok((params, scrub))
}

fn stamp_or_input(
    w: WireSingle,
    name: &str,
    request_id: Option<String>,
) -> Result<ChatConfigurationStamp, OosError> {
    match w.chat_configuration {
        Some(c) => c.into_stamp(request_id),
        // Only RequestId is guaranteed; the name we sent is the key.
        None => Ok(ChatConfigurationStamp {
            name: name.to_owned(),
            created_date: None,
            updated_date: None,
            request_id,
            unanswered_attempts: false,
        }),
    }
}

fn input_matches(input: &ChatConfigurationInput, remote: &ChatConfiguration) -> bool {
    let cfg_ok = match (&input.configuration, &remote.configuration) {
        (Some(a), Some(b)) => a.matches_remote(b),
        (None, _) => true,
        (Some(_), None) => false,
    };
    input.chat_type == remote.chat_type
        && (input.ram_role.is_none() || input.ram_role == remote.ram_role)
        && (input.resource_group_id.is_none()
            || input.resource_group_id == remote.resource_group_id)
        && cfg_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::StaticCredentials;
    use chrono::TimeZone;

    fn client(endpoint: Endpoint) -> OosClient {
        OosClient::new(
            ClientConfig::new(endpoint),
            Arc::new(StaticCredentials::new("id", "sk", None)),
        )
        .unwrap()
    }

    #[test]
    fn endpoints_and_host() {
        let t = client(Endpoint::Public).target("cn-hangzhou").unwrap();
        assert_eq!(
            (t.base.as_str(), t.host.as_str(), t.path.as_str()),
            (
                "https://oos.cn-hangzhou.aliyuncs.com/",
                "oos.cn-hangzhou.aliyuncs.com",
                "/"
            )
        );
        let t = client(Endpoint::Vpc).target("cn-beijing").unwrap();
        assert_eq!(t.host, "oos-vpc.cn-beijing.aliyuncs.com");
        let t = client(Endpoint::Url("http://127.0.0.1:45449".into()))
            .target("cn-hangzhou")
            .unwrap();
        assert_eq!(
            (t.base.as_str(), t.host.as_str()),
            ("http://127.0.0.1:45449/", "127.0.0.1:45449")
        );
        // Default port is not part of the host.
        let t = client(Endpoint::Url("https://example.com:443".into()))
            .target("x")
            .unwrap();
        assert_eq!(t.host, "example.com");
        let t = client(Endpoint::Url("http://example.com:8443/gw/".into()))
            .target("x")
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("example.com:8443", "/gw/")
        );
        for bad in ["ftp://x", "not a url", "http://x/?a=b"] {
            let e = OosClient::new(
                ClientConfig::new(Endpoint::Url(bad.into())),
                Arc::new(StaticCredentials::new("i", "s", None)),
            );
            assert!(matches!(e, Err(OosError::Config(_))), "{bad}");
        }
        assert!(check_region("cn-hangzhou").is_ok());
        assert!(
            check_region("cn hangzhou").is_err()
                && check_region("").is_err()
                && check_region("a/b").is_err()
        );
    }

    /// The client's request builder reproduces the OOS-CREATE vector byte for byte.
    #[test]
    fn built_request_matches_vector() {
        let c = client(Endpoint::Public);
        let input = ChatConfigurationInput {
            name: "chatops-1".into(),
            chat_type: ChatType::DingTalk,
            ram_role: Some("OOSServiceRole".into()),
            resource_group_id: None,
            configuration: Some(ChatSettings {
                ding_talk_client_id: Some("ding abc*~/+".into()),
                ding_talk_client_secret: Some("s3cr3t".into()),
                ding_talk_template_id: Some("tpl-1.schema".into()),
                extra: Default::default(),
            }),
        };
        let (params, scrub) = write_params("cn-hangzhou", &input).unwrap();
        assert_eq!(*scrub, vec!["s3cr3t".to_string()]);
        let creds = Credentials {
            access_key_id: "testAccessKeyId".into(),
            access_key_secret: "testAccessKeySecret".into(),
            security_token: None,
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = build_request(
            "CreateChatConfiguration",
            &c.target("cn-hangzhou").unwrap(),
            &params,
            &creds,
            &now,
            "0123456789abcdef0123456789abcdef",
        );
        assert_eq!(
            b.signature.signature,
            "8a655c91999744adf295d8f7e1c3a9b5c29e3a4691cce2f3208baf34a33b717d"
        );

        let sts = Credentials {
            security_token: Some("tok+/=".into()),
            ..creds
        };
        let b = build_request(
            "GetChatConfiguration",
            &c.target("cn-hangzhou").unwrap(),
            &params,
            &sts,
            &now,
            "n",
        );
        assert!(b.signature.signed_headers.contains("x-acs-security-token"));
        assert!(
            b.signature
                .canonical_request
                .contains("x-acs-security-token:tok+/=\n")
        );
    }

    /// The built request holds the STS token header and the signed query (ClientSecret).
    #[test]
    fn built_request_debug_is_redacted() {
        let c = client(Endpoint::Public);
        let mut input = ChatConfigurationInput {
            name: "n".into(),
            chat_type: ChatType::DingTalk,
            ram_role: None,
            resource_group_id: None,
            configuration: Some(ChatSettings {
                ding_talk_client_secret: Some("TOPSECRET-CS".into()),
                ..Default::default()
            }),
        };
        input.configuration.as_mut().unwrap().extra.insert(
            "Deep".into(),
            serde_json::json!([{"AppSecret": "TOPSECRET-DEEP"}]),
        );
        let (params, scrub) = write_params("cn-hangzhou", &input).unwrap();
        assert!(scrub.iter().any(|s| s == "TOPSECRET-DEEP"));
        let creds = Credentials {
            access_key_id: "STS.id".into(),
            access_key_secret: "TOPSECRET-SK".into(),
            security_token: Some("TOPSECRET-TOK".into()),
        };
        let b = build_request(
            "CreateChatConfiguration",
            &c.target("cn-hangzhou").unwrap(),
            &params,
            &creds,
            &Utc::now(),
            "n",
        );
        assert!(b.signature.canonical_request.contains("TOPSECRET-TOK"));
        for text in [format!("{b:?}"), format!("{b:#?}")] {
            assert!(!text.contains("TOPSECRET"), "{text}");
            assert!(!text.contains(&b.signature.signature), "{text}");
            assert!(text.contains("x-acs-security-token"), "{text}");
        }
    }

    #[test]
    fn redirect_and_gate_errors() {
        let e = redirect_error(307, Some("rid".into()));
        assert_eq!(e.code(), Some(REDIRECT_CODE));
        assert!(!e.is_retryable() && !e.is_throttling() && !e.is_ambiguous());
        assert!(e.to_string().contains("307"));
        let e = gate_closed_error(Duration::from_millis(1500));
        assert!(e.is_retryable() && e.is_throttling());
        assert!(e.to_string().contains("1500 ms"));
    }

    #[test]
    fn nonces_are_32_hex_and_distinct() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, nonce());
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_elapsed: Duration::from_secs(5),
        };
        let samples: Vec<Duration> = (0..200).map(|_| p.backoff(1)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(100)));
        // Full jitter spreads over the whole range (not just around the cap).
        assert!(samples.iter().any(|d| *d < Duration::from_millis(30)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(70)));
        assert!((0..200).all(|_| p.backoff(8) <= Duration::from_millis(350)));
        assert!((0..50).all(|_| p.backoff(u32::MAX) <= Duration::from_millis(350)));
    }

    #[test]
    fn error_bodies_and_scrubbing() {
        let body = br#"{"RequestId":"R1","HostId":"oos.cn-hangzhou.aliyuncs.com","Code":"InternalError","Message":"boom","Recommend":"https://api.aliyun.com/troubleshoot?q=InternalError"}"#;
        let e = api_error(500, body, None, &[]);
        match &e {
            OosError::Api {
                code,
                message,
                request_id,
                host_id,
                recommend,
                status,
                ..
            } => {
                assert_eq!(
                    (code.as_str(), message.as_str(), *status),
                    ("InternalError", "boom", 500)
                );
                assert_eq!(request_id.as_deref(), Some("R1"));
                assert_eq!(host_id.as_deref(), Some("oos.cn-hangzhou.aliyuncs.com"));
                assert!(recommend.as_deref().unwrap().contains("troubleshoot"));
            }
            other => panic!("{other:?}"),
        }
        let lower = br#"{"requestId":"r2","code":"Throttling.User","message":"slow down"}"#;
        let e = api_error(400, lower, Some(Duration::from_millis(7)), &[]);
        assert_eq!(e.code(), Some("Throttling.User"));
        assert_eq!(e.request_id(), Some("r2"));
        assert!(e.is_retryable());
        let e = api_error(502, b"<html>bad gateway</html>", None, &[]);
        assert_eq!(e.code(), Some("Unknown"));
        assert!(e.is_retryable());

        let echoed = "Specified signature does not match our calculation. StringToSign: 'ACS3...' CanonicalRequest: POST / Configuration=%7B%22DingTalkClientSecret%22%3A%22s3cr3t%20x%22%7D";
        let s = scrub_message(echoed, &["s3cr3t x"]);
        assert!(!s.contains("s3cr3t") && !s.contains("Configuration"), "{s}");
        assert!(s.starts_with("Specified signature does not match our calculation."));
        let s = scrub_message(
            "value s3cr3t x and s3cr3t%20x and s3cr3t+x are bad",
            &["s3cr3t x"],
        );
        assert!(!s.contains("s3cr3t"), "{s}");
        assert_eq!(scrub_message("plain", &["zz"]), "plain");
    }

    #[test]
    fn oversized_writes_are_refused_before_sending() {
        let input = ChatConfigurationInput {
            name: "n".into(),
            chat_type: ChatType::DingTalk,
            ram_role: None,
            resource_group_id: None,
            configuration: Some(ChatSettings {
                ding_talk_client_secret: Some("x".repeat(70_000).into()),
                ..Default::default()
            }),
        };
        let err = write_params("cn-hangzhou", &input).unwrap_err();
        assert!(matches!(err, OosError::InvalidRequest(_)), "{err}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("xxxx"), "no value in the message");
    }

    #[test]
    fn create_recovery_matching() {
        let input = ChatConfigurationInput {
            name: "n".into(),
            chat_type: ChatType::DingTalk,
            ram_role: Some("R".into()),
            resource_group_id: None,
            configuration: Some(ChatSettings {
                ding_talk_client_secret: Some("real".into()),
                ..Default::default()
            }),
        };
        let mut remote = ChatConfiguration {
            name: "n".into(),
            chat_type: ChatType::DingTalk,
            ram_role: Some("R".into()),
            resource_group_id: Some("rg".into()),
            configuration: Some(ChatSettings {
                ding_talk_client_secret: Some(MASKED_SECRET.into()),
                ..Default::default()
            }),
            outputs: None,
            created_date: None,
            updated_date: None,
        };
        assert!(input_matches(&input, &remote));
        remote.ram_role = Some("Other".into());
        assert!(!input_matches(&input, &remote));
    }
}
