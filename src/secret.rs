//! Secret values and what may be said about them: values live only in zeroizing buffers that never format
//! (`SecretBytes`), are compared in constant time, and are told apart by keyed hashes that reveal nothing
//! (`ValueHasher`, `hmac-sha256:<hex>`).

use std::collections::BTreeMap;
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

/// The most a Secret's data may hold, keys included: 1 MiB (Kubernetes' `MaxSecretSize`, checked by the API
/// server's Secret validation).
pub const MAX_SECRET_DATA: usize = 1024 * 1024;

/// The data keys one ManagedSecret fills, with their values. Keys are names from the spec and may be shown;
/// values never are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, SecretBytes>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl SecretData {
    /// One value under `key`.
    pub fn single(key: &str, value: SecretBytes) -> Self {
        SecretData(BTreeMap::from([(key.to_string(), value)]))
    }

    pub fn insert(&mut self, key: String, value: SecretBytes) -> Option<SecretBytes> {
        self.0.insert(key, value)
    }

    pub fn get(&self, key: &str) -> Option<&SecretBytes> {
        self.0.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SecretBytes)> {
        self.0.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// Keys plus values, in bytes: what they take of a Secret's 1 MiB.
    pub fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.expose().len()).sum()
    }

    /// The keyed hash that tells versions of this data apart. One key: the hash of its value alone (what
    /// status and annotations have always held for a single value, so an upgrade changes no hash). Several:
    /// the hash of an unambiguous encoding of every key and value (a domain tag, then per key its length, the
    /// key, the value's length and the value).
    pub fn hash(&self, hasher: &ValueHasher) -> String {
        if let (1, Some(v)) = (self.0.len(), self.0.values().next()) {
            return hasher.hash(v.expose());
        }
        let mut encoded = Zeroizing::new(b"keyward-secret-data-v1\0".to_vec());
        for (k, v) in &self.0 {
            encoded.extend_from_slice(&(k.len() as u64).to_be_bytes());
            encoded.extend_from_slice(k.as_bytes());
            encoded.extend_from_slice(&(v.expose().len() as u64).to_be_bytes());
            encoded.extend_from_slice(v.expose());
        }
        hasher.hash(&encoded)
    }
}

impl FromIterator<(String, SecretBytes)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (String, SecretBytes)>>(iter: I) -> Self {
        SecretData(iter.into_iter().collect())
    }
}

impl IntoIterator for SecretData {
    type Item = (String, SecretBytes);
    type IntoIter = std::collections::btree_map::IntoIter<String, SecretBytes>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
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

    #[test]
    fn data_hashes_a_single_value_as_before_and_tells_keys_apart() {
        let h = ValueHasher::new(b"k".to_vec());
        let one = SecretData::single("K", SecretBytes::new(b"v".to_vec()));
        assert_eq!(one.hash(&h), h.hash(b"v"));
        let two = |a: &str, av: &[u8], b: &str, bv: &[u8]| {
            SecretData::from_iter([
                (a.to_string(), SecretBytes::new(av.to_vec())),
                (b.to_string(), SecretBytes::new(bv.to_vec())),
            ])
        };
        let base = two("A", b"1", "B", b"2").hash(&h);
        assert_eq!(base, two("B", b"2", "A", b"1").hash(&h));
        assert_ne!(base, two("A", b"1", "B", b"3").hash(&h));
        assert_ne!(base, two("A", b"1", "C", b"2").hash(&h));
        // Moving bytes between key and value is another encoding.
        assert_ne!(two("A", b"12", "B", b"").hash(&h), two("A", b"1", "B2", b"").hash(&h));
        let shown = format!("{:?}", two("A", b"canary-1", "B", b"canary-2"));
        assert!(shown.contains("\"A\"") && !shown.contains("canary"), "{shown}");
    }
}
