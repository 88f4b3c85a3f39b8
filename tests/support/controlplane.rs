//! One etcd + kube-apiserver per test binary.
//!
//! Lifecycle:
//! - Binaries come from `CONTROLPLANE_ASSETS` / `KUBEBUILDER_ASSETS`, else from
//!   `hack/controlplane.sh build` (a no-op when the cache matches the pinned go.sum).
//! - Children are spawned from one dedicated thread that lives as long as the process,
//!   each with `PR_SET_PDEATHSIG=SIGKILL`: the kernel kills them if the test binary dies
//!   abruptly. (PDEATHSIG fires when the *forking thread* exits, so a test thread, which
//!   ends with its test, must not spawn them.)
//! - A `libc::atexit` hook stops kube-apiserver, then etcd, and removes the temp dir when
//!   the harness exits, whether tests passed or panicked.
//! - Ports come from binding `127.0.0.1:0`; state lives in a per-process temp dir, so two
//!   test binaries can run side by side.
//! - The Kubernetes version is `CONTROLPLANE_K8S_VERSION` (default [`DEFAULT_K8S_VERSION`]);
//!   the script builds each version into its own cache dir.
//! - TLS is verified: a throwaway CA per start (openssl) signs the serving certificate for
//!   127.0.0.1/localhost; the kubeconfig carries the CA as `certificate-authority-data`, the
//!   readiness probe trusts only that CA, and the CA key is deleted after signing.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const START_ATTEMPTS: u32 = 3;
const DIR_PREFIX: &str = "oos-chat-cp-";
/// Token users in the apiserver's token file (see `write_auth_files`).
const ADMIN: &str = "admin";
const DEVELOPER: &str = "developer";
/// The Kubernetes version used when `CONTROLPLANE_K8S_VERSION` is unset (the `k8s-openapi`
/// feature the crate compiles against). Must equal `DEFAULT_K8S_VERSION` in the script.
pub const DEFAULT_K8S_VERSION: &str = "v1.36.3";

/// The Kubernetes version this test run asks for: `CONTROLPLANE_K8S_VERSION`, else the default.
pub fn k8s_version() -> String {
    std::env::var("CONTROLPLANE_K8S_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_K8S_VERSION.to_string())
}

/// A running control plane. Everything here is a path or URL; the bearer tokens live
/// only in the kubeconfig and token files (mode 0600), never in this struct.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    server: String,
    version: String,
    pids: [u32; 2],
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use (blocking, no runtime
/// needed). If it cannot start, every caller panics with the same reason instead of
/// retrying a 90 s startup per test.
pub fn control_plane() -> &'static ControlPlane {
    match CONTROL_PLANE.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(cp) => cp,
        Err(e) => panic!("could not start the test control plane: {e}"),
    }
}

impl ControlPlane {
    /// Admin kubeconfig (contexts `admin`, the default, and `developer`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>` of kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Process ids of kube-apiserver and etcd (for teardown tests). After
    /// [`ControlPlane::restart_apiserver`], the new kube-apiserver's.
    pub fn server_pids(&self) -> [u32; 2] {
        let r = running();
        let pid = |c: &Option<Child>| c.as_ref().map(Child::id);
        [
            pid(&r.apiserver).unwrap_or(self.pids[0]),
            pid(&r.etcd).unwrap_or(self.pids[1]),
        ]
    }

