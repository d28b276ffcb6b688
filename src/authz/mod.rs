//! Authorization: keyward acts for tenants with more authority than any of them, so every action a
//! ManagedSecret asks for (`request`) needs a grant of an AccessPolicy (`grants`), the spec must keep keyward's
//! own rules (`rules`), and a GitHub secret has one owner (`ownership`). Default deny: an object with any
//! action refused is refused whole, before anything is read or written for it. Pure: the controller supplies
//! the policies, the namespaces' labels and the other ManagedSecrets.

pub mod glob;
pub mod grants;
pub mod ownership;
pub mod request;
pub mod rules;

use std::sync::Arc;

use crate::api::{AccessStatus, GrantedAction, ManagedSecret, RefusedAction};
use grants::{NamespaceInfo, Policies};
use request::Action;

/// A refused action (or broken rule): the condition reason and a message that says what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub action: String,
    pub reason: &'static str,
    pub message: String,
}

/// What authorization found for one ManagedSecret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Each action and the grant that allows it.
    pub granted: Vec<(Action, String)>,
    pub refused: Vec<Refusal>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.refused.is_empty()
    }

    /// As status reports it.
    pub fn status(&self) -> AccessStatus {
        AccessStatus {
            granted: self
                .granted
                .iter()
                .map(|(a, g)| GrantedAction {
                    action: a.to_string(),
                    grant: g.clone(),
                })
                .collect(),
            refused: self
                .refused
                .iter()
                .map(|r| RefusedAction {
                    action: r.action.clone(),
                    reason: r.reason.to_string(),
                })
                .collect(),
        }
    }
}

/// Authorizes everything `ms` asks for, for its namespace `ns`. `others` are the other ManagedSecrets (for the
/// ownership of GitHub secrets); `namespace` gives another namespace's labels.
pub fn authorize(
    ms: &ManagedSecret,
    ns: &NamespaceInfo,
    policies: &Policies,
    others: &dyn Fn() -> Vec<Arc<ManagedSecret>>,
    namespace: &dyn Fn(&str) -> NamespaceInfo,
) -> Decision {
    let mut decision = Decision::default();
    for broken in rules::check(ms) {
        decision.refused.push(Refusal {
            action: "use this spec".into(),
            reason: broken.reason,
            message: broken.message,
        });
    }
    let actions = match request::actions(ms) {
        Ok(a) => a,
        Err(e) => {
            decision.refused.push(Refusal {
                action: "read the spec".into(),
                reason: "InvalidSource",
                message: e.0,
            });
            return decision;
        }
    };
    for action in actions {
        let Some(grant) = policies.grant(ns, &action) else {
            decision.refused.push(Refusal {
                action: action.to_string(),
                reason: action.not_granted(),
                message: format!(
                    "namespace {} may not {action}: no AccessPolicy grants it (it needs {})",
                    ns.name,
                    action.needs()
                ),
            });
            continue;
        };
        if let Action::GithubPush(target) = &action
            && let Some(owner) = ownership::other_owner(ms, target, &others(), policies, namespace)
        {
            decision.refused.push(Refusal {
                action: action.to_string(),
                reason: "TargetConflict",
                message: format!("{} is pushed by ManagedSecret {owner}, which owns it", target.key()),
            });
            continue;
        }
        decision.granted.push((action, grant));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(name: &str, ns: &str, created: i64, spec: serde_json::Value) -> ManagedSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}"),
                         "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": spec
        }))
        .unwrap()
    }

    fn pushing(name: &str, ns: &str, created: i64, secret: &str) -> ManagedSecret {
        ms(
            name,
            ns,
            created,
            serde_json::json!({
                "source": {"esc": {"environment": format!("acme/{ns}/prod"), "path": "k"}},
                "target": {"key": "K"},
                "rotation": {"period": "90d", "pushTo": [{"github": {"organization": "acme", "secretName": secret}}]}
            }),
        )
    }

    const POLICIES: &str = r#"
kind: AccessPolicy
metadata: {name: teams}
spec:
  namespaces: {names: ["team-*"]}
  esc: [{environments: ["acme/team-*/prod"], actions: [Read]}]
  github: [{organization: acme, secrets: ["SHARED_*"]}]
---
kind: AccessPolicy
metadata: {name: payments}
spec:
  namespaces: {names: [payments]}
  esc: [{environments: [acme/payments/prod], actions: [Read]}]
  github: [{organization: acme, secrets: [PAYMENTS_CARD_KEY]}]
