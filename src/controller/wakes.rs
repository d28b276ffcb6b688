//! What wakes a reconcile, kept cheap at scale: a change of a ManagedSecret that can change what its reconcile
//! does (not the echo of keyward's own status write), a change of a Secret keyward fills that keyward did not
//! make itself, and a change of a Secret a ManagedSecret reads (found through an index, not a scan of every
//! ManagedSecret). Also what waits: the objects woken and not started yet (`keyward_reconcile_queue_depth`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::gauge::Gauge;

use super::known_secrets::KnownSecrets;
use super::settled::SettledTargets;
use super::status_writes::{StatusWrites, compare_resource_versions};
use crate::api::ManagedSecret;

/// What about a ManagedSecret can change its reconcile: its spec (generation), labels and annotations
/// (refresh-now and rotate-now requests), deletion, and the restart task's report (`status.consumers`, which
/// the Ready and ConsumersUpdated conditions summarise). Everything else in status is the reconcile's own
/// write coming back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fingerprint(u64);

impl Fingerprint {
    fn of(ms: &ManagedSecret) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ms.metadata.uid.hash(&mut h);
        ms.metadata.generation.hash(&mut h);
        ms.metadata.labels.hash(&mut h);
        ms.metadata.annotations.hash(&mut h);
        ms.metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .hash(&mut h);
        // No status and a status without consumers say the same.
        if let Some(consumers) = ms.status.as_ref().map(|s| &s.consumers).filter(|c| !c.is_empty()) {
            serde_json::to_string(consumers).unwrap_or_default().hash(&mut h);
        }
        Fingerprint(h.finish())
    }
}

/// The reference by which a ManagedSecret is queued, scheduled and counted: its namespace and name only.
/// kube's `ObjectRef::from_obj` also carries the object's uid and resourceVersion (two strings more, kept twice
/// by the controller's scheduler for each object's next refresh); references compare by name alone either way.
pub fn reference(ms: &ManagedSecret) -> ObjectRef<ManagedSecret> {
    let name = ObjectRef::new(&ms.name_any());
    match ms.metadata.namespace.as_deref() {
        Some(ns) => name.within(ns),
        None => name,
    }
}

/// Writes of one Secret in flight, and the newest version the watch showed meanwhile.
type InFlight = (u32, Option<String>);

/// One write of a Secret in flight (from [`Wakes::writing_secret`]); ends when dropped.
pub struct Flight<'a> {
    wakes: &'a Wakes,
    namespace: String,
    name: String,
    open: bool,
}

impl Flight<'_> {
    /// The write succeeded and the API server answered with `version`. True when the watch showed a newer
    /// version while the write was in flight: someone changed the Secret after it, and the writer should look
    /// again.
    pub fn wrote(mut self, version: Option<String>) -> bool {
        self.open = false;
        self.wakes.wrote_secret(&self.namespace, &self.name, version)
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.open {
            self.wakes.landed(&self.namespace, &self.name);
        }
    }
}

/// Decides which ManagedSecret events wake a reconcile, and indexes who reads which Secret.
#[derive(Default)]
pub struct Wakes {
    /// uid digest → its fingerprint (which holds the uid: two objects whose digests met never look unchanged).
    seen: Mutex<HashMap<u64, Fingerprint>>,
    /// (namespace, Secret name) → the ManagedSecrets whose `source.kubernetesSecret` names it.
    readers: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    /// uid → the (namespace, Secret) it reads, to update the index when its spec changes.
    reads: Mutex<HashMap<String, (String, String)>>,
    /// (namespace, Secret name), as a digest → the resourceVersion keyward's own last write of it produced.
    written: Mutex<HashMap<u64, String>>,
    /// (namespace, Secret name) → keyward's writes of it in flight, and the newest version the watch showed
    /// meanwhile (the watch may deliver a write before its answer arrives).
    in_flight: Mutex<HashMap<(String, String), InFlight>>,
    /// (namespace, Secret name), as a digest → the newest resourceVersion keyward knows of a Secret it wrote or
    /// read: from its writes, its reads and the watch.
    versions: Mutex<HashMap<u64, String>>,
    /// This process's random keys for the 64-bit digests `seen`, `written` and `versions` are keyed by (of a
    /// uid, or of a Secret's namespace and name): a few dozen bytes less per object than the strings. Two
    /// Secrets whose digests met could not pass for each other: those maps hold resourceVersions, which no two
    /// objects share.
    keys: RandomState,
    /// What each object's last reconcile found its target to hold (forgotten with the object).
    pub settled: SettledTargets,
    /// Status writes the cache has not delivered yet (forgotten once it does, or with the object).
    pub statuses: StatusWrites,
    /// Which Secrets exist, as the watch shows them.
    pub secrets: KnownSecrets,
    /// Objects woken and not started yet.
    pending: Mutex<HashSet<ObjectRef<ManagedSecret>>>,
    queue_depth: Gauge,
}

