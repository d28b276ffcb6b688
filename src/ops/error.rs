//! Why an operations command failed, and the problems an input has.

/// Why an operations command failed. Messages name files, lines, objects and steps — never a secret value
/// (these commands never read one).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The input (secret map, overrides, or what it generates) has problems; each is listed.
    #[error("{source_name}: {} problem{}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, list(problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Usage(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{action}: {source}")]
    Kube { action: String, source: kube::Error },
    #[error("ManagedSecret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(
        "ManagedSecret {namespace}/{name} already rotated for reason {reason:?}; give a new reason, or --force to \
         rotate again for this one (a timestamp is appended)"
    )]
    AlreadyHandled {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("timed out after {after} waiting for: {step}")]
    Timeout { after: String, step: String },
    #[error("{0}")]
    Internal(String),
}

impl OpsError {
    /// A bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            OpsError::Invalid { .. } => "invalid_input",
            OpsError::Read { .. } | OpsError::Write { .. } => "io",
            OpsError::Usage(_) => "usage",
            OpsError::Kubeconfig(_) => "kubeconfig",
            OpsError::Kube { .. } => "kube_api",
            OpsError::NotFound { .. } => "not_found",
            OpsError::AlreadyHandled { .. } => "already_handled",
            OpsError::Timeout { .. } => "timeout",
            OpsError::Internal(_) => "internal",
        }
    }

    /// Wraps a Kubernetes API error, turning a 404 into [`OpsError::NotFound`] for the object named.
    pub(crate) fn kube(action: impl Into<String>, namespace: &str, name: &str, e: kube::Error) -> OpsError {
        match e {
            kube::Error::Api(s) if s.code == 404 => OpsError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            source => OpsError::Kube {
                action: action.into(),
                source,
            },
        }
    }
}

/// One problem with an input, where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the input file, when known.
    pub line: Option<usize>,
    /// The secret (map key) it concerns, when known.
    pub secret: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, &self.secret) {
            (Some(l), Some(s)) => write!(f, "line {l}: {s}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            (None, Some(s)) => write!(f, "{s}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}
