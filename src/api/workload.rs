//! The kinds of workload keyward restarts: the API names them (`consumers.workloads[].kind`,
//! `status.consumers[].kind`) and the consumer index and planner key on them.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kinds of workload keyward restarts (by changing their pod template).
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind that keyward does not restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported workload kind {0:?} (use Deployment, StatefulSet or DaemonSet)")]
pub struct UnknownKind(pub String);

impl UnknownKind {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        "unsupported_kind"
    }
}

impl FromStr for WorkloadKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}
