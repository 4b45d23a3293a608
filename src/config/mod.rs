//! The config file: its shape, loading with `${VAR}` interpolation, and validation
//! that names the file, line and column of every problem.
//!
//! Loading is `text → (JSON value, locations)` ([`yaml`]), then serde (through
//! `serde_path_to_error`, so type and unknown-field errors carry a path), then semantic
//! checks ([`validate`]). Every error is a path that [`yaml::Locations`] turns into
//! `file:line:col`. Secrets are [`Secret`]s and never appear in an error.

pub mod aiconfig;
pub mod flags;
pub mod guard;
pub mod guardrails;
pub mod judges;
pub mod signals;
mod validate;
pub mod values;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use values::{ByteSize, HumanDuration, Secret};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    /// Upstream timeouts used by every provider that does not set its own.
    #[serde(default)]
    pub upstream: UpstreamTimeouts,
    /// Apps allowed to call the data plane, by name.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientConfig>,
    /// Model providers, by name. A request's `model` of `name/model` routes to one.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Short model names that stand for `provider/model`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub log: LogConfig,
    /// Feature flags, by key: which variation each context gets.
    #[serde(default)]
    pub flags: BTreeMap<String, flags::FlagConfig>,
    /// Reusable sets of contexts that flag rules can match.
    #[serde(default)]
    pub segments: BTreeMap<String, flags::SegmentConfig>,
    /// AI configs, by key: versioned provider, model, parameters and prompt messages.
    #[serde(default)]
    pub ai_configs: BTreeMap<String, aiconfig::AiConfigConfig>,
    /// The admin API's tokens.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where runtime changes and the audit log are kept.
    #[serde(default)]
    pub state: StateConfig,
    /// Metrics apps report through `POST /v1/feedback`, by key.
    #[serde(default)]
    pub metrics: BTreeMap<String, signals::MetricDef>,
    /// How feedback is accepted: the token key, its age limit, browser origins.
    #[serde(default)]
    pub feedback: signals::FeedbackConfig,
    /// Prices per provider and model, for `sluice_cost_usd_total` and the `cost` metric.
    #[serde(default)]
    pub pricing: signals::Pricing,
    /// LLM-as-judge evaluators, by name.
    #[serde(default)]
    pub judges: BTreeMap<String, judges::JudgeConfig>,
    /// In-process checks of answers, by name.
    #[serde(default)]
    pub guardrails: BTreeMap<String, guardrails::GuardrailConfig>,
}

/// The admin API: who may read and who may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
}

/// One admin API bearer token; its name is the actor in the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// The token itself, or…
    #[serde(default)]
    pub token: Option<Secret>,
    /// …its SHA-256 digest in hex.
    #[serde(default)]
    pub token_sha256: Option<String>,
    pub role: AdminRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Read flags, AI configs, the audit log.
    Read,
    /// Read, and change.
    Write,
}

/// Where the runtime state lives: a state directory (current documents, the audit log, a
/// lock), memory, or a Redis shared by a fleet of instances.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The file store's directory. With `store: redis`, where this instance keeps its copy
    /// of the fleet's state (served when Redis is down at start). Without it and without
    /// Redis, runtime changes live in memory only and are lost on restart.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// `file` (the default with `dir`), `memory` (the default without) or `redis`.
    #[serde(default)]
    pub store: Option<StoreKind>,
    /// The shared store, with `store: redis`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    File,
    Memory,
    Redis,
}

impl StateConfig {
    /// The store in use: as configured, or by whether there is a directory.
    pub fn kind(&self) -> StoreKind {
        self.store.unwrap_or(if self.dir.is_some() { StoreKind::File } else { StoreKind::Memory })
    }
}

/// One Redis 7 primary (with AOF) shared by every instance of a fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS, checked against the web's root
    /// certificates). A password belongs in `password`, not here.
    pub url: String,
    /// Sent with `AUTH`; write it as `${REDIS_PASSWORD}`.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub username: Option<String>,
    /// Every key sluice uses is `{prefix}:…` (one hash slot).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    #[serde(default = "default_redis_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long one command may take before Redis counts as down.
    #[serde(default = "default_redis_response_timeout")]
    pub response_timeout: HumanDuration,
}