    /// Per-process state dir (logs: `etcd.log`, `kube-apiserver.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Kubernetes version requested for this run (see [`k8s_version`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// PEM of the CA that signed kube-apiserver's serving certificate (also in the kubeconfig).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("certs/ca.crt")
    }

    /// Admin `kube::Config`, for tests that tune timeouts etc. before building a client.
    pub async fn config(&self) -> kube::Config {
        self.config_for_context(ADMIN).await
    }

    /// A new admin (`system:masters`) client. Build one per test: a `Client` is bound to
    /// the tokio runtime it was created on, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> kube::Client {
        log_client(&self.server, ADMIN);
        kube::Client::try_from(self.config().await).expect("build admin client")
    }

    /// A client acting as `user`, authenticated but with no RBAC grants of its own:
    /// - `"developer"`: a real token user (groups: only `system:authenticated`);
    /// - any other name (e.g. `system:serviceaccount:ns:sa`): the admin impersonating it.
    pub async fn client_as(&self, user: &str) -> kube::Client {
        log_client(&self.server, user);
        let config = if user == DEVELOPER {
            self.config_for_context(DEVELOPER).await
        } else {
            let mut config = self.config().await;
            config.auth_info.impersonate = Some(user.to_string());
            config
        };
        kube::Client::try_from(config).expect("build client")
    }

    /// Creates a namespace named `<prefix>-<random>` and returns its name.
    pub async fn fresh_namespace(&self, prefix: &str) -> String {
        let mut prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(50)
            .collect();
        prefix = prefix.trim_matches('-').to_string();
        if prefix.is_empty() {
            prefix = "test".into();
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<Namespace> = Api::all(self.client().await);
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        created.metadata.name.expect("namespace has a name")
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`; add `--context developer` for the
    /// non-admin user. Uses `$KUBECTL`, else a kubectl built next to the control-plane
    /// binaries (`hack/controlplane.sh build kubectl`), else `kubectl` on PATH.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    async fn config_for_context(&self, context: &str) -> kube::Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("load kubeconfig")
    }
}

/// One log line per client (never a token). Besides telling which identity a test uses, it
/// gives a test's log capture something to capture: with a verified server certificate kube
/// logs nothing on its own (the old insecure kubeconfig made it warn "Server cert bypassed"
/// on every connection), and a clean reconcile logs nothing either.
fn log_client(server: &str, user: &str) {
    tracing::info!(
        target: "oos_chat_operator::test_support",
        %server,
        user,
        "kube client for the test control plane"
    );
}

// ---------------------------------------------------------------------------------------
// Process ownership and teardown

struct Running {
    apiserver: Option<Child>,
    etcd: Option<Child>,
    dir: Option<PathBuf>,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    apiserver: None,
    etcd: None,
    dir: None,
});

fn running() -> std::sync::MutexGuard<'static, Running> {
    // A panic while holding the lock must not stop teardown.
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

extern "C" fn teardown_at_exit() {
    // Unwinding out of an `extern "C"` fn aborts; teardown is best effort.
    let _ = std::panic::catch_unwind(|| {
        stop_children();
        if let Some(dir) = running().dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    });
}

/// Apiserver first, and wait for it: stopped together, kube-apiserver keeps retrying a
/// vanished etcd for a long time (and logs errors meanwhile).
fn stop_children() {
    let (apiserver, etcd) = {
        let mut r = running();
        (r.apiserver.take(), r.etcd.take())
    };
    if let Some(child) = apiserver {
        stop(child);
    }
    if let Some(child) = etcd {
        stop(child);
    }
}

/// SIGKILL and reap. The data is throwaway, so a graceful shutdown (about a second for
/// kube-apiserver) buys nothing; reaping before the next kill keeps the apiserver-first order.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that never exits, so PDEATHSIG only fires when the whole
/// test process dies.
fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("controlplane-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("start spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

// ---------------------------------------------------------------------------------------
// Startup

/// Starts on a plain thread: callers are usually inside a `#[tokio::test]` runtime, where
/// the blocking readiness probe could not run.
fn start() -> Result<ControlPlane> {
    let result = std::thread::Builder::new()
        .name("controlplane-start".into())
        .spawn(start_blocking)
        .context("start thread")?
        .join()
        .map_err(|_| anyhow!("control plane startup panicked"))
        .and_then(|r| r);
    if result.is_err() {
        // Nothing of a failed start may linger until exit.
        stop_children();
        if let Some(dir) = running().dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
    result
}

fn start_blocking() -> Result<ControlPlane> {
    let began = Instant::now();
    let assets = asset_dir()?;
    sweep_stale_dirs();

    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .context("create state dir")?
        .keep();
    fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
    running().dir = Some(dir.clone());
    register_teardown();

    let tokens = write_auth_files(&dir)?;
    let ca_pem = write_certs(&dir.join("certs"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime for the readiness probe")?;

    let mut last_err = None;
    for attempt in 1..=START_ATTEMPTS {
        match start_once(&assets, &dir, &tokens, &ca_pem, &rt) {
            Ok(server) => {
                let kubeconfig = write_kubeconfig(&dir, &server, &tokens, &ca_pem)?;
                eprintln!(
                    "control plane ready in {} ms at {server} (state: {})",
                    began.elapsed().as_millis(),
                    dir.display()
                );
                let pids = {
                    let r = running();
                    let pid = |c: &Option<Child>| c.as_ref().map_or(0, Child::id);
                    [pid(&r.apiserver), pid(&r.etcd)]
                };
                return Ok(ControlPlane {
                    pids,
                    kubectl: kubectl_path(&assets),
                    dir,
                    kubeconfig,
                    server,
                    version: k8s_version(),
                });
            }
            // Lost a port race (or similar early exit): retry on new ports.
            Err(StartError::Exited(e)) if attempt < START_ATTEMPTS => {
                eprintln!("control plane start attempt {attempt} failed, retrying: {e:#}");
                last_err = Some(e);
            }
            Err(StartError::Exited(e) | StartError::Other(e)) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("no start attempt made")))
}

fn register_teardown() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registers a plain `extern "C" fn()`; it runs once from exit().
        let rc = unsafe { libc::atexit(teardown_at_exit) };
        assert_eq!(rc, 0, "atexit registration failed");
    });
}

/// Binaries: an explicit asset dir, else the cache filled by `hack/controlplane.sh build`.
fn asset_dir() -> Result<PathBuf> {
    for var in ["CONTROLPLANE_ASSETS", "KUBEBUILDER_ASSETS"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(value);
            for bin in ["kube-apiserver", "etcd"] {
                ensure!(
                    dir.join(bin).is_file(),
                    "{var}={} has no {bin}",
                    dir.display()
                );
            }
            return Ok(dir);
        }
    }
    // The script owns the cache layout and the stamp check, so ask it every time; when
    // the cache is warm this is a hash of go.sum, not a build.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/controlplane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("build")
        .env("CONTROLPLANE_K8S_VERSION", k8s_version())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} build failed ({})",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8(out.stdout).context("script output is not UTF-8")?;
    let dir = stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .context("script printed no asset dir")?;
    ensure!(
        dir.join("kube-apiserver").is_file(),
        "no kube-apiserver in {}",
        dir.display()
    );
    Ok(dir)
}

