//! Wiring: watches, concurrency and shutdown around [`reconcile`].

pub mod conditions;
pub mod leader;
mod push;
mod reconcile;
mod restarts;
mod rotate;
mod target;
pub mod workloads;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, watch};

use crate::access::AccessPolicy;
use crate::api::{MANAGED_SECRET_ANNOTATION, ManagedSecret};
use crate::consumers::Planner;
use crate::push::github::GithubClient;
use crate::source::esc::EscSource;
use crate::source::{SourceError, ValueHasher};
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::ManagedView;
use crate::telemetry::metrics::Metrics;
use leader::{Elector, Leadership};

pub use reconcile::reconcile;

/// The field manager keyward writes with (server-side apply).
pub const FIELD_MANAGER: &str = "keyward";

/// Errors of the controller layer. Messages never hold secret values.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("lost the leader lease; stopped writing")]
    LostLeadership,
    #[error("leader election stopped")]
    ElectionStopped,
}

impl ControllerError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            ControllerError::Kube(_) => "kube",
            ControllerError::Source(e) => e.category(),
            ControllerError::MissingField(_) => "invalid_object",
            ControllerError::LostLeadership => "lost_leadership",
            ControllerError::ElectionStopped => "election_stopped",
        }
    }
}

/// What the controller needs to run.
pub struct Settings {
    pub esc: Option<EscSource>,
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
    pub metrics: Arc<Metrics>,
    /// Set once the ManagedSecret cache has synced.
    pub ready: Arc<AtomicBool>,
    /// Consumer restarts (debounce, budgets, windows); None turns restarts off.
    pub planner: Option<Planner>,
    /// How long a restart's rollout may take before it counts as failed.
    pub rollout_deadline: Duration,
    /// Where `rotation.pushTo` GitHub targets are pushed.
    pub github: Option<GithubClient>,
    /// Which namespaces may read which ESC environments.
    pub policy: AccessPolicy,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// Filled with the ManagedSecret cache once the controller runs (metrics, /health/secrets).
    pub view: ManagedView,
    /// Leader election among replicas; None: this process is the only one and always writes.
    pub leader: Option<Elector>,
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub esc: Option<EscSource>,
    pub hasher: ValueHasher,
    pub recorder: Recorder,
    /// Who Events come from, for [`reconcile::publish_distinct`].
    pub reporter: Reporter,
    pub coalesce_window: Duration,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object (by uid), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The refresh-now request last honoured per object (by uid).
    refreshes: Mutex<HashMap<String, String>>,
    /// The rotate-now request last honoured per object (by uid).
    rotations: Mutex<HashMap<String, String>>,
    /// Consecutive failed rotations per object (by uid).
    rotation_failures: Mutex<HashMap<String, u32>>,
    /// Where `rotation.pushTo` GitHub targets are pushed; None when not configured.
    pub github: Option<GithubClient>,
    pub policy: AccessPolicy,
    pub audit: Arc<Audit>,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: "keyward".into(),
            instance: Some(settings.instance),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            esc: settings.esc,
            hasher: settings.hasher,
            coalesce_window: settings.coalesce_window,
            metrics: settings.metrics,
            failures: Mutex::new(HashMap::new()),
            refreshes: Mutex::new(HashMap::new()),
            rotations: Mutex::new(HashMap::new()),
            rotation_failures: Mutex::new(HashMap::new()),
            github: settings.github,
            policy: settings.policy,
            audit: settings.audit,
        }
    }

    /// Records a failure and returns how many in a row this object has had.
    fn failed(&self, uid: &str) -> u32 {
        count(&self.failures, uid)
    }

    fn rotation_failed(&self, uid: &str) -> u32 {
        count(&self.rotation_failures, uid)
    }

    fn rotation_succeeded(&self, uid: &str) {
        if let Ok(mut map) = self.rotation_failures.lock() {
            map.remove(uid);
        }
    }

    /// Whether the rotate-now `request` was honoured for this object (by this process).
    fn rotation_handled(&self, uid: &str, request: &str) -> bool {
        self.rotations
            .lock()
            .is_ok_and(|map| map.get(uid).map(String::as_str) == Some(request))
    }

    fn remember_rotation(&self, uid: &str, request: &str) {
        if let Ok(mut map) = self.rotations.lock() {
            map.insert(uid.to_string(), request.to_string());
        }
    }

    /// Whether `request` was already honoured for this object; records it as honoured if not.
    fn refresh_handled(&self, uid: &str, request: Option<&str>) -> bool {
        let (Some(request), Ok(mut map)) = (request, self.refreshes.lock()) else {
            return false;
        };
        if map.get(uid).map(String::as_str) == Some(request) {
            return true;
        }
        map.insert(uid.to_string(), request.to_string());
        false
    }

    fn succeeded(&self, uid: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(uid);
        }
    }
}

