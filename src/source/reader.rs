//! What a source is: something that reads the value a ManagedSecret's `spec.source` names.

use std::time::Instant;

use futures::future::BoxFuture;

use super::error::SourceError;
use crate::api;
use crate::secret::SecretBytes;

/// A value read from a source, with the revision it was read at (ESC) if the source has revisions.
#[derive(Debug, Clone)]
pub struct SourceValue {
    pub value: SecretBytes,
    pub revision: Option<i64>,
}

/// A place secret values are read from.
pub trait SecretSource: Send + Sync {
    /// Reads the value `source` (a ManagedSecret's `spec.source`) names for a ManagedSecret in `namespace`,
    /// from a read made at or after `fresh_since` (a source that does not cache reads now).
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        source: &'a api::Source,
        fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>>;
}
