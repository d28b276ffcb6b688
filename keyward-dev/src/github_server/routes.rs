//! The HTTP side: GitHub's Actions secrets endpoints and the development control endpoints under `/_dev/`.
//!
//! API paths are matched by hand rather than by axum's router, as the ESC server does: environment names
//! arrive percent-encoded (`%2F` included), and every answer, a 404 for an unknown path included, must be
//! GitHub's JSON error and be counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use super::error::GithubServerError;
use super::state::{Counters, GithubFault, GithubFaultMode, GithubServerState, lock, normalize_scope};
use super::store::{Scope, Store, Stored, fold_name};

const DOCS: &str = "https://docs.github.com/rest/actions/secrets";
const RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";
/// GitHub's documented limit on a secret's size.
const MAX_SECRET_BYTES: usize = 48 * 1024;
/// The quota every answer reports: the server never runs out unless a fault says so.
const RATE_LIMIT: u64 = 5000;

pub(crate) fn router(state: Arc<GithubServerState>) -> Router {
    Router::new()
        .route("/_dev/counters", get(dev_counters))
        .route("/_dev/counters/reset", post(dev_reset_counters))
        .route("/_dev/fault", get(dev_get_fault).put(dev_put_fault))
        .route("/_dev/received", get(dev_received))
        .fallback(api)
        .with_state(state)
}

async fn dev_counters(AxState(state): AxState<Arc<GithubServerState>>) -> Response {
    let counters: Counters = lock(&state.counters).clone();
    json_response(StatusCode::OK, json!(counters))
}

async fn dev_reset_counters(AxState(state): AxState<Arc<GithubServerState>>) -> Response {
    *lock(&state.counters) = Counters::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn dev_get_fault(AxState(state): AxState<Arc<GithubServerState>>) -> Response {
    let fault = lock(&state.fault).clone();
    json_response(StatusCode::OK, json!(fault))
}

async fn dev_put_fault(AxState(state): AxState<Arc<GithubServerState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<GithubFault>(&body) {
        Ok(fault) => {
            if let Some(problem) = fault.problem() {
                return github_error(StatusCode::BAD_REQUEST, &format!("invalid fault: {problem}"), DOCS);
            }
            *lock(&state.fault) = fault.clone();
            json_response(StatusCode::OK, json!(fault))
        }
        Err(e) => github_error(StatusCode::BAD_REQUEST, &format!("invalid fault: {e}"), DOCS),
    }
}

/// For tests only: the plaintexts received, optionally of one `scope` (`repo/acme/app`) and `name`.
async fn dev_received(
    AxState(state): AxState<Arc<GithubServerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let scope = q.get("scope").map(|s| normalize_scope(s));
    let secrets = lock(&state.store).received(scope.as_deref(), q.get("name").map(String::as_str));
    json_response(StatusCode::OK, json!({ "secrets": secrets }))
}

fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// GitHub's error body.
fn github_error(status: StatusCode, message: &str, docs: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": docs, "status": status.as_str()}),
    )
}

