//! Scale benchmark of the operator, end to end, with real processes only: kube-apiserver + etcd
//! (`hack/controlplane.sh`), the `oos-emulator` binary over HTTP and the `oos-chat-operator`
//! binary, both release builds. `hack/bench.sh` builds them and runs this; BENCHMARKS.md has the
//! method and the results.
//!
//! ```text
//! cargo bench --bench scale -- --sizes 100,1000,5000 [--qps 500 --burst 500 --concurrency 32]
//!     [--resync-interval 20s] [--rotations 100] [--qps-limit auto|Q] [--qps-modes unaware,matched]
//! ```
//!
//! Per size N, on a fresh control plane and a fresh emulator:
//! 1. converge: N Secrets exist, the operator runs; N ChatConfigurations are created
//!    (`--apply-concurrency` in flight); a watch records when each first shows Ready=True.
//!    Remote calls by action (emulator `/calls`), Kubernetes writes by resource and verb
//!    (kube-apiserver `apiserver_request_total` deltas minus this program's own writes),
//!    operator CPU seconds and peak RSS (`/proc`).
//! 2. steady state: after one settling resync interval, `--steady-intervals` intervals with no
//!    change; remote calls and Kubernetes writes per interval.
//! 3. rotation: `--rotations` Secrets edited one after another; each edit → the remote
//!    UpdateChatConfiguration of its object, timed from the emulator's request log.
//! 4. quota: a fresh emulator answering at most Q requests/s (`qps_limit`), N objects already
//!    applied, a new operator started: wall time to all Ready ÷ (floor calls / Q).
//!
//! Every process it starts is stopped at the end, on error, on panic and on SIGINT/SIGTERM
//! (children also get PR_SET_PDEATHSIG, so even a SIGKILL of this program takes them down; the
//! control plane is stopped with `hack/controlplane.sh down`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config};
use oos_chat_operator::crd::{ChatConfiguration, crd_yaml};
use serde_json::{Value, json};

const REGION: &str = "cn-hangzhou";
const AK_ID: &str = "bench-access-key";
/// Only the emulator and the operator started here know it; it protects nothing.
const AK_SECRET: &str = "bench-access-key-secret";
const NAMESPACE: &str = "bench";
/// The floor counts one List page per this many remotes (the operator's MaxResults).
const PAGE: u64 = 100;

#[derive(Parser, Debug, Clone)]
#[command(about = "Scale benchmark: control plane + emulator + operator, real processes")]
struct Args {
    /// Object counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    sizes: Vec<u64>,
    /// Operator --qps for the run (raised from the default 10 so the client bucket is not the bound).
    #[arg(long, default_value_t = 500.0)]
    qps: f64,
    /// Operator --burst.
    #[arg(long, default_value_t = 500)]
    burst: u32,
    /// Operator --concurrency.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,
    /// Operator --resync-interval, in seconds.
    #[arg(long, default_value_t = 20)]
    resync_interval: u64,
    /// ChatConfiguration creates in flight while applying (1 = one after another, like kubectl apply).
    #[arg(long, default_value_t = 4)]
    apply_concurrency: usize,
    /// Resync intervals waited after all Ready before the steady-state window.
    #[arg(long, default_value_t = 1)]
    settle_intervals: u64,
    /// Resync intervals in the steady-state window (0 skips the phase).
    #[arg(long, default_value_t = 3)]
    steady_intervals: u64,
    /// Secret rotations (edits, one after another).
    #[arg(long, default_value_t = 100)]
    rotations: usize,
    /// Emulator qps_limit of the quota phase: a number, or `auto` (N/25 clamped to 10..=100).
    #[arg(long, default_value = "auto")]
    qps_limit: String,
    /// Quota-phase runs: `unaware` (operator keeps --qps) and/or `matched` (operator --qps Q
    /// --burst 1); `none` skips the phase.
    #[arg(long, value_delimiter = ',', default_value = "unaware,matched")]
    qps_modes: Vec<String>,
    /// Give up on a phase after this many seconds plus 0.2 s per object.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// JSON results file (default target/bench/scale-<time>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where process logs go (kept after the run).
    #[arg(long, default_value = "target/bench/logs")]
    log_dir: PathBuf,
    #[arg(long, default_value = "target/release/oos-chat-operator")]
    operator_bin: PathBuf,
    #[arg(long, default_value = "target/release/oos-emulator")]
    emulator_bin: PathBuf,
    /// Extra operator arguments (repeatable), e.g. --operator-arg=--leader-elect=false.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Extra operator environment (repeatable), e.g. --operator-env=MALLOC_ARENA_MAX=2.
    #[arg(long = "operator-env")]
    operator_env: Vec<String>,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---------------------------------------------------------------------------------------
// Processes: everything started is registered here and stopped by `cleanup_all`.

struct Registry {
    children: Vec<(String, Child)>,
    control_planes: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: Vec::new(),
    control_planes: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; always reaped.
fn stop_child(name: &str, child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "bench: {name} (pid {}) ignored SIGTERM; SIGKILL",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn controlplane_down(dir: &Path) {
    let status = Command::new("hack/controlplane.sh")
        .arg("down")
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!(
            "bench: hack/controlplane.sh down --dir {} failed",
            dir.display()
        );
    }
}

/// Stops every process this program started: operators and emulators, then control planes.
fn cleanup_all() {
    let (children, dirs) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.children),
            std::mem::take(&mut r.control_planes),
        )
    };
    for (name, mut child) in children {
        stop_child(&name, &mut child);
    }
    for dir in dirs {
        controlplane_down(&dir);
    }
}

