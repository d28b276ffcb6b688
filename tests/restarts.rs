//! Consumer restarts against a real control plane with kube-controller-manager, kube-scheduler and kwok: a
//! changed Secret rolls exactly the workloads that consume it, once, coalesced and within budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use keyward::api::ManagedSecret;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

async fn ns(prefix: &str) -> TestNs {
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client(prefix, client).await;
    install_crd(&ns.client).await;
    ns
}

/// keyward with a short debounce, so tests run quickly.
fn keyward(ns: &TestNs, extra: &[&str]) -> Keyward {
    let mut args: Vec<&str> = extra.to_vec();
    if !extra.contains(&"--restart-debounce-seconds") {
        args.extend(["--restart-debounce-seconds", "2"]);
    }
    Keyward::start(&ns.name, &args)
}

/// A source Secret `src-NAME` and a ManagedSecret NAME writing Secret NAME (key VALUE) from it.
async fn managed(ns: &TestNs, name: &str, value: &str, consumers: serde_json::Value) {
    let secrets: Api<Secret> = ns.api();
    let src = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("src-{name}")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &src).await.unwrap();
    let ms: ManagedSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"kubernetesSecret": {"name": format!("src-{name}"), "key": "value"}},
            "target": {"key": "VALUE"},
            "refreshInterval": "1h",
            "consumers": consumers
        }
    }))
    .unwrap();
    ns.api::<ManagedSecret>()
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    eventually(30, "target Secret written", || async {
        let s = secrets.get_opt(name).await.ok()??;
        (s.data?.get("VALUE")?.0 == value.as_bytes()).then_some(())
    })
    .await;
}

async fn set_source(ns: &TestNs, name: &str, value: &str) {
    let patch = serde_json::json!({"data": {"value": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value)}});
    ns.api::<Secret>()
        .patch(&format!("src-{name}"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn container(uses: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"name": "app", "image": "registry.invalid/app:1"});
    if let (Some(c), Some(u)) = (c.as_object_mut(), uses.as_object()) {
        c.extend(u.clone());
    }
    c
}

fn pod_spec(uses: serde_json::Value, volumes: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"containers": [container(uses)], "volumes": volumes})
}

async fn deployment(ns: &TestNs, name: &str, spec: serde_json::Value, annotations: serde_json::Value) {
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    }))
    .unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &d).await.unwrap();
}

