//! The operator's everyday commands for people and pipelines: `import` (ManagedSecrets from the team's secret
//! map), `report` (rotation compliance), `rotate` (an emergency rotation, followed step by step) and `status`
//! (one ManagedSecret, for humans), and `version`. None of them ever reads a Secret's data. The files import one another
//! directly; this one only names them.

pub mod categories;
pub mod client;
pub mod error;
pub mod eso;
pub mod human;
pub mod import;
pub mod report;
pub mod rotate_now;
pub mod secret_map;
pub mod status;
pub mod validate;
pub mod version;

pub use error::{OpsError, Problem};
