//! What quality signals cost: signing and checking a response token (every routed
//! answer signs one), accepting one feedback event (`POST /v1/feedback` without the
//! network: parse, verify, check, de-duplicate, count), and computing an experiment's
//! results for 10 arms × 10 metrics (the admin API's `GET /admin/v1/experiments/{flag}`).
//!
//! Run: `cargo bench --bench signals`
// Set-up failures should stop a benchmark loudly; it is not production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use sluice::metrics::{Metrics, SignalKind};
use sluice::snapshot::Snapshot;
use sluice::token::{Claims, Signer};

const KEY: &str = "feedback-key-0123456789abcdef-0123456789";

fn claims(nonce: u64, issued_ms: u64) -> Claims {
    Claims {
        issued_ms,
        nonce: nonce.to_be_bytes(),
        random_context: false,
        iteration: 1,
        version: 2,
        context: [7; 8],
        flag: "support-bot".into(),
        variation: "candidate".into(),
        ai_config: "support-bot".into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn snapshot(metrics: &Metrics) -> Snapshot {
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let text = format!(
        "{text}\nfeedback: {{key: {KEY}, dedup_entries: 10000000}}\n{}",
        if text.contains("\nmetrics:") { "" } else { "metrics: {thumbs_up: {type: boolean, direction: higher}}\n" }
    );
    let mut loaded = sluice::config::parse(&text, "config/sluice.yaml", &|_| None).unwrap();
    let targeting = std::mem::take(&mut loaded.targeting);
    Snapshot::build(&loaded.config, targeting, metrics, None).unwrap()
}

fn tokens(c: &mut Criterion) {
    let signer = Signer::new(KEY.as_bytes());
    let t = signer.sign(&claims(1, now_ms())).unwrap();
    c.bench_function("token/sign", |b| b.iter(|| signer.sign(black_box(&claims(1, 1_764_600_000_000)))));
    c.bench_function("token/verify", |b| b.iter(|| signer.verify(black_box(&t)).is_ok()));
}

fn feedback(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let snapshot = snapshot(&metrics);
    let signer = Signer::new(KEY.as_bytes());
    let mut nonce = 0u64;
    let mut group = c.benchmark_group("feedback");
    // Every event is new (a fresh token), so each one is counted: the de-duplication set
    // grows by one entry per event, as in production.
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    group.bench_function("accept", |b| {
        b.iter_batched(
            || {
                nonce += 1;
                let mut cl = claims(nonce, now_ms());
                cl.iteration = snapshot.flag_route("support-bot").map_or(0, |r| r.iteration);
                let token = signer.sign(&cl).unwrap();
                json!({"token": token, "metric": "thumbs_up", "value": nonce.is_multiple_of(2)}).to_string()
            },
            |body| {
                let answer = sluice::proxy::feedback::accept(&snapshot, body.as_bytes(), now_ms());
                assert!(answer.is_ok(), "{answer:?}");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn results(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let arms: Vec<String> = (0..10).map(|i| format!("arm-{i}")).collect();
    let keys: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let defs: BTreeMap<String, sluice::config::signals::MetricDef> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let kind = if i % 2 == 0 { "boolean" } else { "numeric" };
            (k.clone(), serde_json::from_value(json!({"type": kind, "direction": "higher"})).unwrap())
        })
        .collect();
    for (a, arm) in arms.iter().enumerate() {
        let stats = metrics.guard_stats("exp", arm);
        for (i, key) in keys.iter().enumerate() {
            let kind = if i % 2 == 0 { SignalKind::Boolean } else { SignalKind::Numeric };
            let signal = stats.signal(key, kind, true);
            for n in 0..1000u64 {
                let x = if kind == SignalKind::Boolean {
                    f64::from(u8::from((n * 7 + a as u64) % 10 < 6))
                } else {
                    (n % 13) as f64 + a as f64 * 0.1
                };
                signal.record(x);
            }
        }
    }
    let weights: Vec<serde_json::Value> = arms.iter().map(|a| json!({"variation": a, "percent": 10})).collect();
    let doc = json!({
        "variations": arms.iter().map(|a| json!({"name": a})).collect::<Vec<_>>(),
        "fallthrough": {"rollout": {"variations": weights}},
        "experiment": {
            "control": "arm-0",
            "primary": "feedback:m0",
            "secondary": keys[1..].iter().map(|k| format!("feedback:{k}")).collect::<Vec<_>>(),
        },
    });
    c.bench_function("experiment/results-10-arms-10-metrics", |b| {
        b.iter(|| {
            let r = sluice::experiment::results("exp", black_box(&doc), &defs, &metrics).unwrap().unwrap();
            assert_eq!(r.metrics.len(), 10);
            r
        })
    });
}

criterion_group!(benches, tokens, feedback, results);
criterion_main!(benches);
