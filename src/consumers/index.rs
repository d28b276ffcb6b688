//! The consumer index: which workloads reference which Secrets, in both directions.
//!
//! Built from pod templates as workloads are watched; holds only names (interned, shared `Arc<str>`), never
//! objects, so that its memory per workload stays in the hundreds of bytes (see `benches/consumers.rs`).
//! Every view is sorted, so what the controller does with it is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::mem::size_of;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::discovery::{KeyRefs, WorkloadKind, WorkloadRef, secret_references};

/// Workloads by the Secrets they reference, and the reverse.
#[derive(Debug, Default)]
pub struct ConsumerIndex {
    /// Every namespace, name and key held anywhere below, once.
    strings: HashSet<Arc<str>>,
    /// Interner size at which to drop strings nobody holds any more (see `intern`).
    sweep_at: usize,
    workloads: BTreeMap<WorkloadRef, Entry>,
    /// namespace -> Secret name -> consumers, sorted. A workload only references Secrets in its own
    /// namespace, so edges leave the namespace out. Hash maps, because this is only looked up, never iterated
    /// into a result, so their order cannot leak; a B-tree of `Arc<str>` keys costs a pointer chase per
    /// comparison.
    by_secret: HashMap<Arc<str>, HashMap<Arc<str>, Vec<Edge>>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// Sorted by name.
    secrets: Box<[SecretUse]>,
    opted_out: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct SecretUse {
    name: Arc<str>,
    keys: Keys,
}

#[derive(Debug, PartialEq, Eq)]
enum Keys {
    All,
    /// Sorted.
    Some(Box<[Arc<str>]>),
}

impl Keys {
    fn contains(&self, key: &str) -> bool {
        match self {
            Keys::All => true,
            Keys::Some(keys) => keys.binary_search_by(|k| (**k).cmp(key)).is_ok(),
        }
    }
}

/// One consumer of a Secret, in the Secret's namespace. Ordered like [`WorkloadRef`] within a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    kind: WorkloadKind,
    name: Arc<str>,
    /// Copied from the entry so that lookups need not visit it.
    opted_out: bool,
}

