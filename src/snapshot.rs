//! The immutable, precompiled view of the configuration that one request uses.
//!
//! A [`Snapshot`] is built whenever the configuration changes and swapped in behind an
//! `ArcSwap`; the request path loads it once and never takes a lock or compiles
//! anything: providers are built, flags compiled, AI config versions compiled (message
//! templates included), and every response header value a route can send is ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use prometheus::IntCounter;

use crate::aiconfig::Version;
use crate::auth::Clients;
use crate::config::flags::{FlagConfig, WhenDisabled};
use crate::config::signals::{Better, ExperimentState, FeedbackConfig, MetricDef, MetricType, Price};
use crate::config::{Config, Problem, Targeting};
use crate::flags::FlagIndex;
use crate::metrics::{FeedbackCounters, Labels, Metrics, RouteMetrics, SignalKind, ValueStats};
use crate::providers::{Endpoint, Provider};
use crate::quality::capture::Budget;
use crate::quality::{ArmQuality, FlagQuality, Quality};
use crate::token::{Dedup, Signer};

/// The `model` label of pass-through requests for a model the provider does not list
/// (request data never becomes a label value).
pub const OTHER_MODEL: &str = "other";

/// Everything a data-plane request needs, built once per configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub clients: Clients,
    /// Compiled flags and their variation names.
    pub targeting: Targeting,
    /// Flags that route requests, by key (the `model` apps send).
    flag_routes: HashMap<Box<str>, FlagRoute>,
    /// Providers by name: `model: "name/model"` routes to one.
    providers: HashMap<String, ProviderRoute>,
    /// Aliases: a short model name → provider and upstream model name.
    aliases: HashMap<String, AliasRoute>,
    /// The metrics of requests that never reached a route (a bad key, an unknown model...).
    pub unrouted: Arc<RouteMetrics>,
    /// Each routing flag's fallthrough share by variation (percent), for `sluice_rollout_weight`.
    pub rollout_weights: Vec<(String, Vec<(String, f64)>)>,
    /// The `GET /v1/models` body, rendered once.
    pub models_json: Bytes,
    pub max_request_body: u64,
    pub body_read_timeout: Duration,
    pub access_log: bool,
    /// Whether the access log may include the request's messages.
    pub log_content: bool,
    /// Response tokens and feedback: the signer, the de-duplication set (both carried over
    /// from the previous snapshot), the age limit and the browser origins.
    pub feedback: Feedback,
    /// `metrics:`: app-reported metric definitions, in key order (a variant's `signals`
    /// has one entry per definition, in this order).
    pub metric_defs: Vec<(Box<str>, MetricDef)>,
    /// Each provider with what it was built from, so the next snapshot can keep it.
    built: HashMap<String, (BuiltFrom, Arc<Provider>)>,
    /// The judges (with their queues, carried over while unchanged) and guardrails.
    pub quality: Quality,
    /// A fleet instance's stand-in until the fleet's state is read: every request gets
    /// 503 `gateway_not_ready` (the config file's flags are not the fleet's).
    pub held: bool,
    /// What all answer captures may hold at once (`limits.capture_budget`).
    pub capture_budget: Arc<Budget>,
    /// What one answer's capture may hold (`limits.capture_per_request`).
    pub capture_limit: usize,
}

/// Response tokens and how feedback is taken.
#[derive(Debug)]
pub struct Feedback {
    /// What signs and checks tokens: `runtime`, unless the config names a key.
    pub signer: Arc<Signer>,
    /// The state directory's key (installed by `server::start`), or the process's own:
    /// what signs when the config names no key — also after a reload removes it.
    runtime: Arc<Signer>,
    /// The digest of `feedback.key`, or `None` when the key is the runtime one.
    key_from_config: Option<[u8; 32]>,
    /// Carried across snapshots (a reload never forgets what was counted).
    pub dedup: Arc<Dedup>,
    pub max_age_ms: u64,
    /// `feedback.browser_origins`, as `Origin` headers carry them.
    pub origins: Vec<HeaderValue>,
    /// `sluice_feedback_requests_total` by the statuses feedback answers.
    answers: Vec<(u16, IntCounter)>,
}

/// The statuses `POST /v1/feedback` answers (anything else counts as 500).
const FEEDBACK_STATUSES: [u16; 10] = [202, 400, 401, 403, 408, 409, 410, 413, 500, 503];

