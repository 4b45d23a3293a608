//! Flag evaluation: sluice's targeting engine (`sluice::flags`) against LaunchDarkly's
//! own Rust evaluator (`launchdarkly-server-sdk-evaluation` 2.1.1), on exactly the same
//! LaunchDarkly JSON flag data and the same contexts.
//!
//! What is measured (only evaluation: flags are compiled and contexts parsed/built up
//! front, and each iteration takes the next of 1024 pre-built contexts, so the user key
//! changes every time and bucketing is really computed):
//!
//! - `*/20-rule-flag/last-rule`: a 20-rule flag (individual targets; `in`, `startsWith`,
//!   `endsWith`, `contains`, `matches`, `semVerGreaterThan`/`semVerLessThan`,
//!   `greaterThan`/`lessThan`, `before`/`after`, a `segmentMatch` on a segment with
//!   included keys and a rule, an `org` rule) for a multi-kind user+org context that
//!   fails the first 19 rules and matches the 20th: the worst case, every rule is tried.
//! - `*/20-rule-flag/fallthrough`: the same flag for a single user that matches nothing
//!   and falls through to a percentage rollout (80/10/10).
//! - `*/rollout/single-user`: a two-variation 95/5 percentage rollout, no rules.
//!
//! Before measuring, the set-up asserts that both evaluators give the same variation
//! index for every pre-built context on every case, and that the cases hit the rule (or
//! fallthrough) they claim to. It then counts heap allocations per evaluation with a
//! counting global allocator (`System`, plus a counter of `alloc`/`alloc_zeroed`/
//! `realloc` calls): one warm-up pass over a case's contexts, then 10 passes (10,240
//! evaluations) for sluice and one pass (1,024) for LaunchDarkly's slower evaluator.
//!
//! Budget: at most 1 µs per evaluation of a 20-rule flag, and zero heap allocations on
//! sluice's evaluation path (a non-zero count is printed as `OVER BUDGET`).
//!
//! Run (release build):
//!
//! ```text
//! cargo bench --bench flags
//! cargo bench --bench flags -- --warm-up-time 1 --measurement-time 3   # shorter
//! cargo bench --bench flags -- sluice/                                 # one side only
//! ```
//!
//! `cargo test --benches` runs every benchmark once, after the same checks and counts.

// Benches are non-test code for clippy, and set-up code here may unwrap and panic freely.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use criterion::Criterion;
use launchdarkly_server_sdk_evaluation as ld;
use serde_json::{json, Value};
use sluice::flags::{Context, FlagData, FlagIndex, FlagSet, Reason};

/// Pre-built contexts per case (a power of two: the index is masked, not divided).
const CONTEXTS: usize = 1024;
/// Evaluations counted per case by the allocation check, after one warm-up pass: whole
/// passes over the contexts, so the average covers every context equally.
const ALLOC_EVALS_SLUICE: usize = 10 * CONTEXTS;
const ALLOC_EVALS_LAUNCHDARKLY: usize = CONTEXTS;

/// Heap allocations (`alloc`, `alloc_zeroed` and `realloc` calls) while `COUNTING`.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Off during the criterion runs, so the counter's atomic add (a few ns) is not timed
/// into the LaunchDarkly evaluator's hundreds of allocations.
static COUNTING: AtomicBool = AtomicBool::new(true);

/// The system allocator, counting.
struct Counting;

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// The package denies unsafe code; a global allocator can only be an `unsafe impl`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RULE_FLAG: &str = "gateway-routing";
const ROLLOUT_FLAG: &str = "new-model-rollout";

/// A clause on a `user` attribute (no `contextKind`: a literal attribute name).
fn clause(attribute: &str, op: &str, values: Value) -> Value {
    json!({ "attribute": attribute, "op": op, "values": values, "negate": false })
}

/// A rule with fixed variation `variation`.
fn rule(n: usize, variation: i64, clauses: Vec<Value>) -> Value {
    json!({
        "id": format!("rule-{n:02}"),
        "clauses": clauses,
        "variation": variation,
        "trackEvents": false,
    })
}

