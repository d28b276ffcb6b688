//! Evaluation of an environment definition into the values an open session serves: `imports` merged in
//! order (later wins, the importing environment wins over all), `${path}` interpolation against the merged
//! result, `fn::secret` (decrypted, marked secret), a few pure builtins, the dev rotator
//! `fn::rotate::dev-random` (its state), and unknown values for builtins this server does not run (providers,
//! other rotators), the way ESC reports values it cannot compute.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value as Json, json};

use super::crypto::SecretKey;
use keyward::esc::path::{PropertyPath, Segment};
use keyward::yaml::{self, Kind, Node, Range};

/// A range in a named environment, as the ESC API's `Range` schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceRange {
    pub environment: String,
    pub range: Range,
}

impl SourceRange {
    pub fn to_json(&self) -> Json {
        json!({
            "environment": self.environment,
            "begin": self.range.begin.to_json(),
            "end": self.range.end.to_json(),
        })
    }
}

/// A problem with a definition, as the ESC API's `EnvironmentDiagnostic` schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diagnostic {
    pub summary: String,
    pub path: Option<String>,
    pub range: Option<SourceRange>,
}

impl Diagnostic {
    pub fn new(summary: impl Into<String>) -> Self {
        Diagnostic {
            summary: summary.into(),
            path: None,
            range: None,
        }
    }

    pub fn at(summary: impl Into<String>, environment: &str, range: Range, path: Option<&str>) -> Self {
        Diagnostic {
            summary: summary.into(),
            path: path.map(str::to_owned),
            range: Some(SourceRange {
                environment: environment.to_owned(),
                range,
            }),
        }
    }

    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("summary".into(), Json::String(self.summary.clone()));
        if let Some(p) = &self.path {
            m.insert("path".into(), Json::String(p.clone()));
        }
        if let Some(r) = &self.range {
            m.insert("range".into(), r.to_json());
        }
        Json::Object(m)
    }
}

/// The ESC API's `EnvironmentDiagnostics` body.
pub(crate) fn diagnostics_json(diags: &[Diagnostic]) -> Json {
    json!({"diagnostics": diags.iter().map(Diagnostic::to_json).collect::<Vec<_>>()})
}

/// A JSON number token as the definition wrote it when that is JSON (`1.50`, `123456789012345678901234567890`),
/// else serde_json's rendering of its value (YAML's `0x1F`, `+1`, `.5`). ESC keeps a number's text from the
/// definition to the open answer (Go's `json.Number`), so neither the digits of a wide integer nor the
/// trailing zeros of a decimal are lost on the way, and this server must not round them through an f64.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NumberText(String);

impl NumberText {
    /// The number YAML resolved `text` to (`value`), keeping `text` when it is a JSON number token.
    pub fn new(text: &str, value: &Number) -> Self {
        if serde_json::from_str::<Number>(text).is_ok() {
            NumberText(text.to_string())
        } else {
            NumberText::from_number(value)
        }
    }

    pub fn from_number(value: &Number) -> Self {
        NumberText(value.to_string())
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

impl Serialize for NumberText {
    /// As the token itself (a raw JSON value), not as a parsed f64.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(self.0.clone())
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Null,
    Bool(bool),
    Number(NumberText),
    String(String),
    List(Vec<EValue>),
    Object(BTreeMap<String, EValue>),
}

/// An evaluated value: the ESC API's `Value` schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EValue {
    pub v: V,
    pub secret: bool,
    pub unknown: bool,
    pub def: Option<SourceRange>,
    /// The value this one overrides (from an import), as `trace.base`.
    pub base: Option<Box<EValue>>,
}

impl EValue {
    pub fn new(v: V, def: Option<SourceRange>) -> Self {
        EValue {
            v,
            secret: false,
            unknown: false,
            def,
            base: None,
        }
    }

    pub fn unknown(def: Option<SourceRange>) -> Self {
        EValue {
            unknown: true,
            ..EValue::new(V::Null, def)
        }
    }

    pub fn empty_object() -> Self {
        EValue::new(V::Object(BTreeMap::new()), None)
    }