fn kubectl_path(assets: &Path) -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|v| !v.is_empty()) {
        return k.into();
    }
    let built = assets.join("kubectl");
    if built.is_file() {
        built
    } else {
        "kubectl".into()
    }
}

/// Removes state dirs left by test binaries that were killed before their atexit ran
/// (their processes died with them through PDEATHSIG).
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(owner) = fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

struct Tokens {
    admin: String,
    developer: String,
}

/// Service-account signing key and the static token file:
/// `admin` in `system:masters`, `developer` with no groups (the apiserver adds only
/// `system:authenticated`).
fn write_auth_files(dir: &Path) -> Result<Tokens> {
    let key = dir.join("sa.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run openssl (needed for the service-account key)")?;
    ensure!(status.success(), "openssl genrsa failed ({status})");

    let tokens = Tokens {
        admin: hex::encode(rand::random::<[u8; 32]>()),
        developer: hex::encode(rand::random::<[u8; 32]>()),
    };
    write_private(
        &dir.join("tokens.csv"),
        &format!(
            "{},{ADMIN},{ADMIN}-uid,\"system:masters\"\n{},{DEVELOPER},{DEVELOPER}-uid\n",
            tokens.admin, tokens.developer
        ),
    )?;
    Ok(tokens)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// A CA and a serving certificate for 127.0.0.1/localhost signed by it, in `certs`. Returns
/// the CA's PEM. The CA key is removed once it has signed: nothing else can be issued under it.
fn write_certs(certs: &Path) -> Result<String> {
    fs::create_dir_all(certs)?;
    let openssl = |args: &[&str]| -> Result<()> {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(certs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run openssl (needed for the CA and the serving certificate)")?;
        ensure!(status.success(), "openssl {} failed ({status})", args[0]);
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_subject = format!(
        "/CN=oos-chat-test-ca-{}",
        hex::encode(rand::random::<[u8; 4]>())
    );
    let mut ca_args = vec![
        "req",
        "-x509",
        "-sha256",
        "-days",
        "30",
        "-subj",
        &ca_subject,
    ];
    ca_args.extend(ec);
    ca_args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&ca_args)?;
    let mut csr_args = vec!["req", "-new", "-sha256", "-subj", "/CN=kube-apiserver"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", "serving.key", "-out", "serving.csr"]);
    openssl(&csr_args)?;
    fs::write(
        certs.join("serving.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let serial = format!("0x{}", hex::encode(rand::random::<[u8; 16]>()));
    openssl(&[
        "x509",
        "-req",
        "-sha256",
        "-days",
        "30",
        "-in",
        "serving.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        &serial,
        "-extfile",
        "serving.ext",
        "-out",
        "serving.crt",
    ])?;
    for f in ["ca.key", "serving.csr", "serving.ext"] {
        fs::remove_file(certs.join(f))?;
    }
    fs::read_to_string(certs.join("ca.crt")).context("read ca.crt")
}

/// Standard base64 with padding (kubeconfig `*-data` fields).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn write_kubeconfig(dir: &Path, server: &str, tokens: &Tokens, ca_pem: &str) -> Result<PathBuf> {
    let path = dir.join("kubeconfig");
    write_private(
        &path,
        &format!(
            "apiVersion: v1
kind: Config
clusters:
- name: oos-chat-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {ADMIN}
  user:
    token: {admin}
- name: {DEVELOPER}
  user:
    token: {developer}
contexts:
- name: {ADMIN}
  context: {{cluster: oos-chat-test, user: {ADMIN}}}
- name: {DEVELOPER}
  context: {{cluster: oos-chat-test, user: {DEVELOPER}}}
current-context: {ADMIN}
",
            admin = tokens.admin,
            developer = tokens.developer,
            ca = base64(ca_pem.as_bytes()),
        ),
    )?;
    Ok(path)
}

enum StartError {
    /// A process exited during startup (e.g. a port was taken meanwhile): retryable.
    Exited(anyhow::Error),
    /// Timeout or setup failure: terminal.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Other(e.into())
    }
}

/// Three distinct free loopback ports (all bound at once so they differ).
fn free_ports() -> io::Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    Ok([
        listeners[0].local_addr()?.port(),
        listeners[1].local_addr()?.port(),
        listeners[2].local_addr()?.port(),
    ])
}

fn server_command(bin: &Path, log: &Path, args: Vec<OsString>) -> io::Result<Command> {
    let log = fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

fn start_once(
    assets: &Path,
    dir: &Path,
    tokens: &Tokens,
    ca_pem: &str,
    rt: &tokio::runtime::Runtime,
) -> Result<String, StartError> {
    let [etcd_port, peer_port, api_port] = free_ports()?;
    let data = dir.join("etcd-data");
    let certs = dir.join("certs");
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data)?;

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd_args: Vec<OsString> = vec![
        "--name".into(),
        "default".into(),
        "--data-dir".into(),
        data.into(),
        // Throwaway data: skipping fsync makes every write (and startup) much faster.
        "--unsafe-no-fsync".into(),
        "--log-level".into(),
        "warn".into(),
        "--listen-client-urls".into(),
        etcd_url.clone().into(),
        "--advertise-client-urls".into(),
        etcd_url.clone().into(),
        "--listen-peer-urls".into(),
        peer_url.clone().into(),
        "--initial-advertise-peer-urls".into(),
        peer_url.clone().into(),
        "--initial-cluster".into(),
        format!("default={peer_url}").into(),
    ];
    let sa_key = dir.join("sa.key");
    let apiserver_args: Vec<OsString> = vec![
        "--etcd-servers".into(),
        etcd_url.clone().into(),
        "--bind-address".into(),
        "127.0.0.1".into(),
        // No Endpoints for the `kubernetes` Service (no nodes anyway). Replaces
        // `--advertise-address 127.0.0.1`, which v1.37 refuses with the default reconciler.
        "--endpoint-reconciler-type".into(),
        "none".into(),
        "--secure-port".into(),
        api_port.to_string().into(),
        // Serving certificate signed by this dir's CA (see `write_certs`).
        "--tls-cert-file".into(),
        certs.join("serving.crt").into(),
        "--tls-private-key-file".into(),
        certs.join("serving.key").into(),
        "--token-auth-file".into(),
        dir.join("tokens.csv").into(),
        "--authorization-mode".into(),
        "RBAC".into(),
        // As in hardened clusters: setting an ownerReference with blockOwnerDeletion needs
        // `update` on the owner's `finalizers` subresource (the operator's RBAC must say so).
        "--enable-admission-plugins".into(),
        "OwnerReferencesPermissionEnforcement".into(),
        "--service-account-issuer".into(),
        "https://kubernetes.default.svc.cluster.local".into(),
        "--service-account-key-file".into(),
        sa_key.clone().into(),
        "--service-account-signing-key-file".into(),
        sa_key.into(),
        "--service-cluster-ip-range".into(),
        "10.0.0.0/24".into(),
    ];

    let etcd = spawn_owned(server_command(
        &assets.join("etcd"),
        &dir.join("etcd.log"),
        etcd_args,
    )?)
    .context("spawn etcd")?;
    running().etcd = Some(etcd);
    *apiserver_spec() = Some(ApiserverSpec {
        bin: assets.join("kube-apiserver"),
        args: apiserver_args.clone(),
        port: api_port,
        etcd_url,
        ca_pem: ca_pem.to_string(),
        dir: dir.to_path_buf(),
    });
    let apiserver = spawn_owned(server_command(
        &assets.join("kube-apiserver"),
        &dir.join("kube-apiserver.log"),
        apiserver_args,
    )?)
    .context("spawn kube-apiserver")?;
    running().apiserver = Some(apiserver);

    let server = format!("https://127.0.0.1:{api_port}");
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("parse the CA")?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(3))
        .build()
        .context("build readiness HTTP client")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(which) = exited_child() {
            stop_children();
            return Err(StartError::Exited(anyhow!(
                "{which} exited during startup; log tails:\n{}",
                log_tails(dir)
            )));
        }
        let ready = rt.block_on(async {
            let get = |path: &str| {
                http.get(format!("{server}{path}"))
                    .bearer_auth(&tokens.admin)
                    .send()
            };
            // /readyz covers etcd and the post-start hooks (RBAC bootstrap roles etc.);
            // the `default` namespace is created by a controller shortly after.
            match get("/readyz").await {
                Ok(r) if r.status().is_success() => {
                    matches!(get("/api/v1/namespaces/default").await, Ok(r) if r.status().is_success())
                }
                _ => false,
            }
        });
        if ready {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_children();
    Err(StartError::Other(anyhow!(
        "not ready within {READY_TIMEOUT:?}; log tails:\n{}",
        log_tails(dir)
    )))
}

/// Name of a child that has already exited, if any.
fn exited_child() -> Option<&'static str> {
    let mut r = running();
    if let Some(c) = r.etcd.as_mut()
        && !matches!(c.try_wait(), Ok(None))
    {
        return Some("etcd");
    }
    if let Some(c) = r.apiserver.as_mut()
        && !matches!(c.try_wait(), Ok(None))
    {
        return Some("kube-apiserver");
    }
    None
}

fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["etcd.log", "kube-apiserver.log"] {
        let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        out.push_str(&format!("--- {name}\n{}\n", tail.join("\n")));
    }
    out
}

