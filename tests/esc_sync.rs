//! ESC → Secret sync, end to end: the real API server, the local ESC server, and a `keyward run` process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::api::ManagedSecret;
use keyward_dev::esc_server::{EscServer, EscServerOptions, Fault};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::{Keyward, TestNs, eventually, install_crd};

const TOKEN: &str = "test-esc-token";

struct Esc {
    server: EscServer,
    _dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
}

impl Esc {
    async fn start() -> Esc {
        let dir = tempfile::tempdir().unwrap();
        let server = EscServer::start(EscServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().join("esc.json"),
            token: Some(TOKEN.into()),
        })
        .await
        .unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        Esc {
            server,
            _dir: dir,
            token_file,
        }
    }

    fn put(&self, env: &str, yaml: &str) -> u64 {
        let parts: Vec<&str> = env.split('/').collect();
        self.server.put_definition(parts[0], parts[1], parts[2], yaml).unwrap()
    }

    fn keyward(&self, ns: &str) -> Keyward {
        Keyward::start(
            ns,
            &[
                "--esc-url",
                &self.server.base_url(),
                "--esc-token-file",
                self.token_file.to_str().unwrap(),
            ],
        )
    }
}

async fn ns(prefix: &str) -> TestNs {
    let ns = TestNs::new(prefix).await;
    install_crd(&ns.client).await;
    ns
}

fn esc_msec(name: &str, env: &str, path: &str, interval: &str) -> ManagedSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"esc": {"environment": env, "path": path}},
            "target": {"key": "VALUE"},
            "refreshInterval": interval
        }
    }))
    .unwrap()
}

fn definition(value: &str) -> String {
    format!("values:\n  db:\n    password:\n      fn::secret: {value}\n  plain: not-secret\n")
}

async fn value(api: &Api<Secret>, name: &str) -> Option<Vec<u8>> {
    api.get_opt(name).await.ok()??.data?.get("VALUE").map(|b| b.0.clone())
}

