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
    /// `batch/v1` CronJob: its job template carries the hash, so its next Jobs run the new value; Jobs already
    /// running are left alone.
    CronJob,
    /// Argo Rollouts' `argoproj.io/v1alpha1` Rollout (its `spec.template`; rolled out by its own controller, per
    /// its strategy).
    Rollout,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::CronJob,
        WorkloadKind::Rollout,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Rollout => "Rollout",
        }
    }

    /// The API group/version it is served at.
    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => "apps/v1",
            WorkloadKind::CronJob => "batch/v1",
            WorkloadKind::Rollout => "argoproj.io/v1alpha1",
        }
    }

    /// The resource's plural name.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
            WorkloadKind::CronJob => "cronjobs",
            WorkloadKind::Rollout => "rollouts",
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
#[error("unsupported workload kind {0:?} (use Deployment, StatefulSet, DaemonSet, CronJob or Rollout)")]
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
