//! The targeted path (phases 5–8 in ARCHITECTURE.md, for a `model` that names a flag): build the
//! context, evaluate the flag, resolve the variation's AI config version, render and
//! splice its edits into the app's body, send it — and, when the provider fails before
//! the first byte and the flag names a fallback variation, try that once.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;

use super::context::{self, RequestContext};
use super::error::{GatewayError, Outcome};
use super::record::Recorder;
use super::request::JsonBody;
use super::upstream::{self, Call};
use crate::aiconfig::{EditError, RenderScope};
use crate::auth::Client;
use crate::config::flags::WhenDisabled;
use crate::flags::Reason;
use crate::providers::Endpoint;
use crate::quality::Pending;
use crate::snapshot::{FlagRoute, Snapshot, Variant};
use crate::token::Claims;
use crate::wire::body::Body;

pub static X_SLUICE_FLAG: HeaderName = HeaderName::from_static("x-sluice-flag");
pub static X_SLUICE_VARIATION: HeaderName = HeaderName::from_static("x-sluice-variation");
pub static X_SLUICE_AI_CONFIG: HeaderName = HeaderName::from_static("x-sluice-ai-config");
pub static X_SLUICE_REASON: HeaderName = HeaderName::from_static("x-sluice-reason");
/// The response token: feedback on this answer names it (`POST /v1/feedback`).
pub static X_SLUICE_TOKEN: HeaderName = HeaderName::from_static("x-sluice-token");
/// Set when a fallback served the request: the variation that failed.
pub static X_SLUICE_FALLBACK_FROM: HeaderName = HeaderName::from_static("x-sluice-fallback-from");

/// The routing flag a request names.
pub struct Flag<'a> {
    pub route: &'a FlagRoute,
    /// The flag key (the request's `model`).
    pub key: &'a str,
    /// `stream_options` asking the provider for usage, when sluice adds it.
    pub usage_edit: Option<&'a str>,
    /// The app's request body, as it came (what judges read).
    pub request: &'a Bytes,
}

