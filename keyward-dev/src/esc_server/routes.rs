//! The HTTP side: the ESC API under `/api/esc` and the development control endpoints under `/_dev/`.
//!
//! The ESC paths are matched by hand rather than by axum's router: the spec has a path with an empty segment
//! (`open//{openSessionID}`), and every answer, a 404 or 405 included, must be the spec's JSON `Error`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::crypto::random_bytes;
use super::eval::{self, Diagnostic, PropertiesJson, ValueJson};
use super::rotators;
use super::secrets;
use super::state::{Counters, EscServerState, Fault, FaultMode, Session, lock, valid_env, valid_org, valid_project};
use super::store::{EDITOR_LOGIN, EDITOR_NAME, EnvTag, LATEST, RevisionTag, Store, env_key, now};
use keyward::esc::path::PropertyPath;

const YAML: &str = "application/x-yaml";
const REVISION_HEADER: &str = "pulumi-esc-revision";
const DEFAULT_OPEN: Duration = Duration::from_secs(3600);

pub(crate) fn router(state: Arc<EscServerState>) -> Router {
    Router::new()
        .route("/_dev/counters", get(dev_counters))
        .route("/_dev/counters/reset", post(dev_reset_counters))
        .route("/_dev/fault", get(dev_get_fault).put(dev_put_fault))
        .fallback(esc)
        .with_state(state)
}

async fn dev_counters(AxState(state): AxState<Arc<EscServerState>>) -> Response {
    let counters: Counters = lock(&state.counters).clone();
    json_response(StatusCode::OK, json!(counters))
}

async fn dev_reset_counters(AxState(state): AxState<Arc<EscServerState>>) -> Response {
    *lock(&state.counters) = Counters::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn dev_get_fault(AxState(state): AxState<Arc<EscServerState>>) -> Response {
    let fault = lock(&state.fault).clone();
    json_response(StatusCode::OK, json!(fault))
}

async fn dev_put_fault(AxState(state): AxState<Arc<EscServerState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            *lock(&state.fault) = fault.clone();
            json_response(StatusCode::OK, json!(fault))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    }
}

/// A response whose body is `body` serialized (numbers of evaluated values keep their text, see
/// `eval::NumberText`).
fn json_response_of<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response failed: {e}"),
        ),
    }
}

fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

/// The spec's `Error` body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({"message": message.into(), "code": status.as_u16()}))
}

fn diagnostics(status: StatusCode, diags: &[Diagnostic]) -> Response {
    json_response(status, eval::diagnostics_json(diags))
}

