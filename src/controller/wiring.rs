//! Wiring: the ManagedSecret cache every replica keeps, leadership, and — while this replica leads — the
//! controller that runs [`reconcile`](super::reconcile) with its watches and concurrency, and the restart task;
//! shutdown, graceful or on a lost lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, ObjectMeta, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::access::AccessView;
use super::context::{Context, Settings, shard_config};
use super::error::ControllerError;
use super::fault;
use super::known_secrets::KnownSecrets;
use super::leader::{Elector, Leadership};
use super::reconcile::reconcile;
use super::restart_task;
use super::task::AbortOnDrop;
use super::timing::backoff;
use super::wakes::{Wakes, reference};
use crate::api::record::records;
use crate::api::{AccessPolicy, ManagedSecret, ManagedSecretSpec};
use crate::authz::grants::Policies;
use crate::consumers::restarts::Observation;
use crate::telemetry::metrics::Metrics;

/// Where the ManagedSecret cache sends what it sees while this replica writes: the changes that wake a reconcile,
/// and every change, as the restart task's observation of a policy.
#[derive(Default)]
struct Taps {
    reconcile: Option<mpsc::UnboundedSender<ObjectRef<ManagedSecret>>>,
    restarts: Option<mpsc::UnboundedSender<Observation>>,
}