/// The flag data, as LaunchDarkly's server-side JSON; both evaluators load this value.
fn flag_data() -> Value {
    let rules = vec![
        rule(1, 1, vec![clause("email", "endsWith", json!(["@competitor.com", "@rival.io"]))]),
        rule(
            2,
            2,
            vec![clause("country", "in", json!(["US", "CA", "MX"])), clause("plan", "in", json!(["enterprise"]))],
        ),
        rule(3, 1, vec![clause("email", "startsWith", json!(["admin@", "qa-", "loadtest-"]))]),
        rule(4, 2, vec![clause("email", "contains", json!(["+canary", "+internal"]))]),
        rule(5, 2, vec![clause("email", "matches", json!(["^[a-z]+\\.[a-z]+@corp\\.example\\.com$"]))]),
        rule(6, 0, vec![clause("version", "semVerLessThan", json!(["1.0.0"]))]),
        rule(7, 2, vec![clause("version", "semVerGreaterThan", json!(["3.0.0"]))]),
        rule(8, 1, vec![clause("requests", "greaterThan", json!([100_000]))]),
        rule(9, 0, vec![clause("plan", "in", json!(["team"])), clause("requests", "lessThan", json!([50]))]),
        rule(10, 1, vec![clause("createdAt", "before", json!(["2020-01-01T00:00:00Z"]))]),
        // 2030-01-01T00:00:00Z in epoch milliseconds.
        rule(11, 2, vec![clause("createdAt", "after", json!([1_893_456_000_000_i64]))]),
        rule(12, 2, vec![clause("key", "segmentMatch", json!(["beta-testers"]))]),
        rule(
            13,
            0,
            vec![json!({
                "contextKind": "org",
                "attribute": "tier",
                "op": "in",
                "values": ["free", "trial"],
                "negate": false,
            })],
        ),
        rule(14, 0, vec![clause("country", "in", json!(["RU", "BY", "IR", "KP"]))]),
        rule(15, 1, vec![clause("key", "in", json!(["qa-bot-1", "qa-bot-2", "qa-bot-3"]))]),
        rule(
            16,
            2,
            vec![
                clause("version", "semVerGreaterThan", json!(["2.0.0"])),
                clause("country", "in", json!(["JP", "KR"])),
            ],
        ),
        rule(
            17,
            0,
            vec![
                clause("email", "matches", json!([".*@(gmail|yahoo|outlook)\\.com$"])),
                clause("plan", "in", json!(["free"])),
            ],
        ),
        rule(
            18,
            0,
            vec![json!({
                "attribute": "plan",
                "op": "in",
                "values": ["pro", "team", "enterprise", "free"],
                "negate": true,
            })],
        ),
        rule(
            19,
            2,
            vec![clause("country", "in", json!(["DE", "AT", "CH"])), clause("plan", "in", json!(["enterprise"]))],
        ),
        rule(
            20,
            2,
            vec![
                clause("country", "in", json!(["DE", "FR", "NL"])),
                clause("plan", "in", json!(["pro"])),
                clause("version", "semVerGreaterThan", json!(["2.0.0"])),
            ],
        ),
    ];
    assert_eq!(rules.len(), 20);
    json!({
        "flags": {
            RULE_FLAG: {
                "key": RULE_FLAG,
                "version": 42,
                "on": true,
                "prerequisites": [],
                "targets": [{ "values": ["vip-1", "vip-2", "vip-3"], "variation": 1 }],
                "contextTargets": [],
                "rules": rules,
                "fallthrough": { "rollout": { "variations": [
                    { "variation": 0, "weight": 80_000 },
                    { "variation": 1, "weight": 10_000 },
                    { "variation": 2, "weight": 10_000 },
                ]}},
                "offVariation": 0,
                "variations": ["control", "route-a", "route-b"],
                "salt": "5c9b1c0f3b2e4d7a",
                "clientSide": false,
                "trackEvents": false,
                "trackEventsFallthrough": false,
                "deleted": false,
            },
            ROLLOUT_FLAG: {
                "key": ROLLOUT_FLAG,
                "version": 7,
                "on": true,
                "prerequisites": [],
                "targets": [],
                "contextTargets": [],
                "rules": [],
                "fallthrough": { "rollout": { "variations": [
                    { "variation": 0, "weight": 95_000 },
                    { "variation": 1, "weight": 5_000 },
                ]}},
                "offVariation": 0,
                "variations": ["gpt-4o-mini", "gpt-4.1"],
                "salt": "e1f0a7d2",
                "clientSide": false,
                "trackEvents": false,
                "trackEventsFallthrough": false,
                "deleted": false,
            },
        },
        "segments": {
            "beta-testers": {
                "key": "beta-testers",
                "version": 3,
                "included": ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"],
                "excluded": ["mallory"],
                "includedContexts": [],
                "excludedContexts": [],
                "rules": [{
                    "id": "beta-email",
                    "clauses": [clause("email", "endsWith", json!(["@beta.example.com"]))],
                }],
                "salt": "b3ta",
                "unbounded": false,
                "deleted": false,
            },
        },
    })
}

