//! Log output for both processes: `[log] format` = `text` (colour only when stderr is a
//! terminal, so a file or a pod log never gets ANSI escapes) or `json` (one object a line, for
//! log shippers); `RUST_LOG` filters (default `info`).

use std::io::IsTerminal;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, after the config is loaded (the format is in it).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Logs, once, the `IMAGEGATE_*` variables that were not read as config (service links).
pub fn warn_ignored_env(ignored: &[String]) {
    if !ignored.is_empty() {
        tracing::warn!(
            variables = %ignored.join(", "),
            "ignoring IMAGEGATE_* environment variables that are not config paths (Kubernetes service links?); a config path has `__` between levels or names a top-level key"
        );
    }
}
