//! The conditions a ManagedSecret reports, in the standard `metav1.Condition` shape (Kubernetes API
//! conventions): their types, and setting one while keeping its transition time when its status did not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The ManagedSecret's Secret holds the source's value and nothing stands in the way.
pub const READY: &str = "Ready";
/// The target Secret matches the source.
pub const SYNCED: &str = "Synced";
/// A consumer's rollout failed and the Secret holds the previous value (`consumers.rollbackOnFailure`).
pub const DEGRADED: &str = "Degraded";
/// Every consuming workload runs the current value.
pub const CONSUMERS_UPDATED: &str = "ConsumersUpdated";
/// A rotation is due (or failing).
pub const ROTATION_DUE: &str = "RotationDue";
/// The value is older than its rotation period allows.
pub const ROTATION_OVERDUE: &str = "RotationOverdue";
/// Every `rotation.pushTo` target holds the current value.
pub const PUSHED: &str = "Pushed";
/// After a value was replaced with a grace period: whether the previous value is kept beside it (False, reason
/// `TooLarge`, when the two do not fit in one Secret: the current value always wins).
pub const PREVIOUS_KEPT: &str = "PreviousKept";

/// Sets condition `type_` in `conditions`. The transition time moves only when the status flips, so that
/// writing the same state again changes nothing.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.clone();
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        });
    }
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flips() {
        let t1 = Time(jiff::Timestamp::from_second(1).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(2).unwrap());
        let mut cs = Vec::new();
        set(&mut cs, READY, true, "Synced", "ok".into(), Some(1), &t1);
        set(&mut cs, READY, true, "Synced", "still ok".into(), Some(2), &t2);
        assert_eq!(cs[0].last_transition_time, t1);
        assert_eq!(cs[0].message, "still ok");
        set(&mut cs, READY, false, "SourceNotFound", "gone".into(), Some(2), &t2);
        assert_eq!(cs[0].last_transition_time, t2);
        assert_eq!(get(&cs, READY).unwrap().reason, "SourceNotFound");
    }
}
