//! Fault drills against the `oos-emulator` binary, as an operator drill would run it: a real
//! process with `--state-file` and `--admin-listen`, faults set over the admin API, answers
//! counted with `GET /calls?by=code`, the remote set read with `GET /state`, and `kill -9`
//! restarts. Rates are checked with bounds a correct implementation misses with probability
//! below 1e-6.

use oos_emulator::testsign::TestRequest;
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ID: &str = "drillKeyId";
const SECRET: &str = "drillKeySecret-never-printed";
const OWNER: &str = "1111111111111111";
const OTHER_ID: &str = "drillOtherId";
const OTHER_SECRET: &str = "drillOtherSecret";
const OTHER_OWNER: &str = "2222222222222222";

/// A running `oos-emulator` process; killed with SIGKILL when dropped.
struct Emulator {
    child: Child,
    api: String,
    admin: String,
}

impl Emulator {
    fn start(state_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oos-emulator"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--state-file")
            .arg(state_file)
            .args(["--access-key", &format!("{ID}:{SECRET}:{OWNER}")])
            .args([
                "--access-key",
                &format!("{OTHER_ID}:{OTHER_SECRET}:{OTHER_OWNER}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn oos-emulator");
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
        let (mut api, mut admin) = (None, None);
        while api.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("emulator prints its addresses");
            if let Some(a) = line.strip_prefix("oos-emulator listening on ") {
                api = Some(a.to_string());
            }
            if let Some(a) = line.strip_prefix("oos-emulator admin on ") {
                admin = Some(a.to_string());
            }
        }
        Self {
            child,
            api: api.unwrap(),
            admin: admin.unwrap(),
        }
    }

