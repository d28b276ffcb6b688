//! What a database step needs to know: the system, where it listens, who logs in, and how long to wait.

use std::fmt;
use std::time::Duration;

use crate::secret::SecretBytes;

/// How long a connection may take to open (TCP, TLS and authentication together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may take once connected.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database systems keyward rotates credentials in, named as ESC's rotators are (`fn::rotate::postgres`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
}

impl Kind {
    /// The name ESC's rotator carries (`fn::rotate::<name>`), used in messages.
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
