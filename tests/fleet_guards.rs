//! The guards of a fleet (`state.store: redis`): every instance checks the fleet's totals,
//! only the holder of the fenced lease acts. End to end with a real `redis-server`
//! (tests/common/redis.rs) and several `sluice serve` processes: a failing treatment whose
//! traffic is spread over three instances — each below the guard's floor on its own — is
//! rolled back once, by the leader, with one webhook call; a `kill -9` of the leader hands
//! the lease on once it expires, a graceful stop at once; a leader stopped (`SIGSTOP`) past
//! its lease is replaced, and once continued it neither trips again nor notifies again. In process, on the library: a paused
//! leader's trip is refused by the fence even at the current revision, and the statistics
//! flush counts a lost reply once, a restarted instance's requests once, and — end to end —
//! exactly the requests the clients saw answered across a graceful restart.
//!
//! Without redis-server every test prints `SKIPPED …` and passes, unless
//! `SLUICE_REQUIRE_REDIS=1`. Nothing sleeps to synchronise: every wait is on a condition,
//! bounded only so that a broken build fails instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::redis::{have_redis, RedisServer};
use common::{eventually_blocking, spawn_serving, strip_ansi, temp_dir, Answer, Capture, KEY};
use serde_json::{json, Value};
use sluice::fleet::lease::{Lease, LEASE, RENEW};
use sluice::fleet::stats::{read_totals, Flushed, Flusher};
use sluice::fleet::{Link, Redis, RedisStore};
use sluice::guard::{Guards, Now};
use sluice::metrics::{Finished, FleetTotals, GuardSnapshot, GuardStats, Outcome};
use sluice::state::{AuditQuery, State};

const TOKEN: &str = "fleet-guards-admin-token-0123456789";
const FLAG: &str = "bot";
/// The guard's floor: fewer samples than this in either arm, and it does not decide.
const FLOOR: u64 = 90;
/// Requests each instance serves in the spread test: fewer than [`FLOOR`] in all, so no
/// instance alone could reach the floor in either arm; the fleet's about 127 per arm do.
const PER_INSTANCE: usize = 85;
/// A bound on every wait: never what a test waits for, only what stops a broken build.
const WAIT: Duration = Duration::from_secs(30);
/// How long the guards must have gone on checking after a trip before "no second trip"
/// is believed: several leases' renewals and ten check intervals.
const AFTER_TRIP: Duration = Duration::from_secs(2);
/// The separator of a statistics field name (`<variation>\u{1f}<field>`).
const SEP: char = '\u{1f}';

// ---------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client (one connection per request).

fn try_http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>, body: &str) -> Result<Answer, String> {
    let headers: Vec<(&str, String)> = auth.map(|t| ("authorization", format!("Bearer {t}"))).into_iter().collect();
    common::http1::request(addr, method, path, &headers, body)
}

// ---------------------------------------------------------------------------------------
// The webhook: a tiny HTTP/1.1 server on 127.0.0.1:0 that records every call.

/// One webhook call: its headers (lower-case names) and its JSON body.
#[derive(Debug, Clone)]
struct Call {
    headers: HashMap<String, String>,
    body: Value,
}

struct Hook {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&calls), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let c = Arc::clone(&c);
                std::thread::spawn(move || serve_hook(stream, &c));
            }
        });
        Hook { addr, calls, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer every request of one (kept-alive) connection with 200, recording it.
fn serve_hook(stream: TcpStream, calls: &Mutex<Vec<Call>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
        calls.lock().unwrap().push(Call { headers, body });
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
            .is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The config and the instances.

/// A fleet member's config: both listeners on port 0, the state in `dir` and on Redis, and
/// a routing flag `bot` split 50/50 between `control` (a mock that always answers) and
/// `treatment` (a mock failing `treatment_error_rate` of its requests), guarded on the
/// error rate with a floor of [`FLOOR`] samples per arm, checked every 200 ms, the circuit
/// breaker off (only the sequential test decides), rolling back on a trip.
fn fleet_yaml(dir: &Path, redis_url: &str, treatment_error_rate: f64, webhook: Option<&str>) -> String {
    let webhook = webhook.map(|w| format!("      webhook: {w}\n")).unwrap_or_default();
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
limits: {{shutdown_grace: 5s}}
admin:
  tokens:
    - {{name: ops, token: {TOKEN}, role: write}}
state:
  dir: {dir}
  store: redis
  redis: {{url: "{redis_url}"}}
clients:
  app: {{key: {KEY}}}
providers:
  good:
    kind: mock
  flaky:
    kind: mock
    mock: {{error_rate: {treatment_error_rate}, error_status: 500}}
ai_configs:
  bot:
    versions:
      - {{version: 1, provider: good, model: m1}}
      - {{version: 2, provider: flaky, model: m2}}
flags:
  {FLAG}:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: treatment, ai_config: bot, version: 2}}
    fallthrough: {{rollout: {{variations: [{{variation: control, percent: 50}}, {{variation: treatment, percent: 50}}]}}}}
    guard:
      control: control
      treatment: treatment
      metrics:
        - {{metric: error_rate}}
      min_samples: {FLOOR}
      check_interval: 200ms
      circuit_breaker: {{error_rate: 1.0, min_requests: 1000000}}
      srm_check: false
{webhook}"#,
        dir = dir.display()
    )
}

