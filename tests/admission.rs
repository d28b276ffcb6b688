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

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}

impl Pipe for serde_json::Value {}

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
            "target.key names the key of a single value",
        ),
        (
            "target key with several values",
            with(
                &["spec", "source", "esc"],
                serde_json::json!({"environment": "acme/app/prod", "data": [{"key": "A", "path": "a"}]}),
            ),
            "target.key names the key of a single value",
        ),
        (
            "path and data",
            with(
                &["spec", "source", "esc", "data"],
                serde_json::json!([{"key": "A", "path": "a"}]),
            ),
            "source.esc needs exactly one of path (one value, under target.key) or data/dataFrom",
        ),
        (
            "repeated data key",
            with(
                &["spec"],
                serde_json::json!({
                    "source": {"esc": {"environment": "acme/app/prod", "data": [{"key": "A", "path": "a"}, {"key": "A", "path": "b"}]}},
                    "target": {"name": "t"}
                }),
            ),
            "source.esc.data must not repeat a key",
        ),
        (
            "bad data key",
            with(
                &["spec"],
                serde_json::json!({
                    "source": {"esc": {"environment": "acme/app/prod", "data": [{"key": "A/B", "path": "a"}]}},
                    "target": {"name": "t"}
                }),
            ),
            "source.esc.data key must be a valid Secret data key",
        ),
        (
            "bad dataFrom path",
            with(
                &["spec"],
                serde_json::json!({
                    "source": {"esc": {"environment": "acme/app/prod", "dataFrom": [{"path": "a..b"}]}},
                    "target": {"name": "t"}
                }),
            ),
            "path must be an ESC property path",
        ),
        (
            "generated rotation of several values",
            with(
                &["spec"],
                serde_json::json!({
                    "source": {"esc": {"environment": "acme/app/prod", "dataFrom": [{"path": "app"}]}},
                    "target": {"name": "t"},
                    "rotation": {"period": "30d", "strategy": "Generate"}
                }),
            ),
            "rotation strategies Generate and Esc rotate one value",
        ),
        (
            "push of several values",
            with(
                &["spec"],
                serde_json::json!({
                    "source": {"esc": {"environment": "acme/app/prod", "dataFrom": [{"path": "app"}]}},
                    "target": {"name": "t"},
                    "rotation": {"period": "30d", "pushTo": [{"github": {"organization": "acme", "secretName": "X"}}]}
                }),
            ),
            "rotation.pushTo pushes one value",
        ),
        (
            "bad template key",
            with(
                &["spec", "target", "template"],
                serde_json::json!({"data": {"a b": "{{ PASSWORD }}"}}),
            ),
            "target.template.data keys must be valid Secret data keys",
        ),
        (
            "bad merge policy",
            with(
                &["spec", "target", "template"],
                serde_json::json!({"data": {"X": "{{ PASSWORD }}"}, "mergePolicy": "Overwrite"}),
            ),
            "supported values: \"Replace\", \"Merge\"",
        ),
        (
            "bad deletion policy",
            with(&["spec", "deletionPolicy"], serde_json::json!("Keep")),
            "supported values: \"Delete\", \"Retain\"",
        ),
        (
            "rotation with period and category",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "category": "apiKey"}),
            ),
            "rotation needs exactly one of period (e.g. 90d) or category",
        ),
        (
            "rotation without period or category",
            with(&["spec", "rotation"], serde_json::json!({"strategy": "Notify"})),
            "rotation needs exactly one of period (e.g. 90d) or category",
        ),
        (
            "bad rotation period",
            with(&["spec", "rotation"], serde_json::json!({"period": "3 months"})),
            "rotation.period must be a duration such as 90d",
        ),
        (
            "unknown category",
            with(&["spec", "rotation"], serde_json::json!({"category": "quarterly"})),
            "supported values: \"highRisk\"",
        ),
        (
            "generated value too short",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "strategy": "Generate", "generator": {"length": 8}}),
            ),
            "should be greater than or equal to 16",
        ),
        (
            "symbols without the Symbols class",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "generator": {"classes": ["Digits"], "symbols": "!"}}),
            ),
            "rotation.generator.symbols needs the Symbols class",
        ),
        (
            "Generate on a pinned revision",
            with(&["spec", "source", "esc", "version"], serde_json::json!("3")).pipe(|mut v| {
                v["spec"]["rotation"] = serde_json::json!({"period": "30d", "strategy": "Generate"});
                v
            }),
            "rotation strategies Generate and Esc need source.esc following the latest revision",
        ),
        (
            "Generate from a Kubernetes Secret",
            with(
                &["spec", "source"],
                serde_json::json!({"kubernetesSecret": {"name": "src", "key": "k"}}),
            )
            .pipe(|mut v| {
                v["spec"]["rotation"] = serde_json::json!({"category": "apiKey", "strategy": "Generate"});
                v
            }),
            "rotation strategies Generate and Esc need source.esc",
        ),
        (
            "previous key equal to the key",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "previousKey": "PASSWORD"}),
            ),
            "rotation.previousKey must differ from target.key",
        ),
        (
            "GitHub push with organization and repository",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "pushTo": [{"github": {"organization": "acme", "repository": "acme/app", "secretName": "X"}}]}),
            ),
            "github push needs exactly one of organization or repository",
        ),
        (
            "GitHub environment without repository",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "pushTo": [{"github": {"organization": "acme", "environment": "prod", "secretName": "X"}}]}),
            ),
            "github.environment needs github.repository",
        ),
        (
            "GitHub secret name with GITHUB_ prefix",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "pushTo": [{"github": {"repository": "acme/app", "secretName": "github_token"}}]}),
            ),
            "github.secretName must be letters, digits and '_'",
        ),
        (
            "selected repositories without visibility selected",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "pushTo": [{"github": {"organization": "acme", "secretName": "X", "selectedRepositoryIds": [1]}}]}),
            ),
            "github.selectedRepositoryIds needs visibility selected",
        ),
        (
            "empty pushTo entry",
            with(
                &["spec", "rotation"],
                serde_json::json!({"period": "30d", "pushTo": [{}]}),
            ),
            "pushTo entries need a target: github",
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
    // A full rotation policy is accepted too.
    let mut full = base();
    full["metadata"]["name"] = serde_json::json!("full");
    full["spec"]["rotation"] = serde_json::json!({
        "category": "database", "strategy": "Generate", "gracePeriod": "1h", "previousKey": "OLD",
        "generator": {"length": 48, "classes": ["Lowercase", "Digits", "Symbols"], "symbols": "!#%"},
        "pushTo": [
            {"github": {"organization": "acme", "secretName": "DB", "visibility": "selected", "selectedRepositoryIds": [1, 2]}},
            {"github": {"repository": "acme/app", "environment": "production", "secretName": "DB"}}
        ]
    });
    let full: DynamicObject = serde_json::from_value(full).unwrap();
    api.create(&PostParams::default(), &full).await.unwrap();
}

/// Every ManagedSecret in `examples/` is one the API server accepts (a dry run, as `kubectl apply --dry-run=server`
/// would send it), in a namespace of the test's own.
#[tokio::test]
async fn the_examples_are_accepted() {
    let ns = TestNs::new("admission-examples").await;
    install_crd(&ns.client).await;
    let gvk = GroupVersionKind::gvk("keyward.dev", "v1alpha1", "ManagedSecret");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let mut seen = 0;
    for file in ["examples/managedsecret.yaml", "examples/templates.yaml"] {
        let text = std::fs::read_to_string(support::repo().join(file)).unwrap();
        for mut doc in serde_saphyr::from_multiple::<serde_json::Value>(&text).unwrap() {
            if doc["kind"] != "ManagedSecret" {
                continue;
            }
            doc["metadata"]["namespace"] = ns.name.clone().into();
            let obj: DynamicObject = serde_json::from_value(doc).unwrap();
            let name = obj.metadata.name.clone().unwrap();
            api.create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &obj,
            )
            .await
            .unwrap_or_else(|e| panic!("{file}: {name}: {e}"));
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} examples");
}
