//! The admin API (`/admin/v1/…` on the admin listener): bearer tokens with a role, flag
//! and AI config reads, the changes of [`crate::state::Change`] — every one through
//! `State::apply`, never around it — and the audit log. Errors are JSON:
//! `{"error": {"code", "message", "problems"?}}` with 401 / 403 for auth, 404 unknown,
//! 409 conflicts, 412 a stale `If-Match`, 422 validation with field paths.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub mod api;
mod audit;
mod evaluate;
mod openapi;
pub mod ui;

use evaluate::evaluate;

use crate::config::{AdminConfig, AdminRole, Problem};
use crate::guard::Guards;
use crate::keys::{self, KeyRing};
use crate::state::{Change, ChangeError, Request as ChangeRequest, State, StoreError};
use crate::wire::body::{self, Body};

/// Largest admin request body.
const MAX_BODY: usize = 256 * 1024;

/// Longest `reason`, in characters: a sentence or two for the audit log, not a document.
pub const MAX_REASON: usize = 1000;

/// The admin tokens, as digests.
#[derive(Debug, Default)]
pub struct Tokens(KeyRing<(String, AdminRole)>);

impl Tokens {
    pub fn from_config(admin: &AdminConfig) -> Tokens {
        Tokens(
            admin
                .tokens
                .iter()
                .filter_map(|t| {
                    let d =
                        keys::configured(t.token.as_ref().map(|k| k.expose()), t.token_sha256.as_deref(), 0).ok()?;
                    Some((d, (t.name.clone(), t.role)))
                })
                .collect(),
        )
    }

    /// The token's name and role; every token is compared, in constant time.
    fn authenticate(&self, token: &[u8]) -> Option<(&str, AdminRole)> {
        self.0.open(token).map(|(name, role)| (name.as_str(), *role))
    }
}

/// An admin API failure.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Vec<Problem>,
    /// Seconds, for a 503.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), problems: Vec::new(), retry_after: None }
    }

    /// The store cannot take changes now: 503 with `Retry-After`.
    fn unavailable(code: &'static str, message: String, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }

    fn response(self) -> Response<Body> {
        let error = api::ErrorDetail { code: self.code.to_string(), message: self.message, problems: self.problems };
        let mut resp = json_response(self.status, &api::ErrorAnswer { error });
        if let Some(seconds) = self.retry_after {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        resp
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let message = e.to_string();
        match e {
            ChangeError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ChangeError::Stale { .. } => ApiError::new(StatusCode::PRECONDITION_FAILED, "stale_revision", message),
            ChangeError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ChangeError::Invalid(problems) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid",
                message,
                problems,
                retry_after: None,
            },
            ChangeError::Store(StoreError::Unavailable(why)) => {
                tracing::warn!(error = %why, "a change was refused: the shared store cannot be reached");
                ApiError::unavailable("store_unavailable", format!("the shared store is unreachable: {why}"), 1)
            }
            ChangeError::Store(e @ StoreError::Unknown(_)) => {
                tracing::warn!(error = %e, "a change's outcome is unknown: the shared store did not answer");
                ApiError::unavailable("store_outcome_unknown", e.to_string(), 1)
            }
            ChangeError::Store(StoreError::NotSeeded(why)) => ApiError::unavailable("store_not_seeded", why, 5),
            ChangeError::Store(StoreError::Behind { fleet }) => ApiError::unavailable(
                "store_busy",
                format!("the fleet's revision kept moving (now {fleet}) while this change was prepared: try again"),
                1,
            ),
            ChangeError::Store(e @ StoreError::DurabilityUnknown { .. }) => {
                tracing::error!(error = %e, "the state store could not make a change durable");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_durability_unknown",
                    "the change was applied but may not survive a power loss; the store refuses further changes until a restart",
                )
            }
            ChangeError::Store(e @ StoreError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            ChangeError::Store(e) => {
                tracing::error!(error = %e, "the state store failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", "the change could not be stored")
            }
        }
    }
}

/// An answer of the contract ([`api`]) as JSON.
fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    body::json(status, serde_json::to_vec(value).unwrap_or_default())
}

/// Serve one `/admin/v1/…` request.
pub async fn handle(state: Arc<State>, guards: &Guards, tokens: &Tokens, req: Request<Incoming>) -> Response<Body> {
    match route(state, guards, tokens, req).await {
        Ok(resp) => resp,
        Err(e) => e.response(),
    }
}

