//! `keyward report`: rotation compliance of every ManagedSecret in view, as a table for people or JSON/CSV for
//! pipelines. The state comes from the conditions keyward wrote; where the status does not say (keyward has not
//! reconciled the object yet), it is computed from the policy with the same schedule math the controller uses.
//!
//! Exit codes: 0 nothing is overdue, 2 something is overdue, 1 the report could not be made.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::categories;
use super::error::OpsError;
use super::human::{self, Cell, Colour};
use crate::api::conditions::{READY, ROTATION_DUE, ROTATION_OVERDUE};
use crate::api::{AccessStatus, ConsumerState, ManagedSecret, RotationStrategy};
use crate::rotation::schedule;

/// The exit code when something is overdue.
pub const EXIT_OVERDUE: u8 = 2;

/// Where a ManagedSecret stands. Ordered by urgency: OVERDUE first, then FAILING (Ready False), DUE, OK and
/// NO-POLICY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Overdue,
    Failing,
    Due,
    Ok,
    NoPolicy,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Overdue => "OVERDUE",
            State::Failing => "FAILING",
            State::Due => "DUE",
            State::Ok => "OK",
            State::NoPolicy => "NO-POLICY",
        }
    }

    fn colour(self) -> Option<Colour> {
        match self {
            State::Overdue | State::Failing => Some(Colour::Red),
            State::Due => Some(Colour::Yellow),
            State::Ok => Some(Colour::Green),
            State::NoPolicy => None,
        }
    }
}

/// Consumers by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consumers {
    pub restarted: usize,
    pub total: usize,
    pub failed: usize,
}

/// One ManagedSecret's compliance.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `esc`, `kubernetesSecret` or `none`.
    pub source_type: &'static str,
    /// `org/project/env:path[@version]`, or `secret/NAME:KEY`.
    pub source: String,
    /// The last rotation, or the creation when there was none.
    pub since: Option<Timestamp>,
    pub age: Option<Duration>,
    pub period: Option<Duration>,
    pub category: Option<&'static str>,
    pub strategy: Option<RotationStrategy>,
    pub due: Option<Timestamp>,
    pub state: State,
    pub last_rotation: Option<Timestamp>,
    pub last_reason: Option<String>,
    pub consumers: Consumers,
    /// Why it is not OK, from the condition that says so.
    pub message: Option<String>,
    /// Which grant allowed each action and which were refused (`status.access`), when keyward has decided.
    pub access: Option<AccessStatus>,
}

fn condition<'a>(ms: &'a ManagedSecret, type_: &str) -> Option<&'a Condition> {
    ms.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn is(c: Option<&Condition>, status: &str) -> bool {
    c.is_some_and(|c| c.status == status)
}

fn explain(c: &Condition) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (false, false) => format!("{}: {}", c.reason, c.message),
        (false, true) => c.reason.clone(),
        _ => c.message.clone(),
    }
}

/// The source as one short string.
pub fn source(ms: &ManagedSecret) -> (&'static str, String) {
    if let Some(esc) = &ms.spec.source.esc {
        let pin = esc
            .version
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| format!("@{v}"))
            .unwrap_or_default();
        let paths: Vec<&str> = esc.paths().collect();
        ("esc", format!("{}:{}{pin}", esc.environment, paths.join(",")))
    } else if let Some(k) = &ms.spec.source.kubernetes_secret {
        ("kubernetesSecret", format!("secret/{}:{}", k.name, k.key))
    } else {
        ("none", "-".to_string())
    }
}