fn yaml_response(text: String, extra: &[(&'static str, String)]) -> Response {
    let mut res = (StatusCode::OK, text).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(YAML));
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    res
}

/// An environment named in a path.
#[derive(Debug, Clone)]
struct EnvRef {
    org: String,
    project: String,
    name: String,
}

impl EnvRef {
    fn full(&self) -> String {
        format!("{}/{}/{}", self.org, self.project, self.name)
    }

    fn key(&self) -> String {
        env_key(&self.project, &self.name)
    }
}

#[derive(Debug)]
enum Op {
    ListEnvironments(String),
    CreateEnvironment(String),
    CheckYaml(String),
    GetDefinition(EnvRef),
    GetETag(EnvRef),
    Update(EnvRef),
    Delete(EnvRef),
    Clone(EnvRef),
    Decrypt(EnvRef),
    Open(EnvRef, Option<String>),
    Read(EnvRef, String, Option<String>),
    Versions(EnvRef),
    GetAtVersion(EnvRef, String),
    ListRevisionTags(EnvRef),
    CreateRevisionTag(EnvRef),
    GetRevisionTag(EnvRef, String),
    UpdateRevisionTag(EnvRef, String),
    DeleteRevisionTag(EnvRef, String),
    ListTags(EnvRef),
    CreateTag(EnvRef),
    GetTag(EnvRef, String),
    UpdateTag(EnvRef, String),
    DeleteTag(EnvRef, String),
    Rotate(EnvRef),
    NotFound,
    MethodNotAllowed,
}

/// Matches an ESC path (below `/api/esc/`) to an operation and the endpoint name it is counted under.
fn route(method: &Method, rest: &str, query: &HashMap<String, String>) -> (&'static str, Op) {
    let decoded: Vec<String> = rest.split('/').map(crate::serve::percent_decode).collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let env = |o: &str, p: &str, e: &str| EnvRef {
        org: o.to_owned(),
        project: p.to_owned(),
        name: e.to_owned(),
    };
    let m = method.clone();
    let na = ("methodNotAllowed", Op::MethodNotAllowed);
    match segs.as_slice() {
        ["environments", org] => match m {
            Method::GET => ("listEnvironments", Op::ListEnvironments((*org).into())),
            Method::POST => ("createEnvironment", Op::CreateEnvironment((*org).into())),
            _ => na,
        },
        ["environments", org, "yaml", "check"] => match m {
            Method::POST => ("checkYaml", Op::CheckYaml((*org).into())),
            _ => na,
        },
        ["environments", o, p, e] => match m {
            Method::GET => ("getDefinition", Op::GetDefinition(env(o, p, e))),
            Method::HEAD => ("getETag", Op::GetETag(env(o, p, e))),
            Method::PATCH => ("update", Op::Update(env(o, p, e))),
            Method::DELETE => ("delete", Op::Delete(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "clone"] => match m {
            Method::POST => ("clone", Op::Clone(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "rotate"] => match m {
            Method::POST => ("rotate", Op::Rotate(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "decrypt"] => match m {
            Method::GET => ("decrypt", Op::Decrypt(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "open"] => match m {
            Method::POST => ("open", Op::Open(env(o, p, e), None)),
            _ => na,
        },
        // The spec's property read is `open//{id}?property=`; a property on the single-slash form is
        // honored too rather than silently ignored.
        ["environments", o, p, e, "open", id] if !id.is_empty() => match (m, query.get("property")) {
            (Method::GET, None) => ("read", Op::Read(env(o, p, e), (*id).into(), None)),
            (Method::GET, Some(prop)) => ("readProperty", Op::Read(env(o, p, e), (*id).into(), Some(prop.clone()))),
            _ => na,
        },
        ["environments", o, p, e, "open", "", id] if !id.is_empty() => match m {
            Method::GET => (
                "readProperty",
                Op::Read(
                    env(o, p, e),
                    (*id).into(),
                    Some(query.get("property").cloned().unwrap_or_default()),
                ),
            ),
            _ => na,
        },
        ["environments", o, p, e, "versions"] => match m {
            Method::GET => ("versions", Op::Versions(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "versions", "tags"] => match m {
            Method::GET => ("listRevisionTags", Op::ListRevisionTags(env(o, p, e))),
            Method::POST => ("createRevisionTag", Op::CreateRevisionTag(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "versions", "tags", tag] => match m {
            Method::GET => ("getRevisionTag", Op::GetRevisionTag(env(o, p, e), (*tag).into())),
            Method::PATCH => ("updateRevisionTag", Op::UpdateRevisionTag(env(o, p, e), (*tag).into())),
            Method::DELETE => ("deleteRevisionTag", Op::DeleteRevisionTag(env(o, p, e), (*tag).into())),
            _ => na,
        },
        ["environments", o, p, e, "versions", v] => match m {
            Method::GET => ("getAtVersion", Op::GetAtVersion(env(o, p, e), (*v).into())),
            _ => na,
        },
        ["environments", o, p, e, "versions", v, "open"] => match m {
            Method::POST => ("openAtVersion", Op::Open(env(o, p, e), Some((*v).into()))),
            _ => na,
        },
        ["environments", o, p, e, "tags"] => match m {
            Method::GET => ("listTags", Op::ListTags(env(o, p, e))),
            Method::POST => ("createTag", Op::CreateTag(env(o, p, e))),
            _ => na,
        },
        ["environments", o, p, e, "tags", name] => match m {
            Method::GET => ("getTag", Op::GetTag(env(o, p, e), (*name).into())),
            Method::PATCH => ("updateTag", Op::UpdateTag(env(o, p, e), (*name).into())),
            Method::DELETE => ("deleteTag", Op::DeleteTag(env(o, p, e), (*name).into())),
            _ => na,
        },
        _ => ("notFound", Op::NotFound),
    }
}

fn authorized(state: &EscServerState, headers: &HeaderMap) -> bool {
    let token = lock(&state.token);
    let Some(token) = token.as_ref() else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .unwrap_or("");
    keyward::secret::secrets_equal(presented.trim().as_bytes(), token.as_bytes())
}

/// Decides whether this request (to `endpoint`) fails by injection; heals a fault whose `failCount` runs out.
fn injected_fault(state: &EscServerState, endpoint: &str) -> (Option<Response>, u64) {
    let mut fault = lock(&state.fault);
    let latency = fault.latency_ms;
    // A conflict is about definition updates only; other requests neither fail nor count against it.
    if fault.mode == FaultMode::None || (fault.mode == FaultMode::Conflict && endpoint != "update") {
        return (None, latency);
    }
    if let Some(left) = fault.fail_count {
        if left == 0 {
            fault.mode = FaultMode::None;
            fault.fail_count = None;
            return (None, latency);
        }
        fault.fail_count = Some(left - 1);
    }
    let mode = fault.mode;
    let retry_after = fault.retry_after_seconds;
    if fault.fail_count == Some(0) {
        fault.mode = FaultMode::None;
        fault.fail_count = None;
    }
    drop(fault);
    let (status, message, retry_after) = match mode {
        FaultMode::Conflict => (
            StatusCode::CONFLICT,
            "the environment has changed since the given ETag (injected by keyward-dev)",
            None,
        ),
        FaultMode::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable (injected by keyward-dev)",
            retry_after,
        ),
        _ => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests (injected by keyward-dev)",
            Some(retry_after.unwrap_or(1)),
        ),
    };
    let mut res = error(status, message);
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    lock(&state.counters).faults_injected += 1;
    (Some(res), latency)
}

async fn esc(
    AxState(state): AxState<Arc<EscServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(rest) = uri.path().strip_prefix("/api/esc/") else {
        return error(StatusCode::NOT_FOUND, format!("no such path {}", uri.path()));
    };
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let (endpoint, op) = route(&method, rest, &query);
    {
        let mut c = lock(&state.counters);
        c.total += 1;
        *c.requests.entry(endpoint.to_owned()).or_default() += 1;
        if let Op::Open(env, _) = &op {
            *c.opens.entry(env.full()).or_default() += 1;
        }
    }
    let (fault, latency) = injected_fault(&state, endpoint);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(res) = fault {
        return res;
    }
    if !authorized(&state, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: No credentials provided or are invalid.",
        );
    }
    handle(&state, op, &headers, &query, &body)
}

fn handle(
    state: &EscServerState,
    op: Op,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let org = match &op {
        Op::ListEnvironments(o) | Op::CreateEnvironment(o) | Op::CheckYaml(o) => Some(o.as_str()),
        Op::NotFound | Op::MethodNotAllowed => None,
        Op::GetDefinition(e)
        | Op::GetETag(e)
        | Op::Update(e)
        | Op::Delete(e)
        | Op::Clone(e)
        | Op::Decrypt(e)
        | Op::Open(e, _)
        | Op::Read(e, _, _)
        | Op::Versions(e)
        | Op::GetAtVersion(e, _)
        | Op::ListRevisionTags(e)
        | Op::CreateRevisionTag(e)
        | Op::GetRevisionTag(e, _)
        | Op::UpdateRevisionTag(e, _)
        | Op::DeleteRevisionTag(e, _)
        | Op::ListTags(e)
        | Op::CreateTag(e)
        | Op::GetTag(e, _)
        | Op::UpdateTag(e, _)
        | Op::DeleteTag(e, _)
        | Op::Rotate(e) => Some(e.org.as_str()),
    };
    if let Some(org) = org
        && !valid_org(org)
    {
        return error(StatusCode::BAD_REQUEST, format!("invalid organization name {org:?}"));
    }
    match op {
        Op::NotFound => error(StatusCode::NOT_FOUND, "Not Found"),
        Op::MethodNotAllowed => error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        Op::ListEnvironments(org) => list_environments(state, &org),
        Op::CreateEnvironment(org) => create_environment(state, &org, body),
        Op::CheckYaml(org) => check_yaml(state, &org, body),
        Op::GetDefinition(e) => get_definition(state, &e, false),
        Op::GetETag(e) => get_definition(state, &e, true),
        Op::Update(e) => update(state, &e, headers, body),
        Op::Delete(e) => delete(state, &e),
        Op::Clone(e) => clone(state, &e, body),
        Op::Decrypt(e) => decrypt(state, &e),
        Op::Open(e, version) => open(state, &e, version.as_deref(), query),
        Op::Read(e, id, property) => read(state, &e, &id, property.as_deref()),
        Op::Versions(e) => versions(state, &e, query),
        Op::GetAtVersion(e, v) => get_at_version(state, &e, &v),
        Op::ListRevisionTags(e) => list_revision_tags(state, &e, query),
        Op::CreateRevisionTag(e) => create_revision_tag(state, &e, body),
        Op::GetRevisionTag(e, t) => get_revision_tag(state, &e, &t),
        Op::UpdateRevisionTag(e, t) => update_revision_tag(state, &e, &t, body),
        Op::DeleteRevisionTag(e, t) => delete_revision_tag(state, &e, &t),
        Op::ListTags(e) => list_tags(state, &e, query),
        Op::CreateTag(e) => create_tag(state, &e, body),
        Op::GetTag(e, t) => get_tag(state, &e, &t),
        Op::UpdateTag(e, t) => update_tag(state, &e, &t, body),
        Op::DeleteTag(e, t) => delete_tag(state, &e, &t),
        Op::Rotate(e) => rotate_environment(state, &e, body),
    }
}

fn env_not_found(e: &EnvRef) -> Response {
    error(StatusCode::NOT_FOUND, format!("environment {} not found", e.full()))
}

/// Saves after a change; a failure is the server's (500), and says which file.
fn saved(store: &Store, ok: Response) -> Response {
    match store.save() {
        Ok(()) => ok,
        Err(e) => {
            eprintln!("keyward-dev: esc server: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the data: {e}"))
        }
    }
}

/// A 400 answer, kept small so that `Result`s carrying it stay cheap.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid request body: {e}")))
}

fn list_environments(state: &EscServerState, org: &str) -> Response {
    let store = lock(&state.store);
    let envs: Vec<Json> = store
        .orgs
        .get(org)
        .map(|o| {
            o.environments
                .values()
                .map(|e| {
                    json!({"organization": org, "project": e.project, "name": e.name,
                        "created": e.created, "modified": e.modified})
                })
                .collect()
        })
        .unwrap_or_default();
    json_response(StatusCode::OK, json!({"environments": envs}))
}

#[derive(Deserialize)]
struct CreateEnvironment {
    project: String,
    name: String,
}

fn bad_names(project: &str, name: &str) -> Option<Response> {
    if !valid_project(project) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            format!("invalid project name {project:?}"),
        ));
    }
    if !valid_env(name) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            format!("invalid environment name {name:?}"),
        ));
    }
    None
}

fn create_environment(state: &EscServerState, org: &str, body: &[u8]) -> Response {
    let req: CreateEnvironment = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if let Some(res) = bad_names(&req.project, &req.name) {
        return res;
    }
    let mut store = lock(&state.store);
    match store.create_env(org, &req.project, &req.name) {
        Ok(Some(_)) => saved(&store, StatusCode::NO_CONTENT.into_response()),
        Ok(None) => error(
            StatusCode::CONFLICT,
            format!("environment {org}/{}/{} already exists", req.project, req.name),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn check_yaml(state: &EscServerState, org: &str, body: &[u8]) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return error(StatusCode::BAD_REQUEST, "the definition is not UTF-8");
    };
    let store = lock(&state.store);
    let ev = eval::evaluate(&store.org_view(org), &store.key, "<yaml>", text);
    let redacted = ev.properties.redacted();
    let status = if ev.diagnostics.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let diags: Vec<Json> = ev.diagnostics.iter().map(Diagnostic::to_json).collect();
    #[derive(serde::Serialize)]
    struct Checked<'a> {
        properties: PropertiesJson<'a>,
        diagnostics: Vec<Json>,
    }
    let body = Checked {
        properties: PropertiesJson(&redacted),
        diagnostics: diags,
    };
    json_response_of(status, &body)
}

fn get_definition(state: &EscServerState, e: &EnvRef, head_only: bool) -> Response {
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return if head_only {
            StatusCode::NOT_FOUND.into_response()
        } else {
            env_not_found(e)
        };
    };
    let text = env.current().map(|r| r.definition.clone()).unwrap_or_default();
    let headers = [("etag", env.etag()), (REVISION_HEADER, env.head().to_string())];
    // For HEAD, hyper sends the headers (Content-Length included) and drops the body.
    yaml_response(text, &headers)
}

/// Whether an update's precondition holds: the ETags an `If-Match` header lists (quotes and weak markers
/// aside; `*` matches any), and the `ETag` request header the ESC CLI sends instead, each when present.
fn if_match_ok(headers: &HeaderMap, current: &str) -> bool {
    let bare = |s: &str| s.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    let current = bare(current);
    let matches = |name: header::HeaderName| match headers.get(name) {
        None => true,
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || bare(t) == current)),
    };
    matches(header::IF_MATCH) && matches(header::ETAG)
}

