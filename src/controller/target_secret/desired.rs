//! The target Secret as keyward wants it — the value, the replaced value during a grace period, and the
//! rotation bookkeeping that must survive the loss of the ManagedSecret's status — and whether a Secret already
//! is that. Pure functions of the spec and the value.
//!
//! Everything of one ManagedSecret's lives in its record (`crate::api::record`: annotations
//! `<name>.keyward.dev/<field>`, field manager `keyward/<name>`), so that several can fill one Secret.
//!
//! The bookkeeping is signed (`<name>.keyward.dev/bookkeeping`, a keyed hash over the ManagedSecret's uid and
//! the bookkeeping annotations): whoever may edit the Secret can not forge a rotation time or an intent, since
//! unsigned or altered bookkeeping is not believed (status, which tenants cannot write, is used instead), and
//! the next write puts the true record back.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::record::Record;
use crate::api::{
    DeletionPolicy, LAST_ROTATION_ANNOTATION, LAST_ROTATION_REASON_ANNOTATION, MANAGED_BY_LABEL,
    MANAGED_SECRET_ANNOTATION, ManagedSecret, PREVIOUS_KEY_ANNOTATION, PREVIOUS_UNTIL_ANNOTATION,
    ROTATED_FOR_ANNOTATION, ROTATION_INTENT_ANNOTATION, RotationIntent, SOURCE_REVISION_ANNOTATION,
    VALUE_HASH_ANNOTATION,
};
use crate::secret::{SecretBytes, ValueHasher};
use crate::source::SourceValue;

/// The keyed hash that signs the bookkeeping annotations.
pub const BOOKKEEPING_SIGNATURE_ANNOTATION: &str = "keyward.dev/bookkeeping";

/// The annotations keyward alone sets on a target Secret, which must match exactly (absent when unset).
const BOOKKEEPING: [&str; 6] = [
    LAST_ROTATION_ANNOTATION,
    LAST_ROTATION_REASON_ANNOTATION,
    ROTATED_FOR_ANNOTATION,
    ROTATION_INTENT_ANNOTATION,
    PREVIOUS_KEY_ANNOTATION,
    PREVIOUS_UNTIL_ANNOTATION,
];

/// The replaced value, kept under its own key until `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    pub key: String,
    pub value: SecretBytes,
    pub until: Timestamp,
}

/// Rotation bookkeeping kept on the target Secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bookkeeping {
    /// When the value last changed (a rotation, or a change made in the source).
    pub last_rotation: Option<Timestamp>,
    /// Why the value last changed.
    pub last_reason: Option<String>,
    /// The rotate-now request last honored.
    pub rotated_for: Option<String>,
    /// A rotation started and not yet seen in the Secret.
    pub intent: Option<RotationIntent>,
    pub previous: Option<Previous>,
}

/// Signs a Secret's bookkeeping annotations for one ManagedSecret: who signs (the value-hash key), for whom
/// (the uid, so that a record cannot be copied from another object's Secret), and where its record is.
pub struct Signer<'a> {
    pub hasher: &'a ValueHasher,
    pub uid: &'a str,
    pub record: &'a Record,
}

impl Signer<'_> {
    fn sign(&self, annotations: &BTreeMap<String, String>) -> String {
        let mut text = self.uid.to_string();
        for key in BOOKKEEPING.map(|k| self.record.key(k)) {
            if let Some(v) = annotations.get(&key) {
                text.push_str(&format!("\n{key}={v}"));
            }
        }
        self.hasher.hash(text.as_bytes())
    }
}

/// Whether the Secret's bookkeeping carries a valid signature for this ManagedSecret.
pub fn signed(secret: &Secret, signer: &Signer<'_>) -> bool {
    let ann = secret.annotations();
    ann.get(&signer.record.key(BOOKKEEPING_SIGNATURE_ANNOTATION)) == Some(&signer.sign(ann))
}

