//! Phase 1b — make the target Secret match: the source's value (or, while a rollback is in force, the previous
//! one), the rotation bookkeeping, and the spec's labels and annotations, written by server-side apply only
//! when something differs. A Secret that is not this ManagedSecret's is never overwritten.

mod desired;
mod previous;
mod sharing;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

pub use desired::{Bookkeeping, Signer, second};

use desired::{Previous, secret_type};

use crate::api::conditions::{self, PREVIOUS_KEPT};
use crate::api::record::{self, LEGACY_FIELD_MANAGER, Record};
use crate::api::{
    DeletionPolicy, MANAGED_BY_LABEL, ManagedSecret, ManagedSecretStatus, REASON_SCHEDULED, REASON_SOURCE_CHANGED,
    Rollback, RotationIntent, ValueChange, is_reserved_key,
};
use crate::controller::consumers;
use crate::controller::context::Context;
use crate::controller::failure::{Failure, kube_failure};
use crate::controller::record::publish;
use crate::controller::settled::{Settled, SettledBook};
use crate::rotation::schedule::{self, Policy};
use crate::secret::{MAX_SECRET_DATA, SecretBytes, SecretData};
use crate::source::SourceValue;

/// What a write does to the record of a started rotation.
#[derive(Debug, Clone, Default)]
pub enum Intent {
    /// Leave it as it is (a write that replaces the value completes it).
    #[default]
    Keep,
    /// Record a rotation as started (before ESC is written).
    Start(RotationIntent),
    /// Forget it: the spec no longer asks for that rotation.
    Drop,
}

/// What [`ensure`] did.
pub struct Written {
    pub wrote: bool,
    /// The rollback in force, when the Secret holds the previous value instead of the source's.
    pub holding: Option<Rollback>,
    /// The hash of the value the Secret now holds.
    pub hash: String,
    /// The rotation bookkeeping the Secret now holds.
    pub book: Bookkeeping,
    /// Set when this write replaced the value: the reason (a rotation's, or [`REASON_SOURCE_CHANGED`]).
    pub replaced: Option<String>,
    /// Someone changed the Secret right after this write: reconcile again at once.
    pub recheck: bool,
}

/// Makes the target Secret match the source — or, while a rollback is in force, the previous value — with
/// the record of a started rotation changed as `intent` says.
pub async fn ensure(
    ms: &ManagedSecret,
    ctx: &Context,
    source: &SourceValue,
    source_hash: &str,
    status: &mut ManagedSecretStatus,
    policy: Option<&Policy>,
    intent: Intent,
) -> Result<Written, Failure> {
    let ns = ms.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = ms.target_name();
    let rollback_on = ms.spec.consumers.as_ref().is_some_and(|c| c.rollback_on_failure);
    consumers::note_failed_rollout(ms, status, source_hash);
    let mut holding = None;
    let mut held_value = None;
    if let Some(rb) = status.rollback.clone() {
        if rollback_on && rb.failed_value_hash == source_hash {
            let previous = previous::read(&api, ms).await?.ok_or_else(|| {
                Failure::new(
                    "RollbackUnavailable",
                    format!(
                        "rollout of {} failed, but no previous value of Secret {name} was kept",
                        rb.workload
                    ),
                )
            })?;
            held_value = Some(SourceValue {
                values: previous,
                revision: source.revision,
            });
            holding = Some(*rb);
        } else {
            // The source moved past the value that failed (or rollback was turned off): follow it again.
            status.rollback = None;
        }
    }
    let value = held_value.as_ref().unwrap_or(source);
    let hash = match &held_value {
        Some(v) => v.values.hash(&ctx.hasher),
        None => source_hash.to_string(),
    };
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    // Nothing that time or a rotation changes, and nothing that changed since the last reconcile found the
    // Secret matching: no need to read it again (controller/settled.rs).
    let settles = matches!(intent, Intent::Keep)
        && policy.is_none()
        && holding.is_none()
        && status.rollback.is_none()
        && status.target_name.as_deref() == Some(name);
    if settles
        && let Some(s) = ctx.wakes.settled.still(
            &uid,
            ms.metadata.generation,
            name,
            &hash,
            ctx.wakes.known_version(&ns, name).as_deref(),
        )
    {
        return Ok(Written {
            wrote: false,
            holding: None,
            hash,
            book: Bookkeeping {
                last_rotation: s.last_rotation,
                last_reason: s.last_reason,
                rotated_for: s.rotated_for,
                intent: None,
                previous: None,
            },
            replaced: None,
            recheck: false,
        });
    }
    // A Secret the watch never showed is written without reading it first: the apply, not forced, then shows
    // whether it was there after all (controller/known_secrets.rs); if so, it is taken back and read as usual.
    let mut unread = ctx.wakes.secrets.absent(&ns, name) && ctx.wakes.known_version(&ns, name).is_none();
    let plan = Plan {
        ms,
        ctx,
        api: &api,
        ns: &ns,
        name,
        value,
        hash: &hash,
        uid: &uid,
        policy,
        holding: &holding,
        rollback_on,
        settles,
        intent: &intent,
    };
    loop {
        match write(&plan, status, unread).await? {
            Some(written) => return Ok(written),
            None => unread = false,
        }
    }
}

