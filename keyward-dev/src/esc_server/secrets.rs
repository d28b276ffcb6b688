//! The text-level rewrite of `fn::secret` nodes. On update, each plaintext `fn::secret: <scalar>` becomes
//! `fn::secret: {ciphertext: <base64>}`, as real ESC stores it; `decrypt` does the reverse. Only the bytes of
//! those value nodes change: comments, ordering, quoting and every other expression stay byte for byte.

use super::crypto::SecretKey;
use super::eval::{Diagnostic, literal};
use keyward::yaml::{self, Kind, Node, Range};

/// One `fn::secret: value` site.
struct Site<'a> {
    key: &'a Node,
    value: &'a Node,
}

fn sites<'a>(node: &'a Node, out: &mut Vec<Site<'a>>) {
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                if k.as_str() == Some("fn::secret") {
                    out.push(Site { key: k, value: v });
                } else {
                    sites(v, out);
                }
            }
        }
        Kind::Seq(items) => items.iter().for_each(|i| sites(i, out)),
        Kind::Scalar { .. } => {}
    }
}

/// The ciphertext of an already-encrypted `{ciphertext: ...}` value.
fn ciphertext(value: &Node) -> Option<&str> {
    match value.as_map() {
        Some([(k, v)]) if k.as_str() == Some("ciphertext") => v.as_str(),
        _ => None,
    }
}

fn syntax_diagnostic(env: &str, e: yaml::SyntaxError) -> Diagnostic {
    let r = Range {
        begin: e.pos,
        end: e.pos,
    };
    Diagnostic::at(e.message, env, r, None)
}

