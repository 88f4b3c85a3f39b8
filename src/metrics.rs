//! Prometheus metrics: reconcile outcomes and latency, remote writes, status writes.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub remote_writes: Family<ActionLabel, Counter>,
    pub status_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oos_chat_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let remote_writes = Family::<ActionLabel, Counter>::default();
        let status_writes = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok or error reason)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile latency",
            reconcile_duration.clone(),
        );
        registry.register(
            "remote_writes",
            "Successful OOS write calls by action",
            remote_writes.clone(),
        );
        registry.register(
            "status_writes",
            "ChatConfiguration status writes",
            status_writes.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            remote_writes,
            status_writes,
        }
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
                action: action.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String cannot fail");
        out
    }
}
