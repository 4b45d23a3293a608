//! The optional prerequisites of the suite, in one place: `cargo test` hides a passing
//! test's output, so this test writes which are missing, and the tests that print
//! `SKIPPED …` for want of them, where the run's output shows it. It fails when a
//! prerequisite made required (`SLUICE_REQUIRE_SDK=1`, `SLUICE_REQUIRE_PROMTOOL=1`,
//! `SLUICE_REQUIRE_CONFORMANCE=1`, as in `.ci/run`) is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;

use common::PREREQUISITES;

#[test]
fn optional_prerequisites_are_reported_and_the_required_ones_are_here() {
    let mut skipping = 0;
    let mut report = String::new();
    let mut required_missing = Vec::new();
    for p in PREREQUISITES {
        let Some(why) = (p.missing)() else { continue };
        skipping += p.tests.len();
        report.push_str(&format!("SKIPPED for want of {} ({why}):\n", p.what));
        for test in p.tests {
            report.push_str(&format!("  {test}\n"));
        }
        if p.required() {
            required_missing.push(format!("{}=1 but {} is missing: {why}", p.require.unwrap_or_default(), p.what));
        }
    }
    report.push_str(&format!(
        "{skipping} test(s) skipped for want of an optional prerequisite (see the README's Tests section)\n"
    ));
    // Straight to standard error: `cargo test` shows it even though this test passes.
    let _ = write!(std::io::stderr().lock(), "\n{report}");
    assert!(required_missing.is_empty(), "{}", required_missing.join("\n"));
}
