//! What the benchmarks against a real control plane share (`benches/scale.rs`, `benches/faults.rs`): settings
//! from the environment, the CRDs, starting and measuring `keyward run` as a child process, the API server's
//! request counts, and the watches that see when objects converge.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward::api::{AccessPolicy, ManagedSecret};
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

/// Creates (and patches) in flight at once: the same fan-out as the floor's workers.
pub const CLIENT_WORKERS: usize = 32;
/// The label keyward puts on the Secrets it writes (the floor's Secrets carry it too).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=keyward";

pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| anyhow!("{name}={v} is not a valid value")),
    }
}

/// Runs `job(0..n)`, [`CLIENT_WORKERS`] at a time; each is tried up to three times (an API server under load may
/// answer 429 or time out).
pub async fn for_each_concurrently<F, Fut>(n: usize, job: F) -> anyhow::Result<()>
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

/// The CRDs from crds/, as users apply them, Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
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

/// How to start keyward, the same way each time.
pub struct Launch {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub esc_url: String,
    pub esc_token_file: PathBuf,
    pub concurrency: u16,
    /// Further `keyward run` flags (the GitHub server's URL and token file, ...).
    pub extra_args: Vec<String>,
    /// `RUST_LOG` for keyward.
    pub rust_log: String,
}

