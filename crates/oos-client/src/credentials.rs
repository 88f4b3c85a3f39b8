//! Credential providers: static AK (+ STS token), environment, RRSA/OIDC (STS
//! AssumeRoleWithOIDC), the credentials file, and Alibaba's default chain over them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use ini::{Ini, ParseOption};
use serde::Deserialize;

use crate::secret::{ExposeSecret, SecretString, secret_eq};

use super::error::{CredentialsError, OosError, error_code_message};
use super::signer::canonical_query;
use super::types::{MASKED_SECRET, parse_remote_date};
use zeroize::Zeroizing;

/// A key pair, optionally temporary (STS token). `Debug` redacts the secret and token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    pub security_token: Option<SecretString>,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && secret_eq(
                Some(&self.access_key_secret),
                Some(&other.access_key_secret),
            )
            && secret_eq(self.security_token.as_ref(), other.security_token.as_ref())
    }
}

/// Source of credentials. Implementations cache as they see fit; the client calls
/// [`credentials`](CredentialProvider::credentials) before every attempt.
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, OosError>>;
    /// Short name of the source (`static_ak`, `env`, `oidc_role_arn`, `profile`).
    fn kind(&self) -> &'static str;
    /// Stable, non-secret identity of whose credentials these are (to key an inventory and
    /// notice a changed account): the AccessKeyId of a fixed key, `role:<RoleArn>` for
    /// OIDC/RRSA. Never a secret.
    fn identity(&self) -> String;
    /// Forget cached temporary credentials (called after `InvalidSecurityToken.Expired`).
    fn invalidate(&self) {}
}

/// Reads one configuration variable; empty values count as unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn get(lookup: EnvLookup<'_>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------- static

/// Fixed credentials, e.g. read by the controller from a Kubernetes Secret.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    credentials: Credentials,
    kind: &'static str,
}

impl StaticCredentials {
    pub fn new(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<SecretString>,
        security_token: Option<SecretString>,
    ) -> Self {
        let kind = if security_token.is_some() {
            "static_sts"
        } else {
            "static_ak"
        };
        Self {
            credentials: Credentials {
                access_key_id: access_key_id.into(),
                access_key_secret: access_key_secret.into(),
                security_token,
            },
            kind,
        }
    }

    fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }
}

impl CredentialProvider for StaticCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, OosError>> {
        let c = self.credentials.clone();
        Box::pin(async move { Ok(c) })
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
    /// The AccessKeyId.
    fn identity(&self) -> String {
        self.credentials.access_key_id.clone()
    }
}

pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
pub const ENV_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
pub const ENV_CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
pub const ENV_PROFILE: &str = "ALIBABA_CLOUD_PROFILE";

/// Static credentials from `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` (+ `ALIBABA_CLOUD_SECURITY_TOKEN`).
/// `Ok(None)` when neither is set; an error names the missing one when only one is.
pub fn env_credentials() -> Result<Option<StaticCredentials>, OosError> {
    env_credentials_from(&process_env)
}

pub fn env_credentials_from(lookup: EnvLookup<'_>) -> Result<Option<StaticCredentials>, OosError> {
    match (
        get(lookup, ENV_ACCESS_KEY_ID),
        get(lookup, ENV_ACCESS_KEY_SECRET),
    ) {
        (None, None) => Ok(None),
        (Some(id), Some(secret)) => Ok(Some(
            StaticCredentials::new(
                id,
                secret,
                get(lookup, ENV_SECURITY_TOKEN).map(SecretString::from),
            )
            .with_kind("env"),
        )),
        (Some(_), None) => Err(OosError::credentials(format!(
            "{ENV_ACCESS_KEY_ID} is set but {ENV_ACCESS_KEY_SECRET} is not"
        ))),
        (None, Some(_)) => Err(OosError::credentials(format!(
            "{ENV_ACCESS_KEY_SECRET} is set but {ENV_ACCESS_KEY_ID} is not"
        ))),
    }
}

// ---------------------------------------------------------------- OIDC / RRSA

/// Refresh this long before `Expiration` (the Python library's margin)...
const REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);

