//! Sync against a real API server (with controllers, so owner-reference garbage collection really runs):
//! a `keyward run` process keeps target Secrets equal to their source, repairs drift, writes nothing in a
//! steady state, and honours deletionPolicy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::api::ManagedSecret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

async fn ns(prefix: &str) -> TestNs {
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client(prefix, client).await;
    install_crd(&ns.client).await;
    ns
}

fn secret(name: &str, key: &str, value: &[u8]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.to_string(), ByteString(value.to_vec()))])),
        ..Default::default()
    }
}

/// A namespace whose Secret `src` holds `value` (key `value`), its Secret and ManagedSecret APIs, and a keyward
/// watching it.
async fn with_source(prefix: &str, value: &[u8]) -> (TestNs, Api<Secret>, Api<ManagedSecret>, Keyward) {
    let ns = ns(prefix).await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", value))
        .await
        .unwrap();
    let keyward = Keyward::start(&ns.name, &[]);
    (ns, secrets, managed, keyward)
}

fn from_secret(name: &str, src: &str, target_key: &str, policy: &str) -> ManagedSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"kubernetesSecret": {"name": src, "key": "value"}},
            "target": {"key": target_key},
            "refreshInterval": "10s",
            "deletionPolicy": policy
        }
    }))
    .unwrap()
}

pub async fn data_of(api: &Api<Secret>, name: &str, key: &str) -> Option<Vec<u8>> {
    api.get_opt(name).await.ok()??.data?.get(key).map(|b| b.0.clone())
}

pub async fn wait_value(api: &Api<Secret>, name: &str, key: &str, want: &[u8], what: &str) {
    eventually(40, what, || async {
        (data_of(api, name, key).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// Creates ManagedSecret `name` that fills key `key` of Secret `target` from Secret `src` (deletionPolicy Delete).
async fn filling(managed: &Api<ManagedSecret>, name: &str, src: &str, key: &str, target: &str) {
    let mut ms = from_secret(name, src, key, "Delete");
    ms.spec.target.name = Some(target.into());
    managed.create(&PostParams::default(), &ms).await.unwrap();
}

/// ManagedSecret `name`'s Ready condition once its reason is `reason` (40 s at most).
async fn ready_because(managed: &Api<ManagedSecret>, name: &str, reason: &str) -> Condition {
    eventually(40, &format!("{name}: Ready because {reason}"), || async {
        let ms = managed.get(name).await.ok()?;
        let c = ms.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (c.reason == reason).then_some(c)
    })
    .await
}

#[tokio::test]
async fn kubernetes_source_syncs_follows_and_repairs_drift() {
    let ns = ns("sync-k8s").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"one"))
        .await
        .unwrap();
    let _keyward = Keyward::start(&ns.name, &[]);
    managed
        .create(&PostParams::default(), &from_secret("copy", "src", "TOKEN", "Delete"))
        .await
        .unwrap();
    wait_value(
        &secrets,
        "copy",
        "TOKEN",
        b"one",
        "target created with the source's bytes",
    )
    .await;

    let target = secrets.get("copy").await.unwrap();
    assert_eq!(
        target.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "keyward"
    );
    let ann = target.metadata.annotations.unwrap();
    // The record of ManagedSecret copy: under its name, as every ManagedSecret filling a Secret has its own.
    assert!(ann["copy.keyward.dev/value-hash"].starts_with("hmac-sha256:"));
    assert_eq!(ann["copy.keyward.dev/managed-secret"], "copy");
    assert!(
        target
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|f| f.manager.as_deref() == Some("keyward/copy")),
        "written by its own field manager"
    );
    assert_eq!(target.metadata.owner_references.unwrap()[0].kind, "ManagedSecret");

    // The source changes: the target follows (a watch event, not a poll).
    secrets
        .replace("src", &PostParams::default(), &secret("src", "value", b"two"))
        .await
        .unwrap();
    wait_value(&secrets, "copy", "TOKEN", b"two", "target follows the source").await;

    // Hand-edited: restored.
    let edit = serde_json::json!({"data": {"TOKEN": "aGFuZA=="}});
    secrets
        .patch("copy", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_value(&secrets, "copy", "TOKEN", b"two", "hand edit undone").await;

    // Deleted: recreated.
    secrets.delete("copy", &DeleteParams::default()).await.unwrap();
    wait_value(&secrets, "copy", "TOKEN", b"two", "deleted target recreated").await;

    let ms = managed.get("copy").await.unwrap();
    let status = ms.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Synced"));
    assert_eq!(status.observed_generation, ms.metadata.generation);
}

#[tokio::test]
async fn steady_state_writes_nothing() {
    let ns = ns("sync-steady").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"v"))
        .await
        .unwrap();
    let _keyward = Keyward::start(&ns.name, &[]);
    managed
        .create(&PostParams::default(), &from_secret("steady", "src", "K", "Delete"))
        .await
        .unwrap();
    wait_value(&secrets, "steady", "K", b"v", "first sync").await;
    // Let the status settle, then watch three 10s refresh cycles pass without a write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rv = |o: &kube::api::ObjectMeta| o.resource_version.clone().unwrap();
    let before = (
        rv(&secrets.get("steady").await.unwrap().metadata),
        rv(&managed.get("steady").await.unwrap().metadata),
    );
    tokio::time::sleep(Duration::from_secs(32)).await;
    let after = (
        rv(&secrets.get("steady").await.unwrap().metadata),
        rv(&managed.get("steady").await.unwrap().metadata),
    );
    assert_eq!(
        before, after,
        "resourceVersions of (Secret, ManagedSecret) changed in a steady state"
    );
}

