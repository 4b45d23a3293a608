//! Property tests of the targeting engine (`sluice::flags`): what a user of sluice can
//! rely on when serving and ramping flags.
//!
//! - **Determinism**: a flag's answer (value, variation and reason) depends only on the
//!   flag data and the context. Evaluating again, compiling the same data again (or
//!   after a round trip through LaunchDarkly JSON) never changes it.
//! - **Ramp stability**: in a percentage rollout, raising the weight of the FIRST or the
//!   LAST variation never takes a context out of it. A context that got the treatment
//!   keeps it while the treatment is ramped up, which is why sluice keeps a treatment
//!   first or last. A MIDDLE variation has no such guarantee (see the two plain tests
//!   `middle_arm_*`).
//! - **Distribution**: over many contexts, each variation's share matches its weight,
//!   down to a 0.1% arm.
//! - **Multi-kind bucketing**: a rollout by `org` buckets a multi-kind context exactly as
//!   its `org` alone, whatever the other kinds are. A context without an `org` takes
//!   bucket 0 and is never counted in an experiment.
//! - **LaunchDarkly parity**: the bucket is LaunchDarkly's
//!   `SHA-1("{flag}.{salt}.{key}")`, or `SHA-1("{seed}.{key}")` when the rollout has a
//!   seed. So the same flag data gives the same split in sluice as in LaunchDarkly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice::flags::bucket::bucket;
use sluice::flags::model::{Clause, Flag, FlagRule, Rollout, Target, VariationOrRollout, WeightedVariation};
use sluice::flags::{Context, Detail, FlagData, FlagSet, Reason};

/// 100%, in LaunchDarkly's weight unit.
const TOTAL: i64 = 100_000;

// ---------------------------------------------------------------------------------------
// Building flags

/// Variation values `"v0"`, `"v1"`... so a wrong index also shows as a wrong value.
fn values(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!(format!("v{i}"))).collect()
}

fn arms(variations: &[usize], weights: &[i64], untracked: &[bool]) -> Vec<WeightedVariation> {
    variations
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (&variation, &weight))| WeightedVariation {
            variation: variation as i64,
            weight,
            untracked: untracked.get(i).copied().unwrap_or(false),
        })
        .collect()
}

/// A flag that is on, has no targets or rules, and serves `rollout` by fallthrough.
fn rollout_flag(key: &str, salt: &str, n_variations: usize, rollout: Rollout) -> FlagData {
    let flag = Flag {
        key: key.into(),
        on: true,
        salt: salt.into(),
        variations: values(n_variations),
        off_variation: Some(0),
        fallthrough: VariationOrRollout { variation: None, rollout: Some(rollout) },
        ..Flag::default()
    };
    let mut data = FlagData::default();
    data.flags.insert(key.into(), flag);
    data
}

fn plain_rollout(variations: Vec<WeightedVariation>) -> Rollout {
    Rollout { variations, ..Rollout::default() }
}

/// A compiled flag set, checked to have no problems: every property below is about
/// well-formed data.
fn compile(data: &FlagData) -> FlagSet {
    let set = FlagSet::compile(data);
    assert!(set.problems().is_empty(), "unexpected problems: {:?}", set.problems());
    set
}

/// LaunchDarkly's rollout algorithm: walk the weights, summing them as 32-bit floats,
/// as LaunchDarkly's evaluators do, and take the first arm whose cumulative weight is
/// above the bucket. If the weights fall short of 100%, the last arm takes the rest.
/// Returns the arm's position in the rollout.
fn arm_for_bucket(weights: &[i64], b: f32) -> usize {
    let mut sum = 0f32;
    for (i, &w) in weights.iter().enumerate() {
        sum += w as f32 / 100_000.0;
        if b < sum {
            return i;
        }
    }
    weights.len() - 1
}

fn in_experiment(reason: &Reason<'_>) -> bool {
    match *reason {
        Reason::Fallthrough { in_experiment } | Reason::RuleMatch { in_experiment, .. } => in_experiment,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Strategies

/// A cut point in `0..=100000`, biased to the ends and the middle so that zero, tiny and
/// whole-rollout weights come up often.
fn cut() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..=TOTAL,
        1 => 0..=10i64,
        1 => (TOTAL - 10)..=TOTAL,
        1 => Just(TOTAL / 2),
    ]
}