/// Computes the row of `ms` at `now`.
pub fn row(ms: &ManagedSecret, now: Timestamp) -> Row {
    let status = ms.status.as_ref();
    let created = ms.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last_rotation = status.and_then(|s| s.last_rotation_time.as_ref()).map(|t| t.0);
    let since = last_rotation.or(created);
    let ready = condition(ms, READY);
    let due_c = condition(ms, ROTATION_DUE);
    let overdue_c = condition(ms, ROTATION_OVERDUE);
    let failing = is(ready, "False");
    let policy = ms
        .spec
        .rotation
        .as_ref()
        .map(|r| schedule::policy(r, ms.target_key().unwrap_or_default()));
    let computed_due = match (&policy, created) {
        (Some(Ok(p)), Some(created)) => Some(schedule::next_due(last_rotation, created, p.period)),
        _ => None,
    };
    let due = status
        .and_then(|s| s.next_rotation_time.as_ref())
        .map(|t| t.0)
        .or(computed_due);

    let (state, message) = if is(overdue_c, "True") {
        (State::Overdue, overdue_c.map(explain))
    } else if failing {
        (State::Failing, ready.map(explain))
    } else if is(due_c, "True") {
        (State::Due, due_c.map(explain))
    } else {
        match &policy {
            None => (State::NoPolicy, None),
            Some(Err(e)) => (State::Failing, Some(format!("invalid rotation policy: {e}"))),
            // keyward has not judged the schedule yet: judge it the way it will.
            Some(Ok(p)) if due_c.is_none() && overdue_c.is_none() => match due {
                Some(due) if now >= due && p.strategy == RotationStrategy::Notify => (
                    State::Overdue,
                    Some(format!("due since {} (computed)", human::date(due))),
                ),
                Some(due) if now >= due => (State::Due, Some(format!("due since {} (computed)", human::date(due)))),
                _ => (State::Ok, None),
            },
            Some(Ok(_)) => (State::Ok, None),
        }
    };

    let mut consumers = Consumers::default();
    for c in status.map(|s| s.consumers.as_slice()).unwrap_or_default() {
        consumers.total += 1;
        match c.state {
            ConsumerState::Restarted => consumers.restarted += 1,
            ConsumerState::Failed => consumers.failed += 1,
            _ => {}
        }
    }
    let (source_type, source) = source(ms);
    let rotation = ms.spec.rotation.as_ref();
    Row {
        namespace: ms.namespace().unwrap_or_default(),
        name: ms.name_any(),
        source_type,
        source,
        since,
        age: since.map(|s| human::elapsed(now, s)),
        period: match &policy {
            Some(Ok(p)) => Some(p.period),
            _ => None,
        },
        category: rotation.and_then(|r| r.category).map(categories::name),
        strategy: rotation.map(|r| r.strategy),
        due: if policy.is_some() { due } else { None },
        state,
        last_rotation,
        last_reason: status
            .and_then(|s| s.rotation.as_ref())
            .and_then(|r| r.last_reason.clone()),
        consumers,
        message,
        access: status.and_then(|s| s.access.clone()),
    }
}

