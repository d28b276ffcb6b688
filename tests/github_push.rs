//! Pushing to GitHub Actions secrets, against the local GitHub server started in process: the server opens
//! every sealed box, so these tests see exactly what GitHub would have stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keyward::api::{GithubTarget, GithubVisibility};
use keyward::credentials::Credential;
use keyward::push::PushError;
use keyward::push::github::{GithubClient, GithubConfig, GithubScope, Visibility};
use keyward::secret::SecretBytes;
use keyward_dev::github_server::{GithubFault, GithubServer, GithubServerOptions, Repository};
use serde_json::Value;
use zeroize::Zeroizing;

const TOKEN: &str = "ghp_test-token-1";
const CANARY: &str = "canary-Gh7x-never-in-errors";

async fn server() -> GithubServer {
    keyward::install_crypto_provider();
    GithubServer::start(GithubServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.into()),
        repositories: vec![
            Repository::new("acme", "app", 1001)
                .with_environment("production")
                .with_environment("prod eu/blue"),
            Repository::new("acme", "lib", 1002),
        ],
    })
    .await
    .unwrap()
}

fn client_with(server: &GithubServer, token: Option<&str>, attempts: u32) -> GithubClient {
    GithubClient::new(GithubConfig {
        base_url: server.base_url(),
        token: Credential::fixed(token.map(|t| Zeroizing::new(t.to_owned()))),
        timeout: Duration::from_secs(5),
        attempts,
        max_inline_wait: Duration::from_secs(2),
    })
    .unwrap()
}

fn client(server: &GithubServer) -> GithubClient {
    client_with(server, Some(TOKEN), 3)
}

fn repo() -> GithubScope {
    GithubScope::Repository {
        owner: "acme".into(),
        repo: "app".into(),
    }
}

fn value(s: &str) -> SecretBytes {
    SecretBytes::new(s.as_bytes().to_vec())
}

