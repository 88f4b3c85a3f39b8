//! The ChatConfiguration controller: observe → plan (pure) → act → status.

pub mod error;
pub mod index;
pub mod inventory;
pub mod observe;
pub mod plan;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use tracing::{info, warn};

use crate::crd::{
    ChatConfiguration, ChatConfigurationStatus, DeletionPolicy, FINALIZER, ManagementPolicy,
    annotations,
};
use crate::metrics::Metrics;
use error::{Error, Result};
use inventory::{Inventory, InventoryKey};
use oos_client::client::OosClient;
use oos_client::credentials::StaticCredentials;
use oos_client::types::{ChatConfiguration as RemoteChatConfiguration, ChatConfigurationSummary};
use plan::{DeletePlan, Plan, Recorded, RemoteDeletedPolicy, RemoteDetail, RemoteSummary};
use status::{Health, rfc3339};

/// Operator-wide settings that shape reconciles.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_region: Option<String>,
    pub default_deletion_policy: DeletionPolicy,
    pub resync_interval: Duration,
    pub on_remote_deleted: RemoteDeletedPolicy,
    /// Mixed into the per-object secret HMAC key.
    pub secret_hash_key: Vec<u8>,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_region: None,
            default_deletion_policy: DeletionPolicy::Delete,
            resync_interval: Duration::from_secs(600),
            on_remote_deleted: RemoteDeletedPolicy::Recreate,
            secret_hash_key: Vec::new(),
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    pub kube: Client,
    pub oos: OosClient,
    pub settings: Settings,
    pub inventory: Inventory,
    pub secret_index: index::SecretIndex,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<ChatConfiguration>, u32>>,
    /// The status this process last wrote, by object UID. The reflector may hand a reconcile an
    /// object that predates our own latest status write; the operator is the only status
    /// writer, so this copy is authoritative and keeps a stale read from re-planning a Create.
    written: Mutex<HashMap<String, ChatConfigurationStatus>>,
}

impl Context {
    pub fn new(
        kube: Client,
        oos: OosClient,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "oos-chat-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(kube.clone(), reporter),
            kube,
            oos,
            settings,
            inventory: Inventory::default(),
            secret_index: index::SecretIndex::default(),
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        })
    }

    /// The current status: our last write for this object, else what the object carries.
    fn current_status(&self, obj: &ChatConfiguration) -> ChatConfigurationStatus {
        let written = obj
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| self.written.lock().expect("written lock").get(uid).cloned());
        written.or_else(|| obj.status.clone()).unwrap_or_default()
    }

    /// Writes `status` if it differs from the current one; remembers what was written.
    async fn write_status(
        &self,
        api: &Api<ChatConfiguration>,
        obj: &ChatConfiguration,
        status: ChatConfigurationStatus,
    ) -> kube::Result<bool> {
        let current = self.current_status(obj);
        let Some(written) = status::apply(api, obj, &current, status).await? else {
            return Ok(false);
        };
        self.metrics.status_writes.inc();
        if let Some(uid) = &obj.metadata.uid {
            self.written
                .lock()
                .expect("written lock")
                .insert(uid.clone(), written);
        }
        Ok(true)
    }

    async fn event(&self, obj: &ChatConfiguration, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, "cannot publish event");
        }
    }
}

/// Runs one controller per watched namespace (all namespaces when `namespaces` is empty) until
/// `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        async move {
            let (objects, secrets): (Api<ChatConfiguration>, Api<PartialObjectMeta<Secret>>) =
                match &ns {
                    Some(ns) => (
                        Api::namespaced(ctx.kube.clone(), ns),
                        Api::namespaced(ctx.kube.clone(), ns),
                    ),
                    None => (Api::all(ctx.kube.clone()), Api::all(ctx.kube.clone())),
                };
            // Secret metadata only: data is read per reconcile, never cached cluster-wide.
            let secret_events = watcher(secrets, watcher::Config::default()).touched_objects();
            let index = ctx.secret_index.clone();
            Controller::new(objects, watcher::Config::default())
                .watches_stream(secret_events, move |s: PartialObjectMeta<Secret>| {
                    secret_to_objects(&index, &s)
                })
                .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, ctx)
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "reconcile failed");
                    }
                })
                .await;
        }
    });
    futures::future::join_all(controllers).await;
}