impl Feedback {
    fn build(config: &FeedbackConfig, previous: Option<&Feedback>, metrics: &Metrics) -> Feedback {
        let key_from_config = config.key.as_ref().map(|k| crate::keys::digest(k.expose().as_bytes()));
        // Until `server::start` installs the state directory's key: the process's own.
        let runtime = previous.map_or_else(|| Arc::new(Signer::new(&random_key())), |p| Arc::clone(&p.runtime));
        let signer = match (previous, &config.key) {
            (Some(p), Some(_)) if p.key_from_config == key_from_config => Arc::clone(&p.signer),
            (_, Some(key)) => Arc::new(Signer::new(key.expose().as_bytes())),
            (_, None) => Arc::clone(&runtime),
        };
        let dedup = match previous {
            Some(p) => {
                p.dedup.set_capacity(config.dedup_entries);
                Arc::clone(&p.dedup)
            }
            None => Arc::new(Dedup::new(config.dedup_entries)),
        };
        Feedback {
            signer,
            runtime,
            key_from_config,
            dedup,
            max_age_ms: u64::try_from(config.max_age.0.as_millis()).unwrap_or(u64::MAX),
            origins: config.browser_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect(),
            answers: FEEDBACK_STATUSES.iter().map(|&s| (s, metrics.feedback_answer(s))).collect(),
        }
    }

    /// Sign with `key` (the state directory's) whenever the config names no key of its own.
    pub fn use_key(&mut self, key: &[u8]) {
        self.runtime = Arc::new(Signer::new(key));
        if self.key_from_config.is_none() {
            self.signer = Arc::clone(&self.runtime);
        }
    }

    /// Whether the config names the key.
    pub fn key_in_config(&self) -> bool {
        self.key_from_config.is_some()
    }

    /// Count a feedback request answered with `status`.
    pub fn answered(&self, status: u16) {
        let counter =
            self.answers.iter().find(|(s, _)| *s == status).or_else(|| self.answers.iter().find(|(s, _)| *s == 500));
        if let Some((_, c)) = counter {
            c.inc();
        }
    }
}

/// 32 random bytes from the operating system.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_err() {
        // No OS randomness at all: a weak key is still better than none; say so.
        tracing::error!("the operating system gave no random bytes: response tokens are signed with a weak key");
        key.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    key
}

/// What a provider is built from.
#[derive(Debug, PartialEq)]
struct BuiltFrom {
    config: crate::config::ProviderConfig,
    defaults: crate::config::UpstreamTimeouts,
    workers: usize,
}

#[derive(Debug)]
struct ProviderRoute {
    provider: Arc<Provider>,
    /// Metrics of the models the provider lists, and of any other.
    listed: HashMap<String, Arc<RouteMetrics>>,
    other: Arc<RouteMetrics>,
}

#[derive(Debug)]
struct AliasRoute {
    provider: Arc<Provider>,
    model: String,
    metrics: Arc<RouteMetrics>,
}

/// A flag whose variations serve AI config versions.
#[derive(Debug)]
pub struct FlagRoute {
    pub index: FlagIndex,
    /// The flag key, for `x-sluice-flag`.
    pub header: HeaderValue,
    /// By variation index.
    pub variants: Vec<Variant>,
    pub fallback: Option<usize>,
    pub off_variation: Option<usize>,
    pub when_disabled: WhenDisabled,
    pub require_context_key: bool,
    /// The running experiment's iteration, carried in response tokens (0: none).
    pub iteration: u32,
    /// The endpoints apps may call this flag on.
    pub endpoints: Vec<Endpoint>,
    /// The judges and guardrails attached (`judges:`, `guardrails:`).
    pub quality: FlagQuality,
}

/// One variation of a routing flag.
#[derive(Debug)]
pub struct Variant {
    pub name: Box<str>,
    /// The variation name, for `x-sluice-variation`.
    pub header: HeaderValue,
    pub version: Arc<Version>,
    pub metrics: Arc<RouteMetrics>,
    /// Counts the requests the flag's fallback variation served after this one failed
    /// (absent on the fallback variation itself).
    pub fallbacks: Option<IntCounter>,
    /// Where app-reported metrics are counted, by position in [`Snapshot::metric_defs`].
    pub signals: Box<[VariantSignal]>,
    /// Where its judges' scores and guardrails' results are counted.
    pub quality: Arc<ArmQuality>,
}

