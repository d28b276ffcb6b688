//! The foundation, proven against a real kube-apiserver and etcd: the pinned version answers, the generated
//! CRD installs, CEL rules refuse bad objects, and server-side apply changes a Deployment's pod template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use keyward::api::ManagedSecret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::{TestNs, cluster, install_crd, sample_deployment};

fn pinned_k8s_version() -> String {
    let gomod = std::fs::read_to_string(support::repo().join("tools/kube/go.mod")).unwrap();
    gomod
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut w| (w.next() == Some("k8s.io/kubernetes")).then(|| w.next().unwrap().to_string()))
        .expect("k8s.io/kubernetes pinned in tools/kube/go.mod")
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let client = cluster().client().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, pinned_k8s_version());
}

#[tokio::test]
async fn kubectl_answers_with_the_written_kubeconfig() {
    let out = cluster().kubectl(&["get", "ns", "default", "-o", "name"]);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default");
}

fn valid_msec(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"esc": {"environment": "ai-cherry/sophia/lambda-labs-production", "path": "values.sophia.ai.openai_api_key"}},
            "target": {"name": "openai", "key": "OPENAI_API_KEY"},
            "refreshInterval": "1h"
        }
    })
}

#[tokio::test]
async fn crd_installs_and_valid_managed_secret_round_trips() {
    let ns = TestNs::new("crd-valid").await;
    install_crd(&ns.client).await;
    let api: Api<ManagedSecret> = ns.api();
    let ms: ManagedSecret = serde_json::from_value(valid_msec("openai-api-key")).unwrap();
    api.create(&PostParams::default(), &ms).await.unwrap();
    let back = api.get("openai-api-key").await.unwrap();
    assert_eq!(back.spec, ms.spec);
    assert_eq!(back.target_name(), "openai");

    // The short name and printer columns are served.
    let out = cluster().kubectl(&["get", "msec", "-n", &ns.name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    for col in ["READY", "SOURCE", "LAST SYNC", "NEXT ROTATION", "AGE"] {
        assert!(table.contains(col), "missing column {col} in:\n{table}");
    }
    assert!(table.contains("ai-cherry/sophia/lambda-labs-production"));
}

#[tokio::test]
async fn invalid_managed_secret_is_refused_with_the_cel_message() {
    let ns = TestNs::new("crd-invalid").await;
    install_crd(&ns.client).await;
    let api: Api<ManagedSecret> = ns.api();
    let mut both = valid_msec("two-sources");
    both["spec"]["source"]["kubernetesSecret"] = serde_json::json!({"name": "other", "key": "k"});
    let ms: ManagedSecret = serde_json::from_value(both).unwrap();
    let err = api.create(&PostParams::default(), &ms).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("exactly one source must be set"),
        "unexpected error: {msg}"
    );
    assert!(api.get_opt("two-sources").await.unwrap().is_none());
}

#[tokio::test]
async fn server_side_apply_changes_a_pod_template_annotation() {
    let ns = TestNs::new("ssa").await;
    let api: Api<Deployment> = ns.api();
    api.create(&PostParams::default(), &sample_deployment("app"))
        .await
        .unwrap();
    let patch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
        "spec": {"template": {"metadata": {"annotations": {"keyward.dev/secrets-hash": "abc123"}}}}
    });
    api.patch("app", &PatchParams::apply("keyward"), &Patch::Apply(&patch))
        .await
        .unwrap();
    let d = api.get("app").await.unwrap();
    let ann = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(ann.get("keyward.dev/secrets-hash").map(String::as_str), Some("abc123"));
    let managers: Vec<_> = d
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == "keyward"), "field managers: {managers:?}");
}
