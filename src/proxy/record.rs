//! One request's record: which route served it, when its first token came, its usage and
//! how it ended. It is written to the metrics (and the access log) exactly once, whatever
//! happens: a normal end, an error, a broken stream — or a client that goes away, which
//! drops the record unfinished and counts as `cancelled`.
//!
//! The record starts in [`super::handle`]; when a response body comes from a provider it
//! moves into that body ([`Recorder::hand_off`]) and finishes when the body does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};

use super::error::Outcome;
use crate::metrics::{Finished, RouteMetrics, Usage};
use crate::quality::Pending;

/// What the access log line needs beyond the metrics.
#[derive(Debug)]
pub struct AccessLog {
    pub request_id: HeaderValue,
    /// sluice made the request id up (the app sent none): a response token replaces it.
    pub generated_id: bool,
    pub method: Method,
    pub path: String,
    pub client: Option<Arc<str>>,
    /// The request's messages, only when content logging is on.
    pub content: Option<String>,
}

#[derive(Debug)]
pub struct Recorder {
    route: Arc<RouteMetrics>,
    start: Instant,
    /// Time spent waiting for providers before the response head went back.
    upstream: Duration,
    /// A provider was called.
    called: bool,
    /// When sluice handed the response head back (the end of its own work).
    head: Option<Instant>,
    ttft: Option<Duration>,
    usage: Option<Usage>,
    status: StatusCode,
    /// The outcome forced by an in-band stream error or a failed first attempt.
    failed: Option<Outcome>,
    /// When a fallback served the request: its route, which gets the tokens.
    served_by: Option<Arc<RouteMetrics>>,
    log: Option<Box<AccessLog>>,
    /// A sampled request's judges and guardrails, finished with the record.
    quality: Option<Box<Pending>>,
    done: bool,
}

impl Recorder {
    pub fn new(route: Arc<RouteMetrics>, start: Instant, log: Option<Box<AccessLog>>) -> Self {
        Recorder {
            route,
            start,
            upstream: Duration::ZERO,
            called: false,
            head: None,
            ttft: None,
            usage: None,
            status: StatusCode::OK,
            failed: None,
            served_by: None,
            log,
            quality: None,
            done: false,
        }
    }

    /// Not a request worth counting (a health check).
    pub fn skip(&mut self) {
        self.done = true;
    }

    /// The request resolved to `route`.
    pub fn route(&mut self, route: &Arc<RouteMetrics>) {
        self.route = Arc::clone(route);
    }

    /// The response will carry `token`: when sluice made the request id up, the token is
    /// the request id (what the OpenAI SDKs expose as `_request_id`), in the log too.
    pub fn token_issued(&mut self, token: Option<&HeaderValue>) {
        if let (Some(log), Some(token)) = (self.log.as_deref_mut(), token) {
            if log.generated_id {
                log.request_id = token.clone();
            }
        }
    }

    /// The request is sampled for judges or guardrails.
    pub fn quality(&mut self, pending: Pending) {
        self.quality = Some(Box::new(pending));
    }

    pub fn quality_mut(&mut self) -> Option<&mut Pending> {
        self.quality.as_deref_mut()
    }

    pub fn log_mut(&mut self) -> Option<&mut AccessLog> {
        self.log.as_deref_mut()
    }

    /// Add time spent waiting for a provider.
    pub fn waited(&mut self, since: Instant) {
        self.upstream += since.elapsed();
        self.called = true;
    }

    /// The `server-timing` header of the response head going back now: sluice's own time
    /// so far (`sluice`) and, when a provider was called, the time spent waiting for it
    /// (`upstream`: to its response head, or to a stream's first event), in milliseconds
    /// to the microsecond — e.g. `sluice;dur=0.031, upstream;dur=812.402`.
    pub fn server_timing(&self) -> HeaderValue {
        use std::io::Write as _;
        let own = self.start.elapsed().saturating_sub(self.upstream);
        let ms = |d: Duration| {
            let us = d.as_micros();
            (us / 1000, us % 1000)
        };
        let mut buf = std::io::Cursor::new([0u8; 96]);
        let (a, b) = ms(own);
        let mut ok = write!(buf, "sluice;dur={a}.{b:03}").is_ok();
        if self.called {
            let (a, b) = ms(self.upstream);
            ok &= write!(buf, ", upstream;dur={a}.{b:03}").is_ok();
        }
        let len = usize::try_from(buf.position()).unwrap_or(0);
        match ok.then(|| HeaderValue::from_bytes(&buf.get_ref()[..len])) {
            Some(Ok(v)) => v,
            _ => HeaderValue::from_static("sluice"),
        }
    }