/// Retry helper for eventually-consistent checks in tests: polls `f` until it returns
/// `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Drills: kube-apiserver restarts, a second kube-apiserver, etcd compaction

/// How the running kube-apiserver was started, so that it can be started again alone on the
/// same etcd, port and certificates (or a second one beside it on another port).
struct ApiserverSpec {
    bin: PathBuf,
    args: Vec<OsString>,
    port: u16,
    etcd_url: String,
    ca_pem: String,
    dir: PathBuf,
}

fn apiserver_spec() -> std::sync::MutexGuard<'static, Option<ApiserverSpec>> {
    static SPEC: Mutex<Option<ApiserverSpec>> = Mutex::new(None);
    SPEC.lock().unwrap_or_else(|p| p.into_inner())
}

/// `args` with the value of `--secure-port` replaced by `port`, plus `extra`.
fn apiserver_args_on(args: &[OsString], port: u16, extra: &[&str]) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len() + extra.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        out.push(a.clone());
        if a == "--secure-port" {
            it.next();
            out.push(port.to_string().into());
        }
    }
    out.extend(extra.iter().map(OsString::from));
    out
}

/// The admin bearer token, read back from the token file (it is never kept in memory here).
fn admin_token(dir: &Path) -> Result<String> {
    let text = fs::read_to_string(dir.join("tokens.csv")).context("read tokens.csv")?;
    text.lines()
        .find(|l| l.split(',').nth(1) == Some(ADMIN))
        .and_then(|l| l.split(',').next())
        .map(str::to_string)
        .context("no admin token in tokens.csv")
}