fn default_redis_prefix() -> String {
    "sluice".into()
}

fn default_redis_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

fn default_redis_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}

/// Where sluice listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The data plane (the OpenAI-compatible API).
    #[serde(default = "default_data_addr")]
    pub data: SocketAddr,
    /// The admin plane (health, later the admin API and metrics). Keep it private.
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
    /// TLS for the data plane; absent means cleartext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_data_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

impl Default for Listen {
    fn default() -> Self {
        Listen { data: default_data_addr(), admin: default_admin_addr(), tls: None }
    }
}

/// PEM files for TLS termination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits that protect sluice from its clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted; larger gets 413.
    #[serde(default = "default_max_body")]
    pub max_request_body: ByteSize,
    /// Time a client has to send the request head; also the longest a connection may stay
    /// open without a request in flight (`server::conn`).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Time a client has to send the request body once the head has arrived.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: HumanDuration,
    /// On shutdown, how long in-flight requests and streams may take to finish.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Data-plane worker threads, each with its own event loop and upstream pools.
    /// Default: one per CPU core available to the process.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Largest request head, over HTTP/1.1 (request line and headers, as sent) and HTTP/2
    /// (the header list, as RFC 9113 counts it); larger gets 431. 64 KiB leaves room for
    /// large `x-sluice-context` and `x-sluice-variables` headers.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Longest a response write may wait for the client to read: a client that stops
    /// reading a stream is disconnected after this, and its upstream stream released.
    #[serde(default = "default_client_write_timeout")]
    pub client_write_timeout: HumanDuration,
    /// Most data-plane connections open at once; past it new ones are closed at once. The
    /// descriptor limit may lower it (`server::accept`); the admin plane has its own cap.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most answer text kept from one request for its judges and guardrails; a longer
    /// answer is checked on what was kept (marked truncated) and not judged.
    #[serde(default = "default_capture_per_request")]
    pub capture_per_request: ByteSize,
    /// The most memory all captures hold at once (answers, and the request bodies their
    /// judges will read); a request that would pass it is not captured (counted as skipped).
    #[serde(default = "default_capture_budget")]
    pub capture_budget: ByteSize,
}

/// Smallest `limits.max_header_bytes`: hyper's smallest HTTP/1.1 read buffer.
pub const MIN_HEADER_BYTES: u64 = 8 << 10;
/// Largest `limits.max_header_bytes`.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Most data-plane worker threads accepted in the config.
pub const MAX_WORKERS: usize = 1024;

impl Limits {
    /// The number of data-plane worker threads: configured, or one per available core.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
            .clamp(1, MAX_WORKERS)
    }
}

fn default_max_body() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_body_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_capture_per_request() -> ByteSize {
    ByteSize(64 << 10)
}
fn default_capture_budget() -> ByteSize {
    ByteSize(32 << 20)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_client_write_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(64 << 10)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: default_max_body(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            shutdown_grace: default_shutdown_grace(),
            workers: None,
            max_header_bytes: default_max_header_bytes(),
            client_write_timeout: default_client_write_timeout(),
            max_connections: default_max_connections(),
            capture_per_request: default_capture_per_request(),
            capture_budget: default_capture_budget(),
        }
    }
}

/// Upstream timeouts. Each is optional so a provider can override only some.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Option<HumanDuration>,
    /// From sending the request to the response head — and, for a stream, its first event.
    pub first_byte: Option<HumanDuration>,
    /// Longest silence between two body frames of a response.
    pub idle: Option<HumanDuration>,
}

/// Resolved upstream timeouts of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

impl UpstreamTimeouts {
    /// These timeouts, falling back to `base`, then to the built-in defaults.
    pub fn resolve(&self, base: &UpstreamTimeouts) -> Timeouts {
        let pick = |own: Option<HumanDuration>, base: Option<HumanDuration>, default: u64| {
            own.or(base).map_or(Duration::from_secs(default), |d| d.0)
        };
        Timeouts {
            connect: pick(self.connect, base.connect, 5),
            first_byte: pick(self.first_byte, base.first_byte, 300),
            idle: pick(self.idle, base.idle, 120),
        }
    }
}

