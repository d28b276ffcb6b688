//! `keyward rotate NAME --reason ...`: asks for an emergency rotation with the `keyward.dev/rotate-now`
//! annotation (each distinct reason rotates once) and, with `--wait`, follows it step by step through the
//! ManagedSecret's status: requested, in progress, Secret updated, pushes done, consumers restarted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::error::OpsError;
use super::human;
use crate::api::conditions::{CONSUMERS_UPDATED, PUSHED, READY, ROTATION_OVERDUE};
use crate::api::{ConsumerState, ManagedSecret, ROTATE_NOW_ANNOTATION, RotationStrategy};

/// The steps of a rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Requested,
    InProgress,
    SecretUpdated,
    Pushed,
    ConsumersRestarted,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::Requested,
        Step::InProgress,
        Step::SecretUpdated,
        Step::Pushed,
        Step::ConsumersRestarted,
    ];

    fn next(self) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s > self)
    }

    /// What waiting for this step means, for the timeout message.
    fn waiting_for(self) -> &'static str {
        match self {
            Step::Requested => "the request to be recorded",
            Step::InProgress => {
                "the rotation to start (status.rotation.inProgress); is keyward running and watching this namespace?"
            }
            Step::SecretUpdated => "the Secret to be updated (status.lastRotationTime, status.rotation.lastReason)",
            Step::Pushed => "the pushes (condition Pushed, status.pushes)",
            Step::ConsumersRestarted => "the consumers to restart (status.consumers, condition ConsumersUpdated)",
        }
    }
}

/// What the object looked like before the request, to tell new progress from old.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    pub reason: String,
    pub last_rotation: Option<Timestamp>,
    /// Each consumer's restart hash before the rotation (`Kind/name`).
    pub consumer_hashes: HashMap<String, Option<String>>,
    /// The trouble already reported before the request (e.g. the overdue rotation this one answers), which is
    /// no news while waiting.
    pub trouble: Option<String>,
}

