//! The controller layer's error.

use crate::source::SourceError;

/// Errors of the controller layer. Messages never hold secret values.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("lost the leader lease; stopped writing")]
    LostLeadership,
    #[error("leader election stopped")]
    ElectionStopped,
}

impl ControllerError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            ControllerError::Kube(_) => "kube",
            ControllerError::Source(e) => e.category(),
            ControllerError::MissingField(_) => "invalid_object",
            ControllerError::LostLeadership => "lost_leadership",
            ControllerError::ElectionStopped => "election_stopped",
        }
    }
}
