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
//! 5. the floor of keyward's writes: keyward stopped, the same Go client merge-patches the status of the N
//!    ManagedSecrets (`--status`). With step 1's applies, that is what the API server needs for the two writes
//!    keyward makes per new object; the table gives the cold time's ratio to it too.
//!
//! The control plane's own CPU per object (kube-apiserver and etcd, from `/proc`) is printed for the floors
//! and the cold phase. Writes are counted by the API server itself (`apiserver_request_total` on its /metrics),
//! around each phase.
//! Run: `make bench`, or `BENCH_N=200 make bench`. Settings are read from `BENCH_*` variables (see [`Settings`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use common::{
    ApiRequests, CLIENT_WORKERS, KeywardProcess, Launch, MANAGED_BY, Tracker, commit, fmt_opt, for_each_concurrently,
    install_crds, is_read, is_write, machine_info, parsed, var,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::api::ManagedSecret;
use keyward_dev::control_plane::{ControlPlane, Options};
use keyward_dev::esc_server::{EscServer, EscServerOptions};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

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
    /// The floor client's time for both of keyward's writes per object: the Secret applies and the status
    /// patches.
    writes_floor_seconds: Option<f64>,
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
    let server_cpu = control_plane_cpu_ms(bench);
    let floor = run_floor(s, &kubeconfig, &namespaces, n, FloorOf::Secrets).await?;
    let floor_server_cpu = control_plane_cpu_ms(bench) - server_cpu;
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
        extra_args: Vec::new(),
        rust_log: "warn".into(),
    };
    let keyward = launch.start("keyward-1")?;
    let ready_after = keyward.wait_ready(Duration::from_secs(120)).await?;
    println!("keyward ready {:.1} s after its start", ready_after.as_secs_f64());
    bench.keyward = Some(keyward);

    let tracker = Tracker::start(client.clone());
    let before = Sample::take(&client, bench).await?;
    let server_cpu = control_plane_cpu_ms(bench);
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
    let cold_server_cpu = control_plane_cpu_ms(bench) - server_cpu;
    row.details.push(format!(
        "control plane (kube-apiserver and etcd) CPU per object: floor {:.2} ms (one apply), cold {:.2} ms (the \
         harness's create and its two watches included)",
        floor_server_cpu / n as f64,
        cold_server_cpu / n as f64,
    ));
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

    // 5. The floor of keyward's other write: the fast client patches the N objects' status, keyward stopped.
    if let Some(mut k) = bench.keyward.take() {
        k.stop(Duration::from_secs(30)).await;
    }
    let server_cpu = control_plane_cpu_ms(bench);
    let status_floor = run_floor(s, &kubeconfig, &namespaces, n, FloorOf::Status).await?;
    let status_server_cpu = control_plane_cpu_ms(bench) - server_cpu;
    row.writes_floor_seconds = Some(floor + status_floor);
    row.details.push(format!(
        "floor of keyward's writes: the same client patched the {n} ManagedSecrets' status in {status_floor:.2} s \
         (control plane CPU {:.2} ms per object); with the {floor:.2} s of the Secret applies, {:.2} s for the two \
         writes keyward makes per object",
        status_server_cpu / n as f64,
        floor + status_floor
    ));
    println!("{}", row.details.last().map_or("", String::as_str));
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

/// CPU time the control plane's processes have used so far, in milliseconds (0 without one).
fn control_plane_cpu_ms(bench: &Bench) -> f64 {
    let Some(cp) = bench.control_plane.as_ref() else {
        return 0.0;
    };
    cp.pids()
        .into_iter()
        .filter_map(|(_, pid)| common::process_cpu_ms(pid).ok())
        .sum()
}

/// Which writes the floor client measures: `Secrets` (server-side apply of N Secrets `floor-<i>`) or `Status`
/// (a merge patch of the status of the N ManagedSecrets `ms-<i>`, keyward's other write per object).
#[derive(Clone, Copy, PartialEq)]
enum FloorOf {
    Secrets,
    Status,
}

/// Runs the floor client; its wall time of the writes, in seconds.
async fn run_floor(
    s: &Settings,
    kubeconfig: &Path,
    namespaces: &[String],
    n: usize,
    of: FloorOf,
) -> anyhow::Result<f64> {
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
        .args(match of {
            FloorOf::Secrets => &[][..],
            FloorOf::Status => &["--status", "--prefix", "ms-"][..],
        })
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

fn print_table(rows: &[Row], s: &Settings) {
    let cell = |v: Option<f64>, digits: usize| v.map_or_else(|| "—".to_string(), |v| format!("{v:.digits$}"));
    println!(
        "\n{} ESC environments, {} namespaces, --concurrency {}; cold refresh {}, steady refresh {}\n",
        s.environments, s.namespaces, s.concurrency, s.refresh, s.steady_refresh
    );
    println!(
        "| N | floor s | keyward cold s | ratio | writes' floor s | ratio to it | CPU/object cold ms | \
         CPU/object/refresh ms | RSS MiB | cold writes/object | steady writes | restart writes | restart s | ESC opens |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let cold = match r.cold_seconds {
            Some(c) => format!("{c:.2}"),
            None => format!("not converged ({} of {} ready)", r.cold_ready, r.n),
        };
        println!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.floor_seconds,
            cold,
            cell(r.cold_seconds.map(|c| c / r.floor_seconds), 1),
            cell(r.writes_floor_seconds, 2),
            cell(r.cold_seconds.zip(r.writes_floor_seconds).map(|(c, f)| c / f), 1),
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