/// An app allowed to call the data plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The gateway key the app sends as `Authorization: Bearer <key>`.
    pub key: Option<Secret>,
    /// Or the hex SHA-256 of that key, so the file need not hold the key itself.
    pub key_sha256: Option<String>,
    /// Attributes of the app, for targeting.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// What the key may call (`proxy`: everything; `ofrep`: only OpenFeature remote
    /// evaluation; `browser`: only OFREP, from `origins` — a key safe to ship in a page).
    #[serde(default)]
    pub kind: ClientKind,
    /// Only these flags over OFREP (absent: every flag).
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// `kind: browser`: the web origins its pages are served from (CORS).
    #[serde(default)]
    pub origins: Vec<String>,
    /// OFREP evaluations this key may make, past which it gets 429 with `Retry-After`.
    #[serde(default)]
    pub ofrep_rate_limit: Option<RateLimit>,
}

/// What a gateway key may call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// The OpenAI endpoints, feedback and OFREP.
    #[default]
    Proxy,
    /// OFREP only.
    Ofrep,
    /// OFREP only, from the client's `origins` (CORS).
    Browser,
}

/// A rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// How sluice talks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server.
    Openai,
    /// Azure OpenAI: `api-key` auth, deployment names as models.
    AzureOpenai,
    /// Anthropic's Messages API, translated to and from OpenAI's chat completions.
    Anthropic,
    /// The built-in fake provider: answers in-process, no network.
    Mock,
}

impl ProviderKind {
    /// The kind as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
        }
    }
}

/// A model provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL the OpenAI paths are appended to, e.g. `https://api.openai.com/v1`; for
    /// `azure_openai`, the resource's endpoint (see `docs/providers/azure_openai.md`).
    pub base_url: Option<String>,
    /// Sent upstream as `Authorization: Bearer <api_key>` (`api-key` for Azure,
    /// `x-api-key` for Anthropic).
    pub api_key: Option<Secret>,
    /// `azure_openai`: the `api-version` of the deployment URL form.
    pub api_version: Option<String>,
    /// `anthropic`: the `anthropic-version` header (default `2023-06-01`).
    pub anthropic_version: Option<String>,
    /// `anthropic`: `max_tokens` for requests that set neither `max_tokens` nor
    /// `max_completion_tokens` (Anthropic requires it).
    pub max_tokens: Option<u64>,
    /// `openai`: how this OpenAI-compatible server differs from OpenAI.
    #[serde(default)]
    pub quirks: Quirks,
    /// `azure_openai`: drop Azure's content-filter annotations from answers (default true).
    pub normalise: Option<bool>,
    /// Extra headers sent upstream (values are treated as secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Models listed by `GET /v1/models` as `provider/model`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Knobs of a `mock` provider.
    pub mock: Option<MockConfig>,
}

/// Where an OpenAI-compatible server differs from OpenAI.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quirks {
    /// Whether the server accepts `stream_options`. When false, it is removed from
    /// requests (and streamed usage is then unknown unless the server sends it anyway).
    #[serde(default = "yes")]
    pub stream_options: bool,
    /// Top-level request parameters removed before sending.
    #[serde(default)]
    pub drop_params: Vec<String>,
    /// Number streamed tool calls that come without an `index` (by their `id`).
    #[serde(default)]
    pub fill_tool_call_index: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks { stream_options: true, drop_params: Vec::new(), fill_tool_call_index: false }
    }
}

fn yes() -> bool {
    true
}

