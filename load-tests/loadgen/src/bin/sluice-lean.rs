//! The load tests' lean client: one blocking thread per connection, raw HTTP/1.1 on a
//! kept-alive socket, a pre-built request per user, no allocation per request after
//! warm-up — so that at concurrency 1 the client costs a few microseconds and what the
//! run measures is the server.
//!
//! - `chat`: non-streaming; latency from writing the request to the response's last byte.
//! - `stream`: streamed; time to first token (from writing the request to the first
//!   bytes of an SSE event carrying content) and the whole stream.
//!
//!     sluice-lean --addr 127.0.0.1:8080 --model support-bot --mode stream --concurrency 1 --duration 8
//!
//! Prints one JSON object: requests, errors, latency and TTFT percentiles (µs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Chat,
    Stream,
}

#[derive(Debug, Parser, Clone)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "sk-sluice-demo")]
    key: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Streamed chunks (`x-mock-chunks`).
    #[arg(long, default_value_t = 20)]
    chunks: u32,
    /// Milliseconds between chunks (`x-mock-chunk-delay-ms`).
    #[arg(long, default_value_t = 5)]
    chunk_delay_ms: u32,
    /// Distinct users cycled through (each request names the next).
    #[arg(long, default_value_t = 4096)]
    users: usize,
    #[arg(long, default_value = "lean")]
    tag: String,
}

#[derive(Default)]
struct Samples {
    latency_ns: Vec<u64>,
    ttft_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn request(args: &Args, user: &str) -> Vec<u8> {
    let stream = args.mode == Mode::Stream;
    let body = format!(
        r#"{{"model":"{}","user":"{user}","stream":{stream},"messages":[{{"role":"user","content":"Where is my order? It was due yesterday and the tracking page says nothing."}}]}}"#,
        args.model
    );
    let mut head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n",
        args.addr,
        args.key,
        body.len()
    );
    if stream {
        head.push_str(&format!("x-mock-chunks: {}\r\nx-mock-chunk-delay-ms: {}\r\n", args.chunks, args.chunk_delay_ms));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Reads one response; returns (time to first content, if streamed).
struct Reader {
    buf: Vec<u8>,
    filled: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Reader {
    fn more(&mut self, s: &mut TcpStream) -> Result<(), String> {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match s.read(&mut self.buf[self.filled..]) {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// One whole response (content-length or chunked); `start` for the TTFT.
    fn response(&mut self, s: &mut TcpStream, start: Instant) -> Result<Option<Duration>, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break i + 4;
            }
            self.more(s)?;
        };
        let head = &self.buf[..head_end];
        if !head.starts_with(b"HTTP/1.1 200") {
            let text = String::from_utf8_lossy(&self.buf[..self.filled.min(400)]).into_owned();
            return Err(format!("status: {text}"));
        }
        let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
        let mut ttft = None;
        let end = if let Some(at) = lower.find("content-length:") {
            let n: usize =
                lower[at + 15..].split("\r\n").next().unwrap_or("").trim().parse().map_err(|_| "bad length")?;
            while self.filled < head_end + n {
                self.more(s)?;
            }
            head_end + n
        } else if lower.contains("transfer-encoding: chunked") {
            let mut scanned = head_end;
            loop {
                if ttft.is_none() && find(&self.buf[scanned..self.filled], br#""content":"tok"#).is_some() {
                    ttft = Some(start.elapsed());
                }
                if let Some(i) = find(&self.buf[scanned.saturating_sub(5)..self.filled], b"\r\n0\r\n\r\n") {
                    break scanned.saturating_sub(5) + i + 7;
                }
                scanned = self.filled.saturating_sub(16).max(head_end);
                self.more(s)?;
            }
        } else {
            return Err("neither content-length nor chunked".into());
        };
        if find(&self.buf[head_end..end], b"\"error\":").is_some() {
            return Err(format!(
                "error in body: {}",
                String::from_utf8_lossy(&self.buf[head_end..end.min(head_end + 300)])
            ));
        }
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        Ok(ttft)
    }
}

fn worker(args: &Args, id: usize, start: Instant) -> Samples {
    let mut out = Samples::default();
    let requests: Vec<Vec<u8>> = (0..args.users).map(|u| request(args, &format!("{}-{id}-{u}", args.tag))).collect();
    let warm = start + Duration::from_secs_f64(args.warmup);
    let end = warm + Duration::from_secs_f64(args.duration);
    out.latency_ns.reserve(1 << 20);
    let mut conn: Option<(TcpStream, Reader)> = None;
    let mut i = 0usize;
    while Instant::now() < end {
        let (s, reader) = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect(args.addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert((s, Reader { buf: vec![0; 64 * 1024], filled: 0 }))
                }
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let req = &requests[i % requests.len()];
        i += 1;
        let t0 = Instant::now();
        let result = s.write_all(req).map_err(|e| format!("write: {e}")).and_then(|()| reader.response(s, t0));
        let took = t0.elapsed();
        match result {
            Ok(ttft) if t0 >= warm => {
                out.latency_ns.push(took.as_nanos() as u64);
                if let Some(t) = ttft {
                    out.ttft_ns.push(t.as_nanos() as u64);
                }
            }
            Ok(_) => {}
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                conn = None;
            }
        }
    }
    out
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let start = Instant::now();
    let handles: Vec<_> = (0..args.concurrency)
        .map(|id| {
            let a = args.clone();
            std::thread::spawn(move || worker(&a, id, start))
        })
        .collect();
    let mut all = Samples::default();
    for h in handles {
        match h.join() {
            Ok(s) => {
                all.latency_ns.extend(s.latency_ns);
                all.ttft_ns.extend(s.ttft_ns);
                all.errors += s.errors;
                if all.first_error.is_none() {
                    all.first_error = s.first_error;
                }
            }
            Err(_) => all.errors += 1,
        }
    }
    all.latency_ns.sort_unstable();
    all.ttft_ns.sort_unstable();
    let out = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
        "requests": all.latency_ns.len(),
        "errors": all.errors,
        "first_error": all.first_error,
        "seconds": args.duration,
        "rps": all.latency_ns.len() as f64 / args.duration,
        "p50_us": pct(&all.latency_ns, 0.50),
        "p90_us": pct(&all.latency_ns, 0.90),
        "p99_us": pct(&all.latency_ns, 0.99),
        "ttft_p50_us": pct(&all.ttft_ns, 0.50),
        "ttft_p99_us": pct(&all.ttft_ns, 0.99),
    });
    println!("{out}");
}
