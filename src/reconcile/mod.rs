//! The ChatConfiguration controller: observe → plan (pure) → act → status.
//!
//! - [`observe`]: Secrets (read one by one), the desired state, the remote (shared inventory,
//!   Get only when needed).
//! - [`plan`]: pure decisions, table-tested.
//! - [`act`]: the one remote write a reconcile makes (crash-safe Create, fenced Update).
//! - [`cleanup`]: deletion behind the finalizer, fenced on the remote's CreatedDate.
//! - [`status`]: conditions, and one log line and event per change of state.
//!
//! This module wires them into a kube-rs `Controller`: what wakes an object (its generation,
//! labels, annotations, finalizers and deletion — never our own status writes — and the
//! Secrets it reads), and how failures back off.

mod act;
mod cleanup;
pub mod error;
pub mod index;
pub mod inventory;
pub mod observe;
pub mod plan;
pub mod status;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use tracing::warn;

use crate::crd::{
    ChatConfiguration, ChatConfigurationStatus, DeletionPolicy, FINALIZER, annotations,
};
use crate::metrics::Metrics;
use error::{Error, Result};
use inventory::Inventory;
use oos_client::client::OosClient;
use plan::RemoteDeletedPolicy;

/// Operator-wide settings that shape reconciles.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_region: Option<String>,
    pub default_deletion_policy: DeletionPolicy,
    pub resync_interval: Duration,
    pub on_remote_deleted: RemoteDeletedPolicy,
    /// Keys the per-object secret HMACs in status (with the object UID). Random and kept in a
    /// Secret by default (see `operator::secret_hash_key`): never derivable from the object.
    pub secret_hash_key: Vec<u8>,
    /// Per-object backoff of retryable failures: base and cap (full jitter around them).
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// How long after a Create whose answer was lost the service may still commit it: the
    /// client's retry budget (the last attempt is sent within it) plus how long the service may
    /// hold a request. Deletion keeps such an object until then (see
    /// [`plan::pending_create_settles_at`]).
    pub create_settle: Duration,
    /// How long the service may hold a request past the client's timeout and still run it:
    /// when a Create call had an unanswered attempt, deleting its remote keeps the object this
    /// long after the remote's CreatedDate (`status.lateCreateUntil`, see
    /// [`plan::late_create_settles_at`]). The operator sets twice `--oos-timeout`; the default,
    /// zero, trusts the service to run nothing it has not answered.
    pub request_hold: Duration,
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
            // The client's 60 s retry budget, and twice the default 30 s per-attempt timeout.
            create_settle: Duration::from_secs(120),
            request_hold: Duration::ZERO,
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
    /// Who publishes events. A `Recorder` is made per event: kube's keeps every event it
    /// published for 6 minutes (to patch repeats into a series), about 2.7 KiB per object
    /// while many objects converge, and this operator publishes once per change of state.
    pub reporter: Reporter,
    /// Consecutive retryable failures per object (reset on success): its backoff exponent.
    failures: Mutex<HashMap<ObjectRef<ChatConfiguration>, u32>>,
    /// The status this process last wrote, by object UID. The reflector may hand a reconcile an
    /// object that predates our own latest status write; the operator is the only status
    /// writer, so this copy is authoritative and keeps a stale read from re-planning a Create.
    written: Mutex<HashMap<String, ChatConfigurationStatus>>,
    /// Objects stopped by a terminal failure, with the fingerprint of the inputs it failed on
    /// (`act::stall_fingerprint`); kept in memory, so a restart tries each once more.
    stalled: Mutex<HashMap<ObjectRef<ChatConfiguration>, u64>>,
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
            reporter,
            kube,
            oos,
            settings,
            inventory: Inventory::default(),
            secret_index: index::SecretIndex::default(),
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            stalled: Mutex::new(HashMap::new()),
        })
    }

    /// The current status: our last write for this object, else what the object carries.
    fn current_status(&self, obj: &ChatConfiguration) -> ChatConfigurationStatus {
        if let Some(uid) = obj.metadata.uid.as_ref() {
            let mut written = self.written.lock().expect("written lock");
            match written.get(uid) {
                Some(w) if Some(w) != obj.status.as_ref() => return w.clone(),
                // The cache shows our last write: the copy is no longer needed.
                Some(_) => {
                    written.remove(uid);
                }
                None => {}
            }
        }
        obj.status.clone().unwrap_or_default()
    }

    /// Called for every object the watch delivers: once the cache holds the status this
    /// process last wrote, the copy kept against stale reads is dropped (it would otherwise
    /// stay until the object's next reconcile, a resync interval later: about 1.6 KiB per
    /// object while many converge). The watch never goes back to an older version, so the
    /// copy is not needed again until the next write.
    fn observed(&self, obj: &ChatConfiguration) {
        let Some(uid) = obj.metadata.uid.as_ref() else {
            return;
        };
        let mut written = self.written.lock().expect("written lock");
        if written
            .get(uid)
            .is_some_and(|w| Some(w) == obj.status.as_ref())
        {
            written.remove(uid);
        }
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
        let recorder = Recorder::new(self.kube.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, "cannot publish event");
        }
    }

    fn reset_failures(&self, obj: &ChatConfiguration) {
        let key = ObjectRef::from_obj(obj);
        self.failures.lock().expect("failures lock").remove(&key);
        self.stalled.lock().expect("stalled lock").remove(&key);
    }

    /// The fingerprint of the inputs this object last failed terminally on.
    fn stalled_on(&self, obj: &ChatConfiguration) -> Option<u64> {
        self.stalled
            .lock()
            .expect("stalled lock")
            .get(&ObjectRef::from_obj(obj))
            .copied()
    }

    fn record_stall(&self, obj: &ChatConfiguration, fingerprint: Option<u64>) {
        let key = ObjectRef::from_obj(obj);
        let mut stalled = self.stalled.lock().expect("stalled lock");
        match fingerprint {
            Some(f) => stalled.insert(key, f),
            None => stalled.remove(&key),
        };
    }

    /// Drops everything kept about a deleted object.
    fn forget(&self, obj: &ChatConfiguration) {
        let key = ObjectRef::from_obj(obj);
        self.secret_index.remove(&key);
        self.failures.lock().expect("failures lock").remove(&key);
        self.stalled.lock().expect("stalled lock").remove(&key);
        if let Some(uid) = &obj.metadata.uid {
            self.written.lock().expect("written lock").remove(uid);
        }
        self.metrics
            .forget(&obj.namespace().unwrap_or_default(), &obj.name_any());
    }
}

