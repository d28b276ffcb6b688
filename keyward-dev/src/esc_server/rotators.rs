//! Rotation: new state for the definition's `fn::rotate::dev-random` rotators (`inputs: {length, alphabet}`,
//! alphanumeric when no alphabet is given), written in place as
//! `fn::secret` (the caller encrypts it), every other byte of the definition unchanged, as ESC's rotate does.

use rand::distr::{Alphanumeric, SampleString};
use zeroize::Zeroizing;

use super::eval::{DEV_ROTATOR, Diagnostic, rotator_length};
use super::secrets::splice;
use keyward::esc::definition::{double_quoted, node_replacement, value_indicator};
use keyward::esc::path::{PropertyPath, Segment};
use keyward::yaml::{self, Kind, Node};

/// One `fn::rotate::<provider>` call under `values`.
struct Rotator<'a> {
    path: Vec<Segment>,
    provider: &'a str,
    /// The call's argument, `{inputs, state}`.
    arg: &'a Node,
    /// The mapping `{fn::rotate::<provider>: arg}`.
    call: &'a Node,
}

fn rotators<'a>(node: &'a Node, path: &mut Vec<Segment>, out: &mut Vec<Rotator<'a>>) {
    match &node.kind {
        Kind::Map(entries) => {
            if let [(k, arg)] = entries.as_slice()
                && let Some(provider) = k.as_str().and_then(|k| k.strip_prefix("fn::rotate::"))
            {
                out.push(Rotator {
                    path: path.clone(),
                    provider,
                    arg,
                    call: node,
                });
                return;
            }
            for (k, v) in entries {
                path.push(Segment::Key(k.key_string()));
                rotators(v, path, out);
                path.pop();
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                rotators(item, path, out);
                path.pop();
            }
        }
        Kind::Scalar { .. } => {}
    }
}

/// The definition after rotation (new state as plaintext `fn::secret`, to be encrypted before it is stored)
/// and the paths rotated. `requested` selects rotators at or under each path (relative to `values`, a leading
/// `values.` allowed); none selects all. A path that selects nothing, or a rotator this server cannot run, is
/// a diagnostic and nothing changes.
pub(crate) fn rotate_definition(
    env: &str,
    text: &str,
    requested: &[String],
) -> Result<(Zeroizing<String>, Vec<String>), Vec<Diagnostic>> {
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Err(vec![Diagnostic::new(format!(
                "the definition does not parse: {}",
                e.message
            ))]);
        }
    };
    let mut found = Vec::new();
    if let Some(values) = root.as_ref().and_then(|r| r.get("values")) {
        rotators(values, &mut Vec::new(), &mut found);
    }
    let mut diags = Vec::new();
    let mut selected: Vec<&Rotator> = Vec::new();
    if requested.is_empty() {
        selected.extend(found.iter());
    }
    for p in requested {
        let mut path = match PropertyPath::parse_pulumi(p).map_err(|e| e.to_string()) {
            Ok(path) => path.0,
            Err(e) => {
                diags.push(Diagnostic::new(e));
                continue;
            }
        };
        if path.len() > 1 && path[0] == Segment::Key("values".into()) {
            path.remove(0);
        }
        let under: Vec<&Rotator> = found.iter().filter(|r| r.path.starts_with(&path)).collect();
        if under.is_empty() {
            let mut d = Diagnostic::new(format!("no rotator at or under {p}"));
            d.path = Some(p.clone());
            diags.push(d);
        }
        for r in under {
            if !selected.iter().any(|s| std::ptr::eq(*s, r)) {
                selected.push(r);
            }
        }
    }
    let mut edits = Vec::new();
    let mut paths = Vec::new();
    for r in &selected {
        let shown = PropertyPath(r.path.clone()).to_string();
        if format!("fn::rotate::{}", r.provider) != DEV_ROTATOR {
            diags.push(Diagnostic::at(
                format!(
                    "rotator fn::rotate::{} at {shown} cannot run in the keyward-dev ESC server (only {DEV_ROTATOR})",
                    r.provider
                ),
                env,
                r.arg.range,
                Some(&shown),
            ));
            continue;
        }
        let length = r.arg.get("inputs").and_then(|i| i.get("length")).map(Node::to_json);
        let length = match rotator_length(length.as_ref()) {
            Ok(l) => l,
            Err(e) => {
                diags.push(Diagnostic::at(e, env, r.arg.range, Some(&shown)));
                continue;
            }
        };
        let alphabet = r.arg.get("inputs").and_then(|i| i.get("alphabet")).map(Node::to_json);
        let state = match alphabet.as_ref().and_then(|a| a.as_str()) {
            // `inputs.alphabet`: the characters the state is drawn from (a rotator that can only issue one
            // credential, "a", is how tests meet a rotation that changes nothing).
            Some(chars) if !chars.is_empty() => {
                let chars: Vec<char> = chars.chars().collect();
                let mut rng = rand::rng();
                Zeroizing::new(
                    (0..length)
                        .map(|_| chars[rand::RngExt::random_range(&mut rng, 0..chars.len())])
                        .collect::<String>(),
                )
            }
            _ => Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), length)),
        };
        match state_edit(text, r, &double_quoted(&state)) {
            Some(edit) => edits.push(edit),
            None => diags.push(Diagnostic::at(
                format!("{DEV_ROTATOR} takes a mapping {{inputs, state}}"),
                env,
                r.arg.range,
                Some(&shown),
            )),
        }
        paths.push(shown);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let out = splice(text, edits).ok_or_else(|| vec![Diagnostic::new("overlapping rotators")])?;
    Ok((Zeroizing::new(out), paths))
}