impl Baseline {
    pub fn of(ms: &ManagedSecret, reason: &str) -> Baseline {
        let status = ms.status.as_ref();
        Baseline {
            reason: reason.to_string(),
            last_rotation: status.and_then(|s| s.last_rotation_time.as_ref()).map(|t| t.0),
            consumer_hashes: status
                .map(|s| {
                    s.consumers
                        .iter()
                        .map(|c| (format!("{}/{}", c.kind, c.name), c.secrets_hash.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            trouble: trouble(ms),
        }
    }
}

/// A failure keyward reports on the object (Ready False, RotationOverdue True), in one line.
fn trouble(ms: &ManagedSecret) -> Option<String> {
    ms.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| (c.type_ == READY && c.status == "False") || (c.type_ == ROTATION_OVERDUE && c.status == "True"))
        .map(|c| {
            format!("{} {}: {} {}", c.type_, c.status, c.reason, c.message)
                .trim_end()
                .to_string()
        })
}

/// How far a rotation has come, and a few words on the last step reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The furthest step reached with every earlier one reached too.
    pub reached: Step,
    /// Detail per reached step.
    pub details: HashMap<Step, String>,
    /// Progress toward the next step, e.g. `1/3 restarted`.
    pub pending: Option<String>,
    /// A failure keyward reports meanwhile (Ready False, RotationOverdue), to show once.
    pub trouble: Option<String>,
}

fn condition_true(ms: &ManagedSecret, type_: &str) -> bool {
    ms.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Evaluates the status against the baseline.
pub fn progress(ms: &ManagedSecret, base: &Baseline) -> Progress {
    let mut details = HashMap::new();
    let status = ms.status.clone().unwrap_or_default();
    let rotation = status.rotation.clone().unwrap_or_default();
    let mut progress = Progress {
        reached: Step::Requested,
        details: HashMap::new(),
        pending: None,
        trouble: trouble(ms),
    };

    let in_progress = rotation.in_progress.as_ref().is_some_and(|i| i.reason == base.reason);
    let last_rotation = status.last_rotation_time.as_ref().map(|t| t.0);
    let newer = match (base.last_rotation, last_rotation) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(n)) => n > b,
    };
    let ours = rotation.last_reason.as_deref() == Some(base.reason.as_str())
        || rotation.handled_request.as_deref() == Some(base.reason.as_str());
    let updated = newer && ours && !in_progress;
    if in_progress && let Some(i) = &rotation.in_progress {
        details.insert(Step::InProgress, format!("started {}", i.started));
    }
    if !(in_progress || updated) {
        progress.details = details;
        return progress;
    }
    progress.reached = Step::InProgress;
    if !updated {
        progress.details = details;
        return progress;
    }
    progress.reached = Step::SecretUpdated;
    let revision = status.source.as_ref().and_then(|s| s.revision);
    details.insert(
        Step::SecretUpdated,
        match (last_rotation, revision) {
            (Some(t), Some(r)) => format!("at {}, ESC revision {r}", human::rfc3339(t)),
            (Some(t), None) => format!("at {}", human::rfc3339(t)),
            _ => String::new(),
        },
    );

    // Pushes are done when every target holds the value the Secret now holds.
    let targets = ms.spec.rotation.as_ref().map(|r| r.push_to.len()).unwrap_or(0);
    let value = status.source.as_ref().and_then(|s| s.value_hash.as_deref());
    let current = status
        .pushes
        .iter()
        .filter(|p| value.is_some() && p.value_hash.as_deref() == value)
        .count();
    if targets > 0 && !(current >= targets && condition_true(ms, PUSHED)) {
        progress.pending = Some(format!("{current}/{targets} pushed"));
        progress.details = details;
        return progress;
    }
    progress.reached = Step::Pushed;
    details.insert(
        Step::Pushed,
        if targets == 0 {
            "no push targets".into()
        } else {
            format!("{targets}/{targets} targets")
        },
    );

    // A consumer is done when it runs a restart hash other than the one it had before the rotation.
    let total = status.consumers.len();
    let done = status
        .consumers
        .iter()
        .filter(|c| {
            let before = base
                .consumer_hashes
                .get(&format!("{}/{}", c.kind, c.name))
                .cloned()
                .flatten();
            c.state == ConsumerState::Restarted && (before.is_none() || before != c.secrets_hash)
        })
        .count();
    let updated_condition = status.conditions.iter().find(|c| c.type_ == CONSUMERS_UPDATED);
    let all = done == total && updated_condition.is_none_or(|c| c.status == "True");
    if !all {
        // Those that wait for someone to delete their Pods will not finish by waiting: say who they are.
        let manual = status.manual_restarts_needed();
        progress.pending = Some(if manual.is_empty() {
            format!("{done}/{total} restarted")
        } else {
            format!("{done}/{total} restarted; manual restart needed: {}", manual.join(", "))
        });
        progress.details = details;
        return progress;
    }
    progress.reached = Step::ConsumersRestarted;
    details.insert(
        Step::ConsumersRestarted,
        if total == 0 {
            "no consumers".into()
        } else {
            format!("{total}/{total} restarted")
        },
    );
    progress.details = details;
    progress
}

fn describe(step: Step) -> &'static str {
    match step {
        Step::Requested => "requested",
        Step::InProgress => "rotation in progress",
        Step::SecretUpdated => "Secret updated",
        Step::Pushed => "pushes done",
        Step::ConsumersRestarted => "consumers restarted",
    }
}

/// One progress line: `[  1.2s] Secret updated (at ..., ESC revision 43)`.
pub fn line(elapsed: Duration, step: Step, detail: Option<&str>) -> String {
    let detail = detail
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    format!("[{:>6.1}s] {}{detail}", elapsed.as_secs_f64(), describe(step))
}

/// Whether keyward only records requests for `ms` (strategy Notify) instead of changing the value.
pub fn notify_only(ms: &ManagedSecret) -> bool {
    ms.spec
        .rotation
        .as_ref()
        .is_some_and(|r| r.strategy == RotationStrategy::Notify)
}