fn serve_command(cfg: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("serve").arg("--config").arg(cfg);
    cmd.env_remove("RUST_LOG");
    cmd
}

/// One `sluice serve` child, killed (by pid) when dropped — a stopped one too.
struct Instance {
    name: String,
    child: Child,
    data: SocketAddr,
    admin: SocketAddr,
    cfg: PathBuf,
    log: PathBuf,
    starts: u32,
}

impl Instance {
    fn start(work: &Path, name: &str, yaml: &dyn Fn(&Path) -> String) -> Instance {
        let dir = work.join(name);
        let cfg = work.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml(&dir)).unwrap();
        let log = work.join(format!("{name}-1.log"));
        let (child, data, admin) = spawn_serving(serve_command(&cfg), &log);
        let instance = Instance { name: name.into(), child, data, admin, cfg, log, starts: 1 };
        instance.wait_serving();
        instance
    }

    /// Until it serves the fleet's state (a first start seeds an empty Redis only after it
    /// stayed empty a moment; before, every request gets 503 `gateway_not_ready`).
    fn wait_serving(&self) {
        eventually_blocking(Duration::from_secs(30), || match try_http(self.admin, "GET", "/readyz", None, "") {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("{}: /readyz {} {}", self.name, a.status, a.text())),
            Err(e) => Err(format!("{}: /readyz: {e}", self.name)),
        });
    }

    /// Several at once (they race to seed the empty Redis: one does).
    fn start_all(work: &Path, names: &[&str], yaml: &(dyn Fn(&Path) -> String + Sync)) -> Vec<Instance> {
        std::thread::scope(|s| {
            let handles: Vec<_> = names.iter().map(|n| s.spawn(move || Instance::start(work, n, yaml))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Start it again on the same config and directory (after it exited).
    fn start_again(&mut self) {
        self.starts += 1;
        self.log = self.log.with_file_name(format!("{}-{}.log", self.name, self.starts));
        let (child, data, admin) = spawn_serving(serve_command(&self.cfg), &self.log);
        (self.child, self.data, self.admin) = (child, data, admin);
        self.wait_serving();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -<signal> <pid>`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    #[track_caller]
    fn get(&self, path: &str) -> Value {
        let a = try_http(self.admin, "GET", path, Some(TOKEN), "").unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(a.status, 200, "{} GET {path}: {}", self.name, a.text());
        a.json()
    }

    /// This instance's name in the fleet, and the leader it names (`/admin/v1/status`).
    fn fleet(&self) -> (String, Option<String>) {
        let s = self.get("/admin/v1/status");
        let fleet = &s["store"]["fleet"];
        let me = fleet["instance"].as_str().unwrap_or_else(|| panic!("{}: no fleet in {s}", self.name)).to_string();
        (me, fleet["leader"].as_str().map(str::to_string))
    }

    /// The guard's state in the flag this instance serves (none written: `armed`).
    fn guard_state(&self) -> String {
        let f = self.get(&format!("/admin/v1/flags/{FLAG}"));
        f["flag"]["definition"]["guard"]["state"].as_str().unwrap_or("armed").to_string()
    }

    /// The guard's latest check on this instance (`/admin/v1/guards`).
    fn guard_status(&self) -> Value {
        self.get("/admin/v1/guards")["guards"][0].clone()
    }

    /// `sluice_fleet_leader` on the admin `/metrics`.
    fn leader_gauge(&self) -> Option<f64> {
        let a = try_http(self.admin, "GET", "/metrics", None, "").ok()?;
        a.text().lines().find_map(|l| l.strip_prefix("sluice_fleet_leader ").and_then(|v| v.trim().parse().ok()))
    }

    /// A chat request of `user` through flag `bot`.
    fn chat(&self, user: &str) -> Answer {
        let body = json!({"model": FLAG, "user": user, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        try_http(self.data, "POST", "/v1/chat/completions", Some(KEY), &body)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

/// Sends `SIGCONT` to a stopped instance when dropped (a failing test leaves nothing
/// stopped; the instance's own drop then kills it).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
    }
}

/// Wait until every one of `fleet` names the same leader, one of them; returns the
/// instances' names (in `fleet`'s order) and the leader's index.
#[track_caller]
fn agreed_leader(fleet: &[&Instance]) -> (Vec<String>, usize) {
    eventually_blocking(WAIT, || {
        let seen: Vec<(String, Option<String>)> = fleet.iter().map(|i| i.fleet()).collect();
        let names: Vec<String> = seen.iter().map(|(me, _)| me.clone()).collect();
        let leaders: BTreeSet<Option<String>> = seen.iter().map(|(_, l)| l.clone()).collect();
        match leaders.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(l)] => match names.iter().position(|n| n == l) {
                Some(at) => Ok((names, at)),
                None => Err(format!("they name {l}, none of them: {seen:?}")),
            },
            _ => Err(format!("no one leader named by all: {seen:?}")),
        }
    })
}

/// The audit entries of `bot` written by the guard (through `at`), newest first.
fn guard_entries(at: &Instance) -> Vec<Value> {
    let audit = at.get(&format!("/admin/v1/audit?flag={FLAG}&limit=100"));
    audit["entries"].as_array().unwrap().iter().filter(|e| e["actor"] == "guard").cloned().collect()
}

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
}

/// Wait until each of `fleet` serves the rolled-back flag and its guard has checked at
/// `after` or later (on its wall clock: one host).
#[track_caller]
fn checked_since(fleet: &[&Instance], after: SystemTime) {
    eventually_blocking(WAIT, || {
        for i in fleet {
            let state = i.guard_state();
            let status = i.guard_status();
            let checked = status["checked_at"].as_str().map(parse_time);
            if state != "rolled_back" || checked.is_none_or(|c| c < after) {
                return Err(format!("{}: flag guard state {state}, last check {}", i.name, status["checked_at"]));
            }
        }
        Ok(())
    })
}

/// The trip's audit entry, the one webhook call, and their agreement: the reason ends with
/// `; trip <id>`, the payload's `trip_id` is that id, and so is its `idempotency-key`.
#[track_caller]
fn one_trip_one_call(entries: &[Value], calls: &[Call]) -> String {
    assert_eq!(entries.len(), 1, "one guard entry: {entries:#?}");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(reason.contains("error_rate of treatment regressed against control"), "{reason}");
    assert!(reason.contains("rolled back"), "{reason}");
    let (_, id) = reason.rsplit_once("; trip ").unwrap_or_else(|| panic!("no `; trip <id>` in {reason}"));
    assert_eq!(calls.len(), 1, "one webhook call: {calls:#?}");
    let call = &calls[0];
    assert_eq!((&call.body["event"], &call.body["flag"]), (&json!("trip"), &json!(FLAG)), "{:?}", call.body);
    assert_eq!(call.body["trip_id"], id, "{:?}", call.body);
    assert_eq!(call.headers.get("idempotency-key").map(String::as_str), Some(id), "{:?}", call.headers);
    id.to_string()
}

// ---------------------------------------------------------------------------------------
// The tests: end to end.

/// Three instances each serve 85 requests of a 50/50 split whose treatment fails half the
/// time: no instance alone reaches the floor of 90 per arm, the fleet's totals do. The
/// treatment is rolled back exactly once — one audit entry, by the leader every instance
/// names, one webhook call whose `idempotency-key` is the payload's `trip_id` — and no
/// second trip follows while every instance goes on checking.
#[test]
fn a_failing_treatment_spread_over_three_instances_is_rolled_back_once_by_the_leader() {
    if !have_redis("fleet_guards::a_failing_treatment_spread_over_three_instances_is_rolled_back_once_by_the_leader") {
        return;
    }
    let redis = RedisServer::start();
    let hook = Hook::start();
    let work = temp_dir("fleet-guard-spread");
    let (url, webhook) = (redis.url(), hook.url());
    let yaml = |dir: &Path| fleet_yaml(dir, &url, 0.5, Some(&webhook));
    let fleet = Instance::start_all(work.path(), &["a", "b", "c"], &yaml);
    let all: Vec<&Instance> = fleet.iter().collect();
    let (names, _) = agreed_leader(&all);

    // The traffic, round-robin: per instance, the variation each request was served.
    let mut served: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in 0..PER_INSTANCE {
        for i in &all {
            let a = i.chat(&format!("{}-{n}", i.name));
            let variation = a.header("x-sluice-variation").to_string();
            assert!(a.status == 200 || (a.status == 500 && variation == "treatment"), "{}: {}", a.status, a.text());
            *served.entry((i.name.clone(), variation)).or_default() += 1;
        }
    }
    for ((instance, variation), n) in &served {
        assert!((*n as u64) < FLOOR, "{instance} alone served {n} of {variation}: {served:?}");
    }

    // Rolled back on every instance: by one trip.
    eventually_blocking(WAIT, || {
        let states: Vec<String> = all.iter().map(|i| i.guard_state()).collect();
        states.iter().all(|s| s == "rolled_back").then_some(()).ok_or(format!("guard states {states:?}"))
    });
    let entries = guard_entries(&fleet[0]);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let tripped_at = parse_time(entries[0]["time"].as_str().unwrap());
    eventually_blocking(WAIT, || !hook.calls().is_empty());
    // Every instance goes on checking (the rolled-back flag) for a while after the trip.
    checked_since(&all, tripped_at + AFTER_TRIP);

    let id = one_trip_one_call(&guard_entries(&fleet[1]), &hook.calls());
    let call = &hook.calls()[0].body;
    let samples = call["treatment_samples"].as_u64().unwrap();
    assert!(samples >= FLOOR, "the trip counted the fleet's samples: {call}");
    // The whole audit log: the seeding and the trip, nothing else.
    assert_eq!(redis.cli(&["XLEN", "{sluice}:audit"]), "2");
    assert_eq!(redis.cli(&["GET", "{sluice}:rev"]), "2");

    // Made by one instance, the leader every instance names.
    let (names_now, leader) = agreed_leader(&all);
    assert_eq!(names_now, names);
    let tripped: Vec<&str> =
        all.iter().filter(|i| !i.guard_status()["last_trip"].is_null()).map(|i| i.name.as_str()).collect();
    assert_eq!(tripped, vec![fleet[leader].name.as_str()], "the instance whose status shows the trip");
    let logged: Vec<&str> =
        all.iter().filter(|i| i.log_text().contains("guard tripped")).map(|i| i.name.as_str()).collect();
    assert_eq!(logged, tripped, "the instance that logged the trip");
    let last = &fleet[leader].guard_status()["last_trip"];
    assert!(last["reason"].as_str().unwrap().ends_with(&format!("; trip {id}")), "{last}");
    eprintln!("rolled back by {} after {served:?}; trip {id} with {samples} treatment samples", fleet[leader].name);
}

/// `kill -9` of the leader: another instance takes the lease once it expires — within
/// the lease and one renewal — names itself in its status, and its `sluice_fleet_leader`
/// gauge is 1 while the other's is 0; the fence moved on.
#[test]
fn the_leader_killed_with_sigkill_is_replaced_within_the_lease_and_a_renewal() {
    if !have_redis("fleet_guards::the_leader_killed_with_sigkill_is_replaced_within_the_lease_and_a_renewal") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-guard-kill");
    let url = redis.url();
    let yaml = |dir: &Path| fleet_yaml(dir, &url, 0.0, None);
    let mut fleet = Instance::start_all(work.path(), &["a", "b", "c"], &yaml);
    let (names, old) = agreed_leader(&fleet.iter().collect::<Vec<_>>());
    let fence: u64 = redis.cli(&["GET", "{sluice}:fence"]).parse().unwrap();
    assert_eq!(fleet[old].leader_gauge(), Some(1.0));

    fleet[old].kill();
    let killed = Instant::now();
    let rest: Vec<usize> = (0..fleet.len()).filter(|&i| i != old).collect();
    let new = eventually_blocking(LEASE + RENEW + Duration::from_millis(3500), || {
        let seen: Vec<(String, Option<String>)> = rest.iter().map(|&i| fleet[i].fleet()).collect();
        let leaders: BTreeSet<&Option<String>> = seen.iter().map(|(_, l)| l).collect();
        match (leaders.len(), seen.iter().position(|(me, l)| l.as_ref() == Some(me))) {
            (1, Some(at)) => Ok(rest[at]),
            _ => Err(format!("the survivors see {seen:?}")),
        }
    });
    let took = killed.elapsed();
    assert_ne!(new, old);
    assert_eq!(fleet[new].fleet().0, names[new]);
    let other = rest.iter().copied().find(|&i| i != new).unwrap();
    eventually_blocking(WAIT, || {
        let gauges = (fleet[new].leader_gauge(), fleet[other].leader_gauge());
        (gauges == (Some(1.0), Some(0.0))).then_some(()).ok_or(format!("sluice_fleet_leader (new, other): {gauges:?}"))
    });
    let now: u64 = redis.cli(&["GET", "{sluice}:fence"]).parse().unwrap();
    assert_eq!(now, fence + 1, "the new leader's token");
    assert_eq!(redis.cli(&["GET", "{sluice}:leader"]), names[new]);
    assert!(fleet[new].log_text().contains("this instance leads the fleet"));
    eprintln!("{} took over from {} in {took:?}", fleet[new].name, fleet[old].name);
}

/// A leader stopped gracefully (SIGTERM) gives the lease up: another instance takes it at
/// its next try — within a renewal, well before the lease would have expired.
#[test]
fn a_leader_stopped_gracefully_hands_the_lease_on_at_once() {
    if !have_redis("fleet_guards::a_leader_stopped_gracefully_hands_the_lease_on_at_once") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-guard-term");
    let url = redis.url();
    let yaml = |dir: &Path| fleet_yaml(dir, &url, 0.0, None);
    let mut fleet = Instance::start_all(work.path(), &["a", "b"], &yaml);
    let (names, old) = agreed_leader(&fleet.iter().collect::<Vec<_>>());
    let new = 1 - old;
    fleet[old].signal("TERM");
    let stopped = Instant::now();
    let status = eventually_blocking(WAIT, || fleet[old].child.try_wait().unwrap());
    assert!(status.success(), "{status}\n{}", fleet[old].log_text());
    eventually_blocking(WAIT, || {
        let (me, leader) = fleet[new].fleet();
        (leader.as_ref() == Some(&me)).then_some(()).ok_or(format!("{me} names {leader:?}"))
    });
    let took = stopped.elapsed();
    assert_eq!(redis.cli(&["GET", "{sluice}:leader"]), names[new]);
    assert!(took < LEASE, "the lease was given up, not left to expire: {took:?}");
    eprintln!("{} took the lease {took:?} after {} stopped gracefully", fleet[new].name, fleet[old].name);
}

/// A leader stopped (`SIGSTOP`) past its lease: another instance takes the lease, and the
/// traffic that follows makes it trip. Continued, the old leader finds it no longer leads:
/// one audit entry for the trip, one webhook call, and nothing more while it checks again.
#[test]
fn a_leader_stopped_past_its_lease_is_replaced_and_does_not_trip_again_when_continued() {
    if !have_redis("fleet_guards::a_leader_stopped_past_its_lease_is_replaced_and_does_not_trip_again_when_continued") {
        return;
    }
    let redis = RedisServer::start();
    let hook = Hook::start();
    let work = temp_dir("fleet-guard-stop");
    let (url, webhook) = (redis.url(), hook.url());
    let yaml = |dir: &Path| fleet_yaml(dir, &url, 0.5, Some(&webhook));
    let fleet = Instance::start_all(work.path(), &["a", "b", "c"], &yaml);
    let all: Vec<&Instance> = fleet.iter().collect();
    let (names, a) = agreed_leader(&all);

    // Some traffic everywhere first, below the floor: the old leader counted some of it.
    for n in 0..25 {
        for i in &all {
            i.chat(&format!("before-{}-{n}", i.name));
        }
    }
    let stopped_at = Instant::now();
    fleet[a].signal("STOP");
    let cont = Continue(fleet[a].child.id());
    let rest: Vec<usize> = (0..fleet.len()).filter(|&i| i != a).collect();
    let b = eventually_blocking(WAIT, || {
        let seen: Vec<(String, Option<String>)> = rest.iter().map(|&i| fleet[i].fleet()).collect();
        match seen.iter().position(|(me, l)| l.as_ref() == Some(me)) {
            Some(at) => Ok(rest[at]),
            None => Err(format!("the others see {seen:?}")),
        }
    });
    eprintln!("{} took the lease {:?} after {} stopped", fleet[b].name, stopped_at.elapsed(), fleet[a].name);
    assert_eq!(fleet[b].guard_state(), "armed", "no trip before the new leader's");

    // Traffic to the running instances, enough for the floor without the stopped one's
    // share (about 125 per arm): the new leader trips.
    let rounds = 100;
    for n in 0..rounds {
        for &i in &rest {
            fleet[i].chat(&format!("after-{}-{n}", fleet[i].name));
        }
    }
    eventually_blocking(WAIT, || {
        let state = fleet[b].guard_state();
        (state == "rolled_back").then_some(()).ok_or_else(|| format!("{state}: {}", fleet[b].guard_status()))
    });
    let entries = guard_entries(&fleet[b]);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    eventually_blocking(WAIT, || !hook.calls().is_empty());

    // Continued: it catches up, names the new leader, and checks on without acting.
    let continued = SystemTime::now();
    drop(cont);
    eventually_blocking(WAIT, || {
        let (_, leader) = fleet[a].fleet();
        (leader.as_deref() == Some(names[b].as_str())).then_some(()).ok_or(format!("it names {leader:?}"))
    });
    checked_since(&all, continued + AFTER_TRIP);
    let id = one_trip_one_call(&guard_entries(&fleet[a]), &hook.calls());
    assert_eq!(redis.cli(&["XLEN", "{sluice}:audit"]), "2", "the seeding and the trip only");
    assert_eq!(redis.cli(&["GET", "{sluice}:fence"]), "2", "two leaders, two tokens");
    assert!(fleet[b].log_text().contains("guard tripped"), "{}", fleet[b].log_text());
    let old = fleet[a].log_text();
    assert!(!old.contains("guard tripped"), "{old}");
    let said: Vec<&str> = [
        "this instance no longer leads the fleet",
        "another instance holds the fleet's lease: this one stops deciding",
        "the fleet's lease was not renewed in time",
    ]
    .into_iter()
    .filter(|m| old.contains(m))
    .collect();
    assert!(!said.is_empty(), "the old leader says it stopped deciding:\n{old}");
    eventually_blocking(WAIT, || {
        let gauges = (fleet[a].leader_gauge(), fleet[b].leader_gauge());
        (gauges == (Some(0.0), Some(1.0))).then_some(()).ok_or(format!("sluice_fleet_leader (old, new): {gauges:?}"))
    });
    eprintln!("trip {id} by {}; {} said {said:?}", fleet[b].name, fleet[a].name);
}

/// The fleet's request totals in Redis (`HGETALL {sluice}:stats:bot`), summed over variations.
fn redis_requests(redis: &RedisServer) -> u64 {
    let out = redis.cli(&["HGETALL", &format!("{{sluice}}:stats:{FLAG}")]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|pair| pair.len() == 2 && pair[0].ends_with(&format!("{SEP}requests")))
        .map(|pair| pair[1].trim().parse::<u64>().unwrap())
        .sum()
}

/// When each instance was last seen (`{sluice}:instances`: name → unix seconds).
fn seen_at(redis: &RedisServer) -> HashMap<String, u64> {
    let out = redis.cli(&["HGETALL", "{sluice}:instances"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (pair[0].to_string(), pair[1].split(' ').next().unwrap().parse().unwrap()))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

/// Wait until the fleet's totals in Redis are exactly `expected` (failing at once should
/// they pass it).
#[track_caller]
fn totals_reach(redis: &RedisServer, expected: u64) {
    eventually_blocking(WAIT, || {
        let n = redis_requests(redis);
        assert!(n <= expected, "the fleet counted {n} requests, more than the {expected} answered");
        (n == expected).then_some(()).ok_or(format!("{n} of {expected} requests counted"))
    });
}

/// Requests spread over three instances, one of them stopped gracefully (SIGTERM: its last
/// statistics are flushed as it exits) and started again (a new instance name, counters
/// from zero), more requests: the fleet's totals in Redis are exactly the requests the
/// clients saw answered, and stay so while every instance flushes again.
#[test]
fn a_graceful_restart_neither_loses_nor_double_counts_the_fleets_requests() {
    if !have_redis("fleet_guards::a_graceful_restart_neither_loses_nor_double_counts_the_fleets_requests") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-guard-count");
    let url = redis.url();
    let yaml = |dir: &Path| fleet_yaml(dir, &url, 0.0, None);
    let mut fleet = Instance::start_all(work.path(), &["a", "b", "c"], &yaml);
    let mut answered = 0u64;
    let send = |i: &Instance, user: String, answered: &mut u64| {
        let a = i.chat(&user);
        assert_eq!(a.status, 200, "{}: {}", i.name, a.text());
        *answered += 1;
    };
    for n in 0..30 {
        for i in &fleet {
            send(i, format!("first-{}-{n}", i.name), &mut answered);
        }
    }
    // A burst on `a` just before it stops: most of it is still only in its own counters.
    for n in 0..40 {
        send(&fleet[0], format!("burst-{n}"), &mut answered);
    }
    let (old_name, _) = fleet[0].fleet();
    fleet[0].signal("TERM");
    let status = eventually_blocking(WAIT, || fleet[0].child.try_wait().unwrap());
    assert!(status.success(), "a graceful stop: {status}\n{}", fleet[0].log_text());
    assert!(!fleet[0].log_text().contains("could not be flushed"), "{}", fleet[0].log_text());
    totals_reach(&redis, answered);

    fleet[0].start_again();
    let (new_name, _) = fleet[0].fleet();
    assert_ne!(new_name, old_name, "a restarted instance has a name of its own");
    for n in 0..20 {
        for i in &fleet {
            send(i, format!("second-{}-{n}", i.name), &mut answered);
        }
    }
    totals_reach(&redis, answered);
    // Every running instance flushes (and notes itself) at least once more: nothing more.
    let reached = unix_now();
    let names: Vec<String> = fleet.iter().map(|i| i.fleet().0).collect();
    eventually_blocking(WAIT, || {
        let seen = seen_at(&redis);
        let late: Vec<&String> = names.iter().filter(|n| seen.get(*n).is_none_or(|t| *t < reached + 2)).collect();
        late.is_empty().then_some(()).ok_or(format!("not seen since {reached} + 2: {late:?} in {seen:?}"))
    });
    assert_eq!(redis_requests(&redis), answered);
    assert!(seen_at(&redis).contains_key(&old_name), "the stopped instance was noted under its own name");
    eprintln!("{answered} requests answered and counted once");
}

// ---------------------------------------------------------------------------------------
// In process, on the library.

fn redis_config(redis: &RedisServer) -> sluice::config::RedisConfig {
    serde_json::from_value(json!({ "url": redis.url() })).unwrap()
}

/// A store on `redis` as one instance of a fleet (a new link: a name of its own).
fn open_store(redis: &RedisServer) -> RedisStore {
    let client = Redis::new(&redis_config(redis)).unwrap();
    RedisStore::open(client, Link::new(), None).unwrap()
}

/// `ok` successful requests and `errors` upstream errors into `stats`.
fn record(stats: &GuardStats, ok: u64, errors: u64) {
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

/// The fleet's totals of (`bot`, `variation`) as the guards read them.
fn fleet_totals(store: &RedisStore, variation: &str) -> GuardSnapshot {
    let all = read_totals(store, &[FLAG.to_string()]).unwrap();
    all.get(&(FLAG.to_string(), variation.to_string())).cloned().unwrap_or_default()
}

/// A flush whose replies are lost is sent again, with the same id and deltas, and counts
/// once; what was counted meanwhile goes in the next flush; a restarted instance (a new
/// name, its counters from zero, its flush ids from 1 again) adds exactly its own.
#[test]
fn lost_flush_replies_count_once_and_a_restarted_instance_adds_only_its_own() {
    if !have_redis("fleet_guards::lost_flush_replies_count_once_and_a_restarted_instance_adds_only_its_own") {
        return;
    }
    const UNIX: u64 = 1_790_000_005;
    let redis = RedisServer::start();
    let store = open_store(&redis);
    let key = (FLAG.to_string(), "treatment".to_string());
    let stats = GuardStats::default();
    let now = |stats: &GuardStats| vec![(key.clone(), stats.snapshot())];

    record(&stats, 30, 10);
    let mut flusher = Flusher::default();
    flusher.lose_replies(2);
    assert!(flusher.flush(&store, now(&stats), UNIX).is_err(), "the first reply is lost");
    // Counted meanwhile: waits for the flush after the pending one.
    record(&stats, 5, 0);
    assert!(flusher.flush(&store, now(&stats), UNIX).is_err(), "the second reply is lost");
    assert_eq!(fleet_totals(&store, "treatment").requests, 40, "sent twice, added once");
    let mut results = Vec::new();
    loop {
        let r = flusher.flush(&store, now(&stats), UNIX).unwrap();
        results.push(r);
        if r == Flushed::Nothing {
            break;
        }
        assert!(results.len() < 5, "{results:?}");
    }
    assert_eq!(results, vec![Flushed::Repeat, Flushed::Added, Flushed::Nothing]);
    let totals = fleet_totals(&store, "treatment");
    assert_eq!((totals.requests, totals.errors), (45, 10));
    assert_eq!(totals.latency.n, 35, "the latency moments too");

    // A restarted instance: a new link (name), new counters, new flush sequence.
    let again = open_store(&redis);
    assert_ne!(again.link.instance, store.link.instance);
    let fresh = GuardStats::default();
    record(&fresh, 7, 3);
    let mut second = Flusher::default();
    second.lose_replies(1);
    let mut tries = 0;
    let last = loop {
        tries += 1;
        match second.flush(&again, now(&fresh), UNIX) {
            Ok(r) => break r,
            Err(e) => assert!(tries < 5, "{e}"),
        }
    };
    assert_eq!((tries, last), (2, Flushed::Repeat));
    let totals = fleet_totals(&store, "treatment");
    assert_eq!((totals.requests, totals.errors), (55, 13), "the restarted instance's own, once");
    // The ten-second bucket got the same deltas, once each.
    let bucket = format!("{{sluice}}:agg:{}", UNIX / 10);
    let field = |f: &str| redis.cli(&["HGET", &bucket, &format!("{FLAG}{SEP}treatment{SEP}{f}")]);
    assert_eq!((field("requests"), field("errors")), ("55".to_string(), "13".to_string()));
    // The first instance has nothing new: nothing is sent.
    assert_eq!(flusher.flush(&store, now(&stats), UNIX).unwrap(), Flushed::Nothing);
    assert_eq!(fleet_totals(&again, "treatment").requests, 55);
}

/// One fleet member in process: a state on Redis and its guards with the lease, no guard
/// task (the test checks, at moments of its own) and no fleet thread (the test sets the
/// fleet's totals the guards decide on).
struct Member {
    state: Arc<State>,
    guards: Guards,
    store: Arc<RedisStore>,
}

impl Member {
    fn open(yaml: &str, redis: &RedisServer, runtime: &tokio::runtime::Runtime) -> Member {
        let loaded = sluice::config::parse(yaml, "fleet.yaml", &|_| None).unwrap();
        let (value, file, snapshot, metrics) = sluice::server::prepare(loaded).unwrap().into_parts();
        metrics.enable_fleet();
        metrics.set_fleet_totals(FleetTotals::default());
        let store = Arc::new(open_store(redis));
        let state = Arc::new(State::open(Box::new(Arc::clone(&store)), value, &file, snapshot, metrics).unwrap());
        let lease = Arc::new(Lease::new(Arc::clone(&store)));
        let guards = Guards::new(Arc::clone(&state), runtime.handle().clone()).with_lease(lease);
        Member { state, guards, store }
    }

    /// The fleet's totals as if read from Redis: control answers all, the treatment fails
    /// `treatment_errors` of its requests, `n` per arm.
    fn set_totals(&self, n: u64, treatment_errors: u64) {
        let (control, treatment) = (GuardStats::default(), GuardStats::default());
        record(&control, n, 0);
        record(&treatment, n - treatment_errors, treatment_errors);
        let totals: FleetTotals = [
            ((FLAG.to_string(), "control".to_string()), control.snapshot()),
            ((FLAG.to_string(), "treatment".to_string()), treatment.snapshot()),
        ]
        .into_iter()
        .collect();
        self.state.gateway().metrics.set_fleet_totals(totals);
    }

    fn guard_entries(&self) -> usize {
        let query = AuditQuery { flag: Some(FLAG.into()), limit: 100, ..AuditQuery::default() };
        self.state.audit(&query).unwrap().entries.iter().filter(|e| e.actor == "guard").count()
    }
}

/// The fence, deterministically: leader A is "paused" past its lease (its key expires in
/// Redis while A's own monotonic clock says it still holds the lease — the moment a
/// `SIGSTOP` past the lease leaves it in), B takes the lease with a newer token, then A
/// trips at the fleet's current revision: Redis refuses the write (fenced), nothing is
/// notified; B's trip is written and notified once; A, at its next renewal, sees B leads.
#[test]
fn a_paused_leaders_trip_is_fenced_off_even_at_the_current_revision() {
    if !have_redis("fleet_guards::a_paused_leaders_trip_is_fenced_off_even_at_the_current_revision") {
        return;
    }
    let redis = RedisServer::start();
    let hook = Hook::start();
    let work = temp_dir("fleet-guard-fence");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let yaml = fleet_yaml(work.path(), &redis.url(), 0.5, Some(&hook.url()));
    // A first start seeds an empty Redis only once it has stayed empty 2.5 s: wait for it
    // to be ready for seeding, so that A seeds it as it opens.
    let probe = open_store(&redis);
    eventually_blocking(WAIT, || sluice::state::Store::load(&probe).map_err(|e| e.to_string()));
    let a = Member::open(&yaml, &redis, &runtime);
    let b = Member::open(&yaml, &redis, &runtime);
    assert_eq!((a.state.revision(), b.state.revision()), (1, 1), "one seeds, the other loads");
    let t0 = Now { instant: Instant::now(), wall: SystemTime::now() };

    // Both check: A takes the lease (token 1), B follows; the windows start.
    assert!(a.guards.check_all(t0).checked.contains(&FLAG.to_string()));
    b.guards.check_all(t0);
    assert_eq!(redis.cli(&["GET", "{sluice}:fence"]), "1");
    assert_eq!(b.store.link.state().leader.as_deref(), Some(a.store.link.instance.as_str()));

    // A is paused: its key expires. B's next try takes the lease (token 2), with too few
    // samples yet to decide anything.
    redis.cli(&["DEL", "{sluice}:leader"]);
    b.set_totals(20, 10);
    let pass = b.guards.check_all(t0.after(RENEW));
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert_eq!(redis.cli(&["GET", "{sluice}:fence"]), "2");
    assert_eq!(redis.cli(&["GET", "{sluice}:leader"]), b.store.link.instance);

    // A resumes believing it leads (a second after its renewal, by its clock) and trips,
    // against the fleet's current revision: fenced.
    a.set_totals(200, 100);
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
    let pass = tracing::subscriber::with_default(subscriber, || a.guards.check_all(t0.after(Duration::from_secs(1))));
    assert!(pass.checked.contains(&FLAG.to_string()) && pass.wrote.is_empty(), "{pass:?}");
    let text = logs.text();
    assert!(
        text.contains("this instance no longer leads the fleet") && text.contains("(fence 2, this write's 1)"),
        "{text}"
    );
    assert_eq!(redis.cli(&["GET", "{sluice}:rev"]), "1", "nothing written");
    assert_eq!(a.state.revision(), 1);

    // B, the leader, trips: written once, notified once.
    b.set_totals(200, 100);
    let pass = b.guards.check_all(t0.after(RENEW + Duration::from_millis(250)));
    assert_eq!(pass.wrote, vec![2], "{pass:?}");
    assert_eq!(b.guard_entries(), 1);
    assert_eq!(redis.cli(&["XLEN", "{sluice}:audit"]), "2");
    let calls = eventually_blocking(WAIT, || Some(hook.calls()).filter(|c| !c.is_empty()));
    let entries: Vec<Value> = {
        let query = AuditQuery { flag: Some(FLAG.into()), limit: 100, ..AuditQuery::default() };
        let all = b.state.audit(&query).unwrap().entries;
        all.iter().filter(|e| e.actor == "guard").map(|e| json!({"reason": e.reason})).collect()
    };
    one_trip_one_call(&entries, &calls);

    // A's next renewal: B holds the lease; A stops deciding.
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
    let pass = tracing::subscriber::with_default(subscriber, || a.guards.check_all(t0.after(RENEW * 2)));
    assert!(pass.wrote.is_empty(), "{pass:?}");
    assert!(logs.text().contains("this one stops deciding"), "{}", logs.text());
    assert_eq!(a.store.link.state().leader.as_deref(), Some(b.store.link.instance.as_str()));
    assert!(a.state.gateway().metrics.render().contains("sluice_fleet_leader 0"));
    assert!(b.state.gateway().metrics.render().contains("sluice_fleet_leader 1"));
    assert_eq!(hook.calls().len(), 1);
}

/// A guard's window starts once for the whole fleet: an instance that first looks at it
/// later (a leader elected after a failover, a restarted one) measures from where the
/// first instance started it, not from its own first look.
#[test]
fn a_window_starts_once_for_the_whole_fleet() {
    if !have_redis("fleet_guards::a_window_starts_once_for_the_whole_fleet") {
        return;
    }
    let redis = RedisServer::start();
    let work = temp_dir("fleet-guard-window");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let yaml = fleet_yaml(work.path(), &redis.url(), 0.5, None);
    let probe = open_store(&redis);
    eventually_blocking(WAIT, || sluice::state::Store::load(&probe).map_err(|e| e.to_string()));
    let a = Member::open(&yaml, &redis, &runtime);
    let t0 = Now { instant: Instant::now(), wall: SystemTime::now() };
    // A starts the window with 50 requests per arm behind it.
    a.set_totals(50, 0);
    assert!(a.guards.check_all(t0).checked.contains(&FLAG.to_string()));
    assert_eq!(redis.cli(&["EVAL", "return #redis.call('KEYS', '{sluice}:window:*')", "0"]), "1");

    // Later, 250 per arm; C looks for the first time: 200 per arm in the window, as for A.
    let c = Member::open(&yaml, &redis, &runtime);
    c.set_totals(250, 100);
    a.set_totals(250, 100);
    c.guards.check_all(t0);
    a.guards.check_all(t0.after(Duration::from_secs(1)));
    let samples = |m: &Member| {
        let status = m.guards.status();
        let s = status.iter().find(|s| s.flag == FLAG).expect("the guard's status");
        (s.metrics[0].control_samples, s.metrics[0].treatment_samples)
    };
    assert_eq!(samples(&c), (200, 200), "C measures from where A started the window");
    assert_eq!(samples(&a), samples(&c));
}
