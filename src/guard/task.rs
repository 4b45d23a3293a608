//! The guard task: every second it looks at each guarded flag whose check interval has
//! passed, compares treatment with control over the current step's window, and acts —
//! through the one write path, with `If-Match`, so an operator's concurrent change is
//! never overwritten — on a trip (rollback or pause), on the circuit breaker, and on ramp
//! steps. It never touches the request path: it only reads the guard statistics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use super::stats::{self, Decision, Direction, Estimate, Margin, Test};
use crate::config::guard::{DirectionConfig, GuardConfig, GuardState, MetricKind, OnTrip};
use crate::metrics::{GuardSnapshot, Metrics};
use crate::state::{Change, ChangeError, Request, State};

/// One metric's latest check.
#[derive(Debug, Clone, Serialize)]
pub struct MetricStatus {
    pub metric: &'static str,
    pub control_samples: u64,
    pub treatment_samples: u64,
    pub control: f64,
    pub treatment: f64,
    pub estimate: f64,
    pub margin: f64,
    pub interval: [f64; 2],
    pub lambda: f64,
    pub decision: &'static str,
}

/// A guarded flag's latest check.
#[derive(Debug, Clone, Serialize)]
pub struct FlagStatus {
    pub flag: String,
    pub state: &'static str,
    pub control: String,
    pub treatment: String,
    /// The ramp step and the treatment's share there, if there is a ramp.
    pub step: Option<usize>,
    pub percent: Option<f64>,
    pub checked_at: Option<String>,
    pub metrics: Vec<MetricStatus>,
}

/// The statistics window of one flag's current step.
struct Window {
    /// What the window belongs to: a change of step, arms or state starts a new one.
    identity: String,
    control: GuardSnapshot,
    treatment: GuardSnapshot,
    /// The latency bucket of the control's p95, frozen when first known in the step.
    tail_bucket: Option<usize>,
    last_check: Option<Instant>,
}

/// The guards of one gateway.
pub struct Guards {
    state: Arc<State>,
    windows: Mutex<HashMap<String, Window>>,
    status: Mutex<BTreeMap<String, FlagStatus>>,
    webhooks: tokio::runtime::Handle,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn direction(d: DirectionConfig) -> Direction {
    match d {
        DirectionConfig::Increase => Direction::Increase,
        DirectionConfig::Decrease => Direction::Decrease,
    }
}

/// What a trip or a step tells the audit log and the webhook.
#[derive(Debug, Clone, Serialize)]
struct Event {
    event: &'static str,
    flag: String,
    metric: Option<&'static str>,
    estimate: Option<f64>,
    interval: Option<[f64; 2]>,
    lambda: Option<f64>,
    control_samples: u64,
    treatment_samples: u64,
    action: String,
}

impl Guards {
    pub fn new(state: Arc<State>, webhooks: tokio::runtime::Handle) -> Guards {
        Guards { state, windows: Mutex::new(HashMap::new()), status: Mutex::new(BTreeMap::new()), webhooks }
    }

