//! The reader of ESC's open answer: `Snapshot::lookup(path)` over any body. Input: `path \0 body`. Never a
//! panic; and where a plain JSON reading of the body (serde_json's Value, walked the same way) finds a known
//! string at the path, the lookup returns exactly its bytes.
#![no_main]

use keyward::esc::path::{PropertyPath, Segment};
use keyward::esc::{EnvRef, Snapshot};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use zeroize::Zeroizing;

/// The string at `path` as a plain reading sees it, when it is a known string.
fn reference(body: &[u8], path: &PropertyPath) -> Option<String> {
    let root: Json = serde_json::from_slice(body).ok()?;
    let mut node = root.as_object()?.get("properties")?;
    for (n, seg) in path.0.iter().enumerate() {
        let container = if n == 0 { node } else { node.as_object()?.get("value")? };
        node = match seg {
            Segment::Key(k) => container.as_object()?.get(k.as_str())?,
            Segment::Index(i) => container.as_array()?.get(*i)?,
        };
    }
    let wrapped = node.as_object()?;
    if wrapped.get("unknown") == Some(&Json::Bool(true)) {
        return None;
    }
    wrapped.get("value")?.as_str().map(str::to_owned)
}

fuzz_target!(|data: &[u8]| {
    let parts = keyward_fuzz::parts(data, 2);
    let (path, body) = (parts[0], parts[1]);
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let Ok(path) = PropertyPath::parse(path).or_else(|_| PropertyPath::parse_pulumi(path)) else {
        return;
    };
    let Ok(env) = EnvRef::parse("acme/app/prod") else {
        return;
    };
    let snapshot = Snapshot::new(env, 7, Zeroizing::new(body.to_vec()));
    let got = snapshot.lookup(&path);
    if let Err(e) = &got {
        let _ = (e.to_string(), e.reason());
    }
    if let Some(want) = reference(body, &path) {
        match got {
            Ok(bytes) => assert_eq!(bytes.expose(), want.as_bytes(), "{path}"),
            Err(e) => panic!("{path}: a plain reading finds a string, the lookup says {e}"),
        }
    }
});
