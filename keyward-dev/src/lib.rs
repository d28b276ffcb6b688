//! Developer tools, shipped in the `keyward-dev` binary and used by the tests and `make demo`; never part of
//! the operator image: a local Kubernetes control plane built from pinned sources, a local Pulumi ESC server,
//! and a local GitHub server for Actions secrets.

pub mod cli;
pub mod control_plane;
pub mod error;
pub mod esc_server;
pub mod github_server;
pub mod pki;
pub mod serve;
pub mod tools;

pub use error::DevError;
