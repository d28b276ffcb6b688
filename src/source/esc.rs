//! The Pulumi ESC client (reads, and the definition writes and rotations that rotation needs), and the shared
//! snapshot cache that makes ESC calls per refresh cycle bounded by the number of environments, not of
//! ManagedSecrets: every reconcile that reads an environment in the same cycle awaits the same open (concurrent
//! callers coalesce onto one in-flight request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngExt;
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::path::{PropertyPath, Segment};
use super::{SecretBytes, SourceError, SourceValue};
use crate::rotation::esc_edit::{self, EditError};
use crate::telemetry::metrics::EscRequestLabels;

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
    /// Counts requests by endpoint and answer (`keyward_esc_requests_total`), when set.
    pub requests: Option<Family<EscRequestLabels, Counter>>,
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
            requests: None,
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

/// The spec's `Error`, or `EnvironmentErrorResponse` when it carries diagnostics (a refused definition).
#[derive(serde::Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(default)]
    diagnostics: Vec<DiagnosticBody>,
}

#[derive(serde::Deserialize)]
struct DiagnosticBody {
    summary: Option<String>,
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

/// The ESC operation a request is, by method and path, for the requests metric (bounded names).
fn endpoint_name(method: &Method, url: &str) -> &'static str {
    let path = url.split('?').next().unwrap_or_default();
    let tail: Vec<&str> = path.rsplit('/').take(3).collect();
    match (method.as_str(), tail.as_slice()) {
        ("HEAD", _) => "getETag",
        ("PATCH", _) => "update",
        ("POST", ["open", ..]) => "open",
        ("POST", ["rotate", ..]) => "rotate",
        ("GET", [_, "open", ..]) => "read",
        ("GET", [_, "tags", "versions"]) => "getRevisionTag",
        ("GET", ["versions", ..]) => "versions",
        ("GET", _) => "getDefinition",
        _ => "other",
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
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
        self.send_with(method, url, what, None, &[]).await
    }

