//! Semantic checks that serde cannot express. Each returns problems at document paths.

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use super::{Config, Problem, ProviderKind};
use crate::keys::KeyProblem;

/// Whether the value at `path` is (or is inside) a secret: a client's gateway key, a
/// provider's API key or extra headers, an admin token — an error there never quotes
/// the value. Other fields named `key` (a flag's, a prerequisite's) are not secrets.
/// (Names may hold dots, so only the section and the last field are compared.)
pub(super) fn is_secret_path(path: &str) -> bool {
    let under = |section: &str| path.strip_prefix(section).is_some_and(|rest| rest.starts_with(['.', '[']));
    (under("clients") && path.ends_with(".key"))
        || (under("providers") && (path.ends_with(".api_key") || path.contains(".headers.")))
        || (under("admin.tokens") && path.ends_with(".token"))
        || path == "feedback.key"
        || path == "state.redis.password"
}

pub(super) fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    state(config, &mut problems);
    limits(config, &mut problems);
    providers(config, &mut problems);
    clients(config, &mut problems);
    admin(config, &mut problems);
    for (key, flag) in &config.flags {
        if let Some(guard) = &flag.guard {
            let names: Vec<&str> = flag.variations.iter().map(|v| v.name.as_str()).collect();
            super::guard::validate(&format!("flags.{key}.guard"), guard, &names, &mut problems);
            for (i, m) in guard.metrics.iter().enumerate() {
                let at = format!("flags.{key}.guard.metrics[{i}].metric");
                let higher_is_better = match m.metric.kind {
                    super::guard::MetricKind::Feedback => m
                        .metric
                        .signal
                        .as_deref()
                        .and_then(|f| config.metrics.get(f))
                        .map(|d| d.direction == super::signals::Better::Higher),
                    super::guard::MetricKind::Judge => m
                        .metric
                        .quality_name()
                        .and_then(|j| config.judges.get(j))
                        .map(|j| j.direction == super::signals::Better::Higher),
                    _ => Some(false),
                };
                if m.margin.as_ref().is_some_and(|g| g.negative()) && higher_is_better == Some(false) {
                    problems.push(Problem::new(
                        format!("flags.{key}.guard.metrics[{i}].margin"),
                        format!("a negative margin says a decrease is the regression, but `{}` regresses when it rises: write it without the sign", m.metric.label()),
                    ));
                }
                match m.metric.kind {
                    super::guard::MetricKind::Feedback => {
                        if let Some(f) = m.metric.signal.as_deref().filter(|f| !config.metrics.contains_key(*f)) {
                            problems.push(Problem::new(at, format!("`feedback:{f}` names no metric under `metrics:`")));
                        }
                    }
                    super::guard::MetricKind::Judge | super::guard::MetricKind::Guardrail => {
                        quality_metric(config, flag, key, &m.metric.label(), at, &mut problems);
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = &flag.experiment {
            let names: Vec<&str> = flag.variations.iter().map(|v| v.name.as_str()).collect();
            let path = format!("flags.{key}.experiment");
            super::signals::validate_experiment(&path, e, &names, &config.metrics, &mut problems);
            let fields = std::iter::once(("primary".to_string(), &e.primary))
                .chain(e.secondary.iter().enumerate().map(|(i, m)| (format!("secondary[{i}]"), m)))
                .chain(e.guardrails.iter().enumerate().map(|(i, m)| (format!("guardrails[{i}]"), m)));
            for (field, m) in fields {
                quality_metric(config, flag, key, m, format!("{path}.{field}"), &mut problems);
            }
        }
        let judge = |n: &str| config.judges.contains_key(n);
        let guardrail = |n: &str| config.guardrails.contains_key(n);
        let at = format!("flags.{key}");
        super::judges::validate_uses(&at, &flag.judges, &flag.guardrails, &judge, &guardrail, &mut problems);
    }
    let providers = |name: &str| config.providers.contains_key(name);
    super::signals::validate(&config.metrics, &config.feedback, &config.pricing, &providers, &mut problems);
    super::judges::validate(&config.judges, &providers, &mut problems);
    super::guardrails::validate(&config.guardrails, &mut problems);
    aliases(config, &mut problems);
    flag_keys(config, &mut problems);
    problems
}

/// A `judge:<name>` or `guardrail:<name>` metric of flag `key`: defined, and attached to the flag.
pub(super) fn quality_metric(
    config: &Config,
    flag: &super::flags::FlagConfig,
    key: &str,
    metric: &str,
    at: String,
    problems: &mut Vec<Problem>,
) {
    let (defined, attached, what) = if let Some(name) = metric.strip_prefix("judge:") {
        (config.judges.contains_key(name), flag.judges.contains_key(name), ("judge", "judges"))
    } else if let Some(name) = metric.strip_prefix("guardrail:") {
        (config.guardrails.contains_key(name), flag.guardrails.contains_key(name), ("guardrail", "guardrails"))
    } else {
        return;
    };
    let name = metric.split_once(':').map_or("", |(_, n)| n);
    if !defined {
        problems.push(Problem::new(at, format!("`{metric}` names no {} under `{}:`", what.0, what.1)));
    } else if !attached {
        problems.push(Problem::new(
            at,
            format!(
                "`{metric}`: the flag `{key}` does not attach the {} `{name}` (add it under `flags.{key}.{}`)",
                what.0, what.1
            ),
        ));
    }
}

/// Flag and segment keys use LaunchDarkly's alphabet, and a flag (which apps name as
/// their `model`) must not shadow an alias.
fn flag_keys(config: &Config, problems: &mut Vec<Problem>) {
    let valid = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    for key in config.flags.keys() {
        if !valid(key) {
            problems
                .push(Problem::new(format!("flags.{key}"), "a flag key uses only letters, digits, `.`, `_` and `-`"));
        }
        if config.aliases.contains_key(key) {
            problems.push(Problem::new(
                format!("flags.{key}"),
                format!("`{key}` is also an alias; apps could not tell them apart"),
            ));
        }
    }
    for key in config.segments.keys() {
        if !valid(key) {
            problems.push(Problem::new(
                format!("segments.{key}"),
                "a segment key uses only letters, digits, `.`, `_` and `-`",
            ));
        }
    }
}

fn limits(config: &Config, problems: &mut Vec<Problem>) {
    let l = &config.limits;
    if l.max_request_body.0 == 0 {
        problems.push(Problem::new("limits.max_request_body", "must be greater than zero"));
    }
    for (name, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("body_read_timeout", l.body_read_timeout),
        ("client_write_timeout", l.client_write_timeout),
    ] {
        if d.0.is_zero() {
            problems.push(Problem::new(format!("limits.{name}"), "must be greater than zero"));
        }
    }
    if l.max_connections == 0 {
        problems.push(Problem::new("limits.max_connections", "must be greater than zero"));
    }
    let header = l.max_header_bytes.0;
    if !(super::MIN_HEADER_BYTES..=super::MAX_HEADER_BYTES).contains(&header) {
        problems.push(Problem::new(
            "limits.max_header_bytes",
            format!("must be between 8KiB and 16MiB (got {header} bytes)"),
        ));
    }
    if let Some(n) = l.workers.filter(|n| !(1..=super::MAX_WORKERS).contains(n)) {
        problems
            .push(Problem::new("limits.workers", format!("must be between 1 and {} (got {n})", super::MAX_WORKERS)));
    }
    if config.listen.data == config.listen.admin && config.listen.data.port() != 0 {
        problems.push(Problem::new(
            "listen.admin",
            "the admin listener must use a different address than the data listener",
        ));
    }
}

fn providers(config: &Config, problems: &mut Vec<Problem>) {
    if config.providers.is_empty() {
        problems.push(Problem::new("providers", "at least one provider is required"));
    }
    for (name, p) in &config.providers {
        let at = format!("providers.{name}");
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            problems.push(Problem::new(&at, "a provider name must be non-empty, without `/` or spaces"));
        }
        if p.base_url.as_deref().is_some_and(has_userinfo) {
            // The value is not quoted: it holds a secret.
            let msg = "the URL cannot hold credentials (`user:password@`): put the key in `api_key` or `headers`";
            problems.push(Problem::new(format!("{at}.base_url"), msg));
        }
        match (p.kind, &p.base_url) {
            (ProviderKind::Openai | ProviderKind::AzureOpenai, None) => {
                problems.push(Problem::new(&at, format!("an `{}` provider needs `base_url`", p.kind.as_str())));
            }
            (ProviderKind::AzureOpenai, Some(url)) => {
                if let Err(msg) = crate::wire::AzureUrl::parse(url, p.api_version.as_deref()) {
                    problems.push(Problem::new(format!("{at}.base_url"), msg));
                }
            }
            (_, Some(url)) => {
                if let Err(msg) = check_base_url(url) {
                    problems.push(Problem::new(format!("{at}.base_url"), msg));
                }
            }
            (ProviderKind::Anthropic | ProviderKind::Mock, None) => {}
        }
        kind_fields(&at, p, problems);
        if p.mock.is_some() && p.kind != ProviderKind::Mock {
            problems.push(Problem::new(format!("{at}.mock"), "only a `mock` provider takes `mock` settings"));
        }
        if let Some(m) = &p.mock {
            if m.error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                problems.push(Problem::new(format!("{at}.mock.error_rate"), "must be between 0 and 1"));
            }
            if m.error_status.is_some_and(|s| !(400..=599).contains(&s)) {
                problems
                    .push(Problem::new(format!("{at}.mock.error_status"), "must be an HTTP error status (400-599)"));
            }
        }
        if let Some(key) = &p.api_key {
            if HeaderValue::from_str(&format!("Bearer {}", key.expose())).is_err() {
                problems
                    .push(Problem::new(format!("{at}.api_key"), "contains characters not allowed in an HTTP header"));
            }
        }
        for (h, v) in &p.headers {
            let hp = format!("{at}.headers.{h}");
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                problems.push(Problem::new(&hp, "is not a valid HTTP header name"));
            } else if HeaderValue::from_str(v.expose()).is_err() {
                problems.push(Problem::new(&hp, "value contains characters not allowed in an HTTP header"));
            }
        }
        for (i, m) in p.models.iter().enumerate() {
            if m.is_empty() {
                problems.push(Problem::new(format!("{at}.models[{i}]"), "a model name cannot be empty"));
            }
        }
    }
}

