//! PostgreSQL (tokio-postgres). ALTER ROLE takes no bind parameters, so the statement is built: the role name
//! quoted as an identifier, and the password sent as a SCRAM-SHA-256 verifier built here
//! (`postgres_protocol::password::scram_sha_256`), which PostgreSQL stores as it is — the password itself never
//! reaches the server, its logs or `pg_stat_statements`. Since PostgreSQL 16 the managing role needs ADMIN OPTION
//! on the roles it changes, besides CREATEROLE.

use std::future::Future;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::endpoint::{CONNECT_TIMEOUT, Credential, Endpoint, STATEMENT_TIMEOUT};
use super::error::{DatabaseError, Step};
use crate::secret::SecretBytes;

/// Who is connecting: the managing user (a refusal is [`DatabaseError::ManagerRefused`]) or a user whose login
/// is being proved ([`DatabaseError::LoginRefused`]).
#[derive(Clone, Copy)]
enum As {
    Manager,
    User,
}

pub async fn set_password(
    endpoint: &Endpoint,
    manager: &Credential,
    user: &str,
    password: &SecretBytes,
) -> Result<(), DatabaseError> {
    let client = connect(endpoint, manager, As::Manager).await?;
    let exists = timed(
        endpoint,
        client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user]),
    )
    .await?
    .map_err(|e| classify(endpoint, manager, user, &e))?;
    if exists.is_none() {
        return Err(DatabaseError::UserMissing {
            endpoint: endpoint.to_string(),
            user: user.to_string(),
        });
    }
    let verifier = postgres_protocol::password::scram_sha_256(password.expose());
    let statement = format!(
        "ALTER ROLE {} PASSWORD {}",
        escape_identifier(user),
        escape_literal(&verifier)
    );
    timed(endpoint, client.batch_execute(&statement))
        .await?
        .map_err(|e| classify(endpoint, manager, user, &e))
}

pub async fn login(endpoint: &Endpoint, credential: &Credential) -> Result<(), DatabaseError> {
    let client = connect(endpoint, credential, As::User).await?;
    timed(endpoint, client.simple_query("SELECT 1"))
        .await?
        .map(drop)
        .map_err(|e| classify(endpoint, credential, &credential.username, &e))
}

async fn connect(endpoint: &Endpoint, credential: &Credential, who: As) -> Result<Client, DatabaseError> {
    let mut config = Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .user(&credential.username)
        .password(credential.password.expose())
        .dbname(endpoint.database.as_deref().unwrap_or("postgres"))
        .application_name("keyward")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| DatabaseError::timeout(endpoint, Step::Connect))?
        .map_err(|e| match e.code() {
            Some(c) if is_refusal(c) => refused(endpoint, credential, who),
            Some(c) => DatabaseError::Server {
                endpoint: endpoint.to_string(),
                code: c.code().to_string(),
            },
            None => DatabaseError::unreachable(endpoint),
        })?;
    // The connection runs until the client is dropped; its own error is the next statement's.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn timed<T>(endpoint: &Endpoint, f: impl Future<Output = T>) -> Result<T, DatabaseError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, f)
        .await
        .map_err(|_| DatabaseError::timeout(endpoint, Step::Statement))
}

/// PostgreSQL's answers to a login it refuses: a wrong password, or a role that may not log in (also an expired
/// `VALID UNTIL`).
fn is_refusal(code: &SqlState) -> bool {
    *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
}

fn refused(endpoint: &Endpoint, credential: &Credential, who: As) -> DatabaseError {
    let (endpoint, user) = (endpoint.to_string(), credential.username.clone());
    match who {
        As::Manager => DatabaseError::ManagerRefused { endpoint, user },
        As::User => DatabaseError::LoginRefused { endpoint, user },
    }
}

/// A statement's error by its SQLSTATE only (the driver's message can quote the statement).
fn classify(endpoint: &Endpoint, credential: &Credential, target: &str, e: &tokio_postgres::Error) -> DatabaseError {
    match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => DatabaseError::PermissionDenied {
            endpoint: endpoint.to_string(),
            user: credential.username.clone(),
            target: target.to_string(),
        },
        Some(c) if *c == SqlState::UNDEFINED_OBJECT => DatabaseError::UserMissing {
            endpoint: endpoint.to_string(),
            user: target.to_string(),
        },
        Some(c) => DatabaseError::Server {
            endpoint: endpoint.to_string(),
            code: c.code().to_string(),
        },
        None => DatabaseError::unreachable(endpoint),
    }
}