struct CleanupOnDrop;
impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        cleanup_all();
    }
}

/// A started child; `stop` ends it, `cleanup_all` otherwise.
struct Proc {
    name: String,
    pid: u32,
}

impl Proc {
    /// Spawns with PR_SET_PDEATHSIG=SIGKILL. Must be called on the main thread (the one that
    /// runs `block_on`): the signal fires when the *spawning thread* exits.
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        registry().children.push((name.to_string(), child));
        Ok(Self {
            name: name.to_string(),
            pid,
        })
    }

    fn alive(&self) -> bool {
        let mut r = registry();
        r.children
            .iter_mut()
            .find(|(_, c)| c.id() == self.pid)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    fn stop(self) {
        let child = {
            let mut r = registry();
            let i = r.children.iter().position(|(_, c)| c.id() == self.pid);
            i.map(|i| r.children.remove(i))
        };
        if let Some((name, mut child)) = child {
            stop_child(&name, &mut child);
        }
        let _ = self.name;
    }
}

// ---------------------------------------------------------------------------------------
// /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the comm: state is index 0, utime index 11, stime index 12.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// A `/proc/<pid>/status` field in KiB (VmHWM, VmRSS).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "load_at_start": loadavg(),
    })
}

// ---------------------------------------------------------------------------------------
// Control plane

struct ControlPlane {
    dir: PathBuf,
    client: Client,
    apiserver_pid: u32,
    etcd_pid: u32,
}

impl ControlPlane {
    async fn up(dir: PathBuf) -> Result<Self> {
        registry().control_planes.push(dir.clone());
        // Blocking is fine: nothing else runs while the control plane starts.
        let out = Command::new("hack/controlplane.sh")
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .context("running hack/controlplane.sh up")?;
        ensure!(out.status.success(), "hack/controlplane.sh up failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .ok_or_else(|| anyhow!("no KUBECONFIG= line from hack/controlplane.sh up"))?;
        let kc = Kubeconfig::read_from(kubeconfig)?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        let pid =
            |f: &str| -> Result<u32> { Ok(std::fs::read_to_string(dir.join(f))?.trim().parse()?) };
        Ok(Self {
            apiserver_pid: pid("kube-apiserver.pid")?,
            etcd_pid: pid("etcd.pid")?,
            client,
            dir,
        })
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn cpu(&self) -> (f64, f64) {
        (
            cpu_seconds(self.apiserver_pid).unwrap_or(0.0),
            cpu_seconds(self.etcd_pid).unwrap_or(0.0),
        )
    }

    fn down(self) {
        let dir = self.dir;
        registry().control_planes.retain(|d| d != &dir);
        controlplane_down(&dir);
    }

    /// `apiserver_request_total` for mutating verbs: (resource[/subresource], verb) → count.
    async fn writes(&self) -> Result<BTreeMap<String, f64>> {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = self.client.request_text(req).await?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let labels = parse_labels(labels);
            let verb = labels.get("verb").map(String::as_str).unwrap_or("");
            if !matches!(
                verb,
                "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
            ) {
                continue;
            }
            let mut key = labels.get("resource").cloned().unwrap_or_default();
            if let Some(s) = labels.get("subresource").filter(|s| !s.is_empty()) {
                key = format!("{key}/{s}");
            }
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            *out.entry(format!("{key} {verb}")).or_default() += v;
        }
        Ok(out)
    }
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key, after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// `after - before - own`, zero entries dropped.
fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    own: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0) - own.get(k).copied().unwrap_or(0.0);
            (k.clone(), d)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// Resources kube-apiserver writes by itself: its identity lease (renewed every 10 s) and the
/// `kubernetes` Service's endpoints. The operator writes none of them (no lease with leader
/// election off), so they are reported but not counted as the operator's.
fn background(key: &str) -> bool {
    ["leases ", "endpoints ", "endpointslices "]
        .iter()
        .any(|p| key.starts_with(p))
}

fn operator_writes(d: &BTreeMap<String, f64>) -> f64 {
    d.iter()
        .filter(|(k, _)| !background(k))
        .map(|(_, v)| v)
        .sum()
}

async fn install_crd(client: &Client) -> Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&crd_yaml())?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("oos-bench").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = api.get(&name).await?;
        let established = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "CRD not Established after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

fn object_name(i: u64) -> String {
    format!("chat-{i:05}")
}
fn secret_name(i: u64) -> String {
    format!("chat-{i:05}-app")
}
fn secret_value(i: u64, version: u32) -> Vec<u8> {
    format!("bench-client-secret-{i}-v{version}").into_bytes()
}