fn update(state: &EscServerState, e: &EnvRef, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return error(StatusCode::BAD_REQUEST, "the definition is not UTF-8");
    };
    let mut store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if !if_match_ok(headers, &env.etag()) {
        return error(
            StatusCode::CONFLICT,
            format!("environment {} has changed since the given ETag", e.full()),
        );
    }
    let encrypted = match secrets::encrypt_definition(&store.key, &e.key(), text) {
        Ok(t) => t,
        Err(diags) => return diagnostics(StatusCode::BAD_REQUEST, &diags),
    };
    let ev = eval::evaluate(&store.org_view(&e.org), &store.key, &e.key(), &encrypted);
    if !ev.diagnostics.is_empty() {
        return diagnostics(StatusCode::BAD_REQUEST, &ev.diagnostics);
    }
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let revision = env.add_revision(encrypted);
    let etag = env.etag();
    let mut res = json_response(StatusCode::OK, json!({"diagnostics": []}));
    for (name, value) in [("etag", etag), (REVISION_HEADER, revision.to_string())] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    saved(&store, res)
}

fn delete(state: &EscServerState, e: &EnvRef) -> Response {
    let mut store = lock(&state.store);
    if !store.delete_env(&e.org, &e.project, &e.name) {
        return env_not_found(e);
    }
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloneEnvironment {
    project: String,
    name: String,
    #[serde(default)]
    preserve_history: bool,
    #[serde(default)]
    preserve_revision_tags: bool,
    #[serde(default)]
    preserve_environment_tags: bool,
    /// Accepted and ignored: the dev server has no teams to grant access to.
    #[serde(default)]
    #[allow(dead_code)]
    preserve_access: bool,
}

fn clone(state: &EscServerState, e: &EnvRef, body: &[u8]) -> Response {
    let req: CloneEnvironment = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if let Some(res) = bad_names(&req.project, &req.name) {
        return res;
    }
    let mut store = lock(&state.store);
    let Some(src) = store.env(&e.org, &e.project, &e.name).cloned() else {
        return env_not_found(e);
    };
    let mut dst = match Store::blank_env(&req.project, &req.name) {
        Ok(d) => d,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    if req.preserve_history {
        dst.revisions = src.revisions.clone();
        if req.preserve_revision_tags {
            dst.revision_tags = src.revision_tags.clone();
        }
    } else if let Some(cur) = src.current() {
        dst.add_revision(cur.definition.clone());
    }
    if req.preserve_environment_tags {
        dst.tags = src.tags.clone();
    }
    if !store.insert_env(&e.org, dst) {
        return error(
            StatusCode::CONFLICT,
            format!("environment {}/{}/{} already exists", e.org, req.project, req.name),
        );
    }
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

fn decrypt(state: &EscServerState, e: &EnvRef) -> Response {
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let text = env.current().map(|r| r.definition.as_str()).unwrap_or("");
    match secrets::decrypt_definition(&store.key, text) {
        Ok(plain) => yaml_response(plain, &[(REVISION_HEADER, env.head().to_string())]),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("decrypting: {err}")),
    }
}

#[derive(Deserialize, Default)]
struct RotateRequest {
    /// The ESC CLI marshals this field without a JSON tag, as `Paths`; both spellings are accepted.
    #[serde(default, alias = "Paths")]
    paths: Option<Vec<String>>,
}

/// `POST .../rotate`: new state for the selected `fn::rotate::dev-random` rotators, stored as a new revision,
/// answered with the ESC CLI's `RotateEnvironmentResponse`.
fn rotate_environment(state: &EscServerState, e: &EnvRef, body: &[u8]) -> Response {
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        match parse_body(body) {
            Ok(r) => r,
            Err(res) => return res.into_response(),
        }
    };
    let mut store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let (env_id, pre) = (env.id.clone(), env.head());
    let text = env.current().map(|r| r.definition.clone()).unwrap_or_default();
    let created = now();
    let (rotated, paths) = match rotators::rotate_definition(&e.key(), &text, &req.paths.unwrap_or_default()) {
        Ok(r) => r,
        Err(diags) => return diagnostics(StatusCode::BAD_REQUEST, &diags),
    };
    let post = if paths.is_empty() {
        None
    } else {
        let encrypted = match secrets::encrypt_definition(&store.key, &e.key(), &rotated) {
            Ok(t) => t,
            Err(diags) => return diagnostics(StatusCode::BAD_REQUEST, &diags),
        };
        let ev = eval::evaluate(&store.org_view(&e.org), &store.key, &e.key(), &encrypted);
        if !ev.diagnostics.is_empty() {
            return diagnostics(StatusCode::BAD_REQUEST, &ev.diagnostics);
        }
        let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
            return env_not_found(e);
        };
        Some(env.add_revision(encrypted))
    };
    let id = || new_session_id().unwrap_or_default();
    let rotations: Vec<Json> = paths
        .iter()
        .map(|p| json!({"id": id(), "environmentPath": p, "status": "succeeded"}))
        .collect();
    let mut event = json!({
        "id": id(), "environmentId": env_id, "created": created, "preRotationRevision": pre,
        "userID": EDITOR_LOGIN, "completed": now(), "status": "succeeded", "rotations": rotations,
    });
    if let Some(post) = post {
        event["postRotationRevision"] = json!(post);
    }
    let mut res = json_response(StatusCode::OK, json!({"secretRotationEvent": event}));
    if let Some(post) = post
        && let Ok(v) = HeaderValue::from_str(&post.to_string())
    {
        res.headers_mut().insert(REVISION_HEADER, v);
    }
    if post.is_some() { saved(&store, res) } else { res }
}