/// Applies non-overlapping byte-range replacements.
pub(crate) fn splice(text: &str, mut edits: Vec<(usize, usize, String)>) -> Option<String> {
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len() + edits.len() * 64);
    let mut at = 0;
    for (start, end, with) in edits {
        if start < at || end < start || end > text.len() {
            return None;
        }
        out.push_str(text.get(at..start)?);
        out.push_str(&with);
        at = end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// Encrypts every plaintext `fn::secret` of a definition. Errors are the diagnostics of an update that must
/// be refused: YAML that does not parse, a secret that is not a string, a ciphertext this server cannot read.
pub(crate) fn encrypt_definition(key: &SecretKey, env: &str, text: &str) -> Result<String, Vec<Diagnostic>> {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(text.to_owned()),
        Err(e) => return Err(vec![syntax_diagnostic(env, e)]),
    };
    let mut found = Vec::new();
    sites(&root, &mut found);
    let mut edits = Vec::new();
    let mut diags = Vec::new();
    for Site { key: k, value: v } in found {
        let refuse = |summary: &str| Diagnostic::at(summary, env, v.range, Some("fn::secret"));
        // An alias would point at (and rewrite) the anchored node elsewhere in the text.
        if v.range.begin.byte < k.range.end.byte {
            diags.push(refuse("fn::secret cannot take an alias"));
            continue;
        }
        match &v.kind {
            Kind::Scalar { text: written, .. } => {
                if v.to_json().is_null() && written.is_empty() {
                    diags.push(refuse("fn::secret needs a string value"));
                    continue;
                }
                // What is encrypted is the value the literal means (`$$` is `$`), as ESC encrypts it.
                let plain = match literal(written) {
                    Ok(p) => p,
                    Err(e) => {
                        diags.push(refuse(&e));
                        continue;
                    }
                };
                match key.encrypt(&plain) {
                    Ok(ct) => {
                        let start = v.tag_begin.map_or(v.range.begin.byte, |t| t.byte);
                        edits.push((start, v.range.end.byte, format!("{{ciphertext: {ct}}}")));
                    }
                    Err(e) => diags.push(refuse(&e.to_string())),
                }
            }
            Kind::Map(_) => match ciphertext(v) {
                Some(ct) => {
                    if let Err(e) = key.decrypt(ct) {
                        diags.push(refuse(&format!("fn::secret: {e}")));
                    }
                }
                None => diags.push(refuse("fn::secret takes a string or {ciphertext: ...}")),
            },
            Kind::Seq(_) => diags.push(refuse("fn::secret takes a string")),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let out = splice(text, edits).ok_or_else(|| vec![Diagnostic::new("overlapping fn::secret values")])?;
    // The rewrite must leave a definition that still parses; anything else is a bug here, not the user's.
    match yaml::parse(&out) {
        Ok(_) => Ok(out),
        Err(e) => Err(vec![Diagnostic::new(format!(
            "internal error: encrypting secrets produced invalid YAML: {}",
            e.message
        ))]),
    }
}

/// Replaces every `fn::secret: {ciphertext: ...}` with its plaintext. A definition that does not parse is
/// returned unchanged (nothing stored can be like that; updates refuse it).
pub(crate) fn decrypt_definition(key: &SecretKey, text: &str) -> Result<String, String> {
    let Ok(Some(root)) = yaml::parse(text) else {
        return Ok(text.to_owned());
    };
    let mut found = Vec::new();
    sites(&root, &mut found);
    let mut edits = Vec::new();
    for Site { key: k, value: v } in found {
        let Some(ct) = ciphertext(v) else { continue };
        let plain = key.decrypt(ct).map_err(|e| e.to_string())?;
        // Written back as a literal that means the plaintext: every `$` doubled.
        let rendered = yaml::render_string(&plain.replace('$', "$$"));
        let v_start = v.tag_begin.map_or(v.range.begin.byte, |t| t.byte);
        let between = text.get(k.range.end.byte..v_start).unwrap_or("");
        let simple_gap = between.trim_start().starts_with(':') && between.trim_start()[1..].trim().is_empty();
        if !v.flow && simple_gap {
            // `fn::secret:\n  ciphertext: X` becomes `fn::secret: plaintext` on one line.
            edits.push((k.range.end.byte, v.range.end.byte, format!(": {rendered}")));
        } else {
            edits.push((v_start, v.range.end.byte, rendered));
        }
    }
    splice(text, edits).ok_or_else(|| "overlapping fn::secret values".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esc_server::eval::{Environments, evaluate};

    struct NoEnvs;
    impl Environments for NoEnvs {
        fn definition(&self, _: &str, _: &str) -> Option<String> {
            None
        }
    }

    const CANARY: &str = "canary-7f3a9c";

    /// Every byte outside the secret values is kept: the text before and after each rewrite is identical.
    fn assert_only_secrets_changed(before: &str, after: &str, secrets: &[&str]) {
        let mut rest_before = before;
        let mut rest_after = after;
        for s in secrets {
            let i = rest_before.find(s).unwrap();
            let (head, tail) = rest_before.split_at(i);
            assert!(rest_after.starts_with(head), "prefix changed:\n{before}\n---\n{after}");
            let after_head = &rest_after[head.len()..];
            assert!(after_head.starts_with("{ciphertext: "), "{after_head}");
            let close = after_head.find('}').unwrap();
            rest_after = &after_head[close + 1..];
            rest_before = &tail[s.len()..];
        }
        assert_eq!(rest_before, rest_after);
    }

    /// One configuration's values through the editor, the update's encryption, an open and keyward's read.
    fn round_trip(g: &keyward::api::Generator, count: usize, key: &SecretKey, env: &keyward::esc::EnvRef) {
        use keyward::esc::definition::{double_quoted, escape_interpolation, set_secret};
        use keyward::esc::{PropertyPath, Snapshot};
        use keyward::rotation::generate::generate;
        // Few values per definition: reading one value parses the whole open answer.
        const BATCH: usize = 4;
        for batch in 0..count.div_ceil(BATCH) {
            let values: Vec<_> = (0..BATCH).map(|_| generate(Some(g)).unwrap()).collect();
            let mut text = String::from("values:\n");
            for (i, v) in values.iter().enumerate() {
                let v = std::str::from_utf8(v.expose()).unwrap();
                text.push_str(&format!(
                    "  k{i}: {{fn::secret: {}}}\n",
                    double_quoted(&escape_interpolation(v))
                ));
            }
            // The text above is exactly what the editor writes for a value (checked on one per batch).
            let one = std::str::from_utf8(values[0].expose()).unwrap();
            let edited = set_secret("values:\n  k0: old\n", &PropertyPath::parse("k0").unwrap(), one).unwrap();
            assert_eq!(
                edited,
                format!(
                    "values:\n  k0: {{fn::secret: {}}}\n",
                    double_quoted(&escape_interpolation(one))
                )
            );
            let encrypted = encrypt_definition(key, "app/prod", &text).unwrap();
            let ev = evaluate(&NoEnvs, key, "app/prod", &encrypted);
            assert!(ev.diagnostics.is_empty(), "{g:?} batch {batch}: {:?}", ev.diagnostics);
            let properties = crate::esc_server::eval::PropertiesJson(&ev.properties);
            let body = serde_json::to_vec(&std::collections::BTreeMap::from([("properties", properties)])).unwrap();
            let snapshot = Snapshot::new(env.clone(), 1, zeroize::Zeroizing::new(body));
            for (i, v) in values.iter().enumerate() {
                let got = snapshot
                    .lookup(&PropertyPath::parse(&format!("k{i}")).unwrap())
                    .unwrap();
                assert_eq!(
                    got.expose(),
                    v.expose(),
                    "{g:?}: a value did not survive ESC byte for byte"
                );
            }
        }
    }

    /// Every generator configuration keyward accepts, 10,000 values each: written into a definition the way
    /// keyward's editor writes them, encrypted as an update encrypts them, evaluated as an open evaluates them,
    /// and read back from the open answer as keyward reads it — byte for byte.
    #[test]
    fn generated_values_reach_the_open_answer_byte_for_byte() {
        use keyward::api::{CharClass, Generator};
        use keyward::esc::EnvRef;

        let values_per_config: usize = std::env::var("KEYWARD_FIDELITY_VALUES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let key = SecretKey::generate().unwrap();
        let all_punctuation: String = (b'!'..=b'~').filter(u8::is_ascii_punctuation).map(char::from).collect();
        let classes = [
            CharClass::Lowercase,
            CharClass::Uppercase,
            CharClass::Digits,
            CharClass::Symbols,
        ];
        let mut configs = Vec::new();
        for mask in 1u8..16 {
            let chosen: Vec<CharClass> = (0..4).filter(|i| mask & (1 << i) != 0).map(|i| classes[i]).collect();
            let with_symbols = chosen.contains(&CharClass::Symbols);
            let symbol_sets = if with_symbols {
                vec![None, Some(all_punctuation.clone()), Some("$".to_string() + "{}\\\"'`#")]
            } else {
                vec![None]
            };
            for symbols in symbol_sets {
                configs.push(Generator {
                    length: Some(64),
                    classes: chosen.clone(),
                    symbols,
                });
            }
        }
        configs.push(Generator::default());
        let env = EnvRef::parse("acme/app/prod").unwrap();
        // Both cores: the configurations split in two.
        std::thread::scope(|scope| {
            for half in configs.chunks(configs.len().div_ceil(2)) {
                let (key, env) = (&key, &env);
                scope.spawn(move || {
                    for g in half {
                        round_trip(g, values_per_config, key, env);
                    }
                });
            }
        });
        assert_eq!(configs.len(), 32);
    }

    #[test]
    fn encrypts_block_and_flow_secrets_and_keeps_everything_else() {
        let key = SecretKey::generate().unwrap();
        let text = format!(
            "# top comment\nimports:\n  - base   # keep me\nvalues:\n  z_first: 1\n  password:\n    fn::secret: {CANARY}-a\n  flow: {{inner: {{fn::secret: {CANARY}-b}}, other: x}}\n  quoted:\n    fn::secret: \"{CANARY}-c\"   # why\n  list:\n    - fn::secret: '{CANARY}-d'\n  other: {{fn::toBase64: abc}}\n  ref: ${{password}}\n"
        );
        let out = encrypt_definition(&key, "p/e", &text).unwrap();
        assert!(!out.contains(CANARY), "{out}");
        assert_only_secrets_changed(
            &text,
            &out,
            &[
                &format!("{CANARY}-a"),
                &format!("{CANARY}-b"),
                &format!("\"{CANARY}-c\""),
                &format!("'{CANARY}-d'"),
            ],
        );
        // It evaluates to the plaintexts, as secrets.
        let ev = evaluate(&NoEnvs, &key, "p/e", &out);
        let p = ev.properties.plain();
        assert_eq!(p["password"], serde_json::json!(format!("{CANARY}-a")));
        assert_eq!(p["flow"]["inner"], serde_json::json!(format!("{CANARY}-b")));
        assert_eq!(p["list"][0], serde_json::json!(format!("{CANARY}-d")));
        // Encrypting again leaves ciphertexts as they are.
        assert_eq!(encrypt_definition(&key, "p/e", &out).unwrap(), out);
    }

    #[test]
    fn encrypts_block_scalars_keeping_the_lines_that_follow() {
        let key = SecretKey::generate().unwrap();
        let text = "values:\n  pem:\n    fn::secret: |\n      -----BEGIN-----\n      abc\n      -----END-----\n\n  # after\n  next: 1\n";
        let out = encrypt_definition(&key, "p/e", text).unwrap();
        assert!(!out.contains("BEGIN"), "{out}");
        assert!(out.starts_with("values:\n  pem:\n    fn::secret: {ciphertext: "));
        assert!(out.ends_with("}\n\n  # after\n  next: 1\n"), "{out}");
        let ev = evaluate(&NoEnvs, &key, "p/e", &out);
        assert_eq!(
            ev.properties.plain()["pem"],
            serde_json::json!("-----BEGIN-----\nabc\n-----END-----\n")
        );
        assert_eq!(ev.properties.plain()["next"], serde_json::json!(1));
    }

    #[test]
    fn refuses_what_cannot_be_encrypted() {
        let key = SecretKey::generate().unwrap();
        for bad in [
            "values:\n  a:\n    fn::secret: [1, 2]\n",
            "values:\n  a:\n    fn::secret: {x: 1}\n",
            "values:\n  a:\n    fn::secret:\n",
            "values:\n  a: &x hunter2\n  b: {fn::secret: *x}\n",
            "values:\n  a: {fn::secret: {ciphertext: bm90IG91cnM=}}\n",
            "values: [unclosed\n",
        ] {
            let diags = encrypt_definition(&key, "p/e", bad).unwrap_err();
            assert!(!diags.is_empty(), "{bad}");
        }
        // Anything else passes through unchanged.
        let plain = "values:\n  a: 1 # c\n";
        assert_eq!(encrypt_definition(&key, "p/e", plain).unwrap(), plain);
        assert_eq!(encrypt_definition(&key, "p/e", "").unwrap(), "");
    }

    #[test]
    fn decrypt_restores_readable_plaintext() {
        let key = SecretKey::generate().unwrap();
        let text = "values:\n  a:\n    fn::secret: hunter2\n  b: {fn::secret: 'two words'}\n  c:\n    fn::secret: \"multi\\nline\"\n  d: 1 # kept\n";
        let enc = encrypt_definition(&key, "p/e", text).unwrap();
        let dec = decrypt_definition(&key, &enc).unwrap();
        assert_eq!(
            dec,
            "values:\n  a:\n    fn::secret: hunter2\n  b: {fn::secret: \"two words\"}\n  c:\n    fn::secret: \"multi\\nline\"\n  d: 1 # kept\n"
        );
        // Real ESC's block form of a ciphertext decrypts onto one line.
        let ct = key.encrypt("pw").unwrap();
        let block = format!("values:\n  a:\n    fn::secret:\n      ciphertext: {ct}\n  b: 2\n");
        assert_eq!(
            decrypt_definition(&key, &block).unwrap(),
            "values:\n  a:\n    fn::secret: pw\n  b: 2\n"
        );
        let other = SecretKey::generate().unwrap();
        assert!(decrypt_definition(&other, &enc).is_err());
    }
}