impl GithubServerError {
    fn status(&self) -> StatusCode {
        match self {
            GithubServerError::MissingCredentials | GithubServerError::BadCredentials => StatusCode::UNAUTHORIZED,
            GithubServerError::NotFound => StatusCode::NOT_FOUND,
            GithubServerError::BadJson | GithubServerError::Flag { .. } | GithubServerError::TokenFile { .. } => {
                StatusCode::BAD_REQUEST
            }
            GithubServerError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GithubServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn response(&self) -> Response {
        let docs = match self {
            GithubServerError::MissingCredentials | GithubServerError::BadCredentials => "https://docs.github.com/rest",
            _ => DOCS,
        };
        github_error(self.status(), &self.to_string(), docs)
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `x-ratelimit-*` headers GitHub sends with every answer.
fn rate_limit_headers(res: &mut Response, remaining: u64, reset: u64) {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", RATE_LIMIT),
        ("x-ratelimit-remaining", remaining),
        ("x-ratelimit-used", RATE_LIMIT - remaining.min(RATE_LIMIT)),
        ("x-ratelimit-reset", reset),
    ] {
        h.insert(name, HeaderValue::from(value));
    }
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
}

/// An API operation, with the scope it acts on.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    PublicKey(Scope),
    List(Scope),
    Get(Scope, String),
    Put(Scope, String),
    Delete(Scope, String),
    NotFound,
}

/// The operationId-style name an operation is counted under.
fn endpoint(op: &Op) -> &'static str {
    use Scope::{Env, Org, Repo};
    match op {
        Op::PublicKey(Org(..)) => "getOrgPublicKey",
        Op::PublicKey(Repo(..)) => "getRepoPublicKey",
        Op::PublicKey(Env(..)) => "getEnvironmentPublicKey",
        Op::List(Org(..)) => "listOrgSecrets",
        Op::List(Repo(..)) => "listRepoSecrets",
        Op::List(Env(..)) => "listEnvironmentSecrets",
        Op::Get(Org(..), _) => "getOrgSecret",
        Op::Get(Repo(..), _) => "getRepoSecret",
        Op::Get(Env(..), _) => "getEnvironmentSecret",
        Op::Put(Org(..), _) => "createOrUpdateOrgSecret",
        Op::Put(Repo(..), _) => "createOrUpdateRepoSecret",
        Op::Put(Env(..), _) => "createOrUpdateEnvironmentSecret",
        Op::Delete(Org(..), _) => "deleteOrgSecret",
        Op::Delete(Repo(..), _) => "deleteRepoSecret",
        Op::Delete(Env(..), _) => "deleteEnvironmentSecret",
        Op::NotFound => "notFound",
    }
}

/// Matches a path to an operation. Unsupported methods are 404s, as on GitHub.
fn route(method: &Method, path: &str) -> Op {
    let decoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(crate::serve::percent_decode)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let (scope, rest) = match segs.as_slice() {
        ["orgs", org, "actions", "secrets", rest @ ..] => (Scope::Org((*org).into()), rest),
        ["repos", o, r, "actions", "secrets", rest @ ..] => (Scope::Repo((*o).into(), (*r).into()), rest),
        ["repos", o, r, "environments", e, "secrets", rest @ ..] => {
            (Scope::Env((*o).into(), (*r).into(), (*e).into()), rest)
        }
        _ => return Op::NotFound,
    };
    if let Scope::Org(a) | Scope::Repo(a, _) | Scope::Env(a, _, _) = &scope
        && a.is_empty()
    {
        return Op::NotFound;
    }
    match (rest, method.clone()) {
        ([], Method::GET) => Op::List(scope),
        (["public-key"], Method::GET) => Op::PublicKey(scope),
        ([name], m) if !name.is_empty() => match m {
            Method::GET => Op::Get(scope, (*name).into()),
            Method::PUT => Op::Put(scope, (*name).into()),
            Method::DELETE => Op::Delete(scope, (*name).into()),
            _ => Op::NotFound,
        },
        _ => Op::NotFound,
    }
}

/// GitHub accepts `Authorization: Bearer <T>` and `token <T>`.
fn authorize(state: &GithubServerState, headers: &HeaderMap) -> Result<(), GithubServerError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(GithubServerError::MissingCredentials);
    };
    let (scheme, presented) = value.trim().split_once(' ').unwrap_or(("", ""));
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    if known && keyward::secret::secrets_equal(presented.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(GithubServerError::BadCredentials)
    }
}

