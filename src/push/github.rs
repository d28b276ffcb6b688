//! Pushes values to GitHub Actions secrets at organization, repository or environment level, as GitHub's REST
//! API (`../shared/reference/github-actions-secrets-openapi.yaml`) wants: get the scope's public key, seal the
//! value to it (a libsodium sealed box), and PUT the ciphertext with the key's id.
//!
//! Rate limits follow GitHub's rules: `retry-after` first, then `x-ratelimit-reset` when
//! `x-ratelimit-remaining` is 0, else at least a minute. Short waits are slept here; longer ones go back to
//! the controller as [`PushError::RateLimited`] so that a worker is not held for minutes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use reqwest::header::{ACCEPT, HeaderMap, USER_AGENT};
use reqwest::{Method, StatusCode};
use zeroize::Zeroizing;

use super::error::PushError;
use crate::api::GithubTarget;
use crate::credentials::Credential;
use crate::retry::{self, Refusal, RetryPolicy, Verdict};
use crate::secret::SecretBytes;

pub use crate::api::GithubVisibility as Visibility;

/// GitHub's REST API.
pub const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// The REST API version this client is written against.
const API_VERSION: &str = "2022-11-28";
/// GitHub's advice when a rate limit names no time: wait at least a minute.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Added to a wait until `x-ratelimit-reset`: the reset is in whole seconds and our clock is not GitHub's.
const RESET_MARGIN: Duration = Duration::from_secs(1);
/// GitHub's error messages are short; a proxy's HTML error page is not, and is not worth carrying.
const MAX_MESSAGE: usize = 300;

/// How to reach GitHub.
#[derive(Clone)]
pub struct GithubConfig {
    /// API base URL, without a trailing slash: `https://api.github.com`, or a GitHub Enterprise Server's
    /// `https://HOST/api/v3`.
    pub base_url: String,
    /// Token (fine-grained or classic PAT, or an installation token), sent as `Authorization: Bearer <T>`;
    /// read on every request, so a reloaded token is used from the next one on.
    pub token: Credential,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request for rate limits and transient failures (at least 1).
    pub attempts: u32,
    /// Rate-limit waits up to this are slept inside one call; longer ones return [`PushError::RateLimited`].
    pub max_inline_wait: Duration,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            base_url: DEFAULT_BASE_URL.into(),
            token: Credential::default(),
            timeout: Duration::from_secs(10),
            attempts: 3,
            max_inline_wait: Duration::from_secs(2),
        }
    }
}

impl GithubConfig {
    pub fn new(base_url: impl Into<String>, token: Option<Zeroizing<String>>) -> Self {
        GithubConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: Credential::fixed(token),
            ..GithubConfig::default()
        }
    }
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("max_inline_wait", &self.max_inline_wait)
            .finish()
    }
}

/// Where an Actions secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubScope {
    Organization {
        org: String,
        visibility: Visibility,
        /// Only with visibility `selected`.
        selected_repository_ids: Vec<i64>,
    },
    Repository {
        owner: String,
        repo: String,
    },
    Environment {
        owner: String,
        repo: String,
        environment: String,
    },
}

fn invalid(target: impl Into<String>, message: impl Into<String>) -> PushError {
    PushError::Invalid {
        target: target.into(),
        message: message.into(),
    }
}

/// GitHub's secret-name rules: letters, digits and `_`, not starting with a digit or `GITHUB_`.
fn valid_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !name.to_ascii_uppercase().starts_with("GITHUB_")
}

