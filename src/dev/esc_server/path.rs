//! Property paths in Pulumi's path syntax, as `?property=` and `${...}` interpolations use them:
//! `a.b`, `a[0]`, `a["k.x"]`, `["a"].b`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accessor {
    Key(String),
    Index(usize),
}

/// A parsed property path (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PropertyPath(pub Vec<Accessor>);

impl fmt::Display for PropertyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            match a {
                Accessor::Index(n) => write!(f, "[{n}]")?,
                Accessor::Key(k) if is_simple_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Accessor::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

fn is_simple_key(k: &str) -> bool {
    !k.is_empty() && !k.contains(['.', '[', ']', '"', '{', '}', '$'])
}

/// Parses a property path; the error says what is wrong and where.
pub(crate) fn parse_path(text: &str) -> Result<PropertyPath, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, what: &str| format!("invalid property path {text:?} at offset {i}: {what}");
    if chars.is_empty() {
        return Err(err(0, "empty path"));
    }
    // After a `.`, a key must follow; at the start, either a key or a `[`.
    let mut need_key = true;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'"') {
                    i += 1;
                    let mut key = String::new();
                    loop {
                        match chars.get(i) {
                            None => return Err(err(i, "unterminated string")),
                            Some('\\') => {
                                match chars.get(i + 1) {
                                    Some(c) => key.push(*c),
                                    None => return Err(err(i, "unterminated escape")),
                                }
                                i += 2;
                            }
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some(c) => {
                                key.push(*c);
                                i += 1;
                            }
                        }
                    }
                    out.push(Accessor::Key(key));
                } else {
                    let start = i;
                    while chars.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                    let digits: String = chars[start..i].iter().collect();
                    let n = digits
                        .parse::<usize>()
                        .map_err(|_| err(start, "expected an index or a quoted key"))?;
                    out.push(Accessor::Index(n));
                }
                if chars.get(i) != Some(&']') {
                    return Err(err(i, "expected ']'"));
                }
                i += 1;
                need_key = false;
            }
            '.' if !need_key => {
                i += 1;
                need_key = true;
                if i == chars.len() {
                    return Err(err(i, "a path cannot end with '.'"));
                }
            }
            ']' | '.' => return Err(err(i, "expected a property name")),
            _ => {
                if !need_key {
                    return Err(err(i, "expected '.' or '['"));
                }
                let start = i;
                while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
                    i += 1;
                }
                out.push(Accessor::Key(chars[start..i].iter().collect()));
                need_key = false;
            }
        }
    }
    Ok(PropertyPath(out))
}

#[cfg(test)]
mod tests {
    use super::Accessor::{Index, Key};
    use super::*;

    fn p(s: &str) -> Vec<Accessor> {
        parse_path(s).unwrap().0
    }

    #[test]
    fn parses_the_pulumi_path_syntax() {
        assert_eq!(p("a"), vec![Key("a".into())]);
        assert_eq!(p("a.b"), vec![Key("a".into()), Key("b".into())]);
        assert_eq!(p("a[0]"), vec![Key("a".into()), Index(0)]);
        assert_eq!(
            p("a.b[12].c"),
            vec![Key("a".into()), Key("b".into()), Index(12), Key("c".into())]
        );
        assert_eq!(p(r#"a["k.x"]"#), vec![Key("a".into()), Key("k.x".into())]);
        assert_eq!(p(r#"["a"].b"#), vec![Key("a".into()), Key("b".into())]);
        assert_eq!(p(r#"a["q\"uote"]"#), vec![Key("a".into()), Key("q\"uote".into())]);
        assert_eq!(p("sophia.ai.openai_api_key").len(), 3);
        assert_eq!(p("my-key_1"), vec![Key("my-key_1".into())]);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "", ".a", "a.", "a..b", "a[", "a[x]", "a[0", r#"a["x"#, "a]", "a[0]b", "[0",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_back() {
        for s in ["a", "a.b", "a[0].b", r#"a["k.x"]"#, r#"["a.b"].c"#] {
            assert_eq!(parse_path(s).unwrap().to_string(), s);
        }
    }
}
