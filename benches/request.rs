//! What targeting, rendering and rewriting add to one request, without the network:
//! parse the body, build the context from `x-sluice-context`, evaluate the flag, render
//! the AI config version's messages and splice the edits into the body — the work
//! `proxy::targeted` does before sending upstream — on the example config's
//! `support-bot` flag. Compare with `pass-through`, which only splices `model`.
//!
//! Run: `cargo bench --bench request`
// Set-up failures should stop a benchmark loudly; it is not production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use sluice::aiconfig::RenderScope;
use sluice::proxy::context;
use sluice::proxy::request::JsonBody;
use sluice::snapshot::Snapshot;

const BODY: &str = r#"{"model":"support-bot","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Where is my order #1234? It was due yesterday."}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"lookup_order","parameters":{"type":"object","properties":{"id":{"type":"string"}}}}}],"stream":false}"#;

fn snapshot() -> Snapshot {
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap_or_default();
    let mut loaded = match sluice::config::parse(&text, "config/sluice.yaml", &|_| None) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let targeting = std::mem::take(&mut loaded.targeting);
    let metrics = match sluice::metrics::Metrics::new() {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    match Snapshot::build(&loaded.config, targeting, &metrics, None) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    let client = match snapshot.clients.authenticate(b"sk-sluice-demo") {
        Some(c) => c.clone(),
        None => panic!("demo key"),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-sluice-context",
        HeaderValue::from_static(
            r#"{"kind":"user","key":"customer-42","name":"Ada","email":"ada@example.com","plan":"gold"}"#,
        ),
    );
    c.bench_function("request/targeted-rewrite", |b| {
        b.iter(|| {
            let body = JsonBody::parse(black_box(BODY.as_bytes())).ok()?;
            let model = body.model().ok()?;
            let route = snapshot.flag_route(&model)?;
            let ctx = context::build(&headers, &body, &client, false, &model).ok()?;
            let vars = context::variables(&headers).ok()?;
            let detail = snapshot.targeting.set.evaluate_index(route.index, &ctx.context);
            let variant = &route.variants[detail.variation_index?];
            let scope = RenderScope { ldctx: &ctx.ldctx, vars: &vars, client: &client.template_value };
            let edits = variant.version.edits(true, body.get("messages"), body.get("tools"), &scope).ok()?;
            let edits: Vec<(&str, &str)> = edits.iter().map(|(k, v)| (*k, &**v)).collect();
            Some(black_box(body.rewrite(&edits)).len())
        })
    });
    c.bench_function("request/pass-through-rewrite", |b| {
        b.iter(|| {
            let body = JsonBody::parse(black_box(BODY.as_bytes())).ok()?;
            let _ = body.model().ok()?;
            Some(black_box(body.rewrite(&[("model", "\"mock-1\"")])).len())
        })
    });
}

/// What the response path adds per request and per stream chunk.
fn accounting(c: &mut Criterion) {
    let metrics = match sluice::metrics::Metrics::new() {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let labels = sluice::metrics::Labels {
        flag: "support-bot".into(),
        variation: "candidate".into(),
        ai_config: "support-bot".into(),
        version: "2".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
    };
    // Priced, as a production route would be: the cost is part of recording.
    let price = sluice::config::signals::Price { input: 0.15, cached_input: Some(0.075), output: 0.6 };
    let route = metrics.route(&labels, Some(price));
    let finished = sluice::metrics::Finished {
        outcome: sluice::proxy::Outcome::Ok,
        duration: std::time::Duration::from_millis(850),
        ttft: Some(std::time::Duration::from_millis(240)),
        overhead: std::time::Duration::from_micros(30),
        usage: Some(sluice::metrics::Usage { input: 420, output: 180, cached: 0 }),
        cost: None,
    };
    c.bench_function("metrics/record-request", |b| b.iter(|| route.record(black_box(&finished))));

    const CHUNK: &[u8] = br#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1732400000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}

"#;
    let chunk = bytes::Bytes::from_static(CHUNK);
    c.bench_function("sse/tap-chunk-strip-usage", |b| {
        let mut tap = sluice::proxy::sse::Tap::new(true);
        b.iter(|| black_box(tap.feed(black_box(chunk.clone()))).0.len())
    });
    c.bench_function("sse/tap-chunk-pass", |b| {
        let mut tap = sluice::proxy::sse::Tap::new(false);
        b.iter(|| black_box(tap.feed(black_box(chunk.clone()))).0.len())
    });
}

/// Per streamed event: what each provider kind's rewriter costs on top of the tap.
fn translation(c: &mut Criterion) {
    use sluice::providers::{anthropic, azure, openai};
    const TEXT_DELTA: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n";
    const START: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    c.bench_function("anthropic/stream-text-delta", |b| {
        let mut t = anthropic::stream::Translator::new(&anthropic::Reply::default(), 1);
        t.feed(START);
        b.iter(|| black_box(t.feed(black_box(TEXT_DELTA))).len())
    });
    const AZURE_CHUNK: &[u8] = br#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}}}]}

"#;
    c.bench_function("azure/normalise-chunk", |b| {
        let mut n = azure::StreamNormaliser::new();
        b.iter(|| black_box(n.feed(black_box(AZURE_CHUNK))).len())
    });
    const OPENAI_CHUNK: &[u8] = br#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null}]}

"#;
    c.bench_function("openai/tool-index-fill-pass", |b| {
        let mut f = openai::ToolIndexFiller::new();
        b.iter(|| black_box(f.feed(black_box(OPENAI_CHUNK))).len())
    });
}

criterion_group!(benches, bench, accounting, translation);
criterion_main!(benches);
