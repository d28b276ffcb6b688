//! The `keyward.dev/v1alpha1` API. The CRD in `crds/` is generated from these types (`keyward crd`), so every
//! admission rule lives here, next to the field it guards.

pub mod conditions;
mod managed_secret;
mod workload;

pub use managed_secret::*;
pub use workload::{UnknownKind, WorkloadKind};

use kube::CustomResourceExt;

/// The CRDs keyward serves, as one multi-document YAML stream (what `keyward crd` prints and `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let crd = ManagedSecret::crd();
    let mut out = String::from("---\n");
    out.push_str(&serde_saphyr::to_string(&crd)?);
    Ok(out)
}
