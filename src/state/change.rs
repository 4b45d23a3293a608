//! What a change is ([`Change`]) and how each edits the documents, within the nesting
//! the config file allows.

use serde_json::Value;

use super::{ChangeError, Docs, ObjectChange, MAX_DOC_NESTING};
use crate::config::{self, Problem};

/// A change to the documents. Each becomes one revision.
#[derive(Debug, Clone)]
pub enum Change {
    /// Turn a flag off (everyone gets its off variation) or back on.
    SetOn { flag: String, on: bool },
    /// The fallthrough becomes a percentage rollout with these weights (percent).
    Rollout { flag: String, weights: Vec<(String, f64)> },
    /// The fallthrough serves one variation.
    Fallthrough { flag: String, variation: String },
    /// A rule (by `id`) serves one variation.
    RuleVariation { flag: String, rule: String, variation: String },
    /// A variation serves another AI config version.
    PointVariation { flag: String, variation: String, ai_config: String, version: u32 },
    /// A new AI config version (the config format's version object).
    AddVersion { ai_config: String, version: Value },
    /// A flag as it was at an earlier revision.
    Rollback { flag: String, revision: u64 },
    /// A flag's whole new document (the guard's trips and ramp steps).
    ReplaceFlag { flag: String, value: Value },
    /// A flag's guard state, set by a person: pause, resume, re-arm (`restart`: a ramp
    /// starts again from its first step).
    GuardState { flag: String, state: &'static str, restart: bool },
    /// A guard's trip was a false alarm: the traffic a rollback moved goes back, the guard
    /// is armed again, and its window restarts (the flag changed).
    GuardDismiss { flag: String },
    /// The experiment's winner takes the fallthrough and every rule (each of them served
    /// an arm); the experiment stops.
    ExperimentShip { flag: String, variation: String },
    /// The experiment stops (the allocation stays as it is).
    ExperimentStop { flag: String },
    /// The config file was (re)loaded: its whole value (the static part of the
    /// configuration) and its documents.
    File { base: Value, docs: Docs },
}

impl Change {
    /// The flag this change is about, if it is about one.
    pub fn flag(&self) -> Option<&str> {
        match self {
            Change::SetOn { flag, .. }
            | Change::Rollout { flag, .. }
            | Change::Fallthrough { flag, .. }
            | Change::RuleVariation { flag, .. }
            | Change::PointVariation { flag, .. }
            | Change::Rollback { flag, .. }
            | Change::ReplaceFlag { flag, .. }
            | Change::GuardState { flag, .. }
            | Change::GuardDismiss { flag }
            | Change::ExperimentShip { flag, .. }
            | Change::ExperimentStop { flag } => Some(flag),
            Change::AddVersion { .. } | Change::File { .. } => None,
        }
    }
}

/// The flag's experiment, which must be running.
fn running_experiment(flag: &str, f: &serde_json::Map<String, Value>) -> Result<(), ChangeError> {
    match f.get("experiment") {
        None => Err(ChangeError::NotFound(format!("flag `{flag}` has no experiment"))),
        Some(e) if e.get("state").and_then(Value::as_str) == Some("stopped") => {
            Err(ChangeError::Conflict(format!("the experiment of flag `{flag}` has already stopped")))
        }
        Some(_) => Ok(()),
    }
}

fn stop_experiment(f: &mut serde_json::Map<String, Value>) {
    if let Some(e) = f.get_mut("experiment").and_then(Value::as_object_mut) {
        e.insert("state".into(), Value::String("stopped".into()));
    }
}

/// How deep `value` nests (a scalar: 0, `[]` or `{}`: 1), or `None` past `limit`.
fn depth_within(value: &Value, limit: usize) -> Option<usize> {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(a) => Box::new(a.iter()),
        Value::Object(o) => Box::new(o.values()),
        _ => return Some(0),
    };
    let inner = limit.checked_sub(1)?;
    let mut deepest = 0;
    for child in children {
        deepest = deepest.max(depth_within(child, inner)?);
    }
    Some(deepest + 1)
}

/// Refuse a change that leaves a document nested deeper than [`MAX_DOC_NESTING`].
pub(super) fn check_depth(docs: &Docs, changes: &[ObjectChange]) -> Result<(), ChangeError> {
    let problems: Vec<Problem> = changes
        .iter()
        .filter(|c| docs.of(c.kind).get(&c.key).is_some_and(|v| depth_within(v, MAX_DOC_NESTING).is_none()))
        .map(|c| {
            Problem::new(
                format!("{}.{}", c.kind.section(), c.key),
                format!(
                    "nests more than {} deep (counted from the top of the config file), the most the config file allows",
                    config::yaml::MAX_NESTING
                ),
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::Invalid(problems))
    }
}

/// A flag's document, or 404.
fn flag_mut<'d>(docs: &'d mut Docs, flag: &str) -> Result<&'d mut serde_json::Map<String, Value>, ChangeError> {
    docs.flags
        .get_mut(flag)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ChangeError::NotFound(format!("no flag `{flag}`")))
}

