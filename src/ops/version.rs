//! `keyward version`: this binary's version and, when the cluster answers, the Kubernetes version and the keyward
//! operators deployed there (found by the chart's `app.kubernetes.io/name=keyward` label; their images name
//! their versions).

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::{Api, Client};

use super::error::OpsError;

/// The label every Deployment of the chart carries (charts/keyward/templates/_helpers.tpl, selectorLabels).
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=keyward";

/// One deployed operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub namespace: String,
    pub name: String,
    /// The keyward container's image reference.
    pub image: String,
    /// Ready replicas / desired replicas.
    pub ready: i32,
    pub replicas: i32,
}

/// What the cluster says: its Kubernetes version (`v1.34.4`) and the operators, or why one part is unknown.
#[derive(Debug)]
pub struct Server {
    pub kubernetes: Result<String, OpsError>,
    pub operators: Result<Vec<Operator>, OpsError>,
}

/// Asks the API server for its version and lists keyward's Deployments in every namespace. Each part fails on
/// its own (a user who may not list Deployments cluster-wide still learns the Kubernetes version).
pub async fn server(client: &Client) -> Server {
    let kubernetes = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(|source| OpsError::Kube {
            action: "reading the Kubernetes version".into(),
            source,
        });
    let operators = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels(OPERATOR_SELECTOR))
        .await
        .map(|list| list.items.iter().map(operator).collect())
        .map_err(|source| OpsError::Kube {
            action: format!("listing Deployments labelled {OPERATOR_SELECTOR}"),
            source,
        });
    Server { kubernetes, operators }
}

fn operator(d: &Deployment) -> Operator {
    let spec = d.spec.as_ref();
    let containers = spec
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice());
    let image = containers
        .and_then(|c| c.iter().find(|c| c.name == "keyward").or(c.first()))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    Operator {
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        name: d.metadata.name.clone().unwrap_or_default(),
        image,
        ready: d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
    }
}

/// The text `keyward version` prints: `client` first, then the cluster's part, or why it is missing.
pub fn render(client: &str, server: Option<&Server>) -> String {
    let mut out = format!("client: {client}\n");
    let Some(server) = server else {
        return out;
    };
    match &server.kubernetes {
        Ok(v) => out.push_str(&format!("kubernetes: {v}\n")),
        Err(e) => out.push_str(&format!("kubernetes: unknown ({e})\n")),
    }
    match &server.operators {
        Ok(ops) if ops.is_empty() => {
            out.push_str(&format!(
                "operator: none found (no Deployment labelled {OPERATOR_SELECTOR})\n"
            ));
        }
        Ok(ops) => {
            for o in ops {
                out.push_str(&format!(
                    "operator: {}/{} {} ({}/{} ready)\n",
                    o.namespace, o.name, o.image, o.ready, o.replicas
                ));
            }
        }
        Err(e) => out.push_str(&format!("operator: unknown ({e})\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_part_or_why_it_is_missing() {
        assert_eq!(render("keyward 0.1.0", None), "client: keyward 0.1.0\n");
        let server = Server {
            kubernetes: Ok("v1.34.4".into()),
            operators: Ok(vec![Operator {
                namespace: "keyward-system".into(),
                name: "keyward".into(),
                image: "ghcr.io/keyward-dev/keyward:0.1.0".into(),
                ready: 2,
                replicas: 2,
            }]),
        };
        assert_eq!(
            render("keyward 0.1.0", Some(&server)),
            "client: keyward 0.1.0\nkubernetes: v1.34.4\n\
             operator: keyward-system/keyward ghcr.io/keyward-dev/keyward:0.1.0 (2/2 ready)\n"
        );
        let none = Server {
            kubernetes: Ok("v1.34.4".into()),
            operators: Ok(vec![]),
        };
        assert!(render("k", Some(&none)).contains("operator: none found"));
    }
}
