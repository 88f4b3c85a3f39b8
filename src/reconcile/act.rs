//! Act: the reconcile of a live object. Observe → plan → the one remote write the plan chose
//! (crash-safe Create, fenced Update or adoption) → the output Secret → the outcome that
//! `status::report` turns into conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::error::{self, Error, Result};
use super::inventory::InventoryKey;
use super::observe::{self, Inputs, Observation};
use super::plan::{self, Plan, Recorded};
use super::status::{self, Health, rfc3339};
use super::{Context, jittered, object_key, resync_interval};
use crate::crd::{ChatConfiguration, ChatConfigurationStatus, ManagementPolicy, annotations};
use oos_client::client::OosClient;
use oos_client::error::OosError;
use oos_client::secret::ExposeSecret;
use oos_client::types::{ChatConfigurationInput, ChatConfigurationSummary};

/// How a successful sync ended.
pub(super) struct Outcome {
    pub health: Health,
    pub dry_run: Option<String>,
    /// Next look at the remote; the resync interval when `None`.
    pub requeue: Option<Duration>,
}

impl Outcome {
    fn ready(reason: &'static str, message: String) -> Self {
        Outcome {
            health: Health::Ready { reason, message },
            dry_run: None,
            requeue: None,
        }
    }

    /// A state of the remote that needs a human. The remote may change by itself (someone
    /// deletes their configuration), so it is looked at again at the resync interval.
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

/// The `Apply` side of the finalizer: sync, then report.
pub(super) async fn apply(
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
        tracing::debug!(object = %object_key(&obj), "paused; no remote call");
        return Ok(Action::await_change());
    }

