//! The operations commands (`import`, `report`, `rotate`, `status`) as users run them: the built binary against
//! the real API server, with ManagedSecret statuses written directly through the status subresource (no
//! keyward process runs here), and once through the real kubectl as the `kubectl keyward` plugin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output, Stdio};

use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::events::v1::Event;
use keyward::api::{ManagedSecret, ROTATE_NOW_ANNOTATION};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestNs, cluster, install_crd};

/// Runs the built keyward with the test cluster as the current kubeconfig.
fn keyward(args: &[&str]) -> Output {
    keyward_with(args, None)
}

fn keyward_with(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env_remove("NO_COLOR")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run keyward");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A ManagedSecret with `rotation` (a JSON object, or null for none).
async fn create(ns: &TestNs, name: &str, rotation: Value) -> ManagedSecret {
    let mut spec = json!({
        "source": {"esc": {"environment": "acme/app/prod", "path": format!("app.{}", name.replace('-', "_"))}},
        "target": {"key": name.to_uppercase().replace('-', "_")},
    });
    if !rotation.is_null() {
        spec["rotation"] = rotation;
    }
    let ms: ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    ns.api::<ManagedSecret>()
        .create(&PostParams::default(), &ms)
        .await
        .unwrap()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": (Timestamp::now() - 1.hour()).to_string(),
    })
}

/// Writes `status` through the status subresource, as keyward would.
async fn set_status(ns: &TestNs, name: &str, status: Value) {
    ns.api::<ManagedSecret>()
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
        .await
        .unwrap();
}

fn days_ago(n: i64) -> String {
    (Timestamp::now() - (n * 24).hours()).to_string()
}

fn days_ahead(n: i64) -> String {
    (Timestamp::now() + (n * 24).hours()).to_string()
}

/// One ManagedSecret per report state, with the statuses keyward would write for it.
async fn five_states(ns: &TestNs) {
    create(ns, "ok-key", json!({"category": "apiKey"})).await;
    set_status(
        ns,
        "ok-key",
        json!({
            "conditions": [condition("Ready", "True", "Synced", "in step"), condition("RotationDue", "False", "NotDue", "")],
            "lastRotationTime": days_ago(10), "nextRotationTime": days_ahead(80),
            "consumers": [{"kind": "Deployment", "name": "api", "state": "Restarted"},
                          {"kind": "Deployment", "name": "worker", "state": "Restarted"}],
        }),
    )
    .await;
    create(
        ns,
        "due-password",
        json!({"category": "database", "strategy": "Generate"}),
    )
    .await;
    set_status(
        ns,
        "due-password",
        json!({
            "conditions": [condition("Ready", "True", "Synced", "in step"), condition("RotationDue", "True", "Due", "rotating")],
            "lastRotationTime": days_ago(61), "nextRotationTime": days_ago(1),
        }),
    )
    .await;
    create(ns, "overdue-token", json!({"category": "lowRisk"})).await;
    set_status(
        ns,
        "overdue-token",
        json!({
            "conditions": [condition("Ready", "True", "Synced", "in step"),
                           condition("RotationDue", "True", "Due", "due"),
                           condition("RotationOverdue", "True", "Overdue", "200 days old, policy 180d")],
            "lastRotationTime": days_ago(200), "nextRotationTime": days_ago(20),
            "rotation": {"lastReason": "scheduled"},
        }),
    )
    .await;
    create(ns, "failing-key", json!({"period": "45d"})).await;
    set_status(
        ns,
        "failing-key",
        json!({
            "conditions": [condition("Ready", "False", "SourceNotFound", "ESC has no property app.failing_key")],
            "consumers": [{"kind": "Deployment", "name": "api", "state": "Restarted"},
                          {"kind": "StatefulSet", "name": "db", "state": "Failed"}],
        }),
    )
    .await;
    create(ns, "no-policy", Value::Null).await;
}