/// What one reconcile writes into the target Secret, the same for every attempt.
struct Plan<'a> {
    ms: &'a ManagedSecret,
    ctx: &'a Context,
    api: &'a Api<Secret>,
    ns: &'a str,
    name: &'a str,
    /// The value the Secret should hold (the source's, or the previous one while a rollback holds it).
    value: &'a SourceValue,
    hash: &'a str,
    uid: &'a str,
    policy: Option<&'a Policy>,
    holding: &'a Option<Rollback>,
    rollback_on: bool,
    /// Whether the write may be remembered as settled (controller/settled.rs).
    settles: bool,
    intent: &'a Intent,
}

/// Makes the target Secret match `plan` — after reading it, or (`unread`: the watch never showed it) without.
/// None: written without reading, the Secret turned out to be there; read it and try again.
async fn write(plan: &Plan<'_>, status: &mut ManagedSecretStatus, unread: bool) -> Result<Option<Written>, Failure> {
    let Plan {
        ms,
        ctx,
        api,
        ns,
        name,
        value,
        hash,
        uid,
        policy,
        holding,
        rollback_on,
        settles,
        intent,
    } = *plan;
    let current = if unread {
        None
    } else {
        let current = api
            .get_opt(name)
            .await
            .map_err(|e| kube_failure(&format!("reading Secret {name}"), &e))?;
        ctx.wakes.read_secret(
            ns,
            name,
            current.as_ref().and_then(|c| c.metadata.resource_version.clone()),
        );
        current
    };
    let me = ms.name_any();
    let record = Record::of(&me);
    let manager = record::field_manager(&me);
    // Where this object's record is now: its own, or (a Secret written before Secrets were shared) the legacy
    // one, which is read once and replaced by this write.
    let found = current
        .as_ref()
        .and_then(|c| record::records(c.annotations()).remove(&me))
        .unwrap_or_else(|| record.clone());
    let reader = Signer {
        hasher: &ctx.hasher,
        uid,
        record: &found,
    };
    let signer = Signer {
        hasher: &ctx.hasher,
        uid,
        record: &record,
    };
    let (mut book, replaced) = bookkeeping(
        current.as_ref(),
        &reader,
        ms.target_key(),
        value,
        holding.is_some(),
        policy,
        intent.clone(),
    );
    fit_previous(ms, &mut book, value, status);
    let trusted = current.as_ref().is_none_or(|c| desired::signed(c, &reader));
    if current.is_none() || !trusted {
        // A recreated Secret keeps the rotation record that status still has; so does one whose record was
        // not written by keyward (status cannot be written by tenants).
        book.last_rotation = book.last_rotation.or(status.last_rotation_time.as_ref().map(|t| t.0));
        let recorded = status.rotation.as_ref();
        book.rotated_for = book
            .rotated_for
            .or_else(|| recorded.and_then(|r| r.handled_request.clone()));
        book.last_reason = book
            .last_reason
            .or_else(|| recorded.and_then(|r| r.last_reason.clone()));
    }
    let desired = desired::desired(ms, value, hash, &book, &signer);
    let mut others = Vec::new();
    if let Some(current) = &current {
        others = sharing::check(ms, ctx, api, current, &desired).await?;
        if !found.is_legacy() && desired::up_to_date(current, &desired, &record, &manager) {
            leave_old_target(ms, ctx, api, status).await?;
            if settles {
                settle(ctx, ms, uid, hash, &book, current.metadata.resource_version.clone());
            }
            return Ok(Some(Written {
                wrote: false,
                holding: holding.clone(),
                hash: hash.to_string(),
                book,
                replaced,
                recheck: false,
            }));
        }
        // Keep the values being replaced, so that a failed rollout can go back to them. Written before the
        // change, so they are never only in memory.
        let old = old_values(current, &value.values);
        if rollback_on && holding.is_none() && !old.is_empty() && old != value.values {
            let old_hash = old.hash(&ctx.hasher);
            previous::save(api, ms, &old, &old_hash).await?;
            status.last_change = Some(Box::new(ValueChange {
                previous_value_hash: old_hash,
                value_hash: hash.to_string(),
            }));
        }
    }
    if let Some(current) = &current
        && !trusted
    {
        let strays = desired::stray_bookkeeping(current, &desired, &record);
        if !strays.is_empty() {
            tracing::warn!(namespace = %ns, secret = %name, annotations = ?strays, "removing rotation records keyward did not write");
            let nulls: serde_json::Map<String, serde_json::Value> =
                strays.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect();
            let patch = serde_json::json!({"metadata": {"annotations": nulls}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| kube_failure(&format!("writing Secret {name}"), &e))?;
        }
    }
    if let Some(current) = &current
        && others.is_empty()
        && secret_type(current) != secret_type(&desired)
    {
        // A Secret's type is immutable (the API server answers 422): replace the Secret. Deleted only if it is
        // still the object read above (uid precondition), and recreated at once by the apply below.
        let (from, to) = (secret_type(current), secret_type(&desired));
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: current.metadata.uid.clone(),
                resource_version: None,
            }),
            ..kube::api::DeleteParams::default()
        };
        api.delete(name, &params)
            .await
            .map_err(|e| kube_failure(&format!("replacing Secret {name} (type {from} to {to})"), &e))?;
        tracing::info!(namespace = %ns, secret = %name, from, to, "replacing the Secret: its type changed");
        publish(
            ctx,
            ms,
            EventType::Normal,
            "TargetReplaced",
            "Replace",
            format!(
                "Secret {name} replaced: its type changed from {from} to {to}, which the API server does not allow \
             in place"
            ),
        )
        .await;
    }
    let flight = ctx.wakes.writing_secret(ns, name);
    // Not forced when unread: a field someone else owns is a conflict (nothing written), never taken over.
    let params = match unread {
        true => PatchParams::apply(&manager),
        false => PatchParams::apply(&manager).force(),
    };
    let applied = match api.patch(name, &params, &Patch::Apply(&desired)).await {
        Ok(applied) if !unread || alone(&applied, &manager, &[]) => applied,
        // Other ManagedSecrets fill it (written an instant ago): judged as a read one would be.
        Ok(applied)
            if alone(&applied, &manager, &fillers(&applied, &me))
                && sharing::check(ms, ctx, api, &applied, &desired).await.is_ok() =>
        {
            applied
        }
        Ok(_) => {
            // It was there: what this apply added (only fields nobody else had) goes again, and the Secret is
            // read and judged as any other.
            drop(flight);
            tracing::info!(namespace = %ns, secret = %name, "the target Secret existed after all: taking the first write back");
            sharing::remove_part(api, name, ns, &manager).await?;
            ctx.wakes.secrets.wrote(ns, name);
            return Ok(None);
        }
        Err(kube::Error::Api(e)) if unread && (e.code == 409 || e.code == 422) => {
            drop(flight);
            ctx.wakes.secrets.wrote(ns, name);
            return Ok(None);
        }
        Err(e) => {
            return Err(kube_failure(&format!("writing Secret {name}"), &e));
        }
    };
    // Someone changed the Secret right after this write (the watch showed it first): look again at once.
    let recheck = flight.wrote(applied.metadata.resource_version.clone());
    if found.is_legacy() {
        // The legacy record goes; the keys stay, now this object's field manager's too.
        sharing::remove_part(api, name, ns, LEGACY_FIELD_MANAGER).await?;
    } else if settles && !recheck {
        settle(ctx, ms, uid, hash, &book, applied.metadata.resource_version.clone());
    } else {
        ctx.wakes.settled.forget(uid);
    }
    leave_old_target(ms, ctx, api, status).await?;
    Ok(Some(Written {
        wrote: true,
        holding: holding.clone(),
        hash: hash.to_string(),
        book,
        replaced,
        recheck,
    }))
}