/// Settings of the STS AssumeRoleWithOIDC exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcConfig {
    pub role_arn: String,
    pub oidc_provider_arn: String,
    /// Re-read (and trimmed) at every exchange: kubelet rotates it.
    pub token_file: PathBuf,
    pub role_session_name: String,
    /// Base URL, e.g. `https://sts.aliyuncs.com` or `http://127.0.0.1:PORT`.
    pub sts_endpoint: String,
    pub duration_seconds: u32,
    /// Optional session policy (JSON).
    pub policy: Option<String>,
    /// Per-exchange HTTP timeout.
    pub timeout: Duration,
}

impl OidcConfig {
    /// From the RRSA variables; `Ok(None)` if none of the trio is set, an error naming the
    /// missing variable(s) if only some are.
    pub fn from_env() -> Result<Option<Self>, OosError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(lookup: EnvLookup<'_>) -> Result<Option<Self>, OosError> {
        let trio =
            [ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE].map(|n| (n, get(lookup, n)));
        let missing: Vec<&str> = trio
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        if missing.len() == 3 {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(OosError::credentials(format!(
                "RRSA/OIDC configuration is incomplete: missing {}",
                missing.join(", ")
            )));
        }
        let [(_, role_arn), (_, provider), (_, file)] = trio;
        let (role_arn, oidc_provider_arn, token_file) = (
            role_arn.unwrap_or_default(),
            provider.unwrap_or_default(),
            file.unwrap_or_default(),
        );
        Ok(Some(OidcConfig {
            role_arn,
            oidc_provider_arn,
            token_file: PathBuf::from(token_file),
            role_session_name: get(lookup, ENV_ROLE_SESSION_NAME)
                .unwrap_or_else(|| format!("oos-chat-operator-{}", Utc::now().timestamp())),
            sts_endpoint: sts_endpoint_from(lookup),
            duration_seconds: 3600,
            policy: None,
            timeout: Duration::from_secs(10),
        }))
    }
}

/// `ALIBABA_CLOUD_STS_ENDPOINT` (host or full URL) wins; else `sts[-vpc].<region>.aliyuncs.com`
/// from `ALIBABA_CLOUD_STS_REGION` / `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`; else `sts.aliyuncs.com`.
fn sts_endpoint_from(lookup: EnvLookup<'_>) -> String {
    if let Some(e) = get(lookup, ENV_STS_ENDPOINT) {
        return if e.contains("://") {
            e
        } else {
            format!("https://{e}")
        };
    }
    let vpc = get(lookup, ENV_VPC_ENDPOINT_ENABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match get(lookup, ENV_STS_REGION) {
        Some(r) if vpc => format!("https://sts-vpc.{r}.aliyuncs.com"),
        Some(r) => format!("https://sts.{r}.aliyuncs.com"),
        None => "https://sts.aliyuncs.com".to_owned(),
    }
}

#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    expiration: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

/// One exchange, shared by every caller that waits for it.
type SharedExchange = Shared<BoxFuture<'static, Result<Credentials, OosError>>>;

/// RRSA: exchanges the projected service-account token for STS credentials, caches them and
/// refreshes them before `Expiration`.
///
/// - Single flight: at most one exchange runs at a time; every caller that needs it awaits
///   the same one (it runs in its own task, so a caller that gives up does not cancel it).
/// - While cached credentials are past the refresh margin but before `Expiration`, callers get
///   them at once and the refresh runs in the background.
/// - After a failed exchange, the next one waits `min(max, base·2^(failures-1))` (equal
///   jitter; default 1 s doubling up to 60 s). Meanwhile callers get the still-valid cached
///   credentials, or at once the last error (transient unless STS rejected the request).
/// - How long a caller waits is the caller's business: [`OosClient`](crate::OosClient) bounds
///   it by the attempt's timeout and the call's remaining time budget. The exchange itself is
///   bounded by [`OidcConfig::timeout`].
pub struct OidcCredentials {
    shared: Arc<OidcShared>,
}

struct OidcShared {
    config: OidcConfig,
    http: reqwest::Client,
    state: Mutex<OidcState>,
    exchanges: AtomicU64,
}

struct OidcState {
    /// Backoff after failed exchanges: base and cap.
    backoff: (Duration, Duration),
    cache: Option<Cached>,
    inflight: Option<SharedExchange>,
    /// Failed exchanges in a row.
    failures: u32,
    /// No exchange starts before this (backoff after a failure).
    retry_at: Option<tokio::time::Instant>,
    last_error: Option<OosError>,
}

impl std::fmt::Debug for OidcCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("OidcCredentials")
            .field("config", &self.shared.config)
            .field("exchanges", &self.exchange_count())
            .field("expiration", &st.cache.as_ref().map(|c| c.expiration))
            .field("failures", &st.failures)
            .finish()
    }
}

