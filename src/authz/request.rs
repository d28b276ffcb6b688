//! What a ManagedSecret asks keyward to do, as actions a grant can allow: read an ESC environment's path, write
//! it (strategy Generate), run its rotators (strategy Esc), push to a GitHub secret, read a Secret of the
//! namespace as the source.

use std::fmt;

use crate::api::{GithubTarget, GithubVisibility, ManagedSecret, RotationStrategy};
use crate::esc::{EnvRef, PropertyPath};

/// One thing a ManagedSecret makes keyward do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read `path` of `env` (sync).
    EscRead { env: EnvRef, path: PropertyPath },
    /// Write a new value at `path` of `env` (rotation strategy Generate).
    EscWrite { env: EnvRef, path: PropertyPath },
    /// Run the rotators at or under `path` of `env` (rotation strategy Esc).
    EscRotate { env: EnvRef, path: PropertyPath },
    /// Create or replace a GitHub Actions secret.
    GithubPush(PushTarget),
    /// Read Secret `name` of the ManagedSecret's own namespace as the source.
    SecretSource { name: String },
}

/// Where a GitHub secret lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GithubPlace {
    Organization { org: String },
    Repository { repository: String },
    Environment { repository: String, environment: String },
}

/// A GitHub Actions secret a ManagedSecret pushes to. Names compare case-insensitively, as GitHub's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub place: GithubPlace,
    /// Upper case, as GitHub stores it.
    pub name: String,
    /// Organization secrets: the visibility asked for (default private).
    pub visibility: Option<GithubVisibility>,
}

impl PushTarget {
    /// The target a `pushTo.github` entry names, or None when the entry names no place (admission refuses that).
    pub fn from_spec(t: &GithubTarget) -> Option<PushTarget> {
        let place = match (&t.organization, &t.repository, &t.environment) {
            (Some(org), None, None) => GithubPlace::Organization {
                org: org.to_ascii_lowercase(),
            },
            (None, Some(repo), None) => GithubPlace::Repository {
                repository: repo.to_ascii_lowercase(),
            },
            (None, Some(repo), Some(env)) => GithubPlace::Environment {
                repository: repo.to_ascii_lowercase(),
                environment: env.clone(),
            },
            _ => return None,
        };
        let visibility = match place {
            GithubPlace::Organization { .. } => Some(t.visibility.unwrap_or_default()),
            _ => None,
        };
        Some(PushTarget {
            place,
            name: t.secret_name.to_ascii_uppercase(),
            visibility,
        })
    }

    /// The secret, without the visibility: what one owner holds (`github:org/acme/NAME`).
    pub fn key(&self) -> String {
        match &self.place {
            GithubPlace::Organization { org } => format!("github:org/{org}/{}", self.name),
            GithubPlace::Repository { repository } => format!("github:repo/{repository}/{}", self.name),
            GithubPlace::Environment {
                repository,
                environment,
            } => format!("github:env/{repository}/{environment}/{}", self.name),
        }
    }
}

impl Action {
    /// The condition reason when no grant allows this action.
    pub fn not_granted(&self) -> &'static str {
        match self {
            Action::EscRead { .. } => "EscReadNotGranted",
            Action::EscWrite { .. } => "EscWriteNotGranted",
            Action::EscRotate { .. } => "EscRotateNotGranted",
            Action::GithubPush(_) => "GithubPushNotGranted",
            Action::SecretSource { .. } => "SecretSourceNotGranted",
        }
    }

    /// What grant would allow it, for messages.
    pub fn needs(&self) -> &'static str {
        match self {
            Action::EscRead { .. } => "an esc grant with action Read for this environment and path",
            Action::EscWrite { .. } => "an esc grant with action Write for this environment and path",
            Action::EscRotate { .. } => "an esc grant with action Rotate for this environment and path",
            Action::GithubPush(t) if t.visibility == Some(GithubVisibility::All) => {
                "a github grant for this place and secret name that lists visibility all"
            }
            Action::GithubPush(_) => "a github grant for this place and secret name",
            Action::SecretSource { .. } => "a kubernetesSecrets grant naming this Secret",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::EscRead { env, path } => write!(f, "read ESC {env} path {path}"),
            Action::EscWrite { env, path } => write!(f, "write ESC {env} path {path}"),
            Action::EscRotate { env, path } => write!(f, "run the rotators of ESC {env} at {path}"),
            Action::GithubPush(t) => match t.visibility {
                Some(v) => write!(f, "push {} with visibility {}", t.key(), visibility_name(v)),
                None => write!(f, "push {}", t.key()),
            },
            Action::SecretSource { name } => write!(f, "read Secret {name}"),
        }
    }
}

