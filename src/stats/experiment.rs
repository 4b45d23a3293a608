//! The experiment results: each arm against the control, the Bayesian way GrowthBook's
//! gbstats does it by default (`EffectBayesianABTest`: improper flat prior, relative
//! difference, 95 % interval), a sample-ratio check, P(best) over several arms and the
//! ship / keep / keep-running rule. Pure functions: no I/O, no clock; the one use of
//! randomness (the Monte Carlo of [`chance_to_be_best`]) takes its seed as an argument.
//!
//! Per arm and metric the counters keep n, S = Σx and Q = Σx² ([`Sample`]). Then
//! x̄ = S/n and s² = (Q − S²/n)/(n − 1), or p(1 − p) for a proportion (gbstats'
//! `ProportionStatistic`, the binomial variance with divisor n).
//!
//! **Relative effect** (the delta method, gbstats `frequentist_diff`/`frequentist_variance`):
//!
//! Δ̂ = (x̄_T − x̄_C) / |x̄_C|, σ̂² = s_T² / (n_T x̄_C²) + x̄_T² s_C² / (n_C x̄_C⁴)
//!
//! With a flat prior the posterior of the effect δ is N(Δ̂, σ̂²), and with z = Δ̂/σ̂:
//!
//! - chance to beat control Φ(z) (Φ(−z) when lower is better, gbstats' `inverse`);
//! - the 95 % credible interval Δ̂ ± Φ⁻¹(0.975) σ̂;
//! - the expected losses E[max(−δ, 0)] = σ̂ φ(z) − Δ̂ Φ(−z) (shipping a treatment that is in
//!   fact worse) and E[max(δ, 0)] = σ̂ φ(z) + Δ̂ Φ(z) (keeping a control that is in fact
//!   worse), swapped when lower is better. gbstats computes them as truncated-normal means
//!   times their probabilities, which is the same; beyond |z| > 37 the small one is 0 and
//!   the large one |Δ̂| (φ and Φ(−|z|) underflow there anyway).
//!
//! **Absolute effect**: when the control's mean is 0 (or the delta method's variance
//! degenerates to 0, e.g. a treatment with no events against a control with some) the
//! relative effect is not usable: Δ̂ = x̄_T − x̄_C, σ̂² = s_T²/n_T + s_C²/n_C, and everything
//! above is in the metric's units ([`Comparison::relative`] is false). gbstats returns its
//! uninformative default (chance 0.5) for a zero control mean in relative mode; its
//! absolute mode is what is done here.
//!
//! **Log means** ([`Kind::LogMean`]: latency, time to first token, as the guards do): the
//! sample holds Σ ln x and Σ (ln x)²; the effect is the absolute difference of the log
//! means, D ~ N(Δ̂, σ̂²), reported as the lift e^D − 1 (its median e^Δ̂ − 1 and interval
//! e^(Δ̂ ± zσ̂) − 1, a ratio of geometric means). The chance to beat control is Φ(±z) as
//! above; the losses are in the lift's units, the lognormal partial expectations
//! E[(e^D − 1)⁺] = e^(Δ̂+σ̂²/2) Φ((Δ̂+σ̂²)/σ̂) − Φ(Δ̂/σ̂) and
//! E[(1 − e^D)⁺] = Φ(−Δ̂/σ̂) − e^(Δ̂+σ̂²/2) Φ(−(Δ̂+σ̂²)/σ̂).
//!
//! **Where this differs from gbstats 0.8.0** (tests/fixtures/experiments/gbstats.json
//! holds its numbers, see make_fixtures.py there):
//!
//! - A negative control mean: gbstats divides by x̄_C, which turns the sign of the lift
//!   (a treatment at −4.8 against −5 would be a −4 % "lift" and likely worse when higher is
//!   better); here the divisor is |x̄_C|, so the lift keeps the metric's orientation. For
//!   positive means (every metric sluice keeps) the two are the same.
//! - One arm with a variance of 0 (e.g. no errors at all in one arm): gbstats returns its
//!   default output; here the other arm's variance carries the comparison, and only a
//!   total variance of 0 gives `None`.
//! - The research notes on experiments (§4) describe a |z| > 37 short-circuit of the
//!   losses (gbstats at commit 8f1db44); 0.8.0 has none (scipy's truncated normal copes).
//!   It is kept here and changes nothing above 1e-300. Otherwise the notes' formulas are
//!   gbstats' (with a flat prior).
//! - The sample-ratio check with a zero weight: see [`srm_p_value`].
//!
//! **Sample-ratio mismatch**: Pearson's χ² = Σ (oᵢ − eᵢ)²/eᵢ with eᵢ = N wᵢ / Σw, and the
//! p-value is the χ² survival function with k − 1 degrees of freedom,
//! Q((k − 1)/2, χ²/2) (for two arms erfc(√(χ²/2))), as gbstats' `check_srm`.

