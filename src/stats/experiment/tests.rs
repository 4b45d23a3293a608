//! The experiment statistics against GrowthBook's gbstats (fixtures made by
//! tests/fixtures/experiments/make_fixtures.py), and seeded simulations of the decision
//! rule: A/A experiments rarely ship, the sample-ratio check catches a 45/55 split, real
//! effects ship and bad arms are rolled back.

use super::*;
use serde_json::Value;

const FIXTURES: &str = include_str!("../../../tests/fixtures/experiments/gbstats.json");

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).expect("gbstats.json parses")
}

/// 1e-6 absolute, or relative for values beyond 1; returns the (scaled) error.
fn assert_close(case: &str, field: &str, got: f64, want: f64) -> f64 {
    let scale = want.abs().max(1.0);
    assert!(
        (got - want).abs() <= 1e-6 * scale,
        "{case}: {field} = {got}, gbstats says {want} (off by {:e})",
        (got - want).abs()
    );
    (got - want).abs() / scale
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

fn sample(v: &Value) -> Sample {
    Sample { n: v["n"].as_u64().expect("n"), sum: num(v, "sum"), sumsq: num(v, "sumsq") }
}

fn prop(successes: u64, n: u64) -> Sample {
    Sample { n, sum: successes as f64, sumsq: successes as f64 }
}

/// A sample with exactly this mean and sample standard deviation.
fn with_moments(n: u64, mean: f64, sd: f64) -> Sample {
    let nf = n as f64;
    Sample { n, sum: nf * mean, sumsq: (nf - 1.0) * sd * sd + nf * mean * mean }
}

fn push(s: &mut Sample, x: f64) {
    s.n += 1;
    s.sum += x;
    s.sumsq += x * x;
}

#[test]
fn compare_matches_gbstats() {
    let f = fixtures();
    assert!(f["gbstats_version"].as_str().is_some_and(|v| !v.is_empty()));
    let cases = f["compare"].as_array().expect("compare cases");
    assert!(cases.len() >= 30, "{} compare cases", cases.len());
    let mut worst = 0.0f64;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let kind = match case["kind"].as_str() {
            Some("proportion") => Kind::Proportion,
            Some("mean") => Kind::Mean,
            Some("log_mean") => Kind::LogMean,
            other => panic!("{name}: kind {other:?}"),
        };
        let better = match case["better"].as_str() {
            Some("higher") => Better::Higher,
            Some("lower") => Better::Lower,
            other => panic!("{name}: better {other:?}"),
        };
        let got = compare(&sample(&case["control"]), &sample(&case["treatment"]), kind, better)
            .unwrap_or_else(|| panic!("{name}: compare gave None"));
        let want = &case["expected"];
        for (field, value) in [
            ("lift", got.lift),
            ("lift_low", got.lift_low),
            ("lift_high", got.lift_high),
            ("chance_to_beat_control", got.chance_to_beat_control),
            ("risk_ship", got.risk_ship),
            ("risk_keep", got.risk_keep),
        ] {
            worst = worst.max(assert_close(name, field, value, num(want, field)));
        }
        assert_eq!(got.relative, want["relative"].as_bool().expect("relative"), "{name}: relative");
    }
    eprintln!("{} comparisons against gbstats: largest error {worst:e}", cases.len());
}

#[test]
fn srm_matches_gbstats() {
    let f = fixtures();
    let cases = f["srm"].as_array().expect("srm cases");
    assert!(cases.len() >= 10);
    let mut worst = 0.0f64;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let observed: Vec<u64> =
            case["observed"].as_array().expect("observed").iter().filter_map(Value::as_u64).collect();
        let weights: Vec<f64> = case["weights"].as_array().expect("weights").iter().filter_map(Value::as_f64).collect();
        let got = srm_p_value(&observed, &weights).unwrap_or_else(|| panic!("{name}: None"));
        worst = worst.max(assert_close(name, "p_value", got, num(case, "p_value")));
    }
    eprintln!("{} sample-ratio p-values against gbstats: largest error {worst:e}", cases.len());
}

