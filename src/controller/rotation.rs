//! Phase 3 — rotate when due (or asked to), and report the schedule. The steps are ordered so that a crash
//! between any two of them converges to exactly one rotation:
//!
//! 1. record the intent on the target Secret (and in status) — nothing has changed yet;
//! 2. write the new value to ESC (strategy Generate), or ask ESC to rotate (strategy Esc);
//! 3. read ESC again and write the Secret from what ESC holds: the write that replaces the value also sets
//!    the last rotation time and clears the intent, atomically;
//! 4. push what ESC holds to GitHub (level-triggered, see `push`), and let the restart task roll consumers.
//!
//! A restart finds the intent. It reads ESC first: if ESC already holds a new value, step 3 completes the
//! rotation with it; only if ESC still holds the old value is a value made again — the earlier one never left
//! this process. Values are never taken from memory after step 2: every later step reads ESC.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::context::Context;
use super::failure::Failure;
use super::fault::checkpoint;
use super::record::{audit, publish, publish_distinct};
use super::sync::{Synced, sync};
use super::target_secret::{self, Bookkeeping, Intent};
use super::timing::backoff;
use crate::api::conditions::{self, ROTATION_DUE, ROTATION_OVERDUE};
use crate::api::{
    ManagedSecret, ManagedSecretStatus, REASON_SCHEDULED, REASON_SOURCE_CHANGED, ROTATE_NOW_ANNOTATION, RotationIntent,
    RotationStrategy,
};
use crate::esc::{EnvRef, PropertyPath};
use crate::rotation::schedule::{Policy, ScheduleError};
use crate::rotation::{generate, schedule};
use crate::source::SourceError;
use crate::telemetry::audit::Action;
use crate::telemetry::metrics::RotationLabels;

/// The spec's rotation policy: None without a rotation block, an error for one keyward cannot use.
pub fn policy(ms: &ManagedSecret) -> Option<Result<Policy, ScheduleError>> {
    ms.spec
        .rotation
        .as_ref()
        .map(|r| schedule::policy(r, ms.target_key().unwrap_or_default()))
}

/// Rotates when wanted — a started rotation to finish, an unhonored rotate-now request, or the schedule —
/// unless the Secret holds a rolled-back value, or failed rotations are backing off. A rotation that changed the
/// value replaces `outcome` with the sync that wrote it; a failed one is returned (and delays the next attempt).
/// A started rotation the spec no longer asks for is dropped.
pub async fn rotate_if_wanted(
    ms: &ManagedSecret,
    ctx: &Context,
    uid: &str,
    policy: Option<&Policy>,
    status: &mut ManagedSecretStatus,
    outcome: &mut Result<Synced, Failure>,
) -> Option<Failure> {
    let Ok(synced) = &*outcome else {
        return None;
    };
    if synced.written.holding.is_some() {
        return None;
    }
    if let Some(intent) = &synced.written.book.intent
        && !intent_still_wanted(ms, status, &synced.written.book, policy, intent)
    {
        // Its value, if ESC took it before the policy changed, arrives as a change in the source.
        tracing::info!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), reason = %intent.reason, "dropping a started rotation the spec no longer asks for");
        if let Some(r) = status.rotation.as_mut() {
            r.in_progress = None;
            r.failures = None;
            r.next_attempt_time = None;
        }
        ctx.rotation_succeeded(uid);
        let after = sync(ms, ctx, Instant::now(), status, policy, Intent::Drop).await;
        let failure = after.as_ref().err().cloned();
        *outcome = after;
        return failure;
    }
    if policy.is_none_or(|p| p.strategy == RotationStrategy::Notify) {
        // Nothing to rotate any more: past failures no longer speak for the object.
        if let Some(r) = status.rotation.as_mut() {
            r.failures = None;
            r.next_attempt_time = None;
        }
        ctx.rotation_succeeded(uid);
    }
    let policy = policy?;
    // Failed rotations back off; updates of the object (our own status writes among them) do not shorten it.
    if let Some(next) = next_attempt(ctx, uid, status)
        && Timestamp::now() < next
    {
        return None;
    }
    let reason = wanted(ms, ctx, status, &synced.written.book, policy)?;
    let strategy = match policy.strategy {
        RotationStrategy::Generate => "generate",
        RotationStrategy::Esc => "esc",
        RotationStrategy::Notify => "notify",
    };
    // What the read phase saw: a rotation in progress was read fresh already.
    let resuming = ms
        .status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .is_some_and(|r| r.in_progress.is_some());
    let result = rotate(ms, ctx, status, policy, reason, synced, resuming).await;
    if !matches!(result, Ok(None)) {
        let labels = RotationLabels {
            strategy,
            result: if result.is_ok() { "success" } else { "failure" },
        };
        ctx.metrics.rotations.get_or_create(&labels).inc();
    }
    match result {
        Ok(Some(after)) => {
            ctx.rotation_succeeded(uid);
            if let Some(r) = status.rotation.as_mut() {
                r.failures = None;
                r.next_attempt_time = None;
            }
            *outcome = Ok(after);
            None
        }
        Ok(None) => None,
        Err(f) => {
            let failures = ctx.rotation_failed(uid).max(
                status
                    .rotation
                    .as_ref()
                    .and_then(|r| r.failures)
                    .unwrap_or(0)
                    .saturating_add(1),
            );
            let wait = backoff(failures, f.retry_after, ms.refresh_interval());
            let next = Timestamp::now() + jiff::SignedDuration::try_from(wait).unwrap_or_default();
            ctx.rotation_backoff(uid, failures, next);
            let rotation = status.rotation.get_or_insert_default();
            rotation.failures = Some(failures);
            rotation.next_attempt_time = Some(Time(target_secret::second(next)));
            Some(f)
        }
    }
}