/// The names of a flag's variations.
fn variation_names(flag: &serde_json::Map<String, Value>) -> Vec<String> {
    flag.get("variations")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default()
}

fn known_variation(flag_key: &str, flag: &serde_json::Map<String, Value>, variation: &str) -> Result<(), ChangeError> {
    let names = variation_names(flag);
    if names.iter().any(|n| n == variation) {
        Ok(())
    } else {
        Err(ChangeError::Invalid(vec![Problem::new(
            format!("flags.{flag_key}"),
            format!("no variation `{variation}` (the flag has {})", names.join(", ")),
        )]))
    }
}

/// Apply an edit to the documents (validation of the result comes after).
/// Whether a flag's new document starts a new iteration of its experiment: the experiment
/// appeared, was restarted, or the allocation changed while it runs (everything but
/// `experiment`, `guard` and `description` decides who gets which variation). Stopping
/// keeps the iteration, so its results stay readable.
pub(super) fn starts_iteration(before: Option<&Value>, after: &Value) -> bool {
    let running = |f: &Value| {
        f.get("experiment").is_some_and(|e| e.is_object() && e.get("state").and_then(Value::as_str) != Some("stopped"))
    };
    if !running(after) {
        return false;
    }
    let Some(before) = before.filter(|b| b.get("experiment").is_some()) else { return true };
    let allocation = |f: &Value| {
        let mut f = f.as_object().cloned().unwrap_or_default();
        for k in ["experiment", "guard", "description"] {
            f.remove(k);
        }
        f
    };
    !running(before) || allocation(before) != allocation(after)
}

/// The iterations after a change of `changed` flags at `revision`.
pub(super) fn next_iterations(
    old: &Docs,
    new: &Docs,
    changed: impl Iterator<Item = String>,
    iterations: &mut std::collections::BTreeMap<String, super::docs::Iteration>,
    revision: u64,
    time: &str,
) {
    for key in changed {
        match new.flags.get(&key) {
            Some(after) if after.get("experiment").is_some() => {
                if starts_iteration(old.flags.get(&key), after) {
                    iterations.insert(key, super::docs::Iteration { revision, started: time.to_string() });
                }
            }
            _ => {
                iterations.remove(&key);
            }
        }
    }
}

/// Any change a person makes to a flag after a trip makes the trip's `before_trip` stale:
/// `dismiss` may only undo a rollback nothing has changed since.
pub(super) fn forget_trip(docs: &mut Docs, change: &Change) {
    let keep = matches!(change, Change::ReplaceFlag { .. } | Change::GuardDismiss { .. });
    if let (false, Some(flag)) = (keep, change.flag()) {
        if let Some(guard) = docs.flags.get_mut(flag).and_then(|f| f.get_mut("guard")).and_then(Value::as_object_mut) {
            guard.remove("before_trip");
        }
    }
}

