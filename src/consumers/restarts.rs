//! Restart decisions, without I/O: from what the restart task observes (workloads and their rollouts, the
//! value hashes of the Secrets keyward manages, each ManagedSecret's consumer policy) to the steps it must carry
//! out (adopt a workload, restart it, tell about it, write `status.consumers`), and what an outcome means. The
//! task reports back whether a restart could be started. Time comes in as `jiff::Timestamp`.
//!
//! Idempotent by content: the hash on a pod template names the versions it runs, so a restart is wanted only
//! when the hash keyward wants differs from the one there. Nothing is remembered across restarts of keyward:
//! pending restarts are hash mismatches, found again on start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::discovery::{WorkloadRef, optional_secret_references};
use super::hash::secrets_hash;
use super::index::ConsumerIndex;
use super::planner::Planner;
use crate::api::{ConsumerPolicy, ConsumerState, ConsumerStatus, Consumers, WorkloadKind};

/// Failure notes are the workload controller's words; keep them short in status.
const MAX_NOTE: usize = 300;

/// How a rollout is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// The controller has not caught up, or Pods are still being replaced.
    InProgress,
    /// Every replica runs the current template and is available.
    Complete,
    /// The workload's controller gave up (e.g. ProgressDeadlineExceeded).
    Failed(String),
    /// The controller replaces Pods only when someone deletes them (StatefulSet `updateStrategy: OnDelete`)
    /// and some still run an older template: it will not go on by itself. Says how far it got.
    Manual(String),
}

/// What one ManagedSecret keeps in a Secret keyward manages: which one, and the hash of the values it holds
/// there. A Secret may hold the keys of several ManagedSecrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub managed_secret: String,
    pub value_hash: String,
    /// The data key holding the replaced value during a rotation's grace period, while it exists.
    pub previous_key: Option<String>,
    /// When the Secret was created (`metadata.creationTimestamp`): Pods that started earlier never saw it.
    pub created: Option<Timestamp>,
}

/// What the restart task sees.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A workload as it is now.
    Workload {
        workload: WorkloadRef,
        template: Box<PodTemplateSpec>,
        opted_out: bool,
        /// The restart hash on its pod template, or else the one keyward recorded when it adopted it.
        current_hash: Option<String>,
        rollout: Rollout,
        /// When the workload was created (`metadata.creationTimestamp`).
        created: Option<Timestamp>,
    },
    WorkloadGone(WorkloadRef),
    /// A Secret labelled as keyward's: each ManagedSecret that fills it, with its value hash, sorted by name
    /// (empty: gone, or no longer keyward's).
    Secret {
        namespace: String,
        name: String,
        managed: Vec<Managed>,
    },
    /// A ManagedSecret's consumer policy (None: the ManagedSecret is gone).
    Policy {
        namespace: String,
        name: String,
        consumers: Option<Consumers>,
        /// Its `status.consumers` as the object shows it (None: not known): what an earlier writer (this
        /// process before a restart, or the previous leader) reported, so that the same report is not written
        /// again.
        reported: Option<Vec<ConsumerStatus>>,
    },
}

/// How a restart ended, as counted (`keyward_restarts_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartResult {
    Triggered,
    Success,
    Failure,
}

impl RestartResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartResult::Triggered => "triggered",
            RestartResult::Success => "success",
            RestartResult::Failure => "failure",
        }
    }
}

/// Something the restart task must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Record `hash` on the workload's own metadata: it runs today's values, so no rollout (adoption).
    Adopt { workload: WorkloadRef, hash: String },
    /// Set `hash` on the workload's pod template, which rolls it out; then report back with
    /// [`Restarts::started`] or [`Restarts::not_started`].
    Restart { workload: WorkloadRef, hash: String },
    /// An Event on the workload.
    Event {
        workload: WorkloadRef,
        warning: bool,
        reason: &'static str,
        note: String,
    },
    /// Count a restart outcome.
    Count {
        workload: WorkloadRef,
        result: RestartResult,
    },
    /// An audit line: a restart of `workload` was triggered for ManagedSecret `managed_secret`.
    Audit {
        namespace: String,
        managed_secret: String,
        workload: String,
    },
    /// Write a ManagedSecret's `status.consumers`; then report back with [`Restarts::consumers_written`].
    WriteConsumers {
        namespace: String,
        managed_secret: String,
        consumers: Vec<ConsumerStatus>,
    },
}

/// A failed rollout, as `status.consumers` reports it.
#[derive(Debug, Clone)]
struct Failure {
    note: String,
    /// The value hash of each (managed Secret, ManagedSecret filling it) the workload consumed when its
    /// rollout failed.
    value_hashes: BTreeMap<(String, String), String>,
}

/// The restart decisions. See the module documentation.
#[derive(Debug)]
pub struct Restarts {
    index: ConsumerIndex,
    planner: Planner,
    /// The restart hash each known workload carries (None: keyward never set one).
    known: HashMap<WorkloadRef, Option<String>>,
    /// The ManagedSecrets filling each managed Secret (namespace, name), sorted by name.
    managed: HashMap<(String, String), Vec<Managed>>,
    /// The other way round: the managed Secrets each ManagedSecret (namespace, name) fills, sorted (most fill
    /// one: a Vec is a few hundred bytes per object less than a set's first node).
    fills: HashMap<(String, String), Vec<String>>,
    policies: HashMap<(String, String), Consumers>,
    /// Restarts started and not yet seen finished: the hash they set.
    rolling: BTreeMap<WorkloadRef, String>,
    failures: HashMap<WorkloadRef, Failure>,
    /// Workloads whose Pods must be deleted by hand to run their current template, with how far they got.
    manual: HashMap<WorkloadRef, String>,
    /// Managed Secrets (namespace, name) whose consumers' status may have changed.
    dirty: BTreeSet<(String, String)>,
    /// The consumer status last written per ManagedSecret, so that nothing is written twice (none: an empty one,
    /// which most objects have: not kept).
    written: HashMap<(String, String), Vec<ConsumerStatus>>,
    /// Workloads that reference Secrets with `optional: true`: when each was created, and those Secrets. A
    /// workload created no later than such a Secret has Pods that started without it (see `reconsider`).
    optional_refs: HashMap<WorkloadRef, (Timestamp, BTreeSet<String>)>,
    /// How long a rollout may take before it counts as failed (StatefulSets and DaemonSets have no deadline
    /// of their own; a stuck one must not hold a restart slot forever).
    rollout_deadline: Duration,
}