    // A terminal failure waits for a change of its inputs; a reconcile woken by anything else
    // (a Secret watch relisting, an unrelated label or annotation) makes no remote call and
    // writes nothing. Reading the Secrets here costs nothing extra: `sync` uses these copies.
    let mut secrets = observe::SecretReader::new(ctx.kube.clone(), &ns);
    let fingerprint = match secrets.prefetch(&observe::secrets_read_by(&obj)).await {
        Ok(()) => Some(stall_fingerprint(&obj, ctx, &secrets)),
        Err(_) => None, // `sync` meets the same failure and reports it.
    };
    if fingerprint.is_some() && ctx.stalled_on(&obj) == fingerprint {
        tracing::debug!(object = %object_key(&obj), "stalled and its inputs are unchanged; no remote call");
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

    match sync(&obj, ctx, api, &mut secrets, &mut status, forced).await {
        Ok(outcome) => {
            ctx.reset_failures(&obj);
            status::report(
                ctx,
                api,
                &obj,
                status,
                outcome.health,
                outcome.dry_run,
                None,
            )
            .await?;
            Ok(Action::requeue(outcome.requeue.unwrap_or_else(|| {
                jittered(resync_interval(&obj, &ctx.settings))
            })))
        }
        Err(e) => {
            let health = status::health_of(&e);
            status::report(ctx, api, &obj, status, health, None, Some(&e)).await?;
            if e.awaits_change() {
                ctx.record_stall(&obj, fingerprint);
            }
            Err(e)
        }
    }
}

/// What a terminal failure waits for a change of: the spec (through the generation), the
/// operator's own annotations and Flux's reconcile request, each Secret the object reads (by
/// resourceVersion) and, for objects on the operator's credentials, their identity.
fn stall_fingerprint(
    obj: &ChatConfiguration,
    ctx: &Context,
    secrets: &observe::SecretReader,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    for (k, v) in obj.annotations() {
        if k.starts_with(crate::crd::GROUP) || k == annotations::FLUX_REQUESTED_AT {
            (k, v).hash(&mut h);
        }
    }
    secrets.versions().for_each(|v| v.hash(&mut h));
    if obj.spec.credentials_ref.is_none() {
        ctx.oos.credentials_identity().hash(&mut h);
    }
    h.finish()
}

/// Where the remote lives and how to reach it.
struct Target {
    oos: OosClient,
    key: InventoryKey,
    name: String,
    credentials_id: String,
}

impl Target {
    fn region(&self) -> &str {
        &self.key.region
    }
}

/// Observe → plan → act for a live object; fills `status` with what was learned and done.
async fn sync(
    obj: &ChatConfiguration,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
    secrets: &mut observe::SecretReader,
    status: &mut ChatConfigurationStatus,
    forced: bool,
) -> Result<Outcome> {
    let name = obj.remote_name();
    // The spec's region, else the one fixed at the first remote write, else the flag: a
    // restart with another --default-region never moves an object.
    let region = obj
        .spec
        .region_id
        .clone()
        .or_else(|| status.region_id.clone())
        .or_else(|| ctx.settings.default_region.clone())
        .ok_or_else(|| {
            Error::InvalidSpec(
                "spec.regionId is unset and the operator has no --default-region".into(),
            )
        })?;
    status.remote_name = Some(name.clone());

    // Observe.
    let inputs = observe::read_inputs(
        obj,
        secrets,
        &ctx.settings.secret_hash_key,
        ctx.settings.on_remote_deleted,
    )
    .await?;
    let (oos, credentials_id) = observe::client_for(obj, ctx, secrets).await?;
    let target = Target {
        oos,
        key: InventoryKey {
            credentials: credentials_id.clone(),
            region,
        },
        name,
        credentials_id,
    };
    let recorded = observe::recorded(status, &target.credentials_id);
    let interval = resync_interval(obj, &ctx.settings);
    let mut observed = observe::observe_remote(
        ctx,
        &target.oos,
        &target.key,
        &target.name,
        &inputs.desired,
        &recorded,
        interval,
        forced,
    )
    .await?;

    // Plan.
    let mut decision = plan::plan(
        &inputs.desired,
        &recorded,
        observed.view().as_ref(),
        observed.detail.as_ref(),
    );
    if observed.detail.is_some() {
        status.drift = out_of_band(&decision.drift, &inputs.desired, &recorded, &observed);
    }
    if obj.annotation_is_true(annotations::DRY_RUN) {
        return Ok(dry_run(&decision.plan));
    }

    // Act. At most one Create per reconcile: an already-exists answer re-plans once on a Get.
    let input = observe::remote_input(&target.name, &inputs);
    let mut created_already_exists = false;
    loop {
        return match decision.plan {
            Plan::Create | Plan::Recreate if !created_already_exists => {
                match create(obj, ctx, api, status, &inputs, &target, &input).await? {
                    Created::Done(outcome) => Ok(outcome),
                    Created::AlreadyExists(seen) => {
                        created_already_exists = true;
                        observed = seen;
                        decision = plan::plan(
                            &inputs.desired,
                            &recorded,
                            observed.view().as_ref(),
                            observed.detail.as_ref(),
                        );
                        status.drift = out_of_band(&decision.drift, &inputs.desired, &recorded, &observed);
                        continue;
                    }
                }
            }
            Plan::Create | Plan::Recreate => Ok(Outcome {
                // Create said it exists, Get says it does not: someone is racing us.
                health: Health::Progressing {
                    reason: "RemoteChanging",
                    message: "the remote configuration is being created and deleted by someone else; looking again".into(),
                },
                dry_run: None,
                requeue: Some(Duration::from_secs(5)),
            }),
            Plan::Update { changed } => {
                write_update(obj, ctx, api, status, &inputs, &target, &input, observed, &changed, Held::Owned)
                    .await
            }
            Plan::Adopt { changed, resumed } => {
                let held = if resumed { Held::Resumed } else { Held::Adopted };
                write_update(obj, ctx, api, status, &inputs, &target, &input, observed, &changed, held)
                    .await
            }
            Plan::Conflict { reason, message } => {
                // The name is taken by a configuration that is not ours, or ours is gone: no
                // Create of ours can be pending any more.
                clear_pending(status);
                Ok(Outcome::stalled(reason, &message))
            }
            Plan::Nothing => nothing(obj, ctx, status, &inputs, &target, observed, &recorded).await,
        };
    }
}

/// The fields someone else changed: the plan's drift, unless the difference can be this
/// object's own new desired state (its spec changed and the remote is as it was last left).
fn out_of_band(
    drift: &[String],
    desired: &plan::Desired,
    recorded: &Recorded,
    observed: &Observation,
) -> Vec<String> {
    let spec_changed = recorded.spec_hash.as_deref() != Some(&desired.spec_hash);
    let untouched = observed.view().is_some_and(|r| {
        recorded.owns()
            && r.created_date == recorded.created_date
            && r.updated_date == recorded.updated_date
    });
    if spec_changed && untouched {
        Vec::new()
    } else {
        drift.to_vec()
    }
}

fn dry_run(plan: &Plan) -> Outcome {
    let message = match plan {
        Plan::Update { changed } | Plan::Adopt { changed, .. } => {
            format!("would {} ({})", plan.verb(), changed.join(", "))
        }
        Plan::Conflict { message, .. } => format!("would stop: {message}"),
        other => format!("would {}", other.verb()),
    };
    let health = if *plan == Plan::Nothing {
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
    Outcome {
        health,
        dry_run: Some(message),
        requeue: None,
    }
}

fn clear_pending(status: &mut ChatConfigurationStatus) {
    status.create_requested_at = None;
    status.create_requested_spec_hash = None;
    status.create_requested_secret_hash = None;
}

/// Fixes where and with whose credentials this object writes, at its first remote write.
fn pin(status: &mut ChatConfigurationStatus, target: &Target) {
    status.region_id = Some(target.region().to_string());
    status.credentials_id = Some(target.credentials_id.clone());
}

/// The Alibaba Cloud account in a webhook URL `https://<account id>.appflow.aliyunnest.com/…`.
fn account_of(url: &str) -> Option<String> {
    let host = url.strip_prefix("https://")?.split('/').next()?;
    let (account, rest) = host.split_once('.')?;
    (rest.starts_with("appflow.")
        && !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit()))
    .then(|| account.to_string())
}

/// Until when an unanswered attempt of the Create that made a remote created at `created` may
/// still be run by the service (+1 s: CreatedDate has whole seconds).
fn late_create_until(ctx: &Context, created: chrono::DateTime<Utc>) -> String {
    let hold =
        chrono::Duration::from_std(ctx.settings.request_hold).unwrap_or(chrono::Duration::MAX / 2);
    rfc3339(created + hold + chrono::Duration::seconds(1))
}

/// Whether a failed Create call may still have made the configuration. The client retries
/// within one call, so a retryable failure (throttling included: it refused the last attempt,
/// but an earlier one may have been lost and run) may hide an attempt the service ran; so may an
/// answer that could not be read. Only a definite refusal (a terminal 4xx) or a failure before
/// anything was sent says that nothing was made.
fn outcome_unknown(e: &OosError) -> bool {
    match e {
        OosError::Transport(_) | OosError::Timeout | OosError::Decode(_) => true,
        OosError::Api { .. } => e.is_retryable(),
        _ => false,
    }
}

enum Created {
    Done(Outcome),
    /// The name is taken; what a Get found.
    AlreadyExists(Observation),
}

/// Crash-safe Create: the intent (time, non-secret configuration hash, secret HMAC) goes to
/// status first; it survives only an ambiguous outcome, so a later attempt can recognise the
/// configuration this one made, and nothing else.
async fn create(
    obj: &ChatConfiguration,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
    status: &mut ChatConfigurationStatus,
    inputs: &Inputs,
    target: &Target,
    input: &ChatConfigurationInput,
) -> Result<Created> {
    let requested = Utc::now();
    status.create_requested_at = Some(rfc3339(requested));
    status.create_requested_spec_hash = Some(inputs.desired.spec_hash.clone());
    status.create_requested_secret_hash = Some(inputs.desired.secret_hash.clone());
    pin(status, target);
    let mut intent = status.clone();
    intent.conditions = status::conditions(
        &Health::Progressing {
            reason: "Creating",
            message: format!("creating remote configuration {}", target.name),
        },
        obj.metadata.generation,
        None,
    );
    ctx.write_status(api, obj, intent).await?;

    let recreate = status.ownership.is_some();
    let stamp = match target
        .oos
        .create_chat_configuration(target.region(), input)
        .await
    {
        // After a lost attempt the client takes `EntityAlreadyExists` for its own success when
        // the configuration matches what was sent; one created before this request (beyond the
        // clock-skew margin the recorded intent allows too) is someone else's, however alike.
        Ok(stamp)
            if stamp
                .created_date
                .is_some_and(|c| c < requested - plan::CREATE_CLOCK_SKEW) =>
        {
            clear_pending(status);
            let seen = observe::get_remote(&target.oos, target.region(), &target.name).await?;
            return Ok(Created::AlreadyExists(seen));
        }
        Ok(stamp) => stamp,
        Err(e) if e.is_already_exists() => {
            // This attempt created nothing; the configuration holding the name is either an
            // earlier attempt's (the recorded intent decides) or someone else's.
            clear_pending(status);
            let seen = observe::get_remote(&target.oos, target.region(), &target.name).await?;
            return Ok(Created::AlreadyExists(seen));
        }
        Err(e) if outcome_unknown(&e) => return Err(error::oos("CreateChatConfiguration")(e)),
        Err(e) => {
            clear_pending(status);
            return Err(error::oos("CreateChatConfiguration")(e));
        }
    };
    info!(
        object = %object_key(obj),
        action = "CreateChatConfiguration",
        name = %target.name,
        region = %target.region(),
        request_id = stamp.request_id.as_deref().unwrap_or("-"),
        "created remote chat configuration"
    );
    ctx.metrics.remote_write("CreateChatConfiguration");
    // Ownership is recorded from the answer before anything else can fail, and so is what the
    // remote now holds (exactly what was sent) in status and in the inventory: if the Get
    // below fails (throttled, say), the retry plans on them and needs only that Get, instead
    // of a Recreate (the inventory predates this Create: AlreadyExists) and an Update that
    // re-sends the secrets (no applied hashes recorded).
    if let Some(created) = stamp.created_date {
        status.ownership = Some("Created".into());
        status.created_date = Some(rfc3339(created));
        if stamp.unanswered_attempts {
            status.late_create_until = Some(late_create_until(ctx, created));
        }
        status.updated_date = stamp.updated_date.map(rfc3339);
        status.last_applied_spec_hash = Some(inputs.desired.spec_hash.clone());
        status.last_applied_secret_hash = Some(inputs.desired.secret_hash.clone());
        clear_pending(status);
        let answered = ChatConfigurationSummary {
            name: target.name.clone(),
            chat_type: input.chat_type.clone(),
            ram_role: input.ram_role.clone(),
            outputs: None,
            created_date: stamp.created_date,
            updated_date: stamp.updated_date,
        };
        ctx.inventory.upsert(&target.key, answered).await;
    }
    ctx.event(
        obj,
        EventType::Normal,
        if recreate { "Recreated" } else { "Created" },
        format!(
            "created remote chat configuration {} in {}",
            target.name,
            target.region()
        ),
    )
    .await;
    // Create answers only Name and dates; the webhook URL comes from Get.
    let seen = observe::get_remote(&target.oos, target.region(), &target.name).await?;
    let Some(summary) = seen.summary else {
        return Ok(Created::Done(Outcome {
            health: Health::Progressing {
                reason: "RemoteNotFound",
                message:
                    "the remote configuration vanished right after its creation; looking again"
                        .into(),
            },
            dry_run: None,
            requeue: Some(Duration::from_secs(5)),
        }));
    };
    status.ownership = Some("Created".into());
    clear_pending(status);
    status.drift.clear();
    record_applied(status, inputs, &summary);
    ctx.inventory.upsert(&target.key, summary.clone()).await;
    finish(obj, ctx, status, &summary).await.map(Created::Done)
}

/// How the object holds the remote it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Owned,
    Adopted,
    /// Made by this object's own interrupted Create.
    Resumed,
}

