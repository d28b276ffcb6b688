//! Where a ManagedSecret keeps its record in the target Secret it fills. Several ManagedSecrets may fill one
//! Secret, each its own keys, so each has its own annotations and its own server-side apply field manager:
//!
//! - annotations `<name>.keyward.dev/<field>` — `managed-secret` (its name), `value-hash`, `source-revision`,
//!   and the rotation bookkeeping (`last-rotation`, `previous-key`, ..., signed by `bookkeeping`) — where
//!   `<name>` is the ManagedSecret's name (a DNS subdomain, so a valid annotation prefix), or `h-<sha256 prefix>`
//!   for the rare name too long to be one with `.keyward.dev` (over 241 characters);
//! - field manager `keyward/<name>` (`keyward/h-<sha256 prefix>` past Kubernetes' 128 characters).
//!
//! Secrets written before several could share one carry one record as `keyward.dev/<field>` under field
//! manager `keyward` (the *legacy* record); it is read, and replaced by the owner's first write.
//! Kubernetes' rules: annotation keys (prefix a DNS subdomain of at most 253 characters, name at most 63),
//! managedFields manager names (at most 128 characters).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::managed_secret::{MANAGED_SECRET_ANNOTATION, RESERVED_PREFIX};

/// The domain of keyward's own annotations (`keyward.dev`).
const DOMAIN: &str = "keyward.dev";
/// The field manager of the legacy record.
pub const LEGACY_FIELD_MANAGER: &str = "keyward";

/// One ManagedSecret's record in a Secret: the domain its annotations are under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    domain: String,
}

impl Record {
    /// The record of ManagedSecret `name`.
    pub fn of(name: &str) -> Record {
        let domain = if name.len() + DOMAIN.len() < 253 {
            format!("{name}.{DOMAIN}")
        } else {
            format!("h-{}.{DOMAIN}", short_hash(name))
        };
        Record { domain }
    }

    /// The legacy record (`keyward.dev/<field>`).
    pub fn legacy() -> Record {
        Record {
            domain: DOMAIN.to_string(),
        }
    }

    pub fn is_legacy(&self) -> bool {
        self.domain == DOMAIN
    }

    /// The key of `annotation` (one of the `keyward.dev/<field>` constants, e.g.
    /// [`super::VALUE_HASH_ANNOTATION`]) in this record.
    pub fn key(&self, annotation: &str) -> String {
        let field = annotation.strip_prefix(RESERVED_PREFIX).unwrap_or(annotation);
        format!("{}/{field}", self.domain)
    }
}

/// The server-side apply field manager of ManagedSecret `name`'s writes to its target Secret.
pub fn field_manager(name: &str) -> String {
    let manager = format!("keyward/{name}");
    if manager.len() <= 128 {
        manager
    } else {
        format!("keyward/h-{}", short_hash(name))
    }
}

fn short_hash(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..12])
}

/// The ManagedSecrets with a record in a Secret whose annotations are `annotations`, by name: the per-name
/// records, and the legacy one.
pub fn records(annotations: &BTreeMap<String, String>) -> BTreeMap<String, Record> {
    let field = MANAGED_SECRET_ANNOTATION
        .strip_prefix(RESERVED_PREFIX)
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (key, name) in annotations {
        let Some((domain, rest)) = key.split_once('/') else {
            continue;
        };
        if rest != field {
            continue;
        }
        if domain == DOMAIN {
            out.entry(name.clone()).or_insert_with(Record::legacy);
        } else if Record::of(name).domain == domain {
            // Believed only under the domain its name gives: a key copied to another name is not a record.
            out.insert(name.clone(), Record::of(name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VALUE_HASH_ANNOTATION;

    #[test]
    fn records_are_named_and_found() {
        let r = Record::of("app-db");
        assert_eq!(r.key(VALUE_HASH_ANNOTATION), "app-db.keyward.dev/value-hash");
        assert_eq!(Record::legacy().key(VALUE_HASH_ANNOTATION), "keyward.dev/value-hash");
        let long = "a".repeat(250);
        let k = Record::of(&long).key(MANAGED_SECRET_ANNOTATION);
        assert!(k.starts_with("h-") && k.len() - "/managed-secret".len() <= 253, "{k}");
        assert_eq!(field_manager("app-db"), "keyward/app-db");
        assert!(field_manager(&long).len() <= 128);
        let annotations = BTreeMap::from([
            ("app-db.keyward.dev/managed-secret".to_string(), "app-db".to_string()),
            ("app-db.keyward.dev/value-hash".to_string(), "h".to_string()),
            (k.clone(), long.clone()),
            ("keyward.dev/managed-secret".to_string(), "old".to_string()),
            // Not where `other`'s record would be: ignored.
            ("x.keyward.dev/managed-secret".to_string(), "other".to_string()),
        ]);
        let found = records(&annotations);
        assert_eq!(
            found.keys().map(String::as_str).collect::<Vec<_>>(),
            [long.as_str(), "app-db", "old"]
        );
        assert!(found["old"].is_legacy());
        assert_eq!(found["app-db"], r);
    }
}
