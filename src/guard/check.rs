//! One check of one guard, without side effects: the window of statistics it looks at,
//! each metric's test over that window, and the circuit breaker.

use std::time::{Duration, Instant};

use std::sync::Arc;

use super::compile::{Compiled, Metric};
use super::stats::{self, Decision, Direction, Estimate};
use crate::config::guard::{GuardState, MetricKind};
use crate::metrics::GuardSnapshot;
use crate::metrics::{Moments, Signal, SignalKind};

/// What a window belongs to: a change of any of these starts a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The revision that last changed the flag (a step, a re-arm, a new split).
    changed_at: u64,
    control: String,
    treatment: String,
    step: usize,
    step_started: Option<String>,
    state: GuardState,
    percent: Option<f64>,
}

impl Identity {
    pub fn of(guard: &Compiled, changed_at: u64) -> Identity {
        let g = &guard.config;
        Identity {
            changed_at,
            control: g.control.clone(),
            treatment: g.treatment.clone(),
            step: g.step,
            step_started: g.step_started.clone(),
            state: g.state,
            percent: g.ramp.get(g.step).map(|s| s.percent),
        }
    }
}

/// The statistics window of one flag's current step.
pub struct Window {
    identity: Identity,
    control: GuardSnapshot,
    treatment: GuardSnapshot,
    /// The latency bucket of the control's p95, frozen when first known in the step.
    tail_bucket: Option<usize>,
    last_check: Option<Instant>,
}

/// Both arms over a window.
#[derive(Debug, Clone)]
pub struct Arms {
    pub control: GuardSnapshot,
    pub treatment: GuardSnapshot,
    pub tail_bucket: Option<usize>,
}

impl Arms {
    /// Requests that reached an end, per arm (control, treatment).
    pub fn samples(&self) -> (u64, u64) {
        let done = |s: &GuardSnapshot| s.latency.n + s.errors;
        (done(&self.control), done(&self.treatment))
    }
}

impl Window {
    /// A window that starts with the arms' totals now.
    pub fn start(identity: Identity, control: GuardSnapshot, treatment: GuardSnapshot) -> Window {
        Window { identity, control, treatment, tail_bucket: None, last_check: None }
    }

    pub fn belongs_to(&self, identity: &Identity) -> bool {
        self.identity == *identity
    }

    /// The arms since the window started, given their totals now, if a check is due at
    /// `now` (the first check of a window always is; then one per `interval`).
    pub fn advance(
        &mut self,
        control: &GuardSnapshot,
        treatment: &GuardSnapshot,
        interval: Duration,
        min_samples: u64,
        now: Instant,
    ) -> Option<Arms> {
        if self.last_check.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            return None;
        }
        self.last_check = Some(now);
        let control = control.since(&self.control);
        let treatment = treatment.since(&self.treatment);
        if self.tail_bucket.is_none() && control.latency.n >= min_samples {
            self.tail_bucket = control.latency_quantile_bucket(0.95).map(|b| b + 1);
        }
        Some(Arms { control, treatment, tail_bucket: self.tail_bucket })
    }
}

/// One metric's test over a window.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub kind: MetricKind,
    pub name: Arc<str>,
    pub estimate: Estimate,
    pub decision: Decision,
    /// The samples this metric's test saw per arm (control, treatment): requests for the
    /// error rate and latency, streams for TTFT, answers with usage for output tokens.
    pub samples: (u64, u64),
}