    /// Plain JSON with every leaf marked `secret` when `secret` is set (for values derived from a secret).
    pub fn from_json(j: &Json, secret: bool, def: &Option<SourceRange>) -> Self {
        let v = match j {
            Json::Null => V::Null,
            Json::Bool(b) => V::Bool(*b),
            Json::Number(n) => V::Number(NumberText::from_number(n)),
            Json::String(s) => V::String(s.clone()),
            Json::Array(items) => V::List(items.iter().map(|i| EValue::from_json(i, secret, def)).collect()),
            Json::Object(m) => V::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), EValue::from_json(v, secret, def)))
                    .collect(),
            ),
        };
        let leaf = !matches!(v, V::List(_) | V::Object(_));
        EValue {
            secret: secret && leaf,
            ..EValue::new(v, def.clone())
        }
    }

    /// The value without the `Value` wrappers, as a tree (numbers become serde_json's; responses serialize
    /// [`ValueJson`] or [`PlainJson`], which keep their text).
    pub fn plain(&self) -> Json {
        serde_json::to_value(PlainJson(self)).unwrap_or(Json::Null)
    }

    fn any(&self, f: &dyn Fn(&EValue) -> bool) -> bool {
        f(self)
            || match &self.v {
                V::List(items) => items.iter().any(|i| i.any(f)),
                V::Object(m) => m.values().any(|i| i.any(f)),
                _ => false,
            }
    }

    pub fn deep_secret(&self) -> bool {
        self.any(&|v| v.secret)
    }

    pub fn deep_unknown(&self) -> bool {
        self.any(&|v| v.unknown)
    }

    /// A copy with every secret value replaced by `[secret]`, for answers that must not reveal them.
    pub fn redacted(&self) -> EValue {
        let v = if self.secret {
            V::String("[secret]".into())
        } else {
            match &self.v {
                V::List(items) => V::List(items.iter().map(EValue::redacted).collect()),
                V::Object(m) => V::Object(m.iter().map(|(k, v)| (k.clone(), v.redacted())).collect()),
                other => other.clone(),
            }
        };
        EValue {
            v,
            secret: self.secret,
            unknown: self.unknown,
            def: self.def.clone(),
            base: self.base.as_ref().map(|b| Box::new(b.redacted())),
        }
    }

    pub fn get(&self, a: &Segment) -> Option<&EValue> {
        match (&self.v, a) {
            (V::Object(m), Segment::Key(k)) => m.get(k),
            (V::List(items), Segment::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    pub fn at(&self, path: &[Segment]) -> Option<&EValue> {
        path.iter().try_fold(self, |v, a| v.get(a))
    }
}

/// Merges `own` over `base`: objects merge key by key (recursively), anything else replaces.
/// The ESC API's `Value` JSON of a value (`{"value", "secret", "unknown", "trace"}`, nested values wrapped
/// alike), numbers written as their text: what open sessions serve.
pub(crate) struct ValueJson<'a>(pub &'a EValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("value", &Inner(v, ValueJson))?;
        if v.secret {
            m.serialize_entry("secret", &true)?;
        }
        if v.unknown {
            m.serialize_entry("unknown", &true)?;
        }
        m.serialize_entry("trace", &Trace(v))?;
        m.end()
    }
}

/// A value without the `Value` wrappers, numbers written as their text.
pub(crate) struct PlainJson<'a>(pub &'a EValue);

impl Serialize for PlainJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Inner(self.0, PlainJson).serialize(s)
    }
}

/// The JSON of a value itself, its items and entries written by the wrapper `W`.
struct Inner<'a, W>(&'a EValue, fn(&'a EValue) -> W);

impl<'a, W: Serialize> Serialize for Inner<'a, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wrap = self.1;
        match &self.0.v {
            V::Null => s.serialize_unit(),
            V::Bool(b) => s.serialize_bool(*b),
            V::Number(n) => n.serialize(s),
            V::String(text) => s.serialize_str(text),
            V::List(items) => s.collect_seq(items.iter().map(wrap)),
            V::Object(m) => s.collect_map(m.iter().map(|(k, v)| (k, wrap(v)))),
        }
    }
}

/// A value's `trace`: where it was defined, and the value it overrides.
struct Trace<'a>(&'a EValue);

impl Serialize for Trace<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(def) = &self.0.def {
            m.serialize_entry("def", &def.to_json())?;
        }
        if let Some(base) = &self.0.base {
            m.serialize_entry("base", &ValueJson(base))?;
        }
        m.end()
    }
}

/// The properties of an environment (its top-level object) as `{name: Value}`; `{}` for anything else.
pub(crate) struct PropertiesJson<'a>(pub &'a EValue);

impl Serialize for PropertiesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.v {
            V::Object(m) => s.collect_map(m.iter().map(|(k, v)| (k, ValueJson(v)))),
            _ => s.serialize_map(Some(0))?.end(),
        }
    }
}

pub(crate) fn merge(base: &EValue, own: EValue) -> EValue {
    let EValue {
        v,
        secret,
        unknown,
        def,
        base: _,
    } = own;
    let v = match (&base.v, v) {
        (V::Object(bm), V::Object(om)) => {
            let mut m = bm.clone();
            for (k, v) in om {
                let merged = match m.get(&k) {
                    Some(b) => merge(b, v),
                    None => v,
                };
                m.insert(k, merged);
            }
            V::Object(m)
        }
        (_, v) => v,
    };
    EValue {
        v,
        secret,
        unknown,
        def,
        base: Some(Box::new(base.clone())),
    }
}

/// Where evaluation finds the definitions of imported environments (of the same organization).
pub(crate) trait Environments {
    /// The current definition of `project/name`, if that environment exists.
    fn definition(&self, project: &str, name: &str) -> Option<String>;
}

/// The result of evaluating a definition: the properties (an object) and any problems found.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    pub properties: EValue,
    pub diagnostics: Vec<Diagnostic>,
}

/// Splits an import reference: `project/env`, or `env` for the legacy `default` project.
pub(crate) fn import_target(reference: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((p, e)) => (p.to_owned(), e.to_owned()),
        None => ("default".to_owned(), reference.to_owned()),
    }
}

