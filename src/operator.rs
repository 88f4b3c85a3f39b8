//! The operator's default command: flags, clients, metrics endpoint, controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use tracing::{error, info, warn};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};

use crate::crd::{ChatConfiguration, DeletionPolicy};
use crate::metrics::Metrics;
use crate::reconcile::plan::RemoteDeletedPolicy;
use crate::reconcile::{self, Context, Settings};
use oos_client::client::{ClientConfig, Endpoint, OosClient, RetryPolicy};
use oos_client::credentials::{CredentialProvider, Credentials, default_chain};
use oos_client::error::OosError;
use oos_client::ratelimit::TokenBucket;

/// Flags of the controller (stable: used by people and scripts).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// OOS endpoint URL overriding the regional one, e.g. http://127.0.0.1:8443 (the emulator).
    #[arg(long, env = "OOS_ENDPOINT")]
    pub oos_endpoint: Option<String>,
    /// Use the VPC endpoints (oos-vpc.<region>.aliyuncs.com).
    #[arg(long, default_value_t = false)]
    pub oos_vpc: bool,
    /// Region for objects without spec.regionId.
    #[arg(long, env = "OOS_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// Client-side OOS request rate (requests per second, whole process).
    #[arg(long, default_value_t = 10.0)]
    pub qps: f64,
    /// Token-bucket burst.
    #[arg(long, default_value_t = 20)]
    pub burst: u32,
    /// Objects reconciled in parallel.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
    /// Remote resync interval (e.g. 30s, 10m, 1h); objects may override it with the
    /// oos.chatops.dev/resync-interval annotation.
    #[arg(long, default_value = "10m", value_parser = parse_duration_flag)]
    pub resync_interval: Duration,
    /// Namespace to watch (repeatable); all namespaces when absent.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Deletion policy for objects without spec.deletionPolicy and without the namespace annotation.
    #[arg(long, default_value = "Delete", value_parser = ["Delete", "Orphan"])]
    pub default_deletion_policy: String,
    /// What to do when a remote configuration this operator created is deleted out of band.
    #[arg(long, default_value = "Recreate", value_parser = ["Recreate", "Stall"])]
    pub on_remote_deleted: String,
    /// File whose content keys the per-object secret HMACs in status. Without it the key is
    /// random, generated once and kept in --secret-hash-key-secret.
    #[arg(long, env = "OOS_SECRET_HASH_KEY_FILE")]
    pub secret_hash_key_file: Option<PathBuf>,
    /// Secret in the operator namespace that keeps the random secret-hash key (created when
    /// missing; key `key`).
    #[arg(long, default_value = "oos-chat-operator-secret-hash-key")]
    pub secret_hash_key_secret: String,
    /// The operator's own namespace (secret-hash key, leader-election lease). Default: the pod's
    /// namespace, else the kubeconfig context's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Leader election on a Lease: only the holder reconciles; others wait as standbys.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "oos-chat-operator")]
    pub leader_elect_lease_name: String,
    /// Namespace of the leader-election Lease (default: the operator namespace).
    #[arg(long)]
    pub leader_elect_lease_namespace: Option<String>,
    /// How long a leader's lease lasts without renewal; a standby takes over within it.
    #[arg(long, default_value = "15s", value_parser = parse_duration_flag)]
    pub leader_elect_lease_duration: Duration,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Per-attempt OOS request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration_flag)]
    pub oos_timeout: Duration,
}

pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("missing unit (s, m or h)")?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad number in {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit in {s:?} (use ms, s, m or h)")),
    }
}

/// Stands in for the default chain when it cannot produce credentials at start-up, so objects
/// with `spec.credentialsRef` still work and the others report the reason.
#[derive(Debug)]
struct UnavailableCredentials(String);

impl CredentialProvider for UnavailableCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, OosError>> {
        let message = self.0.clone();
        Box::pin(async move {
            Err(OosError::credentials(format!(
                "no default credentials: {message}; set spec.credentialsRef or configure the operator's credentials"
            )))
        })
    }
    fn kind(&self) -> &'static str {
        "unavailable"
    }
    fn identity(&self) -> String {
        "unavailable".into()
    }
}

/// The OOS client of the whole process (one token bucket for every reconcile).
pub fn oos_client(args: &RunArgs, metrics: Arc<Metrics>) -> anyhow::Result<OosClient> {
    let endpoint = match (&args.oos_endpoint, args.oos_vpc) {
        (Some(url), _) => Endpoint::Url(url.clone()),
        (None, true) => Endpoint::Vpc,
        (None, false) => Endpoint::Public,
    };
    let mut config = ClientConfig::new(endpoint);
    config.timeout = args.oos_timeout;
    config.rate_limiter = TokenBucket::new(args.qps, args.burst);
    config.user_agent_suffix = Some(format!("oos-chat-operator/{}", env!("CARGO_PKG_VERSION")));
    config.observer = Some(Arc::new(move |call| metrics.observe_call(call)));
    let credentials: Arc<dyn CredentialProvider> = match default_chain() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "default Alibaba Cloud credential chain unavailable");
            Arc::new(UnavailableCredentials(e.to_string()))
        }
    };
    OosClient::new(config, credentials).context("building the OOS client")
}