/// Test one metric over `arms`.
pub fn evaluate(metric: &Metric, arms: &Arms, guard: &Compiled) -> Evaluated {
    let (c, t, test) = (&arms.control, &arms.treatment, &metric.test);
    let g = &guard.config;
    let floor = |a: u64, b: u64| a >= g.min_samples && b >= g.min_samples;
    let latency = (c.latency.n, t.latency.n);
    let (estimate, enough, samples) = match metric.kind {
        MetricKind::ErrorRate => {
            let (nc, nt) = (c.errors + c.latency.n, t.errors + t.latency.n);
            let e = stats::proportions((c.errors, nc), (t.errors, nt), test);
            (e, floor(nc, nt) && c.errors + t.errors >= g.min_events, (nc, nt))
        }
        MetricKind::Latency => {
            (stats::log_means(&c.latency, &t.latency, test), floor(c.latency.n, t.latency.n), latency)
        }
        MetricKind::Ttft => (stats::log_means(&c.ttft, &t.ttft, test), floor(c.ttft.n, t.ttft.n), (c.ttft.n, t.ttft.n)),
        MetricKind::LatencyTail => match arms.tail_bucket {
            Some(b) => {
                let above = |s: &GuardSnapshot| s.latency_buckets.iter().skip(b).sum::<u64>();
                let (ac, at) = (above(c), above(t));
                let e = stats::proportions((ac, c.latency.n), (at, t.latency.n), test);
                (e, floor(c.latency.n, t.latency.n) && ac + at >= g.min_events, latency)
            }
            None => (stats::proportions((0, 0), (0, 0), test), false, latency),
        },
        MetricKind::OutputTokens => {
            let moments = |s: &GuardSnapshot| (s.usage_n, s.output_tokens as f64, s.output_tokens_sumsq as f64);
            (stats::means(moments(c), moments(t), test), floor(c.usage_n, t.usage_n), (c.usage_n, t.usage_n))
        }
        MetricKind::Cost => {
            let m = |s: &GuardSnapshot| (s.cost.n, s.cost.sum, s.cost.sumsq);
            (stats::means(m(c), m(t), test), floor(c.cost.n, t.cost.n), (c.cost.n, t.cost.n))
        }
        MetricKind::Feedback | MetricKind::Judge | MetricKind::Guardrail => {
            let key = metric.signal.as_deref().unwrap_or_default();
            let (sc, st) = (c.signals.get(key), t.signals.get(key));
            let m = |s: Option<&Signal>| s.map_or(Moments::default(), |s| s.moments);
            let (mc, mt) = (m(sc), m(t.signals.get(key)));
            let signal = sc.or(st);
            // A feedback metric whose definition says higher is better regresses downwards.
            let mut test = *test;
            if !metric.direction_set && signal.is_some_and(|s| s.higher_is_better) {
                test.direction = Direction::Decrease;
            }
            let samples = (mc.n, mt.n);
            let e = match signal.map(|s| s.kind) {
                Some(SignalKind::Boolean) => {
                    let count = |m: Moments| (m.sum.round().max(0.0) as u64, m.n);
                    let e = stats::proportions(count(mc), count(mt), &test);
                    // Proportions need events of the bad kind: failures when higher is better.
                    (e, floor(mc.n, mt.n))
                }
                _ => (stats::means((mc.n, mc.sum, mc.sumsq), (mt.n, mt.sum, mt.sumsq), &test), floor(mc.n, mt.n)),
            };
            (e.0, e.1, samples)
        }
    };
    let name = Arc::clone(&metric.name);
    Evaluated { kind: metric.kind, name, estimate, decision: stats::decide(&estimate, test.alpha, enough), samples }
}

/// The treatment's error rate, if it is over the circuit breaker's limit (which does not
/// wait for the floor).
pub fn breaker(guard: &Compiled, arms: &Arms) -> Option<f64> {
    let cb = &guard.config.circuit_breaker;
    let t = &arms.treatment;
    let done = t.errors + t.latency.n;
    let rate = t.errors as f64 / done.max(1) as f64;
    (done >= cb.min_requests && done > 0 && rate > cb.error_rate).then_some(rate)
}

/// p below this: the arms' requests do not match their shares.
pub const SRM_ALPHA: f64 = 0.001;
/// The fewest requests per arm the sample-ratio check looks at.
const SRM_MIN_PER_ARM: u64 = 8;

/// The sample-ratio check of the window: the arms' requests against their shares of the
/// fallthrough split (`None` when the fallthrough does not split them, or too few requests).
pub fn sample_ratio(doc: &serde_json::Value, guard: &Compiled, arms: &Arms) -> Option<f64> {
    let share = |v: &str| {
        doc["fallthrough"]["rollout"]["variations"].as_array()?.iter().find(|w| w["variation"] == v)?["percent"]
            .as_f64()
    };
    let (wc, wt) = (share(&guard.config.control)?, share(&guard.config.treatment)?);
    let (c, t) = (arms.control.requests, arms.treatment.requests);
    if wc <= 0.0 || wt <= 0.0 || c < SRM_MIN_PER_ARM || t < SRM_MIN_PER_ARM {
        return None;
    }
    crate::stats::experiment::srm_p_value(&[c, t], &[wc, wt])
}