impl Wakes {
    /// `queue_depth`: the gauge that shows how many woken objects wait; `secrets`: see [`KnownSecrets`].
    pub fn new(queue_depth: Gauge, secrets: KnownSecrets) -> Self {
        Wakes {
            queue_depth,
            secrets,
            ..Wakes::default()
        }
    }

    /// A ManagedSecret as the watch delivered it (created or changed): whether it should be reconciled. The
    /// first sight of an object always is.
    pub fn changed(&self, ms: &ManagedSecret) -> bool {
        self.index(ms);
        self.statuses.delivered(ms);
        let Some(uid) = ms.uid() else { return true };
        let now = Fingerprint::of(ms);
        let Ok(mut seen) = self.seen.lock() else { return true };
        seen.insert(self.keys.hash_one(&uid), now.clone())
            .is_none_or(|before| before != now)
    }

    /// A ManagedSecret is gone.
    pub fn deleted(&self, ms: &ManagedSecret) {
        let Some(uid) = ms.uid() else { return };
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&self.keys.hash_one(&uid));
        }
        self.settled.forget(&uid);
        self.statuses.forget(&uid);
        self.unindex(&uid, &ms.name_any());
    }

    fn index(&self, ms: &ManagedSecret) {
        let Some(uid) = ms.uid() else { return };
        let reads = ms
            .spec
            .source
            .kubernetes_secret
            .as_ref()
            .map(|k| (ms.namespace().unwrap_or_default(), k.name.clone()));
        let before = self.reads.lock().ok().and_then(|r| r.get(&uid).cloned());
        if before == reads {
            return;
        }
        self.unindex(&uid, &ms.name_any());
        if let Some(key) = reads
            && let (Ok(mut readers), Ok(mut all)) = (self.readers.lock(), self.reads.lock())
        {
            readers.entry(key.clone()).or_default().insert(ms.name_any());
            all.insert(uid, key);
        }
    }

    fn unindex(&self, uid: &str, name: &str) {
        let (Ok(mut readers), Ok(mut all)) = (self.readers.lock(), self.reads.lock()) else {
            return;
        };
        if let Some(key) = all.remove(uid)
            && let Some(set) = readers.get_mut(&key)
        {
            set.remove(name);
            if set.is_empty() {
                readers.remove(&key);
            }
        }
    }

    /// The ManagedSecrets that read Secret `name` in `namespace`.
    pub fn readers_of(&self, namespace: &str, name: &str) -> Vec<ObjectRef<ManagedSecret>> {
        let Ok(readers) = self.readers.lock() else {
            return Vec::new();
        };
        readers
            .get(&(namespace.to_string(), name.to_string()))
            .map(|set| set.iter().map(|n| ObjectRef::new(n).within(namespace)).collect())
            .unwrap_or_default()
    }

    /// keyward is about to write Secret `name` in `namespace`: while the returned [`Flight`] lives, its watch
    /// events wake nobody who fills it (the write's answer decides). Dropped without [`Flight::wrote`] (the
    /// write failed, or the reconcile was cancelled while it waited), the flight simply ends.
    pub fn writing_secret(&self, namespace: &str, name: &str) -> Flight<'_> {
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight
                .entry((namespace.to_string(), name.to_string()))
                .or_insert((0, None))
                .0 += 1;
        }
        Flight {
            wakes: self,
            namespace: namespace.to_string(),
            name: name.to_string(),
            open: true,
        }
    }

    /// The write in flight is over: the newest version the watch showed meanwhile.
    fn landed(&self, namespace: &str, name: &str) -> Option<String> {
        let mut in_flight = self.in_flight.lock().ok()?;
        let key = (namespace.to_string(), name.to_string());
        let entry = in_flight.get_mut(&key)?;
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            return in_flight.remove(&key).and_then(|(_, seen)| seen);
        }
        entry.1.clone()
    }

    /// keyward wrote Secret `name` in `namespace` (its flight ended); the API server answered with `version`.
    /// True when the watch showed a newer version while the write was in flight.
    fn wrote_secret(&self, namespace: &str, name: &str, version: Option<String>) -> bool {
        let seen = self.landed(namespace, name);
        let newer = match (&seen, &version) {
            (Some(seen), Some(v)) => compare_resource_versions(seen, v).is_none_or(|o| o.is_gt()),
            (Some(_), None) => true,
            (None, _) => false,
        };
        self.secrets.wrote(namespace, name);
        let key = self.keys.hash_one((namespace, name));
        if let Ok(mut written) = self.written.lock() {
            match &version {
                Some(v) => written.insert(key, v.clone()),
                None => written.remove(&key),
            };
        }
        self.read_secret(namespace, name, version);
        newer
    }

    /// keyward read Secret `name` in `namespace` at `version` (None: it does not exist).
    pub fn read_secret(&self, namespace: &str, name: &str, version: Option<String>) {
        if let Ok(mut versions) = self.versions.lock() {
            let key = self.keys.hash_one((namespace, name));
            match version {
                Some(v) => versions.insert(key, v),
                None => versions.remove(&key),
            };
        }
    }

    /// The watch delivered Secret `name` in `namespace` at `version` (a change, or its deletion): the newest
    /// version known, for a Secret keyward wrote or read (others are not kept).
    pub fn saw_secret(&self, namespace: &str, name: &str, version: Option<&str>) {
        if let Ok(mut versions) = self.versions.lock()
            && let Some(known) = versions.get_mut(&self.keys.hash_one((namespace, name)))
        {
            match version {
                Some(v) => v.clone_into(known),
                None => known.clear(),
            }
        }
    }

    /// The newest resourceVersion keyward knows of Secret `name` in `namespace`.
    pub fn known_version(&self, namespace: &str, name: &str) -> Option<String> {
        let versions = self.versions.lock().ok()?;
        versions
            .get(&self.keys.hash_one((namespace, name)))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    /// Whether the Secret at `version` is keyward's own last write (its watch event then wakes nobody who
    /// fills it: the reconcile that wrote it already knows). A change by anyone else has another version.
    /// A Secret with a write of keyward's in flight counts as its own write; the write's answer tells.
    pub fn is_own_write(&self, namespace: &str, name: &str, version: Option<&str>) -> bool {
        if let Ok(mut in_flight) = self.in_flight.lock()
            && let Some((_, seen)) = in_flight.get_mut(&(namespace.to_string(), name.to_string()))
        {
            if let Some(v) = version
                && seen
                    .as_deref()
                    .is_none_or(|s| compare_resource_versions(v, s).is_none_or(|o| o.is_gt()))
            {
                *seen = Some(v.to_string());
            }
            return true;
        }
        let Ok(written) = self.written.lock() else {
            return false;
        };
        version.is_some() && written.get(&self.keys.hash_one((namespace, name))).map(String::as_str) == version
    }

    /// These objects were woken.
    pub fn asked(&self, objects: impl IntoIterator<Item = ObjectRef<ManagedSecret>>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.extend(objects);
            self.queue_depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        }
    }

    /// A reconcile of `ms` started.
    pub fn started(&self, ms: &ManagedSecret) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&reference(ms));
            self.queue_depth.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerState, ConsumerStatus, KubernetesSecretSource, ManagedSecretStatus, WorkloadKind};

    fn ms(name: &str, uid: &str, reads: Option<&str>) -> ManagedSecret {
        let mut m = ManagedSecret::new(name, Default::default());
        m.metadata.namespace = Some("ns".into());
        m.metadata.uid = Some(uid.into());
        m.metadata.generation = Some(1);
        m.spec.source.kubernetes_secret = reads.map(|r| KubernetesSecretSource {
            name: r.into(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn only_changes_that_matter_wake_a_reconcile() {
        let w = Wakes::default();
        let mut a = ms("a", "u1", None);
        assert!(w.changed(&a), "first sight");
        // keyward's own status write coming back: conditions, times, hashes.
        a.status = Some(ManagedSecretStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        assert!(!w.changed(&a));
        // The restart task's report does wake it.
        a.status.as_mut().unwrap().consumers.push(ConsumerStatus {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
            secrets_hash: None,
            state: ConsumerState::Rolling,
            message: None,
            failed_value_hash: None,
        });
        assert!(w.changed(&a));
        a.metadata.generation = Some(2);
        assert!(w.changed(&a), "spec change");
        a.metadata.annotations = Some([("keyward.dev/refresh".to_string(), "1".to_string())].into());
        assert!(w.changed(&a), "a refresh-now request");
        assert!(!w.changed(&a));
        w.deleted(&a);
        assert!(w.changed(&a), "seen again after a delete: a new object");
    }

    #[test]
    fn readers_are_indexed_and_follow_spec_changes() {
        let w = Wakes::default();
        w.changed(&ms("a", "u1", Some("src")));
        w.changed(&ms("b", "u2", Some("src")));
        w.changed(&ms("c", "u3", None));
        let names = |v: Vec<ObjectRef<ManagedSecret>>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(w.readers_of("ns", "src")), ["a", "b"]);
        assert!(w.readers_of("other", "src").is_empty());
        w.changed(&ms("a", "u1", Some("elsewhere")));
        assert_eq!(names(w.readers_of("ns", "src")), ["b"]);
        assert_eq!(names(w.readers_of("ns", "elsewhere")), ["a"]);
        w.deleted(&ms("b", "u2", Some("src")));
        assert!(w.readers_of("ns", "src").is_empty());
    }

    #[test]
    fn own_writes_are_known_by_version() {
        let w = Wakes::default();
        assert!(!w.writing_secret("ns", "s").wrote(Some("10".into())));
        assert!(w.is_own_write("ns", "s", Some("10")));
        assert!(!w.is_own_write("ns", "s", Some("11")), "someone else's change");
        assert!(!w.is_own_write("ns", "s", None));
        assert!(!w.is_own_write("ns", "t", Some("10")));
    }

    #[test]
    fn a_write_whose_event_comes_before_its_answer_wakes_nobody() {
        let w = Wakes::default();
        let flight = w.writing_secret("ns", "s");
        assert!(w.is_own_write("ns", "s", Some("10")), "in flight: the answer decides");
        assert!(!flight.wrote(Some("10".into())), "it was this write");
        assert!(
            !w.is_own_write("ns", "s", Some("11")),
            "landed: a later change is someone else's"
        );
    }

    #[test]
    fn a_change_right_after_a_write_in_flight_asks_for_another_look() {
        let w = Wakes::default();
        let flight = w.writing_secret("ns", "s");
        assert!(w.is_own_write("ns", "s", Some("10")));
        assert!(w.is_own_write("ns", "s", Some("12")));
        assert!(
            w.is_own_write("ns", "s", Some("11")),
            "older than the newest seen: kept as 12"
        );
        assert!(flight.wrote(Some("10".into())), "12 came after the write's 10");
        // Two writers of one Secret (several ManagedSecrets fill it): in flight until both land.
        let (first, second) = (w.writing_secret("ns", "t"), w.writing_secret("ns", "t"));
        drop(first);
        assert!(w.is_own_write("ns", "t", Some("20")), "the other is still in flight");
        assert!(!second.wrote(Some("20".into())));
        assert!(!w.is_own_write("ns", "t", Some("21")), "none in flight");
    }

    #[test]
    fn a_flight_dropped_unanswered_ends() {
        // A failed write, or a reconcile cancelled while its write waited (leadership lost): no mark is left
        // that would hide the Secret's later changes.
        let w = Wakes::default();
        drop(w.writing_secret("ns", "s"));
        assert!(!w.is_own_write("ns", "s", Some("3")));
    }

    #[test]
    fn the_newest_version_known_follows_writes_reads_and_the_watch() {
        let w = Wakes::default();
        w.saw_secret("ns", "s", Some("5"));
        assert_eq!(
            w.known_version("ns", "s"),
            None,
            "a Secret keyward never touched is not kept"
        );
        w.read_secret("ns", "s", Some("5".into()));
        assert_eq!(w.known_version("ns", "s").as_deref(), Some("5"));
        w.wrote_secret("ns", "s", Some("7".into()));
        assert_eq!(w.known_version("ns", "s").as_deref(), Some("7"));
        w.saw_secret("ns", "s", Some("9"));
        assert_eq!(
            w.known_version("ns", "s").as_deref(),
            Some("9"),
            "someone else's change"
        );
        w.saw_secret("ns", "s", None);
        assert_eq!(w.known_version("ns", "s"), None);
        w.read_secret("ns", "s", None);
        assert_eq!(w.known_version("ns", "s"), None);
    }

    #[test]
    fn the_queue_counts_woken_objects_once_until_they_start() {
        let gauge = Gauge::default();
        let w = Wakes::new(gauge.clone(), KnownSecrets::default());
        let a = ms("a", "u1", None);
        w.asked([ObjectRef::from_obj(&a), ObjectRef::from_obj(&a)]);
        w.asked([ObjectRef::from_obj(&ms("b", "u2", None))]);
        assert_eq!(gauge.get(), 2);
        w.started(&a);
        assert_eq!(gauge.get(), 1);
    }
}