/// A one-replica Deployment reading Secret `secret` through env, with `extra` merged into its spec.
async fn env_consumer(ns: &TestNs, name: &str, secret: &str, extra: serde_json::Value) {
    let mut spec = serde_json::json!({"replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(env_ref(secret), serde_json::json!([]))}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let d: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &d).await.unwrap();
}

/// Waits until `name` has rolled out and keyward has adopted it (without a restart).
async fn wait_adopted(ns: &TestNs, name: &str) {
    eventually(60, &format!("{name} rolled out and adopted"), || async {
        (rolled_out(ns, name).await && adopted(ns, name).await).then_some(())
    })
    .await;
}

fn env_ref(secret: &str) -> serde_json::Value {
    serde_json::json!({"env": [{"name": "V", "valueFrom": {"secretKeyRef": {"name": secret, "key": "VALUE"}}}]})
}

async fn replica_sets(ns: &TestNs, app: &str) -> usize {
    let rs: Api<ReplicaSet> = ns.api();
    rs.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

async fn revisions(ns: &TestNs, app: &str) -> usize {
    let cr: Api<ControllerRevision> = ns.api();
    cr.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

async fn adopted(ns: &TestNs, name: &str) -> bool {
    let d = ns.api::<Deployment>().get(name).await.unwrap();
    let meta = d
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("keyward.dev/secrets-hash");
    let template = d
        .spec
        .unwrap()
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default()
        .contains_key("keyward.dev/secrets-hash");
    meta || template
}

async fn rolled_out(ns: &TestNs, name: &str) -> bool {
    let d = ns.api::<Deployment>().get(name).await.unwrap();
    let st = d.status.unwrap_or_default();
    st.observed_generation == d.metadata.generation
        && st.updated_replicas == Some(1)
        && st.ready_replicas == Some(1)
        && st.replicas == Some(1)
}

#[tokio::test]
async fn a_change_restarts_every_kind_of_consumer_once_and_nothing_else() {
    let ns = ns("restart-kinds").await;
    let _keyward = keyward(&ns, &[]);
    managed(&ns, "db", "v1", serde_json::json!({"policy": "Auto"})).await;
    managed(&ns, "other", "o1", serde_json::json!({"policy": "Auto"})).await;

    deployment(
        &ns,
        "by-env",
        pod_spec(env_ref("db"), serde_json::json!([])),
        serde_json::json!({}),
    )
    .await;
    deployment(
        &ns,
        "by-envfrom",
        pod_spec(
            serde_json::json!({"envFrom": [{"secretRef": {"name": "db"}}]}),
            serde_json::json!([]),
        ),
        serde_json::json!({}),
    )
    .await;
    deployment(
        &ns,
        "by-volume",
        pod_spec(
            serde_json::json!({"volumeMounts": [{"name": "s", "mountPath": "/s"}]}),
            serde_json::json!([{"name": "s", "secret": {"secretName": "db"}}]),
        ),
        serde_json::json!({}),
    )
    .await;
    deployment(
        &ns,
        "bystander",
        pod_spec(env_ref("other"), serde_json::json!([])),
        serde_json::json!({}),
    )
    .await;
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "by-sts"},
        "spec": {"replicas": 1, "serviceName": "by-sts", "selector": {"matchLabels": {"app": "by-sts"}},
                 "template": {"metadata": {"labels": {"app": "by-sts"}}, "spec": pod_spec(serde_json::json!({}), serde_json::json!([
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "db"}}]}}]))}}
    }))
    .unwrap();
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "by-ds"},
        "spec": {"selector": {"matchLabels": {"app": "by-ds"}},
                 "template": {"metadata": {"labels": {"app": "by-ds"}}, "spec": {
                    "initContainers": [{"name": "init", "image": "registry.invalid/init:1", "env": env_ref("db")["env"]}], "containers": [container(serde_json::json!({}))]}}}
    }))
    .unwrap();
    ns.api::<DaemonSet>().create(&PostParams::default(), &ds).await.unwrap();

    let deployments = ["by-env", "by-envfrom", "by-volume", "bystander"];
    eventually(
        90,
        "every workload rolled out and adopted without a restart",
        || async {
            for d in deployments {
                if !rolled_out(&ns, d).await || !adopted(&ns, d).await {
                    return None;
                }
            }
            (revisions(&ns, "by-sts").await == 1 && revisions(&ns, "by-ds").await == 1).then_some(())
        },
    )
    .await;
    for d in deployments {
        assert_eq!(replica_sets(&ns, d).await, 1, "{d} was restarted on adoption");
    }

    set_source(&ns, "db", "v2").await;
    eventually(90, "each consumer rolled once", || async {
        for d in ["by-env", "by-envfrom", "by-volume"] {
            if replica_sets(&ns, d).await != 2 || !rolled_out(&ns, d).await {
                return None;
            }
        }
        (revisions(&ns, "by-sts").await == 2 && revisions(&ns, "by-ds").await == 2).then_some(())
    })
    .await;
    // Settle, then nothing more happens: no second restart, and the bystander was never touched.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for d in ["by-env", "by-envfrom", "by-volume"] {
        assert_eq!(replica_sets(&ns, d).await, 2, "{d}");
    }
    assert_eq!(revisions(&ns, "by-sts").await, 2);
    assert_eq!(revisions(&ns, "by-ds").await, 2);
    assert_eq!(
        replica_sets(&ns, "bystander").await,
        1,
        "a workload that does not consume db was restarted"
    );

    // Status lists each consumer, with the hash it runs, and says they all run the current value.
    let managed_api: Api<ManagedSecret> = ns.api();
    let status = eventually(30, "ConsumersUpdated True", || async {
        let st = managed_api.get("db").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "ConsumersUpdated" && c.status == "True")
            .then_some(st)
    })
    .await;
    let mut listed: Vec<(String, String, String)> = status
        .consumers
        .iter()
        .map(|c| (c.kind.to_string(), c.name.clone(), c.state.as_str().to_string()))
        .collect();
    listed.sort();
    let expected: Vec<(String, String, String)> = [
        ("DaemonSet", "by-ds"),
        ("Deployment", "by-env"),
        ("Deployment", "by-envfrom"),
        ("Deployment", "by-volume"),
        ("StatefulSet", "by-sts"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string(), "Restarted".to_string()))
    .collect();
    assert_eq!(listed, expected);
    assert!(
        status
            .consumers
            .iter()
            .all(|c| c.secrets_hash.as_deref().is_some_and(|h| h.starts_with("sha256:")))
    );

    // Each restart was announced and its end reported, on the workload.
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events = events.list(&ListParams::default()).await.unwrap().items;
    for reason in ["RestartTriggered", "RestartFinished"] {
        let regarding: Vec<String> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.regarding.as_ref()?.name.clone())
            .collect();
        for w in ["by-env", "by-envfrom", "by-volume", "by-sts", "by-ds"] {
            assert!(
                regarding.iter().any(|n| n == w),
                "no {reason} Event for {w}: {regarding:?}"
            );
        }
    }
}