/// Every endpoint: method, path under `/admin/v1` (`{name}` is a parameter), operation.
/// The router and the OpenAPI document are both made from this table.
pub const ROUTES: &[(&str, &str, Op)] = &[
    ("GET", "/flags", Op::ListFlags),
    ("GET", "/flags/{key}", Op::GetFlag),
    ("GET", "/flags/{key}/timeseries", Op::Timeseries),
    ("POST", "/flags/{key}/evaluate", Op::Evaluate),
    ("POST", "/flags/{key}/kill", Op::Kill),
    ("POST", "/flags/{key}/restore", Op::Restore),
    ("PUT", "/flags/{key}/rollout", Op::Rollout),
    ("PUT", "/flags/{key}/fallthrough", Op::Fallthrough),
    ("PUT", "/flags/{key}/rules/{rule}", Op::Rule),
    ("PUT", "/flags/{key}/variations/{variation}", Op::PointVariation),
    ("POST", "/flags/{key}/rollback", Op::Rollback),
    ("GET", "/ai-configs", Op::ListAiConfigs),
    ("POST", "/ai-configs/{key}/versions", Op::AddVersion),
    ("GET", "/guards", Op::Guards),
    ("POST", "/flags/{key}/guard/pause", Op::GuardPause),
    ("POST", "/flags/{key}/guard/resume", Op::GuardResume),
    ("POST", "/flags/{key}/guard/rearm", Op::GuardRearm),
    ("POST", "/flags/{key}/guard/dismiss", Op::GuardDismiss),
    ("GET", "/experiments", Op::Experiments),
    ("GET", "/experiments/{key}", Op::Experiment),
    ("POST", "/experiments/{key}/ship", Op::ExperimentShip),
    ("POST", "/experiments/{key}/stop", Op::ExperimentStop),
    ("GET", "/audit", Op::Audit),
    ("GET", "/status", Op::Status),
    ("GET", "/whoami", Op::WhoAmI),
    ("GET", "/openapi.json", Op::OpenApi),
];

/// What an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    ListFlags,
    GetFlag,
    Timeseries,
    WhoAmI,
    Evaluate,
    Kill,
    Restore,
    Rollout,
    Fallthrough,
    Rule,
    PointVariation,
    Rollback,
    ListAiConfigs,
    AddVersion,
    Guards,
    GuardPause,
    GuardResume,
    GuardRearm,
    GuardDismiss,
    Experiments,
    Experiment,
    ExperimentShip,
    ExperimentStop,
    Audit,
    Status,
    OpenApi,
}

/// The route of `method path`, with the path's parameters; `Err(true)` when the path
/// exists with another method.
fn find_route<'p>(method: &str, path: &'p str) -> Result<(Op, Vec<&'p str>), bool> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut other_method = false;
    for (m, template, op) in ROUTES {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matches = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') {
                params.push(*s);
                !s.is_empty()
            } else {
                t == s
            }
        });
        if matches && *m == method {
            return Ok((*op, params));
        }
        other_method |= matches;
    }
    Err(other_method)
}

