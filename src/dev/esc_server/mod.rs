//! A local Pulumi ESC server: the part of the ESC REST API (`../shared/reference/pulumi-esc-openapi.yaml`)
//! that keyward uses and that a demo needs, faithful enough for the official `pulumi-esc-sdk` client.
//! Pulumi's service is not reachable from tests or demos; this stands in for it.
//!
//! Beside the ESC API (under `/api/esc`) it answers development-only control endpoints under `/_dev/`:
//! request counters (so tests can prove keyward's calls stay bounded) and fault injection (outages,
//! throttling, latency).

mod crypto;
mod eval;
mod path;
mod rotate;
mod routes;
mod secrets;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::DevError;
use super::serve::{Serving, bind, serve};
use eval::EValue;
use store::Store;

/// How to start an [`EscServer`].
#[derive(Debug, Clone)]
pub struct EscServerOptions {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The data file (JSON); created with a new encryption key when missing or empty.
    pub data: PathBuf,
    /// When set, every ESC request must carry `Authorization: token <T>`; when unset, any or none is accepted.
    pub token: Option<String>,
}

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

/// An open session: the evaluated environment, kept for the session's duration.
struct Session {
    org: String,
    env: String,
    properties: EValue,
    expires: Instant,
}

/// Everything the request handlers share.
pub(crate) struct State {
    store: Mutex<Store>,
    sessions: Mutex<HashMap<String, Session>>,
    counters: Mutex<Counters>,
    fault: Mutex<Fault>,
    token: Option<String>,
}

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still usable here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

impl State {
    fn new(store: Store, token: Option<String>) -> Self {
        State {
            store: Mutex::new(store),
            sessions: Mutex::new(HashMap::new()),
            counters: Mutex::new(Counters::default()),
            fault: Mutex::new(Fault::default()),
            token,
        }
    }

