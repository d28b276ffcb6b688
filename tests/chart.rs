//! The Helm chart (charts/keyward): lint and render; every rendered object accepted by the real API server
//! (server-side dry run); installed into the control plane, its ServiceAccount's RBAC is enough for `keyward
//! run` started with the chart's own arguments (sync, restart, Events, hash key) and refuses what the chart does
//! not grant (403); the alerts pass `promtool check rules` and `promtool test rules`; the dashboard and alerts
//! name only metrics from charts/keyward/metrics.txt, and keyward serves nothing that is not listed there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use keyward::api::{AccessPolicy, ManagedSecret, TARGET_TYPES};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{Keyward, TestNs, cluster_with_controllers, eventually};

/// Flags the chart renders that `keyward run` may not have yet (none now: the list stays for the next time the
/// chart runs ahead of the binary).
const PENDING_FLAGS: &[&str] = &[];

fn chart() -> PathBuf {
    support::repo().join("charts/keyward")
}

fn chart_arg() -> String {
    chart().display().to_string()
}

/// helm, with its config, cache and data directories private to this test binary.
fn helm(args: &[&str]) -> Output {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap()).path();
    Command::new(support::tool("helm"))
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("run helm")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values_full() -> String {
    chart().join("ci/values-full.yaml").display().to_string()
}

/// The Kubernetes version of the test control plane (tools/kube/go.mod), for `helm template --kube-version`:
/// without it Helm assumes 1.20, below the chart's kubeVersion.
fn kube_version() -> String {
    let go_mod = std::fs::read_to_string(support::repo().join("tools/kube/go.mod")).unwrap();
    go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("k8s.io/kubernetes in tools/kube/go.mod")
        .to_string()
}

/// The Prometheus Operator APIs, as `helm template` arguments: a cluster where they are served.
const MONITORING_APIS: [&str; 4] = [
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
];

/// `helm template` into namespace `ns` with `extra` arguments, CRDs included, for a cluster of the test
/// control plane's version; every object as JSON.
fn render(ns: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart_arg();
    let version = kube_version();
    let mut args = vec![
        "template",
        "kw",
        chart.as_str(),
        "--namespace",
        ns,
        "--include-crds",
        "--kube-version",
        &version,
    ];
    args.extend(extra);
    let text = ok(helm(&args), "helm template");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "want one {kind}, got {}", found.len());
    found[0]
}