/// Whether a Secret as an apply by `manager` answered has no field manager but it and `also`: with `also`
/// empty, the apply created it (or nobody else ever wrote it). A Secret someone else created or touched names
/// them in its managedFields (one without any gets the API server's `before-first-apply` entry at the first
/// apply).
fn alone(applied: &Secret, manager: &str, also: &[String]) -> bool {
    applied.metadata.managed_fields.as_ref().is_some_and(|fields| {
        fields.iter().all(|f| {
            f.manager
                .as_deref()
                .is_some_and(|m| m == manager || also.iter().any(|a| a == m))
        })
    })
}

/// The field managers of the other ManagedSecrets whose records `secret` holds.
fn fillers(secret: &Secret, me: &str) -> Vec<String> {
    record::records(secret.annotations())
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(name, rec)| sharing::manager_of(name, rec))
        .collect()
}

/// Records that the target Secret, at `version`, holds what this reconcile wanted — when its bookkeeping has
/// nothing that changes with time (no previous value kept, no rotation started).
fn settle(ctx: &Context, ms: &ManagedSecret, uid: &str, hash: &str, book: &Bookkeeping, version: Option<String>) {
    let (Some(version), None, None) = (version, &book.previous, &book.intent) else {
        ctx.wakes.settled.forget(uid);
        return;
    };
    ctx.wakes.settled.record(
        uid,
        Settled {
            generation: ms.metadata.generation,
            target: ms.target_name().to_string(),
            hash: hash.to_string(),
            version,
            book: SettledBook {
                last_rotation: book.last_rotation,
                last_reason: book.last_reason.clone(),
                rotated_for: book.rotated_for.clone(),
            },
        },
    );
}

