//! `target.template` with minijinja (Jinja2's syntax): each value read is a variable named by its key (and all of
//! them are the map `values`, for keys that are not identifiers: `{{ values["tls.crt"] }}`).
//!
//! Sandboxed: no loader (no `include`, `import` or `extends` can reach anything), no filesystem or network,
//! strict undefined variables (a misspelt name is an error, not an empty string), work bounded by fuel and
//! recursion by a limit, output bounded by the Secret's size. Errors say the key, line, column and kind; the
//! engine's detail (which can quote a value, e.g. a failed conversion) is shown only for syntax errors, which
//! come from the template's own text.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use zeroize::Zeroizing;

use super::error::RenderError;
use crate::api::TemplateText;
use crate::secret::{MAX_SECRET_DATA, SecretBytes, SecretData};

/// Instructions a template may run (minijinja's fuel): far more than any connection string or dockerconfigjson
/// takes (tens), far less than a loop that would hold a reconcile for seconds.
const FUEL: u64 = 100_000;
/// How deeply templates may nest calls and blocks.
const RECURSION: usize = 32;

/// Renders every template of `target.template.data` with `values` as its variables.
pub fn render_all(templates: &BTreeMap<String, TemplateText>, values: &SecretData) -> Result<SecretData, RenderError> {
    let env = environment();
    let context = context(values);
    let mut out = SecretData::default();
    for (key, text) in templates {
        let failed = |e: &Error| describe(key, &text.0, e);
        let template = env.template_from_named_str(key, &text.0).map_err(|e| failed(&e))?;
        let rendered = Zeroizing::new(template.render(&context).map_err(|e| failed(&e))?);
        if rendered.len() > MAX_SECRET_DATA {
            return Err(RenderError::TooLarge {
                size: rendered.len(),
                max: MAX_SECRET_DATA,
            });
        }
        out.insert(key.clone(), SecretBytes::new(rendered.as_bytes().to_vec()));
    }
    Ok(out)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Secrets are not HTML: nothing is escaped, whatever the key's "extension" (`index.html`).
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env.add_filter("b64encode", |s: &str| STANDARD.encode(s.as_bytes()));
    env.add_filter("b64decode", |s: &str| -> Result<String, Error> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "b64decode: the input is not base64"))?;
        String::from_utf8(bytes).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "b64decode: the decoded bytes are not UTF-8",
            )
        })
    });
    // RFC 3986 component encoding: a password in a URL's userinfo.
    env.add_filter("urlencode", |s: &str| crate::retry::path_segment(s));
    env
}

/// Each value as a variable (text when it is UTF-8, bytes otherwise), and all of them as `values`.
fn context(values: &SecretData) -> Value {
    let as_value = |v: &SecretBytes| match std::str::from_utf8(v.expose()) {
        Ok(s) => Value::from(s),
        Err(_) => Value::from_bytes(v.expose().to_vec()),
    };
    let all: BTreeMap<String, Value> = values.iter().map(|(k, v)| (k.clone(), as_value(v))).collect();
    let mut vars = all.clone();
    vars.entry("values".to_string()).or_insert_with(|| Value::from(all));
    Value::from(vars)
}

/// The error as keyward reports it: key, position and kind, never a value.
fn describe(key: &str, text: &str, e: &Error) -> RenderError {
    let position = match (e.line(), e.range()) {
        (Some(line), Some(range)) => {
            let start = text.get(..range.start).unwrap_or_default();
            let column = start.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        (Some(line), None) => format!("line {line}"),
        _ => "in the template".to_string(),
    };
    let mut what = e.kind().to_string();
    if e.kind() == ErrorKind::SyntaxError
        && let Some(detail) = e.detail()
    {
        what = format!("{what}: {detail}");
    }
    if e.kind() == ErrorKind::UndefinedError {
        what = format!("{what} (a variable that is not a key read; the keys read are the variables)");
    }
    RenderError::Template {
        key: key.to_string(),
        position,
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &[u8])]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.to_vec())))
            .collect()
    }

    fn one(template: &str, vals: &SecretData) -> Result<String, RenderError> {
        let t = BTreeMap::from([("OUT".to_string(), TemplateText(template.to_string()))]);
        render_all(&t, vals).map(|d| String::from_utf8(d.get("OUT").unwrap().expose().to_vec()).unwrap())
    }

    #[test]
    fn values_are_variables_and_the_filters_make_secret_shapes() {
        let v = values(&[("user", b"robot"), ("password", b"canary-pw"), ("tls.crt", b"C")]);
        assert_eq!(
            one("{{ (user ~ ':' ~ password) | b64encode }}", &v).unwrap(),
            STANDARD.encode("robot:canary-pw")
        );
        assert_eq!(one("{{ values['tls.crt'] }}", &v).unwrap(), "C");
        assert_eq!(
            one(r#"{{ {"auths": {"r.io": {"username": user}}} | tojson }}"#, &v).unwrap(),
            r#"{"auths": {"r.io": {"username": "robot"}}}"#
        );
        assert_eq!(
            one("{{ 'cm9ib3Q=' | b64decode }}<b>", &v).unwrap(),
            "robot<b>",
            "nothing is escaped"
        );
    }

    #[test]
    fn errors_name_the_key_and_position_and_never_a_value() {
        let v = values(&[("password", b"canary-pw-123"), ("n", b"canary-n")]);
        let cases = [
            ("x\n  {{ pasword }}", "line 2, column 6", "undefined value"),
            ("{{ password", "line 1", "syntax error"),
            ("{{ n | int + 1 }}", "line 1", ""),
            ("{{ password | b64decode }}", "line 1", "invalid operation"),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                "line 1",
                "",
            ),
            ("{% include 'other' %}", "line 1", ""),
            ("{{ password * 100000000 }}", "line 1", ""),
        ];
        for (template, position, kind) in cases {
            let e = one(template, &v).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("target.template.data[OUT]: "), "{shown}");
            assert!(shown.contains(position), "{template:?}: {shown}");
            assert!(shown.contains(kind), "{template:?}: {shown}");
            assert!(!shown.contains("canary"), "{template:?}: {shown}");
            assert_eq!(e.reason(), "TemplateFailed");
        }
    }

    #[test]
    fn bytes_that_are_not_text_pass_through() {
        let v = values(&[("bin", &[0xff, 0x00, 0x01])]);
        let t = BTreeMap::from([("OUT".to_string(), TemplateText("{{ bin | length }}".to_string()))]);
        let d = render_all(&t, &v).unwrap();
        assert_eq!(d.get("OUT").unwrap().expose(), b"3");
    }
}
