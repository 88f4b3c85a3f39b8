//! What users meet beyond the happy path, on a real control plane with the emulator over HTTP:
//! wrong credentials, throttling, terminal errors, another party on the same account, restarts
//! with changed flags, a crash between two writes. Remote calls and status writes are counted
//! over time windows, not only the final state.

mod support;

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use oos_chat_operator::crd::ChatConfiguration;
use oos_emulator::{AccessKey, FaultRule};
use serde_json::json;
use support::harness::*;

const OTHER_AK_ID: &str = "other-ak";
const OTHER_AK_SECRET: &str = "OTHERSECRET-right-1a2b";

fn status_of(obj: &ChatConfiguration) -> oos_chat_operator::crd::ChatConfigurationStatus {
    obj.status.clone().unwrap_or_default()
}

/// Registers a second access key of account `owner` with the emulator and puts it, with
/// `secret` as its AccessKeySecret, in Secret `name` as `spec.credentialsRef` reads it.
async fn second_key(h: &Harness, name: &str, owner: &str, secret: &str) {
    h.emulator
        .add_access_key(AccessKey::new(OTHER_AK_ID, OTHER_AK_SECRET).with_owner(owner));
    h.put_secret(
        name,
        &[("AccessKeyId", OTHER_AK_ID), ("AccessKeySecret", secret)],
    )
    .await;
}

/// Waits until the object's status describes its current generation and it is Ready.
async fn wait_converged(h: &Harness, name: &str) {
    wait_for(WAIT, || async {
        let o = h.objects().get(name).await?;
        let st = status_of(&o);
        anyhow::ensure!(
            st.observed_generation == o.metadata.generation,
            "old generation"
        );
        anyhow::ensure!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "not Ready"
        );
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: not converged: {e}"));
}

/// Finding 1: an object whose credentials are wrong makes a handful of calls, then waits for a
/// change, while an object beside it converges normally.
#[tokio::test]
async fn wrong_credentials_stall_without_a_retry_storm() {
    let h = Harness::start("wrongcreds", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    second_key(&h, "bad-creds", "1234567890", "not-the-secret").await;
    let window = Instant::now();
    let mut bad = dingtalk("bad", "tpl");
    bad["spec"]["credentialsRef"] = json!({"name": "bad-creds"});
    h.apply(bad).await;
    h.apply(dingtalk("good", "tpl")).await;

    h.wait_ready("good", "True", Some("Synced")).await;
    let good_ready_after = window.elapsed();
    let stalled = h
        .wait_ready("bad", "False", Some("InvalidCredentials"))
        .await;
    let st = status_of(&stalled);
    let stalled_cond = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled_cond.status, "True");
    let rv = stalled.metadata.resource_version.clone();

    tokio::time::sleep(Duration::from_secs(60).saturating_sub(window.elapsed())).await;
    let calls = h.calls_by_key(OTHER_AK_ID);
    eprintln!(
        "wrong credentials: {calls} signed requests in 60 s; the healthy object was Ready after {good_ready_after:?}"
    );
    assert!(
        (1..=8).contains(&calls),
        "{calls} signed requests with the wrong key in 60 s (at most 8)"
    );
    assert!(
        good_ready_after < Duration::from_secs(15),
        "the healthy object converged in {good_ready_after:?}"
    );
    assert_eq!(
        h.objects()
            .get("bad")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "no status churn while stalled"
    );
    let warnings: Vec<_> = h
        .events_for("bad")
        .await
        .into_iter()
        .filter(|(t, ..)| t == "Warning")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one event per change of state: {warnings:?}"
    );
    h.assert_no_secret_leak().await;
    h.stop().await;
}

