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
use crate::secret::SecretBytes;

/// Values by `(environment or Secret name, path or key)`.
#[derive(Default)]
pub struct FakeSource {
    values: Mutex<HashMap<(String, String), Result<SourceValue, SourceError>>>,
    reads: AtomicUsize,
}

impl FakeSource {
    /// Serves `value` at `revision` for (`place`, `key`): an ESC environment and path, or a Secret and key.
    pub fn set(&self, place: &str, key: &str, value: &[u8], revision: i64) {
        let v = SourceValue {
            value: SecretBytes::new(value.to_vec()),
            revision: Some(revision),
        };
        self.put(place, key, Ok(v));
    }

    /// Answers reads of (`place`, `key`) with `error`.
    pub fn fail(&self, place: &str, key: &str, error: SourceError) {
        self.put(place, key, Err(error));
    }

    fn put(&self, place: &str, key: &str, result: Result<SourceValue, SourceError>) {
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
        source: &'a api::Source,
        _fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let key = match (&source.esc, &source.kubernetes_secret) {
            (Some(e), _) => (e.environment.clone(), e.path.clone()),
            (_, Some(k)) => (format!("{namespace}/{}", k.name), k.key.clone()),
            _ => (String::new(), String::new()),
        };
        let found = self.values.lock().ok().and_then(|v| v.get(&key).cloned());
        async move {
            found.unwrap_or_else(|| {
                Err(SourceError::NotFound {
                    what: format!("{} {}", key.0, key.1),
                })
            })
        }
        .boxed()
    }
}
