//! The access policy: which namespaces may read which ESC environments. A ManagedSecret outside it gets
//! `Ready=False` reason `AccessDenied` and no Secret. With no policy configured nothing is allowed: a namespace
//! can read an environment only when a rule says so.

use std::path::Path;

use serde::Deserialize;

use crate::esc::EnvRef;

/// Why a policy could not be loaded.
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

/// One grant: every namespace matching one of `namespaces` may read every environment matching one of
/// `environments`. Patterns are globs: `*` is any run of characters (`/` included), `?` one character.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub namespaces: Vec<String>,
    /// `org/project/env`; an `org/env` reference is matched as `org/default/env`.
    pub environments: Vec<String>,
}

/// The rules, in a YAML file: `rules: [{namespaces: [team-a, "team-a-*"], environments: ["acme/team-a/*"]}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl AccessPolicy {
    /// Every namespace may read every environment (for development and tests; say so explicitly).
    pub fn allow_all() -> Self {
        AccessPolicy {
            rules: vec![Rule {
                namespaces: vec!["*".into()],
                environments: vec!["*".into()],
            }],
        }
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, PolicyError> {
        let policy: AccessPolicy = serde_saphyr::from_str(text).map_err(|e| PolicyError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        for (i, rule) in policy.rules.iter().enumerate() {
            let empty = rule
                .namespaces
                .iter()
                .chain(&rule.environments)
                .any(|p| p.trim().is_empty());
            if rule.namespaces.is_empty() || rule.environments.is_empty() || empty {
                return Err(PolicyError::Invalid {
                    path: path.into(),
                    message: format!("rule {i} needs non-empty namespaces and environments"),
                });
            }
        }
        Ok(policy)
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        AccessPolicy::parse(&text, &shown)
    }

    /// Whether `namespace` may read `environment`.
    pub fn allows(&self, namespace: &str, environment: &EnvRef) -> bool {
        let env = environment.to_string();
        self.rules
            .iter()
            .any(|r| r.namespaces.iter().any(|p| glob(p, namespace)) && r.environments.iter().any(|p| glob(p, &env)))
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, no recursion on hostile input.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> EnvRef {
        EnvRef::parse(s).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("team-*", "team-a"));
        assert!(!glob("team-*", "other"));
        assert!(glob("acme/*/prod", "acme/app/prod"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxaxxbxx"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn rules_grant_namespaces_environments() {
        let p = AccessPolicy::parse(
            "rules:\n  - namespaces: [payments, 'payments-*']\n    environments: ['acme/payments/*', acme/shared/common]\n",
            "p.yaml",
        )
        .unwrap();
        assert!(p.allows("payments", &env("acme/payments/prod")));
        assert!(p.allows("payments-canary", &env("acme/shared/common")));
        assert!(!p.allows("frontend", &env("acme/payments/prod")));
        assert!(!p.allows("payments", &env("acme/frontend/prod")));
        // org/env means project default.
        let d = AccessPolicy::parse("rules: [{namespaces: [x], environments: [acme/default/e]}]", "d").unwrap();
        assert!(d.allows("x", &env("acme/e")));
    }

    #[test]
    fn the_default_allows_nothing_and_bad_files_are_refused() {
        assert!(!AccessPolicy::default().allows("any", &env("a/b/c")));
        assert!(AccessPolicy::allow_all().allows("any", &env("a/b/c")));
        for bad in [
            "rules: [{namespaces: [], environments: [x]}]",
            "rules: [{namespaces: [''], environments: [x]}]",
            "rules: [{namespaces: [a]}]",
            "rulez: []",
            "rules: [{namespaces: [a], environments: [b], extra: 1}]",
        ] {
            let e = AccessPolicy::parse(bad, "bad.yaml").unwrap_err();
            assert!(e.to_string().contains("bad.yaml"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn star_matches_everything_and_literals_match_themselves(s in "[a-z/*?-]{0,20}") {
            proptest::prop_assert!(glob("*", &s));
            let literal: String = s.chars().filter(|c| *c != '*' && *c != '?').collect();
            proptest::prop_assert!(glob(&literal, &literal));
        }
    }
}