#[tokio::test]
async fn deletion_policy_delete_and_retain() {
    let ns = ns("sync-delete").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"x"))
        .await
        .unwrap();
    let _keyward = Keyward::start(&ns.name, &[]);
    managed
        .create(&PostParams::default(), &from_secret("gone", "src", "K", "Delete"))
        .await
        .unwrap();
    managed
        .create(&PostParams::default(), &from_secret("kept", "src", "K", "Retain"))
        .await
        .unwrap();
    wait_value(&secrets, "gone", "K", b"x", "Delete target").await;
    wait_value(&secrets, "kept", "K", b"x", "Retain target").await;
    assert!(
        secrets
            .get("kept")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    managed.delete("gone", &DeleteParams::default()).await.unwrap();
    managed.delete("kept", &DeleteParams::default()).await.unwrap();
    eventually(
        60,
        "Delete policy: Secret garbage-collected with its ManagedSecret",
        || async { secrets.get_opt("gone").await.unwrap().is_none().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        data_of(&secrets, "kept", "K").await.as_deref(),
        Some(&b"x"[..]),
        "Retain policy kept the Secret"
    );
}

#[tokio::test]
async fn existing_foreign_secret_is_not_overwritten() {
    let ns = ns("sync-conflict").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"new"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("theirs", "K", b"precious"))
        .await
        .unwrap();
    let _keyward = Keyward::start(&ns.name, &[]);
    filling(&managed, "claim", "src", "K", "theirs").await;
    let cond = ready_because(&managed, "claim", "TargetConflict").await;
    assert_eq!(cond.status, "False");
    assert!(
        cond.message.contains("Secret theirs exists and is not managed"),
        "{}",
        cond.message
    );
    assert_eq!(
        data_of(&secrets, "theirs", "K").await.as_deref(),
        Some(&b"precious"[..])
    );
}