fn secret_to_objects(
    index: &index::SecretIndex,
    s: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<ChatConfiguration>> {
    let ns = s.namespace().unwrap_or_default();
    let mut refs = index.lookup(&ns, &s.name_any());
    for owner in s.owner_references() {
        if owner.kind == "ChatConfiguration" && owner.api_version.starts_with(crate::crd::GROUP) {
            refs.push(ObjectRef::new(&owner.name).within(&ns));
        }
    }
    refs
}

async fn reconcile(obj: Arc<ChatConfiguration>, ctx: Arc<Context>) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("ChatConfiguration must be namespaced".into()))?;
    let api: Api<ChatConfiguration> = Api::namespaced(ctx.kube.clone(), &ns);
    let timer = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(o, &ctx, &api).await,
            FinalizerEvent::Cleanup(o) => cleanup(o, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .observe_reconcile(timer.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

fn error_policy(obj: Arc<ChatConfiguration>, error: &Error, ctx: Arc<Context>) -> Action {
    if !error.is_retryable() {
        // Terminal: Stalled is in status; a change to the object or its Secrets wakes it.
        return Action::await_change();
    }
    let key = ObjectRef::from_obj(obj.as_ref());
    let attempt = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    Action::requeue(backoff(
        attempt,
        ctx.settings.retry_base_delay,
        ctx.settings.retry_max_delay,
    ))
}

/// Exponential backoff with "equal jitter": half the capped delay plus a random part of the
/// other half, so retries spread out but never collapse to zero.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    let half = cap / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The object's resync interval: its annotation, else the operator flag.
fn resync_interval(obj: &ChatConfiguration, settings: &Settings) -> Duration {
    obj.annotation(annotations::RESYNC_INTERVAL)
        .and_then(parse_duration)
        .unwrap_or(settings.resync_interval)
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * rand::rng().random::<f64>())
}

/// What the status records about the remote this object owns.
fn recorded(status: &ChatConfigurationStatus) -> Recorded {
    let owns = matches!(status.ownership.as_deref(), Some("Created" | "Adopted"));
    Recorded {
        created_date: if owns {
            status::parse_rfc3339(status.created_date.as_ref())
        } else {
            None
        },
        updated_date: if owns {
            status::parse_rfc3339(status.updated_date.as_ref())
        } else {
            None
        },
        spec_hash: status.last_applied_spec_hash.clone(),
        secret_hash: status.last_applied_secret_hash.clone(),
        create_requested_at: status::parse_rfc3339(status.create_requested_at.as_ref()),
    }
}

fn summary_view(s: &ChatConfigurationSummary) -> RemoteSummary {
    RemoteSummary {
        chat_type: s.chat_type.as_str().to_string(),
        ram_role: s.ram_role.clone(),
        webhook_url: s.outputs.as_ref().and_then(|o| o.url.clone()),
        created_date: s.created_date,
        updated_date: s.updated_date,
    }
}

fn summary_of(full: &RemoteChatConfiguration) -> ChatConfigurationSummary {
    ChatConfigurationSummary {
        name: full.name.clone(),
        chat_type: full.chat_type.clone(),
        ram_role: full.ram_role.clone(),
        outputs: full.outputs.clone(),
        created_date: full.created_date,
        updated_date: full.updated_date,
    }
}

fn detail_of(full: &RemoteChatConfiguration) -> RemoteDetail {
    RemoteDetail {
        resource_group_id: full.resource_group_id.clone(),
        configuration: full
            .configuration
            .as_ref()
            .map(observe::configuration_map)
            .unwrap_or_default(),
    }
}

/// The OOS client for `obj` (its `credentialsRef`, else the operator's chain) and the
/// credentials identity that keys the inventory.
async fn oos_client_for(
    obj: &ChatConfiguration,
    ctx: &Context,
    secrets: &mut observe::SecretReader,
) -> Result<(OosClient, String)> {
    let Some(r) = &obj.spec.credentials_ref else {
        return Ok((ctx.oos.clone(), "default".to_string()));
    };
    let creds = secrets.credentials(&r.name).await?;
    let id = creds.access_key_id.clone();
    let provider = StaticCredentials::new(
        creds.access_key_id,
        creds.access_key_secret,
        creds.security_token,
    );
    Ok((ctx.oos.with_credentials(Arc::new(provider)), id))
}

/// How a successful sync ended.
struct Outcome {
    health: Health,
    dry_run: Option<String>,
    requeue: Option<Duration>,
}

impl Outcome {
    /// A conflict that needs a human: Stalled, no requeue.
    fn stalled(reason: &'static str, message: &str) -> Self {
        Outcome {
            health: Health::Stalled {
                reason,
                message: message.to_string(),
            },
            dry_run: None,
            requeue: None,
        }
    }
}

async fn apply(
    obj: Arc<ChatConfiguration>,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let mut refs = obj.referenced_secrets();
    if let Some(o) = &obj.spec.output_secret_ref {
        refs.push(o.name.clone());
    }
    ctx.secret_index
        .set(ObjectRef::from_obj(obj.as_ref()), &ns, refs);

    if obj.annotation_is_true(annotations::PAUSED) {
        info!(object = %obj.name_any(), "paused; skipping");
        return Ok(Action::await_change());
    }

    let mut status = ctx.current_status(&obj);
    status.observed_generation = obj.metadata.generation;
    let requested_at = obj
        .annotation(annotations::FLUX_REQUESTED_AT)
        .map(str::to_string);
    let forced = requested_at.is_some() && requested_at != status.last_handled_reconcile_at;
    if requested_at.is_some() {
        status.last_handled_reconcile_at = requested_at;
    }

    let result = sync(&obj, ctx, api, &mut status, forced).await;
    let key = ObjectRef::from_obj(obj.as_ref());
    let (health, dry_run, action, err) = match result {
        Ok(outcome) => {
            ctx.failures.lock().expect("failures lock").remove(&key);
            let action = Action::requeue(
                outcome
                    .requeue
                    .unwrap_or_else(|| jittered(resync_interval(&obj, &ctx.settings))),
            );
            (outcome.health, outcome.dry_run, Some(action), None)
        }
        Err(e) => {
            let message = e.to_string();
            let health = match &e {
                Error::SecretMissing { .. } => Health::Progressing {
                    reason: e.reason(),
                    message: format!("waiting for {message}"),
                },
                _ if e.is_retryable() => Health::Progressing {
                    reason: e.reason(),
                    message: format!("retrying: {message}"),
                },
                _ => Health::Stalled {
                    reason: e.reason(),
                    message,
                },
            };
            (health, None, None, Some(e))
        }
    };
    status.conditions = status::conditions(&health, obj.metadata.generation, dry_run.as_deref());
    let wrote = ctx.write_status(api, &obj, status).await?;
    // One event per change of state, not per retry.
    if let (true, Some(e)) = (wrote, &err) {
        ctx.event(&obj, EventType::Warning, e.reason(), e.to_string())
            .await;
    }
    match (action, err) {
        (_, Some(e)) => Err(e),
        (Some(a), None) => Ok(a),
        (None, None) => Ok(Action::await_change()),
    }
}

/// Observe → plan → act for a live object; fills `status` with what was learned and done.
async fn sync(
    obj: &ChatConfiguration,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
    status: &mut ChatConfigurationStatus,
    forced: bool,
) -> Result<Outcome> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.remote_name();
    let region = obj
        .spec
        .region_id
        .clone()
        .or_else(|| ctx.settings.default_region.clone())
        .ok_or_else(|| {
            Error::InvalidSpec(
                "spec.regionId is unset and the operator has no --default-region".into(),
            )
        })?;
    status.remote_name = Some(name.clone());
    status.region_id = Some(region.clone());

    // Observe.
    let mut secrets = observe::SecretReader::new(ctx.kube.clone(), &ns);
    let inputs = observe::read_inputs(
        obj,
        &mut secrets,
        &ctx.settings.secret_hash_key,
        ctx.settings.on_remote_deleted,
    )
    .await?;
    let (oos, credentials_id) = oos_client_for(obj, ctx, &mut secrets).await?;
    let key = InventoryKey {
        credentials: credentials_id,
        region: region.clone(),
    };
    let interval = resync_interval(obj, &ctx.settings);
    let mut summary = ctx
        .inventory
        .lookup(&key, &oos, &name, interval, forced)
        .await?;
    let mut recorded = recorded(status);
    let mut detail = None;
    let mut from_get = false;
    if let Some(s) = &summary
        && plan::needs_detail(&inputs.desired, &recorded, &summary_view(s), forced)
    {
        {
            match oos.get_chat_configuration(&region, &name).await {
                Ok(full) => {
                    detail = Some(detail_of(&full));
                    summary = Some(summary_of(&full));
                    from_get = true;
                }
                Err(e) if e.is_not_found() => {
                    ctx.inventory.remove(&key, &name).await;
                    summary = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Plan.
    let mut decision = plan::plan(
        &inputs.desired,
        &recorded,
        summary.as_ref().map(summary_view).as_ref(),
        detail.as_ref(),
    );
    if detail.is_some() {
        status.drift = decision.drift.clone();
    }

    if obj.annotation_is_true(annotations::DRY_RUN) {
        let message = match &decision.plan {
            Plan::Update { changed } | Plan::Adopt { changed, .. } => {
                format!("would {} ({})", decision.plan.verb(), changed.join(", "))
            }
            Plan::Conflict { message, .. } => format!("would stop: {message}"),
            other => format!("would {}", other.verb()),
        };
        let health = if decision.plan == Plan::Nothing {
            Health::Ready {
                reason: "DryRun",
                message: "in sync (dry run)".into(),
            }
        } else {
            Health::Progressing {
                reason: "DryRun",
                message: "dry run: no remote write; see the DryRun condition".into(),
            }
        };
        return Ok(Outcome {
            health,
            dry_run: Some(message),
            requeue: None,
        });
    }

    // Act. A Create is preceded by a Get when the inventory (not a Get) said "absent", and by
    // recording the intent in status, so a crash between Create and the status write is recognised.
    if matches!(decision.plan, Plan::Create | Plan::Recreate) && !from_get {
        match oos.get_chat_configuration(&region, &name).await {
            Ok(full) => {
                detail = Some(detail_of(&full));
                summary = Some(summary_of(&full));
                decision = plan::plan(
                    &inputs.desired,
                    &recorded,
                    summary.as_ref().map(summary_view).as_ref(),
                    detail.as_ref(),
                );
                status.drift = decision.drift.clone();
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }

    let input = observe::remote_input(&name, &inputs);
    match &decision.plan {
        Plan::Create | Plan::Recreate => {
            let requested = Utc::now();
            status.create_requested_at = Some(rfc3339(requested));
            status.conditions = status::conditions(
                &Health::Progressing {
                    reason: "Creating",
                    message: format!("creating remote configuration {name}"),
                },
                obj.metadata.generation,
                None,
            );
            ctx.write_status(api, obj, status.clone()).await?;
            recorded.create_requested_at = Some(requested);
            let created = match oos.create_chat_configuration(&region, &input).await {
                Ok(_) => {
                    ctx.metrics.remote_write("CreateChatConfiguration");
                    true
                }
                Err(e) if e.is_already_exists() => false,
                Err(e) => return Err(e.into()),
            };
            let full = oos.get_chat_configuration(&region, &name).await?;
            if created {
                ctx.event(
                    obj,
                    EventType::Normal,
                    if decision.plan == Plan::Create {
                        "Created"
                    } else {
                        "Recreated"
                    },
                    format!("created remote chat configuration {name} in {region}"),
                )
                .await;
            } else {
                // Someone (perhaps our own interrupted attempt) created it meanwhile: re-plan.
                let re = plan::plan(
                    &inputs.desired,
                    &recorded,
                    Some(&summary_view(&summary_of(&full))),
                    Some(&detail_of(&full)),
                );
                if let Plan::Conflict { reason, message } = &re.plan {
                    ctx.event(obj, EventType::Warning, reason, message.clone())
                        .await;
                    return Ok(Outcome::stalled(reason, message));
                }
                let stamp = oos.update_chat_configuration(&region, &input).await?;
                ctx.metrics.remote_write("UpdateChatConfiguration");
                ctx.event(obj, EventType::Normal, "Adopted", format!("took over remote chat configuration {name} created by an interrupted attempt")).await;
                let mut s = summary_of(&full);
                s.updated_date = stamp.updated_date.or(s.updated_date);
                summary = Some(s);
                status.ownership = Some("Created".into());
                status.create_requested_at = None;
                record_applied(status, &inputs, summary.as_ref());
                ctx.inventory
                    .upsert(&key, summary.clone().expect("set above"))
                    .await;
                return finish(obj, ctx, status, summary.as_ref()).await;
            }
            summary = Some(summary_of(&full));
            status.ownership = Some("Created".into());
            status.create_requested_at = None;
            status.drift.clear();
            record_applied(status, &inputs, summary.as_ref());
            ctx.inventory
                .upsert(&key, summary.clone().expect("set above"))
                .await;
        }
        Plan::Update { changed } | Plan::Adopt { changed, .. } => {
            let adopting = matches!(decision.plan, Plan::Adopt { .. });
            // A configuration made by this object's own interrupted Create stays "Created".
            let resumed = matches!(decision.plan, Plan::Adopt { resumed: true, .. });
            if !changed.is_empty() {
                match oos.update_chat_configuration(&region, &input).await {
                    Ok(stamp) => {
                        ctx.metrics.remote_write("UpdateChatConfiguration");
                        if let Some(s) = summary.as_mut() {
                            s.updated_date = stamp.updated_date.or(s.updated_date);
                            s.ram_role = input.ram_role.clone();
                        }
                    }
                    Err(e) if e.is_not_found() => {
                        ctx.inventory.remove(&key, &name).await;
                        return Ok(Outcome {
                            health: Health::Progressing {
                                reason: "RemoteNotFound",
                                message: "remote configuration vanished during update; re-checking"
                                    .into(),
                            },
                            dry_run: None,
                            requeue: Some(Duration::from_secs(1)),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let (reason, what) = if resumed {
                ("CreateResumed", "resumed the interrupted creation of")
            } else if adopting {
                ("Adopted", "took over")
            } else {
                ("Updated", "updated")
            };
            let fields = if changed.is_empty() {
                String::new()
            } else {
                format!(" (fields: {})", changed.join(", "))
            };
            ctx.event(
                obj,
                EventType::Normal,
                reason,
                format!("{what} remote chat configuration {name}{fields}"),
            )
            .await;
            if adopting {
                status.ownership = Some(if resumed { "Created" } else { "Adopted" }.into());
                status.create_requested_at = None;
            }
            record_applied(status, &inputs, summary.as_ref());
            if let Some(s) = &summary {
                ctx.inventory.upsert(&key, s.clone()).await;
            }
        }
        Plan::Conflict { reason, message } => {
            if obj
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
                .map(|c| c.reason.as_str())
                != Some(reason)
            {
                ctx.event(obj, EventType::Warning, reason, message.clone())
                    .await;
            }
            return Ok(Outcome::stalled(reason, message));
        }
        Plan::Nothing => {
            if inputs.desired.management == ManagementPolicy::ObserveOnly {
                let s = summary.as_ref().expect("Nothing implies a remote");
                status.created_date = s.created_date.map(rfc3339);
                status.updated_date = s.updated_date.map(rfc3339);
                status.webhook_url = s.outputs.as_ref().and_then(|o| o.url.clone());
                let health = if status.drift.is_empty() {
                    Health::Ready {
                        reason: "Observed",
                        message: "remote configuration exists (ObserveOnly)".into(),
                    }
                } else {
                    Health::Ready {
                        reason: "ObservedDrift",
                        message: format!("remote differs in: {}", status.drift.join(", ")),
                    }
                };
                return Ok(Outcome {
                    health,
                    dry_run: None,
                    requeue: None,
                });
            }
            record_applied(status, &inputs, summary.as_ref());
        }
        Plan::Delete => unreachable!("plan() never deletes a live object"),
    }
    finish(obj, ctx, status, summary.as_ref()).await
}

/// Records the applied hashes and the remote's identity and dates.
fn record_applied(
    status: &mut ChatConfigurationStatus,
    inputs: &observe::Inputs,
    summary: Option<&ChatConfigurationSummary>,
) {
    status.last_applied_spec_hash = Some(inputs.desired.spec_hash.clone());
    status.last_applied_secret_hash = Some(inputs.desired.secret_hash.clone());
    if let Some(s) = summary {
        status.created_date = s.created_date.map(rfc3339);
        status.updated_date = s.updated_date.map(rfc3339);
        status.webhook_url = s.outputs.as_ref().and_then(|o| o.url.clone());
    }
}

/// Writes the output Secret (if any) and reports Ready.
async fn finish(
    obj: &ChatConfiguration,
    ctx: &Context,
    status: &ChatConfigurationStatus,
    summary: Option<&ChatConfigurationSummary>,
) -> Result<Outcome> {
    if let (Some(target), Some(s)) = (&obj.spec.output_secret_ref, summary) {
        ensure_output_secret(obj, ctx, &target.name, s).await?;
    }
    let message = match &status.webhook_url {
        Some(url) => format!("remote configuration in sync; webhook {url}"),
        None => "remote configuration in sync".to_string(),
    };
    Ok(Outcome {
        health: Health::Ready {
            reason: "Synced",
            message,
        },
        dry_run: None,
        requeue: None,
    })
}

/// Creates or updates the owned Secret carrying the webhook URL and the AesKey; writes only when
/// its content differs.
async fn ensure_output_secret(
    obj: &ChatConfiguration,
    ctx: &Context,
    name: &str,
    s: &ChatConfigurationSummary,
) -> Result<()> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ns);
    let mut data = BTreeMap::new();
    if let Some(o) = &s.outputs {
        if let Some(url) = &o.url {
            data.insert(
                "webhookUrl".to_string(),
                k8s_openapi::ByteString(url.clone().into_bytes()),
            );
        }
        if let Some(aes) = &o.aes_key {
            data.insert(
                "aesKey".to_string(),
                k8s_openapi::ByteString(aes.expose().as_bytes().to_vec()),
            );
        }
    }
    if let Some(existing) = api.get_opt(name).await? {
        let owned = existing
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == obj.metadata.uid.as_ref());
        if !owned {
            return Err(Error::InvalidSpec(format!(
                "spec.outputSecretRef: Secret {ns}/{name} exists and is not owned by this ChatConfiguration"
            )));
        }
        if existing.data.as_ref() == Some(&data) {
            return Ok(());
        }
    }
    let owner = OwnerReference {
        api_version: "oos.chatops.dev/v1alpha1".into(),
        kind: "ChatConfiguration".into(),
        name: obj.name_any(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [owner],
                     "labels": {"app.kubernetes.io/managed-by": "oos-chat-operator"}},
        "type": "Opaque",
        "data": data,
    });
    api.patch(
        name,
        &PatchParams::apply(status::FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await?;
    ctx.event(
        obj,
        EventType::Normal,
        "OutputSecretWritten",
        format!("wrote webhook output to Secret {name}"),
    )
    .await;
    Ok(())
}

async fn effective_deletion_policy(
    obj: &ChatConfiguration,
    ctx: &Context,
) -> Result<DeletionPolicy> {
    if let Some(p) = obj.spec.deletion_policy {
        return Ok(p);
    }
    let ns: Api<Namespace> = Api::all(ctx.kube.clone());
    let from_ns = ns
        .get_opt(&obj.namespace().unwrap_or_default())
        .await?
        .and_then(|n| {
            n.annotations()
                .get(annotations::NAMESPACE_DELETION_POLICY)
                .cloned()
        });
    Ok(match from_ns.as_deref() {
        Some("Orphan") => DeletionPolicy::Orphan,
        Some("Delete") => DeletionPolicy::Delete,
        _ => ctx.settings.default_deletion_policy,
    })
}

async fn cleanup(obj: Arc<ChatConfiguration>, ctx: &Context) -> Result<Action> {
    let key = ObjectRef::from_obj(obj.as_ref());
    let name = obj.remote_name();
    let status = ctx.current_status(&obj);
    let recorded = recorded(&status);
    let force_orphan = obj.annotation_is_true(annotations::FORCE_ORPHAN);
    let policy = if force_orphan {
        DeletionPolicy::Orphan
    } else {
        effective_deletion_policy(&obj, ctx).await?
    };
    let management = obj.spec.management_policy.unwrap_or_default();
    match plan::plan_delete(policy, management, force_orphan, &recorded) {
        DeletePlan::NotOwned => {}
        DeletePlan::Orphan => {
            ctx.event(
                &obj,
                EventType::Normal,
                "Orphaned",
                format!("kept remote chat configuration {name}"),
            )
            .await;
        }
        DeletePlan::Delete => {
            let region = status
                .region_id
                .clone()
                .or_else(|| obj.spec.region_id.clone())
                .or_else(|| ctx.settings.default_region.clone())
                .ok_or_else(|| Error::InvalidSpec("no region to delete from".into()))?;
            // Deletion needs only credentials, never the chat platform's ClientSecret.
            let mut secrets =
                observe::SecretReader::new(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
            let (oos, credentials_id) = oos_client_for(&obj, ctx, &mut secrets).await?;
            match oos.delete_chat_configuration(&region, &name).await {
                Ok(()) => ctx.metrics.remote_write("DeleteChatConfiguration"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            ctx.inventory
                .remove(
                    &InventoryKey {
                        credentials: credentials_id,
                        region,
                    },
                    &name,
                )
                .await;
            ctx.event(
                &obj,
                EventType::Normal,
                "Deleted",
                format!("deleted remote chat configuration {name}"),
            )
            .await;
        }
    }
    ctx.secret_index.remove(&key);
    ctx.failures.lock().expect("failures lock").remove(&key);
    if let Some(uid) = &obj.metadata.uid {
        ctx.written.lock().expect("written lock").remove(uid);
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x5m"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempt in 1..30 {
            let cap = base.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            let d = backoff(attempt, base, max);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }
}
