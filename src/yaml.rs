//! A YAML document as a tree of nodes that remember where they came from (byte offsets, lines, columns).
//! Positions serve the text-level rewrites of a definition, which must leave every other byte untouched (the
//! operator's write of one value during rotation; the dev ESC server's `fn::secret` encryption), and the dev
//! server's `trace.def` ranges in evaluated values, as real ESC reports them.

use std::collections::HashMap;

use granit_parser::{Event, Marker, Parser, ScalarStyle, Span, StructureStyle};
use serde_json::{Number, Value as Json};

/// A position in a definition, as the ESC API's `Pos` schema: 1-based line and column, 0-based byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    pub byte: usize,
}

impl Pos {
    pub fn to_json(self) -> Json {
        serde_json::json!({"line": self.line, "column": self.column, "byte": self.byte})
    }
}

/// A source range: `begin` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub begin: Pos,
    pub end: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Scalar {
        text: String,
        /// Plain scalars are resolved to null/bool/number; quoted and block scalars are always strings.
        plain: bool,
        /// The tag written on the node (`!!str`), when it has one.
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub range: Range,
    /// Flow collection (`{..}`, `[..]`) rather than block.
    pub flow: bool,
    /// Where the node's tag begins when it has one (it precedes `range.begin`).
    pub tag_begin: Option<Pos>,
    /// The node carries an anchor (`&name`): aliases elsewhere may share its text.
    pub anchored: bool,
    /// The node is an alias (`*name`): a copy of the anchored node, whose range it keeps.
    pub alias: bool,
}

impl Node {
    /// The scalar text when this node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of the first entry whose key is the scalar `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The node as plain JSON, resolving plain scalars by the YAML 1.2 core schema.
    pub fn to_json(&self) -> Json {
        match &self.kind {
            Kind::Scalar { text, plain, tag } => scalar_to_json(text, *plain, tag.as_deref()),
            Kind::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Json::Object(entries.iter().map(|(k, v)| (k.key_string(), v.to_json())).collect()),
        }
    }

    /// The node used as a mapping key: its scalar text, or its JSON for a complex key (`parse` refuses those;
    /// only a hand-built node can have one).
    pub fn key_string(&self) -> String {
        match &self.kind {
            Kind::Scalar { text, .. } => text.clone(),
            _ => self.to_json().to_string(),
        }
    }
}

/// A YAML syntax error with where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Pos,
}

/// Resolves a scalar the way YAML 1.2's core schema does (which is what ESC's Go YAML library does).
pub fn scalar_to_json(text: &str, plain: bool, tag: Option<&str>) -> Json {
    if let Some(tag) = tag {
        // An explicit `!!str` keeps the text; other tags fall through to the usual resolution.
        if tag.ends_with(":str") || tag == "!!str" {
            return Json::String(text.to_owned());
        }
    }
    if !plain {
        return Json::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Json::Null,
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Json::Number(n);
    }
    if is_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Json::Number(n);
    }
    // .inf and .nan have no JSON form; they stay strings.
    Json::String(text.to_owned())
}

fn parse_int(text: &str) -> Option<Number> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if radix != 10 && neg {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let v = i64::try_from(magnitude).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(magnitude))
    }
}

fn is_float(text: &str) -> bool {
    // [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            int.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
        None => true,
    };
    mantissa_ok && exponent_ok
}

fn pos(text: &str, m: &Marker) -> Pos {
    // Byte offsets are always present for string input; the fallback only guards against a parser change.
    let byte = m
        .byte_offset()
        .unwrap_or_else(|| text.char_indices().nth(m.index()).map_or(text.len(), |(b, _)| b));
    Pos {
        line: m.line(),
        column: m.col() + 1,
        byte,
    }
}

/// The position of a byte offset, for the few positions the parser does not report.
fn pos_at(text: &str, byte: usize) -> Pos {
    let before = &text[..byte.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        byte,
    }
}