/// `namespace/name`, the object field of every log line.
fn object_key(obj: &ChatConfiguration) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What makes a change of the object worth a reconcile: everything a user or another controller
/// sets (spec through the generation, labels, annotations, finalizers, deletion), never the
/// status, which only this operator writes. So our own status writes never wake the object,
/// and a failing object's backoff is not cut short by its own condition update.
fn trigger_hash(obj: &ChatConfiguration) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    predicates::labels(obj).hash(&mut h);
    predicates::annotations(obj).hash(&mut h);
    predicates::finalizers(obj).hash(&mut h);
    Some(h.finish())
}

/// Runs one controller per watched namespace (all namespaces when `namespaces` is empty) until
/// `shutdown` resolves; in-flight reconciles finish first (the caller bounds how long).
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
            let (reader, writer) = reflector::store();
            let seen = ctx.clone();
            let triggers = watcher(objects, watcher::Config::default())
                .default_backoff()
                // No reconcile reads managedFields (status and the output Secret are written
                // with server-side apply, which needs none), and they are most of a cached
                // object: about 10 KiB each as a JSON tree once three managers wrote it.
                .modify(|o: &mut ChatConfiguration| {
                    o.metadata.managed_fields = None;
                    // A copy of the whole object that `kubectl apply` (client-side) keeps;
                    // nothing here reads it, and the spec's changes show in the generation.
                    if let Some(a) = o.metadata.annotations.as_mut() {
                        a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    }
                })
                .reflect(writer)
                .applied_objects()
                .map_ok(move |o| {
                    seen.observed(&o);
                    o
                })
                .predicate_filter(
                    trigger_hash,
                    kube::runtime::utils::PredicateConfig::default()
                        .ttl(Duration::from_secs(24 * 3600)),
                );
            // Secret metadata only: data is read per reconcile, never cached cluster-wide.
            let secret_events = watcher(secrets, watcher::Config::default())
                .default_backoff()
                .touched_objects();
            let index = ctx.secret_index.clone();
            Controller::for_stream(triggers, reader)
                .watches_stream(secret_events, move |s: PartialObjectMeta<Secret>| {
                    secret_to_objects(&index, &s)
                })
                .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, ctx)
                .for_each(|res| async move {
                    use kube::runtime::controller::Error as ControllerError;
                    match res {
                        // Failures are logged once per change of state by `status::report`.
                        Ok(_) | Err(ControllerError::ReconcilerFailed(..)) => {}
                        Err(ControllerError::ObjectNotFound(..)) => {}
                        // A watch that keeps failing (CRD deleted, RBAC revoked) must be seen.
                        Err(e) => warn!(error = %e, "watch failed; retrying with backoff"),
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
            FinalizerEvent::Apply(o) => act::apply(o, &ctx, &api).await,
            FinalizerEvent::Cleanup(o) => cleanup::cleanup(o, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .observe_reconcile(timer.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

fn error_policy(obj: Arc<ChatConfiguration>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Some(wait) = error.retry_after() {
        return Action::requeue(wait);
    }
    if !error.is_retryable() {
        // Terminal: Stalled is in status; only a change to the object or its Secrets (or a
        // restart with other credentials) wakes it. No remote call until then.
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
