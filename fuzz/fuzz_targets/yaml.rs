//! The position-keeping YAML parser under the definition editor and the secret map: never a panic, and
//! every position it reports lies in the text on a character boundary, as the text edits that slice by them
//! need. `render_string` output reads back as its string.
#![no_main]

use keyward::yaml::{self, Kind, Node, Pos};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fn check_pos(text: &str, p: Pos, what: &str) {
    assert!(
        p.byte <= text.len() && text.is_char_boundary(p.byte),
        "{what} at byte {} of {}",
        p.byte,
        text.len()
    );
    assert!(p.line >= 1 && p.column >= 1, "{what}: {p:?}");
}

fn check(text: &str, node: &Node) {
    check_pos(text, node.range.begin, "node begin");
    check_pos(text, node.range.end, "node end");
    assert!(node.range.begin.byte <= node.range.end.byte, "{:?}", node.range);
    if let Some(tag) = node.tag_begin {
        check_pos(text, tag, "tag");
        assert!(tag.byte <= node.range.begin.byte, "tag after its node: {tag:?} {:?}", node.range);
    }
    match &node.kind {
        Kind::Scalar { .. } => {}
        Kind::Seq(items) => items.iter().for_each(|n| check(text, n)),
        Kind::Map(entries) => entries.iter().for_each(|(k, v)| {
            check(text, k);
            check(text, v);
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match yaml::parse(text) {
        Ok(Some(root)) => {
            check(text, &root);
            let _ = root.to_json();
        }
        Ok(None) => {}
        Err(e) => check_pos(text, e.pos, "error"),
    }
    let rendered = yaml::render_string(text);
    let doc = format!("k: {rendered}\nf: {{k: {rendered}}}\n");
    let Ok(Some(root)) = yaml::parse(&doc) else {
        panic!("render_string({text:?}) = {rendered:?} does not parse");
    };
    let want = Json::String(text.to_owned());
    assert_eq!(root.get("k").map(Node::to_json).as_ref(), Some(&want), "{doc:?}");
    let flow = root.get("f").and_then(|f| f.get("k")).map(Node::to_json);
    assert_eq!(flow.as_ref(), Some(&want), "{doc:?}");
});
