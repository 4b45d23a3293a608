//! Guarded releases. Most tests drive the guard directly: a [`State`] opened from config
//! text, synthetic per-arm statistics recorded into its `GuardStats`, and
//! [`Guards::check_all`] called at the times of a test clock — no traffic racing the
//! task's tick, no sleeps standing in for "the guard has looked". They cover trips, equal
//! arms, the check interval, ramps step by step, a restart mid-ramp, pause and resume,
//! re-arming, the circuit breaker and a guard that does not compile. One test runs real
//! traffic through a gateway (its own guard task on the system clock) and waits on
//! conditions until the treatment is rolled back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use sluice::guard::{Clock, Guards, Now, Pass};
use sluice::metrics::Finished;
use sluice::proxy::Outcome;
use sluice::state::{AuditEntry, AuditQuery, Change, FileStore, MemoryStore, Request, State, Store};

const WRITE: &str = "admin-write-token-0123456789";

fn guarded_config(treatment_error_rate: f64, webhook: &str, guard_extra: &str, fallthrough: &str) -> String {
    must_replace(&config("http://127.0.0.1:9/v1", ""), "\naliases:\n  fast: up/gpt-x\n", "\n")
        + &format!(
            r#"  good:
    kind: mock
  flaky:
    kind: mock
    mock: {{error_rate: {treatment_error_rate}, error_status: 500}}
aliases:
  fast: up/gpt-x
admin:
  tokens:
    - {{name: ops, token: {WRITE}, role: write}}
ai_configs:
  bot:
    versions:
      - {{version: 1, provider: good, model: m1}}
      - {{version: 2, provider: flaky, model: m2}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    fallthrough: {fallthrough}
    guard:
      control: control
      treatment: treatment
      metrics:
        - {{metric: error_rate}}
        - {{metric: latency, margin: "50%"}}
      min_samples: 40
      min_events: 3
      check_interval: 50ms
      circuit_breaker: {{error_rate: 0.9, min_requests: 20}}
      # The direct tests record arms that do not follow the split.
      srm_check: false
      webhook: {webhook}
{guard_extra}"#
        )
}

const TEN_PERCENT: &str =
    "{rollout: {variations: [{variation: control, percent: 90}, {variation: treatment, percent: 10}]}}";

const RAMP: &str = "      ramp:\n        - {percent: 10, min_duration: 50ms, min_samples: 5}\n        - {percent: 50, min_duration: 50ms, min_samples: 5}\n        - {percent: 100, min_duration: 50ms, min_samples: 5}\n";

/// How long a wait on a condition may last before the test gives up (only a hung test
/// ever reaches it).
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// The guard driven directly, on a test clock.

/// A clock that moves only when the test says so.
struct TestClock(Mutex<Now>);

impl TestClock {
    fn new() -> TestClock {
        // 2026-09-21T…Z: far from the real time, so a time read from the system clock
        // anywhere in a decision would show.
        TestClock(Mutex::new(Now { instant: Instant::now(), wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000) }))
    }

    fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap();
        *now = now.after(d);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Now {
        *self.0.lock().unwrap()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Open a state directory. Its lock may be held for a moment after the previous state
/// closed it: a child process that another test thread is spawning holds a copy of every
/// descriptor until it execs. So "in use" is retried until a deadline.
fn file_store(dir: &Path) -> FileStore {
    eventually_blocking(Duration::from_secs(30), || match FileStore::open(dir) {
        Ok(store) => Some(store),
        Err(e) if e.to_string().contains("in use by another sluice") => None,
        Err(e) => panic!("cannot open {}: {e}", dir.display()),
    })
}

/// A state and its guards, with no listener and no guard task: only the test checks.
struct Rig {
    state: Arc<State>,
    guards: Guards,
}

impl Rig {
    fn open(yaml: &str, store: Box<dyn Store>) -> Rig {
        let loaded = sluice::config::parse(yaml, "test.yaml", &|_| None).unwrap();
        let (value, file, snapshot, metrics) = sluice::server::prepare(loaded).unwrap().into_parts();
        let state = Arc::new(State::open(store, value, &file, snapshot, metrics).unwrap());
        let guards = Guards::new(Arc::clone(&state), tokio::runtime::Handle::current());
        Rig { state, guards }
    }

    fn in_memory(yaml: &str) -> Rig {
        Rig::open(yaml, Box::new(MemoryStore::default()))
    }

    /// One pass of the guard at the clock's time.
    fn check(&self, clock: &TestClock) -> Pass {
        self.guards.check_all(clock.now())
    }

    /// Record `ok` successful requests (latencies 80–120 ms, the same spread in every
    /// call) and `errors` upstream errors into `variation`'s statistics.
    fn record(&self, variation: &str, ok: u64, errors: u64) {
        let stats = self.state.gateway().metrics.guard_stats("bot", variation);
        let finished = |outcome, ms| Finished {
            outcome,
            duration: Duration::from_millis(ms),
            ttft: None,
            overhead: Duration::ZERO,
            usage: None,
            cost: None,
        };
        for i in 0..ok {
            stats.record(&finished(Outcome::Ok, 80 + (i % 5) * 10));
        }
        for _ in 0..errors {
            stats.record(&finished(Outcome::UpstreamError, 5));
        }
    }

    fn flag(&self) -> Value {
        self.state.current().docs.flags["bot"].clone()
    }

    fn guard(&self) -> Value {
        self.flag()["guard"].clone()
    }

    fn revision(&self) -> u64 {
        self.state.revision()
    }

    /// The audit entries of `bot`, newest first.
    fn audit(&self) -> Vec<AuditEntry> {
        let query = AuditQuery { flag: Some("bot".into()), limit: 100, ..AuditQuery::default() };
        self.state.audit(&query).unwrap().entries
    }

    /// The guard's latest check of `bot`, as `/admin/v1/guards` shows it.
    fn status(&self) -> Value {
        let all = serde_json::to_value(self.guards.status()).unwrap();
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
        all[0].clone()
    }

    fn decisions(&self) -> Vec<String> {
        let s = self.status();
        s["metrics"].as_array().unwrap().iter().map(|m| m["decision"].as_str().unwrap().to_string()).collect()
    }

    /// What an operator does through the admin API (`pause`, `resume`, `rearm`).
    fn set_guard(&self, state: &'static str, restart: bool) {
        let request =
            Request { actor: "ops".into(), reason: format!("{state} by a person"), if_match: None, fence: None };
        self.state.apply(Change::GuardState { flag: "bot".into(), state, restart }, &request).unwrap();
    }
}

fn webhook_calls(hook: &Upstream) -> Vec<Value> {
    hook.requests.lock().unwrap().iter().map(Recorded::json).collect()
}

#[tokio::test]
async fn a_regressing_treatment_is_rolled_back_on_the_test_clock() {
    let hook = Upstream::start(json_reply("{}")).await;
    let rig = Rig::in_memory(&guarded_config(0.0, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT));
    let clock = TestClock::new();
    let start = rig.revision();
    // The first check opens the window: what the arms do from now on.
    assert_eq!(rig.check(&clock).checked, ["bot"]);

    // Below the floor (40 per arm): the check runs and decides nothing, although 20 % of
    // the treatment's requests fail.
    rig.record("control", 30, 0);
    rig.record("treatment", 24, 6);
    clock.advance(Duration::from_millis(50));
    let pass = rig.check(&clock);
    assert_eq!(pass.checked, ["bot"]);
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(rig.decisions(), ["insufficient", "insufficient"]);
    assert_eq!(rig.status()["metrics"][0]["treatment_samples"], 30);

    // Over the floor, but the check interval (50 ms on the test clock) has not passed.
    rig.record("control", 170, 0);
    rig.record("treatment", 136, 34);
    clock.advance(Duration::from_millis(49));
    let pass = rig.check(&clock);
    assert!(pass.checked.is_empty() && pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(rig.revision(), start);

    clock.advance(Duration::from_millis(1));
    let pass = rig.check(&clock);
    assert_eq!(pass.checked, ["bot"]);
    assert_eq!(pass.wrote, [start + 1], "one revision: the rollback");
    assert_eq!(rig.guard()["state"], "rolled_back");
    // All of the treatment's traffic goes to control.
    let weights = &rig.flag()["fallthrough"]["rollout"]["variations"];
    let percent =
        |v: &str| weights.as_array().unwrap().iter().find(|w| w["variation"] == v).unwrap()["percent"].clone();
    assert_eq!((percent("control"), percent("treatment")), (json!(100.0), json!(0.0)), "{weights}");

    // The audit entry says why, at the test clock's time.
    let entry = &rig.audit()[0];
    assert_eq!((entry.revision, entry.actor.as_str()), (start + 1, "guard"));
    assert_eq!(entry.time, rfc3339(clock.now().wall));
    let reason = &entry.reason;
    assert!(reason.contains("error_rate") && reason.contains("Λ") && reason.contains("interval"), "{reason}");
    // Metrics, and the status.
    let text = rig.state.gateway().metrics.render();
    assert!(text.contains(r#"sluice_guard_trips_total{flag="bot",metric="error_rate"} 1"#), "{text}");
    assert!(text.contains(r#"sluice_guard_state{flag="bot",metric="error_rate"} 3"#), "{text}");
    let status = rig.status();
    assert_eq!((&status["state"], &status["metrics"][0]["metric"]), (&json!("rolled_back"), &json!("error_rate")));
    assert_eq!(status["checked_at"], rfc3339(clock.now().wall));
    // The status says why it tripped: the audit entry's reason, when and at which revision.
    let trip = &status["last_trip"];
    assert_eq!(
        (&trip["metric"], &trip["revision"], &trip["reason"]),
        (&json!("error_rate"), &json!(start + 1), &json!(reason))
    );
    assert_eq!(trip["at"], rfc3339(clock.now().wall));
    // The webhook is told, off the check.
    eventually(PATIENCE, async || !webhook_calls(&hook).is_empty()).await;
    let call = &webhook_calls(&hook)[0];
    assert_eq!((&call["event"], &call["flag"], &call["metric"]), (&json!("trip"), &json!("bot"), &json!("error_rate")));
    assert!(call["lambda"].as_f64().unwrap() >= 20.0 && call["treatment_samples"].as_u64().unwrap() >= 40, "{call}");

    // Sticky: later checks look, and change nothing.
    rig.record("treatment", 0, 100);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        let pass = rig.check(&clock);
        assert_eq!(pass.checked, ["bot"]);
        assert!(pass.wrote.is_empty(), "{pass:?}");
    }
    assert_eq!(rig.revision(), start + 1);

    // Until a person re-arms it: the status says so at once, before any check; a new
    // window, so the errors before it do not count.
    rig.set_guard("armed", true);
    assert_eq!(rig.status()["state"], "armed", "the re-arm shows before the next check");
    assert_eq!(rig.status()["last_trip"]["revision"], start + 1, "the last trip stays on record");
    clock.advance(Duration::from_secs(1));
    let pass = rig.check(&clock);
    assert_eq!(pass.checked, ["bot"]);
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(rig.guard()["state"], "armed");
    assert_eq!(rig.status()["metrics"][0]["treatment_samples"], 0);
    assert_eq!(rig.decisions(), ["insufficient", "insufficient"]);
}

#[tokio::test]
async fn equal_arms_are_left_alone() {
    let hook = Upstream::start(json_reply("{}")).await;
    let rig = Rig::in_memory(&guarded_config(0.0, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT));
    let clock = TestClock::new();
    let start = rig.revision();
    rig.check(&clock);
    for round in 1..=20 {
        rig.record("control", 50, 0);
        rig.record("treatment", 50, 0);
        clock.advance(Duration::from_millis(50));
        let pass = rig.check(&clock);
        // The check did run, over everything recorded so far.
        assert_eq!(pass.checked, ["bot"], "round {round}");
        let status = rig.status();
        assert_eq!(status["metrics"][0]["control_samples"], 50 * round, "{status}");
        assert_eq!(status["metrics"][0]["treatment_samples"], 50 * round, "{status}");
        assert_eq!(status["state"], "armed", "{status}");
        // No errors at all: the error rate has too few events to decide; latency passes.
        assert_eq!(rig.decisions(), ["insufficient", "pass"], "{status}");
    }
    assert_eq!(rig.revision(), start, "the guard wrote nothing");
    assert_eq!(rig.audit().len(), 1, "only the file's load changed the flag");
    assert!(webhook_calls(&hook).is_empty());
}

#[tokio::test]
async fn a_ramp_advances_step_by_step_to_100_percent_as_the_clock_moves() {
    let hook = Upstream::start(json_reply("{}")).await;
    let ramp = must_replace(RAMP, "min_duration: 50ms", "min_duration: 200ms");
    let rig =
        Rig::in_memory(&guarded_config(0.0, &format!("http://{}/hook", hook.addr), &ramp, "{variation: control}"));
    let clock = TestClock::new();
    let share = |rig: &Rig| rig.flag()["fallthrough"]["rollout"]["variations"][0].clone();
    let mut started = Vec::new();

    // The first check starts the ramp.
    let pass = rig.check(&clock);
    assert_eq!(pass.wrote.len(), 1, "{pass:?}");
    assert_eq!(rig.guard()["step"], 0);
    assert_eq!(share(&rig), json!({"variation": "treatment", "percent": 10.0}));
    assert_eq!(rig.guard()["step_started"], rfc3339(clock.now().wall));
    started.push(clock.now().wall);

    // Step 2 waits for its duration, step 3 for its samples.
    for (step, percent, waits_for) in [(1, 50.0, "duration"), (2, 100.0, "samples")] {
        // The step's window opens at its first check.
        assert!(rig.check(&clock).wrote.is_empty());
        let no_step = |rig: &Rig, why: &str| {
            let pass = rig.check(&clock);
            assert_eq!(pass.checked, ["bot"], "step {step}, {why}");
            assert!(pass.wrote.is_empty(), "step {step}, {why}: {pass:?}");
        };
        if waits_for == "duration" {
            rig.record("control", 5, 0);
            rig.record("treatment", 5, 0);
            clock.advance(Duration::from_millis(150));
            no_step(&rig, "enough samples, 150 ms of 200");
        } else {
            rig.record("control", 4, 0);
            rig.record("treatment", 4, 0);
            clock.advance(Duration::from_millis(200));
            no_step(&rig, "long enough, one sample short in each arm");
            rig.record("control", 1, 0);
            rig.record("treatment", 1, 0);
        }
        // Both done 1 ms from now, but the check interval has not passed.
        clock.advance(Duration::from_millis(49));
        assert_eq!(rig.check(&clock), Pass::default());
        clock.advance(Duration::from_millis(1));
        let pass = rig.check(&clock);
        assert_eq!(pass.wrote.len(), 1, "step {step}: {pass:?}");
        assert_eq!(rig.guard()["step"], step);
        assert_eq!(share(&rig), json!({"variation": "treatment", "percent": percent}));
        assert_eq!(rig.guard()["step_started"], rfc3339(clock.now().wall));
        started.push(clock.now().wall);
    }
    // The last step: nothing more to do.
    rig.record("control", 100, 0);
    rig.record("treatment", 100, 0);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(3600));
        assert!(rig.check(&clock).wrote.is_empty());
    }
    assert_eq!(share(&rig), json!({"variation": "treatment", "percent": 100.0}));

    // Each step is an audited revision, at the time of the clock it was taken on.
    let steps: Vec<(String, String)> =
        rig.audit().into_iter().filter(|e| e.reason.contains("ramp step")).map(|e| (e.time, e.reason)).rev().collect();
    let expected: Vec<(String, String)> = [10, 50, 100]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (rfc3339(started[i]), format!("guard: ramp step {} — treatment gets {p}% of the fallthrough", i + 1))
        })
        .collect();
    assert_eq!(steps, expected);
    eventually(PATIENCE, async || webhook_calls(&hook).len() >= 3).await;
    let mut actions: Vec<String> =
        webhook_calls(&hook).iter().map(|c| format!("{} {}", c["event"], c["action"].as_str().unwrap())).collect();
    actions.sort();
    assert_eq!(actions, [r#""ramp" step 1 at 10%"#, r#""ramp" step 2 at 50%"#, r#""ramp" step 3 at 100%"#]);
}

#[tokio::test]
async fn a_restart_mid_ramp_resumes_the_step() {
    let dir = temp_dir("guards-restart");
    let ramp = "      ramp:\n        - {percent: 10, min_duration: 50ms, min_samples: 5}\n        - {percent: 50, min_duration: 1h, min_samples: 5}\n        - {percent: 100, min_duration: 1h, min_samples: 5}\n";
    let yaml = must_replace(
        &guarded_config(0.0, "http://127.0.0.1:9/hook", ramp, "{variation: control}"),
        "admin:\n",
        &format!("state: {{dir: {}}}\nadmin:\n", dir.path().display()),
    );
    let clock = TestClock::new();
    let rig = Rig::open(&yaml, Box::new(file_store(dir.path())));
    rig.check(&clock); // step 1 starts
    rig.check(&clock); // its window opens
    rig.record("control", 5, 0);
    rig.record("treatment", 5, 0);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).wrote.len(), 1);
    let before = rig.flag();
    assert_eq!(before["guard"]["step"], 1, "{before}");
    let step_started = clock.now().wall;
    assert_eq!(before["guard"]["step_started"], rfc3339(step_started));
    rig.state.close();
    drop(rig);

    // A new process: the state directory opened again, new statistics, a new guard.
    clock.advance(Duration::from_secs(600));
    let rig = Rig::open(&yaml, Box::new(file_store(dir.path())));
    assert_eq!(rig.flag(), before, "the step survives the restart, and its start time");
    rig.check(&clock);
    rig.record("control", 5, 0);
    rig.record("treatment", 5, 0);
    clock.advance(Duration::from_secs(60));
    let pass = rig.check(&clock);
    // Checked with its floor of samples: still step 2, 50 %, started when it was.
    assert_eq!(pass.checked, ["bot"]);
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(rig.status()["metrics"][0]["treatment_samples"], 5);
    let after = rig.flag();
    assert_eq!(after["guard"]["step"], 1, "{after}");
    assert_eq!(after["guard"]["step_started"], before["guard"]["step_started"]);
    assert_eq!(after["fallthrough"]["rollout"]["variations"][0]["percent"], 50.0);

    // The hour of the step counts from its start before the restart.
    let due = step_started + Duration::from_secs(3600);
    clock.advance(due.duration_since(clock.now().wall).unwrap());
    assert_eq!(rig.check(&clock).wrote.len(), 1);
    assert_eq!(rig.guard()["step"], 2);
    assert_eq!(rig.flag()["fallthrough"]["rollout"]["variations"][0]["percent"], 100.0);
    rig.state.close();
}

#[tokio::test]
async fn a_paused_ramp_waits_and_resumes_where_it_was() {
    let rig = Rig::in_memory(&guarded_config(0.0, "http://127.0.0.1:9/hook", RAMP, "{variation: control}"));
    let clock = TestClock::new();
    rig.check(&clock); // step 1 starts
    let started = rig.guard()["step_started"].clone();
    rig.set_guard("paused", false);
    let paused = rig.revision();
    rig.check(&clock);
    rig.record("control", 50, 0);
    rig.record("treatment", 50, 0);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        let pass = rig.check(&clock);
        // Looked at, shown, not acted on.
        assert_eq!(pass.checked, ["bot"]);
        assert!(pass.wrote.is_empty(), "{pass:?}");
        assert_eq!(rig.status()["state"], "paused");
    }
    assert_eq!(rig.revision(), paused);

    rig.set_guard("armed", false);
    assert_eq!((rig.guard()["step"].clone(), rig.guard()["step_started"].clone()), (json!(0), started));
    rig.check(&clock);
    rig.record("control", 5, 0);
    rig.record("treatment", 5, 0);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).wrote.len(), 1);
    assert_eq!(rig.guard()["step"], 1);
}

