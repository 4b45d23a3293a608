//! `POST /admin/v1/flags/{key}/evaluate`: evaluate a flag for a context against the
//! running gateway's state — the snapshot requests are served from, runtime changes
//! included — and, for a routing flag, show the AI config version it picks with its
//! prompt rendered for that context. Reads only; a read token may call it.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{invalid, json_response, ApiError};
use crate::aiconfig::RenderScope;
use crate::body::Body;
use crate::flags::trace::Explain;
use crate::flags::Context;
use crate::state::State;

/// `body`: `{"context": <LaunchDarkly context JSON, or a user key>, "variables"?: {...}
/// (as `x-sluice-variables`), "client"?: "<client name>" (its context kind and template
/// values, as when that app calls), "explain"?: bool}`.
pub fn evaluate(state: &State, key: &str, body: &Value) -> Result<Response<Body>, ApiError> {
    let snapshot = state.gateway().snapshot();
    let revision = state.revision();
    let targeting = &snapshot.targeting;
    let index = targeting
        .set
        .index(key)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no flag `{key}`")))?;
    let ldctx = match body.get("context") {
        Some(Value::String(user)) if !user.is_empty() => json!({"kind": "user", "key": user}),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err(invalid("context", "a LaunchDarkly context object, or a user key")),
    };
    let mut context = Context::from_json(&ldctx).map_err(|e| invalid("context", &e.to_string()))?;
    let vars = match body.get("variables") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(invalid("variables", "an object, as `x-sluice-variables` holds")),
    };
    let client = match body.get("client") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            snapshot.clients.by_name(name).ok_or_else(|| invalid("client", &format!("no client named `{name}`")))?,
        ),
        Some(_) => return Err(invalid("client", "a client name from the config's `clients`")),
    };
    if let Some(c) = client {
        context = context.with(c.context.clone());
    }
    let explain = body.get("explain").and_then(Value::as_bool).unwrap_or(false);
    let mut trace = Explain::default();
    let detail = if explain {
        targeting.set.evaluate_traced(index, &context, &mut trace)
    } else {
        targeting.set.evaluate_index(index, &context)
    };
    let variation = detail.variation_index.and_then(|i| targeting.variation_name(key, i));
    let mut out = json!({
        "revision": revision,
        "flag": key,
        "value": detail.value,
        "variationIndex": detail.variation_index,
        "variation": variation,
        "reason": detail.reason.to_json(),
    });
    if explain {
        out["explain"] = json!(trace.lines);
    }
    let chosen = snapshot.flag_route(key).zip(detail.variation_index).and_then(|(r, i)| r.variants.get(i));
    if let Some(variant) = chosen {
        let no_client = json!({});
        let scope =
            RenderScope { ldctx: &ldctx, vars: &vars, client: client.map_or(&no_client, |c| &c.template_value) };
        out["ai_config"] = variant.version.preview(&scope).map_err(|e| invalid("variables", &e.to_string()))?;
    }
    Ok(json_response(StatusCode::OK, &out))
}