impl Launch {
    /// `keyward run` for the whole cluster, logging at `rust_log` (the scale benchmark: warn, since debug
    /// logging would cost more than the work it describes), its output in `DIR/NAME.log`.
    pub fn start(&self, name: &str) -> anyhow::Result<KeywardProcess> {
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
            .args(&self.extra_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", &self.rust_log)
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

pub fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `keyward run`, killed when dropped.
pub struct KeywardProcess {
    child: tokio::process::Child,
    pid: u32,
    http: std::net::SocketAddr,
    log: PathBuf,
    started: Instant,
    client: reqwest::Client,
}

impl KeywardProcess {
    /// Waits until /readyz answers 200 (caches synced); how long after the start that was.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
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
    pub async fn reconciles(&self) -> Option<f64> {
        reconcile_count(&self.metrics().await?)
    }

    /// keyward's /metrics text; None when it does not answer.
    async fn metrics(&self) -> Option<String> {
        let url = format!("http://{}/metrics", self.http);
        self.client.get(url).send().await.ok()?.text().await.ok()
    }

    /// keyward's `keyward_reconciles_total` by result, as `result=count` pairs (empty when it has none).
    pub async fn reconcile_results(&self) -> String {
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("keyward_reconciles_total{result=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(result, count)| format!("{result}={count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until keyward has reconciled `n` objects since it started. None when it counts no reconciles.
    pub async fn wait_reconciles(&self, n: usize, limit: Duration) -> Option<bool> {
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
    pub async fn settle(&self, quiet: Duration, limit: Duration) -> bool {
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
    pub fn usage(&self) -> anyhow::Result<(f64, f64)> {
        let cpu_ms = process_cpu_ms(self.pid)?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for keyward"))?;
        Ok((cpu_ms, rss_kib / 1024.0))
    }

    /// SIGTERM, then SIGKILL after `grace`; true if it exited by itself.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return true;
        }
        let _ = self.child.kill().await;
        false
    }

    /// SIGKILL, and waits until it is gone (reaped).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("SIGKILL keyward")
    }

    /// Its exit status if it has exited by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The reconcile count in a keyward /metrics text (see [`KeywardProcess::reconciles`]).
pub fn reconcile_count(text: &str) -> Option<f64> {
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

/// CPU time (user + system) process `pid` has used, in milliseconds (proc(5), `/proc/<pid>/stat`).
pub fn process_cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
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
    Ok(ticks * 1000.0 / clock_ticks_per_second())
}

/// USER_HZ, the unit of /proc's CPU times: 100 on every Linux this runs on, asked of getconf to be sure.
pub fn clock_ticks_per_second() -> f64 {
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

pub fn is_write(verb: &str) -> bool {
    matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION")
}

pub fn is_read(verb: &str) -> bool {
    matches!(verb, "GET" | "LIST")
}

/// The API server's `apiserver_request_total`, summed by (resource, subresource, verb).
#[derive(Default)]
pub struct ApiRequests(BTreeMap<(String, String, String), f64>);

impl ApiRequests {
    pub async fn scrape(client: &Client) -> anyhow::Result<ApiRequests> {
        let text = client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await
            .context("read the API server's /metrics")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> ApiRequests {
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

    pub fn minus(&self, earlier: &ApiRequests) -> ApiRequests {
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
    pub fn keyward_writes(&self) -> f64 {
        self.0
            .iter()
            .filter(|((resource, _, verb), _)| {
                is_write(verb) && matches!(resource.as_str(), "secrets" | "managedsecrets" | "events")
            })
            .fold(0.0, |sum, (_, v)| sum + v)
    }

    /// `resource[/subresource] VERB count, ...` for the verbs `keep` selects.
    pub fn describe(&self, keep: fn(&str) -> bool) -> String {
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
pub fn parse_labels(text: &str) -> HashMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// What the watches saw of one ManagedSecret.
#[derive(Default)]
pub struct Seen {
    /// Since when it has been Ready=True (None while it is not).
    ready_since: Option<Instant>,
    /// Since when its status has observed its generation (None while it has not).
    current_since: Option<Instant>,
    generation: i64,
    has_status: bool,
    /// The Synced condition's status and reason (None while it has none).
    synced: Option<(String, String)>,
    /// Since when it has been Synced=True (None while it is not).
    synced_since: Option<Instant>,
    /// Since when it has been Synced=False (None while it is not).
    unsynced_since: Option<Instant>,
}

#[derive(Default)]
pub struct TrackerState {
    objects: HashMap<String, Seen>,
    /// Target Secrets (`ns/name`) and when each was first seen.
    secrets: HashMap<String, Instant>,
    /// The generation an object must have reached to count as current (a spec change in flight).
    min_generation: i64,
}

/// Counts at one moment, and when the last object got there.
#[derive(Default)]
pub struct Progress {
    pub ready: usize,
    pub secrets: usize,
    pub without_status: usize,
    pub ready_with_secret: usize,
    /// When the last of the objects counted in `ready_with_secret` got both.
    pub last_ready_at: Option<Instant>,
    pub current: usize,
    pub last_current_at: Option<Instant>,
    /// Objects Synced=True, and when the last of them got there.
    pub synced: usize,
    pub last_synced_at: Option<Instant>,
    /// Objects by their Synced condition, `status/reason` (`none` without one).
    pub synced_by: BTreeMap<String, usize>,
}

/// Two watches (ManagedSecrets; Secrets with keyward's label, metadata only): one list each, then events, so
/// that waiting for 10,000 objects does not load the API server being measured. Every object remembers when it
/// got where it is, so the time of the last one is exact, however often the state is looked at.
pub struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tracker {
    pub fn start(client: Client) -> Tracker {
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
    pub fn expect_generation(&self, generation: i64) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).min_generation = generation;
    }

    pub fn progress(&self) -> Progress {
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
            if let Some(at) = seen.synced_since {
                p.synced += 1;
                p.last_synced_at = Some(p.last_synced_at.map_or(at, |l| l.max(at)));
            }
            let synced = seen
                .synced
                .as_ref()
                .map_or_else(|| "none".to_string(), |(status, reason)| format!("{status}/{reason}"));
            *p.synced_by.entry(synced).or_insert(0) += 1;
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
    pub async fn wait(&self, n: usize, limit: Duration, done: impl Fn(&Progress) -> bool) -> bool {
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

    /// Objects Synced=False now, each with since when.
    pub fn unsynced(&self) -> Vec<(String, Instant)> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.objects
            .iter()
            .filter_map(|(key, seen)| Some((key.clone(), seen.unsynced_since?)))
            .collect()
    }

    /// Objects Synced=True now, each with since when.
    pub fn synced(&self) -> Vec<(String, Instant)> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.objects
            .iter()
            .filter_map(|(key, seen)| Some((key.clone(), seen.synced_since?)))
            .collect()
    }

    pub fn stop(&self) {
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
    pub fn observe(&mut self, ms: &ManagedSecret) {
        let now = Instant::now();
        let status = ms.status.as_ref();
        let ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == keyward::api::conditions::READY && c.status == "True")
        });
        let synced = status.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == keyward::api::conditions::SYNCED)
                .map(|c| (c.status.clone(), c.reason.clone()))
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
        seen.synced_since = if synced.as_ref().is_some_and(|(status, _)| status == "True") {
            Some(seen.synced_since.unwrap_or(now))
        } else {
            None
        };
        seen.unsynced_since = if synced.as_ref().is_some_and(|(status, _)| status == "False") {
            Some(seen.unsynced_since.unwrap_or(now))
        } else {
            None
        };
        seen.synced = synced;
        seen.current_since = if current {
            Some(seen.current_since.unwrap_or(now))
        } else {
            None
        };
    }
}

pub fn key<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

pub fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"))
}

pub fn machine_info() -> String {
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
pub fn commit() -> String {
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
