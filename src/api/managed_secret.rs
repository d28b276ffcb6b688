// kube's `printcolumn(...)` attributes repeat their keys by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret declared once: where its value comes from (a Pulumi ESC environment path or another Secret) and
/// the Kubernetes Secret keyward keeps equal to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ManagedSecret",
    namespaced,
    shortname = "msec",
    status = "ManagedSecretStatus",
    doc = "A secret declared once and kept in step with its source by keyward",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source.esc.environment"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(name = "Next Rotation", type_ = "date", json_path = ".status.nextRotationTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretSpec {
    /// Where the value comes from. Exactly one source must be set.
    pub source: SecretSource,

    /// The Secret keyward owns and keeps equal to the source.
    pub target: Target,

    /// How often the source is read again, as a Go-style duration (e.g. 30s, 15m, 1h). Default 1h, at least 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(h|m|s))+$') && duration(self) >= duration('10s')"
    ).message("refreshInterval must be a duration such as 30s, 15m or 1h (units h, m, s) and at least 10s"))]
    #[schemars(length(max = 32))]
    pub refresh_interval: Option<String>,

    /// What happens to the target Secret when this ManagedSecret is deleted. Default Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Which workloads are restarted when the value changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Consumers>,
}

/// The workloads that consume the target Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.policy) || self.policy != 'Explicit' || (has(self.workloads) && size(self.workloads) > 0)"
)
    .message("consumers.workloads must list at least one workload when policy is Explicit"))]
pub struct Consumers {
    /// Auto: every Deployment, StatefulSet and DaemonSet whose pod template references the Secret. Explicit:
    /// only `workloads`. None: nothing is restarted.
    #[serde(default)]
    pub policy: ConsumerPolicy,

    /// The workloads to restart under policy Explicit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub workloads: Vec<WorkloadSelector>,

    /// If a rollout after a value change fails, put the previous value back and roll again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_on_failure: bool,
}

/// How consumers are found.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsumerPolicy {
    #[default]
    Auto,
    Explicit,
    None,
}

/// A workload in the ManagedSecret's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    pub kind: WorkloadKindName,
    #[schemars(length(max = 253))]
    pub name: String,
}

/// The kinds of workload keyward restarts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKindName {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The one place a value is read from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.esc), has(self.kubernetesSecret)].filter(x, x).size() == 1")
    .message("exactly one source must be set: source.esc or source.kubernetesSecret"))]
pub struct SecretSource {
    /// A property of a Pulumi ESC environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esc: Option<EscSource>,

    /// A key of another Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_secret: Option<KubernetesSecretSource>,
}

/// A value in a Pulumi ESC environment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscSource {
    /// The environment as `org/project/env`, or `org/env` for project `default`.
    #[x_kube(validation = Rule::new(
        "self.matches('^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+$')"
    ).message("environment must be org/project/env or org/env (letters, digits, '.', '_', '-')"))]
    #[schemars(length(max = 256))]
    pub environment: String,

    /// The property path under `values:`, e.g. `sophia.ai.openai_api_key`, `db.hosts[0]` or `a["k.x"]`.
    /// A leading `values.` is accepted and ignored.
    #[x_kube(validation = Rule::new(
        r#"self.matches('^([A-Za-z_][A-Za-z0-9_-]*|\\[[0-9]+\\]|\\["([^"\\\\]|\\\\.)*"\\])(\\.[A-Za-z_][A-Za-z0-9_-]*|\\[[0-9]+\\]|\\["([^"\\\\]|\\\\.)*"\\])*$')"#
    ).message("path must be an ESC property path such as a.b, a.b[0] or a[\"k.x\"]"))]
    #[schemars(length(max = 1024))]
    pub path: String,

    /// Pin to a revision number or a revision tag. Empty or absent follows the latest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^([0-9]+|[A-Za-z0-9_.-]+)$')")
        .message("version must be a revision number or a tag name"))]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
}