/// Finding 1: a terminal error on Create (the service refuses a parameter) stalls after one
/// attempt; the intent is cleared; fixing the spec retries.
#[tokio::test]
async fn terminal_create_error_stalls_after_one_attempt() {
    let h = Harness::start("terminal", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.emulator
        .faults()
        .add_rule(FaultRule::error("InvalidParameter").for_action("CreateChatConfiguration"))
        .unwrap();
    h.apply(dingtalk("refused", "tpl-1")).await;
    let obj = h
        .wait_ready("refused", "False", Some("InvalidParameter"))
        .await;
    let st = status_of(&obj);
    assert!(
        st.create_requested_at.is_none(),
        "a definite failure clears the intent"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    let writes_when_stalled = h.metrics.status_writes.get();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        h.calls("CreateChatConfiguration"),
        1,
        "one attempt, no loop"
    );
    assert_eq!(
        h.calls("GetChatConfiguration"),
        0,
        "Create is its own existence check"
    );
    assert_eq!(
        h.metrics.status_writes.get(),
        writes_when_stalled,
        "no status write while stalled"
    );
    assert!(
        writes_when_stalled <= 2,
        "{writes_when_stalled} status writes"
    );
    // What GitOps tools and people add to a stalled object (a tracking annotation, a label)
    // wakes it but changes nothing it depends on: no second attempt, no write, no event.
    h.annotate(
        "refused",
        "argocd.argoproj.io/tracking-id",
        "app:oos.chatops.dev/ChatConfiguration:ns/refused",
    )
    .await;
    h.objects()
        .patch(
            "refused",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "ops"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.calls("CreateChatConfiguration"),
        1,
        "a label or a foreign annotation is no reason to retry a terminal failure"
    );
    assert_eq!(h.metrics.status_writes.get(), writes_when_stalled);
    let warnings = h
        .events_for("refused")
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .count();
    assert_eq!(warnings, 1, "one Warning event for the one change of state");
    eprintln!(
        "terminal InvalidParameter on Create: 1 Create, 0 Get, {writes_when_stalled} status writes, none in the next 13 s (a label and a foreign annotation added)"
    );

    // The service would accept the fixed spec: one more Create, then Ready.
    h.emulator.faults().clear();
    h.apply(dingtalk("refused", "tpl-2")).await;
    h.wait_ready("refused", "True", Some("Synced")).await;
    assert_eq!(h.calls("CreateChatConfiguration"), 2);
    h.assert_no_secret_leak().await;
    h.stop().await;
}

/// Finding 1: throttling is per process: 30 s of throttled Creates cost a logarithmic number
/// of attempts, and the object is Ready soon after the throttling ends.
#[tokio::test]
async fn create_throttled_for_30s_backs_off_process_wide() {
    let h = Harness::start("throttled", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.emulator
        .faults()
        .add_rule(FaultRule::error("Throttling.User").for_action("CreateChatConfiguration"))
        .unwrap();
    h.apply(dingtalk("slow", "tpl")).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = h.calls("CreateChatConfiguration");
    h.emulator.faults().clear();
    let cleared = Instant::now();
    let api = h.objects();
    wait_for(Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let o = api.get("slow").await?;
            let ready = o
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            anyhow::ensure!(ready, "not Ready yet");
            Ok(())
        }
    })
    .await
    .expect("Ready within 60 s after the throttling ends");
    let total = h.calls("CreateChatConfiguration");
    assert!(
        (2..=15).contains(&total),
        "{total} Create attempts ({during} during 30 s of throttling); at most 15"
    );
    eprintln!(
        "throttled 30 s: {during} Create attempts while throttled, {total} in all, Ready {:?} after it cleared",
        cleared.elapsed()
    );
    h.stop().await;
}

