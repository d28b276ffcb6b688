//! The workloads keyward restarts — Deployments, StatefulSets, DaemonSets, CronJobs and Argo Rollouts — seen
//! through one small view: their pod template, the restart hash on it, and how their rollout is going.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};

use crate::api::WorkloadKind;
use crate::consumers::discovery::WorkloadRef;
use crate::consumers::restarts::{Observation, Rollout};
use crate::consumers::{SECRETS_HASH_ANNOTATION, restart_opted_out as opted_out};

/// One workload, reduced to what restarts need.
#[derive(Debug, Clone)]
pub struct WorkloadView {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub template: PodTemplateSpec,
    /// The restart hash recorded on the workload's metadata when keyward adopted it without a restart.
    pub adopted_hash: Option<String>,
    pub opted_out: bool,
    pub rollout: Rollout,
    /// `metadata.creationTimestamp`.
    pub created: Option<jiff::Timestamp>,
}

impl WorkloadView {
    fn new(kind: WorkloadKind, meta: &kube::api::ObjectMeta, template: PodTemplateSpec, rollout: Rollout) -> Self {
        WorkloadView {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            template,
            adopted_hash: adopted(meta),
            opted_out: opted_out(meta),
            rollout,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    /// The workload this is.
    pub fn workload(&self) -> WorkloadRef {
        WorkloadRef::new(self.kind, self.namespace.as_str(), self.name.as_str())
    }

    /// What the restart decisions take in: the restart hash on the pod template, or else the one recorded at
    /// adoption.
    pub fn observed(self) -> Observation {
        let current_hash = self.current_hash().or(self.adopted_hash.as_deref()).map(str::to_string);
        Observation::Workload {
            workload: self.workload(),
            template: Box::new(self.template),
            opted_out: self.opted_out,
            current_hash,
            rollout: self.rollout,
            created: self.created,
        }
    }

    /// The restart hash the pod template carries now.
    pub fn current_hash(&self) -> Option<&str> {
        self.template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(SECRETS_HASH_ANNOTATION)
            .map(String::as_str)
    }
}

fn adopted(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(SECRETS_HASH_ANNOTATION).cloned()
}

fn caught_up(generation: Option<i64>, observed: Option<i64>) -> bool {
    matches!((generation, observed), (Some(g), Some(o)) if o >= g)
}

impl From<&Deployment> for WorkloadView {
    fn from(d: &Deployment) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let deadline = st.conditions.iter().flatten().find(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        // A deadline counts only for the generation the controller has seen (a new template resets it).
        let current = caught_up(d.metadata.generation, st.observed_generation);
        let rollout = if let Some(c) = deadline.filter(|_| current) {
            Rollout::Failed(c.message.clone().unwrap_or_else(|| "ProgressDeadlineExceeded".into()))
        } else if current
            && st.updated_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
        {
            Rollout::Complete
        } else if current && spec.paused == Some(true) && st.updated_replicas.unwrap_or(0) < st.replicas.unwrap_or(0) {
            // A paused Deployment's controller makes no new ReplicaSet until someone resumes it.
            Rollout::Manual(
                "the Deployment is paused (spec.paused): its controller rolls the current template out once it is \
                 resumed (kubectl rollout resume)"
                    .into(),
            )
        } else {
            Rollout::InProgress
        };
        WorkloadView::new(WorkloadKind::Deployment, &d.metadata, spec.template, rollout)
    }
}

impl From<&StatefulSet> for WorkloadView {
    fn from(s: &StatefulSet) -> Self {
        let spec = s.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        // OnDelete: the controller makes new Pods from the new template only for Pods someone deleted, and never
        // moves currentRevision on (the StatefulSet controller's completeRollingUpdate is RollingUpdate-only), so
        // done means every Pod is of updateRevision and ready.
        let on_delete = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) == Some("OnDelete");
        let caught_up = caught_up(s.metadata.generation, st.observed_generation) && st.update_revision.is_some();
        let (updated, ready) = (st.updated_replicas.unwrap_or(0), st.ready_replicas.unwrap_or(0));
        let rollout = if caught_up
            && (on_delete || st.current_revision == st.update_revision)
            && updated == want
            && ready == want
        {
            Rollout::Complete
        } else if caught_up && on_delete && updated < st.replicas {
            // Pods of an older revision exist (not merely Pods still starting, as after a create or a scale-up).
            Rollout::Manual(format!(
                "updateStrategy OnDelete: {updated} of {want} Pod(s) run the current template; the StatefulSet \
                 controller replaces the others only when they are deleted (delete them one at a time, each after \
                 the one before is Ready)"
            ))
        } else {
            Rollout::InProgress
        };
        WorkloadView::new(WorkloadKind::StatefulSet, &s.metadata, spec.template, rollout)
    }
}

impl From<&DaemonSet> for WorkloadView {
    fn from(d: &DaemonSet) -> Self {
        let spec = d.spec.clone().unwrap_or_default();
        let st = d.status.clone().unwrap_or_default();
        let current = caught_up(d.metadata.generation, st.observed_generation);
        let (updated, want) = (st.updated_number_scheduled.unwrap_or(0), st.desired_number_scheduled);
        // OnDelete, as for StatefulSets: a node's Pod is replaced only when someone deletes it.
        let on_delete = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()) == Some("OnDelete");
        let rollout = if current && updated == want && st.number_available.unwrap_or(0) == want {
            Rollout::Complete
        } else if current && on_delete && updated < st.current_number_scheduled {
            Rollout::Manual(format!(
                "updateStrategy OnDelete: {updated} of {want} Pod(s) run the current template; the DaemonSet \
                 controller replaces the others only when they are deleted"
            ))
        } else {
            Rollout::InProgress
        };
        WorkloadView::new(WorkloadKind::DaemonSet, &d.metadata, spec.template, rollout)
    }
}

