//! Logging set-up: a tracing filter from the config (or `RUST_LOG`) to stderr, as text or
//! JSON lines.
//!
//! At `debug` and `trace`, the HTTP and TLS libraries log every frame and record: one
//! client flooding HTTP/2 PINGs would write hundreds of megabytes of log. Their targets
//! are therefore capped at `info` unless the filter names them itself (`h2=debug`).

use crate::config::{LogConfig, LogFormat};

/// Targets of dependencies that log per frame or per record at `debug` and below.
const NOISY_TARGETS: [&str; 5] = ["h2", "hyper", "hyper_util", "rustls", "tokio_rustls"];

/// Logging to stderr; `RUST_LOG` overrides the configured level.
pub fn init_logging(log: &LogConfig) {
    let spec = std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(filter_spec(&spec))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `spec` (a `RUST_LOG`-style filter) with [`NOISY_TARGETS`] capped at `info` when its
/// default level is `debug` or `trace` and it does not name them.
pub fn filter_spec(spec: &str) -> String {
    let directives: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let verbose = directives.iter().any(|d| matches!(d.to_ascii_lowercase().as_str(), "debug" | "trace"));
    if !verbose {
        return spec.to_string();
    }
    let named = |target: &str| {
        directives.iter().any(|d| {
            let name = d.split(['=', '[']).next().unwrap_or_default();
            name == target || name.strip_prefix(target).is_some_and(|rest| rest.starts_with("::"))
        })
    };
    let mut out = directives.join(",");
    for target in NOISY_TARGETS.iter().filter(|t| !named(t)) {
        out.push_str(&format!(",{target}=info"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::filter_spec;

    #[test]
    fn debug_and_trace_cap_the_http_and_tls_libraries() {
        let capped = ",h2=info,hyper=info,hyper_util=info,rustls=info,tokio_rustls=info";
        assert_eq!(filter_spec("debug"), format!("debug{capped}"));
        assert_eq!(filter_spec("TRACE"), format!("TRACE{capped}"));
        assert_eq!(filter_spec("sluice=trace, debug"), format!("sluice=trace,debug{capped}"));
    }

    #[test]
    fn a_filter_naming_a_library_keeps_its_level() {
        assert_eq!(
            filter_spec("debug,h2=trace,hyper::proto=debug"),
            "debug,h2=trace,hyper::proto=debug,hyper_util=info,rustls=info,tokio_rustls=info"
        );
        assert_eq!(
            filter_spec("trace,rustls[handshake]=debug"),
            "trace,rustls[handshake]=debug,h2=info,hyper=info,hyper_util=info,tokio_rustls=info"
        );
        // `h2c` is not `h2`.
        assert!(filter_spec("debug,h2c=debug").contains(",h2=info"));
    }

    #[test]
    fn quieter_filters_are_unchanged() {
        for spec in ["info", "warn", "sluice=debug", "sluice::proxy=trace,info", "off", ""] {
            assert_eq!(filter_spec(spec), spec);
        }
    }

    #[test]
    fn the_capped_filter_parses() {
        let spec = filter_spec("debug,sluice=trace");
        assert!(tracing_subscriber::EnvFilter::try_new(&spec).is_ok(), "{spec}");
    }
}
