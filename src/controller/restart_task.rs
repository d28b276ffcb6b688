//! The restart task: watches workloads, is told of the managed Secrets' metadata and the ManagedSecrets'
//! consumer policies (from the controller's watches), hands what it sees to the restart decisions
//! (`consumers::Restarts`), and carries out the steps they return — adopting and restarting workloads, Events,
//! metrics, audit lines and `status.consumers`.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::status::write_consumers;
use super::task::AbortOnDrop;
use super::workloads::{WorkloadView, adopt_hash, api_resource, apply_hash};
use crate::api::record::records;
use crate::api::{MANAGED_BY_LABEL, ManagedSecret, PREVIOUS_KEY_ANNOTATION, VALUE_HASH_ANNOTATION, WorkloadKind};
use crate::consumers::discovery::WorkloadRef;
use crate::consumers::planner::Planner;
use crate::consumers::restarts::{Managed, Observation, Restarts, Step};
use crate::telemetry::audit::{Action, Audit, Entry};
use crate::telemetry::metrics::{Metrics, RestartLabels};

/// What carries the steps out.
struct Hands {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
}

impl Hands {
    /// Carries out `steps` in order, feeding back what restarts and status writes did.
    async fn carry_out(&self, restarts: &mut Restarts, steps: Vec<Step>) {
        let mut queue = std::collections::VecDeque::from(steps);
        while let Some(step) = queue.pop_front() {
            match step {
                Step::Adopt { workload: w, hash } => {
                    match adopt_hash(&self.client, w.kind, &w.namespace, &w.name, &hash).await {
                        Ok(()) => tracing::info!(workload = %w, "consumer adopted"),
                        Err(e) => tracing::warn!(workload = %w, error = %e, "adopting a consumer failed"),
                    }
                }
                Step::Restart { workload: w, hash } => {
                    let more = match apply_hash(&self.client, w.kind, &w.namespace, &w.name, &hash).await {
                        Ok(()) => {
                            tracing::info!(workload = %w, hash = %hash, "restart triggered");
                            restarts.started(&w, &hash)
                        }
                        Err(e) => {
                            tracing::warn!(workload = %w, error = %e, "setting the restart hash failed");
                            restarts.not_started(&w)
                        }
                    };
                    queue.extend(more);
                }
                Step::Event {
                    workload,
                    warning,
                    reason,
                    note,
                } => {
                    let type_ = if warning { EventType::Warning } else { EventType::Normal };
                    self.event(&workload, type_, reason, note).await;
                }
                Step::Count { workload, result } => {
                    if result != crate::consumers::RestartResult::Triggered {
                        tracing::info!(workload = %workload, result = result.as_str(), "restart finished");
                    }
                    let labels = RestartLabels {
                        kind: workload.kind.as_str(),
                        result: result.as_str(),
                    };
                    self.metrics.restarts.get_or_create(&labels).inc();
                }
                Step::Audit {
                    namespace,
                    managed_secret,
                    workload,
                } => self.audit.record(&Entry {
                    action: Action::RestartTriggered,
                    namespace: &namespace,
                    name: &managed_secret,
                    accessor: None,
                    source_ip: None,
                    success: true,
                    reason: Some(&workload),
                }),
                Step::WriteConsumers {
                    namespace,
                    managed_secret,
                    consumers,
                } => match write_consumers(&self.client, &namespace, &managed_secret, &consumers).await {
                    Ok(()) => restarts.consumers_written(&namespace, &managed_secret, consumers),
                    Err(e) => {
                        tracing::warn!(managed_secret = %managed_secret, error = %e, "writing consumer status failed")
                    }
                },
            }
        }
    }

    async fn event(&self, w: &WorkloadRef, type_: EventType, reason: &str, note: String) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(w.kind.api_version().into()),
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
}

fn workload_changes<K>(api: Api<K>) -> impl Stream<Item = Observation> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    for<'a> WorkloadView: From<&'a K>,
{
    watcher(api, watcher::Config::default().any_semantic()).filter_map(|ev| async move {
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(WorkloadView::from(&o).observed()),
            Ok(watcher::Event::Delete(o)) => Some(Observation::WorkloadGone(WorkloadView::from(&o).workload())),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "workload watch error");
                None
            }
        }
    })
}

/// How often keyward looks for Argo Rollouts' API while it is not served.
const ROLLOUTS_API_CHECK: Duration = Duration::from_secs(30);

