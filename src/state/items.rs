//! The stored state as flat items — what a shared store keeps in one hash and what its
//! change log carries per revision: `doc/<kind>/<key>` (a document), `file/<kind>/<key>`
//! (the config file's document at its last load), `rev/<flag>` (the revision that last
//! changed the flag) and `iter/<flag>` (its experiment's iteration). A revision's change
//! is the items it set and the items it deleted ([`diff`]); applying it to the items of
//! the revision before gives the items of the revision ([`Items::apply`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::docs::KINDS;
use super::{Docs, Iteration, Kind, Stored};

/// The items of one revision: name → JSON text.
pub type Items = BTreeMap<String, String>;

/// What one revision changed, item by item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemChange {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub del: Vec<String>,
}

impl ItemChange {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.del.is_empty()
    }

    /// Apply to the items of the revision before.
    pub fn apply(&self, items: &mut Items) {
        for k in &self.del {
            items.remove(k);
        }
        for (k, v) in &self.set {
            items.insert(k.clone(), v.clone());
        }
    }
}

fn kind_of(name: &str) -> Option<Kind> {
    KINDS.into_iter().find(|k| k.as_str() == name)
}

/// The items of `stored` (its revision is kept apart, in the store's counter).
pub fn to_items(stored: &Stored) -> Items {
    let mut items = Items::new();
    let mut docs = |prefix: &str, docs: &Docs| {
        for kind in KINDS {
            for (key, value) in docs.of(kind) {
                items.insert(format!("{prefix}/{}/{key}", kind.as_str()), value.to_string());
            }
        }
    };
    docs("doc", &stored.docs);
    docs("file", &stored.file);
    for (flag, revision) in &stored.flag_revisions {
        items.insert(format!("rev/{flag}"), revision.to_string());
    }
    for (flag, iteration) in &stored.iterations {
        items.insert(format!("iter/{flag}"), serde_json::to_string(iteration).unwrap_or_default());
    }
    items
}

/// The stored state of `revision` from its items; an item that does not read is named.
pub fn from_items(revision: u64, items: &Items) -> Result<Stored, String> {
    let mut stored = Stored::empty();
    stored.revision = revision;
    for (name, text) in items {
        let bad = |why: &str| format!("item `{name}`: {why}");
        let mut parts = name.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(prefix @ ("doc" | "file")), Some(kind), Some(key)) => {
                let kind = kind_of(kind).ok_or_else(|| bad("unknown kind"))?;
                let value: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
                let docs = if prefix == "doc" { &mut stored.docs } else { &mut stored.file };
                docs.of_mut(kind).insert(key.to_string(), value);
            }
            (Some("rev"), Some(_), _) => {
                let flag = &name["rev/".len()..];
                let revision = text.parse().map_err(|_| bad("not a revision"))?;
                stored.flag_revisions.insert(flag.to_string(), revision);
            }
            (Some("iter"), Some(_), _) => {
                let flag = &name["iter/".len()..];
                let iteration: Iteration = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
                stored.iterations.insert(flag.to_string(), iteration);
            }
            _ => return Err(bad("unknown item")),
        }
    }
    Ok(stored)
}

/// What turns the items of `before` into those of `after`.
pub fn diff(before: &Items, after: &Items) -> ItemChange {
    let mut change = ItemChange::default();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            change.set.insert(k.clone(), v.clone());
        }
    }
    change.del = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    change
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn items_round_trip_and_diffs_apply() {
        let mut a = Stored::empty();
        a.revision = 4;
        a.docs.flags.insert("f/x".into(), json!({"on": true}));
        a.docs.ai_configs.insert("c".into(), json!({"versions": []}));
        a.file.segments.insert("s".into(), json!({"included": ["u"]}));
        a.flag_revisions.insert("f/x".into(), 3);
        a.iterations.insert("f/x".into(), Iteration { revision: 2, started: "2026-01-01T00:00:00Z".into() });
        let items = to_items(&a);
        let back = from_items(4, &items).unwrap();
        assert_eq!(to_items(&back), items);
        assert_eq!(back.docs, a.docs);
        assert_eq!(back.flag_revisions, a.flag_revisions);

        let mut b = back.clone();
        b.docs.flags.insert("f/x".into(), json!({"on": false}));
        b.docs.ai_configs.clear();
        b.flag_revisions.insert("f/x".into(), 5);
        let change = diff(&items, &to_items(&b));
        assert_eq!(change.del, vec!["doc/ai_config/c".to_string()]);
        assert_eq!(change.set.len(), 2);
        let mut applied = items.clone();
        change.apply(&mut applied);
        assert_eq!(applied, to_items(&b));
        assert!(diff(&applied, &applied).is_empty());
    }

    #[test]
    fn an_unknown_item_is_named() {
        let items = Items::from([("doc/widget/x".to_string(), "{}".to_string())]);
        assert!(from_items(1, &items).unwrap_err().contains("doc/widget/x"));
        let items = Items::from([("rev/f".to_string(), "x".to_string())]);
        assert!(from_items(1, &items).unwrap_err().contains("not a revision"));
    }
}
