//! One open of an environment at one revision, as ESC answers it (`GET /open/{id}`: every property wrapped as
//! `{value, secret, unknown, trace}`), and the values at property paths in it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::env::EnvRef;
use super::error::EscError;
use super::path::{PropertyPath, Segment};
use crate::secret::SecretBytes;

/// One opened environment at one revision. The body holds values: it lives in zeroizing memory. It is read
/// once, into an index of where each property is in it (names and byte ranges, no values), so that a lookup
/// costs the length of its path and the size of its value, not the size of the environment: a cycle's lookups
/// for N ManagedSecrets cost N, not N × the environment (`cargo bench --bench lookup`).
pub struct Snapshot {
    pub env: EnvRef,
    pub revision: i64,
    body: Zeroizing<Vec<u8>>,
    /// The wrapped nodes under `properties`, by name; None when the body is not an open answer.
    index: Option<BTreeMap<String, Node>>,
}

/// Where one wrapped node (`{value, secret, unknown, trace}`) is in the body, and its children when its value is
/// an object or a list (up to [`MAX_DEPTH`] levels; deeper values are read whole when asked for).
#[derive(Debug)]
struct Node {
    span: std::ops::Range<usize>,
    children: Children,
}

#[derive(Debug)]
enum Children {
    None,
    Object(BTreeMap<String, Node>),
    List(Vec<Node>),
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
        let index = index(&body);
        Snapshot {
            env,
            revision,
            body,
            index,
        }
    }

    /// The value at a property path, as the bytes a Secret key receives:
    /// - a string: its characters (UTF-8), unquoted;
    /// - a number: its JSON text exactly as ESC's answer has it (`1.50` stays `1.50`, integers of any length
    ///   keep every digit): it is never parsed into a float or a 64-bit integer;
    /// - `true` / `false`: that text;
    /// - an object or a list: compact JSON of the plain values (ESC's `{value, secret, ...}` wrappers removed),
    ///   object keys sorted, strings and numbers as ESC's text has them;
    /// - null, or a value ESC reports as unknown: an error (nothing is written).
    pub fn lookup(&self, path: &PropertyPath) -> Result<SecretBytes, EscError> {
        let node = self.node_at(path)?;
        self.bytes_of(self.raw(node)?, &path.to_string())
    }

    /// The leaves of the object at `path`, for `dataFrom`: every value that is not an object, with the names
    /// of the object keys leading to it from `path` (`{db: {host: h}}` gives `(["db", "host"], h)`), as
    /// [`Snapshot::lookup`] gives values (lists are one leaf, as JSON). A path that is not an object, a null
    /// or unknown leaf, or an object nested more than 128 levels is an error; an empty object has no leaves.
    pub fn leaves(&self, path: &PropertyPath) -> Result<Vec<(Vec<String>, SecretBytes)>, EscError> {
        let node = self.node_at(path)?;
        let value = field(self.raw(node)?, "value").ok_or_else(|| self.not_found(&path.to_string()))?;
        if !value.get().starts_with('{') {
            return Err(EscError::Invalid(format!(
                "path {path} in ESC environment {} is not an object (dataFrom expands objects; use data for one value)",
                self.env
            )));
        }
        let Children::Object(children) = &node.children else {
            // Deeper than the index goes: as deep as lookups refuse.
            return Err(self.unreadable());
        };
        let mut out = Vec::new();
        let mut names = Vec::new();
        self.walk(children, &path.to_string(), &mut names, &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        children: &BTreeMap<String, Node>,
        path: &str,
        names: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, SecretBytes)>,
    ) -> Result<(), EscError> {
        for (name, node) in children {
            names.push(name.clone());
            let child_path = format!("{path}[{}]", serde_json::to_string(name).unwrap_or_default());
            match &node.children {
                Children::Object(grandchildren) => self.walk(grandchildren, &child_path, names, out)?,
                _ => out.push((names.clone(), self.bytes_of(self.raw(node)?, &child_path)?)),
            }
            names.pop();
        }
        Ok(())
    }

    /// The raw JSON of `node`.
    fn raw(&self, node: &Node) -> Result<&RawValue, EscError> {
        let text =
            std::str::from_utf8(self.body.get(node.span.clone()).unwrap_or_default()).map_err(|_| self.unreadable())?;
        serde_json::from_str(text).map_err(|_| self.unreadable())
    }

    fn unreadable(&self) -> EscError {
        EscError::Invalid("ESC sent an unreadable environment".into())
    }

    fn not_found(&self, path: &str) -> EscError {
        EscError::NotFound {
            what: format!("path {path} in ESC environment {}", self.env),
        }
    }

    /// The indexed node at `path`.
    fn node_at(&self, path: &PropertyPath) -> Result<&Node, EscError> {
        let not_found = || self.not_found(&path.to_string());
        let index = self.index.as_ref().ok_or_else(|| self.unreadable())?;
        let mut segments = path.0.iter();
        let mut node = match segments.next() {
            Some(Segment::Key(k)) => index.get(k.as_str()),
            _ => None,
        }
        .ok_or_else(not_found)?;
        for seg in segments {
            node = match (seg, &node.children) {
                (Segment::Key(k), Children::Object(children)) => children.get(k.as_str()),
                (Segment::Index(i), Children::List(items)) => items.get(*i),
                _ => None,
            }
            .ok_or_else(not_found)?;
        }
        Ok(node)
    }

    /// The bytes a Secret key receives for the wrapped node at `path` (see [`Snapshot::lookup`]), built in
    /// zeroizing memory.
    fn bytes_of(&self, node: &RawValue, path: &str) -> Result<SecretBytes, EscError> {
        if field(node, "unknown").is_some_and(|u| u.get() == "true") {
            return Err(EscError::Invalid(format!(
                "path {path} in ESC environment {} has no known value",
                self.env
            )));
        }
        let value = field(node, "value").ok_or_else(|| self.not_found(path))?;
        let text = value.get();
        let bytes = match text.as_bytes().first() {
            Some(b'"') => {
                let s: Zeroizing<String> = Zeroizing::new(serde_json::from_str(text).map_err(|_| self.unreadable())?);
                s.as_bytes().to_vec()
            }
            Some(b'n') => {
                return Err(EscError::Invalid(format!(
                    "path {path} in ESC environment {} is null",
                    self.env
                )));
            }
            _ => {
                let mut out = Zeroizing::new(String::new());
                plain_json(value, &mut out, 0).ok_or_else(|| self.unreadable())?;
                out.as_bytes().to_vec()
            }
        };
        Ok(SecretBytes::new(bytes))
    }
}

