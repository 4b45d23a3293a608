//! OpenFeature Remote Evaluation Protocol (OFREP 0.3) on the data plane, for apps that
//! evaluate sluice's flags through an OpenFeature SDK instead of sending their model
//! calls through it: `POST /ofrep/v1/evaluate/flags/{key}` (one flag, server-side
//! providers) and `POST /ofrep/v1/evaluate/flags` (every flag the key may see, for
//! client-side providers, with a context-dependent `ETag` and 304).
//!
//! The same flags, the same bucketing and the same snapshot as the proxy path: a routing
//! flag's value is the AI config version its variation names, in LaunchDarkly's AI config
//! shape with the messages unrendered (never a provider's URL or key). LaunchDarkly's
//! reasons map to OpenFeature's (`reason_of`), every success carries `variant`, numbers
//! keep their JSON form, metadata holds primitives only.
//!
//! Auth: a gateway key as `Authorization: Bearer` or `X-API-Key` (401 without one, no
//! body, as the protocol says); a key may be limited to some flags (the others are
//! `FLAG_NOT_FOUND` to it), rate-limited (429 with `Retry-After` in whole seconds), or of
//! kind `browser`: callable from its `origins` only, with CORS.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::GatewayError;
use crate::auth::Client;
use crate::config::ClientKind;
use crate::flags::{Context, Detail, ErrorKind, FlagIndex, Reason};
use crate::snapshot::Snapshot;
use crate::wire::body::{self, Body};

/// The prefix of both endpoints.
pub const PREFIX: &str = "/ofrep/v1/evaluate/flags";

