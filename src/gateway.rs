//! The running gateway's shared state: the current snapshot (swapped whole on every
//! configuration change), the process's metrics, and whether shutdown has begun. Above
//! `snapshot` and `metrics`, below `state` (which installs snapshots) and `server`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Shared state of a running gateway.
pub struct Gateway {
    /// The current snapshot. Handlers load it once per request (`load_full`) and never
    /// keep this handle: a configuration change swaps it without a lock.
    snapshot: ArcSwap<Snapshot>,
    /// The process's metrics; they outlive snapshots.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins, so `/readyz` turns 503 and load balancers drain us.
    draining: AtomicBool,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        snapshot.publish(&metrics);
        metrics.set_config_revision(1);
        Gateway { snapshot: ArcSwap::from_pointee(snapshot), metrics, draining: AtomicBool::new(false) }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Serve `snapshot` (of configuration `revision`) from the next request on.
    pub fn install(&self, snapshot: Snapshot, revision: u64) {
        snapshot.publish(&self.metrics);
        self.metrics.set_config_revision(revision);
        self.snapshot.store(Arc::new(snapshot));
    }
}
