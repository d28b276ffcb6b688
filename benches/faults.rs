//! Faults at scale (issue 16, `make bench-faults`): keyward against a real kube-apiserver and etcd, the local
//! ESC server and the local GitHub server, through two faults. Prints a table per scenario; results go into
//! docs/benchmarks.md.
//!
//! 1. outage: `FAULTS_OUTAGE_N` ManagedSecrets (default 1,000) over `FAULTS_ENVS` ESC environments and
//!    `FAULTS_NAMESPACES` namespaces, refresh interval `FAULTS_REFRESH` (default 1m), all Ready with their
//!    Secret; then the ESC server answers every request with 503 (its fault mode, no `Retry-After`) for
//!    `FAULTS_OUTAGE_SECONDS` (default 600). Measured: ESC requests received per 10 s window (the server's own
//!    counters) and keyward's CPU; the objects' Synced condition at the end of the outage; keyward's API writes
//!    during the outage (the API server's `apiserver_request_total`); after the fault is cleared, the time until
//!    every object is Synced=True again; and every target Secret's resourceVersion and data (a keyed hash)
//!    before the outage, at its end and after the recovery.
//! 2. kills: `FAULTS_ROTATING` ManagedSecrets (default 20), each in its own ESC environment, strategy Generate
//!    and a pushTo to the local GitHub server. A driver keeps rotations going: for each object a new unique
//!    `keyward.dev/rotate-now` request as soon as the previous one is handled (`status.rotation.handledRequest`
//!    equals it). Meanwhile keyward is SIGKILLed `FAULTS_KILLS` times (default 100), after a uniformly random
//!    `FAULTS_KILL_MIN_MS`..`FAULTS_KILL_MAX_MS` (default 500..4000) of life each, and a new one started at once.
//!    Then requests stop, everything converges, and for every object: the Secret's value, ESC's value and the
//!    value GitHub received last are the same; ESC revisions since setup = rotate-now requests handled; no
//!    rotation is in progress. Any mismatch fails the run (values are compared, and printed only as hashes).
//!
//! `FAULTS_SCENARIOS` (default `outage,kills`) picks the scenarios; with `FAULTS_KEEP` set, each scenario's
//! directory (keyward's logs) is kept. Run: `make bench-faults`, or
//! `make bench-faults FAULTS_OUTAGE_N=100 FAULTS_OUTAGE_SECONDS=60 FAULTS_KILLS=10`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use common::{
    ApiRequests, KeywardProcess, Launch, MANAGED_BY, Tracker, commit, for_each_concurrently, install_crds, is_write,
    machine_info, parsed, var,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::api::ManagedSecret;
use keyward_dev::control_plane::{ControlPlane, Options};
use keyward_dev::esc_server::{EscServer, EscServerOptions, Fault};
use keyward_dev::github_server::{GithubServer, GithubServerOptions};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

const ESC_TOKEN: &str = "faults-esc-token";
const GITHUB_TOKEN: &str = "faults-github-token";
const ESC_ORG: &str = "bench";
/// The repository the rotated values are pushed to (the GitHub server accepts every repository).
const GITHUB_REPO: &str = "acme/app";
const GITHUB_SCOPE: &str = "repo/acme/app";
/// The namespace of the rotating objects.
const ROTATING_NS: &str = "faults-rot";
/// How long keyward's reconcile count must stand still before a phase counts as settled.
const QUIET: Duration = Duration::from_secs(3);
/// The sampling window of the outage.
const WINDOW: Duration = Duration::from_secs(10);

/// What a run does, from `FAULTS_*` environment variables (an empty value counts as unset).
struct Settings {
    scenarios: Vec<String>,
    outage_n: usize,
    outage: Duration,
    refresh: String,
    refresh_interval: Duration,
    environments: usize,
    namespaces: usize,
    concurrency: u16,
    kills: usize,
    rotating: usize,
    kill_min_ms: u64,
    kill_max_ms: u64,
    /// `FAULTS_TIMEOUT` (seconds): the longest a convergence may take.
    timeout: Duration,
    keyward_bin: PathBuf,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let refresh = var("FAULTS_REFRESH").unwrap_or_else(|| "1m".into());
        let refresh_interval = keyward::duration::parse(&refresh).map_err(|e| anyhow!("FAULTS_REFRESH: {e}"))?;
        let s = Settings {
            scenarios: var("FAULTS_SCENARIOS")
                .unwrap_or_else(|| "outage,kills".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            outage_n: parsed("FAULTS_OUTAGE_N", 1000)?,
            outage: Duration::from_secs(parsed("FAULTS_OUTAGE_SECONDS", 600)?),
            refresh,
            refresh_interval,
            environments: parsed("FAULTS_ENVS", 10)?,
            namespaces: parsed("FAULTS_NAMESPACES", 10)?,
            concurrency: parsed("FAULTS_CONCURRENCY", 8)?,
            kills: parsed("FAULTS_KILLS", 100)?,
            rotating: parsed("FAULTS_ROTATING", 20)?,
            kill_min_ms: parsed("FAULTS_KILL_MIN_MS", 500)?,
            kill_max_ms: parsed("FAULTS_KILL_MAX_MS", 4000)?,
            timeout: Duration::from_secs(parsed("FAULTS_TIMEOUT", 600)?),
            keyward_bin: var("KEYWARD_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyward")), PathBuf::from),
        };
        if s.outage_n == 0 || s.environments == 0 || s.namespaces == 0 || s.rotating == 0 {
            bail!("FAULTS_OUTAGE_N, FAULTS_ENVS, FAULTS_NAMESPACES and FAULTS_ROTATING must be positive");
        }
        if s.kill_min_ms > s.kill_max_ms {
            bail!("FAULTS_KILL_MIN_MS must not exceed FAULTS_KILL_MAX_MS");
        }
        if let Some(bad) = s.scenarios.iter().find(|x| !matches!(x.as_str(), "outage" | "kills")) {
            bail!("FAULTS_SCENARIOS: unknown scenario {bad} (outage, kills)");
        }
        Ok(s)
    }
}

