//! The rollback copy: the value a change replaced, kept in the Secret `keyward-previous-<target>` before the
//! change is written (so it is never only in memory), for `consumers.rollbackOnFailure`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::api::{MANAGED_BY_LABEL, ManagedSecret, PREVIOUS_OF_ANNOTATION, VALUE_HASH_ANNOTATION};
use crate::controller::context::FIELD_MANAGER;
use crate::controller::failure::{Failure, kube_failure};
use crate::secret::SecretBytes;

/// The name of the Secret that keeps the value before the last change.
fn name(ms: &ManagedSecret) -> String {
    let mut name = format!("keyward-previous-{}", ms.target_name());
    name.truncate(253);
    name
}

/// The kept value, if there is one.
pub async fn read(api: &Api<Secret>, ms: &ManagedSecret) -> Result<Option<SecretBytes>, Failure> {
    let name = name(ms);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(|e| kube_failure(&format!("reading Secret {name}"), &e))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove("value"))
        .map(|b| SecretBytes::new(b.0)))
}

/// Keeps `value` (whose keyed hash is `hash`) as the previous value.
pub async fn save(api: &Api<Secret>, ms: &ManagedSecret, value: &[u8], hash: &str) -> Result<(), Failure> {
    let name = name(ms);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ms.namespace(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.0.to_string(),
                MANAGED_BY_LABEL.1.to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (PREVIOUS_OF_ANNOTATION.to_string(), ms.name_any()),
                (VALUE_HASH_ANNOTATION.to_string(), hash.to_string()),
            ])),
            owner_references: ms.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([("value".to_string(), ByteString(value.to_vec()))])),
        ..Secret::default()
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|e| kube_failure(&format!("writing Secret {name}"), &e))?;
    Ok(())
}
