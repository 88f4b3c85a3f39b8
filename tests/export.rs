//! `remote export` end to end: remote configurations made directly on the in-process emulator
//! → the real binary exports them → the manifests are applied to a real kube-apiserver with the
//! controller running in-process → every object adopts its remote without creating, deleting or
//! changing anything (one Update each, re-sending the secrets).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use oos_chat_operator::crd::{ChatConfiguration, SECRET_PLACEHOLDER_MARKER};
use oos_client::types::{
    ChatConfiguration as RemoteConfiguration, ChatConfigurationInput, ChatSettings, ChatType,
};
use serde_json::{Value, json};
use support::harness::*;

const APP_SECRET: &str = "APPSECRET-ops-1c2d";
/// Returned in clear by the emulator's Get (it masks only keys ending in `Secret`): the export
/// must still treat it as a secret because of its name.
const WEBHOOK_TOKEN: &str = "WEBHOOKTOKEN-ops-8e9f";
const ENCODING_AES_KEY: &str = "ENCODINGAESKEY-wecom-0a1b";
const PLAIN_SECRET: &str = "PLAINSECRET-3c4d";

/// One remote configuration to seed, and its secret values (what "filling in" puts back).
struct Seed {
    input: ChatConfigurationInput,
    secrets: BTreeMap<&'static str, &'static str>,
}

fn settings(pairs: &[(&str, Value)]) -> ChatSettings {
    let object: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    ChatSettings::from_json_str(&Value::Object(object).to_string()).unwrap()
}

/// Both types, extra non-secret and secret keys (masked by Get and in clear), a resource group,
/// a Name that needs mapping, and one remote the CRD cannot express.
fn seeds() -> Vec<Seed> {
    vec![
        Seed {
            input: ChatConfigurationInput {
                name: "Ops_Bot".into(),
                chat_type: ChatType::DingTalk,
                ram_role: Some("OOSServiceRole".into()),
                resource_group_id: Some("rg-acfmexport1".into()),
                configuration: Some(settings(&[
                    ("DingTalkClientId", json!("ding-ops")),
                    ("DingTalkClientSecret", json!(CLIENT_SECRET_1)),
                    ("DingTalkTemplateId", json!("381c5aee-ops.schema")),
                    ("Mode", json!("card")),
                    ("AppSecret", json!(APP_SECRET)),
                    ("WebhookToken", json!(WEBHOOK_TOKEN)),
                ])),
            },
            secrets: BTreeMap::from([
                ("DingTalkClientSecret", CLIENT_SECRET_1),
                ("AppSecret", APP_SECRET),
                ("WebhookToken", WEBHOOK_TOKEN),
            ]),
        },
        Seed {
            input: ChatConfigurationInput {
                name: "wecom-alerts".into(),
                chat_type: ChatType::WeChat,
                ram_role: Some("OOSServiceRole".into()),
                resource_group_id: None,
                configuration: Some(settings(&[
                    ("WeChatClientId", json!("ww-corp")),
                    ("WeChatClientSecret", json!(WECOM_SECRET)),
                    ("WeChatTemplateId", json!("tpl-wecom")),
                    ("CorpId", json!("ww123")),
                    ("EncodingAESKey", json!(ENCODING_AES_KEY)),
                ])),
            },
            secrets: BTreeMap::from([
                ("WeChatClientSecret", WECOM_SECRET),
                ("EncodingAESKey", ENCODING_AES_KEY),
            ]),
        },
        Seed {
            input: ChatConfigurationInput {
                name: "plain".into(),
                chat_type: ChatType::DingTalk,
                ram_role: None,
                resource_group_id: None,
                configuration: Some(settings(&[
                    ("DingTalkClientId", json!("ding-plain")),
                    ("DingTalkClientSecret", json!(PLAIN_SECRET)),
                ])),
            },
            secrets: BTreeMap::from([("DingTalkClientSecret", PLAIN_SECRET)]),
        },
    ]
}