/// When the next rotation may be tried after failures: the later of what this process remembers (the cache can
/// hold the object from before our own status write) and what status says (it survives restarts).
fn next_attempt(ctx: &Context, uid: &str, status: &ManagedSecretStatus) -> Option<Timestamp> {
    let recorded = status
        .rotation
        .as_ref()
        .and_then(|r| r.next_attempt_time.as_ref())
        .map(|t| t.0);
    match (ctx.rotation_not_before(uid), recorded) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Whether the spec still asks for the rotation `intent` records: not when rotation is off or only reports
/// (Notify), nor for a scheduled one that is no longer due (the period changed). A rotate-now request finishes.
fn intent_still_wanted(
    ms: &ManagedSecret,
    status: &ManagedSecretStatus,
    book: &Bookkeeping,
    policy: Option<&Policy>,
    intent: &RotationIntent,
) -> bool {
    let Some(policy) = policy.filter(|p| p.strategy != RotationStrategy::Notify) else {
        return false;
    };
    if intent.reason != REASON_SCHEDULED {
        return true;
    }
    schedule::state(
        Timestamp::now(),
        last_rotation(status, book),
        created(ms),
        policy,
        false,
    )
    .due
}

/// The rotate-now request on the object, if it has not been honored yet.
fn pending_request(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &ManagedSecretStatus,
    book: &Bookkeeping,
) -> Option<String> {
    let request = ms.annotations().get(ROTATE_NOW_ANNOTATION)?.trim();
    let handled = status.rotation.as_ref().and_then(|r| r.handled_request.as_deref());
    if request.is_empty() || handled == Some(request) || book.rotated_for.as_deref() == Some(request) {
        return None;
    }
    // The cache may still hold the object from before our own status write.
    if ctx.rotation_handled(&ms.uid().unwrap_or_default(), request) {
        return None;
    }
    Some(request.to_string())
}

/// Why a rotation should run now: a started one to finish, an unhonored request, or the schedule.
fn wanted(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &ManagedSecretStatus,
    book: &Bookkeeping,
    policy: &Policy,
) -> Option<String> {
    if let Some(intent) = &book.intent {
        return Some(intent.reason.clone());
    }
    if let Some(request) = pending_request(ms, ctx, status, book) {
        return Some(request);
    }
    let state = schedule::state(
        Timestamp::now(),
        last_rotation(status, book),
        created(ms),
        policy,
        false,
    );
    state.due.then(|| REASON_SCHEDULED.to_string())
}

/// When the value was last rotated: the Secret's record first (it survives the loss of status).
fn last_rotation(status: &ManagedSecretStatus, book: &Bookkeeping) -> Option<Timestamp> {
    book.last_rotation
        .or_else(|| status.last_rotation_time.as_ref().map(|t| t.0))
}

fn created(ms: &ManagedSecret) -> Timestamp {
    ms.metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0)
}

