//! Request body bytes → `JsonBody::parse`, `.model()`, `.stream()` and
//! `.rewrite(&[("model", "\"m\"")])`.
//!
//! Whenever the body parses, the rewritten body must be JSON again:
//! - always syntactically (checked with `serde::de::IgnoredAny`, which, like the
//!   `RawValue`s `JsonBody` is built from, does not range-check numbers), with a
//!   `model` that `JsonBody` itself reads back as `"m"`;
//! - and when the input is accepted by `serde_json::from_slice::<Value>` (the usual
//!   notion of "valid JSON" in the codebase), the output must be too, with
//!   `model == "m"`.
//!
//! `JsonBody` accepts numbers out of `f64` range (`{"e":1e777}`), which
//! `serde_json::Value` rejects; such a body is passed through as it was sent, so that
//! alone is not a failure here (see README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::proxy::request::JsonBody;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = JsonBody::parse(data) else { return };
    let _ = body.model();
    let _ = body.stream();
    let out = body.rewrite(&[("model", "\"m\"")]);
    let show = || {
        format!(
            "\n input: {:?}\noutput: {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        )
    };

    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out) {
        panic!("rewritten body is not JSON ({e}){}", show());
    }
    match JsonBody::parse(&out).map(|b| b.model().map(|m| m.into_owned())) {
        Ok(Ok(m)) if m == "m" => {}
        other => panic!("JsonBody of the rewritten body gives model {other:?}{}", show()),
    }

    if serde_json::from_slice::<Value>(data).is_ok() {
        let value: Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => panic!("input is a serde_json::Value but the rewritten body is not ({e}){}", show()),
        };
        assert_eq!(
            value.get("model").and_then(Value::as_str),
            Some("m"),
            "model not rewritten{}",
            show()
        );
    }
});