async fn create_secrets(client: &Client, ns: &str, n: u64) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let s = Secret {
                    metadata: ObjectMeta {
                        name: Some(secret_name(i)),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "clientSecret".to_string(),
                        ByteString(secret_value(i, 1)),
                    )])),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &s).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn chat_configuration(i: u64) -> Result<ChatConfiguration> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "oos.chatops.dev/v1alpha1",
        "kind": "ChatConfiguration",
        "metadata": {"name": object_name(i)},
        "spec": {
            "type": "DingTalk",
            "regionId": REGION,
            "ramRole": "OOSServiceRole",
            "dingTalk": {
                "clientId": format!("dingbench{i:05}"),
                "templateId": "381c5aee-f8af-48a4-94be-cce587e42ea4.schema",
                "clientSecretRef": {"name": secret_name(i), "key": "clientSecret"},
            },
        },
    }))?)
}

/// Creates objects 0..n, `concurrency` in flight; the instant each create was acknowledged.
async fn apply_objects(
    client: &Client,
    ns: &str,
    n: u64,
    concurrency: usize,
) -> Result<HashMap<String, Instant>> {
    let api: Api<ChatConfiguration> = Api::namespaced(client.clone(), ns);
    let done: Vec<(String, Instant)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj = chat_configuration(i)?;
                api.create(&PostParams::default(), &obj).await?;
                Ok::<_, anyhow::Error>((object_name(i), Instant::now()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(done.into_iter().collect())
}

// ---------------------------------------------------------------------------------------
// Ready watch

#[derive(Default)]
struct ReadyLog {
    first_ready: HashMap<String, Instant>,
    synced: bool,
}

/// Watches ChatConfigurations of `ns`; records when each is first seen with Ready=True.
fn watch_ready(client: &Client, ns: &str) -> (Arc<Mutex<ReadyLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(ReadyLog::default()));
    let api: Api<ChatConfiguration> = Api::namespaced(client.clone(), ns);
    let l = log.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let objs: Vec<ChatConfiguration> = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                Ok(watcher::Event::InitDone) => {
                    l.lock().unwrap().synced = true;
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("bench: watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut g = l.lock().unwrap();
            for o in objs {
                let ready = o.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if ready {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    g.first_ready.entry(name).or_insert(now);
                }
            }
        }
    });
    (log, task)
}

