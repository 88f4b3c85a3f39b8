//! The controller end to end: a real kube-apiserver + etcd (tests/support), the in-process OOS
//! emulator, and the controller running in-process, one namespace and one emulator per test.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use oos_chat_operator::crd::ChatConfiguration;
use serde_json::json;
use support::control_plane;
use support::harness::*;

#[tokio::test]
async fn lifecycle_create_update_rotate_noop_delete() {
    let h = Harness::start("lifecycle", Duration::from_secs(2)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("alerts", "tpl-1")).await;

    let obj = h.wait_ready("alerts", "True", Some("Synced")).await;
    let st = obj.status.clone().unwrap();
    assert!(
        st.webhook_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
        "webhook URL: {:?}",
        st.webhook_url
    );
    assert!(st.created_date.is_some() && st.updated_date.is_some());
    assert_eq!(st.observed_generation, obj.metadata.generation);
    assert_eq!(st.ownership.as_deref(), Some("Created"));
    assert_eq!(h.calls("CreateChatConfiguration"), 1);
    assert_eq!(h.calls("UpdateChatConfiguration"), 0);
    let remote = h
        .oos
        .get_chat_configuration(REGION, "alerts")
        .await
        .unwrap();
    assert_eq!(
        remote
            .configuration
            .unwrap()
            .ding_talk_template_id
            .as_deref(),
        Some("tpl-1")
    );

    // Spec change → exactly one Update with the new template.
    h.apply(dingtalk("alerts", "tpl-2")).await;
    wait_for(WAIT, || async {
        let r = h.oos.get_chat_configuration(REGION, "alerts").await?;
        anyhow::ensure!(
            r.configuration
                .and_then(|c| c.ding_talk_template_id)
                .as_deref()
                == Some("tpl-2")
        );
        Ok(())
    })
    .await
    .expect("remote updated");
    let obj = h.wait_ready("alerts", "True", None).await;
    assert_eq!(
        obj.status.as_ref().unwrap().observed_generation,
        obj.metadata.generation
    );
    assert_eq!(h.calls("UpdateChatConfiguration"), 1);

    // Secret rotation → exactly one more Update, then Ready again.
    let hash_before = obj
        .status
        .as_ref()
        .unwrap()
        .last_applied_secret_hash
        .clone();
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_2)])
        .await;
    wait_for(WAIT, || async {
        anyhow::ensure!(
            h.calls("UpdateChatConfiguration") >= 2,
            "no rotation update yet"
        );
        let o = h.objects().get("alerts").await?;
        anyhow::ensure!(o.status.unwrap().last_applied_secret_hash != hash_before);
        Ok(())
    })
    .await
    .expect("rotation propagated");
    h.wait_ready("alerts", "True", None).await;

    // No-op resyncs (interval 2 s): zero remote writes, zero Kubernetes writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = h.writes();
    let status_writes = h.metrics.status_writes.get();
    let rv = h
        .objects()
        .get("alerts")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let lists = h.calls("ListChatConfigurations");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        h.calls("ListChatConfigurations") > lists,
        "resyncs happened (inventory refreshed)"
    );
    assert_eq!(h.writes(), writes, "no remote write during no-op resyncs");
    assert_eq!(
        h.calls("UpdateChatConfiguration"),
        2,
        "exactly one Update per change"
    );
    assert_eq!(
        h.metrics.status_writes.get(),
        status_writes,
        "no status write during no-op resyncs"
    );
    assert_eq!(
        h.objects()
            .get("alerts")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "object untouched"
    );

    // Delete → remote gone, object gone.
    h.objects()
        .delete("alerts", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(WAIT, || async {
        anyhow::ensure!(
            h.objects().get_opt("alerts").await?.is_none(),
            "object still present"
        );
        Ok(())
    })
    .await
    .expect("object deleted");
    let err = h
        .oos
        .get_chat_configuration(REGION, "alerts")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "remote deleted: {err}");
    assert_eq!(h.calls("DeleteChatConfiguration"), 1);

    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn orphan_keeps_remote_and_wechat_output_secret() {
    let h = Harness::start("orphan", Duration::from_secs(600)).await;
    h.put_secret("wecom", &[("secret", WECOM_SECRET)]).await;
    h.apply(json!({
        "metadata": {"name": "wecom-bot"},
        "spec": {
            "type": "WeChat",
            "deletionPolicy": "Orphan",
            "weChat": {"clientId": "corp-1", "clientSecretRef": {"name": "wecom", "key": "secret"}},
            "outputSecretRef": {"name": "wecom-bot-output"}
        }
    }))
    .await;
    let obj = h.wait_ready("wecom-bot", "True", Some("Synced")).await;
    let url = obj.status.as_ref().unwrap().webhook_url.clone().unwrap();
    let out = h.secrets().get("wecom-bot-output").await.unwrap();
    let data = out.data.unwrap();
    assert_eq!(
        String::from_utf8(data["webhookUrl"].0.clone()).unwrap(),
        url
    );
    let aes = String::from_utf8(data["aesKey"].0.clone()).unwrap();
    assert!(!aes.is_empty(), "AesKey delivered in the output Secret");
    let status_json = serde_json::to_string(&obj.status).unwrap();
    assert!(!status_json.contains(&aes), "AesKey never in status");
    assert_eq!(out.metadata.owner_references.unwrap()[0].name, "wecom-bot");

    h.objects()
        .delete("wecom-bot", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(WAIT, || async {
        anyhow::ensure!(h.objects().get_opt("wecom-bot").await?.is_none());
        Ok(())
    })
    .await
    .expect("object deleted");
    assert!(
        h.oos
            .get_chat_configuration(REGION, "wecom-bot")
            .await
            .is_ok(),
        "remote kept (Orphan)"
    );
    assert_eq!(h.calls("DeleteChatConfiguration"), 0);
    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn refuses_then_adopts_an_existing_remote() {
    let h = Harness::start("adopt", Duration::from_secs(600)).await;
    h.oos
        .create_chat_configuration(REGION, &remote_input("existing", "theirs"))
        .await
        .unwrap();
    h.emulator.reset();
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("existing", "ours")).await;

    let obj = h
        .wait_ready("existing", "False", Some("AlreadyExists"))
        .await;
    let stalled = obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled.status, "True");
    assert!(
        stalled.message.contains("adoptionPolicy"),
        "{}",
        stalled.message
    );
    assert_eq!(h.writes(), 0, "refused: nothing written");

    let mut m = dingtalk("existing", "ours");
    m["spec"]["adoptionPolicy"] = json!("Adopt");
    h.apply(m).await;
    let obj = h.wait_ready("existing", "True", Some("Synced")).await;
    assert_eq!(
        obj.status.as_ref().unwrap().ownership.as_deref(),
        Some("Adopted")
    );
    assert_eq!(h.calls("UpdateChatConfiguration"), 1);
    assert_eq!(h.calls("CreateChatConfiguration"), 0);
    let r = h
        .oos
        .get_chat_configuration(REGION, "existing")
        .await
        .unwrap();
    assert_eq!(
        r.configuration.unwrap().ding_talk_template_id.as_deref(),
        Some("ours")
    );
    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn out_of_band_delete_and_modification_are_corrected() {
    let h = Harness::start("drift", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.apply(dingtalk("drifty", "tpl-1")).await;
    h.wait_ready("drifty", "True", Some("Synced")).await;

    // Someone edits the remote; a Flux "reconcile now" makes the operator look.
    h.oos
        .update_chat_configuration(REGION, &remote_input("drifty", "tampered"))
        .await
        .unwrap();
    h.annotate(
        "drifty",
        "reconcile.fluxcd.io/requestedAt",
        "2026-11-26T10:00:00Z",
    )
    .await;
    wait_for(WAIT, || async {
        let o = h.objects().get("drifty").await?;
        let st = o.status.unwrap();
        anyhow::ensure!(
            st.last_handled_reconcile_at.as_deref() == Some("2026-11-26T10:00:00Z"),
            "not handled yet"
        );
        anyhow::ensure!(
            st.drift
                .contains(&"configuration.DingTalkTemplateId".to_string()),
            "drift: {:?}",
            st.drift
        );
        Ok(())
    })
    .await
    .expect("drift detected and named");
    let r = h
        .oos
        .get_chat_configuration(REGION, "drifty")
        .await
        .unwrap();
    assert_eq!(
        r.configuration.unwrap().ding_talk_template_id.as_deref(),
        Some("tpl-1"),
        "drift corrected"
    );

    // Someone deletes the remote: recreated.
    h.oos
        .delete_chat_configuration(REGION, "drifty")
        .await
        .unwrap();
    let creates = h.calls("CreateChatConfiguration");
    h.annotate(
        "drifty",
        "reconcile.fluxcd.io/requestedAt",
        "2026-11-26T10:05:00Z",
    )
    .await;
    wait_for(WAIT, || async {
        anyhow::ensure!(
            h.calls("CreateChatConfiguration") == creates + 1,
            "not recreated yet"
        );
        Ok(())
    })
    .await
    .expect("recreated");
    h.wait_ready("drifty", "True", Some("Synced")).await;
    assert!(h.oos.get_chat_configuration(REGION, "drifty").await.is_ok());
    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn missing_secret_reports_and_waits_for_the_watch() {
    // A long resync: only the Secret watch can wake the object.
    let h = Harness::start("missing", Duration::from_secs(600)).await;
    h.apply(dingtalk("waiting", "tpl")).await;
    let obj = h
        .wait_ready("waiting", "False", Some("SecretNotFound"))
        .await;
    let ready = obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert!(
        ready.message.contains("dingtalk"),
        "names the Secret: {}",
        ready.message
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        h.emulator.calls().values().all(|n| *n == 0),
        "no remote call: {:?}",
        h.emulator.calls()
    );

    // The key is missing: named too.
    h.put_secret("dingtalk", &[("other", "x")]).await;
    wait_for(WAIT, || async {
        let o = h.objects().get("waiting").await?;
        let c = o
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        anyhow::ensure!(c.message.contains("clientSecret"), "{}", c.message);
        Ok(())
    })
    .await
    .expect("missing key named");

    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    h.wait_ready("waiting", "True", Some("Synced")).await;
    assert_eq!(h.calls("CreateChatConfiguration"), 1);
    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn invalid_specs_are_rejected_at_admission() {
    let cp = control_plane();
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = cp.fresh_namespace("admission").await;
    let api: Api<ChatConfiguration> = Api::namespaced(client.clone(), &ns);
    let create = |spec: serde_json::Value, name: String| {
        let api = api.clone();
        let obj = json!({"apiVersion": "oos.chatops.dev/v1alpha1", "kind": "ChatConfiguration",
                         "metadata": {"name": name}, "spec": spec});
        async move {
            let obj: ChatConfiguration = serde_json::from_value(obj)
                .unwrap_or_else(|_| panic!("test object {name} deserialises"));
            api.create(&PostParams::default(), &obj).await
        }
    };
    let secret_ref = json!({"name": "s", "key": "k"});
    let ding = json!({"clientId": "c", "clientSecretRef": secret_ref});
    // (case, spec, text the rejection must contain)
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "dingtalk without settings",
            json!({"type": "DingTalk"}),
            "spec.dingTalk is required",
        ),
        (
            "wechat without settings",
            json!({"type": "WeChat"}),
            "spec.weChat is required",
        ),
        (
            "dingtalk with wechat settings",
            json!({"type": "DingTalk", "dingTalk": ding, "weChat": ding}),
            "spec.weChat must not be set",
        ),
        (
            "wechat with dingtalk settings",
            json!({"type": "WeChat", "weChat": ding, "dingTalk": ding}),
            "spec.dingTalk must not be set",
        ),
        (
            "bad remote name",
            json!({"type": "DingTalk", "dingTalk": ding, "name": "has space"}),
            "spec.name",
        ),
        (
            "remote name too long",
            json!({"type": "DingTalk", "dingTalk": ding, "name": "a".repeat(129)}),
            "spec.name",
        ),
        (
            "bad region",
            json!({"type": "DingTalk", "dingTalk": ding, "regionId": "Hangzhou!"}),
            "spec.regionId",
        ),
        (
            "oversized client id",
            json!({"type": "DingTalk", "dingTalk": {"clientId": "x".repeat(257), "clientSecretRef": secret_ref}}),
            "spec.dingTalk.clientId",
        ),
        (
            "secret in extraConfiguration",
            json!({"type": "DingTalk", "dingTalk": ding, "extraConfiguration": {"MySecret": "v"}}),
            "spec.extraConfiguration",
        ),
        (
            "modelled key in extraConfiguration",
            json!({"type": "DingTalk", "dingTalk": ding, "extraConfiguration": {"DingTalkClientId": "v"}}),
            "spec.extraConfiguration",
        ),
        (
            "bad secret ref name",
            json!({"type": "DingTalk", "dingTalk": {"clientId": "c", "clientSecretRef": {"name": "Bad_Name", "key": "k"}}}),
            "spec.dingTalk.clientSecretRef.name",
        ),
    ];
    let mut rejected = 0;
    for (i, (case, spec, want)) in cases.iter().enumerate() {
        let err = create(spec.clone(), format!("bad-{i}"))
            .await
            .expect_err(case);
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "{case}: rejection {msg:?} should contain {want:?}"
        );
        rejected += 1;
    }
    // Enum values are checked by the schema (the typed client cannot even send them).
    let raw = |spec: serde_json::Value| json!({"apiVersion": "oos.chatops.dev/v1alpha1", "kind": "ChatConfiguration", "metadata": {"name": "bad-enum"}, "spec": spec});
    let dyn_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<ChatConfiguration>(&()),
    );
    for (spec, want) in [
        (json!({"type": "Slack"}), "spec.type"),
        (
            json!({"type": "DingTalk", "dingTalk": ding, "deletionPolicy": "Keep"}),
            "spec.deletionPolicy",
        ),
        (
            json!({"type": "DingTalk", "dingTalk": ding, "adoptionPolicy": "Steal"}),
            "spec.adoptionPolicy",
        ),
    ] {
        let obj: kube::api::DynamicObject = serde_json::from_value(raw(spec)).unwrap();
        let msg = dyn_api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(want)
            .to_string();
        assert!(
            msg.contains(want),
            "rejection {msg:?} should contain {want:?}"
        );
        rejected += 1;
    }

    // Immutability: name, type and region cannot change.
    let good = create(json!({"type": "DingTalk", "dingTalk": ding, "name": "remote-a", "regionId": "cn-hangzhou"}), "good".to_string()).await.unwrap();
    for (patch, want) in [
        (
            json!({"spec": {"name": "remote-b"}}),
            "spec.name is immutable",
        ),
        (
            json!({"spec": {"type": "WeChat", "dingTalk": null, "weChat": ding}}),
            "spec.type is immutable",
        ),
        (
            json!({"spec": {"regionId": "cn-beijing"}}),
            "spec.regionId is immutable",
        ),
    ] {
        let msg = api
            .patch("good", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err(want)
            .to_string();
        assert!(
            msg.contains(want),
            "rejection {msg:?} should contain {want:?}"
        );
        rejected += 1;
    }
    assert!(good.metadata.uid.is_some());
    assert!(rejected >= 10, "{rejected} invalid specs rejected");
}

#[tokio::test]
async fn dry_run_reports_the_plan_without_writing() {
    let h = Harness::start("dryrun", Duration::from_secs(600)).await;
    h.put_secret("dingtalk", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    let mut m = dingtalk("planned", "tpl-1");
    m["metadata"]["annotations"] = json!({"oos.chatops.dev/dry-run": "true"});
    h.apply(m).await;
    let obj = wait_for(WAIT, || async {
        let o = h.objects().get("planned").await?;
        let found = o
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "DryRun"));
        anyhow::ensure!(found, "no DryRun condition yet");
        Ok(o)
    })
    .await
    .unwrap();
    let dry = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "DryRun")
        .unwrap();
    assert_eq!(dry.message, "would Create");
    assert_eq!(h.writes(), 0, "dry run writes nothing remotely");
    h.stop().await;
}
