//! The plan: pure functions of (desired spec, secret hash, observed remote, recorded status)
//! deciding the one remote action a reconcile or a deletion takes. No I/O, no clock;
//! table-tested below.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

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
    /// [`spec_hash`] of everything above.
    pub spec_hash: String,
    /// Keyed HMAC of the secret values.
    pub secret_hash: String,
    pub management: ManagementPolicy,
    pub adoption: AdoptionPolicy,
    pub on_remote_deleted: RemoteDeletedPolicy,
}

/// The hash that identifies a non-secret configuration: the same canonical form for what the
/// spec asks and for what a remote holds, so a resumed create can be matched to what it sent.
pub fn spec_hash(
    chat_type: &str,
    ram_role: Option<&str>,
    resource_group_id: Option<&str>,
    configuration: &BTreeMap<String, String>,
    secret_keys: &[String],
) -> String {
    let canonical = serde_json::json!({
        "type": chat_type,
        "ramRole": ram_role,
        "resourceGroupId": resource_group_id,
        "configuration": configuration,
        "secretKeys": secret_keys,
    });
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    )
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

/// A Create whose outcome is not known yet (recorded before the call, kept only while the
/// outcome is ambiguous).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PendingCreate {
    pub requested_at: DateTime<Utc>,
    /// [`spec_hash`] of the non-secret configuration sent.
    pub spec_hash: Option<String>,
    /// Secret HMAC of the values sent.
    pub secret_hash: Option<String>,
}

/// What the object recorded in its status about the remote it owns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Recorded {
    /// CreatedDate of the remote this object owns (created or adopted).
    pub created_date: Option<DateTime<Utc>>,
    pub updated_date: Option<DateTime<Utc>>,
    pub spec_hash: Option<String>,
    pub secret_hash: Option<String>,
    pub pending: Option<PendingCreate>,
    /// The credentials in use are not the ones that wrote the remote (another key, maybe
    /// another account).
    pub credentials_changed: bool,
    /// Until when an unanswered attempt of the Create that made the owned remote may still land.
    pub late_create_until: Option<DateTime<Utc>>,
}

impl Recorded {
    pub fn owns(&self) -> bool {
        self.created_date.is_some()
    }
}

/// A configuration whose CreatedDate is at most this much earlier than the recorded
/// create request may be the one our interrupted Create made (clock skew margin).
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
    /// `resumed` marks the configuration this object's own interrupted Create made.
    Adopt { changed: Vec<String>, resumed: bool },
    /// A human must decide; nothing is written.
    Conflict {
        reason: &'static str,
        message: String,
    },
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
            Plan::Nothing => "Nothing",
        }
    }
}

/// Whether the observe phase must call GetChatConfiguration before planning: the inventory
/// lacks `Configuration` and `ResourceGroupId`, so Get is needed exactly when someone else
/// changed the remote, when our own desired state (spec or secrets) changed, when a pending
/// create must be matched, or when taking a remote over. A no-op resync needs none.
pub fn needs_detail(
    desired: &Desired,
    recorded: &Recorded,
    remote: &RemoteSummary,
    forced: bool,
) -> bool {
    // No webhook URL yet: the remote is known only from our own Create's answer (Name and
    // dates), whose Get did not happen.
    if forced || recorded.pending.is_some() || remote.webhook_url.is_none() {
        return true;
    }
    let owned = recorded.owns() && recorded.created_date == remote.created_date;
    if !owned {
        // Adoption compares everything once; a replaced remote needs no more than the summary,
        // but the Get is what shows the user its drift.
        return true;
    }
    // A write (spec change or secret rotation) is fenced on a fresh CreatedDate, never on an
    // inventory snapshot that may predate someone else's delete-and-recreate.
    recorded.updated_date != remote.updated_date
        || recorded.spec_hash.as_deref() != Some(&desired.spec_hash)
        || recorded.secret_hash.as_deref() != Some(&desired.secret_hash)
}

