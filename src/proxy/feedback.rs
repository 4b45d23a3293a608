//! `POST /v1/feedback`: an app's signal about one answer, tied to the arm that served it
//! by the answer's response token (`x-sluice-token`, or `x-request-id` when sluice made the
//! request id up).
//!
//! Two ways in: a gateway key (a server), or — from a web page — the token alone as the
//! credential, from an origin listed in `feedback.browser_origins` (CORS; the preflight is
//! answered here too). Every check runs before anything is counted: the body, the token's
//! signature (401), the metric and the value's type (400), the token's age and the
//! experiment's iteration (410), the flag and variation still served (410), and last the
//! de-duplication of (token, metric) (409).

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::GatewayError;
use crate::config::signals::{MetricType, MAX_ABS_VALUE};
use crate::snapshot::{Snapshot, VariantSignal};
use crate::token::{Claims, Dedup, DedupError, TokenError};
use crate::wire::body::{self, Body};

/// Largest feedback body.
pub const MAX_BODY: u64 = 16 << 10;
/// Longest comment (comments are counted, never stored).
pub const MAX_COMMENT: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody<'a> {
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    /// The request id, when sluice issued it (it is then the token).
    #[serde(default, borrow)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    value: serde_json::Value,
    #[serde(default, borrow)]
    comment: Option<Cow<'a, str>>,
}

/// The allowed `Origin` of a browser request, if it sent one.
fn origin<'s>(snapshot: &'s Snapshot, headers: &HeaderMap) -> Result<Option<&'s HeaderValue>, GatewayError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(None) };
    match snapshot.feedback.origins.iter().find(|o| *o == origin) {
        Some(o) => Ok(Some(o)),
        None => {
            Err(GatewayError::OriginNotAllowed(String::from_utf8_lossy(origin.as_bytes()).chars().take(200).collect()))
        }
    }
}

