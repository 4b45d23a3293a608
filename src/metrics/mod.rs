//! Metrics: the Prometheus registry served at the admin listener's `GET /metrics`, the
//! per-route handles the request path records into, and the guard statistics.
//!
//! One [`Metrics`] lives as long as the process, across configuration changes; a snapshot
//! resolves the handles of every route it can serve when it is built ([`RouteMetrics`]), so
//! recording a request is a handful of atomic additions: no lock, no label formatting, no
//! allocation. Label values come only from the configuration, never from request data.

mod guard;
pub mod history;
mod outcome;

pub use outcome::Outcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

pub use guard::{
    bucket_lower_bound, latency_bucket, GuardSnapshot, GuardStats, LogMoments, Moments, Signal, SignalKind, ValueStats,
    LATENCY_BUCKETS,
};

use crate::config::signals::Price;

/// The labels of one route: what served a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels {
    /// The routing flag, or empty for pass-through traffic.
    pub flag: String,
    pub variation: String,
    /// The AI config key and version number, or empty.
    pub ai_config: String,
    pub version: String,
    pub provider: String,
    pub model: String,
}

impl Labels {
    fn values(&self) -> [&str; 6] {
        [&self.flag, &self.variation, &self.ai_config, &self.version, &self.provider, &self.model]
    }
}

const ROUTE_LABELS: [&str; 6] = ["flag", "variation", "ai_config", "version", "provider", "model"];

/// Whole-request duration: 10 ms to 163.84 s, doubling (LLM answers take seconds to minutes).
fn duration_buckets() -> Vec<f64> {
    doubling(0.01, 15)
}

/// Time to first token: 1 ms to 16.384 s, doubling.
fn ttft_buckets() -> Vec<f64> {
    doubling(0.001, 15)
}

/// Time spent in sluice itself: 10 µs to about 160 ms, doubling.
fn overhead_buckets() -> Vec<f64> {
    doubling(0.000_01, 15)
}

/// Tokens per request: 1 to 4^10 (about a million), by powers of 4.
fn token_buckets() -> Vec<f64> {
    (0..=10).map(|i| 4f64.powi(i)).collect()
}

fn doubling(start: f64, n: i32) -> Vec<f64> {
    (0..n).map(|i| start * 2f64.powi(i)).collect()
}

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    tracked: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    overhead: HistogramVec,
    tokens: IntCounterVec,
    request_tokens: HistogramVec,
    fallbacks: IntCounterVec,
    rollout_weight: GaugeVec,
    config_revision: IntGauge,
    reload_errors: IntCounter,
    reload_ok: IntGauge,
    /// Registered by [`Metrics::enable_fleet`] (only a fleet has them).
    staleness: prometheus::Gauge,
    leader: IntGauge,
    guard_state: IntGaugeVec,
    guard_trips: IntCounterVec,
    missing_variables: IntCounterVec,
    cost: CounterVec,
    feedback: IntCounterVec,
    feedback_sum: GaugeVec,
    feedback_answers: IntCounterVec,
    feedback_count: IntCounterVec,
    experiment_ctbc: GaugeVec,
    experiment_loss: GaugeVec,
    experiment_srm: GaugeVec,
    judge_evaluations: IntCounterVec,
    judge_skipped: IntCounterVec,
    judge_score: HistogramVec,
    judge_queue: IntGaugeVec,
    judge_tokens: IntCounterVec,
    judge_cost: CounterVec,
    guardrail_checks: IntCounterVec,
    /// Guard statistics by (flag, variation): kept across snapshots, like the counters.
    guards: Mutex<HashMap<(String, String), Arc<GuardStats>>>,
    /// With the fleet store: the fleet's totals per (flag, variation), as last read from
    /// Redis — what [`Metrics::totals`] gives instead of this process's own.
    fleet_totals: Mutex<Option<Arc<FleetTotals>>>,
    /// Each experiment's current iteration and its arms' totals when it started here (an
    /// iteration's results are the totals since).
    iterations: Mutex<HashMap<String, Iteration>>,
    /// Every (flag, variation)'s recent history of [`Metrics::totals`], for the console.
    pub history: history::History,
}