impl GithubScope {
    /// The scope a ManagedSecret's `pushTo.github` names. Admission already enforces most of this; it is
    /// checked again because a push must not guess.
    pub fn from_target(t: &GithubTarget) -> Result<Self, PushError> {
        let target = format!("github push of {:?}", t.secret_name);
        if !valid_secret_name(&t.secret_name) {
            return Err(invalid(
                target,
                "the secret name must be letters, digits and '_', not start with a digit or GITHUB_",
            ));
        }
        match (&t.organization, &t.repository) {
            (Some(org), None) => {
                if org.is_empty() || t.environment.is_some() {
                    return Err(invalid(
                        target,
                        "an organization secret takes a non-empty organization only",
                    ));
                }
                let visibility = t.visibility.unwrap_or_default();
                let ids = t.selected_repository_ids.clone().unwrap_or_default();
                if !ids.is_empty() && visibility != Visibility::Selected {
                    return Err(invalid(target, "selectedRepositoryIds needs visibility selected"));
                }
                Ok(GithubScope::Organization {
                    org: org.clone(),
                    visibility,
                    selected_repository_ids: ids,
                })
            }
            (None, Some(full)) => {
                if t.visibility.is_some() || t.selected_repository_ids.is_some() {
                    return Err(invalid(target, "visibility applies to organization secrets only"));
                }
                let Some((owner, repo)) = full.split_once('/').filter(|(o, r)| {
                    !o.is_empty() && !r.is_empty() && !r.contains('/') && !retry::only_dots(o) && !retry::only_dots(r)
                }) else {
                    return Err(invalid(target, format!("repository {full:?} is not owner/name")));
                };
                let (owner, repo) = (owner.to_string(), repo.to_string());
                match &t.environment {
                    None => Ok(GithubScope::Repository { owner, repo }),
                    // URL parsers resolve `.` and `..` segments even when percent-encoded.
                    Some(env) if env.is_empty() || retry::only_dots(env) => {
                        Err(invalid(target, format!("environment {env:?} is not a usable name")))
                    }
                    Some(env) => Ok(GithubScope::Environment {
                        owner,
                        repo,
                        environment: env.clone(),
                    }),
                }
            }
            _ => Err(invalid(target, "exactly one of organization or repository is needed")),
        }
    }

    /// Names a secret for messages and status: `github:org/acme/NAME`, `github:repo/acme/app/NAME`,
    /// `github:env/acme/app/production/NAME`.
    pub fn describe(&self, secret_name: &str) -> String {
        match self {
            GithubScope::Organization { org, .. } => format!("github:org/{org}/{secret_name}"),
            GithubScope::Repository { owner, repo } => format!("github:repo/{owner}/{repo}/{secret_name}"),
            GithubScope::Environment {
                owner,
                repo,
                environment,
            } => format!("github:env/{owner}/{repo}/{environment}/{secret_name}"),
        }
    }

    /// The secrets collection of this scope, with each name percent-encoded.
    fn secrets_path(&self) -> String {
        match self {
            GithubScope::Organization { org, .. } => format!("/orgs/{}/actions/secrets", retry::path_segment(org)),
            GithubScope::Repository { owner, repo } => {
                format!(
                    "/repos/{}/{}/actions/secrets",
                    retry::path_segment(owner),
                    retry::path_segment(repo)
                )
            }
            GithubScope::Environment {
                owner,
                repo,
                environment,
            } => format!(
                "/repos/{}/{}/environments/{}/secrets",
                retry::path_segment(owner),
                retry::path_segment(repo),
                retry::path_segment(environment)
            ),
        }
    }

    fn public_key_path(&self) -> String {
        format!("{}/public-key", self.secrets_path())
    }

    fn secret_path(&self, secret_name: &str) -> String {
        format!("{}/{}", self.secrets_path(), retry::path_segment(secret_name))
    }
}

/// Seals `plaintext` to a base64 X25519 public key (libsodium `crypto_box_seal`) and returns the base64
/// ciphertext GitHub expects as `encrypted_value`.
fn seal(public_key_b64: &str, plaintext: &[u8]) -> Result<String, &'static str> {
    let bytes = STANDARD
        .decode(public_key_b64.trim())
        .map_err(|_| "GitHub sent a public key that is not base64")?;
    let key = crypto_box::PublicKey::from_slice(&bytes).map_err(|_| "GitHub sent a public key that is not 32 bytes")?;
    let sealed = key
        .seal(&mut OsRng, plaintext)
        .map_err(|_| "sealing the value failed")?;
    Ok(STANDARD.encode(sealed))
}

/// How long to wait before retrying a 403 or 429, per GitHub's rules; `None` when the answer is not a rate
/// limit (a 403 without any rate-limit signal is a permission problem).
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, message: &str, now: SystemTime) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(wait) = retry::retry_after(headers, now) {
        return Some(wait);
    }
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if exhausted && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        let at = UNIX_EPOCH + Duration::from_secs(reset);
        // A reset already past (clock skew, or it just happened) still gets the margin.
        return Some(at.duration_since(now).unwrap_or_default() + RESET_MARGIN);
    }
    if exhausted || status == StatusCode::TOO_MANY_REQUESTS || message.to_ascii_lowercase().contains("rate limit") {
        return Some(DEFAULT_RATE_LIMIT_WAIT);
    }
    None
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

