//! A Secret several ManagedSecrets fill: each owns its keys (its own field manager and record), so this
//! ManagedSecret may write only if no other one owns a key it wants, and the Secret's type and shared
//! metadata agree; and the part of a ManagedSecret that no longer exists is taken out.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::desired::{OwnedSection, owned_keys, secret_type};
use crate::api::record::{self, LEGACY_FIELD_MANAGER, Record};
use crate::api::{MANAGED_BY_LABEL, MANAGED_SECRET_ANNOTATION, ManagedSecret};
use crate::controller::context::Context;
use crate::controller::failure::{Failure, kube_failure};

/// The field manager a record's part was written with.
pub fn manager_of(name: &str, record: &Record) -> String {
    if record.is_legacy() {
        LEGACY_FIELD_MANAGER.to_string()
    } else {
        record::field_manager(name)
    }
}

/// Checks that `ms` may write `desired` into `current` next to the other ManagedSecrets filling it, after
/// taking out the parts of those that no longer exist. Returns the names of the others that fill it.
///
/// Errors (`TargetConflict`, naming the owner): the Secret is not keyward's; a key `ms` wants is another's;
/// the Secret's type is not the one `ms` wants while another fills it; a label or annotation `ms` sets has
/// another value another one sets.
pub async fn check(
    ms: &ManagedSecret,
    ctx: &Context,
    api: &Api<Secret>,
    current: &Secret,
    desired: &Secret,
) -> Result<Vec<String>, Failure> {
    let (ns, me, name) = (ms.namespace().unwrap_or_default(), ms.name_any(), ms.target_name());
    let labelled = current.labels().get(MANAGED_BY_LABEL.0).map(String::as_str) == Some(MANAGED_BY_LABEL.1);
    let records = record::records(current.annotations());
    if !labelled || records.is_empty() {
        return Err(Failure::new(
            "TargetConflict",
            format!(
                "Secret {name} exists and is not managed by keyward; keyward will not overwrite it (delete it, or \
                 label it {}={} and annotate it {}={me})",
                MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1, MANAGED_SECRET_ANNOTATION
            ),
        ));
    }
    let mut others = Vec::new();
    for (other, rec) in records.iter().filter(|(n, _)| **n != me) {
        let manager = manager_of(other, rec);
        if !exists(ctx, &ns, other).await? {
            remove_part(api, name, &ns, &manager).await?;
            tracing::info!(namespace = %ns, secret = %name, managed_secret = %other, "took out the keys of a ManagedSecret that no longer exists");
            continue;
        }
        let owned = owned_keys(current, &manager);
        let conflict = |what: String| {
            Failure::new(
                "TargetConflict",
                format!(
                    "{what} of Secret {name} is ManagedSecret {ns}/{other}'s, which fills it too; give this one \
                     another key or target.name, or take it out of the other"
                ),
            )
        };
        let wanted = |section: OwnedSection, key: &str| match section {
            OwnedSection::Data => desired
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
                .then(|| format!("key {key}")),
            OwnedSection::Labels => desired
                .labels()
                .get(key)
                .filter(|v| current.labels().get(key) != Some(*v))
                .map(|_| format!("label {key}")),
            OwnedSection::Annotations => desired
                .annotations()
                .get(key)
                .filter(|v| current.annotations().get(key) != Some(*v))
                .map(|_| format!("annotation {key}")),
        };
        if let Some(what) = owned.iter().find_map(|(section, key)| wanted(*section, key)) {
            return Err(conflict(what));
        }
        if secret_type(current) != secret_type(desired) {
            return Err(conflict(format!("the type ({})", secret_type(current))));
        }
        others.push(other.clone());
    }
    Ok(others)
}

/// Whether ManagedSecret `name` exists: in the cache, or (the cache may lag behind a new object) in the API.
async fn exists(ctx: &Context, ns: &str, name: &str) -> Result<bool, Failure> {
    let cached = ctx
        .managed
        .as_ref()
        .is_some_and(|s| s.get(&ObjectRef::new(name).within(ns)).is_some());
    if cached {
        return Ok(true);
    }
    let api: Api<ManagedSecret> = Api::namespaced(ctx.client.clone(), ns);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| kube_failure(&format!("reading ManagedSecret {name}"), &e))?;
    Ok(found.is_some())
}

/// Takes a part out of Secret `name`: an empty apply by its field manager removes every field only it owns (its
/// keys, its record, its owner reference); what others own too stays.
pub async fn remove_part(api: &Api<Secret>, name: &str, ns: &str, manager: &str) -> Result<(), Failure> {
    let empty = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    match api
        .patch(name, &PatchParams::apply(manager), &Patch::Apply(&empty))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_failure(&format!("taking keys out of Secret {name}"), &e)),
    }
}