/// The range of a block scalar (`|` or `>`): the parser reports only its content, from the first content
/// line up to where the next token starts. The node's text starts at its indicator and ends at its last
/// non-blank character, so that a rewrite keeps the line breaks and indentation that follow.
///
/// The indicator is the last `|` or `>` between the end of the previous node (the key, or the sequence's `-`)
/// and the content that starts a token (at the start of the text or after white space) outside a comment.
/// Only the header's own indicators and comments follow it; before it, an anchor or tag may hold `|` and `>`
/// inside its name (`&>`, `!<tag:x>`), and a directive before `---` may hold one as a token of its own.
fn block_scalar_range(text: &str, prev_end: usize, content: Range) -> Range {
    let bytes = text.as_bytes();
    let stop = content.begin.byte.min(bytes.len());
    let mut in_comment = false;
    let mut indicator = None;
    for i in prev_end.min(stop)..stop {
        let token_start = i == 0 || bytes[i - 1].is_ascii_whitespace();
        match bytes[i] {
            b'\n' | b'\r' => in_comment = false,
            b'#' if token_start => in_comment = true,
            b'|' | b'>' if token_start && !in_comment => indicator = Some(i),
            _ => {}
        }
    }
    let Some(begin) = indicator else { return content };
    let mut end = content.end.byte.min(text.len());
    while end > begin + 1 && bytes[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    Range {
        begin: pos_at(text, begin),
        end: pos_at(text, end),
    }
}

/// The byte just after the `:` that follows byte `at`, the end of a mapping key, across white space, line
/// breaks and comments, if one does and it is that entry's value indicator. The parser places an empty
/// mapping value at the end of its key or at the next token, so this is where the value's text (none) really
/// is: after `key:`, or after the `:` on a line below an explicit `? key`. In a block mapping (`block_column` is the 1-based column its
/// entries start at) a `:` on a later line belongs to this entry only at that column (YAML 1.2 §8.2.2: the
/// explicit value's `:` is indented like the `?`); one less indented ends the mapping. In a flow mapping
/// (`None`) no other `:` can come first. None for an explicit key without a value, a flow entry without one
/// (`{a}`), or a sequence entry.
pub fn value_indicator_after(text: &str, at: usize, block_column: Option<usize>) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = at;
    let mut next_line = false;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\n' | b'\r' => {
                next_line = true;
                i += 1;
            }
            b' ' | b'\t' => i += 1,
            b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                while bytes.get(i).is_some_and(|c| !matches!(c, b'\n' | b'\r')) {
                    i += 1;
                }
            }
            b':' => {
                let ours = match block_column {
                    Some(column) if next_line => pos_at(text, i).column == column,
                    _ => true,
                };
                return ours.then_some(i + 1);
            }
            _ => return None,
        }
    }
    None
}

fn range(text: &str, span: &Span) -> Range {
    Range {
        begin: pos(text, &span.start),
        end: pos(text, &span.end),
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        begin: Range,
        flow: bool,
        anchor: usize,
        tag_begin: Option<Pos>,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        begin: Range,
        flow: bool,
        anchor: usize,
        tag_begin: Option<Pos>,
    },
}

/// How much of a tree a node is, for bounding what aliases copy.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    /// Nodes plus scalar bytes: roughly the memory the subtree holds.
    cost: usize,
    /// Levels, the node's own included.
    height: usize,
}

impl Size {
    fn add_child(&mut self, child: Size) {
        self.cost = self.cost.saturating_add(child.cost);
        self.height = self.height.max(child.height);
    }
}

/// An open collection's children so far.
#[derive(Debug, Clone, Copy, Default)]
struct Children {
    size: Size,
    /// Where the last child's text ends: a block collection ends there. For an alias that is its own `*name`,
    /// not the end of the anchored node whose range the copy keeps (which may lie before the collection).
    last_end: Option<Pos>,
}

/// Anchors and aliases may copy this much (in `Size::cost`), or twice the text's length if that is more. An
/// alias is a full copy of its anchor's subtree (and the anchor is kept as one), so without a bound a few
/// hundred bytes of nested aliases ("billion laughs") expand to gigabytes.
const COPY_BUDGET: usize = 64 * 1024;
/// The deepest tree aliases may build. The parser limits nesting in the text (255 flow and 255 block levels),
/// but an alias inside a deep collection that copies another deep one is deeper than either, and the tree is
/// walked (and dropped) recursively.
const MAX_DEPTH: usize = 512;

/// What the parser has copied for anchors and aliases, against its budget.
struct Copies {
    budget: usize,
    spent: usize,
}

