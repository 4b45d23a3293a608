//! Test harness: scripted mock upstreams on ephemeral ports, a gateway started
//! in-process, and a small HTTP client that can read a response frame by frame.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod http1;
pub mod redis;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

pub use sluice::server::Running;

pub const KEY: &str = "sk-gw-test-key";
pub const PROVIDER_KEY: &str = "sk-provider-SECRET-0123456789";

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One scripted SSE step.
#[derive(Debug, Clone)]
pub enum Step {
    Send(String),
    Wait(Duration),
    /// Fail the body: the connection is aborted mid-response.
    Break,
    /// Send this for ever, as fast as the reader takes it.
    Forever(String),
}

/// How an upstream answers.
#[derive(Clone)]
pub enum Reply {
    Json {
        status: u16,
        body: String,
        delay: Duration,
    },
    Sse(Vec<Step>),
    /// Any status, headers and body.
    Raw {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Decided per request.
    PerRequest(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>),
}

/// A scripted upstream server on 127.0.0.1:0 that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Set when a streamed response body was dropped before it finished.
    pub stream_dropped: Arc<AtomicBool>,
    pub calls: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(reply: Reply) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stream_dropped = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, d, c, n) = (requests.clone(), stream_dropped.clone(), calls.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                n.fetch_add(1, Ordering::SeqCst);
                let (r, d, c, reply) = (r.clone(), d.clone(), c.clone(), reply.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, d, c, reply) = (r.clone(), d.clone(), c.clone(), reply.clone());
                        async move {
                            c.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let recorded = Recorded {
                                method: parts.method.to_string(),
                                path_and_query: parts.uri.path_and_query().unwrap().to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let reply = match reply {
                                Reply::PerRequest(decide) => decide(&recorded),
                                other => other,
                            };
                            r.lock().unwrap().push(recorded);
                            Ok::<_, Infallible>(answer(reply, d).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, requests, stream_dropped, calls, connections, _task: task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn last(&self) -> Recorded {
        self.requests.lock().unwrap().last().cloned().expect("upstream saw no request")
    }
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

async fn answer(reply: Reply, dropped: Arc<AtomicBool>) -> Response<TestBody> {
    match reply {
        Reply::Json { status, body, delay } => {
            tokio::time::sleep(delay).await;
            let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync());
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            resp
        }
        Reply::Sse(steps) => {
            let body = Scripted { steps, at: 0, sleep: None, dropped, finished: false };
            let mut resp = Response::new(body.boxed_unsync());
            resp.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            resp
        }
        Reply::Raw { status, headers, body } => {
            let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync());
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                resp.headers_mut().insert(name, value.parse().unwrap());
            }
            resp
        }
        Reply::PerRequest(_) => panic!("a per-request reply must decide on a concrete one"),
    }
}

/// The usage an [`openai_stream`] reports.
pub const STREAM_USAGE: (u64, u64) = (7, 3);

/// A chat stream the way OpenAI sends it: a role chunk, `words` content chunks, a finish
/// chunk, then — only when the request asked for usage — `"usage":null` on every chunk and a
/// last chunk with `"choices":[]` and the usage ([`STREAM_USAGE`]), then `[DONE]`.
pub fn openai_stream(request: &Recorded, words: &[&str]) -> Vec<Step> {
    let usage = request.json()["stream_options"]["include_usage"].as_bool() == Some(true);
    let tail = if usage { r#","usage":null}"# } else { "}" };
    let chunk = |choices: &str| {
        event(&format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{choices}]{tail}"#
        ))
    };
    let mut steps = vec![chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#)];
    for w in words {
        steps.push(chunk(&format!(r#"{{"index":0,"delta":{{"content":"{w}"}},"finish_reason":null}}"#)));
    }
    steps.push(chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#));
    if usage {
        let (p, c) = STREAM_USAGE;
        steps.push(event(&format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#,
            p + c
        )));
    }
    steps.push(Step::Send("data: [DONE]\n\n".to_string()));
    steps
}

/// A body that plays SSE steps and notes whether it was dropped before the end.
struct Scripted {
    steps: Vec<Step>,
    at: usize,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    dropped: Arc<AtomicBool>,
    finished: bool,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if !self.finished {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }
}

impl HttpBody for Scripted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let Some(step) = self.steps.get(self.at).cloned() else {
                self.finished = true;
                return Poll::Ready(None);
            };
            self.at += 1;
            match step {
                Step::Send(s) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(s))))),
                Step::Wait(d) => self.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Step::Break => {
                    self.finished = true;
                    return Poll::Ready(Some(Err("scripted break".into())));
                }
                Step::Forever(s) => {
                    self.at -= 1;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(s)))));
                }
            }
        }
    }
}

