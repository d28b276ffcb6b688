//! Writing to ESC: `EscClient::write_secret_value` and `rotate` against the in-process dev ESC server. Each test
//! starts its own server on a free loopback port with a temporary data file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keyward::esc::PropertyPath;
use keyward::esc::{EnvRef, EscClient, EscConfig};
use keyward::secret::SecretBytes;
use keyward_dev::esc_server::{EscServer, EscServerOptions, Fault};
use serde_json::Value;
use zeroize::Zeroizing;

const TOKEN: &str = "write-test-token";

const BASE: &str = "values:\n  base_only: from-base\n  db:\n    host: base-host\n";

/// Imports, comments in several places, expressions, an interpolation that uses the secret, a rotator.
const PROD: &str = r#"# Production settings for the app.
imports:
  - shared/base   # shared defaults
values:
  # Database.
  db:
    host: db.internal   # overrides base
    password:
      fn::secret: initial-pass-1
    user: 'app'
    url: postgres://${db.user}:${db.password}@${db.host}/app

  api:
    "key.v2": {fn::secret: old-api-key}
    flags: [a, b, {fn::toBase64: hi}]
    joined:
      fn::join: ["-", [x, y]]
    token:
      fn::rotate::dev-random:
        inputs: {length: 24}   # short for tests
        state:
          fn::secret: initial-token
  aws:
    fn::open::aws-login:
      oidc: {roleArn: "arn:aws:iam::123:role/x"}
  # trailing comment
"#;

struct Fixture {
    server: EscServer,
    _dir: tempfile::TempDir,
    client: EscClient,
    env: EnvRef,
}

