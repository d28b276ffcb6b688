//! One GitHub secret, one owner: among the ManagedSecrets whose pushes to a secret are granted, the one that
//! has pushed it (its `status.pushes` records the secret) owns it, and among several, or none, the oldest
//! (creation time, then namespace and name); the others are refused with the owner's name. Objects without the
//! grant never count, so nobody can take a secret over by naming it first, and a grant given later to another
//! namespace does not hand it over (creation times have a resolution of one second, so "oldest" alone can tie).
//! Status is a subresource tenants are not given (`managedsecrets/status`), so the record cannot be forged.

use super::grants::{NamespaceInfo, Policies};
use super::request::{Action, PushTarget, actions};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::ManagedSecret;

/// The ManagedSecret (`namespace/name`) that owns `target`, when it is not `ms`.
pub fn other_owner(
    ms: &ManagedSecret,
    target: &PushTarget,
    others: &[Arc<ManagedSecret>],
    policies: &Policies,
    namespace: impl Fn(&str) -> NamespaceInfo,
) -> Option<String> {
    let key = target.key();
    let rank = |m: &ManagedSecret| {
        (
            !has_pushed(m, &key),
            m.metadata.creation_timestamp.as_ref().map(|t| t.0),
            m.namespace().unwrap_or_default(),
            m.name_any(),
        )
    };
    let mine = rank(ms);
    // Cheap first: only objects that name this secret at all (most name none) get ranked and checked.
    let claim = |o: &ManagedSecret| {
        o.spec
            .rotation
            .iter()
            .flat_map(|r| &r.push_to)
            .filter_map(|p| PushTarget::from_spec(p.github.as_ref()?))
            .find(|t| t.key() == key)
            .map(Action::GithubPush)
    };
    let older = others
        .iter()
        .map(AsRef::as_ref)
        .filter(|o| o.metadata.uid != ms.metadata.uid)
        .filter_map(|o| Some((o, claim(o)?)))
        .filter(|(o, push)| {
            rank(o) < mine
                && actions(o).is_ok()
                && policies
                    .grant(&namespace(&o.namespace().unwrap_or_default()), push)
                    .is_some()
        })
        .map(|(o, _)| o)
        .min_by_key(|o| rank(o))?;
    Some(format!(
        "{}/{}",
        older.namespace().unwrap_or_default(),
        older.name_any()
    ))
}

/// Whether `ms`'s status records a push to the secret `key` (`github:...`; GitHub folds names to upper case).
fn has_pushed(ms: &ManagedSecret, key: &str) -> bool {
    ms.status.as_ref().is_some_and(|s| {
        s.pushes
            .iter()
            .any(|p| p.push_time.is_some() && p.target.eq_ignore_ascii_case(key))
    })
}
