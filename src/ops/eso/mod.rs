//! `keyward import --from-external-secrets`: External Secrets Operator's ExternalSecrets that read Pulumi ESC
//! (through a SecretStore or ClusterSecretStore with `provider.pulumi`) as ManagedSecrets, with an AccessPolicy
//! draft granting what they read. Every field either converts to what gives the same Secret, or is listed with
//! why it does not; with anything listed nothing is written. `docs/migrating-from-eso.md` has the table.
//!
//! ESO's semantics, as its v1 API and Pulumi provider define them (external-secrets v2.9.0,
//! `apis/externalsecrets/v1/externalsecret_types.go`, `providers/v1/pulumi/pulumi.go`,
//! <https://external-secrets.io/latest/provider/pulumi/>): `remoteRef.key` is a Pulumi property path under the
//! environment's `values:`; `remoteRef.property` and `version` are ignored by that provider; `dataFrom.extract`
//! gives an object's top-level keys; `dataFrom.find` is not supported by it; `refreshInterval` defaults to 1h and
//! `0` syncs once; `creationPolicy` Owner (default) sets an owner reference, Orphan does not.

mod template;

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use serde_json::Value;

use super::error::{OpsError, Problem};
use super::validate::Checker;
use crate::api::{
    AccessPolicy, AccessPolicySpec, DeletionPolicy, EscAction, EscGrant, EscObject, EscProperty, EscValue,
    ManagedSecret, ManagedSecretSpec, MergePolicy, NamespaceSelector, Source, Target, Template, TemplateText,
    is_reserved_key,
};
use crate::esc::{PropertyPath, Segment};

/// ESO's default ESC API URL (`spec.provider.pulumi.apiUrl`).
const DEFAULT_API_URL: &str = "https://api.pulumi.com/api/esc";

/// What the conversion gives.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Each ManagedSecret with the ExternalSecret it came from (`namespace/name`).
    pub objects: Vec<(String, ManagedSecret)>,
    /// One AccessPolicy per namespace: Read of the environments and paths its ManagedSecrets read.
    pub policies: Vec<AccessPolicy>,
    /// What differs from ESO without changing the Secret's data, or what to do besides applying the output.
    pub notes: Vec<String>,
}

/// A store: the environment it reads.
struct Store {
    environment: String,
}

