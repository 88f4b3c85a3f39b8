//! A controller test harness: the real control plane (see `controlplane.rs`), a fresh
//! namespace, an in-process OOS emulator and the controller running in-process.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::control_plane;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use oos_chat_operator::crd::{ChatConfiguration, crd_yaml};
use oos_chat_operator::metrics::Metrics;
use oos_chat_operator::reconcile::{self, Context, Settings};
use oos_client::client::{ClientConfig, Endpoint, OosClient, RetryPolicy};
use oos_client::credentials::StaticCredentials;
use oos_client::ratelimit::TokenBucket;
use oos_client::types::{ChatConfigurationInput, ChatSettings, ChatType};
use oos_emulator::{self as emulator, AccessKey, EmulatorConfig, RunningEmulator};
use serde_json::json;

pub const AK_ID: &str = "test-ak";
pub const AK_SECRET: &str = "AKSECRET-never-logged-4f1c";
pub const CLIENT_SECRET_1: &str = "CLIENTSECRET-one-9d2e";
pub const CLIENT_SECRET_2: &str = "CLIENTSECRET-two-7b3a";
pub const WECOM_SECRET: &str = "WECOMSECRET-5e6f";
pub const REGION: &str = "cn-hangzhou";
pub const WAIT: Duration = Duration::from_secs(30);

/// Everything the operator logs, for the "no secret in logs" checks.
pub fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer_buf = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("oos_chat_operator=debug,kube=info")
            .with_writer(move || BufWriter(writer_buf.clone()))
            .try_init();
        buf
    })
}

pub struct BufWriter(Arc<Mutex<Vec<u8>>>);
impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `f` until it succeeds; on timeout the last error explains what was still missing.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("not met within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub struct Harness {
    pub client: Client,
    pub ns: String,
    pub emulator: RunningEmulator,
    pub oos: OosClient,
    pub metrics: Arc<Metrics>,
    /// The client the controller uses (admin unless `start_with_client` says otherwise).
    controller_kube: Client,
    /// Namespaces the controller watches (empty: all).
    watched: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
}

/// An in-process emulator that knows the harness's access key.
pub async fn test_emulator() -> RunningEmulator {
    emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![AccessKey {
            id: AK_ID.into(),
            secret: AK_SECRET.into(),
            security_token: None,
            owner: "1234567890".into(),
        }],
        ..Default::default()
    })
    .await
    .expect("emulator starts")
}

/// How [`Harness::start_with_client`] runs the controller.
pub struct ControllerClient {
    /// The client the controller uses.
    pub client: Client,
    /// An existing namespace for the test objects instead of a fresh one.
    pub namespace: Option<String>,
    /// Watch every namespace (the operator without `--namespace`) instead of only the test's.
    pub watch_all: bool,
}

pub async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&crd_yaml()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "chatconfigurations.oos.chatops.dev",
        &PatchParams::apply("controller-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD applies");
    wait_for(WAIT, || {
        let api = api.clone();
        async move {
            let crd = api.get("chatconfigurations.oos.chatops.dev").await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            anyhow::ensure!(established, "CRD not established yet");
            Ok(())
        }
    })
    .await
    .expect("CRD established");
}

pub fn oos_client(endpoint: String) -> OosClient {
    let mut config = ClientConfig::new(Endpoint::Url(endpoint));
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(5),
    };
    config.rate_limiter = TokenBucket::new(200.0, 50);
    OosClient::new(
        config,
        Arc::new(StaticCredentials::new(AK_ID, AK_SECRET, None)),
    )
    .unwrap()
}

/// The controller settings the harness uses unless a test says otherwise: fast per-object
/// backoff, the test region as the default.
pub fn test_settings(resync: Duration) -> Settings {
    Settings {
        default_region: Some(REGION.into()),
        resync_interval: resync,
        retry_base_delay: Duration::from_millis(200),
        retry_max_delay: Duration::from_secs(5),
        ..Settings::default()
    }
}

impl Harness {
    pub async fn start(prefix: &str, resync: Duration) -> Self {
        Self::start_with(prefix, test_settings(resync)).await
    }