type Triggers = Arc<Mutex<Taps>>;

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
    let managed: Api<DeserializeGuard<ManagedSecret>> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    // Set once per process; a second run (tests) keeps the first view. Followers serve it too.
    let _ = settings.view.set(reader.clone());
    let triggers: Triggers = Arc::default();
    let wakes = Arc::new(Wakes::new(
        settings.metrics.queue_depth.clone(),
        KnownSecrets::new(fault::blind_secrets()),
    ));
    let _cache = AbortOnDrop(tokio::spawn(keep_cache(
        managed,
        shard_config(settings.shard_selector.as_deref()),
        writer,
        triggers.clone(),
        wakes.clone(),
    )));
    // What authorization reads, kept by every replica too, so that a new leader decides at once.
    let access = Arc::new(AccessView::new(settings.policies.borrow_and_update().clone()));
    let (grants_changed, grants_seen) = watch::channel(0u64);
    let grants_changed = Arc::new(grants_changed);
    let _base_policies = AbortOnDrop(tokio::spawn(keep_base_policies(
        settings.policies.clone(),
        access.clone(),
        grants_changed.clone(),
    )));
    let policies = settings.watch_access_policies.then(|| {
        let (store, writer) = reflector::store();
        let task = keep_policies(Api::all(client.clone()), writer, access.clone(), grants_changed.clone());
        (store, AbortOnDrop(tokio::spawn(task)))
    });
    // Namespaces' labels select grants; a namespaced keyward may not read Namespaces, and selects by name only.
    let namespaces = settings.watch_namespace.is_none().then(|| {
        let (store, writer) = reflector::store();
        access.set_namespaces(store.clone());
        let task = keep_namespaces(Api::all(client.clone()), writer, grants_changed.clone());
        (store, AbortOnDrop(tokio::spawn(task)))
    });
    let caches = Caches {
        managed: reader.clone(),
        policies: policies.as_ref().map(|(s, _)| s.clone()),
        namespaces: namespaces.as_ref().map(|(s, _)| s.clone()),
    };

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
        caches,
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
        () = write(client, settings, reader, triggers, wakes, (access, grants_seen), shutdown) => {
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

/// Keeps the ManagedSecret cache (this shard's: `config`) and, while this replica writes, hands each object it
/// sees change in a way that matters to its reconcile (`Wakes::changed`) to the controller. Objects are read
/// through kube's `DeserializeGuard`: one keyward cannot read (a value only a newer keyward knows, after the
/// CRDs were upgraded first: docs/upgrade.md) is logged by name and kept out of the cache (an earlier readable
/// version removed from it), instead of failing the list and with it every other object.
async fn keep_cache(
    api: Api<DeserializeGuard<ManagedSecret>>,
    config: watcher::Config,
    writer: reflector::store::Writer<ManagedSecret>,
    triggers: Triggers,
    wakes: Arc<Wakes>,
) {
    let store = writer.as_reader();
    let mut events = watcher(api, config)
        .default_backoff()
        .try_filter_map(|event| std::future::ready(Ok(readable(event))))
        .modify(prune)
        .reflect(writer)
        .boxed();
    let send = |ms: &ManagedSecret| {
        if let Ok(taps) = triggers.lock()
            && let Some(tx) = taps.reconcile.as_ref()
        {
            let _ = tx.send(reference(ms));
        }
    };
    let tell = |ms: &ManagedSecret, gone: bool| {
        if let Ok(taps) = triggers.lock()
            && let Some(tx) = taps.restarts.as_ref()
        {
            let _ = tx.send(restart_task::policy_observation(ms, gone));
        }
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(ms) | watcher::Event::InitApply(ms)) => {
                tell(&ms, false);
                if wakes.changed(&ms) {
                    send(&ms);
                }
            }
            // The others that fill its target Secret take its keys out (sharing::check).
            Ok(watcher::Event::Delete(gone)) => {
                tell(&gone, true);
                wakes.deleted(&gone);
                let (ns, target) = (gone.namespace(), gone.target_name().to_string());
                for sibling in store.state() {
                    if sibling.namespace() == ns
                        && sibling.target_name() == target
                        && sibling.name_any() != gone.name_any()
                    {
                        send(&sibling);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "ManagedSecret watch error"),
        }
    }
}

/// What the cache need not keep of a ManagedSecret: its managedFields (the largest part of a small object, and
/// nothing keyward reads) and kubectl's last-applied copy of the spec.
fn prune(ms: &mut ManagedSecret) {
    ms.metadata.managed_fields = None;
    if let Some(annotations) = ms.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The watch event with the object keyward can read, or, for one it cannot, what removes it from the cache.
fn readable(event: watcher::Event<DeserializeGuard<ManagedSecret>>) -> Option<watcher::Event<ManagedSecret>> {
    use watcher::Event;
    match event {
        Event::Apply(DeserializeGuard(Ok(ms))) => Some(Event::Apply(ms)),
        Event::Apply(DeserializeGuard(Err(bad))) => Some(Event::Delete(unreadable(bad))),
        Event::InitApply(DeserializeGuard(Ok(ms))) => Some(Event::InitApply(ms)),
        Event::InitApply(DeserializeGuard(Err(bad))) => {
            unreadable(bad);
            None
        }
        Event::Delete(DeserializeGuard(found)) => {
            Some(Event::Delete(found.unwrap_or_else(|bad| placeholder(bad.metadata))))
        }
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// Logs an object keyward cannot read; its placeholder, to remove it from the cache.
fn unreadable(bad: InvalidObject) -> ManagedSecret {
    // The error names a field and what was expected of it; a ManagedSecret's spec holds no secret values.
    tracing::warn!(
        namespace = bad.metadata.namespace.as_deref().unwrap_or_default(),
        name = bad.metadata.name.as_deref().unwrap_or_default(),
        error = %bad.error,
        "ManagedSecret not readable by this keyward (a newer schema?): left alone until it is readable or keyward \
         is upgraded"
    );
    placeholder(bad.metadata)
}

/// A ManagedSecret standing for an unreadable one in a Delete event: the store removes by name and namespace.
fn placeholder(metadata: ObjectMeta) -> ManagedSecret {
    ManagedSecret {
        metadata,
        spec: ManagedSecretSpec::default(),
        status: None,
    }
}

/// The caches a replica keeps: ManagedSecrets, and what authorization reads.
struct Caches {
    managed: Store<ManagedSecret>,
    policies: Option<Store<AccessPolicy>>,
    namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
}

impl Caches {
    /// Resolves once every cache has synced.
    async fn synced(self) {
        ready(&self.managed).await;
        tracing::info!("ManagedSecret cache synced");
        if let Some(p) = &self.policies {
            ready(p).await;
            tracing::info!("AccessPolicy cache synced");
        }
        if let Some(n) = &self.namespaces {
            ready(n).await;
        }
    }
}

/// Waits for a store's first sync. Its readiness wakes only its most recent waiter, so ask again every half
/// second instead of waiting once.
async fn ready<K>(store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await {
            return;
        }
    }
}

/// Keeps the cluster's AccessPolicies, rebuilds the grants in force on every change, and says so.
async fn keep_policies(
    api: Api<AccessPolicy>,
    writer: reflector::store::Writer<AccessPolicy>,
    access: Arc<AccessView>,
    changed: Arc<watch::Sender<u64>>,
) {
    let store = writer.as_reader();
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                access.set_cluster_policies(&store.state());
                changed.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "AccessPolicy watch error"),
        }
    }
}

