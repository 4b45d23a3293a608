//! What the guard writes into a flag's document: its traffic moved from one variation to
//! another (a rollback), and the treatment's share of the fallthrough (a ramp step).

use serde_json::{json, Value};

/// Send everything `from` gets to `to`: fixed variations and rollout weights, in rules and
/// in the fallthrough.
pub fn move_traffic(doc: &mut Value, from: &str, to: &str) {
    let fix = |serve: &mut Value| {
        if serve.get("variation").and_then(Value::as_str) == Some(from) {
            serve["variation"] = json!(to);
        }
        if let Some(ws) = serve.pointer_mut("/rollout/variations").and_then(Value::as_array_mut) {
            let moved: f64 = ws
                .iter_mut()
                .filter(|w| w.get("variation").and_then(Value::as_str) == Some(from))
                .map(|w| {
                    let p = w["percent"].as_f64().unwrap_or(0.0);
                    w["percent"] = json!(0.0);
                    p
                })
                .sum();
            match ws.iter_mut().find(|w| w.get("variation").and_then(Value::as_str) == Some(to)) {
                Some(w) => w["percent"] = json!(w["percent"].as_f64().unwrap_or(0.0) + moved),
                None if moved > 0.0 => ws.push(json!({"variation": to, "percent": moved})),
                None => {}
            }
        }
    };
    if let Some(ft) = doc.get_mut("fallthrough") {
        fix(ft);
    }
    if let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) {
        rules.iter_mut().for_each(fix);
    }
}

/// The fallthrough becomes `treatment` at `percent`, `control` the rest (keeping the
/// rollout's other settings).
pub fn set_share(doc: &mut Value, control: &str, treatment: &str, percent: f64) {
    let mut rollout = doc.pointer("/fallthrough/rollout").and_then(Value::as_object).cloned().unwrap_or_default();
    // Treatment first: raising its share keeps every context it already had.
    rollout.insert(
        "variations".into(),
        json!([{"variation": treatment, "percent": percent}, {"variation": control, "percent": 100.0 - percent}]),
    );
    doc["fallthrough"] = json!({ "rollout": rollout });
}
