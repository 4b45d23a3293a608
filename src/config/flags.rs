//! sluice's YAML format for flags and segments, converted into LaunchDarkly's model.
//!
//! The format is LaunchDarkly's, made friendlier: variations have names and are
//! referred to by name; rollout weights are percentages (up to three decimals); field
//! names are snake_case; a clause can be written `{segment: key}`. After conversion the
//! data is compiled like LaunchDarkly JSON, and every problem is reported at the YAML
//! path it came from.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::aiconfig::AiConfigConfig;
use super::Problem;
use crate::flags::model::{self, FlagData};

/// A flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagConfig {
    /// What the flag is for (documentation only).
    #[serde(default)]
    pub description: Option<String>,
    /// An off flag serves `off_variation` to everyone.
    #[serde(default = "yes")]
    pub on: bool,
    pub variations: Vec<VariationConfig>,
    /// Served when the flag is off or a prerequisite fails. Defaults to the first variation.
    #[serde(default)]
    pub off_variation: Option<String>,
    #[serde(default)]
    pub prerequisites: Vec<PrerequisiteConfig>,
    /// Individual targets: these context keys get this variation.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Rules, tried in order; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What everyone else gets.
    pub fallthrough: ServeConfig,
    /// Bucketing salt; defaults to the flag key's own (LaunchDarkly's default is "").
    #[serde(default)]
    pub salt: Option<String>,
    /// A routing flag: the variation to retry once with when the chosen variation's
    /// provider fails before the first response byte.
    #[serde(default)]
    pub fallback_variation: Option<String>,
    /// A routing flag: refuse requests that carry no context key (no
    /// `x-sluice-context` header and no `user` field) instead of using a random key.
    #[serde(default)]
    pub require_context_key: bool,
    /// A routing flag: what to do when the chosen version is disabled.
    #[serde(default)]
    pub when_disabled: WhenDisabled,
    /// A routing flag: compare a treatment with control and act on regressions.
    #[serde(default)]
    pub guard: Option<super::guard::GuardConfig>,
    /// A routing flag: compare its variations on quality metrics and name a winner.
    #[serde(default)]
    pub experiment: Option<super::signals::ExperimentConfig>,
    /// Judges scoring a sample of this flag's answers, by name (`judges:`).
    #[serde(default)]
    pub judges: std::collections::BTreeMap<String, super::judges::JudgeUse>,
    /// Guardrails checking this flag's answers, by name (`guardrails:`).
    #[serde(default)]
    pub guardrails: std::collections::BTreeMap<String, super::judges::GuardrailUse>,
    /// A routing flag: the API endpoints apps may call it on (`chat_completions`,
    /// `completions`, `embeddings`, `responses`). Every variation's provider must serve
    /// each one. Default: the endpoints its variations' providers serve — required when
    /// they serve different endpoints.
    #[serde(default)]
    pub endpoints: Option<Vec<crate::wire::Endpoint>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariationConfig {
    pub name: String,
    /// Any JSON value (for a flag that does not route requests).
    #[serde(default)]
    pub value: Option<Value>,
    /// The AI config this variation serves (with `version`): the flag then routes the
    /// requests of apps that send its key as their `model`.
    #[serde(default)]
    pub ai_config: Option<String>,
    #[serde(default)]
    pub version: Option<u32>,
}

impl VariationConfig {
    /// The variation's value: its `value`, or `{"ai_config": key, "version": n}`.
    pub fn json(&self) -> Value {
        match (&self.ai_config, self.version) {
            (Some(key), Some(version)) => serde_json::json!({"ai_config": key, "version": version}),
            _ => self.value.clone().unwrap_or(Value::Null),
        }
    }
}

/// What a routing flag does when the variation it picks serves a disabled AI config
/// version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenDisabled {
    /// Answer 503 `ai_config_disabled`.
    #[default]
    Error,
    /// Serve the flag's off variation instead.
    OffVariation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrerequisiteConfig {
    pub flag: String,
    /// The prerequisite flag's variation (by name) that must be served.
    pub variation: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub variation: String,
    #[serde(default = "user_kind")]
    pub context_kind: String,
    pub values: Vec<String>,
}

fn user_kind() -> String {
    "user".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A stable id, reported in reasons; defaults to `rule-<index>`.
    #[serde(default)]
    pub id: Option<String>,
    pub clauses: Vec<ClauseConfig>,
    #[serde(flatten)]
    pub serve: ServeConfig,
}

/// What a rule or the fallthrough serves: one variation, or a percentage rollout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default)]
    pub variation: Option<String>,
    #[serde(default)]
    pub rollout: Option<RolloutConfig>,
}

