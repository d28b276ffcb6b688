//! Which Secrets a workload's pod template references, and which of their keys.
//!
//! Pure functions over `PodTemplateSpec`: the controller feeds them from a watch of Deployments, StatefulSets
//! and DaemonSets and keeps the result in the [`ConsumerIndex`](super::index::ConsumerIndex).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, KeyToPath, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use crate::api::{UnknownKind, WorkloadKind};

/// Annotation on a workload's own metadata; `"false"` opts it out of keyward restarts.
pub const RESTART_ANNOTATION: &str = "keyward.dev/restart";

/// One workload. Names are shared strings so that the index and the planner hold references, not copies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl WorkloadRef {
    pub fn new(kind: WorkloadKind, namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        WorkloadRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Which keys of one Secret a pod template uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefs {
    /// `envFrom`, or a volume without `items`: every key, including ones added later.
    All,
    /// Only these keys (`secretKeyRef.key`, volume `items[].key`).
    Keys(BTreeSet<String>),
}

impl KeyRefs {
    /// Whether a change of `key` can reach the pods.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRefs::All => true,
            KeyRefs::Keys(keys) => keys.contains(key),
        }
    }

    fn add_all(&mut self) {
        *self = KeyRefs::All;
    }

    fn add_key(&mut self, key: &str) {
        if let KeyRefs::Keys(keys) = self {
            keys.insert(key.to_string());
        }
    }
}

/// The Secret names a pod template references (env, envFrom, secret and projected volumes; all container
/// lists), sorted.
pub fn referenced_secrets(spec: &PodTemplateSpec) -> BTreeSet<String> {
    secret_references(spec).into_keys().collect()
}

/// The Secrets a pod template references and which of their keys, sorted by Secret name.
///
/// `imagePullSecrets` are not consumers (only the kubelet reads them, at pull time), nor are CSI
/// `nodePublishSecretRef`s (the driver reads them at mount time), so neither is listed.
pub fn secret_references(spec: &PodTemplateSpec) -> BTreeMap<String, KeyRefs> {
    let mut refs = Refs::default();
    let Some(pod) = &spec.spec else {
        return refs.0;
    };
    for c in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
        refs.env(c.env.as_deref(), c.env_from.as_deref());
    }
    for c in pod.ephemeral_containers.iter().flatten() {
        refs.env(c.env.as_deref(), c.env_from.as_deref());
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            refs.items(name, s.items.as_deref());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &p.secret {
                refs.items(&s.name, s.items.as_deref());
            }
        }
    }
    refs.0
}

/// The Secrets a pod template references with `optional: true` (env, envFrom, secret and projected volumes),
/// sorted. Pods start without such a Secret when it does not exist yet, and never see it later unless restarted
/// (the kubelet resolves env at container start); a required reference instead holds the container back until
/// the Secret exists.
pub fn optional_secret_references(spec: &PodTemplateSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(pod) = &spec.spec else {
        return names;
    };
    let mut add = |name: &str, optional: Option<bool>| {
        if optional == Some(true) && !name.is_empty() {
            names.insert(name.to_string());
        }
    };
    let containers = pod.containers.iter().chain(pod.init_containers.iter().flatten());
    let envs = containers.map(|c| (c.env.as_deref(), c.env_from.as_deref())).chain(
        pod.ephemeral_containers
            .iter()
            .flatten()
            .map(|c| (c.env.as_deref(), c.env_from.as_deref())),
    );
    for (env, env_from) in envs {
        for sel in env
            .into_iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        {
            add(&sel.name, sel.optional);
        }
        for s in env_from.into_iter().flatten().filter_map(|e| e.secret_ref.as_ref()) {
            add(&s.name, s.optional);
        }
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(s) = &v.secret {
            add(s.secret_name.as_deref().unwrap_or_default(), s.optional);
        }
        for s in v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|p| p.secret.as_ref())
        {
            add(&s.name, s.optional);
        }
    }
    names
}

