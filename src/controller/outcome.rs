//! Phase 6 — record the outcome: Synced and Ready (or why not), Degraded while a rollback holds, the source's
//! revision and value hash, ConsumersUpdated, metrics, audit lines, Events and logs — none of which ever carry
//! the value — and one status write. Returns when to come back.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::context::Context;
use super::error::ControllerError;
use super::failure::Failure;
use super::record::{access, audit, publish, publish_distinct};
use super::sync::Synced;
use super::target_secret::Written;
use super::timing::backoff;
use super::{consumers, read, status};
use crate::api::conditions::{self, DEGRADED, READY, SYNCED};
use crate::api::{ManagedSecret, ManagedSecretStatus, SourceStatus};
use crate::telemetry::audit::Action as Audited;
use crate::telemetry::metrics::{ReasonLabels, ReconcileLabels};

/// Records a sync that succeeded (`requeue`: when the phases want to come back) or failed (then the failure's
/// backoff decides), and writes status.
pub async fn record(
    ms: &ManagedSecret,
    ctx: &Context,
    uid: &str,
    outcome: Result<Synced, Failure>,
    mut status: ManagedSecretStatus,
    now: &Time,
    requeue: Duration,
) -> Result<Action, ControllerError> {
    match outcome {
        Ok(synced) => {
            synced_ok(ms, ctx, uid, synced, &mut status, now).await;
            status::write_reconciled(ms, ctx, &status).await?;
            ctx.metrics
                .reconciles
                .get_or_create(&ReconcileLabels { result: "success" })
                .inc();
            Ok(Action::requeue(requeue))
        }
        Err(f) => {
            let n = ctx.failed(uid);
            failed(ms, ctx, &f, n, &mut status, now).await;
            status::write_reconciled(ms, ctx, &status).await?;
            ctx.metrics
                .reconciles
                .get_or_create(&ReconcileLabels { result: "failure" })
                .inc();
            Ok(Action::requeue(backoff(n, f.retry_after, ms.refresh_interval())))
        }
    }
}

async fn synced_ok(
    ms: &ManagedSecret,
    ctx: &Context,
    uid: &str,
    synced: Synced,
    status: &mut ManagedSecretStatus,
    now: &Time,
) {
    let Synced {
        value,
        written: Written {
            wrote, holding, hash, ..
        },
    } = synced;
    let generation = ms.metadata.generation;
    let target = ms.target_name().to_string();
    let source = read::describe(ms);
    let revision = value.revision;
    ctx.succeeded(uid);
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
        now,
    );
    conditions::set(&mut status.conditions, READY, true, "Synced", message, generation, now);
    status.source = Some(SourceStatus {
        revision,
        value_hash: Some(hash),
    });
    consumers::condition(status, generation, now);
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
                now,
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
            now,
        );
    }
    // The first sync of an object gets no Event: its status (Ready, lastSyncTime) and the Secret's creation
    // say it, and at scale an Event per new object would double the API writes of a bulk create. Every later
    // write (a new value, drift repaired) gets one: that is what someone may need to notice afterwards.
    let first_sync = status.last_sync_time.is_none();
    if wrote || first_sync {
        status.last_sync_time = Some(now.clone());
    }
    if wrote {
        tracing::info!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), secret = %target, revision = ?revision, "secret written");
    }
    if wrote && !first_sync {
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
}

async fn failed(ms: &ManagedSecret, ctx: &Context, f: &Failure, n: u32, status: &mut ManagedSecretStatus, now: &Time) {
    let generation = ms.metadata.generation;
    let denied = f.denied;
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
    let before = ms
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, SYNCED))
        .map(|c| (c.status.clone(), c.reason.clone()));
    for type_ in [SYNCED, READY] {
        conditions::set(
            &mut status.conditions,
            type_,
            false,
            f.reason,
            f.message.clone(),
            generation,
            now,
        );
    }
    tracing::warn!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), reason = f.reason, message = %f.message, failures = n, "sync failed; the Secret is left as it is");
    if before != Some(("False".into(), f.reason.into())) {
        publish(ctx, ms, EventType::Warning, f.reason, "Sync", f.message.clone()).await;
    }
}
