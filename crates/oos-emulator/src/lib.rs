//! `oos-emulator`: a local, faithful stand-in for the OOS chat-configuration API (2019-06-01) and
//! the STS `AssumeRoleWithOIDC` exchange, with Alibaba's V3 signature checks, a JSON state file, an
//! admin API and fault injection. Start it in-process with [`start`], or run the `oos-emulator`
//! binary. See `docs/emulator.md`; every unpublished behaviour is in [`assumptions`].

pub mod actions;
mod admin;
pub mod assumptions;
pub mod codec;
pub mod error;
pub mod faults;
mod redact;
mod server;
pub mod sigv3;
mod store;
mod sts;
pub mod testsign;

pub use admin::StoredConfiguration;
pub use faults::{Fault, FaultConfig, FaultKind, FaultRule, Faults};
pub use server::LoggedRequest;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One credential the emulator accepts. `Debug` never shows the secret or the token.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    /// Set for STS credentials: requests must carry and sign this `x-acs-security-token`.
    #[serde(default)]
    pub security_token: Option<String>,
    /// The account that owns the state this key sees (assumption A17 for the default).
    #[serde(default = "default_owner")]
    pub owner: String,
}

fn default_owner() -> String {
    assumptions::DEFAULT_OWNER.to_string()
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .field("owner", &self.owner)
            .finish()
    }
}

impl AccessKey {
    /// A permanent key owned by the default account.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
            security_token: None,
            owner: default_owner(),
        }
    }

    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    pub fn with_security_token(mut self, token: impl Into<String>) -> Self {
        self.security_token = Some(token.into());
        self
    }

    /// Parse the `--access-key ID:SECRET[:OWNER]` form.
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            [id, secret] if !id.is_empty() && !secret.is_empty() => Ok(Self::new(*id, *secret)),
            [id, secret, owner] if !id.is_empty() && !secret.is_empty() && !owner.is_empty() => {
                Ok(Self::new(*id, *secret).with_owner(*owner))
            }
            _ => Err("expected ID:SECRET or ID:SECRET:OWNER".into()),
        }
    }

    /// Parse the `--sts-key ID:SECRET:TOKEN[:OWNER]` form.
    pub fn parse_sts_spec(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (id, secret, token, owner) = match parts.as_slice() {
            [i, s, t] => (*i, *s, *t, None),
            [i, s, t, o] => (*i, *s, *t, Some(*o)),
            _ => return Err("expected ID:SECRET:TOKEN or ID:SECRET:TOKEN:OWNER".into()),
        };
        if [id, secret, token].iter().any(|p| p.is_empty()) || owner == Some("") {
            return Err("expected ID:SECRET:TOKEN or ID:SECRET:TOKEN:OWNER".into());
        }
        let k = Self::new(id, secret).with_security_token(token);
        Ok(match owner {
            Some(o) => k.with_owner(o),
            None => k,
        })
    }
}

/// How to run the emulator. `Default` listens on an ephemeral loopback port with no keys.
#[derive(Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub access_keys: Vec<AccessKey>,
    pub state_file: Option<PathBuf>,
    /// Region used when a request has no `RegionId` (A9).
    pub default_region: String,
    /// Accepted clock skew of `x-acs-date`; `None` turns the window check off (for replaying
    /// captured requests). Default 15 minutes (A5).
    pub date_window: Option<Duration>,
    /// Answer Update with the documented zone-less `UpdatedDate` (A13).
    pub zoneless_update_date: bool,
    /// When set, the STS stub accepts only this OIDC token (after trimming).
    pub expected_oidc_token: Option<String>,
    /// Faults active from the start.
    pub faults: FaultConfig,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: None,
            access_keys: Vec::new(),
            state_file: None,
            default_region: assumptions::DEFAULT_REGION.to_string(),
            date_window: Some(Duration::from_secs(assumptions::DATE_WINDOW_SECS as u64)),
            zoneless_update_date: false,
            expected_oidc_token: None,
            faults: FaultConfig::default(),
        }
    }
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("access_keys", &self.access_keys)
            .field("state_file", &self.state_file)
            .field("default_region", &self.default_region)
            .field("date_window", &self.date_window)
            .field("zoneless_update_date", &self.zoneless_update_date)
            .field(
                "expected_oidc_token",
                &self.expected_oidc_token.as_ref().map(|_| "<redacted>"),
            )
            .field("faults", &self.faults)
            .finish()
    }
}