impl Copies {
    fn spend(&mut self, size: Size, at: Pos) -> Result<(), SyntaxError> {
        self.spent = self.spent.saturating_add(size.cost);
        if self.spent > self.budget {
            return Err(SyntaxError {
                message: "the anchors (&) and aliases (*) in this document expand it far past its text".into(),
                pos: at,
            });
        }
        Ok(())
    }
}

/// Parses a single-document YAML text. `Ok(None)` for a document without content (empty or comments only).
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    // Beside `stack`: what each open collection's children add up to so far.
    let mut open: Vec<Children> = Vec::new();
    let mut anchors: HashMap<usize, (Node, Size)> = HashMap::new();
    let mut copies = Copies {
        budget: COPY_BUDGET.max(text.len().saturating_mul(2)),
        spent: 0,
    };
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    // The end of the last node event, where a block scalar's indicator search starts.
    let mut prev_end = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            message: e.info(),
            pos: pos(text, e.marker()),
        })?;
        let here = range(text, &span);
        let tag_begin = span.tag_start.as_ref().map(|m| pos(text, m));
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::SequenceEnd
                | Event::MappingEnd
        );
        let done = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        message: "an environment definition must be a single YAML document".into(),
                        pos: here.begin,
                    });
                }
                None
            }
            Event::Scalar(value, style, anchor, tag) => {
                let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                let here = if block {
                    block_scalar_range(text, prev_end, here)
                } else {
                    here
                };
                let size = Size {
                    cost: 1 + value.len(),
                    height: 1,
                };
                let node = Node {
                    kind: Kind::Scalar {
                        text: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag: tag.map(|t| t.to_string()),
                    },
                    range: here,
                    flow: false,
                    tag_begin,
                    anchored: anchor != 0,
                    alias: false,
                };
                if anchor != 0 {
                    copies.spend(size, here.begin)?;
                    anchors.insert(anchor, (node.clone(), size));
                }
                // An empty value has no text: the parser puts it at the end of its key or at the next token.
                // Its entry's text runs to its `:` (see `definition::node_replacement`), and so does the
                // text of a collection it ends.
                let key_end = match stack.last() {
                    Some(Frame::Map {
                        key: Some(key),
                        flow,
                        begin,
                        ..
                    }) if !key.alias => Some((key.range.end.byte, (!*flow).then_some(begin.begin.column))),
                    _ => None,
                };
                // A tag or an anchor is the written part of an otherwise empty value, which the parser puts
                // after it: such a value ends no earlier than that.
                let bare = here.begin.byte == here.end.byte && tag_begin.is_none() && anchor == 0;
                let written_end = match key_end {
                    Some((key_end, block_column)) if bare => value_indicator_after(text, key_end, block_column)
                        .filter(|&after| after > node.range.end.byte)
                        .map_or(node.range.end, |after| pos_at(text, after)),
                    _ => node.range.end,
                };
                Some((node, size, written_end))
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(SyntaxError {
                        message: "unknown anchor".into(),
                        pos: here.begin,
                    });
                };
                copies.spend(*size, here.begin)?;
                if stack.len() + size.height > MAX_DEPTH {
                    return Err(SyntaxError {
                        message: format!("the aliases (*) in this document nest it deeper than {MAX_DEPTH} levels"),
                        pos: here.begin,
                    });
                }
                // The copy keeps its anchor's range; the alias itself is written here.
                Some((
                    Node {
                        alias: true,
                        ..node.clone()
                    },
                    *size,
                    here.end,
                ))
            }
            Event::SequenceStart(style, anchor, _) => {
                open.push(Children::default());
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    begin: here,
                    flow: style == StructureStyle::Flow,
                    anchor,
                    tag_begin,
                });
                None
            }
            Event::MappingStart(style, anchor, _) => {
                open.push(Children::default());
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    begin: here,
                    flow: style == StructureStyle::Flow,
                    anchor,
                    tag_begin,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (Some(frame), Some(children)) = (stack.pop(), open.pop()) else {
                    return Err(SyntaxError {
                        message: "unbalanced collection".into(),
                        pos: here.begin,
                    });
                };
                let size = Size {
                    cost: children.size.cost.saturating_add(1),
                    height: children.size.height + 1,
                };
                let (kind, begin, flow, anchor, tag_begin) = match frame {
                    Frame::Seq {
                        items,
                        begin,
                        flow,
                        anchor,
                        tag_begin,
                    } => (Kind::Seq(items), begin, flow, anchor, tag_begin),
                    Frame::Map {
                        entries,
                        begin,
                        flow,
                        anchor,
                        tag_begin,
                        ..
                    } => (Kind::Map(entries), begin, flow, anchor, tag_begin),
                };
                // A block collection's end event sits wherever the next token starts (past comments and
                // blank lines); its last child's end is where its text really stops.
                let end = if flow {
                    here.end
                } else {
                    children.last_end.unwrap_or(here.end)
                };
                let node = Node {
                    kind,
                    range: Range {
                        begin: begin.begin,
                        end,
                    },
                    flow,
                    tag_begin,
                    anchored: anchor != 0,
                    alias: false,
                };
                if anchor != 0 {
                    copies.spend(size, here.begin)?;
                    anchors.insert(anchor, (node.clone(), size));
                }
                Some((node, size, end))
            }
            _ => None,
        };
        if is_node {
            prev_end = here.end.byte;
        }
        let Some((node, size, written_end)) = done else {
            continue;
        };
        if let Some(parent) = open.last_mut() {
            parent.size.add_child(size);
            parent.last_end = Some(written_end);
        }
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                // ESC's keys are strings, and so are the secret map's. A complex key (`? [a, b]`) becomes
                // the JSON text of the key, and each level of complex keys nested in complex keys escapes the
                // one inside it again, doubling its length: 30 levels of `? ` ran out of memory.
                None if !matches!(node.kind, Kind::Scalar { .. }) => {
                    return Err(SyntaxError {
                        message: format!("a mapping key must be a single value, not {}", describe(&node.kind)),
                        pos: node.range.begin,
                    });
                }
                None => *key = Some(node),
            },
            None => root = Some(node),
        }
    }
    Ok(root)
}