/// Fields only some provider kinds take, and what each kind requires.
fn kind_fields(at: &str, p: &super::ProviderConfig, problems: &mut Vec<Problem>) {
    let kind = p.kind;
    let only = |field: &str, set: bool, allowed: ProviderKind, problems: &mut Vec<Problem>| {
        if set && kind != allowed {
            problems.push(Problem::new(
                format!("{at}.{field}"),
                format!("only an `{}` provider takes `{field}`", allowed.as_str()),
            ));
        }
    };
    only("api_version", p.api_version.is_some(), ProviderKind::AzureOpenai, problems);
    only("normalise", p.normalise.is_some(), ProviderKind::AzureOpenai, problems);
    only("anthropic_version", p.anthropic_version.is_some(), ProviderKind::Anthropic, problems);
    only("max_tokens", p.max_tokens.is_some(), ProviderKind::Anthropic, problems);
    only("quirks", p.quirks != super::Quirks::default(), ProviderKind::Openai, problems);
    if kind == ProviderKind::Anthropic {
        match p.max_tokens {
            None => problems.push(Problem::new(
                at,
                "an `anthropic` provider needs `max_tokens`: Anthropic requires it on every request, and it is \
                 used when neither the app nor the AI config version sets `max_tokens` or `max_completion_tokens`",
            )),
            Some(0) => problems.push(Problem::new(format!("{at}.max_tokens"), "must be at least 1")),
            Some(_) => {}
        }
        if let Some(v) = &p.anthropic_version {
            if v.is_empty() || HeaderValue::from_str(v).is_err() {
                problems.push(Problem::new(format!("{at}.anthropic_version"), "must be a version such as 2023-06-01"));
            }
        }
    }
    for (i, param) in p.quirks.drop_params.iter().enumerate() {
        if matches!(param.as_str(), "model" | "messages" | "stream" | "prompt" | "input") {
            problems.push(Problem::new(
                format!("{at}.quirks.drop_params[{i}]"),
                format!("`{param}` cannot be dropped: every request needs it"),
            ));
        }
    }
}

