//! What a source is: something that reads the values a ManagedSecret's spec names.

use std::time::Instant;

use futures::future::BoxFuture;

use super::error::SourceError;
use crate::api;
use crate::secret::SecretData;

/// The values read from a source, by key (a single value under `target.key`; `source.esc.data` and `dataFrom`
/// under theirs), with the revision they were read at (ESC) if the source has revisions. One read is one
/// revision: every value comes from the same snapshot.
#[derive(Debug, Clone)]
pub struct SourceValue {
    pub values: SecretData,
    pub revision: Option<i64>,
}

/// A place secret values are read from.
pub trait SecretSource: Send + Sync {
    /// Reads the values `spec` (a ManagedSecret's, in `namespace`) names, from a read made at or after
    /// `fresh_since` (a source that does not cache reads now).
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a api::ManagedSecretSpec,
        fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>>;
}
