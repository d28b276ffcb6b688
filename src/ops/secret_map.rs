//! The team's `config/pulumi/secret_map.yaml`: one `SECRET_NAME: esc.property.path` per line. Read with the
//! crate's position-keeping YAML parser, so that every problem names its line: comments, blank lines and quoted
//! values are YAML's; duplicate names, values that are not strings and keys that cannot be Secret data keys are
//! ours to refuse.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::error::Problem;
use crate::yaml::{self, Kind, Node};

/// One line of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The secret's name as written, e.g. `OPENAI_API_KEY`.
    pub name: String,
    /// The ESC path as written, e.g. `values.sophia.ai.openai_api_key`.
    pub path: String,
    /// 1-based line of the name.
    pub line: usize,
}

/// Parses the map: the entries that are well formed, and every problem found, each with its line, so that one
/// run shows them all. A YAML syntax error stops the reading at its line.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<Problem>) {
    let problem = |line: Option<usize>, secret: Option<&str>, message: String| Problem {
        line,
        secret: secret.map(str::to_string),
        message,
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return (
                vec![],
                vec![problem(None, None, "no secrets: the file is empty".into())],
            );
        }
        Err(e) => {
            // The parser's own wording speaks of ESC definitions, whose parser it is.
            let message = if e.message.contains("single YAML document") {
                "the secret map must be a single YAML document".to_string()
            } else {
                format!(
                    "not valid YAML: {} (each line must be SECRET_NAME: esc.path)",
                    e.message
                )
            };
            return (vec![], vec![problem(Some(e.pos.line), None, message)]);
        }
    };
    let Some(items) = root.as_map() else {
        return (
            vec![],
            vec![problem(
                Some(root.range.begin.line),
                None,
                format!("expected lines of SECRET_NAME: esc.path, found {}", describe(&root)),
            )],
        );
    };
    if items.is_empty() {
        return (
            vec![],
            vec![problem(None, None, "no secrets: the mapping is empty".into())],
        );
    }

    let mut entries = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in items {
        let line = key.range.begin.line;
        let name = match scalar_string(key) {
            Some(name) => name,
            None => {
                problems.push(problem(
                    Some(line),
                    None,
                    format!("a secret name must be a plain string, found {}", describe(key)),
                ));
                continue;
            }
        };
        if let Some(why) = bad_name(&name) {
            problems.push(problem(Some(line), Some(&name), why));
            continue;
        }
        if let Some(first) = seen.get(&name) {
            problems.push(problem(
                Some(line),
                Some(&name),
                format!("listed twice (first on line {first})"),
            ));
            continue;
        }
        seen.insert(name.clone(), line);
        match scalar_string(value) {
            Some(path) if !path.trim().is_empty() => entries.push(Entry { name, path, line }),
            Some(_) => problems.push(problem(Some(line), Some(&name), "has an empty ESC path".into())),
            None => problems.push(problem(
                Some(line),
                Some(&name),
                format!("expected an ESC path such as values.app.key, found {}", describe(value)),
            )),
        }
    }
    (entries, problems)
}

/// The text of a scalar that YAML reads as a string (quoted, or plain and not a number, bool or null).
fn scalar_string(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Scalar { text, plain, tag } => match yaml::scalar_to_json(text, *plain, tag.as_deref()) {
            Json::String(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// What a node is, for messages (scalars are quoted: they are names and paths, never secret values).
fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Map(_) => "a mapping".into(),
        Kind::Seq(_) => "a list".into(),
        Kind::Scalar { text, plain, tag } => match yaml::scalar_to_json(text, *plain, tag.as_deref()) {
            Json::Null => "nothing (null)".into(),
            Json::Bool(b) => format!("the boolean {b} (quote it if it is a path)"),
            Json::Number(n) => format!("the number {n} (quote it if it is a path)"),
            _ => format!("{text:?}"),
        },
    }
}

/// Why `name` cannot be a Secret data key (the target key is the secret's name as is), if it cannot.
fn bad_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the secret name is empty".into());
    }
    if name.len() > 253 {
        return Some("the secret name is longer than 253 characters".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Some(
            "a secret name may hold only letters, digits, '-', '_' and '.' (it becomes the Secret's key)".into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines((_, problems): (Vec<Entry>, Vec<Problem>)) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_names_paths_and_lines() {
        let text = "# the team's map\n\nOPENAI_API_KEY: values.sophia.ai.openai_api_key  # trailing comment\n\
                    'QUOTED_KEY': \"values.a.b\"\nPLAIN: a.b[0]\n";
        let (entries, problems) = parse(text);
        assert_eq!(problems, vec![]);
        assert_eq!(
            entries,
            vec![
                Entry {
                    name: "OPENAI_API_KEY".into(),
                    path: "values.sophia.ai.openai_api_key".into(),
                    line: 3
                },
                Entry {
                    name: "QUOTED_KEY".into(),
                    path: "values.a.b".into(),
                    line: 4
                },
                Entry {
                    name: "PLAIN".into(),
                    path: "a.b[0]".into(),
                    line: 5
                },
            ]
        );
    }

    #[test]
    fn reports_every_bad_line() {
        let text =
            "A: values.a\nA: values.b\nB:\nC: [x, y]\nD: {x: 1}\nE: true\n\"F G\": values.f\nH: ''\nI: 42\nJ: j.k\n";
        // The good entries are kept, so that later checks can report on them too.
        let names: Vec<String> = parse(text).0.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["A", "J"]);
        assert_eq!(
            lines(parse(text)),
            vec![
                "line 2: A: listed twice (first on line 1)",
                "line 3: B: expected an ESC path such as values.app.key, found nothing (null)",
                "line 4: C: expected an ESC path such as values.app.key, found a list",
                "line 5: D: expected an ESC path such as values.app.key, found a mapping",
                "line 6: E: expected an ESC path such as values.app.key, found the boolean true (quote it if it is a path)",
                "line 7: F G: a secret name may hold only letters, digits, '-', '_' and '.' (it becomes the Secret's key)",
                "line 8: H: has an empty ESC path",
                "line 9: I: expected an ESC path such as values.app.key, found the number 42 (quote it if it is a path)",
            ]
        );
    }

    #[test]
    fn syntax_errors_and_wrong_shapes_have_lines() {
        let e = lines(parse("A: values.a\nB values.b\nC: values.c\n"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("line 2: not valid YAML") || e[0].starts_with("line 3: not valid YAML"),
            "{e:?}"
        );
        assert_eq!(lines(parse("# nothing\n")), vec!["no secrets: the file is empty"]);
        assert_eq!(
            lines(parse("\n- A\n- B\n")),
            vec!["line 2: expected lines of SECRET_NAME: esc.path, found a list"]
        );
        assert_eq!(
            lines(parse("A: a\n---\nB: b\n")),
            vec!["line 2: the secret map must be a single YAML document"]
        );
        assert_eq!(lines(parse("{}\n")), vec!["no secrets: the mapping is empty"]);
    }
}
