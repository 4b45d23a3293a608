//! What sluice measures beyond the wire: metric definitions (`metrics:`), feedback from
//! apps (`feedback:`), prices (`pricing:`) and a routing flag's `experiment:`.
//!
//! Built-in metrics keep their names (`error_rate`, `latency`, `ttft`, `latency_tail`,
//! `output_tokens`, `cost`); a metric defined here is named `feedback:<key>` wherever a
//! guard or an experiment refers to it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::values::{HumanDuration, Secret};
use super::Problem;

/// Built-in metric names: a `metrics:` key may not take one.
pub const BUILT_IN: [&str; 6] = ["error_rate", "latency", "ttft", "latency_tail", "output_tokens", "cost"];

/// Most metric definitions.
pub const MAX_METRICS: usize = 64;

/// The largest magnitude a numeric feedback value (and a metric's `min` / `max`) may have:
/// squares and sums of many stay exact enough, and one value cannot swamp an arm.
pub const MAX_ABS_VALUE: f64 = 1e12;

/// One app-reported metric.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// `boolean` (thumbs up, task solved) or `numeric` (seconds, a rating).
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Which way is better.
    pub direction: Better,
    /// Shown beside values (documentation only).
    #[serde(default)]
    pub unit: Option<String>,
    /// Numeric metrics: the smallest and largest value accepted (a value outside is a 400).
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Boolean,
    Numeric,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Boolean => "boolean",
            MetricType::Numeric => "numeric",
        }
    }
}

/// Which way of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// `feedback:`: how apps' signals are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The HMAC key that signs response tokens (at least 32 bytes). Without it, sluice
    /// keeps one in the state directory (`feedback.key`), or — with no state directory —
    /// makes one per process (tokens then die with it).
    #[serde(default)]
    pub key: Option<Secret>,
    /// Feedback on a response older than this is refused (410).
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// How many (token, metric) pairs are remembered to refuse duplicates (409); when
    /// full of unexpired pairs, new feedback is refused with 503 rather than counted twice.
    #[serde(default = "default_dedup_entries")]
    pub dedup_entries: usize,
    /// Web origins allowed to send feedback from a browser with the token alone (CORS).
    #[serde(default)]
    pub browser_origins: Vec<String>,
}

fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

fn default_dedup_entries() -> usize {
    200_000
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            key: None,
            max_age: default_max_age(),
            dedup_entries: default_dedup_entries(),
            browser_origins: Vec::new(),
        }
    }
}

/// Smallest HMAC key for feedback tokens.
pub const MIN_KEY_BYTES: usize = 32;
/// Bounds of `feedback.dedup_entries`.
pub const MAX_DEDUP_ENTRIES: usize = 10_000_000;

/// A model's price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    /// Cached input tokens (prompt caching); defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
}

impl Price {
    /// The cost of one request's tokens, in dollars.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> f64 {
        let cached = cached.min(input);
        let per_token = |p: f64| p / 1e6;
        (input - cached) as f64 * per_token(self.input)
            + cached as f64 * per_token(self.cached_input.unwrap_or(self.input))
            + output as f64 * per_token(self.output)
    }
}

/// `pricing:`: provider → model (as the provider knows it) → price.
pub type Pricing = BTreeMap<String, BTreeMap<String, Price>>;

/// Numeric metrics without both bounds: a value far off (a bug, or a hostile page with a
/// token) moves their means until the iteration ends. What `sluice check` warns about.
pub fn unbounded(config: &super::Config) -> Vec<&str> {
    config
        .metrics
        .iter()
        .filter(|(_, d)| d.kind == MetricType::Numeric && (d.min.is_none() || d.max.is_none()))
        .map(|(k, _)| k.as_str())
        .collect()
}

