//! Checks a ManagedSecret the way the API server will before `import` writes it: against the CRD's OpenAPI
//! schema (types, enums, lengths), and with local equivalents of the CEL rules the schema carries (patterns,
//! one-of rules, duration bounds). The patterns below are the rules' own; a unit test keeps them equal to the
//! generated CRD, so the two cannot drift apart silently.

use kube::CustomResourceExt;
use regex::Regex;
use serde_json::Value as Json;

use super::error::OpsError;
use crate::api::{ConsumerPolicy, ManagedSecret, RotationStrategy};
use crate::rotation::schedule;

/// `metadata.name` as `import` derives it, and namespaces: a DNS-1123 label.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// `target.name`: a DNS-1123 subdomain (the rule also limits it to 253 characters).
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// `target.key`, `rotation.previousKey`: a Secret data key.
pub const DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// `source.esc.environment`: `org/project/env` or `org/env`.
pub const ENVIRONMENT: &str = r"^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+$";
/// `source.esc.path`: an ESC property path.
pub const PATH: &str = r#"^([A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\]|\["([^"\\]|\\.)*"\])(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\]|\["([^"\\]|\\.)*"\])*$"#;
/// `source.esc.version`: a revision number or tag (or empty).
pub const VERSION: &str = r"^([0-9]+|[A-Za-z0-9_.-]+)$";
/// `refreshInterval`: Go-style, units h, m, s.
pub const REFRESH_INTERVAL: &str = r"^([0-9]+(h|m|s))+$";
/// `rotation.period`, `rotation.gracePeriod`: units d, h, m, s.
pub const PERIOD: &str = r"^([0-9]+(d|h|m|s))+$";

/// The CRD schema and the rule patterns, compiled once per run.
pub struct Checker {
    schema: jsonschema::Validator,
    label: Regex,
    subdomain: Regex,
    data_key: Regex,
    environment: Regex,
    path: Regex,
    version: Regex,
    refresh: Regex,
    period: Regex,
}

fn compile(p: &str) -> Result<Regex, OpsError> {
    Regex::new(p).map_err(|e| OpsError::Internal(format!("rule pattern {p}: {e}")))
}

