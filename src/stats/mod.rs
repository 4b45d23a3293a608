//! The statistics sluice decides on, on the ground floor (no I/O, no clock, no
//! randomness, no other module of the crate): the moments the metrics keep
//! ([`LogMoments`]), and the guards' test — a mixture sequential probability ratio test (mSPRT) with a
//! normal mixture on the difference between a treatment arm and a control arm. Its error
//! rate stays below α however often it is checked (it is an e-process), which is what lets
//! the guards look every few seconds without crying wolf.
//!
//! With the estimate Δ̂ (treatment − control, oriented so that larger is worse), its
//! variance V (the sum of the two arms' variances of the mean), the tolerated margin δ and
//! the mixing scale τ:
//!
//! Λ = √(V / (V + τ²)) · exp(τ² (Δ̂ − δ)² / (2 V (V + τ²)))
//!
//! and the test trips when Λ ≥ 1/α and Δ̂ > δ. The matching always-valid interval is
//! Δ̂ ± √(2 V (V + τ²) / τ² · (ln(1/α) + ½ ln((V + τ²) / V))). Pure functions: no I/O, no
//! clock; randomness only where a seed is passed in (Monte Carlo in `experiment`).

pub mod experiment;
mod moments;

pub use moments::{log_fixed, LogMoments};

/// Which way of the metric is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More is worse (errors, latency, tokens).
    Increase,
    /// Less is worse.
    Decrease,
}

/// The difference the treatment may have before it counts as a regression (what a
/// `margin:` means, for the guard's tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    /// In the metric's unit (a proportion, seconds, tokens).
    Absolute(f64),
    /// A fraction of the control's level: 0.15 is +15 %.
    Relative(f64),
}

/// One metric's test settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// This metric's share of the guard's α.
    pub alpha: f64,
    pub margin: Margin,
    /// The mixing scale; `None`: the margin, or for a zero margin the size of effect worth
    /// catching — the control's own rate for proportions (a doubling, at least 2 points),
    /// ln 1.1 for latencies, 10 % of the control's mean for plain means.
    pub tau: Option<f64>,
    pub direction: Direction,
}

/// One comparison, in the units the test runs in (proportions, or natural logarithms for
/// latencies), oriented so that a larger `delta` is worse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub control: f64,
    pub treatment: f64,
    /// Δ̂.
    pub delta: f64,
    /// V, the variance of Δ̂.
    pub variance: f64,
    /// δ, the tolerated margin.
    pub margin: f64,
    /// τ.
    pub tau: f64,
    /// Λ (capped at `f64::MAX`); at most 1 when Δ̂ ≤ δ (no evidence in the bad direction).
    pub lambda: f64,
    /// The always-valid (1 − α) interval of Δ.
    pub low: f64,
    pub high: f64,
}

/// What a check concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Too few samples to decide anything (below the floor).
    Insufficient,
    /// No evidence of a regression beyond the margin.
    Pass,
    /// Evidence of a regression beyond the margin: Λ ≥ 1/α and Δ̂ > δ.
    Trip,
}

/// ln Λ, computed in log space so that it never overflows.
pub fn log_lambda(delta_hat: f64, variance: f64, margin: f64, tau: f64) -> f64 {
    if variance <= 0.0 || tau <= 0.0 || !variance.is_finite() {
        return 0.0;
    }
    let t2 = tau * tau;
    let d = delta_hat - margin;
    0.5 * (variance / (variance + t2)).ln() + t2 * d * d / (2.0 * variance * (variance + t2))
}

/// The half-width of the always-valid interval.
fn half_width(variance: f64, tau: f64, alpha: f64) -> f64 {
    if variance <= 0.0 || tau <= 0.0 {
        return f64::INFINITY;
    }
    let t2 = tau * tau;
    (2.0 * variance * (variance + t2) / t2 * ((1.0 / alpha).ln() + 0.5 * ((variance + t2) / variance).ln())).sqrt()
}

