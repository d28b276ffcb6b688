//! keyward: a Kubernetes operator that makes a secrets service (Pulumi ESC first) the single source of truth
//! for the Secrets workloads consume. `docs/architecture.md` maps the modules.
#![forbid(unsafe_code)]

pub mod api;
pub mod authz;
pub mod cli;
pub mod consumers;
pub mod controller;
pub mod credentials;
pub mod database;
pub mod duration;
pub mod esc;
pub mod http;
pub mod ops;
pub mod push;
pub mod render;
pub mod retry;
pub mod rotation;
pub mod secret;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod yaml;

pub use tls::install_crypto_provider;