impl Restarts {
    pub fn new(planner: Planner, rollout_deadline: Duration) -> Self {
        Restarts {
            index: ConsumerIndex::new(),
            planner,
            known: HashMap::new(),
            managed: HashMap::new(),
            fills: HashMap::new(),
            policies: HashMap::new(),
            rolling: BTreeMap::new(),
            failures: HashMap::new(),
            manual: HashMap::new(),
            dirty: BTreeSet::new(),
            written: HashMap::new(),
            optional_refs: HashMap::new(),
            rollout_deadline,
        }
    }

    /// Takes in one observation; returns what to do about it now.
    pub fn observe(&mut self, observation: Observation, now: Timestamp) -> Vec<Step> {
        let mut steps = Vec::new();
        match observation {
            Observation::Workload {
                workload: w,
                template,
                opted_out,
                current_hash,
                rollout,
                created,
            } => {
                self.index.upsert(w.clone(), &template, opted_out);
                let optional = optional_secret_references(&template);
                match created {
                    Some(at) if !optional.is_empty() => self.optional_refs.insert(w.clone(), (at, optional)),
                    _ => self.optional_refs.remove(&w),
                };
                if let Some(started) = self.rolling.get(&w).cloned()
                    && current_hash.as_deref() == Some(started.as_str())
                {
                    match &rollout {
                        Rollout::Complete => {
                            let note = match w.kind {
                                WorkloadKind::CronJob => {
                                    "its next Jobs run the new template; Jobs already running are left alone"
                                }
                                _ => "rollout complete",
                            };
                            self.finished(&w, true, note, &mut steps);
                        }
                        Rollout::Failed(why) => self.finished(&w, false, why, &mut steps),
                        // Started as far as it goes without someone deleting Pods: the restart slot is free
                        // again, no deadline runs, and nothing failed (see `await_manual`).
                        Rollout::Manual(_) => {
                            self.rolling.remove(&w);
                            self.planner.rollout_finished(&w, true);
                        }
                        Rollout::InProgress => {}
                    }
                }
                if !self.rolling.contains_key(&w) {
                    self.await_manual(&w, &rollout, &mut steps);
                }
                self.known.insert(w.clone(), current_hash);
                self.touch(&w);
                self.reconsider(&w, now, &mut steps);
            }
            Observation::WorkloadGone(w) => {
                self.index.remove(&w);
                self.known.remove(&w);
                self.optional_refs.remove(&w);
                self.manual.remove(&w);
                self.failures.remove(&w);
                if self.rolling.remove(&w).is_some() {
                    self.planner.rollout_finished(&w, false);
                }
                self.planner.cancel(&w);
            }
            Observation::Secret {
                namespace,
                name,
                managed,
            } => {
                let key = (namespace.clone(), name.clone());
                let before = if managed.is_empty() {
                    self.managed.remove(&key)
                } else {
                    self.managed.insert(key, managed.clone())
                };
                let changed = before.as_ref() != (!managed.is_empty()).then_some(&managed);
                if changed {
                    self.refill(&namespace, &name, before.as_deref().unwrap_or_default(), &managed);
                }
                if changed {
                    self.dirty.insert((namespace.clone(), name.clone()));
                    for w in self.index.consumers_of(&namespace, &name) {
                        self.reconsider(&w, now, &mut steps);
                    }
                }
            }
            Observation::Policy {
                namespace,
                name,
                consumers,
                reported,
            } => {
                let key = (namespace.clone(), name.clone());
                // Most events of a ManagedSecret (its own status writes) leave its policy as it was: nothing to
                // look at again (and the look below goes over every managed Secret).
                let unchanged = self.policies.get(&key) == consumers.as_ref();
                match consumers {
                    Some(c) => {
                        self.policies.insert(key.clone(), c);
                        // What this process wrote last stays the reference: the object may not show it yet.
                        if let Some(r) = reported.filter(|r| !r.is_empty()) {
                            self.written.entry(key).or_insert(r);
                        }
                    }
                    None => {
                        self.policies.remove(&key);
                        self.written.remove(&key);
                    }
                }
                if unchanged {
                    return steps;
                }
                let secrets: Vec<String> = self
                    .fills
                    .get(&(namespace.clone(), name.clone()))
                    .map(|s| s.to_vec())
                    .unwrap_or_default();
                for s in secrets {
                    self.dirty.insert((namespace.clone(), s.clone()));
                    for w in self.index.consumers_of(&namespace, &s) {
                        self.reconsider(&w, now, &mut steps);
                    }
                }
            }
        }
        steps
    }

    /// Keeps `fills` in step with a managed Secret's fillers changing from `before` to `after`.
    fn refill(&mut self, namespace: &str, secret: &str, before: &[Managed], after: &[Managed]) {
        for m in before {
            let key = (namespace.to_string(), m.managed_secret.clone());
            if let Some(set) = self.fills.get_mut(&key) {
                if let Ok(i) = set.binary_search_by(|s| s.as_str().cmp(secret)) {
                    set.remove(i);
                }
                if set.is_empty() {
                    self.fills.remove(&key);
                }
            }
        }
        for m in after {
            let set = self
                .fills
                .entry((namespace.to_string(), m.managed_secret.clone()))
                .or_default();
            if let Err(i) = set.binary_search_by(|s| s.as_str().cmp(secret)) {
                set.insert(i, secret.to_string());
            }
        }
    }