use std::future::Future as _;

/// An SSE `data:` event.
pub fn event(json: &str) -> Step {
    Step::Send(format!("data: {json}\n\n"))
}

pub fn chat_chunk(content: &str) -> Step {
    event(&format!(
        r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
    ))
}

pub const CHAT_RESPONSE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

pub fn json_reply(body: &str) -> Reply {
    Reply::Json { status: 200, body: body.to_string(), delay: Duration::ZERO }
}

/// A gateway config with one client (`KEY`) and an `up` provider at `base_url`.
pub fn config(base_url: &str, extra: &str) -> String {
    format!(
        r#"
listen: {{data: "127.0.0.1:0", admin: "127.0.0.1:0"}}
limits: {{max_request_body: 2KiB, header_read_timeout: 300ms, body_read_timeout: 300ms, shutdown_grace: 5s}}
clients:
  app: {{key: {KEY}, attributes: {{team: t}}}}
providers:
  up:
    kind: openai
    base_url: {base_url}
    api_key: {PROVIDER_KEY}
    timeouts: {{connect: 1s, first_byte: 1s, idle: 500ms}}
    models: [gpt-x]
  mock:
    kind: mock
    mock: {{chunks: 3}}
aliases:
  fast: up/gpt-x
{extra}
"#
    )
}

/// `metrics:` with `thumbs_up` (boolean, higher is better), an AI config `bot` with two
/// versions on the in-process mock (models `m1`, `m2`), and a routing flag `bot` serving
/// them as `control` and `candidate`; `flag` is the rest of the flag (its targeting, an
/// experiment), indented under it. For [`config`]'s `extra`.
pub fn two_arm_bot(metrics: &str, flag: &str) -> String {
    format!(
        r#"
metrics:
  thumbs_up: {{type: boolean, direction: higher}}
{metrics}ai_configs:
  bot:
    versions:
      - {{version: 1, provider: mock, model: m1}}
      - {{version: 2, provider: mock, model: m2}}
flags:
  bot:
    variations:
      - {{name: control, ai_config: bot, version: 1}}
      - {{name: candidate, ai_config: bot, version: 2}}
{flag}"#
    )
}

/// The claims of a token of flag `bot` (AI config `bot`), for tests that sign their own
/// with a configured `feedback.key`.
pub fn bot_claims(variation: &str, version: u32, iteration: u32, issued_ms: u64, nonce: u8) -> sluice::token::Claims {
    sluice::token::Claims {
        issued_ms,
        nonce: [nonce; 8],
        random_context: false,
        iteration,
        version,
        context: [0; 8],
        flag: "bot".into(),
        variation: variation.into(),
        ai_config: "bot".into(),
    }
}

/// The wall clock in milliseconds since the Unix epoch (what tokens stamp).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A fallthrough split 50/50 between `control` and `candidate`, for [`two_arm_bot`].
pub const HALF_AND_HALF: &str = "    fallthrough:\n      rollout:\n        variations:\n          - {variation: control, percent: 50}\n          - {variation: candidate, percent: 50}\n";

