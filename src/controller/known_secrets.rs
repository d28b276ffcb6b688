//! Which Secrets exist, as keyward's metadata watch of Secrets shows them — so that a new ManagedSecret's
//! first write need not read a target Secret that is not there (issue 16: the read was a third of keyward's
//! requests per new object).
//!
//! Kept as a set of 64-bit hashes of (namespace, name): about 30 bytes per Secret however long the names. The
//! set only ever says "absent" for a Secret the finished list and the watch since never showed; a wrong answer
//! in either direction is safe — "present" costs a read, and "absent" (a Secret created an instant ago, before
//! its watch event) is caught by the write itself (`target_secret`: the apply is not forced, and one whose
//! answer shows another field manager is taken back at once).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

/// The Secrets the watch shows to exist.
#[derive(Default)]
pub struct KnownSecrets {
    names: Mutex<Names>,
    /// This process's random keys for the digests (a tenant cannot choose names that meet).
    keys: RandomState,
    /// Test-only (`fault-injection`): learn nothing from the watch, so that every first write goes unread.
    blind: bool,
}

#[derive(Default)]
struct Names {
    /// The watch's first list finished: only then does absence from `now` mean anything.
    listed: bool,
    now: HashSet<u64>,
    /// A list in progress (the first, or a re-list after a gap in the watch): replaces `now` when done.
    next: Option<HashSet<u64>>,
}

impl KnownSecrets {
    /// `blind`: see [`KnownSecrets`]'s field; false outside the crash and race tests.
    pub fn new(blind: bool) -> Self {
        KnownSecrets {
            blind,
            ..KnownSecrets::default()
        }
    }

    /// An event of the metadata watch of Secrets (every Secret keyward may fill: the watched namespace or all).
    pub fn observe(&self, event: &Event<PartialObjectMeta<Secret>>) {
        let Ok(mut names) = self.names.lock() else { return };
        match event {
            Event::Init => names.next = Some(HashSet::new()),
            Event::InitApply(s) if !self.blind => {
                let k = self.key_of(s);
                if let Some(next) = names.next.as_mut() {
                    next.insert(k);
                }
                // Also now: a Secret listed before the list ends exists already.
                names.now.insert(k);
            }
            Event::InitDone => {
                if let Some(next) = names.next.take() {
                    names.now = next;
                }
                names.listed = true;
            }
            Event::Apply(s) if !self.blind => {
                let k = self.key_of(s);
                names.now.insert(k);
                if let Some(next) = names.next.as_mut() {
                    next.insert(k);
                }
            }
            Event::Delete(s) => {
                let k = self.key_of(s);
                names.now.remove(&k);
                if let Some(next) = names.next.as_mut() {
                    next.remove(&k);
                }
            }
            Event::InitApply(_) | Event::Apply(_) => {}
        }
    }

    /// keyward itself wrote Secret `name` in `namespace` (before its watch event comes back).
    pub fn wrote(&self, namespace: &str, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            let k = self.key(namespace, name);
            names.now.insert(k);
            if let Some(next) = names.next.as_mut() {
                next.insert(k);
            }
        }
    }

    /// Whether Secret `name` in `namespace` is absent as far as the watch shows: false until the watch's first
    /// list is done.
    pub fn absent(&self, namespace: &str, name: &str) -> bool {
        self.names
            .lock()
            .is_ok_and(|names| names.listed && !names.now.contains(&self.key(namespace, name)))
    }

    fn key(&self, namespace: &str, name: &str) -> u64 {
        self.keys.hash_one((namespace, name))
    }

    fn key_of(&self, secret: &PartialObjectMeta<Secret>) -> u64 {
        self.key(
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ns: &str, name: &str) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn nothing_is_absent_before_the_first_list_is_done() {
        let known = KnownSecrets::new(false);
        assert!(!known.absent("a", "x"), "no list yet: unknown, not absent");
        known.observe(&Event::Init);
        known.observe(&Event::InitApply(secret("a", "x")));
        assert!(!known.absent("a", "y"), "list not done");
        known.observe(&Event::InitDone);
        assert!(!known.absent("a", "x"));
        assert!(known.absent("a", "y"));
        assert!(known.absent("b", "x"), "the namespace is part of the name");
    }

    #[test]
    fn the_watch_and_keywards_own_writes_keep_it_current() {
        let known = KnownSecrets::new(false);
        known.observe(&Event::Init);
        known.observe(&Event::InitDone);
        known.observe(&Event::Apply(secret("a", "x")));
        assert!(!known.absent("a", "x"));
        known.observe(&Event::Delete(secret("a", "x")));
        assert!(known.absent("a", "x"));
        known.wrote("a", "x");
        assert!(
            !known.absent("a", "x"),
            "its own write counts before the watch shows it"
        );
    }

    #[test]
    fn a_relist_replaces_the_set_when_done_and_keeps_what_changes_meanwhile() {
        let known = KnownSecrets::new(false);
        known.observe(&Event::Init);
        known.observe(&Event::InitApply(secret("a", "gone-in-the-gap")));
        known.observe(&Event::InitDone);
        // A gap in the watch: the re-list no longer has it.
        known.observe(&Event::Init);
        known.observe(&Event::InitApply(secret("a", "new-in-the-gap")));
        assert!(!known.absent("a", "new-in-the-gap"), "listed already counts");
        assert!(
            !known.absent("a", "gone-in-the-gap"),
            "until the list is done, present (a read)"
        );
        known.wrote("a", "written-meanwhile");
        known.observe(&Event::InitDone);
        assert!(known.absent("a", "gone-in-the-gap"));
        assert!(!known.absent("a", "new-in-the-gap"));
        assert!(
            !known.absent("a", "written-meanwhile"),
            "a write during the re-list survives it"
        );
    }

    #[test]
    fn a_blind_set_finds_every_secret_absent_once_listed() {
        let known = KnownSecrets::new(true);
        known.observe(&Event::Init);
        known.observe(&Event::InitApply(secret("a", "x")));
        known.observe(&Event::InitDone);
        assert!(known.absent("a", "x"));
    }
}