    /// [`Self::send`] with a body (content type and bytes, shared by every attempt without copying) and extra
    /// request headers.
    async fn send_with(
        &self,
        method: Method,
        url: &str,
        what: &str,
        body: Option<(&'static str, &Bytes)>,
        headers: &[(&'static str, &str)],
    ) -> Result<reqwest::Response, SourceError> {
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
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some((content_type, bytes)) = body {
                req = req.header("Content-Type", content_type).body(bytes.clone());
            }
            tracing::debug!(method = %method, url, attempt, "ESC request");
            let sent = req.send().await;
            if let Some(requests) = &self.config.requests {
                let code = sent
                    .as_ref()
                    .map_or_else(|_| "error".to_string(), |r| r.status().as_u16().to_string());
                let endpoint = endpoint_name(&method, url);
                requests.get_or_create(&EscRequestLabels { endpoint, code }).inc();
            }
            let (err, wait) = match sent {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let after = retry_after(&resp);
                    let message = error_message(resp).await;
                    match status {
                        StatusCode::NOT_FOUND => return Err(SourceError::NotFound { what: what.to_string() }),
                        StatusCode::CONFLICT => return Err(SourceError::Conflict { what: what.to_string() }),
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
                None => crate::backoff::jittered(attempt),
            };
            tokio::time::sleep(wait).await;
        }
        Err(last)
    }

    /// The newest revision number of an environment.
    pub async fn latest_revision(&self, env: &EnvRef) -> Result<i64, SourceError> {
        let what = format!("ESC environment {env}");
        let resp = self.send(Method::HEAD, &self.url(env, ""), &what).await?;
        if let Some(rev) = revision_header(&resp) {
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

    /// The definition (YAML, secrets as ciphertext) of an environment's newest revision, with the ETag an
    /// update must present.
    pub async fn get_definition(&self, env: &EnvRef) -> Result<Definition, SourceError> {
        let what = format!("ESC environment {env}");
        let resp = self.send(Method::GET, &self.url(env, ""), &what).await?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            // Without an ETag an update could silently undo someone else's; refuse rather than write blind.
            .ok_or_else(|| SourceError::Invalid(format!("ESC sent no ETag with the definition of {env}")))?;
        let revision = revision_header(&resp)
            .ok_or_else(|| SourceError::Invalid(format!("ESC sent no revision number with the definition of {env}")))?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|_| unavailable("reading the definition failed"))?;
        let yaml = String::from_utf8(bytes.to_vec())
            .map_err(|_| SourceError::Invalid(format!("the definition of {env} is not UTF-8")))?;
        Ok(Definition {
            yaml: Zeroizing::new(yaml),
            etag,
            revision,
        })
    }

    /// Replaces an environment's definition if it is still at `etag`, returning the new revision number.
    /// Someone else's write since then is [`SourceError::Conflict`]; a definition ESC refuses is
    /// [`SourceError::Invalid`] with the diagnostics' summaries.
    pub async fn update_definition(&self, env: &EnvRef, yaml: &str, etag: &str) -> Result<i64, SourceError> {
        let what = format!("ESC environment {env}");
        // The body may hold plaintext (`fn::secret: value` before ESC encrypts it): wiped when sent.
        let body = Bytes::from_owner(Zeroizing::new(yaml.as_bytes().to_vec()));
        // The ESC CLI sends the ETag it read as a request header named `ETag` (not If-Match).
        let resp = self
            .send_with(
                Method::PATCH,
                &self.url(env, ""),
                &what,
                Some(("application/x-yaml", &body)),
                &[("ETag", etag)],
            )
            .await
            .map_err(|e| match e {
                SourceError::Invalid(m) => SourceError::Invalid(format!("updating {what}: {m}")),
                other => other,
            })?;
        revision_header(&resp)
            .ok_or_else(|| SourceError::Invalid(format!("ESC sent no revision number after updating {env}")))
    }

    /// Asks ESC to run the environment's rotators (`fn::rotate::*`) at or under `paths` (all when empty). The
    /// outcome's status is ESC's (`succeeded`, `failed`, `in_progress`); a failed rotation is not an `Err`.
    pub async fn rotate(&self, env: &EnvRef, paths: &[String]) -> Result<RotateOutcome, SourceError> {
        let what = format!("ESC environment {env}");
        let body = serde_json::to_vec(&serde_json::json!({ "paths": paths }))
            .map_err(|_| SourceError::Invalid("rotation paths do not serialize".into()))?;
        // A rotation is not idempotent: a retry after a lost answer would rotate twice. One attempt; the
        // controller's recorded intent decides what happens next.
        let once = EscClient {
            http: self.http.clone(),
            config: EscConfig {
                attempts: 1,
                ..self.config.clone()
            },
        };
        let resp = once
            .send_with(
                Method::POST,
                &self.url(env, "/rotate"),
                &what,
                Some(("application/json", &Bytes::from(body))),
                &[],
            )
            .await
            .map_err(|e| match e {
                SourceError::Invalid(m) => SourceError::Invalid(format!("rotating {what}: {m}")),
                other => other,
            })?;
        let answer: RotateResponse = resp.json().await.map_err(|e| invalid_body("rotate", e))?;
        let event = answer.secret_rotation_event;
        Ok(RotateOutcome {
            pre_revision: event.pre_rotation_revision,
            post_revision: event.post_rotation_revision,
            status: event.status,
        })
    }

    /// Writes `value` at `path` of `env`'s definition as `fn::secret`, changing nothing else, and returns the
    /// new revision. A concurrent write makes it read the definition again and retry (a few times).
    pub async fn write_secret_value(
        &self,
        env: &EnvRef,
        path: &PropertyPath,
        value: &SecretBytes,
    ) -> Result<i64, SourceError> {
        let text = std::str::from_utf8(value.expose()).map_err(|_| {
            SourceError::Invalid(format!(
                "the new value for path {path} in {env} is not UTF-8 text; ESC stores strings"
            ))
        })?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let current = self.get_definition(env).await?;
            let edited =
                Zeroizing::new(esc_edit::set_secret(&current.yaml, path, text).map_err(|e| edit_error(env, e))?);
            match self.update_definition(env, &edited, &current.etag).await {
                Ok(revision) => {
                    tracing::debug!(environment = %env, path = %path, attempts = attempt, revision, "ESC value written");
                    return Ok(revision);
                }
                Err(SourceError::Conflict { .. }) if attempt <= MAX_CONFLICT_RETRIES => {
                    tracing::debug!(environment = %env, path = %path, attempt, "ESC definition changed meanwhile; re-reading");
                    tokio::time::sleep(conflict_pause()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How many times a write re-reads and retries after someone else's concurrent write.
const MAX_CONFLICT_RETRIES: u32 = 5;

/// A short pause before retrying after a conflict, jittered so that competing writers do not collide again.
fn conflict_pause() -> Duration {
    Duration::from_millis(rand::rng().random_range(20..=120))
}

fn revision_header(resp: &reqwest::Response) -> Option<i64> {
    resp.headers()
        .get("Pulumi-ESC-Revision")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
}

fn edit_error(env: &EnvRef, e: EditError) -> SourceError {
    SourceError::Invalid(format!("ESC environment {env}: {e}"))
}

/// An environment's definition as stored (secrets as ciphertext), with what an update must present.
pub struct Definition {
    /// The YAML text. Usually secrets are ciphertext, but other values are plain: not shown in `Debug`.
    pub yaml: Zeroizing<String>,
    /// The ETag to send with an update, as ESC sent it.
    pub etag: String,
    pub revision: i64,
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definition")
            .field("yaml", &format_args!("<{} bytes redacted>", self.yaml.len()))
            .field("etag", &self.etag)
            .field("revision", &self.revision)
            .finish()
    }
}

/// What a rotation did, from ESC's `secretRotationEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateOutcome {
    pub pre_revision: i64,
    /// The revision holding the new values; none when nothing was written (a failed rotation).
    pub post_revision: Option<i64>,
    /// `succeeded`, `failed` or `in_progress`.
    pub status: String,
}

/// The ESC CLI's `RotateEnvironmentResponse`, the fields keyward uses.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotateResponse {
    secret_rotation_event: RotationEvent,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotationEvent {
    pre_rotation_revision: i64,
    #[serde(default)]
    post_rotation_revision: Option<i64>,
    status: String,
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

/// The error's message and its diagnostics' summaries (ESC's summaries name paths and problems, not values;
/// the request body is never echoed).
async fn error_message(resp: reqwest::Response) -> String {
    let body = resp.bytes().await.unwrap_or_default();
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(&body) else {
        return String::new();
    };
    let summaries: Vec<String> = parsed.diagnostics.into_iter().filter_map(|d| d.summary).collect();
    let msg = match (parsed.message.filter(|m| !m.is_empty()), summaries.is_empty()) {
        (Some(m), true) => m,
        (Some(m), false) => format!("{m}: {}", summaries.join("; ")),
        (None, _) => summaries.join("; "),
    };
    msg.chars().take(500).collect()
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

    /// The client underneath, for writes (rotation).
    pub fn client(&self) -> &EscClient {
        &self.client
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
    fn definitions_do_not_show_their_text() {
        let d = Definition {
            yaml: Zeroizing::new("values: {a: canary-123}".into()),
            etag: "\"e1\"".into(),
            revision: 4,
        };
        let shown = format!("{d:?}");
        assert!(
            !shown.contains("canary") && shown.contains("e1") && shown.contains('4'),
            "{shown}"
        );
    }
}
