//! The `ai-rate-limiter` binary: parse the command line, load the config, run.
#![deny(clippy::unwrap_used)]

use ai_rate_limiter::cli::{Cli, Command};
use ai_rate_limiter::config;
use ai_rate_limiter::server::{build_server, ServeOptions};
use ai_rate_limiter::state::reload::Overrides;
use clap::Parser;
use std::process::ExitCode;

// The request path allocates many small short-lived buffers; mimalloc serves them faster
// than glibc's malloc (measured in benches/load.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before it gives it back to the system. Its own
/// default (1 s) is only acted on by a thread's next allocation, so a gateway whose streams
/// all ended kept their memory while idle (87 MiB of 141 after 2,000 streams, against 30
/// at 100 ms; benches/streams.sh). 100 ms cost no throughput in benches/load.sh; 0 (at
/// once) cost a quarter of it. The `MIMALLOC_PURGE_DELAY` variable still overrides it.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;
/// `mi_option_purge_delay` in mimalloc.h (v2 and v3), which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The process's memory settings, before anything else runs:
/// - transparent huge pages off: mimalloc asks for them on its arenas, and every fresh
///   2 MiB page then costs a whole-page clear on its first touch — a fifth of the CPU of
///   the streaming benchmark went to `clear_page_erms` (benches/stream.sh,
///   docs/benchmarks.md);
/// - mimalloc's purge delay ([`PURGE_DELAY_MS`]).
#[allow(unsafe_code)] // the binary's one unsafe block (Cargo.toml's [lints])
fn tune_memory() {
    let purge = std::env::var_os("MIMALLOC_PURGE_DELAY").is_none();
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory;
    // mi_option_set takes an option number and a value, and only stores the value.
    unsafe {
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        if purge {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

fn main() -> ExitCode {
    tune_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Batch { command, url, key } => {
            match ai_rate_limiter::batch::client::run(command, &url, &key) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { command, url, key } => {
            let key = key.unwrap_or_default();
            match ai_rate_limiter::admin::api::client::run(command, &url, &key) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ImportApisix { file } => {
            let json = file.extension().is_some_and(|e| e == "json");
            let imported = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: {e}", file.display()))
                .and_then(|text| ai_rate_limiter::import::import(&text, json));
            match imported {
                Ok(i) => {
                    print!("{}", i.yaml);
                    for u in &i.unmapped {
                        eprintln!("not imported: {u}");
                    }
                    if i.unmapped.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "{} item(s) not imported: the import is incomplete",
                            i.unmapped.len()
                        );
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { url } => {
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(2))
                .build();
            match agent.get(&url).call() {
                Ok(r) if r.status() == 200 => ExitCode::SUCCESS,
                Ok(r) => {
                    eprintln!("{url}: {}", r.status());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { file } => {
            match config::load_file(&file, ai_rate_limiter::providers::check) {
                Ok(c) => {
                    for w in config::prices::spend_warnings(&c) {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "{}: OK ({} consumer(s), {} provider(s), {} model(s))",
                        file.display(),
                        c.consumers.len(),
                        c.providers.len(),
                        c.models.len()
                    );
                    // Relative paths are relative to the file: say where they resolved.
                    for (field, path) in c.paths() {
                        println!("  {field}: {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema { markdown } => {
            if markdown {
                print!("{}", config::reference::markdown());
            } else {
                let schema = config::reference::json_schema();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&schema).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Command::Prices { file } => {
            match config::load_file(&file, ai_rate_limiter::providers::check) {
                Ok(c) => {
                    print!("{}", config::prices::table(&c));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config: path,
            listen,
            metrics_listen,
            upgrade,
        } => {
            let config = match config::load_file(&path, ai_rate_limiter::providers::check) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            ai_rate_limiter::logging::init(&config.logging);
            ai_rate_limiter::server::exit_watchdog(config.server.shutdown_grace_period);
            let summary = Summary::of(&config, &path, listen.as_deref(), metrics_listen.as_deref());
            let upgrade_sock = ai_rate_limiter::server::upgrade_sock(&config);
            let server = match build_server(ServeOptions {
                config,
                config_path: Some(path),
                overrides: Overrides {
                    listen,
                    metrics_listen,
                },
                upgrade,
            }) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            summary.log();
            // Pingora's run, with SIGQUIT's hand-over checked first (see `upgrade`).
            server.run(pingora::server::RunArgs {
                shutdown_signal: Box::new(ai_rate_limiter::upgrade::GuardedSignals {
                    upgrade_sock,
                }),
            });
            std::process::exit(0)
        }
    }
}

/// What an operator wants to see first in the log: where the gateway listens, which
/// config it read, and what it loaded.
struct Summary {
    listen: String,
    tls: bool,
    metrics: String,
    config: String,
    models: usize,
    consumers: usize,
    providers: usize,
    policy: &'static str,
    status_page: String,
}

impl Summary {
    fn of(
        c: &config::schema::Config,
        path: &std::path::Path,
        listen: Option<&str>,
        metrics: Option<&str>,
    ) -> Summary {
        let metrics = metrics.unwrap_or(&c.server.metrics_listen).to_string();
        let status_page = match &c.admin.key {
            Some(_) => format!("http://{metrics}/status"),
            None => "off (set admin.key to enable it)".to_string(),
        };
        Summary {
            listen: listen.unwrap_or(&c.server.listen).to_string(),
            tls: c.server.tls.is_some(),
            config: std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string(),
            models: c.models.len(),
            consumers: c.consumers.len(),
            providers: c.providers.len(),
            policy: match c.limits.policy {
                config::schema::LimitPolicy::Local => "local",
                config::schema::LimitPolicy::Redis => "redis",
                config::schema::LimitPolicy::RedisCluster => "redis-cluster",
            },
            metrics,
            status_page,
        }
    }

    fn log(&self) {
        let scheme = if self.tls { "https" } else { "http" };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %format!("{scheme}://{}", self.listen),
            metrics = %format!("http://{}/metrics", self.metrics),
            status_page = %self.status_page,
            config = %self.config,
            models = self.models,
            consumers = self.consumers,
            providers = self.providers,
            limits = self.policy,
            "ai-rate-limiter starting"
        );
    }
}