/// Converts the ExternalSecrets, SecretStores and ClusterSecretStores in `text` (a YAML stream; `kind: List`
/// documents are read item by item). `namespace` is the namespace of objects that name none.
///
/// Errors: [`OpsError::Invalid`] listing every field that does not convert (by object and field), when there
/// is one; nothing is returned then.
pub fn convert(text: &str, source_name: &str, namespace: Option<&str>) -> Result<Converted, OpsError> {
    let invalid = |problems: Vec<Problem>| OpsError::Invalid {
        source_name: source_name.to_string(),
        problems,
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| {
        invalid(vec![Problem {
            line: None,
            secret: None,
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        }])
    })?;
    let mut objects = Vec::new();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("List") => objects.extend(doc["items"].as_array().cloned().unwrap_or_default()),
            _ if doc.is_null() => {}
            _ => objects.push(doc),
        }
    }
    let mut problems = Vec::new();
    let mut notes = BTreeSet::new();
    let ns_of = |o: &Value| o["metadata"]["namespace"].as_str().or(namespace).map(str::to_string);
    // Stores by (namespace, or "" for a ClusterSecretStore; name): its environment, or None when it does not
    // convert (said once, for the store).
    let mut stores: BTreeMap<(String, String), Option<Store>> = BTreeMap::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        if kind != "SecretStore" && kind != "ClusterSecretStore" {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let scope = if kind == "ClusterSecretStore" {
            String::new()
        } else {
            ns_of(o).unwrap_or_default()
        };
        let what = format!(
            "{kind} {}",
            if scope.is_empty() {
                name.clone()
            } else {
                format!("{scope}/{name}")
            }
        );
        match store(o, &mut notes) {
            Ok(s) => {
                stores.insert((scope, name), Some(s));
            }
            Err(message) => {
                problems.push(problem(&what, message));
                stores.insert((scope, name), None);
            }
        }
    }
    let mut out = Vec::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        match kind {
            "ExternalSecret" => {}
            "SecretStore" | "ClusterSecretStore" => continue,
            other => {
                problems.push(problem(
                    &format!("{other} {name}"),
                    "not an ExternalSecret, SecretStore or ClusterSecretStore: leave it out of the input".into(),
                ));
                continue;
            }
        }
        let Some(ns) = ns_of(o) else {
            problems.push(problem(
                &format!("ExternalSecret {name}"),
                "metadata.namespace is not set: set it, or give --namespace".into(),
            ));
            continue;
        };
        let what = format!("ExternalSecret {ns}/{name}");
        let mut es = Conversion {
            what: what.clone(),
            problems: Vec::new(),
            notes: &mut notes,
        };
        if let Some(ms) = es.external_secret(o, &ns, &stores) {
            out.push((format!("{ns}/{name}"), ms));
        }
        problems.extend(es.problems);
    }
    if out.is_empty() && problems.is_empty() {
        problems.push(problem("input", "holds no ExternalSecret".into()));
    }
    let checker = Checker::new()?;
    for (from, ms) in &out {
        for message in checker.check(ms) {
            problems.push(problem(
                &format!("ExternalSecret {from}"),
                format!("converted, it is invalid: {message}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let policies = policies(&out);
    Ok(Converted {
        objects: out,
        policies,
        notes: notes.into_iter().collect(),
    })
}

fn problem(what: &str, message: String) -> Problem {
    Problem {
        line: None,
        secret: Some(what.to_string()),
        message,
    }
}

/// A store's environment (`provider.pulumi`: organization, project, environment).
fn store(o: &Value, notes: &mut BTreeSet<String>) -> Result<Store, String> {
    let provider = &o["spec"]["provider"];
    let Some(pulumi) = provider.get("pulumi") else {
        let name = provider
            .as_object()
            .and_then(|p| p.keys().next().cloned())
            .unwrap_or_default();
        return Err(format!("provider {name:?} is not Pulumi ESC: keyward reads ESC only"));
    };
    let field = |f: &str| pulumi[f].as_str().filter(|s| !s.is_empty());
    let (Some(org), Some(project), Some(env)) = (field("organization"), field("project"), field("environment")) else {
        return Err("provider.pulumi needs organization, project and environment".into());
    };
    if let Some(url) = field("apiUrl").filter(|u| u.trim_end_matches('/') != DEFAULT_API_URL) {
        notes.insert(format!(
            "a store reads ESC at {url}: start keyward with --esc-url {url} (keyward has one ESC endpoint)"
        ));
    }
    notes.insert(
        "keyward reads ESC with its own token (--esc-token-file or --esc-token-secret), not the stores' \
         accessToken Secrets; give it a token that can open the environments below"
            .into(),
    );
    Ok(Store {
        environment: format!("{org}/{project}/{env}"),
    })
}

/// One ExternalSecret's conversion, collecting what does not convert.
struct Conversion<'a> {
    what: String,
    problems: Vec<Problem>,
    notes: &'a mut BTreeSet<String>,
}

impl Conversion<'_> {
    fn refuse(&mut self, field: &str, why: impl Into<String>) {
        self.problems
            .push(problem(&self.what, format!("{field}: {}", why.into())));
    }

    /// Lists every field of `object` (at `at`) that is not in `known`.
    fn only(&mut self, object: &Value, at: &str, known: &[&str]) {
        for key in object.as_object().into_iter().flat_map(|o| o.keys()) {
            if !known.contains(&key.as_str()) {
                self.refuse(&format!("{at}.{key}"), "not supported by keyward's conversion");
            }
        }
    }

    fn external_secret(
        &mut self,
        o: &Value,
        ns: &str,
        stores: &BTreeMap<(String, String), Option<Store>>,
    ) -> Option<ManagedSecret> {
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let spec = &o["spec"];
        self.only(
            spec,
            "spec",
            &[
                "secretStoreRef",
                "refreshInterval",
                "refreshPolicy",
                "target",
                "data",
                "dataFrom",
            ],
        );
        let store_ref = &spec["secretStoreRef"];
        self.only(store_ref, "spec.secretStoreRef", &["name", "kind"]);
        let store_name = store_ref["name"].as_str().unwrap_or_default();
        let key = match store_ref["kind"].as_str().unwrap_or("SecretStore") {
            "ClusterSecretStore" => (String::new(), store_name.to_string()),
            _ => (ns.to_string(), store_name.to_string()),
        };
        let environment = match stores.get(&key) {
            Some(Some(s)) => s.environment.clone(),
            Some(None) => {
                self.refuse(
                    "spec.secretStoreRef",
                    format!("store {store_name:?} does not convert (see its problem)"),
                );
                String::new()
            }
            None => {
                self.refuse(
                    "spec.secretStoreRef",
                    format!(
                        "store {store_name:?} is not in the input (give the SecretStore or ClusterSecretStore too)"
                    ),
                );
                String::new()
            }
        };
        match spec["refreshPolicy"].as_str() {
            None | Some("Periodic") => {}
            Some(p) => self.refuse(
                "spec.refreshPolicy",
                format!("{p}: keyward refreshes periodically only"),
            ),
        }
        let refresh_interval = self.refresh_interval(&spec["refreshInterval"]);
        let mut esc = EscProperty {
            environment,
            ..EscProperty::default()
        };
        for (n, d) in spec["data"].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.data[{n}]");
            self.only(d, &at, &["secretKey", "remoteRef"]);
            let Some(key) = d["secretKey"].as_str() else {
                self.refuse(&at, "secretKey is missing");
                continue;
            };
            if let Some(path) = self.remote_ref(&d["remoteRef"], &format!("{at}.remoteRef")) {
                esc.data.push(EscValue {
                    key: key.to_string(),
                    path,
                });
            }
        }
        for (n, d) in spec["dataFrom"].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.dataFrom[{n}]");
            self.only(d, &at, &["extract", "find", "rewrite"]);
            if d.get("extract").is_none() {
                self.refuse(
                    &at,
                    "only extract converts (ESO's Pulumi provider does not support find or generators)",
                );
                continue;
            }
            let key_prefix = self.rewrite(&d["rewrite"], &format!("{at}.rewrite"));
            if let Some(path) = self.remote_ref(&d["extract"], &format!("{at}.extract")) {
                esc.data_from.push(EscObject { path, key_prefix });
                self.notes.insert(
                    "dataFrom.extract: ESO gives the object's top-level keys (a nested object as JSON that keeps ESC's \
                     value/trace wrappers); keyward gives one key per leaf (a_b for {a: {b: ...}}): the same Secret \
                     for flat objects"
                        .into(),
                );
            }
        }
        let data_keys: BTreeSet<&str> = esc.data.iter().map(|d| d.key.as_str()).collect();
        if data_keys.len() != esc.data.len() {
            self.refuse("spec.data", "a secretKey repeats");
        }
        if esc.data.is_empty() && esc.data_from.is_empty() && self.problems.is_empty() {
            self.refuse("spec", "neither data nor dataFrom names a value");
        }
        let target = self.target(o, &spec["target"], &name);
        if !self.problems.is_empty() {
            return None;
        }
        let (target, deletion_policy) = target;
        Some(ManagedSecret {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.to_string()),
                ..ObjectMeta::default()
            },
            spec: ManagedSecretSpec {
                source: Source {
                    esc: Some(esc),
                    kubernetes_secret: None,
                },
                target,
                refresh_interval,
                deletion_policy,
                consumers: None,
                rotation: None,
            },
            status: None,
        })
    }

    /// `refreshInterval` (a Go duration; ESO's default 1h is keyward's too).
    fn refresh_interval(&mut self, v: &Value) -> Option<String> {
        let text = v.as_str()?;
        let seconds = go_duration_seconds(text);
        match seconds {
            Some(0) => {
                self.refuse(
                    "spec.refreshInterval",
                    "0 syncs once and never again; keyward always refreshes: set a long interval (e.g. 24h)",
                );
                None
            }
            Some(s) if s < 10 => {
                self.refuse(
                    "spec.refreshInterval",
                    format!("{text} is shorter than keyward's least, 10s"),
                );
                None
            }
            Some(3600) => None,
            Some(s) => Some(keyward_duration(s)),
            None => {
                self.refuse(
                    "spec.refreshInterval",
                    format!("{text:?} is not a duration of whole seconds"),
                );
                None
            }
        }
    }

    /// A `remoteRef` or `extract`: its key as keyward's path.
    fn remote_ref(&mut self, r: &Value, at: &str) -> Option<String> {
        self.only(
            r,
            at,
            &[
                "key",
                "property",
                "version",
                "conversionStrategy",
                "decodingStrategy",
                "metadataPolicy",
                "nullBytePolicy",
            ],
        );
        if r.get("property").is_some() {
            self.refuse(
                &format!("{at}.property"),
                "ESO's Pulumi provider ignores it (the value is key's whole value); fold it into key if that is what \
                 you meant, or remove it",
            );
        }
        if r.get("version").is_some() {
            self.refuse(
                &format!("{at}.version"),
                "ESO's Pulumi provider ignores it (it reads the latest revision); remove it, and pin with \
                 source.esc.version after conversion if you want a pin",
            );
        }
        for (field, ok) in [
            ("decodingStrategy", "None"),
            ("metadataPolicy", "None"),
            ("nullBytePolicy", "Ignore"),
        ] {
            if let Some(v) = r[field].as_str().filter(|v| *v != ok) {
                self.refuse(
                    &format!("{at}.{field}"),
                    format!("{v}: keyward writes values as ESC gives them"),
                );
            }
        }
        if let Some(v) = r["conversionStrategy"].as_str().filter(|v| *v != "Default") {
            self.refuse(
                &format!("{at}.conversionStrategy"),
                format!("{v}: keyward converts key names as ESO's Default does"),
            );
        }
        let Some(key) = r["key"].as_str() else {
            self.refuse(at, "key is missing");
            return None;
        };
        match spec_path(key) {
            Ok(p) => Some(p),
            Err(why) => {
                self.refuse(&format!("{at}.key"), why);
                None
            }
        }
    }

    /// `dataFrom.rewrite`: a regexp that only puts a prefix before every key becomes `keyPrefix`.
    fn rewrite(&mut self, r: &Value, at: &str) -> Option<String> {
        let steps = r.as_array()?;
        let [step] = steps.as_slice() else {
            self.refuse(at, "only one regexp step that adds a prefix converts");
            return None;
        };
        let (source, target) = (step["regexp"]["source"].as_str(), step["regexp"]["target"].as_str());
        let prefix = match (source, target) {
            (Some("^"), Some(t)) => Some(t),
            (Some("^(.*)$" | "(.*)" | "^(.*)"), Some(t)) => t.strip_suffix("$1").or_else(|| t.strip_suffix("${1}")),
            _ => None,
        };
        match prefix.filter(|p| !p.contains('$')) {
            Some(p) => Some(p.to_string()),
            None => {
                self.refuse(at, "only a regexp that puts a prefix before every key (source ^, or ^(.*)$ with target PREFIX$1) converts");
                None
            }
        }
    }

    /// `target`: name, creationPolicy, deletionPolicy, template; and the ExternalSecret's own labels and
    /// annotations, which ESO copies to a Secret made without a template.
    fn target(&mut self, o: &Value, t: &Value, name: &str) -> (Target, Option<DeletionPolicy>) {
        self.only(
            t,
            "spec.target",
            &["name", "creationPolicy", "deletionPolicy", "template"],
        );
        let deletion = match t["creationPolicy"].as_str().unwrap_or("Owner") {
            "Owner" => None,
            "Orphan" => Some(DeletionPolicy::Retain),
            p @ ("Merge" | "CreateOrMerge") => {
                self.refuse(
                    "spec.target.creationPolicy",
                    format!("{p}: filling a Secret that other writers fill is not supported yet"),
                );
                None
            }
            p => {
                self.refuse(
                    "spec.target.creationPolicy",
                    format!("{p}: keyward always writes its Secret"),
                );
                None
            }
        };
        match t["deletionPolicy"].as_str() {
            None | Some("Retain") => {}
            Some(p) => {
                self.notes.insert(format!(
                    "target.deletionPolicy {p}: never acts with ESO's Pulumi provider (it reports no missing secret); \
                     keyward never deletes or blanks a Secret because the source failed"
                ));
            }
        }
        let mut target = Target {
            name: t["name"].as_str().filter(|n| *n != name).map(str::to_string),
            ..Target::default()
        };
        let template = &t["template"];
        if template.is_null() {
            let copy = |field: &str| -> BTreeMap<String, String> {
                o["metadata"][field]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        !is_reserved_key(k) && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                    })
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            };
            target.labels = copy("labels");
            target.annotations = copy("annotations");
        } else {
            self.template(template, &mut target);
        }
        (target, deletion)
    }

    fn template(&mut self, t: &Value, target: &mut Target) {
        self.only(
            t,
            "spec.target.template",
            &["engineVersion", "type", "data", "mergePolicy", "metadata"],
        );
        if let Some(v) = t["engineVersion"].as_str().filter(|v| *v != "v2") {
            self.refuse("spec.target.template.engineVersion", format!("{v}: only v2 converts"));
        }
        target.type_ = t["type"].as_str().map(str::to_string);
        let merge_policy = match t["mergePolicy"].as_str() {
            None | Some("Replace") => None,
            Some("Merge") => Some(MergePolicy::Merge),
            Some(p) => {
                self.refuse(
                    "spec.target.template.mergePolicy",
                    format!("{p} is not Replace or Merge"),
                );
                None
            }
        };
        let mut data = BTreeMap::new();
        for (key, text) in t["data"].as_object().into_iter().flatten() {
            let at = format!("spec.target.template.data[{key}]");
            let Some(text) = text.as_str() else {
                self.refuse(&at, "not a string");
                continue;
            };
            match template::translate(text) {
                Ok(tr) => {
                    if tr.to_json {
                        self.notes.insert(
                            "toJson: keyward's tojson writes the same JSON with \": \" and \", \" separators, not the \
                             same bytes"
                                .into(),
                        );
                    }
                    data.insert(key.clone(), TemplateText(tr.text));
                }
                Err(why) => self.refuse(&at, format!("has no translation: {why}")),
            }
        }
        let meta = &t["metadata"];
        self.only(meta, "spec.target.template.metadata", &["labels", "annotations"]);
        for (field, into) in [("labels", &mut target.labels), ("annotations", &mut target.annotations)] {
            for (k, v) in meta[field].as_object().into_iter().flatten() {
                match v.as_str() {
                    Some(v) if !v.contains("{{") => {
                        into.insert(k.clone(), v.to_string());
                    }
                    _ => self.problems.push(problem(
                        &self.what,
                        format!("spec.target.template.metadata.{field}[{k}]: only plain strings convert"),
                    )),
                }
            }
        }
        if !data.is_empty() || merge_policy.is_some() {
            target.template = Some(Template { data, merge_policy });
        }
    }
}

