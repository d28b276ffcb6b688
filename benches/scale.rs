//! The scale benchmark of issue 16 (`make bench`): keyward against a real kube-apiserver and etcd, measured in
//! the same run against the API server's floor. Prints a markdown table (not a timed test); results go into
//! docs/benchmarks.md.
//!
//! For each N of `BENCH_N` (default `1000,10000`), on a fresh control plane and ESC server:
//! 1. floor: the Go client of `tools/floor` server-side applies N keyward-like Secrets (32 workers); its wall
//!    time is the floor. Its Secrets are then deleted, so keyward never sees them.
//! 2. cold: `BENCH_ENVS` ESC environments hold N values; keyward (the release binary, `--concurrency
//!    BENCH_CONCURRENCY`) starts, and once it is ready N ManagedSecrets are created (32 at a time) over
//!    `BENCH_NAMESPACES` namespaces with refresh interval `BENCH_REFRESH`. Cold time is from the last create to
//!    the moment the last object had both Ready=True and its target Secret, as seen by two watches.
//! 3. restart: SIGTERM, a new keyward, the time until it has reconciled N objects and the writes it made.
//! 4. steady: every object's refresh interval is patched to `BENCH_STEADY_REFRESH` (unless it already is), the
//!    reconciles that causes are waited out, then a window of exactly two refresh ticks is measured.
//!
//! Writes are counted by the API server itself (`apiserver_request_total` on its /metrics), around each phase.
//! Run: `make bench`, or `BENCH_N=200 make bench`. Settings are read from `BENCH_*` variables (see [`Settings`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward::api::{AccessPolicy, ManagedSecret};
use keyward_dev::control_plane::{ControlPlane, Options};
use keyward_dev::esc_server::{EscServer, EscServerOptions};
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

/// Creates (and patches) in flight at once: the same fan-out as the floor's workers.
const CLIENT_WORKERS: usize = 32;
/// The label keyward puts on the Secrets it writes (the floor's Secrets carry it too).
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=keyward";
const ESC_TOKEN: &str = "bench-esc-token";
const ESC_ORG: &str = "bench";
const ESC_PROJECT: &str = "scale";
/// How long keyward's reconcile count must stand still before a phase counts as settled.
const QUIET: Duration = Duration::from_secs(3);

/// What a run measures, from `BENCH_*` environment variables (an empty value counts as unset).
struct Settings {
    /// `BENCH_N`: object counts, one fresh control plane each.
    counts: Vec<usize>,
    /// `BENCH_ENVS`: ESC environments the objects read, round-robin.
    environments: usize,
    /// `BENCH_NAMESPACES`: namespaces the objects (and the floor's Secrets) are spread over, round-robin.
    namespaces: usize,
    /// `BENCH_REFRESH`: the refresh interval the objects are created with (the cold phase).
    refresh: String,
    /// `BENCH_STEADY_REFRESH`: the refresh interval of the steady window (two ticks of it are measured).
    steady_refresh: String,
    /// `BENCH_TIMEOUT` (seconds): the longest a phase may take to converge.
    timeout: Duration,
    /// `BENCH_CONCURRENCY`: keyward's `--concurrency`.
    concurrency: u16,
    /// `KEYWARD_BIN`: the keyward binary to measure.
    keyward_bin: PathBuf,
    /// `BENCH_FLOOR_BIN`: the floor client (default: built or found by `tools/floor.sh --path`).
    floor_bin: Option<PathBuf>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| anyhow!("{name}={v} is not a valid value")),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let counts = var("BENCH_N")
            .unwrap_or_else(|| "1000,10000".into())
            .split(',')
            .map(|n| n.trim().replace('_', "").parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BENCH_N must be a comma-separated list of counts")?;
        let settings = Settings {
            counts,
            environments: parsed("BENCH_ENVS", 10)?,
            namespaces: parsed("BENCH_NAMESPACES", 10)?,
            refresh: var("BENCH_REFRESH").unwrap_or_else(|| "1h".into()),
            steady_refresh: var("BENCH_STEADY_REFRESH").unwrap_or_else(|| "30s".into()),
            timeout: Duration::from_secs(parsed("BENCH_TIMEOUT", 900)?),
            concurrency: parsed("BENCH_CONCURRENCY", 32)?,
            // `cargo bench` builds the binary with the bench profile and the dev-dependencies' features
            // (keyward-dev turns on fault-injection); `make bench` points KEYWARD_BIN at the plain release build.
            keyward_bin: var("KEYWARD_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyward")), PathBuf::from),
            floor_bin: var("BENCH_FLOOR_BIN").map(PathBuf::from),
        };
        if settings.counts.contains(&0) || settings.environments == 0 || settings.namespaces == 0 {
            bail!("BENCH_N, BENCH_ENVS and BENCH_NAMESPACES must be positive");
        }
        keyward::duration::parse(&settings.refresh).map_err(|e| anyhow!("BENCH_REFRESH: {e}"))?;
        keyward::duration::parse(&settings.steady_refresh).map_err(|e| anyhow!("BENCH_STEADY_REFRESH: {e}"))?;
        Ok(settings)
    }
}

