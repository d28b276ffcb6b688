//! The ESC webhook receiver, `POST /webhooks/esc`, on a port of its own (the only one that faces Pulumi
//! Cloud). A delivery is authentic when its `Pulumi-Webhook-Signature` is the HMAC-SHA256 of the body under the
//! shared secret (Pulumi's webhook docs); it is fresh when its body's signature and its `Pulumi-Webhook-ID`
//! have not been seen within the replay window, and — when the payload carries a timestamp — when that is
//! within five minutes of now. A fresh, authentic delivery stamps `keyward.dev/refresh-now` on every
//! ManagedSecret reading the environment, so that any replica can take it and one ESC open serves them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use hmac::{Hmac, Mac};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use sha2::Sha256;

use super::health::json;
use crate::api::{ManagedSecret, REFRESH_NOW_ANNOTATION, STAMPED_REFRESH_PREFIX};
use crate::credentials::Credential;
use crate::esc::EnvRef;
use crate::telemetry::audit::{Action, Audit, Entry};
use crate::telemetry::metrics::{ManagedView, Metrics, WebhookLabels};

/// The header Pulumi Cloud signs webhook deliveries with: hex HMAC-SHA256 of the body under the shared secret.
pub const SIGNATURE_HEADER: &str = "pulumi-webhook-signature";
/// The header naming one delivery (Pulumi's delivery logs show it).
pub const DELIVERY_HEADER: &str = "pulumi-webhook-id";
/// How far a payload's own timestamp may be from now.
const TIMESTAMP_WINDOW: Duration = Duration::from_secs(300);
/// The most deliveries remembered; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

/// What the receiver acts with.
pub struct WebhookState {
    pub metrics: Arc<Metrics>,
    /// The ManagedSecrets the controller sees (which read the environment).
    pub view: ManagedView,
    /// For stamping the refresh requests.
    pub client: Option<Client>,
    /// The namespace keyward watches (namespaced mode), or all.
    pub watch_namespace: Option<String>,
    /// The shared secret, read on every delivery (so a reloaded one takes effect at once); without one every
    /// call is refused.
    pub secret: Credential,
    pub audit: Arc<Audit>,
    /// Deliveries seen within the window.
    pub replays: ReplayGuard,
}

/// The receiver's route.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/esc", post(esc_webhook))
        .with_state(Arc::new(state))
}

/// Remembers deliveries (by their signature, which covers the whole body, and by their delivery id) for a
/// window, so that a recorded delivery sent again is refused.
pub struct ReplayGuard {
    window: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        ReplayGuard {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records the delivery; false when any of its keys was seen within the window.
    fn first_time(&self, keys: &[String]) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < self.window);
        if keys.iter().any(|k| seen.contains_key(k)) {
            return false;
        }
        if seen.len() + keys.len() > MAX_REMEMBERED {
            // Past the bound: forget the oldest (a flood of distinct signed deliveries needs the secret).
            let mut ages: Vec<(Instant, String)> = seen.iter().map(|(k, at)| (*at, k.clone())).collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(keys.len()) {
                seen.remove(&k);
            }
        }
        for k in keys {
            seen.insert(k.clone(), now);
        }
        true
    }

    /// Forgets a delivery that was not acted on, so that the sender's retry of it is taken.
    fn forget(&self, keys: &[String]) {
        if let Ok(mut seen) = self.seen.lock() {
            for k in keys {
                seen.remove(k);
            }
        }
    }
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

/// Why a delivery is refused before anything is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No shared secret is configured, or the signature is missing or wrong.
    Unauthenticated,
    /// The body is not a JSON payload that names an ESC environment.
    Malformed,
    /// The payload carries a timestamp more than five minutes from now.
    Stale,
}

impl Refusal {
    /// The `result` label of the request counter, and the audit entry's reason.
    pub fn result(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Malformed => "malformed",
            Refusal::Stale => "stale",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Malformed | Refusal::Stale => StatusCode::BAD_REQUEST,
        }
    }

    /// What the sender is told (nothing about the body or the secret).
    fn message(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "missing or wrong Pulumi-Webhook-Signature",
            Refusal::Malformed => "the payload names no ESC environment",
            Refusal::Stale => "the payload's timestamp is more than five minutes from now",
        }
    }
}

