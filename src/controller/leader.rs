//! Leader election on a coordination.k8s.io/v1 Lease, so that two replicas can run and only one writes.
//!
//! The lock is kube-lease-manager's: a claim is a server-side apply of `holderIdentity` under a field manager
//! of its own, so of two replicas claiming a free Lease at once the second gets a 409 conflict and only one
//! holds it. Around the crate keyward keeps its own view from a watch of the Lease, because the crate alone
//! cannot give two things a writer needs:
//! - when renewing stops working: its errors are retried and the lock state it reports stays `true`. Here a
//!   leader counts as leader only while the Lease shows it as holder with a renewal recent enough; `margin`
//!   before `renewTime + leaseDurationSeconds` without a newer renewal seen, it has lost the lease.
//! - a quick takeover after a graceful stop: a follower looks at the Lease again only when the holder's claim
//!   would run out. Here a follower that sees the Lease released contends at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::{oneshot, watch};

/// Errors of the leader election settings.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Invalid(&'static str),
}

impl LeaderError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            LeaderError::Invalid(_) => "invalid_config",
        }
    }
}

/// Where the Lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    /// This replica's name in `holderIdentity`: unique among the replicas.
    pub identity: String,
    /// How long a claim stands after its last renewal.
    pub duration: Duration,
    /// The holder renews this long before its claim runs out.
    pub grace: Duration,
}

impl LeaderConfig {
    /// `grace_seconds` defaults to a third of the duration (at least 1s), so a leader gets a few tries to renew.
    pub fn new(
        lease_name: &str,
        namespace: &str,
        identity: &str,
        duration_seconds: u64,
        grace_seconds: Option<u64>,
    ) -> Result<LeaderConfig, LeaderError> {
        if duration_seconds < 2 || duration_seconds > i32::MAX as u64 {
            return Err(LeaderError::Invalid("--lease-duration-seconds must be at least 2"));
        }
        let grace = grace_seconds.unwrap_or((duration_seconds / 3).max(1));
        if grace == 0 || grace >= duration_seconds {
            return Err(LeaderError::Invalid(
                "--lease-renew-grace-seconds must be at least 1 and less than --lease-duration-seconds",
            ));
        }
        if lease_name.is_empty() || namespace.is_empty() || identity.is_empty() {
            return Err(LeaderError::Invalid(
                "lease name, lease namespace and identity must not be empty",
            ));
        }
        Ok(LeaderConfig {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(duration_seconds),
            grace: Duration::from_secs(grace),
        })
    }

    /// How long before its claim runs out a leader stops writing if no renewal was seen: less than `grace`, so
    /// the renewal is tried first; enough to cover a write in flight and a little clock skew with the follower
    /// (which takes over only once the claim has run out on its clock).
    pub fn margin(&self) -> Duration {
        (self.grace / 2).max(Duration::from_millis(500)).min(self.grace)
    }

    /// How long to wait before trying the lock manager again after an error.
    fn retry(&self) -> Duration {
        (self.grace / 2).clamp(Duration::from_millis(200), Duration::from_secs(1))
    }
}

/// This replica's identity: the Pod name, or `<hostname>-<pid>` outside a Pod.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keyward".into());
    format!("{host}-{}", std::process::id())
}

/// What this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// No current holder seen (yet, or the last one's claim ran out).
    Unknown,
    /// Another replica holds a current claim.
    Follower { holder: String },
    /// This replica holds a current claim: it may write.
    Leader,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader)
    }

    /// Whether it is known who writes (for readiness).
    pub fn is_known(&self) -> bool {
        !matches!(self, Leadership::Unknown)
    }
}

/// What the Lease last showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    /// `renewTime + leaseDurationSeconds`: until when the holder's claim stands.
    pub valid_until: Option<SystemTime>,
}

impl Observed {
    pub fn from_lease(lease: &Lease) -> Observed {
        let spec = lease.spec.as_ref();
        let holder = spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty());
        let valid_until = spec.and_then(|s| {
            let renewed: SystemTime = s.renew_time.as_ref()?.0.into();
            let secs = u64::try_from(s.lease_duration_seconds?).ok()?;
            renewed.checked_add(Duration::from_secs(secs))
        });
        Observed { holder, valid_until }
    }
}