/// One app-reported metric of one variation: its statistics and its Prometheus handles.
#[derive(Debug)]
pub struct VariantSignal {
    pub stats: Arc<ValueStats>,
    pub counters: FeedbackCounters,
}

impl VariantSignal {
    pub fn record(&self, x: f64) {
        self.stats.record(x);
        self.counters.record(x);
    }
}

/// Where a pass-through request's `model` goes.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub provider: &'a Arc<Provider>,
    /// The model name the provider knows.
    pub model: &'a str,
    pub metrics: &'a Arc<RouteMetrics>,
}

impl Snapshot {
    /// Compile a validated `config` and its compiled flags. Failures here are reported
    /// at their config path (a provider that cannot be built, an AI config version with
    /// a bad template...).
    ///
    /// Providers whose configuration is the same as in `previous` are kept, with their
    /// connection pools: a flag change does not drop warm upstream connections.
    pub fn build(
        config: &Config,
        targeting: Targeting,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut providers = HashMap::new();
        let workers = config.limits.workers();
        let mut built = HashMap::new();
        for (name, cfg) in &config.providers {
            let key = BuiltFrom { config: cfg.clone(), defaults: config.upstream.clone(), workers };
            let reused = previous.and_then(|p| p.built.get(name)).filter(|(from, _)| *from == key);
            let provider = match reused {
                Some((_, provider)) => Ok(Arc::clone(provider)),
                None => Provider::build(name, cfg, &config.upstream, workers).map(Arc::new),
            };
            match provider {
                Ok(p) => {
                    built.insert(name.clone(), (key, Arc::clone(&p)));
                    providers.insert(name.clone(), p);
                }
                Err(msg) => problems.push(Problem::new(format!("providers.{name}"), msg)),
            }
        }
        let passthrough = |provider: &str, model: &str| {
            let labels = Labels { provider: provider.to_string(), model: model.to_string(), ..Labels::default() };
            metrics.route(&labels, price(config, provider, model))
        };
        let mut aliases = HashMap::new();
        for (alias, target) in &config.aliases {
            let resolved = target.split_once('/').and_then(|(p, m)| providers.get(p).map(|provider| (p, m, provider)));
            match resolved {
                Some((p, m, provider)) => {
                    let route =
                        AliasRoute { provider: Arc::clone(provider), model: m.to_string(), metrics: passthrough(p, m) };
                    aliases.insert(alias.clone(), route);
                }
                None => problems
                    .push(Problem::new(format!("aliases.{alias}"), "must be `provider/model` of a known provider")),
            }
        }
        let versions = versions(config, &providers, metrics, &mut problems);
        let quality = Quality::build(config, metrics, previous.map(|p| &p.quality)).unwrap_or_else(|p| {
            problems.extend(p);
            Quality::default()
        });
        let mut flag_routes = HashMap::new();
        let mut rollout_weights = Vec::new();
        for (key, flag) in &config.flags {
            let compiled = Built { targeting: &targeting, versions: &versions, quality: &quality };
            if let Some(route) = flag_route(key, flag, config, &compiled, metrics, &mut problems) {
                if let Some(e) = &flag.experiment {
                    let names: Vec<&str> = flag.variations.iter().map(|v| v.name.as_str()).collect();
                    match e.state {
                        ExperimentState::Running => metrics.mark_iteration(key, e.iteration, &names),
                        ExperimentState::Stopped => metrics.end_iteration(key, e.iteration, &names),
                    }
                }
                flag_routes.insert(key.as_str().into(), route);
                rollout_weights.push((key.clone(), fallthrough_weights(flag)));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let models_json = models_json(config, &flag_routes);
        let providers = providers
            .into_iter()
            .map(|(name, provider)| {
                let listed = provider.models.iter().map(|m| (m.clone(), passthrough(&name, m))).collect();
                let other = passthrough(&name, OTHER_MODEL);
                (name, ProviderRoute { provider, listed, other })
            })
            .collect();
        Ok(Snapshot {
            clients: Clients::from_config(config, previous.map(|p| &p.clients)),
            targeting,
            flag_routes,
            providers,
            aliases,
            unrouted: metrics.route(&Labels::default(), None),
            rollout_weights,
            models_json,
            max_request_body: config.limits.max_request_body.0,
            body_read_timeout: config.limits.body_read_timeout.0,
            access_log: config.log.access_log,
            log_content: config.log.content,
            feedback: Feedback::build(&config.feedback, previous.map(|p| &p.feedback), metrics),
            metric_defs: config.metrics.iter().map(|(k, d)| (k.as_str().into(), d.clone())).collect(),
            built,
            quality,
            capture_budget: crate::quality::budget(
                usize::try_from(config.limits.capture_budget.0).unwrap_or(usize::MAX),
                previous.map(|p| &p.capture_budget),
            ),
            capture_limit: usize::try_from(config.limits.capture_per_request.0).unwrap_or(usize::MAX),
            held: false,
        })
    }

    /// Publish what the metrics show about this snapshot (rollout weights).
    pub fn publish(&self, metrics: &Metrics) {
        metrics.clear_rollout_weights();
        for (flag, weights) in &self.rollout_weights {
            metrics.set_rollout_weights(flag, weights);
        }
    }

    /// The routing flag `model` names, if any.
    pub fn flag_route(&self, model: &str) -> Option<&FlagRoute> {
        self.flag_routes.get(model)
    }

    /// Where a pass-through `model` goes: an alias, else `provider/model`.
    pub fn route<'a>(&'a self, model: &'a str) -> Option<Route<'a>> {
        if let Some(a) = self.aliases.get(model) {
            return Some(Route { provider: &a.provider, model: &a.model, metrics: &a.metrics });
        }
        let (provider, m) = model.split_once('/')?;
        if m.is_empty() {
            return None;
        }
        let p = self.providers.get(provider)?;
        Some(Route { provider: &p.provider, model: m, metrics: p.listed.get(m).unwrap_or(&p.other) })
    }
}

type Versions = HashMap<(String, u32), Arc<Version>>;

/// Compile every AI config version.
fn versions(
    config: &Config,
    providers: &HashMap<String, Arc<Provider>>,
    metrics: &Metrics,
    problems: &mut Vec<Problem>,
) -> Versions {
    let mut out = HashMap::new();
    // A request's rendered messages may be as large as a request body may be.
    let render_limit = usize::try_from(config.limits.max_request_body.0).unwrap_or(usize::MAX);
    for (key, ai) in &config.ai_configs {
        if ai.versions.is_empty() {
            problems
                .push(Problem::new(format!("ai_configs.{key}.versions"), "an AI config needs at least one version"));
        }
        let mut previous = 0;
        for (i, v) in ai.versions.iter().enumerate() {
            let at = format!("ai_configs.{key}.versions[{i}]");
            if v.version <= previous {
                problems.push(Problem::new(
                    format!("{at}.version"),
                    format!("versions are numbered in increasing order (this one follows {previous})"),
                ));
            }
            previous = v.version;
            let compiled = v.resolve().and_then(|resolved| {
                let missing = metrics.missing_variables(key, v.version);
                Version::compile(key, v.version, &resolved, providers, missing, render_limit)
            });
            match compiled {
                Ok(version) => {
                    out.insert((key.clone(), v.version), Arc::new(version));
                }
                Err(list) => problems.extend(list.into_iter().map(|(field, message)| {
                    Problem::new(if field.is_empty() { at.clone() } else { format!("{at}.{field}") }, message)
                })),
            }
        }
    }
    out
}

/// The route of a flag whose variations name AI configs; `None` for other flags.
/// What routing flags are built from, compiled already.
struct Built<'a> {
    targeting: &'a Targeting,
    versions: &'a Versions,
    quality: &'a Quality,
}

fn flag_route(
    key: &str,
    flag: &FlagConfig,
    config: &Config,
    built: &Built<'_>,
    metrics: &Metrics,
    problems: &mut Vec<Problem>,
) -> Option<FlagRoute> {
    let Built { targeting, versions, quality } = *built;
    let flag_quality = quality.flag(flag);
    if flag.variations.iter().all(|v| v.ai_config.is_none()) {
        return None;
    }
    let index = targeting.set.index(key)?;
    let mut header = |at: String, s: &str| {
        HeaderValue::from_str(s)
            .map_err(|_| problems.push(Problem::new(at, "must be plain ASCII: it is sent in a response header")))
            .ok()
    };
    let flag_header = header(format!("flags.{key}"), key)?;
    let position = |name: &str| flag.variations.iter().position(|v| v.name == name);
    let fallback = flag.fallback_variation.as_deref().and_then(position);
    let mut variants = Vec::with_capacity(flag.variations.len());
    for (i, v) in flag.variations.iter().enumerate() {
        let version = v.ai_config.as_ref().zip(v.version).and_then(|(k, n)| versions.get(&(k.clone(), n)));
        // A version that failed to compile is already reported under `ai_configs`.
        let name = header(format!("flags.{key}.variations[{i}].name"), &v.name);
        let version = Arc::clone(version?);
        let labels = Labels {
            flag: key.to_string(),
            variation: v.name.clone(),
            ai_config: version.key.to_string(),
            version: version.version.to_string(),
            provider: version.provider.name.clone(),
            model: version.model.to_string(),
        };
        let fallbacks = fallback.filter(|&f| f != i).map(|f| metrics.fallback(key, &v.name, &flag.variations[f].name));
        let price = price(config, &labels.provider, &labels.model);
        let signals = signals(config, metrics, key, &v.name);
        let arm_quality = flag_quality.arm(metrics, key, &v.name);
        variants.push(Variant {
            name: v.name.as_str().into(),
            header: name?,
            metrics: metrics.route(&labels, price),
            version,
            fallbacks,
            signals,
            quality: arm_quality,
        });
    }
    let endpoints = flag_endpoints(key, flag, &variants, problems);
    Some(FlagRoute {
        endpoints,
        index,
        header: flag_header,
        variants,
        fallback,
        off_variation: flag.off_variation.as_deref().map_or(Some(0), position),
        when_disabled: flag.when_disabled,
        require_context_key: flag.require_context_key,
        iteration: flag.experiment.as_ref().filter(|e| e.state == ExperimentState::Running).map_or(0, |e| e.iteration),
        quality: flag_quality,
    })
}

/// The price of `model` at `provider`, if `pricing:` has one.
fn price(config: &Config, provider: &str, model: &str) -> Option<Price> {
    config.pricing.get(provider).and_then(|models| models.get(model)).copied()
}

/// The handles of every app-reported metric of (flag, variation), in `metrics:` order.
fn signals(config: &Config, metrics: &Metrics, flag: &str, variation: &str) -> Box<[VariantSignal]> {
    let stats = metrics.guard_stats(flag, variation);
    config
        .metrics
        .iter()
        .map(|(key, def)| {
            let kind = match def.kind {
                MetricType::Boolean => SignalKind::Boolean,
                MetricType::Numeric => SignalKind::Numeric,
            };
            VariantSignal {
                stats: stats.signal(key, kind, def.direction == Better::Higher),
                counters: metrics.feedback(flag, variation, key, kind),
            }
        })
        .collect()
}

/// The endpoints a routing flag serves: those it lists, each of which every variation's
/// provider must serve (or else a problem). Without a list, every variation's provider
/// must serve every endpoint (true of all kinds but `anthropic`), or the list is required.
fn flag_endpoints(key: &str, flag: &FlagConfig, variants: &[Variant], problems: &mut Vec<Problem>) -> Vec<Endpoint> {
    let serve_all = |e: Endpoint| variants.iter().all(|v| v.version.provider.serves(e));
    let Some(listed) = &flag.endpoints else {
        let all: Vec<Endpoint> = Endpoint::ALL.into_iter().filter(|&e| serve_all(e)).collect();
        // Variations that serve different endpoints: which ones the flag serves must be said,
        // so adding (say) an Anthropic variation never silently takes endpoints away from apps.
        let served_by = |v: &Variant| Endpoint::ALL.into_iter().filter(|&e| v.version.provider.serves(e)).count();
        let fewest = flag.variations.iter().zip(variants).find(|(_, v)| served_by(v) == all.len());
        let most = variants.iter().map(served_by).max().unwrap_or(0);
        if let Some((v, variant)) = fewest.filter(|_| most > all.len()) {
            let p = &variant.version.provider;
            let served: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
            problems.push(Problem::new(
                format!("flags.{key}"),
                format!(
                    "variation `{}` routes to the `{}` provider `{}`, which does not serve every endpoint the \
                     other variations serve: list the endpoints this flag serves, e.g. `endpoints: [{}]`",
                    v.name,
                    p.kind_name.as_str(),
                    p.name,
                    served.join(", ")
                ),
            ));
        }
        return all;
    };
    if listed.is_empty() {
        problems.push(Problem::new(format!("flags.{key}.endpoints"), "list at least one endpoint"));
    }
    for (i, &e) in listed.iter().enumerate() {
        for (v, variant) in flag.variations.iter().zip(variants) {
            let provider = &variant.version.provider;
            if !provider.serves(e) {
                problems.push(Problem::new(
                    format!("flags.{key}.endpoints[{i}]"),
                    format!(
                        "variation `{}` routes to the `{}` provider `{}`, which does not serve {}: remove `{}` \
                         from `endpoints` or route that variation to another provider",
                        v.name,
                        provider.kind_name.as_str(),
                        provider.name,
                        e.path(),
                        e.as_str()
                    ),
                ));
            }
        }
    }
    listed.clone()
}

/// The share of the fallthrough traffic (percent) each variation gets while the flag is on
/// (all of it to the off variation while it is off).
fn fallthrough_weights(flag: &FlagConfig) -> Vec<(String, f64)> {
    let off = flag.off_variation.as_deref().or_else(|| flag.variations.first().map(|v| v.name.as_str()));
    flag.variations
        .iter()
        .map(|v| {
            let weight = if !flag.on {
                if off == Some(v.name.as_str()) {
                    100.0
                } else {
                    0.0
                }
            } else if let Some(rollout) = &flag.fallthrough.rollout {
                rollout.variations.iter().filter(|w| w.variation == v.name).map(|w| w.percent).sum()
            } else if flag.fallthrough.variation.as_deref() == Some(v.name.as_str()) {
                100.0
            } else {
                0.0
            };
            (v.name.clone(), weight)
        })
        .collect()
}

/// The OpenAI `GET /v1/models` list: routing flags, aliases, then each provider's
/// listed models.
fn models_json(config: &Config, flag_routes: &HashMap<Box<str>, FlagRoute>) -> Bytes {
    let mut flags: Vec<&str> = flag_routes.keys().map(|k| &**k).collect();
    flags.sort_unstable();
    let mut ids: Vec<(String, &str)> = flags.into_iter().map(|k| (k.to_string(), "sluice-flag")).collect();
    ids.extend(config.aliases.keys().map(|a| (a.clone(), "sluice-alias")));
    let listed: BTreeMap<&String, &Vec<String>> = config.providers.iter().map(|(n, p)| (n, &p.models)).collect();
    for (name, models) in listed {
        ids.extend(models.iter().map(|m| (format!("{name}/{m}"), "sluice")));
    }
    let data: Vec<_> = ids
        .into_iter()
        .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Claims;

    fn build(yaml: &str, metrics: &Metrics, previous: Option<&Snapshot>) -> Snapshot {
        let text = format!(
            "clients: {{app: {{key: sk-app-0123456789}}}}\nproviders: {{mock: {{kind: mock}}}}\nmetrics: {{thumbs_up: {{type: boolean, direction: higher}}}}\n{yaml}"
        );
        let mut loaded = crate::config::parse(&text, "t.yaml", &|_| None).unwrap();
        let targeting = std::mem::take(&mut loaded.targeting);
        Snapshot::build(&loaded.config, targeting, metrics, previous).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            issued_ms: 1,
            nonce: [1; 8],
            random_context: false,
            iteration: 0,
            version: 1,
            context: [0; 8],
            flag: "f".into(),
            variation: "v".into(),
            ai_config: "a".into(),
        }
    }

    #[test]
    fn a_reload_keeps_the_state_directory_key_and_the_dedup_set() {
        let metrics = Metrics::new().unwrap();
        let mut first = build("", &metrics, None);
        // What `server::start` does with the state directory's key.
        first.feedback.use_key(&[9; 32]);
        let state_dir_token = first.feedback.signer.sign(&claims()).unwrap();
        let with_key = build(
            "feedback: {key: config-key-0123456789abcdef-0123456789, dedup_entries: 5}\n",
            &metrics,
            Some(&first),
        );
        assert!(with_key.feedback.signer.verify(&state_dir_token).is_err(), "the config's key signs");
        assert!(Arc::ptr_eq(&first.feedback.dedup, &with_key.feedback.dedup));
        assert_eq!(with_key.feedback.dedup.capacity(), 5);
        // The config's key removed by a reload: the state directory's key again, not a new one.
        let without = build("", &metrics, Some(&with_key));
        assert!(without.feedback.signer.verify(&state_dir_token).is_ok());
        assert!(Arc::ptr_eq(&first.feedback.dedup, &without.feedback.dedup));
    }
}