/// One N's results. `None` where a phase did not run or its measure was not available.
#[derive(Default)]
struct Row {
    n: usize,
    floor_seconds: f64,
    cold_seconds: Option<f64>,
    /// Objects Ready with their Secret when the cold phase ended (N unless it timed out).
    cold_ready: usize,
    cpu_cold_ms_per_object: Option<f64>,
    cpu_refresh_ms_per_object: Option<f64>,
    rss_mib: Option<f64>,
    cold_writes_per_object: Option<f64>,
    steady_writes: Option<f64>,
    restart_writes: Option<f64>,
    restart_seconds: Option<f64>,
    esc_opens_cold: Option<u64>,
    /// Everything else worth reading (write and read breakdowns, counts per phase), one line each.
    details: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    keyward::install_crypto_provider();
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let machine = machine_info();
    let commit = commit();
    println!("keyward scale benchmark (issue 16)");
    println!("machine: {machine}");
    println!("commit: {commit}");
    println!("keyward: {}", settings.keyward_bin.display());
    println!(
        "settings: N={:?}, {} ESC environments, {} namespaces, --concurrency {}, refresh {} (cold), {} (steady), \
         timeout {} s",
        settings.counts,
        settings.environments,
        settings.namespaces,
        settings.concurrency,
        settings.refresh,
        settings.steady_refresh,
        settings.timeout.as_secs()
    );

    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &settings.counts {
        println!("\n== N = {n}");
        // Ctrl-C drops the run's future, and with it the control plane, keyward and the temporary directory.
        let outcome = runtime.block_on(async {
            tokio::select! {
                r = run(n, &settings) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        });
        match outcome {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("N = {n} failed: {e:#}");
                failed = true;
                if e.to_string() == "interrupted" {
                    break;
                }
            }
        }
    }

    println!("\nmachine: {machine}; commit {commit}");
    print_table(&rows, &settings);
    if failed {
        bail!("at least one run failed (see above)");
    }
    Ok(())
}

/// Everything one N needs, stopped when dropped (also on failure): keyward, the ESC server, the control
/// plane, then the directory they all lived in.
struct Bench {
    keyward: Option<KeywardProcess>,
    esc: Option<EscServer>,
    control_plane: Option<ControlPlane>,
    dir: tempfile::TempDir,
}

impl Bench {
    async fn stop(mut self) {
        if let Some(mut k) = self.keyward.take() {
            k.stop(Duration::from_secs(30)).await;
        }
        if let Some(esc) = self.esc.take() {
            esc.stop().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
    }
}

async fn run(n: usize, s: &Settings) -> anyhow::Result<Row> {
    let dir = tempfile::Builder::new().prefix("keyward-bench-").tempdir()?;
    // The binary is copied first: a build that replaces target/release/keyward meanwhile must not change what
    // the restart phase starts.
    let keyward_bin = dir.path().join("keyward");
    std::fs::copy(&s.keyward_bin, &keyward_bin)
        .with_context(|| format!("copy {} (build it first: make bench does)", s.keyward_bin.display()))?;
    let mut bench = Bench {
        keyward: None,
        esc: None,
        control_plane: None,
        dir,
    };
    let result = measure(n, s, &keyward_bin, &mut bench).await;
    if result.is_err()
        && let Some(k) = &bench.keyward
    {
        eprintln!("---- keyward log (last 30 lines) ----\n{}", k.log_tail(30));
    }
    bench.stop().await;
    result
}

async fn measure(n: usize, s: &Settings, keyward_bin: &Path, bench: &mut Bench) -> anyhow::Result<Row> {
    let mut row = Row { n, ..Row::default() };
    let started = Instant::now();
    let control_plane = ControlPlane::start(Options {
        dir: bench.dir.path().join("control-plane"),
        with_controllers: false,
        keep: false,
    })
    .await
    .context("start the control plane (KEYWARD_TOOLS_DIR must hold etcd and kube-apiserver: make tools)")?;
    let kubeconfig = control_plane.kubeconfig_path().to_path_buf();
    let client = control_plane.client().await?;
    bench.control_plane = Some(control_plane);
    install_crds(&client).await?;
    let namespaces: Vec<String> = (0..s.namespaces).map(|i| format!("bench-{i}")).collect();
    for ns in namespaces.iter().map(String::as_str).chain(["keyward-system"]) {
        let object: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await?;
    }
    println!("control plane ready in {:.1} s", started.elapsed().as_secs_f64());

    // 1. The floor, before keyward exists.
    let floor = run_floor(s, &kubeconfig, &namespaces, n).await?;
    row.floor_seconds = floor;
    println!("floor: {n} Secrets applied in {floor:.2} s");
    // keyward would see Secrets that carry its label but belong to no ManagedSecret: they go before it starts.
    for ns in &namespaces {
        Api::<Secret>::namespaced(client.clone(), ns)
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels(MANAGED_BY))
            .await?;
    }