    /// A fresh namespace and emulator, and the controller with `settings`.
    pub async fn start_with(prefix: &str, settings: Settings) -> Self {
        Self::launch(prefix, settings, None).await
    }

    async fn launch(
        prefix: &str,
        settings: Settings,
        controller: Option<ControllerClient>,
    ) -> Self {
        log_buffer();
        let cp = control_plane();
        let client = cp.client().await;
        install_crd(&client).await;
        let ns = match controller.as_ref().and_then(|c| c.namespace.clone()) {
            Some(ns) => ns,
            None => cp.fresh_namespace(prefix).await,
        };
        let emulator = test_emulator().await;
        let oos = oos_client(emulator.endpoint());
        let watched = match &controller {
            Some(c) if c.watch_all => Vec::new(),
            _ => vec![ns.clone()],
        };
        let mut h = Harness {
            controller_kube: controller.map_or_else(|| client.clone(), |c| c.client),
            client,
            ns,
            emulator,
            oos,
            metrics: Arc::new(Metrics::default()),
            watched,
            stop: None,
            controller: None,
        };
        h.start_controller(settings);
        h
    }

    /// Starts a controller process stand-in: a new context (no caches, no in-memory state
    /// carried over), its own OOS client and metrics.
    pub fn start_controller(&mut self, settings: Settings) {
        assert!(
            self.controller.is_none(),
            "stop the running controller first"
        );
        self.metrics = Arc::new(Metrics::default());
        let ctx = Context::new(
            self.controller_kube.clone(),
            oos_client(self.emulator.endpoint()),
            settings,
            self.metrics.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.controller = Some(tokio::spawn(reconcile::run(
            ctx,
            self.watched.clone(),
            4,
            async move {
                let _ = rx.await;
            },
        )));
        self.stop = Some(tx);
    }

    /// Stops the controller (as a process exit would), keeping namespace and emulator.
    pub async fn stop_controller(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.controller.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    /// Like [`Harness::start`], but the controller reaches Kubernetes through
    /// `controller.client` (e.g. a client impersonating the operator's ServiceAccount, to prove
    /// its RBAC suffices), while the test's own calls (`client`, `put_secret`, `apply`, …) stay
    /// admin.
    pub async fn start_with_client(
        prefix: &str,
        resync: Duration,
        controller: ControllerClient,
    ) -> Self {
        Self::launch(prefix, test_settings(resync), Some(controller)).await
    }

    pub fn objects(&self) -> Api<ChatConfiguration> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let string_data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data});
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    pub async fn apply(&self, manifest: serde_json::Value) -> ChatConfiguration {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let mut m = manifest;
        m["apiVersion"] = json!("oos.chatops.dev/v1alpha1");
        m["kind"] = json!("ChatConfiguration");
        self.objects()
            .patch(
                &name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&m),
            )
            .await
            .unwrap()
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.objects()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Waits until the Ready condition has `status` (and `reason`, if given).
    pub async fn wait_ready(
        &self,
        name: &str,
        status: &str,
        reason: Option<&str>,
    ) -> ChatConfiguration {
        let api = self.objects();
        wait_for(WAIT, || {
            let api = api.clone();
            async move {
                let obj = api.get(name).await?;
                let ready = obj
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
                match ready {
                    Some(c) if c.status == status && reason.is_none_or(|r| r == c.reason) => {
                        Ok(obj)
                    }
                    other => anyhow::bail!("Ready is {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: waiting for Ready={status} {reason:?}: {e}"))
    }

    pub fn calls(&self, action: &str) -> u64 {
        self.emulator.calls().get(action).copied().unwrap_or(0)
    }

    pub fn writes(&self) -> u64 {
        [
            "CreateChatConfiguration",
            "UpdateChatConfiguration",
            "DeleteChatConfiguration",
        ]
        .iter()
        .map(|a| self.calls(a))
        .sum()
    }

    /// Asserts no secret value appears in the operator's logs, this namespace's events, or any
    /// object's status.
    pub async fn assert_no_secret_leak(&self) {
        let secrets = [AK_SECRET, CLIENT_SECRET_1, CLIENT_SECRET_2, WECOM_SECRET];
        let logs = String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string();
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.ns);
        let events =
            serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items)
                .unwrap();
        let statuses = serde_json::to_string(
            &self
                .objects()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|o| o.status.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!logs.is_empty(), "logs were captured");
        for s in secrets {
            assert!(
                !logs.contains(s),
                "a secret value appears in the operator logs"
            );
            assert!(!events.contains(s), "a secret value appears in an event");
            assert!(!statuses.contains(s), "a secret value appears in a status");
        }
    }

    pub async fn stop(mut self) {
        self.stop_controller().await;
        self.emulator.shutdown().await;
    }

    /// Writes into `name`'s status what an operator process writes just before calling Create
    /// (time, non-secret configuration hash, secret HMAC for `client_secret` under the
    /// harness's empty hash key), as that process's field manager, on top of its current
    /// status: the state a crash between Create and the next status write leaves behind.
    pub async fn record_create_intent(
        &self,
        name: &str,
        client_secret: &str,
        requested: chrono::DateTime<chrono::Utc>,
    ) {
        use oos_chat_operator::reconcile::observe;
        let obj = self.objects().get(name).await.unwrap();
        let desired =
            observe::desired_without_secrets(&obj, Default::default()).expect("valid spec");
        let values = BTreeMap::from([(
            "DingTalkClientSecret".to_string(),
            oos_client::secret::SecretString::from(client_secret),
        )]);
        let secret_hash = observe::secret_hmac(b"", obj.metadata.uid.as_deref().unwrap(), &values);
        let mut status = serde_json::to_value(obj.status.clone().unwrap_or_default()).unwrap();
        status["createRequestedAt"] =
            json!(requested.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        status["createRequestedSpecHash"] = json!(desired.spec_hash);
        status["createRequestedSecretHash"] = json!(secret_hash);
        let patch = json!({"apiVersion": "oos.chatops.dev/v1alpha1", "kind": "ChatConfiguration",
                           "status": status});
        self.objects()
            .patch_status(
                name,
                &PatchParams::apply("oos-chat-operator").force(),
                &Patch::Apply(&patch),
            )
            .await
            .unwrap();
    }

    /// The Ready condition's `(status, reason, message)`.
    pub async fn ready(&self, name: &str) -> Option<(String, String, String)> {
        let obj = self.objects().get(name).await.ok()?;
        obj.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status, c.reason, c.message))
    }