/// A DingTalk remote with a number in its Configuration: `extraConfiguration` holds strings only.
fn inexpressible() -> ChatConfigurationInput {
    ChatConfigurationInput {
        name: "weird".into(),
        chat_type: ChatType::DingTalk,
        ram_role: None,
        resource_group_id: None,
        configuration: Some(settings(&[
            ("DingTalkClientId", json!("ding-weird")),
            ("DingTalkClientSecret", json!("WEIRDSECRET")),
            ("Retries", json!(3)),
        ])),
    }
}

struct Export {
    stdout: String,
    stderr: String,
}

/// Runs the real binary: `remote export --region … --endpoint <emulator> --namespace <ns>`,
/// credentials from the environment only.
async fn export(h: &Harness, extra: &[&str]) -> Export {
    let mut args = vec![
        "remote".to_string(),
        "export".into(),
        "--region".into(),
        REGION.into(),
        "--endpoint".into(),
        h.emulator.endpoint(),
        "--namespace".into(),
        h.ns.clone(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    // Blocking wait on a pool thread, so this runtime keeps serving the in-process emulator.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_oos-chat-operator"))
            .args(&args)
            .env_clear()
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .output()
            .expect("the operator binary runs")
    })
    .await
    .unwrap();
    let e = Export {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert!(
        output.status.success(),
        "export failed ({}):\n{}\n{}",
        output.status,
        e.stderr,
        e.stdout
    );
    e
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// (Secret name, Secret key) → `Configuration` key, from the exported objects' references.
fn secret_refs(objects: &[&Value]) -> BTreeMap<(String, String), (String, String)> {
    let mut refs = BTreeMap::new();
    for o in objects {
        let cr: ChatConfiguration = serde_json::from_value((*o).clone()).unwrap();
        let remote = cr.spec.name.clone().unwrap();
        let keys = cr.spec.chat_type.keys();
        let client = cr
            .spec
            .platform_settings()
            .unwrap()
            .client_secret_ref
            .clone();
        refs.insert(
            (client.name, client.key),
            (remote.clone(), keys.client_secret.to_string()),
        );
        for (k, r) in cr.spec.extra_secret_configuration.iter().flatten() {
            refs.insert((r.name.clone(), r.key.clone()), (remote.clone(), k.clone()));
        }
    }
    refs
}

async fn apply_secret(h: &Harness, doc: &Value) {
    let name = doc["metadata"]["name"].as_str().unwrap();
    h.secrets()
        .patch(
            name,
            &PatchParams::apply("export-test").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap();
}

/// What must not change when an object adopts its remote: everything but UpdatedDate.
fn comparable(mut r: RemoteConfiguration) -> RemoteConfiguration {
    r.updated_date = None;
    r
}

fn update_calls_by_name(h: &Harness) -> BTreeMap<String, usize> {
    let mut by_name = BTreeMap::new();
    for r in h.emulator.requests() {
        if r.action.as_deref() == Some("UpdateChatConfiguration") {
            *by_name
                .entry(r.params.get("Name").cloned().unwrap_or_default())
                .or_default() += 1;
        }
    }
    by_name
}

#[tokio::test]
async fn exported_manifests_adopt_without_changing_the_remotes() {
    let h = Harness::start("export", Duration::from_secs(2)).await;
    let seeds = seeds();
    for s in &seeds {
        h.oos
            .create_chat_configuration(REGION, &s.input)
            .await
            .unwrap();
    }
    h.oos
        .create_chat_configuration(REGION, &inexpressible())
        .await
        .unwrap();
    let mut before = BTreeMap::new();
    for s in &seeds {
        let r = h
            .oos
            .get_chat_configuration(REGION, &s.input.name)
            .await
            .unwrap();
        before.insert(s.input.name.clone(), r);
    }
    h.emulator.reset();

    let out = export(&h, &[]).await;
    let export_calls = h.emulator.calls();
    assert_eq!(export_calls.get("ListChatConfigurations"), Some(&1));
    assert_eq!(export_calls.get("GetChatConfiguration"), Some(&4));
    assert_eq!(export_calls.len(), 2, "export only reads: {export_calls:?}");

    // What the user sees.
    for secret in [
        CLIENT_SECRET_1,
        WECOM_SECRET,
        PLAIN_SECRET,
        APP_SECRET,
        WEBHOOK_TOKEN,
        ENCODING_AES_KEY,
        "WEIRDSECRET",
        AK_SECRET,
    ] {
        assert!(
            !out.stdout.contains(secret),
            "a secret value is in the export"
        );
        assert!(!out.stderr.contains(secret), "a secret value is on stderr");
    }
    assert!(out.stdout.starts_with("# ChatConfiguration manifests"));
    assert!(
        out.stdout
            .contains("# 4 remote chat configuration(s): 3 exported, 1 not exported")
    );
    assert!(out.stdout.contains("# remote Name \"weird\": NOT EXPORTED"));
    assert!(out.stdout.contains("\"Retries\" holds a JSON number"));
    assert!(
        out.stderr
            .contains("warning: remote \"weird\" not exported"),
        "{}",
        out.stderr
    );
    let mapping = out
        .stdout
        .lines()
        .find(|l| l.starts_with("# remote Name \"Ops_Bot\" → metadata.name \"ops-bot-"))
        .expect("the name mapping is stated");
    let ops_name = mapping
        .rsplit('"')
        .nth(1)
        .expect("quoted object name")
        .to_string();

    let docs = documents(&out.stdout);
    let objects = of_kind(&docs, "ChatConfiguration");
    let secrets = of_kind(&docs, "Secret");
    assert_eq!(docs.len(), 6, "3 objects and their 3 Secret stubs");
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ops_name.as_str(), "plain", "wecom-alerts"]);
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], h.ns.as_str());
        assert_eq!(o["spec"]["adoptionPolicy"], "Adopt");
        assert_eq!(o["spec"]["regionId"], REGION);
    }
    let ops = objects[0];
    assert_eq!(ops["spec"]["name"], "Ops_Bot");
    assert_eq!(ops["spec"]["resourceGroupId"], "rg-acfmexport1");
    assert_eq!(ops["spec"]["extraConfiguration"], json!({"Mode": "card"}));
    let extra_secret: Vec<&String> = ops["spec"]["extraSecretConfiguration"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(extra_secret, ["AppSecret", "WebhookToken"]);
    assert_eq!(objects[2]["spec"]["weChat"]["clientId"], "ww-corp");
    assert_eq!(
        objects[2]["spec"]["extraSecretConfiguration"]["EncodingAESKey"]["name"],
        "wecom-alerts-secrets"
    );

    // Fill in the Secrets with the real values, then apply everything.
    let refs = secret_refs(&objects);
    let real: BTreeMap<(String, String), &str> = seeds
        .iter()
        .flat_map(|s| {
            s.secrets
                .iter()
                .map(|(k, v)| ((s.input.name.clone(), k.to_string()), *v))
        })
        .collect();
    let mut filled = 0;
    for s in &secrets {
        let mut s = (*s).clone();
        let name = s["metadata"]["name"].as_str().unwrap().to_string();
        for (key, value) in s["stringData"].as_object_mut().unwrap() {
            assert!(
                value.as_str().unwrap().contains(SECRET_PLACEHOLDER_MARKER),
                "{name}/{key} is a placeholder"
            );
            let target = &refs[&(name.clone(), key.clone())];
            *value = json!(real[target]);
            filled += 1;
        }
        apply_secret(&h, &s).await;
    }
    assert_eq!(
        filled, 6,
        "every secret key of every object has a stub entry"
    );
    for o in &objects {
        h.apply((*o).clone()).await;
    }

    for name in &names {
        let obj = h.wait_ready(name, "True", Some("Synced")).await;
        let st = obj.status.unwrap();
        assert_eq!(st.ownership.as_deref(), Some("Adopted"), "{name}");
        assert!(st.drift.is_empty(), "{name}: drift {:?}", st.drift);
        assert!(st.webhook_url.is_some());
    }
    // A few no-op resyncs (interval 2 s) before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in &names {
        h.wait_ready(name, "True", Some("Synced")).await;
    }

    let calls = h.emulator.calls();
    let controller_calls: BTreeMap<&String, u64> = calls
        .iter()
        .map(|(a, n)| (a, n - export_calls.get(a).copied().unwrap_or(0)))
        .collect();
    eprintln!("emulator calls, controller only (export excluded): {controller_calls:?}");
    assert_eq!(h.calls("CreateChatConfiguration"), 0, "nothing created");
    assert_eq!(h.calls("DeleteChatConfiguration"), 0, "nothing deleted");
    let updates = update_calls_by_name(&h);
    eprintln!("UpdateChatConfiguration by Name: {updates:?}");
    assert!(
        updates.values().all(|n| *n <= 1),
        "at most one Update per object: {updates:?}"
    );
    assert!(
        updates.keys().all(|n| before.contains_key(n)),
        "{updates:?}"
    );
    assert!(!updates.contains_key("weird"));

    // The remotes are what they were (the secrets were re-sent with their real values).
    for (name, was) in &before {
        let now = h.oos.get_chat_configuration(REGION, name).await.unwrap();
        assert_eq!(comparable(now), comparable(was.clone()), "{name} changed");
    }
    h.assert_no_secret_leak().await;
    h.stop().await;
}

