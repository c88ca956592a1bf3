//! Logging with tracing: text or JSON lines on stdout. `RUST_LOG` overrides the configured
//! level. Access log lines use the target `access`. Pingora's own `log` records are bridged.
//!
//! No error can flood the log: warnings and errors from one place (callsite and target)
//! are written at most [`BURST`] times per second; past that they are counted, and the
//! next one written after the second ends says how many were left out. Access lines are
//! never thinned (one per request is their contract).

use crate::config::schema::{LogFormat, LoggingConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Most warnings or errors written per second from one place.
pub const BURST: u32 = 20;
/// Places remembered (a bound on the state: callsites are finite, log targets nearly so).
const MAX_PLACES: usize = 4096;

#[derive(Default)]
struct Place {
    second: u64,
    written: u32,
    suppressed: u64,
}

/// The per-place rate limit on warnings and errors.
pub struct RepeatLimit {
    start: Instant,
    places: Mutex<HashMap<(tracing::callsite::Identifier, String), Place>>,
}

impl Default for RepeatLimit {
    fn default() -> Self {
        RepeatLimit {
            start: Instant::now(),
            places: Mutex::new(HashMap::new()),
        }
    }
}

thread_local! {
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl RepeatLimit {
    /// Whether an event of `meta` at second `now` is written; the count left out before
    /// it, when it starts a new second after a flood.
    pub fn admit(&self, meta: &Metadata<'_>, now: u64) -> (bool, u64) {
        let key = (meta.callsite(), meta.target().to_string());
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        if !places.contains_key(&key) && places.len() >= MAX_PLACES {
            places.retain(|_, p| p.second + 1 >= now);
            if places.len() >= MAX_PLACES {
                return (false, 0);
            }
        }
        let p = places.entry(key).or_default();
        let mut reported = 0;
        if p.second != now {
            p.second = now;
            p.written = 0;
            reported = std::mem::take(&mut p.suppressed);
        }
        if p.written < BURST {
            p.written += 1;
            (true, reported)
        } else {
            p.suppressed += 1;
            (false, reported)
        }
    }
}

impl<S> Filter<S> for RepeatLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == "access" {
            return true;
        }
        if REPORTING.with(|r| r.get()) {
            return true;
        }
        let (write, left_out) = self.admit(meta, self.start.elapsed().as_secs());
        if left_out > 0 {
            REPORTING.with(|r| r.set(true));
            tracing::warn!(
                suppressed = left_out,
                from = meta.target(),
                "log messages left out in the last second (more than {BURST} a second from one place)"
            );
            REPORTING.with(|r| r.set(false));
        }
        write
    }
}

/// One JSON log line on its way to standard output, without the `log.*` fields the `log`
/// bridge adds to records of crates that use `log` (Pingora): `log.file` is a path on the
/// machine that built the binary, the others repeat `target`.
struct CleanLine(Vec<u8>);

impl std::io::Write for CleanLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for CleanLine {
    fn drop(&mut self) {
        use std::io::Write;
        let line = without_log_fields(&self.0);
        let _ = std::io::stdout().lock().write_all(&line);
    }
}

/// A JSON line without its top-level `log.*` fields (as it is when it has none).
fn without_log_fields(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memmem::find(line, b"\"log.").is_none() {
        return line.into();
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
        Ok(mut fields) => {
            fields.retain(|k, _| !k.starts_with("log."));
            let mut out = serde_json::Value::Object(fields).to_string().into_bytes();
            out.push(b'\n');
            out.into()
        }
        Err(_) => line.into(),
    }
}

pub fn init(cfg: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer();
    let layer = match cfg.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_writer(|| CleanLine(Vec::new()))
            .boxed(),
        LogFormat::Text => fmt.with_ansi(false).with_writer(std::io::stdout).boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(
            layer
                .with_filter(RepeatLimit::default())
                .with_filter(filter),
        )
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_place_is_thinned_and_counted() {
        let limit = RepeatLimit::default();
        struct Cs;
        static CS: Cs = Cs;
        static META: Metadata<'static> = tracing::metadata! {
            name: "e",
            target: "pingora",
            level: Level::ERROR,
            fields: &[],
            callsite: &CS,
            kind: tracing::metadata::Kind::EVENT,
        };
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        let written = (0..10_000).filter(|_| limit.admit(&META, 7).0).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(limit.admit(&META, 8), (true, 10_000 - u64::from(BURST)));
    }

    #[test]
    fn json_lines_lose_the_log_bridge_fields() {
        let line = br#"{"timestamp":"t","level":"INFO","message":"m","log.target":"p","log.file":"/root/.cargo/x.rs","log.line":3,"target":"p"}
"#;
        let out = String::from_utf8(without_log_fields(line).into_owned()).unwrap();
        assert!(!out.contains("log.") && !out.contains(".cargo"), "{out}");
        assert!(
            out.contains("\"message\":\"m\"") && out.ends_with('\n'),
            "{out}"
        );
        let plain = b"{\"message\":\"catalog.x\"}\n";
        assert_eq!(&*without_log_fields(plain), plain);
    }
}
