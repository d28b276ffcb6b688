// kube's `printcolumn(...)` attributes repeat their keys by design.
#![allow(clippy::duplicated_attributes)]

//! `AccessPolicy`: what ManagedSecrets in which namespaces may make keyward do. keyward holds more authority
//! than any tenant (cluster-wide Secret rights, an organization's ESC and GitHub tokens), so every action a
//! ManagedSecret asks for needs a grant: reading an ESC environment, writing it (strategy Generate), running its
//! rotators (strategy Esc), pushing to a GitHub secret, using a Secret of the namespace as a source. Nothing is
//! granted by default; several policies add up. Cluster-scoped, so that only the platform team (cluster RBAC)
//! writes them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::managed_secret::GithubVisibility;

/// Grants for the ManagedSecrets of some namespaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    shortname = "kwpolicy",
    doc = "What ManagedSecrets in which namespaces may make keyward do; anything no policy grants is refused",
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces.names"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.esc) && size(self.esc) > 0) || (has(self.github) && size(self.github) > 0) || (has(self.kubernetesSecrets) && size(self.kubernetesSecrets) > 0)"
).message("an AccessPolicy needs at least one grant: esc, github or kubernetesSecrets"))]
pub struct AccessPolicySpec {
    /// The namespaces whose ManagedSecrets these grants are for.
    pub namespaces: NamespaceSelector,

    /// What may be done with ESC environments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub esc: Vec<EscGrant>,

    /// Which GitHub Actions secrets may be pushed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub github: Vec<GithubGrant>,

    /// Which Secrets of the ManagedSecret's own namespace may be a source (`source.kubernetesSecret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub kubernetes_secrets: Vec<SecretGrant>,
}

/// Namespaces by name and by label. A namespace is selected when it matches a name, or the selector (when both
/// are given, either will do).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.names) && size(self.names) > 0) || has(self.selector)")
    .message("namespaces needs names or a selector"))]
pub struct NamespaceSelector {
    /// Namespace names; `*` matches any run of characters, `?` one character.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(n, size(n) > 0 && size(n) <= 253)")
        .message("namespaces.names must be non-empty patterns of at most 253 characters"))]
    pub names: Vec<String>,

    /// Namespaces by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What may be done with some ESC environments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscGrant {
    /// Environments as `org/project/env` patterns (`org/env` references are matched as `org/default/env`); `*`
    /// matches any run of characters, `/` included.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(e, size(e) > 0 && size(e) <= 256)")
        .message("esc[].environments must be non-empty patterns"))]
    pub environments: Vec<String>,

    /// Property paths under `values:` that may be used, as prefixes: `app` allows `app`, `app.db` and
    /// `app[0]`, not `apple`. Empty: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub paths: Vec<String>,

    /// What may be done: Read (sync from it), Write (strategy Generate writes new values into it), Rotate
    /// (strategy Esc runs its rotators).
    #[schemars(length(min = 1, max = 3))]
    pub actions: Vec<EscAction>,
}

/// An action on an ESC environment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EscAction {
    Read,
    Write,
    Rotate,
}

/// GitHub Actions secrets that may be pushed to: organization secrets of `organization`, or repository secrets
/// of `repository` (and, with `environment`, that repository's environment secrets).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.organization) != has(self.repository)")
        .message("a github grant names exactly one of organization or repository"),
    validation = Rule::new("!has(self.environment) || has(self.repository)")
        .message("github[].environment needs github[].repository"),
)]
pub struct GithubGrant {
    /// Organization login pattern, for organization secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub organization: Option<String>,

    /// `owner/name` pattern, for repository secrets (and environment secrets with `environment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 160))]
    pub repository: Option<String>,

    /// Deployment environment pattern, for environment secrets of `repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub environment: Option<String>,

    /// Secret name patterns (GitHub folds names to upper case; so does the match).
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(s, size(s) > 0 && size(s) <= 255)")
        .message("github[].secrets must be non-empty patterns"))]
    pub secrets: Vec<String>,

    /// The visibilities organization secrets may be given. Default private and selected: making a secret
    /// visible to every repository of the organization (`all`) must be granted explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub visibilities: Vec<GithubVisibility>,
}

/// Secrets of the ManagedSecret's own namespace that may be read as a source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretGrant {
    /// Secret name patterns.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(s, size(s) > 0 && size(s) <= 253)")
        .message("kubernetesSecrets[].names must be non-empty patterns"))]
    pub names: Vec<String>,
}
