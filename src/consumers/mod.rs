//! Consumers: which workloads use which Secrets (`discovery`, `index`), the hash that restarts them (`hash`),
//! when restarts may start (`planner`, `window`), and every restart decision (`restarts`). Pure logic; the
//! controller's restart task does the watching and patching.

pub mod discovery;
pub mod hash;
pub mod index;
pub mod planner;
pub mod restarts;
pub mod window;

pub use discovery::{
    KeyRefs, RESTART_ANNOTATION, UnknownKind, WorkloadKind, WorkloadRef, referenced_secrets, restart_opted_out,
    secret_references,
};
pub use hash::{SECRETS_HASH_ANNOTATION, secrets_hash};
pub use index::ConsumerIndex;
pub use planner::{
    Desired, InFlightRestart, PendingRestart, Plan, Planner, PlannerConfig, PlannerError, WorkloadStatus, parse_windows,
};
pub use restarts::{Managed, Observation, RestartResult, Restarts, Rollout, Step};
pub use window::{RestartWindow, RestartWindowSpec, WindowError};
