//! Errors of the ESC server outside of answering requests (those are HTTP answers).

/// Errors of the ESC server outside of answering requests (those are HTTP answers).
#[derive(Debug, thiserror::Error)]
pub enum EscServerError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ESC data file {path}: {message}")]
    DataFile { path: String, message: String },
    #[error("invalid {what} name {name:?}")]
    InvalidName { what: &'static str, name: String },
    #[error("invalid definition for {environment}: {summary}")]
    InvalidDefinition { environment: String, summary: String },
    #[error("seed file {path}: {message}")]
    Seed { path: String, message: String },
    #[error("encryption: {0}")]
    Crypto(String),
}

impl EscServerError {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        EscServerError::Io { what, source }
    }

    /// A bounded label for this error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            EscServerError::Io { .. } => "io",
            EscServerError::DataFile { .. } => "data_file",
            EscServerError::InvalidName { .. } => "invalid_name",
            EscServerError::InvalidDefinition { .. } => "invalid_definition",
            EscServerError::Seed { .. } => "seed",
            EscServerError::Crypto(_) => "crypto",
        }
    }
}
