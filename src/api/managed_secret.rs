// kube's `printcolumn(...)` attributes repeat their keys by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};

use super::workload::WorkloadKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret declared once: where its value comes from (a Pulumi ESC environment path or another Secret) and
/// the Kubernetes Secret keyward keeps equal to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
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
    // A string, not a date: kubectl shows future dates as "<invalid>".
    printcolumn(name = "Next Rotation", type_ = "string", json_path = ".status.nextRotationTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "!has(self.rotation) || !has(self.rotation.strategy) || self.rotation.strategy == 'Notify' || (has(self.source.esc) && (!has(self.source.esc.version) || self.source.esc.version == ''))"
    ).message("rotation strategies Generate and Esc need source.esc following the latest revision (no version pin)"),
    validation = Rule::new(
        "!has(self.rotation) || !has(self.rotation.strategy) || self.rotation.strategy == 'Notify' || (has(self.source.esc) && has(self.source.esc.path))"
    ).message("rotation strategies Generate and Esc rotate one value: they need source.esc.path (not data or dataFrom); give each rotated secret a ManagedSecret of its own"),
    validation = Rule::new(
        "!has(self.rotation) || !has(self.rotation.pushTo) || size(self.rotation.pushTo) == 0 || has(self.target.key)"
    ).message("rotation.pushTo pushes one value: it needs a single value (source.esc.path and target.key)"),
    validation = Rule::new(
        "!has(self.rotation) || !has(self.rotation.previousKey) || !has(self.target.key) || self.rotation.previousKey != self.target.key"
    ).message("rotation.previousKey must differ from target.key"),
    validation = Rule::new(
        "has(self.target.key) == (has(self.source.kubernetesSecret) || (has(self.source.esc) && has(self.source.esc.path)))"
    ).message("target.key names the key of a single value (source.esc.path or source.kubernetesSecret) and only of one: source.esc.data and dataFrom name their own keys"),
)]
pub struct ManagedSecretSpec {
    /// Where the value comes from. Exactly one source must be set.
    pub source: Source,

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

    /// When and how the value is replaced.
    // Boxed, as the other parts most objects leave out (status rotation, rollback, lastChange): every cached
    // ManagedSecret carries the space of what is inline (issue 16, memory at 10,000 objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<Rotation>>,
}

/// A rotation policy: how old the value may get, who makes the new one, and where it is pushed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.period) != has(self.category)")
    .message("rotation needs exactly one of period (e.g. 90d) or category"))]
pub struct Rotation {
    /// The longest a value may live, e.g. 90d, 12h, 30m (units d, h, m, s; at least 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(d|h|m|s))+$')")
        .message("rotation.period must be a duration such as 90d, 12h or 30m (units d, h, m, s)"))]
    #[schemars(length(max = 32))]
    pub period: Option<String>,

    /// A named period from the team's policy: highRisk 30d, database 60d, apiKey 90d, lowRisk 180d,
    /// infrastructure 365d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<RotationCategory>,

    /// Generate: keyward makes a random value and writes it to ESC. Esc: ESC's own rotator makes it. Notify:
    /// nothing changes; keyward reports the age (RotationDue, RotationOverdue, an Event). Default Notify.
    #[serde(default)]
    pub strategy: RotationStrategy,

    /// How long the replaced value stays in the Secret under `previousKey` after a change. Default 0 (not
    /// kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(d|h|m|s))+$')")
        .message("rotation.gracePeriod must be a duration such as 1h or 7d (units d, h, m, s)"))]
    #[schemars(length(max = 32))]
    pub grace_period: Option<String>,

    /// The data key that holds the replaced value during the grace period. Default `<target.key>_PREVIOUS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("rotation.previousKey must be a valid Secret data key: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 253))]
    pub previous_key: Option<String>,

    /// The shape of generated values (strategy Generate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,

    /// Where the value is pushed whenever it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub push_to: Vec<PushTarget>,
}

/// The team's rotation categories.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RotationCategory {
    /// 30 days.
    HighRisk,
    /// 60 days.
    Database,
    /// 90 days.
    ApiKey,
    /// 180 days.
    LowRisk,
    /// 365 days.
    Infrastructure,
}

