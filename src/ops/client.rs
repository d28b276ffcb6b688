//! A client configured the way kubectl configures itself: `--kubeconfig` over `KUBECONFIG` over
//! `~/.kube/config` (over in-cluster configuration when there is no kubeconfig at all), `--context` over the
//! current context, and the context's namespace unless `-n` says otherwise.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::OpsError;

/// Where to connect, as the user said it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace commands default to.
pub async fn connect(conn: &Connection) -> Result<(Client, String), OpsError> {
    let options = KubeConfigOptions {
        context: conn.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&conn.kubeconfig, &conn.context) {
        (Some(path), _) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| OpsError::Kubeconfig(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| OpsError::Kubeconfig(e.to_string()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| OpsError::Kubeconfig(e.to_string()))?,
        (None, None) => Config::infer().await.map_err(|e| OpsError::Kubeconfig(e.to_string()))?,
    };
    let namespace = conn
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| OpsError::Kubeconfig(e.to_string()))?;
    Ok((client, namespace))
}
