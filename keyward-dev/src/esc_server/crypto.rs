//! Encryption of `fn::secret` values at rest, as real ESC does: a definition is stored (and served by GET)
//! with `fn::secret: {ciphertext: <base64>}` in place of each plaintext.
//!
//! This is a development server: its one key lives in the same data file as the ciphertexts, so the
//! encryption keeps plaintext out of the file (and out of anything that copies it) but does not protect the
//! secrets from someone who can read the whole file.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
/// Marks the ciphertext format, so that a different future format is recognizable.
const MAGIC: &[u8; 4] = b"kwd1";
/// Binds ciphertexts to this use of the key.
const AAD: &[u8] = b"keyward-dev esc secret";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error("the encryption key is not 32 bytes of base64")]
    BadKey,
    #[error("the ciphertext is not valid base64 of this server's format")]
    Malformed,
    #[error("the ciphertext does not decrypt with this server's key")]
    Decrypt,
}

/// Fills an array with bytes from the system's secure random number generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// The server's secret-encryption key.
pub(crate) struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_bytes(Zeroizing::new(random_bytes::<KEY_LEN>()?))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Result<Self, CryptoError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes.as_slice()).map_err(|_| CryptoError::BadKey)?;
        Ok(SecretKey {
            bytes,
            key: LessSafeKey::new(unbound),
        })
    }

    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| CryptoError::BadKey)?);
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| CryptoError::BadKey)?;
        Self::from_bytes(Zeroizing::new(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes.as_slice())
    }

    /// Encrypts a plaintext into the base64 text stored as `ciphertext:`.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut sealed = Zeroizing::new(plaintext.as_bytes().to_vec());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(AAD), &mut *sealed)
            .map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts the base64 text of a `ciphertext:`.
    pub fn decrypt(&self, ciphertext: &str) -> Result<Zeroizing<String>, CryptoError> {
        let raw = STANDARD.decode(ciphertext.trim()).map_err(|_| CryptoError::Malformed)?;
        let rest = raw.strip_prefix(MAGIC.as_slice()).ok_or(CryptoError::Malformed)?;
        if rest.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        let text = std::str::from_utf8(plain).map_err(|_| CryptoError::Decrypt)?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::generate().unwrap();
        let ct = key.encrypt("hunter2").unwrap();
        assert!(!ct.contains("hunter2"));
        assert_ne!(ct, key.encrypt("hunter2").unwrap(), "fresh nonce each time");
        assert_eq!(key.decrypt(&ct).unwrap().as_str(), "hunter2");

        let again = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.decrypt(&ct).unwrap().as_str(), "hunter2");

        let other = SecretKey::generate().unwrap();
        assert_eq!(other.decrypt(&ct).unwrap_err(), CryptoError::Decrypt);
        assert_eq!(key.decrypt("not base64!").unwrap_err(), CryptoError::Malformed);
        let mut raw = STANDARD.decode(&ct).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(key.decrypt(&STANDARD.encode(raw)).unwrap_err(), CryptoError::Decrypt);
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }
}
