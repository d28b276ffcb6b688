//! The ESC source: snapshots shared per (environment, pin) and refresh cycle, so that ESC calls per cycle are
//! bounded by the number of environments, not of ManagedSecrets. Every read of an environment in the same cycle
//! awaits the same open (concurrent callers coalesce onto one in-flight request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::error::SourceError;
use super::reader::{SecretSource, SourceValue};
use crate::api;
use crate::esc::{EnvRef, EscClient, EscError, PropertyPath, Snapshot};

type SlotResult = Result<Arc<Snapshot>, EscError>;

struct Slot {
    started: Instant,
    cell: Arc<OnceCell<SlotResult>>,
}

impl Slot {
    fn stale_failure(&self) -> bool {
        matches!(self.cell.get(), Some(Err(_))) && self.started.elapsed() > FAILURE_REUSE
    }
}

/// How long a failed snapshot answers for everyone (coalescing a burst), before the next caller retries.
const FAILURE_REUSE: Duration = Duration::from_secs(1);

/// Snapshots of ESC environments, shared per (environment, pin) and refresh cycle.
pub struct EscSource {
    client: EscClient,
    slots: Mutex<HashMap<(EnvRef, String), Slot>>,
}

impl EscSource {
    pub fn new(client: EscClient) -> Self {
        EscSource {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The client underneath, for writes (rotation).
    pub fn client(&self) -> &EscClient {
        &self.client
    }

    /// Reads `path` of `environment` (optionally pinned to `version`), reusing a snapshot started at or after
    /// `fresh_since`; otherwise one new snapshot is taken and shared with every concurrent caller.
    pub async fn get(
        &self,
        environment: &str,
        version: Option<&str>,
        path: &str,
        fresh_since: Instant,
    ) -> Result<SourceValue, SourceError> {
        let env = EnvRef::parse(environment)?;
        let path = PropertyPath::parse(path).map_err(|e| SourceError::Invalid(e.to_string()))?;
        let pin = version.unwrap_or_default().to_string();
        let cell = {
            let mut slots = self.slots.lock().map_err(|_| SourceError::Unavailable {
                service: "ESC",
                message: "snapshot cache poisoned".into(),
                retry_after: None,
            })?;
            let key = (env.clone(), pin.clone());
            match slots.get(&key) {
                // A failure is shared only by callers that arrive while it is fresh; later ones try again.
                Some(slot) if slot.started >= fresh_since && !slot.stale_failure() => slot.cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    slots.insert(
                        key,
                        Slot {
                            started: Instant::now(),
                            cell: cell.clone(),
                        },
                    );
                    cell
                }
            }
        };
        let snapshot = cell
            .get_or_init(|| async {
                let revision = if pin.is_empty() {
                    self.client.latest_revision(&env).await?
                } else {
                    self.client.resolve_version(&env, &pin).await?
                };
                self.client.snapshot(&env, revision).await.map(Arc::new)
            })
            .await
            .clone()?;
        Ok(SourceValue {
            value: snapshot.lookup(&path)?,
            revision: Some(snapshot.revision),
        })
    }
}

impl SecretSource for EscSource {
    fn read<'a>(
        &'a self,
        _namespace: &'a str,
        source: &'a api::Source,
        fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        async move {
            let esc = source
                .esc
                .as_ref()
                .ok_or_else(|| SourceError::Invalid("not an ESC source".into()))?;
            let version = esc.version.as_deref().filter(|v| !v.is_empty());
            self.get(&esc.environment, version, &esc.path, fresh_since).await
        }
        .boxed()
    }
}