impl From<&CronJob> for WorkloadView {
    /// A CronJob has no rollout: its next Jobs are made from the job template as it is then, and Jobs already
    /// running keep the template they started with (restarting them would cut work short).
    fn from(c: &CronJob) -> Self {
        let template = c
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|j| j.template.clone())
            .unwrap_or_default();
        WorkloadView::new(WorkloadKind::CronJob, &c.metadata, template, Rollout::Complete)
    }
}

impl From<&DynamicObject> for WorkloadView {
    /// An Argo Rollout (`argoproj.io/v1alpha1`), read from its JSON: the Rollout types live in a Go module, not
    /// in a crate. Its controller says how a rollout goes in `status.phase` (Healthy, Progressing, Paused,
    /// Degraded; argo-rollouts `pkg/apis/rollouts/v1alpha1` RolloutPhase), for the generation it has seen
    /// (`status.observedGeneration`, a string there).
    fn from(o: &DynamicObject) -> Self {
        let spec = o.data.get("spec");
        let template = spec
            .and_then(|s| s.get("template"))
            .and_then(|t| serde_json::from_value::<PodTemplateSpec>(t.clone()).ok())
            .unwrap_or_default();
        let want = spec
            .and_then(|s| s.get("replicas"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(1);
        let st = o.data.get("status");
        let field = |name: &str| st.and_then(|s| s.get(name));
        let count = |name: &str| field(name).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let observed = field("observedGeneration").and_then(|g| match g {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            other => other.as_i64(),
        });
        let current = caught_up(o.metadata.generation, observed);
        let phase = field("phase").and_then(serde_json::Value::as_str).unwrap_or_default();
        let message = field("message").and_then(serde_json::Value::as_str).unwrap_or_default();
        let aborted = field("abort").and_then(serde_json::Value::as_bool) == Some(true);
        let rollout = if current && (phase == "Degraded" || aborted) {
            Rollout::Failed(if message.is_empty() {
                format!("Rollout {phase}")
            } else {
                message.to_string()
            })
        } else if current && phase == "Paused" {
            // A canary pause step without a duration, or spec.paused: someone must promote or resume it. A timed
            // pause goes on by itself, and its end is reported the same way.
            Rollout::Manual(format!(
                "the Rollout is paused{}: promote or resume it (kubectl argo rollouts promote) to finish",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(" ({message})")
                }
            ))
        } else if current
            && phase == "Healthy"
            && count("updatedReplicas") == want
            && count("availableReplicas") == want
        {
            Rollout::Complete
        } else {
            Rollout::InProgress
        };
        WorkloadView::new(WorkloadKind::Rollout, &o.metadata, template, rollout)
    }
}

/// The API resource of a workload kind, for the dynamic API (one code path for every kind, Argo's included).
pub fn api_resource(kind: WorkloadKind) -> ApiResource {
    let (group, version) = kind.api_version().rsplit_once('/').unwrap_or(("", kind.api_version()));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.as_str()), kind.plural())
}

