//! Where secret values come from, behind one trait: Pulumi ESC (shared, coalesced environment snapshots) and
//! other Kubernetes Secrets. Values are held only in zeroizing types and never formatted.

pub mod error;
pub mod esc;
#[cfg(test)]
pub mod fake;
pub mod kubernetes;
pub mod reader;

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

pub use error::SourceError;
pub use reader::{SecretSource, SourceValue};

use crate::api;

/// Every source keyward has, chosen by what a spec names: ESC when configured, and the cluster's Secrets.
pub struct Sources {
    pub esc: Option<Arc<esc::EscSource>>,
    pub kubernetes: kubernetes::KubernetesSource,
}

impl SecretSource for Sources {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a api::ManagedSecretSpec,
        fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        let source = &spec.source;
        match (&source.esc, &source.kubernetes_secret, &self.esc) {
            (Some(_), None, Some(esc)) => esc.read(namespace, spec, fresh_since),
            (Some(_), None, None) => async { Err(SourceError::NotConfigured) }.boxed(),
            (None, Some(_), _) => self.kubernetes.read(namespace, spec, fresh_since),
            _ => async { Err(SourceError::Invalid("exactly one source must be set".into())) }.boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;
    use fake::FakeSource;

    #[test]
    fn secret_bytes_debug_redacts() {
        let s = SecretBytes::new(b"canary-123".to_vec());
        let shown = format!(
            "{s:?} {:?}",
            SourceValue {
                values: crate::secret::SecretData::single("K", s.clone()),
                revision: Some(3)
            }
        );
        assert!(!shown.contains("canary"), "{shown}");
    }

    fn esc_spec(env: &str, path: &str) -> api::ManagedSecretSpec {
        serde_json::from_value(serde_json::json!({
            "source": {"esc": {"environment": env, "path": path}}, "target": {"key": "K"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn sources_route_by_spec_and_say_what_is_missing() {
        let fake = Arc::new(FakeSource::default());
        fake.set("acme/app/prod", "db.password", b"v1", 7);
        let without_esc = Sources {
            esc: None,
            kubernetes: kubernetes::KubernetesSource::new(fake_client()),
        };
        let e = without_esc
            .read("ns", &esc_spec("acme/app/prod", "db.password"), Instant::now())
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "SourceNotConfigured");
        let neither = api::ManagedSecretSpec::default();
        let e = without_esc.read("ns", &neither, Instant::now()).await.unwrap_err();
        assert_eq!(e.reason(), "InvalidSource");

        let v = fake
            .read("ns", &esc_spec("acme/app/prod", "db.password"), Instant::now())
            .await
            .unwrap();
        assert_eq!((v.values.get("K").unwrap().expose(), v.revision), (&b"v1"[..], Some(7)));
        let e = fake
            .read("ns", &esc_spec("acme/app/prod", "nope"), Instant::now())
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "SourceNotFound");
        assert_eq!(fake.reads(), 2);
    }

    /// A client that is never used: the routing above must not reach the cluster.
    fn fake_client() -> kube::Client {
        let (service, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        kube::Client::new(service, "default")
    }
}
