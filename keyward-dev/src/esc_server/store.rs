//! The server's data: organizations, environments, their revisions (definition text, with secrets only as
//! ciphertext), revision tags and environment tags, plus the encryption key, persisted as one JSON file
//! written atomically (temporary file, then rename) after every change.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crypto::{SecretKey, random_bytes};
use super::error::EscServerError;
use super::eval::Environments;

const FORMAT: u32 = 1;
/// The revision tag that always names the newest revision.
pub(crate) const LATEST: &str = "latest";
/// Who the dev server says made each change (it has no users).
pub(crate) const EDITOR_LOGIN: &str = "keyward-dev";
pub(crate) const EDITOR_NAME: &str = "keyward dev server";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataFile {
    format: u32,
    /// The development server's secret-encryption key (base64). It sits beside the ciphertexts it protects:
    /// this keeps plaintext out of the file, it is not protection against someone who can read the file.
    encryption_key: String,
    #[serde(default)]
    organizations: BTreeMap<String, Org>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Org {
    /// By `project/name`.
    #[serde(default)]
    pub environments: BTreeMap<String, Env>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Env {
    /// Distinguishes this environment from an earlier one of the same name (ETags must not repeat).
    pub id: String,
    pub project: String,
    pub name: String,
    pub created: String,
    pub modified: String,
    /// Oldest first; never empty (creation makes revision 1, an empty definition).
    pub revisions: Vec<Revision>,
    #[serde(default)]
    pub revision_tags: BTreeMap<String, RevisionTag>,
    #[serde(default)]
    pub tags: BTreeMap<String, EnvTag>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Revision {
    pub number: u64,
    pub created: String,
    pub creator_login: String,
    pub creator_name: String,
    /// The definition text, `fn::secret` values as ciphertext.
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevisionTag {
    pub revision: u64,
    pub created: String,
    pub modified: String,
    pub editor_login: String,
    pub editor_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvTag {
    pub value: String,
    pub created: String,
    pub modified: String,
    pub editor_login: String,
    pub editor_name: String,
}

/// The current time as the API shows it (RFC 3339, UTC, milliseconds).
pub(crate) fn now() -> String {
    let ts = jiff::Timestamp::now();
    ts.round(jiff::Unit::Millisecond).unwrap_or(ts).to_string()
}

impl Env {
    fn new(project: &str, name: &str) -> Result<Env, EscServerError> {
        let id = hex::encode(random_bytes::<12>().map_err(|e| EscServerError::Crypto(e.to_string()))?);
        let at = now();
        Ok(Env {
            id,
            project: project.to_owned(),
            name: name.to_owned(),
            created: at.clone(),
            modified: at.clone(),
            revisions: vec![Revision {
                number: 1,
                created: at,
                creator_login: EDITOR_LOGIN.into(),
                creator_name: EDITOR_NAME.into(),
                definition: String::new(),
            }],
            revision_tags: BTreeMap::new(),
            tags: BTreeMap::new(),
        })
    }

    /// The newest revision number.
    pub fn head(&self) -> u64 {
        self.revisions.last().map_or(0, |r| r.number)
    }

    pub fn current(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    pub fn revision(&self, number: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.number == number)
    }

    /// The ETag of the current revision: changes with every update, never repeats across re-creation.
    pub fn etag(&self) -> String {
        let digest = Sha256::digest(format!("{}:{}", self.id, self.head()));
        format!("\"{}\"", hex::encode(&digest[..10]))
    }

    /// Appends a revision and returns its number.
    pub fn add_revision(&mut self, definition: String) -> u64 {
        let number = self.head() + 1;
        let at = now();
        self.revisions.push(Revision {
            number,
            created: at.clone(),
            creator_login: EDITOR_LOGIN.into(),
            creator_name: EDITOR_NAME.into(),
            definition,
        });
        self.modified = at;
        number
    }

    /// A revision number or revision tag (`latest` included) to a revision that exists.
    pub fn resolve_version(&self, version: &str) -> Option<u64> {
        let number = if version == LATEST {
            self.head()
        } else if let Ok(n) = version.parse::<u64>() {
            n
        } else {
            self.revision_tags.get(version)?.revision
        };
        self.revision(number).map(|r| r.number)
    }

    /// The revision tags naming revision `number`, `latest` included.
    pub fn tags_of(&self, number: u64) -> Vec<String> {
        let mut tags: Vec<String> = self
            .revision_tags
            .iter()
            .filter(|(_, t)| t.revision == number)
            .map(|(n, _)| n.clone())
            .collect();
        if number == self.head() {
            tags.push(LATEST.into());
            tags.sort();
        }
        tags
    }

    /// All revision tags, `latest` included, by name.
    pub fn all_revision_tags(&self) -> BTreeMap<String, RevisionTag> {
        let mut tags = self.revision_tags.clone();
        let (created, modified) = match self.current() {
            Some(r) => (self.created.clone(), r.created.clone()),
            None => (self.created.clone(), self.modified.clone()),
        };
        tags.insert(
            LATEST.into(),
            RevisionTag {
                revision: self.head(),
                created,
                modified,
                editor_login: EDITOR_LOGIN.into(),
                editor_name: EDITOR_NAME.into(),
            },
        );
        tags
    }
}

pub(crate) fn env_key(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

/// The data, in memory, and where it is saved.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    pub key: SecretKey,
    pub orgs: BTreeMap<String, Org>,
}

impl Store {
    /// Loads the data file, or starts empty with a new key when it is missing or empty.
    pub fn open(path: &Path) -> Result<Store, EscServerError> {
        let bad = |message: String| EscServerError::DataFile {
            path: path.display().to_string(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(EscServerError::io("read the ESC data file", e)),
        };
        if text.trim().is_empty() {
            let key = SecretKey::generate().map_err(|e| EscServerError::Crypto(e.to_string()))?;
            return Ok(Store {
                path: path.to_owned(),
                key,
                orgs: BTreeMap::new(),
            });
        }
        let data: DataFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if data.format != FORMAT {
            return Err(bad(format!("unsupported format {} (expected {FORMAT})", data.format)));
        }
        let key = SecretKey::from_base64(&data.encryption_key).map_err(|e| bad(e.to_string()))?;
        for (org, o) in &data.organizations {
            if let Some((name, _)) = o.environments.iter().find(|(_, e)| e.revisions.is_empty()) {
                return Err(bad(format!("environment {org}/{name} has no revisions")));
            }
        }
        Ok(Store {
            path: path.to_owned(),
            key,
            orgs: data.organizations,
        })
    }

    /// Writes the data file atomically, readable by its owner only (it holds the key).
    pub fn save(&self) -> Result<(), EscServerError> {
        let data = DataFile {
            format: FORMAT,
            encryption_key: self.key.to_base64(),
            organizations: self.orgs.clone(),
        };
        let mut text = serde_json::to_string_pretty(&data).map_err(|e| EscServerError::DataFile {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| EscServerError::io("create the ESC data directory", e))?;
        }
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            EscServerError::io("write the ESC data file", e)
        })
    }

    pub fn env(&self, org: &str, project: &str, name: &str) -> Option<&Env> {
        self.orgs.get(org)?.environments.get(&env_key(project, name))
    }

    pub fn env_mut(&mut self, org: &str, project: &str, name: &str) -> Option<&mut Env> {
        self.orgs.get_mut(org)?.environments.get_mut(&env_key(project, name))
    }

    /// Creates an environment (revision 1, empty); `Ok(None)` when it already exists.
    pub fn create_env(&mut self, org: &str, project: &str, name: &str) -> Result<Option<&mut Env>, EscServerError> {
        let envs = &mut self.orgs.entry(org.to_owned()).or_default().environments;
        let key = env_key(project, name);
        if envs.contains_key(&key) {
            return Ok(None);
        }
        let env = Env::new(project, name)?;
        Ok(Some(envs.entry(key).or_insert(env)))
    }

    /// Inserts a fully formed environment (a clone); `false` when the name is taken.
    pub fn insert_env(&mut self, org: &str, env: Env) -> bool {
        let envs = &mut self.orgs.entry(org.to_owned()).or_default().environments;
        let key = env_key(&env.project, &env.name);
        if envs.contains_key(&key) {
            return false;
        }
        envs.insert(key, env);
        true
    }

    /// A fresh environment `project/name` (new id, revision 1), for a clone to fill in.
    pub fn blank_env(project: &str, name: &str) -> Result<Env, EscServerError> {
        Env::new(project, name)
    }

    pub fn delete_env(&mut self, org: &str, project: &str, name: &str) -> bool {
        self.orgs
            .get_mut(org)
            .is_some_and(|o| o.environments.remove(&env_key(project, name)).is_some())
    }

    /// The current definitions of one organization, as imports see them.
    pub fn org_view<'a>(&'a self, org: &'a str) -> OrgView<'a> {
        OrgView { store: self, org }
    }
}

pub(crate) struct OrgView<'a> {
    store: &'a Store,
    org: &'a str,
}

impl Environments for OrgView<'_> {
    fn definition(&self, project: &str, name: &str) -> Option<String> {
        Some(self.store.env(self.org, project, name)?.current()?.definition.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("esc.json");
        let mut store = Store::open(&path).unwrap();
        let env = store.create_env("acme", "proj", "dev").unwrap().unwrap();
        let first_etag = env.etag();
        assert_eq!(env.add_revision("values: {a: 1}\n".into()), 2);
        assert_ne!(env.etag(), first_etag);
        assert!(store.create_env("acme", "proj", "dev").unwrap().is_none());
        store.save().unwrap();

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");

        let again = Store::open(&path).unwrap();
        let env = again.env("acme", "proj", "dev").unwrap();
        assert_eq!(env.head(), 2);
        assert_eq!(env.current().unwrap().definition, "values: {a: 1}\n");
        assert_eq!(again.key.to_base64(), store.key.to_base64());
        assert_eq!(
            again.org_view("acme").definition("proj", "dev").unwrap(),
            "values: {a: 1}\n"
        );
    }

    #[test]
    fn versions_resolve_by_number_and_tag() {
        let mut env = Env::new("p", "e").unwrap();
        env.add_revision("a".into());
        env.add_revision("b".into());
        env.revision_tags.insert(
            "stable".into(),
            RevisionTag {
                revision: 2,
                created: now(),
                modified: now(),
                editor_login: EDITOR_LOGIN.into(),
                editor_name: EDITOR_NAME.into(),
            },
        );
        assert_eq!(env.resolve_version("latest"), Some(3));
        assert_eq!(env.resolve_version("2"), Some(2));
        assert_eq!(env.resolve_version("stable"), Some(2));
        assert_eq!(env.resolve_version("9"), None);
        assert_eq!(env.resolve_version("nope"), None);
        assert_eq!(env.tags_of(3), vec!["latest".to_string()]);
        assert_eq!(env.tags_of(2), vec!["stable".to_string()]);
        assert_eq!(
            env.all_revision_tags().keys().collect::<Vec<_>>(),
            vec!["latest", "stable"]
        );
    }

    #[test]
    fn refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esc.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Store::open(&path).unwrap_err().category(), "data_file");
        std::fs::write(&path, "").unwrap();
        assert!(Store::open(&path).unwrap().orgs.is_empty());
    }
}
