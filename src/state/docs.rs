//! What the state holds and the audit log records: the documents by kind, the stored
//! state, and each revision's entry with the objects it changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{delta, Patch};

/// The runtime-editable documents, as JSON in the config file's own format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Docs {
    #[serde(default)]
    pub flags: BTreeMap<String, Value>,
    #[serde(default)]
    pub segments: BTreeMap<String, Value>,
    #[serde(default)]
    pub ai_configs: BTreeMap<String, Value>,
}

/// The kind of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Flag,
    Segment,
    AiConfig,
}

pub(super) const KINDS: [Kind; 3] = [Kind::Flag, Kind::Segment, Kind::AiConfig];

impl Kind {
    /// Its name, as the audit log and the admin API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flag => "flag",
            Kind::Segment => "segment",
            Kind::AiConfig => "ai_config",
        }
    }

    /// The config section.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Flag => "flags",
            Kind::Segment => "segments",
            Kind::AiConfig => "ai_configs",
        }
    }
}

impl Docs {
    /// The documents of the config sections in `value`.
    pub fn from_config_value(value: &Value) -> Docs {
        let section = |name: &str| -> BTreeMap<String, Value> {
            value.get(name).and_then(Value::as_object).map(|m| m.clone().into_iter().collect()).unwrap_or_default()
        };
        Docs { flags: section("flags"), segments: section("segments"), ai_configs: section("ai_configs") }
    }

    pub fn of(&self, kind: Kind) -> &BTreeMap<String, Value> {
        match kind {
            Kind::Flag => &self.flags,
            Kind::Segment => &self.segments,
            Kind::AiConfig => &self.ai_configs,
        }
    }

    pub(super) fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Value> {
        match kind {
            Kind::Flag => &mut self.flags,
            Kind::Segment => &mut self.segments,
            Kind::AiConfig => &mut self.ai_configs,
        }
    }

    /// What differs from `before`, object by object.
    pub(super) fn changes_since(&self, before: &Docs) -> Vec<ObjectChange> {
        let mut out = Vec::new();
        for kind in KINDS {
            let (old, new) = (before.of(kind), self.of(kind));
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let (b, a) = (old.get(key), new.get(key));
                if b != a {
                    out.push(ObjectChange::new(kind, key, b, a));
                }
            }
        }
        out
    }
}

/// What the store keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub revision: u64,
    pub docs: Docs,
    /// The config file's documents at its last load (to tell what a reload changes).
    pub file: Docs,
    /// The revision that last changed each flag.
    #[serde(default)]
    pub flag_revisions: BTreeMap<String, u64>,
    /// Each running experiment's iteration: the revision that started it (the experiment
    /// appeared or was restarted, or the flag's allocation changed) and when. Kept beside
    /// the documents, never in them, so that a document loaded from the file stays the
    /// file's.
    #[serde(default)]
    pub iterations: BTreeMap<String, Iteration>,
}

/// Where an experiment's iteration started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iteration {
    pub revision: u64,
    /// RFC 3339, UTC.
    pub started: String,
}

impl Stored {
    /// An empty store's state.
    pub fn empty() -> Stored {
        Stored {
            revision: 0,
            docs: Docs::default(),
            file: Docs::default(),
            flag_revisions: BTreeMap::new(),
            iterations: BTreeMap::new(),
        }
    }

    /// Flag `key`'s document with its experiment's iteration filled in (what snapshots and
    /// experiment results read).
    pub fn flag_with_iteration(&self, key: &str) -> Option<Value> {
        let mut doc = self.docs.flags.get(key)?.clone();
        with_iteration(&mut doc, self.iterations.get(key));
        Some(doc)
    }
}

/// Write an iteration into a flag document's experiment (the number is the revision that
/// started it, at most `u32::MAX`).
pub fn with_iteration(doc: &mut Value, iteration: Option<&Iteration>) {
    if let (Some(e), Some(i)) = (doc.get_mut("experiment").and_then(Value::as_object_mut), iteration) {
        e.insert("iteration".into(), Value::from(u32::try_from(i.revision).unwrap_or(u32::MAX)));
        e.insert("iteration_started".into(), Value::String(i.started.clone()));
    }
}

/// One revision in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub revision: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub actor: String,
    pub reason: String,
    pub changes: Vec<ObjectChange>,
    /// A load of the config file: the objects whose text in the file changed (each now
    /// has the file's value). With `changes`, what rebuilds the state from the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_objects: Option<Vec<ObjectKey>>,
    /// This revision's line was damaged and moved to `audit.jsonl.bak` by `sluice state
    /// repair`, which left this entry (no changes) in its place: what the revision changed
    /// is not in the log, so no rollback or rebuild goes through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

/// What a reader of the log can decide from without the documents of an entry: its
/// revision, time, which objects it changed and whether it was dropped. Parsing a line
/// as this skips the documents without building them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EntryHead {
    pub revision: u64,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub changes: Vec<ObjectKey>,
    #[serde(default)]
    pub dropped: bool,
}

impl From<&AuditEntry> for EntryHead {
    fn from(e: &AuditEntry) -> Self {
        EntryHead {
            revision: e.revision,
            time: e.time.clone(),
            changes: e.changes.iter().map(|c| ObjectKey { kind: c.kind, key: c.key.clone() }).collect(),
            dropped: e.dropped,
        }
    }
}

/// Which object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub key: String,
}

/// One object's change within a revision: the document before and after it (`None`: the
/// object does not exist), or — for an AI config or segment that exists on both sides —
/// only a [`Patch`] of its fields that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectChange {
    pub kind: Kind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}

impl ObjectChange {
    pub(super) fn new(kind: Kind, key: &str, before: Option<&Value>, after: Option<&Value>) -> ObjectChange {
        let patch = match (kind, before, after) {
            (Kind::Flag, _, _) => None,
            (_, Some(b), Some(a)) => delta::diff(b, a),
            _ => None,
        };
        match patch {
            Some(patch) => ObjectChange { kind, key: key.to_string(), before: None, after: None, patch: Some(patch) },
            None => {
                ObjectChange { kind, key: key.to_string(), before: before.cloned(), after: after.cloned(), patch: None }
            }
        }
    }
}
