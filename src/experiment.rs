//! Experiments: a routing flag's `experiment:` read against the per-arm statistics of its
//! current iteration (the guards' store, since the iteration started in this process),
//! giving the results table, the sample-ratio checks and the recommendation of
//! `stats::experiment`. Pure reads: ship and stop are `state::Change`s.
//!
//! The unit of analysis is the request (its feedback, its cost, its latency), not the user:
//! an app whose users send many requests gets intervals that are too narrow. Chance to win
//! is not a sequential test: a guard keeps watching while an experiment runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::signals::{metric_ref, ExperimentConfig, MetricDef, MetricRef};
use crate::metrics::{GuardSnapshot, Metrics};
use crate::stats::experiment::{
    arm_interval, chance_to_be_best, compare, recommend, srm_p_value, Better, Kind, MetricInput, Recommendation, Role,
    Sample, Thresholds,
};

/// p below this: the arms are not the groups the allocation made; no recommendation.
pub const SRM_ALPHA: f64 = 0.001;
/// Monte Carlo draws for the chance to be best (seeded: the same data, the same answer).
const DRAWS: u32 = 20_000;

/// One experiment's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub flag: String,
    pub state: String,
    pub iteration: u32,
    pub iteration_started: Option<String>,
    pub control: String,
    pub min_samples: u64,
    pub chance_to_win: f64,
    pub max_loss: f64,
    pub arms: Vec<ArmServed>,
    /// The sample-ratio check of served requests against the fallthrough's allocation
    /// (null when the fallthrough is not a split of two or more arms).
    pub srm_p_value: Option<f64>,
    /// The same check of the primary metric's sample counts against served requests
    /// (feedback that arrives more from one arm than another).
    pub coverage_p_value: Option<f64>,
    pub metrics: Vec<MetricResults>,
    pub recommendation: RecommendationView,
}

/// An arm's allocation and what it served in the iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmServed {
    pub variation: String,
    /// Percent of the fallthrough.
    pub weight: f64,
    pub served: u64,
}

/// One metric across the arms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricResults {
    pub metric: String,
    /// `primary`, `secondary` or `guardrail`.
    pub role: String,
    /// `higher` or `lower`.
    pub better: String,
    pub arms: Vec<ArmMetric>,
}

/// One arm on one metric.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArmMetric {
    pub variation: String,
    pub n: u64,
    /// The mean (a rate for booleans and errors, the geometric mean for latencies) and its
    /// 95 % interval.
    pub mean: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// Against control: relative lift and its 95 % credible interval, chance to beat
    /// control, expected loss of shipping this arm (null for the control itself).
    pub lift: Option<f64>,
    pub lift_low: Option<f64>,
    pub lift_high: Option<f64>,
    pub chance_to_beat_control: Option<f64>,
    pub expected_loss: Option<f64>,
    /// With more than two arms, on the primary metric: the chance this arm is the best.
    pub chance_to_be_best: Option<f64>,
}

/// What to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommendationView {
    /// `ship`, `keep_control`, `keep_running` or `withheld`.
    pub action: String,
    pub variation: Option<String>,
    /// Samples per arm still needed to reach `min_samples`, and the projection of the
    /// samples per arm the current effect would need to reach the chance to win.
    pub samples_short: Option<u64>,
    pub projected_per_arm: Option<u64>,
    pub reason: String,
}

