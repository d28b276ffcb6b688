//! Errors of the developer tools.

/// Errors of the developer tools.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Pki(String),
    #[error("tool {name} not found at {path} (run `make tools`)")]
    ToolMissing { name: String, path: String },
    #[error("{component} did not become ready within {seconds}s; last error: {last}")]
    NotReady {
        component: String,
        seconds: u64,
        last: String,
    },
    #[error("{component} exited early with {status}; see {log}")]
    Exited {
        component: String,
        status: String,
        log: String,
    },
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("esc server: {0}")]
    EscServer(#[from] crate::esc_server::error::EscServerError),
}

impl DevError {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        DevError::Io { what, source }
    }

    /// A bounded label for this error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            DevError::Io { .. } => "io",
            DevError::Pki(_) => "pki",
            DevError::ToolMissing { .. } => "tool_missing",
            DevError::NotReady { .. } => "not_ready",
            DevError::Exited { .. } => "exited",
            DevError::Kube(_) => "kube",
            DevError::Kubeconfig(_) => "kubeconfig",
            DevError::EscServer(_) => "esc_server",
        }
    }
}