#[test]
fn normal_quantile_and_cdf_match_scipy() {
    // scipy.stats.norm.ppf / norm.cdf.
    for (p, z) in [
        (1e-300, -37.0470962993612),
        (1e-20, -9.262340089798409),
        (1e-10, -6.361340902404056),
        (1e-5, -4.264890793922825),
        (0.001, -3.090232306167813),
        (0.025, -1.9599639845400545),
        (0.3, -0.5244005127080409),
        (0.5, 0.0),
        (0.7, 0.5244005127080407),
        (0.95, 1.6448536269514722),
        (0.975, 1.959963984540054),
        (0.999, 3.090232306167813),
        (0.999999999999, 7.0344869100478356),
    ] {
        let got = normal_quantile(p);
        assert!((got - z).abs() <= 1e-12 * z.abs().max(1.0), "Φ⁻¹({p}) = {got}, scipy {z}");
    }
    assert!((normal_quantile(0.975) - Z_95).abs() < 1e-15);
    for (x, p) in [
        (-20.0, 2.7536241186061556e-89),
        (-8.0, 6.22096057427174e-16),
        (-1.5, 0.06680720126885807),
        (0.0, 0.5),
        (0.3, 0.6179114221889526),
        (2.0, 0.9772498680518208),
        (6.0, 0.9999999990134123),
    ] {
        let got = normal_cdf(x);
        assert!((got - p).abs() <= 1e-13 * p, "Φ({x}) = {got}, scipy {p}");
    }
    assert!(normal_cdf(-40.0) < 1e-300 && normal_cdf(40.0) == 1.0);
    // Round trip across the range.
    for i in 1..1000 {
        let p = i as f64 / 1000.0;
        assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-14, "round trip at {p}");
    }
    assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    assert_eq!(normal_quantile(1.0), f64::INFINITY);
    assert!(normal_quantile(f64::NAN).is_nan());
}

#[test]
fn incomplete_gamma_matches_chi2_survival() {
    // scipy.stats.chi2.sf(x, df) = Q(df/2, x/2).
    for (df, x, p) in [
        (1.0, 0.5, 0.47950012218695337),
        (1.0, 20.0, 7.744216431044088e-06),
        (2.0, 3.0, 0.22313016014842982),
        (3.0, 7.8, 0.050331097859853326),
        (4.0, 1.0, 0.9097959895689501),
        (4.0, 30.0, 4.894437128029217e-06),
        (9.0, 0.2, 0.9999994432502542),
        (20.0, 25.0, 0.2014311049455359),
        (40.0, 100.0, 4.791357300338064e-07),
        (1.0, 1e-8, 0.9999202115440526),
        (3.0, 200.0, 4.218541107192018e-43),
    ] {
        let got = gamma_q(df / 2.0, x / 2.0);
        assert!((got - p).abs() <= 1e-12 * p, "chi2.sf({x}, {df}) = {got}, scipy {p}");
    }
    // Q(½, x) = erfc(√x) and Q(1, x) = e^−x.
    for x in [0.01, 0.3, 1.0, 1.6, 4.0, 30.0] {
        assert!((gamma_q(0.5, x) - libm::erfc(x.sqrt())).abs() <= 1e-13 * libm::erfc(x.sqrt()));
        assert!((gamma_q(1.0, x) - (-x).exp()).abs() <= 1e-13 * (-x).exp());
    }
    assert_eq!(gamma_q(2.0, 0.0), 1.0);
    assert!(gamma_q(0.0, 1.0).is_nan() && gamma_q(1.0, -1.0).is_nan());
}

const THRESHOLDS: Thresholds = Thresholds { chance_to_win: 0.95, max_loss: 0.01, min_samples: 500, srm_alpha: 0.001 };

