//! Consumer restarts: one task that keeps the consumer index from workload watches, learns Secret versions from
//! the managed Secrets' metadata, and sets each consuming workload's restart hash through the planner
//! (debounced, budgeted, in restart windows), then follows the rollout.
//!
//! Idempotent by content: the hash on a pod template names the versions it runs, so a restart happens only when
//! the hash keyward wants differs from the one there. Nothing is remembered across restarts of keyward: pending
//! restarts are hash mismatches, found again on start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::workloads::{Rollout, WorkloadView, adopt_hash, apply_hash};
use crate::api::{
    ConsumerPolicy, ConsumerStatus, Consumers, MANAGED_BY_LABEL, MANAGED_SECRET_ANNOTATION, ManagedSecret,
    PREVIOUS_KEY_ANNOTATION, VALUE_HASH_ANNOTATION, WorkloadKindName,
};
use crate::consumers::discovery::{WorkloadKind, WorkloadRef};
use crate::consumers::hash::secrets_hash;
use crate::consumers::index::ConsumerIndex;
use crate::consumers::planner::Planner;
use crate::telemetry::audit::{Action, Audit, Entry};
use crate::telemetry::metrics::{Metrics, RestartLabels};

/// What the restart task hears about.
enum Change {
    Workload(Box<WorkloadView>),
    WorkloadGone(WorkloadRef),
    Secret {
        namespace: String,
        name: String,
        managed: Option<Managed>,
    },
    Policy {
        namespace: String,
        name: String,
        consumers: Option<Consumers>,
        /// The hash of the value the ManagedSecret last changed to (status.lastChange).
        last_change: Option<String>,
    },
}

/// A Secret keyward manages: which ManagedSecret wrote it and the hash of the value it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Managed {
    managed_secret: String,
    value_hash: String,
    /// The data key holding the replaced value during a rotation's grace period, while it exists.
    previous_key: Option<String>,
}

fn kind_of(k: WorkloadKindName) -> WorkloadKind {
    match k {
        WorkloadKindName::Deployment => WorkloadKind::Deployment,
        WorkloadKindName::StatefulSet => WorkloadKind::StatefulSet,
        WorkloadKindName::DaemonSet => WorkloadKind::DaemonSet,
    }
}

fn kind_name(k: WorkloadKind) -> WorkloadKindName {
    match k {
        WorkloadKind::Deployment => WorkloadKindName::Deployment,
        WorkloadKind::StatefulSet => WorkloadKindName::StatefulSet,
        WorkloadKind::DaemonSet => WorkloadKindName::DaemonSet,
    }
}

/// What the task knows of one workload besides its references.
struct Known {
    current: Option<String>,
}

struct State {
    client: Client,
    recorder: Recorder,
    index: ConsumerIndex,
    planner: Planner,
    known: HashMap<WorkloadRef, Known>,
    managed: HashMap<(String, String), Managed>,
    policies: HashMap<(String, String), Consumers>,
    /// Per ManagedSecret, the hash of the value it last changed to (while rollbackOnFailure verifies it).
    last_changes: HashMap<(String, String), String>,
    /// Restarts started and not yet seen finished: the hash they set.
    rolling: BTreeMap<WorkloadRef, String>,
    /// Managed Secrets (namespace, name) whose consumers' status may have changed.
    dirty: BTreeSet<(String, String)>,
    /// The consumer status last written per ManagedSecret, so that nothing is written twice.
    written: HashMap<(String, String), serde_json::Value>,
    /// How long a rollout may take before keyward counts it as failed (StatefulSets and DaemonSets have no
    /// deadline of their own; a stuck one must not hold a restart slot forever).
    rollout_deadline: Duration,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
}

