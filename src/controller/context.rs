//! What every reconcile shares: the dependencies (clients, sources, hasher, policy, telemetry) and a small
//! per-object memory (failure counts for backoff, and the refresh-now and rotate-now requests honoured), keyed
//! by the object's uid.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::access::AccessView;
use super::leader::Elector;
use super::wakes::Wakes;
use crate::api::{ManagedSecret, ManagedSecretStatus, PushStatus};
use crate::authz::grants::Policies;
use crate::consumers::Planner;
use crate::push::github::GithubClient;
use crate::secret::ValueHasher;
use crate::source::SecretSource;
use crate::source::esc::EscSource;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::{ManagedView, Metrics};

/// The field manager keyward writes with (server-side apply).
pub const FIELD_MANAGER: &str = "keyward";

/// What the controller needs to run.
pub struct Settings {
    /// Where values are read from (ESC when configured, and the cluster's Secrets).
    pub source: Arc<dyn SecretSource>,
    /// ESC, for the writes of rotations; None when no ESC endpoint is configured.
    pub esc: Option<Arc<EscSource>>,
    pub hasher: ValueHasher,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// A snapshot taken this recently is reused even by a reconcile that wants fresh data (new objects,
    /// refresh-now), so that a burst of them costs one ESC open.
    pub coalesce_window: Duration,
    /// The identity in Events.
    pub instance: String,
    /// Watch only this namespace (namespaced mode); all namespaces when None.
    pub watch_namespace: Option<String>,
    /// Reconcile only the ManagedSecrets this label selector selects (one shard); all when None.
    pub shard_selector: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Set once the ManagedSecret cache has synced.
    pub ready: Arc<AtomicBool>,
    /// Consumer restarts (debounce, budgets, windows); None turns restarts off.
    pub planner: Option<Planner>,
    /// How long a restart's rollout may take before it counts as failed.
    pub rollout_deadline: Duration,
    /// Where `rotation.pushTo` GitHub targets are pushed.
    pub github: Option<GithubClient>,
    /// Grants from outside the cluster: a policy file, or `--allow-all`; the cluster's AccessPolicies add to
    /// them when `watch_access_policies`. A new value (the file changed) takes effect at once: every
    /// ManagedSecret is checked again.
    pub policies: tokio::sync::watch::Receiver<Policies>,
    /// Watch the cluster's AccessPolicy objects.
    pub watch_access_policies: bool,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// Filled with the ManagedSecret cache once the controller runs (metrics, /health/secrets).
    pub view: ManagedView,
    /// Leader election among replicas; None: this process is the only one and always writes.
    pub leader: Option<Elector>,
}

/// How ManagedSecrets are watched: this shard's only (`--shard-selector`), or all.
pub fn shard_config(selector: Option<&str>) -> watcher::Config {
    let config = watcher::Config::default().any_semantic();
    match selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub source: Arc<dyn SecretSource>,
    pub esc: Option<Arc<EscSource>>,
    pub hasher: ValueHasher,
    pub recorder: Recorder,
    /// Who Events come from, for Events that must keep their own note (`record::publish_distinct`).
    pub reporter: Reporter,
    pub coalesce_window: Duration,
    pub metrics: Arc<Metrics>,
    /// Where `rotation.pushTo` GitHub targets are pushed; None when not configured.
    pub github: Option<GithubClient>,
    /// The grants in force and the namespaces' labels.
    pub access: Arc<AccessView>,
    /// Every ManagedSecret (for the ownership of GitHub secrets), once the cache runs.
    pub managed: Option<Store<ManagedSecret>>,
    /// What wakes reconciles (keyward's own Secret writes are recorded there, so they wake nobody).
    pub wakes: Arc<Wakes>,
    pub audit: Arc<Audit>,
    memory: Memory,
}