async fn route(
    state: Arc<State>,
    guards: &Guards,
    tokens: &Tokens,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let full = req.uri().path().trim_end_matches('/').to_string();
    let path = full.strip_prefix("/admin/v1").unwrap_or(&full).to_string();
    let method = req.method().clone();
    let (op, params) = match find_route(method.as_str(), &path) {
        Ok(found) => found,
        Err(true) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {full}"),
            ))
        }
        Err(false) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_endpoint",
                format!("no admin endpoint {method} {full}"),
            ))
        }
    };
    if op == Op::OpenApi {
        return Ok(json_response(StatusCode::OK, &openapi::document()));
    }
    let (name, role) = authenticate(tokens, req.headers())?;
    let query = req.uri().query().unwrap_or("").to_string();
    match op {
        Op::ListFlags => return blocking(state, |state| list_flags(&state)).await,
        Op::GetFlag => {
            let key = params[0].to_string();
            return blocking(state, move |state| get_flag(&state, &key)).await?;
        }
        Op::Timeseries => return timeseries(&state, params[0], &query),
        Op::WhoAmI => {
            let role = match role {
                AdminRole::Write => "write",
                AdminRole::Read => "read",
            };
            return Ok(json_response(StatusCode::OK, &api::WhoAmI { name: name.to_string(), role: role.into() }));
        }
        Op::Evaluate => {
            let body = read_json(req.into_body()).await?;
            return evaluate(&state, params[0], body_of(body, op)?);
        }
        Op::ListAiConfigs => return Ok(list_ai_configs(&state)),
        Op::Audit => return audit::page(state, &query).await,
        Op::Guards => {
            let answer = api::GuardList { revision: state.revision(), guards: guards.status() };
            return Ok(json_response(StatusCode::OK, &answer));
        }
        Op::Experiments => {
            // Monte Carlo and every arm's statistics: off the admin plane's event loop.
            let (all, revision) = blocking(Arc::clone(&state), |state| {
                let all = experiments(&state);
                crate::experiment::publish(&all, &state.gateway().metrics, true);
                (all, state.revision())
            })
            .await?;
            return Ok(json_response(StatusCode::OK, &api::ExperimentList { revision, experiments: all }));
        }
        Op::Experiment => {
            let flag = params[0].to_string();
            return blocking(Arc::clone(&state), move |state| experiment(&state, &flag)).await?;
        }
        Op::Status => {
            let store = tokio::task::spawn_blocking({
                let state = Arc::clone(&state);
                move || state.store_status()
            })
            .await
            .unwrap_or_default();
            let answer = api::StatusAnswer { revision: state.revision(), reload: state.reload_status(), store };
            return Ok(json_response(StatusCode::OK, &answer));
        }
        _ => {}
    }
    if role != AdminRole::Write {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("token `{name}` may only read")));
    }
    let if_match = if_match(req.headers())?;
    let body = read_json(req.into_body()).await?;
    let (change, reason) = change_for(op, &params, body)?;
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(invalid("reason", "every change needs a reason (it goes to the audit log)"));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(invalid("reason", &format!("at most {MAX_REASON} characters (it goes to the audit log)")));
    }
    let request = ChangeRequest { actor: name.to_string(), reason, if_match, fence: None };
    if dry_run(&query)? {
        let preview = tokio::task::spawn_blocking(move || state.preview(change, &request))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the check was interrupted"))??;
        return Ok(json_response(StatusCode::OK, &preview));
    }
    let applied = tokio::task::spawn_blocking(move || state.apply(change, &request))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the change was interrupted"))??;
    let mut resp = json_response(StatusCode::OK, &applied);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", applied.revision)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// Run `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: Arc<State>,
    f: impl FnOnce(Arc<State>) -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(state))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request was interrupted"))
}

/// The `metrics:` definitions the running snapshot was built with.
fn metric_defs(state: &State) -> std::collections::BTreeMap<String, crate::config::signals::MetricDef> {
    state.gateway().snapshot().metric_defs.iter().map(|(k, d)| (k.to_string(), d.clone())).collect()
}

/// The results of every flag's experiment (one that does not read is left out and logged).
fn experiments(state: &State) -> Vec<crate::experiment::Results> {
    let (current, defs) = (state.current(), metric_defs(state));
    let metrics = &state.gateway().metrics;
    current
        .docs
        .flags
        .keys()
        .filter_map(|key| match crate::experiment::results(key, &current.flag_with_iteration(key)?, &defs, metrics)? {
            Ok(r) => Some(r),
            Err(error) => {
                tracing::warn!(flag = %key, %error, "an experiment's results cannot be computed");
                None
            }
        })
        .collect()
}

fn experiment(state: &State, flag: &str) -> Result<Response<Body>, ApiError> {
    let doc = state
        .current()
        .flag_with_iteration(flag)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no flag `{flag}`")))?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("flag `{flag}` has no experiment"));
    let results = crate::experiment::results(flag, &doc, &metric_defs(state), &state.gateway().metrics)
        .ok_or_else(not_found)?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid_experiment", e))?;
    crate::experiment::publish(std::slice::from_ref(&results), &state.gateway().metrics, false);
    let mut resp = json_response(StatusCode::OK, &results);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", state.revision())) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

fn authenticate<'t>(tokens: &'t Tokens, headers: &http::HeaderMap) -> Result<(&'t str, AdminRole), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value =
        headers.get(header::AUTHORIZATION).ok_or_else(|| unauthorized("send `Authorization: Bearer <admin token>`"))?;
    let token = crate::auth::bearer(value.as_bytes())
        .ok_or_else(|| unauthorized("send `Authorization: Bearer <admin token>`"))?;
    tokens.authenticate(token).ok_or_else(|| unauthorized("invalid admin token"))
}

/// A change's `?dry_run=true`: check it and answer what it would change, store nothing.
fn dry_run(query: &str) -> Result<bool, ApiError> {
    let mut dry = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "true")) {
            ("dry_run", "true" | "1") => dry = true,
            ("dry_run", "false" | "0") => dry = false,
            ("dry_run", _) => return Err(invalid("dry_run", "must be true or false")),
            (k, _) => return Err(invalid(k, "unknown parameter (a change takes only dry_run)")),
        }
    }
    Ok(dry)
}

