//! The crate's OOS client (`oos::client::OosClient`) against the emulator: the same cases as the
//! Python SDK suite, plus retries and the OIDC exchange. Tests that rely on an unpublished choice
//! cite docs/emulator.md "Assumptions" (A…).

use oos_client::client::{ClientConfig, Endpoint, OosClient, RetryPolicy};
use oos_client::secret::{ExposeSecret, SecretString};
use oos_client::{
    ChatConfigurationInput, ChatSettings, ChatType, CredentialProvider, Filter, OidcConfig,
    OidcCredentials, OosError, StaticCredentials, TokenBucket,
};
use oos_emulator::{self as emulator, AccessKey, EmulatorConfig, FaultRule, RunningEmulator};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const REGION: &str = "cn-hangzhou";
const ID: &str = "rustKeyId";
const SECRET: &str = "rustKeySecret";
const OWNER: &str = "5555555555555555";

async fn emu() -> RunningEmulator {
    emulator::start(EmulatorConfig {
        access_keys: vec![
            AccessKey::new(ID, SECRET).with_owner(OWNER),
            AccessKey::new("STS.rust", "sts-secret")
                .with_security_token("CAIS+rust/tok==")
                .with_owner(OWNER),
        ],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client_with(e: &RunningEmulator, creds: Arc<dyn CredentialProvider>) -> OosClient {
    let mut cfg = ClientConfig::new(Endpoint::Url(e.endpoint()));
    cfg.timeout = Duration::from_secs(5);
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(10),
    };
    cfg.rate_limiter = TokenBucket::new(10_000.0, 10_000);
    OosClient::new(cfg, creds).unwrap()
}

fn client(e: &RunningEmulator) -> OosClient {
    client_with(e, Arc::new(StaticCredentials::new(ID, SECRET, None)))
}

fn settings(id: &str, secret: &str) -> ChatSettings {
    ChatSettings {
        ding_talk_client_id: Some(id.into()),
        ding_talk_client_secret: Some(SecretString::from(secret)),
        ding_talk_template_id: Some("381c5aee-f8af-48a4-94be-cce587e42ea4.schema".into()),
        ..Default::default()
    }
}

fn input(name: &str, conf: ChatSettings) -> ChatConfigurationInput {
    ChatConfigurationInput {
        name: name.into(),
        chat_type: ChatType::DingTalk,
        ram_role: Some("OOSServiceRole".into()),
        resource_group_id: None,
        configuration: Some(conf),
    }
}

fn code(e: &OosError) -> &str {
    e.code().unwrap_or("<no code>")
}

const ODD: &str = "ding abc*~/+ \"quoted\" 中文 😀 a=b&c%";

#[tokio::test]
async fn lifecycle_of_all_five_actions() {
    let e = emu().await;
    let c = client(&e);
    let stamp = c
        .create_chat_configuration(REGION, &input("rust-1", settings(ODD, ODD)))
        .await
        .unwrap();
    assert_eq!(stamp.name, "rust-1");
    assert!(stamp.created_date.is_some());
    let got = c.get_chat_configuration(REGION, "rust-1").await.unwrap();
    let conf = got.configuration.clone().unwrap();
    assert_eq!(conf.ding_talk_client_id.as_deref(), Some(ODD));
    assert_eq!(
        conf.ding_talk_client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "******"
    ); // A11
    assert!(settings(ODD, ODD).matches_remote(&conf));
    let url = got.outputs.as_ref().unwrap().url.clone().unwrap();
    assert!(url.starts_with(&format!("https://{OWNER}.appflow.aliyunnest.com/webhook/")));

    let mut changed = input("rust-1", settings("other id", ODD));
    changed.ram_role = Some("AliyunOOSDefaultRole".into());
    c.update_chat_configuration(REGION, &changed).await.unwrap();
    let got = c.get_chat_configuration(REGION, "rust-1").await.unwrap();
    assert_eq!(got.ram_role.as_deref(), Some("AliyunOOSDefaultRole"));
    assert_eq!(
        got.configuration.unwrap().ding_talk_client_id.as_deref(),
        Some("other id")
    );

    let all = c.list_chat_configurations(REGION, &[], None).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["rust-1"]
    );
    c.delete_chat_configuration(REGION, "rust-1").await.unwrap();
    let err = c
        .get_chat_configuration(REGION, "rust-1")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.request_id().is_some_and(|r| r.len() == 36));
    let err = c
        .create_chat_configuration(REGION, &input("dup", settings("a", "b")))
        .await
        .map(|_| ());
    assert!(err.is_ok());
    let err = c
        .create_chat_configuration(REGION, &input("dup", settings("a", "b")))
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    // The secret never shows in an error, nor does the wire request.
    assert!(!format!("{err} {err:?}").contains(ODD));
    e.shutdown().await;
}

