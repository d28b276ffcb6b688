//! The checked-in CRD YAML is exactly what the code generates (`make generate` refreshes it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn checked_in_crds_match_the_code() {
    for name in ["managedsecrets", "accesspolicies"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["crd", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keyward crd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = String::from_utf8(out.stdout).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("crds/{name}.keyward.dev.yaml"));
        let checked_in = std::fs::read_to_string(&path).unwrap();
        assert!(
            generated == checked_in,
            "{} is stale: run `make generate` and commit the result",
            path.display()
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        2,
        "crds/ holds exactly the generated CRDs"
    );
}

mod support;

use serde_json::{Value, json};
use std::process::{Command, Output, Stdio};

/// kubectl against this binary's control plane, with `stdin` when given.
fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(support::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&support::cluster().kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The ManagedSecret CRD as the code generates it, as JSON.
fn generated_crd() -> Value {
    let text = std::fs::read_to_string(support::repo().join("crds/managedsecrets.keyward.dev.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn spec_schema(crd: &mut Value) -> &mut Value {
    &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
}

fn apply_crd(crd: &Value, manager: &str) {
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={manager}"),
            "-f",
            "-",
        ],
        Some(&crd.to_string()),
    );
    assert!(out.status.success(), "{}", said(&out));
    let out = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/managedsecrets.keyward.dev",
        ],
        None,
    );
    assert!(out.status.success(), "{}", said(&out));
}

fn managed(ns: &str, name: &str, spec: Value) -> String {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
    .to_string()
}

/// docs/upgrade.md, tested: Helm created an older CRD that lacks a field and never upgrades it; the API server
/// refuses that field. After the documented server-side apply of the chart's CRDs (`helm show crds | kubectl
/// apply --server-side --force-conflicts`) it accepts and keeps it. Then a newer schema than this keyward knows
/// (a `rotation.strategy` value it has no name for): that object is logged and left alone, and the watch of
/// every other ManagedSecret goes on (kube's DeserializeGuard), where it used to fail the whole list.
#[tokio::test]
async fn a_crd_upgrade_by_server_side_apply_and_an_object_of_a_newer_schema() {
    let ns = support::TestNs::new("crd-upgrade").await;
    // The older CRD: no target.annotations yet, created by Helm.
    let mut old = generated_crd();
    spec_schema(&mut old)["target"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    apply_crd(&old, "helm");
    let annotated = managed(
        &ns.name,
        "annotated",
        json!({"source": {"kubernetesSecret": {"name": "src", "key": "v"}},
               "target": {"key": "V", "annotations": {"team": "payments"}}}),
    );
    let out = kubectl(&["create", "--validate=strict", "-f", "-"], Some(&annotated));
    assert!(
        !out.status.success(),
        "the old CRD must refuse target.annotations: {}",
        said(&out)
    );
    assert!(said(&out).contains("annotations"), "{}", said(&out));

    // The documented upgrade, as written.
    let helm = Command::new(support::tool("helm"))
        .args(["show", "crds"])
        .arg(support::repo().join("charts/keyward"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("keyward-crd-test-helm"))
        .output()
        .unwrap();
    assert!(helm.status.success(), "{}", said(&helm));
    let crds = String::from_utf8(helm.stdout).unwrap();
    let out = kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crds));
    assert!(out.status.success(), "{}", said(&out));
    let out = kubectl(&["create", "--validate=strict", "-f", "-"], Some(&annotated));
    assert!(out.status.success(), "after the upgrade: {}", said(&out));
    let out = kubectl(
        &[
            "get",
            "msec",
            "annotated",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.target.annotations.team}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "payments", "the field is kept");

    // A newer schema: a strategy this keyward has no name for.
    let mut newer = generated_crd();
    spec_schema(&mut newer)["rotation"]["properties"]["strategy"]["enum"]
        .as_array_mut()
        .unwrap()
        .push(json!("Quantum"));
    apply_crd(&newer, "keyward-test");
    let unreadable = managed(
        &ns.name,
        "from-the-future",
        json!({"source": {"esc": {"environment": "acme/app/prod", "path": "x"}}, "target": {"key": "V"},
               "rotation": {"strategy": "Quantum", "period": "90d"}}),
    );
    let out = kubectl(&["create", "-f", "-"], Some(&unreadable));
    assert!(out.status.success(), "{}", said(&out));
    let out = kubectl(
        &[
            "create",
            "secret",
            "generic",
            "src",
            "-n",
            &ns.name,
            "--from-literal=v=still-synced",
        ],
        None,
    );
    assert!(out.status.success(), "{}", said(&out));

    let k = support::Keyward::start(&ns.name, &[]);
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    support::eventually(
        60,
        "the readable ManagedSecret synced beside the unreadable one",
        || async {
            let s = secrets.get("annotated").await.ok()?;
            (s.data?.get("V")?.0 == b"still-synced").then_some(())
        },
    )
    .await;
    let logs = k.logs();
    assert!(
        logs.contains("not readable by this keyward") && logs.contains("from-the-future"),
        "the unreadable object is named in the log:\n{logs}"
    );
    assert!(
        !logs.contains("ManagedSecret watch error"),
        "the watch did not fail:\n{logs}"
    );
    assert!(
        secrets.get_opt("from-the-future").await.unwrap().is_none(),
        "nothing written for it"
    );
}