    /// Fails rollouts that ran past the deadline and starts what the planner allows now. Returns the steps
    /// (Restart steps among them) and when to call again.
    pub fn due(&mut self, now: Timestamp) -> (Vec<Step>, Option<Timestamp>) {
        let mut steps = Vec::new();
        let deadline = self.expire(now, &mut steps);
        let plan = self.planner.next(now);
        let wake_at = match (plan.wake_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (workload, hash) in plan.start {
            steps.push(Step::Restart { workload, hash });
        }
        (steps, wake_at)
    }

    /// A Restart step was carried out: the workload now rolls towards `hash`.
    pub fn started(&mut self, w: &WorkloadRef, hash: &str) -> Vec<Step> {
        let mut steps = Vec::new();
        self.record(w, RestartResult::Triggered, &mut steps);
        self.rolling.insert(w.clone(), hash.to_string());
        self.failures.remove(w);
        self.manual.remove(w);
        self.touch(w);
        steps.push(Step::Event {
            workload: w.clone(),
            warning: false,
            reason: "RestartTriggered",
            note: format!("{w}: Secrets it consumes changed"),
        });
        steps
    }

    /// A Restart step could not be carried out (the hash could not be set).
    pub fn not_started(&mut self, w: &WorkloadRef) -> Vec<Step> {
        let mut steps = Vec::new();
        self.record(w, RestartResult::Failure, &mut steps);
        self.planner.rollout_finished(w, false);
        steps.push(Step::Event {
            workload: w.clone(),
            warning: true,
            reason: "RestartFailed",
            note: format!("{w}: could not set the restart hash"),
        });
        steps
    }

    /// `status.consumers` of every ManagedSecret whose consumers changed, where it differs from what was last
    /// written.
    pub fn consumer_status(&mut self) -> Vec<Step> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut steps = Vec::new();
        let each = dirty.into_iter().flat_map(|(ns, secret)| {
            let filling = self
                .managed
                .get(&(ns.clone(), secret.clone()))
                .cloned()
                .unwrap_or_default();
            filling.into_iter().map(move |m| (ns.clone(), secret.clone(), m))
        });
        let each: Vec<(String, String, Managed)> = each.collect();
        for (ns, secret, m) in each {
            let mut consumers = Vec::new();
            for w in self.index.consumers_of(&ns, &secret) {
                if !self.included(&w, &m) {
                    continue;
                }
                let current = self.known.get(&w).cloned().flatten();
                let planned = self.planner.status(&w);
                let state = if self.rolling.contains_key(&w) {
                    ConsumerState::Rolling
                } else if planned.failed.is_some() || (planned.pending.is_none() && self.failures.contains_key(&w)) {
                    // (A failure after a manual wait has no failed restart in the planner: none was in flight.)
                    ConsumerState::Failed
                } else if planned.pending.is_some() || current != self.desired(&w) {
                    ConsumerState::Waiting
                } else if self.manual.contains_key(&w) {
                    ConsumerState::ManualRestartNeeded
                } else {
                    ConsumerState::Restarted
                };
                let failure = (state == ConsumerState::Failed)
                    .then(|| self.failures.get(&w))
                    .flatten();
                let manual = (state == ConsumerState::ManualRestartNeeded)
                    .then(|| self.manual.get(&w).cloned())
                    .flatten();
                consumers.push(ConsumerStatus {
                    kind: w.kind,
                    name: w.name.to_string(),
                    secrets_hash: current,
                    state,
                    message: failure.map(|f| f.note.clone()).or(manual),
                    failed_value_hash: failure
                        .and_then(|f| f.value_hashes.get(&(secret.clone(), m.managed_secret.clone())).cloned()),
                });
            }
            let key = (ns.clone(), m.managed_secret.clone());
            // Not seen yet (its watch has not delivered it since this process started): its report may
            // already say this; seeing it marks its Secrets again.
            let written = self.written.get(&key).map_or(consumers.is_empty(), |w| *w == consumers);
            if !self.policies.contains_key(&key) || written {
                continue;
            }
            steps.push(Step::WriteConsumers {
                namespace: ns,
                managed_secret: m.managed_secret,
                consumers,
            });
        }
        steps
    }

    /// A WriteConsumers step was carried out.
    pub fn consumers_written(&mut self, namespace: &str, managed_secret: &str, consumers: Vec<ConsumerStatus>) {
        let key = (namespace.to_string(), managed_secret.to_string());
        if consumers.is_empty() {
            self.written.remove(&key);
        } else {
            self.written.insert(key, consumers);
        }
    }

    /// Counts a restart outcome; a triggered one gets an audit line per ManagedSecret whose Secret it consumes.
    fn record(&self, w: &WorkloadRef, result: RestartResult, steps: &mut Vec<Step>) {
        steps.push(Step::Count {
            workload: w.clone(),
            result,
        });
        if result != RestartResult::Triggered {
            return;
        }
        let ns = w.namespace.to_string();
        for secret in self.index.secrets_of(w) {
            for m in self
                .managed
                .get(&(ns.clone(), secret.to_string()))
                .into_iter()
                .flatten()
            {
                steps.push(Step::Audit {
                    namespace: ns.clone(),
                    managed_secret: m.managed_secret.clone(),
                    workload: format!("{}/{}", w.kind, w.name),
                });
            }
        }
    }

    /// Marks the managed Secrets `w` consumes, so their ManagedSecrets' consumer status is brought up to date.
    fn touch(&mut self, w: &WorkloadRef) {
        let ns = w.namespace.to_string();
        for secret in self.index.secrets_of(w) {
            self.dirty.insert((ns.clone(), secret.to_string()));
        }
    }

    /// Whether `w` is restarted for changes of the managed Secret `m` (policy, explicit list, opt-out).
    fn included(&self, w: &WorkloadRef, m: &Managed) -> bool {
        let policy = self.policies.get(&(w.namespace.to_string(), m.managed_secret.clone()));
        match policy.map(|p| p.policy).unwrap_or_default() {
            ConsumerPolicy::Auto => self.index.is_opted_out(w) != Some(true),
            ConsumerPolicy::None => false,
            // An explicit list overrides the workload's own opt-out.
            ConsumerPolicy::Explicit => {
                policy.is_some_and(|p| p.workloads.iter().any(|s| s.kind == w.kind && s.name == *w.name))
            }
        }
    }