/// A new ManagedSecret's first write does not read its target when the watch never showed it (issue 16). A
/// Secret created an instant before that write — here every one: the test hook keeps keyward from learning of
/// any — is still never taken: the write is not forced, its answer shows another field manager, and what it
/// added goes again before the Secret is judged as usual. Sharing and key conflicts come out as when read.
#[tokio::test]
async fn a_secret_keyward_did_not_know_of_is_not_taken_by_an_unread_first_write() {
    let ns = ns("sync-unread").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"new"))
        .await
        .unwrap();
    let mut theirs = secret("theirs", "K", b"precious");
    theirs.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
    theirs.metadata.annotations = Some(BTreeMap::from([("note".into(), "x".into())]));
    let before = secrets.create(&PostParams::default(), &theirs).await.unwrap();
    let _keyward = Keyward::start_with_env(&ns.name, &[], &[("KEYWARD_TEST_BLIND_SECRETS", "1")]);

    // A key the Secret does not have: an unforced apply would add it — and must not keep it.
    filling(&managed, "claim", "src", "NEW", "theirs").await;
    let cond = ready_because(&managed, "claim", "TargetConflict").await;
    assert!(
        cond.message.contains("Secret theirs exists and is not managed"),
        "{}",
        cond.message
    );
    let after = secrets.get("theirs").await.unwrap();
    assert_eq!(after.data, before.data, "data as it was");
    assert_eq!(after.metadata.labels, before.metadata.labels, "labels as they were");
    assert_eq!(
        after.metadata.annotations, before.metadata.annotations,
        "annotations as they were"
    );
    assert_eq!(after.metadata.owner_references, None, "no owner reference left");
    let managers: Vec<_> = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.fields_v1.as_ref().is_some_and(|v| v.0 != serde_json::json!({})))
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.iter().all(|m| !m.starts_with("keyward")),
        "keyward owns nothing in it: {managers:?}"
    );

    // A Secret nobody had: created by the unread write.
    filling(&managed, "owner", "src", "K", "shared").await;
    wait_value(&secrets, "shared", "K", b"new", "the owner's Secret").await;
    // A key of its own next to the owner's: the unread write's answer shows only the owner's field manager
    // besides its own, and the Secret is judged as a read one would be — shared.
    filling(&managed, "third", "src", "OTHER", "shared").await;
    wait_value(
        &secrets,
        "shared",
        "OTHER",
        b"new",
        "the third's key next to the owner's",
    )
    .await;
    // The owner's key: the unforced write conflicts and writes nothing; read, it is refused naming the owner.
    filling(&managed, "second", "src", "K", "shared").await;
    let cond = ready_because(&managed, "second", "TargetConflict").await;
    assert!(
        cond.message.starts_with("key K of Secret shared is ManagedSecret"),
        "{}",
        cond.message
    );
    let shared = secrets.get("shared").await.unwrap();
    let records: Vec<_> = keyward::api::record::records(shared.annotations())
        .into_keys()
        .collect();
    assert_eq!(
        records,
        ["owner", "third"],
        "each filler's record, not the refused one's"
    );
}