/// CORS headers for an allowed origin.
fn allow(resp: &mut Response<Body>, origin: &HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// `OPTIONS /v1/feedback`: the browser's preflight.
pub fn preflight(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let origin = origin(snapshot, headers)?.ok_or(GatewayError::NoOrigin)?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    allow(&mut resp, origin);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Ok(resp)
}

/// `POST /v1/feedback`.
pub async fn post(snapshot: &Snapshot, req: Request<Incoming>) -> Response<Body> {
    // A disallowed origin is refused, key or not; an allowed one reads every answer, errors
    // included (so its page can say why).
    let (result, allowed) = match origin(snapshot, req.headers()) {
        Err(e) => (Err(e), None),
        Ok(o) => {
            let o = o.cloned();
            (take(snapshot, req, o.is_some()).await, o)
        }
    };
    let mut resp = match result {
        Ok(answer) => body::json(StatusCode::ACCEPTED, answer),
        Err(e) => e.into_response(),
    };
    if let Some(origin) = &allowed {
        allow(&mut resp, origin);
    }
    snapshot.feedback.answered(resp.status().as_u16());
    resp
}

/// Who may send, the body, then [`accept`]. A browser of an allowed origin may send no
/// key: its credential is the token. Anyone else needs a key.
async fn take(snapshot: &Snapshot, req: Request<Incoming>, browser: bool) -> Result<String, GatewayError> {
    let (parts, incoming) = req.into_parts();
    if !browser || parts.headers.contains_key(header::AUTHORIZATION) {
        super::authenticate(snapshot, &parts.headers)?;
    }
    let bytes = super::read_body_within(MAX_BODY, snapshot, &parts.headers, incoming).await?;
    let now = now_ms();
    let taken = check(snapshot, &bytes, now)?;
    let dedup = &snapshot.feedback.dedup;
    let fresh = fleet_claim(dedup, &taken.claims, &[taken.metric], taken.expires_ms, now).await?;
    if !fresh[0] {
        return Err(GatewayError::DuplicateFeedback(taken.metric.to_string()));
    }
    Ok(taken.count())
}

/// With a fleet store, claim for the whole fleet the pairs (token, each of `whats`) this
/// instance just took: per pair, whether it is new to the fleet (without one: all are). A
/// pair the fleet had already stays taken here. When the fleet cannot be asked, the pairs
/// are given back here and the signal is refused (503 `store_unavailable`): it never
/// counts twice, and sent again it is not refused as a duplicate of one that never counted.
pub(super) async fn fleet_claim(
    dedup: &Dedup,
    claims: &Claims,
    whats: &[&str],
    expires_ms: u64,
    now_ms: u64,
) -> Result<Vec<bool>, GatewayError> {
    // The claims go one at a time over one connection: more blocking threads would only
    // wait on it, so at most a few are asked for and the other signals wait here, asleep.
    static CLAIMING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
    /// Gives the pairs back here unless the fleet answered — also when the request is
    /// dropped while it waits (its client went away): sent again, the signal is then
    /// decided by the fleet, not refused here as a duplicate of one that never counted.
    struct GiveBack<'a> {
        dedup: &'a Dedup,
        claims: &'a Claims,
        whats: &'a [&'a str],
        expires_ms: u64,
        armed: bool,
    }
    impl Drop for GiveBack<'_> {
        fn drop(&mut self) {
            if self.armed {
                for what in self.whats {
                    self.dedup.forget(self.claims, what, self.expires_ms);
                }
            }
        }
    }
    let Some(shared) = dedup.shared() else { return Ok(vec![true; whats.len()]) };
    let mut give_back = GiveBack { dedup, claims, whats, expires_ms, armed: true };
    let pairs: Vec<String> = whats.iter().map(|w| Dedup::pair_name(claims, w)).collect();
    let ttl_ms = expires_ms.saturating_sub(now_ms);
    let permit = CLAIMING.acquire().await.map_err(|_| GatewayError::Internal)?;
    let claimed = tokio::task::spawn_blocking(move || shared.claim(&pairs, ttl_ms)).await;
    drop(permit);
    let why = match claimed {
        Ok(Ok(fresh)) if fresh.len() == whats.len() => {
            give_back.armed = false;
            return Ok(fresh);
        }
        Ok(Ok(_)) => "a short answer".to_string(),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    drop(give_back);
    tracing::warn!(error = %why, "a signal was not counted: the fleet store cannot say whether another instance counted it");
    Err(GatewayError::FleetUnavailable)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Check one feedback body at `now_ms` and count it, as far as this instance can tell
/// (the fleet is not asked: see [`fleet_claim`]); the answer's JSON.
pub fn accept(snapshot: &Snapshot, bytes: &[u8], now_ms: u64) -> Result<String, GatewayError> {
    check(snapshot, bytes, now_ms).map(Taken::count)
}

/// A feedback signal checked and taken here, not counted yet.
struct Taken<'s> {
    claims: Claims,
    metric: &'s str,
    expires_ms: u64,
    signal: &'s VariantSignal,
    value: f64,
}

impl Taken<'_> {
    /// Count it; the answer's JSON.
    fn count(self) -> String {
        self.signal.record(self.value);
        serde_json::json!({
            "status": "accepted",
            "flag": self.claims.flag,
            "variation": self.claims.variation,
            "metric": self.metric,
        })
        .to_string()
    }
}