/// Start a gateway from config text.
///
/// A gateway restarted on the state directory of one just shut down may find its lock
/// still held for a moment: a child process that another test thread is spawning holds a
/// copy of every descriptor, the lock's included, until it execs. So "in use" is retried
/// until a deadline.
pub async fn gateway(yaml: &str) -> Running {
    eventually(Duration::from_secs(10), async || {
        let loaded = sluice::config::parse(yaml, "test.yaml", &|_| None).unwrap();
        let prepared = sluice::server::prepare(loaded).unwrap();
        match sluice::server::start(prepared).await {
            Ok(running) => Ok(running),
            Err(e) if e.to_string().contains("in use by another sluice") => {
                Err(format!("the gateway did not start: {e}"))
            }
            Err(e) => panic!("the gateway did not start: {e}"),
        }
    })
    .await
}

/// Samples of `/metrics`: (name, labels) → value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap();
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.insert((name, labels), value.parse().unwrap());
    }
    out
}

/// The sum of `name` over the samples whose labels include all of `with`.
pub fn sum(samples: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

pub async fn scrape(gw: &Running) -> String {
    send(gw.admin_addr, get("/metrics", None)).await.text()
}

/// Say, where `cargo test` shows it, that test `name` is skipped and why. `cargo test`
/// keeps a passing test's `print!`/`eprint!` output to itself; this writes to the
/// process's standard error directly, so the line stays visible in the run's output.
pub fn skipped(name: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED {name}: {why}");
}

/// An optional prerequisite of some tests: without it they print `SKIPPED …` and pass —
/// unless its `require` variable is `1` (as in CI), which makes it a failure.
pub struct Prerequisite {
    pub what: &'static str,
    /// The variable that makes it required, if any.
    pub require: Option<&'static str>,
    /// The tests that skip without it.
    pub tests: &'static [&'static str],
    /// `Some(why and how to get it)` when it is missing here.
    pub missing: fn() -> Option<String>,
}

impl Prerequisite {
    pub fn required(&self) -> bool {
        self.require.is_some_and(|var| std::env::var(var).as_deref() == Ok("1"))
    }
}

fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

pub const PYTHON_SDK: Prerequisite = Prerequisite {
    what: "python3 with the `openai` package",
    require: Some("SLUICE_REQUIRE_SDK"),
    tests: &[
        "openai_sdk::the_openai_python_sdk_works_through_sluice",
        "provider_sdk::openai_anthropic_and_azure_variations_look_the_same_to_the_openai_sdk",
        "experiments_sdk::the_openai_python_sdk_runs_an_experiment_to_a_ship",
    ],
    missing: || {
        (!runs("python3", &["-c", "import openai"]))
            .then(|| "`python3 -c 'import openai'` fails (pip install openai)".to_string())
    },
};

pub const PROMTOOL: Prerequisite = Prerequisite {
    what: "promtool",
    require: Some("SLUICE_REQUIRE_PROMTOOL"),
    tests: &[
        "metrics::metrics_pass_promtool",
        "deploy::alert_rules_pass_promtool",
        "deploy::alert_rules_pass_their_unit_tests",
        "deploy::dashboard_queries_parse_as_promql",
    ],
    missing: || {
        (!runs("promtool", &["--version"]))
            .then(|| "promtool is not installed (`apt-get install prometheus`)".to_string())
    },
};

pub const CONFORMANCE_DATA: Prerequisite = Prerequisite {
    what: "LaunchDarkly's evaluation cases (SLUICE_CONFORMANCE_DIR)",
    require: Some("SLUICE_REQUIRE_CONFORMANCE"),
    tests: &["conformance::launchdarkly_server_side_evaluations"],
    missing: || {
        std::env::var_os("SLUICE_CONFORMANCE_DIR").is_none().then(|| {
            "SLUICE_CONFORMANCE_DIR is not set (point it at the shared conformance `launchdarkly` folder, as \
             .ci/run does)"
                .to_string()
        })
    },
};

