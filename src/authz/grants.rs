//! The AccessPolicies in force — from the cluster (watched), from a file (for running outside a cluster), or
//! `--allow-all` (development) — and whether one of their grants allows an action for a namespace. Several
//! policies add up; nothing is allowed that no grant allows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kube::core::{Selector, SelectorExt};
use serde::Deserialize;

use super::glob::glob;
use super::request::{Action, GithubPlace, PushTarget};
use crate::api::{
    AccessPolicy, AccessPolicySpec, EscAction, EscGrant, GithubGrant, GithubVisibility, NamespaceSelector,
};
use crate::esc::PropertyPath;

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading access policy {path}: {message}")]
    Read { path: String, message: String },
    #[error("access policy {path}: {message}")]
    Invalid { path: String, message: String },
}

impl PolicyError {
    /// A bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            PolicyError::Read { .. } => "read",
            PolicyError::Invalid { .. } => "invalid",
        }
    }
}

/// A namespace as grants see it: its name, and its labels when keyward may read them (cluster-wide mode).
#[derive(Debug, Clone, Default)]
pub struct NamespaceInfo {
    pub name: String,
    /// None when unknown: label selectors then select nothing.
    pub labels: Option<BTreeMap<String, String>>,
}

/// The policies in force, each with where it came from.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    entries: Vec<(String, Arc<AccessPolicySpec>)>,
    allow_all: bool,
}

/// The old file form: `rules: [{namespaces: [...], environments: [...]}]`, each rule a read grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    rules: Vec<LegacyRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRule {
    namespaces: Vec<String>,
    environments: Vec<String>,
}

impl Policies {
    /// Everything is allowed to every namespace (development and tests; say so explicitly).
    pub fn allow_all() -> Self {
        Policies {
            entries: Vec::new(),
            allow_all: true,
        }
    }

    /// The AccessPolicy objects of the cluster.
    pub fn from_cluster<'a>(objects: impl IntoIterator<Item = &'a AccessPolicy>) -> Self {
        let entries = objects
            .into_iter()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                (format!("AccessPolicy {name}"), Arc::new(p.spec.clone()))
            })
            .collect();
        Policies {
            entries,
            allow_all: false,
        }
    }

    /// Both sets of grants.
    pub fn and(mut self, other: &Policies) -> Self {
        self.entries.extend(other.entries.iter().cloned());
        self.allow_all |= other.allow_all;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.allow_all
    }

    /// A file of AccessPolicy objects (a YAML stream), or the old `rules:` form.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: origin.into(),
            message,
        };
        if let Ok(legacy) = serde_saphyr::from_str::<LegacyFile>(text) {
            let mut entries = Vec::new();
            for (i, rule) in legacy.rules.into_iter().enumerate() {
                let empty = rule
                    .namespaces
                    .iter()
                    .chain(&rule.environments)
                    .any(|p| p.trim().is_empty());
                if rule.namespaces.is_empty() || rule.environments.is_empty() || empty {
                    return Err(invalid(format!("rule {i} needs non-empty namespaces and environments")));
                }
                let spec = AccessPolicySpec {
                    namespaces: NamespaceSelector {
                        names: rule.namespaces,
                        selector: None,
                    },
                    esc: vec![EscGrant {
                        environments: rule.environments,
                        paths: Vec::new(),
                        actions: vec![EscAction::Read],
                    }],
                    ..AccessPolicySpec::default()
                };
                entries.push((format!("{origin} rules[{i}]"), Arc::new(spec)));
            }
            return Ok(Policies {
                entries,
                allow_all: false,
            });
        }
        let docs: Vec<AccessPolicy> = serde_saphyr::from_multiple(text).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::new();
        for (i, p) in docs.into_iter().enumerate() {
            let name = p.metadata.name.clone().unwrap_or_else(|| format!("#{i}"));
            check(&p.spec).map_err(|m| invalid(format!("{name}: {m}")))?;
            entries.push((format!("{origin} {name}"), Arc::new(p.spec)));
        }
        Ok(Policies {
            entries,
            allow_all: false,
        })
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Policies::parse(&text, &shown)
    }

    /// The grant that allows `action` for namespace `ns`, as `<policy> <grant>` (e.g.
    /// `AccessPolicy team-a esc[0]`), or None.
    pub fn grant(&self, ns: &NamespaceInfo, action: &Action) -> Option<String> {
        if self.allow_all {
            return Some("--allow-all".into());
        }
        self.entries
            .iter()
            .filter(|(_, spec)| selects(&spec.namespaces, ns))
            .find_map(|(origin, spec)| grant_in(spec, action).map(|g| format!("{origin} {g}")))
    }
}

/// What admission checks for AccessPolicy objects, for policies that come from a file.
fn check(spec: &AccessPolicySpec) -> Result<(), String> {
    if spec.namespaces.names.is_empty() && spec.namespaces.selector.is_none() {
        return Err("namespaces needs names or a selector".into());
    }
    if spec.esc.is_empty() && spec.github.is_empty() && spec.kubernetes_secrets.is_empty() {
        return Err("an AccessPolicy needs at least one grant: esc, github or kubernetesSecrets".into());
    }
    Ok(())
}