fn estimate(control: f64, treatment: f64, variance: f64, margin: f64, default_tau: f64, test: &Test) -> Estimate {
    let sign = match test.direction {
        Direction::Increase => 1.0,
        Direction::Decrease => -1.0,
    };
    let delta = sign * (treatment - control);
    let tau = test.tau.filter(|t| *t > 0.0).unwrap_or(if margin > 0.0 { margin } else { default_tau });
    // One-sided: only an estimate beyond the margin is evidence of a regression.
    let lambda = if delta > margin {
        log_lambda(delta, variance, margin, tau).exp().min(f64::MAX)
    } else {
        1.0f64.min(log_lambda(delta, variance, margin, tau).exp())
    };
    let h = half_width(variance, tau, test.alpha);
    Estimate { control, treatment, delta, variance, margin, tau, lambda, low: delta - h, high: delta + h }
}

/// Two proportions: `x` events out of `n` in each arm (error rate, share above a threshold).
/// The variance uses (x + 1) / (n + 2) so that an arm with no events yet is not certain.
pub fn proportions(control: (u64, u64), treatment: (u64, u64), test: &Test) -> Estimate {
    let rate = |(x, n): (u64, u64)| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let var = |(x, n): (u64, u64)| {
        let p = (x as f64 + 1.0) / (n as f64 + 2.0);
        if n == 0 {
            f64::INFINITY
        } else {
            p * (1.0 - p) / n as f64
        }
    };
    let (pc, pt) = (rate(control), rate(treatment));
    let margin = match test.margin {
        Margin::Absolute(m) => m,
        Margin::Relative(r) => r * pc,
    };
    let default_tau = pc.max(0.02);
    estimate(pc, pt, var(control) + var(treatment), margin.max(0.0), default_tau, test)
}

/// Two means of a logarithm (latency, time to first token): a relative margin `r` is a
/// shift of ln(1 + r); an absolute one (seconds) is taken relative to the control's
/// geometric mean.
pub fn log_means(control: &LogMoments, treatment: &LogMoments, test: &Test) -> Estimate {
    let (mc, mt) = (control.mean().unwrap_or(0.0), treatment.mean().unwrap_or(0.0));
    let var = |m: &LogMoments| match m.variance() {
        Some(v) if m.n > 0 => v / m.n as f64,
        _ => f64::INFINITY,
    };
    let margin = match test.margin {
        Margin::Relative(r) => (1.0 + r).ln(),
        Margin::Absolute(seconds) => {
            let level = mc.exp();
            ((level + seconds) / level).ln()
        }
    };
    estimate(mc, mt, var(control) + var(treatment), margin.max(0.0), 1.1f64.ln(), test)
}

/// Two plain means from count, sum and sum of squares (tokens per request).
pub fn means(control: (u64, f64, f64), treatment: (u64, f64, f64), test: &Test) -> Estimate {
    let stats = |(n, sum, sumsq): (u64, f64, f64)| {
        if n < 2 {
            return (if n == 1 { sum } else { 0.0 }, f64::INFINITY);
        }
        let n_f = n as f64;
        let mean = sum / n_f;
        let var = ((sumsq - n_f * mean * mean) / (n_f - 1.0)).max(0.0);
        (mean, var / n_f)
    };
    let ((mc, vc), (mt, vt)) = (stats(control), stats(treatment));
    let margin = match test.margin {
        Margin::Absolute(m) => m,
        Margin::Relative(r) => r * mc,
    };
    estimate(mc, mt, vc + vt, margin.max(0.0), (0.1 * mc).max(1.0), test)
}

/// The decision for `e` at level `alpha`, given whether both arms have reached the floor.
pub fn decide(e: &Estimate, alpha: f64, enough: bool) -> Decision {
    if !enough {
        Decision::Insufficient
    } else if e.lambda >= 1.0 / alpha && e.delta > e.margin {
        Decision::Trip
    } else {
        Decision::Pass
    }
}

#[cfg(test)]
mod tests;
