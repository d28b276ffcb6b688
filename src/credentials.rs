//! keyward's own credentials — the ESC token, the GitHub token, the webhook's shared secret — read from a file
//! (a mounted Secret volume, as the chart does) or from a key of a Secret, and read again every
//! `--credential-reload-seconds` so that a rotated credential is used from the next request on, without a
//! restart. A change is logged by the credential's name and source, never with its content; a source that
//! cannot be read keeps the value in use (a kubelet swapping a volume's files, a Secret briefly absent).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why a credential could not be read. Messages name the source (path, Secret and key), never the content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("Secret {namespace}/{name}: {error}")]
    Secret {
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    NoKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{from} is not UTF-8 text (a token must be)")]
    NotText { from: String },
    #[error("{flag} must be NAMESPACE/NAME[:KEY], got {reference:?}")]
    Reference { flag: &'static str, reference: String },
    #[error("{from} names a Secret, but there is no cluster client to read it with")]
    NoClient { from: String },
}

impl CredentialError {
    /// A bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            CredentialError::File { .. } => "file",
            CredentialError::Secret { .. } => "secret",
            CredentialError::NoKey { .. } => "no_key",
            CredentialError::NotText { .. } => "not_text",
            CredentialError::Reference { .. } => "reference",
            CredentialError::NoClient { .. } => "no_client",
        }
    }
}

/// Where a credential is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// A file, read whole.
    File(PathBuf),
    /// A key of a Secret.
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
}

impl CredentialSource {
    /// A Secret reference as the flags take it, `NAMESPACE/NAME[:KEY]` (`key` when no KEY is given); `flag`
    /// names the flag in the error.
    pub fn secret(reference: &str, key: &str, flag: &'static str) -> Result<Self, CredentialError> {
        let bad = || CredentialError::Reference {
            flag,
            reference: reference.to_string(),
        };
        let (ns_name, key) = reference.split_once(':').unwrap_or((reference, key));
        let (namespace, name) = ns_name.split_once('/').ok_or_else(bad)?;
        if namespace.is_empty() || name.is_empty() || key.is_empty() {
            return Err(bad());
        }
        Ok(CredentialSource::Secret {
            namespace: namespace.into(),
            name: name.into(),
            key: key.into(),
        })
    }

    async fn read(&self, client: Option<&Client>) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
        match self {
            CredentialSource::File(path) => {
                std::fs::read(path)
                    .map(Zeroizing::new)
                    .map_err(|error| CredentialError::File {
                        path: path.display().to_string(),
                        error,
                    })
            }
            CredentialSource::Secret { namespace, name, key } => {
                let client = client.ok_or_else(|| CredentialError::NoClient { from: self.to_string() })?;
                let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await
                    .map_err(|error| CredentialError::Secret {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        error: Box::new(error),
                    })?;
                let bytes = secret
                    .data
                    .and_then(|mut d| d.remove(key))
                    .ok_or_else(|| CredentialError::NoKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: key.clone(),
                    })?;
                Ok(Zeroizing::new(bytes.0))
            }
        }
    }
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::File(path) => write!(f, "file {}", path.display()),
            CredentialSource::Secret { namespace, name, key } => write!(f, "Secret {namespace}/{name} key {key}"),
        }
    }
}

/// How a credential's bytes are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A token sent in a header: UTF-8, surrounding whitespace dropped.
    Token,
    /// A key used as bytes (an HMAC key): a trailing newline or spaces (`echo secret > file`) dropped.
    Key,
}

impl Form {
    fn take(self, bytes: &[u8], source: &CredentialSource) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
        match self {
            Form::Token => std::str::from_utf8(bytes)
                .map(|text| Zeroizing::new(text.trim().as_bytes().to_vec()))
                .map_err(|_| CredentialError::NotText {
                    from: source.to_string(),
                }),
            Form::Key => Ok(Zeroizing::new(bytes.trim_ascii_end().to_vec())),
        }
    }
}

/// A credential's bytes, shared by the readers that hold it while the slot moves on to a newer one.
pub type Value = Arc<Zeroizing<Vec<u8>>>;

/// A credential as the clients read it on each request: a shared handle, updated in place when its source
/// changes. Cloning shares the value. `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Credential {
    value: Arc<RwLock<Option<Value>>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.bytes().is_some() {
            "Credential(<redacted>)"
        } else {
            "Credential(none)"
        })
    }
}

impl Credential {
    /// A credential that never changes (tests, and callers that hold a value).
    pub fn fixed(value: Option<Zeroizing<String>>) -> Self {
        let credential = Credential::default();
        if let Some(v) = value {
            credential.set(Zeroizing::new(v.as_bytes().to_vec()));
        }
        credential
    }

    /// The value in force now, if any.
    pub fn bytes(&self) -> Option<Value> {
        self.value.read().ok().and_then(|v| v.clone())
    }

    /// The value in force now as text; `None` when there is none or it is not UTF-8 (a [`Form::Token`] always is).
    pub fn text(&self) -> Option<Zeroizing<String>> {
        let bytes = self.bytes()?;
        std::str::from_utf8(&bytes).ok().map(|t| Zeroizing::new(t.to_string()))
    }

