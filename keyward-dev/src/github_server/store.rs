//! What the GitHub server holds: which scopes exist, one key pair per scope, and the secrets received (in
//! memory only; the plaintexts are zeroized when dropped).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore;
use zeroize::Zeroizing;

use super::error::GithubServerError;
use serde::Serialize;

/// A repository that exists on the server, with its deployment environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    /// The id organization secrets name in `selected_repository_ids`.
    pub id: i64,
    pub environments: Vec<String>,
}

impl Repository {
    pub fn new(owner: impl Into<String>, name: impl Into<String>, id: i64) -> Self {
        Repository {
            owner: owner.into(),
            name: name.into(),
            id,
            environments: Vec::new(),
        }
    }

    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environments.push(environment.into());
        self
    }
}

/// A secret as received, for tests. `value` is the plaintext: this exists so tests can check what arrived,
/// and is never part of the GitHub API.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedSecret {
    /// `org/ORG`, `repo/OWNER/REPO` or `env/OWNER/REPO/ENVIRONMENT`, lower case.
    pub scope: String,
    /// Upper case, as GitHub stores names.
    pub name: String,
    /// The plaintext (invalid UTF-8 replaced; `value_base64` is exact).
    pub value: String,
    pub value_base64: String,
    /// Accepted PUTs of this name in this scope.
    pub puts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selected_repository_ids: Vec<i64>,
}

impl std::fmt::Debug for ReceivedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedSecret")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("puts", &self.puts)
            .field("visibility", &self.visibility)
            .field("selected_repository_ids", &self.selected_repository_ids)
            .finish()
    }
}

/// Where a secret lives. Names keep the case they were given in; [`Scope::key`] folds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Org(String),
    Repo(String, String),
    Env(String, String, String),
}

impl Scope {
    /// `org/ORG`, `repo/OWNER/REPO` or `env/OWNER/REPO/ENVIRONMENT`, lower case: GitHub's organization,
    /// repository and environment names are case-insensitive.
    pub fn key(&self) -> String {
        match self {
            Scope::Org(o) => format!("org/{o}"),
            Scope::Repo(o, r) => format!("repo/{o}/{r}"),
            Scope::Env(o, r, e) => format!("env/{o}/{r}/{e}"),
        }
        .to_lowercase()
    }
}

/// A scope's key pair. The key id is what GitHub calls `key_id`: it names this pair until it is rotated.
pub(crate) struct KeyPair {
    pub key_id: String,
    pub secret: crypto_box::SecretKey,
}

impl KeyPair {
    fn generate() -> Result<KeyPair, GithubServerError> {
        // try_fill_bytes, unlike SecretKey::generate, reports a failing system RNG instead of panicking.
        let mut bytes = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; 8];
        OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .and_then(|()| OsRng.try_fill_bytes(&mut id))
            .map_err(|_| GithubServerError::Internal("the system random number generator failed".into()))?;
        // GitHub's key ids are decimal strings of about 18 digits.
        let key_id = format!("{:018}", u64::from_le_bytes(id) % 1_000_000_000_000_000_000);
        Ok(KeyPair {
            key_id,
            secret: crypto_box::SecretKey::from(*bytes),
        })
    }

    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.secret.public_key().as_bytes())
    }
}

/// One secret: the opened value and GitHub's metadata.
pub(crate) struct Stored {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub created_at: String,
    pub updated_at: String,
    /// Organization secrets only.
    pub visibility: Option<String>,
    pub selected_repository_ids: Vec<i64>,
}

pub(crate) struct Store {
    /// None: every scope exists.
    repositories: Option<Vec<Repository>>,
    keys: HashMap<String, KeyPair>,
    /// Scope key, then upper-case name.
    secrets: BTreeMap<String, BTreeMap<String, Stored>>,
    puts: HashMap<(String, String), u64>,
}

/// GitHub stores secret names in upper case and matches them case-insensitively.
pub(crate) fn fold_name(name: &str) -> String {
    name.to_uppercase()
}

/// Seconds precision, as GitHub's `created_at`/`updated_at`.
pub(crate) fn now() -> String {
    let ts = jiff::Timestamp::now();
    ts.round(jiff::Unit::Second).unwrap_or(ts).to_string()
}

impl Store {
    pub fn new(repositories: Vec<Repository>) -> Self {
        Store {
            repositories: (!repositories.is_empty()).then_some(repositories),
            keys: HashMap::new(),
            secrets: BTreeMap::new(),
            puts: HashMap::new(),
        }
    }

    pub fn exists(&self, scope: &Scope) -> bool {
        let Some(repos) = &self.repositories else {
            return true;
        };
        let is = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        let repo = |o: &str, r: &str| repos.iter().find(|x| is(&x.owner, o) && is(&x.name, r));
        match scope {
            Scope::Org(o) => repos.iter().any(|x| is(&x.owner, o)),
            Scope::Repo(o, r) => repo(o, r).is_some(),
            Scope::Env(o, r, e) => repo(o, r).is_some_and(|x| x.environments.iter().any(|y| is(y, e))),
        }
    }

    /// The scope's key pair, made on first use.
    pub fn key(&mut self, scope_key: &str) -> Result<&KeyPair, GithubServerError> {
        if !self.keys.contains_key(scope_key) {
            self.keys.insert(scope_key.to_owned(), KeyPair::generate()?);
        }
        self.keys
            .get(scope_key)
            .ok_or_else(|| GithubServerError::Internal("key pair vanished".into()))
    }

    /// The key pair, only if one was made (a PUT before any GET of the public key cannot name it).
    pub fn existing_key(&self, scope_key: &str) -> Option<&KeyPair> {
        self.keys.get(scope_key)
    }