    /// The latest check of every guarded flag.
    pub fn status(&self) -> Vec<FlagStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Run the checks forever, once a second (each on the blocking pool: it may write).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let guards = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || guards.check_all(Instant::now())).await;
        }
    }

    /// Check every guarded flag that is due.
    pub fn check_all(&self, now: Instant) {
        let current = self.state.current();
        let metrics = Arc::clone(&self.state.gateway().metrics);
        let mut seen = Vec::new();
        for (flag, doc) in &current.docs.flags {
            let Some(guard) = doc.get("guard").and_then(|g| serde_json::from_value::<GuardConfig>(g.clone()).ok())
            else {
                continue;
            };
            seen.push(flag.clone());
            let changed_at = current.flag_revisions.get(flag).copied().unwrap_or(0);
            self.check(flag, doc, &guard, (current.revision, changed_at), &metrics, now);
        }
        self.windows.lock().unwrap_or_else(PoisonError::into_inner).retain(|f, _| seen.contains(f));
        self.status.lock().unwrap_or_else(PoisonError::into_inner).retain(|f, _| seen.contains(f));
    }

    /// `revisions`: the current revision (for `If-Match`) and the one that last changed the
    /// flag (any change of the flag — a step, a re-arm, a new split — starts a new window).
    fn check(
        &self,
        flag: &str,
        doc: &Value,
        guard: &GuardConfig,
        revisions: (u64, u64),
        metrics: &Metrics,
        now: Instant,
    ) {
        let (revision, changed_at) = revisions;
        let control_stats = metrics.guard_stats(flag, &guard.control).snapshot();
        let treatment_stats = metrics.guard_stats(flag, &guard.treatment).snapshot();
        let identity = format!(
            "{changed_at}|{}|{}|{}|{}|{:?}|{:?}",
            guard.control,
            guard.treatment,
            guard.step,
            guard.step_started.as_deref().unwrap_or(""),
            guard.state,
            guard.ramp.get(guard.step).map(|s| s.percent)
        );
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.entry(flag.to_string()).or_insert_with(|| Window {
            identity: String::new(),
            control: control_stats.clone(),
            treatment: treatment_stats.clone(),
            tail_bucket: None,
            last_check: None,
        });
        if window.identity != identity {
            // A new step (or new arms): the statistics start again.
            *window = Window {
                identity,
                control: control_stats.clone(),
                treatment: treatment_stats.clone(),
                tail_bucket: None,
                last_check: None,
            };
        }
        if window.last_check.is_some_and(|t| now.duration_since(t) < guard.check_interval.0) {
            return;
        }
        window.last_check = Some(now);
        let c = control_stats.since(&window.control);
        let t = treatment_stats.since(&window.treatment);
        if window.tail_bucket.is_none() && c.latency.n >= guard.min_samples {
            window.tail_bucket = c.latency_quantile_bucket(0.95).map(|b| b + 1);
        }
        let tail_bucket = window.tail_bucket;
        drop(windows);

        let alpha = guard.alpha / guard.metrics.len().max(1) as f64;
        let mut statuses = Vec::new();
        let mut tripped: Option<(MetricKind, Estimate)> = None;
        for m in &guard.metrics {
            let margin = m.margin.as_ref().and_then(|x| x.parse().ok()).unwrap_or(Margin::Absolute(0.0));
            let test = Test { alpha, margin, tau: m.tau, direction: direction(m.direction) };
            let floor = |a: u64, b: u64| a >= guard.min_samples && b >= guard.min_samples;
            let (e, enough) = match m.metric {
                MetricKind::ErrorRate => {
                    let (nc, nt) = (c.errors + c.latency.n, t.errors + t.latency.n);
                    let e = stats::proportions((c.errors, nc), (t.errors, nt), &test);
                    (e, floor(nc, nt) && c.errors + t.errors >= guard.min_events)
                }
                MetricKind::Latency => {
                    (stats::log_means(&c.latency, &t.latency, &test), floor(c.latency.n, t.latency.n))
                }
                MetricKind::Ttft => (stats::log_means(&c.ttft, &t.ttft, &test), floor(c.ttft.n, t.ttft.n)),
                MetricKind::LatencyTail => {
                    let above = |s: &GuardSnapshot, b: usize| s.latency_buckets.iter().skip(b).sum::<u64>();
                    match tail_bucket {
                        Some(b) => {
                            let (ac, at) = (above(&c, b), above(&t, b));
                            let e = stats::proportions((ac, c.latency.n), (at, t.latency.n), &test);
                            (e, floor(c.latency.n, t.latency.n) && ac + at >= guard.min_events)
                        }
                        None => (stats::proportions((0, 0), (0, 0), &test), false),
                    }
                }
                MetricKind::OutputTokens => {
                    let moments = |s: &GuardSnapshot| (s.usage_n, s.output_tokens as f64, s.output_tokens_sumsq as f64);
                    (stats::means(moments(&c), moments(&t), &test), floor(c.usage_n, t.usage_n))
                }
            };
            let decision = stats::decide(&e, alpha, enough);
            let samples = |s: &GuardSnapshot| s.latency.n + s.errors;
            statuses.push(MetricStatus {
                metric: m.metric.as_str(),
                control_samples: samples(&c),
                treatment_samples: samples(&t),
                control: e.control,
                treatment: e.treatment,
                estimate: e.delta,
                margin: e.margin,
                interval: [e.low, e.high],
                lambda: e.lambda,
                decision: match decision {
                    Decision::Insufficient => "insufficient",
                    Decision::Pass => "pass",
                    Decision::Trip => "trip",
                },
            });
            metrics.set_guard_state(flag, m.metric.as_str(), guard_value(guard.state, decision));
            metrics.guard_trips_seen(flag, m.metric.as_str());
            if decision == Decision::Trip && tripped.is_none() {
                tripped = Some((m.metric, e));
            }
        }
        // The circuit breaker does not wait for the floor.
        let t_done = t.errors + t.latency.n;
        let breaker = t_done >= guard.circuit_breaker.min_requests
            && t_done > 0
            && t.errors as f64 / t_done as f64 > guard.circuit_breaker.error_rate;
        let status = FlagStatus {
            flag: flag.to_string(),
            state: guard.state.as_str(),
            control: guard.control.clone(),
            treatment: guard.treatment.clone(),
            step: (!guard.ramp.is_empty()).then_some(guard.step),
            percent: guard.ramp.get(guard.step).map(|s| s.percent),
            checked_at: Some(now_rfc3339()),
            metrics: statuses,
        };
        self.status.lock().unwrap_or_else(PoisonError::into_inner).insert(flag.to_string(), status);
        if guard.state != GuardState::Armed {
            return;
        }
        let samples = (c.latency.n + c.errors, t_done);
        if breaker {
            let event = Event {
                event: "trip",
                flag: flag.to_string(),
                metric: Some("circuit_breaker"),
                estimate: Some(t.errors as f64 / t_done as f64),
                interval: None,
                lambda: None,
                control_samples: samples.0,
                treatment_samples: samples.1,
                action: String::new(),
            };
            self.trip(flag, doc, guard, revision, event, metrics);
        } else if let Some((metric, e)) = tripped {
            let event = Event {
                event: "trip",
                flag: flag.to_string(),
                metric: Some(metric.as_str()),
                estimate: Some(e.delta),
                interval: Some([e.low, e.high]),
                lambda: Some(e.lambda),
                control_samples: samples.0,
                treatment_samples: samples.1,
                action: String::new(),
            };
            self.trip(flag, doc, guard, revision, event, metrics);
        } else {
            self.ramp(flag, doc, guard, revision, samples, now);
        }
    }

    /// Roll the treatment back (or pause), through the write path.
    fn trip(&self, flag: &str, doc: &Value, guard: &GuardConfig, revision: u64, mut event: Event, metrics: &Metrics) {
        let mut new = doc.clone();
        let metric = event.metric.unwrap_or("?");
        match guard.on_trip {
            OnTrip::Rollback => {
                move_traffic(&mut new, &guard.treatment, &guard.control);
                new["guard"]["state"] = json!("rolled_back");
                event.action = format!("rolled back: {}'s traffic goes to {}", guard.treatment, guard.control);
            }
            OnTrip::Pause => {
                new["guard"]["state"] = json!("paused");
                event.action = "paused the ramp".into();
            }
        }
        let reason = format!(
            "guard: {metric} of {} regressed against {}: estimate {}, interval {}, Λ {}, samples control {} / treatment {}; {}",
            guard.treatment,
            guard.control,
            event.estimate.map_or("-".into(), |v| format!("{v:.5}")),
            event.interval.map_or("-".into(), |[a, b]| format!("[{a:.5}, {b:.5}]")),
            event.lambda.map_or("-".into(), |v| format!("{v:.3e}")),
            event.control_samples,
            event.treatment_samples,
            event.action
        );
        if self.write(flag, new, revision, reason) {
            metrics.guard_tripped(flag, metric);
            let value = match guard.on_trip {
                OnTrip::Rollback => guard_value(GuardState::RolledBack, Decision::Trip),
                OnTrip::Pause => guard_value(GuardState::Paused, Decision::Trip),
            };
            for m in &guard.metrics {
                metrics.set_guard_state(flag, m.metric.as_str(), value);
            }
            let state = match guard.on_trip {
                OnTrip::Rollback => GuardState::RolledBack,
                OnTrip::Pause => GuardState::Paused,
            };
            if let Some(s) = self.status.lock().unwrap_or_else(PoisonError::into_inner).get_mut(flag) {
                s.state = state.as_str();
            }
            tracing::warn!(flag, metric, action = %event.action, "guard tripped");
            self.notify(guard, event);
        }
    }

    /// Start the ramp, or move to its next step when the step is done.
    fn ramp(&self, flag: &str, doc: &Value, guard: &GuardConfig, revision: u64, samples: (u64, u64), _now: Instant) {
        let Some(step) = guard.ramp.get(guard.step) else { return };
        let started = guard.step_started.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let (next, percent) = match started {
            // The ramp has not started: apply its first (or current) step.
            None => (guard.step, step.percent),
            Some(at) => {
                let elapsed = SystemTime::now().duration_since(at).unwrap_or_default();
                let done =
                    elapsed >= step.min_duration.0 && samples.0 >= step.min_samples && samples.1 >= step.min_samples;
                match guard.ramp.get(guard.step + 1) {
                    Some(next) if done => (guard.step + 1, next.percent),
                    _ => return,
                }
            }
        };
        let mut new = doc.clone();
        set_share(&mut new, &guard.control, &guard.treatment, percent);
        new["guard"]["step"] = json!(next);
        new["guard"]["step_started"] = json!(now_rfc3339());
        let reason = format!("guard: ramp step {} — {} gets {percent}% of the fallthrough", next + 1, guard.treatment);
        if self.write(flag, new, revision, reason) {
            let event = Event {
                event: "ramp",
                flag: flag.to_string(),
                metric: None,
                estimate: None,
                interval: None,
                lambda: None,
                control_samples: samples.0,
                treatment_samples: samples.1,
                action: format!("step {} at {percent}%", next + 1),
            };
            self.notify(guard, event);
        }
    }

    /// Apply `doc` as the flag's new document, against `revision`.
    fn write(&self, flag: &str, doc: Value, revision: u64, reason: String) -> bool {
        let request = Request { actor: "guard".into(), reason, if_match: Some(revision) };
        match self.state.apply(Change::ReplaceFlag { flag: flag.to_string(), value: doc }, &request) {
            Ok(_) => true,
            // Someone changed the configuration meanwhile: look again at the next tick.
            Err(ChangeError::Stale { .. }) => false,
            Err(e) => {
                tracing::error!(flag, error = %e, "the guard could not apply its change");
                false
            }
        }
    }

    /// POST the event to the guard's webhook, off the data plane, with retries.
    fn notify(&self, guard: &GuardConfig, event: Event) {
        let Some(url) = guard.webhook.clone() else { return };
        self.webhooks.spawn(async move {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=4 {
                match post(&url, body.clone()).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(url = %url, attempt, error = %e, "guard webhook failed"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        });
    }
}

async fn post(url: &str, body: Vec<u8>) -> Result<(), String> {
    use http_body_util::Full;
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

/// The gauge value of a guard metric: 0 pass, 1 insufficient data, 2 tripped or paused,
/// 3 rolled back.
fn guard_value(state: GuardState, decision: Decision) -> i64 {
    match (state, decision) {
        (GuardState::RolledBack, _) => 3,
        (GuardState::Paused, _) | (_, Decision::Trip) => 2,
        (_, Decision::Insufficient) => 1,
        (_, Decision::Pass) => 0,
    }
}

/// Send everything `from` gets to `to`: fixed variations and rollout weights, in rules and
/// in the fallthrough.
fn move_traffic(doc: &mut Value, from: &str, to: &str) {
    let fix = |serve: &mut Value| {
        if serve.get("variation").and_then(Value::as_str) == Some(from) {
            serve["variation"] = json!(to);
        }
        if let Some(ws) = serve.pointer_mut("/rollout/variations").and_then(Value::as_array_mut) {
            let moved: f64 = ws
                .iter_mut()
                .filter(|w| w.get("variation").and_then(Value::as_str) == Some(from))
                .map(|w| {
                    let p = w["percent"].as_f64().unwrap_or(0.0);
                    w["percent"] = json!(0.0);
                    p
                })
                .sum();
            match ws.iter_mut().find(|w| w.get("variation").and_then(Value::as_str) == Some(to)) {
                Some(w) => w["percent"] = json!(w["percent"].as_f64().unwrap_or(0.0) + moved),
                None if moved > 0.0 => ws.push(json!({"variation": to, "percent": moved})),
                None => {}
            }
        }
    };
    if let Some(ft) = doc.get_mut("fallthrough") {
        fix(ft);
    }
    if let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) {
        rules.iter_mut().for_each(fix);
    }
}

/// The fallthrough becomes `treatment` at `percent`, `control` the rest (keeping the
/// rollout's other settings).
fn set_share(doc: &mut Value, control: &str, treatment: &str, percent: f64) {
    let mut rollout = doc.pointer("/fallthrough/rollout").and_then(Value::as_object).cloned().unwrap_or_default();
    // Treatment first: raising its share keeps every context it already had.
    rollout.insert(
        "variations".into(),
        json!([{"variation": treatment, "percent": percent}, {"variation": control, "percent": 100.0 - percent}]),
    );
    doc["fallthrough"] = json!({ "rollout": rollout });
}
