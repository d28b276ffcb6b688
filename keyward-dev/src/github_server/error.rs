//! Errors of the GitHub server.

/// Errors of the GitHub server: its answers to bad requests (which become GitHub's JSON error bodies) and
/// its command-line input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubServerError {
    #[error("Requires authentication")]
    MissingCredentials,
    #[error("Bad credentials")]
    BadCredentials,
    #[error("Not Found")]
    NotFound,
    #[error("Problems parsing JSON")]
    BadJson,
    /// A request GitHub would refuse with 422; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
    #[error("invalid --{flag} {value:?}: {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("token file {path}: {message}")]
    TokenFile { path: String, message: String },
}

impl GithubServerError {
    /// A bounded label for this error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            GithubServerError::MissingCredentials | GithubServerError::BadCredentials => "unauthorized",
            GithubServerError::NotFound => "not_found",
            GithubServerError::BadJson => "bad_json",
            GithubServerError::Invalid(_) => "invalid",
            GithubServerError::Internal(_) => "internal",
            GithubServerError::Flag { .. } => "flag",
            GithubServerError::TokenFile { .. } => "token_file",
        }
    }
}