use std::f64::consts::{PI, SQRT_2};

/// Φ⁻¹(0.975), the z of a 95 % two-sided interval (scipy's `norm.ppf(0.975)`).
const Z_95: f64 = 1.959_963_984_540_054;

/// Beyond this |z| the smaller expected loss is 0 and the larger one |Δ̂| (the
/// short-circuit of earlier gbstats versions).
const Z_CUTOFF: f64 = 37.0;

/// The Monte Carlo draws [`recommend`] uses to pick among several winning arms.
const BEST_DRAWS: u32 = 10_000;

/// Additive sufficient statistics of one arm for one metric: count, Σx, Σx².
/// For a boolean metric x ∈ {0,1}, so sum = sumsq = successes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub n: u64,
    pub sum: f64,
    pub sumsq: f64,
}

impl Sample {
    /// x̄ = S/n, if there is a sample.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The sample variance (Q − S²/n)/(n − 1), if there are two samples (never negative).
    /// A proportion's variance is p(1 − p) instead: see [`Kind::Proportion`].
    pub fn variance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        Some(((self.sumsq - self.sum * self.sum / n) / (n - 1.0)).max(0.0))
    }
}

/// What the samples of a metric are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A boolean metric: variance p(1 − p) (GrowthBook's binomial).
    Proportion,
    /// A plain mean: variance (Q − S²/n)/(n − 1).
    Mean,
    /// The sample holds Σ ln x and Σ (ln x)² (latency, time to first token): the effect is
    /// the difference of the log means (absolute on the log scale), the reported lift
    /// exp(Δ) − 1.
    LogMean,
}

/// Which way of the metric is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One arm against the control, on one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The relative lift (x̄_T/x̄_C − 1 by the delta method; LogMean: exp(Δ) − 1) and its
    /// 95 % credible interval.
    pub lift: f64,
    pub lift_low: f64,
    pub lift_high: f64,
    /// P(treatment better than control), oriented by [`Better`].
    pub chance_to_beat_control: f64,
    /// Expected loss (risk) of shipping the treatment, and of keeping the control, in the
    /// lift's units, oriented by [`Better`] (always ≥ 0).
    pub risk_ship: f64,
    pub risk_keep: f64,
    /// Whether the relative effect was usable; false when the control's mean is 0 (or the
    /// delta method's variance is 0): then the absolute difference is used for all of the
    /// above and `lift*` are the absolute difference.
    pub relative: bool,
}

/// The mean and the per-unit variance of an arm for `kind`, both finite; `None` without
/// enough samples (n < 1 for a proportion, n < 2 otherwise) or for a proportion outside
/// [0, 1].
fn moments(s: &Sample, kind: Kind) -> Option<(f64, f64)> {
    let (mean, var) = match kind {
        Kind::Proportion => {
            let p = s.mean()?;
            if !(0.0..=1.0).contains(&p) {
                return None;
            }
            (p, p * (1.0 - p))
        }
        Kind::Mean | Kind::LogMean => (s.mean()?, s.variance()?),
    };
    (mean.is_finite() && var.is_finite()).then_some((mean, var))
}