fn main() -> anyhow::Result<()> {
    keyward::install_crypto_provider();
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let machine = machine_info();
    let commit = commit();
    println!("keyward faults benchmark (issue 16)");
    println!("machine: {machine}");
    println!("commit: {commit}");
    println!("keyward: {}", settings.keyward_bin.display());
    let mut tables = Vec::new();
    let mut failed = Vec::new();
    for scenario in &settings.scenarios {
        println!("\n== {scenario}");
        let outcome = runtime.block_on(async {
            tokio::select! {
                r = run(scenario, &settings) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        });
        match outcome {
            Ok((table, problems)) => {
                if !problems.is_empty() {
                    failed.push(format!("{scenario}: {}", problems.join("; ")));
                }
                tables.push(table);
            }
            Err(e) => {
                eprintln!("{scenario} failed: {e:#}");
                failed.push(format!("{scenario}: {e:#}"));
                if e.to_string() == "interrupted" {
                    break;
                }
            }
        }
    }
    println!("\nmachine: {machine}; commit {commit}");
    for t in &tables {
        println!("\n{t}");
    }
    if !failed.is_empty() {
        bail!("faults benchmark failed:\n- {}", failed.join("\n- "));
    }
    Ok(())
}

/// One scenario's world, stopped when dropped (also on failure): keyward, the GitHub and ESC servers, the
/// control plane, then the directory they all lived in.
struct World {
    keyward: Option<KeywardProcess>,
    github: Option<GithubServer>,
    esc: Option<EscServer>,
    control_plane: Option<ControlPlane>,
    client: Client,
    launch: Launch,
    dir: tempfile::TempDir,
}

impl World {
    /// A fresh control plane with the CRDs and `namespaces` (and keyward's own), the ESC server, and the GitHub
    /// server when `github`. keyward is not started.
    async fn start(s: &Settings, namespaces: &[String], github: bool, rust_log: &str) -> anyhow::Result<World> {
        let dir = tempfile::Builder::new().prefix("keyward-faults-").tempdir()?;
        // The binary is copied first: a build that replaces it meanwhile must not change what is started.
        let keyward_bin = dir.path().join("keyward");
        std::fs::copy(&s.keyward_bin, &keyward_bin).with_context(|| {
            format!(
                "copy {} (build it first: make bench-faults does)",
                s.keyward_bin.display()
            )
        })?;
        let started = Instant::now();
        let control_plane = ControlPlane::start(Options {
            dir: dir.path().join("control-plane"),
            with_controllers: false,
            keep: false,
        })
        .await
        .context("start the control plane (KEYWARD_TOOLS_DIR must hold etcd and kube-apiserver: make tools)")?;
        let kubeconfig = control_plane.kubeconfig_path().to_path_buf();
        let client = control_plane.client().await?;
        let mut world = World {
            keyward: None,
            github: None,
            esc: None,
            control_plane: Some(control_plane),
            client: client.clone(),
            launch: Launch {
                bin: keyward_bin,
                dir: dir.path().to_path_buf(),
                kubeconfig,
                esc_url: String::new(),
                esc_token_file: dir.path().join("esc-token"),
                concurrency: s.concurrency,
                extra_args: Vec::new(),
                rust_log: rust_log.into(),
            },
            dir,
        };
        install_crds(&client).await?;
        for ns in namespaces.iter().map(String::as_str).chain(["keyward-system"]) {
            let object: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &object)
                .await?;
        }
        let esc = EscServer::start(EscServerOptions {
            listen: "127.0.0.1:0".parse()?,
            data: world.dir.path().join("esc.json"),
            token: Some(ESC_TOKEN.into()),
        })
        .await?;
        std::fs::write(&world.launch.esc_token_file, ESC_TOKEN)?;
        world.launch.esc_url = esc.base_url();
        world.esc = Some(esc);
        if github {
            let server = GithubServer::start(GithubServerOptions {
                listen: "127.0.0.1:0".parse()?,
                token: Some(GITHUB_TOKEN.into()),
                repositories: Vec::new(),
            })
            .await?;
            let token_file = world.dir.path().join("github-token");
            std::fs::write(&token_file, GITHUB_TOKEN)?;
            world.launch.extra_args = vec![
                format!("--github-url={}", server.base_url()),
                format!("--github-token-file={}", token_file.display()),
                "--restart-debounce-seconds=1".into(),
            ];
            world.github = Some(server);
        }
        println!(
            "control plane and servers ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(world)
    }

    fn esc(&self) -> anyhow::Result<&EscServer> {
        self.esc
            .as_ref()
            .ok_or_else(|| anyhow!("the ESC server is not running"))
    }

    fn github(&self) -> anyhow::Result<&GithubServer> {
        self.github
            .as_ref()
            .ok_or_else(|| anyhow!("the GitHub server is not running"))
    }

    fn keyward(&self) -> anyhow::Result<&KeywardProcess> {
        self.keyward.as_ref().ok_or_else(|| anyhow!("keyward is not running"))
    }

    async fn stop(mut self) {
        if let Some(mut k) = self.keyward.take() {
            k.stop(Duration::from_secs(30)).await;
        }
        if let Some(github) = self.github.take() {
            github.stop().await;
        }
        if let Some(esc) = self.esc.take() {
            esc.stop().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
        if var("FAULTS_KEEP").is_some() {
            println!("kept {} (keyward's logs)", self.dir.keep().display());
        }
    }
}

/// Runs one scenario on a world of its own: its table, and what went wrong (empty when nothing did).
async fn run(scenario: &str, s: &Settings) -> anyhow::Result<(String, Vec<String>)> {
    let (namespaces, github, rust_log): (Vec<String>, bool, &str) = match scenario {
        "outage" => (
            (0..s.namespaces).map(|i| format!("faults-{i}")).collect(),
            false,
            "warn",
        ),
        _ => (vec![ROTATING_NS.to_string()], true, "info"),
    };
    let mut world = World::start(s, &namespaces, github, rust_log).await?;
    let result = match scenario {
        "outage" => outage(s, &namespaces, &mut world).await,
        _ => kills(s, &mut world).await,
    };
    if result.is_err()
        && let Some(k) = &world.keyward
    {
        eprintln!(
            "---- keyward log {} (last 30 lines) ----\n{}",
            k.log_path().display(),
            k.log_tail(30)
        );
    }
    world.stop().await;
    result
}

// ---------------------------------------------------------------------------------------------------------
// 1. ESC outage

/// A Secret as it was at one moment: its resourceVersion and a hash of its data.
type SecretState = BTreeMap<String, (String, String)>;

async fn secret_states(client: &Client) -> anyhow::Result<SecretState> {
    let list = Api::<Secret>::all(client.clone())
        .list(&ListParams::default().labels(MANAGED_BY))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|secret| {
            let mut h = Sha256::new();
            for (k, v) in secret.data.iter().flatten() {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(&v.0);
                h.update([0]);
            }
            let rv = secret.metadata.resource_version.clone().unwrap_or_default();
            (common::key(secret), (rv, hex::encode(&h.finalize()[..6])))
        })
        .collect())
}