/// Evaluates the definition `text` of the environment `name` (`project/env`).
pub(crate) fn evaluate(envs: &dyn Environments, key: &SecretKey, name: &str, text: &str) -> Evaluation {
    let mut ctx = Ctx {
        envs,
        key,
        cache: HashMap::new(),
        stack: vec![name.to_owned()],
        diags: Vec::new(),
    };
    let properties = ctx.eval_env(name, text);
    Evaluation {
        properties,
        diagnostics: ctx.diags,
    }
}

struct Ctx<'a> {
    envs: &'a dyn Environments,
    key: &'a SecretKey,
    cache: HashMap<String, EValue>,
    /// The chain of imports being evaluated, to report cycles.
    stack: Vec<String>,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn eval_env(&mut self, name: &str, text: &str) -> EValue {
        let root = match yaml::parse(text) {
            Ok(Some(root)) => root,
            Ok(None) => return EValue::empty_object(),
            Err(e) => {
                let r = Range {
                    begin: e.pos,
                    end: e.pos,
                };
                self.diags.push(Diagnostic::at(e.message, name, r, None));
                return EValue::empty_object();
            }
        };
        if root.as_map().is_none() {
            if root.as_str().is_some_and(str::is_empty) {
                return EValue::empty_object();
            }
            self.diags.push(Diagnostic::at(
                "the definition must be a YAML mapping",
                name,
                root.range,
                None,
            ));
            return EValue::empty_object();
        }

        let mut base: Option<EValue> = None;
        if let Some(imports) = root.get("imports") {
            for reference in self.import_list(name, imports) {
                let Some(v) = self.import(name, &reference.0, reference.1) else {
                    continue;
                };
                base = Some(match base {
                    Some(b) => merge(&b, v),
                    None => v,
                });
            }
        }

        let mut own = EnvEval {
            name: name.to_owned(),
            key: self.key,
            exprs: Vec::new(),
            memo: Vec::new(),
            root: None,
            base: base.map(Rc::new),
            diags: Vec::new(),
        };
        match root.get("values") {
            None => {}
            Some(values) if values.as_map().is_some() => own.root = Some(own.build(values, "values")),
            Some(values) if values.to_json().is_null() => {}
            Some(values) => own.diags.push(Diagnostic::at(
                "values must be a mapping",
                name,
                values.range,
                Some("values"),
            )),
        }
        own.memo = vec![Memo::New; own.exprs.len()];
        let result = match (own.root, own.base.clone()) {
            (Some(id), Some(b)) => {
                let v = own.eval(id);
                merge(&b, v)
            }
            (Some(id), None) => own.eval(id),
            (None, Some(b)) => (*b).clone(),
            (None, None) => EValue::empty_object(),
        };
        self.diags.append(&mut own.diags);
        result
    }

    /// The import references of a definition, with the node each came from.
    fn import_list<'n>(&mut self, name: &str, imports: &'n Node) -> Vec<(String, &'n Node)> {
        let mut out = Vec::new();
        match &imports.kind {
            Kind::Seq(items) => {
                for item in items {
                    match &item.kind {
                        Kind::Scalar { text, .. } => out.push((text.clone(), item)),
                        // `- env: {merge: false}`: imported but not merged into the values.
                        Kind::Map(entries) if entries.len() == 1 => {
                            let merge = entries[0].1.get("merge").map(Node::to_json);
                            if merge != Some(Json::Bool(false)) {
                                out.push((entries[0].0.key_string(), item));
                            }
                        }
                        _ => self.diags.push(Diagnostic::at(
                            "an import must be an environment name",
                            name,
                            item.range,
                            Some("imports"),
                        )),
                    }
                }
            }
            _ if imports.to_json().is_null() => {}
            _ => self.diags.push(Diagnostic::at(
                "imports must be a list",
                name,
                imports.range,
                Some("imports"),
            )),
        }
        out
    }

    fn import(&mut self, importer: &str, reference: &str, node: &Node) -> Option<EValue> {
        let (project, env) = import_target(reference);
        let target = format!("{project}/{env}");
        if self.stack.contains(&target) {
            self.diags.push(Diagnostic::at(
                format!("cyclic import of {reference}"),
                importer,
                node.range,
                Some("imports"),
            ));
            return None;
        }
        if let Some(v) = self.cache.get(&target) {
            return Some(v.clone());
        }
        let Some(text) = self.envs.definition(&project, &env) else {
            self.diags.push(Diagnostic::at(
                format!("unknown environment {reference:?}"),
                importer,
                node.range,
                Some("imports"),
            ));
            return None;
        };
        self.stack.push(target.clone());
        let v = self.eval_env(&target, &text);
        self.stack.pop();
        self.cache.insert(target, v.clone());
        Some(v)
    }
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Ref(PropertyPath),
}

#[derive(Debug, Clone)]
enum ExprKind {
    Literal(Json),
    /// A number scalar, its text kept.
    Number(NumberText),
    Interpolate(Vec<Part>),
    List(Vec<usize>),
    Object(Vec<(String, usize)>),
    /// `fn::secret`: the plaintext, or why it could not be had.
    Secret(Result<String, String>),
    Builtin {
        name: String,
        arg: usize,
    },
}