/// The fleet's totals per (flag, variation).
pub type FleetTotals = HashMap<(String, String), GuardSnapshot>;

/// The arms' totals at one moment, by variation.
pub type ArmTotals = std::collections::BTreeMap<String, GuardSnapshot>;

/// Where an experiment's iteration started (and ended), in the totals experiments read.
#[derive(Debug, Clone)]
pub struct Iteration {
    pub number: u32,
    /// The arms' totals when the iteration started; `None` when this process first saw the
    /// experiment already stopped and no one told it where the iteration began.
    pub baseline: Option<ArmTotals>,
    /// The arms' totals when the experiment stopped (its window ends there).
    pub end: Option<ArmTotals>,
    /// With a fleet store, whether the fleet agreed on the start (and the end): the first
    /// instance to see each stores what it saw and every instance takes that, so an
    /// instance started later shows the same window (`fleet::stats::shared_iteration`).
    pub start_agreed: bool,
    pub end_agreed: bool,
}

/// Which end of an iteration's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A metric definition that cannot fail at run time failed: names and labels are constants.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Create and register every metric, plus the process metrics (CPU, memory, file
    /// descriptors) where the platform has them.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let route_and = |extra: &'static str| {
            let mut labels = ROUTE_LABELS.to_vec();
            labels.push(extra);
            labels
        };
        let requests = IntCounterVec::new(
            Opts::new("sluice_requests_total", "Requests by route and outcome."),
            &route_and("outcome"),
        )?;
        let tracked = IntCounterVec::new(
            Opts::new(
                "sluice_tracked_requests_total",
                "Model calls an app made itself and reported with POST /v1/track, by route and outcome (also counted in sluice_requests_total and every per-variation metric).",
            ),
            &route_and("outcome"),
        )?;
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &ROUTE_LABELS)
        };
        let duration = histogram(
            "sluice_request_duration_seconds",
            "Time from the request's arrival to the end of its response (the last byte of a stream).",
            duration_buckets(),
        )?;
        let ttft = histogram(
            "sluice_time_to_first_token_seconds",
            "Streams: time from the request's arrival to the first chunk that carries content.",
            ttft_buckets(),
        )?;
        let overhead = histogram(
            "sluice_gateway_overhead_seconds",
            "Time spent in sluice itself on the way in and out, excluding the wait for the provider.",
            overhead_buckets(),
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("sluice_tokens_total", "Tokens reported by the provider's usage."),
            &route_and("kind"),
        )?;
        let request_tokens = HistogramVec::new(
            HistogramOpts::new("sluice_request_tokens", "Tokens per request (input or output).")
                .buckets(token_buckets()),
            &route_and("kind"),
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "sluice_fallbacks_total",
                "Requests the fallback variation served after the chosen one failed before its first byte.",
            ),
            &["flag", "variation", "to"],
        )?;
        let rollout_weight = GaugeVec::new(
            Opts::new("sluice_rollout_weight", "Share (0–100 %) of the fallthrough traffic each variation gets."),
            &["flag", "variation"],
        )?;
        let config_revision =
            IntGauge::new("sluice_config_revision", "The revision of the configuration being served.")?;
        let reload_errors = IntCounter::new(
            "sluice_config_reload_errors_total",
            "Reloads of the config file that were refused (the running configuration was kept).",
        )?;
        let reload_ok = IntGauge::new(
            "sluice_config_last_reload_successful",
            "1 when the last reload of the config file was applied or found nothing to change, 0 when it was refused.",
        )?;
        reload_ok.set(1);
        let staleness = prometheus::Gauge::new(
            "sluice_config_staleness_seconds",
            "Seconds since this instance last knew it served the fleet's latest revision (fleet store only; rises while Redis cannot be reached).",
        )?;
        let leader = IntGauge::new(
            "sluice_fleet_leader",
            "1 while this instance holds the fleet's lease and runs the guards, ramps and experiment decisions (fleet store only).",
        )?;
        let guard_state = IntGaugeVec::new(
            Opts::new(
                "sluice_guard_state",
                "Each guarded metric: 0 pass, 1 insufficient data, 2 tripped or paused, 3 rolled back.",
            ),
            &["flag", "metric"],
        )?;
        let guard_trips = IntCounterVec::new(
            Opts::new("sluice_guard_trips_total", "Guard trips (a regression or the circuit breaker)."),
            &["flag", "metric"],
        )?;
        let missing_variables = IntCounterVec::new(
            Opts::new(
                "sluice_template_missing_variables_total",
                "Template variables an AI config version's messages referred to that the request did not have.",
            ),
            &["ai_config", "version"],
        )?;
        let cost = CounterVec::new(
            Opts::new("sluice_cost_usd_total", "Cost of priced requests in US dollars, from usage and `pricing:`."),
            &ROUTE_LABELS,
        )?;
        let feedback = IntCounterVec::new(
            Opts::new("sluice_feedback_total", "Boolean feedback accepted, by metric and value."),
            &["flag", "variation", "metric", "value"],
        )?;
        // A gauge: values may be negative, so the sum may go down.
        let feedback_sum = GaugeVec::new(
            Opts::new("sluice_feedback_value_sum", "Numeric feedback accepted: the sum of its values."),
            &["flag", "variation", "metric"],
        )?;
        let feedback_answers = IntCounterVec::new(
            Opts::new("sluice_feedback_requests_total", "POST /v1/feedback requests by the status answered."),
            &["status"],
        )?;
        let feedback_count = IntCounterVec::new(
            Opts::new("sluice_feedback_value_count", "Numeric feedback accepted: how many values."),
            &["flag", "variation", "metric"],
        )?;
        let experiment_gauge =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["flag", "arm", "metric"]);
        let experiment_ctbc = experiment_gauge(
            "sluice_experiment_chance_to_beat_control",
            "Each experiment arm's chance to beat control on each metric, in the current iteration.",
        )?;
        let experiment_loss = experiment_gauge(
            "sluice_experiment_expected_loss",
            "Each experiment arm's expected loss (relative lift) if it were shipped, per metric.",
        )?;
        let experiment_srm = GaugeVec::new(
            Opts::new(
                "sluice_experiment_srm_p_value",
                "The sample-ratio check's p-value of each experiment's served counts.",
            ),
            &["flag"],
        )?;
        let arm_judge = ["flag", "variation", "judge"];
        let judge_evaluations = IntCounterVec::new(
            Opts::new(
                "sluice_judge_evaluations_total",
                "Judge calls on sampled answers, by outcome (scored, error, timeout, invalid).",
            ),
            &["flag", "variation", "judge", "outcome"],
        )?;
        let judge_skipped = IntCounterVec::new(
            Opts::new(
                "sluice_judge_skipped_total",
                "Sampled answers not judged, by reason (queue_full, budget, capacity, truncated, incomplete).",
            ),
            &["flag", "variation", "judge", "reason"],
        )?;
        let judge_score = HistogramVec::new(
            HistogramOpts::new("sluice_judge_score", "Judge scores (0..1) of sampled answers.")
                .buckets((1..=10).map(|i| f64::from(i) / 10.0).collect()),
            &arm_judge,
        )?;
        let judge_queue =
            IntGaugeVec::new(Opts::new("sluice_judge_queue_depth", "Answers waiting for a judge call."), &["judge"])?;
        let judge_tokens = IntCounterVec::new(
            Opts::new("sluice_judge_tokens_total", "Tokens of judge calls (input or output), counted under the judge."),
            &["judge", "kind"],
        )?;
        let judge_cost = CounterVec::new(
            Opts::new(
                "sluice_judge_cost_usd_total",
                "Cost of judge calls in US dollars, when the judge's model is priced.",
            ),
            &["judge"],
        )?;
        let guardrail_checks = IntCounterVec::new(
            Opts::new(
                "sluice_guardrail_checks_total",
                "Guardrail checks of answers, by result (pass, fail; blocked: failed and refused; skipped: not checked).",
            ),
            &["flag", "variation", "guardrail", "result"],
        )?;
        for c in [&judge_evaluations, &judge_skipped, &judge_tokens, &guardrail_checks] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(judge_score.clone()))?;
        registry.register(Box::new(judge_queue.clone()))?;
        registry.register(Box::new(judge_cost.clone()))?;
        registry.register(Box::new(cost.clone()))?;
        for c in [&feedback, &feedback_count, &feedback_answers] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&feedback_sum, &experiment_ctbc, &experiment_loss, &experiment_srm] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(tracked.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(ttft.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(request_tokens.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(rollout_weight.clone()))?;
        registry.register(Box::new(config_revision.clone()))?;
        registry.register(Box::new(missing_variables.clone()))?;
        registry.register(Box::new(reload_errors.clone()))?;
        registry.register(Box::new(reload_ok.clone()))?;
        registry.register(Box::new(guard_state.clone()))?;
        registry.register(Box::new(guard_trips.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics {
            registry,
            requests,
            tracked,
            duration,
            ttft,
            overhead,
            tokens,
            request_tokens,
            fallbacks,
            rollout_weight,
            config_revision,
            reload_errors,
            reload_ok,
            staleness,
            leader,
            guard_state,
            guard_trips,
            missing_variables,
            cost,
            feedback,
            feedback_sum,
            feedback_answers,
            feedback_count,
            experiment_ctbc,
            experiment_loss,
            experiment_srm,
            judge_evaluations,
            judge_skipped,
            judge_score,
            judge_queue,
            judge_tokens,
            judge_cost,
            guardrail_checks,
            guards: Mutex::new(HashMap::new()),
            fleet_totals: Mutex::new(None),
            iterations: Mutex::new(HashMap::new()),
            history: history::History::default(),
        })
    }

    /// The handles of one route. Flag routes also get the guard statistics of their
    /// (flag, variation).
    pub fn route(&self, labels: &Labels, price: Option<Price>) -> Arc<RouteMetrics> {
        let v = labels.values();
        let with = |extra: &'static str| {
            let mut all = v.to_vec();
            all.push(extra);
            all
        };
        let outcomes = Outcome::ALL.map(|o| self.requests.with_label_values(&with(o.as_str())));
        let guard = (!labels.flag.is_empty()).then(|| self.guard_stats(&labels.flag, &labels.variation));
        Arc::new(RouteMetrics {
            labels: labels.clone(),
            outcomes,
            duration: self.duration.with_label_values(&v),
            ttft: self.ttft.with_label_values(&v),
            overhead: self.overhead.with_label_values(&v),
            input_tokens: self.tokens.with_label_values(&with("input")),
            output_tokens: self.tokens.with_label_values(&with("output")),
            input_per_request: self.request_tokens.with_label_values(&with("input")),
            output_per_request: self.request_tokens.with_label_values(&with("output")),
            guard,
            price,
            cost: self.cost.with_label_values(&v),
            tracked: self.tracked.clone(),
        })
    }

    /// The statistics the guards read for (flag, variation), created on first use.
    pub fn guard_stats(&self, flag: &str, variation: &str) -> Arc<GuardStats> {
        let mut guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(guards.entry((flag.to_string(), variation.to_string())).or_default())
    }

    /// Every (flag, variation) with statistics in this process, and its statistics.
    pub fn all_guard_stats(&self) -> Vec<((String, String), Arc<GuardStats>)> {
        let guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
        guards.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }

    /// The totals the guards and experiments decide on for (flag, variation): the fleet's
    /// (with the fleet store: every instance's flushed statistics), else this process's.
    pub fn totals(&self, flag: &str, variation: &str) -> GuardSnapshot {
        self.live_totals(flag, variation).1
    }

    /// Add what every (flag, variation) gained since the last call to its history, at `now`
    /// (Unix seconds; the admin plane calls this on each 10 s boundary).
    pub fn sample_history(&self, now: u64) {
        let fleet = self.fleet_totals.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match fleet {
            Some(all) => {
                let totals = all.iter().map(|(k, v)| (k.clone(), v.clone()));
                self.history.sample(now, history::Source::Fleet, totals);
            }
            None => {
                let totals = self.all_guard_stats().into_iter().map(|(k, s)| (k, s.snapshot()));
                self.history.sample(now, history::Source::Process, totals);
            }
        }
    }

    /// [`Metrics::totals`] and whether they are the fleet's (for [`history::History::view`]).
    pub fn live_totals(&self, flag: &str, variation: &str) -> (history::Source, GuardSnapshot) {
        let fleet = self.fleet_totals.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match fleet {
            Some(all) => {
                let totals = all.get(&(flag.to_string(), variation.to_string())).cloned().unwrap_or_default();
                (history::Source::Fleet, totals)
            }
            None => (history::Source::Process, self.guard_stats(flag, variation).snapshot()),
        }
    }

    /// Decide on the fleet's totals from now on (read from Redis by the fleet's thread).
    pub fn set_fleet_totals(&self, totals: FleetTotals) {
        *self.fleet_totals.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(totals));
    }

    /// The Prometheus handles of one app-reported metric of (flag, variation).
    pub fn feedback(&self, flag: &str, variation: &str, metric: &str, kind: SignalKind) -> FeedbackCounters {
        match kind {
            SignalKind::Boolean => FeedbackCounters::Boolean {
                yes: self.feedback.with_label_values(&[flag, variation, metric, "true"]),
                no: self.feedback.with_label_values(&[flag, variation, metric, "false"]),
            },
            SignalKind::Numeric => FeedbackCounters::Numeric {
                sum: self.feedback_sum.with_label_values(&[flag, variation, metric]),
                count: self.feedback_count.with_label_values(&[flag, variation, metric]),
            },
        }
    }

    /// The handles of judge `judge` on (flag, variation).
    pub fn judge_arm(&self, flag: &str, variation: &str, judge: &str) -> JudgeArmCounters {
        let outcome = |o: &str| self.judge_evaluations.with_label_values(&[flag, variation, judge, o]);
        let skipped = |r: &str| self.judge_skipped.with_label_values(&[flag, variation, judge, r]);
        JudgeArmCounters {
            outcomes: JudgeOutcome::ALL.map(|o| outcome(o.as_str())),
            skipped: SkipReason::ALL.map(|r| skipped(r.as_str())),
            score: self.judge_score.with_label_values(&[flag, variation, judge]),
        }
    }

    /// The handles of judge `judge` itself: its queue, tokens and cost.
    pub fn judge_totals(&self, judge: &str) -> JudgeTotals {
        JudgeTotals {
            queue: self.judge_queue.with_label_values(&[judge]),
            input_tokens: self.judge_tokens.with_label_values(&[judge, "input"]),
            output_tokens: self.judge_tokens.with_label_values(&[judge, "output"]),
            cost: self.judge_cost.with_label_values(&[judge]),
        }
    }

    /// The handles of guardrail `guardrail` on (flag, variation).
    pub fn guardrail_arm(&self, flag: &str, variation: &str, guardrail: &str) -> GuardrailCounters {
        let c = |r: &str| self.guardrail_checks.with_label_values(&[flag, variation, guardrail, r]);
        GuardrailCounters { pass: c("pass"), fail: c("fail"), blocked: c("blocked"), skipped: c("skipped") }
    }

    /// The counter of feedback requests answered with `status` (a few statuses: the label
    /// comes from sluice, never from the request).
    pub fn feedback_answer(&self, status: u16) -> IntCounter {
        self.feedback_answers.with_label_values(&[&status.to_string()])
    }

    /// Publish an experiment's figures (off the request path).
    pub fn set_experiment(&self, flag: &str, srm_p_value: Option<f64>, arms: &[(&str, &str, f64, f64)]) {
        match srm_p_value {
            Some(p) => self.experiment_srm.with_label_values(&[flag]).set(p),
            None => {
                let _ = self.experiment_srm.remove_label_values(&[flag]);
            }
        }
        for &(arm, metric, ctbc, loss) in arms {
            self.experiment_ctbc.with_label_values(&[flag, arm, metric]).set(ctbc);
            self.experiment_loss.with_label_values(&[flag, arm, metric]).set(loss);
        }
    }

    /// Forget every experiment's figures (before publishing the current ones).
    pub fn clear_experiments(&self) {
        self.experiment_ctbc.reset();
        self.experiment_loss.reset();
        self.experiment_srm.reset();
    }

    /// Note that `flag`'s experiment is at iteration `number` (when a snapshot is built):
    /// the first time, its arms' totals now become the iteration's baseline.
    pub fn mark_iteration(&self, flag: &str, number: u32, variations: &[&str]) {
        let mut iterations = self.iterations.lock().unwrap_or_else(PoisonError::into_inner);
        if iterations.get(flag).is_some_and(|i| i.number == number) {
            return;
        }
        let baseline = Some(self.arm_totals(flag, variations));
        let iteration = Iteration { number, baseline, end: None, start_agreed: false, end_agreed: false };
        iterations.insert(flag.to_string(), iteration);
    }

    /// Note that `flag`'s experiment stopped at iteration `number`: the first time, its
    /// arms' totals now end the iteration's window (of an iteration this process never saw
    /// running, the start is not known here).
    pub fn end_iteration(&self, flag: &str, number: u32, variations: &[&str]) {
        let mut iterations = self.iterations.lock().unwrap_or_else(PoisonError::into_inner);
        match iterations.get_mut(flag).filter(|i| i.number == number) {
            Some(i) if i.end.is_some() => {}
            Some(i) => i.end = Some(self.arm_totals(flag, variations)),
            None => {
                let end = Some(self.arm_totals(flag, variations));
                let iteration = Iteration { number, baseline: None, end, start_agreed: false, end_agreed: false };
                iterations.insert(flag.to_string(), iteration);
            }
        }
    }

    fn arm_totals(&self, flag: &str, variations: &[&str]) -> ArmTotals {
        variations.iter().map(|v| (v.to_string(), self.totals(flag, v))).collect()
    }

    /// The iterations whose start, or end, the fleet has not agreed on yet.
    pub fn iterations_to_agree(&self) -> Vec<(String, Iteration)> {
        let iterations = self.iterations.lock().unwrap_or_else(PoisonError::into_inner);
        iterations
            .iter()
            .filter(|(_, i)| !i.start_agreed || (i.end.is_some() && !i.end_agreed))
            .map(|(flag, i)| (flag.clone(), i.clone()))
            .collect()
    }

    /// What the fleet agreed on for one edge of `flag`'s iteration `number` (`None`: the
    /// fleet does not know it either, so this process's view stands).
    pub fn agree_iteration(&self, flag: &str, number: u32, edge: Edge, agreed: Option<ArmTotals>) {
        let mut iterations = self.iterations.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(i) = iterations.get_mut(flag).filter(|i| i.number == number) else { return };
        let (value, done) = match edge {
            Edge::Start => (&mut i.baseline, &mut i.start_agreed),
            Edge::End => (&mut i.end, &mut i.end_agreed),
        };
        if agreed.is_some() {
            *value = agreed;
        }
        *done = true;
    }

    /// Where `flag`'s experiment's current iteration started.
    pub fn iteration(&self, flag: &str) -> Option<Iteration> {
        self.iterations.lock().unwrap_or_else(PoisonError::into_inner).get(flag).cloned()
    }

    /// The counter of fallbacks from `variation` to `to`.
    pub fn fallback(&self, flag: &str, variation: &str, to: &str) -> IntCounter {
        self.fallbacks.with_label_values(&[flag, variation, to])
    }

    /// The counter of missing template variables of an AI config version.
    pub fn missing_variables(&self, ai_config: &str, version: u32) -> IntCounter {
        self.missing_variables.with_label_values(&[ai_config, &version.to_string()])
    }

    /// Publish a flag's fallthrough weights (percent by variation name).
    pub fn set_rollout_weights(&self, flag: &str, weights: &[(String, f64)]) {
        for (variation, weight) in weights {
            self.rollout_weight.with_label_values(&[flag, variation]).set(*weight);
        }
    }

    /// Forget the rollout weights of flags that no longer exist.
    pub fn clear_rollout_weights(&self) {
        self.rollout_weight.reset();
    }

    /// A guarded metric's state (off the request path: a label lookup is fine here).
    pub fn set_guard_state(&self, flag: &str, metric: &str, value: i64) {
        self.guard_state.with_label_values(&[flag, metric]).set(value);
    }

    /// Make the trip counter of a guarded metric visible (at 0) before its first trip.
    pub fn guard_trips_seen(&self, flag: &str, metric: &str) {
        let _ = self.guard_trips.with_label_values(&[flag, metric]);
    }

    pub fn guard_tripped(&self, flag: &str, metric: &str) {
        self.guard_trips.with_label_values(&[flag, metric]).inc();
    }

    /// Export the fleet's gauges (`state.store: redis`).
    pub fn enable_fleet(&self) {
        for g in
            [Box::new(self.staleness.clone()) as Box<dyn prometheus::core::Collector>, Box::new(self.leader.clone())]
        {
            if let Err(e) = self.registry.register(g) {
                tracing::debug!(error = %e, "fleet gauges already registered");
            }
        }
    }

    /// How stale this instance's configuration may be (`None`: it never was current).
    pub fn set_config_staleness(&self, seconds: Option<f64>) {
        self.staleness.set(seconds.unwrap_or(f64::INFINITY));
    }

    pub fn set_fleet_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn reload_succeeded(&self) {
        self.reload_ok.set(1);
    }

    pub fn reload_failed(&self) {
        self.reload_errors.inc();
        self.reload_ok.set(0);
    }

    pub fn set_config_revision(&self, revision: u64) {
        self.config_revision.set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_default()
    }
}

