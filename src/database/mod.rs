//! The systems whose credentials keyward rotates at their source (issue 17): it connects as the managing user
//! (read from ESC by the caller, never from a ManagedSecret), checks that a user exists, sets its password, and
//! logs in as a user to prove a password works. Nothing here knows Kubernetes or ESC.
//!
//! One module per system: `postgres` (PostgreSQL). No password reaches an error, a log line or the server's
//! statement log: PostgreSQL is sent a SCRAM verifier built here, never the password itself.

pub mod error;
mod postgres;

use std::fmt;
use std::time::Duration;

pub use error::DatabaseError;

use crate::secret::SecretBytes;

/// How long a connection may take to open, and a statement to run.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database systems keyward rotates credentials in, named as ESC's rotators are (`fn::rotate::postgres`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
        }
    }
}

/// Where a database listens: ESC's `inputs.database` {host, port, database}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    /// The database to connect to (PostgreSQL: `postgres` when absent).
    pub database: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.kind.as_str(), self.host, self.port)
    }
}

/// A username and its password (`Debug` shows the name only).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: SecretBytes,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, <password redacted>)", self.username)
    }
}

/// Sets `user`'s password to `password` at `endpoint`, connected as `manager`. The user must exist
/// ([`DatabaseError::UserMissing`] otherwise); nothing else about it changes.
pub async fn set_password(
    endpoint: &Endpoint,
    manager: &Credential,
    user: &str,
    password: &SecretBytes,
) -> Result<(), DatabaseError> {
    match endpoint.kind {
        Kind::Postgres => postgres::set_password(endpoint, manager, user, password).await,
    }
}

/// Opens a new connection as `credential` and runs a trivial statement: whether that login works now.
pub async fn login(endpoint: &Endpoint, credential: &Credential) -> Result<(), DatabaseError> {
    match endpoint.kind {
        Kind::Postgres => postgres::login(endpoint, credential).await,
    }
}
