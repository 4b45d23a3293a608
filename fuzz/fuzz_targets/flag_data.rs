//! LaunchDarkly flag JSON → `FlagData::from_ld_json` → `FlagSet::compile` → evaluate every
//! flag for a few fixed contexts. Nothing on this path may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::flags::{Context, FlagData, FlagSet};

fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        [
            r#"{"kind":"user","key":"u1","name":"Ann","email":"ann@example.com","plan":"gold","age":42,"version":"1.2.3","created":"2024-01-02T03:04:05Z","tags":["a","b"],"nested":{"x":{"y":1}}}"#,
            r#"{"kind":"multi","user":{"key":"u2","anonymous":true,"team":"demo"},"org":{"key":"o1","name":"Org","tier":3}}"#,
            r#"{"key":"","custom":{"plan":"free","n":1.5}}"#,
        ]
        .iter()
        .filter_map(|s| Context::parse(s.as_bytes()).ok())
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(flags) = FlagData::from_ld_json(value) else { return };
    let set = FlagSet::compile(&flags);
    let _ = set.problems();
    let keys: Vec<String> = set.keys().map(str::to_owned).collect();
    for ctx in contexts() {
        for key in &keys {
            let detail = set.evaluate(key, ctx);
            let _ = detail.reason.to_json();
        }
        // A key that is not there.
        let _ = set.evaluate("\u{0}no-such-flag", ctx);
    }
});