/// Who makes the new value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RotationStrategy {
    Generate,
    Esc,
    #[default]
    Notify,
}

/// A generated value: `length` characters drawn uniformly from the union of `classes`, with at least one of
/// each.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.symbols) || !has(self.classes) || size(self.classes) == 0 || self.classes.exists(c, c == 'Symbols')")
        .message("rotation.generator.symbols needs the Symbols class in classes"),
    validation = Rule::new(generator_strength_rule()).message(
        "rotation.generator is too weak: length × log2(alphabet size) must be at least 128 bits (for example 20 \
         characters of letters, digits and symbols, 22 of letters and digits, or 39 digits)"
    ),
)]
pub struct Generator {
    /// Default 32, at least 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 1024))]
    pub length: Option<u32>,

    /// Default all four.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y == x))")
        .message("rotation.generator.classes must not repeat a class"))]
    pub classes: Vec<CharClass>,

    /// The symbols class, when `classes` includes Symbols. Default `!#$%&()*+,-./:;<=>?@[]^_{|}~`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[!-/:-@\\\\[-`{-~]+$')")
        .message("rotation.generator.symbols must be printable ASCII punctuation"))]
    #[schemars(length(min = 1, max = 64))]
    pub symbols: Option<String>,
}

/// A class of characters for generated values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CharClass {
    Lowercase,
    Uppercase,
    Digits,
    Symbols,
}

/// One place the value is pushed to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.github)").message("pushTo entries need a target: github"))]
pub struct PushTarget {
    /// A GitHub Actions secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubTarget>,
}

/// A GitHub Actions secret at organization, repository or environment level.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.organization) != has(self.repository)")
        .message("github push needs exactly one of organization or repository (owner/name)"),
    validation = Rule::new("!has(self.environment) || has(self.repository)")
        .message("github.environment needs github.repository"),
    validation = Rule::new("!has(self.visibility) || has(self.organization)")
        .message("github.visibility applies to organization secrets only"),
    validation = Rule::new("!has(self.selectedRepositoryIds) || (has(self.visibility) && self.visibility == 'selected')")
        .message("github.selectedRepositoryIds needs visibility selected"),
)]
pub struct GithubTarget {
    /// Organization login, for an organization secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$')")
        .message("github.organization must be a GitHub login"))]
    #[schemars(length(max = 39))]
    pub organization: Option<String>,

    /// `owner/name`, for a repository or environment secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9-]+/[A-Za-z0-9_.-]+$') && !self.matches('/[.]+$')")
        .message("github.repository must be owner/name (a name of only dots is not one)"))]
    #[schemars(length(max = 140))]
    pub repository: Option<String>,

    /// A deployment environment of `repository`, for an environment secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub environment: Option<String>,

    /// The Actions secret name.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$') && !self.upperAscii().startsWith('GITHUB_')")
        .message("github.secretName must be letters, digits and '_', not start with a digit or GITHUB_"))]
    #[schemars(length(max = 255))]
    pub secret_name: String,

    /// Which repositories of the organization may use it. Default private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<GithubVisibility>,

    /// The repositories, for visibility selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub selected_repository_ids: Option<Vec<i64>>,
}

/// GitHub's organization secret visibility.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GithubVisibility {
    All,
    #[default]
    Private,
    Selected,
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
    pub kind: WorkloadKind,
    #[schemars(length(max = 253))]
    pub name: String,
}

/// The one place a value is read from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.esc), has(self.kubernetesSecret)].filter(x, x).size() == 1")
    .message("exactly one source must be set: source.esc or source.kubernetesSecret"))]
pub struct Source {
    /// A property of a Pulumi ESC environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esc: Option<EscProperty>,

    /// A key of another Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_secret: Option<KubernetesSecretSource>,
}

