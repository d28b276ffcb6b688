//! The Pulumi ESC client, and the shared snapshot cache that makes ESC calls per refresh cycle bounded by the
//! number of environments, not of ManagedSecrets: every reconcile that reads an environment in the same cycle
//! awaits the same open (concurrent callers coalesce onto one in-flight request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::path::{PropertyPath, Segment};
use super::{SecretBytes, SourceError, SourceValue};

const SERVICE: &str = "ESC";
/// Retry-After values up to this are waited out inside one call; longer ones go back to the controller.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);

/// How to reach ESC.
#[derive(Clone)]
pub struct EscConfig {
    /// Base URL including `/api/esc`, e.g. `https://api.pulumi.com/api/esc`.
    pub base_url: String,
    /// Access token, sent as `Authorization: token <T>`.
    pub token: Option<Zeroizing<String>>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per call for transient failures (at least 1).
    pub attempts: u32,
    /// How long an open session is requested for.
    pub session_duration: Duration,
}

impl std::fmt::Debug for EscConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl EscConfig {
    pub fn new(base_url: impl Into<String>, token: Option<Zeroizing<String>>) -> Self {
        EscConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token,
            timeout: Duration::from_secs(10),
            attempts: 3,
            session_duration: Duration::from_secs(300),
        }
    }
}

/// `org/project/env`, or `org/env` meaning project `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvRef {
    pub org: String,
    pub project: String,
    pub env: String,
}

impl EnvRef {
    pub fn parse(s: &str) -> Result<EnvRef, SourceError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
        match parts.as_slice() {
            [o, e] if ok(o) && ok(e) => Ok(EnvRef {
                org: o.to_string(),
                project: "default".into(),
                env: e.to_string(),
            }),
            [o, p, e] if ok(o) && ok(p) && ok(e) => Ok(EnvRef {
                org: o.to_string(),
                project: p.to_string(),
                env: e.to_string(),
            }),
            _ => Err(SourceError::Invalid(format!(
                "environment {s:?} is not org/project/env or org/env"
            ))),
        }
    }
}

impl std::fmt::Display for EnvRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.org, self.project, self.env)
    }
}

/// A raw ESC HTTP client.
#[derive(Clone, Debug)]
pub struct EscClient {
    http: reqwest::Client,
    config: EscConfig,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

#[derive(serde::Deserialize)]
struct OpenResponse {
    id: String,
}

#[derive(serde::Deserialize)]
struct RevisionTag {
    revision: i64,
}

#[derive(serde::Deserialize)]
struct Revision {
    number: i64,
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn backoff(attempt: u32) -> Duration {
    // 200ms, 400ms, 800ms ... with ±50% jitter so that many clients do not retry in step.
    let base = 200u64.saturating_mul(1 << attempt.min(6));
    let jitter = rand::rng().random_range(base / 2..=base + base / 2);
    Duration::from_millis(jitter)
}

impl EscClient {
    pub fn new(config: EscConfig) -> Result<Self, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| SourceError::Invalid(format!("ESC client: {e}")))?;
        Ok(EscClient { http, config })
    }

    fn url(&self, env: &EnvRef, tail: &str) -> String {
        format!(
            "{}/environments/{}/{}/{}{}",
            self.config.base_url, env.org, env.project, env.env, tail
        )
    }