    fn set(&self, value: Zeroizing<Vec<u8>>) {
        if let Ok(mut slot) = self.value.write() {
            *slot = Some(Arc::new(value));
        }
    }
}

/// One credential of keyward's and where it comes from.
#[derive(Clone, Debug)]
pub struct Watched {
    /// What it is, for logs: "ESC token", "GitHub token", "webhook secret".
    pub name: &'static str,
    pub source: CredentialSource,
    pub form: Form,
}

impl Watched {
    /// Reads the credential once (start-up: an error stops keyward with the message).
    pub async fn load(&self, client: Option<&Client>) -> Result<Credential, CredentialError> {
        let credential = Credential::default();
        credential.set(self.read(client).await?);
        Ok(credential)
    }

    async fn read(&self, client: Option<&Client>) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
        let bytes = self.source.read(client).await?;
        self.form.take(&bytes, &self.source)
    }

    /// Reads the source every `interval` and puts a changed value in `credential`, logging which credential
    /// changed. A failed read is logged once (until a read succeeds again) and keeps the value in use.
    pub async fn keep_fresh(self, credential: Credential, client: Option<Client>, interval: Duration) {
        let initial = credential.bytes();
        self.on_change(client, interval, initial.as_ref().map(|v| v.as_slice()), |value| {
            credential.set(value);
            Ok(())
        })
        .await;
    }

    /// Reads the source every `interval` and hands a value that differs from the last one (`initial` at
    /// first) to `take`; `take`'s error (a file that changed but does not parse) is logged and the value in use
    /// stays. Runs until dropped.
    pub async fn on_change(
        self,
        client: Option<Client>,
        interval: Duration,
        initial: Option<&[u8]>,
        mut take: impl FnMut(Zeroizing<Vec<u8>>) -> Result<(), String>,
    ) {
        // Compared by digest so the loop holds no second copy of the value.
        let digest = |v: &[u8]| Sha256::digest(v);
        let mut current = initial.map(digest);
        let mut failing = false;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let value = match self.read(client.as_ref()).await {
                Ok(value) => value,
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            credential = self.name,
                            source = %self.source,
                            category = e.category(),
                            error = %e,
                            "not readable: keeping the value in use"
                        );
                    }
                    continue;
                }
            };
            if failing {
                tracing::info!(credential = self.name, source = %self.source, "readable again");
                failing = false;
            }
            let seen = digest(&value);
            if current == Some(seen) {
                continue;
            }
            current = Some(seen);
            match take(value) {
                Ok(()) => tracing::info!(
                    credential = self.name,
                    source = %self.source,
                    "changed: the next requests use the new value"
                ),
                Err(error) => tracing::warn!(
                    credential = self.name,
                    source = %self.source,
                    error,
                    "changed, but the new value is refused: keeping the value in use"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn secret_references_take_a_default_key_and_refuse_what_is_not_one() {
        assert_eq!(
            CredentialSource::secret("ns/esc", "token", "--esc-token-secret").unwrap(),
            CredentialSource::Secret {
                namespace: "ns".into(),
                name: "esc".into(),
                key: "token".into()
            }
        );
        assert_eq!(
            CredentialSource::secret("ns/esc:pat", "token", "--x")
                .unwrap()
                .to_string(),
            "Secret ns/esc key pat"
        );
        for bad in ["esc", "/esc", "ns/", "ns/esc:"] {
            let e = CredentialSource::secret(bad, "token", "--esc-token-secret").unwrap_err();
            assert_eq!(e.category(), "reference");
            assert!(
                e.to_string()
                    .starts_with("--esc-token-secret must be NAMESPACE/NAME[:KEY]"),
                "{e}"
            );
        }
    }

    #[test]
    fn tokens_are_trimmed_text_and_keys_lose_only_a_trailing_newline() {
        let src = CredentialSource::File("/x".into());
        assert_eq!(Form::Token.take(b"  tok\n", &src).unwrap().as_slice(), b"tok");
        assert_eq!(Form::Key.take(b" key \n", &src).unwrap().as_slice(), b" key");
        let e = Form::Token.take(&[0xff, 0xfe], &src).unwrap_err();
        assert_eq!(e.to_string(), "file /x is not UTF-8 text (a token must be)");
    }

    #[tokio::test]
    async fn a_changed_file_is_used_from_the_next_read_and_an_unreadable_one_keeps_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let watched = Watched {
            name: "ESC token",
            source: CredentialSource::File(path.clone()),
            form: Form::Token,
        };
        let credential = watched.load(None).await.unwrap();
        assert_eq!(credential.text().unwrap().as_str(), "first");
        let interval = Duration::from_millis(20);
        let task = tokio::spawn(watched.keep_fresh(credential.clone(), None, interval));
        // As a kubelet does for a Secret volume: the file goes, then comes back with the new value.
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(interval * 5).await;
        assert_eq!(
            credential.text().unwrap().as_str(),
            "first",
            "a missing file keeps the value in use"
        );
        std::fs::write(&path, "second").unwrap();
        let changed = async {
            while credential.text().unwrap().as_str() != "second" {
                tokio::time::sleep(interval).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), changed)
            .await
            .expect("the new value is taken");
        task.abort();
        assert_eq!(format!("{credential:?}"), "Credential(<redacted>)");
    }
}
