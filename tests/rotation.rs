//! Rotation end to end: a real API server with controllers (rollouts really happen), the local ESC server, the
//! local GitHub server (which really opens the sealed boxes), and `keyward run` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::api::ManagedSecret;
use keyward_dev::esc_server::{EscServer, Fault};
use keyward_dev::github_server::{GithubFault, GithubServer, GithubServerOptions};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

const ESC_TOKEN: &str = "test-esc-token";
const GITHUB_TOKEN: &str = "test-github-token";
const ENV: &str = "acme/app/prod";
const INITIAL: &str = "initial-password-0001";

/// The definition keyward rotates `app.dbPassword` in: imports, expressions, comments, another secret, all of
/// which must come through byte for byte.
const FIXTURE: &str = r#"# Fixture: everything but app.dbPassword must survive a rotation byte for byte.
imports:
  - base/shared
values:
  # connection settings, from the import
  endpoint:
    fn::join: ["", ["https://db.", "${region}", ".example"]]
  app:
    dbPassword:
      fn::secret: initial-password-0001
    apiKey:
      fn::secret: untouched-api-key   # not rotated
    # a comment after the secrets
    replicas: 3
  tags: [a, "b", 'c']
"#;

struct World {
    esc: EscServer,
    github: GithubServer,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let esc = support::esc_server(ESC_TOKEN, dir.path()).await;
        let github = GithubServer::start(GithubServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some(GITHUB_TOKEN.into()),
            repositories: Vec::new(),
        })
        .await
        .unwrap();
        std::fs::write(dir.path().join("github-token"), GITHUB_TOKEN).unwrap();
        esc.put_definition("acme", "base", "shared", "values:\n  region: eu-west-1\n")
            .unwrap();
        World { esc, github, dir }
    }

    fn put(&self, env: &str, yaml: &str) -> u64 {
        let p: Vec<&str> = env.split('/').collect();
        self.esc.put_definition(p[0], p[1], p[2], yaml).unwrap()
    }

    fn args(&self) -> Vec<String> {
        let file = |n: &str| self.dir.path().join(n).to_string_lossy().into_owned();
        vec![
            "--esc-url".into(),
            self.esc.base_url(),
            "--esc-token-file".into(),
            file("esc-token"),
            "--github-url".into(),
            self.github.base_url(),
            "--github-token-file".into(),
            file("github-token"),
            "--restart-debounce-seconds".into(),
            "1".into(),
        ]
    }

    fn keyward(&self, ns: &str, env: &[(&str, &str)]) -> Keyward {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Keyward::start_with_env(ns, &args, env)
    }

    /// What ESC holds at `path` now, read the way keyward reads it.
    async fn esc_value(&self, env: &str, path: &str) -> String {
        support::esc_value(&self.esc.base_url(), ESC_TOKEN, env, path).await
    }

    /// The definition text (secrets as ciphertext) and its revision.
    async fn definition(&self, env: &str) -> (String, i64) {
        let resp = reqwest::Client::new()
            .get(format!("{}/environments/{env}", self.esc.base_url()))
            .header("Authorization", format!("token {ESC_TOKEN}"))
            .send()
            .await
            .unwrap();
        let rev = resp.headers()["pulumi-esc-revision"].to_str().unwrap().parse().unwrap();
        (resp.text().await.unwrap(), rev)
    }
}

async fn ns(prefix: &str) -> TestNs {
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client(prefix, client).await;
    install_crd(&ns.client).await;
    ns
}

fn msec(name: &str, env: &str, path: &str, rotation: serde_json::Value) -> ManagedSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"esc": {"environment": env, "path": path}},
            "target": {"key": "DB_PASSWORD"},
            "refreshInterval": "1h",
            "rotation": rotation
        }
    }))
    .unwrap()
}