#[derive(Debug, Clone)]
struct Expr {
    kind: ExprKind,
    range: Range,
    path: String,
}

#[derive(Debug, Clone)]
enum Memo {
    New,
    Busy,
    Done(EValue),
}

/// Evaluation of one environment's own `values`, over the merged values of its imports.
struct EnvEval<'a> {
    name: String,
    key: &'a SecretKey,
    exprs: Vec<Expr>,
    memo: Vec<Memo>,
    root: Option<usize>,
    base: Option<Rc<EValue>>,
    diags: Vec<Diagnostic>,
}

enum Shape {
    Object(Option<usize>),
    List(Option<usize>),
    Other,
}

impl EnvEval<'_> {
    fn push(&mut self, kind: ExprKind, node: &Node, path: &str) -> usize {
        self.exprs.push(Expr {
            kind,
            range: node.range,
            path: path.to_owned(),
        });
        self.exprs.len() - 1
    }

    fn def(&self, id: usize) -> Option<SourceRange> {
        Some(SourceRange {
            environment: self.name.clone(),
            range: self.exprs[id].range,
        })
    }

    fn diag(&mut self, id: usize, summary: impl Into<String>) {
        let e = &self.exprs[id];
        self.diags
            .push(Diagnostic::at(summary, &self.name, e.range, Some(&e.path)));
    }

    fn build(&mut self, node: &Node, path: &str) -> usize {
        match &node.kind {
            Kind::Scalar { text, .. } => {
                let j = node.to_json();
                if let Json::Number(n) = &j {
                    return self.push(ExprKind::Number(NumberText::new(text, n)), node, path);
                }
                if let Json::String(s) = &j
                    && s.contains('$')
                {
                    match parse_interpolation(s) {
                        Ok(parts) => return self.push(ExprKind::Interpolate(parts), node, path),
                        Err(e) => {
                            let id = self.push(ExprKind::Literal(j.clone()), node, path);
                            self.diag(id, e);
                            return id;
                        }
                    }
                }
                self.push(ExprKind::Literal(j), node, path)
            }
            Kind::Seq(items) => {
                let ids = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.build(item, &format!("{path}[{i}]")))
                    .collect();
                self.push(ExprKind::List(ids), node, path)
            }
            Kind::Map(entries) => {
                if let [(k, arg)] = entries.as_slice()
                    && let Some(name) = k.as_str().filter(|n| n.starts_with("fn::"))
                {
                    let fpath = format!("{path}[\"{name}\"]");
                    if name == "fn::secret" {
                        let plain = self.secret_plaintext(arg);
                        return self.push(ExprKind::Secret(plain), node, &fpath);
                    }
                    let arg = self.build(arg, &fpath);
                    return self.push(
                        ExprKind::Builtin {
                            name: name.to_owned(),
                            arg,
                        },
                        node,
                        path,
                    );
                }
                let children = entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.key_string();
                        let id = self.build(v, &format!("{path}.{key}"));
                        (key, id)
                    })
                    .collect();
                self.push(ExprKind::Object(children), node, path)
            }
        }
    }

    fn secret_plaintext(&self, arg: &Node) -> Result<String, String> {
        match &arg.kind {
            Kind::Scalar { text, .. } => literal(text),
            Kind::Map(_) => match arg.get("ciphertext").and_then(Node::as_str) {
                Some(ct) => self
                    .key
                    .decrypt(ct)
                    .map(|p| p.as_str().to_owned())
                    .map_err(|e| format!("fn::secret: {e}")),
                None => Err("fn::secret takes a string or {ciphertext: ...}".into()),
            },
            Kind::Seq(_) => Err("fn::secret takes a string".into()),
        }
    }

    fn eval(&mut self, id: usize) -> EValue {
        match &self.memo[id] {
            Memo::Done(v) => return v.clone(),
            Memo::Busy => {
                self.diag(id, "cyclic reference");
                return EValue::unknown(self.def(id));
            }
            Memo::New => {}
        }
        self.memo[id] = Memo::Busy;
        let def = self.def(id);
        let v = match self.exprs[id].kind.clone() {
            ExprKind::Literal(j) => EValue::from_json(&j, false, &def),
            ExprKind::Number(n) => EValue::new(V::Number(n), def),
            ExprKind::List(ids) => EValue::new(V::List(ids.into_iter().map(|i| self.eval(i)).collect()), def),
            ExprKind::Object(entries) => {
                let mut m = BTreeMap::new();
                for (k, i) in entries {
                    let v = self.eval(i);
                    m.insert(k, v);
                }
                EValue::new(V::Object(m), def)
            }
            ExprKind::Interpolate(parts) => self.interpolate(id, &parts),
            ExprKind::Secret(Ok(plain)) => EValue {
                secret: true,
                ..EValue::new(V::String(plain), def)
            },
            ExprKind::Secret(Err(e)) => {
                self.diag(id, e);
                EValue::unknown(def)
            }
            ExprKind::Builtin { name, arg } => self.builtin(id, &name, arg),
        };
        self.memo[id] = Memo::Done(v.clone());
        v
    }

    fn interpolate(&mut self, id: usize, parts: &[Part]) -> EValue {
        let def = self.def(id);
        if let [Part::Ref(path)] = parts {
            return match self.resolve(path) {
                Some(v) => EValue { def, base: None, ..v },
                None => {
                    self.diag(id, format!("unknown property {:?}", path.to_string()));
                    EValue::unknown(def)
                }
            };
        }
        let mut out = String::new();
        let (mut secret, mut unknown) = (false, false);
        for part in parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref(path) => match self.resolve(path) {
                    Some(v) => {
                        secret |= v.deep_secret();
                        unknown |= v.deep_unknown();
                        out.push_str(&stringify(&v));
                    }
                    None => {
                        self.diag(id, format!("unknown property {:?}", path.to_string()));
                        unknown = true;
                    }
                },
            }
        }
        if unknown {
            return EValue {
                secret,
                ..EValue::unknown(def)
            };
        }
        EValue {
            secret,
            ..EValue::new(V::String(out), def)
        }
    }

    /// The merged value at `path` (relative to `values:`), evaluating only what the path needs.
    fn resolve(&mut self, path: &PropertyPath) -> Option<EValue> {
        let base = self.base.clone();
        self.walk(self.root, base.as_deref(), &path.0)
    }

    fn walk(&mut self, own: Option<usize>, base: Option<&EValue>, path: &[Segment]) -> Option<EValue> {
        let Some((first, rest)) = path.split_first() else {
            return match (own, base) {
                (Some(id), Some(b)) => {
                    let v = self.eval(id);
                    Some(merge(b, v))
                }
                (Some(id), None) => Some(self.eval(id)),
                (None, Some(b)) => Some(b.clone()),
                (None, None) => None,
            };
        };
        let Some(id) = own else {
            return base.and_then(|b| b.at(path)).cloned();
        };
        let shape = match (&self.exprs[id].kind, first) {
            (ExprKind::Object(entries), Segment::Key(k)) => {
                Shape::Object(entries.iter().rev().find(|(ek, _)| ek == k).map(|(_, i)| *i))
            }
            (ExprKind::Object(_), Segment::Index(_)) => Shape::Object(None),
            (ExprKind::List(items), Segment::Index(i)) => Shape::List(items.get(*i).copied()),
            (ExprKind::List(_), Segment::Key(_)) => Shape::List(None),
            _ => Shape::Other,
        };
        match shape {
            Shape::Object(child) => self.walk(child, base.and_then(|b| b.get(first)), rest),
            // A list replaces whatever it overrides.
            Shape::List(child) => self.walk(child, None, rest),
            Shape::Other => {
                let v = self.eval(id);
                let merged = match base {
                    Some(b) => merge(b, v),
                    None => v,
                };
                merged.at(path).cloned()
            }
        }
    }

    fn builtin(&mut self, id: usize, name: &str, arg: usize) -> EValue {
        if name == DEV_ROTATOR {
            return self.dev_rotator(id, arg);
        }
        let def = self.def(id);
        let known = matches!(
            name,
            "fn::toJSON" | "fn::fromJSON" | "fn::toBase64" | "fn::fromBase64" | "fn::toString" | "fn::join"
        );
        if !known {
            // Providers (fn::open::*), rotators and anything newer: not run here, reported as unknown.
            return EValue::unknown(def);
        }
        let a = self.eval(arg);
        if a.deep_unknown() {
            return EValue::unknown(def);
        }
        let secret = a.deep_secret();
        let string = |s: String| EValue {
            secret,
            ..EValue::new(V::String(s), def.clone())
        };
        match (name, &a.v) {
            ("fn::toJSON", _) => string(a.plain().to_string()),
            ("fn::toString", _) => string(stringify(&a)),
            ("fn::toBase64", V::String(s)) => string(STANDARD.encode(s)),
            ("fn::fromBase64", V::String(s)) => match STANDARD.decode(s).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(text) => string(text),
                None => {
                    self.diag(id, "fn::fromBase64: the argument is not base64 of UTF-8 text");
                    EValue::unknown(def)
                }
            },
            ("fn::fromJSON", V::String(s)) => match serde_json::from_str::<Json>(s) {
                Ok(j) => EValue::from_json(&j, secret, &def),
                Err(e) => {
                    self.diag(id, format!("fn::fromJSON: {e}"));
                    EValue::unknown(def)
                }
            },
            ("fn::join", V::List(args)) => match args.as_slice() {
                [sep, items] => match (&sep.v, &items.v) {
                    (V::String(sep), V::List(items)) => {
                        string(items.iter().map(stringify).collect::<Vec<_>>().join(sep))
                    }
                    _ => {
                        self.diag(id, "fn::join takes [separator, [items...]]");
                        EValue::unknown(def)
                    }
                },
                _ => {
                    self.diag(id, "fn::join takes [separator, [items...]]");
                    EValue::unknown(def)
                }
            },
            _ => {
                self.diag(id, format!("{name}: the argument has the wrong type"));
                EValue::unknown(def)
            }
        }
    }
}

