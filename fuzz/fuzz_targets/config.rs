//! Config file text → `sluice::config::parse` (YAML loader, deserializer, validation).
//! It may reject anything, but never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    // A couple of variables that are set, so `${VAR}` interpolation is exercised both ways.
    match name {
        "PORT" => Some("9000".to_owned()),
        "KEY" => Some("sk-test".to_owned()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sluice::config::yaml::load(text, &env);
    let _ = sluice::config::parse(text, "f.yaml", &|_| None);
});