/// One arm's sample of metric `m` over the window `w`.
fn sample(m: &MetricRef<'_>, w: &GuardSnapshot) -> Option<(Sample, Kind)> {
    let log = |lm: &crate::metrics::LogMoments| {
        let (n, mean, var) = (lm.n, lm.mean().unwrap_or(0.0), lm.variance().unwrap_or(0.0));
        let sumsq = var * n.saturating_sub(1) as f64 + n as f64 * mean * mean;
        Sample { n, sum: mean * n as f64, sumsq }
    };
    Some(match m {
        MetricRef::BuiltIn("error_rate") => {
            let n = w.latency.n + w.errors;
            (Sample { n, sum: w.errors as f64, sumsq: w.errors as f64 }, Kind::Proportion)
        }
        MetricRef::BuiltIn("latency") => (log(&w.latency), Kind::LogMean),
        MetricRef::BuiltIn("ttft") => (log(&w.ttft), Kind::LogMean),
        MetricRef::BuiltIn("output_tokens") => {
            let s = Sample { n: w.usage_n, sum: w.output_tokens as f64, sumsq: w.output_tokens_sumsq as f64 };
            (s, Kind::Mean)
        }
        MetricRef::BuiltIn("cost") => (Sample { n: w.cost.n, sum: w.cost.sum, sumsq: w.cost.sumsq }, Kind::Mean),
        MetricRef::BuiltIn(_) => return None,
        MetricRef::Feedback(key) | MetricRef::Quality(key) => {
            let s = w.signals.get(*key).map(|s| s.moments).unwrap_or_default();
            let kind = match w.signals.get(*key).map(|s| s.kind) {
                Some(crate::metrics::SignalKind::Numeric) => Kind::Mean,
                _ => Kind::Proportion,
            };
            (Sample { n: s.n, sum: s.sum, sumsq: s.sumsq }, kind)
        }
    })
}

fn better(m: &MetricRef<'_>, defs: &BTreeMap<String, MetricDef>, w: Option<&GuardSnapshot>) -> Better {
    match m {
        // A judge's score says which way is better; a guardrail's violations are worse.
        MetricRef::Quality(key) => match w.and_then(|w| w.signals.get(*key)) {
            Some(s) if s.higher_is_better => Better::Higher,
            Some(_) => Better::Lower,
            None if key.starts_with("judge:") => Better::Higher,
            None => Better::Lower,
        },
        MetricRef::Feedback(key) => match defs.get(*key).map(|d| d.direction) {
            Some(crate::config::signals::Better::Higher) => Better::Higher,
            _ => Better::Lower,
        },
        // Errors, latency, tokens, cost: less is better.
        MetricRef::BuiltIn(_) => Better::Lower,
    }
}

