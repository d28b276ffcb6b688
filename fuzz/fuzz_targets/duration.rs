//! Durations as the API writes them: never a panic, what parses formats back to the same duration, and any
//! whole number of seconds formats to text that parses back.
#![no_main]

use std::time::Duration;

use keyward::duration::{format, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match parse(text) {
            Ok(d) => assert_eq!(parse(&format(d)), Ok(d), "{text:?}"),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Some(bytes) = data.first_chunk::<8>() {
        let d = Duration::from_secs(u64::from_le_bytes(*bytes));
        assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
    }
});
