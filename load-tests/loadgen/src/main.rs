//! Load generator for sluice's load tests.
//!
//! Every request carries a distinct `user`, so a targeting flag really evaluates. Each
//! worker keeps one HTTP/1.1 connection alive and sends requests one after another.
//! Modes:
//! - `chat`: non-streaming chat completions; latency from sending the request to the
//!   end of the response body.
//! - `stream`: streamed chat completions; time to first token (the first SSE frame that
//!   carries content) and total stream time.
//! - `hold`: open `--concurrency` streams at once (one connection each) and read each to
//!   its end; reports how many completed.
//!
//! Prints one JSON object with the counts and percentiles (microseconds).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Chat,
    Stream,
    Hold,
}

#[derive(Debug, Parser, Clone)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Target address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: SocketAddr,
    /// The `model` to send.
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "sk-sluice-demo")]
    key: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to run (`chat`, `stream`).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Streamed chunks (sent as `x-mock-chunks`).
    #[arg(long, default_value_t = 20)]
    chunks: u32,
    /// Milliseconds between chunks (sent as `x-mock-chunk-delay-ms`).
    #[arg(long, default_value_t = 5)]
    chunk_delay_ms: u32,
    /// A tag for the user keys, so runs do not share users.
    #[arg(long, default_value = "run")]
    tag: String,
    /// `hold` over this many HTTP/2 connections (streams multiplexed) instead of one
    /// HTTP/1.1 connection per stream — for holding more streams than a process may
    /// open file descriptors.
    #[arg(long, default_value_t = 0)]
    http2_connections: usize,
}

#[derive(Default)]
struct Samples {
    latency_us: Vec<u32>,
    ttft_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

fn request(args: &Args, user: &str, stream: bool) -> hyper::Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{}","user":"{user}","stream":{stream},"messages":[{{"role":"user","content":"Where is my order? It was due yesterday and the tracking page says nothing."}}]}}"#,
        args.model
    );
    let mut b = hyper::Request::post("/v1/chat/completions")
        .header("host", args.addr.to_string())
        .header("x-target", args.addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", args.key));
    if stream {
        b = b
            .header("x-mock-chunks", args.chunks.to_string())
            .header("x-mock-chunk-delay-ms", args.chunk_delay_ms.to_string());
    }
    b.body(Full::new(Bytes::from(body))).unwrap_or_default()
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Whether a frame carries content: `"content":"` followed by a non-empty string.
fn has_content(frame: &[u8]) -> bool {
    let needle = br#""content":""#;
    frame
        .windows(needle.len())
        .enumerate()
        .any(|(i, w)| w == needle && frame.get(i + needle.len()).is_some_and(|b| *b != b'"'))
}

/// One request; returns (total latency, time to first content) on success.
async fn one(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(Duration, Option<Duration>), String> {
    let start = Instant::now();
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttft = None;
    let mut last: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if ttft.is_none() && has_content(data) {
                ttft = Some(start.elapsed());
            }
            last.clear();
            last.extend_from_slice(&data[data.len().saturating_sub(256)..]);
        }
    }
    if !status.is_success() {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&last)));
    }
    if last.windows(8).any(|w| w == b"\"error\":") {
        return Err(format!("error event: {}", String::from_utf8_lossy(&last)));
    }
    Ok((start.elapsed(), ttft))
}