/// The handles one route records into, resolved when the snapshot is built.
#[derive(Debug)]
pub struct RouteMetrics {
    labels: Labels,
    /// By `Outcome as usize`.
    outcomes: [IntCounter; Outcome::ALL.len()],
    duration: Histogram,
    ttft: Histogram,
    overhead: Histogram,
    input_tokens: IntCounter,
    output_tokens: IntCounter,
    input_per_request: Histogram,
    output_per_request: Histogram,
    guard: Option<Arc<GuardStats>>,
    /// The route's model's price, when `pricing:` has one.
    price: Option<Price>,
    cost: Counter,
    /// `sluice_tracked_requests_total`, labelled when a tracked call is recorded.
    tracked: IntCounterVec,
}

/// One app-reported metric's Prometheus handles.
#[derive(Debug, Clone)]
pub enum FeedbackCounters {
    Boolean { yes: IntCounter, no: IntCounter },
    Numeric { sum: Gauge, count: IntCounter },
}

impl FeedbackCounters {
    pub fn record(&self, x: f64) {
        match self {
            FeedbackCounters::Boolean { yes, no } => if x > 0.5 { yes } else { no }.inc(),
            FeedbackCounters::Numeric { sum, count } => {
                sum.add(x);
                count.inc();
            }
        }
    }
}

