//! The plan: a pure function of (desired spec, secret hash, observed remote, recorded status)
//! deciding the one remote action a reconcile takes. No I/O, no clock; table-tested below.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::crd::{AdoptionPolicy, ManagementPolicy};

/// What to do when a configuration this object created disappears remotely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemoteDeletedPolicy {
    /// Create it again.
    #[default]
    Recreate,
    /// Report Stalled and wait for a human.
    Stall,
}

/// Desired remote state, derived from the spec and the referenced Secrets.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Desired {
    pub chat_type: String,
    pub ram_role: Option<String>,
    pub resource_group_id: Option<String>,
    /// Non-secret `Configuration` keys and values.
    pub configuration: BTreeMap<String, String>,
    /// Names of the secret `Configuration` keys (values never enter the plan).
    pub secret_keys: Vec<String>,
    /// Hash of everything above.
    pub spec_hash: String,
    /// Keyed HMAC of the secret values.
    pub secret_hash: String,
    pub management: ManagementPolicy,
    pub adoption: AdoptionPolicy,
    pub on_remote_deleted: RemoteDeletedPolicy,
}

/// A remote configuration as seen in the inventory (ListChatConfigurations).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RemoteSummary {
    pub chat_type: String,
    pub ram_role: Option<String>,
    pub webhook_url: Option<String>,
    pub created_date: Option<DateTime<Utc>>,
    pub updated_date: Option<DateTime<Utc>>,
}

/// Fields only GetChatConfiguration returns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RemoteDetail {
    pub resource_group_id: Option<String>,
    /// Every `Configuration` key; secret values come back masked.
    pub configuration: BTreeMap<String, serde_json::Value>,
}

/// What the object recorded in its status about the remote it owns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Recorded {
    pub created_date: Option<DateTime<Utc>>,
    pub updated_date: Option<DateTime<Utc>>,
    pub spec_hash: Option<String>,
    pub secret_hash: Option<String>,
    pub create_requested_at: Option<DateTime<Utc>>,
}

/// A configuration whose CreatedDate is at most this much earlier than the recorded
/// create request is taken to be the one our interrupted Create made (clock skew margin).
pub const CREATE_CLOCK_SKEW: Duration = Duration::minutes(5);

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Create the remote configuration.
    Create,
    /// A configuration this object created has vanished: create it again.
    Recreate,
    /// Update the owned remote; `changed` names the fields that differ (no values).
    Update { changed: Vec<String> },
    /// Take over an existing remote and bring it to the desired state (`changed` may be empty).
    /// `resumed` marks a configuration made by this object's own interrupted Create.
    Adopt { changed: Vec<String>, resumed: bool },
    /// A human must decide; nothing is written.
    Conflict {
        reason: &'static str,
        message: String,
    },
    /// Delete the remote (object is being deleted with policy Delete and owns it).
    Delete,
    /// Nothing to write; `drift` names fields that differ (ObserveOnly) or were just seen.
    Nothing,
}

impl Plan {
    /// Short verb for events, conditions and metrics.
    pub fn verb(&self) -> &'static str {
        match self {
            Plan::Create => "Create",
            Plan::Recreate => "Recreate",
            Plan::Update { .. } => "Update",
            Plan::Adopt { .. } => "Adopt",
            Plan::Conflict { .. } => "Conflict",
            Plan::Delete => "Delete",
            Plan::Nothing => "Nothing",
        }
    }

    pub fn writes_remote(&self) -> bool {
        matches!(
            self,
            Plan::Create | Plan::Recreate | Plan::Update { .. } | Plan::Adopt { .. } | Plan::Delete
        )
    }
}

