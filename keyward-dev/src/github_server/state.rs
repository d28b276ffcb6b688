//! What the GitHub server's request handlers share: the store, counters and injected faults; the
//! repositories that exist; and the secrets as received, for tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::store::Store;

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
    pub(super) fn problem(&self) -> Option<&'static str> {
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

/// Everything the request handlers share.
pub(crate) struct GithubServerState {
    pub(super) store: Mutex<Store>,
    pub(super) counters: Mutex<Counters>,
    pub(super) fault: Mutex<GithubFault>,
    pub(super) token: Option<Zeroizing<String>>,
    /// For the absolute URLs GitHub puts in bodies (`selected_repositories_url`).
    pub(super) addr: SocketAddr,
}

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still usable here.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store's key for a scope key given by a caller: GitHub's names are case-insensitive.
pub(super) fn normalize_scope(scope_key: &str) -> String {
    scope_key.to_lowercase()
}