async fn wait_value(api: &Api<Secret>, name: &str, want: &str, secs: u64, what: &str) {
    eventually(secs, what, || async {
        (value(api, name).await.as_deref() == Some(want.as_bytes())).then_some(())
    })
    .await;
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

async fn wait_reason(api: &Api<ManagedSecret>, name: &str, type_: &str, reason: &str) -> Condition {
    eventually(40, &format!("{name}: {type_} reason {reason}"), || async {
        condition(api, name, type_).await.filter(|c| c.reason == reason)
    })
    .await
}

async fn annotate(api: &Api<ManagedSecret>, name: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn create_follow_refresh_now_and_pin() {
    let esc = Esc::start().await;
    let env = "acme/app/prod";
    let first = esc.put(env, &definition("v1"));
    // The 1h one reads an environment of its own: on a shared one it would take the 10s one's newer snapshot
    // (snapshots are shared per cycle, and a newer one always counts as fresh).
    let slow_env = "acme/app/prod-slow";
    esc.put(slow_env, &definition("v1"));
    let ns = ns("esc-follow").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let keyward = esc.keyward(&ns.name);
    eventually(30, "keyward /readyz answers 200", || async {
        let r = reqwest::get(format!("http://{}/readyz", keyward.http)).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    managed
        .create(
            &PostParams::default(),
            &esc_msec("fast", env, "values.db.password", "10s"),
        )
        .await
        .unwrap();
    managed
        .create(&PostParams::default(), &esc_msec("slow", slow_env, "db.password", "1h"))
        .await
        .unwrap();
    let mut pinned = esc_msec("pinned", env, "db.password", "10s");
    pinned.spec.source.esc.as_mut().unwrap().version = Some(first.to_string());
    managed.create(&PostParams::default(), &pinned).await.unwrap();
    for name in ["fast", "slow", "pinned"] {
        wait_value(&secrets, name, "v1", 30, &format!("{name} created with v1")).await;
    }
    let ms = managed.get("fast").await.unwrap();
    let src = ms.status.unwrap().source.unwrap();
    assert_eq!(src.revision, Some(first as i64));
    assert!(src.value_hash.unwrap().starts_with("hmac-sha256:"));

    // ESC moves on: the 10s one follows within one refresh; the 1h one only when asked; the pin stays.
    let second = esc.put(env, &definition("v2"));
    let slow_second = esc.put(slow_env, &definition("v2"));
    wait_value(&secrets, "fast", "v2", 25, "fast follows within one refresh").await;
    assert_eq!(
        value(&secrets, "slow").await.as_deref(),
        Some(&b"v1"[..]),
        "1h interval: not yet"
    );
    annotate(&managed, "slow", "keyward.dev/refresh-now", "1").await;
    wait_value(&secrets, "slow", "v2", 10, "refresh-now refreshes at once").await;
    let rev = managed
        .get("slow")
        .await
        .unwrap()
        .status
        .unwrap()
        .source
        .unwrap()
        .revision;
    assert_eq!(rev, Some(slow_second as i64));
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        value(&secrets, "pinned").await.as_deref(),
        Some(&b"v1"[..]),
        "pinned revision stays"
    );

    // Moving the pin moves the value.
    let patch = serde_json::json!({"spec": {"source": {"esc": {"version": second.to_string()}}}});
    managed
        .patch("pinned", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_value(&secrets, "pinned", "v2", 10, "re-pinned").await;
}

#[tokio::test]
async fn fifty_managed_secrets_cost_one_open_per_cycle() {
    let esc = Esc::start().await;
    let env = "acme/shared/prod";
    let yaml: String = std::iter::once("values:\n".to_string())
        .chain((0..50).map(|i| format!("  key{i}:\n    fn::secret: value-{i}\n")))
        .collect();
    esc.put(env, &yaml);
    let ns = ns("esc-fifty").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    for i in 0..50 {
        managed
            .create(
                &PostParams::default(),
                &esc_msec(&format!("s{i}"), env, &format!("key{i}"), "10s"),
            )
            .await
            .unwrap();
    }
    eventually(60, "all 50 Secrets synced", || async {
        let n = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keyward"))
            .await
            .ok()?
            .items
            .len();
        (n == 50).then_some(())
    })
    .await;
    for i in [0, 17, 49] {
        assert_eq!(
            value(&secrets, &format!("s{i}")).await.unwrap(),
            format!("value-{i}").as_bytes()
        );
    }
    let initial = esc.server.counters().opens(env);
    // Three full 10s cycles from a tick boundary.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(10_000 - now % 10_000 + 2_000)).await;
    let start = esc.server.counters().opens(env);
    let versions = || async {
        let mut v = Vec::new();
        for name in ["s0", "s25", "s49"] {
            v.push(secrets.get(name).await.unwrap().metadata.resource_version);
            v.push(managed.get(name).await.unwrap().metadata.resource_version);
        }
        v
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let opens = esc.server.counters().opens(env) - start;
    assert_eq!(
        before,
        versions().await,
        "steady state: Secrets or ManagedSecrets were written"
    );
    println!("opens while creating 50 ManagedSecrets: {initial}; opens over three 10s cycles: {opens}");
    assert!(initial <= 5, "creating 50 ManagedSecrets cost {initial} opens");
    assert!(
        (2..=4).contains(&opens),
        "expected one open per cycle (3 cycles), saw {opens}"
    );
}

#[tokio::test]
async fn source_failures_leave_the_secret_alone_and_recover() {
    let esc = Esc::start().await;
    let env = "acme/app/staging";
    esc.put(env, &definition("good"));
    let ns = ns("esc-fault").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    managed
        .create(&PostParams::default(), &esc_msec("db", env, "db.password", "1h"))
        .await
        .unwrap();
    wait_value(&secrets, "db", "good", 30, "first sync").await;
    let rv = secrets.get("db").await.unwrap().metadata.resource_version;

    // A new value lands in ESC, then ESC goes down; a forced refresh fails and changes nothing.
    esc.put(env, &definition("newer"));
    esc.server.set_fault(Fault::unavailable(Some(20)));
    esc.server.reset_counters();
    annotate(&managed, "db", "keyward.dev/refresh-now", "outage-1").await;
    let c = wait_reason(&managed, "db", "Synced", "SourceUnavailable").await;
    assert_eq!(c.status, "False");
    assert!(c.message.contains("ESC is unavailable"), "{}", c.message);
    assert_eq!(condition(&managed, "db", "Ready").await.unwrap().status, "False");
    // Retry-After: 20 is honoured: within 14s there is no second attempt (backoff alone would retry at 5s).
    tokio::time::sleep(Duration::from_secs(14)).await;
    let tries = esc.server.counters().requests("getETag");
    assert_eq!(
        tries,
        1,
        "{tries} attempts in 14s despite Retry-After: 20\n{}",
        _keyward.logs()
    );
    let secret = secrets.get("db").await.unwrap();
    assert_eq!(
        secret.metadata.resource_version, rv,
        "the Secret was written during the outage"
    );
    assert_eq!(secret.data.unwrap()["VALUE"].0, b"good");

    // Throttling is told apart.
    esc.server.set_fault(Fault::throttled(5));
    annotate(&managed, "db", "keyward.dev/refresh-now", "outage-2").await;
    wait_reason(&managed, "db", "Synced", "Throttled").await;
    assert_eq!(value(&secrets, "db").await.as_deref(), Some(&b"good"[..]));

    // ESC returns: keyward recovers by itself and takes the newer value, at its next retry. Four failures in a
    // row (two refresh requests and their retries) back off up to 40 s, so allow twice that.
    esc.server.set_fault(Fault::none());
    wait_value(&secrets, "db", "newer", 90, "recovery after the outage").await;
    let c = wait_reason(&managed, "db", "Ready", "Synced").await;
    assert_eq!(c.status, "True");
}

#[tokio::test]
async fn missing_path_is_source_not_found_naming_the_path() {
    let esc = Esc::start().await;
    let env = "acme/app/dev";
    esc.put(env, &definition("x"));
    let ns = ns("esc-missing").await;
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    managed
        .create(&PostParams::default(), &esc_msec("nope", env, "db.pasword", "1h"))
        .await
        .unwrap();
    let c = wait_reason(&managed, "nope", "Ready", "SourceNotFound").await;
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("db.pasword") && c.message.contains(env),
        "{}",
        c.message
    );
    assert!(
        secrets.get_opt("nope").await.unwrap().is_none(),
        "no Secret for a missing path"
    );
    // An environment that does not exist says so too.
    managed
        .create(&PostParams::default(), &esc_msec("noenv", "acme/app/ghost", "a", "1h"))
        .await
        .unwrap();
    let c = wait_reason(&managed, "noenv", "Ready", "SourceNotFound").await;
    assert!(c.message.contains("acme/app/ghost"), "{}", c.message);
}

#[tokio::test]
async fn canary_value_appears_only_in_the_secret() {
    let canary = format!("CANARY-{}-kw", std::process::id());
    let canary_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &canary);
    let esc = Esc::start().await;
    let env = "acme/app/canary";
    esc.put(env, &definition(&canary));
    let ns = ns("esc-canary").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let keyward = esc.keyward(&ns.name);
    managed
        .create(&PostParams::default(), &esc_msec("canary", env, "db.password", "10s"))
        .await
        .unwrap();
    wait_value(&secrets, "canary", &canary, 30, "canary synced").await;
    // Drift, a failure and a missing path: every log, Event and status path runs.
    let edit = serde_json::json!({"data": {"VALUE": "aGFuZA=="}});
    secrets
        .patch("canary", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_value(&secrets, "canary", &canary, 30, "drift repaired").await;
    esc.server.set_fault(Fault::unavailable(None));
    annotate(&managed, "canary", "keyward.dev/refresh-now", "x").await;
    wait_reason(&managed, "canary", "Synced", "SourceUnavailable").await;
    esc.server.set_fault(Fault::none());
    managed
        .create(&PostParams::default(), &esc_msec("missing", env, "db.nothing", "10s"))
        .await
        .unwrap();
    wait_reason(&managed, "missing", "Ready", "SourceNotFound").await;
    wait_reason(&managed, "canary", "Ready", "Synced").await;

    let logs = keyward.logs();
    assert!(logs.contains("secret written"), "debug logs were captured");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap()).unwrap();
    assert!(events.contains("Synced"), "Events were emitted");
    let statuses = serde_json::to_string(&managed.list(&ListParams::default()).await.unwrap()).unwrap();
    let metrics = keyward.metrics().await;
    assert!(
        metrics.contains("secret_access_total{"),
        "metrics were scraped:\n{metrics}"
    );
    let scanned = [
        ("keyward logs", &logs),
        ("Events", &events),
        ("ManagedSecret objects", &statuses),
        ("metrics", &metrics),
    ];
    for (what, text) in scanned {
        assert!(!text.contains(&canary), "canary found in {what}");
        assert!(!text.contains(&canary_b64), "base64 canary found in {what}");
    }
    assert_eq!(
        value(&secrets, "canary").await.unwrap(),
        canary.as_bytes(),
        "the Secret does hold it"
    );
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_a_token_secret_works() {
    let esc = Esc::start().await;
    let env = "acme/app/auth";
    esc.put(env, &definition("authorized"));
    let ns = ns("esc-auth").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let mut keyward = Keyward::start(
        &ns.name,
        &[
            "--esc-url",
            &esc.server.base_url(),
            "--esc-token-file",
            wrong.to_str().unwrap(),
        ],
    );
    managed
        .create(&PostParams::default(), &esc_msec("auth", env, "db.password", "1h"))
        .await
        .unwrap();
    let c = wait_reason(&managed, "auth", "Ready", "SourceUnauthorized").await;
    assert!(c.message.contains("not authorized by ESC"), "{}", c.message);
    assert!(!keyward.logs().contains("not-the-token"), "the token reached the log");
    keyward.kill();

    // The token from a Kubernetes Secret reference instead.
    let token = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("esc-token".into()),
            ..Default::default()
        },
        string_data: Some([("token".to_string(), TOKEN.to_string())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &token).await.unwrap();
    let reference = format!("{}/esc-token", ns.name);
    let _keyward = Keyward::start(
        &ns.name,
        &["--esc-url", &esc.server.base_url(), "--esc-token-secret", &reference],
    );
    annotate(&managed, "auth", "keyward.dev/refresh-now", "after-fix").await;
    wait_value(
        &secrets,
        "auth",
        "authorized",
        30,
        "synced with the token from a Secret",
    )
    .await;
}

/// Field report C1, end to end: each JSON type ESC serves arrives in the Secret as the README says — numbers
/// exactly as ESC's JSON text has them (`1.50` stays `1.50`, an integer beyond 64 bits keeps every digit),
/// strings as they are, booleans and null as their JSON words, objects and arrays as ESC's JSON.
#[tokio::test]
async fn every_json_type_arrives_exactly_as_esc_serves_it() {
    let esc = Esc::start().await;
    let env = "acme/app/types";
    esc.put(
        env,
        "values:\n  price: 1.50\n  big: 123456789012345678901234567890\n  exp: 6.02e23\n  int: 42\n  \
         text: \"  spaced 1.50 \"\n  yes: true\n  none: null\n  list: [1.50, \"a\", false]\n  \
         object: {a: 1.0, b: [x]}\n",
    );
    let ns = ns("esc-types").await;
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    let cases = [
        ("price", "1.50"),
        ("big", "123456789012345678901234567890"),
        ("exp", "6.02e23"),
        ("int", "42"),
        ("text", "  spaced 1.50 "),
        ("yes", "true"),
        ("list", r#"[1.50,"a",false]"#),
        ("object", r#"{"a":1.0,"b":["x"]}"#),
    ];
    for (path, _) in cases {
        managed
            .create(&PostParams::default(), &esc_msec(path, env, path, "1h"))
            .await
            .unwrap();
    }
    for (path, want) in cases {
        wait_value(&secrets, path, want, 40, &format!("{path} as {want}")).await;
    }
    // null has no text to give: refused, nothing written.
    managed
        .create(&PostParams::default(), &esc_msec("none", env, "none", "1h"))
        .await
        .unwrap();
    let c = wait_reason(&managed, "none", "Ready", "InvalidSource").await;
    assert!(c.message.contains("null"), "{}", c.message);
    assert!(secrets.get_opt("none").await.unwrap().is_none());
}