/// What this process remembers per object (by uid) between reconciles.
#[derive(Default)]
struct Memory {
    /// Consecutive failures per key (a uid, or `uid/push`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The refresh-now request last honoured.
    refreshes: Mutex<HashMap<String, String>>,
    /// The rotate-now request last honoured.
    rotations: Mutex<HashMap<String, String>>,
    /// Consecutive failed rotations, and when the next may be tried.
    rotation_failures: Mutex<HashMap<String, (u32, jiff::Timestamp)>>,
    /// When GitHub was last asked about a pushed secret (`uid/target`).
    github_checks: Mutex<HashMap<String, std::time::Instant>>,
    /// The last push this process made per `uid/target`: a reconcile that starts from a cached object whose
    /// status does not show that push yet must not push the same value again.
    pushes: Mutex<HashMap<String, PushStatus>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        access: Arc<AccessView>,
        managed: Option<Store<ManagedSecret>>,
        wakes: Arc<Wakes>,
    ) -> Self {
        let reporter = Reporter {
            controller: "keyward".into(),
            instance: Some(settings.instance),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            source: settings.source,
            esc: settings.esc,
            hasher: settings.hasher,
            coalesce_window: settings.coalesce_window,
            metrics: settings.metrics,
            github: settings.github,
            access,
            managed,
            wakes,
            audit: settings.audit,
            memory: Memory::default(),
        }
    }

    /// Records a failure and returns how many in a row `key` (a uid, or `uid/push`) has had.
    pub fn failed(&self, key: &str) -> u32 {
        count(&self.memory.failures, key)
    }

    /// Forgets `key`'s failures.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut map) = self.memory.failures.lock() {
            map.remove(key);
        }
    }

    /// How many failed rotations in a row this object has had, counting one more.
    pub fn rotation_failed(&self, uid: &str) -> u32 {
        let Ok(map) = self.memory.rotation_failures.lock() else {
            return 1;
        };
        map.get(uid).map_or(1, |(n, _)| n.saturating_add(1))
    }

    /// Records `failures` failed rotations in a row; the next may be tried at `next`.
    pub fn rotation_backoff(&self, uid: &str, failures: u32, next: jiff::Timestamp) {
        if let Ok(mut map) = self.memory.rotation_failures.lock() {
            map.insert(uid.to_string(), (failures, next));
        }
    }

    /// When the next rotation may be tried, after failures.
    pub fn rotation_not_before(&self, uid: &str) -> Option<jiff::Timestamp> {
        self.memory
            .rotation_failures
            .lock()
            .ok()
            .and_then(|map| map.get(uid).map(|(_, t)| *t))
    }

    pub fn rotation_succeeded(&self, uid: &str) {
        if let Ok(mut map) = self.memory.rotation_failures.lock() {
            map.remove(uid);
        }
    }

    /// Whether GitHub was asked about `key` (`uid/target`) at or after `since`: its answer is as fresh as this
    /// reconcile needs (GitHub is read as often as the source: once per refresh tick, or on a refresh request).
    pub fn github_checked_since(&self, key: &str, since: std::time::Instant) -> bool {
        self.memory
            .github_checks
            .lock()
            .is_ok_and(|map| map.get(key).is_some_and(|at| *at >= since))
    }

    /// Records that GitHub was just asked about `key`.
    pub fn github_checked(&self, key: &str) {
        if let Ok(mut map) = self.memory.github_checks.lock() {
            map.insert(key.to_string(), std::time::Instant::now());
        }
    }

    /// The push this process last made to `key` (`uid/target`), if any.
    pub fn pushed(&self, key: &str) -> Option<PushStatus> {
        self.memory.pushes.lock().ok().and_then(|map| map.get(key).cloned())
    }

    /// Records a push made to `key` (`uid/target`).
    pub fn remember_push(&self, key: &str, push: &PushStatus) {
        if let Ok(mut map) = self.memory.pushes.lock() {
            map.insert(key.to_string(), push.clone());
        }
    }

    /// Whether the rotate-now `request` was honoured for this object (by this process).
    pub fn rotation_handled(&self, uid: &str, request: &str) -> bool {
        self.memory
            .rotations
            .lock()
            .is_ok_and(|map| map.get(uid).map(String::as_str) == Some(request))
    }

    pub fn remember_rotation(&self, uid: &str, request: &str) {
        if let Ok(mut map) = self.memory.rotations.lock() {
            map.insert(uid.to_string(), request.to_string());
        }
    }

    /// The status a reconcile of `ms` starts from: the cached object's, or this process's last write of it
    /// while the cache has not delivered that yet (`StatusWrites::base`).
    pub fn status_base(&self, ms: &ManagedSecret) -> Option<ManagedSecretStatus> {
        self.wakes.statuses.base(ms)
    }

    /// Remembers that `status` was written for `ms` (as cached when the write was made); `produced` is the
    /// resourceVersion the API server answered the write with.
    pub fn status_written(&self, ms: &ManagedSecret, status: &ManagedSecretStatus, produced: Option<String>) {
        self.wakes.statuses.wrote(ms, status, produced);
    }

    /// Whether `request` was already honoured for this object; records it as honoured if not.
    pub fn refresh_handled(&self, uid: &str, request: Option<&str>) -> bool {
        let (Some(request), Ok(mut map)) = (request, self.memory.refreshes.lock()) else {
            return false;
        };
        if map.get(uid).map(String::as_str) == Some(request) {
            return true;
        }
        map.insert(uid.to_string(), request.to_string());
        false
    }
}

/// Adds one to `key`'s counter and returns it.
fn count(counters: &Mutex<HashMap<String, u32>>, key: &str) -> u32 {
    let Ok(mut map) = counters.lock() else { return 1 };
    let n = map.entry(key.to_string()).or_insert(0);
    *n = n.saturating_add(1);
    *n
}