pub async fn forward(
    snapshot: &Snapshot,
    flag: Flag<'_>,
    headers: HeaderMap,
    body: &JsonBody<'_>,
    client: &Client,
    call: &Call<'_>,
    record: &mut Recorder,
) -> Result<Response<Body>, GatewayError> {
    let Flag { route, key: flag, usage_edit, request: app_request } = flag;
    let RequestContext { context, ldctx, random } =
        context::build(&headers, body, client, route.require_context_key, flag)?;
    let vars = context::variables(&headers)?;
    let detail = snapshot.targeting.set.evaluate_index(route.index, &context);
    let mut chosen = match (detail.reason, detail.variation_index) {
        (Reason::Error(kind), _) => {
            return Err(GatewayError::FlagError { flag: flag.to_string(), kind: kind.as_str() })
        }
        (_, Some(i)) if i < route.variants.len() => i,
        _ => return Err(GatewayError::FlagError { flag: flag.to_string(), kind: "NO_VARIATION" }),
    };
    if !route.variants[chosen].version.enabled {
        let disabled = || GatewayError::AiConfigDisabled(version_name(&route.variants[chosen]));
        match (route.when_disabled, route.off_variation) {
            (WhenDisabled::OffVariation, Some(off)) if route.variants[off].version.enabled => chosen = off,
            _ => return Err(disabled()),
        }
    }
    record.route(&route.variants[chosen].metrics);
    let reason = reason_header(&detail.reason);
    let scope = RenderScope { ldctx: &ldctx, vars: &vars, client: &client.template_value };
    let forwarded = upstream::forwarded_headers(headers);

    let fallback = route.fallback.filter(|&f| f != chosen && route.variants[f].version.enabled);
    // Keep a copy of the headers only when a retry may need them.
    let retry_headers = fallback.map(|_| forwarded.clone());
    // Judges and guardrails: sampled by the request id, before the answer exists.
    let mut hold = false;
    if !route.quality.is_empty() {
        let sampled = route.quality.sample(call.request_id.as_bytes());
        hold = !call.stream && route.quality.blocks(sampled);
        let response_format = body.get("response_format").map(|r| r.get());
        let (budget, limit) = (&snapshot.capture_budget, snapshot.capture_limit);
        if let Some(p) = Pending::start(sampled, call.endpoint, budget, limit, app_request, response_format) {
            record.quality(p);
        }
    }
    let call = &Call { hold, ..*call };
    let request = Attempt { body, scope: &scope, call, usage_edit };
    // Tokens are for feedback: without a metric to report, no answer needs one.
    let tokens = !snapshot.metric_defs.is_empty();
    let digest = if tokens {
        snapshot.feedback.signer.context_digest(context.kinds().iter().map(|k| (&*k.kind, &*k.key)))
    } else {
        [0; 8]
    };
    let token_of =
        |v: usize| tokens.then(|| token(snapshot, route, flag, &route.variants[v], random, digest)).flatten();
    let mut served_token = token_of(chosen);
    record.token_issued(served_token.as_ref());
    let result = request.send(&route.variants[chosen], forwarded, record).await?;
    let (resp, served, fell_back_from) = match (result, fallback.zip(retry_headers)) {
        (Ok(resp), _) => (resp, chosen, None),
        // The app's request does not fit the chosen provider: its error, not the provider's,
        // and never a reason to try another variation.
        // A guardrail's refusal is final too: another variation is not tried behind it.
        (Err(upstream::Failure::Error(e)), _) if matches!(e.outcome(), Outcome::ClientError | Outcome::Blocked) => {
            return Err(e)
        }
        (Err(failure), Some((f, retry_headers))) => {
            tracing::warn!(
                flag, from = %route.variants[chosen].header.to_str().unwrap_or("?"),
                to = %route.variants[f].header.to_str().unwrap_or("?"),
                failure = %failure.describe(), "provider failed before the first byte; trying the fallback variation"
            );
            record.fell_back(failure.outcome(), &route.variants[f].metrics);
            if let Some(counter) = &route.variants[chosen].fallbacks {
                counter.inc();
            }
            served_token = token_of(f);
            record.token_issued(served_token.as_ref());
            let retry = request.send(&route.variants[f], retry_headers, record).await?;
            (retry.or_else(upstream::Failure::into_result)?, f, Some(chosen))
        }
        (Err(failure), None) => (failure.into_result()?, chosen, None),
    };
    let mut resp = resp;
    let h = resp.headers_mut();
    h.insert(X_SLUICE_FLAG.clone(), route.header.clone());
    h.insert(X_SLUICE_VARIATION.clone(), route.variants[served].header.clone());
    h.insert(X_SLUICE_AI_CONFIG.clone(), route.variants[served].version.header.clone());
    h.insert(X_SLUICE_REASON.clone(), reason);
    if let Some(from) = fell_back_from {
        h.insert(X_SLUICE_FALLBACK_FROM.clone(), route.variants[from].header.clone());
    }
    if random {
        route.variants[served].metrics.note_random_context();
    }
    if let Some(token) = served_token {
        h.insert(X_SLUICE_TOKEN.clone(), token);
    }
    Ok(resp)
}

/// The signed token of a response `variant` served.
fn token(
    snapshot: &Snapshot,
    route: &FlagRoute,
    flag: &str,
    variant: &Variant,
    random_context: bool,
    context: [u8; 8],
) -> Option<HeaderValue> {
    let issued_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    let claims = Claims {
        issued_ms: u64::try_from(issued_ms).ok()?,
        nonce: fastrand::u64(..).to_be_bytes(),
        random_context,
        iteration: route.iteration,
        version: variant.version.version,
        context,
        flag: flag.to_string(),
        variation: variant.name.to_string(),
        ai_config: variant.version.key.to_string(),
    };
    HeaderValue::from_str(&snapshot.feedback.signer.sign(&claims)?).ok()
}

/// What every attempt of one request shares.
struct Attempt<'a> {
    body: &'a JsonBody<'a>,
    scope: &'a RenderScope<'a>,
    call: &'a Call<'a>,
    usage_edit: Option<&'a str>,
}

