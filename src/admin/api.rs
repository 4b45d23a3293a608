//! The admin API's contract: the request bodies and answers of every endpoint as serde
//! types, shared by the server (`admin`) and its client (`sluice ctl`), so the two cannot
//! drift apart. The OpenAPI document (`openapi.rs`) is tested against these types: every
//! request body's properties and required fields are the fields of its type here.
//!
//! Answers made of the state's or the guards' own records reuse those types:
//! [`Applied`], [`ReloadStatus`], [`AuditEntry`], [`FlagStatus`] and [`Preview`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::aiconfig::{Preview, RenderedMessage};
pub use crate::config::Problem;
pub use crate::guard::{FlagStatus, LastTrip, MetricStatus};
pub use crate::state::{Applied, AuditEntry, ObjectChange, Preview as ChangePreview, ReloadStatus};

// ---- request bodies ----
//
// Every change's body carries its `reason` (required; it defaults to empty only so that a
// missing one gets the same clear 422 as an empty one).

/// The body of a change that takes nothing but its reason: kill, restore, and a guard's
/// pause, resume and re-arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonBody {
    /// Why: it goes to the audit log (1 to `MAX_REASON` characters). Required: a missing
    /// one is refused with the same 422 as an empty one.
    #[serde(default)]
    pub reason: String,
}

/// One variation's share of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    pub variation: String,
    /// 0 to 100; a rollout's percents add up to 100.
    pub percent: f64,
}

/// `PUT /flags/{key}/rollout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutBody {
    /// In bucket order.
    pub weights: Vec<Weight>,
    #[serde(default)]
    pub reason: String,
}

/// `PUT /flags/{key}/fallthrough` and `PUT /flags/{key}/rules/{rule}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationBody {
    pub variation: String,
    #[serde(default)]
    pub reason: String,
}

/// `PUT /flags/{key}/variations/{variation}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointBody {
    pub ai_config: String,
    pub version: u32,
    #[serde(default)]
    pub reason: String,
}

/// `POST /flags/{key}/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackBody {
    /// The revision to go back to.
    pub revision: u64,
    #[serde(default)]
    pub reason: String,
}

/// `POST /ai-configs/{key}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddVersionBody {
    /// A version as in the config file: version, provider, model, parameters, messages,
    /// messages_mode, enabled — or an agent's mode, instructions and tools.
    pub version: Value,
    #[serde(default)]
    pub reason: String,
}

/// `POST /flags/{key}/evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateBody {
    /// A LaunchDarkly context object, or a user key (required: a missing one is refused
    /// with the same 422 as a malformed one).
    #[serde(default)]
    pub context: Value,
    /// Template variables, as `x-sluice-variables` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Value>,
    /// A client name: its context kind and template values, as when it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Add each step of the evaluation.
    #[serde(default)]
    pub explain: bool,
}

// ---- answers ----

/// A variation of a flag, as the flag lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationView {
    pub name: Option<String>,
    /// The AI config version it serves (routing flags).
    pub ai_config: Option<String>,
    pub version: Option<u64>,
}

/// A flag's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagView {
    pub key: String,
    pub on: bool,
    pub variations: Vec<VariationView>,
    /// As in the config file: `{"variation": …}` or `{"rollout": {"variations": […]}}`.
    pub fallthrough: Value,
    /// The revision that last changed the flag (`None`: as the config file has it).
    pub revision: Option<u64>,
    /// That revision's who, when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<LastChange>,
    /// What the flag serves when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_variation: Option<String>,
    /// The whole definition (`GET /flags/{key}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

/// Who made a change, when and why (from its audit entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastChange {
    pub revision: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: String,
    pub reason: String,
}

/// `GET /flags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagList {
    pub revision: u64,
    pub flags: Vec<FlagView>,
}

/// `GET /flags/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagAnswer {
    pub revision: u64,
    pub flag: FlagView,
}

/// `GET /ai-configs`: the AI config documents by key, as the config file has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiConfigList {
    pub revision: u64,
    pub ai_configs: serde_json::Map<String, Value>,
}

pub use crate::metrics::history::{MetricPoint, SeriesPoint, VariationSeries};

/// `GET /flags/{key}/timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeseries {
    pub revision: u64,
    pub flag: String,
    /// Seconds covered, a whole number of steps ending with the step that holds `to`.
    pub window: u64,
    /// Seconds per point.
    pub step: u64,
    /// Now, Unix seconds.
    pub to: u64,
    /// In the flag's order of variations.
    pub variations: Vec<VariationSeries>,
}

/// `GET /whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name: the actor its changes are audited under.
    pub name: String,
    /// `read` or `write`.
    pub role: String,
}

/// `GET /audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPageAnswer {
    pub revision: u64,
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next page, when this one is full.
    pub next: Option<u64>,
}

/// `GET /guards`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardList {
    pub revision: u64,
    pub guards: Vec<FlagStatus>,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// The revision this instance serves.
    pub revision: u64,
    pub reload: ReloadStatus,
    /// The store: its kind and health, and with the fleet store the fleet's revision,
    /// the leader and the instances seen recently.
    #[serde(default)]
    pub store: crate::state::StoreStatus,
}

/// `POST /flags/{key}/evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub revision: u64,
    pub flag: String,
    pub value: Value,
    #[serde(rename = "variationIndex")]
    pub variation_index: Option<usize>,
    pub variation: Option<String>,
    /// LaunchDarkly's evaluation reason.
    pub reason: Value,
    /// Each step, with `explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<String>>,
    /// For a routing flag: the version picked, rendered for the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_config: Option<Preview>,
}

/// Every error: `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable: `unauthorized`, `forbidden`, `not_found`, `conflict`, `invalid`, …
    pub code: String,
    pub message: String,
    /// For `invalid`: each field path and what is wrong with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

pub use crate::experiment::{ArmMetric, ArmServed, MetricResults, RecommendationView, Results as ExperimentResults};

/// `GET /admin/v1/experiments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentList {
    pub revision: u64,
    pub experiments: Vec<ExperimentResults>,
}
