//! The admin write path: how long from a change's request to the snapshot serving it
//! (`State::apply`: validate the whole config, build the snapshot, append and fsync the
//! audit line, replace `state.json`, swap). The change is in effect for the next request
//! once `apply` returns, so this is the propagation time.
//!
//! Also what a long history costs: opening a state directory whose log holds 2,000 AI
//! config versions with 2 KB prompts (the start-up scan), and one page of 50 audit entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use sluice::state::{
    AuditEntry, AuditQuery, Change, FileStore, Kind, MemoryStore, ObjectChange, Request, State, Store,
};

fn state(store: Box<dyn Store>) -> State {
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let mut loaded = sluice::config::parse(&text, "config/sluice.yaml", &|_| None).unwrap();
    let metrics = Arc::new(sluice::metrics::Metrics::new().unwrap());
    let targeting = std::mem::take(&mut loaded.targeting);
    let snapshot = sluice::snapshot::Snapshot::build(&loaded.config, targeting, &metrics, None).unwrap();
    State::open(store, loaded.value, "config/sluice.yaml", snapshot, metrics).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stores: [(&str, Box<dyn Store>); 2] =
        [("file", Box::new(FileStore::open(&dir).unwrap())), ("memory", Box::new(MemoryStore::default()))];
    for (name, store) in stores {
        let state = state(store);
        let request = Request { actor: "bench".into(), reason: "bench".into(), if_match: None, fence: None };
        let mut on = false;
        c.bench_function(&format!("state/apply-kill-or-restore-{name}-store"), |b| {
            b.iter(|| {
                let change = Change::SetOn { flag: "support-bot".into(), on };
                on = !on;
                state.apply(change, &request).unwrap()
            })
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state directory whose log holds `n` AddVersion entries of a 2 KB prompt each, as
/// `State::apply` writes them (a patch appending the version).
fn long_history(dir: &std::path::Path, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = Vec::new();
    for revision in 1..=n {
        let version = json!({"version": revision, "provider": "mock", "model": "mock-1",
            "messages": [{"role": "system", "content": "You answer support questions. ".repeat(70)}]});
        let patch = serde_json::from_value(json!({"append": {"versions": [version]}})).unwrap();
        let change =
            ObjectChange { kind: Kind::AiConfig, key: "bot".into(), before: None, after: None, patch: Some(patch) };
        let entry = AuditEntry {
            revision,
            time: "2026-12-01T00:00:00.000Z".into(),
            actor: "ops".into(),
            reason: format!("version {revision}"),
            changes: vec![change],
            file_objects: None,
            dropped: false,
        };
        log.extend(serde_json::to_vec(&entry).unwrap());
        log.push(b'\n');
    }
    std::fs::write(dir.join("audit.jsonl"), &log).unwrap();
    let stored = json!({"revision": n, "docs": {}, "file": {}});
    std::fs::write(dir.join("state.json"), stored.to_string()).unwrap();
}

fn bench_history(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    long_history(&dir, 2000);
    let size = std::fs::metadata(dir.join("audit.jsonl")).unwrap().len();
    eprintln!("audit.jsonl with 2,000 versions: {size} bytes");
    c.bench_function("state/open-a-log-of-2000-versions", |b| b.iter(|| FileStore::open(&dir).unwrap()));
    let store = FileStore::open(&dir).unwrap();
    let query = AuditQuery { limit: 50, ..AuditQuery::default() };
    c.bench_function("state/audit-page-of-50-of-2000", |b| {
        b.iter(|| assert_eq!(query.run(&store).unwrap().entries.len(), 50))
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench, bench_history);
criterion_main!(benches);