/// Decides whether this request fails by injection; heals a fault whose `failCount` runs out.
fn injected_fault(state: &GithubServerState) -> (Option<Response>, u64) {
    let mut fault = lock(&state.fault);
    let latency = fault.latency_ms;
    if fault.mode == GithubFaultMode::None {
        return (None, latency);
    }
    if let Some(left) = fault.fail_count {
        if left == 0 {
            *fault = GithubFault {
                latency_ms: latency,
                ..GithubFault::none()
            };
            return (None, latency);
        }
        fault.fail_count = Some(left - 1);
    }
    let served = fault.clone();
    if fault.fail_count == Some(0) {
        *fault = GithubFault {
            latency_ms: latency,
            ..GithubFault::none()
        };
    }
    drop(fault);
    let status = |default: StatusCode| {
        served
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(default)
    };
    let now = epoch_secs();
    let res = match served.mode {
        GithubFaultMode::SecondaryRateLimit => {
            let mut res = github_error(
                status(StatusCode::FORBIDDEN),
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. \
                 (injected by keyward-dev)",
                RATE_LIMIT_DOCS,
            );
            // A secondary limit leaves the primary quota alone.
            rate_limit_headers(&mut res, RATE_LIMIT - 1, now + 3600);
            if let Some(secs) = served.retry_after_seconds {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            res
        }
        GithubFaultMode::RateLimited => {
            let mut res = github_error(
                status(StatusCode::TOO_MANY_REQUESTS),
                "API rate limit exceeded for user ID 1. (injected by keyward-dev)",
                RATE_LIMIT_DOCS,
            );
            rate_limit_headers(&mut res, 0, now + served.reset_in_seconds.unwrap_or(0));
            res
        }
        GithubFaultMode::Forbidden => {
            let mut res = github_error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by personal access token (injected by keyward-dev)",
                DOCS,
            );
            rate_limit_headers(&mut res, RATE_LIMIT - 1, now + 3600);
            res
        }
        GithubFaultMode::Unavailable | GithubFaultMode::None => github_error(
            status(StatusCode::SERVICE_UNAVAILABLE),
            "Service Unavailable (injected by keyward-dev)",
            DOCS,
        ),
    };
    lock(&state.counters).faults_injected += 1;
    (Some(res), latency)
}

async fn api(
    AxState(state): AxState<Arc<GithubServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(&state, &method, &uri, &headers, &body).await
}

/// Counts, injects faults, authenticates, then answers one API request.
async fn dispatch(state: &GithubServerState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let op = route(method, uri.path());
    {
        let mut c = lock(&state.counters);
        c.total += 1;
        *c.requests.entry(endpoint(&op).to_owned()).or_default() += 1;
    }
    let (fault, latency) = injected_fault(state);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(res) = fault {
        return res;
    }
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let mut res = authorize(state, headers)
        .and_then(|()| handle(state, op, &query, body))
        .unwrap_or_else(|e| e.response());
    rate_limit_headers(&mut res, RATE_LIMIT - 1, epoch_secs() + 3600);
    res
}

