//! Prometheus metrics. Label values are bounded: ManagedSecret names, fixed reasons and endpoints — never
//! values or free text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    /// `namespace/name` of the ManagedSecret.
    pub secret_name: String,
    /// `success`, `failure` or `denied`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    /// `generate`, `esc` or `notify`.
    pub strategy: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Every metric keyward exports.
pub struct Metrics {
    pub registry: Registry,
    pub secret_access: Family<AccessLabels, Counter>,
    pub sync_failures: Family<ReasonLabels, Counter>,
    pub secrets_written: Counter,
    pub reconcile_duration: Histogram,
    pub rotations: Family<RotationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let secret_access = Family::<AccessLabels, Counter>::default();
        registry.register(
            "secret_access",
            "Reads of a secret's source, by ManagedSecret and outcome",
            secret_access.clone(),
        );
        let sync_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "keyward_sync_failures",
            "Failed syncs, by condition reason",
            sync_failures.clone(),
        );
        let secrets_written = Counter::default();
        registry.register(
            "keyward_secrets_written",
            "Target Secrets created or updated",
            secrets_written.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "keyward_reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let rotations = Family::<RotationLabels, Counter>::default();
        registry.register(
            "keyward_rotations",
            "Rotations attempted, by strategy and result",
            rotations.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("keyward_build_info", "keyward's version", build);
        Metrics {
            registry,
            secret_access,
            sync_failures,
            secrets_written,
            reconcile_duration,
            rotations,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