/// `n` non-negative weights that add up to exactly 100000.
fn weights(n: usize) -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(cut(), n - 1).prop_map(move |mut cuts| {
        cuts.sort_unstable();
        let mut prev = 0;
        let mut w = Vec::with_capacity(n);
        for c in cuts {
            w.push(c - prev);
            prev = c;
        }
        w.push(TOTAL - prev);
        w
    })
}

fn flag_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,20}"
}

fn salt() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{0,16}"
}

/// A context key: usually ASCII, sometimes any printable Unicode.
fn context_key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9_.@:-]{1,24}", 1 => "\\PC{1,12}"]
}

/// A random rollout: key, salt, seed, kind, and its arms in a random order of the
/// flag's variations.
#[derive(Debug, Clone)]
struct Spec {
    flag: String,
    salt: String,
    seed: Option<i64>,
    experiment: bool,
    /// Arm `i` serves variation `variations[i]` (a permutation of `0..n`).
    variations: Vec<usize>,
    weights: Vec<i64>,
    untracked: Vec<bool>,
}

impl Spec {
    fn n(&self) -> usize {
        self.variations.len()
    }

    fn rollout(&self, context_kind: Option<&str>) -> Rollout {
        Rollout {
            kind: self.experiment.then(|| "experiment".to_string()),
            context_kind: context_kind.map(str::to_string),
            variations: arms(&self.variations, &self.weights, &self.untracked),
            bucket_by: None,
            seed: self.seed,
        }
    }

    /// The bucketing prefix LaunchDarkly uses.
    fn prefix(&self) -> String {
        match self.seed {
            Some(seed) => seed.to_string(),
            None => format!("{}.{}", self.flag, self.salt),
        }
    }

    /// The variation index and `inExperiment` LaunchDarkly gives a context with `key`.
    fn expected(&self, key: &str) -> (usize, bool) {
        let arm = arm_for_bucket(&self.weights, bucket(&self.prefix(), key));
        (self.variations[arm], self.experiment && !self.untracked[arm])
    }
}

fn spec(min_arms: usize, max_arms: usize) -> impl Strategy<Value = Spec> {
    (min_arms..=max_arms)
        .prop_flat_map(|n| {
            (
                flag_key(),
                salt(),
                prop::option::weighted(0.3, any::<i64>()),
                any::<bool>(),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                weights(n),
                prop::collection::vec(prop::bool::weighted(0.2), n),
            )
        })
        .prop_map(|(flag, salt, seed, experiment, variations, weights, untracked)| Spec {
            flag,
            salt,
            seed,
            experiment,
            variations,
            weights,
            untracked,
        })
}

// ---------------------------------------------------------------------------------------
// 1. Determinism

const PLANS: &[&str] = &["free", "pro", "team", "enterprise", "pro-annual", ""];
const TIERS: &[f64] = &[-3.0, 0.0, 1.0, 2.5, 3.0, 10.0, 1e9];
const KEYS: &[&str] = &["alice", "bob", "carol", "dave", "erin"];

/// A clause value: mostly drawn from the same pools as the contexts, so rules match
/// often enough to matter.
fn clause_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(PLANS).prop_map(|s| json!(s)),
        prop::sample::select(KEYS).prop_map(|s| json!(s)),
        prop::sample::select(TIERS).prop_map(|n| json!(n)),
        "[a-z]{0,3}".prop_map(|s| json!(s)),
        (-5i64..15).prop_map(|n| json!(n)),
    ]
}

