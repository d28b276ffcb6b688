//! What the last reconcile of each ManagedSecret found its target Secret to hold (or made it hold), so that a
//! refresh that finds the same value needs no read of the Secret: at 10,000 objects a refresh tick was 10,000
//! GETs that answered "as before". The shortcut is taken only when nothing can have changed: the same spec
//! (generation), target and value hash, no rotation policy or rollback (their bookkeeping changes with time),
//! and the Secret at the version keyward last saw — any change by anyone else reaches keyward's watch with a
//! new version, and wakes the object for a full reconcile.

use std::collections::HashMap;
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
    /// The rotation bookkeeping it held: when and why the value last changed, the rotate-now request honoured.
    pub last_rotation: Option<Timestamp>,
    pub last_reason: Option<String>,
    pub rotated_for: Option<String>,
}

/// Settled states by uid.
#[derive(Debug, Default)]
pub struct SettledTargets {
    by_uid: Mutex<HashMap<String, Settled>>,
}

impl SettledTargets {
    /// The state recorded for `uid`, if it still holds: same generation, target and hash, and the Secret still
    /// at the recorded version (`version`: the newest keyward knows of).
    pub fn still(
        &self,
        uid: &str,
        generation: Option<i64>,
        target: &str,
        hash: &str,
        version: Option<&str>,
    ) -> Option<Settled> {
        let map = self.by_uid.lock().ok()?;
        let s = map.get(uid)?;
        (s.generation == generation && s.target == target && s.hash == hash && Some(s.version.as_str()) == version)
            .then(|| s.clone())
    }

    pub fn record(&self, uid: &str, settled: Settled) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.insert(uid.to_string(), settled);
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.remove(uid);
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
            last_rotation: None,
            last_reason: None,
            rotated_for: None,
        };
        t.record("u", s.clone());
        assert_eq!(t.still("u", Some(2), "db", "h1", Some("100")), Some(s));
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
