//! The load tests' upstream: the smallest OpenAI-shaped HTTP/1.1 server that answers
//! `POST /v1/chat/completions` in a few microseconds, so that what a run measures in front
//! of it is the proxy and not the provider. (`sluice mock-provider` is the full fake
//! provider, with markers, errors and every dialect; it costs tens of microseconds per
//! request more, which hides what a proxy adds.)
//!
//! - A body with `"stream":true` is answered as an SSE stream (chunked): `x-mock-chunks`
//!   events (default 20), the first at once and each next one `x-mock-chunk-delay-ms`
//!   later (default 5), then a usage event and `data: [DONE]`.
//! - Anything else gets one fixed chat completion with usage.
//! - Keep-alive; request bodies by `content-length` only (what hyper, nginx and oha send).
//!
//!     sluice-upstream <listen addr>     # prints `address=ADDR` on stderr once bound
//!
//! One current-thread runtime per thread (`--threads`, default 1), all accepting on the
//! same listener.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COMPLETION: &str = r#"{"id":"chatcmpl-load","object":"chat.completion","created":1700000000,"model":"mock-1","choices":[{"index":0,"message":{"role":"assistant","content":"Your order ships today; the tracking page will update within the hour."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":14,"total_tokens":38}}"#;

const MAX_HEAD: usize = 64 * 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut threads = 1usize;
    let mut blocking = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1).max(1),
            "--blocking" => blocking = true,
            _ => addr = Some(a),
        }
    }
    let Some(addr) = addr else {
        eprintln!("usage: sluice-upstream [--threads N] <listen addr>");
        std::process::exit(2);
    };
    let listener = match std::net::TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sluice-upstream: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = listener.set_nonblocking(true);
    match listener.local_addr() {
        Ok(a) => eprintln!("sluice-upstream listening address={a}"),
        Err(e) => {
            eprintln!("sluice-upstream: {e}");
            std::process::exit(1);
        }
    }
    if blocking {
        let _ = listener.set_nonblocking(false);
        for s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || serve_blocking(s));
        }
        return;
    }
    let mut handles = Vec::new();
    for _ in 0..threads {
        let Ok(l) = listener.try_clone() else { std::process::exit(1) };
        handles.push(std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(l) = TcpListener::from_std(l) else { return };
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            tokio::spawn(serve(s));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// The request's head, parsed: what the answer depends on.
struct Head {
    /// Bytes of the head, including the blank line.
    len: usize,
    body_len: usize,
    chunks: u32,
    delay_ms: u64,
    close: bool,
}

fn parse(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut head = Head { len, body_len: 0, chunks: 20, delay_ms: 5, close: false };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.body_len = value.parse().map_err(|_| ())?;
        } else if h.name.eq_ignore_ascii_case("x-mock-chunks") {
            head.chunks = value.parse().unwrap_or(20);
        } else if h.name.eq_ignore_ascii_case("x-mock-chunk-delay-ms") {
            head.delay_ms = value.parse().unwrap_or(5);
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Not needed by any client of the load tests.
            return Err(());
        }
    }
    Ok(Some(head))
}

async fn serve(mut s: TcpStream) {
    let plain = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    )
    .into_bytes();
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        // A whole head, then the whole body.
        let head = loop {
            match parse(&buf[..filled]) {
                Ok(Some(h)) => break h,
                Ok(None) if filled < MAX_HEAD => {}
                _ => return,
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match s.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        };
        let total = head.len + head.body_len;
        if buf.len() < total {
            buf.resize(total, 0);
        }
        while filled < total {
            match s.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        }
        let body = &buf[head.len..total];
        let stream = memchr_stream(body);
        let ok = if stream { send_stream(&mut s, &head).await } else { s.write_all(&plain).await.is_ok() };
        if !ok || head.close {
            return;
        }
        buf.copy_within(total..filled, 0);
        filled -= total;
    }
}

/// Whether the body asks for a stream (`"stream":true`, with or without a space).
fn memchr_stream(body: &[u8]) -> bool {
    let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    find(br#""stream":true"#) || find(br#""stream": true"#)
}

async fn send_stream(s: &mut TcpStream, head: &Head) -> bool {
    let start = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(start);
    for i in 0..head.chunks {
        if i > 0 {
            if s.write_all(&out).await.is_err() {
                return false;
            }
            out.clear();
            tokio::time::sleep(Duration::from_millis(head.delay_ms)).await;
        }
        let event = format!(
            "data: {{\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-1\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        );
        chunk(&mut out, event.as_bytes());
    }
    let usage = format!(
        "data: {{\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-1\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: {{\"id\":\"chatcmpl-load\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-1\",\"choices\":[],\"usage\":{{\"prompt_tokens\":24,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        head.chunks,
        24 + head.chunks
    );
    chunk(&mut out, usage.as_bytes());
    out.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&out).await.is_ok()
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn serve_blocking(mut s: std::net::TcpStream) {
    use std::io::{Read, Write};
    let plain = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
        COMPLETION.len()
    )
    .into_bytes();
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        let head = loop {
            match parse(&buf[..filled]) {
                Ok(Some(h)) => break h,
                Ok(None) if filled < MAX_HEAD => {}
                _ => return,
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match s.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        };
        let total = head.len + head.body_len;
        if buf.len() < total {
            buf.resize(total, 0);
        }
        while filled < total {
            match s.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        }
        let ok = s.write_all(&plain).is_ok();
        if !ok || head.close {
            return;
        }
        buf.copy_within(total..filled, 0);
        filled -= total;
    }
}
