//! Logging with tracing: text or JSON lines on stdout. `RUST_LOG` overrides the configured
//! level. Access log lines use the target `access`. Pingora's own `log` records are bridged.

use crate::config::schema::{LogFormat, LoggingConfig};
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