/// Check one feedback body at `now_ms` and take its pair in this instance's set.
fn check<'s>(snapshot: &'s Snapshot, bytes: &[u8], now_ms: u64) -> Result<Taken<'s>, GatewayError> {
    let invalid = |param, message: String| GatewayError::InvalidFeedback { param, message };
    let body: FeedbackBody<'_> =
        serde_json::from_slice(bytes).map_err(|e| invalid("body", format!("the feedback body is not valid: {e}")))?;
    let token = match (&body.token, &body.request_id) {
        (Some(t), None) | (None, Some(t)) => t,
        (Some(_), Some(_)) => return Err(invalid("token", "send `token` or `request_id`, not both".into())),
        (None, None) => return Err(invalid("token", "send the response's `token` (or its `request_id`)".into())),
    };
    if body.comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(invalid("comment", format!("a comment is at most {MAX_COMMENT} bytes")));
    }
    let claims = snapshot.feedback.signer.verify(token).map_err(|e| match e {
        TokenError::Malformed => GatewayError::InvalidToken(format!("{e}: it is the `x-sluice-token` response header")),
        TokenError::BadSignature => GatewayError::InvalidToken(e.to_string()),
    })?;
    let metric = body.metric.as_ref();
    let (index, value) = metric_value(snapshot, metric, &body.value)?;
    let expires_ms = claims.issued_ms.saturating_add(snapshot.feedback.max_age_ms);
    if now_ms > expires_ms {
        return Err(GatewayError::TokenExpired("the response is older than `feedback.max_age`".into()));
    }
    let gone = |what: String| GatewayError::TokenExpired(what);
    let route = snapshot
        .flag_route(&claims.flag)
        .ok_or_else(|| gone(format!("the flag `{}` no longer routes requests", claims.flag)))?;
    // An answer counts in the iteration that served it, and in no other: one from before
    // the experiment ran (iteration 0) does not count in it either.
    if claims.iteration != route.iteration {
        return Err(gone(match claims.iteration {
            0 => "the response was served before the flag's experiment began".to_string(),
            n => format!("the response belongs to iteration {n} of the flag's experiment, which has ended"),
        }));
    }
    let variant =
        route.variants.iter().find(|v| *v.name == claims.variation).ok_or_else(|| {
            gone(format!("the flag `{}` has no variation `{}` any more", claims.flag, claims.variation))
        })?;
    let signal = variant.signals.get(index).ok_or(GatewayError::Internal)?;
    take_here(snapshot, &claims, metric, expires_ms, now_ms)?;
    let metric = snapshot.metric_defs[index].0.as_ref();
    Ok(Taken { claims, metric, expires_ms, signal, value })
}

/// Take the pair (token, `what`) in this instance's set: a duplicate is a 409, a full set
/// a 503.
pub(super) fn take_here(
    snapshot: &Snapshot,
    claims: &Claims,
    what: &str,
    expires_ms: u64,
    now_ms: u64,
) -> Result<(), GatewayError> {
    snapshot.feedback.dedup.take(claims, what, expires_ms, now_ms).map_err(|e| match e {
        DedupError::Duplicate => GatewayError::DuplicateFeedback(what.to_string()),
        DedupError::Full => GatewayError::FeedbackFull,
    })
}

/// Metric `metric` of the config's `metrics:` and `value` checked against its type and
/// range: its position in [`Snapshot::metric_defs`] and the value as a number.
pub(super) fn metric_value(
    snapshot: &Snapshot,
    metric: &str,
    value: &serde_json::Value,
) -> Result<(usize, f64), GatewayError> {
    let invalid = |param, message: String| GatewayError::InvalidFeedback { param, message };
    let position = snapshot.metric_defs.iter().position(|(k, _)| &**k == metric);
    let (index, def) = match position {
        Some(i) => (i, &snapshot.metric_defs[i].1),
        None => return Err(GatewayError::UnknownMetric(metric.chars().take(100).collect())),
    };
    let value = match (def.kind, value) {
        (MetricType::Boolean, serde_json::Value::Bool(b)) => f64::from(u8::from(*b)),
        (MetricType::Numeric, serde_json::Value::Number(n)) => {
            let x = n
                .as_f64()
                .filter(|x| x.is_finite() && x.abs() <= MAX_ABS_VALUE)
                .ok_or_else(|| invalid("value", format!("`{metric}` takes numbers from -1e12 to 1e12")))?;
            if def.min.is_some_and(|m| x < m) || def.max.is_some_and(|m| x > m) {
                let range = format!(
                    "{} to {}",
                    def.min.map_or("-∞".into(), |m| m.to_string()),
                    def.max.map_or("∞".into(), |m| m.to_string())
                );
                return Err(invalid("value", format!("`{metric}` takes values from {range}")));
            }
            x
        }
        (kind, _) => {
            let expected = match kind {
                MetricType::Boolean => "true or false",
                MetricType::Numeric => "a number",
            };
            return Err(invalid("value", format!("`{metric}` is a {} metric: its value is {expected}", kind.as_str())));
        }
    };
    Ok((index, value))
}