    /// The chosen variation failed before its first byte with `outcome` and the fallback
    /// variation (`route`) serves the request instead. The request stays counted under the
    /// chosen variation, with that outcome; the tokens go to the one that served them.
    pub fn fell_back(&mut self, outcome: Outcome, route: &Arc<RouteMetrics>) {
        self.failed = Some(outcome);
        self.served_by = Some(Arc::clone(route));
    }

    pub fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.start.elapsed());
        }
    }

    pub fn usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// The stream reported an error in-band.
    pub fn stream_error(&mut self) {
        self.failed.get_or_insert(Outcome::UpstreamError);
    }

    /// Move the record into a response body that will finish it; this one is disarmed.
    pub fn hand_off(&mut self, status: StatusCode) -> Recorder {
        let now = Instant::now();
        self.done = true;
        Recorder {
            route: Arc::clone(&self.route),
            start: self.start,
            upstream: self.upstream,
            called: self.called,
            head: Some(now),
            ttft: self.ttft,
            usage: self.usage,
            status,
            failed: self.failed,
            served_by: self.served_by.take(),
            log: self.log.take(),
            quality: self.quality.take(),
            done: false,
        }
    }

    /// The outcome of a response by its status: the provider's 5xx and 429 are upstream
    /// errors, other 4xx the client's.
    pub fn outcome_of(status: StatusCode) -> Outcome {
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::UpstreamError
        } else if status.is_client_error() {
            Outcome::ClientError
        } else {
            Outcome::Ok
        }
    }

    /// Record the request as ended with `outcome` (unless a failure already decided it).
    pub fn finish(&mut self, outcome: Outcome, status: StatusCode) {
        if self.done {
            return;
        }
        self.done = true;
        self.status = status;
        let outcome = match (self.failed, outcome) {
            // A client that leaves is a cancellation, whatever the provider did before.
            (_, Outcome::Cancelled) => Outcome::Cancelled,
            (Some(failed), _) => failed,
            (None, o) => o,
        };
        if let Some(q) = self.quality.take() {
            q.finish(outcome == Outcome::Ok);
        }
        let duration = self.start.elapsed();
        let head = self.head.map_or(duration, |h| h.duration_since(self.start));
        let finished = Finished {
            outcome,
            duration,
            ttft: self.ttft,
            overhead: head.saturating_sub(self.upstream),
            usage: self.usage,
            cost: None,
        };
        match &self.served_by {
            None => self.route.record(&finished),
            Some(served_by) => {
                self.route.record(&Finished { ttft: None, usage: None, ..finished });
                if let Some(u) = finished.usage {
                    served_by.record_tokens(u);
                }
            }
        }
        if let Some(log) = &self.log {
            self.write_log(log, &finished);
        }
    }

    fn write_log(&self, log: &AccessLog, f: &Finished) {
        let labels = self.route.labels();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            request_id = log.request_id.to_str().unwrap_or("-"),
            method = %log.method,
            path = %log.path,
            status = self.status.as_u16(),
            outcome = f.outcome.as_str(),
            client = log.client.as_deref().unwrap_or("-"),
            flag = %labels.flag,
            variation = %labels.variation,
            ai_config = %labels.ai_config,
            version = %labels.version,
            provider = %labels.provider,
            model = %labels.model,
            duration_ms = ms(f.duration),
            ttft_ms = f.ttft.map(ms),
            overhead_us = u64::try_from(f.overhead.as_micros()).unwrap_or(u64::MAX),
            upstream_us = self.called.then(|| u64::try_from(self.upstream.as_micros()).unwrap_or(u64::MAX)),
            input_tokens = f.usage.map(|u| u.input),
            output_tokens = f.usage.map(|u| u.output),
            content = log.content.as_deref(),
            "request"
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let status = self.status;
        self.finish(Outcome::Cancelled, status);
    }
}
