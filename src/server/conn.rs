//! One accepted connection, from its first byte to its close: the HTTP/1.1 or HTTP/2
//! connection (hyper-util's auto builder) with two limits of sluice's own.
//!
//! - **Idle connections are closed.** A connection with no request in flight for
//!   `header_read_timeout` is told to close (HTTP/1.1: at once; HTTP/2: GOAWAY), and dropped
//!   if it is still open `header_read_timeout` later. This covers a connection that never
//!   sends a byte (hyper's own header timer only starts at the first byte), a TLS connection
//!   silent after its handshake, and an HTTP/2 connection with no open stream (which
//!   answers keep-alive PINGs for ever otherwise). A request is in flight from the moment
//!   hyper hands it to the service until its response body is dropped.
//! - **Shutdown.** When the worker's stop signal is raised, the connection is told to close
//!   after its in-flight requests; the worker bounds the wait by `shutdown_grace`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

use crate::body::{Body, BoxError};

/// How many requests of one connection are in flight, and a wake-up when that number
/// leaves or reaches zero.
#[derive(Default)]
pub struct Activity {
    open: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// A request starts; it ends when the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        if self.open.fetch_add(1, Ordering::SeqCst) == 0 {
            self.changed.notify_one();
        }
        InFlight(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            // A change between the check and the wait leaves a permit: nothing is missed.
            if self.open.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {
                        if self.open.load(Ordering::SeqCst) == 0 {
                            return;
                        }
                    }
                    _ = self.changed.notified() => {}
                }
            } else {
                self.changed.notified().await;
            }
        }
    }
}

/// A request in flight (see [`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it.
pub struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is served with.
pub struct Serve {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    /// The longest time without a request in flight.
    pub idle: Duration,
    /// The worker's stop signal; `None` on the admin plane, whose connections answer
    /// until the process exits.
    pub stop: Option<watch::Receiver<bool>>,
}

impl Serve {
    /// Serve `io` with `service` until the connection ends, idles out or is stopped.
    pub async fn run<I, S>(self, io: I, service: S) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let tracked = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = tracked.begin();
            let response = service.call(req);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(response.map(|inner| Tracked { inner, _in_flight: in_flight }))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stop = self.stop;
        let mut closing = false;
        let mut stopping = false;
        let forced = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(forced);
        loop {
            tokio::select! {
                result = conn.as_mut() => return result,
                _ = activity.idle_for(self.idle), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    forced.as_mut().reset(tokio::time::Instant::now() + self.idle);
                }
                _ = forced.as_mut(), if closing => {
                    tracing::debug!("idle connection did not close: dropped");
                    return Ok(());
                }
                _ = wait_stop(stop.as_mut()), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves when `stop` is raised (or its sender is gone); never without one.
async fn wait_stop(stop: Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            let _ = stop.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}