/// The Secrets whose resourceVersion or data differ between two moments (or that came or went), described.
fn changed(before: &SecretState, after: &SecretState) -> Vec<String> {
    let mut out = Vec::new();
    for (key, (rv, hash)) in before {
        match after.get(key) {
            None => out.push(format!("{key}: gone")),
            Some((rv2, hash2)) if rv2 != rv || hash2 != hash => {
                out.push(format!(
                    "{key}: resourceVersion {rv} -> {rv2}, data hash {hash} -> {hash2}"
                ));
            }
            Some(_) => {}
        }
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("{key}: new"));
    }
    out
}

/// keyward's CPU time so far (ms), zero if it cannot be read.
fn cpu_ms(k: &KeywardProcess) -> f64 {
    k.usage().map_or(0.0, |(cpu, _)| cpu)
}

async fn outage(s: &Settings, namespaces: &[String], world: &mut World) -> anyhow::Result<(String, Vec<String>)> {
    let n = s.outage_n;
    let mut problems = Vec::new();
    // ESC: environment k holds the values of objects k, k + envs, k + 2 envs, ...
    for env in 0..s.environments {
        let mut yaml = String::from("values:\n  app:\n");
        for i in (env..n).step_by(s.environments) {
            yaml.push_str(&format!("    s{i}:\n      fn::secret: v{i:031}\n"));
        }
        world
            .esc()?
            .put_definition(ESC_ORG, "outage", &format!("env-{env}"), &yaml)?;
    }
    let keyward = world.launch.start("keyward-outage")?;
    keyward.wait_ready(Duration::from_secs(120)).await?;
    world.keyward = Some(keyward);
    let client = world.client.clone();
    let tracker = Tracker::start(client.clone());
    let created = Instant::now();
    for_each_concurrently(n, |i| {
        let api = Api::<ManagedSecret>::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
        let object: Result<ManagedSecret, _> = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": format!("ms-{i}")},
            "spec": {
                "source": {"esc": {
                    "environment": format!("{ESC_ORG}/outage/env-{}", i % s.environments),
                    "path": format!("app.s{i}"),
                }},
                "target": {"key": "VALUE"},
                "refreshInterval": s.refresh,
            }
        }));
        async move {
            api.create(&PostParams::default(), &object.map_err(kube::Error::SerdeError)?)
                .await
                .map(drop)
        }
    })
    .await
    .context("create the ManagedSecrets")?;
    if !tracker
        .wait(n, s.timeout, |p| p.ready_with_secret == n && p.synced == n)
        .await
    {
        bail!(
            "the {n} objects did not all become Ready and Synced within {} s",
            s.timeout.as_secs()
        );
    }
    println!(
        "setup: {n} ManagedSecrets Ready and Synced with their Secret {:.1} s after the first create",
        created.elapsed().as_secs_f64()
    );
    world.keyward()?.settle(QUIET, s.timeout).await;
    let before_secrets = secret_states(&client).await?;
    if before_secrets.len() != n {
        bail!("{} target Secrets, expected {n}", before_secrets.len());
    }

    // The outage.
    let esc = world.esc()?;
    let api_before = ApiRequests::scrape(&client).await?;
    let esc_before = esc.counters();
    let cpu_before = cpu_ms(world.keyward()?);
    esc.set_fault(Fault::unavailable(None));
    let fault_set = Instant::now();
    println!(
        "outage: ESC answers 503 for {} s (refresh interval {})",
        s.outage.as_secs(),
        s.refresh
    );
    let mut windows: Vec<(u64, f64)> = Vec::new();
    let (mut last_total, mut last_cpu) = (esc_before.total, cpu_before);
    let mut next = fault_set + WINDOW;
    while next <= fault_set + s.outage {
        tokio::time::sleep_until(next.into()).await;
        let total = esc.counters().total;
        let cpu = cpu_ms(world.keyward()?);
        windows.push((total - last_total, cpu - last_cpu));
        (last_total, last_cpu) = (total, cpu);
        if windows.len().is_multiple_of(6) {
            let p = tracker.progress();
            println!(
                "  {:>4} s: {} ESC requests in the last minute; Synced {:?}",
                windows.len() * 10,
                windows.iter().rev().take(6).map(|w| w.0).sum::<u64>(),
                p.synced_by
            );
        }
        next += WINDOW;
    }
    tokio::time::sleep_until((fault_set + s.outage).into()).await;
    let outage_secs = fault_set.elapsed().as_secs_f64();
    let esc_during = esc.counters();
    let cpu_during = cpu_ms(world.keyward()?) - cpu_before;
    let at_end = tracker.progress();
    let outage_end = Instant::now();
    // When each object went Synced=False, counted from the fault; and those that never did, with how long they
    // have been Synced=True.
    let mut went: Vec<f64> = tracker
        .unsynced()
        .iter()
        .map(|(_, at)| at.saturating_duration_since(fault_set).as_secs_f64())
        .collect();
    went.sort_by(f64::total_cmp);
    let mut still: Vec<(String, f64)> = tracker
        .synced()
        .into_iter()
        .map(|(key, since)| (key, outage_end.saturating_duration_since(since).as_secs_f64()))
        .collect();
    still.sort_by(|a, b| a.0.cmp(&b.0));
    let secrets_at_end = secret_states(&client).await?;
    let api_during = ApiRequests::scrape(&client).await?.minus(&api_before);

    // Recovery.
    esc.set_fault(Fault::none());
    let cleared = Instant::now();
    let recovered = tracker.wait(n, s.timeout, |p| p.synced == n).await;
    let progress = tracker.progress();
    let recovery = progress
        .last_synced_at
        .map(|at| at.saturating_duration_since(cleared).as_secs_f64());
    world.keyward()?.settle(QUIET, s.timeout).await;
    let esc_after = esc.counters();
    let api_recovery = ApiRequests::scrape(&client)
        .await?
        .minus(&api_before)
        .minus(&api_during);
    let secrets_after = secret_states(&client).await?;
    tracker.stop();
    if let Some(status) = world.keyward.as_mut().and_then(KeywardProcess::exited) {
        problems.push(format!("keyward exited during the outage or the recovery ({status})"));
    }

    // What it means.
    let total: u64 = windows.iter().map(|w| w.0).sum();
    let max_window = windows.iter().map(|w| w.0).max().unwrap_or(0);
    let max_cpu_window = windows.iter().map(|w| w.1).fold(0.0, f64::max);
    let changed_during = changed(&before_secrets, &secrets_at_end);
    let changed_overall = changed(&before_secrets, &secrets_after);
    let unavailable = at_end.synced_by.get("False/SourceUnavailable").copied().unwrap_or(0);
    let endpoints = |before: &keyward_dev::esc_server::Counters, after: &keyward_dev::esc_server::Counters| {
        after
            .requests
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.requests(k);
                (d > 0).then(|| format!("{k} {d}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let refresh_s = s.refresh_interval.as_secs_f64();
    if !changed_during.is_empty() || !changed_overall.is_empty() {
        problems.push(format!(
            "{} Secrets changed during the outage, {} across it and the recovery: {}",
            changed_during.len(),
            changed_overall.len(),
            changed_overall.iter().take(10).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    if !recovered {
        problems.push(format!(
            "only {} of {n} Synced=True {} s after ESC returned ({:?})",
            progress.synced,
            s.timeout.as_secs(),
            progress.synced_by
        ));
    } else if recovery.is_some_and(|r| r > refresh_s) {
        problems.push(format!(
            "recovery took {:.1} s, more than one refresh interval ({})",
            recovery.unwrap_or_default(),
            s.refresh
        ));
    }
    let by_resource = |api: &ApiRequests| api.describe(is_write);
    let mut t = String::new();
    t.push_str(&format!(
        "ESC outage: {n} ManagedSecrets, {} ESC environments, {} namespaces, refresh {}, --concurrency {}, \
         503 for {:.0} s\n\n",
        s.environments, s.namespaces, s.refresh, s.concurrency, outage_secs
    ));
    t.push_str("| measure | value |\n|---|---|\n");
    let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
    row(
        "ESC requests during the outage: total / mean per s / max per 10 s window",
        format!("{total} / {:.2} / {max_window}", total as f64 / outage_secs),
    );
    row(
        "ESC requests by endpoint during the outage",
        endpoints(&esc_before, &esc_during),
    );
    row(
        "keyward CPU during the outage: total / mean / max per 10 s window",
        format!(
            "{:.0} ms / {:.2}% of a core / {:.0} ms",
            cpu_during,
            cpu_during / 10.0 / outage_secs,
            max_cpu_window
        ),
    );
    row(
        "objects Synced=False SourceUnavailable at the end of the outage",
        format!("{unavailable} of {n} (Synced by status/reason: {:?})", at_end.synced_by),
    );
    row(
        "fault set → object Synced=False: first / median / last",
        match (went.first(), went.get(went.len() / 2), went.last()) {
            (Some(a), Some(m), Some(z)) => format!("{a:.1} s / {m:.1} s / {z:.1} s ({} objects)", went.len()),
            _ => "none went Synced=False".into(),
        },
    );
    row(
        "objects still Synced=True at the end of the outage (first 5, Synced=True for)",
        format!(
            "{}{}",
            still.len(),
            if still.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    still
                        .iter()
                        .take(5)
                        .map(|(k, d)| format!("{k} {d:.0} s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    );
    row(
        "objects Ready=True at the end of the outage",
        format!("{} of {n}", at_end.ready),
    );
    row("keyward's API writes during the outage", by_resource(&api_during));
    row(
        "ESC returned → all Synced=True",
        match recovery {
            Some(r) if recovered => format!("{r:.1} s (refresh interval {:.0} s)", refresh_s),
            _ => format!("not within {} s: {} of {n}", s.timeout.as_secs(), progress.synced),
        },
    );
    row(
        "ESC requests during the recovery",
        format!(
            "{} ({})",
            esc_after.total - esc_during.total,
            endpoints(&esc_during, &esc_after)
        ),
    );
    row("keyward's API writes during the recovery", by_resource(&api_recovery));
    row(
        "target Secrets changed (resourceVersion or data): end of outage / after recovery",
        format!("{} / {} of {n}", changed_during.len(), changed_overall.len()),
    );
    let per_window: Vec<String> = windows.iter().map(|w| w.0.to_string()).collect();
    t.push_str(&format!("\nESC requests per 10 s window: {}\n", per_window.join(" ")));
    println!("{t}");
    Ok((t, problems))
}

// ---------------------------------------------------------------------------------------------------------
// 2. SIGKILLs during rotations

/// The driver's view of one rotating object.
#[derive(Default, Clone)]
struct Driven {
    /// rotate-now requests issued (the last one is `faults-I-ISSUED`).
    issued: u64,
    /// Of those, handled (status.rotation.handledRequest reached them).
    handled: u64,
    issued_at: Option<Instant>,
    /// Request → handled, summed, for the mean.
    latency_sum: Duration,
    /// A handledRequest the driver never issued or had already seen handled (should never happen).
    anomalies: Vec<String>,
}

fn request_name(i: usize, seq: u64) -> String {
    format!("faults-{i}-{seq}")
}

/// Keeps rotations going until `stop`: reads the objects every 250 ms and annotates each whose last request is
/// handled with the next one.
async fn drive(client: Client, state: Arc<Mutex<Vec<Driven>>>, stop: Arc<AtomicBool>) {
    let api: Api<ManagedSecret> = Api::namespaced(client, ROTATING_NS);
    loop {
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let stopping = stop.load(Ordering::SeqCst);
        let mut next = Vec::new();
        {
            let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
            for ms in &list.items {
                let Some(i) = ms.name_any().strip_prefix("rot-").and_then(|i| i.parse::<usize>().ok()) else {
                    continue;
                };
                let Some(d) = st.get_mut(i) else { continue };
                let handled = ms
                    .status
                    .as_ref()
                    .and_then(|s| s.rotation.as_ref())
                    .and_then(|r| r.handled_request.clone());
                let current = (d.issued > 0).then(|| request_name(i, d.issued));
                let previous = (d.issued > 1).then(|| request_name(i, d.issued - 1));
                if handled.is_some() && handled == current {
                    if d.handled < d.issued {
                        d.handled = d.issued;
                        if let Some(at) = d.issued_at {
                            d.latency_sum += at.elapsed();
                        }
                    }
                } else if let Some(h) = &handled
                    && handled != previous
                {
                    let note = format!(
                        "handledRequest {h} while {} is outstanding",
                        current.as_deref().unwrap_or("nothing")
                    );
                    if !d.anomalies.contains(&note) {
                        d.anomalies.push(note);
                    }
                }
                // The object has synced once (it has a status) before its first request.
                if !stopping && d.handled == d.issued && ms.status.is_some() {
                    next.push((ms.name_any(), i, d.issued + 1));
                }
            }
        }
        for (name, i, seq) in next {
            let patch =
                serde_json::json!({"metadata": {"annotations": {"keyward.dev/rotate-now": request_name(i, seq)}}});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(d) = st.get_mut(i) {
                    d.issued = seq;
                    d.issued_at = Some(Instant::now());
                }
            }
        }
        if stopping {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A short keyed-free hash of a value, for reports: never the value itself.
fn value_hash(v: Option<&str>) -> String {
    v.map_or_else(|| "none".into(), |v| hex::encode(&Sha256::digest(v.as_bytes())[..6]))
}

/// What ESC holds at `app.password` of `env` now, and the environment's revision, read as keyward reads it.
async fn esc_read(base_url: &str, env: &str) -> anyhow::Result<(String, i64)> {
    let client = keyward::esc::EscClient::new(keyward::esc::EscConfig::new(
        base_url.to_string(),
        Some(ESC_TOKEN.to_string().into()),
    ))?;
    let (value, revision) = keyward::source::esc::EscSource::new(client)
        .get(env, None, "app.password", Instant::now())
        .await
        .map_err(|e| anyhow!("read {env}: {e}"))?;
    Ok((String::from_utf8(value.expose().to_vec())?, revision))
}

fn rotating_env(i: usize) -> String {
    format!("{ESC_ORG}/rot/env-{i}")
}

fn github_name(i: usize) -> String {
    format!("ROT_{i}")
}

/// One object's final state.
struct Final {
    secret: Option<String>,
    esc: String,
    revision: i64,
    github: Option<String>,
    in_progress: bool,
}

async fn final_state(world: &World, i: usize) -> anyhow::Result<Final> {
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), ROTATING_NS);
    let managed: Api<ManagedSecret> = Api::namespaced(world.client.clone(), ROTATING_NS);
    let secret = secrets
        .get_opt(&format!("rot-{i}"))
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get("VALUE").map(|b| String::from_utf8_lossy(&b.0).into_owned()));
    let (esc, revision) = esc_read(&world.esc()?.base_url(), &rotating_env(i)).await?;
    let github = world.github()?.received(GITHUB_SCOPE, &github_name(i));
    let in_progress = managed
        .get(&format!("rot-{i}"))
        .await?
        .status
        .and_then(|s| s.rotation)
        .is_some_and(|r| r.in_progress.is_some());
    Ok(Final {
        secret,
        esc,
        revision,
        github,
        in_progress,
    })
}

async fn kills(s: &Settings, world: &mut World) -> anyhow::Result<(String, Vec<String>)> {
    let n = s.rotating;
    let mut problems = Vec::new();
    let mut base = Vec::new();
    for i in 0..n {
        let rev = world.esc()?.put_definition(
            ESC_ORG,
            "rot",
            &format!("env-{i}"),
            &format!("values:\n  app:\n    password:\n      fn::secret: initial-value-{i:04}\n"),
        )?;
        base.push(i64::try_from(rev)?);
    }
    let keyward = world.launch.start("keyward-0")?;
    keyward.wait_ready(Duration::from_secs(120)).await?;
    world.keyward = Some(keyward);
    let managed: Api<ManagedSecret> = Api::namespaced(world.client.clone(), ROTATING_NS);
    for i in 0..n {
        let object: ManagedSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": format!("rot-{i}")},
            "spec": {
                "source": {"esc": {"environment": rotating_env(i), "path": "app.password"}},
                "target": {"key": "VALUE"},
                "refreshInterval": "1h",
                "rotation": {
                    "strategy": "Generate", "period": "90d",
                    "pushTo": [{"github": {"repository": GITHUB_REPO, "secretName": github_name(i)}}]
                }
            }
        }))?;
        managed.create(&PostParams::default(), &object).await?;
    }
    // Set up: every object synced with its initial value, which GitHub has received.
    let deadline = Instant::now() + s.timeout;
    loop {
        let mut done = 0;
        for i in 0..n {
            let f = final_state(world, i).await?;
            let initial = format!("initial-value-{i:04}");
            if f.secret.as_deref() == Some(initial.as_str()) && f.github.as_deref() == Some(initial.as_str()) {
                done += 1;
            }
        }
        if done == n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "setup: {done} of {n} objects synced and pushed within {} s",
                s.timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("setup: {n} objects synced and pushed to GitHub");

    // Rotations and kills.
    let state = Arc::new(Mutex::new(vec![Driven::default(); n]));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(drive(world.client.clone(), state.clone(), stop.clone()));
    let started = Instant::now();
    let mut unexpected_exits = Vec::new();
    let mut lifetimes = Vec::new();
    let mut interrupted: Vec<(usize, usize)> = Vec::new();
    for k in 1..=s.kills {
        let life = Duration::from_millis(rand::random_range(s.kill_min_ms..=s.kill_max_ms));
        tokio::time::sleep(life).await;
        let mut old = world.keyward.take().ok_or_else(|| anyhow!("keyward is not running"))?;
        if let Some(status) = old.exited() {
            unexpected_exits.push(format!(
                "{} exited by itself ({status}): {}",
                old.log_path().display(),
                old.log_tail(5)
            ));
        }
        old.kill().await?;
        lifetimes.push(life);
        // What the kill interrupted: rotations with a recorded intent (the target Secret's
        // `keyward.dev/rotation-intent` annotation, written before ESC is), and requests not handled yet.
        let in_progress = Api::<Secret>::namespaced(world.client.clone(), ROTATING_NS)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|secret| secret.annotations().keys().any(|k| k.ends_with("rotation-intent")))
            .count();
        let outstanding = {
            let st = state.lock().unwrap_or_else(PoisonError::into_inner);
            st.iter().filter(|d| d.handled < d.issued).count()
        };
        interrupted.push((in_progress, outstanding));
        world.keyward = Some(world.launch.start(&format!("keyward-{k}"))?);
        if k.is_multiple_of(10) {
            let st = state.lock().unwrap_or_else(PoisonError::into_inner);
            println!(
                "  {k} kills, {:.0} s: {} rotations requested, {} handled",
                started.elapsed().as_secs_f64(),
                st.iter().map(|d| d.issued).sum::<u64>(),
                st.iter().map(|d| d.handled).sum::<u64>()
            );
        }
    }
    let kill_phase = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    driver.await?;
    println!(
        "{} kills in {:.0} s; requests stopped, waiting for convergence",
        s.kills,
        kill_phase.as_secs_f64()
    );

    // Convergence: every issued request handled, nothing in progress, Secret = ESC = GitHub.
    let converge_started = Instant::now();
    let deadline = converge_started + s.timeout;
    let mut finals;
    loop {
        // The driver has stopped: count what it would have counted.
        let list = managed.list(&ListParams::default()).await?;
        {
            let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
            for ms in &list.items {
                let Some(i) = ms.name_any().strip_prefix("rot-").and_then(|i| i.parse::<usize>().ok()) else {
                    continue;
                };
                let handled = ms
                    .status
                    .as_ref()
                    .and_then(|s| s.rotation.as_ref())
                    .and_then(|r| r.handled_request.clone());
                if let Some(d) = st.get_mut(i)
                    && d.issued > 0
                    && handled == Some(request_name(i, d.issued))
                    && d.handled < d.issued
                {
                    d.handled = d.issued;
                    if let Some(at) = d.issued_at {
                        d.latency_sum += at.elapsed();
                    }
                }
            }
        }
        finals = Vec::new();
        for i in 0..n {
            finals.push(final_state(world, i).await?);
        }
        let all_handled = {
            let st = state.lock().unwrap_or_else(PoisonError::into_inner);
            st.iter().all(|d| d.handled == d.issued)
        };
        let agree = finals.iter().all(|f| {
            !f.in_progress && f.secret.as_deref() == Some(f.esc.as_str()) && f.github.as_deref() == Some(f.esc.as_str())
        });
        if all_handled && agree {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "not converged {} s after the last kill (all handled: {all_handled}, all agree: {agree})",
                s.timeout.as_secs()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converge = converge_started.elapsed();
    // A late rotation or write would show here: wait a little, then read everything once more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut finals2 = Vec::new();
    for i in 0..n {
        finals2.push(final_state(world, i).await?);
    }
    let st = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut mismatches = Vec::new();
    for (i, (f, d)) in finals2.iter().zip(&st).enumerate() {
        let revisions = f.revision - base[i];
        let mut wrong = Vec::new();
        if f.secret.as_deref() != Some(f.esc.as_str()) {
            wrong.push("Secret != ESC");
        }
        if f.github.as_deref() != Some(f.esc.as_str()) {
            wrong.push("GitHub != ESC");
        }
        if i64::try_from(d.handled).unwrap_or(i64::MAX) < revisions {
            wrong.push("more ESC revisions than rotations handled (a doubled rotation)");
        }
        if i64::try_from(d.handled).unwrap_or(i64::MAX) > revisions {
            wrong.push("fewer ESC revisions than rotations handled (a lost rotation)");
        }
        if d.handled != d.issued {
            wrong.push("a request never handled");
        }
        if f.in_progress {
            wrong.push("a rotation still in progress");
        }
        if f.secret != finals[i].secret || f.esc != finals[i].esc {
            wrong.push("changed after convergence");
        }
        if !d.anomalies.is_empty() {
            wrong.push("unexpected handledRequest");
        }
        if !wrong.is_empty() {
            mismatches.push(format!(
                "rot-{i}: {} — hashes: Secret {}, ESC {}, GitHub {}; ESC revision {} (base {}, {revisions} since), \
                 requests issued {}, handled {}, GitHub PUTs {}; {}",
                wrong.join(", "),
                value_hash(f.secret.as_deref()),
                value_hash(Some(f.esc.as_str())),
                value_hash(f.github.as_deref()),
                f.revision,
                base[i],
                d.issued,
                d.handled,
                world.github()?.puts(GITHUB_SCOPE, &github_name(i)),
                d.anomalies.join("; ")
            ));
        }
    }
    let issued: u64 = st.iter().map(|d| d.issued).sum();
    let handled: u64 = st.iter().map(|d| d.handled).sum();
    let revisions: i64 = finals2.iter().zip(&base).map(|(f, b)| f.revision - b).sum();
    let puts: u64 = (0..n)
        .map(|i| world.github().map(|g| g.puts(GITHUB_SCOPE, &github_name(i))))
        .sum::<anyhow::Result<u64>>()?;
    let latency: Duration = st.iter().map(|d| d.latency_sum).sum();
    let mean_life = lifetimes.iter().sum::<Duration>().as_secs_f64() / lifetimes.len().max(1) as f64;
    if !mismatches.is_empty() {
        problems.push(format!(
            "{} objects disagree:\n  {}",
            mismatches.len(),
            mismatches.join("\n  ")
        ));
    }
    if !unexpected_exits.is_empty() {
        problems.push(format!("keyward exited by itself: {}", unexpected_exits.join("; ")));
    }
    let log_errors = count_log_lines(world.launch.dir.as_path(), "\"level\":\"ERROR\"");
    let mut t = String::new();
    t.push_str(&format!(
        "SIGKILLs during rotations: {n} ManagedSecrets (Generate, pushTo GitHub), each in its own ESC \
         environment; keyward killed after {}..{} ms of life\n\n",
        s.kill_min_ms, s.kill_max_ms
    ));
    t.push_str("| measure | value |\n|---|---|\n");
    let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
    row("SIGKILLs", format!("{} (mean life {mean_life:.2} s)", lifetimes.len()));
    row(
        "kills with a rotation in progress (intent on the Secret) / with a request outstanding",
        format!(
            "{} / {} (in progress at a kill: {} objects in all)",
            interrupted.iter().filter(|i| i.0 > 0).count(),
            interrupted.iter().filter(|i| i.1 > 0).count(),
            interrupted.iter().map(|i| i.0).sum::<usize>()
        ),
    );
    row("rotations requested / handled", format!("{issued} / {handled}"));
    row(
        "ESC revisions written (all objects) / rotations handled",
        format!("{revisions} / {handled}"),
    );
    row(
        "GitHub PUTs accepted (initial pushes and retries included)",
        puts.to_string(),
    );
    row(
        "mean request → handled",
        format!("{:.2} s", latency.as_secs_f64() / handled.max(1) as f64),
    );
    row(
        "objects where Secret = ESC = GitHub, no rotation in progress",
        format!("{} of {n}", n - mismatches.len()),
    );
    row("mismatches", mismatches.len().to_string());
    row("keyward exits not caused by a kill", unexpected_exits.len().to_string());
    row("ERROR lines in keyward's logs (all runs)", log_errors.to_string());
    row(
        "time: kills / convergence after the last kill / total",
        format!(
            "{:.0} s / {:.1} s / {:.0} s",
            kill_phase.as_secs_f64(),
            converge.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    println!("{t}");
    Ok((t, problems))
}

/// Lines containing `needle` in every keyward log of the run.
fn count_log_lines(dir: &Path, needle: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}
