//! Several keys in one Secret, end to end: `source.esc.data`/`dataFrom` from one open of the environment, a
//! Secret consumed whole through `envFrom`, templates that make typed Secrets the API server accepts, and
//! refusals (wrong inputs, template errors) that keep the last good data and never show a value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::api::ManagedSecret;
use keyward_dev::esc_server::EscServer;
use kube::Api;
use kube::api::{ListParams, PostParams};
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

const TOKEN: &str = "test-esc-token";

/// The local ESC server, and keyward started against it (a short restart debounce).
struct Esc {
    server: EscServer,
    dir: tempfile::TempDir,
}

impl Esc {
    async fn start() -> Esc {
        let dir = tempfile::tempdir().unwrap();
        let server = support::esc_server(TOKEN, dir.path()).await;
        Esc { server, dir }
    }

    fn put(&self, env: &str, yaml: &str) {
        let parts: Vec<&str> = env.split('/').collect();
        self.server.put_definition(parts[0], parts[1], parts[2], yaml).unwrap();
    }

    fn keyward(&self, ns: &str) -> Keyward {
        let token_file = self.dir.path().join("esc-token");
        let args = [
            "--esc-url",
            &self.server.base_url(),
            "--esc-token-file",
            token_file.to_str().unwrap(),
        ];
        Keyward::start(ns, &[&args[..], &["--restart-debounce-seconds", "2"]].concat())
    }
}

/// A namespace on the control plane with controllers (one binary, one control plane: the envFrom test rolls a
/// Deployment out).
async fn ns(prefix: &str) -> TestNs {
    let ns = TestNs::with_client(prefix, cluster_with_controllers().client().await).await;
    install_crd(&ns.client).await;
    ns
}

fn msec(name: &str, spec: serde_json::Value) -> ManagedSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

async fn data(api: &Api<Secret>, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = api.get_opt(name).await.ok()??;
    Some(s.data?.into_iter().map(|(k, v)| (k, v.0)).collect())
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

async fn wait_reason(api: &Api<ManagedSecret>, name: &str, reason: &str) -> Condition {
    eventually(60, &format!("{name}: Ready reason {reason}"), || async {
        condition(api, name, "Ready").await.filter(|c| c.reason == reason)
    })
    .await
}

/// The team's settings as the demo's secret map has them: thirteen values an app reads from its environment.
const SETTINGS: [(&str, &str); 13] = [
    ("DATABASE_HOST", "db.internal"),
    ("DATABASE_PORT", "5432"),
    ("DATABASE_NAME", "app"),
    ("DATABASE_USER", "app"),
    ("POSTGRES_PASSWORD", "pg-canary-1"),
    ("REDIS_PASSWORD", "redis-canary-1"),
    ("OPENAI_API_KEY", "sk-canary-1"),
    ("ANTHROPIC_API_KEY", "ant-canary-1"),
    ("STRIPE_SECRET_KEY", "stripe-canary-1"),
    ("SENTRY_DSN", "https://k@sentry.example/1"),
    ("JWT_SECRET", "jwt-canary-1"),
    ("SNOWFLAKE_PASSWORD", "sf-canary-1"),
    ("SMTP_PASSWORD", "smtp-canary-1"),
];

fn settings_yaml(changed: Option<(&str, &str)>) -> String {
    let mut yaml = String::from("values:\n  app:\n");
    for (k, v) in SETTINGS {
        let v = match changed {
            Some((ck, cv)) if ck == k => cv,
            _ => v,
        };
        yaml.push_str(&format!("    {}:\n      fn::secret: {v:?}\n", k.to_lowercase()));
    }
    yaml
}

/// Thirteen keys of one Secret from one ManagedSecret (`data`, one open), consumed by one `envFrom`; one value
/// changed in ESC changes that key only, byte for byte, and restarts the consumer once.
#[tokio::test]
async fn thirteen_keys_fill_one_secret_consumed_by_env_from_and_one_change_restarts_once() {
    let esc = Esc::start().await;
    let env = "acme/app/prod";
    esc.put(env, &settings_yaml(None));
    let ns = ns("keys-envfrom").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    let entries: Vec<serde_json::Value> = SETTINGS
        .iter()
        .map(|(k, _)| serde_json::json!({"key": k, "path": format!("app.{}", k.to_lowercase())}))
        .collect();
    managed
        .create(
            &PostParams::default(),
            &msec(
                "app-settings",
                serde_json::json!({
                    "source": {"esc": {"environment": env, "data": entries}},
                    "target": {"name": "app-env"},
                    "refreshInterval": "10s"
                }),
            ),
        )
        .await
        .unwrap();
    let want: BTreeMap<String, Vec<u8>> = SETTINGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    eventually(60, "the 13-key Secret", || async {
        (data(&secrets, "app-env").await? == want).then_some(())
    })
    .await;
    assert!(esc.server.counters().opens(env) <= 2, "one open gives all 13 values");

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                     "name": "app", "image": "registry.invalid/app:1",
                     "envFrom": [{"secretRef": {"name": "app-env"}}]}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = ns.api();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let consumers = || async {
        let ms = managed.get("app-settings").await.ok()?;
        let c = ms.status?.consumers;
        (c.len() == 1 && c[0].name == "web").then_some(c)
    };
    eventually(60, "web found as the Secret's consumer (envFrom)", consumers).await;
    let generation = || async { deployments.get("web").await.unwrap().metadata.generation.unwrap() };
    let before = generation().await;

    esc.put(env, &settings_yaml(Some(("OPENAI_API_KEY", "sk-canary-2"))));
    let mut changed = want.clone();
    changed.insert("OPENAI_API_KEY".into(), b"sk-canary-2".to_vec());
    eventually(60, "the changed key, the 12 others byte for byte", || async {
        (data(&secrets, "app-env").await? == changed).then_some(())
    })
    .await;
    eventually(60, "web restarted", || async {
        (generation().await == before + 1).then_some(())
    })
    .await;
    // Two more refresh cycles: nothing else changes, no second restart.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(generation().await, before + 1, "one change, one restart");
    assert_eq!(data(&secrets, "app-env").await.unwrap(), changed);
}

