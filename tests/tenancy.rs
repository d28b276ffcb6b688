//! Tenancy: keyward never acts with more authority than the tenant it serves. A real API server, tenants as real
//! RBAC users (the admin impersonating them), grants as AccessPolicies in the cluster, the local ESC server and
//! the local GitHub server (which opens every sealed box, so these tests see what GitHub would hold), and one
//! cluster-wide `keyward run` with no grants of its own.
//!
//! Each attack a review reproduced on an earlier keyward is played again here and must end refused, with a
//! reason naming the missing grant or the rule, 0 GitHub writes, 0 new ESC revisions and 0 Secrets for the
//! refused object, and the legitimate owner's values unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keyward::api::{AccessPolicy, ManagedSecret};
use keyward::credentials::Credential;
use keyward::push::github::{GithubClient, GithubConfig, GithubScope};
use keyward::secret::SecretBytes;
use keyward_dev::esc_server::EscServer;
use keyward_dev::github_server::{GithubServer, GithubServerOptions, Repository};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{Keyward, TestNs, eventually, install_crd};
use zeroize::Zeroizing;

const ESC_TOKEN: &str = "tenancy-esc-token";
const GITHUB_TOKEN: &str = "tenancy-github-token";
/// Values in ESC carry this: it must never appear in anything keyward writes but Secrets and GitHub.
const CANARY: &str = "canary-tenancy-5b0d17e3";

struct World {
    esc: EscServer,
    github: GithubServer,
    dir: tempfile::TempDir,
    admin: Client,
}

impl World {
    fn put(&self, env: &str, yaml: &str) {
        let p: Vec<&str> = env.split('/').collect();
        self.esc.put_definition(p[0], p[1], p[2], yaml).unwrap();
    }

    /// The environment's latest revision, from its definition's `Pulumi-ESC-Revision` header.
    async fn revision(&self, env: &str) -> i64 {
        let resp = reqwest::Client::new()
            .get(format!("{}/environments/{env}", self.esc.base_url()))
            .header("Authorization", format!("token {ESC_TOKEN}"))
            .send()
            .await
            .unwrap();
        resp.headers()["pulumi-esc-revision"].to_str().unwrap().parse().unwrap()
    }

    async fn esc_value(&self, env: &str, path: &str) -> String {
        support::esc_value(&self.esc.base_url(), ESC_TOKEN, env, path).await
    }