fn handle(
    state: &GithubServerState,
    op: Op,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, GithubServerError> {
    let scope = match &op {
        Op::NotFound => return Err(GithubServerError::NotFound),
        Op::PublicKey(s) | Op::List(s) | Op::Get(s, _) | Op::Put(s, _) | Op::Delete(s, _) => s.clone(),
    };
    let mut store = lock(&state.store);
    if !store.exists(&scope) {
        return Err(GithubServerError::NotFound);
    }
    let key = scope.key();
    match op {
        Op::NotFound => Err(GithubServerError::NotFound),
        Op::PublicKey(_) => {
            let pair = store.key(&key)?;
            Ok(json_response(
                StatusCode::OK,
                json!({"key_id": pair.key_id, "key": pair.public_key_b64()}),
            ))
        }
        Op::List(_) => Ok(list(state, &store, &scope, query)),
        Op::Get(_, name) => {
            let name = fold_name(&name);
            let stored = store.secret(&key, &name).ok_or(GithubServerError::NotFound)?;
            Ok(json_response(StatusCode::OK, metadata(state, &scope, &name, stored)))
        }
        Op::Put(_, name) => put(&mut store, &scope, &name, body),
        Op::Delete(_, name) => match store.delete(&key, &name) {
            true => Ok(StatusCode::NO_CONTENT.into_response()),
            false => Err(GithubServerError::NotFound),
        },
    }
}

/// A secret as the API shows it: never its value.
fn metadata(state: &GithubServerState, scope: &Scope, name: &str, s: &Stored) -> Json {
    let mut m = json!({"name": name, "created_at": s.created_at, "updated_at": s.updated_at});
    if let Scope::Org(org) = scope {
        let visibility = s.visibility.as_deref().unwrap_or("private");
        m["visibility"] = json!(visibility);
        if visibility == "selected" {
            m["selected_repositories_url"] = json!(format!(
                "http://{}/orgs/{org}/actions/secrets/{name}/repositories",
                state.addr
            ));
        }
    }
    m
}

fn list(state: &GithubServerState, store: &Store, scope: &Scope, query: &HashMap<String, String>) -> Response {
    let number = |k: &str, default: usize, max: usize| {
        query
            .get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .map_or(default, |n| n.min(max))
    };
    let per_page = number("per_page", 30, 100);
    let page = number("page", 1, usize::MAX / 100);
    let all = store.list(&scope.key());
    let secrets: Vec<Json> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(name, s)| metadata(state, scope, name, s))
        .collect();
    json_response(StatusCode::OK, json!({"total_count": all.len(), "secrets": secrets}))
}

fn invalid(message: impl Into<String>) -> GithubServerError {
    GithubServerError::Invalid(message.into())
}

/// GitHub's secret-name rules.
fn check_name(name: &str) -> Result<(), GithubServerError> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') || b[0].is_ascii_digit() {
        return Err(invalid(
            "Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). \
             Spaces are not allowed. Must start with a letter ([a-z], [A-Z]) or underscores (_).",
        ));
    }
    if fold_name(name).starts_with("GITHUB_") {
        return Err(invalid("Secret names must not start with GITHUB_."));
    }
    Ok(())
}

/// A required string property of a request body.
fn required_str<'a>(body: &'a serde_json::Map<String, Json>, field: &str) -> Result<&'a str, GithubServerError> {
    match body.get(field) {
        None | Some(Json::Null) => Err(invalid(format!("Invalid request.\n\n\"{field}\" wasn't supplied."))),
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(invalid(format!(
            "Invalid request.\n\nFor 'properties/{field}', {other} is not a string."
        ))),
    }
}