/// Every (provider, model) the config can send requests to — AI config versions, aliases
/// and the models providers list — that `pricing:` has no price for: their requests count
/// tokens and no cost. What `sluice check` warns about.
pub fn unpriced(config: &super::Config) -> std::collections::BTreeSet<(String, String)> {
    let mut used = std::collections::BTreeSet::new();
    for ai in config.ai_configs.values() {
        for v in &ai.versions {
            if let Ok(r) = v.resolve() {
                used.insert((r.provider, r.model));
            }
        }
    }
    for target in config.aliases.values() {
        if let Some((p, m)) = target.split_once('/') {
            used.insert((p.to_string(), m.to_string()));
        }
    }
    for (name, p) in &config.providers {
        used.extend(p.models.iter().map(|m| (name.clone(), m.clone())));
    }
    used.retain(|(p, m)| {
        config.providers.contains_key(p) && config.pricing.get(p).is_none_or(|ms| !ms.contains_key(m))
    });
    used
}

/// `experiment:` of a routing flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The variation every other arm is compared with.
    pub control: String,
    /// The metric that decides (`feedback:<key>` or a built-in).
    pub primary: String,
    /// Reported, never decisive.
    #[serde(default)]
    pub secondary: Vec<String>,
    /// An arm that clearly loses on one of these is never shipped.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// Below this many samples per arm on the primary metric, "ship" is never recommended.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    #[serde(default)]
    pub decision: DecisionConfig,
    /// Runtime state: `running` or `stopped` (written by stop and ship).
    #[serde(default)]
    pub state: ExperimentState,
    /// Filled in by sluice from the state, never stored in the document: the current
    /// iteration — the revision that started it (the experiment appeared or restarted, or
    /// the flag's allocation changed) — and when it started (RFC 3339).
    #[serde(default = "first_iteration")]
    pub iteration: u32,
    #[serde(default)]
    pub iteration_started: Option<String>,
}

fn default_min_samples() -> u64 {
    500
}

fn first_iteration() -> u32 {
    1
}

/// When an arm wins.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// The chance to beat control an arm needs on the primary metric.
    #[serde(default = "default_chance_to_win")]
    pub chance_to_win: f64,
    /// The expected loss (relative lift) shipping it may risk.
    #[serde(default = "default_max_loss")]
    pub max_loss: f64,
}

fn default_chance_to_win() -> f64 {
    0.95
}

fn default_max_loss() -> f64 {
    0.01
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig { chance_to_win: default_chance_to_win(), max_loss: default_max_loss() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    #[default]
    Running,
    Stopped,
}

impl ExperimentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentState::Running => "running",
            ExperimentState::Stopped => "stopped",
        }
    }
}

/// A metric as guards and experiments name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricRef<'a> {
    BuiltIn(&'a str),
    Feedback(&'a str),
    /// `judge:<name>` or `guardrail:<name>`, as written (the arm's statistics keep it so).
    Quality(&'a str),
}

/// Resolve a metric name against the definitions: a built-in, or `feedback:<key>` of a
/// defined metric.
pub fn metric_ref<'a>(name: &'a str, defs: &BTreeMap<String, MetricDef>) -> Result<MetricRef<'a>, String> {
    if let Some(key) = name.strip_prefix("feedback:") {
        return if defs.contains_key(key) {
            Ok(MetricRef::Feedback(key))
        } else {
            Err(format!("`feedback:{key}` names no metric under `metrics:`"))
        };
    }
    let quality = ["judge:", "guardrail:"].iter().any(|p| name.strip_prefix(p).is_some_and(|n| !n.is_empty()));
    if quality {
        Ok(MetricRef::Quality(name))
    } else if BUILT_IN.contains(&name) {
        Ok(MetricRef::BuiltIn(name))
    } else {
        Err(format!(
            "unknown metric `{name}`: one of {}, `feedback:<key>`, `judge:<name>` or `guardrail:<name>`",
            BUILT_IN.join(", ")
        ))
    }
}