/// A ManagedSecret of 20 keys (`dataFrom` one object) costs the ESC calls of one with one key: one open per
/// environment and cycle. Keys are named by the leaves' paths.
#[tokio::test]
async fn twenty_keys_cost_the_esc_calls_of_one() {
    let esc = Esc::start().await;
    let (one_env, many_env) = ("acme/one/prod", "acme/many/prod");
    esc.put(one_env, "values:\n  app:\n    only:\n      fn::secret: v\n");
    let mut yaml = String::from("values:\n  app:\n    settings:\n");
    for i in 0..10 {
        yaml.push_str(&format!("      key{i}:\n        fn::secret: value-{i}\n"));
    }
    yaml.push_str("      nested:\n");
    for i in 10..20 {
        yaml.push_str(&format!("        key {i}: value-{i}\n"));
    }
    esc.put(many_env, &yaml);
    let ns = ns("keys-calls").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    let spec = |env: &str, esc_source: serde_json::Value, target: serde_json::Value| {
        let mut source = esc_source;
        source["environment"] = env.into();
        serde_json::json!({"source": {"esc": source}, "target": target, "refreshInterval": "10s"})
    };
    managed
        .create(
            &PostParams::default(),
            &msec(
                "one",
                spec(
                    one_env,
                    serde_json::json!({"path": "app.only"}),
                    serde_json::json!({"key": "ONLY"}),
                ),
            ),
        )
        .await
        .unwrap();
    managed
        .create(
            &PostParams::default(),
            &msec(
                "many",
                spec(
                    many_env,
                    serde_json::json!({"dataFrom": [{"path": "app.settings", "keyPrefix": "S_"}]}),
                    serde_json::json!({}),
                ),
            ),
        )
        .await
        .unwrap();
    let many = eventually(60, "20 keys", || async {
        data(&secrets, "many").await.filter(|d| d.len() == 20)
    })
    .await;
    assert_eq!(many["S_key3"], b"value-3");
    assert_eq!(many["S_nested_key_15"], b"value-15", "a space in a name becomes _");
    eventually(30, "one key", || async {
        data(&secrets, "one").await.filter(|d| d.len() == 1)
    })
    .await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(10_000 - now % 10_000 + 2_000)).await;
    let counters = esc.server.counters();
    let start = (counters.opens(one_env), counters.opens(many_env));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let counters = esc.server.counters();
    let (one, many) = (counters.opens(one_env) - start.0, counters.opens(many_env) - start.1);
    println!("opens over three 10s cycles: 1 key {one}, 20 keys {many}");
    assert_eq!(one, many, "20 keys cost {many} opens, 1 key {one}");
    assert!((2..=4).contains(&one), "one open per cycle, saw {one}");
}