#[tokio::test]
async fn org_repo_and_environment_pushes_arrive_exactly() {
    let server = server().await;
    let gh = client(&server);

    let org = GithubScope::from_target(&GithubTarget {
        organization: Some("acme".into()),
        secret_name: "ORG_TOKEN".into(),
        visibility: Some(GithubVisibility::Selected),
        selected_repository_ids: Some(vec![1001, 1002]),
        ..GithubTarget::default()
    })
    .unwrap();
    let org_value = "org ✓ value with spaces\nand a newline";
    gh.put_secret(&org, "ORG_TOKEN", &value(org_value)).await.unwrap();
    assert_eq!(server.received("org/acme", "ORG_TOKEN").as_deref(), Some(org_value));
    let held = server.received_all();
    let org_held = held.iter().find(|s| s.scope == "org/acme").unwrap();
    assert_eq!(org_held.visibility.as_deref(), Some("selected"));
    assert_eq!(org_held.selected_repository_ids, vec![1001, 1002]);

    gh.put_secret(&repo(), "DB_PASSWORD", &value("repo-value-1"))
        .await
        .unwrap();
    assert_eq!(
        server.received("repo/acme/app", "DB_PASSWORD").as_deref(),
        Some("repo-value-1")
    );

    // An environment name with a space and a slash travels percent-encoded.
    let env = GithubScope::from_target(&GithubTarget {
        repository: Some("acme/app".into()),
        environment: Some("prod eu/blue".into()),
        secret_name: "API_KEY".into(),
        ..GithubTarget::default()
    })
    .unwrap();
    assert_eq!(env.describe("API_KEY"), "github:env/acme/app/prod eu/blue/API_KEY");
    gh.put_secret(&env, "API_KEY", &value("env-value")).await.unwrap();
    assert_eq!(
        server.received("env/acme/app/prod eu/blue", "API_KEY").as_deref(),
        Some("env-value")
    );
    // Scope and name match case-insensitively, as on GitHub.
    assert_eq!(
        server.received("ENV/Acme/App/Prod EU/blue", "api_key").as_deref(),
        Some("env-value")
    );

    // A second push updates in place.
    gh.put_secret(&repo(), "DB_PASSWORD", &value("repo-value-2"))
        .await
        .unwrap();
    assert_eq!(
        server.received("repo/acme/app", "DB_PASSWORD").as_deref(),
        Some("repo-value-2")
    );
    assert_eq!(server.puts("repo/acme/app", "DB_PASSWORD"), 2);
    assert_eq!(server.puts("org/acme", "ORG_TOKEN"), 1);

    // Other visibilities send no repository list.
    let all = GithubScope::Organization {
        org: "acme".into(),
        visibility: Visibility::All,
        selected_repository_ids: vec![],
    };
    gh.put_secret(&all, "ORG_TOKEN", &value("v")).await.unwrap();
    let held = server.received_all();
    let org_held = held.iter().find(|s| s.scope == "org/acme").unwrap();
    assert_eq!(org_held.visibility.as_deref(), Some("all"));
    assert!(org_held.selected_repository_ids.is_empty());

    // One key fetch and one PUT per push, nothing else.
    let c = server.counters();
    assert_eq!(c.requests("getOrgPublicKey"), 2);
    assert_eq!(c.requests("createOrUpdateOrgSecret"), 2);
    assert_eq!(c.requests("getRepoPublicKey"), 2);
    assert_eq!(c.requests("createOrUpdateRepoSecret"), 2);
    assert_eq!(c.requests("getEnvironmentPublicKey"), 1);
    assert_eq!(c.requests("createOrUpdateEnvironmentSecret"), 1);
    assert_eq!((c.total, c.faults_injected), (10, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_secondary_rate_limit_retry_after_is_waited_out() {
    let server = server().await;
    server.set_fault(GithubFault::secondary_rate_limit(1, 1));
    let started = Instant::now();
    client(&server)
        .put_secret(&repo(), "X", &value("after-wait"))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let c = server.counters();
    // Exactly one retry: the refused key fetch again, then the PUT.
    assert_eq!(c.requests("getRepoPublicKey"), 2);
    assert_eq!(c.requests("createOrUpdateRepoSecret"), 1);
    assert_eq!(c.faults_injected, 1);
    assert_eq!(server.received("repo/acme/app", "X").as_deref(), Some("after-wait"));
    server.stop().await;
}

#[tokio::test]
async fn a_primary_rate_limit_waits_until_the_reset() {
    let server = server().await;
    server.set_fault(GithubFault::rate_limited(1, 1));
    let started = Instant::now();
    client(&server)
        .put_secret(&repo(), "X", &value("after-reset"))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let c = server.counters();
    assert_eq!(c.requests("getRepoPublicKey"), 2);
    assert_eq!(c.requests("createOrUpdateRepoSecret"), 1);
    assert_eq!(c.faults_injected, 1);

    // GitHub also sends the primary limit as a 403.
    server.set_fault(GithubFault::rate_limited(1, 1).with_status(403));
    client(&server).put_secret(&repo(), "X", &value("v2")).await.unwrap();
    assert_eq!(server.counters().faults_injected, 2);
    assert_eq!(server.received("repo/acme/app", "X").as_deref(), Some("v2"));
    server.stop().await;
}

#[tokio::test]
async fn long_waits_return_to_the_caller_at_once() {
    let server = server().await;
    let gh = client(&server);
    let quick = |started: Instant| assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    server.set_fault(GithubFault::secondary_rate_limit(30, 1));
    let started = Instant::now();
    let e = gh.put_secret(&repo(), "X", &value(CANARY)).await.unwrap_err();
    quick(started);
    assert_eq!(e.reason(), "RateLimited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(e.to_string().contains("github:repo/acme/app/X"), "{e}");

    // The primary limit: until the reset, plus a second's margin.
    server.set_fault(GithubFault::rate_limited(600, 1));
    let started = Instant::now();
    let e = gh.put_secret(&repo(), "X", &value(CANARY)).await.unwrap_err();
    quick(started);
    let wait = e.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(599) && wait <= Duration::from_secs(601),
        "{wait:?}"
    );

    // A secondary limit that names no time: GitHub says wait at least a minute.
    server.set_fault(GithubFault::secondary_rate_limit(0, 1).without_retry_after());
    let started = Instant::now();
    let e = gh.put_secret(&repo(), "X", &value(CANARY)).await.unwrap_err();
    quick(started);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));

    assert_eq!(server.counters().total, 3);
    assert_eq!(server.received("repo/acme/app", "X"), None);
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_and_outages_are_retried_within_the_attempts() {
    let server = server().await;
    // Short rate limits that do not heal: two attempts, one wait, then the caller hears of it.
    server.set_fault(GithubFault::secondary_rate_limit(1, 10));
    let e = client_with(&server, Some(TOKEN), 2)
        .put_secret(&repo(), "X", &value("v"))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(server.counters().total, 2);

    // An outage that ends within the attempts is invisible to the caller.
    server.set_fault(GithubFault::unavailable(2));
    server.reset_counters();
    client(&server).put_secret(&repo(), "X", &value("v")).await.unwrap();
    assert_eq!(server.counters().requests("getRepoPublicKey"), 3);

    // One that does not is reported as Unavailable.
    server.set_fault(GithubFault::unavailable(1).until_cleared());
    server.reset_counters();
    let e = client(&server).put_secret(&repo(), "X", &value("v")).await.unwrap_err();
    assert_eq!((e.reason(), e.category()), ("Unavailable", "unavailable"));
    assert!(e.is_transient());
    assert_eq!(server.counters().total, 3);
    server.stop().await;
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let server = server().await;

    let e = client_with(&server, Some("ghp_wrong"), 3)
        .put_secret(&repo(), "X", &value("v"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Unauthorized");
    assert!(e.to_string().contains("Bad credentials"), "{e}");
    let e = client_with(&server, None, 3)
        .put_secret(&repo(), "X", &value("v"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Unauthorized");

    server.set_fault(GithubFault::forbidden(1));
    let e = client(&server).put_secret(&repo(), "X", &value("v")).await.unwrap_err();
    assert_eq!(e.reason(), "Forbidden");
    assert!(e.to_string().contains("Resource not accessible"), "{e}");

    // GitHub's own reason for a 422 reaches the caller.
    let e = client(&server)
        .put_secret(&repo(), "GITHUB_TOKEN", &value("v"))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Invalid");
    assert!(e.to_string().contains("must not start with GITHUB_"), "{e}");

    // 401, 401, 403, and for the 422 the key fetch and the PUT: no retries anywhere.
    assert_eq!(server.counters().total, 5);
    assert!(server.received_all().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn unknown_repositories_and_environments_are_not_found() {
    let server = server().await;
    let gh = client(&server);
    let scopes = [
        GithubScope::Repository {
            owner: "acme".into(),
            repo: "nope".into(),
        },
        GithubScope::Environment {
            owner: "acme".into(),
            repo: "app".into(),
            environment: "staging".into(),
        },
        GithubScope::Environment {
            owner: "acme".into(),
            repo: "nope".into(),
            environment: "production".into(),
        },
        GithubScope::Organization {
            org: "other".into(),
            visibility: Visibility::Private,
            selected_repository_ids: vec![],
        },
    ];
    for scope in &scopes {
        let e = gh.put_secret(scope, "X", &value(CANARY)).await.unwrap_err();
        assert_eq!(e.reason(), "NotFound", "{scope:?}");
        assert!(!e.is_transient());
        assert!(e.to_string().starts_with(&scope.describe("X")), "{e}");
    }
    assert_eq!(server.counters().total, scopes.len() as u64);
    server.stop().await;
}

#[tokio::test]
async fn no_error_shows_the_value() {
    let server = server().await;
    let canary = value(CANARY);
    let mut errors: Vec<PushError> = Vec::new();
    let wrong = client_with(&server, Some("ghp_wrong"), 1);
    errors.push(wrong.put_secret(&repo(), "X", &canary).await.unwrap_err());
    let gh = client_with(&server, Some(TOKEN), 2);
    let missing = GithubScope::Repository {
        owner: "acme".into(),
        repo: "nope".into(),
    };
    errors.push(gh.put_secret(&missing, "X", &canary).await.unwrap_err());
    errors.push(gh.put_secret(&repo(), "GITHUB_X", &canary).await.unwrap_err());
    for fault in [
        GithubFault::secondary_rate_limit(30, 1),
        GithubFault::rate_limited(30, 1),
        GithubFault::forbidden(1),
        GithubFault::unavailable(5),
    ] {
        server.set_fault(fault);
        errors.push(gh.put_secret(&repo(), "X", &canary).await.unwrap_err());
    }
    // Nothing listens here: a transport error.
    let closed = GithubClient::new(GithubConfig {
        base_url: "http://127.0.0.1:9".into(),
        attempts: 1,
        ..GithubConfig::default()
    })
    .unwrap();
    errors.push(closed.put_secret(&repo(), "X", &canary).await.unwrap_err());

    let reasons: Vec<&str> = errors.iter().map(PushError::reason).collect();
    assert_eq!(
        reasons,
        [
            "Unauthorized",
            "NotFound",
            "Invalid",
            "RateLimited",
            "RateLimited",
            "Forbidden",
            "Unavailable",
            "Unavailable"
        ]
    );
    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
    }
    assert!(!format!("{gh:?}").contains(TOKEN));
    server.stop().await;
}

#[tokio::test]
async fn control_endpoints_show_counters_faults_and_received_values() {
    let server = server().await;
    client(&server).put_secret(&repo(), "X", &value("seen")).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("{}{p}", server.base_url());

    let counters: Value = http
        .get(url("/_dev/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["requests"]["createOrUpdateRepoSecret"], 1);
    assert_eq!(counters["total"], 2);

    let received: Value = http
        .get(url("/_dev/received?scope=repo/acme/app&name=x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received["secrets"][0]["value"], "seen");
    assert_eq!(received["secrets"][0]["name"], "X");
    assert_eq!(received["secrets"][0]["puts"], 1);

    let res = http
        .put(url("/_dev/fault"))
        .body(r#"{"mode": "rateLimited", "resetInSeconds": 5, "failCount": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.fault(), GithubFault::rate_limited(5, 1));
    let res = http
        .put(url("/_dev/fault"))
        .body(r#"{"mode": "unavailable", "status": 404}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http
        .get(url("/repos/acme/app/actions/secrets"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");

    // The API itself never shows values.
    let listed = http
        .get(url("/repos/acme/app/actions/secrets"))
        .header("Authorization", format!("token {TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("\"X\"") && !listed.contains("seen"), "{listed}");
    server.stop().await;
}
