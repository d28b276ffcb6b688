//! keyward's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/health/secrets`, and the ESC webhook
//! receiver `POST /webhooks/esc`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::api::conditions::{READY, ROTATION_OVERDUE};
use crate::api::{ManagedSecret, REFRESH_NOW_ANNOTATION, STAMPED_REFRESH_PREFIX};
use crate::esc::EnvRef;
use crate::telemetry::audit::{Action, Audit, Entry};
use crate::telemetry::metrics::{ManagedView, Metrics, WebhookLabels};

/// The header Pulumi Cloud signs webhook deliveries with: hex HMAC-SHA256 of the body under the shared secret.
pub const SIGNATURE_HEADER: &str = "pulumi-webhook-signature";

/// What the endpoints report on and act with.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the controller's caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The ManagedSecrets the controller sees.
    pub view: ManagedView,
    /// For the webhook receiver: it asks the ManagedSecrets of an environment to refresh.
    pub client: Option<Client>,
    /// The namespace keyward watches (namespaced mode), or all.
    pub watch_namespace: Option<String>,
    /// The webhook's shared secret; without one the receiver refuses every call.
    pub webhook_secret: Option<Zeroizing<Vec<u8>>>,
    pub audit: Arc<Audit>,
}

async fn metrics(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
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

async fn readyz(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

/// Counts by condition, and the overdue and failing ManagedSecrets by name. Conditions' messages name paths
/// and reasons, never values.
async fn health_secrets(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
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
                overdue.push(serde_json::json!({"name": name, "reason": c.reason, "message": c.message}));
            }
            if c.type_ == READY && c.status == "False" {
                failing.push(serde_json::json!({"name": name, "reason": c.reason, "message": c.message}));
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

/// The environment a webhook delivery is about. Accepts `"environment": "org/project/env"`, or the parts as
/// `organization` (a name, or an object with `githubLogin`/`name`), `projectName`/`project` and
/// `environmentName`/`envName`/`environment`.
fn environment_of(payload: &serde_json::Value) -> Option<EnvRef> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let field = |names: &[&str]| names.iter().find_map(|n| payload.get(*n).and_then(text));
    if let Some(full) = field(&["environment"]).filter(|e| e.contains('/')) {
        return EnvRef::parse(&full).ok();
    }
    let org = payload
        .get("organization")
        .and_then(|o| text(o).or_else(|| ["githubLogin", "name"].iter().find_map(|k| o.get(*k).and_then(text))))?;
    let env = field(&["environmentName", "envName", "environment"])?;
    let project = field(&["projectName", "project"]).unwrap_or_else(|| "default".into());
    EnvRef::parse(&format!("{org}/{project}/{env}")).ok()
}

fn signature_ok(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v.trim().trim_start_matches("sha256=")).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig).is_ok()
}

/// `POST /webhooks/esc`: an ESC environment changed; every ManagedSecret reading it refreshes at once (through
/// a stamped `keyward.dev/refresh-now`, so that any replica can take the call and one ESC open serves them all).
async fn esc_webhook(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let count = |result: &'static str| {
        s.metrics
            .webhook_requests
            .get_or_create(&WebhookLabels { result })
            .inc()
    };
    let ip = peer.ip().to_string();
    let refuse = |result: &'static str, status: StatusCode, message: &str| {
        count(result);
        s.audit.record(&Entry {
            action: Action::AccessDenied,
            namespace: "-",
            name: "esc-webhook",
            accessor: Some("esc-webhook"),
            source_ip: Some(&ip),
            success: false,
            reason: Some(result),
        });
        tracing::warn!(source_ip = %ip, result, "ESC webhook call refused");
        json(status, serde_json::json!({"error": message}))
    };
    let authentic = s
        .webhook_secret
        .as_ref()
        .is_some_and(|k| signature_ok(k, &headers, &body));
    if !authentic {
        return refuse(
            "unauthenticated",
            StatusCode::UNAUTHORIZED,
            "missing or wrong Pulumi-Webhook-Signature",
        );
    }
    let Some(env) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .as_ref()
        .and_then(environment_of)
    else {
        return refuse(
            "malformed",
            StatusCode::BAD_REQUEST,
            "the payload names no ESC environment",
        );
    };
    let Some(client) = &s.client else {
        count("failed");
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "not ready"}),
        );
    };
    match refresh_environment(client, s.watch_namespace.as_deref(), &env).await {
        Ok(n) => {
            count("accepted");
            tracing::info!(environment = %env, managed_secrets = n, source_ip = %ip, "ESC webhook: refreshing");
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"environment": env.to_string(), "refreshing": n}),
            )
        }
        Err(e) => {
            count("failed");
            tracing::warn!(environment = %env, error = %e, "ESC webhook: asking for refreshes failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "could not reach the API server"}),
            )
        }
    }
}

/// Stamps `keyward.dev/refresh-now` on every ManagedSecret that reads `env`; returns how many.
async fn refresh_environment(client: &Client, namespace: Option<&str>, env: &EnvRef) -> Result<usize, kube::Error> {
    let api: Api<ManagedSecret> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let stamp = format!("{STAMPED_REFRESH_PREFIX}{}", jiff::Timestamp::now());
    let mut n = 0;
    for ms in api.list(&ListParams::default()).await? {
        let reads = ms
            .spec
            .source
            .esc
            .as_ref()
            .and_then(|e| EnvRef::parse(&e.environment).ok())
            .is_some_and(|e| e == *env);
        if !reads {
            continue;
        }
        let ns = ms.namespace().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_NOW_ANNOTATION: stamp}}});
        Api::<ManagedSecret>::namespaced(client.clone(), &ns)
            .patch(&ms.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        n += 1;
    }
    Ok(n)
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: HttpState) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/health/secrets", get(health_secrets))
        .route("/webhooks/esc", post(esc_webhook))
        .with_state(Arc::new(state));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz, /health/secrets, /webhooks/esc");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shapes_name_the_environment() {
        let e = |v: serde_json::Value| environment_of(&v).map(|e| e.to_string());
        assert_eq!(
            e(serde_json::json!({"environment": "acme/app/prod"})).as_deref(),
            Some("acme/app/prod")
        );
        assert_eq!(
            e(serde_json::json!({"organization": {"githubLogin": "acme"}, "projectName": "app", "environmentName": "prod"})).as_deref(),
            Some("acme/app/prod")
        );
        assert_eq!(
            e(serde_json::json!({"organization": "acme", "envName": "prod"})).as_deref(),
            Some("acme/default/prod")
        );
        assert_eq!(e(serde_json::json!({"organization": "acme"})), None);
        assert_eq!(e(serde_json::json!({"environment": "a/b/c/d"})), None);
        assert_eq!(e(serde_json::json!([1, 2])), None);
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"environment":"acme/app/prod"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"shared").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert!(signature_ok(b"shared", &headers, body));
        assert!(!signature_ok(b"other", &headers, body));
        assert!(!signature_ok(b"shared", &headers, b"{}"));
        assert!(!signature_ok(b"shared", &HeaderMap::new(), body));
        headers.insert(SIGNATURE_HEADER, "not-hex".parse().unwrap());
        assert!(!signature_ok(b"shared", &headers, body));
    }
}