    /// Stores a new revision of a definition (creating the environment if missing); `fn::secret`
    /// plaintexts are encrypted first. With `skip_unchanged`, a definition equal to the current one (secrets
    /// compared by plaintext) stores nothing and returns the current revision.
    fn put_definition(
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

    fn seed(&self, path: &Path) -> Result<usize, EscServerError> {
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

/// A running ESC server. [`EscServer::stop`] ends it; dropping it also asks it to stop.
pub struct EscServer {
    serving: Serving,
    state: Arc<State>,
}

impl EscServer {
    /// Loads (or creates) the data file, binds the listener and starts serving.
    pub async fn start(opts: EscServerOptions) -> Result<EscServer, DevError> {
        let store = Store::open(&opts.data)?;
        // Written at once, so the key exists on disk from the first start even if nothing changes.
        store.save()?;
        let (listener, addr) = bind(opts.listen, "bind the ESC server").await?;
        let state = Arc::new(State::new(store, opts.token.filter(|t| !t.is_empty())));
        let serving = serve(listener, addr, "esc server", routes::router(state.clone()));
        Ok(EscServer { serving, state })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// The ESC API base URL, e.g. `http://127.0.0.1:PORT/api/esc`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/esc", self.serving.addr)
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        lock(&self.state.counters).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *lock(&self.state.counters) = Counters::default();
    }

    /// Injects a fault into the ESC requests that follow (`Fault::none()` clears it).
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    /// The fault in force (after any self-healing).
    pub fn fault(&self) -> Fault {
        lock(&self.state.fault).clone()
    }

    /// Stores a new revision of `org/project/env`'s definition, creating the environment when missing, and
    /// returns the revision number. Plaintext `fn::secret` values are encrypted as an update would.
    pub fn put_definition(&self, org: &str, project: &str, env: &str, yaml: &str) -> Result<u64, EscServerError> {
        self.state.put_definition(org, project, env, yaml, false)
    }

    /// Loads a seed file (`{environments: {"org/project/env": "<definition>"}}`): each definition is stored
    /// unless the environment already has exactly it. Returns how many environments the file names.
    pub fn seed(&self, path: &Path) -> Result<usize, EscServerError> {
        self.state.seed(path)
    }

    /// Stops serving and waits (briefly) for open connections to finish.
    pub async fn stop(mut self) {
        self.serving.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_patterns() {
        assert!(valid_org("acme") && valid_org("ai-cherry") && valid_org("a_b1"));
        assert!(!valid_org("ab") && !valid_org("-acme") && !valid_org("acme-") && !valid_org("ac.me"));
        assert!(valid_project("sophia") && valid_project("default") && valid_project("my.proj-1"));
        assert!(!valid_project(".x") && !valid_project("defaults") && !valid_project("a/b") && !valid_project(""));
        assert!(valid_env("lambda-labs-production") && valid_env("dev.1"));
        assert!(!valid_env("open") && !valid_env("openai") && !valid_env("yaml") && !valid_env("..") && !valid_env(""));
        assert!(!valid_env(&"x".repeat(101)));
    }

    #[test]
    fn environment_references_split() {
        assert_eq!(split_environment("o/p/e"), Some(("o".into(), "p".into(), "e".into())));
        assert_eq!(
            split_environment("o/e"),
            Some(("o".into(), "default".into(), "e".into()))
        );
        assert_eq!(split_environment("o"), None);
        assert_eq!(split_environment("a/b/c/d"), None);
    }

    #[test]
    fn fault_json_matches_the_control_endpoint() {
        let f: Fault =
            serde_json::from_str(r#"{"mode": "throttled", "retryAfterSeconds": 3, "latencyMs": 5, "failCount": 2}"#)
                .unwrap();
        assert_eq!(
            f,
            Fault::throttled(3)
                .with_fail_count(2)
                .with_latency(Duration::from_millis(5))
        );
        let conflict: Fault = serde_json::from_str(r#"{"mode": "conflict", "failCount": 1}"#).unwrap();
        assert_eq!(conflict, Fault::conflict(1));
        let none: Fault = serde_json::from_str(r#"{"mode": "none"}"#).unwrap();
        assert_eq!(none, Fault::none());
        assert!(serde_json::from_str::<Fault>(r#"{"mode": "broken"}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"mode": "none", "typo": 1}"#).is_err());
    }

    #[test]
    fn put_definition_and_seed() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(Store::open(&dir.path().join("d.json")).unwrap(), None);
        assert_eq!(
            state
                .put_definition("acme", "p", "e", "values:\n  pw: {fn::secret: canary-123}\n", false)
                .unwrap(),
            2
        );
        let saved = std::fs::read_to_string(dir.path().join("d.json")).unwrap();
        assert!(!saved.contains("canary-123"));
        assert_eq!(
            state
                .put_definition("bad org", "p", "e", "", false)
                .unwrap_err()
                .category(),
            "invalid_name"
        );
        assert_eq!(
            state
                .put_definition("acme", "p", "e", "values: [", false)
                .unwrap_err()
                .category(),
            "invalid_definition"
        );

        let seed = dir.path().join("seed.yaml");
        std::fs::write(
            &seed,
            "environments:\n  acme/p/e: |\n    values:\n      pw: {fn::secret: canary-123}\n  acme/legacy: \"values: {a: 1}\\n\"\n",
        )
        .unwrap();
        assert_eq!(state.seed(&seed).unwrap(), 2);
        let head = |p: &str, e: &str| lock(&state.store).env("acme", p, e).unwrap().head();
        // The same definition again (its secret compared by plaintext) adds no revision.
        assert_eq!(head("p", "e"), 2);
        assert_eq!(head("default", "legacy"), 2);
        state.seed(&seed).unwrap();
        assert_eq!(head("default", "legacy"), 2);
        std::fs::write(&seed, "environments:\n  nope: x\n").unwrap();
        assert_eq!(state.seed(&seed).unwrap_err().category(), "seed");
    }
}
