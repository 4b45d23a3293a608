//! What an audit entry records of an object that existed before and after a change: for
//! flags the whole document before and after (small, and what a rollback installs); for
//! AI configs and segments a [`Patch`] of the fields that changed, so that adding the
//! 500th version records that version, not all 500 twice. Replaying the patches in order
//! from the revision that created an object gives its document at any revision.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The top-level fields of an object that changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// Fields with a new value (new fields included).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub set: Map<String, Value>,
    /// Fields removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
    /// List fields that grew at their end: the elements added.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub append: Map<String, Value>,
}

/// The patch from `before` to `after`, if both are objects.
pub fn diff(before: &Value, after: &Value) -> Option<Patch> {
    let (b, a) = (before.as_object()?, after.as_object()?);
    let mut patch = Patch::default();
    for (k, new) in a {
        match (b.get(k), new) {
            (Some(old), _) if old == new => {}
            (Some(Value::Array(old)), Value::Array(new_items))
                if new_items.len() > old.len() && new_items[..old.len()] == old[..] =>
            {
                patch.append.insert(k.clone(), Value::Array(new_items[old.len()..].to_vec()));
            }
            _ => {
                patch.set.insert(k.clone(), new.clone());
            }
        }
    }
    patch.unset = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    Some(patch)
}

/// Apply `patch` to `object`.
pub fn apply(object: &mut Value, patch: &Patch) -> Result<(), String> {
    let obj = object.as_object_mut().ok_or("a patch applies to an object only")?;
    for (k, v) in &patch.set {
        obj.insert(k.clone(), v.clone());
    }
    for k in &patch.unset {
        obj.remove(k);
    }
    for (k, added) in &patch.append {
        let items = obj.get_mut(k).and_then(Value::as_array_mut).ok_or_else(|| format!("`{k}` is not a list"))?;
        items.extend(added.as_array().into_iter().flatten().cloned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_takes_before_to_after() {
        let before = json!({"versions": [{"version": 1}], "description": "a", "gone": true});
        let after = json!({"versions": [{"version": 1}, {"version": 2}], "description": "b", "new": 1});
        let patch = diff(&before, &after).unwrap();
        assert_eq!(patch.append["versions"], json!([{"version": 2}]), "only the version added");
        assert_eq!(patch.unset, vec!["gone".to_string()]);
        let mut replayed = before.clone();
        apply(&mut replayed, &patch).unwrap();
        assert_eq!(replayed, after);
        // A list that changed other than at its end is set whole.
        let shuffled = json!({"versions": [{"version": 2}], "description": "b", "new": 1});
        let patch = diff(&after, &shuffled).unwrap();
        assert!(patch.append.is_empty());
        let mut replayed = after.clone();
        apply(&mut replayed, &patch).unwrap();
        assert_eq!(replayed, shuffled);
    }
}
