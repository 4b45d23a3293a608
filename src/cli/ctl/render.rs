//! `sluice ctl`'s readable output: a table or a few lines per answer of the admin API,
//! each read as its type in `admin::api`.

use serde_json::Value;

use super::{typed, CtlCommand};
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
            format!("revision    {}\nlast reload {reload}\n", status.revision)
        }
        CtlCommand::Guards => guards(&typed(v)?),
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
