//! A real `redis-server` for the fleet tests (`tests/fleet.rs`): one per test, on a
//! random loopback port, its data (the AOF) in a directory of its own, stopped by process
//! id when the test ends.
//!
//! Redis cannot be told to pick a free port itself (there is no port 0), and a port
//! picked by binding and dropping a socket could be taken before Redis binds it. So a
//! random port is tried, and when Redis exits because the port is in use (its log says
//! so), another one: nothing is ever bound on Redis's behalf. Ports come from 20000..60000
//! outside the kernel's ephemeral range (`ip_local_port_range`), so that no `127.0.0.1:0`
//! listener of a test — nor an outgoing connection — is handed the port while Redis is
//! down between [`RedisServer::kill9`] and [`RedisServer::restart_same_port`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{runs, Prerequisite};

/// `redis-server` and `redis-cli`: without them the fleet tests print `SKIPPED …` and
/// pass, unless `SLUICE_REQUIRE_REDIS=1` (as in `.ci/run`).
pub const REDIS: Prerequisite = Prerequisite {
    what: "redis-server and redis-cli (Redis 7)",
    require: Some("SLUICE_REQUIRE_REDIS"),
    tests: &[
        "fleet::a_kill_switch_sent_to_one_instance_is_served_by_every_instance",
        "fleet::concurrent_if_match_writes_give_contiguous_revisions_and_one_audit_entry_each",
        "fleet::acknowledged_changes_survive_kill_9_of_redis_with_fsync_always",
        "fleet::a_flushall_keeps_the_flag_served_and_refuses_writes_until_seeded",
        "fleet::redis_stopped_the_data_plane_serves_and_writes_get_503_until_it_is_back",
        "fleet::starting_with_redis_down_serves_the_local_copy_or_is_not_ready",
        "fleet::a_trimmed_change_log_makes_a_disconnected_instance_reload_everything",
        "fleet::the_first_call_after_a_dropped_redis_connection_is_answered",
        "fleet::a_new_instance_on_a_lost_store_is_not_ready",
        "fleet::a_new_instance_does_not_seed_a_store_that_lost_its_data_unnoticed",
        "fleet::an_export_moves_a_state_from_the_file_store_to_redis_and_back",
        "fleet_guards::a_failing_treatment_spread_over_three_instances_is_rolled_back_once_by_the_leader",
        "fleet_guards::the_leader_killed_with_sigkill_is_replaced_within_the_lease_and_a_renewal",
        "fleet_guards::a_leader_stopped_gracefully_hands_the_lease_on_at_once",
        "fleet_guards::a_leader_stopped_past_its_lease_is_replaced_and_does_not_trip_again_when_continued",
        "fleet_guards::a_graceful_restart_neither_loses_nor_double_counts_the_fleets_requests",
        "fleet_guards::lost_flush_replies_count_once_and_a_restarted_instance_adds_only_its_own",
        "fleet_guards::a_paused_leaders_trip_is_fenced_off_even_at_the_current_revision",
        "fleet_guards::a_window_starts_once_for_the_whole_fleet",
    ],
    missing: || {
        (!runs("redis-server", &["--version"]) || !runs("redis-cli", &["--version"]))
            .then(|| "redis-server or redis-cli is not installed (`apt-get install redis-server`; Redis 7)".to_string())
    },
};

/// Whether Redis is here for test `name`; when it is not, the test is skipped (the
/// caller returns), or this fails when `SLUICE_REQUIRE_REDIS=1`.
pub fn have_redis(name: &str) -> bool {
    super::have(&REDIS, name)
}

/// How long Redis may take to answer after it was started.
const START: Duration = Duration::from_secs(20);

/// One `redis-server` child process.
pub struct RedisServer {
    pub port: u16,
    /// Its `--dir`: the AOF, and one log per start (`redis-N.log`).
    pub dir: PathBuf,
    pub child: Child,
    /// `--appendfsync`.
    fsync: &'static str,
    /// How many times it was started (names the log).
    starts: u32,
    _temp: tempfile::TempDir,
}