fn selects(sel: &NamespaceSelector, ns: &NamespaceInfo) -> bool {
    if sel.names.iter().any(|p| glob(p, &ns.name)) {
        return true;
    }
    let (Some(selector), Some(labels)) = (&sel.selector, &ns.labels) else {
        return false;
    };
    // A selector that does not parse selects nothing.
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// The grant of `spec` that allows `action`, as `esc[i]`, `github[i]` or `kubernetesSecrets[i]`.
fn grant_in(spec: &AccessPolicySpec, action: &Action) -> Option<String> {
    match action {
        Action::EscRead { env, path } => esc_grant(&spec.esc, EscAction::Read, &env.to_string(), path),
        Action::EscWrite { env, path } => esc_grant(&spec.esc, EscAction::Write, &env.to_string(), path),
        Action::EscRotate { env, path } => esc_grant(&spec.esc, EscAction::Rotate, &env.to_string(), path),
        Action::GithubPush(target) => spec
            .github
            .iter()
            .position(|g| github_allows(g, target))
            .map(|i| format!("github[{i}]")),
        Action::SecretSource { name } => spec
            .kubernetes_secrets
            .iter()
            .position(|g| g.names.iter().any(|p| glob(p, name)))
            .map(|i| format!("kubernetesSecrets[{i}]")),
    }
}

fn esc_grant(grants: &[EscGrant], action: EscAction, env: &str, path: &PropertyPath) -> Option<String> {
    grants
        .iter()
        .position(|g| {
            g.actions.contains(&action)
                && g.environments.iter().any(|p| glob(&reference(p), env))
                && (g.paths.is_empty() || g.paths.iter().any(|p| under(p, path)))
        })
        .map(|i| format!("esc[{i}]"))
}

/// An environment pattern as environments are written when matched: `org/env` means `org/default/env`.
fn reference(pattern: &str) -> String {
    match pattern.split('/').collect::<Vec<_>>().as_slice() {
        [org, env] if !pattern.contains('*') => format!("{org}/default/{env}"),
        _ => pattern.to_string(),
    }
}

/// Whether `path` is `prefix` or below it (by segments: `app` covers `app.db` and `app[0]`, not `apple`). A
/// prefix that does not parse covers nothing.
fn under(prefix: &str, path: &PropertyPath) -> bool {
    let Ok(prefix) = PropertyPath::parse(prefix) else {
        return false;
    };
    path.0.len() >= prefix.0.len() && path.0.iter().zip(&prefix.0).all(|(a, b)| a == b)
}

fn github_allows(g: &GithubGrant, t: &PushTarget) -> bool {
    let place = match (&t.place, &g.organization, &g.repository, &g.environment) {
        (GithubPlace::Organization { org }, Some(p), None, None) => glob(&p.to_ascii_lowercase(), org),
        (GithubPlace::Repository { repository }, None, Some(p), None) => glob(&p.to_ascii_lowercase(), repository),
        (
            GithubPlace::Environment {
                repository,
                environment,
            },
            None,
            Some(p),
            Some(e),
        ) => glob(&p.to_ascii_lowercase(), repository) && glob(e, environment),
        _ => false,
    };
    let name = g.secrets.iter().any(|p| glob(&p.to_ascii_uppercase(), &t.name));
    let visibility = match t.visibility {
        None => true,
        Some(v) if g.visibilities.is_empty() => v != GithubVisibility::All,
        Some(v) => g.visibilities.contains(&v),
    };
    place && name && visibility
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esc::EnvRef;

    fn esc(action: EscAction, env: &str, path: &str) -> Action {
        let (env, path) = (EnvRef::parse(env).unwrap(), PropertyPath::parse(path).unwrap());
        match action {
            EscAction::Read => Action::EscRead { env, path },
            EscAction::Write => Action::EscWrite { env, path },
            EscAction::Rotate => Action::EscRotate { env, path },
        }
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        }
    }

    const POLICY: &str = r#"
apiVersion: keyward.dev/v1alpha1
kind: AccessPolicy
metadata: {name: team-a}
spec:
  namespaces: {names: [team-a, "team-a-*"], selector: {matchLabels: {team: a}}}
  esc:
    - environments: ["acme/team-a/*"]
      actions: [Read, Write]
    - environments: [acme/shared/common]
      paths: [app]
      actions: [Read]
  github:
    - organization: acme
      secrets: ["TEAM_A_*"]
    - repository: "acme/team-a-*"
      environment: "*"
      secrets: ["*"]
  kubernetesSecrets:
    - names: ["app-*"]
"#;

    #[test]
    fn grants_allow_exactly_what_they_name() {
        let p = Policies::parse(POLICY, "policies.yaml").unwrap();
        let a = ns("team-a", &[]);
        assert_eq!(
            p.grant(&a, &esc(EscAction::Write, "acme/team-a/prod", "db.password"))
                .as_deref(),
            Some("policies.yaml team-a esc[0]")
        );
        assert!(p.grant(&a, &esc(EscAction::Rotate, "acme/team-a/prod", "db")).is_none());
        // The shared environment: read only, and only under app.
        assert_eq!(
            p.grant(&a, &esc(EscAction::Read, "acme/shared/common", "app.db"))
                .as_deref(),
            Some("policies.yaml team-a esc[1]")
        );
        assert!(
            p.grant(&a, &esc(EscAction::Read, "acme/shared/common", "apple"))
                .is_none()
        );
        assert!(
            p.grant(&a, &esc(EscAction::Write, "acme/shared/common", "app.db"))
                .is_none()
        );
        // Namespaces by name pattern or label; others get nothing.
        assert!(
            p.grant(&ns("team-a-canary", &[]), &esc(EscAction::Read, "acme/team-a/x", "a"))
                .is_some()
        );
        assert!(
            p.grant(
                &ns("misc", &[("team", "a")]),
                &esc(EscAction::Read, "acme/team-a/x", "a")
            )
            .is_some()
        );
        assert!(
            p.grant(&ns("team-b", &[]), &esc(EscAction::Read, "acme/team-a/x", "a"))
                .is_none()
        );
        let unknown_labels = NamespaceInfo {
            name: "misc".into(),
            labels: None,
        };
        assert!(
            p.grant(&unknown_labels, &esc(EscAction::Read, "acme/team-a/x", "a"))
                .is_none()
        );
        // Secrets as sources.
        assert!(p.grant(&a, &Action::SecretSource { name: "app-db".into() }).is_some());
        assert!(
            p.grant(
                &a,
                &Action::SecretSource {
                    name: "platform-db-creds".into()
                }
            )
            .is_none()
        );
    }

    fn push(
        org: Option<&str>,
        repo: Option<&str>,
        env: Option<&str>,
        name: &str,
        vis: Option<GithubVisibility>,
    ) -> Action {
        let t = crate::api::GithubTarget {
            organization: org.map(Into::into),
            repository: repo.map(Into::into),
            environment: env.map(Into::into),
            secret_name: name.into(),
            visibility: vis,
            selected_repository_ids: None,
        };
        Action::GithubPush(PushTarget::from_spec(&t).unwrap())
    }

    #[test]
    fn github_grants_name_places_secrets_and_visibility() {
        let p = Policies::parse(POLICY, "p").unwrap();
        let a = ns("team-a", &[]);
        assert!(
            p.grant(&a, &push(Some("ACME"), None, None, "team_a_key", None))
                .is_some()
        );
        assert!(
            p.grant(&a, &push(Some("acme"), None, None, "PAYMENTS_CARD_KEY", None))
                .is_none()
        );
        // Widening to every repository of the organization needs a grant that lists it.
        assert!(
            p.grant(
                &a,
                &push(Some("acme"), None, None, "TEAM_A_KEY", Some(GithubVisibility::All))
            )
            .is_none()
        );
        assert!(
            p.grant(&a, &push(None, Some("acme/team-a-api"), Some("prod"), "X", None))
                .is_some()
        );
        // A repository grant with an environment does not cover the repository's own secrets.
        assert!(
            p.grant(&a, &push(None, Some("acme/team-a-api"), None, "X", None))
                .is_none()
        );
        assert!(
            p.grant(&a, &push(None, Some("acme/payments"), Some("prod"), "X", None))
                .is_none()
        );
    }

    #[test]
    fn the_default_allows_nothing_legacy_rules_read_and_bad_files_are_refused() {
        let read = esc(EscAction::Read, "acme/payments/prod", "a");
        assert!(Policies::default().grant(&ns("any", &[]), &read).is_none());
        assert_eq!(
            Policies::allow_all().grant(&ns("any", &[]), &read).as_deref(),
            Some("--allow-all")
        );
        let legacy = Policies::parse(
            "rules:\n  - namespaces: [payments, 'payments-*']\n    environments: ['acme/payments/*', acme/shared/common]\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(
            legacy.grant(&ns("payments", &[]), &read).as_deref(),
            Some("p.yaml rules[0] esc[0]")
        );
        let write = esc(EscAction::Write, "acme/payments/prod", "a");
        assert!(legacy.grant(&ns("payments", &[]), &write).is_none());
        // org/env means project default.
        let d = Policies::parse("rules: [{namespaces: [x], environments: [acme/e]}]", "d").unwrap();
        assert!(
            d.grant(&ns("x", &[]), &esc(EscAction::Read, "acme/default/e", "a"))
                .is_some()
        );
        for bad in [
            "rules: [{namespaces: [], environments: [x]}]",
            "rules: [{namespaces: [''], environments: [x]}]",
            "rulez: []",
            "kind: AccessPolicy\nmetadata: {name: n}\nspec: {namespaces: {names: [a]}}\n",
            "kind: AccessPolicy\nmetadata: {name: n}\nspec: {namespaces: {}, esc: [{environments: [x], actions: [Read]}]}\n",
        ] {
            let e = Policies::parse(bad, "bad.yaml").unwrap_err();
            assert!(e.to_string().contains("bad.yaml"), "{e}");
        }
    }
}