/// Knobs of the built-in mock provider.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    pub latency: Option<HumanDuration>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub chunks: Option<usize>,
    pub chunk_delay: Option<HumanDuration>,
    /// The text of every generated answer instead of `mock0 mock1 ...` (at most 64 KiB).
    pub answer: Option<String>,
    /// Judge mode: chat completions answer as an LLM judge (see `sluice_mock`).
    pub judge: Option<bool>,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `sluice=debug`. `RUST_LOG` overrides it. At `debug`
    /// and `trace`, the HTTP and TLS libraries are capped at `info` unless named
    /// (`cli::logging`).
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    /// One line per request at info level when it ends: request id, client, flag,
    /// variation, AI config version, provider, model, status, outcome, durations, tokens.
    #[serde(default)]
    pub access_log: bool,
    /// Add the request's `messages` (cut to 4 KiB) to the access log. Off by default:
    /// prompts may hold personal data.
    #[serde(default)]
    pub content: bool,
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_log_level(), format: LogFormat::Text, access_log: false, content: false }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One problem in a config file, at a path of the document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

/// Every problem found in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// `(line, col, message)`, in file order.
    pub problems: Vec<(usize, usize, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, col, msg)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{line}:{col}: {msg}", self.file)?;
        }
        Ok(())
    }
}

/// A parsed config file and where each of its nodes was written.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub file: String,
    pub locations: yaml::Locations,
    /// The config's flags and segments, compiled.
    pub targeting: Targeting,
    /// The whole file as JSON (after interpolation): the base runtime changes apply to.
    pub value: serde_json::Value,
}

/// Compiled flags with their variation names.
#[derive(Debug, Default)]
pub struct Targeting {
    pub set: crate::flags::FlagSet,
    /// Variation names by flag key (empty for LaunchDarkly JSON data).
    pub names: flags::VariationNames,
}

impl Targeting {
    /// The name of variation `index` of `flag`, when the data has names.
    pub fn variation_name(&self, flag: &str, index: usize) -> Option<&str> {
        self.names.get(flag).and_then(|n| n.get(index)).map(String::as_str)
    }
}

/// Convert and compile sluice-format flags; every problem is an error at its YAML path.
fn compile_targeting(
    flags: &BTreeMap<String, flags::FlagConfig>,
    segments: &BTreeMap<String, flags::SegmentConfig>,
    ai_configs: &BTreeMap<String, aiconfig::AiConfigConfig>,
) -> Result<Targeting, Vec<Problem>> {
    let (data, names, mut problems) = flags::convert(flags, segments, ai_configs);
    let set = crate::flags::FlagSet::compile(&data);
    // A field already reported by the conversion is not reported twice.
    let converted: std::collections::HashSet<String> = problems.iter().map(|q| q.path.clone()).collect();
    for p in set.problems() {
        let path = flags::yaml_path(&p.item, &p.field);
        if !converted.contains(&path) {
            problems.push(Problem::new(path, p.message.clone()));
        }
    }
    if problems.is_empty() {
        Ok(Targeting { set, names })
    } else {
        Err(problems)
    }
}

impl Loaded {
    /// Turn problems found later (for example while building TLS) into a located error.
    pub fn error(&self, problems: Vec<Problem>) -> ConfigError {
        locate(&self.file, &self.locations, problems)
    }
}

fn locate(file: &str, locations: &yaml::Locations, problems: Vec<Problem>) -> ConfigError {
    let mut located: Vec<_> = problems
        .into_iter()
        .map(|p| {
            // An unknown field is best shown at its key, anything else at its value.
            let loc = if p.message.starts_with("unknown field") {
                locations.locate_key(&p.path)
            } else {
                locations.locate(&p.path)
            };
            let msg = if p.path == "." { p.message } else { format!("{}: {}", p.path, p.message) };
            (loc.line, loc.col, msg)
        })
        .collect();
    located.sort();
    located.dedup();
    ConfigError { file: file.to_string(), problems: located }
}

/// Largest config (or flag data) file read: a larger one is refused before it is parsed.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Read and validate a config file, with `${VAR}` taken from the process environment.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read_file(path)?;
    parse(&text, &path.display().to_string(), &|name| std::env::var(name).ok())
}