#[derive(Deserialize)]
struct StsResponse {
    #[serde(rename = "Credentials")]
    credentials: Option<StsCredentials>,
}

#[derive(Deserialize)]
struct StsCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
    #[serde(rename = "AccessKeySecret")]
    access_key_secret: Option<String>,
    #[serde(rename = "SecurityToken")]
    security_token: Option<String>,
    #[serde(rename = "Expiration")]
    expiration: Option<String>,
}

impl OidcCredentials {
    pub fn new(config: OidcConfig) -> Result<Self, OosError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // The URL carries the OIDC token: never send it anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OosError::Config(format!("STS HTTP client: {}", e.without_url())))?;
        Ok(Self {
            shared: Arc::new(OidcShared {
                config,
                http,
                state: Mutex::new(OidcState {
                    backoff: (Duration::from_secs(1), Duration::from_secs(60)),
                    cache: None,
                    inflight: None,
                    failures: 0,
                    retry_at: None,
                    last_error: None,
                }),
                exchanges: AtomicU64::new(0),
            }),
        })
    }

    /// Backoff between failed exchanges (default 1 s doubling up to 60 s).
    pub fn with_refresh_backoff(self, base: Duration, max: Duration) -> Self {
        self.shared.lock().backoff = (base, max.max(base));
        self
    }

    pub fn config(&self) -> &OidcConfig {
        &self.shared.config
    }

    /// Number of STS exchanges attempted so far.
    pub fn exchange_count(&self) -> u64 {
        self.shared.exchanges.load(Ordering::Relaxed)
    }

    async fn get(&self) -> Result<Credentials, OosError> {
        let exchange = {
            let mut st = self.shared.lock();
            let now = Utc::now();
            if let Some(c) = st.cache.as_ref().filter(|c| now < c.refresh_at) {
                return Ok(c.credentials.clone());
            }
            let still_valid = st
                .cache
                .as_ref()
                .filter(|c| now < c.expiration)
                .map(|c| c.credentials.clone());
            let exchange = match &st.inflight {
                Some(f) => f.clone(),
                None => match st.retry_at {
                    Some(at) if tokio::time::Instant::now() < at => {
                        return still_valid.ok_or_else(|| backing_off(&st, at));
                    }
                    _ => OidcShared::start(&self.shared, &mut st),
                },
            };
            if let Some(c) = still_valid {
                // Serve what is still valid; the refresh goes on in the background.
                return Ok(c);
            }
            exchange
        };
        exchange.await
    }
}

/// The error for a caller arriving during the backoff after failed exchanges.
fn backing_off(st: &OidcState, retry_at: tokio::time::Instant) -> OosError {
    let wait = retry_at.saturating_duration_since(tokio::time::Instant::now());
    let (last, transient) = match &st.last_error {
        Some(OosError::Credentials(c)) => (c.message.clone(), c.transient),
        Some(other) => (other.to_string(), other.is_retryable()),
        None => ("unknown error".to_owned(), true),
    };
    OosError::Credentials(CredentialsError {
        message: format!(
            "{last} ({} failed STS exchange(s) in a row; next one in {} ms)",
            st.failures,
            wait.as_millis()
        ),
        transient,
    })
}