/// Adds one to `key`'s counter and returns it.
fn count(counters: &Mutex<HashMap<String, u32>>, key: &str) -> u32 {
    let Ok(mut map) = counters.lock() else { return 1 };
    let n = map.entry(key.to_string()).or_insert(0);
    *n = n.saturating_add(1);
    *n
}

/// Aborts a spawned task when dropped, so that a task never outlives what started it.
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the ManagedSecret cache sends what it sees while this replica writes.
type Triggers = Arc<Mutex<Option<mpsc::UnboundedSender<ManagedSecret>>>>;

/// Runs the ManagedSecret controller until `shutdown` resolves.
///
/// Every replica keeps the ManagedSecret cache from the start (readiness needs it, and a replica that takes over
/// has it warm); only the leader writes: the reconciles and the restart task start once this replica leads
/// (at once without leader election) and its cache has synced. A leader that loses the lease stops them at
/// once and returns [`ControllerError::LostLeadership`]; a graceful stop lets in-flight reconciles finish, then
/// releases the lease.
pub async fn run(
    client: Client,
    mut settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), ControllerError> {
    let shutdown = shutdown.boxed().shared();
    let managed: Api<ManagedSecret> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    // Set once per process; a second run (tests) keeps the first view. Followers serve it too.
    let _ = settings.view.set(reader.clone());
    let triggers: Triggers = Arc::default();
    let _cache = AbortOnDrop(tokio::spawn(keep_cache(managed, writer, triggers.clone())));

    let elector = settings.leader.take();
    // Without leader election this process is the only one and always leads.
    let (_sole, mut leadership) = match &elector {
        Some(e) => (None, e.subscribe()),
        None => {
            let (tx, rx) = watch::channel(Leadership::Leader);
            (Some(tx), rx)
        }
    };
    let (synced_tx, mut synced) = watch::channel(false);
    let _readiness = AbortOnDrop(tokio::spawn(track_readiness(
        reader.clone(),
        synced_tx,
        leadership.clone(),
        settings.ready.clone(),
        settings.metrics.clone(),
    )));

    let lead = async {
        loop {
            if leadership.borrow_and_update().is_leader() && *synced.borrow_and_update() {
                return true;
            }
            tokio::select! {
                r = leadership.changed() => if r.is_err() { return false },
                r = synced.changed() => if r.is_err() { return false },
            }
        }
    };
    tokio::select! {
        () = shutdown.clone() => {
            release(elector).await;
            return Ok(());
        }
        leads = lead => if !leads {
            // Only the election's own end closes its channel; without it this replica can never lead.
            tracing::error!("leader election stopped");
            return Err(ControllerError::ElectionStopped);
        },
    }
    tracing::info!("starting to write: reconciles and consumer restarts");
    let mut lost = leadership.clone();
    tokio::select! {
        () = write(client, settings, reader, triggers, shutdown) => {
            release(elector).await;
            Ok(())
        }
        // Dropping the writers cancels every reconcile and restart at its next await: nothing is written after
        // this. What was in flight is left as a crash leaves it, which the next leader picks up.
        _ = lost.wait_for(|l| !l.is_leader()) => {
            tracing::error!("lost the leader lease: stopped writing");
            Err(ControllerError::LostLeadership)
        }
    }
}

async fn release(elector: Option<Elector>) {
    if let Some(e) = elector {
        e.release().await;
    }
}

/// Keeps the ManagedSecret cache and, while this replica writes, hands each object it sees to the controller.
async fn keep_cache(api: Api<ManagedSecret>, writer: reflector::store::Writer<ManagedSecret>, triggers: Triggers) {
    let mut objects = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .boxed();
    while let Some(item) = objects.next().await {
        match item {
            Ok(ms) => {
                if let Ok(slot) = triggers.lock()
                    && let Some(tx) = slot.as_ref()
                {
                    let _ = tx.send(ms);
                }
            }
            Err(e) => tracing::warn!(error = %e, "ManagedSecret watch error"),
        }
    }
}