fn describe(kind: &Kind) -> &'static str {
    match kind {
        Kind::Scalar { .. } => "a single value",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// Renders a string as a YAML scalar that reads back as exactly that string: plain when that is safe in
/// both block and flow context, else double-quoted.
pub fn render_string(s: &str) -> String {
    let safe = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '+' | '=' | '@' | '-'))
        && scalar_to_json(s, true, None) == Json::String(s.to_owned());
    if safe { s.to_owned() } else { double_quoted(s) }
}

/// A YAML double-quoted scalar that reads back as exactly `s`, on one line: escapes for `"`, `\`, line breaks
/// and every character YAML does not allow raw (control characters, C1, U+FFFE/F) or that some parsers treat
/// as a line break or byte-order mark (U+2028, U+2029, U+FEFF).
pub fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            '\u{2028}' | '\u{2029}' | '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}' => out.push(c),
            _ => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice<'a>(text: &'a str, n: &Node) -> &'a str {
        &text[n.range.begin.byte..n.range.end.byte]
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        let doc = parse("a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: '1'\ng: 0x1f\nh: hello\ni: .inf\nj: 1e3\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "1", "g": 31,
                "h": "hello", "i": ".inf", "j": 1000.0})
        );
    }

    #[test]
    fn ranges_cover_the_node_text() {
        let text = "values:\n  a: plain # note\n  b: \"quoted\"\n  c: |\n    line1\n    line2\n\n  d: {x: 1}\n  e:\n    - 1\n    - 2\n# trailing\n";
        let doc = parse(text).unwrap().unwrap();
        let values = doc.get("values").unwrap();
        assert_eq!(slice(text, values.get("a").unwrap()), "plain");
        assert_eq!(slice(text, values.get("b").unwrap()), "\"quoted\"");
        assert_eq!(slice(text, values.get("c").unwrap()), "|\n    line1\n    line2");
        assert_eq!(slice(text, values.get("d").unwrap()), "{x: 1}");
        assert_eq!(slice(text, values.get("e").unwrap()), "- 1\n    - 2");
        let text2 = "- >- # a > comment\n  folded\n- |\n\n  x\n\n\n- k: !!str |+\n    kept\n";
        let doc2 = parse(text2).unwrap().unwrap();
        let Kind::Seq(items) = &doc2.kind else { panic!() };
        assert_eq!(slice(text2, &items[0]), ">- # a > comment\n  folded");
        assert_eq!(slice(text2, &items[1]), "|\n\n  x");
        assert_eq!(slice(text2, items[2].get("k").unwrap()), "|+\n    kept");
        assert_eq!(items[2].get("k").unwrap().to_json(), Json::String("kept\n".into()));
        let a = values.get("a").unwrap();
        assert_eq!(
            a.range.begin,
            Pos {
                line: 2,
                column: 6,
                byte: 13
            }
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = parse("a: &x {k: v}\nb: *x\n").unwrap().unwrap();
        assert_eq!(doc.to_json(), serde_json::json!({"a": {"k": "v"}, "b": {"k": "v"}}));
    }

    /// Found writing the yaml fuzz target (`fuzz/`) and confirmed with its binary: an alias was a full copy of
    /// its anchor's subtree, with no bound. These 511 bytes of nested aliases ran out of memory (libFuzzer:
    /// out-of-memory, over 2 GB in 4 s), and aliases inside deep collections that copy deep collections built
    /// a tree 60,000 levels deep from 120 KB, which overflowed the stack when walked (SIGSEGV).
    #[test]
    fn aliases_cannot_blow_a_document_up() {
        let mut laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs += &format!("a{i}: &a{i} [{refs}]\n");
        }
        assert_eq!(laughs.len(), 511);
        let e = parse(&laughs).unwrap_err();
        assert!(e.message.contains("expand it far past its text"), "{e:?}");
        assert_eq!(e.pos.line, 5, "{e:?}");

        let mut deep = String::new();
        for i in 0..300 {
            let inner = if i == 0 {
                "x".to_string()
            } else {
                format!("*d{}", i - 1)
            };
            deep += &format!("d{i}: &d{i} {}{inner}{}\n", "[".repeat(200), "]".repeat(200));
        }
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("deeper than 512 levels"), "{e:?}");
        assert_eq!(e.pos.line, 3, "{e:?}");

        // Anchors and aliases as people use them still read, and so does one big anchored subtree.
        let doc = parse("a: &x {k: v}\nb: *x\nc: [*x, *x]\n").unwrap().unwrap();
        assert_eq!(
            doc.get("c").unwrap().to_json(),
            serde_json::json!([{"k": "v"}, {"k": "v"}])
        );
        let big = format!("a: &x [{}]\nb: *x\n", vec!["item"; 20_000].join(", "));
        assert!(parse(&big).unwrap().is_some());
    }

    /// Fuzzing (`fuzz/`, target yaml; minimised input below): a block collection ended where its last child's
    /// range ended, and an alias keeps the range of the node it copies, which lies before the collection, so
    /// the mapping ended before it began.
    #[test]
    fn a_block_collection_ending_in_an_alias_ends_at_the_alias() {
        let text = "- &a\n- : *a";
        let doc = parse(text).unwrap().unwrap();
        let Kind::Seq(items) = &doc.kind else { panic!() };
        assert_eq!(slice(text, &items[1]), ": *a");
        assert_eq!(slice(text, &doc), "- &a\n- : *a");
        let text = "k: &v x\nm:\n  a: 1\n  b: *v\nn: 2\n";
        let doc = parse(text).unwrap().unwrap();
        assert_eq!(slice(text, doc.get("m").unwrap()), "a: 1\n  b: *v");
    }

    /// Fuzzing (`fuzz/`, target yaml; minimised input `&>\n!\r>`): a block scalar's range began at the first
    /// `|` or `>` after the previous node, which may sit inside an anchor's or a tag's name, so the range began
    /// before the node's own tag. It begins at the last such character that starts a token.
    #[test]
    fn block_scalar_indicators_are_not_read_in_names() {
        let text = "&>\n!\r>";
        let doc = parse(text).unwrap().unwrap();
        assert_eq!(doc.range.begin.byte, 5, "{doc:?}");
        assert!(doc.tag_begin.is_some_and(|t| t.byte <= doc.range.begin.byte), "{doc:?}");
        let text = "a: &x| !<tag:yaml.org,2002:str> |  # a | comment > here\n  body\nb: 1\n";
        let doc = parse(text).unwrap().unwrap();
        assert_eq!(slice(text, doc.get("a").unwrap()), "|  # a | comment > here\n  body");
        let text = "%YAML 1.2\n--- >-\n  folded\n";
        let doc = parse(text).unwrap().unwrap();
        assert_eq!(slice(text, &doc), ">-\n  folded");
    }

    /// Fuzzing (`fuzz/`, target yaml; the input below, which libFuzzer could not shrink): a complex key
    /// became its JSON text, and each complex key nested in another was escaped again, doubling in length per
    /// level, so these 81 bytes ran out of memory in `to_json`. Complex keys are refused.
    #[test]
    fn complex_keys_are_refused() {
        let e = parse("  ? ? ? ?  ?  ? ?  ?  ?  ? ?  ? ? ?  ?  ? ?  ?  ?  ? ?  ? ? ?  ?   ? ?  ?  ? ?  |").unwrap_err();
        assert!(
            e.message
                .contains("a mapping key must be a single value, not a mapping"),
            "{e:?}"
        );
        let e = parse("a: 1\n? [x, y]\n: 2\n").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.pos.line),
            ("a mapping key must be a single value, not a list", 2)
        );
        assert!(parse("{[x]: 1}").is_err());
        // Scalar keys of every style, explicit ones included, still read.
        let doc = parse("? k\n: 1\n'q': 2\n3: 3\n").unwrap().unwrap();
        assert_eq!(doc.to_json(), serde_json::json!({"k": 1, "q": 2, "3": 3}));
    }

    /// Fuzzing (`fuzz/`, target definition; minimised input `values:\n : fn::secret:`): a block mapping whose
    /// last value is empty ended where the parser puts that value, at the end of its key, so the mapping's
    /// range left out its last `:`, and replacing the mapping left a stray `:` behind (which did not parse).
    #[test]
    fn a_block_mapping_ending_in_an_empty_value_ends_after_its_colon() {
        let text = "values:\n : fn::secret:";
        let doc = parse(text).unwrap().unwrap();
        let values = doc.get("values").unwrap();
        assert_eq!(slice(text, values), ": fn::secret:");
        assert_eq!(slice(text, &values.as_map().unwrap()[0].1), "fn::secret:");
        let text = "a:\n  b: 1\n  c:   \nd: 2\n";
        let doc = parse(text).unwrap().unwrap();
        assert_eq!(slice(text, doc.get("a").unwrap()), "b: 1\n  c:");
        // After an explicit key the `:` is on the next line.
        let text = "m:\n  ? k\n  :   # c\nn: 1\n";
        assert_eq!(slice(text, parse(text).unwrap().unwrap().get("m").unwrap()), "? k\n  :");
        // An empty last item of a sequence stays where its `-` ends.
        let text = "- a\n-\n";
        assert_eq!(slice(text, &parse(text).unwrap().unwrap()), "- a\n-");
    }

    #[test]
    fn render_string_round_trips() {
        for s in [
            "hunter2",
            "true",
            "123",
            "a b",
            "",
            "x: y",
            "line1\nline2",
            "-dash",
            "q\"uote",
            "ünï",
            "a,b",
            "{x}",
        ] {
            let text = format!("k: {}\nf: {{k: {}}}\n", render_string(s), render_string(s));
            let doc = parse(&text).unwrap().unwrap();
            assert_eq!(doc.get("k").unwrap().to_json(), Json::String(s.into()), "{text}");
            assert_eq!(
                doc.get("f").unwrap().get("k").unwrap().to_json(),
                Json::String(s.into())
            );
        }
        assert_eq!(render_string("hunter2"), "hunter2");
        assert_eq!(render_string("true"), "\"true\"");
    }

    /// Fuzzing (`fuzz/`, target yaml): the quoted form was JSON's, which leaves DEL and the C1 controls raw,
    /// and YAML refuses them in a document; every character YAML does not print now goes as an escape.
    #[test]
    fn render_string_escapes_what_yaml_does_not_allow_raw() {
        for s in [
            "\u{7f}",
            "a\u{7f}b",
            "\u{80}\u{85}\u{9f}",
            "\u{2028}\u{feff}",
            "\u{fffe}\u{ffff}",
        ] {
            let text = format!("k: {}\n", render_string(s));
            let doc = parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e:?}")).unwrap();
            assert_eq!(doc.get("k").unwrap().to_json(), Json::String(s.into()), "{text:?}");
        }
    }
}
