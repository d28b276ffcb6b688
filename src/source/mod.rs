//! Where secret values come from: Pulumi ESC (shared, coalesced environment snapshots) and other Kubernetes
//! Secrets. Values are held only in zeroizing types and never formatted.

pub mod esc;
pub mod kubernetes;
pub mod path;

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A secret value. Its `Debug` never shows the bytes; its memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The bytes, for the one place that needs them: the Secret's data.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Compares secrets (tokens, signatures) without revealing through timing how much of them matched.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A value read from a source, with the revision it was read at (ESC) if the source has revisions.
#[derive(Debug, Clone)]
pub struct SourceValue {
    pub value: SecretBytes,
    pub revision: Option<i64>,
}

/// Why a source could not give a value. Messages name environments and paths, never values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("not authorized by {service}: {message}")]
    Unauthorized { service: &'static str, message: String },
    #[error("{service} is throttling requests (retry after {}s)", retry_after.map(|d| d.as_secs()).unwrap_or(0))]
    Throttled {
        service: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("invalid source: {0}")]
    Invalid(String),
    /// A conditional write found the object changed since it was read (HTTP 409).
    #[error("{what} was changed by someone else since it was read")]
    Conflict { what: String },
    #[error("no ESC endpoint configured (set --esc-url or KEYWARD_ESC_URL)")]
    NotConfigured,
}

impl SourceError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            SourceError::NotFound { .. } => "not_found",
            SourceError::Unauthorized { .. } => "unauthorized",
            SourceError::Throttled { .. } => "throttled",
            SourceError::Unavailable { .. } => "unavailable",
            SourceError::Invalid(_) => "invalid",
            SourceError::Conflict { .. } => "conflict",
            SourceError::NotConfigured => "not_configured",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::NotFound { .. } => "SourceNotFound",
            SourceError::Unauthorized { .. } => "SourceUnauthorized",
            SourceError::Throttled { .. } => "Throttled",
            SourceError::Unavailable { .. } => "SourceUnavailable",
            SourceError::Invalid(_) => "InvalidSource",
            SourceError::Conflict { .. } => "Conflict",
            SourceError::NotConfigured => "SourceNotConfigured",
        }
    }

    /// How long the source asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Throttled { retry_after, .. } | SourceError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may help (as opposed to a spec or permission problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Throttled { .. } | SourceError::Unavailable { .. } | SourceError::Conflict { .. }
        )
    }
}

/// Keyed hashes of values: they tell versions apart in annotations and status without revealing anything.
#[derive(Clone)]
pub struct ValueHasher {
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ValueHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueHasher(<key redacted>)")
    }
}

impl ValueHasher {
    pub fn new(key: Vec<u8>) -> Self {
        ValueHasher {
            key: Zeroizing::new(key),
        }
    }

    /// `hmac-sha256:<hex>` of the value.
    pub fn hash(&self, value: &[u8]) -> String {
        // new_from_slice accepts any key length for HMAC; the fallback is unreachable but keeps us panic-free.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "hmac-sha256:invalid-key".into();
        };
        mac.update(value);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_debug_redacts() {
        let s = SecretBytes::new(b"canary-123".to_vec());
        let shown = format!(
            "{s:?} {:?}",
            SourceValue {
                value: s.clone(),
                revision: Some(3)
            }
        );
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = ValueHasher::new(b"k1".to_vec());
        let b = ValueHasher::new(b"k2".to_vec());
        assert_eq!(a.hash(b"v"), a.hash(b"v"));
        assert_ne!(a.hash(b"v"), b.hash(b"v"));
        assert_ne!(a.hash(b"v"), a.hash(b"w"));
        assert!(a.hash(b"v").starts_with("hmac-sha256:"));
    }
}