    // 2. ESC: environment k holds the values of objects k, k + envs, k + 2 envs, ...
    let esc = EscServer::start(EscServerOptions {
        listen: "127.0.0.1:0".parse()?,
        data: bench.dir.path().join("esc.json"),
        token: Some(ESC_TOKEN.into()),
    })
    .await?;
    let token_file = bench.dir.path().join("esc-token");
    std::fs::write(&token_file, ESC_TOKEN)?;
    for env in 0..s.environments {
        let mut yaml = String::from("values:\n  app:\n");
        for i in (env..n).step_by(s.environments) {
            yaml.push_str(&format!("    s{i}:\n      fn::secret: v{i:031}\n"));
        }
        esc.put_definition(ESC_ORG, ESC_PROJECT, &format!("env-{env}"), &yaml)?;
    }
    let esc_url = esc.base_url();
    bench.esc = Some(esc);

    let launch = Launch {
        bin: keyward_bin.to_path_buf(),
        dir: bench.dir.path().to_path_buf(),
        kubeconfig: kubeconfig.clone(),
        esc_url,
        esc_token_file: token_file,
        concurrency: s.concurrency,
    };
    let keyward = launch.start("keyward-1")?;
    let ready_after = keyward.wait_ready(Duration::from_secs(120)).await?;
    println!("keyward ready {:.1} s after its start", ready_after.as_secs_f64());
    bench.keyward = Some(keyward);

    let tracker = Tracker::start(client.clone());
    let before = Sample::take(&client, bench).await?;
    let ms_api = |i: usize| Api::<ManagedSecret>::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
    let created = Instant::now();
    for_each_concurrently(n, |i| {
        let api = ms_api(i);
        let object = managed_secret(i, s);
        async move { api.create(&PostParams::default(), &object?).await.map(drop) }
    })
    .await
    .context("create the ManagedSecrets")?;
    let last_create = Instant::now();
    println!(
        "created {n} ManagedSecrets in {:.2} s; waiting for Ready + Secret",
        (last_create - created).as_secs_f64()
    );
    let converged = tracker.wait(n, s.timeout, |p| p.ready_with_secret == n).await;
    let progress = tracker.progress();
    row.cold_ready = progress.ready_with_secret;
    if !converged {
        println!(
            "cold: gave up after {} s: {} of {n} Ready with their Secret ({} Ready, {} Secrets, {} without status)",
            s.timeout.as_secs(),
            progress.ready_with_secret,
            progress.ready,
            progress.secrets,
            progress.without_status
        );
        row.details.push(format!(
            "cold did not converge within {} s: {} of {n} Ready with Secret, {} without status",
            s.timeout.as_secs(),
            progress.ready_with_secret,
            progress.without_status
        ));
        return Ok(row);
    }
    let all_ready = progress.last_ready_at.unwrap_or(last_create);
    let cold = all_ready.saturating_duration_since(last_create).as_secs_f64();
    row.cold_seconds = Some(cold);
    println!("cold: all {n} Ready with their Secret {cold:.2} s after the last create");
    row.details.push(format!(
        "cold: the {n} creates took {:.2} s (keyward works meanwhile); first create to all Ready {:.2} s",
        (last_create - created).as_secs_f64(),
        all_ready.saturating_duration_since(created).as_secs_f64()
    ));
    // Writes that follow the last Ready (an Event, a late status patch) still belong to the cold path.
    let settled = bench.keyward()?.settle(QUIET, s.timeout).await;
    let after = Sample::take(&client, bench).await?;
    let cold_delta = after.since(&before);
    // The harness's own creates are POSTs of managedsecrets; keyward never creates one.
    let mut cold_writes = cold_delta.api.keyward_writes();
    cold_writes -= n as f64;
    row.cold_writes_per_object = Some(cold_writes / n as f64);
    row.cpu_cold_ms_per_object = Some(cold_delta.cpu_ms / n as f64);
    row.rss_mib = Some(after.rss_mib);
    row.esc_opens_cold = Some(cold_delta.esc_opens);
    row.details.push(format!(
        "cold: keyward CPU {:.0} ms, RSS {:.1} MiB before the creates and {:.1} MiB after, {} reconciles{}, \
         {} ESC opens, writes (the harness's {n} creates included here, not in the table) {}; reads {}",
        cold_delta.cpu_ms,
        before.rss_mib,
        after.rss_mib,
        fmt_opt(cold_delta.reconciles),
        if settled { "" } else { " (never settled)" },
        cold_delta.esc_opens,
        cold_delta.api.describe(is_write),
        cold_delta.api.describe(is_read)
    ));

