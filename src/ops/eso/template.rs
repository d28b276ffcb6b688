//! External Secrets Operator's templates (Go `text/template` with sprig, engine v2) as keyward's (minijinja),
//! for the forms that mean the same in both: text, `{{ .key }}`, `{{ index . "key" }}`, a string literal,
//! `printf` with `%s` only, and pipes through `b64enc`, `b64dec`, `toJson`, `upper`, `lower`, `trim`,
//! `toString`. Anything else is refused with what it was, so that nothing is translated into something else.
//!
//! ESO's semantics: <https://external-secrets.io/latest/guides/templating/> (every fetched key is a string in
//! the template's `.`; a missing key is an error, as keyward's strict undefined variables are).

/// Translates one ESO template. `Err` says which part has no translation.
pub fn translate(go: &str) -> Result<Translated, String> {
    let mut out = String::new();
    let mut to_json = false;
    let mut rest = go;
    while let Some(start) = rest.find("{{") {
        literal(&rest[..start], &mut out)?;
        let after = &rest[start + 2..];
        let end =
            closing(after).ok_or_else(|| format!("an action that does not end: {:?}", excerpt(&rest[start..])))?;
        let mut action = &after[..end];
        let (mut open, mut close) = ("{{ ", " }}");
        if let Some(a) = action.strip_prefix("- ") {
            action = a;
            open = "{{- ";
        }
        if let Some(a) = action.strip_suffix(" -") {
            action = a;
            close = " -}}";
        }
        let (expr, json) = pipeline(action.trim())?;
        to_json |= json;
        out.push_str(open);
        out.push_str(&expr);
        out.push_str(close);
        rest = &after[end + 2..];
    }
    literal(rest, &mut out)?;
    Ok(Translated { text: out, to_json })
}

/// A translated template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub text: String,
    /// It uses `toJson`, whose output keyward writes with `": "` and `", "` separators (the same JSON, not the
    /// same bytes).
    pub to_json: bool,
}

