//! The OpenAPI 3.1 document of the admin API, made from the router's own table
//! ([`super::ROUTES`]), so it lists exactly the endpoints that exist.

use serde_json::{json, Map, Value};

use super::{Op, ROUTES};

/// What the document says about one operation: summary, whether it writes, its body.
fn describe(op: Op) -> (&'static str, bool, Option<Value>) {
    let reason = json!({"type": "string", "minLength": 1, "maxLength": super::MAX_REASON, "description": "Why: it goes to the audit log."});
    let body = |props: Value, required: &[&str]| {
        let mut required: Vec<&str> = required.to_vec();
        required.push("reason");
        let mut props = props;
        props["reason"] = reason.clone();
        Some(json!({"type": "object", "properties": props, "required": required}))
    };
    let variation = json!({"type": "string", "description": "A variation name of the flag."});
    match op {
        Op::ListFlags => ("List flags with their state and the revision that last changed each.", false, None),
        Op::GetFlag => ("Get one flag with its definition.", false, None),
        Op::Timeseries => (
            "A flag's variations over a recent window, step by step, from sluice's own history (10 s steps for an hour, 5 min steps for 24 h; with the fleet store, the fleet's sums): requests, errors, latency quantiles, time to first token, tokens, cost and every quality metric.",
            false,
            None,
        ),
        Op::WhoAmI => ("The presented admin token's name and role.", false, None),
        Op::Evaluate => (
            "Evaluate a flag for a context against the running state; for a routing flag, the AI config version it picks with its messages rendered.",
            false,
            Some(json!({"type": "object", "properties": {
                "context": {"description": "A LaunchDarkly context object, or a user key."},
                "variables": {"type": "object", "description": "Template variables, as `x-sluice-variables` holds."},
                "client": {"type": "string", "description": "A client name: its context kind and template values, as when it calls."},
                "explain": {"type": "boolean", "description": "Add each step of the evaluation."}},
                "required": ["context"]})),
        ),
        Op::Kill => ("Turn a flag off: everyone gets its off variation.", true, body(json!({}), &[])),
        Op::Restore => ("Turn a flag back on.", true, body(json!({}), &[])),
        Op::Rollout => (
            "Make the fallthrough a percentage rollout.",
            true,
            body(json!({"weights": {"type": "array", "items": {"$ref": "#/components/schemas/Weight"}}}), &["weights"]),
        ),
        Op::Fallthrough => {
            ("Serve one variation to the fallthrough.", true, body(json!({"variation": variation}), &["variation"]))
        }
        Op::Rule => {
            ("Serve one variation to a rule (by its id).", true, body(json!({"variation": variation}), &["variation"]))
        }
        Op::PointVariation => (
            "Point a variation at an AI config version.",
            true,
            body(
                json!({"ai_config": {"type": "string"}, "version": {"type": "integer", "minimum": 1}}),
                &["ai_config", "version"],
            ),
        ),
        Op::Rollback => (
            "Put a flag back as it was at an earlier revision.",
            true,
            body(json!({"revision": {"type": "integer", "minimum": 1}}), &["revision"]),
        ),
        Op::ListAiConfigs => ("List AI configs and their versions.", false, None),
        Op::AddVersion => (
            "Add a version to an AI config (a published version never changes).",
            true,
            body(
                json!({"version": {"type": "object", "description": "A version as in the config file: version, provider, model, parameters, messages, messages_mode, enabled; an agent: mode, instructions, tools."}}),
                &["version"],
            ),
        ),
        Op::Audit => ("Read the audit log, newest first.", false, None),
        Op::Guards => (
            "Guards per flag and metric: samples per arm, estimates, the interval, Λ, the decision and the ramp step.",
            false,
            None,
        ),
        Op::GuardPause => {
            ("Pause a flag's guard: no ramp steps and no trips until resumed.", true, body(json!({}), &[]))
        }
        Op::GuardResume => ("Resume a paused guard where its ramp was.", true, body(json!({}), &[])),
        Op::GuardDismiss => (
            "Dismiss a trip judged a false alarm: the traffic the rollback moved goes back and the guard is armed again (its window restarts).",
            true,
            body(json!({}), &[]),
        ),
        Op::GuardRearm => {
            ("Re-arm a guard after a rollback; a ramp starts again from its first step.", true, body(json!({}), &[]))
        }
        Op::Experiments => ("Every experiment's results in its current iteration.", false, None),
        Op::Experiment => (
            "An experiment's results: per arm and metric n, mean and interval, lift, chance to beat control, expected loss; the sample-ratio checks and the recommendation.",
            false,
            None,
        ),
        Op::ExperimentShip => (
            "Ship an arm: it takes the fallthrough and every rule, and the experiment stops (one audited revision).",
            true,
            body(json!({"variation": variation}), &["variation"]),
        ),
        Op::ExperimentStop => ("Stop an experiment; the allocation stays.", true, body(json!({}), &[])),
        Op::Status => ("The current revision and how the last reload of the config file went.", false, None),
        Op::OpenApi => ("This document.", false, None),
    }
}

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, template, op) in ROUTES {
        let (summary, writes, body) = describe(*op);
        let params: Vec<Value> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "operationId": format!("{op:?}"),
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": if writes {
                    json!({"$ref": "#/components/schemas/Applied"})
                } else {
                    json!({"type": "object"})
                }}}},
                "401": error("No or unknown admin token."),
                "404": error("Unknown flag, AI config, rule or revision."),
            },
        });
        if *op == Op::OpenApi {
            operation["security"] = json!([]);
        }
        if *op == Op::Timeseries {
            let q = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}});
            if let Some(p) = operation["parameters"].as_array_mut() {
                p.push(q(
                    "window",
                    "How far back: seconds or a duration such as `5m`, `1h`, `24h` (default 1h, at most 24h).",
                ));
                p.push(q("step", "Seconds (or a duration) per point, rounded up to the resolution read: 10 s up to a 1 h window, 5 min beyond (default: the resolution's own, or about 60 points)."));
            }
        }
        if *op == Op::Audit {
            let q = |name: &str, description: &str, format: Option<&str>| {
                let mut schema =
                    json!({"type": if name == "limit" || name == "before" { "integer" } else { "string" }});
                if let Some(f) = format {
                    schema["format"] = json!(f);
                }
                json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
            };
            operation["parameters"] = json!([
                q("flag", "Only revisions that changed this flag.", None),
                q("since", "Only revisions at or after this time (RFC 3339).", Some("date-time")),
                q("until", "Only revisions at or before this time (RFC 3339).", Some("date-time")),
                q("before", "Only revisions before this one: the `next` of the previous page.", None),
                q("limit", "At most this many entries (default 100, at most 1000).", None),
            ]);
        }
        if writes {
            let responses = &mut operation["responses"];
            responses["403"] = error("The token may only read.");
            responses["409"] =
                error("The change conflicts with the state (nothing would change, the version exists...).");
            responses["412"] = error("`If-Match` names a revision that is not the current one.");
            responses["422"] =
                error("The change would make the configuration invalid; `problems` lists each field path.");
            if let Some(obj) = operation["parameters"].as_array_mut() {
                obj.push(json!({"name": "If-Match", "in": "header", "required": false,
                    "description": "The revision the change was made against.", "schema": {"type": "string"}}));
                obj.push(json!({"name": "dry_run", "in": "query", "required": false,
                    "description": "`true`: check the change (If-Match, validation, the snapshot built) and answer the objects it would change, before and after, storing nothing.",
                    "schema": {"type": "boolean"}}));
            }
        }
        if let Some(schema) = body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let entry = paths.entry(format!("/admin/v1{template}")).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sluice admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runtime changes to flags and AI configs. Every change is validated, given a revision, audited and persisted before it takes effect."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Applied": {"type": "object", "properties": {
                    "revision": {"type": "integer"}, "changes": {"type": "integer"}}, "required": ["revision", "changes"]},
                "Weight": {"type": "object", "properties": {
                    "variation": {"type": "string"}, "percent": {"type": "number", "minimum": 0, "maximum": 100}},
                    "required": ["variation", "percent"]},
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "problems": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}}},
                    "required": ["code", "message"]}}, "required": ["error"]}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! The document against the contract's types ([`super::super::api`]): each request
    //! body's properties are its type's fields, `required` lists the fields the type cannot
    //! do without (and `reason`, which the handler requires), and the shared schemas are
    //! the answers' fields.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeSet;

    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::{json, Value};

    use super::super::api;
    use super::*;

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    /// Checks `op`'s request body schema against `sample` (every optional field set).
    fn check<T: Serialize + DeserializeOwned>(op: Op, sample: T) {
        let (_, _, schema) = describe(op);
        let schema = schema.unwrap_or_else(|| panic!("{op:?} documents no body"));
        let sample = serde_json::to_value(&sample).unwrap();
        assert_eq!(keys(&schema["properties"]), keys(&sample), "{op:?}: documented properties vs the type's fields");
        let documented: BTreeSet<String> =
            schema["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
        for field in keys(&sample) {
            let mut without = sample.clone();
            without.as_object_mut().unwrap().remove(&field);
            let type_requires = serde_json::from_value::<T>(without).is_err();
            let handler_requires = field == "reason" || (op == Op::Evaluate && field == "context");
            assert_eq!(
                documented.contains(&field),
                type_requires || handler_requires,
                "{op:?}.{field}: documented as required vs required by the type or the handler"
            );
        }
    }

    #[test]
    fn every_request_body_is_documented_as_its_type() {
        let reason = || "why".to_string();
        let mut checked = BTreeSet::new();
        for op in [
            Op::Kill,
            Op::Restore,
            Op::GuardPause,
            Op::GuardResume,
            Op::GuardRearm,
            Op::GuardDismiss,
            Op::ExperimentStop,
        ] {
            check(op, api::ReasonBody { reason: reason() });
            checked.insert(op);
        }
        let weight = api::Weight { variation: "a".into(), percent: 100.0 };
        check(Op::Rollout, api::RolloutBody { weights: vec![weight.clone()], reason: reason() });
        for op in [Op::Fallthrough, Op::Rule, Op::ExperimentShip] {
            check(op, api::VariationBody { variation: "a".into(), reason: reason() });
            checked.insert(op);
        }
        check(Op::PointVariation, api::PointBody { ai_config: "c".into(), version: 2, reason: reason() });
        check(Op::Rollback, api::RollbackBody { revision: 3, reason: reason() });
        check(Op::AddVersion, api::AddVersionBody { version: json!({"version": 2}), reason: reason() });
        check(
            Op::Evaluate,
            api::EvaluateBody {
                context: json!("u"),
                variables: Some(json!({})),
                client: Some("app".into()),
                explain: true,
            },
        );
        checked.extend([Op::Rollout, Op::PointVariation, Op::Rollback, Op::AddVersion, Op::Evaluate]);
        // Every operation that takes a body is checked above.
        let with_body: BTreeSet<Op> =
            ROUTES.iter().map(|(_, _, op)| *op).filter(|op| describe(*op).2.is_some()).collect();
        assert_eq!(with_body, checked);

        let components = &document()["components"]["schemas"];
        assert_eq!(keys(&components["Weight"]["properties"]), keys(&serde_json::to_value(&weight).unwrap()));
    }

    #[test]
    fn the_shared_answers_are_documented_as_their_types() {
        let components = &document()["components"]["schemas"];
        let applied = serde_json::to_value(api::Applied { revision: 1, changes: 1 }).unwrap();
        assert_eq!(keys(&components["Applied"]["properties"]), keys(&applied));
        let error = api::ErrorAnswer {
            error: api::ErrorDetail {
                code: "invalid".into(),
                message: "m".into(),
                problems: vec![api::Problem::new("p", "m")],
            },
        };
        let error = serde_json::to_value(error).unwrap();
        assert_eq!(keys(&components["Error"]["properties"]), keys(&error));
        let detail = &components["Error"]["properties"]["error"];
        assert_eq!(keys(&detail["properties"]), keys(&error["error"]));
        assert_eq!(
            keys(&detail["properties"]["problems"]["items"]["properties"]),
            keys(&error["error"]["problems"][0])
        );
    }
}
