//! A key of another Secret in the ManagedSecret's namespace, as a source.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::{SecretBytes, SourceError, SourceValue};

/// Reads `key` of Secret `name` in `namespace`.
pub async fn get(client: &Client, namespace: &str, name: &str, key: &str) -> Result<SourceValue, SourceError> {
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
        Some(bytes) => Ok(SourceValue {
            value: SecretBytes::new(bytes.0),
            revision: None,
        }),
        None => Err(SourceError::NotFound {
            what: format!("key {key:?} in {what}"),
        }),
    }
}
