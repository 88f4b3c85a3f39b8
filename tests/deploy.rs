//! The install manifests (`deploy/`, kustomize) against the real control plane:
//! - the base and the namespaced overlay pass `kubectl apply --dry-run=server` cleanly, in a
//!   namespace that enforces the `restricted` Pod Security Standard;
//! - every Role/ClusterRole has exactly the rules the operator needs (a new verb, resource or
//!   wildcard fails the test), bound to the operator's ServiceAccount only;
//! - the Deployment is hardened and wired as the operator expects (flags, downward API, probes);
//! - the operator's RBAC suffices: the controller runs with a kube client impersonating
//!   `system:serviceaccount:oos-chat-operator:oos-chat-operator` through a full lifecycle
//!   (create, output Secret with an owner reference, Secret rotation, delete), first with the
//!   namespaced overlay's roles only, then with the cluster-wide base.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use oos_chat_operator::crd::ChatConfiguration;
use serde_json::{Value, json};
use support::control_plane;
use support::harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const OPERATOR_NS: &str = "oos-chat-operator";
const SA: &str = "system:serviceaccount:oos-chat-operator:oos-chat-operator";
const BASE: &str = "deploy";
const NAMESPACED: &str = "deploy/overlays/namespaced";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kubectl kustomize <dir>` with the kubectl the test support picks.
fn render(dir: &str) -> Vec<Value> {
    let out = ok(control_plane()
        .kubectl()
        .arg("kustomize")
        .arg(Path::new(ROOT).join(dir)));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

// ---------------------------------------------------------------------------------------
// RBAC: exact rules

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn named_rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "resourceNames": names, "verbs": verbs})
}

/// The namespaced part of what the operator calls (see the task's API list).
fn namespaced_rules() -> Vec<Value> {
    vec![
        rule(
            &["oos.chatops.dev"],
            &["chatconfigurations"],
            &["get", "list", "watch", "patch"],
        ),
        rule(
            &["oos.chatops.dev"],
            &["chatconfigurations/status"],
            &["patch"],
        ),
        rule(
            &["oos.chatops.dev"],
            &["chatconfigurations/finalizers"],
            &["update"],
        ),
        rule(
            &[""],
            &["secrets"],
            &["get", "list", "watch", "create", "patch"],
        ),
    ]
}

fn events_rule() -> Value {
    rule(&["events.k8s.io"], &["events"], &["create", "patch"])
}

fn leader_election_rules() -> Vec<Value> {
    vec![
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        named_rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["oos-chat-operator"],
            &["get", "patch"],
        ),
    ]
}

/// (kind, namespace, name) → rules, for every Role and ClusterRole an install creates.
type Roles = BTreeMap<(String, String, String), Vec<Value>>;

fn key(kind: &str, ns: &str, name: &str) -> (String, String, String) {
    (kind.into(), ns.into(), name.into())
}

fn expected_roles(dir: &str) -> Roles {
    let mut roles = Roles::new();
    roles.insert(
        key("Role", OPERATOR_NS, "oos-chat-operator-leader-election"),
        leader_election_rules(),
    );
    match dir {
        BASE => {
            let mut cluster = namespaced_rules();
            cluster.push(rule(&[""], &["namespaces"], &["get"]));
            cluster.push(events_rule());
            roles.insert(key("ClusterRole", "", "oos-chat-operator"), cluster);
        }
        NAMESPACED => {
            let mut ns = namespaced_rules();
            ns.push(events_rule());
            roles.insert(key("Role", OPERATOR_NS, "oos-chat-operator"), ns);
            roles.insert(
                key("ClusterRole", "", "oos-chat-operator-namespaces"),
                vec![named_rule(&[""], &["namespaces"], &[OPERATOR_NS], &["get"])],
            );
        }
        other => panic!("unknown install {other}"),
    }
    roles
}

fn rendered_roles(docs: &[Value]) -> Roles {
    docs.iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        .map(|d| {
            let k = key(
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap(),
            );
            (k, d["rules"].as_array().cloned().unwrap_or_default())
        })
        .collect()
}

/// Exact comparison: same roles, same rules in the same order, nothing more.
fn check_roles(actual: &Roles, expected: &Roles) -> Result<(), String> {
    for (k, rules) in actual {
        let text = serde_json::to_string(rules).unwrap();
        if text.contains("\"*\"") {
            return Err(format!("{k:?} has a wildcard: {text}"));
        }
        match expected.get(k) {
            None => return Err(format!("unexpected role {k:?}: {text}")),
            Some(want) if want != rules => {
                return Err(format!(
                    "{k:?} rules differ:\n  got  {text}\n  want {}",
                    serde_json::to_string(want).unwrap()
                ));
            }
            Some(_) => {}
        }
    }
    for k in expected.keys() {
        if !actual.contains_key(k) {
            return Err(format!("missing role {k:?}"));
        }
    }
    Ok(())
}

#[test]
fn rbac_rules_are_exactly_least_privilege() {
    for dir in [BASE, NAMESPACED] {
        let docs = render(dir);
        let actual = rendered_roles(&docs);
        let expected = expected_roles(dir);
        if let Err(e) = check_roles(&actual, &expected) {
            panic!("{dir}: {e}");
        }

        // Every binding binds exactly the operator's ServiceAccount to one of these roles,
        // and every role is bound.
        let bindings: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
            .collect();
        assert_eq!(
            bindings.len(),
            expected.len(),
            "{dir}: one binding per role"
        );
        for b in bindings {
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": "oos-chat-operator", "namespace": OPERATOR_NS}]),
                "{dir}: {}",
                b["metadata"]["name"]
            );
            let role_kind = b["roleRef"]["kind"].as_str().unwrap();
            let ns = if role_kind == "Role" {
                b["metadata"]["namespace"].as_str().unwrap()
            } else {
                assert_eq!(
                    b["kind"], "ClusterRoleBinding",
                    "{dir}: no RoleBinding to a ClusterRole"
                );
                ""
            };
            let k = key(role_kind, ns, b["roleRef"]["name"].as_str().unwrap());
            assert!(expected.contains_key(&k), "{dir}: binding to {k:?}");
        }
    }
}

/// The comparison bites: one more verb, one more resource, a wildcard or a missing rule fails.
#[test]
fn rbac_check_rejects_any_extra_permission() {
    let expected = expected_roles(BASE);
    let cluster = key("ClusterRole", "", "oos-chat-operator");
    assert!(check_roles(&expected, &expected).is_ok());

    let mut more_verbs = expected.clone();
    more_verbs.get_mut(&cluster).unwrap()[3]["verbs"]
        .as_array_mut()
        .unwrap()
        .push(json!("delete"));
    assert!(check_roles(&more_verbs, &expected).is_err());

    let mut more_resources = expected.clone();
    more_resources
        .get_mut(&cluster)
        .unwrap()
        .push(rule(&[""], &["configmaps"], &["get"]));
    assert!(check_roles(&more_resources, &expected).is_err());

    let mut wildcard = expected.clone();
    wildcard.get_mut(&cluster).unwrap()[0]["verbs"] = json!(["*"]);
    assert!(check_roles(&wildcard, &expected).is_err());

    let mut fewer = expected.clone();
    fewer.get_mut(&cluster).unwrap().pop();
    assert!(check_roles(&fewer, &expected).is_err());

    let mut another_role = expected.clone();
    another_role.insert(
        key("ClusterRole", "", "extra"),
        vec![rule(&[""], &["pods"], &["list"])],
    );
    assert!(check_roles(&another_role, &expected).is_err());
}

// ---------------------------------------------------------------------------------------
// The Deployment

#[test]
fn deployment_is_hardened_and_wired() {
    for dir in [BASE, NAMESPACED] {
        let docs = render(dir);
        let dep = find(&docs, "Deployment", "oos-chat-operator");
        assert_eq!(dep["metadata"]["namespace"], OPERATOR_NS);
        let pod = &dep["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "oos-chat-operator");
        assert_eq!(
            pod["automountServiceAccountToken"], true,
            "{dir}: the operator needs its token"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["runAsUser"], 65532,
            "{dir}: the image's USER"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{dir}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{dir}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{dir}");
        assert!(sc["capabilities"]["add"].is_null(), "{dir}");
        assert_eq!(sc["runAsNonRoot"], true, "{dir}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{dir}");
        for r in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][r][res].is_string(),
                    "{dir}: resources.{r}.{res}"
                );
            }
        }

        // Downward API: POD_NAME (reporter instance, lease holder) and POD_NAMESPACE.
        let env: BTreeMap<&str, &Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect();
        for (var, path) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            assert_eq!(
                env[var]["valueFrom"]["fieldRef"]["fieldPath"], path,
                "{dir}: {var}"
            );
        }
        assert!(
            !env.keys().any(|k| k.starts_with("ALIBABA_CLOUD_")),
            "{dir}: no credentials in the manifest"
        );

        // Flags: metrics on the probed port; --namespace only in the namespaced overlay.
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--metrics-addr=0.0.0.0:8080"),
            "{dir}: {args:?}"
        );
        assert!(args.contains(&"--log-format=json"), "{dir}: {args:?}");
        let namespaces: Vec<&&str> = args
            .iter()
            .filter(|a| a.starts_with("--namespace"))
            .collect();
        match dir {
            BASE => assert!(namespaces.is_empty(), "{dir}: {args:?}"),
            _ => assert_eq!(namespaces, [&"--namespace=oos-chat-operator"], "{dir}"),
        }
        assert_eq!(
            c["ports"],
            json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/healthz", "port": "metrics"})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "metrics"})
        );
        let image = c["image"].as_str().unwrap();
        assert!(
            image.starts_with("oos-chat-operator:"),
            "{dir}: versioned image, got {image}"
        );

        // The metrics Service selects the pod.
        let svc = find(&docs, "Service", "oos-chat-operator-metrics");
        let labels = &dep["spec"]["template"]["metadata"]["labels"];
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{dir}: selector {k}");
        }
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");

        // The CRD is the generated one, byte for byte in content.
        let crd = find(
            &docs,
            "CustomResourceDefinition",
            "chatconfigurations.oos.chatops.dev",
        );
        let generated: Value = serde_yaml::from_str(&oos_chat_operator::crd::crd_yaml()).unwrap();
        assert_eq!(crd["spec"], generated["spec"], "{dir}: CRD spec");
        // No samples in an install.
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "ChatConfiguration" || d["kind"] == "Secret"),
            "{dir}: samples are not part of the install"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Server-side dry runs

/// `kubectl apply -f -` with `stdin` as the manifest.
fn kubectl_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = control_plane()
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The operator's Namespace, applied for real: a server-side dry run of namespaced objects
/// needs their namespace to exist (and its Pod Security labels to judge the Deployment).
fn ensure_operator_namespace() {
    let ns = find(&render(BASE), "Namespace", OPERATOR_NS).clone();
    let out = kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &ns.to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn server_dry_run_base_and_overlay_are_clean() {
    ensure_operator_namespace();
    let cp = control_plane();
    for dir in [BASE, NAMESPACED] {
        let out = ok(cp
            .kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-k",
            ])
            .arg(Path::new(ROOT).join(dir)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Clean: no warning at all (Pod Security `restricted` warns on a weaker pod template).
        assert!(stderr.trim().is_empty(), "{dir}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for obj in [
            "deployment.apps/oos-chat-operator",
            "serviceaccount/oos-chat-operator",
            "customresourcedefinition.apiextensions.k8s.io/chatconfigurations.oos.chatops.dev",
        ] {
            assert!(stdout.contains(obj), "{dir}: {stdout}");
        }
    }
    // `kubectl apply -f crds/` (README, hack/demo.sh) still sees only the CRD: kustomize's
    // entry there is named `Kustomization`, which kubectl -f skips.
    let out = ok(cp
        .kubectl()
        .args(["apply", "--dry-run=server", "--server-side", "-f"])
        .arg(Path::new(ROOT).join("crds")));
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The clean dry run above means something: the namespace's `restricted` Pod Security level
/// warns about a weaker pod template.
#[test]
fn server_dry_run_flags_a_weaker_pod() {
    ensure_operator_namespace();
    let mut dep = find(&render(BASE), "Deployment", "oos-chat-operator").clone();
    let sc = &mut dep["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    sc.as_object_mut()
        .unwrap()
        .remove("allowPrivilegeEscalation");
    sc["capabilities"] = json!({"add": ["NET_ADMIN"]});
    let out = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &dep.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("would violate PodSecurity \"restricted"),
        "expected a Pod Security warning, got: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// The operator's RBAC suffices for a full lifecycle

fn apply_for_real(dir: &str) {
    ok(control_plane()
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-k"])
        .arg(Path::new(ROOT).join(dir)));
}

fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Waits until the authorizer (an informer cache) reflects applied or deleted RBAC.
async fn wait_rbac(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !probe().await {
        assert!(
            std::time::Instant::now() < deadline,
            "RBAC not effective within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lifecycle(h: &Harness) {
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("alerts", "tpl-1")).await;
    h.wait_ready("alerts", "True", Some("Synced")).await;
    assert_eq!(h.calls("CreateChatConfiguration"), 1);

    // An output Secret owned by the object: an ownerReference with blockOwnerDeletion, which
    // the OwnerReferencesPermissionEnforcement admission plugin allows only with `update` on
    // chatconfigurations/finalizers.
    h.put_secret("wecom", &[("secret", WECOM_SECRET)]).await;
    h.apply(json!({
        "metadata": {"name": "wecom-bot"},
        "spec": {
            "type": "WeChat",
            "weChat": {"clientId": "corp-1", "clientSecretRef": {"name": "wecom", "key": "secret"}},
            "outputSecretRef": {"name": "wecom-bot-output"}
        }
    }))
    .await;
    h.wait_ready("wecom-bot", "True", Some("Synced")).await;
    assert_eq!(h.calls("CreateChatConfiguration"), 2);
    let out = h.secrets().get("wecom-bot-output").await.unwrap();
    let owner = &out.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.name.as_str(), owner.block_owner_deletion),
        ("wecom-bot", Some(true))
    );

    // Secret rotation: exactly one Update.
    let before = h
        .objects()
        .get("alerts")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_applied_secret_hash;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_2)])
        .await;
    wait_for(WAIT, || async {
        anyhow::ensure!(h.calls("UpdateChatConfiguration") >= 1, "no update yet");
        let o = h.objects().get("alerts").await?;
        anyhow::ensure!(o.status.unwrap().last_applied_secret_hash != before);
        Ok(())
    })
    .await
    .expect("rotation propagated");
    h.wait_ready("alerts", "True", None).await;
    assert_eq!(h.calls("UpdateChatConfiguration"), 1);

    // Delete both: the remotes go (default policy Delete, read from the Namespace too).
    for name in ["alerts", "wecom-bot"] {
        h.objects()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_for(WAIT, || async {
        for name in ["alerts", "wecom-bot"] {
            anyhow::ensure!(
                h.objects().get_opt(name).await?.is_none(),
                "{name} still present"
            );
        }
        Ok(())
    })
    .await
    .expect("objects deleted");
    for name in ["alerts", "wecom-bot"] {
        let err = h
            .oos
            .get_chat_configuration(REGION, name)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "remote {name} deleted: {err}");
    }
    assert_eq!(h.calls("CreateChatConfiguration"), 2);
    assert_eq!(h.calls("UpdateChatConfiguration"), 1);
    assert_eq!(h.calls("DeleteChatConfiguration"), 2);

    // The operator's events were written by the ServiceAccount.
    let events: Api<Event> = Api::namespaced(h.client.clone(), &h.ns);
    let ours = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("oos-chat-operator"))
        .count();
    assert!(ours > 0, "no events from the operator in {}", h.ns);

    // Nothing was denied along the way: a denied call ends up in the operator's log (a failed
    // reconcile at debug, a failed event at warn), and a clean run logs next to nothing, so
    // first prove the capture works with a marker.
    tracing::warn!(target: "oos_chat_operator::deploy_test", "log capture marker");
    let logs = String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_lowercase();
    assert!(
        logs.contains("log capture marker"),
        "operator logs are captured"
    );
    for needle in ["forbidden", "cannot publish event"] {
        assert!(
            !logs.contains(needle),
            "the operator logged {needle:?}:\n{logs}"
        );
    }
}

/// What the operator does in its own namespace besides reconciling: the leader-election Lease
/// (create; get/patch by name) and the secret-hash-key Secret (get/create).
async fn operator_namespace_access(sa: &kube::Client, admin: &kube::Client) {
    let leases: Api<Lease> = Api::namespaced(sa.clone(), OPERATOR_NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "oos-chat-operator"},
        "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let mut current = match leases.get_opt("oos-chat-operator").await.unwrap() {
        Some(l) => l,
        None => leases.create(&PostParams::default(), &lease).await.unwrap(),
    };
    current.spec.as_mut().unwrap().holder_identity = Some("test-2".into());
    // Renewals are server-side apply patches (kube-lease-manager).
    leases
        .patch(
            "oos-chat-operator",
            &PatchParams::apply("rbac-test").force(),
            &Patch::Apply(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "spec": {"holderIdentity": "test-2"}}),
            ),
        )
        .await
        .expect("patch own lease");
    assert!(
        forbidden(leases.get("someone-elses-lease").await),
        "get other lease"
    );
    assert!(
        forbidden(
            Api::<Lease>::namespaced(sa.clone(), "default")
                .create(&PostParams::default(), &lease)
                .await
        ),
        "lease outside the operator namespace"
    );

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), OPERATOR_NS);
    let key_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "oos-chat-operator-secret-hash-key"},
        "stringData": {"key": "test-key"}
    }))
    .unwrap();
    if secrets
        .get_opt("oos-chat-operator-secret-hash-key")
        .await
        .unwrap()
        .is_none()
    {
        secrets
            .create(&PostParams::default(), &key_secret)
            .await
            .expect("create the key Secret");
    }
    assert!(
        forbidden(
            secrets
                .delete(
                    "oos-chat-operator-secret-hash-key",
                    &DeleteParams::default()
                )
                .await
        ),
        "the operator never deletes Secrets"
    );

    // Leave nothing a real operator would pick up (a foreign lease holder, a key in a format
    // of this test's choosing).
    let _ = Api::<Lease>::namespaced(admin.clone(), OPERATOR_NS)
        .delete("oos-chat-operator", &DeleteParams::default())
        .await;
    let _ = Api::<Secret>::namespaced(admin.clone(), OPERATOR_NS)
        .delete(
            "oos-chat-operator-secret-hash-key",
            &DeleteParams::default(),
        )
        .await;
}

/// Tests that change the operator's RBAC for real run one at a time.
static RBAC_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn operator_rbac_suffices_for_the_lifecycle() {
    let _serial = RBAC_LOCK.lock().await;
    let cp = control_plane();
    let sa = cp.client_as(SA).await;
    let admin = cp.client().await;

    // Namespaced overlay: Roles in the operator namespace, which is also the watched one. A
    // base install by another test must not lend its cluster-wide grant.
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
        .delete("oos-chat-operator", &DeleteParams::default())
        .await;
    apply_for_real(NAMESPACED);
    wait_rbac("namespaced roles", async || {
        Api::<ChatConfiguration>::namespaced(sa.clone(), OPERATOR_NS)
            .list(&ListParams::default())
            .await
            .is_ok()
    })
    .await;
    assert!(
        forbidden(
            Api::<ChatConfiguration>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        "namespaced install: no cluster-wide list"
    );
    assert!(
        forbidden(
            Api::<Secret>::namespaced(sa.clone(), "default")
                .list(&ListParams::default())
                .await
        ),
        "namespaced install: no Secrets elsewhere"
    );
    operator_namespace_access(&sa, &admin).await;
    let h = Harness::start_with_client(
        "rbac-namespaced",
        Duration::from_secs(2),
        ControllerClient {
            client: sa.clone(),
            namespace: Some(OPERATOR_NS.into()),
            watch_all: false,
        },
    )
    .await;
    lifecycle(&h).await;
    h.stop().await;

    // Drop the overlay's own roles: the ServiceAccount is back to leader election only.
    ok(cp
        .kubectl()
        .args(["delete", "-f"])
        .arg(Path::new(ROOT).join(NAMESPACED).join("role.yaml"))
        .arg("-f")
        .arg(Path::new(ROOT).join(NAMESPACED).join("namespaces.yaml")));
    wait_rbac("namespaced roles removed", async || {
        forbidden(
            Api::<ChatConfiguration>::namespaced(sa.clone(), OPERATOR_NS)
                .list(&ListParams::default())
                .await,
        )
    })
    .await;

    // Cluster-wide base: the controller watches every namespace.
    apply_for_real(BASE);
    wait_rbac("cluster role", async || {
        Api::<ChatConfiguration>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .is_ok()
    })
    .await;
    operator_namespace_access(&sa, &admin).await;
    let h = Harness::start_with_client(
        "rbac-cluster",
        Duration::from_secs(2),
        ControllerClient {
            client: sa.clone(),
            namespace: None,
            watch_all: true,
        },
    )
    .await;
    // Impersonation is real: the ServiceAccount may not delete Secrets even now.
    assert!(forbidden(
        Api::<Secret>::namespaced(sa.clone(), &h.ns)
            .delete("anything", &DeleteParams::default())
            .await
    ));
    lifecycle(&h).await;
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// The operator binary with the Deployment's own arguments

/// Kills the operator process when the test ends, also on panic.
struct Operator(std::process::Child);
impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `oos-chat-operator` binary, started with exactly the base Deployment's arguments
/// and environment (metrics moved to a free loopback port, the emulator as OOS endpoint),
/// authenticated with a real ServiceAccount token (TokenRequest) under the base RBAC: it
/// serves /healthz and /readyz, holds the Lease, creates the secret-hash-key Secret and runs
/// a lifecycle without a single denied call.
#[tokio::test]
async fn deployment_args_run_the_operator_as_its_service_account() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;

    let _serial = RBAC_LOCK.lock().await;
    let cp = control_plane();
    let admin = cp.client().await;
    apply_for_real(BASE);
    let sa_client = cp.client_as(SA).await;
    wait_rbac("cluster role", async || {
        Api::<ChatConfiguration>::all(sa_client.clone())
            .list(&ListParams::default())
            .await
            .is_ok()
    })
    .await;
    let _ = Api::<Lease>::namespaced(admin.clone(), OPERATOR_NS)
        .delete("oos-chat-operator", &DeleteParams::default())
        .await;

    // A kubeconfig with a real token of the ServiceAccount, verifying the server's CA.
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), OPERATOR_NS)
        .create_token_request("oos-chat-operator", &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let ca = std::fs::read(cp.ca_cert_path()).unwrap();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: sa\n  user:\n    token: {token}\n\
             contexts:\n- name: sa\n  context: {{cluster: c, user: sa}}\ncurrent-context: sa\n",
            cp.server(),
            support::base64(&ca)
        ),
    )
    .unwrap();

    let emulator = support::harness::test_emulator().await;

    let docs = render(BASE);
    let container = &find(&docs, "Deployment", "oos-chat-operator")["spec"]["template"]["spec"]["containers"]
        [0];
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr={metrics}")
            } else {
                a
            }
        })
        .collect();
    args.push(format!("--oos-endpoint={}", emulator.endpoint()));
    let pod_name = "oos-chat-operator-7d9f-test";
    let stderr = dir.path().join("operator.log");
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_oos-chat-operator"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", pod_name)
            .env("POD_NAMESPACE", OPERATOR_NS)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the operator"),
    );

    // The kubelet's probes.
    let http = reqwest::Client::new();
    wait_for(WAIT, || async {
        for path in ["/healthz", "/readyz"] {
            let r = http.get(format!("http://{metrics}{path}")).send().await?;
            anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "probes: {e:#}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });

    // Leader election and the key Secret, in the operator namespace.
    wait_for(WAIT, || async {
        let lease = Api::<Lease>::namespaced(admin.clone(), OPERATOR_NS)
            .get("oos-chat-operator")
            .await?;
        let holder = lease.spec.and_then(|s| s.holder_identity);
        anyhow::ensure!(holder.as_deref() == Some(pod_name), "holder {holder:?}");
        Api::<Secret>::namespaced(admin.clone(), OPERATOR_NS)
            .get("oos-chat-operator-secret-hash-key")
            .await?;
        Ok(())
    })
    .await
    .expect("lease held and key Secret created");

    // A lifecycle in a namespace of its own.
    let ns = cp.fresh_namespace("operator-binary").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dingtalk"}, "stringData": {"clientSecret": CLIENT_SECRET_1}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let objects: Api<ChatConfiguration> = Api::namespaced(admin.clone(), &ns);
    let mut obj = dingtalk("alerts", "tpl");
    obj["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
    obj["kind"] = json!("ChatConfiguration");
    let obj: ChatConfiguration = serde_json::from_value(obj).unwrap();
    objects.create(&PostParams::default(), &obj).await.unwrap();
    wait_for(WAIT, || async {
        let o = objects.get("alerts").await?;
        let ready = o
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Ready" && c.status == "True");
        anyhow::ensure!(ready, "not Ready: {:?}", o.status);
        Ok(())
    })
    .await
    .expect("Ready");
    assert_eq!(emulator.calls().get("CreateChatConfiguration"), Some(&1));
    objects
        .delete("alerts", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(WAIT, || async {
        anyhow::ensure!(objects.get_opt("alerts").await?.is_none());
        Ok(())
    })
    .await
    .expect("deleted");
    assert_eq!(emulator.calls().get("DeleteChatConfiguration"), Some(&1));

    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(pod_name)),
        "events carry POD_NAME as reporting instance"
    );
    let log = std::fs::read_to_string(&stderr).unwrap().to_lowercase();
    assert!(!log.contains("forbidden"), "{log}");
}
