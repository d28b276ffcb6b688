//! One reconcile of one ManagedSecret: read the source (through the shared per-cycle snapshot), make the
//! target Secret match (server-side apply, only when something differs), and record status, Events and
//! logs — none of which ever carry the value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use super::conditions::{self, CONSUMERS_UPDATED, DEGRADED, READY, ROTATION_DUE, SYNCED};
use super::target::{self, Bookkeeping, Previous};
use super::{Context, ControllerError, FIELD_MANAGER, backoff};
use super::{push, rotate};
use crate::api::{
    MANAGED_BY_LABEL, MANAGED_SECRET_ANNOTATION, ManagedSecret, ManagedSecretStatus, PREVIOUS_OF_ANNOTATION,
    REFRESH_NOW_ANNOTATION, Rollback, RotationIntent, RotationStrategy, STAMPED_REFRESH_PREFIX, SourceStatus,
    VALUE_HASH_ANNOTATION, ValueChange,
};
use crate::push::PushError;
use crate::rotation::schedule::{self, Policy};
use crate::source::esc::EnvRef;
use crate::source::{SecretBytes, SourceError, SourceValue, kubernetes};
use crate::telemetry::audit::{Action as Audited, Entry};
use crate::telemetry::metrics::{AccessLabels, ReasonLabels, RotationLabels};

/// Why a sync did not happen, as a condition reason and a message that holds no value.
pub(super) struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