pub fn settings(args: &RunArgs, secret_hash_key: Vec<u8>) -> Settings {
    Settings {
        default_region: args.default_region.clone(),
        default_deletion_policy: if args.default_deletion_policy == "Orphan" {
            DeletionPolicy::Orphan
        } else {
            DeletionPolicy::Delete
        },
        resync_interval: args.resync_interval,
        on_remote_deleted: if args.on_remote_deleted == "Stall" {
            RemoteDeletedPolicy::Stall
        } else {
            RemoteDeletedPolicy::Recreate
        },
        secret_hash_key,
        // The last attempt of a Create is sent within the client's retry budget; the service is
        // taken to finish a request within twice the per-attempt timeout.
        create_settle: RetryPolicy::default().max_elapsed + 2 * args.oos_timeout,
        request_hold: 2 * args.oos_timeout,
        ..Settings::default()
    }
}

/// Data key of the secret-hash key Secret.
const SECRET_HASH_KEY: &str = "key";

/// The key of the per-object secret HMACs: the `--secret-hash-key-file`, else a random 32-byte
/// key generated once and kept in a Secret of the operator namespace (created here when
/// missing; a concurrent creator's key wins). Never derived from anything a reader of the
/// objects can see.
pub async fn secret_hash_key(
    kube: &kube::Client,
    args: &RunArgs,
    operator_namespace: &str,
) -> anyhow::Result<Vec<u8>> {
    if let Some(p) = &args.secret_hash_key_file {
        let key = std::fs::read(p)
            .with_context(|| format!("reading --secret-hash-key-file {}", p.display()))?;
        anyhow::ensure!(
            key.len() >= 16,
            "--secret-hash-key-file {} holds {} bytes; use at least 16 random bytes",
            p.display(),
            key.len()
        );
        return Ok(key);
    }
    let name = &args.secret_hash_key_secret;
    let api: Api<Secret> = Api::namespaced(kube.clone(), operator_namespace);
    for _ in 0..3 {
        if let Some(existing) = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {operator_namespace}/{name}"))?
        {
            let key = existing
                .data
                .and_then(|mut d| d.remove(SECRET_HASH_KEY))
                .map(|b| b.0)
                .unwrap_or_default();
            anyhow::ensure!(
                key.len() >= 16,
                "Secret {operator_namespace}/{name} has no usable key {SECRET_HASH_KEY:?} (at least 16 bytes); delete it to have a new one generated"
            );
            return Ok(key);
        }
        let key: [u8; 32] = rand::random();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "oos-chat-operator".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                SECRET_HASH_KEY.to_string(),
                k8s_openapi::ByteString(key.to_vec()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(secret = %format!("{operator_namespace}/{name}"), "generated a new secret-hash key");
                return Ok(key.to_vec());
            }
            // Another replica created it first: use theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "creating Secret {operator_namespace}/{name} for the secret-hash key (or pass --secret-hash-key-file)"
                    )
                });
            }
        }
    }
    anyhow::bail!("Secret {operator_namespace}/{name} keeps appearing and vanishing")
}

