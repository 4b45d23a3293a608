//! `sluice ctl`: every admin API operation as a command. Readable tables by default,
//! the API's JSON with `--json`. The admin URL and token come from `--url` / `--token` or
//! `SLUICE_ADMIN_URL` / `SLUICE_ADMIN_TOKEN`.

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::admin::api;

mod render;

use render::{off_warning, render};

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
    /// Experiments: results per arm and metric and the recommendation; ship an arm or stop.
    Experiment {
        #[command(subcommand)]
        command: ExperimentCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ExperimentCommand {
    /// Every experiment: state, iteration, requests served per arm, recommendation.
    List,
    /// An experiment's results in its current iteration: per metric and arm n, mean, lift,
    /// chance to beat control, expected loss; the sample-ratio checks; the recommendation.
    Results { flag: String },
    /// Ship an arm: it takes the fallthrough and every rule, and the experiment stops.
    Ship {
        flag: String,
        variation: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Stop an experiment; the allocation stays.
    Stop {
        flag: String,
        #[command(flatten)]
        change: ChangeArgs,
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
    /// A trip was a false alarm: put back the traffic the rollback moved and arm again.
    Dismiss {
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
        /// The version as JSON: {"version": 3, "provider": ..., "model": ..., "messages": [...]}, or an
        /// agent's {"mode": "agent", "instructions": ..., "tools": [...]} in place of messages.
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

/// A request body of the admin API's contract as JSON.
fn body<T: serde::Serialize>(value: &T) -> Option<Value> {
    serde_json::to_value(value).ok()
}

/// One admin API call: method, path under `/admin/v1`, body, `If-Match`.
type Call = (Method, String, Option<Value>, Option<u64>);

async fn execute(args: &CtlArgs) -> Result<(), String> {
    let (method, path, body, if_match) = request(&args.command)?;
    let value = call(args, method, &path, body, if_match).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&args.command, value)?);
    }
    // A change to what a flag serves does nothing visible while the flag is off: say so.
    if let CtlCommand::Rollout { flag, .. }
    | CtlCommand::Promote { flag, .. }
    | CtlCommand::Point { flag, .. }
    | CtlCommand::Experiment { command: ExperimentCommand::Ship { flag, .. } } = &args.command
    {
        let view: api::FlagAnswer =
            typed(call(args, Method::GET, &format!("/flags/{}", encode(flag)), None, None).await?)?;
        if let Some(warning) = off_warning(flag, &view.flag) {
            eprintln!("{warning}");
        }
    }
    Ok(())
}

/// The call a command makes, its body one of the contract's request types.
fn request(command: &CtlCommand) -> Result<Call, String> {
    let reason = |c: &ChangeArgs| c.reason.clone();
    Ok(match command {
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
            let variables = match variables {
                Some(v) => Some(serde_json::from_str(v).map_err(|e| format!("--variables: not JSON: {e}"))?),
                None => None,
            };
            let request = api::EvaluateBody { context, variables, client: client.clone(), explain: *explain };
            (Method::POST, format!("/flags/{}/evaluate", encode(flag)), body(&request), None)
        }
        CtlCommand::Kill { flag, change } => {
            let b = body(&api::ReasonBody { reason: reason(change) });
            (Method::POST, format!("/flags/{}/kill", encode(flag)), b, change.if_match)
        }
        CtlCommand::Restore { flag, change } => {
            let b = body(&api::ReasonBody { reason: reason(change) });
            (Method::POST, format!("/flags/{}/restore", encode(flag)), b, change.if_match)
        }
        CtlCommand::Rollout { flag, weights, change } => {
            let mut list = Vec::new();
            for w in weights {
                let (variation, percent) =
                    w.split_once('=').ok_or_else(|| format!("`{w}`: write weights as variation=percent"))?;
                let percent: f64 = percent.parse().map_err(|_| format!("`{w}`: the percent is not a number"))?;
                list.push(api::Weight { variation: variation.to_string(), percent });
            }
            let b = body(&api::RolloutBody { weights: list, reason: reason(change) });
            (Method::PUT, format!("/flags/{}/rollout", encode(flag)), b, change.if_match)
        }
        CtlCommand::Promote { flag, variation, rule, change } => {
            let b = body(&api::VariationBody { variation: variation.clone(), reason: reason(change) });
            let path = match rule {
                Some(rule) => format!("/flags/{}/rules/{}", encode(flag), encode(rule)),
                None => format!("/flags/{}/fallthrough", encode(flag)),
            };
            (Method::PUT, path, b, change.if_match)
        }
        CtlCommand::Point { flag, variation, version, change } => {
            let (ai_config, number) = version
                .rsplit_once('@')
                .ok_or_else(|| format!("`{version}`: write the version as ai_config@number"))?;
            let number: u32 = number.parse().map_err(|_| format!("`{version}`: the version is not a number"))?;
            let b = body(&api::PointBody { ai_config: ai_config.to_string(), version: number, reason: reason(change) });
            (Method::PUT, format!("/flags/{}/variations/{}", encode(flag), encode(variation)), b, change.if_match)
        }
        CtlCommand::Rollback { flag, to, change } => {
            let b = body(&api::RollbackBody { revision: *to, reason: reason(change) });
            (Method::POST, format!("/flags/{}/rollback", encode(flag)), b, change.if_match)
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
            let b = body(&api::AddVersionBody { version, reason: reason(change) });
            (Method::POST, format!("/ai-configs/{}/versions", encode(ai_config)), b, change.if_match)
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
                GuardCommand::Dismiss { flag, change } => (flag, change, "dismiss"),
            };
            let b = body(&api::ReasonBody { reason: reason(change) });
            (Method::POST, format!("/flags/{}/guard/{action}", encode(flag)), b, change.if_match)
        }
        CtlCommand::Experiment { command: ExperimentCommand::List } => {
            (Method::GET, "/experiments".to_string(), None, None)
        }
        CtlCommand::Experiment { command: ExperimentCommand::Results { flag } } => {
            (Method::GET, format!("/experiments/{}", encode(flag)), None, None)
        }
        CtlCommand::Experiment { command: ExperimentCommand::Ship { flag, variation, change } } => {
            let b = body(&api::VariationBody { variation: variation.clone(), reason: reason(change) });
            (Method::POST, format!("/experiments/{}/ship", encode(flag)), b, change.if_match)
        }
        CtlCommand::Experiment { command: ExperimentCommand::Stop { flag, change } } => {
            let b = body(&api::ReasonBody { reason: reason(change) });
            (Method::POST, format!("/experiments/{}/stop", encode(flag)), b, change.if_match)
        }
    })
}

