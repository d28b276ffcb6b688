//! Prometheus metrics. Label values are bounded: ManagedSecret names, fixed reasons and endpoints — never
//! values or free text.

use std::sync::{Arc, OnceLock};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::api::ManagedSecret;
use crate::api::conditions::{READY, ROTATION_OVERDUE};
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
pub struct EscRequestLabels {
    /// The ESC operation (`open`, `read`, `getETag`, `update`, `rotate`, ...).
    pub endpoint: &'static str,
    /// The HTTP status, or `error` when no answer came.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `success` (synced), `failure` (recorded in status: a condition says why) or `error` (status could not
    /// be written either; retried with backoff).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// `triggered`, `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `accepted`, `unauthenticated`, `malformed` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// The ManagedSecrets the controller sees, once it runs. Gauges about them are computed at scrape time, so
/// an age is always current and a deleted object leaves no stale series.
pub type ManagedView = Arc<OnceLock<Store<ManagedSecret>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    secret_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The per-secret gauges and the counts by state. Served by the leader alone: every replica keeps the same
/// cache, and a dashboard summing over replicas would count each secret once per replica.
#[derive(Debug)]
struct StateCollector {
    view: ManagedView,
    /// `keyward_leader`: 1 on the replica that writes.
    leader: Gauge,
}

fn condition_is(ms: &ManagedSecret, type_: &str, status: &str) -> bool {
    ms.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == status))
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.view.get() else {
            return Ok(());
        };
        if self.leader.get() != 1 {
            return Ok(());
        }
        let now = jiff::Timestamp::now();
        let objects = store.state();
        let mut ages = Vec::with_capacity(objects.len());
        let mut overdue = Vec::with_capacity(objects.len());
        let mut counts = [("ready", 0i64), ("failing", 0), ("pending", 0), ("overdue", 0)];
        for ms in &objects {
            let name = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
            let since = ms
                .status
                .as_ref()
                .and_then(|s| s.last_rotation_time.as_ref())
                .or(ms.metadata.creation_timestamp.as_ref())
                .map(|t| t.0);
            if let Some(since) = since {
                ages.push((name.clone(), crate::rotation::schedule::age_days(now, since)));
            }
            let is_overdue = condition_is(ms, ROTATION_OVERDUE, "True");
            overdue.push((name, i64::from(is_overdue)));
            let state = if condition_is(ms, READY, "True") {
                0
            } else if condition_is(ms, READY, "False") {
                1
            } else {
                2
            };
            counts[state].1 += 1;
            counts[3].1 += i64::from(is_overdue);
        }
        let mut family = encoder.encode_descriptor(
            "secret_rotation_age_days",
            "Days since the value last changed (or since the ManagedSecret was created)",
            None,
            MetricType::Gauge,
        )?;
        for (secret_name, age) in ages {
            ConstGauge::new(age).encode(family.encode_family(&SecretLabels { secret_name })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "keyward_rotation_overdue",
            "1 when the ManagedSecret's rotation is overdue",
            None,
            MetricType::Gauge,
        )?;
        for (secret_name, v) in overdue {
            ConstGauge::new(v).encode(family.encode_family(&SecretLabels { secret_name })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "keyward_managed_secrets",
            "ManagedSecrets by state: ready, failing (Ready=False), pending (no Ready yet), overdue",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in counts {
            ConstGauge::new(n).encode(family.encode_family(&StateLabels { state })?)?;
        }
        Ok(())
    }
}

/// Every metric keyward exports.
pub struct Metrics {
    pub registry: Registry,
    pub secret_access: Family<AccessLabels, Counter>,
    pub sync_failures: Family<ReasonLabels, Counter>,
    pub secrets_written: Counter,
    pub reconcile_duration: Histogram,
    /// `keyward_reconciles_total{result}`.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconciles running now (at most `--concurrency`).
    pub reconciles_in_flight: Gauge,
    /// ManagedSecrets a watch event (their own, or of a Secret they fill or read) asked to reconcile that
    /// have not started yet; refreshes waiting for their time are not counted.
    pub queue_depth: Gauge,
    pub rotations: Family<RotationLabels, Counter>,
    pub esc_requests: Family<EscRequestLabels, Counter>,
    pub restarts: Family<RestartLabels, Counter>,
    pub webhook_requests: Family<WebhookLabels, Counter>,
    /// 1 while this replica leads (writes), 0 while it follows.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, with the gauges computed from the ManagedSecrets in `view`.
    pub fn with_view(view: ManagedView) -> Self {
        let mut m = Metrics::new();
        let leader = m.leader.clone();
        m.registry.register_collector(Box::new(StateCollector { view, leader }));
        m
    }

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
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "keyward_reconciles",
            "Reconciles finished, by result",
            reconciles.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "keyward_reconciles_in_flight",
            "Reconciles running now",
            reconciles_in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "keyward_reconcile_queue_depth",
            "ManagedSecrets a change asked to reconcile that have not started yet",
            queue_depth.clone(),
        );
        let rotations = Family::<RotationLabels, Counter>::default();
        registry.register(
            "keyward_rotations",
            "Rotations attempted, by strategy and result",
            rotations.clone(),
        );
        let esc_requests = Family::<EscRequestLabels, Counter>::default();
        registry.register(
            "keyward_esc_requests",
            "Requests to ESC, by endpoint and HTTP status",
            esc_requests.clone(),
        );
        let restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "keyward_restarts",
            "Consumer restarts, by workload kind and result",
            restarts.clone(),
        );
        let webhook_requests = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "keyward_webhook_requests",
            "Calls to the ESC webhook receiver, by result",
            webhook_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "keyward_leader",
            "1 while this replica holds the leader lease and writes, 0 while it follows",
            leader.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("keyward_build_info", "keyward's version", build);
        registry.register_collector(Box::new(super::process::ProcessCollector));
        Metrics {
            registry,
            secret_access,
            sync_failures,
            secrets_written,
            reconcile_duration,
            reconciles,
            reconciles_in_flight,
            queue_depth,
            rotations,
            esc_requests,
            restarts,
            webhook_requests,
            leader,
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
