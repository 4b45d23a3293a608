//! The evaluation context of a request (phase 5 in ARCHITECTURE.md).
//!
//! 1. The `x-sluice-context` header: a LaunchDarkly context as JSON, single- or
//!    multi-kind. Invalid JSON or an invalid context is a 400 naming the problem.
//! 2. Otherwise the body's `user` field (a string) is the key of a `user` context.
//! 3. Otherwise a fresh random key, marked anonymous — unless the flag sets
//!    `require_context_key`, then the request is refused (400).
//!
//! The calling app is then added as a context of kind `client` (key: the client's name,
//! attributes: its configured attributes), replacing any `client` kind the request
//! sent, so rules can target apps and apps cannot pretend to be each other. Templates
//! see the context as the app sent it (`ldctx`), without the `client` kind; the client
//! is `client` there.

use http::header::HeaderName;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::request::JsonBody;
use crate::auth::Client;
use crate::flags::{Context, Single};

/// A LaunchDarkly context as JSON.
pub static X_SLUICE_CONTEXT: HeaderName = HeaderName::from_static("x-sluice-context");
/// A JSON object of template variables (`{{vars.*}}`).
pub static X_SLUICE_VARIABLES: HeaderName = HeaderName::from_static("x-sluice-variables");

/// The context a request is evaluated for, and the app's own view of it for templates.
pub struct RequestContext {
    /// For targeting: the app's context plus the `client` kind.
    pub context: Context,
    /// For templates (`ldctx`): the context as the app sent it.
    pub ldctx: Value,
    /// The request named no context: its key is random.
    pub random: bool,
}

/// Build the request's context (see the module docs for the order).
pub fn build(
    headers: &HeaderMap,
    body: &JsonBody<'_>,
    client: &Client,
    require_key: bool,
    flag: &str,
) -> Result<RequestContext, GatewayError> {
    let mut random = false;
    let (context, ldctx) = if let Some(raw) = headers.get(&X_SLUICE_CONTEXT) {
        let ldctx: Value = serde_json::from_slice(raw.as_bytes())
            .map_err(|e| GatewayError::InvalidContext(format!("`x-sluice-context` is not valid JSON: {e}")))?;
        let context = Context::from_json(&ldctx)
            .map_err(|e| GatewayError::InvalidContext(format!("`x-sluice-context` is not a valid context: {e}")))?;
        (context, ldctx)
    } else if let Some(user) = body.user()? {
        (Context::new("user", &user), serde_json::json!({"kind": "user", "key": user}))
    } else if require_key {
        return Err(GatewayError::ContextKeyRequired(flag.to_string()));
    } else {
        let key = format!("{:016x}", fastrand::u64(..));
        let ldctx = serde_json::json!({"kind": "user", "key": key, "anonymous": true});
        random = true;
        (Context::single(Single::user(&key, true)), ldctx)
    };
    Ok(RequestContext { context: context.with(client.context.clone()), ldctx, random })
}

/// The `x-sluice-variables` header: a JSON object, or an empty one when absent.
pub fn variables(headers: &HeaderMap) -> Result<Value, GatewayError> {
    let Some(raw) = headers.get(&X_SLUICE_VARIABLES) else { return Ok(Value::Object(Map::new())) };
    match serde_json::from_slice(raw.as_bytes()) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(GatewayError::InvalidVariables("`x-sluice-variables` must be a JSON object".into())),
        Err(e) => Err(GatewayError::InvalidVariables(format!("`x-sluice-variables` is not valid JSON: {e}"))),
    }
}
