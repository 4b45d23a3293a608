//! What judges and guardrails cost on the request path: the per-request sampling decision,
//! the capture of one streamed chunk, the guardrails of `config/judge-demo.yaml` on one
//! answer, and a whole sampled request's quality work (start, 20 chunks, the end: the
//! guardrails run and the answer is queued for its judge).
//!
//! Run: `cargo bench --bench quality`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::metrics::Metrics;
use sluice::quality::capture::{Budget, Capture, Held, Shape};
use sluice::quality::guardrail::{Answer, Guardrail};
use sluice::quality::{Pending, Quality};
use sluice::wire::Endpoint;

const CHUNK: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},\"finish_reason\":null}]}\n\n";

fn answer_text() -> String {
    "Thanks for waiting. Your order shipped on Monday and the tracking link is in your confirmation; \
     carriers sometimes take two extra days in busy weeks. If it has not arrived by Friday, reply here \
     and we will send a replacement at no cost. "
        .repeat(6)
}

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string("config/judge-demo.yaml").unwrap();
    let loaded = sluice::config::parse(&text, "config/judge-demo.yaml", &|_| None).unwrap();
    let config = &loaded.config;
    let metrics = Metrics::new().unwrap();
    let quality = Quality::build(config, &metrics, None).unwrap();
    let flag = quality.flag(&config.flags["support-bot"]);

    let mut g = c.benchmark_group("quality");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("sample (1 judge, 2 guardrails)", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(flag.sample(format!("{i:016x}").as_bytes()))
        })
    });
    let budget = Budget::new(32 << 20);
    g.bench_function("capture one streamed chunk", |b| {
        let mut capture = Capture::new(Shape::Chat, usize::MAX / 2, Held::take(&budget, 0).unwrap());
        b.iter(|| capture.feed_events(black_box(CHUNK.as_bytes())))
    });
    let guardrails: Vec<Guardrail> = config.guardrails.values().map(|g| Guardrail::compile(g).unwrap()).collect();
    let text = answer_text();
    let answer =
        Answer { text: &text, tools: "", finish_reason: Some("stop"), response_format: None, truncated: false };
    g.bench_function(format!("guardrails on a {} B answer ({} checks)", text.len(), guardrails.len()), |b| {
        b.iter(|| guardrails.iter().filter(|g| g.violated(black_box(&answer))).count())
    });
    let request =
        Bytes::from_static(br#"{"model":"support-bot","messages":[{"role":"user","content":"My order is late"}]}"#);
    let guardrails_only = quality.flag(&{
        let mut f = config.flags["support-bot"].clone();
        f.judges.clear();
        f
    });
    let guardrail_arm = guardrails_only.arm(&metrics, "support-bot", "control");
    let sampled = guardrails_only.sample(b"any");
    g.bench_function("a streamed request's guardrails: start, 20 chunks, finish", |b| {
        b.iter(|| {
            let mut p = Pending::start(sampled, Endpoint::ChatCompletions, &budget, 64 << 10, &request, None).unwrap();
            p.arm(&guardrail_arm);
            for _ in 0..20 {
                p.feed_events(CHUNK.as_bytes());
            }
            p.finish(true);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