/// Read a config file of at most [`MAX_CONFIG_FILE`] bytes.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let fail = |message: String| ConfigError { file: path.display().to_string(), problems: vec![(0, 0, message)] };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read config file: {e}")))?;
    // `take` bounds the read even when the file grows while it is read.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read config file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(fail(format!("the file is larger than the limit of {} MiB", MAX_CONFIG_FILE >> 20)));
    }
    String::from_utf8(bytes).map_err(|_| fail("cannot read config file: it is not valid UTF-8".to_string()))
}

/// Parse and validate config text. `file` is only used in error messages.
pub fn parse(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let (mut value, locations) = yaml::load(text, env).map_err(|e| ConfigError {
        file: file.to_string(),
        problems: vec![(e.location.line, e.location.col, e.message)],
    })?;
    let unread = judges::inline_rubrics(&mut value, Path::new(file).parent());
    if !unread.is_empty() {
        return Err(locate(file, &locations, unread));
    }
    match check_value(value.clone()) {
        Ok((config, targeting)) => Ok(Loaded { config, file: file.to_string(), locations, targeting, value }),
        Err(problems) => Err(locate(file, &locations, problems)),
    }
}

/// Deserialize and validate a whole config given as a JSON value (the file's, or the
/// file's with the runtime flags, segments and AI configs in place); problems by path.
pub fn check_value(value: serde_json::Value) -> Result<(Config, Targeting), Vec<Problem>> {
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = if validate::is_secret_path(&path) {
            "invalid value (not shown: this field holds a secret); expected a string".to_string()
        } else {
            e.into_inner().to_string()
        };
        vec![Problem::new(path, message)]
    })?;
    let mut problems = validate::validate(&config);
    let targeting =
        compile_targeting(&config.flags, &config.segments, &config.ai_configs).map_err(|p| problems.extend(p)).ok();
    match targeting {
        Some(targeting) if problems.is_empty() => Ok((config, targeting)),
        _ => Err(problems),
    }
}

/// Flag data for `sluice eval`: LaunchDarkly JSON (a `.json` file, or text starting
/// with `{`) or sluice YAML (the `flags` and `segments` of a config file; the rest of
/// the file is ignored). LaunchDarkly data is accepted as LaunchDarkly accepts it; its
/// problems come back as warnings. sluice data with problems is refused.
pub fn load_flag_data(path: &Path) -> Result<(Targeting, Vec<String>), ConfigError> {
    let file = path.display().to_string();
    let fail = |problems| ConfigError { file: file.clone(), problems };
    let text = read_file(path)?;
    let (value, locations) = yaml::load(&text, &|name| std::env::var(name).ok())
        .map_err(|e| fail(vec![(e.location.line, e.location.col, e.message)]))?;
    let located = |problems| locate(&file, &locations, problems);
    if path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{') {
        let data =
            crate::flags::FlagData::from_ld_json(value).map_err(|e| located(vec![Problem::new(e.path, e.message)]))?;
        let set = crate::flags::FlagSet::compile(&data);
        // LaunchDarkly's field names are the JSON's: each problem is located as it is.
        let warnings = set
            .problems()
            .iter()
            .map(|p| {
                let loc = locations.locate(&flags::yaml_path_ld(&p.item, &p.field));
                format!("{file}:{}:{}: {p}", loc.line, loc.col)
            })
            .collect();
        return Ok((Targeting { set, names: Default::default() }, warnings));
    }
    let flags = section(&value, "flags").map_err(|p| located(vec![p]))?;
    let segments = section(&value, "segments").map_err(|p| located(vec![p]))?;
    let ai_configs = section(&value, "ai_configs").map_err(|p| located(vec![p]))?;
    let targeting = compile_targeting(&flags, &segments, &ai_configs).map_err(located)?;
    Ok((targeting, Vec::new()))
}

/// Deserialize the top-level `name` section of a document (absent is empty).
fn section<T: serde::de::DeserializeOwned + Default>(value: &serde_json::Value, name: &str) -> Result<T, Problem> {
    match value.get(name) {
        None => Ok(T::default()),
        Some(v) => serde_path_to_error::deserialize(v.clone())
            .map_err(|e| Problem::new(format!("{name}.{}", e.path()), e.into_inner().to_string())),
    }
}

#[cfg(test)]
mod tests;
