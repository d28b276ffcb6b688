//! A local Pulumi ESC server: the part of the ESC REST API (`../shared/reference/pulumi-esc-openapi.yaml`)
//! that keyward uses and that a demo needs, faithful enough for the official `pulumi-esc-sdk` client.
//! Pulumi's service is not reachable from tests or demos; this stands in for it.
//!
//! Beside the ESC API (under `/api/esc`) it answers development-only control endpoints under `/_dev/`:
//! request counters (so tests can prove keyward's calls stay bounded) and fault injection (outages,
//! throttling, latency).

mod crypto;
pub mod error;
mod eval;
mod rotators;
mod routes;
mod secrets;
mod state;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::DevError;
use crate::serve::{Serving, bind, serve};
pub use error::EscServerError;
pub use state::{Counters, Fault, FaultMode, split_environment};
use state::{EscServerState, lock};
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

/// A running ESC server. [`EscServer::stop`] ends it; dropping it also asks it to stop.
pub struct EscServer {
    serving: Serving,
    state: Arc<EscServerState>,
}

impl EscServer {
    /// Loads (or creates) the data file, binds the listener and starts serving.
    pub async fn start(opts: EscServerOptions) -> Result<EscServer, DevError> {
        let store = Store::open(&opts.data)?;
        // Written at once, so the key exists on disk from the first start even if nothing changes.
        store.save()?;
        let (listener, addr) = bind(opts.listen, "bind the ESC server").await?;
        let state = Arc::new(EscServerState::new(store, opts.token.filter(|t| !t.is_empty())));
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

    /// Replaces the token every request must carry (None: any or none is accepted), as rotating an access token
    /// in Pulumi Cloud does: requests with the old one are refused with 401 from now on.
    pub fn set_token(&self, token: Option<&str>) {
        *lock(&self.state.token) = token.filter(|t| !t.is_empty()).map(str::to_string);
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
    use std::time::Duration;

    use super::state::{valid_env, valid_org, valid_project};
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
        let state = EscServerState::new(Store::open(&dir.path().join("d.json")).unwrap(), None);
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
