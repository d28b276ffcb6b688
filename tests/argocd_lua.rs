//! The Argo CD health check and actions (charts/keyward/argocd), run by a real Lua 5.1 in Argo CD's sandbox
//! (see tests/support/argocd.rs), over ManagedSecret fixtures in tests/fixtures/argocd; and docs/argocd.md
//! carries exactly these scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::argocd;

fn fixture(name: &str) -> Value {
    let path = support::repo().join(format!("tests/fixtures/argocd/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn health_of_every_fixture() {
    // (fixture, status, message)
    let cases = [
        (
            "healthy",
            "Healthy",
            "Synced: Secret openai matches ai-cherry/sophia/lambda-labs-production#sophia.ai.openai_api_key at revision 42",
        ),
        ("healthy-no-rotation", "Healthy", "Synced: Secret openai matches"),
        ("no-status", "Progressing", "Waiting for keyward to reconcile"),
        ("empty-status", "Progressing", "Waiting for keyward to reconcile"),
        (
            "generation-behind",
            "Progressing",
            "Waiting for keyward to reconcile generation 4",
        ),
        (
            "no-ready-condition",
            "Progressing",
            "Waiting for keyward to report Ready",
        ),
        (
            "source-not-found",
            "Degraded",
            "SourceNotFound: ESC path sophia.ai.openai_api_key not found in ai-cherry/sophia/lambda-labs-production",
        ),
        (
            "rolled-back",
            "Degraded",
            "RolloutFailed: rollout of Deployment/backend failed",
        ),
        (
            "rotation-overdue-failing",
            "Degraded",
            "RotationFailing: rotation was due at 2026-11-19T09:00:00Z and is failing",
        ),
        (
            "consumer-failed",
            "Degraded",
            "RolloutFailed: 1 of 1 consumer(s) failed to roll out",
        ),
        (
            "rotation-overdue-notify",
            "Suspended",
            "Overdue: rotation was due at 2026-11-19T09:00:00Z",
        ),
        (
            "rotation-overdue-default-strategy",
            "Suspended",
            "Overdue: rotation was due",
        ),
        ("rotating", "Progressing", "Rotating (leaked in #incident-42)"),
        (
            "rotation-due",
            "Progressing",
            "Due: rotation was due at 2026-11-20T09:59:00Z",
        ),
        (
            "restarts-in-progress",
            "Progressing",
            "RestartsInProgress: 1 of 2 consumer(s) not yet running the current value",
        ),
    ];
    for (name, want_status, want_message) in cases {
        let obj = fixture(name);
        let (status, message) = argocd::health(&obj);
        assert_eq!(status, want_status, "{name}: {message}");
        assert!(
            message.starts_with(want_message),
            "{name}: message {message:?} should start with {want_message:?}"
        );
    }
}

#[test]
fn overdue_without_a_strategy_is_notify_and_suspended() {
    // No spec.rotation.strategy: keyward's default is Notify, so an overdue rotation waits for a person.
    let mut obj = fixture("rotation-overdue-default-strategy");
    assert!(obj["spec"]["rotation"].get("strategy").is_none());
    let (status, message) = argocd::health(&obj);
    assert_eq!(status, "Suspended", "{message}");
    obj["spec"]["rotation"]["strategy"] = json!("Esc");
    assert_eq!(argocd::health(&obj).0, "Degraded");
}

#[test]
fn health_is_always_a_status_argo_cd_accepts() {
    let dir = support::repo().join("tests/fixtures/argocd");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let obj: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (status, message) = argocd::health(&obj);
        assert!(
            ["Healthy", "Progressing", "Degraded", "Suspended"].contains(&status.as_str()),
            "{}: {status}",
            path.display()
        );
        assert!(!message.is_empty(), "{}: empty message", path.display());
    }
}

#[test]
fn the_sandbox_has_no_string_library() {
    // The scripts must not use what Argo CD does not open for custom scripts: prove the harness enforces it.
    let err = argocd::run("return {status = string.upper('x')}", "probe", &json!({})).unwrap_err();
    assert!(err.contains("string"), "{err}");
    let err = argocd::run("return {status = ('x'):upper()}", "probe", &json!({})).unwrap_err();
    assert!(err.contains("index"), "{err}");
    let err = argocd::run("return {status = os.getenv('HOME')}", "probe", &json!({})).unwrap_err();
    assert!(err.contains("getenv"), "{err}");
    assert_eq!(
        argocd::run("return {t = os.date('!%Y')}", "probe", &json!({})).unwrap()["t"]
            .as_str()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn discovery_offers_rotate_only_where_keyward_can_rotate() {
    let discovery = argocd::script("actions/discovery.lua");
    let generate = fixture("healthy");
    let out = argocd::run(&discovery, "discovery.lua", &generate).unwrap();
    assert_eq!(out["rotate"]["disabled"], json!(false), "{out}");
    assert_eq!(out["refresh"]["disabled"], json!(false), "{out}");
    for notify in [fixture("rotation-overdue-notify"), fixture("healthy-no-rotation")] {
        let out = argocd::run(&discovery, "discovery.lua", &notify).unwrap();
        assert_eq!(out["rotate"]["disabled"], json!(true), "{out}");
        assert_eq!(out["refresh"]["disabled"], json!(false), "{out}");
    }
}

/// Runs an action and checks it changed nothing but `annotation`; returns the annotation's new value.
fn act(action: &str, obj: &Value, annotation: &str) -> (Value, String) {
    let script = argocd::script(&format!("actions/{action}/action.lua"));
    let out = argocd::run(&script, "action.lua", obj).unwrap();
    let value = out["metadata"]["annotations"][annotation]
        .as_str()
        .unwrap_or_else(|| panic!("{action}: no {annotation} in {out}"))
        .to_string();
    let mut rest = out.clone();
    let mut before = obj.clone();
    rest["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(annotation);
    if let Some(a) = before["metadata"].get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove(annotation);
    }
    if before["metadata"].get("annotations").is_none() {
        before["metadata"]["annotations"] = json!({});
    }
    assert_eq!(rest, before, "{action} changed more than {annotation}");
    (out, value)
}

#[test]
fn rotate_sets_a_new_reason_each_time() {
    let obj = fixture("healthy");
    assert!(obj["metadata"].get("annotations").is_none());
    let (once, first) = act("rotate", &obj, "keyward.dev/rotate-now");
    // "argocd rotate 2026-11-29T07:01:02Z"
    let ts = first.strip_prefix("argocd rotate ").unwrap();
    assert_eq!(ts.len(), 20, "{first}");
    assert!(ts.ends_with('Z') && &ts[10..11] == "T", "{first}");
    // Twice in a row (within one second too): keyward rotates once per distinct reason, so each differs.
    let (twice, second) = act("rotate", &once, "keyward.dev/rotate-now");
    assert_ne!(first, second);
    let (_, third) = act("rotate", &twice, "keyward.dev/rotate-now");
    assert_ne!(second, third);
    // Other annotations stay.
    let mut annotated = obj.clone();
    annotated["metadata"]["annotations"] = json!({"team": "platform"});
    let (out, _) = act("rotate", &annotated, "keyward.dev/rotate-now");
    assert_eq!(out["metadata"]["annotations"]["team"], "platform");
}

#[test]
fn refresh_sets_a_new_request_each_time() {
    let obj = fixture("healthy");
    let (once, first) = act("refresh", &obj, "keyward.dev/refresh-now");
    assert!(first.starts_with("argocd "), "{first}");
    let (_, second) = act("refresh", &once, "keyward.dev/refresh-now");
    assert_ne!(first, second);
}

/// The argocd-cm snippet in docs/argocd.md holds these very scripts.
#[test]
fn docs_carry_the_scripts() {
    let doc = std::fs::read_to_string(support::repo().join("docs/argocd.md")).unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block in docs/argocd.md") + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let cm: Value = serde_saphyr::from_str(&doc[start..end]).unwrap();
    let data = &cm["data"];
    assert_eq!(
        data["resource.customizations.health.keyward.dev_ManagedSecret"]
            .as_str()
            .unwrap(),
        argocd::script("health.lua")
    );
    let actions: Value = serde_saphyr::from_str(
        data["resource.customizations.actions.keyward.dev_ManagedSecret"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        actions["discovery.lua"].as_str().unwrap(),
        argocd::script("actions/discovery.lua")
    );
    let defs = actions["definitions"].as_array().unwrap();
    let names: Vec<&str> = defs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rotate", "refresh"]);
    for d in defs {
        let name = d["name"].as_str().unwrap();
        assert_eq!(
            d["action.lua"].as_str().unwrap(),
            argocd::script(&format!("actions/{name}/action.lua")),
            "{name}"
        );
    }
}
