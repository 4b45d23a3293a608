//! Fleet propagation: how long a change made on one instance of a fleet
//! (`state.store: redis`) takes to be served by every instance.
//!
//! `--changes` `If-Match` writes (the kill switch of `--flag`, then its restore, and so on),
//! one after another, each sent to the next instance in turn. For each, from the moment
//! its 200 arrives, one thread per instance polls that instance's
//! `GET /admin/v1/status` on a kept-alive connection until it serves the new revision;
//! the sample is the time from the 200 to the first poll that saw it (an upper bound: the
//! instance served it at most one poll earlier). The instance that took the write serves
//! it before it answers, so its samples are one poll's round trip; the report gives the
//! other instances' samples apart as well.
//!
//! Prints one JSON object: the samples' percentiles in microseconds, for the whole fleet
//! and for the instances that did not take the write, the writes' own latency, and the
//! number of errors (anything but a 200 to a write).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The instances' admin addresses, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    admin: Vec<SocketAddr>,
    /// An admin token with the write role.
    #[arg(long, default_value = "sluice-admin-demo-token")]
    token: String,
    #[arg(long, default_value = "support-bot")]
    flag: String,
    #[arg(long, default_value_t = 1000)]
    changes: usize,
    /// Microseconds between two polls of one instance (0: back to back).
    #[arg(long, default_value_t = 100)]
    poll_us: u64,
    /// Give up on a change that has not reached every instance after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        Ok(Conn { addr, reader: BufReader::new(stream), writer })
    }

    /// Send a request and read the whole answer (`content-length` bodies only, as the
    /// admin API sends): status and body.
    fn request(&mut self, method: &str, path: &str, headers: &str, body: &str) -> std::io::Result<(u16, String)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.writer.write_all(req.as_bytes())?;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("the connection closed in the head"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0; length.ok_or_else(|| bad("no content-length"))?];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn get_json(&mut self, path: &str, token: &str) -> std::io::Result<(u16, serde_json::Value)> {
        let (status, body) = self.request("GET", path, &format!("authorization: Bearer {token}\r\n"), "")?;
        Ok((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
    }
}

/// What the pollers are asked to see: change `seq`, revision `revision`, acknowledged at `at`.
#[derive(Clone, Copy)]
struct Target {
    seq: usize,
    revision: u64,
    at: Instant,
}

struct Shared {
    target: Mutex<Option<Target>>,
    posted: Condvar,
    /// Per change, per instance: microseconds from the 200 to seen (`None`: not yet).
    seen: Mutex<Vec<Vec<Option<u64>>>>,
    done: Condvar,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "samples": v.len(),
        "p50_us": percentile(&v, 0.50),
        "p90_us": percentile(&v, 0.90),
        "p99_us": percentile(&v, 0.99),
        "max_us": v.last().copied().unwrap_or(0),
    })
}

fn main() {
    let args = Args::parse();
    let n = args.admin.len();
    let shared = Arc::new(Shared {
        target: Mutex::new(None),
        posted: Condvar::new(),
        seen: Mutex::new(vec![vec![None; n]; args.changes]),
        done: Condvar::new(),
    });
    let poll_gap = Duration::from_micros(args.poll_us);
    for (index, addr) in args.admin.iter().copied().enumerate() {
        let shared = Arc::clone(&shared);
        let token = args.token.clone();
        std::thread::spawn(move || {
            let mut conn = Conn::open(addr).unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
            let mut last_seq = None;
            loop {
                let target = {
                    let mut t = shared.target.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        match *t {
                            Some(target) if Some(target.seq) != last_seq => break target,
                            _ => t = shared.posted.wait(t).unwrap_or_else(|e| e.into_inner()),
                        }
                    }
                };
                last_seq = Some(target.seq);
                loop {
                    let (status, v) =
                        conn.get_json("/admin/v1/status", &token).unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
                    if status == 200 && v["revision"].as_u64().is_some_and(|r| r >= target.revision) {
                        let us = target.at.elapsed().as_micros() as u64;
                        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen[target.seq][index] = Some(us);
                        shared.done.notify_all();
                        break;
                    }
                    if !poll_gap.is_zero() {
                        std::thread::sleep(poll_gap);
                    }
                }
            }
        });
    }

    let mut writers: Vec<Conn> =
        args.admin.iter().map(|a| Conn::open(*a).unwrap_or_else(|e| fail(&format!("{a}: {e}")))).collect();
    let (status, v) = writers[0]
        .get_json(&format!("/admin/v1/flags/{}", args.flag), &args.token)
        .unwrap_or_else(|e| fail(&e.to_string()));
    if status != 200 {
        fail(&format!("GET the flag: {status} {v}"));
    }
    let mut revision = v["revision"].as_u64().unwrap_or_else(|| fail("no revision"));
    let mut on = v["flag"]["on"].as_bool().unwrap_or(true);
    let mut errors = 0u64;
    let mut first_error = None;
    let mut write_us = Vec::with_capacity(args.changes);
    let mut fleet = Vec::with_capacity(args.changes * n);
    let mut others = Vec::with_capacity(args.changes * (n - 1));
    let timeout = Duration::from_secs_f64(args.timeout);
    let began = Instant::now();
    for seq in 0..args.changes {
        let w = seq % n;
        let path = format!("/admin/v1/flags/{}/{}", args.flag, if on { "kill" } else { "restore" });
        let headers = format!("authorization: Bearer {}\r\nif-match: \"{revision}\"\r\n", args.token);
        let body = format!(r#"{{"reason":"fleet bench change {seq}"}}"#);
        let sent = Instant::now();
        let (status, text) =
            writers[w].request("POST", &path, &headers, &body).unwrap_or_else(|e| fail(&e.to_string()));
        let at = Instant::now();
        write_us.push(at.duration_since(sent).as_micros() as u64);
        if status != 200 {
            errors += 1;
            first_error.get_or_insert(format!("change {seq}: {status} {text}"));
            // Read the revision again and go on.
            let (_, v) = writers[w]
                .get_json(&format!("/admin/v1/flags/{}", args.flag), &args.token)
                .unwrap_or_else(|e| fail(&e.to_string()));
            revision = v["revision"].as_u64().unwrap_or(revision);
            on = v["flag"]["on"].as_bool().unwrap_or(on);
            continue;
        }
        revision += 1;
        on = !on;
        *shared.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(Target { seq, revision, at });
        shared.posted.notify_all();
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        while seen[seq].iter().any(Option::is_none) {
            let (s, wait) = shared.done.wait_timeout(seen, timeout).unwrap_or_else(|e| e.into_inner());
            seen = s;
            if wait.timed_out() && seen[seq].iter().any(Option::is_none) {
                fail(&format!(
                    "change {seq} (revision {revision}) did not reach every instance in {timeout:?}: {:?}",
                    seen[seq]
                ));
            }
        }
        for (i, us) in seen[seq].iter().enumerate() {
            let us = us.unwrap_or(0);
            fleet.push(us);
            if i != w {
                others.push(us);
            }
        }
    }
    let took = began.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "instances": n,
        "changes": args.changes,
        "seconds": took,
        "poll_us": args.poll_us,
        "errors": errors,
        "first_error": first_error,
        "fleet": summary(fleet),
        "others": summary(others),
        "write": summary(write_us),
    });
    println!("{out}");
}

fn fail(message: &str) -> ! {
    eprintln!("sluice-fleet-bench: {message}");
    std::process::exit(1)
}
