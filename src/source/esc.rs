//! The ESC source: snapshots shared per (environment, pin) and refresh cycle, so that ESC calls per cycle are
//! bounded by the number of environments, not of ManagedSecrets. Every read of an environment in the same cycle
//! awaits the same open (concurrent callers coalesce onto one in-flight request).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::error::SourceError;
use super::reader::{SecretSource, SourceValue};
use crate::api;
use crate::esc::{EnvRef, EscClient, EscError, PropertyPath, Snapshot};
use crate::secret::{SecretBytes, SecretData};

type SlotResult = Result<Arc<Snapshot>, EscError>;

struct Slot {
    started: Instant,
    cell: Arc<OnceCell<SlotResult>>,
    /// Failed attempts in a row for this environment, this one included if it fails.
    failures: u32,
}

impl Slot {
    fn failed(&self) -> bool {
        matches!(self.cell.get(), Some(Err(_)))
    }

    fn stale_failure(&self) -> bool {
        let retry_after = match self.cell.get() {
            Some(Err(e)) => e.retry_after(),
            _ => return false,
        };
        self.started.elapsed() > failure_reuse(self.failures).max(retry_after.unwrap_or_default())
    }
}

/// How long the `n`-th failed snapshot in a row of one environment answers for everyone before the next caller
/// tries ESC again: 1 s, doubling, at most [`MAX_FAILURE_REUSE`] (or longer when ESC said Retry-After). So that
/// during an outage keyward's requests to ESC are bounded by environments, not by ManagedSecrets retrying
/// each on its own backoff (issue 16: 1,000 objects made 17 requests a second in a 10-minute outage).
fn failure_reuse(n: u32) -> Duration {
    FAILURE_REUSE
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MAX_FAILURE_REUSE)
}

/// How long a first failed snapshot answers for everyone (coalescing a burst).
const FAILURE_REUSE: Duration = Duration::from_secs(1);