#[tokio::test]
async fn three_secrets_changed_together_give_one_restart() {
    let ns = ns("restart-coalesce").await;
    let _keyward = keyward(&ns, &["--restart-debounce-seconds", "6"]);
    for s in ["a", "b", "c"] {
        managed(&ns, s, "1", serde_json::json!({})).await;
    }
    let uses = serde_json::json!({"envFrom": [{"secretRef": {"name": "a"}}, {"secretRef": {"name": "b"}}, {"secretRef": {"name": "c"}}]});
    deployment(&ns, "app", pod_spec(uses, serde_json::json!([])), serde_json::json!({})).await;
    wait_adopted(&ns, "app").await;
    for s in ["a", "b", "c"] {
        set_source(&ns, s, "2").await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eventually(60, "one new ReplicaSet, rolled out", || async {
        (replica_sets(&ns, "app").await == 2 && rolled_out(&ns, "app").await).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        replica_sets(&ns, "app").await,
        2,
        "three changes within the debounce window gave more than one restart"
    );
}

#[tokio::test]
async fn opt_out_explicit_list_and_policy_none_are_honoured() {
    let ns = ns("restart-policy").await;
    let _keyward = keyward(&ns, &[]);
    managed(&ns, "auto", "1", serde_json::json!({"policy": "Auto"})).await;
    managed(&ns, "none", "1", serde_json::json!({"policy": "None"})).await;
    managed(
        &ns,
        "explicit",
        "1",
        serde_json::json!({"policy": "Explicit", "workloads": [{"kind": "Deployment", "name": "listed"}]}),
    )
    .await;
    let workloads = [
        ("opted-out", "auto", serde_json::json!({"keyward.dev/restart": "false"})),
        ("auto-consumer", "auto", serde_json::json!({})),
        ("none-consumer", "none", serde_json::json!({})),
        ("listed", "explicit", serde_json::json!({})),
        ("unlisted", "explicit", serde_json::json!({})),
    ];
    for (name, secret, annotations) in workloads {
        deployment(&ns, name, pod_spec(env_ref(secret), serde_json::json!([])), annotations).await;
    }
    let all = ["opted-out", "auto-consumer", "none-consumer", "listed", "unlisted"];
    eventually(60, "all rolled out", || async {
        for d in all {
            if !rolled_out(&ns, d).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    eventually(30, "consumers keyward restarts are adopted", || async {
        (adopted(&ns, "auto-consumer").await && adopted(&ns, "listed").await).then_some(())
    })
    .await;
    for s in ["auto", "none", "explicit"] {
        set_source(&ns, s, "2").await;
    }
    eventually(60, "restarted: auto-consumer and listed", || async {
        (replica_sets(&ns, "auto-consumer").await == 2 && replica_sets(&ns, "listed").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for d in ["opted-out", "none-consumer", "unlisted"] {
        assert_eq!(replica_sets(&ns, d).await, 1, "{d} was restarted");
    }
}

#[tokio::test]
async fn global_budget_caps_concurrent_rollouts() {
    let ns = ns("restart-budget").await;
    // One namespace here, so the per-namespace cap is raised to let the global cap bind.
    let _keyward = keyward(
        &ns,
        &[
            "--max-concurrent-restarts",
            "5",
            "--max-concurrent-restarts-per-namespace",
            "20",
        ],
    );
    managed(&ns, "shared", "1", serde_json::json!({})).await;
    let names: Vec<String> = (0..20).map(|i| format!("app-{i}")).collect();
    for n in &names {
        // Slow enough rollouts to overlap: the new Pod must stay Ready for 3s to count as available.
        env_consumer(&ns, n, "shared", serde_json::json!({"minReadySeconds": 3})).await;
    }
    eventually(120, "all 20 rolled out and adopted", || async {
        for n in &names {
            if !rolled_out(&ns, n).await || !adopted(&ns, n).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    set_source(&ns, "shared", "2").await;
    let deployments: Api<Deployment> = ns.api();
    let mut max_rolling = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let list = deployments.list(&ListParams::default()).await.unwrap().items;
        let (mut rolling, mut done) = (0, 0);
        for d in &list {
            let template_hash = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("keyward.dev/secrets-hash"))
                .is_some();
            let st = d.status.clone().unwrap_or_default();
            let complete = st.observed_generation == d.metadata.generation
                && st.updated_replicas == Some(1)
                && st.available_replicas == Some(1)
                && st.replicas == Some(1);
            if template_hash && complete {
                done += 1;
            } else if template_hash {
                rolling += 1;
            }
        }
        max_rolling = max_rolling.max(rolling);
        if done == 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all restarted in time: {done} done, {rolling} rolling"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!("most Deployments seen rolling at once: {max_rolling} (cap 5)");
    assert!(max_rolling <= 5, "saw {max_rolling} rolling at once with a cap of 5");
    assert!(
        max_rolling >= 2,
        "the rollouts never overlapped ({max_rolling}); the test proves nothing"
    );
    for n in &names {
        assert_eq!(replica_sets(&ns, n).await, 2, "{n}");
    }
}

#[tokio::test]
async fn killing_keyward_during_and_after_a_rollout_restarts_nothing_again() {
    let ns = ns("restart-crash").await;
    let mut first = keyward(&ns, &[]);
    managed(&ns, "db", "1", serde_json::json!({})).await;
    env_consumer(&ns, "app", "db", serde_json::json!({"minReadySeconds": 4})).await;
    wait_adopted(&ns, "app").await;
    set_source(&ns, "db", "2").await;
    // Kill it as soon as the restart has begun (the rollout takes at least 4s).
    eventually(30, "restart begun", || async {
        (replica_sets(&ns, "app").await == 2).then_some(())
    })
    .await;
    first.kill();
    let mut second = keyward(&ns, &[]);
    eventually(60, "rollout finished", || async {
        rolled_out(&ns, "app").await.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    second.kill();
    let _third = keyward(&ns, &[]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        replica_sets(&ns, "app").await,
        2,
        "a keyward restart restarted the workload again"
    );
}

#[tokio::test]
async fn a_failed_rollout_puts_the_previous_value_back() {
    let ns = ns("restart-rollback").await;
    let _keyward = keyward(&ns, &[]);
    managed(&ns, "db", "v1", serde_json::json!({"rollbackOnFailure": true})).await;
    env_consumer(&ns, "app", "db", serde_json::json!({"progressDeadlineSeconds": 10})).await;
    wait_adopted(&ns, "app").await;

    // A good change rolls out.
    set_source(&ns, "db", "v2").await;
    eventually(60, "v2 rolled out", || async {
        (replica_sets(&ns, "app").await == 2 && rolled_out(&ns, "app").await).then_some(())
    })
    .await;
    let good_hash = template_hash(&ns, "app").await;

    // From now on no new Pod is admitted in this namespace (Pod Security "restricted", which these Pods do
    // not meet), so the next rollout cannot progress; the running Pod stays.
    label_namespace(&ns, Some("restricted")).await;
    set_source(&ns, "db", "v3").await;

    let managed_api: Api<ManagedSecret> = ns.api();
    let degraded = eventually(90, "Degraded: RolloutFailed", || async {
        let ms = managed_api.get("db").await.ok()?;
        ms.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "RolloutFailed")
    })
    .await;
    assert!(
        degraded.message.contains("Deployment/") && degraded.message.contains("/app"),
        "{}",
        degraded.message
    );
    let secrets: Api<Secret> = ns.api();
    let value = || async { secrets.get("db").await.unwrap().data.unwrap()["VALUE"].0.clone() };
    eventually(30, "the Secret holds v2 again", || async {
        (value().await == b"v2").then_some(())
    })
    .await;
    eventually(60, "the workload rolled back to the v2 template", || async {
        (template_hash(&ns, "app").await == good_hash && rolled_out(&ns, "app").await).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("RolledBack")),
        "no RolledBack Event"
    );
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("RestartFailed")),
        "no RestartFailed Event"
    );

    // While the source still holds v3, the Secret stays on v2.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(value().await, b"v2");

    // The source moves on: followed again, Degraded clears.
    label_namespace(&ns, None).await;
    set_source(&ns, "db", "v4").await;
    eventually(30, "v4 synced", || async { (value().await == b"v4").then_some(()) }).await;
    eventually(30, "Degraded False", || async {
        let ms = managed_api.get("db").await.ok()?;
        ms.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "False")
    })
    .await;
}

async fn label_namespace(ns: &TestNs, enforce: Option<&str>) {
    let patch = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": enforce}}});
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    namespaces
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn template_hash(ns: &TestNs, name: &str) -> Option<String> {
    let d = ns.api::<Deployment>().get(name).await.unwrap();
    d.spec?
        .template
        .metadata?
        .annotations?
        .get("keyward.dev/secrets-hash")
        .cloned()
}

#[tokio::test]
async fn a_rollout_past_keywards_deadline_counts_as_failed() {
    let ns = ns("restart-deadline").await;
    let _keyward = keyward(&ns, &["--rollout-deadline-seconds", "6"]);
    managed(&ns, "db", "v1", serde_json::json!({})).await;
    // The Deployment's own deadline is far away: only keyward's can end this rollout.
    env_consumer(&ns, "slow", "db", serde_json::json!({"progressDeadlineSeconds": 3600})).await;
    wait_adopted(&ns, "slow").await;
    label_namespace(&ns, Some("restricted")).await;
    set_source(&ns, "db", "v2").await;
    let managed_api: Api<ManagedSecret> = ns.api();
    eventually(40, "consumer state Failed", || async {
        let st = managed_api.get("db").await.ok()?.status?;
        st.consumers
            .iter()
            .any(|c| c.name == "slow" && c.state.as_str() == "Failed")
            .then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let failed = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("RestartFailed"));
    assert!(
        failed
            .and_then(|e| e.note)
            .is_some_and(|n| n.contains("no complete rollout within 6s"))
    );
}

/// The Pods of workload `app` (label `app=<app>`): name, uid, creation time, and whether they are being deleted.
async fn pods(ns: &TestNs, app: &str) -> Vec<(String, String, jiff::Timestamp, bool)> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            (
                p.metadata.name.unwrap_or_default(),
                p.metadata.uid.unwrap_or_default(),
                p.metadata.creation_timestamp.map(|t| t.0).unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
        .collect()
}

async fn events_with(ns: &TestNs, reason: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            (
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

async fn consumer_state(ns: &TestNs, managed_secret: &str, name: &str) -> Option<(String, Option<String>)> {
    let st = ns.api::<ManagedSecret>().get(managed_secret).await.ok()?.status?;
    st.consumers
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| (c.state.as_str().to_string(), c.message))
}

/// Field report B1: a Deployment whose `envFrom` names Secret `app-creds` as optional starts before the Secret
/// exists; then ManagedSecret `app-creds` is created. Its Pods run without the variables, so keyward restarts it
/// once (adopting it would leave them so until the next change). A workload that requires the Secret has
/// containers held back until it exists, so it is adopted, not restarted.
#[tokio::test]
async fn a_workload_started_before_an_optional_secret_existed_is_restarted_once() {
    let ns = ns("restart-optional").await;
    let _keyward = keyward(&ns, &[]);
    deployment(
        &ns,
        "api",
        pod_spec(
            serde_json::json!({"envFrom": [{"secretRef": {"name": "app-creds", "optional": true}}]}),
            serde_json::json!([]),
        ),
        serde_json::json!({}),
    )
    .await;
    deployment(
        &ns,
        "required",
        pod_spec(env_ref("app-creds"), serde_json::json!([])),
        serde_json::json!({}),
    )
    .await;
    eventually(60, "api and required rolled out, without the Secret", || async {
        (rolled_out(&ns, "api").await && rolled_out(&ns, "required").await && pods(&ns, "api").await.len() == 1)
            .then_some(())
    })
    .await;
    let before = pods(&ns, "api").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    managed(&ns, "app-creds", "s3cret", serde_json::json!({})).await;
    let created = ns
        .api::<Secret>()
        .get("app-creds")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    assert!(before.iter().all(|p| p.2 < created), "{before:?} {created}");

    // The Pods: every one running now was created after the Secret, so it sees the variables.
    let after = eventually(90, "api restarted: its Pods are newer than the Secret", || async {
        let now = pods(&ns, "api").await;
        let live: Vec<_> = now.into_iter().filter(|p| !p.3).collect();
        (rolled_out(&ns, "api").await && live.len() == 1 && live.iter().all(|p| p.2 >= created)).then_some(live)
    })
    .await;
    assert_ne!(after[0].1, before[0].1);
    assert!(template_hash(&ns, "api").await.is_some());
    let said = events_with(&ns, "StartedWithoutSecret").await;
    assert!(
        said.iter()
            .any(|(w, note)| w == "api" && note.contains("app-creds") && note.contains("optional")),
        "{said:?}"
    );

    // Once: nothing more happens. The workload that requires the Secret was adopted, not restarted.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(replica_sets(&ns, "api").await, 2, "api restarted more than once");
    assert_eq!(replica_sets(&ns, "required").await, 1, "required was restarted");
    assert!(adopted(&ns, "required").await);
    assert!(said.iter().all(|(w, _)| w != "required"));
}

async fn statefulset(ns: &TestNs, name: &str, replicas: i32, strategy: &str, spec: serde_json::Value) {
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "updateStrategy": {"type": strategy},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    }))
    .unwrap();
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
}

async fn statefulset_ready(ns: &TestNs, name: &str, replicas: i32) -> bool {
    let s = ns.api::<StatefulSet>().get(name).await.unwrap();
    let st = s.status.unwrap_or_default();
    st.observed_generation == s.metadata.generation
        && st.ready_replicas == Some(replicas)
        && st.updated_replicas == Some(replicas)
}

/// Field report B2: a StatefulSet with `updateStrategy: OnDelete` never replaces its Pods by itself. keyward
/// sets the new template, reports `ManualRestartNeeded` (status.consumers, ConsumersUpdated, an Event) and
/// neither fails the rollout at its deadline nor rolls the value back; once someone deletes the Pods, the new
/// ones run the new template and the consumer counts as restarted.
#[tokio::test]
async fn an_on_delete_statefulset_is_reported_for_a_manual_restart_and_never_rolled_back() {
    let ns = ns("restart-ondelete").await;
    let _keyward = keyward(&ns, &["--rollout-deadline-seconds", "5"]);
    managed(&ns, "db-pass", "v1", serde_json::json!({"rollbackOnFailure": true})).await;
    statefulset(
        &ns,
        "db",
        2,
        "OnDelete",
        pod_spec(env_ref("db-pass"), serde_json::json!([])),
    )
    .await;
    eventually(90, "db ready, adopted, and reported as running the value", || async {
        let s = ns.api::<StatefulSet>().get("db").await.ok()?;
        let adopted = s.metadata.annotations?.contains_key("keyward.dev/secrets-hash");
        let restarted = consumer_state(&ns, "db-pass", "db").await?.0 == "Restarted";
        (adopted && restarted && statefulset_ready(&ns, "db", 2).await).then_some(())
    })
    .await;
    // Its Pods starting up were no manual restart.
    assert!(events_with(&ns, "ManualRestartNeeded").await.is_empty());
    let before = pods(&ns, "db").await;
    assert_eq!(before.len(), 2);

    set_source(&ns, "db-pass", "v2").await;
    let (state, message) = eventually(60, "consumer db ManualRestartNeeded", || async {
        consumer_state(&ns, "db-pass", "db")
            .await
            .filter(|(s, _)| s == "ManualRestartNeeded")
    })
    .await;
    assert_eq!(state, "ManualRestartNeeded");
    let message = message.unwrap_or_default();
    assert!(message.contains("OnDelete") && message.contains("0 of 2"), "{message}");
    // Well past keyward's rollout deadline: not failed, not rolled back, Pods untouched.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secrets: Api<Secret> = ns.api();
    let value = secrets.get("db-pass").await.unwrap().data.unwrap()["VALUE"].0.clone();
    assert_eq!(value, b"v2", "the value was rolled back");
    let ms = ns.api::<ManagedSecret>().get("db-pass").await.unwrap();
    let st = ms.status.unwrap();
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t).cloned();
    assert_eq!(cond("Ready").map(|c| c.status), Some("True".into()));
    assert_ne!(cond("Degraded").map(|c| c.status), Some("True".into()));
    let updated = cond("ConsumersUpdated").unwrap();
    assert_eq!(
        (updated.status.as_str(), updated.reason.as_str()),
        ("False", "ManualRestartNeeded")
    );
    assert!(updated.message.contains("StatefulSet/db"), "{}", updated.message);
    assert!(st.rollback.is_none());
    assert_eq!(
        consumer_state(&ns, "db-pass", "db").await.unwrap().0,
        "ManualRestartNeeded"
    );
    let uids = |p: &[(String, String, jiff::Timestamp, bool)]| {
        let mut u: Vec<String> = p.iter().map(|p| p.1.clone()).collect();
        u.sort();
        u
    };
    assert_eq!(uids(&pods(&ns, "db").await), uids(&before), "keyward replaced Pods");
    assert!(events_with(&ns, "RestartFailed").await.is_empty());
    let said = events_with(&ns, "ManualRestartNeeded").await;
    assert!(said.iter().any(|(w, _)| w == "db"), "{said:?}");

    // The owner deletes the Pods, one at a time: the new ones run the new template, and keyward says so.
    let pods_api: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    for (name, uid, _, _) in &before {
        pods_api
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
        eventually(60, &format!("{name} replaced and ready"), || async {
            let p = pods_api.get_opt(name).await.ok()??;
            let ready = p
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.metadata.uid.as_deref() != Some(uid.as_str()) && ready).then_some(())
        })
        .await;
    }
    eventually(60, "consumer db Restarted", || async {
        consumer_state(&ns, "db-pass", "db")
            .await
            .filter(|(s, _)| s == "Restarted")
    })
    .await;
    assert!(
        events_with(&ns, "RestartFinished")
            .await
            .iter()
            .any(|(w, note)| w == "db" && note.contains("every Pod runs the current template"))
    );
}

/// Field report B3, CronJobs: the job template carries the new hash, so the next Jobs run the new value; a Job
/// already running is left alone.
#[tokio::test]
async fn a_cronjob_gets_the_new_value_for_its_next_jobs_and_running_jobs_are_left_alone() {
    let ns = ns("restart-cronjob").await;
    let _keyward = keyward(&ns, &[]);
    managed(&ns, "report-creds", "v1", serde_json::json!({})).await;
    let job_spec = serde_json::json!({"template": {"metadata": {"labels": {"app": "nightly"}},
        "spec": {"restartPolicy": "Never", "containers": [container(env_ref("report-creds"))]}}});
    let cron: k8s_openapi::api::batch::v1::CronJob = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 1 1 *", "jobTemplate": {"spec": job_spec}}
    }))
    .unwrap();
    let crons: Api<k8s_openapi::api::batch::v1::CronJob> = ns.api();
    crons.create(&PostParams::default(), &cron).await.unwrap();
    // A Job made from it (as `kubectl create job --from=cronjob/nightly` does), running under kwok.
    let job: k8s_openapi::api::batch::v1::Job =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nightly-manual"}, "spec": job_spec})).unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let cron_hash = || async {
        crons
            .get("nightly")
            .await
            .ok()?
            .spec?
            .job_template
            .spec?
            .template
            .metadata?
            .annotations?
            .get("keyward.dev/secrets-hash")
            .cloned()
    };
    eventually(60, "nightly adopted, its Job's Pod running", || async {
        let c = crons.get("nightly").await.ok()?;
        let adopted = c.metadata.annotations?.contains_key("keyward.dev/secrets-hash");
        (adopted && jobs.get("nightly-manual").await.ok()?.status?.active == Some(1)).then_some(())
    })
    .await;
    assert_eq!(cron_hash().await, None, "adoption changed the job template");
    let running = pods(&ns, "nightly").await;
    assert_eq!(running.len(), 1);

    set_source(&ns, "report-creds", "v2").await;
    let hash = eventually(60, "the job template carries the new hash", cron_hash).await;
    eventually(30, "consumer nightly Restarted with that hash", || async {
        let st = ns.api::<ManagedSecret>().get("report-creds").await.ok()?.status?;
        st.consumers
            .iter()
            .any(|c| {
                c.name == "nightly"
                    && c.kind.as_str() == "CronJob"
                    && c.state.as_str() == "Restarted"
                    && c.secrets_hash.as_deref() == Some(hash.as_str())
            })
            .then_some(())
    })
    .await;
    let finished = events_with(&ns, "RestartFinished").await;
    assert!(
        finished
            .iter()
            .any(|(w, note)| w == "nightly" && note.contains("next Jobs")),
        "{finished:?}"
    );
    // The running Job and its Pod are as they were.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let job = jobs.get("nightly-manual").await.unwrap();
    let job_annotations = job
        .spec
        .unwrap()
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(!job_annotations.contains_key("keyward.dev/secrets-hash"));
    let now = pods(&ns, "nightly").await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].1, running[0].1, "the running Job's Pod was replaced");
    assert!(!now[0].3);
}

