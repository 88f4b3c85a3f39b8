//! Deletion: the `Cleanup` side of the finalizer. Deletes the remote only when a fresh Get shows
//! it is still the one this object owns (its CreatedDate), never someone else's; needs only
//! credentials (never the chat platform's ClientSecret); says so when it cannot go on.

use std::sync::Arc;

use chrono::Utc;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::error::{self, Error, Result};
use super::inventory::InventoryKey;
use super::observe;
use super::plan::{self, DeletePlan, Fence};
use super::status;
use super::{Context, object_key};
use crate::crd::{ChatConfiguration, DeletionPolicy, annotations};

const FORCE_ORPHAN_HINT: &str = "set the annotation oos.chatops.dev/force-orphan=true to release this object and keep the remote configuration";

pub(super) async fn cleanup(
    obj: Arc<ChatConfiguration>,
    ctx: &Context,
    api: &Api<ChatConfiguration>,
) -> Result<Action> {
    match delete_remote(&obj, ctx).await {
        Ok(()) => {
            ctx.forget(&obj);
            Ok(Action::await_change())
        }
        Err(e) => {
            let mut status = ctx.current_status(&obj);
            status.observed_generation = obj.metadata.generation;
            // Waiting for a Create that may still land is progress, not a failure: no Warning.
            let (health, failure) = match &e {
                Error::CreateInFlight { .. } => (
                    status::Health::Progressing {
                        reason: e.reason(),
                        message: e.condition_message(),
                    },
                    None,
                ),
                _ => (status::health_of(&e), Some(&e)),
            };
            status::report(ctx, api, &obj, status, health, None, failure).await?;
            Err(e)
        }
    }
}

async fn delete_remote(obj: &ChatConfiguration, ctx: &Context) -> Result<()> {
    let name = obj.remote_name();
    let status = ctx.current_status(obj);
    let force_orphan = obj.annotation_is_true(annotations::FORCE_ORPHAN);
    if !force_orphan && obj.annotation_is_true(annotations::PAUSED) {
        return Err(Error::DeletionBlocked {
            reason: "DeletionPaused",
            message: format!(
                "deletion is held while oos.chatops.dev/paused is true: no remote call is made; remove the annotation to delete the remote configuration, or {FORCE_ORPHAN_HINT}"
            ),
        });
    }
    let policy = if force_orphan {
        DeletionPolicy::Orphan
    } else {
        effective_deletion_policy(obj, ctx).await?
    };
    let management = obj.spec.management_policy.unwrap_or_default();
    // Ownership comes from the CreatedDate, not from whose credentials are in use now.
    let recorded = observe::recorded(&status, status.credentials_id.as_deref().unwrap_or(""));
    match plan::plan_delete(policy, management, force_orphan, &recorded) {
        DeletePlan::NotOwned => Ok(()),
        DeletePlan::Orphan => {
            ctx.event(
                obj,
                EventType::Normal,
                "Orphaned",
                format!("kept remote chat configuration {name}"),
            )
            .await;
            Ok(())
        }
        DeletePlan::Delete => fenced_delete(obj, ctx, &status, &recorded, &name)
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    e
                } else {
                    // A terminal error here would hold the object forever: say how to let go.
                    Error::DeletionBlocked {
                        reason: "DeletionBlocked",
                        message: format!(
                            "cannot delete the remote configuration: {}; fix it, or {FORCE_ORPHAN_HINT}",
                            e.condition_message()
                        ),
                    }
                }
            }),
    }
}

async fn fenced_delete(
    obj: &ChatConfiguration,
    ctx: &Context,
    status: &crate::crd::ChatConfigurationStatus,
    recorded: &plan::Recorded,
    name: &str,
) -> Result<()> {
    let region = status
        .region_id
        .clone()
        .or_else(|| obj.spec.region_id.clone())
        .or_else(|| ctx.settings.default_region.clone())
        .ok_or_else(|| Error::InvalidSpec("no region to delete from".into()))?;
    let mut secrets =
        observe::SecretReader::new(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
    let (oos, credentials_id) = observe::client_for(obj, ctx, &mut secrets).await?;
    let desired = observe::desired_without_secrets(obj, ctx.settings.on_remote_deleted)?;
    let seen = observe::get_remote(&oos, &region, name).await?;
    let remote = seen.view();
    let mut fence = plan::delete_fence(
        &desired,
        recorded,
        remote.as_ref().zip(seen.detail.as_ref()),
    );
    if fence == Fence::NotOwned
        && let (Some(r), Some(d)) = (remote.as_ref(), seen.detail.as_ref())
        && plan::is_late_create(&desired, recorded, r, d)
    {
        // A lost attempt of the Create that made this object's remote, landed after it.
        fence = Fence::Delete;
    }
    let key = InventoryKey {
        credentials: credentials_id,
        region: region.clone(),
    };
    // A late Create would make a configuration no object owns: look again once it cannot land.
    let in_flight = |until: chrono::DateTime<Utc>| Error::CreateInFlight {
        until: status::rfc3339(until),
        wait: (until - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_secs(1),
    };
    match fence {
        Fence::Gone => {
            let settle = chrono::Duration::from_std(ctx.settings.create_settle)
                .unwrap_or(chrono::Duration::MAX);
            let now = Utc::now();
            if let Some(until) = plan::pending_create_settles_at(recorded, now, settle)
                .or_else(|| plan::late_create_settles_at(recorded, now))
            {
                ctx.inventory.remove(&key, name).await;
                return Err(in_flight(until));
            }
        }
        Fence::NotOwned => {
            warn!(object = %object_key(obj), name, "remote chat configuration is not the one this object created; leaving it");
            ctx.event(
                obj,
                EventType::Warning,
                "RemoteNotOwned",
                format!(
                    "kept remote chat configuration {name}: it is not the one this object created (its CreatedDate differs)"
                ),
            )
            .await;
        }
        Fence::Delete => {
            match oos.delete_chat_configuration(&region, name).await {
                Ok(request_id) => {
                    info!(
                        object = %object_key(obj),
                        action = "DeleteChatConfiguration",
                        name,
                        region = %region,
                        request_id = request_id.as_deref().unwrap_or("-"),
                        "deleted remote chat configuration"
                    );
                    ctx.metrics.remote_write("DeleteChatConfiguration");
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(error::oos("DeleteChatConfiguration")(e)),
            }
            ctx.event(
                obj,
                EventType::Normal,
                "Deleted",
                format!("deleted remote chat configuration {name}"),
            )
            .await;
            if let Some(until) = plan::late_create_settles_at(recorded, Utc::now()) {
                ctx.inventory.remove(&key, name).await;
                return Err(in_flight(until));
            }
        }
    }
    ctx.inventory.remove(&key, name).await;
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