fn container_args(objects: &[Value]) -> Vec<String> {
    one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn flag_name(arg: &str) -> &str {
    arg.split('=').next().unwrap_or(arg)
}

/// The long flags `keyward run --help` lists.
fn keyward_flags() -> BTreeSet<String> {
    let out = ok(
        Command::new(support::keyward_bin())
            .args(["run", "--help"])
            .output()
            .unwrap(),
        "keyward run --help",
    );
    out.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '<' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

#[test]
fn chart_crd_is_the_generated_crd() {
    for file in ["managedsecrets.keyward.dev.yaml", "accesspolicies.keyward.dev.yaml"] {
        let generated = std::fs::read(support::repo().join("crds").join(file)).unwrap();
        let shipped = std::fs::read(chart().join("crds").join(file)).unwrap();
        assert!(
            generated == shipped,
            "charts/keyward/crds/{file} differs from crds/: run `make generate`"
        );
    }
    let files: Vec<_> = std::fs::read_dir(chart().join("crds")).unwrap().collect();
    assert_eq!(files.len(), 2, "the chart ships exactly the generated CRDs");
}

#[test]
fn lint_and_render() {
    let chart = chart_arg();
    let full = values_full();
    ok(helm(&["lint", "--strict", &chart]), "helm lint (defaults)");
    ok(
        helm(&["lint", "--strict", &chart, "-f", &full]),
        "helm lint (values-full)",
    );

    // Defaults: cluster-wide, two replicas with leader election, restricted pod, the NetworkPolicy and the
    // admission policy on, no AccessPolicy (nothing granted).
    let objects = render("keyward-system", &[]);
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ])
    );
    // The NetworkPolicy: the metrics port from monitoring only; no webhook port while the webhook is off.
    let np = one(&objects, "NetworkPolicy");
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(ingress[0]["ports"][0]["port"], "http");
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    // keyward's own ClusterRole: not one of those aggregated to view/edit/admin for people.
    let cluster_role = *of_kind(&objects, "ClusterRole")
        .iter()
        .find(|r| r["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] != "true")
        .expect("keyward's own ClusterRole");
    let grants = |resource: &str| -> Vec<String> {
        cluster_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
            })
            .collect()
    };
    assert_eq!(grants("managedsecrets"), ["get", "list", "watch", "patch"]);
    assert_eq!(grants("accesspolicies"), ["get", "list", "watch"]);
    assert_eq!(grants("namespaces"), ["list", "watch"]);
    let d = one(&objects, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["fsGroup"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"},
               {"name": "webhook", "containerPort": 8081, "protocol": "TCP"}])
    );
    for r in ["requests", "limits"] {
        assert!(c["resources"][r]["cpu"].is_string() && c["resources"][r]["memory"].is_string());
    }
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), &e["valueFrom"]["fieldRef"]["fieldPath"]))
        .collect();
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert!(pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
    assert_eq!(one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    let args = container_args(&objects);
    assert!(args.contains(&"--leader-election".to_string()), "{args:?}");
    assert!(
        args.contains(&"--lease-namespace=keyward-system".to_string()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--watch-namespace")), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--access-policy-file")), "{args:?}");

    // Everything on: namespaced mode (cluster-wide, only reading AccessPolicies), tokens as files, policies
    // as AccessPolicy objects.
    let mut full_args = vec!["-f", full.as_str()];
    full_args.extend(MONITORING_APIS);
    let objects = render("keyward-system", &full_args);
    // The operator's own ClusterRole, beside the two aggregated to view/edit/admin for people.
    let cluster_roles = of_kind(&objects, "ClusterRole");
    let (aggregated, own): (Vec<&Value>, Vec<&Value>) = cluster_roles
        .iter()
        .partition(|r| r["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true");
    assert_eq!((own.len(), aggregated.len()), (1, 2));
    assert_eq!(
        own[0]["rules"],
        json!([{"apiGroups": ["keyward.dev"], "resources": ["accesspolicies"], "verbs": ["get", "list", "watch"]}])
    );
    assert_eq!(of_kind(&objects, "ClusterRoleBinding").len(), 1);
    let roles: BTreeSet<&str> = of_kind(&objects, "Role")
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(roles, BTreeSet::from(["apps", "keyward-system"]));
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        one(&objects, kind);
    }
    let maps = of_kind(&objects, "ConfigMap");
    let dashboard = maps
        .iter()
        .find(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap");
    let json: Value = serde_json::from_str(dashboard["data"]["keyward.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "keyward-overview");
    assert!(
        maps.iter().all(|m| m["data"].get("policy.yaml").is_none()),
        "no policy file"
    );
    let policy = one(&objects, "AccessPolicy");
    assert_eq!(policy["metadata"]["name"], "kw-keyward-apps");
    assert_eq!(policy["spec"]["namespaces"]["names"], json!(["apps", "team-*"]));
    // The webhook on its own port, reachable only from the ingress controller.
    let np = one(&objects, "NetworkPolicy");
    let webhook_rule = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == "webhook")
        .expect("an ingress rule for the webhook port");
    assert_eq!(
        webhook_rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    let ports = &one(&objects, "Service")["spec"]["ports"];
    assert_eq!(
        ports[1],
        json!({"name": "webhook", "port": 9443, "targetPort": "webhook", "protocol": "TCP"})
    );
    let args = container_args(&objects);
    for want in [
        "--watch-namespace=apps",
        "--esc-token-file=/var/run/secrets/keyward/esc/token",
        "--github-token-file=/var/run/secrets/keyward/github/token",
        "--hash-key-file=/var/run/secrets/keyward/hash-key/key",
        "--webhook-listen=0.0.0.0:9443",
        "--webhook-replay-window-seconds=3600",
        "--webhook-secret-file=/var/run/secrets/keyward/webhook/secret",
        "--audit-log=/var/log/keyward/audit.log",
        "--lease-name=keyward-leader",
        "--restart-debounce-seconds=30",
        "--max-concurrent-restarts=3",
        "--max-concurrent-restarts-per-namespace=1",
        "--rollout-deadline-seconds=900",
        "--log-format=text",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    let windows = args.iter().find_map(|a| a.strip_prefix("--restart-windows=")).unwrap();
    let windows: Value = serde_json::from_str(windows).unwrap();
    assert_eq!(windows[0]["timeZone"], "Europe/Berlin");

    // The schema refuses unknown and malformed values; two replicas need a leader.
    for (set, want) in [
        ("bogus=1", "additional properties"),
        ("logFormat=xml", "logFormat"),
        ("esc.tokenSecret.bogus=1", "additional properties"),
        (
            "replicaCount=2,leaderElection.enabled=false",
            "needs leaderElection.enabled",
        ),
        ("webhook.port=8080", "must differ from 8080"),
        (
            "accessPolicies[0].name=Bad_Name,accessPolicies[0].spec.x=1",
            "accessPolicies",
        ),
    ] {
        let out = helm(&[
            "template",
            "kw",
            &chart,
            "--kube-version",
            &kube_version(),
            "--set",
            set,
        ]);
        assert!(!out.status.success(), "--set {set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "--set {set}: {err}");
    }
}

/// What a user meets with the README's commands: ServiceMonitor and PrometheusRule only where their API is
/// served (the README's install enables both), the PodDisruptionBudget only when it cannot block a drain,
/// the image reference from registry/repository/tag/digest with `global.imageRegistry` over them, the
/// managed-by label on every object.
#[test]
fn the_chart_adapts_to_the_cluster_and_the_values() {
    let monitoring = [
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ];
    let kinds = |objects: &[Value]| -> BTreeSet<String> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let without = render("keyward-system", &monitoring);
    assert!(!kinds(&without).contains("ServiceMonitor") && !kinds(&without).contains("PrometheusRule"));
    let mut with_apis = monitoring.to_vec();
    with_apis.extend(MONITORING_APIS);
    let with = render("keyward-system", &with_apis);
    assert!(kinds(&with).contains("ServiceMonitor") && kinds(&with).contains("PrometheusRule"));

    let single = render(
        "keyward-system",
        &["--set", "replicaCount=1", "--set", "leaderElection.enabled=false"],
    );
    assert!(!kinds(&single).contains("PodDisruptionBudget"), "one replica, no PDB");
    assert!(kinds(&render("keyward-system", &[])).contains("PodDisruptionBudget"));

    let image = |extra: &[&str]| -> String {
        let objects = render("keyward-system", extra);
        one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(image(&[]), format!("ghcr.io/keyward-dev/keyward:{version}"));
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    assert_eq!(
        image(&[
            "--set",
            "global.imageRegistry=mirror.example:5000",
            "--set",
            &format!("image.digest={digest}")
        ]),
        format!("mirror.example:5000/keyward-dev/keyward:{version}@{digest}")
    );
    assert_eq!(
        image(&[
            "--set",
            "image.registry=",
            "--set",
            "image.repository=localhost/keyward",
            "--set",
            "image.tag=dev"
        ]),
        "localhost/keyward:dev"
    );
    let bad = helm(&[
        "template",
        "kw",
        &chart_arg(),
        "--kube-version",
        &kube_version(),
        "--set",
        "image.digest=latest",
    ]);
    assert!(!bad.status.success(), "a digest that is not sha256:<hex> is refused");

    for o in render("keyward-system", &[]) {
        if o["kind"] == "CustomResourceDefinition" {
            continue;
        }
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{}",
            o["kind"]
        );
    }
}

/// The chart as a dependency of an umbrella chart: Helm hands it `global` (refused before by the values schema),
/// and the umbrella's `global.imageRegistry` reaches the image.
#[test]
fn an_umbrella_chart_with_global_values_renders_it() {
    let dir = tempfile::tempdir().unwrap();
    let umbrella = dir.path().join("platform");
    std::fs::create_dir_all(&umbrella).unwrap();
    std::fs::write(
        umbrella.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: keyward\n    version: \
             {}\n    repository: file://{}\n",
            env!("CARGO_PKG_VERSION"),
            chart().display()
        ),
    )
    .unwrap();
    std::fs::write(
        umbrella.join("values.yaml"),
        "global:\n  imageRegistry: registry.corp.example\n  team: platform\nkeyward:\n  replicaCount: 3\n",
    )
    .unwrap();
    let path = umbrella.display().to_string();
    ok(helm(&["dependency", "build", &path]), "helm dependency build");
    ok(helm(&["lint", "--strict", &path]), "helm lint (umbrella)");
    let text = ok(
        helm(&["template", "platform", &path, "--kube-version", &kube_version()]),
        "helm template (umbrella)",
    );
    let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    let d = one(&objects, "Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!(
            "registry.corp.example/keyward-dev/keyward:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn rendered_flags_are_keyward_flags() {
    let known = keyward_flags();
    assert!(
        known.contains("--esc-url") && known.contains("--watch-namespace"),
        "{known:?}"
    );
    let full = values_full();
    for (what, objects) in [
        ("defaults", render("keyward-system", &[])),
        ("values-full", render("keyward-system", &["-f", &full])),
    ] {
        let args = container_args(&objects);
        assert_eq!(args[0], "run");
        for arg in &args[1..] {
            let flag = flag_name(arg);
            if known.contains(flag) {
                continue;
            }
            assert!(
                PENDING_FLAGS.contains(&flag),
                "{what}: the chart renders {arg}, which `keyward run` does not know"
            );
            eprintln!("note: {what}: {flag} is not in this keyward yet (pending)");
        }
    }
}

/// The rendered PrometheusRule's groups.
fn rule_groups() -> Value {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend(MONITORING_APIS);
    let objects = render("keyward-system", &args);
    one(&objects, "PrometheusRule")["spec"].clone()
}

/// The dashboard's expressions, by panel title (several for one panel in order).
fn dashboard_exprs() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(chart().join("dashboards/keyward.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut panels: Vec<Value> = dashboard["panels"].as_array().unwrap().clone();
    while let Some(p) = panels.pop() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap().to_string();
            out.entry(title)
                .or_default()
                .push(t["expr"].as_str().unwrap().to_string());
        }
        panels.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

/// The dashboard counts each ManagedSecret once with the chart's two replicas: promtool evaluates its panels'
/// expressions over a scrape of two pods that both export the per-secret gauges (an older keyward, or both
/// replicas during a leader handover; keyward now serves them from the leader alone, which
/// `tests/leader.rs` checks). "Managed secrets" no longer adds the overdue count on top of the states.
#[test]
fn promtool_evaluates_the_dashboard_on_a_two_replica_scrape() {
    let exprs = dashboard_exprs();
    let expr = |title: &str| exprs[title][0].clone();
    let mut series = Vec::new();
    for pod in ["keyward-a", "keyward-b"] {
        for (state, n) in [("ready", 3), ("failing", 1), ("pending", 0), ("overdue", 1)] {
            series.push(
                json!({"series": format!("keyward_managed_secrets{{state=\"{state}\",pod=\"{pod}\"}}"),
                               "values": format!("{n}x5")}),
            );
        }
        for (secret, overdue, age) in [("ns/x", 1, 120), ("ns/y", 0, 10), ("ns/z", 0, 5), ("ns/w", 0, 1)] {
            series.push(
                json!({"series": format!("keyward_rotation_overdue{{secret_name=\"{secret}\",pod=\"{pod}\"}}"),
                               "values": format!("{overdue}x5")}),
            );
            series.push(
                json!({"series": format!("secret_rotation_age_days{{secret_name=\"{secret}\",pod=\"{pod}\"}}"),
                               "values": format!("{age}x5")}),
            );
        }
    }
    let one = |v: f64| json!([{"labels": "{}", "value": v}]);
    let by_secret = |values: &[(&str, f64)]| -> Value {
        values
            .iter()
            .map(|(s, v)| json!({"labels": format!("{{secret_name=\"{s}\"}}"), "value": v}))
            .collect()
    };
    let ages = by_secret(&[("ns/x", 120.0), ("ns/y", 10.0), ("ns/z", 5.0), ("ns/w", 1.0)]);
    let states: Value = [("ready", 3), ("failing", 1), ("pending", 0), ("overdue", 1)]
        .iter()
        .map(|(s, v)| json!({"labels": format!("{{state=\"{s}\"}}"), "value": v}))
        .collect();
    let checks = json!([
        {"expr": expr("Managed secrets"), "eval_time": "2m", "exp_samples": one(4.0)},
        {"expr": expr("Failing"), "eval_time": "2m", "exp_samples": one(1.0)},
        {"expr": expr("Rotation overdue"), "eval_time": "2m", "exp_samples": one(1.0)},
        {"expr": expr("Rotation compliance"), "eval_time": "2m", "exp_samples": one(0.75)},
        {"expr": expr("Overdue secrets"), "eval_time": "2m", "exp_samples": by_secret(&[("ns/x", 1.0)])},
        {"expr": expr("Oldest secrets"), "eval_time": "2m", "exp_samples": ages},
        {"expr": expr("Secret age histogram"), "eval_time": "2m", "exp_samples": ages},
        {"expr": expr("ManagedSecrets by state"), "eval_time": "2m", "exp_samples": states},
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.yaml"), "groups: []\n").unwrap();
    let test = json!({
        "rule_files": ["none.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]
    });
    let file = dir.path().join("dashboard-test.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&test).unwrap()).unwrap();
    let out = ok(
        Command::new(support::tool("promtool"))
            .args(["test", "rules"])
            .arg(&file)
            .output()
            .unwrap(),
        "promtool test rules (dashboard)",
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_checks_and_tests_the_alerts() {
    let promtool = support::tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let spec = rule_groups();
    let names: Vec<&str> = spec["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "KeywardAccessDenied",
            "KeywardRotationOverdue",
            "KeywardUnusualAccessSpike",
            "KeywardSyncFailures"
        ]
    );
    for rule in spec["groups"][0]["rules"].as_array().unwrap() {
        let severity = rule["labels"]["severity"].as_str().unwrap();
        assert!(["critical", "warning"].contains(&severity));
        assert!(rule["annotations"]["runbook"].as_str().is_some_and(|r| r.len() > 40));
    }
    // JSON is YAML: promtool reads it as a rules file.
    let full = dir.path().join("full-rules.yaml");
    std::fs::write(&full, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(&full)
            .output()
            .unwrap(),
        "promtool check rules",
    );
    // Unit tests compare annotations exactly: keep the summary (it exercises the label templates), drop the
    // long runbook text.
    let mut tested = spec.clone();
    for rule in tested["groups"][0]["rules"].as_array_mut().unwrap() {
        let summary = rule["annotations"]["summary"].clone();
        rule["annotations"] = json!({"summary": summary});
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string_pretty(&tested).unwrap(),
    )
    .unwrap();
    let tests = dir.path().join("alerts-test.yaml");
    std::fs::copy(support::repo().join("tests/fixtures/alerts-test.yaml"), &tests).unwrap();
    let out = ok(
        Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(&tests)
            .output()
            .unwrap(),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The metrics of charts/keyward/metrics.txt: name -> (type, labels).
fn exported_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let text = std::fs::read_to_string(chart().join("metrics.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_string();
            let kind = f.next().unwrap().to_string();
            let labels = f
                .next()
                .map(|l| l.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            (name, (kind, labels))
        })
        .collect()
}

/// Whether `name` is listed, counting a listed histogram's _bucket, _sum and _count series.
fn listed(metrics: &BTreeMap<String, (String, Vec<String>)>, name: &str) -> Option<String> {
    if metrics.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (metrics.get(base)?.0 == "histogram").then(|| base.to_string())
    })
}

const PROMQL_KEYWORDS: &[&str] = &[
    // aggregation operators: may be followed by `by (...)` rather than `(`
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression reads, each with the label names of its matchers. Skips strings,
/// ranges, label lists after by/without/on/ignoring/group_*, numbers and durations, functions (an identifier
/// followed by `(`) and keywords.
fn promql_metrics(expr: &str) -> Vec<(String, Vec<String>)> {
    let b: Vec<char> = expr.chars().collect();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let closing = |j: usize, open: char, close: char| {
        // index just past the bracket matching b[j] == open
        let mut depth = 0;
        let mut k = j;
        while k < b.len() {
            if b[k] == open {
                depth += 1;
            } else if b[k] == close {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            } else if b[k] == '"' || b[k] == '\'' {
                let q = b[k];
                k += 1;
                while k < b.len() && b[k] != q {
                    if b[k] == '\\' {
                        k += 1;
                    }
                    k += 1;
                }
            }
            k += 1;
        }
        b.len()
    };
    let mut last_was_metric = false;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            last_was_metric = false;
        } else if c == '{' {
            let end = closing(i, '{', '}');
            let inner: String = b[i + 1..end - 1].iter().collect();
            let labels: Vec<String> = inner
                .split(',')
                .filter_map(|m| {
                    let name: String = m.trim().chars().take_while(|c| ident_char(*c)).collect();
                    (!name.is_empty()).then_some(name)
                })
                .collect();
            if last_was_metric && let Some(last) = out.last_mut() {
                last.1.extend(labels);
            }
            i = end;
            last_was_metric = false;
        } else if c == '[' {
            i = closing(i, '[', ']');
            last_was_metric = false;
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            last_was_metric = false;
        } else if c == '$' {
            i += 1;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            last_was_metric = false;
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&lower.as_str()) {
                if b.get(next) == Some(&'(') {
                    i = closing(next, '(', ')');
                }
                last_was_metric = false;
            } else if lower == "offset" {
                // the duration after it
                i = next;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '-') {
                    i += 1;
                }
                last_was_metric = false;
            } else if b.get(next) == Some(&'(') || PROMQL_KEYWORDS.contains(&lower.as_str()) {
                last_was_metric = false;
            } else {
                out.push((word, Vec::new()));
                last_was_metric = true;
            }
        } else {
            if !c.is_whitespace() {
                last_was_metric = false;
            }
            i += 1;
        }
    }
    out
}

#[test]
fn promql_metric_extraction() {
    let names = |e: &str| promql_metrics(e);
    assert_eq!(
        names(r#"sum(increase(secret_access_total{status="denied"}[1m])) > 5"#),
        [("secret_access_total".to_string(), vec!["status".to_string()])]
    );
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le) (rate(keyward_reconcile_duration_seconds_bucket[$__rate_interval])))"
        ),
        [("keyward_reconcile_duration_seconds_bucket".to_string(), vec![])]
    );
    let two = names(
        "sum by (secret_name) (rate(a_total[5m])) > 3 * sum by (secret_name) (rate(b_total[1h] offset 5m)) and c > 0.1",
    );
    let got: Vec<&str> = two.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, ["a_total", "b_total", "c"]);
    assert_eq!(
        names("max by (pod) (keyward_leader)"),
        [("keyward_leader".to_string(), vec![])]
    );
    assert_eq!(names("sum without (code) (m) by"), [("m".to_string(), vec![])]);
    let got = names(r#"1 - sum(x) / count(y{a="1", b=~"x|y"}) unless on (pod) z == bool 1"#);
    assert_eq!(
        got,
        [
            ("x".to_string(), vec![]),
            ("y".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("z".to_string(), vec![])
        ]
    );
}

/// Checks every metric an expression names is listed, with only listed labels in its matchers.
fn check_expr(metrics: &BTreeMap<String, (String, Vec<String>)>, where_: &str, expr: &str) -> usize {
    let found = promql_metrics(expr);
    assert!(!found.is_empty(), "{where_}: no metric in {expr:?}");
    for (name, labels) in &found {
        let base = listed(metrics, name)
            .unwrap_or_else(|| panic!("{where_}: {name} in {expr:?} is not in charts/keyward/metrics.txt"));
        let allowed = &metrics[&base].1;
        for l in labels {
            assert!(
                allowed.contains(l) || (l == "le" && name.ends_with("_bucket")),
                "{where_}: {name} has no label {l} (metrics.txt lists {allowed:?})"
            );
        }
    }
    found.len()
}

#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let metrics = exported_metrics();
    for required in [
        "secret_access_total",
        "secret_rotation_age_days",
        "keyward_rotation_overdue",
        "keyward_reconcile_duration_seconds",
        "keyward_sync_failures_total",
        "keyward_managed_secrets",
        "keyward_rotations_total",
        "keyward_restarts_total",
    ] {
        assert!(metrics.contains_key(required), "metrics.txt lacks {required}");
    }
    // The dashboard as the chart ships it.
    let objects = render("keyward-system", &["--set", "dashboards.enabled=true"]);
    let cm = one(&objects, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: Value = serde_json::from_str(cm["data"]["keyward.json"].as_str().unwrap()).unwrap();
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_string();
        if panel["type"] == "row" {
            titles.push(title);
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            n += check_expr(&metrics, &format!("panel {title}"), expr);
            for (name, _) in promql_metrics(expr) {
                used.insert(listed(&metrics, &name).unwrap());
            }
        }
    }
    assert!(n > 20, "only {n} metric references in the dashboard");
    for row in [
        "Secret age",
        "Access patterns",
        "Rotation compliance",
        "Sync status",
        "Restarts",
    ] {
        assert!(titles.iter().any(|t| t == row), "no row {row} in {titles:?}");
    }
    for m in [
        "secret_rotation_age_days",
        "secret_access_total",
        "keyward_rotation_overdue",
        "keyward_rotations_total",
        "keyward_managed_secrets",
        "keyward_sync_failures_total",
        "keyward_restarts_total",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
    let kinds: BTreeSet<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert!(kinds.contains("histogram") && kinds.contains("heatmap"), "{kinds:?}");
    // The alerts.
    for rule in rule_groups()["groups"][0]["rules"].as_array().unwrap() {
        check_expr(
            &metrics,
            rule["alert"].as_str().unwrap(),
            rule["expr"].as_str().unwrap(),
        );
    }
}

/// Installs the prometheus-operator CRDs the chart's optional objects need (pinned, from the tools cache).
fn install_prometheus_operator_crds() {
    let dir = keyward_dev::tools::tools_dir()
        .unwrap()
        .join("prometheus-operator-crds");
    assert!(dir.is_dir(), "{} missing: run `make tools`", dir.display());
    let out = support::cluster_any().kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=keyward-test",
        "-f",
        dir.to_str().unwrap(),
    ]);
    ok(out, "kubectl apply prometheus-operator CRDs");
    for crd in [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        // `kubectl wait` fails at once (".status.conditions accessor error") when it reads a CRD the API server
        // has not given any condition yet: ask again until it has.
        let mut tries = 0;
        let out = loop {
            let out = support::cluster_any().kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ]);
            tries += 1;
            let early = String::from_utf8_lossy(&out.stderr).contains("accessor error");
            if out.status.success() || !early || tries == 50 {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        ok(out, "kubectl wait CRD");
    }
}

/// Applies `objects` with a server-side dry run: the API server validates, defaults and admits each one
/// (schemas, CRD schemas, RBAC escalation checks) and stores nothing.
fn server_dry_run(objects: &[Value]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, serde_json::to_string(&list).unwrap()).unwrap();
    let out = support::cluster_any().kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=keyward-test",
        "-f",
        file.to_str().unwrap(),
    ]);
    ok(out, "kubectl apply --dry-run=server")
}

#[tokio::test]
async fn every_rendered_object_passes_server_side_dry_run() {
    let cluster = cluster_with_controllers();
    let release = TestNs::with_client("kw-dry", cluster.client().await).await;
    let watched = TestNs::with_client("kw-dry-apps", cluster.client().await).await;
    install_prometheus_operator_crds();
    let full = values_full();
    for (what, objects) in [
        ("defaults", render(&release.name, &[])),
        (
            "values-full",
            render(
                &release.name,
                &[
                    "-f",
                    &full,
                    "--set",
                    &format!("watchNamespace={}", watched.name),
                    MONITORING_APIS[0],
                    MONITORING_APIS[1],
                    MONITORING_APIS[2],
                    MONITORING_APIS[3],
                ],
            ),
        ),
    ] {
        let out = server_dry_run(&objects);
        let applied = out.lines().filter(|l| l.contains("(server dry run)")).count();
        assert_eq!(applied, objects.len(), "{what}: not every object was applied:\n{out}");
    }
}

/// The README's install on a cluster as a new user's is (no Prometheus Operator, nothing of keyward's): the
/// default render with the README's monitoring flags, applied server-side for real, every object created.
#[test]
fn the_default_render_installs_on_a_cluster_without_the_prometheus_operator() {
    let bare = support::fresh_cluster();
    let objects = render(
        "default",
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, serde_json::to_string(&list).unwrap()).unwrap();
    let out = Command::new(support::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&bare.kubeconfig)
        .args(["apply", "--server-side", "--field-manager=keyward-test", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let text = ok(out, "kubectl apply --server-side (fresh cluster)");
    let applied = text.lines().filter(|l| l.contains("serverside-applied")).count();
    assert_eq!(applied, objects.len(), "not every object was applied:\n{text}");
}

/// A kubeconfig for the control plane that authenticates with `token` (a ServiceAccount's bearer token).
fn token_kubeconfig(dir: &Path, token: &str) -> PathBuf {
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&support::cluster_any().kubeconfig).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa"}}],
        "current-context": "sa"
    });
    let path = dir.join("sa-kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// A bearer token for ServiceAccount `name`, from the TokenRequest API.
async fn service_account_token(admin: &Client, ns: &str, name: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// The installed chart's keyward, run here as a process: the Deployment's own arguments and environment, its
/// mounted Secrets and ConfigMaps written to a local directory (paths in arguments moved there), the HTTP
/// listener on loopback, and the ServiceAccount's token.
struct ChartKeyward {
    keyward: Keyward,
    client: Client,
    left_out: Vec<String>,
    _dir: tempfile::TempDir,
}

/// What the installed chart's Deployment would run, made runnable here: its volumes' Secrets and ConfigMaps
/// written to local directories (0755, files 0644, as a kubelet's projection), its arguments with the
/// listeners moved to free loopback ports (a host-network run shares the host's ports), its environment with
/// the downward API resolved, and a token of its ServiceAccount.
struct InstalledPod {
    pod: PodSpec,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (mount path in the container, local directory holding its files).
    mounts: Vec<(String, PathBuf)>,
    token: String,
    http: std::net::SocketAddr,
    webhook: std::net::SocketAddr,
    left_out: Vec<String>,
    dir: tempfile::TempDir,
}

async fn installed_pod(admin: &Client, release_ns: &str, deployment: &str) -> InstalledPod {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Api::<Deployment>::namespaced(admin.clone(), release_ns)
        .get(deployment)
        .await
        .unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    let readable = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let local = dir.path().join(m.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local).unwrap();
        readable(&local, 0o755);
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        if let Some(s) = &v.secret {
            let secret = Api::<Secret>::namespaced(admin.clone(), release_ns)
                .get(s.secret_name.as_deref().unwrap())
                .await
                .unwrap();
            let data = secret.data.unwrap_or_default();
            for item in s.items.clone().unwrap_or_default() {
                std::fs::write(local.join(&item.path), &data[&item.key].0).unwrap();
                readable(&local.join(&item.path), 0o644);
            }
        }
        if let Some(cm) = &v.config_map {
            let map = Api::<ConfigMap>::namespaced(admin.clone(), release_ns)
                .get(&cm.name)
                .await
                .unwrap();
            let data = map.data.unwrap_or_default();
            for item in cm.items.clone().unwrap_or_default() {
                std::fs::write(local.join(&item.path), &data[&item.key]).unwrap();
                readable(&local.join(&item.path), 0o644);
            }
        }
        mounts.push((m.mount_path.clone(), local));
    }
    let known = keyward_flags();
    let (http, webhook) = (support::free_port(), support::free_port());
    let mut args = Vec::new();
    let mut left_out = Vec::new();
    for arg in c.args.clone().unwrap_or_default() {
        let flag = flag_name(&arg).to_string();
        if flag.starts_with("--") && !known.contains(&flag) {
            assert!(PENDING_FLAGS.contains(&flag.as_str()), "unknown flag {arg}");
            left_out.push(arg);
            continue;
        }
        match flag.as_str() {
            "--http-listen" => args.push(format!("--http-listen={http}")),
            "--webhook-listen" => args.push(format!("--webhook-listen={webhook}")),
            _ => args.push(arg),
        }
    }
    let mut env = Vec::new();
    for e in c.env.clone().unwrap_or_default() {
        let field = e
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        let value = match field.as_deref() {
            Some("metadata.namespace") => release_ns.to_string(),
            Some("metadata.name") => format!("{deployment}-local"),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => e.value.clone().unwrap_or_default(),
        };
        env.push((e.name.clone(), value));
    }
    let sa = pod.service_account_name.clone().unwrap();
    let token = service_account_token(admin, release_ns, &sa).await;
    if !left_out.is_empty() {
        eprintln!("note: left out (not in this keyward yet): {left_out:?}");
    }
    InstalledPod {
        pod,
        args,
        env,
        mounts,
        token,
        http,
        webhook,
        left_out,
        dir,
    }
}

async fn wait_ready(http: std::net::SocketAddr) {
    eventually(60, "keyward ready", || async {
        let r = reqwest::get(format!("http://{http}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

async fn run_installed(admin: &Client, release_ns: &str, deployment: &str) -> ChartKeyward {
    let p = installed_pod(admin, release_ns, deployment).await;
    // Paths in arguments move to where the mounts' files are here.
    let args: Vec<String> = p
        .args
        .iter()
        .map(|arg| {
            for (path, local) in &p.mounts {
                if let Some((f, v)) = arg.split_once('=')
                    && let Some(rest) = v.strip_prefix(path.as_str())
                {
                    return format!("{f}={}{rest}", local.display());
                }
            }
            arg.clone()
        })
        .collect();
    let kubeconfig = token_kubeconfig(p.dir.path(), &p.token);
    let client = keyward_dev::control_plane::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let keyward = Keyward::launch(&kubeconfig, &args, &p.env, p.http, p.webhook);
    wait_ready(p.http).await;
    ChartKeyward {
        keyward,
        client,
        left_out: p.left_out,
        _dir: p.dir,
    }
}

/// The image `tools/image.sh build amd64` made (`make integration` builds it first); `KEYWARD_TEST_IMAGE`
/// names another.
fn test_image() -> String {
    let image = std::env::var("KEYWARD_TEST_IMAGE")
        .unwrap_or_else(|_| format!("localhost/keyward:{}-amd64", env!("CARGO_PKG_VERSION")));
    let out = podman(&["image", "exists", &image]);
    assert!(
        out.status.success(),
        "image {image} is missing: build it with `tools/image.sh build amd64` (make integration does)"
    );
    image
}

/// podman with the flags these machines need (../shared/notes/containers.md).
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .expect("run podman (apt-get install podman runc; tools/system-deps.sh)")
}

/// A container of the image, removed when dropped (its log printed first if the test failed).
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- container {} log ----\n{}", self.name, self.logs());
        }
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// Runs the installed chart's pod from `image` under podman as a kubelet would: the pod's and container's
/// securityContext as podman flags (user, read-only root, capabilities, no privilege escalation), each
/// Secret/ConfigMap volume bind-mounted read-only where the chart mounts it, each emptyDir as a tmpfs, the
/// ServiceAccount's token, the cluster's CA and the namespace at /var/run/secrets/kubernetes.io/serviceaccount,
/// KUBERNETES_SERVICE_HOST/PORT for the API server, the chart's arguments and environment. Host network: the
/// control plane listens on loopback.
fn run_image(image: &str, p: &InstalledPod, release_ns: &str) -> Container {
    use std::os::unix::fs::PermissionsExt;
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&support::cluster_any().kubeconfig).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    // https://HOST:PORT, as the harness writes it.
    let server = cluster["server"].as_str().unwrap();
    let (host, port) = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap();
    let ca = match cluster["certificate-authority-data"].as_str() {
        Some(b64) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
        }
        None => std::fs::read(cluster["certificate-authority"].as_str().unwrap()).unwrap(),
    };
    let sa = p.dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::set_permissions(&sa, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, content) in [
        ("token", p.token.as_bytes()),
        ("ca.crt", &ca),
        ("namespace", release_ns.as_bytes()),
    ] {
        std::fs::write(sa.join(file), content).unwrap();
        std::fs::set_permissions(sa.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let c = &p.pod.containers[0];
    let pod_sc = p.pod.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let user = sc.run_as_user.or(pod_sc.run_as_user).expect("the chart sets runAsUser");
    let group = sc
        .run_as_group
        .or(pod_sc.run_as_group)
        .expect("the chart sets runAsGroup");
    let name = format!("keyward-test-{}-{}", std::process::id(), p.http.port());
    let mut args: Vec<String> = [
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user={user}:{group}"));
    if sc.read_only_root_filesystem == Some(true) {
        args.push("--read-only".into());
    }
    for cap in sc.capabilities.and_then(|c| c.drop).unwrap_or_default() {
        args.push(format!("--cap-drop={cap}"));
    }
    if sc.allow_privilege_escalation == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    let volumes = p.pod.volumes.clone().unwrap_or_default();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        if v.empty_dir.is_some() {
            args.push(format!("--tmpfs={}:rw,mode=1777,size=16m", m.mount_path));
        } else {
            let local = &p.mounts.iter().find(|(path, _)| *path == m.mount_path).unwrap().1;
            args.push(format!("--volume={}:{}:ro", local.display(), m.mount_path));
        }
    }
    args.push(format!(
        "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        sa.display()
    ));
    args.push(format!("--env=KUBERNETES_SERVICE_HOST={host}"));
    args.push(format!("--env=KUBERNETES_SERVICE_PORT={port}"));
    for (k, v) in &p.env {
        args.push(format!("--env={k}={v}"));
    }
    args.push(image.to_string());
    args.extend(p.args.iter().cloned());
    let out = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let container = Container { name };
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    container
}

/// The heredoc YAML documents NOTES.txt tells the user to `kubectl apply`, as JSON.
fn notes_documents(notes: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut lines = notes.lines();
    while let Some(line) = lines.next() {
        if !line.trim_end().ends_with("<<'YAML'") {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "YAML").collect();
        let indent = body.iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
        let text: String = body.iter().map(|l| format!("{}\n", &l[indent..])).collect();
        docs.push(serde_saphyr::from_str::<Value>(&text).unwrap());
    }
    docs
}

/// The README's install, end to end: the chart installed with the values file NOTES.txt points at
/// (charts/keyward/ci/values-first-secret.yaml, its namespace renamed to this test's), keyward run from the
/// built image under podman exactly as the chart runs it (read-only root, no capabilities, UID 65532,
/// in-cluster config from the mounted ServiceAccount), and NOTES.txt's first ManagedSecret, applied as
/// printed, goes Ready with the value from ESC.
#[tokio::test]
async fn the_image_runs_as_the_chart_runs_it_and_the_notes_first_secret_goes_ready() {
    const CANARY: &str = "sk-canary-image-test-0f3a";
    let image = test_image();
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server("image-esc-token", dir.path()).await;
    esc.put_definition(
        "my-org",
        "my-project",
        "production",
        &format!("values:\n  app:\n    openai_api_key:\n      fn::secret: {CANARY}\n"),
    )
    .unwrap();
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-img", admin.clone()).await;
    let app = TestNs::with_client("kw-img-app", admin.clone()).await;
    let values = std::fs::read_to_string(chart().join("ci/values-first-secret.yaml"))
        .unwrap()
        .replace("names: [backend]", &format!("names: [{}]", app.name));
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    helm_install(
        &release,
        &release_ns.name,
        &[
            "-f",
            values_file.to_str().unwrap(),
            "--set",
            "replicaCount=1",
            "--set",
            &format!("esc.url={}", esc.base_url()),
            "--set",
            "esc.token=image-esc-token",
        ],
    );
    let kubeconfig = support::cluster_any().kubeconfig.display().to_string();
    let notes = ok(
        helm(&[
            "get",
            "notes",
            &release,
            "--namespace",
            &release_ns.name,
            "--kubeconfig",
            &kubeconfig,
        ]),
        "helm get notes",
    );
    let p = installed_pod(&admin, &release_ns.name, &format!("{release}-keyward")).await;
    let container = run_image(&image, &p, &release_ns.name);
    wait_ready(p.http).await;

    let mut first = notes_documents(&notes)
        .into_iter()
        .find(|d| d["kind"] == "ManagedSecret")
        .unwrap_or_else(|| panic!("NOTES.txt shows no ManagedSecret:\n{notes}"));
    assert_eq!(first["metadata"]["namespace"], "backend", "{notes}");
    first["metadata"]["namespace"] = json!(app.name);
    let managed: ManagedSecret = serde_json::from_value(first).unwrap();
    let name = managed.metadata.name.clone().unwrap();
    app.api::<ManagedSecret>()
        .create(&PostParams::default(), &managed)
        .await
        .unwrap();
    let target = managed.spec.target.name.clone().unwrap_or_else(|| name.clone());
    let key = managed.spec.target.key.clone().unwrap();
    eventually(
        90,
        "NOTES' ManagedSecret Ready, its Secret holding the ESC value",
        || async {
            let ms = app.api::<ManagedSecret>().get(&name).await.ok()?;
            let ready = ms
                .status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let secret = app.api::<Secret>().get(&target).await.ok()?;
            let value = secret.data?.get(&key)?.0.clone();
            (ready && value == CANARY.as_bytes()).then_some(())
        },
    )
    .await;
    // No kubeconfig in the image: it reached the API server through the in-cluster configuration alone.
    let logs = container.logs();
    assert!(!logs.contains(CANARY), "the value reached the log");
    drop(container);
    helm_uninstall(&release, &release_ns.name);
}

/// The chart's ClusterRoles aggregated to Kubernetes' `edit` and `view`: a person bound to `edit` in a
/// namespace creates a ManagedSecret there; bound to `view`, reads but cannot create; bound to nothing, neither.
/// (Aggregation is kube-controller-manager's clusterrole-aggregation controller: the shared control plane runs
/// it.)
#[tokio::test]
async fn people_bound_to_edit_manage_managed_secrets_and_others_cannot() {
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-agg", admin.clone()).await;
    let team = TestNs::with_client("kw-agg-team", admin.clone()).await;
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    helm_install(
        &release,
        &release_ns.name,
        &["--set", "replicaCount=1", "--set", "leaderElection.enabled=false"],
    );
    for (user, role) in [("agg-editor", "edit"), ("agg-viewer", "view")] {
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap();
        team.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    let managed = |name: &str| -> ManagedSecret {
        serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": name},
            "spec": {"source": {"esc": {"environment": "acme/app/prod", "path": "db.password"}},
                     "target": {"key": "VALUE"}}
        }))
        .unwrap()
    };
    let team_name = team.name.clone();
    let as_user = |user: &'static str| {
        let team_name = team_name.clone();
        async move { Api::<ManagedSecret>::namespaced(cluster.client_as(user).await, &team_name) }
    };
    let editor = as_user("agg-editor").await;
    // The aggregation controller folds the chart's rules into `edit` within moments of the install.
    eventually(60, "edit aggregates ManagedSecrets", || async {
        editor.create(&PostParams::default(), &managed("by-editor")).await.ok()
    })
    .await;
    editor
        .patch(
            "by-editor",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    let viewer = as_user("agg-viewer").await;
    eventually(60, "view aggregates ManagedSecrets", || async {
        viewer.get("by-editor").await.ok()
    })
    .await;
    forbidden(
        "a viewer creates a ManagedSecret",
        viewer.create(&PostParams::default(), &managed("by-viewer")).await,
    );
    let stranger = as_user("agg-stranger").await;
    forbidden("a stranger reads a ManagedSecret", stranger.get("by-editor").await);
    forbidden(
        "a stranger creates a ManagedSecret",
        stranger.create(&PostParams::default(), &managed("by-stranger")).await,
    );
    editor.delete("by-editor", &DeleteParams::default()).await.unwrap();
    helm_uninstall(&release, &release_ns.name);
}

/// `accessPolicies=[...]` for `--set-json`: one AccessPolicy `name` that lets namespace `ns` use Secret
/// `secret` as a source.
fn source_grant(name: &str, ns: &str, secret: &str) -> String {
    let policies =
        json!([{"name": name, "spec": {"namespaces": {"names": [ns]}, "kubernetesSecrets": [{"names": [secret]}]}}]);
    format!("accessPolicies={policies}")
}

fn helm_install(release: &str, ns: &str, extra: &[&str]) {
    let chart = chart_arg();
    let kubeconfig = support::cluster_any().kubeconfig.display().to_string();
    let mut args = vec![
        "install",
        release,
        chart.as_str(),
        "--namespace",
        ns,
        "--kubeconfig",
        &kubeconfig,
        "--wait",
        "--timeout",
        "180s",
    ];
    args.extend(extra);
    ok(helm(&args), "helm install");
}

fn helm_uninstall(release: &str, ns: &str) {
    let kubeconfig = support::cluster_any().kubeconfig.display().to_string();
    ok(
        helm(&[
            "uninstall",
            release,
            "--namespace",
            ns,
            "--kubeconfig",
            &kubeconfig,
            "--wait",
        ]),
        "helm uninstall",
    );
}

fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: want 403 Forbidden, got {other:?}"),
    }
}

async fn create_source(ns: &TestNs, name: &str, value: &str) {
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"value": value}})).unwrap();
    ns.api::<Secret>().create(&PostParams::default(), &s).await.unwrap();
}

