//! One open of an environment at one revision, as ESC answers it (`GET /open/{id}`: every property wrapped as
//! `{value, secret, unknown, trace}`), and the values at property paths in it.

use zeroize::Zeroizing;

use super::env::EnvRef;
use super::error::EscError;
use super::path::{PropertyPath, Segment};
use crate::secret::SecretBytes;

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
    /// A snapshot of `env` at `revision` from the body of ESC's open answer.
    pub fn new(env: EnvRef, revision: i64, body: Zeroizing<Vec<u8>>) -> Self {
        Snapshot { env, revision, body }
    }

    /// The value at a property path. Strings are taken as they are; numbers and booleans as their JSON text;
    /// objects and lists as JSON.
    pub fn lookup(&self, path: &PropertyPath) -> Result<SecretBytes, EscError> {
        // The parsed tree holds plaintext briefly; it is dropped before this returns.
        let root: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|_| EscError::Invalid("ESC sent an unreadable environment".into()))?;
        let not_found = || EscError::NotFound {
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
            return Err(EscError::Invalid(format!(
                "path {path} in ESC environment {} has no known value",
                self.env
            )));
        }
        let value = node.get("value").ok_or_else(not_found)?;
        let bytes = match value {
            serde_json::Value::String(s) => s.as_bytes().to_vec(),
            serde_json::Value::Null => {
                return Err(EscError::Invalid(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
