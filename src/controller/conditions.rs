//! Standard `metav1.Condition`s: set one, keeping its transition time when its status did not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DEGRADED: &str = "Degraded";
pub const CONSUMERS_UPDATED: &str = "ConsumersUpdated";
pub const ROTATION_DUE: &str = "RotationDue";
pub const ROTATION_OVERDUE: &str = "RotationOverdue";
pub const PUSHED: &str = "Pushed";

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