/// An authentic delivery with a payload the receiver can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The environment whose ManagedSecrets refresh.
    pub environment: EnvRef,
    /// What the replay guard remembers the delivery by.
    pub keys: Vec<String>,
}

/// Everything the receiver checks of a delivery before the replay guard and the API server: the signature
/// under `secret` (none refuses every call), the environment the body names, and the payload's timestamp, if
/// it has one, against `now`. Separate from the handler, and free of I/O and clocks, so that tests and the
/// fuzz targets (`fuzz/`) can feed it any headers and body.
pub fn read_delivery(
    secret: Option<&[u8]>,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Delivery, Refusal> {
    if !secret.is_some_and(|k| signature_ok(k, headers, body)) {
        return Err(Refusal::Unauthenticated);
    }
    let payload = serde_json::from_slice::<serde_json::Value>(body).map_err(|_| Refusal::Malformed)?;
    let environment = environment_of(&payload).ok_or(Refusal::Malformed)?;
    if timestamp_of(&payload).is_some_and(|at| !recent(at, now)) {
        return Err(Refusal::Stale);
    }
    Ok(Delivery {
        environment,
        keys: delivery_keys(headers),
    })
}

/// `POST /webhooks/esc`: an ESC environment changed; every ManagedSecret reading it refreshes at once.
async fn esc_webhook(
    State(s): State<Arc<WebhookState>>,
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
    let secret = s.secret.bytes();
    let secret = secret.as_ref().map(|k| k.as_slice());
    let Delivery { environment: env, keys } = match read_delivery(secret, &headers, &body, jiff::Timestamp::now()) {
        Ok(delivery) => delivery,
        Err(refusal) => return refuse(refusal.result(), refusal.status(), refusal.message()),
    };
    if !s.replays.first_time(&keys) {
        return refuse("replayed", StatusCode::CONFLICT, "this delivery was received before");
    }
    let Some(client) = &s.client else {
        s.replays.forget(&keys);
        count("failed");
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "not ready"}),
        );
    };
    match refresh_environment(client, &s.view, s.watch_namespace.as_deref(), &env).await {
        Ok(n) => {
            count("accepted");
            tracing::info!(environment = %env, managed_secrets = n, source_ip = %ip, "ESC webhook: refreshing");
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"environment": env.to_string(), "refreshing": n}),
            )
        }
        Err(e) => {
            s.replays.forget(&keys);
            count("failed");
            tracing::warn!(environment = %env, error = %e, "ESC webhook: asking for refreshes failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "could not reach the API server"}),
            )
        }
    }
}

/// What identifies a delivery: its signature (so the same body replayed with another id is caught) and the
/// delivery id Pulumi gives it.
fn delivery_keys(headers: &HeaderMap) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let mut keys = Vec::new();
    if let Some(sig) = header(SIGNATURE_HEADER) {
        keys.push(format!(
            "signature:{}",
            sig.trim_start_matches("sha256=").to_ascii_lowercase()
        ));
    }
    if let Some(id) = header(DELIVERY_HEADER).filter(|id| !id.is_empty()) {
        keys.push(format!("delivery:{id}"));
    }
    keys
}

/// A timestamp the payload carries (`timestamp`, `createdAt` or `time`; RFC 3339, or Unix seconds or
/// milliseconds). Pulumi's environment events carry none; other senders may.
fn timestamp_of(payload: &serde_json::Value) -> Option<jiff::Timestamp> {
    let v = ["timestamp", "createdAt", "time"]
        .iter()
        .find_map(|k| payload.get(*k))?;
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => {
            let n = n.as_i64()?;
            // Beyond year 33658 in seconds means milliseconds.
            if n > 1_000_000_000_000 {
                jiff::Timestamp::from_millisecond(n).ok()
            } else {
                jiff::Timestamp::from_second(n).ok()
            }
        }
        _ => None,
    }
}

fn recent(at: jiff::Timestamp, now: jiff::Timestamp) -> bool {
    let off = now.duration_since(at).unsigned_abs();
    off <= TIMESTAMP_WINDOW
}