async fn create_managed(ns: &TestNs, name: &str, source: &str) {
    let ms: ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": {"source": {"kubernetesSecret": {"name": source, "key": "value"}}, "target": {"key": "VALUE"}}
    }))
    .unwrap();
    ns.api::<ManagedSecret>()
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
}

async fn wait_value(ns: &TestNs, name: &str, value: &str) {
    let secrets: Api<Secret> = ns.api();
    eventually(60, &format!("Secret {name} holds {value}"), || async {
        let s = secrets.get_opt(name).await.ok()??;
        (s.data?.get("VALUE")?.0 == value.as_bytes()).then_some(())
    })
    .await;
}

/// What keyward serves on /metrics is all in metrics.txt.
async fn served_metrics_are_listed(k: &Keyward) {
    let metrics = exported_metrics();
    let text = k.metrics().await;
    let mut served = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name: String = line.chars().take_while(|c| *c != '{' && *c != ' ').collect();
        served.insert(name);
    }
    assert!(served.contains("keyward_build_info"), "{text}");
    for name in &served {
        assert!(
            listed(&metrics, name).is_some(),
            "keyward serves {name}, which metrics.txt does not list"
        );
    }
}

/// Nothing keyward did was refused. (A cluster-wide keyward also sees other tests' namespaces, and an Event
/// about an object in a namespace being deleted is refused by the API server: not a missing grant.)
fn no_refusals(k: &Keyward) {
    let logs: String = k
        .logs()
        .lines()
        .filter(|l| !l.contains("because it is being terminated"))
        .collect::<Vec<_>>()
        .join("\n");
    for bad in ["forbidden", "Forbidden", "HTTP 403"] {
        assert!(!logs.contains(bad), "keyward was refused something ({bad}):\n{logs}");
    }
}

