//! Phase 1 — one read of the source and the target Secret made to match it (`read` then `target`). The
//! reconcile syncs once; a rotation syncs again to record its intent and to take what ESC holds afterwards.

use std::time::Instant;

use super::context::Context;
use super::failure::Failure;
use super::read;
use super::target_secret::{self, Intent, Written};
use crate::api::{ManagedSecret, ManagedSecretStatus};
use crate::rotation::schedule::Policy;
use crate::source::SourceValue;

/// One read of the source and what writing the target Secret from it did.
pub struct Synced {
    pub value: SourceValue,
    pub written: Written,
}

/// Reads the source (at least as fresh as `fresh_since`) and makes the target Secret match it, changing the
/// record of a started rotation as `intent` says.
pub async fn sync(
    ms: &ManagedSecret,
    ctx: &Context,
    fresh_since: Instant,
    status: &mut ManagedSecretStatus,
    policy: Option<&Policy>,
    intent: Intent,
) -> Result<Synced, Failure> {
    let value = read::read(ms, ctx, fresh_since).await?;
    let hash = value.values.hash(&ctx.hasher);
    let written = target_secret::ensure(ms, ctx, &value, &hash, status, policy, intent).await?;
    Ok(Synced { value, written })
}