fn esc_target(ms: &ManagedSecret) -> Result<(EnvRef, PropertyPath), Failure> {
    let esc = ms
        .spec
        .source
        .esc
        .as_ref()
        .ok_or_else(|| Failure::new("InvalidSpec", "rotation strategies Generate and Esc need source.esc"))?;
    let env = EnvRef::parse(&esc.environment)?;
    let path = esc.path.as_deref().ok_or_else(|| {
        Failure::new(
            "InvalidSpec",
            "rotation strategies Generate and Esc rotate one value: they need source.esc.path",
        )
    })?;
    let path = PropertyPath::parse(path).map_err(|e| SourceError::Invalid(e.to_string()))?;
    Ok((env, path))
}

/// Runs (or finishes) one rotation. Returns the sync that put the new value into the Secret, or None when the
/// strategy does not change values.
async fn rotate(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &mut ManagedSecretStatus,
    policy: &Policy,
    reason: String,
    synced: &Synced,
    read_fresh: bool,
) -> Result<Option<Synced>, Failure> {
    if policy.strategy == RotationStrategy::Notify {
        return Ok(None);
    }
    let mut base = synced;
    let resumed;
    if synced.written.book.intent.is_some() && !read_fresh {
        // A rotation started earlier: ESC may already hold its value. Look before making another one.
        resumed = sync(ms, ctx, Instant::now(), status, Some(policy), Intent::Keep).await?;
        if resumed.written.replaced.is_some() {
            return Ok(Some(resumed));
        }
        base = &resumed;
    }
    let (env, path) = esc_target(ms)?;
    let esc = ctx.esc.as_ref().ok_or(SourceError::NotConfigured)?;
    let started = base.written.book.intent.as_ref().map_or_else(
        || target_secret::second(Timestamp::now()).to_string(),
        |i| i.started.clone(),
    );
    let mut intent = RotationIntent {
        reason: reason.clone(),
        started,
        base_revision: base.value.revision,
        value_hash: None,
    };
    match policy.strategy {
        RotationStrategy::Generate => {
            let generator = ms.spec.rotation.as_ref().and_then(|r| r.generator.as_ref());
            let value = generate::generate(generator).map_err(|e| Failure::new("InvalidGenerator", e.to_string()))?;
            let hash = ctx.hasher.hash(value.expose());
            if hash == base.written.hash {
                return Err(Failure::new(
                    "RotationUnchanged",
                    "the generated value equals the current one; nothing was written (check rotation.generator)",
                ));
            }
            intent.value_hash = Some(hash);
            record_intent(ms, ctx, status, policy, base, intent).await?;
            esc.client().write_secret_value(&env, &path, &value).await?;
        }
        RotationStrategy::Esc => {
            record_intent(ms, ctx, status, policy, base, intent).await?;
            let outcome = esc.client().rotate(&env, &[path.to_string()]).await?;
            // ESC answers 200 with a failed rotation event when its rotator fails: say so, rather than
            // reading back the old value and reporting it as not visible.
            if outcome.status == "failed" {
                return Err(Failure::new(
                    "EscRotationFailed",
                    format!("ESC reported the rotation of {path} in {env} as failed"),
                ));
            }
        }
        RotationStrategy::Notify => return Ok(None),
    }
    checkpoint("esc-write");
    // What ESC holds now is the value from here on — never the one generated above.
    let after = sync(ms, ctx, Instant::now(), status, Some(policy), Intent::Keep).await?;
    if after.written.replaced.is_none() {
        return Err(Failure {
            retry_after: Some(Duration::from_secs(5)),
            ..Failure::new(
                "RotationUnchanged",
                format!(
                    "ESC accepted the rotation of {path} in {env}, but the value it holds now is the one it had \
                     before"
                ),
            )
        });
    }
    checkpoint("secret-write");
    Ok(Some(after))
}