    /// Sends one request with retries on transient failures; `what` names the object for NotFound.
    async fn send(&self, method: Method, url: &str, what: &str) -> Result<reqwest::Response, SourceError> {
        let attempts = self.config.attempts.max(1);
        let mut last = SourceError::Unavailable {
            service: SERVICE,
            message: "no attempt made".into(),
            retry_after: None,
        };
        for attempt in 0..attempts {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header("Accept", "application/json");
            if let Some(token) = &self.config.token {
                req = req.header("Authorization", format!("token {}", token.as_str()));
            }
            tracing::debug!(method = %method, url, attempt, "ESC request");
            let (err, wait) = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let after = retry_after(&resp);
                    let message = error_message(resp).await;
                    match status {
                        StatusCode::NOT_FOUND => return Err(SourceError::NotFound { what: what.to_string() }),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            return Err(SourceError::Unauthorized {
                                service: SERVICE,
                                message,
                            });
                        }
                        StatusCode::TOO_MANY_REQUESTS => (
                            SourceError::Throttled {
                                service: SERVICE,
                                retry_after: after,
                            },
                            after,
                        ),
                        s if s.is_server_error() => (
                            SourceError::Unavailable {
                                service: SERVICE,
                                message: format!("HTTP {}", s.as_u16()),
                                retry_after: after,
                            },
                            after,
                        ),
                        s => {
                            return Err(SourceError::Invalid(format!(
                                "ESC answered HTTP {}: {message}",
                                s.as_u16()
                            )));
                        }
                    }
                }
                Err(e) => {
                    let kind = if e.is_timeout() { "timed out" } else { "request failed" };
                    (
                        SourceError::Unavailable {
                            service: SERVICE,
                            message: kind.into(),
                            retry_after: None,
                        },
                        None,
                    )
                }
            };
            last = err;
            if attempt + 1 == attempts {
                break;
            }
            let wait = match wait {
                Some(w) if w > MAX_INLINE_WAIT => break, // the controller requeues after it instead
                Some(w) => w,
                None => backoff(attempt),
            };
            tokio::time::sleep(wait).await;
        }
        Err(last)
    }

    /// The newest revision number of an environment.
    pub async fn latest_revision(&self, env: &EnvRef) -> Result<i64, SourceError> {
        let what = format!("ESC environment {env}");
        let resp = self.send(Method::HEAD, &self.url(env, ""), &what).await?;
        let header = resp
            .headers()
            .get("Pulumi-ESC-Revision")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if let Some(rev) = header {
            return Ok(rev);
        }
        // Services that send no revision header on HEAD: ask the versions list for the newest one.
        let resp = self
            .send(Method::GET, &self.url(env, "/versions?count=1"), &what)
            .await?;
        let list: Vec<Revision> = resp.json().await.map_err(|e| invalid_body("versions", e))?;
        list.first().map(|r| r.number).ok_or(SourceError::NotFound {
            what: format!("revisions of {what}"),
        })
    }

    /// The revision a pin (a number or a revision tag) names.
    pub async fn resolve_version(&self, env: &EnvRef, version: &str) -> Result<i64, SourceError> {
        if let Ok(n) = version.parse::<i64>() {
            return Ok(n);
        }
        let what = format!("revision tag {version:?} of ESC environment {env}");
        let resp = self
            .send(Method::GET, &self.url(env, &format!("/versions/tags/{version}")), &what)
            .await?;
        let tag: RevisionTag = resp.json().await.map_err(|e| invalid_body("revision tag", e))?;
        Ok(tag.revision)
    }

    /// Opens the environment at a revision and reads every property, as one snapshot.
    pub async fn snapshot(&self, env: &EnvRef, revision: i64) -> Result<Snapshot, SourceError> {
        let what = format!("revision {revision} of ESC environment {env}");
        let secs = self.config.session_duration.as_secs().max(1);
        let url = self.url(env, &format!("/versions/{revision}/open?duration={secs}s"));
        let resp = self.send(Method::POST, &url, &what).await?;
        let open: OpenResponse = resp.json().await.map_err(|e| invalid_body("open", e))?;
        let resp = self
            .send(Method::GET, &self.url(env, &format!("/open/{}", open.id)), &what)
            .await?;
        let body = Zeroizing::new(
            resp.bytes()
                .await
                .map_err(|_| unavailable("reading the environment failed"))?
                .to_vec(),
        );
        Ok(Snapshot {
            env: env.clone(),
            revision,
            body,
        })
    }
}