fn clause() -> impl Strategy<Value = Clause> {
    (
        prop::sample::select(&["plan", "tier", "email", "key", "name"][..]),
        prop::sample::select(
            &["in", "startsWith", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"][..],
        ),
        prop::collection::vec(clause_value(), 1..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(attribute, op, values, negate)| Clause {
            context_kind: None,
            attribute: attribute.into(),
            op: op.into(),
            values,
            negate,
        })
}

/// A rule or fallthrough outcome: a fixed variation, or a rollout over all variations.
fn outcome(n: usize) -> impl Strategy<Value = VariationOrRollout> {
    prop_oneof![
        (0..n as i64).prop_map(|v| VariationOrRollout { variation: Some(v), rollout: None }),
        (
            weights(n),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            any::<bool>(),
            prop::option::weighted(0.3, any::<i64>()),
        )
            .prop_map(|(w, order, experiment, seed)| VariationOrRollout {
                variation: None,
                rollout: Some(Rollout {
                    kind: experiment.then(|| "experiment".to_string()),
                    seed,
                    ..plain_rollout(arms(&order, &w, &[]))
                }),
            }),
    ]
}

fn random_flag() -> impl Strategy<Value = FlagData> {
    (2usize..=4)
        .prop_flat_map(|n| {
            (
                Just(n),
                flag_key(),
                salt(),
                prop::bool::weighted(0.9),
                prop::collection::vec((prop::collection::vec(clause(), 0..3), outcome(n)), 0..4),
                outcome(n),
                prop::collection::vec((prop::sample::subsequence(KEYS, 0..3), 0..n as i64), 0..2),
            )
        })
        .prop_map(|(n, key, salt, on, rules, fallthrough, targets)| {
            let rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, (clauses, o))| FlagRule {
                    id: format!("rule-{i}"),
                    clauses,
                    variation: o.variation,
                    rollout: o.rollout,
                })
                .collect();
            let targets = targets
                .into_iter()
                .map(|(keys, variation)| Target {
                    context_kind: None,
                    values: keys.into_iter().map(str::to_string).collect(),
                    variation,
                })
                .collect();
            let flag = Flag {
                key: key.clone(),
                on,
                salt,
                variations: values(n),
                off_variation: Some(0),
                rules,
                fallthrough,
                targets,
                ..Flag::default()
            };
            let mut data = FlagData::default();
            data.flags.insert(key, flag);
            data
        })
}

/// A user context whose attributes come from the pools the clauses use (or are absent).
fn random_context() -> impl Strategy<Value = Value> {
    (
        prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), context_key()],
        prop::option::of(prop::sample::select(PLANS)),
        prop::option::of(prop_oneof![
            prop::sample::select(TIERS).prop_map(|n| json!(n)),
            (-5i64..15).prop_map(|n| json!(n)),
        ]),
        prop::option::of("[a-z]{0,3}@[a-z]{1,3}"),
        prop::option::of(prop::sample::select(PLANS)),
    )
        .prop_map(|(key, plan, tier, email, name)| {
            let mut c = json!({"kind": "user", "key": key});
            if let Some(p) = plan {
                c["plan"] = json!(p);
            }
            if let Some(t) = tier {
                c["tier"] = t;
            }
            if let Some(e) = email {
                c["email"] = json!(e);
            }
            if let Some(n) = name {
                c["name"] = json!(n);
            }
            c
        })
}