/// After `spec.target.name` changed: the Secret under the old name (status `targetName`) is deleted
/// (`deletionPolicy: Delete`) or released (`Retain`: keyward's labels, annotations and owner reference removed,
/// its data left to whoever uses it), with an Event; a Secret there that is not this object's is left alone.
/// Then status records the current name.
async fn leave_old_target(
    ms: &ManagedSecret,
    ctx: &Context,
    api: &Api<Secret>,
    status: &mut ManagedSecretStatus,
) -> Result<(), Failure> {
    let name = ms.target_name();
    let Some(old) = status.target_name.clone().filter(|old| old != name) else {
        status.target_name = Some(name.to_string());
        return Ok(());
    };
    let current = api
        .get_opt(&old)
        .await
        .map_err(|e| kube_failure(&format!("reading Secret {old}"), &e))?;
    let me = ms.name_any();
    let labelled = |s: &Secret| s.labels().get(MANAGED_BY_LABEL.0).map(String::as_str) == Some(MANAGED_BY_LABEL.1);
    if let Some(secret) = current.filter(labelled) {
        let records = record::records(secret.annotations());
        let Some(mine) = records.get(&me) else {
            status.target_name = Some(name.to_string());
            return Ok(());
        };
        let retain = ms.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Retain;
        let shared = records.len() > 1;
        if shared {
            // Others fill it too: only this object's keys and record go.
            sharing::remove_part(
                api,
                &old,
                &ms.namespace().unwrap_or_default(),
                &sharing::manager_of(&me, mine),
            )
            .await?;
        } else if retain {
            // keyward's labels, annotations and owner reference go; the data stays (an empty server-side apply
            // would take the data keys keyward applied with it).
            let ours = |k: &String| is_reserved_key(k) || k == MANAGED_BY_LABEL.0;
            let labels: serde_json::Map<_, _> = secret
                .labels()
                .keys()
                .filter(|k| ours(k))
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let annotations: serde_json::Map<_, _> = secret
                .annotations()
                .keys()
                .filter(|k| ours(k))
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let owners: Vec<_> = secret
                .owner_references()
                .iter()
                .filter(|o| Some(&o.uid) != ms.metadata.uid.as_ref())
                .cloned()
                .collect();
            let patch = serde_json::json!({"metadata": {"labels": labels, "annotations": annotations, "ownerReferences": owners}});
            api.patch(&old, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| kube_failure(&format!("releasing Secret {old}"), &e))?;
        } else {
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: secret.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..kube::api::DeleteParams::default()
            };
            match api.delete(&old, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_failure(&format!("deleting Secret {old}"), &e)),
            }
        }
        let what = if shared {
            "left to the other ManagedSecrets that fill it (this one's keys taken out)"
        } else if retain {
            "released (deletionPolicy Retain: its data stays, keyward no longer manages it)"
        } else {
            "deleted"
        };
        publish(
            ctx,
            ms,
            EventType::Normal,
            "TargetMoved",
            "Move",
            format!("the target moved from Secret {old} to Secret {name}; Secret {old} {what}"),
        )
        .await;
    }
    status.target_name = Some(name.to_string());
    Ok(())
}