fn unavailable(message: &str) -> SourceError {
    SourceError::Unavailable {
        service: SERVICE,
        message: message.into(),
        retry_after: None,
    }
}

fn invalid_body(what: &str, e: reqwest::Error) -> SourceError {
    // reqwest's decode errors describe the shape, not the content; keep only the kind.
    let _ = e;
    SourceError::Invalid(format!("ESC sent an unreadable {what} response"))
}

async fn error_message(resp: reqwest::Response) -> String {
    let body = resp.bytes().await.unwrap_or_default();
    let msg = serde_json::from_slice::<ErrorBody>(&body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_default();
    msg.chars().take(200).collect()
}

/// One opened environment at one revision. The body holds values: it lives in zeroizing memory.
pub struct Snapshot {
    pub env: EnvRef,
    pub revision: i64,
    body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshot({} @ {}, <{} bytes redacted>)",
            self.env,
            self.revision,
            self.body.len()
        )
    }
}

impl Snapshot {
    /// The value at a property path. Strings are taken as they are; numbers and booleans as their JSON text;
    /// objects and lists as JSON.
    pub fn lookup(&self, path: &PropertyPath) -> Result<SecretBytes, SourceError> {
        // The parsed tree holds plaintext briefly; it is dropped before this returns.
        let root: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|_| SourceError::Invalid("ESC sent an unreadable environment".into()))?;
        let not_found = || SourceError::NotFound {
            what: format!("path {path} in ESC environment {}", self.env),
        };
        let mut node = root.get("properties").ok_or_else(not_found)?;
        for (n, seg) in path.0.iter().enumerate() {
            let container = if n == 0 {
                node
            } else {
                node.get("value").ok_or_else(not_found)?
            };
            node = match seg {
                Segment::Key(k) => container.as_object().and_then(|o| o.get(k)),
                Segment::Index(i) => container.as_array().and_then(|a| a.get(*i)),
            }
            .ok_or_else(not_found)?;
        }
        if node.get("unknown").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(SourceError::Invalid(format!(
                "path {path} in ESC environment {} has no known value",
                self.env
            )));
        }
        let value = node.get("value").ok_or_else(not_found)?;
        let bytes = match value {
            serde_json::Value::String(s) => s.as_bytes().to_vec(),
            serde_json::Value::Null => {
                return Err(SourceError::Invalid(format!(
                    "path {path} in ESC environment {} is null",
                    self.env
                )));
            }
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string().into_bytes(),
            other => serde_json::to_vec(&unwrap_values(other)).unwrap_or_default(),
        };
        Ok(SecretBytes::new(bytes))
    }
}

/// ESC wraps every node as `{value, secret, trace}`: turn a wrapped tree into plain JSON.
fn unwrap_values(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, w)| {
                    (
                        k.clone(),
                        unwrap_values(w.get("value").unwrap_or(&serde_json::Value::Null)),
                    )
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|w| unwrap_values(w.get("value").unwrap_or(&serde_json::Value::Null)))
                .collect(),
        ),
        other => other.clone(),
    }
}

type SlotResult = Result<Arc<Snapshot>, SourceError>;

struct Slot {
    started: Instant,
    cell: Arc<OnceCell<SlotResult>>,
}

impl Slot {
    fn stale_failure(&self) -> bool {
        matches!(self.cell.get(), Some(Err(_))) && self.started.elapsed() > FAILURE_REUSE
    }
}

/// How long a failed snapshot answers for everyone (coalescing a burst), before the next caller retries.
const FAILURE_REUSE: Duration = Duration::from_secs(1);

/// The ESC source: snapshots shared per (environment, pin) and refresh cycle.
pub struct EscSource {
    client: EscClient,
    slots: Mutex<HashMap<(EnvRef, String), Slot>>,
}

