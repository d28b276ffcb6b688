//! Why ESC gave no answer keyward can use.

use std::time::Duration;

/// Why ESC gave no answer keyward can use. Messages name environments, paths and ESC's own diagnostics, never
/// values; they read as the source error they become (`SourceError`), so the texts are the same.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EscError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("not authorized by ESC: {message}")]
    Unauthorized { message: String },
    #[error("ESC is throttling requests (retry after {}s)", retry_after.map(|d| d.as_secs()).unwrap_or(0))]
    Throttled { retry_after: Option<Duration> },
    #[error("ESC is unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A request ESC refuses, an answer keyward cannot read, or a value it cannot write.
    #[error("invalid source: {0}")]
    Invalid(String),
    /// A conditional write found the object changed since it was read (HTTP 409).
    #[error("{what} was changed by someone else since it was read")]
    Conflict { what: String },
}

impl EscError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            EscError::NotFound { .. } => "not_found",
            EscError::Unauthorized { .. } => "unauthorized",
            EscError::Throttled { .. } => "throttled",
            EscError::Unavailable { .. } => "unavailable",
            EscError::Invalid(_) => "invalid",
            EscError::Conflict { .. } => "conflict",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            EscError::NotFound { .. } => "SourceNotFound",
            EscError::Unauthorized { .. } => "SourceUnauthorized",
            EscError::Throttled { .. } => "Throttled",
            EscError::Unavailable { .. } => "SourceUnavailable",
            EscError::Invalid(_) => "InvalidSource",
            EscError::Conflict { .. } => "Conflict",
        }
    }

    /// How long ESC asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EscError::Throttled { retry_after } | EscError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may help (as opposed to a spec or permission problem).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EscError::Throttled { .. } | EscError::Unavailable { .. } | EscError::Conflict { .. }
        )
    }
}