impl EnvEval<'_> {
    /// `fn::rotate::dev-random: {inputs: {length: N}, state: S}` is its state, as a real rotator's value is the
    /// credentials it last issued (null before the first rotation). Only `state` is evaluated for the value,
    /// so inputs that cannot be known at open time do not hide it.
    fn dev_rotator(&mut self, id: usize, arg: usize) -> EValue {
        let def = self.def(id);
        let entries = match self.exprs[arg].kind.clone() {
            ExprKind::Object(entries) => entries,
            ExprKind::Literal(Json::Null) => Vec::new(),
            _ => {
                self.diag(id, format!("{DEV_ROTATOR} takes {{inputs: {{length: N}}, state: ...}}"));
                return EValue::unknown(def);
            }
        };
        let field = |name: &str| entries.iter().rev().find(|(k, _)| k == name).map(|(_, i)| *i);
        if let Some(inputs) = field("inputs") {
            let inputs = self.eval(inputs);
            if !inputs.deep_unknown()
                && let Err(e) = rotator_length(inputs.plain().get("length"))
            {
                self.diag(id, e);
            }
        }
        match field("state") {
            Some(state) => {
                let v = self.eval(state);
                EValue { def, base: None, ..v }
            }
            None => EValue::new(V::Null, def),
        }
    }
}