/// Field report A1 (and the same kind: the old data key after `target.key` changes): what the spec no longer
/// asks for leaves the Secret at the next reconcile, not at the next value change.
#[tokio::test]
async fn the_target_follows_labels_annotations_and_key_taken_out_of_the_spec() {
    let (_ns, secrets, managed, _keyward) = with_source("sync-follow", b"v1").await;
    let mut ms = from_secret("app", "src", "K", "Delete");
    ms.spec.target.labels = BTreeMap::from([("team".into(), "a".into()), ("tier".into(), "db".into())]);
    ms.spec.target.annotations = BTreeMap::from([("example.com/owner".into(), "a".into())]);
    managed.create(&PostParams::default(), &ms).await.unwrap();
    eventually(40, "the Secret with both labels", || async {
        let s = secrets.get_opt("app").await.ok()??;
        (s.labels().contains_key("tier") && s.annotations().contains_key("example.com/owner")).then_some(())
    })
    .await;
    // Someone else's label on the same Secret stays.
    let theirs = serde_json::json!({"metadata": {"labels": {"backup": "daily"}}});
    secrets
        .patch("app", &PatchParams::default(), &Patch::Merge(&theirs))
        .await
        .unwrap();
    let spec = serde_json::json!({"spec": {"target": {"key": "NEW_K",
        "labels": {"team": "a", "tier": null}, "annotations": null}}});
    managed
        .patch("app", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    let s = eventually(
        20,
        "tier, the annotation and the old key gone, the value unchanged",
        || async {
            let s = secrets.get_opt("app").await.ok()??;
            let data = s.data.clone()?;
            let gone = !s.labels().contains_key("tier")
                && !s.annotations().contains_key("example.com/owner")
                && !data.contains_key("K");
            (gone && data.get("NEW_K")?.0 == b"v1").then_some(s)
        },
    )
    .await;
    assert_eq!(s.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(
        s.labels().get("backup").map(String::as_str),
        Some("daily"),
        "not keyward's to remove"
    );
}

/// Field report A5, and several ManagedSecrets filling one Secret: a second one that wants a key the first fills
/// is refused with a message naming the owner and writes nothing; a third with a key of its own shares the
/// Secret (its key next to the first's).
#[tokio::test]
async fn a_key_claimed_twice_is_refused_naming_the_owner_and_other_keys_share_the_secret() {
    let (ns, secrets, managed, _keyward) = with_source("sync-two", b"first").await;
    filling(&managed, "owner", "src", "K", "shared").await;
    eventually(40, "the owner's Secret", || async {
        (data_of(&secrets, "shared", "K").await?.as_slice() == b"first").then_some(())
    })
    .await;
    let mut second = from_secret("second", "src2", "K", "Delete");
    second.spec.target.name = Some("shared".into());
    secrets
        .create(&PostParams::default(), &secret("src2", "value", b"second"))
        .await
        .unwrap();
    managed.create(&PostParams::default(), &second).await.unwrap();
    let cond = ready_because(&managed, "second", "TargetConflict").await;
    assert_eq!(
        cond.message,
        format!(
            "key K of Secret shared is ManagedSecret {}/owner's, which fills it too; give this one another key or \
             target.name, or take it out of the other",
            ns.name
        )
    );
    assert_eq!(
        data_of(&secrets, "shared", "K").await.unwrap(),
        b"first",
        "the second wrote nothing"
    );
    filling(&managed, "third", "src2", "OTHER", "shared").await;
    wait_value(
        &secrets,
        "shared",
        "OTHER",
        b"second",
        "the third's key next to the owner's",
    )
    .await;
    assert_eq!(data_of(&secrets, "shared", "K").await.unwrap(), b"first");
}

/// Field report A3: `target.type` changes (immutable on a Secret): keyward replaces the Secret and says so,
/// rather than failing with the API server's 422 forever.
#[tokio::test]
async fn a_changed_target_type_replaces_the_secret() {
    let (ns, secrets, managed, _keyward) = with_source("sync-type", br#"{"auths":{}}"#).await;
    managed
        .create(
            &PostParams::default(),
            &from_secret("pull", "src", ".dockerconfigjson", "Delete"),
        )
        .await
        .unwrap();
    let before = eventually(40, "the Opaque Secret", || async {
        secrets.get_opt("pull").await.ok()?
    })
    .await;
    assert_eq!(before.type_.as_deref(), Some("Opaque"));
    let spec = serde_json::json!({"spec": {"target": {"type": "kubernetes.io/dockerconfigjson"}}});
    managed
        .patch("pull", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    let after = eventually(30, "the Secret replaced with the new type", || async {
        let s = secrets.get_opt("pull").await.ok()??;
        (s.type_.as_deref() == Some("kubernetes.io/dockerconfigjson")).then_some(s)
    })
    .await;
    assert_ne!(after.metadata.uid, before.metadata.uid, "a new object");
    assert_eq!(after.data.unwrap()[".dockerconfigjson"].0, br#"{"auths":{}}"#);
    eventually(30, "Ready again", || async {
        let c = managed
            .get("pull")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "True").then_some(())
    })
    .await;
    let events = ns.events_for("pull").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("TargetReplaced") && e.contains("kubernetes.io/dockerconfigjson")),
        "{events:?}"
    );
}

/// Field report A4: a 600 KiB value replaced with a grace period: the new value and the previous one do not fit
/// in one Secret (1 MiB). The current value always wins; `PreviousKept=False TooLarge` says what was dropped.
/// A smaller value keeps its previous copy and says where.
#[tokio::test]
async fn the_current_value_wins_when_the_previous_copy_does_not_fit() {
    let big = |c: u8| vec![c; 600 * 1024];
    let (_ns, secrets, managed, _keyward) = with_source("sync-big", &big(b'a')).await;
    let mut ms = from_secret("big", "src", "BIG", "Delete");
    ms.spec.rotation = Some(
        serde_json::from_value(serde_json::json!({"period": "90d", "gracePeriod": "1h", "strategy": "Notify"}))
            .unwrap(),
    );
    managed.create(&PostParams::default(), &ms).await.unwrap();
    eventually(40, "the first value", || async {
        (data_of(&secrets, "big", "BIG").await? == big(b'a')).then_some(())
    })
    .await;
    let next = serde_json::json!({"data": {"value": base64(&big(b'b'))}});
    secrets
        .patch("src", &PatchParams::default(), &Patch::Merge(&next))
        .await
        .unwrap();
    let s = eventually(40, "the new value, alone", || async {
        let s = secrets.get_opt("big").await.ok()??;
        (s.data.as_ref()?.get("BIG")?.0 == big(b'b')).then_some(s)
    })
    .await;
    assert!(
        !s.data.unwrap().contains_key("BIG_PREVIOUS"),
        "the previous copy did not fit"
    );
    // The status write follows the Secret's.
    let status = eventually(20, "PreviousKept TooLarge", || async {
        let status = managed.get("big").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "PreviousKept" && c.reason == "TooLarge")
            .then_some(status)
    })
    .await;
    let kept = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PreviousKept")
        .expect("PreviousKept");
    assert_eq!(
        (kept.status.as_str(), kept.reason.as_str()),
        ("False", "TooLarge"),
        "{kept:?}"
    );
    assert!(kept.message.contains("BIG_PREVIOUS"), "{}", kept.message);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // Small enough for both: the previous copy is kept, and the condition says where.
    let small = serde_json::json!({"data": {"value": base64(b"small-1")}});
    secrets
        .patch("src", &PatchParams::default(), &Patch::Merge(&small))
        .await
        .unwrap();
    eventually(40, "small-1, the big value kept as BIG_PREVIOUS", || async {
        let s = secrets.get_opt("big").await.ok()??;
        let d = s.data?;
        (d.get("BIG")?.0 == b"small-1" && d.get("BIG_PREVIOUS")?.0 == big(b'b')).then_some(())
    })
    .await;
    eventually(20, "PreviousKept=True", || async {
        let st = managed.get("big").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "PreviousKept" && c.status == "True" && c.message.contains("BIG_PREVIOUS"))
            .then_some(())
    })
    .await;
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Field report A2: `target.name` changes. With deletionPolicy Delete the old Secret goes; with Retain it stays
/// with its data but without keyward's labels, annotations and owner reference (so it never holds a stale value
/// that looks managed). Both say so in an Event.
#[tokio::test]
async fn a_renamed_target_leaves_no_managed_secret_behind() {
    let (ns, secrets, managed, _keyward) = with_source("sync-rename", b"v1").await;
    for (ms_name, policy) in [("deleting", "Delete"), ("retaining", "Retain")] {
        let mut ms = from_secret(ms_name, "src", "K", policy);
        ms.spec.target.name = Some(format!("{ms_name}-old"));
        managed.create(&PostParams::default(), &ms).await.unwrap();
    }
    for ms_name in ["deleting", "retaining"] {
        eventually(40, &format!("{ms_name}-old written"), || async {
            (data_of(&secrets, &format!("{ms_name}-old"), "K").await?.as_slice() == b"v1").then_some(())
        })
        .await;
        let spec = serde_json::json!({"spec": {"target": {"name": format!("{ms_name}-new")}}});
        managed
            .patch(ms_name, &PatchParams::default(), &Patch::Merge(&spec))
            .await
            .unwrap();
    }
    for ms_name in ["deleting", "retaining"] {
        eventually(30, &format!("{ms_name}-new written"), || async {
            (data_of(&secrets, &format!("{ms_name}-new"), "K").await?.as_slice() == b"v1").then_some(())
        })
        .await;
    }
    eventually(30, "deleting-old deleted", || async {
        secrets.get_opt("deleting-old").await.ok()?.is_none().then_some(())
    })
    .await;
    let kept = eventually(30, "retaining-old released", || async {
        let s = secrets.get_opt("retaining-old").await.ok()??;
        (!s.labels().contains_key("app.kubernetes.io/managed-by")).then_some(s)
    })
    .await;
    assert!(
        kept.annotations().keys().all(|k| !k.starts_with("keyward.dev/")),
        "{:?}",
        kept.annotations()
    );
    assert!(kept.owner_references().is_empty());
    assert_eq!(kept.data.unwrap()["K"].0, b"v1", "Retain keeps the data");
    // A later change reaches the new target only.
    let next = serde_json::json!({"data": {"value": base64(b"v2")}});
    secrets
        .patch("src", &PatchParams::default(), &Patch::Merge(&next))
        .await
        .unwrap();
    eventually(40, "v2 in retaining-new", || async {
        (data_of(&secrets, "retaining-new", "K").await?.as_slice() == b"v2").then_some(())
    })
    .await;
    assert_eq!(
        data_of(&secrets, "retaining-old", "K").await.as_deref(),
        Some(&b"v1"[..])
    );
    for ms_name in ["deleting", "retaining"] {
        let events = ns.events_for(ms_name).await;
        assert!(
            events.iter().any(|e| e.starts_with("TargetMoved")),
            "{ms_name}: {events:?}"
        );
        let st = managed.get(ms_name).await.unwrap().status.unwrap();
        assert_eq!(st.target_name.as_deref(), Some(format!("{ms_name}-new").as_str()));
    }
}

/// The kind behind A3/A4: when the API server refuses a write, the condition says why (its message: the field
/// and the rule), and no part of the value reaches the condition or an Event (canary).
#[tokio::test]
async fn a_refused_write_says_why_and_shows_no_value() {
    const CANARY: &str = "canary-refused-write-0c4b";
    let (ns, secrets, managed, keyward) = with_source("sync-refused", format!("c{CANARY} not json").as_bytes()).await;
    // Data of the wrong shape for its type is refused before it is written.
    let mut ms = from_secret("pull", "src", ".dockerconfigjson", "Delete");
    ms.spec.target.type_ = Some("kubernetes.io/dockerconfigjson".into());
    managed.create(&PostParams::default(), &ms).await.unwrap();
    let wait_reason = |name: &'static str, reason: &'static str| {
        let managed = managed.clone();
        async move {
            eventually(40, reason, || async {
                let c = managed
                    .get(name)
                    .await
                    .ok()?
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.reason == reason).then_some(c)
            })
            .await
        }
    };
    let invalid = wait_reason("pull", "InvalidSecretData").await;
    assert_eq!(
        invalid.message,
        "Secret type kubernetes.io/dockerconfigjson: .dockerconfigjson must be a JSON object"
    );
    // What the API server still refuses (here a label value) comes back with its rule, quoted fragments cut out.
    let mut ms = from_secret("labelled", "src", "VALUE", "Delete");
    ms.spec
        .target
        .labels
        .insert("tier".into(), format!("{CANARY} not a label value"));
    managed.create(&PostParams::default(), &ms).await.unwrap();
    let cond = wait_reason("labelled", "TargetWriteFailed").await;
    assert!(
        cond.message.contains("HTTP 422") && cond.message.contains("metadata.labels"),
        "the field the API server refused: {}",
        cond.message
    );
    let mut seen = format!("{}\n{}", invalid.message, cond.message);
    seen.push_str(&ns.events_for("pull").await.join("\n"));
    seen.push_str(&ns.events_for("labelled").await.join("\n"));
    seen.push_str(&keyward.logs());
    assert!(!seen.contains(CANARY), "the value leaked: {seen}");
    assert!(secrets.get_opt("pull").await.unwrap().is_none());
    assert!(secrets.get_opt("labelled").await.unwrap().is_none());
}