/// How a judge call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeOutcome {
    Scored,
    Error,
    Timeout,
    /// The judge answered, but with no parseable `{reasoning, score}` or a score out of range.
    Invalid,
}

impl JudgeOutcome {
    pub const ALL: [JudgeOutcome; 4] =
        [JudgeOutcome::Scored, JudgeOutcome::Error, JudgeOutcome::Timeout, JudgeOutcome::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            JudgeOutcome::Scored => "scored",
            JudgeOutcome::Error => "error",
            JudgeOutcome::Timeout => "timeout",
            JudgeOutcome::Invalid => "invalid",
        }
    }
}

/// Why a sampled answer was not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The judge's queue was full.
    QueueFull,
    /// The judge's tokens for this minute were spent.
    Budget,
    /// The capture budget (`limits.capture_budget`) had no room.
    Capacity,
    /// The answer was longer than what is kept or what the judge reads.
    Truncated,
    /// The answer did not end well: a broken or cancelled stream, an error answer.
    Incomplete,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::QueueFull,
        SkipReason::Budget,
        SkipReason::Capacity,
        SkipReason::Truncated,
        SkipReason::Incomplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::QueueFull => "queue_full",
            SkipReason::Budget => "budget",
            SkipReason::Capacity => "capacity",
            SkipReason::Truncated => "truncated",
            SkipReason::Incomplete => "incomplete",
        }
    }
}

