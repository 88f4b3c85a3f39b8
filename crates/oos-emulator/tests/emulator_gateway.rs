//! Raw-request tests of the emulator gateway, with the emulator's own test signer and reqwest.
//! Tests that rely on an unpublished choice cite docs/emulator.md "Assumptions" (A1…).

use oos_emulator::testsign::TestRequest;
use oos_emulator::{
    self as emulator, AccessKey, EmulatorConfig, FaultConfig, FaultRule, RunningEmulator,
};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "gwKeyId";
const SECRET: &str = "gwKeySecret-do-not-print";

async fn emu_with(config: EmulatorConfig) -> RunningEmulator {
    emulator::start(EmulatorConfig {
        access_keys: vec![AccessKey::new(ID, SECRET)],
        ..config
    })
    .await
    .unwrap()
}

async fn emu() -> RunningEmulator {
    emu_with(EmulatorConfig::default()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn send_as(
    e: &RunningEmulator,
    r: &TestRequest,
    id: &str,
    secret: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = r
        .build(&client(), &e.endpoint(), id, secret)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/json;charset=utf-8");
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    (status, headers, body)
}

async fn send(e: &RunningEmulator, r: &TestRequest) -> (u16, Value) {
    let (s, _, b) = send_as(e, r, ID, SECRET).await;
    (s, b)
}

fn get_req(name: &str) -> TestRequest {
    TestRequest::new(
        "GetChatConfiguration",
        &[("RegionId", "cn-hangzhou"), ("Name", name)],
    )
}

fn create_req(name: &str) -> TestRequest {
    TestRequest::new(
        "CreateChatConfiguration",
        &[
            ("RegionId", "cn-hangzhou"),
            ("Name", name),
            ("Type", "DingTalk"),
            (
                "Configuration",
                r#"{"DingTalkClientId":"a b+c","DingTalkClientSecret":"gw-conf-secret"}"#,
            ),
        ],
    )
}

fn code(body: &Value) -> &str {
    body["Code"].as_str().unwrap_or("<none>")
}

fn date_offset(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test]
async fn signed_request_succeeds_and_error_body_has_alibaba_shape() {
    let e = emu().await;
    let (s, b) = send(&e, &create_req("gw")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(&e, &get_req("missing")).await;
    assert_eq!((s, code(&b)), (404, "EntityNotExists.ChatConfiguration"));
    let rid = b["RequestId"].as_str().unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(rid, rid.to_uppercase());
    assert_eq!(b["HostId"].as_str().unwrap(), e.local_addr().to_string());
    assert!(
        b["Recommend"]
            .as_str()
            .unwrap()
            .ends_with(&format!("requestId={rid}"))
    );
    assert_eq!(
        b["Message"],
        "The specified chat configuration does not exist."
    );
    e.shutdown().await;
}

#[tokio::test]
async fn replayed_nonce_is_rejected_but_forgery_does_not_burn_it() {
    let e = emu().await;
    let mut r = get_req("x");
    r.nonce = "fixed-nonce-1".into();
    // A5/A1: the nonce is recorded only after the signature verified.
    let (_, _, forged) = send_as(&e, &r, ID, "wrong-secret").await;
    assert_eq!(code(&forged), "SignatureDoesNotMatch");
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (404, "EntityNotExists.ChatConfiguration"));
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (400, "SignatureNonceUsed"));
    // Scope is per access key (A5): another key may use the same nonce.
    e.add_access_key(AccessKey::new("second", "second-secret"));
    let (_, _, b) = send_as(&e, &r, "second", "second-secret").await;
    assert_eq!(code(&b), "EntityNotExists.ChatConfiguration");
    e.shutdown().await;
}

#[tokio::test]
async fn date_window_and_format() {
    let e = emu().await;
    for (offset, want) in [
        (-16 * 60, "InvalidTimeStamp.Expired"),
        (16 * 60, "InvalidTimeStamp.Expired"),
        (-14 * 60, "EntityNotExists.ChatConfiguration"),
        (14 * 60, "EntityNotExists.ChatConfiguration"),
    ] {
        let mut r = get_req("x");
        r.date = date_offset(offset);
        let (_, b) = send(&e, &r).await;
        assert_eq!(code(&b), want, "offset {offset}");
    }
    for bad in [
        "2026-01-02 03:04:05",
        "2026-01-02T03:04:05",
        "2026-01-02T03:04:05.123Z",
        "yesterday",
    ] {
        let mut r = get_req("x");
        r.date = bad.into();
        let (s, b) = send(&e, &r).await;
        assert_eq!((s, code(&b)), (400, "InvalidTimeStamp.Format"), "{bad}");
    }
    e.shutdown().await;
}

#[tokio::test]
async fn unsigned_headers_are_incomplete_signatures() {
    let e = emu().await;
    // A2: host must be signed.
    let mut r = get_req("x");
    r.unsigned = vec!["host".into()];
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (400, "IncompleteSignature"));
    assert!(b["Message"].as_str().unwrap().contains("host"));
    // A2: every received x-acs-* header must be signed.
    let mut r = get_req("x");
    r.extra_headers = vec![("x-acs-credentials-provider".into(), "static_ak".into())];
    r.unsigned = vec!["x-acs-credentials-provider".into()];
    let (_, b) = send(&e, &r).await;
    assert_eq!(code(&b), "IncompleteSignature");
    // Signed, the same extra header is fine (the SDK also signs accept and user-agent).
    r.unsigned.clear();
    r.extra_headers
        .push(("user-agent".into(), "AlibabaCloud (test) TeaDSL/2".into()));
    let (_, b) = send(&e, &r).await;
    assert_eq!(code(&b), "EntityNotExists.ChatConfiguration");
    // No Authorization at all.
    let resp = client()
        .post(format!("{}/?Name=x", e.endpoint()))
        .header("x-acs-action", "GetChatConfiguration")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(code(&b), "IncompleteSignature");
    e.shutdown().await;
}

