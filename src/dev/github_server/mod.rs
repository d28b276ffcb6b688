//! A local GitHub server for Actions secrets: the organization, repository and environment secret endpoints
//! of `../shared/reference/github-actions-secrets-openapi.yaml`, so that keyward's push can be tested without
//! GitHub. It holds one X25519 key pair per scope, really opens every sealed box it is sent (a value sealed
//! wrongly is refused as GitHub would refuse it) and keeps the plaintext in memory, zeroized on drop.
//!
//! Beside the API it answers development-only control endpoints under `/_dev/`: request counters, fault
//! injection (GitHub's primary and secondary rate limits, outages) and `/_dev/received`, which shows the
//! plaintexts received and exists for tests only.

mod routes;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::DevError;
use super::serve::{Serving, bind, serve};
use store::Store;

/// A repository that exists on the server, with its deployment environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    /// The id organization secrets name in `selected_repository_ids`.
    pub id: i64,
    pub environments: Vec<String>,
}

impl Repository {
    pub fn new(owner: impl Into<String>, name: impl Into<String>, id: i64) -> Self {
        Repository {
            owner: owner.into(),
            name: name.into(),
            id,
            environments: Vec::new(),
        }
    }

    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environments.push(environment.into());
        self
    }
}

/// The repositories of `--repository owner/name` and `--environment owner/name/environment` flags (an
/// environment implies its repository; an environment name may itself contain `/`). Ids are 1001, 1002, ...
/// in order of first mention.
pub fn repositories_from_flags(
    repositories: &[String],
    environments: &[String],
) -> Result<Vec<Repository>, GithubServerError> {
    let mut out: Vec<Repository> = Vec::new();
    let mut add = |owner: &str, name: &str| -> usize {
        let found = out
            .iter()
            .position(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name));
        found.unwrap_or_else(|| {
            let id = 1001 + i64::try_from(out.len()).unwrap_or(0);
            out.push(Repository::new(owner, name, id));
            out.len() - 1
        })
    };
    let flag = |flag: &'static str, value: &str, message: &str| GithubServerError::Flag {
        flag,
        value: value.to_owned(),
        message: message.to_owned(),
    };
    for r in repositories {
        match r.split('/').collect::<Vec<_>>().as_slice() {
            [o, n] if !o.is_empty() && !n.is_empty() => {
                add(o, n);
            }
            _ => return Err(flag("repository", r, "expected owner/name")),
        }
    }
    let mut with_envs = Vec::new();
    for e in environments {
        match e.splitn(3, '/').collect::<Vec<_>>().as_slice() {
            [o, n, env] if !o.is_empty() && !n.is_empty() && !env.is_empty() => {
                with_envs.push((add(o, n), (*env).to_owned()));
            }
            _ => return Err(flag("environment", e, "expected owner/name/environment")),
        }
    }
    for (i, env) in with_envs {
        if let Some(r) = out.get_mut(i) {
            r.environments.push(env);
        }
    }
    Ok(out)
}

/// Reads a token file (surrounding whitespace dropped). Errors name the file, never its content.
pub fn read_token_file(path: &Path) -> Result<String, GithubServerError> {
    let bad = |message: String| GithubServerError::TokenFile {
        path: path.display().to_string(),
        message,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(token.to_owned())
}

/// How to start a [`GithubServer`].
#[derive(Clone)]
pub struct GithubServerOptions {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// When set, every API request must carry `Authorization: Bearer <T>` or `token <T>`; when unset, any or
    /// none is accepted.
    pub token: Option<String>,
    /// The repositories that exist; an organization exists when it owns one. Empty: every organization,
    /// repository and environment exists.
    pub repositories: Vec<Repository>,
}

impl std::fmt::Debug for GithubServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubServerOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("repositories", &self.repositories)
            .finish()
    }
}

/// Requests the server has seen since it started (or since the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Every API request, including those answered by a fault or refused for authentication.
    pub total: u64,
    /// By endpoint, named as the spec's operationIds: `getOrgPublicKey`, `getRepoPublicKey`,
    /// `getEnvironmentPublicKey`, `createOrUpdate{Org,Repo,Environment}Secret`,
    /// `get{Org,Repo,Environment}Secret`, `list{Org,Repo,Environment}Secrets`,
    /// `delete{Org,Repo,Environment}Secret`, and `notFound` for anything else.
    pub requests: BTreeMap<String, u64>,
    /// Requests answered with an injected fault instead of by the API.
    pub faults_injected: u64,
}