/// Go's `time.ParseDuration` syntax (what the real service accepts): `1h`, `1.5h`, `2h45m`, `300ms`.
fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn new_session_id() -> Option<String> {
    random_bytes::<16>().ok().map(hex::encode)
}

fn open(state: &EscServerState, e: &EnvRef, version: Option<&str>, query: &HashMap<String, String>) -> Response {
    let duration = match query.get("duration") {
        None => DEFAULT_OPEN,
        Some(d) => match parse_duration(d) {
            Some(d) if !d.is_zero() => d,
            _ => return error(StatusCode::BAD_REQUEST, format!("invalid duration {d:?}")),
        },
    };
    let ev = {
        let store = lock(&state.store);
        let Some(env) = store.env(&e.org, &e.project, &e.name) else {
            return env_not_found(e);
        };
        let number = match version {
            None => env.head(),
            Some(v) => match env.resolve_version(v) {
                Some(n) => n,
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("revision or tag {v:?} of environment {} not found", e.full()),
                    );
                }
            },
        };
        let text = env.revision(number).map(|r| r.definition.clone()).unwrap_or_default();
        eval::evaluate(&store.org_view(&e.org), &store.key, &e.key(), &text)
    };
    if !ev.diagnostics.is_empty() {
        return diagnostics(StatusCode::BAD_REQUEST, &ev.diagnostics);
    }
    let Some(id) = new_session_id() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the random number generator failed");
    };
    let now = Instant::now();
    let mut sessions = lock(&state.sessions);
    sessions.retain(|_, s| s.expires > now);
    sessions.insert(
        id.clone(),
        Session {
            org: e.org.clone(),
            env: e.key(),
            properties: ev.properties,
            expires: now + duration,
        },
    );
    json_response(StatusCode::OK, json!({"id": id}))
}