/// Where the action opened before `text` ends (`}}` outside a string literal).
fn closing(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'}' if !in_string && bytes[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Text between actions: the same in both engines, unless it holds what minijinja would read as a block or a
/// comment.
fn literal(text: &str, out: &mut String) -> Result<(), String> {
    if text.contains("{%") || text.contains("{#") {
        return Err(format!(
            "text that keyward's templates would read as a block or comment: {:?}",
            excerpt(text)
        ));
    }
    out.push_str(text);
    Ok(())
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

/// One action's pipeline: the command, then each piped function.
fn pipeline(action: &str) -> Result<(String, bool), String> {
    let stages = split_outside_strings(action, '|');
    let mut stages = stages.iter().map(|s| s.trim());
    let first = stages.next().unwrap_or_default();
    let mut expr = command(first)?;
    let mut to_json = false;
    for stage in stages {
        let filter = match stage {
            "b64enc" => "b64encode",
            "b64dec" => "b64decode",
            "toJson" => {
                to_json = true;
                "tojson"
            }
            "upper" | "lower" | "trim" => stage,
            "toString" => "string",
            other => return Err(format!("the function {other:?} (in {{{{ {action} }}}})")),
        };
        expr = format!("{expr} | {filter}");
    }
    Ok((expr, to_json))
}

/// The first command of a pipeline.
fn command(cmd: &str) -> Result<String, String> {
    let words = split_outside_strings(cmd, ' ');
    let words: Vec<&str> = words.iter().map(|w| w.trim()).filter(|w| !w.is_empty()).collect();
    match words.as_slice() {
        [one] => operand(one).ok_or_else(|| format!("{{{{ {cmd} }}}}")),
        ["index", ".", key] => string(key)
            .map(|k| format!("values[{}]", quoted(&k)))
            .ok_or_else(|| format!("{{{{ {cmd} }}}}")),
        ["printf", format, args @ ..] => {
            printf(format, args).ok_or_else(|| format!("{{{{ {cmd} }}}} (printf takes only %s here)"))
        }
        _ => Err(format!("{{{{ {cmd} }}}}")),
    }
}

/// `.key` (a fetched key) or a string literal.
fn operand(word: &str) -> Option<String> {
    if let Some(key) = word.strip_prefix('.') {
        let valid = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return valid.then(|| variable(key));
    }
    string(word).map(|s| quoted(&s))
}

/// A key as a minijinja variable: its name when it is an identifier that means nothing else, else `values[...]`.
fn variable(key: &str) -> String {
    const RESERVED: [&str; 12] = [
        "values", "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
    ];
    let identifier = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier && !RESERVED.contains(&key) {
        key.to_string()
    } else {
        format!("values[{}]", quoted(key))
    }
}

/// `printf "a%sb" .x .y` as `("a" ~ x ~ "b" ~ y)`, when every verb is `%s` (or `%%`).
fn printf(format: &str, args: &[&str]) -> Option<String> {
    let format = string(format)?;
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        match chars.next()? {
            '%' => text.push('%'),
            's' => {
                if !text.is_empty() {
                    parts.push(quoted(&std::mem::take(&mut text)));
                }
                parts.push(operand(args.next()?)?);
            }
            _ => return None,
        }
    }
    if args.next().is_some() {
        return None;
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(quoted(&text));
    }
    Some(format!("({})", parts.join(" ~ ")))
}

/// A Go string literal's value (`"..."` with Go's escapes `\"`, `\\`, `\n`, `\t`), or a raw one (`` `...` ``).
fn string(word: &str) -> Option<String> {
    if let Some(raw) = word.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
        return Some(raw.to_string());
    }
    let inner = word.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                '"' => '"',
                '\\' => '\\',
                _ => return None,
            });
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A minijinja string literal.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `text` split at `sep` where it is outside string literals.
fn split_outside_strings(text: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == sep => {
                out.push(String::new());
                continue;
            }
            None => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(go: &str) -> String {
        translate(go).unwrap().text
    }

    #[test]
    fn the_common_forms_translate() {
        assert_eq!(
            t("postgres://{{ .user }}:{{ .password }}@db/app"),
            "postgres://{{ user }}:{{ password }}@db/app"
        );
        assert_eq!(t(r#"{{ index . "tls.crt" }}"#), r#"{{ values["tls.crt"] }}"#);
        assert_eq!(t("{{ .values }}"), r#"{{ values["values"] }}"#);
        assert_eq!(
            t(r#"{"auths":{"{{ .host }}":{"auth":"{{ printf "%s:%s" .user .password | b64enc }}"}}}"#),
            r#"{"auths":{"{{ host }}":{"auth":"{{ (user ~ ":" ~ password) | b64encode }}"}}}"#
        );
        assert_eq!(t("{{- .a | upper -}}"), "{{- a | upper -}}");
        assert!(translate("{{ .cfg | toJson }}").unwrap().to_json);
        assert_eq!(t(r#"{{ "}}" }}x"#), r#"{{ "}}" }}x"#);
    }

    #[test]
    fn what_has_no_translation_is_refused_naming_it() {
        for (go, says) in [
            ("{{ .a | pkcs12key }}", "pkcs12key"),
            ("{{ if .a }}x{{ end }}", "if .a"),
            ("{{ printf \"%d\" .n }}", "printf"),
            ("{{ .a", "does not end"),
            ("{% raw %}", "block or comment"),
            ("{{ range $k, $v := . }}", "range"),
        ] {
            let e = translate(go).unwrap_err();
            assert!(e.contains(says), "{go}: {e}");
        }
    }

    /// What the translation gives renders as ESO renders the original (values from ESO's docs' examples).
    #[test]
    fn translations_render_as_eso_renders() {
        use crate::api::TemplateText;
        use crate::secret::{SecretBytes, SecretData};
        let values: SecretData = [
            ("user", "robot"),
            ("password", "p:w"),
            ("host", "r.example"),
            ("tls.crt", "C"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
        .collect();
        let go = r#"{"auths":{"{{ .host }}":{"auth":"{{ printf "%s:%s" .user .password | b64enc }}"}}}"#;
        let spec: crate::api::ManagedSecretSpec = serde_json::from_value(serde_json::json!({
            "source": {"esc": {"environment": "o/p/e", "data": [{"key": "k", "path": "p"}]}},
            "target": {"template": {"data": {
                "D": TemplateText(t(go)), "C": TemplateText(t(r#"{{ index . "tls.crt" }}"#))}}}
        }))
        .unwrap();
        let out = crate::render::render(&spec, values).unwrap();
        // ESO: b64enc of "robot:p:w" (sprig, StdEncoding).
        assert_eq!(
            out.get("D").unwrap().expose(),
            br#"{"auths":{"r.example":{"auth":"cm9ib3Q6cDp3"}}}"#
        );
        assert_eq!(out.get("C").unwrap().expose(), b"C");
    }
}
