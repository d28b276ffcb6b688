//! keyward: a Kubernetes operator that makes a secrets service (Pulumi ESC first) the single source of truth
//! for the Secrets workloads consume.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod consumers;
pub mod controller;
#[cfg(feature = "dev")]
pub mod dev;
pub mod duration;
pub mod http;
pub mod ops;
pub mod push;
pub mod rotation;
pub mod source;
pub mod telemetry;
// Parts only the dev ESC server uses are unused in the operator-only build.
#[cfg_attr(not(feature = "dev"), allow(dead_code))]
mod yaml;

/// Installs ring as rustls' process-wide crypto provider. kube and reqwest must agree on one provider; call
/// this first thing in every binary and test.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
