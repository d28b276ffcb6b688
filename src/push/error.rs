//! Why a push failed.

use std::time::Duration;

/// Why a push failed. Messages name the target (`github:repo/acme/app/NAME`) and quote the service's own
/// message; they never hold the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("{target}: the credentials were rejected: {message}")]
    Unauthorized { target: String, message: String },
    #[error("{target}: the token may not do this: {message}")]
    Forbidden { target: String, message: String },
    #[error("{target}: not found (it does not exist or the token cannot see it)")]
    NotFound { target: String },
    #[error("{target}: rate limited, retry after {}s", ceil_secs(*retry_after))]
    RateLimited { target: String, retry_after: Duration },
    #[error("{target}: unavailable: {message}")]
    Unavailable { target: String, message: String },
    #[error("{target}: {message}")]
    Invalid { target: String, message: String },
}

/// Whole seconds, rounded up: "retry after 0s" for a wait of 300ms would invite an early retry.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl PushError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            PushError::Unauthorized { .. } => "unauthorized",
            PushError::Forbidden { .. } => "forbidden",
            PushError::NotFound { .. } => "not_found",
            PushError::RateLimited { .. } => "rate_limited",
            PushError::Unavailable { .. } => "unavailable",
            PushError::Invalid { .. } => "invalid",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Unauthorized { .. } => "Unauthorized",
            PushError::Forbidden { .. } => "Forbidden",
            PushError::NotFound { .. } => "NotFound",
            PushError::RateLimited { .. } => "RateLimited",
            PushError::Unavailable { .. } => "Unavailable",
            PushError::Invalid { .. } => "Invalid",
        }
    }

    /// How long the service asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether trying again later may help (as opposed to a spec or permission problem).
    pub fn is_transient(&self) -> bool {
        matches!(self, PushError::RateLimited { .. } | PushError::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_waits_round_up() {
        let e = PushError::RateLimited {
            target: "github:org/acme/X".into(),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!((e.category(), e.reason()), ("rate_limited", "RateLimited"));
        assert_eq!(e.to_string(), "github:org/acme/X: rate limited, retry after 2s");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        assert!(e.is_transient());
        let e = PushError::NotFound { target: "t".into() };
        assert_eq!(
            (e.category(), e.reason(), e.retry_after()),
            ("not_found", "NotFound", None)
        );
        assert!(!e.is_transient());
    }
}
