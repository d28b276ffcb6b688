//! From values to a Secret's data, `render::render`, over any template and value. Input: `type template \0
//! value`, where the first byte picks the Secret type. Never a panic; no error holds the value (a canary is
//! prepended to it), unless the template's own text spells the canary.
#![no_main]

use keyward::api::{ManagedSecretSpec, TARGET_TYPES};
use keyward::render::render;
use keyward::secret::{SecretBytes, SecretData};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "CANARY-7f3a";

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (template, value) = text.split_once('\0').unwrap_or((text, ""));
    let secret_type = TARGET_TYPES[usize::from(kind) % TARGET_TYPES.len()];
    let Ok(spec) = serde_json::from_value::<ManagedSecretSpec>(serde_json::json!({
        "source": {"esc": {"environment": "o/p/e", "data": [{"key": "v", "path": "v"}]}},
        "target": {"type": secret_type, "template": {"mergePolicy": if kind & 0x80 != 0 { "Merge" } else { "Replace" },
                   "data": {"tls.crt": template, ".dockerconfigjson": template, "username": template}}}
    })) else {
        return;
    };
    let values: SecretData = [
        ("v".to_string(), SecretBytes::new(format!("{CANARY}{value}").into_bytes())),
        ("tls.key".to_string(), SecretBytes::new(format!("{CANARY}{value}").into_bytes())),
    ]
    .into_iter()
    .collect();
    if let Err(e) = render(&spec, values) {
        let shown = e.to_string();
        assert!(
            template.contains("CANARY") || !shown.contains(CANARY),
            "a value in an error: {shown}"
        );
    }
});
