//! What the ESC server's request handlers share: the store, open sessions, counters and injected faults, and
//! the rules for names.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::EscServerError;
use super::eval::EValue;
use super::secrets;
use super::store::{self, Store};

/// Requests the server has seen since it started (or since the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Every request to the ESC API, including those answered by a fault or refused for authentication.
    pub total: u64,
    /// By endpoint name: `listEnvironments`, `createEnvironment`, `checkYaml`, `getDefinition`, `getETag`,
    /// `update`, `delete`, `clone`, `decrypt`, `open`, `openAtVersion`, `read`, `readProperty`, `versions`,
    /// `getAtVersion`, `listRevisionTags`, `createRevisionTag`, `getRevisionTag`, `updateRevisionTag`,
    /// `deleteRevisionTag`, `listTags`, `createTag`, `getTag`, `updateTag`, `deleteTag`, `rotate`, and
    /// `notFound` for paths outside the API.
    pub requests: BTreeMap<String, u64>,
    /// Open requests (`open` and `openAtVersion`) by environment, `org/project/env`.
    pub opens: BTreeMap<String, u64>,
    /// Requests answered with an injected fault instead of by the API.
    pub faults_injected: u64,
}

impl Counters {
    /// Requests to one endpoint (0 when none).
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Opens of one environment, `org/project/env` (0 when none).
    pub fn opens(&self, environment: &str) -> u64 {
        self.opens.get(environment).copied().unwrap_or(0)
    }
}

/// What an injected fault does to ESC requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Requests are served normally (latency still applies).
    #[default]
    None,
    /// 503 Service Unavailable, with `Retry-After` when `retry_after_seconds` is set.
    Unavailable,
    /// 429 Too Many Requests with `Retry-After` (1 second unless `retry_after_seconds` says otherwise).
    Throttled,
    /// 409 Conflict for definition updates (`PATCH` of an environment) only, as if someone else had written
    /// since the update's ETag was read; other requests are served normally and do not use up `fail_count`.
    Conflict,
}

/// A fault to inject into ESC requests (the `/_dev/fault` body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    pub mode: FaultMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Added to every ESC request, failing or not.
    #[serde(default)]
    pub latency_ms: u64,
    /// How many requests fail before the fault heals by itself (mode back to `none`); unset: until changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_count: Option<u64>,
}

impl Fault {
    /// No fault.
    pub fn none() -> Self {
        Fault::default()
    }

    /// 503 for every request, with `Retry-After` when given.
    pub fn unavailable(retry_after_seconds: Option<u64>) -> Self {
        Fault {
            mode: FaultMode::Unavailable,
            retry_after_seconds,
            ..Fault::default()
        }
    }

    /// 429 with `Retry-After` for every request.
    pub fn throttled(retry_after_seconds: u64) -> Self {
        Fault {
            mode: FaultMode::Throttled,
            retry_after_seconds: Some(retry_after_seconds),
            ..Fault::default()
        }
    }

    /// The next `n` definition updates answer 409, as if someone else had written first.
    pub fn conflict(n: u64) -> Self {
        Fault {
            mode: FaultMode::Conflict,
            fail_count: Some(n),
            ..Fault::default()
        }
    }

    /// Only the next `n` requests fail.
    pub fn with_fail_count(self, n: u64) -> Self {
        Fault {
            fail_count: Some(n),
            ..self
        }
    }

    /// Every request waits this long first.
    pub fn with_latency(self, latency: Duration) -> Self {
        Fault {
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            ..self
        }
    }
}

/// An open session: the evaluated environment, kept for the session's duration.
pub(super) struct Session {
    pub(super) org: String,
    pub(super) env: String,
    pub(super) properties: EValue,
    pub(super) expires: Instant,
}