fn decide(kind: Kind, better: Better, arms: &[Sample]) -> Recommendation {
    let counts: Vec<u64> = arms.iter().map(|a| a.n).collect();
    let srm = srm_p_value(&counts, &vec![1.0; arms.len()]);
    recommend(&[MetricInput { kind, better, role: Role::Primary, arms }], 0, srm, &THRESHOLDS, 7)
}

#[test]
fn aa_proportions_rarely_ship() {
    let mut rng = fastrand::Rng::with_seed(0xA_A);
    let runs = 1000;
    let mut ships = 0;
    let mut withheld = 0;
    for _ in 0..runs {
        let mut arms = [Sample::default(); 2];
        for _ in 0..4000 {
            let arm = &mut arms[usize::from(rng.bool())];
            push(arm, if rng.f64() < 0.3 { 1.0 } else { 0.0 });
        }
        match decide(Kind::Proportion, Better::Higher, &arms) {
            Recommendation::Ship { .. } => ships += 1,
            Recommendation::Withheld { .. } => withheld += 1,
            _ => {}
        }
    }
    let rate = ships as f64 / runs as f64;
    eprintln!(
        "A/A proportions (p = 0.3, 4,000 requests by a fair coin, 1,000 runs): ship {:.1} %, withheld {withheld}",
        rate * 100.0
    );
    assert!(rate <= 0.05, "A/A shipped in {:.1} % of runs", rate * 100.0);
}

#[test]
fn aa_means_rarely_ship() {
    let mut rng = fastrand::Rng::with_seed(0xA_A_2);
    let runs = 1000;
    let mut ships = 0;
    for _ in 0..runs {
        let mut arms = [Sample::default(); 2];
        for _ in 0..2000 {
            let arm = &mut arms[usize::from(rng.bool())];
            push(arm, 10.0 + 3.0 * standard_normal(&mut rng));
        }
        if let Recommendation::Ship { .. } = decide(Kind::Mean, Better::Higher, &arms) {
            ships += 1;
        }
    }
    let rate = ships as f64 / runs as f64;
    eprintln!("A/A means (N(10, 3²), 2,000 requests by a fair coin, 1,000 runs): ship {:.1} %", rate * 100.0);
    assert!(rate <= 0.05, "A/A shipped in {:.1} % of runs", rate * 100.0);
}

/// The share of `runs` experiments of `requests` split by a coin with P(arm 1) = `p1` in
/// which the sample-ratio check against 50/50 fires.
fn srm_alarm_rate(seed: u64, runs: u32, requests: u32, p1: f64) -> f64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut alarms = 0;
    for _ in 0..runs {
        let mut counts = [0u64; 2];
        for _ in 0..requests {
            counts[usize::from(rng.f64() < p1)] += 1;
        }
        if srm_p_value(&counts, &[50.0, 50.0]).is_some_and(|p| p < 0.001) {
            alarms += 1;
        }
    }
    f64::from(alarms) / f64::from(runs)
}

#[test]
fn srm_catches_a_45_55_split() {
    // With 2,000 requests the expected deviation is 100 against a threshold of ±73.6
    // (χ² > 10.83) and a binomial sd of 22.2: the power is Φ(1.19) ≈ 88 %, not 99 %.
    let at_2000 = srm_alarm_rate(1, 1000, 2000, 0.55);
    // From about 3,200 requests on the power is above 99 % (at 4,000: Φ(3.05) ≈ 99.9 %).
    let at_4000 = srm_alarm_rate(2, 1000, 4000, 0.55);
    let fair = srm_alarm_rate(3, 1000, 2000, 0.5);
    eprintln!(
        "SRM (p < 0.001) on a 45/55 split: {:.1} % of runs at 2,000 requests, {:.1} % at 4,000; false alarms on 50/50 at 2,000: {:.1} %",
        at_2000 * 100.0,
        at_4000 * 100.0,
        fair * 100.0
    );
    assert!((0.84..=0.92).contains(&at_2000), "power at 2,000 requests {at_2000}");
    assert!(at_4000 >= 0.99, "power at 4,000 requests {at_4000}");
    assert!(fair <= 0.005, "false alarm rate {fair}");
}