/// A percentage rollout. Keep a new variation first or last in `variations`: raising
/// its percentage then keeps every context it already had.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    pub variations: Vec<WeightConfig>,
    /// Attribute to bucket by (default: the context key).
    #[serde(default)]
    pub bucket_by: Option<String>,
    /// Context kind to bucket (default `user`).
    #[serde(default)]
    pub context_kind: Option<String>,
    /// Fixed seed for the bucketing hash (instead of flag key and salt).
    #[serde(default)]
    pub seed: Option<i64>,
    /// An experiment: reasons say `inExperiment`, and bucketing is always by key.
    #[serde(default)]
    pub experiment: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightConfig {
    pub variation: String,
    /// Percentage, up to three decimals.
    pub percent: f64,
    /// In an experiment, leave this variation out of the analysis.
    #[serde(default)]
    pub untracked: bool,
}

/// A clause: `{attribute, op, values}` (LaunchDarkly's operator names), or
/// `{segment: key}` / `{segments: [keys]}` for `segmentMatch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClauseConfig {
    #[serde(default)]
    pub context_kind: Option<String>,
    #[serde(default)]
    pub attribute: Option<String>,
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub values: Vec<Value>,
    #[serde(default)]
    pub negate: bool,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub segments: Vec<String>,
}