/// Whether the observe phase must call GetChatConfiguration before planning: the inventory
/// lacks `Configuration` and `ResourceGroupId`, so Get is needed exactly when someone else
/// changed the remote, when our own desired state changed, or when taking a remote over.
pub fn needs_detail(
    desired: &Desired,
    recorded: &Recorded,
    remote: &RemoteSummary,
    forced: bool,
) -> bool {
    if forced {
        return true;
    }
    let owned = recorded.created_date.is_some() && recorded.created_date == remote.created_date;
    if !owned {
        // Adoption (or a resumed create) compares everything once.
        return true;
    }
    recorded.updated_date != remote.updated_date
        || recorded.spec_hash.as_deref() != Some(&desired.spec_hash)
}

/// Names of remote fields that differ from the desired state. Secret values cannot be read back
/// (Get masks them), so for secret keys only their presence is compared.
pub fn diff(desired: &Desired, remote: &RemoteSummary, detail: &RemoteDetail) -> Vec<String> {
    let mut changed = Vec::new();
    if remote.chat_type != desired.chat_type {
        changed.push("type".to_string());
    }
    if remote.ram_role != desired.ram_role {
        changed.push("ramRole".to_string());
    }
    if detail.resource_group_id.is_some() && detail.resource_group_id != desired.resource_group_id {
        changed.push("resourceGroupId".to_string());
    }
    for (key, want) in &desired.configuration {
        match detail.configuration.get(key) {
            Some(serde_json::Value::String(have)) if have == want => {}
            _ => changed.push(format!("configuration.{key}")),
        }
    }
    for key in &desired.secret_keys {
        if !detail.configuration.contains_key(key) {
            changed.push(format!("configuration.{key}"));
        }
    }
    for key in detail.configuration.keys() {
        if !desired.configuration.contains_key(key) && !desired.secret_keys.contains(key) {
            changed.push(format!("configuration.{key}"));
        }
    }
    changed.sort();
    changed.dedup();
    changed
}

/// The outcome of planning: the action and the drift found (field names only).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub drift: Vec<String>,
}

/// Plans the reconcile of a live (not deleting) object. `detail` is present when the observe
/// phase called Get (see [`needs_detail`]).
pub fn plan(
    desired: &Desired,
    recorded: &Recorded,
    remote: Option<&RemoteSummary>,
    detail: Option<&RemoteDetail>,
) -> Decision {
    let nothing = |drift: Vec<String>| Decision {
        plan: Plan::Nothing,
        drift,
    };
    let Some(remote) = remote else {
        let plan = if desired.management == ManagementPolicy::ObserveOnly {
            Plan::Conflict {
                reason: "RemoteNotFound",
                message:
                    "managementPolicy is ObserveOnly and the remote configuration does not exist"
                        .into(),
            }
        } else if recorded.created_date.is_some() {
            match desired.on_remote_deleted {
                RemoteDeletedPolicy::Recreate => Plan::Recreate,
                RemoteDeletedPolicy::Stall => Plan::Conflict {
                    reason: "RemoteDeleted",
                    message: "the remote configuration this object created was deleted out of band"
                        .into(),
                },
            }
        } else if desired.adoption == AdoptionPolicy::Adopt {
            Plan::Conflict {
                reason: "AdoptionTargetNotFound",
                message: "adoptionPolicy is Adopt but no remote configuration with this name exists; use AdoptOrCreate to create it".into(),
            }
        } else {
            Plan::Create
        };
        return Decision {
            plan,
            drift: Vec::new(),
        };
    };

    let drift = detail.map(|d| diff(desired, remote, d)).unwrap_or_default();

    if desired.management == ManagementPolicy::ObserveOnly {
        return nothing(drift);
    }

    if let Some(recorded_created) = recorded.created_date {
        if remote.created_date != Some(recorded_created) {
            return Decision {
                plan: Plan::Conflict {
                    reason: "RemoteReplaced",
                    message: format!(
                        "the remote configuration was deleted and recreated out of band (CreatedDate {}, this object created it at {})",
                        remote
                            .created_date
                            .map(|d| d.to_rfc3339())
                            .unwrap_or_else(|| "unknown".into()),
                        recorded_created.to_rfc3339()
                    ),
                },
                drift,
            };
        }
    } else {
        let resumed = match (recorded.create_requested_at, remote.created_date) {
            (Some(requested), Some(created)) => created >= requested - CREATE_CLOCK_SKEW,
            _ => false,
        };
        if !resumed && desired.adoption == AdoptionPolicy::Refuse {
            return Decision {
                plan: Plan::Conflict {
                    reason: "AlreadyExists",
                    message: "a remote configuration with this name exists and was not created by this object; set spec.adoptionPolicy to Adopt or AdoptOrCreate to take it over".into(),
                },
                drift,
            };
        }
        // Secrets cannot be read back, so taking a remote over always sends them.
        let mut changed = drift.clone();
        changed.extend(
            desired
                .secret_keys
                .iter()
                .map(|k| format!("configuration.{k}")),
        );
        changed.sort();
        changed.dedup();
        return Decision {
            plan: Plan::Adopt { changed, resumed },
            drift,
        };
    }

    // Owned.
    let mut changed = drift.clone();
    if recorded.secret_hash.as_deref() != Some(&desired.secret_hash) {
        changed.extend(
            desired
                .secret_keys
                .iter()
                .map(|k| format!("configuration.{k}")),
        );
    }
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        nothing(drift)
    } else {
        Decision {
            plan: Plan::Update { changed },
            drift,
        }
    }
}