/// The edit that makes a rotator's `state` the secret `quoted` (a double-quoted scalar): the existing state
/// node replaced, or a `state` entry added to the argument mapping.
fn state_edit(text: &str, rotator: &Rotator, quoted: &str) -> Option<(usize, usize, String)> {
    let (arg, call) = (rotator.arg, rotator.call);
    let secret = format!("{{fn::secret: {quoted}}}");
    let Some(entries) = arg.as_map() else {
        // `fn::rotate::dev-random:` with no arguments yet.
        return arg.to_json().is_null().then(|| {
            node_replacement(
                arg,
                value_indicator(text, arg, call),
                &format!("{{state: {secret}}}"),
                "",
            )
        });
    };
    if let Some(state) = entries.iter().rev().find(|(k, _)| k.as_str() == Some("state")) {
        return Some(node_replacement(
            &state.1,
            value_indicator(text, &state.1, arg),
            &secret,
            &format!("fn::secret: {quoted}"),
        ));
    }
    let end = arg.range.end.byte;
    if arg.flow {
        // Before the closing brace.
        let close = text[..end].rfind('}')?;
        let sep = if entries.is_empty() { "" } else { ", " };
        return Some((close, close, format!("{sep}state: {secret}")));
    }
    // A new last entry, at the indentation of the first.
    let (first, _) = entries.first()?;
    let indent = " ".repeat(first.range.begin.column.saturating_sub(1));
    Some((end, end, format!("\n{indent}state: {secret}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(text: &str, path: &str) -> serde_json::Value {
        let root = yaml::parse(text).unwrap().unwrap().to_json();
        let mut node = &root["values"];
        for a in PropertyPath::parse_pulumi(path).unwrap().0 {
            node = match a {
                Segment::Key(k) => &node[k.as_str()],
                Segment::Index(i) => &node[i],
            };
        }
        node[DEV_ROTATOR]["state"].clone()
    }

    const TEXT: &str = "# rotators\nvalues:\n  db:\n    password:\n      fn::rotate::dev-random:\n        inputs:\n          length: 12 # short\n        state:\n          fn::secret:\n            ciphertext: AAAA\n    user: app\n  api:\n    token: {fn::rotate::dev-random: {inputs: {length: 40}}}\n    list:\n      - fn::rotate::dev-random:\n          inputs: {}\n  bare:\n    fn::rotate::dev-random:\n  plain: 1 # kept\n";

    #[test]
    fn rotates_selected_rotators_in_place() {
        let (out, paths) = rotate_definition("p/e", TEXT, &["db".into()]).unwrap();
        assert_eq!(paths, vec!["db.password"]);
        let s = state_of(&out, "db.password")["fn::secret"].as_str().unwrap().to_owned();
        assert_eq!(s.len(), 12);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        let i = TEXT.find("fn::secret:\n").unwrap();
        assert_eq!(&out[..i], &TEXT[..i]);
        assert!(out.ends_with(&TEXT[TEXT.find("\n    user").unwrap()..]), "{}", *out);

        let (out, paths) = rotate_definition("p/e", TEXT, &[]).unwrap();
        assert_eq!(paths, vec!["db.password", "api.token", "api.list[0]", "bare"]);
        assert_eq!(state_of(&out, "bare")["fn::secret"].as_str().unwrap().len(), 32);
        assert_eq!(state_of(&out, "api.token")["fn::secret"].as_str().unwrap().len(), 40);
        assert_eq!(state_of(&out, "api.list[0]")["fn::secret"].as_str().unwrap().len(), 32);
        assert!(out.ends_with("  plain: 1 # kept\n"));

        let (_, paths) = rotate_definition("p/e", TEXT, &["values.api.token".into(), "api".into()]).unwrap();
        assert_eq!(paths, vec!["api.token", "api.list[0]"]);
    }

    #[test]
    fn refuses_paths_without_rotators() {
        for bad in ["db.user", "plain", "nope", "db.password.state"] {
            let diags = rotate_definition("p/e", TEXT, &[bad.into()]).unwrap_err();
            assert!(diags[0].summary.contains("no rotator"), "{bad}: {diags:?}");
        }
        let other = "values:\n  k: {fn::rotate::aws-iam: {inputs: {}}}\n";
        assert!(
            rotate_definition("p/e", other, &[]).unwrap_err()[0]
                .summary
                .contains("cannot run")
        );
        let (out, paths) = rotate_definition("p/e", "values: {a: 1}\n", &[]).unwrap();
        assert!(paths.is_empty());
        assert_eq!(*out, "values: {a: 1}\n");
    }
}