#[tokio::test]
async fn body_hash_mismatch_and_form_body() {
    let e = emu().await;
    let mut r = get_req("x");
    r.payload_hash_override = Some("0".repeat(64));
    let (s, b) = send(&e, &r).await;
    // A3.
    assert_eq!((s, code(&b)), (400, "SignatureDoesNotMatch"));
    assert!(
        b["Message"]
            .as_str()
            .unwrap()
            .contains("x-acs-content-sha256")
    );
    // A tolerant gateway merges a signed form body with the query (reference section 2).
    let mut r = TestRequest::new("GetChatConfiguration", &[("RegionId", "cn-hangzhou")]);
    r.body = b"Name=from+body".to_vec();
    r.content_type = Some("application/x-www-form-urlencoded".into());
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (400, "InvalidParameter"), "{b}"); // "from body" has a space (A8)
    r.body = b"Name=frombody".to_vec();
    r.nonce = "another".into();
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (404, "EntityNotExists.ChatConfiguration"));
    // content-type must be signed (A2).
    r.nonce = "third".into();
    r.unsigned = vec!["content-type".into()];
    assert_eq!(code(&send(&e, &r).await.1), "IncompleteSignature");
    e.shutdown().await;
}

#[tokio::test]
async fn unknown_key_action_version_and_method() {
    let e = emu().await;
    let (s, _, b) = send_as(&e, &get_req("x"), "nobody", "x").await;
    assert_eq!((s, code(&b)), (404, "InvalidAccessKeyId.NotFound"));
    let (s, b) = send(&e, &TestRequest::new("DescribeInstances", &[])).await;
    assert_eq!((s, code(&b)), (404, "InvalidApi.NotFound"));
    let mut r = get_req("x");
    r.version = "2015-01-01".into();
    let (s, b) = send(&e, &r).await;
    assert_eq!((s, code(&b)), (404, "InvalidApi.NotFound"));
    let resp = client()
        .put(format!("{}/", e.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["Code"],
        "InvalidApi.NotFound"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn sts_key_token_rules() {
    let e = emulator::start(EmulatorConfig {
        access_keys: vec![
            AccessKey::new("STS.k", "sts-secret").with_security_token("CAIS+tok/en=="),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut r = get_req("x");
    let (_, _, b) = send_as(&e, &r, "STS.k", "sts-secret").await;
    assert_eq!(code(&b), "MissingSecurityToken");
    r.security_token = Some("CAIS+other".into());
    r.nonce = "n2".into();
    assert_eq!(
        code(&send_as(&e, &r, "STS.k", "sts-secret").await.2),
        "InvalidSecurityToken.MismatchWithAccessKey"
    );
    r.security_token = Some("CAIS+tok/en==".into());
    r.nonce = "n3".into();
    r.extra_headers = vec![("x-acs-accesskey-id".into(), "STS.k".into())];
    assert_eq!(
        code(&send_as(&e, &r, "STS.k", "sts-secret").await.2),
        "EntityNotExists.ChatConfiguration"
    );
    // An unsigned token header is an incomplete signature (A2).
    r.nonce = "n4".into();
    r.unsigned = vec!["x-acs-security-token".into()];
    assert_eq!(
        code(&send_as(&e, &r, "STS.k", "sts-secret").await.2),
        "IncompleteSignature"
    );
    e.shutdown().await;
}

/// The exact bytes the official Python SDK sent (reference sdk-wire-create.txt), replayed over TCP.
#[tokio::test]
async fn official_sdk_wire_capture_verifies() {
    let e = emulator::start(EmulatorConfig {
        access_keys: vec![AccessKey::new("testAccessKeyId", "testAccessKeySecret")],
        date_window: None, // the capture's date is pinned to 2026-01-02T03:04:05Z
        ..Default::default()
    })
    .await
    .unwrap();
    let raw = "POST /?Configuration=%7B%22DingTalkClientId%22%3A%22ding+abc%2A~%2F%2B%22%2C%22DingTalkClientSecret%22%3A%22s3cr3t%22%2C%22DingTalkTemplateId%22%3A%22tpl-1.schema%22%7D&Name=chatops-1&RamRole=OOSServiceRole&RegionId=cn-hangzhou&Type=DingTalk HTTP/1.1\r\n\
Accept-Encoding: identity\r\n\
host: 127.0.0.1:45449\r\n\
x-acs-version: 2019-06-01\r\n\
x-acs-action: CreateChatConfiguration\r\n\
user-agent: AlibabaCloud (Fixed; x86_64) Python/3.11 Core/0.4.3 TeaDSL/2\r\n\
x-acs-date: 2026-01-02T03:04:05Z\r\n\
x-acs-signature-nonce: nonce-0001\r\n\
accept: application/json\r\n\
x-acs-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n\
x-acs-credentials-provider: static_ak\r\n\
Authorization: ACS3-HMAC-SHA256 Credential=testAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=9521209976c3fd3433f2c47687464cdf47d2b22ccfb8d57a79bdb527c0583d36\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";
    let exchange = |raw: String| {
        let addr = e.local_addr();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let out = exchange(raw.to_string()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""Name":"chatops-1""#), "{out}");
    // One changed byte in the query breaks it.
    let tampered = raw
        .replace("chatops-1", "chatops-2")
        .replace("nonce-0001", "nonce-0002");
    let out = exchange(tampered).await;
    assert!(out.contains("SignatureDoesNotMatch"), "{out}");
    e.shutdown().await;
}

#[tokio::test]
async fn fault_latency_and_stall() {
    let e = emu().await;
    e.faults().set_latency(Duration::from_millis(300));
    let t = Instant::now();
    send(&e, &get_req("x")).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    e.faults().set_latency(Duration::ZERO);
    e.faults()
        .add_rule(FaultRule::stall(5_000).times(1))
        .unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let err = get_req("x")
        .build(&quick, &e.endpoint(), ID, SECRET)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The stall was used up: the next request is answered at once.
    let t = Instant::now();
    assert_eq!(
        code(&send(&e, &get_req("x")).await.1),
        "EntityNotExists.ChatConfiguration"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    e.shutdown().await;
}

#[tokio::test]
async fn fault_reset_before_and_after_commit() {
    let e = emu().await;
    e.faults()
        .add_rule(
            FaultRule::reset()
                .for_action("GetChatConfiguration")
                .times(1),
        )
        .unwrap();
    let err = get_req("x")
        .build(&client(), &e.endpoint(), ID, SECRET)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_request() || err.is_connect() || err.to_string().contains("connection"),
        "{err:?}"
    );
    // After-commit reset: the Create happens, the answer is lost (a realistic ambiguous failure).
    e.faults()
        .add_rule(
            FaultRule::reset()
                .for_action("CreateChatConfiguration")
                .times(1)
                .after_commit(),
        )
        .unwrap();
    assert!(
        create_req("lost")
            .build(&client(), &e.endpoint(), ID, SECRET)
            .send()
            .await
            .is_err()
    );
    let (s, b) = send(&e, &create_req("lost")).await;
    assert_eq!(
        (s, code(&b)),
        (409, "EntityAlreadyExists.ChatConfiguration")
    );
    assert_eq!(e.configuration_count(), 1);
    e.shutdown().await;
}

#[tokio::test]
async fn fault_error_codes_rate_and_retry_after() {
    let e = emu().await;
    let mut rule = FaultRule::error("Throttling.User").times(1);
    rule.retry_after_ms = Some(1500);
    e.faults().add_rule(rule).unwrap();
    let (s, h, b) = send_as(&e, &get_req("x"), ID, SECRET).await;
    assert_eq!((s, code(&b)), (400, "Throttling.User"));
    assert_eq!(h["x-acs-retry-after"], "1500");
    // Rate 0.5 over 200 requests: both outcomes occur (chance of failure ~1e-60).
    e.faults()
        .set(FaultConfig {
            rules: vec![FaultRule::error("ServiceUnavailable").with_rate(0.5)],
            ..Default::default()
        })
        .unwrap();
    let mut unavailable = 0;
    for _ in 0..200 {
        let (s, _) = send(&e, &get_req("x")).await;
        if s == 503 {
            unavailable += 1;
        }
    }
    assert!((40..=160).contains(&unavailable), "{unavailable}");
    e.faults().clear();
    e.shutdown().await;
}

/// A21: a rule may answer any Alibaba error code, terminal ones included, in the real error shape.
#[tokio::test]
async fn fault_any_error_code_with_its_status() {
    let e = emu().await;
    let cases: &[(&str, Option<u16>, u16)] = &[
        ("Forbidden.RAM", None, 403),
        ("InvalidParameter", None, 400),
        ("InvalidAccessKeyId.NotFound", None, 404),
        ("SignatureDoesNotMatch", None, 400),
        ("EntityNotExists.ChatConfiguration", None, 404),
        ("Throttling.User", None, 400),
        ("ServiceUnavailable", None, 503),
        ("InternalError", None, 500),
        ("QuotaExceeded.ChatConfiguration", Some(429), 429),
        ("Forbidden.RAM", Some(401), 401),
    ];
    for (c, status, _) in cases {
        let mut rule = FaultRule::error(c)
            .for_action("UpdateChatConfiguration")
            .times(1);
        rule.http_status = *status;
        e.faults().add_rule(rule).unwrap();
    }
    assert_eq!(send(&e, &create_req("t")).await.0, 200);
    let update = || {
        TestRequest::new(
            "UpdateChatConfiguration",
            &[("Name", "t"), ("RamRole", "Changed")],
        )
    };
    for (c, _, want) in cases {
        let (s, h, b) = send_as(&e, &update(), ID, SECRET).await;
        assert_eq!((s, code(&b)), (*want, *c), "{b}");
        let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["Code", "HostId", "Message", "Recommend", "RequestId"]
        );
        let rid = b["RequestId"].as_str().unwrap();
        assert_eq!(h["x-acs-request-id"], rid);
        assert_eq!(
            b["Recommend"],
            format!("https://api.aliyun.com/troubleshoot?q={c}&product=Oos&requestId={rid}")
        );
        assert!(h.get("x-acs-retry-after").is_none());
    }
    assert!(
        send(&e, &get_req("t")).await.1["ChatConfiguration"]
            .get("RamRole")
            .is_none(),
        "no injected Update reached the store"
    );
    // Messages: the known text, a generic one for unknown codes, or the rule's own.
    let (_, b) = send(&e, &update()).await;
    assert!(b.get("Code").is_none(), "rules used up: {b}");
    e.faults()
        .set(FaultConfig {
            rules: vec![
                FaultRule::error("Forbidden.RAM").times(1),
                FaultRule::error("Custom.Code").with_status(418).times(1),
                FaultRule::error("InternalError")
                    .with_message("Disk on fire.")
                    .times(1),
            ],
            ..Default::default()
        })
        .unwrap();
    let messages = [
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
        "The request processing has failed with error Custom.Code.",
        "Disk on fire.",
    ];
    for want in messages {
        assert_eq!(send(&e, &get_req("t")).await.1["Message"], want);
    }
    e.shutdown().await;
}

#[tokio::test]
async fn fault_qps_limit_per_account() {
    let e = emu().await;
    e.add_access_key(AccessKey::new("other", "other-secret").with_owner("999"));
    e.faults().set_qps_limit(Some(3)).unwrap();
    // Bounded burst of 10 within well under a second: at most 3 per one-second window pass (A20).
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(code(&send(&e, &get_req("x")).await.1).to_string());
    }
    let throttled = codes.iter().filter(|c| *c == "Throttling.User").count();
    assert!(throttled >= 4, "{codes:?}");
    // Another account has its own budget.
    let (_, _, b) = send_as(&e, &get_req("x"), "other", "other-secret").await;
    assert_eq!(code(&b), "EntityNotExists.ChatConfiguration");
    e.shutdown().await;
}

#[tokio::test]
async fn admin_api_over_http() {
    let e = emu_with(EmulatorConfig {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await;
    let admin = e.admin_url().unwrap();
    send(&e, &create_req("adm")).await;
    send(&e, &get_req("adm")).await;
    let c = client();
    let calls: Value = c
        .get(format!("{admin}/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["CreateChatConfiguration"], 1);
    assert_eq!(calls["GetChatConfiguration"], 1);
    let log = c
        .get(format!("{admin}/requests"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !log.contains("gw-conf-secret") && !log.contains(SECRET),
        "{log}"
    );
    assert!(log.contains("a b+c"));
    // A21: an unknown code needs http_status; a status outside 400-599 is refused.
    for body in [
        r#"{"rules":[{"kind":"error","code":"Nope"}]}"#,
        r#"{"rules":[{"kind":"error","code":"Nope","http_status":302}]}"#,
        r#"{"rules":[{"kind":"reset","code":"InternalError"}]}"#,
    ] {
        let bad = c
            .post(format!("{admin}/faults"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{body}");
    }
    let ok = c
        .post(format!("{admin}/faults"))
        .body(r#"{"rules":[{"kind":"error","code":"Nope","http_status":451,"message":"No.","remaining":1},{"kind":"error","code":"Forbidden.RAM"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(send(&e, &get_req("adm")).await.0, 451);
    assert_eq!(code(&send(&e, &get_req("adm")).await.1), "Forbidden.RAM");
    let ok = c
        .post(format!("{admin}/faults"))
        .body(r#"{"latency_ms":1,"qps_limit":50}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let f: Value = c
        .get(format!("{admin}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (f["latency_ms"].as_u64(), f["qps_limit"].as_u64()),
        (Some(1), Some(50))
    );
    c.post(format!("{admin}/reset?state=true"))
        .send()
        .await
        .unwrap();
    assert!(e.calls().is_empty());
    assert_eq!(e.configuration_count(), 0);
    e.shutdown().await;
}

/// `GET /state` (the exact remote set, masked by A22) and `GET /calls?by=code` (A19).
#[tokio::test]
async fn admin_state_and_calls_by_code() {
    let e = emu_with(EmulatorConfig {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await;
    e.add_access_key(AccessKey::new("other", "other-secret").with_owner("42"));
    let admin = e.admin_url().unwrap();
    let get_json = |path: &str| {
        let url = format!("{admin}{path}");
        async move {
            let r = client().get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(
        get_json("/state").await,
        (200, serde_json::json!({"configurations": []}))
    );
    let wechat = TestRequest::new(
        "CreateChatConfiguration",
        &[
            ("RegionId", "cn-beijing"),
            ("Name", "wx"),
            ("Type", "WeChat"),
            ("RamRole", "OOSServiceRole"),
            ("ResourceGroupId", "rg-1"),
            (
                "Configuration",
                r#"{"CorpId":"corp","CorpSecret":"wx-secret","Bots":[{"Token":"wx-token","Id":7}]}"#,
            ),
        ],
    );
    assert_eq!(send(&e, &wechat).await.0, 200);
    assert_eq!(send(&e, &create_req("gw")).await.0, 200);
    let (s, _, _) = send_as(&e, &create_req("theirs"), "other", "other-secret").await;
    assert_eq!(s, 200);
    let (s, state) = get_json("/state").await;
    assert_eq!(s, 200);
    let list = state["configurations"].as_array().unwrap();
    let keys: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|c| {
            (
                c["owner"].as_str().unwrap(),
                c["region"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("1234567890123456", "cn-beijing", "wx"),
            ("1234567890123456", "cn-hangzhou", "gw"),
            ("42", "cn-hangzhou", "theirs"),
        ]
    );
    let wx = &list[0];
    let got = send(
        &e,
        &TestRequest::new(
            "GetChatConfiguration",
            &[("RegionId", "cn-beijing"), ("Name", "wx")],
        ),
    )
    .await
    .1;
    let g = &got["ChatConfiguration"];
    let url = serde_json::from_str::<Value>(g["Outputs"].as_str().unwrap()).unwrap()["URL"].clone();
    assert_eq!(
        *wx,
        serde_json::json!({
            "owner": "1234567890123456", "region": "cn-beijing", "name": "wx", "type": "WeChat",
            "ramRole": "OOSServiceRole", "resourceGroupId": "rg-1",
            "createdDate": g["CreatedDate"], "updatedDate": g["UpdatedDate"],
            "configuration": {"CorpId": "corp", "CorpSecret": "******",
                              "Bots": [{"Token": "******", "Id": 7}]},
            "outputs": {"URL": url, "AesKey": "******"},
        })
    );
    assert!(list[1]["ramRole"].is_null() && list[1]["resourceGroupId"].is_null());
    assert!(list[1]["outputs"].get("AesKey").is_none());
    let text = state.to_string();
    assert!(
        !text.contains("wx-secret") && !text.contains("gw-conf-secret"),
        "{text}"
    );
    // The in-process view is the same.
    assert_eq!(
        serde_json::to_value(e.state()).unwrap(),
        state["configurations"]
    );
    // Filters.
    let (_, only) = get_json("/state?owner=42").await;
    assert_eq!(only["configurations"].as_array().unwrap().len(), 1);
    let (_, only) = get_json("/state?owner=1234567890123456&region=cn-hangzhou").await;
    assert_eq!(only["configurations"][0]["name"], "gw");
    assert_eq!(get_json("/state?bogus=1").await.0, 400);

    // Answers by code: OK, injected codes, reset; requests that fail authentication count too.
    e.reset();
    e.faults()
        .add_rule(
            FaultRule::error("Forbidden.RAM")
                .for_action("GetChatConfiguration")
                .times(1),
        )
        .unwrap();
    e.faults()
        .add_rule(
            FaultRule::reset()
                .for_action("GetChatConfiguration")
                .times(1),
        )
        .unwrap();
    send(&e, &get_req("gw")).await;
    assert!(
        get_req("gw")
            .build(&client(), &e.endpoint(), ID, SECRET)
            .send()
            .await
            .is_err()
    );
    send(&e, &get_req("gw")).await;
    send(&e, &get_req("nope")).await;
    send_as(&e, &get_req("gw"), ID, "wrong").await;
    let (s, by_code) = get_json("/calls?by=code").await;
    assert_eq!(s, 200);
    assert_eq!(
        by_code,
        serde_json::json!({"GetChatConfiguration": {
            "Forbidden.RAM": 1, "reset": 1, "OK": 1,
            "EntityNotExists.ChatConfiguration": 1, "SignatureDoesNotMatch": 1}})
    );
    assert_eq!(e.calls_by_answer()["GetChatConfiguration"]["OK"], 1);
    assert_eq!(
        get_json("/calls").await.1,
        serde_json::json!({"GetChatConfiguration": 5})
    );
    assert_eq!(
        get_json("/calls?by=action").await.1,
        get_json("/calls").await.1
    );
    assert_eq!(get_json("/calls?by=nonsense").await.0, 400);
    e.reset();
    assert_eq!(get_json("/calls?by=code").await.1, serde_json::json!({}));
    e.shutdown().await;
}

/// A22: the request log masks by the project's one rule, at every depth, whatever the value type.
#[tokio::test]
async fn request_log_masks_by_the_one_rule() {
    let e = emu_with(EmulatorConfig {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await;
    let conf = r#"{"DingTalkClientId":"visible-id","ApiKey":"visible-apikey",
        "Robots":[{"Name":"r1","Token":"deep-tok-1","Opts":{"Password":987654}}],
        "Private":{"rsaPrivateKey":"pk-2","EncodingAESKey":"aes-3","db_passwd":["pw-4"]},
        "Credentials":{"id":"cred-5"},"ClientSecret":"sec-6"}"#;
    let r = TestRequest::new(
        "CreateChatConfiguration",
        &[
            ("Name", "masked"),
            ("Type", "WeChat"),
            ("Configuration", conf),
        ],
    );
    assert_eq!(send(&e, &r).await.0, 200);
    let list = TestRequest::new(
        "ListChatConfigurations",
        &[("MaxResults", "1"), ("NextToken", "+/+/djE6YQ==")],
    );
    send(&e, &list).await;
    let sts = format!(
        "{}/?Action=AssumeRoleWithOIDC&RoleArn=acs:ram::1:role/r&OIDCProviderArn=acs:ram::1:oidc-provider/p&OIDCToken=oidc-tok-7&RoleSessionName=s1",
        e.endpoint()
    );
    assert_eq!(client().post(sts).send().await.unwrap().status(), 200);
    let log: Value = client()
        .get(format!("{}/requests", e.admin_url().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = log.to_string();
    for secret in [
        "deep-tok-1",
        "987654",
        "pk-2",
        "aes-3",
        "pw-4",
        "cred-5",
        "sec-6",
        "oidc-tok-7",
        "djE6YQ",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let logged: Value =
        serde_json::from_str(log[0]["params"]["Configuration"].as_str().unwrap()).unwrap();
    assert_eq!(logged["DingTalkClientId"], "visible-id");
    assert_eq!(logged["ApiKey"], "visible-apikey");
    assert_eq!(logged["Robots"][0]["Name"], "r1");
    assert_eq!(logged["Robots"][0]["Opts"]["Password"], "******");
    assert_eq!(logged["Private"]["db_passwd"], "******");
    assert_eq!(logged["Credentials"], "******");
    assert_eq!(log[1]["params"]["MaxResults"], "1");
    assert_eq!(log[1]["params"]["NextToken"], "******");
    assert_eq!(log[2]["params"]["OIDCToken"], "******");
    assert_eq!(log[2]["params"]["RoleSessionName"], "s1");
    e.shutdown().await;
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = || EmulatorConfig {
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let e = emu_with(cfg()).await;
    assert_eq!(send(&e, &create_req("keep")).await.0, 200);
    let before = send(&e, &get_req("keep")).await.1;
    e.shutdown().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // No temp file is left behind by the atomic write.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let e = emu_with(cfg()).await;
    let after = send(&e, &get_req("keep")).await.1;
    assert_eq!(before["ChatConfiguration"], after["ChatConfiguration"]);
    assert_eq!(send(&e, &create_req("keep")).await.0, 409);
    e.shutdown().await;
    std::fs::write(&path, b"{not json").unwrap();
    assert!(
        emulator::start(cfg()).await.is_err(),
        "a corrupt state file must not be silently wiped"
    );
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let cfg = EmulatorConfig {
        access_keys: vec![
            AccessKey::new("id", "very-secret-1").with_security_token("very-secret-2"),
        ],
        expected_oidc_token: Some("very-secret-3".into()),
        ..Default::default()
    };
    let text = format!("{cfg:?}");
    assert!(text.contains("id"));
    for s in ["very-secret-1", "very-secret-2", "very-secret-3"] {
        assert!(!text.contains(s), "{text}");
    }
}

#[test]
fn cli_prints_addresses_but_never_secrets() {
    use std::io::BufRead as _;
    let bin = env!("CARGO_BIN_EXE_oos-emulator");
    let mut child = std::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args([
            "--access-key",
            "cliId:cli-secret-xyz:42",
            "--sts-key",
            "STS.c:cli-secret-abc:cli-token-def",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    while !text.contains("access keys") {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => text.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");
    assert!(text.contains("admin on http://127.0.0.1:"), "{text}");
    assert!(text.contains("cliId (owner 42)"), "{text}");
    for s in ["cli-secret-xyz", "cli-secret-abc", "cli-token-def"] {
        assert!(!text.contains(s), "{text}");
    }
}