fn read(state: &EscServerState, e: &EnvRef, id: &str, property: Option<&str>) -> Response {
    let sessions = lock(&state.sessions);
    let Some(session) = sessions
        .get(id)
        .filter(|s| s.expires > Instant::now() && s.org == e.org && s.env == e.key())
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("open session {id:?} of environment {} not found or expired", e.full()),
        );
    };
    let Some(property) = property else {
        return json_response_of(
            StatusCode::OK,
            &std::collections::BTreeMap::from([("properties", PropertiesJson(&session.properties))]),
        );
    };
    let path = match PropertyPath::parse_pulumi(property).map_err(|e| e.to_string()) {
        Ok(p) => p,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    match session.properties.at(&path.0) {
        Some(v) => json_response_of(StatusCode::OK, &ValueJson(v)),
        None => error(
            StatusCode::NOT_FOUND,
            format!("property {property:?} not found in environment {}", e.full()),
        ),
    }
}

fn query_u64(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, BadRequest> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| BadRequest(format!("invalid {name} {v:?}"))),
    }
}

fn versions(state: &EscServerState, e: &EnvRef, query: &HashMap<String, String>) -> Response {
    let (before, count) = match (query_u64(query, "before"), query_u64(query, "count")) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(res), _) | (_, Err(res)) => return res.into_response(),
    };
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let list: Vec<Json> = env
        .revisions
        .iter()
        .rev()
        .filter(|r| before.is_none_or(|b| r.number < b))
        .take(count.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX)))
        .map(|r| {
            json!({"number": r.number, "created": r.created, "creatorLogin": r.creator_login,
                "creatorName": r.creator_name, "tags": env.tags_of(r.number)})
        })
        .collect();
    json_response(StatusCode::OK, Json::Array(list))
}

fn get_at_version(state: &EscServerState, e: &EnvRef, version: &str) -> Response {
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    match env.resolve_version(version).and_then(|n| env.revision(n)) {
        Some(r) => yaml_response(r.definition.clone(), &[(REVISION_HEADER, r.number.to_string())]),
        None => error(
            StatusCode::NOT_FOUND,
            format!("revision or tag {version:?} of environment {} not found", e.full()),
        ),
    }
}

fn revision_tag_json(name: &str, t: &RevisionTag) -> Json {
    json!({"name": name, "revision": t.revision, "created": t.created, "modified": t.modified,
        "editorLogin": t.editor_login, "editorName": t.editor_name})
}

/// Revision tag names: the environment-name characters, not all digits (that would read as a revision).
fn valid_tag_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !name.bytes().all(|c| c.is_ascii_digit())
}