/// An answer as its type in the contract; one that does not fit is the server's fault
/// (another version of sluice?) and said so.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("the admin API answered in an unexpected shape: {e}"))
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
    let error =
        serde_json::from_value::<api::ErrorAnswer>(value).map(|a| a.error).unwrap_or_else(|_| api::ErrorDetail {
            code: String::new(),
            message: String::from_utf8_lossy(&bytes).into_owned(),
            problems: Vec::new(),
        });
    let mut message = error.message;
    match status.as_u16() {
        401 => message = format!("{message} (set SLUICE_ADMIN_TOKEN or --token)"),
        412 => message = format!("conflict: {message}"),
        _ => {}
    }
    for p in &error.problems {
        message.push_str(&format!("\n  {}: {}", p.path, p.message));
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::render::{fallthrough, percent, sig};
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
        for (v, want) in [(5.0, "5"), (95.0, "95"), (20.0, "20"), (12.5, "12.5"), (0.125, "0.125")] {
            assert_eq!(percent(v), want, "{v}");
        }
        let ft = json!({"rollout": {"variations": [{"variation": "control", "percent": 80.0}, {"variation": "candidate", "percent": 20}]}});
        assert_eq!(fallthrough(&ft), "control 80% / candidate 20%");
    }

    #[test]
    fn a_change_to_a_killed_flag_warns_that_it_is_off() {
        let view = |on: bool| {
            let answer = json!({"revision": 3, "flag": {"key": "bot", "on": on, "variations": [], "fallthrough": null, "revision": 3}});
            typed::<api::FlagAnswer>(answer).unwrap().flag
        };
        let warning = off_warning("bot", &view(false)).unwrap();
        assert!(warning.contains("`bot` is off") && warning.contains("sluice ctl restore bot"), "{warning}");
        assert_eq!(off_warning("bot", &view(true)), None);
    }

    #[test]
    fn experiment_commands_make_their_calls() {
        let call = |argv: &[&str]| request(&args(argv).command).unwrap();
        assert_eq!(call(&["experiment", "list"]), (Method::GET, "/experiments".to_string(), None, None));
        assert_eq!(
            call(&["experiment", "results", "support bot"]),
            (Method::GET, "/experiments/support%20bot".to_string(), None, None)
        );
        assert_eq!(
            call(&["experiment", "ship", "bot", "candidate", "--reason", "won", "--if-match", "7"]),
            (
                Method::POST,
                "/experiments/bot/ship".to_string(),
                Some(json!({"variation": "candidate", "reason": "won"})),
                Some(7)
            )
        );
        assert_eq!(
            call(&["experiment", "stop", "bot", "-r", "enough"]),
            (Method::POST, "/experiments/bot/stop".to_string(), Some(json!({"reason": "enough"})), None)
        );
        let missing = |argv: &[&str]| {
            let mut full = vec!["sluice"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full).is_err()
        };
        assert!(missing(&["experiment", "ship", "bot", "candidate"]), "ship needs --reason");
        assert!(missing(&["experiment", "stop", "bot"]), "stop needs --reason");
        assert!(missing(&["experiment", "results"]), "results needs a flag");
    }

    /// A two-arm experiment whose candidate wins on its primary metric and does not lose on
    /// its guardrail.
    fn results_fixture() -> Value {
        let arm = |variation: &str, n: u64, mean: f64, compared: Option<(f64, f64, f64, f64, f64)>| {
            let (lift, lift_low, lift_high, chance, loss) = match compared {
                Some((a, b, c, d, e)) => (Some(a), Some(b), Some(c), Some(d), Some(e)),
                None => (None, None, None, None, None),
            };
            api::ArmMetric {
                variation: variation.into(),
                n,
                mean: Some(mean),
                low: Some(mean * 0.93),
                high: Some(mean * 1.07),
                lift,
                lift_low,
                lift_high,
                chance_to_beat_control: chance,
                expected_loss: loss,
                chance_to_be_best: None,
            }
        };
        let results = api::ExperimentResults {
            flag: "support-bot".into(),
            state: "running".into(),
            iteration: 2,
            iteration_started: Some("2025-05-01T10:00:00Z".into()),
            control: "control".into(),
            min_samples: 500,
            chance_to_win: 0.95,
            max_loss: 0.01,
            arms: vec![
                api::ArmServed { variation: "control".into(), weight: 50.0, served: 1210 },
                api::ArmServed { variation: "candidate".into(), weight: 50.0, served: 1190 },
            ],
            srm_p_value: Some(0.683),
            coverage_p_value: Some(0.52),
            metrics: vec![
                api::MetricResults {
                    metric: "feedback:helpful".into(),
                    role: "primary".into(),
                    better: "higher".into(),
                    arms: vec![
                        arm("control", 600, 0.6, None),
                        arm("candidate", 590, 0.7, Some((0.16667, 0.052, 0.281, 0.9812, 0.000213))),
                    ],
                },
                api::MetricResults {
                    metric: "latency".into(),
                    role: "guardrail".into(),
                    better: "lower".into(),
                    arms: vec![
                        arm("control", 1210, 812.34, None),
                        arm("candidate", 1190, 790.1, Some((-0.0274, -0.061, 0.0071, 0.944, 0.00112))),
                    ],
                },
            ],
            recommendation: api::RecommendationView {
                action: "ship".into(),
                variation: Some("candidate".into()),
                samples_short: None,
                projected_per_arm: None,
                reason: "beats `control` on feedback:helpful with a chance of at least 0.95 and an expected loss of at most 0.01".into(),
            },
        };
        serde_json::to_value(results).unwrap()
    }

    /// The cells after `label` in the first row that starts with it.
    fn cells(out: &str, label: &str) -> Vec<String> {
        let row = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` in\n{out}"));
        row[label.len()..].split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn experiment_results_render_as_a_table_per_metric() {
        let out = render(&args(&["experiment", "results", "support-bot"]).command, results_fixture()).unwrap();
        assert!(out.contains("experiment:     support-bot\n"), "{out}");
        assert!(out.contains("state:          running, iteration 2 (started 2025-05-01T10:00:00Z)\n"), "{out}");
        assert!(
            out.contains("recommendation: ship candidate — beats `control` on feedback:helpful with a chance"),
            "{out}"
        );
        assert!(out.contains("SRM:            p = 0.683 (served requests against the allocation)\n"), "{out}");
        assert!(out.contains("coverage:       p = 0.520 (primary") && !out.contains('⚠'), "{out}");
        assert!(out.contains("\nfeedback:helpful (primary, higher is better)\n"), "{out}");
        assert_eq!(cells(&out, "lift [95%]"), ["—", "+16.7% [+5.2%, +28.1%]"], "{out}");
        assert_eq!(cells(&out, "chance to beat control"), ["—", "98.1%"], "{out}");
        assert_eq!(cells(&out, "mean [95%]"), ["0.6000 [0.5580, 0.6420]", "0.7000 [0.6510, 0.7490]"], "{out}");
        assert!(out.contains("-2.7% [-6.1%, +0.7%]") && out.contains("812.3 [755.5, 869.2]"), "{out}");

        let mut value = results_fixture();
        value["recommendation"] = json!({"action": "keep_running", "variation": null, "samples_short": 120,
            "projected_per_arm": 2400, "reason": "120 more samples per arm before any decision (min_samples 500)"});
        value["coverage_p_value"] = Value::Null;
        let out = render(&args(&["experiment", "results", "support-bot"]).command, value.clone()).unwrap();
        assert!(out.contains("coverage:       - (no samples of the primary metric yet)\n"), "{out}");
        assert!(out.contains("recommendation: keep running: 120 more samples per arm (min_samples 500); at the current effect about 2400 samples per arm for a 95.0% chance to win\n"), "{out}");

        // Served counts off their 50/50 allocation: the check is marked, nothing recommended.
        let mut withheld = results_fixture();
        withheld["arms"][0]["served"] = json!(1300);
        withheld["arms"][1]["served"] = json!(1100);
        withheld["srm_p_value"] = json!(0.0000437);
        withheld["recommendation"] = json!({"action": "withheld", "variation": null, "samples_short": null,
            "projected_per_arm": null, "reason": "sample ratio mismatch (p = 4.37e-5 < 0.001): the arms are not the groups the allocation made; find out why before trusting any result"});
        let out = render(&args(&["experiment", "results", "support-bot"]).command, withheld.clone()).unwrap();
        assert!(
            out.contains("SRM:            p = 4.37e-5 ⚠ < 0.001, sample ratio mismatch: the arms are not the groups"),
            "{out}"
        );
        assert!(out.contains("recommendation: withheld ⚠ — sample ratio mismatch (p = 4.37e-5 < 0.001)"), "{out}");

        // A control whose mean is 0: the comparison is the absolute difference. The chance to
        // be best (the API gives it with three arms or more) gets its own row.
        let mut absolute = results_fixture();
        absolute["metrics"][0]["arms"][0]["mean"] = json!(0.0);
        absolute["metrics"][0]["arms"][0]["low"] = json!(0.0);
        absolute["metrics"][0]["arms"][0]["high"] = json!(0.0);
        absolute["metrics"][0]["arms"][1]["lift"] = json!(0.05);
        absolute["metrics"][1]["arms"][0]["chance_to_be_best"] = json!(0.031);
        absolute["metrics"][1]["arms"][1]["chance_to_be_best"] = json!(0.969);
        let out = render(&args(&["experiment", "results", "support-bot"]).command, absolute).unwrap();
        assert_eq!(cells(&out, "difference [95%]"), ["—", "+0.05000 [+0.05200, +0.2810]"], "{out}");
        assert_eq!(cells(&out, "chance to be best"), ["3.1%", "96.9%"], "{out}");

        let list = json!({"revision": 9, "experiments": [value, withheld]});
        let out = render(&args(&["experiment", "list"]).command, list).unwrap();
        assert!(out.starts_with("revision 9\nFLAG"), "{out}");
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("support-bot")).collect();
        for cell in ["running", "2", "control 1210 / candidate 1190", "keep running (120 more samples per arm)"] {
            assert!(rows[0].contains(cell), "{cell}: {out}");
        }
        assert!(
            rows[1].contains("control 1300 / candidate 1100") && rows[1].ends_with("withheld ⚠ sample ratio mismatch"),
            "{out}"
        );
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        for (x, want) in [
            (0.6, "0.6000"),
            (12.345, "12.35"),
            (1234.6, "1235"),
            (9.99996, "10.00"),
            (-0.5, "-0.5000"),
            (0.01234, "0.01234"),
            (0.0, "0"),
        ] {
            assert_eq!(sig(x), want, "{x}");
        }
        assert_eq!(sig(0.0000123), "1.230e-5");
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
