//! What one OFREP evaluation costs inside sluice, without the network: the context read
//! from the request body (`ofrep::context_of`), the flag evaluated and the answer written
//! — for one flag (`POST /ofrep/v1/evaluate/flags/{key}`: a 20-rule-free targeted flag
//! and the example's routing flag, whose value is its AI config version) and for the bulk
//! form over 50 flags (`POST /ofrep/v1/evaluate/flags`: every flag, the answer hashed for
//! its ETag). The flags are the example config's plus 49 generated ones: a target, two
//! rules and a 50/50 rollout each.
//!
//! Run: `cargo bench --bench ofrep`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use sluice::proxy::ofrep;
use sluice::snapshot::Snapshot;

fn snapshot() -> Snapshot {
    let mut text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let mut flags = String::new();
    for i in 0..49 {
        flags.push_str(&format!(
            "  plain-{i}:\n    variations:\n      - {{name: a, value: {i}}}\n      - {{name: b, value: \"v{i}\"}}\n    targets:\n      - {{variation: b, values: [vip-{i}]}}\n    rules:\n      - id: r1\n        clauses:\n          - {{attribute: email, op: endsWith, values: [\"@example-{i}.com\"]}}\n        variation: b\n      - id: r2\n        clauses:\n          - {{attribute: plan, op: in, values: [gold, platinum]}}\n        variation: a\n    fallthrough:\n      rollout:\n        variations:\n          - {{variation: a, percent: 50}}\n          - {{variation: b, percent: 50}}\n"
        ));
    }
    text = text.replacen("\nsegments:", &format!("\n{flags}segments:"), 1);
    let mut loaded = sluice::config::parse(&text, "config/sluice.yaml", &|_| None).unwrap();
    let targeting = std::mem::take(&mut loaded.targeting);
    let metrics = sluice::metrics::Metrics::new().unwrap();
    Snapshot::build(&loaded.config, targeting, &metrics, None).unwrap()
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    let client = snapshot.clients.authenticate(b"sk-sluice-demo").unwrap().clone();
    assert_eq!(snapshot.targeting.set.keys().count(), 50);
    let body =
        br#"{"context": {"targetingKey": "user-1234", "email": "ada@example.org", "plan": "free", "name": "Ada"}}"#;
    let headers = HeaderMap::new();
    // The answers are what the endpoints send.
    let context = ofrep::context_of(body).unwrap();
    assert_eq!(ofrep::single(&snapshot, &client, "plain-7", &context).status(), 200);
    assert_eq!(ofrep::single(&snapshot, &client, "support-bot", &context).status(), 200);
    assert_eq!(ofrep::bulk(&snapshot, &client, &context, &headers).status(), 200);

    let mut g = c.benchmark_group("ofrep");
    for flag in ["plain-7", "support-bot"] {
        g.bench_function(format!("single/{flag}"), |b| {
            b.iter(|| {
                let context = ofrep::context_of(black_box(body)).unwrap().with(client.context.clone());
                black_box(ofrep::single(&snapshot, &client, flag, &context))
            })
        });
    }
    g.bench_function("bulk/50-flags", |b| {
        b.iter(|| {
            let context = ofrep::context_of(black_box(body)).unwrap().with(client.context.clone());
            black_box(ofrep::bulk(&snapshot, &client, &context, &headers))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