#[tokio::test]
async fn installed_chart_lets_keyward_sync_and_restart_and_nothing_more() {
    support::keyward_bin();
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-rel", admin.clone()).await;
    let app = TestNs::with_client("kw-app", admin.clone()).await;
    // Cluster-scoped RBAC objects are named after the release: one of its own per test.
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    let grants = source_grant("app", &app.name, "db-source");
    helm_install(
        &release,
        &release_ns.name,
        &["--set", "restarts.debounceSeconds=1", "--set-json", &grants],
    );
    let fullname = format!("{release}-keyward");
    let run = run_installed(&admin, &release_ns.name, &fullname).await;
    let k = &run.keyward;

    // Sync: a ManagedSecret reading a Secret of its namespace, consumed by a Deployment.
    create_source(&app, "db-source", "first").await;
    let mut d = support::sample_deployment("app");
    d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].env = Some(
        serde_json::from_value(json!([{"name": "V", "valueFrom": {"secretKeyRef": {"name": "db", "key": "VALUE"}}}]))
            .unwrap(),
    );
    app.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    create_managed(&app, "db", "db-source").await;
    wait_value(&app, "db", "first").await;
    let deployments: Api<Deployment> = app.api();
    eventually(90, "the Deployment rolled out and adopted", || async {
        let d = deployments.get("app").await.ok()?;
        let adopted = d
            .metadata
            .annotations
            .as_ref()?
            .contains_key("keyward.dev/secrets-hash");
        (adopted && d.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let replica_sets: Api<ReplicaSet> = app.api();
    let count = || async {
        replica_sets
            .list(&ListParams::default().labels("app=app"))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(count().await, 1, "adopting must not restart");

    // Restart: a new source value reaches the Secret and rolls the Deployment (a second ReplicaSet).
    let patch = json!({"stringData": {"value": "second"}});
    app.api::<Secret>()
        .patch("db-source", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_value(&app, "db", "second").await;
    eventually(90, "the Deployment restarted onto the new value", || async {
        let d = deployments.get("app").await.ok()?;
        let restarted = d
            .spec?
            .template
            .metadata?
            .annotations?
            .contains_key("keyward.dev/secrets-hash");
        (restarted && count().await == 2).then_some(())
    })
    .await;
    let managed: Api<ManagedSecret> = app.api();
    let ms = eventually(60, "ConsumersUpdated", || async {
        let ms = managed.get("db").await.ok()?;
        let st = ms.status.as_ref()?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "ConsumersUpdated" && c.status == "True")
            .then_some(ms)
    })
    .await;
    // The Argo CD health check agrees.
    let (health, message) = support::argocd::health(&serde_json::to_value(&ms).unwrap());
    assert_eq!(health, "Healthy", "{message}");
    // Its own namespace: the hash key it created; Events were published.
    let hash_key = Api::<Secret>::namespaced(admin.clone(), &release_ns.name)
        .get("keyward-hash-key")
        .await
        .unwrap();
    assert!(hash_key.data.unwrap().contains_key("key"));
    let events = app.events_for("db").await;
    assert!(events.iter().any(|e| e.starts_with("Synced")), "{events:?}");
    no_refusals(k);
    served_metrics_are_listed(k).await;

    // What the chart does not grant: 403, with the same token.
    let sa = run.client.clone();
    forbidden(
        "list Nodes",
        Api::<Node>::all(sa.clone()).list(&ListParams::default()).await,
    );
    forbidden(
        "list Pods",
        Api::<Pod>::namespaced(sa.clone(), &app.name)
            .list(&ListParams::default())
            .await,
    );
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": format!("{release}-escalate")}, "rules": []})).unwrap();
    forbidden(
        "create a ClusterRole",
        Api::<ClusterRole>::all(sa.clone())
            .create(&PostParams::default(), &role)
            .await,
    );
    // Secrets may be deleted (a target whose type changed is replaced; a renamed target is removed), nothing
    // else.
    forbidden(
        "delete a Deployment",
        Api::<Deployment>::namespaced(sa.clone(), &app.name)
            .delete("app", &DeleteParams::default())
            .await,
    );
    forbidden(
        "create a Deployment",
        Api::<Deployment>::namespaced(sa.clone(), &app.name)
            .create(&PostParams::default(), &support::sample_deployment("other"))
            .await,
    );
    // ManagedSecrets: patched only for the webhook's refresh annotation; never created or deleted.
    forbidden(
        "delete a ManagedSecret",
        Api::<ManagedSecret>::namespaced(sa.clone(), &app.name)
            .delete("db", &DeleteParams::default())
            .await,
    );
    let copy: ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": "copy"},
        "spec": {"source": {"kubernetesSecret": {"name": "db-source", "key": "value"}}, "target": {"key": "V"}}
    }))
    .unwrap();
    forbidden(
        "create a ManagedSecret",
        Api::<ManagedSecret>::namespaced(sa.clone(), &app.name)
            .create(&PostParams::default(), &copy)
            .await,
    );
    forbidden(
        "write an AccessPolicy",
        Api::<AccessPolicy>::all(sa.clone())
            .delete(&format!("{fullname}-app"), &DeleteParams::default())
            .await,
    );
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap();
    forbidden(
        "create a Lease outside its namespace",
        Api::<Lease>::namespaced(sa.clone(), &app.name)
            .create(&PostParams::default(), &lease)
            .await,
    );
    if run.left_out.is_empty() {
        eprintln!("note: every flag the chart renders was used");
    }
    drop(run);
    helm_uninstall(&release, &release_ns.name);
}

