//! A source for unit tests: values and errors set by the test, keyed by what a spec names (an ESC environment
//! and path, or a Secret and key), and a count of reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::error::SourceError;
use super::reader::{SecretSource, SourceValue};
use crate::api;
use crate::secret::{SecretBytes, SecretData};

/// One answer: a value and its revision, or an error.
type Answer = Result<(SecretBytes, Option<i64>), SourceError>;

/// Values by `(environment or Secret name, path or key)`.
#[derive(Default)]
pub struct FakeSource {
    values: Mutex<HashMap<(String, String), Answer>>,
    reads: AtomicUsize,
}

impl FakeSource {
    /// Serves `value` at `revision` for (`place`, `key`): an ESC environment and path, or a Secret and key.
    pub fn set(&self, place: &str, key: &str, value: &[u8], revision: i64) {
        self.put(place, key, Ok((SecretBytes::new(value.to_vec()), Some(revision))));
    }

    /// Answers reads of (`place`, `key`) with `error`.
    pub fn fail(&self, place: &str, key: &str, error: SourceError) {
        self.put(place, key, Err(error));
    }

    fn put(&self, place: &str, key: &str, result: Answer) {
        if let Ok(mut values) = self.values.lock() {
            values.insert((place.to_string(), key.to_string()), result);
        }
    }

    /// How many reads were made.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

impl SecretSource for FakeSource {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a api::ManagedSecretSpec,
        _fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        // (place, path or key, the data key it is stored under)
        let wanted: Vec<(String, String, String)> = match (&spec.source.esc, &spec.source.kubernetes_secret) {
            (Some(e), _) => e
                .path
                .iter()
                .map(|p| (p.clone(), spec.target.key.clone().unwrap_or_default()))
                .chain(e.data.iter().map(|d| (d.path.clone(), d.key.clone())))
                .map(|(path, key)| (e.environment.clone(), path, key))
                .collect(),
            (_, Some(k)) => vec![(
                format!("{namespace}/{}", k.name),
                k.key.clone(),
                spec.target.key.clone().unwrap_or_default(),
            )],
            _ => Vec::new(),
        };
        let values = self.values.lock().ok().map(|v| v.clone()).unwrap_or_default();
        let result = (|| {
            let mut out = SecretData::default();
            let mut revision = None;
            for (place, path, key) in wanted {
                let found = values.get(&(place.clone(), path.clone())).cloned().unwrap_or_else(|| {
                    Err(SourceError::NotFound {
                        what: format!("{place} {path}"),
                    })
                })?;
                out.insert(key, found.0);
                revision = found.1;
            }
            Ok(SourceValue { values: out, revision })
        })();
        async move { result }.boxed()
    }
}
