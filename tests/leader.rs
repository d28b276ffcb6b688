//! Two replicas of `keyward run --leader-election` against one namespace, on a control plane with controllers
//! (rollouts really happen) and the local ESC server: exactly one writes; killing it in the middle of a restart
//! and of a rotation fails over within the lease duration without a second restart or rotation; a graceful
//! stop hands over at once; a leader that stalls past its lease stops and exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::record::Record;
use keyward::api::{ManagedSecret, ROTATION_INTENT_ANNOTATION};
use keyward_dev::esc_server::{EscServer, Fault};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

const ESC_TOKEN: &str = "test-esc-token";
const ENV: &str = "acme/app/prod";
const INITIAL: &str = "initial-password-0001";
const LEASE: &str = "keyward";

/// The tests here measure takeover times: one at a time, so that they do not slow each other down.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    esc: EscServer,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let esc = support::esc_server(ESC_TOKEN, dir.path()).await;
        let p: Vec<&str> = ENV.split('/').collect();
        esc.put_definition(
            p[0],
            p[1],
            p[2],
            &format!("values:\n  app:\n    dbPassword:\n      fn::secret: {INITIAL}\n"),
        )
        .unwrap();
        World { esc, dir }
    }

    /// A replica: leader election on the test namespace's Lease, restarts debounced 2s.
    fn replica(&self, ns: &str, lease_seconds: u64) -> Keyward {
        let token = self.dir.path().join("esc-token").to_string_lossy().into_owned();
        let lease_seconds = lease_seconds.to_string();
        Keyward::start(
            ns,
            &[
                "--leader-election",
                "--lease-namespace",
                ns,
                "--lease-duration-seconds",
                &lease_seconds,
                "--esc-url",
                &self.esc.base_url(),
                "--esc-token-file",
                &token,
                "--restart-debounce-seconds",
                "2",
            ],
        )
    }

    /// What ESC holds at app.dbPassword now.
    async fn esc_value(&self) -> String {
        use keyward::esc::{EscClient, EscConfig};
        use keyward::source::esc::EscSource;
        let client = EscClient::new(EscConfig::new(self.esc.base_url(), Some(ESC_TOKEN.to_string().into()))).unwrap();
        let v = EscSource::new(client)
            .get(ENV, None, "app.dbPassword", Instant::now())
            .await
            .unwrap();
        String::from_utf8(v.0.expose().to_vec()).unwrap()
    }

    /// The environment's current revision.
    async fn revision(&self) -> i64 {
        let resp = reqwest::Client::new()
            .get(format!("{}/environments/{ENV}", self.esc.base_url()))
            .header("Authorization", format!("token {ESC_TOKEN}"))
            .send()
            .await
            .unwrap();
        resp.headers()["pulumi-esc-revision"].to_str().unwrap().parse().unwrap()
    }
}

async fn ns(prefix: &str) -> TestNs {
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client(prefix, client).await;
    install_crd(&ns.client).await;
    ns
}

/// `Some(true)` leader, `Some(false)` follower, None while /metrics does not answer (or says neither).
async fn leads(k: &Keyward) -> Option<bool> {
    let text = reqwest::get(format!("http://{}/metrics", k.http))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|l| match l.trim() {
        "keyward_leader 1" => Some(true),
        "keyward_leader 0" => Some(false),
        _ => None,
    })
}