/// Values of one Pulumi ESC environment, all read from one open of it: one value (`path`, stored under
/// `target.key`), or several (`data`, `dataFrom`), each under a key of its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.path) != ((has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0))")
        .message("source.esc needs exactly one of path (one value, under target.key) or data/dataFrom (several values, each under its own key)"),
    validation = Rule::new("!has(self.data) || self.data.all(x, self.data.exists_one(y, y.key == x.key))")
        .message("source.esc.data must not repeat a key"),
)]
pub struct EscProperty {
    /// The environment as `org/project/env`, or `org/env` for project `default`.
    #[x_kube(
        validation = Rule::new(
            "self.matches('^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+$')"
        ).message("environment must be org/project/env or org/env (letters, digits, '.', '_', '-')"),
        validation = Rule::new("!self.matches('(^|/)[.]+(/|$)')")
            .message("environment parts cannot be '.' or '..' (or only dots)"),
    )]
    #[schemars(length(max = 256))]
    pub environment: String,

    /// The property path under `values:`, e.g. `sophia.ai.openai_api_key`, `db.hosts[0]` or `a["k.x"]`.
    /// A leading `values.` is accepted and ignored.
    #[x_kube(validation = Rule::new(PROPERTY_PATH_RULE)
        .message("path must be an ESC property path such as a.b, a.b[0] or a[\"k.x\"]"))]
    #[schemars(length(max = 1024))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,

    /// Several values, each stored under its own key (or, with `target.template`, given to the template under
    /// that name). At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub data: Vec<EscValue>,

    /// ESC objects expanded into one key per leaf: `{db: {host: h, port: 5432}}` at `app` gives keys
    /// `db_host` and `db_port` (path segments joined with `_`; characters a Secret key cannot hold become `_`).
    /// At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub data_from: Vec<EscObject>,

    /// Pin to a revision number or a revision tag. Empty or absent follows the latest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == '' || (self.matches('^([0-9]+|[A-Za-z0-9_.-]+)$') && !self.matches('^[.]+$'))")
        .message("version must be a revision number or a tag name (not only dots)"))]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
}

impl EscProperty {
    /// Every path read, in the spec's order: `path`, then each `data` path, then each `dataFrom` object's.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.path
            .as_deref()
            .into_iter()
            .chain(self.data.iter().map(|d| d.path.as_str()))
            .chain(self.data_from.iter().map(|d| d.path.as_str()))
    }
}

/// One value of `source.esc.data`: an ESC path and the key it is stored under.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscValue {
    /// The Secret data key (or template input name): letters, digits, '-', '_' or '.'.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("source.esc.data key must be a valid Secret data key: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 253))]
    pub key: String,

    /// The property path under `values:`, as `source.esc.path`.
    #[x_kube(validation = Rule::new(PROPERTY_PATH_RULE)
        .message("path must be an ESC property path such as a.b, a.b[0] or a[\"k.x\"]"))]
    #[schemars(length(max = 1024))]
    pub path: String,
}

/// One object of `source.esc.dataFrom`, expanded into one key per leaf.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscObject {
    /// The property path of an object under `values:`, as `source.esc.path`.
    #[x_kube(validation = Rule::new(PROPERTY_PATH_RULE)
        .message("path must be an ESC property path such as a.b, a.b[0] or a[\"k.x\"]"))]
    #[schemars(length(max = 1024))]
    pub path: String,

    /// Put before every key from this object, e.g. `DB_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]*$')")
        .message("dataFrom keyPrefix must be letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 128))]
    pub key_prefix: Option<String>,
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

    /// The data key a single value (`source.esc.path`, `source.kubernetesSecret`) is stored under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$') && self.size() <= 253")
        .message("target.key must be a valid Secret data key: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 253))]
    pub key: Option<String>,

    /// Keys computed from the values read: a connection string, a dockerconfigjson, a tls pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,

    /// The Secret's type: Opaque (the default), kubernetes.io/basic-auth, kubernetes.io/ssh-auth,
    /// kubernetes.io/tls, kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg. Types that make
    /// Kubernetes act on the Secret (a service-account token, a bootstrap token) are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(target_type_rule())
        .message("target.type must be one of Opaque, kubernetes.io/basic-auth, kubernetes.io/ssh-auth, kubernetes.io/tls, kubernetes.io/dockerconfigjson, kubernetes.io/dockercfg"))]
    #[schemars(length(max = 253))]
    pub type_: Option<String>,

    /// Labels added to the Secret. Keys under `keyward.dev/` are keyward's own and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE)
        .message("target.labels cannot use keys under keyward.dev/: keyward keeps its own records there"))]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the Secret. Keys under `keyward.dev/` are keyward's own and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE)
        .message("target.annotations cannot use keys under keyward.dev/: keyward keeps its own records there"))]
    pub annotations: BTreeMap<String, String>,
}