/// Rows for every object, sorted by namespace and name.
pub fn rows(objects: &[ManagedSecret], now: Timestamp) -> Vec<Row> {
    let mut rows: Vec<Row> = objects.iter().map(|ms| row(ms, now)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// 2 when something is overdue, else 0.
pub fn exit_code(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.state == State::Overdue) {
        EXIT_OVERDUE
    } else {
        0
    }
}

fn consumers_cell(c: Consumers) -> String {
    let mut s = format!("{}/{}", c.restarted, c.total);
    if c.failed > 0 {
        s.push_str(&format!(" ({} failed)", c.failed));
    }
    s
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

/// The table: SECRET SOURCE AGE PERIOD DUE STATE LAST ROTATION CONSUMERS; the state coloured when `colour`.
pub fn table(rows: &[Row], colour: bool) -> String {
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| {
            vec![
                Cell::from(format!("{}/{}", r.namespace, r.name)),
                Cell::from(r.source.clone()),
                Cell::from(opt(r.age, human::short)),
                Cell::from(opt(r.period, human::period)),
                Cell::from(opt(r.due, human::date)),
                Cell {
                    text: r.state.label().to_string(),
                    colour: r.state.colour(),
                },
                Cell::from(r.last_rotation.map(human::date).unwrap_or_else(|| "never".into())),
                Cell::from(consumers_cell(r.consumers)),
            ]
        })
        .collect();
    human::table(
        &[
            "SECRET",
            "SOURCE",
            "AGE",
            "PERIOD",
            "DUE",
            "STATE",
            "LAST ROTATION",
            "CONSUMERS",
        ],
        &cells,
        colour,
    )
}

/// A JSON array with the same fields for every row (absent values are null).
pub fn json(rows: &[Row]) -> String {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "namespace": r.namespace,
                "name": r.name,
                "sourceType": r.source_type,
                "source": r.source,
                "age": r.age.map(human::short),
                "ageSeconds": r.age.map(|a| a.as_secs()),
                "since": r.since.map(human::rfc3339),
                "period": r.period.map(human::period),
                "periodSeconds": r.period.map(|p| p.as_secs()),
                "category": r.category,
                "strategy": r.strategy.map(|s| format!("{s:?}")),
                "due": r.due.map(human::rfc3339),
                "state": r.state.label(),
                "lastRotation": r.last_rotation.map(human::rfc3339),
                "lastReason": r.last_reason,
                "consumers": {
                    "restarted": r.consumers.restarted,
                    "total": r.consumers.total,
                    "failed": r.consumers.failed,
                },
                "message": r.message,
                "access": r.access,
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

/// One CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str = "namespace,name,source,age,age_seconds,period,due,state,last_rotation,last_reason,\
                              consumers_restarted,consumers_total,consumers_failed,message";

/// CSV with a header; times in RFC 3339, empty when absent.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let fields = [
            r.namespace.clone(),
            r.name.clone(),
            r.source.clone(),
            r.age.map(human::short).unwrap_or_default(),
            r.age.map(|a| a.as_secs().to_string()).unwrap_or_default(),
            r.period.map(human::period).unwrap_or_default(),
            r.due.map(human::rfc3339).unwrap_or_default(),
            r.state.label().to_string(),
            r.last_rotation.map(human::rfc3339).unwrap_or_default(),
            r.last_reason.clone().unwrap_or_default(),
            r.consumers.restarted.to_string(),
            r.consumers.total.to_string(),
            r.consumers.failed.to_string(),
            r.message.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// `12 ManagedSecrets: 1 overdue, 2 due, ...` (only the states present).
pub fn summary(rows: &[Row]) -> String {
    let mut parts = Vec::new();
    for s in [State::Overdue, State::Failing, State::Due, State::Ok, State::NoPolicy] {
        let n = rows.iter().filter(|r| r.state == s).count();
        if n > 0 {
            parts.push(format!("{n} {}", s.label()));
        }
    }
    format!(
        "{} ManagedSecret{}: {}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// Lists the ManagedSecrets of `namespace` (every namespace when None).
pub async fn fetch(client: &Client, namespace: Option<&str>) -> Result<Vec<ManagedSecret>, OpsError> {
    let api: Api<ManagedSecret> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => OpsError::Usage(
                "the ManagedSecret CRD is not installed in this cluster (install it: keyward crd | kubectl apply -f -)"
                    .into(),
            ),
            source => OpsError::Kube {
                action: "listing ManagedSecrets".into(),
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerStatus, ManagedSecretStatus, RotationStatus, WorkloadKind};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const DAY: i64 = 86_400;

    fn t(days: i64) -> Timestamp {
        Timestamp::from_second(1_748_822_400 + days * DAY).unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Time(t(0)),
        }
    }

    /// A ManagedSecret created at day 0 with an apiKey (90d) policy unless `rotation` is false.
    fn ms(name: &str, rotation: bool, status: Option<ManagedSecretStatus>) -> ManagedSecret {
        let rot = if rotation { "rotation: {category: apiKey}" } else { "" };
        let yaml = format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ManagedSecret\n\
             metadata: {{name: {name}, namespace: backend, creationTimestamp: '2025-06-02T00:00:00Z'}}\n\
             spec:\n  source: {{esc: {{environment: acme/app/prod, path: app.key}}}}\n  \
             target: {{key: K}}\n  {rot}\n"
        );
        let mut ms: ManagedSecret = serde_saphyr::from_str(&yaml).unwrap();
        ms.status = status;
        ms
    }

    fn status(conditions: Vec<Condition>, last_rotation_day: Option<i64>) -> ManagedSecretStatus {
        ManagedSecretStatus {
            conditions,
            last_rotation_time: last_rotation_day.map(|d| Time(t(d))),
            ..ManagedSecretStatus::default()
        }
    }

    #[test]
    fn states_from_conditions() {
        let ok = ms(
            "ok",
            true,
            Some(status(
                vec![
                    cond("Ready", "True", "Synced", ""),
                    cond("RotationDue", "False", "NotDue", ""),
                ],
                Some(10),
            )),
        );
        let due = ms(
            "due",
            true,
            Some(status(
                vec![cond("RotationDue", "True", "Due", "due since 2025-09-01")],
                None,
            )),
        );
        let overdue = ms(
            "overdue",
            true,
            Some(status(
                vec![
                    cond("Ready", "False", "SourceUnavailable", "ESC is down"),
                    cond("RotationOverdue", "True", "Overdue", "100 days old"),
                ],
                None,
            )),
        );
        let failing = ms(
            "failing",
            false,
            Some(status(
                vec![cond("Ready", "False", "SourceNotFound", "no path app.key")],
                None,
            )),
        );
        let none = ms("none", false, None);
        let now = t(20);
        let r = rows(&[ok, due, overdue, failing, none], now);
        let got: Vec<(&str, State)> = r.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            got,
            [
                ("due", State::Due),
                ("failing", State::Failing),
                ("none", State::NoPolicy),
                ("ok", State::Ok),
                ("overdue", State::Overdue),
            ]
        );
        assert_eq!(r[1].message.as_deref(), Some("SourceNotFound: no path app.key"));
        assert_eq!(r[4].message.as_deref(), Some("Overdue: 100 days old"));
        // Age runs from the last rotation, or from creation.
        assert_eq!(r[3].age, Some(Duration::from_secs(10 * DAY as u64)));
        assert_eq!(r[0].age, Some(Duration::from_secs(20 * DAY as u64)));
        // The due date is computed from the policy when the status has none.
        assert_eq!(r[3].due, Some(t(100)));
        assert_eq!(r[2].due, None);
        assert_eq!(exit_code(&r), EXIT_OVERDUE);
        assert_eq!(exit_code(&r[..4]), 0);
    }

    #[test]
    fn states_computed_when_the_status_is_incomplete() {
        // No status at all: judged from the creation time and the 90-day policy (Notify: overdue once due).
        assert_eq!(row(&ms("a", true, None), t(89)).state, State::Ok);
        let r = row(&ms("a", true, None), t(91));
        assert_eq!(r.state, State::Overdue);
        assert_eq!(r.message.as_deref(), Some("due since 2025-08-31 (computed)"));
        // Generate: keyward will rotate it, so it is only due.
        let mut g = ms("g", true, None);
        g.spec.rotation.as_mut().unwrap().strategy = RotationStrategy::Generate;
        assert_eq!(row(&g, t(91)).state, State::Due);
        // A status with a next rotation time wins over the computation.
        let mut s = status(vec![], Some(0));
        s.next_rotation_time = Some(Time(t(200)));
        assert_eq!(row(&ms("a", true, Some(s)), t(150)).state, State::Ok);
    }

    fn sample_rows() -> Vec<Row> {
        let mut st = status(
            vec![cond("Ready", "False", "SourceUnavailable", "ESC said 503, retrying")],
            Some(3),
        );
        st.consumers = vec![
            ConsumerStatus {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
                secrets_hash: None,
                state: ConsumerState::Restarted,
                message: None,
                failed_value_hash: None,
            },
            ConsumerStatus {
                kind: WorkloadKind::Deployment,
                name: "worker".into(),
                secrets_hash: None,
                state: ConsumerState::Failed,
                message: None,
                failed_value_hash: None,
            },
        ];
        st.rotation = Some(Box::new(RotationStatus {
            last_reason: Some("leaked, \"oops\"".into()),
            ..RotationStatus::default()
        }));
        rows(
            &[ms("openai-api-key", true, Some(st)), ms("redis-url", false, None)],
            t(15),
        )
    }

    #[test]
    fn table_json_and_csv() {
        let r = sample_rows();
        assert_eq!(
            table(&r, false),
            "\
SECRET                   SOURCE                  AGE   PERIOD   DUE          STATE       LAST ROTATION   CONSUMERS
backend/openai-api-key   acme/app/prod:app.key   12d   90d      2025-09-03   FAILING     2025-06-05      1/2 (1 failed)
backend/redis-url        acme/app/prod:app.key   15d   -        -            NO-POLICY   never           0/0
"
        );
        assert!(table(&r, true).contains("\x1b[31mFAILING\x1b[0m"));

        let j: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(j[0]["state"], "FAILING");
        assert_eq!(j[0]["age"], "12d");
        assert_eq!(j[0]["due"], "2025-09-03T00:00:00Z");
        assert_eq!(j[0]["consumers"], json!({"restarted": 1, "total": 2, "failed": 1}));
        assert_eq!(j[0]["category"], "apiKey");
        assert_eq!(j[1]["period"], serde_json::Value::Null);
        // Every row has every field.
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&j[0]), keys(&j[1]));

        let c = csv(&r);
        let lines: Vec<&str> = c.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "backend,openai-api-key,acme/app/prod:app.key,12d,1036800,90d,2025-09-03T00:00:00Z,FAILING,\
             2025-06-05T00:00:00Z,\"leaked, \"\"oops\"\"\",1,2,1,\"SourceUnavailable: ESC said 503, retrying\""
        );
        assert_eq!(
            lines[2],
            "backend,redis-url,acme/app/prod:app.key,15d,1296000,,,NO-POLICY,,,0,0,0,"
        );
        assert_eq!(summary(&r), "2 ManagedSecrets: 1 FAILING, 1 NO-POLICY");
    }
}