async fn ready(k: &Keyward) -> bool {
    reqwest::get(format!("http://{}/readyz", k.http))
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// Waits until exactly one of `replicas` leads and every one is ready; the leader's index.
async fn one_leader(replicas: &[&Keyward], secs: u64) -> usize {
    eventually(secs, "exactly one leader, every replica ready", || async {
        let mut leaders = Vec::new();
        for (i, k) in replicas.iter().enumerate() {
            match leads(k).await {
                Some(true) => leaders.push(i),
                Some(false) => {}
                None => return None,
            }
            if !ready(k).await {
                return None;
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// Polls `k` every 50 ms until it leads; how long that took from `since`.
async fn takes_over(k: &Keyward, since: Instant, secs: u64) -> Duration {
    let deadline = since + Duration::from_secs(secs);
    loop {
        if leads(k).await == Some(true) {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "no takeover within {secs}s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn holder(ns: &TestNs) -> Option<String> {
    ns.api::<Lease>().get(LEASE).await.ok()?.spec?.holder_identity
}

/// The identity a replica started outside a Pod claims the Lease with: `<hostname>-<pid>`.
fn is_identity_of(identity: &str, k: &Keyward) -> bool {
    identity.ends_with(&format!("-{}", k.pid().unwrap()))
}

async fn data(ns: &TestNs, name: &str, key: &str) -> Option<String> {
    let s = ns.api::<Secret>().get_opt(name).await.ok()??;
    s.data?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

async fn deployment(ns: &TestNs, name: &str, secret: &str, key: &str) {
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                     "name": "app", "image": "registry.invalid/app:1",
                     "env": [{"name": "V", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]}]}}}
    }))
    .unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &d).await.unwrap();
}

async fn replica_sets(ns: &TestNs, app: &str) -> usize {
    ns.api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

/// Rolled out with one ready replica, and adopted (or restarted) by keyward.
async fn settled(ns: &TestNs, name: &str) {
    eventually(60, &format!("{name} rolled out and adopted"), || async {
        let d = ns.api::<Deployment>().get(name).await.ok()?;
        let st = d.status.clone().unwrap_or_default();
        let has_hash =
            |a: Option<BTreeMap<String, String>>| a.unwrap_or_default().contains_key("keyward.dev/secrets-hash");
        let adopted = has_hash(d.metadata.annotations.clone()) || has_hash(d.spec?.template.metadata?.annotations);
        (adopted
            && st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(1)
            && st.ready_replicas == Some(1))
        .then_some(())
    })
    .await;
}

/// A source Secret `src-NAME` and a ManagedSecret NAME copying its key `value` to Secret NAME, key VALUE.
async fn copied(ns: &TestNs, name: &str, value: &str) {
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
    ns.api::<Secret>().create(&PostParams::default(), &src).await.unwrap();
    let ms: ManagedSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {"source": {"kubernetesSecret": {"name": format!("src-{name}"), "key": "value"}},
                 "target": {"key": "VALUE"}, "refreshInterval": "1h"}
    }))
    .unwrap();
    ns.api::<ManagedSecret>()
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
}

async fn set_source(ns: &TestNs, name: &str, value: &str) {
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value);
    let patch = serde_json::json!({"data": {"value": b64}});
    ns.api::<Secret>()
        .patch(&format!("src-{name}"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The `reportingInstance` of every Event keyward published in the namespace.
async fn event_instances(ns: &TestNs) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("keyward"))
        .filter_map(|e| e.reporting_instance)
        .collect()
}

/// Log lines only a writing replica produces.
const WRITES: [&str; 5] = [
    "starting to write",
    "secret written",
    "restart triggered",
    "consumer adopted",
    "rotation",
];

fn assert_wrote_nothing(k: &Keyward, who: &str) {
    let logs = k.logs();
    for line in logs.lines() {
        for w in WRITES {
            assert!(!line.contains(w), "the {who} wrote ({w}): {line}");
        }
    }
}

fn signal(k: &Keyward, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(k.pid().unwrap()).unwrap()), sig).unwrap();
}

