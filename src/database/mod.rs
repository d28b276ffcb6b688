//! The systems whose credentials keyward rotates at their source (issue 17): it connects as the managing user
//! (read from ESC by the caller, never from a ManagedSecret), checks that a user exists, sets its password, and
//! logs in as a user to prove a password works. Nothing here knows Kubernetes or ESC.
//!
//! One module per system: `postgres` (PostgreSQL). No password reaches an error, a log line or the server's
//! statement log: PostgreSQL is sent a SCRAM verifier built here, never the password itself.

mod endpoint;
pub mod error;
mod postgres;

pub use endpoint::{CONNECT_TIMEOUT, Credential, Endpoint, Kind, STATEMENT_TIMEOUT};
pub use error::DatabaseError;

use crate::secret::SecretBytes;

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
