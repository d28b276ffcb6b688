//! With kube-controller-manager, kube-scheduler and kwok running, a pod-template change made with server-side
//! apply really rolls a Deployment out: a second ReplicaSet whose Pods become Ready.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::{TestNs, cluster_with_controllers, eventually, sample_deployment};

async fn ready_replica_sets(api: &Api<ReplicaSet>) -> Vec<(String, i32)> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rs| {
            (
                rs.metadata.name.unwrap_or_default(),
                rs.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn pod_template_change_rolls_out_a_second_ready_replica_set() {
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client("rollout", client).await;
    let deployments: Api<Deployment> = ns.api();
    let replica_sets: Api<ReplicaSet> = ns.api();
    deployments
        .create(&PostParams::default(), &sample_deployment("web"))
        .await
        .unwrap();

    eventually(90, "first ReplicaSet Ready", || async {
        let rss = ready_replica_sets(&replica_sets).await;
        (rss.len() == 1 && rss[0].1 == 1).then_some(())
    })
    .await;

    let patch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"annotations": {"keyward.dev/secrets-hash": "v2"}}}}
    });
    deployments
        .patch("web", &PatchParams::apply("keyward"), &Patch::Apply(&patch))
        .await
        .unwrap();

    eventually(
        90,
        "a second ReplicaSet with its Pod Ready, the first scaled down",
        || async {
            let d = deployments.get("web").await.ok()?;
            let status = d.status?;
            let done = status.observed_generation == d.metadata.generation
                && status.updated_replicas == Some(1)
                && status.ready_replicas == Some(1)
                && status.replicas == Some(1);
            let rss = ready_replica_sets(&replica_sets).await;
            (done && rss.len() == 2 && rss.iter().filter(|r| r.1 == 1).count() == 1).then_some(())
        },
    )
    .await;
}
