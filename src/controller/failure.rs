//! Why a phase did not do its job: a condition reason, a message that holds no value, and how long the other
//! side asked us to wait.

use std::time::Duration;

use crate::esc::EscError;
use crate::push::PushError;
use crate::render::RenderError;
use crate::source::SourceError;

/// Why a sync, rotation or push did not happen, as a condition reason and a message that holds no value.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Authorization refused the object (a missing grant or a broken rule): counted and audited as a denial.
    pub denied: bool,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
            denied: false,
        }
    }

    /// A refusal by authorization.
    pub fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            denied: true,
            ..Failure::new(reason, message)
        }
    }
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            denied: false,
        }
    }
}

impl From<RenderError> for Failure {
    fn from(e: RenderError) -> Self {
        Failure::new(e.reason(), e.to_string())
    }
}

impl From<EscError> for Failure {
    fn from(e: EscError) -> Self {
        SourceError::from(e).into()
    }
}

impl From<PushError> for Failure {
    fn from(e: PushError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            denied: false,
        }
    }
}

/// A failed write or read of the target Secret (or its rollback copy): the code, the reason and the API
/// server's message with its quoted fragments cut out (they can quote object content).
pub fn kube_failure(what: &str, e: &kube::Error) -> Failure {
    let message = match e {
        // The API server's own message names the field and the rule (`type: Invalid value: ...: field is
        // immutable`). It redacts Secret data, but a parser's error can quote a character of it: every quoted
        // fragment is cut out.
        kube::Error::Api(s) if !s.message.is_empty() => {
            format!(
                "{what} failed: HTTP {} {}: {}",
                s.code,
                s.reason,
                without_quotes(&s.message)
            )
        }
        kube::Error::Api(s) => format!("{what} failed: HTTP {} {}", s.code, s.reason),
        _ => format!("{what} failed: API server unreachable"),
    };
    Failure::new("TargetWriteFailed", message)
}

/// `text` with the inside of every '...' and "..." replaced by `…`.
fn without_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '\'' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_messages_keep_the_rule_and_lose_quoted_content() {
        assert_eq!(
            without_quotes(
                r#"Secret "m" is invalid: type: Invalid value: "kubernetes.io/dockerconfigjson": field is immutable"#
            ),
            r#"Secret "…" is invalid: type: Invalid value: "…": field is immutable"#
        );
        assert_eq!(
            without_quotes("data[.dockerconfigjson]: invalid character 'c' looking for beginning of value"),
            "data[.dockerconfigjson]: invalid character '…' looking for beginning of value"
        );
        assert_eq!(without_quotes("unterminated \"canary-value"), "unterminated \"…");
        assert_eq!(
            without_quotes("data: Too long: must have at most 1048576 bytes"),
            "data: Too long: must have at most 1048576 bytes"
        );
    }
}