fn list_revision_tags(state: &EscServerState, e: &EnvRef, query: &HashMap<String, String>) -> Response {
    let count = match query_u64(query, "count") {
        Ok(c) => c,
        Err(res) => return res.into_response(),
    };
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let after = query.get("after").cloned().unwrap_or_default();
    let all = env.all_revision_tags();
    let mut page: Vec<(&String, &RevisionTag)> = all.iter().filter(|(n, _)| n.as_str() > after.as_str()).collect();
    let limit = count.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
    let more = page.len() > limit;
    page.truncate(limit);
    let mut body = json!({"tags": page.iter().map(|(n, t)| revision_tag_json(n, t)).collect::<Vec<_>>()});
    if more && let Some((last, _)) = page.last() {
        body["nextToken"] = Json::String((*last).clone());
    }
    json_response(StatusCode::OK, body)
}

#[derive(Deserialize)]
struct CreateRevisionTag {
    name: String,
    revision: u64,
}

#[derive(Deserialize)]
struct UpdateRevisionTag {
    revision: u64,
}

fn create_revision_tag(state: &EscServerState, e: &EnvRef, body: &[u8]) -> Response {
    let req: CreateRevisionTag = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if !valid_tag_name(&req.name) {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag name {:?}", req.name));
    }
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if req.name == LATEST || env.revision_tags.contains_key(&req.name) {
        return error(StatusCode::CONFLICT, format!("tag {:?} already exists", req.name));
    }
    if env.revision(req.revision).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("revision {} does not exist", req.revision),
        );
    }
    let at = now();
    env.revision_tags.insert(
        req.name,
        RevisionTag {
            revision: req.revision,
            created: at.clone(),
            modified: at,
            editor_login: EDITOR_LOGIN.into(),
            editor_name: EDITOR_NAME.into(),
        },
    );
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

fn get_revision_tag(state: &EscServerState, e: &EnvRef, tag: &str) -> Response {
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    match env.all_revision_tags().get(tag) {
        Some(t) => json_response(StatusCode::OK, revision_tag_json(tag, t)),
        None => error(StatusCode::NOT_FOUND, format!("tag {tag:?} not found")),
    }
}

fn update_revision_tag(state: &EscServerState, e: &EnvRef, tag: &str, body: &[u8]) -> Response {
    let req: UpdateRevisionTag = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if tag == LATEST {
        return error(
            StatusCode::BAD_REQUEST,
            "the latest tag always names the newest revision",
        );
    }
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if env.revision(req.revision).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("revision {} does not exist", req.revision),
        );
    }
    let Some(t) = env.revision_tags.get_mut(tag) else {
        return error(StatusCode::NOT_FOUND, format!("tag {tag:?} not found"));
    };
    t.revision = req.revision;
    t.modified = now();
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

fn delete_revision_tag(state: &EscServerState, e: &EnvRef, tag: &str) -> Response {
    if tag == LATEST {
        return error(StatusCode::BAD_REQUEST, "the latest tag cannot be deleted");
    }
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if env.revision_tags.remove(tag).is_none() {
        return error(StatusCode::NOT_FOUND, format!("tag {tag:?} not found"));
    }
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

fn env_tag_json(name: &str, t: &EnvTag) -> Json {
    json!({"name": name, "value": t.value, "created": t.created, "modified": t.modified,
        "editorLogin": t.editor_login, "editorName": t.editor_name})
}

fn list_tags(state: &EscServerState, e: &EnvRef, query: &HashMap<String, String>) -> Response {
    let count = match query_u64(query, "count") {
        Ok(c) => c,
        Err(res) => return res.into_response(),
    };
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let after = query.get("after").cloned().unwrap_or_default();
    let limit = count.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
    let page: Vec<(&String, &EnvTag)> = env.tags.iter().filter(|(n, _)| n.as_str() > after.as_str()).collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let tags: serde_json::Map<String, Json> = page.iter().map(|(n, t)| ((*n).clone(), env_tag_json(n, t))).collect();
    let next = if more {
        page.last().map(|(n, _)| (*n).clone()).unwrap_or_default()
    } else {
        String::new()
    };
    json_response(StatusCode::OK, json!({"tags": tags, "nextToken": next}))
}

#[derive(Deserialize)]
struct CreateTag {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateTag {
    current_tag: CurrentTag,
    new_tag: CreateTag,
}

#[derive(Deserialize)]
struct CurrentTag {
    value: String,
}

fn create_tag(state: &EscServerState, e: &EnvRef, body: &[u8]) -> Response {
    let req: CreateTag = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if req.name.is_empty() || req.name.len() > 100 || req.name.contains('/') {
        return error(StatusCode::BAD_REQUEST, format!("invalid tag name {:?}", req.name));
    }
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if env.tags.contains_key(&req.name) {
        return error(StatusCode::CONFLICT, format!("tag {:?} already exists", req.name));
    }
    let at = now();
    let tag = EnvTag {
        value: req.value,
        created: at.clone(),
        modified: at,
        editor_login: EDITOR_LOGIN.into(),
        editor_name: EDITOR_NAME.into(),
    };
    let body = env_tag_json(&req.name, &tag);
    env.tags.insert(req.name, tag);
    saved(&store, json_response(StatusCode::OK, body))
}

fn get_tag(state: &EscServerState, e: &EnvRef, name: &str) -> Response {
    let store = lock(&state.store);
    let Some(env) = store.env(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    match env.tags.get(name) {
        Some(t) => json_response(StatusCode::OK, env_tag_json(name, t)),
        None => error(StatusCode::NOT_FOUND, format!("tag {name:?} not found")),
    }
}

fn update_tag(state: &EscServerState, e: &EnvRef, name: &str, body: &[u8]) -> Response {
    let req: UpdateTag = match parse_body(body) {
        Ok(r) => r,
        Err(res) => return res.into_response(),
    };
    if req.new_tag.name.is_empty() || req.new_tag.name.len() > 100 || req.new_tag.name.contains('/') {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid tag name {:?}", req.new_tag.name),
        );
    }
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    let Some(old) = env.tags.get(name).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("tag {name:?} not found"));
    };
    if old.value != req.current_tag.value {
        return error(
            StatusCode::CONFLICT,
            format!("tag {name:?} has a different current value"),
        );
    }
    if req.new_tag.name != name && env.tags.contains_key(&req.new_tag.name) {
        return error(
            StatusCode::CONFLICT,
            format!("tag {:?} already exists", req.new_tag.name),
        );
    }
    env.tags.remove(name);
    let tag = EnvTag {
        value: req.new_tag.value,
        modified: now(),
        ..old
    };
    let body = env_tag_json(&req.new_tag.name, &tag);
    env.tags.insert(req.new_tag.name, tag);
    saved(&store, json_response(StatusCode::OK, body))
}

