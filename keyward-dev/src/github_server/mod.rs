//! A local GitHub server for Actions secrets: the organization, repository and environment secret endpoints
//! of `../shared/reference/github-actions-secrets-openapi.yaml`, so that keyward's push can be tested without
//! GitHub. It holds one X25519 key pair per scope, really opens every sealed box it is sent (a value sealed
//! wrongly is refused as GitHub would refuse it) and keeps the plaintext in memory, zeroized on drop.
//!
//! Beside the API it answers development-only control endpoints under `/_dev/`: request counters, fault
//! injection (GitHub's primary and secondary rate limits, outages) and `/_dev/received`, which shows the
//! plaintexts received and exists for tests only.

mod error;
mod routes;
mod state;
mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::DevError;
use crate::serve::{Serving, bind, serve};
pub use error::GithubServerError;
pub use state::{Counters, GithubFault, GithubFaultMode};
use state::{GithubServerState, lock, normalize_scope};
use store::Store;
pub use store::{ReceivedSecret, Repository};

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

/// A running GitHub server. [`GithubServer::stop`] ends it; dropping it also asks it to stop.
pub struct GithubServer {
    serving: Serving,
    state: Arc<GithubServerState>,
}

impl GithubServer {
    /// Binds the listener and starts serving.
    pub async fn start(opts: GithubServerOptions) -> Result<GithubServer, DevError> {
        let (listener, addr) = bind(opts.listen, "bind the GitHub server").await?;
        let state = Arc::new(GithubServerState {
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
    use std::time::Duration;

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