/// Takes in the grants from outside the cluster each time they change (`keyward run` re-reads the policy file).
async fn keep_base_policies(
    mut policies: watch::Receiver<Policies>,
    access: Arc<AccessView>,
    changed: Arc<watch::Sender<u64>>,
) {
    while policies.changed().await.is_ok() {
        access.set_base(policies.borrow_and_update().clone());
        changed.send_modify(|n| *n += 1);
    }
}

/// Keeps the Namespaces' metadata (for grants that select namespaces by label); says when a namespace's labels
/// change, and only then: other updates of a namespace (annotations, its finalizers while it is deleted) and new
/// namespaces (nothing in them was refused for their labels yet) re-check nothing.
async fn keep_namespaces(
    api: Api<PartialObjectMeta<Namespace>>,
    writer: reflector::store::Writer<PartialObjectMeta<Namespace>>,
    changed: Arc<watch::Sender<u64>>,
) {
    let mut labels: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> =
        std::collections::HashMap::new();
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                let now = ns.metadata.labels.clone().unwrap_or_default();
                if labels
                    .insert(ns.name_any(), now.clone())
                    .is_some_and(|before| before != now)
                {
                    changed.send_modify(|n| *n += 1);
                }
            }
            Ok(watcher::Event::Delete(ns)) => {
                labels.remove(&ns.name_any());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Namespace watch error"),
        }
    }
}