    pub fn rotate_key(&mut self, scope_key: &str) -> Result<(), GithubServerError> {
        self.keys.insert(scope_key.to_owned(), KeyPair::generate()?);
        Ok(())
    }

    pub fn secret(&self, scope_key: &str, name: &str) -> Option<&Stored> {
        self.secrets.get(scope_key)?.get(&fold_name(name))
    }

    /// The scope's secrets, by name.
    pub fn list(&self, scope_key: &str) -> Vec<(&String, &Stored)> {
        self.secrets
            .get(scope_key)
            .map(|m| m.iter().collect())
            .unwrap_or_default()
    }

    /// Stores a value; true when it was created rather than updated.
    pub fn put(
        &mut self,
        scope_key: &str,
        name: &str,
        plaintext: Zeroizing<Vec<u8>>,
        visibility: Option<String>,
        selected_repository_ids: Vec<i64>,
    ) -> bool {
        let name = fold_name(name);
        *self.puts.entry((scope_key.to_owned(), name.clone())).or_default() += 1;
        let at = now();
        let scope = self.secrets.entry(scope_key.to_owned()).or_default();
        let created_at = scope.get(&name).map(|s| s.created_at.clone());
        let created = created_at.is_none();
        scope.insert(
            name,
            Stored {
                plaintext,
                created_at: created_at.unwrap_or_else(|| at.clone()),
                updated_at: at,
                visibility,
                selected_repository_ids,
            },
        );
        created
    }

    /// Removes a secret; false when there was none.
    pub fn delete(&mut self, scope_key: &str, name: &str) -> bool {
        self.secrets
            .get_mut(scope_key)
            .and_then(|m| m.remove(&fold_name(name)))
            .is_some()
    }

    pub fn puts(&self, scope_key: &str, name: &str) -> u64 {
        self.puts
            .get(&(scope_key.to_owned(), fold_name(name)))
            .copied()
            .unwrap_or(0)
    }

    /// The secrets held, with plaintexts, optionally only one scope's and one name.
    pub fn received(&self, scope_key: Option<&str>, name: Option<&str>) -> Vec<ReceivedSecret> {
        let name = name.map(fold_name);
        let mut out = Vec::new();
        for (scope, secrets) in &self.secrets {
            if scope_key.is_some_and(|k| k != scope) {
                continue;
            }
            for (n, s) in secrets {
                if name.as_ref().is_some_and(|want| want != n) {
                    continue;
                }
                out.push(ReceivedSecret {
                    scope: scope.clone(),
                    name: n.clone(),
                    value: String::from_utf8_lossy(&s.plaintext).into_owned(),
                    value_base64: STANDARD.encode(&*s.plaintext),
                    puts: self.puts(scope, n),
                    visibility: s.visibility.clone(),
                    selected_repository_ids: s.selected_repository_ids.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_exist_as_declared_and_fold_case() {
        let open = Store::new(vec![]);
        assert!(open.exists(&Scope::Env("any".into(), "thing".into(), "x".into())));
        let s = Store::new(vec![Repository::new("Acme", "App", 1).with_environment("Production")]);
        assert!(s.exists(&Scope::Org("acme".into())));
        assert!(s.exists(&Scope::Repo("ACME".into(), "app".into())));
        assert!(s.exists(&Scope::Env("acme".into(), "app".into(), "production".into())));
        assert!(!s.exists(&Scope::Org("other".into())));
        assert!(!s.exists(&Scope::Repo("acme".into(), "nope".into())));
        assert!(!s.exists(&Scope::Env("acme".into(), "app".into(), "staging".into())));
        assert_eq!(
            Scope::Env("Acme".into(), "App".into(), "Prod EU".into()).key(),
            "env/acme/app/prod eu"
        );
    }

    #[test]
    fn keys_are_stable_until_rotated() {
        let mut s = Store::new(vec![]);
        assert!(s.existing_key("repo/a/b").is_none());
        let (id, pk) = {
            let k = s.key("repo/a/b").unwrap();
            (k.key_id.clone(), k.public_key_b64())
        };
        assert_eq!(id.len(), 18);
        assert!(id.bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(STANDARD.decode(&pk).unwrap().len(), 32);
        assert_eq!(s.key("repo/a/b").unwrap().key_id, id);
        assert_ne!(s.key("repo/a/c").unwrap().key_id, id);
        s.rotate_key("repo/a/b").unwrap();
        assert_ne!(s.key("repo/a/b").unwrap().public_key_b64(), pk);
    }

    #[test]
    fn puts_create_then_update_and_count() {
        let mut s = Store::new(vec![]);
        let v = |x: &str| Zeroizing::new(x.as_bytes().to_vec());
        assert!(s.put("repo/a/b", "db_pw", v("one"), None, vec![]));
        let created = s.secret("repo/a/b", "DB_PW").unwrap().created_at.clone();
        assert!(!s.put("repo/a/b", "DB_PW", v("two"), None, vec![]));
        assert_eq!(&*s.secret("repo/a/b", "db_pw").unwrap().plaintext, b"two");
        assert_eq!(s.secret("repo/a/b", "DB_PW").unwrap().created_at, created);
        assert_eq!(s.puts("repo/a/b", "Db_Pw"), 2);
        let got = s.received(Some("repo/a/b"), Some("db_pw"));
        assert_eq!((got.len(), got[0].value.as_str(), got[0].puts), (1, "two", 2));
        assert!(s.received(Some("repo/a/c"), None).is_empty());
        assert!(s.delete("repo/a/b", "db_pw"));
        assert!(!s.delete("repo/a/b", "db_pw"));
        assert_eq!(s.puts("repo/a/b", "DB_PW"), 2);
    }
}
