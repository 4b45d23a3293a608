//! The guard task's clock. Every decision of a check — whether a check is due, how long a
//! ramp step has lasted, the time a step starts, the time of the status and of the audit
//! entries the guard writes — is taken from the one [`Now`] a pass is given, never from
//! the system clock directly. The task reads [`SystemClock`]; tests and simulations pass
//! moments of their own to [`super::Guards::check_all`].

use std::time::{Duration, Instant, SystemTime};

/// One moment as the guard sees it, read once per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic: the spacing of checks (`check_interval`).
    pub instant: Instant,
    /// Wall-clock: ramp step start times (stored in the flag, so they survive a restart),
    /// `checked_at` in the status, and the time of the audit entries the guard writes.
    pub wall: SystemTime,
}

impl Now {
    /// The same moment `d` later, on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now { instant: self.instant + d, wall: self.wall + d }
    }

    /// The wall-clock time as RFC 3339, UTC, in milliseconds (the format the guard stores).
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_millis(self.wall).to_string()
    }
}

/// Where the guard task reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now { instant: Instant::now(), wall: SystemTime::now() }
    }
}
