//! Gateway lifecycle: graceful shutdown, TLS termination, secrets kept out of logs and
//! responses, and the `sluice` binary's `check` and `serve` commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use tokio::time::Instant;

const STREAM_REQ: &str = r#"{"model":"up/gpt-x","stream":true,"messages":[]}"#;

fn paced(n: usize, gap_ms: u64) -> Reply {
    let mut steps = Vec::new();
    for i in 0..n {
        steps.push(chat_chunk(&format!("w{i}")));
        steps.push(Step::Wait(Duration::from_millis(gap_ms)));
    }
    steps.push(event("[DONE]"));
    Reply::Sse(steps)
}

#[tokio::test]
async fn shutdown_drains_a_live_stream_and_refuses_new_connections() {
    let up = Upstream::start(paced(8, 100)).await;
    let gw = gateway(&config(&up.base_url(), "")).await;
    let addr = gw.data_addr;
    let admin = gw.admin_addr;
    assert_eq!(send(admin, get("/readyz", None)).await.status, 200);

    let start = Instant::now();
    let resp = send_raw(addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());

    let shutdown = tokio::spawn(gw.shutdown());
    eventually(Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(()).ok_or("still accepting after shutdown began")
    })
    .await;
    assert!(!shutdown.is_finished(), "shutdown must wait for the live stream");
    let ready = send(admin, get("/readyz", None)).await;
    assert_eq!((ready.status.as_u16(), ready.text().as_str()), (503, "draining"), "the admin plane reports draining");

    let rest = frames(&mut body, start).await;
    assert_eq!(rest.len(), 8, "the stream finished completely: {rest:?}");
    assert_eq!(rest.last().unwrap().1, "data: [DONE]\n\n");
    tokio::time::timeout(Duration::from_secs(3), shutdown)
        .await
        .expect("shutdown did not finish after the stream")
        .unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let up = Upstream::start(paced(100, 100)).await;
    let gw = gateway(&must_replace(&config(&up.base_url(), ""), "shutdown_grace: 5s", "shutdown_grace: 300ms")).await;
    let resp = send_raw(gw.data_addr, post("/v1/chat/completions", Some(KEY), STREAM_REQ)).await;
    let mut body = resp.into_body();
    let _ = body.frame().await;
    let start = Instant::now();
    let reader = tokio::spawn(async move { frames(&mut body, Instant::now()).await });
    gw.shutdown().await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?} with a 300ms grace period");
    // The stream cut at the end of the grace period says why, as its last event.
    let rest = reader.await.unwrap();
    let (_, last) = rest.last().unwrap();
    let last = std::str::from_utf8(last).unwrap();
    let event: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap().trim()).unwrap();
    assert_eq!(event["error"]["code"], "shutting_down", "{rest:?}");
    assert!(rest.len() < 100, "the stream did not run to its end: {} frames", rest.len());
}