/// Keys of the target Secret computed by templates (minijinja, Jinja2's syntax) from the values read. Each value
/// read is a variable named by its key (`{{ DB_PASSWORD }}`); filters `b64encode`, `b64decode` and `tojson` are
/// there for the shapes Secrets take. Templates read no files and reach no network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Key → template. At most 64 keys, each template at most 16 KiB.
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[-._a-zA-Z0-9]+$') && size(k) <= 253)")
        .message("target.template.data keys must be valid Secret data keys: letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 64))]
    pub data: BTreeMap<String, TemplateText>,

    /// Replace (the default): the Secret holds the template's keys only; the values read are inputs. Merge: it
    /// holds the values read too, under their own keys (a template's key wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<MergePolicy>,
}

/// One template's text (at most 16 KiB).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct TemplateText(#[schemars(length(max = 16384))] pub String);

/// Replace (the default): the Secret holds the template's keys only; the values read are inputs. Merge: it
/// holds the values read too, under their own keys (a template's key wins). As External Secrets Operator's
/// `target.template.mergePolicy`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MergePolicy {
    /// Only the template's keys.
    #[default]
    Replace,
    /// The values read, and the template's keys (which win).
    Merge,
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
//
// Each field has one writer (`ManagedSecretStatus::WRITERS`): the reconcile, or the restart task (which watches
// workloads). A writer sends merge patches of the fields it owns and only those, so the two never undo each
// other's writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSecretStatus {
    // Written by the reconcile alone.
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    // Written by the reconcile alone.
    /// Ready, Synced and the other conditions, in the standard shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    // Written by the reconcile alone.
    /// The name of the Secret keyward last wrote for this object. When `spec.target.name` changes, the Secret
    /// under the old name is deleted (`deletionPolicy: Delete`) or released (`Retain`: keyward's labels,
    /// annotations and owner reference removed, the data left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,

    // Written by the reconcile alone.
    /// The source revision and a keyed hash of the value last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,

    // Written by the reconcile alone.
    /// When the target Secret last matched the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    // Written by the reconcile alone.
    /// The value of the `keyward.dev/refresh-now` annotation last honored, so that one request refreshes once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_request: Option<String>,

    // Written by the reconcile alone.
    /// The last change of the value, while it is being verified by its consumers' rollouts
    /// (`consumers.rollbackOnFailure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Box<ValueChange>>,

    // Written by the reconcile alone.
    /// Set when a consumer's rollout failed after a change: the Secret holds the previous value until the
    /// source moves past the value that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Box<Rollback>>,

    // Written by the restart task alone.
    /// The workloads that consume the target Secret and whether they run its current value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,

    // Written by the reconcile alone.
    /// When the value was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,

    // Written by the reconcile alone.
    /// When the next rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,

    // Written by the reconcile alone.
    /// The rotation keyward is carrying out, and the last emergency request it honored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<RotationStatus>>,

    // Written by the reconcile alone.
    /// What was last pushed to each `rotation.pushTo` target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<PushStatus>,

    // Written by the reconcile alone.
    /// Which AccessPolicy grant allows each action the spec asks for, or which action no grant allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStatus>,
}

/// The authorization of a ManagedSecret's actions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// Every action and the grant that allows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<GrantedAction>,
    /// The actions refused, with why (the missing grant, or the rule): nothing is read or written while any is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedAction>,
}

/// An action and the grant that allows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedAction {
    /// e.g. `read ESC acme/app/prod path db.password`, `push github:org/acme/DB_PASSWORD (visibility private)`.
    pub action: String,
    /// e.g. `AccessPolicy team-a esc[0]`.
    pub grant: String,
}

/// An action no grant allows, or a rule refuses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedAction {
    pub action: String,
    /// The condition reason: `EscReadNotGranted`, `EscWriteNotGranted`, `EscRotateNotGranted`,
    /// `GithubPushNotGranted`, `SecretSourceNotGranted`, `TargetTypeNotAllowed`, `ReservedKey`,
    /// `GeneratorTooWeak` or `TargetConflict`.
    pub reason: String,
}