/// The longest a failure is reused: how late, at most, keyward notices that ESC is back.
const MAX_FAILURE_REUSE: Duration = Duration::from_secs(15);

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

    /// Reads `path` of `environment` (optionally pinned to `version`) from a snapshot started at or after
    /// `fresh_since` (see [`EscSource::snapshot`]): the value and the revision it was read at.
    pub async fn get(
        &self,
        environment: &str,
        version: Option<&str>,
        path: &str,
        fresh_since: Instant,
    ) -> Result<(SecretBytes, i64), SourceError> {
        let path = PropertyPath::parse(path).map_err(|e| SourceError::Invalid(e.to_string()))?;
        let snapshot = self.snapshot(environment, version, fresh_since).await?;
        Ok((snapshot.lookup(&path)?, snapshot.revision))
    }

    /// A snapshot of `environment` (optionally pinned to `version`) started at or after `fresh_since`: the
    /// one already taken, or one new snapshot shared with every concurrent caller.
    pub async fn snapshot(
        &self,
        environment: &str,
        version: Option<&str>,
        fresh_since: Instant,
    ) -> Result<Arc<Snapshot>, SourceError> {
        let env = EnvRef::parse(environment)?;
        let pin = version.unwrap_or_default().to_string();
        let cell = {
            let mut slots = self.slots.lock().map_err(|_| SourceError::Unavailable {
                service: "ESC",
                message: "snapshot cache poisoned".into(),
                retry_after: None,
            })?;
            let key = (env.clone(), pin.clone());
            match slots.get(&key) {
                // A failure is shared until it is stale (`failure_reuse`), then the next caller tries again.
                // Once ESC has failed twice in a row it is shared whatever freshness a caller wants (an
                // outage: refresh requests do not each ask ESC again); after a single failure a caller that
                // wants something newer than it tries at once.
                Some(slot)
                    if slot.failed()
                        && !slot.stale_failure()
                        && (slot.started >= fresh_since || slot.failures >= 2) =>
                {
                    slot.cell.clone()
                }
                Some(slot) if slot.started >= fresh_since && !slot.failed() => slot.cell.clone(),
                previous => {
                    let failures = previous.filter(|p| p.failed()).map_or(0, |p| p.failures) + 1;
                    let cell = Arc::new(OnceCell::new());
                    slots.insert(
                        key,
                        Slot {
                            started: Instant::now(),
                            cell: cell.clone(),
                            failures,
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
        Ok(snapshot)
    }
}

/// Every value an ESC source names, from one snapshot: `path` under `target_key`, each `data` entry under its
/// key, each leaf of each `dataFrom` object under [`leaf_key`]. Two values that would take one key are an
/// error naming both (nothing is written).
pub fn values_of(
    esc: &api::EscProperty,
    target_key: Option<&str>,
    snapshot: &Snapshot,
) -> Result<SecretData, SourceError> {
    let parse = |p: &str| PropertyPath::parse(p).map_err(|e| SourceError::Invalid(e.to_string()));
    let mut out = SecretData::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |key: String, from: String, value: SecretBytes| {
        if let Some(first) = origin.get(&key) {
            return Err(SourceError::Invalid(format!(
                "source.esc: {first} and {from} both give key {key}; rename one (data key, dataFrom keyPrefix)"
            )));
        }
        origin.insert(key.clone(), from);
        out.insert(key, value);
        Ok(())
    };
    if let Some(path) = &esc.path {
        let key = target_key.ok_or_else(|| SourceError::Invalid("source.esc.path needs target.key".into()))?;
        put(key.to_string(), format!("path {path}"), snapshot.lookup(&parse(path)?)?)?;
    }
    for (n, d) in esc.data.iter().enumerate() {
        put(
            d.key.clone(),
            format!("data[{n}] (path {})", d.path),
            snapshot.lookup(&parse(&d.path)?)?,
        )?;
    }
    for (n, d) in esc.data_from.iter().enumerate() {
        for (names, value) in snapshot.leaves(&parse(&d.path)?)? {
            let key = leaf_key(d.key_prefix.as_deref().unwrap_or_default(), &names);
            if key.len() > MAX_KEY {
                return Err(SourceError::Invalid(format!(
                    "source.esc.dataFrom[{n}] (path {}): the key for leaf {} is longer than {MAX_KEY} characters",
                    d.path,
                    names.join(".")
                )));
            }
            put(
                key,
                format!("dataFrom[{n}] (path {}) leaf {}", d.path, names.join(".")),
                value,
            )?;
        }
    }
    Ok(out)
}

/// The longest Secret data key (Kubernetes' `validation.IsConfigMapKey`: a DNS subdomain's length).
const MAX_KEY: usize = 253;

/// The Secret key of a `dataFrom` leaf: `prefix` then the names leading to it joined with `_`, each character a
/// Secret key cannot hold (anything but letters, digits, `-`, `_` and `.`) replaced by `_` — the rule External
/// Secrets Operator's default key conversion applies. `{db: {host: h}}` → `db_host`; `"api key"` → `api_key`.
pub fn leaf_key(prefix: &str, names: &[String]) -> String {
    let clean = |name: &String| -> String {
        if name.is_empty() {
            return "_".into();
        }
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let joined: Vec<String> = names.iter().map(clean).collect();
    format!("{prefix}{}", joined.join("_"))
}

impl SecretSource for EscSource {
    fn read<'a>(
        &'a self,
        _namespace: &'a str,
        spec: &'a api::ManagedSecretSpec,
        fresh_since: Instant,
    ) -> BoxFuture<'a, Result<SourceValue, SourceError>> {
        async move {
            let esc = spec
                .source
                .esc
                .as_ref()
                .ok_or_else(|| SourceError::Invalid("not an ESC source".into()))?;
            let version = esc.version.as_deref().filter(|v| !v.is_empty());
            // One snapshot for every value: one open per environment and cycle, however many keys.
            let snapshot = self.snapshot(&esc.environment, version, fresh_since).await?;
            Ok(SourceValue {
                values: values_of(esc, spec.target.key.as_deref(), &snapshot)?,
                revision: Some(snapshot.revision),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reused_longer_the_more_there_are_in_a_row() {
        let windows: Vec<u64> = (1..=6).map(|n| failure_reuse(n).as_secs()).collect();
        assert_eq!(windows, [1, 2, 4, 8, 15, 15]);
        assert_eq!(failure_reuse(u32::MAX), MAX_FAILURE_REUSE);
    }

    /// An ESC that answers 503 to everything, counting the requests it gets.
    async fn down_esc() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { http::StatusCode::SERVICE_UNAVAILABLE }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/api/esc"), hits)
    }

    #[tokio::test]
    async fn in_an_outage_esc_is_asked_per_environment_not_per_caller() {
        use std::sync::atomic::Ordering;
        crate::tls::install_crypto_provider();
        let (url, hits) = down_esc().await;
        let mut config = crate::esc::EscConfig::new(url, None);
        config.attempts = 1;
        let esc = EscSource::new(EscClient::new(config).unwrap());
        let tick = Instant::now();
        let snap = |fresh_since| esc.snapshot("acme/app/prod", None, fresh_since);
        assert!(snap(tick).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Everyone refreshing this tick shares the failure.
        for _ in 0..50 {
            assert!(snap(tick).await.is_err());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one failure, shared");
        // After one failure, a caller that wants something newer (a refresh request) asks again...
        assert!(snap(Instant::now()).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // ...after two in a row it is an outage: shared whatever freshness is asked, for 2 s.
        for _ in 0..50 {
            assert!(snap(Instant::now()).await.is_err());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2, "an outage: the failure is shared");
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert!(snap(tick).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 3, "stale after 2 s: asked again");
        // Another environment is asked on its own.
        assert!(esc.snapshot("acme/app/other", None, tick).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn leaf_keys_join_names_and_replace_what_a_key_cannot_hold() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(leaf_key("", &names(&["db", "host"])), "db_host");
        assert_eq!(leaf_key("APP_", &names(&["api key", "é"])), "APP_api_key__");
        assert_eq!(leaf_key("", &names(&["tls.crt"])), "tls.crt");
        assert_eq!(leaf_key("", &names(&["", "a/b"])), "__a_b");
    }

    fn snapshot() -> Snapshot {
        let body = serde_json::json!({"properties": {
            "app": {"value": {"db": {"value": {"host": {"value": "h"}, "user": {"value": "u"}}}, "db_host": {"value": "x"}}},
            "pw": {"value": "p", "secret": true}
        }});
        Snapshot::new(
            EnvRef::parse("o/p/e").unwrap(),
            3,
            zeroize::Zeroizing::new(body.to_string().into_bytes()),
        )
    }

    fn esc(v: serde_json::Value) -> api::EscProperty {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn data_and_data_from_come_from_one_snapshot_and_collisions_name_both_origins() {
        let s = snapshot();
        let got = values_of(
            &esc(
                serde_json::json!({"environment": "o/p/e", "data": [{"key": "PW", "path": "pw"}],
                "dataFrom": [{"path": "app.db", "keyPrefix": "DB_"}]}),
            ),
            None,
            &s,
        )
        .unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["DB_host", "DB_user", "PW"]);
        let e = values_of(
            &esc(serde_json::json!({"environment": "o/p/e", "dataFrom": [{"path": "app"}]})),
            None,
            &s,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid source: source.esc: dataFrom[0] (path app) leaf db.host and dataFrom[0] (path app) leaf db_host \
             both give key db_host; rename one (data key, dataFrom keyPrefix)"
        );
        let one = values_of(
            &esc(serde_json::json!({"environment": "o/p/e", "path": "pw"})),
            Some("K"),
            &s,
        )
        .unwrap();
        assert_eq!(one.get("K").unwrap().expose(), b"p");
    }
}