/// The fallthrough's weights by variation (percent), from a flag document.
fn weights(flag: &Value) -> BTreeMap<String, f64> {
    let ft = &flag["fallthrough"];
    if let Some(v) = ft.get("variation").and_then(Value::as_str) {
        return [(v.to_string(), 100.0)].into();
    }
    ft["rollout"]["variations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| Some((w["variation"].as_str()?.to_string(), w["percent"].as_f64().unwrap_or(0.0))))
        .collect()
}

/// The results of `flag`'s experiment, from its document and the metrics; `None` when the
/// flag has no experiment. `defs` are the `metrics:` definitions.
pub fn results(
    flag: &str,
    doc: &Value,
    defs: &BTreeMap<String, MetricDef>,
    metrics: &Metrics,
) -> Option<Result<Results, String>> {
    let raw = doc.get("experiment")?;
    let e: ExperimentConfig = match serde_json::from_value(raw.clone()) {
        Ok(e) => e,
        Err(err) => return Some(Err(format!("the experiment does not read: {err}"))),
    };
    let variations: Vec<String> = doc["variations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let control = variations.iter().position(|v| *v == e.control)?;
    // The iteration's window: totals now minus where it started (if it started here).
    let iteration = metrics.iteration(flag).filter(|i| i.number == e.iteration);
    let windows: Vec<GuardSnapshot> = variations
        .iter()
        .map(|v| {
            // A stopped experiment's window ends where it stopped.
            let end = iteration.as_ref().and_then(|i| i.end.as_ref()?.get(v).cloned());
            let end = end.unwrap_or_else(|| metrics.totals(flag, v));
            match iteration.as_ref().and_then(|i| i.baseline.as_ref()?.get(v)) {
                Some(start) => end.since(start),
                None => end,
            }
        })
        .collect();
    let weights = weights(doc);
    let arms: Vec<ArmServed> = variations
        .iter()
        .zip(&windows)
        .map(|(v, w)| ArmServed {
            variation: v.clone(),
            weight: weights.get(v).copied().unwrap_or(0.0),
            served: w.requests,
        })
        .collect();
    let split = arms.iter().filter(|a| a.weight > 0.0).count() >= 2;
    let srm = split
        .then(|| {
            let served: Vec<u64> = arms.iter().map(|a| a.served).collect();
            let w: Vec<f64> = arms.iter().map(|a| a.weight).collect();
            srm_p_value(&served, &w)
        })
        .flatten();

    let named: Vec<(Role, &String)> = std::iter::once((Role::Primary, &e.primary))
        .chain(e.secondary.iter().map(|m| (Role::Secondary, m)))
        .chain(e.guardrails.iter().map(|m| (Role::Guardrail, m)))
        .collect();
    let mut samples: Vec<(Role, String, Kind, Better, Vec<Sample>)> = Vec::new();
    for (role, name) in named {
        let Ok(m) = metric_ref(name, defs) else { continue };
        let Some(kind) = windows.first().and_then(|w| sample(&m, w)).map(|(_, k)| k) else { continue };
        let arm_samples = windows.iter().map(|w| sample(&m, w).map_or(Sample::default(), |(s, _)| s)).collect();
        samples.push((role, name.clone(), kind, better(&m, defs, windows.first()), arm_samples));
    }
    let seed = foldhash_seed(flag, e.iteration);
    let coverage = samples.first().and_then(|(_, _, _, _, s)| {
        let counts: Vec<u64> = s.iter().map(|x| x.n).collect();
        let served: Vec<f64> = arms.iter().map(|a| a.served as f64).collect();
        (split && counts.iter().sum::<u64>() > 0).then(|| srm_p_value(&counts, &served)).flatten()
    });
    let metric_results: Vec<MetricResults> = samples
        .iter()
        .map(|(role, name, kind, b, arm_samples)| {
            // The chance to be best is what decides among several arms: on the primary metric.
            let best = (*role == Role::Primary && arm_samples.len() > 2)
                .then(|| chance_to_be_best(arm_samples, *kind, *b, DRAWS, seed));
            let arms_out = arm_samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut a = ArmMetric { variation: variations[i].clone(), n: s.n, ..ArmMetric::default() };
                    if let Some((mean, low, high)) = arm_interval(s, *kind) {
                        (a.mean, a.low, a.high) = (Some(mean), Some(low), Some(high));
                    }
                    if i != control {
                        if let Some(c) = compare(&arm_samples[control], s, *kind, *b) {
                            a.lift = Some(c.lift);
                            a.lift_low = Some(c.lift_low);
                            a.lift_high = Some(c.lift_high);
                            a.chance_to_beat_control = Some(c.chance_to_beat_control);
                            a.expected_loss = Some(c.risk_ship);
                        } else if let Some(exact) = exact(&arm_samples[control], s, *kind, *b) {
                            // No spread in either arm (a fixed price per request): the
                            // difference is certain.
                            (a.lift, a.lift_low, a.lift_high) = (Some(exact.0), Some(exact.0), Some(exact.0));
                            a.chance_to_beat_control = Some(exact.1);
                            a.expected_loss = Some(exact.2);
                        }
                    }
                    a.chance_to_be_best = best.as_ref().and_then(|b| b.get(i).copied());
                    a
                })
                .collect();
            MetricResults {
                metric: name.clone(),
                role: match role {
                    Role::Primary => "primary",
                    Role::Secondary => "secondary",
                    Role::Guardrail => "guardrail",
                }
                .into(),
                better: match b {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                }
                .into(),
                arms: arms_out,
            }
        })
        .collect();
    let inputs: Vec<MetricInput<'_>> = samples
        .iter()
        .map(|(role, _, kind, b, s)| MetricInput { kind: *kind, better: *b, role: *role, arms: s })
        .collect();
    let thresholds = Thresholds {
        chance_to_win: e.decision.chance_to_win,
        max_loss: e.decision.max_loss,
        min_samples: e.min_samples,
        srm_alpha: SRM_ALPHA,
    };
    // Either check failing withholds the recommendation.
    let worst = match (srm, coverage) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let rec = if e.state == crate::config::signals::ExperimentState::Stopped {
        RecommendationView {
            action: "stopped".into(),
            variation: None,
            samples_short: None,
            projected_per_arm: None,
            reason: "the experiment has stopped".into(),
        }
    } else {
        view(recommend(&inputs, control, worst, &thresholds, seed), &variations, &e)
    };
    Some(Ok(Results {
        flag: flag.to_string(),
        state: e.state.as_str().into(),
        iteration: e.iteration,
        iteration_started: e.iteration_started.clone(),
        control: e.control.clone(),
        min_samples: e.min_samples,
        chance_to_win: e.decision.chance_to_win,
        max_loss: e.decision.max_loss,
        arms,
        srm_p_value: srm,
        coverage_p_value: coverage,
        metrics: metric_results,
        recommendation: rec,
    }))
}