    if let Some(k) = bench.keyward.as_ref() {
        row.details.push(format!(
            "cold: keyward's reconciles by result: {}",
            k.reconcile_results().await
        ));
    }

    // 3. Restart with nothing changed.
    let mut old = bench.keyward.take().ok_or_else(|| anyhow!("keyward is not running"))?;
    if !old.stop(Duration::from_secs(30)).await {
        row.details
            .push("restart: keyward did not exit within 30 s of SIGTERM (killed)".into());
    }
    let before = Sample::take(&client, bench).await?;
    let restarted = Instant::now();
    bench.keyward = Some(launch.start("keyward-2")?);
    let reconciled = bench.keyward()?.wait_reconciles(n, s.timeout).await;
    let restart_seconds = restarted.elapsed().as_secs_f64();
    match reconciled {
        Some(true) => {
            row.restart_seconds = Some(restart_seconds);
            println!("restart: {n} reconciles {restart_seconds:.2} s after the new keyward started");
        }
        Some(false) => {
            row.details.push(format!(
                "restart: fewer than {n} reconciles within {} s",
                s.timeout.as_secs()
            ));
        }
        None => {
            // No reconcile counter to read: a fixed wait stands in for "reconciled everything".
            tokio::time::sleep(Duration::from_secs(15)).await;
            row.details
                .push("restart: keyward exports no reconcile count; writes counted over 15 s".into());
        }
    }
    bench.keyward()?.settle(QUIET, s.timeout).await;
    let after = Sample::take(&client, bench).await?;
    let restart_delta = after.since(&before);
    row.restart_writes = Some(restart_delta.api.keyward_writes());
    row.details.push(format!(
        "restart: {} reconciles, {} ESC opens, keyward CPU {:.0} ms, writes {}; reads {}",
        fmt_opt(restart_delta.reconciles),
        restart_delta.esc_opens,
        restart_delta.cpu_ms,
        restart_delta.api.describe(is_write),
        restart_delta.api.describe(is_read)
    ));

    // 4. Steady: two refresh ticks of BENCH_STEADY_REFRESH with nothing changed.
    let interval = keyward::duration::parse(&s.steady_refresh).map_err(|e| anyhow!("{e}"))?;
    if s.steady_refresh != s.refresh {
        tracker.expect_generation(2);
        let patch = serde_json::json!({"spec": {"refreshInterval": s.steady_refresh}});
        for_each_concurrently(n, |i| {
            let api = ms_api(i);
            let patch = patch.clone();
            async move {
                api.patch(&format!("ms-{i}"), &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
        })
        .await
        .context("patch the refresh intervals")?;
        let patched = Instant::now();
        if tracker.wait(n, s.timeout, |p| p.current == n).await {
            let done = tracker.progress().last_current_at.unwrap_or(patched);
            row.details.push(format!(
                "spec change (refreshInterval {} -> {}) reconciled {:.2} s after the last patch",
                s.refresh,
                s.steady_refresh,
                done.saturating_duration_since(patched).as_secs_f64()
            ));
        } else {
            row.details.push(format!(
                "spec change: not all observed within {} s",
                s.timeout.as_secs()
            ));
        }
        bench.keyward()?.settle(QUIET, s.timeout).await;
    }
    // The window starts a second before a tick boundary (ticks are aligned to the wall clock, every object with
    // the same interval refreshes in the same tick) and lasts two intervals: exactly two ticks fall inside.
    tokio::time::sleep(until_before_tick(interval, Duration::from_secs(1))).await;
    let before = Sample::take(&client, bench).await?;
    tokio::time::sleep(interval * 2).await;
    let after = Sample::take(&client, bench).await?;
    let steady = after.since(&before);
    row.steady_writes = Some(steady.api.keyward_writes());
    // Per reconcile when keyward counts them (a refresh of one object is one reconcile); per object and tick
    // otherwise.
    let refreshes = steady.reconciles.filter(|&r| r > 0.0).unwrap_or(2.0 * n as f64);
    row.cpu_refresh_ms_per_object = Some(steady.cpu_ms / refreshes);
    row.details.push(format!(
        "steady ({} s = 2 ticks of {}): keyward CPU {:.0} ms, {} reconciles (2 ticks x N = {}), {} ESC opens, \
         RSS {:.1} MiB, writes {}; reads {}",
        (interval * 2).as_secs(),
        s.steady_refresh,
        steady.cpu_ms,
        fmt_opt(steady.reconciles),
        2 * n,
        steady.esc_opens,
        after.rss_mib,
        steady.api.describe(is_write),
        steady.api.describe(is_read)
    ));
    println!("steady: {}", row.details.last().map_or("", String::as_str));
    tracker.stop();
    Ok(row)
}

impl Bench {
    fn keyward(&self) -> anyhow::Result<&KeywardProcess> {
        self.keyward.as_ref().ok_or_else(|| anyhow!("keyward is not running"))
    }
}

/// The ManagedSecret number `i`: its own path in environment `i % envs`, its Secret named after it.
fn managed_secret(i: usize, s: &Settings) -> Result<ManagedSecret, kube::Error> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": format!("ms-{i}")},
        "spec": {
            "source": {"esc": {
                "environment": format!("{ESC_ORG}/{ESC_PROJECT}/env-{}", i % s.environments),
                "path": format!("app.s{i}"),
            }},
            "target": {"key": "VALUE"},
            "refreshInterval": s.refresh,
        }
    }))
    .map_err(kube::Error::SerdeError)
}

