//! `POST /admin/v1/flags/{key}/evaluate`: evaluate a flag for a context against the
//! running gateway's state — the snapshot requests are served from, runtime changes
//! included — and, for a routing flag, show the AI config version it picks with its
//! prompt rendered for that context. Reads only; a read token may call it.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::api::{EvaluateBody, Evaluation};
use super::{invalid, json_response, ApiError};
use crate::aiconfig::RenderScope;
use crate::flags::trace::Explain;
use crate::flags::Context;
use crate::state::State;
use crate::wire::body::Body;

/// `body`: the context (LaunchDarkly context JSON, or a user key), template variables
/// (as `x-sluice-variables`), the client whose context kind and template values apply (as
/// when that app calls), and whether to explain each step.
pub fn evaluate(state: &State, key: &str, body: EvaluateBody) -> Result<Response<Body>, ApiError> {
    let snapshot = state.gateway().snapshot();
    let revision = state.revision();
    let targeting = &snapshot.targeting;
    let index = targeting
        .set
        .index(key)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no flag `{key}`")))?;
    let ldctx = match body.context {
        Value::String(user) if !user.is_empty() => json!({"kind": "user", "key": user}),
        v @ Value::Object(_) => v,
        _ => return Err(invalid("context", "a LaunchDarkly context object, or a user key")),
    };
    let mut context = Context::from_json(&ldctx).map_err(|e| invalid("context", &e.to_string()))?;
    let vars = match body.variables {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(invalid("variables", "an object, as `x-sluice-variables` holds")),
    };
    let client = match &body.client {
        None => None,
        Some(name) => Some(
            snapshot.clients.by_name(name).ok_or_else(|| invalid("client", &format!("no client named `{name}`")))?,
        ),
    };
    if let Some(c) = client {
        context = context.with(c.context.clone());
    }
    let mut trace = Explain::default();
    let detail = if body.explain {
        targeting.set.evaluate_traced(index, &context, &mut trace)
    } else {
        targeting.set.evaluate_index(index, &context)
    };
    let chosen = snapshot.flag_route(key).zip(detail.variation_index).and_then(|(r, i)| r.variants.get(i));
    let ai_config = match chosen {
        None => None,
        Some(variant) => {
            let no_client = json!({});
            let scope =
                RenderScope { ldctx: &ldctx, vars: &vars, client: client.map_or(&no_client, |c| &c.template_value) };
            Some(variant.version.preview(&scope).map_err(|e| invalid("variables", &e.to_string()))?)
        }
    };
    let answer = Evaluation {
        revision,
        flag: key.to_string(),
        variation: detail.variation_index.and_then(|i| targeting.variation_name(key, i)).map(str::to_string),
        value: detail.value.cloned().unwrap_or(Value::Null),
        variation_index: detail.variation_index,
        reason: detail.reason.to_json(),
        explain: body.explain.then_some(trace.lines),
        ai_config,
    };
    Ok(json_response(StatusCode::OK, &answer))
}
