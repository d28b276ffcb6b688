//! The webhook receiver's reading of a delivery, `read_delivery`, over any headers and body. Input:
//! `mode signature \0 delivery-id \0 body`, where the first byte's bits choose: 1, sign the body correctly
//! (with a `sha256=` prefix when 2 is also set, in upper case when 4 is) instead of sending `signature` as
//! the header; 8, send no delivery id. Never a panic; nothing passes without the secret; a delivery taken
//! names an environment that reads back the same, and is remembered by its signature.
#![no_main]

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use keyward::esc::EnvRef;
use keyward::http::webhook::{DELIVERY_HEADER, Refusal, SIGNATURE_HEADER, read_delivery};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-shared-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts = keyward_fuzz::parts(rest, 3);
    let (signature, id, body) = (parts[0], parts[1], parts[2]);
    let mut headers = HeaderMap::new();
    let signature = if mode & 1 != 0 {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET) else {
            return;
        };
        mac.update(body);
        let hex = hex::encode(mac.finalize().into_bytes());
        let hex = if mode & 4 != 0 { hex.to_ascii_uppercase() } else { hex };
        let text = if mode & 2 != 0 { format!("sha256={hex}") } else { hex };
        text.into_bytes()
    } else {
        signature.to_vec()
    };
    if let Ok(v) = HeaderValue::from_bytes(&signature) {
        headers.insert(SIGNATURE_HEADER, v);
    }
    if mode & 8 == 0
        && let Ok(v) = HeaderValue::from_bytes(id)
    {
        headers.insert(DELIVERY_HEADER, v);
    }
    let Ok(now) = "2026-01-01T00:00:00Z".parse::<jiff::Timestamp>() else {
        return;
    };
    assert_eq!(
        read_delivery(None, &headers, body, now),
        Err(Refusal::Unauthenticated),
        "taken without a secret"
    );
    assert_eq!(
        read_delivery(Some(b"another secret"), &headers, body, now).map(|_| ()),
        Err(Refusal::Unauthenticated),
        "taken under the wrong secret"
    );
    match read_delivery(Some(SECRET), &headers, body, now) {
        Ok(delivery) => {
            let shown = delivery.environment.to_string();
            assert_eq!(EnvRef::parse(&shown).ok().as_ref(), Some(&delivery.environment), "{shown}");
            assert!(
                delivery.keys.iter().any(|k| k.starts_with("signature:")),
                "{:?}",
                delivery.keys
            );
        }
        Err(refusal) => {
            let _ = refusal.result();
        }
    }
});