/// Update (when anything differs) of a remote this object owns, takes over, or resumes.
#[allow(clippy::too_many_arguments)]
async fn write_update(
    obj: &ChatConfiguration,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
    status: &mut ChatConfigurationStatus,
    inputs: &Inputs,
    target: &Target,
    input: &ChatConfigurationInput,
    observed: Observation,
    changed: &[String],
    held: Held,
) -> Result<Outcome> {
    let Some(mut summary) = observed.summary else {
        unreachable!("Update and Adopt are planned on an existing remote");
    };
    pin(status, target);
    if held == Held::Resumed
        && let Some(created) = summary.created_date
    {
        // The interrupted Create call had an unanswered attempt (that is why it is resumed):
        // another of its attempts may still land.
        status.late_create_until = Some(late_create_until(ctx, created));
    }
    if held == Held::Resumed && !changed.is_empty() {
        // The Update makes the remote differ from what the interrupted Create sent, which is
        // all the recorded intent can recognise: record the ownership first, so that a crash
        // between the Update and the status write cannot make the object a stranger to its own
        // remote (AlreadyExists, and on deletion a leak).
        status.ownership = Some("Created".into());
        status.created_date = summary.created_date.map(rfc3339);
        status.updated_date = summary.updated_date.map(rfc3339);
        clear_pending(status);
        let mut owned = status.clone();
        owned.conditions = status::conditions(
            &Health::Progressing {
                reason: "Creating",
                message: format!(
                    "resuming the interrupted creation of remote configuration {}",
                    target.name
                ),
            },
            obj.metadata.generation,
            None,
        );
        ctx.write_status(api, obj, owned).await?;
    }
    if !changed.is_empty() {
        match target
            .oos
            .update_chat_configuration(target.region(), input)
            .await
        {
            Ok(stamp) => {
                info!(
                    object = %object_key(obj),
                    action = "UpdateChatConfiguration",
                    name = %target.name,
                    fields = %changed.join(","),
                    request_id = stamp.request_id.as_deref().unwrap_or("-"),
                    "updated remote chat configuration"
                );
                ctx.metrics.remote_write("UpdateChatConfiguration");
                summary.updated_date = stamp.updated_date.or(summary.updated_date);
                summary.chat_type = input.chat_type.clone();
                if input.ram_role.is_some() {
                    summary.ram_role = input.ram_role.clone();
                }
            }
            Err(e) if e.is_not_found() => {
                ctx.inventory.remove(&target.key, &target.name).await;
                return Ok(Outcome {
                    health: Health::Progressing {
                        reason: "RemoteNotFound",
                        message:
                            "the remote configuration vanished during the update; looking again"
                                .into(),
                    },
                    dry_run: None,
                    requeue: Some(Duration::from_secs(1)),
                });
            }
            Err(e) => return Err(error::oos("UpdateChatConfiguration")(e)),
        }
    }
    let fields = if changed.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", changed.join(", "))
    };
    let event = match held {
        Held::Owned => ("Updated", "updated"),
        Held::Adopted => ("Adopted", "took over"),
        Held::Resumed => ("CreateResumed", "resumed the interrupted creation of"),
    };
    if held != Held::Owned || !changed.is_empty() {
        ctx.event(
            obj,
            EventType::Normal,
            event.0,
            format!(
                "{} remote chat configuration {}{fields}",
                event.1, target.name
            ),
        )
        .await;
    }
    match held {
        Held::Owned => {}
        Held::Adopted => status.ownership = Some("Adopted".into()),
        Held::Resumed => status.ownership = Some("Created".into()),
    }
    clear_pending(status);
    record_applied(status, inputs, &summary);
    ctx.inventory.upsert(&target.key, summary.clone()).await;
    finish(obj, ctx, status, &summary).await
}

