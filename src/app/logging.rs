//! Structured logging with `tracing`: human-readable lines by default, JSON lines with `LOG_FORMAT=json`, level from
//! `RUST_LOG` (default `info`). Colours only on a terminal, so captured logs stay parseable.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::env::json_logs(&crate::config::env::process);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_thread_names(true);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
}
