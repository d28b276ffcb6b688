//! What authorization reads, kept current by watches: the AccessPolicies of the cluster together with those
//! from a file (or `--allow-all`), and the namespaces' labels (cluster-wide mode only: a namespaced keyward may
//! not read Namespaces, so label selectors select nothing there).

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::AccessPolicy;
use crate::authz::grants::{NamespaceInfo, Policies};

/// The policies in force and the namespaces, as watched.
pub struct AccessView {
    /// The grants that do not come from the cluster (a file, `--allow-all`); a changed file replaces them.
    base: RwLock<Policies>,
    /// The cluster's AccessPolicies, as last seen.
    cluster: RwLock<Policies>,
    /// `base` and `cluster` together, rebuilt on every change of either.
    current: RwLock<Arc<Policies>>,
    namespaces: RwLock<Option<Store<PartialObjectMeta<Namespace>>>>,
}

impl AccessView {
    pub fn new(base: Policies) -> Self {
        AccessView {
            current: RwLock::new(Arc::new(base.clone())),
            base: RwLock::new(base),
            cluster: RwLock::new(Policies::default()),
            namespaces: RwLock::new(None),
        }
    }

    /// The policies in force now.
    pub fn policies(&self) -> Arc<Policies> {
        self.current
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|_| Arc::new(Policies::default()))
    }

    /// Takes in the cluster's AccessPolicies as they are now.
    pub fn set_cluster_policies(&self, objects: &[Arc<AccessPolicy>]) {
        if let Ok(mut cluster) = self.cluster.write() {
            *cluster = Policies::from_cluster(objects.iter().map(AsRef::as_ref));
        }
        self.rebuild();
    }

    /// Takes in the grants from outside the cluster as they are now (the policy file was read again).
    pub fn set_base(&self, base: Policies) {
        if let Ok(mut slot) = self.base.write() {
            *slot = base;
        }
        self.rebuild();
    }

    fn rebuild(&self) {
        let (Ok(cluster), Ok(base)) = (self.cluster.read(), self.base.read()) else {
            return;
        };
        let policies = cluster.clone().and(&base);
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(policies);
        }
    }

    /// Uses this cache of the cluster's Namespaces for labels.
    pub fn set_namespaces(&self, store: Store<PartialObjectMeta<Namespace>>) {
        if let Ok(mut slot) = self.namespaces.write() {
            *slot = Some(store);
        }
    }

    /// A namespace as grants see it.
    pub fn namespace(&self, name: &str) -> NamespaceInfo {
        let labels = self
            .namespaces
            .read()
            .ok()
            .and_then(|s| s.as_ref()?.get(&ObjectRef::new(name)))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default());
        NamespaceInfo {
            name: name.to_string(),
            labels,
        }
    }
}