async fn nothing(
    obj: &ChatConfiguration,
    ctx: &Context,
    status: &mut ChatConfigurationStatus,
    inputs: &Inputs,
    target: &Target,
    observed: Observation,
    recorded: &Recorded,
) -> Result<Outcome> {
    let summary = observed.summary.expect("Nothing implies a remote");
    if inputs.desired.management == ManagementPolicy::ObserveOnly {
        status.created_date = summary.created_date.map(rfc3339);
        status.updated_date = summary.updated_date.map(rfc3339);
        status.webhook_url = summary.outputs.as_ref().and_then(|o| o.url.clone());
        return Ok(if status.drift.is_empty() {
            Outcome::ready(
                "Observed",
                "remote configuration exists (ObserveOnly)".into(),
            )
        } else {
            Outcome::ready(
                "ObservedDrift",
                format!("remote differs in: {}", status.drift.join(", ")),
            )
        });
    }
    if recorded.owns() {
        // Seen with these credentials and its own CreatedDate: same account, keep them.
        pin(status, target);
    }
    record_applied(status, inputs, &summary);
    finish(obj, ctx, status, &summary).await
}

/// Records the applied hashes and the remote's identity and dates.
fn record_applied(
    status: &mut ChatConfigurationStatus,
    inputs: &Inputs,
    summary: &ChatConfigurationSummary,
) {
    status.last_applied_spec_hash = Some(inputs.desired.spec_hash.clone());
    status.last_applied_secret_hash = Some(inputs.desired.secret_hash.clone());
    status.created_date = summary.created_date.map(rfc3339);
    status.updated_date = summary.updated_date.map(rfc3339);
    status.webhook_url = summary.outputs.as_ref().and_then(|o| o.url.clone());
    if let Some(account) = status.webhook_url.as_deref().and_then(account_of) {
        status.account_id = Some(account);
    }
}

