//! The fleet store end to end (`state.store: redis`): `sluice serve` processes sharing one
//! real `redis-server` (tests/common/redis.rs), driven through the admin API and the data
//! plane like an operator and an app would — a kill switch reaching every instance,
//! concurrent `If-Match` writes, `kill -9` of Redis with `appendfsync always`, `FLUSHALL`
//! and `sluice store seed`, Redis stopped and started, a start with Redis down, and a
//! change log trimmed under an instance cut off from it, a dropped connection, a new
//! instance on a store that lost its data.
//!
//! Without redis-server every test prints `SKIPPED …` and passes, unless
//! `SLUICE_REQUIRE_REDIS=1` (as in `.ci/run`). Nothing sleeps to synchronise: every wait
//! is on a condition, bounded only so that a broken build fails instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::redis::{have_redis, RedisServer};
use common::{eventually_blocking, must_replace, spawn_serving, strip_ansi, temp_dir, Answer};
use serde_json::{json, Value};

const TOKEN: &str = "sluice-admin-demo-token";
const APP_KEY: &str = "sk-sluice-demo";
const FLAG: &str = "support-bot";
/// The demo's target: `qa-tester` gets `candidate` while the flag is on, and the off
/// variation (`control`) once it is killed.
const QA: &str = "qa-tester";
/// A bound on every wait: never what a test waits for, only what stops a broken build.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client (one connection per request) for the admin API and the data
// plane.

fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<Answer, String> {
    common::http1::request(addr, method, path, headers, body)
}

