//! GitOps health of ChatConfiguration objects produced by real reconciles (the harness: real
//! kube-apiserver, in-process controller and emulator), judged by
//! - Argo CD's health check: `deploy/argocd/health.lua`, run with Lua (mlua);
//! - kstatus (`sigs.k8s.io/cli-utils` v0.37.2 `status.Compute`, what Flux and kpt use), and
//!   the Flux Kustomization's `healthCheckExprs` in `deploy/flux/kustomization.yaml`, evaluated
//!   with cel-go the way Flux does: both by the Go program in `hack/kstatus/`.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};
use oos_chat_operator::crd::ChatConfiguration;
use serde_json::{Value, json};
use support::harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn health_lua() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("deploy/argocd/health.lua")).unwrap()
}

/// Argo CD's view: (status, message).
fn argocd_health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // JSON null is absent in Argo CD's Lua tables (nil), not a sentinel value.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: Table = lua
        .load(health_lua())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed: {e}"));
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KStatus {
    kstatus: String,
    message: String,
    flux: String,
    #[serde(default)]
    flux_error: String,
}

/// kstatus and Flux's healthCheckExprs for each object (hack/kstatus, built on first use).
fn kstatus(objects: &[&Value]) -> Vec<KStatus> {
    let build = Command::new("bash")
        .arg(Path::new(ROOT).join("hack/kstatus.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run hack/kstatus.sh");
    assert!(build.status.success(), "hack/kstatus.sh failed");
    let bin = String::from_utf8(build.stdout).unwrap();
    let bin = bin.lines().last().expect("kstatus binary path");
    let mut child = Command::new(bin)
        .arg("-flux-kustomization")
        .arg(Path::new(ROOT).join("deploy/flux/kustomization.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(objects).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The object exactly as the API server returns it.
async fn raw(h: &Harness, name: &str) -> Value {
    let ar = ApiResource::erase::<ChatConfiguration>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), &h.ns, &ar);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {obj}"))
}

#[tokio::test]
async fn argocd_kstatus_and_flux_agree_on_real_objects() {
    let h = Harness::start("gitops", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;

    // Ready.
    h.apply(dingtalk("ready", "tpl")).await;
    h.wait_ready("ready", "True", Some("Synced")).await;

    // Stalled: a remote of that name exists and adoptionPolicy is the default Refuse.
    h.oos
        .create_chat_configuration(REGION, &remote_input("taken", "theirs"))
        .await
        .unwrap();
    h.apply(dingtalk("taken", "ours")).await;
    h.wait_ready("taken", "False", Some("AlreadyExists")).await;

    // Progressing: the referenced Secret does not exist (yet).
    let mut waiting = dingtalk("waiting", "tpl");
    waiting["spec"]["dingTalk"]["clientSecretRef"]["name"] = json!("not-there-yet");
    h.apply(waiting).await;
    h.wait_ready("waiting", "False", Some("SecretNotFound"))
        .await;

    // Paused, then changed: the operator does not look (no status write).
    h.apply(dingtalk("paused", "tpl")).await;
    h.wait_ready("paused", "True", Some("Synced")).await;
    h.annotate("paused", "oos.chatops.dev/paused", "true").await;
    h.apply(dingtalk("paused", "tpl-2")).await;

    let ready = raw(&h, "ready").await;
    let stalled = raw(&h, "taken").await;
    let progressing = raw(&h, "waiting").await;
    let paused = raw(&h, "paused").await;
    assert_eq!(condition(&stalled, "Stalled")["status"], "True");
    assert_eq!(condition(&progressing, "Reconciling")["status"], "True");
    assert_ne!(
        paused["metadata"]["generation"],
        paused["status"]["observedGeneration"]
    );

    // Stale observedGeneration: the spec changes while the operator is down. And an object
    // created meanwhile has no status at all.
    let client = h.client.clone();
    let ns = h.ns.clone();
    h.stop().await;
    let api: Api<ChatConfiguration> = Api::namespaced(client.clone(), &ns);
    let mut changed = dingtalk("ready", "tpl-changed");
    changed["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
    changed["kind"] = json!("ChatConfiguration");
    api.patch(
        "ready",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&changed),
    )
    .await
    .unwrap();
    let mut fresh = dingtalk("fresh", "tpl");
    fresh["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
    fresh["kind"] = json!("ChatConfiguration");
    api.patch("fresh", &PatchParams::apply("test"), &Patch::Apply(&fresh))
        .await
        .unwrap();
    let ar = ApiResource::erase::<ChatConfiguration>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let stale = serde_json::to_value(dynamic.get("ready").await.unwrap()).unwrap();
    let no_status = serde_json::to_value(dynamic.get("fresh").await.unwrap()).unwrap();
    assert_eq!(stale["metadata"]["generation"], 2);
    assert_eq!(stale["status"]["observedGeneration"], 1);
    assert_eq!(
        condition(&stale, "Ready")["status"],
        "True",
        "still says Ready"
    );
    assert!(
        no_status
            .get("status")
            .is_none_or(|s| s.get("conditions").is_none())
    );

    // Argo CD.
    let (s, m) = argocd_health(&ready);
    assert_eq!(s, "Healthy", "{m}");
    let (s, m) = argocd_health(&stalled);
    assert_eq!(s, "Degraded", "{m}");
    assert!(
        m.contains("AlreadyExists") && m.contains("adoptionPolicy"),
        "{m}"
    );
    let (s, m) = argocd_health(&progressing);
    assert_eq!(s, "Progressing", "{m}");
    assert!(m.contains("not-there-yet"), "names the awaited Secret: {m}");
    let (s, m) = argocd_health(&stale);
    assert_eq!(s, "Progressing", "{m}");
    assert!(m.contains("generation 2"), "{m}");
    let (s, m) = argocd_health(&paused);
    assert_eq!(s, "Suspended", "{m}");
    let (s, m) = argocd_health(&no_status);
    assert_eq!(s, "Progressing", "{m}");

    // kstatus and Flux's healthCheckExprs.
    let results = kstatus(&[&ready, &stalled, &progressing, &stale, &paused, &no_status]);
    let got: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.kstatus.as_str(), r.flux.as_str()))
        .collect();
    assert_eq!(
        got[..5],
        [
            ("Current", "Current"),
            ("Failed", "Failed"),
            ("InProgress", "InProgress"),
            ("InProgress", "InProgress"),
            ("InProgress", "InProgress"),
        ],
        "{results:#?}"
    );
    for r in &results[..5] {
        assert!(r.flux_error.is_empty(), "{r:?}");
    }
    assert!(
        results[1].message.contains("adoptionPolicy"),
        "{:?}",
        results[1]
    );
    // The documented kstatus caveat: no conditions at all reads Current. Flux's expressions
    // do not call it healthy (they need status.conditions).
    assert_eq!(results[5].kstatus, "Current", "{:?}", results[5]);
    assert_ne!(results[5].flux, "Current", "{:?}", results[5]);
}

/// The argocd-cm snippet carries health.lua verbatim under the key Argo CD reads.
#[test]
fn argocd_cm_embeds_the_health_script() {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/argocd/argocd-cm.yaml")).unwrap();
    let cm: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(
        cm["data"]["resource.customizations.health.oos.chatops.dev_ChatConfiguration"]
            .as_str()
            .unwrap(),
        health_lua()
    );
}

/// Cases a live object reaches rarely: precedence and messages.
#[test]
fn argocd_health_rules() {
    let obj = |generation: i64, observed: Option<i64>, conditions: Value| {
        let mut o = json!({
            "apiVersion": "oos.chatops.dev/v1alpha1", "kind": "ChatConfiguration",
            "metadata": {"name": "x", "generation": generation},
            "status": {"conditions": conditions}
        });
        if let Some(g) = observed {
            o["status"]["observedGeneration"] = json!(g);
        }
        o
    };
    let c = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "reason": reason, "message": message});
    // Stalled wins over a Ready=True of the same generation (should not happen, but safe).
    let (s, _) = argocd_health(&obj(
        1,
        Some(1),
        json!([
            c("Ready", "True", "Synced", ""),
            c("Stalled", "True", "Conflict", "x")
        ]),
    ));
    assert_eq!(s, "Degraded");
    // A Stalled of an older generation is not Degraded: the fix may be in the new spec.
    let (s, _) = argocd_health(&obj(
        3,
        Some(2),
        json!([c("Stalled", "True", "InvalidSpec", "bad")]),
    ));
    assert_eq!(s, "Progressing");
    // No observedGeneration yet.
    let (s, m) = argocd_health(&obj(1, None, json!([c("Ready", "True", "Synced", "")])));
    assert_eq!(s, "Progressing", "{m}");
    // Conditions without Ready.
    let (s, m) = argocd_health(&obj(1, Some(1), json!([])));
    assert_eq!(
        (s.as_str(), m.as_str()),
        ("Progressing", "Waiting for the Ready condition")
    );
    // A JSON null status (nil in Lua).
    let (s, _) =
        argocd_health(&json!({"metadata": {"name": "x", "generation": 1}, "status": null}));
    assert_eq!(s, "Progressing");
}
