//! The ESC REST API client: the reads a sync needs (newest revision, a pin resolved, one open read whole), and
//! the writes a rotation needs (a definition replaced under its ETag, one value set in it, the environment's
//! rotators run). Every call goes through the shared retry loop (`crate::retry`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::RngExt;
use reqwest::{Method, Response, StatusCode};
use zeroize::Zeroizing;

use super::definition::{self, EditError};
use super::env::EnvRef;
use super::error::EscError;
use super::path::PropertyPath;
use super::snapshot::Snapshot;
use crate::credentials::Credential;
use crate::retry::{self, Refusal, RetryPolicy, Verdict};
use crate::secret::SecretBytes;

/// Hears every request ESC answered (or did not): the operation's bounded name (`open`, `read`, `getETag`,
/// `update`, `rotate`, ...) and the HTTP status, or `error` when no answer came. For request metrics, which
/// live above this layer.
pub type RequestObserver = Arc<dyn Fn(&'static str, &str) + Send + Sync>;

/// How to reach ESC.
#[derive(Clone)]
pub struct EscConfig {
    /// Base URL including `/api/esc`, e.g. `https://api.pulumi.com/api/esc`.
    pub base_url: String,
    /// Access token, sent as `Authorization: token <T>`; read on every request, so a reloaded token is used
    /// from the next one on.
    pub token: Credential,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per call for transient failures (at least 1).
    pub attempts: u32,
    /// Retry-After waits up to this are slept inside one call; longer ones go back to the controller.
    pub max_inline_wait: Duration,
    /// How long an open session is requested for.
    pub session_duration: Duration,
    /// Told about every request, when set.
    pub observer: Option<RequestObserver>,
}

impl std::fmt::Debug for EscConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl EscConfig {
    pub fn new(base_url: impl Into<String>, token: Option<Zeroizing<String>>) -> Self {
        EscConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: Credential::fixed(token),
            timeout: Duration::from_secs(10),
            attempts: 3,
            max_inline_wait: Duration::from_secs(2),
            session_duration: Duration::from_secs(300),
            observer: None,
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts,
            max_inline_wait: self.max_inline_wait,
        }
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

/// One request: what it is, what it names in errors, and what it carries.
struct Call<'a> {
    method: Method,
    url: &'a str,
    /// The object, for NotFound and Conflict ("ESC environment acme/app/prod").
    what: &'a str,
    /// Content type and bytes, shared by every attempt without copying.
    body: Option<(&'static str, &'a Bytes)>,
    headers: &'a [(&'static str, &'a str)],
}

impl EscClient {
    pub fn new(config: EscConfig) -> Result<Self, EscError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EscError::Invalid(format!("ESC client: {e}")))?;
        Ok(EscClient { http, config })
    }

    /// The URL of `env` with `tail` (whose own segments the caller encodes). Every segment is percent-encoded;
    /// `EnvRef` refuses parts that are only dots.
    fn url(&self, env: &EnvRef, tail: &str) -> String {
        let seg = retry::path_segment;
        format!(
            "{}/environments/{}/{}/{}{}",
            self.config.base_url,
            seg(&env.org),
            seg(&env.project),
            seg(&env.env),
            tail
        )
    }

    /// Sends a body-less request with retries on transient failures; `what` names the object for NotFound.
    async fn get(&self, method: Method, url: &str, what: &str) -> Result<Response, EscError> {
        let call = Call {
            method,
            url,
            what,
            body: None,
            headers: &[],
        };
        self.send(&call, self.config.retry_policy()).await
    }

    async fn send(&self, call: &Call<'_>, policy: RetryPolicy) -> Result<Response, EscError> {
        let endpoint = endpoint_name(&call.method, call.url);
        let request = || {
            let mut req = self
                .http
                .request(call.method.clone(), call.url)
                .header("Accept", "application/json");
            if let Some(token) = self.config.token.text() {
                req = req.header("Authorization", format!("token {}", token.as_str()));
            }
            for (name, value) in call.headers {
                req = req.header(*name, *value);
            }
            if let Some((content_type, bytes)) = call.body {
                req = req.header("Content-Type", content_type).body(bytes.clone());
            }
            tracing::debug!(method = %call.method, url = call.url, "ESC request");
            req
        };
        let judge = |refusal: Refusal| {
            let status = refusal.status;
            let after = retry::retry_after(&refusal.headers, SystemTime::now());
            let message = error_message(&refusal.body);
            let what = call.what.to_string();
            match status {
                StatusCode::NOT_FOUND => Verdict::Fail(EscError::NotFound { what }),
                StatusCode::CONFLICT => Verdict::Fail(EscError::Conflict { what }),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Fail(EscError::Unauthorized { message }),
                StatusCode::TOO_MANY_REQUESTS => Verdict::Retry {
                    error: EscError::Throttled { retry_after: after },
                    wait: after,
                },
                s if s.is_server_error() => Verdict::Retry {
                    error: EscError::Unavailable {
                        message: format!("HTTP {}", s.as_u16()),
                        retry_after: after,
                    },
                    wait: after,
                },
                s => Verdict::Fail(EscError::Invalid(format!(
                    "ESC answered HTTP {}: {message}",
                    s.as_u16()
                ))),
            }
        };
        // reqwest's errors name the URL; the kind is all that is worth keeping.
        let transport = |e: &reqwest::Error| EscError::Unavailable {
            message: if e.is_timeout() { "timed out" } else { "request failed" }.into(),
            retry_after: None,
        };
        let observe = |status: Option<StatusCode>| {
            if let Some(observer) = &self.config.observer {
                let code = status.map_or_else(|| "error".to_string(), |s| s.as_u16().to_string());
                observer(endpoint, &code);
            }
        };
        retry::send(&policy, request, judge, transport, observe).await
    }

    /// The newest revision number of an environment.
    pub async fn latest_revision(&self, env: &EnvRef) -> Result<i64, EscError> {
        let what = format!("ESC environment {env}");
        let resp = self.get(Method::HEAD, &self.url(env, ""), &what).await?;
        if let Some(rev) = revision_header(&resp) {
            return Ok(rev);
        }
        // Services that send no revision header on HEAD: ask the versions list for the newest one.
        let resp = self
            .get(Method::GET, &self.url(env, "/versions?count=1"), &what)
            .await?;
        let list: Vec<Revision> = resp.json().await.map_err(|e| invalid_body("versions", e))?;
        list.first().map(|r| r.number).ok_or(EscError::NotFound {
            what: format!("revisions of {what}"),
        })
    }

    /// The revision a pin (a number or a revision tag) names.
    pub async fn resolve_version(&self, env: &EnvRef, version: &str) -> Result<i64, EscError> {
        if let Ok(n) = version.parse::<i64>() {
            return Ok(n);
        }
        let what = format!("revision tag {version:?} of ESC environment {env}");
        if version.is_empty() || retry::only_dots(version) {
            return Err(EscError::Invalid(format!("{what} is not a tag name")));
        }
        let tail = format!("/versions/tags/{}", retry::path_segment(version));
        let resp = self.get(Method::GET, &self.url(env, &tail), &what).await?;
        let tag: RevisionTag = resp.json().await.map_err(|e| invalid_body("revision tag", e))?;
        Ok(tag.revision)
    }

    /// Opens the environment at a revision and reads every property, as one snapshot.
    pub async fn snapshot(&self, env: &EnvRef, revision: i64) -> Result<Snapshot, EscError> {
        let what = format!("revision {revision} of ESC environment {env}");
        let secs = self.config.session_duration.as_secs().max(1);
        let url = self.url(env, &format!("/versions/{revision}/open?duration={secs}s"));
        let resp = self.get(Method::POST, &url, &what).await?;
        let open: OpenResponse = resp.json().await.map_err(|e| invalid_body("open", e))?;
        let resp = self
            .get(
                Method::GET,
                &self.url(env, &format!("/open/{}", retry::path_segment(&open.id))),
                &what,
            )
            .await?;
        let body = Zeroizing::new(
            resp.bytes()
                .await
                .map_err(|_| unavailable("reading the environment failed"))?
                .to_vec(),
        );
        Ok(Snapshot::new(env.clone(), revision, body))
    }

    /// The definition (YAML, secrets as ciphertext) of an environment's newest revision, with the ETag an
    /// update must present.
    pub async fn get_definition(&self, env: &EnvRef) -> Result<Definition, EscError> {
        let what = format!("ESC environment {env}");
        let resp = self.get(Method::GET, &self.url(env, ""), &what).await?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            // Without an ETag an update could silently undo someone else's; refuse rather than write blind.
            .ok_or_else(|| EscError::Invalid(format!("ESC sent no ETag with the definition of {env}")))?;
        let revision = revision_header(&resp)
            .ok_or_else(|| EscError::Invalid(format!("ESC sent no revision number with the definition of {env}")))?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|_| unavailable("reading the definition failed"))?;
        let yaml = String::from_utf8(bytes.to_vec())
            .map_err(|_| EscError::Invalid(format!("the definition of {env} is not UTF-8")))?;
        Ok(Definition {
            yaml: Zeroizing::new(yaml),
            etag,
            revision,
        })
    }

    /// Replaces an environment's definition if it is still at `etag`, returning the new revision number.
    /// Someone else's write since then is [`EscError::Conflict`]; a definition ESC refuses is
    /// [`EscError::Invalid`] with the diagnostics' summaries.
    pub async fn update_definition(&self, env: &EnvRef, yaml: &str, etag: &str) -> Result<i64, EscError> {
        let what = format!("ESC environment {env}");
        let url = self.url(env, "");
        // The body may hold plaintext (`fn::secret: value` before ESC encrypts it): wiped when sent.
        let body = Bytes::from_owner(Zeroizing::new(yaml.as_bytes().to_vec()));
        // The ESC CLI sends the ETag it read as a request header named `ETag` (not If-Match).
        let call = Call {
            method: Method::PATCH,
            url: &url,
            what: &what,
            body: Some(("application/x-yaml", &body)),
            headers: &[("ETag", etag)],
        };
        let resp = self
            .send(&call, self.config.retry_policy())
            .await
            .map_err(|e| match e {
                EscError::Invalid(m) => EscError::Invalid(format!("updating {what}: {m}")),
                other => other,
            })?;
        revision_header(&resp)
            .ok_or_else(|| EscError::Invalid(format!("ESC sent no revision number after updating {env}")))
    }

    /// Asks ESC to run the environment's rotators (`fn::rotate::*`) at or under `paths` (all when empty). The
    /// outcome's status is ESC's (`succeeded`, `failed`, `in_progress`); a failed rotation is not an `Err`.
    pub async fn rotate(&self, env: &EnvRef, paths: &[String]) -> Result<RotateOutcome, EscError> {
        let what = format!("ESC environment {env}");
        let url = self.url(env, "/rotate");
        let body = serde_json::to_vec(&serde_json::json!({ "paths": paths }))
            .map_err(|_| EscError::Invalid("rotation paths do not serialize".into()))?;
        let body = Bytes::from(body);
        let call = Call {
            method: Method::POST,
            url: &url,
            what: &what,
            body: Some(("application/json", &body)),
            headers: &[],
        };
        // A rotation is not idempotent: a retry after a lost answer would rotate twice. One attempt; the
        // controller's recorded intent decides what happens next.
        let once = RetryPolicy {
            attempts: 1,
            ..self.config.retry_policy()
        };
        let resp = self.send(&call, once).await.map_err(|e| match e {
            EscError::Invalid(m) => EscError::Invalid(format!("rotating {what}: {m}")),
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
    ) -> Result<i64, EscError> {
        let text = std::str::from_utf8(value.expose()).map_err(|_| {
            EscError::Invalid(format!(
                "the new value for path {path} in {env} is not UTF-8 text; ESC stores strings"
            ))
        })?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let current = self.get_definition(env).await?;
            let edited =
                Zeroizing::new(definition::set_secret(&current.yaml, path, text).map_err(|e| edit_error(env, e))?);
            match self.update_definition(env, &edited, &current.etag).await {
                Ok(revision) => {
                    tracing::debug!(environment = %env, path = %path, attempts = attempt, revision, "ESC value written");
                    return Ok(revision);
                }
                Err(EscError::Conflict { .. }) if attempt <= MAX_CONFLICT_RETRIES => {
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

fn revision_header(resp: &Response) -> Option<i64> {
    resp.headers()
        .get("Pulumi-ESC-Revision")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
}

fn edit_error(env: &EnvRef, e: EditError) -> EscError {
    EscError::Invalid(format!("ESC environment {env}: {e}"))
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

fn unavailable(message: &str) -> EscError {
    EscError::Unavailable {
        message: message.into(),
        retry_after: None,
    }
}

fn invalid_body(what: &str, e: reqwest::Error) -> EscError {
    // reqwest's decode errors describe the shape, not the content; keep only the kind.
    let _ = e;
    EscError::Invalid(format!("ESC sent an unreadable {what} response"))
}

/// The error's message and its diagnostics' summaries (ESC's summaries name paths and problems, not values;
/// the request body is never echoed).
fn error_message(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
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

#[cfg(test)]
mod tests {
    use super::*;

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
