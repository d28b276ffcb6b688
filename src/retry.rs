//! One retry loop for keyward's outgoing HTTP (the ESC and GitHub clients): a number of attempts, jittered
//! exponential backoff between them, the server's `Retry-After` in both forms RFC 9110 §10.2.3 allows
//! (delay-seconds or an HTTP-date), and a cap on how long one call waits inline. A longer wait goes back to the
//! caller as its error, so that the controller requeues the object instead of holding a worker for minutes.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::RngExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

/// An answer that was not a success, read whole (error bodies are small; a service's message and details are
/// in them).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How persistent one call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first one included (at least 1).
    pub attempts: u32,
    /// Waits up to this are slept inside the call; longer ones end it with the error that asked for them.
    pub max_inline_wait: Duration,
}

/// What a client makes of an answer that was not a success.
#[derive(Debug)]
pub enum Verdict<E> {
    /// Give up: trying again cannot help (a spec or permission problem, a conflict).
    Fail(E),
    /// Worth another attempt: after `wait` when the server named one, else after the backoff.
    Retry { error: E, wait: Option<Duration> },
}

/// Sends a request (built afresh by `request` for every attempt) until it succeeds, `judge` gives up on a
/// refusal, the attempts run out, or a wait would exceed the inline cap; the error is the last one. A transport
/// failure (no answer) becomes `transport`'s error and is retried after the backoff. `observe` hears every
/// attempt's status (`None`: no answer), for request metrics.
pub async fn send<E>(
    policy: &RetryPolicy,
    mut request: impl FnMut() -> RequestBuilder,
    mut judge: impl FnMut(Refusal) -> Verdict<E>,
    transport: impl Fn(&reqwest::Error) -> E,
    mut observe: impl FnMut(Option<StatusCode>),
) -> Result<Response, E> {
    let attempts = policy.attempts.max(1);
    let mut attempt = 0;
    loop {
        let sent = request().send().await;
        observe(sent.as_ref().ok().map(Response::status));
        let (error, wait) = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => match judge(refusal(resp).await) {
                Verdict::Fail(e) => return Err(e),
                Verdict::Retry { error, wait } => (error, wait),
            },
            Err(e) => (transport(&e), None),
        };
        attempt += 1;
        if attempt >= attempts {
            return Err(error);
        }
        let wait = match wait {
            Some(w) if w > policy.max_inline_wait => return Err(error),
            Some(w) => w,
            None => jittered(attempt - 1),
        };
        tokio::time::sleep(wait).await;
    }
}

async fn refusal(resp: Response) -> Refusal {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    Refusal { status, headers, body }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One URL path segment, percent-encoded (`/` becomes `%2F`, a space `%20`). Callers refuse segments of only
/// dots: URL parsers resolve those as `.` and `..`, encoded or not.
pub fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Whether a name would be a `.` or `..` path segment (or only dots).
pub fn only_dots(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c == b'.')
}

/// The wait an answer's `Retry-After` header asks for: delay-seconds, or the time until an HTTP-date (zero
/// when that date has passed). None when the header is absent or neither form.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The backoff before retry number `attempt + 1`: 200ms, 400ms, 800ms ... (capped at 12.8s) with ±50% jitter,
/// so that many clients do not retry in step.
pub fn jittered(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(6));
    let jitter = rand::rng().random_range(base / 2..=base + base / 2);
    Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn grows_with_jitter() {
        for a in 0..5 {
            let d = jittered(a).as_millis() as u64;
            let base = 200 * (1 << a);
            assert!(d >= base / 2 && d <= base + base / 2, "{a}: {d}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(path_segment("prod"), "prod");
        assert_eq!(path_segment("a b/c%d"), "a%20b%2Fc%25d");
        assert_eq!(path_segment("é"), "%C3%A9");
        assert_eq!(path_segment("x-y_z.~"), "x-y_z.~");
        assert!(only_dots("..") && only_dots(".") && !only_dots("a.") && !only_dots(""));
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(retry_after(&h(" 20 "), now), Some(Duration::from_secs(20)));
        assert_eq!(
            retry_after(&h("Wed, 21 Oct 2015 07:28:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        // A date already past: retry at once.
        assert_eq!(
            retry_after(&h("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&h("soon"), now), None);
        assert_eq!(retry_after(&h("-1"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