#[tokio::test]
async fn namespaced_mode_is_enough_in_its_namespace_and_refused_elsewhere() {
    support::keyward_bin();
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-nsrel", admin.clone()).await;
    let watched = TestNs::with_client("kw-watched", admin.clone()).await;
    let other = TestNs::with_client("kw-other", admin.clone()).await;
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    let grants = source_grant("watched", &watched.name, "api-source");
    helm_install(
        &release,
        &release_ns.name,
        &[
            "--set",
            &format!("watchNamespace={}", watched.name),
            "--set",
            "replicaCount=1",
            "--set-json",
            &grants,
        ],
    );
    let fullname = format!("{release}-keyward");
    let run = run_installed(&admin, &release_ns.name, &fullname).await;
    let k = &run.keyward;

    create_source(&watched, "api-source", "v1").await;
    create_managed(&watched, "api", "api-source").await;
    wait_value(&watched, "api", "v1").await;
    // A new value gets an Event (the first sync has none: its status says it).
    let patch = json!({"stringData": {"value": "v2"}});
    watched
        .api::<Secret>()
        .patch("api-source", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_value(&watched, "api", "v2").await;
    eventually(30, "a Synced Event for the new value", || async {
        let events = watched.events_for("api").await;
        events.iter().any(|e| e.starts_with("Synced")).then_some(())
    })
    .await;
    // The hash key in its own namespace, through the chart's Role there.
    Api::<Secret>::namespaced(admin.clone(), &release_ns.name)
        .get("keyward-hash-key")
        .await
        .unwrap();
    no_refusals(k);

    let sa = run.client.clone();
    Api::<Secret>::namespaced(sa.clone(), &watched.name)
        .list(&ListParams::default())
        .await
        .expect("Secrets of the watched namespace are granted");
    create_source(&other, "elsewhere", "x").await;
    forbidden(
        "list Secrets in another namespace",
        Api::<Secret>::namespaced(sa.clone(), &other.name)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "read a Secret in another namespace",
        Api::<Secret>::namespaced(sa.clone(), &other.name)
            .get("elsewhere")
            .await,
    );
    forbidden(
        "list ManagedSecrets cluster-wide",
        Api::<ManagedSecret>::all(sa.clone()).list(&ListParams::default()).await,
    );
    // In its own namespace only the hash key.
    create_source(&release_ns, "unrelated", "x").await;
    forbidden(
        "read another Secret of its own namespace",
        Api::<Secret>::namespaced(sa.clone(), &release_ns.name)
            .get("unrelated")
            .await,
    );
    drop(run);
    helm_uninstall(&release, &release_ns.name);
}

/// The admission policy refuses the same target types as keyward (TARGET_TYPES), binds with Deny, and is off
/// only when asked.
#[test]
fn admission_policy_allows_exactly_keywards_target_types() {
    let objects = render("keyward-system", &[]);
    let vap = one(&objects, "ValidatingAdmissionPolicy");
    let validations = vap["spec"]["validations"].as_array().unwrap();
    let types = validations
        .iter()
        .map(|v| v["expression"].as_str().unwrap())
        .find(|e| e.contains("target.type in"))
        .expect("a target.type rule");
    let listed: BTreeSet<&str> = types.split('\'').skip(1).step_by(2).collect();
    assert_eq!(listed, TARGET_TYPES.into_iter().collect::<BTreeSet<_>>());
    assert!(
        validations
            .iter()
            .any(|v| v["expression"].as_str().unwrap().contains("check('get')")),
        "the source Secret rule asks the authorizer"
    );
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    let off = render("keyward-system", &["--set", "admissionPolicy.enabled=false"]);
    assert!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty());
}