/// The bookkeeping annotations of `record` that `current` has and `desired` does not: after a forgery keyward's
/// apply does not own them, so they are removed explicitly.
pub fn stray_bookkeeping(current: &Secret, desired: &Secret, record: &Record) -> Vec<String> {
    BOOKKEEPING
        .map(|k| record.key(k))
        .into_iter()
        .filter(|k| current.annotations().contains_key(k) && !desired.annotations().contains_key(k))
        .collect()
}

impl Bookkeeping {
    /// Reads what a target Secret holds. Unreadable entries count as absent, and so does everything when the
    /// signature is missing or does not match (the record was not written by keyward for this object): they
    /// are rewritten correctly.
    pub fn read(secret: &Secret, signer: &Signer<'_>) -> Bookkeeping {
        if !signed(secret, signer) {
            return Bookkeeping::default();
        }
        let ann = secret.annotations();
        let get = |k: &str| ann.get(&signer.record.key(k));
        let time = |k: &str| get(k).and_then(|v| v.parse::<Timestamp>().ok());
        let previous = match (get(PREVIOUS_KEY_ANNOTATION), time(PREVIOUS_UNTIL_ANNOTATION)) {
            (Some(key), Some(until)) => secret.data.as_ref().and_then(|d| d.get(key)).map(|v| Previous {
                key: key.clone(),
                value: SecretBytes::new(v.0.clone()),
                until,
            }),
            _ => None,
        };
        Bookkeeping {
            last_rotation: time(LAST_ROTATION_ANNOTATION),
            last_reason: get(LAST_ROTATION_REASON_ANNOTATION).cloned(),
            rotated_for: get(ROTATED_FOR_ANNOTATION).cloned(),
            intent: get(ROTATION_INTENT_ANNOTATION).and_then(|v| serde_json::from_str(v).ok()),
            previous,
        }
    }

    fn annotate(&self, annotations: &mut BTreeMap<String, String>, signer: &Signer<'_>) {
        let record = signer.record;
        let mut put = |k: &str, v: String| annotations.insert(record.key(k), v);
        if let Some(t) = self.last_rotation {
            put(LAST_ROTATION_ANNOTATION, t.to_string());
        }
        if let Some(r) = &self.last_reason {
            put(LAST_ROTATION_REASON_ANNOTATION, r.clone());
        }
        if let Some(r) = &self.rotated_for {
            put(ROTATED_FOR_ANNOTATION, r.clone());
        }
        if let Some(i) = self.intent.as_ref().and_then(|i| serde_json::to_string(i).ok()) {
            put(ROTATION_INTENT_ANNOTATION, i);
        }
        if let Some(p) = &self.previous {
            put(PREVIOUS_KEY_ANNOTATION, p.key.clone());
            put(PREVIOUS_UNTIL_ANNOTATION, p.until.to_string());
        }
        let signature = signer.sign(annotations);
        annotations.insert(record.key(BOOKKEEPING_SIGNATURE_ANNOTATION), signature);
    }
}

/// A Secret's type as the API server defaults it (`Opaque` when unset).
pub fn secret_type(s: &Secret) -> &str {
    s.type_.as_deref().unwrap_or("Opaque")
}

/// A time as annotations and status carry it: whole seconds.
pub fn second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The Secret keyward wants, as an apply patch: everything keyward owns in it, so that what it leaves out is
/// removed.
pub fn desired(ms: &ManagedSecret, value: &SourceValue, hash: &str, book: &Bookkeeping, signer: &Signer<'_>) -> Secret {
    let spec = &ms.spec.target;
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.0.into(), MANAGED_BY_LABEL.1.into());
    let mut annotations = spec.annotations.clone();
    let record = signer.record;
    annotations.insert(record.key(MANAGED_SECRET_ANNOTATION), ms.name_any());
    annotations.insert(record.key(VALUE_HASH_ANNOTATION), hash.into());
    if let Some(rev) = value.revision {
        annotations.insert(record.key(SOURCE_REVISION_ANNOTATION), rev.to_string());
    }
    book.annotate(&mut annotations, signer);
    // Not a controller reference: a Secret several ManagedSecrets fill has one owner reference from each (the
    // API allows one controller), and the garbage collector deletes it when the last one goes.
    let owner = match ms.spec.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => ms.owner_ref(&()).map(|mut o| {
            o.block_owner_deletion = Some(true);
            vec![o]
        }),
        DeletionPolicy::Retain => None,
    };
    let mut data: BTreeMap<String, ByteString> = value
        .values
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    if let Some(p) = &book.previous {
        data.insert(p.key.clone(), ByteString(p.value.expose().to_vec()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(ms.target_name().to_string()),
            namespace: ms.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner,
            ..ObjectMeta::default()
        },
        type_: Some(spec.type_.clone().unwrap_or_else(|| "Opaque".into())),
        data: Some(data),
        ..Secret::default()
    }
}