/// Whether the workload's metadata opts it out of restarts (`keyward.dev/restart: "false"`).
pub fn restart_opted_out(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

#[derive(Default)]
struct Refs(BTreeMap<String, KeyRefs>);

impl Refs {
    fn entry(&mut self, name: &str) -> Option<&mut KeyRefs> {
        // An empty name is invalid in the API; skipping it keeps garbage out of the index.
        if name.is_empty() {
            return None;
        }
        if !self.0.contains_key(name) {
            self.0.insert(name.to_string(), KeyRefs::Keys(BTreeSet::new()));
        }
        self.0.get_mut(name)
    }

    fn env(&mut self, env: Option<&[EnvVar]>, env_from: Option<&[EnvFromSource]>) {
        for e in env.into_iter().flatten() {
            if let Some(sel) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())
                && let Some(keys) = self.entry(&sel.name)
            {
                keys.add_key(&sel.key);
            }
        }
        for e in env_from.into_iter().flatten() {
            if let Some(s) = &e.secret_ref
                && let Some(keys) = self.entry(&s.name)
            {
                keys.add_all();
            }
        }
    }

    fn items(&mut self, name: &str, items: Option<&[KeyToPath]>) {
        let Some(keys) = self.entry(name) else {
            return;
        };
        match items {
            // No items (or an empty list, which the API treats the same) projects every key.
            None | Some([]) => keys.add_all(),
            Some(items) => {
                for i in items {
                    keys.add_key(&i.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({ "spec": spec })).unwrap()
    }

    fn keys(ks: &[&str]) -> KeyRefs {
        KeyRefs::Keys(ks.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn optional_references_are_told_apart() {
        let t = template(json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "opt-env", "key": "A", "optional": true}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "req-env", "key": "B", "optional": false}}}
                ],
                "envFrom": [{"secretRef": {"name": "opt-from", "optional": true}}, {"secretRef": {"name": "req-from"}}]
            }],
            "ephemeralContainers": [{"name": "debug", "envFrom": [{"secretRef": {"name": "opt-eph", "optional": true}}]}],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "opt-vol", "optional": true}},
                {"name": "v2", "secret": {"secretName": "req-vol"}},
                {"name": "v3", "projected": {"sources": [{"secret": {"name": "opt-proj", "optional": true}}]}}
            ]
        }));
        let names: Vec<String> = optional_secret_references(&t).into_iter().collect();
        assert_eq!(names, ["opt-env", "opt-eph", "opt-from", "opt-proj", "opt-vol"]);
        assert!(optional_secret_references(&PodTemplateSpec::default()).is_empty());
    }

    #[test]
    fn finds_every_kind_of_reference() {
        let t = template(json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "A"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "B"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "a-config-map", "key": "C"}}},
                    {"name": "D", "value": "plain"}
                ],
                "envFrom": [{"secretRef": {"name": "env-from"}}, {"configMapRef": {"name": "cm"}}]
            }],
            "initContainers": [{
                "name": "init",
                "env": [{"name": "I", "valueFrom": {"secretKeyRef": {"name": "init-secret", "key": "I"}}}]
            }],
            "ephemeralContainers": [{
                "name": "debug",
                "envFrom": [{"secretRef": {"name": "ephemeral-secret"}}]
            }],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "vol-all"}},
                {"name": "v2", "secret": {"secretName": "vol-items", "items": [{"key": "tls.crt", "path": "c"}]}},
                {"name": "v3", "projected": {"sources": [
                    {"secret": {"name": "proj-items", "items": [{"key": "k", "path": "k"}]}},
                    {"secret": {"name": "proj-all"}},
                    {"configMap": {"name": "cm2"}}
                ]}},
                {"name": "v4", "emptyDir": {}}
            ],
            "imagePullSecrets": [{"name": "registry"}]
        }));
        let refs = secret_references(&t);
        let expected: BTreeMap<String, KeyRefs> = [
            ("env-from", KeyRefs::All),
            ("env-secret", keys(&["A", "B"])),
            ("ephemeral-secret", KeyRefs::All),
            ("init-secret", keys(&["I"])),
            ("proj-all", KeyRefs::All),
            ("proj-items", keys(&["k"])),
            ("vol-all", KeyRefs::All),
            ("vol-items", keys(&["tls.crt"])),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
        assert_eq!(refs, expected);
        assert_eq!(
            referenced_secrets(&t).into_iter().collect::<Vec<_>>(),
            expected.keys().cloned().collect::<Vec<_>>()
        );
    }

    #[test]
    fn all_keys_wins_over_single_keys_in_any_order() {
        for containers in [
            json!([{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "X"}}}],
                    "envFrom": [{"secretRef": {"name": "s"}}]}]),
            json!([{"name": "a", "envFrom": [{"secretRef": {"name": "s"}}]},
                   {"name": "b", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "X"}}}]}]),
        ] {
            let refs = secret_references(&template(json!({ "containers": containers })));
            assert_eq!(refs.get("s"), Some(&KeyRefs::All));
            assert!(refs["s"].contains("anything"));
        }
        // A volume of some items plus a key reference: the union, nothing more.
        let refs = secret_references(&template(json!({
            "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "X"}}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s", "items": [{"key": "Y", "path": "y"}]}}]
        })));
        assert_eq!(refs["s"], keys(&["X", "Y"]));
        assert!(!refs["s"].contains("X_PREVIOUS"));
    }

    #[test]
    fn empty_items_list_means_all_keys_and_empty_names_are_skipped() {
        let refs = secret_references(&template(json!({
            "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "", "key": "X"}}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s", "items": []}}, {"name": "w", "secret": {}}]
        })));
        assert_eq!(refs.len(), 1);
        assert_eq!(refs["s"], KeyRefs::All);
    }

    #[test]
    fn no_spec_no_references() {
        assert!(referenced_secrets(&PodTemplateSpec::default()).is_empty());
        assert!(referenced_secrets(&template(json!({"containers": [{"name": "a"}]}))).is_empty());
    }

    #[test]
    fn opt_out_annotation() {
        let meta = |v: Option<&str>| ObjectMeta {
            annotations: v.map(|v| [(RESTART_ANNOTATION.to_string(), v.to_string())].into()),
            ..Default::default()
        };
        assert!(restart_opted_out(&meta(Some("false"))));
        assert!(restart_opted_out(&meta(Some(" False "))));
        assert!(!restart_opted_out(&meta(Some("true"))));
        assert!(!restart_opted_out(&meta(Some(""))));
        assert!(!restart_opted_out(&meta(None)));
    }

    #[test]
    fn kinds_round_trip() {
        for k in WorkloadKind::ALL {
            assert_eq!(k.as_str().parse::<WorkloadKind>().unwrap(), k);
        }
        let err = "Job".parse::<WorkloadKind>().unwrap_err();
        assert_eq!(err.category(), "unsupported_kind");
        assert!(err.to_string().contains("Job"));
        let w = WorkloadRef::new(WorkloadKind::StatefulSet, "ns", "db");
        assert_eq!(w.to_string(), "StatefulSet/ns/db");
    }
}