/// The current value always wins: when the previous value (kept for the grace period) and the current one do
/// not fit in one Secret together, the previous copy is dropped and condition `PreviousKept` says so. While a
/// previous value is kept, `PreviousKept` says where, and until when.
fn fit_previous(ms: &ManagedSecret, book: &mut Bookkeeping, value: &SourceValue, status: &mut ManagedSecretStatus) {
    let Some(previous) = &book.previous else { return };
    let key = ms.target_key().unwrap_or_default();
    let size = value.values.size() + previous.key.len() + previous.value.expose().len();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    if size > MAX_SECRET_DATA {
        let message = format!(
            "the new value of {key} ({} bytes) and the previous one ({} bytes) do not fit in one Secret together \
             (at most {MAX_SECRET_DATA} bytes): Secret {} holds the new value only, without {}; consumers that \
             read {} lose the previous value now instead of at {}",
            value.values.get(key).map_or(0, |v| v.expose().len()),
            previous.value.expose().len(),
            ms.target_name(),
            previous.key,
            previous.key,
            previous.until,
        );
        tracing::warn!(namespace = ms.namespace().unwrap_or_default(), name = %ms.name_any(), "{message}");
        conditions::set(
            &mut status.conditions,
            PREVIOUS_KEPT,
            false,
            "TooLarge",
            message,
            ms.metadata.generation,
            &now,
        );
        book.previous = None;
    } else {
        // Said on every write, not only the one that replaced the value: a reconcile that starts from a cached
        // object older than the last status write must not put the stale condition back.
        let message = format!(
            "the previous value is kept as {} until {}",
            previous.key, previous.until
        );
        conditions::set(
            &mut status.conditions,
            PREVIOUS_KEPT,
            true,
            "Kept",
            message,
            ms.metadata.generation,
            &now,
        );
    }
}

/// The values of `current` under the keys `new` has (those this write replaces), where it has them.
fn old_values(current: &Secret, new: &SecretData) -> SecretData {
    let data = current.data.as_ref();
    new.keys()
        .filter_map(|k| Some((k.clone(), SecretBytes::new(data?.get(k)?.0.clone()))))
        .collect()
}

/// The rotation bookkeeping the target Secret should hold after this write, and the reason of the change when
/// a value is being replaced. A replaced value counts as rotated (whoever made the new one) and completes a
/// started rotation; the single value (under `key`, `target.key`) is kept under the previous key for the grace
/// period.
fn bookkeeping(
    current: Option<&Secret>,
    signer: &Signer<'_>,
    key: Option<&str>,
    value: &SourceValue,
    holding: bool,
    policy: Option<&Policy>,
    intent: Intent,
) -> (Bookkeeping, Option<String>) {
    let mut book = current.map(|c| Bookkeeping::read(c, signer)).unwrap_or_default();
    let now = second(jiff::Timestamp::now());
    let old = current.map(|c| old_values(c, &value.values)).unwrap_or_default();
    let mut replaced = None;
    if !holding && old.iter().any(|(k, v)| value.values.get(k) != Some(v)) {
        book.last_rotation = Some(now);
        let reason = book
            .intent
            .take()
            .map_or_else(|| REASON_SOURCE_CHANGED.to_string(), |i| i.reason);
        if reason != REASON_SCHEDULED && reason != REASON_SOURCE_CHANGED {
            book.rotated_for = Some(reason.clone());
        }
        book.last_reason = Some(reason.clone());
        replaced = Some(reason);
        let changed_single = key
            .and_then(|k| Some((old.get(k)?, value.values.get(k)?)))
            .filter(|(old, new)| old != new)
            .map(|(old, _)| old);
        book.previous = policy.zip(changed_single).and_then(|(p, old)| {
            schedule::grace_until(now, p.grace).map(|until| Previous {
                key: p.previous_key.clone(),
                value: old.clone(),
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
    match intent {
        Intent::Keep => {}
        Intent::Start(i) => book.intent = Some(i),
        Intent::Drop => book.intent = None,
    }
    (book, replaced)
}