/// Everything the request handlers share.
pub(crate) struct EscServerState {
    pub(super) store: Mutex<Store>,
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    pub(super) counters: Mutex<Counters>,
    pub(super) fault: Mutex<Fault>,
    pub(super) token: Mutex<Option<String>>,
}

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still usable here.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Organization names, as the spec's `orgName` pattern: `^[a-zA-Z0-9][a-zA-Z0-9-_]{1,38}[a-zA-Z0-9]$`.
pub(crate) fn valid_org(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=40).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fn name_chars(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Project names, as the spec's `ProjectName` pattern `^(?!(\.|\.\.|default))[a-zA-Z0-9-_.]+$`, except that
/// `default` itself is allowed: it is the legacy project that a bare `org/env` name means.
pub(crate) fn valid_project(name: &str) -> bool {
    name == "default" || (name_chars(name) && !name.starts_with('.') && !name.starts_with("default"))
}

/// Environment names, as the spec's `EnvName` pattern `^(?!(\.|\.\.|open|yaml))[a-zA-Z0-9-_.]+$` (which the
/// official client enforces as written: no name may start with `open` or `yaml`).
pub(crate) fn valid_env(name: &str) -> bool {
    name_chars(name) && !name.starts_with('.') && !name.starts_with("open") && !name.starts_with("yaml")
}

fn check_names(org: &str, project: &str, env: &str) -> Result<(), EscServerError> {
    let bad = |what: &'static str, name: &str| EscServerError::InvalidName {
        what,
        name: name.to_owned(),
    };
    if !valid_org(org) {
        return Err(bad("organization", org));
    }
    if !valid_project(project) {
        return Err(bad("project", project));
    }
    if !valid_env(env) {
        return Err(bad("environment", env));
    }
    Ok(())
}

/// Splits `org/project/env`, or `org/env` for the `default` project.
pub fn split_environment(reference: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [org, project, env] => Some(((*org).into(), (*project).into(), (*env).into())),
        [org, env] => Some(((*org).into(), "default".into(), (*env).into())),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default)]
    environments: BTreeMap<String, String>,
}

impl EscServerState {
    pub(super) fn new(store: Store, token: Option<String>) -> Self {
        EscServerState {
            store: Mutex::new(store),
            sessions: Mutex::new(HashMap::new()),
            counters: Mutex::new(Counters::default()),
            fault: Mutex::new(Fault::default()),
            token: Mutex::new(token),
        }
    }

    /// Stores a new revision of a definition (creating the environment if missing); `fn::secret`
    /// plaintexts are encrypted first. With `skip_unchanged`, a definition equal to the current one (secrets
    /// compared by plaintext) stores nothing and returns the current revision.
    pub(super) fn put_definition(
        &self,
        org: &str,
        project: &str,
        env: &str,
        yaml: &str,
        skip_unchanged: bool,
    ) -> Result<u64, EscServerError> {
        check_names(org, project, env)?;
        let mut store = lock(&self.store);
        let name = store::env_key(project, env);
        let encrypted = secrets::encrypt_definition(&store.key, &name, yaml).map_err(|diags| {
            EscServerError::InvalidDefinition {
                environment: format!("{org}/{name}"),
                summary: diags.iter().map(|d| d.summary.as_str()).collect::<Vec<_>>().join("; "),
            }
        })?;
        if skip_unchanged && let Some(current) = store.env(org, project, env).and_then(|e| e.current()) {
            let now = secrets::decrypt_definition(&store.key, &current.definition);
            let new = secrets::decrypt_definition(&store.key, &encrypted);
            if now.is_ok() && now == new {
                return Ok(current.number);
            }
        }
        if store.env(org, project, env).is_none() {
            store.create_env(org, project, env)?;
        }
        let revision = store
            .env_mut(org, project, env)
            .map(|e| e.add_revision(encrypted))
            .ok_or_else(|| EscServerError::DataFile {
                path: String::new(),
                message: format!("environment {org}/{name} vanished while being written"),
            })?;
        store.save()?;
        Ok(revision)
    }

    pub(super) fn seed(&self, path: &Path) -> Result<usize, EscServerError> {
        let bad = |message: String| EscServerError::Seed {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let seed: SeedFile = serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for (reference, definition) in &seed.environments {
            let (org, project, env) = split_environment(reference)
                .ok_or_else(|| bad(format!("{reference:?} is not org/project/env or org/env")))?;
            self.put_definition(&org, &project, &env, definition, true)?;
        }
        Ok(seed.environments.len())
    }
}