impl Attempt<'_> {
    /// Rewrite the body for `variant` and send it. The outer `Err` is a bad request (the
    /// app's messages); the inner one a provider failure before the first byte.
    async fn send(
        &self,
        variant: &Variant,
        headers: HeaderMap,
        record: &mut Recorder,
    ) -> Result<Result<Response<Body>, upstream::Failure>, GatewayError> {
        let version = &variant.version;
        let chat = self.call.endpoint == Endpoint::ChatCompletions;
        let edits = version.edits(chat, self.body.get("messages"), self.body.get("tools"), self.scope).map_err(
            |e| match e {
                EditError::BadMessages(_) => GatewayError::InvalidMessages,
                EditError::BadTools => GatewayError::InvalidField {
                    field: "tools",
                    expected: "an array of tools, each named with 1 to 64 of a-z, A-Z, 0-9, _ and -",
                },
                EditError::ToolClash(name) => GatewayError::Refused {
                    param: "tools",
                    message: format!("the tool `{name}` is this AI config's own: send tools of other names"),
                },
                EditError::Render { message, error } => GatewayError::TemplateTooLarge {
                    ai_config: version.key.to_string(),
                    version: version.version,
                    message,
                    error,
                },
            },
        )?;
        let responses = self.call.endpoint == Endpoint::Responses;
        let mut edits: Vec<(&str, &str)> = edits.iter().map(|(k, v)| (responses_name(responses, k), &**v)).collect();
        if let Some(options) = self.usage_edit {
            edits.push(("stream_options", options));
        }
        let rewritten = Bytes::from(self.body.rewrite(&edits));
        if let Some(q) = record.quality_mut() {
            q.arm(&variant.quality);
        }
        Ok(upstream::send(&version.provider, &version.model, self.call, headers, rewritten, record).await)
    }
}

/// A version's parameter as the Responses API names it (`max_output_tokens` for
/// `max_tokens` / `max_completion_tokens`); other endpoints keep the name.
fn responses_name(responses: bool, key: &str) -> &str {
    match key {
        "max_tokens" | "max_completion_tokens" if responses => "max_output_tokens",
        _ => key,
    }
}

fn version_name(variant: &Variant) -> String {
    format!("{}@{}", variant.version.key, variant.version.version)
}

/// The reason as compact LaunchDarkly JSON, e.g. `{"kind":"RULE_MATCH","ruleId":"staff","ruleIndex":0}`
/// (members in `Reason::to_json`'s order), written straight into the header's bytes.
fn reason_header(reason: &Reason<'_>) -> HeaderValue {
    use std::io::Write as _;
    let mut w = std::io::Cursor::new([0u8; 256]);
    let in_experiment =
        matches!(reason, Reason::RuleMatch { in_experiment: true, .. } | Reason::Fallthrough { in_experiment: true });
    let mut ok = w.write_all(if in_experiment { b"{\"inExperiment\":true," } else { b"{" }).is_ok();
    if let Reason::Error(kind) = reason {
        ok &= write!(w, "\"errorKind\":\"{}\",", kind.as_str()).is_ok();
    }
    ok &= write!(w, "\"kind\":\"{}\"", reason.kind()).is_ok();
    match *reason {
        Reason::RuleMatch { rule_index, rule_id, .. } => {
            ok &= w.write_all(b",\"ruleId\":").is_ok();
            ok &= serde_json::to_writer(&mut w, rule_id).is_ok();
            ok &= write!(w, ",\"ruleIndex\":{rule_index}").is_ok();
        }
        Reason::PrerequisiteFailed { prerequisite_key } => {
            ok &= w.write_all(b",\"prerequisiteKey\":").is_ok();
            ok &= serde_json::to_writer(&mut w, prerequisite_key).is_ok();
        }
        _ => {}
    }
    ok &= w.write_all(b"}").is_ok();
    let len = usize::try_from(w.position()).unwrap_or(0);
    let direct = ok.then(|| HeaderValue::from_bytes(&w.get_ref()[..len]).ok()).flatten();
    // Past the buffer (a very long rule id), or bytes a header cannot carry: the slow way.
    direct.unwrap_or_else(|| {
        HeaderValue::from_str(&reason.to_json().to_string()).unwrap_or_else(|_| HeaderValue::from_static(reason.kind()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::ErrorKind;

    #[test]
    fn the_reason_header_is_the_reasons_json() {
        let long = "r".repeat(300);
        for reason in [
            Reason::Off,
            Reason::TargetMatch,
            Reason::RuleMatch { rule_index: 3, rule_id: "staff", in_experiment: false },
            Reason::RuleMatch { rule_index: 0, rule_id: "q\"uo\\te", in_experiment: true },
            Reason::RuleMatch { rule_index: 12, rule_id: &long, in_experiment: false },
            Reason::Fallthrough { in_experiment: false },
            Reason::Fallthrough { in_experiment: true },
            Reason::PrerequisiteFailed { prerequisite_key: "other-flag" },
            Reason::Error(ErrorKind::MalformedFlag),
        ] {
            let header = reason_header(&reason);
            assert_eq!(header.to_str().unwrap(), reason.to_json().to_string(), "{reason:?}");
        }
    }
}
