//! Consumer index and restart planner at the scale of one large cluster: prints a table of numbers (not a
//! timed test). Run: `cargo bench --bench consumers`; results go into docs/benchmarks.md.
//!
//! Memory is measured by `ConsumerIndex::heap_size()` (an accounting of what the index allocated), cross-checked
//! by the growth of the process's resident memory while the index is built: a counting global allocator needs
//! `unsafe impl GlobalAlloc`, which the package's `unsafe_code = "forbid"` lint refuses in every target.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, KeyToPath, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    SecretEnvSource, SecretKeySelector, SecretProjection, SecretVolumeSource, Volume, VolumeProjection,
};
use keyward::consumers::{ConsumerIndex, Planner, PlannerConfig, WorkloadKind, WorkloadRef, secrets_hash};

const NAMESPACES: usize = 50;
const WORKLOADS: usize = 5_000;
const SECRETS: usize = 10_000;
const CHANGED: usize = 1_000;
const LOOKUPS: usize = 1_000_000;
const BUILD_RUNS: usize = 5;

/// splitmix64: deterministic, so every run measures the same cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Skewed towards 0: a few Secrets (database credentials, say) are shared by many workloads.
    fn popular(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as usize
    }
}

#[derive(Default)]
struct Mix {
    env: usize,
    env_from: usize,
    volume: usize,
    projected: usize,
}

struct Cluster {
    workloads: Vec<(WorkloadRef, PodTemplateSpec, bool)>,
    mix: Mix,
    references: usize,
}

fn secret_name(ns: usize, i: usize) -> String {
    format!("app-secret-{ns:02}-{i:03}")
}

/// 5,000 workloads in 50 namespaces, each referencing 1-6 of its namespace's 200 Secrets. Every Secret is
/// referenced at least once; the remaining references favour a few popular Secrets.
fn cluster() -> Cluster {
    let mut rng = Rng(0x6b65_7977_6172_6421);
    let (per_ns_secrets, per_ns_workloads) = (SECRETS / NAMESPACES, WORKLOADS / NAMESPACES);
    let mut out = Cluster {
        workloads: Vec::with_capacity(WORKLOADS),
        mix: Mix::default(),
        references: 0,
    };
    for ns in 0..NAMESPACES {
        let mut targets: Vec<usize> = (0..per_ns_workloads).map(|_| 1 + rng.below(6)).collect();
        while targets.iter().sum::<usize>() < per_ns_secrets {
            let i = rng.below(per_ns_workloads);
            targets[i] = (targets[i] + 1).min(6);
        }
        // Coverage first: the namespace's Secrets in shuffled order fill the first slots.
        let mut order: Vec<usize> = (0..per_ns_secrets).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut sets: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); per_ns_workloads];
        let mut next = order.into_iter();
        'cover: for round in 0..6 {
            for (w, set) in sets.iter_mut().enumerate() {
                if targets[w] > round {
                    match next.next() {
                        Some(s) => {
                            set.insert(s);
                        }
                        None => break 'cover,
                    }
                }
            }
        }
        for (w, set) in sets.iter_mut().enumerate() {
            while set.len() < targets[w] {
                set.insert(rng.popular(per_ns_secrets));
            }
        }
        let namespace = format!("team-{ns:02}");
        for (w, set) in sets.into_iter().enumerate() {
            let kind = match rng.below(10) {
                0..=6 => WorkloadKind::Deployment,
                7 | 8 => WorkloadKind::StatefulSet,
                _ => WorkloadKind::DaemonSet,
            };
            let names: Vec<String> = set.into_iter().map(|s| secret_name(ns, s)).collect();
            out.references += names.len();
            let template = template(&names, &mut rng, &mut out.mix);
            let opted_out = rng.below(100) == 0;
            out.workloads.push((
                WorkloadRef::new(kind, namespace.as_str(), format!("service-{w:03}")),
                template,
                opted_out,
            ));
        }
    }
    out
}