/// `If-Match: <revision>` (quoted or not).
fn if_match(headers: &http::HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = v.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    text.parse().map(Some).map_err(|_| invalid("If-Match", "must be a revision number"))
}

fn invalid(path: &str, message: &str) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid",
        message: format!("{path}: {message}"),
        problems: vec![Problem::new(path, message)],
        retry_after: None,
    }
}

async fn read_json(body: Incoming) -> Result<Value, ApiError> {
    let bytes: Bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is too large"))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the body must be a JSON object"));
    }
    Ok(value)
}

/// What each field of a request body must be, for the error that names it.
fn expected(op: Op, field: &str) -> &'static str {
    match (op, field) {
        (_, "weights") => "a list of {variation, percent}",
        (_, "variation") => "a variation name",
        (_, "ai_config") => "an AI config key",
        (Op::AddVersion, "version") => "a version object",
        (_, "version") => "a version number",
        (_, "revision") => "a revision number",
        (_, "context") => "a LaunchDarkly context object, or a user key",
        (_, "variables") => "an object, as `x-sluice-variables` holds",
        (_, "client") => "a client name from the config's `clients`",
        (_, "explain") => "true or false",
        (_, "reason") => "a sentence for the audit log",
        _ => "as the OpenAPI document says",
    }
}

/// The request body of `op` as its type in [`api`]; a missing or mistyped field is a 422
/// naming it.
fn body_of<T: DeserializeOwned>(body: Value, op: Op) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let inner = e.inner().to_string();
        match inner.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')) {
            Some((field, _)) => invalid(field, &format!("required: {}", expected(op, field))),
            None => {
                let path = e.path().to_string();
                let field = path.split(['.', '[']).next().unwrap_or(".");
                invalid(field, &format!("must be {}", expected(op, field)))
            }
        }
    })
}

/// The change a mutation asks for, and its reason.
fn change_for(op: Op, params: &[&str], body: Value) -> Result<(Change, String), ApiError> {
    let p = |i: usize| params.get(i).map(|s| s.to_string()).unwrap_or_default();
    // A change whose body holds only its reason.
    let reason_only = |change: Change, body: Value| -> Result<(Change, String), ApiError> {
        Ok((change, body_of::<api::ReasonBody>(body, op)?.reason))
    };
    match op {
        Op::Kill => reason_only(Change::SetOn { flag: p(0), on: false }, body),
        Op::Restore => reason_only(Change::SetOn { flag: p(0), on: true }, body),
        Op::Rollout => {
            let b: api::RolloutBody = body_of(body, op)?;
            let weights = b.weights.into_iter().map(|w| (w.variation, w.percent)).collect();
            Ok((Change::Rollout { flag: p(0), weights }, b.reason))
        }
        Op::Fallthrough => {
            let b: api::VariationBody = body_of(body, op)?;
            Ok((Change::Fallthrough { flag: p(0), variation: b.variation }, b.reason))
        }
        Op::Rule => {
            let b: api::VariationBody = body_of(body, op)?;
            Ok((Change::RuleVariation { flag: p(0), rule: p(1), variation: b.variation }, b.reason))
        }
        Op::PointVariation => {
            let b: api::PointBody = body_of(body, op)?;
            let change =
                Change::PointVariation { flag: p(0), variation: p(1), ai_config: b.ai_config, version: b.version };
            Ok((change, b.reason))
        }
        Op::Rollback => {
            let b: api::RollbackBody = body_of(body, op)?;
            Ok((Change::Rollback { flag: p(0), revision: b.revision }, b.reason))
        }
        Op::AddVersion => {
            let b: api::AddVersionBody = body_of(body, op)?;
            if !b.version.is_object() {
                return Err(invalid("version", "must be a version object"));
            }
            Ok((Change::AddVersion { ai_config: p(0), version: b.version }, b.reason))
        }
        Op::ExperimentShip => {
            let b: api::VariationBody = body_of(body, op)?;
            Ok((Change::ExperimentShip { flag: p(0), variation: b.variation }, b.reason))
        }
        Op::ExperimentStop => reason_only(Change::ExperimentStop { flag: p(0) }, body),
        Op::GuardPause => reason_only(Change::GuardState { flag: p(0), state: "paused", restart: false }, body),
        Op::GuardResume => reason_only(Change::GuardState { flag: p(0), state: "armed", restart: false }, body),
        Op::GuardRearm => reason_only(Change::GuardState { flag: p(0), state: "armed", restart: true }, body),
        Op::GuardDismiss => reason_only(Change::GuardDismiss { flag: p(0) }, body),
        Op::ListFlags
        | Op::Timeseries
        | Op::WhoAmI
        | Op::Experiments
        | Op::Experiment
        | Op::GetFlag
        | Op::Evaluate
        | Op::ListAiConfigs
        | Op::Audit
        | Op::Status
        | Op::OpenApi
        | Op::Guards => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "not a change")),
    }
}