/// `/metrics`; `/healthz` (the process serves); `/readyz` (start-up done: CRD served, key
/// loaded — standbys are ready too, so a rolling update can proceed while the old leader
/// still holds the lease).
fn endpoints(
    metrics: Arc<Metrics>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> crate::http::Handler {
    Arc::new(move |path| match path {
        "/metrics" => Some((
            hyper::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )),
        "/healthz" => Some((hyper::StatusCode::OK, "text/plain", "ok\n".into())),
        "/readyz" if ready.load(std::sync::atomic::Ordering::Acquire) => {
            Some((hyper::StatusCode::OK, "text/plain", "ok\n".into()))
        }
        "/readyz" => Some((
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".into(),
        )),
        _ => None,
    })
}

/// How long in-flight reconciles may run after SIGTERM/SIGINT: the process always ends within
/// 10 s of the signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Retry interval while the CRD is missing.
const CRD_RETRY: Duration = Duration::from_secs(10);

/// Resolves on the first SIGINT or SIGTERM; cheap to clone and await many times.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Installs the signal handlers now, so a signal arriving during start-up is not lost.
    pub fn install() -> anyhow::Result<Self> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::spawn(async move {
            #[cfg(unix)]
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            let _ = tx.send(true);
        });
        Ok(Self(rx))
    }

    pub async fn signalled(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// Waits until the ChatConfiguration CRD is served, saying at `error` what to apply; returns
/// false if a shutdown signal came first.
async fn wait_for_crd(kube: &kube::Client, namespaces: &[String], shutdown: &Shutdown) -> bool {
    let api: Api<ChatConfiguration> = match namespaces.first() {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    loop {
        let problem = match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 404 => format!(
                "the ChatConfiguration CRD ({}) is not installed; apply it: kubectl apply --server-side -f crds/ (or kubectl apply -k deploy/)",
                crate::crd::CRD_NAME
            ),
            Err(e) => format!("cannot list ChatConfigurations: {e}"),
        };
        error!("{problem}; retrying in {} s", CRD_RETRY.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(CRD_RETRY) => {}
            _ = shutdown.clone().signalled() => return false,
        }
    }
}

/// This process's name in the Lease and in events: the pod's name, else host and pid.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Waits for the leader lease (false if a shutdown signal came first). The receiver then says
/// whether this process still holds it.
async fn acquire_leadership(
    kube: &kube::Client,
    args: &RunArgs,
    operator_namespace: &str,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Leadership>> {
    let namespace = args
        .leader_elect_lease_namespace
        .clone()
        .unwrap_or_else(|| operator_namespace.to_string());
    let duration = args.leader_elect_lease_duration.as_secs().max(2);
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(kube.clone(), &args.leader_elect_lease_name)
            .with_namespace(&namespace)
            .with_identity(identity())
            .with_duration(duration)
            // Renew a third of the way before expiry; also the clock skew tolerated.
            .with_grace((duration / 3).max(1))
            .build()
            .await
            .with_context(|| {
                format!(
                    "leader election: Lease {namespace}/{}",
                    args.leader_elect_lease_name
                )
            })?;
    let (mut is_leader, task) = manager.watch().await;
    info!(lease = %format!("{namespace}/{}", args.leader_elect_lease_name), identity = %identity(), "waiting for the leader lease");
    loop {
        if *is_leader.borrow_and_update() {
            info!("acquired the leader lease; reconciling");
            return Ok(Some(Leadership { is_leader, task }));
        }
        tokio::select! {
            changed = is_leader.changed() => changed.context("leader election stopped")?,
            _ = shutdown.clone().signalled() => return Ok(None),
        }
    }
}

struct Leadership {
    is_leader: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Resolves when this process no longer holds the lease.
    async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leader| !*leader).await;
    }

    /// Hands the lease over at once instead of letting it expire.
    async fn release(self) {
        drop(self.is_leader);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let metrics = Arc::new(Metrics::default());
    let kube = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    let operator_namespace = args
        .operator_namespace
        .clone()
        .unwrap_or_else(|| kube.default_namespace().to_string());
    let oos = oos_client(&args, metrics.clone())?;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics_server = tokio::spawn(crate::http::serve(
        args.metrics_addr,
        endpoints(metrics.clone(), ready.clone()),
    ));
    if !wait_for_crd(&kube, &args.namespaces, &shutdown).await {
        metrics_server.abort();
        info!("stopped before the CRD appeared");
        return Ok(());
    }
    let key = secret_hash_key(&kube, &args, &operator_namespace).await?;
    ready.store(true, std::sync::atomic::Ordering::Release);

    let mut leadership = None;
    if args.leader_elect {
        match acquire_leadership(&kube, &args, &operator_namespace, &shutdown).await? {
            Some(l) => leadership = Some(l),
            None => {
                metrics_server.abort();
                info!("stopped while standing by");
                return Ok(());
            }
        }
    }
    metrics.leader.set(1);

    let ctx = Context::new(kube, oos, settings(&args, key), metrics);
    info!(namespaces = ?args.namespaces, "starting ChatConfiguration controller");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = reconcile::run(ctx, args.namespaces.clone(), args.concurrency, async move {
        let _ = stop_rx.await;
    });
    tokio::pin!(controller);
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = &mut controller => Ok(()),
        _ = shutdown.clone().signalled() => Ok(()),
        _ = lost => Err(anyhow::anyhow!("lost the leader lease; exiting so that this process restarts as a standby")),
    };
    let _ = stop_tx.send(());
    info!(
        grace_seconds = SHUTDOWN_GRACE.as_secs(),
        "stopping; in-flight reconciles may finish"
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controller)
        .await
        .is_err()
    {
        warn!("in-flight reconciles did not finish within the grace period; exiting anyway");
    }
    if let Some(l) = leadership {
        l.release().await;
    }
    metrics_server.abort();
    info!("controller stopped");
    outcome
}
