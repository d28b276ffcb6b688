//! What a reconcile tells about one ManagedSecret besides its status: Events (events.k8s.io) and audit lines.
//! Neither ever carries a value.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::context::Context;
use crate::api::ManagedSecret;
use crate::telemetry::audit::{Action, Entry};
use crate::telemetry::metrics::AccessLabels;

/// Publishes an Event through the shared recorder, which folds Events with the same reason into one series.
pub async fn publish(ctx: &Context, ms: &ManagedSecret, type_: EventType, reason: &str, action: &str, note: String) {
    publish_with(&ctx.recorder, ms, type_, reason, action, note).await;
}

/// Publishes an Event that must keep its own note. The shared recorder folds Events with the same reason into
/// one series that keeps the first note; a rotation's reason or a push's target must not be lost that way.
pub async fn publish_distinct(
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

/// Writes an audit line about this ManagedSecret.
pub fn audit(ctx: &Context, ms: &ManagedSecret, action: Action, success: bool, reason: Option<&str>) {
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

/// The labels of `secret_access_total` for this ManagedSecret.
pub fn access(ms: &ManagedSecret, status: &'static str) -> AccessLabels {
    AccessLabels {
        secret_name: format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()),
        status,
    }
}
