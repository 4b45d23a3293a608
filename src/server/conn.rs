//! One accepted connection, from its first byte to its close: the HTTP/1.1 or HTTP/2
//! connection (hyper-util's auto builder) with two limits of sluice's own.
//!
//! - **Idle connections are closed.** A connection with no request in flight for
//!   `header_read_timeout` is told to close (HTTP/1.1: at once, or after the head it is
//!   reading; HTTP/2: GOAWAY), and dropped at the next check if it is still open with
//!   nothing in flight. This covers a connection that never sends a byte, a head that never
//!   completes, a TLS connection silent after its handshake, and an HTTP/2 connection with
//!   no open stream (which answers keep-alive PINGs for ever otherwise). A request is in
//!   flight from the moment hyper hands it to the service until its response body is
//!   dropped. No timer is set per request: one check per connection runs four times per
//!   the shorter of `header_read_timeout` and `client_write_timeout`, so an idle
//!   connection is told to close within a quarter of that after its time is up.
//! - **A client that stops reading is cut.** A response body that handed hyper a frame
//!   hyper has not come back for in `client_write_timeout` means its client takes nothing
//!   (over HTTP/2: its flow-control window stays shut; the socket may be idle): the
//!   connection is dropped, and with it the upstream stream. (`server::io` covers the
//!   socket itself.)
//! - **Shutdown.** When the worker's stop signal is raised, the connection is told to close
//!   after its in-flight requests; the worker bounds the wait by `shutdown_grace`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::wire::body::{Body, BoxError};

/// How many requests of one connection are in flight and since when none has been; and
/// since when each response has waited for its client.
pub struct Activity {
    open: AtomicUsize,
    /// When the last request in flight ended (nanoseconds since `epoch`; zero: since the
    /// connection began).
    idle_since: AtomicU64,
    /// One slot per response in flight (HTTP/2: up to its stream limit; HTTP/1.1: one),
    /// reused by the requests that follow: a request allocates nothing here.
    responses: Mutex<Vec<Arc<Waiting>>>,
    epoch: Instant,
}

/// When a response body last handed hyper a frame that hyper has not come back for: in
/// nanoseconds since [`Activity::epoch`], plus one; zero while hyper waits on the body.
#[derive(Default)]
struct Waiting {
    at: AtomicU64,
    /// A request holds this slot.
    busy: AtomicBool,
}

impl Waiting {
    fn set(&self, epoch: Instant, waiting: bool) {
        let at = if waiting { nanos_since(epoch) + 1 } else { 0 };
        self.at.store(at, Ordering::Relaxed);
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            responses: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl Activity {
    /// A request starts; it ends when the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.open.fetch_add(1, Ordering::SeqCst);
        let mut responses = self.responses.lock().unwrap_or_else(PoisonError::into_inner);
        let free = responses.iter().find(|w| !w.busy.load(Ordering::Relaxed)).cloned();
        let waiting = free.unwrap_or_else(|| {
            let w = Arc::new(Waiting::default());
            responses.push(Arc::clone(&w));
            w
        });
        waiting.busy.store(true, Ordering::Relaxed);
        drop(responses);
        InFlight { activity: Arc::clone(self), waiting }
    }

    /// Whether a response has waited `limit` or longer for its client to take a frame.
    fn stalled(&self, limit: Duration) -> bool {
        let now = u128::from(nanos_since(self.epoch));
        let responses = self.responses.lock().unwrap_or_else(PoisonError::into_inner);
        responses.iter().any(|w| match u128::from(w.at.load(Ordering::Relaxed)) {
            0 => false,
            since => now + 1 >= since + limit.as_nanos(),
        })
    }

    /// Whether no request has been in flight for `idle` or longer.
    fn idle_for(&self, idle: Duration) -> bool {
        if self.open.load(Ordering::SeqCst) != 0 {
            return false;
        }
        let since = self.idle_since.load(Ordering::SeqCst);
        u128::from(nanos_since(self.epoch).saturating_sub(since)) >= idle.as_nanos()
    }
}

/// A request in flight (see [`Activity::begin`]).
pub struct InFlight {
    activity: Arc<Activity>,
    waiting: Arc<Waiting>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.waiting.at.store(0, Ordering::Relaxed);
        self.waiting.busy.store(false, Ordering::Relaxed);
        if self.activity.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.activity.idle_since.store(nanos_since(self.activity.epoch), Ordering::SeqCst);
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it, and notes when
/// it waits for its client (hyper polls a body only when it can send: over HTTP/2, when
/// the client's flow-control window has room).
pub struct Tracked {
    inner: Body,
    in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let handed_out = matches!(polled, Poll::Ready(Some(Ok(_))));
        this.in_flight.waiting.set(this.in_flight.activity.epoch, handed_out);
        polled
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
    /// The longest a response may wait for its client to take a frame.
    pub write_timeout: Duration,
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
                Ok::<_, std::convert::Infallible>(response.map(|inner| Tracked { inner, in_flight }))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stop = self.stop;
        let mut closing = false;
        let mut stopping = false;
        // Stalled responses and idleness are looked for four times per the shorter limit.
        let period = (self.write_timeout.min(self.idle) / 4).max(Duration::from_millis(1));
        let mut checks = tokio::time::interval_at(Instant::now() + period, period);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = conn.as_mut() => return result,
                _ = checks.tick() => {
                    if activity.stalled(self.write_timeout) {
                        tracing::debug!("a client took nothing of its response for client_write_timeout: dropped");
                        return Ok(());
                    }
                    if activity.idle_for(self.idle) {
                        if closing {
                            // Told to close a check ago, and still nothing in flight.
                            tracing::debug!("idle connection did not close: dropped");
                            return Ok(());
                        }
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
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