/// Checks of `metrics:`, `feedback:` and `pricing:` (providers are checked by name).
pub(super) fn validate(
    metrics: &BTreeMap<String, MetricDef>,
    feedback: &FeedbackConfig,
    pricing: &Pricing,
    providers: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    if metrics.len() > MAX_METRICS {
        problems.push(Problem::new("metrics", format!("at most {MAX_METRICS} metrics")));
    }
    for (key, def) in metrics {
        let path = format!("metrics.{key}");
        let valid = !key.is_empty()
            && key.len() <= 64
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            problems.push(Problem::new(&path, "a metric key is 1–64 of `a-z`, `0-9` and `_`"));
        }
        if BUILT_IN.contains(&key.as_str()) {
            problems.push(Problem::new(&path, format!("`{key}` is a built-in metric")));
        }
        for (name, bound) in [("min", def.min), ("max", def.max)] {
            if let Some(b) = bound {
                if def.kind == MetricType::Boolean {
                    problems.push(Problem::new(format!("{path}.{name}"), "only numeric metrics have bounds"));
                } else if !(b.is_finite() && b.abs() <= MAX_ABS_VALUE) {
                    problems.push(Problem::new(format!("{path}.{name}"), "must be a number from -1e12 to 1e12"));
                }
            }
        }
        if let (Some(min), Some(max)) = (def.min, def.max) {
            if min > max {
                problems.push(Problem::new(format!("{path}.min"), "must not be above `max`"));
            }
        }
    }
    if let Some(key) = &feedback.key {
        if key.expose().len() < MIN_KEY_BYTES {
            problems.push(Problem::new("feedback.key", format!("must be at least {MIN_KEY_BYTES} bytes")));
        }
    }
    if feedback.max_age.0.is_zero() {
        problems.push(Problem::new("feedback.max_age", "must be greater than zero"));
    }
    if feedback.dedup_entries == 0 || feedback.dedup_entries > MAX_DEDUP_ENTRIES {
        problems.push(Problem::new("feedback.dedup_entries", format!("must be 1–{MAX_DEDUP_ENTRIES}")));
    }
    for (i, origin) in feedback.browser_origins.iter().enumerate() {
        if !is_origin(origin) {
            problems.push(Problem::new(
                format!("feedback.browser_origins[{i}]"),
                "an origin is `scheme://host[:port]`, e.g. `https://app.example.com`",
            ));
        }
    }
    for (provider, models) in pricing {
        if !providers(provider) {
            problems.push(Problem::new(format!("pricing.{provider}"), format!("no provider `{provider}`")));
        }
        for (model, price) in models {
            let path = format!("pricing.{provider}.{model}");
            for (name, p) in
                [("input", Some(price.input)), ("cached_input", price.cached_input), ("output", Some(price.output))]
            {
                if p.is_some_and(|p| !p.is_finite() || p < 0.0) {
                    problems.push(Problem::new(
                        format!("{path}.{name}"),
                        "a price is a number ≥ 0 (dollars per million tokens)",
                    ));
                }
            }
        }
    }
}