/// A key the gateway knows: configured, or issued by the STS stub.
#[derive(Clone)]
pub(crate) struct KeyEntry {
    pub secret: String,
    pub token: Option<String>,
    pub owner: String,
    pub expires: Option<DateTime<Utc>>,
}

/// State shared by both listeners.
pub(crate) struct Shared {
    pub keys: std::sync::RwLock<HashMap<String, KeyEntry>>,
    pub store: store::Store,
    pub nonces: std::sync::Mutex<server::Nonces>,
    pub calls: std::sync::Mutex<BTreeMap<String, u64>>,
    /// action → answer (`OK`, an error code, `reset`, `stall`) → count (A19).
    pub answers: std::sync::Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    pub log: std::sync::Mutex<server::RequestLog>,
    pub faults: Faults,
    pub default_region: String,
    pub date_window: Option<i64>,
    pub zoneless_update_date: bool,
    pub expected_oidc_token: Option<String>,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn reset_counters(&self) {
        self.calls.lock().expect("calls lock").clear();
        self.answers.lock().expect("answers lock").clear();
        self.log.lock().expect("log lock").clear();
    }
}

/// A running emulator. Dropping it stops the listeners in the background; prefer
/// [`RunningEmulator::shutdown`].
pub struct RunningEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Bind the listeners and serve on the current tokio runtime.
pub async fn start(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
    for k in &config.access_keys {
        anyhow::ensure!(
            !k.id.is_empty() && !k.secret.is_empty(),
            "access key id and secret must not be empty"
        );
    }
    config
        .faults
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid faults: {e}"))?;
    let store = store::Store::open(config.state_file.clone())?;
    let keys = config
        .access_keys
        .iter()
        .map(|k| {
            let entry = KeyEntry {
                secret: k.secret.clone(),
                token: k.security_token.clone(),
                owner: k.owner.clone(),
                expires: None,
            };
            (k.id.clone(), entry)
        })
        .collect();
    let (tx, rx) = watch::channel(false);
    let faults = Faults::default();
    faults
        .set(config.faults.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let shared = Arc::new(Shared {
        keys: std::sync::RwLock::new(keys),
        store,
        nonces: Default::default(),
        calls: Default::default(),
        answers: Default::default(),
        log: Default::default(),
        faults,
        default_region: config.default_region.clone(),
        date_window: config.date_window.map(|d| d.as_secs() as i64),
        zoneless_update_date: config.zoneless_update_date,
        expected_oidc_token: config.expected_oidc_token.clone(),
        shutdown: rx,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding API listener {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut tasks = vec![server::spawn_api(listener, shared.clone())];
    let mut admin_addr = None;
    if let Some(a) = config.admin_listen {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("binding admin listener {a}"))?;
        admin_addr = Some(l.local_addr()?);
        tasks.push(admin::spawn(l, shared.clone()));
    }
    Ok(RunningEmulator {
        shared,
        addr,
        admin_addr,
        shutdown: tx,
        tasks,
    })
}

impl RunningEmulator {
    /// `http://IP:PORT` of the API listener (OOS actions and the STS stub).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` of the admin listener, when enabled.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_addr.map(|a| format!("http://{a}"))
    }

    /// Requests received per action (A19), as served at `GET /calls`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.calls.lock().expect("calls lock").clone()
    }

    /// Requests per action and answer (`OK`, an error code, `reset`, `stall`), as served at
    /// `GET /calls?by=code` (A19).
    pub fn calls_by_answer(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.shared.answers.lock().expect("answers lock").clone()
    }

    /// Every stored configuration, secrets masked (A22), as served at `GET /state`.
    pub fn state(&self) -> Vec<StoredConfiguration> {
        admin::state_view(&self.shared, None, None)
    }

    /// The request log (secrets redacted), oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().expect("log lock").entries()
    }

    /// Clear the call counters and the request log (not the state).
    pub fn reset(&self) {
        self.shared.reset_counters();
    }

    /// Delete every chat configuration (and persist that).
    pub fn reset_state(&self) -> anyhow::Result<()> {
        self.shared.store.clear()
    }

    /// Number of stored chat configurations, all accounts and regions.
    pub fn configuration_count(&self) -> usize {
        self.shared.store.len()
    }

    /// Live handle on the fault settings.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Accept one more key from now on.
    pub fn add_access_key(&self, key: AccessKey) {
        let entry = KeyEntry {
            secret: key.secret,
            token: key.security_token,
            owner: key.owner,
            expires: None,
        };
        self.shared
            .keys
            .write()
            .expect("keys lock")
            .insert(key.id, entry);
    }

    /// Stop both listeners; in-flight requests get up to 5 s.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for mut t in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
