//! `x-sluice-context` header bytes → `Context::parse`. A context that parses must
//! survive `to_json` → `from_json` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::flags::Context;

fuzz_target!(|data: &[u8]| {
    let Ok(ctx) = Context::parse(data) else { return };
    let json = ctx.to_json();
    match Context::from_json(&json) {
        Ok(again) => assert_eq!(again, ctx, "context changed on a to_json/from_json round trip; JSON: {json}"),
        Err(e) => panic!("to_json of a parsed context does not parse again ({e}); JSON: {json}"),
    }
});
