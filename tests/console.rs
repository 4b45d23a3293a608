//! The web console (`/ui/`) in a real browser: `sluice serve` on the example config (plus
//! a guarded flag whose treatment always fails) and `tests/console/console.test.mjs`,
//! which drives headless Chromium with playwright-core: sign-in, the flag list, a rollout
//! through the review step, kill, a concurrent change's 412, a guard trip and re-arm, AI
//! config versions, a read token's disabled controls; a screenshot of every page in
//! `target/console-screenshots/`, and no console errors.
//!
//! Needs Chromium (`apt-get install chromium`), Node.js and `npm ci --prefix tests/console`
//! (`.ci/run` does all three). Without them the test prints a loud SKIPPED line and passes —
//! unless `SLUICE_REQUIRE_BROWSER=1`, as in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{chromium, example_config_in, have, must_replace, spawn_serving, temp_dir, BROWSER};

const WRITE: &str = "sluice-admin-demo-token";
const READ: &str = "sluice-read-demo-token";

/// A flag whose treatment's provider answers every request with a 500, and a guard that
/// rolls it back within a few dozen requests.
const GUARDED: &str = r#"
  guarded-bot:
    variations:
      - {name: control, ai_config: guarded, version: 1}
      - {name: treatment, ai_config: guarded, version: 2}
    off_variation: control
    fallthrough:
      rollout:
        variations:
          - {variation: control, percent: 50}
          - {variation: treatment, percent: 50}
    guard:
      control: control
      treatment: treatment
      metrics:
        - {metric: error_rate}
      min_samples: 40
      min_events: 3
      check_interval: 100ms
      circuit_breaker: {error_rate: 0.9, min_requests: 20}
"#;

#[test]
fn the_console_in_a_real_browser() {
    if !have(&BROWSER, "console::the_console_in_a_real_browser") {
        return;
    }
    let dir = temp_dir("console");
    let cfg = example_config_in(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = must_replace(
        &text,
        "\n  judge:\n",
        "\n  failing:\n    kind: mock\n    mock: {error_rate: 1.0, error_status: 500}\n  judge:\n",
    );
    let text = must_replace(
        &text,
        "\nai_configs:",
        "\nai_configs:\n  guarded:\n    versions:\n      - {version: 1, provider: mock, model: mock-1}\n      - {version: 2, provider: failing, model: mock-1}",
    );
    let text = must_replace(&text, "\nsegments:", &format!("{GUARDED}\nsegments:"));
    std::fs::write(&cfg, text).unwrap();

    let bin = env!("CARGO_BIN_EXE_sluice");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"]).arg(&cfg);
    let log = dir.path().join("sluice.log");
    let (mut child, data, admin) = spawn_serving(cmd, &log);

    // Under `target/`, kept after the run.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg("tests/console/console.test.mjs")
        .env("SLUICE_ADMIN", format!("http://{admin}"))
        .env("SLUICE_DATA", format!("http://{data}"))
        .env("SLUICE_WRITE_TOKEN", WRITE)
        .env("SLUICE_READ_TOKEN", READ)
        .env("SLUICE_GATEWAY_KEY", "sk-sluice-demo")
        .env("SLUICE_BIN", bin)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium())
        .output()
        .unwrap();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    if !out.status.success() {
        let log = common::strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("sluice::proxy::record")).collect();
        let tail = tail[tail.len().saturating_sub(40)..].join("\n");
        panic!("the browser test failed:\n{stdout}\n{stderr}\nsluice's log (without the access log):\n{tail}");
    }
    assert!(status.success() || status.code().is_none(), "sluice ended with {status}");
    let taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(taken >= 10, "{taken} screenshots in {}", shots.display());
}
