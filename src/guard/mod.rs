//! Guarded releases: sequential tests that compare a treatment variation with control
//! while traffic flows ([`stats`]), and the guard task that acts on them ([`task`]): each
//! guard compiled once per revision of its flag (`compile.rs`), checked over a window of
//! statistics (`check.rs`), its trips and ramp steps written into the flag (`edit.rs`),
//! every decision on the one time a pass is given ([`clock`]).

mod check;
pub mod clock;
mod compile;
mod edit;
/// The statistics (a ground-floor module of their own).
pub use crate::stats;
pub mod task;

pub use clock::{Clock, Now, SystemClock};
pub use task::{FlagStatus, Guards, LastTrip, MetricStatus, Pass};
