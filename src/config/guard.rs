//! A flag's `guard:` section: which variations to compare, on which metrics, how strictly,
//! what to do on a regression, and the ramp. Its runtime state (`state`, `step`,
//! `step_started`) lives in the same document, so every guard decision is a revision.

use serde::Deserialize;

use super::values::HumanDuration;
use super::Problem;

/// `guard:` of a flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// The variation everyone is compared with.
    pub control: String,
    /// The variation under test.
    pub treatment: String,
    pub metrics: Vec<GuardMetric>,
    /// The overall false-trip rate, split evenly across the metrics.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Below this many requests in either arm (per step), nothing is decided.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Proportions (error rate, tail share) also need this many events in both arms together.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    #[serde(default = "default_interval")]
    pub check_interval: HumanDuration,
    #[serde(default)]
    pub on_trip: OnTrip,
    /// Acts at once, without waiting for the floor.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Steps of the treatment's share of the fallthrough; empty: no ramp.
    #[serde(default)]
    pub ramp: Vec<RampStep>,
    /// Pause when the arms' requests do not match their shares of the fallthrough
    /// (sample-ratio mismatch, p < 0.001): the test would compare unlike groups.
    #[serde(default = "yes")]
    pub srm_check: bool,
    /// Told (POST, JSON) about trips and ramp steps.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Runtime state, written by the guard: `armed`, `paused` or `rolled_back`.
    #[serde(default)]
    pub state: GuardState,
    /// Runtime state: the current ramp step (index into `ramp`).
    #[serde(default)]
    pub step: usize,
    /// Runtime state: when the current step started (RFC 3339).
    #[serde(default)]
    pub step_started: Option<String>,
    /// Runtime state, written by a rollback: the flag's `fallthrough` and `rules` before
    /// it moved the traffic, which `dismiss` puts back.
    #[serde(default)]
    pub before_trip: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardState {
    #[default]
    Armed,
    Paused,
    RolledBack,
}

impl GuardState {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardState::Armed => "armed",
            GuardState::Paused => "paused",
            GuardState::RolledBack => "rolled_back",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTrip {
    /// The treatment's traffic goes to control.
    #[default]
    Rollback,
    /// The ramp stops where it is.
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    ErrorRate,
    Latency,
    Ttft,
    LatencyTail,
    OutputTokens,
    /// Dollars per priced request.
    Cost,
    /// An app-reported metric (`feedback:<key>`).
    Feedback,
    /// A judge's mean score (`judge:<name>`).
    Judge,
    /// A guardrail's violation rate (`guardrail:<name>`).
    Guardrail,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::ErrorRate => "error_rate",
            MetricKind::Latency => "latency",
            MetricKind::Ttft => "ttft",
            MetricKind::LatencyTail => "latency_tail",
            MetricKind::OutputTokens => "output_tokens",
            MetricKind::Cost => "cost",
            MetricKind::Feedback => "feedback",
            MetricKind::Judge => "judge",
            MetricKind::Guardrail => "guardrail",
        }
    }
}

/// A guarded metric's name: a built-in, `feedback:<key>` of a metric under `metrics:`,
/// `judge:<name>` or `guardrail:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricName {
    pub kind: MetricKind,
    /// Where the arm's statistics keep it: the `metrics:` key of a feedback metric,
    /// `judge:<name>`, `guardrail:<name>`.
    pub signal: Option<String>,
}

impl MetricName {
    /// The name as written (and as labels and statuses show it).
    pub fn label(&self) -> String {
        match (&self.signal, self.kind) {
            (Some(key), MetricKind::Feedback) => format!("feedback:{key}"),
            (Some(key), _) => key.clone(),
            (None, kind) => kind.as_str().to_string(),
        }
    }

    /// The judge or guardrail it names.
    pub fn quality_name(&self) -> Option<&str> {
        let key = self.signal.as_deref()?;
        match self.kind {
            MetricKind::Judge => key.strip_prefix("judge:"),
            MetricKind::Guardrail => key.strip_prefix("guardrail:"),
            _ => None,
        }
    }
}

impl std::str::FromStr for MetricName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(key) = s.strip_prefix("feedback:").filter(|k| !k.is_empty()) {
            return Ok(MetricName { kind: MetricKind::Feedback, signal: Some(key.to_string()) });
        }
        for (prefix, kind) in [("judge:", MetricKind::Judge), ("guardrail:", MetricKind::Guardrail)] {
            if s.strip_prefix(prefix).is_some_and(|n| !n.is_empty()) {
                return Ok(MetricName { kind, signal: Some(s.to_string()) });
            }
        }
        let kind = [
            MetricKind::ErrorRate,
            MetricKind::Latency,
            MetricKind::Ttft,
            MetricKind::LatencyTail,
            MetricKind::OutputTokens,
            MetricKind::Cost,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            format!("unknown metric `{s}`: one of error_rate, latency, ttft, latency_tail, output_tokens, cost, `feedback:<key>`, `judge:<name>` or `guardrail:<name>`")
        })?;
        Ok(MetricName { kind, signal: None })
    }
}