/// Largest request body: a context, not a document.
pub const MAX_BODY: u64 = 64 * 1024;

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Whether `path` is one of OFREP's.
pub fn is_ofrep(path: &str) -> bool {
    path == PREFIX || path.strip_prefix(PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

/// Serve one OFREP request (any method: other than POST and a browser key's preflight,
/// 405).
pub async fn handle(snapshot: &Snapshot, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let key = match path.strip_prefix(PREFIX).unwrap_or("") {
        "" => None,
        rest => Some(percent_decoded(&rest[1..])),
    };
    if req.method() == Method::OPTIONS {
        return preflight(snapshot, req.headers());
    }
    if req.method() != Method::POST {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let client = match authenticate(snapshot, req.headers()) {
        Some(c) => c,
        None => return plain(StatusCode::UNAUTHORIZED),
    };
    // A browser key answers only its origins' pages, and every answer says so (CORS).
    let origin = match cors_origin(client, req.headers()) {
        Ok(o) => o,
        Err(()) => return plain(StatusCode::FORBIDDEN),
    };
    let mut resp = evaluate(snapshot, client, key.as_deref(), req).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag, retry-after"));
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

async fn evaluate(snapshot: &Snapshot, client: &Client, key: Option<&str>, req: Request<Incoming>) -> Response<Body> {
    if let Some(limit) = &client.ofrep_limit {
        if let Err(seconds) = limit.take_or_retry_after(std::time::Instant::now()) {
            let mut resp = plain(StatusCode::TOO_MANY_REQUESTS);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return resp;
        }
    }
    let (parts, incoming) = req.into_parts();
    let bytes = match super::read_body_within(MAX_BODY, snapshot, &parts.headers, incoming).await {
        Ok(b) => b,
        Err(GatewayError::BodyTooLarge { limit }) => {
            let details = format!("the request body is larger than {limit} bytes");
            return failure(StatusCode::PAYLOAD_TOO_LARGE, key, "GENERAL", &details);
        }
        Err(GatewayError::BodyTimeout) => return plain(StatusCode::REQUEST_TIMEOUT),
        Err(e) => return failure(StatusCode::BAD_REQUEST, key, "PARSE_ERROR", &e.to_string()),
    };
    let context = match context_of(&bytes) {
        Ok(c) => c.with(client.context.clone()),
        Err((code, details)) => return failure(StatusCode::BAD_REQUEST, key, code, &details),
    };
    match key {
        Some(key) => single(snapshot, client, key, &context),
        None => bulk(snapshot, client, &context, &parts.headers),
    }
}

/// One flag for `context`, as `POST /ofrep/v1/evaluate/flags/{key}` answers.
pub fn single(snapshot: &Snapshot, client: &Client, key: &str, context: &Context) -> Response<Body> {
    let targeting = &snapshot.targeting;
    let Some(index) = targeting.set.index(key).filter(|_| client.sees_flag(key)) else {
        let details = format!("flag `{}` was not found", super::truncate(key));
        return failure(StatusCode::NOT_FOUND, Some(key), "FLAG_NOT_FOUND", &details);
    };
    match evaluation(snapshot, key, index, context) {
        Ok(success) => json_answer(StatusCode::OK, &success),
        Err((status, code, details)) => failure(status, Some(key), code, &details),
    }
}

/// Every flag `client` may see for `context`, as `POST /ofrep/v1/evaluate/flags` answers
/// (`headers`: the request's, for `If-None-Match`).
pub fn bulk(snapshot: &Snapshot, client: &Client, context: &Context, headers: &HeaderMap) -> Response<Body> {
    let targeting = &snapshot.targeting;
    let flags: Vec<Value> = targeting
        .set
        .keys()
        .filter(|key| client.sees_flag(key))
        .filter_map(|key| {
            let index = targeting.set.index(key)?;
            Some(match evaluation(snapshot, key, index, context) {
                Ok(success) => success,
                Err((_, code, details)) => json!({"key": key, "errorCode": code, "errorDetails": details}),
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "flags": flags })).unwrap_or_default();
    // The answer's own digest: it changes with the context, the key's scope and the state.
    let digest = sha2::Sha256::digest(&body);
    let etag = format!("\"{}\"", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>());
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == etag.to_str().unwrap_or(""));
    let mut resp =
        if matches { plain(StatusCode::NOT_MODIFIED) } else { body::json(StatusCode::OK, Bytes::from(body)) };
    resp.headers_mut().insert(header::ETAG, etag);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A failed evaluation of one flag: status, OpenFeature error code, details.
type Failure = (StatusCode, &'static str, String);

/// One flag's success object, or why it cannot be evaluated.
fn evaluation(snapshot: &Snapshot, key: &str, index: FlagIndex, context: &Context) -> Result<Value, Failure> {
    let targeting = &snapshot.targeting;
    let detail = targeting.set.evaluate_index(index, context);
    if let Reason::Error(kind) = detail.reason {
        return Err(match kind {
            ErrorKind::FlagNotFound => (StatusCode::NOT_FOUND, "FLAG_NOT_FOUND", format!("flag `{key}` was not found")),
            ErrorKind::UserNotSpecified => {
                (StatusCode::BAD_REQUEST, "TARGETING_KEY_MISSING", "the context has no targeting key".into())
            }
            ErrorKind::MalformedFlag => (StatusCode::BAD_REQUEST, "PARSE_ERROR", format!("flag `{key}` is malformed")),
            other => (StatusCode::INTERNAL_SERVER_ERROR, "GENERAL", format!("flag `{key}`: {other:?}")),
        });
    }
    let route = snapshot.flag_route(key);
    let variant_of = |i: usize| route.and_then(|r| r.variants.get(i));
    let mut metadata = Map::new();
    metadata.insert("ldReason".into(), detail.reason.kind().into());
    match detail.reason {
        Reason::RuleMatch { rule_index, rule_id, in_experiment } => {
            metadata.insert("ruleIndex".into(), rule_index.into());
            metadata.insert("ruleId".into(), rule_id.into());
            metadata.insert("inExperiment".into(), in_experiment.into());
        }
        Reason::Fallthrough { in_experiment } => {
            metadata.insert("inExperiment".into(), in_experiment.into());
        }
        Reason::PrerequisiteFailed { prerequisite_key } => {
            metadata.insert("prerequisiteKey".into(), prerequisite_key.into());
        }
        _ => {}
    }
    let mut answer = Map::new();
    answer.insert("key".into(), key.into());
    answer.insert("reason".into(), reason_of(snapshot, index, &detail).into());
    if let Some(i) = detail.variation_index {
        let name = targeting.variation_name(key, i).map_or_else(|| i.to_string(), str::to_string);
        answer.insert("variant".into(), name.clone().into());
        match variant_of(i) {
            Some(v) => {
                let mut value = v.version.ld_value.clone();
                value["_ldMeta"]["variationKey"] = Value::String(name);
                metadata.insert("aiConfigKey".into(), (*v.version.key).into());
                metadata.insert("aiConfigVersion".into(), v.version.version.into());
                answer.insert("value".into(), value);
            }
            None => {
                if let Some(value) = detail.value {
                    answer.insert("value".into(), value.clone());
                }
            }
        }
    }
    answer.insert("metadata".into(), Value::Object(metadata));
    Ok(Value::Object(answer))
}

/// LaunchDarkly's reason as OpenFeature's: a rollout served is `SPLIT`, a target or rule
/// `TARGETING_MATCH`, a flag with no targeting at all `STATIC`, off `DISABLED`, the
/// fallthrough of a targeted flag and a failed prerequisite `DEFAULT`.
fn reason_of(snapshot: &Snapshot, index: FlagIndex, detail: &Detail<'_>) -> &'static str {
    let set = &snapshot.targeting.set;
    match detail.reason {
        Reason::Off => "DISABLED",
        Reason::TargetMatch => "TARGETING_MATCH",
        Reason::RuleMatch { .. } if set.served_split(index, &detail.reason) => "SPLIT",
        Reason::RuleMatch { .. } => "TARGETING_MATCH",
        Reason::Fallthrough { .. } if set.served_split(index, &detail.reason) => "SPLIT",
        Reason::Fallthrough { .. } if set.is_static(index) => "STATIC",
        Reason::Fallthrough { .. } | Reason::PrerequisiteFailed { .. } => "DEFAULT",
        Reason::Error(_) => "ERROR",
    }
}

/// The request's `context` as a LaunchDarkly context (as LaunchDarkly's own OpenFeature
/// provider translates one): `targetingKey` (else `key`) is the key, a string `kind`
/// picks the kind (default `user`), `kind: multi` holds one object per kind,
/// `privateAttributes` become `_meta.privateAttributes`; the rest are attributes.
pub fn context_of(bytes: &[u8]) -> Result<Context, (&'static str, String)> {
    let ld = ld_context(bytes)?;
    Context::from_json(&ld).map_err(|e| ("INVALID_CONTEXT", e.to_string()))
}

/// The request's `context` as LaunchDarkly context JSON.
fn ld_context(bytes: &[u8]) -> Result<Value, (&'static str, String)> {
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| ("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    let Some(context) = body.get("context") else {
        return Err(("INVALID_CONTEXT", "the body needs a `context` object".into()));
    };
    let Value::Object(obj) = context else {
        return Err(("INVALID_CONTEXT", "`context` must be an object".into()));
    };
    let ld = match obj.get("kind") {
        Some(Value::String(k)) if k == "multi" => {
            let mut multi = Map::new();
            multi.insert("kind".into(), "multi".into());
            for (kind, single) in obj.iter().filter(|(k, _)| *k != "kind" && *k != "targetingKey") {
                let Value::Object(single) = single else {
                    return Err(("INVALID_CONTEXT", format!("`{kind}` in a multi-kind context must be an object")));
                };
                multi.insert(kind.clone(), Value::Object(single_of(single, None)?));
            }
            Value::Object(multi)
        }
        Some(Value::String(k)) => Value::Object(single_of(obj, Some(k))?),
        Some(_) => return Err(("INVALID_CONTEXT", "`kind` must be a string".into())),
        None => Value::Object(single_of(obj, Some("user"))?),
    };
    Ok(ld)
}

fn single_of(obj: &Map<String, Value>, kind: Option<&str>) -> Result<Map<String, Value>, (&'static str, String)> {
    let key = match (obj.get("targetingKey"), obj.get("key")) {
        (Some(Value::String(k)), _) | (None, Some(Value::String(k))) if !k.is_empty() => k.clone(),
        (Some(_), _) | (None, Some(_)) => {
            return Err(("INVALID_CONTEXT", "`targetingKey` must be a non-empty string".into()))
        }
        (None, None) => return Err(("TARGETING_KEY_MISSING", "the context has no `targetingKey`".into())),
    };
    let mut out = Map::new();
    if let Some(kind) = kind {
        out.insert("kind".into(), kind.into());
    }
    out.insert("key".into(), key.into());
    for (name, value) in obj {
        match name.as_str() {
            "targetingKey" | "key" | "kind" | "_meta" => {}
            "privateAttributes" => {
                out.insert("_meta".into(), json!({ "privateAttributes": value }));
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(out)
}

/// The client of the request's key: `Authorization: Bearer` or `X-API-Key`.
fn authenticate<'s>(snapshot: &'s Snapshot, headers: &HeaderMap) -> Option<&'s Client> {
    let key = match headers.get(header::AUTHORIZATION) {
        Some(v) => crate::auth::bearer(v.as_bytes())?,
        None => headers.get(&X_API_KEY)?.as_bytes(),
    };
    snapshot.clients.authenticate(key).map(|c| &**c)
}

/// A browser key's `Origin`, when it is one of its origins (`Err`: it is not, or there is
/// none); `None` for other keys, which get no CORS headers.
fn cors_origin(client: &Client, headers: &HeaderMap) -> Result<Option<HeaderValue>, ()> {
    if client.kind != ClientKind::Browser {
        return Ok(None);
    }
    let origin = headers.get(header::ORIGIN).ok_or(())?;
    let text = origin.to_str().map_err(|_| ())?;
    client.origins.iter().any(|o| o == text).then(|| Some(origin.clone())).ok_or(())
}

/// `OPTIONS`: a preflight from an origin some browser key lists.
fn preflight(snapshot: &Snapshot, headers: &HeaderMap) -> Response<Body> {
    let Some(origin) = headers.get(header::ORIGIN) else { return plain(StatusCode::FORBIDDEN) };
    let allowed = snapshot
        .clients
        .all()
        .any(|c| c.kind == ClientKind::Browser && c.origins.iter().any(|o| o.as_bytes() == origin.as_bytes()));
    if !allowed {
        return plain(StatusCode::FORBIDDEN);
    }
    let mut resp = plain(StatusCode::NO_CONTENT);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, x-api-key, content-type, if-none-match"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.append(header::VARY, HeaderValue::from_static("origin"));
    resp
}

/// An error answer: `{key?, errorCode, errorDetails}` (the key as the app sent it, at
/// most 200 characters of it).
fn failure(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response<Body> {
    let mut v = json!({"errorCode": code, "errorDetails": details});
    if let Some(key) = key {
        v["key"] = super::truncate(key).into();
    }
    json_answer(status, &v)
}

fn json_answer(status: StatusCode, v: &Value) -> Response<Body> {
    body::json(status, serde_json::to_vec(v).unwrap_or_default())
}

/// An answer with no body (401, 403, 304, 405, 429: the protocol gives them none).
fn plain(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    resp
}

/// `%XX` in a path segment.
pub(super) fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(body: &str) -> Result<Value, (&'static str, String)> {
        ld_context(body.as_bytes())
    }

    #[test]
    fn contexts_map_as_launchdarklys_own_provider_maps_them() {
        assert_eq!(
            ctx(r#"{"context": {"targetingKey": "u1", "email": "a@b.c", "plan": {"tier": 2}}}"#).unwrap(),
            json!({"kind": "user", "key": "u1", "email": "a@b.c", "plan": {"tier": 2}})
        );
        // targetingKey wins over key; `kind` picks the kind.
        assert_eq!(
            ctx(r#"{"context": {"targetingKey": "t", "key": "k", "kind": "org"}}"#).unwrap(),
            json!({"kind": "org", "key": "t"})
        );
        assert_eq!(ctx(r#"{"context": {"key": "k"}}"#).unwrap(), json!({"kind": "user", "key": "k"}));
        assert_eq!(
            ctx(r#"{"context": {"targetingKey": "u", "privateAttributes": ["email"], "email": "x"}}"#).unwrap()
                ["_meta"],
            json!({"privateAttributes": ["email"]})
        );
        let multi =
            ctx(r#"{"context": {"kind": "multi", "user": {"targetingKey": "u"}, "org": {"key": "o", "size": 3}}}"#)
                .unwrap();
        assert_eq!(multi["kind"], "multi");
        assert_eq!(multi["org"], json!({"key": "o", "size": 3}));
        assert_eq!(multi["user"], json!({"key": "u"}));
        for (body, code) in [
            (r#"{"context": {}}"#, "TARGETING_KEY_MISSING"),
            (r#"{"context": {"email": "x"}}"#, "TARGETING_KEY_MISSING"),
            (r#"{"context": {"targetingKey": ""}}"#, "INVALID_CONTEXT"),
            (r#"{"context": {"targetingKey": 7}}"#, "INVALID_CONTEXT"),
            (r#"{"context": {"targetingKey": "u", "kind": 3}}"#, "INVALID_CONTEXT"),
            (r#"{"context": {"targetingKey": "u", "kind": "kind"}}"#, "INVALID_CONTEXT"),
            (r#"{"context": {"kind": "multi", "user": 3}}"#, "INVALID_CONTEXT"),
            (r#"{"context": 3}"#, "INVALID_CONTEXT"),
            (r#"{}"#, "INVALID_CONTEXT"),
            (r#"{"context": "#, "PARSE_ERROR"),
        ] {
            assert_eq!(context_of(body.as_bytes()).map(|_| ()).map_err(|e| e.0), Err(code), "{body}");
        }
    }

    #[test]
    fn only_the_two_paths_are_ofreps() {
        assert!(is_ofrep("/ofrep/v1/evaluate/flags"));
        assert!(is_ofrep("/ofrep/v1/evaluate/flags/a"));
        assert!(!is_ofrep("/ofrep/v1/evaluate/flagsx"));
        assert!(!is_ofrep("/ofrep/v1/evaluate"));
        assert_eq!(percent_decoded("a%2Fb%20c%zz"), "a/b c%zz");
    }
}