/// Whether `current` already holds everything `desired` (of the ManagedSecret whose record is `record` and
/// field manager `manager`) says, and nothing of that ManagedSecret's that `desired` drops (other fields and
/// keys, other ManagedSecrets' among them, may exist).
pub fn up_to_date(current: &Secret, desired: &Secret, record: &Record, manager: &str) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>, have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owner_uids = |s: &Secret| -> Vec<String> {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect()
    };
    let (want, have) = (owner_uids(desired), owner_uids(current));
    // Our owner reference is there when wanted, and gone when not (deletionPolicy: Retain).
    let owners_match = want.iter().all(|u| have.contains(u))
        && (!want.is_empty()
            || !current
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ManagedSecret"));
    let data_of = |s: &Secret, k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|v| v.0.clone());
    let data_match = desired
        .data
        .iter()
        .flatten()
        .all(|(k, v)| data_of(current, k).as_ref() == Some(&v.0));
    // A grace-period key that expired must be gone.
    let stale_previous = current
        .annotations()
        .get(&record.key(PREVIOUS_KEY_ANNOTATION))
        .is_some_and(|k| data_of(current, k).is_some() && data_of(desired, k).is_none());
    let bookkeeping_match = BOOKKEEPING
        .iter()
        .chain(&[BOOKKEEPING_SIGNATURE_ANNOTATION])
        .map(|k| record.key(k))
        .all(|k| current.annotations().get(&k) == desired.annotations().get(&k));
    subset(&desired.metadata.labels, &current.metadata.labels)
        && subset(&desired.metadata.annotations, &current.metadata.annotations)
        && bookkeeping_match
        && owners_match
        && data_match
        && !stale_previous
        && current.type_ == desired.type_
        && !owned_keys(current, manager).iter().any(|(section, key)| match section {
            OwnedSection::Labels => !desired.labels().contains_key(key),
            OwnedSection::Annotations => !desired.annotations().contains_key(key),
            OwnedSection::Data => desired.data.as_ref().is_none_or(|d| !d.contains_key(key)),
        })
}

/// Where a key keyward applied lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedSection {
    Labels,
    Annotations,
    Data,
}