/// The rotation's part of status after a sync: the value's age (tracked for every object, rotation policy or
/// not, for `secret_rotation_age_days`), the schedule and its conditions, and an unusable policy. Returns when
/// to come back for the rotation: exactly at the due time, when the grace period ends, or after a failure's
/// backoff.
pub async fn report_status(
    ms: &ManagedSecret,
    ctx: &Context,
    policy: Option<&Result<Policy, ScheduleError>>,
    outcome: &Result<Synced, Failure>,
    failure: Option<&Failure>,
    status: &mut ManagedSecretStatus,
    now: &Time,
) -> Option<Duration> {
    let mut come_back: Option<Duration> = None;
    let mut at_most = |d: Duration| come_back = Some(come_back.map_or(d, |c| c.min(d)));
    if let Ok(synced) = outcome {
        if let Some(last) = synced.written.book.last_rotation {
            status.last_rotation_time = Some(Time(last));
        }
        if let Some(Ok(policy)) = policy
            && let Some(d) = report(ms, ctx, status, policy, synced, failure, now).await
        {
            // A little after the due time, so that it counts as due.
            at_most(d + Duration::from_millis(50));
        }
        if let Some(p) = &synced.written.book.previous {
            let left = Duration::try_from(p.until.duration_since(Timestamp::now())).unwrap_or_default();
            at_most(left + Duration::from_millis(50));
        }
    }
    if let Some(next) = next_attempt(ctx, &ms.uid().unwrap_or_default(), status) {
        let left = Duration::try_from(next.duration_since(Timestamp::now())).unwrap_or_default();
        at_most(left + Duration::from_millis(50));
    }
    if let Some(Err(e)) = policy {
        conditions::set(
            &mut status.conditions,
            ROTATION_DUE,
            false,
            "InvalidPolicy",
            e.to_string(),
            ms.metadata.generation,
            now,
        );
    }
    come_back
}

/// Step 1: the intent, on the target Secret (the value unchanged) and in status.
async fn record_intent(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &mut ManagedSecretStatus,
    policy: &Policy,
    base: &Synced,
    intent: RotationIntent,
) -> Result<(), Failure> {
    status.rotation.get_or_insert_default().in_progress = Some(intent.clone());
    target_secret::ensure(
        ms,
        ctx,
        &base.value,
        &base.written.hash,
        status,
        Some(policy),
        Intent::Start(intent),
    )
    .await?;
    checkpoint("intent");
    Ok(())
}