impl Counters {
    /// Requests to one endpoint (0 when none).
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }
}

/// What an injected fault does to API requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GithubFaultMode {
    /// Requests are served normally (latency still applies).
    #[default]
    None,
    /// GitHub's secondary rate limit: 403 (or `status`) with the documented message, and `retry-after`
    /// when `retryAfterSeconds` is set.
    SecondaryRateLimit,
    /// The primary rate limit: 429 (or `status`: 403) with `x-ratelimit-remaining: 0` and
    /// `x-ratelimit-reset` `resetInSeconds` from now.
    RateLimited,
    /// 503 Service Unavailable (or `status`).
    Unavailable,
    /// 403 without any rate-limit signal: a token that may not do this.
    Forbidden,
}

/// A fault to inject into API requests (the `/_dev/fault` body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubFault {
    #[serde(default)]
    pub mode: GithubFaultMode,
    /// `secondaryRateLimit`: the `retry-after` header; none sends no header, as GitHub sometimes does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// `rateLimited`: how far ahead `x-ratelimit-reset` lies (0 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_in_seconds: Option<u64>,
    /// The status to answer with instead of the mode's usual one: 403 or 429 for the rate limits, a 5xx
    /// for `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Added to every API request, failing or not.
    #[serde(default)]
    pub latency_ms: u64,
    /// How many requests fail before the fault heals by itself (mode back to `none`); unset: until changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_count: Option<u64>,
}

impl GithubFault {
    /// No fault.
    pub fn none() -> Self {
        GithubFault::default()
    }

    /// The next `n` requests hit a secondary rate limit: 403 with `retry-after: retry_after_secs`.
    pub fn secondary_rate_limit(retry_after_secs: u64, n: u64) -> Self {
        GithubFault {
            mode: GithubFaultMode::SecondaryRateLimit,
            retry_after_seconds: Some(retry_after_secs),
            fail_count: Some(n),
            ..GithubFault::default()
        }
    }

    /// The next `n` requests hit the primary rate limit: 429 with `x-ratelimit-remaining: 0` and a reset
    /// `reset_in_secs` from the request.
    pub fn rate_limited(reset_in_secs: u64, n: u64) -> Self {
        GithubFault {
            mode: GithubFaultMode::RateLimited,
            reset_in_seconds: Some(reset_in_secs),
            fail_count: Some(n),
            ..GithubFault::default()
        }
    }

    /// The next `n` requests get 503.
    pub fn unavailable(n: u64) -> Self {
        GithubFault {
            mode: GithubFaultMode::Unavailable,
            fail_count: Some(n),
            ..GithubFault::default()
        }
    }

    /// The next `n` requests get a 403 that is not a rate limit (a token without the needed permission).
    pub fn forbidden(n: u64) -> Self {
        GithubFault {
            mode: GithubFaultMode::Forbidden,
            fail_count: Some(n),
            ..GithubFault::default()
        }
    }

    /// Answers with this status instead (403 or 429 for the rate limits, a 5xx for `unavailable`).
    pub fn with_status(self, status: u16) -> Self {
        GithubFault {
            status: Some(status),
            ..self
        }
    }

    /// No `retry-after` header (a secondary rate limit that names no time).
    pub fn without_retry_after(self) -> Self {
        GithubFault {
            retry_after_seconds: None,
            ..self
        }
    }

    /// Fails until changed instead of healing after a count.
    pub fn until_cleared(self) -> Self {
        GithubFault {
            fail_count: None,
            ..self
        }
    }

    /// Every request waits this long first.
    pub fn with_latency(self, latency: Duration) -> Self {
        GithubFault {
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            ..self
        }
    }