/// A key of a Secret in the ManagedSecret's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSecretSource {
    /// The Secret's name.
    #[x_kube(validation = Rule::new(r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$') && self.size() <= 253")
        .message("name must be a valid Secret name (lowercase DNS subdomain)"))]
    #[schemars(length(max = 253))]
    pub name: String,

    /// The key in that Secret's data.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$') && self.size() <= 253")
        .message("key must be a valid Secret data key: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// The Secret keyward writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The Secret's name. Defaults to the ManagedSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$') && self.size() <= 253")
        .message("target.name must be a valid Secret name (lowercase DNS subdomain)"))]
    #[schemars(length(max = 253))]
    pub name: Option<String>,

    /// The data key the value is stored under.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$') && self.size() <= 253")
        .message("target.key must be a valid Secret data key: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 253))]
    pub key: String,

    /// The Secret's type. Default Opaque.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What happens to the target Secret when its ManagedSecret is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// The Secret is deleted with the ManagedSecret (through its owner reference).
    #[default]
    Delete,
    /// The Secret stays; keyward lets go of it.
    Retain,
}

/// What keyward last did and saw. Never holds a secret value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Synced and the other conditions, in the standard shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The source revision and a keyed hash of the value last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,

    /// When the target Secret last matched the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// The value of the `keyward.dev/refresh-now` annotation last honored, so that one request refreshes once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_request: Option<String>,

    /// The last change of the value, while it is being verified by its consumers' rollouts
    /// (`consumers.rollbackOnFailure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<ValueChange>,

    /// Set when a consumer's rollout failed after a change: the Secret holds the previous value until the
    /// source moves past the value that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,

    /// The workloads that consume the target Secret and whether they run its current value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,

    /// When the value was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,

    /// When the next rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
}

/// One consuming workload, as keyward last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub kind: String,
    pub name: String,
    /// The restart hash its pod template carries (`keyward.dev/secrets-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_hash: Option<String>,
    /// Restarted (runs the current versions), Waiting (restart pending), Rolling, or Failed.
    pub state: String,
}

/// A change of the value, by keyed hashes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueChange {
    pub previous_value_hash: String,
    pub value_hash: String,
}

/// A value held back because a rollout with it failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// The hash of the value whose rollout failed; the source is not followed while it still holds it.
    pub failed_value_hash: String,
    /// The workload whose rollout failed, `Kind/namespace/name`.
    pub workload: String,
    /// What its controller said.
    pub message: String,
}

/// What keyward knows of the source without knowing the value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The ESC revision the value was read at (absent for a Kubernetes Secret source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,

    /// `hmac-sha256:<hex>` of the value under keyward's key: tells changes apart, reveals nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
}

/// Annotation that forces an immediate refresh from the source; each new value refreshes once.
pub const REFRESH_NOW_ANNOTATION: &str = "keyward.dev/refresh-now";
/// Annotation on a target Secret naming its ManagedSecret (in the same namespace).
pub const MANAGED_SECRET_ANNOTATION: &str = "keyward.dev/managed-secret";
/// Annotation on a target Secret with the keyed hash of the value keyward wrote.
pub const VALUE_HASH_ANNOTATION: &str = "keyward.dev/value-hash";
/// Annotation on a target Secret with the source revision keyward wrote.
pub const SOURCE_REVISION_ANNOTATION: &str = "keyward.dev/source-revision";
/// Annotation on the Secret that keeps a ManagedSecret's previous value (for rollbacks), naming it.
pub const PREVIOUS_OF_ANNOTATION: &str = "keyward.dev/previous-of";
/// The label keyward puts on every Secret it manages.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "keyward");
/// The default refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl ManagedSecret {
    /// The name of the Secret keyward writes for this object.
    pub fn target_name(&self) -> &str {
        self.spec
            .target
            .name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }

    /// The refresh interval, parsed (admission guarantees the form; a bad value falls back to the default).
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.spec
            .refresh_interval
            .as_deref()
            .and_then(|s| crate::duration::parse(s).ok())
            .unwrap_or(DEFAULT_REFRESH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_generates_with_cel_rules_and_printer_columns() {
        let crd = ManagedSecret::crd();
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.contains("x-kubernetes-validations"));
        assert!(json.contains("exactly one source must be set"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["msec".to_string()]));
        let cols = crd.spec.versions[0].additional_printer_columns.as_ref().unwrap();
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Ready", "Source", "Last Sync", "Next Rotation", "Age"]);
    }
}