fn reading_secret(name: &str, source: &str) -> ManagedSecret {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": name},
        "spec": {"source": {"kubernetesSecret": {"name": source, "key": "value"}}, "target": {"key": "V"}}
    }))
    .unwrap()
}

/// The chart's ValidatingAdmissionPolicy, installed with the chart: a tenant who may write ManagedSecrets but
/// not `get` the Secret it names as a source is refused at admission (keyward never sees the object); one who
/// may is admitted; changing the spec of an admitted object is checked again, metadata-only updates are not.
#[tokio::test]
async fn admission_policy_refuses_a_source_secret_the_author_may_not_get() {
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-vap", admin.clone()).await;
    let team = TestNs::with_client("kw-vap-team", admin.clone()).await;
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    helm_install(&release, &release_ns.name, &["--set", "replicaCount=1"]);
    create_source(&team, "platform-db-creds", "platform-only").await;
    create_source(&team, "team-source", "team-value").await;
    let manage = json!([{"apiGroups": ["keyward.dev"], "resources": ["managedsecrets"],
                         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]);
    // mallory: ManagedSecrets only. trent: ManagedSecrets, and get on team-source alone.
    let mallory = format!("mallory-{}", team.name);
    let trent = format!("trent-{}", team.name);
    support::bind_user(&admin, &team.name, &mallory, manage.clone()).await;
    let mut rules = manage.as_array().unwrap().clone();
    rules
        .push(json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["team-source"], "verbs": ["get"]}));
    support::bind_user(&admin, &team.name, &trent, Value::Array(rules)).await;
    let as_mallory: Api<ManagedSecret> = Api::namespaced(cluster.client_as(&mallory).await, &team.name);
    let as_trent: Api<ManagedSecret> = Api::namespaced(cluster.client_as(&trent).await, &team.name);

    // The binding takes a moment to reach the API server's admission: wait for the first refusal.
    let refused = eventually(30, "the admission policy refuses mallory", || async {
        match as_mallory
            .create(&PostParams::default(), &reading_secret("exfil", "platform-db-creds"))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 403 => Some(e),
            Ok(_) => {
                let _ = as_mallory.delete("exfil", &DeleteParams::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await;
    assert!(
        refused.message.contains("may not get Secret platform-db-creds"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains(&mallory),
        "names the user: {}",
        refused.message
    );
    // Not by RBAC: mallory may create ManagedSecrets that read no Secret.
    let esc_only: ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": "from-esc"},
        "spec": {"source": {"esc": {"environment": "acme/app/prod", "path": "k"}}, "target": {"key": "V"}}
    }))
    .unwrap();
    as_mallory.create(&PostParams::default(), &esc_only).await.unwrap();

    // trent may get team-source: admitted; platform-db-creds: refused.
    as_trent
        .create(&PostParams::default(), &reading_secret("mine", "team-source"))
        .await
        .expect("a user who may get the source Secret is admitted");
    match as_trent
        .create(&PostParams::default(), &reading_secret("theirs", "platform-db-creds"))
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("trent may not get platform-db-creds: {other:?}"),
    }
    // mallory may not turn trent's object to another Secret, nor change its spec at all (a pushTo added to an
    // object that reads a Secret is a new way out for it) ...
    let push = json!({"spec": {"rotation": {"period": "90d", "strategy": "Notify",
        "pushTo": [{"github": {"repository": "mallory/loot", "secretName": "LOOT"}}]}}});
    match as_mallory
        .patch("mine", &PatchParams::default(), &Patch::Merge(&push))
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => assert!(e.message.contains("team-source"), "{}", e.message),
        other => panic!("mallory may not add a pushTo to an object reading team-source: {other:?}"),
    }
    // ... but metadata-only updates pass (labels, keyward's refresh annotation).
    let label = json!({"metadata": {"labels": {"team": "a"}}});
    as_mallory
        .patch("mine", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("a label is not a new read");
    // The other rules, for any user: no service-account-token Secrets, no keyward.dev/ keys.
    let mut token = reading_secret("token", "team-source");
    token.spec.target.type_ = Some("kubernetes.io/service-account-token".into());
    match as_trent.create(&PostParams::default(), &token).await {
        Err(kube::Error::Api(e)) if e.code == 422 => assert!(e.message.contains("target.type"), "{}", e.message),
        other => panic!("a service-account-token target must be refused: {other:?}"),
    }
    helm_uninstall(&release, &release_ns.name);
}

