//! Targeting: LaunchDarkly-compatible flag evaluation, with no I/O.
//!
//! Flag data (LaunchDarkly's JSON model, [`model`], or sluice's YAML converted into it)
//! is compiled once into a [`FlagSet`]; [`FlagSet::evaluate`] then answers which
//! variation a [`Context`] gets and why, allocation-free.
//!
//! | file | owns |
//! |---|---|
//! | `context.rs` | contexts (single, multi-kind, legacy user) and attribute references |
//! | `model.rs` | LaunchDarkly's flag/segment JSON model |
//! | `compile.rs` | the compiled form, and the problems found in the data |
//! | `eval.rs` | evaluation and reasons |
//! | `bucket.rs` | SHA-1 bucketing |
//! | `semver.rs` | LaunchDarkly's loose semantic versions |
//! | `trace.rs` | optional step-by-step tracing for `--explain` |

pub mod bucket;
pub mod compile;
pub mod context;
pub mod eval;
pub mod model;
pub mod semver;
pub mod trace;

pub use compile::{FlagIndex, FlagSet, Problem};
pub use context::{AttrRef, Context, ContextError, Single};
pub use eval::{json_eq, Detail, ErrorKind, Reason};
pub use model::{FlagData, LoadError};
