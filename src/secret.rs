//! Secret values and what may be said about them: values live only in zeroizing buffers that never format
//! (`SecretBytes`), are compared in constant time, and are told apart by keyed hashes that reveal nothing
//! (`ValueHasher`, `hmac-sha256:<hex>`).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A secret value. Its `Debug` never shows the bytes; its memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The bytes, for the one place that needs them: the Secret's data.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Compares secrets (tokens, signatures) without revealing through timing how much of them matched.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Keyed hashes of values: they tell versions apart in annotations and status without revealing anything.
#[derive(Clone)]
pub struct ValueHasher {
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ValueHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueHasher(<key redacted>)")
    }
}

impl ValueHasher {
    pub fn new(key: Vec<u8>) -> Self {
        ValueHasher {
            key: Zeroizing::new(key),
        }
    }

    /// `hmac-sha256:<hex>` of the value.
    pub fn hash(&self, value: &[u8]) -> String {
        // new_from_slice accepts any key length for HMAC; the fallback is unreachable but keeps us panic-free.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "hmac-sha256:invalid-key".into();
        };
        mac.update(value);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = ValueHasher::new(b"k1".to_vec());
        let b = ValueHasher::new(b"k2".to_vec());
        assert_eq!(a.hash(b"v"), a.hash(b"v"));
        assert_ne!(a.hash(b"v"), b.hash(b"v"));
        assert_ne!(a.hash(b"v"), a.hash(b"w"));
        assert!(a.hash(b"v").starts_with("hmac-sha256:"));
    }
}
