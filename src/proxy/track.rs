//! AI configs for apps that call the provider themselves, measured as if sluice had made
//! the call:
//!
//! - `POST /v1/ai-configs/{flag}/evaluate` — the routing flag evaluated for the body's
//!   context (with the key's client context, as on the proxy path): the variation's AI
//!   config version in LaunchDarkly's AI config shape with its messages rendered for that
//!   context and the body's `variables`, and the signed response token of that variation
//!   (`tracking.token`), the same token a proxied answer carries in `x-sluice-token`;
//! - `POST /v1/track` — that token with what the app measured of its call (outcome,
//!   duration, time to first token, tokens, and any configured metric): recorded under the
//!   variation exactly as a proxied request is — `sluice_requests_total`, durations,
//!   tokens, cost, the guards' and experiments' statistics — and in
//!   `sluice_tracked_requests_total`, so the metrics say which path a request took. With
//!   the `answer` (and the app's `messages`), the flag's judges and guardrails look at it
//!   as at a proxied answer: sampled by the token's nonce, the same capture, the same
//!   statistics.
//!
//! Every check runs before anything is counted, with the statuses of `POST /v1/feedback`:
//! a body that does not read (400), a forged token (401), an old one or one of a variation
//! no longer served (410), a second report of the same call (409).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::feedback::{fleet_claim, metric_value, now_ms, take_here, MAX_BODY};
use crate::aiconfig::{AiMode, RenderScope};
use crate::flags::{Context, Reason};
use crate::metrics::{Finished, Outcome, Usage};
use crate::providers::Endpoint;
use crate::quality::Pending;
use crate::snapshot::Snapshot;
use crate::token::{Claims, TokenError};
use crate::wire::body::{self, Body};

/// The path prefix of the evaluate endpoint.
pub const AI_CONFIGS: &str = "/v1/ai-configs/";

/// The longest call a report may describe (a day).
const MAX_DURATION_MS: f64 = 86_400_000.0;
/// The most tokens one call may report, each way.
const MAX_TOKENS: u64 = 100_000_000;

/// The flag of `/v1/ai-configs/{flag}/evaluate`.
pub fn evaluate_path(path: &str) -> Option<Cow<'_, str>> {
    let key = path.strip_prefix(AI_CONFIGS)?.strip_suffix("/evaluate").filter(|k| !k.is_empty() && !k.contains('/'))?;
    // Percent-decoded, as OFREP decodes its path's flag key (a copy only when there is a `%`).
    Some(if key.contains('%') { Cow::Owned(super::ofrep::percent_decoded(key)) } else { Cow::Borrowed(key) })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateBody {
    /// A LaunchDarkly context object, or a user key.
    context: Value,
    #[serde(default)]
    variables: Option<Value>,
}

