//! Pulumi ESC: its vocabulary and its REST API, as keyward uses them (the official spec is
//! `../shared/reference/pulumi-esc-openapi.yaml`). Environments (`EnvRef`), property paths (`path`), the open
//! answer read as one snapshot (`Snapshot`), definitions edited one value at a time (`definition`), and the
//! HTTP client (`EscClient`), and why a call failed (`EscError`). Nothing here knows about Kubernetes or
//! ManagedSecrets. The files import one another directly; this one only names them.

pub mod client;
pub mod definition;
pub mod env;
pub mod error;
pub mod path;
pub mod snapshot;

pub use client::{Definition, EscClient, EscConfig, RequestObserver, RotateOutcome};
pub use env::EnvRef;
pub use error::EscError;
pub use path::{PathError, PropertyPath, Segment};
pub use snapshot::Snapshot;