impl ConsumerIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or replaces) what a workload's pod template references. Returns whether anything changed, so
    /// the caller re-plans only when it did.
    pub fn upsert(&mut self, workload: WorkloadRef, template: &PodTemplateSpec, opted_out: bool) -> bool {
        self.upsert_references(workload, secret_references(template), opted_out)
    }

    /// [`upsert`](Self::upsert) from references discovered elsewhere.
    pub fn upsert_references(
        &mut self,
        workload: WorkloadRef,
        references: BTreeMap<String, KeyRefs>,
        opted_out: bool,
    ) -> bool {
        let secrets: Box<[SecretUse]> = references
            .into_iter()
            .map(|(name, keys)| SecretUse {
                name: self.intern(&name),
                keys: match keys {
                    KeyRefs::All => Keys::All,
                    KeyRefs::Keys(keys) => Keys::Some(keys.iter().map(|k| self.intern(k)).collect()),
                },
            })
            .collect();
        let entry = Entry { secrets, opted_out };
        if self.workloads.get(&workload) == Some(&entry) {
            // Interned above, so nothing new was allocated that outlives this call.
            return false;
        }
        let workload = WorkloadRef {
            kind: workload.kind,
            namespace: self.intern(&workload.namespace),
            name: self.intern(&workload.name),
        };
        let mut released = self.unlink(&workload);
        let edge = Edge {
            kind: workload.kind,
            name: workload.name.clone(),
            opted_out,
        };
        let secrets = self.by_secret.entry(workload.namespace.clone()).or_default();
        for s in entry.secrets.iter() {
            let edges = secrets.entry(s.name.clone()).or_default();
            if let Err(at) = edges.binary_search(&edge) {
                // Most Secrets have one or two consumers: grow those exactly rather than to Vec's minimum of
                // four; popular ones grow as usual, to keep inserts amortized.
                if edges.len() < 4 {
                    edges.reserve_exact(1);
                }
                edges.insert(at, edge.clone());
            }
        }
        if let Some(old) = self.workloads.insert(workload, entry) {
            released.extend(into_strings(old));
        }
        self.release(released);
        true
    }

    /// Forgets a workload. Returns whether it was known.
    pub fn remove(&mut self, workload: &WorkloadRef) -> bool {
        let mut released = self.unlink(workload);
        let Some((key, old)) = self.workloads.remove_entry(workload) else {
            return false;
        };
        released.extend(into_strings(old));
        released.extend([key.namespace, key.name]);
        self.release(released);
        true
    }

    /// The workloads that reference `secret` in `namespace` and have not opted out, sorted.
    pub fn consumers_of(&self, namespace: &str, secret: &str) -> Vec<WorkloadRef> {
        self.edges(namespace, secret)
            .filter(|(_, e)| !e.opted_out)
            .map(|(ns, e)| workload_ref(ns, e))
            .collect()
    }

    /// Every workload that references `secret` in `namespace` with its opt-out flag, sorted; for status, which
    /// reports opted-out consumers as skipped rather than leaving them out.
    pub fn all_consumers_of(&self, namespace: &str, secret: &str) -> Vec<(WorkloadRef, bool)> {
        self.edges(namespace, secret)
            .map(|(ns, e)| (workload_ref(ns, e), e.opted_out))
            .collect()
    }

    /// The consumers (not opted out) whose pods can see `key` of `secret`: through `envFrom`, a whole-Secret
    /// volume, a `secretKeyRef` to that key or a volume item of it. For a change that touches only one key,
    /// such as `<key>_PREVIOUS` appearing during a grace period.
    pub fn consumers_of_key(&self, namespace: &str, secret: &str, key: &str) -> Vec<WorkloadRef> {
        self.edges(namespace, secret)
            .filter(|(_, e)| !e.opted_out)
            .map(|(ns, e)| workload_ref(ns, e))
            .filter(|w| self.references_key(w, secret, key))
            .collect()
    }

    /// The Secret names a workload references, sorted; empty for an unknown workload.
    pub fn secrets_of(&self, workload: &WorkloadRef) -> Vec<&str> {
        self.workloads
            .get(workload)
            .map(|e| e.secrets.iter().map(|s| &*s.name).collect())
            .unwrap_or_default()
    }

    /// Whether the workload's pods can see `key` of `secret`.
    pub fn references_key(&self, workload: &WorkloadRef, secret: &str, key: &str) -> bool {
        self.workloads.get(workload).is_some_and(|e| {
            e.secrets
                .binary_search_by(|s| (*s.name).cmp(secret))
                .is_ok_and(|i| e.secrets[i].keys.contains(key))
        })
    }

    /// The opt-out flag of a known workload.
    pub fn is_opted_out(&self, workload: &WorkloadRef) -> Option<bool> {
        self.workloads.get(workload).map(|e| e.opted_out)
    }

    /// Every known workload, sorted.
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadRef> {
        self.workloads.keys()
    }

    /// Number of workloads.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Number of distinct (namespace, Secret) pairs referenced.
    pub fn secret_count(&self) -> usize {
        self.by_secret.values().map(HashMap::len).sum()
    }

    /// An estimate of the heap bytes the index holds: the sizes it allocated (capacities, not lengths), with
    /// B-tree nodes counted at two-thirds full and no allocator overhead. For the benchmark and for sizing.
    pub fn heap_size(&self) -> usize {
        let strings = hash_table_bytes::<Arc<str>>(self.strings.capacity())
            + self.strings.iter().map(|s| arc_str_bytes(s)).sum::<usize>();
        let workloads = btree_bytes::<WorkloadRef, Entry>(self.workloads.len())
            + self
                .workloads
                .values()
                .map(|e| {
                    e.secrets.len() * size_of::<SecretUse>()
                        + e.secrets
                            .iter()
                            .map(|s| match &s.keys {
                                Keys::All => 0,
                                Keys::Some(k) => k.len() * size_of::<Arc<str>>(),
                            })
                            .sum::<usize>()
                })
                .sum::<usize>();
        let by_secret = hash_table_bytes::<(Arc<str>, HashMap<Arc<str>, Vec<Edge>>)>(self.by_secret.capacity())
            + self
                .by_secret
                .values()
                .map(|m| {
                    hash_table_bytes::<(Arc<str>, Vec<Edge>)>(m.capacity())
                        + m.values().map(|v| v.capacity() * size_of::<Edge>()).sum::<usize>()
                })
                .sum::<usize>();
        strings + workloads + by_secret
    }

    fn edges<'a>(&'a self, namespace: &str, secret: &str) -> impl Iterator<Item = (&'a Arc<str>, &'a Edge)> {
        self.by_secret
            .get_key_value(namespace)
            .and_then(|(ns, m)| m.get(secret).map(|edges| (ns, edges)))
            .into_iter()
            .flat_map(|(ns, edges)| edges.iter().map(move |e| (ns, e)))
    }

    /// Removes the workload's edges; returns the strings that may have lost their last user.
    fn unlink(&mut self, workload: &WorkloadRef) -> Vec<Arc<str>> {
        let mut released = Vec::new();
        let Some(entry) = self.workloads.get(workload) else {
            return released;
        };
        let Some(secrets) = self.by_secret.get_mut(&*workload.namespace) else {
            return released;
        };
        for s in entry.secrets.iter() {
            let Some(edges) = secrets.get_mut(&s.name) else {
                continue;
            };
            edges.retain(|e| !(e.kind == workload.kind && e.name == workload.name));
            if edges.is_empty() {
                if let Some((name, _)) = secrets.remove_entry(&s.name) {
                    released.push(name);
                }
            } else if edges.len() * 4 <= edges.capacity() {
                // A popular Secret whose consumers went away should not keep its peak capacity.
                edges.shrink_to_fit();
            }
        }
        if secrets.is_empty()
            && let Some((ns, _)) = self.by_secret.remove_entry(&*workload.namespace)
        {
            released.push(ns);
        }
        released
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        // `release` misses strings that a caller (the planner, say) still held at the time; sweep them once
        // the interner has doubled, which keeps the cost amortized O(1) per string.
        if self.strings.len() >= self.sweep_at {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.sweep_at = (self.strings.len() * 2).max(1024);
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    /// Drops interned strings that nothing but the interner (and `candidates`) still holds.
    fn release(&mut self, candidates: Vec<Arc<str>>) {
        // De-duplicated, so each string is held exactly once by the set and once by the interner when unused.
        let candidates: BTreeSet<Arc<str>> = candidates.into_iter().collect();
        for s in candidates {
            if Arc::strong_count(&s) == 2 {
                self.strings.remove(&s);
            }
        }
    }
}

fn workload_ref(namespace: &Arc<str>, e: &Edge) -> WorkloadRef {
    WorkloadRef {
        kind: e.kind,
        namespace: namespace.clone(),
        name: e.name.clone(),
    }
}

/// Moves the strings out, so that the entry's own references are gone when `release` counts.
fn into_strings(e: Entry) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    for s in e.secrets {
        out.push(s.name);
        if let Keys::Some(keys) = s.keys {
            out.extend(keys);
        }
    }
    out
}