/// The writers of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWriter {
    /// One reconcile of the ManagedSecret (its phases, one write at the end).
    Reconcile,
    /// The restart task, from what it sees of the consuming workloads.
    Restarts,
}

impl ManagedSecretStatus {
    /// The consumers (`Kind/name`) that wait for someone to delete their Pods (`ManualRestartNeeded`).
    pub fn manual_restarts_needed(&self) -> Vec<String> {
        self.consumers
            .iter()
            .filter(|c| c.state == ConsumerState::ManualRestartNeeded)
            .map(|c| format!("{}/{}", c.kind, c.name))
            .collect()
    }

    /// Every status field by its JSON name, with its one writer.
    pub const WRITERS: [(&'static str, StatusWriter); 14] = [
        ("access", StatusWriter::Reconcile),
        ("targetName", StatusWriter::Reconcile),
        ("observedGeneration", StatusWriter::Reconcile),
        ("conditions", StatusWriter::Reconcile),
        ("source", StatusWriter::Reconcile),
        ("lastSyncTime", StatusWriter::Reconcile),
        ("refreshRequest", StatusWriter::Reconcile),
        ("lastChange", StatusWriter::Reconcile),
        ("rollback", StatusWriter::Reconcile),
        ("consumers", StatusWriter::Restarts),
        ("lastRotationTime", StatusWriter::Reconcile),
        ("nextRotationTime", StatusWriter::Reconcile),
        ("rotation", StatusWriter::Reconcile),
        ("pushes", StatusWriter::Reconcile),
    ];

    /// Who writes the field with this JSON name (None for a name that is no field).
    pub fn writer_of(field: &str) -> Option<StatusWriter> {
        Self::WRITERS.iter().find(|(f, _)| *f == field).map(|(_, w)| *w)
    }
}

/// Rotation bookkeeping. The authoritative copy of `inProgress` and of the last rotation time is kept on the
/// target Secret's annotations too, so that it survives the loss of this status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The reason of the last rotation: `scheduled`, or the text of a `keyward.dev/rotate-now` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,

    /// The `keyward.dev/rotate-now` value last honored, so that each distinct reason rotates once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,

    /// A rotation that has started and not yet reached the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<RotationIntent>,

    /// After failed rotations, when the next one may be tried (the backoff, which the object's own updates do
    /// not shorten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,

    /// Rotations that failed in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
}

/// A started rotation, recorded before ESC is written so that a restart finishes it instead of starting another.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationIntent {
    /// `scheduled`, or the rotate-now reason.
    pub reason: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// The ESC revision the rotation started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_revision: Option<i64>,
    /// The keyed hash of the generated value (strategy Generate): ESC holding it means ESC was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
}

/// The last push to one target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushStatus {
    /// e.g. `github:org/acme/NAME`, `github:repo/acme/app/NAME`, `github:env/acme/app/production/NAME`.
    pub target: String,
    /// The keyed hash of the value the target holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
    /// When it was pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_time: Option<Time>,
    /// GitHub's `updated_at` of the secret after that push: a later one means someone else wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One consuming workload, as keyward last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub kind: WorkloadKind,
    pub name: String,
    /// The restart hash its pod template carries (`keyward.dev/secrets-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_hash: Option<String>,
    pub state: ConsumerState,
    /// State Failed: why the rollout failed, as the workload's controller (or keyward's rollout deadline) said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// State Failed: the keyed hash of this ManagedSecret's value that the failed rollout was rolling out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_value_hash: Option<String>,
}

/// Whether a consuming workload runs the current value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsumerState {
    /// It runs the current versions of every managed Secret it consumes.
    Restarted,
    /// A restart is pending (debounce, budget, restart window).
    #[default]
    Waiting,
    /// Its rollout is under way.
    Rolling,
    /// Its controller replaces Pods only when they are deleted (StatefulSet `updateStrategy: OnDelete`): the new
    /// pod template is set, and some Pods still run the old one until someone deletes them. Not a failure: the
    /// value is not rolled back for it.
    ManualRestartNeeded,
    /// Its rollout failed.
    Failed,
}

