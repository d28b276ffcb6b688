//! Pushing values to the places outside Kubernetes that consume them (GitHub Actions secrets).

pub mod error;
pub mod github;

pub use error::PushError;