/// Finding 2: after another party deleted and recreated the configuration, deleting the object
/// leaves their configuration alone.
#[tokio::test]
async fn deleting_after_remote_replaced_leaves_the_other_partys_remote() {
    let h = Harness::start("replaced", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("shared", "ours")).await;
    h.wait_ready("shared", "True", Some("Synced")).await;

    h.oos
        .delete_chat_configuration(REGION, "shared")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new CreatedDate (whole seconds)
    h.oos
        .create_chat_configuration(REGION, &remote_input("shared", "theirs"))
        .await
        .unwrap();
    h.annotate("shared", "reconcile.fluxcd.io/requestedAt", "1")
        .await;
    h.wait_ready("shared", "False", Some("RemoteReplaced"))
        .await;
    let writes = h.writes();

    h.objects()
        .delete("shared", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_gone("shared").await;
    assert_eq!(h.writes(), writes, "no remote write, no Delete");
    let theirs = h
        .oos
        .get_chat_configuration(REGION, "shared")
        .await
        .unwrap();
    assert_eq!(
        theirs
            .configuration
            .unwrap()
            .ding_talk_template_id
            .as_deref(),
        Some("theirs")
    );
    assert!(
        h.events_for("shared")
            .await
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "RemoteNotOwned"),
        "a RemoteNotOwned warning says why the remote was kept"
    );
    h.stop().await;
}