pub const PRLIMIT: Prerequisite = Prerequisite {
    what: "prlimit (util-linux)",
    require: None,
    tests: &[
        "connections::silent_connections_past_the_descriptor_limit_leave_the_admin_plane_answering",
        "connections::accept_errors_back_off_instead_of_spinning",
    ],
    missing: || (!runs("prlimit", &["--version"])).then(|| "`prlimit` (util-linux) is not installed".to_string()),
};

/// Whether running as root: a tmpfs can be mounted (the full-disk test needs it), and a
/// read-only directory is writable anyway (the read-only test cannot run).
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub const ROOT: Prerequisite = Prerequisite {
    what: "running as root",
    require: None,
    tests: &["state_faults::a_full_disk_refuses_the_change_and_leaves_the_log_whole"],
    missing: || (!is_root()).then(|| "mounting a tmpfs needs root".to_string()),
};

pub const NOT_ROOT: Prerequisite = Prerequisite {
    what: "running as a normal user",
    require: None,
    tests: &["state_faults::a_read_only_state_directory_refuses_the_change"],
    missing: || is_root().then(|| "root writes to a read-only directory anyway".to_string()),
};

pub const OPENFEATURE_PY: Prerequisite = Prerequisite {
    what: "python3 with `openfeature-sdk`, `openfeature-provider-ofrep`, `jsonschema` and `pyyaml`",
    require: Some("SLUICE_REQUIRE_SDK"),
    tests: &[
        "ofrep::the_openfeature_python_sdk_evaluates_sluices_flags",
        "ofrep::every_answer_matches_the_protocols_openapi_document",
    ],
    missing: || {
        (!runs("python3", &["-c", "import openfeature.contrib.provider.ofrep, jsonschema, yaml"])).then(|| {
            "`python3 -c 'import openfeature.contrib.provider.ofrep, jsonschema, yaml'` fails (pip install \
             openfeature-sdk openfeature-provider-ofrep jsonschema pyyaml)"
                .to_string()
        })
    },
};

pub const OPENFEATURE_NODE: Prerequisite = Prerequisite {
    what: "Node.js with the OpenFeature SDKs (tests/ofrep)",
    require: Some("SLUICE_REQUIRE_SDK"),
    tests: &["ofrep::the_openfeature_node_sdks_evaluate_sluices_flags"],
    missing: || {
        if !runs("node", &["--version"]) {
            return Some("`node` is not installed".to_string());
        }
        (!std::path::Path::new("tests/ofrep/node_modules/@openfeature/ofrep-web-provider/package.json").exists())
            .then(|| "the OpenFeature Node SDKs are not installed (`npm ci --prefix tests/ofrep`)".to_string())
    },
};

/// The Chromium the browser tests drive: `SLUICE_CHROMIUM`, else Debian's.
pub fn chromium() -> String {
    std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

pub const BROWSER: Prerequisite = Prerequisite {
    what: "headless Chromium, Node.js and playwright-core (tests/console)",
    require: Some("SLUICE_REQUIRE_BROWSER"),
    tests: &["console::the_console_in_a_real_browser"],
    missing: || {
        if !runs(&chromium(), &["--version"]) {
            return Some(format!("{} is not there (`apt-get install chromium`, or set SLUICE_CHROMIUM)", chromium()));
        }
        if !runs("node", &["--version"]) {
            return Some("`node` is not installed".to_string());
        }
        (!std::path::Path::new("tests/console/node_modules/playwright-core/package.json").exists())
            .then(|| "playwright-core is not installed (`npm ci --prefix tests/console`)".to_string())
    },
};

/// Every optional prerequisite, for `tests/prerequisites.rs`'s summary.
pub const PREREQUISITES: &[&Prerequisite] = &[
    &PYTHON_SDK,
    &OPENFEATURE_PY,
    &OPENFEATURE_NODE,
    &PROMTOOL,
    &redis::REDIS,
    &CONFORMANCE_DATA,
    &BROWSER,
    &PRLIMIT,
    &ROOT,
    &NOT_ROOT,
];

/// Whether `prerequisite` is here for test `name`. When it is missing the test is
/// [`skipped`] (the caller returns) — or this fails, when the prerequisite is required.
pub fn have(prerequisite: &Prerequisite, name: &str) -> bool {
    let Some(why) = (prerequisite.missing)() else { return true };
    assert!(
        !prerequisite.required(),
        "{}=1 but {} is missing: {why}",
        prerequisite.require.unwrap_or_default(),
        prerequisite.what
    );
    skipped(name, &why);
    false
}

/// Whether the OpenAI Python SDK can run here. When it cannot, the test `name` is skipped
/// with a visible line — or fails, when `SLUICE_REQUIRE_SDK=1` (as in CI).
pub fn python_sdk_or_skip(name: &str) -> bool {
    have(&PYTHON_SDK, name)
}

/// A `sluice mock-provider` with `settings` on an ephemeral port, stopped with the test.
pub async fn mock_provider(settings: sluice_mock::MockSettings) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sluice_mock::serve(listener, Arc::new(settings), std::future::pending()));
    addr
}