/// GitHub's name of a visibility.
pub fn visibility_name(v: GithubVisibility) -> &'static str {
    match v {
        GithubVisibility::All => "all",
        GithubVisibility::Private => "private",
        GithubVisibility::Selected => "selected",
    }
}

/// Why the spec could not be turned into actions (admission refuses these; a spec from before a rule existed
/// can still have them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

/// Every action the spec asks for, in a stable order.
pub fn actions(ms: &ManagedSecret) -> Result<Vec<Action>, Unreadable> {
    let mut out = Vec::new();
    let spec = &ms.spec;
    if let Some(esc) = &spec.source.esc {
        let env = EnvRef::parse(&esc.environment).map_err(|e| Unreadable(e.to_string()))?;
        let parse = |p: &str| PropertyPath::parse(p).map_err(|e| Unreadable(e.to_string()));
        // Every path read, `dataFrom`'s objects whole (a grant for the object or a prefix of it allows it).
        for path in esc.paths() {
            out.push(Action::EscRead {
                env: env.clone(),
                path: parse(path)?,
            });
        }
        // Rotation changes the single value only (admission refuses Generate and Esc without one).
        if let Some(path) = esc.path.as_deref().map(parse).transpose()? {
            match spec.rotation.as_ref().map(|r| r.strategy) {
                Some(RotationStrategy::Generate) => out.push(Action::EscWrite { env, path }),
                Some(RotationStrategy::Esc) => out.push(Action::EscRotate { env, path }),
                Some(RotationStrategy::Notify) | None => {}
            }
        }
    }
    if let Some(k) = &spec.source.kubernetes_secret {
        out.push(Action::SecretSource { name: k.name.clone() });
    }
    for p in spec.rotation.iter().flat_map(|r| &r.push_to) {
        let Some(t) = &p.github else { continue };
        let target = PushTarget::from_spec(t).ok_or_else(|| {
            Unreadable(format!(
                "pushTo github {:?} names no organization or repository",
                t.secret_name
            ))
        })?;
        out.push(Action::GithubPush(target));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(spec: serde_json::Value) -> ManagedSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "m", "namespace": "team-a"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn a_spec_asks_for_what_it_makes_keyward_do() {
        let m = ms(serde_json::json!({
            "source": {"esc": {"environment": "acme/shared/common", "path": "values.db.password"}},
            "target": {"key": "K"},
            "rotation": {"period": "30d", "strategy": "Generate", "pushTo": [
                {"github": {"organization": "Acme", "secretName": "payments_key", "visibility": "all"}},
                {"github": {"repository": "acme/App", "environment": "prod", "secretName": "X"}}]}
        }));
        let got: Vec<String> = actions(&m).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "read ESC acme/shared/common path db.password",
                "write ESC acme/shared/common path db.password",
                "push github:org/acme/PAYMENTS_KEY with visibility all",
                "push github:env/acme/app/prod/X",
            ]
        );
        let k = ms(serde_json::json!({
            "source": {"kubernetesSecret": {"name": "platform-db-creds", "key": "password"}},
            "target": {"key": "K"}
        }));
        assert_eq!(
            actions(&k).unwrap(),
            [Action::SecretSource {
                name: "platform-db-creds".into()
            }]
        );
        let many = ms(serde_json::json!({
            "source": {"esc": {"environment": "acme/app/prod", "data": [{"key": "A", "path": "a.x"}, {"key": "B", "path": "b"}],
                               "dataFrom": [{"path": "settings"}]}},
            "target": {"name": "app"}, "rotation": {"period": "30d"}
        }));
        let got: Vec<String> = actions(&many).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "read ESC acme/app/prod path a.x",
                "read ESC acme/app/prod path b",
                "read ESC acme/app/prod path settings",
            ]
        );
        let bad = ms(serde_json::json!({
            "source": {"esc": {"environment": "acme/team-a/..", "path": "a"}}, "target": {"key": "K"}
        }));
        assert!(actions(&bad).is_err());
    }
}
