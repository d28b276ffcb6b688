//! The secret map and the overrides file as `keyward import` reads them, without the import itself (which has
//! its own, slower target). Input: `secret_map \0 overrides`. Never a panic; every entry kept is well formed
//! (a Secret data key for a name, once; a non-empty path; a real line) and every problem has a message.
#![no_main]

use std::collections::HashSet;

use keyward::ops::import::parse_overrides;
use keyward::ops::secret_map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(t) = keyward_fuzz::texts(data, 2) else {
        return;
    };
    let (map, overrides) = (t[0], t[1]);
    let (entries, problems) = secret_map::parse(map);
    // YAML breaks lines at \n, \r\n and a lone \r.
    let lines = map.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count() + 1;
    let mut names = HashSet::new();
    for e in &entries {
        assert!(names.insert(e.name.as_str()), "{:?} kept twice", e.name);
        assert!(
            !e.name.is_empty() && e.name.len() <= 253,
            "{:?} kept as a name",
            e.name
        );
        assert!(
            e.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "{:?} kept as a name",
            e.name
        );
        assert!(!e.path.trim().is_empty(), "{:?} kept with an empty path", e.name);
        assert!(e.line >= 1 && e.line <= lines, "{:?} on line {} of {lines}", e.name, e.line);
    }
    assert!(
        !entries.is_empty() || !problems.is_empty(),
        "neither entries nor problems"
    );
    for p in &problems {
        assert!(!p.message.is_empty());
        let _ = p.to_string();
    }
    match parse_overrides(overrides, "overrides.yaml") {
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
