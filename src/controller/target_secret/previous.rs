//! The rollback copy: the values a change replaced, kept in the Secret `keyward-previous-<ManagedSecret>` before the
//! change is written (so they are never only in memory), for `consumers.rollbackOnFailure`. Its data keys are the
//! target's; a copy from before several keys existed holds one value under `value`, which is the single value
//! (`target.key`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::api::{MANAGED_BY_LABEL, ManagedSecret, PREVIOUS_OF_ANNOTATION, VALUE_HASH_ANNOTATION};
use crate::controller::context::FIELD_MANAGER;
use crate::controller::failure::{Failure, kube_failure};
use crate::secret::{SecretBytes, SecretData};

/// The name of the Secret that keeps the values before the last change: one per ManagedSecret (several may
/// fill one target).
fn name(ms: &ManagedSecret) -> String {
    let mut name = format!("keyward-previous-{}", ms.name_any());
    name.truncate(253);
    name
}

/// The kept values, if there are any.
pub async fn read(api: &Api<Secret>, ms: &ManagedSecret) -> Result<Option<SecretData>, Failure> {
    let name = name(ms);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(|e| kube_failure(&format!("reading Secret {name}"), &e))?;
    let Some(secret) = secret else { return Ok(None) };
    let keyed = secret.annotations().contains_key(PREVIOUS_FORMAT_ANNOTATION);
    let data = secret.data.unwrap_or_default();
    Ok(match (keyed, ms.target_key()) {
        (true, _) => Some(data.into_iter().map(|(k, v)| (k, SecretBytes::new(v.0))).collect()),
        (false, Some(key)) => data
            .get("value")
            .map(|v| SecretData::single(key, SecretBytes::new(v.0.clone()))),
        (false, None) => None,
    })
}

/// Marks a copy whose data keys are the target's (not the single `value` of earlier copies).
const PREVIOUS_FORMAT_ANNOTATION: &str = "keyward.dev/previous-keys";

/// Keeps `values` (whose keyed hash is `hash`) as the previous values.
pub async fn save(api: &Api<Secret>, ms: &ManagedSecret, values: &SecretData, hash: &str) -> Result<(), Failure> {
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
                (PREVIOUS_FORMAT_ANNOTATION.to_string(), "true".to_string()),
            ])),
            owner_references: ms.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
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
