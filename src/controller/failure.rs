//! Why a phase did not do its job: a condition reason, a message that holds no value, and how long the other
//! side asked us to wait.

use std::time::Duration;

use crate::esc::EscError;
use crate::push::PushError;
use crate::source::SourceError;

/// Why a sync, rotation or push did not happen, as a condition reason and a message that holds no value.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Authorization refused the object (a missing grant or a broken rule): counted and audited as a denial.
    pub denied: bool,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
            denied: false,
        }
    }

    /// A refusal by authorization.
    pub fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            denied: true,
            ..Failure::new(reason, message)
        }
    }
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            denied: false,
        }
    }
}

impl From<EscError> for Failure {
    fn from(e: EscError) -> Self {
        SourceError::from(e).into()
    }
}

impl From<PushError> for Failure {
    fn from(e: PushError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            denied: false,
        }
    }
}

/// A failed write or read of the target Secret (or its rollback copy). API server messages can quote object
/// content; only the code and reason are kept.
pub fn kube_failure(what: &str, e: &kube::Error) -> Failure {
    let message = match e {
        kube::Error::Api(s) => format!("{what} failed: HTTP {} {}", s.code, s.reason),
        _ => format!("{what} failed: API server unreachable"),
    };
    Failure::new("TargetWriteFailed", message)
}