/// Mean of one arm with its 95 % interval: for a mean, the normal approximation
/// mean ± z·sqrt(var/n); for a proportion, Wilson's score interval (inside [0, 1], and not
/// empty when the arm has no events yet: 0 of 10 is [0, 0.28]); LogMean: the geometric
/// mean exp(mean) with exp of the bounds. `(mean, low, high)`; `None` when n < 2
/// (Proportion: n < 1).
pub fn arm_interval(s: &Sample, kind: Kind) -> Option<(f64, f64, f64)> {
    if kind == Kind::Proportion {
        if s.n == 0 {
            return None;
        }
        let (n, p) = (s.n as f64, (s.sum / s.n as f64).clamp(0.0, 1.0));
        let z2 = Z_95 * Z_95;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        return Some((p, (centre - half).max(0.0), (centre + half).min(1.0)));
    }
    let (mean, var) = moments(s, kind)?;
    let h = Z_95 * (var / s.n as f64).sqrt();
    Some(match kind {
        Kind::LogMean => (mean.exp(), (mean - h).exp(), (mean + h).exp()),
        Kind::Proportion | Kind::Mean => (mean, mean - h, mean + h),
    })
}

/// The standard normal density.
fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// E[max(X, 0)] and E[max(−X, 0)] for X ~ N(mu, sigma²).
fn normal_partial_expectations(mu: f64, sigma: f64) -> (f64, f64) {
    let z = mu / sigma;
    if z > Z_CUTOFF {
        return (mu, 0.0);
    }
    if z < -Z_CUTOFF {
        return (0.0, -mu);
    }
    let pdf = normal_pdf(z);
    let pos = sigma * pdf + mu * normal_cdf(z);
    let neg = sigma * pdf - mu * normal_cdf(-z);
    (pos.max(0.0), neg.max(0.0))
}

/// E[(e^D − 1)⁺] and E[(1 − e^D)⁺] for D ~ N(mu, sigma²).
fn lognormal_partial_expectations(mu: f64, sigma: f64) -> (f64, f64) {
    let z = mu / sigma;
    let mean = (mu + 0.5 * sigma * sigma).exp();
    if z > Z_CUTOFF {
        return ((mean - 1.0).max(0.0), 0.0);
    }
    if z < -Z_CUTOFF {
        return (0.0, (1.0 - mean).max(0.0));
    }
    let shifted = (mu + sigma * sigma) / sigma;
    let up = mean * normal_cdf(shifted) - normal_cdf(z);
    let down = normal_cdf(-z) - mean * normal_cdf(-shifted);
    (up.max(0.0), down.max(0.0))
}

/// Treatment vs control under a flat prior (GrowthBook's default Bayesian engine, relative
/// difference; see the module's documentation for the formulas and where they differ from
/// gbstats). `None` when either arm has n < 2, when the effect's variance is 0 (a variance
/// of 0 in both arms), or when a sum is not finite.
pub fn compare(control: &Sample, treatment: &Sample, kind: Kind, better: Better) -> Option<Comparison> {
    if control.n < 2 || treatment.n < 2 {
        return None;
    }
    let (mc, vc) = moments(control, kind)?;
    let (mt, vt) = moments(treatment, kind)?;
    let (nc, nt) = (control.n as f64, treatment.n as f64);
    let abs_var = vt / nt + vc / nc;
    if !(abs_var > 0.0 && abs_var.is_finite()) {
        return None;
    }
    let (mu, var, relative) = match kind {
        Kind::LogMean => (mt - mc, abs_var, true),
        Kind::Proportion | Kind::Mean => {
            let c2 = mc * mc;
            let rel_var = vt / (c2 * nt) + vc * mt * mt / (c2 * c2 * nc);
            if mc != 0.0 && rel_var > 0.0 && rel_var.is_finite() {
                ((mt - mc) / mc.abs(), rel_var, true)
            } else {
                (mt - mc, abs_var, false)
            }
        }
    };
    let sigma = var.sqrt();
    if !(mu.is_finite() && sigma.is_finite() && sigma > 0.0) {
        return None;
    }
    let z = mu / sigma;
    let (lift, lift_low, lift_high, up, down) = match kind {
        Kind::LogMean => {
            let (up, down) = lognormal_partial_expectations(mu, sigma);
            (mu.exp_m1(), (mu - Z_95 * sigma).exp_m1(), (mu + Z_95 * sigma).exp_m1(), up, down)
        }
        Kind::Proportion | Kind::Mean => {
            let (up, down) = normal_partial_expectations(mu, sigma);
            (mu, mu - Z_95 * sigma, mu + Z_95 * sigma, up, down)
        }
    };
    // `up`: the loss of keeping the control when the treatment is higher; `down`: of
    // shipping a treatment that is lower.
    let (chance_to_beat_control, risk_ship, risk_keep) = match better {
        Better::Higher => (normal_cdf(z), down, up),
        Better::Lower => (normal_cdf(-z), up, down),
    };
    Some(Comparison { lift, lift_low, lift_high, chance_to_beat_control, risk_ship, risk_keep, relative })
}