/// A Secret written before several ManagedSecrets could share one (the legacy record `keyward.dev/<field>`, field
/// manager `keyward`, a controller owner reference): the first write reads its signed bookkeeping, writes the
/// ManagedSecret's own record (same value hash, so no consumer restarts) and drops the legacy one.
#[tokio::test]
async fn a_secret_with_the_legacy_record_is_taken_over_keeping_its_bookkeeping() {
    use keyward::secret::ValueHasher;
    let ns = ns("sync-legacy").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    secrets
        .create(&PostParams::default(), &secret("src", "value", b"v1"))
        .await
        .unwrap();
    let ms = managed
        .create(&PostParams::default(), &from_secret("legacy", "src", "K", "Delete"))
        .await
        .unwrap();
    let uid = ms.metadata.uid.clone().unwrap();
    // As keyward 0.1 wrote it, signed with the harness's hash key.
    let hasher = ValueHasher::new(b"test-hash-key".to_vec());
    let value_hash = hasher.hash(b"v1");
    let rotated = "2026-01-02T03:04:05Z";
    let signature = hasher.hash(
        format!("{uid}\nkeyward.dev/last-rotation={rotated}\nkeyward.dev/last-rotation-reason=scheduled").as_bytes(),
    );
    let old: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "legacy",
            "labels": {"app.kubernetes.io/managed-by": "keyward"},
            "annotations": {
                "keyward.dev/managed-secret": "legacy", "keyward.dev/value-hash": value_hash,
                "keyward.dev/last-rotation": rotated, "keyward.dev/last-rotation-reason": "scheduled",
                "keyward.dev/bookkeeping": signature
            },
            "ownerReferences": [{"apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "name": "legacy",
                                 "uid": uid, "controller": true, "blockOwnerDeletion": true}]
        },
        "type": "Opaque",
        "data": {"K": "djE="}
    }))
    .unwrap();
    secrets
        .patch("legacy", &PatchParams::apply("keyward"), &Patch::Apply(&old))
        .await
        .unwrap();
    let _keyward = Keyward::start(&ns.name, &[]);
    let s = eventually(40, "the ManagedSecret's own record", || async {
        let s = secrets.get("legacy").await.ok()?;
        let ann = s.metadata.annotations.clone()?;
        (ann.contains_key("legacy.keyward.dev/value-hash") && !ann.contains_key("keyward.dev/value-hash")).then_some(s)
    })
    .await;
    let ann = s.metadata.annotations.unwrap();
    assert_eq!(ann["legacy.keyward.dev/value-hash"], value_hash, "the same value hash");
    assert_eq!(
        ann["legacy.keyward.dev/last-rotation"], rotated,
        "the bookkeeping survives"
    );
    assert!(
        ann.keys().all(|k| !k.starts_with("keyward.dev/")),
        "the legacy record is gone: {ann:?}"
    );
    let managers: Vec<String> = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert!(!managers.iter().any(|m| m == "keyward"), "{managers:?}");
    assert_eq!(s.data.unwrap()["K"].0, b"v1");
    let owners = s.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, uid);
    let st = eventually(20, "status", || async { managed.get("legacy").await.ok()?.status }).await;
    assert_eq!(st.last_rotation_time.map(|t| t.0.to_string()).as_deref(), Some(rotated));
}