    /// `kill -9`: no shutdown path runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn admin_get(&self, path: &str) -> Value {
        let r = http().get(format!("{}{path}", self.admin)).send().await;
        let r = r.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn set_faults(&self, faults: Value) {
        let r = http()
            .post(format!("{}/faults", self.admin))
            .body(faults.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn clear_faults(&self) {
        let r = http()
            .delete(format!("{}/faults", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn reset_counters(&self) {
        let r = http()
            .post(format!("{}/reset", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// `GET /calls?by=code` for one action.
    async fn answers(&self, action: &str) -> Value {
        self.admin_get("/calls?by=code").await[action].clone()
    }

    async fn state(&self) -> Vec<Value> {
        self.admin_get("/state").await["configurations"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Send a signed request with `client`: `Ok((status, body))` or the transport error.
    async fn call_with(
        &self,
        client: &reqwest::Client,
        r: &TestRequest,
    ) -> Result<(u16, reqwest::header::HeaderMap, Value), reqwest::Error> {
        let resp = r.build(client, &self.api, ID, SECRET).send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await?;
        Ok((status, headers, body))
    }

    async fn call(&self, r: &TestRequest) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call_with(&http(), r).await.expect("an answer")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn create(name: &str) -> TestRequest {
    TestRequest::new(
        "CreateChatConfiguration",
        &[
            ("Name", name),
            ("Type", "DingTalk"),
            (
                "Configuration",
                r#"{"DingTalkClientId":"drill-id","DingTalkClientSecret":"drill-secret-1"}"#,
            ),
        ],
    )
}

fn get(name: &str) -> TestRequest {
    TestRequest::new("GetChatConfiguration", &[("Name", name)])
}

fn list() -> TestRequest {
    TestRequest::new("ListChatConfigurations", &[("MaxResults", "100")])
}

fn update(name: &str, role: &str) -> TestRequest {
    TestRequest::new(
        "UpdateChatConfiguration",
        &[("Name", name), ("RamRole", role)],
    )
}

fn code(b: &Value) -> &str {
    b["Code"].as_str().unwrap_or("OK")
}

fn count(answers: &Value, answer: &str) -> u64 {
    answers[answer].as_u64().unwrap_or(0)
}

fn state_names(state: &[Value]) -> Vec<String> {
    state
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

const N: usize = 150;
/// Bounds for Binomial(150, 0.2) (mean 30): outside with probability < 1e-7.
const RATE_BOUNDS: std::ops::RangeInclusive<u64> = 8..=60;

/// 5xx drills: `InternalError` on 20 % of Gets and `ServiceUnavailable` on 20 % of Lists; other
/// actions untouched; `/calls?by=code` matches what the client saw, answer by answer.
#[tokio::test]
async fn drill_server_errors_with_rate_and_action_filter() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emulator::start(&dir.path().join("state.json"));
    assert_eq!(e.call(&create("five")).await.0, 200);
    e.set_faults(json!({"rules": [
        {"kind": "error", "code": "InternalError", "action": "GetChatConfiguration", "rate": 0.2},
        {"kind": "error", "code": "ServiceUnavailable", "action": "ListChatConfigurations", "rate": 0.2}]}))
        .await;
    e.reset_counters().await;
    let (mut internal, mut unavailable) = (0u64, 0u64);
    for _ in 0..N {
        let (s, _, b) = e.call(&get("five")).await;
        match (s, code(&b)) {
            (200, "OK") => {}
            (500, "InternalError") => internal += 1,
            other => panic!("unexpected {other:?}"),
        }
        let (s, _, b) = e.call(&list()).await;
        match (s, code(&b)) {
            (200, "OK") => {}
            (503, "ServiceUnavailable") => unavailable += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    for i in 0..20 {
        let (s, _, b) = e.call(&update("five", &format!("Role{i}"))).await;
        assert_eq!(s, 200, "Update is not filtered in: {b}");
    }
    assert!(RATE_BOUNDS.contains(&internal), "{internal}");
    assert!(RATE_BOUNDS.contains(&unavailable), "{unavailable}");
    let by_code = e.admin_get("/calls?by=code").await;
    assert_eq!(
        by_code,
        json!({
            "GetChatConfiguration": {"OK": N as u64 - internal, "InternalError": internal},
            "ListChatConfigurations": {"OK": N as u64 - unavailable, "ServiceUnavailable": unavailable},
            "UpdateChatConfiguration": {"OK": 20},
        })
    );
    e.clear_faults().await;
    for _ in 0..10 {
        assert_eq!(e.call(&get("five")).await.0, 200);
    }
    // The plain counters stay backward compatible.
    assert_eq!(
        e.admin_get("/calls").await,
        json!({"GetChatConfiguration": N + 10, "ListChatConfigurations": N, "UpdateChatConfiguration": 20})
    );
}

/// `Throttling.User` with `retry_after_ms` (the header is sent) and without (it is not), each on
/// 20 % of one action.
#[tokio::test]
async fn drill_throttling_with_and_without_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emulator::start(&dir.path().join("state.json"));
    assert_eq!(e.call(&create("thr")).await.0, 200);
    e.set_faults(json!({"rules": [
        {"kind": "error", "code": "Throttling.User", "action": "GetChatConfiguration", "rate": 0.2,
         "retry_after_ms": 700},
        {"kind": "error", "code": "Throttling.User", "action": "UpdateChatConfiguration", "rate": 0.2}]}))
        .await;
    e.reset_counters().await;
    let (mut with_header, mut without_header) = (0u64, 0u64);
    for i in 0..N {
        let (s, h, b) = e.call(&get("thr")).await;
        if s != 200 {
            assert_eq!((s, code(&b)), (400, "Throttling.User"));
            assert_eq!(h["x-acs-retry-after"], "700");
            with_header += 1;
        }
        let (s, h, b) = e.call(&update("thr", &format!("R{i}"))).await;
        if s != 200 {
            assert_eq!((s, code(&b)), (400, "Throttling.User"));
            assert!(h.get("x-acs-retry-after").is_none());
            without_header += 1;
        }
    }
    assert!(RATE_BOUNDS.contains(&with_header), "{with_header}");
    assert!(RATE_BOUNDS.contains(&without_header), "{without_header}");
    let get_answers = e.answers("GetChatConfiguration").await;
    assert_eq!(count(&get_answers, "Throttling.User"), with_header);
    assert_eq!(count(&get_answers, "OK"), N as u64 - with_header);
    let update_answers = e.answers("UpdateChatConfiguration").await;
    assert_eq!(count(&update_answers, "Throttling.User"), without_header);
    assert_eq!(count(&update_answers, "OK"), N as u64 - without_header);
}

/// A stall longer than the client's timeout on 20 % of Gets: exactly the stalled requests time
/// out and count as `stall`; Lists are not stalled. A stalled Update whose client gave up still
/// commits when the stall ends, as on a real server.
#[tokio::test]
async fn drill_stall_longer_than_client_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emulator::start(&dir.path().join("state.json"));
    assert_eq!(e.call(&create("st")).await.0, 200);
    e.set_faults(json!({"rules": [
        {"kind": "stall", "stall_ms": 6000, "action": "GetChatConfiguration", "rate": 0.2}]}))
        .await;
    e.reset_counters().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    // Concurrently, so that the stalled ones cost one timeout in all.
    let e = std::sync::Arc::new(e);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (e, c) = (e.clone(), impatient.clone());
        tasks.spawn(async move {
            match e.call_with(&c, &get("st")).await {
                Ok((200, _, _)) => false,
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(err) if err.is_timeout() => true,
                Err(err) => panic!("unexpected error {err:?}"),
            }
        });
    }
    let mut timeouts = 0u64;
    while let Some(r) = tasks.join_next().await {
        timeouts += u64::from(r.unwrap());
    }
    assert!(RATE_BOUNDS.contains(&timeouts), "{timeouts}");
    for _ in 0..20 {
        assert_eq!(e.call_with(&impatient, &list()).await.unwrap().0, 200);
    }
    let answers = e.answers("GetChatConfiguration").await;
    assert_eq!(count(&answers, "stall"), timeouts, "{answers}");
    assert_eq!(count(&answers, "OK"), N as u64 - timeouts, "{answers}");
    assert_eq!(e.answers("ListChatConfigurations").await, json!({"OK": 20}));

    e.set_faults(json!({"rules": [
        {"kind": "stall", "stall_ms": 1500, "action": "UpdateChatConfiguration", "remaining": 1}]}))
        .await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = e
        .call_with(&quick, &update("st", "AfterStall"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, b) = e.call(&get("st")).await;
        if b["ChatConfiguration"]["RamRole"] == "AfterStall" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled Update never committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `reset` before commit on 20 % of Creates: exactly the Creates whose connection was reset are
/// missing from `/state`; Gets are not reset.
#[tokio::test]
async fn drill_reset_before_commit() {
    let dir = tempfile::tempdir().unwrap();
    let e = Emulator::start(&dir.path().join("state.json"));
    e.set_faults(json!({"rules": [
        {"kind": "reset", "action": "CreateChatConfiguration", "rate": 0.2}]}))
        .await;
    let mut lost = Vec::new();
    for i in 0..N {
        let name = format!("rb-{i:03}");
        match e.call_with(&http(), &create(&name)).await {
            Ok((200, _, _)) => {}
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(_) => lost.push(name),
        }
    }
    assert!(RATE_BOUNDS.contains(&(lost.len() as u64)), "{}", lost.len());
    let names = state_names(&e.state().await);
    for _ in 0..20 {
        assert_eq!(e.call(&get(&names[0])).await.0, 200);
    }
    assert_eq!(names.len(), N - lost.len());
    assert!(
        lost.iter().all(|n| !names.contains(n)),
        "a reset Create committed"
    );
    let answers = e.answers("CreateChatConfiguration").await;
    assert_eq!(answers, json!({"OK": N - lost.len(), "reset": lost.len()}));
    assert!(
        e.answers("GetChatConfiguration")
            .await
            .get("reset")
            .is_none()
    );
}

/// `reset` with `after_commit` on 20 % of Creates: every Create is kept although some answers
/// were lost, and the change is in the state file before the connection is reset: kill -9 right
/// after a lost answer and restart on the same file, the configuration is there.
#[tokio::test]
async fn drill_reset_after_commit_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let e = Emulator::start(&path);
    e.set_faults(json!({"rules": [
        {"kind": "reset", "action": "CreateChatConfiguration", "rate": 0.2, "after_commit": true}]}))
        .await;
    let mut lost = 0u64;
    for i in 0..N {
        match e.call_with(&http(), &create(&format!("ra-{i:03}"))).await {
            Ok((200, _, _)) => {}
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(_) => lost += 1,
        }
    }
    assert!(RATE_BOUNDS.contains(&lost), "{lost}");
    assert_eq!(e.state().await.len(), N, "every Create committed");
    assert_eq!(
        e.answers("CreateChatConfiguration").await,
        json!({"OK": N as u64 - lost, "reset": lost})
    );
    let log = e.admin_get("/requests").await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["fault"] == "reset after_commit" && r["status"] == 0),
        "{log}"
    );

    // The last write's answer is lost, then the process dies at once.
    e.set_faults(json!({"rules": [
        {"kind": "reset", "action": "CreateChatConfiguration", "remaining": 1, "after_commit": true}]}))
        .await;
    assert!(e.call_with(&http(), &create("last-word")).await.is_err());
    e.kill9();
    let e = Emulator::start(&path);
    let state = e.state().await;
    assert_eq!(state.len(), N + 1);
    assert!(state_names(&state).contains(&"last-word".to_string()));
    assert_eq!(
        e.call(&get("last-word")).await.2["ChatConfiguration"]["Name"],
        "last-word"
    );
}

/// Restart on the same `--state-file` after `kill -9`: every configuration of every owner and
/// region is intact, byte for byte as `/state` and Get show it.
#[tokio::test]
async fn restart_after_kill_keeps_every_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let e = Emulator::start(&path);
    for i in 0..10 {
        let mut r = TestRequest::new(
            "CreateChatConfiguration",
            &[
                ("Name", &format!("keep-{i}")),
                ("Type", if i % 2 == 0 { "DingTalk" } else { "WeChat" }),
                ("RegionId", if i < 5 { "cn-hangzhou" } else { "cn-beijing" }),
                ("RamRole", "OOSServiceRole"),
                ("ResourceGroupId", "rg-acfm"),
                (
                    "Configuration",
                    &format!(
                        r#"{{"ClientId":"id-{i}","ClientSecret":"sec-{i}","Nested":{{"Token":"t"}}}}"#
                    ),
                ),
            ],
        );
        if i == 9 {
            // Another account's state is kept as well.
            r.params.retain(|(k, _)| k != "ResourceGroupId");
            let resp = r
                .build(&http(), &e.api, OTHER_ID, OTHER_SECRET)
                .send()
                .await;
            assert_eq!(resp.unwrap().status(), 200);
        } else {
            assert_eq!(e.call(&r).await.0, 200);
        }
    }
    assert_eq!(e.call(&update("keep-0", "Changed")).await.0, 200);
    let del = TestRequest::new("DeleteChatConfiguration", &[("Name", "keep-1")]);
    assert_eq!(e.call(&del).await.0, 200);
    let before = e.admin_get("/state").await;
    let get_before = e.call(&get("keep-3")).await.2;
    assert_eq!(before["configurations"].as_array().unwrap().len(), 9);
    e.kill9();

    let e = Emulator::start(&path);
    assert_eq!(e.admin_get("/state").await, before);
    assert_eq!(
        e.call(&get("keep-3")).await.2["ChatConfiguration"],
        get_before["ChatConfiguration"]
    );
    assert_eq!(e.call(&get("keep-1")).await.0, 404);
    assert_eq!(e.call(&create("keep-2")).await.0, 409);
    // The state file holds secrets; /state does not show them.
    let text = before.to_string();
    assert!(!text.contains("sec-") && text.contains("id-4"), "{text}");
}
