#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The files in `deploy/`: the alert rules pass promtool (syntax and their unit tests), the
//! Grafana dashboard is well formed and its queries parse, and every metric the dashboard and
//! the rules use is one a running gateway exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// Every metric the dashboard is expected to show.
const DASHBOARD_METRICS: [&str; 19] = [
    "sluice_requests_total",
    "sluice_request_duration_seconds",
    "sluice_time_to_first_token_seconds",
    "sluice_gateway_overhead_seconds",
    "sluice_tokens_total",
    "sluice_request_tokens",
    "sluice_rollout_weight",
    "sluice_fallbacks_total",
    "sluice_guard_state",
    "sluice_guard_trips_total",
    "sluice_config_revision",
    "sluice_judge_score",
    "sluice_guardrail_checks_total",
    "sluice_judge_evaluations_total",
    "sluice_judge_skipped_total",
    "sluice_judge_queue_depth",
    "sluice_judge_tokens_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Run promtool with `args`; `None` (after a visible SKIPPED line) when it is not
/// installed, unless `SLUICE_REQUIRE_PROMTOOL=1`.
fn promtool(test: &str, args: &[&str]) -> Option<Output> {
    if !have(&PROMTOOL, test) {
        return None;
    }
    match Command::new("promtool").args(args).output() {
        Ok(out) => Some(out),
        Err(e) => panic!("promtool cannot run: {e}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = deploy("prometheus/alerts.yml");
    let Some(out) = promtool("alert_rules_pass_promtool", &["check", "rules", rules.to_str().unwrap()]) else {
        return;
    };
    assert_success("promtool check rules", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{} rules found", alert_rules().len())), "{stdout}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let tests = deploy("prometheus/alerts_test.yml");
    let Some(out) = promtool("alert_rules_pass_their_unit_tests", &["test", "rules", tests.to_str().unwrap()]) else {
        return;
    };
    assert_success("promtool test rules", &out);
}

/// The rules of `alerts.yml`, after checking the shape every rule must have.
fn alert_rules() -> Vec<Yaml> {
    let text = read(&deploy("prometheus/alerts.yml"));
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let groups = docs[0]["groups"].as_vec().expect("groups");
    assert_eq!(groups.len(), 1, "one group");
    assert_eq!(groups[0]["name"].as_str(), Some("sluice"));
    let rules = groups[0]["rules"].as_vec().expect("rules").clone();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_else(|| panic!("every rule is an alert: {rule:?}"));
        assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: expr");
        assert!(rule["for"].as_str().is_some(), "{name}: for");
        assert!(
            matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning" | "info")),
            "{name}: labels.severity"
        );
        for key in ["summary", "description"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{name}: annotations.{key}");
        }
    }
    rules
}

#[test]
fn every_alert_is_in_the_deploy_readme() {
    let names: Vec<String> = alert_rules().iter().map(|r| r["alert"].as_str().unwrap().to_string()).collect();
    let expected = [
        "SluiceVariationErrorRateHigh",
        "SluiceVariationErrorRateAboveControl",
        "SluiceLatencyP95High",
        "SluiceTTFTP95High",
        "SluiceGatewayOverheadHigh",
        "SluiceGuardTripped",
        "SluiceNoTraffic",
        "SluiceDown",
        "SluiceConfigStale",
    ];
    assert_eq!(names, expected);
    let readme = read(&deploy("README.md"));
    for name in &names {
        assert!(readme.contains(&format!("`{name}`")), "deploy/README.md explains {name}");
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/sluice.json"))).expect("the dashboard is JSON")
}

/// Every panel, rows and the panels inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets and annotation queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let targets = panels(dashboard).into_iter().flat_map(|p| p["targets"].as_array().into_iter().flatten());
    let annotations = dashboard["annotations"]["list"].as_array().into_iter().flatten();
    targets.chain(annotations).filter_map(|t| t["expr"].as_str()).map(str::to_string).collect()
}

/// The metric names an expression uses (`sluice_*` and `process_*`), each with whether it
/// was used through a histogram series (`_bucket`, `_sum`, `_count`).
fn metric_names(expr: &str) -> Vec<(String, bool)> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("sluice_") || word.starts_with("process_"))
        .map(|word| match ["_bucket", "_sum", "_count"].iter().find_map(|suffix| word.strip_suffix(suffix)) {
            Some(base) => (base.to_string(), true),
            None => (word.to_string(), false),
        })
        .collect()
}

#[tokio::test]
async fn dashboard_is_valid_and_uses_only_exported_metrics() {
    let dash = dashboard();
    assert_eq!(dash["schemaVersion"], 39);
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()) && dash["title"].as_str().is_some());

    // Template variables: the data source, then flag and variation.
    let vars: BTreeMap<&str, &Value> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    assert_eq!(
        (&vars["datasource"]["type"], &vars["datasource"]["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let query = |v: &Value| v["query"].as_str().or_else(|| v["query"]["query"].as_str()).unwrap_or("").to_string();
    assert_eq!(query(vars["flag"]), "label_values(sluice_requests_total, flag)");
    assert!(query(vars["variation"]).starts_with("label_values(sluice_requests_total"));
    assert!(query(vars["variation"]).ends_with(", variation)"));
    assert_eq!((&vars["variation"]["multi"], &vars["variation"]["includeAll"]), (&true.into(), &true.into()));

    // Panels: unique ids, titles, the data source variable, and a query each.
    let mut ids = BTreeSet::new();
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "every panel has a title: {panel}");
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{title}: id"));
        assert!(ids.insert(id), "{title}: id {id} is unique");
        assert!(panel["gridPos"]["w"].as_u64().is_some() && panel["gridPos"]["h"].as_u64().is_some(), "{title}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: at least one query");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title}: expr of {t}");
            assert!(t["refId"].as_str().is_some(), "{title}: refId");
        }
    }

    // The guard state panel names its states.
    let guard = panels(&dash)
        .into_iter()
        .find(|p| p["targets"][0]["expr"].as_str().is_some_and(|e| e.contains("sluice_guard_state")))
        .expect("a guard state panel");
    let mapping = &guard["fieldConfig"]["defaults"]["mappings"][0]["options"];
    for (value, text) in [("0", "healthy"), ("1", "insufficient data"), ("2", "tripped"), ("3", "rolled back")] {
        assert!(mapping[value]["text"].as_str().is_some_and(|t| t.contains(text)), "guard state {value}: {text}");
    }

    // The metrics used, by the dashboard and by the alert rules.
    let exprs = dashboard_exprs(&dash);
    // A variation re-pointed at another version draws a new line: per-variation series of
    // the request metrics are split by AI config version, never blended.
    let route = [
        "sluice_requests_total",
        "sluice_request_duration",
        "sluice_time_to_first_token",
        "sluice_gateway_overhead",
        "sluice_tokens_total",
        "sluice_request_tokens",
    ];
    for e in exprs.iter().filter(|e| route.iter().any(|m| e.contains(m))) {
        for by in e.match_indices("by (").map(|(i, _)| &e[i..]) {
            let labels = &by[..by.find(')').unwrap()];
            if labels.contains("variation") {
                assert!(labels.contains("ai_config") && labels.contains("version"), "split by version: {e}");
            }
        }
    }
    let used_by_dashboard: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).map(|(n, _)| n).collect();
    for name in DASHBOARD_METRICS {
        assert!(used_by_dashboard.contains(name), "the dashboard shows {name}");
    }
    let rule_exprs = alert_rules().iter().map(|r| r["expr"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let used: BTreeSet<(String, bool)> = exprs.iter().chain(&rule_exprs).flat_map(|e| metric_names(e)).collect();

    let exported = exported_families().await;
    for (name, through_histogram) in &used {
        // The process collector exists on Linux only.
        if name.starts_with("process_") && !cfg!(target_os = "linux") {
            continue;
        }
        let kind = exported.get(name).unwrap_or_else(|| {
            panic!("{name} is used by deploy/ but not exported; the exported families are {:?}", exported.keys())
        });
        if *through_histogram {
            assert_eq!(kind, "histogram", "{name} is used as a histogram");
        }
    }
}

/// The metric families a gateway exports (`# TYPE` lines of `/metrics`): name → type. A
/// routing flag with a fallback variation creates every labelled family when the snapshot
/// is built; a streaming and a non-streaming request make sure; its guard's first check
/// creates the guard families.
async fn exported_families() -> BTreeMap<String, String> {
    let flag = r#"
ai_configs:
  bot:
    versions:
      - {version: 1, provider: mock, model: m-1}
      - {version: 2, provider: mock, model: m-2}
flags:
  bot:
    fallback_variation: control
    variations:
      - {name: control, ai_config: bot, version: 1}
      - {name: treatment, ai_config: bot, version: 2}
    fallthrough:
      rollout:
        variations:
          - {variation: control, percent: 90}
          - {variation: treatment, percent: 10}
    guard:
      control: control
      treatment: treatment
      metrics: [{metric: error_rate}]
      check_interval: 50ms
    judges:
      q: {sample_rate: 1}
    guardrails:
      short: {}
judges:
  q: {provider: mock, model: m-1, rubric: "Is it helpful?"}
guardrails:
  short: {max_words: 100}
"#;
    // The `up` provider is never called.
    let gw = gateway(&config("http://127.0.0.1:9/v1", flag)).await;
    for extra in ["", r#","stream":true"#] {
        let answer = send(gw.data_addr, chat("bot", &[], extra)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let text = eventually(std::time::Duration::from_secs(30), async || {
        let text = send(gw.admin_addr, get("/metrics", None)).await.text();
        if text.contains("# TYPE sluice_guard_trips_total") {
            Ok(text)
        } else {
            Err(format!("no sluice_guard_trips_total yet:\n{text}"))
        }
    })
    .await;
    gw.shutdown().await;
    // The fleet store's gauges, exported only with `state.store: redis`.
    let fleet = sluice::metrics::Metrics::new().unwrap();
    fleet.enable_fleet();
    let fleet = fleet.render();
    assert!(fleet.contains("# TYPE sluice_config_staleness_seconds gauge"), "{fleet}");
    [text, fleet]
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

#[test]
fn dashboard_queries_parse_as_promql() {
    // Grafana's variables replaced by values Prometheus accepts, each query as a recording
    // rule: `promtool check rules` parses them all.
    let rules: Vec<Value> = dashboard_exprs(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr.replace("$__rate_interval", "5m").replace("$flag", ".*").replace("$variation", ".*");
            assert!(!expr.contains('$'), "an unknown Grafana variable in {expr}");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    // JSON is YAML.
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = temp_dir("dashboard-queries");
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    let out = promtool("dashboard_queries_parse_as_promql", &["check", "rules", path.to_str().unwrap()]);
    if let Some(out) = out {
        assert_success("promtool check rules (the dashboard's queries)", &out);
    }
}

/// The Kubernetes example: `sluice check` accepts its config (with the secrets its
/// Deployment passes set), three replicas are probed on `/readyz`, and Redis runs with AOF
/// and without eviction.
#[test]
fn the_kubernetes_example_is_a_fleet_sluice_check_accepts() {
    let config = deploy("kubernetes/sluice.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&config)
        .env("SLUICE_ADMIN_TOKEN", "an-admin-token-of-thirty-two-chars")
        .env("SLUICE_APP_KEY", "sk-an-app-key")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .output()
        .unwrap();
    assert_success("sluice check deploy/kubernetes/sluice.yaml", &out);
    let docs = |name: &str| YamlLoader::load_from_str(&read(&deploy(&format!("kubernetes/{name}")))).unwrap();
    let deployment = docs("deployment.yaml");
    let d = deployment.iter().find(|d| d["kind"].as_str() == Some("Deployment")).expect("a Deployment");
    assert_eq!(d["spec"]["replicas"].as_i64(), Some(3));
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(container["readinessProbe"]["httpGet"]["port"].as_str(), Some("admin"));
    let redis = docs("redis.yaml");
    let set = redis.iter().find(|d| d["kind"].as_str() == Some("StatefulSet")).expect("a StatefulSet");
    let args: Vec<&str> = set["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for pair in [["--appendonly", "yes"], ["--maxmemory-policy", "noeviction"]] {
        assert!(args.windows(2).any(|w| w == pair), "redis runs with {pair:?}: {args:?}");
    }
    let kustomization = docs("kustomization.yaml");
    let files = &kustomization[0]["configMapGenerator"][0]["files"];
    assert_eq!(files[0].as_str(), Some("sluice.yaml"), "the ConfigMap is the config sluice check accepted");
}
