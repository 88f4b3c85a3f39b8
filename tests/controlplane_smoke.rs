//! Smoke tests of the test control plane itself: a real kube-apiserver + etcd, no mocks.
//! They check the Kubernetes features the operator's tests rely on: CRDs with a status
//! subresource and CEL validation, watches, RBAC, and the `hack/controlplane.sh` interface.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::{control_plane, eventually};

const GROUP: &str = "smoke.oos-chat.test";
const CEL_MESSAGE: &str = "spec.size must be at most 10";

/// A test-only CRD (not the product's): status subresource + a CEL rule on spec.
fn widget_crd(plural: &str, kind: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "description": "Smoke-test widget.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "description": "Desired widget.",
                            "required": ["size"],
                            "properties": { "size": { "type": "integer", "description": "Widget size." } },
                            "x-kubernetes-validations": [
                                { "rule": "self.size <= 10", "message": CEL_MESSAGE }
                            ]
                        },
                        "status": {
                            "type": "object",
                            "properties": { "phase": { "type": "string" } }
                        }
                    }
                }}
            }]
        }
    }))
    .expect("valid CRD literal")
}

async fn install_crd(client: &kube::Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.create(&PostParams::default(), crd)
        .await
        .expect("create CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within 30 s")
    .expect("watch CRD");
}

fn widget(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Widget",
        "metadata": { "name": name },
        "spec": { "size": size }
    }))
    .unwrap()
}

fn phase(obj: &DynamicObject) -> Option<&str> {
    obj.data.pointer("/status/phase").and_then(|v| v.as_str())
}

#[tokio::test]
async fn server_reports_pinned_version() {
    let cp = control_plane();
    let info = cp
        .client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");
    // The selected version (CONTROLPLANE_K8S_VERSION, default v1.36.3), e.g. "v1.37.2".
    let want = cp.version();
    assert_eq!(info.git_version, want);
    let minor = want.trim_start_matches('v').split('.').nth(1).unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", minor));
}

