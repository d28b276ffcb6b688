//! The spec rules keyward enforces itself, behind admission (the CRD's rules and the chart's
//! ValidatingAdmissionPolicy): a second line for objects admitted before a rule existed, or by a cluster
//! without the policy.

use crate::api::{ManagedSecret, TARGET_TYPES, is_reserved_key};
use crate::rotation::generate;

/// A rule the spec breaks: the condition reason and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub reason: &'static str,
    pub message: String,
}

/// Every rule the spec breaks.
pub fn check(ms: &ManagedSecret) -> Vec<Broken> {
    let mut out = Vec::new();
    let target = &ms.spec.target;
    if let Some(t) = &target.type_
        && !TARGET_TYPES.contains(&t.as_str())
    {
        out.push(Broken {
            reason: "TargetTypeNotAllowed",
            message: format!(
                "target.type {t:?} is not one keyward writes (use one of {})",
                TARGET_TYPES.join(", ")
            ),
        });
    }
    for (what, keys) in [("labels", &target.labels), ("annotations", &target.annotations)] {
        if let Some(k) = keys.keys().find(|k| is_reserved_key(k)) {
            out.push(Broken {
                reason: "ReservedKey",
                message: format!("target.{what} sets {k:?}: keys under keyward.dev/ are keyward's own records"),
            });
        }
    }
    if let Some(r) = &ms.spec.rotation
        && let Err(e) = generate::validate(r.generator.as_ref())
    {
        out.push(Broken {
            reason: "GeneratorTooWeak",
            message: e.to_string(),
        });
    }
    out
}
