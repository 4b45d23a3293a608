//! One upstream's connections on one worker thread.
//!
//! A pool dials with the shared HTTPS connector (HTTP/1.1, or HTTP/2 when TLS's ALPN picks
//! it) and keeps what it dialled for the next request: HTTP/1.1 connections in a LIFO stack
//! (the most recently used one is the warmest and the least likely to have been closed by
//! the provider), an HTTP/2 connection as one shared sender. An HTTP/1.1 connection goes
//! back on the stack the moment its response body has been read to the end — by the body
//! itself ([`Pooled`]), so no task waits for it. A connection idle for longer than
//! [`IDLE_TIMEOUT`] is dropped when the stack is next looked at; one the provider closed
//! is noticed by its own task and skipped. A request that a reused connection gave back
//! unsent (it was closed under it) goes on another one.
//!
//! The pool is only ever used by the worker thread that owns it, so its lock is never
//! contended; it is a lock only because the data plane's futures must be `Send`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::UpstreamError;
use crate::wire::body::Body;

/// How long an idle upstream connection is kept. Providers close idle connections after
/// about a minute or more; reusing one saves a TLS handshake.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most idle HTTP/1.1 connections kept per worker and upstream; more are closed when
/// their response ends (a burst's connections are not all kept).
const MAX_IDLE: usize = 256;

/// An upstream response head's largest buffer: far above any provider's head, and small
/// enough that a hostile one cannot make sluice buffer without limit.
const MAX_BUF: usize = 64 << 10;

type Sender1 = http1::SendRequest<Full<Bytes>>;
type Sender2 = http2::SendRequest<Full<Bytes>>;

/// A request as the pool sends it: origin-form URI, `host` set (turned into HTTP/2's
/// form on an HTTP/2 connection).
pub type Outgoing = Request<Full<Bytes>>;

pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    dial: Dial,
    idle: Mutex<Idle>,
}

/// Where a pool's connections go.
#[derive(Clone)]
pub struct Dial {
    /// What the connector dials, and an HTTP/2 request's scheme and authority.
    target: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The `host` header of every HTTP/1.1 request.
    host: HeaderValue,
}

impl Dial {
    pub fn new(scheme: Scheme, authority: Authority) -> Result<Self, String> {
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("invalid upstream address: {e}"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| "invalid upstream host".to_string())?;
        Ok(Dial { target, scheme, authority, host })
    }
}

#[derive(Default)]
struct Idle {
    h1: Vec<(Sender1, Instant)>,
    h2: Option<Sender2>,
}

enum Conn {
    H1(Sender1),
    H2(Sender2),
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, dial: Dial) -> Self {
        Pool { connector, dial, idle: Mutex::default() }
    }

    /// Send `req` on an idle connection, or on a new one; the response's body gives its
    /// HTTP/1.1 connection back when it has been read to the end.
    pub async fn send(self: &Arc<Self>, mut req: Outgoing) -> Result<Response<Body>, UpstreamError> {
        while let Some(conn) = self.checkout() {
            match self.dispatch(conn, req).await {
                Ok(resp) => return Ok(resp),
                // Closed under the request before it was written: try the next one.
                Err(Some(back)) => req = back,
                Err(None) => return Err(UpstreamError::Protocol),
            }
        }
        let conn = self.connect().await?;
        self.dispatch(conn, req).await.map_err(|_| UpstreamError::Protocol)
    }

    /// An idle connection, if there is one still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h2) = &idle.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            idle.h2 = None;
        }
        let now = Instant::now();
        while let Some((tx, since)) = idle.h1.pop() {
            if now.saturating_duration_since(since) > IDLE_TIMEOUT {
                // The stack's oldest are at the bottom: everything under this one is older.
                idle.h1.clear();
                return None;
            }
            if !tx.is_closed() {
                return Some(Conn::H1(tx));
            }
        }
        None
    }

    /// Put an HTTP/1.1 connection back on the stack.
    fn put(&self, tx: Sender1) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.h1.len() < MAX_IDLE {
            idle.h1.push((tx, Instant::now()));
        }
    }

    /// Send on `conn`. `Err(Some(req))`: the connection closed before the request was
    /// written, and gave it back.
    async fn dispatch(self: &Arc<Self>, conn: Conn, mut req: Outgoing) -> Result<Response<Body>, Option<Outgoing>> {
        match conn {
            Conn::H1(mut tx) => {
                if tx.ready().await.is_err() {
                    return Err(Some(req));
                }
                if req.uri().authority().is_some() {
                    *req.uri_mut() = origin_form(req.uri());
                }
                req.headers_mut().insert(HOST, self.dial.host.clone());
                match tx.try_send_request(req).await {
                    Ok(resp) => Ok(self.pooled(resp, tx)),
                    Err(mut e) => Err(e.take_message()),
                }
            }
            Conn::H2(mut tx) => {
                if tx.ready().await.is_err() {
                    return Err(Some(req));
                }
                req.headers_mut().remove(HOST);
                let pq = req.uri().path_and_query().cloned();
                let mut uri = Uri::builder().scheme(self.dial.scheme.clone()).authority(self.dial.authority.clone());
                if let Some(pq) = pq {
                    uri = uri.path_and_query(pq);
                }
                *req.uri_mut() = uri.build().map_err(|_| None)?;
                match tx.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(|body| body.map_err(box_error).boxed_unsync())),
                    Err(mut e) => Err(e.take_message()),
                }
            }
        }
    }

    /// The response, its body holding the connection until the body ends.
    fn pooled(self: &Arc<Self>, resp: Response<Incoming>, tx: Sender1) -> Response<Body> {
        if resp.body().is_end_stream() {
            self.put(tx);
            return resp.map(|body| body.map_err(box_error).boxed_unsync());
        }
        let back = Some((Arc::clone(self), tx));
        resp.map(|body| Pooled { body, back }.boxed_unsync())
    }

    /// Dial a new connection and start its task on this worker.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(self.dial.target.clone())
            .await
            .map_err(|e| UpstreamError::from_connect(&*e))?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|_| UpstreamError::Connect)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.h2 = Some(tx.clone());
            return Ok(Conn::H2(tx));
        }
        let (tx, conn) =
            http1::Builder::new().max_buf_size(MAX_BUF).handshake(io).await.map_err(|_| UpstreamError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn::H1(tx))
    }
}

/// A URI's origin form (its path and query).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

fn box_error(e: hyper::Error) -> crate::wire::body::BoxError {
    Box::new(e)
}

/// An HTTP/1.1 response body that puts its connection back in the pool once it has been
/// read to the end. Dropped before the end, the connection closes with it.
struct Pooled {
    body: Incoming,
    back: Option<(Arc<Pool>, Sender1)>,
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = crate::wire::body::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        let clean = match &frame {
            None => true,
            Some(Ok(_)) => this.body.is_end_stream(),
            Some(Err(_)) => false,
        };
        if clean {
            if let Some((pool, tx)) = this.back.take() {
                pool.put(tx);
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(box_error)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