/// An ESO Pulumi key (Pulumi's path syntax, relative to `values:`) as a ManagedSecret path (plain names of
/// letters, digits, `_` and `-`, others quoted).
fn spec_path(key: &str) -> Result<String, String> {
    let path = PropertyPath::parse_pulumi(key).map_err(|e| e.to_string())?;
    if path.0.len() > 1 && path.0.first() == Some(&Segment::Key("values".into())) {
        return Err("a path starting at a key named values reads differently in keyward (which strips values.)".into());
    }
    let mut out = String::new();
    for (n, seg) in path.0.iter().enumerate() {
        match seg {
            Segment::Key(k)
                if k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if n > 0 {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Key(k) => out.push_str(&format!("[{}]", serde_json::to_string(k).unwrap_or_default())),
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    Ok(out)
}

/// A Go duration (`1h0m0s`, `90m`, `30s`) in whole seconds; None for fractions or other units.
fn go_duration_seconds(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

/// Seconds as keyward writes a refresh interval (`1h30m`, `45s`).
fn keyward_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// One AccessPolicy per namespace granting Read of each environment's paths its ManagedSecrets read.
fn policies(objects: &[(String, ManagedSecret)]) -> Vec<AccessPolicy> {
    let mut by_ns: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (_, ms) in objects {
        let Some(esc) = &ms.spec.source.esc else { continue };
        let paths = by_ns
            .entry(ms.metadata.namespace.clone().unwrap_or_default())
            .or_default()
            .entry(esc.environment.clone())
            .or_default();
        paths.extend(esc.paths().map(str::to_string));
    }
    by_ns
        .into_iter()
        .map(|(ns, envs)| {
            let mut p = AccessPolicy::new(
                &format!("{ns}-from-external-secrets"),
                AccessPolicySpec {
                    namespaces: NamespaceSelector {
                        names: vec![ns],
                        ..NamespaceSelector::default()
                    },
                    esc: envs
                        .into_iter()
                        .map(|(env, paths)| EscGrant {
                            environments: vec![env],
                            paths: paths.into_iter().collect(),
                            actions: vec![EscAction::Read],
                        })
                        .collect(),
                    ..AccessPolicySpec::default()
                },
            );
            p.metadata.namespace = None;
            p
        })
        .collect()
}

/// The conversion as one YAML stream: the notes as comments, the AccessPolicy drafts, then the ManagedSecrets.
pub fn render(c: &Converted, source_name: &str) -> Result<String, OpsError> {
    let mut out = format!("# Converted from {source_name} by keyward import --from-external-secrets.\n");
    for n in &c.notes {
        out.push_str(&format!("# Note: {n}\n"));
    }
    for p in &c.policies {
        out.push_str("---\n# A draft: the reads these ManagedSecrets make. Review it before you apply it.\n");
        out.push_str(&yaml(p)?);
    }
    for (from, ms) in &c.objects {
        out.push_str(&format!("---\n# From ExternalSecret {from}\n"));
        out.push_str(&yaml(ms)?);
    }
    Ok(out)
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, OpsError> {
    let mut text = serde_saphyr::to_string(v).map_err(|e| OpsError::Internal(format!("rendering YAML: {e}")))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
