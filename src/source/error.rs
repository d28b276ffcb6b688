//! Why a source could not give a value.

use std::time::Duration;

use crate::esc::EscError;

/// Why a source could not give a value. Messages name environments and paths, never values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error(transparent)]
    Esc(#[from] EscError),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("not authorized by {service}: {message}")]
    Unauthorized { service: &'static str, message: String },
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("invalid source: {0}")]
    Invalid(String),
    #[error("no ESC endpoint configured (set --esc-url or KEYWARD_ESC_URL)")]
    NotConfigured,
}

impl SourceError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            SourceError::Esc(e) => e.category(),
            SourceError::NotFound { .. } => "not_found",
            SourceError::Unauthorized { .. } => "unauthorized",
            SourceError::Unavailable { .. } => "unavailable",
            SourceError::Invalid(_) => "invalid",
            SourceError::NotConfigured => "not_configured",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Esc(e) => e.reason(),
            SourceError::NotFound { .. } => "SourceNotFound",
            SourceError::Unauthorized { .. } => "SourceUnauthorized",
            SourceError::Unavailable { .. } => "SourceUnavailable",
            SourceError::Invalid(_) => "InvalidSource",
            SourceError::NotConfigured => "SourceNotConfigured",
        }
    }

    /// How long the source asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Esc(e) => e.retry_after(),
            SourceError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may help (as opposed to a spec or permission problem).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Esc(e) => e.is_transient(),
            SourceError::Unavailable { .. } => true,
            _ => false,
        }
    }
}