impl State {
    /// Counts a restart outcome and writes its audit line (one per ManagedSecret whose Secret it consumes).
    fn record(&self, w: &WorkloadRef, result: &'static str) {
        let kind = match w.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        };
        self.metrics
            .restarts
            .get_or_create(&RestartLabels { kind, result })
            .inc();
        if result != "triggered" {
            return;
        }
        let ns = w.namespace.to_string();
        let workload = format!("{kind}/{}", w.name);
        for secret in self.index.secrets_of(w) {
            if let Some(m) = self.managed.get(&(ns.clone(), secret.to_string())) {
                self.audit.record(&Entry {
                    action: Action::RestartTriggered,
                    namespace: &ns,
                    name: &m.managed_secret,
                    accessor: None,
                    source_ip: None,
                    success: true,
                    reason: Some(&workload),
                });
            }
        }
    }

    /// Marks the managed Secrets `w` consumes, so their ManagedSecrets' consumer status is brought up to date.
    fn touch(&mut self, w: &WorkloadRef) {
        let ns = w.namespace.to_string();
        let secrets: Vec<String> = self.index.secrets_of(w).into_iter().map(str::to_string).collect();
        for secret in secrets {
            self.dirty.insert((ns.clone(), secret));
        }
    }

    /// Whether `w` is restarted for changes of the managed Secret `m` (policy, explicit list, opt-out).
    fn included(&self, w: &WorkloadRef, m: &Managed) -> bool {
        let policy = self.policies.get(&(w.namespace.to_string(), m.managed_secret.clone()));
        match policy.map(|p| p.policy).unwrap_or_default() {
            ConsumerPolicy::Auto => self.index.is_opted_out(w) != Some(true),
            ConsumerPolicy::None => false,
            // An explicit list overrides the workload's own opt-out.
            ConsumerPolicy::Explicit => policy.is_some_and(|p| {
                p.workloads
                    .iter()
                    .any(|s| kind_of(s.kind) == w.kind && s.name == *w.name)
            }),
        }
    }

    /// The restart hash keyward wants on `w`, or None when it consumes no Secret whose policy restarts it.
    fn desired(&self, w: &WorkloadRef) -> Option<String> {
        let ns = w.namespace.to_string();
        let mut entries: Vec<(String, String)> = Vec::new();
        for secret in self.index.secrets_of(w) {
            let Some(m) = self.managed.get(&(ns.clone(), secret.to_string())) else {
                continue;
            };
            if self.included(w, m) {
                // Pods that see the grace-period key (envFrom, a whole-Secret volume, or by name) restart once
                // more when it goes; pods that read only the value do not.
                let hash = match &m.previous_key {
                    Some(k) if self.index.references_key(w, secret, k) => format!("{}+{k}", m.value_hash),
                    _ => m.value_hash.clone(),
                };
                entries.push((secret.to_string(), hash));
            }
        }
        if entries.is_empty() {
            return None;
        }
        Some(secrets_hash(entries.iter().map(|(a, b)| (a.as_str(), b.as_str()))))
    }

    /// Writes `status.consumers` of the ManagedSecrets whose consumers changed, when it differs from what was
    /// last written.
    async fn publish_status(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for (ns, secret) in dirty {
            let Some(m) = self.managed.get(&(ns.clone(), secret.clone())).cloned() else {
                continue;
            };
            let mut consumers = Vec::new();
            for w in self.index.consumers_of(&ns, &secret) {
                if !self.included(&w, &m) {
                    continue;
                }
                let current = self.known.get(&w).and_then(|k| k.current.clone());
                let planned = self.planner.status(&w);
                let state = if self.rolling.contains_key(&w) {
                    "Rolling"
                } else if planned.failed.is_some() {
                    "Failed"
                } else if planned.pending.is_some() || current != self.desired(&w) {
                    "Waiting"
                } else {
                    "Restarted"
                };
                consumers.push(ConsumerStatus {
                    kind: w.kind.to_string(),
                    name: w.name.to_string(),
                    secrets_hash: current,
                    state: state.into(),
                });
            }
            let value = serde_json::json!({"consumers": consumers});
            let key = (ns.clone(), m.managed_secret.clone());
            if self.written.get(&key) == Some(&value) {
                continue;
            }
            let api: Api<ManagedSecret> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({"status": value});
            match api
                .patch_status(&m.managed_secret, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.written.insert(key, value);
                }
                Err(e) => {
                    tracing::warn!(managed_secret = %m.managed_secret, error = %e, "writing consumer status failed")
                }
            }
        }
    }

    async fn reconsider(&mut self, w: &WorkloadRef, now: Timestamp) {
        let Some(known) = self.known.get(w) else { return };
        let Some(want) = self.desired(w) else { return };
        if known.current.as_deref() == Some(want.as_str()) || self.rolling.get(w) == Some(&want) {
            return;
        }
        if known.current.is_none() {
            // Never restarted by keyward: its Pods started with today's values. Record that on the workload's
            // own metadata (no rollout), so that only later changes restart it — installing keyward must not
            // restart every consumer in the cluster.
            match adopt_hash(&self.client, kind_name(w.kind), &w.namespace, &w.name, &want).await {
                Ok(()) => tracing::info!(workload = %w, "consumer adopted"),
                Err(e) => tracing::warn!(workload = %w, error = %e, "adopting a consumer failed"),
            }
            return;
        }
        self.planner.desire(w, &want, now);
    }

    async fn apply(&mut self, change: Change, now: Timestamp) {
        match change {
            Change::Workload(view) => {
                let w = WorkloadRef::new(kind_of(view.kind), view.namespace.as_str(), view.name.as_str());
                self.index.upsert(w.clone(), &view.template, view.opted_out);
                let current = view.current_hash().or(view.adopted_hash.as_deref()).map(str::to_string);
                if let Some(started) = self.rolling.get(&w).cloned()
                    && current.as_deref() == Some(started.as_str())
                {
                    match &view.rollout {
                        Rollout::Complete => self.finished(&w, true, "rollout complete").await,
                        Rollout::Failed(why) => self.finished(&w, false, why).await,
                        Rollout::InProgress => {}
                    }
                }
                self.known.insert(w.clone(), Known { current });
                self.touch(&w);
                self.reconsider(&w, now).await;
            }
            Change::WorkloadGone(w) => {
                self.index.remove(&w);
                self.known.remove(&w);
                if self.rolling.remove(&w).is_some() {
                    self.planner.rollout_finished(&w, false);
                }
                self.planner.cancel(&w);
            }
            Change::Secret {
                namespace,
                name,
                managed,
            } => {
                let key = (namespace.clone(), name.clone());
                let changed = match managed {
                    Some(m) => self.managed.insert(key, m.clone()).as_ref() != Some(&m),
                    None => self.managed.remove(&key).is_some(),
                };
                if changed {
                    self.dirty.insert((namespace.clone(), name.clone()));
                    for w in self.index.consumers_of(&namespace, &name) {
                        self.reconsider(&w, now).await;
                    }
                }
            }
            Change::Policy {
                namespace,
                name,
                consumers,
                last_change,
            } => {
                let key = (namespace.clone(), name.clone());
                match last_change {
                    Some(h) => self.last_changes.insert(key.clone(), h),
                    None => self.last_changes.remove(&key),
                };
                match consumers {
                    Some(c) => self.policies.insert(key, c),
                    None => self.policies.remove(&key),
                };
                let secrets: Vec<String> = self
                    .managed
                    .iter()
                    .filter(|((ns, _), m)| *ns == namespace && m.managed_secret == name)
                    .map(|((_, s), _)| s.clone())
                    .collect();
                for s in secrets {
                    self.dirty.insert((namespace.clone(), s.clone()));
                    for w in self.index.consumers_of(&namespace, &s) {
                        self.reconsider(&w, now).await;
                    }
                }
            }
        }
    }

    async fn finished(&mut self, w: &WorkloadRef, ok: bool, note: &str) {
        self.rolling.remove(w);
        self.touch(w);
        self.planner.rollout_finished(w, ok);
        let (type_, reason) = if ok {
            (EventType::Normal, "RestartFinished")
        } else {
            (EventType::Warning, "RestartFailed")
        };
        tracing::info!(workload = %w, ok, "restart finished");
        self.record(w, if ok { "success" } else { "failure" });
        self.event(w, type_, reason, format!("{w}: {note}")).await;
        if !ok {
            self.roll_back(w, note).await;
        }
    }

    /// After a failed rollout, asks each ManagedSecret with rollbackOnFailure whose latest change this workload
    /// was rolling to, to put its previous value back (its reconcile does it; the changed Secret then restarts
    /// the workload again, to the last good hash).
    async fn roll_back(&self, w: &WorkloadRef, note: &str) {
        let ns = w.namespace.to_string();
        for secret in self.index.secrets_of(w) {
            let Some(m) = self.managed.get(&(ns.clone(), secret.to_string())) else {
                continue;
            };
            let key = (ns.clone(), m.managed_secret.clone());
            let rollback_on = self.policies.get(&key).is_some_and(|p| p.rollback_on_failure);
            if !rollback_on || self.last_changes.get(&key) != Some(&m.value_hash) {
                tracing::debug!(workload = %w, secret, rollback_on, last_change = ?self.last_changes.get(&key), value_hash = %m.value_hash, "no rollback for this Secret");
                continue;
            }
            let message: String = note.chars().take(300).collect();
            let patch = serde_json::json!({"status": {"rollback": {
                "failedValueHash": m.value_hash, "workload": w.to_string(), "message": message}}});
            let api: Api<ManagedSecret> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(&m.managed_secret, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::warn!(workload = %w, managed_secret = %m.managed_secret, "rollout failed; rolling the Secret back")
                }
                Err(e) => tracing::warn!(workload = %w, error = %e, "marking a rollback failed"),
            }
        }
    }

    async fn event(&self, w: &WorkloadRef, type_: EventType, reason: &str, note: String) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(w.kind.to_string()),
            name: Some(w.name.to_string()),
            namespace: Some(w.namespace.to_string()),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Restart".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "publishing an Event failed");
        }
    }

    /// Fails rollouts that ran past the deadline; returns when the next one would.
    async fn expire(&mut self, now: Timestamp) -> Option<Timestamp> {
        let deadline = jiff::SignedDuration::try_from(self.rollout_deadline).unwrap_or(jiff::SignedDuration::MAX);
        let mut expired = Vec::new();
        let mut next: Option<Timestamp> = None;
        for r in self.planner.in_flight() {
            let Ok(at) = r.started.checked_add(deadline) else {
                continue;
            };
            if at <= now {
                expired.push(r.workload.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for w in expired {
            let note = format!("no complete rollout within {}s", self.rollout_deadline.as_secs());
            self.finished(&w, false, &note).await;
        }
        next
    }

    /// Starts what the planner allows now; returns when to look again.
    async fn start_due(&mut self, now: Timestamp) -> Option<Timestamp> {
        let deadline = self.expire(now).await;
        let mut plan = self.planner.next(now);
        plan.wake_at = match (plan.wake_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (w, hash) in plan.start {
            match apply_hash(&self.client, kind_name(w.kind), &w.namespace, &w.name, &hash).await {
                Ok(()) => {
                    tracing::info!(workload = %w, hash = %hash, "restart triggered");
                    self.record(&w, "triggered");
                    self.rolling.insert(w.clone(), hash.clone());
                    self.touch(&w);
                    self.event(
                        &w,
                        EventType::Normal,
                        "RestartTriggered",
                        format!("{w}: Secrets it consumes changed"),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(workload = %w, error = %e, "setting the restart hash failed");
                    self.record(&w, "failure");
                    self.planner.rollout_finished(&w, false);
                    self.event(
                        &w,
                        EventType::Warning,
                        "RestartFailed",
                        format!("{w}: could not set the restart hash"),
                    )
                    .await;
                }
            }
        }
        plan.wake_at
    }
}

fn workload_changes<K>(api: Api<K>) -> impl Stream<Item = Change> + Send
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    for<'a> WorkloadView: From<&'a K>,
{
    watcher(api, watcher::Config::default().any_semantic()).filter_map(|ev| async move {
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                Some(Change::Workload(Box::new(WorkloadView::from(&o))))
            }
            Ok(watcher::Event::Delete(o)) => {
                let v = WorkloadView::from(&o);
                Some(Change::WorkloadGone(WorkloadRef::new(
                    kind_of(v.kind),
                    v.namespace.as_str(),
                    v.name.as_str(),
                )))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "workload watch error");
                None
            }
        }
    })
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the restart task until the process ends.
pub async fn run(
    client: Client,
    recorder: Recorder,
    planner: Planner,
    namespace: Option<String>,
    rollout_deadline: Duration,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
) {
    let ns = namespace.as_deref();
    let (secrets, managed) = (
        scoped::<PartialObjectMeta<Secret>>(&client, ns),
        scoped::<ManagedSecret>(&client, ns),
    );
    let secret_changes = watcher(
        secrets,
        watcher::Config::default()
            .labels(&format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1))
            .any_semantic(),
    )
    .filter_map(|ev| async move {
        let (meta, gone) = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o.metadata, false),
            Ok(watcher::Event::Delete(o)) => (o.metadata, true),
            _ => return None,
        };
        let ann = meta.annotations.unwrap_or_default();
        let managed = match (gone, ann.get(MANAGED_SECRET_ANNOTATION), ann.get(VALUE_HASH_ANNOTATION)) {
            (false, Some(ms), Some(h)) => Some(Managed {
                managed_secret: ms.clone(),
                value_hash: h.clone(),
                previous_key: ann.get(PREVIOUS_KEY_ANNOTATION).cloned(),
            }),
            _ => None,
        };
        Some(Change::Secret {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            managed,
        })
    });
    let policy_changes = watcher(managed, watcher::Config::default().any_semantic()).filter_map(|ev| async move {
        let (ms, gone) = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            _ => return None,
        };
        let consumers = if gone {
            None
        } else {
            Some(ms.spec.consumers.clone().unwrap_or_default())
        };
        let last_change = ms
            .status
            .as_ref()
            .and_then(|s| s.last_change.as_ref())
            .map(|c| c.value_hash.clone());
        Some(Change::Policy {
            namespace: ms.namespace().unwrap_or_default(),
            name: ms.name_any(),
            consumers,
            last_change,
        })
    });

    let (tx, mut rx) = mpsc::channel::<Change>(1024);
    let streams: Vec<futures::stream::BoxStream<'static, Change>> = vec![
        workload_changes(scoped::<Deployment>(&client, ns)).boxed(),
        workload_changes(scoped::<StatefulSet>(&client, ns)).boxed(),
        workload_changes(scoped::<DaemonSet>(&client, ns)).boxed(),
        secret_changes.boxed(),
        policy_changes.boxed(),
    ];
    // Its watches stop with this task (which is aborted when this replica stops leading).
    let _forwarder = super::AbortOnDrop(tokio::spawn(async move {
        let mut all = futures::stream::select_all(streams);
        while let Some(change) = all.next().await {
            if tx.send(change).await.is_err() {
                break;
            }
        }
    }));

    let mut state = State {
        client,
        recorder,
        index: ConsumerIndex::new(),
        planner,
        known: HashMap::new(),
        managed: HashMap::new(),
        policies: HashMap::new(),
        last_changes: HashMap::new(),
        rolling: BTreeMap::new(),
        dirty: BTreeSet::new(),
        written: HashMap::new(),
        rollout_deadline,
        metrics,
        audit,
    };
    let mut wake: Option<Timestamp> = None;
    loop {
        let sleep = wake
            .and_then(|t| Duration::try_from(t.duration_since(Timestamp::now())).ok())
            .unwrap_or(Duration::from_secs(if wake.is_some() { 0 } else { 3600 }));
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                state.apply(change, Timestamp::now()).await;
            }
            () = tokio::time::sleep(sleep) => {}
        }
        wake = state.start_due(Timestamp::now()).await;
        state.publish_status().await;
    }
}