/// Who changed the flag last, when and why: the audit entry of `revision` (`None` for a
/// flag as the config file has it, or a log that cannot be read now). Blocking.
fn last_change(state: &State, revision: Option<u64>) -> Option<api::LastChange> {
    let revision = revision?;
    let q = crate::state::AuditQuery { before: Some(revision + 1), limit: 1, ..Default::default() };
    let entry = state.audit(&q).ok()?.entries.into_iter().next().filter(|e| e.revision == revision)?;
    Some(api::LastChange { revision, time: entry.time, actor: entry.actor, reason: entry.reason })
}

/// A flag's summary: on/off, variations, fallthrough, the revision that last changed it.
fn flag_view(state: &State, key: &str, doc: &Value, revision: Option<u64>) -> api::FlagView {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let variations = doc
        .get("variations")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .map(|v| api::VariationView {
                    name: text(v, "name"),
                    ai_config: text(v, "ai_config"),
                    version: v.get("version").and_then(Value::as_u64),
                })
                .collect()
        })
        .unwrap_or_default();
    api::FlagView {
        key: key.to_string(),
        on: doc.get("on").and_then(Value::as_bool).unwrap_or(true),
        variations,
        fallthrough: doc.get("fallthrough").cloned().unwrap_or(Value::Null),
        revision,
        last_change: last_change(state, revision),
        off_variation: text(doc, "off_variation"),
        definition: None,
    }
}

/// Blocking (each flag's last change is read from the audit log).
fn list_flags(state: &State) -> Response<Body> {
    let current = state.current();
    let flags = current
        .docs
        .flags
        .iter()
        .map(|(k, v)| flag_view(state, k, v, current.flag_revisions.get(k).copied()))
        .collect();
    json_response(StatusCode::OK, &api::FlagList { revision: current.revision, flags })
}

/// Flag `key`'s document, or a 404.
fn flag_doc<'s>(current: &'s crate::state::Stored, key: &str) -> Result<&'s Value, ApiError> {
    current
        .docs
        .flags
        .get(key)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no flag `{key}`")))
}

fn get_flag(state: &State, key: &str) -> Result<Response<Body>, ApiError> {
    let current = state.current();
    let doc = flag_doc(&current, key)?;
    let mut flag = flag_view(state, key, doc, current.flag_revisions.get(key).copied());
    flag.definition = Some(doc.clone());
    let mut resp = json_response(StatusCode::OK, &api::FlagAnswer { revision: current.revision, flag });
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", current.revision)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// `GET /flags/{key}/timeseries?window=&step=`: the flag's variations from the history.
fn timeseries(state: &State, key: &str, query: &str) -> Result<Response<Body>, ApiError> {
    use crate::metrics::history::Window;
    let seconds = |name: &str, v: &str| -> Result<u64, ApiError> {
        let v = percent_decode(v);
        v.trim()
            .parse::<u64>()
            .or_else(|_| humantime::parse_duration(v.trim()).map(|d| d.as_secs()))
            .map_err(|_| invalid(name, "must be a number of seconds or a duration such as 5m, 1h, 24h"))
    };
    let (mut window, mut step) = (3600, 0);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "window" => window = seconds("window", v)?,
            "step" => step = seconds("step", v)?,
            _ => return Err(invalid(k, "unknown parameter (use window, step)")),
        }
    }
    let w = Window::new(window, step).map_err(|e| {
        let (field, message) = e.split_once(": ").unwrap_or(("window", &e));
        invalid(field, message)
    })?;
    let current = state.current();
    let doc = flag_doc(&current, key)?;
    let variations: Vec<String> = doc
        .get("variations")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let metrics = &state.gateway().metrics;
    let live = |variation: &str| Some(metrics.live_totals(key, variation));
    let series = metrics.history.view(key, &variations, w, now, &live);
    let answer = api::Timeseries {
        revision: current.revision,
        flag: key.to_string(),
        window: w.window,
        step: w.step,
        to: now,
        variations: series,
    };
    Ok(json_response(StatusCode::OK, &answer))
}

fn list_ai_configs(state: &State) -> Response<Body> {
    let current = state.current();
    let ai_configs = current.docs.ai_configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    json_response(StatusCode::OK, &api::AiConfigList { revision: current.revision, ai_configs })
}

/// `%XX` and `+` in a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
