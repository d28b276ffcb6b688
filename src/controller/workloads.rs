//! The workloads keyward restarts — Deployments, StatefulSets, DaemonSets — seen through one small view: their
//! pod template, the restart hash on it, and how their rollout is going.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Patch, PatchParams};
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
        let rollout = if caught_up(s.metadata.generation, st.observed_generation)
            && st.update_revision.is_some()
            && st.current_revision == st.update_revision
            && st.updated_replicas.unwrap_or(0) == want
            && st.ready_replicas.unwrap_or(0) == want
        {
            Rollout::Complete
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
        let rollout = if caught_up(d.metadata.generation, st.observed_generation)
            && st.updated_number_scheduled.unwrap_or(0) == st.desired_number_scheduled
            && st.number_available.unwrap_or(0) == st.desired_number_scheduled
        {
            Rollout::Complete
        } else {
            Rollout::InProgress
        };
        WorkloadView::new(WorkloadKind::DaemonSet, &d.metadata, spec.template, rollout)
    }
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
    apply(client, kind, namespace, name, serde_json::json!({}), template).await
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
    let (api_version, kind_name) = match kind {
        WorkloadKind::Deployment => ("apps/v1", "Deployment"),
        WorkloadKind::StatefulSet => ("apps/v1", "StatefulSet"),
        WorkloadKind::DaemonSet => ("apps/v1", "DaemonSet"),
    };
    let mut metadata = serde_json::json!({"name": name, "namespace": namespace});
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    let mut patch = serde_json::json!({"apiVersion": api_version, "kind": kind_name, "metadata": metadata});
    if spec.as_object().is_some_and(|o| !o.is_empty()) {
        patch["spec"] = spec;
    }
    let params = PatchParams::apply(super::context::FIELD_MANAGER).force();
    match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await?;
        }
    }
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
        let failed = deployment(serde_json::json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}));
        assert_eq!(WorkloadView::from(&failed).rollout, Rollout::Failed("too slow".into()));
        // The deadline of an older generation does not fail the new template's rollout.
        let reverted = deployment(serde_json::json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}));
        assert_eq!(WorkloadView::from(&reverted).rollout, Rollout::InProgress);
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
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ds", "generation": 3},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                       "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 0, "numberAvailable": 1}
        }))
        .unwrap();
        assert_eq!(WorkloadView::from(&ds).rollout, Rollout::InProgress);
        assert!(!WorkloadView::from(&ds).opted_out);
    }
}