#[tokio::test]
async fn the_circuit_breaker_acts_below_the_floor() {
    let yaml = must_replace(
        &guarded_config(1.0, "http://127.0.0.1:9/hook", "", TEN_PERCENT),
        "min_samples: 40",
        "min_samples: 100000",
    );
    let rig = Rig::in_memory(&yaml);
    let clock = TestClock::new();
    rig.check(&clock);
    // 19 failures: one short of the breaker's 20 requests.
    rig.record("treatment", 0, 19);
    clock.advance(Duration::from_millis(50));
    let pass = rig.check(&clock);
    assert_eq!(pass.checked, ["bot"]);
    assert!(pass.wrote.is_empty(), "{pass:?}");
    rig.record("treatment", 0, 1);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).wrote.len(), 1);
    assert_eq!(rig.guard()["state"], "rolled_back");
    assert_eq!(rig.decisions(), ["insufficient", "insufficient"], "far below the floor of 100,000 samples");
    let reason = &rig.audit()[0].reason;
    assert!(reason.contains("circuit_breaker"), "{reason}");
}

#[tokio::test]
async fn a_guard_that_does_not_compile_is_reported_once_per_revision() {
    // The config's validation does not read `step_started`; the guard has to.
    let extra = format!("{RAMP}      step_started: last tuesday\n");
    let rig = Rig::in_memory(&guarded_config(0.0, "http://127.0.0.1:9/hook", &extra, "{variation: control}"));
    let clock = TestClock::new();
    let logs = Capture::default();
    let _logging =
        tracing::subscriber::set_default(tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish());
    let start = rig.revision();
    let line = "this flag's guard does not compile";
    for _ in 0..5 {
        let pass = rig.check(&clock);
        assert_eq!(pass, Pass { invalid: vec!["bot".into()], ..Pass::default() });
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(logs.text().lines().filter(|l| l.contains(line)).count(), 1, "one line for the revision");
    let status = rig.status();
    assert_eq!((&status["state"], &status["treatment"]), (&json!("invalid"), &json!("treatment")), "{status}");
    assert!(status["error"].as_str().unwrap().starts_with("guard.step_started: `last tuesday`"), "{status}");
    assert_eq!(rig.revision(), start, "nothing acted on it");

    // A new revision of the flag, still broken: one more line.
    rig.set_guard("paused", false);
    for _ in 0..3 {
        assert_eq!(rig.check(&clock).invalid, ["bot"]);
    }
    assert_eq!(logs.text().lines().filter(|l| l.contains(line)).count(), 2);

    // Fixed (a re-arm drops the start time): checked again, and the ramp starts.
    rig.set_guard("armed", true);
    let pass = rig.check(&clock);
    assert_eq!(pass.checked, ["bot"]);
    assert_eq!(pass.wrote.len(), 1, "{pass:?}");
    let status = rig.status();
    assert_eq!(status["state"], "armed");
    assert!(status.get("error").is_none(), "{status}");
    assert_eq!(logs.text().lines().filter(|l| l.contains(line)).count(), 2);
}

// ---------------------------------------------------------------------------------------
// End to end: real traffic, the gateway's own guard task on the system clock.

/// `sluice ctl` against `gw`: success and stdout (or stderr).
async fn ctl(gw: &Running, args: &[&str]) -> (bool, String) {
    let url = format!("http://{}", gw.admin_addr);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("ctl")
            .args(&args)
            .env("SLUICE_ADMIN_URL", url)
            .env("SLUICE_ADMIN_TOKEN", WRITE)
            .output()
            .unwrap();
        let text = if out.status.success() { out.stdout } else { out.stderr };
        (out.status.success(), String::from_utf8_lossy(&text).into_owned())
    })
    .await
    .unwrap()
}

