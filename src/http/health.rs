//! The operations port: `/metrics`, `/healthz`, `/readyz` and `/health/secrets`. It names objects and reasons,
//! never tenants' free text (condition messages) nor values; the chart's NetworkPolicy lets only the monitoring
//! namespaces reach it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::ResourceExt;

use crate::api::conditions::{READY, ROTATION_OVERDUE};
use crate::telemetry::metrics::{ManagedView, Metrics};

/// What the operations endpoints report on.
pub struct HealthState {
    pub metrics: Arc<Metrics>,
    /// Set once the controller's caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The ManagedSecrets the controller sees.
    pub view: ManagedView,
}

/// The operations routes.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health/secrets", get(health_secrets))
        .with_state(Arc::new(state))
}

async fn metrics(State(s): State<Arc<HealthState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<Arc<HealthState>>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

pub(super) fn json(
    status: StatusCode,
    body: serde_json::Value,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

/// Counts by condition, and the overdue and failing ManagedSecrets by name and reason. Condition messages are
/// left out: tenants can put text into them (paths, names), and this endpoint is read by other people.
async fn health_secrets(State(s): State<Arc<HealthState>>) -> impl IntoResponse {
    let Some(store) = s.view.get() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "not ready"}),
        );
    };
    let objects = store.state();
    let mut by_condition: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let (mut overdue, mut failing) = (Vec::new(), Vec::new());
    for ms in &objects {
        let name = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
        let conditions = ms
            .status
            .as_ref()
            .map(|st| st.conditions.as_slice())
            .unwrap_or_default();
        for c in conditions {
            *by_condition
                .entry(c.type_.clone())
                .or_default()
                .entry(c.status.clone())
                .or_default() += 1;
            if c.type_ == ROTATION_OVERDUE && c.status == "True" {
                overdue.push(serde_json::json!({"name": name, "reason": c.reason}));
            }
            if c.type_ == READY && c.status == "False" {
                failing.push(serde_json::json!({"name": name, "reason": c.reason}));
            }
        }
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "total": objects.len(),
            "conditions": by_condition,
            "overdue": overdue,
            "failing": failing,
        }),
    )
}
