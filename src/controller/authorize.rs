//! Phase 0 — authorize: everything the spec asks for needs a grant, and the spec must keep keyward's own
//! rules; otherwise nothing is read or written for the object. The decision goes into `status.access`.

use std::sync::Arc;

use kube::ResourceExt;

use super::context::Context;
use super::failure::Failure;
use crate::api::{ManagedSecret, ManagedSecretStatus};
use crate::authz;

/// Authorizes `ms`; a refusal is a denial naming every missing grant or broken rule (the first one's reason).
pub fn authorize(ms: &ManagedSecret, ctx: &Context, status: &mut ManagedSecretStatus) -> Result<(), Failure> {
    let ns = ctx.access.namespace(&ms.namespace().unwrap_or_default());
    let policies = ctx.access.policies();
    let others = || -> Vec<Arc<ManagedSecret>> { ctx.managed.as_ref().map(|s| s.state()).unwrap_or_default() };
    let namespace = |name: &str| ctx.access.namespace(name);
    let decision = authz::authorize(ms, &ns, &policies, &others, &namespace);
    status.access = Some(decision.status());
    let Some(first) = decision.refused.first() else {
        return Ok(());
    };
    let message = decision
        .refused
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Failure::denied(first.reason, message))
}