    /// The restart hash keyward wants on `w`, or None when it consumes no Secret whose policy restarts it.
    fn desired(&self, w: &WorkloadRef) -> Option<String> {
        let ns = w.namespace.to_string();
        let mut entries: Vec<(String, String)> = Vec::new();
        for secret in self.index.secrets_of(w) {
            let Some(filling) = self.managed.get(&(ns.clone(), secret.to_string())) else {
                continue;
            };
            let hashes: Vec<(&str, String)> = filling
                .iter()
                .filter(|m| self.included(w, m))
                .map(|m| {
                    // Pods that see the grace-period key (envFrom, a whole-Secret volume, or by name) restart
                    // once more when it goes; pods that read only the value do not.
                    let hash = match &m.previous_key {
                        Some(k) if self.index.references_key(w, secret, k) => format!("{}+{k}", m.value_hash),
                        _ => m.value_hash.clone(),
                    };
                    (m.managed_secret.as_str(), hash)
                })
                .collect();
            match hashes.as_slice() {
                [] => {}
                // One ManagedSecret: the Secret's entry is its hash, as it has always been (an upgrade restarts
                // nothing).
                [(_, hash)] => entries.push((secret.to_string(), hash.clone())),
                // Several: one entry for the Secret, of every included ManagedSecret's hash (sorted by name), so
                // that changes of several keys together restart the workload once.
                several => {
                    let combined: Vec<String> = several.iter().map(|(ms, h)| format!("{ms}={h}")).collect();
                    entries.push((secret.to_string(), combined.join(",")));
                }
            }
        }
        if entries.is_empty() {
            return None;
        }
        Some(secrets_hash(entries.iter().map(|(a, b)| (a.as_str(), b.as_str()))))
    }

    fn reconsider(&mut self, w: &WorkloadRef, now: Timestamp, steps: &mut Vec<Step>) {
        let Some(current) = self.known.get(w) else { return };
        let Some(want) = self.desired(w) else { return };
        if current.as_deref() == Some(want.as_str()) {
            // Nothing to do, and nothing still to do: a restart desired from an older view of the workload
            // (one adoption seen before the next) would otherwise fire at the end of its debounce.
            self.planner.satisfied(w);
            return;
        }
        if self.rolling.get(w) == Some(&want) {
            return;
        }
        if current.is_none() {
            if let Some(secret) = self.started_without(w) {
                // Its Pods started before the Secret existed and run without it: adopting would leave them so
                // until the next value change. Restart it once.
                if self.planner.status(w).pending.is_none() {
                    steps.push(Step::Event {
                        workload: w.clone(),
                        warning: false,
                        reason: "StartedWithoutSecret",
                        note: format!(
                            "{w}: created before Secret {secret} existed, which it references as optional, so its \
                             Pods run without it; restarting it once"
                        ),
                    });
                }
                self.planner.desire(w, &want, now);
                return;
            }
            // Never restarted by keyward: its Pods started with today's values. Record that on the workload's
            // own metadata (no rollout), so that only later changes restart it — installing keyward must not
            // restart every consumer in the cluster.
            steps.push(Step::Adopt {
                workload: w.clone(),
                hash: want,
            });
            return;
        }
        self.planner.desire(w, &want, now);
    }

    /// Keeps track of a workload that waits for its Pods to be deleted by hand (`Rollout::Manual`): says so
    /// once when it starts waiting, and reports the end when every Pod runs the current template. keyward
    /// does not delete the Pods itself: it holds no right to delete Pods, and an OnDelete StatefulSet is one
    /// whose owners chose to replace Pods themselves (a database's failover order, say).
    fn await_manual(&mut self, w: &WorkloadRef, rollout: &Rollout, steps: &mut Vec<Step>) {
        match rollout {
            Rollout::Manual(note) => {
                let before = self.manual.insert(w.clone(), note.clone());
                if before.as_ref() != Some(note) {
                    self.touch(w);
                }
                if before.is_none() {
                    steps.push(Step::Event {
                        workload: w.clone(),
                        warning: true,
                        reason: "ManualRestartNeeded",
                        note: format!("{w}: {note}"),
                    });
                }
            }
            // Someone resumed it, and it failed after all: a failure like any other (rollback included).
            Rollout::Failed(why) if self.manual.remove(w).is_some() => self.finished(w, false, why, steps),
            Rollout::Complete if self.manual.remove(w).is_some() => {
                self.touch(w);
                self.record(w, RestartResult::Success, steps);
                steps.push(Step::Event {
                    workload: w.clone(),
                    warning: false,
                    reason: "RestartFinished",
                    note: format!("{w}: every Pod runs the current template"),
                });
            }
            _ => {}
        }
    }

    /// A managed Secret that `w` references as optional and that did not exist yet when `w` was created (same
    /// second included: creation times have second precision, and a needless restart is cheaper than Pods
    /// without their values). Creation of the workload stands for the start of its Pods: the API offers no
    /// better bound without reading Pods, so a workload rolled after the Secret appeared restarts once more than
    /// needed.
    fn started_without(&self, w: &WorkloadRef) -> Option<String> {
        let (created, optional) = self.optional_refs.get(w)?;
        let ns = w.namespace.to_string();
        optional
            .iter()
            .find(|s| {
                self.managed
                    .get(&(ns.clone(), (*s).clone()))
                    .into_iter()
                    .flatten()
                    .any(|m| self.included(w, m) && m.created.is_some_and(|c| *created <= c))
            })
            .cloned()
    }

    fn finished(&mut self, w: &WorkloadRef, ok: bool, note: &str, steps: &mut Vec<Step>) {
        self.rolling.remove(w);
        self.touch(w);
        self.planner.rollout_finished(w, ok);
        let result = if ok {
            RestartResult::Success
        } else {
            RestartResult::Failure
        };
        self.record(w, result, steps);
        steps.push(Step::Event {
            workload: w.clone(),
            warning: !ok,
            reason: if ok { "RestartFinished" } else { "RestartFailed" },
            note: format!("{w}: {note}"),
        });
        if ok {
            self.failures.remove(w);
            return;
        }
        // What the failure was about, for the ManagedSecrets whose Secrets it consumes: their reconciles decide
        // whether to roll their value back (`consumers.rollbackOnFailure`).
        let ns = w.namespace.to_string();
        let value_hashes = self
            .index
            .secrets_of(w)
            .into_iter()
            .flat_map(|s| {
                let filling = self.managed.get(&(ns.clone(), s.to_string())).into_iter().flatten();
                filling.map(move |m| ((s.to_string(), m.managed_secret.clone()), m.value_hash.clone()))
            })
            .collect();
        let failure = Failure {
            note: note.chars().take(MAX_NOTE).collect(),
            value_hashes,
        };
        self.failures.insert(w.clone(), failure);
    }

