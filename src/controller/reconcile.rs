//! One reconcile of one ManagedSecret, as the phases it takes. Each phase lives in a room of its own (see the
//! controller's module documentation); this function only says in which order, and what goes from one to the
//! next.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::ControllerError;
use super::target_secret::Intent;
use super::timing::until_refresh;
use super::{authorize, outcome, push, read, rotation, sync};
use crate::api::ManagedSecret;
use crate::telemetry::metrics::ReconcileLabels;

/// Reconciles one ManagedSecret.
pub async fn reconcile(ms: Arc<ManagedSecret>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let started = Instant::now();
    ctx.wakes.started(&ms);
    ctx.metrics.reconciles_in_flight.inc();
    let result = reconcile_one(&ms, &ctx).await;
    ctx.metrics.reconciles_in_flight.dec();
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        ctx.metrics
            .reconciles
            .get_or_create(&ReconcileLabels { result: "error" })
            .inc();
    }
    result
}

async fn reconcile_one(ms: &ManagedSecret, ctx: &Context) -> Result<Action, ControllerError> {
    if ms.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = ms.uid().ok_or(ControllerError::MissingField("uid"))?;
    let now = Time(jiff::Timestamp::now());
    let mut status = ctx.status_base(ms).unwrap_or_default();
    status.observed_generation = ms.metadata.generation;
    let interval = ms.refresh_interval();

    // 0. Authorize everything the spec asks for; a refused object gets nothing read or written.
    if let Err(refused) = authorize::authorize(ms, ctx, &mut status) {
        return outcome::record(ms, ctx, &uid, Err(refused), status, &now, interval).await;
    }

    // 1. Read the source (as fresh as this object needs) and make the target Secret match it.
    let fresh_since = read::fresh_since(ms, ctx, &uid, &mut status);
    let policy = rotation::policy(ms);
    let usable = policy.as_ref().and_then(|p| p.as_ref().ok());
    let mut synced = sync::sync(ms, ctx, fresh_since, &mut status, usable, Intent::Keep).await;

    // 2. Rotate when due or asked to: the new value goes to ESC first, then into the Secret.
    let rotation_failure = rotation::rotate_if_wanted(ms, ctx, &uid, usable, &mut status, &mut synced).await;

    // 3. Push the value wherever `rotation.pushTo` names and it is not there yet.
    let push_retry = push::push_if_configured(ms, ctx, &uid, fresh_since, &synced, &mut status, &now).await;

    // 4. Report the rotation schedule: due, overdue, failing; the age of the value.
    let rotation_next = rotation::report_status(
        ms,
        ctx,
        policy.as_ref(),
        &synced,
        rotation_failure.as_ref(),
        &mut status,
        &now,
    )
    .await;

    // 5. and 6. The consumers' report (the restart task restarts them when the Secret changes), and the
    // outcome: conditions, metrics, audit, Events and one status write.
    // Someone changed the Secret right after keyward's write: at once.
    let recheck = synced
        .as_ref()
        .is_ok_and(|s| s.written.recheck)
        .then_some(std::time::Duration::ZERO);
    let requeue = [rotation_next, push_retry, recheck]
        .into_iter()
        .flatten()
        .fold(until_refresh(interval, &uid), std::cmp::min);
    outcome::record(ms, ctx, &uid, synced, status, &now, requeue).await
}