/// Keeps `ready` (cache synced and leadership known) and the `keyward_leader` gauge up to date.
async fn track_readiness(
    store: Store<ManagedSecret>,
    synced_tx: watch::Sender<bool>,
    mut leadership: watch::Receiver<Leadership>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut synced = false;
    let mut known = true;
    loop {
        let role = leadership.borrow_and_update().clone();
        let is_known = known && role.is_known();
        ready.store(synced && is_known, Ordering::Relaxed);
        metrics.leader.set(i64::from(known && role.is_leader()));
        tokio::select! {
            r = leadership.changed(), if known => {
                // The election stopped (this process is stopping): nobody here knows who leads any more.
                known = r.is_ok();
            }
            // The store's readiness wakes only its most recent waiter, so ask again every half second instead
            // of waiting once.
            r = tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()), if !synced => {
                if let Ok(Ok(())) = r {
                    tracing::info!("ManagedSecret cache synced");
                    synced = true;
                    synced_tx.send_replace(true);
                }
            }
            else => {
                ready.store(false, Ordering::Relaxed);
                metrics.leader.set(0);
                return;
            }
        }
    }
}

/// The writing part: the ManagedSecret controller and the restart task, until `shutdown` (graceful: in-flight
/// reconciles finish).
async fn write(
    client: Client,
    mut settings: Settings,
    store: Store<ManagedSecret>,
    triggers: Triggers,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) {
    let concurrency = settings.concurrency;
    let secrets: Api<PartialObjectMeta<Secret>> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let reporter = Reporter {
        controller: "keyward".into(),
        instance: Some(settings.instance.clone()),
    };
    let _restarts = settings.planner.take().map(|planner| {
        let recorder = Recorder::new(client.clone(), reporter);
        AbortOnDrop(tokio::spawn(restarts::run(
            client.clone(),
            recorder,
            planner,
            settings.watch_namespace.clone(),
            settings.rollout_deadline,
            settings.metrics.clone(),
            settings.audit.clone(),
        )))
    });
    let ctx = Arc::new(Context::new(client.clone(), settings));

    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut slot) = triggers.lock() {
        *slot = Some(tx);
    }
    let changes = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ms| (Ok(ms), rx)) });
    let controller = Controller::for_stream(changes, store.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        // The cache synced before this replica started writing: each object in it gets its first reconcile.
        .reconcile_all_on(futures::stream::once(async {}));
    // Secrets are watched as metadata only: a change to one keyward wrote (drift) or to one a ManagedSecret
    // reads from wakes the owner; the data itself is read only in reconcile, for the one Secret it needs.
    let secret_events = watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
    controller
        .watches_stream(secret_events, move |secret| {
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let mut refs: Vec<ObjectRef<ManagedSecret>> = Vec::new();
            if let Some(owner) = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MANAGED_SECRET_ANNOTATION))
            {
                refs.push(ObjectRef::new(owner).within(&ns));
            }
            for ms in store.state() {
                let reads_it = ms.metadata.namespace.as_deref() == Some(ns.as_str())
                    && ms
                        .spec
                        .source
                        .kubernetes_secret
                        .as_ref()
                        .is_some_and(|k| k.name == name);
                if reads_it {
                    refs.push(ObjectRef::from_obj(ms.as_ref()));
                }
            }
            refs
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    if let Ok(mut slot) = triggers.lock() {
        *slot = None;
    }
}

fn error_policy(obj: Arc<ManagedSecret>, err: &ControllerError, ctx: Arc<Context>) -> Action {
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let n = ctx.failed(&uid);
    tracing::warn!(category = err.category(), error = %err, "reconcile error");
    Action::requeue(backoff(n, None, obj.refresh_interval()))
}

/// Exponential backoff for an object's n-th consecutive failure: 5s doubling, at most the refresh interval
/// (and at most 10 minutes), never shorter than what the source asked for.
pub(crate) fn backoff(n: u32, retry_after: Option<Duration>, interval: Duration) -> Duration {
    let exp = Duration::from_secs(5u64.saturating_mul(1 << n.saturating_sub(1).min(10)));
    let cap = interval.min(Duration::from_secs(600)).max(Duration::from_secs(5));
    exp.min(cap).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honors_retry_after() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, None, hour), Duration::from_secs(5));
        assert_eq!(backoff(2, None, hour), Duration::from_secs(10));
        assert_eq!(backoff(20, None, hour), Duration::from_secs(600));
        assert_eq!(backoff(20, None, Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(backoff(1, Some(Duration::from_secs(42)), hour), Duration::from_secs(42));
    }
}