fn by_name(rows: &Value) -> std::collections::BTreeMap<String, Value> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[tokio::test]
async fn report_in_three_formats_with_exit_codes() {
    let ns = TestNs::new("report").await;
    install_crd(&ns.client).await;
    five_states(&ns).await;

    let json_out = keyward(&["report", "-n", &ns.name, "-o", "json"]);
    assert_eq!(json_out.status.code(), Some(2), "{}", show(&json_out));
    let rows: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let rows = by_name(&rows);
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|(k, v)| (k.as_str(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("due-password", "DUE"),
            ("failing-key", "FAILING"),
            ("no-policy", "NO-POLICY"),
            ("ok-key", "OK"),
            ("overdue-token", "OVERDUE"),
        ]
    );
    assert_eq!(rows["ok-key"]["age"], "10d");
    assert_eq!(rows["ok-key"]["period"], "90d");
    assert_eq!(
        rows["ok-key"]["consumers"],
        json!({"restarted": 2, "total": 2, "failed": 0})
    );
    assert_eq!(
        rows["failing-key"]["consumers"],
        json!({"restarted": 1, "total": 2, "failed": 1})
    );
    assert_eq!(
        rows["failing-key"]["message"],
        "SourceNotFound: ESC has no property app.failing_key"
    );
    assert_eq!(rows["failing-key"]["period"], "45d");
    assert_eq!(rows["overdue-token"]["period"], "180d");
    assert_eq!(rows["overdue-token"]["lastReason"], "scheduled");
    assert_eq!(rows["no-policy"]["due"], Value::Null);
    assert_eq!(rows["due-password"]["source"], "acme/app/prod:app.due_password");

    let table = keyward(&["report", "-n", &ns.name]);
    assert_eq!(table.status.code(), Some(2), "{}", show(&table));
    let t = text(&table.stdout);
    let header = t.lines().next().unwrap();
    for col in [
        "SECRET",
        "SOURCE",
        "AGE",
        "PERIOD",
        "DUE",
        "STATE",
        "LAST ROTATION",
        "CONSUMERS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(t.contains(&format!("{}/overdue-token", ns.name)), "{t}");
    assert!(t.contains("1/2 (1 failed)"), "{t}");
    assert!(!t.contains('\x1b'), "no colour when piped: {t:?}");
    assert!(text(&table.stderr).contains("5 ManagedSecrets: 1 OVERDUE, 1 FAILING, 1 DUE, 1 OK, 1 NO-POLICY"));

    let csv = keyward(&["report", "-n", &ns.name, "-o", "csv"]);
    assert_eq!(csv.status.code(), Some(2), "{}", show(&csv));
    let c = text(&csv.stdout);
    let lines: Vec<&str> = c.lines().collect();
    assert_eq!(lines[0], keyward::ops::report::CSV_HEADER);
    assert_eq!(lines.len(), 6);
    let failing = lines.iter().find(|l| l.contains(",failing-key,")).unwrap();
    assert!(
        failing.ends_with(",FAILING,,,1,2,1,SourceNotFound: ESC has no property app.failing_key"),
        "{failing}"
    );

    // All namespaces: ours are among them.
    let all = keyward(&["report", "-A", "-o", "json"]);
    assert!(matches!(all.status.code(), Some(0 | 2)), "{}", show(&all));
    let all: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["namespace"] == ns.name.as_str())
            .count()
            == 5
    );

    // Without the overdue one, the gate passes.
    ns.api::<ManagedSecret>()
        .delete("overdue-token", &DeleteParams::default())
        .await
        .unwrap();
    let after = keyward(&["report", "-n", &ns.name, "-o", "csv"]);
    assert_eq!(after.status.code(), Some(0), "{}", show(&after));
    assert!(!text(&after.stdout).contains("overdue-token"));
}

#[tokio::test]
async fn report_connection_flags_and_empty_namespaces() {
    let ns = TestNs::new("report-empty").await;
    install_crd(&ns.client).await;
    let empty = keyward(&["report", "-n", &ns.name]);
    assert_eq!(empty.status.code(), Some(0), "{}", show(&empty));
    assert_eq!(text(&empty.stdout), "");
    assert!(text(&empty.stderr).contains(&format!("No ManagedSecrets found in namespace {}.", ns.name)));
    let json_empty = keyward(&["report", "-n", &ns.name, "-o", "json"]);
    assert_eq!(text(&json_empty.stdout).trim(), "[]");

    // --kubeconfig wins over KUBECONFIG, and --context picks a context by name.
    let kubeconfig = cluster().kubeconfig.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "report",
            "-n",
            &ns.name,
            "--kubeconfig",
            kubeconfig,
            "--context",
            "keyward-dev",
        ])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let bad = keyward(&["report", "-n", &ns.name, "--context", "no-such-context"]);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    assert!(text(&bad.stderr).contains("kubeconfig"), "{}", show(&bad));
}

