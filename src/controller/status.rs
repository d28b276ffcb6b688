//! The status writers. Every status field has one writer (`ManagedSecretStatus::WRITERS`): the reconcile, or
//! the restart task. Each sends merge patches of the fields it owns that changed, and only those, so the two
//! never undo each other's writes, and a reconcile working from a stale cached object does not copy older
//! values back. Nothing is sent when nothing changed.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::context::Context;
use super::error::ControllerError;
use crate::api::{ConsumerStatus, ManagedSecret, ManagedSecretStatus, StatusWriter};

/// The reconcile's write: the fields it owns that differ from what `ms` holds (as cached, or as this process
/// last wrote it: `Context::status_base`), null for those it cleared.
pub async fn write_reconciled(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &ManagedSecretStatus,
) -> Result<(), ControllerError> {
    let base = ctx.status_base(ms);
    if base.as_ref() == Some(status) {
        return Ok(());
    }
    let changed = changed_fields(base.as_ref(), status, StatusWriter::Reconcile);
    if changed.is_empty() {
        return Ok(());
    }
    let ns = ms.namespace().ok_or(ControllerError::MissingField("namespace"))?;
    let api: Api<ManagedSecret> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({"status": serde_json::Value::Object(changed)});
    let written = api
        .patch_status(&ms.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.status_written(ms, status, written.metadata.resource_version);
    Ok(())
}

/// The restart task's write: `status.consumers` of ManagedSecret `name` in `namespace`.
pub async fn write_consumers(
    client: &Client,
    namespace: &str,
    name: &str,
    consumers: &[ConsumerStatus],
) -> Result<(), kube::Error> {
    debug_assert_eq!(
        ManagedSecretStatus::writer_of("consumers"),
        Some(StatusWriter::Restarts)
    );
    let api: Api<ManagedSecret> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"status": {"consumers": consumers}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The fields `writer` owns whose value differs between `old` and `new` (null for those `new` drops).
fn changed_fields(
    old: Option<&ManagedSecretStatus>,
    new: &ManagedSecretStatus,
    writer: StatusWriter,
) -> serde_json::Map<String, serde_json::Value> {
    let object = |s: Option<&ManagedSecretStatus>| match s.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(o))) => o,
        _ => serde_json::Map::new(),
    };
    let patch = merge_patch(
        &serde_json::Value::Object(object(old)),
        &serde_json::Value::Object(object(Some(new))),
    );
    let serde_json::Value::Object(mut changed) = patch else {
        return serde_json::Map::new();
    };
    changed.retain(|key, _| ManagedSecretStatus::writer_of(key) == Some(writer));
    changed
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: objects field by field, with null for each
/// field `new` drops (a nested object sent whole would keep the fields it no longer has); anything else whole.
fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before) => {
                        patch.insert(key.clone(), merge_patch(before, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerState, SourceStatus, WorkloadKind};

    #[test]
    fn a_writer_sends_only_its_own_changed_fields() {
        let old = ManagedSecretStatus {
            observed_generation: Some(1),
            refresh_request: Some("r1".into()),
            consumers: vec![ConsumerStatus {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
                secrets_hash: None,
                state: ConsumerState::Rolling,
                message: None,
                failed_value_hash: None,
            }],
            ..ManagedSecretStatus::default()
        };
        let mut new = old.clone();
        new.observed_generation = Some(2);
        new.refresh_request = None;
        new.source = Some(SourceStatus {
            revision: Some(3),
            value_hash: None,
        });
        // A stale copy of the restart task's field must never be sent by the reconcile.
        new.consumers.clear();
        let changed = changed_fields(Some(&old), &new, StatusWriter::Reconcile);
        let keys: Vec<&str> = changed.keys().map(String::as_str).collect();
        assert_eq!(keys, ["observedGeneration", "refreshRequest", "source"]);
        assert_eq!(changed["refreshRequest"], serde_json::Value::Null);
        let theirs = changed_fields(Some(&old), &new, StatusWriter::Restarts);
        assert_eq!(theirs.keys().collect::<Vec<_>>(), ["consumers"]);
        assert!(changed_fields(Some(&new), &new, StatusWriter::Reconcile).is_empty());
    }

    #[test]
    fn fields_dropped_inside_an_object_are_sent_as_null() {
        let old: ManagedSecretStatus = serde_json::from_value(serde_json::json!({
            "rotation": {"handledRequest": "storm", "inProgress": {"reason": "storm", "started": "t"},
                         "failures": 3, "nextAttemptTime": "2026-01-01T00:00:00Z"}
        }))
        .unwrap();
        let mut new = old.clone();
        let r = new.rotation.as_mut().unwrap();
        r.in_progress = None;
        r.failures = None;
        r.next_attempt_time = None;
        let changed = changed_fields(Some(&old), &new, StatusWriter::Reconcile);
        assert_eq!(
            serde_json::Value::Object(changed),
            serde_json::json!({"rotation": {"inProgress": null, "failures": null, "nextAttemptTime": null}})
        );
    }
}