/// A multi-kind context (user + org) that fails rules 1-19 and matches rule 20.
fn multi_context(i: usize) -> Value {
    json!({
        "kind": "multi",
        "user": {
            "key": format!("user-{i:04}"),
            "name": format!("User {i}"),
            "email": format!("user-{i}@example.com"),
            "version": format!("2.{}.{}", 1 + i % 8, i % 5),
            "plan": "pro",
            "country": "DE",
            "requests": 1_200 + i,
            "createdAt": "2023-05-01T12:00:00Z",
        },
        "org": { "key": "org-acme", "tier": "enterprise" },
    })
}

/// A single user that matches no rule (and no target) and falls through.
fn single_user(i: usize) -> Value {
    json!({
        "kind": "user",
        "key": format!("visitor-{i:04}"),
        "email": format!("visitor-{i}@example.org"),
        "version": format!("1.9.{}", i % 10),
        "plan": "free",
        "country": "US",
        "requests": i % 500,
        "createdAt": "2024-02-10T08:30:00Z",
    })
}

/// What a case's contexts must all reach in the flag.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// `RULE_MATCH` at this (0-based) rule index.
    Rule(usize),
    Fallthrough,
}

/// One benchmarked case: a flag and its pre-built contexts, for both evaluators.
struct Case {
    group: &'static str,
    name: &'static str,
    expect: Expect,
    index: FlagIndex,
    ld_flag: ld::Flag,
    sluice: Vec<Context>,
    ld: Vec<ld::Context>,
}

impl Case {
    fn new(
        fx_set: &FlagSet,
        ld_flags: &HashMap<String, ld::Flag>,
        (group, name, flag, expect): (&'static str, &'static str, &str, Expect),
        context: fn(usize) -> Value,
    ) -> Case {
        let json: Vec<Value> = (0..CONTEXTS).map(context).collect();
        Case {
            group,
            name,
            expect,
            index: fx_set.index(flag).unwrap(),
            ld_flag: ld_flags[flag].clone(),
            sluice: json.iter().map(|j| Context::from_json(j).unwrap()).collect(),
            ld: json.iter().map(|j| serde_json::from_value::<ld::Context>(j.clone()).unwrap()).collect(),
        }
    }

    /// `<evaluator>/<group>/<name>`.
    fn id(&self, evaluator: Evaluator) -> String {
        format!("{}/{}/{}", evaluator.name(), self.group, self.name)
    }
}

/// LaunchDarkly's `Store`: its trait returns owned flags and segments, so every
/// `segmentMatch` clones the segment (that is the crate's API, and part of its cost).
struct LdStore {
    flags: HashMap<String, ld::Flag>,
    segments: HashMap<String, ld::Segment>,
}

impl ld::Store for LdStore {
    fn flag(&self, flag_key: &str) -> Option<ld::Flag> {
        self.flags.get(flag_key).cloned()
    }
    fn segment(&self, segment_key: &str) -> Option<ld::Segment> {
        self.segments.get(segment_key).cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evaluator {
    Sluice,
    LaunchDarkly,
}

impl Evaluator {
    const ALL: [Evaluator; 2] = [Evaluator::Sluice, Evaluator::LaunchDarkly];

    fn name(self) -> &'static str {
        match self {
            Evaluator::Sluice => "sluice",
            Evaluator::LaunchDarkly => "launchdarkly",
        }
    }
}

/// Everything built up front: both evaluators' flag data and every case's contexts.
struct Fixture {
    set: FlagSet,
    store: LdStore,
    cases: Vec<Case>,
}

impl Fixture {
    fn new() -> Fixture {
        let data = flag_data();
        let set = FlagSet::compile(&FlagData::from_ld_json(data.clone()).unwrap());
        assert!(set.problems().is_empty(), "sluice found problems: {:?}", set.problems());
        let flags: HashMap<String, ld::Flag> = serde_json::from_value(data["flags"].clone()).unwrap();
        let segments: HashMap<String, ld::Segment> = serde_json::from_value(data["segments"].clone()).unwrap();
        let cases = vec![
            Case::new(&set, &flags, ("20-rule-flag", "last-rule", RULE_FLAG, Expect::Rule(19)), multi_context),
            Case::new(&set, &flags, ("20-rule-flag", "fallthrough", RULE_FLAG, Expect::Fallthrough), single_user),
            Case::new(&set, &flags, ("rollout", "single-user", ROLLOUT_FLAG, Expect::Fallthrough), single_user),
        ];
        Fixture { set, store: LdStore { flags, segments }, cases }
    }