/// Stamps `keyward.dev/refresh-now` on every ManagedSecret that reads `env` (found in the cache, or by a list
/// before the cache runs); returns how many.
async fn refresh_environment(
    client: &Client,
    view: &ManagedView,
    namespace: Option<&str>,
    env: &EnvRef,
) -> Result<usize, kube::Error> {
    let objects: Vec<ManagedSecret> = match view.get() {
        Some(store) => store.state().iter().map(|ms| (**ms).clone()).collect(),
        None => {
            let api: Api<ManagedSecret> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            api.list(&ListParams::default()).await?.items
        }
    };
    let stamp = format!("{STAMPED_REFRESH_PREFIX}{}", jiff::Timestamp::now());
    let mut n = 0;
    for ms in objects {
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
    fn deliveries_are_remembered_by_signature_and_id() {
        let guard = ReplayGuard::new(Duration::from_secs(60));
        let headers = |sig: &str, id: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
            if let Some(id) = id {
                h.insert(DELIVERY_HEADER, id.parse().unwrap());
            }
            h
        };
        assert!(guard.first_time(&delivery_keys(&headers("aa", Some("d1")))));
        // The same body again, whatever id it claims.
        assert!(!guard.first_time(&delivery_keys(&headers("AA", Some("d2")))));
        assert!(!guard.first_time(&delivery_keys(&headers("sha256=aa", None))));
        // The same delivery id with another body.
        assert!(!guard.first_time(&delivery_keys(&headers("bb", Some("d1")))));
        assert!(guard.first_time(&delivery_keys(&headers("cc", Some("d3")))));
        // A delivery that was not acted on (the API server was unreachable) is taken when retried.
        let failed = delivery_keys(&headers("ee", Some("d5")));
        assert!(guard.first_time(&failed));
        guard.forget(&failed);
        assert!(guard.first_time(&failed));
        let short = ReplayGuard::new(Duration::ZERO);
        assert!(short.first_time(&delivery_keys(&headers("aa", None))));
        assert!(
            short.first_time(&delivery_keys(&headers("aa", None))),
            "forgotten after the window"
        );
    }

    #[test]
    fn payload_timestamps_must_be_recent() {
        let now = jiff::Timestamp::now();
        let at = |v: serde_json::Value| timestamp_of(&v).map(|t| recent(t, now));
        assert_eq!(at(serde_json::json!({"timestamp": now.to_string()})), Some(true));
        assert_eq!(at(serde_json::json!({"createdAt": now.as_second()})), Some(true));
        assert_eq!(at(serde_json::json!({"time": now.as_millisecond()})), Some(true));
        let old = now - jiff::SignedDuration::from_secs(3600);
        assert_eq!(at(serde_json::json!({"timestamp": old.to_string()})), Some(false));
        assert_eq!(at(serde_json::json!({"environmentName": "prod"})), None);
    }

    #[test]
    fn deliveries_are_read_check_by_check() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let signed = |body: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"shared").unwrap();
            mac.update(body);
            let mut h = HeaderMap::new();
            h.insert(
                SIGNATURE_HEADER,
                hex::encode(mac.finalize().into_bytes()).parse().unwrap(),
            );
            h.insert(DELIVERY_HEADER, "d1".parse().unwrap());
            h
        };
        let read = |body: &[u8]| read_delivery(Some(b"shared"), &signed(body), body, now);
        let body = br#"{"environment":"acme/app/prod","timestamp":"2026-01-01T00:01:00Z"}"#;
        let delivery = read(body).unwrap();
        assert_eq!(delivery.environment.to_string(), "acme/app/prod");
        assert_eq!(delivery.keys.len(), 2);
        assert_eq!(
            read_delivery(None, &signed(body), body, now),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(read(b"not json"), Err(Refusal::Malformed));
        assert_eq!(read(br#"{"environment":"acme"}"#), Err(Refusal::Malformed));
        assert_eq!(
            read(br#"{"environment":"acme/app/prod","time":1}"#),
            Err(Refusal::Stale)
        );
        assert_eq!(Refusal::Stale.result(), "stale");
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