/// One judge's Prometheus handles on one arm.
#[derive(Debug, Clone)]
pub struct JudgeArmCounters {
    /// By `JudgeOutcome as usize`.
    pub outcomes: [IntCounter; 4],
    /// By `SkipReason as usize`.
    pub skipped: [IntCounter; 5],
    pub score: Histogram,
}

/// One judge's own Prometheus handles.
#[derive(Debug, Clone)]
pub struct JudgeTotals {
    pub queue: IntGauge,
    pub input_tokens: IntCounter,
    pub output_tokens: IntCounter,
    pub cost: Counter,
}

/// One guardrail's Prometheus handles on one arm.
#[derive(Debug, Clone)]
pub struct GuardrailCounters {
    pub pass: IntCounter,
    pub fail: IntCounter,
    pub blocked: IntCounter,
    pub skipped: IntCounter,
}

/// Token counts from a provider's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Input tokens served from the provider's prompt cache (part of `input`).
    pub cached: u64,
}

/// One finished request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub outcome: Outcome,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub overhead: Duration,
    pub usage: Option<Usage>,
    /// The request's cost in dollars, when its route has a price and usage came back.
    pub cost: Option<f64>,
}

impl RouteMetrics {
    /// The route's labels (for the access log).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Count tokens without a request (a fallback's, counted under the variation it
    /// served), and their cost; returns the cost when the route is priced.
    pub fn record_tokens(&self, u: Usage) -> Option<f64> {
        self.input_tokens.inc_by(u.input);
        self.output_tokens.inc_by(u.output);
        self.input_per_request.observe(u.input as f64);
        self.output_per_request.observe(u.output as f64);
        let cost = self.price.map(|p| p.cost(u.input, u.cached, u.output))?;
        self.cost.inc_by(cost);
        Some(cost)
    }