async fn worker(args: Args, id: usize, start: Instant) -> Samples {
    let mut s = Samples::default();
    let stream = args.mode == Mode::Stream;
    let warm = start + Duration::from_secs_f64(args.warmup);
    let end = warm + Duration::from_secs_f64(args.duration);
    let mut sender = match connect(args.addr).await {
        Ok(c) => c,
        Err(e) => {
            s.error(e);
            return s;
        }
    };
    let mut seq = 0u64;
    while Instant::now() < end {
        seq += 1;
        let user = format!("{}-{id}-{seq}", args.tag);
        // A server may close a kept-alive connection between requests (nginx does after
        // `keepalive_requests`): that is no error, just reconnect.
        if sender.is_closed() || sender.ready().await.is_err() {
            match connect(args.addr).await {
                Ok(c) => sender = c,
                Err(e) => {
                    s.error(e);
                    continue;
                }
            }
        }
        let result = one(&mut sender, request(&args, &user, stream)).await;
        let measuring = Instant::now() >= warm;
        match result {
            Ok((total, ttft)) if measuring => {
                s.latency_us.push(total.as_micros() as u32);
                if let Some(t) = ttft {
                    s.ttft_us.push(t.as_micros() as u32);
                }
            }
            Ok(_) => {}
            Err(e) => {
                s.error(e);
                match connect(args.addr).await {
                    Ok(c) => sender = c,
                    Err(e) => {
                        s.error(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
    s
}

async fn hold_one(args: Args, id: usize, h2: Option<http2::SendRequest<Full<Bytes>>>) -> Samples {
    let mut s = Samples::default();
    let result = async {
        let req = request(&args, &format!("{}-hold-{id}", args.tag), true);
        match h2 {
            Some(mut sender) => one_h2(&mut sender, req).await,
            None => {
                let mut sender = connect(args.addr).await?;
                one(&mut sender, req).await
            }
        }
    }
    .await;
    match result {
        Ok((total, ttft)) => {
            s.latency_us.push(total.as_micros() as u32);
            s.ttft_us.extend(ttft.map(|t| t.as_micros() as u32));
        }
        Err(e) => s.error(e),
    }
    s
}

async fn connect_h2(addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) =
        http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `one`, over an HTTP/2 connection.
async fn one_h2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    mut req: hyper::Request<Full<Bytes>>,
) -> Result<(Duration, Option<Duration>), String> {
    let start = Instant::now();
    req.headers_mut().remove("host");
    *req.uri_mut() = format!("http://{}/v1/chat/completions", req_addr(&req)).parse().map_err(|e| format!("{e}"))?;
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttft = None;
    let mut ended_with_error = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if ttft.is_none() && has_content(data) {
                ttft = Some(start.elapsed());
            }
            ended_with_error = data.windows(8).any(|w| w == b"\"error\":");
        }
    }
    if !status.is_success() || ended_with_error {
        return Err(format!("status {status} or error event"));
    }
    Ok((start.elapsed(), ttft))
}

fn req_addr(req: &hyper::Request<Full<Bytes>>) -> String {
    req.headers().get("x-target").and_then(|v| v.to_str().ok()).unwrap_or("localhost").to_string()
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let start = Instant::now();
    let mut h2 = Vec::new();
    for _ in 0..args.http2_connections {
        match connect_h2(args.addr).await {
            Ok(c) => h2.push(c),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut tasks = Vec::with_capacity(args.concurrency);
    for id in 0..args.concurrency {
        let a = args.clone();
        let conn = (!h2.is_empty()).then(|| h2[id % h2.len()].clone());
        tasks.push(tokio::spawn(async move {
            if a.mode == Mode::Hold {
                hold_one(a, id, conn).await
            } else {
                worker(a, id, start).await
            }
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        match t.await {
            Ok(s) => {
                all.latency_us.extend(s.latency_us);
                all.ttft_us.extend(s.ttft_us);
                all.errors += s.errors;
                if all.first_error.is_none() {
                    all.first_error = s.first_error;
                }
            }
            Err(e) => all.error(format!("task: {e}")),
        }
    }
    let elapsed = if args.mode == Mode::Hold { start.elapsed().as_secs_f64() } else { args.duration };
    all.latency_us.sort_unstable();
    all.ttft_us.sort_unstable();
    let out = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
        "requests": all.latency_us.len(),
        "errors": all.errors,
        "first_error": all.first_error,
        "seconds": elapsed,
        "rps": all.latency_us.len() as f64 / elapsed,
        "p50_us": pct(&all.latency_us, 0.50),
        "p90_us": pct(&all.latency_us, 0.90),
        "p99_us": pct(&all.latency_us, 0.99),
        "max_us": all.latency_us.last().copied().unwrap_or(0),
        "ttft_p50_us": pct(&all.ttft_us, 0.50),
        "ttft_p99_us": pct(&all.ttft_us, 0.99),
    });
    println!("{out}");
}