/// A segment: a reusable set of contexts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    #[serde(default)]
    pub description: Option<String>,
    /// `user` keys in the segment.
    #[serde(default)]
    pub included: Vec<String>,
    /// `user` keys never in the segment (unless included).
    #[serde(default)]
    pub excluded: Vec<String>,
    #[serde(default)]
    pub included_contexts: Vec<SegmentTargetConfig>,
    #[serde(default)]
    pub excluded_contexts: Vec<SegmentTargetConfig>,
    #[serde(default)]
    pub rules: Vec<SegmentRuleConfig>,
    #[serde(default)]
    pub salt: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentTargetConfig {
    pub context_kind: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRuleConfig {
    #[serde(default)]
    pub id: Option<String>,
    pub clauses: Vec<ClauseConfig>,
    /// Only this percentage of the matching contexts (up to three decimals).
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub bucket_by: Option<String>,
    #[serde(default)]
    pub rollout_context_kind: Option<String>,
}

/// Variation names of each flag, by key (LaunchDarkly JSON has none).
pub type VariationNames = HashMap<String, Vec<String>>;

/// Convert sluice's flags and segments into LaunchDarkly's model, with the problems
/// found (each at the YAML path of the offending field). The data is complete even when
/// there are problems, so that compiling it can report more.
pub fn convert(
    flags: &BTreeMap<String, FlagConfig>,
    segments: &BTreeMap<String, SegmentConfig>,
    ai_configs: &BTreeMap<String, AiConfigConfig>,
) -> (FlagData, VariationNames, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut data = FlagData::default();
    let mut names = VariationNames::new();
    for (key, f) in flags {
        let at = format!("flags.{key}");
        let mut cx = Converter { at: &at, problems: &mut problems, flags };
        cx.routing(f, ai_configs);
        let flag = cx.flag(key, f);
        names.insert(key.clone(), f.variations.iter().map(|v| v.name.clone()).collect());
        data.flags.insert(key.clone(), flag);
    }
    for (key, s) in segments {
        let at = format!("segments.{key}");
        let segment = Converter { at: &at, problems: &mut problems, flags }.segment(key, s);
        data.segments.insert(key.clone(), segment);
    }
    (data, names, problems)
}

/// Map a compile problem's LaunchDarkly field (`rules[0].rollout.variations[1]`) back to
/// the YAML path it came from.
pub fn yaml_path(item: &str, field: &str) -> String {
    let mut out = String::with_capacity(item.len() + field.len() + 8);
    out.push_str(item);
    if field.is_empty() {
        return out;
    }
    out.push('.');
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The document path of a compile problem in LaunchDarkly JSON (whose field names the
/// problems already use).
pub fn yaml_path_ld(item: &str, field: &str) -> String {
    if field.is_empty() {
        item.to_string()
    } else {
        format!("{item}.{field}")
    }
}

struct Converter<'a> {
    at: &'a str,
    problems: &'a mut Vec<Problem>,
    flags: &'a BTreeMap<String, FlagConfig>,
}

impl Converter<'_> {
    /// A flag whose variations name AI configs routes requests: every variation must
    /// name an existing version, and the routing fields must name variations.
    fn routing(&mut self, f: &FlagConfig, ai_configs: &BTreeMap<String, AiConfigConfig>) {
        let routes = f.variations.iter().any(|v| v.ai_config.is_some());
        for (i, v) in f.variations.iter().enumerate() {
            let at = format!("variations[{i}]");
            match (&v.value, &v.ai_config, v.version) {
                (Some(_), None, None) if !routes => {}
                (None, None, None) if !routes => {}
                (None, Some(key), Some(version)) => match ai_configs.get(key) {
                    None => self.problem(&format!("{at}.ai_config"), format!("no AI config `{key}`")),
                    Some(c) if !c.versions.iter().any(|cv| cv.version == version) => {
                        let known: Vec<String> = c.versions.iter().map(|cv| cv.version.to_string()).collect();
                        self.problem(
                            &format!("{at}.version"),
                            format!("AI config `{key}` has no version {version} (it has: {})", known.join(", ")),
                        );
                    }
                    Some(_) => {}
                },
                (_, Some(_), None) => {
                    self.problem(&format!("{at}.version"), "an `ai_config` variation needs a `version`")
                }
                (_, None, Some(_)) => self.problem(&format!("{at}.ai_config"), "a `version` needs an `ai_config`"),
                (Some(_), Some(_), _) => self.problem(&at, "set either `value` or `ai_config` and `version`, not both"),
                _ => self
                    .problem(&at, "every variation of a flag that routes requests names an `ai_config` and `version`"),
            }
        }
        if let Some(name) = &f.fallback_variation {
            if !routes {
                self.problem("fallback_variation", "only a flag whose variations name AI configs can fall back");
            }
            if !f.variations.iter().any(|v| &v.name == name) {
                self.problem("fallback_variation", format!("unknown variation `{name}`"));
            }
        }
    }

    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(format!("{}.{field}", self.at), message));
    }

    fn variation_index(&mut self, f: &FlagConfig, field: &str, name: &str) -> i64 {
        match f.variations.iter().position(|v| v.name == name) {
            Some(i) => i as i64,
            None => {
                let known: Vec<&str> = f.variations.iter().map(|v| v.name.as_str()).collect();
                self.problem(field, format!("unknown variation `{name}` (the flag has: {})", known.join(", ")));
                0
            }
        }
    }

    fn flag(&mut self, key: &str, f: &FlagConfig) -> model::Flag {
        if f.variations.is_empty() {
            self.problem("variations", "a flag needs at least one variation");
        }
        for (i, v) in f.variations.iter().enumerate() {
            if f.variations[..i].iter().any(|w| w.name == v.name) {
                self.problem(&format!("variations[{i}].name"), format!("duplicate variation name `{}`", v.name));
            }
        }
        let off_variation = match &f.off_variation {
            Some(name) => Some(self.variation_index(f, "off_variation", name)),
            None => (!f.variations.is_empty()).then_some(0),
        };
        let prerequisites = f
            .prerequisites
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let variation = match self.flags.get(&p.flag) {
                    None => {
                        self.problem(&format!("prerequisites[{i}].flag"), format!("no flag `{}`", p.flag));
                        0
                    }
                    Some(pf) => self.variation_index(pf, &format!("prerequisites[{i}].variation"), &p.variation),
                };
                model::Prerequisite { key: p.flag.clone(), variation }
            })
            .collect();
        // Only `user` targets: LaunchDarkly's `targets`. Any other kind: `contextTargets`
        // for all, in the order written.
        let only_users = f.targets.iter().all(|t| t.context_kind == "user");
        let mut targets = Vec::new();
        let mut context_targets = Vec::new();
        for (i, t) in f.targets.iter().enumerate() {
            let variation = self.variation_index(f, &format!("targets[{i}].variation"), &t.variation);
            let target = model::Target {
                context_kind: (!only_users).then(|| t.context_kind.clone()),
                values: t.values.clone(),
                variation,
            };
            if only_users {
                targets.push(target);
            } else {
                context_targets.push(target);
            }
        }
        let rules = f
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (variation, rollout) = self.serve(f, &format!("rules[{i}]"), &r.serve);
                model::FlagRule {
                    id: r.id.clone().unwrap_or_else(|| format!("rule-{i}")),
                    clauses: r
                        .clauses
                        .iter()
                        .enumerate()
                        .map(|(j, c)| self.clause(&format!("rules[{i}].clauses[{j}]"), c))
                        .collect(),
                    variation,
                    rollout,
                }
            })
            .collect();
        let (variation, rollout) = self.serve(f, "fallthrough", &f.fallthrough);
        model::Flag {
            key: key.to_string(),
            version: 1,
            on: f.on,
            prerequisites,
            targets,
            context_targets,
            rules,
            fallthrough: model::VariationOrRollout { variation, rollout },
            off_variation,
            variations: f.variations.iter().map(VariationConfig::json).collect(),
            salt: f.salt.clone().unwrap_or_else(|| key.to_string()),
            deleted: false,
        }
    }

    fn serve(&mut self, f: &FlagConfig, at: &str, s: &ServeConfig) -> (Option<i64>, Option<model::Rollout>) {
        match (&s.variation, &s.rollout) {
            (Some(name), None) => (Some(self.variation_index(f, &format!("{at}.variation"), name)), None),
            (None, Some(r)) => {
                let mut total = 0i64;
                let variations = r
                    .variations
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let field = format!("{at}.rollout.variations[{i}]");
                        // Each variation once: a second entry would hide the share of another.
                        if let Some(first) = r.variations[..i].iter().position(|o| o.variation == w.variation) {
                            self.problem(
                                &format!("{field}.variation"),
                                format!("`{}` is already in this rollout (variations[{first}])", w.variation),
                            );
                        }
                        let weight = self.percent(&format!("{field}.percent"), w.percent);
                        total += weight;
                        model::WeightedVariation {
                            variation: self.variation_index(f, &format!("{field}.variation"), &w.variation),
                            weight,
                            untracked: w.untracked,
                        }
                    })
                    .collect();
                if total != 100_000 {
                    self.problem(
                        &format!("{at}.rollout.variations"),
                        format!("percentages add up to {}%, not 100%", total as f64 / 1000.0),
                    );
                }
                let rollout = model::Rollout {
                    kind: r.experiment.then(|| "experiment".to_string()),
                    context_kind: r.context_kind.clone(),
                    variations,
                    bucket_by: r.bucket_by.clone(),
                    seed: r.seed,
                };
                (None, Some(rollout))
            }
            _ => {
                self.problem(at, "set exactly one of `variation` or `rollout`");
                (None, None)
            }
        }
    }

    /// A percentage with up to three decimals, in LaunchDarkly's 100000ths.
    fn percent(&mut self, at: &str, p: f64) -> i64 {
        let thousandths = (p * 1000.0).round();
        if !(0.0..=100.0).contains(&p) || (p * 1000.0 - thousandths).abs() > 1e-6 {
            self.problem(at, format!("must be a percentage between 0 and 100 with at most three decimals, not {p}"));
        }
        thousandths as i64
    }

    fn clause(&mut self, at: &str, c: &ClauseConfig) -> model::Clause {
        let mut segments: Vec<Value> = c.segments.iter().map(|s| Value::String(s.clone())).collect();
        if let Some(s) = &c.segment {
            segments.insert(0, Value::String(s.clone()));
        }
        if !segments.is_empty() {
            if c.attribute.is_some() || c.op.is_some() || !c.values.is_empty() {
                self.problem(at, "a `segment` clause takes no `attribute`, `op` or `values`");
            }
            return model::Clause {
                context_kind: None,
                attribute: String::new(),
                op: "segmentMatch".into(),
                values: segments,
                negate: c.negate,
            };
        }
        let (Some(attribute), Some(op)) = (&c.attribute, &c.op) else {
            self.problem(at, "a clause needs `attribute` and `op` (or `segment`)");
            return model::Clause::default();
        };
        if c.values.is_empty() {
            self.problem(&format!("{at}.values"), "a clause needs at least one value");
        }
        model::Clause {
            // sluice clauses always take attribute references (`/a/b` paths).
            context_kind: Some(c.context_kind.clone().unwrap_or_else(user_kind)),
            attribute: attribute.clone(),
            op: op.clone(),
            values: c.values.clone(),
            negate: c.negate,
        }
    }

    fn segment(&mut self, key: &str, s: &SegmentConfig) -> model::Segment {
        let targets = |t: &[SegmentTargetConfig]| {
            t.iter()
                .map(|t| model::SegmentTarget { context_kind: t.context_kind.clone(), values: t.values.clone() })
                .collect()
        };
        let rules = s
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| model::SegmentRule {
                id: r.id.clone().unwrap_or_else(|| format!("rule-{i}")),
                clauses: r
                    .clauses
                    .iter()
                    .enumerate()
                    .map(|(j, c)| self.clause(&format!("rules[{i}].clauses[{j}]"), c))
                    .collect(),
                weight: r.percent.map(|p| self.percent(&format!("rules[{i}].percent"), p)),
                bucket_by: r.bucket_by.clone(),
                rollout_context_kind: r.rollout_context_kind.clone(),
            })
            .collect();
        model::Segment {
            key: key.to_string(),
            version: 1,
            included: s.included.clone(),
            excluded: s.excluded.clone(),
            included_contexts: targets(&s.included_contexts),
            excluded_contexts: targets(&s.excluded_contexts),
            rules,
            salt: s.salt.clone().unwrap_or_else(|| key.to_string()),
            unbounded: false,
            deleted: false,
        }
    }
}