/// Runs `job(0..n)`, [`CLIENT_WORKERS`] at a time; each is tried up to three times (an API server under load may
/// answer 429 or time out).
async fn for_each_concurrently<F, Fut>(n: usize, job: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let job = &job;
    stream::iter(0..n)
        .map(|i| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match job(i).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt >= 3 => return Err(anyhow!("object {i}: {e}")),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
        .buffer_unordered(CLIENT_WORKERS)
        .try_collect::<()>()
        .await
}

/// How long until `lead` before the next boundary of `interval` on the wall clock (at least `lead` away).
fn until_before_tick(interval: Duration, lead: Duration) -> Duration {
    let period = interval.as_millis().max(1000);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let to_boundary = period - now % period;
    let lead_ms = lead.as_millis();
    let wait = if to_boundary > lead_ms {
        to_boundary - lead_ms
    } else {
        to_boundary + period - lead_ms
    };
    Duration::from_millis(u64::try_from(wait).unwrap_or(0))
}

/// The CRDs from crds/, as users apply them, Established.
async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, name) in [
        ("crds/managedsecrets.keyward.dev.yaml", ManagedSecret::crd_name()),
        ("crds/accesspolicies.keyward.dev.yaml", AccessPolicy::crd_name()),
    ] {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&std::fs::read_to_string(repo.join(file))?)?;
        api.patch(name, &PatchParams::apply("keyward-bench").force(), &Patch::Apply(&crd))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let established = api
                .get(name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Runs the floor client; its wall time of the applies, in seconds.
async fn run_floor(s: &Settings, kubeconfig: &Path, namespaces: &[String], n: usize) -> anyhow::Result<f64> {
    let bin = match &s.floor_bin {
        Some(bin) => bin.clone(),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/floor.sh");
            let out = tokio::process::Command::new(&script)
                .arg("--path")
                .stderr(Stdio::inherit())
                .output()
                .await
                .with_context(|| format!("run {}", script.display()))?;
            if !out.status.success() {
                bail!("tools/floor.sh --path failed ({})", out.status);
            }
            PathBuf::from(String::from_utf8(out.stdout)?.trim())
        }
    };
    let out = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--namespaces")
        .arg(namespaces.join(","))
        .arg("--count")
        .arg(n.to_string())
        .arg("--workers")
        .arg(CLIENT_WORKERS.to_string())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!("the floor failed ({})", out.status);
    }
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).context("the floor's output")?;
    line["seconds"]
        .as_f64()
        .ok_or_else(|| anyhow!("the floor printed no seconds: {line}"))
}

/// How to start keyward, the same way each time.
struct Launch {
    bin: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    esc_url: String,
    esc_token_file: PathBuf,
    concurrency: u16,
}

impl Launch {
    /// `keyward run` for the whole cluster, logging at warn (debug logging would cost more than the work it
    /// describes), its output in `DIR/NAME.log`.
    fn start(&self, name: &str) -> anyhow::Result<KeywardProcess> {
        let key = self.dir.join("hash-key");
        std::fs::write(&key, b"bench-hash-key")?;
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let (http, webhook) = (free_port()?, free_port()?);
        let child = tokio::process::Command::new(&self.bin)
            .arg("run")
            .arg("--allow-all")
            .arg("--namespace=keyward-system")
            .arg("--hash-key-file")
            .arg(&key)
            .arg(format!("--http-listen={http}"))
            .arg(format!("--webhook-listen={webhook}"))
            .arg(format!("--esc-url={}", self.esc_url))
            .arg("--esc-token-file")
            .arg(&self.esc_token_file)
            .arg(format!("--concurrency={}", self.concurrency))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "warn")
            .env_remove("KEYWARD_WATCH_NAMESPACE")
            .env_remove("KEYWARD_TEST_ABORT_AFTER")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("keyward exited at once"))?;
        Ok(KeywardProcess {
            child,
            pid,
            http,
            log,
            started: Instant::now(),
            client: reqwest::Client::new(),
        })
    }
}

fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `keyward run`, killed when dropped.
struct KeywardProcess {
    child: tokio::process::Child,
    pid: u32,
    http: std::net::SocketAddr,
    log: PathBuf,
    started: Instant,
    client: reqwest::Client,
}

impl KeywardProcess {
    /// Waits until /readyz answers 200 (caches synced); how long after the start that was.
    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let url = format!("http://{}/readyz", self.http);
            if let Ok(r) = self.client.get(url).send().await
                && r.status().is_success()
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "keyward not ready within {} s; log:\n{}",
                    limit.as_secs(),
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// keyward's reconciles so far: `keyward_reconciles_total` (all results) when it has it, else the count of
    /// its reconcile-duration histogram; None when it exports neither (or does not answer).
    async fn reconciles(&self) -> Option<f64> {
        let url = format!("http://{}/metrics", self.http);
        let text = self.client.get(url).send().await.ok()?.text().await.ok()?;
        reconcile_count(&text)
    }

    /// keyward's `keyward_reconciles_total` by result, as `result=count` pairs (empty when it has none).
    async fn reconcile_results(&self) -> String {
        let url = format!("http://{}/metrics", self.http);
        let Some(text) = self.client.get(url).send().await.ok() else {
            return String::new();
        };
        let text = text.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("keyward_reconciles_total{result=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(result, count)| format!("{result}={count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until keyward has reconciled `n` objects since it started. None when it counts no reconciles.
    async fn wait_reconciles(&self, n: usize, limit: Duration) -> Option<bool> {
        let deadline = Instant::now() + limit;
        let mut seen_any = false;
        loop {
            match self.reconciles().await {
                Some(count) if count >= n as f64 => return Some(true),
                Some(_) => seen_any = true,
                // Not answering yet (starting), or answering without a count.
                None if !seen_any && self.started.elapsed() > Duration::from_secs(30) => return None,
                None => {}
            }
            if Instant::now() > deadline {
                return Some(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the reconcile count has stood still for `quiet` (at most `limit`); false if it never did.
    /// Without a count, waits `quiet` five times over.
    async fn settle(&self, quiet: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Some(mut last) = self.reconciles().await else {
            tokio::time::sleep(quiet * 5).await;
            return true;
        };
        let mut still_since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.reconciles().await.unwrap_or(last);
            if now != last {
                last = now;
                still_since = Instant::now();
            } else if still_since.elapsed() >= quiet {
                return true;
            }
        }
        false
    }

    /// CPU time (user + system) in milliseconds and resident memory in MiB, from /proc.
    fn usage(&self) -> anyhow::Result<(f64, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of proc(5); `after` starts at field 3.
        let ticks: f64 = fields
            .get(11..13)
            .into_iter()
            .flatten()
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for keyward"))?;
        Ok((ticks * 1000.0 / clock_ticks_per_second(), rss_kib / 1024.0))
    }

    /// SIGTERM, then SIGKILL after `grace`; true if it exited by itself.
    async fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return true;
        }
        let _ = self.child.kill().await;
        false
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The reconcile count in a keyward /metrics text (see [`KeywardProcess::reconciles`]).
fn reconcile_count(text: &str) -> Option<f64> {
    let sum = |name: &str| {
        let mut total = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else { continue };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue;
            }
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *total.get_or_insert(0.0) += v;
            }
        }
        total
    };
    sum("keyward_reconciles_total").or_else(|| sum("keyward_reconcile_duration_seconds_count"))
}

/// USER_HZ, the unit of /proc's CPU times: 100 on every Linux this runs on, asked of getconf to be sure.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// What is measured at a phase's edges.
struct Sample {
    cpu_ms: f64,
    rss_mib: f64,
    reconciles: Option<f64>,
    esc_opens: u64,
    api: ApiRequests,
}

/// The difference of two samples.
struct Delta {
    cpu_ms: f64,
    reconciles: Option<f64>,
    esc_opens: u64,
    api: ApiRequests,
}

impl Sample {
    /// Samples keyward (if it runs; zeros otherwise), the ESC server's opens and the API server's requests.
    async fn take(client: &Client, bench: &Bench) -> anyhow::Result<Sample> {
        let (cpu_ms, rss_mib, reconciles) = match &bench.keyward {
            Some(k) => {
                let (cpu, rss) = k.usage()?;
                (cpu, rss, k.reconciles().await)
            }
            None => (0.0, 0.0, None),
        };
        let esc_opens = bench.esc.as_ref().map_or(0, |e| e.counters().opens.values().sum());
        Ok(Sample {
            cpu_ms,
            rss_mib,
            reconciles,
            esc_opens,
            api: ApiRequests::scrape(client).await?,
        })
    }

    /// This sample less an earlier one. A restart in between (the earlier one taken before keyward started)
    /// is fine: its CPU and reconciles were zero then.
    fn since(&self, earlier: &Sample) -> Delta {
        Delta {
            cpu_ms: self.cpu_ms - earlier.cpu_ms,
            reconciles: self.reconciles.map(|r| r - earlier.reconciles.unwrap_or(0.0)),
            esc_opens: self.esc_opens.saturating_sub(earlier.esc_opens),
            api: self.api.minus(&earlier.api),
        }
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION")
}

fn is_read(verb: &str) -> bool {
    matches!(verb, "GET" | "LIST")
}

/// The API server's `apiserver_request_total`, summed by (resource, subresource, verb).
#[derive(Default)]
struct ApiRequests(BTreeMap<(String, String, String), f64>);

impl ApiRequests {
    async fn scrape(client: &Client) -> anyhow::Result<ApiRequests> {
        let text = client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await
            .context("read the API server's /metrics")?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> ApiRequests {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let labels = parse_labels(labels);
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            *counts
                .entry((get("resource"), get("subresource"), get("verb")))
                .or_insert(0.0) += value;
        }
        ApiRequests(counts)
    }

    fn minus(&self, earlier: &ApiRequests) -> ApiRequests {
        let mut out = BTreeMap::new();
        for (key, v) in &self.0 {
            let d = v - earlier.0.get(key).copied().unwrap_or(0.0);
            if d > 0.0 {
                out.insert(key.clone(), d);
            }
        }
        ApiRequests(out)
    }

    /// Writes to what keyward writes: Secrets, ManagedSecrets (status) and Events. Leases are left out: without
    /// leader election keyward takes none, and the API server renews its own identity lease every few seconds.
    fn keyward_writes(&self) -> f64 {
        self.0
            .iter()
            .filter(|((resource, _, verb), _)| {
                is_write(verb) && matches!(resource.as_str(), "secrets" | "managedsecrets" | "events")
            })
            .fold(0.0, |sum, (_, v)| sum + v)
    }

    /// `resource[/subresource] VERB count, ...` for the verbs `keep` selects.
    fn describe(&self, keep: fn(&str) -> bool) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|((_, _, verb), _)| keep(verb))
            .map(|((resource, sub, verb), v)| {
                let what = if sub.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{sub}")
                };
                format!("{what} {verb} {v:.0}")
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// `a="x",b="y"` into a map (Prometheus label values here never hold quotes or commas).
fn parse_labels(text: &str) -> HashMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// What the watches saw of one ManagedSecret.
#[derive(Default)]
struct Seen {
    /// Since when it has been Ready=True (None while it is not).
    ready_since: Option<Instant>,
    /// Since when its status has observed its generation (None while it has not).
    current_since: Option<Instant>,
    generation: i64,
    has_status: bool,
}

#[derive(Default)]
struct TrackerState {
    objects: HashMap<String, Seen>,
    /// Target Secrets (`ns/name`) and when each was first seen.
    secrets: HashMap<String, Instant>,
    /// The generation an object must have reached to count as current (a spec change in flight).
    min_generation: i64,
}

/// Counts at one moment, and when the last object got there.
#[derive(Default)]
struct Progress {
    ready: usize,
    secrets: usize,
    without_status: usize,
    ready_with_secret: usize,
    /// When the last of the objects counted in `ready_with_secret` got both.
    last_ready_at: Option<Instant>,
    current: usize,
    last_current_at: Option<Instant>,
}

/// Two watches (ManagedSecrets; Secrets with keyward's label, metadata only): one list each, then events, so
/// that waiting for 10,000 objects does not load the API server being measured. Every object remembers when it
/// got where it is, so the time of the last one is exact, however often the state is looked at.
struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tracker {
    fn start(client: Client) -> Tracker {
        let state = Arc::new(Mutex::new(TrackerState {
            min_generation: 1,
            ..TrackerState::default()
        }));
        let ms = {
            let state = state.clone();
            let stream = watcher::watcher(Api::<ManagedSecret>::all(client.clone()), watcher::Config::default())
                .default_backoff();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        Event::Apply(o) | Event::InitApply(o) => st.observe(&o),
                        Event::Delete(o) => {
                            st.objects.remove(&key(&o));
                        }
                        Event::Init | Event::InitDone => {}
                    }
                }
            })
        };
        let secrets = {
            let state = state.clone();
            // Metadata only: the Secrets' data is not needed to know that they exist.
            let stream = watcher::watcher(
                Api::<PartialObjectMeta<Secret>>::all(client),
                watcher::Config::default().labels(MANAGED_BY),
            )
            .default_backoff();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        Event::Apply(o) | Event::InitApply(o) => {
                            st.secrets.entry(key(&o)).or_insert_with(Instant::now);
                        }
                        Event::Delete(o) => {
                            st.secrets.remove(&key(&o));
                        }
                        Event::Init | Event::InitDone => {}
                    }
                }
            })
        };
        Tracker {
            state,
            tasks: vec![ms, secrets],
        }
    }

    /// From now on an object counts as current only at `generation` or later.
    fn expect_generation(&self, generation: i64) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).min_generation = generation;
    }

    fn progress(&self) -> Progress {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = Progress {
            secrets: st.secrets.len(),
            ..Progress::default()
        };
        for (key, seen) in &st.objects {
            if !seen.has_status {
                p.without_status += 1;
            }
            if let Some(ready) = seen.ready_since {
                p.ready += 1;
                if let Some(&secret) = st.secrets.get(key) {
                    p.ready_with_secret += 1;
                    let at = ready.max(secret);
                    p.last_ready_at = Some(p.last_ready_at.map_or(at, |l| l.max(at)));
                }
            }
            if let Some(at) = seen.current_since
                && seen.generation >= st.min_generation
            {
                p.current += 1;
                p.last_current_at = Some(p.last_current_at.map_or(at, |l| l.max(at)));
            }
        }
        p
    }

    /// Polls (in memory, every 200 ms) until `done` holds; false after `limit`. Progress is printed every 30 s.
    async fn wait(&self, n: usize, limit: Duration, done: impl Fn(&Progress) -> bool) -> bool {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let p = self.progress();
            if done(&p) {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                println!(
                    "  {:>4.0} s: {} of {n} Ready with Secret ({} Ready, {} Secrets, {} without status, {} current)",
                    started.elapsed().as_secs_f64(),
                    p.ready_with_secret,
                    p.ready,
                    p.secrets,
                    p.without_status,
                    p.current
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TrackerState {
    fn observe(&mut self, ms: &ManagedSecret) {
        let now = Instant::now();
        let status = ms.status.as_ref();
        let ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == keyward::api::conditions::READY && c.status == "True")
        });
        let generation = ms.metadata.generation.unwrap_or(0);
        let current = status
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| g >= generation);
        let seen = self.objects.entry(key(ms)).or_default();
        seen.has_status = status.is_some();
        seen.generation = generation;
        seen.ready_since = if ready {
            Some(seen.ready_since.unwrap_or(now))
        } else {
            None
        };
        seen.current_since = if current {
            Some(seen.current_since.unwrap_or(now))
        } else {
            None
        };
    }
}

