//! A flag's `guard:` section, compiled once per revision of the flag: the typed config,
//! each metric's test (its share of α, its margin, its direction) and the ramp step's start
//! time. A guard that does not compile is kept as its error, which the task reports (a log
//! line when it is compiled, the guard's status until the flag changes) instead of
//! checking it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::stats::{Direction, Margin, Test};
use crate::config::guard::{DirectionConfig, GuardConfig, MetricKind};

/// One guarded metric, ready to test.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: MetricKind,
    /// As written: `latency`, `feedback:thumbs_up`.
    pub name: Arc<str>,
    /// A feedback metric's key.
    pub signal: Option<String>,
    /// Whether `direction` was written (a feedback metric's default follows its definition).
    pub direction_set: bool,
    pub test: Test,
}

/// A guard ready to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub config: GuardConfig,
    pub metrics: Vec<Metric>,
    /// `config.step_started`, read.
    pub step_started: Option<SystemTime>,
}

/// Compile a flag's `guard:` value.
pub fn compile(guard: &Value) -> Result<Compiled, String> {
    let config: GuardConfig = serde_path_to_error::deserialize(guard).map_err(|e| match e.path().to_string() {
        root if root == "." => format!("guard: {}", e.inner()),
        path => format!("guard.{path}: {}", e.inner()),
    })?;
    let alpha = config.alpha / config.metrics.len().max(1) as f64;
    let metrics = config
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let margin = match &m.margin {
                None => Margin::Absolute(0.0),
                Some(margin) => margin.parse().map_err(|e| format!("guard.metrics[{i}].margin: {e}"))?,
            };
            let direction = match m.direction {
                None | Some(DirectionConfig::Increase) => Direction::Increase,
                Some(DirectionConfig::Decrease) => Direction::Decrease,
            };
            Ok(Metric {
                kind: m.metric.kind,
                name: m.metric.label().into(),
                signal: m.metric.signal.clone(),
                direction_set: m.direction.is_some(),
                test: Test { alpha, margin, tau: m.tau, direction },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let step_started = match config.step_started.as_deref() {
        None => None,
        Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
            format!("guard.step_started: `{t}` is not an RFC 3339 UTC time such as 2026-12-01T10:00:00Z ({e})")
        })?),
    };
    Ok(Compiled { config, metrics, step_started })
}

/// The compiled guards by flag, each for the flag revision it was compiled at.
#[derive(Debug, Default)]
pub struct Cache {
    guards: HashMap<String, (u64, Arc<Result<Compiled, String>>)>,
}

impl Cache {
    /// The guard of `flag` at `revision` (the revision that last changed the flag),
    /// compiled if this is a revision it has not seen; a guard that does not compile is
    /// logged here, so once per revision.
    pub fn get(&mut self, flag: &str, revision: u64, guard: &Value) -> Arc<Result<Compiled, String>> {
        if let Some((at, compiled)) = self.guards.get(flag) {
            if *at == revision {
                return Arc::clone(compiled);
            }
        }
        let compiled = Arc::new(compile(guard));
        if let Err(error) = compiled.as_ref() {
            tracing::error!(flag, revision, %error, "this flag's guard does not compile: it is not checked until the flag changes");
        }
        self.guards.insert(flag.to_string(), (revision, Arc::clone(&compiled)));
        compiled
    }

    /// Forget the flags not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.guards.retain(|flag, _| keep(flag));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guard(extra: Value) -> Value {
        let mut g = json!({"control": "a", "treatment": "b", "metrics": [{"metric": "error_rate"}, {"metric": "latency", "margin": "15%"}]});
        if let (Some(g), Some(extra)) = (g.as_object_mut(), extra.as_object()) {
            g.extend(extra.clone());
        }
        g
    }

    #[test]
    fn compiles_the_tests_of_each_metric() {
        let c = compile(&guard(json!({"alpha": 0.1, "step_started": "2026-12-01T10:00:00.000Z"}))).unwrap();
        assert_eq!(c.metrics.len(), 2);
        assert_eq!(c.metrics[0].test.margin, Margin::Absolute(0.0));
        assert_eq!(c.metrics[1].test.margin, Margin::Relative(0.15));
        assert!((c.metrics[1].test.alpha - 0.05).abs() < 1e-12);
        assert_eq!(c.step_started, Some(humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()));
    }

    #[test]
    fn errors_name_the_field() {
        let e = compile(&guard(json!({"metrics": [{"metric": "happiness"}]}))).unwrap_err();
        assert!(e.starts_with("guard.metrics[0].metric: unknown metric `happiness`"), "{e}");
        let e = compile(&guard(json!({"metrics": [{"metric": "latency", "margin": "lots"}]}))).unwrap_err();
        assert!(e.starts_with("guard.metrics[0].margin: `lots`"), "{e}");
        let e = compile(&guard(json!({"step_started": "yesterday"}))).unwrap_err();
        assert!(e.starts_with("guard.step_started: `yesterday`"), "{e}");
    }

    #[test]
    fn compiles_once_per_revision() {
        let mut cache = Cache::default();
        let first = cache.get("f", 3, &guard(json!({})));
        // The same revision is not compiled again, whatever the value says.
        let again = cache.get("f", 3, &json!("not a guard"));
        assert!(Arc::ptr_eq(&first, &again));
        let next = cache.get("f", 4, &json!("not a guard"));
        assert!(next.is_err() && first.is_ok());
        cache.retain(|f| f != "f");
        assert!(cache.get("f", 3, &guard(json!({}))).is_ok());
    }
}