/// The Argo Rollouts controller (pinned, built by `make tools`) on this test binary's control plane, its CRDs
/// installed first; stopped when dropped. Its metrics and health servers are turned off (they would listen on
/// every address: the controller has no bind-address flag).
struct ArgoRollouts(std::process::Child);

impl ArgoRollouts {
    fn start() -> ArgoRollouts {
        let cluster = cluster_with_controllers();
        let tools = keyward_dev::tools::tools_dir().unwrap();
        let crds = tools.join("argo-rollouts-crds");
        assert!(crds.is_dir(), "{} missing: run `make tools`", crds.display());
        // Server-side: the Rollout CRD is too large for the last-applied annotation of a client-side apply.
        let out = cluster.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=keyward-test",
            "-f",
            crds.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut tries = 0;
        loop {
            let out = cluster.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/rollouts.argoproj.io",
            ]);
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(tries < 20, "{}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = std::fs::File::create(cluster.dir.join("logs").join("rollouts-controller.log")).unwrap();
        let child = std::process::Command::new(tools.join("rollouts-controller"))
            .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .args([
                "--leader-elect=false",
                "--metricsPort=-1",
                "--healthzPort=-1",
                "--loglevel=info",
                "--logformat=text",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rollouts-controller");
        ArgoRollouts(child)
    }
}

impl Drop for ArgoRollouts {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn argo_rollouts(ns: &TestNs) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    Api::namespaced_with(ns.client.clone(), &ns.name, &resource)
}

/// Whether Rollout `name` is Healthy for its current generation with every replica updated and available.
async fn rollout_healthy(api: &Api<kube::api::DynamicObject>, name: &str, replicas: i64) -> bool {
    let Ok(r) = api.get(name).await else { return false };
    let st = &r.data["status"];
    st["phase"] == "Healthy"
        && st["observedGeneration"].as_str() == r.metadata.generation.map(|g| g.to_string()).as_deref()
        && st["updatedReplicas"].as_i64() == Some(replicas)
        && st["availableReplicas"].as_i64() == Some(replicas)
        && st["currentPodHash"] == st["stableRS"]
}

/// Field report B3, Argo Rollouts: a Rollout consuming the Secret is restarted through its own pod template,
/// really rolled out by the Argo Rollouts controller (a new ReplicaSet whose Pods become ready under kwok), and
/// tracked through its status until Healthy.
#[tokio::test]
async fn an_argo_rollout_is_restarted_through_its_template_and_tracked_to_healthy() {
    let ns = ns("restart-argo").await;
    let _argo = ArgoRollouts::start();
    let _keyward = keyward(&ns, &[]);
    managed(&ns, "web-creds", "v1", serde_json::json!({})).await;
    let rollouts = argo_rollouts(&ns);
    let rollout: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "revisionHistoryLimit": 2, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"canary": {"steps": []}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": pod_spec(env_ref("web-creds"), serde_json::json!([]))}}
    }))
    .unwrap();
    rollouts.create(&PostParams::default(), &rollout).await.unwrap();
    eventually(90, "web Healthy and adopted", || async {
        let r = rollouts.get("web").await.ok()?;
        let adopted = r.metadata.annotations?.contains_key("keyward.dev/secrets-hash");
        (adopted && rollout_healthy(&rollouts, "web", 2).await).then_some(())
    })
    .await;
    assert_eq!(replica_sets(&ns, "web").await, 1, "adoption rolled the Rollout");
    let before = pods(&ns, "web").await;

    set_source(&ns, "web-creds", "v2").await;
    eventually(
        90,
        "web rolled out by Argo Rollouts, consumer Restarted, ConsumersUpdated",
        || async {
            let r = rollouts.get("web").await.ok()?;
            let hash = r.data["spec"]["template"]["metadata"]["annotations"]["keyward.dev/secrets-hash"]
                .as_str()?
                .to_string();
            if !rollout_healthy(&rollouts, "web", 2).await || replica_sets(&ns, "web").await != 2 {
                return None;
            }
            let st = ns.api::<ManagedSecret>().get("web-creds").await.ok()?.status?;
            // The condition is the reconcile's summary of the restart task's report: it follows the report.
            let updated = st
                .conditions
                .iter()
                .any(|c| c.type_ == "ConsumersUpdated" && c.status == "True");
            let restarted = st.consumers.iter().any(|c| {
                c.kind.as_str() == "Rollout"
                    && c.state.as_str() == "Restarted"
                    && c.secrets_hash.as_deref() == Some(hash.as_str())
            });
            (updated && restarted).then_some(())
        },
    )
    .await;
    // The Pods running now are new ones.
    let live: Vec<_> = pods(&ns, "web").await.into_iter().filter(|p| !p.3).collect();
    assert_eq!(live.len(), 2);
    assert!(
        live.iter().all(|p| before.iter().all(|b| b.1 != p.1)),
        "{live:?} {before:?}"
    );
    for reason in ["RestartTriggered", "RestartFinished"] {
        let said = events_with(&ns, reason).await;
        assert!(said.iter().any(|(w, _)| w == "web"), "no {reason} for web: {said:?}");
    }
    // Once: nothing more happens.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(replica_sets(&ns, "web").await, 2);
}
