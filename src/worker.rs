//! Which data-plane worker thread the code is running on.
//!
//! The server runs one event loop per worker thread; a connection stays on the thread that
//! accepted it. State that is cheaper kept per thread than shared — the upstream connection
//! pools — is kept in a slice indexed by [`index`], so a request never hands work to another
//! thread.

use std::cell::{Cell, RefCell};

use tokio_util::sync::CancellationToken;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
    static CUT: RefCell<Option<CancellationToken>> = const { RefCell::new(None) };
}

/// This thread's worker index; 0 on any thread that is not a data-plane worker.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Mark the current thread as data-plane worker `i`.
pub(crate) fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// The signal that this worker's shutdown grace period is over: a response still streaming
/// ends now, with an error event saying why. `None` on a thread that is not a worker.
pub fn cut() -> Option<CancellationToken> {
    CUT.with(|c| c.borrow().clone())
}

/// Set the current worker's cut signal.
pub(crate) fn set_cut(token: CancellationToken) {
    CUT.with(|c| *c.borrow_mut() = Some(token));
}

/// One `T` per worker thread (at least one).
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    /// `make(i)` for each of `workers` threads (at least one).
    pub fn new(workers: usize, make: impl FnMut(usize) -> T) -> Self {
        PerWorker((0..workers.max(1)).map(make).collect())
    }

    /// The current thread's `T`.
    pub fn get(&self) -> &T {
        &self.0[index() % self.0.len()]
    }
}
