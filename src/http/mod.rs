//! keyward's HTTP endpoints, on two ports: the operations port (`/metrics`, `/healthz`, `/readyz`,
//! `/health/secrets`; for probes and monitoring) and the webhook port (`POST /webhooks/esc`; the one that faces
//! Pulumi Cloud), so that a NetworkPolicy can open each to its own callers.

pub mod health;
pub mod webhook;

use std::net::SocketAddr;

use axum::Router;

/// Serves `router` on `addr` until the process ends; `what` names it in the log.
pub async fn serve(addr: SocketAddr, router: Router, what: &'static str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving {what}");
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await
}