/// A pod template referencing `secrets` through a mix of env keys, envFrom, secret volumes and projected
/// volumes, split over an app container, a sidecar and sometimes an init container.
fn template(secrets: &[String], rng: &mut Rng, mix: &mut Mix) -> PodTemplateSpec {
    let mut app = Container {
        name: "app".into(),
        image: Some("registry.example/app:1".into()),
        ..Default::default()
    };
    let mut sidecar = Container {
        name: "sidecar".into(),
        ..Default::default()
    };
    let mut init = Container {
        name: "migrate".into(),
        ..Default::default()
    };
    let mut volumes = Vec::new();
    for (i, name) in secrets.iter().enumerate() {
        let container = match rng.below(10) {
            0..=6 => &mut app,
            7 | 8 => &mut sidecar,
            _ => &mut init,
        };
        match rng.below(10) {
            0..=3 => {
                mix.env += 1;
                for k in 0..1 + rng.below(3) {
                    let key = ["API_KEY", "PASSWORD", "TOKEN"][k];
                    container.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: format!("{}_{key}", name.to_uppercase().replace('-', "_")),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: name.clone(),
                                key: key.into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            4..=5 => {
                mix.env_from += 1;
                container.env_from.get_or_insert_with(Vec::new).push(EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: name.clone(),
                        optional: None,
                    }),
                    ..Default::default()
                });
            }
            6..=8 => {
                mix.volume += 1;
                let items = (rng.below(2) == 0).then(|| {
                    vec![KeyToPath {
                        key: "tls.crt".into(),
                        path: "tls.crt".into(),
                        mode: None,
                    }]
                });
                volumes.push(Volume {
                    name: format!("secret-{i}"),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.clone()),
                        items,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            _ => {
                mix.projected += 1;
                volumes.push(Volume {
                    name: format!("projected-{i}"),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            secret: Some(SecretProjection {
                                name: name.clone(),
                                items: None,
                                optional: None,
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
    }
    let init_containers = (init.env.is_some() || init.env_from.is_some()).then(|| vec![init]);
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            containers: vec![app, sidecar],
            init_containers,
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

/// Resident memory of this process, from /proc/self/statm (pages of 4 KiB on this machine).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn build(cluster: &Cluster) -> ConsumerIndex {
    let mut index = ConsumerIndex::new();
    for (w, t, opted_out) in &cluster.workloads {
        index.upsert(w.clone(), t, *opted_out);
    }
    index
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_micros(10) {
        format!("{} ns", d.as_nanos())
    } else if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// The value hash of a Secret before (`1`) or after (`2`) the change.
fn value_hash(secret: &str, version: u8) -> String {
    format!("hmac-sha256:{secret}:{version}")
}

struct PlanRun {
    affected: usize,
    desire: Duration,
    drain: Duration,
    next_calls: usize,
}

/// 1,000 Secrets change at once: find the consumers, compute each one's new secrets-hash, desire it, then call
/// `next` (at `wake_at`, or right away after finishing the started rollouts) until everything has started.
fn plan(index: &ConsumerIndex, changed: &[(String, String)]) -> PlanRun {
    let t0 = Timestamp::from_second(1_750_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut planner = match Planner::new(PlannerConfig::default()) {
        Ok(p) => p,
        Err(e) => panic!("default config: {e}"),
    };
    let changed_set: BTreeSet<(&str, &str)> = changed.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();

    let start = Instant::now();
    let mut affected = BTreeSet::new();
    for (ns, secret) in changed {
        affected.extend(index.consumers_of(ns, secret));
    }
    for w in &affected {
        let hashes: Vec<(&str, String)> = index
            .secrets_of(w)
            .into_iter()
            .map(|s| {
                let v = if changed_set.contains(&(&*w.namespace, s)) {
                    2
                } else {
                    1
                };
                (s, value_hash(s, v))
            })
            .collect();
        let hash = secrets_hash(hashes.iter().map(|(s, h)| (*s, h.as_str())));
        planner.desire(w, &hash, t0);
    }
    let desire = start.elapsed();

    let start = Instant::now();
    let (mut now, mut next_calls, mut started) = (t0, 0, 0);
    while planner.pending_count() > 0 {
        let plan = planner.next(now);
        next_calls += 1;
        for (w, _) in &plan.start {
            planner.rollout_finished(w, true);
        }
        started += plan.start.len();
        match plan.wake_at {
            Some(at) => now = at,
            None if plan.start.is_empty() => break,
            None => {}
        }
    }
    let drain = start.elapsed();
    assert_eq!(started, affected.len(), "every affected workload starts once");
    PlanRun {
        affected: affected.len(),
        desire,
        drain,
        next_calls,
    }
}

/// The scan's worst case: 1,000 restarts pending in ONE namespace, so each `next` walks past the ones its
/// namespace limit holds back.
fn plan_one_namespace() -> (Duration, usize) {
    let t0 = Timestamp::UNIX_EPOCH;
    let mut planner = match Planner::new(PlannerConfig::default()) {
        Ok(p) => p,
        Err(e) => panic!("default config: {e}"),
    };
    for i in 0..CHANGED {
        planner.desire(
            &WorkloadRef::new(WorkloadKind::Deployment, "crowded", format!("w{i:04}")),
            "sha256:new",
            t0,
        );
    }
    let now = t0.saturating_add(Duration::from_secs(10)).unwrap_or(t0);
    let start = Instant::now();
    let mut calls = 0;
    while planner.pending_count() > 0 {
        let plan = planner.next(now);
        calls += 1;
        for (w, _) in &plan.start {
            planner.rollout_finished(w, true);
        }
    }
    (start.elapsed(), calls)
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .and_then(|l| l.split_once(':').map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug (numbers meaningless)"
    } else {
        "release"
    };

    let cluster = cluster();

    // Memory: the first build, with the templates already in memory.
    let rss_before = rss_bytes();
    let start = Instant::now();
    let index = build(&cluster);
    let mut builds = vec![start.elapsed()];
    let rss_after = rss_bytes();
    let heap = index.heap_size();
    for _ in 1..BUILD_RUNS {
        let start = Instant::now();
        black_box(build(&cluster));
        builds.push(start.elapsed());
    }
    let build_time = median(builds);

    // Lookups over every referenced Secret, in a scrambled order.
    let mut rng = Rng(7);
    let mut keys: Vec<(String, String)> = Vec::with_capacity(SECRETS);
    for ns in 0..NAMESPACES {
        for i in 0..SECRETS / NAMESPACES {
            keys.push((format!("team-{ns:02}"), secret_name(ns, i)));
        }
    }
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    let start = Instant::now();
    let mut found = 0usize;
    for i in 0..LOOKUPS {
        let (ns, s) = &keys[i % keys.len()];
        found += black_box(index.consumers_of(black_box(ns), black_box(s))).len();
    }
    let lookup = start.elapsed() / LOOKUPS as u32;

    let changed: Vec<(String, String)> = keys.iter().take(CHANGED).cloned().collect();
    let runs: Vec<PlanRun> = (0..BUILD_RUNS).map(|_| plan(&index, &changed)).collect();
    let desire = median(runs.iter().map(|r| r.desire).collect());
    let drain = median(runs.iter().map(|r| r.drain).collect());
    let (affected, next_calls) = (runs[0].affected, runs[0].next_calls);
    let (crowded, crowded_calls) = plan_one_namespace();

    let workloads = index.len();
    println!("keyward consumers benchmark ({profile})");
    println!("machine: {cores} cores, {cpu}");
    println!(
        "cluster: {workloads} workloads in {NAMESPACES} namespaces; {} distinct Secrets referenced by {} references \
         (env secretKeyRef {}, envFrom {}, secret volume {}, projected volume {}); {} opted out",
        index.secret_count(),
        cluster.references,
        cluster.mix.env,
        cluster.mix.env_from,
        cluster.mix.volume,
        cluster.mix.projected,
        cluster.workloads.iter().filter(|w| w.2).count(),
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| index memory per workload, `heap_size()` accounting | {} B ({:.2} MiB in all) |",
        heap / workloads,
        heap as f64 / (1 << 20) as f64
    );
    match (rss_before, rss_after) {
        (Some(b), Some(a)) => println!(
            "| index memory per workload, resident-memory growth while building | {} B ({:.2} MiB in all) |",
            a.saturating_sub(b) / workloads,
            a.saturating_sub(b) as f64 / (1 << 20) as f64
        ),
        _ => println!("| index memory per workload, resident-memory growth | unavailable |"),
    }
    println!(
        "| build the index ({workloads} upserts incl. discovery), median of {BUILD_RUNS} | {} ({} per workload) |",
        fmt(build_time),
        fmt(build_time / workloads as u32)
    );
    println!(
        "| one `consumers_of` lookup, mean of {LOOKUPS} (avg {:.2} consumers returned) | {} |",
        found as f64 / LOOKUPS as f64,
        fmt(lookup)
    );
    println!(
        "| {CHANGED} Secrets change: find consumers, hash, `desire` ({affected} workloads), median of {BUILD_RUNS} | {} |",
        fmt(desire)
    );
    println!(
        "| … then `next` until all {affected} started, rollouts finishing at once ({next_calls} calls), median | {} |",
        fmt(drain)
    );
    println!(
        "| worst case: {CHANGED} pending in one namespace, `next` until all started ({crowded_calls} calls) | {} |",
        fmt(crowded)
    );
}