impl<'de> Deserialize<'de> for MetricName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionConfig {
    /// More is worse.
    #[default]
    Increase,
    /// Less is worse.
    Decrease,
}

/// One guarded metric. `margin`: a number is absolute (a proportion for `error_rate` and
/// `latency_tail`, seconds for `latency` and `ttft`, tokens for `output_tokens`); a string
/// such as `"15%"` is relative to control.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardMetric {
    pub metric: MetricName,
    #[serde(default)]
    pub margin: Option<MarginConfig>,
    /// Which way is a regression; default: `increase`, or for a feedback metric the
    /// opposite of its better direction.
    #[serde(default)]
    pub direction: Option<DirectionConfig>,
    /// The mSPRT's mixing scale, in the test's units (a proportion; a log-shift for
    /// latencies; tokens); default: the margin, or the size of effect worth catching.
    #[serde(default)]
    pub tau: Option<f64>,
}

pub use crate::stats::Margin;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MarginConfig {
    Absolute(f64),
    Text(String),
}

impl MarginConfig {
    /// Written with a minus sign.
    pub fn negative(&self) -> bool {
        match self {
            MarginConfig::Absolute(v) => *v < 0.0,
            MarginConfig::Text(t) => t.trim().starts_with('-'),
        }
    }

    /// The margin's size. A minus sign (`"-5%"`, `-0.02`) says the regression is a
    /// decrease, which only a metric where higher is better (a judge's score, feedback
    /// whose direction is `higher`) has: [`MarginConfig::negative`] tells validation.
    pub fn parse(&self) -> Result<Margin, String> {
        match self {
            MarginConfig::Absolute(v) if v.is_finite() => Ok(Margin::Absolute(v.abs())),
            MarginConfig::Absolute(v) => Err(format!("must be a finite number (got {v})")),
            MarginConfig::Text(t) => {
                let pct = t.trim().strip_suffix('%').and_then(|n| n.trim().trim_start_matches('+').parse::<f64>().ok());
                match pct {
                    Some(p) if p.is_finite() => Ok(Margin::Relative(p.abs() / 100.0)),
                    _ => Err(format!("`{t}`: write a number (absolute) or a percentage such as \"15%\" (relative)")),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Trip when the treatment's error rate is above this…
    pub error_rate: f64,
    /// …after at least this many treatment requests.
    pub min_requests: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker { error_rate: 0.5, min_requests: 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStep {
    /// The treatment's share of the fallthrough, in percent.
    pub percent: f64,
    /// The step lasts at least this long…
    #[serde(default = "default_step_duration")]
    pub min_duration: HumanDuration,
    /// …and until both arms have this many requests in the step.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn yes() -> bool {
    true
}
fn default_alpha() -> f64 {
    0.05
}
fn default_min_samples() -> u64 {
    500
}
fn default_min_events() -> u64 {
    5
}
fn default_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_step_duration() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

/// Semantic checks of a flag's guard (`at` is its path).
pub fn validate(at: &str, guard: &GuardConfig, variations: &[&str], problems: &mut Vec<Problem>) {
    for (field, name) in [("control", &guard.control), ("treatment", &guard.treatment)] {
        if !variations.contains(&name.as_str()) {
            problems.push(Problem::new(format!("{at}.{field}"), format!("no variation `{name}` in this flag")));
        }
    }
    if guard.control == guard.treatment {
        problems.push(Problem::new(format!("{at}.treatment"), "must differ from `control`"));
    }
    if guard.metrics.is_empty() {
        problems.push(Problem::new(format!("{at}.metrics"), "list at least one metric to guard"));
    }
    for (i, m) in guard.metrics.iter().enumerate() {
        if let Some(Err(e)) = m.margin.as_ref().map(MarginConfig::parse) {
            problems.push(Problem::new(format!("{at}.metrics[{i}].margin"), e));
        }
    }
    if !(guard.alpha > 0.0 && guard.alpha < 1.0) {
        problems.push(Problem::new(format!("{at}.alpha"), "must be between 0 and 1"));
    }
    if guard.check_interval.0.is_zero() {
        problems.push(Problem::new(format!("{at}.check_interval"), "must be greater than zero"));
    }
    if !(guard.circuit_breaker.error_rate > 0.0 && guard.circuit_breaker.error_rate <= 1.0) {
        problems.push(Problem::new(format!("{at}.circuit_breaker.error_rate"), "must be above 0 and at most 1"));
    }
    let mut last = 0.0;
    for (i, s) in guard.ramp.iter().enumerate() {
        if !(s.percent > last && s.percent <= 100.0) {
            problems.push(Problem::new(format!("{at}.ramp[{i}].percent"), "steps must grow, above 0 and at most 100"));
        }
        last = s.percent;
    }
    if !guard.ramp.is_empty() && guard.step >= guard.ramp.len() {
        problems.push(Problem::new(format!("{at}.step"), "is past the last ramp step"));
    }
    if let Some(url) = &guard.webhook {
        if url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.scheme_str().map(str::to_string))
            .is_none_or(|s| s != "http" && s != "https")
        {
            problems.push(Problem::new(format!("{at}.webhook"), "must be an http:// or https:// URL"));
        }
    }
}