impl ConsumerState {
    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Restarted => "Restarted",
            ConsumerState::Waiting => "Waiting",
            ConsumerState::Rolling => "Rolling",
            ConsumerState::ManualRestartNeeded => "ManualRestartNeeded",
            ConsumerState::Failed => "Failed",
        }
    }
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
/// The prefix of a refresh-now value stamped with the time it was made (`webhook:<RFC 3339>`, as the ESC webhook
/// receiver writes it): any snapshot taken since then satisfies it.
pub const STAMPED_REFRESH_PREFIX: &str = "webhook:";
/// Annotation on a target Secret naming its ManagedSecret (in the same namespace).
pub const MANAGED_SECRET_ANNOTATION: &str = "keyward.dev/managed-secret";
/// Annotation on a target Secret with the keyed hash of the value keyward wrote.
pub const VALUE_HASH_ANNOTATION: &str = "keyward.dev/value-hash";
/// Annotation on a target Secret with the source revision keyward wrote.
pub const SOURCE_REVISION_ANNOTATION: &str = "keyward.dev/source-revision";
/// Annotation on the Secret that keeps a ManagedSecret's previous value (for rollbacks), naming it.
pub const PREVIOUS_OF_ANNOTATION: &str = "keyward.dev/previous-of";
/// The rotation reason of a value that changed in the source without keyward rotating it
/// (`keyward.dev/last-rotation-reason`, `status.rotation.lastReason`).
pub const REASON_SOURCE_CHANGED: &str = "changed in the source";
/// The rotation reason of a rotation that came due.
pub const REASON_SCHEDULED: &str = "scheduled";
/// Annotation that asks for an emergency rotation; its value is the reason. Each distinct reason rotates once.
pub const ROTATE_NOW_ANNOTATION: &str = "keyward.dev/rotate-now";
/// Annotation on a target Secret: when its value was last rotated (RFC 3339).
pub const LAST_ROTATION_ANNOTATION: &str = "keyward.dev/last-rotation";
/// Annotation on a target Secret: the started rotation ([`RotationIntent`] as JSON).
pub const ROTATION_INTENT_ANNOTATION: &str = "keyward.dev/rotation-intent";
/// Annotation on a target Secret: why its value last changed (`scheduled`, a rotate-now reason, or a change
/// made in the source).
pub const LAST_ROTATION_REASON_ANNOTATION: &str = "keyward.dev/last-rotation-reason";
/// Annotation on a target Secret: the rotate-now request last honored.
pub const ROTATED_FOR_ANNOTATION: &str = "keyward.dev/rotated-for";
/// Annotation on a target Secret: the data key that holds the replaced value during the grace period.
pub const PREVIOUS_KEY_ANNOTATION: &str = "keyward.dev/previous-key";
/// Annotation on a target Secret: when the replaced value is removed (RFC 3339).
pub const PREVIOUS_UNTIL_ANNOTATION: &str = "keyward.dev/previous-until";
/// The label keyward puts on every Secret it manages.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "keyward");
/// The Secret types a target may have (`target.type`): the types of data Kubernetes defines, none of the types
/// that make Kubernetes act on a Secret (`kubernetes.io/service-account-token`, `bootstrap.kubernetes.io/token`).
pub const TARGET_TYPES: [&str; 6] = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
];

/// The prefix of the labels and annotations keyward writes on its Secrets; a spec may not set keys under it.
pub const RESERVED_PREFIX: &str = "keyward.dev/";

/// Whether a label or annotation key is keyward's own (`keyward.dev/...`, or a subdomain of it).
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) || key.split_once('/').is_some_and(|(p, _)| p.ends_with(".keyward.dev"))
}

/// The admission rule for ESC property paths (`PropertyPath::parse`'s grammar: plain names of letters, digits,
/// `_` and `-`, indexes, quoted keys).
const PROPERTY_PATH_RULE: &str = r#"self.matches('^([A-Za-z_][A-Za-z0-9_-]*|\\[[0-9]+\\]|\\["([^"\\\\]|\\\\.)*"\\])(\\.[A-Za-z_][A-Za-z0-9_-]*|\\[[0-9]+\\]|\\["([^"\\\\]|\\\\.)*"\\])*$')"#;

