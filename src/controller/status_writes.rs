//! The status writes this process made that the cache has not delivered yet. A reconcile starts from the
//! cached object's status — unless that is older than our own last write, when the write is the newer: a
//! reconcile woken before the watch delivers our write must not drop what the write recorded (a condition set
//! once, on a change; the old target's name after a rename). An entry goes as soon as the watch delivers the
//! write (at 10,000 objects, keeping every status written until the object's next reconcile was tens of MiB).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;

use crate::api::{ManagedSecret, ManagedSecretStatus};

/// A status write: the resourceVersion of the object it was computed from, the one the API server answered
/// with, and the status sent.
struct Written {
    against: String,
    produced: Option<String>,
    status: ManagedSecretStatus,
}

impl Written {
    /// Whether the cache, holding version `cached` of the object, has not yet delivered this write: it holds
    /// the version the write was computed from, or any older than the one the write produced (a spec change
    /// made between our read and our write: the write landed after it).
    fn is_newer_than(&self, cached: Option<&str>) -> bool {
        match (cached, self.produced.as_deref()) {
            (Some(cached), _) if cached == self.against => true,
            (Some(cached), Some(produced)) => {
                compare_resource_versions(cached, produced) == Some(std::cmp::Ordering::Less)
            }
            _ => false,
        }
    }
}

/// The last status write per uid, until the cache delivers it.
#[derive(Default)]
pub struct StatusWrites {
    by_uid: Mutex<HashMap<String, Written>>,
}

impl StatusWrites {
    /// The status a reconcile of `ms` (as cached) starts from.
    pub fn base(&self, ms: &ManagedSecret) -> Option<ManagedSecretStatus> {
        let (Some(uid), Ok(mut map)) = (ms.metadata.uid.as_deref(), self.by_uid.lock()) else {
            return ms.status.clone();
        };
        match map.get(uid) {
            // `status.consumers` is the restart task's (written by it alone): the cache's copy is at least as new
            // as the one this write was computed from. Taking the write's would summarise a report the restart
            // task has since replaced, and the cache's delivery of our write, which leaves the report as it is,
            // wakes nobody to look again.
            Some(w) if w.is_newer_than(ms.metadata.resource_version.as_deref()) => Some(ManagedSecretStatus {
                consumers: ms.status.as_ref().map(|s| s.consumers.clone()).unwrap_or_default(),
                ..w.status.clone()
            }),
            Some(_) => {
                map.remove(uid);
                ms.status.clone()
            }
            None => ms.status.clone(),
        }
    }

    /// `status` was written for `ms` (as cached when the write was made); the answer had version `produced`.
    pub fn wrote(&self, ms: &ManagedSecret, status: &ManagedSecretStatus, produced: Option<String>) {
        if let (Some(uid), Some(version), Ok(mut map)) = (
            ms.metadata.uid.as_deref(),
            ms.metadata.resource_version.as_ref(),
            self.by_uid.lock(),
        ) {
            map.insert(
                uid.to_string(),
                Written {
                    against: version.clone(),
                    produced,
                    status: status.clone(),
                },
            );
        }
    }

    /// The watch delivered `ms`: a write it includes is forgotten.
    pub fn delivered(&self, ms: &ManagedSecret) {
        let (Some(uid), Ok(mut map)) = (ms.uid(), self.by_uid.lock()) else {
            return;
        };
        if map
            .get(&uid)
            .is_some_and(|w| !w.is_newer_than(ms.metadata.resource_version.as_deref()))
        {
            map.remove(&uid);
        }
    }

    /// `uid` is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.remove(uid);
        }
    }

    /// How many writes wait for the cache (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_uid.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Orders two resourceVersions of one resource, as KEP-5504 (Comparable Resource Version, stable in Kubernetes
