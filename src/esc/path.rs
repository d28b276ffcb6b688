//! ESC property paths, in Pulumi's path syntax: `a.b`, `a.b[0]`, `a["k.x"]`, `["a b"].c`. One parser, two
//! dialects: a ManagedSecret's path (`spec.source.esc.path`) is relative to `values:` (a leading `values.` is
//! accepted and stripped, as the team's secret_map.yaml writes them) and its plain names are letters, digits,
//! `_` and `-` (the CRD's admission rule); Pulumi's own syntax, as `?property=` and `${...}` interpolations take
//! it, lets a plain name hold anything up to `.`, `[` or `]`.

use std::fmt;

/// One step of a property path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed property path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyPath(pub Vec<Segment>);

/// Why a path did not parse. Paths come from the spec, never from secret values, so they may be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid property path {path:?} at byte {at}: {why}")]
pub struct PathError {
    pub path: String,
    pub at: usize,
    pub why: &'static str,
}

/// Which paths a parse accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// A ManagedSecret's path: strict plain names, a leading `values` segment dropped.
    Spec,
    /// Pulumi's syntax, unchanged.
    Pulumi,
}

impl PropertyPath {
    /// Parses a ManagedSecret's path: plain names of letters, digits, `_` and `-` (quote others), a leading
    /// `values` segment dropped.
    pub fn parse(text: &str) -> Result<PropertyPath, PathError> {
        Self::parse_as(text, Dialect::Spec)
    }

    /// Parses a path in Pulumi's syntax, where a plain name is anything up to `.`, `[` or `]`; nothing is
    /// dropped.
    pub fn parse_pulumi(text: &str) -> Result<PropertyPath, PathError> {
        Self::parse_as(text, Dialect::Pulumi)
    }

    fn parse_as(text: &str, dialect: Dialect) -> Result<PropertyPath, PathError> {
        let err = |at: usize, why: &'static str| PathError {
            path: text.to_string(),
            at,
            why,
        };
        let bytes = text.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        let mut expect_name = true; // at the start, or after a '.'
        while i < bytes.len() {
            match bytes[i] {
                b'[' => {
                    if expect_name && !segs.is_empty() {
                        return Err(err(i, "expected a name after '.'"));
                    }
                    i += 1;
                    if bytes.get(i) == Some(&b'"') {
                        i += 1;
                        let mut key = String::new();
                        loop {
                            match bytes.get(i) {
                                None => return Err(err(i, "unterminated quoted key")),
                                Some(b'"') => break,
                                Some(b'\\') => {
                                    let Some(c) = text[i + 1..].chars().next() else {
                                        return Err(err(i, "dangling escape"));
                                    };
                                    key.push(c);
                                    i += 1 + c.len_utf8();
                                }
                                Some(_) => {
                                    let Some(c) = text[i..].chars().next() else {
                                        return Err(err(i, "bad character"));
                                    };
                                    key.push(c);
                                    i += c.len_utf8();
                                }
                            }
                        }
                        i += 1;
                        if bytes.get(i) != Some(&b']') {
                            return Err(err(i, "expected ']' after quoted key"));
                        }
                        segs.push(Segment::Key(key));
                    } else {
                        let start = i;
                        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                            i += 1;
                        }
                        if start == i || bytes.get(i) != Some(&b']') {
                            return Err(err(i, "expected an index or a quoted key inside [ ]"));
                        }
                        let n = text[start..i].parse().map_err(|_| err(start, "index too large"))?;
                        segs.push(Segment::Index(n));
                    }
                    i += 1;
                    expect_name = false;
                }
                b'.' if !expect_name => {
                    i += 1;
                    expect_name = true;
                    if i == bytes.len() {
                        return Err(err(i, "path ends with '.'"));
                    }
                }
                _ if expect_name => {
                    let start = i;
                    while i < bytes.len() && !matches!(bytes[i], b'.' | b'[') {
                        let c = bytes[i];
                        match dialect {
                            Dialect::Spec if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-') => {
                                return Err(err(i, "names may hold letters, digits, '_' and '-'; quote others"));
                            }
                            Dialect::Pulumi if c == b']' => return Err(err(i, "']' without '['")),
                            _ => {}
                        }
                        i += 1;
                    }
                    if start == i {
                        return Err(err(i, "empty name"));
                    }
                    segs.push(Segment::Key(text[start..i].to_string()));
                    expect_name = false;
                }
                _ => return Err(err(i, "expected '.' or '['")),
            }
        }
        if segs.is_empty() {
            return Err(err(0, "empty path"));
        }
        if dialect == Dialect::Spec && segs.len() > 1 && segs[0] == Segment::Key("values".into()) {
            segs.remove(0);
        }
        Ok(PropertyPath(segs))
    }
}

