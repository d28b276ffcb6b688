//! A key of another Secret in the ManagedSecret's namespace, as a source.

use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::error::SourceError;
use super::reader::{SecretSource, SourceValue};
use crate::api;
use crate::secret::{SecretBytes, SecretData};

/// Reads `key` of Secret `name` in `namespace`.
pub async fn get(client: &Client, namespace: &str, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("Secret {namespace}/{name}");
    let secret = match api.get(name).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(SourceError::NotFound { what }),
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {
            return Err(SourceError::Unauthorized {
                service: "Kubernetes",
                message: s.message,
            });
        }
        Err(_) => {
            return Err(SourceError::Unavailable {
                service: "Kubernetes",
                message: format!("reading {what} failed"),
                retry_after: None,
            });
        }
    };
    let mut data = secret.data.unwrap_or_default();
    match data.remove(key) {
        Some(bytes) => Ok(SecretBytes::new(bytes.0)),
        None => Err(SourceError::NotFound {
            what: format!("key {key:?} in {what}"),
        }),
    }
}

/// Secrets of the cluster as a source: always read now (the API server is the cache).
pub struct KubernetesSource {
    client: Client,
}

impl KubernetesSource {
    pub fn new(client: Client) -> Self {
        KubernetesSource { client }
    }
}

impl SecretSource for KubernetesSource {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a api::ManagedSecretSpec,
        _fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        async move {
            let k = spec
                .source
                .kubernetes_secret
                .as_ref()
                .ok_or_else(|| SourceError::Invalid("not a Kubernetes Secret source".into()))?;
            let key = spec
                .target
                .key
                .as_deref()
                .ok_or_else(|| SourceError::Invalid("source.kubernetesSecret needs target.key".into()))?;
            Ok(SourceValue {
                values: SecretData::single(key, get(&self.client, namespace, &k.name, &k.key).await?),
                revision: None,
            })
        }
        .boxed()
    }
}