/// Evaluate every context, in the given order.
fn evaluate_all<'s>(set: &'s FlagSet, key: &str, contexts: &[Context]) -> Vec<Detail<'s>> {
    contexts.iter().map(|c| set.evaluate(key, c)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same flag and context always give the same `Detail`: evaluating again (in
    /// another order), after compiling the data again, after a round trip of the data
    /// through LaunchDarkly JSON, and after a round trip of the context through JSON.
    #[test]
    fn evaluation_is_deterministic(
        data in random_flag(),
        contexts in prop::collection::vec(random_context(), 1..8),
    ) {
        let key = data.flags.keys().next().unwrap().clone();
        let contexts: Vec<Context> = contexts.iter().map(|c| Context::from_json(c).unwrap()).collect();
        let first = compile(&data);
        let again = compile(&data.clone());
        let reloaded = FlagData::from_ld_json(serde_json::to_value(&data).unwrap()).unwrap();
        prop_assert_eq!(&reloaded, &data);
        let reloaded = compile(&reloaded);

        let expected = evaluate_all(&first, &key, &contexts);
        for d in &expected {
            prop_assert!(!matches!(d.reason, Reason::Error(_)), "well-formed data gave {:?}", d);
            prop_assert!(d.value.is_some());
        }
        prop_assert_eq!(&evaluate_all(&first, &key, &contexts), &expected);
        prop_assert_eq!(&evaluate_all(&again, &key, &contexts), &expected);
        prop_assert_eq!(&evaluate_all(&reloaded, &key, &contexts), &expected);

        let mut reversed: Vec<Context> = contexts.iter().rev().cloned().collect();
        let mut backwards = evaluate_all(&first, &key, &reversed);
        backwards.reverse();
        prop_assert_eq!(&backwards, &expected);

        reversed.reverse();
        let round_tripped: Vec<Context> =
            reversed.iter().map(|c| Context::from_json(&c.to_json()).unwrap()).collect();
        prop_assert_eq!(&evaluate_all(&again, &key, &round_tripped), &expected);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Ramp stability

/// How the weight for a raise is found among the other arms.
#[derive(Debug, Clone, Copy)]
enum Take {
    /// Every other arm only shrinks (the split between them is random; with the
    /// extremes of `fracs` this includes "all of it from the arm next to it").
    ShrinkOthers,
    /// The other arms are re-split any way at all (only their total is fixed).
    Resplit,
}

/// New weights: arm `grow` gains `delta`, the others lose `delta` between them as `take`
/// says, choosing with `fracs` (each in `0..=1`). The total stays 100000.
fn raise(weights: &[i64], grow: usize, delta: i64, take: Take, fracs: &[f64]) -> Vec<i64> {
    let mut new = weights.to_vec();
    new[grow] += delta;
    let others: Vec<usize> = (0..weights.len()).filter(|&i| i != grow).collect();
    match take {
        Take::ShrinkOthers => {
            let mut rest = delta;
            for (j, &i) in others.iter().enumerate() {
                let later: i64 = others[j + 1..].iter().map(|&k| weights[k]).sum();
                let lo = (rest - later).max(0);
                let hi = weights[i].min(rest);
                let t = lo + ((hi - lo) as f64 * fracs[j]).round() as i64;
                new[i] -= t;
                rest -= t;
            }
            assert_eq!(rest, 0);
        }
        Take::Resplit => {
            let left = TOTAL - new[grow];
            let mut cuts: Vec<i64> =
                fracs[..others.len() - 1].iter().map(|f| (left as f64 * f).round() as i64).collect();
            cuts.sort_unstable();
            cuts.push(left);
            let mut prev = 0;
            for (&i, c) in others.iter().zip(cuts) {
                new[i] = c - prev;
                prev = c;
            }
        }
    }
    assert_eq!(new.iter().sum::<i64>(), TOTAL);
    assert!(new.iter().all(|&w| w >= 0), "{new:?}");
    new
}

fn frac() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0]
}

/// How much to raise by: `(mode, frac, small)`; see `delta`.
fn delta_choice() -> impl Strategy<Value = (u8, f64, i64)> {
    (0u8..3, 0.0..=1.0f64, 1i64..=10)
}

/// A tiny step, a random part of the headroom, or all of it.
fn delta((mode, frac, small): (u8, f64, i64), headroom: i64) -> i64 {
    match mode {
        0 => small.min(headroom),
        1 => (headroom as f64 * frac).round() as i64,
        _ => headroom,
    }
}

/// Check that raising arm `grow` of `spec` keeps every context of `keys` that had it.
fn check_ramp(
    spec: &Spec,
    grow: usize,
    delta: i64,
    take: Take,
    fracs: &[f64],
    keys: &[String],
) -> Result<(), TestCaseError> {
    let new_weights = raise(&spec.weights, grow, delta, take, fracs);
    let before = compile(&rollout_flag(&spec.flag, &spec.salt, spec.n(), spec.rollout(None)));
    let raised = Spec { weights: new_weights.clone(), ..spec.clone() };
    let after = compile(&rollout_flag(&spec.flag, &spec.salt, spec.n(), raised.rollout(None)));
    let treatment = spec.variations[grow];
    for key in keys {
        let ctx = Context::new("user", key);
        let old = before.evaluate(&spec.flag, &ctx).variation_index;
        let new = after.evaluate(&spec.flag, &ctx).variation_index;
        if old == Some(treatment) {
            prop_assert_eq!(
                new,
                Some(treatment),
                "`{}` left arm {} when its weight went {:?} -> {:?} ({:?})",
                key,
                grow,
                spec.weights,
                new_weights,
                take
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Raising the FIRST arm's weight (the others giving it up in any way) keeps every
    /// context it had: its range is `[0, w0)` and only grows.
    #[test]
    fn raising_the_first_arm_keeps_its_contexts(
        spec in spec(2, 3),
        how in delta_choice(),
        resplit in any::<bool>(),
        fracs in prop::collection::vec(frac(), 2),
        keys in prop::collection::vec(context_key(), 16),
    ) {
        let delta = delta(how, TOTAL - spec.weights[0]);
        let take = if resplit { Take::Resplit } else { Take::ShrinkOthers };
        check_ramp(&spec, 0, delta, take, &fracs, &keys)?;
    }

    /// Raising the LAST arm's weight, taking it from the arm before it (or from any
    /// earlier arms), keeps every context it had: its range is `[1 - w_last, 1)` and
    /// only grows. With a real raise (at least 1 of 100000, far above the 32-bit float
    /// rounding of the cumulative sum), the earlier arms may even be re-split any way.
    #[test]
    fn raising_the_last_arm_keeps_its_contexts(
        spec in spec(2, 3),
        how in delta_choice(),
        resplit in any::<bool>(),
        fracs in prop::collection::vec(frac(), 2),
        keys in prop::collection::vec(context_key(), 16),
    ) {
        let last = spec.n() - 1;
        let delta = delta(how, TOTAL - spec.weights[last]);
        // A re-split without a raise can move the last arm's start by one float step:
        // see `middle_arm_loses_a_context_to_float_rounding`.
        let take = if resplit && delta > 0 { Take::Resplit } else { Take::ShrinkOthers };
        check_ramp(&spec, last, delta, take, &fracs, &keys)?;
    }
}

/// The first context key `user-{i}` whose bucket under `prefix` is in `range`.
fn key_in(prefix: &str, range: std::ops::Range<f32>) -> String {
    (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|k| range.contains(&bucket(prefix, k)))
        .unwrap_or_else(|| panic!("no key in {range:?}"))
}

fn variation_of(weights: &[i64], key: &str) -> Option<usize> {
    let set = compile(&rollout_flag("checkout", "salt", 3, plain_rollout(arms(&[0, 1, 2], weights, &[]))));
    set.evaluate("checkout", &Context::new("user", key)).variation_index
}

/// A MIDDLE arm has no ramp guarantee: its range `[w0, w0 + w1)` starts where the arms
/// before it end. So when its weight is raised while the weight around it is re-split,
/// the range can move away from contexts it had. Here the middle arm goes from 20% to
/// 30% while the first drops from 40% to 20%. Its range moves from `[0.4, 0.6)` to
/// `[0.2, 0.5)`, and a context at 0.55 moves to the last arm. The first and last arms are
/// anchored at 0 and 1, so the same re-split cannot do this to them (see the properties
/// above).
#[test]
fn middle_arm_loses_contexts_when_the_weights_around_it_are_re_split() {
    let key = key_in("checkout.salt", 0.5..0.6);
    assert_eq!(variation_of(&[40_000, 20_000, 40_000], &key), Some(1));
    assert_eq!(variation_of(&[20_000, 30_000, 50_000], &key), Some(2), "{key}");
}

/// Even when the middle arm takes its whole raise from the FIRST arm (so that in exact
/// arithmetic its range only grows: `[w0 - d, w0 + w1)`), its upper edge is a float sum
/// `f32(w0 - d) + f32(w1 + d)`, which can round one step below `f32(w0) + f32(w1)`.
/// Here 0.4 + 0.56 = 0.96000004 but 0.2 + 0.76 = 0.95999998, and `user-123928` (flag
/// `checkout`, salt `salt`) has a bucket of exactly 0.95999998. Found by a search over
/// keys. So raising the middle arm from 56% to 76% moves that context from the middle
/// arm to the last one. LaunchDarkly's evaluators sum in 32-bit floats too, so this is
/// parity, not a sluice bug. The first arm's edge `f32(w0)` and the last arm's start
/// (a sum of earlier weights that all shrink) are monotonic under rounding, so they
/// cannot do this.
///
/// Running the same change backwards does this to the LAST arm even though its
/// weight (4%) does not change. That is why the last-arm property re-splits the earlier
/// arms only when the last arm really grows.
#[test]
fn middle_arm_loses_a_context_to_float_rounding() {
    let key = "user-123928";
    let b = bucket("checkout.salt", key);
    // The middle arm's upper edge, summed as a rollout sums it.
    let edge = |w0: i64, w1: i64| w0 as f32 / 100_000.0 + w1 as f32 / 100_000.0;
    assert!(edge(20_000, 76_000) < edge(40_000, 56_000));
    assert_eq!(b, edge(20_000, 76_000), "bucket {b}");
    assert_eq!(variation_of(&[40_000, 56_000, 4_000], key), Some(1));
    // Read backwards ([20, 76, 4] -> [40, 56, 4]): the last arm keeps its 4% weight but
    // loses the context to the middle arm.
    assert_eq!(variation_of(&[20_000, 76_000, 4_000], key), Some(2));
}

// ---------------------------------------------------------------------------------------
// 3. Distribution

/// Each variation's share over 100,000 distinct keys is within 5 standard deviations of
/// its weight.
///
/// The bound: SHA-1 behaves like a uniform random function, so the buckets of distinct
/// keys are independent and uniform on `[0, 1)`. The number of keys that fall in an arm
/// of weight `p` is then Binomial(n, p). The arm's share has mean `p` and standard
/// deviation `sigma = sqrt(p (1 - p) / n)`. The 32-bit float quantization of buckets and
/// arm edges shifts `p` by less than 1e-7, far below sigma (>= 1e-4 here). A share more
/// than `5 sigma` off has probability about 5.7e-7 under the normal approximation. The
/// exact binomial tails for n = 100000 are 5.9e-7, 5.8e-7 and 5.7e-7 for the 5/15/80%
/// arms, 5.7e-7 for each 49.95% arm, and 1.9e-6 for the 0.1% arm (count outside
/// 51..=149 around a mean of 100; its right tail is heavier). So correct bucketing fails
/// this test with probability below 5e-6 in total. A biased bucketing (an off-by-one
/// arm, a skewed hash, a prefix that clusters keys) is caught. The keys are fixed, so
/// the result is the same on every run.
#[test]
fn shares_match_weights_within_five_sigma() {
    const N: usize = 100_000;
    let rollouts: [(&str, &[i64]); 2] =
        [("dist-5-15-80", &[5_000, 15_000, 80_000]), ("dist-tenth-of-a-percent", &[100, 49_950, 49_950])];
    let mut data = FlagData::default();
    for (flag, weights) in rollouts {
        let rollout = plain_rollout(arms(&[0, 1, 2], weights, &[]));
        data.flags.extend(rollout_flag(flag, "dist-salt", 3, rollout).flags);
    }
    let set = compile(&data);
    let indexes: Vec<_> = rollouts.iter().map(|(flag, _)| set.index(flag).unwrap()).collect();
    let mut counts = [[0usize; 3]; 2];
    let mut key = String::new();
    for i in 0..N {
        key.clear();
        std::fmt::Write::write_fmt(&mut key, format_args!("user-{i}")).unwrap();
        let ctx = Context::new("user", &key);
        for (r, &index) in indexes.iter().enumerate() {
            counts[r][set.evaluate_index(index, &ctx).variation_index.unwrap()] += 1;
        }
    }
    for ((flag, weights), counts) in rollouts.iter().zip(&counts) {
        for (arm, (&w, &c)) in weights.iter().zip(counts).enumerate() {
            let p = w as f64 / TOTAL as f64;
            let share = c as f64 / N as f64;
            let sigma = (p * (1.0 - p) / N as f64).sqrt();
            assert!(
                (share - p).abs() <= 5.0 * sigma,
                "{flag}: arm {arm} got {c} of {N} keys ({share}), weight {p}, 5 sigma = {}",
                5.0 * sigma
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Multi-kind bucketing

/// LaunchDarkly JSON for a flag whose fallthrough is `spec`'s rollout by `org`.
fn org_rollout_json(spec: &Spec) -> FlagData {
    let mut rollout = json!({
        "kind": if spec.experiment { "experiment" } else { "rollout" },
        "contextKind": "org",
        "variations": spec
            .variations
            .iter()
            .zip(&spec.weights)
            .zip(&spec.untracked)
            .map(|((v, w), u)| json!({"variation": v, "weight": w, "untracked": u}))
            .collect::<Vec<_>>(),
    });
    if let Some(seed) = spec.seed {
        rollout["seed"] = json!(seed);
    }
    FlagData::from_ld_json(json!({
        "flags": {
            spec.flag.as_str(): {
                "key": spec.flag,
                "on": true,
                "salt": spec.salt,
                "variations": values(spec.n()),
                "offVariation": 0,
                "fallthrough": {"rollout": rollout},
            }
        }
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A rollout by `org` buckets a multi-kind context by its `org` key alone. A context
    /// without an `org` gets bucket 0 (the first arm with weight) and is never
    /// `inExperiment`.
    #[test]
    fn org_rollouts_bucket_by_the_org_alone(
        spec in spec(1, 4),
        user in context_key(),
        org in context_key(),
        device in context_key(),
    ) {
        let set = compile(&org_rollout_json(&spec));
        let eval = |c: Value| set.evaluate(&spec.flag, &Context::from_json(&c).unwrap());

        let alone = eval(json!({"kind": "org", "key": org}));
        let (variation, experiment) = spec.expected(&org);
        prop_assert_eq!(alone.variation_index, Some(variation));
        prop_assert_eq!(alone.reason, Reason::Fallthrough { in_experiment: experiment });
        prop_assert_eq!(eval(json!({"kind": "multi", "user": {"key": user}, "org": {"key": org}})), alone);
        prop_assert_eq!(
            eval(json!({"kind": "multi", "org": {"key": org, "name": user}, "device": {"key": device}, "user": {"key": org}})),
            alone
        );

        let first_with_weight = spec.weights.iter().position(|&w| w > 0).unwrap();
        let bucket_zero = Some(spec.variations[first_with_weight]);
        for no_org in [
            json!({"kind": "user", "key": user}),
            json!({"kind": "multi", "user": {"key": user}, "device": {"key": device}}),
            json!({"key": org}),
        ] {
            let d = eval(no_org.clone());
            prop_assert_eq!(d.variation_index, bucket_zero, "{}", no_org);
            prop_assert_eq!(d.reason, Reason::Fallthrough { in_experiment: false }, "{}", no_org);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Bucketing parity

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A rollout (by fallthrough or by a matching rule) serves the arm that LaunchDarkly's
    /// algorithm picks from `bucket("{flag}.{salt}", key)`, or `bucket("{seed}", key)`
    /// when the rollout has a seed. Experiments count the context unless the arm is
    /// untracked.
    #[test]
    fn rollouts_bucket_as_launchdarkly_does(
        spec in spec(1, 5),
        key in context_key(),
        in_rule in any::<bool>(),
    ) {
        let mut data = rollout_flag(&spec.flag, &spec.salt, spec.n(), spec.rollout(None));
        if in_rule {
            let flag = data.flags.get_mut(&spec.flag).unwrap();
            flag.fallthrough = VariationOrRollout { variation: Some(0), rollout: None };
            flag.rules.push(FlagRule {
                id: "everyone".into(),
                clauses: vec![Clause {
                    attribute: "key".into(),
                    op: "startsWith".into(),
                    values: vec![json!("")],
                    ..Clause::default()
                }],
                variation: None,
                rollout: Some(spec.rollout(None)),
            });
        }
        let set = compile(&data);
        let d = set.evaluate(&spec.flag, &Context::new("user", &key));
        let (variation, experiment) = spec.expected(&key);
        prop_assert_eq!(d.variation_index, Some(variation), "bucket {}", bucket(&spec.prefix(), &key));
        prop_assert_eq!(d.value, Some(&json!(format!("v{variation}"))));
        prop_assert_eq!(in_experiment(&d.reason), experiment);
        if in_rule {
            prop_assert!(
                matches!(d.reason, Reason::RuleMatch { rule_index: 0, rule_id: "everyone", .. }),
                "{:?}",
                d.reason
            );
        } else {
            prop_assert!(matches!(d.reason, Reason::Fallthrough { .. }), "{:?}", d.reason);
        }
    }
}