/// This replica's role from what the Lease shows and whether the lock manager holds the lock, and when that
/// role ends by itself (a claim running out) unless the Lease changes first.
pub fn decide(
    observed: &Observed,
    me: &str,
    holds: bool,
    now: SystemTime,
    margin: Duration,
) -> (Leadership, Option<SystemTime>) {
    match observed.holder.as_deref() {
        Some(holder) if holder == me => {
            // Both must agree: the Lease (seen renewed, not only believed renewed) and the lock manager (which
            // says false once it sees another holder).
            match observed.valid_until.and_then(|u| u.checked_sub(margin)) {
                Some(stop) if holds && now < stop => (Leadership::Leader, Some(stop)),
                _ => (Leadership::Unknown, None),
            }
        }
        Some(holder) => match observed.valid_until {
            Some(until) if now < until => (
                Leadership::Follower {
                    holder: holder.to_string(),
                },
                Some(until),
            ),
            _ => (Leadership::Unknown, None),
        },
        None => (Leadership::Unknown, None),
    }
}

/// Whether a change of the Lease from `before` to `after` is the holder letting go of it (a graceful stop),
/// after which a follower contends at once.
pub fn released(before: &Observed, after: &Observed, me: &str) -> bool {
    before.holder.as_deref().is_some_and(|h| h != me) && after.holder.is_none()
}

/// A running election: its view of who leads, and the way to let go of the lease.
pub struct Elector {
    leadership: watch::Receiver<Leadership>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: tokio::task::JoinHandle<()>,
    identity: String,
}

impl Elector {
    /// Starts contending for the lease in the background.
    pub fn start(client: Client, config: LeaderConfig) -> Elector {
        let (tx, rx) = watch::channel(Leadership::Unknown);
        let (release_tx, release_rx) = oneshot::channel();
        let identity = config.identity.clone();
        tracing::info!(
            lease = %format!("{}/{}", config.namespace, config.lease_name),
            identity = %config.identity,
            duration_seconds = config.duration.as_secs(),
            renew_grace_seconds = config.grace.as_secs(),
            "leader election: contending for the lease"
        );
        let task = tokio::spawn(elect(client, config, tx, release_rx));
        Elector {
            leadership: rx,
            release: Some(release_tx),
            task,
            identity,
        }
    }

    /// The current role, and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Lets go of the lease if this replica holds it, so that another replica takes over at once, and stops
    /// contending. Call only once this replica has stopped writing.
    pub async fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(done_tx).is_ok() {
                // Bounded: a stop must not hang on an unreachable API server (the claim then simply runs out).
                let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
            }
        }
        self.task.abort();
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One step of the lock manager.
enum Step {
    Built(Arc<LeaseManager>),
    Changed(bool),
    Failed(LeaseManagerError),
}

fn build(client: Client, config: &LeaderConfig) -> BoxFuture<'static, Step> {
    let builder = LeaseManagerBuilder::new(client, config.lease_name.clone())
        .with_namespace(config.namespace.clone())
        .with_identity(config.identity.clone())
        .with_duration(config.duration.as_secs())
        .with_grace(config.grace.as_secs());
    Box::pin(async move {
        match builder.build().await {
            Ok(m) => Step::Built(Arc::new(m)),
            Err(e) => Step::Failed(e),
        }
    })
}

/// `changed()` runs until the lock state changes, renewing the lock meanwhile while it is held.
fn changed(manager: Arc<LeaseManager>) -> BoxFuture<'static, Step> {
    Box::pin(async move {
        match manager.changed().await {
            Ok(holds) => Step::Changed(holds),
            Err(e) => Step::Failed(e),
        }
    })
}

fn publish(tx: &watch::Sender<Leadership>, role: Leadership, config: &LeaderConfig) {
    tx.send_if_modified(|current| {
        if *current == role {
            return false;
        }
        let lease = format!("{}/{}", config.namespace, config.lease_name);
        match (&*current, &role) {
            (_, Leadership::Leader) => {
                tracing::info!(%lease, identity = %config.identity, "leader election: this replica leads")
            }
            (_, Leadership::Follower { holder }) => {
                tracing::info!(%lease, identity = %config.identity, leader = %holder, "leader election: following")
            }
            (Leadership::Leader, Leadership::Unknown) => tracing::error!(
                %lease,
                identity = %config.identity,
                "leader election: the lease was not renewed in time; this replica no longer leads"
            ),
            (_, Leadership::Unknown) => {
                tracing::info!(%lease, identity = %config.identity, "leader election: no current leader")
            }
        }
        *current = role;
        true
    });
}