    /// Why this fault cannot be served, if it cannot.
    fn problem(&self) -> Option<&'static str> {
        let status = self.status?;
        let fits = match self.mode {
            GithubFaultMode::None => true,
            GithubFaultMode::Forbidden => status == 403,
            GithubFaultMode::SecondaryRateLimit | GithubFaultMode::RateLimited => status == 403 || status == 429,
            GithubFaultMode::Unavailable => (500..=599).contains(&status),
        };
        (!fits).then_some("status must be 403 or 429 for rate limits, 5xx for unavailable and 403 for forbidden")
    }
}

/// Errors of the GitHub server: its answers to bad requests (which become GitHub's JSON error bodies) and
/// its command-line input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubServerError {
    #[error("Requires authentication")]
    MissingCredentials,
    #[error("Bad credentials")]
    BadCredentials,
    #[error("Not Found")]
    NotFound,
    #[error("Problems parsing JSON")]
    BadJson,
    /// A request GitHub would refuse with 422; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
    #[error("invalid --{flag} {value:?}: {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("token file {path}: {message}")]
    TokenFile { path: String, message: String },
}

impl GithubServerError {
    /// A bounded label for this error, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            GithubServerError::MissingCredentials | GithubServerError::BadCredentials => "unauthorized",
            GithubServerError::NotFound => "not_found",
            GithubServerError::BadJson => "bad_json",
            GithubServerError::Invalid(_) => "invalid",
            GithubServerError::Internal(_) => "internal",
            GithubServerError::Flag { .. } => "flag",
            GithubServerError::TokenFile { .. } => "token_file",
        }
    }
}

/// A secret as received, for tests. `value` is the plaintext: this exists so tests can check what arrived,
/// and is never part of the GitHub API.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedSecret {
    /// `org/ORG`, `repo/OWNER/REPO` or `env/OWNER/REPO/ENVIRONMENT`, lower case.
    pub scope: String,
    /// Upper case, as GitHub stores names.
    pub name: String,
    /// The plaintext (invalid UTF-8 replaced; `value_base64` is exact).
    pub value: String,
    pub value_base64: String,
    /// Accepted PUTs of this name in this scope.
    pub puts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selected_repository_ids: Vec<i64>,
}

impl std::fmt::Debug for ReceivedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedSecret")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("puts", &self.puts)
            .field("visibility", &self.visibility)
            .field("selected_repository_ids", &self.selected_repository_ids)
            .finish()
    }
}

/// Everything the request handlers share.
pub(crate) struct State {
    store: Mutex<Store>,
    counters: Mutex<Counters>,
    fault: Mutex<GithubFault>,
    token: Option<Zeroizing<String>>,
    /// For the absolute URLs GitHub puts in bodies (`selected_repositories_url`).
    addr: SocketAddr,
}

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still usable here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store's key for a scope key given by a caller: GitHub's names are case-insensitive.
fn normalize_scope(scope_key: &str) -> String {
    scope_key.to_lowercase()
}

/// A running GitHub server. [`GithubServer::stop`] ends it; dropping it also asks it to stop.
pub struct GithubServer {
    serving: Serving,
    state: Arc<State>,
}

impl GithubServer {
    /// Binds the listener and starts serving.
    pub async fn start(opts: GithubServerOptions) -> Result<GithubServer, DevError> {
        let (listener, addr) = bind(opts.listen, "bind the GitHub server").await?;
        let state = Arc::new(State {
            store: Mutex::new(Store::new(opts.repositories)),
            counters: Mutex::new(Counters::default()),
            fault: Mutex::new(GithubFault::default()),
            token: opts.token.filter(|t| !t.is_empty()).map(Zeroizing::new),
            addr,
        });
        let serving = serve(listener, addr, "github server", routes::router(state.clone()));
        Ok(GithubServer { serving, state })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr
    }

