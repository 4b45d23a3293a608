//! Connection limits: connections that say nothing are closed, a stalled reader is cut,
//! one header-size limit for both HTTP versions, and the listeners keep answering when
//! descriptors run out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt as _;

/// The outer bound of every wait here: generous, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// Read until the peer closes (EOF or reset); panics if it is still open after [`PATIENCE`].
async fn closed_by_peer(mut io: impl tokio::io::AsyncRead + Unpin, what: &str) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {PATIENCE:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    // Stall checks (every client_write_timeout / 4) more often than header_read_timeout
    // must not keep restarting the idle timer.
    let yaml = must_replace(
        &config("http://127.0.0.1:9/v1", ""),
        "shutdown_grace: 5s",
        "shutdown_grace: 5s, client_write_timeout: 200ms",
    );
    let gw = gateway(&yaml).await;
    let silent = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    closed_by_peer(silent, "a silent data-plane connection").await;
    let silent = tokio::net::TcpStream::connect(gw.admin_addr).await.unwrap();
    closed_by_peer(silent, "a silent admin connection").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tls_connection_silent_after_its_handshake_is_closed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("tls-silent");
    let (cert, key, der) = tls_material(dir.path());
    let yaml = must_replace(
        &config("http://127.0.0.1:9/v1", ""),
        "listen: {data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}",
        &format!(
            "listen: {{data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\", tls: {{cert: {}, key: {}}}}}",
            cert.display(),
            key.display()
        ),
    );
    let yaml = must_replace(&yaml, "shutdown_grace: 5s", "shutdown_grace: 5s, client_write_timeout: 200ms");
    let gw = gateway(&yaml).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("the handshake completes");
    closed_by_peer(tls, "a TLS connection silent after its handshake").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http2_connection_without_open_streams_is_closed() {
    let gw = gateway(&config("http://127.0.0.1:9/v1", "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(get("/v1/models", Some(KEY))).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    // The client keeps its connection open and answers the server's PINGs.
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is still open after {PATIENCE:?}");
    drop(sender);
    gw.shutdown().await;
}

/// `GET /v1/models` with a `x-filler` header of `size` bytes.
fn with_header(size: usize) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = get("/v1/models", Some(KEY));
    req.headers_mut().insert("x-filler", "a".repeat(size).parse().unwrap());
    req
}

async fn status_over_h2(addr: std::net::SocketAddr, size: usize) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = with_header(size);
    *req.uri_mut() = format!("http://{addr}/v1/models").parse().unwrap();
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req)).await.expect("no answer over HTTP/2");
    resp.unwrap().status().as_u16()
}

#[tokio::test]
async fn both_http_versions_take_the_same_header_size() {
    let gw = gateway(&config("http://127.0.0.1:9/v1", "")).await;
    // The default limit is 64 KiB: 40 KB passes on both versions, 70 KB is refused on both.
    assert_eq!(send(gw.data_addr, with_header(40_000)).await.status, 200, "HTTP/1.1, 40 KB");
    assert_eq!(status_over_h2(gw.data_addr, 40_000).await, 200, "HTTP/2, 40 KB");
    assert_eq!(send(gw.data_addr, with_header(70_000)).await.status, 431, "HTTP/1.1, 70 KB");
    assert_eq!(status_over_h2(gw.data_addr, 70_000).await, 431, "HTTP/2, 70 KB");
    gw.shutdown().await;

    let gw = gateway(&must_replace(
        &config("http://127.0.0.1:9/v1", ""),
        "shutdown_grace: 5s",
        "shutdown_grace: 5s, max_header_bytes: 16KiB",
    ))
    .await;
    assert_eq!(send(gw.data_addr, with_header(20_000)).await.status, 431, "HTTP/1.1, 20 KB over 16 KiB");
    assert_eq!(status_over_h2(gw.data_addr, 20_000).await, 431, "HTTP/2, 20 KB over 16 KiB");
    gw.shutdown().await;
}

/// Wait until `up` has seen the gateway drop its stream.
async fn upstream_released(up: &Upstream) {
    eventually(PATIENCE, async || {
        up.stream_dropped
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
            .ok_or("the upstream stream is still held")
    })
    .await;
}

