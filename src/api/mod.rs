//! The `keyward.dev/v1alpha1` API. The CRD in `crds/` is generated from these types (`keyward crd`), so every
//! admission rule lives here, next to the field it guards.

mod access_policy;
pub mod conditions;
mod managed_secret;
pub mod record;
mod workload;

pub use access_policy::*;
pub use managed_secret::*;
pub use workload::{UnknownKind, WorkloadKind};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs keyward serves, in the order of their files in `crds/` (`<plural>.keyward.dev.yaml`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AccessPolicy::crd(), ManagedSecret::crd()]
}

/// CRDs as one multi-document YAML stream (what `keyward crd` prints and `cat crds/*.yaml` gives).
pub fn crds_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd)?);
    }
    Ok(out)
}
