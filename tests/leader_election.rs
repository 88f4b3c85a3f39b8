//! Two operator processes on one Lease: only the leader reconciles; after the leader is killed
//! with SIGKILL the standby takes over within the lease duration, and no write is doubled.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use oos_chat_operator::crd::ChatConfiguration;
use oos_emulator::{AccessKey, EmulatorConfig};
use serde_json::json;
use support::control_plane;
use support::harness::{CLIENT_SECRET_1, WAIT, dingtalk, install_crd, wait_for};
use support::process::{OperatorProcess, http_get, scoped_args};

const LEASE_SECONDS: u64 = 4;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("oos-chat-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn standby_takes_over_after_sigkill_without_double_writes() {
    let cp = control_plane();
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = cp.fresh_namespace("leader").await;
    // Each process signs with its own key of the same account, so the emulator's log tells
    // which one called.
    let emulator = oos_emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![
            AccessKey::new("ak-a", "secret-a-1f2e"),
            AccessKey::new("ak-b", "secret-b-3d4c"),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let endpoint = emulator.endpoint();
    let duration = format!("{LEASE_SECONDS}s");
    let args = [
        &scoped_args(&ns)[..],
        &[
            "--oos-endpoint",
            endpoint.as_str(),
            "--leader-elect-lease-duration",
            duration.as_str(),
        ],
    ]
    .concat();
    let start = |name: &str, ak: &str, sk: &str| {
        OperatorProcess::start(
            &args,
            &[
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", ak),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", sk),
                ("POD_NAME", name),
            ],
        )
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let a = start("op-a", "ak-a", "secret-a-1f2e");
    a.wait_for_log("acquired the leader lease", WAIT).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("op-a"));
    let b = start("op-b", "ak-b", "secret-b-3d4c");
    b.wait_for_log("waiting for the leader lease", WAIT).await;
    let b_metrics = b.metrics_addr().await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "dingtalk",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "dingtalk"}, "stringData": {"clientSecret": CLIENT_SECRET_1}})),
        )
        .await
        .unwrap();
    let objects: Api<ChatConfiguration> = Api::namespaced(client.clone(), &ns);
    let names = ["one", "two", "three"];
    let apply = |name: &'static str, template: &'static str| {
        let objects = objects.clone();
        async move {
            let mut m = dingtalk(name, template);
            m["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
            m["kind"] = json!("ChatConfiguration");
            objects
                .patch(name, &PatchParams::apply("test"), &Patch::Apply(&m))
                .await
                .unwrap();
        }
    };
    let all_ready = |generation_changed: bool| {
        let objects = objects.clone();
        async move {
            wait_for(WAIT, || async {
                for name in names {
                    let o = objects.get(name).await?;
                    let st = o.status.unwrap_or_default();
                    anyhow::ensure!(
                        !generation_changed || st.observed_generation == o.metadata.generation,
                        "{name}: old generation"
                    );
                    anyhow::ensure!(
                        st.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True"),
                        "{name} not Ready"
                    );
                }
                Ok(())
            })
            .await
        }
    };
    for name in names {
        apply(name, "tpl-1").await;
    }
    all_ready(false).await.unwrap();

    // The standby serves its probes and reconciles nothing.
    assert_eq!(http_get(&b_metrics, "/healthz").await.0, 200);
    assert_eq!(http_get(&b_metrics, "/readyz").await.0, 200);
    let by_key = |key: &str| {
        emulator
            .requests()
            .iter()
            .filter(|r| r.access_key_id.as_deref() == Some(key))
            .count()
    };
    assert!(by_key("ak-a") > 0);
    assert_eq!(by_key("ak-b"), 0, "the standby made no OOS call");

    // SIGKILL the leader: no release, the lease has to expire.
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    for name in names {
        apply(name, "tpl-2").await;
    }
    wait_for(Duration::from_secs(LEASE_SECONDS + 10), || async {
        anyhow::ensure!(holder(&leases).await.as_deref() == Some("op-b"));
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("no takeover: {e}\n{}", b.log()));
    let takeover = killed.elapsed();
    all_ready(true).await.unwrap();
    eprintln!(
        "takeover after SIGKILL: {takeover:?} (lease {LEASE_SECONDS} s); all updated {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "takeover took {takeover:?}"
    );
    let calls = emulator.calls();
    assert_eq!(
        calls.get("CreateChatConfiguration"),
        Some(&3),
        "no double Create"
    );
    assert_eq!(
        calls.get("UpdateChatConfiguration"),
        Some(&3),
        "no double Update"
    );
    for name in names {
        let r = emulator
            .requests()
            .into_iter()
            .filter(|r| {
                r.action.as_deref() == Some("UpdateChatConfiguration")
                    && r.params.get("Name").map(String::as_str) == Some(name)
            })
            .collect::<Vec<_>>();
        assert_eq!(r.len(), 1, "{name}: one Update");
        assert_eq!(
            r[0].access_key_id.as_deref(),
            Some("ak-b"),
            "by the new leader"
        );
    }
    drop(a);
    drop(b);
    emulator.shutdown().await;
}