/// An upstream whose stream never ends (16 KiB events), behind a gateway that drops a
/// client taking nothing for 300 ms.
async fn endless_stream_gateway() -> (Upstream, Running) {
    let chunk = match chat_chunk(&"a".repeat(16 << 10)) {
        Step::Send(s) => s,
        _ => unreachable!(),
    };
    let up = Upstream::start(Reply::Sse(vec![Step::Forever(chunk)])).await;
    let yaml = must_replace(
        &config(&up.base_url(), ""),
        "shutdown_grace: 5s",
        "shutdown_grace: 5s, client_write_timeout: 300ms",
    );
    let gw = gateway(&yaml).await;
    (up, gw)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_its_upstream_released() {
    let (up, gw) = endless_stream_gateway().await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(gw.data_addr).await.unwrap();
    let body = r#"{"model":"up/gpt-x","stream":true,"messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, head.as_bytes()).await.unwrap();
    // The client reads nothing from here on; the upstream keeps sending.
    upstream_released(&up).await;
    assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(client);
    gw.shutdown().await;
}

/// A `sluice serve` child process and the addresses it bound.
struct Child {
    child: std::process::Child,
    data: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Child {
    /// `sluice serve --config <yaml>`, run by `wrapper` (e.g. `prlimit …`) when given.
    fn serve(name: &str, yaml: &str, wrapper: &[&str]) -> Child {
        use std::io::BufRead as _;
        let dir = temp_dir(name);
        let cfg = dir.path().join("sluice.yaml");
        let ready = dir.path().join("ready.json");
        std::fs::write(&cfg, yaml).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_sluice"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_sluice")),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Read the log to its end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[sluice] {line}");
            }
        });
        let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        // Killed on drop from here on, whatever happens next.
        let mut started = Child { child, data: unknown, admin: unknown, _dir: dir };
        let (data, admin) =
            read_ready_file(&mut started.child, &ready, || "(the log is above, lines marked [sluice])".to_string());
        started.data = data;
        started.admin = admin;
        started
    }

    /// Wait until the gateway has closed every one of `silent`: the CPU time it used
    /// meanwhile, and the wall time.
    async fn all_closed(&self, silent: Vec<tokio::net::TcpStream>) -> (Duration, Duration) {
        let (cpu_before, start) = (self.cpu(), std::time::Instant::now());
        let closing: Vec<_> =
            silent.into_iter().map(|s| tokio::spawn(closed_by_peer(s, "a silent connection"))).collect();
        for c in closing {
            c.await.unwrap();
        }
        (self.cpu() - cpu_before, start.elapsed())
    }

    /// The process's CPU time (user + system) so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 Hz).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn silent_connections_past_the_descriptor_limit_leave_the_admin_plane_answering() {
    if !have(&PRLIMIT, "silent_connections_past_the_descriptor_limit_leave_the_admin_plane_answering") {
        return;
    }
    // This test holds 1,100 sockets of its own.
    sluice::server::raise_nofile_limit();
    // limits.max_connections stays at its default (10,000): the descriptors run out first.
    // A 2 s header_read_timeout: the connections are held long enough for a spinning
    // accept loop to show (it burns a whole core), however fast the machine.
    let yaml =
        must_replace(&config("http://127.0.0.1:9/v1", ""), "header_read_timeout: 300ms", "header_read_timeout: 2s");
    let gw = Child::serve("fd-limit", &yaml, &["prlimit", "--nofile=1024:1024"]);

    let mut silent = Vec::new();
    for _ in 0..1100 {
        silent.push(tokio::net::TcpStream::connect(gw.data).await.unwrap());
    }
    let health = send(gw.admin, get("/healthz", None)).await;
    assert_eq!((health.status.as_u16(), health.text().as_str()), (200, "ok"), "the admin plane answers");
    // Every silent connection is closed by the gateway: past the cap at once, the others
    // once header_read_timeout has passed.
    let (cpu, wall) = gw.all_closed(silent).await;
    eprintln!("1,100 silent connections: sluice used {cpu:?} of CPU in {wall:?}");
    assert!(
        cpu.as_secs_f64() < 0.25 * wall.as_secs_f64(),
        "sluice used {cpu:?} of CPU in {wall:?} holding silent connections"
    );
    // And the data plane serves again.
    assert_eq!(send(gw.data, get("/v1/models", Some(KEY))).await.status, 200);
}

