//! LaunchDarkly's server-side flag and segment data model, as serde types.
//!
//! This is the *input* shape (`{"flags":{...},"segments":{...}}`, as LaunchDarkly's SDK
//! data and relay proxy serve it). Missing fields take LaunchDarkly's zero values;
//! fields sluice does not use (tracking, client-side availability...) are ignored.
//! sluice's own YAML format is converted into these types too, and both are then
//! compiled by [`super::compile`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Flags and segments, by key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct FlagData {
    #[serde(default)]
    pub flags: BTreeMap<String, Flag>,
    #[serde(default)]
    pub segments: BTreeMap<String, Segment>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Flag {
    pub key: String,
    pub version: u64,
    pub on: bool,
    pub prerequisites: Vec<Prerequisite>,
    pub targets: Vec<Target>,
    pub context_targets: Vec<Target>,
    pub rules: Vec<FlagRule>,
    pub fallthrough: VariationOrRollout,
    pub off_variation: Option<i64>,
    pub variations: Vec<Value>,
    pub salt: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Prerequisite {
    pub key: String,
    pub variation: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Target {
    /// Absent in `targets` (always `user`); set in `contextTargets`.
    pub context_kind: Option<String>,
    pub values: Vec<String>,
    pub variation: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FlagRule {
    pub id: String,
    pub clauses: Vec<Clause>,
    pub variation: Option<i64>,
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VariationOrRollout {
    pub variation: Option<i64>,
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Rollout {
    /// `rollout` (default) or `experiment`.
    pub kind: Option<String>,
    pub context_kind: Option<String>,
    pub variations: Vec<WeightedVariation>,
    pub bucket_by: Option<String>,
    pub seed: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WeightedVariation {
    pub variation: i64,
    /// In 100000ths: 100000 is 100%.
    pub weight: i64,
    pub untracked: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Clause {
    pub context_kind: Option<String>,
    pub attribute: String,
    pub op: String,
    pub values: Vec<Value>,
    pub negate: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Segment {
    pub key: String,
    pub version: u64,
    pub included: Vec<String>,
    pub excluded: Vec<String>,
    pub included_contexts: Vec<SegmentTarget>,
    pub excluded_contexts: Vec<SegmentTarget>,
    pub rules: Vec<SegmentRule>,
    pub salt: String,
    pub unbounded: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentTarget {
    pub context_kind: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentRule {
    pub id: String,
    pub clauses: Vec<Clause>,
    /// In 100000ths; absent means every context that matches the clauses.
    pub weight: Option<i64>,
    pub bucket_by: Option<String>,
    pub rollout_context_kind: Option<String>,
}

impl FlagData {
    /// Read LaunchDarkly's server-side data (`{"flags":{...},"segments":{...}}`, as its
    /// SDKs and relay proxy serve it). A flag or segment without `key` takes its map key.
    pub fn from_ld_json(value: serde_json::Value) -> Result<FlagData, LoadError> {
        let mut data: FlagData = serde_path_to_error::deserialize(value)
            .map_err(|e| LoadError { path: e.path().to_string(), message: e.into_inner().to_string() })?;
        for (key, flag) in &mut data.flags {
            if flag.key.is_empty() {
                flag.key.clone_from(key);
            }
        }
        for (key, segment) in &mut data.segments {
            if segment.key.is_empty() {
                segment.key.clone_from(key);
            }
        }
        Ok(data)
    }
}

/// A LaunchDarkly JSON document that does not fit the model, at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: String,
    pub message: String,
}
