//! The admin write path: how long from a change's request to the snapshot serving it
//! (`State::apply`: validate the whole config, build the snapshot, append and fsync the
//! audit line, replace `state.json`, swap). The change is in effect for the next request
//! once `apply` returns, so this is the propagation time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::state::{Change, FileStore, MemoryStore, Request, State, Store};

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
        let request = Request { actor: "bench".into(), reason: "bench".into(), if_match: None };
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

criterion_group!(benches, bench);
criterion_main!(benches);