const RESERVED_KEYS_RULE: &str =
    "self.all(k, !k.startsWith('keyward.dev/') && !k.split('/')[0].endsWith('.keyward.dev'))";

fn target_type_rule() -> String {
    let list: Vec<String> = TARGET_TYPES.iter().map(|t| format!("'{t}'")).collect();
    format!("self in [{}]", list.join(", "))
}

/// The least entropy a generated value may have, in bits: `length × log2(alphabet size)` (an upper bound; the
/// rule that every class appears takes off a negligible part at these lengths).
pub const MIN_GENERATOR_BITS: f64 = 128.0;

/// The alphabets a generator can have: 1 to 26 + 26 + 10 + 32 ASCII punctuation characters.
const MAX_ALPHABET: usize = 94;

/// The shortest length that gives an alphabet of `size` characters [`MIN_GENERATOR_BITS`] (None for an
/// alphabet of fewer than two characters, which gives none at any length).
pub fn min_generator_length(size: usize) -> Option<u32> {
    if size < 2 {
        return None;
    }
    // The least L with L * log2(size) >= 128. No alphabet size up to 94 puts 128 / log2(size) within rounding
    // distance of an integer except powers of two, where the division is exact.
    let bits = (size as f64).log2();
    Some((MIN_GENERATOR_BITS / bits).ceil() as u32)
}

/// The admission rule for generators: the alphabet's size from its classes and symbols, and the table of
/// [`min_generator_length`] indexed by it (CEL has no logarithm).
fn generator_strength_rule() -> String {
    let table: Vec<String> = (0..=MAX_ALPHABET)
        .map(|n| min_generator_length(n).map_or(100_000, |l| l).to_string())
        .collect();
    let symbols = "(has(self.symbols) ? size(self.symbols) : 28)";
    let size = format!(
        "((!has(self.classes) || size(self.classes) == 0) ? 62 + {symbols} : \
         ((self.classes.exists(c, c == 'Lowercase') ? 26 : 0) + (self.classes.exists(c, c == 'Uppercase') ? 26 : 0) + \
         (self.classes.exists(c, c == 'Digits') ? 10 : 0) + (self.classes.exists(c, c == 'Symbols') ? {symbols} : 0)))"
    );
    format!(
        "{size} > {MAX_ALPHABET} || [{}][{size}] <= (has(self.length) ? self.length : 32)",
        table.join(", ")
    )
}

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

    /// The key a single value is stored under (`target.key`); None when `source.esc.data`/`dataFrom` name the keys.
    pub fn target_key(&self) -> Option<&str> {
        self.spec.target.key.as_deref()
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
    fn every_status_field_has_one_writer() {
        let full = ManagedSecretStatus {
            observed_generation: Some(1),
            target_name: Some("t".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Synced".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            source: Some(SourceStatus::default()),
            last_sync_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            refresh_request: Some("r".into()),
            last_change: Some(Box::new(ValueChange::default())),
            rollback: Some(Box::new(Rollback::default())),
            consumers: vec![ConsumerStatus {
                kind: WorkloadKind::Deployment,
                name: "d".into(),
                secrets_hash: None,
                state: ConsumerState::Restarted,
                message: None,
                failed_value_hash: None,
            }],
            last_rotation_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            next_rotation_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            rotation: Some(Box::new(RotationStatus::default())),
            pushes: vec![PushStatus::default()],
            access: Some(AccessStatus::default()),
        };
        let json = serde_json::to_value(&full).unwrap();
        let names: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut listed: Vec<&str> = ManagedSecretStatus::WRITERS.iter().map(|(f, _)| *f).collect();
        listed.sort_unstable();
        assert_eq!(
            names, listed,
            "a status field without a writer, or a writer of no field"
        );
        assert_eq!(
            ManagedSecretStatus::writer_of("consumers"),
            Some(StatusWriter::Restarts)
        );
        assert_eq!(
            ManagedSecretStatus::writer_of("rollback"),
            Some(StatusWriter::Reconcile)
        );
        assert_eq!(ManagedSecretStatus::writer_of("nope"), None);
    }

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
