//! Phase 5 — hand over to the consumers. The restart task restarts the workloads that consume the target
//! Secret when its value changes (it watches the Secret) and reports each in `status.consumers`; this phase
//! reads that report: ConsumersUpdated, and whether a failed rollout asks to hold the previous value
//! (`consumers.rollbackOnFailure`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::conditions::{self, CONSUMERS_UPDATED};
use crate::api::{ConsumerState, ManagedSecret, ManagedSecretStatus, Rollback};

/// Records a rollback when a consumer's rollout of the current source value failed, this object rolls back on
/// failure, and that value is its latest change (a value reached some other way has no previous one kept).
/// The target phase then holds the previous value until the source moves past the failed one.
pub fn note_failed_rollout(ms: &ManagedSecret, status: &mut ManagedSecretStatus, source_hash: &str) {
    let rollback_on = ms.spec.consumers.as_ref().is_some_and(|c| c.rollback_on_failure);
    let latest = status.last_change.as_ref().map(|c| c.value_hash.as_str());
    if !rollback_on || status.rollback.is_some() || latest != Some(source_hash) {
        return;
    }
    let failed = status
        .consumers
        .iter()
        .find(|c| c.state == ConsumerState::Failed && c.failed_value_hash.as_deref() == Some(source_hash));
    if let Some(c) = failed {
        let workload = format!("{}/{}/{}", c.kind, ms.namespace().unwrap_or_default(), c.name);
        tracing::warn!(workload = %workload, managed_secret = %ms.name_any(), "rollout failed; rolling the Secret back");
        status.rollback = Some(Box::new(Rollback {
            failed_value_hash: source_hash.to_string(),
            workload,
            message: c.message.clone().unwrap_or_default(),
        }));
    }
}

/// ConsumersUpdated, from the consumer list the restart task keeps in status.
pub fn condition(status: &mut ManagedSecretStatus, generation: Option<i64>, now: &Time) {
    if status.consumers.is_empty() && conditions::get(&status.conditions, CONSUMERS_UPDATED).is_none() {
        return;
    }
    let total = status.consumers.len();
    let failed = status
        .consumers
        .iter()
        .filter(|c| c.state == ConsumerState::Failed)
        .count();
    let manual = status.manual_restarts_needed();
    let behind = status
        .consumers
        .iter()
        .filter(|c| c.state != ConsumerState::Restarted)
        .count();
    let (ok, reason, message) = if failed > 0 {
        (
            false,
            "RolloutFailed",
            format!("{failed} of {total} consumer(s) failed to roll out"),
        )
    } else if behind > manual.len() {
        (
            false,
            "RestartsInProgress",
            format!("{behind} of {total} consumer(s) not yet running the current value"),
        )
    } else if !manual.is_empty() {
        // Nothing will move without someone: say who, and what to do.
        (
            false,
            "ManualRestartNeeded",
            format!(
                "{} replace(s) Pods only when they are deleted (updateStrategy OnDelete); delete their Pods, one at \
                 a time, to run the current value",
                manual.join(", ")
            ),
        )
    } else if behind > 0 {
        (
            false,
            "RestartsInProgress",
            format!("{behind} of {total} consumer(s) not yet running the current value"),
        )
    } else {
        (
            true,
            "AllRestarted",
            format!("{total} consumer(s) run the current value"),
        )
    };
    conditions::set(
        &mut status.conditions,
        CONSUMERS_UPDATED,
        ok,
        reason,
        message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerStatus, ValueChange, WorkloadKind};

    fn ms(rollback: bool) -> ManagedSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "db", "namespace": "team"},
            "spec": {"source": {"esc": {"environment": "o/p/e", "path": "a"}}, "target": {"key": "K"},
                     "consumers": {"rollbackOnFailure": rollback}}
        }))
        .unwrap()
    }

    fn failed(value_hash: &str) -> ConsumerStatus {
        ConsumerStatus {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
            secrets_hash: Some("sha256:x".into()),
            state: ConsumerState::Failed,
            message: Some("ProgressDeadlineExceeded".into()),
            failed_value_hash: Some(value_hash.into()),
        }
    }

    fn status(latest: &str, consumers: Vec<ConsumerStatus>) -> ManagedSecretStatus {
        ManagedSecretStatus {
            last_change: Some(Box::new(ValueChange {
                previous_value_hash: "h1".into(),
                value_hash: latest.into(),
            })),
            consumers,
            ..ManagedSecretStatus::default()
        }
    }

    #[test]
    fn a_failed_rollout_of_the_latest_change_asks_for_a_rollback() {
        let mut st = status("h2", vec![failed("h2")]);
        note_failed_rollout(&ms(true), &mut st, "h2");
        let rb = st.rollback.unwrap();
        assert_eq!(rb.failed_value_hash, "h2");
        assert_eq!(rb.workload, "Deployment/team/api");
        assert_eq!(rb.message, "ProgressDeadlineExceeded");
    }

    #[test]
    fn no_rollback_without_the_policy_or_for_another_value() {
        for (ms, latest, failed_with, source) in [
            (ms(false), "h2", "h2", "h2"),
            (ms(true), "h2", "h1", "h2"),
            (ms(true), "h3", "h2", "h2"),
            (ms(true), "h2", "h2", "h3"),
        ] {
            let mut st = status(latest, vec![failed(failed_with)]);
            note_failed_rollout(&ms, &mut st, source);
            assert!(st.rollback.is_none(), "{latest} {failed_with} {source}");
        }
    }

    #[test]
    fn consumers_updated_says_how_many_are_behind() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let mut st = status("h2", vec![failed("h2")]);
        condition(&mut st, Some(1), &now);
        let c = conditions::get(&st.conditions, CONSUMERS_UPDATED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RolloutFailed"));
        st.consumers[0].state = ConsumerState::Restarted;
        condition(&mut st, Some(1), &now);
        let c = conditions::get(&st.conditions, CONSUMERS_UPDATED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "AllRestarted"));
        // Waiting for someone to delete Pods: named, and not a failure (no rollback).
        st.consumers[0].state = ConsumerState::ManualRestartNeeded;
        st.consumers[0].kind = WorkloadKind::StatefulSet;
        st.consumers[0].name = "db".into();
        condition(&mut st, Some(1), &now);
        let c = conditions::get(&st.conditions, CONSUMERS_UPDATED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ManualRestartNeeded"));
        assert!(
            c.message.starts_with("StatefulSet/db replace(s) Pods only when"),
            "{}",
            c.message
        );
        note_failed_rollout(&ms(true), &mut st, "h2");
        assert!(st.rollback.is_none());
        let mut none = ManagedSecretStatus::default();
        condition(&mut none, Some(1), &now);
        assert!(none.conditions.is_empty());
    }
}
