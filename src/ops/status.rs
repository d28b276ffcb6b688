//! `keyward status NAME`: one ManagedSecret for people — source and revision, target, conditions, rotation,
//! consumers, pushes, and the latest Events about it.

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::categories;
use super::error::OpsError;
use super::human::{self, Cell};
use super::report::{self, State};
use crate::api::ManagedSecret;

/// How many Events `status` shows.
pub const MAX_EVENTS: usize = 10;

/// One Event, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub time: Option<Timestamp>,
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object it regards.
    pub object: String,
    pub note: String,
}

/// When an Event last happened: its series' last observation, its own time, or when it was recorded.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The latest [`MAX_EVENTS`] Events regarding an object named `name`, oldest first (newest last).
pub fn events_about(events: &[Event], name: &str) -> Vec<EventLine> {
    let mut lines: Vec<EventLine> = events
        .iter()
        .filter_map(|e| {
            let r = e.regarding.as_ref()?;
            (r.name.as_deref() == Some(name)).then(|| EventLine {
                time: event_time(e),
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                object: format!("{}/{name}", r.kind.as_deref().unwrap_or("?")),
                note: e.note.clone().unwrap_or_default(),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.time);
    let skip = lines.len().saturating_sub(MAX_EVENTS);
    lines.split_off(skip)
}

/// Labels are padded to one width, nested ones included, so values line up.
const LABEL_WIDTH: usize = 16;

fn field(out: &mut String, label: &str, value: impl AsRef<str>) {
    out.push_str(&format!("{:<LABEL_WIDTH$}{}\n", format!("{label}:"), value.as_ref()));
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn when(now: Timestamp, t: Timestamp) -> String {
    format!("{} ({})", human::rfc3339(t), human::relative(now, t))
}

/// Renders `ms` and its Events at `now`.
pub fn render(ms: &ManagedSecret, events: &[EventLine], now: Timestamp) -> String {
    let row = report::row(ms, now);
    let status = ms.status.as_ref();
    let mut out = String::new();
    field(&mut out, "Name", format!("{}/{}", row.namespace, row.name));
    match (&ms.spec.source.esc, &ms.spec.source.kubernetes_secret) {
        (Some(esc), _) => {
            let version = match esc.version.as_deref() {
                Some(v) if !v.is_empty() => format!("pinned to {v}"),
                _ => "follows the latest revision".into(),
            };
            field(
                &mut out,
                "Source",
                match &esc.path {
                    Some(path) => format!("ESC {}, path {path} ({version})", esc.environment),
                    None => format!(
                        "ESC {}, {} value(s) and {} object(s) ({version})",
                        esc.environment,
                        esc.data.len(),
                        esc.data_from.len()
                    ),
                },
            );
        }
        (None, Some(k)) => field(&mut out, "Source", format!("Secret {}, key {}", k.name, k.key)),
        (None, None) => field(&mut out, "Source", "none"),
    }
    let revision = status
        .and_then(|s| s.source.as_ref())
        .and_then(|s| s.revision)
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    field(&mut out, "Revision", revision);
    field(
        &mut out,
        "Target",
        match ms.target_key() {
            Some(key) => format!("Secret {}, key {key}", ms.target_name()),
            None => format!("Secret {}", ms.target_name()),
        },
    );
    let last_sync = status
        .and_then(|s| s.last_sync_time.as_ref())
        .map(|t| format!(", last sync {}", when(now, t.0)))
        .unwrap_or_else(|| ", never synced".into());
    field(
        &mut out,
        "Refresh",
        format!("every {}{last_sync}", human::period(ms.refresh_interval())),
    );

    out.push_str("\nConditions:\n");
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if conditions.is_empty() {
        out.push_str("  none (keyward has not reconciled it yet)\n");
    } else {
        let rows: Vec<Vec<Cell>> = conditions
            .iter()
            .map(|c| {
                vec![
                    Cell::from(c.type_.as_str()),
                    Cell::from(c.status.as_str()),
                    Cell::from(c.reason.as_str()),
                    Cell::from(human::ago(now, c.last_transition_time.0)),
                    Cell::from(c.message.as_str()),
                ]
            })
            .collect();
        out.push_str(&indent(&human::table(
            &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            &rows,
            false,
        )));
    }

    out.push_str("\nRotation:\n");
    match &ms.spec.rotation {
        None => out.push_str("  no policy\n"),
        Some(r) => {
            let period = match (r.category, row.period) {
                (Some(c), Some(p)) => format!("{} ({})", categories::name(c), human::period(p)),
                (None, Some(p)) => format!("every {}", human::period(p)),
                _ => "invalid".into(),
            };
            let grace = r.grace_period.as_deref().unwrap_or("none");
            let mut policy = format!("{period}, strategy {:?}, grace period {grace}", r.strategy);
            if !r.push_to.is_empty() {
                policy.push_str(&format!(", pushed to {} target(s)", r.push_to.len()));
            }
            field(&mut out, "  Policy", policy);
        }
    }
    let last = match row.last_rotation {
        Some(t) => {
            let reason = row
                .last_reason
                .as_deref()
                .map(|r| format!(", reason: {r}"))
                .unwrap_or_default();
            format!("{}{reason}", when(now, t))
        }
        None => "never".into(),
    };
    field(&mut out, "  Last", last);
    if ms.spec.rotation.is_some() {
        field(
            &mut out,
            "  Next",
            row.due.map(|t| when(now, t)).unwrap_or_else(|| "-".into()),
        );
    }
    let state = match (&row.message, row.state) {
        (Some(m), s) if s != State::Ok => format!("{} ({m})", s.label()),
        (_, s) => s.label().to_string(),
    };
    field(&mut out, "  State", state);
    if let Some(r) = status.and_then(|s| s.rotation.as_ref()) {
        if let Some(i) = &r.in_progress {
            field(
                &mut out,
                "  In progress",
                format!("{} (started {})", i.reason, i.started),
            );
        }
        if let Some(h) = &r.handled_request {
            field(&mut out, "  Last request", h);
        }
    }
    let requested = ms.annotations().get(crate::api::ROTATE_NOW_ANNOTATION);
    let handled = status
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.handled_request.as_ref());
    if let Some(req) = requested.filter(|r| Some(*r) != handled) {
        field(&mut out, "  Requested", format!("{req} (not yet handled)"));
    }

    out.push_str("\nAccess (which AccessPolicy grant allows each action, or why it is refused):\n");
    match status.and_then(|s| s.access.as_ref()) {
        None => out.push_str("  not decided yet\n"),
        Some(access) => {
            let mut rows: Vec<Vec<Cell>> = access
                .granted
                .iter()
                .map(|g| vec![Cell::from(g.action.as_str()), Cell::from(g.grant.as_str())])
                .collect();
            rows.extend(access.refused.iter().map(|r| {
                vec![
                    Cell::from(r.action.as_str()),
                    Cell::from(format!("REFUSED: {}", r.reason)),
                ]
            }));
            if rows.is_empty() {
                out.push_str("  nothing asked for\n");
            } else {
                out.push_str(&indent(&human::table(&["ACTION", "GRANT"], &rows, false)));
            }
        }
    }

    out.push_str("\nConsumers:\n");
    let consumers = status.map(|s| s.consumers.as_slice()).unwrap_or_default();
    if consumers.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<Cell>> = consumers
            .iter()
            .map(|c| {
                vec![
                    Cell::from(c.kind.as_str()),
                    Cell::from(c.name.as_str()),
                    Cell::from(c.state.as_str()),
                    Cell::from(c.secrets_hash.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        out.push_str(&indent(&human::table(&["KIND", "NAME", "STATE", "HASH"], &rows, false)));
    }

    out.push_str("\nPushes:\n");
    let pushes = status.map(|s| s.pushes.as_slice()).unwrap_or_default();
    if pushes.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<Cell>> = pushes
            .iter()
            .map(|p| {
                vec![
                    Cell::from(p.target.as_str()),
                    Cell::from(
                        p.push_time
                            .as_ref()
                            .map(|t| when(now, t.0))
                            .unwrap_or_else(|| "-".into()),
                    ),
                ]
            })
            .collect();
        out.push_str(&indent(&human::table(&["TARGET", "PUSHED"], &rows, false)));
    }

    out.push_str("\nEvents (newest last):\n");
    if events.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<Cell>> = events
            .iter()
            .map(|e| {
                vec![
                    Cell::from(e.time.map(|t| human::ago(now, t)).unwrap_or_else(|| "-".into())),
                    Cell::from(e.type_.as_str()),
                    Cell::from(e.reason.as_str()),
                    Cell::from(e.object.as_str()),
                    Cell::from(e.note.as_str()),
                ]
            })
            .collect();
        out.push_str(&indent(&human::table(
            &["AGE", "TYPE", "REASON", "OBJECT", "NOTE"],
            &rows,
            false,
        )));
    }
    out
}

/// Reads the ManagedSecret and the Events about it.
pub async fn fetch(client: &Client, namespace: &str, name: &str) -> Result<(ManagedSecret, Vec<EventLine>), OpsError> {
    let api: Api<ManagedSecret> = Api::namespaced(client.clone(), namespace);
    let ms = api
        .get(name)
        .await
        .map_err(|e| OpsError::kube(format!("reading ManagedSecret {namespace}/{name}"), namespace, name, e))?;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let kube_err = |source| OpsError::Kube {
        action: format!("listing Events in {namespace}"),
        source,
    };
    // The server can select by regarding.name; an older one that cannot gets the namespace's list filtered here.
    let list = match events
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 400 => events.list(&ListParams::default()).await.map_err(kube_err)?.items,
        Err(e) => return Err(kube_err(e)),
    };
    Ok((ms, events_about(&list, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, kind: &str, reason: &str, secs: i64) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}.{secs}")},
            "eventTime": jiff::Timestamp::from_second(1_748_822_400 + secs).unwrap().to_string(),
            "reportingController": "keyward.dev/keyward",
            "reportingInstance": "keyward-0",
            "action": "Sync",
            "type": "Normal",
            "reason": reason,
            "note": format!("note {secs}"),
            "regarding": {"kind": kind, "name": name, "namespace": "backend"},
        }))
        .unwrap()
    }

    #[test]
    fn events_are_the_latest_ten_newest_last() {
        let mut events: Vec<Event> = (0..15)
            .rev()
            .map(|i| event("a", "ManagedSecret", "Synced", i * 60))
            .collect();
        events.push(event("b", "ManagedSecret", "Other", 10_000));
        let lines = events_about(&events, "a");
        assert_eq!(lines.len(), MAX_EVENTS);
        assert_eq!(lines.first().unwrap().note, "note 300");
        assert_eq!(lines.last().unwrap().note, "note 840");
        assert_eq!(lines[0].object, "ManagedSecret/a");
    }

    #[test]
    fn renders_every_section() {
        let ms: ManagedSecret = serde_saphyr::from_str(
            "
apiVersion: keyward.dev/v1alpha1
kind: ManagedSecret
metadata:
  name: openai-api-key
  namespace: backend
  creationTimestamp: '2025-06-02T00:00:00Z'
  annotations: {keyward.dev/rotate-now: second leak}
spec:
  source: {esc: {environment: acme/app/prod, path: app.openai}}
  target: {key: OPENAI_API_KEY}
  rotation: {category: apiKey, strategy: Generate, gracePeriod: 1h}
status:
  source: {revision: 42, valueHash: 'hmac-sha256:00'}
  lastSyncTime: '2025-06-10T00:00:00Z'
  lastRotationTime: '2025-06-05T00:00:00Z'
  nextRotationTime: '2025-09-03T00:00:00Z'
  conditions:
  - {type: Ready, status: 'True', reason: Synced, message: in step with revision 42, lastTransitionTime: '2025-06-05T00:00:00Z'}
  - {type: RotationDue, status: 'False', reason: NotDue, message: '', lastTransitionTime: '2025-06-05T00:00:00Z'}
  rotation: {lastReason: first leak, handledRequest: first leak}
  consumers:
  - {kind: Deployment, name: api, secretsHash: abc, state: Restarted}
  pushes:
  - {target: github:org/acme/OPENAI_API_KEY, pushTime: '2025-06-05T00:00:00Z'}
  access:
    granted:
    - {action: read ESC acme/app/prod path app.openai, grant: 'AccessPolicy backend esc[0]'}
    refused:
    - {action: write ESC acme/app/prod path app.openai, reason: EscWriteNotGranted}
",
        )
        .unwrap();
        let events = events_about(
            &[event("openai-api-key", "ManagedSecret", "Rotated", 3 * 86_400)],
            "openai-api-key",
        );
        let now = Timestamp::from_second(1_748_822_400 + 10 * 86_400).unwrap();
        let text = render(&ms, &events, now);
        assert_eq!(
            text,
            "\
Name:           backend/openai-api-key
Source:         ESC acme/app/prod, path app.openai (follows the latest revision)
Revision:       42
Target:         Secret openai-api-key, key OPENAI_API_KEY
Refresh:        every 1h, last sync 2025-06-10T00:00:00Z (2d ago)

Conditions:
  TYPE          STATUS   REASON   AGE   MESSAGE
  Ready         True     Synced   7d    in step with revision 42
  RotationDue   False    NotDue   7d

Rotation:
  Policy:       apiKey (90d), strategy Generate, grace period 1h
  Last:         2025-06-05T00:00:00Z (7d ago), reason: first leak
  Next:         2025-09-03T00:00:00Z (in 83d)
  State:        OK
  Last request: first leak
  Requested:    second leak (not yet handled)

Access (which AccessPolicy grant allows each action, or why it is refused):
  ACTION                                    GRANT
  read ESC acme/app/prod path app.openai    AccessPolicy backend esc[0]
  write ESC acme/app/prod path app.openai   REFUSED: EscWriteNotGranted

Consumers:
  KIND         NAME   STATE       HASH
  Deployment   api    Restarted   abc

Pushes:
  TARGET                           PUSHED
  github:org/acme/OPENAI_API_KEY   2025-06-05T00:00:00Z (7d ago)

Events (newest last):
  AGE   TYPE     REASON    OBJECT                         NOTE
  7d    Normal   Rotated   ManagedSecret/openai-api-key   note 259200
"
        );
    }
}