/// GitHub's `message`, with the `errors` details a 422 may carry (GitHub never echoes a secret value).
fn error_message(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let mut msg = parsed.message.unwrap_or_default();
    for e in &parsed.errors {
        let detail = e
            .get("message")
            .and_then(serde_json::Value::as_str)
            .or_else(|| e.as_str())
            .or_else(|| e.get("code").and_then(serde_json::Value::as_str));
        if let Some(d) = detail {
            msg.push_str("; ");
            msg.push_str(d);
        }
    }
    msg.chars().take(MAX_MESSAGE).collect()
}

/// A secret as GitHub lists it (`organization-actions-secret`, `actions-secret`): names and times, no value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SecretMeta {
    pub updated_at: String,
    #[serde(default)]
    pub visibility: Option<String>,
}

#[derive(serde::Deserialize)]
struct PublicKeyBody {
    key_id: String,
    key: String,
}

/// A GitHub Actions secrets client.
#[derive(Clone, Debug)]
pub struct GithubClient {
    http: reqwest::Client,
    config: GithubConfig,
}

impl GithubClient {
    pub fn new(config: GithubConfig) -> Result<Self, PushError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| invalid("github", format!("HTTP client: {e}")))?;
        Ok(GithubClient { http, config })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Creates or updates `secret_name` in `scope` with `value`. GitHub only ever sees the sealed value.
    pub async fn put_secret(
        &self,
        scope: &GithubScope,
        secret_name: &str,
        value: &SecretBytes,
    ) -> Result<(), PushError> {
        let target = scope.describe(secret_name);
        let mut body = serde_json::Map::new();
        if let GithubScope::Organization {
            visibility,
            selected_repository_ids,
            ..
        } = scope
        {
            if !selected_repository_ids.is_empty() && *visibility != Visibility::Selected {
                return Err(invalid(target, "selected repository ids need visibility selected"));
            }
            body.insert("visibility".into(), serde_json::json!(visibility));
            if *visibility == Visibility::Selected {
                body.insert(
                    "selected_repository_ids".into(),
                    serde_json::json!(selected_repository_ids),
                );
            }
        }
        // The key is fetched for every push: GitHub may rotate it, and pushes are rare.
        let resp = self
            .send(Method::GET, &self.url(&scope.public_key_path()), None, &target)
            .await?;
        let key: PublicKeyBody = resp
            .json()
            .await
            .map_err(|_| invalid(&target, "GitHub sent an unreadable public key"))?;
        let sealed = seal(&key.key, value.expose()).map_err(|m| invalid(&target, m))?;
        body.insert("encrypted_value".into(), sealed.into());
        body.insert("key_id".into(), key.key_id.into());
        let body = serde_json::Value::Object(body);
        self.send(
            Method::PUT,
            &self.url(&scope.secret_path(secret_name)),
            Some(&body),
            &target,
        )
        .await?;
        tracing::debug!(target = %target, "pushed GitHub secret");
        Ok(())
    }

    /// What GitHub says of a secret (never its value): when it was last written, or None when it does not exist.
    pub async fn secret_meta(&self, scope: &GithubScope, secret_name: &str) -> Result<Option<SecretMeta>, PushError> {
        let target = scope.describe(secret_name);
        let url = self.url(&scope.secret_path(secret_name));
        let resp = match self.send(Method::GET, &url, None, &target).await {
            Ok(resp) => resp,
            Err(PushError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta: SecretMeta = resp
            .json()
            .await
            .map_err(|_| invalid(&target, "GitHub sent unreadable secret metadata"))?;
        Ok(Some(meta))
    }

    /// Sends one request through the shared retry loop: rate limits that fit `max_inline_wait` and transient
    /// failures are retried within `attempts`. `target` names the secret in errors.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        target: &str,
    ) -> Result<reqwest::Response, PushError> {
        let policy = RetryPolicy {
            attempts: self.config.attempts,
            max_inline_wait: self.config.max_inline_wait,
        };
        let request = || {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .header(USER_AGENT, concat!("keyward/", env!("CARGO_PKG_VERSION")));
            if let Some(token) = self.config.token.text() {
                // bearer_auth marks the header sensitive, so it stays out of debug output.
                req = req.bearer_auth(token.as_str());
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            tracing::debug!(method = %method, target, "GitHub request");
            req
        };
        let judge = |refusal: Refusal| {
            let Refusal { status, headers, body } = refusal;
            let message = error_message(&body);
            let now = SystemTime::now();
            if let Some(wait) = rate_limit_wait(status, &headers, &message, now) {
                let error = PushError::RateLimited {
                    target: target.into(),
                    retry_after: wait,
                };
                return Verdict::Retry {
                    error,
                    wait: Some(wait),
                };
            }
            if status.is_server_error() {
                let error = PushError::Unavailable {
                    target: target.into(),
                    message: format!("HTTP {}", status.as_u16()),
                };
                return Verdict::Retry {
                    error,
                    wait: retry::retry_after(&headers, now),
                };
            }
            let target = target.to_string();
            let message = if message.is_empty() {
                format!("HTTP {}", status.as_u16())
            } else {
                message
            };
            Verdict::Fail(match status {
                StatusCode::UNAUTHORIZED => PushError::Unauthorized { target, message },
                StatusCode::FORBIDDEN => PushError::Forbidden { target, message },
                StatusCode::NOT_FOUND => PushError::NotFound { target },
                StatusCode::UNPROCESSABLE_ENTITY => PushError::Invalid { target, message },
                s => invalid(target, format!("GitHub answered HTTP {}: {message}", s.as_u16())),
            })
        };
        // reqwest's errors name the URL; the kind is all that is worth keeping.
        let transport = |e: &reqwest::Error| PushError::Unavailable {
            target: target.into(),
            message: if e.is_timeout() { "timed out" } else { "request failed" }.into(),
        };
        retry::send(&policy, request, judge, transport, |_| {}).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GithubVisibility;
    use reqwest::header::HeaderValue;

    fn target(org: Option<&str>, repo: Option<&str>, env: Option<&str>) -> GithubTarget {
        GithubTarget {
            organization: org.map(Into::into),
            repository: repo.map(Into::into),
            environment: env.map(Into::into),
            secret_name: "DB_PASSWORD".into(),
            ..GithubTarget::default()
        }
    }

    #[test]
    fn seal_opens_with_the_secret_key() {
        let sk = crypto_box::SecretKey::generate(&mut OsRng);
        let pk = STANDARD.encode(sk.public_key().as_bytes());
        let sealed = seal(&pk, b"canary-7Hq").unwrap();
        let opened = sk.unseal(&STANDARD.decode(&sealed).unwrap()).unwrap();
        assert_eq!(opened, b"canary-7Hq");
        // Sealed boxes are randomized: the same value never gives the same ciphertext twice.
        assert_ne!(sealed, seal(&pk, b"canary-7Hq").unwrap());
        // 32-byte ephemeral key + 16-byte tag + the value.
        assert_eq!(STANDARD.decode(&sealed).unwrap().len(), 32 + 16 + 10);
        assert!(seal("not base64!", b"x").is_err());
        assert!(seal(&STANDARD.encode([1u8; 31]), b"x").is_err());
    }

    #[test]
    fn scopes_from_targets_and_their_paths() {
        let org = GithubScope::from_target(&GithubTarget {
            visibility: Some(GithubVisibility::Selected),
            selected_repository_ids: Some(vec![1, 2]),
            ..target(Some("acme"), None, None)
        })
        .unwrap();
        assert_eq!(
            org,
            GithubScope::Organization {
                org: "acme".into(),
                visibility: Visibility::Selected,
                selected_repository_ids: vec![1, 2]
            }
        );
        assert_eq!(org.describe("N"), "github:org/acme/N");
        assert_eq!(org.public_key_path(), "/orgs/acme/actions/secrets/public-key");
        assert_eq!(org.secret_path("N"), "/orgs/acme/actions/secrets/N");
        let default_org = GithubScope::from_target(&target(Some("acme"), None, None)).unwrap();
        assert!(matches!(
            default_org,
            GithubScope::Organization {
                visibility: Visibility::Private,
                ..
            }
        ));

        let repo = GithubScope::from_target(&target(None, Some("acme/app"), None)).unwrap();
        assert_eq!(repo.describe("N"), "github:repo/acme/app/N");
        assert_eq!(repo.public_key_path(), "/repos/acme/app/actions/secrets/public-key");
        assert_eq!(repo.secret_path("N"), "/repos/acme/app/actions/secrets/N");

        let env = GithubScope::from_target(&target(None, Some("acme/app"), Some("prod eu/1"))).unwrap();
        assert_eq!(env.describe("N"), "github:env/acme/app/prod eu/1/N");
        assert_eq!(
            env.public_key_path(),
            "/repos/acme/app/environments/prod%20eu%2F1/secrets/public-key"
        );
        assert_eq!(
            env.secret_path("N"),
            "/repos/acme/app/environments/prod%20eu%2F1/secrets/N"
        );

        let bad = [
            target(Some("acme"), Some("acme/app"), None),
            target(None, None, None),
            target(Some("acme"), None, Some("prod")),
            target(None, Some("acme"), None),
            target(None, Some("acme/app/x"), None),
            target(None, Some("/app"), None),
            target(None, Some("acme/app"), Some("..")),
            target(None, Some("acme/.."), None),
            GithubTarget {
                visibility: Some(GithubVisibility::All),
                ..target(None, Some("acme/app"), None)
            },
            GithubTarget {
                visibility: Some(GithubVisibility::Private),
                selected_repository_ids: Some(vec![1]),
                ..target(Some("acme"), None, None)
            },
            GithubTarget {
                secret_name: "GITHUB_TOKEN".into(),
                ..target(Some("acme"), None, None)
            },
            GithubTarget {
                secret_name: "1X".into(),
                ..target(Some("acme"), None, None)
            },
        ];
        for t in bad {
            let e = GithubScope::from_target(&t).unwrap_err();
            assert_eq!(e.reason(), "Invalid", "{t:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rate_limit_waits_follow_githubs_rules() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let wait = |status: u16, h: &[(&'static str, &str)], msg: &str| {
            rate_limit_wait(StatusCode::from_u16(status).unwrap(), &headers(h), msg, now)
        };
        // retry-after wins, on 403 and 429 alike.
        assert_eq!(wait(403, &[("retry-after", "7")], ""), Some(Duration::from_secs(7)));
        assert_eq!(
            wait(429, &[("retry-after", " 3 "), ("x-ratelimit-remaining", "0")], ""),
            Some(Duration::from_secs(3))
        );
        // Primary limit: until the reset, plus a margin for clock skew.
        let reset = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1000010")];
        assert_eq!(wait(403, &reset, ""), Some(Duration::from_secs(11)));
        assert_eq!(wait(429, &reset, ""), Some(Duration::from_secs(11)));
        // A reset in the past: the margin only.
        let past = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "999000")];
        assert_eq!(wait(403, &past, ""), Some(RESET_MARGIN));
        // Garbage reset or retry-after: GitHub's default minute.
        let garbage = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "soon")];
        assert_eq!(wait(403, &garbage, ""), Some(DEFAULT_RATE_LIMIT_WAIT));
        assert_eq!(wait(429, &[("retry-after", "soon")], ""), Some(DEFAULT_RATE_LIMIT_WAIT));
        // Retry-After as an HTTP-date (RFC 9110): the time until then, nothing when it has passed.
        assert_eq!(
            wait(429, &[("retry-after", "Mon, 12 Jan 1970 13:46:50 GMT")], ""),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            wait(403, &[("retry-after", "Mon, 12 Jan 1970 13:00:00 GMT")], ""),
            Some(Duration::ZERO)
        );
        // Secondary limit without headers: recognized by its message.
        assert_eq!(
            wait(403, &[], "You have exceeded a secondary rate limit."),
            Some(DEFAULT_RATE_LIMIT_WAIT)
        );
        assert_eq!(wait(429, &[], ""), Some(DEFAULT_RATE_LIMIT_WAIT));
        // Remaining quota means the 403 is about permissions.
        assert_eq!(
            wait(
                403,
                &[("x-ratelimit-remaining", "4999"), ("x-ratelimit-reset", "1000010")],
                "Resource not accessible by personal access token"
            ),
            None
        );
        assert_eq!(wait(403, &[], "Must have admin rights to Repository."), None);
        // Other statuses are never rate limits.
        assert_eq!(wait(503, &[("retry-after", "1")], ""), None);
        assert_eq!(wait(401, &[("x-ratelimit-remaining", "0")], ""), None);
    }

    #[test]
    fn config_debug_redacts_the_token() {
        crate::tls::install_crypto_provider();
        let cfg = GithubConfig::new("http://x/", Some(Zeroizing::new("ghp_canary123".into())));
        assert_eq!(cfg.base_url, "http://x");
        let shown = format!("{cfg:?} {:?}", GithubClient::new(cfg.clone()).unwrap());
        assert!(!shown.contains("canary"), "{shown}");
        assert_eq!(GithubConfig::default().base_url, DEFAULT_BASE_URL);
        assert_eq!(GithubConfig::default().max_inline_wait, Duration::from_secs(2));
    }
}