impl From<PushError> for Failure {
    fn from(e: PushError) -> Self {
        Failure {
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

fn kube_failure(what: &str, e: &kube::Error) -> Failure {
    // API server messages can quote object content; keep only the code and reason.
    let message = match e {
        kube::Error::Api(s) => format!("{what} failed: HTTP {} {}", s.code, s.reason),
        _ => format!("{what} failed: API server unreachable"),
    };
    Failure {
        reason: "TargetWriteFailed",
        message,
        retry_after: None,
    }
}

/// How far into the current refresh tick we are. Ticks are aligned to the wall clock, so every ManagedSecret
/// with the same interval refreshes in the same tick and shares one ESC snapshot.
fn into_tick(interval: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let period = interval.as_millis().max(1000);
    Duration::from_millis(u64::try_from(now % period).unwrap_or(0))
}

fn tick_start(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(into_tick(interval)).unwrap_or(now)
}

fn until_next_tick(interval: Duration) -> Duration {
    // A little past the boundary, so the snapshot taken then counts as this tick's.
    interval.max(Duration::from_secs(1)).saturating_sub(into_tick(interval)) + Duration::from_millis(50)
}

async fn read_source(ms: &ManagedSecret, ctx: &Context, fresh_since: Instant) -> Result<SourceValue, SourceError> {
    let source = &ms.spec.source;
    match (&source.esc, &source.kubernetes_secret) {
        (Some(esc), None) => {
            let client = ctx.esc.as_ref().ok_or(SourceError::NotConfigured)?;
            let version = esc.version.as_deref().filter(|v| !v.is_empty());
            client.get(&esc.environment, version, &esc.path, fresh_since).await
        }
        (None, Some(k)) => {
            let ns = ms.namespace().unwrap_or_default();
            kubernetes::get(&ctx.client, &ns, &k.name, &k.key).await
        }
        _ => Err(SourceError::Invalid("exactly one source must be set".into())),
    }
}

fn source_description(ms: &ManagedSecret) -> String {
    match (&ms.spec.source.esc, &ms.spec.source.kubernetes_secret) {
        (Some(e), _) => format!("ESC {} {}", e.environment, e.path),
        (_, Some(k)) => format!("Secret {} key {}", k.name, k.key),
        _ => "no source".into(),
    }
}

/// What `ensure_secret` did.
pub(super) struct Written {
    pub wrote: bool,
    /// The rollback in force, when the Secret holds the previous value instead of the source's.
    pub holding: Option<Rollback>,
    /// The hash of the value the Secret now holds.
    pub hash: String,
    /// The rotation bookkeeping the Secret now holds.
    pub book: Bookkeeping,
    /// Set when this write replaced the value: the reason (a rotation's, or [`SOURCE_CHANGED`]).
    pub replaced: Option<String>,
}

/// The reason recorded for a value that changed in the source without keyward rotating it.
pub(crate) const SOURCE_CHANGED: &str = "changed in the source";
/// The reason recorded for a rotation that came due.
pub(crate) const SCHEDULED: &str = "scheduled";

/// The Secret that keeps the value before the last change, for `consumers.rollbackOnFailure`.
fn previous_name(ms: &ManagedSecret) -> String {
    let mut name = format!("keyward-previous-{}", ms.target_name());
    name.truncate(253);
    name
}

async fn read_previous(api: &Api<Secret>, ms: &ManagedSecret) -> Result<Option<SecretBytes>, Failure> {
    let name = previous_name(ms);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(|e| kube_failure(&format!("reading Secret {name}"), &e))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove("value"))
        .map(|b| SecretBytes::new(b.0)))
}

async fn save_previous(api: &Api<Secret>, ms: &ManagedSecret, value: &[u8], hash: &str) -> Result<(), Failure> {
    let name = previous_name(ms);
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

/// Makes the target Secret match the source — or, while a rollback is in force, the previous value.
pub(super) async fn ensure_secret(
    ms: &ManagedSecret,
    ctx: &Context,
    source: &SourceValue,
    source_hash: &str,
    status: &mut ManagedSecretStatus,
    policy: Option<&Policy>,
    start: Option<RotationIntent>,
) -> Result<Written, Failure> {
    let ns = ms.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = ms.target_name();
    let rollback_on = ms.spec.consumers.as_ref().is_some_and(|c| c.rollback_on_failure);
    let mut holding = None;
    let mut held_value = None;
    if let Some(rb) = status.rollback.clone() {
        if rollback_on && rb.failed_value_hash == source_hash {
            let previous = read_previous(&api, ms).await?.ok_or_else(|| Failure {
                reason: "RollbackUnavailable",
                message: format!(
                    "rollout of {} failed, but no previous value of Secret {name} was kept",
                    rb.workload
                ),
                retry_after: None,
            })?;
            held_value = Some(SourceValue {
                value: previous,
                revision: source.revision,
            });
            holding = Some(rb);
        } else {
            // The source moved past the value that failed (or rollback was turned off): follow it again.
            status.rollback = None;
        }
    }
    let value = held_value.as_ref().unwrap_or(source);
    let hash = match &held_value {
        Some(v) => ctx.hasher.hash(v.value.expose()),
        None => source_hash.to_string(),
    };
    let current = api
        .get_opt(name)
        .await
        .map_err(|e| kube_failure(&format!("reading Secret {name}"), &e))?;
    let (mut book, replaced) = bookkeeping(
        current.as_ref(),
        &ms.spec.target.key,
        value,
        holding.is_some(),
        policy,
        start,
    );
    if current.is_none() {
        // A recreated Secret keeps the rotation record that status still has.
        book.last_rotation = book.last_rotation.or(status.last_rotation_time.as_ref().map(|t| t.0));
        let recorded = status.rotation.as_ref();
        book.rotated_for = book
            .rotated_for
            .or_else(|| recorded.and_then(|r| r.handled_request.clone()));
        book.last_reason = book
            .last_reason
            .or_else(|| recorded.and_then(|r| r.last_reason.clone()));
    }
    let desired = target::desired(ms, value, &hash, &book);
    if let Some(current) = &current {
        let ours = current.labels().get(MANAGED_BY_LABEL.0).map(String::as_str) == Some(MANAGED_BY_LABEL.1)
            && current.annotations().get(MANAGED_SECRET_ANNOTATION) == Some(&ms.name_any());
        if !ours {
            return Err(Failure {
                reason: "TargetConflict",
                message: format!(
                    "Secret {name} exists and is not managed by this ManagedSecret; keyward will not overwrite it \
                     (delete it, or label it {}={} and annotate it {}={})",
                    MANAGED_BY_LABEL.0,
                    MANAGED_BY_LABEL.1,
                    MANAGED_SECRET_ANNOTATION,
                    ms.name_any()
                ),
                retry_after: None,
            });
        }
        if target::up_to_date(current, &desired) {
            return Ok(Written {
                wrote: false,
                holding,
                hash,
                book,
                replaced,
            });
        }
        // Keep the value being replaced, so that a failed rollout can go back to it. Written before the
        // change, so it is never only in memory.
        let old = current.data.as_ref().and_then(|d| d.get(&ms.spec.target.key));
        if rollback_on
            && holding.is_none()
            && let Some(old) = old
            && old.0 != value.value.expose()
        {
            let old_hash = ctx.hasher.hash(&old.0);
            save_previous(&api, ms, &old.0, &old_hash).await?;
            status.last_change = Some(ValueChange {
                previous_value_hash: old_hash,
                value_hash: hash.clone(),
            });
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&desired))
        .await
        .map_err(|e| kube_failure(&format!("writing Secret {name}"), &e))?;
    Ok(Written {
        wrote: true,
        holding,
        hash,
        book,
        replaced,
    })
}

/// The moment a stamped refresh request was made, as an `Instant`.
fn requested_since(request: &str) -> Option<Instant> {
    let at: jiff::Timestamp = request.strip_prefix(STAMPED_REFRESH_PREFIX)?.parse().ok()?;
    let ago = Duration::try_from(jiff::Timestamp::now().duration_since(at)).unwrap_or_default();
    Instant::now().checked_sub(ago)
}

/// The condition reason of a ManagedSecret the access policy does not allow.
pub(super) const ACCESS_DENIED: &str = "AccessDenied";

/// Refuses an ESC source the access policy does not grant to the ManagedSecret's namespace.
fn check_access(ms: &ManagedSecret, ctx: &Context) -> Result<(), Failure> {
    let Some(esc) = &ms.spec.source.esc else {
        return Ok(());
    };
    let ns = ms.namespace().unwrap_or_default();
    let env = EnvRef::parse(&esc.environment)?;
    if ctx.policy.allows(&ns, &env) {
        return Ok(());
    }
    Err(Failure {
        reason: ACCESS_DENIED,
        message: format!(
            "namespace {ns} may not read ESC environment {env}: no rule of keyward's access policy allows it"
        ),
        retry_after: None,
    })
}

/// Writes an audit line about this ManagedSecret.
pub(super) fn audit(ctx: &Context, ms: &ManagedSecret, action: Audited, success: bool, reason: Option<&str>) {
    ctx.audit.record(&Entry {
        action,
        namespace: &ms.namespace().unwrap_or_default(),
        name: &ms.name_any(),
        accessor: None,
        source_ip: None,
        success,
        reason,
    });
}

/// One read of the source and the target Secret made to match it.
pub(super) struct Synced {
    pub value: SourceValue,
    pub written: Written,
}

/// Reads the source (a snapshot at least as fresh as `fresh_since`) and makes the target Secret match it,
/// recording `start` as a started rotation when given.
pub(super) async fn sync(
    ms: &ManagedSecret,
    ctx: &Context,
    fresh_since: Instant,
    status: &mut ManagedSecretStatus,
    policy: Option<&Policy>,
    start: Option<RotationIntent>,
) -> Result<Synced, Failure> {
    check_access(ms, ctx)?;
    let value = read_source(ms, ctx, fresh_since).await?;
    let hash = ctx.hasher.hash(value.value.expose());
    let written = ensure_secret(ms, ctx, &value, &hash, status, policy, start).await?;
    Ok(Synced { value, written })
}

/// The rotation bookkeeping the target Secret should hold after this write, and the reason of the change when
/// the value is being replaced. A replaced value counts as rotated (whoever made the new one), completes a
/// started rotation, and is kept under the previous key for the grace period.
fn bookkeeping(
    current: Option<&Secret>,
    key: &str,
    value: &SourceValue,
    holding: bool,
    policy: Option<&Policy>,
    start: Option<RotationIntent>,
) -> (Bookkeeping, Option<String>) {
    let mut book = current.map(Bookkeeping::read).unwrap_or_default();
    let now = target::second(jiff::Timestamp::now());
    let old = current.and_then(|c| c.data.as_ref()).and_then(|d| d.get(key));
    let mut replaced = None;
    if !holding
        && let Some(old) = old
        && old.0 != value.value.expose()
    {
        book.last_rotation = Some(now);
        let reason = book
            .intent
            .take()
            .map_or_else(|| SOURCE_CHANGED.to_string(), |i| i.reason);
        if reason != SCHEDULED && reason != SOURCE_CHANGED {
            book.rotated_for = Some(reason.clone());
        }
        book.last_reason = Some(reason.clone());
        replaced = Some(reason);
        book.previous = policy.and_then(|p| {
            schedule::grace_until(now, p.grace).map(|until| Previous {
                key: p.previous_key.clone(),
                value: SecretBytes::new(old.0.clone()),
                until,
            })
        });
    }
    let keep_previous = match (&book.previous, policy) {
        (Some(p), Some(policy)) => now < p.until && p.key == policy.previous_key,
        _ => false,
    };
    if !keep_previous {
        book.previous = None;
    }
    if let Some(intent) = start {
        book.intent = Some(intent);
    }
    (book, replaced)
}

/// ConsumersUpdated, from the consumer list the restart task keeps in status.
fn consumers_condition(status: &mut ManagedSecretStatus, generation: Option<i64>, now: &Time) {
    if status.consumers.is_empty() && conditions::get(&status.conditions, CONSUMERS_UPDATED).is_none() {
        return;
    }
    let total = status.consumers.len();
    let failed = status.consumers.iter().filter(|c| c.state == "Failed").count();
    let behind = status.consumers.iter().filter(|c| c.state != "Restarted").count();
    let (ok, reason, message) = if failed > 0 {
        (
            false,
            "RolloutFailed",
            format!("{failed} of {total} consumer(s) failed to roll out"),
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

fn access(ms: &ManagedSecret, status: &'static str) -> AccessLabels {
    AccessLabels {
        secret_name: format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()),
        status,
    }
}

pub(super) async fn publish(
    ctx: &Context,
    ms: &ManagedSecret,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_with(&ctx.recorder, ms, type_, reason, action, note).await;
}

/// Publishes an Event that must keep its own note. The shared recorder folds Events with the same reason into
/// one series that keeps the first note; a rotation's reason or a push's target must not be lost that way.
pub(super) async fn publish_distinct(
    ctx: &Context,
    ms: &ManagedSecret,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish_with(&recorder, ms, type_, reason, action, note).await;
}

async fn publish_with(
    recorder: &Recorder,
    ms: &ManagedSecret,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &ms.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}

async fn write_status(ms: &ManagedSecret, ctx: &Context, status: &ManagedSecretStatus) -> Result<(), ControllerError> {
    if ms.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = ms.namespace().ok_or(ControllerError::MissingField("namespace"))?;
    let api: Api<ManagedSecret> = Api::namespaced(ctx.client.clone(), &ns);
    // Send only the fields this reconcile changed (null for those it cleared). The object may come from a
    // stale cache: copying its other fields back would undo newer writes (ours, or the restart task's).
    let new = serde_json::to_value(status).unwrap_or_default();
    let old = ms
        .status
        .as_ref()
        .map(serde_json::to_value)
        .and_then(Result::ok)
        .unwrap_or_default();
    let (Some(new), old) = (new.as_object(), old.as_object().cloned().unwrap_or_default()) else {
        return Ok(());
    };
    let mut changed = serde_json::Map::new();
    for (key, value) in new {
        if old.get(key) != Some(value) {
            changed.insert(key.clone(), value.clone());
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            changed.insert(key.clone(), serde_json::Value::Null);
        }
    }
    // status.consumers belongs to the restart task alone.
    changed.remove("consumers");
    if changed.is_empty() {
        return Ok(());
    }
    let new = serde_json::Value::Object(changed);
    let patch = serde_json::json!({"status": new});
    api.patch_status(&ms.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Reconciles one ManagedSecret.
pub async fn reconcile(ms: Arc<ManagedSecret>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let started = Instant::now();
    let result = reconcile_inner(&ms, &ctx).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(ms: &ManagedSecret, ctx: &Context) -> Result<Action, ControllerError> {
    if ms.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = ms.uid().ok_or(ControllerError::MissingField("uid"))?;
    let interval = ms.refresh_interval();
    let old = ms.status.clone().unwrap_or_default();
    let generation = ms.metadata.generation;
    let refresh_request = ms.annotations().get(REFRESH_NOW_ANNOTATION).cloned();
    // Also checked against memory: the cache can still hold the object from before our own status write.
    let refresh_requested = refresh_request.is_some()
        && refresh_request != old.refresh_request
        && !ctx.refresh_handled(&uid, refresh_request.as_deref());
    let fresh_since = if refresh_requested {
        // An explicit request wants what ESC holds now, not a snapshot taken before it was made. One stamped
        // with its time (the ESC webhook's) is met by any snapshot taken since: one call, one open.
        refresh_request
            .as_deref()
            .and_then(requested_since)
            .unwrap_or_else(Instant::now)
    } else if old.observed_generation != generation {
        // New or changed objects: fresh data, shared by a burst of them.
        let now = Instant::now();
        now.checked_sub(ctx.coalesce_window).unwrap_or(now)
    } else {
        tick_start(interval)
    };

    let mut status = old.clone();
    status.observed_generation = generation;
    if refresh_request.is_some() {
        status.refresh_request = refresh_request;
    }
    let now = Time(jiff::Timestamp::now());
    let source = source_description(ms);
    let target = ms.target_name().to_string();

    let (policy, policy_error) = match ms
        .spec
        .rotation
        .as_ref()
        .map(|r| schedule::policy(r, &ms.spec.target.key))
    {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    // A rotation that started and has not reached the Secret must see what ESC holds now.
    let resuming = old.rotation.as_ref().is_some_and(|r| r.in_progress.is_some());
    let fresh_since = if resuming { Instant::now() } else { fresh_since };
    let mut outcome = sync(ms, ctx, fresh_since, &mut status, policy.as_ref(), None).await;

    let mut rotation_failure = None;
    if let (Ok(synced), Some(policy)) = (&outcome, &policy)
        && synced.written.holding.is_none()
        && let Some(reason) = rotate::wanted(ms, ctx, &status, &synced.written.book, policy)
    {
        let strategy = match policy.strategy {
            RotationStrategy::Generate => "generate",
            RotationStrategy::Esc => "esc",
            RotationStrategy::Notify => "notify",
        };
        let result = rotate::rotate(ms, ctx, &mut status, policy, reason, synced, resuming).await;
        let labels = RotationLabels {
            strategy,
            result: if result.is_ok() { "success" } else { "failure" },
        };
        if !matches!(result, Ok(None)) {
            ctx.metrics.rotations.get_or_create(&labels).inc();
        }
        match result {
            Ok(Some(after)) => {
                ctx.rotation_succeeded(&uid);
                outcome = Ok(after);
            }
            Ok(None) => {}
            Err(f) => rotation_failure = Some(f),
        }
    }
    let mut push_failure = None;
    if let (Ok(synced), Some(rotation)) = (&outcome, &ms.spec.rotation)
        && !rotation.push_to.is_empty()
        && let Err(f) = push::push_all(ms, ctx, rotation, synced, &mut status, &now).await
    {
        push_failure = Some(f);
    }
    let mut requeue = until_next_tick(interval);
    if let Ok(synced) = &outcome {
        // The age of every value is tracked (secret_rotation_age_days), rotation policy or not.
        if let Some(last) = synced.written.book.last_rotation {
            status.last_rotation_time = Some(Time(last));
        }
        if let Some(policy) = &policy {
            let until_due = rotate::report(ms, ctx, &mut status, policy, synced, rotation_failure.as_ref(), &now).await;
            // Exactly at the due time (a little after, so that it counts as due), not by polling.
            if let Some(d) = until_due {
                requeue = requeue.min(d + Duration::from_millis(50));
            }
        }
        if let Some(p) = &synced.written.book.previous {
            let left = Duration::try_from(p.until.duration_since(jiff::Timestamp::now())).unwrap_or_default();
            requeue = requeue.min(left + Duration::from_millis(50));
        }
    }
    if let Some(f) = &rotation_failure {
        requeue = requeue.min(rotate::retry_in(ctx, ms, f, interval));
    }
    // Push failures back off on their own counter; objects without pushes never touch it.
    let has_pushes = ms.spec.rotation.as_ref().is_some_and(|r| !r.push_to.is_empty());
    if let Some(f) = &push_failure {
        requeue = requeue.min(backoff(ctx.failed(&format!("{uid}/push")), f.retry_after, interval));
    } else if has_pushes {
        ctx.succeeded(&format!("{uid}/push"));
    }
    if let Some(e) = &policy_error {
        conditions::set(
            &mut status.conditions,
            ROTATION_DUE,
            false,
            "InvalidPolicy",
            e.to_string(),
            generation,
            &now,
        );
    }

    match outcome {
        Ok(Synced {
            value,
            written: Written {
                wrote, holding, hash, ..
            },
        }) => {
            let revision = value.revision;
            ctx.succeeded(&uid);
            ctx.metrics.secret_access.get_or_create(&access(ms, "success")).inc();
            audit(ctx, ms, Audited::Accessed, true, None);
            if wrote {
                ctx.metrics.secrets_written.inc();
                audit(ctx, ms, Audited::Synced, true, None);
            }
            let at = revision.map(|r| format!(" at revision {r}")).unwrap_or_default();
            let message = format!("Secret {target} matches {source}{at}");
            conditions::set(
                &mut status.conditions,
                SYNCED,
                true,
                "Synced",
                message.clone(),
                generation,
                &now,
            );
            conditions::set(&mut status.conditions, READY, true, "Synced", message, generation, &now);
            status.source = Some(SourceStatus {
                revision,
                value_hash: Some(hash),
            });
            consumers_condition(&mut status, generation, &now);
            if let Some(rb) = &holding {
                let message = format!(
                    "rollout of {} failed ({}); Secret {target} holds the previous value until the source changes",
                    rb.workload, rb.message
                );
                for (type_, ok) in [(SYNCED, false), (READY, false), (DEGRADED, true)] {
                    conditions::set(
                        &mut status.conditions,
                        type_,
                        ok,
                        "RolloutFailed",
                        message.clone(),
                        generation,
                        &now,
                    );
                }
                if wrote {
                    publish(ctx, ms, EventType::Warning, "RolledBack", "Rollback", message).await;
                }
            } else if conditions::get(&status.conditions, DEGRADED).is_some() {
                let message = "the source moved past the value whose rollout failed".to_string();
                conditions::set(
                    &mut status.conditions,
                    DEGRADED,
                    false,
                    "SourceChanged",
                    message,
                    generation,
                    &now,
                );
            }
            if wrote || status.last_sync_time.is_none() {
                status.last_sync_time = Some(now.clone());
            }
            if wrote {
                tracing::info!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), secret = %target, revision = ?revision, "secret written");
                publish_distinct(
                    ctx,
                    ms,
                    EventType::Normal,
                    "Synced",
                    "Sync",
                    format!("Secret {target} written from {source}{at}"),
                )
                .await;
            }
            write_status(ms, ctx, &status).await?;
            Ok(Action::requeue(requeue))
        }
        Err(f) => {
            let n = ctx.failed(&uid);
            let denied = f.reason == ACCESS_DENIED;
            let label = if denied { "denied" } else { "failure" };
            ctx.metrics.secret_access.get_or_create(&access(ms, label)).inc();
            let action = if denied {
                Audited::AccessDenied
            } else {
                Audited::Accessed
            };
            audit(ctx, ms, action, false, Some(f.reason));
            ctx.metrics
                .sync_failures
                .get_or_create(&ReasonLabels { reason: f.reason })
                .inc();
            let before = conditions::get(&old.conditions, SYNCED).map(|c| (c.status.clone(), c.reason.clone()));
            conditions::set(
                &mut status.conditions,
                SYNCED,
                false,
                f.reason,
                f.message.clone(),
                generation,
                &now,
            );
            conditions::set(
                &mut status.conditions,
                READY,
                false,
                f.reason,
                f.message.clone(),
                generation,
                &now,
            );
            tracing::warn!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), reason = f.reason, message = %f.message, failures = n, "sync failed; the Secret is left as it is");
            if before != Some(("False".into(), f.reason.into())) {
                publish(ctx, ms, EventType::Warning, f.reason, "Sync", f.message.clone()).await;
            }
            write_status(ms, ctx, &status).await?;
            Ok(Action::requeue(backoff(n, f.retry_after, interval)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_refresh_requests_reach_back_to_their_time() {
        let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
        let since = requested_since(&format!("webhook:{at}")).unwrap();
        let ago = since.elapsed();
        assert!(ago >= Duration::from_secs(5) && ago < Duration::from_secs(7), "{ago:?}");
        assert!(requested_since("1").is_none());
        assert!(requested_since("webhook:yesterday").is_none());
    }

    #[test]
    fn ticks_are_aligned() {
        let d = until_next_tick(Duration::from_secs(60));
        assert!(d <= Duration::from_millis(60_050) && d >= Duration::from_millis(50));
        assert!(tick_start(Duration::from_secs(60)) <= Instant::now());
    }
}
