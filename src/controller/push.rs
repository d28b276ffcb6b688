//! Phase 4 — push to GitHub Actions secrets, level-triggered: every target is brought to the value the source
//! (ESC) holds, whenever the hash last pushed there differs. A failed push is therefore retried from ESC's value
//! on a later reconcile, never from a value kept in memory; pushing the same value twice is harmless.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::context::Context;
use super::failure::Failure;
use super::fault::checkpoint;
use super::record::{audit, publish, publish_distinct};
use super::sync::Synced;
use super::timing::backoff;
use crate::api::conditions::{self, PUSHED};
use crate::api::{ManagedSecret, ManagedSecretStatus, PushStatus, Rotation};
use crate::push::github::GithubScope;
use crate::telemetry::audit::Action;

/// Pushes when the spec names targets and the sync succeeded. Push failures back off on a counter of their
/// own (objects without pushes never touch it); returns how soon to come back after one. `fresh_since` is how
/// fresh this reconcile's reads must be: GitHub is asked whether someone else wrote a pushed secret no more
/// often than the source is read.
pub async fn push_if_configured(
    ms: &ManagedSecret,
    ctx: &Context,
    uid: &str,
    fresh_since: Instant,
    outcome: &Result<Synced, Failure>,
    status: &mut ManagedSecretStatus,
    now: &Time,
) -> Option<Duration> {
    let rotation = ms.spec.rotation.as_ref().filter(|r| !r.push_to.is_empty())?;
    let result = match outcome {
        Ok(synced) => push_all(ms, ctx, (uid, fresh_since), rotation, synced, status, now).await,
        Err(_) => Ok(()),
    };
    let key = format!("{uid}/push");
    match result {
        Ok(()) => {
            ctx.succeeded(&key);
            None
        }
        Err(f) => Some(backoff(ctx.failed(&key), f.retry_after, ms.refresh_interval())),
    }
}

/// Pushes the synced value wherever `rotation.pushTo` says and it is not there yet; sets condition Pushed.
async fn push_all(
    ms: &ManagedSecret,
    ctx: &Context,
    (uid, fresh_since): (&str, Instant),
    rotation: &Rotation,
    synced: &Synced,
    status: &mut ManagedSecretStatus,
    now: &Time,
) -> Result<(), Failure> {
    let generation = ms.metadata.generation;
    let hash = &synced.written.hash;
    let mut targets = Vec::new();
    let mut result = Ok(());
    for t in rotation.push_to.iter().filter_map(|p| p.github.as_ref()) {
        let scope = match GithubScope::from_target(t) {
            Ok(s) => s,
            Err(e) => {
                result = Err(Failure::from(e));
                continue;
            }
        };
        let name = scope.describe(&t.secret_name);
        targets.push(name.clone());
        if result.is_err() {
            continue;
        }
        let Some(github) = ctx.github.as_ref() else {
            result = Err(Failure::new(
                "PushNotConfigured",
                "rotation.pushTo names GitHub, but keyward has no GitHub client configured",
            ));
            continue;
        };
        let check = format!("{uid}/{name}");
        let current = |p: &PushStatus| p.target == name && p.value_hash.as_ref() == Some(hash);
        // The status this reconcile started from may predate this process's latest push (a cached object):
        // that push counts too.
        let recorded = match status.pushes.iter().find(|p| current(p)).cloned() {
            Some(r) => Some(r),
            None => ctx.pushed(&check).filter(current).inspect(|r| {
                status.pushes.retain(|p| p.target != name);
                status.pushes.push(r.clone());
            }),
        };
        if let Some(recorded) = recorded {
            if ctx.github_checked_since(&check, fresh_since) {
                continue;
            }
            // Pushed already. GitHub's updated_at tells whether someone else has written it since.
            let meta = github.secret_meta(&scope, &t.secret_name).await;
            if meta.is_ok() {
                ctx.github_checked(&check);
            }
            match meta {
                Ok(Some(meta)) if recorded.updated_at.as_ref().is_none_or(|u| *u == meta.updated_at) => {
                    if recorded.updated_at.is_none()
                        && let Some(p) = status.pushes.iter_mut().find(|p| p.target == name)
                    {
                        p.updated_at = Some(meta.updated_at);
                    }
                    continue;
                }
                Ok(meta) => {
                    let what = meta.map_or_else(
                        || "was deleted".to_string(),
                        |m| format!("was written at {} by someone else", m.updated_at),
                    );
                    let note = format!("{name} {what}; pushing the current value again");
                    tracing::warn!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), target = %name, "{what} outside keyward; pushing again");
                    publish_distinct(ctx, ms, EventType::Warning, "PushTargetChanged", "Push", note).await;
                }
                Err(e) => {
                    result = Err(Failure::from(e));
                    continue;
                }
            }
        }
        let Some(value) = ms.target_key().and_then(|k| synced.value.values.get(k)) else {
            result = Err(Failure::new(
                "PushValueMissing",
                "rotation.pushTo pushes the value under target.key, and the Secret's data does not hold it \
                 (target.template with mergePolicy Replace leaves the values read out: use Merge)",
            ));
            continue;
        };
        match github.put_secret(&scope, &t.secret_name, value).await {
            Ok(()) => {
                audit(ctx, ms, Action::Pushed, true, Some(&name));
                checkpoint("github-push");
                // Our own write's time, to tell a later write by someone else.
                let updated_at = github
                    .secret_meta(&scope, &t.secret_name)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.updated_at);
                ctx.github_checked(&check);
                let pushed = PushStatus {
                    target: name.clone(),
                    value_hash: Some(hash.clone()),
                    push_time: Some(now.clone()),
                    updated_at,
                };
                ctx.remember_push(&check, &pushed);
                status.pushes.retain(|p| p.target != name);
                status.pushes.push(pushed);
                publish_distinct(
                    ctx,
                    ms,
                    EventType::Normal,
                    "Pushed",
                    "Push",
                    format!("value pushed to {name}"),
                )
                .await;
            }
            Err(e) => {
                audit(ctx, ms, Action::Pushed, false, Some(&name));
                result = Err(Failure::from(e));
            }
        }
    }
    // Targets no longer listed are forgotten.
    status.pushes.retain(|p| targets.contains(&p.target));
    status.pushes.sort_by(|a, b| a.target.cmp(&b.target));
    let (ok, reason, message) = match &result {
        Ok(()) => (
            true,
            "Pushed",
            format!("{} target(s) hold the current value", targets.len()),
        ),
        Err(f) => (false, f.reason, f.message.clone()),
    };
    let before = conditions::get(&status.conditions, PUSHED).map(|c| (c.status.clone(), c.reason.clone()));
    conditions::set(
        &mut status.conditions,
        PUSHED,
        ok,
        reason,
        message.clone(),
        generation,
        now,
    );
    if !ok && before != Some(("False".into(), reason.into())) {
        publish(ctx, ms, EventType::Warning, reason, "Push", message).await;
    }
    result
}