#[track_caller]
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Answer {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

// ---------------------------------------------------------------------------------------
// sluice instances.

/// `config/sluice.yaml` as a fleet member: listeners on port 0, the mocks without their
/// demo latency, and `state:` on Redis at `port` (the local copy in `dir`, if any).
fn fleet_yaml(dir: Option<&Path>, port: u16) -> String {
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let text = must_replace(&text, "127.0.0.1:8080", "127.0.0.1:0");
    let text = must_replace(&text, "127.0.0.1:8081", "127.0.0.1:0");
    let text = must_replace(&text, "latency: 20ms", "latency: 1ms");
    let text = must_replace(&text, "latency: 40ms", "latency: 1ms");
    let line = text.lines().find(|l| l.starts_with("  dir: ${SLUICE_STATE_DIR")).expect("the demo's state.dir line");
    let dir = dir.map(|d| format!("  dir: {}\n", d.display())).unwrap_or_default();
    let state = format!("{dir}  store: redis\n  redis:\n    url: redis://127.0.0.1:{port}\n    prefix: sluice");
    must_replace(&text, line, &state)
}

/// One `sluice serve` child, killed (by pid) when dropped.
struct Instance {
    name: String,
    child: Child,
    data: SocketAddr,
    admin: SocketAddr,
    cfg: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    starts: u32,
}

fn serve_command(cfg: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("serve").arg("--config").arg(cfg);
    // The demo config reads these; the test's values are in the file.
    for var in [
        "SLUICE_DATA_ADDR",
        "SLUICE_ADMIN_ADDR",
        "SLUICE_ADMIN_TOKEN",
        "SLUICE_DEMO_KEY",
        "SLUICE_STATE_DIR",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

impl Instance {
    /// An instance named `name` with its config and state directory under `work`.
    fn start(work: &Path, name: &str, redis_port: u16) -> Instance {
        let dir = work.join(name);
        let cfg = work.join(format!("{name}.yaml"));
        std::fs::write(&cfg, fleet_yaml(Some(&dir), redis_port)).unwrap();
        let log = work.join(format!("{name}-1.log"));
        let (child, data, admin) = spawn_serving(serve_command(&cfg), &log);
        Instance { name: name.into(), child, data, admin, cfg, dir, log, starts: 1 }
    }

    /// Several at once (their starts overlap: they race to seed an empty Redis).
    fn start_all(work: &Path, names: &[&str], redis_port: u16) -> Vec<Instance> {
        std::thread::scope(|s| {
            let handles: Vec<_> = names.iter().map(|n| s.spawn(move || Instance::start(work, n, redis_port))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Kill it (SIGKILL, by pid) and start it again on the same config and directory.
    fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        self.log = self.log.with_file_name(format!("{}-{}.log", self.name, self.starts));
        let (child, data, admin) = spawn_serving(serve_command(&self.cfg), &self.log);
        (self.child, self.data, self.admin) = (child, data, admin);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP / SIGCONT, by pid.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    fn auth() -> (&'static str, String) {
        ("authorization", format!("Bearer {TOKEN}"))
    }

    fn get(&self, path: &str) -> Answer {
        http(self.admin, "GET", path, &[Instance::auth()], "")
    }

    /// `POST /admin/v1/flags/support-bot/kill` (`on: false`) or `/restore` (`on: true`).
    fn switch(&self, on: bool, reason: &str, if_match: Option<u64>) -> Answer {
        let mut headers = vec![Instance::auth()];
        if let Some(r) = if_match {
            headers.push(("if-match", format!("\"{r}\"")));
        }
        let path = format!("/admin/v1/flags/{FLAG}/{}", if on { "restore" } else { "kill" });
        http(self.admin, "POST", &path, &headers, &json!({ "reason": reason }).to_string())
    }

    /// The revision served and whether the flag is on (`GET /admin/v1/flags/support-bot`).
    fn flag(&self) -> (u64, bool) {
        let a = self.get(&format!("/admin/v1/flags/{FLAG}"));
        assert_eq!(a.status, 200, "{}: {}", self.name, a.text());
        let v = a.json();
        (v["revision"].as_u64().unwrap(), v["flag"]["on"].as_bool().unwrap())
    }

    fn status(&self) -> Value {
        let a = self.get("/admin/v1/status");
        assert_eq!(a.status, 200, "{}: {}", self.name, a.text());
        a.json()
    }

    /// `/readyz`: status and text.
    fn readyz(&self) -> (u16, String) {
        let a = http(self.admin, "GET", "/readyz", &[], "");
        (a.status.as_u16(), a.text())
    }

    fn chat(&self, user: &str) -> Answer {
        let body = json!({"model": FLAG, "user": user, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        http(self.data, "POST", "/v1/chat/completions", &[("authorization", format!("Bearer {APP_KEY}"))], &body)
    }

    /// The variation the data plane serves `user`.
    fn variation(&self, user: &str) -> String {
        let a = self.chat(user);
        assert_eq!(a.status, 200, "{}: {}", self.name, a.text());
        a.header("x-sluice-variation").to_string()
    }

    /// Wait until it serves revision `revision` (or later), and return what it serves.
    #[track_caller]
    fn wait_revision(&self, revision: u64) -> (u64, bool) {
        eventually_blocking(WAIT, || {
            // Before the fleet's state is read (a first start waits for an empty Redis to
            // stay empty a moment before it seeds it) the flag is not there yet.
            let a = self.get(&format!("/admin/v1/flags/{FLAG}"));
            if a.status == 404 {
                return Err(format!("{} has no flag yet: {}", self.name, a.text()));
            }
            let (r, on) = self.flag();
            if r >= revision {
                Ok((r, on))
            } else {
                Err(format!("{} serves revision {r}, not yet {revision}", self.name))
            }
        })
    }

    /// Wait until `/readyz` answers `status` with text starting `prefix`.
    #[track_caller]
    fn wait_ready(&self, status: u16, prefix: &str) -> String {
        eventually_blocking(WAIT, || {
            let (s, text) = self.readyz();
            if s == status && text.starts_with(prefix) {
                Ok(text)
            } else {
                Err(format!("{}: /readyz {s} {text:?}, waiting for {status} {prefix:?}", self.name))
            }
        })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.kill();
    }
}

/// Every audit entry newer than `after`, paged through `instance` (`before` = `next`):
/// revision → (actor, reason), and how many entries each revision had.
fn audit_after(instance: &Instance, after: u64) -> (BTreeMap<u64, (String, String)>, BTreeMap<u64, usize>) {
    let mut entries = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/admin/v1/audit?limit=250&before={b}"),
            None => "/admin/v1/audit?limit=250".to_string(),
        };
        // A 503 is retried: the first use of a Redis connection that was dropped (Redis
        // restarted) fails (see `the_first_call_after_a_dropped_redis_connection_is_answered`).
        let a = eventually_blocking(WAIT, || {
            let a = instance.get(&path);
            match a.status.as_u16() {
                503 => Err(format!("{path}: {}", a.text())),
                _ => Ok(a),
            }
        });
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        let page = a.json();
        let list = page["entries"].as_array().unwrap();
        let mut older = false;
        for e in list {
            let revision = e["revision"].as_u64().unwrap();
            if revision <= after {
                older = true;
                continue;
            }
            *counts.entry(revision).or_insert(0) += 1;
            let actor = e["actor"].as_str().unwrap_or_default().to_string();
            let reason = e["reason"].as_str().unwrap_or_default().to_string();
            entries.insert(revision, (actor, reason));
        }
        match page["next"].as_u64() {
            Some(next) if !older && !list.is_empty() => before = Some(next),
            _ => return (entries, counts),
        }
    }
}

/// Wait until every instance serves `revision` or later; returns the revision they agree on.
#[track_caller]
fn converge(fleet: &[&Instance], revision: u64) -> u64 {
    eventually_blocking(WAIT, || {
        // No flag yet: the fleet's state is not read (a first start waits for an empty
        // Redis to stay empty a moment before it seeds it) — revision 0.
        let seen: Vec<(String, u64)> = fleet
            .iter()
            .map(|i| {
                let a = i.get(&format!("/admin/v1/flags/{FLAG}"));
                (i.name.clone(), if a.status == 404 { 0 } else { i.flag().0 })
            })
            .collect();
        let first = seen[0].1;
        if first >= revision && seen.iter().all(|(_, r)| *r == first) {
            Ok(first)
        } else {
            Err(format!("not all at one revision ≥ {revision}: {seen:?}"))
        }
    })
}

fn store_seed(cfg: &Path, from: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["store", "seed", "--config"]).arg(cfg);
    if let Some(from) = from {
        cmd.arg("--from").arg(from);
    }
    cmd.output().unwrap()
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Three instances started at once on an empty Redis seed it once; a kill switch sent to
/// one is what the other two serve.
#[test]
fn a_kill_switch_sent_to_one_instance_is_served_by_every_instance() {
    if !have_redis("fleet::a_kill_switch_sent_to_one_instance_is_served_by_every_instance") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-kill");
    let fleet = Instance::start_all(work.path(), &["a", "b", "c"], redis.port);
    let [a, b, c] = [&fleet[0], &fleet[1], &fleet[2]];
    // The racing first starts seeded Redis once: one revision, by `file`.
    let start = converge(&[a, b, c], 1);
    assert_eq!(start, 1, "one seed, not one per instance");
    assert_eq!(redis.cli(&["GET", "{sluice}:rev"]), "1");
    let (audit, counts) = audit_after(b, 0);
    assert_eq!(audit.keys().copied().collect::<Vec<_>>(), vec![1], "{audit:?}");
    assert_eq!(counts[&1], 1);
    assert_eq!(audit[&1].0, "file");
    for i in [a, b, c] {
        i.wait_ready(200, "ready");
        assert_eq!(i.variation(QA), "candidate", "{} before the kill", i.name);
    }

    let killed = a.switch(false, "candidate answers are wrong", Some(start));
    assert_eq!(killed.status, 200, "{}", killed.text());
    let revision = killed.json()["revision"].as_u64().unwrap();
    assert_eq!(revision, start + 1);
    for i in [b, c] {
        let (r, on) = i.wait_revision(revision);
        assert_eq!((r, on), (revision, false), "{} serves the kill", i.name);
        let answer = i.chat(QA);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-sluice-variation"), "control", "{}: the off variation", i.name);
        assert_eq!(answer.header("x-sluice-reason"), r#"{"kind":"OFF"}"#);
    }
    assert_eq!(a.variation(QA), "control");
    // The status names the fleet: every instance, at the revision each serves.
    let status = eventually_blocking(WAIT, || {
        let s = b.status();
        let fleet = &s["store"]["fleet"];
        let all_current = fleet["instances"]
            .as_array()
            .is_some_and(|l| l.len() == 3 && l.iter().all(|i| i["revision"].as_u64() == Some(revision)));
        if s["store"]["kind"] == "redis"
            && s["store"]["health"] == "ok"
            && fleet["fleet_revision"] == revision
            && all_current
        {
            Ok(s)
        } else {
            Err(format!("status: {s}"))
        }
    });
    assert_eq!(status["revision"], revision);
}

/// 1,000 `If-Match` writes from six threads over three instances: each answers 200 or
/// 412 (never 503), the acknowledged revisions are exactly the next ones with no
/// duplicate and no hole, the audit log holds each once with its reason, and the same
/// `If-Match` sent to two instances at once is taken once.
#[test]
fn concurrent_if_match_writes_give_contiguous_revisions_and_one_audit_entry_each() {
    if !have_redis("fleet::concurrent_if_match_writes_give_contiguous_revisions_and_one_audit_entry_each") {
        return;
    }
    const WRITES: usize = 1000;
    const THREADS: usize = 6;
    let redis = RedisServer::start();
    let work = temp_dir("fleet-cas");
    let fleet = Instance::start_all(work.path(), &["a", "b", "c"], redis.port);
    let all: Vec<&Instance> = fleet.iter().collect();
    let start = converge(&all, 1);
    let (_, on_at_start) = fleet[0].flag();

    let attempts = AtomicUsize::new(0);
    let acked = Mutex::new(Vec::<(u64, u64, String)>::new()); // (revision, If-Match, reason)
    let stale = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let began = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (instance, attempts, acked, stale, failures) = (&fleet[t % 3], &attempts, &acked, &stale, &failures);
            s.spawn(move || loop {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                if n >= WRITES {
                    return;
                }
                let (revision, on) = instance.flag();
                let reason = format!("write {n} by thread {t} via {}", instance.name);
                let a = instance.switch(!on, &reason, Some(revision));
                match a.status.as_u16() {
                    200 => {
                        let got = a.json()["revision"].as_u64().unwrap();
                        acked.lock().unwrap().push((got, revision, reason));
                    }
                    412 => {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.lock().unwrap().push(format!("{reason}: {other} {}", a.text())),
                }
            });
        }
    });
    let took = began.elapsed();
    let failures = failures.into_inner().unwrap();
    let mut acked = acked.into_inner().unwrap();
    let stale = stale.into_inner();
    assert!(failures.is_empty(), "{} writes answered neither 200 nor 412: {failures:#?}", failures.len());
    assert_eq!(acked.len() + stale, WRITES);
    assert!(!acked.is_empty());
    eprintln!("{WRITES} If-Match writes in {took:?}: {} taken, {stale} stale (412)", acked.len());
    acked.sort();
    let revisions: Vec<u64> = acked.iter().map(|(r, _, _)| *r).collect();
    let expected: Vec<u64> = (start + 1..=start + acked.len() as u64).collect();
    assert_eq!(revisions, expected, "the acknowledged revisions are the next ones, each once");
    for (revision, if_match, reason) in &acked {
        assert_eq!(*revision, if_match + 1, "{reason}: made on the revision it named");
    }

    // Every instance serves the last one, and the flag is where the toggles left it.
    let last = start + acked.len() as u64;
    let at = converge(&all, last);
    assert_eq!(at, last);
    let on_now = fleet[2].flag().1;
    assert_eq!(on_now, on_at_start == acked.len().is_multiple_of(2), "an even number of toggles leaves it as it was");

    // The audit log: each acknowledged revision once, with its reason; nothing else.
    let (audit, counts) = audit_after(&fleet[1], start);
    assert!(counts.values().all(|&n| n == 1), "a revision twice in the audit log: {counts:?}");
    assert_eq!(audit.len(), acked.len(), "audit entries after revision {start}");
    for (revision, _, reason) in &acked {
        let (actor, logged) =
            audit.get(revision).unwrap_or_else(|| panic!("revision {revision} is not in the audit log"));
        assert_eq!((actor.as_str(), logged.as_str()), ("ops", reason.as_str()), "revision {revision}");
    }

    // The same If-Match sent twice — to two instances at once — is taken once.
    for round in 0..10 {
        let current = converge(&all, last);
        let (_, on) = fleet[0].flag();
        let barrier = Barrier::new(2);
        let answers: Vec<u16> = std::thread::scope(|s| {
            let (first, second) = (&fleet[round % 3], &fleet[(round + 1) % 3]);
            let barrier = &barrier;
            let h: Vec<_> = [first, second]
                .into_iter()
                .map(|i| {
                    s.spawn(move || {
                        barrier.wait();
                        i.switch(!on, &format!("twice, round {round}"), Some(current)).status.as_u16()
                    })
                })
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = answers.clone();
        sorted.sort();
        assert_eq!(sorted, vec![200, 412], "round {round}: the same If-Match {current} twice: {answers:?}");
    }
}

/// `kill -9` of Redis (`appendfsync always`) in the middle of a loop of changes: every
/// change acknowledged is there after Redis restarts on its AOF, the writes while it was
/// down got 503 with `Retry-After`, and the instances carry on.
#[test]
fn acknowledged_changes_survive_kill_9_of_redis_with_fsync_always() {
    if !have_redis("fleet::acknowledged_changes_survive_kill_9_of_redis_with_fsync_always") {
        return;
    }
    let mut redis = RedisServer::start_with("always");
    let work = temp_dir("fleet-kill9");
    let fleet = Instance::start_all(work.path(), &["a", "b"], redis.port);
    let (a, b) = (&fleet[0], &fleet[1]);
    let start = converge(&[a, b], 1);

    let stop = AtomicBool::new(false);
    let killed = AtomicBool::new(false);
    let acked = Mutex::new(Vec::<(u64, String)>::new());
    let unavailable = AtomicUsize::new(0);
    let others = Mutex::new(Vec::<String>::new());
    let outage = Mutex::new(Vec::<(u16, String, String)>::new()); // (status, code, Retry-After)
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let (revision, on) = a.flag();
                let reason = format!("change {n}");
                let answer = a.switch(!on, &reason, Some(revision));
                match answer.status.as_u16() {
                    200 => {
                        let revision = answer.json()["revision"].as_u64().unwrap();
                        acked.lock().unwrap().push((revision, reason));
                        // B follows each change (while Redis is up). This also keeps the
                        // next change from racing A's own reading of the change log (see
                        // the deadlock in `concurrent_if_match_writes_…`).
                        eventually_blocking(WAIT, || killed.load(Ordering::SeqCst) || b.flag().0 >= revision);
                    }
                    503 => {
                        outage.lock().unwrap().push((
                            503,
                            answer.error_code(),
                            answer.header("retry-after").to_string(),
                        ));
                        unavailable.fetch_add(1, Ordering::SeqCst);
                    }
                    // A change whose answer was lost in the kill may have been made: the
                    // next one, made on the revision before it, is then stale.
                    412 => {}
                    other => others.lock().unwrap().push(format!("{reason}: {other} {}", answer.text())),
                }
            }
        });
        let count = || acked.lock().unwrap().len();
        eventually_blocking(WAIT, || count() >= 20);
        killed.store(true, Ordering::SeqCst);
        redis.kill9();
        let before_restart = count();
        eventually_blocking(WAIT, || unavailable.load(Ordering::SeqCst) >= 5);
        redis.restart_same_port();
        killed.store(false, Ordering::SeqCst);
        eventually_blocking(WAIT, || count() >= before_restart + 5);
        stop.store(true, Ordering::SeqCst);
    });
    let others = others.into_inner().unwrap();
    assert!(others.is_empty(), "{others:#?}");
    let outage = outage.into_inner().unwrap();
    assert!(outage.len() >= 5);
    for (i, (status, code, retry_after)) in outage.iter().enumerate() {
        assert_eq!(*status, 503);
        // The first change sent as Redis died may have reached it: its outcome is unknown.
        let unknown = i == 0 && code == "store_outcome_unknown";
        assert!(unknown || code == "store_unavailable", "{outage:?}");
        assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After: {retry_after:?}");
    }
    let acked = acked.into_inner().unwrap();
    let last = acked.iter().map(|(r, _)| *r).max().unwrap();
    // Redis has every acknowledged revision: its revision, and each one's audit entry.
    let fleet_rev: u64 = redis.cli(&["GET", "{sluice}:rev"]).parse().unwrap();
    assert!(fleet_rev >= last, "Redis is at {fleet_rev}, {last} was acknowledged");
    let (audit, counts) = audit_after(b, start);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    for (revision, reason) in &acked {
        assert_eq!(
            audit.get(revision).map(|(_, r)| r.as_str()),
            Some(reason.as_str()),
            "acknowledged revision {revision} ({reason}) after the restart"
        );
    }
    let revisions: BTreeSet<u64> = audit.keys().copied().collect();
    assert_eq!(revisions, (start + 1..=fleet_rev).collect(), "no hole in the audit log");

    // The instances carry on: a new change on A reaches B; both are ready.
    let at = converge(&[a, b], fleet_rev);
    let (revision, on) = a.flag();
    assert_eq!(revision, at);
    let answer = a.switch(!on, "after the restart", Some(revision));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(b.wait_revision(revision + 1), (revision + 1, !on));
    a.wait_ready(200, "ready");
    b.wait_ready(200, "ready");
}

/// `FLUSHALL`: the instances keep serving what they served, refuse changes with
/// `store_not_seeded` and say so on `/readyz`; a new instance does not seed Redis from its
/// file; `sluice store seed` does, from a local copy, and the fleet follows it.
#[test]
fn a_flushall_keeps_the_flag_served_and_refuses_writes_until_seeded() {
    if !have_redis("fleet::a_flushall_keeps_the_flag_served_and_refuses_writes_until_seeded") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-flush");
    let fleet = Instance::start_all(work.path(), &["a", "b"], redis.port);
    let (a, b) = (&fleet[0], &fleet[1]);
    let start = converge(&[a, b], 1);
    let killed = a.switch(false, "off before the flush", Some(start));
    assert_eq!(killed.status, 200, "{}", killed.text());
    let revision = converge(&[a, b], start + 1);
    // A's local copy holds it (written within the heartbeat): `store seed` reads it.
    let copy = a.dir.join("fleet-copy.json");
    eventually_blocking(WAIT, || {
        let text = std::fs::read_to_string(&copy).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        (v["stored"]["revision"].as_u64() == Some(revision))
            .then_some(())
            .ok_or(format!("copy: {}", v["stored"]["revision"]))
    });

    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    for i in [a, b] {
        assert_eq!(i.flag(), (revision, false), "{} serves what it served", i.name);
        assert_eq!(i.variation(QA), "control", "{}", i.name);
        let refused = i.switch(true, "while Redis is empty", Some(revision));
        assert_eq!(refused.status, 503, "{}: {}", i.name, refused.text());
        assert_eq!(refused.error_code(), "store_not_seeded", "{}", refused.text());
        assert!(refused.header("retry-after").parse::<u64>().is_ok(), "Retry-After on {}", i.name);
        let text = i.wait_ready(200, "degraded: ");
        assert!(text.contains("sluice store seed"), "{text}");
        assert_eq!(i.status()["store"]["health"], "degraded");
        // Still serving the flag as it was.
        assert_eq!(i.flag(), (revision, false));
    }
    assert_eq!(redis.cli(&["EXISTS", "{sluice}:epoch"]), "0", "nothing seeded Redis");

    // A new instance, with no copy of its own, does not seed Redis from its file.
    let c = Instance::start(work.path(), "c", redis.port);
    let (status, text) = c.readyz();
    assert_eq!(status, 503, "a new instance on a flushed Redis is not ready: {text}");
    // Nor does it serve its file's flags (which would undo the kill switch).
    let held = c.chat(QA);
    assert_eq!((held.status.as_u16(), held.error_code()), (503, "gateway_not_ready".to_string()), "{}", held.text());
    assert_eq!(redis.cli(&["EXISTS", "{sluice}:epoch"]), "0", "the new instance seeded Redis from its file");
    // It has no flag to change (404: it loaded none), or refuses the change (503).
    let refused = c.switch(false, "from the new instance", None);
    assert!(matches!(refused.status.as_u16(), 404 | 503), "{}", refused.text());

    // `sluice store seed` from A's local copy (a config of its own: A holds its directory).
    let seed_cfg = work.path().join("seed.yaml");
    std::fs::write(&seed_cfg, fleet_yaml(None, redis.port)).unwrap();
    let out = store_seed(&seed_cfg, Some(&copy));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sluice store seed: {}\n{stdout}\n{stderr}", out.status);
    // `seeded redis://… at revision N (epoch seed:…) from …`: the copy's state, one
    // revision on (the seed's own audit entry).
    let seeded: u64 = stdout
        .split("at revision ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {stdout:?}"));
    assert_eq!(seeded, revision + 1, "{stdout}");
    assert!(redis.cli(&["GET", "{sluice}:epoch"]).starts_with("seed:"));
    // A store that holds data is left alone without --force.
    let again = store_seed(&seed_cfg, Some(&copy));
    assert!(!again.status.success(), "a second seed: {}", String::from_utf8_lossy(&again.stdout));

    // Every instance follows the seeded state, and takes changes again.
    for i in [a, b, &c] {
        i.wait_ready(200, "ready");
        assert_eq!(i.wait_revision(seeded), (seeded, false), "{}", i.name);
        assert_eq!(i.variation(QA), "control", "{}", i.name);
    }
    let restored = b.switch(true, "after the seed", Some(seeded));
    assert_eq!(restored.status, 200, "{}", restored.text());
    for i in [a, b, &c] {
        assert_eq!(i.wait_revision(seeded + 1), (seeded + 1, true), "{}", i.name);
        assert_eq!(i.variation(QA), "candidate", "{}", i.name);
    }
    let (audit, _) = audit_after(&c, 0);
    assert_eq!(audit.keys().copied().collect::<Vec<_>>(), vec![seeded, seeded + 1], "{audit:?}");
    assert_eq!(audit[&seeded].0, "seed");
}

/// Redis stopped: the data plane keeps answering, changes get 503 with `Retry-After`,
/// `/readyz` and the status say degraded; once Redis is back, changes are taken again.
#[test]
fn redis_stopped_the_data_plane_serves_and_writes_get_503_until_it_is_back() {
    if !have_redis("fleet::redis_stopped_the_data_plane_serves_and_writes_get_503_until_it_is_back") {
        return;
    }
    let mut redis = RedisServer::start();
    let work = temp_dir("fleet-down");
    let a = Instance::start(work.path(), "a", redis.port);
    let (revision, _) = a.wait_revision(1);
    a.wait_ready(200, "ready");

    redis.kill9();
    let text = a.wait_ready(200, "degraded: ");
    assert!(text.contains("cannot be reached"), "{text}");
    assert_eq!(a.status()["store"]["health"], "degraded");
    let refused = a.switch(false, "while Redis is down", Some(revision));
    assert_eq!(refused.status, 503, "{}", refused.text());
    // Sent on a connection Redis had when it died: maybe carried out, so "unknown"; on
    // a new one: "unavailable".
    assert!(
        matches!(refused.error_code().as_str(), "store_unavailable" | "store_outcome_unknown"),
        "{}",
        refused.text()
    );
    let refused = a.switch(false, "while Redis is still down", Some(revision));
    assert_eq!(refused.error_code(), "store_unavailable", "{}", refused.text());
    assert!(refused.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After");

    // A few hundred data-plane requests, four at a time: every one answered.
    let errors = Mutex::new(Vec::new());
    let served = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (a, errors, served) = (&a, &errors, &served);
            s.spawn(move || {
                for n in 0..75 {
                    let answer = a.chat(&format!("user-{t}-{n}"));
                    if answer.status == 200 && !answer.header("x-sluice-variation").is_empty() {
                        served.fetch_add(1, Ordering::SeqCst);
                    } else {
                        errors.lock().unwrap().push(format!("{} {}", answer.status, answer.text()));
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} of 300 requests failed with Redis down: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert_eq!(served.into_inner(), 300);
    assert_eq!(a.flag(), (revision, true), "still serving what it served");

    redis.restart_same_port();
    let taken = eventually_blocking(WAIT, || {
        let answer = a.switch(false, "Redis is back", Some(revision));
        match answer.status.as_u16() {
            200 => Ok(answer),
            503 => Err(format!("still 503: {}", answer.text())),
            other => panic!("{other}: {}", answer.text()),
        }
    });
    assert_eq!(taken.json()["revision"], revision + 1);
    a.wait_ready(200, "ready");
    assert_eq!(a.status()["store"]["health"], "ok");
}

/// Started while Redis is down: an instance with a local copy serves it (degraded), one
/// without is not ready; both are ready, on the fleet's state, once Redis is up.
#[test]
fn starting_with_redis_down_serves_the_local_copy_or_is_not_ready() {
    if !have_redis("fleet::starting_with_redis_down_serves_the_local_copy_or_is_not_ready") {
        return;
    }
    let mut redis = RedisServer::start();
    let work = temp_dir("fleet-cold");
    let mut a = Instance::start(work.path(), "a", redis.port);
    let (start, _) = a.wait_revision(1);
    let killed = a.switch(false, "off, then the lights go out", Some(start));
    assert_eq!(killed.status, 200, "{}", killed.text());
    let revision = start + 1;
    // The local copy is written within the heartbeat of a change.
    let copy = a.dir.join("fleet-copy.json");
    eventually_blocking(WAIT, || {
        let text = std::fs::read_to_string(&copy).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        (v["stored"]["revision"].as_u64() == Some(revision))
            .then_some(())
            .ok_or(format!("copy at {}", v["stored"]["revision"]))
    });

    redis.kill9();
    a.restart();
    let text = a.wait_ready(200, "degraded: ");
    assert!(text.contains("cannot be reached"), "{text}");
    assert_eq!(a.flag(), (revision, false), "the copy's state");
    assert_eq!(a.variation(QA), "control");
    let refused = a.switch(true, "while Redis is down", Some(revision));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("retry-after").parse::<u64>().is_ok());

    let c = Instance::start(work.path(), "c", redis.port);
    let (status, text) = c.readyz();
    assert_eq!(status, 503, "no copy, no Redis: {text}");
    assert!(text.starts_with("not ready: "), "{text}");

    redis.restart_same_port();
    for i in [&a, &c] {
        i.wait_ready(200, "ready");
        assert_eq!(i.wait_revision(revision), (revision, false), "{}", i.name);
        assert_eq!(i.variation(QA), "control", "{}", i.name);
    }
    let restored = c.switch(true, "from the late starter", Some(revision));
    assert_eq!(restored.status, 200, "{}", restored.text());
    assert_eq!(a.wait_revision(revision + 1), (revision + 1, true));
}

/// The change log trimmed while an instance is cut off — frozen (`SIGSTOP`, as in a long
/// pause), then with every connection killed (`CLIENT KILL TYPE normal`): when it is back
/// it loads the whole state and serves the fleet's revision, though the entries between
/// are gone.
///
/// (A frozen process's blocked socket read fails with `EINTR` when it is continued — the
/// read has a timeout — so both cases reach the reconnect's full load rather than the
/// `Remote::Gap` check of an entry that skips revisions.)
#[test]
fn a_trimmed_change_log_makes_a_disconnected_instance_reload_everything() {
    if !have_redis("fleet::a_trimmed_change_log_makes_a_disconnected_instance_reload_everything") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-trim");
    let fleet = Instance::start_all(work.path(), &["a", "b"], redis.port);
    let (a, b) = (&fleet[0], &fleet[1]);
    let mut revision = converge(&[a, b], 1);
    let mut on = a.flag().1;
    // A change on A, taken once A's store connection is back (its first use after a
    // `CLIENT KILL` fails: see `the_first_call_after_a_dropped_redis_connection_is_answered`).
    let mut change = |reason: &str| {
        eventually_blocking(WAIT, || {
            let answer = a.switch(!on, reason, Some(revision));
            match answer.status.as_u16() {
                200 => Ok(()),
                _ => Err(format!("{} {}", answer.status, answer.text())),
            }
        });
        (revision, on) = (revision + 1, !on);
        (revision, on)
    };
    let trim = || {
        let trimmed: u64 = redis.cli(&["XTRIM", "{sluice}:log", "MAXLEN", "0"]).parse().unwrap();
        assert!(trimmed >= 3, "XTRIM removed {trimmed} entries");
        assert_eq!(redis.cli(&["XLEN", "{sluice}:log"]), "0");
    };

    // Frozen.
    b.signal("-STOP");
    for n in 0..3 {
        change(&format!("while B is stopped {n}"));
    }
    trim();
    let expected = change("after the first trim");
    b.signal("-CONT");
    assert_eq!(b.wait_revision(expected.0), expected, "B serves the fleet's revision");
    assert_eq!(b.variation(QA), if expected.1 { "candidate" } else { "control" });

    // Every normal connection killed: B's change-log reader and store connection, and A's.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    for n in 0..3 {
        change(&format!("after CLIENT KILL {n}"));
    }
    trim();
    let expected = change("after the second trim");
    assert_eq!(b.wait_revision(expected.0), expected, "B serves the fleet's revision");
    assert_eq!(b.variation(QA), if expected.1 { "candidate" } else { "control" });
    // And B's changes reach A.
    let (r, o) = b.flag();
    let answer = eventually_blocking(WAIT, || {
        let answer = b.switch(!o, "from B after the trims", Some(r));
        (answer.status == 200).then_some(answer).ok_or("not yet 200")
    });
    assert_eq!(answer.json()["revision"], r + 1);
    assert_eq!(a.wait_revision(r + 1), (r + 1, !o));
}

/// A change sent just after Redis dropped this instance's connection (Redis restarted, a
/// `CLIENT KILL`, an idle `timeout`, a failover) is taken: the dead connection is noticed
/// when it is used, and nothing had been sent on it, so the command can go on a new one.
#[test]
fn the_first_call_after_a_dropped_redis_connection_is_answered() {
    if !have_redis("fleet::the_first_call_after_a_dropped_redis_connection_is_answered") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-dropped");
    let a = Instance::start(work.path(), "a", redis.port);
    let (revision, on) = a.wait_revision(1);
    a.wait_ready(200, "ready");
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let answer = a.switch(!on, "just after the connection dropped", Some(revision));
    assert_eq!(answer.status, 200, "{}", answer.text());
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let audit = a.get("/admin/v1/audit?limit=1");
    assert_eq!(audit.status, 200, "{}", audit.text());
}

/// A Redis, and one instance on it that killed the flag (revision 2).
fn one_instance_with_the_flag_killed(name: &str) -> (RedisServer, tempfile::TempDir, Instance) {
    let redis = RedisServer::start();
    let work = temp_dir(name);
    let a = Instance::start(work.path(), "a", redis.port);
    let (revision, _) = a.wait_revision(1);
    let killed = a.switch(false, "off", Some(revision));
    assert_eq!(killed.status, 200, "{}", killed.text());
    (redis, work, a)
}

/// A new instance, with no state of the fleet's of its own (no local copy), on a Redis
/// that lost its data has nothing to serve: it is not ready — rather than ready
/// ("degraded") while serving its config file's flags, which may differ from what the
/// fleet served (here: the kill switch undone for its clients).
#[test]
fn a_new_instance_on_a_lost_store_is_not_ready() {
    if !have_redis("fleet::a_new_instance_on_a_lost_store_is_not_ready") {
        return;
    }
    let (redis, work, a) = one_instance_with_the_flag_killed("fleet-lost-new");
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    a.wait_ready(200, "degraded: ");
    let c = Instance::start(work.path(), "c", redis.port);
    let (status, text) = c.readyz();
    assert_eq!(redis.cli(&["EXISTS", "{sluice}:epoch"]), "0", "not seeded");
    assert_eq!(status, 503, "/readyz {text:?}: a new instance on a lost store is not ready");
    // Nor does it serve its config file's flags (the fleet had killed the flag).
    let held = c.chat(QA);
    assert_eq!((held.status.as_u16(), held.error_code()), (503, "gateway_not_ready".to_string()), "{}", held.text());
}

/// Right after Redis lost its data — before a running instance has noticed it (within
/// about a second) and marked it lost — a new instance with no local copy must not take
/// the empty Redis for a new fleet and seed it from its config file: the running
/// instances then find an epoch they do not know and refuse changes, while the new one
/// serves its file's flags (here: the kill switch undone), reports ready and takes changes.
#[test]
fn a_new_instance_does_not_seed_a_store_that_lost_its_data_unnoticed() {
    if !have_redis("fleet::a_new_instance_does_not_seed_a_store_that_lost_its_data_unnoticed") {
        return;
    }
    let (redis, work, _a) = one_instance_with_the_flag_killed("fleet-lost-race");
    // A's heartbeat has listed it in the fleet.
    eventually_blocking(WAIT, || redis.cli(&["HLEN", "{sluice}:instances"]) == "1");
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let c = Instance::start(work.path(), "c", redis.port);
    // A notices within about a second and marks the data lost; C, which waits for an
    // empty Redis to stay empty 2.5 s before it seeds it, then finds the mark.
    eventually_blocking(WAIT, || redis.cli(&["EXISTS", "{sluice}:lost"]) == "1");
    eventually_blocking(WAIT, || {
        let (status, text) = c.readyz();
        if status == 503 && text.contains("lost its data") {
            Ok(())
        } else {
            Err(format!("c: /readyz {status} {text:?}, waiting for 503 saying Redis lost its data"))
        }
    });
    assert_eq!(redis.cli(&["GET", "{sluice}:epoch"]), "", "the new instance seeded the lost store from its file");
    let held = c.chat(QA);
    assert_eq!((held.status.as_u16(), held.error_code()), (503, "gateway_not_ready".to_string()), "{}", held.text());
}

/// `sluice store export` and `import` move a state between the stores: a file store's
/// revisions and audit log into an empty Redis (which instances then serve), and back into
/// an empty state directory, unchanged; an import into a Redis holding data is refused.
#[test]
fn an_export_moves_a_state_from_the_file_store_to_redis_and_back() {
    if !have_redis("fleet::an_export_moves_a_state_from_the_file_store_to_redis_and_back") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-export");
    let store = |args: &[&str], cfg: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("store")
            .args(&args[..1])
            .arg("--config")
            .arg(cfg)
            .args(&args[1..])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        )
    };
    // A file store with one change beyond the file's revision 1.
    let file_cfg = work.path().join("file.yaml");
    let with_dir = |dir: &Path| {
        let text = fleet_yaml(None, redis.port);
        let redis_state =
            format!("  store: redis\n  redis:\n    url: redis://127.0.0.1:{}\n    prefix: sluice", redis.port);
        must_replace(&text, &redis_state, &format!("  dir: {}", dir.display()))
    };
    std::fs::write(&file_cfg, with_dir(&work.path().join("files"))).unwrap();
    let (mut child, _, admin) = spawn_serving(serve_command(&file_cfg), &work.path().join("file.log"));
    let killed = http(
        admin,
        "POST",
        &format!("/admin/v1/flags/{FLAG}/kill"),
        &[Instance::auth()],
        r#"{"reason":"before the move"}"#,
    );
    assert_eq!(killed.status, 200, "{}", killed.text());
    child.kill().unwrap();
    child.wait().unwrap();

    let export = work.path().join("export.json");
    let (ok, text) = store(&["export", "--out", export.to_str().unwrap()], &file_cfg);
    assert!(ok && text.contains("exported revision 2 (2 audit entries)"), "{text}");
    let redis_cfg = work.path().join("redis.yaml");
    std::fs::write(&redis_cfg, fleet_yaml(Some(&work.path().join("r")), redis.port)).unwrap();
    let (ok, text) = store(&["import", export.to_str().unwrap()], &redis_cfg);
    assert!(ok && text.contains("imported revision 2"), "{text}");
    let (ok, text) = store(&["import", export.to_str().unwrap()], &redis_cfg);
    assert!(!ok && text.contains("already holds data"), "a second import: {text}");

    // An instance on Redis serves it: the flag killed, the audit log as it was.
    let a = Instance::start(work.path(), "a", redis.port);
    assert_eq!(a.wait_revision(2), (2, false));
    let audit = a.get("/admin/v1/audit?limit=10").json();
    let reasons: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons[0], "before the move");
    assert_eq!(reasons.len(), 2);

    // And back, into an empty state directory: the same state and log.
    let back = work.path().join("back.json");
    let (ok, text) = store(&["export", "--out", back.to_str().unwrap()], &redis_cfg);
    assert!(ok, "{text}");
    let again_cfg = work.path().join("again.yaml");
    std::fs::write(&again_cfg, with_dir(&work.path().join("again"))).unwrap();
    let (ok, text) = store(&["import", back.to_str().unwrap()], &again_cfg);
    assert!(ok, "{text}");
    let read = |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (first, second) = (read(&export), read(&back));
    assert_eq!(first["stored"], second["stored"]);
    assert_eq!(first["audit"], second["audit"]);
    let (ok, text) = store(&["status", "--json"], &again_cfg);
    assert!(ok, "{text}");
    assert_eq!(serde_json::from_str::<Value>(text.trim()).unwrap()["revision"], 2);
}

/// A first start on an empty Redis holds every request while it waits out the grace
/// before seeding. The fleet thread then reads the store, which marks the store current
/// a moment before what it read (or the file's seed) is installed: `/readyz` must still
/// say not ready in that moment. It said ready there, and a load balancer sent requests
/// into 503 `gateway_not_ready`. In process, so the moment can be held open.
#[test]
fn readiness_waits_until_the_fleets_state_is_installed() {
    if !have_redis("fleet::readiness_waits_until_the_fleets_state_is_installed") {
        return;
    }
    use sluice::fleet::{Link, Redis, RedisStore};
    use sluice::state::{Health, State, Store as _};
    let redis = RedisServer::start();
    let loaded = sluice::config::parse(&fleet_yaml(None, redis.port), "fleet.yaml", &|_| None).unwrap();
    let (value, file, snapshot, metrics) = sluice::server::prepare(loaded).unwrap().into_parts();
    let config: sluice::config::RedisConfig = serde_json::from_value(json!({ "url": redis.url() })).unwrap();
    let store = std::sync::Arc::new(RedisStore::open(Redis::new(&config).unwrap(), Link::new(), None).unwrap());
    let state = State::open(Box::new(std::sync::Arc::clone(&store)), value, &file, snapshot, metrics).unwrap();
    assert!(state.gateway().snapshot().held, "an empty Redis within its grace: requests are held");
    assert!(matches!(state.store_health(), Health::NotReady(_)), "{:?}", state.store_health());

    // What the fleet thread does: read until the grace is over (the store is then current)…
    let read = eventually_blocking(WAIT, || store.load().map_err(|e| e.to_string()));
    assert!(read.is_none(), "an empty store, for the file to seed");
    assert_eq!(store.health(), Health::Ok, "the store itself says it is current");
    // …and, before it seeds and installs, the gateway is still not ready.
    assert!(state.gateway().snapshot().held);
    match state.store_health() {
        Health::NotReady(why) => assert!(why.contains("not installed yet"), "{why}"),
        other => panic!("ready while every request is held: {other:?}"),
    }
    let status = state.store_status();
    assert_eq!(status.health, "not_ready", "the status agrees with /readyz");

    state.seed_from_file("seeded an empty fleet store").unwrap();
    assert!(!state.gateway().snapshot().held, "the seed is served");
    assert_eq!(state.store_health(), Health::Ok);
}

/// An experiment's iteration is one window for the whole fleet: an instance started after
/// the iteration began (or after it stopped) shows the same arms' counts as the instance
/// that saw it start, not only what came after its own start (or everything ever served).
#[test]
fn an_instance_started_later_reports_the_same_experiment_window() {
    if !have_redis("fleet::an_instance_started_later_reports_the_same_experiment_window") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-iteration");
    let a = Instance::start(work.path(), "a", redis.port);
    a.wait_ready(200, "ready");
    for n in 0..10 {
        assert_eq!(a.chat(&format!("before-{n}")).status, 200);
    }
    let served = |i: &Instance| -> (u32, BTreeMap<String, u64>) {
        let r = i.get(&format!("/admin/v1/experiments/{FLAG}")).json();
        let arms = r["arms"].as_array().unwrap().iter();
        let arms = arms.map(|a| (a["variation"].as_str().unwrap().to_string(), a["served"].as_u64().unwrap()));
        (r["iteration"].as_u64().unwrap() as u32, arms.collect())
    };
    let total = |i: &Instance| served(i).1.values().sum::<u64>();
    // The fleet's totals (what iterations start from) hold those ten before the change: a
    // window starts from the totals as last read, about a second behind the traffic.
    eventually_blocking(WAIT, || (total(&a) == 10).then_some(()).ok_or(format!("a: {:?}", served(&a))));
    // A new allocation starts a new iteration.
    let body = json!({"reason": "a new iteration", "weights": [
        {"variation": "control", "percent": 50}, {"variation": "candidate", "percent": 50}]});
    let put = http(a.admin, "PUT", &format!("/admin/v1/flags/{FLAG}/rollout"), &[Instance::auth()], &body.to_string());
    assert_eq!(put.status, 200, "{}", put.text());
    for n in 0..40 {
        assert_eq!(a.chat(&format!("during-{n}")).status, 200);
    }
    // Once a's counts reached the fleet's totals, b starts.
    eventually_blocking(WAIT, || (total(&a) == 40).then_some(()).ok_or(format!("a: {:?}", served(&a))));
    let b = Instance::start(work.path(), "b", redis.port);
    b.wait_ready(200, "ready");
    for n in 0..20 {
        assert_eq!(b.chat(&format!("later-{n}")).status, 200);
    }
    let agree = |i: &Instance, j: &Instance, n: u64| {
        eventually_blocking(WAIT, || {
            let (x, y) = (served(i), served(j));
            (x == y && total(i) == n).then_some(x.clone()).ok_or(format!("{}: {x:?}, {}: {y:?}", i.name, j.name))
        })
    };
    let (iteration, arms) = agree(&a, &b, 60);
    assert!(arms.values().all(|&n| n > 0), "both arms served: {arms:?}");

    // Stopped: the window ends there for everyone, an instance started after the stop too.
    let stop = http(
        a.admin,
        "POST",
        &format!("/admin/v1/experiments/{FLAG}/stop"),
        &[Instance::auth()],
        &json!({"reason": "enough"}).to_string(),
    );
    assert_eq!(stop.status, 200, "{}", stop.text());
    b.wait_revision(stop.json()["revision"].as_u64().unwrap());
    agree(&a, &b, 60);
    for n in 0..10 {
        assert_eq!(a.chat(&format!("after-{n}")).status, 200);
    }
    let c = Instance::start(work.path(), "c", redis.port);
    c.wait_ready(200, "ready");
    let (later, _) = agree(&a, &c, 60);
    assert_eq!(later, iteration);
    assert_eq!(served(&b), served(&c));
}

/// Feedback and track signals count once for the whole fleet: the same signal sent to a
/// second instance (an app's retry through the load balancer, or a replay aimed at each
/// instance) is a 409 there and counts nothing; with Redis down a signal is refused (503,
/// `Retry-After`) rather than risk counting it twice, and sent again once Redis is back it
/// counts, once.
#[test]
fn a_signal_sent_to_two_instances_counts_once() {
    if !have_redis("fleet::a_signal_sent_to_two_instances_counts_once") {
        return;
    }
    let mut redis = RedisServer::start();
    let work = temp_dir("fleet-dedup");
    let fleet = Instance::start_all(work.path(), &["a", "b"], redis.port);
    let [a, b] = [&fleet[0], &fleet[1]];
    for i in [a, b] {
        i.wait_ready(200, "ready");
    }
    let key = [("authorization", format!("Bearer {APP_KEY}"))];
    let thumbs_up = |i: &Instance, token: &str| {
        let body = json!({"token": token, "metric": "thumbs_up", "value": true}).to_string();
        http(i.data, "POST", "/v1/feedback", &key, &body)
    };
    let counted = |i: &Instance| -> f64 {
        let text = http(i.admin, "GET", "/metrics", &[], "").text();
        text.lines()
            .filter(|l| l.starts_with("sluice_feedback_total{") && l.contains("metric=\"thumbs_up\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let answer = a.chat("dedup-user");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let token = answer.header("x-sluice-token").to_string();
    assert!(!token.is_empty(), "a response token");

    let first = thumbs_up(a, &token);
    assert_eq!(first.status, 202, "{}", first.text());
    let again = thumbs_up(b, &token);
    assert_eq!(
        (again.status.as_u16(), again.error_code()),
        (409, "duplicate_feedback".to_string()),
        "{}",
        again.text()
    );
    assert_eq!(thumbs_up(a, &token).status, 409, "and on the first instance too");
    assert_eq!((counted(a), counted(b)), (1.0, 0.0), "counted once, by the instance that took it");

    // A tracked call, reported to b and then to a.
    let eval = http(
        a.data,
        "POST",
        &format!("/v1/ai-configs/{FLAG}/evaluate"),
        &key,
        &json!({"context": {"kind": "user", "key": "dedup-agent"}}).to_string(),
    );
    assert_eq!(eval.status, 200, "{}", eval.text());
    let tracking = eval.json()["tracking"]["token"].as_str().unwrap().to_string();
    let report = json!({"token": tracking, "duration_ms": 120, "input_tokens": 10, "output_tokens": 5,
        "metrics": {"thumbs_up": true}})
    .to_string();
    let tracked = http(b.data, "POST", "/v1/track", &key, &report);
    assert_eq!(tracked.status, 202, "{}", tracked.text());
    assert_eq!(tracked.json()["metrics"], json!(["thumbs_up"]));
    let replayed = http(a.data, "POST", "/v1/track", &key, &report);
    assert_eq!(
        (replayed.status.as_u16(), replayed.error_code()),
        (409, "duplicate_feedback".to_string()),
        "{}",
        replayed.text()
    );
    assert_eq!((counted(a), counted(b)), (1.0, 1.0));

    // Redis down: refused, nothing counted, nothing remembered.
    let answer = a.chat("dedup-user-2");
    let token = answer.header("x-sluice-token").to_string();
    redis.kill9();
    let refused = thumbs_up(a, &token);
    assert_eq!(
        (refused.status.as_u16(), refused.error_code()),
        (503, "store_unavailable".to_string()),
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(counted(a), 1.0);
    redis.restart_same_port();
    let taken = eventually_blocking(WAIT, || {
        let t = thumbs_up(a, &token);
        (t.status != 503).then_some(t).ok_or("Redis is not back yet".to_string())
    });
    assert_eq!(taken.status, 202, "sent again once Redis is back it counts: {}", taken.text());
    assert_eq!(thumbs_up(b, &token).status, 409);
    assert_eq!((counted(a), counted(b)), (2.0, 1.0));
}