#[tokio::test]
async fn wechat_outputs_and_extra_keys() {
    let e = emu().await;
    let c = client(&e);
    let mut conf = ChatSettings::default();
    conf.extra
        .insert("CorpId".into(), Value::String("ww 1+2".into()));
    conf.extra
        .insert("CorpSecret".into(), Value::String("wecom secret".into()));
    let mut inp = input("wecom", conf.clone());
    inp.chat_type = ChatType::WeChat;
    c.create_chat_configuration(REGION, &inp).await.unwrap();
    let got = c.get_chat_configuration(REGION, "wecom").await.unwrap();
    assert_eq!(got.chat_type, ChatType::WeChat);
    let out = got.outputs.unwrap();
    assert_eq!(out.aes_key.unwrap().expose_secret().len(), 43); // A13
    let remote = got.configuration.unwrap();
    assert_eq!(remote.extra["CorpSecret"], "******"); // A11
    assert_eq!(remote.extra["CorpId"], "ww 1+2");
    e.shutdown().await;
}

#[tokio::test]
async fn invalid_names_are_rejected() {
    let e = emu().await;
    let c = client(&e);
    // A8: outside [A-Za-z0-9._-] the emulator answers InvalidParameter.
    for name in ["chat ops", "a+b", "a/b", "中文", "a\"b"] {
        let err = c
            .create_chat_configuration(REGION, &input(name, settings("a", "b")))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidParameter", "{name}: {err}");
        assert!(!err.is_retryable());
    }
    e.shutdown().await;
}