impl Fixture {
    async fn start() -> Fixture {
        keyward::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let server = EscServer::start(EscServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().join("esc.json"),
            token: Some(TOKEN.into()),
        })
        .await
        .unwrap();
        server.put_definition("acme", "shared", "base", BASE).unwrap();
        server.put_definition("acme", "app", "prod", PROD).unwrap();
        let mut config = EscConfig::new(server.base_url(), Some(Zeroizing::new(TOKEN.to_owned())));
        config.timeout = Duration::from_secs(5);
        let client = EscClient::new(config).unwrap();
        Fixture {
            server,
            _dir: dir,
            client,
            env: EnvRef::parse("acme/app/prod").unwrap(),
        }
    }

    /// The value at `path` of a fresh open at the newest revision.
    async fn read(&self, path: &str) -> Result<String, keyward::source::SourceError> {
        let revision = self.client.latest_revision(&self.env).await?;
        let snapshot = self.client.snapshot(&self.env, revision).await?;
        let v = snapshot.lookup(&PropertyPath::parse(path).unwrap())?;
        Ok(String::from_utf8(v.expose().to_vec()).unwrap())
    }

    async fn decrypted(&self) -> Value {
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}/environments/acme/app/prod/decrypt", self.server.base_url()))
            .header("Authorization", format!("token {TOKEN}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }
}

fn path(p: &str) -> PropertyPath {
    PropertyPath::parse(p).unwrap()
}

/// The byte range of the line part after `marker` (up to the line's end), found from the fixture's shape.
fn line_after(text: &str, marker: &str) -> std::ops::Range<usize> {
    let start = text.find(marker).unwrap_or_else(|| panic!("{marker:?} in\n{text}")) + marker.len();
    let end = start + text[start..].find('\n').unwrap();
    start..end
}

/// Everything outside the two ranges is byte-for-byte the same.
fn same_outside(before: &str, b: std::ops::Range<usize>, after: &str, a: std::ops::Range<usize>) {
    assert_eq!(&before[..b.start], &after[..a.start], "text before the node changed");
    assert_eq!(&before[b.end..], &after[a.end..], "text after the node changed");
}

#[tokio::test]
async fn writes_one_value_and_nothing_else() {
    let f = Fixture::start().await;
    let before = f.client.get_definition(&f.env).await.unwrap();
    assert!(!before.yaml.contains("initial-pass-1"), "the server shows ciphertext");
    let value = "n3w: \"pass\" #1\\ ünï\nline2";
    let before_url = f.read("db.url").await.unwrap();
    assert_eq!(before_url, "postgres://app:initial-pass-1@db.internal/app");

    let revision = f
        .client
        .write_secret_value(
            &f.env,
            &path("db.password"),
            &SecretBytes::new(value.as_bytes().to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(revision, before.revision + 1);

    let after = f.client.get_definition(&f.env).await.unwrap();
    assert_eq!(after.revision, revision);
    assert_ne!(after.etag, before.etag);
    assert!(!after.yaml.contains("n3w"), "stored as ciphertext:\n{}", *after.yaml);
    // The node is the line after `password:`; it changed (new ciphertext), and nothing else did.
    let marker = "password:\n      ";
    let (b, a) = (line_after(&before.yaml, marker), line_after(&after.yaml, marker));
    same_outside(&before.yaml, b.clone(), &after.yaml, a.clone());
    assert!(after.yaml[a.clone()].starts_with("fn::secret: {ciphertext: "));
    assert_ne!(&before.yaml[b], &after.yaml[a]);

    // decrypt shows the new plaintext at the path.
    let plain = f.decrypted().await;
    assert_eq!(
        plain["values"]["db"]["password"]["fn::secret"],
        Value::String(value.into())
    );
    assert_eq!(plain["values"]["api"]["key.v2"]["fn::secret"], "old-api-key");

    // Opening reads it, and what interpolates it; everything else is as before.
    assert_eq!(f.read("db.password").await.unwrap(), value);
    assert_eq!(
        f.read("db.url").await.unwrap(),
        format!("postgres://app:{value}@db.internal/app")
    );
    assert_eq!(f.read("api[\"key.v2\"]").await.unwrap(), "old-api-key");
    assert_eq!(f.read("api.token").await.unwrap(), "initial-token");
    assert_eq!(f.read("base_only").await.unwrap(), "from-base");
    assert_eq!(f.read("db.host").await.unwrap(), "db.internal");
    assert_eq!(f.read("api.joined").await.unwrap(), "x-y");
}

#[tokio::test]
async fn a_concurrent_write_costs_one_retry() {
    let f = Fixture::start().await;
    let rev = f.client.latest_revision(&f.env).await.unwrap();
    f.server.set_fault(Fault::conflict(1));
    f.server.reset_counters();
    let written = f
        .client
        .write_secret_value(&f.env, &path("api[\"key.v2\"]"), &SecretBytes::new(b"k2".to_vec()))
        .await
        .unwrap();
    let c = f.server.counters();
    assert_eq!(c.requests("update"), 2, "{c:?}");
    assert_eq!(c.requests("getDefinition"), 2, "re-read after the conflict: {c:?}");
    assert_eq!(c.faults_injected, 1);
    assert_eq!(written, rev + 1);
    assert_eq!(f.read("api[\"key.v2\"]").await.unwrap(), "k2");

    // Conflicts that do not stop are an error of their own, after a bounded number of tries.
    f.server.set_fault(Fault::conflict(100));
    f.server.reset_counters();
    let err = f
        .client
        .write_secret_value(&f.env, &path("db.host"), &SecretBytes::new(b"h".to_vec()))
        .await
        .unwrap_err();
    assert_eq!((err.category(), err.reason()), ("conflict", "Conflict"));
    assert_eq!(f.server.counters().requests("update"), 6);
    f.server.set_fault(Fault::none());
    assert_eq!(f.client.latest_revision(&f.env).await.unwrap(), rev + 1);
}

#[tokio::test]
async fn esc_unavailable_changes_nothing() {
    let f = Fixture::start().await;
    let before = f.client.get_definition(&f.env).await.unwrap();
    f.server.set_fault(Fault::unavailable(None));
    let err = f
        .client
        .write_secret_value(&f.env, &path("db.password"), &SecretBytes::new(b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err}");
    assert!(err.is_transient());
    assert_eq!(f.server.counters().requests("update"), 0);
    f.server.set_fault(Fault::none());
    let after = f.client.get_definition(&f.env).await.unwrap();
    assert_eq!(
        (after.revision, after.etag, &*after.yaml),
        (before.revision, before.etag, &*before.yaml)
    );
    assert_eq!(f.read("db.password").await.unwrap(), "initial-pass-1");
}

#[tokio::test]
async fn refuses_paths_that_are_not_literals_here() {
    let f = Fixture::start().await;
    let rev = f.client.latest_revision(&f.env).await.unwrap();
    f.server.reset_counters();
    for (p, says) in [
        ("db.url", "is a ${...} interpolation"),
        ("aws.login", "aws comes from fn::open::aws-login"),
        ("api.joined", "comes from fn::join"),
        ("api.token", "comes from fn::rotate::dev-random"),
        ("base_only", "imported environment: shared/base"),
    ] {
        let err = f
            .client
            .write_secret_value(&f.env, &path(p), &SecretBytes::new(b"canary-never-shown".to_vec()))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.category(), "invalid", "{p}: {msg}");
        assert!(
            msg.contains(p) && msg.contains(says) && msg.contains("acme/app/prod"),
            "{p}: {msg}"
        );
        assert!(!msg.contains("canary") && !msg.contains("initial-pass"), "{msg}");
    }
    let err = f
        .client
        .write_secret_value(&f.env, &path("db.password"), &SecretBytes::new(vec![0xff, 0xfe]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    assert_eq!(f.server.counters().requests("update"), 0);
    assert_eq!(f.client.latest_revision(&f.env).await.unwrap(), rev);

    // A definition ESC refuses comes back with its diagnostics, not the YAML; a stale ETag is a conflict.
    let current = f.client.get_definition(&f.env).await.unwrap();
    let bad = "values:\n  a: ${nope}\n  b: {fn::secret: canary-never-shown}\n";
    let err = f
        .client
        .update_definition(&f.env, bad, &current.etag)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "invalid");
    assert!(err.to_string().contains("unknown property \"nope\""), "{err}");
    assert!(!err.to_string().contains("canary"), "{err}");
    let ok = f.client.update_definition(&f.env, PROD, &current.etag).await.unwrap();
    assert_eq!(ok, rev + 1);
    let err = f
        .client
        .update_definition(&f.env, PROD, &current.etag)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "conflict");
    assert_eq!(f.client.latest_revision(&f.env).await.unwrap(), rev + 1);
}

#[tokio::test]
async fn rotate_makes_one_revision_with_new_state() {
    let f = Fixture::start().await;
    let before = f.client.get_definition(&f.env).await.unwrap();
    let out = f.client.rotate(&f.env, &["api.token".to_owned()]).await.unwrap();
    assert_eq!(out.pre_revision, before.revision);
    assert_eq!(out.post_revision, Some(before.revision + 1));
    assert_eq!(out.status, "succeeded");
    assert_eq!(f.server.counters().requests("rotate"), 1);

    let token = f.read("api.token").await.unwrap();
    assert_ne!(token, "initial-token");
    assert_eq!(token.len(), 24);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(f.read("db.password").await.unwrap(), "initial-pass-1");
    assert_eq!(f.read("api[\"key.v2\"]").await.unwrap(), "old-api-key");
    // Only the state's node changed in the stored definition.
    let after = f.client.get_definition(&f.env).await.unwrap();
    let marker = "state:\n          ";
    same_outside(
        &before.yaml,
        line_after(&before.yaml, marker),
        &after.yaml,
        line_after(&after.yaml, marker),
    );

    // A path without a rotator is refused, and nothing is written.
    let err = f.client.rotate(&f.env, &["db.password".to_owned()]).await.unwrap_err();
    assert_eq!(err.category(), "invalid");
    assert!(err.to_string().contains("no rotator at or under db.password"), "{err}");
    assert_eq!(f.client.latest_revision(&f.env).await.unwrap(), before.revision + 1);

    // The ESC CLI's body spells the field `Paths`; and rotate goes through faults like any request.
    let res = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/environments/acme/app/prod/rotate", f.server.base_url()))
        .header("Authorization", format!("token {TOKEN}"))
        .body(r#"{"Paths": ["api"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["secretRotationEvent"]["rotations"][0]["environmentPath"],
        "api.token"
    );
    assert_ne!(f.read("api.token").await.unwrap(), token);
    f.server.set_fault(Fault::unavailable(None));
    let err = f.client.rotate(&f.env, &[]).await.unwrap_err();
    assert_eq!(err.category(), "unavailable");
    f.server.set_fault(Fault::none());
    assert_eq!(f.client.latest_revision(&f.env).await.unwrap(), before.revision + 2);
}
