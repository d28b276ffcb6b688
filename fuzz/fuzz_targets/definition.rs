//! The definition editor, `set_secret(definition, path, value)`. Input: `definition \0 path \0 value`. It is
//! tried at the given path (when it parses) and at up to 16 paths found in the definition itself, so that the
//! fuzzer need not guess paths that exist. Never a panic, never an `Internal` error (those are the editor's
//! own bugs); when it writes, the result parses, the path holds `fn::secret: <value>` as ESC reads it, and
//! writing the same value again changes nothing.
#![no_main]

use keyward::esc::definition::{EditError, escape_interpolation, set_secret};
use keyward::esc::path::{PropertyPath, Segment};
use keyward::yaml::{self, Kind, Node};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

/// Paths under `values` in `root`, breadth first, at most `max`.
fn paths_in(root: &Node, max: usize) -> Vec<PropertyPath> {
    let Some(values) = root.get("values") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut queue = vec![(Vec::new(), values)];
    while let Some((prefix, node)) = (!queue.is_empty()).then(|| queue.remove(0)) {
        let children: Vec<(Segment, &Node)> = match &node.kind {
            Kind::Scalar { .. } => Vec::new(),
            Kind::Seq(items) => items.iter().enumerate().map(|(i, n)| (Segment::Index(i), n)).collect(),
            Kind::Map(entries) => entries.iter().map(|(k, v)| (Segment::Key(k.key_string()), v)).collect(),
        };
        for (seg, child) in children {
            let mut path = prefix.clone();
            path.push(seg);
            out.push(PropertyPath(path.clone()));
            if out.len() >= max {
                return out;
            }
            queue.push((path, child));
        }
    }
    out
}

fn json_at<'a>(root: &'a Json, path: &PropertyPath) -> Option<&'a Json> {
    let mut node = root.get("values")?;
    for seg in &path.0 {
        node = match seg {
            Segment::Key(k) => node.get(k.as_str())?,
            Segment::Index(i) => node.get(*i)?,
        };
    }
    Some(node)
}

fn try_path(definition: &str, path: &PropertyPath, value: &str) {
    match set_secret(definition, path, value) {
        Ok(out) => {
            let root = match yaml::parse(&out) {
                Ok(Some(root)) => root,
                other => panic!("the edit of {path} does not parse: {other:?}\n{out}"),
            };
            let want = serde_json::json!({"fn::secret": escape_interpolation(value)});
            assert_eq!(json_at(&root.to_json(), path), Some(&want), "{path}\n{out}");
            let again = set_secret(&out, path, value);
            assert_eq!(again.as_ref(), Ok(&out), "writing {path} again changed the text\n{out}");
        }
        Err(EditError::Internal(why)) => panic!("internal error at {path}: {why}\n{definition}"),
        Err(e) => {
            let _ = (e.to_string(), e.category());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(t) = keyward_fuzz::texts(data, 3) else {
        return;
    };
    let (definition, path, value) = (t[0], t[1], t[2]);
    if let Ok(path) = PropertyPath::parse(path) {
        try_path(definition, &path, value);
    }
    if let Ok(Some(root)) = yaml::parse(definition) {
        for path in paths_in(&root, 16) {
            try_path(definition, &path, value);
        }
    }
});
