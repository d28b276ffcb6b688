//! Phase 1a — read the source: how fresh the read must be (this refresh tick's shared snapshot, a fresh one
//! for a new or changed object or a refresh-now request, the newest for a rotation to finish), and the read.

use std::time::Instant;

use kube::ResourceExt;

use super::context::Context;
use super::failure::Failure;
use super::timing::{requested_since, tick_start};
use crate::api::{ManagedSecret, ManagedSecretStatus, REFRESH_NOW_ANNOTATION};
use crate::render;
use crate::source::SourceValue;

/// How fresh this reconcile's read of the source must be. A refresh-now request it honours is recorded in
/// `status` (and in memory: the cache can still hold the object from before our own status write).
pub fn fresh_since(ms: &ManagedSecret, ctx: &Context, uid: &str, status: &mut ManagedSecretStatus) -> Instant {
    let old = ms.status.clone().unwrap_or_default();
    let refresh_request = ms.annotations().get(REFRESH_NOW_ANNOTATION).cloned();
    let refresh_requested = refresh_request.is_some()
        && refresh_request != old.refresh_request
        && !ctx.refresh_handled(uid, refresh_request.as_deref());
    if refresh_request.is_some() {
        status.refresh_request = refresh_request.clone();
    }
    // A rotation that started and has not reached the Secret must see what ESC holds now.
    let resuming = old.rotation.as_ref().is_some_and(|r| r.in_progress.is_some());
    if resuming {
        Instant::now()
    } else if refresh_requested {
        // An explicit request wants what ESC holds now, not a snapshot taken before it was made. One stamped
        // with its time (the ESC webhook's) is met by any snapshot taken since: one call, one open.
        refresh_request
            .as_deref()
            .and_then(requested_since)
            .unwrap_or_else(Instant::now)
    } else if old.observed_generation != ms.metadata.generation {
        // New or changed objects: fresh data, shared by a burst of them.
        let now = Instant::now();
        now.checked_sub(ctx.coalesce_window).unwrap_or(now)
    } else {
        tick_start(ms.refresh_interval())
    }
}

/// Reads the values the spec names, from a read at least as fresh as `fresh_since` (authorization has allowed
/// it), and makes the target's data of them (`target.template`, the checks of `target.type`): what comes back is
/// what the Secret should hold.
pub async fn read(ms: &ManagedSecret, ctx: &Context, fresh_since: Instant) -> Result<SourceValue, Failure> {
    let ns = ms.namespace().unwrap_or_default();
    let read = ctx.source.read(&ns, &ms.spec, fresh_since).await?;
    Ok(SourceValue {
        values: render::render(&ms.spec, read.values)?,
        revision: read.revision,
    })
}

/// The source, for messages: `ESC org/project/env path` or `Secret name key K`.
pub fn describe(ms: &ManagedSecret) -> String {
    match (&ms.spec.source.esc, &ms.spec.source.kubernetes_secret) {
        (Some(e), _) => match &e.path {
            Some(path) => format!("ESC {} {path}", e.environment),
            None => format!(
                "ESC {} ({} data, {} dataFrom)",
                e.environment,
                e.data.len(),
                e.data_from.len()
            ),
        },
        (_, Some(k)) => format!("Secret {} key {}", k.name, k.key),
        _ => "no source".into(),
    }
}