/// `POST /v1/ai-configs/{flag}/evaluate`.
pub async fn evaluate(snapshot: &Snapshot, flag: &str, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let client = super::authenticate(snapshot, &parts.headers)?;
    // OFREP and browser keys evaluate flags only: they may not mint tokens or record calls.
    if !client.may_proxy() {
        return Err(GatewayError::KeyNotAllowed(client.name.clone()));
    }
    // Each evaluation mints a token (and each token one report): the key's rate bounds both.
    if let Some(limit) = &client.ofrep_limit {
        limit.take_or_retry_after(std::time::Instant::now()).map_err(GatewayError::RateLimited)?;
    }
    let bytes = super::read_body_within(MAX_BODY, snapshot, &parts.headers, incoming).await?;
    let body: EvaluateBody = serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::MalformedJson(format!("the evaluate body is not valid: {e}")))?;
    let ldctx = match body.context {
        Value::String(user) if !user.is_empty() => json!({"kind": "user", "key": user}),
        v @ Value::Object(_) => v,
        _ => {
            return Err(GatewayError::InvalidContext("`context`: a LaunchDarkly context object, or a user key".into()))
        }
    };
    let context = Context::from_json(&ldctx)
        .map_err(|e| GatewayError::InvalidContext(format!("`context` is not a valid context: {e}")))?
        .with(client.context.clone());
    let vars = match body.variables {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(GatewayError::InvalidVariables("`variables` must be a JSON object".into())),
    };
    let route = snapshot.flag_route(flag).ok_or_else(|| GatewayError::ModelNotFound(super::truncate(flag)))?;
    let detail = snapshot.targeting.set.evaluate_index(route.index, &context);
    let chosen = match (detail.reason, detail.variation_index) {
        (Reason::Error(kind), _) => {
            return Err(GatewayError::FlagError { flag: flag.to_string(), kind: kind.as_str() })
        }
        (_, Some(i)) if i < route.variants.len() => i,
        _ => return Err(GatewayError::FlagError { flag: flag.to_string(), kind: "NO_VARIATION" }),
    };
    let variant = &route.variants[chosen];
    let scope = RenderScope { ldctx: &ldctx, vars: &vars, client: &client.template_value };
    let preview = variant.version.preview(&scope).map_err(|e| GatewayError::InvalidVariables(e.to_string()))?;
    let digest = snapshot.feedback.signer.context_digest(context.kinds().iter().map(|k| (&*k.kind, &*k.key)));
    let claims = Claims {
        issued_ms: now_ms(),
        nonce: fastrand::u64(..).to_be_bytes(),
        random_context: false,
        iteration: route.iteration,
        version: variant.version.version,
        context: digest,
        flag: flag.to_string(),
        variation: variant.name.to_string(),
        ai_config: variant.version.key.to_string(),
    };
    let token = snapshot.feedback.signer.sign(&claims).ok_or(GatewayError::Internal)?;
    let mut value = variant.version.ld_value.clone();
    value["_ldMeta"]["variationKey"] = Value::String(variant.name.to_string());
    value["_ldMeta"]["enabled"] = Value::Bool(variant.version.enabled);
    match variant.version.ai_mode {
        // The instructions are the first message, rendered; the tools are as configured.
        AiMode::Agent => value["instructions"] = json!(preview.messages.first().map(|m| &m.content)),
        AiMode::Completion => value["messages"] = json!(preview.messages),
    }
    value["tracking"] = json!({
        "token": token,
        "flag": flag,
        "variation": &*variant.name,
        "ai_config": &*variant.version.key,
        "version": variant.version.version,
        "reason": detail.reason.to_json(),
    });
    Ok(body::json(StatusCode::OK, serde_json::to_vec(&value).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackBody<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    /// `ok` (default), `error`, `timeout`, `client_error` or `cancelled`.
    #[serde(default, borrow)]
    outcome: Option<Cow<'a, str>>,
    duration_ms: f64,
    #[serde(default)]
    ttft_ms: Option<f64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cached_input_tokens: Option<u64>,
    /// Configured `metrics:` by key, as `POST /v1/feedback` takes them one at a time.
    #[serde(default)]
    metrics: serde_json::Map<String, Value>,
    /// The app's own messages (OpenAI chat messages), for the judges.
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    /// The answer: its text, or the provider's chat completion as the app received it.
    #[serde(default, borrow)]
    answer: Option<&'a RawValue>,
}

/// A chat message, as far as a report's `messages` must be one.
#[derive(Deserialize)]
struct ChatMessage {
    #[serde(rename = "role")]
    _role: String,
}

/// A chat completion, as far as a report's `answer` must be one: choices, each with its
/// message (content and tool calls are read by the capture).
#[derive(Deserialize)]
struct ChatCompletion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(rename = "message")]
    _message: serde::de::IgnoredAny,
}

/// A report's `messages`: a list of chat messages (each with its role).
fn check_messages(messages: &RawValue) -> Result<(), GatewayError> {
    serde_json::from_str::<Vec<ChatMessage>>(messages.get()).map(drop).map_err(|e| GatewayError::InvalidFeedback {
        param: "messages",
        message: format!("`messages` must be chat messages: {e}"),
    })
}

