//! The restart planner: which workloads to restart, when, and how many at once. A state machine without I/O;
//! time comes in as `jiff::Timestamp` so that tests are deterministic and windows can use wall-clock zones.
//!
//! The controller drives it:
//! - `desire(w, hash, now)` whenever a workload's desired `keyward.dev/secrets-hash` differs from the one on
//!   its pod template; `cancel(w)` when the workload goes away or opts out;
//! - `next(now)` after every event and at `wake_at`: it returns the restarts to start now (the caller patches
//!   the annotation) and when to call again, so nobody polls;
//! - `rollout_finished(w, ok)` when the rollout it started is complete or has failed.
//!
//! Coalescing: the debounce window runs from the moment a workload FIRST became pending and is not extended
//! by later changes; a newer hash just replaces the pending one. So several Secret changes within the window
//! give one restart with the final hash, and a Secret that changes continuously cannot postpone a restart
//! forever (it starts at most one debounce after the first change). A change that arrives while the
//! workload's own rollout is running queues a new restart, started once that rollout finishes.
//!
//! Nothing here needs persisting: pending restarts are hash mismatches, so after a process restart the caller
//! re-desires them (their debounce starts again, harmlessly). Only the memory of failed hashes is lost, which
//! costs at most one retry per failed hash per process restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::discovery::WorkloadRef;
use super::window::{RestartWindow, RestartWindowSpec, WindowError, any_open, next_opening};

/// Limits and windows.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// How long to wait after the first change before restarting, to coalesce changes that come together.
    pub debounce: Duration,
    /// Rollouts started by keyward and not yet finished, cluster-wide.
    pub max_in_flight: usize,
    /// The same, per namespace.
    pub max_in_flight_per_namespace: usize,
    /// When restarts may start; empty means at any time.
    pub windows: Vec<RestartWindow>,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            debounce: Duration::from_secs(10),
            max_in_flight: 5,
            max_in_flight_per_namespace: 2,
            windows: Vec::new(),
        }
    }
}

/// Why a planner configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlannerError {
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("restart window {index}: {source}")]
    Window {
        index: usize,
        #[source]
        source: WindowError,
    },
}

impl PlannerError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            PlannerError::ZeroLimit(_) => "invalid_restart_limit",
            PlannerError::Window { source, .. } => source.category(),
        }
    }
}

/// Parses and validates restart windows, naming the first bad one by its position.
pub fn parse_windows(specs: &[RestartWindowSpec]) -> Result<Vec<RestartWindow>, PlannerError> {
    specs
        .iter()
        .enumerate()
        .map(|(index, s)| RestartWindow::parse(s).map_err(|source| PlannerError::Window { index, source }))
        .collect()
}

/// What `next` decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Restarts to start now, in FIFO order, with the hash to set on each pod template.
    pub start: Vec<(WorkloadRef, String)>,
    /// When to call `next` again (the earliest debounce end or window opening), if any restart waits on time.
    /// Restarts waiting only for a free slot need no timer: `rollout_finished` frees it.
    pub wake_at: Option<Timestamp>,
}

/// What `desire` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// A new pending restart; its debounce starts now.
    Queued,
    /// The pending restart now targets this hash; its debounce is unchanged.
    Replaced,
    /// The pending restart already targets this hash.
    Unchanged,
    /// A rollout to this hash is already running; any other pending restart was dropped.
    Rolling,
    /// A rollout to this hash failed before; it is not retried (see [`Planner::rollout_finished`]).
    HeldFailed,
}

/// A restart waiting to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRestart<'a> {
    pub workload: &'a WorkloadRef,
    pub hash: &'a str,
    /// When it became pending (FIFO order).
    pub since: Timestamp,
    /// When its debounce ends.
    pub ready_at: Timestamp,
}

/// A rollout keyward started and has not seen finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightRestart<'a> {
    pub workload: &'a WorkloadRef,
    pub hash: &'a str,
    pub started: Timestamp,
}

/// Everything the planner knows about one workload, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStatus<'a> {
    pub pending: Option<&'a str>,
    pub in_flight: Option<&'a str>,
    /// The hash whose rollout failed last, until one succeeds.
    pub failed: Option<&'a str>,
}

#[derive(Debug, Default)]
struct WorkloadPlan {
    pending: Option<Pending>,
    in_flight: Option<InFlight>,
    failed: Option<String>,
}

