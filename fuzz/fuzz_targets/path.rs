//! ESC property paths, both dialects: never a panic, and every path that parses is shown (Display, the form
//! `?property=` receives) as text that Pulumi's syntax reads back as the same path.
#![no_main]

use keyward::esc::path::{PropertyPath, Segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = PropertyPath::parse(text);
    let pulumi = PropertyPath::parse_pulumi(text);
    for parsed in [&spec, &pulumi] {
        match parsed {
            Ok(path) => {
                assert!(!path.0.is_empty(), "{text:?} parsed as an empty path");
                let shown = path.to_string();
                assert_eq!(
                    PropertyPath::parse_pulumi(&shown).as_ref(),
                    Ok(path),
                    "{text:?} is shown as {shown:?}"
                );
            }
            Err(e) => {
                assert!(e.at <= text.len(), "{text:?}: error position {} past the end", e.at);
                let _ = e.to_string();
            }
        }
    }
    // The spec dialect is Pulumi's, stricter about plain names, less a leading `values`.
    if let Ok(path) = &spec {
        let Ok(full) = &pulumi else {
            panic!("{text:?} parses as a spec path but not in Pulumi's syntax");
        };
        let values = Segment::Key("values".into());
        let stripped = full.0.len() == path.0.len() + 1 && full.0[0] == values && full.0[1..] == path.0[..];
        assert!(full == path || stripped, "{text:?}: {path:?} vs {full:?}");
    }
});
