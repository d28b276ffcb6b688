//! Pushing values to the places outside Kubernetes that consume them (GitHub Actions secrets).

pub mod github;