/// An `Arc<str>` allocation: two counters and the bytes.
fn arc_str_bytes(s: &str) -> usize {
    2 * size_of::<usize>() + s.len()
}

/// A hashbrown table: one slot and one control byte per bucket; buckets are a power of two holding
/// `capacity` at 7/8 load.
fn hash_table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (size_of::<T>() + 1)
}

/// std's B-tree keeps up to 11 entries per node; count nodes at two-thirds full, plus a parent pointer and
/// lengths per node.
fn btree_bytes<K, V>(len: usize) -> usize {
    const PER_NODE: usize = 11;
    let nodes = (len * 3).div_ceil(2 * PER_NODE);
    nodes * (PER_NODE * (size_of::<K>() + size_of::<V>()) + 2 * size_of::<usize>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(secrets_env: &[&str], secrets_vol: &[&str]) -> PodTemplateSpec {
        let env: Vec<_> = secrets_env
            .iter()
            .map(|s| json!({"name": "E", "valueFrom": {"secretKeyRef": {"name": s, "key": "K"}}}))
            .collect();
        let volumes: Vec<_> = secrets_vol
            .iter()
            .map(|s| json!({"name": s, "secret": {"secretName": s}}))
            .collect();
        serde_json::from_value(json!({"spec": {"containers": [{"name": "a", "env": env}], "volumes": volumes}}))
            .unwrap()
    }

    fn dep(ns: &str, name: &str) -> WorkloadRef {
        WorkloadRef::new(WorkloadKind::Deployment, ns, name)
    }

    #[test]
    fn both_directions_sorted() {
        let mut ix = ConsumerIndex::new();
        assert!(ix.upsert(dep("a", "web"), &template(&["db", "api"], &[]), false));
        assert!(ix.upsert(
            WorkloadRef::new(WorkloadKind::StatefulSet, "a", "db"),
            &template(&[], &["db"]),
            false
        ));
        assert!(ix.upsert(dep("a", "batch"), &template(&["db"], &[]), false));
        assert!(ix.upsert(dep("b", "web"), &template(&["db"], &[]), false));

        assert_eq!(
            ix.consumers_of("a", "db"),
            vec![
                dep("a", "batch"),
                dep("a", "web"),
                WorkloadRef::new(WorkloadKind::StatefulSet, "a", "db")
            ]
        );
        assert_eq!(ix.consumers_of("b", "db"), vec![dep("b", "web")]);
        assert!(ix.consumers_of("c", "db").is_empty());
        assert!(ix.consumers_of("a", "nope").is_empty());
        assert_eq!(ix.secrets_of(&dep("a", "web")), vec!["api", "db"]);
        assert!(ix.secrets_of(&dep("a", "unknown")).is_empty());
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.secret_count(), 3);
        assert_eq!(
            ix.workloads().map(|w| w.to_string()).collect::<Vec<_>>(),
            [
                "Deployment/a/batch",
                "Deployment/a/web",
                "Deployment/b/web",
                "StatefulSet/a/db"
            ]
        );
    }

    #[test]
    fn upsert_replaces_and_reports_changes() {
        let mut ix = ConsumerIndex::new();
        assert!(ix.upsert(dep("a", "web"), &template(&["one", "two"], &[]), false));
        assert!(!ix.upsert(dep("a", "web"), &template(&["two", "one"], &[]), false));
        assert!(ix.upsert(dep("a", "web"), &template(&["two", "three"], &[]), false));
        assert!(ix.consumers_of("a", "one").is_empty());
        assert_eq!(ix.consumers_of("a", "three"), vec![dep("a", "web")]);
        assert_eq!(ix.secret_count(), 2);
        // Flag changes count as changes.
        assert!(ix.upsert(dep("a", "web"), &template(&["two", "three"], &[]), true));
    }

    #[test]
    fn opted_out_are_excluded_or_flagged() {
        let mut ix = ConsumerIndex::new();
        ix.upsert(dep("a", "in"), &template(&["s"], &[]), false);
        ix.upsert(dep("a", "out"), &template(&["s"], &[]), true);
        assert_eq!(ix.consumers_of("a", "s"), vec![dep("a", "in")]);
        assert_eq!(
            ix.all_consumers_of("a", "s"),
            vec![(dep("a", "in"), false), (dep("a", "out"), true)]
        );
        assert_eq!(ix.is_opted_out(&dep("a", "out")), Some(true));
        assert_eq!(ix.is_opted_out(&dep("a", "x")), None);
        // Opting back in.
        ix.upsert(dep("a", "out"), &template(&["s"], &[]), false);
        assert_eq!(ix.consumers_of("a", "s").len(), 2);
    }

    #[test]
    fn key_level_references() {
        let mut ix = ConsumerIndex::new();
        ix.upsert(dep("a", "env"), &template(&["s"], &[]), false); // key K only
        ix.upsert(dep("a", "vol"), &template(&[], &["s"]), false); // all keys
        assert_eq!(
            ix.consumers_of_key("a", "s", "K"),
            vec![dep("a", "env"), dep("a", "vol")]
        );
        assert_eq!(ix.consumers_of_key("a", "s", "K_PREVIOUS"), vec![dep("a", "vol")]);
        assert!(ix.references_key(&dep("a", "env"), "s", "K"));
        assert!(!ix.references_key(&dep("a", "env"), "other", "K"));
    }

    #[test]
    fn remove_frees_everything() {
        let mut ix = ConsumerIndex::new();
        ix.upsert(dep("a", "web"), &template(&["x", "y"], &["z"]), false);
        ix.upsert(dep("b", "web"), &template(&["x"], &[]), false);
        assert!(ix.remove(&dep("a", "web")));
        assert!(!ix.remove(&dep("a", "web")));
        assert!(ix.consumers_of("a", "x").is_empty());
        assert_eq!(ix.consumers_of("b", "x"), vec![dep("b", "web")]);
        // Only namespace b, its workload name, secret x and key K remain interned.
        let mut left: Vec<&str> = ix.strings.iter().map(|s| &**s).collect();
        left.sort();
        assert_eq!(left, ["K", "b", "web", "x"]);
        assert!(ix.remove(&dep("b", "web")));
        assert!(ix.is_empty());
        assert!(ix.strings.is_empty());
        assert!(ix.by_secret.is_empty());
    }

    #[test]
    fn strings_are_shared() {
        let mut ix = ConsumerIndex::new();
        for i in 0..10 {
            ix.upsert(dep("ns", &format!("w{i}")), &template(&["shared"], &[]), false);
        }
        // ns, shared, K and ten names.
        assert_eq!(ix.strings.len(), 13);
        let a = ix.consumers_of("ns", "shared");
        assert!(Arc::ptr_eq(&a[0].namespace, &a[9].namespace));
        assert!(ix.heap_size() > 0);
    }

    #[test]
    fn strings_a_caller_still_held_are_swept_later() {
        let mut ix = ConsumerIndex::new();
        ix.upsert(dep("gone", "web"), &template(&["s"], &[]), false);
        // The planner, say, keeps the reference while the workload is removed.
        let held = ix.consumers_of("gone", "s");
        ix.remove(&dep("gone", "web"));
        assert!(ix.strings.contains("gone"));
        drop(held);
        for i in 0..2000 {
            ix.upsert(dep("ns", &format!("w{i}")), &template(&[], &[]), false);
        }
        assert!(!ix.strings.contains("gone"));
        assert!(!ix.strings.contains("web"));
    }

    /// The index agrees with a naive model after any sequence of upserts and removes.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Upsert(u8, u8, Vec<u8>, bool),
            Remove(u8, u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u8..3, 0u8..6, proptest::collection::vec(0u8..8, 0..5), any::<bool>())
                    .prop_map(|(n, w, s, o)| Op::Upsert(n, w, s, o)),
                1 => (0u8..3, 0u8..6).prop_map(|(n, w)| Op::Remove(n, w)),
            ]
        }

        proptest! {
            #[test]
            fn matches_model(ops in proptest::collection::vec(op(), 0..60)) {
                let mut ix = ConsumerIndex::new();
                let mut model: BTreeMap<WorkloadRef, (BTreeSet<String>, bool)> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Upsert(n, w, s, o) => {
                            let w = dep(&format!("ns{n}"), &format!("w{w}"));
                            let names: Vec<String> = s.iter().map(|i| format!("s{i}")).collect();
                            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                            ix.upsert(w.clone(), &template(&refs, &[]), o);
                            model.insert(w, (names.into_iter().collect(), o));
                        }
                        Op::Remove(n, w) => {
                            let w = dep(&format!("ns{n}"), &format!("w{w}"));
                            prop_assert_eq!(ix.remove(&w), model.remove(&w).is_some());
                        }
                    }
                }
                for n in 0..3 {
                    for s in 0..8 {
                        let (ns, secret) = (format!("ns{n}"), format!("s{s}"));
                        let expected: Vec<WorkloadRef> = model
                            .iter()
                            .filter(|(w, (ss, o))| *w.namespace == *ns && ss.contains(&secret) && !o)
                            .map(|(w, _)| w.clone())
                            .collect();
                        prop_assert_eq!(ix.consumers_of(&ns, &secret), expected);
                    }
                }
                for (w, (ss, _)) in &model {
                    prop_assert_eq!(ix.secrets_of(w), ss.iter().map(String::as_str).collect::<Vec<_>>());
                }
                prop_assert_eq!(ix.len(), model.len());
                // Nothing leaks: every interned string is still in use.
                let used: BTreeSet<String> = model
                    .iter()
                    .flat_map(|(w, (ss, _))| {
                        let mut v = vec![w.namespace.to_string(), w.name.to_string()];
                        v.extend(ss.iter().cloned());
                        if !ss.is_empty() { v.push("K".to_string()); }
                        v
                    })
                    .collect();
                let interned: BTreeSet<String> = ix.strings.iter().map(|s| s.to_string()).collect();
                prop_assert_eq!(interned, used);
            }
        }
    }
}
