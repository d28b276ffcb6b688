//! Why a database step failed. Messages name the system, its address and usernames; never a password, and never
//! a driver's own message (it can quote the statement, and with it a password literal): only the server's error
//! code.

use super::endpoint::Endpoint;

/// The step that failed, for [`DatabaseError::Timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Connect,
    Statement,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connecting",
            Step::Statement => "running a statement",
        }
    }
}

/// Why a database step failed: [`category`](Self::category) is the bounded label, [`reason`](Self::reason) the
/// condition reason, [`is_transient`](Self::is_transient) whether a retry may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    #[error("{endpoint}: unreachable")]
    Unreachable { endpoint: String },
    #[error("{endpoint}: timed out {}", step.as_str())]
    Timeout { endpoint: String, step: Step },
    #[error("{endpoint}: the managing user {user} was refused (wrong password, or not allowed to log in)")]
    ManagerRefused { endpoint: String, user: String },
    #[error("{endpoint}: the login as {user} was refused")]
    LoginRefused { endpoint: String, user: String },
    #[error("{endpoint}: {user} may not change {target}'s password (it needs CREATEROLE and ADMIN OPTION on it)")]
    PermissionDenied {
        endpoint: String,
        user: String,
        target: String,
    },
    #[error("{endpoint}: user {user} does not exist")]
    UserMissing { endpoint: String, user: String },
    #[error("{endpoint}: the server answered with error {code}")]
    Server { endpoint: String, code: String },
}

impl DatabaseError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            DatabaseError::Unreachable { .. } => "unreachable",
            DatabaseError::Timeout { .. } => "timeout",
            DatabaseError::ManagerRefused { .. } => "manager_refused",
            DatabaseError::LoginRefused { .. } => "login_refused",
            DatabaseError::PermissionDenied { .. } => "permission_denied",
            DatabaseError::UserMissing { .. } => "user_missing",
            DatabaseError::Server { .. } => "server",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            DatabaseError::Unreachable { .. } => "DatabaseUnreachable",
            DatabaseError::Timeout { .. } => "DatabaseTimeout",
            DatabaseError::ManagerRefused { .. } => "ManagingCredentialRefused",
            DatabaseError::LoginRefused { .. } => "DatabaseVerifyFailed",
            DatabaseError::PermissionDenied { .. } => "DatabasePermissionDenied",
            DatabaseError::UserMissing { .. } => "DatabaseUserMissing",
            DatabaseError::Server { .. } => "DatabaseError",
        }
    }

    /// Whether trying again later may help (the server away or slow), as opposed to a credential or grant
    /// someone must fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, DatabaseError::Unreachable { .. } | DatabaseError::Timeout { .. })
    }

    pub(super) fn unreachable(endpoint: &Endpoint) -> Self {
        DatabaseError::Unreachable {
            endpoint: endpoint.to_string(),
        }
    }

    pub(super) fn timeout(endpoint: &Endpoint, step: Step) -> Self {
        DatabaseError::Timeout {
            endpoint: endpoint.to_string(),
            step,
        }
    }
}