/// What to annotate: the reason, checked against what was already handled and against what keyward will do
/// with it (nothing without a rotation policy; only record it under strategy Notify, which `--wait` cannot
/// follow to a new value).
pub fn check_request(
    ms: &ManagedSecret,
    reason: &str,
    force: bool,
    wait: bool,
    now: Timestamp,
) -> Result<String, OpsError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OpsError::Usage(
            "--reason must say why (it is recorded in the status and the Rotated Event)".into(),
        ));
    }
    let id = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
    if ms.spec.rotation.is_none() {
        return Err(OpsError::Usage(format!(
            "ManagedSecret {id} has no rotation policy (spec.rotation): keyward does not act on rotate-now for it"
        )));
    }
    if wait && notify_only(ms) {
        return Err(OpsError::Usage(format!(
            "ManagedSecret {id} has rotation strategy Notify: keyward only records the request, so --wait would wait \
             for nothing; run without --wait, or use strategy Generate or Esc"
        )));
    }
    let handled = ms
        .status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.handled_request.as_deref());
    if handled.map(str::trim) != Some(reason) {
        return Ok(reason.to_string());
    }
    if force {
        // A new value of the annotation is what makes keyward rotate again.
        return Ok(format!("{reason} ({})", human::rfc3339(now)));
    }
    Err(OpsError::AlreadyHandled {
        namespace: ms.namespace().unwrap_or_default(),
        name: ms.name_any(),
        reason: reason.to_string(),
    })
}