/// What deletion does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePlan {
    /// Call DeleteChatConfiguration (not-found counts as done).
    Delete,
    /// Keep the remote (policy Orphan, ObserveOnly, or the force-orphan annotation).
    Orphan,
    /// This object never owned a remote: nothing to delete.
    NotOwned,
}

pub fn plan_delete(
    policy: crate::crd::DeletionPolicy,
    management: ManagementPolicy,
    force_orphan: bool,
    recorded: &Recorded,
) -> DeletePlan {
    if recorded.created_date.is_none() && recorded.create_requested_at.is_none() {
        DeletePlan::NotOwned
    } else if force_orphan
        || management == ManagementPolicy::ObserveOnly
        || policy == crate::crd::DeletionPolicy::Orphan
    {
        DeletePlan::Orphan
    } else {
        DeletePlan::Delete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeletionPolicy;
    use chrono::TimeZone;

    fn t(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, min, 0).unwrap()
    }

    fn desired() -> Desired {
        Desired {
            chat_type: "DingTalk".into(),
            ram_role: Some("OOSServiceRole".into()),
            resource_group_id: None,
            configuration: BTreeMap::from([
                ("DingTalkClientId".into(), "id-1".into()),
                ("DingTalkTemplateId".into(), "tpl".into()),
            ]),
            secret_keys: vec!["DingTalkClientSecret".into()],
            spec_hash: "spec-1".into(),
            secret_hash: "sec-1".into(),
            ..Default::default()
        }
    }

    fn remote(created: u32, updated: u32) -> RemoteSummary {
        RemoteSummary {
            chat_type: "DingTalk".into(),
            ram_role: Some("OOSServiceRole".into()),
            webhook_url: Some("https://x/webhook/1".into()),
            created_date: Some(t(created)),
            updated_date: Some(t(updated)),
        }
    }

    fn detail_matching() -> RemoteDetail {
        RemoteDetail {
            resource_group_id: None,
            configuration: BTreeMap::from([
                ("DingTalkClientId".into(), "id-1".into()),
                ("DingTalkTemplateId".into(), "tpl".into()),
                ("DingTalkClientSecret".into(), "******".into()),
            ]),
        }
    }

    fn owned(created: u32, updated: u32) -> Recorded {
        Recorded {
            created_date: Some(t(created)),
            updated_date: Some(t(updated)),
            spec_hash: Some("spec-1".into()),
            secret_hash: Some("sec-1".into()),
            create_requested_at: None,
        }
    }

    #[test]
    fn table() {
        let d = desired();
        let mut d_adopt = desired();
        d_adopt.adoption = AdoptionPolicy::Adopt;
        let mut d_adopt_or_create = desired();
        d_adopt_or_create.adoption = AdoptionPolicy::AdoptOrCreate;
        let mut d_observe = desired();
        d_observe.management = ManagementPolicy::ObserveOnly;
        let mut d_stall = desired();
        d_stall.on_remote_deleted = RemoteDeletedPolicy::Stall;
        let mut d_rotated = desired();
        d_rotated.secret_hash = "sec-2".into();
        let mut drifted = detail_matching();
        drifted
            .configuration
            .insert("DingTalkTemplateId".into(), "other".into());
        let mut role_changed = remote(0, 9);
        role_changed.ram_role = Some("Other".into());
        let crashed = Recorded {
            create_requested_at: Some(t(10)),
            ..Default::default()
        };

        let fresh = Recorded::default();
        let own = owned(0, 1);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            &Desired,
            &Recorded,
            Option<RemoteSummary>,
            Option<RemoteDetail>,
            &str,
        )> = vec![
            (
                "absent, new object -> create",
                &d,
                &fresh,
                None,
                None,
                "Create",
            ),
            (
                "absent, AdoptOrCreate -> create",
                &d_adopt_or_create,
                &fresh,
                None,
                None,
                "Create",
            ),
            (
                "absent, Adopt never creates",
                &d_adopt,
                &fresh,
                None,
                None,
                "Conflict:AdoptionTargetNotFound",
            ),
            (
                "absent after we created -> recreate",
                &d,
                &own,
                None,
                None,
                "Recreate",
            ),
            (
                "absent after we created, stall policy",
                &d_stall,
                &own,
                None,
                None,
                "Conflict:RemoteDeleted",
            ),
            (
                "absent, observe only",
                &d_observe,
                &fresh,
                None,
                None,
                "Conflict:RemoteNotFound",
            ),
            (
                "exists, not ours, refuse",
                &d,
                &fresh,
                Some(remote(0, 1)),
                Some(detail_matching()),
                "Conflict:AlreadyExists",
            ),
            (
                "exists, adopt",
                &d_adopt,
                &fresh,
                Some(remote(0, 1)),
                Some(detail_matching()),
                "Adopt",
            ),
            (
                "exists, adopt-or-create",
                &d_adopt_or_create,
                &fresh,
                Some(remote(0, 1)),
                Some(detail_matching()),
                "Adopt",
            ),
            (
                "crashed create resumes even with Refuse",
                &d,
                &crashed,
                Some(remote(11, 11)),
                Some(detail_matching()),
                "Adopt:resumed",
            ),
            (
                "older remote than our create request is not ours",
                &d,
                &crashed,
                Some(remote(1, 1)),
                Some(detail_matching()),
                "Conflict:AlreadyExists",
            ),
            (
                "owned, unchanged",
                &d,
                &own,
                Some(remote(0, 1)),
                None,
                "Nothing",
            ),
            (
                "owned, secret rotated",
                &d_rotated,
                &own,
                Some(remote(0, 1)),
                None,
                "Update:configuration.DingTalkClientSecret",
            ),
            (
                "owned, out-of-band config change",
                &d,
                &own,
                Some(remote(0, 9)),
                Some(drifted.clone()),
                "Update:configuration.DingTalkTemplateId",
            ),
            (
                "owned, out-of-band role change",
                &d,
                &own,
                Some(role_changed),
                Some(detail_matching()),
                "Update:ramRole",
            ),
            (
                "owned, touched but equal",
                &d,
                &own,
                Some(remote(0, 9)),
                Some(detail_matching()),
                "Nothing",
            ),
            (
                "deleted and recreated out of band",
                &d,
                &own,
                Some(remote(5, 5)),
                Some(detail_matching()),
                "Conflict:RemoteReplaced",
            ),
            (
                "observe only never writes",
                &d_observe,
                &own,
                Some(remote(0, 9)),
                Some(drifted),
                "Nothing",
            ),
        ];
        for (name, desired, recorded, remote, detail, want) in cases {
            let got = plan(desired, recorded, remote.as_ref(), detail.as_ref());
            let summary = match &got.plan {
                Plan::Conflict { reason, .. } => format!("Conflict:{reason}"),
                Plan::Update { changed } => format!("Update:{}", changed.join(",")),
                Plan::Adopt { resumed: true, .. } => "Adopt:resumed".into(),
                other => other.verb().to_string(),
            };
            assert_eq!(summary, want, "case: {name}");
        }
    }

    #[test]
    fn drift_is_reported_for_observe_only_and_corrections() {
        let mut detail = detail_matching();
        detail
            .configuration
            .insert("DingTalkClientId".into(), "changed".into());
        detail.configuration.insert("Unknown".into(), "x".into());
        let decision = plan(&desired(), &owned(0, 1), Some(&remote(0, 2)), Some(&detail));
        assert_eq!(
            decision.drift,
            vec!["configuration.DingTalkClientId", "configuration.Unknown"]
        );
        assert_eq!(
            decision.plan,
            Plan::Update {
                changed: vec![
                    "configuration.DingTalkClientId".into(),
                    "configuration.Unknown".into()
                ]
            }
        );
    }

    #[test]
    fn masked_secret_never_counts_as_drift() {
        // Get returns "******": presence matches, so no Update because of masking.
        let decision = plan(
            &desired(),
            &owned(0, 1),
            Some(&remote(0, 3)),
            Some(&detail_matching()),
        );
        assert_eq!(decision.plan, Plan::Nothing);
        assert!(decision.drift.is_empty());
    }

    #[test]
    fn adopt_always_sends_secrets() {
        let mut d = desired();
        d.adoption = AdoptionPolicy::Adopt;
        let decision = plan(
            &d,
            &Recorded::default(),
            Some(&remote(0, 1)),
            Some(&detail_matching()),
        );
        assert_eq!(
            decision.plan,
            Plan::Adopt {
                changed: vec!["configuration.DingTalkClientSecret".into()],
                resumed: false
            }
        );
    }

    #[test]
    fn detail_needed_only_when_something_changed() {
        let d = desired();
        assert!(!needs_detail(&d, &owned(0, 1), &remote(0, 1), false));
        assert!(
            needs_detail(&d, &owned(0, 1), &remote(0, 1), true),
            "forced"
        );
        assert!(
            needs_detail(&d, &owned(0, 1), &remote(0, 2), false),
            "updated out of band"
        );
        let mut changed = desired();
        changed.spec_hash = "spec-2".into();
        assert!(
            needs_detail(&changed, &owned(0, 1), &remote(0, 1), false),
            "spec changed"
        );
        assert!(
            needs_detail(&d, &Recorded::default(), &remote(0, 1), false),
            "not owned yet"
        );
        let mut rotated = desired();
        rotated.secret_hash = "sec-2".into();
        assert!(
            !needs_detail(&rotated, &owned(0, 1), &remote(0, 1), false),
            "rotation needs no Get"
        );
    }

    #[test]
    fn delete_plans() {
        let o = owned(0, 1);
        let m = ManagementPolicy::Manage;
        assert_eq!(
            plan_delete(DeletionPolicy::Delete, m, false, &o),
            DeletePlan::Delete
        );
        assert_eq!(
            plan_delete(DeletionPolicy::Orphan, m, false, &o),
            DeletePlan::Orphan
        );
        assert_eq!(
            plan_delete(DeletionPolicy::Delete, m, true, &o),
            DeletePlan::Orphan
        );
        assert_eq!(
            plan_delete(
                DeletionPolicy::Delete,
                ManagementPolicy::ObserveOnly,
                false,
                &o
            ),
            DeletePlan::Orphan
        );
        assert_eq!(
            plan_delete(DeletionPolicy::Delete, m, false, &Recorded::default()),
            DeletePlan::NotOwned
        );
        let pending = Recorded {
            create_requested_at: Some(t(3)),
            ..Default::default()
        };
        assert_eq!(
            plan_delete(DeletionPolicy::Delete, m, false, &pending),
            DeletePlan::Delete
        );
    }
}