#[tokio::test]
async fn one_writer_and_a_sigkilled_leader_neither_restarts_nor_rotates_twice() {
    let _serial = SERIAL.lock().await;
    let world = World::start().await;
    let ns = ns("leader-kill").await;
    // Both start together: they race for the free Lease.
    let mut replicas = vec![world.replica(&ns.name, 5), world.replica(&ns.name, 5)];
    let l = one_leader(&[&replicas[0], &replicas[1]], 60).await;
    let f = 1 - l;
    let h = holder(&ns).await.unwrap();
    assert!(is_identity_of(&h, &replicas[l]), "the Lease names the leader: {h}");

    // Work for the leader: a copied Secret with a consumer, and a rotating ESC secret with a consumer.
    copied(&ns, "db", "1").await;
    let rotating: ManagedSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": "rot"},
        "spec": {"source": {"esc": {"environment": ENV, "path": "app.dbPassword"}},
                 "target": {"key": "DB_PASSWORD"}, "refreshInterval": "1h",
                 "rotation": {"period": "90d", "strategy": "Generate"}}
    }))
    .unwrap();
    ns.api::<ManagedSecret>()
        .create(&PostParams::default(), &rotating)
        .await
        .unwrap();
    eventually(30, "both target Secrets written", || async {
        (data(&ns, "db", "VALUE").await.as_deref() == Some("1")
            && data(&ns, "rot", "DB_PASSWORD").await.as_deref() == Some(INITIAL))
        .then_some(())
    })
    .await;
    deployment(&ns, "app", "db", "VALUE").await;
    deployment(&ns, "rot-app", "rot", "DB_PASSWORD").await;
    settled(&ns, "app").await;
    settled(&ns, "rot-app").await;
    // Only the leader wrote: the follower logged no write.
    assert_wrote_nothing(&replicas[f], "follower");
    assert!(replicas[l].logs().contains("secret written"));
    assert_eq!(leads(&replicas[f]).await, Some(false));
    // The per-secret gauges come from the leader alone, so a sum over replicas counts each secret once.
    let scrape = |k: &Keyward| {
        let url = format!("http://{}/metrics", k.http);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let follower_metrics = scrape(&replicas[f]).await;
    let leader_metrics = scrape(&replicas[l]).await;
    for gauge in ["keyward_managed_secrets{", "secret_rotation_age_days{"] {
        assert!(
            !follower_metrics.lines().any(|line| line.starts_with(gauge)),
            "the follower serves {gauge}: {follower_metrics}"
        );
        assert!(
            leader_metrics.lines().any(|line| line.starts_with(gauge)),
            "the leader serves {gauge}: {leader_metrics}"
        );
    }

    // 1. Kill the leader right after it wrote a changed value, while the restart is still debounced.
    set_source(&ns, "db", "2").await;
    eventually(30, "the leader wrote the new value", || async {
        (data(&ns, "db", "VALUE").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    // Every Event names the leader's instance (a new value's Synced Event; a first sync has none).
    let leader_instance = format!("keyward-{}", replicas[l].pid().unwrap());
    let instances = eventually(10, "the new value's Event", || async {
        let instances = event_instances(&ns).await;
        (!instances.is_empty()).then_some(instances)
    })
    .await;
    assert!(instances.iter().all(|i| *i == leader_instance), "{instances:?}");
    assert_wrote_nothing(&replicas[f], "follower");
    let killed = Instant::now();
    replicas[l].kill();
    let took = takes_over(&replicas[f], killed, 15).await;
    println!(
        "takeover after SIGKILL (restart pending), lease 5s: {:.2}s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5 + 3), "takeover took {took:?}");
    eventually(60, "the consumer restarted", || async {
        (replica_sets(&ns, "app").await == 2).then_some(())
    })
    .await;
    settled(&ns, "app").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replica_sets(&ns, "app").await, 2, "one restart for one change");
    // The killed leader never got to it (debounced 2s): the restart was the new leader's.
    assert!(replicas[f].logs().contains("restart triggered"));
    assert!(is_identity_of(&holder(&ns).await.unwrap(), &replicas[f]));

    // 2. A new follower; kill the leader in the middle of an emergency rotation: once it has recorded its
    //    intent and is writing ESC (slowed down so that the kill lands there; by less than the shortest
    //    takeover, so that a write still in flight lands before the new leader looks).
    replicas.push(world.replica(&ns.name, 5));
    let (l, f) = (f, 2);
    assert_eq!(one_leader(&[&replicas[l], &replicas[f]], 60).await, 0);
    let base = world.revision().await;
    world
        .esc
        .set_fault(Fault::none().with_latency(Duration::from_millis(600)));
    let patch = serde_json::json!({"metadata": {"annotations": {"keyward.dev/rotate-now": "leaked in #incident-42"}}});
    ns.api::<ManagedSecret>()
        .patch("rot", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ns.api::<Secret>().get("rot").await.unwrap();
        if s.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(&Record::of("rot").key(ROTATION_INTENT_ANNOTATION))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no rotation intent recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    replicas[l].kill();
    world.esc.set_fault(Fault::none());
    let took = takes_over(&replicas[f], killed, 15).await;
    println!(
        "takeover after SIGKILL (rotation in flight), lease 5s: {:.2}s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5 + 3), "takeover took {took:?}");
    let new = eventually(60, "the rotation finished", || async {
        let s = ns.api::<Secret>().get("rot").await.ok()?;
        let intent = s
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(&Record::of("rot").key(ROTATION_INTENT_ANNOTATION));
        let value = String::from_utf8(s.data?.get("DB_PASSWORD")?.0.clone()).ok()?;
        (!intent && value != INITIAL).then_some(value)
    })
    .await;
    assert_eq!(world.esc_value().await, new, "the Secret holds what ESC holds");
    eventually(60, "the rotation's consumer restarted", || async {
        (replica_sets(&ns, "rot-app").await == 2).then_some(())
    })
    .await;
    settled(&ns, "rot-app").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        world.revision().await,
        base + 1,
        "exactly one ESC revision for one rotation"
    );
    assert_eq!(replica_sets(&ns, "rot-app").await, 2, "one restart for one rotation");
    assert_eq!(replica_sets(&ns, "app").await, 2);
    assert!(is_identity_of(&holder(&ns).await.unwrap(), &replicas[f]));
    println!(
        "ESC definition updates sent during the rotation (by either leader): {}",
        world.esc.counters().requests("update")
    );
}

#[tokio::test]
async fn a_graceful_stop_hands_over_at_once_and_a_stalled_leader_steps_down() {
    let _serial = SERIAL.lock().await;
    let world = World::start().await;
    let ns = ns("leader-stop").await;
    // The default lease duration (15s): a handover well under it can only come from the release.
    let mut a = world.replica(&ns.name, 15);
    let mut b = world.replica(&ns.name, 15);
    let (leader, follower) = match one_leader(&[&a, &b], 60).await {
        0 => (&mut a, &mut b),
        _ => (&mut b, &mut a),
    };
    let stopped = Instant::now();
    signal(leader, Signal::SIGTERM);
    let took = takes_over(follower, stopped, 15).await;
    println!(
        "takeover after SIGTERM (lease released), lease 15s: {:.2}s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(4), "handover took {took:?}");
    let status = leader.wait_exit(10).expect("the stopped leader exits");
    assert!(status.success(), "{status:?}");
    assert!(leader.logs().contains("released the lease"));
    assert!(is_identity_of(&holder(&ns).await.unwrap(), follower));
    // The new leader writes.
    copied(&ns, "db", "1").await;
    eventually(30, "the new leader wrote the Secret", || async {
        (data(&ns, "db", "VALUE").await.as_deref() == Some("1")).then_some(())
    })
    .await;

    // A leader that stalls (SIGSTOP) past its lease: the other takes over, and the stalled one, resumed, stops
    // writing and exits rather than write alongside.
    drop(a);
    drop(b);
    let lease = "stall";
    let start = |ns: &str| {
        let token = world.dir.path().join("esc-token").to_string_lossy().into_owned();
        Keyward::start(
            ns,
            &[
                "--leader-election",
                "--lease-namespace",
                ns,
                "--lease-name",
                lease,
                "--lease-duration-seconds",
                "4",
                "--esc-url",
                &world.esc.base_url(),
                "--esc-token-file",
                &token,
            ],
        )
    };
    let mut c = start(&ns.name);
    let mut d = start(&ns.name);
    let (leader, follower) = match one_leader(&[&c, &d], 60).await {
        0 => (&mut c, &mut d),
        _ => (&mut d, &mut c),
    };
    let stalled = Instant::now();
    signal(leader, Signal::SIGSTOP);
    let took = takes_over(follower, stalled, 15).await;
    println!("takeover from a stalled leader, lease 4s: {:.2}s", took.as_secs_f64());
    assert!(took < Duration::from_secs(4 + 3), "takeover took {took:?}");
    signal(leader, Signal::SIGCONT);
    let status = leader
        .wait_exit(10)
        .expect("the stalled leader exits once it runs again");
    assert!(!status.success(), "{status:?}");
    assert!(leader.logs().contains("lost the leader lease"), "{}", leader.logs());
    assert_eq!(leads(follower).await, Some(true));
    let h = ns
        .api::<Lease>()
        .get(lease)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert!(is_identity_of(&h, follower));
}

/// The names of the ManagedSecrets whose Secret this keyward wrote (its audit lines).
fn synced_by(k: &Keyward) -> std::collections::BTreeSet<String> {
    k.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["action"] == "secret_synced")
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Issue 16's shard option: two keyward Deployments split the ManagedSecrets by label (as Flux does with
/// `sharding.fluxcd.io/key`), each with its own Lease; every object is reconciled by exactly one of them, and
/// a Secret's consumers are restarted by its ManagedSecret's shard only.
#[tokio::test]
async fn two_shards_split_the_objects_with_no_overlap() {
    let _serial = SERIAL.lock().await;
    let ns = ns("shards").await;
    let shard = |lease: &str, selector: &str| {
        Keyward::start(
            &ns.name,
            &[
                "--leader-election",
                "--lease-namespace",
                &ns.name,
                "--lease-name",
                lease,
                "--shard-selector",
                selector,
                "--restart-debounce-seconds",
                "1",
            ],
        )
    };
    let a = shard("keyward-shard-a", "sharding.fluxcd.io/key=a");
    let rest = shard("keyward-shard-rest", "!sharding.fluxcd.io/key");
    for (k, lease) in [(&a, "keyward-shard-a"), (&rest, "keyward-shard-rest")] {
        eventually(60, &format!("{lease} led"), || async {
            let holder = ns.api::<Lease>().get(lease).await.ok()?.spec?.holder_identity?;
            (is_identity_of(&holder, k) && leads(k).await == Some(true)).then_some(())
        })
        .await;
    }
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let src: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("src-{name}")}, "stringData": {"value": "v1"}
        }))
        .unwrap();
        ns.api::<Secret>().create(&PostParams::default(), &src).await.unwrap();
        let labels = if i % 2 == 0 {
            serde_json::json!({"sharding.fluxcd.io/key": "a"})
        } else {
            serde_json::json!({})
        };
        let ms: ManagedSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": name, "labels": labels},
            "spec": {"source": {"kubernetesSecret": {"name": format!("src-{name}"), "key": "value"}},
                     "target": {"key": "VALUE"}, "refreshInterval": "10s"}
        }))
        .unwrap();
        ns.api::<ManagedSecret>()
            .create(&PostParams::default(), &ms)
            .await
            .unwrap();
    }
    // A consumer of one shard's Secret and one of the other's.
    deployment(&ns, "app-a", "s0", "VALUE").await;
    deployment(&ns, "app-rest", "s1", "VALUE").await;
    for name in &names {
        eventually(60, &format!("{name} written"), || async {
            (data(&ns, name, "VALUE").await? == "v1").then_some(())
        })
        .await;
    }
    settled(&ns, "app-a").await;
    settled(&ns, "app-rest").await;
    // New values for one object of each shard; a refresh tick (10 s) passes for all of them.
    set_source(&ns, "s0", "v2").await;
    set_source(&ns, "s1", "v2").await;
    for name in ["s0", "s1"] {
        eventually(60, &format!("{name} has v2"), || async {
            (data(&ns, name, "VALUE").await? == "v2").then_some(())
        })
        .await;
    }
    for app in ["app-a", "app-rest"] {
        eventually(90, &format!("{app} restarted once"), || async {
            (replica_sets(&ns, app).await == 2).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (by_a, by_rest) = (synced_by(&a), synced_by(&rest));
    let even: std::collections::BTreeSet<String> = names.iter().step_by(2).cloned().collect();
    let odd: std::collections::BTreeSet<String> = names.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(by_a, even, "shard a wrote exactly its own");
    assert_eq!(by_rest, odd, "the other shard wrote exactly the rest");
    // Each object's status was written by its shard only, and no shard saw the other's as its own.
    for (k, theirs) in [(&a, &odd), (&rest, &even)] {
        let logs = k.logs();
        for line in logs.lines().filter(|l| l.contains("reconcil")) {
            for name in theirs {
                assert!(
                    !line.contains(&format!("ManagedSecret.v1alpha1.keyward.dev/{name}.")),
                    "a shard reconciled another shard's object: {line}"
                );
            }
        }
        assert!(!logs.contains("reconcile failed"), "{logs}");
    }
    // Each restart happened once: no shard restarted the other's consumer, and none fought over a hash.
    assert_eq!(replica_sets(&ns, "app-a").await, 2);
    assert_eq!(replica_sets(&ns, "app-rest").await, 2);
}