fn key<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
}

fn print_table(rows: &[Row], s: &Settings) {
    let cell = |v: Option<f64>, digits: usize| v.map_or_else(|| "—".to_string(), |v| format!("{v:.digits$}"));
    println!(
        "\n{} ESC environments, {} namespaces, --concurrency {}; cold refresh {}, steady refresh {}\n",
        s.environments, s.namespaces, s.concurrency, s.refresh, s.steady_refresh
    );
    println!(
        "| N | floor s | keyward cold s | ratio | CPU/object cold ms | CPU/object/refresh ms | RSS MiB | \
         cold writes/object | steady writes | restart writes | restart s | ESC opens |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let cold = match r.cold_seconds {
            Some(c) => format!("{c:.2}"),
            None => format!("not converged ({} of {} ready)", r.cold_ready, r.n),
        };
        println!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.floor_seconds,
            cold,
            cell(r.cold_seconds.map(|c| c / r.floor_seconds), 1),
            cell(r.cpu_cold_ms_per_object, 2),
            cell(r.cpu_refresh_ms_per_object, 3),
            cell(r.rss_mib, 1),
            cell(r.cold_writes_per_object, 2),
            cell(r.steady_writes, 0),
            cell(r.restart_writes, 0),
            cell(r.restart_seconds, 2),
            r.esc_opens_cold.map_or_else(|| "—".into(), |o| o.to_string()),
        );
    }
    for r in rows {
        println!("\nN = {}:", r.n);
        for d in &r.details {
            println!("- {d}");
        }
    }
}

fn machine_info() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or_else(String::new, |kib| format!(", {:.0} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores, {model}{memory_gib}")
}

/// The commit measured, `-dirty` when the work tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}