/// Sets the restart hash on a workload's pod template with server-side apply under keyward's field manager.
/// Only this one annotation is in the apply configuration, so nothing else of the workload is claimed.
pub async fn apply_hash(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    hash: &str,
) -> Result<(), kube::Error> {
    let template = serde_json::json!({"template": {"metadata": {"annotations": {SECRETS_HASH_ANNOTATION: hash}}}});
    // A CronJob's pod template is its job template's.
    let spec = match kind {
        WorkloadKind::CronJob => serde_json::json!({"jobTemplate": {"spec": template}}),
        _ => template,
    };
    apply(client, kind, namespace, name, serde_json::json!({}), spec).await
}

/// Records the restart hash on the workload's own metadata, which rolls nothing out (adoption).
pub async fn adopt_hash(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    hash: &str,
) -> Result<(), kube::Error> {
    let meta = serde_json::json!({"annotations": {SECRETS_HASH_ANNOTATION: hash}});
    apply(client, kind, namespace, name, meta, serde_json::json!({})).await
}

async fn apply(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    extra_meta: serde_json::Value,
    spec: serde_json::Value,
) -> Result<(), kube::Error> {
    let mut metadata = serde_json::json!({"name": name, "namespace": namespace});
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    let mut patch = serde_json::json!({"apiVersion": kind.api_version(), "kind": kind.as_str(), "metadata": metadata});
    if spec.as_object().is_some_and(|o| !o.is_empty()) {
        patch["spec"] = spec;
    }
    let params = PatchParams::apply(super::context::FIELD_MANAGER).force();
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &api_resource(kind))
        .patch(name, &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "n", "generation": 2, "annotations": {"keyward.dev/restart": "false"}},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"annotations": {SECRETS_HASH_ANNOTATION: "h1"}}}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn deployment_rollout_states() {
        let done = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        let v = WorkloadView::from(&done);
        assert_eq!(v.rollout, Rollout::Complete);
        assert_eq!(v.current_hash(), Some("h1"));
        assert!(v.opted_out);
        let stale = deployment(
            serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(WorkloadView::from(&stale).rollout, Rollout::InProgress);
        let surge = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(WorkloadView::from(&surge).rollout, Rollout::InProgress);
        let mut paused = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 0, "availableReplicas": 2}),
        );
        if let Some(spec) = paused.spec.as_mut() {
            spec.paused = Some(true);
        }
        assert!(matches!(WorkloadView::from(&paused).rollout, Rollout::Manual(n) if n.contains("paused")));
        let failed = deployment(serde_json::json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}));
        assert_eq!(WorkloadView::from(&failed).rollout, Rollout::Failed("too slow".into()));
        // The deadline of an older generation does not fail the new template's rollout.
        let reverted = deployment(serde_json::json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}));
        assert_eq!(WorkloadView::from(&reverted).rollout, Rollout::InProgress);
    }

    /// Argo Rollouts' status as its v1.10.1 controller writes it (observedGeneration is a string).
    #[test]
    fn argo_rollout_states() {
        let rollout = |generation: i64, status: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                "metadata": {"name": "web", "namespace": "n", "generation": generation},
                "spec": {"replicas": 2, "template": {"metadata": {"annotations": {SECRETS_HASH_ANNOTATION: "h1"}},
                         "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}]}}},
                "status": status
            }))
            .unwrap()
        };
        let healthy = rollout(
            3,
            serde_json::json!({"phase": "Healthy", "observedGeneration": "3", "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2, "currentPodHash": "a", "stableRS": "a"}),
        );
        let v = WorkloadView::from(&healthy);
        assert_eq!((v.kind, v.rollout.clone()), (WorkloadKind::Rollout, Rollout::Complete));
        assert_eq!(v.current_hash(), Some("h1"));
        // Healthy for the generation before: not yet.
        let stale = rollout(
            4,
            serde_json::json!({"phase": "Healthy", "observedGeneration": "3", "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(WorkloadView::from(&stale).rollout, Rollout::InProgress);
        let progressing = rollout(
            3,
            serde_json::json!({"phase": "Progressing", "observedGeneration": "3",
            "message": "more replicas need to be updated", "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
        );
        assert_eq!(WorkloadView::from(&progressing).rollout, Rollout::InProgress);
        let degraded = rollout(
            3,
            serde_json::json!({"phase": "Degraded", "observedGeneration": "3",
            "message": "ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing."}),
        );
        assert!(
            matches!(WorkloadView::from(&degraded).rollout, Rollout::Failed(m) if m.starts_with("ProgressDeadlineExceeded"))
        );
        let paused = rollout(
            3,
            serde_json::json!({"phase": "Paused", "observedGeneration": "3", "message": "CanaryPauseStep"}),
        );
        assert!(matches!(WorkloadView::from(&paused).rollout, Rollout::Manual(m) if m.contains("CanaryPauseStep")));
        // Garbage in status is no rollout state, and no panic.
        let odd = rollout(
            3,
            serde_json::json!({"phase": 7, "observedGeneration": ["3"], "replicas": "two"}),
        );
        assert_eq!(WorkloadView::from(&odd).rollout, Rollout::InProgress);
    }

    #[test]
    fn statefulset_and_daemonset_rollout_states() {
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "s", "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                       "currentRevision": "s-1", "updateRevision": "s-1"}
        }))
        .unwrap();
        assert_eq!(WorkloadView::from(&sts).rollout, Rollout::Complete);
        // OnDelete: currentRevision stays behind for good; one of two Pods replaced is as far as it goes.
        let on_delete = |updated: i32| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "serviceName": "s", "template": {},
                         "updateStrategy": {"type": "OnDelete"}},
                "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": updated,
                           "currentRevision": "s-1", "updateRevision": "s-2"}
            }))
            .unwrap()
        };
        let Rollout::Manual(note) = WorkloadView::from(&on_delete(1)).rollout else {
            panic!("not manual")
        };
        assert!(note.starts_with("updateStrategy OnDelete: 1 of 2 Pod(s)"), "{note}");
        assert_eq!(WorkloadView::from(&on_delete(2)).rollout, Rollout::Complete);
        // Pods still starting (a new set, a scale-up) are no manual restart: every Pod there is of the revision.
        let mut starting = on_delete(1);
        if let Some(st) = starting.status.as_mut() {
            (st.replicas, st.ready_replicas) = (1, Some(0));
        }
        assert_eq!(WorkloadView::from(&starting).rollout, Rollout::InProgress);
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ds", "generation": 3},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                       "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 0, "numberAvailable": 1}
        }))
        .unwrap();
        assert_eq!(WorkloadView::from(&ds).rollout, Rollout::InProgress);
        assert!(!WorkloadView::from(&ds).opted_out);
        let mut ds_on_delete = ds.clone();
        if let Some(spec) = ds_on_delete.spec.as_mut() {
            spec.update_strategy = Some(k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            });
        }
        assert!(matches!(WorkloadView::from(&ds_on_delete).rollout, Rollout::Manual(n) if n.contains("0 of 1")));
    }
}
