//! Accepting connections without letting a flood take the process down.
//!
//! - **Descriptors.** At start the soft `RLIMIT_NOFILE` is raised to the hard limit.
//! - **A cap per listener.** Past its cap a listener accepts a connection and closes it at
//!   once, so the kernel's queue does not fill and each plane stays reachable on its own.
//!   The data plane's cap is `limits.max_connections`, lowered so that every data
//!   connection can also hold an upstream connection and [`RESERVED_DESCRIPTORS`] remain
//!   for the admin plane (at most [`ADMIN_CONNECTIONS`]) and the process's own files:
//!   `min(max_connections, (nofile - reserved) / 2)`.
//! - **Accept errors back off.** `EMFILE`, `ENFILE`, `ENOBUFS` and `ENOMEM` leave the
//!   listener readable, so retrying at once spins: the loop waits [`BACKOFF`] first, and
//!   logs at most once per second.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Connections the admin listener serves at once.
pub const ADMIN_CONNECTIONS: usize = 64;

/// Descriptors kept out of the data plane's cap: the admin plane's connections and the
/// process's own (listeners, runtimes, state files, logs).
pub const RESERVED_DESCRIPTORS: u64 = ADMIN_CONNECTIONS as u64 + 64;

/// Wait after an accept error that is not the connection's own.
const BACKOFF: Duration = Duration::from_millis(50);

/// Raise the soft descriptor limit to the hard one; the limit now in force (`None` when it
/// is unknown or unlimited).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let limit = getrlimit(Resource::Nofile);
        if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
            if soft < hard {
                let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
                match setrlimit(Resource::Nofile, raised) {
                    Ok(()) => return Some(hard),
                    Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit"),
                }
            }
        }
        limit.current
    }
    #[cfg(not(unix))]
    None
}

/// The data plane's connection cap, given the descriptor limit.
pub fn data_cap(max_connections: usize, nofile: Option<u64>) -> usize {
    let by_descriptors = nofile
        .map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(RESERVED_DESCRIPTORS) / 2).unwrap_or(usize::MAX));
    max_connections.min(by_descriptors).max(1)
}

/// Open connections of one listener, against its cap.
#[derive(Debug)]
pub struct Slots {
    open: AtomicUsize,
    cap: usize,
    /// Where the listener is, for the log.
    plane: &'static str,
    log: RateLimited,
}

/// A connection counted against its listener's cap until dropped.
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slots {
    pub fn new(plane: &'static str, cap: usize) -> Arc<Self> {
        Arc::new(Slots { open: AtomicUsize::new(0), cap, plane, log: RateLimited::default() })
    }

    /// The most connections open at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A slot for a new connection, or `None` at the cap (logged at most once a second).
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let taken = self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.cap).then_some(n + 1));
        match taken {
            Ok(_) => Some(Slot(Arc::clone(self))),
            Err(_) => {
                if self.log.allow() {
                    tracing::warn!(
                        plane = self.plane,
                        cap = self.cap,
                        "connection limit reached: closing new connections"
                    );
                }
                None
            }
        }
    }
}

/// A once-per-second gate for a log line.
#[derive(Debug, Default)]
struct RateLimited(Mutex<Option<Instant>>);

impl RateLimited {
    fn allow(&self) -> bool {
        let Ok(mut last) = self.0.lock() else { return false };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The next connection `listener` accepts within `slots`' cap; connections past the cap
/// are closed on the spot, accept errors waited out.
pub async fn next(listener: &TcpListener, slots: &Arc<Slots>) -> (TcpStream, Slot) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match slots.take() {
                Some(slot) => return (stream, slot),
                None => drop(stream),
            },
            Err(e) if connection_error(&e) => {}
            Err(e) => {
                if slots.log.allow() {
                    tracing::warn!(plane = slots.plane, error = %e, "cannot accept connections; backing off");
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// An error of the one connection being accepted: the next accept may succeed at once.
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_cap_leaves_room_for_upstreams_and_the_admin_plane() {
        assert_eq!(data_cap(10_000, Some(1024)), (1024 - 128) / 2);
        assert_eq!(data_cap(10_000, Some(1 << 20)), 10_000);
        assert_eq!(data_cap(10_000, None), 10_000);
        assert_eq!(data_cap(10_000, Some(10)), 1);
    }

    #[test]
    fn slots_stop_at_the_cap_and_come_back_when_dropped() {
        let slots = Slots::new("data", 2);
        let (a, b) = (slots.take(), slots.take());
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