/// `scheme://host[:port]` exactly as browsers send `Origin`: lowercase, no default port,
/// no path, a host of labels (or a bracketed IPv6 address) and a port of 1–65535.
pub(super) fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    let (host, port) = if rest.starts_with('[') {
        let Some(end) = rest.find(']') else { return false };
        match &rest[end + 1..] {
            "" => (&rest[..=end], None),
            after => match after.strip_prefix(':') {
                Some(p) => (&rest[..=end], Some(p)),
                None => return false,
            },
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port_ok = match port {
        None => true,
        Some(p) => match p.parse::<u16>() {
            Ok(n) => {
                let default = (scheme == "https" && n == 443) || (scheme == "http" && n == 80);
                n > 0 && !default && !p.starts_with('0')
            }
            Err(_) => false,
        },
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    };
    matches!(scheme, "http" | "https") && host_ok && port_ok
}

/// Checks of a flag's `experiment:`.
pub(super) fn validate_experiment(
    path: &str,
    e: &ExperimentConfig,
    variations: &[&str],
    metrics: &BTreeMap<String, MetricDef>,
    problems: &mut Vec<Problem>,
) {
    if !variations.contains(&e.control.as_str()) {
        problems.push(Problem::new(format!("{path}.control"), format!("no variation `{}`", e.control)));
    }
    if variations.len() < 2 {
        problems.push(Problem::new(path, "an experiment needs at least two variations"));
    }
    if let Err(m) = metric_ref(&e.primary, metrics) {
        problems.push(Problem::new(format!("{path}.primary"), m));
    }
    for (field, name) in std::iter::once(("primary", &e.primary))
        .chain(e.secondary.iter().map(|m| ("secondary", m)))
        .chain(e.guardrails.iter().map(|m| ("guardrails", m)))
    {
        if name == "latency_tail" {
            problems.push(Problem::new(
                format!("{path}.{field}"),
                "`latency_tail` is a guard metric; experiments compare `latency`",
            ));
        }
    }
    for (field, list) in [("secondary", &e.secondary), ("guardrails", &e.guardrails)] {
        for (i, name) in list.iter().enumerate() {
            if let Err(m) = metric_ref(name, metrics) {
                problems.push(Problem::new(format!("{path}.{field}[{i}]"), m));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in std::iter::once(&e.primary).chain(&e.secondary).chain(&e.guardrails) {
        if !seen.insert(name) {
            problems.push(Problem::new(path, format!("`{name}` is listed twice")));
        }
    }
    if e.secondary.len() + e.guardrails.len() > 32 {
        problems.push(Problem::new(path, "at most 32 secondary and guardrail metrics"));
    }
    let d = &e.decision;
    if !(d.chance_to_win > 0.5 && d.chance_to_win < 1.0) {
        problems.push(Problem::new(format!("{path}.decision.chance_to_win"), "must be between 0.5 and 1 (exclusive)"));
    }
    if !(d.max_loss.is_finite() && d.max_loss > 0.0) {
        problems.push(Problem::new(format!("{path}.decision.max_loss"), "must be greater than zero"));
    }
    if e.min_samples == 0 {
        problems.push(Problem::new(format!("{path}.min_samples"), "must be at least 1"));
    }
    if e.iteration == 0 {
        problems.push(Problem::new(format!("{path}.iteration"), "iterations count from 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_counts_cached_input_apart() {
        let p = Price { input: 2.0, cached_input: Some(0.5), output: 8.0 };
        let c = p.cost(1_000_000, 400_000, 500_000);
        assert!((c - (1.2 + 0.2 + 4.0)).abs() < 1e-9, "{c}");
        // More cached than input (a provider's rounding): never negative.
        assert!((p.cost(10, 20, 0) - 10.0 * 0.5 / 1e6).abs() < 1e-15);
        let plain = Price { input: 1.0, cached_input: None, output: 0.0 };
        assert!((plain.cost(1_000_000, 500_000, 0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn metric_names_resolve_against_the_definitions() {
        let defs: BTreeMap<String, MetricDef> = [(
            "thumbs_up".to_string(),
            MetricDef { kind: MetricType::Boolean, direction: Better::Higher, unit: None, min: None, max: None },
        )]
        .into();
        assert_eq!(metric_ref("cost", &defs), Ok(MetricRef::BuiltIn("cost")));
        assert_eq!(metric_ref("feedback:thumbs_up", &defs), Ok(MetricRef::Feedback("thumbs_up")));
        assert!(metric_ref("feedback:nope", &defs).unwrap_err().contains("feedback:nope"));
        assert!(metric_ref("thumbs_up", &defs).unwrap_err().contains("unknown metric"));
        assert!(is_origin("https://app.example.com") && is_origin("http://127.0.0.1:3000"));
        assert!(!is_origin("https://app.example.com/") && !is_origin("app.example.com") && !is_origin("*"));
        // Never what a browser sends: uppercase, a default port, a bad port, an empty label.
        for never in [
            "https://APP.example.com",
            "https://app.example.com:443",
            "http://a:80",
            "http://[::1]:99999",
            "http://a..b",
            "http://a:0",
            "http://a:080",
        ] {
            assert!(!is_origin(never), "{never}");
        }
        assert!(is_origin("http://[::1]:8080") && is_origin("http://[::1]") && is_origin("https://a-b.example:8443"));
    }
}