impl EscSource {
    pub fn new(client: EscClient) -> Self {
        EscSource {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `path` of `environment` (optionally pinned to `version`), reusing a snapshot started at or after
    /// `fresh_since`; otherwise one new snapshot is taken and shared with every concurrent caller.
    pub async fn get(
        &self,
        environment: &str,
        version: Option<&str>,
        path: &str,
        fresh_since: Instant,
    ) -> Result<SourceValue, SourceError> {
        let env = EnvRef::parse(environment)?;
        let path = PropertyPath::parse(path).map_err(|e| SourceError::Invalid(e.to_string()))?;
        let pin = version.unwrap_or_default().to_string();
        let cell = {
            let mut slots = self.slots.lock().map_err(|_| unavailable("snapshot cache poisoned"))?;
            let key = (env.clone(), pin.clone());
            match slots.get(&key) {
                // A failure is shared only by callers that arrive while it is fresh; later ones try again.
                Some(slot) if slot.started >= fresh_since && !slot.stale_failure() => slot.cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    slots.insert(
                        key,
                        Slot {
                            started: Instant::now(),
                            cell: cell.clone(),
                        },
                    );
                    cell
                }
            }
        };
        let snapshot = cell
            .get_or_init(|| async {
                let revision = if pin.is_empty() {
                    self.client.latest_revision(&env).await?
                } else {
                    self.client.resolve_version(&env, &pin).await?
                };
                self.client.snapshot(&env, revision).await.map(Arc::new)
            })
            .await
            .clone()?;
        Ok(SourceValue {
            value: snapshot.lookup(&path)?,
            revision: Some(snapshot.revision),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refs() {
        let e = EnvRef::parse("ai-cherry/sophia/lambda-labs-production").unwrap();
        assert_eq!(
            (e.org.as_str(), e.project.as_str(), e.env.as_str()),
            ("ai-cherry", "sophia", "lambda-labs-production")
        );
        assert_eq!(EnvRef::parse("acme/prod").unwrap().project, "default");
        for bad in ["acme", "a/b/c/d", "a//b", "a b/c"] {
            assert!(EnvRef::parse(bad).is_err(), "{bad}");
        }
    }

    fn snap(body: serde_json::Value) -> Snapshot {
        Snapshot {
            env: EnvRef::parse("o/p/e").unwrap(),
            revision: 1,
            body: Zeroizing::new(body.to_string().into_bytes()),
        }
    }

    #[test]
    fn lookup_walks_wrapped_values() {
        let s = snap(serde_json::json!({"properties": {
            "sophia": {"value": {"ai": {"value": {"key": {"value": "sk-1", "secret": true}}}}},
            "list": {"value": [{"value": 7}, {"value": {"k.x": {"value": true}}}]},
            "obj": {"value": {"a": {"value": 1}}},
            "unk": {"value": null, "unknown": true}
        }}));
        let get = |p: &str| s.lookup(&PropertyPath::parse(p).unwrap());
        assert_eq!(get("sophia.ai.key").unwrap().expose(), b"sk-1");
        assert_eq!(get("values.sophia.ai.key").unwrap().expose(), b"sk-1");
        assert_eq!(get("list[0]").unwrap().expose(), b"7");
        assert_eq!(get("list[1][\"k.x\"]").unwrap().expose(), b"true");
        assert_eq!(get("obj").unwrap().expose(), br#"{"a":1}"#);
        let e = get("sophia.ai.nope").unwrap_err();
        assert_eq!(e.reason(), "SourceNotFound");
        assert!(e.to_string().contains("sophia.ai.nope"), "{e}");
        assert_eq!(get("unk").unwrap_err().reason(), "InvalidSource");
        assert_eq!(get("list[5]").unwrap_err().reason(), "SourceNotFound");
    }

    #[test]
    fn backoff_grows_with_jitter() {
        for a in 0..5 {
            let d = backoff(a).as_millis() as u64;
            let base = 200 * (1 << a);
            assert!(d >= base / 2 && d <= base + base / 2, "{a}: {d}");
        }
    }
}