/// A report's answer as the judges and guardrails read a proxied one: the app's request
/// (its messages) and a chat completion.
fn judged_call(messages: Option<&RawValue>, answer: &RawValue) -> Result<(Bytes, Bytes), GatewayError> {
    let invalid = |message: String| GatewayError::InvalidFeedback { param: "answer", message };
    let request = match messages {
        None => Bytes::from_static(br#"{"messages":[]}"#),
        Some(m) => Bytes::from(format!(r#"{{"messages":{}}}"#, m.get())),
    };
    let text = answer.get().trim_start();
    let response = if text.starts_with('"') {
        let content: Cow<'_, str> =
            serde_json::from_str(text).map_err(|e| invalid(format!("not a JSON string: {e}")))?;
        let message = json!({"role": "assistant", "content": content});
        Bytes::from(json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).to_string())
    } else {
        let expected = "the answer's text, or the chat completion the provider sent (`choices` with a `message`)";
        match serde_json::from_str::<ChatCompletion>(text) {
            Ok(c) if !c.choices.is_empty() => Bytes::copy_from_slice(text.as_bytes()),
            Ok(_) => return Err(invalid(format!("{expected}: `choices` is empty"))),
            Err(e) => return Err(invalid(format!("{expected}: {e}"))),
        }
    };
    Ok((request, response))
}

/// `POST /v1/track`.
pub async fn track(snapshot: &Snapshot, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let client = super::authenticate(snapshot, &parts.headers)?;
    // OFREP and browser keys evaluate flags only: they may not mint tokens or record calls.
    if !client.may_proxy() {
        return Err(GatewayError::KeyNotAllowed(client.name.clone()));
    }
    // A report may carry a whole answer: it is bounded as an app's request is.
    let bytes = super::read_body_within(snapshot.max_request_body, snapshot, &parts.headers, incoming).await?;
    let now = now_ms();
    let taken = check(snapshot, &bytes, now)?;
    // The report's own pair first: it decides whether the rest is claimed (and counted).
    let pairs: Vec<&str> = std::iter::once("track").chain(taken.values.iter().map(|v| v.0)).collect();
    let dedup = &snapshot.feedback.dedup;
    let fresh = fleet_claim(dedup, &taken.claims, &pairs, taken.expires_ms, now).await?;
    if !fresh[0] {
        for metric in &pairs[1..] {
            dedup.forget(&taken.claims, metric, taken.expires_ms);
        }
        return Err(GatewayError::DuplicateFeedback("track".into()));
    }
    Ok(body::json(StatusCode::ACCEPTED, taken.record(&fresh[1..])))
}

/// Check one report at `now_ms` and record it, as far as this instance can tell (the
/// fleet is not asked: see [`fleet_claim`]); the answer's JSON.
pub fn accept(snapshot: &Snapshot, bytes: &[u8], now_ms: u64) -> Result<String, GatewayError> {
    let taken = check(snapshot, bytes, now_ms)?;
    let all = vec![true; taken.values.len()];
    Ok(taken.record(&all))
}

/// A report checked and taken in this instance's set (its metrics: those not reported
/// before), not recorded yet.
struct Taken<'s> {
    snapshot: &'s Snapshot,
    claims: Claims,
    expires_ms: u64,
    variant: &'s crate::snapshot::Variant,
    judged: Option<(Bytes, Bytes)>,
    quality: &'s crate::quality::FlagQuality,
    finished: Finished,
    /// Each metric taken: its name, its signal's index and value.
    values: Vec<(&'s str, usize, f64)>,
}

impl Taken<'_> {
    /// Record the call, its answer for the judges, and the metrics the fleet had not
    /// counted (`fresh`, one per metric); the answer's JSON.
    fn record(self, fresh: &[bool]) -> String {
        let Taken { snapshot, claims, variant, judged, quality, finished, values, .. } = self;
        if let (Some((request, response)), false) = (&judged, quality.is_empty()) {
            let sampled = quality.sample(&claims.nonce);
            let (budget, limit) = (&snapshot.capture_budget, snapshot.capture_limit);
            if let Some(mut pending) = Pending::start(sampled, Endpoint::ChatCompletions, budget, limit, request, None)
            {
                pending.arm(&variant.quality);
                pending.feed_whole(response);
                pending.finish(finished.outcome == Outcome::Ok);
            }
        }
        variant.metrics.record_tracked(&finished);
        let mut counted = Vec::new();
        for ((metric, index, x), _) in values.into_iter().zip(fresh).filter(|(_, &f)| f) {
            if let Some(signal) = variant.signals.get(index) {
                signal.record(x);
                counted.push(metric);
            }
        }
        json!({
            "status": "accepted",
            "flag": claims.flag,
            "variation": claims.variation,
            "metrics": counted,
        })
        .to_string()
    }
}

/// Check one report at `now_ms` and take its pairs in this instance's set.
fn check<'s>(snapshot: &'s Snapshot, bytes: &[u8], now_ms: u64) -> Result<Taken<'s>, GatewayError> {
    let invalid = |param, message: String| GatewayError::InvalidFeedback { param, message };
    let body: TrackBody<'_> =
        serde_json::from_slice(bytes).map_err(|e| invalid("body", format!("the track body is not valid: {e}")))?;
    let outcome = match body.outcome.as_deref().unwrap_or("ok") {
        "ok" => Outcome::Ok,
        "error" => Outcome::UpstreamError,
        "timeout" => Outcome::Timeout,
        "client_error" => Outcome::ClientError,
        "cancelled" => Outcome::Cancelled,
        other => {
            let other: String = other.chars().take(40).collect();
            return Err(invalid("outcome", format!("`{other}`: use ok, error, timeout, client_error or cancelled")));
        }
    };
    let millis = |param, x: f64| {
        (x.is_finite() && (0.0..=MAX_DURATION_MS).contains(&x))
            .then(|| Duration::from_secs_f64(x / 1000.0))
            .ok_or_else(|| invalid(param, format!("milliseconds from 0 to {MAX_DURATION_MS}")))
    };
    let duration = millis("duration_ms", body.duration_ms)?;
    let ttft = body.ttft_ms.map(|t| millis("ttft_ms", t)).transpose()?;
    if ttft.is_some_and(|t| t > duration) {
        return Err(invalid("ttft_ms", "the first token cannot come after the end".into()));
    }
    let usage = match (body.input_tokens, body.output_tokens) {
        (None, None) if body.cached_input_tokens.is_none() => None,
        (Some(input), Some(output)) => {
            let cached = body.cached_input_tokens.unwrap_or(0);
            if input > MAX_TOKENS || output > MAX_TOKENS || cached > input {
                return Err(invalid("input_tokens", format!("at most {MAX_TOKENS} each way; cached ≤ input")));
            }
            Some(Usage { input, output, cached })
        }
        _ => return Err(invalid("input_tokens", "send input_tokens and output_tokens together".into())),
    };
    let claims = snapshot.feedback.signer.verify(&body.token).map_err(|e| match e {
        TokenError::Malformed => GatewayError::InvalidToken(format!("{e}: it is `tracking.token` of the evaluation")),
        TokenError::BadSignature => GatewayError::InvalidToken(e.to_string()),
    })?;
    if let Some(m) = body.messages {
        check_messages(m)?;
    }
    let judged = body.answer.map(|a| judged_call(body.messages, a)).transpose()?;
    // Every metric's value checked before anything is counted.
    let mut values = Vec::with_capacity(body.metrics.len());
    for (metric, value) in &body.metrics {
        values.push((metric.as_str(), metric_value(snapshot, metric, value)?));
    }
    let expires_ms = claims.issued_ms.saturating_add(snapshot.feedback.max_age_ms);
    if now_ms > expires_ms {
        return Err(GatewayError::TokenExpired("the evaluation is older than `feedback.max_age`".into()));
    }
    let gone = |what: String| GatewayError::TokenExpired(what);
    let route = snapshot
        .flag_route(&claims.flag)
        .ok_or_else(|| gone(format!("the flag `{}` no longer routes requests", claims.flag)))?;
    if claims.iteration != route.iteration {
        return Err(gone(format!("the evaluation belongs to iteration {} of the flag's experiment", claims.iteration)));
    }
    let variant =
        route.variants.iter().find(|v| *v.name == claims.variation).ok_or_else(|| {
            gone(format!("the flag `{}` has no variation `{}` any more", claims.flag, claims.variation))
        })?;
    // One report per call; each metric once per call too (shared with /v1/feedback).
    let take = |what: &str| take_here(snapshot, &claims, what, expires_ms, now_ms);
    take("track")?;
    let values = values
        .into_iter()
        .filter(|(metric, _)| take(metric).is_ok())
        .map(|(_, (index, x))| (snapshot.metric_defs[index].0.as_ref(), index, x))
        .collect();
    let finished = Finished { outcome, duration, ttft, overhead: Duration::ZERO, usage, cost: None };
    Ok(Taken { snapshot, claims, expires_ms, variant, judged, quality: &route.quality, finished, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evaluate_path_names_one_flag() {
        assert_eq!(evaluate_path("/v1/ai-configs/support-bot/evaluate").as_deref(), Some("support-bot"));
        assert_eq!(evaluate_path("/v1/ai-configs/support%2Dbot/evaluate").as_deref(), Some("support-bot"));
        assert_eq!(evaluate_path("/v1/ai-configs//evaluate"), None);
        assert_eq!(evaluate_path("/v1/ai-configs/a/b/evaluate"), None);
        assert_eq!(evaluate_path("/v1/ai-configs/a"), None);
    }
}