/// A response read completely.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The OpenAI error code of an error answer.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// Send a request over a fresh HTTP/1.1 connection and return the response head; the
/// body is left to the caller.
pub async fn send_raw(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

pub fn post(path: &str, key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::post(path).header("host", "localhost").header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

pub fn get(path: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "localhost");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let resp = tokio::time::timeout(Duration::from_secs(10), send_raw(addr, req)).await.expect("no response head");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body never ended")
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// Read a streaming body frame by frame, with each frame's arrival time since `start`.
pub async fn frames(body: &mut Incoming, start: tokio::time::Instant) -> Vec<(Duration, Bytes)> {
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("stream hung") {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    out.push((start.elapsed(), data));
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// One kept-alive HTTP/1.1 connection, for many requests in a row.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Conn { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        Answer { status: parts.status, headers: parts.headers, body }
    }
}

/// A chat request for `model` with extra headers.
pub fn chat(model: &str, headers: &[(&str, &str)], extra: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
    let mut req = post("/v1/chat/completions", Some(KEY), &body);
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    req
}

impl Answer {
    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// A `MakeWriter` that keeps every log line in memory.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A self-signed certificate for `localhost` written to `dir`: (cert PEM, key PEM, cert DER).
pub fn tls_material(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().clone())
}

/// A fresh directory under the system's temporary directory, named after `name`, removed
/// when the returned value is dropped — when the test panics too.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("sluice-test-{name}-")).tempdir().unwrap()
}

/// `text` with every `from` replaced by `to`. Panics, naming `from`, when `text` does not
/// contain it: an edit of a test's config that silently did nothing would let the test
/// check something else than it says.
#[track_caller]
pub fn must_replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "must_replace: {from:?} is not in the text to edit:\n{}", excerpt(text));
    text.replace(from, to)
}

/// [`must_replace`] for the first `count` occurrences of `from` only.
#[track_caller]
pub fn must_replacen(text: &str, from: &str, to: &str, count: usize) -> String {
    assert!(text.contains(from), "must_replacen: {from:?} is not in the text to edit:\n{}", excerpt(text));
    text.replacen(from, to, count)
}

/// The start of `text`, for a failure message.
fn excerpt(text: &str) -> &str {
    match text.char_indices().nth(4000) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// How often [`eventually`] and [`eventually_blocking`] look again.
const POLL: Duration = Duration::from_millis(20);

/// What a polled condition returns: ready (with a value), or not yet (and what it saw,
/// for the failure message).
pub trait Polled {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Polled for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".into())
        }
    }
}

impl<T> Polled for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "the condition returned None".into())
    }
}