#[tokio::test]
async fn placeholder_left_in_a_secret_stalls_without_remote_writes() {
    let h = Harness::start("export-placeholder", Duration::from_secs(2)).await;
    let seed = seeds().remove(2);
    h.oos
        .create_chat_configuration(REGION, &seed.input)
        .await
        .unwrap();
    let before = h.oos.get_chat_configuration(REGION, "plain").await.unwrap();
    h.emulator.reset();

    let out = export(&h, &[]).await;
    let docs = documents(&out.stdout);
    let secret = of_kind(&docs, "Secret")[0].clone();
    assert_eq!(secret["metadata"]["name"], "plain-secrets");
    apply_secret(&h, &secret).await;
    h.apply(of_kind(&docs, "ChatConfiguration")[0].clone())
        .await;

    let obj = h
        .wait_ready("plain", "False", Some("SecretPlaceholder"))
        .await;
    let conditions = obj.status.unwrap().conditions;
    let stalled = conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SecretPlaceholder")
    );
    assert!(
        stalled.message.contains("plain-secrets"),
        "{}",
        stalled.message
    );
    // Several resync intervals: still nothing sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.wait_ready("plain", "False", Some("SecretPlaceholder"))
        .await;
    assert_eq!(h.writes(), 0, "a placeholder is never sent to OOS");
    eprintln!(
        "emulator calls while stalled on the placeholder (export included): {:?}",
        h.emulator.calls()
    );
    assert_eq!(
        comparable(h.oos.get_chat_configuration(REGION, "plain").await.unwrap()),
        comparable(before.clone())
    );

    // Filling it in (a changed Secret wakes the object) completes the adoption with one Update.
    let mut filled = secret.clone();
    filled["stringData"]["DingTalkClientSecret"] = json!(PLAIN_SECRET);
    apply_secret(&h, &filled).await;
    let obj = h.wait_ready("plain", "True", Some("Synced")).await;
    assert_eq!(obj.status.unwrap().ownership.as_deref(), Some("Adopted"));
    assert_eq!(h.calls("UpdateChatConfiguration"), 1);
    assert_eq!(h.calls("CreateChatConfiguration"), 0);
    assert_eq!(h.calls("DeleteChatConfiguration"), 0);
    let stored: Secret = h.secrets().get("plain-secrets").await.unwrap();
    assert!(stored.data.unwrap().contains_key("DingTalkClientSecret"));
    h.stop().await;
}
