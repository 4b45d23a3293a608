//! Guarded releases: sequential tests that compare a treatment variation with control
//! while traffic flows, and (next) the guard task and ramps that act on them.

pub mod stats;
pub mod task;

pub use task::{FlagStatus, Guards};