/// 1.35; client-go's `resourceversion.CompareResourceVersion`) defines it: both must be positive integers in
/// decimal without leading zeros, of any length. `None` when either is not (an API server that does not
/// follow the KEP): callers then only trust equality.
pub fn compare_resource_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let valid = |v: &str| !v.is_empty() && !v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit());
    (valid(a) && valid(b)).then(|| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn a_status_write_stays_the_base_until_the_cache_delivers_it() {
        // Read at 10; a spec change made 11; our status write landed on top of it as 12.
        let written = Written {
            against: "10".into(),
            produced: Some("12".into()),
            status: ManagedSecretStatus::default(),
        };
        assert!(written.is_newer_than(Some("10")));
        assert!(written.is_newer_than(Some("11")), "the spec change predates the write");
        assert!(!written.is_newer_than(Some("12")));
        assert!(!written.is_newer_than(Some("13")));
        // Versions that are not KEP-5504 integers: only equality is trusted.
        let opaque = Written {
            against: "a".into(),
            produced: Some("c".into()),
            status: ManagedSecretStatus::default(),
        };
        assert!(opaque.is_newer_than(Some("a")));
        assert!(!opaque.is_newer_than(Some("b")));
    }

    #[test]
    fn a_write_is_forgotten_once_the_watch_delivers_it() {
        let writes = StatusWrites::default();
        let at = |rv: &str| {
            let mut ms = ManagedSecret::new("a", Default::default());
            ms.metadata.uid = Some("u".into());
            ms.metadata.resource_version = Some(rv.into());
            ms
        };
        let status = ManagedSecretStatus {
            observed_generation: Some(7),
            ..ManagedSecretStatus::default()
        };
        writes.wrote(&at("10"), &status, Some("12".into()));
        assert_eq!(writes.base(&at("11")).and_then(|s| s.observed_generation), Some(7));
        writes.delivered(&at("11"));
        assert_eq!(writes.len(), 1, "11 is older than the write");
        writes.delivered(&at("12"));
        assert_eq!(writes.len(), 0);
        assert_eq!(writes.base(&at("12")), None, "the cached object's status (none here)");
    }

    #[test]
    fn the_consumer_report_comes_from_the_cache_even_under_a_newer_write() {
        // Read at 10 with the old report; the restart task wrote the new one as 11; our status write (computed
        // from 10, with the old report in it) landed as 12. The cache, at 11, has the newer report.
        let writes = StatusWrites::default();
        let report = |name: &str| {
            vec![crate::api::ConsumerStatus {
                kind: crate::api::WorkloadKind::Deployment,
                name: name.into(),
                secrets_hash: None,
                state: crate::api::ConsumerState::Restarted,
                message: None,
                failed_value_hash: None,
            }]
        };
        let mut read = ManagedSecret::new("a", Default::default());
        read.metadata.uid = Some("u".into());
        read.metadata.resource_version = Some("10".into());
        let ours = ManagedSecretStatus {
            observed_generation: Some(7),
            consumers: report("old"),
            ..ManagedSecretStatus::default()
        };
        writes.wrote(&read, &ours, Some("12".into()));
        let mut cached = read.clone();
        cached.metadata.resource_version = Some("11".into());
        cached.status = Some(ManagedSecretStatus {
            consumers: report("new"),
            ..ManagedSecretStatus::default()
        });
        let base = writes.base(&cached).unwrap_or_default();
        assert_eq!(base.observed_generation, Some(7), "our write is newer for our fields");
        assert_eq!(
            base.consumers,
            report("new"),
            "the restart task's report is the cache's"
        );
    }

    #[test]
    fn resource_versions_compare_as_kep_5504_says() {
        let cmp = compare_resource_versions;
        assert_eq!(cmp("9", "10"), Some(Less));
        assert_eq!(cmp("123456789012345678901234567890", "99"), Some(Greater));
        assert_eq!(cmp("42", "42"), Some(Equal));
        assert_eq!(cmp("042", "42"), None, "leading zeros are not a resourceVersion");
        assert_eq!(cmp("0", "1"), None, "0 is never a live resourceVersion");
        assert_eq!(cmp("", "1"), None);
        assert_eq!(cmp("a1", "1"), None);
    }
}