/// Sample-ratio mismatch: Pearson χ² of observed counts against expected shares `weights`
/// (any positive scale; arms with weight 0 — or negative, or not finite — are skipped, and
/// so must have 0 observed or the p-value is 0), p-value = Q((k−1)/2, χ²/2) with k the arms
/// that have weight. `None` when fewer than 2 arms have weight, when the total is 0, or when
/// the slices differ in length.
///
/// gbstats' `check_srm` takes its degrees of freedom from all the arms, weighted or not,
/// and ignores what a zero-weight arm got; with all weights positive the two agree. It
/// returns 1 for a total of 0, where this says `None`.
pub fn srm_p_value(observed: &[u64], weights: &[f64]) -> Option<f64> {
    if observed.len() != weights.len() {
        return None;
    }
    let weighted = |w: f64| w > 0.0 && w.is_finite();
    let k = weights.iter().filter(|w| weighted(**w)).count();
    let total: u64 = observed.iter().sum();
    if k < 2 || total == 0 {
        return None;
    }
    if observed.iter().zip(weights).any(|(o, w)| *o > 0 && !weighted(*w)) {
        return Some(0.0);
    }
    let total_weight: f64 = weights.iter().filter(|w| weighted(**w)).sum();
    let n = total as f64;
    let chi2: f64 = observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| weighted(**w))
        .map(|(o, w)| {
            let e = n * w / total_weight;
            let d = *o as f64 - e;
            d * d / e
        })
        .sum();
    Some(gamma_q((k - 1) as f64 / 2.0, chi2 / 2.0).clamp(0.0, 1.0))
}

/// Relative accuracy of the incomplete gamma's series and continued fraction.
const GAMMA_EPS: f64 = 1e-15;
/// Lentz's guard against division by zero.
const GAMMA_FPMIN: f64 = 1e-300;
const GAMMA_ITMAX: usize = 10_000;

