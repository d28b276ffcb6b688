//! Running keyward in production: the access policy, the audit log, the ESC webhook receiver, /health/secrets
//! and the metrics, after one scenario on a real control plane (with controllers, so rollouts finish).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::ManagedSecret;
use kube::Api;
use kube::api::PostParams;
use sha2::Sha256;
use support::{Keyward, TestNs, cluster_with_controllers, eventually, install_crd};

const ESC_TOKEN: &str = "ops-esc-token";
const WEBHOOK_SECRET: &str = "ops-webhook-shared-secret";
const CANARY: &str = "canary-ops-7c1f0e2d9b";

fn definition(value: &str) -> String {
    format!("values:\n  db:\n    password:\n      fn::secret: {value}\n")
}

fn msec(name: &str, env: &str) -> ManagedSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {
            "source": {"esc": {"environment": env, "path": "db.password"}},
            "target": {"key": "PASSWORD"},
            "refreshInterval": "1h",
            "rotation": {"period": "90d", "strategy": "Notify"}
        }
    }))
    .unwrap()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn value(api: &Api<Secret>, name: &str) -> Option<String> {
    let s = api.get_opt(name).await.ok()??;
    s.data?
        .get("PASSWORD")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// The audit lines written so far.
fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

/// The value of a metric sample line starting with `prefix` (name and labels), if present.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn policy_audit_webhook_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server(ESC_TOKEN, dir.path()).await;
    esc.put_definition("acme", "app", "prod", &definition(CANARY)).unwrap();
    esc.put_definition("acme", "vault", "root", &definition("root-secret-value"))
        .unwrap();

    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client("ops", client).await;
    install_crd(&ns.client).await;
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let policy = file(
        "policy.yaml",
        &format!(
            "rules:\n  - namespaces: [{}]\n    environments: ['acme/app/*']\n",
            ns.name
        ),
    );
    let token = dir.path().join("esc-token").to_string_lossy().into_owned();
    let secret = file("webhook-secret", WEBHOOK_SECRET);
    let audit = dir.path().join("audit.log");
    let base_url = esc.base_url();
    let keyward = Keyward::start(
        &ns.name,
        &[
            "--esc-url",
            &base_url,
            "--esc-token-file",
            &token,
            "--access-policy-file",
            &policy,
            "--webhook-secret-file",
            &secret,
            "--audit-log",
            audit.to_str().unwrap(),
            "--restart-debounce-seconds",
            "1",
        ],
    );
    let managed: Api<ManagedSecret> = ns.api();
    let secrets: Api<Secret> = ns.api();
    for i in 0..5 {
        managed
            .create(&PostParams::default(), &msec(&format!("app-{i}"), "acme/app/prod"))
            .await
            .unwrap();
    }
    managed
        .create(&PostParams::default(), &msec("vault", "acme/vault/root"))
        .await
        .unwrap();
    for i in 0..5 {
        eventually(30, &format!("app-{i} synced"), || async {
            (value(&secrets, &format!("app-{i}")).await.as_deref() == Some(CANARY)).then_some(())
        })
        .await;
    }

    // Outside the policy: refused with the missing grant (EscReadNotGranted), no Secret, a metric and an audit
    // line.
    let denied = eventually(30, "vault refused", || async {
        let st = managed.get("vault").await.ok()?.status?;
        st.conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "EscReadNotGranted")
    })
    .await;
    assert!(
        denied.message.contains("acme/vault/root") && denied.message.contains(&ns.name),
        "{}",
        denied.message
    );
    assert!(
        secrets.get_opt("vault").await.unwrap().is_none(),
        "no Secret for a denied ManagedSecret"
    );
    let metrics = keyward.metrics().await;
    let vault = format!(
        "secret_access_total{{secret_name=\"{}/vault\",status=\"denied\"}}",
        ns.name
    );
    assert!(sample(&metrics, &vault).unwrap() >= 1.0, "{metrics}");
    let lines = audit_lines(&audit);
    let denial = lines
        .iter()
        .find(|l| l["action"] == "access_denied" && l["name"] == "vault")
        .expect("an audit line for the denial");
    assert_eq!(denial["success"], false);
    assert_eq!(denial["secret_name"], format!("{}/vault", ns.name));
    assert_eq!(denial["reason"], "EscReadNotGranted");

    // A consumer of app-0, to see a restart counted and audited.
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "registry.invalid/web:1",
                    "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "app-0", "key": "PASSWORD"}}}]}]}}}
    }))
    .unwrap();
    ns.api::<Deployment>().create(&PostParams::default(), &d).await.unwrap();
    eventually(60, "web adopted", || async {
        let d = ns.api::<Deployment>().get("web").await.ok()?;
        d.metadata
            .annotations?
            .contains_key("keyward.dev/secrets-hash")
            .then_some(())
    })
    .await;

    // The webhook: unsigned and malformed calls are refused and counted; a signed one refreshes every
    // ManagedSecret of the environment with one ESC open.
    let url = format!("http://{}/webhooks/esc", keyward.webhook);
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"organization": {"githubLogin": "acme"}, "projectName": "app", "environmentName": "prod"})
            .to_string();
    let unsigned = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let forged = http
        .post(&url)
        .header("Pulumi-Webhook-Signature", "00ff")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let junk = b"{\"hello\": 1}".to_vec();
    let malformed = http
        .post(&url)
        .header("Pulumi-Webhook-Signature", sign(&junk))
        .body(junk)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let rotated = format!("{CANARY}-2");
    esc.put_definition("acme", "app", "prod", &definition(&rotated))
        .unwrap();
    esc.reset_counters();
    let accepted = http
        .post(&url)
        .header("Pulumi-Webhook-Signature", sign(body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let answer: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(answer["refreshing"], 5);
    for i in 0..5 {
        eventually(20, &format!("app-{i} refreshed by the webhook"), || async {
            (value(&secrets, &format!("app-{i}")).await.as_deref() == Some(rotated.as_str())).then_some(())
        })
        .await;
    }
    assert_eq!(esc.counters().opens("acme/app/prod"), 1, "one open served all five");
    eventually(60, "web restarted and finished", || async {
        let m = keyward.metrics().await;
        (sample(&m, "keyward_restarts_total{kind=\"Deployment\",result=\"success\"}")? >= 1.0).then_some(())
    })
    .await;

    // /health/secrets.
    let health: serde_json::Value = reqwest::get(format!("http://{}/health/secrets", keyward.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["total"], 6, "{health}");
    assert_eq!(health["conditions"]["Ready"]["True"], 5, "{health}");
    assert_eq!(health["conditions"]["Ready"]["False"], 1, "{health}");
    let failing = health["failing"].as_array().unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0]["name"], format!("{}/vault", ns.name));
    assert_eq!(failing[0]["reason"], "EscReadNotGranted");
    assert!(
        failing[0].get("message").is_none(),
        "no free text from tenants: {health}"
    );
    assert_eq!(health["overdue"].as_array().unwrap().len(), 0);

    // The team's metric names, with the right values.
    let metrics = keyward.metrics().await;
    let app0 = format!("{}/app-0", ns.name);
    let checks = [
        (
            format!("secret_access_total{{secret_name=\"{app0}\",status=\"success\"}}"),
            2.0,
        ),
        (format!("secret_rotation_age_days{{secret_name=\"{app0}\"}}"), 0.0),
        (format!("keyward_rotation_overdue{{secret_name=\"{app0}\"}}"), 0.0),
        ("keyward_managed_secrets{state=\"ready\"}".to_string(), 5.0),
        ("keyward_managed_secrets{state=\"failing\"}".to_string(), 1.0),
        (
            "keyward_sync_failures_total{reason=\"EscReadNotGranted\"}".to_string(),
            1.0,
        ),
        (
            "keyward_webhook_requests_total{result=\"unauthenticated\"}".to_string(),
            2.0,
        ),
        ("keyward_webhook_requests_total{result=\"malformed\"}".to_string(), 1.0),
        ("keyward_webhook_requests_total{result=\"accepted\"}".to_string(), 1.0),
        (
            "keyward_esc_requests_total{endpoint=\"open\",code=\"200\"}".to_string(),
            2.0,
        ),
        (
            "keyward_restarts_total{kind=\"Deployment\",result=\"triggered\"}".to_string(),
            1.0,
        ),
        ("keyward_secrets_written_total".to_string(), 10.0),
    ];
    for (name, at_least) in checks {
        let v = sample(&metrics, &name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        assert!(v >= at_least, "{name} = {v}, want ≥ {at_least}");
    }
    let age = sample(&metrics, &format!("secret_rotation_age_days{{secret_name=\"{app0}\"}}")).unwrap();
    assert!(age < 0.01, "just rotated by the ESC change: {age}");
    assert!(sample(&metrics, "keyward_reconcile_duration_seconds_count").unwrap() >= 6.0);
    assert!(metrics.contains("keyward_build_info{version="));

    // Audit lines match the operations.
    let lines = audit_lines(&audit);
    let count = |action: &str, name: &str| {
        lines
            .iter()
            .filter(|l| l["action"] == action && l["name"] == name)
            .count()
    };
    for i in 0..5 {
        assert_eq!(
            count("secret_synced", &format!("app-{i}")),
            2,
            "created, then refreshed by the webhook"
        );
        assert!(count("secret_accessed", &format!("app-{i}")) >= 2);
    }
    assert!(count("restart_triggered", "app-0") >= 1, "the restart of web");
    let refused: Vec<_> = lines.iter().filter(|l| l["name"] == "esc-webhook").collect();
    assert_eq!(refused.len(), 3, "two unauthenticated and one malformed call");
    assert!(
        refused
            .iter()
            .all(|l| l["source_ip"] == "127.0.0.1" && l["success"] == false)
    );
    for l in &lines {
        for key in ["timestamp", "action", "secret_name", "accessor", "source_ip", "success"] {
            assert!(l.get(key).is_some(), "{key} in {l}");
        }
    }

    // The values appear in neither the audit log nor the metrics (nor anything else keyward says).
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let health_text = health.to_string();
    let logs = keyward.logs();
    for v in [CANARY, rotated.as_str(), "root-secret-value"] {
        for (place, text) in [
            ("audit", &audit_text),
            ("metrics", &metrics),
            ("health", &health_text),
            ("logs", &logs),
        ] {
            assert!(!text.contains(v), "a value leaked into {place}");
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    esc.stop().await;
}

fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Waits for a ManagedSecret's Ready condition to have `reason`.
async fn ready_reason(api: &Api<ManagedSecret>, name: &str, reason: &str) {
    eventually(60, &format!("{name} Ready reason {reason}"), || async {
        let st = api.get(name).await.ok()?.status?;
        st.conditions
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.reason == reason)
            .then_some(())
    })
    .await;
}

/// keyward's own credentials change under it (issue 14, item 7): the ESC token in a Secret is rotated (ESC
/// refuses the old one from then on), the webhook's shared secret file and the access policy file are replaced.
/// The same process uses each new one, logs which changed, and never their content.
#[tokio::test]
async fn keywards_own_credentials_are_read_again_without_a_restart() {
    const OLD_TOKEN: &str = "reload-old-esc-token-5e1d";
    const NEW_TOKEN: &str = "reload-new-esc-token-9a4c";
    const OLD_HOOK: &str = "reload-old-webhook-secret-77b2";
    const NEW_HOOK: &str = "reload-new-webhook-secret-c03f";
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server(OLD_TOKEN, dir.path()).await;
    esc.put_definition("acme", "app", "prod", &definition("reload-v1"))
        .unwrap();
    esc.put_definition("acme", "vault", "root", &definition("reload-vault"))
        .unwrap();
    let client = cluster_with_controllers().client().await;
    let ns = TestNs::with_client("reload", client).await;
    install_crd(&ns.client).await;
    let secrets: Api<Secret> = ns.api();
    let token_secret = |token: &str| -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "keyward-esc"},
            "stringData": {"token": token}
        }))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &token_secret(OLD_TOKEN))
        .await
        .unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let grant = |environments: &str| {
        format!(
            "rules:\n  - namespaces: [{}]\n    environments: [{environments}]\n",
            ns.name
        )
    };
    let policy = file("policy.yaml", &grant("'acme/app/*'"));
    let hook = file("webhook-secret", &format!("{OLD_HOOK}\n"));
    let base_url = esc.base_url();
    let token_ref = format!("{}/keyward-esc", ns.name);
    let keyward = Keyward::start(
        &ns.name,
        &[
            "--esc-url",
            &base_url,
            "--esc-token-secret",
            &token_ref,
            "--access-policy-file",
            &policy,
            "--webhook-secret-file",
            &hook,
            "--credential-reload-seconds",
            "1",
        ],
    );
    let pid = keyward.pid();
    let managed: Api<ManagedSecret> = ns.api();
    for (name, env) in [("app", "acme/app/prod"), ("vault", "acme/vault/root")] {
        managed.create(&PostParams::default(), &msec(name, env)).await.unwrap();
    }
    eventually(30, "app synced with the first token", || async {
        (value(&secrets, "app").await.as_deref() == Some("reload-v1")).then_some(())
    })
    .await;
    ready_reason(&managed, "vault", "EscReadNotGranted").await;

    // The token is rotated at ESC (the old one is refused from now on), then in its Secret. The next ESC call
    // (a refresh asked for by annotation) uses the new one.
    esc.set_token(Some(NEW_TOKEN));
    esc.put_definition("acme", "app", "prod", &definition("reload-v2"))
        .unwrap();
    secrets
        .replace("keyward-esc", &PostParams::default(), &token_secret(NEW_TOKEN))
        .await
        .unwrap();
    let refresh =
        |n: u32| serde_json::json!({"metadata": {"annotations": {"keyward.dev/refresh-now": format!("reload-{n}")}}});
    let mut n = 0;
    eventually(60, "app refreshed with the new token", || {
        n += 1;
        let managed = managed.clone();
        let secrets = secrets.clone();
        let patch = refresh(n);
        async move {
            managed
                .patch(
                    "app",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            (value(&secrets, "app").await.as_deref() == Some("reload-v2")).then_some(())
        }
    })
    .await;

    // Reading files that did not change is not a change.
    let changed = |logs: &str, name: &str| logs.lines().any(|l| l.contains(name) && l.contains("changed"));
    assert!(!changed(&keyward.logs(), "access policy file"), "{}", keyward.logs());
    assert!(!changed(&keyward.logs(), "webhook secret"), "{}", keyward.logs());
    // The access policy file now grants the vault environment too: the refused ManagedSecret syncs.
    std::fs::write(&policy, grant("'acme/app/*', 'acme/vault/*'")).unwrap();
    eventually(60, "vault synced after the policy file changed", || async {
        (value(&secrets, "vault").await.as_deref() == Some("reload-vault")).then_some(())
    })
    .await;

    // The webhook's shared secret file is replaced: deliveries signed with the old secret are refused, with the
    // new one taken.
    std::fs::write(&hook, format!("{NEW_HOOK}\n")).unwrap();
    let url = format!("http://{}/webhooks/esc", keyward.webhook);
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"organization": {"githubLogin": "acme"}, "projectName": "app", "environmentName": "prod"})
            .to_string();
    let deliver = |secret: &'static str, id: String| {
        let http = http.clone();
        let url = url.clone();
        let body = body.clone();
        async move {
            http.post(&url)
                .header("Pulumi-Webhook-Signature", sign_with(secret, body.as_bytes()))
                .header("Pulumi-Webhook-Id", id)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut attempt = 0;
    eventually(30, "the new webhook secret taken", || {
        attempt += 1;
        let delivered = deliver(NEW_HOOK, format!("new-{attempt}"));
        async move { (delivered.await == 202).then_some(()) }
    })
    .await;
    assert_eq!(
        deliver(OLD_HOOK, "old-1".into()).await,
        401,
        "the old webhook secret is refused"
    );

    assert_eq!(keyward.pid(), pid, "the same process throughout");
    let logs = keyward.logs();
    for name in ["ESC token", "access policy file", "webhook secret"] {
        assert!(changed(&logs, name), "a log line says the {name} changed:\n{logs}");
    }
    for content in [
        OLD_TOKEN,
        NEW_TOKEN,
        OLD_HOOK,
        NEW_HOOK,
        "reload-v1",
        "reload-v2",
        "reload-vault",
    ] {
        assert!(!logs.contains(content), "a credential or value reached the log");
    }
    drop(keyward);
    esc.stop().await;
}