/// Whether a URL has a `user:password@` part.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().is_some_and(|authority| authority.contains('@'))
}

fn check_base_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with http:// or https://".to_string()),
    }
    if uri.authority().is_none() {
        return Err("the URL needs a host".to_string());
    }
    if uri.query().is_some() {
        return Err("the base URL cannot have a query string".to_string());
    }
    Ok(())
}

fn admin(config: &Config, problems: &mut Vec<Problem>) {
    let mut names = std::collections::HashSet::new();
    let mut digests = std::collections::HashMap::new();
    for (i, t) in config.admin.tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        if t.name.trim().is_empty() {
            problems.push(Problem::new(format!("{at}.name"), "cannot be empty: it names the actor in the audit log"));
        } else if !names.insert(t.name.as_str()) {
            problems.push(Problem::new(format!("{at}.name"), format!("`{}` is used by another token", t.name)));
        }
        let Some(digest) = secret_digest(&at, "token", t.token.as_ref(), t.token_sha256.as_deref(), 16, problems)
        else {
            continue;
        };
        if let Some(other) = digests.insert(digest, i) {
            problems.push(Problem::new(&at, format!("has the same token as admin.tokens[{other}]")));
        }
    }
}

/// The SHA-256 digest of a secret given either as itself (`field`, at least `min_len`
/// characters) or as its digest (`{field}_sha256`, hex); `None` after reporting a problem.
fn secret_digest(
    at: &str,
    field: &str,
    secret: Option<&super::values::Secret>,
    hex: Option<&str>,
    min_len: usize,
    problems: &mut Vec<Problem>,
) -> Option<crate::keys::KeyDigest> {
    let problem = match crate::keys::configured(secret.map(|s| s.expose()), hex, min_len) {
        Ok(digest) => return Some(digest),
        Err(problem) => problem,
    };
    problems.push(match problem {
        KeyProblem::TooShort { min_len } if min_len <= 1 => Problem::new(format!("{at}.{field}"), "cannot be empty"),
        KeyProblem::TooShort { min_len } => {
            Problem::new(format!("{at}.{field}"), format!("must be at least {min_len} characters"))
        }
        KeyProblem::BadDigest => Problem::new(format!("{at}.{field}_sha256"), "must be 64 hexadecimal digits"),
        KeyProblem::NotExactlyOne => Problem::new(at, format!("set exactly one of `{field}` or `{field}_sha256`")),
    });
    None
}

