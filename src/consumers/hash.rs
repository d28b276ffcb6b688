//! The restart hash: what keyward writes on a pod template so that a restart is idempotent by content.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// Pod-template annotation holding [`secrets_hash`] of the managed Secrets the workload consumes. Changing it
/// is the restart; finding it already equal is the proof that nothing needs doing.
pub const SECRETS_HASH_ANNOTATION: &str = "keyward.dev/secrets-hash";

/// `sha256:<hex>` over the sorted, de-duplicated `(secret name, value hash)` pairs of every keyward-managed
/// Secret a workload consumes. The order of `entries` does not matter, so two reconciles (or two replicas)
/// that list the Secrets differently agree. Each field is length-prefixed so that no two different sets of
/// pairs hash the same bytes. Value hashes are already one-way (see the value path), so nothing secret
/// reaches the annotation.
pub fn secrets_hash<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeSet<(&str, &str)> = entries.into_iter().collect();
    let mut h = Sha256::new();
    for (name, value_hash) in sorted {
        for field in [name, value_hash] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shape_and_known_value() {
        let h = secrets_hash([("openai", "hmac-sha256:aa")]);
        assert!(h.starts_with("sha256:"));
        assert_eq!(h.len(), "sha256:".len() + 64);
        // Pinned: a change of encoding would restart every consumer in every cluster on upgrade.
        assert_eq!(
            secrets_hash(std::iter::empty()),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(h, secrets_hash([("openai", "hmac-sha256:aa")]));
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let a = secrets_hash([("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(a, secrets_hash([("c", "3"), ("a", "1"), ("b", "2")]));
        assert_eq!(a, secrets_hash([("c", "3"), ("a", "1"), ("b", "2"), ("a", "1")]));
    }

    #[test]
    fn content_matters() {
        let a = secrets_hash([("a", "1"), ("b", "2")]);
        assert_ne!(a, secrets_hash([("a", "1"), ("b", "3")]));
        assert_ne!(a, secrets_hash([("a", "2"), ("b", "1")]));
        assert_ne!(a, secrets_hash([("a", "1")]));
        // Field boundaries are unambiguous.
        assert_ne!(secrets_hash([("ab", "c")]), secrets_hash([("a", "bc")]));
        assert_ne!(secrets_hash([("a", "b"), ("c", "d")]), secrets_hash([("a", "bcd")]));
    }

    proptest! {
        #[test]
        fn any_permutation_hashes_the_same(
            pairs in proptest::collection::vec(("[a-z-]{1,12}", "[0-9a-f]{0,16}"), 0..8),
            seed in any::<u64>(),
        ) {
            let mut shuffled = pairs.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let a = secrets_hash(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let b = secrets_hash(shuffled.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            prop_assert_eq!(a, b);
        }
    }
}