/// A flag `busy` whose template renders six nested sections over `vars.a`: with a list of
/// 200 elements that is 200⁶ iterations, far more than any grace period, were it not for
/// the render budget (which stops it with a 400).
const BUSY_TEMPLATE: &str = r#"
ai_configs:
  busy:
    versions:
      - version: 1
        provider: mock
        model: m
        messages:
          - role: system
            content: "{{#vars.a}}{{#vars.a}}{{#vars.a}}{{#vars.a}}{{#vars.a}}{{#vars.a}}{{/vars.a}}{{/vars.a}}{{/vars.a}}{{/vars.a}}{{/vars.a}}{{/vars.a}}"
flags:
  busy:
    variations:
      - {name: only, ai_config: busy, version: 1}
    fallthrough: {variation: only}
"#;

#[tokio::test]
async fn sigterm_ends_the_process_even_when_a_worker_is_busy() {
    let yaml =
        must_replace(&config("http://127.0.0.1:9/v1", BUSY_TEMPLATE), "shutdown_grace: 5s", "shutdown_grace: 1s");
    let mut gw = Child::serve("busy-worker", &yaml, &[]);
    let list = vec!["1"; 200].join(",");
    let vars = format!(r#"{{"a":[{list}]}}"#);
    let req = chat("busy", &[("x-sluice-variables", vars.as_str())], "");
    let data = gw.data;
    let answer = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(data).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(conn);
        sender.send_request(req).await.ok().map(|r| r.status())
    });
    // Wait until a worker is rendering (the process burns CPU), or the request is answered
    // (rendering has a budget: nothing blocks).
    let cpu = gw.cpu();
    let busy = eventually(PATIENCE, async || {
        if gw.cpu() >= cpu + Duration::from_millis(300) {
            Ok(true)
        } else if answer.is_finished() {
            Ok(false)
        } else {
            Err("the request neither rendered nor was answered")
        }
    })
    .await;
    let pid = gw.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let code = eventually(PATIENCE, async || {
        gw.child
            .try_wait()
            .unwrap()
            .map(|status| status.code())
            .ok_or(format!("sluice still running after SIGTERM (busy: {busy})"))
    })
    .await;
    // Rendering has a budget, so a busy worker may finish its render and drain within the
    // grace (0), or still be busy at the deadline (forced); either way the process ends.
    assert!(
        code == Some(0) || code == Some(sluice::server::FORCED_EXIT_CODE),
        "exit status {code:?} (a worker busy: {busy})"
    );
    answer.abort();
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_a_stream_is_disconnected() {
    let (up, gw) = endless_stream_gateway().await;
    let tcp = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = post("/v1/chat/completions", Some(KEY), r#"{"model":"up/gpt-x","stream":true,"messages":[]}"#);
    *req.uri_mut() = format!("http://{}/v1/chat/completions", gw.data_addr).parse().unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is never read: HTTP/2 flow control stops the gateway's stream, not its socket.
    upstream_released(&up).await;
    drop(resp);
    gw.shutdown().await;
}

#[tokio::test]
async fn accept_errors_back_off_instead_of_spinning() {
    if !have(&PRLIMIT, "accept_errors_back_off_instead_of_spinning") {
        return;
    }
    // So few descriptors that the admin listener runs out before its own cap (64): its
    // accepts fail with EMFILE until the silent connections are closed.
    let yaml =
        must_replace(&config("http://127.0.0.1:9/v1", ""), "header_read_timeout: 300ms", "header_read_timeout: 2s");
    let gw = Child::serve("emfile", &yaml, &["prlimit", "--nofile=48:48"]);
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(tokio::net::TcpStream::connect(gw.admin).await.unwrap());
    }
    let (cpu, wall) = gw.all_closed(silent).await;
    eprintln!("60 silent admin connections at 48 descriptors: sluice used {cpu:?} of CPU in {wall:?}");
    assert!(cpu.as_secs_f64() < 0.25 * wall.as_secs_f64(), "sluice used {cpu:?} of CPU in {wall:?} out of descriptors");
    let health = send(gw.admin, get("/healthz", None)).await;
    assert_eq!(health.status, 200, "the admin plane answers once descriptors are free again");
}

#[tokio::test]
async fn a_kept_alive_connection_serves_requests_in_a_row_then_closes_when_idle() {
    let gw = gateway(&config("http://127.0.0.1:9/v1", "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..3 {
        sender.ready().await.unwrap();
        let resp = sender.send_request(get("/v1/models", Some(KEY))).await.unwrap();
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(ended.is_ok(), "an idle kept-alive connection is still open after {PATIENCE:?}");
    gw.shutdown().await;
}