async fn wait_synced(log: &Arc<Mutex<ReadyLog>>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.lock().unwrap().synced {
        ensure!(Instant::now() < deadline, "watch did not sync in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until `n` objects were seen Ready; the instant the last one was.
async fn wait_all_ready(
    log: &Arc<Mutex<ReadyLog>>,
    n: u64,
    timeout: Duration,
    what: &str,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let (count, last) = {
            let g = log.lock().unwrap();
            (
                g.first_ready.len() as u64,
                g.first_ready.values().max().copied(),
            )
        };
        if count >= n {
            return Ok(last.expect("n > 0"));
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: only {count} of {n} Ready after {} s",
                timeout.as_secs()
            );
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("bench: {what}: {count}/{n} Ready");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Emulator

struct Emulator {
    proc: Proc,
    endpoint: String,
    admin: String,
    http: reqwest::Client,
}

impl Emulator {
    async fn start(bin: &Path, log: &Path) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--access-key",
            &format!("{AK_ID}:{AK_SECRET}"),
        ]);
        let proc = Proc::spawn("oos-emulator", cmd, log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (endpoint, admin) = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let find = |p: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(p))
                    .map(str::to_string)
            };
            if let (Some(e), Some(a)) = (
                find("oos-emulator listening on "),
                find("oos-emulator admin on "),
            ) {
                break (e, a);
            }
            ensure!(proc.alive(), "oos-emulator exited; see {}", log.display());
            ensure!(
                Instant::now() < deadline,
                "oos-emulator printed no address in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            proc,
            endpoint,
            admin,
            http: reqwest::Client::new(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.admin))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        Ok(self
            .http
            .post(format!("{}{path}", self.admin))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Counters and request log cleared (state kept).
    async fn reset(&self) -> Result<()> {
        self.post("/reset", json!({})).await.map(|_| ())
    }

    async fn calls(&self) -> Result<BTreeMap<String, u64>> {
        Ok(serde_json::from_value(self.get("/calls").await?)?)
    }

    async fn calls_by_code(&self) -> Result<Value> {
        self.get("/calls?by=code").await
    }

    fn stop(self) {
        self.proc.stop();
    }
}

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}
fn call(calls: &BTreeMap<String, u64>, action: &str) -> u64 {
    calls.get(action).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Operator

struct Operator {
    proc: Proc,
    metrics_url: String,
    started: Instant,
}

struct OperatorFlags {
    qps: f64,
    burst: u32,
    concurrency: u16,
    resync: u64,
    namespace: String,
    extra: Vec<String>,
    env: Vec<String>,
}

impl OperatorFlags {
    fn args(&self, emulator: &Emulator, metrics: &str) -> Vec<String> {
        let mut a = vec![
            "--oos-endpoint".into(),
            emulator.endpoint.clone(),
            "--default-region".into(),
            REGION.into(),
            "--qps".into(),
            self.qps.to_string(),
            "--burst".into(),
            self.burst.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--resync-interval".into(),
            format!("{}s", self.resync),
            "--namespace".into(),
            self.namespace.clone(),
            "--operator-namespace".into(),
            "default".into(),
            "--metrics-addr".into(),
            metrics.into(),
        ];
        a.extend(self.extra.iter().cloned());
        a
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `--leader-elect=false` when the binary has the flag (a single process would also take the
/// lease within a second; off keeps lease renewals out of the write counts).
fn leader_elect_args(bin: &Path) -> Vec<String> {
    let help = Command::new(bin).arg("--help").output();
    match help {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("--leader-elect") => {
            vec!["--leader-elect=false".into()]
        }
        _ => Vec::new(),
    }
}

impl Operator {
    async fn start(
        bin: &Path,
        flags: &OperatorFlags,
        cp: &ControlPlane,
        emulator: &Emulator,
        log: &Path,
    ) -> Result<Self> {
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(bin);
        cmd.args(flags.args(emulator, &metrics))
            .env("KUBECONFIG", cp.kubeconfig())
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env_remove("RUST_LOG")
            .env_remove("OOS_ENDPOINT")
            .env_remove("POD_NAMESPACE");
        for kv in &flags.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            cmd.env(k, v);
        }
        let started = Instant::now();
        let proc = Proc::spawn("oos-chat-operator", cmd, log)?;
        let op = Self {
            proc,
            metrics_url: format!("http://{metrics}/metrics"),
            started,
        };
        // Up: its endpoint answers and its secret-hash key Secret exists (the controller starts
        // right after reading it).
        let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), "default");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            ensure!(op.proc.alive(), "operator exited; see {}", log.display());
            ensure!(
                Instant::now() < deadline,
                "operator not up in 30 s; see {}",
                log.display()
            );
            let healthy = http
                .get(format!("http://{metrics}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy
                && secrets
                    .get_opt("oos-chat-operator-secret-hash-key")
                    .await?
                    .is_some()
            {
                return Ok(op);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.proc.pid).unwrap_or(0.0)
    }

    fn hwm_mib(&self) -> f64 {
        status_kib(self.proc.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
    }

    fn rss_mib(&self) -> f64 {
        status_kib(self.proc.pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
    }

    /// Counter values from the operator's /metrics (name{labels} → value).
    async fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let text = reqwest::get(&self.metrics_url).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .filter(|(k, _)| k.contains("_total") || k.ends_with("_count") || k.ends_with("_sum"))
            .collect())
    }

    fn stop(self) {
        self.proc.stop();
    }
}

fn metric_sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------------------
// Statistics

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({
        "count": v.len(),
        "p50_s": round3(percentile(&v, 50.0)),
        "p90_s": round3(percentile(&v, 90.0)),
        "p99_s": round3(percentile(&v, 99.0)),
        "max_s": round3(v.last().copied().unwrap_or(f64::NAN)),
    })
}

/// Latency by when the object was applied, in `bucket`-second buckets: where stalls happened.
fn timeline(points: &[(f64, f64)], bucket: f64) -> Value {
    let mut buckets: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (at, lat) in points {
        buckets.entry((at / bucket) as u64).or_default().push(*lat);
    }
    Value::Array(
        buckets
            .into_iter()
            .map(|(b, mut v)| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                json!({
                    "applied_from_s": b as f64 * bucket,
                    "count": v.len(),
                    "p50_s": round3(percentile(&v, 50.0)),
                    "max_s": round3(v.last().copied().unwrap_or(f64::NAN)),
                })
            })
            .collect(),
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn floor_calls(n: u64) -> u64 {
    2 * n + n.div_ceil(PAGE)
}

fn btree_json<V: serde::Serialize>(m: &BTreeMap<String, V>) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------
// One size

struct Ctx<'a> {
    args: &'a Args,
    n: u64,
    log_dir: PathBuf,
    timeout: Duration,
}

async fn run_size(args: &Args, n: u64) -> Result<Value> {
    ensure!(n > 0, "sizes must be positive");
    let log_dir = args.log_dir.join(format!("n{n}"));
    std::fs::create_dir_all(&log_dir)?;
    let ctx = Ctx {
        args,
        n,
        log_dir,
        timeout: Duration::from_secs(args.timeout) + Duration::from_millis(200 * n),
    };
    let cp_dir = std::env::temp_dir().join(format!("oos-bench-cp-{}-{n}", std::process::id()));
    eprintln!("bench: N={n}: control plane in {}", cp_dir.display());
    let cp = ControlPlane::up(cp_dir).await?;
    let result = run_size_on(&ctx, &cp).await;
    cp.down();
    result
}

async fn run_size_on(ctx: &Ctx<'_>, cp: &ControlPlane) -> Result<Value> {
    let (args, n) = (ctx.args, ctx.n);
    let client = &cp.client;
    install_crd(client).await?;
    create_namespace(client, NAMESPACE).await?;
    let emulator = Emulator::start(&args.emulator_bin, &ctx.log_dir.join("emulator.log")).await?;
    let t = Instant::now();
    create_secrets(client, NAMESPACE, n).await?;
    eprintln!(
        "bench: N={n}: {n} Secrets in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut extra = leader_elect_args(&args.operator_bin);
    extra.extend(args.operator_args.iter().cloned());
    let flags = OperatorFlags {
        qps: args.qps,
        burst: args.burst,
        concurrency: args.concurrency,
        resync: args.resync_interval,
        namespace: NAMESPACE.into(),
        extra,
        env: args.operator_env.clone(),
    };
    let operator = Operator::start(
        &args.operator_bin,
        &flags,
        cp,
        &emulator,
        &ctx.log_dir.join("operator.log"),
    )
    .await?;
    let operator_args = flags.args(&emulator, "127.0.0.1:PORT").join(" ");

    let mut report = json!({
        "n": n,
        "operator_command": format!("oos-chat-operator {operator_args}"),
    });
    let phases = async {
        report["converge"] = converge(ctx, cp, &emulator, &operator).await?;
        report["steady"] = steady(ctx, cp, &emulator, &operator).await?;
        report["rotation"] = rotation(ctx, cp, &emulator, &operator).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    report["operator"] = json!({
        "peak_rss_mib": round2(operator.hwm_mib()),
        "rss_at_end_mib": round2(operator.rss_mib()),
        "cpu_s_total": round2(operator.cpu()),
        "uptime_s": round2(operator.started.elapsed().as_secs_f64()),
    });
    operator.stop();
    emulator.stop();
    phases?;

    let mut quota = Vec::new();
    for mode in args.qps_modes.iter().filter(|m| m.as_str() != "none") {
        quota.push(quota_phase(ctx, cp, &flags, mode).await?);
    }
    report["quota"] = Value::Array(quota);
    Ok(report)
}

/// Phase 1: from empty to all Ready.
async fn converge(
    ctx: &Ctx<'_>,
    cp: &ControlPlane,
    emulator: &Emulator,
    operator: &Operator,
) -> Result<Value> {
    let n = ctx.n;
    let (ready, watch) = watch_ready(&cp.client, NAMESPACE);
    wait_synced(&ready).await?;
    emulator.reset().await?;
    let writes0 = cp.writes().await?;
    let (api0, etcd0) = cp.cpu();
    let cpu0 = operator.cpu();
    let load_before = loadavg();
    eprintln!("bench: N={n}: applying {n} ChatConfigurations");

    let t0 = Instant::now();
    let applied = apply_objects(&cp.client, NAMESPACE, n, ctx.args.apply_concurrency).await?;
    let apply_done = applied.values().max().copied().unwrap_or(t0);
    let all_ready = wait_all_ready(&ready, n, ctx.timeout, "converge").await;
    watch.abort();
    let all_ready = all_ready?;

    let calls = emulator.calls().await?;
    let by_code = emulator.calls_by_code().await?;
    // The emulator's log of the last 10,000 requests, for timing breakdowns.
    std::fs::write(
        ctx.log_dir.join("converge-requests.json"),
        serde_json::to_vec(&emulator.get("/requests").await?)?,
    )?;
    let writes1 = cp.writes().await?;
    let own = BTreeMap::from([("chatconfigurations POST".to_string(), n as f64)]);
    let w = delta(&writes0, &writes1, &own);
    let (api1, etcd1) = cp.cpu();
    // (apply offset, latency, name) per object, for the timeline and the slowest below.
    let mut points: Vec<(f64, f64, &String)> = {
        let g = ready.lock().unwrap();
        applied
            .iter()
            .map(|(name, at)| {
                (
                    at.duration_since(t0).as_secs_f64(),
                    g.first_ready[name]
                        .saturating_duration_since(*at)
                        .as_secs_f64(),
                    name,
                )
            })
            .collect()
    };
    let lat: Vec<f64> = points.iter().map(|p| p.1).collect();
    points.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let slowest: Vec<Value> = points
        .iter()
        .take(10)
        .map(|(at, lat, name)| json!({"name": name, "applied_at_s": round3(*at), "latency_s": round3(*lat)}))
        .collect();
    let points: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let floor = floor_calls(n);
    let remote_total = total(&calls);
    let k8s_total = operator_writes(&w);
    // Floor of Kubernetes writes: per object one finalizer patch and one status write.
    let k8s_floor = 2 * n;
    Ok(json!({
        "apply_concurrency": ctx.args.apply_concurrency,
        "apply_window_s": round3(apply_done.duration_since(t0).as_secs_f64()),
        "all_ready_s": round3(all_ready.duration_since(t0).as_secs_f64()),
        "apply_to_ready": latency_summary(lat),
        "apply_to_ready_timeline": timeline(&points, 5.0),
        "slowest": slowest,
        "remote_calls": btree_json(&calls),
        "remote_calls_by_answer": by_code,
        "remote_calls_total": remote_total,
        "remote_floor": floor,
        "remote_ratio": round3(remote_total as f64 / floor as f64),
        "k8s_writes": btree_json(&w),
        "k8s_writes_total": k8s_total,
        "k8s_floor": k8s_floor,
        "k8s_ratio": round3(k8s_total / k8s_floor as f64),
        "operator_cpu_s": round2(operator.cpu() - cpu0),
        "apiserver_cpu_s": round2(api1 - api0),
        "etcd_cpu_s": round2(etcd1 - etcd0),
        "operator_peak_rss_mib": round2(operator.hwm_mib()),
        "load_before": load_before,
        "load_after": loadavg(),
    }))
}

/// Phase 2: no change for `steady_intervals` resync intervals.
async fn steady(
    ctx: &Ctx<'_>,
    cp: &ControlPlane,
    emulator: &Emulator,
    operator: &Operator,
) -> Result<Value> {
    let interval = Duration::from_secs(ctx.args.resync_interval);
    let k = ctx.args.steady_intervals;
    if k == 0 {
        return Ok(Value::Null);
    }
    eprintln!(
        "bench: N={}: settling {} s, then steady window {} s",
        ctx.n,
        interval.as_secs() * ctx.args.settle_intervals,
        interval.as_secs() * k
    );
    tokio::time::sleep(interval * ctx.args.settle_intervals as u32).await;
    emulator.reset().await?;
    let writes0 = cp.writes().await?;
    let m0 = operator.metrics().await?;
    let cpu0 = operator.cpu();
    let load_before = loadavg();
    tokio::time::sleep(interval * k as u32).await;
    let calls = emulator.calls().await?;
    let writes1 = cp.writes().await?;
    let m1 = operator.metrics().await?;
    let w = delta(&writes0, &writes1, &BTreeMap::new());
    let per = |x: f64| round2(x / k as f64) + 0.0;
    let reconciles = metric_sum(&m1, "oos_chat_operator_reconciles_total")
        - metric_sum(&m0, "oos_chat_operator_reconciles_total");
    let status_writes = metric_sum(&m1, "oos_chat_operator_status_writes_total")
        - metric_sum(&m0, "oos_chat_operator_status_writes_total");
    let remote_writes = call(&calls, "CreateChatConfiguration")
        + call(&calls, "UpdateChatConfiguration")
        + call(&calls, "DeleteChatConfiguration");
    Ok(json!({
        "window_s": interval.as_secs() * k,
        "intervals": k,
        "remote_calls": btree_json(&calls),
        "per_interval": {
            "list_pages": per(call(&calls, "ListChatConfigurations") as f64),
            "list_pages_target": ctx.n.div_ceil(PAGE),
            "gets": per(call(&calls, "GetChatConfiguration") as f64),
            "remote_writes": per(remote_writes as f64),
            "reconciles": per(reconciles),
            "status_writes": per(status_writes),
            "k8s_writes": per(operator_writes(&w)),
        },
        "k8s_writes": btree_json(&w),
        "operator_cpu_s": round2(operator.cpu() - cpu0),
        "load_before": load_before,
        "load_after": loadavg(),
    }))
}

/// Phase 3: Secret edits, one after another; each → its object's remote Update.
async fn rotation(
    ctx: &Ctx<'_>,
    cp: &ControlPlane,
    emulator: &Emulator,
    operator: &Operator,
) -> Result<Value> {
    let n = ctx.n;
    let r = (ctx.args.rotations as u64).min(n);
    if r == 0 {
        return Ok(Value::Null);
    }
    emulator.reset().await?;
    let writes0 = cp.writes().await?;
    let cpu0 = operator.cpu();
    let load_before = loadavg();
    let api: Api<Secret> = Api::namespaced(cp.client.clone(), NAMESPACE);
    let mut edited: HashMap<String, DateTime<Utc>> = HashMap::new();
    let t0 = Instant::now();
    for j in 0..r {
        let i = j * n / r;
        let patch = json!({"data": {"clientSecret": ByteString(secret_value(i, 2))}});
        api.patch(
            &secret_name(i),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        edited.insert(object_name(i), Utc::now());
    }
    let edit_window = t0.elapsed();
    let deadline = Instant::now() + ctx.timeout;
    let updates: HashMap<String, DateTime<Utc>> = loop {
        let log = emulator.get("/requests").await?;
        let mut seen = HashMap::new();
        for e in log.as_array().into_iter().flatten() {
            if e["action"] != "UpdateChatConfiguration" || e["status"] != 200 {
                continue;
            }
            let (Some(name), Some(time)) = (e["params"]["Name"].as_str(), e["time"].as_str())
            else {
                continue;
            };
            let Ok(at) = DateTime::parse_from_rfc3339(time) else {
                continue;
            };
            if edited.contains_key(name) {
                seen.entry(name.to_string())
                    .or_insert(at.with_timezone(&Utc));
            }
        }
        if seen.len() as u64 >= r {
            break seen;
        }
        ensure!(
            Instant::now() < deadline,
            "rotation: {} of {r} Updates after {} s",
            seen.len(),
            ctx.timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let all_done = t0.elapsed();
    // Let the status writes that follow each Update land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = emulator.calls().await?;
    let writes1 = cp.writes().await?;
    let own = BTreeMap::from([("secrets PATCH".to_string(), r as f64)]);
    let w = delta(&writes0, &writes1, &own);
    let lat: Vec<f64> = edited
        .iter()
        .map(|(name, at)| ((updates[name] - *at).num_milliseconds() as f64 / 1000.0).max(0.0))
        .collect();
    Ok(json!({
        "rotations": r,
        "edit_window_s": round3(edit_window.as_secs_f64()),
        "all_updated_s": round3(all_done.as_secs_f64()),
        "edit_to_update": latency_summary(lat),
        "remote_calls": btree_json(&calls),
        "k8s_writes": btree_json(&w),
        "operator_cpu_s": round2(operator.cpu() - cpu0),
        "load_before": load_before,
        "load_after": loadavg(),
    }))
}

fn qps_limit_for(args: &Args, n: u64) -> Result<u64> {
    if args.qps_limit == "auto" {
        Ok((n / 25).clamp(10, 100))
    } else {
        Ok(args
            .qps_limit
            .parse()
            .context("--qps-limit: a number or auto")?)
    }
}

/// Phase 4: N objects applied while no operator runs; a fresh emulator limited to Q requests/s;
/// operator start → all Ready, against the ideal floor/Q.
async fn quota_phase(
    ctx: &Ctx<'_>,
    cp: &ControlPlane,
    base: &OperatorFlags,
    mode: &str,
) -> Result<Value> {
    let n = ctx.n;
    let q = qps_limit_for(ctx.args, n)?;
    let ns = format!("{NAMESPACE}-quota-{mode}");
    let (qps, burst) = match mode {
        "unaware" => (base.qps, base.burst),
        "matched" => (q as f64, 1),
        other => bail!("unknown --qps-modes entry {other:?} (unaware, matched, none)"),
    };
    create_namespace(&cp.client, &ns).await?;
    let emulator = Emulator::start(
        &ctx.args.emulator_bin,
        &ctx.log_dir.join(format!("emulator-quota-{mode}.log")),
    )
    .await?;
    let result = async {
        emulator.post("/faults", json!({"qps_limit": q})).await?;
        eprintln!("bench: N={n}: quota phase ({mode}, Q={q}/s): applying {n} Secrets and objects");
        create_secrets(&cp.client, &ns, n).await?;
        apply_objects(&cp.client, &ns, n, 16).await?;
        let (ready, watch) = watch_ready(&cp.client, &ns);
        wait_synced(&ready).await?;
        emulator.reset().await?;
        let flags = OperatorFlags {
            qps,
            burst,
            concurrency: base.concurrency,
            resync: base.resync,
            namespace: ns.clone(),
            extra: base.extra.clone(),
            env: base.env.clone(),
        };
        let load_before = loadavg();
        let operator = Operator::start(
            &ctx.args.operator_bin,
            &flags,
            cp,
            &emulator,
            &ctx.log_dir.join(format!("operator-quota-{mode}.log")),
        )
        .await?;
        let t0 = operator.started;
        let ideal = floor_calls(n) as f64 / q as f64;
        let all = wait_all_ready(
            &ready,
            n,
            ctx.timeout + Duration::from_secs_f64(ideal * 3.0),
            "quota",
        )
        .await;
        watch.abort();
        let calls = emulator.calls().await?;
        let by_code = emulator.calls_by_code().await?;
        let cpu = operator.cpu();
        let hwm = operator.hwm_mib();
        let command = format!(
            "oos-chat-operator {}",
            flags.args(&emulator, "127.0.0.1:PORT").join(" ")
        );
        operator.stop();
        let wall = all?.duration_since(t0).as_secs_f64();
        Ok::<_, anyhow::Error>(json!({
            "mode": mode,
            "qps_limit": q,
            "operator_command": command,
            "wall_s": round3(wall),
            "ideal_s": round3(ideal),
            "ratio": round3(wall / ideal),
            "remote_calls": btree_json(&calls),
            "remote_calls_by_answer": by_code,
            "remote_calls_total": total(&calls),
            "remote_floor": floor_calls(n),
            "operator_cpu_s": round2(cpu),
            "operator_peak_rss_mib": round2(hwm),
            "load_before": load_before,
            "load_after": loadavg(),
        }))
    }
    .await;
    emulator.stop();
    result
}

// ---------------------------------------------------------------------------------------
// Report

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_summary(r: &Value) {
    let n = r["n"].as_u64().unwrap_or(0);
    let c = &r["converge"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("\n== N = {n} ==");
    println!("operator: {}", r["operator_command"].as_str().unwrap_or(""));
    println!(
        "converge: apply window {:.2} s, all Ready {:.2} s; apply→Ready p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
        f(&c["apply_window_s"]),
        f(&c["all_ready_s"]),
        f(&c["apply_to_ready"]["p50_s"]),
        f(&c["apply_to_ready"]["p90_s"]),
        f(&c["apply_to_ready"]["p99_s"]),
        f(&c["apply_to_ready"]["max_s"]),
    );
    if n == 1000 {
        println!(
            "  target 1k: p50 ≤ 1 s {} , p99 ≤ 3 s {}",
            mark(f(&c["apply_to_ready"]["p50_s"]) <= 1.0),
            mark(f(&c["apply_to_ready"]["p99_s"]) <= 3.0)
        );
    }
    let ratio = f(&c["remote_ratio"]);
    println!(
        "  remote calls {} = {} (floor {}, ratio {:.3}, target ≤ 1.1 {})",
        c["remote_calls_total"],
        c["remote_calls"],
        c["remote_floor"],
        ratio,
        mark(ratio <= 1.1)
    );
    println!(
        "  k8s writes {} = {} (floor 2N = {}, ratio {:.3})",
        c["k8s_writes_total"],
        c["k8s_writes"],
        c["k8s_floor"],
        f(&c["k8s_ratio"])
    );
    println!(
        "  operator CPU {:.2} s, apiserver {:.2} s, etcd {:.2} s; load {} → {}",
        f(&c["operator_cpu_s"]),
        f(&c["apiserver_cpu_s"]),
        f(&c["etcd_cpu_s"]),
        c["load_before"].as_str().unwrap_or(""),
        c["load_after"].as_str().unwrap_or("")
    );
    let s = &r["steady"]["per_interval"];
    if !s.is_null() {
        println!(
            "steady (per interval): List pages {} (target {}), Gets {} (target 0), remote writes {} (target 0), status writes {} (target 0), k8s writes {}, reconciles {}",
            s["list_pages"],
            s["list_pages_target"],
            s["gets"],
            s["remote_writes"],
            s["status_writes"],
            s["k8s_writes"],
            s["reconciles"]
        );
    }
    let rot = &r["rotation"];
    if !rot.is_null() {
        let p99 = f(&rot["edit_to_update"]["p99_s"]);
        println!(
            "rotation: {} edits in {:.2} s; edit→Update p50 {:.3} s, p99 {:.3} s (target ≤ 2 s {}); calls {}",
            rot["rotations"],
            f(&rot["edit_window_s"]),
            f(&rot["edit_to_update"]["p50_s"]),
            p99,
            mark(p99 <= 2.0),
            rot["remote_calls"]
        );
    }
    let hwm = f(&r["operator"]["peak_rss_mib"]);
    println!(
        "operator: peak RSS {:.1} MiB{}, CPU {:.1} s over {:.0} s",
        hwm,
        if n >= 5000 {
            format!(" (target ≤ 40 MiB at 5,000: {})", mark(hwm <= 40.0))
        } else {
            String::new()
        },
        f(&r["operator"]["cpu_s_total"]),
        f(&r["operator"]["uptime_s"]),
    );
    for q in r["quota"].as_array().into_iter().flatten() {
        let ratio = f(&q["ratio"]);
        println!(
            "quota ({}, Q = {}/s): wall {:.1} s / ideal {:.1} s = {:.3} (target ≤ 1.2 {}); calls {} by answer {}",
            q["mode"].as_str().unwrap_or(""),
            q["qps_limit"],
            f(&q["wall_s"]),
            f(&q["ideal_s"]),
            ratio,
            mark(ratio <= 1.2),
            q["remote_calls_total"],
            q["remote_calls_by_answer"]
        );
    }
}

async fn run(args: Args) -> Result<()> {
    for bin in [&args.operator_bin, &args.emulator_bin] {
        ensure!(
            bin.exists(),
            "{} missing: build first (hack/bench.sh does: cargo build --release -p oos-chat-operator -p oos-emulator --bins)",
            bin.display()
        );
    }
    let started = Utc::now();
    let mut out = json!({
        "started": started.to_rfc3339(),
        "machine": machine(),
        "args": format!("{:?}", std::env::args().skip(1).collect::<Vec<_>>()),
        "operator_flags": {"qps": args.qps, "burst": args.burst, "concurrency": args.concurrency,
                            "resync_interval_s": args.resync_interval},
        "sizes": [],
    });
    let path = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "target/bench/scale-{}.json",
            started.format("%Y%m%dT%H%M%SZ")
        ))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for &n in &args.sizes {
        let r = run_size(&args, n)
            .await
            .with_context(|| format!("N = {n}"))?;
        print_summary(&r);
        out["sizes"].as_array_mut().unwrap().push(r);
        out["machine"]["load_at_end"] = json!(loadavg());
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    }
    println!("\nresults: {}", path.display());
    Ok(())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = {
        let _guard = CleanupOnDrop;
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                r = run(args) => match r {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("bench: error: {e:#}");
                        1
                    }
                },
                _ = tokio::signal::ctrl_c() => { eprintln!("bench: interrupted; cleaning up"); 130 }
                _ = term.recv() => { eprintln!("bench: terminated; cleaning up"); 143 }
            }
        })
    };
    drop(runtime);
    std::process::exit(code);
}