/// Argo Rollouts, once its API is served: installing Argo Rollouts after keyward needs no restart of keyward,
/// and a cluster without it gets no watch errors, only a look at discovery every `ROLLOUTS_API_CHECK`.
fn rollout_changes(client: Client, namespace: Option<String>) -> impl Stream<Item = Observation> + Send {
    let resource = api_resource(WorkloadKind::Rollout);
    let served = async move {
        loop {
            match client.list_api_group_resources(&resource.api_version).await {
                Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => break,
                _ => tokio::time::sleep(ROLLOUTS_API_CHECK).await,
            }
        }
        tracing::info!("Argo Rollouts API served; watching Rollouts");
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client, &ns, &resource),
            None => Api::all_with(client, &resource),
        };
        workload_changes(api)
    };
    futures::stream::once(served).flatten()
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

/// What the restart task watches itself (the workloads of one namespace or all) and is told.
pub struct Scope {
    pub namespace: Option<String>,
    /// The managed Secrets and the ManagedSecrets' policies, from the controller's watches.
    pub observations: mpsc::UnboundedReceiver<Observation>,
}

/// Runs the restart task until the process ends (or this replica stops leading, which aborts it). It watches the
/// workloads itself; the managed Secrets and the ManagedSecrets' policies come as `observations` from the
/// controller's own watches ([`SecretTap`], [`policy_observation`]): one watch of each, each event decoded once.
pub async fn run(
    client: Client,
    recorder: Recorder,
    planner: Planner,
    Scope {
        namespace,
        observations,
    }: Scope,
    rollout_deadline: Duration,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
) {
    let ns = namespace.as_deref();
    let (tx, mut rx) = mpsc::channel::<Observation>(1024);
    let streams: Vec<futures::stream::BoxStream<'static, Observation>> = vec![
        workload_changes(scoped::<Deployment>(&client, ns)).boxed(),
        workload_changes(scoped::<StatefulSet>(&client, ns)).boxed(),
        workload_changes(scoped::<DaemonSet>(&client, ns)).boxed(),
        workload_changes(scoped::<CronJob>(&client, ns)).boxed(),
        rollout_changes(client.clone(), namespace.clone()).boxed(),
        futures::stream::unfold(observations, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) }).boxed(),
    ];
    // Its watches stop with this task (which is aborted when this replica stops leading).
    let _forwarder = AbortOnDrop(tokio::spawn(async move {
        let mut all = futures::stream::select_all(streams);
        while let Some(change) = all.next().await {
            if tx.send(change).await.is_err() {
                break;
            }
        }
    }));

    let hands = Hands {
        client,
        recorder,
        metrics,
        audit,
    };
    let mut restarts = Restarts::new(planner, rollout_deadline);
    let mut wake: Option<Timestamp> = None;
    loop {
        let sleep = wake
            .and_then(|t| Duration::try_from(t.duration_since(Timestamp::now())).ok())
            .unwrap_or(Duration::from_secs(if wake.is_some() { 0 } else { 3600 }));
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                let steps = restarts.observe(change, Timestamp::now());
                hands.carry_out(&mut restarts, steps).await;
            }
            () = tokio::time::sleep(sleep) => {}
        }
        let (steps, next) = restarts.due(Timestamp::now());
        wake = next;
        hands.carry_out(&mut restarts, steps).await;
        let steps = restarts.consumer_status();
        hands.carry_out(&mut restarts, steps).await;
    }
}

/// What the restart task learns of a ManagedSecret as the cache sees it (`gone`: deleted): its consumer policy
/// and the consumer report in its status.
pub fn policy_observation(ms: &ManagedSecret, gone: bool) -> Observation {
    Observation::Policy {
        namespace: ms.namespace().unwrap_or_default(),
        name: ms.name_any(),
        consumers: (!gone).then(|| ms.spec.consumers.clone().unwrap_or_default()),
        reported: (!gone).then(|| ms.status.as_ref().map(|s| s.consumers.clone()).unwrap_or_default()),
    }
}

/// Turns the controller's watch of every Secret's metadata into the restart task's observations of the Secrets
/// keyward manages (labelled `app.kubernetes.io/managed-by: keyward`): what a label-selected watch of its own
/// would show, without a second watch. A Secret that loses the label is seen gone, as such a watch would show it.
pub struct SecretTap {
    tx: mpsc::UnboundedSender<Observation>,
    /// A shard's cache: a shard restarts for its own ManagedSecrets only (the others' shard does for theirs).
    shard: Option<Store<ManagedSecret>>,
    /// The Secrets told of as managed, as 64-bit digests of namespace and name (this process's random keys).
    told: HashSet<u64>,
    keys: RandomState,
}

impl SecretTap {
    pub fn new(tx: mpsc::UnboundedSender<Observation>, shard: Option<Store<ManagedSecret>>) -> Self {
        SecretTap {
            tx,
            shard,
            told: HashSet::new(),
            keys: RandomState::new(),
        }
    }