    /// The API base URL, `http://127.0.0.1:PORT` (GitHub's `https://api.github.com`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.serving.addr)
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        lock(&self.state.counters).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *lock(&self.state.counters) = Counters::default();
    }

    /// Injects a fault into the API requests that follow (`GithubFault::none()` clears it).
    pub fn set_fault(&self, fault: GithubFault) {
        *lock(&self.state.fault) = fault;
    }

    /// The fault in force (after any self-healing).
    pub fn fault(&self) -> GithubFault {
        lock(&self.state.fault).clone()
    }

    /// For tests only: the plaintext last received for `name` in a scope (`org/ORG`, `repo/OWNER/REPO` or
    /// `env/OWNER/REPO/ENVIRONMENT`; case-insensitive, as GitHub's names are). Invalid UTF-8 is replaced.
    pub fn received(&self, scope_key: &str, name: &str) -> Option<String> {
        lock(&self.state.store)
            .secret(&normalize_scope(scope_key), name)
            .map(|s| String::from_utf8_lossy(&s.plaintext).into_owned())
    }

    /// For tests only: every secret held, with its plaintext.
    pub fn received_all(&self) -> Vec<ReceivedSecret> {
        lock(&self.state.store).received(None, None)
    }

    /// Accepted PUTs of `name` in a scope (deleting the secret does not reset this).
    pub fn puts(&self, scope_key: &str, name: &str) -> u64 {
        lock(&self.state.store).puts(&normalize_scope(scope_key), name)
    }

    /// Replaces a scope's key pair, as GitHub may: a PUT sealed to the old key is then refused.
    pub fn rotate_key(&self, scope_key: &str) -> Result<(), GithubServerError> {
        lock(&self.state.store).rotate_key(&normalize_scope(scope_key))
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
    fn fault_json_matches_the_control_endpoint() {
        let f: GithubFault =
            serde_json::from_str(r#"{"mode": "secondaryRateLimit", "retryAfterSeconds": 3, "failCount": 2}"#).unwrap();
        assert_eq!(f, GithubFault::secondary_rate_limit(3, 2));
        let f: GithubFault =
            serde_json::from_str(r#"{"mode": "rateLimited", "resetInSeconds": 5, "status": 403, "latencyMs": 7}"#)
                .unwrap();
        assert_eq!(
            f,
            GithubFault::rate_limited(5, 0)
                .until_cleared()
                .with_status(403)
                .with_latency(Duration::from_millis(7))
        );
        assert_eq!(
            serde_json::to_value(GithubFault::unavailable(1)).unwrap(),
            serde_json::json!({"mode": "unavailable", "latencyMs": 0, "failCount": 1})
        );
        assert!(serde_json::from_str::<GithubFault>(r#"{"mode": "broken"}"#).is_err());
        assert!(serde_json::from_str::<GithubFault>(r#"{"mode": "none", "typo": 1}"#).is_err());
        assert!(GithubFault::unavailable(1).with_status(429).problem().is_some());
        assert!(GithubFault::rate_limited(1, 1).with_status(500).problem().is_some());
        assert!(GithubFault::rate_limited(1, 1).with_status(403).problem().is_none());
        assert!(
            GithubFault::secondary_rate_limit(1, 1)
                .without_retry_after()
                .problem()
                .is_none()
        );
    }

    #[test]
    fn repositories_from_flags_assign_ids_and_environments() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let repos = repositories_from_flags(
            &s(&["acme/app", "acme/lib"]),
            &s(&["acme/app/production", "ACME/App/prod eu/1", "other/svc/dev"]),
        )
        .unwrap();
        assert_eq!(
            repos,
            vec![
                Repository::new("acme", "app", 1001)
                    .with_environment("production")
                    .with_environment("prod eu/1"),
                Repository::new("acme", "lib", 1002),
                Repository::new("other", "svc", 1003).with_environment("dev"),
            ]
        );
        for (r, e) in [
            (vec!["acme"], vec![]),
            (vec!["a/b/c"], vec![]),
            (vec![], vec!["acme/app"]),
        ] {
            let err = repositories_from_flags(&s(&r), &s(&e)).unwrap_err();
            assert_eq!(err.category(), "flag");
        }
    }

    #[test]
    fn token_files_are_trimmed_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  ghp_canary\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "ghp_canary");
        std::fs::write(&p, "\n").unwrap();
        let e = read_token_file(&p).unwrap_err();
        assert_eq!(e.category(), "token_file");
        assert!(!e.to_string().contains("canary"));
        assert_eq!(
            read_token_file(&dir.path().join("missing")).unwrap_err().category(),
            "token_file"
        );
        let opts = GithubServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some("ghp_canary".into()),
            repositories: vec![],
        };
        assert!(!format!("{opts:?}").contains("canary"));
    }
}