impl Checker {
    pub fn new() -> Result<Checker, OpsError> {
        let crd = ManagedSecret::crd();
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| OpsError::Internal("the ManagedSecret CRD has no OpenAPI schema".into()))?;
        let schema = serde_json::to_value(schema).map_err(|e| OpsError::Internal(format!("CRD schema: {e}")))?;
        let schema = jsonschema::validator_for(&schema)
            .map_err(|e| OpsError::Internal(format!("the CRD schema does not compile as JSON schema: {e}")))?;
        Ok(Checker {
            schema,
            label: compile(DNS_LABEL)?,
            subdomain: compile(DNS_SUBDOMAIN)?,
            data_key: compile(DATA_KEY)?,
            environment: compile(ENVIRONMENT)?,
            path: compile(PATH)?,
            version: compile(VERSION)?,
            refresh: compile(REFRESH_INTERVAL)?,
            period: compile(PERIOD)?,
        })
    }

    /// Whether `environment` is an ESC environment name as `source.esc.environment` takes it.
    pub fn environment_ok(&self, environment: &str) -> bool {
        self.environment.is_match(environment)
    }

    /// Whether `namespace` is a namespace name (a DNS-1123 label).
    pub fn namespace_ok(&self, namespace: &str) -> bool {
        namespace.len() <= 63 && self.label.is_match(namespace)
    }

    /// Every way `ms` would be refused, each naming its field; empty when it would be accepted.
    pub fn check(&self, ms: &ManagedSecret) -> Vec<String> {
        let mut out = Vec::new();
        match serde_json::to_value(ms) {
            Ok(json) => out.extend(self.schema_errors(&json)),
            Err(e) => out.push(format!("cannot be serialized: {e}")),
        }
        self.rules(ms, &mut out);
        out
    }

    fn schema_errors(&self, json: &Json) -> Vec<String> {
        self.schema
            .iter_errors(json)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    "(object)".to_string()
                } else {
                    at.replace('/', ".")
                };
                format!("schema: {}: {e}", at.trim_start_matches('.'))
            })
            .collect()
    }

    /// The CEL rules of `src/api/managed_secret.rs`, rule by rule, with the API's own messages.
    fn rules(&self, ms: &ManagedSecret, out: &mut Vec<String>) {
        let mut fail = |field: &str, message: &str| out.push(format!("{field}: {message}"));
        let name = ms.metadata.name.as_deref().unwrap_or_default();
        if !(name.len() <= 63 && self.label.is_match(name)) {
            fail(
                "metadata.name",
                "must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters",
            );
        }
        let namespace = ms.metadata.namespace.as_deref().unwrap_or_default();
        if !(namespace.len() <= 63 && self.label.is_match(namespace)) {
            fail(
                "metadata.namespace",
                "must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters",
            );
        }
        let spec = &ms.spec;
        if usize::from(spec.source.esc.is_some()) + usize::from(spec.source.kubernetes_secret.is_some()) != 1 {
            fail(
                "spec.source",
                "exactly one source must be set: source.esc or source.kubernetesSecret",
            );
        }
        if let Some(esc) = &spec.source.esc {
            if !self.environment.is_match(&esc.environment) {
                fail(
                    "spec.source.esc.environment",
                    "environment must be org/project/env or org/env (letters, digits, '.', '_', '-')",
                );
            }
            let paths = esc
                .path
                .iter()
                .map(|p| ("spec.source.esc.path".to_string(), p))
                .chain(
                    esc.data
                        .iter()
                        .enumerate()
                        .map(|(n, d)| (format!("spec.source.esc.data[{n}].path"), &d.path)),
                )
                .chain(
                    esc.data_from
                        .iter()
                        .enumerate()
                        .map(|(n, d)| (format!("spec.source.esc.dataFrom[{n}].path"), &d.path)),
                );
            for (field, path) in paths {
                if !self.path.is_match(path) {
                    fail(
                        &field,
                        "path must be an ESC property path such as a.b, a.b[0] or a[\"k.x\"]",
                    );
                }
            }
            for (n, d) in esc.data.iter().enumerate() {
                if !(d.key.len() <= 253 && self.data_key.is_match(&d.key)) {
                    fail(
                        &format!("spec.source.esc.data[{n}].key"),
                        "source.esc.data key must be a valid Secret data key: letters, digits, '-', '_' or '.'",
                    );
                }
            }
            let several = !esc.data.is_empty() || !esc.data_from.is_empty();
            if esc.path.is_some() == several {
                fail(
                    "spec.source.esc",
                    "source.esc needs exactly one of path (one value, under target.key) or data/dataFrom (several values, each under its own key)",
                );
            }
            if let Some(v) = &esc.version
                && !(v.is_empty() || self.version.is_match(v))
            {
                fail(
                    "spec.source.esc.version",
                    "version must be a revision number or a tag name",
                );
            }
        }
        if let Some(t) = &spec.target.name
            && !(t.len() <= 253 && self.subdomain.is_match(t))
        {
            fail(
                "spec.target.name",
                "target.name must be a valid Secret name (lowercase DNS subdomain)",
            );
        }
        if let Some(key) = &spec.target.key
            && !(key.len() <= 253 && self.data_key.is_match(key))
        {
            fail(
                "spec.target.key",
                "target.key must be a valid Secret data key: letters, digits, '-', '_' or '.'",
            );
        }
        let single =
            spec.source.kubernetes_secret.is_some() || spec.source.esc.as_ref().is_some_and(|e| e.path.is_some());
        if spec.target.key.is_some() != single {
            fail(
                "spec.target.key",
                "target.key names the key of a single value (source.esc.path or source.kubernetesSecret) and only of one: source.esc.data and dataFrom name their own keys",
            );
        }
        if let Some(r) = &spec.refresh_interval {
            let at_least_10s = crate::duration::parse(r).is_ok_and(|d| d.as_secs() >= 10);
            if !(self.refresh.is_match(r) && at_least_10s) {
                fail(
                    "spec.refreshInterval",
                    "refreshInterval must be a duration such as 30s, 15m or 1h (units h, m, s) and at least 10s",
                );
            }
        }
        if let Some(c) = &spec.consumers
            && c.policy == ConsumerPolicy::Explicit
            && c.workloads.is_empty()
        {
            fail(
                "spec.consumers",
                "consumers.workloads must list at least one workload when policy is Explicit",
            );
        }
        let Some(rot) = &spec.rotation else { return };
        if rot.period.is_some() == rot.category.is_some() {
            fail(
                "spec.rotation",
                "rotation needs exactly one of period (e.g. 90d) or category",
            );
        }
        if let Some(p) = &rot.period
            && !self.period.is_match(p)
        {
            fail(
                "spec.rotation.period",
                "rotation.period must be a duration such as 90d, 12h or 30m (units d, h, m, s)",
            );
        }
        if let Some(g) = &rot.grace_period
            && !self.period.is_match(g)
        {
            fail(
                "spec.rotation.gracePeriod",
                "rotation.gracePeriod must be a duration such as 1h or 7d (units d, h, m, s)",
            );
        }
        if let Some(k) = &rot.previous_key
            && !self.data_key.is_match(k)
        {
            fail(
                "spec.rotation.previousKey",
                "rotation.previousKey must be a valid Secret data key: letters, digits, '-', '_' or '.'",
            );
        }
        let pinned = spec
            .source
            .esc
            .as_ref()
            .is_none_or(|e| e.version.as_deref().is_some_and(|v| !v.is_empty()));
        if rot.strategy != RotationStrategy::Notify && pinned {
            fail(
                "spec.rotation.strategy",
                "rotation strategies Generate and Esc need source.esc following the latest revision (no version pin)",
            );
        }
        // What the controller itself insists on (period bounds, grace shorter than the period, the previous key).
        if rot.period.is_some() != rot.category.is_some()
            && let Err(e) = schedule::policy(rot, spec.target.key.as_deref().unwrap_or_default())
        {
            fail("spec.rotation", &e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EscProperty, ManagedSecretSpec, Rotation, RotationCategory, Source, Target};

    /// The `x-kubernetes-validations` rules of the schema node at `path` (property names from the root).
    fn rules_at(schema: &Json, path: &[&str]) -> Vec<String> {
        let mut node = schema;
        for p in path {
            node = &node["properties"][*p];
        }
        node["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["rule"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn patterns_are_the_crds_own() {
        let crd = serde_json::to_value(ManagedSecret::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for (path, pattern) in [
            (&["spec", "target", "name"][..], DNS_SUBDOMAIN),
            (&["spec", "target", "key"][..], DATA_KEY),
            (&["spec", "source", "esc", "environment"][..], ENVIRONMENT),
            (&["spec", "source", "esc", "path"][..], PATH),
            (&["spec", "source", "esc", "version"][..], VERSION),
            (&["spec", "refreshInterval"][..], REFRESH_INTERVAL),
            (&["spec", "rotation", "period"][..], PERIOD),
            (&["spec", "rotation", "gracePeriod"][..], PERIOD),
            (&["spec", "rotation", "previousKey"][..], DATA_KEY),
        ] {
            // CEL single-quoted strings escape backslashes.
            let literal = format!("self.matches('{}')", pattern.replace('\\', "\\\\"));
            let rules = rules_at(schema, path);
            assert!(
                rules.iter().any(|r| r.contains(&literal)),
                "{path:?}: no rule with {literal} in {rules:?}"
            );
        }
    }

    fn sample() -> ManagedSecret {
        let mut ms = ManagedSecret::new(
            "openai-api-key",
            ManagedSecretSpec {
                source: Source {
                    esc: Some(EscProperty {
                        environment: "acme/sophia/prod".into(),
                        path: Some("sophia.ai.openai_api_key".into()),
                        version: None,
                        ..EscProperty::default()
                    }),
                    kubernetes_secret: None,
                },
                target: Target {
                    name: Some("openai-api-key".into()),
                    key: Some("OPENAI_API_KEY".into()),
                    ..Target::default()
                },
                refresh_interval: None,
                deletion_policy: None,
                consumers: None,
                rotation: Some(Box::new(Rotation {
                    category: Some(RotationCategory::ApiKey),
                    ..Rotation::default()
                })),
            },
        );
        ms.metadata.namespace = Some("backend".into());
        ms
    }

    #[test]
    fn a_good_object_passes() {
        let c = Checker::new().unwrap();
        assert_eq!(c.check(&sample()), Vec::<String>::new());
        // Bracketed and quoted path segments are ESC paths too.
        let mut ms = sample();
        ms.spec.source.esc.as_mut().unwrap().path = Some(r#"db.hosts[0]["k.x"]"#.into());
        assert_eq!(c.check(&ms), Vec::<String>::new());
    }

    #[test]
    fn each_rule_names_its_field() {
        let c = Checker::new().unwrap();
        type Edit = fn(&mut ManagedSecret);
        let cases: Vec<(Edit, &str)> = vec![
            (|m| m.metadata.name = Some("Bad_Name".into()), "metadata.name:"),
            (|m| m.metadata.name = Some("a".repeat(64)), "metadata.name:"),
            (|m| m.metadata.namespace = Some("Ns".into()), "metadata.namespace:"),
            (
                |m| m.spec.source.esc.as_mut().unwrap().environment = "just-one".into(),
                "spec.source.esc.environment:",
            ),
            (
                |m| m.spec.source.esc.as_mut().unwrap().path = Some("a..b".into()),
                "spec.source.esc.path:",
            ),
            (
                |m| m.spec.source.esc.as_mut().unwrap().path = Some("1abc".into()),
                "spec.source.esc.path:",
            ),
            (
                |m| m.spec.source.esc.as_mut().unwrap().version = Some("v 1".into()),
                "spec.source.esc.version:",
            ),
            (|m| m.spec.source.esc = None, "spec.source:"),
            (|m| m.spec.target.name = Some("UPPER".into()), "spec.target.name:"),
            (|m| m.spec.target.key = Some("A/B".into()), "spec.target.key:"),
            (|m| m.spec.refresh_interval = Some("5s".into()), "spec.refreshInterval:"),
            (|m| m.spec.refresh_interval = Some("1d".into()), "spec.refreshInterval:"),
            (
                |m| m.spec.rotation.as_mut().unwrap().period = Some("90d".into()),
                "spec.rotation:",
            ),
            (
                |m| {
                    let r = m.spec.rotation.as_mut().unwrap();
                    r.category = None;
                    r.period = Some("90 days".into());
                },
                "spec.rotation.period:",
            ),
            (
                |m| m.spec.rotation.as_mut().unwrap().grace_period = Some("1w".into()),
                "spec.rotation.gracePeriod:",
            ),
            (
                |m| m.spec.rotation.as_mut().unwrap().grace_period = Some("91d".into()),
                "spec.rotation: rotation.gracePeriod \"91d\": must be shorter",
            ),
            (
                |m| {
                    m.spec.rotation.as_mut().unwrap().strategy = RotationStrategy::Generate;
                    m.spec.source.esc.as_mut().unwrap().version = Some("3".into());
                },
                "spec.rotation.strategy:",
            ),
            (
                |m| {
                    m.spec.consumers = Some(crate::api::Consumers {
                        policy: ConsumerPolicy::Explicit,
                        ..Default::default()
                    })
                },
                "spec.consumers:",
            ),
            (
                |m| m.spec.target.key = Some("K".repeat(300)),
                "schema: spec.target.key:",
            ),
        ];
        for (edit, want) in cases {
            let mut ms = sample();
            edit(&mut ms);
            let got = c.check(&ms);
            assert!(got.iter().any(|m| m.starts_with(want)), "{want}: {got:?}");
        }
    }
}
