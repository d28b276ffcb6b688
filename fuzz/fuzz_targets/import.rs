//! `keyward import` end to end, short of writing files. Input: `secret_map \0 overrides`. Never a panic; when
//! the import succeeds, every file it would write reads back (with the YAML reader the operator uses) as
//! exactly the ManagedSecret that was checked against the CRD, so neither a name, a path nor an override can
//! smuggle other YAML into the output.
#![no_main]

use keyward::api::ManagedSecret;
use keyward::ops::import::{self, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(t) = keyward_fuzz::texts(data, 2) else {
        return;
    };
    let (map, overrides) = (t[0], t[1]);
    let overrides = match import::parse_overrides(overrides, "overrides.yaml") {
        Ok(o) => o,
        Err(e) => {
            let _ = e.to_string();
            Default::default()
        }
    };
    let opts = Options {
        environment: "acme/app/prod".into(),
        namespace: "apps".into(),
        source_name: "config/pulumi/secret_map.yaml".into(),
        target_secret: None,
    };
    let outcome = match import::import(map, &overrides, &opts) {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = import::summary(&outcome);
    let stream = import::render_stream(&outcome).expect("the stream renders");
    assert_eq!(
        stream.matches("---\n").count(),
        outcome.objects.len(),
        "the stream has other documents than the objects:\n{stream}"
    );
    let files = import::render_files(&outcome).expect("the files render");
    assert_eq!(files.len(), outcome.objects.len() + 1);
    for ((name, text), generated) in files.iter().zip(&outcome.objects) {
        let read: ManagedSecret =
            serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{name} does not read back: {e}\n{text}"));
        let want = serde_json::to_value(&generated.object).expect("the object serializes");
        let got = serde_json::to_value(&read).expect("the object serializes");
        assert_eq!(got, want, "{name} reads back as another object:\n{text}");
    }
});