/// The index of an open answer's `properties`: each wrapped node's byte range and children. None when the
/// body is not JSON of an open answer's shape (every lookup is then `unreadable`).
fn index(body: &[u8]) -> Option<BTreeMap<String, Node>> {
    let root: Fields<'_> = serde_json::from_slice(body).ok()?;
    // An answer without properties (an empty environment) has no paths: lookups are "not found".
    let Some(properties) = root.get("properties") else {
        return Some(BTreeMap::new());
    };
    let fields: Fields<'_> = serde_json::from_str(properties.get()).ok()?;
    Some(
        fields
            .into_iter()
            .map(|(name, raw)| (name, node(body, raw, 0)))
            .collect(),
    )
}

/// The node of the wrapped value `raw` (a slice of `body`) at `depth`.
fn node(body: &[u8], raw: &RawValue, depth: usize) -> Node {
    // `raw` borrows from `body`: its offset is the distance between the two.
    let start = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    let span = start..start + raw.get().len();
    let unknown = field(raw, "unknown").is_some_and(|u| u.get() == "true");
    let children = match field(raw, "value") {
        Some(v) if depth < MAX_DEPTH && !unknown => match v.get().as_bytes().first() {
            Some(b'{') => serde_json::from_str::<Fields<'_>>(v.get())
                .map(|f| Children::Object(f.into_iter().map(|(k, c)| (k, node(body, c, depth + 1))).collect()))
                .unwrap_or(Children::None),
            Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(v.get())
                .map(|items| Children::List(items.into_iter().map(|c| node(body, c, depth + 1)).collect()))
                .unwrap_or(Children::None),
            _ => Children::None,
        },
        _ => Children::None,
    };
    Node { span, children }
}

/// A JSON object as borrowed raw values by key (sorted, as the plain JSON of objects is).
/// (Keys are owned: a key with escapes cannot borrow from the text.)
type Fields<'a> = BTreeMap<String, &'a RawValue>;

/// Field `name` of the wrapped node `node` (`{value, secret, unknown, trace}`).
fn field<'a>(node: &'a RawValue, name: &str) -> Option<&'a RawValue> {
    serde_json::from_str::<Fields<'a>>(node.get()).ok()?.get(name).copied()
}

/// How deeply `plain_json` unwraps objects and lists: serde_json's own limit for a parsed value. Raw values
/// are read without one, so without this a deeply nested answer recursed until the stack overflowed, having
/// re-read its rest at every level (quadratic time).
const MAX_DEPTH: usize = 128;

