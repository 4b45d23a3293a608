//! Seeded simulations of the guards' tests: A/A false trips stay within α when checked
//! every 200 requests; real regressions are caught; nothing trips below the floor.

use super::*;

/// One arm's sufficient statistics.
#[derive(Default, Clone, Copy)]
struct Arm {
    n: u64,
    errors: u64,
    ok: u64,
    sum: f64,
    sumsq: f64,
}

impl Arm {
    fn latency(&self) -> LogMoments {
        LogMoments::from_sums(self.ok, self.sum, self.sumsq)
    }
}

/// What differs between the arms.
#[derive(Clone, Copy)]
struct World {
    share: f64,
    error: (f64, f64),
    /// Mean of ln(latency s) per arm; the spread is the same.
    log_mean: (f64, f64),
    log_sd: f64,
}

const ALPHA: f64 = 0.05;
/// Two metrics share α.
const METRIC_ALPHA: f64 = ALPHA / 2.0;
const FLOOR: u64 = 500;

fn error_test() -> Test {
    Test { alpha: METRIC_ALPHA, margin: Margin::Absolute(0.0), tau: None, direction: Direction::Increase }
}

fn latency_test() -> Test {
    Test { alpha: METRIC_ALPHA, margin: Margin::Relative(0.10), tau: None, direction: Direction::Increase }
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box–Muller.
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Run `requests` requests, checking every `every`; the request at which a metric tripped
/// ("error" or "latency"), if any.
fn run(world: World, seed: u64, requests: u64, every: u64) -> Option<(u64, &'static str)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut c, mut t) = (Arm::default(), Arm::default());
    for i in 1..=requests {
        let treated = rng.f64() < world.share;
        let (arm, p, mu) =
            if treated { (&mut t, world.error.1, world.log_mean.1) } else { (&mut c, world.error.0, world.log_mean.0) };
        arm.n += 1;
        if rng.f64() < p {
            arm.errors += 1;
        } else {
            let l = mu + world.log_sd * normal(&mut rng);
            arm.ok += 1;
            arm.sum += l;
            arm.sumsq += l * l;
        }
        if i % every == 0 {
            let enough = c.n >= FLOOR && t.n >= FLOOR;
            let e = proportions((c.errors, c.n), (t.errors, t.n), &error_test());
            if decide(&e, METRIC_ALPHA, enough) == Decision::Trip {
                return Some((i, "error"));
            }
            let l = log_means(&c.latency(), &t.latency(), &latency_test());
            if decide(&l, METRIC_ALPHA, enough) == Decision::Trip {
                return Some((i, "latency"));
            }
        }
    }
    None
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

const EQUAL: World = World { share: 0.5, error: (0.01, 0.01), log_mean: (-0.5, -0.5), log_sd: 0.6 };

#[test]
fn a_a_false_trips_stay_within_alpha_under_continuous_monitoring() {
    let runs = 200;
    let trips = (0..runs).filter(|seed| run(EQUAL, 1000 + seed, 50_000, 200).is_some()).count();
    // α = 5 %; allow binomial noise: mean 10 of 200 at most, 3 standard deviations ≈ 19.
    let limit = (runs as f64 * ALPHA + 3.0 * (runs as f64 * ALPHA * (1.0 - ALPHA)).sqrt()).ceil() as usize;
    eprintln!("A/A: {trips} of {runs} runs tripped (limit {limit})");
    assert!(trips <= limit, "{trips} false trips in {runs} runs");
    // And at a small treatment share too.
    let small = World { share: 0.05, ..EQUAL };
    let trips = (0..runs).filter(|seed| run(small, 5000 + seed, 50_000, 200).is_some()).count();
    eprintln!("A/A at a 5% share: {trips} of {runs} runs tripped");
    assert!(trips <= limit, "{trips} false trips in {runs} runs at a 5% share");
}

#[test]
fn an_error_rate_from_1_to_3_percent_at_a_5_percent_share_is_caught() {
    let world = World { share: 0.05, error: (0.01, 0.03), ..EQUAL };
    let results: Vec<_> = (0..200).map(|seed| run(world, 2000 + seed, 50_000, 200)).collect();
    let caught: Vec<u64> = results.iter().filter_map(|r| r.filter(|(_, m)| *m == "error").map(|(i, _)| i)).collect();
    eprintln!(
        "errors 1% → 3% at 5%: caught in {} of 200 runs, median at request {}",
        caught.len(),
        median(caught.clone())
    );
    assert!(caught.len() >= 190, "caught in {} of 200 runs", caught.len());
}

#[test]
fn a_30_percent_latency_shift_is_caught() {
    let world = World { share: 0.05, log_mean: (-0.5, -0.5 + 1.3f64.ln()), ..EQUAL };
    let results: Vec<_> = (0..200).map(|seed| run(world, 3000 + seed, 50_000, 200)).collect();
    let caught: Vec<u64> = results.iter().filter_map(|r| r.filter(|(_, m)| *m == "latency").map(|(i, _)| i)).collect();
    eprintln!(
        "latency +30% at 5%: caught in {} of 200 runs, median at request {}",
        caught.len(),
        median(caught.clone())
    );
    assert!(caught.len() >= 190, "caught in {} of 200 runs", caught.len());
}

#[test]
fn nothing_trips_below_the_floor() {
    // A blatant regression, but the treatment never reaches 500 requests.
    let world = World { share: 0.05, error: (0.01, 0.5), log_mean: (-0.5, 1.0), ..EQUAL };
    for seed in 0..50 {
        assert_eq!(run(world, 4000 + seed, 8_000, 200), None, "seed {seed}");
    }
}

#[test]
fn the_formula_and_the_interval_agree() {
    // Λ ≥ 1/α exactly when δ lies outside the always-valid interval.
    let test = Test { alpha: 0.05, margin: Margin::Absolute(0.0), tau: Some(0.01), direction: Direction::Increase };
    for (xt, nt) in [(30, 1000), (15, 1000), (12, 1000), (60, 2000)] {
        let e = proportions((100, 10_000), (xt, nt), &test);
        let outside = e.margin < e.low || e.margin > e.high;
        assert_eq!(e.lambda >= 20.0, outside, "{e:?}");
    }
    // Direction: a drop counts when less is worse.
    let down = Test { direction: Direction::Decrease, ..test };
    let e = proportions((500, 10_000), (10, 1000), &down);
    assert!(e.delta > 0.0 && decide(&e, 0.05, true) == Decision::Trip, "{e:?}");
    // Relative margins.
    let rel = Test { margin: Margin::Relative(0.5), ..test };
    assert!((proportions((100, 10_000), (0, 10), &rel).margin - 0.005).abs() < 1e-12);
    // Plain means (tokens per request).
    let tokens = Test { margin: Margin::Relative(0.1), tau: None, ..test };
    let e = means((1000, 200_000.0, 44_000_000.0), (1000, 300_000.0, 94_000_000.0), &tokens);
    assert_eq!(decide(&e, 0.05, true), Decision::Trip, "{e:?}");
    assert_eq!(decide(&e, 0.05, false), Decision::Insufficient);
}