fn github_targets(prefix: &str) -> serde_json::Value {
    serde_json::json!([
        {"github": {"organization": "acme", "secretName": format!("{prefix}_ORG"), "visibility": "selected",
                    "selectedRepositoryIds": [1296269]}},
        {"github": {"repository": "acme/app", "secretName": format!("{prefix}_REPO")}},
        {"github": {"repository": "acme/app", "environment": "production", "secretName": format!("{prefix}_ENV")}}
    ])
}

async fn data(api: &Api<Secret>, name: &str, key: &str) -> Option<String> {
    let s = api.get_opt(name).await.ok()??;
    s.data?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

async fn condition(api: &Api<ManagedSecret>, name: &str, type_: &str) -> Option<Condition> {
    api.get(name)
        .await
        .ok()?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
}

async fn annotate(api: &Api<ManagedSecret>, name: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn deployment(ns: &TestNs, name: &str, uses: serde_json::Value) {
    let mut container = serde_json::json!({"name": "app", "image": "registry.invalid/app:1"});
    container
        .as_object_mut()
        .unwrap()
        .extend(uses.as_object().unwrap().clone());
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}
    }))
    .unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &d).await.unwrap();
}

async fn replica_sets(ns: &TestNs, app: &str) -> usize {
    let rs: Api<ReplicaSet> = ns.api();
    rs.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

/// Waits until `name` runs one ReplicaSet's worth of ready pods and keyward has adopted it.
async fn settled(ns: &TestNs, name: &str) {
    eventually(60, &format!("{name} rolled out and adopted"), || async {
        let d = ns.api::<Deployment>().get(name).await.ok()?;
        let st = d.status.clone().unwrap_or_default();
        let adopted = d
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("keyward.dev/secrets-hash")
            || d.spec?
                .template
                .metadata?
                .annotations
                .unwrap_or_default()
                .contains_key("keyward.dev/secrets-hash");
        (adopted
            && st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(1)
            && st.ready_replicas == Some(1))
        .then_some(())
    })
    .await;
}

/// The text of the definition outside `app.dbPassword`'s node: the part before its key and the part from the
/// next key of `app` on.
fn outside_target(definition: &str) -> (String, String) {
    let start = definition.find("    dbPassword:").expect("target key");
    let end = definition.find("    apiKey:").expect("next key");
    (definition[..start].to_string(), definition[end..].to_string())
}

#[tokio::test]
async fn generate_end_to_end_with_grace_pushes_and_restarts() {
    let world = World::start().await;
    world.put(ENV, FIXTURE);
    let (before, base_rev) = world.definition(ENV).await;
    let ns = ns("rot-e2e").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let keyward = world.keyward(&ns.name, &[]);
    let rotation = serde_json::json!({
        "category": "database", "strategy": "Generate", "gracePeriod": "25s",
        "generator": {"length": 40, "classes": ["Lowercase", "Uppercase", "Digits", "Symbols"]},
        "pushTo": github_targets("DB")
    });
    managed
        .create(&PostParams::default(), &msec("db", ENV, "app.dbPassword", rotation))
        .await
        .unwrap();
    eventually(30, "Secret synced with the initial value", || async {
        (data(&secrets, "db", "DB_PASSWORD").await.as_deref() == Some(INITIAL)).then_some(())
    })
    .await;
    // Two consumers: one reads only the value, one sees every key (envFrom).
    deployment(&ns, "by-key", serde_json::json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "DB_PASSWORD"}}}]})).await;
    deployment(
        &ns,
        "whole",
        serde_json::json!({"envFrom": [{"secretRef": {"name": "db"}}]}),
    )
    .await;
    settled(&ns, "by-key").await;
    settled(&ns, "whole").await;
    // Status is written at the end of the reconcile, after the GitHub pushes: wait for it rather than race it.
    let status = eventually(30, "status with the next rotation time", || async {
        managed
            .get("db")
            .await
            .ok()?
            .status
            .filter(|s| s.next_rotation_time.is_some())
    })
    .await;
    // Never rotated: due 60 days (category database) after creation.
    let created = managed.get("db").await.unwrap().metadata.creation_timestamp.unwrap().0;
    assert_eq!(
        status.next_rotation_time.unwrap().0,
        created + jiff::SignedDuration::from_hours(60 * 24)
    );
    assert_eq!(condition(&managed, "db", "RotationDue").await.unwrap().status, "False");

    annotate(&managed, "db", "keyward.dev/rotate-now", "leaked in chat").await;
    let new = eventually(60, "the Secret holds a new value", || async {
        data(&secrets, "db", "DB_PASSWORD").await.filter(|v| v != INITIAL)
    })
    .await;
    // ESC holds it, with the definition otherwise unchanged byte for byte, one revision later.
    assert_eq!(world.esc_value(ENV, "app.dbPassword").await, new);
    assert_eq!(world.esc_value(ENV, "app.apiKey").await, "untouched-api-key");
    let (after, rev) = world.definition(ENV).await;
    assert_eq!(rev, base_rev + 1, "one ESC write");
    assert_eq!(outside_target(&after), outside_target(&before));
    assert_ne!(after, before);
    // The generator's shape.
    assert_eq!(new.chars().count(), 40);
    assert!(new.chars().any(|c| c.is_ascii_lowercase()) && new.chars().any(|c| c.is_ascii_uppercase()));
    assert!(new.chars().any(|c| c.is_ascii_digit()) && new.chars().any(|c| c.is_ascii_punctuation()));
    // The previous value stays for the grace period.
    assert_eq!(
        data(&secrets, "db", "DB_PASSWORD_PREVIOUS").await.as_deref(),
        Some(INITIAL)
    );
    // GitHub opened each sealed box to exactly ESC's value.
    for (scope, name) in [
        ("org/acme", "DB_ORG"),
        ("repo/acme/app", "DB_REPO"),
        ("env/acme/app/production", "DB_ENV"),
    ] {
        let got = eventually(30, &format!("GitHub {scope} {name} pushed"), || async {
            world.github.received(scope, name).filter(|v| *v == new)
        })
        .await;
        assert_eq!(got, new);
    }
    // The reconcile writes status after its pushes.
    let ms = eventually(30, "status records the rotation", || async {
        let ms = managed.get("db").await.ok()?;
        let done = ms.status.as_ref()?.rotation.as_ref()?.last_reason.is_some();
        done.then_some(ms)
    })
    .await;
    let st = ms.status.clone().unwrap();
    let rotation = st.rotation.clone().unwrap();
    assert_eq!(rotation.last_reason.as_deref(), Some("leaked in chat"));
    assert_eq!(rotation.handled_request.as_deref(), Some("leaked in chat"));
    assert!(rotation.in_progress.is_none());
    let last = st.last_rotation_time.clone().unwrap().0;
    assert_eq!(
        st.next_rotation_time.clone().unwrap().0,
        last + jiff::SignedDuration::from_hours(60 * 24)
    );
    eventually(20, "condition Pushed", || async {
        condition(&managed, "db", "Pushed").await.filter(|c| c.status == "True")
    })
    .await;

    // Each consumer restarted once for the rotation.
    eventually(60, "both consumers rolled once", || async {
        (replica_sets(&ns, "by-key").await == 2 && replica_sets(&ns, "whole").await == 2).then_some(())
    })
    .await;
    // After the grace period the previous key goes; only the consumer that sees it restarts again.
    eventually(60, "previous key removed after the grace period", || async {
        data(&secrets, "db", "DB_PASSWORD_PREVIOUS")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let gone_at = jiff::Timestamp::now();
    assert!(
        gone_at >= last + jiff::SignedDuration::from_secs(25),
        "not before the grace period ended"
    );
    eventually(60, "whole-Secret consumer rolled once more", || async {
        (replica_sets(&ns, "whole").await == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        replica_sets(&ns, "by-key").await,
        2,
        "the value-only consumer did not restart for the cleanup"
    );
    assert_eq!(replica_sets(&ns, "whole").await, 3);

    // The same reason again rotates nothing; a new one rotates once more.
    annotate(&managed, "db", "keyward.dev/refresh-now", "1").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.definition(ENV).await.1, base_rev + 1, "one rotation per reason");
    annotate(&managed, "db", "keyward.dev/rotate-now", "second incident").await;
    let newer = eventually(60, "second rotation", || async {
        data(&secrets, "db", "DB_PASSWORD").await.filter(|v| *v != new)
    })
    .await;
    assert_eq!(world.esc_value(ENV, "app.dbPassword").await, newer);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(world.definition(ENV).await.1, base_rev + 2, "exactly one more rotation");
    let events = ns.events_for("db").await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("Rotated") && e.contains("leaked in chat")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("Rotated") && e.contains("second incident")),
        "{events:?}"
    );
    // None of the values keyward handled appears anywhere but in the Secret, ESC and GitHub.
    let all_events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let all_events = serde_json::to_string(&all_events.list(&ListParams::default()).await.unwrap()).unwrap();
    let object = serde_json::to_string(&managed.get("db").await.unwrap()).unwrap();
    let (logs, metrics) = (keyward.logs(), keyward.metrics().await);
    for value in [INITIAL, new.as_str(), newer.as_str()] {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value);
        for (place, text) in [
            ("logs", &logs),
            ("Events", &all_events),
            ("ManagedSecret", &object),
            ("metrics", &metrics),
        ] {
            assert!(
                !text.contains(value) && !text.contains(&b64),
                "a value leaked into {place}"
            );
        }
    }
    assert!(
        metrics.contains("keyward_rotations_total{strategy=\"generate\",result=\"success\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn schedules_notify_and_the_esc_strategy() {
    let world = World::start().await;
    world.put(ENV, FIXTURE);
    world.put(
        "acme/app/rotating",
        "values:\n  token:\n    fn::rotate::dev-random:\n      inputs:\n        length: 24\n      state:\n        fn::secret: first-token-value-000000\n",
    );
    let ns = ns("rot-sched").await;
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _keyward = world.keyward(&ns.name, &[]);
    // Notify, due 20s after creation: RotationOverdue on time, an Event, the value untouched.
    managed
        .create(
            &PostParams::default(),
            &msec(
                "notify",
                ENV,
                "app.apiKey",
                serde_json::json!({"period": "20s", "strategy": "Notify"}),
            ),
        )
        .await
        .unwrap();
    // Generate with a 30s period: rotates when due, then again a period later, not before.
    managed
        .create(
            &PostParams::default(),
            &msec(
                "gen",
                ENV,
                "app.dbPassword",
                serde_json::json!({"period": "30s", "strategy": "Generate"}),
            ),
        )
        .await
        .unwrap();
    // Esc: ESC's own rotator makes the value.
    managed
        .create(
            &PostParams::default(),
            &msec(
                "native",
                "acme/app/rotating",
                "token",
                serde_json::json!({"period": "90d", "strategy": "Esc"}),
            ),
        )
        .await
        .unwrap();
    let created = managed
        .get("notify")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    let overdue = eventually(40, "RotationOverdue on the Notify secret", || async {
        condition(&managed, "notify", "RotationOverdue")
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    let due = created + jiff::SignedDuration::from_secs(20);
    let late = overdue.last_transition_time.0.duration_since(due);
    assert!(
        late >= jiff::SignedDuration::ZERO && late <= jiff::SignedDuration::from_secs(3),
        "overdue {late:?} after due"
    );
    assert_eq!(
        data(&secrets, "notify", "DB_PASSWORD").await.as_deref(),
        Some("untouched-api-key")
    );
    let events = ns.events_for("notify").await;
    assert!(events.iter().any(|e| e.contains("RotationOverdue")), "{events:?}");

    let gen_created = managed.get("gen").await.unwrap().metadata.creation_timestamp.unwrap().0;
    let first = eventually(50, "gen rotated when due", || async {
        managed.get("gen").await.ok()?.status?.last_rotation_time.map(|t| t.0)
    })
    .await;
    let late = first.duration_since(gen_created + jiff::SignedDuration::from_secs(30));
    assert!(
        late >= jiff::SignedDuration::ZERO && late <= jiff::SignedDuration::from_secs(3),
        "rotated {late:?} after due"
    );
    // The status is not rewritten between rotations.
    let rv = managed.get("gen").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ms = managed.get("gen").await.unwrap();
    assert_eq!(
        ms.metadata.resource_version, rv,
        "no status writes while nothing changes"
    );
    assert_eq!(
        ms.status.unwrap().next_rotation_time.unwrap().0,
        first + jiff::SignedDuration::from_secs(30)
    );

    // ESC-native rotation: once, on request, then synced.
    annotate(&managed, "native", "keyward.dev/rotate-now", "provider test").await;
    let token = eventually(40, "native rotation synced", || async {
        data(&secrets, "native", "DB_PASSWORD")
            .await
            .filter(|v| v != "first-token-value-000000")
    })
    .await;
    assert_eq!(token.len(), 24);
    assert_eq!(world.esc_value("acme/app/rotating", "token").await, token);
    assert_eq!(world.esc.counters().requests("rotate"), 1);
}

/// Starts a rotation with keyward set to abort after `step`, then a clean keyward: one rotation in the end,
/// ESC, the Secret and GitHub agree, and no second value was written anywhere.
async fn crash_after(world: &World, step: &'static str) {
    let ns = ns(&format!("rot-crash-{}", step.replace('-', ""))).await;
    let env = format!("acme/app/crash-{step}");
    world.put(&env, FIXTURE);
    let (before, base_rev) = world.definition(&env).await;
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let secret_name = format!("CRASH_{}", step.replace('-', "_").to_uppercase());
    let rotation = serde_json::json!({
        "period": "90d", "strategy": "Generate",
        "pushTo": [{"github": {"repository": "acme/app", "secretName": secret_name}}]
    });
    let mut crashing = world.keyward(&ns.name, &[("KEYWARD_TEST_ABORT_AFTER", step)]);
    managed
        .create(&PostParams::default(), &msec("db", &env, "app.dbPassword", rotation))
        .await
        .unwrap();
    eventually(30, "initial sync", || async {
        (data(&secrets, "db", "DB_PASSWORD").await.as_deref() == Some(INITIAL)).then_some(())
    })
    .await;
    annotate(&managed, "db", "keyward.dev/rotate-now", &format!("crash test {step}")).await;
    let exit = tokio::task::spawn_blocking(move || {
        let status = crashing.wait_exit(60);
        (status, crashing)
    })
    .await
    .unwrap();
    assert!(exit.0.is_some_and(|s| !s.success()), "keyward aborted after {step}");
    drop(exit);

    let _keyward = world.keyward(&ns.name, &[]);
    let value = eventually(60, &format!("{step}: converged"), || async {
        let v = data(&secrets, "db", "DB_PASSWORD").await.filter(|v| v != INITIAL)?;
        let ms = managed.get("db").await.ok()?;
        let st = ms.status?;
        (st.rotation?.in_progress.is_none()
            && world.github.received("repo/acme/app", &secret_name).as_deref() == Some(v.as_str()))
        .then_some(v)
    })
    .await;
    assert_eq!(
        world.esc_value(&env, "app.dbPassword").await,
        value,
        "{step}: ESC and the Secret agree"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, rev) = world.definition(&env).await;
    assert_eq!(rev, base_rev + 1, "{step}: exactly one value written to ESC");
    assert_eq!(outside_target(&after), outside_target(&before));
    assert_eq!(
        data(&secrets, "db", "DB_PASSWORD").await.as_deref(),
        Some(value.as_str()),
        "{step}: no later rotation"
    );
    let status = managed.get("db").await.unwrap().status.unwrap();
    assert_eq!(
        status.rotation.unwrap().handled_request.as_deref(),
        Some(format!("crash test {step}").as_str())
    );
}

#[tokio::test]
async fn an_abort_after_any_step_converges_to_exactly_one_rotation() {
    let world = World::start().await;
    for step in ["intent", "esc-write", "secret-write", "github-push"] {
        crash_after(&world, step).await;
    }
}

#[tokio::test]
async fn rate_limits_conflicts_and_esc_outages() {
    let world = World::start().await;
    world.put(ENV, FIXTURE);
    let (_, base_rev) = world.definition(ENV).await;
    let ns = ns("rot-faults").await;
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let keyward = world.keyward(&ns.name, &[]);
    let rotation = serde_json::json!({
        "period": "90d", "strategy": "Generate",
        "pushTo": [{"github": {"organization": "acme", "secretName": "FAULTS"}}]
    });
    managed
        .create(&PostParams::default(), &msec("db", ENV, "app.dbPassword", rotation))
        .await
        .unwrap();
    eventually(30, "initial sync and push", || async {
        world.github.received("org/acme", "FAULTS").filter(|v| v == INITIAL)
    })
    .await;

    // ESC down while rotating: the Secret is untouched, and the rotation happens once ESC is back.
    world.esc.set_fault(Fault::unavailable(None));
    annotate(&managed, "db", "keyward.dev/rotate-now", "during outage").await;
    eventually(30, "the failure is reported", || async {
        // Usually the rotation's own ESC write fails; if a refresh tick began meanwhile, the read does.
        let due = condition(&managed, "db", "RotationDue")
            .await
            .filter(|c| c.reason == "SourceUnavailable");
        due.or(condition(&managed, "db", "Synced")
            .await
            .filter(|c| c.reason == "SourceUnavailable"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        data(&secrets, "db", "DB_PASSWORD").await.as_deref(),
        Some(INITIAL),
        "Secret untouched"
    );
    // ESC back, with one conflicting write first (someone else edited): the write is retried on the new ETag.
    world.esc.set_fault(Fault::conflict(1));
    let first = eventually(90, "rotated once ESC is back", || async {
        data(&secrets, "db", "DB_PASSWORD").await.filter(|v| v != INITIAL)
    })
    .await;
    assert_eq!(world.esc_value(ENV, "app.dbPassword").await, first);
    assert_eq!(world.definition(ENV).await.1, base_rev + 1);
    assert!(world.esc.counters().requests("update") >= 2, "the 409 was retried");

    // GitHub's secondary rate limit (403 + retry-after) and primary limit (429 + x-ratelimit-reset) are waited
    // out, then the push lands.
    for (fault, reason) in [
        (GithubFault::secondary_rate_limit(1, 1), "secondary"),
        (GithubFault::rate_limited(1, 1), "primary"),
    ] {
        world.github.set_fault(fault);
        let previous = data(&secrets, "db", "DB_PASSWORD").await.unwrap();
        let started = Instant::now();
        annotate(
            &managed,
            "db",
            "keyward.dev/rotate-now",
            &format!("rate limit {reason}"),
        )
        .await;
        let v = eventually(60, &format!("{reason}: pushed after the limit"), || async {
            let v = data(&secrets, "db", "DB_PASSWORD").await.filter(|v| *v != previous)?;
            (world.github.received("org/acme", "FAULTS").as_deref() == Some(v.as_str())).then_some(v)
        })
        .await;
        assert!(started.elapsed() >= Duration::from_secs(1), "{reason}: waited");
        assert_eq!(world.esc_value(ENV, "app.dbPassword").await, v);
        assert_eq!(world.github.counters().faults_injected, 1);
        world.github.reset_counters();
    }
    let logs = keyward.logs();
    assert!(!logs.contains(INITIAL), "no value in logs");
}
