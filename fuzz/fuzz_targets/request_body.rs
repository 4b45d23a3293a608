//! Request body bytes → `JsonBody::parse`, `.model()`, `.stream()` and
//! `.rewrite(&[("model", "\"m\"")])`. When the body parses, the rewritten body must be
//! valid JSON whose `model` is `"m"`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proxy::request::JsonBody;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = JsonBody::parse(data) else { return };
    let _ = body.model();
    let _ = body.stream();
    let out = body.rewrite(&[("model", "\"m\"")]);
    let value: serde_json::Value = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(e) => panic!(
            "rewritten body is not JSON ({e}); input is JSON for serde_json::Value: {}\n input: {:?}\noutput: {:?}",
            serde_json::from_slice::<serde_json::Value>(data).is_ok(),
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(
        value.get("model").and_then(|m| m.as_str()),
        Some("m"),
        "model not rewritten\n input: {:?}\noutput: {:?}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&out)
    );
});