/// Keeps `ready` (caches synced and leadership known) and the `keyward_leader` gauge up to date.
async fn track_readiness(
    caches: Caches,
    synced_tx: watch::Sender<bool>,
    mut leadership: watch::Receiver<Leadership>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut synced = false;
    let mut known = true;
    let all_synced = caches.synced();
    tokio::pin!(all_synced);
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
            () = &mut all_synced, if !synced => {
                synced = true;
                synced_tx.send_replace(true);
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
    wakes: Arc<Wakes>,
    (access, grants_changed): (Arc<AccessView>, watch::Receiver<u64>),
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
    // The restart task is told of the ManagedSecrets and the managed Secrets by the watches here (each object
    // decoded once): the cache's policies from now on, after what it holds now, and the Secrets from the
    // controller's watch below.
    let mut secret_tap = None;
    let _restarts = settings.planner.take().map(|planner| {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut taps) = triggers.lock() {
            taps.restarts = Some(tx.clone());
        }
        for ms in store.state() {
            let _ = tx.send(restart_task::policy_observation(&ms, false));
        }
        let shard = settings.shard_selector.is_some().then(|| store.clone());
        secret_tap = Some(restart_task::SecretTap::new(tx, shard));
        let recorder = Recorder::new(client.clone(), reporter);
        AbortOnDrop(tokio::spawn(restart_task::run(
            client.clone(),
            recorder,
            planner,
            restart_task::Scope {
                namespace: settings.watch_namespace.clone(),
                observations: rx,
            },
            settings.rollout_deadline,
            settings.metrics.clone(),
            settings.audit.clone(),
        )))
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        access,
        Some(store.clone()),
        wakes.clone(),
    ));

    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut taps) = triggers.lock() {
        taps.reconcile = Some(tx);
    }
    // Objects are triggered by reference (`wakes::reference`): what the cache shows woke them, and every one
    // when this replica starts writing (the cache synced before: each gets its first reconcile) and when the
    // grants (policies, namespaces' labels) change.
    let queued = wakes.clone();
    let changes = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
        .inspect(move |r: &ObjectRef<ManagedSecret>| queued.asked([r.clone()]));
    let (everyone, queued) = (store.clone(), wakes.clone());
    let all = futures::stream::once(async {})
        .chain(grant_changes(grants_changed))
        .flat_map(move |()| {
            let refs: Vec<ObjectRef<ManagedSecret>> = everyone.state().iter().map(|ms| reference(ms)).collect();
            queued.asked(refs.iter().cloned());
            futures::stream::iter(refs)
        });
    let controller = Controller::for_stream(futures::stream::pending(), store.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(futures::stream::select(changes, all));
    // Secrets are watched as metadata only: a change to one keyward fills (drift: any change keyward did not
    // make itself) or to one a ManagedSecret reads wakes those ManagedSecrets; the data itself is read only in
    // reconcile, for the one Secret it needs.
    let known = wakes.clone();
    let secret_events = changed_secrets(watcher(secrets, watcher::Config::default().any_semantic()).inspect(
        move |event| {
            if let Ok(event) = event {
                known.secrets.observe(event);
                if let Some(tap) = secret_tap.as_mut() {
                    tap.observe(event);
                }
            }
        },
    ));
    let mine = store.clone();
    controller
        .watches_stream(secret_events, move |secret| {
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let version = secret.metadata.resource_version.as_deref();
            let own = wakes.is_own_write(&ns, &name, version);
            wakes.saw_secret(&ns, &name, version);
            // Every ManagedSecret that fills it (several may) unless keyward's own write is coming back, and
            // every one that reads it.
            let mut refs: Vec<ObjectRef<ManagedSecret>> = match (&secret.metadata.annotations, own) {
                (Some(a), false) => records(a)
                    .into_keys()
                    .map(|owner| ObjectRef::new(&owner).within(&ns))
                    .collect(),
                _ => Vec::new(),
            };
            refs.extend(wakes.readers_of(&ns, &name));
            // Only objects in this cache: another shard's (or one deleted since) are not this replica's.
            refs.retain(|r| mine.get(r).is_some());
            wakes.asked(refs.iter().cloned());
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
    if let Ok(mut taps) = triggers.lock() {
        *taps = Taps::default();
    }
}

/// The Secrets a watch sees change — not those of its first list: every ManagedSecret gets its first reconcile
/// when this replica starts writing (`reconcile_all_on`), and waking each again for its Secret as listed doubled
/// a restart's work. A later re-list (after a watch gap) counts: what changed in the gap shows up only there.
fn changed_secrets<S>(events: S) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>>
where
    S: futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>,
{
    events
        .scan(false, |listed, event| {
            let item = match event {
                Ok(watcher::Event::InitDone) => {
                    *listed = true;
                    None
                }
                Ok(watcher::Event::InitApply(s)) if *listed => Some(Ok(s)),
                Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => Some(Ok(s)),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Err(e) => Some(Err(e)),
            };
            std::future::ready(Some(item))
        })
        .filter_map(std::future::ready)
}

/// One item per change of the grants, bursts coalesced over half a second. Changes made before (the caches'
/// first lists, while this replica waited to lead) are not: every object's first reconcile sees the grants in
/// force then, and re-checking them all once more doubled a restart's work.
fn grant_changes(mut rx: watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send {
    rx.borrow_and_update();
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rx.borrow_and_update();
        tracing::info!("access grants changed: re-checking every ManagedSecret");
        Some(((), rx))
    })
}

fn error_policy(obj: Arc<ManagedSecret>, err: &ControllerError, ctx: Arc<Context>) -> Action {
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let n = ctx.failed(&uid);
    tracing::warn!(category = err.category(), error = %err, "reconcile error");
    Action::requeue(backoff(n, None, obj.refresh_interval()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.name = Some(name.into());
        s
    }

    #[tokio::test]
    async fn grant_changes_before_writing_starts_recheck_nothing() {
        let (tx, rx) = watch::channel(0u64);
        tx.send_replace(1);
        let mut changes = Box::pin(grant_changes(rx));
        let early = tokio::time::timeout(Duration::from_millis(700), changes.next()).await;
        assert!(
            early.is_err(),
            "a change made before the stream began is not a re-check"
        );
        tx.send_replace(2);
        let later = tokio::time::timeout(Duration::from_secs(2), changes.next()).await;
        assert_eq!(later.ok(), Some(Some(())), "a later change is");
    }

    #[tokio::test]
    async fn the_first_list_of_secrets_wakes_nobody_a_relist_does() {
        use watcher::Event::*;
        let events = futures::stream::iter([
            Init,
            InitApply(secret("listed")),
            InitDone,
            Apply(secret("changed")),
            Init,
            InitApply(secret("changed-in-a-gap")),
            InitDone,
            Delete(secret("deleted")),
        ])
        .map(Ok);
        let seen: Vec<String> = changed_secrets(events)
            .map(|s| s.unwrap().metadata.name.unwrap())
            .collect()
            .await;
        assert_eq!(seen, ["changed", "changed-in-a-gap", "deleted"]);
    }
}