impl fmt::Display for PropertyPath {
    /// The canonical form, as ESC's `?property=` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain(k) => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => {
                    f.write_str("[\"")?;
                    for c in k.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"]")?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Segment::*;

    fn p(s: &str) -> Vec<Segment> {
        PropertyPath::parse(s).unwrap().0
    }

    #[test]
    fn parses_the_forms_esc_uses() {
        assert_eq!(
            p("sophia.ai.openai_api_key"),
            [Key("sophia".into()), Key("ai".into()), Key("openai_api_key".into())]
        );
        assert_eq!(p("values.sophia.ai"), [Key("sophia".into()), Key("ai".into())]);
        assert_eq!(
            p("a.b[0][\"k.x\"]"),
            [Key("a".into()), Key("b".into()), Index(0), Key("k.x".into())]
        );
        assert_eq!(p("[\"a b\"].c"), [Key("a b".into()), Key("c".into())]);
        assert_eq!(p("values"), [Key("values".into())]);
        assert_eq!(p(r#"a["q\"uote"]"#), [Key("a".into()), Key("q\"uote".into())]);
    }

    #[test]
    fn refuses_bad_paths_with_a_position() {
        for bad in ["", "a.", ".a", "a..b", "a[", "a[x]", "a[\"x]", "a b", "a]", "a.[0]"] {
            let e = PropertyPath::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid property path"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["a.b", "a[0].c", "a[\"k.x\"]", "x[\"q\\\"\"]"] {
            let parsed = PropertyPath::parse(s).unwrap();
            assert_eq!(PropertyPath::parse(&parsed.to_string()).unwrap(), parsed, "{s}");
        }
        assert_eq!(PropertyPath::parse("values.a.b").unwrap().to_string(), "a.b");
    }

    // Pulumi's own syntax, as the dev ESC server parses `?property=` and interpolations.
    fn pulumi(s: &str) -> Vec<Segment> {
        PropertyPath::parse_pulumi(s).unwrap().0
    }

    #[test]
    fn parses_the_pulumi_path_syntax() {
        assert_eq!(pulumi("a"), [Key("a".into())]);
        assert_eq!(pulumi("a.b"), [Key("a".into()), Key("b".into())]);
        assert_eq!(pulumi("a[0]"), [Key("a".into()), Index(0)]);
        assert_eq!(
            pulumi("a.b[12].c"),
            [Key("a".into()), Key("b".into()), Index(12), Key("c".into())]
        );
        assert_eq!(pulumi(r#"a["k.x"]"#), [Key("a".into()), Key("k.x".into())]);
        assert_eq!(pulumi(r#"["a"].b"#), [Key("a".into()), Key("b".into())]);
        assert_eq!(pulumi(r#"a["q\"uote"]"#), [Key("a".into()), Key("q\"uote".into())]);
        assert_eq!(pulumi("sophia.ai.openai_api_key").len(), 3);
        assert_eq!(pulumi("my-key_1"), [Key("my-key_1".into())]);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "", ".a", "a.", "a..b", "a[", "a[x]", "a[0", r#"a["x"#, "a]", "a[0]b", "[0",
        ] {
            assert!(PropertyPath::parse_pulumi(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_back() {
        for s in ["a", "a.b", "a[0].b", r#"a["k.x"]"#, r#"["a.b"].c"#] {
            assert_eq!(PropertyPath::parse_pulumi(s).unwrap().to_string(), s);
        }
    }
}