/// Appends the plain JSON of a wrapped value's `value` to `out`: objects and lists unwrapped level by level,
/// every scalar as ESC's text has it. None when the JSON is not what ESC sends, or nests deeper than
/// `MAX_DEPTH` (`depth` is this value's).
fn plain_json(value: &RawValue, out: &mut String, depth: usize) -> Option<()> {
    let text = value.get();
    if depth >= MAX_DEPTH && matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
        return None;
    }
    match text.as_bytes().first()? {
        b'{' => {
            let fields: Fields<'_> = serde_json::from_str(text).ok()?;
            out.push('{');
            for (n, (key, wrapped)) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).ok()?);
                out.push(':');
                plain_json(field(wrapped, "value").unwrap_or(RawValue::NULL), out, depth + 1)?;
            }
            out.push('}');
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            out.push('[');
            for (n, wrapped) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                plain_json(field(wrapped, "value").unwrap_or(RawValue::NULL), out, depth + 1)?;
            }
            out.push(']');
        }
        _ => out.push_str(text),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(body: serde_json::Value) -> Snapshot {
        Snapshot::new(
            EnvRef::parse("o/p/e").unwrap(),
            1,
            Zeroizing::new(body.to_string().into_bytes()),
        )
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

    /// Found writing the snapshot fuzz target (`fuzz/`; the input is past the fuzzer's length limit) and
    /// confirmed with its binary: raw values are read without serde_json's depth limit, and unwrapping
    /// recursed once per level, re-reading the rest each time. An answer 100,000 levels deep (1.6 MB) still
    /// ran after five minutes, and one deep enough overflows the stack. Here 20,000 levels, refused at once.
    #[test]
    fn deep_answers_are_refused_not_recursed() {
        let n = 5_000;
        let body = format!(
            r#"{{"properties":{{"deep":{{"value":{}1{}}}}}}}"#,
            r#"{"a":{"value":"#.repeat(n),
            "}}".repeat(n)
        );
        let s = Snapshot::new(EnvRef::parse("o/p/e").unwrap(), 1, Zeroizing::new(body.into_bytes()));
        let e = s.lookup(&PropertyPath::parse("deep").unwrap()).unwrap_err();
        assert_eq!(e.reason(), "InvalidSource", "{e}");
        // 127 levels below the path still read.
        let ok = format!(
            r#"{{"properties":{{"deep":{{"value":{}1{}}}}}}}"#,
            r#"{"a":{"value":"#.repeat(127),
            "}}".repeat(127)
        );
        let s = Snapshot::new(EnvRef::parse("o/p/e").unwrap(), 1, Zeroizing::new(ok.into_bytes()));
        let v = s.lookup(&PropertyPath::parse("deep").unwrap()).unwrap();
        assert_eq!(
            v.expose(),
            format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127)).as_bytes()
        );
    }

    #[test]
    fn leaves_expand_an_object_with_the_names_leading_to_each_value() {
        let s = snap(serde_json::json!({"properties": {
            "app": {"value": {
                "db": {"value": {"host": {"value": "h"}, "port": {"value": 5432}}},
                "tags": {"value": [{"value": "a"}]},
                "k.x y": {"value": "s", "secret": true},
                "empty": {"value": {}}
            }},
            "bad": {"value": {"n": {"value": null}}},
            "unk": {"value": {"u": {"value": {}, "unknown": true}}},
            "s": {"value": "x"}
        }}));
        let leaves = s.leaves(&PropertyPath::parse("app").unwrap()).unwrap();
        let got: Vec<(String, Vec<u8>)> = leaves.iter().map(|(n, v)| (n.join("/"), v.expose().to_vec())).collect();
        assert_eq!(
            got,
            [
                ("db/host".to_string(), b"h".to_vec()),
                ("db/port".to_string(), b"5432".to_vec()),
                ("k.x y".to_string(), b"s".to_vec()),
                ("tags".to_string(), br#"["a"]"#.to_vec()),
            ]
        );
        let empty = snap(serde_json::json!({}));
        assert_eq!(
            empty.lookup(&PropertyPath::parse("a").unwrap()).unwrap_err().reason(),
            "SourceNotFound"
        );
        let e = s.leaves(&PropertyPath::parse("bad").unwrap()).unwrap_err();
        assert!(
            e.to_string().contains(r#"bad["n"] in ESC environment o/p/e is null"#),
            "{e}"
        );
        assert!(
            s.leaves(&PropertyPath::parse("unk").unwrap())
                .unwrap_err()
                .to_string()
                .contains("no known value")
        );
        assert!(
            s.leaves(&PropertyPath::parse("s").unwrap())
                .unwrap_err()
                .to_string()
                .contains("not an object")
        );
        assert_eq!(
            s.leaves(&PropertyPath::parse("nope").unwrap()).unwrap_err().reason(),
            "SourceNotFound"
        );
    }

    /// Field report C1: numbers arrive as ESC's JSON text has them, at the top and inside objects and lists.
    #[test]
    fn numbers_keep_their_json_text() {
        let body = r#"{"properties": {
            "price": {"value": 1.50},
            "big": {"value": 123456789012345678901234567890},
            "exp": {"value": 1e-7},
            "neg": {"value": -0.0},
            "s": {"value": "1.50 \u00e9 \"q\""},
            "obj": {"value": {"b": {"value": 2.10}, "a": {"value": [{"value": 9007199254740993}, {"value": "x"}]},
                              "k\"y": {"value": null}}}
        }}"#;
        let s = Snapshot::new(
            EnvRef::parse("o/p/e").unwrap(),
            1,
            Zeroizing::new(body.as_bytes().to_vec()),
        );
        let get =
            |p: &str| String::from_utf8(s.lookup(&PropertyPath::parse(p).unwrap()).unwrap().expose().to_vec()).unwrap();
        assert_eq!(get("price"), "1.50");
        assert_eq!(get("big"), "123456789012345678901234567890");
        assert_eq!(get("exp"), "1e-7");
        assert_eq!(get("neg"), "-0.0");
        assert_eq!(get("s"), "1.50 é \"q\"");
        assert_eq!(get("obj"), r#"{"a":[9007199254740993,"x"],"b":2.10,"k\"y":null}"#);
        assert_eq!(get("obj.a[0]"), "9007199254740993");
    }
}