#[test]
fn script_and_support_agree_on_versions() {
    let run = |arg: &str| {
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/controlplane.sh"))
            .arg(arg)
            .env_remove("CONTROLPLANE_K8S_VERSION")
            .output()
            .expect("run controlplane.sh");
        assert!(out.status.success(), "{arg}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("version").trim(), support::DEFAULT_K8S_VERSION);
    let versions: Vec<String> = run("versions").lines().map(str::to_string).collect();
    // The ends of k8s-openapi 0.29's range and the version the crate compiles against.
    assert_eq!(versions, ["v1.33.13", "v1.36.3", "v1.37.2"]);
}

/// A CA of its own, unrelated to the control plane's (PEM).
fn unrelated_ca(dir: &Path) -> String {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=some-other-ca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(dir.join("other.crt"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    std::fs::read_to_string(dir.join("other.crt")).unwrap()
}

/// The kubeconfig trusts exactly the CA that signed the serving certificate: no insecure
/// flag, and the same kubeconfig with a different CA is refused by kube-rs and kubectl.
#[tokio::test]
async fn kubeconfig_verifies_the_server_certificate() {
    let cp = control_plane();
    let text = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    assert!(!text.contains("insecure"), "insecure flag in kubeconfig");
    let kubeconfig: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let clusters = kubeconfig["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    let ca_data = clusters[0]["cluster"]["certificate-authority-data"]
        .as_str()
        .expect("certificate-authority-data");
    let ca_pem = std::fs::read_to_string(cp.ca_cert_path()).unwrap();
    assert_eq!(ca_data, support::base64(ca_pem.as_bytes()));
    assert!(
        !cp.dir().join("certs/ca.key").exists(),
        "the CA key is deleted after signing"
    );
    // The control: the kubeconfig as written works for both clients.
    cp.client()
        .await
        .apiserver_version()
        .await
        .expect("trusted");
    kubectl_ok(cp.kubectl().args(["get", "--raw", "/readyz"]));

    let tmp = tempfile::tempdir().unwrap();
    let mut other = kubeconfig.clone();
    other["clusters"][0]["cluster"]["certificate-authority-data"] =
        json!(support::base64(unrelated_ca(tmp.path()).as_bytes()));
    let other_path = tmp.path().join("kubeconfig");
    std::fs::write(&other_path, serde_yaml::to_string(&other).unwrap()).unwrap();

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&other_path).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let err = client
        .apiserver_version()
        .await
        .expect_err("a client trusting another CA must be refused");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "not a certificate error: {chain}"
    );

    let out = Command::new(cp.kubectl().get_program())
        .arg("--kubeconfig")
        .arg(&other_path)
        .args(["get", "--raw", "/readyz"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "kubectl with another CA succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate signed by unknown authority"),
        "{stderr}"
    );
}

/// Bearer tokens of every user in a kubeconfig.
fn kubeconfig_tokens(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read kubeconfig");
    let kubeconfig: serde_json::Value = serde_yaml::from_str(&text).expect("parse kubeconfig");
    let tokens: Vec<String> = kubeconfig["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u.pointer("/user/token")?.as_str().map(str::to_string))
        .collect();
    assert_eq!(tokens.len(), 2, "expected admin and developer tokens");
    tokens
}

#[tokio::test]
async fn support_debug_output_has_no_tokens() {
    let cp = control_plane();
    let debug = format!("{cp:?}");
    for token in kubeconfig_tokens(cp.kubeconfig_path()) {
        assert!(!debug.contains(&token), "token in Debug output");
    }
    // Both identities work, so the tokens checked above are the live ones.
    cp.client().await.apiserver_version().await.expect("admin");
    cp.client_as("developer")
        .await
        .apiserver_version()
        .await
        .expect("developer");
}

#[tokio::test]
async fn crd_with_cel_rule_status_subresource_and_watch() {
    let cp = control_plane();
    let client = cp.client().await;
    install_crd(&client, &widget_crd("widgets", "Widget")).await;

    let ns = cp.fresh_namespace("smoke-crd").await;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);

    // Valid object is accepted.
    let created = api
        .create(&PostParams::default(), &widget("valid", 3))
        .await
        .expect("create valid widget");
    assert_eq!(created.data.pointer("/spec/size"), Some(&json!(3)));

    // Invalid object is rejected by the CEL rule, with the rule's message.
    let err = api
        .create(&PostParams::default(), &widget("too-big", 42))
        .await
        .expect_err("CEL rule must reject size 42");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "unexpected status: {status:?}");
            assert!(
                status.message.contains(CEL_MESSAGE),
                "CEL message missing from: {}",
                status.message
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(
        api.get_opt("too-big").await.unwrap().is_none(),
        "rejected object must not exist"
    );

    // Watch the object from before the status change.
    let watch = watcher(
        api.clone(),
        watcher::Config::default().fields("metadata.name=valid"),
    )
    .applied_objects()
    .try_filter(|o| futures::future::ready(phase(o) == Some("Ready")));
    let mut watch = Box::pin(watch);

    // A patch of the main resource changes spec but silently drops status.
    let patched = api
        .patch(
            "valid",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 4 }, "status": { "phase": "Ready" } })),
        )
        .await
        .expect("patch main resource");
    assert_eq!(patched.data.pointer("/spec/size"), Some(&json!(4)));
    assert_eq!(
        phase(&patched),
        None,
        "main resource patch must not set status"
    );
    let generation = patched.metadata.generation;

    // Through /status it does set status, and does not bump generation (spec unchanged).
    let with_status = api
        .patch_status(
            "valid",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Ready" }, "spec": { "size": 9 } })),
        )
        .await
        .expect("patch status subresource");
    assert_eq!(phase(&with_status), Some("Ready"));
    assert_eq!(
        with_status.data.pointer("/spec/size"),
        Some(&json!(4)),
        "status patch must not change spec"
    );
    assert_eq!(with_status.metadata.generation, generation);

    // The watch sees the status change.
    let seen = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("watch event within 15 s")
        .expect("watch stream ended")
        .expect("watch error");
    assert_eq!(seen.metadata.name.as_deref(), Some("valid"));
    assert_eq!(phase(&seen), Some("Ready"));
}

#[tokio::test]
async fn rbac_denies_non_admin_until_granted() {
    let cp = control_plane();
    let ns = cp.fresh_namespace("smoke-rbac").await;
    let admin = cp.client().await;

    // Admin (system:masters) may list secrets; the control for the denial below.
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("admin lists secrets");

    for user in ["developer", "someone-impersonated"] {
        let secrets: Api<Secret> = Api::namespaced(cp.client_as(user).await, &ns);
        match secrets.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{user}: {status:?}");
                assert!(
                    status.message.contains(&format!("\"{user}\"")),
                    "{user}: denial should name the user: {}",
                    status.message
                );
            }
            other => panic!("{user}: expected 403 Forbidden, got {other:?}"),
        }
    }

    // Grant `developer` list on secrets in this namespace: now it works, so the 403
    // above came from RBAC, not from a broken identity.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("secret-lister".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("developer-secret-lister".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "secret-lister".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "developer".into(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create role binding");

    let developer: Api<Secret> = Api::namespaced(cp.client_as("developer").await, &ns);
    // The RBAC authorizer reads bindings from an informer cache: allow it a moment.
    eventually(Duration::from_secs(10), || async {
        developer.list(&ListParams::default()).await.ok()
    })
    .await
    .expect("developer may list secrets once bound");
}