/// Names of remote fields that differ from the desired state. Secret values cannot be read back
/// (Get masks them), so for secret keys only their presence is compared. `ramRole` and
/// `resourceGroupId` are compared only when the spec sets them: OOS cannot clear them (an
/// Update that omits them keeps them), so an unset field means "not managed", and removing one
/// from the spec is refused at admission.
pub fn diff(desired: &Desired, remote: &RemoteSummary, detail: &RemoteDetail) -> Vec<String> {
    let mut changed = Vec::new();
    if remote.chat_type != desired.chat_type {
        changed.push("type".to_string());
    }
    if desired.ram_role.is_some() && remote.ram_role != desired.ram_role {
        changed.push("ramRole".to_string());
    }
    if desired.resource_group_id.is_some() && detail.resource_group_id != desired.resource_group_id
    {
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

/// [`spec_hash`] of what a remote holds, reading secret keys as the desired state names them
/// (their values are masked): equal to the hash a Create of the same configuration recorded.
pub fn remote_spec_hash(
    desired: &Desired,
    remote: &RemoteSummary,
    detail: &RemoteDetail,
) -> Option<String> {
    let mut configuration = BTreeMap::new();
    let mut secret_keys = Vec::new();
    for (k, v) in &detail.configuration {
        if desired.secret_keys.contains(k) {
            secret_keys.push(k.clone());
        } else {
            // A non-string value can never equal what we send (always strings).
            configuration.insert(k.clone(), v.as_str()?.to_string());
        }
    }
    Some(spec_hash(
        &remote.chat_type,
        remote.ram_role.as_deref(),
        detail.resource_group_id.as_deref(),
        &configuration,
        &secret_keys,
    ))
}

/// Whether `remote` is the configuration the pending Create made: created no earlier than the
/// request (minus clock skew) and holding exactly the non-secret configuration it sent.
pub fn is_own_pending_create(
    pending: &PendingCreate,
    desired: &Desired,
    remote: &RemoteSummary,
    detail: Option<&RemoteDetail>,
) -> bool {
    let recent = remote
        .created_date
        .is_some_and(|created| created >= pending.requested_at - CREATE_CLOCK_SKEW);
    let same = match (detail, &pending.spec_hash) {
        (Some(d), Some(sent)) => remote_spec_hash(desired, remote, d).as_deref() == Some(sent),
        _ => false,
    };
    recent && same
}

/// The outcome of planning: the action and the drift found (field names only).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub drift: Vec<String>,
}

fn conflict(reason: &'static str, message: impl Into<String>) -> Plan {
    Plan::Conflict {
        reason,
        message: message.into(),
    }
}

const ACCOUNT_CHANGED: &str = "the credentials in use are not the ones that wrote the remote configuration, and it is not visible with them (another account?); restore the previous credentialsRef, or delete this object with the force-orphan annotation and create a new one";

/// Plans the reconcile of a live (not deleting) object. `detail` is present when the observe
/// phase called Get (see [`needs_detail`]).
pub fn plan(
    desired: &Desired,
    recorded: &Recorded,
    remote: Option<&RemoteSummary>,
    detail: Option<&RemoteDetail>,
) -> Decision {
    let Some(remote) = remote else {
        let plan = if desired.management == ManagementPolicy::ObserveOnly {
            conflict(
                "RemoteNotFound",
                "managementPolicy is ObserveOnly and the remote configuration does not exist",
            )
        } else if recorded.owns() && recorded.credentials_changed {
            conflict("AccountChanged", ACCOUNT_CHANGED)
        } else if recorded.owns() {
            match desired.on_remote_deleted {
                RemoteDeletedPolicy::Recreate => Plan::Recreate,
                RemoteDeletedPolicy::Stall => conflict(
                    "RemoteDeleted",
                    "the remote configuration this object created was deleted out of band",
                ),
            }
        } else if desired.adoption == AdoptionPolicy::Adopt {
            conflict(
                "AdoptionTargetNotFound",
                "adoptionPolicy is Adopt but no remote configuration with this name exists; use AdoptOrCreate to create it",
            )
        } else {
            Plan::Create
        };
        return Decision {
            plan,
            drift: Vec::new(),
        };
    };

    let drift = detail.map(|d| diff(desired, remote, d)).unwrap_or_default();
    let decision = |plan| Decision {
        plan,
        drift: drift.clone(),
    };

    if desired.management == ManagementPolicy::ObserveOnly {
        return decision(Plan::Nothing);
    }

    // Our own interrupted Create (first create or recreate) comes before any ownership check:
    // its CreatedDate is new, and it holds what we sent.
    if let Some(pending) = &recorded.pending
        && is_own_pending_create(pending, desired, remote, detail)
        && recorded.created_date != remote.created_date
    {
        let mut changed = drift.clone();
        if pending.secret_hash.as_deref() != Some(&desired.secret_hash) {
            changed.extend(secret_fields(desired));
        }
        changed.sort();
        changed.dedup();
        return decision(Plan::Adopt {
            changed,
            resumed: true,
        });
    }

    if let Some(recorded_created) = recorded.created_date {
        if remote.created_date != Some(recorded_created) {
            if recorded.credentials_changed {
                return decision(conflict("AccountChanged", ACCOUNT_CHANGED));
            }
            return decision(conflict(
                "RemoteReplaced",
                "the remote configuration was deleted and recreated out of band (its CreatedDate is not the one this object recorded); delete this object with the force-orphan annotation, or adopt the new configuration with a new object",
            ));
        }
        // Owned.
        let mut changed = drift.clone();
        if recorded.secret_hash.as_deref() != Some(&desired.secret_hash) {
            changed.extend(secret_fields(desired));
        }
        changed.sort();
        changed.dedup();
        return if changed.is_empty() {
            decision(Plan::Nothing)
        } else {
            decision(Plan::Update { changed })
        };
    }

    if desired.adoption == AdoptionPolicy::Refuse {
        return decision(conflict(
            "AlreadyExists",
            "a remote configuration with this name exists and was not created by this object; set spec.adoptionPolicy to Adopt or AdoptOrCreate to take it over",
        ));
    }
    // Secrets cannot be read back, so taking a remote over always sends them.
    let mut changed = drift.clone();
    changed.extend(secret_fields(desired));
    changed.sort();
    changed.dedup();
    decision(Plan::Adopt {
        changed,
        resumed: false,
    })
}

fn secret_fields(desired: &Desired) -> impl Iterator<Item = String> + '_ {
    desired
        .secret_keys
        .iter()
        .map(|k| format!("configuration.{k}"))
}

