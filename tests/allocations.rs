//! Heap allocations per data-plane request, counted: the regression check of the load
//! tests' request path. Times vary from run to run; allocation counts do not, so this is
//! what CI can hold the line on.
//!
//! A real gateway (`sluice::server::start`, its worker threads, hyper on both sides) on the
//! load tests' config (`load-tests/sluice.yaml`: the 20-rule flag with a 5 % rollout and a
//! Mustache prompt, and the plain alias), in front of an upstream and driven by a client
//! that allocate nothing per request (blocking sockets, pre-built requests, fixed answer).
//! Every allocation in the process is counted, over `BATCHES` batches of `BATCH` requests
//! after a warm-up (so start-up does not count). The request path's own allocations are
//! the same in every batch; what else runs in the process meanwhile (the guard task's
//! ticks, a buffer that the kernel's timing made hyper reallocate) only ever adds, and
//! adds more on a slower or loaded machine. So the smallest batch is the request path's
//! count, and every batch is printed.
//!
//! When a change lowers a count, lower its ceiling here in the same commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

/// The ceilings: allocations per request (all of the gateway's threads).
const FLAG_CEILING: f64 = 48.0;
const ALIAS_CEILING: f64 = 33.0;

const WARM_UP: usize = 200;
const BATCH: usize = 200;
const BATCHES: usize = 7;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Connections the upstream accepted: the pool must reuse them, or every request would
/// count a dial and a handshake.
static UPSTREAM_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// A global allocator can only be an `unsafe impl`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ANSWER_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"mock-1","choices":[{"index":0,"message":{"role":"assistant","content":"Your order ships today."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":6,"total_tokens":30}}"#;

/// The upstream's answer, its `content-length` true to its body (a wrong one makes hyper
/// drop the connection after every answer, which this test would then count).
fn answer() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER_BODY}",
        ANSWER_BODY.len()
    )
    .into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `content-length` of a head, read without allocating.
fn content_length(head: &[u8]) -> usize {
    let mut rest = head;
    while let Some(i) = find(rest, b"\r\n") {
        let line = &rest[..i];
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            return line[15..].iter().filter(|b| b.is_ascii_digit()).fold(0, |n, b| n * 10 + usize::from(b - b'0'));
        }
        rest = &rest[i + 2..];
    }
    0
}

/// Reads one HTTP/1.1 message with a `content-length` body from `s` into `buf` (which keeps
/// what follows it); returns the head's first line's status or method byte.
fn read_message(s: &mut TcpStream, buf: &mut [u8], filled: &mut usize) -> Option<usize> {
    loop {
        if let Some(i) = find(&buf[..*filled], b"\r\n\r\n") {
            let total = i + 4 + content_length(&buf[..i + 2]);
            while *filled < total {
                let n = s.read(&mut buf[*filled..]).ok()?;
                if n == 0 {
                    return None;
                }
                *filled += n;
            }
            return Some(total);
        }
        let n = s.read(&mut buf[*filled..]).ok()?;
        if n == 0 {
            return None;
        }
        *filled += n;
    }
}

/// An upstream on its own threads: the same answer to every request.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = answer();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            UPSTREAM_CONNECTIONS.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 64 * 1024];
                let mut filled = 0;
                while let Some(total) = read_message(&mut s, &mut buf, &mut filled) {
                    if s.write_all(&answer).is_err() {
                        return;
                    }
                    buf.copy_within(total..filled, 0);
                    filled -= total;
                }
            });
        }
    });
    addr
}

fn request(model: &str, user: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{model}","user":"user-{user}","stream":false,"messages":[{{"role":"user","content":"Where is my order? It was due yesterday."}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\nauthorization: Bearer sk-sluice-demo\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Allocations per request of `model` through the gateway at `addr`: the smallest batch's.
fn per_request(addr: SocketAddr, model: &str) -> f64 {
    let requests: Vec<Vec<u8>> = (0..WARM_UP + BATCH * BATCHES).map(|u| request(model, u)).collect();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut next = requests.iter();
    let mut send = |n: usize| {
        for _ in 0..n {
            s.write_all(next.next().unwrap()).unwrap();
            let total = read_message(&mut s, &mut buf, &mut filled).expect("an answer");
            assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..filled.min(400)]));
            buf.copy_within(total..filled, 0);
            filled -= total;
        }
    };
    send(WARM_UP);
    let mut batches = [0u64; BATCHES];
    for batch in &mut batches {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        send(BATCH);
        *batch = ALLOCATIONS.load(Ordering::SeqCst) - before;
    }
    let per: Vec<f64> = batches.iter().map(|&b| b as f64 / BATCH as f64).collect();
    eprintln!("{model}: allocations per request in each batch {per:.1?}");
    per.into_iter().fold(f64::INFINITY, f64::min)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn allocations_per_request_stay_under_their_ceilings() {
    let up = upstream();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/load-tests/sluice.yaml")).unwrap();
    let text = text
        .replace("${DATA_ADDR}", "127.0.0.1:0")
        .replace("${ADMIN_ADDR}", "127.0.0.1:0")
        .replace("${MOCK_ADDR}", &up.to_string());
    let gw = common::gateway(&text).await;
    let addr = gw.data_addr;
    let (flag, alias) =
        tokio::task::spawn_blocking(move || (per_request(addr, "support-bot"), per_request(addr, "plain")))
            .await
            .unwrap();
    eprintln!("allocations per request: 20-rule flag {flag:.1}, plain alias {alias:.1}");
    let dialed = UPSTREAM_CONNECTIONS.load(Ordering::SeqCst);
    assert!(
        dialed <= 4,
        "{dialed} upstream connections for {} requests: the pool does not reuse them",
        2 * (WARM_UP + BATCH * BATCHES)
    );
    assert!(flag <= FLAG_CEILING, "the flag's path allocates {flag:.1} times per request (ceiling {FLAG_CEILING})");
    assert!(
        alias <= ALIAS_CEILING,
        "the alias's path allocates {alias:.1} times per request (ceiling {ALIAS_CEILING})"
    );
    gw.shutdown().await;
}