/// Polls `server`'s `/readyz` (and the `default` namespace) until both answer, or `child`
/// exits, or `timeout` passes.
async fn wait_apiserver_ready(
    server: &str,
    ca_pem: &str,
    token: &str,
    timeout: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<()> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("parse the CA")?;
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(3))
        .build()
        .context("build readiness HTTP client")?;
    let deadline = Instant::now() + timeout;
    loop {
        ensure!(
            !exited(),
            "kube-apiserver at {server} exited during start-up"
        );
        let get = |path: &str| {
            http.get(format!("{server}{path}"))
                .bearer_auth(token)
                .send()
        };
        if let Ok(r) = get("/readyz").await
            && r.status().is_success()
            && matches!(get("/api/v1/namespaces/default").await, Ok(r) if r.status().is_success())
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "kube-apiserver at {server} not ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A second kube-apiserver on the same etcd (another port, the same certificates and tokens),
/// as in an HA control plane. Killed when dropped.
pub struct SideApiserver {
    child: Option<Child>,
    server: String,
    kubeconfig: PathBuf,
}

impl SideApiserver {
    /// `https://127.0.0.1:<port>` of this kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An admin client of this kube-apiserver.
    pub async fn client(&self) -> kube::Client {
        log_client(&self.server, ADMIN);
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("load kubeconfig");
        kube::Client::try_from(config).expect("build admin client")
    }
}

impl Drop for SideApiserver {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// kube-apiserver with the original arguments on `port` (plus `extra`), appending to `log`.
fn apiserver_command(
    spec: &ApiserverSpec,
    port: u16,
    extra: &[&str],
    log: &str,
) -> io::Result<Command> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join(log))?;
    let mut cmd = Command::new(&spec.bin);
    cmd.args(apiserver_args_on(&spec.args, port, extra))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// The readiness-probe inputs of the recorded kube-apiserver: CA and admin token.
fn probe_inputs() -> Result<(String, String)> {
    let spec = apiserver_spec();
    let spec = spec.as_ref().context("the control plane never started")?;
    Ok((spec.ca_pem.clone(), admin_token(&spec.dir)?))
}

impl ControlPlane {
    /// SIGKILLs kube-apiserver (etcd keeps running); [`ControlPlane::start_apiserver`] brings it
    /// back on the same port.
    pub fn kill_apiserver(&self) {
        let child = running().apiserver.take();
        if let Some(child) = child {
            stop(child);
        }
    }

    /// Starts kube-apiserver again with its original arguments (plus `extra`) on the same etcd,
    /// port and certificates, and waits until it serves. Returns how long that took.
    pub async fn start_apiserver(&self, extra: &[&str]) -> Result<Duration> {
        let began = Instant::now();
        ensure!(
            running().apiserver.is_none(),
            "kube-apiserver is running; kill it first"
        );
        let (ca_pem, token) = probe_inputs()?;
        for attempt in 1..=START_ATTEMPTS {
            let cmd = {
                let spec = apiserver_spec();
                let spec = spec.as_ref().context("the control plane never started")?;
                apiserver_command(spec, spec.port, extra, "kube-apiserver.log")?
            };
            let child = spawn_owned(cmd).context("spawn kube-apiserver")?;
            running().apiserver = Some(child);
            let exited = || {
                let mut r = running();
                r.apiserver
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
            };
            match wait_apiserver_ready(&self.server, &ca_pem, &token, READY_TIMEOUT, exited).await {
                Ok(()) => return Ok(began.elapsed()),
                // The port may not be free yet right after the kill: try again.
                Err(e) if attempt < START_ATTEMPTS => {
                    eprintln!("kube-apiserver restart attempt {attempt} failed: {e:#}");
                    self.kill_apiserver();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    self.kill_apiserver();
                    return Err(e.context(format!(
                        "restarting kube-apiserver; log tails:\n{}",
                        log_tails(&self.dir)
                    )));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// [`ControlPlane::kill_apiserver`] then [`ControlPlane::start_apiserver`].
    pub async fn restart_apiserver(&self, extra: &[&str]) -> Result<Duration> {
        self.kill_apiserver();
        self.start_apiserver(extra).await
    }

    /// A second kube-apiserver on the same etcd, on a new port, with the original arguments
    /// plus `extra`; ready when returned.
    pub async fn side_apiserver(&self, extra: &[&str]) -> Result<SideApiserver> {
        let (ca_pem, token) = probe_inputs()?;
        let port = free_ports()?[0];
        let cmd = {
            let spec = apiserver_spec();
            let spec = spec.as_ref().context("the control plane never started")?;
            apiserver_command(spec, port, extra, &format!("kube-apiserver-{port}.log"))?
        };
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = self.dir.join(format!("kubeconfig-{port}"));
        let main = fs::read_to_string(&self.kubeconfig).context("read kubeconfig")?;
        write_private(
            &kubeconfig,
            &main.replace(
                &format!("server: {}", self.server),
                &format!("server: {server}"),
            ),
        )?;
        let mut child = spawn_owned(cmd).context("spawn the second kube-apiserver")?;
        let exited = || !matches!(child.try_wait(), Ok(None));
        if let Err(e) = wait_apiserver_ready(&server, &ca_pem, &token, READY_TIMEOUT, exited).await
        {
            stop(child);
            return Err(e);
        }
        Ok(SideApiserver {
            child: Some(child),
            server,
            kubeconfig,
        })
    }

    /// Compacts etcd's history up to its current revision (physically), through etcd's JSON
    /// gateway: a watch resumed from any older resourceVersion can then only be answered with
    /// 410 Gone. Returns the revision.
    pub async fn compact_etcd(&self) -> Result<i64> {
        let url = apiserver_spec()
            .as_ref()
            .context("the control plane never started")?
            .etcd_url
            .clone();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        // A range over the single key "\0" answers nothing but the header's revision.
        let range: serde_json::Value = http
            .post(format!("{url}/v3/kv/range"))
            .json(&serde_json::json!({"key": base64(b"\0")}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("no revision in {range}"))?;
        http.post(format!("{url}/v3/kv/compaction"))
            .json(&serde_json::json!({"revision": revision.to_string(), "physical": true}))
            .send()
            .await?
            .error_for_status()
            .context("etcd compaction")?;
        Ok(revision)
    }
}