    /// Remote calls the emulator received for configuration `name` (any action naming it).
    pub fn calls_for(&self, name: &str) -> Vec<oos_emulator::LoggedRequest> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| r.params.get("Name").map(String::as_str) == Some(name))
            .collect()
    }

    /// Remote calls the emulator received signed with access key `id`.
    pub fn calls_by_key(&self, id: &str) -> usize {
        self.emulator
            .requests()
            .iter()
            .filter(|r| r.access_key_id.as_deref() == Some(id))
            .count()
    }

    /// Events about object `name` in this namespace: `(type, reason, note)`.
    pub async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn wait_gone(&self, name: &str) {
        let api = self.objects();
        wait_for(WAIT, || {
            let api = api.clone();
            async move {
                anyhow::ensure!(api.get_opt(name).await?.is_none(), "still present");
                Ok(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: waiting for deletion: {e}"));
    }
}

pub fn dingtalk(name: &str, template: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "type": "DingTalk",
            "ramRole": "OOSServiceRole",
            "dingTalk": {"clientId": "ding-client", "templateId": template,
                         "clientSecretRef": {"name": "dingtalk", "key": "clientSecret"}}
        }
    })
}

pub fn remote_input(name: &str, template: &str) -> ChatConfigurationInput {
    ChatConfigurationInput {
        name: name.into(),
        chat_type: ChatType::DingTalk,
        ram_role: Some("OOSServiceRole".into()),
        resource_group_id: None,
        configuration: Some(ChatSettings {
            ding_talk_client_id: Some("ding-client".into()),
            ding_talk_client_secret: Some("someone-elses".into()),
            ding_talk_template_id: Some(template.into()),
            extra: Default::default(),
        }),
    }
}