    /// GitHub writes of every secret so far.
    fn github_puts(&self) -> u64 {
        self.github.received_all().iter().map(|s| s.puts).sum()
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Creates or replaces the AccessPolicy `name` (as the platform team: the admin).
    async fn policy(&self, name: &str, spec: Value) {
        let policy: AccessPolicy = serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        Api::<AccessPolicy>::all(self.admin.clone())
            .patch(
                name,
                &PatchParams::apply("platform-team").force(),
                &Patch::Apply(&policy),
            )
            .await
            .unwrap();
    }
}

/// A tenant: user `user` with `rules` in namespace `ns` (a Role and its RoleBinding), and a client as them.
async fn tenant(admin: &Client, ns: &str, user: &str, rules: Value) -> Client {
    support::bind_user(admin, ns, user, rules).await;
    support::cluster().client_as(user).await
}

/// What an app team usually holds in its namespace: ManagedSecrets, and Secrets too when `secrets`.
fn team_rules(secrets: bool) -> Value {
    let all = json!(["get", "list", "watch", "create", "update", "patch", "delete"]);
    let mut rules = vec![json!({"apiGroups": ["keyward.dev"], "resources": ["managedsecrets"], "verbs": all})];
    if secrets {
        rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": all}));
    }
    Value::Array(rules)
}

fn managed(name: &str, spec: Value) -> ManagedSecret {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn with_annotation(mut ms: ManagedSecret, key: &str, value: &str) -> ManagedSecret {
    ms.metadata
        .annotations
        .get_or_insert_default()
        .insert(key.into(), value.into());
    ms
}

async fn create(api: &Api<ManagedSecret>, ms: ManagedSecret) {
    api.create(&PostParams::default(), &ms).await.unwrap();
}

/// Waits until `name` is refused with `reason` (Ready=False); the condition.
async fn refused(api: &Api<ManagedSecret>, name: &str, reason: &str) -> Condition {
    eventually(30, &format!("{name} refused with {reason}"), || async {
        let st = api.get(name).await.ok()?.status?;
        st.conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
    })
    .await
}

async fn ready(api: &Api<ManagedSecret>, name: &str) {
    eventually(30, &format!("{name} Ready"), || async {
        let st = api.get(name).await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
}

async fn secret_value(api: &Api<Secret>, name: &str, key: &str) -> Option<Vec<u8>> {
    Some(api.get_opt(name).await.ok()??.data?.get(key)?.0.clone())
}

fn definition(path_value: &str) -> String {
    format!("values:\n  app:\n    password:\n      fn::secret: {path_value}\n")
}

fn refusal_of(ms: &ManagedSecret) -> Vec<String> {
    ms.status
        .as_ref()
        .and_then(|s| s.access.as_ref())
        .map(|a| a.refused.iter().map(|r| r.reason.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn tenants_get_what_their_policies_grant_and_nothing_more() {
    keyward::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server(ESC_TOKEN, dir.path()).await;
    let github = GithubServer::start(GithubServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(GITHUB_TOKEN.into()),
        repositories: vec![
            Repository::new("acme", "payments", 2001),
            Repository::new("acme", "tenant-a", 2002),
        ],
    })
    .await
    .unwrap();
    std::fs::write(dir.path().join("github-token"), GITHUB_TOKEN).unwrap();
    let admin = support::cluster().client().await;
    install_crd(&admin).await;
    let w = World {
        esc,
        github,
        dir,
        admin: admin.clone(),
    };
    let a = TestNs::with_client("team-a", admin.clone()).await;
    let b = TestNs::with_client("team-b", admin.clone()).await;

    let shared = "acme/shared/common";
    let owner_env = format!("acme/{}/app", b.name);
    let storm_env = format!("acme/{}/rot", b.name);
    let owner_value = format!("owner-{CANARY}");
    let shared_value = format!("shared-{CANARY}");
    w.put(shared, &definition(&shared_value));
    w.put(&owner_env, &definition(&owner_value));
    w.put(
        &storm_env,
        "values:\n  app:\n    password:\n      fn::rotate::dev-random:\n        inputs: {length: 24, alphabet: a}\n        state:\n          fn::secret: aaaaaaaaaaaaaaaaaaaaaaaa\n",
    );

    // The platform's grants. team-b: read its environments, rotate them, push its payments secrets (not
    // visibility all). team-a: read the shared environment, use its tenant-* Secrets, push to its repository.
    w.policy(
        &format!("{}-grants", b.name),
        json!({
            "namespaces": {"names": [b.name]},
            "esc": [{"environments": [format!("acme/{}/*", b.name)], "actions": ["Read", "Rotate", "Write"]}],
            "github": [
                {"organization": "acme", "secrets": ["PAYMENTS_*"]},
                {"repository": "acme/payments", "secrets": ["*"]}
            ]
        }),
    )
    .await;
    let a_policy = format!("{}-grants", a.name);
    let a_grants = json!({
        "namespaces": {"names": [a.name]},
        "esc": [{"environments": [shared], "actions": ["Read"]}],
        "kubernetesSecrets": [{"names": ["tenant-*"]}],
        "github": [{"repository": "acme/tenant-a", "secrets": ["*"]}]
    });
    w.policy(&a_policy, a_grants.clone()).await;

    // Tenants: alice and bob run their teams; mallory may write ManagedSecrets in team-a, no Secrets.
    let alice = tenant(&admin, &a.name, &format!("alice-{}", a.name), team_rules(true)).await;
    let bob = tenant(&admin, &b.name, &format!("bob-{}", b.name), team_rules(true)).await;
    let mallory = tenant(&admin, &a.name, &format!("mallory-{}", a.name), team_rules(false)).await;
    let as_alice: Api<ManagedSecret> = Api::namespaced(alice.clone(), &a.name);
    let as_bob: Api<ManagedSecret> = Api::namespaced(bob.clone(), &b.name);
    let as_mallory: Api<ManagedSecret> = Api::namespaced(mallory, &a.name);
    let a_secrets: Api<Secret> = Api::namespaced(admin.clone(), &a.name);
    let b_secrets: Api<Secret> = Api::namespaced(admin.clone(), &b.name);

    let audit = w.dir.path().join("audit.log");
    let esc_url = w.esc.base_url();
    let github_url = w.github.base_url();
    let (esc_token, github_token) = (w.file("esc-token"), w.file("github-token"));
    let keyward = Keyward::start_cluster_wide(&[
        "--esc-url",
        &esc_url,
        "--esc-token-file",
        &esc_token,
        "--github-url",
        &github_url,
        "--github-token-file",
        &github_token,
        "--audit-log",
        audit.to_str().unwrap(),
    ]);

    // The owner: team-b's payments key, pushed to an organization secret (visibility selected) and a
    // repository secret.
    create(
        &as_bob,
        managed(
            "payments-key",
            json!({
                "source": {"esc": {"environment": owner_env, "path": "app.password"}},
                "target": {"key": "KEY"},
                "refreshInterval": "1h",
                "rotation": {"period": "90d", "strategy": "Notify", "pushTo": [
                    {"github": {"organization": "acme", "secretName": "PAYMENTS_CARD_KEY",
                                "visibility": "selected", "selectedRepositoryIds": [2001]}},
                    {"github": {"repository": "acme/payments", "secretName": "DEPLOY_KEY"}}
                ]}
            }),
        ),
    )
    .await;
    eventually(30, "the owner's pushes", || async {
        let org = w.github.received("org/acme", "PAYMENTS_CARD_KEY")?;
        let repo = w.github.received("repo/acme/payments", "DEPLOY_KEY")?;
        (org == owner_value && repo == owner_value).then_some(())
    })
    .await;
    ready(&as_bob, "payments-key").await;
    let granted = as_bob
        .get("payments-key")
        .await
        .unwrap()
        .status
        .unwrap()
        .access
        .unwrap();
    assert!(granted.refused.is_empty(), "{granted:?}");
    assert!(
        granted
            .granted
            .iter()
            .any(|g| g.action.contains("PAYMENTS_CARD_KEY") && g.grant.contains(&format!("{}-grants", b.name))),
        "status names the grant that allowed each push: {granted:?}"
    );
    let owner_puts = w.github_puts();
    let shared_revision = w.revision(shared).await;

    // 1. Pushes need a grant: team-a cannot overwrite team-b's organization secret (nor widen its visibility)
    //    or its repository secret with a value of its choosing.
    let tenant_source: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tenant-card"}, "stringData": {"value": "attacker-chosen-value"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(alice.clone(), &a.name)
        .create(&PostParams::default(), &tenant_source)
        .await
        .unwrap();
    let steal = |name: &str, target: Value| {
        managed(
            name,
            json!({
                "source": {"kubernetesSecret": {"name": "tenant-card", "key": "value"}},
                "target": {"key": "V"},
                "rotation": {"period": "90d", "strategy": "Notify", "pushTo": [{"github": target}]}
            }),
        )
    };
    create(
        &as_alice,
        steal(
            "steal-org",
            json!({"organization": "acme", "secretName": "PAYMENTS_CARD_KEY", "visibility": "all"}),
        ),
    )
    .await;
    create(
        &as_alice,
        steal(
            "steal-repo",
            json!({"repository": "acme/payments", "secretName": "DEPLOY_KEY"}),
        ),
    )
    .await;
    create(
        &as_alice,
        steal(
            "steal-selected",
            json!({"organization": "acme", "secretName": "PAYMENTS_CARD_KEY", "visibility": "selected",
                   "selectedRepositoryIds": [2002]}),
        ),
    )
    .await;
    let c = refused(&as_alice, "steal-org", "GithubPushNotGranted").await;
    assert!(
        c.message.contains("github:org/acme/PAYMENTS_CARD_KEY") && c.message.contains("visibility all"),
        "{}",
        c.message
    );
    refused(&as_alice, "steal-repo", "GithubPushNotGranted").await;
    refused(&as_alice, "steal-selected", "GithubPushNotGranted").await;

    // 3b. A grant for the name does not make team-a the owner: the policy edited in the cluster changes the
    //     outcome within 10 s (no restart), from "not granted" to "owned by team-b".
    let mut widened = a_grants.clone();
    widened["github"]
        .as_array_mut()
        .unwrap()
        .push(json!({"organization": "acme", "secrets": ["PAYMENTS_*"]}));
    let edited = Instant::now();
    w.policy(&a_policy, widened).await;
    let conflict = eventually(10, "the edited policy applies within 10 s", || async {
        let st = as_alice.get("steal-selected").await.ok()?.status?;
        st.conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "TargetConflict")
    })
    .await;
    eprintln!("note: policy edit → new outcome in {:?}", edited.elapsed());
    assert!(
        conflict.message.contains(&format!("{}/payments-key", b.name)),
        "TargetConflict names the owner: {}",
        conflict.message
    );
    // steal-org still asks for visibility all, which the widened grant does not list.
    refused(&as_alice, "steal-org", "GithubPushNotGranted").await;
    let events = a.events_for("steal-selected").await;
    assert!(events.iter().any(|e| e.starts_with("TargetConflict")), "{events:?}");

    // 2. A read grant is not a write grant: Generate (asked now) and Esc on the shared environment are refused.
    let shared_source = json!({"esc": {"environment": shared, "path": "app.password"}});
    create(
        &as_alice,
        managed("reader", json!({"source": shared_source, "target": {"key": "P"}})),
    )
    .await;
    ready(&as_alice, "reader").await;
    create(
        &as_alice,
        with_annotation(
            managed(
                "gen",
                json!({"source": shared_source, "target": {"key": "P"},
                       "rotation": {"period": "90d", "strategy": "Generate"}}),
            ),
            "keyward.dev/rotate-now",
            "take over the shared value",
        ),
    )
    .await;
    create(
        &as_alice,
        with_annotation(
            managed(
                "esc-rotate",
                json!({"source": shared_source, "target": {"key": "P"},
                       "rotation": {"period": "90d", "strategy": "Esc"}}),
            ),
            "keyward.dev/rotate-now",
            "run their rotators",
        ),
    )
    .await;
    let c = refused(&as_alice, "gen", "EscWriteNotGranted").await;
    assert!(
        c.message.contains(shared) && c.message.contains("Write"),
        "{}",
        c.message
    );
    refused(&as_alice, "esc-rotate", "EscRotateNotGranted").await;

    // 3. The confused deputy: mallory (no Secret rights) names a Secret she cannot read as the source and
    //    pushes it to a repository team-a may push to. keyward's own line refuses it (the chart's admission
    //    policy refuses it before that: tests/chart.rs).
    let platform: Secret = serde_json::from_value(json!({
        "metadata": {"name": "platform-db-creds"}, "stringData": {"value": format!("platform-{CANARY}")}
    }))
    .unwrap();
    a_secrets.create(&PostParams::default(), &platform).await.unwrap();
    create(
        &as_mallory,
        managed(
            "exfil",
            json!({
                "source": {"kubernetesSecret": {"name": "platform-db-creds", "key": "value"}},
                "target": {"key": "V"},
                "rotation": {"period": "90d", "strategy": "Notify",
                             "pushTo": [{"github": {"repository": "acme/tenant-a", "secretName": "LOOT"}}]}
            }),
        ),
    )
    .await;
    let c = refused(&as_mallory, "exfil", "SecretSourceNotGranted").await;
    assert!(c.message.contains("platform-db-creds"), "{}", c.message);

    // Nothing happened for any refused object: no GitHub write, no ESC revision, no Secret; the owner's values
    // are unchanged (decrypted by the GitHub server, read through ESC).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.github_puts(), owner_puts, "no GitHub write for a refused object");
    assert!(w.github.received("repo/acme/tenant-a", "LOOT").is_none());
    let org = w
        .github
        .received_all()
        .into_iter()
        .find(|s| s.scope == "org/acme" && s.name == "PAYMENTS_CARD_KEY")
        .unwrap();
    assert_eq!(org.value, owner_value);
    assert_eq!(org.visibility.as_deref(), Some("selected"));
    assert_eq!(org.selected_repository_ids, vec![2001]);
    assert_eq!(
        w.github.received("repo/acme/payments", "DEPLOY_KEY").as_deref(),
        Some(owner_value.as_str())
    );
    assert_eq!(w.revision(shared).await, shared_revision, "no ESC revision");
    assert_eq!(w.esc_value(shared, "app.password").await, shared_value);
    assert_eq!(
        secret_value(&a_secrets, "reader", "P").await.as_deref(),
        Some(shared_value.as_bytes())
    );
    for name in [
        "steal-org",
        "steal-repo",
        "steal-selected",
        "gen",
        "esc-rotate",
        "exfil",
    ] {
        assert!(a_secrets.get_opt(name).await.unwrap().is_none(), "no Secret {name}");
        let ms = as_alice.get(name).await.unwrap();
        assert!(!refusal_of(&ms).is_empty(), "status.access says why {name} is refused");
    }
    assert_eq!(
        secret_value(&b_secrets, "payments-key", "KEY").await.as_deref(),
        Some(owner_value.as_bytes())
    );
    ready(&as_bob, "payments-key").await;

    // 3c. The owner notices when GitHub holds something else: a write from outside is reported and undone.
    let outside = GithubClient::new(GithubConfig {
        base_url: w.github.base_url(),
        token: Credential::fixed(Some(Zeroizing::new(GITHUB_TOKEN.to_owned()))),
        timeout: Duration::from_secs(5),
        attempts: 1,
        max_inline_wait: Duration::from_secs(1),
    })
    .unwrap();
    let repo = GithubScope::Repository {
        owner: "acme".into(),
        repo: "payments".into(),
    };
    // GitHub's updated_at has a resolution of one second: let the owner's push be a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    outside
        .put_secret(&repo, "DEPLOY_KEY", &SecretBytes::new(b"written-outside".to_vec()))
        .await
        .unwrap();
    let patch = json!({"metadata": {"annotations": {"keyward.dev/refresh-now": "check github"}}});
    as_bob
        .patch("payments-key", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(30, "the owner re-pushes over the outside write", || async {
        (w.github.received("repo/acme/payments", "DEPLOY_KEY")? == owner_value).then_some(())
    })
    .await;
    let events = b.events_for("payments-key").await;
    assert!(
        events.iter().any(|e| e.starts_with("PushTargetChanged")),
        "the owner says so: {events:?}"
    );

    // 4. A rotation that cannot change the value (ESC's rotator issues the same credential) fails, backs off
    //    across keyward's own writes, says so in a condition, and stops when the spec stops asking.
    create(
        &as_bob,
        with_annotation(
            managed(
                "stuck",
                json!({"source": {"esc": {"environment": storm_env, "path": "app.password"}},
                       "target": {"key": "T"}, "refreshInterval": "1h",
                       "rotation": {"period": "90d", "strategy": "Esc"}}),
            ),
            "keyward.dev/rotate-now",
            "storm",
        ),
    )
    .await;
    let first = eventually(30, "RotationDue says RotationUnchanged", || async {
        let ms = as_bob.get("stuck").await.ok()?;
        let st = ms.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "RotationDue" && c.reason == "RotationUnchanged")
            .then_some(Instant::now())
    })
    .await;
    let rotations_then = w.esc.counters().requests("rotate");
    let revision_then = w.revision(&storm_env).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rotations = w.esc.counters().requests("rotate") - rotations_then;
    let revisions = w.revision(&storm_env).await - revision_then;
    eprintln!(
        "note: stuck rotation, 30 s after the first failure ({:?} ago): {rotations} rotate calls, {revisions} revisions",
        first.elapsed()
    );
    // Backoff 5 s, 10 s, 20 s: at most three more attempts in 30 s (an unchecked loop made ~150).
    assert!(rotations <= 3, "{rotations} rotate calls in 30 s");
    assert!(revisions <= 3, "{revisions} revisions in 30 s");
    let st = as_bob.get("stuck").await.unwrap().status.unwrap();
    let r = st.rotation.clone().unwrap();
    assert!(r.failures.unwrap_or(0) >= 1 && r.next_attempt_time.is_some(), "{r:?}");
    let due = st.conditions.iter().find(|c| c.type_ == "RotationDue").unwrap();
    assert_eq!(
        due.reason, "RotationUnchanged",
        "still visible between attempts: {due:?}"
    );
    assert!(due.message.contains("next attempt at"), "{}", due.message);
    // The spec stops asking (Notify): the recorded intent is dropped, no more rotate calls.
    let notify = json!({"spec": {"rotation": {"period": "90d", "strategy": "Notify"}}});
    as_bob
        .patch("stuck", &PatchParams::default(), &Patch::Merge(&notify))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = as_bob.get("stuck").await.unwrap().status.unwrap();
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let due = st
            .conditions
            .iter()
            .find(|c| c.type_ == "RotationDue")
            .map(|c| c.reason.clone());
        let dropped = st
            .rotation
            .as_ref()
            .is_none_or(|r| r.in_progress.is_none() && r.failures.is_none());
        if ready && dropped && due.as_deref() != Some("RotationUnchanged") {
            break;
        }
        assert!(Instant::now() < deadline, "the intent was not dropped: {st:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = w.esc.counters().requests("rotate");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        w.esc.counters().requests("rotate"),
        after,
        "no rotation once the spec asks for none"
    );

    // 5. Bookkeeping cannot be forged: an annotation on the target Secret saying "rotated in 2099" is ignored
    //    and removed; status keeps the real time.
    let forged =
        json!({"metadata": {"annotations": {"payments-key.keyward.dev/last-rotation": "2099-01-01T00:00:00Z"}}});
    Api::<Secret>::namespaced(bob.clone(), &b.name)
        .patch("payments-key", &PatchParams::default(), &Patch::Merge(&forged))
        .await
        .unwrap();
    let again = json!({"metadata": {"annotations": {"keyward.dev/refresh-now": "after the forgery"}}});
    as_bob
        .patch("payments-key", &PatchParams::default(), &Patch::Merge(&again))
        .await
        .unwrap();
    eventually(30, "the forged annotation removed", || async {
        let s = b_secrets.get("payments-key").await.ok()?;
        let forged = s
            .metadata
            .annotations?
            .get("payments-key.keyward.dev/last-rotation")
            .cloned();
        (forged.as_deref() != Some("2099-01-01T00:00:00Z")).then_some(())
    })
    .await;
    let st = as_bob.get("payments-key").await.unwrap().status.unwrap();
    let recorded = st.last_rotation_time.map(|t| t.0.to_string()).unwrap_or_default();
    assert!(!recorded.starts_with("2099"), "status kept the real time: {recorded}");
    let metrics = keyward.metrics().await;
    let age = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "secret_rotation_age_days{{secret_name=\"{}/payments-key\"}}",
                b.name
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("the age metric");
    assert!(
        age >= 0.0,
        "a forged future rotation would make the age negative: {age}"
    );

    // 7. The endpoints: /health/secrets carries no free text; the metrics port takes no webhook and the webhook
    //    port serves no metrics.
    let health = reqwest::get(format!("http://{}/health/secrets", keyward.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!health.contains("\"message\"") && !health.contains("acme/"), "{health}");
    let on_http = reqwest::Client::new()
        .post(format!("http://{}/webhooks/esc", keyward.http))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(on_http.status(), 404);
    let metrics_on_webhook = reqwest::get(format!("http://{}/metrics", keyward.webhook))
        .await
        .unwrap();
    assert_eq!(metrics_on_webhook.status(), 404);

    // 9. Exact values: a generated value with the characters ESC would interpolate reaches ESC, the Secret and
    //    GitHub byte for byte (the property test in keyward-dev covers every generator configuration).
    let exact_env = format!("acme/{}/exact", b.name);
    w.put(&exact_env, &definition("initial"));
    create(
        &as_bob,
        with_annotation(
            managed(
                "exact",
                json!({"source": {"esc": {"environment": exact_env, "path": "app.password"}},
                       "target": {"key": "P"}, "refreshInterval": "1h",
                       "rotation": {"period": "90d", "strategy": "Generate",
                                    "generator": {"length": 64, "classes": ["Lowercase", "Symbols"], "symbols": "${}\\\"'"},
                                    "pushTo": [{"github": {"repository": "acme/payments", "secretName": "EXACT"}}]}}),
            ),
            "keyward.dev/rotate-now",
            "exact",
        ),
    )
    .await;
    let generated = eventually(60, "the generated value everywhere", || async {
        let secret = secret_value(&b_secrets, "exact", "P").await?;
        let secret = String::from_utf8(secret).ok()?;
        (secret != "initial" && w.github.received("repo/acme/payments", "EXACT")? == secret).then_some(secret)
    })
    .await;
    assert_eq!(w.esc_value(&exact_env, "app.password").await, generated);
    assert_eq!(generated.len(), 64);

    // The canary: no value in keyward's logs, Events, statuses, metrics, health or audit lines.
    let mut seen = keyward.logs();
    seen.push_str(&std::fs::read_to_string(&audit).unwrap_or_default());
    seen.push_str(&keyward.metrics().await);
    seen.push_str(&health);
    for ns in [&a, &b] {
        let all = Api::<ManagedSecret>::namespaced(admin.clone(), &ns.name)
            .list(&Default::default())
            .await
            .unwrap();
        for ms in all.items {
            seen.push_str(&serde_json::to_string(&ms.status).unwrap());
            seen.push_str(&ns.events_for(&ms.metadata.name.clone().unwrap()).await.join("\n"));
        }
    }
    assert!(!seen.contains(CANARY), "a value leaked into keyward's output");
    assert!(!seen.contains("attacker-chosen-value"));
    assert!(!seen.contains(&generated), "the generated value leaked");

    drop(keyward);
    for name in [&a_policy, &format!("{}-grants", b.name)] {
        let _ = Api::<AccessPolicy>::all(admin.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

/// What the API can express is refused at admission, for a tenant: weak generators, environment names with
/// `.`/`..` segments, target types that make Kubernetes act on a Secret, keyward's own annotation keys.
#[tokio::test]
async fn admission_refuses_what_the_api_can_express() {
    let admin = support::cluster().client().await;
    install_crd(&admin).await;
    let ns = TestNs::with_client("tenant-adm", admin.clone()).await;
    let carol = tenant(&admin, &ns.name, &format!("carol-{}", ns.name), team_rules(true)).await;
    let api: Api<ManagedSecret> = Api::namespaced(carol, &ns.name);
    let esc = |env: &str| json!({"esc": {"environment": env, "path": "app.password"}});
    let cases = [
        (
            "one-symbol",
            json!({"source": esc("acme/shared/common"), "target": {"key": "P"},
                   "rotation": {"period": "90d", "strategy": "Generate",
                                "generator": {"classes": ["Symbols"], "symbols": "!"}}}),
            "128 bits",
        ),
        (
            "short",
            json!({"source": esc("acme/shared/common"), "target": {"key": "P"},
                   "rotation": {"period": "90d", "strategy": "Generate",
                                "generator": {"length": 12, "classes": ["Lowercase", "Digits"]}}}),
            "128 bits",
        ),
        (
            "dotdot",
            json!({"source": esc("acme/team-a/.."), "target": {"key": "P"}}),
            "environment",
        ),
        (
            "dot",
            json!({"source": esc("acme/./versions"), "target": {"key": "P"}}),
            "environment",
        ),
        (
            "sa-token",
            json!({"source": esc("acme/team-a/app"), "target": {"key": "token", "type": "kubernetes.io/service-account-token",
                   "annotations": {"kubernetes.io/service-account.name": "default"}}}),
            "target.type",
        ),
        (
            "forged",
            json!({"source": esc("acme/team-a/app"), "target": {"key": "P",
                   "annotations": {"keyward.dev/last-rotation": "2099-01-01T00:00:00Z"}}}),
            "keyward.dev/",
        ),
        (
            "forged-label",
            json!({"source": esc("acme/team-a/app"), "target": {"key": "P",
                   "labels": {"sub.keyward.dev/x": "y"}}}),
            "keyward.dev/",
        ),
        (
            "dot-repo",
            json!({"source": esc("acme/team-a/app"), "target": {"key": "P"},
                   "rotation": {"period": "90d", "strategy": "Notify",
                                "pushTo": [{"github": {"repository": "acme/..", "secretName": "X"}}]}}),
            "repository",
        ),
    ];
    for (name, spec, want) in cases {
        match api.create(&PostParams::default(), &managed(name, spec)).await {
            Err(kube::Error::Api(e)) if e.code == 422 => {
                assert!(e.message.contains(want), "{name}: {}", e.message);
            }
            other => panic!("{name}: want 422 mentioning {want}, got {other:?}"),
        }
    }
    // A strong generator and a plain name pass.
    api.create(
        &PostParams::default(),
        &managed(
            "fine",
            json!({"source": esc("acme/team-a/app"), "target": {"key": "P"},
                   "rotation": {"period": "90d", "strategy": "Generate",
                                "generator": {"length": 24, "classes": ["Lowercase", "Uppercase", "Digits"]}}}),
        ),
    )
    .await
    .unwrap();
}