fn delete_tag(state: &EscServerState, e: &EnvRef, name: &str) -> Response {
    let mut store = lock(&state.store);
    let Some(env) = store.env_mut(&e.org, &e.project, &e.name) else {
        return env_not_found(e);
    };
    if env.tags.remove(name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("tag {name:?} not found"));
    }
    saved(&store, StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn routes_match_the_spec_paths() {
        let none = q(&[]);
        let name = |m: Method, p: &str, query: &HashMap<String, String>| route(&m, p, query).0;
        assert_eq!(name(Method::GET, "environments/acme", &none), "listEnvironments");
        assert_eq!(name(Method::POST, "environments/acme", &none), "createEnvironment");
        assert_eq!(name(Method::POST, "environments/acme/yaml/check", &none), "checkYaml");
        assert_eq!(name(Method::GET, "environments/acme/p/e", &none), "getDefinition");
        assert_eq!(name(Method::HEAD, "environments/acme/p/e", &none), "getETag");
        assert_eq!(name(Method::PATCH, "environments/acme/p/e", &none), "update");
        assert_eq!(name(Method::DELETE, "environments/acme/p/e", &none), "delete");
        assert_eq!(name(Method::POST, "environments/acme/p/e/open", &none), "open");
        assert_eq!(name(Method::GET, "environments/acme/p/e/open/abc", &none), "read");
        let prop = q(&[("property", "a.b")]);
        assert_eq!(
            name(Method::GET, "environments/acme/p/e/open//abc", &prop),
            "readProperty"
        );
        assert_eq!(
            name(Method::GET, "environments/acme/p/e/open/abc", &prop),
            "readProperty"
        );
        assert_eq!(name(Method::GET, "environments/acme/p/e/versions", &none), "versions");
        assert_eq!(
            name(Method::GET, "environments/acme/p/e/versions/3", &none),
            "getAtVersion"
        );
        assert_eq!(
            name(Method::POST, "environments/acme/p/e/versions/3/open", &none),
            "openAtVersion"
        );
        assert_eq!(
            name(Method::GET, "environments/acme/p/e/versions/tags", &none),
            "listRevisionTags"
        );
        assert_eq!(
            name(Method::POST, "environments/acme/p/e/versions/tags", &none),
            "createRevisionTag"
        );
        assert_eq!(
            name(Method::PATCH, "environments/acme/p/e/versions/tags/t", &none),
            "updateRevisionTag"
        );
        assert_eq!(name(Method::GET, "environments/acme/p/e/tags/t", &none), "getTag");
        assert_eq!(name(Method::PUT, "environments/acme/p/e", &none), "methodNotAllowed");
        assert_eq!(name(Method::GET, "nothing/here", &none), "notFound");
        assert_eq!(name(Method::POST, "environments/acme/p/e/rotate", &none), "rotate");
        assert_eq!(
            name(Method::GET, "environments/acme/p/e/rotate", &none),
            "methodNotAllowed"
        );
        assert_eq!(name(Method::GET, "environments/acme/p/e/open/", &none), "notFound");
        match route(&Method::GET, "environments/acme/p/e/open//s1", &prop).1 {
            Op::Read(e, id, Some(p)) => assert_eq!((e.full(), id, p), ("acme/p/e".into(), "s1".into(), "a.b".into())),
            other => panic!("{other:?}"),
        }
        match route(&Method::GET, "environments/acme/p/e%2Dx/versions/tags/my%20tag", &none).1 {
            Op::GetRevisionTag(e, t) => assert_eq!((e.name, t), ("e-x".into(), "my tag".into())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2h45m"), Some(Duration::from_secs(9900)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "1", "h", "1x", "-1h", "1h-"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn if_match_compares_etags() {
        let mut h = HeaderMap::new();
        assert!(
            if_match_ok(&h, "\"abc\""),
            "no If-Match: accepted, as the official SDK sends none"
        );
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("abc"));
        assert!(if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"old\", W/\"abc\""));
        assert!(if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"stale\""));
        assert!(!if_match_ok(&h, "\"abc\""));
        // The ESC CLI's `ETag` request header, alone or beside If-Match: each present one must match.
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        assert!(if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"stale\""));
        assert!(!if_match_ok(&h, "\"abc\""));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        h.insert(header::ETAG, HeaderValue::from_static("\"stale\""));
        assert!(!if_match_ok(&h, "\"abc\""));
    }

    fn test_state() -> (tempfile::TempDir, EscServerState) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("d.json")).unwrap();
        (dir, EscServerState::new(store, Some("t0ken".into())))
    }

    #[test]
    fn faults_fail_then_heal() {
        let (_dir, state) = test_state();
        assert!(injected_fault(&state, "getDefinition").0.is_none());
        *lock(&state.fault) = Fault::unavailable(Some(7)).with_fail_count(2);
        let (res, _) = injected_fault(&state, "getDefinition");
        let res = res.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "7");
        assert!(injected_fault(&state, "getDefinition").0.is_some());
        assert!(
            injected_fault(&state, "getDefinition").0.is_none(),
            "healed after failCount requests"
        );
        assert_eq!(lock(&state.fault).mode, FaultMode::None);
        assert_eq!(lock(&state.counters).faults_injected, 2);

        *lock(&state.fault) = Fault {
            mode: FaultMode::Throttled,
            ..Fault::default()
        };
        for _ in 0..3 {
            let res = injected_fault(&state, "getDefinition").0.unwrap();
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(res.headers()[header::RETRY_AFTER], "1", "429 always says when to retry");
        }
        *lock(&state.fault) = Fault::unavailable(None).with_latency(Duration::from_millis(40));
        let (res, latency) = injected_fault(&state, "getDefinition");
        assert!(res.unwrap().headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(latency, 40);

        // A conflict fails only definition updates, and only those count against failCount.
        *lock(&state.fault) = Fault::conflict(1);
        assert!(injected_fault(&state, "getDefinition").0.is_none());
        assert!(injected_fault(&state, "rotate").0.is_none());
        assert_eq!(
            injected_fault(&state, "update").0.unwrap().status(),
            StatusCode::CONFLICT
        );
        assert!(injected_fault(&state, "update").0.is_none(), "healed after one update");
    }

    #[test]
    fn authorization_needs_the_token() {
        let (_dir, state) = test_state();
        let mut h = HeaderMap::new();
        assert!(!authorized(&state, &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("token wrong"));
        assert!(!authorized(&state, &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        assert!(!authorized(&state, &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("token t0ken"));
        assert!(authorized(&state, &h));
        let open = EscServerState {
            token: std::sync::Mutex::new(None),
            ..test_state().1
        };
        assert!(authorized(&open, &HeaderMap::new()));
    }

    #[test]
    fn update_checks_etags_and_counts_revisions() {
        let (_dir, state) = test_state();
        let e = EnvRef {
            org: "acme".into(),
            project: "p".into(),
            name: "e".into(),
        };
        assert_eq!(
            create_environment(&state, "acme", br#"{"project": "p", "name": "e"}"#).status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            create_environment(&state, "acme", br#"{"project": "p", "name": "e"}"#).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            create_environment(&state, "acme", br#"{"project": "p", "name": "open-x"}"#).status(),
            StatusCode::BAD_REQUEST
        );
        let etag1 = lock(&state.store).env("acme", "p", "e").unwrap().etag();
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(&etag1).unwrap());
        let res = update(&state, &e, &h, b"values: {a: 1}\n");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[REVISION_HEADER], "2");
        // The same ETag again is stale now.
        assert_eq!(
            update(&state, &e, &h, b"values: {a: 2}\n").status(),
            StatusCode::CONFLICT
        );
        // Without If-Match the update goes through.
        assert_eq!(
            update(&state, &e, &HeaderMap::new(), b"values: {a: 3}\n").status(),
            StatusCode::OK
        );
        assert_eq!(lock(&state.store).env("acme", "p", "e").unwrap().head(), 3);
        // Bad YAML and bad references are refused with diagnostics, storing nothing.
        let res = update(&state, &e, &HeaderMap::new(), b"values: [\n");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            update(&state, &e, &HeaderMap::new(), b"values: {a: '${nope}'}\n").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(lock(&state.store).env("acme", "p", "e").unwrap().head(), 3);
    }

    async fn call(state: &Arc<EscServerState>, method: Method, path: &str, auth: bool) -> Response {
        let mut headers = HeaderMap::new();
        if auth {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static("token t0ken"));
        }
        let uri: Uri = path.parse().unwrap();
        esc(AxState(state.clone()), method, uri, headers, Bytes::new()).await
    }

    #[tokio::test]
    async fn counters_count_every_esc_request_by_endpoint_and_opens_by_environment() {
        let (_dir, state) = test_state();
        let state = Arc::new(state);
        state
            .put_definition("acme", "p", "e", "values: {a: 1}\n", false)
            .unwrap();
        let ok = call(&state, Method::POST, "/api/esc/environments/acme/p/e/open", true).await;
        assert_eq!(ok.status(), StatusCode::OK);
        call(
            &state,
            Method::POST,
            "/api/esc/environments/acme/p/e/versions/2/open",
            true,
        )
        .await;
        call(&state, Method::POST, "/api/esc/environments/acme/p/other/open", true).await;
        // Refused and faulted requests count too.
        let refused = call(&state, Method::GET, "/api/esc/environments/acme/p/e", false).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        *lock(&state.fault) = Fault::unavailable(None).with_fail_count(1);
        let faulted = call(&state, Method::GET, "/api/esc/environments/acme/p/e", true).await;
        assert_eq!(faulted.status(), StatusCode::SERVICE_UNAVAILABLE);
        let missing = call(&state, Method::GET, "/api/esc/nothing", true).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);

        let c = lock(&state.counters).clone();
        assert_eq!(c.total, 6);
        assert_eq!(c.requests("open"), 2);
        assert_eq!(c.requests("openAtVersion"), 1);
        assert_eq!(c.requests("getDefinition"), 2);
        assert_eq!(c.requests("notFound"), 1);
        assert_eq!(c.opens("acme/p/e"), 2);
        assert_eq!(c.opens("acme/p/other"), 1);
        assert_eq!(c.faults_injected, 1);
    }
}
