//! `sluice ctl`: every admin API operation as a command. Readable tables by default,
//! the API's JSON with `--json`. The admin URL and token come from `--url` / `--token` or
//! `SLUICE_ADMIN_URL` / `SLUICE_ADMIN_TOKEN`.

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The admin listener, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "SLUICE_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    url: String,
    /// An admin token (`admin.tokens` in the config).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

/// Options every change takes.
#[derive(Debug, Args)]
struct ChangeArgs {
    /// Why (required: it goes to the audit log).
    #[arg(long, short)]
    reason: String,
    /// Only if the current revision is this one (else the change is refused: 412).
    #[arg(long)]
    if_match: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// List flags: on/off, variations, fallthrough, the revision that last changed each.
    Flags,
    /// One flag.
    Flag {
        #[command(subcommand)]
        command: FlagCommand,
    },
    /// Evaluate a flag for a context against the running gateway (runtime changes
    /// included) and show the AI config version it picks, its prompt rendered.
    Eval {
        flag: String,
        /// The context as LaunchDarkly context JSON, or a bare user key.
        #[arg(long)]
        context: String,
        /// Template variables as JSON, as an app sends them in `x-sluice-variables`.
        #[arg(long)]
        variables: Option<String>,
        /// Evaluate as this client (app) calls: its context kind and template values.
        #[arg(long)]
        client: Option<String>,
        /// Print each step of the evaluation.
        #[arg(long)]
        explain: bool,
    },
    /// Turn a flag off: everyone gets its off variation.
    Kill {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Turn a flag back on.
    Restore {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Set the fallthrough's percentage rollout, e.g. `rollout bot control=80 candidate=20`.
    Rollout {
        flag: String,
        /// `variation=percent`, in bucket order.
        #[arg(required = true)]
        weights: Vec<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Serve one variation to everyone who falls through (or, with --rule, to a rule).
    Promote {
        flag: String,
        variation: String,
        /// A rule id instead of the fallthrough.
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Point a variation at an AI config version, e.g. `point bot candidate support-bot@3`.
    Point {
        flag: String,
        variation: String,
        /// `ai_config@version`.
        version: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Put a flag back as it was at an earlier revision.
    Rollback {
        flag: String,
        /// The revision to go back to.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List AI configs and their versions, or add one.
    Versions {
        #[command(subcommand)]
        command: Option<VersionsCommand>,
    },
    /// The audit log, newest first.
    Audit {
        #[arg(long)]
        flag: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only revisions before this one (page on: the previous page's `next`).
        #[arg(long)]
        before: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The current revision and how the last reload of the config file went.
    Status,
    /// Guards per flag and metric: samples, estimates, interval, Λ, decision, ramp step.
    Guards,
    /// A flag's guard: pause it, resume it, or re-arm it after a rollback.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GuardCommand {
    /// No trips and no ramp steps until resumed.
    Pause {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Go on where the ramp was.
    Resume {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// After a rollback: arm again (a ramp starts from its first step).
    Rearm {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum FlagCommand {
    /// A flag with its definition.
    Get { flag: String },
}

#[derive(Debug, Subcommand)]
enum VersionsCommand {
    /// Add a version to an AI config from a JSON file (`-` for standard input).
    Add {
        ai_config: String,
        /// The version as JSON: {"version": 3, "provider": ..., "model": ..., "messages": [...]}.
        file: std::path::PathBuf,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// Run `sluice ctl`.
pub async fn run(args: CtlArgs) -> ExitCode {
    match execute(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sluice ctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn execute(args: &CtlArgs) -> Result<(), String> {
    let with_reason = |c: &ChangeArgs, body: Value| {
        let mut body = body;
        body["reason"] = json!(c.reason);
        (body, c.if_match)
    };
    let (method, path, body, if_match) = match &args.command {
        CtlCommand::Flags => (Method::GET, "/flags".to_string(), None, None),
        CtlCommand::Flag { command: FlagCommand::Get { flag } } => {
            (Method::GET, format!("/flags/{}", encode(flag)), None, None)
        }
        CtlCommand::Eval { flag, context, variables, client, explain } => {
            let context = match serde_json::from_str::<Value>(context) {
                Ok(v @ Value::Object(_)) => v,
                _ if context.trim_start().starts_with('{') => {
                    return Err(format!("--context: not a JSON object: {context}"));
                }
                _ => Value::String(context.clone()),
            };
            let mut body = json!({"context": context, "explain": explain});
            if let Some(v) = variables {
                body["variables"] = serde_json::from_str(v).map_err(|e| format!("--variables: not JSON: {e}"))?;
            }
            if let Some(c) = client {
                body["client"] = json!(c);
            }
            (Method::POST, format!("/flags/{}/evaluate", encode(flag)), Some(body), None)
        }
        CtlCommand::Kill { flag, change } => {
            let (b, m) = with_reason(change, json!({}));
            (Method::POST, format!("/flags/{}/kill", encode(flag)), Some(b), m)
        }
        CtlCommand::Restore { flag, change } => {
            let (b, m) = with_reason(change, json!({}));
            (Method::POST, format!("/flags/{}/restore", encode(flag)), Some(b), m)
        }
        CtlCommand::Rollout { flag, weights, change } => {
            let mut list = Vec::new();
            for w in weights {
                let (variation, percent) =
                    w.split_once('=').ok_or_else(|| format!("`{w}`: write weights as variation=percent"))?;
                let percent: f64 = percent.parse().map_err(|_| format!("`{w}`: the percent is not a number"))?;
                list.push(json!({"variation": variation, "percent": percent}));
            }
            let (b, m) = with_reason(change, json!({ "weights": list }));
            (Method::PUT, format!("/flags/{}/rollout", encode(flag)), Some(b), m)
        }
        CtlCommand::Promote { flag, variation, rule, change } => {
            let (b, m) = with_reason(change, json!({ "variation": variation }));
            let path = match rule {
                Some(rule) => format!("/flags/{}/rules/{}", encode(flag), encode(rule)),
                None => format!("/flags/{}/fallthrough", encode(flag)),
            };
            (Method::PUT, path, Some(b), m)
        }
        CtlCommand::Point { flag, variation, version, change } => {
            let (ai_config, number) = version
                .rsplit_once('@')
                .ok_or_else(|| format!("`{version}`: write the version as ai_config@number"))?;
            let number: u32 = number.parse().map_err(|_| format!("`{version}`: the version is not a number"))?;
            let (b, m) = with_reason(change, json!({"ai_config": ai_config, "version": number}));
            (Method::PUT, format!("/flags/{}/variations/{}", encode(flag), encode(variation)), Some(b), m)
        }
        CtlCommand::Rollback { flag, to, change } => {
            let (b, m) = with_reason(change, json!({ "revision": to }));
            (Method::POST, format!("/flags/{}/rollback", encode(flag)), Some(b), m)
        }
        CtlCommand::Versions { command: None } => (Method::GET, "/ai-configs".to_string(), None, None),
        CtlCommand::Versions { command: Some(VersionsCommand::Add { ai_config, file, change }) } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))?
            } else {
                std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
            };
            let version: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            let (b, m) = with_reason(change, json!({ "version": version }));
            (Method::POST, format!("/ai-configs/{}/versions", encode(ai_config)), Some(b), m)
        }
        CtlCommand::Audit { flag, since, until, before, limit } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(b) = before {
                q.push(format!("before={b}"));
            }
            for (k, v) in [("flag", flag), ("since", since), ("until", until)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode(v)));
                }
            }
            (Method::GET, format!("/audit?{}", q.join("&")), None, None)
        }
        CtlCommand::Status => (Method::GET, "/status".to_string(), None, None),
        CtlCommand::Guards => (Method::GET, "/guards".to_string(), None, None),
        CtlCommand::Guard { command } => {
            let (flag, change, action) = match command {
                GuardCommand::Pause { flag, change } => (flag, change, "pause"),
                GuardCommand::Resume { flag, change } => (flag, change, "resume"),
                GuardCommand::Rearm { flag, change } => (flag, change, "rearm"),
            };
            let (b, m) = with_reason(change, json!({}));
            (Method::POST, format!("/flags/{}/guard/{action}", encode(flag)), Some(b), m)
        }
    };
    let value = call(args, method, &path, body, if_match).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&args.command, &value));
    }
    // A change to what a flag serves does nothing visible while the flag is off: say so.
    if let CtlCommand::Rollout { flag, .. } | CtlCommand::Promote { flag, .. } | CtlCommand::Point { flag, .. } =
        &args.command
    {
        let view = call(args, Method::GET, &format!("/flags/{}", encode(flag)), None, None).await?;
        if let Some(warning) = off_warning(flag, &view) {
            eprintln!("{warning}");
        }
    }
    Ok(())
}

async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<u64>,
) -> Result<Value, String> {
    let target = format!("{}/admin/v1{path}", args.url.trim_end_matches('/'));
    // What errors show: the URL without any `user:password@`.
    let url = without_userinfo(&target);
    let mut req = Request::builder().method(method).uri(&target).header("content-type", "application/json");
    if let Some(token) = &args.token {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            "invalid admin token: it holds a line break or another character a header cannot carry".to_string()
        })?;
        req = req.header("authorization", value);
    }
    if let Some(rev) = if_match {
        req = req.header("if-match", format!("\"{rev}\""));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("bad admin URL `{url}`: {e}"))?;
    let client = crate::providers::https_client(std::time::Duration::from_secs(30));
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within 30 s"))?
        .map_err(|e| format!("cannot reach {url}: {e} (is `sluice serve` running? set SLUICE_ADMIN_URL)"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"text": String::from_utf8_lossy(&bytes)}));
    if status.is_success() {
        return Ok(value);
    }
    let error = &value["error"];
    let mut message = error["message"].as_str().unwrap_or("").to_string();
    match status.as_u16() {
        401 => message = format!("{message} (set SLUICE_ADMIN_TOKEN or --token)"),
        412 => message = format!("conflict: {message}"),
        _ => {}
    }
    if let Some(problems) = error["problems"].as_array() {
        for p in problems {
            message.push_str(&format!(
                "\n  {}: {}",
                p["path"].as_str().unwrap_or("?"),
                p["message"].as_str().unwrap_or("")
            ));
        }
    }
    Err(format!("{} {}", status.as_u16(), message))
}

/// `url` without the `user:password@` of its authority (never shown in errors).
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => rest[at + 1..].to_string(),
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

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
fn evaluation(v: &Value) -> String {
    let mut out = String::new();
    for line in v["explain"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", text(line)));
    }
    let reason = &v["reason"];
    let why = [&reason["kind"], &reason["ruleId"], &reason["errorKind"]]
        .into_iter()
        .filter(|x| !x.is_null())
        .map(text)
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(&format!("revision    {}\n", text(&v["revision"])));
    out.push_str(&format!("variation   {} ({why})\n", text(&v["variation"])));
    let a = &v["ai_config"];
    if a.is_null() {
        out.push_str(&format!("value       {}\n", v["value"]));
        return out;
    }
    let state = if a["enabled"] == json!(false) { " (disabled)" } else { "" };
    out.push_str(&format!("ai config   {}@{}{state}\n", text(&a["key"]), text(&a["version"])));
    out.push_str(&format!("provider    {}, model {}\n", text(&a["provider"]), text(&a["model"])));
    if a["parameters"].as_object().is_some_and(|p| !p.is_empty()) {
        out.push_str(&format!("parameters  {}\n", a["parameters"]));
    }
    let mode = match a["messages_mode"].as_str() {
        Some("replace") => "in place of the app's system messages",
        _ => "before the app's messages",
    };
    out.push_str(&format!("messages    ({mode})\n"));
    for m in a["messages"].as_array().into_iter().flatten() {
        out.push_str(&format!("  [{}] {}\n", text(&m["role"]), text(&m["content"])));
    }
    out
}

/// A percentage as people write it: `5`, `20`, `12.5` (never `20.0`).
fn percent(v: &Value) -> String {
    match v.as_f64() {
        Some(p) => {
            let s = format!("{p:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        None => text(v),
    }
}

/// The warning for a change to a flag that is off: it serves its off variation to
/// everyone, whatever the change says, until it is restored.
fn off_warning(flag: &str, view: &Value) -> Option<String> {
    (view["flag"]["on"] == json!(false)).then(|| {
        format!(
            "warning: the flag `{flag}` is off (killed): it serves its off variation to everyone until `sluice ctl restore {flag}`; this change takes effect then"
        )
    })
}

/// The fallthrough in a few words: `candidate` or `control 95% / candidate 5%`.
fn fallthrough(ft: &Value) -> String {
    if let Some(v) = ft["variation"].as_str() {
        return v.to_string();
    }
    match ft["rollout"]["variations"].as_array() {
        Some(ws) => ws
            .iter()
            .map(|w| format!("{} {}%", text(&w["variation"]), percent(&w["percent"])))
            .collect::<Vec<_>>()
            .join(" / "),
        None => "-".into(),
    }
}

fn render(command: &CtlCommand, v: &Value) -> String {
    match command {
        CtlCommand::Flags => {
            let rows: Vec<Vec<String>> = v["flags"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            let variations = f["variations"]
                                .as_array()
                                .map(|vs| {
                                    vs.iter()
                                        .map(|x| match (x["ai_config"].as_str(), x["version"].as_u64()) {
                                            (Some(a), Some(n)) => format!("{}={a}@{n}", text(&x["name"])),
                                            _ => text(&x["name"]),
                                        })
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                })
                                .unwrap_or_default();
                            vec![
                                text(&f["key"]),
                                if f["on"] == json!(false) { "off".into() } else { "on".into() },
                                text(&f["revision"]),
                                fallthrough(&f["fallthrough"]),
                                variations,
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "revision {}\n{}",
                text(&v["revision"]),
                table(&["FLAG", "STATE", "CHANGED", "FALLTHROUGH", "VARIATIONS"], &rows)
            )
        }
        CtlCommand::Flag { .. } => {
            let f = &v["flag"];
            format!(
                "flag        {}\nstate       {}\nchanged at  revision {}\nfallthrough {}\n\n{}\n",
                text(&f["key"]),
                if f["on"] == json!(false) { "off" } else { "on" },
                text(&f["revision"]),
                fallthrough(&f["fallthrough"]),
                serde_json::to_string_pretty(&f["definition"]).unwrap_or_default()
            )
        }
        CtlCommand::Versions { command: None } => {
            let mut rows = Vec::new();
            if let Some(configs) = v["ai_configs"].as_object() {
                for (key, config) in configs {
                    for version in config["versions"].as_array().into_iter().flatten() {
                        rows.push(vec![
                            key.clone(),
                            text(&version["version"]),
                            text(&version["provider"]),
                            text(&version["model"]),
                            if version["enabled"] == json!(false) { "disabled".into() } else { "enabled".into() },
                        ]);
                    }
                }
            }
            table(&["AI CONFIG", "VERSION", "PROVIDER", "MODEL", "STATE"], &rows)
        }
        CtlCommand::Audit { .. } => {
            let rows: Vec<Vec<String>> = v["entries"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| {
                            let what = e["changes"]
                                .as_array()
                                .map(|cs| {
                                    cs.iter()
                                        .map(|c| format!("{} {}", text(&c["kind"]), text(&c["key"])))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                })
                                .unwrap_or_default();
                            vec![text(&e["revision"]), text(&e["time"]), text(&e["actor"]), text(&e["reason"]), what]
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut out = table(&["REVISION", "TIME", "ACTOR", "REASON", "CHANGED"], &rows);
            if let Some(next) = v["next"].as_u64() {
                out.push_str(&format!("(more: --before {next})\n"));
            }
            out
        }
        CtlCommand::Eval { .. } => evaluation(v),
        CtlCommand::Status => {
            let r = &v["reload"];
            let reload = match (r["time"].as_str(), r["ok"].as_bool()) {
                (None, _) => "not reloaded since start".to_string(),
                (Some(t), Some(true)) => format!("ok at {t}"),
                (Some(t), _) => format!("REFUSED at {t}: {}", text(&r["error"])),
            };
            format!("revision    {}\nlast reload {reload}\n", text(&v["revision"]))
        }
        CtlCommand::Guards => {
            let mut rows = Vec::new();
            for g in v["guards"].as_array().into_iter().flatten() {
                let step = match (g["step"].as_u64(), g["percent"].as_f64()) {
                    (Some(s), Some(p)) => format!("{} ({p}%)", s + 1),
                    _ => "-".into(),
                };
                if let Some(error) = g["error"].as_str() {
                    // A guard that does not compile has no metric rows: say why instead.
                    let dash = || "-".to_string();
                    rows.push(vec![
                        text(&g["flag"]),
                        text(&g["state"]),
                        step.clone(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        error.to_string(),
                    ]);
                }
                for m in g["metrics"].as_array().into_iter().flatten() {
                    let f = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
                    rows.push(vec![
                        text(&g["flag"]),
                        text(&g["state"]),
                        step.clone(),
                        text(&m["metric"]),
                        format!("{} / {}", text(&m["control_samples"]), text(&m["treatment_samples"])),
                        if m["estimate"].is_null() { "no data".into() } else { f(&m["estimate"]) },
                        if m["interval"].is_null() {
                            "-".into()
                        } else {
                            format!("[{}, {}]", f(&m["interval"][0]), f(&m["interval"][1]))
                        },
                        m["lambda"].as_f64().map_or("-".into(), |l| format!("{l:.3e}")),
                        text(&m["decision"]),
                    ]);
                }
            }
            let mut out = table(
                &["FLAG", "STATE", "STEP", "METRIC", "SAMPLES C/T", "ESTIMATE", "INTERVAL", "Λ", "DECISION"],
                &rows,
            );
            for g in v["guards"].as_array().into_iter().flatten() {
                let t = &g["last_trip"];
                if !t.is_null() {
                    out.push_str(&format!(
                        "{}: last tripped at {} (revision {}): {}\n",
                        text(&g["flag"]),
                        text(&t["at"]),
                        text(&t["revision"]),
                        text(&t["reason"])
                    ));
                }
            }
            out
        }
        _ => format!("ok: revision {} ({} object(s) changed)\n", text(&v["revision"]), text(&v["changes"])),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn args(extra: &[&str]) -> CtlArgs {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().ctl
    }

    #[test]
    fn percentages_print_one_way() {
        for (v, want) in
            [(json!(5), "5"), (json!(95.0), "95"), (json!(20.0), "20"), (json!(12.5), "12.5"), (json!(0.125), "0.125")]
        {
            assert_eq!(percent(&v), want, "{v}");
        }
        let ft = json!({"rollout": {"variations": [{"variation": "control", "percent": 80.0}, {"variation": "candidate", "percent": 20}]}});
        assert_eq!(fallthrough(&ft), "control 80% / candidate 20%");
    }

    #[test]
    fn a_change_to_a_killed_flag_warns_that_it_is_off() {
        let off = json!({"revision": 3, "flag": {"key": "bot", "on": false}});
        let warning = off_warning("bot", &off).unwrap();
        assert!(warning.contains("`bot` is off") && warning.contains("sluice ctl restore bot"), "{warning}");
        assert_eq!(off_warning("bot", &json!({"flag": {"key": "bot", "on": true}})), None);
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(without_userinfo("http://u:PASS@127.0.0.1:9/admin/v1/flags"), "http://127.0.0.1:9/admin/v1/flags");
        assert_eq!(without_userinfo("https://h/a@b"), "https://h/a@b", "an @ in the path is not userinfo");
        assert_eq!(without_userinfo("http://h:1"), "http://h:1");
    }

    #[tokio::test]
    async fn errors_never_echo_url_credentials_and_a_bad_token_says_so() {
        let a = args(&["--url", "http://u:URLPASS-SECRET@127.0.0.1:9", "status"]);
        let err = call(&a, Method::GET, "/status", None, None).await.unwrap_err();
        assert!(!err.contains("URLPASS-SECRET") && err.contains("127.0.0.1:9"), "{err}");
        let a = args(&["--url", "http://127.0.0.1:9", "--token", "abc\r\nx-injected: 1", "status"]);
        let err = call(&a, Method::GET, "/status", None, None).await.unwrap_err();
        assert!(err.starts_with("invalid admin token"), "{err}");
    }
}