impl RedisServer {
    /// Redis with `--appendonly yes --appendfsync always`.
    pub fn start() -> RedisServer {
        RedisServer::start_with("always")
    }

    /// Redis with `--appendonly yes --appendfsync <fsync>` (`always`, `everysec`).
    pub fn start_with(fsync: &'static str) -> RedisServer {
        let temp = tempfile::Builder::new().prefix("sluice-test-redis-").tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut tried = Vec::new();
        for _ in 0..40 {
            let port = random_port();
            if tried.contains(&port) {
                continue;
            }
            tried.push(port);
            let log = dir.join("redis-1.log");
            let mut child = spawn(port, &dir, fsync, &log);
            match wait_ready(&mut child, port, &log) {
                Ok(()) => return RedisServer { port, dir, child, fsync, starts: 1, _temp: temp },
                Err(Exit::PortInUse) => continue,
                Err(Exit::Other(why)) => panic!("redis-server did not start on port {port}: {why}"),
            }
        }
        panic!("redis-server found every port it tried in use: {tried:?}")
    }

    /// The URL sluice's `state.redis.url` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9` it (no shutdown, no final fsync) and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and directory (it reads its AOF back); waits until
    /// it answers with the data loaded. The port may be busy for a moment (a connection of
    /// the old process's): that is retried until a deadline.
    pub fn restart_same_port(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            self.starts += 1;
            let log = self.dir.join(format!("redis-{}.log", self.starts));
            let mut child = spawn(self.port, &self.dir, self.fsync, &log);
            match wait_ready(&mut child, self.port, &log) {
                Ok(()) => {
                    self.child = child;
                    return;
                }
                Err(Exit::PortInUse) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(Exit::PortInUse) => panic!("port {} stayed in use: redis-server cannot restart on it", self.port),
                Err(Exit::Other(why)) => panic!("redis-server did not restart on port {}: {why}", self.port),
            }
        }
    }

    /// `redis-cli -p PORT args…`: its output, trimmed.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        cli(self.port, args)
    }

    /// [`RedisServer::try_cli`], failing the test when redis-cli fails.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("redis-cli -p {} {args:?}: {e}", self.port))
    }

    /// Everything the current process has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.starts))).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_port() -> u16 {
    // The kernel's ephemeral range, left alone where it can be.
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((60000, 60000));
    let outside: Vec<(u16, u16)> = [(20000, low.min(60000)), (high.saturating_add(1).max(20000), 60000)]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect();
    match outside.as_slice() {
        [] => fastrand::u16(20000..60000),
        ranges => {
            let (a, b) = ranges[fastrand::usize(..ranges.len())];
            fastrand::u16(a..b)
        }
    }
}

fn spawn(port: u16, dir: &Path, fsync: &str, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", fsync, "--dir"])
        .arg(dir)
        .args(["--daemonize", "no", "--logfile", ""])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"))
}

enum Exit {
    PortInUse,
    Other(String),
}

/// Wait until `child` answers on `port` — it, not some other process there — with its
/// data loaded.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), Exit> {
    let pid = child.id().to_string();
    let deadline = Instant::now() + START;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Address already in use") {
                return Err(Exit::PortInUse);
            }
            return Err(Exit::Other(format!("it exited ({status}):\n{text}")));
        }
        if let Ok(info) = cli(port, &["INFO"]) {
            let field = |name: &str| {
                info.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())).unwrap_or_default()
            };
            if field("process_id:") == pid && field("loading:") == "0" {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(Exit::Other(format!("no answer within {START:?}:\n{text}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() || stdout.starts_with("Could not connect") || stderr.starts_with("Could not connect") {
        return Err(format!("{} {stdout} {stderr}", out.status));
    }
    Ok(stdout)
}