pub(super) fn edit(docs: &mut Docs, change: &Change) -> Result<(), ChangeError> {
    match change {
        Change::ExperimentShip { flag, variation } => {
            let f = flag_mut(docs, flag)?;
            known_variation(flag, f, variation)?;
            // Stopped (to review the results) or running: either may ship.
            if f.get("experiment").is_none() {
                return Err(ChangeError::NotFound(format!("flag `{flag}` has no experiment")));
            }
            f.insert("fallthrough".into(), serde_json::json!({ "variation": variation }));
            if let Some(rules) = f.get_mut("rules").and_then(Value::as_array_mut) {
                for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                    r.remove("rollout");
                    r.insert("variation".into(), Value::String(variation.clone()));
                }
            }
            stop_experiment(f);
        }
        Change::GuardDismiss { flag } => {
            let f = flag_mut(docs, flag)?;
            let guard = f
                .get_mut("guard")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| ChangeError::NotFound(format!("flag `{flag}` has no guard")))?;
            let state = guard.get("state").and_then(Value::as_str).unwrap_or("armed").to_string();
            if state == "armed" {
                return Err(ChangeError::Conflict(format!(
                    "the guard of flag `{flag}` has not tripped: nothing to dismiss"
                )));
            }
            guard.insert("state".into(), Value::String("armed".into()));
            let before = guard.remove("before_trip");
            // Only a rollback moved traffic; a pause (or a trip a person has acted on
            // since, which clears `before_trip`) has nothing to put back.
            if let Some(before) = before.as_ref().filter(|_| state == "rolled_back").and_then(Value::as_object) {
                for key in ["fallthrough", "rules"] {
                    match before.get(key) {
                        Some(v) if !v.is_null() => {
                            f.insert(key.into(), v.clone());
                        }
                        _ => {
                            f.remove(key);
                        }
                    }
                }
            }
        }
        Change::ExperimentStop { flag } => {
            let f = flag_mut(docs, flag)?;
            running_experiment(flag, f)?;
            stop_experiment(f);
        }
        Change::SetOn { flag, on } => {
            let f = flag_mut(docs, flag)?;
            // A flag without `on` is on: restoring it changes nothing (and is refused so).
            if f.get("on").and_then(Value::as_bool).unwrap_or(true) != *on {
                f.insert("on".into(), Value::Bool(*on));
            }
        }
        Change::Rollout { flag, weights } => {
            let f = flag_mut(docs, flag)?;
            for (variation, _) in weights {
                known_variation(flag, f, variation)?;
            }
            let variations: Vec<Value> =
                weights.iter().map(|(v, p)| serde_json::json!({"variation": v, "percent": p})).collect();
            // Keep the bucketing settings of an existing rollout.
            let mut rollout = f
                .get("fallthrough")
                .and_then(|ft| ft.get("rollout"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            rollout.insert("variations".into(), Value::Array(variations));
            f.insert("fallthrough".into(), serde_json::json!({ "rollout": rollout }));
        }
        Change::Fallthrough { flag, variation } => {
            let f = flag_mut(docs, flag)?;
            known_variation(flag, f, variation)?;
            f.insert("fallthrough".into(), serde_json::json!({ "variation": variation }));
        }
        Change::RuleVariation { flag, rule, variation } => {
            let f = flag_mut(docs, flag)?;
            known_variation(flag, f, variation)?;
            let rules = f.get_mut("rules").and_then(Value::as_array_mut);
            let r = rules
                .and_then(|rs| rs.iter_mut().find(|r| r.get("id").and_then(Value::as_str) == Some(rule)))
                .and_then(Value::as_object_mut)
                .ok_or_else(|| ChangeError::NotFound(format!("flag `{flag}` has no rule with id `{rule}`")))?;
            r.remove("rollout");
            r.insert("variation".into(), Value::String(variation.clone()));
        }
        Change::PointVariation { flag, variation, ai_config, version } => {
            let f = flag_mut(docs, flag)?;
            known_variation(flag, f, variation)?;
            if let Some(v) = f
                .get_mut("variations")
                .and_then(Value::as_array_mut)
                .and_then(|vs| vs.iter_mut().find(|v| v.get("name").and_then(Value::as_str) == Some(variation)))
                .and_then(Value::as_object_mut)
            {
                v.insert("ai_config".into(), Value::String(ai_config.clone()));
                v.insert("version".into(), Value::from(*version));
            }
        }
        Change::AddVersion { ai_config, version } => {
            let number = version.get("version").and_then(Value::as_u64);
            let ai = docs
                .ai_configs
                .get_mut(ai_config)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| ChangeError::NotFound(format!("no AI config `{ai_config}`")))?;
            let versions = ai
                .entry("versions")
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
                .ok_or_else(|| ChangeError::Conflict(format!("AI config `{ai_config}` has no version list")))?;
            if let Some(n) = number {
                if versions.iter().any(|v| v.get("version").and_then(Value::as_u64) == Some(n)) {
                    return Err(ChangeError::Conflict(format!(
                        "AI config `{ai_config}` already has version {n}: versions never change once published"
                    )));
                }
            }
            versions.push(version.clone());
        }
        Change::ReplaceFlag { flag, value } => {
            flag_mut(docs, flag)?;
            docs.flags.insert(flag.clone(), value.clone());
        }
        Change::GuardState { flag, state, restart } => {
            let f = flag_mut(docs, flag)?;
            let guard = f
                .get_mut("guard")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| ChangeError::NotFound(format!("flag `{flag}` has no guard")))?;
            guard.insert("state".into(), Value::String(state.to_string()));
            if *restart {
                guard.insert("step".into(), Value::from(0));
                guard.remove("step_started");
            }
        }
        Change::Rollback { .. } | Change::File { .. } => {}
    }
    Ok(())
}
