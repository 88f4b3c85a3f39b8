//! The operator's default command: flags, clients, metrics endpoint, controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use tracing::{info, warn};

use crate::crd::DeletionPolicy;
use crate::metrics::Metrics;
use crate::reconcile::plan::RemoteDeletedPolicy;
use crate::reconcile::{self, Context, Settings};
use oos_client::client::{ClientConfig, Endpoint, OosClient};
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
    /// File whose content keys the per-object secret HMACs in status (optional).
    #[arg(long, env = "OOS_SECRET_HASH_KEY_FILE")]
    pub secret_hash_key_file: Option<PathBuf>,
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
    let _ = metrics; // remote writes are counted by the reconciler, per successful write
    let credentials: Arc<dyn CredentialProvider> = match default_chain() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "default Alibaba Cloud credential chain unavailable");
            Arc::new(UnavailableCredentials(e.to_string()))
        }
    };
    OosClient::new(config, credentials).context("building the OOS client")
}

pub fn settings(args: &RunArgs) -> anyhow::Result<Settings> {
    let secret_hash_key = match &args.secret_hash_key_file {
        Some(p) => std::fs::read(p)
            .with_context(|| format!("reading --secret-hash-key-file {}", p.display()))?,
        None => Vec::new(),
    };
    Ok(Settings {
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
        ..Settings::default()
    })
}

fn metrics_handler(metrics: Arc<Metrics>) -> crate::http::Handler {
    Arc::new(move |path| match path {
        "/metrics" => Some((
            hyper::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )),
        "/healthz" | "/readyz" => Some((hyper::StatusCode::OK, "text/plain", "ok\n".into())),
        _ => None,
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let kube = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    let oos = oos_client(&args, metrics.clone())?;
    let ctx = Context::new(kube, oos, settings(&args)?, metrics.clone());
    let metrics_server = tokio::spawn(crate::http::serve(
        args.metrics_addr,
        metrics_handler(metrics),
    ));
    info!(namespaces = ?args.namespaces, "starting ChatConfiguration controller");
    reconcile::run(
        ctx,
        args.namespaces.clone(),
        args.concurrency,
        shutdown_signal(),
    )
    .await;
    metrics_server.abort();
    info!("controller stopped");
    Ok(())
}