/// Finding 3: a Create that failed for good leaves no claim behind; a configuration someone
/// else then creates under that name is never taken over, written or deleted.
#[tokio::test]
async fn failed_create_then_foreign_create_is_never_taken_over() {
    let h = Harness::start("foreign", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.emulator
        .faults()
        .add_rule(FaultRule::error("InvalidParameter").for_action("CreateChatConfiguration"))
        .unwrap();
    h.apply(dingtalk("contested", "tpl-1")).await;
    h.wait_ready("contested", "False", Some("InvalidParameter"))
        .await;
    h.emulator.faults().clear();
    h.oos
        .create_chat_configuration(REGION, &remote_input("contested", "tpl-2"))
        .await
        .unwrap();
    let creates = h.calls("CreateChatConfiguration");
    // The user fixes the spec, to exactly what the other party created.
    h.apply(dingtalk("contested", "tpl-2")).await;
    let obj = h
        .wait_ready("contested", "False", Some("AlreadyExists"))
        .await;
    assert!(status_of(&obj).ownership.is_none());
    assert_eq!(
        h.calls("UpdateChatConfiguration"),
        0,
        "their remote untouched"
    );
    assert!(h.calls("CreateChatConfiguration") <= creates + 1);

    h.objects()
        .delete("contested", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_gone("contested").await;
    assert_eq!(h.calls("DeleteChatConfiguration"), 0, "never deleted");
    assert!(
        h.oos
            .get_chat_configuration(REGION, "contested")
            .await
            .is_ok()
    );
    h.stop().await;
}

/// Finding 4: a restart with another --default-region neither moves nor duplicates objects.
#[tokio::test]
async fn restart_with_another_default_region_keeps_objects_in_place() {
    let mut h = Harness::start("region", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("pinned", "tpl")).await;
    let obj = h.wait_ready("pinned", "True", Some("Synced")).await;
    assert_eq!(status_of(&obj).region_id.as_deref(), Some(REGION));

    h.stop_controller().await;
    let mut moved = test_settings(Duration::from_secs(600));
    moved.default_region = Some("cn-beijing".into());
    h.start_controller(moved);
    h.annotate("pinned", "reconcile.fluxcd.io/requestedAt", "after-restart")
        .await;
    wait_for(WAIT, || async {
        let st = status_of(&h.objects().get("pinned").await?);
        anyhow::ensure!(st.last_handled_reconcile_at.as_deref() == Some("after-restart"));
        Ok(())
    })
    .await
    .unwrap();
    let obj = h.wait_ready("pinned", "True", Some("Synced")).await;
    assert_eq!(status_of(&obj).region_id.as_deref(), Some(REGION));
    assert_eq!(
        h.calls("CreateChatConfiguration"),
        1,
        "not recreated elsewhere"
    );
    let elsewhere = h
        .oos
        .get_chat_configuration("cn-beijing", "pinned")
        .await
        .unwrap_err();
    assert!(elsewhere.is_not_found());

    h.objects()
        .delete("pinned", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_gone("pinned").await;
    assert!(
        h.oos
            .get_chat_configuration(REGION, "pinned")
            .await
            .unwrap_err()
            .is_not_found(),
        "deleted where it lives; nothing leaks"
    );
    h.stop().await;
}

/// Finding 5: every API field converges with exactly one Update; what OOS cannot clear is
/// refused at admission; no endless Update afterwards.
#[tokio::test]
async fn every_field_converges_with_one_update() {
    let h = Harness::start("fields", Duration::from_secs(3)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.put_secret("extra", &[("token", "EXTRATOKEN-1")]).await;
    let base = || dingtalk("fields", "tpl-1");
    h.apply(base()).await;
    h.wait_ready("fields", "True", Some("Synced")).await;

    let step = |change: &'static str, spec: serde_json::Value| (change, spec);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m = base();
        f(&mut m);
        m
    };
    let steps = vec![
        step(
            "resourceGroupId added",
            with(&|m| m["spec"]["resourceGroupId"] = json!("rg-1")),
        ),
        step(
            "resourceGroupId changed",
            with(&|m| m["spec"]["resourceGroupId"] = json!("rg-2")),
        ),
        step(
            "ramRole changed",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
            }),
        ),
        step(
            "configuration key added",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
                m["spec"]["extraConfiguration"] = json!({"Locale": "zh"});
            }),
        ),
        step(
            "configuration key changed",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
                m["spec"]["extraConfiguration"] = json!({"Locale": "en"});
            }),
        ),
        step(
            "configuration key removed",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
            }),
        ),
        step(
            "template removed",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
                m["spec"]["dingTalk"]
                    .as_object_mut()
                    .unwrap()
                    .remove("templateId");
            }),
        ),
        step(
            "secret key added",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
                m["spec"]["dingTalk"]
                    .as_object_mut()
                    .unwrap()
                    .remove("templateId");
                m["spec"]["extraSecretConfiguration"] =
                    json!({"ExtraToken": {"name": "extra", "key": "token"}});
            }),
        ),
        step(
            "secret key removed",
            with(&|m| {
                m["spec"]["resourceGroupId"] = json!("rg-2");
                m["spec"]["ramRole"] = json!("OtherRole");
                m["spec"]["dingTalk"]
                    .as_object_mut()
                    .unwrap()
                    .remove("templateId");
            }),
        ),
    ];
    for (change, spec) in steps {
        let updates = h.calls("UpdateChatConfiguration");
        h.apply(spec.clone()).await;
        wait_converged(&h, "fields").await;
        assert_eq!(
            h.calls("UpdateChatConfiguration"),
            updates + 1,
            "{change}: exactly one Update"
        );
        let remote = h
            .oos
            .get_chat_configuration(REGION, "fields")
            .await
            .unwrap();
        let cfg = remote.configuration.clone().unwrap();
        let spec = &spec["spec"];
        assert_eq!(
            remote.resource_group_id.as_deref(),
            spec["resourceGroupId"].as_str(),
            "{change}"
        );
        assert_eq!(
            remote.ram_role.as_deref(),
            spec["ramRole"].as_str(),
            "{change}"
        );
        assert_eq!(
            cfg.ding_talk_template_id.as_deref(),
            spec["dingTalk"]["templateId"].as_str(),
            "{change}"
        );
        assert_eq!(
            cfg.extra.get("Locale").and_then(|v| v.as_str()),
            spec["extraConfiguration"]["Locale"].as_str(),
            "{change}"
        );
        assert_eq!(
            cfg.extra.contains_key("ExtraToken"),
            spec.get("extraSecretConfiguration").is_some(),
            "{change}"
        );
    }
    // Rotating the extra secret: one Update. (The key is back for this.)
    let mut with_secret = base();
    with_secret["spec"]["resourceGroupId"] = json!("rg-2");
    with_secret["spec"]["ramRole"] = json!("OtherRole");
    with_secret["spec"]["extraSecretConfiguration"] =
        json!({"ExtraToken": {"name": "extra", "key": "token"}});
    h.apply(with_secret).await;
    wait_converged(&h, "fields").await;
    let updates = h.calls("UpdateChatConfiguration");
    h.put_secret("extra", &[("token", "EXTRATOKEN-2")]).await;
    wait_for(WAIT, || async {
        anyhow::ensure!(h.calls("UpdateChatConfiguration") == updates + 1);
        Ok(())
    })
    .await
    .expect("rotation: one Update");

    // What OOS cannot clear is refused at admission, naming the field.
    for (field, want) in [
        ("ramRole", "spec.ramRole cannot be removed"),
        ("resourceGroupId", "spec.resourceGroupId cannot be removed"),
    ] {
        let patch = json!({"spec": {field: null}});
        let err = h
            .objects()
            .patch("fields", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }

    // Converged: a few resyncs (3 s) write nothing.
    let updates = h.calls("UpdateChatConfiguration");
    let status_writes = h.metrics.status_writes.get();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        h.calls("UpdateChatConfiguration"),
        updates,
        "no endless Update"
    );
    assert_eq!(
        h.metrics.status_writes.get(),
        status_writes,
        "no status churn"
    );
    h.assert_no_secret_leak().await;
    h.stop().await;
}

