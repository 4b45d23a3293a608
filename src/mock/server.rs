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

use super::knobs::{parse_chunks, parse_rate, parse_status};
use super::{render, respond, MockRequest, MockSettings};
use crate::body::Body;

/// Largest request body the server reads.
const MAX_BODY: usize = 32 * 1024 * 1024;

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
        }
    }
}

/// Entry point for the CLI: bind `args.listen`, log the address, serve until Ctrl-C/SIGTERM.
pub async fn run(args: MockArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "mock provider listening");
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