/// The election loop: drives the lock manager, follows the Lease, publishes the role.
async fn elect(
    client: Client,
    config: LeaderConfig,
    tx: watch::Sender<Leadership>,
    mut release_rx: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let selector = format!("metadata.name={}", config.lease_name);
    let mut leases = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let margin = config.margin();
    let mut observed = Observed::default();
    // Whether the Lease showed up in the current (re)list; one that did not does not exist.
    let mut listed = false;
    let mut manager: Option<Arc<LeaseManager>> = None;
    let mut step: Option<BoxFuture<'static, Step>> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut holds = false;
    loop {
        if step.is_none() && retry_at.is_none_or(|t| t <= tokio::time::Instant::now()) {
            retry_at = None;
            step = Some(match &manager {
                Some(m) => changed(m.clone()),
                None => build(client.clone(), &config),
            });
        }
        let now = SystemTime::now();
        let (role, ends_at) = decide(&observed, &config.identity, holds, now, margin);
        publish(&tx, role, &config);
        let role_ends = ends_at.map(|t| t.duration_since(now).unwrap_or_default());
        let next_try = retry_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
        let wake = match (role_ends, next_try) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
        };
        tokio::select! {
            biased;
            reply = &mut release_rx => {
                // Stop renewing first, then let go.
                drop(step.take());
                if let (Ok(reply), Some(m)) = (reply, manager.as_ref()) {
                    if holds {
                        match m.release().await {
                            Ok(()) => tracing::info!(identity = %config.identity, "leader election: released the lease"),
                            Err(e) => tracing::warn!(error = %e, "leader election: releasing the lease failed; it runs out by itself"),
                        }
                    }
                    let _ = reply.send(());
                }
                // Stopping, not losing: no transition to log.
                tx.send_replace(Leadership::Unknown);
                return;
            }
            event = leases.next() => {
                let before = observed.clone();
                match event {
                    Some(Ok(watcher::Event::Init)) => listed = false,
                    Some(Ok(watcher::Event::InitApply(lease) | watcher::Event::Apply(lease))) => {
                        listed = true;
                        observed = Observed::from_lease(&lease);
                    }
                    Some(Ok(watcher::Event::InitDone)) if !listed => observed = Observed::default(),
                    Some(Ok(watcher::Event::InitDone)) => {}
                    Some(Ok(watcher::Event::Delete(_))) => observed = Observed::default(),
                    Some(Err(e)) => tracing::warn!(error = %e, "leader election: Lease watch error"),
                    None => {
                        tracing::error!("leader election: the Lease watch ended");
                        publish(&tx, Leadership::Unknown, &config);
                        return;
                    }
                }
                if !holds && released(&before, &observed, &config.identity) {
                    // The lock manager would look again only when the old claim runs out; a fresh one reads the
                    // Lease first thing and claims it.
                    tracing::info!("leader election: the lease was released; contending now");
                    manager = None;
                    step = None;
                    retry_at = None;
                }
            }
            done = async {
                match step.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            } => {
                step = None;
                match done {
                    Step::Built(m) => manager = Some(m),
                    Step::Changed(h) => holds = h,
                    Step::Failed(e) => {
                        tracing::warn!(error = %e, holds, "leader election: lease manager error; retrying");
                        retry_at = Some(tokio::time::Instant::now() + config.retry());
                    }
                }
            }
            () = tokio::time::sleep(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn held_by(holder: &str, until: u64) -> Observed {
        Observed {
            holder: Some(holder.into()),
            valid_until: Some(at(until)),
        }
    }

    const MARGIN: Duration = Duration::from_secs(1);

    #[test]
    fn leads_only_while_both_the_lease_and_the_lock_manager_say_so() {
        let obs = held_by("me", 15);
        assert_eq!(
            decide(&obs, "me", true, at(10), MARGIN),
            (Leadership::Leader, Some(at(14)))
        );
        // The lock manager has not confirmed (or has seen another holder).
        assert_eq!(decide(&obs, "me", false, at(10), MARGIN).0, Leadership::Unknown);
        // No renewal seen before the margin: lost, although the lock manager still believes it holds the lock.
        assert_eq!(decide(&obs, "me", true, at(14), MARGIN), (Leadership::Unknown, None));
        assert_eq!(decide(&obs, "me", true, at(20), MARGIN).0, Leadership::Unknown);
        // The lock manager believes it holds the lock, the Lease names someone else: not a leader.
        assert_eq!(
            decide(&held_by("other", 15), "me", true, at(10), MARGIN).0,
            Leadership::Follower { holder: "other".into() }
        );
    }

    #[test]
    fn follows_a_current_holder_and_knows_nothing_of_an_expired_or_missing_one() {
        let obs = held_by("other", 15);
        assert_eq!(
            decide(&obs, "me", false, at(3), MARGIN),
            (Leadership::Follower { holder: "other".into() }, Some(at(15)))
        );
        assert_eq!(decide(&obs, "me", false, at(15), MARGIN), (Leadership::Unknown, None));
        assert_eq!(
            decide(&Observed::default(), "me", false, at(3), MARGIN).0,
            Leadership::Unknown
        );
        let no_renewal = Observed {
            holder: Some("other".into()),
            valid_until: None,
        };
        assert_eq!(decide(&no_renewal, "me", false, at(3), MARGIN).0, Leadership::Unknown);
        assert!(Leadership::Follower { holder: "x".into() }.is_known());
        assert!(!Leadership::Unknown.is_known());
        assert!(Leadership::Leader.is_leader() && Leadership::Leader.is_known());
    }

    #[test]
    fn a_release_is_another_holder_letting_go() {
        let free = Observed::default();
        assert!(released(&held_by("other", 15), &free, "me"));
        assert!(!released(&held_by("me", 15), &free, "me"));
        assert!(!released(&free, &free, "me"));
        assert!(!released(&held_by("other", 15), &held_by("other", 25), "me"));
        assert!(!released(&held_by("other", 15), &held_by("me", 25), "me"));
    }

    #[test]
    fn observed_from_a_lease() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "keyward"},
            "spec": {"holderIdentity": "pod-a", "renewTime": "2026-01-02T03:04:05.000000Z", "leaseDurationSeconds": 15}
        }))
        .unwrap();
        let obs = Observed::from_lease(&lease);
        assert_eq!(obs.holder.as_deref(), Some("pod-a"));
        let renewed: SystemTime = "2026-01-02T03:04:05Z".parse::<jiff::Timestamp>().unwrap().into();
        assert_eq!(obs.valid_until, Some(renewed + Duration::from_secs(15)));
        // A released Lease (the lock manager nulls the fields) and an empty holder.
        let empty: Lease =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "k"}, "spec": {"holderIdentity": ""}}))
                .unwrap();
        assert_eq!(Observed::from_lease(&empty), Observed::default());
    }

    #[test]
    fn config_validation_and_derived_periods() {
        let c = LeaderConfig::new("keyward", "ns", "me", 15, None).unwrap();
        assert_eq!(c.grace, Duration::from_secs(5));
        assert_eq!(c.margin(), Duration::from_millis(2500));
        assert_eq!(c.retry(), Duration::from_secs(1));
        let short = LeaderConfig::new("keyward", "ns", "me", 2, None).unwrap();
        assert_eq!(short.grace, Duration::from_secs(1));
        assert_eq!(short.margin(), Duration::from_millis(500));
        assert!(short.margin() < short.grace);
        for (duration, grace) in [(1, None), (0, None), (5, Some(5)), (5, Some(0)), (5, Some(9))] {
            let e = LeaderConfig::new("keyward", "ns", "me", duration, grace).unwrap_err();
            assert_eq!(e.category(), "invalid_config");
        }
        assert!(LeaderConfig::new("", "ns", "me", 15, None).is_err());
    }

    #[test]
    fn identity_is_the_pod_name_or_host_and_pid() {
        let id = identity();
        match std::env::var("POD_NAME") {
            Ok(pod) if !pod.is_empty() => assert_eq!(id, pod),
            _ => assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}"),
        }
    }
}