/// Creates an events.k8s.io/v1 Event about `kind/name`.
async fn event(ns: &TestNs, kind: &str, name: &str, reason: &str, note: &str, type_: &str) {
    let e: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "test-"},
        "eventTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
        "reportingController": "keyward.dev/keyward",
        "reportingInstance": "test",
        "action": "Reconcile",
        "type": type_,
        "reason": reason,
        "note": note,
        "regarding": {"apiVersion": "keyward.dev/v1alpha1", "kind": kind, "name": name, "namespace": ns.name},
    }))
    .unwrap();
    ns.api::<Event>().create(&PostParams::default(), &e).await.unwrap();
}

#[tokio::test]
async fn status_shows_conditions_rotation_consumers_and_events() {
    let ns = TestNs::new("status").await;
    install_crd(&ns.client).await;
    create(
        &ns,
        "db-password",
        json!({"category": "database", "strategy": "Generate"}),
    )
    .await;
    set_status(
        &ns,
        "db-password",
        json!({
            "conditions": [condition("Ready", "False", "SourceUnavailable", "ESC answered 503; retrying in 30s"),
                           condition("Synced", "True", "Synced", "revision 7")],
            "source": {"revision": 7, "valueHash": "hmac-sha256:abc"},
            "lastRotationTime": days_ago(3), "nextRotationTime": days_ahead(57),
            "rotation": {"lastReason": "scheduled"},
            "consumers": [{"kind": "Deployment", "name": "api", "secretsHash": "h1", "state": "Waiting"}],
        }),
    )
    .await;
    event(
        &ns,
        "ManagedSecret",
        "db-password",
        "SourceUnavailable",
        "ESC answered 503",
        "Warning",
    )
    .await;
    event(
        &ns,
        "ManagedSecret",
        "db-password",
        "Synced",
        "wrote revision 7",
        "Normal",
    )
    .await;
    event(
        &ns,
        "ManagedSecret",
        "other",
        "Synced",
        "about another object",
        "Normal",
    )
    .await;

    let out = keyward(&["status", "db-password", "-n", &ns.name]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = text(&out.stdout);
    for want in [
        &format!("Name:           {}/db-password", ns.name) as &str,
        "ESC acme/app/prod, path app.db_password",
        "Revision:       7",
        "Secret db-password, key DB_PASSWORD",
        "SourceUnavailable",
        "ESC answered 503; retrying in 30s",
        "Synced",
        "database (60d), strategy Generate",
        "reason: scheduled",
        "State:        FAILING",
        "Deployment   api    Waiting",
        "Warning   SourceUnavailable   ManagedSecret/db-password   ESC answered 503",
        "wrote revision 7",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert!(!s.contains("about another object"), "{s}");
    // Newest last.
    assert!(
        s.find("ESC answered 503\n").unwrap() < s.find("wrote revision 7").unwrap(),
        "{s}"
    );

    let missing = keyward(&["status", "nope", "-n", &ns.name]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains(&format!("ManagedSecret {}/nope not found", ns.name)));
}

#[tokio::test]
async fn rotate_requests_once_per_reason_and_wait_times_out_naming_the_step() {
    let ns = TestNs::new("rotate").await;
    install_crd(&ns.client).await;
    create(&ns, "api-key", json!({"category": "apiKey", "strategy": "Generate"})).await;
    let api = ns.api::<ManagedSecret>();
    let annotation = |ms: &ManagedSecret| ms.annotations().get(ROTATE_NOW_ANNOTATION).cloned();

    let out = keyward(&[
        "rotate",
        "api-key",
        "-n",
        &ns.name,
        "--reason",
        "leaked in #incident-42",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("rotation requested"), "{}", show(&out));
    assert_eq!(
        annotation(&api.get("api-key").await.unwrap()).as_deref(),
        Some("leaked in #incident-42")
    );

    let empty = keyward(&["rotate", "api-key", "-n", &ns.name, "--reason", "  "]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        text(&empty.stderr).contains("--reason must say why"),
        "{}",
        show(&empty)
    );

    // keyward handled it (as its status would say): the same reason again is refused, unless forced.
    set_status(
        &ns,
        "api-key",
        json!({"rotation": {"handledRequest": "leaked in #incident-42"}}),
    )
    .await;
    let again = keyward(&[
        "rotate",
        "api-key",
        "-n",
        &ns.name,
        "--reason",
        "leaked in #incident-42",
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", show(&again));
    assert!(
        text(&again.stderr).contains("already rotated for reason"),
        "{}",
        show(&again)
    );
    let forced = keyward(&[
        "rotate",
        "api-key",
        "-n",
        &ns.name,
        "--reason",
        "leaked in #incident-42",
        "--force",
    ]);
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    let value = annotation(&api.get("api-key").await.unwrap()).unwrap();
    assert!(
        value.starts_with("leaked in #incident-42 (") && value.ends_with("Z)"),
        "{value}"
    );

    // No keyward runs here: --wait stops at its timeout and says which step it was waiting for.
    let started = std::time::Instant::now();
    let wait = keyward(&[
        "rotate",
        "api-key",
        "-n",
        &ns.name,
        "--reason",
        "second leak",
        "--wait",
        "--timeout",
        "3s",
    ]);
    assert_eq!(wait.status.code(), Some(1), "{}", show(&wait));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        text(&wait.stdout).contains("requested (keyward.dev/rotate-now=\"second leak\")"),
        "{}",
        show(&wait)
    );
    assert!(
        text(&wait.stderr)
            .contains("timed out after 3s waiting for: the rotation to start (status.rotation.inProgress)"),
        "{}",
        show(&wait)
    );

    // keyward would do nothing with a request on an object without a policy, and cannot be waited for under
    // Notify (it records the request only): both are said before anything is set.
    create(&ns, "plain", Value::Null).await;
    let plain = keyward(&["rotate", "plain", "-n", &ns.name, "--reason", "x"]);
    assert_eq!(plain.status.code(), Some(1), "{}", show(&plain));
    assert!(
        text(&plain.stderr).contains("has no rotation policy"),
        "{}",
        show(&plain)
    );
    create(&ns, "notify-key", json!({"category": "apiKey"})).await;
    let notify = keyward(&["rotate", "notify-key", "-n", &ns.name, "--reason", "x", "--wait"]);
    assert_eq!(notify.status.code(), Some(1), "{}", show(&notify));
    assert!(text(&notify.stderr).contains("strategy Notify"), "{}", show(&notify));
    for name in ["plain", "notify-key"] {
        assert_eq!(annotation(&api.get(name).await.unwrap()), None);
    }
    let notify = keyward(&["rotate", "notify-key", "-n", &ns.name, "--reason", "x"]);
    assert_eq!(notify.status.code(), Some(0), "{}", show(&notify));
    assert!(
        text(&notify.stderr).contains("must be replaced in ESC by hand"),
        "{}",
        show(&notify)
    );
    assert_eq!(annotation(&api.get("notify-key").await.unwrap()).as_deref(), Some("x"));

    let missing = keyward(&["rotate", "nope", "-n", &ns.name, "--reason", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not found"), "{}", show(&missing));
}

#[tokio::test]
async fn kubectl_runs_it_as_a_plugin() {
    let ns = TestNs::new("plugin").await;
    install_crd(&ns.client).await;
    create(&ns, "old-token", json!({"category": "apiKey"})).await;
    set_status(
        &ns,
        "old-token",
        json!({"conditions": [condition("RotationOverdue", "True", "Overdue", "too old")]}),
    )
    .await;

    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyward"), bin.path().join("kubectl-keyward")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| {
        Command::new(support::tool("kubectl"))
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .output()
            .unwrap()
    };
    let out = kubectl(&["keyward", "report", "-n", &ns.name]);
    // kubectl hands the plugin's exit code through: 2, something is overdue.
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let t = text(&out.stdout);
    assert!(t.starts_with("SECRET"), "{t}");
    assert!(
        t.contains(&format!("{}/old-token", ns.name)) && t.contains("OVERDUE"),
        "{t}"
    );

    let help = kubectl(&["keyward", "report", "--help"]);
    assert!(
        text(&help.stdout).contains("Usage: kubectl keyward report"),
        "{}",
        show(&help)
    );
    let list = kubectl(&["plugin", "list"]);
    assert!(text(&list.stdout).contains("kubectl-keyward"), "{}", show(&list));
}

/// Lines of `kubectl apply` output that report an object applied in a server-side dry run.
fn applied(o: &Output) -> usize {
    text(&o.stdout)
        .lines()
        .filter(|l| l.contains("serverside-applied (server dry run)"))
        .count()
}

#[tokio::test]
async fn imported_objects_are_accepted_by_the_api_server() {
    let ns = TestNs::new("import").await;
    install_crd(&ns.client).await;
    let map = support::repo().join("examples/secret_map.yaml");
    let env = "ai-cherry/sophia/lambda-labs-production";

    let out = keyward(&[
        "import",
        map.to_str().unwrap(),
        "--environment",
        env,
        "--namespace",
        &ns.name,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stream = text(&out.stdout);
    assert_eq!(stream.matches("kind: ManagedSecret").count(), 14);
    assert!(
        text(&out.stderr).contains("1 without a rotation policy"),
        "{}",
        show(&out)
    );

    let kubectl_apply = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(support::tool("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&cluster().kubeconfig)
            .args(["apply", "--server-side", "--dry-run=server"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    let applied_stream = kubectl_apply(&["-f", "-"], Some(&stream));
    assert!(applied_stream.status.success(), "{}", show(&applied_stream));
    assert_eq!(applied(&applied_stream), 14, "{}", show(&applied_stream));

    // Overrides that turn on Generate, name consumers and set a period are accepted too; --out writes a
    // kustomization the API server takes as it is.
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(
        &overrides,
        "OPENAI_API_KEY: {strategy: Generate, gracePeriod: 1h, refreshInterval: 15m, \
         consumers: {policy: Explicit, workloads: [{kind: Deployment, name: backend}]}}\n\
         SENTRY_DSN: {period: 180d}\nSNOWFLAKE_PASSWORD: {name: snowflake}\nGITHUB_TOKEN: {skip: true}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("managed-secrets");
    let out = keyward(&[
        "import",
        map.to_str().unwrap(),
        "-e",
        env,
        "-n",
        &ns.name,
        "--overrides",
        overrides.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out_dir.join("snowflake.yaml").exists() && !out_dir.join("github-token.yaml").exists());
    let applied_dir = kubectl_apply(&["-k", out_dir.to_str().unwrap()], None);
    assert!(applied_dir.status.success(), "{}", show(&applied_dir));
    assert_eq!(applied(&applied_dir), 13, "{}", show(&applied_dir));
}

#[test]
fn a_malformed_map_is_reported_by_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let map = support::repo().join("tests/fixtures/secret_map_malformed.yaml");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "import",
            map.to_str().unwrap(),
            "--environment",
            "acme/app/prod",
            "--namespace",
            "backend",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(&args)
            .output()
            .unwrap()
    };
    let out = run(&["--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("secret_map_malformed.yaml: 1 problem:\n  line 3: not valid YAML"),
        "{}",
        show(&out)
    );
    assert!(!out_dir.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary directory left behind"
    );
    // To stdout: nothing either.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());

    // A map whose YAML is fine but whose entries are not: every one is listed.
    let mistakes = support::repo().join("tests/fixtures/secret_map_mistakes.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "import",
            mistakes.to_str().unwrap(),
            "-e",
            "acme/app/prod",
            "-n",
            "backend",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    for line in ["line 3:", "line 4:", "line 5:", "line 6:", "line 7:"] {
        assert!(e.contains(line), "{line} in {e}");
    }
    assert!(out.stdout.is_empty());
}

/// `keyward run` against `kubeconfig` with `args`, expected to stop by itself within 60 s; its output.
fn run_until_exit(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("run")
        .args(args)
        // Free ports, so that a keyward that does start cannot collide with another test's.
        .arg(format!("--http-listen={}", support::free_port()))
        .arg(format!("--webhook-listen={}", support::free_port()))
        .arg(format!("--audit-log={}", dir.path().join("audit.log").display()))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAMESPACE")
        .env_remove("KEYWARD_ESC_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "keyward run {args:?} did not stop: {}",
                show(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Exit 1 and exactly `message` as the last line on stderr, with no debug dump of an API error anywhere.
fn refused_with(out: &Output, message: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert_eq!(stderr.lines().last(), Some(message), "{}", show(out));
    for dump in ["ErrorResponse", "ApiError", "Status {", "details:"] {
        assert!(
            !stderr.contains(dump) && !text(&out.stdout).contains(dump),
            "{dump}: {}",
            show(out)
        );
    }
}

/// What a new user meets first (issue 14): no CRDs in the cluster, keyward's namespace missing, an ESC URL
/// given without ESC's API path, no access policy at all. Each is one line with its fix, exit code 1.
#[tokio::test]
async fn first_run_errors_say_what_to_do_in_one_line() {
    // A cluster of its own, as a new user's is: nothing installed.
    let bare = support::fresh_cluster();
    refused_with(
        &run_until_exit(&bare.kubeconfig, &["--namespace=default"]),
        "keyward: the ManagedSecret CRD (managedsecrets.keyward.dev) is not installed in this cluster: install the \
         CRDs first: kubectl apply --server-side -f crds/ (or: keyward crd | kubectl apply --server-side -f -)",
    );
    drop(bare);

    let ns = TestNs::new("cli-first").await;
    install_crd(&ns.client).await;
    let kubeconfig = &cluster().kubeconfig;
    refused_with(
        &run_until_exit(kubeconfig, &["--namespace=keyward-nowhere"]),
        "keyward: namespace keyward-nowhere (keyward's own, for its hash key and lease) does not exist: create it \
         (kubectl create namespace keyward-nowhere) or pass --namespace with an existing one",
    );
    refused_with(
        &run_until_exit(
            kubeconfig,
            &["--namespace", &ns.name, "--esc-url=https://api.pulumi.com"],
        ),
        "keyward: --esc-url https://api.pulumi.com has no path, but ESC's API is under /api/esc: use --esc-url \
         https://api.pulumi.com/api/esc",
    );
    refused_with(
        &run_until_exit(kubeconfig, &["--namespace", &ns.name, "--watch-access-policies=false"]),
        "keyward: no access policy: with --watch-access-policies=false every ManagedSecret would be refused; pass \
         --access-policy-file FILE, or leave AccessPolicy objects on (--watch-access-policies=true)",
    );
    // A shard selector the API server refuses (issue 16): one line naming it and how to write one.
    let out = run_until_exit(kubeconfig, &["--namespace", &ns.name, "--shard-selector", "shard key"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("keyward: --shard-selector \"shard key\" is not a label selector the API server accepts (")
            && last.ends_with("e.g. sharding.fluxcd.io/key=shard-1 or !sharding.fluxcd.io/key"),
        "{}",
        show(&out)
    );
    assert!(
        !stderr.contains("ErrorResponse") && !stderr.contains("Status {"),
        "{}",
        show(&out)
    );
}

/// The CLI as a released tool: usage errors exit 64 (not `report`'s 2), help and --version 0, completion scripts
/// for the usual shells, and `version` with the cluster's part.
#[tokio::test]
async fn usage_errors_completion_and_version() {
    let bin = env!("CARGO_BIN_EXE_keyward");
    let code = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    for args in [
        &["--no-such-flag"][..],
        &["report", "--format", "xml"],
        &["no-such-command"],
        &[],
    ] {
        let out = code(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", show(&out));
        assert!(text(&out.stderr).contains("Usage:"), "{args:?}: {}", show(&out));
    }
    for args in [&["--help"][..], &["--version"], &["help", "report"]] {
        assert_eq!(code(args).status.code(), Some(0), "{args:?}");
    }
    assert!(text(&code(&["--help"]).stdout).contains("64 usage error"));
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef keyward"),
        ("fish", "complete -c keyward"),
    ] {
        let out = code(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["report", "rotate", "status", "import"] {
            assert!(script.contains(sub), "{shell} completes {sub}");
        }
    }

    let out = keyward(&["version"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines[0], format!("client: keyward {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with("kubernetes: v1."), "{lines:?}");
    assert!(lines[2].starts_with("operator: "), "{lines:?}");
    // No cluster: the client's version still, and why the rest is missing.
    let out = Command::new(bin)
        .args(["version", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("client: keyward ") && said.contains("cluster: unreachable"),
        "{said}"
    );
}
