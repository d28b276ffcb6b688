//! `keyward import --from-external-secrets` over any input: `eso::convert`, then `eso::render`. Never a panic; a
//! conversion renders, and its output reads back as one document per AccessPolicy and ManagedSecret.
#![no_main]

use keyward::ops::eso::{convert, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let converted = match convert(text, "fuzz.yaml", Some("ns")) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let out = render(&converted, "fuzz.yaml").expect("a conversion renders");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("the output reads back");
    assert_eq!(docs.len(), converted.objects.len() + converted.policies.len());
});