/// A Helm-installed keyward (the chart's ServiceAccount, RBAC, AccessPolicies and arguments) takes a signed ESC
/// webhook on its own port, refreshes every ManagedSecret of the environment, and refuses the same delivery
/// replayed; the metrics port does not take webhooks.
#[tokio::test]
async fn installed_chart_takes_a_signed_webhook_and_refuses_it_replayed() {
    use hmac::{Hmac, Mac};
    const SHARED: &str = "chart-webhook-shared-secret";
    support::keyward_bin();
    let dir = tempfile::tempdir().unwrap();
    let esc = support::esc_server("chart-esc-token", dir.path()).await;
    let definition = |v: &str| format!("values:\n  db:\n    password:\n      fn::secret: {v}\n");
    esc.put_definition("acme", "app", "prod", &definition("first-value"))
        .unwrap();
    let cluster = cluster_with_controllers();
    let admin = cluster.client().await;
    let release_ns = TestNs::with_client("kw-hook", admin.clone()).await;
    let app = TestNs::with_client("kw-hook-app", admin.clone()).await;
    for (name, key, value) in [("esc-token", "token", "chart-esc-token"), ("webhook", "secret", SHARED)] {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}})).unwrap();
        release_ns
            .api::<Secret>()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    let release = format!("kw{}", release_ns.name.rsplit('-').next().unwrap());
    let policies = json!([{"name": "app", "spec": {"namespaces": {"names": [app.name]},
        "esc": [{"environments": ["acme/app/*"], "actions": ["Read"]}]}}]);
    helm_install(
        &release,
        &release_ns.name,
        &[
            "--set",
            "replicaCount=1",
            "--set",
            &format!("esc.url={}", esc.base_url()),
            "--set",
            "esc.existingSecret=esc-token",
            "--set",
            "webhook.enabled=true",
            "--set",
            "webhook.existingSecret=webhook",
            "--set-json",
            &format!("accessPolicies={policies}"),
        ],
    );
    let run = run_installed(&admin, &release_ns.name, &format!("{release}-keyward")).await;
    let k = &run.keyward;
    let managed: ManagedSecret = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret", "metadata": {"name": "db"},
        "spec": {"source": {"esc": {"environment": "acme/app/prod", "path": "db.password"}},
                 "target": {"key": "VALUE"}, "refreshInterval": "1h"}
    }))
    .unwrap();
    app.api::<ManagedSecret>()
        .create(&PostParams::default(), &managed)
        .await
        .unwrap();
    wait_value(&app, "db", "first-value").await;

    esc.put_definition("acme", "app", "prod", &definition("second-value"))
        .unwrap();
    let body = json!({"organization": {"githubLogin": "acme"}, "projectName": "app", "environmentName": "prod",
                      "timestamp": jiff::Timestamp::now().to_string()})
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SHARED.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let deliver = |addr: std::net::SocketAddr| {
        reqwest::Client::new()
            .post(format!("http://{addr}/webhooks/esc"))
            .header("Pulumi-Webhook-Signature", signature.clone())
            .header("Pulumi-Webhook-ID", "delivery-1")
            .body(body.clone())
            .send()
    };
    // Not on the metrics port.
    assert_eq!(deliver(k.http).await.unwrap().status(), 404);
    assert_eq!(deliver(k.webhook).await.unwrap().status(), 202);
    wait_value(&app, "db", "second-value").await;
    // The same delivery again: refused, nothing refreshed.
    esc.put_definition("acme", "app", "prod", &definition("third-value"))
        .unwrap();
    esc.reset_counters();
    let replayed = deliver(k.webhook).await.unwrap();
    assert_eq!(replayed.status(), 409);
    assert!(replayed.text().await.unwrap().contains("received before"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(esc.counters().opens("acme/app/prod"), 0, "a replay opens nothing");
    let secret = app.api::<Secret>().get("db").await.unwrap();
    assert_eq!(secret.data.unwrap()["VALUE"].0, b"second-value");
    no_refusals(k);
    drop(run);
    helm_uninstall(&release, &release_ns.name);
}