/// Organization access: `visibility` (required) and `selected_repository_ids` (only with `selected`).
fn org_access(body: &serde_json::Map<String, Json>) -> Result<(String, Vec<i64>), GithubServerError> {
    let visibility = required_str(body, "visibility")?;
    if !["all", "private", "selected"].contains(&visibility) {
        return Err(invalid(format!(
            "Invalid request.\n\nFor 'properties/visibility', \"{visibility}\" is not one of all, private, selected."
        )));
    }
    let ids = match body.get("selected_repository_ids") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_i64().ok_or_else(|| {
                    invalid(format!(
                        "Invalid request.\n\nFor 'items', {v} is not an integer (in selected_repository_ids)."
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(invalid(format!(
                "Invalid request.\n\nFor 'properties/selected_repository_ids', {other} is not an array."
            )));
        }
    };
    if !ids.is_empty() && visibility != "selected" {
        return Err(invalid(
            "selected_repository_ids can only be provided when visibility is selected.",
        ));
    }
    Ok((visibility.to_owned(), ids))
}

/// Creates or updates a secret: the body must name the scope's current key and carry a sealed box that
/// opens with it. 201 when created, 204 when updated.
fn put(store: &mut Store, scope: &Scope, name: &str, body: &[u8]) -> Result<Response, GithubServerError> {
    check_name(name)?;
    let parsed: Json = serde_json::from_slice(body).map_err(|_| GithubServerError::BadJson)?;
    let Json::Object(body) = parsed else {
        return Err(invalid("Invalid request.\n\nThe body must be a JSON object."));
    };
    let encrypted = required_str(&body, "encrypted_value")?;
    let key_id = required_str(&body, "key_id")?;
    let (visibility, ids) = match scope {
        Scope::Org(_) => {
            let (v, ids) = org_access(&body)?;
            (Some(v), ids)
        }
        _ => (None, Vec::new()),
    };
    // The spec's pattern is padded standard base64, which is what STANDARD accepts.
    let sealed = STANDARD.decode(encrypted).map_err(|_| {
        invalid("Invalid request.\n\nFor 'properties/encrypted_value', the value does not match the base64 pattern.")
    })?;
    let key = scope.key();
    let pair = store
        .existing_key(&key)
        .filter(|p| keyward::secret::secrets_equal(p.key_id.as_bytes(), key_id.as_bytes()))
        .ok_or_else(|| {
            invalid(format!(
                "key_id {key_id:?} is not the current public key of this scope."
            ))
        })?;
    let plaintext = Zeroizing::new(
        pair.secret
            .unseal(&sealed)
            .map_err(|_| invalid("encrypted_value could not be decrypted with the key named by key_id."))?,
    );
    if plaintext.len() > MAX_SECRET_BYTES {
        return Err(invalid("Secret values are limited to 48 KB."));
    }
    if store.put(&key, name, plaintext, visibility, ids) {
        Ok(json_response(StatusCode::CREATED, json!({})))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GithubFault, Repository};
    use super::*;
    use crate::github_server::store::Store;
    use crypto_box::aead::OsRng;
    use std::sync::Mutex;

    fn state(token: Option<&str>, repos: Vec<Repository>) -> GithubServerState {
        GithubServerState {
            store: Mutex::new(Store::new(repos)),
            counters: Mutex::new(Counters::default()),
            fault: Mutex::new(GithubFault::default()),
            token: token.map(|t| Zeroizing::new(t.to_owned())),
            addr: "127.0.0.1:9".parse().unwrap(),
        }
    }

    async fn call(
        state: &GithubServerState,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Json,
    ) -> (StatusCode, Json) {
        let mut headers = HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let res = dispatch(state, &method, &path.parse().unwrap(), &headers, &body).await;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
    }

    /// Gets the scope's key and seals `value` to it, as a client would.
    async fn sealed_body(state: &GithubServerState, scope_path: &str, value: &[u8]) -> (String, String) {
        let (status, key) = call(
            state,
            Method::GET,
            &format!("{scope_path}/public-key"),
            None,
            Json::Null,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{key}");
        let pk = crypto_box::PublicKey::from_slice(&STANDARD.decode(key["key"].as_str().unwrap()).unwrap()).unwrap();
        let sealed = STANDARD.encode(pk.seal(&mut OsRng, value).unwrap());
        (sealed, key["key_id"].as_str().unwrap().to_owned())
    }

    #[test]
    fn routes_match_the_spec_paths() {
        let get = |p: &str| route(&Method::GET, p);
        let repo = || Scope::Repo("acme".into(), "app".into());
        assert_eq!(get("/orgs/acme/actions/secrets"), Op::List(Scope::Org("acme".into())));
        assert_eq!(
            get("/orgs/acme/actions/secrets/public-key"),
            Op::PublicKey(Scope::Org("acme".into()))
        );
        assert_eq!(get("/repos/acme/app/actions/secrets/X"), Op::Get(repo(), "X".into()));
        assert_eq!(
            route(&Method::PUT, "/repos/acme/app/actions/secrets/X"),
            Op::Put(repo(), "X".into())
        );
        assert_eq!(
            route(&Method::DELETE, "/repos/acme/app/environments/prod%20eu%2F1/secrets/X"),
            Op::Delete(Scope::Env("acme".into(), "app".into(), "prod eu/1".into()), "X".into())
        );
        assert_eq!(
            endpoint(&get("/repos/acme/app/environments/prod/secrets/public-key")),
            "getEnvironmentPublicKey"
        );
        for bad in [
            "/repos/acme/app/actions/secrets/X/extra",
            "/repos/acme/actions/secrets",
            "/orgs//actions/secrets",
            "/user",
            "/",
        ] {
            assert_eq!(get(bad), Op::NotFound, "{bad}");
        }
        assert_eq!(route(&Method::POST, "/repos/acme/app/actions/secrets/X"), Op::NotFound);
        assert_eq!(route(&Method::PUT, "/repos/acme/app/actions/secrets"), Op::NotFound);
        assert_eq!(crate::serve::percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[tokio::test]
    async fn tokens_are_checked_in_both_schemes() {
        let s = state(Some("ghp_t"), vec![]);
        let path = "/repos/acme/app/actions/secrets";
        for (auth, want) in [
            (Some("Bearer ghp_t"), StatusCode::OK),
            (Some("token ghp_t"), StatusCode::OK),
            (Some("bearer  ghp_t "), StatusCode::OK),
            (Some("Bearer nope"), StatusCode::UNAUTHORIZED),
            (Some("Basic ghp_t"), StatusCode::UNAUTHORIZED),
            (None, StatusCode::UNAUTHORIZED),
        ] {
            let (status, body) = call(&s, Method::GET, path, auth, Json::Null).await;
            assert_eq!(status, want, "{auth:?}: {body}");
            if status == StatusCode::UNAUTHORIZED {
                assert!(body["message"] == "Bad credentials" || body["message"] == "Requires authentication");
                assert_eq!(body["status"], "401");
            }
        }
    }

    #[tokio::test]
    async fn puts_open_the_sealed_box_and_report_created_then_updated() {
        let s = state(None, vec![]);
        let scope = "/repos/acme/app/actions/secrets";
        let (sealed, key_id) = sealed_body(&s, scope, b"canary-one").await;
        let body = json!({"encrypted_value": sealed, "key_id": key_id});
        let (status, created) = call(&s, Method::PUT, &format!("{scope}/db_pw"), None, body.clone()).await;
        assert_eq!((status, created), (StatusCode::CREATED, json!({})));
        let (status, _) = call(&s, Method::PUT, &format!("{scope}/DB_PW"), None, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        {
            let store = lock(&s.store);
            assert_eq!(
                &*store.secret("repo/acme/app", "DB_PW").unwrap().plaintext,
                b"canary-one"
            );
            assert_eq!(store.puts("repo/acme/app", "db_pw"), 2);
        }

        // Metadata, never the value.
        let (status, meta) = call(&s, Method::GET, &format!("{scope}/db_pw"), None, Json::Null).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(meta["name"], "DB_PW");
        assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(meta.get("visibility").is_none());
        assert!(!meta.to_string().contains("canary"));
        let (_, listed) = call(&s, Method::GET, scope, None, Json::Null).await;
        assert_eq!(listed["total_count"], 1);
        assert_eq!(listed["secrets"][0]["name"], "DB_PW");
        let (_, page2) = call(&s, Method::GET, &format!("{scope}?per_page=1&page=2"), None, Json::Null).await;
        assert_eq!(
            (page2["total_count"].clone(), page2["secrets"].clone()),
            (json!(1), json!([]))
        );

        let (status, _) = call(&s, Method::DELETE, &format!("{scope}/db_pw"), None, Json::Null).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&s, Method::DELETE, &format!("{scope}/db_pw"), None, Json::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(&s, Method::GET, &format!("{scope}/db_pw"), None, Json::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn bad_puts_are_refused_with_422() {
        let s = state(None, vec![]);
        let scope = "/repos/acme/app/actions/secrets";
        let put = |name: &'static str, body: Json| {
            let s = &s;
            async move { call(s, Method::PUT, &format!("{scope}/{name}"), None, body).await }
        };
        // No key fetched yet: no key_id can be current.
        let (status, _) = put("X", json!({"encrypted_value": "c2VjcmV0", "key_id": "1"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (sealed, key_id) = sealed_body(&s, scope, b"v").await;
        let cases = [
            ("X", json!({"key_id": key_id}), "\"encrypted_value\" wasn't supplied"),
            ("X", json!({"encrypted_value": sealed}), "\"key_id\" wasn't supplied"),
            ("X", json!({"encrypted_value": 5, "key_id": key_id}), "is not a string"),
            (
                "X",
                json!({"encrypted_value": "not base64!", "key_id": key_id}),
                "base64",
            ),
            (
                "X",
                json!({"encrypted_value": sealed, "key_id": "123"}),
                "not the current public key",
            ),
            // Valid base64 that is no sealed box for this key.
            (
                "X",
                json!({"encrypted_value": STANDARD.encode([7u8; 60]), "key_id": key_id}),
                "could not be decrypted",
            ),
            (
                "GITHUB_X",
                json!({"encrypted_value": sealed, "key_id": key_id}),
                "GITHUB_",
            ),
            (
                "1X",
                json!({"encrypted_value": sealed, "key_id": key_id}),
                "alphanumeric",
            ),
        ];
        for (name, body, want) in cases {
            let (status, err) = put(name, body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(err["message"].as_str().unwrap().contains(want), "{body}: {err}");
            assert_eq!(err["status"], "422");
        }
        let (status, err) = call(&s, Method::PUT, &format!("{scope}/X"), None, json!("x")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        // Not JSON at all.
        let res = dispatch(
            &s,
            &Method::PUT,
            &format!("{scope}/X").parse().unwrap(),
            &HeaderMap::new(),
            b"{",
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // A rotated key refuses boxes sealed to the old one.
        lock(&s.store).rotate_key("repo/acme/app").unwrap();
        let (status, _) = put("X", json!({"encrypted_value": sealed, "key_id": key_id})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(lock(&s.store).received(None, None).is_empty());
    }

    #[tokio::test]
    async fn org_secrets_need_a_valid_visibility() {
        let s = state(None, vec![]);
        let scope = "/orgs/acme/actions/secrets";
        let (sealed, key_id) = sealed_body(&s, scope, b"org-value").await;
        let with = |extra: Json| {
            let mut b = json!({"encrypted_value": sealed, "key_id": key_id});
            if let (Json::Object(b), Json::Object(e)) = (&mut b, extra) {
                b.extend(e);
            }
            b
        };
        for (extra, want) in [
            (json!({}), "\"visibility\" wasn't supplied"),
            (json!({"visibility": "public"}), "is not one of"),
            (
                json!({"visibility": "all", "selected_repository_ids": [1]}),
                "only be provided",
            ),
            (
                json!({"visibility": "selected", "selected_repository_ids": ["1"]}),
                "not an integer",
            ),
            (
                json!({"visibility": "selected", "selected_repository_ids": 1}),
                "not an array",
            ),
        ] {
            let (status, err) = call(&s, Method::PUT, &format!("{scope}/X"), None, with(extra.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}");
            assert!(err["message"].as_str().unwrap().contains(want), "{extra}: {err}");
        }
        let body = with(json!({"visibility": "selected", "selected_repository_ids": [11, 12]}));
        let (status, _) = call(&s, Method::PUT, &format!("{scope}/X"), None, body).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, meta) = call(&s, Method::GET, &format!("{scope}/X"), None, Json::Null).await;
        assert_eq!(meta["visibility"], "selected");
        assert_eq!(
            meta["selected_repositories_url"],
            "http://127.0.0.1:9/orgs/acme/actions/secrets/X/repositories"
        );
        let got = lock(&s.store).received(Some("org/acme"), Some("x"));
        assert_eq!(got[0].selected_repository_ids, vec![11, 12]);
        assert_eq!(got[0].value, "org-value");
        // An empty id list is no list.
        let body = with(json!({"visibility": "all", "selected_repository_ids": []}));
        let (status, _) = call(&s, Method::PUT, &format!("{scope}/X"), None, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn unknown_scopes_are_404_when_repositories_are_declared() {
        let s = state(
            None,
            vec![Repository::new("acme", "app", 1).with_environment("prod eu")],
        );
        for (path, want) in [
            ("/repos/acme/app/actions/secrets/public-key", StatusCode::OK),
            (
                "/repos/ACME/App/environments/Prod%20EU/secrets/public-key",
                StatusCode::OK,
            ),
            ("/orgs/acme/actions/secrets/public-key", StatusCode::OK),
            ("/repos/acme/nope/actions/secrets/public-key", StatusCode::NOT_FOUND),
            (
                "/repos/acme/app/environments/staging/secrets/public-key",
                StatusCode::NOT_FOUND,
            ),
            ("/orgs/other/actions/secrets", StatusCode::NOT_FOUND),
            ("/nothing/here", StatusCode::NOT_FOUND),
        ] {
            let (status, body) = call(&s, Method::GET, path, None, Json::Null).await;
            assert_eq!(status, want, "{path}: {body}");
            if status == StatusCode::NOT_FOUND {
                assert_eq!(body["message"], "Not Found");
            }
        }
        let c = lock(&s.counters).clone();
        assert_eq!(c.total, 7);
        assert_eq!(c.requests("getRepoPublicKey"), 2);
        assert_eq!(c.requests("getEnvironmentPublicKey"), 2);
        assert_eq!(c.requests("notFound"), 1);
    }

    #[tokio::test]
    async fn faults_answer_as_github_and_heal() {
        let s = state(Some("t"), vec![]);
        let path = "/repos/acme/app/actions/secrets";
        let st = &s;
        let get = || async move {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
            dispatch(st, &Method::GET, &path.parse().unwrap(), &headers, b"").await
        };
        let h = |res: &Response, name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());

        *lock(&s.fault) = GithubFault::secondary_rate_limit(7, 1);
        let res = get().await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(h(&res, "retry-after").as_deref(), Some("7"));
        assert_eq!(h(&res, "x-ratelimit-remaining").as_deref(), Some("4999"));
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("secondary rate limit"));
        assert_eq!(get().await.status(), StatusCode::OK);

        *lock(&s.fault) = GithubFault::rate_limited(30, 2);
        let res = get().await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h(&res, "x-ratelimit-remaining").as_deref(), Some("0"));
        let reset: u64 = h(&res, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset >= epoch_secs() + 29 && reset <= epoch_secs() + 30);
        assert!(h(&res, "retry-after").is_none());
        assert_eq!(get().await.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(get().await.status(), StatusCode::OK);
        assert_eq!(*lock(&s.fault), GithubFault::none());

        *lock(&s.fault) = GithubFault::rate_limited(1, 1).with_status(403);
        assert_eq!(get().await.status(), StatusCode::FORBIDDEN);
        *lock(&s.fault) = GithubFault::secondary_rate_limit(1, 1).without_retry_after();
        assert!(get().await.headers().get("retry-after").is_none());
        *lock(&s.fault) = GithubFault::unavailable(1);
        assert_eq!(get().await.status(), StatusCode::SERVICE_UNAVAILABLE);
        *lock(&s.fault) = GithubFault::forbidden(1);
        assert_eq!(get().await.status(), StatusCode::FORBIDDEN);
        let ok = get().await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(h(&ok, "x-ratelimit-limit").as_deref(), Some("5000"));

        let c = lock(&s.counters).clone();
        assert_eq!((c.faults_injected, c.total, c.requests("listRepoSecrets")), (7, 10, 10));
    }
}
