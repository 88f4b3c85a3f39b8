//! The operator binary as a process, as users run it: start-up without the CRD, what it logs
//! at the default level, signals, metrics, the secret-hash key. One sequential test, because
//! it needs this test binary's control plane without the CRD first.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use oos_chat_operator::crd::ChatConfiguration;
use serde_json::json;
use support::control_plane;
use support::harness::{AK_ID, AK_SECRET, CLIENT_SECRET_1, WAIT, dingtalk, install_crd, wait_for};
use support::process::{OperatorProcess, http_get, scoped_args};

#[tokio::test]
async fn operator_process_start_logs_signals_metrics() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.fresh_namespace("process").await;
    let common = scoped_args(&ns);

    // Finding 8: no CRD yet. The operator says what to apply, keeps trying, and a SIGTERM ends
    // it within 10 s.
    let mut op = OperatorProcess::start(&common, &[]);
    op.wait_for_log(
        "kubectl apply --server-side -f crds/",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        op.log().contains("ERROR"),
        "said at error level:\n{}",
        op.log()
    );
    let signalled = Instant::now();
    op.signal(libc::SIGTERM);
    let status = op
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", op.log()));
    assert!(status.success(), "{status}");
    eprintln!("no CRD: stopped {:?} after SIGTERM", signalled.elapsed());

    // With the CRD, credentials and an emulator: a real lifecycle.
    install_crd(&client).await;
    let emulator = support::harness::test_emulator().await;
    let endpoint = emulator.endpoint();
    let mut args = common.to_vec();
    args.extend(["--oos-endpoint", endpoint.as_str()]);
    let mut op = OperatorProcess::start(
        &args,
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
            ("POD_NAME", "operator-under-test"),
        ],
    );
    let metrics = op.metrics_addr().await;
    op.wait_for_log("acquired the leader lease", WAIT).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "dingtalk",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "dingtalk"}, "stringData": {"clientSecret": CLIENT_SECRET_1}})),
        )
        .await
        .unwrap();
    let objects: Api<ChatConfiguration> = Api::namespaced(client.clone(), &ns);
    let mut m = dingtalk("logged", "tpl");
    m["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
    m["kind"] = json!("ChatConfiguration");
    objects
        .patch(
            "logged",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(&m),
        )
        .await
        .unwrap();
    wait_for(WAIT, || async {
        let o = objects.get("logged").await?;
        let ready = o
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        anyhow::ensure!(ready, "not Ready");
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log()));

    // Finding 9: at the default level, one info line per remote write with its RequestId;
    // no colour codes when stderr is not a terminal; no secret anywhere.
    let request_id = emulator
        .requests()
        .into_iter()
        .find(|r| r.action.as_deref() == Some("CreateChatConfiguration"))
        .expect("a Create reached the emulator")
        .request_id;
    op.wait_for_log(&request_id, Duration::from_secs(5)).await;
    let log = op.log();
    let create_line = log
        .lines()
        .find(|l| l.contains(&request_id))
        .unwrap()
        .to_string();
    assert!(create_line.contains("INFO"), "{create_line}");
    assert!(
        create_line.contains("CreateChatConfiguration"),
        "{create_line}"
    );
    assert!(
        create_line.contains(&format!("{ns}/logged")),
        "{create_line}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a non-terminal log"
    );
    for secret in [AK_SECRET, CLIENT_SECRET_1] {
        assert!(!log.contains(secret), "a secret in the log");
    }

    // Finding 7: the secret-hash key is random and kept in a Secret of the operator namespace.
    let key_secret = secrets
        .get("oos-chat-operator-secret-hash-key")
        .await
        .expect("key Secret created");
    assert_eq!(key_secret.data.unwrap()["key"].0.len(), 32);

    // Metrics and probes.
    assert_eq!(http_get(&metrics, "/healthz").await.0, 200);
    assert_eq!(http_get(&metrics, "/readyz").await.0, 200);
    let (_, text) = http_get(&metrics, "/metrics").await;
    for want in [
        r#"oos_chat_operator_oos_calls_total{action="CreateChatConfiguration",code="OK"} 1"#,
        &format!(r#"oos_chat_operator_ready{{namespace="{ns}",name="logged"}} 1"#),
        "oos_chat_operator_leader 1",
        "oos_chat_operator_inventory_configurations",
        "oos_chat_operator_reconcile_duration_seconds_bucket",
    ] {
        assert!(text.contains(want), "{want} missing from /metrics:\n{text}");
    }
    assert!(!text.contains(AK_SECRET) && !text.contains(CLIENT_SECRET_1));

    // SIGTERM while running: out within 10 s, lease handed over at once.
    let signalled = Instant::now();
    op.signal(libc::SIGTERM);
    let status = op
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", op.log()));
    assert!(status.success(), "{status}\n{}", op.log());
    eprintln!("running: stopped {:?} after SIGTERM", signalled.elapsed());
    let lease: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = lease
        .get("oos-chat-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        holder.as_deref(),
        Some("operator-under-test"),
        "lease released"
    );
    emulator.shutdown().await;
}
