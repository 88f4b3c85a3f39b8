//! Fault drills: the operator binary (leader election on, as shipped) and the `oos-emulator`
//! binary (on a `--state-file`) on a real kube-apiserver + etcd, through a seeded random run of
//! creates, spec changes, Secret rotations and deletions (Delete and Orphan policies) while:
//!
//! - the emulator answers ~20 % of requests with a fault (500 `InternalError`, 503
//!   `ServiceUnavailable`, `Throttling.User`, a stall past the operator's `--oos-timeout`, a
//!   connection reset before or after the commit);
//! - the operator is `kill -9`ed at random moments and started again (same pod name);
//! - the emulator is `kill -9`ed and started again on the same state file and port;
//! - kube-apiserver is `kill -9`ed and started again on the same etcd and port: the operator
//!   must carry on without restarting (same pid);
//! - the operator's watches expire: its kube-apiserver goes away, objects and Secrets change
//!   through a second kube-apiserver, etcd is compacted, and the first one comes back, so the
//!   resumed watches can only get 410 Gone and must re-list; what changed in the gap must
//!   converge before the drill goes on.
//!
//! Then faults stop and the drill waits until the remote set (`GET /state`, secrets from the
//! state file) is exactly what the objects say: each live object's remote with its last spec
//! and Secret, the remotes of Orphan-policy deletions kept, nothing else (no leak, no
//! duplicate Create, no Delete or Update of a remote no object owns: a few foreign remotes and
//! one that an `adoptionPolicy: Refuse` object collides with stay byte for byte as they were),
//! no object stuck on its finalizer, every object Ready.
//!
//! What the random drill found runs deterministically beside it, one scenario each:
//! `zombie_create_after_kill_and_delete_is_not_leaked`,
//! `held_attempt_after_a_quick_delete_is_not_leaked`, `lost_then_throttled_create_keeps_its_intent`,
//! `resumed_create_updated_then_killed_stays_owned` and
//! `identical_foreign_remote_is_not_taken_over_after_a_lost_create`.
//!
//! Size and seed: `DRILL_OPS` (default 40), `DRILL_KILLS` (3), `DRILL_EMULATOR_RESTARTS` (1),
//! `DRILL_SEED` (random; always printed, so a failing run can be replayed). `hack/drills.sh`
//! runs the full size (200 operations, 10 kills, 3 emulator restarts). The report goes straight to stderr, so it shows even
//! when the test passes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use oos_chat_operator::crd::ChatConfiguration;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::control_plane;
use support::harness::{AK_ID, AK_SECRET, REGION, install_crd, oos_client, remote_input};
use support::process::{OperatorProcess, scoped_args};

/// The drill's own report lines: written to the stderr handle directly (not `eprintln!`, which
/// the test harness captures), so `make test` shows them.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        let _ = writeln!(std::io::stderr().lock(), "drill: {line}");
    }};
}

const POD_NAME: &str = "drill-operator";
const OOS_TIMEOUT: &str = "1s";
/// Past `--oos-timeout` (the client gives up, the service still commits), and within twice it:
/// how long the operator assumes the service may hold a request (`Settings::create_settle`).
const STALL_MS: u64 = 1800;
const FOREIGN: [&str; 3] = ["foreign-alpha", "foreign-bravo", "foreign-charlie"];
/// An object with `adoptionPolicy: Refuse` whose name a foreign remote already holds.
const COLLIDER: &str = "collider";
const ROLES: [&str; 3] = ["OOSServiceRole", "OOSDrillRole", "OOSOpsRole"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The emulator binary

/// `OOS_EMULATOR_BIN`, else `oos-emulator` next to this test's target directory, built with
/// cargo first unless it is newer than every emulator source (as after `cargo test --workspace`).
fn emulator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OOS_EMULATOR_BIN").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/drills-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("oos-emulator");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source =
        newest_mtime(&root.join("crates/oos-emulator")).max(newest_mtime(&root.join("Cargo.lock")));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_some_and(|b| Some(b) >= newest_source) {
        return bin;
    }
    let target_dir = profile_dir.parent().expect("target root");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-p", "oos-emulator", "--bin", "oos-emulator"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(root);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for oos-emulator");
    assert!(status.success(), "cargo build -p oos-emulator: {status}");
    bin
}

fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `oos-emulator` process, on fixed ports and one state file across restarts.
struct Emulator {
    bin: PathBuf,
    state_file: PathBuf,
    api_port: u16,
    admin_port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Emulator {
    fn new(bin: PathBuf, state_file: PathBuf) -> Self {
        Self {
            bin,
            state_file,
            api_port: free_port(),
            admin_port: free_port(),
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        for attempt in 1..=20 {
            let mut child = Command::new(&self.bin)
                .args(["--listen", &format!("127.0.0.1:{}", self.api_port)])
                .args(["--admin-listen", &format!("127.0.0.1:{}", self.admin_port)])
                .arg("--state-file")
                .arg(&self.state_file)
                .args(["--access-key", &format!("{AK_ID}:{AK_SECRET}")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn oos-emulator");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) if line.starts_with("oos-emulator admin on") => {
                        up = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // Exited (a port not released yet): try again.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            if up {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(attempt < 20, "oos-emulator did not start on its ports");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.admin()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn set_faults(&self, faults: &Value) {
        let r = self
            .http
            .post(format!("{}/faults", self.admin()))
            .body(faults.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    async fn clear_faults(&self) {
        let r = self
            .http
            .delete(format!("{}/faults", self.admin()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// `GET /state`: name → the (masked) configuration as the admin API shows it.
    async fn state(&self) -> BTreeMap<String, Value> {
        self.get("/state").await["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    /// The stored client secret of each configuration, from the state file itself (the admin
    /// API masks secrets).
    fn stored_secrets(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(&self.state_file).unwrap_or_default();
        let Ok(file) = serde_json::from_str::<Value>(&text) else {
            return BTreeMap::new();
        };
        file["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let cfg = &r["configuration"];
                let secret = cfg["DingTalkClientSecret"]
                    .as_str()
                    .or_else(|| cfg["WeChatClientSecret"].as_str())?;
                Some((r["name"].as_str()?.to_string(), secret.to_string()))
            })
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the emulator saw, kept across its restarts (each one starts its counters afresh).
#[derive(Default)]
struct Seen {
    /// action → answer → count, from `GET /calls?by=code`.
    by_code: BTreeMap<String, BTreeMap<String, u64>>,
    /// `GET /requests` of every emulator lifetime.
    requests: Vec<Value>,
    /// Requests that fell out of the emulator's 10,000-entry log.
    dropped: u64,
}

impl Seen {
    async fn collect(&mut self, e: &Emulator) {
        let by_code = e.get("/calls?by=code").await;
        for (action, answers) in by_code.as_object().unwrap() {
            for (answer, n) in answers.as_object().unwrap() {
                *self
                    .by_code
                    .entry(action.clone())
                    .or_default()
                    .entry(answer.clone())
                    .or_default() += n.as_u64().unwrap_or(0);
            }
        }
        let requests = e.get("/requests").await;
        let requests = requests.as_array().unwrap();
        self.dropped += requests
            .first()
            .and_then(|r| r["seq"].as_u64())
            .unwrap_or(0);
        self.requests.extend(requests.iter().cloned());
    }

    /// Fault answers by kind over all actions (`OK` and the service's own answers, such as
    /// `EntityAlreadyExists…`, left out).
    fn faults(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for answers in self.by_code.values() {
            for (answer, n) in answers {
                if matches!(
                    answer.as_str(),
                    "InternalError" | "ServiceUnavailable" | "Throttling.User" | "stall" | "reset"
                ) {
                    *out.entry(answer.clone()).or_default() += n;
                }
            }
        }
        out
    }

    fn answers(&self, action: &str) -> BTreeMap<String, u64> {
        self.by_code.get(action).cloned().unwrap_or_default()
    }

    /// Requests of `action` naming `name`.
    fn requests_for<'a>(
        &'a self,
        action: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.requests.iter().filter(move |r| {
            r["action"].as_str() == Some(action) && r["params"]["Name"].as_str() == Some(name)
        })
    }
}

/// For each object a problem names: its requests as the emulator logged them and the operator
/// log lines (of every process) about it, in order.
fn history(problems: &[String], seen: &Seen, logs: &str) -> String {
    let names: BTreeSet<&str> = problems
        .iter()
        .filter_map(|p| p.split(':').next())
        .filter(|n| n.starts_with('d') || *n == COLLIDER)
        .collect();
    let mut out = String::new();
    for name in names {
        out.push_str(&format!("--- {name}: emulator requests\n"));
        for r in &seen.requests {
            if r["params"]["Name"].as_str() == Some(name) {
                out.push_str(&format!(
                    "{} {} status {} code {} fault {}\n",
                    r["time"].as_str().unwrap_or(""),
                    r["action"].as_str().unwrap_or(""),
                    r["status"],
                    r["code"],
                    r["fault"]
                ));
            }
        }
        out.push_str(&format!("--- {name}: operator log\n"));
        let needle = format!("/{name} ");
        let quoted = format!("name={name} ");
        for l in logs.lines().filter(|l| {
            l.contains(&needle) || l.contains(&quoted) || l.contains(&format!("\"{name}\""))
        }) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Whether a request was held by a stall fault (its client may have given up meanwhile).
fn held(r: &Value) -> bool {
    r["fault"].as_str().is_some_and(|f| f.starts_with("stall"))
}

/// Whether a logged request changed the store: its action succeeded (no error code) and no
/// fault stopped it before the commit.
fn committed(r: &Value) -> bool {
    let fault = r["fault"].as_str().unwrap_or("");
    r["code"].is_null() && !(fault == "reset" || fault.starts_with("error "))
}

// ---------------------------------------------------------------------------------------
// The objects and what the remote set must become

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    DingTalk,
    WeChat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DingTalk => "DingTalk",
            Kind::WeChat => "WeChat",
        }
    }
    fn key(self, field: &str) -> String {
        format!("{}{field}", self.name())
    }
}

#[derive(Clone, Debug)]
struct Obj {
    name: String,
    kind: Kind,
    /// `None`: the operator's default (Delete).
    policy: Option<&'static str>,
    template: String,
    role: &'static str,
    secret: String,
    /// Every (template, role) the spec ever had: an orphaned remote holds one of them.
    history: Vec<(String, &'static str)>,
}

impl Obj {
    fn client_id(&self) -> String {
        format!("cid-{}", self.name)
    }

    fn secret_name(&self) -> String {
        format!("s-{}", self.name)
    }

    fn manifest(&self) -> Value {
        let platform = json!({
            "clientId": self.client_id(),
            "templateId": self.template,
            "clientSecretRef": {"name": self.secret_name(), "key": "clientSecret"},
        });
        let mut spec = json!({"type": self.kind.name(), "ramRole": self.role});
        match self.kind {
            Kind::DingTalk => spec["dingTalk"] = platform,
            Kind::WeChat => spec["weChat"] = platform,
        }
        if let Some(p) = self.policy {
            spec["deletionPolicy"] = json!(p);
        }
        json!({
            "apiVersion": "oos.chatops.dev/v1alpha1",
            "kind": "ChatConfiguration",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }

    fn deletes_remote(&self) -> bool {
        self.policy != Some("Orphan")
    }
}

#[derive(Clone)]
struct Apis {
    objects: Api<ChatConfiguration>,
    secrets: Api<Secret>,
}

impl Apis {
    fn new(client: Client, ns: &str) -> Self {
        Self {
            objects: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client, ns),
        }
    }
}

/// What every deterministic scenario starts from: the CRD, a fresh namespace, and the emulator
/// binary running on a state file of its own (kept while `_dir` lives).
struct Scenario {
    ns: String,
    apis: Apis,
    emulator: Emulator,
    _dir: tempfile::TempDir,
}

impl Scenario {
    async fn start(prefix: &str) -> Self {
        let cp = control_plane();
        let client = cp.client().await;
        install_crd(&client).await;
        let ns = cp.fresh_namespace(prefix).await;
        let apis = Apis::new(client, &ns);
        let dir = tempfile::tempdir().unwrap();
        let mut emulator = Emulator::new(emulator_bin(), dir.path().join("state.json"));
        emulator.start();
        Scenario {
            ns,
            apis,
            emulator,
            _dir: dir,
        }
    }
}

/// Retries a Kubernetes call through kube-apiserver restarts.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(what, error = %e, "retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

async fn put_secret(apis: &Apis, o: &Obj) {
    let m = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": o.secret_name()}, "stringData": {"clientSecret": o.secret}});
    let (name, pp, patch) = (
        o.secret_name(),
        PatchParams::apply("drill").force(),
        Patch::Apply(&m),
    );
    retry("apply Secret", || apis.secrets.patch(&name, &pp, &patch)).await;
}

async fn apply(apis: &Apis, o: &Obj) {
    let m = o.manifest();
    let (pp, patch) = (PatchParams::apply("drill").force(), Patch::Apply(&m));
    retry("apply ChatConfiguration", || {
        apis.objects.patch(&o.name, &pp, &patch)
    })
    .await;
}

/// What the drill did, for the report.
#[derive(Default, Debug)]
struct Tally {
    creates: u32,
    spec_changes: u32,
    rotations: u32,
    deletes_delete: u32,
    deletes_orphan: u32,
    kills: u32,
    emulator_restarts: u32,
    apiserver_restarts: u32,
    watch_gaps: u32,
}

struct Model {
    rng: StdRng,
    next: u32,
    live: BTreeMap<String, Obj>,
    /// Deleted with the Delete policy (explicit or default): no remote may remain.
    deleted: Vec<Obj>,
    /// Deleted with the Orphan policy, and whether the object owned its remote then.
    orphaned: Vec<(Obj, bool)>,
    tally: Tally,
}

impl Model {
    fn pick_live(&mut self) -> Option<String> {
        if self.live.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.live.len());
        self.live.keys().nth(i).cloned()
    }

    /// One random operation through `apis`.
    async fn step(&mut self, apis: &Apis, op: u32, max_live: usize) -> String {
        let roll: f64 = self.rng.random();
        let live = self.live.len();
        if live == 0 || (roll < 0.3 && live < max_live) {
            self.create(apis).await
        } else if roll < 0.55 {
            self.change_spec(apis, op).await
        } else if roll < 0.75 {
            self.rotate(apis, op).await
        } else if live > 2 {
            self.delete(apis).await
        } else {
            self.change_spec(apis, op).await
        }
    }

    async fn create(&mut self, apis: &Apis) -> String {
        self.next += 1;
        let name = format!("d{:03}", self.next);
        let kind = if self.rng.random_bool(0.7) {
            Kind::DingTalk
        } else {
            Kind::WeChat
        };
        let policy = match self.rng.random_range(0..10) {
            0..=3 => Some("Delete"),
            4..=6 => Some("Orphan"),
            _ => None,
        };
        let template = format!("tpl-{name}-0");
        let role = ROLES[self.rng.random_range(0..ROLES.len())];
        let o = Obj {
            secret: format!("sec-{name}-0"),
            history: vec![(template.clone(), role)],
            name: name.clone(),
            kind,
            policy,
            template,
            role,
        };
        put_secret(apis, &o).await;
        apply(apis, &o).await;
        self.live.insert(name.clone(), o);
        self.tally.creates += 1;
        format!(
            "create {name} ({}, policy {})",
            kind.name(),
            policy.unwrap_or("default")
        )
    }

    async fn change_spec(&mut self, apis: &Apis, op: u32) -> String {
        let Some(name) = self.pick_live() else {
            return self.create(apis).await;
        };
        self.change_spec_of(apis, op, name).await
    }

    async fn change_spec_of(&mut self, apis: &Apis, op: u32, name: String) -> String {
        let change_role = self.rng.random_bool(0.4);
        let role = ROLES[self.rng.random_range(0..ROLES.len())];
        let o = self.live.get_mut(&name).unwrap();
        o.template = format!("tpl-{name}-{op}");
        if change_role {
            o.role = role;
        }
        o.history.push((o.template.clone(), o.role));
        let o = o.clone();
        apply(apis, &o).await;
        self.tally.spec_changes += 1;
        format!("spec {name} → {} {}", o.template, o.role)
    }

    async fn rotate(&mut self, apis: &Apis, op: u32) -> String {
        let Some(name) = self.pick_live() else {
            return self.create(apis).await;
        };
        self.rotate_of(apis, op, name).await
    }

    async fn rotate_of(&mut self, apis: &Apis, op: u32, name: String) -> String {
        let o = self.live.get_mut(&name).unwrap();
        o.secret = format!("sec-{name}-{op}");
        let o = o.clone();
        put_secret(apis, &o).await;
        self.tally.rotations += 1;
        format!("rotate {name}")
    }

    /// Deletes a random object; every other deletion prefers an Orphan-policy one, so both
    /// policies are drilled whatever the seed.
    async fn delete(&mut self, apis: &Apis) -> String {
        let orphans: Vec<String> = self
            .live
            .values()
            .filter(|o| !o.deletes_remote())
            .map(|o| o.name.clone())
            .collect();
        let name = if self.tally.deletes_orphan < self.tally.deletes_delete && !orphans.is_empty() {
            orphans[self.rng.random_range(0..orphans.len())].clone()
        } else {
            self.pick_live().unwrap()
        };
        self.delete_of(apis, name).await
    }

    async fn delete_of(&mut self, apis: &Apis, name: String) -> String {
        let o = self.live.remove(&name).unwrap();
        let owned = retry("get before delete", || apis.objects.get_opt(&name))
            .await
            .and_then(|c| c.status)
            .and_then(|s| s.ownership)
            .is_some();
        let dp = DeleteParams::default();
        retry("delete", || async {
            match apis.objects.delete(&name, &dp).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
        if o.deletes_remote() {
            self.tally.deletes_delete += 1;
            self.deleted.push(o);
        } else {
            self.tally.deletes_orphan += 1;
            self.orphaned.push((o, owned));
        }
        format!("delete {name} (owned remote: {owned})")
    }
}

// ---------------------------------------------------------------------------------------
// The checks after recovery

#[derive(Debug, Default)]
struct Counts {
    objects: usize,
    ready: usize,
    remotes: usize,
    live_remotes: usize,
    orphans_kept: usize,
    foreign_kept: usize,
    duplicates: usize,
    /// Held Create attempts that ran after their client gave up (each one found and resumed
    /// or deleted by its object, or the state checks would fail).
    late_creates: usize,
    leaked: usize,
    foreign_writes: usize,
    stuck_finalizers: usize,
}

/// Deletes object `name` and waits until its finalizer is released; `log` is what to show when
/// it is not within `within` (the operators' logs).
async fn delete_and_wait_gone(apis: &Apis, name: &str, within: Duration, log: impl Fn() -> String) {
    let dp = DeleteParams::default();
    retry("delete", || apis.objects.delete(name, &dp)).await;
    let deadline = Instant::now() + within;
    while retry("get", || apis.objects.get_opt(name)).await.is_some() {
        assert!(Instant::now() < deadline, "finalizer stuck:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(o: &'a ChatConfiguration, type_: &str) -> Option<(&'a str, &'a str)> {
    o.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    })
}

/// Everything the drill promises, or the list of what is still wrong.
async fn check(
    apis: &Apis,
    e: &Emulator,
    m: &Model,
    foreign_before: &BTreeMap<String, Value>,
) -> Result<Counts, Vec<String>> {
    let mut problems = Vec::new();
    let mut c = Counts::default();
    let objects = match apis.objects.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(err) => return Err(vec![format!("list objects: {err}")]),
    };
    let by_name: BTreeMap<String, &ChatConfiguration> = objects
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
        .collect();
    c.objects = objects.len();
    for o in &objects {
        let name = o.metadata.name.as_deref().unwrap_or("");
        if o.metadata.deletion_timestamp.is_some() {
            c.stuck_finalizers += 1;
            problems.push(format!("{name}: still deleting (finalizer)"));
            continue;
        }
        let st = o.status.clone().unwrap_or_default();
        if name == COLLIDER {
            if condition(o, "Ready") != Some(("False", "AlreadyExists"))
                || condition(o, "Stalled").map(|s| s.0) != Some("True")
            {
                problems.push(format!(
                    "{COLLIDER}: not Stalled with AlreadyExists: {:?}",
                    condition(o, "Ready")
                ));
            }
            continue;
        }
        if !m.live.contains_key(name) {
            problems.push(format!("{name}: exists but was deleted"));
        }
        if condition(o, "Ready").map(|r| r.0) == Some("True")
            && st.observed_generation == o.metadata.generation
        {
            c.ready += 1;
        } else {
            problems.push(format!(
                "{name}: not Ready for its generation: {:?}",
                condition(o, "Ready")
            ));
        }
    }
    for name in m.live.keys() {
        if !by_name.contains_key(name) {
            problems.push(format!("{name}: object missing"));
        }
    }

    let state = e.state().await;
    let secrets = e.stored_secrets();
    c.remotes = state.len();
    let mut expected: BTreeSet<&str> = BTreeSet::new();
    for o in m.live.values() {
        expected.insert(&o.name);
        let Some(r) = state.get(&o.name) else {
            problems.push(format!("{}: no remote", o.name));
            continue;
        };
        c.live_remotes += 1;
        let cfg = &r["configuration"];
        let client_id = o.client_id();
        let want = [
            (r["type"].as_str(), Some(o.kind.name()), "type"),
            (r["ramRole"].as_str(), Some(o.role), "ramRole"),
            (
                cfg[o.kind.key("TemplateId")].as_str(),
                Some(o.template.as_str()),
                "templateId",
            ),
            (
                cfg[o.kind.key("ClientId")].as_str(),
                Some(client_id.as_str()),
                "clientId",
            ),
            (
                secrets.get(&o.name).map(String::as_str),
                Some(o.secret.as_str()),
                "client secret",
            ),
        ];
        for (got, want, field) in want {
            if got != want {
                let shown = if field == "client secret" {
                    "(differs)".to_string()
                } else {
                    format!("{got:?} ≠ {want:?}")
                };
                problems.push(format!("{}: remote {field} {shown}", o.name));
            }
        }
    }
    for (o, owned) in &m.orphaned {
        expected.insert(&o.name);
        match state.get(&o.name) {
            Some(r) => {
                c.orphans_kept += 1;
                let cfg = &r["configuration"];
                let held = (
                    cfg[o.kind.key("TemplateId")].as_str().unwrap_or(""),
                    r["ramRole"].as_str().unwrap_or(""),
                );
                if !o.history.iter().any(|(t, r)| (t.as_str(), *r) == held) {
                    problems.push(format!(
                        "{}: orphaned remote holds {held:?}, never its spec",
                        o.name
                    ));
                }
            }
            None if *owned => problems.push(format!("{}: Orphan policy, remote gone", o.name)),
            None => {}
        }
    }
    for (name, before) in foreign_before {
        expected.insert(name);
        match state.get(name) {
            Some(now) if now == before => c.foreign_kept += 1,
            Some(now) => problems.push(format!("foreign {name} changed: {before} → {now}")),
            None => problems.push(format!("foreign {name} deleted")),
        }
    }
    for o in &m.deleted {
        if state.contains_key(&o.name) {
            problems.push(format!("{}: Delete policy, remote still there", o.name));
        }
    }
    for name in state.keys() {
        if !expected.contains(name.as_str()) {
            c.leaked += 1;
            problems.push(format!("{name}: leaked remote"));
        }
    }
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems)
    }
}

/// The request-log checks (over every emulator lifetime): at most one committed Create per
/// name, no Delete of a remote of an Orphan-policy object, no Delete or Update of a foreign one.
fn check_requests(seen: &Seen, m: &Model, c: &mut Counts) -> Vec<String> {
    let mut problems = Vec::new();
    let names = m
        .live
        .keys()
        .cloned()
        .chain(m.deleted.iter().map(|o| o.name.clone()))
        .chain(m.orphaned.iter().map(|(o, _)| o.name.clone()));
    for name in names {
        // A held attempt that ran after its client gave up is not the operator's choice: it
        // must be recognised (resumed, or deleted with its object), which the state checks see.
        let creates = seen
            .requests_for("CreateChatConfiguration", &name)
            .filter(|r| committed(r) && !held(r))
            .count();
        c.late_creates += seen
            .requests_for("CreateChatConfiguration", &name)
            .filter(|r| committed(r) && held(r))
            .count();
        if creates > 1 {
            c.duplicates += 1;
            problems.push(format!("{name}: {creates} committed Creates"));
        }
    }
    for (o, _) in &m.orphaned {
        let deletes = seen
            .requests_for("DeleteChatConfiguration", &o.name)
            .count();
        if deletes > 0 {
            problems.push(format!(
                "{}: Orphan policy, {deletes} Delete requests",
                o.name
            ));
        }
    }
    for name in FOREIGN.iter().chain([&COLLIDER]) {
        let writes = seen.requests_for("DeleteChatConfiguration", name).count()
            + seen.requests_for("UpdateChatConfiguration", name).count();
        if writes > 0 {
            c.foreign_writes += writes;
            problems.push(format!("foreign {name}: {writes} Delete/Update requests"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The drill

fn operator_args(ns: &str, endpoint: &str) -> Vec<String> {
    scoped_args(ns)
        .into_iter()
        .chain([
            "--oos-endpoint",
            endpoint,
            "--oos-timeout",
            OOS_TIMEOUT,
            "--resync-interval",
            "15s",
            "--qps",
            "50",
            "--burst",
            "50",
        ])
        .map(str::to_string)
        .collect()
}

fn start_operator(args: &[String]) -> OperatorProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OperatorProcess::start(
        &args,
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
            // A container restarted in place keeps its pod name, so it finds the lease its own.
            ("POD_NAME", POD_NAME),
            ("RUST_LOG", "oos_chat_operator=info,kube_runtime=warn"),
        ],
    )
}

/// ~20 % of all requests: each rule is tried in order and the first that fires wins, so the
/// rates are chosen for 1 − Π(1 − rᵢ) ≈ `total`.
fn fault_rules(total: f64) -> Value {
    let kinds = 6.0;
    let r = 1.0 - (1.0 - total).powf(1.0 / kinds);
    json!({"rules": [
        {"kind": "error", "code": "InternalError", "rate": r},
        {"kind": "error", "code": "ServiceUnavailable", "rate": r},
        {"kind": "error", "code": "Throttling.User", "rate": r},
        {"kind": "stall", "stall_ms": STALL_MS, "rate": r},
        {"kind": "reset", "after_commit": false, "rate": r},
        {"kind": "reset", "after_commit": true, "rate": r},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drill() {
    let _serial = SERIAL.lock().await;
    let ops: u32 = env_or("DRILL_OPS", 40);
    let kills: u32 = env_or("DRILL_KILLS", 3);
    let emulator_restarts: u32 = env_or("DRILL_EMULATOR_RESTARTS", 1);
    let fault_rate: f64 = env_or("DRILL_FAULT_RATE", 0.2);
    let seed: u64 = env_or("DRILL_SEED", rand::random::<u64>() % 1_000_000);
    say!(
        "seed {seed} (DRILL_SEED={seed} replays the schedule): {ops} operations, {kills} operator kills, {emulator_restarts} emulator restarts, {:.0} % faults",
        fault_rate * 100.0
    );
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    // The schedule: kills and emulator restarts in the first 70 %, then one kube-apiserver
    // restart and one watch expiry, each followed by operations on the same operator process.
    let mut schedule: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    let early = (ops * 7 / 10).max(2);
    for _ in 0..kills {
        schedule
            .entry(rng.random_range(1..early))
            .or_default()
            .push("kill");
    }
    for _ in 0..emulator_restarts {
        schedule
            .entry(rng.random_range(1..early))
            .or_default()
            .push("emulator");
    }
    schedule.entry(early).or_default().push("apiserver");
    schedule
        .entry((ops * 85 / 100).max(early + 1))
        .or_default()
        .push("watch-gap");

    let cp = control_plane();
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = cp.fresh_namespace("drill").await;
    let apis = Apis::new(client.clone(), &ns);
    let dir = tempfile::tempdir().unwrap();
    let mut emulator = Emulator::new(emulator_bin(), dir.path().join("state.json"));
    emulator.start();
    let mut seen = Seen::default();

    // Foreign remotes, made before the operator starts: three with names no object uses, one
    // that the Refuse object collides with (a different configuration).
    let oos = oos_client(emulator.endpoint());
    for name in FOREIGN.iter().chain([&COLLIDER]) {
        oos.create_chat_configuration(REGION, &remote_input(name, "theirs"))
            .await
            .unwrap();
    }
    let foreign_before: BTreeMap<String, Value> = emulator
        .state()
        .await
        .into_iter()
        .filter(|(n, _)| FOREIGN.contains(&n.as_str()) || n == COLLIDER)
        .collect();
    assert_eq!(foreign_before.len(), 4);

    let args = operator_args(&ns, &emulator.endpoint());
    let mut operator = start_operator(&args);
    operator
        .wait_for_log("acquired the leader lease", Duration::from_secs(60))
        .await;
    let mut logs = String::new();

    let collider = Obj {
        name: COLLIDER.into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "ours".into(),
        role: "OOSServiceRole",
        secret: "sec-collider".into(),
        history: vec![],
    };
    put_secret(&apis, &collider).await;
    let mut cm = collider.manifest();
    cm["spec"]["adoptionPolicy"] = json!("Refuse");
    let (pp, patch) = (PatchParams::apply("drill").force(), Patch::Apply(&cm));
    retry("apply collider", || {
        apis.objects.patch(COLLIDER, &pp, &patch)
    })
    .await;

    let mut m = Model {
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        next: 0,
        live: BTreeMap::new(),
        deleted: Vec::new(),
        orphaned: Vec::new(),
        tally: Tally::default(),
    };
    let faults = fault_rules(fault_rate);
    emulator.set_faults(&faults).await;
    let max_live = (ops as usize / 4).max(8);
    let mut pid_at_apiserver_restart = None;
    let mut apiserver_down = Duration::ZERO;
    // Where the operator's log stood at the kube-apiserver restart: its watches' 410s follow.
    let mut apiserver_log_at = None;

    for op in 1..=ops {
        for event in schedule.get(&op).cloned().unwrap_or_default() {
            match event {
                "kill" => {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
                    let pid = operator.pid();
                    operator.kill9();
                    // Let the stderr reader drain what the process wrote before it died.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    logs.push_str(&operator.log());
                    m.tally.kills += 1;
                    let pause = Duration::from_millis(rng.random_range(0..1500));
                    tokio::time::sleep(pause).await;
                    operator = start_operator(&args);
                    say!(
                        "op {op}: kill -9 operator pid {pid}, restarted after {pause:?} as pid {}",
                        operator.pid()
                    );
                }
                "emulator" => {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
                    seen.collect(&emulator).await;
                    emulator.kill9();
                    let down = Instant::now();
                    emulator.start();
                    emulator.set_faults(&faults).await;
                    m.tally.emulator_restarts += 1;
                    say!(
                        "op {op}: kill -9 emulator, restarted on the same state file and port in {:?}",
                        down.elapsed()
                    );
                }
                "apiserver" => {
                    pid_at_apiserver_restart = Some(operator.pid());
                    apiserver_log_at = Some(operator.log().len());
                    let took = cp
                        .restart_apiserver(&[])
                        .await
                        .expect("restart kube-apiserver");
                    apiserver_down += took;
                    m.tally.apiserver_restarts += 1;
                    say!(
                        "op {op}: kill -9 kube-apiserver, serving again after {took:?} (operator pid {})",
                        operator.pid()
                    );
                }
                "watch-gap" => {
                    let (summary, took, gap) = watch_gap(cp, &ns, &mut m, op).await;
                    apiserver_down += took;
                    m.tally.watch_gaps += 1;
                    say!("op {op}: watch expiry: {summary}");
                    // Nothing else changes until the gap's changes have converged.
                    let back = Instant::now();
                    loop {
                        match gap_converged(&apis, &emulator, &m, &gap).await {
                            Ok(()) => break,
                            Err(e) if back.elapsed() > Duration::from_secs(120) => {
                                panic!(
                                    "seed {seed}: after the watch expiry: {e}\n{}",
                                    operator.log()
                                )
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                    say!(
                        "op {op}: the changes made during the watch gap converged {:?} after kube-apiserver was back",
                        back.elapsed()
                    );
                }
                _ => unreachable!(),
            }
        }
        let did = m.step(&apis, op, max_live).await;
        tracing::debug!(op, did, "drill operation");
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..300))).await;
    }
    let chaos = began.elapsed();

    // Recovery: faults off, the operator left running.
    emulator.clear_faults().await;
    let recovery_began = Instant::now();
    let mut last = Vec::new();
    let mut counts = None;
    while recovery_began.elapsed() < Duration::from_secs(env_or("DRILL_RECOVERY_SECS", 240)) {
        match check(&apis, &emulator, &m, &foreign_before).await {
            Ok(c) => {
                counts = Some(c);
                break;
            }
            Err(p) => last = p,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovery = recovery_began.elapsed();
    let alive = operator.is_running();
    logs.push_str(&operator.log());
    let Some(mut counts) = counts else {
        seen.collect(&emulator).await;
        panic!(
            "seed {seed}: not recovered within {recovery:?}:\n  {}\n{}",
            last.join("\n  "),
            history(&last, &seen, &logs)
        );
    };

    // The last emulator lifetime, up to now.
    seen.collect(&emulator).await;
    let final_seen = seen;
    let problems = check_requests(&final_seen, &m, &mut counts);

    // The same process throughout the kube-apiserver restart and the watch expiry.
    let pid_now = operator.pid();
    // A restarted kube-apiserver's watch cache starts at the current revision, and the
    // compaction removes the history before it: a resumed watch gets 410 Gone (whether at the
    // restart or at the gap depends on where the watcher's own backoff stands), then re-lists.
    let expired = apiserver_log_at.map_or(0, |at| {
        let log = operator.log();
        log[at.min(log.len())..]
            .lines()
            .filter(|l| l.contains("too old resource version") || l.contains("Expired"))
            .count()
    });

    let t = &m.tally;
    say!(
        "did {ops} operations in {chaos:?}: {} creates, {} spec changes, {} Secret rotations, {} deletions with Delete, {} with Orphan",
        t.creates,
        t.spec_changes,
        t.rotations,
        t.deletes_delete,
        t.deletes_orphan
    );
    say!(
        "{} operator kills, {} emulator restarts, {} kube-apiserver restarts, {} watch expiries with changes behind the operator's back (410 Gone answered to its watches {expired} times); kube-apiserver down {apiserver_down:?} in all",
        t.kills,
        t.emulator_restarts,
        t.apiserver_restarts,
        t.watch_gaps
    );
    say!("faults fired by code: {:?}", final_seen.faults());
    for action in [
        "CreateChatConfiguration",
        "UpdateChatConfiguration",
        "GetChatConfiguration",
        "ListChatConfigurations",
        "DeleteChatConfiguration",
    ] {
        say!("  {action}: {:?}", final_seen.answers(action));
    }
    if final_seen.dropped > 0 {
        say!(
            "({} requests fell out of the emulator's log; the per-name checks saw the rest)",
            final_seen.dropped
        );
    }
    say!("recovered {recovery:?} after faults stopped; {counts:?}");
    say!("total {:?}", began.elapsed());

    assert!(
        problems.is_empty(),
        "seed {seed}:\n  {}\n{}",
        problems.join("\n  "),
        history(&problems, &final_seen, &logs)
    );
    assert!(alive, "the operator process exited:\n{}", operator.log());
    assert_eq!(
        pid_at_apiserver_restart,
        Some(pid_now),
        "the operator was not restarted after the kube-apiserver restart"
    );
    assert!(
        expired > 0,
        "no watch of the operator got 410 Gone after the kube-apiserver restart and the compaction:\n{}",
        operator.log()
    );
    assert_eq!(counts.leaked + counts.duplicates + counts.foreign_writes, 0);
    assert_eq!(counts.stuck_finalizers, 0);

    // Deleting the Refuse object leaves the remote it collided with alone.
    let dp = DeleteParams::default();
    retry("delete collider", || apis.objects.delete(COLLIDER, &dp)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while retry("get collider", || apis.objects.get_opt(COLLIDER))
        .await
        .is_some()
    {
        assert!(Instant::now() < deadline, "{COLLIDER}: finalizer stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        emulator.state().await.get(COLLIDER),
        foreign_before.get(COLLIDER),
        "the remote the Refuse object collided with is untouched"
    );
    drop(operator);
}

/// The operator's kube-apiserver goes away; objects and Secrets change through a second
/// kube-apiserver on the same etcd; etcd is compacted; the first kube-apiserver comes back.
/// Every watch the operator resumes is older than the compaction: 410 Gone, re-list.
async fn watch_gap(
    cp: &support::ControlPlane,
    ns: &str,
    m: &mut Model,
    op: u32,
) -> (String, Duration, Gap) {
    let mut picks = m.live.keys().cloned().collect::<Vec<_>>().into_iter();
    let gap = Gap {
        changed: picks.next(),
        rotated: picks.next(),
        deleted: picks.next(),
        created: None,
    };
    cp.kill_apiserver();
    let down = Instant::now();
    let side = cp.side_apiserver(&[]).await.expect("second kube-apiserver");
    let side_apis = Apis::new(side.client().await, ns);
    let mut did = Vec::new();
    if let Some(n) = &gap.changed {
        did.push(m.change_spec_of(&side_apis, op * 1000 + 1, n.clone()).await);
    }
    if let Some(n) = &gap.rotated {
        did.push(m.rotate_of(&side_apis, op * 1000 + 2, n.clone()).await);
    }
    if let Some(n) = &gap.deleted {
        did.push(m.delete_of(&side_apis, n.clone()).await);
    }
    did.push(m.create(&side_apis).await);
    let gap = Gap {
        created: Some(format!("d{:03}", m.next)),
        ..gap
    };
    let revision = cp.compact_etcd().await.expect("compact etcd");
    drop(side);
    cp.start_apiserver(&[])
        .await
        .expect("restart kube-apiserver");
    (
        format!(
            "while its kube-apiserver was down: {}; etcd compacted at revision {revision}",
            did.join(", ")
        ),
        down.elapsed(),
        gap,
    )
}

/// The objects a watch gap changed behind the operator's back.
struct Gap {
    changed: Option<String>,
    rotated: Option<String>,
    deleted: Option<String>,
    created: Option<String>,
}

/// Waits until every change made during the watch gap has reached the remote (faults still
/// on): the changed spec and the rotated Secret applied, the new object created and Ready, the
/// deleted object gone (and its remote, unless its policy keeps it).
async fn gap_converged(apis: &Apis, e: &Emulator, m: &Model, gap: &Gap) -> Result<(), String> {
    let state = e.state().await;
    let secrets = e.stored_secrets();
    let ready = |name: String| async move {
        let o = apis.objects.get_opt(&name).await.ok().flatten();
        o.is_some_and(|o| {
            condition(&o, "Ready").map(|r| r.0) == Some("True")
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
    };
    if let Some(n) = &gap.changed
        && let Some(o) = m.live.get(n)
    {
        let held = state.get(n).and_then(|r| {
            r["configuration"][o.kind.key("TemplateId")]
                .as_str()
                .map(str::to_string)
        });
        if held.as_deref() != Some(o.template.as_str()) || !ready(n.clone()).await {
            return Err(format!("{n}: spec changed in the gap not applied yet"));
        }
    }
    if let Some(n) = &gap.rotated
        && let Some(o) = m.live.get(n)
        && secrets.get(n) != Some(&o.secret)
    {
        return Err(format!("{n}: Secret rotated in the gap not applied yet"));
    }
    if let Some(n) = &gap.created
        && m.live.contains_key(n)
        && (!state.contains_key(n) || !ready(n.clone()).await)
    {
        return Err(format!("{n}: created in the gap, not Ready yet"));
    }
    if let Some(n) = &gap.deleted {
        if apis.objects.get_opt(n).await.ok().flatten().is_some() {
            return Err(format!("{n}: deleted in the gap, still there"));
        }
        if m.deleted.iter().any(|o| &o.name == n) && state.contains_key(n) {
            return Err(format!(
                "{n}: deleted in the gap, its remote is still there"
            ));
        }
    }
    Ok(())
}

/// The drills share one control plane and restart its kube-apiserver: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Create that the service holds past the client's timeout still commits when it is done
/// (a "zombie"). If the operator dies while it waits for the answer and the object is deleted
/// meanwhile, the next operator must not release the object before that Create has landed:
/// otherwise the configuration it makes belongs to no one (a leak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_create_after_kill_and_delete_is_not_leaked() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        ns,
        apis,
        emulator,
        _dir,
    } = Scenario::start("zombie").await;
    emulator
        .set_faults(&json!({"rules": [{"kind": "stall", "stall_ms": 8000,
            "action": "CreateChatConfiguration", "remaining": 1}]}))
        .await;
    let args = operator_args(&ns, &emulator.endpoint());
    let mut operator = start_operator(&args);
    let o = Obj {
        name: "zombie".into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "tpl".into(),
        role: "OOSServiceRole",
        secret: "sec-zombie".into(),
        history: vec![],
    };
    put_secret(&apis, &o).await;
    apply(&apis, &o).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while emulator.get("/calls?by=code").await["CreateChatConfiguration"]["stall"] != 1 {
        assert!(Instant::now() < deadline, "no Create:\n{}", operator.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled_at = Instant::now();
    operator.kill9();
    let dp = DeleteParams::default();
    retry("delete", || apis.objects.delete(&o.name, &dp)).await;
    let mut operator = start_operator(&args);
    // The object waits, and says why, until the held Create can no longer land (the client's
    // 60 s retry budget + twice --oos-timeout after the intent); then it is looked at again,
    // what the Create made is deleted, and the object goes.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut said_why = false;
    while let Some(obj) = retry("get", || apis.objects.get_opt(&o.name)).await {
        said_why |= condition(&obj, "Ready") == Some(("False", "CreateInFlight"));
        assert!(
            Instant::now() < deadline,
            "finalizer stuck:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released = stalled_at.elapsed();
    assert!(said_why, "Ready=False CreateInFlight while waiting");
    assert!(
        released > Duration::from_secs(8),
        "released before the held Create ran"
    );
    // The held Create has run by now.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(stalled_at.elapsed())).await;
    let answers = emulator.get("/calls?by=code").await;
    let state = emulator.state().await;
    say!(
        "zombie create: object released {released:?} after the Create was held; remote now {}; {answers}",
        if state.contains_key("zombie") {
            "LEAKED"
        } else {
            "absent"
        }
    );
    assert!(
        !state.contains_key("zombie"),
        "the held Create landed after the object was released: a leaked configuration\n{}",
        operator.log()
    );
    let gets: u64 = answers["GetChatConfiguration"]
        .as_object()
        .map_or(0, |a| a.values().filter_map(Value::as_u64).sum());
    assert!(gets <= 3, "{gets} Gets while waiting: no polling");
    assert!(operator.is_running());
}

/// A foreign configuration identical to what an object sends (someone created the same bot by
/// hand a day ago) that the operator's inventory has not listed yet. The first Create attempt
/// is lost (connection reset), the client's retry answers `EntityAlreadyExists`: that must not
/// make the day-old configuration this object's own. With `adoptionPolicy: Refuse` the object
/// stalls with `AlreadyExists`, and deleting it leaves the configuration alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_foreign_remote_is_not_taken_over_after_a_lost_create() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        ns,
        apis,
        mut emulator,
        _dir,
    } = Scenario::start("twin").await;
    let mut args = operator_args(&ns, &emulator.endpoint());
    // The inventory listed once, at the first object, and not again during the test.
    let resync = args.iter().position(|a| a == "--resync-interval").unwrap();
    args[resync + 1] = "10m".into();
    let operator = start_operator(&args);
    let obj = |name: &str| Obj {
        name: name.into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "tpl".into(),
        role: "OOSServiceRole",
        secret: format!("sec-{name}"),
        history: vec![],
    };
    let first = obj("first");
    put_secret(&apis, &first).await;
    apply(&apis, &first).await;
    let ready = |name: &'static str, reason: &'static str| {
        let apis = apis.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let o = retry("get", || apis.objects.get_opt(name)).await;
                let got = o.as_ref().and_then(|o| {
                    condition(o, "Ready").map(|(s, r)| (s.to_string(), r.to_string()))
                });
                if got.as_ref().is_some_and(|(_, r)| r == reason) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: Ready {got:?}, expected {reason}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    ready("first", "Synced").await;

    // The twin, a day old, written into the state file while the emulator is down.
    emulator.kill9();
    let mut file: Value =
        serde_json::from_str(&std::fs::read_to_string(&emulator.state_file).unwrap()).unwrap();
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut twin = file["records"][0].clone();
    twin["name"] = json!("twin");
    twin["configuration"] = json!({"DingTalkClientId": "cid-twin", "DingTalkTemplateId": "tpl",
        "DingTalkClientSecret": "someone-elses"});
    twin["created"] = json!(day_ago);
    twin["updated"] = json!(day_ago);
    twin["url"] = json!(format!(
        "https://1234567890123456.appflow.aliyunnest.com/webhook/{}",
        "0".repeat(32)
    ));
    file["records"].as_array_mut().unwrap().push(twin);
    std::fs::write(&emulator.state_file, file.to_string()).unwrap();
    emulator.start();
    let before = emulator.state().await.get("twin").cloned().expect("twin");
    emulator
        .set_faults(
            &json!({"rules": [{"kind": "reset", "action": "CreateChatConfiguration",
            "remaining": 1}]}),
        )
        .await;

    let twin = obj("twin");
    put_secret(&apis, &twin).await;
    apply(&apis, &twin).await;
    ready("twin", "AlreadyExists").await;
    let o = retry("get", || apis.objects.get_opt("twin")).await.unwrap();
    assert!(
        o.status.and_then(|s| s.ownership).is_none(),
        "not recorded as its own"
    );
    delete_and_wait_gone(&apis, "twin", Duration::from_secs(60), || operator.log()).await;
    assert_eq!(
        emulator.state().await.get("twin"),
        Some(&before),
        "the day-old configuration is untouched"
    );
    let requests = emulator.get("/requests").await;
    let writes: Vec<&Value> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["params"]["Name"] == "twin"
                && matches!(
                    r["action"].as_str(),
                    Some("UpdateChatConfiguration" | "DeleteChatConfiguration")
                )
        })
        .collect();
    assert!(writes.is_empty(), "no write to it: {writes:?}");
    let creates = &emulator.get("/calls?by=code").await["CreateChatConfiguration"];
    assert_eq!(
        (
            &creates["reset"],
            &creates["EntityAlreadyExists.ChatConfiguration"]
        ),
        (&json!(1), &json!(1)),
        "a lost attempt, then the retry's EntityAlreadyExists: {creates}"
    );
    say!(
        "identical foreign remote: kept untouched after a lost Create ({} requests)",
        requests.as_array().unwrap().len()
    );
}

/// A Create call whose first attempt is lost (held past the timeout; the service commits it
/// later) and whose retries are then throttled ends with `Throttling.User`, a definite answer for
/// that attempt only: the call as a whole may have created the configuration. The recorded
/// intent must survive it, so that the configuration the lost attempt makes is recognised as
/// this object's own (not an `AlreadyExists` conflict with itself), and its deletion deletes it
/// (not a leak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_then_throttled_create_keeps_its_intent() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        ns,
        apis,
        emulator,
        _dir,
    } = Scenario::start("throttled").await;
    emulator
        .set_faults(&json!({"rules": [
            {"kind": "stall", "stall_ms": 4000, "action": "CreateChatConfiguration", "remaining": 1},
            {"kind": "error", "code": "Throttling.User", "action": "CreateChatConfiguration",
             "remaining": 12, "retry_after_ms": 300}]}))
        .await;
    let args = operator_args(&ns, &emulator.endpoint());
    let operator = start_operator(&args);
    let o = Obj {
        name: "lost".into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "tpl".into(),
        role: "OOSServiceRole",
        secret: "sec-lost".into(),
        history: vec![],
    };
    put_secret(&apis, &o).await;
    apply(&apis, &o).await;
    // Ready, as the owner of what the lost attempt created.
    let deadline = Instant::now() + Duration::from_secs(90);
    let st = loop {
        let obj = retry("get", || apis.objects.get_opt("lost")).await.unwrap();
        let ready = condition(&obj, "Ready").map(|(s, r)| (s.to_string(), r.to_string()));
        if ready == Some(("True".into(), "Synced".into())) {
            break obj.status.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "not Synced: {ready:?}; {:?}\n{}",
            emulator.get("/calls?by=code").await,
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(st.ownership.as_deref(), Some("Created"));
    let creates = &emulator.get("/calls?by=code").await["CreateChatConfiguration"];
    assert_eq!(creates["stall"], 1, "{creates}");
    assert!(creates["Throttling.User"].as_u64() >= Some(1), "{creates}");
    // And its deletion deletes it.
    delete_and_wait_gone(&apis, "lost", Duration::from_secs(60), || operator.log()).await;
    assert!(!emulator.state().await.contains_key("lost"), "leaked");
    say!("lost then throttled Create: resumed as its own, deleted with the object; {creates}");
}

/// Found by the drill (two kills in a row): process A records its Create intent, the Create
/// commits, A dies before it records the ownership. Process B recognises the remote as A's Create
/// (created after the intent, exactly the configuration sent) and, since the spec changed
/// meanwhile, updates it; B dies before its status write. Process C must still know the remote as
/// this object's own, although it no longer holds what the intent describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_create_updated_then_killed_stays_owned() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        ns,
        apis,
        emulator,
        _dir,
    } = Scenario::start("resumed").await;
    // Both writes commit, and their answers are held until the process that waits is gone.
    emulator
        .set_faults(&json!({"rules": [
            {"kind": "stall", "after_commit": true, "stall_ms": 20000,
             "action": "CreateChatConfiguration", "remaining": 1},
            {"kind": "stall", "after_commit": true, "stall_ms": 20000,
             "action": "UpdateChatConfiguration", "remaining": 1}]}))
        .await;
    let args = operator_args(&ns, &emulator.endpoint());
    let stalled = |action: &'static str| {
        let emulator = &emulator;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while emulator.get("/calls?by=code").await[action]["stall"] != 1 {
                assert!(Instant::now() < deadline, "no {action}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut o = Obj {
        name: "resumed".into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "tpl-1".into(),
        role: "OOSServiceRole",
        secret: "sec-resumed".into(),
        history: vec![],
    };
    put_secret(&apis, &o).await;
    let mut a = start_operator(&args);
    apply(&apis, &o).await;
    stalled("CreateChatConfiguration").await;
    a.kill9();
    o.template = "tpl-2".into();
    apply(&apis, &o).await;
    let mut b = start_operator(&args);
    stalled("UpdateChatConfiguration").await;
    b.kill9();
    let c = start_operator(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let obj = retry("get", || apis.objects.get_opt("resumed"))
            .await
            .unwrap();
        let ready = condition(&obj, "Ready").map(|(s, r)| (s.to_string(), r.to_string()));
        if ready == Some(("True".into(), "Synced".into())) {
            assert_eq!(
                obj.status.and_then(|s| s.ownership).as_deref(),
                Some("Created")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Synced: {ready:?}\n{}{}{}",
            a.log(),
            b.log(),
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_and_wait_gone(&apis, "resumed", Duration::from_secs(60), || c.log()).await;
    assert!(!emulator.state().await.contains_key("resumed"), "leaked");
    say!("resumed Create, updated, killed twice: still its own, deleted with the object");
}

/// Found by the drill at full size: a Create attempt held past the timeout, the client's retry
/// creates the configuration, the object is deleted at once and its remote with it; then the
/// held attempt lands and makes the configuration again, for no one. The deletion must wait
/// until no attempt of that Create can land any more, and delete what lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_attempt_after_a_quick_delete_is_not_leaked() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        ns,
        apis,
        emulator,
        _dir,
    } = Scenario::start("held").await;
    emulator
        .set_faults(&json!({"rules": [{"kind": "stall", "stall_ms": STALL_MS,
            "action": "CreateChatConfiguration", "remaining": 1}]}))
        .await;
    let operator = start_operator(&operator_args(&ns, &emulator.endpoint()));
    let o = Obj {
        name: "held".into(),
        kind: Kind::DingTalk,
        policy: Some("Delete"),
        template: "tpl".into(),
        role: "OOSServiceRole",
        secret: "sec-held".into(),
        history: vec![],
    };
    put_secret(&apis, &o).await;
    apply(&apis, &o).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let obj = retry("get", || apis.objects.get_opt("held")).await.unwrap();
        if condition(&obj, "Ready").map(|r| r.0) == Some("True") {
            break;
        }
        assert!(Instant::now() < deadline, "not Ready:\n{}", operator.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delete_and_wait_gone(&apis, "held", Duration::from_secs(60), || operator.log()).await;
    // Every attempt has run by now.
    tokio::time::sleep(Duration::from_millis(STALL_MS + 500)).await;
    let creates = &emulator.get("/calls?by=code").await["CreateChatConfiguration"];
    assert_eq!(creates["stall"], 1, "{creates}");
    assert!(
        !emulator.state().await.contains_key("held"),
        "the held attempt landed after the deletion: leaked\n{}",
        operator.log()
    );
    say!("held Create attempt after a quick delete: not leaked; {creates}");
}