/// The regularized upper incomplete gamma function Q(a, x) = Γ(a, x)/Γ(a), a > 0, x ≥ 0
/// (Numerical Recipes' `gammq`): 1 − the series of P(a, x) for x < a + 1, else the
/// continued fraction of Q evaluated by the modified Lentz method. NaN outside the domain.
fn gamma_q(a: f64, x: f64) -> f64 {
    if !(a > 0.0 && a.is_finite() && x >= 0.0) {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    // x^a e^−x / Γ(a), in log space.
    let log_front = -x + a * x.ln() - libm::lgamma(a);
    if x < a + 1.0 {
        // P(a, x) = x^a e^−x / Γ(a) · Σ xⁿ / (a (a+1) … (a+n)).
        let mut ap = a;
        let mut term = 1.0 / a;
        let mut sum = term;
        for _ in 0..GAMMA_ITMAX {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * GAMMA_EPS {
                break;
            }
        }
        1.0 - sum * log_front.exp()
    } else {
        // Q(a, x) = x^a e^−x / Γ(a) · 1/(x+1−a− 1·(1−a)/(x+3−a− 2·(2−a)/(x+5−a− …))).
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / GAMMA_FPMIN;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=GAMMA_ITMAX {
            let i = i as f64;
            let an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < GAMMA_FPMIN {
                d = GAMMA_FPMIN;
            }
            c = b + an / c;
            if c.abs() < GAMMA_FPMIN {
                c = GAMMA_FPMIN;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < GAMMA_EPS {
                break;
            }
        }
        log_front.exp() * h
    }
}

/// A standard normal draw (Box–Muller; `1 − u` keeps the logarithm finite).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// P(each arm is the best) by seeded Monte Carlo over the arms' normal posteriors of their
/// means (flat prior: N(x̄, s²/n); for LogMean the mean of ln x, which orders the arms as
/// their geometric means do); arms with n < 2 get 0. Deterministic for a given seed.
/// `draws` e.g. 10_000. The result sums to 1 when at least one arm has n ≥ 2 (and
/// `draws` > 0), else it is all zeros. Ties (arms with a variance of 0) go to the first.
pub fn chance_to_be_best(arms: &[Sample], kind: Kind, better: Better, draws: u32, seed: u64) -> Vec<f64> {
    let sign = match better {
        Better::Higher => 1.0,
        Better::Lower => -1.0,
    };
    let posteriors: Vec<Option<(f64, f64)>> = arms
        .iter()
        .map(|s| {
            if s.n < 2 {
                return None;
            }
            moments(s, kind).map(|(mean, var)| (sign * mean, (var / s.n as f64).sqrt()))
        })
        .collect();
    let mut wins = vec![0u64; arms.len()];
    if draws == 0 || posteriors.iter().all(Option::is_none) {
        return vec![0.0; arms.len()];
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..draws {
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in posteriors.iter().enumerate() {
            if let Some((mean, sd)) = p {
                let x = mean + sd * standard_normal(&mut rng);
                if best.is_none_or(|(_, b)| x > b) {
                    best = Some((i, x));
                }
            }
        }
        if let Some((i, _)) = best {
            wins[i] += 1;
        }
    }
    wins.iter().map(|w| *w as f64 / f64::from(draws)).collect()
}

/// Standard normal CDF, Φ(x) = erfc(−x/√2)/2 (accurate in the tails too).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

// Wichura's AS241 (PPND16) coefficients, highest power first (for `horner`): A/B for
// |p − ½| ≤ 0.425, C/D for r = √(−ln min(p, 1−p)) ≤ 5, E/F beyond.
const AS241_A: [f64; 8] = [
    2509.0809287301227,
    33430.57558358813,
    67265.7709270087,
    45921.95393154987,
    13731.69376550946,
    1971.5909503065513,
    133.14166789178438,
    3.3871328727963665,
];
const AS241_B: [f64; 8] = [
    5226.495278852854,
    28729.085735721943,
    39307.89580009271,
    21213.794301586597,
    5394.196021424751,
    687.1870074920579,
    42.31333070160091,
    1.0,
];
const AS241_C: [f64; 8] = [
    0.0007745450142783414,
    0.022723844989269184,
    0.2417807251774506,
    1.2704582524523684,
    3.6478483247632045,
    5.769497221460691,
    4.630337846156546,
    1.4234371107496835,
];
const AS241_D: [f64; 8] = [
    1.0507500716444169e-09,
    0.0005475938084995345,
    0.015198666563616457,
    0.14810397642748008,
    0.6897673349851,
    1.6763848301838038,
    2.053191626637759,
    1.0,
];
const AS241_E: [f64; 8] = [
    2.0103343992922881e-07,
    2.7115555687434876e-05,
    0.0012426609473880784,
    0.026532189526576124,
    0.29656057182850487,
    1.7848265399172913,
    5.463784911164114,
    6.657904643501103,
];
const AS241_F: [f64; 8] = [
    2.0442631033899397e-15,
    1.421511758316446e-07,
    1.8463183175100548e-05,
    0.0007868691311456133,
    0.014875361290850615,
    0.1369298809227358,
    0.599832206555888,
    1.0,
];

/// A polynomial with coefficients from the highest power down, at `x`.
fn horner(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, c| acc * x + c)
}

/// The standard normal quantile Φ⁻¹(p), by Wichura's algorithm AS241 (PPND16, relative
/// accuracy about 1e-16). −∞ for p ≤ 0, +∞ for p ≥ 1, NaN for NaN.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&AS241_A, r) / horner(&AS241_B, r);
    }
    let r = (-(if q < 0.0 { p } else { 1.0 - p }).ln()).sqrt();
    let x = if r <= 5.0 {
        horner(&AS241_C, r - 1.6) / horner(&AS241_D, r - 1.6)
    } else {
        horner(&AS241_E, r - 5.0) / horner(&AS241_F, r - 5.0)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

/// The decision thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The chance to beat control a winner needs, e.g. 0.95; 1 − it makes a clear loser.
    pub chance_to_win: f64,
    /// The expected loss tolerated, e.g. 0.01, in relative-lift units (absolute units for a
    /// comparison that is not relative).
    pub max_loss: f64,
    /// Samples per arm on the primary metric before anything but "keep running".
    pub min_samples: u64,
    /// Below this sample-ratio p-value nothing is recommended, e.g. 0.001.
    pub srm_alpha: f64,
}

/// What to do with the experiment.
#[derive(Debug, Clone, PartialEq)]
pub enum Recommendation {
    /// Ship arm `arm` (an index into the arms passed, never the control).
    Ship { arm: usize },
    /// Every arm is worse or no better: keep the control.
    KeepControl,
    /// Not decided; the samples per arm still needed to reach `min_samples` (0 if already
    /// reached) and a projection of the samples per arm the current effect would need to
    /// reach the chance-to-win threshold (None when the effect is ~0 or points the wrong
    /// way).
    KeepRunning { min_samples_short: u64, projected_per_arm: Option<u64> },
    /// The sample-ratio check failed (p < srm_alpha): no recommendation.
    Withheld { srm_p_value: f64 },
}

/// What a metric is for in the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The metric the decision is made on (the first one, if several are marked so).
    Primary,
    /// Reported, not decided on.
    Secondary,
    /// An arm that clearly loses on it is never shipped.
    Guardrail,
}