impl WorkloadPlan {
    fn is_empty(&self) -> bool {
        self.pending.is_none() && self.in_flight.is_none() && self.failed.is_none()
    }
}

#[derive(Debug)]
struct Pending {
    hash: String,
    since: Timestamp,
    seq: u64,
    ready_at: Timestamp,
}

#[derive(Debug)]
struct InFlight {
    hash: String,
    started: Timestamp,
}

/// FIFO key: when the debounce ends (the time it became pending plus a constant, so the same order), then
/// arrival order among equal times. Keeping the end in the key lets `next` decide without other lookups.
type QueueKey = (Timestamp, u64, WorkloadRef);

/// The restart planner. See the module documentation.
#[derive(Debug)]
pub struct Planner {
    config: PlannerConfig,
    seq: u64,
    /// Only workloads with something pending, running or failed.
    states: BTreeMap<WorkloadRef, WorkloadPlan>,
    queue: BTreeSet<QueueKey>,
    in_flight: usize,
    in_flight_by_namespace: BTreeMap<Arc<str>, usize>,
}

impl Planner {
    pub fn new(config: PlannerConfig) -> Result<Self, PlannerError> {
        if config.max_in_flight == 0 {
            return Err(PlannerError::ZeroLimit("maxInFlight"));
        }
        if config.max_in_flight_per_namespace == 0 {
            return Err(PlannerError::ZeroLimit("maxInFlightPerNamespace"));
        }
        Ok(Planner {
            config,
            seq: 0,
            states: BTreeMap::new(),
            queue: BTreeSet::new(),
            in_flight: 0,
            in_flight_by_namespace: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// The workload should carry `hash` on its pod template (and does not yet).
    pub fn desire(&mut self, workload: &WorkloadRef, hash: &str, now: Timestamp) -> Desired {
        let state = self.states.entry(workload.clone()).or_default();
        let held = if state.in_flight.as_ref().is_some_and(|f| f.hash == hash) {
            Some(Desired::Rolling)
        } else if state.failed.as_deref() == Some(hash) {
            Some(Desired::HeldFailed)
        } else {
            None
        };
        if let Some(outcome) = held {
            // The latest wish is what is rolling (or held), so an older pending one is moot.
            if let Some(p) = state.pending.take() {
                self.queue.remove(&(p.ready_at, p.seq, workload.clone()));
            }
            return outcome;
        }
        match &mut state.pending {
            Some(p) if p.hash == hash => Desired::Unchanged,
            Some(p) => {
                p.hash = hash.to_string();
                Desired::Replaced
            }
            None => {
                self.seq += 1;
                let ready_at = now.saturating_add(self.config.debounce).unwrap_or(Timestamp::MAX);
                state.pending = Some(Pending {
                    hash: hash.to_string(),
                    since: now,
                    seq: self.seq,
                    ready_at,
                });
                self.queue.insert((ready_at, self.seq, workload.clone()));
                Desired::Queued
            }
        }
    }

    /// The rollout started for `workload` is complete (`ok`) or has failed. A failed hash is remembered and
    /// not desired again, so that a controller which rolls back to the last good hash does not loop; a new
    /// hash, a successful rollout or `cancel` clears it. Returns whether a rollout was in flight.
    pub fn rollout_finished(&mut self, workload: &WorkloadRef, ok: bool) -> bool {
        let Some(state) = self.states.get_mut(workload) else {
            return false;
        };
        let Some(done) = state.in_flight.take() else {
            return false;
        };
        state.failed = (!ok).then_some(done.hash);
        if state.is_empty() {
            self.states.remove(workload);
        }
        self.release_slot(&workload.namespace);
        true
    }

    /// The workload already carries the hash it was waiting for (another writer got there first, e.g. an
    /// adoption seen late): its pending restart is dropped; a rollout in flight and failure memory stay.
    /// Returns whether a restart was pending.
    pub fn satisfied(&mut self, workload: &WorkloadRef) -> bool {
        let Some(state) = self.states.get_mut(workload) else {
            return false;
        };
        let Some(p) = state.pending.take() else {
            return false;
        };
        self.queue.remove(&(p.ready_at, p.seq, workload.clone()));
        if state.is_empty() {
            self.states.remove(workload);
        }
        true
    }

    /// Forgets the workload: its pending restart, its failure memory and its slot if a rollout was in flight
    /// (for a deleted or opted-out workload, or a start that failed and will be re-desired). Returns whether
    /// anything was known.
    pub fn cancel(&mut self, workload: &WorkloadRef) -> bool {
        let Some(state) = self.states.remove(workload) else {
            return false;
        };
        if let Some(p) = state.pending {
            self.queue.remove(&(p.ready_at, p.seq, workload.clone()));
        }
        if state.in_flight.is_some() {
            self.release_slot(&workload.namespace);
        }
        true
    }

    /// Starts what may start at `now` and says when to call again. Started restarts count as in flight
    /// until `rollout_finished` or `cancel`.
    ///
    /// Order is FIFO by the time a restart became pending. A restart is skipped (not blocking the ones behind
    /// it) while its namespace is at its limit or its workload is still rolling; the scan stops at the global
    /// limit or at the first restart still in its debounce, since every later one became pending later.
    pub fn next(&mut self, now: Timestamp) -> Plan {
        let mut plan = Plan::default();
        let Some(&(first_ready_at, _, _)) = self.queue.first() else {
            return plan;
        };
        let windows = &self.config.windows;
        if !any_open(windows, now) {
            plan.wake_at = next_opening(windows, first_ready_at.max(now));
            return plan;
        }
        let mut starting: Vec<QueueKey> = Vec::new();
        for key in &self.queue {
            if self.in_flight + starting.len() >= self.config.max_in_flight {
                break;
            }
            let (ready_at, _, workload) = key;
            if *ready_at > now {
                plan.wake_at = next_opening(windows, *ready_at);
                break;
            }
            // Cheapest test first: a crowded namespace makes this loop walk past many of its restarts.
            let rolling = self
                .in_flight_by_namespace
                .get(&*workload.namespace)
                .copied()
                .unwrap_or(0);
            if rolling >= self.config.max_in_flight_per_namespace {
                continue;
            }
            if self.states.get(workload).is_none_or(|s| s.in_flight.is_some()) {
                continue;
            }
            *self
                .in_flight_by_namespace
                .entry(workload.namespace.clone())
                .or_default() += 1;
            starting.push(key.clone());
        }
        for key in starting {
            self.queue.remove(&key);
            let (_, _, workload) = key;
            if let Some(state) = self.states.get_mut(&workload)
                && let Some(p) = state.pending.take()
            {
                self.in_flight += 1;
                state.in_flight = Some(InFlight {
                    hash: p.hash.clone(),
                    started: now,
                });
                plan.start.push((workload, p.hash));
            }
        }
        plan
    }

    /// Rollouts in flight, sorted by workload.
    pub fn in_flight(&self) -> impl Iterator<Item = InFlightRestart<'_>> {
        self.states.iter().filter_map(|(w, s)| {
            s.in_flight.as_ref().map(|f| InFlightRestart {
                workload: w,
                hash: &f.hash,
                started: f.started,
            })
        })
    }

    /// Pending restarts in the order they will be considered.
    pub fn pending(&self) -> impl Iterator<Item = PendingRestart<'_>> {
        self.queue.iter().filter_map(|(_, _, w)| {
            self.states.get_key_value(w).and_then(|(w, s)| {
                s.pending.as_ref().map(|p| PendingRestart {
                    workload: w,
                    hash: &p.hash,
                    since: p.since,
                    ready_at: p.ready_at,
                })
            })
        })
    }

    /// Workloads whose last rollout failed, with that hash, sorted.
    pub fn failed(&self) -> impl Iterator<Item = (&WorkloadRef, &str)> {
        self.states
            .iter()
            .filter_map(|(w, s)| s.failed.as_deref().map(|h| (w, h)))
    }

    /// What the planner holds for one workload.
    pub fn status(&self, workload: &WorkloadRef) -> WorkloadStatus<'_> {
        self.states
            .get(workload)
            .map_or_else(WorkloadStatus::default, |s| WorkloadStatus {
                pending: s.pending.as_ref().map(|p| p.hash.as_str()),
                in_flight: s.in_flight.as_ref().map(|f| f.hash.as_str()),
                failed: s.failed.as_deref(),
            })
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight
    }

    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }

    fn release_slot(&mut self, namespace: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.in_flight_by_namespace.get_mut(namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight_by_namespace.remove(namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::discovery::WorkloadKind;
    use crate::consumers::window::RestartWindowSpec;

    fn w(ns: &str, name: &str) -> WorkloadRef {
        WorkloadRef::new(WorkloadKind::Deployment, ns, name)
    }

    /// Seconds after a fixed Monday midnight UTC (2025-06-02).
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_748_822_400 + secs).unwrap()
    }

    fn planner() -> Planner {
        Planner::new(PlannerConfig::default()).unwrap()
    }

    fn started(plan: &Plan) -> Vec<String> {
        plan.start
            .iter()
            .map(|(w, h)| format!("{}/{}={h}", w.namespace, w.name))
            .collect()
    }

    #[test]
    fn changes_within_the_debounce_coalesce_into_one_restart_with_the_final_hash() {
        let mut p = planner();
        let a = w("ns", "a");
        assert_eq!(p.desire(&a, "h1", t(0)), Desired::Queued);
        assert_eq!(p.desire(&a, "h2", t(3)), Desired::Replaced);
        assert_eq!(p.desire(&a, "h2", t(4)), Desired::Unchanged);
        assert_eq!(p.desire(&a, "h3", t(9)), Desired::Replaced);
        let plan = p.next(t(9));
        assert!(plan.start.is_empty());
        // The debounce runs from the first change, not the last.
        assert_eq!(plan.wake_at, Some(t(10)));
        let plan = p.next(t(10));
        assert_eq!(started(&plan), ["ns/a=h3"]);
        assert_eq!(plan.wake_at, None);
        // Calling again starts nothing more.
        assert_eq!(p.next(t(11)), Plan::default());
        assert_eq!(p.desire(&a, "h3", t(12)), Desired::Rolling);
        assert!(p.rollout_finished(&a, true));
        assert!(!p.rollout_finished(&a, true));
        assert_eq!(p.status(&a), WorkloadStatus::default());
        assert!(p.states.is_empty());
    }

    #[test]
    fn a_change_during_a_rollout_waits_for_it() {
        let mut p = planner();
        let a = w("ns", "a");
        p.desire(&a, "h1", t(0));
        assert_eq!(started(&p.next(t(10))), ["ns/a=h1"]);
        assert_eq!(p.desire(&a, "h2", t(11)), Desired::Queued);
        // Debounce elapsed, but the workload is still rolling: no start, no timer (the rollout's end wakes us).
        assert_eq!(p.next(t(30)), Plan::default());
        assert_eq!(p.status(&a).pending, Some("h2"));
        assert_eq!(p.status(&a).in_flight, Some("h1"));
        p.rollout_finished(&a, true);
        assert_eq!(started(&p.next(t(31))), ["ns/a=h2"]);
    }

    #[test]
    fn desiring_the_rolling_hash_drops_a_pending_other_one() {
        let mut p = planner();
        let a = w("ns", "a");
        p.desire(&a, "h1", t(0));
        p.next(t(10));
        p.desire(&a, "h2", t(11));
        assert_eq!(p.desire(&a, "h1", t(12)), Desired::Rolling);
        assert_eq!(p.pending_count(), 0);
        p.rollout_finished(&a, true);
        assert_eq!(p.next(t(30)), Plan::default());
    }

    #[test]
    fn global_and_namespace_limits_with_fifo_that_skips_full_namespaces() {
        let mut p = planner();
        // Namespace a became pending first with four workloads, then b with three, then c with one.
        let mut secs = 0;
        for (ns, n) in [("a", 4), ("b", 3), ("c", 1)] {
            for i in 0..n {
                p.desire(&w(ns, &format!("{ns}{i}")), "h", t(secs));
                secs += 1;
            }
        }
        let plan = p.next(t(100));
        // a is full after two; b gets two; c one: five in all.
        assert_eq!(started(&plan), ["a/a0=h", "a/a1=h", "b/b0=h", "b/b1=h", "c/c0=h"]);
        assert_eq!(p.in_flight_count(), 5);
        assert_eq!(p.next(t(101)), Plan::default());
        // A slot frees in b: the oldest pending that fits is b2, though a2 is older (a is still full).
        p.rollout_finished(&w("b", "b0"), true);
        assert_eq!(started(&p.next(t(102))), ["b/b2=h"]);
        p.rollout_finished(&w("a", "a0"), false);
        assert_eq!(started(&p.next(t(103))), ["a/a2=h"]);
        assert_eq!(
            p.pending().map(|r| r.workload.name.to_string()).collect::<Vec<_>>(),
            ["a3"]
        );
        assert_eq!(
            p.in_flight().map(|r| r.workload.name.to_string()).collect::<Vec<_>>(),
            ["a1", "a2", "b1", "b2", "c0"]
        );
        assert_eq!(
            p.failed().map(|(w, h)| (w.name.to_string(), h)).collect::<Vec<_>>(),
            [("a0".to_string(), "h")]
        );
    }

    #[test]
    fn a_failed_hash_is_not_retried_but_a_new_one_is() {
        let mut p = planner();
        let a = w("ns", "a");
        p.desire(&a, "bad", t(0));
        p.next(t(10));
        p.rollout_finished(&a, false);
        assert_eq!(p.status(&a).failed, Some("bad"));
        // The controller rolled back to the last good hash and sees "bad" desired again.
        assert_eq!(p.desire(&a, "bad", t(20)), Desired::HeldFailed);
        assert_eq!(p.next(t(40)), Plan::default());
        assert_eq!(p.desire(&a, "fixed", t(41)), Desired::Queued);
        assert_eq!(started(&p.next(t(51))), ["ns/a=fixed"]);
        p.rollout_finished(&a, true);
        assert_eq!(p.status(&a).failed, None);
    }

    #[test]
    fn cancel_drops_pending_and_frees_the_slot() {
        let mut p = Planner::new(PlannerConfig {
            max_in_flight: 1,
            ..Default::default()
        })
        .unwrap();
        let (a, b, c) = (w("ns", "a"), w("other", "b"), w("ns", "c"));
        p.desire(&a, "h", t(0));
        p.desire(&b, "h", t(1));
        p.desire(&c, "h", t(2));
        assert_eq!(started(&p.next(t(20))), ["ns/a=h"]);
        assert!(p.cancel(&b));
        assert!(p.cancel(&a));
        assert!(!p.cancel(&a));
        assert_eq!(p.in_flight_count(), 0);
        assert_eq!(started(&p.next(t(21))), ["ns/c=h"]);
        assert!(p.in_flight_by_namespace.keys().all(|ns| &**ns == "ns"));
    }

    #[test]
    fn wake_at_is_the_earliest_debounce_end() {
        let mut p = Planner::new(PlannerConfig {
            debounce: Duration::from_secs(30),
            ..Default::default()
        })
        .unwrap();
        p.desire(&w("a", "1"), "h", t(0));
        p.desire(&w("b", "2"), "h", t(20));
        let plan = p.next(t(5));
        assert_eq!(
            plan,
            Plan {
                start: vec![],
                wake_at: Some(t(30))
            }
        );
        let plan = p.next(t(30));
        assert_eq!(started(&plan), ["a/1=h"]);
        assert_eq!(plan.wake_at, Some(t(50)));
        assert_eq!(p.pending().next().map(|r| (r.since, r.ready_at)), Some((t(20), t(50))));
        // Empty planner: nothing to wake for.
        assert_eq!(planner().next(t(0)), Plan::default());
    }

    #[test]
    fn windows_gate_starts_and_set_the_wake_time() {
        let windows = parse_windows(&[RestartWindowSpec {
            days: vec!["Mon".into()],
            start: "02:00".into(),
            end: "03:00".into(),
            time_zone: "UTC".into(),
        }])
        .unwrap();
        let mut p = Planner::new(PlannerConfig {
            windows,
            max_in_flight: 1,
            ..Default::default()
        })
        .unwrap();
        let (a, b) = (w("ns", "a"), w("other", "b"));
        // Monday 01:00: window opens at 02:00.
        p.desire(&a, "h", t(3600));
        let plan = p.next(t(3600));
        assert_eq!(
            plan,
            Plan {
                start: vec![],
                wake_at: Some(t(7200))
            }
        );
        assert_eq!(started(&p.next(t(7200))), ["ns/a=h"]);
        // Desired at 02:59:55: its debounce ends after the window closes, so it waits a week.
        p.desire(&b, "h", t(3 * 3600 - 5));
        p.rollout_finished(&a, true);
        let plan = p.next(t(3 * 3600 - 5));
        assert_eq!(
            plan,
            Plan {
                start: vec![],
                wake_at: Some(t(7 * 86_400 + 7200))
            }
        );
        let plan = p.next(t(3 * 3600 + 5));
        assert_eq!(
            plan,
            Plan {
                start: vec![],
                wake_at: Some(t(7 * 86_400 + 7200))
            }
        );
        assert_eq!(started(&p.next(t(7 * 86_400 + 7200))), ["other/b=h"]);
    }

    #[test]
    fn rollouts_continue_past_the_window_end() {
        let windows = parse_windows(&[RestartWindowSpec {
            days: vec!["Mon-Sun".into()],
            start: "00:00".into(),
            end: "01:00".into(),
            time_zone: "UTC".into(),
        }])
        .unwrap();
        let mut p = Planner::new(PlannerConfig {
            windows,
            ..Default::default()
        })
        .unwrap();
        let a = w("ns", "a");
        p.desire(&a, "h1", t(0));
        assert_eq!(started(&p.next(t(10))), ["ns/a=h1"]);
        // Window closed; the rollout is still in flight and finishing it is always accepted.
        assert_eq!(p.in_flight().count(), 1);
        assert!(p.rollout_finished(&a, true));
    }

    #[test]
    fn config_errors() {
        let e = Planner::new(PlannerConfig {
            max_in_flight: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "maxInFlight must be at least 1");
        assert_eq!(e.category(), "invalid_restart_limit");
        let e = Planner::new(PlannerConfig {
            max_in_flight_per_namespace: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("maxInFlightPerNamespace"));
        let good = RestartWindowSpec {
            days: vec!["Mon".into()],
            start: "01:00".into(),
            end: "02:00".into(),
            time_zone: "UTC".into(),
        };
        let bad = RestartWindowSpec {
            time_zone: "Europe/Atlantis".into(),
            ..good.clone()
        };
        let e = parse_windows(&[good, bad]).unwrap_err();
        assert_eq!(e.category(), "unknown_time_zone");
        assert_eq!(
            e.to_string(),
            "restart window 1: unknown time zone \"Europe/Atlantis\": use an IANA name such as Europe/Berlin or UTC"
        );
    }

    #[test]
    fn a_fresh_planner_rebuilds_the_same_plan_from_re_desires() {
        let run = || {
            let mut p = planner();
            for (i, ns) in ["a", "b", "a", "c", "a"].iter().enumerate() {
                p.desire(&w(ns, &format!("w{i}")), "h", t(0));
            }
            p.next(t(10))
        };
        assert_eq!(run(), run());
        assert_eq!(started(&run()), ["a/w0=h", "b/w1=h", "a/w2=h", "c/w3=h"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Desire { ns: u8, w: u8, hash: u8 },
            Advance(u8),
            Next,
            Finish { pick: u8, ok: bool },
            Cancel { ns: u8, w: u8 },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0u8..3, 0u8..5, 0u8..4).prop_map(|(ns, w, hash)| Op::Desire { ns, w, hash }),
                3 => (0u8..15).prop_map(Op::Advance),
                4 => Just(Op::Next),
                3 => (any::<u8>(), proptest::bool::weighted(0.9)).prop_map(|(pick, ok)| Op::Finish { pick, ok }),
                1 => (0u8..3, 0u8..5).prop_map(|(ns, w)| Op::Cancel { ns, w }),
            ]
        }

        fn config() -> impl Strategy<Value = PlannerConfig> {
            (1usize..6, 1usize..4, 0u64..20).prop_map(|(global, per_ns, debounce)| PlannerConfig {
                debounce: Duration::from_secs(debounce),
                max_in_flight: global,
                max_in_flight_per_namespace: per_ns,
                windows: Vec::new(),
            })
        }

        fn wl(ns: u8, w: u8) -> WorkloadRef {
            super::w(&format!("ns{ns}"), &format!("w{w}"))
        }

        /// Counts what is in flight per namespace and checks the limits.
        fn check_limits(p: &Planner) -> Result<(), TestCaseError> {
            let mut per_ns: BTreeMap<String, usize> = BTreeMap::new();
            for r in p.in_flight() {
                *per_ns.entry(r.workload.namespace.to_string()).or_default() += 1;
            }
            let total: usize = per_ns.values().sum();
            prop_assert!(total <= p.config.max_in_flight);
            prop_assert_eq!(total, p.in_flight_count());
            for (ns, n) in per_ns {
                prop_assert!(n <= p.config.max_in_flight_per_namespace, "{} has {}", ns, n);
                prop_assert_eq!(p.in_flight_by_namespace.get(ns.as_str()).copied(), Some(n));
            }
            Ok(())
        }

        /// Runs `next` until nothing is pending, finishing every started rollout successfully; returns the
        /// starts in order.
        fn drain(p: &mut Planner, now: &mut Timestamp) -> Result<Vec<(WorkloadRef, String)>, TestCaseError> {
            let mut starts = Vec::new();
            for _ in 0..10_000 {
                let plan = p.next(*now);
                check_limits(p)?;
                for (w, _) in &plan.start {
                    prop_assert!(p.rollout_finished(w, true));
                }
                let progressed = !plan.start.is_empty();
                starts.extend(plan.start);
                if p.pending_count() == 0 {
                    return Ok(starts);
                }
                match plan.wake_at {
                    Some(at) => {
                        prop_assert!(at > *now, "wake_at must be in the future");
                        *now = at;
                    }
                    None => prop_assert!(progressed, "stuck: pending without a start or a wake time"),
                }
            }
            Err(TestCaseError::fail("did not drain"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Limits hold after every step of any interleaving, and draining restarts every workload to its
            /// final desired hash, never starting the same hash twice in a row for one workload.
            #[test]
            fn limits_hold_and_every_final_hash_starts(config in config(), ops in proptest::collection::vec(op(), 0..80)) {
                let mut p = Planner::new(config).unwrap();
                let mut now = t(0);
                let mut last_started: BTreeMap<WorkloadRef, String> = BTreeMap::new();
                // What each workload was last asked for, unless that ask was dropped (cancel) or held (failed).
                let mut wanted: BTreeMap<WorkloadRef, String> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Desire { ns, w, hash } => {
                            let w = wl(ns, w);
                            let hash = format!("h{hash}");
                            let on_template = last_started.get(&w);
                            // The caller only desires a hash that differs from the pod template.
                            if on_template == Some(&hash) {
                                wanted.remove(&w);
                                // The template already has it, so a pending other hash is stale: while that
                                // rollout runs, re-desiring it says so; otherwise the controller cancels.
                                if p.status(&w).in_flight.is_some() {
                                    prop_assert_eq!(p.desire(&w, &hash, now), Desired::Rolling);
                                } else if p.status(&w).pending.is_some() {
                                    p.cancel(&w);
                                }
                                continue;
                            }
                            match p.desire(&w, &hash, now) {
                                Desired::HeldFailed | Desired::Rolling => { wanted.remove(&w); }
                                _ => { wanted.insert(w, hash); }
                            }
                        }
                        Op::Advance(s) => now = now.saturating_add(Duration::from_secs(s.into())).unwrap(),
                        Op::Next => {
                            for (w, h) in p.next(now).start {
                                prop_assert_ne!(last_started.get(&w), Some(&h), "{} restarted twice to {}", w, h);
                                if wanted.get(&w) == Some(&h) { wanted.remove(&w); }
                                last_started.insert(w, h);
                            }
                        }
                        Op::Finish { pick, ok } => {
                            let rolling: Vec<WorkloadRef> = p.in_flight().map(|r| r.workload.clone()).collect();
                            if !rolling.is_empty() {
                                prop_assert!(p.rollout_finished(&rolling[pick as usize % rolling.len()], ok));
                            }
                        }
                        Op::Cancel { ns, w } => {
                            let w = wl(ns, w);
                            p.cancel(&w);
                            wanted.remove(&w);
                        }
                    }
                    check_limits(&p)?;
                }
                // Finish what runs, then drain.
                let rolling: Vec<WorkloadRef> = p.in_flight().map(|r| r.workload.clone()).collect();
                for w in rolling {
                    p.rollout_finished(&w, true);
                }
                for (w, h) in drain(&mut p, &mut now)? {
                    prop_assert_ne!(last_started.get(&w), Some(&h), "{} restarted twice to {}", w, h);
                    if wanted.get(&w) == Some(&h) { wanted.remove(&w); }
                    last_started.insert(w, h);
                }
                prop_assert!(wanted.is_empty(), "never started: {:?}", wanted);
                prop_assert_eq!(p.pending_count(), 0);
            }

            /// Desires that all fall within one debounce window give exactly one start per workload, with
            /// its final hash.
            #[test]
            fn one_restart_per_workload_per_burst(
                config in config(),
                burst in proptest::collection::vec((0u8..3, 0u8..5, 0u8..4, 0u64..1000), 1..60),
            ) {
                let debounce_ms = config.debounce.as_millis() as u64;
                let mut p = Planner::new(config).unwrap();
                let mut events: Vec<(u64, WorkloadRef, String)> = burst
                    .into_iter()
                    .map(|(ns, w, h, at)| (if debounce_ms == 0 { 0 } else { at * debounce_ms / 1000 }, wl(ns, w), format!("h{h}")))
                    .collect();
                events.sort_by_key(|e| e.0);
                // Every change falls within one debounce of the very first one.
                let mut finals: BTreeMap<WorkloadRef, String> = BTreeMap::new();
                for (at, w, h) in &events {
                    p.desire(w, h, t(0).saturating_add(Duration::from_millis(*at)).unwrap());
                    finals.insert(w.clone(), h.clone());
                }
                let mut now = t(0).saturating_add(Duration::from_millis(events[events.len() - 1].0)).unwrap();
                let starts = drain(&mut p, &mut now)?;
                let mut seen: BTreeMap<WorkloadRef, String> = BTreeMap::new();
                for (w, h) in starts {
                    prop_assert!(seen.insert(w.clone(), h).is_none(), "{} started twice", w);
                }
                prop_assert_eq!(seen, finals);
            }

            /// Within a namespace restarts start in the order they became pending; and a plan that leaves free
            /// global slots has started every ready restart whose namespace had room.
            #[test]
            fn fifo_and_no_head_of_line_blocking(
                config in config(),
                desires in proptest::collection::vec((0u8..3, 0u8..8, 0u64..30), 1..40),
                finish_every in 1usize..4,
            ) {
                let mut p = Planner::new(config.clone()).unwrap();
                let mut order: Vec<WorkloadRef> = Vec::new();
                let mut desires = desires;
                desires.sort_by_key(|d| d.2);
                for (ns, w, at) in desires {
                    let w = wl(ns, w);
                    if p.desire(&w, "h", t(at as i64)) == Desired::Queued {
                        order.push(w);
                    }
                }
                let mut now = t(30);
                let mut started: Vec<WorkloadRef> = Vec::new();
                let mut rounds = 0;
                while p.pending_count() > 0 && rounds < 1000 {
                    rounds += 1;
                    let plan = p.next(now);
                    started.extend(plan.start.iter().map(|(w, _)| w.clone()));
                    if p.in_flight_count() < config.max_in_flight {
                        // Every remaining ready pending restart is in a namespace at its limit.
                        for r in p.pending() {
                            if r.ready_at <= now {
                                let rolling = p.in_flight().filter(|f| f.workload.namespace == r.workload.namespace).count();
                                prop_assert!(rolling >= config.max_in_flight_per_namespace, "{} could have started", r.workload);
                            }
                        }
                    }
                    // Finish some rollouts, oldest first.
                    let rolling: Vec<WorkloadRef> = p.in_flight().map(|r| r.workload.clone()).collect();
                    for w in rolling.iter().take(finish_every) {
                        p.rollout_finished(w, true);
                    }
                    now = plan.wake_at.unwrap_or(now).max(now.saturating_add(Duration::from_secs(1)).unwrap());
                }
                prop_assert_eq!(p.pending_count(), 0);
                for ns in 0..3u8 {
                    let ns = format!("ns{ns}");
                    let want: Vec<&WorkloadRef> = order.iter().filter(|w| *w.namespace == *ns).collect();
                    let got: Vec<&WorkloadRef> = started.iter().filter(|w| *w.namespace == *ns).collect();
                    prop_assert_eq!(want, got);
                }
                // Globally, a restart started before an older one only when the older one's namespace was full;
                // with a single namespace limit at least the global limit, the global order is exact FIFO.
                if config.max_in_flight_per_namespace >= config.max_in_flight {
                    prop_assert_eq!(&order, &started);
                }
            }
        }
    }
}
