//! `sluice ctl`'s readable output: a table or a few lines per answer of the admin API,
//! each read as its type in `admin::api`.

use serde_json::Value;

use super::{typed, CtlCommand, ExperimentCommand};
use crate::admin::api;

/// A table: columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An evaluation: the steps (with --explain), the variation and why, the version and its
/// rendered messages.
fn evaluation(v: &api::Evaluation) -> String {
    let mut out = String::new();
    for line in v.explain.iter().flatten() {
        out.push_str(&format!("  {line}\n"));
    }
    let why = ["kind", "ruleId", "errorKind"]
        .into_iter()
        .filter_map(|k| v.reason.get(k).filter(|x| !x.is_null()))
        .map(text)
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(&format!("revision    {}\n", v.revision));
    out.push_str(&format!("variation   {} ({why})\n", v.variation.as_deref().unwrap_or("-")));
    let Some(a) = &v.ai_config else {
        out.push_str(&format!("value       {}\n", v.value));
        return out;
    };
    let state = if a.enabled { "" } else { " (disabled)" };
    out.push_str(&format!("ai config   {}@{}{state}\n", a.key, a.version));
    out.push_str(&format!("provider    {}, model {}\n", a.provider, a.model));
    if !a.parameters.is_empty() {
        out.push_str(&format!("parameters  {}\n", Value::Object(a.parameters.clone())));
    }
    let mode = match a.messages_mode.as_str() {
        "replace" => "in place of the app's system messages",
        _ => "before the app's messages",
    };
    out.push_str(&format!("messages    ({mode})\n"));
    for m in &a.messages {
        out.push_str(&format!("  [{}] {}\n", text(&m.role), m.content));
    }
    out
}