/// Rotation status after a reconcile: times, conditions, Events. Returns how long until the next rotation is
/// due, for an exact requeue.
async fn report(
    ms: &ManagedSecret,
    ctx: &Context,
    status: &mut ManagedSecretStatus,
    policy: &Policy,
    synced: &Synced,
    failure: Option<&Failure>,
    now: &Time,
) -> Option<Duration> {
    let generation = ms.metadata.generation;
    let book = &synced.written.book;
    let last = last_rotation(status, book);
    let state = schedule::state(now.0, last, created(ms), policy, failure.is_some());
    status.last_rotation_time = last.map(Time);
    status.next_rotation_time = Some(Time(state.due_at));
    let rotation = status.rotation.get_or_insert_default();
    rotation.in_progress = book.intent.clone();
    // The Secret's record wins: it is written with the value, so it holds even when this process crashed
    // before writing status.
    if book.last_reason.is_some() {
        rotation.last_reason = book.last_reason.clone();
    }
    if policy.strategy != RotationStrategy::Notify
        && let Some(request) = &book.rotated_for
    {
        rotation.handled_request = Some(request.clone());
        ctx.remember_rotation(&ms.uid().unwrap_or_default(), request);
    }
    if let Some(reason) = &synced.written.replaced {
        if reason != REASON_SOURCE_CHANGED {
            audit(ctx, ms, Action::Rotated, true, Some(reason));
        }
        let note = if reason == REASON_SOURCE_CHANGED {
            format!("the value of Secret {} changed in the source", ms.target_name())
        } else {
            format!("Secret {} rotated ({reason})", ms.target_name())
        };
        publish_distinct(ctx, ms, EventType::Normal, "Rotated", "Rotate", note).await;
    }
    // Notify cannot rotate: a request is acknowledged and reported instead.
    if policy.strategy == RotationStrategy::Notify
        && let Some(request) = pending_request(ms, ctx, status, book)
    {
        let note =
            format!("rotation requested ({request}), but strategy is Notify: replace the value in the source by hand");
        publish_distinct(ctx, ms, EventType::Warning, "RotationRequested", "Rotate", note).await;
        status.rotation.get_or_insert_default().handled_request = Some(request.clone());
        ctx.remember_rotation(&ms.uid().unwrap_or_default(), &request);
    }
    let due_at = state.due_at;
    // While a failed rotation backs off, the reconciles in between (our own status writes wake the object) do
    // not try it: the condition keeps saying why the last attempt failed and when the next one is.
    let backing_off = status.rotation.as_ref().is_some_and(|r| r.failures.is_some());
    let last_failure = conditions::get(&status.conditions, ROTATION_DUE)
        .filter(|c| {
            backing_off && c.status == "True" && !matches!(c.reason.as_str(), "Due" | "NotDue" | "InvalidPolicy")
        })
        .map(|c| (c.reason.clone(), c.message.clone()));
    let (due_reason, due_message) = match (state.due, failure, last_failure) {
        (_, None, Some((reason, message))) => (reason, message),
        (_, Some(f), _) => {
            let again = status
                .rotation
                .as_ref()
                .and_then(|r| Some((r.failures?, r.next_attempt_time.as_ref()?)))
                .map(|(n, t)| format!("; {n} failure(s) in a row, next attempt at {}", t.0))
                .unwrap_or_default();
            (f.reason.to_string(), format!("rotation failed: {}{again}", f.message))
        }
        (true, None, None) => ("Due".to_string(), format!("rotation was due at {due_at}")),
        (false, None, None) => ("NotDue".to_string(), format!("next rotation due at {due_at}")),
    };
    let due = state.due || failure.is_some() || backing_off;
    conditions::set(
        &mut status.conditions,
        ROTATION_DUE,
        due,
        &due_reason,
        due_message,
        generation,
        now,
    );
    let was_overdue = conditions::get(&status.conditions, ROTATION_OVERDUE).is_some_and(|c| c.status == "True");
    let (reason, message) = if !state.overdue {
        ("NotOverdue", format!("next rotation due at {due_at}"))
    } else if let Some(f) = failure {
        (
            "RotationFailing",
            format!("rotation was due at {due_at} and is failing: {}", f.message),
        )
    } else {
        (
            "Overdue",
            format!("rotation was due at {due_at}; strategy Notify: replace the value in the source"),
        )
    };
    conditions::set(
        &mut status.conditions,
        ROTATION_OVERDUE,
        state.overdue,
        reason,
        message.clone(),
        generation,
        now,
    );
    if state.overdue && !was_overdue {
        publish(ctx, ms, EventType::Warning, "RotationOverdue", "Rotate", message).await;
    }
    if let Some(f) = failure {
        audit(ctx, ms, Action::Rotated, false, Some(f.reason));
        tracing::warn!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), reason = f.reason, message = %f.message, "rotation failed; the Secret is left as it is");
        publish(
            ctx,
            ms,
            EventType::Warning,
            "RotationFailed",
            "Rotate",
            f.message.clone(),
        )
        .await;
    }
    state.until_due
}