#[tokio::test]
async fn filters_and_paging_follow_next_token() {
    let e = emu().await;
    let c = client(&e);
    for i in 0..5 {
        c.create_chat_configuration(REGION, &input(&format!("p{i}"), settings("a", "b")))
            .await
            .unwrap();
    }
    let mut w = input("w", ChatSettings::default());
    w.chat_type = ChatType::WeChat;
    c.create_chat_configuration(REGION, &w).await.unwrap();
    e.reset();
    // A14: tokens start with "+/+/", so the client must encode them correctly to page.
    let all = c
        .list_chat_configurations(REGION, &[], Some(2))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["p0", "p1", "p2", "p3", "p4", "w"]
    );
    assert_eq!(e.calls()["ListChatConfigurations"], 3);
    let f = |n: &str, v: &str| Filter {
        name: n.into(),
        value: v.into(),
    };
    let wechat = c
        .list_chat_configurations(REGION, &[f("Type", "WeChat")], None)
        .await
        .unwrap();
    assert_eq!(wechat.len(), 1);
    let none = c
        .list_chat_configurations(REGION, &[f("Type", "DingTalk"), f("Name", "w")], None)
        .await
        .unwrap();
    assert!(none.is_empty());
    let odd = c
        .list_chat_configurations(REGION, &[f("Name", ODD)], Some(100))
        .await
        .unwrap();
    assert!(odd.is_empty());
    let err = c
        .list_chat_configurations(REGION, &[], Some(101))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidParameter");
    e.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_and_unknown_key_are_terminal() {
    let e = emu().await;
    let bad = client_with(&e, Arc::new(StaticCredentials::new(ID, "wrong", None)));
    let err = bad.get_chat_configuration(REGION, "x").await.unwrap_err();
    assert_eq!(code(&err), "SignatureDoesNotMatch");
    assert!(!err.is_retryable());
    assert_eq!(
        e.calls()["GetChatConfiguration"],
        1,
        "terminal errors are not retried"
    );
    let unknown = client_with(&e, Arc::new(StaticCredentials::new("nobody", "x", None)));
    assert_eq!(
        code(
            &unknown
                .get_chat_configuration(REGION, "x")
                .await
                .unwrap_err()
        ),
        "InvalidAccessKeyId.NotFound"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn static_sts_credentials() {
    let e = emu().await;
    let token = Some(SecretString::from("CAIS+rust/tok=="));
    let sts = client_with(
        &e,
        Arc::new(StaticCredentials::new("STS.rust", "sts-secret", token)),
    );
    sts.create_chat_configuration(REGION, &input("via-sts", settings("a", "b")))
        .await
        .unwrap();
    assert_eq!(
        client(&e)
            .get_chat_configuration(REGION, "via-sts")
            .await
            .unwrap()
            .name,
        "via-sts"
    );
    let no_token = client_with(
        &e,
        Arc::new(StaticCredentials::new("STS.rust", "sts-secret", None)),
    );
    assert_eq!(
        code(
            &no_token
                .get_chat_configuration(REGION, "via-sts")
                .await
                .unwrap_err()
        ),
        "MissingSecurityToken"
    );
    let wrong = Some(SecretString::from("CAIS+wrong"));
    let wrong = client_with(
        &e,
        Arc::new(StaticCredentials::new("STS.rust", "sts-secret", wrong)),
    );
    assert_eq!(
        code(
            &wrong
                .get_chat_configuration(REGION, "via-sts")
                .await
                .unwrap_err()
        ),
        "InvalidSecurityToken.MismatchWithAccessKey"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn oidc_exchange_against_the_sts_stub() {
    let e = emu().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYTp4In0.sig\n",
    )
    .unwrap();
    let oidc = OidcCredentials::new(OidcConfig {
        role_arn: "acs:ram::7777777777777777:role/pod-role".into(),
        oidc_provider_arn: "acs:ram::7777777777777777:oidc-provider/ack-rrsa-c1".into(),
        token_file,
        role_session_name: "rust-test".into(),
        sts_endpoint: e.endpoint(),
        duration_seconds: 3600,
        policy: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let c = client_with(&e, Arc::new(oidc));
    c.create_chat_configuration(REGION, &input("via-oidc", settings("a", "b")))
        .await
        .unwrap();
    let got = c.get_chat_configuration(REGION, "via-oidc").await.unwrap();
    // A18: the owner is the role ARN's account.
    assert!(
        got.outputs
            .unwrap()
            .url
            .unwrap()
            .starts_with("https://7777777777777777.")
    );
    assert_eq!(
        e.calls()["AssumeRoleWithOIDC"],
        1,
        "credentials are cached between calls"
    );
    // Not visible to another account.
    assert!(
        client(&e)
            .get_chat_configuration(REGION, "via-oidc")
            .await
            .unwrap_err()
            .is_not_found()
    );
    let log = serde_json::to_string(&e.requests()).unwrap();
    assert!(!log.contains("eyJhbGciOiJSUzI1NiJ9"));
    e.shutdown().await;
}

#[tokio::test]
async fn retries_on_injected_faults() {
    let e = emu().await;
    let c = client(&e);
    c.create_chat_configuration(REGION, &input("r", settings("a", "b")))
        .await
        .unwrap();
    e.reset();
    e.faults()
        .add_rule(
            FaultRule::error("ServiceUnavailable")
                .for_action("GetChatConfiguration")
                .times(2),
        )
        .unwrap();
    assert_eq!(
        c.get_chat_configuration(REGION, "r").await.unwrap().name,
        "r"
    );
    assert_eq!(e.calls()["GetChatConfiguration"], 3);
    let mut throttle = FaultRule::error("Throttling.User")
        .for_action("GetChatConfiguration")
        .times(1);
    throttle.retry_after_ms = Some(150);
    e.faults().add_rule(throttle).unwrap();
    let t = std::time::Instant::now();
    c.get_chat_configuration(REGION, "r").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "x-acs-retry-after is honoured"
    );
    // A reset before the action: the retry succeeds.
    e.faults()
        .add_rule(
            FaultRule::reset()
                .for_action("DeleteChatConfiguration")
                .times(1),
        )
        .unwrap();
    c.delete_chat_configuration(REGION, "r").await.unwrap();
    assert_eq!(e.configuration_count(), 0);
    // A reset after the Create committed: the retry meets EntityAlreadyExists, the client reads
    // the record back, sees it matches and reports success.
    e.faults()
        .add_rule(
            FaultRule::reset()
                .for_action("CreateChatConfiguration")
                .times(1)
                .after_commit(),
        )
        .unwrap();
    c.create_chat_configuration(REGION, &input("lost", settings("a", "b")))
        .await
        .unwrap();
    assert_eq!(e.configuration_count(), 1);
    e.shutdown().await;
}