#[test]
fn a_real_effect_ships_and_the_reverse_keeps_the_control() {
    let better = [prop(600, 1000), prop(700, 1000)];
    assert_eq!(decide(Kind::Proportion, Better::Higher, &better), Recommendation::Ship { arm: 1 });
    let worse = [prop(700, 1000), prop(600, 1000)];
    assert_eq!(decide(Kind::Proportion, Better::Higher, &worse), Recommendation::KeepControl);
    // Lower is better: an error rate that drops ships, one that rises is rolled back.
    let errors_down = [prop(60, 1000), prop(20, 1000)];
    assert_eq!(decide(Kind::Proportion, Better::Lower, &errors_down), Recommendation::Ship { arm: 1 });
    let errors_up = [prop(20, 1000), prop(60, 1000)];
    assert_eq!(decide(Kind::Proportion, Better::Lower, &errors_up), Recommendation::KeepControl);
    // A latency 20 % faster (on the log scale) ships.
    let latency = [with_moments(2000, 0.0, 0.5), with_moments(2000, (0.8f64).ln(), 0.5)];
    assert_eq!(decide(Kind::LogMean, Better::Lower, &latency), Recommendation::Ship { arm: 1 });
}

#[test]
fn nothing_ships_below_min_samples() {
    for n in [2, 10, 50, 100, 300, 499] {
        // A huge effect, still short of the floor in the treatment arm.
        let arms = [prop(n * 3 / 10, 1000), prop(n * 9 / 10, n)];
        let got = recommend(
            &[MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms }],
            0,
            None,
            &THRESHOLDS,
            1,
        );
        match got {
            Recommendation::KeepRunning { min_samples_short, .. } => assert_eq!(min_samples_short, 500 - n),
            other => panic!("n = {n}: {other:?}"),
        }
    }
    let small = [prop(100, 300), prop(120, 300)];
    match decide(Kind::Proportion, Better::Higher, &small) {
        Recommendation::KeepRunning { min_samples_short, projected_per_arm } => {
            assert_eq!(min_samples_short, 200);
            assert!(projected_per_arm.is_some_and(|n| n > 300), "{projected_per_arm:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keep_running_projects_the_samples_needed() {
    // ctbc ≈ 0.92 at 1,000 per arm: z_now ≈ 1.38, so about (1.645 / 1.38)² ≈ 1.42 × 1,000.
    let arms = [prop(300, 1000), prop(330, 1000)];
    let c = compare(&arms[0], &arms[1], Kind::Proportion, Better::Higher).expect("comparable");
    let expected = (1000.0 * (normal_quantile(0.95) / normal_quantile(c.chance_to_beat_control)).powi(2)).ceil() as u64;
    assert_eq!(
        decide(Kind::Proportion, Better::Higher, &arms),
        Recommendation::KeepRunning { min_samples_short: 0, projected_per_arm: Some(expected) }
    );
    assert!((1300..1600).contains(&expected), "{expected}");
    // A small effect the wrong way, not yet a clear loser: no projection.
    let arms = [prop(330, 1000), prop(320, 1000)];
    assert_eq!(
        decide(Kind::Proportion, Better::Higher, &arms),
        Recommendation::KeepRunning { min_samples_short: 0, projected_per_arm: None }
    );
}

#[test]
fn the_best_of_several_winners_ships() {
    let arms = [prop(1000, 2000), prop(1200, 2000), prop(1300, 2000)];
    for arm in 1..3 {
        let c = compare(&arms[0], &arms[arm], Kind::Proportion, Better::Higher).expect("comparable");
        assert!(c.chance_to_beat_control >= 0.95 && c.risk_ship <= 0.01, "arm {arm} is a candidate: {c:?}");
    }
    assert_eq!(decide(Kind::Proportion, Better::Higher, &arms), Recommendation::Ship { arm: 2 });
    // The control need not be arm 0.
    let arms = [prop(1300, 2000), prop(1000, 2000), prop(1200, 2000)];
    let got = recommend(
        &[MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms }],
        1,
        None,
        &THRESHOLDS,
        3,
    );
    assert_eq!(got, Recommendation::Ship { arm: 0 });
}

#[test]
fn a_guardrail_loser_never_ships() {
    let primary = [prop(600, 1000), prop(700, 1000)];
    let errors = [prop(10, 1000), prop(40, 1000)];
    let ok_errors = [prop(10, 1000), prop(11, 1000)];
    let secondary = [prop(700, 1000), prop(600, 1000)];
    let metric = |role, better, arms| MetricInput { kind: Kind::Proportion, better, role, arms };
    let with_guard = |guard| {
        recommend(
            &[
                metric(Role::Primary, Better::Higher, &primary[..]),
                metric(Role::Guardrail, Better::Lower, guard),
                // A secondary loser plays no part.
                metric(Role::Secondary, Better::Higher, &secondary[..]),
            ],
            0,
            None,
            &THRESHOLDS,
            9,
        )
    };
    assert_eq!(with_guard(&errors[..]), Recommendation::KeepControl);
    assert_eq!(with_guard(&ok_errors[..]), Recommendation::Ship { arm: 1 });
}

#[test]
fn a_sample_ratio_mismatch_withholds() {
    let arms = [prop(600, 1000), prop(700, 1000)];
    let got = recommend(
        &[MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms }],
        0,
        Some(1e-5),
        &THRESHOLDS,
        1,
    );
    assert_eq!(got, Recommendation::Withheld { srm_p_value: 1e-5 });
    // Uncomputable (None): not withheld.
    let got = recommend(
        &[MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms }],
        0,
        None,
        &THRESHOLDS,
        1,
    );
    assert_eq!(got, Recommendation::Ship { arm: 1 });
}