/// The system kubectl (v1.32) is outside the supported skew of a 1.36 server: check the
/// commands our docs and scripts use.
#[tokio::test]
async fn kubectl_apply_get_patch_status_wait_explain() {
    let cp = control_plane();
    let ns = cp.fresh_namespace("smoke-kubectl").await;
    let dir = tempfile::tempdir().unwrap();

    let crd = serde_json::to_string(&widget_crd("gadgets", "Gadget")).unwrap();
    let crd_file = dir.path().join("crd.json");
    std::fs::write(&crd_file, crd).unwrap();
    kubectl_ok(cp.kubectl().arg("apply").arg("-f").arg(&crd_file));
    kubectl_ok(cp.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/gadgets.{GROUP}"),
    ]));

    let obj = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Gadget",
        "metadata": { "name": "g1", "namespace": ns },
        "spec": { "size": 2 }
    });
    let obj_file = dir.path().join("gadget.json");
    std::fs::write(&obj_file, obj.to_string()).unwrap();
    kubectl_ok(cp.kubectl().arg("apply").arg("-f").arg(&obj_file));

    // apply of an invalid object fails with the CEL message.
    let bad = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Gadget",
        "metadata": { "name": "g2", "namespace": ns },
        "spec": { "size": 11 }
    });
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let out = cp
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(&bad_file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "invalid gadget must be rejected");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(CEL_MESSAGE),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    kubectl_ok(cp.kubectl().args([
        "patch",
        "gadget",
        "g1",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ]));
    let phase = kubectl_ok(cp.kubectl().args([
        "get",
        "gadget",
        "g1",
        "-n",
        &ns,
        "-o",
        "jsonpath={.status.phase}",
    ]));
    assert_eq!(phase, "Ready");
    kubectl_ok(cp.kubectl().args([
        "wait",
        "gadget/g1",
        "-n",
        &ns,
        "--for=jsonpath={.status.phase}=Ready",
        "--timeout=10s",
    ]));

    // explain reads the published OpenAPI, which lags the CRD by a moment.
    let explained = eventually(Duration::from_secs(20), || async {
        let out = cp
            .kubectl()
            .args(["explain", "gadget.spec.size"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("Widget size.")).then_some(text)
    })
    .await
    .expect("kubectl explain shows the CRD schema");
    assert!(explained.contains("integer"), "{explained}");
}

fn kubectl_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run kubectl");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `down` even if the test fails half-way, so no server outlives the test.
struct ScriptDown<'a>(&'a Path);

