//! The audit log: one JSON line per secret operation, in the team's shape
//! `{"timestamp","action","secret_name","accessor","source_ip","success"}` plus `namespace`, `name` and
//! `reason`. To stdout (logs go to stderr) or appended to a file. Never a value.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A source was read for a ManagedSecret.
    Accessed,
    /// A target Secret was written.
    Synced,
    /// A value was replaced by a rotation (or a rotation failed).
    Rotated,
    /// A value was pushed to an outside target.
    Pushed,
    /// A consuming workload was restarted.
    RestartTriggered,
    /// Access was refused: by the access policy, or an unauthenticated webhook call.
    AccessDenied,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accessed => "secret_accessed",
            Action::Synced => "secret_synced",
            Action::Rotated => "secret_rotated",
            Action::Pushed => "secret_pushed",
            Action::RestartTriggered => "restart_triggered",
            Action::AccessDenied => "access_denied",
        }
    }
}

/// One audit line.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub action: Action,
    pub namespace: &'a str,
    /// The object acted on (a ManagedSecret, or `Kind/name` of a workload).
    pub name: &'a str,
    /// Overrides the accessor the log was made with (e.g. `esc-webhook`).
    pub accessor: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub success: bool,
    /// Why, in a few words: a condition reason, a rotation reason, a push target.
    pub reason: Option<&'a str>,
}

/// Where audit lines go.
pub struct Audit {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    accessor: String,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("accessor", &self.accessor).finish()
    }
}

impl Audit {
    /// Lines to stdout, as `accessor` (keyward's identity).
    pub fn stdout(accessor: impl Into<String>) -> Self {
        Audit {
            sink: Some(Mutex::new(Box::new(std::io::stdout()))),
            accessor: accessor.into(),
        }
    }

    /// Lines appended to `path`.
    pub fn file(path: &Path, accessor: impl Into<String>) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            sink: Some(Mutex::new(Box::new(f))),
            accessor: accessor.into(),
        })
    }

    /// No audit log (unit tests).
    pub fn disabled() -> Self {
        Audit {
            sink: None,
            accessor: String::new(),
        }
    }

    /// Writes one line. A failed write is logged, never fatal: the operation it records already happened.
    pub fn record(&self, e: &Entry<'_>) {
        let Some(sink) = &self.sink else { return };
        let line = self.line(e);
        let Ok(mut w) = sink.lock() else { return };
        if let Err(err) = writeln!(w, "{line}").and_then(|()| w.flush()) {
            tracing::warn!(error = %err, "writing the audit log failed");
        }
    }

    fn line(&self, e: &Entry<'_>) -> String {
        serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "action": e.action.as_str(),
            "secret_name": format!("{}/{}", e.namespace, e.name),
            "accessor": e.accessor.unwrap_or(&self.accessor),
            "source_ip": e.source_ip,
            "success": e.success,
            "namespace": e.namespace,
            "name": e.name,
            "reason": e.reason,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_teams_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::file(&path, "keyward@test").unwrap();
        audit.record(&Entry {
            action: Action::AccessDenied,
            namespace: "frontend",
            name: "db",
            accessor: None,
            source_ip: None,
            success: false,
            reason: Some("AccessDenied"),
        });
        audit.record(&Entry {
            action: Action::Accessed,
            namespace: "-",
            name: "acme/app/prod",
            accessor: Some("esc-webhook"),
            source_ip: Some("127.0.0.1"),
            success: true,
            reason: None,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        for key in [
            "timestamp",
            "action",
            "secret_name",
            "accessor",
            "source_ip",
            "success",
            "namespace",
            "name",
        ] {
            assert!(lines[0].get(key).is_some(), "{key}");
        }
        assert_eq!(lines[0]["action"], "access_denied");
        assert_eq!(lines[0]["secret_name"], "frontend/db");
        assert_eq!(lines[0]["accessor"], "keyward@test");
        assert_eq!(lines[0]["success"], false);
        assert_eq!(lines[1]["accessor"], "esc-webhook");
        assert_eq!(lines[1]["source_ip"], "127.0.0.1");
    }
}