/// Two arms whose values do not vary (every request costs the same): the relative lift,
/// the chance to beat control (1, 0, or ½ for equal means) and the loss of shipping,
/// known exactly. `None` when an arm has fewer than 2 samples or the control's mean is 0.
fn exact(control: &Sample, treatment: &Sample, kind: Kind, b: Better) -> Option<(f64, f64, f64)> {
    if control.n < 2 || treatment.n < 2 {
        return None;
    }
    let mean = |s: &Sample| match kind {
        Kind::LogMean => (s.sum / s.n as f64).exp(),
        Kind::Proportion | Kind::Mean => s.sum / s.n as f64,
    };
    let (c, t) = (mean(control), mean(treatment));
    if c == 0.0 || !c.is_finite() || !t.is_finite() {
        return None;
    }
    let lift = t / c - 1.0;
    let better = match b {
        Better::Higher => lift,
        Better::Lower => -lift,
    };
    let chance = if better > 0.0 {
        1.0
    } else if better < 0.0 {
        0.0
    } else {
        0.5
    };
    Some((lift, chance, (-better).max(0.0)))
}

fn view(r: Recommendation, variations: &[String], e: &ExperimentConfig) -> RecommendationView {
    let none = RecommendationView {
        action: String::new(),
        variation: None,
        samples_short: None,
        projected_per_arm: None,
        reason: String::new(),
    };
    match r {
        Recommendation::Ship { arm } => RecommendationView {
            action: "ship".into(),
            variation: variations.get(arm).cloned(),
            reason: format!(
                "beats `{}` on {} with a chance of at least {} and an expected loss of at most {}",
                e.control, e.primary, e.decision.chance_to_win, e.decision.max_loss
            ),
            ..none
        },
        Recommendation::KeepControl => RecommendationView {
            action: "keep_control".into(),
            variation: Some(e.control.clone()),
            reason: format!("no arm beats `{}` on {}", e.control, e.primary),
            ..none
        },
        Recommendation::KeepRunning { min_samples_short, projected_per_arm } => RecommendationView {
            action: "keep_running".into(),
            samples_short: Some(min_samples_short),
            projected_per_arm,
            reason: if min_samples_short > 0 {
                format!("{min_samples_short} more samples per arm before any decision (min_samples {})", e.min_samples)
            } else {
                "no arm is clearly better or worse yet".into()
            },
            ..none
        },
        Recommendation::Withheld { srm_p_value } => RecommendationView {
            action: "withheld".into(),
            reason: format!(
                "sample ratio mismatch (p = {srm_p_value:.2e} < {SRM_ALPHA}): the arms are not the groups the allocation made; find out why before trusting any result"
            ),
            ..none
        },
    }
}

/// The Monte Carlo seed of an iteration: the same results for the same data.
fn foldhash_seed(flag: &str, iteration: u32) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(u64::from(iteration)).hash_one(flag)
}

/// Publish experiments' figures as gauges (arms × metrics); `every`: these are every
/// experiment, so the gauges of flags without one any more go.
pub fn publish(all: &[Results], metrics: &Metrics, every: bool) {
    if every {
        metrics.clear_experiments();
    }
    for r in all {
        let arms: Vec<(&str, &str, f64, f64)> = r
            .metrics
            .iter()
            .flat_map(|m| {
                m.arms.iter().filter_map(|a| {
                    Some((a.variation.as_str(), m.metric.as_str(), a.chance_to_beat_control?, a.expected_loss?))
                })
            })
            .collect();
        metrics.set_experiment(&r.flag, r.srm_p_value, &arms);
    }
}