"#;

    fn info(name: &str) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: None,
        }
    }

    #[test]
    fn a_refused_push_names_the_missing_grant_and_nothing_is_granted_for_it() {
        let policies = Policies::parse(POLICIES, "p").unwrap();
        let thief = pushing("steal", "team-a", 100, "PAYMENTS_CARD_KEY");
        let d = authorize(&thief, &info("team-a"), &policies, &Vec::new, &info);
        assert!(!d.allowed());
        assert_eq!(d.refused[0].reason, "GithubPushNotGranted");
        assert!(
            d.refused[0].message.contains("github:org/acme/PAYMENTS_CARD_KEY"),
            "{:?}",
            d.refused
        );
        let owner = pushing("card", "payments", 50, "PAYMENTS_CARD_KEY");
        let d = authorize(&owner, &info("payments"), &policies, &Vec::new, &info);
        assert!(d.allowed(), "{:?}", d.refused);
        assert_eq!(d.status().granted.len(), 2);
    }

    #[test]
    fn one_github_secret_has_one_owner() {
        let policies = Policies::parse(POLICIES, "p").unwrap();
        let first = pushing("first", "team-a", 10, "SHARED_TOKEN");
        let second = pushing("second", "team-b", 20, "shared_token");
        let all = vec![Arc::new(first.clone()), Arc::new(second.clone())];
        let others = || all.clone();
        assert!(authorize(&first, &info("team-a"), &policies, &others, &info).allowed());
        let d = authorize(&second, &info("team-b"), &policies, &others, &info);
        assert_eq!(d.refused[0].reason, "TargetConflict");
        assert!(
            d.refused[0].message.contains("team-a/first"),
            "{}",
            d.refused[0].message
        );
        // An older claimant without the grant does not count.
        let squatter = pushing("early", "misc", 1, "SHARED_TOKEN");
        let all = vec![Arc::new(squatter), Arc::new(first.clone())];
        let others = || all.clone();
        assert!(authorize(&first, &info("team-a"), &policies, &others, &info).allowed());
    }

    #[test]
    fn the_object_that_pushed_a_secret_keeps_it() {
        let policies = Policies::parse(POLICIES, "p").unwrap();
        // team-b pushed it; team-a's object is as old (creation times are whole seconds) or older, and sorts
        // first by namespace: it still does not take the secret over.
        let mut incumbent = pushing("card", "team-b", 20, "SHARED_TOKEN");
        incumbent.status = Some(
            serde_json::from_value(serde_json::json!({
                "pushes": [{"target": "github:org/acme/SHARED_TOKEN", "pushTime": "2025-01-01T00:00:00Z"}]
            }))
            .unwrap(),
        );
        for created in [20, 5] {
            let newcomer = pushing("grab", "team-a", created, "shared_token");
            let all = vec![Arc::new(incumbent.clone()), Arc::new(newcomer.clone())];
            let others = || all.clone();
            assert!(authorize(&incumbent, &info("team-b"), &policies, &others, &info).allowed());
            let d = authorize(&newcomer, &info("team-a"), &policies, &others, &info);
            assert_eq!(d.refused[0].reason, "TargetConflict", "created {created}");
            assert!(d.refused[0].message.contains("team-b/card"), "{}", d.refused[0].message);
        }
    }

    #[test]
    fn broken_rules_are_refused_by_keyward_too() {
        let policies = Policies::allow_all();
        let sa_token = ms(
            "t",
            "team-a",
            1,
            serde_json::json!({
                "source": {"esc": {"environment": "acme/team-a/prod", "path": "k"}},
                "target": {"key": "token", "type": "kubernetes.io/service-account-token",
                           "annotations": {"keyward.dev/last-rotation": "2099-01-01T00:00:00Z"}},
                "rotation": {"period": "90d", "strategy": "Generate",
                             "generator": {"classes": ["Symbols"], "symbols": "!"}}
            }),
        );
        let d = authorize(&sa_token, &info("team-a"), &policies, &Vec::new, &info);
        let reasons: Vec<&str> = d.refused.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, ["TargetTypeNotAllowed", "ReservedKey", "GeneratorTooWeak"]);
        let dots = ms(
            "d",
            "team-a",
            1,
            serde_json::json!({"source": {"esc": {"environment": "acme/team-a/..", "path": "k"}}, "target": {"key": "K"}}),
        );
        let d = authorize(&dots, &info("team-a"), &policies, &Vec::new, &info);
        assert_eq!(d.refused[0].reason, "InvalidSource");
    }
}
