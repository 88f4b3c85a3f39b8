//! Status: conditions with kstatus semantics, written with server-side apply only when they
//! changed semantically (so a no-op resync or a retry in the same state makes no Kubernetes
//! write), plus the one log line and event per change of state.

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::error::Error;
use super::{Context, object_key};
use crate::crd::{ChatConfiguration, ChatConfigurationStatus, Condition, condition_types as ct};

pub const FIELD_MANAGER: &str = "oos-chat-operator";

pub fn rfc3339(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_rfc3339(s: Option<&String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// The health a reconcile ended in; maps onto Ready / Reconciling / Stalled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// In sync.
    Ready {
        reason: &'static str,
        message: String,
    },
    /// Work in flight or waiting for something that will come by itself (a retry, a Secret).
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// Needs a human: invalid parameters, credentials, conflicts.
    Stalled {
        reason: &'static str,
        message: String,
    },
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: String::new(),
        observed_generation: generation,
    }
}

/// The three kstatus conditions for `health` (plus an optional DryRun condition).
pub fn conditions(
    health: &Health,
    generation: Option<i64>,
    dry_run: Option<&str>,
) -> Vec<Condition> {
    let mut out = match health {
        Health::Ready { reason, message } => vec![
            condition(ct::READY, true, reason, message, generation),
            condition(ct::RECONCILING, false, reason, "", generation),
            condition(ct::STALLED, false, reason, "", generation),
        ],
        Health::Progressing { reason, message } => vec![
            condition(ct::READY, false, reason, message, generation),
            condition(ct::RECONCILING, true, reason, message, generation),
            condition(ct::STALLED, false, reason, "", generation),
        ],
        Health::Stalled { reason, message } => vec![
            condition(ct::READY, false, reason, message, generation),
            condition(ct::RECONCILING, false, reason, "", generation),
            condition(ct::STALLED, true, reason, message, generation),
        ],
    };
    if let Some(msg) = dry_run {
        out.push(condition(
            ct::DRY_RUN,
            true,
            "PlanComputed",
            msg,
            generation,
        ));
    }
    out
}

/// Keeps each condition's `lastTransitionTime` unless its status flipped.
pub fn carry_transition_times(new: &mut [Condition], old: &[Condition], now: &str) {
    for c in new.iter_mut() {
        c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status && !o.last_transition_time.is_empty() => {
                o.last_transition_time.clone()
            }
            _ => now.to_string(),
        };
    }
}

/// The health an error leaves the object in.
pub fn health_of(e: &Error) -> Health {
    let message = e.condition_message();
    match e {
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
    }
}

/// `(status, reason)` of the Ready condition: what a change of state is measured on.
fn ready_state(status: &ChatConfigurationStatus) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == ct::READY)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Turns a reconcile's end into conditions and writes them if anything changed. On a change of
/// state (Ready's status or reason) it logs one line (`warn` when Stalled, with the error code
/// and RequestId) and publishes one Warning event for a failure; a retry in the same state
/// writes nothing, logs at debug only and publishes nothing.
pub async fn report(
    ctx: &Context,
    api: &Api<ChatConfiguration>,
    obj: &ChatConfiguration,
    mut status: ChatConfigurationStatus,
    health: Health,
    dry_run: Option<String>,
    error: Option<&Error>,
) -> kube::Result<()> {
    let before = ready_state(&ctx.current_status(obj));
    status.conditions = conditions(&health, obj.metadata.generation, dry_run.as_deref());
    let after = ready_state(&status);
    ctx.write_status(api, obj, status).await?;
    ctx.metrics.set_ready(
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
        matches!(health, Health::Ready { .. }),
    );
    let object = object_key(obj);
    let code = error.and_then(Error::code).unwrap_or("-");
    let request_id = error.and_then(Error::request_id).unwrap_or("-");
    if before == after {
        if let Some(e) = error {
            debug!(%object, reason = e.reason(), code, request_id, error = %e, "still failing");
        }
        return Ok(());
    }
    match (&health, error) {
        (Health::Stalled { reason, message }, e) => {
            let detail = e.map(ToString::to_string).unwrap_or_default();
            warn!(%object, reason, code, request_id, error = %detail, "stalled: {message}");
            ctx.event(obj, EventType::Warning, reason, message.clone())
                .await;
        }
        (Health::Progressing { reason, message }, Some(e)) => {
            info!(%object, reason, code, request_id, error = %e, "failing, will retry: {message}");
            ctx.event(obj, EventType::Warning, reason, message.clone())
                .await;
        }
        (Health::Progressing { reason, .. }, None) => {
            debug!(%object, reason, "progressing");
        }
        (Health::Ready { reason, .. }, _) => {
            info!(%object, reason, "ready");
        }
    }
    Ok(())
}

/// Writes `status` unless it equals `current`. Returns what was written, if anything.
pub async fn apply(
    api: &Api<ChatConfiguration>,
    obj: &ChatConfiguration,
    current: &ChatConfigurationStatus,
    mut status: ChatConfigurationStatus,
) -> kube::Result<Option<ChatConfigurationStatus>> {
    carry_transition_times(
        &mut status.conditions,
        &current.conditions,
        &rfc3339(Utc::now()),
    );
    if &status == current {
        return Ok(None);
    }
    let patch = serde_json::json!({
        "apiVersion": "oos.chatops.dev/v1alpha1",
        "kind": "ChatConfiguration",
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_unless_status_flips() {
        let health = Health::Ready {
            reason: "Synced",
            message: "ok".into(),
        };
        let mut first = conditions(&health, Some(1), None);
        carry_transition_times(&mut first, &[], "T1");
        assert!(first.iter().all(|c| c.last_transition_time == "T1"));

        let mut same = conditions(
            &Health::Ready {
                reason: "Synced",
                message: "still ok".into(),
            },
            Some(2),
            None,
        );
        carry_transition_times(&mut same, &first, "T2");
        assert!(same.iter().all(|c| c.last_transition_time == "T1"));

        let mut flipped = conditions(
            &Health::Stalled {
                reason: "InvalidCredentials",
                message: "x".into(),
            },
            Some(2),
            None,
        );
        carry_transition_times(&mut flipped, &same, "T3");
        let t = |ty: &str| {
            flipped
                .iter()
                .find(|c| c.type_ == ty)
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(t("Ready"), "T3");
        assert_eq!(t("Stalled"), "T3");
        assert_eq!(t("Reconciling"), "T1", "Reconciling stayed False");
    }

    #[test]
    fn kstatus_shapes() {
        let c = conditions(
            &Health::Progressing {
                reason: "Creating",
                message: "m".into(),
            },
            None,
            Some("would Create"),
        );
        let status = |ty: &str| c.iter().find(|x| x.type_ == ty).map(|x| x.status.clone());
        assert_eq!(status("Ready").as_deref(), Some("False"));
        assert_eq!(status("Reconciling").as_deref(), Some("True"));
        assert_eq!(status("Stalled").as_deref(), Some("False"));
        assert_eq!(status("DryRun").as_deref(), Some("True"));
    }
}
