//! TLS set-up shared by every client in the process.

/// Installs ring as rustls' process-wide crypto provider. kube and reqwest must agree on one provider; call
/// this first thing in every binary and test.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
