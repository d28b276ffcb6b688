//! What the last reconcile of each ManagedSecret found its target Secret to hold (or made it hold), so that a
//! refresh that finds the same value needs no read of the Secret: at 10,000 objects a refresh tick was 10,000
//! GETs that answered "as before". The shortcut is taken only when nothing can have changed: the same spec
//! (generation), target and value hash, no rotation policy or rollback (their bookkeeping changes with time),
//! and the Secret at the version keyward last saw — any change by anyone else reaches keyward's watch with a
//! new version, and wakes the object for a full reconcile.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use jiff::Timestamp;

/// One object's settled state (no values: a hash and bookkeeping times only).
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub generation: Option<i64>,
    pub target: String,
    pub hash: String,
    /// The target Secret's resourceVersion when it was found (or made) to match.
    pub version: String,
    pub book: SettledBook,
}

/// The rotation bookkeeping a settled state held: when and why the value last changed, the rotate-now request
/// honoured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettledBook {
    pub last_rotation: Option<Timestamp>,
    pub last_reason: Option<String>,
    pub rotated_for: Option<String>,
}

/// What is kept of a [`Settled`]: the target and the value hash as one 64-bit digest (a few hundred bytes less
/// per object at 10,000; a digest that matched by chance would still need the Secret's version, unique per
/// object, to match too).
#[derive(Debug)]
struct Kept {
    generation: Option<i64>,
    digest: u64,
    version: String,
    book: SettledBook,
}

/// Settled states by uid (kept under a 64-bit digest of it, with this process's own random keys).
#[derive(Debug, Default)]
pub struct SettledTargets {
    by_uid: Mutex<HashMap<u64, Kept>>,
    keys: RandomState,
}

impl SettledTargets {
    /// The bookkeeping recorded for `uid`, if its state still holds: same generation, target and hash, and the
    /// Secret still at the recorded version (`version`: the newest keyward knows of).
    pub fn still(
        &self,
        uid: &str,
        generation: Option<i64>,
        target: &str,
        hash: &str,
        version: Option<&str>,
    ) -> Option<SettledBook> {
        let map = self.by_uid.lock().ok()?;
        let k = map.get(&self.keys.hash_one(uid))?;
        let same = k.generation == generation
            && k.digest == self.keys.hash_one((target, hash))
            && Some(k.version.as_str()) == version;
        same.then(|| k.book.clone())
    }

    pub fn record(&self, uid: &str, settled: Settled) {
        let kept = Kept {
            generation: settled.generation,
            digest: self.keys.hash_one((settled.target.as_str(), settled.hash.as_str())),
            version: settled.version,
            book: settled.book,
        };
        if let Ok(mut map) = self.by_uid.lock() {
            map.insert(self.keys.hash_one(uid), kept);
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.remove(&self.keys.hash_one(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_state_holds_only_while_nothing_changed() {
        let t = SettledTargets::default();
        let s = Settled {
            generation: Some(2),
            target: "db".into(),
            hash: "h1".into(),
            version: "100".into(),
            book: SettledBook {
                last_reason: Some("Created".into()),
                ..SettledBook::default()
            },
        };
        t.record("u", s.clone());
        assert_eq!(t.still("u", Some(2), "db", "h1", Some("100")), Some(s.book));
        assert!(t.still("u", Some(3), "db", "h1", Some("100")).is_none(), "spec changed");
        assert!(
            t.still("u", Some(2), "db2", "h1", Some("100")).is_none(),
            "target renamed"
        );
        assert!(t.still("u", Some(2), "db", "h2", Some("100")).is_none(), "new value");
        assert!(
            t.still("u", Some(2), "db", "h1", Some("101")).is_none(),
            "the Secret changed"
        );
        assert!(
            t.still("u", Some(2), "db", "h1", None).is_none(),
            "the Secret's version is unknown"
        );
        assert!(t.still("other", Some(2), "db", "h1", Some("100")).is_none());
        t.forget("u");
        assert!(t.still("u", Some(2), "db", "h1", Some("100")).is_none());
    }
}
