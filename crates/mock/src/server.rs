//! The standalone HTTP server: CLI arguments, accept loop and signal handling.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::knobs::{parse_answer, parse_chunks, parse_rate, parse_status};
use super::{render, respond, MockKind, MockRequest, MockSettings};
use crate::body::Body;

/// Largest request body the server reads.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The end of `sluice mock-provider --help`: routes per kind, per-request knobs, scripts.
pub const HELP: &str = "\
Kinds (--kind):
  openai     /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /v1/responses
  anthropic  /v1/messages; x-api-key and anthropic-version required, authorization refused
  azure      /openai/deployments/{deployment}/chat/completions?api-version=...,
             /openai/v1/chat/completions, /openai/v1/responses; api-key required,
             authorization refused

Per-request knobs (header, or query parameter; the header wins):
  x-mock-latency-ms     latency_ms      delay before the response head
  x-mock-error-rate     error_rate      probability of an injected error
  x-mock-error-status   error_status    status of injected errors
  x-mock-chunks         chunks          words of the generated answer
  x-mock-chunk-delay-ms chunk_delay_ms  delay between streamed chunks
  x-mock-break-after    break_after     fail a stream's body after N content chunks
  x-mock-cached-tokens  cached_tokens   prompt tokens reported as read from cache
  x-mock-answer         answer          the answer text instead of mock0 mock1 ...
                                        (percent-decoded; in the query + is a space too;
                                        at most 64 KiB); streamed in pieces that end after
                                        each whitespace run; max_tokens cuts it to that
                                        many words (finish length); chunks is ignored
  x-mock-script         script          a scripted answer, below

Scripts:
  rate_limited      429 with retry-after: 7
  overloaded        Anthropic 529 overloaded_error; OpenAI and Azure 503
  bad_request       400
  mid_stream_error  a stream sends 2 content chunks, then an error event (whole answers: 500)
  truncate          a stream stops after some content, without its final events
                    (whole answers: the JSON cut in half)
  content_filter    Azure 400 content_filter; Anthropic stop_reason refusal;
                    OpenAI finish_reason content_filter
  text_tool_text    an answer of text, a tool call, then text
  incomplete        finish length / max_tokens; Responses API response.incomplete

Judge mode (--judge): chat completions and Anthropic messages answer as an LLM judge
  judged text    after the last `RESPONSE TO EVALUATE:` in the last user message
                 (trimmed), else that whole message (trimmed)
  score          the first [[score:X]] with X a JSON number: X as written (any number,
                 out of range too); else 1.0 if the text contains `good` (ASCII case-
                 insensitive), else 0.0
  answer         {\"reasoning\":\"mock judge: ...\",\"score\":X} as the content, or as the
                 input of the tool tool_choice names (Anthropic: the forced tool of a
                 translated response_format); streamed as one text chunk (tool input: in
                 pieces); completion tokens = words of that JSON; max_tokens, answer and
                 chunks do not apply; the other knobs and scripts do
  [[judge:error]]       the kind's 500
  [[judge:garbage]]     text that is not JSON: I would rate this quite highly.
  [[judge:delay_ms:N]]  wait N ms (at most 60000) before the response head
  GET /mock/judge/requests  (every kind, no credentials) the bodies the chat routes
                 received in judge mode, as a JSON array, oldest first, the last 1000";

/// Command-line arguments of `sluice mock-provider`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// Delay before every response head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Probability (0..=1) of answering with an injected error.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// HTTP status of injected errors (400..=599).
    #[arg(long, default_value_t = 500, value_parser = parse_status)]
    pub error_status: u16,
    /// Words per answer: streamed content chunks and completion tokens.
    #[arg(long, default_value_t = 20, value_parser = parse_chunks)]
    pub chunks: usize,
    /// Delay between consecutive streamed content chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// The provider API to imitate.
    #[arg(long, value_enum, default_value_t = MockKind::OpenAi)]
    pub kind: MockKind,
    /// OpenAI and Azure kinds: refuse requests carrying `stream_options` with a 400.
    #[arg(long)]
    pub reject_stream_options: bool,
    /// OpenAI and Azure kinds: leave `index` out of streamed tool-call deltas.
    #[arg(long)]
    pub omit_tool_call_index: bool,
    /// The text of every generated answer instead of `mock0 mock1 ...` (at most 64 KiB);
    /// `x-mock-answer` overrides it per request.
    #[arg(long, value_parser = parse_answer)]
    pub answer: Option<String>,
    /// Judge mode: chat routes answer as an LLM judge with a score read from the judged
    /// text (see below) and record what they receive (`GET /mock/judge/requests`).
    #[arg(long)]
    pub judge: bool,
}

impl MockArgs {
    /// The process-wide settings these arguments describe.
    pub fn settings(&self) -> MockSettings {
        MockSettings {
            latency: Duration::from_millis(self.latency_ms),
            error_rate: self.error_rate,
            error_status: self.error_status,
            chunks: self.chunks,
            chunk_delay: Duration::from_millis(self.chunk_delay_ms),
            kind: self.kind,
            reject_stream_options: self.reject_stream_options,
            omit_tool_call_index: self.omit_tool_call_index,
            answer: self.answer.clone(),
            judge: self.judge,
            judge_log: Arc::default(),
        }
    }
}

/// Entry point for the CLI: bind `args.listen`, log the address, serve until Ctrl-C/SIGTERM.
pub async fn run(args: MockArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, kind = ?args.kind, "mock provider listening");
    serve(listener, Arc::new(args.settings()), shutdown_signal()).await?;
    tracing::info!("mock provider stopped");
    Ok(())
}

/// Serve the mock on `listener` until `shutdown` resolves (then stop accepting and return;
/// in-flight connections may be dropped). HTTP/1.1 and HTTP/2 cleartext via
/// hyper_util::server::conn::auto::Builder with TokioExecutor, TCP_NODELAY on accepted sockets.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<MockSettings>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().pipeline_flush(true);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%err, "mock provider: could not set TCP_NODELAY");
                    }
                    let builder = builder.clone();
                    let settings = Arc::clone(&settings);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&settings), req));
                        if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%err, "mock provider: connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // Usually out of file descriptors or an aborted handshake: back off, go on.
                    tracing::warn!(%err, "mock provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    connections.abort_all();
    Ok(())
}

/// Read the whole request body, then answer with [`respond`].
async fn handle(settings: Arc<MockSettings>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let status = if err.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Ok(render::error_response(
                status,
                &format!("could not read the request body: {err}"),
                "invalid_request_error",
                None,
                None,
            ));
        }
    };
    let request = MockRequest {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    Ok(respond(&settings, request).await)
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "mock provider: cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "mock provider: cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