/// A percentage as people write it: `5`, `20`, `12.5` (never `20.0`).
pub(super) fn percent(p: f64) -> String {
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The warning for a change to a flag that is off: it serves its off variation to
/// everyone, whatever the change says, until it is restored.
pub(super) fn off_warning(flag: &str, view: &api::FlagView) -> Option<String> {
    (!view.on).then(|| {
        format!(
            "warning: the flag `{flag}` is off (killed): it serves its off variation to everyone until `sluice ctl restore {flag}`; this change takes effect then"
        )
    })
}

/// The fallthrough in a few words: `candidate` or `control 95% / candidate 5%`.
pub(super) fn fallthrough(ft: &Value) -> String {
    if let Some(v) = ft["variation"].as_str() {
        return v.to_string();
    }
    let weights: Option<Vec<api::Weight>> = serde_json::from_value(ft["rollout"]["variations"].clone()).ok();
    match weights {
        Some(ws) => {
            ws.iter().map(|w| format!("{} {}%", w.variation, percent(w.percent))).collect::<Vec<_>>().join(" / ")
        }
        None => "-".into(),
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn or_dash<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or("-".to_string(), |x| x.to_string())
}

pub(super) fn render(command: &CtlCommand, v: Value) -> Result<String, String> {
    Ok(match command {
        CtlCommand::Flags => {
            let list: api::FlagList = typed(v)?;
            let rows: Vec<Vec<String>> = list
                .flags
                .iter()
                .map(|f| {
                    let variations = f
                        .variations
                        .iter()
                        .map(|x| {
                            let name = x.name.as_deref().unwrap_or("-");
                            match (&x.ai_config, x.version) {
                                (Some(a), Some(n)) => format!("{name}={a}@{n}"),
                                _ => name.to_string(),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        f.key.clone(),
                        on_off(f.on).into(),
                        or_dash(f.revision),
                        fallthrough(&f.fallthrough),
                        variations,
                    ]
                })
                .collect();
            format!(
                "revision {}\n{}",
                list.revision,
                table(&["FLAG", "STATE", "CHANGED", "FALLTHROUGH", "VARIATIONS"], &rows)
            )
        }
        CtlCommand::Flag { .. } => {
            let f = typed::<api::FlagAnswer>(v)?.flag;
            format!(
                "flag        {}\nstate       {}\nchanged at  revision {}\nfallthrough {}\n\n{}\n",
                f.key,
                on_off(f.on),
                or_dash(f.revision),
                fallthrough(&f.fallthrough),
                serde_json::to_string_pretty(&f.definition).unwrap_or_default()
            )
        }
        CtlCommand::Versions { command: None } => {
            let list: api::AiConfigList = typed(v)?;
            let mut rows = Vec::new();
            for (key, config) in &list.ai_configs {
                for version in config["versions"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        key.clone(),
                        text(&version["version"]),
                        text(&version["provider"]),
                        text(&version["model"]),
                        if version["enabled"] == Value::Bool(false) { "disabled".into() } else { "enabled".into() },
                    ]);
                }
            }
            table(&["AI CONFIG", "VERSION", "PROVIDER", "MODEL", "STATE"], &rows)
        }
        CtlCommand::Audit { .. } => {
            let page: api::AuditPageAnswer = typed(v)?;
            let rows: Vec<Vec<String>> = page
                .entries
                .iter()
                .map(|e| {
                    let what = e
                        .changes
                        .iter()
                        .map(|c| format!("{} {}", c.kind.as_str(), c.key))
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![e.revision.to_string(), e.time.clone(), e.actor.clone(), e.reason.clone(), what]
                })
                .collect();
            let mut out = table(&["REVISION", "TIME", "ACTOR", "REASON", "CHANGED"], &rows);
            if let Some(next) = page.next {
                out.push_str(&format!("(more: --before {next})\n"));
            }
            out
        }
        CtlCommand::Eval { .. } => evaluation(&typed(v)?),
        CtlCommand::Status => {
            let status: api::StatusAnswer = typed(v)?;
            let r = &status.reload;
            let reload = match &r.time {
                None => "not reloaded since start".to_string(),
                Some(t) if r.ok => format!("ok at {t}"),
                Some(t) => format!("REFUSED at {t}: {}", r.error.as_deref().unwrap_or("-")),
            };
            let st = &status.store;
            let mut out = format!("revision    {}\nlast reload {reload}\n", status.revision);
            if !st.kind.is_empty() {
                let detail = st.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                out.push_str(&format!("store       {}: {}{detail}\n", st.kind, st.health));
            }
            if let Some(f) = &st.fleet {
                let stale = f.staleness_seconds.map_or("never current".to_string(), |s| format!("{s:.1}s"));
                out.push_str(&format!(
                    "fleet       revision {} ({}), epoch {}, staleness {stale}\nthis        {}\nleader      {}\n",
                    f.fleet_revision,
                    f.redis,
                    f.epoch.as_deref().unwrap_or("-"),
                    f.instance,
                    f.leader.as_deref().unwrap_or("-")
                ));
                let rows: Vec<Vec<String>> = f
                    .instances
                    .iter()
                    .map(|i| vec![i.name.clone(), i.revision.to_string(), format!("{}s ago", i.seen_seconds_ago)])
                    .collect();
                out.push_str(&table(&["INSTANCE", "REVISION", "SEEN"], &rows));
            }
            out
        }
        CtlCommand::Guards => guards(&typed(v)?),
        CtlCommand::Experiment { command: ExperimentCommand::List } => experiments(&typed(v)?),
        CtlCommand::Experiment { command: ExperimentCommand::Results { .. } } => experiment(&typed(v)?),
        _ => {
            let applied: api::Applied = typed(v)?;
            format!("ok: revision {} ({} object(s) changed)\n", applied.revision, applied.changes)
        }
    })
}

/// The guards' table: a row per metric (or one saying why a guard does not compile), then
/// each guard's last trip.
fn guards(list: &api::GuardList) -> String {
    let mut rows = Vec::new();
    let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
    for g in &list.guards {
        let step = match (g.step, g.percent) {
            (Some(s), Some(p)) => format!("{} ({p}%)", s + 1),
            _ => "-".into(),
        };
        if let Some(error) = &g.error {
            let dash = || "-".to_string();
            rows.push(vec![
                g.flag.clone(),
                g.state.to_string(),
                step.clone(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                error.clone(),
            ]);
        }
        for m in &g.metrics {
            rows.push(vec![
                g.flag.clone(),
                g.state.to_string(),
                step.clone(),
                m.metric.to_string(),
                format!("{} / {}", m.control_samples, m.treatment_samples),
                if m.estimate.is_none() { "no data".into() } else { f(m.estimate) },
                m.interval.map_or("-".into(), |[low, high]| format!("[{}, {}]", f(Some(low)), f(Some(high)))),
                m.lambda.map_or("-".into(), |l| format!("{l:.3e}")),
                m.decision.to_string(),
            ]);
        }
    }
    let mut out =
        table(&["FLAG", "STATE", "STEP", "METRIC", "SAMPLES C/T", "ESTIMATE", "INTERVAL", "Λ", "DECISION"], &rows);
    for g in &list.guards {
        if let Some(t) = &g.last_trip {
            out.push_str(&format!("{}: last tripped at {} (revision {}): {}\n", g.flag, t.at, t.revision, t.reason));
        }
    }
    out
}

/// A number to 4 significant digits: `0.6000`, `12.35`, `1235`; `1.230e-5` when tiny or huge.
pub(super) fn sig(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".into();
    }
    // The exponent after rounding to 4 digits (9.9996 is 1.000e1).
    let scientific = format!("{x:.3e}");
    let magnitude: i32 = scientific.split_once('e').and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    if !(-4..6).contains(&magnitude) {
        return scientific;
    }
    let decimals = (3 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// A share as a percentage with one decimal: `0.981` → `98.1%`.
fn share(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A relative lift as a signed percentage with one decimal: `0.1667` → `+16.7%`.
fn lift_percent(x: f64) -> String {
    let p = (x * 1000.0).round() / 10.0;
    if p == 0.0 {
        "+0.0%".into()
    } else {
        format!("{p:+.1}%")
    }
}

/// An absolute difference, signed (a lift against a control whose mean is 0).
fn signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{}", sig(x))
    } else {
        sig(x)
    }
}

/// A p-value: `0.412`, or `2.10e-5` when small.
fn p_value(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.2e}")
    } else {
        format!("{p:.3}")
    }
}

/// A sample-ratio check's line: the p-value, marked when below the threshold; why there is
/// none (`missing`) when the fallthrough splits two or more arms.
fn check(r: &api::ExperimentResults, p: Option<f64>, ok: &str, mismatch: &str, missing: &str) -> String {
    let alpha = crate::experiment::SRM_ALPHA;
    let split = r.arms.iter().filter(|a| a.weight > 0.0).count() >= 2;
    match p {
        None if split => format!("- ({missing})"),
        None => "- (the fallthrough is not a split of two or more arms)".into(),
        Some(p) if p < alpha => format!("p = {} ⚠ < {alpha}, {mismatch}", p_value(p)),
        Some(p) => format!("p = {} ({ok})", p_value(p)),
    }
}

/// The requests each arm served: `control 1200 (50%) / candidate 1180 (50%)`.
fn served(r: &api::ExperimentResults, weights: bool) -> String {
    r.arms
        .iter()
        .map(|a| match weights {
            true => format!("{} {} ({}%)", a.variation, a.served, percent(a.weight)),
            false => format!("{} {}", a.variation, a.served),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The recommendation in full (`results`) or in a few words (`list`).
fn recommendation(r: &api::ExperimentResults, full: bool) -> String {
    let rec = &r.recommendation;
    let variation = rec.variation.as_deref().unwrap_or("-");
    let short = rec.samples_short.filter(|n| *n > 0);
    if !full {
        return match (rec.action.as_str(), short) {
            ("ship", _) => format!("ship {variation}"),
            ("keep_control", _) => format!("keep {variation} (control)"),
            ("keep_running", Some(n)) => format!("keep running ({n} more samples per arm)"),
            ("keep_running", None) => "keep running".into(),
            ("withheld", _) => "withheld ⚠ sample ratio mismatch".into(),
            ("stopped", _) => "- (stopped)".into(),
            (other, _) => other.to_string(),
        };
    }
    let mut line = match (rec.action.as_str(), short) {
        ("ship", _) => format!("ship {variation} — {}", rec.reason),
        ("keep_control", _) => format!("keep {variation} (the control) — {}", rec.reason),
        ("keep_running", Some(n)) => {
            format!("keep running: {n} more samples per arm (min_samples {})", r.min_samples)
        }
        ("keep_running", None) => format!("keep running — {}", rec.reason),
        ("withheld", _) => format!("withheld ⚠ — {}", rec.reason),
        ("stopped", _) => format!("none — {}", rec.reason),
        (other, _) => format!("{other} — {}", rec.reason),
    };
    if let Some(p) = rec.projected_per_arm {
        line.push_str(&format!(
            "; at the current effect about {p} samples per arm for a {} chance to win",
            share(r.chance_to_win)
        ));
    }
    line
}

/// `experiment list`: a line per experiment.
fn experiments(list: &api::ExperimentList) -> String {
    let rows: Vec<Vec<String>> = list
        .experiments
        .iter()
        .map(|r| {
            vec![r.flag.clone(), r.state.clone(), r.iteration.to_string(), served(r, false), recommendation(r, false)]
        })
        .collect();
    format!("revision {}\n{}", list.revision, table(&["FLAG", "STATE", "ITERATION", "SERVED", "RECOMMENDATION"], &rows))
}

/// `experiment results`: the experiment, its checks and recommendation, then a table per
/// metric with a row per figure and a column per arm (the control's comparisons `—`).
fn experiment(r: &api::ExperimentResults) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| out.push_str(&format!("{:<16}{value}\n", format!("{label}:")));
    field("experiment", r.flag.clone());
    let started = r.iteration_started.as_deref().map_or(String::new(), |t| format!(" (started {t})"));
    field("state", format!("{}, iteration {}{started}", r.state, r.iteration));
    field("control", r.control.clone());
    field(
        "decision",
        format!(
            "chance to win ≥ {}, expected loss ≤ {}, min_samples {} per arm",
            share(r.chance_to_win),
            r.max_loss,
            r.min_samples
        ),
    );
    field("served", served(r, true));
    field(
        "SRM",
        check(
            r,
            r.srm_p_value,
            "served requests against the allocation",
            "sample ratio mismatch: the arms are not the groups the allocation made",
            "no requests served yet",
        ),
    );
    field(
        "coverage",
        check(
            r,
            r.coverage_p_value,
            "primary metric's samples against requests served",
            "the primary metric's samples arrive more from one arm than another",
            "no samples of the primary metric yet",
        ),
    );
    field("recommendation", recommendation(r, true));
    for m in &r.metrics {
        out.push_str(&format!("\n{} ({}, {} is better)\n", m.metric, m.role, m.better));
        out.push_str(&metric_table(m, &r.control));
    }
    out
}

fn metric_table(m: &api::MetricResults, control: &str) -> String {
    let dash = || "-".to_string();
    let f = |x: Option<f64>, g: fn(f64) -> String| x.map_or_else(dash, g);
    // A control whose mean is 0 has no relative lift: the comparison is the absolute difference.
    let absolute = m.arms.iter().any(|a| a.variation == control && a.mean == Some(0.0));
    let lift: fn(f64) -> String = if absolute { signed } else { lift_percent };
    let mut rows: Vec<Vec<String>> = vec![
        vec!["n".into()],
        vec!["mean [95%]".into()],
        vec![if absolute { "difference [95%]" } else { "lift [95%]" }.into()],
        vec!["chance to beat control".into()],
        vec!["expected loss".into()],
    ];
    let best = m.arms.iter().any(|a| a.chance_to_be_best.is_some());
    if best {
        rows.push(vec!["chance to be best".into()]);
    }
    for a in &m.arms {
        let is_control = a.variation == control;
        let compared = |cell: String| if is_control { "—".to_string() } else { cell };
        rows[0].push(a.n.to_string());
        rows[1].push(match (a.mean, a.low, a.high) {
            (Some(mean), Some(low), Some(high)) => format!("{} [{}, {}]", sig(mean), sig(low), sig(high)),
            (mean, _, _) => f(mean, sig),
        });
        rows[2].push(compared(match (a.lift, a.lift_low, a.lift_high) {
            (Some(x), Some(low), Some(high)) => format!("{} [{}, {}]", lift(x), lift(low), lift(high)),
            (x, _, _) => f(x, lift),
        }));
        rows[3].push(compared(f(a.chance_to_beat_control, share)));
        rows[4].push(compared(f(a.expected_loss, sig)));
        if best {
            rows[5].push(f(a.chance_to_be_best, share));
        }
    }
    let header: Vec<&str> = std::iter::once("").chain(m.arms.iter().map(|a| a.variation.as_str())).collect();
    table(&header, &rows)
}