#[test]
fn chance_to_be_best_sums_to_one_and_is_deterministic() {
    let arms = [prop(500, 1000), prop(520, 1000), prop(510, 1000), prop(0, 1), with_moments(1000, 0.49, 0.5)];
    let a = chance_to_be_best(&arms, Kind::Proportion, Better::Higher, 10_000, 42);
    assert_eq!(a.len(), arms.len());
    assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{a:?}");
    assert_eq!(a[3], 0.0, "n < 2 gets 0");
    assert!(a.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(a[1] > a[2] && a[2] > a[0], "{a:?}");
    assert_eq!(a, chance_to_be_best(&arms, Kind::Proportion, Better::Higher, 10_000, 42));
    assert_ne!(a, chance_to_be_best(&arms, Kind::Proportion, Better::Higher, 10_000, 43));
    // Lower is better turns the order round.
    let low = chance_to_be_best(&arms, Kind::Proportion, Better::Lower, 10_000, 42);
    assert!(low[0] > low[2] && low[2] > low[1], "{low:?}");
    // Two clearly separated arms.
    let clear = chance_to_be_best(&[prop(100, 1000), prop(300, 1000)], Kind::Proportion, Better::Higher, 1000, 1);
    assert_eq!(clear, vec![0.0, 1.0]);
    // Nothing to draw from.
    assert_eq!(chance_to_be_best(&[prop(0, 0), prop(1, 1)], Kind::Mean, Better::Higher, 100, 1), vec![0.0, 0.0]);
    assert_eq!(chance_to_be_best(&arms, Kind::Mean, Better::Higher, 0, 1), vec![0.0; 5]);
}

#[test]
fn arm_intervals() {
    // Wilson's score interval: 30 of 100 is [0.2189, 0.3958] (the textbook figures).
    let (m, lo, hi) = arm_interval(&prop(30, 100), Kind::Proportion).expect("interval");
    assert!((m - 0.3).abs() < 1e-15 && (lo - 0.21886).abs() < 1e-4 && (hi - 0.39577).abs() < 1e-4, "{lo} {hi}");
    // Never outside [0, 1], never empty at 0 or n events.
    let (_, lo, hi) = arm_interval(&prop(0, 10), Kind::Proportion).expect("interval");
    assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{lo} {hi}");
    let (_, lo, hi) = arm_interval(&prop(3, 4), Kind::Proportion).expect("interval");
    assert!(lo > 0.0 && hi <= 1.0, "{lo} {hi}");
    assert!(arm_interval(&prop(1, 1), Kind::Proportion).is_some());
    assert!(arm_interval(&prop(0, 0), Kind::Proportion).is_none());
    assert!(arm_interval(&Sample { n: 1, sum: 3.0, sumsq: 9.0 }, Kind::Mean).is_none());
    let (m, lo, hi) = arm_interval(&with_moments(100, 10.0, 2.0), Kind::Mean).expect("interval");
    assert!((m - 10.0).abs() < 1e-12 && (hi - m - Z_95 * 0.2).abs() < 1e-12 && (m - lo - Z_95 * 0.2).abs() < 1e-12);
    // Log means: the geometric mean and exp of the bounds.
    let (g, lo, hi) = arm_interval(&with_moments(400, (0.25f64).ln(), 0.4), Kind::LogMean).expect("interval");
    assert!((g - 0.25).abs() < 1e-12);
    assert!((lo - 0.25 * (-Z_95 * 0.02f64).exp()).abs() < 1e-12 && (hi - 0.25 * (Z_95 * 0.02f64).exp()).abs() < 1e-12);
}

#[test]
fn edge_cases() {
    let ok = prop(300, 1000);
    // n = 0 / 1.
    for tiny in [Sample::default(), prop(1, 1), Sample { n: 1, sum: 2.0, sumsq: 4.0 }] {
        for kind in [Kind::Proportion, Kind::Mean, Kind::LogMean] {
            assert!(compare(&ok, &tiny, kind, Better::Higher).is_none());
            assert!(compare(&tiny, &ok, kind, Better::Higher).is_none());
        }
    }
    assert_eq!(Sample::default().mean(), None);
    assert_eq!(prop(1, 1).variance(), None);
    assert_eq!(with_moments(10, 2.0, 0.0).variance(), Some(0.0));
    // A variance of 0 in both arms.
    assert!(compare(&prop(0, 1000), &prop(0, 1000), Kind::Proportion, Better::Lower).is_none());
    assert!(compare(&prop(1000, 1000), &prop(1000, 1000), Kind::Proportion, Better::Higher).is_none());
    assert!(compare(&with_moments(10, 2.0, 0.0), &with_moments(10, 3.0, 0.0), Kind::Mean, Better::Higher).is_none());
    // A variance of 0 in one arm only: the other carries it.
    let c = compare(&prop(50, 1000), &prop(1000, 1000), Kind::Proportion, Better::Higher).expect("comparable");
    assert!(c.relative && c.chance_to_beat_control > 0.999);
    // Control mean 0: the absolute difference.
    let c = compare(&prop(0, 1000), &prop(5, 1000), Kind::Proportion, Better::Lower).expect("comparable");
    assert!(!c.relative);
    assert!((c.lift - 0.005).abs() < 1e-15 && c.chance_to_beat_control < 0.05);
    // A treatment with no events against a control with some: the delta method's variance
    // is 0, so the absolute difference too.
    let c = compare(&prop(5, 1000), &prop(0, 1000), Kind::Proportion, Better::Lower).expect("comparable");
    assert!(!c.relative && (c.lift + 0.005).abs() < 1e-15 && c.chance_to_beat_control > 0.95);
    // A negative control mean keeps the orientation: higher is better, and −4.8 > −5.
    let c = compare(&with_moments(400, -5.0, 2.0), &with_moments(400, -4.8, 2.0), Kind::Mean, Better::Higher)
        .expect("comparable");
    assert!(c.relative && (c.lift - 0.04).abs() < 1e-12 && c.chance_to_beat_control > 0.9);
    // Not finite, or not a proportion.
    let nan = Sample { n: 10, sum: f64::NAN, sumsq: 1.0 };
    assert!(compare(&ok, &nan, Kind::Mean, Better::Higher).is_none());
    assert!(compare(&ok, &Sample { n: 10, sum: 11.0, sumsq: 11.0 }, Kind::Proportion, Better::Higher).is_none());
    assert!(arm_interval(&nan, Kind::Mean).is_none());
    assert_eq!(chance_to_be_best(&[ok, nan], Kind::Mean, Better::Higher, 100, 1), vec![1.0, 0.0]);
    // Probabilities and losses are never NaN, and losses never negative, across extremes.
    for (c, t) in [
        (prop(1, 2), prop(2, 3)),
        (prop(1, 1_000_000), prop(999_999, 1_000_000)),
        (with_moments(2, 1e-300, 1e-300), with_moments(2, 1e300, 1e150)),
        (with_moments(1_000_000, 1.0, 1e-9), with_moments(1_000_000, 1.0 + 1e-6, 1e-9)),
    ] {
        for kind in [Kind::Proportion, Kind::Mean, Kind::LogMean] {
            for better in [Better::Higher, Better::Lower] {
                if let Some(r) = compare(&c, &t, kind, better) {
                    assert!((0.0..=1.0).contains(&r.chance_to_beat_control), "{r:?}");
                    assert!(r.risk_ship >= 0.0 && r.risk_keep >= 0.0, "{r:?}");
                }
            }
        }
    }
    // The sample-ratio check's own edges.
    assert_eq!(srm_p_value(&[10], &[1.0]), None);
    assert_eq!(srm_p_value(&[0, 0], &[1.0, 1.0]), None);
    assert_eq!(srm_p_value(&[5, 5], &[1.0, 0.0]), None);
    assert_eq!(srm_p_value(&[5, 5], &[1.0]), None);
    assert_eq!(srm_p_value(&[500, 500, 3], &[1.0, 1.0, 0.0]), Some(0.0));
    let skipped = srm_p_value(&[500, 520, 0], &[1.0, 1.0, 0.0]).expect("p");
    assert_eq!(Some(skipped), srm_p_value(&[500, 520], &[1.0, 1.0]));
    let p = srm_p_value(&[u64::MAX / 4, 1], &[1.0, 1.0]).expect("p");
    assert!((0.0..=1.0).contains(&p));
    // The decision's edges: no primary metric, a control out of range, only the control.
    let arms = [prop(600, 1000), prop(700, 1000)];
    let secondary =
        [MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Secondary, arms: &arms }];
    let undecided = Recommendation::KeepRunning { min_samples_short: 0, projected_per_arm: None };
    assert_eq!(recommend(&secondary, 0, None, &THRESHOLDS, 1), undecided);
    let primary = [MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms }];
    assert_eq!(recommend(&primary, 2, None, &THRESHOLDS, 1), undecided);
    let alone = [MetricInput { kind: Kind::Proportion, better: Better::Higher, role: Role::Primary, arms: &arms[..1] }];
    assert_eq!(recommend(&alone, 0, None, &THRESHOLDS, 1), Recommendation::KeepControl);
    // Arms that cannot be compared (no variance anywhere) stay undecided.
    let flat = [prop(0, 1000), prop(0, 1000)];
    assert_eq!(decide(Kind::Proportion, Better::Lower, &flat), undecided);
}