/// Finding 6 (and the first-create case): a crash between Create and the next status write
/// is resumed from the recorded intent — as this object's own configuration, with no second
/// Create and no takeover of anything that does not match what was sent.
#[tokio::test]
async fn interrupted_create_and_recreate_resume_their_own_remote() {
    let mut h = Harness::start("crash", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;

    // First create: the intent is recorded, the Create committed, the process died.
    h.stop_controller().await;
    h.apply(dingtalk("crashy", "tpl-1")).await;
    h.record_create_intent("crashy", CLIENT_SECRET_1, chrono::Utc::now())
        .await;
    h.oos
        .create_chat_configuration(REGION, &remote_input("crashy", "tpl-1"))
        .await
        .unwrap();
    // Same, but the configuration that holds the name is not the one that was sent.
    h.apply(dingtalk("impostor", "tpl-1")).await;
    h.record_create_intent("impostor", CLIENT_SECRET_1, chrono::Utc::now())
        .await;
    h.oos
        .create_chat_configuration(REGION, &remote_input("impostor", "something-else"))
        .await
        .unwrap();
    h.emulator.reset();
    h.start_controller(test_settings(Duration::from_secs(600)));

    let obj = h.wait_ready("crashy", "True", Some("Synced")).await;
    let st = status_of(&obj);
    assert_eq!(st.ownership.as_deref(), Some("Created"), "its own");
    assert!(st.create_requested_at.is_none());
    h.wait_ready("impostor", "False", Some("AlreadyExists"))
        .await;
    assert_eq!(h.calls("CreateChatConfiguration"), 0, "never created twice");
    assert_eq!(
        h.calls("UpdateChatConfiguration"),
        0,
        "the secret sent with the Create is current: nothing to re-send, nothing foreign written"
    );

    // Recreate: the remote vanished, the next process recorded its intent, the Create
    // committed, and that process died too.
    let old_created = st.created_date.clone();
    h.stop_controller().await;
    h.oos
        .delete_chat_configuration(REGION, "crashy")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new CreatedDate
    h.record_create_intent("crashy", CLIENT_SECRET_1, chrono::Utc::now())
        .await;
    h.oos
        .create_chat_configuration(REGION, &remote_input("crashy", "tpl-1"))
        .await
        .unwrap();
    h.emulator.reset();
    h.start_controller(test_settings(Duration::from_secs(600)));
    wait_for(WAIT, || async {
        let st = status_of(&h.objects().get("crashy").await?);
        anyhow::ensure!(
            st.created_date != old_created,
            "old CreatedDate still recorded"
        );
        anyhow::ensure!(st.create_requested_at.is_none());
        Ok(())
    })
    .await
    .expect("recreate resumed");
    let obj = h.wait_ready("crashy", "True", Some("Synced")).await;
    let remote = h
        .oos
        .get_chat_configuration(REGION, "crashy")
        .await
        .unwrap();
    assert_eq!(
        status_of(&obj).created_date,
        remote
            .created_date
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    assert_eq!(h.calls("CreateChatConfiguration"), 0);
    assert!(
        !h.events_for("crashy")
            .await
            .iter()
            .any(|(_, r, _)| r == "RemoteReplaced"),
        "its own remote is not reported as replaced"
    );
    h.stop().await;
}

/// Deletion that cannot go on says so, once, naming the way out; pause holds deletion too.
#[tokio::test]
async fn blocked_deletion_names_force_orphan_and_pause_holds_it() {
    let h = Harness::start("blocked", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    second_key(&h, "creds", "1234567890", OTHER_AK_SECRET).await;
    let mut m = dingtalk("orphaned", "tpl");
    m["spec"]["credentialsRef"] = json!({"name": "creds"});
    h.apply(m).await;
    h.apply(dingtalk("held", "tpl")).await;
    h.wait_ready("orphaned", "True", Some("Synced")).await;
    h.wait_ready("held", "True", Some("Synced")).await;

    // Credentials gone before the object (as in a namespace teardown).
    h.secrets()
        .delete("creds", &DeleteParams::default())
        .await
        .unwrap();
    h.objects()
        .delete("orphaned", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = h
        .wait_ready("orphaned", "False", Some("DeletionBlocked"))
        .await;
    let ready = status_of(&blocked)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("oos.chatops.dev/force-orphan"),
        "{}",
        ready.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let notes: Vec<_> = h
        .events_for("orphaned")
        .await
        .into_iter()
        .filter(|(_, _, n)| n.contains("force-orphan"))
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "one event names the annotation: {:?}",
        h.events_for("orphaned").await
    );
    h.annotate("orphaned", "oos.chatops.dev/force-orphan", "true")
        .await;
    h.wait_gone("orphaned").await;
    assert!(
        h.oos
            .get_chat_configuration(REGION, "orphaned")
            .await
            .is_ok(),
        "kept"
    );

    // Paused: deletion waits, with no remote call.
    h.annotate("held", "oos.chatops.dev/paused", "true").await;
    let before = h.emulator.requests().len();
    h.objects()
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_ready("held", "False", Some("DeletionPaused")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.emulator.requests().len(),
        before,
        "no remote call while paused"
    );
    assert!(
        h.objects().get_opt("held").await.unwrap().is_some(),
        "finalizer kept"
    );
    h.annotate("held", "oos.chatops.dev/paused", "false").await;
    h.wait_gone("held").await;
    assert_eq!(h.calls("DeleteChatConfiguration"), 1);
    assert!(h.oos.get_chat_configuration(REGION, "held").await.is_err());
    h.stop().await;
}

/// A changed credentialsRef that reaches another account is reported, never a second remote.
#[tokio::test]
async fn credentials_of_another_account_are_reported_not_used_to_recreate() {
    let h = Harness::start("account", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    second_key(&h, "elsewhere", "999999", OTHER_AK_SECRET).await;
    h.apply(dingtalk("accounted", "tpl")).await;
    h.wait_ready("accounted", "True", Some("Synced")).await;
    let mut m = dingtalk("accounted", "tpl");
    m["spec"]["credentialsRef"] = json!({"name": "elsewhere"});
    h.apply(m).await;
    h.wait_ready("accounted", "False", Some("AccountChanged"))
        .await;
    assert_eq!(h.calls("CreateChatConfiguration"), 1, "no second remote");
    h.stop().await;
}