    /// sluice's variation index for context `i` of `case`.
    #[inline]
    fn sluice(&self, case: &Case, i: usize) -> Option<usize> {
        self.set.evaluate_index(case.index, &case.sluice[i & (CONTEXTS - 1)]).variation_index
    }

    /// LaunchDarkly's variation index for context `i` of `case`.
    #[inline]
    fn launchdarkly(&self, case: &Case, i: usize) -> Option<isize> {
        ld::evaluate(&self.store, &case.ld_flag, &case.ld[i & (CONTEXTS - 1)], None).variation_index
    }

    /// Evaluate `n` times, cycling through the case's contexts from `start`.
    fn run(&self, evaluator: Evaluator, case: &Case, start: usize, n: usize) {
        for i in start..start + n {
            match evaluator {
                Evaluator::Sluice => {
                    black_box(self.sluice(case, black_box(i)));
                }
                Evaluator::LaunchDarkly => {
                    black_box(self.launchdarkly(case, black_box(i)));
                }
            }
        }
    }

    /// Panics unless both evaluators agree on every context of every case, and every
    /// case reaches the rule (or fallthrough) it claims to.
    fn assert_agreement(&self) {
        for case in &self.cases {
            let mut counts = [0usize; 3];
            for (i, context) in case.sluice.iter().enumerate() {
                let detail = self.set.evaluate_index(case.index, context);
                match (case.expect, detail.reason) {
                    (Expect::Rule(want), Reason::RuleMatch { rule_index, .. }) => {
                        assert_eq!(rule_index, want, "{}: context {i}", case.id(Evaluator::Sluice));
                    }
                    (Expect::Fallthrough, Reason::Fallthrough { .. }) => {}
                    (want, got) => panic!("{}: context {i}: {got:?}, wanted {want:?}", case.id(Evaluator::Sluice)),
                }
                let sluice = detail.variation_index;
                let launchdarkly = self.launchdarkly(case, i);
                assert_eq!(
                    sluice.map(|v| v as isize),
                    launchdarkly,
                    "{}/{}: sluice and LaunchDarkly disagree on context {i}",
                    case.group,
                    case.name
                );
                if let Some(slot) = sluice.and_then(|v| counts.get_mut(v)) {
                    *slot += 1;
                }
            }
            println!(
                "agreement: {}/{}: both evaluators give the same variation for all {CONTEXTS} contexts \
                 (variations 0/1/2: {}/{}/{})",
                case.group, case.name, counts[0], counts[1], counts[2]
            );
        }
    }
}

/// Print heap allocations per evaluation for every evaluator and case.
fn allocation_report(fx: &Fixture) {
    println!("heap allocations per evaluation (after a warm-up pass over the contexts):");
    for evaluator in Evaluator::ALL {
        let n = match evaluator {
            Evaluator::Sluice => ALLOC_EVALS_SLUICE,
            Evaluator::LaunchDarkly => ALLOC_EVALS_LAUNCHDARKLY,
        };
        for case in &fx.cases {
            fx.run(evaluator, case, 0, CONTEXTS);
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            fx.run(evaluator, case, CONTEXTS, n);
            let count = ALLOCATIONS.load(Ordering::Relaxed) - before;
            let over = if evaluator == Evaluator::Sluice && count > 0 { "  OVER BUDGET (0)" } else { "" };
            println!(
                "  {:<40} {:>8.3} allocations/eval  ({count} over {n} evaluations){over}",
                case.id(evaluator),
                count as f64 / n as f64
            );
        }
    }
}

fn benches(c: &mut Criterion, fx: &Fixture) {
    for evaluator in Evaluator::ALL {
        for group_name in ["20-rule-flag", "rollout"] {
            let mut group = c.benchmark_group(format!("{}/{group_name}", evaluator.name()));
            for case in fx.cases.iter().filter(|c| c.group == group_name) {
                group.bench_function(case.name, |b| {
                    let mut i = 0usize;
                    match evaluator {
                        Evaluator::Sluice => b.iter(|| {
                            i = i.wrapping_add(1);
                            fx.sluice(case, black_box(i))
                        }),
                        Evaluator::LaunchDarkly => b.iter(|| {
                            i = i.wrapping_add(1);
                            fx.launchdarkly(case, black_box(i))
                        }),
                    }
                });
            }
            group.finish();
        }
    }
}

fn main() {
    let fx = Fixture::new();
    fx.assert_agreement();
    allocation_report(&fx);
    COUNTING.store(false, Ordering::Relaxed);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &fx);
    c.final_summary();
}