/// The one rotator the dev server runs: new random alphanumeric state of `inputs.length` characters.
pub(crate) const DEV_ROTATOR: &str = "fn::rotate::dev-random";
const DEFAULT_ROTATOR_LENGTH: u64 = 32;
const MAX_ROTATOR_LENGTH: u64 = 4096;

/// The length a dev rotator's `inputs.length` asks for (32 when unset).
pub(crate) fn rotator_length(length: Option<&Json>) -> Result<usize, String> {
    match length {
        None | Some(Json::Null) => Ok(DEFAULT_ROTATOR_LENGTH as usize),
        Some(Json::Number(n)) => match n.as_u64() {
            Some(l @ 1..=MAX_ROTATOR_LENGTH) => Ok(l as usize),
            _ => Err(format!(
                "{DEV_ROTATOR}: inputs.length must be a whole number from 1 to {MAX_ROTATOR_LENGTH}"
            )),
        },
        Some(_) => Err(format!("{DEV_ROTATOR}: inputs.length must be a number")),
    }
}

/// A value as text inside an interpolated string.
fn stringify(v: &EValue) -> String {
    match &v.v {
        V::Null => String::new(),
        V::Bool(b) => b.to_string(),
        V::Number(n) => n.text().to_string(),
        V::String(s) => s.clone(),
        V::List(_) | V::Object(_) => v.plain().to_string(),
    }
}

/// The value a string literal means, for places that take no interpolation (`fn::secret`): `$$` is `$`, and a
/// reference is an error.
pub(crate) fn literal(text: &str) -> Result<String, String> {
    match parse_interpolation(text)?.as_slice() {
        [Part::Text(t)] => Ok(t.clone()),
        _ => Err("fn::secret takes a string literal, not an interpolation".into()),
    }
}