impl Drop for ScriptDown<'_> {
    fn drop(&mut self) {
        let _ = script(&["down", "--dir"], self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn script(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/controlplane.sh"))
        .args(args)
        .arg(dir)
        .stdin(Stdio::null());
    cmd
}

fn read_pid(path: PathBuf) -> u32 {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn script_up_readyz_down_leaves_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cp");
    let _down = ScriptDown(&dir);

    let out = script(&["up", "--dir"], &dir)
        .output()
        .expect("run controlplane.sh up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up failed: {}\n{stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("up printed nothing");
    let kubeconfig = last
        .strip_prefix("KUBECONFIG=")
        .unwrap_or_else(|| panic!("last line is not KUBECONFIG=…: {last}"));
    assert!(Path::new(kubeconfig).is_file());
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(!text.contains("insecure"), "insecure flag in kubeconfig");
    assert!(text.contains("certificate-authority-data: "), "{text}");
    for token in kubeconfig_tokens(Path::new(kubeconfig)) {
        assert!(
            !stdout.contains(&token) && !stderr.contains(&token),
            "up printed a bearer token"
        );
    }

    let pids = [
        read_pid(dir.join("kube-apiserver.pid")),
        read_pid(dir.join("etcd.pid")),
    ];
    assert!(
        pids.iter().all(|&p| process_exists(p)),
        "servers not running"
    );

    let readyz = Command::new(std::env::var_os("KUBECTL").unwrap_or("kubectl".into()))
        .args(["--kubeconfig", kubeconfig, "get", "--raw", "/readyz"])
        .output()
        .expect("run kubectl");
    assert!(readyz.status.success(), "{readyz:?}");
    assert_eq!(String::from_utf8_lossy(&readyz.stdout).trim(), "ok");

    let down = script(&["down", "--dir"], &dir)
        .stderr(Stdio::inherit())
        .status()
        .expect("run controlplane.sh down");
    assert!(down.success());
    for pid in pids {
        // `down` waits for exit; a zombie would still show in /proc until reaped by init,
        // so allow a short grace period for that.
        let gone = (0..50).any(|_| {
            let gone = !process_exists(pid);
            if !gone {
                std::thread::sleep(Duration::from_millis(100));
            }
            gone
        });
        assert!(gone, "pid {pid} still exists after down");
    }
    assert!(!dir.exists(), "state dir not removed");
}

// ---------------------------------------------------------------------------------------
// Teardown: this test binary re-runs itself in a child process with one of the helpers
// below, then checks from outside that the child's servers and state dir are gone.

const REPORT_ENV: &str = "CONTROLPLANE_TEARDOWN_REPORT";

/// Starts the control plane and writes `<apiserver pid> <etcd pid>\n<state dir>` to the
/// file named by `REPORT_ENV`.
fn start_and_report() {
    let cp = control_plane();
    let [api, etcd] = cp.server_pids();
    let report = std::env::var_os(REPORT_ENV).expect("helper needs CONTROLPLANE_TEARDOWN_REPORT");
    let tmp = PathBuf::from(&report).with_extension("tmp");
    std::fs::write(&tmp, format!("{api} {etcd}\n{}", cp.dir().display())).unwrap();
    std::fs::rename(tmp, report).unwrap();
}

#[test]
#[ignore = "helper: run in a child process by teardown_after_panic_and_after_sigkill"]
#[should_panic(expected = "deliberate")]
fn helper_start_then_panic() {
    start_and_report();
    panic!("deliberate panic with the control plane running");
}

#[test]
#[ignore = "helper: run in a child process by teardown_after_panic_and_after_sigkill"]
fn helper_start_then_wait_for_sigkill() {
    start_and_report();
    std::thread::sleep(Duration::from_secs(60));
}

fn run_helper(name: &str, report: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--test-threads=1"])
        .env(REPORT_ENV, report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper")
}

fn read_report(report: &Path) -> (Vec<u32>, PathBuf) {
    let text = std::fs::read_to_string(report).expect("helper report");
    let (pids, dir) = text.split_once('\n').unwrap();
    let pids: Vec<u32> = pids.split(' ').map(|p| p.parse().unwrap()).collect();
    assert!(pids.iter().all(|&p| p > 0), "bad pids in report: {text}");
    (pids, PathBuf::from(dir))
}

/// Gone, or a zombie waiting for init to reap it (it no longer runs either way).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state field follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: &[u32], within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if pids.iter().all(|&p| process_gone(p)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// If an assertion below fails, the servers it found alive must not outlive this test.
struct KillLeftovers(Vec<(u32, PathBuf)>);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for (pid, dir) in &self.0 {
            // Only a process still running with that state dir on its command line
            // (guards against pid reuse).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let dir = dir.display().to_string();
            if !process_gone(*pid) && String::from_utf8_lossy(&cmdline).contains(&dir) {
                // SAFETY: plain kill(2) of a pid checked just above.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn teardown_after_panic_and_after_sigkill() {
    let mut leftovers = KillLeftovers(Vec::new());
    let tmp = tempfile::tempdir().unwrap();

    // A test that panics: the harness still exits normally, and the atexit hook stops
    // the servers and removes the state dir before the process is gone.
    let report = tmp.path().join("panic");
    let status = run_helper("helper_start_then_panic", &report)
        .wait()
        .unwrap();
    assert!(status.success(), "helper (should_panic) failed: {status}");
    let (pids, dir) = read_report(&report);
    leftovers.0.extend(pids.iter().map(|&p| (p, dir.clone())));
    assert!(
        wait_gone(&pids, Duration::ZERO),
        "servers {pids:?} outlived the test binary"
    );
    assert!(!dir.exists(), "state dir {} left behind", dir.display());

    // A test binary killed outright (no atexit): PDEATHSIG takes the servers down.
    let report = tmp.path().join("kill");
    let mut child = run_helper("helper_start_then_wait_for_sigkill", &report);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !report.exists() {
        assert!(child.try_wait().unwrap().is_none(), "helper exited early");
        assert!(
            std::time::Instant::now() < deadline,
            "helper did not start in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (pids, dir) = read_report(&report);
    leftovers.0.extend(pids.iter().map(|&p| (p, dir.clone())));
    assert!(
        !wait_gone(&pids, Duration::ZERO),
        "servers not running before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(10)),
        "servers {pids:?} survived SIGKILL of the test binary"
    );
    // The dir of a killed binary is swept by the next start; clean it here already.
    let _ = std::fs::remove_dir_all(dir);
}