impl OidcShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, OidcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start the one exchange (in its own task) and record it as in flight.
    fn start(this: &Arc<Self>, st: &mut OidcState) -> SharedExchange {
        let me = this.clone();
        let task = tokio::spawn(async move {
            let result = me.exchange().await;
            let mut st = me.lock();
            st.inflight = None;
            match result {
                Ok(fresh) => {
                    let c = fresh.credentials.clone();
                    st.cache = Some(fresh);
                    st.failures = 0;
                    st.retry_at = None;
                    st.last_error = None;
                    Ok(c)
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    let (base, max) = st.backoff;
                    let exp = base
                        .saturating_mul(1u32 << (st.failures - 1).min(20))
                        .min(max);
                    let delay = exp / 2 + (exp / 2).mul_f64(rand::random::<f64>());
                    st.retry_at = Some(tokio::time::Instant::now() + delay);
                    st.last_error = Some(e.clone());
                    tracing::warn!(error = %e, failures = st.failures, retry_in_ms = delay.as_millis() as u64, "STS AssumeRoleWithOIDC failed");
                    Err(e)
                }
            }
        });
        let exchange = async move {
            task.await.unwrap_or_else(|e| {
                Err(OosError::credentials_transient(format!(
                    "STS exchange task ended abnormally: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        st.inflight = Some(exchange.clone());
        exchange
    }

    async fn exchange(&self) -> Result<Cached, OosError> {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let token = read_token(&self.config.token_file).await?;
        let mut params: Zeroizing<Vec<(String, String)>> = Zeroizing::new(vec![
            ("Action".into(), "AssumeRoleWithOIDC".into()),
            ("Format".into(), "JSON".into()),
            ("Version".into(), "2015-04-01".into()),
            (
                "DurationSeconds".into(),
                self.config.duration_seconds.to_string(),
            ),
            ("RoleArn".into(), self.config.role_arn.clone()),
            (
                "OIDCProviderArn".into(),
                self.config.oidc_provider_arn.clone(),
            ),
            ("OIDCToken".into(), token.expose_secret().to_owned()),
            (
                "RoleSessionName".into(),
                self.config.role_session_name.clone(),
            ),
            (
                "Timestamp".into(),
                Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        ]);
        if let Some(p) = &self.config.policy {
            params.push(("Policy".into(), p.clone()));
        }
        let url = Zeroizing::new(format!(
            "{}/?{}",
            self.config.sts_endpoint.trim_end_matches('/'),
            canonical_query(&params)
        ));
        let started = Utc::now();
        // `without_url`: the URL carries the OIDC token.
        let resp = self
            .http
            .get(url.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                OosError::credentials_transient(format!(
                    "STS AssumeRoleWithOIDC: {}",
                    e.without_url()
                ))
            })?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            // Neither the Location nor the body is kept: they may repeat the token.
            return Err(OosError::credentials(format!(
                "STS AssumeRoleWithOIDC answered HTTP {status} (a redirect); redirects are not followed, check {ENV_STS_ENDPOINT}"
            )));
        }
        let body = resp.bytes().await.map_err(|e| {
            OosError::credentials_transient(format!(
                "STS AssumeRoleWithOIDC body: {}",
                e.without_url()
            ))
        })?;
        if status != 200 {
            let (code, message) = error_code_message(&body);
            let message = message.replace(token.expose_secret(), MASKED_SECRET);
            let text = format!("STS AssumeRoleWithOIDC failed: HTTP {status} {code}: {message}");
            let transient = status >= 500 || status == 429 || code.contains("Throttling");
            return Err(if transient {
                OosError::credentials_transient(text)
            } else {
                OosError::credentials(text)
            });
        }
        let parsed: StsResponse = serde_json::from_slice(&body)
            .map_err(|e| OosError::credentials(format!("STS response is not JSON: {e}")))?;
        let c = parsed
            .credentials
            .ok_or_else(|| OosError::credentials("STS response has no Credentials"))?;
        let (Some(id), Some(secret), Some(tok), Some(exp)) = (
            c.access_key_id,
            c.access_key_secret,
            c.security_token,
            c.expiration,
        ) else {
            return Err(OosError::credentials(
                "STS Credentials lack AccessKeyId, AccessKeySecret, SecurityToken or Expiration",
            ));
        };
        let expiration = parse_remote_date(&exp).ok_or_else(|| {
            OosError::credentials(format!("STS Expiration {exp:?} is not a date"))
        })?;
        let refresh_at = refresh_time(started, expiration);
        tracing::info!(%expiration, "obtained STS credentials via AssumeRoleWithOIDC");
        Ok(Cached {
            credentials: Credentials {
                access_key_id: id,
                access_key_secret: SecretString::from(secret),
                security_token: Some(SecretString::from(tok)),
            },
            expiration,
            refresh_at,
        })
    }
}

/// 15 minutes before expiry, or half the lifetime when the session is shorter than 30 min
/// (otherwise a 900 s session would be refreshed on every call).
fn refresh_time(obtained: DateTime<Utc>, expiration: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = (expiration - obtained).to_std().unwrap_or_default();
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    expiration - chrono::Duration::from_std(margin).unwrap_or_default()
}

async fn read_token(path: &Path) -> Result<SecretString, OosError> {
    let raw = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
        // Transient: the projected volume may not be mounted/rotated yet.
        OosError::credentials_transient(format!(
            "cannot read OIDC token file {}: {e}",
            path.display()
        ))
    })?);
    let token = raw.trim();
    if token.is_empty() {
        return Err(OosError::credentials_transient(format!(
            "OIDC token file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(token))
}

impl CredentialProvider for OidcCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, OosError>> {
        Box::pin(self.get())
    }
    fn kind(&self) -> &'static str {
        "oidc_role_arn"
    }
    /// `role:<RoleArn>`: the STS key id changes at every refresh, the role does not.
    fn identity(&self) -> String {
        format!("role:{}", self.shared.config.role_arn)
    }
    fn invalidate(&self) {
        self.shared.lock().cache = None;
    }
}

// ---------------------------------------------------------------- credentials file

/// `access_key` profile from `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials`
/// or `~/.alibabacloud/credentials.ini`; section `ALIBABA_CLOUD_PROFILE` or `default`.
/// `Ok(None)` when no file exists at the default locations.
pub fn file_credentials_from(lookup: EnvLookup<'_>) -> Result<Option<StaticCredentials>, OosError> {
    let path = match get(lookup, ENV_CREDENTIALS_FILE) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(OosError::credentials(format!(
                    "{ENV_CREDENTIALS_FILE} points to {}, which is not a readable file",
                    p.display()
                )));
            }
            p
        }
        None => {
            let Some(home) = get(lookup, "HOME") else {
                return Ok(None);
            };
            let dir = Path::new(&home).join(".alibabacloud");
            match ["credentials", "credentials.ini"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
            {
                Some(p) => p,
                None => return Ok(None),
            }
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| OosError::credentials(format!("cannot read {}: {e}", path.display())))?;
    let profile = get(lookup, ENV_PROFILE).unwrap_or_else(|| "default".to_owned());
    let ini = Ini::load_from_str_opt(
        &text,
        // Quotes are stripped; `\` is a plain character (a secret may contain one).
        ParseOption {
            enabled_quote: true,
            enabled_escape: false,
            ..ParseOption::default()
        },
    )
    // The parser's message names line, column and what it expected, never the text.
    .map_err(|e| OosError::credentials(format!("cannot parse {}: {e}", path.display())))?;
    let section = ini.section(Some(profile.as_str())).ok_or_else(|| {
        OosError::credentials(format!(
            "profile [{profile}] not found in {}",
            path.display()
        ))
    })?;
    let field = |k: &str| section.get(k).map(str::to_owned).filter(|v| !v.is_empty());
    let kind = field("type").unwrap_or_else(|| "access_key".into());
    if kind != "access_key" {
        return Err(OosError::credentials(format!(
            "profile [{profile}] in {} has type {kind}; only access_key is supported",
            path.display()
        )));
    }
    match (field("access_key_id"), field("access_key_secret")) {
        (Some(id), Some(secret)) => Ok(Some(
            StaticCredentials::new(id, secret, None).with_kind("profile"),
        )),
        _ => Err(OosError::credentials(format!(
            "profile [{profile}] in {} lacks access_key_id or access_key_secret",
            path.display()
        ))),
    }
}

// ---------------------------------------------------------------- default chain

/// Alibaba's default order: environment → OIDC/RRSA → credentials file. Resolved once; the
/// chosen provider (OIDC included) then handles its own refresh.
#[derive(Debug)]
pub struct DefaultChain {
    inner: Arc<dyn CredentialProvider>,
}

impl DefaultChain {
    pub fn from_env() -> Result<Self, OosError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(lookup: EnvLookup<'_>) -> Result<Self, OosError> {
        if let Some(p) = env_credentials_from(lookup)? {
            return Ok(Self { inner: Arc::new(p) });
        }
        if let Some(cfg) = OidcConfig::from_lookup(lookup)? {
            return Ok(Self {
                inner: Arc::new(OidcCredentials::new(cfg)?),
            });
        }
        if let Some(p) = file_credentials_from(lookup)? {
            return Ok(Self { inner: Arc::new(p) });
        }
        Err(OosError::credentials(format!(
            "no credentials found: set {ENV_ACCESS_KEY_ID}/{ENV_ACCESS_KEY_SECRET}, or the RRSA variables \
             {ENV_ROLE_ARN}/{ENV_OIDC_PROVIDER_ARN}/{ENV_OIDC_TOKEN_FILE}, or provide \
             ~/.alibabacloud/credentials ({ENV_CREDENTIALS_FILE})"
        )))
    }

    /// The provider the chain settled on.
    pub fn inner(&self) -> &Arc<dyn CredentialProvider> {
        &self.inner
    }
}

impl CredentialProvider for DefaultChain {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, OosError>> {
        self.inner.credentials()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn invalidate(&self) {
        self.inner.invalidate()
    }
}

/// The default chain from the process environment.
pub fn default_chain() -> Result<Arc<dyn CredentialProvider>, OosError> {
    Ok(Arc::new(DefaultChain::from_env()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[tokio::test]
    async fn env_static_and_partial() {
        let e = env(&[
            (ENV_ACCESS_KEY_ID, "AKID"),
            (ENV_ACCESS_KEY_SECRET, "SK-SECRET-1"),
            (ENV_SECURITY_TOKEN, "TOK-SECRET-2"),
        ]);
        let p = env_credentials_from(&e).unwrap().unwrap();
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.access_key_secret.expose_secret(), "SK-SECRET-1");
        assert_eq!(
            c.security_token.as_ref().unwrap().expose_secret(),
            "TOK-SECRET-2"
        );
        assert_eq!(p.kind(), "env");
        let dbg = format!("{p:?} {c:?}");
        assert!(
            !dbg.contains("SECRET-1") && !dbg.contains("SECRET-2"),
            "{dbg}"
        );

        assert!(env_credentials_from(&env(&[])).unwrap().is_none());
        let err = env_credentials_from(&env(&[(ENV_ACCESS_KEY_ID, "AKID")])).unwrap_err();
        assert!(err.to_string().contains(ENV_ACCESS_KEY_SECRET));
        assert!(!err.is_retryable());
        // Whitespace-only counts as unset.
        assert!(
            env_credentials_from(&env(&[
                (ENV_ACCESS_KEY_ID, " "),
                (ENV_ACCESS_KEY_SECRET, "")
            ]))
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn identities_are_stable_and_not_secret() {
        let s = StaticCredentials::new("AKID-1", "SK-SECRET", Some("TOK-SECRET".into()));
        assert_eq!(s.identity(), "AKID-1");
        let e = env_credentials_from(&env(&[
            (ENV_ACCESS_KEY_ID, "AKID-2"),
            (ENV_ACCESS_KEY_SECRET, "SK-SECRET"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.identity(), "AKID-2");
        let oidc = [
            (ENV_ROLE_ARN, "acs:ram::1:role/r"),
            (ENV_OIDC_PROVIDER_ARN, "p"),
            (ENV_OIDC_TOKEN_FILE, "/t"),
        ];
        let o =
            OidcCredentials::new(OidcConfig::from_lookup(&env(&oidc)).unwrap().unwrap()).unwrap();
        assert_eq!(o.identity(), "role:acs:ram::1:role/r");
        let chain = DefaultChain::from_lookup(&env(&oidc)).unwrap();
        assert_eq!(chain.identity(), "role:acs:ram::1:role/r");
        let chain = DefaultChain::from_lookup(&env(&[
            (ENV_ACCESS_KEY_ID, "AKID-3"),
            (ENV_ACCESS_KEY_SECRET, "SK-SECRET"),
        ]))
        .unwrap();
        assert_eq!(chain.identity(), "AKID-3");
        for id in [s.identity(), e.identity(), o.identity(), chain.identity()] {
            assert!(!id.contains("SECRET"), "{id}");
        }
    }

    #[test]
    fn refresh_margin() {
        let t = Utc::now();
        let m = chrono::Duration::minutes;
        assert_eq!(refresh_time(t, t + m(60)), t + m(45));
        assert_eq!(refresh_time(t, t + m(31)), t + m(16));
        assert_eq!(refresh_time(t, t + m(20)), t + m(10));
        // Already expired: refresh at once.
        assert!(refresh_time(t, t - m(1)) <= t);
    }

    #[test]
    fn oidc_trio_partial_names_missing() {
        let err =
            OidcConfig::from_lookup(&env(&[(ENV_ROLE_ARN, "acs:ram::1:role/r")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(ENV_OIDC_PROVIDER_ARN) && msg.contains(ENV_OIDC_TOKEN_FILE),
            "{msg}"
        );
        assert!(!msg.contains(&format!("{ENV_ROLE_ARN},")) && !msg.ends_with(ENV_ROLE_ARN));
        let err =
            OidcConfig::from_lookup(&env(&[(ENV_ROLE_ARN, "r"), (ENV_OIDC_PROVIDER_ARN, "p")]))
                .unwrap_err();
        assert!(err.to_string().ends_with(ENV_OIDC_TOKEN_FILE));
        assert!(OidcConfig::from_lookup(&env(&[])).unwrap().is_none());
    }

    #[test]
    fn oidc_endpoints() {
        let base = [
            (ENV_ROLE_ARN, "r"),
            (ENV_OIDC_PROVIDER_ARN, "p"),
            (ENV_OIDC_TOKEN_FILE, "/t"),
        ];
        let cfg = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            OidcConfig::from_lookup(&env(&all)).unwrap().unwrap()
        };
        assert_eq!(cfg(&[]).sts_endpoint, "https://sts.aliyuncs.com");
        assert_eq!(
            cfg(&[(ENV_STS_REGION, "cn-hangzhou")]).sts_endpoint,
            "https://sts.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            cfg(&[
                (ENV_STS_REGION, "cn-hangzhou"),
                (ENV_VPC_ENDPOINT_ENABLED, "true")
            ])
            .sts_endpoint,
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            cfg(&[(ENV_STS_ENDPOINT, "http://127.0.0.1:9")]).sts_endpoint,
            "http://127.0.0.1:9"
        );
        assert_eq!(
            cfg(&[(ENV_STS_ENDPOINT, "sts.example.com")]).sts_endpoint,
            "https://sts.example.com"
        );
        let c = cfg(&[(ENV_ROLE_SESSION_NAME, "my-session")]);
        assert_eq!(c.role_session_name, "my-session");
        assert_eq!(c.token_file, PathBuf::from("/t"));
        assert!(cfg(&[]).role_session_name.starts_with("oos-chat-operator-"));
    }

    #[tokio::test]
    async fn credentials_file_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(
            &path,
            "[default]\ntype = access_key\naccess_key_id = DEF\naccess_key_secret = DEF-SECRET\n\n\
             ; comment\n[other]\ntype = access_key\naccess_key_id = \"OTH\"\naccess_key_secret = OTH-SECRET\n\
             [role]\ntype = ram_role_arn\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p)]))
            .unwrap()
            .unwrap();
        assert_eq!(c.credentials().await.unwrap().access_key_id, "DEF");
        let c = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p), (ENV_PROFILE, "other")]))
            .unwrap()
            .unwrap();
        let got = c.credentials().await.unwrap();
        assert_eq!(
            (
                got.access_key_id.as_str(),
                got.access_key_secret.expose_secret()
            ),
            ("OTH", "OTH-SECRET")
        );
        assert_eq!(c.kind(), "profile");
        let e = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p), (ENV_PROFILE, "role")]))
            .unwrap_err();
        assert!(e.to_string().contains("ram_role_arn"));
        let e = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p), (ENV_PROFILE, "nope")]))
            .unwrap_err();
        assert!(e.to_string().contains("[nope]"));
        assert!(!e.to_string().contains("SECRET"));
        let e =
            file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, "/nonexistent/x")])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"));

        // Default location under HOME.
        let home = tempfile::tempdir().unwrap();
        let h = home.path().to_str().unwrap();
        assert!(
            file_credentials_from(&env(&[("HOME", h)]))
                .unwrap()
                .is_none()
        );
        std::fs::create_dir(home.path().join(".alibabacloud")).unwrap();
        std::fs::copy(&path, home.path().join(".alibabacloud/credentials.ini")).unwrap();
        let c = file_credentials_from(&env(&[("HOME", h)]))
            .unwrap()
            .unwrap();
        assert_eq!(c.credentials().await.unwrap().access_key_id, "DEF");
    }

    /// What rust-ini has to accept for Alibaba's file: `#` comment lines, CRLF, single and
    /// double quotes, and `#`, `;`, `\\` and `=` inside values (secrets may contain them).
    #[tokio::test]
    async fn credentials_file_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(
            &path,
            "# leading comment\r\n[default]\r\naccess_key_id = 'SQ'\r\n\
             access_key_secret = a#b;c\\d=e\r\n[spaced]\naccess_key_id=NS\naccess_key_secret=\"x y\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let got = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p)]))
            .unwrap()
            .unwrap()
            .credentials()
            .await
            .unwrap();
        assert_eq!(got.access_key_id, "SQ");
        assert_eq!(got.access_key_secret.expose_secret(), "a#b;c\\d=e");
        let got =
            file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p), (ENV_PROFILE, "spaced")]))
                .unwrap()
                .unwrap()
                .credentials()
                .await
                .unwrap();
        assert_eq!(
            (
                got.access_key_id.as_str(),
                got.access_key_secret.expose_secret()
            ),
            ("NS", "x y")
        );
        // A malformed file is a terminal error naming the position, not the content.
        std::fs::write(&path, "[default\naccess_key_secret = TOPSECRET\n").unwrap();
        let e = file_credentials_from(&env(&[(ENV_CREDENTIALS_FILE, p)])).unwrap_err();
        assert!(!e.is_retryable());
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn default_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(
            &path,
            "[default]\ntype = access_key\naccess_key_id = F\naccess_key_secret = S\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let oidc = [
            (ENV_ROLE_ARN, "r"),
            (ENV_OIDC_PROVIDER_ARN, "p"),
            (ENV_OIDC_TOKEN_FILE, "/t"),
        ];
        let all = [
            &[
                (ENV_ACCESS_KEY_ID, "A"),
                (ENV_ACCESS_KEY_SECRET, "B"),
                (ENV_CREDENTIALS_FILE, p),
            ][..],
            &oidc[..],
        ]
        .concat();
        assert_eq!(DefaultChain::from_lookup(&env(&all)).unwrap().kind(), "env");
        let no_env = [&oidc[..], &[(ENV_CREDENTIALS_FILE, p)][..]].concat();
        assert_eq!(
            DefaultChain::from_lookup(&env(&no_env)).unwrap().kind(),
            "oidc_role_arn"
        );
        assert_eq!(
            DefaultChain::from_lookup(&env(&[(ENV_CREDENTIALS_FILE, p)]))
                .unwrap()
                .kind(),
            "profile"
        );
        // A partial OIDC trio is an error, not a fall-through to the file.
        let partial = [(ENV_ROLE_ARN, "r"), (ENV_CREDENTIALS_FILE, p)];
        assert!(DefaultChain::from_lookup(&env(&partial)).is_err());
        let none =
            DefaultChain::from_lookup(&env(&[("HOME", dir.path().to_str().unwrap())])).unwrap_err();
        assert!(none.to_string().contains("no credentials found"));
    }
}
