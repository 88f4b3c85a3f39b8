//! Prometheus metrics (`prometheus-client`): reconciles and their latency, OOS calls by action
//! and error code, retries, throttled waits, remote writes, status writes, inventory size,
//! leadership, and one readiness gauge per object. Labels are bounded: actions and error codes
//! come from fixed lists (anything else is `Other`), objects only label their own gauge.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use oos_client::client::CallEvent;
use oos_client::error::OosError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub action: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

/// The OOS actions this operator calls (others would be a bug; they are reported as `Other`).
const ACTIONS: &[&str] = &[
    "CreateChatConfiguration",
    "UpdateChatConfiguration",
    "GetChatConfiguration",
    "ListChatConfigurations",
    "DeleteChatConfiguration",
];

/// Error codes worth their own label value; every other code is `Other`.
const CODES: &[&str] = &[
    "EntityNotExists.ChatConfiguration",
    "EntityAlreadyExists.ChatConfiguration",
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "ServiceUnavailable",
    "InternalError",
    "InvalidParameter",
    "Forbidden.RAM",
    "NoPermission",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "InvalidSecurityToken.Expired",
    "IncompleteSignature",
    "InvalidTimeStamp.Expired",
    "SignatureNonceUsed",
];

fn bounded<'a>(value: &'a str, allowed: &[&'static str]) -> &'a str {
    if allowed.contains(&value) {
        value
    } else {
        "Other"
    }
}

/// The `code` label of a call's outcome.
pub fn outcome_code(error: Option<&OosError>) -> &str {
    match error {
        None => "OK",
        Some(OosError::Api { code, .. }) => bounded(code, CODES),
        Some(OosError::Timeout) => "Timeout",
        Some(OosError::Transport(_)) => "Transport",
        Some(OosError::Credentials(_)) => "Credentials",
        Some(OosError::Decode(_)) => "Decode",
        Some(OosError::InvalidRequest(_) | OosError::Config(_)) => "ClientError",
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub remote_writes: Family<ActionLabel, Counter>,
    pub status_writes: Counter,
    pub oos_calls: Family<CallLabels, Counter>,
    pub oos_retries: Family<ActionLabel, Counter>,
    pub oos_throttled_wait: Family<ActionLabel, Counter<f64, AtomicU64>>,
    pub inventory_size: Gauge,
    pub leader: Gauge,
    pub ready: Family<ObjectLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oos_chat_operator");
        let m = Self {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            remote_writes: Family::default(),
            status_writes: Counter::default(),
            oos_calls: Family::default(),
            oos_retries: Family::default(),
            oos_throttled_wait: Family::default(),
            inventory_size: Gauge::default(),
            leader: Gauge::default(),
            ready: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles by result (ok or the error's condition reason)",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile latency",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "remote_writes",
            "Successful OOS writes by action",
            m.remote_writes.clone(),
        );
        registry.register(
            "status_writes",
            "ChatConfiguration status writes",
            m.status_writes.clone(),
        );
        registry.register(
            "oos_calls",
            "OOS calls (after retries) by action and outcome code (OK, an error code, Timeout, Transport, Credentials, Other)",
            m.oos_calls.clone(),
        );
        registry.register(
            "oos_retries",
            "OOS attempts beyond the first, by action",
            m.oos_retries.clone(),
        );
        registry.register(
            "oos_throttled_wait_seconds",
            "Time OOS calls waited because OOS throttled, by action",
            m.oos_throttled_wait.clone(),
        );
        registry.register(
            "inventory_configurations",
            "Remote chat configurations in the inventory snapshots",
            m.inventory_size.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader lease (or leader election is off)",
            m.leader.clone(),
        );
        registry.register(
            "ready",
            "1 when the ChatConfiguration is Ready, 0 otherwise",
            m.ready.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, elapsed: Duration, error_reason: Option<&str>) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        let result = error_reason.unwrap_or("ok").to_string();
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn remote_write(&self, action: &str) {
        self.remote_writes
            .get_or_create(&ActionLabel {
                action: bounded(action, ACTIONS).to_string(),
            })
            .inc();
    }

    /// The client's per-call hook.
    pub fn observe_call(&self, call: &CallEvent<'_>) {
        let action = bounded(call.action, ACTIONS).to_string();
        self.oos_calls
            .get_or_create(&CallLabels {
                action: action.clone(),
                code: outcome_code(call.error).to_string(),
            })
            .inc();
        let label = ActionLabel { action };
        if call.attempts > 1 {
            self.oos_retries
                .get_or_create(&label)
                .inc_by(u64::from(call.attempts - 1));
        }
        if !call.throttled_wait.is_zero() {
            self.oos_throttled_wait
                .get_or_create(&label)
                .inc_by(call.throttled_wait.as_secs_f64());
        }
    }

    pub fn set_ready(&self, namespace: &str, name: &str, ready: bool) {
        self.ready
            .get_or_create(&ObjectLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .set(i64::from(ready));
    }

    /// A deleted object's gauge goes away with it (bounded series).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.ready.remove(&ObjectLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_calls_counted() {
        let m = Metrics::default();
        let err = OosError::Api {
            status: 400,
            code: "Some.NewCode".into(),
            message: String::new(),
            request_id: None,
            host_id: None,
            recommend: None,
            retry_after: None,
        };
        m.observe_call(&CallEvent {
            action: "CreateChatConfiguration",
            region: "cn-hangzhou",
            attempts: 3,
            elapsed: Duration::from_millis(5),
            throttled_wait: Duration::from_millis(1500),
            request_id: Some("R"),
            error: Some(&err),
        });
        m.observe_call(&CallEvent {
            action: "Whatever",
            region: "cn-hangzhou",
            attempts: 1,
            elapsed: Duration::from_millis(5),
            throttled_wait: Duration::ZERO,
            request_id: None,
            error: None,
        });
        m.set_ready("ns", "a", true);
        m.set_ready("ns", "b", false);
        m.forget("ns", "b");
        let text = m.encode();
        assert!(text.contains(
            r#"oos_chat_operator_oos_calls_total{action="CreateChatConfiguration",code="Other"} 1"#
        ));
        assert!(text.contains(r#"oos_chat_operator_oos_calls_total{action="Other",code="OK"} 1"#));
        assert!(text.contains(
            r#"oos_chat_operator_oos_retries_total{action="CreateChatConfiguration"} 2"#
        ));
        assert!(text.contains(
            r#"oos_chat_operator_oos_throttled_wait_seconds_total{action="CreateChatConfiguration"} 1.5"#
        ));
        assert!(text.contains(r#"oos_chat_operator_ready{namespace="ns",name="a"} 1"#));
        assert!(
            !text.contains(r#"name="b""#),
            "deleted objects leave no series"
        );
        assert!(!text.contains("Some.NewCode"));
    }
}
