//! The restart task: watches workloads, the managed Secrets' metadata and the ManagedSecrets' consumer
//! policies, hands what it sees to the restart decisions (`consumers::Restarts`), and carries out the steps they
//! return — adopting and restarting workloads, Events, metrics, audit lines and `status.consumers`.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::context::shard_config;
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

/// What the restart task watches: one namespace or all, one shard's ManagedSecrets or all (`--shard-selector`),
/// and the controller's cache of them (a shard's own, so that it restarts for its own only).
pub struct Scope {
    pub namespace: Option<String>,
    pub shard: Option<String>,
    pub managed: Store<ManagedSecret>,
}

/// Runs the restart task until the process ends (or this replica stops leading, which aborts it).
pub async fn run(
    client: Client,
    recorder: Recorder,
    planner: Planner,
    Scope {
        namespace,
        shard,
        managed: store,
    }: Scope,
    rollout_deadline: Duration,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
) {
    let ns = namespace.as_deref();
    let sharded = shard.is_some();
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
    .filter_map(move |ev| {
        let store = store.clone();
        async move {
            let (meta, gone) = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o.metadata, false),
                Ok(watcher::Event::Delete(o)) => (o.metadata, true),
                _ => return None,
            };
            let ann = meta.annotations.unwrap_or_default();
            let created = meta.creation_timestamp.as_ref().map(|t| t.0);
            // Every ManagedSecret with a record in it (several may fill one Secret), by name.
            let managed: Vec<Managed> = if gone {
                Vec::new()
            } else {
                records(&ann)
                    .into_iter()
                    .filter_map(|(name, rec)| {
                        Some(Managed {
                            value_hash: ann.get(&rec.key(VALUE_HASH_ANNOTATION))?.clone(),
                            previous_key: ann.get(&rec.key(PREVIOUS_KEY_ANNOTATION)).cloned(),
                            managed_secret: name,
                            created,
                        })
                    })
                    .collect()
            };
            let namespace = meta.namespace.unwrap_or_default();
            // A shard restarts for its own ManagedSecrets only (the others' shard does for theirs).
            let mut managed = managed;
            if sharded {
                managed.retain(|m| {
                    store
                        .get(&ObjectRef::new(&m.managed_secret).within(&namespace))
                        .is_some()
                });
            }
            Some(Observation::Secret {
                namespace,
                name: meta.name.unwrap_or_default(),
                managed,
            })
        }
    });
    let policy_changes = watcher(managed, shard_config(shard.as_deref())).filter_map(|ev| async move {
        let (ms, gone) = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            _ => return None,
        };
        let consumers = (!gone).then(|| ms.spec.consumers.clone().unwrap_or_default());
        let reported = (!gone).then(|| ms.status.as_ref().map(|s| s.consumers.clone()).unwrap_or_default());
        Some(Observation::Policy {
            namespace: ms.namespace().unwrap_or_default(),
            name: ms.name_any(),
            consumers,
            reported,
        })
    });

    let (tx, mut rx) = mpsc::channel::<Observation>(1024);
    let streams: Vec<futures::stream::BoxStream<'static, Observation>> = vec![
        workload_changes(scoped::<Deployment>(&client, ns)).boxed(),
        workload_changes(scoped::<StatefulSet>(&client, ns)).boxed(),
        workload_changes(scoped::<DaemonSet>(&client, ns)).boxed(),
        workload_changes(scoped::<CronJob>(&client, ns)).boxed(),
        rollout_changes(client.clone(), namespace.clone()).boxed(),
        secret_changes.boxed(),
        policy_changes.boxed(),
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