fn clients(config: &Config, problems: &mut Vec<Problem>) {
    if config.clients.is_empty() {
        problems.push(Problem::new(".", "at least one client (gateway key) is required under `clients`"));
    }
    let mut digests = std::collections::HashMap::new();
    for (name, c) in &config.clients {
        let at = format!("clients.{name}");
        let Some(digest) = secret_digest(&at, "key", c.key.as_ref(), c.key_sha256.as_deref(), 1, problems) else {
            continue;
        };
        if let Some(other) = digests.insert(digest, name) {
            problems.push(Problem::new(&at, format!("has the same key as client `{other}`")));
        }
    }
    for (name, c) in &config.clients {
        let at = format!("clients.{name}");
        match (c.kind, c.origins.is_empty()) {
            (super::ClientKind::Browser, true) => problems.push(Problem::new(
                format!("{at}.origins"),
                "a `browser` key needs the origins its pages are served from (CORS)",
            )),
            (super::ClientKind::Proxy | super::ClientKind::Ofrep, false) => problems.push(Problem::new(
                format!("{at}.origins"),
                "only a `kind: browser` key is called from web pages: set `kind: browser` (OFREP only)",
            )),
            _ => {}
        }
        for (i, origin) in c.origins.iter().enumerate() {
            if !super::signals::is_origin(origin) {
                problems.push(Problem::new(
                    format!("{at}.origins[{i}]"),
                    "an origin is `scheme://host[:port]`, e.g. `https://app.example.com`",
                ));
            }
        }
        if let Some(r) = c.ofrep_rate_limit {
            if !(r.per_second.is_finite() && r.per_second > 0.0 && r.per_second <= 1e6) {
                problems.push(Problem::new(format!("{at}.ofrep_rate_limit.per_second"), "a number in (0, 1000000]"));
            }
            if r.burst == 0 || r.burst > 1_000_000 {
                problems.push(Problem::new(format!("{at}.ofrep_rate_limit.burst"), "1 to 1000000"));
            }
        }
    }
}

fn aliases(config: &Config, problems: &mut Vec<Problem>) {
    for (alias, target) in &config.aliases {
        let at = format!("aliases.{alias}");
        match target.split_once('/') {
            Some((provider, model)) if !model.is_empty() => {
                if !config.providers.contains_key(provider) {
                    problems.push(Problem::new(&at, format!("unknown provider `{provider}`")));
                }
            }
            _ => problems.push(Problem::new(&at, "must be `provider/model`")),
        }
    }
}

/// The store named exists and has what it needs.
fn state(config: &Config, problems: &mut Vec<Problem>) {
    let s = &config.state;
    match (s.kind(), &s.redis) {
        (super::StoreKind::File, _) if s.dir.is_none() => {
            problems.push(Problem::new("state.store", "`store: file` needs `state.dir`"))
        }
        (super::StoreKind::Redis, None) => {
            problems.push(Problem::new("state.redis", "`store: redis` needs `state.redis` (at least its `url`)"))
        }
        (super::StoreKind::Redis, Some(r)) => {
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
                problems.push(Problem::new("state.redis.url", "must start with redis:// or rediss:// (TLS)"));
            } else if url_has_password(&r.url) {
                problems.push(Problem::new(
                    "state.redis.url",
                    "holds a password: put it in `state.redis.password` (as ${REDIS_PASSWORD}), which is never logged",
                ));
            }
            if r.prefix.is_empty()
                || r.prefix.len() > 64
                || !r.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                problems.push(Problem::new("state.redis.prefix", "1 to 64 letters, digits, `-`, `_` or `.`"));
            }
            for (name, d) in [("connect_timeout", r.connect_timeout.0), ("response_timeout", r.response_timeout.0)] {
                if d.is_zero() || d > std::time::Duration::from_secs(10) {
                    problems.push(Problem::new(format!("state.redis.{name}"), "between 1ms and 10s"));
                }
            }
        }
        (_, Some(_)) => problems.push(Problem::new("state.redis", "only with `store: redis`")),
        _ => {}
    }
}

/// Whether a Redis URL carries a password (`redis://user:pass@host`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}