/// Splits a string into text and `${path}` references, as ESC does (pulumi/esc `ast.parseInterpolate`): `$$`
/// is a literal `$` wherever it stands, `${` opens a reference, any other `$` is itself.
fn parse_interpolation(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(after_escape) = after.strip_prefix("$$") {
            text.push('$');
            rest = after_escape;
        } else if let Some(inner) = after.strip_prefix("${") {
            // The reference ends at the first `}` outside a quoted key.
            let mut end = None;
            let mut quoted = false;
            let mut escaped = false;
            for (j, c) in inner.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(format!("unterminated interpolation in {s:?}"));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Ref(
                PropertyPath::parse_pulumi(inner[..end].trim()).map_err(|e| e.to_string())?,
            ));
            rest = &inner[end + 1..];
        } else {
            text.push('$');
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() || parts.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Envs(HashMap<String, String>);

    impl Environments for Envs {
        fn definition(&self, project: &str, name: &str) -> Option<String> {
            self.0.get(&format!("{project}/{name}")).cloned()
        }
    }

    fn envs(list: &[(&str, &str)]) -> Envs {
        Envs(list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn plain_of(ev: &Evaluation) -> Json {
        assert!(ev.diagnostics.is_empty(), "{:?}", ev.diagnostics);
        ev.properties.plain()
    }

    /// ESC serves a number as the definition wrote it (field report C1): the served JSON text keeps `1.50`
    /// and a 30-digit integer; YAML-only spellings become JSON numbers; interpolation uses the text too.
    #[test]
    fn numbers_keep_their_text() {
        let key = SecretKey::generate().unwrap();
        let ev = evaluate(
            &envs(&[]),
            &key,
            "p/e",
            "values:\n  price: 1.50\n  big: 123456789012345678901234567890\n  exp: 1e3\n  hex: 0x1F\n  \
             list: [-0.10, 7]\n  said: \"${price} EUR\"\n",
        );
        assert!(ev.diagnostics.is_empty(), "{:?}", ev.diagnostics);
        let values = &ev.properties;
        let served = serde_json::to_string(&PlainJson(values)).unwrap();
        assert_eq!(
            served,
            r#"{"big":123456789012345678901234567890,"exp":1e3,"hex":31,"list":[-0.10,7],"price":1.50,"said":"1.50 EUR"}"#
        );
        let wrapped = serde_json::to_string(&ValueJson(values.get(&Segment::Key("price".into())).unwrap())).unwrap();
        assert!(wrapped.starts_with(r#"{"value":1.50,"trace":"#), "{wrapped}");
    }

    #[test]
    fn plain_values_and_types() {
        let key = SecretKey::generate().unwrap();
        let ev = evaluate(
            &envs(&[]),
            &key,
            "p/e",
            "values:\n  a: 1\n  b: [x, true]\n  c: {d: null}\n",
        );
        assert_eq!(plain_of(&ev), json!({"a": 1, "b": ["x", true], "c": {"d": null}}));
        let empty = evaluate(&envs(&[]), &key, "p/e", "");
        assert_eq!(plain_of(&empty), json!({}));
    }

    #[test]
    fn imports_merge_in_order_and_the_importer_wins() {
        let key = SecretKey::generate().unwrap();
        let src = envs(&[
            (
                "default/base",
                "values:\n  a: base\n  obj: {x: 1, y: 1}\n  only_base: b\n",
            ),
            ("p/mid", "values:\n  a: mid\n  obj: {y: 2}\n"),
        ]);
        let ev = evaluate(
            &src,
            &key,
            "p/top",
            "imports:\n  - base\n  - p/mid\nvalues:\n  obj: {z: 3}\n  from_import: ${only_base}-${obj.y}\n",
        );
        assert_eq!(
            plain_of(&ev),
            json!({"a": "mid", "obj": {"x": 1, "y": 2, "z": 3}, "only_base": "b", "from_import": "b-2"})
        );
        // The overridden value is kept as trace.base.
        let a = ev.properties.get(&Segment::Key("a".into())).unwrap();
        assert_eq!(a.base.as_ref().unwrap().plain(), json!("base"));
        assert_eq!(a.def.as_ref().unwrap().environment, "p/mid");
    }

    #[test]
    fn interpolation_keeps_types_escapes_and_reports_unknowns() {
        let key = SecretKey::generate().unwrap();
        let ev = evaluate(
            &envs(&[]),
            &key,
            "p/e",
            "values:\n  n: 5\n  o: {k: v}\n  whole: ${o}\n  num: ${n}\n  text: n=${n} o=${o.k} $${literal}\n  deep: ${o[\"k\"]}\n  chain: ${text}\n",
        );
        assert_eq!(
            plain_of(&ev),
            json!({"n": 5, "o": {"k": "v"}, "whole": {"k": "v"}, "num": 5,
                "text": "n=5 o=v ${literal}", "deep": "v", "chain": "n=5 o=v ${literal}"})
        );
        let bad = evaluate(&envs(&[]), &key, "p/e", "values:\n  a: ${missing.x}\n  b: ${b}\n");
        let summaries: Vec<_> = bad.diagnostics.iter().map(|d| d.summary.clone()).collect();
        assert!(
            summaries.iter().any(|s| s.contains("unknown property \"missing.x\"")),
            "{summaries:?}"
        );
        assert!(summaries.iter().any(|s| s.contains("cyclic")), "{summaries:?}");
        assert_eq!(bad.diagnostics[0].path.as_deref(), Some("values.a"));
    }

    #[test]
    fn secrets_decrypt_and_taint_what_uses_them() {
        let key = SecretKey::generate().unwrap();
        let ct = key.encrypt("s3cr3t").unwrap();
        let text = format!(
            "values:\n  pw:\n    fn::secret:\n      ciphertext: {ct}\n  inline: {{fn::secret: plain}}\n  url: db://u:${{pw}}@h\n  enc: {{fn::toBase64: \"${{pw}}\"}}\n  obj: {{p: \"${{pw}}\"}}\n"
        );
        let ev = evaluate(&envs(&[]), &key, "p/e", &text);
        let props = &ev.properties;
        let get = |k: &str| props.get(&Segment::Key(k.into())).unwrap().clone();
        assert!(ev.diagnostics.is_empty(), "{:?}", ev.diagnostics);
        assert_eq!((get("pw").plain(), get("pw").secret), (json!("s3cr3t"), true));
        assert_eq!((get("inline").plain(), get("inline").secret), (json!("plain"), true));
        assert_eq!(
            (get("url").plain(), get("url").secret),
            (json!("db://u:s3cr3t@h"), true)
        );
        assert_eq!((get("enc").plain(), get("enc").secret), (json!("czNjcjN0"), true));
        assert!(!get("obj").secret && get("obj").deep_secret());
        assert_eq!(
            serde_json::to_value(ValueJson(&get("pw"))).unwrap()["secret"],
            json!(true)
        );

        let other = SecretKey::generate().unwrap();
        let wrong = evaluate(&envs(&[]), &other, "p/e", &text);
        assert!(wrong.diagnostics.iter().any(|d| d.summary.contains("does not decrypt")));
    }

    #[test]
    fn builtins_and_unknown_providers() {
        let key = SecretKey::generate().unwrap();
        let ev = evaluate(
            &envs(&[]),
            &key,
            "p/e",
            "values:\n  j: {fn::toJSON: {a: [1, 2]}}\n  b: {fn::fromBase64: aGk=}\n  jn: {fn::join: [',', [a, b, 3]]}\n  fj: {fn::fromJSON: '{\"x\": 1}'}\n  aws:\n    fn::open::aws-login:\n      oidc: {roleArn: x}\n  s: {fn::toString: 42}\n",
        );
        assert!(ev.diagnostics.is_empty(), "{:?}", ev.diagnostics);
        let p = ev.properties.plain();
        assert_eq!(p["j"], json!("{\"a\":[1,2]}"));
        assert_eq!(p["b"], json!("hi"));
        assert_eq!(p["jn"], json!("a,b,3"));
        assert_eq!(p["fj"], json!({"x": 1}));
        assert_eq!(p["s"], json!("42"));
        let aws = ev.properties.get(&Segment::Key("aws".into())).unwrap();
        assert!(aws.unknown);
        assert_eq!(serde_json::to_value(ValueJson(aws)).unwrap()["unknown"], json!(true));
    }

    #[test]
    fn the_dev_rotator_is_its_state() {
        let key = SecretKey::generate().unwrap();
        let ct = key.encrypt("st4te").unwrap();
        let text = format!(
            "values:\n  r:\n    fn::rotate::dev-random:\n      inputs: {{length: 16}}\n      state:\n        fn::secret:\n          ciphertext: {ct}\n  fresh: {{fn::rotate::dev-random: {{inputs: {{length: 8}}}}}}\n  bare:\n    fn::rotate::dev-random:\n  other: {{fn::rotate::aws-iam: {{inputs: {{}}}}}}\n  use: x-${{r}}\n"
        );
        let ev = evaluate(&envs(&[]), &key, "p/e", &text);
        assert!(ev.diagnostics.is_empty(), "{:?}", ev.diagnostics);
        let get = |k: &str| ev.properties.get(&Segment::Key(k.into())).unwrap().clone();
        assert_eq!((get("r").plain(), get("r").secret), (json!("st4te"), true));
        assert_eq!(get("fresh").plain(), json!(null));
        assert_eq!(get("bare").plain(), json!(null));
        assert!(get("other").unknown, "rotators the dev server cannot run stay unknown");
        assert_eq!((get("use").plain(), get("use").secret), (json!("x-st4te"), true));

        for bad in [
            "values:\n  r: {fn::rotate::dev-random: {inputs: {length: 0}}}\n",
            "values:\n  r: {fn::rotate::dev-random: {inputs: {length: x}}}\n",
            "values:\n  r: {fn::rotate::dev-random: [1]}\n",
        ] {
            let ev = evaluate(&envs(&[]), &key, "p/e", bad);
            assert!(!ev.diagnostics.is_empty(), "{bad}");
        }
    }

    #[test]
    fn import_problems_are_diagnostics() {
        let key = SecretKey::generate().unwrap();
        let src = envs(&[("p/a", "imports: [p/b]\n"), ("p/b", "imports: [p/a]\n")]);
        let ev = evaluate(&src, &key, "p/a", "imports: [p/b]\n");
        assert!(ev.diagnostics.iter().any(|d| d.summary.contains("cyclic import")));
        let missing = evaluate(&src, &key, "p/x", "imports: [nope]\nvalues: {a: 1}\n");
        assert!(missing.diagnostics[0].summary.contains("unknown environment \"nope\""));
        let bad = evaluate(&src, &key, "p/x", "values: [1]\n");
        assert!(bad.diagnostics[0].summary.contains("values must be a mapping"));
    }

    #[test]
    fn values_carry_their_definition_range() {
        let key = SecretKey::generate().unwrap();
        let ev = evaluate(&envs(&[]), &key, "proj/env", "values:\n  greeting: hello\n");
        let g = serde_json::to_value(ValueJson(ev.properties.get(&Segment::Key("greeting".into())).unwrap())).unwrap();
        assert_eq!(
            g["trace"]["def"],
            json!({"environment": "proj/env", "begin": {"line": 2, "column": 13, "byte": 20},
                "end": {"line": 2, "column": 18, "byte": 25}})
        );
    }

    #[test]
    fn interpolation_parsing() {
        assert!(parse_interpolation("${a").is_err());
        assert!(parse_interpolation("${a..b}").is_err());
        let parts = parse_interpolation("x ${a[\"}\"]} y").unwrap();
        assert_eq!(parts.len(), 3);
        assert!(matches!(&parts[0], Part::Text(t) if t == "x "));
        assert!(matches!(&parts[1], Part::Ref(p) if p.to_string() == "a[\"}\"]"));
        let cost = parse_interpolation("costs $5").unwrap();
        assert!(matches!(cost.as_slice(), [Part::Text(t)] if t == "costs $5"));
    }
}