/// The labels, annotations and data keys field manager `manager`'s last server-side apply owns (the Secret's
/// `managedFields` entry of that manager, operation Apply). A key owned but no longer desired (a label taken
/// out of `spec.target.labels`, the old `spec.target.key`) is removed by the next apply — so while it is there
/// the Secret is not up to date. Another ManagedSecret's keys are its manager's.
pub fn owned_keys(current: &Secret, manager: &str) -> Vec<(OwnedSection, String)> {
    let mut out = Vec::new();
    let ours = current
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply"));
    for entry in ours {
        let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        for (section, node) in [
            (OwnedSection::Labels, &fields["f:metadata"]["f:labels"]),
            (OwnedSection::Annotations, &fields["f:metadata"]["f:annotations"]),
            (OwnedSection::Data, &fields["f:data"]),
        ] {
            let keys = node.as_object().into_iter().flat_map(|m| m.keys());
            out.extend(keys.filter_map(|k| Some((section, k.strip_prefix("f:")?.to_string()))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms() -> ManagedSecret {
        let mut ms: ManagedSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u1"},
            "spec": {"source": {"esc": {"environment": "o/p/e", "path": "a"}}, "target": {"key": "K", "labels": {"x": "y"}}}
        }))
        .unwrap();
        ms.metadata.uid = Some("u1".into());
        ms
    }

    fn hasher() -> ValueHasher {
        ValueHasher::new(b"test-key".to_vec())
    }

    /// The record of ManagedSecret `m` (leaked: tests only).
    fn rec() -> &'static Record {
        Box::leak(Box::new(Record::of("m")))
    }

    const MANAGER: &str = "keyward/m";

    fn signer(h: &ValueHasher) -> Signer<'_> {
        Signer {
            hasher: h,
            uid: "u1",
            record: rec(),
        }
    }

    fn value(v: &[u8]) -> SourceValue {
        SourceValue {
            values: crate::secret::SecretData::single("K", SecretBytes::new(v.to_vec())),
            revision: Some(4),
        }
    }

    #[test]
    fn desired_carries_ownership_and_hash_but_up_to_date_compares_data() {
        let ms = ms();
        let h = hasher();
        let d = desired(
            &ms,
            &value(b"v1"),
            "hmac-sha256:aa",
            &Bookkeeping::default(),
            &signer(&h),
        );
        assert_eq!(d.metadata.name.as_deref(), Some("m"));
        assert_eq!(d.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let ann = d.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[&rec().key(SOURCE_REVISION_ANNOTATION)], "4");
        assert!(up_to_date(&d, &d, rec(), MANAGER));
        let mut edited = d.clone();
        edited.data = Some(BTreeMap::from([("K".into(), ByteString(b"hand".to_vec()))]));
        assert!(!up_to_date(&edited, &d, rec(), MANAGER));
        let mut extra = d.clone();
        extra
            .data
            .as_mut()
            .unwrap()
            .insert("OTHER".into(), ByteString(b"x".to_vec()));
        assert!(up_to_date(&extra, &d, rec(), MANAGER));
    }

    /// A label taken out of the spec (or the old data key after `target.key` changed) is still owned by keyward's
    /// last apply: the Secret is not up to date until an apply removes it. Keys others own do not count.
    #[test]
    fn keys_keyward_owns_but_no_longer_wants_are_a_difference() {
        let ms = ms();
        let h = hasher();
        let d = desired(
            &ms,
            &value(b"v1"),
            "hmac-sha256:aa",
            &Bookkeeping::default(),
            &signer(&h),
        );
        let mut current = d.clone();
        current
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "a".into());
        let entry = |manager: &str, fields: serde_json::Value| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>(
                serde_json::json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}),
            )
            .unwrap()
        };
        current.metadata.managed_fields = Some(vec![entry(
            "someone-else",
            serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
        )]);
        assert!(
            up_to_date(&current, &d, rec(), MANAGER),
            "another manager's label is theirs"
        );
        current.metadata.managed_fields = Some(vec![entry(
            MANAGER,
            serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}, "f:x": {}}}, "f:data": {"f:K": {}}}),
        )]);
        assert!(
            !up_to_date(&current, &d, rec(), MANAGER),
            "keyward applied `team`, which the spec no longer has"
        );
        current.metadata.labels.as_mut().unwrap().remove("team");
        current.metadata.managed_fields = Some(vec![entry(
            MANAGER,
            serde_json::json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:data": {"f:K": {}, "f:OLD_KEY": {}}}),
        )]);
        assert!(
            !up_to_date(&current, &d, rec(), MANAGER),
            "the old data key is still keyward's"
        );
        current.metadata.managed_fields = Some(vec![entry(
            MANAGER,
            serde_json::json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:data": {"f:K": {}}}),
        )]);
        assert!(up_to_date(&current, &d, rec(), MANAGER));
    }

    #[test]
    fn bookkeeping_round_trips_and_its_removal_is_a_difference() {
        let ms = ms();
        let h = hasher();
        let sig = signer(&h);
        let at: Timestamp = "2026-11-29T07:00:00Z".parse().unwrap();
        let book = Bookkeeping {
            last_rotation: Some(at),
            last_reason: Some("leaked in chat".into()),
            rotated_for: Some("leaked in chat".into()),
            intent: Some(RotationIntent {
                reason: "scheduled".into(),
                started: at.to_string(),
                base_revision: Some(3),
                value_hash: Some("hmac-sha256:bb".into()),
            }),
            previous: Some(Previous {
                key: "K_PREVIOUS".into(),
                value: SecretBytes::new(b"old".to_vec()),
                until: at,
            }),
        };
        let with = desired(&ms, &value(b"v1"), "h", &book, &sig);
        assert_eq!(Bookkeeping::read(&with, &sig), book);
        assert_eq!(with.data.as_ref().unwrap()["K_PREVIOUS"].0, b"old");
        let without = desired(&ms, &value(b"v1"), "h", &Bookkeeping::default(), &sig);
        assert!(up_to_date(&with, &with, rec(), MANAGER));
        // The current Secret still has the previous key and the intent: not what is wanted any more.
        assert!(!up_to_date(&with, &without, rec(), MANAGER));
        let mut only_intent = book.clone();
        only_intent.previous = None;
        let d = desired(&ms, &value(b"v1"), "h", &only_intent, &sig);
        assert!(!up_to_date(&d, &without, rec(), MANAGER));
        assert!(!up_to_date(&without, &d, rec(), MANAGER));
    }

    #[test]
    fn unreadable_bookkeeping_counts_as_absent() {
        let ms = ms();
        let h = hasher();
        let sig = signer(&h);
        let mut s = desired(&ms, &value(b"v1"), "h", &Bookkeeping::default(), &sig);
        let ann = s.metadata.annotations.as_mut().unwrap();
        ann.insert(rec().key(LAST_ROTATION_ANNOTATION), "yesterday".into());
        ann.insert(rec().key(ROTATION_INTENT_ANNOTATION), "{not json".into());
        ann.insert(rec().key(PREVIOUS_KEY_ANNOTATION), "K_PREVIOUS".into());
        // Signed as keyward would, and still unreadable.
        let signature = sig.sign(ann);
        ann.insert(rec().key(BOOKKEEPING_SIGNATURE_ANNOTATION), signature);
        assert_eq!(Bookkeeping::read(&s, &sig), Bookkeeping::default());
    }

    #[test]
    fn forged_or_copied_bookkeeping_is_not_believed_and_is_rewritten() {
        let ms = ms();
        let h = hasher();
        let sig = signer(&h);
        let at: Timestamp = "2026-11-29T07:00:00Z".parse().unwrap();
        let book = Bookkeeping {
            last_rotation: Some(at),
            ..Bookkeeping::default()
        };
        let genuine = desired(&ms, &value(b"v1"), "h", &book, &sig);
        assert_eq!(Bookkeeping::read(&genuine, &sig), book);
        // Someone who may edit the Secret moves the last rotation into the future.
        let mut forged = genuine.clone();
        forged
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(rec().key(LAST_ROTATION_ANNOTATION), "2099-01-01T00:00:00Z".into());
        assert_eq!(Bookkeeping::read(&forged, &sig), Bookkeeping::default());
        assert!(
            !up_to_date(&forged, &genuine, rec(), MANAGER),
            "the next write puts the true record back"
        );
        // The same record is not believed for another ManagedSecret, nor under another key.
        let other = Signer {
            hasher: &h,
            uid: "u2",
            record: rec(),
        };
        assert_eq!(Bookkeeping::read(&genuine, &other), Bookkeeping::default());
        let other_key = ValueHasher::new(b"other".to_vec());
        assert_eq!(Bookkeeping::read(&genuine, &signer(&other_key)), Bookkeeping::default());
    }
}