    /// Fails rollouts that ran past the deadline; returns when the next one would.
    fn expire(&mut self, now: Timestamp, steps: &mut Vec<Step>) -> Option<Timestamp> {
        let deadline = jiff::SignedDuration::try_from(self.rollout_deadline).unwrap_or(jiff::SignedDuration::MAX);
        let mut expired = Vec::new();
        let mut next: Option<Timestamp> = None;
        for r in self.planner.in_flight() {
            let Ok(at) = r.started.checked_add(deadline) else {
                continue;
            };
            if at <= now {
                expired.push(r.workload.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for w in expired {
            let note = format!("no complete rollout within {}s", self.rollout_deadline.as_secs());
            self.finished(&w, false, &note, steps);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkloadSelector;
    use crate::consumers::planner::PlannerConfig;

    const NS: &str = "team";

    /// An engine that has seen nothing yet.
    fn bare() -> Restarts {
        let planner = Planner::new(PlannerConfig {
            debounce: Duration::from_secs(10),
            max_in_flight: 5,
            max_in_flight_per_namespace: 2,
            windows: Vec::new(),
        })
        .unwrap();
        Restarts::new(planner, Duration::from_secs(600))
    }

    fn restarts() -> Restarts {
        let mut r = bare();
        // The ManagedSecrets the tests use, seen with their default policy and no report yet.
        for name in ["db", "api-key"] {
            r.observe(
                Observation::Policy {
                    namespace: NS.into(),
                    name: name.into(),
                    consumers: Some(Consumers::default()),
                    reported: None,
                },
                t(0),
            );
        }
        r
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn deployment(name: &str) -> WorkloadRef {
        WorkloadRef::new(WorkloadKind::Deployment, NS, name)
    }

    /// A Deployment whose container reads `secret` through envFrom.
    fn seen(name: &str, secret: &str, hash: Option<&str>, rollout: Rollout) -> Observation {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "envFrom": [{"secretRef": {"name": secret}}]}]}}))
        .unwrap();
        Observation::Workload {
            workload: deployment(name),
            template: Box::new(template),
            opted_out: false,
            current_hash: hash.map(str::to_string),
            rollout,
            created: None,
        }
    }

    fn secret(name: &str, ms: &str, value_hash: &str) -> Observation {
        Observation::Secret {
            namespace: NS.into(),
            name: name.into(),
            managed: vec![Managed {
                managed_secret: ms.into(),
                value_hash: value_hash.into(),
                previous_key: None,
                created: None,
            }],
        }
    }

    fn restart_of(steps: &[Step]) -> Option<(WorkloadRef, String)> {
        steps.iter().find_map(|s| match s {
            Step::Restart { workload, hash } => Some((workload.clone(), hash.clone())),
            _ => None,
        })
    }

    /// The consumers of the one ManagedSecret whose status is due to be written; panics unless exactly one is.
    fn the_one_consumer_write(r: &mut Restarts) -> Vec<ConsumerStatus> {
        let status = r.consumer_status();
        let [Step::WriteConsumers { consumers, .. }] = status.as_slice() else {
            panic!("{status:?}")
        };
        consumers.clone()
    }