/// Writes the output Secret (if any) and reports Ready.
async fn finish(
    obj: &ChatConfiguration,
    ctx: &Context,
    status: &ChatConfigurationStatus,
    summary: &ChatConfigurationSummary,
) -> Result<Outcome> {
    if let Some(target) = &obj.spec.output_secret_ref {
        ensure_output_secret(obj, ctx, &target.name, summary).await?;
    }
    let message = match &status.webhook_url {
        Some(url) => format!("remote configuration in sync; webhook {url}"),
        None => "remote configuration in sync".to_string(),
    };
    Ok(Outcome::ready("Synced", message))
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
                k8s_openapi::ByteString(aes.expose_secret().as_bytes().to_vec()),
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
        api_version: ChatConfiguration::api_version(&()).into_owned(),
        kind: ChatConfiguration::kind(&()).into_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_from_webhook_url() {
        assert_eq!(
            account_of("https://1407907063606569.appflow.aliyunnest.com/webhook/abc").as_deref(),
            Some("1407907063606569")
        );
        assert_eq!(
            account_of("https://x.appflow.aliyunnest.com/webhook/"),
            None
        );
        assert_eq!(account_of("https://example.com/hook"), None);
        assert_eq!(account_of("http://123.appflow.aliyunnest.com/"), None);
    }

    #[test]
    fn ambiguous_outcomes() {
        let api = |status: u16, code: &str| OosError::Api {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
            host_id: None,
            recommend: None,
            retry_after: None,
        };
        assert!(outcome_unknown(&OosError::Timeout));
        assert!(outcome_unknown(&OosError::Transport("reset".into())));
        assert!(outcome_unknown(&api(500, "InternalError")));
        assert!(outcome_unknown(&api(503, "ServiceUnavailable")));
        // A throttled attempt was refused, not run, but the call's earlier attempts may have
        // been lost and run.
        assert!(outcome_unknown(&api(503, "Throttling")));
        assert!(outcome_unknown(&api(400, "Throttling.User")));
        assert!(!outcome_unknown(&api(400, "InvalidParameter")));
        assert!(!outcome_unknown(&api(403, "Forbidden.RAM")));
        assert!(!outcome_unknown(&OosError::InvalidRequest(
            "too large".into()
        )));
    }
}
