//! Migration from External Secrets Operator: `keyward import --from-external-secrets` converts the fixtures'
//! ExternalSecrets (one per supported field), the converted ManagedSecrets are applied with the AccessPolicy
//! draft as keyward's only grants, and every Secret holds exactly what ESO makes of the same ExternalSecret
//! (`tests/fixtures/eso/expected.yaml`, by ESO's documented semantics). What does not convert is listed and
//! nothing is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use keyward::api::ManagedSecret;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use support::{Keyward, TestNs, eventually, install_crd, keyward_bin, repo};

const TOKEN: &str = "test-esc-token";

fn fixture(name: &str) -> std::path::PathBuf {
    repo().join("tests/fixtures/eso").join(name)
}

#[tokio::test]
async fn converted_external_secrets_make_the_secrets_eso_makes() {
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server(TOKEN, dir.path()).await;
    esc.put_definition(
        "acme",
        "shop",
        "prod",
        &std::fs::read_to_string(fixture("esc.yaml")).unwrap(),
    )
    .unwrap();
    let ns = TestNs::new("eso").await;
    install_crd(&ns.client).await;

    let out = Command::new(keyward_bin())
        .args(["import", "--from-external-secrets"])
        .arg(fixture("externalsecrets.yaml"))
        .args(["--namespace", &ns.name])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("converted 6 ExternalSecret(s)"), "{stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let (policies, objects): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(|d| d["kind"] == "AccessPolicy");
    assert_eq!(policies.len(), 1);
    // The draft is keyward's only grant: what the converted objects read, and nothing else.
    let policy_file = dir.path().join("policies.yaml");
    std::fs::write(&policy_file, serde_json::to_string(&policies[0]).unwrap()).unwrap();
    let managed: Api<ManagedSecret> = ns.api();
    for o in &objects {
        let ms: ManagedSecret = serde_json::from_value(o.clone()).unwrap();
        managed.create(&PostParams::default(), &ms).await.unwrap();
    }
    let token_file = dir.path().join("esc-token");
    let _keyward = Keyward::start(
        &ns.name,
        &[
            "--esc-url",
            &esc.base_url(),
            "--esc-token-file",
            token_file.to_str().unwrap(),
            "--access-policy-file",
            policy_file.to_str().unwrap(),
        ],
    );

    let expected: BTreeMap<String, Value> =
        serde_saphyr::from_str(&std::fs::read_to_string(fixture("expected.yaml")).unwrap()).unwrap();
    let secrets: Api<Secret> = ns.api();
    for (name, want) in &expected {
        let want_data: BTreeMap<String, Vec<u8>> = want["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        let secret = eventually(60, &format!("Secret {name} as ESO makes it"), || async {
            let s = secrets.get_opt(name).await.ok()??;
            let data: BTreeMap<String, Vec<u8>> = s.data.clone()?.into_iter().map(|(k, v)| (k, v.0)).collect();
            (data == want_data).then_some(s)
        })
        .await;
        let want_type = want["type"].as_str().unwrap_or("Opaque");
        assert_eq!(secret.type_.as_deref(), Some(want_type), "{name}: type");
        for (field, have) in [
            ("labels", secret.metadata.labels.clone()),
            ("annotations", secret.metadata.annotations.clone()),
        ] {
            for (k, v) in want[field].as_object().into_iter().flatten() {
                assert_eq!(
                    have.as_ref().and_then(|h| h.get(k)).map(String::as_str),
                    v.as_str(),
                    "{name}: {field} {k}"
                );
            }
        }
    }
    // creationPolicy Owner: the Secret goes with its object; Orphan: it stays.
    let owned = |name: &str| {
        let secrets = secrets.clone();
        let name = name.to_string();
        async move {
            !secrets
                .get(&name)
                .await
                .unwrap()
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty()
        }
    };
    assert!(owned("db-credentials").await);
    assert!(!owned("settings").await);
}

#[test]
fn what_does_not_convert_is_listed_and_nothing_is_written() {
    let out = Command::new(keyward_bin())
        .args(["import", "--from-external-secrets", "-"])
        .stdin(std::fs::File::open(fixture("unsupported.yaml")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin: 11 problems:"), "{stderr}");
    assert!(stderr.contains("spec.target.creationPolicy: Merge"), "{stderr}");
}