/// What deletion does, before looking at the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePlan {
    /// Delete the remote if it is still the one this object owns (see [`delete_fence`]).
    Delete,
    /// Keep the remote (policy Orphan, ObserveOnly, or the force-orphan annotation).
    Orphan,
    /// This object never wrote a remote: nothing to delete.
    NotOwned,
}

pub fn plan_delete(
    policy: crate::crd::DeletionPolicy,
    management: ManagementPolicy,
    force_orphan: bool,
    recorded: &Recorded,
) -> DeletePlan {
    if !recorded.owns() && recorded.pending.is_none() {
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

/// The ownership fence in front of DeleteChatConfiguration, decided on a fresh Get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// The remote is the one this object owns: delete it.
    Delete,
    /// Nothing by that name exists any more: done.
    Gone,
    /// Someone else's configuration holds the name: leave it.
    NotOwned,
}

pub fn delete_fence(
    desired: &Desired,
    recorded: &Recorded,
    remote: Option<(&RemoteSummary, &RemoteDetail)>,
) -> Fence {
    let Some((remote, detail)) = remote else {
        return Fence::Gone;
    };
    if recorded.owns() && remote.created_date == recorded.created_date {
        return Fence::Delete;
    }
    match &recorded.pending {
        Some(p) if is_own_pending_create(p, desired, remote, Some(detail)) => Fence::Delete,
        _ => Fence::NotOwned,
    }
}

/// A deletion that finds no remote while this object has a Create whose answer was lost must not
/// release the object yet: the service may still commit that Create (a request it held past the
/// client's timeout, or one sent just before a crash), and the configuration would then belong to
/// no one. Until `requested_at + settle` the object is kept; returns that time while it is ahead.
pub fn pending_create_settles_at(
    recorded: &Recorded,
    now: DateTime<Utc>,
    settle: Duration,
) -> Option<DateTime<Utc>> {
    let until = recorded.pending.as_ref()?.requested_at + settle;
    (until > now).then_some(until)
}

/// After the remote this object created is deleted, an unanswered attempt of the Create call
/// that made it (sent before the attempt that succeeded, held by the service past the client's
/// timeout) may still land: until `recorded.late_create_until`, set only when that call had an
/// unanswered attempt, the object is kept; returns that time while it is ahead.
pub fn late_create_settles_at(recorded: &Recorded, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let until = recorded.late_create_until?;
    (until > now).then_some(until)
}

/// Whether `remote` is such a late attempt, landed after this object's own remote was deleted:
/// created between this object's own remote and `late_create_until`, holding exactly the
/// configuration this object sends.
pub fn is_late_create(
    desired: &Desired,
    recorded: &Recorded,
    remote: &RemoteSummary,
    detail: &RemoteDetail,
) -> bool {
    let (Some(own), Some(until), Some(created)) = (
        recorded.created_date,
        recorded.late_create_until,
        remote.created_date,
    ) else {
        return false;
    };
    created >= own
        && created <= until
        && remote_spec_hash(desired, remote, detail).as_deref() == Some(desired.spec_hash.as_str())
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
        let configuration = BTreeMap::from([
            ("DingTalkClientId".into(), "id-1".into()),
            ("DingTalkTemplateId".into(), "tpl".into()),
        ]);
        let secret_keys = vec!["DingTalkClientSecret".to_string()];
        Desired {
            chat_type: "DingTalk".into(),
            ram_role: Some("OOSServiceRole".into()),
            resource_group_id: None,
            spec_hash: spec_hash(
                "DingTalk",
                Some("OOSServiceRole"),
                None,
                &configuration,
                &secret_keys,
            ),
            configuration,
            secret_keys,
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
            spec_hash: Some(desired().spec_hash),
            secret_hash: Some("sec-1".into()),
            ..Default::default()
        }
    }

    fn pending(at: u32, secret: &str) -> PendingCreate {
        PendingCreate {
            requested_at: t(at),
            spec_hash: Some(desired().spec_hash),
            secret_hash: Some(secret.into()),
        }
    }

    fn summary(p: &Plan) -> String {
        match p {
            Plan::Conflict { reason, .. } => format!("Conflict:{reason}"),
            Plan::Update { changed } => format!("Update:{}", changed.join(",")),
            Plan::Adopt {
                resumed: true,
                changed,
            } => format!("Adopt:resumed:{}", changed.join(",")),
            other => other.verb().to_string(),
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
            pending: Some(pending(10, "sec-1")),
            ..Default::default()
        };
        let crashed_rotated_since = Recorded {
            pending: Some(pending(10, "sec-0")),
            ..Default::default()
        };
        let recreating = Recorded {
            pending: Some(pending(10, "sec-1")),
            ..owned(0, 1)
        };
        let moved = Recorded {
            credentials_changed: true,
            ..owned(0, 1)
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
                "absent, other credentials -> never a second remote",
                &d,
                &moved,
                None,
                None,
                "Conflict:AccountChanged",
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
                "interrupted create resumes even with Refuse; secrets unchanged, no write",
                &d,
                &crashed,
                Some(remote(11, 11)),
                Some(detail_matching()),
                "Adopt:resumed:",
            ),
            (
                "interrupted create resumes; secrets rotated since, re-sent",
                &d,
                &crashed_rotated_since,
                Some(remote(11, 11)),
                Some(detail_matching()),
                "Adopt:resumed:configuration.DingTalkClientSecret",
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
                "newer remote with another configuration is not ours",
                &d,
                &crashed,
                Some(remote(11, 11)),
                Some(drifted.clone()),
                "Conflict:AlreadyExists",
            ),
            (
                "pending create cannot be matched without Get",
                &d,
                &crashed,
                Some(remote(11, 11)),
                None,
                "Conflict:AlreadyExists",
            ),
            (
                "interrupted recreate resumes its own remote",
                &d,
                &recreating,
                Some(remote(11, 11)),
                Some(detail_matching()),
                "Adopt:resumed:",
            ),
            (
                "interrupted recreate, someone else's remote",
                &d,
                &recreating,
                Some(remote(11, 11)),
                Some(drifted.clone()),
                "Conflict:RemoteReplaced",
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
                "owned, new credentials of the same account",
                &d,
                &moved,
                Some(remote(0, 1)),
                None,
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
                "other credentials see another remote",
                &d,
                &moved,
                Some(remote(5, 5)),
                Some(detail_matching()),
                "Conflict:AccountChanged",
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
            assert_eq!(summary(&got.plan), want, "case: {name}");
        }
    }

    /// Every API field × {added, changed, removed} converges to one Update, or is refused at
    /// admission (ramRole / resourceGroupId removal, see crd.rs), never an endless Update: after
    /// the Update the remote equals the desired state and the plan is Nothing.
    #[test]
    fn field_table_converges() {
        // Applies what an Update of `d` writes (OOS keeps RamRole/ResourceGroupId it is not
        // given and replaces Configuration whole; the assumptions of docs/emulator.md A10).
        fn after_update(
            d: &Desired,
            remote: &RemoteSummary,
            detail: &RemoteDetail,
        ) -> (RemoteSummary, RemoteDetail) {
            let mut r = remote.clone();
            let mut x = detail.clone();
            r.chat_type = d.chat_type.clone();
            if d.ram_role.is_some() {
                r.ram_role = d.ram_role.clone();
            }
            if d.resource_group_id.is_some() {
                x.resource_group_id = d.resource_group_id.clone();
            }
            x.configuration = d
                .configuration
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .chain(
                    d.secret_keys
                        .iter()
                        .map(|k| (k.clone(), serde_json::Value::String("******".into()))),
                )
                .collect();
            (r, x)
        }
        let base = desired();
        let with = |f: &dyn Fn(&mut Desired)| {
            let mut d = desired();
            f(&mut d);
            d
        };
        let cases: Vec<(&str, Desired)> = vec![
            (
                "ramRole changed",
                with(&|d| d.ram_role = Some("Other".into())),
            ),
            (
                "ramRole added",
                with(&|d| d.ram_role = Some("OOSServiceRole".into())),
            ),
            (
                "resourceGroupId added",
                with(&|d| d.resource_group_id = Some("rg-1".into())),
            ),
            (
                "resourceGroupId changed",
                with(&|d| d.resource_group_id = Some("rg-2".into())),
            ),
            (
                "configuration key added",
                with(&|d| {
                    d.configuration.insert("Extra".into(), "x".into());
                }),
            ),
            (
                "configuration key changed",
                with(&|d| {
                    d.configuration
                        .insert("DingTalkTemplateId".into(), "tpl-2".into());
                }),
            ),
            (
                "configuration key removed",
                with(&|d| {
                    d.configuration.remove("DingTalkTemplateId");
                }),
            ),
            (
                "secret key added",
                with(&|d| d.secret_keys.push("ExtraSecret".into())),
            ),
            ("secret key removed", with(&|d| d.secret_keys.clear())),
            (
                "client secret changed",
                with(&|d| d.secret_hash = "sec-2".into()),
            ),
        ];
        let mut remote_rg = detail_matching();
        remote_rg.resource_group_id = Some("rg-1".into());
        for (name, mut d) in cases {
            d.spec_hash = spec_hash(
                &d.chat_type,
                d.ram_role.as_deref(),
                d.resource_group_id.as_deref(),
                &d.configuration,
                &d.secret_keys,
            );
            let rec = owned(0, 1);
            let mut remote = remote(0, 1);
            if name == "ramRole added" {
                remote.ram_role = None;
            }
            let detail = if name == "resourceGroupId changed" {
                remote_rg.clone()
            } else {
                detail_matching()
            };
            let first = plan(&d, &rec, Some(&remote), Some(&detail));
            let Plan::Update { changed } = &first.plan else {
                panic!("{name}: expected one Update, got {:?}", first.plan);
            };
            assert!(!changed.is_empty(), "{name}");
            let (remote2, detail2) = after_update(&d, &remote, &detail);
            let rec2 = Recorded {
                secret_hash: Some(d.secret_hash.clone()),
                spec_hash: Some(d.spec_hash.clone()),
                ..rec
            };
            let second = plan(&d, &rec2, Some(&remote2), Some(&detail2));
            assert_eq!(
                second.plan,
                Plan::Nothing,
                "{name}: converged after one Update"
            );
            assert!(second.drift.is_empty(), "{name}: no drift left");
        }
        // A spec without ramRole/resourceGroupId does not manage them: an adopted remote that
        // has them is not drift (the API could not clear them anyway).
        let mut unmanaged = base.clone();
        unmanaged.ram_role = None;
        let decision = plan(
            &unmanaged,
            &owned(0, 1),
            Some(&remote(0, 1)),
            Some(&remote_rg),
        );
        assert_eq!(decision.plan, Plan::Nothing);
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
    fn remote_hash_matches_the_desired_hash_of_the_same_configuration() {
        let d = desired();
        assert_eq!(
            remote_spec_hash(&d, &remote(0, 1), &detail_matching()).as_deref(),
            Some(d.spec_hash.as_str())
        );
        let mut other = detail_matching();
        other.resource_group_id = Some("rg".into());
        assert_ne!(
            remote_spec_hash(&d, &remote(0, 1), &other).as_deref(),
            Some(d.spec_hash.as_str())
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
        let pending_create = Recorded {
            pending: Some(pending(3, "sec-1")),
            ..owned(0, 1)
        };
        assert!(
            needs_detail(&d, &pending_create, &remote(0, 1), false),
            "a pending create is matched on the configuration"
        );
        let mut rotated = desired();
        rotated.secret_hash = "sec-2".into();
        assert!(
            needs_detail(&rotated, &owned(0, 1), &remote(0, 1), false),
            "a rotation writes, so it is fenced on a fresh Get"
        );
        let created_only = RemoteSummary {
            webhook_url: None,
            ..remote(0, 1)
        };
        assert!(
            needs_detail(&d, &owned(0, 1), &created_only, false),
            "known only from our Create's answer: the webhook URL needs a Get"
        );
    }

    #[test]
    fn create_whose_get_failed_is_neither_recreated_nor_updated() {
        // act::create records the applied hashes and the Create's answer (no outputs) in the
        // inventory before its Get; if that Get fails, the retry plans on them.
        let d = desired();
        let created_only = RemoteSummary {
            webhook_url: None,
            ..remote(0, 1)
        };
        assert_eq!(
            plan(&d, &owned(0, 1), Some(&created_only), None).plan,
            Plan::Nothing
        );
        assert_eq!(
            plan(
                &d,
                &owned(0, 1),
                Some(&created_only),
                Some(&detail_matching())
            )
            .plan,
            Plan::Nothing
        );
    }

    #[test]
    fn deletion_waits_for_a_pending_create_to_settle() {
        let settle = Duration::seconds(90);
        let pending = Recorded {
            pending: Some(pending(10, "sec-1")),
            ..Default::default()
        };
        assert_eq!(
            pending_create_settles_at(&pending, t(10), settle),
            Some(t(10) + settle),
            "just sent: wait"
        );
        assert_eq!(
            pending_create_settles_at(&pending, t(11), settle),
            Some(t(10) + settle)
        );
        assert_eq!(
            pending_create_settles_at(&pending, t(12), settle),
            None,
            "settled"
        );
        assert_eq!(
            pending_create_settles_at(&owned(0, 1), t(10), settle),
            None,
            "no Create in doubt"
        );
    }

    #[test]
    fn late_attempts_of_the_own_create() {
        let own = Recorded {
            late_create_until: Some(t(1) + Duration::seconds(1)),
            ..owned(0, 1)
        };
        assert_eq!(
            late_create_settles_at(&own, t(0)),
            Some(t(1) + Duration::seconds(1))
        );
        assert_eq!(late_create_settles_at(&own, t(2)), None);
        assert_eq!(
            late_create_settles_at(&owned(0, 1), t(0)),
            None,
            "a Create answered at its first attempt leaves nothing to wait for"
        );
        let d = desired();
        let matching = detail_matching();
        assert!(is_late_create(&d, &own, &remote(1, 1), &matching));
        assert!(is_late_create(&d, &own, &remote(0, 0), &matching));
        assert!(
            !is_late_create(&d, &own, &remote(2, 2), &matching),
            "too late to be ours"
        );
        let mut other = detail_matching();
        other
            .configuration
            .insert("DingTalkTemplateId".into(), "theirs".into());
        assert!(
            !is_late_create(&d, &own, &remote(1, 1), &other),
            "another configuration"
        );
        assert!(!is_late_create(&d, &owned(0, 1), &remote(1, 1), &matching));
    }

    #[test]
    fn delete_plans_and_fence() {
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
        let in_flight = Recorded {
            pending: Some(pending(10, "sec-1")),
            ..Default::default()
        };
        assert_eq!(
            plan_delete(DeletionPolicy::Delete, m, false, &in_flight),
            DeletePlan::Delete
        );

        let d = desired();
        let detail = detail_matching();
        assert_eq!(delete_fence(&d, &o, None), Fence::Gone);
        assert_eq!(
            delete_fence(&d, &o, Some((&remote(0, 5), &detail))),
            Fence::Delete
        );
        assert_eq!(
            delete_fence(&d, &o, Some((&remote(7, 7), &detail))),
            Fence::NotOwned,
            "replaced out of band: someone else's"
        );
        assert_eq!(
            delete_fence(&d, &in_flight, Some((&remote(11, 11), &detail))),
            Fence::Delete,
            "our own ambiguous create"
        );
        assert_eq!(
            delete_fence(&d, &in_flight, Some((&remote(1, 1), &detail))),
            Fence::NotOwned,
            "older than our request"
        );
        assert_eq!(
            delete_fence(&d, &Recorded::default(), Some((&remote(1, 1), &detail))),
            Fence::NotOwned
        );
    }
}