/// One metric's samples per arm, for [`recommend`].
#[derive(Debug, Clone, Copy)]
pub struct MetricInput<'a> {
    pub kind: Kind,
    pub better: Better,
    pub role: Role,
    /// Per arm, in the same order for every metric.
    pub arms: &'a [Sample],
}

/// The samples per arm that the comparison `c` of `control` and `treatment` projects for
/// its chance to beat control to reach `chance_to_win`: z grows as √n when both arms grow
/// in proportion, so n · (z_threshold / z_now)² with n the larger arm, and never less than
/// that n. `None` when z_now ≤ 0.
fn projection(c: &Comparison, control: &Sample, treatment: &Sample, chance_to_win: f64) -> Option<u64> {
    let z_now = normal_quantile(c.chance_to_beat_control);
    let z_threshold = normal_quantile(chance_to_win).max(0.0);
    if z_now.is_nan() || z_now <= 0.0 || z_threshold.is_nan() {
        return None;
    }
    let n = control.n.max(treatment.n);
    let needed = (n as f64 * (z_threshold / z_now).powi(2)).ceil();
    // A float-to-int `as` saturates: an infinite need is u64::MAX.
    needed.is_finite().then(|| (needed as u64).max(n))
}

/// The recommendation. `metrics[i].arms[control]` is the control (the same index on every
/// metric); `srm` is the sample-ratio p-value (None: not computable, do not withhold).
///
/// 1. SRM p < srm_alpha → `Withheld`.
/// 2. The primary metric is the first with [`Role::Primary`]; without one, or without the
///    control's arm on it, nothing can be decided (`KeepRunning` with no projection).
///    [`Role::Secondary`] metrics play no part. No arm but the control → `KeepControl`.
/// 3. Any arm below `min_samples` on the primary metric → `KeepRunning` (never `Ship`
///    below `min_samples`), with the projection below.
/// 4. A candidate arm T ships when, on the primary, chance_to_beat_control ≥ chance_to_win
///    and risk_ship ≤ max_loss, and on no guardrail metric is T a clear loser
///    (chance_to_beat_control ≤ 1 − chance_to_win). Among several candidates the one with
///    the highest [`chance_to_be_best`] on the primary (10,000 draws, `seed`) ships.
/// 5. `KeepControl` when every arm is rejected: a clear guardrail loser, or a clear loser
///    on the primary (chance_to_beat_control ≤ 1 − chance_to_win) with risk_keep ≤ max_loss.
/// 6. Otherwise `KeepRunning`, projecting from the arm (not a guardrail loser) with the
///    highest chance to beat control on the primary: n · (z_threshold / z_now)² with
///    z_now = Φ⁻¹(its chance), z_threshold = Φ⁻¹(chance_to_win), n the larger of its and
///    the control's samples (and never less than n); None if z_now ≤ 0. It projects the
///    chance to win only, not the loss.
///
/// An arm whose comparison cannot be computed (`compare` gives None: n < 2, no variance)
/// is neither a winner nor a loser on that metric.
pub fn recommend(
    metrics: &[MetricInput],
    control: usize,
    srm: Option<f64>,
    t: &Thresholds,
    seed: u64,
) -> Recommendation {
    if let Some(p) = srm {
        if p < t.srm_alpha {
            return Recommendation::Withheld { srm_p_value: p };
        }
    }
    let undecided = Recommendation::KeepRunning { min_samples_short: 0, projected_per_arm: None };
    let Some(primary) = metrics.iter().find(|m| m.role == Role::Primary) else {
        return undecided;
    };
    let arms = primary.arms;
    let Some(ctrl) = arms.get(control) else {
        return undecided;
    };
    let lose = 1.0 - t.chance_to_win;
    // Per treatment arm: its index, its comparison on the primary, whether it clearly loses
    // on a guardrail.
    let verdicts: Vec<(usize, Option<Comparison>, bool)> = arms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != control)
        .map(|(i, arm)| {
            let cmp = compare(ctrl, arm, primary.kind, primary.better);
            let guard_loser = metrics.iter().filter(|m| m.role == Role::Guardrail).any(|g| {
                match (g.arms.get(control), g.arms.get(i)) {
                    (Some(c), Some(x)) => {
                        compare(c, x, g.kind, g.better).is_some_and(|r| r.chance_to_beat_control <= lose)
                    }
                    _ => false,
                }
            });
            (i, cmp, guard_loser)
        })
        .collect();
    if verdicts.is_empty() {
        return Recommendation::KeepControl;
    }
    let projected_per_arm = verdicts
        .iter()
        .filter(|(_, _, guard_loser)| !guard_loser)
        .filter_map(|(i, cmp, _)| cmp.map(|c| (*i, c)))
        .fold(None, |best: Option<(usize, Comparison)>, (i, c)| match best {
            Some((_, b)) if b.chance_to_beat_control >= c.chance_to_beat_control => best,
            _ => Some((i, c)),
        })
        .and_then(|(i, c)| projection(&c, ctrl, &arms[i], t.chance_to_win));
    let min_samples_short = arms.iter().map(|a| t.min_samples.saturating_sub(a.n)).max().unwrap_or(0);
    if min_samples_short > 0 {
        return Recommendation::KeepRunning { min_samples_short, projected_per_arm };
    }
    let candidates: Vec<usize> = verdicts
        .iter()
        .filter(|(_, cmp, guard_loser)| {
            !guard_loser
                && cmp.is_some_and(|c| c.chance_to_beat_control >= t.chance_to_win && c.risk_ship <= t.max_loss)
        })
        .map(|(i, _, _)| *i)
        .collect();
    match candidates.as_slice() {
        [] => {}
        [arm] => return Recommendation::Ship { arm: *arm },
        several => {
            let best = chance_to_be_best(arms, primary.kind, primary.better, BEST_DRAWS, seed);
            let pick = several.iter().copied().fold(several[0], |a, b| {
                if best.get(b).copied().unwrap_or(0.0) > best.get(a).copied().unwrap_or(0.0) {
                    b
                } else {
                    a
                }
            });
            return Recommendation::Ship { arm: pick };
        }
    }
    let all_rejected = verdicts.iter().all(|(_, cmp, guard_loser)| {
        *guard_loser || cmp.is_some_and(|c| c.chance_to_beat_control <= lose && c.risk_keep <= t.max_loss)
    });
    if all_rejected {
        return Recommendation::KeepControl;
    }
    Recommendation::KeepRunning { min_samples_short: 0, projected_per_arm }
}

#[cfg(test)]
mod tests;