    /// One event of the controller's Secret watch.
    pub fn observe(&mut self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let (secret, gone) = match event {
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (s, false),
            watcher::Event::Delete(s) => (s, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let meta = &secret.metadata;
        let (namespace, name) = (
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let labelled = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL.0))
            .is_some_and(|v| v == MANAGED_BY_LABEL.1);
        let key = self.keys.hash_one((namespace, name));
        let managed = if gone || !labelled {
            if !self.told.remove(&key) {
                return;
            }
            Vec::new()
        } else {
            self.told.insert(key);
            self.managed(meta, namespace)
        };
        let _ = self.tx.send(Observation::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            managed,
        });
    }

    /// Every ManagedSecret with a record in the Secret (several may fill one), by name.
    fn managed(&self, meta: &ObjectMeta, namespace: &str) -> Vec<Managed> {
        let Some(ann) = meta.annotations.as_ref() else {
            return Vec::new();
        };
        let created = meta.creation_timestamp.as_ref().map(|t| t.0);
        records(ann)
            .into_iter()
            .filter_map(|(name, rec)| {
                Some(Managed {
                    value_hash: ann.get(&rec.key(VALUE_HASH_ANNOTATION))?.clone(),
                    previous_key: ann.get(&rec.key(PREVIOUS_KEY_ANNOTATION)).cloned(),
                    managed_secret: name,
                    created,
                })
            })
            .filter(|m| {
                self.shard
                    .as_ref()
                    .is_none_or(|s| s.get(&ObjectRef::new(&m.managed_secret).within(namespace)).is_some())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::MANAGED_SECRET_ANNOTATION;
    use crate::api::record::Record;

    fn secret(name: &str, labelled: bool, filled_by: Option<&str>) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        if labelled {
            s.metadata.labels = Some(BTreeMap::from([(
                MANAGED_BY_LABEL.0.to_string(),
                MANAGED_BY_LABEL.1.to_string(),
            )]));
        }
        if let Some(ms) = filled_by {
            let r = Record::of(ms);
            s.metadata.annotations = Some(BTreeMap::from([
                (r.key(MANAGED_SECRET_ANNOTATION), ms.to_string()),
                (r.key(VALUE_HASH_ANNOTATION), "h1".to_string()),
            ]));
        }
        s
    }

    /// (Secret name, names of the ManagedSecrets told of) for each observation sent.
    fn told(rx: &mut mpsc::UnboundedReceiver<Observation>) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let Observation::Secret { name, managed, .. } = o {
                out.push((name, managed.into_iter().map(|m| m.managed_secret).collect()));
            }
        }
        out
    }

    #[test]
    fn the_tap_tells_what_a_label_selected_watch_would_show() {
        use watcher::Event::*;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tap = SecretTap::new(tx, None);
        tap.observe(&Init);
        tap.observe(&InitApply(secret("db", true, Some("db"))));
        tap.observe(&InitApply(secret("unrelated", false, None)));
        tap.observe(&InitDone);
        assert_eq!(told(&mut rx), [("db".to_string(), vec!["db".to_string()])]);
        // Not managed, changed or deleted: nothing to tell.
        tap.observe(&Apply(secret("unrelated", false, None)));
        tap.observe(&Delete(secret("unrelated", false, None)));
        assert!(told(&mut rx).is_empty());
        // The label taken away (released): gone, once.
        tap.observe(&Apply(secret("db", false, Some("db"))));
        tap.observe(&Apply(secret("db", false, None)));
        assert_eq!(told(&mut rx), [("db".to_string(), vec![])]);
        // Labelled again, then deleted.
        tap.observe(&Apply(secret("db", true, Some("db"))));
        tap.observe(&Delete(secret("db", true, Some("db"))));
        assert_eq!(
            told(&mut rx),
            [("db".to_string(), vec!["db".to_string()]), ("db".to_string(), vec![])]
        );
    }

    #[test]
    fn a_shards_tap_tells_of_its_own_managed_secrets_only() {
        let (reader, mut writer) = kube::runtime::reflector::store::<ManagedSecret>();
        let mut mine = ManagedSecret::new("mine", Default::default());
        mine.metadata.namespace = Some("ns".into());
        writer.apply_watcher_event(&watcher::Event::Apply(mine));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tap = SecretTap::new(tx, Some(reader));
        tap.observe(&watcher::Event::Apply(secret("a", true, Some("mine"))));
        tap.observe(&watcher::Event::Apply(secret("b", true, Some("theirs"))));
        assert_eq!(
            told(&mut rx),
            [("a".to_string(), vec!["mine".to_string()]), ("b".to_string(), vec![])]
        );
    }
}