    /// A request of this route named no context (flag routes: its arm counts it).
    pub fn note_random_context(&self) {
        if let Some(g) = &self.guard {
            g.note_random_context();
        }
    }

    /// Record one finished request: atomic additions only.
    pub fn record(&self, f: &Finished) {
        self.overhead.observe(f.overhead.as_secs_f64());
        self.record_call(f);
    }

    /// A model call an app made itself and reported (`POST /v1/track`): counted as a
    /// proxied request is — outcome, duration, time to first token, tokens, cost, the
    /// guards' statistics — except sluice's own overhead, and in
    /// `sluice_tracked_requests_total` too.
    pub fn record_tracked(&self, f: &Finished) {
        self.record_call(f);
        let mut labels = self.labels.values().to_vec();
        labels.push(f.outcome.as_str());
        self.tracked.with_label_values(&labels).inc();
    }

    fn record_call(&self, f: &Finished) {
        let cost = f.usage.and_then(|u| self.record_tokens(u));
        let f = &Finished { cost, ..*f };
        self.outcomes[f.outcome as usize].inc();
        self.duration.observe(f.duration.as_secs_f64());
        if let Some(t) = f.ttft {
            self.ttft.observe(t.as_secs_f64());
        }
        if let Some(g) = &self.guard {
            g.record(f);
        }
    }
}