#[tokio::test]
async fn tls_is_terminated_with_alpn() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("tls");
    let (cert, key, der) = tls_material(dir.path());
    let up = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let yaml = must_replace(
        &config(&up.base_url(), ""),
        "listen: {data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}",
        &format!(
            "listen: {{data: \"127.0.0.1:0\", admin: \"127.0.0.1:0\", tls: {{cert: {}, key: {}}}}}",
            cert.display(),
            key.display()
        ),
    );
    let gw = gateway(&yaml).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    for (alpn, version) in [(b"http/1.1".to_vec(), http::Version::HTTP_11), (b"h2".to_vec(), http::Version::HTTP_2)] {
        let mut client = rustls::ClientConfig::builder().with_root_certificates(roots.clone()).with_no_client_auth();
        client.alpn_protocols = vec![alpn];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = http::Request::post(format!("https://localhost:{}/v1/chat/completions", gw.data_addr.port()))
            .header("authorization", format!("Bearer {KEY}"))
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::from(r#"{"model":"fast"}"#)))
            .unwrap();
        let resp = if version == http::Version::HTTP_2 {
            let (mut s, c) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(c);
            s.send_request(req).await.unwrap()
        } else {
            let (mut s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(c);
            s.send_request(req).await.unwrap()
        };
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, CHAT_RESPONSE.as_bytes());
    }
    // Cleartext to a TLS listener gets nothing useful.
    let a = tokio::time::timeout(Duration::from_secs(3), async {
        let stream = tokio::net::TcpStream::connect(gw.data_addr).await.unwrap();
        let (mut s, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(c);
        s.send_request(get("/healthz", None)).await
    })
    .await
    .unwrap();
    assert!(a.is_err(), "cleartext request answered on a TLS listener");
    gw.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn provider_and_gateway_keys_never_reach_logs_or_responses() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let broken = Upstream::start(Reply::Sse(vec![chat_chunk("a"), Step::Break])).await;
    let ok = Upstream::start(json_reply(CHAT_RESPONSE)).await;
    let (_held, dead) = refusing_addr();
    let extra = format!(
        "  ok:\n    kind: openai\n    base_url: {}\n    api_key: {PROVIDER_KEY}\n  dead:\n    kind: openai\n    base_url: http://{dead}/v1\n    api_key: {PROVIDER_KEY}\n    headers: {{x-secret-header: {PROVIDER_KEY}}}\n",
        ok.base_url()
    );
    let yaml =
        must_replace(&config(&broken.base_url(), "log: {access_log: true}"), "aliases:", &format!("{extra}aliases:"));
    let gw = gateway(&yaml).await;

    let mut answers = Vec::new();
    for (model, stream) in [("ok/m", false), ("dead/m", false), ("up/m", true), ("nope", false)] {
        let body = format!(r#"{{"model":"{model}","stream":{stream}}}"#);
        answers.push(send(gw.data_addr, post("/v1/chat/completions", Some(KEY), &body)).await);
    }
    answers.push(send(gw.data_addr, post("/v1/chat/completions", Some("sk-wrong-key"), "{}")).await);
    gw.shutdown().await;

    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[1].status, 502);
    assert_eq!(
        ok.last().headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str(),
        "the key did go upstream"
    );
    for a in &answers {
        let all = format!("{:?} {}", a.headers, a.text());
        assert!(!all.contains(PROVIDER_KEY) && !all.contains("SECRET"), "provider key in a response: {all}");
        assert!(!all.contains(KEY), "gateway key in a response: {all}");
    }
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request failed"), "the failures were logged: {logs}");
    assert!(logs.contains("client=\"app\""), "the access log names the client: {logs}");
    assert!(!logs.contains(PROVIDER_KEY) && !logs.contains("SECRET"), "provider key in the logs:\n{logs}");
    assert!(!logs.contains(KEY), "gateway key in the logs:\n{logs}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_json_access_log_holds_the_request_id_as_sent() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt().json().with_writer(capture.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let gw = gateway(&config("http://127.0.0.1:9/v1", "log: {access_log: true}")).await;
    let answer = send(gw.data_addr, chat("mock/m", &[("x-request-id", "req-42")], "")).await;
    assert_eq!(answer.status, 200);
    gw.shutdown().await;
    let logs = capture.text();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("no access log line: {logs}"));
    assert_eq!(line["fields"]["request_id"], "req-42", "{line}");
    assert_eq!(line["fields"]["client"], "app", "{line}");
}

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn check_accepts_the_example_config_and_locates_errors() {
    let out = sluice().args(["check", "--config", "config/sluice.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    // Every model the example can reach has a price: no warning.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = temp_dir("check");
    // A model without a price is still fine, with a warning naming it.
    let unpriced = dir.path().join("unpriced.yaml");
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    std::fs::write(
        &unpriced,
        must_replace(&text, "    mock-1: {input: 0.50, output: 1.50}\n", "    mock-9: {input: 1, output: 1}\n"),
    )
    .unwrap();
    let out = sluice().args(["check", "--config"]).arg(&unpriced).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("warning").count(), 1, "{stderr}");
    assert!(stderr.contains("no price for mock/mock-1: its requests count tokens and no cost"), "{stderr}");

    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let text = must_replace(&text, "  demo: mock/mock-1", "  demo: nowhere/mock-1");
    let text = must_replace(
        &text,
        "    base_url: https://api.openai.com/v1",
        "    base_url: https://api.openai.com/v1\n    base_url_typo: x",
    );
    std::fs::write(&bad, &text).unwrap();
    let out =
        sluice().args(["check", "--config"]).arg(&bad).env("OPENAI_API_KEY", "sk-env-SECRET-xyz").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("base_url_typo")).unwrap() + 1;
    assert!(
        stderr.starts_with(&format!("{}:{line}:5: providers.openai.base_url_typo: unknown field", bad.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-env-SECRET-xyz"));

    let text = must_replace(&text, "    base_url_typo: x\n", "");
    std::fs::write(&bad, &text).unwrap();
    let out = sluice().args(["check", "--config"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("nowhere/mock-1")).unwrap() + 1;
    assert!(
        stderr.starts_with(&format!("{}:{line}:9: aliases.demo: unknown provider `nowhere`", bad.display())),
        "{stderr}"
    );
}

#[test]
fn serve_exits_cleanly_on_sigterm() {
    let dir = temp_dir("serve");
    let cfg = example_config_in(dir.path());
    let mut cmd = sluice();
    cmd.args(["serve", "--config"]).arg(&cfg).env_remove("RUST_LOG");
    let (mut child, _, _) = spawn_serving(cmd, &dir.path().join("log"));
    let ready = dir.path().join("log.ready.json");
    assert!(ready.exists(), "spawn_serving read the ready file there");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = eventually_blocking(Duration::from_secs(10), || {
        child.try_wait().unwrap().map(|s| s.code()).ok_or("sluice serve did not exit on SIGTERM")
    });
    assert_eq!(code, Some(0));
    assert!(!ready.exists(), "a clean exit removes the ready file");
}