impl<T, E: std::fmt::Display> Polled for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Poll `condition` until it is ready (`true`, `Some(v)` or `Ok(v)`) and return its value.
/// `timeout` only stops a test that would otherwise hang — it is never what a test waits
/// for, nor a measure of speed; past it, this panics with the caller's location and what
/// the condition last saw (`Err(e)` shows `e`).
#[track_caller]
pub fn eventually<P: Polled>(
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> P,
) -> impl std::future::Future<Output = P::Value> {
    let at = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match condition().await.ready() {
                Ok(value) => return value,
                Err(last) if tokio::time::Instant::now() >= deadline => {
                    panic!("{at}: still not so after {timeout:?}: {last}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// [`eventually`] for a thread that may block: polls with `std::thread::sleep`.
#[track_caller]
pub fn eventually_blocking<P: Polled>(timeout: Duration, mut condition: impl FnMut() -> P) -> P::Value {
    let at = std::panic::Location::caller();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match condition().ready() {
            Ok(value) => return value,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("{at}: still not so after {timeout:?}: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// The addresses a `sluice serve --ready-file PATH` wrote there once both listeners were
/// bound: `{"data": ADDR, "admin": ADDR, "pid": N}`. Waits (bounded) for the file; panics,
/// with `log()`, when the child exits first or the file names another process.
pub fn read_ready_file(
    child: &mut std::process::Child,
    ready: &std::path::Path,
    log: impl Fn() -> String,
) -> (SocketAddr, SocketAddr) {
    let ready: serde_json::Value = eventually_blocking(Duration::from_secs(30), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sluice serve exited ({status}) before it was ready:\n{}", log());
        }
        // Written whole (a temporary file renamed), so a file that exists parses.
        let text = std::fs::read_to_string(ready).map_err(|e| format!("no ready file yet ({e}); log:\n{}", log()))?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| format!("a torn ready file ({e}): {text}"))
    });
    assert_eq!(ready["pid"], child.id(), "the ready file names the child: {ready}");
    let addr = |key: &str| -> SocketAddr {
        ready[key].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no `{key}` address: {ready}"))
    };
    (addr("data"), addr("admin"))
}

/// Spawn `cmd` — a `sluice serve` whose config listens on port 0 — with its log in `log`
/// and `--ready-file` beside it, and read the addresses it bound from that file: no port
/// is picked before the gateway binds it, so none can be taken meanwhile. Returns the
/// child with its data and admin addresses.
pub fn spawn_serving(
    mut cmd: std::process::Command,
    log: &std::path::Path,
) -> (std::process::Child, SocketAddr, SocketAddr) {
    let file = std::fs::File::create(log).unwrap();
    let mut ready = log.as_os_str().to_owned();
    ready.push(".ready.json");
    let ready = std::path::PathBuf::from(ready);
    // One left by an earlier child (killed, so it could not remove it) is not this one's.
    match std::fs::remove_file(&ready) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("cannot remove {}: {e}", ready.display()),
        _ => {}
    }
    let mut child =
        cmd.arg("--ready-file").arg(&ready).stderr(file).stdout(std::process::Stdio::null()).spawn().unwrap();
    let (data, admin) =
        read_ready_file(&mut child, &ready, || strip_ansi(&std::fs::read_to_string(log).unwrap_or_default()));
    (child, data, admin)
}

/// `text` without ANSI colour sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A loopback address that refuses connections: a socket is bound there but never
/// listens, so no one else can take the port while the returned socket lives.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// `config/sluice.yaml` for a `sluice serve` child: both listeners on port 0, the state in
/// `dir/state`. Written to `dir/sluice.yaml`, whose path is returned.
pub fn example_config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("sluice.yaml");
    let text = std::fs::read_to_string("config/sluice.yaml").unwrap();
    let text = must_replace(&text, "127.0.0.1:8080", "127.0.0.1:0");
    let text = must_replace(&text, "127.0.0.1:8081", "127.0.0.1:0");
    let text = must_replace(&text, ".sluice-state", &dir.join("state").display().to_string());
    std::fs::write(&cfg, text).unwrap();
    cfg
}
