//! Invalid ManagedSecrets are refused by the real API server, each with a message that says what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use keyward::api::ManagedSecret;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use support::{TestNs, install_crd};

fn base() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": "x"},
        "spec": {
            "source": {"esc": {"environment": "acme/app/prod", "path": "db.password"}},
            "target": {"key": "PASSWORD"},
            "refreshInterval": "1m"
        }
    })
}

fn with(path: &[&str], value: serde_json::Value) -> serde_json::Value {
    let mut v = base();
    let mut node = &mut v;
    for p in &path[..path.len() - 1] {
        node = &mut node[*p];
    }
    node[path[path.len() - 1]] = value;
    v
}

#[tokio::test]
async fn invalid_specs_are_refused_with_readable_messages() {
    let ns = TestNs::new("admission").await;
    install_crd(&ns.client).await;
    let gvk = GroupVersionKind::gvk("keyward.dev", "v1alpha1", "ManagedSecret");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "no source",
            with(&["spec", "source"], serde_json::json!({})),
            "exactly one source must be set",
        ),
        (
            "two sources",
            with(
                &["spec", "source", "kubernetesSecret"],
                serde_json::json!({"name": "other", "key": "k"}),
            ),
            "exactly one source must be set",
        ),
        (
            "bad environment",
            with(
                &["spec", "source", "esc", "environment"],
                serde_json::json!("just-a-name"),
            ),
            "environment must be org/project/env",
        ),
        (
            "bad path",
            with(&["spec", "source", "esc", "path"], serde_json::json!("db..password")),
            "path must be an ESC property path",
        ),
        (
            "bad path bracket",
            with(&["spec", "source", "esc", "path"], serde_json::json!("db[x]")),
            "path must be an ESC property path",
        ),
        (
            "bad version",
            with(&["spec", "source", "esc", "version"], serde_json::json!("v 1")),
            "version must be a revision number or a tag",
        ),
        (
            "bad duration",
            with(&["spec", "refreshInterval"], serde_json::json!("1 hour")),
            "refreshInterval must be a duration",
        ),
        (
            "duration below floor",
            with(&["spec", "refreshInterval"], serde_json::json!("5s")),
            "at least 10s",
        ),
        (
            "days not allowed in refreshInterval",
            with(&["spec", "refreshInterval"], serde_json::json!("1d")),
            "refreshInterval must be a duration",
        ),
        (
            "bad target key",
            with(&["spec", "target", "key"], serde_json::json!("bad key!")),
            "target.key must be a valid Secret data key",
        ),
        (
            "bad target name",
            with(&["spec", "target", "name"], serde_json::json!("Bad_Name")),
            "target.name must be a valid Secret name",
        ),
        (
            "bad source secret key",
            with(
                &["spec", "source"],
                serde_json::json!({"kubernetesSecret": {"name": "src", "key": "a/b"}}),
            ),
            "key must be a valid Secret data key",
        ),
        (
            "missing target key",
            with(&["spec", "target"], serde_json::json!({"name": "t"})),
            "spec.target.key: Required value",
        ),
        (
            "bad deletion policy",
            with(&["spec", "deletionPolicy"], serde_json::json!("Keep")),
            "supported values: \"Delete\", \"Retain\"",
        ),
    ];
    assert!(cases.len() >= 8);
    for (what, obj, expected) in cases {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        let err = api.create(&PostParams::default(), &obj).await.expect_err(what);
        let msg = err.to_string();
        assert!(msg.contains(expected), "{what}: expected {expected:?} in {msg}");
    }
    // And none of them exists afterwards.
    let typed: Api<ManagedSecret> = ns.api();
    assert!(typed.list(&Default::default()).await.unwrap().items.is_empty());
    // The base object itself is fine.
    let ok: DynamicObject = serde_json::from_value(base()).unwrap();
    api.create(&PostParams::default(), &ok).await.unwrap();
}