async fn admin_get(gw: &Running, path: &str) -> Value {
    send(gw.admin_addr, get(path, Some(WRITE))).await.json()
}

/// Send requests with distinct users until `done` says so (checked every 50 requests). The
/// guard task decides on its own clock, so this waits on the condition, however fast the
/// requests go; the deadline is only a safety net for a guard that never decides.
async fn traffic(gw: &Running, prefix: &str, done: impl AsyncFn() -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn = Conn::open(gw.data_addr).await;
    let mut sent = 0;
    loop {
        conn.send(chat("bot", &[], &format!(r#","user":"{prefix}-{sent}""#))).await;
        sent += 1;
        if sent % 50 == 0 && (done().await || Instant::now() > deadline) {
            return sent;
        }
    }
}

#[tokio::test]
async fn a_failing_treatment_is_rolled_back_and_everyone_says_why() {
    let hook = Upstream::start(json_reply("{}")).await;
    let gw = gateway(&guarded_config(0.2, &format!("http://{}/hook", hook.addr), "", TEN_PERCENT)).await;
    let sent = traffic(&gw, "u", async || {
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"] == "rolled_back"
    })
    .await;
    let flag = admin_get(&gw, "/admin/v1/flags/bot").await;
    assert_eq!(flag["flag"]["definition"]["guard"]["state"], "rolled_back", "after {sent} requests: {flag}");
    eprintln!("rolled back after {sent} requests");

    // Later traffic all reaches control.
    let mut conn = Conn::open(gw.data_addr).await;
    for i in 0..200 {
        let a = conn.send(chat("bot", &[], &format!(r#","user":"after-{i}""#))).await;
        assert_eq!(a.header("x-sluice-variation"), "control");
    }
    // The audit entry says why.
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["actor"], "guard");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate") && reason.contains("Λ") && reason.contains("interval"), "{reason}");
    // The webhook was told, off the data plane.
    eventually(PATIENCE, async || !webhook_calls(&hook).is_empty()).await;
    let call = hook.last().json();
    assert_eq!((&call["event"], &call["flag"], &call["metric"]), (&json!("trip"), &json!("bot"), &json!("error_rate")));
    assert!(call["lambda"].as_f64().unwrap() >= 20.0 && call["treatment_samples"].as_u64().unwrap() >= 40, "{call}");
    // Metrics, and the status endpoint (the guard updates both just after its write).
    let trips = r#"sluice_guard_trips_total{flag="bot",metric="error_rate"} 1"#;
    let state = r#"sluice_guard_state{flag="bot",metric="error_rate"} 3"#;
    eventually(PATIENCE, async || {
        let metrics = send(gw.admin_addr, get("/metrics", None)).await.text();
        metrics.contains(trips)
            && metrics.contains(state)
            && admin_get(&gw, "/admin/v1/guards").await["guards"][0]["state"] == "rolled_back"
    })
    .await;
    let guards = admin_get(&gw, "/admin/v1/guards").await;
    assert_eq!(guards["guards"][0]["metrics"][0]["metric"], "error_rate", "{guards}");

    let (ok, table) = ctl(&gw, &["guards"]).await;
    assert!(ok && table.contains("rolled_back") && table.contains("error_rate"), "{table}");
    assert!(table.contains("bot: last tripped at") && table.contains("regressed against control"), "{table}");

    // Sticky until a person re-arms it.
    let (ok, out) = ctl(&gw, &["guard", "rearm", "bot", "--reason", "fixed the provider"]).await;
    assert!(ok, "{out}");
    let audit = admin_get(&gw, "/admin/v1/audit?flag=bot&limit=3").await;
    assert_eq!(
        admin_get(&gw, "/admin/v1/flags/bot").await["flag"]["definition"]["guard"]["state"],
        "armed",
        "{out} {audit}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_arm_without_data_shows_no_numbers_and_a_proportions_interval_stays_in_range() {
    let rig = Rig::in_memory(&guarded_config(0.0, "http://127.0.0.1:9/hook", "", TEN_PERCENT));
    let clock = TestClock::new();
    rig.check(&clock); // the window starts
    rig.record("control", 50, 0);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    let status = rig.status();
    for m in status["metrics"].as_array().unwrap() {
        assert_eq!((m["control_samples"].as_u64(), m["treatment_samples"].as_u64()), (Some(50), Some(0)), "{m}");
        for field in ["treatment", "estimate", "interval", "lambda"] {
            assert!(m[field].is_null(), "{field} of an arm with no data: {m}");
        }
        assert!(m["control"].is_number(), "{m}");
        assert_eq!(m["decision"], "insufficient", "{m}");
    }
    // Two treatment requests, one failed: the error rate's interval is wide, but a
    // difference of two proportions never leaves [-1, 1].
    rig.record("treatment", 1, 1);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    let status = rig.status();
    let error_rate = &status["metrics"][0];
    assert_eq!(error_rate["metric"], "error_rate");
    let [low, high] = [0, 1].map(|i| error_rate["interval"][i].as_f64().unwrap());
    assert!((-1.0..=1.0).contains(&low) && (-1.0..=1.0).contains(&high) && low < high, "{error_rate}");
}

/// A guard on app feedback: a treatment whose answers users like less is rolled back,
/// although it never errs — the metric's definition (higher is better) sets the direction.
#[tokio::test]
async fn a_treatment_users_like_less_is_rolled_back_on_feedback() {
    let yaml = must_replace(
        &guarded_config(0.0, "null", "", TEN_PERCENT),
        "      metrics:\n        - {metric: error_rate}\n        - {metric: latency, margin: \"50%\"}\n",
        "      metrics:\n        - {metric: \"feedback:thumbs_up\", margin: 0.02}\n        - {metric: cost}\n",
    ) + "metrics:\n  thumbs_up: {type: boolean, direction: higher}\n";
    let rig = Rig::in_memory(&yaml);
    let clock = TestClock::new();
    let start = rig.revision();
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    let thumbs = |variation: &str| {
        let stats = rig.state.gateway().metrics.guard_stats("bot", variation);
        stats.signal("thumbs_up", sluice::metrics::SignalKind::Boolean, true)
    };
    // 70 % of control's answers are liked, 55 % of the treatment's; costs are alike.
    for i in 0..2000u32 {
        thumbs("control").record(f64::from(u8::from(i % 10 < 7)));
        thumbs("treatment").record(f64::from(u8::from(i % 20 < 11)));
    }
    rig.record("control", 50, 0);
    rig.record("treatment", 50, 0);
    clock.advance(Duration::from_millis(50));
    let pass = rig.check(&clock);
    assert_eq!(pass.wrote, [start + 1], "{:?}", rig.status());
    assert_eq!(rig.guard()["state"], "rolled_back");
    let status = rig.status();
    assert_eq!(status["last_trip"]["metric"], "feedback:thumbs_up");
    let m = &status["metrics"][0];
    assert_eq!((m["control_samples"].as_u64(), m["treatment_samples"].as_u64()), (Some(2000), Some(2000)));
    assert!(
        (m["control"].as_f64().unwrap() - 0.7).abs() < 1e-9 && (m["treatment"].as_f64().unwrap() - 0.55).abs() < 1e-9
    );
    // Cost was not priced here: no samples, so nothing decided on it.
    assert_eq!(status["metrics"][1]["decision"], "insufficient");
    assert!(rig.audit()[0].reason.contains("feedback:thumbs_up"), "{}", rig.audit()[0].reason);
}

#[tokio::test]
async fn a_guard_on_an_undefined_feedback_metric_is_refused() {
    let yaml = must_replace(
        &guarded_config(0.0, "null", "", TEN_PERCENT),
        "        - {metric: error_rate}\n",
        "        - {metric: \"feedback:nope\"}\n",
    );
    let loaded = sluice::config::parse(&yaml, "test.yaml", &|_| None);
    let e = loaded.expect_err("refused").to_string();
    assert!(e.contains("guard.metrics[0].metric") && e.contains("`feedback:nope` names no metric"), "{e}");
}

#[tokio::test]
async fn arms_that_do_not_match_their_shares_pause_the_guard() {
    let yaml = must_replace(&guarded_config(0.0, "null", "", TEN_PERCENT), "      srm_check: false\n", "");
    let rig = Rig::in_memory(&yaml);
    let clock = TestClock::new();
    let start = rig.revision();
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    // 90/10 allocated, 50/50 arrived: something drops the control's requests.
    rig.record("control", 200, 0);
    rig.record("treatment", 200, 0);
    clock.advance(Duration::from_millis(50));
    let pass = rig.check(&clock);
    assert_eq!(pass.wrote, [start + 1]);
    assert_eq!(rig.guard()["state"], "paused");
    let status = rig.status();
    assert!(status["srm_p_value"].as_f64().unwrap() < 0.001, "{status}");
    assert!(status["health"].to_string().contains("sample ratio mismatch"), "{status}");
    assert!(rig.audit()[0].reason.contains("sample ratio mismatch"), "{}", rig.audit()[0].reason);
    // The traffic was not moved: only a person decides what to do.
    assert_eq!(rig.flag()["fallthrough"]["rollout"]["variations"][1]["percent"].as_f64(), Some(10.0));
}

#[tokio::test]
async fn a_dismissed_trip_puts_the_traffic_back_and_arms_the_guard_in_a_new_window() {
    let rig = Rig::in_memory(&guarded_config(0.0, "null", "", TEN_PERCENT));
    let clock = TestClock::new();
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    let before = rig.flag()["fallthrough"].clone();
    rig.record("control", 200, 0);
    rig.record("treatment", 136, 34);
    clock.advance(Duration::from_millis(50));
    let tripped = rig.check(&clock).wrote;
    assert_eq!(tripped.len(), 1);
    assert_eq!(rig.guard()["state"], "rolled_back");
    assert_ne!(rig.flag()["fallthrough"], before);
    assert_eq!(rig.guard()["before_trip"]["fallthrough"], before);

    let request = Request {
        actor: "ops".into(),
        reason: "a bad deploy of the provider, since fixed".into(),
        if_match: None,
        fence: None,
    };
    let applied = rig.state.apply(Change::GuardDismiss { flag: "bot".into() }, &request).unwrap();
    assert_eq!(rig.flag()["fallthrough"], before, "the rollback's move is undone");
    assert_eq!(rig.guard()["state"], "armed");
    assert!(rig.guard().get("before_trip").is_none());
    let entry = &rig.audit()[0];
    assert_eq!((entry.revision, entry.actor.as_str()), (applied.revision, "ops"));
    assert_eq!(entry.reason, "a bad deploy of the provider, since fixed");
    // A new window: the failures before the dismissal are not held against the treatment.
    clock.advance(Duration::from_millis(50));
    let pass = rig.check(&clock);
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(rig.status()["metrics"][0]["treatment_samples"], 0);
    // Nothing to dismiss now.
    let again = rig.state.apply(Change::GuardDismiss { flag: "bot".into() }, &request);
    assert!(again.unwrap_err().to_string().contains("nothing to dismiss"));

    // A trip a person has acted on since: dismissing a later pause puts nothing back.
    rig.record("control", 200, 0);
    rig.record("treatment", 136, 34);
    clock.advance(Duration::from_millis(50));
    assert_eq!(rig.check(&clock).wrote.len(), 1);
    assert!(rig.guard().get("before_trip").is_some());
    rig.set_guard("armed", true);
    assert!(rig.guard().get("before_trip").is_none(), "a re-arm forgets the trip");
    let rollout =
        Change::Rollout { flag: "bot".into(), weights: vec![("control".into(), 70.0), ("treatment".into(), 30.0)] };
    rig.state.apply(rollout, &request).unwrap();
    let manual = rig.flag()["fallthrough"].clone();
    rig.set_guard("paused", false);
    rig.state.apply(Change::GuardDismiss { flag: "bot".into() }, &request).unwrap();
    assert_eq!(rig.flag()["fallthrough"], manual, "the person's rollout stays");
    assert_eq!(rig.guard()["state"], "armed");
}

#[tokio::test]
async fn requests_without_a_context_key_show_in_the_guards_health() {
    let rig = Rig::in_memory(&guarded_config(0.0, "null", "", TEN_PERCENT));
    let clock = TestClock::new();
    assert_eq!(rig.check(&clock).checked, ["bot"]);
    assert!(rig.status()["health"].to_string().contains("no traffic"), "{}", rig.status());
    rig.record("control", 30, 0);
    rig.record("treatment", 30, 0);
    let stats = rig.state.gateway().metrics.guard_stats("bot", "treatment");
    for _ in 0..15 {
        stats.note_random_context();
    }
    clock.advance(Duration::from_millis(50));
    rig.check(&clock);
    let health = rig.status()["health"].to_string();
    assert!(health.contains("25.0% of requests named no context"), "{health}");
}