/// Sets the annotation; returns the baseline to follow the rotation from.
pub async fn request(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    force: bool,
    wait: bool,
) -> Result<(Baseline, ManagedSecret), OpsError> {
    let api: Api<ManagedSecret> = Api::namespaced(client.clone(), namespace);
    let ms = api
        .get(name)
        .await
        .map_err(|e| OpsError::kube(format!("reading ManagedSecret {namespace}/{name}"), namespace, name, e))?;
    let reason = check_request(&ms, reason, force, wait, Timestamp::now())?;
    let patch = serde_json::json!({"metadata": {"annotations": {ROTATE_NOW_ANNOTATION: reason}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            OpsError::kube(
                format!("annotating ManagedSecret {namespace}/{name}"),
                namespace,
                name,
                e,
            )
        })?;
    Ok((Baseline::of(&ms, &reason), ms))
}

/// Follows the rotation, printing a line per step through `out`, until consumers have restarted or `timeout`.
pub async fn wait(
    client: &Client,
    namespace: &str,
    name: &str,
    base: &Baseline,
    timeout: Duration,
    out: &mut dyn FnMut(String),
) -> Result<(), OpsError> {
    let api: Api<ManagedSecret> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let mut reached = Step::Requested;
    out(line(
        Duration::ZERO,
        Step::Requested,
        Some(&format!("{ROTATE_NOW_ANNOTATION}={:?}", base.reason)),
    ));
    let mut last_trouble = base.trouble.clone();
    let mut last_pending: Option<String> = None;
    loop {
        let ms = api
            .get(name)
            .await
            .map_err(|e| OpsError::kube(format!("reading ManagedSecret {namespace}/{name}"), namespace, name, e))?;
        let p = progress(&ms, base);
        while reached < p.reached {
            let Some(next) = reached.next() else { break };
            reached = next;
            out(line(start.elapsed(), next, p.details.get(&next).map(String::as_str)));
        }
        if reached == Step::ConsumersRestarted {
            out(format!("done in {:.1}s", start.elapsed().as_secs_f64()));
            return Ok(());
        }
        if p.trouble.is_some() && p.trouble != last_trouble {
            out(format!(
                "[{:>6.1}s] keyward reports {}",
                start.elapsed().as_secs_f64(),
                p.trouble.clone().unwrap_or_default()
            ));
            last_trouble = p.trouble.clone();
        }
        if p.pending.is_some() && p.pending != last_pending {
            out(format!(
                "[{:>6.1}s] waiting: {}",
                start.elapsed().as_secs_f64(),
                p.pending.clone().unwrap_or_default()
            ));
            last_pending = p.pending.clone();
        }
        if start.elapsed() >= timeout {
            let step = reached.next().unwrap_or(Step::ConsumersRestarted);
            let mut what = step.waiting_for().to_string();
            if let Some(pending) = p.pending {
                what.push_str(&format!(" — {pending}"));
            }
            return Err(OpsError::Timeout {
                after: human::period(timeout),
                step: what,
            });
        }
        let left = timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerStatus, PushStatus, RotationIntent, RotationStatus, SourceStatus, WorkloadKind};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_748_822_400 + secs).unwrap()
    }

    fn ms(push_targets: usize) -> ManagedSecret {
        let push = (0..push_targets)
            .map(|i| format!("{{github: {{organization: acme, secretName: S{i}}}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ManagedSecret\nmetadata: {{name: a, namespace: ns}}\n\
             spec:\n  source: {{esc: {{environment: acme/app/prod, path: app.key}}}}\n  target: {{key: K}}\n  \
             rotation: {{category: apiKey, strategy: Generate, pushTo: [{push}]}}\n"
        );
        let mut ms: ManagedSecret = serde_saphyr::from_str(&yaml).unwrap();
        ms.status = Some(crate::api::ManagedSecretStatus {
            last_rotation_time: Some(Time(t(0))),
            source: Some(SourceStatus {
                revision: Some(1),
                value_hash: Some("h1".into()),
            }),
            consumers: vec![consumer("api", "c1", ConsumerState::Restarted)],
            pushes: (0..push_targets)
                .map(|i| PushStatus {
                    target: format!("github:org/acme/S{i}"),
                    value_hash: Some("h1".into()),
                    ..PushStatus::default()
                })
                .collect(),
            conditions: vec![cond(PUSHED, "True"), cond(CONSUMERS_UPDATED, "True")],
            ..Default::default()
        });
        ms
    }

    fn consumer(name: &str, hash: &str, state: ConsumerState) -> ConsumerStatus {
        ConsumerStatus {
            kind: WorkloadKind::Deployment,
            name: name.into(),
            secrets_hash: Some(hash.into()),
            state,
            message: None,
            failed_value_hash: None,
        }
    }

    fn cond(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(t(0)),
        }
    }

    fn rotated(ms: &mut ManagedSecret, reason: &str) {
        let s = ms.status.as_mut().unwrap();
        s.last_rotation_time = Some(Time(t(100)));
        s.source = Some(SourceStatus {
            revision: Some(2),
            value_hash: Some("h2".into()),
        });
        s.rotation = Some(Box::new(RotationStatus {
            last_reason: Some(reason.into()),
            handled_request: Some(reason.into()),
            ..RotationStatus::default()
        }));
    }

    #[test]
    fn steps_advance_with_the_status() {
        let mut m = ms(1);
        let base = Baseline::of(&m, "leak");
        // The old status says nothing about this request, however green it looks.
        assert_eq!(progress(&m, &base).reached, Step::Requested);

        m.status.as_mut().unwrap().rotation = Some(Box::new(RotationStatus {
            in_progress: Some(RotationIntent {
                reason: "leak".into(),
                started: "2025-06-02T00:01:00Z".into(),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::InProgress);
        assert_eq!(p.details[&Step::InProgress], "started 2025-06-02T00:01:00Z");

        rotated(&mut m, "leak");
        // The push still holds the old value: pushes are pending.
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::SecretUpdated);
        assert_eq!(p.pending.as_deref(), Some("0/1 pushed"));
        assert_eq!(
            p.details[&Step::SecretUpdated],
            "at 2025-06-02T00:01:40Z, ESC revision 2"
        );

        m.status.as_mut().unwrap().pushes[0].value_hash = Some("h2".into());
        // The consumer still runs the old hash.
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::Pushed);
        assert_eq!(p.pending.as_deref(), Some("0/1 restarted"));

        m.status.as_mut().unwrap().consumers = vec![consumer("api", "c2", ConsumerState::Rolling)];
        assert_eq!(progress(&m, &base).reached, Step::Pushed);
        m.status.as_mut().unwrap().consumers = vec![consumer("api", "c2", ConsumerState::ManualRestartNeeded)];
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::Pushed);
        assert_eq!(
            p.pending.as_deref(),
            Some("0/1 restarted; manual restart needed: Deployment/api")
        );
        m.status.as_mut().unwrap().consumers = vec![consumer("api", "c2", ConsumerState::Restarted)];
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::ConsumersRestarted);
        assert_eq!(p.details[&Step::ConsumersRestarted], "1/1 restarted");
    }

    #[test]
    fn nothing_to_push_or_restart_completes_at_once() {
        let mut m = ms(0);
        m.status.as_mut().unwrap().consumers.clear();
        let base = Baseline::of(&m, "leak");
        rotated(&mut m, "leak");
        let p = progress(&m, &base);
        assert_eq!(p.reached, Step::ConsumersRestarted);
        assert_eq!(p.details[&Step::Pushed], "no push targets");
        assert_eq!(p.details[&Step::ConsumersRestarted], "no consumers");
        // Another reason's rotation is not ours.
        let mut other = ms(0);
        rotated(&mut other, "scheduled");
        assert_eq!(progress(&other, &base).reached, Step::Requested);
    }

    #[test]
    fn trouble_is_reported() {
        let mut m = ms(0);
        let base = Baseline::of(&m, "leak");
        assert_eq!(base.trouble, None);
        m.status.as_mut().unwrap().conditions.push(Condition {
            reason: "RotationFailed".into(),
            message: "ESC refused the write".into(),
            ..cond(READY, "False")
        });
        assert_eq!(
            progress(&m, &base).trouble.as_deref(),
            Some("Ready False: RotationFailed ESC refused the write")
        );
    }

    #[test]
    fn reasons_are_checked() {
        let mut m = ms(0);
        let now = t(0);
        assert!(matches!(
            check_request(&m, "  ", false, false, now),
            Err(OpsError::Usage(_))
        ));
        assert_eq!(check_request(&m, " leak ", false, true, now).unwrap(), "leak");
        rotated(&mut m, "leak");
        let e = check_request(&m, "leak", false, false, now).unwrap_err();
        assert_eq!(e.category(), "already_handled");
        assert!(e.to_string().contains("already rotated for reason \"leak\""), "{e}");
        assert_eq!(
            check_request(&m, "leak", true, false, now).unwrap(),
            "leak (2025-06-02T00:00:00Z)"
        );
    }

    #[test]
    fn requests_keyward_would_not_act_on_are_refused() {
        let now = t(0);
        let mut m = ms(0);
        m.spec.rotation.as_mut().unwrap().strategy = RotationStrategy::Notify;
        assert!(notify_only(&m));
        // Notify records the request (and raises an Event), but no value will change to wait for.
        assert_eq!(check_request(&m, "leak", false, false, now).unwrap(), "leak");
        let e = check_request(&m, "leak", false, true, now).unwrap_err();
        assert!(e.to_string().contains("strategy Notify"), "{e}");
        m.spec.rotation = None;
        let e = check_request(&m, "leak", false, false, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ManagedSecret ns/a has no rotation policy (spec.rotation): keyward does not act on rotate-now for it"
        );
    }

    #[test]
    fn lines_and_timeouts_read_well() {
        assert_eq!(
            line(Duration::from_millis(1_234), Step::SecretUpdated, Some("at X")),
            "[   1.2s] Secret updated (at X)"
        );
        assert_eq!(
            line(Duration::ZERO, Step::InProgress, None),
            "[   0.0s] rotation in progress"
        );
        let e = OpsError::Timeout {
            after: "5s".into(),
            step: Step::InProgress.waiting_for().into(),
        };
        assert!(
            e.to_string()
                .starts_with("timed out after 5s waiting for: the rotation to start")
        );
    }
}