fn tls_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn typed_yaml(crt: &str, key: &str, password: &str) -> String {
    format!(
        "values:\n  tls:\n    crt: |\n{}    key:\n      fn::secret: |\n{}  registry:\n    host: registry.example\n    user: robot\n    password:\n      fn::secret: {password}\n",
        block(crt, 6),
        block(key, 8)
    )
}

/// A tls pair and a dockerconfigjson built by templates are accepted by the API server (which checks those
/// types); wrong inputs (a key that is not the certificate's, a template error) are refused with a condition
/// that says what is wrong, and the Secret keeps its last good data. No value reaches a condition, an Event or
/// the logs.
#[tokio::test]
async fn templates_make_typed_secrets_and_wrong_inputs_are_refused_clearly() {
    let esc = Esc::start().await;
    let env = "acme/edge/prod";
    let (crt, key) = tls_pair();
    let canary = format!("pw-canary-{}", std::process::id());
    esc.put(env, &typed_yaml(&crt, &key, &canary));
    let ns = ns("keys-typed").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let keyward = esc.keyward(&ns.name);
    managed
        .create(
            &PostParams::default(),
            &msec(
                "edge-tls",
                serde_json::json!({
                    "source": {"esc": {"environment": env, "data": [
                        {"key": "crt", "path": "tls.crt"}, {"key": "key", "path": "tls.key"}]}},
                    "target": {"type": "kubernetes.io/tls", "template": {"data": {
                        "tls.crt": "{{ crt }}", "tls.key": "{{ key }}"}}},
                    "refreshInterval": "10s"
                }),
            ),
        )
        .await
        .unwrap();
    let docker_template = r#"{{ {"auths": {host: {"auth": (user ~ ":" ~ password) | b64encode}}} | tojson }}"#;
    managed
        .create(
            &PostParams::default(),
            &msec(
                "pull",
                serde_json::json!({
                    "source": {"esc": {"environment": env, "dataFrom": [{"path": "registry"}]}},
                    "target": {"type": "kubernetes.io/dockerconfigjson", "template": {"data": {
                        ".dockerconfigjson": docker_template}}},
                    "refreshInterval": "10s"
                }),
            ),
        )
        .await
        .unwrap();
    let tls = eventually(60, "the tls Secret", || async {
        let s = secrets.get_opt("edge-tls").await.ok()??;
        (s.type_.as_deref() == Some("kubernetes.io/tls")).then_some(s)
    })
    .await;
    let tls_data = tls.data.unwrap();
    assert_eq!(
        tls_data.keys().collect::<Vec<_>>(),
        ["tls.crt", "tls.key"],
        "inputs are not keys"
    );
    assert_eq!(tls_data["tls.crt"].0, crt.as_bytes());
    let pull = eventually(60, "the dockerconfigjson Secret", || async {
        let s = secrets.get_opt("pull").await.ok()??;
        (s.type_.as_deref() == Some("kubernetes.io/dockerconfigjson")).then_some(s)
    })
    .await;
    let config: serde_json::Value = serde_json::from_slice(&pull.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("robot:{canary}"));
    assert_eq!(config["auths"]["registry.example"]["auth"], auth.as_str());

    // The key is swapped for one that is not the certificate's: refused, the good pair stays.
    let (_, other_key) = tls_pair();
    esc.put(env, &typed_yaml(&crt, &other_key, &canary));
    let c = wait_reason(&managed, "edge-tls", "InvalidSecretData").await;
    assert_eq!(
        c.message,
        "Secret type kubernetes.io/tls: tls.key does not belong to the certificate in tls.crt (their public keys differ)"
    );
    assert_eq!(
        data(&secrets, "edge-tls").await.unwrap()["tls.key"],
        key.as_bytes(),
        "the last good key stays"
    );
    esc.put(env, &typed_yaml(&crt, &key, &canary));
    wait_reason(&managed, "edge-tls", "Synced").await;

    // A registry entry without a password: refused as the wrong shape.
    let bad = msec(
        "pull-bad",
        serde_json::json!({
            "source": {"esc": {"environment": env, "dataFrom": [{"path": "registry"}]}},
            "target": {"type": "kubernetes.io/dockerconfigjson", "template": {"data": {
                ".dockerconfigjson": r#"{{ {"auths": {host: {"username": user}}} | tojson }}"#}}},
            "refreshInterval": "10s"
        }),
    );
    managed.create(&PostParams::default(), &bad).await.unwrap();
    let c = wait_reason(&managed, "pull-bad", "InvalidSecretData").await;
    assert!(
        c.message
            .contains(r#""auths" entry 1 needs "auth", or "username" and "password""#),
        "{}",
        c.message
    );
    assert!(secrets.get_opt("pull-bad").await.unwrap().is_none(), "nothing written");

    // A template error names the key, line and column.
    let typo = msec(
        "typo",
        serde_json::json!({
            "source": {"esc": {"environment": env, "data": [{"key": "password", "path": "registry.password"}]}},
            "target": {"template": {"data": {"URL": "https://robot:\n{{ pasword }}@registry.example"}}},
            "refreshInterval": "10s"
        }),
    );
    managed.create(&PostParams::default(), &typo).await.unwrap();
    let c = wait_reason(&managed, "typo", "TemplateFailed").await;
    assert!(
        c.message
            .starts_with("target.template.data[URL]: line 2, column 4: undefined value"),
        "{}",
        c.message
    );

    let logs = keyward.logs();
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap()).unwrap();
    assert!(
        events.contains("InvalidSecretData") || events.contains("TemplateFailed"),
        "{events}"
    );
    let statuses = serde_json::to_string(&managed.list(&ListParams::default()).await.unwrap()).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    let other_key_line = other_key.lines().nth(1).unwrap();
    for (what, text) in [("logs", &logs), ("Events", &events), ("ManagedSecrets", &statuses)] {
        for secret in [canary.as_str(), auth.as_str(), key_line, other_key_line] {
            assert!(!text.contains(secret), "a value in the {what}");
        }
    }
}

/// Two ManagedSecrets fill one Secret, each its key (its own field manager and record, an owner reference
/// each); deleting one takes its key out and leaves the other's; deleting the last deletes the Secret.
#[tokio::test]
async fn deleting_one_of_two_managed_secrets_sharing_a_secret_keeps_the_others_key() {
    let esc = Esc::start().await;
    let env = "acme/shared/prod";
    esc.put(env, "values:\n  a: value-a\n  b: value-b\n");
    let ns = ns("keys-shared").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let _keyward = esc.keyward(&ns.name);
    for (name, key, path) in [("a", "A", "a"), ("b", "B", "b")] {
        let spec = serde_json::json!({
            "source": {"esc": {"environment": env, "path": path}},
            "target": {"name": "shared", "key": key},
            "refreshInterval": "10s"
        });
        managed.create(&PostParams::default(), &msec(name, spec)).await.unwrap();
    }
    let both = BTreeMap::from([
        ("A".to_string(), b"value-a".to_vec()),
        ("B".to_string(), b"value-b".to_vec()),
    ]);
    eventually(60, "both keys in one Secret", || async {
        (data(&secrets, "shared").await? == both).then_some(())
    })
    .await;
    let s = secrets.get("shared").await.unwrap();
    assert_eq!(
        s.metadata.owner_references.unwrap_or_default().len(),
        2,
        "an owner reference each"
    );
    let managers: Vec<String> = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .filter(|m| m.starts_with("keyward"))
        .collect();
    assert_eq!(managers, ["keyward/a", "keyward/b"], "a field manager each");

    managed.delete("a", &Default::default()).await.unwrap();
    let only_b = BTreeMap::from([("B".to_string(), b"value-b".to_vec())]);
    let s = eventually(60, "a's key taken out, b's kept", || async {
        let s = secrets.get_opt("shared").await.ok()??;
        let d: BTreeMap<String, Vec<u8>> = s.data.clone()?.into_iter().map(|(k, v)| (k, v.0)).collect();
        (d == only_b).then_some(s)
    })
    .await;
    let annotations = s.metadata.annotations.unwrap_or_default();
    assert!(
        annotations.keys().all(|k| !k.starts_with("a.keyward.dev/")),
        "a's record gone: {annotations:?}"
    );
    assert!(annotations.contains_key("b.keyward.dev/value-hash"));
    managed.delete("b", &Default::default()).await.unwrap();
    eventually(60, "the Secret deleted with its last ManagedSecret", || async {
        secrets.get_opt("shared").await.ok()?.is_none().then_some(())
    })
    .await;
}

/// The team's secret map as one Secret (`keyward import --target-secret`): thirteen ManagedSecrets, one per
/// secret (their rotation periods differ), fill Secret sophia-env, which the app reads with one `envFrom`.
/// A Generate rotation of one changes that key only — the other twelve byte for byte — keeps `_PREVIOUS` for
/// that key only, and restarts the app once.
#[tokio::test]
async fn one_secret_per_app_rotates_one_key_and_restarts_once() {
    let esc = Esc::start().await;
    let env_ref = "ai-cherry/sophia/lambda-labs-production";
    let map = std::fs::read_to_string(support::repo().join("examples/secret_map.yaml")).unwrap();
    let entries: Vec<(String, String)> = map
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_start_matches("values.").to_string(),
            )
        })
        .collect();
    let mut values = serde_json::json!({});
    for (name, path) in &entries {
        let mut node = &mut values;
        for seg in path.split('.') {
            node = &mut node[seg];
        }
        *node = format!("{name}-value-1").into();
    }
    esc.put(env_ref, &serde_json::json!({"values": values}).to_string());
    let ns = ns("keys-app").await;
    let secrets: Api<Secret> = ns.api();
    let managed: Api<ManagedSecret> = ns.api();
    let overrides = support::repo().join("examples/import-overrides.yaml");
    let text = std::fs::read_to_string(&overrides).unwrap();
    // The example's namespace override points at a namespace of the demo's: every secret stays in this one.
    let overrides_file = tempfile::NamedTempFile::new().unwrap();
    let same_namespace: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("namespace:"))
        .collect();
    std::fs::write(overrides_file.path(), same_namespace.join("\n")).unwrap();
    let out = std::process::Command::new(support::keyward_bin())
        .args([
            "import",
            "examples/secret_map.yaml",
            "--environment",
            env_ref,
            "--namespace",
            &ns.name,
        ])
        .args(["--target-secret", "sophia-env", "--overrides"])
        .arg(overrides_file.path())
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<ManagedSecret> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(docs.len(), 13);
    for mut ms in docs {
        if ms.metadata.name.as_deref() == Some("openai-api-key") {
            // Rotated by keyward, with the previous value kept for an hour (the example's override).
            let rotation = ms.spec.rotation.as_mut().unwrap();
            assert_eq!(rotation.grace_period.as_deref(), Some("1h"));
        }
        ms.spec.refresh_interval = Some("10s".into());
        managed.create(&PostParams::default(), &ms).await.unwrap();
    }
    let _keyward = esc.keyward(&ns.name);
    let want: BTreeMap<String, Vec<u8>> = entries
        .iter()
        .filter(|(name, _)| name != "GITHUB_TOKEN")
        .map(|(name, _)| (name.clone(), format!("{name}-value-1").into_bytes()))
        .collect();
    eventually(90, "13 keys in Secret sophia-env", || async {
        (data(&secrets, "sophia-env").await? == want).then_some(())
    })
    .await;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "backend"}},
                 "template": {"metadata": {"labels": {"app": "backend"}}, "spec": {"containers": [{
                     "name": "api", "image": "registry.invalid/sophia/backend:1.0",
                     "envFrom": [{"secretRef": {"name": "sophia-env"}}]}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = ns.api();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    eventually(90, "backend adopted as sophia-env's consumer", || async {
        let ms = managed.get("anthropic-api-key").await.ok()?;
        let c = ms.status?.consumers;
        (c.len() == 1 && c[0].state == keyward::api::ConsumerState::Restarted).then_some(())
    })
    .await;
    let generation = || async { deployments.get("backend").await.unwrap().metadata.generation.unwrap() };
    let before = generation().await;

    let patch = serde_json::json!({"metadata": {"annotations": {"keyward.dev/rotate-now": "test: pasted in a chat"}}});
    managed
        .patch(
            "openai-api-key",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let rotated = eventually(90, "OPENAI_API_KEY rotated", || async {
        let d = data(&secrets, "sophia-env").await?;
        (d.get("OPENAI_API_KEY")? != &want["OPENAI_API_KEY"]).then_some(d)
    })
    .await;
    for (k, v) in &want {
        if k != "OPENAI_API_KEY" {
            assert_eq!(rotated.get(k), Some(v), "{k} byte for byte");
        }
    }
    assert_eq!(
        rotated.get("OPENAI_API_KEY_PREVIOUS"),
        Some(&want["OPENAI_API_KEY"]),
        "the previous value, for the rotated key only"
    );
    assert_eq!(rotated.len(), 14, "the 13 keys and one _PREVIOUS");
    let esc_now = support::esc_value(&esc.server.base_url(), TOKEN, env_ref, "sophia.ai.openai_api_key").await;
    assert_eq!(
        rotated["OPENAI_API_KEY"],
        esc_now.as_bytes(),
        "ESC first, then the Secret"
    );
    eventually(90, "backend restarted", || async {
        (generation().await == before + 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(generation().await, before + 1, "one rotation, one restart");
}