    fn events(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_process_does_not_write_the_consumers_report_the_object_already_shows() {
        // The first process: one consumer, restarted; its report written.
        let h1 = secrets_hash([("db", "h1")]);
        let mut first = restarts();
        first.observe(secret("db", "db", "h1"), t(0));
        first.observe(seen("api", "db", Some(&h1), Rollout::Complete), t(0));
        let report = the_one_consumer_write(&mut first);
        // A restart (or a new leader): the same cluster, seen fresh, with the object's status as written.
        let mut next = bare();
        let policy = |reported| Observation::Policy {
            namespace: NS.into(),
            name: "db".into(),
            consumers: Some(Consumers::default()),
            reported,
        };
        // Its Secret and workload may be seen before the ManagedSecret: nothing is written before it is.
        next.observe(secret("db", "db", "h1"), t(100));
        next.observe(seen("api", "db", Some(&h1), Rollout::Complete), t(100));
        assert!(next.consumer_status().is_empty(), "the ManagedSecret is not seen yet");
        next.observe(policy(Some(report.clone())), t(100));
        assert!(next.consumer_status().is_empty(), "nothing changed: nothing written");
        // An object that shows no report (never written, or written empty) with no consumers: nothing either.
        let mut lone = bare();
        lone.observe(policy(Some(Vec::new())), t(0));
        lone.observe(secret("other", "db", "h1"), t(0));
        assert!(lone.consumer_status().is_empty());
    }

    #[test]
    fn a_workload_keyward_never_restarted_is_adopted_not_restarted() {
        let mut r = restarts();
        r.observe(secret("db", "db", "h1"), t(0));
        let steps = r.observe(seen("api", "db", None, Rollout::Complete), t(0));
        let [Step::Adopt { workload, hash }] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(workload, &deployment("api"));
        assert_eq!(hash, &secrets_hash([("db", "h1")]));
        assert!(restart_of(&r.due(t(60)).0).is_none());
    }

    /// A Deployment created at `created` reading Secret `secret` through envFrom, `optional` as given.
    fn created_at(name: &str, secret: &str, optional: bool, created: Timestamp) -> Observation {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "envFrom": [{"secretRef": {"name": secret, "optional": optional}}]}]}}))
        .unwrap();
        Observation::Workload {
            workload: deployment(name),
            template: Box::new(template),
            opted_out: false,
            current_hash: None,
            rollout: Rollout::Complete,
            created: Some(created),
        }
    }

    fn secret_created(name: &str, value_hash: &str, created: Timestamp) -> Observation {
        Observation::Secret {
            namespace: NS.into(),
            name: name.into(),
            managed: vec![Managed {
                managed_secret: name.into(),
                value_hash: value_hash.into(),
                previous_key: None,
                created: Some(created),
            }],
        }
    }

    /// Field report B1: pods that started before an optional Secret existed run without it; adopting them
    /// would leave them so. They restart once, and say why.
    #[test]
    fn a_workload_older_than_a_secret_it_references_as_optional_restarts_once() {
        let mut r = restarts();
        r.observe(created_at("api", "app-creds", true, t(0)), t(0));
        let steps = r.observe(secret_created("app-creds", "h1", t(30)), t(30));
        assert!(!steps.iter().any(|s| matches!(s, Step::Adopt { .. })), "{steps:?}");
        assert_eq!(events(&steps), ["StartedWithoutSecret"]);
        // Seen again while pending: no second Event.
        let again = r.observe(created_at("api", "app-creds", true, t(0)), t(31));
        assert!(events(&again).is_empty(), "{again:?}");
        let (steps, _) = r.due(t(45));
        let (w, hash) = restart_of(&steps).unwrap();
        assert_eq!(
            (w, hash.clone()),
            (deployment("api"), secrets_hash([("app-creds", "h1")]))
        );
        r.started(&deployment("api"), &hash);
        // Once it carries the hash, nothing more.
        let mut seen_after = created_at("api", "app-creds", true, t(0));
        if let Observation::Workload { current_hash, .. } = &mut seen_after {
            *current_hash = Some(hash.clone());
        }
        r.observe(seen_after, t(60));
        assert!(restart_of(&r.due(t(120)).0).is_none());
    }

    #[test]
    fn a_workload_newer_than_the_secret_or_requiring_it_is_adopted() {
        // Created after the Secret: its Pods saw it.
        let mut r = restarts();
        r.observe(secret_created("app-creds", "h1", t(0)), t(0));
        let steps = r.observe(created_at("api", "app-creds", true, t(10)), t(10));
        assert!(matches!(steps.as_slice(), [Step::Adopt { .. }]), "{steps:?}");
        // A required reference holds the container back until the Secret exists: it starts with the value.
        let mut r = restarts();
        r.observe(created_at("api", "app-creds", false, t(0)), t(0));
        let steps = r.observe(secret_created("app-creds", "h1", t(30)), t(30));
        assert!(matches!(steps.as_slice(), [Step::Adopt { .. }]), "{steps:?}");
        assert!(restart_of(&r.due(t(60)).0).is_none());
    }

    /// Seen in `make demo`: the workload is adopted with one Secret, then again with two before the first
    /// adoption's annotation is seen; the view in between desires a restart from the first hash to the second,
    /// which the second adoption already carries. Nothing may restart.
    #[test]
    fn a_restart_desired_from_a_late_view_of_an_adoption_is_dropped() {
        let mut r = restarts();
        let both = |hash: Option<&str>| {
            let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({"spec": {"containers": [
                {"name": "c", "envFrom": [{"secretRef": {"name": "db"}}, {"secretRef": {"name": "cache"}}]}]}}))
            .unwrap();
            Observation::Workload {
                workload: deployment("api"),
                template: Box::new(template),
                opted_out: false,
                current_hash: hash.map(str::to_string),
                rollout: Rollout::Complete,
                created: None,
            }
        };
        r.observe(secret("db", "db", "h1"), t(0));
        let first = secrets_hash([("db", "h1")]);
        let steps = r.observe(both(None), t(0));
        assert!(
            matches!(steps.as_slice(), [Step::Adopt { hash, .. }] if *hash == first),
            "{steps:?}"
        );
        // The second Secret appears; no annotation seen yet: adopted again, with both.
        let second = secrets_hash([("cache", "c1"), ("db", "h1")]);
        let steps = r.observe(secret("cache", "cache", "c1"), t(1));
        assert!(
            matches!(steps.as_slice(), [Step::Adopt { hash, .. }] if *hash == second),
            "{steps:?}"
        );
        // The first adoption's annotation arrives: a restart to `second` is desired ...
        r.observe(both(Some(&first)), t(2));
        // ... and the second adoption's annotation arrives before its debounce ends.
        r.observe(both(Some(&second)), t(3));
        assert!(
            restart_of(&r.due(t(60)).0).is_none(),
            "a restart to the hash the workload carries already"
        );
    }

    #[test]
    fn a_value_change_restarts_once_after_the_debounce_and_reports_the_rollout() {
        let mut r = restarts();
        let h1 = secrets_hash([("db", "h1")]);
        r.observe(secret("db", "db", "h1"), t(0));
        r.observe(seen("api", "db", Some(&h1), Rollout::Complete), t(0));
        // Two changes within the debounce: one restart, to the last value.
        r.observe(secret("db", "db", "h2"), t(1));
        r.observe(secret("db", "db", "h3"), t(5));
        assert!(restart_of(&r.due(t(10)).0).is_none(), "still in the debounce");
        let (steps, _) = r.due(t(11));
        let (w, hash) = restart_of(&steps).unwrap();
        assert_eq!(hash, secrets_hash([("db", "h3")]));
        let started = r.started(&w, &hash);
        assert_eq!(events(&started), ["RestartTriggered"]);
        assert!(started.contains(&Step::Audit {
            namespace: NS.into(),
            managed_secret: "db".into(),
            workload: "Deployment/api".into()
        }));
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::Rolling);
        // The controller rolls it out.
        let done = r.observe(seen("api", "db", Some(&hash), Rollout::Complete), t(30));
        assert_eq!(events(&done), ["RestartFinished"]);
        assert!(done.contains(&Step::Count {
            workload: w.clone(),
            result: RestartResult::Success
        }));
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::Restarted);
        r.consumers_written(NS, "db", consumers.clone());
        // Seen again, nothing changed: nothing to do, nothing to write.
        assert!(
            r.observe(seen("api", "db", Some(&hash), Rollout::Complete), t(40))
                .is_empty()
        );
        assert!(r.consumer_status().is_empty());
        assert!(restart_of(&r.due(t(100)).0).is_none());
    }

    /// Secret `app-env` with the keys of ManagedSecrets `db` and `api-key`.
    fn shared(db: &str, api_key: &str) -> Observation {
        let m = |ms: &str, h: &str| Managed {
            managed_secret: ms.into(),
            value_hash: h.into(),
            previous_key: None,
            created: None,
        };
        Observation::Secret {
            namespace: NS.into(),
            name: "app-env".into(),
            managed: vec![m("api-key", api_key), m("db", db)],
        }
    }

    /// Which Secrets a ManagedSecret fills is kept as the Secrets' observations say, not searched for.
    #[test]
    fn the_secrets_each_managed_secret_fills_follow_the_secrets() {
        let mut r = restarts();
        r.observe(shared("d1", "a1"), t(0));
        let fills = |r: &Restarts, ms: &str| r.fills.get(&(NS.to_string(), ms.to_string())).cloned();
        assert_eq!(fills(&r, "db"), Some(vec!["app-env".to_string()]));
        assert_eq!(fills(&r, "api-key"), Some(vec!["app-env".to_string()]));
        r.observe(
            Observation::Secret {
                namespace: NS.into(),
                name: "app-env".into(),
                managed: vec![Managed {
                    managed_secret: "db".into(),
                    value_hash: "d1".into(),
                    previous_key: None,
                    created: None,
                }],
            },
            t(1),
        );
        assert_eq!(fills(&r, "api-key"), None, "taken out of the Secret");
        r.observe(
            Observation::Secret {
                namespace: NS.into(),
                name: "app-env".into(),
                managed: Vec::new(),
            },
            t(2),
        );
        assert!(r.fills.is_empty(), "the Secret is no longer managed");
    }

    /// A Secret filled by several ManagedSecrets: a change of one key, or of several together, restarts its
    /// consumer once; each ManagedSecret's status lists the consumer; a policy of one of them (None) leaves
    /// its changes out without hiding the other's. One ManagedSecret alone keeps the hash it always had (see
    /// the other tests: `secrets_hash([("db", "h1")])`).
    #[test]
    fn a_secret_filled_by_several_managed_secrets_restarts_once_per_change_set() {
        let mut r = restarts();
        r.observe(shared("d1", "a1"), t(0));
        // Adopted with the hash of both.
        let steps = r.observe(seen("web", "app-env", None, Rollout::Complete), t(0));
        let adopted = steps
            .iter()
            .find_map(|s| match s {
                Step::Adopt { hash, .. } => Some(hash.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(adopted, secrets_hash([("app-env", "api-key=a1,db=d1")]));
        r.observe(seen("web", "app-env", Some(&adopted), Rollout::Complete), t(0));
        let writes: Vec<String> = r
            .consumer_status()
            .into_iter()
            .filter_map(|s| match s {
                Step::WriteConsumers {
                    managed_secret,
                    consumers,
                    ..
                } if consumers.len() == 1 => Some(managed_secret),
                _ => None,
            })
            .collect();
        assert_eq!(writes, ["api-key", "db"], "each ManagedSecret reports the consumer");
        // Both change within the debounce: one restart.
        r.observe(shared("d2", "a1"), t(1));
        r.observe(shared("d2", "a2"), t(3));
        let (steps, _) = r.due(t(20));
        let restarts: Vec<_> = steps.iter().filter(|s| matches!(s, Step::Restart { .. })).collect();
        assert_eq!(restarts.len(), 1);
        let (w, hash) = restart_of(&steps).unwrap();
        assert_eq!(hash, secrets_hash([("app-env", "api-key=a2,db=d2")]));
        let started = r.started(&w, &hash);
        let audited: Vec<_> = started
            .iter()
            .filter_map(|s| match s {
                Step::Audit { managed_secret, .. } => Some(managed_secret.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(audited, ["api-key", "db"]);
        r.observe(seen("web", "app-env", Some(&hash), Rollout::Complete), t(30));
        // api-key's policy None: its changes restart nothing; db's still do. (The policy change itself re-keys the
        // workload's hash to db's alone: one restart, although no value changed.)
        r.observe(
            Observation::Policy {
                namespace: NS.into(),
                name: "api-key".into(),
                consumers: Some(Consumers {
                    policy: ConsumerPolicy::None,
                    ..Consumers::default()
                }),
                reported: None,
            },
            t(31),
        );
        let (steps, _) = r.due(t(60));
        let (_, only_db) = restart_of(&steps).expect("the hash no longer counts api-key");
        assert_eq!(only_db, secrets_hash([("app-env", "d2")]));
        r.started(&w, &only_db);
        r.observe(seen("web", "app-env", Some(&only_db), Rollout::Complete), t(70));
        r.observe(shared("d2", "a3"), t(71));
        assert!(
            restart_of(&r.due(t(100)).0).is_none(),
            "api-key's change restarts nothing"
        );
        r.observe(shared("d3", "a3"), t(101));
        assert!(restart_of(&r.due(t(130)).0).is_some(), "db's does");
    }

    #[test]
    fn policies_choose_who_restarts() {
        let mut r = restarts();
        let h1 = secrets_hash([("db", "h1")]);
        r.observe(secret("db", "db", "h1"), t(0));
        r.observe(seen("api", "db", Some(&h1), Rollout::Complete), t(0));
        r.observe(seen("worker", "db", Some(&h1), Rollout::Complete), t(0));
        let explicit = Consumers {
            policy: ConsumerPolicy::Explicit,
            workloads: vec![WorkloadSelector {
                kind: WorkloadKind::Deployment,
                name: "worker".into(),
            }],
            rollback_on_failure: false,
        };
        r.observe(
            Observation::Policy {
                namespace: NS.into(),
                name: "db".into(),
                consumers: Some(explicit),
                reported: None,
            },
            t(0),
        );
        r.observe(secret("db", "db", "h2"), t(1));
        let (steps, _) = r.due(t(20));
        let restarted: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Restart { workload, .. } => Some(workload.name.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(restarted, ["worker"]);
        let none = Consumers {
            policy: ConsumerPolicy::None,
            ..Consumers::default()
        };
        r.observe(
            Observation::Policy {
                namespace: NS.into(),
                name: "db".into(),
                consumers: Some(none),
                reported: None,
            },
            t(21),
        );
        r.observe(secret("db", "db", "h3"), t(22));
        assert!(restart_of(&r.due(t(60)).0).is_none());
    }

    /// Deployment `api` consumes `db`, whose value changed from h1 to h2: its restart has started.
    fn rolling_to_h2() -> (Restarts, String) {
        let mut r = restarts();
        let h1 = secrets_hash([("db", "h1")]);
        r.observe(secret("db", "db", "h1"), t(0));
        r.observe(seen("api", "db", Some(&h1), Rollout::Complete), t(0));
        r.observe(secret("db", "db", "h2"), t(1));
        let (steps, _) = r.due(t(20));
        let (w, hash) = restart_of(&steps).unwrap();
        r.started(&w, &hash);
        (r, hash)
    }

    #[test]
    fn a_failed_rollout_is_reported_with_the_value_it_failed_with() {
        let (mut r, hash) = rolling_to_h2();
        let failed = r.observe(
            seen(
                "api",
                "db",
                Some(&hash),
                Rollout::Failed("ProgressDeadlineExceeded".into()),
            ),
            t(30),
        );
        assert_eq!(events(&failed), ["RestartFailed"]);
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::Failed);
        assert_eq!(consumers[0].message.as_deref(), Some("ProgressDeadlineExceeded"));
        assert_eq!(consumers[0].failed_value_hash.as_deref(), Some("h2"));
        // The failed hash is not retried.
        assert!(restart_of(&r.due(t(100)).0).is_none());
    }

    /// Field report B2: an OnDelete StatefulSet never rolls by itself. keyward sets the template, frees the
    /// restart slot, reports ManualRestartNeeded (not Failed: nothing is rolled back), and Restarted once every
    /// Pod runs the new template.
    #[test]
    fn a_workload_that_waits_for_pod_deletion_is_reported_not_failed() {
        let (mut r, hash) = rolling_to_h2();
        let note = "updateStrategy OnDelete: 0 of 1 Pod(s) run the current template".to_string();
        let steps = r.observe(seen("api", "db", Some(&hash), Rollout::Manual(note.clone())), t(30));
        assert_eq!(events(&steps), ["ManualRestartNeeded"]);
        assert_eq!(r.planner.in_flight_count(), 0, "the restart slot is free");
        // No deadline: long after it, still waiting, not failed.
        let (steps, wake) = r.due(t(5000));
        assert!(events(&steps).is_empty() && wake.is_none(), "{steps:?} {wake:?}");
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::ManualRestartNeeded);
        assert_eq!(consumers[0].message.as_deref(), Some(note.as_str()));
        assert_eq!(consumers[0].failed_value_hash, None);
        r.consumers_written(NS, "db", consumers.clone());
        // Seen again unchanged: no second Event, nothing to write.
        let again = r.observe(seen("api", "db", Some(&hash), Rollout::Manual(note.clone())), t(40));
        assert!(events(&again).is_empty());
        assert!(r.consumer_status().is_empty());
        // Someone deleted the Pods: every one runs the new template.
        let done = r.observe(seen("api", "db", Some(&hash), Rollout::Complete), t(60));
        assert_eq!(events(&done), ["RestartFinished"]);
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::Restarted);
    }

    /// A paused Argo Rollout that someone resumes and that then fails is a failure like any other.
    #[test]
    fn a_failure_after_a_manual_wait_is_reported_with_its_value() {
        let (mut r, hash) = rolling_to_h2();
        r.observe(seen("api", "db", Some(&hash), Rollout::Manual("paused".into())), t(30));
        let failed = r.observe(
            seen(
                "api",
                "db",
                Some(&hash),
                Rollout::Failed("ProgressDeadlineExceeded".into()),
            ),
            t(90),
        );
        assert_eq!(events(&failed), ["RestartFailed"]);
        let consumers = the_one_consumer_write(&mut r);
        assert_eq!(consumers[0].state, ConsumerState::Failed);
        assert_eq!(consumers[0].failed_value_hash.as_deref(), Some("h2"));
    }

    #[test]
    fn a_rollout_past_the_deadline_fails() {
        let (mut r, _) = rolling_to_h2();
        let (steps, wake) = r.due(t(30));
        assert!(steps.is_empty());
        assert_eq!(wake, Some(t(620)), "woken at the deadline");
        let (steps, _) = r.due(t(620));
        assert_eq!(events(&steps), ["RestartFailed"]);
        let Some(Step::Event { note, .. }) = steps.iter().find(|s| matches!(s, Step::Event { .. })) else {
            panic!()
        };
        assert!(note.ends_with("no complete rollout within 600s"), "{note}");
    }

    #[test]
    fn the_grace_key_restarts_only_those_that_can_see_it() {
        let mut r = restarts();
        let template_value_only: PodTemplateSpec = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "db", "key": "K"}}}]}]}}))
        .unwrap();
        let h = |v: &str| secrets_hash([("db", v)]);
        r.observe(secret("db", "db", "h1"), t(0));
        r.observe(seen("all", "db", Some(&h("h1")), Rollout::Complete), t(0));
        r.observe(
            Observation::Workload {
                workload: deployment("one"),
                template: Box::new(template_value_only),
                opted_out: false,
                current_hash: Some(h("h1")),
                rollout: Rollout::Complete,
                created: None,
            },
            t(0),
        );
        r.observe(
            Observation::Secret {
                namespace: NS.into(),
                name: "db".into(),
                managed: vec![Managed {
                    managed_secret: "db".into(),
                    value_hash: "h1".into(),
                    previous_key: Some("K_PREVIOUS".into()),
                    created: None,
                }],
            },
            t(1),
        );
        let (steps, _) = r.due(t(20));
        let starts: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Restart { workload, hash } => Some((workload.name.to_string(), hash.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [("all".to_string(), h("h1+K_PREVIOUS"))]);
    }
}
