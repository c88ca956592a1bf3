//! Assembling a gateway process: the proxy service, the admin service, the config reloader
//! and the shutdown drainer, on one Pingora [`Server`]. Used by `main` and by tests.

use crate::admin::AdminApp;
use crate::config::Config;
use crate::gateway::GatewayState;
use crate::limits::limiter::Limiter;
use crate::limits::redis::RedisStore;
use crate::metrics::Metrics;
use crate::providers::http::HttpClient;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use crate::state::reload::{Overrides, Reloader};
use crate::state::AppState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::Engine;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `run` needs.
pub struct ServeOptions {
    pub config: Config,
    /// The file to watch for reloads (none: no reloading).
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    /// Take over the sockets of a running gateway (graceful upgrade).
    pub upgrade: bool,
}

/// Build the server with all services added; call `run_forever` on it.
pub fn build_server(opts: ServeOptions) -> Result<Server, String> {
    let ServeOptions {
        mut config,
        config_path,
        overrides,
        upgrade,
    } = opts;
    overrides.apply(&mut config);
    // Pingora retries a busy address for 30 s (for graceful upgrades); a plain start should
    // fail at once and say why. An upgrade takes the sockets over instead.
    for (name, addr) in [
        ("server.listen", &config.server.listen),
        ("server.metrics_listen", &config.server.metrics_listen),
    ] {
        if !upgrade {
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
        }
    }
    crate::dns::init();
    // Read once, by the connector built below; the file goes when this function returns.
    let ca_bundle = match &config.upstream.extra_ca_file {
        Some(extra) => Some(write_ca_bundle(extra)?),
        None => None,
    };
    let threads = match config.server.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let grace = config.server.shutdown_grace_period;
    let conf = ServerConf {
        threads,
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.upstream.pool_size,
        upgrade_sock: upgrade_sock(&config).display().to_string(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = Metrics::new();
    metrics.config_generation.set(1);
    let limiter = Limiter::new(&config.limits, metrics.redis.clone(), metrics.local.clone());
    // Series present from the start, so dashboards see them before the first batch.
    for m in &config.models {
        metrics.batch_running.with_label_values(&[m.name.as_str()]);
    }
    let batch = if config.batch.enabled {
        Some(batch_store(&config, upgrade)?)
    } else {
        None
    };
    let gateway = Arc::new(GatewayState {
        http: Arc::new(HttpClient::new(
            config.upstream.pool_size,
            ca_bundle.as_ref().map(|f| f.path().display().to_string()),
        )),
        metrics,
        limiter,
        queues: Default::default(),
        realtime: Default::default(),
        cooldowns: Default::default(),
        runtime: ArcSwap::from_pointee(Runtime::build(config.clone(), 1)),
        tracer: Default::default(),
        history: Default::default(),
    });
    gateway.set_traces(config.traces.as_ref());
    let state = Arc::new(AppState {
        gateway,
        batch,
        responses: response_store(&config, config_path.as_deref())?,
        tls: match &config.server.tls {
            Some(t) => Some(
                crate::tls::ReloadableCert::new(&t.cert_file, &t.key_file)
                    .map_err(|e| format!("server.tls: {e}"))?,
            ),
            None => None,
        },
        auth_failures: Default::default(),
        started: Instant::now(),
        file_config: ArcSwap::from_pointee(config.clone()),
        overlay: Default::default(),
    });

    // Pingora's HTTP proxy behind the connection front (which reads and checks every
    // HTTP/1 request head first: see `proxy::front`).
    let http = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway {
            state: state.clone(),
        },
    );
    let mut proxy = Service::new(
        "proxy".to_string(),
        crate::proxy::front::Front::new(http, state.clone()),
    );
    // No L4 read buffer per client connection (Pingora's default is 64 KiB, zeroed): the
    // connection front, Pingora and rustls read heads, records and bodies into buffers of
    // their own, so it only copied bytes once more, and it stayed resident for as long as
    // a stream was open (16 KiB of each open stream at 16 KiB; see benches/streams.sh).
    // Responses are still written through a 1460-byte buffer.
    let mut listener = pingora::listeners::ListenerConfig::tcp(config.server.listen.as_str())
        .l4_buffer(pingora::protocols::l4::stream::L4BufferSettings::new(
            0, 1460,
        ));
    // With TLS: HTTP/2 and HTTP/1.1 by ALPN; the certificate comes from the reloadable
    // resolver.
    if let Some(cert) = &state.tls {
        let mut tls = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| format!("server.tls: {e}"))?;
        tls.set_cert_resolver(cert.clone());
        tls.enable_h2();
        listener = listener.tls(tls);
    }
    proxy.add_listener(listener);
    server.add_service(proxy);

    // The Admin API's objects join the snapshot before the first request.
    let admin_api = crate::admin::api::AdminApi::open(state.clone())?;
    if let Some(api) = &admin_api {
        server.add_service(background_service(
            "admin expiry",
            crate::admin::api::Expiry(api.clone()),
        ));
    }
    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp {
            state: state.clone(),
            api: admin_api,
        }),
    );
    admin.add_tcp(&config.server.metrics_listen);
    admin.threads = Some(1);
    server.add_service(admin);

    if let Some(path) = config_path {
        server.add_service(background_service(
            "config reload",
            Reloader {
                state: state.clone(),
                path,
                overrides,
            },
        ));
    }
    if let Some(store) = state.batch.clone() {
        server.add_service(background_service(
            "batch dispatcher",
            crate::batch::dispatch::Dispatcher::new(state.gateway.clone(), store),
        ));
    }
    if let Some(store) = state.responses.clone() {
        server.add_service(background_service(
            "responses sweeper",
            ResponseSweeper {
                store,
                state: state.clone(),
            },
        ));
    }
    if let Some(store) = state.limiter.redis() {
        server.add_service(background_service(
            "shared limit store",
            SharedStore(store.clone()),
        ));
    }
    server.add_service(background_service(
        "shutdown drainer",
        Drainer { state, grace },
    ));
    Ok(server)
}

/// Ends stored Responses API responses past `responses.retention`, every ten minutes.
struct ResponseSweeper {
    store: Arc<dyn crate::response_store::ResponseStore>,
    state: Arc<AppState>,
}

#[async_trait]
impl BackgroundService for ResponseSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let keep = self.state.runtime.load().config.responses.retention;
            let before = crate::response_store::now().saturating_sub(keep.as_secs());
            match self.store.sweep(before).await {
                Ok(n) if n > 0 => tracing::info!(responses = n, "expired responses deleted"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "sweeping expired responses"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Runs the Redis store's background work: connection, lease refresh, releases, probes.
struct SharedStore(Arc<RedisStore>);

#[async_trait]
impl BackgroundService for SharedStore {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.0.clone().run() => {}
            _ = shutdown.changed() => self.0.return_leases().await,
        }
    }
}

/// A last guard on shutdown, outside Pingora and its runtimes: once SIGINT or SIGTERM has
/// come, the process ends within the grace period plus five seconds (SIGINT, Pingora's
/// fast shutdown: five seconds), whatever its runtimes are doing — a listener spinning on
/// a runtime being torn down cannot keep it alive. A SIGQUIT (graceful upgrade) is left
/// to Pingora.
pub fn exit_watchdog(grace: Duration) {
    let spawned = std::thread::Builder::new()
        .name("exit-watchdog".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let limit = rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return None;
                };
                tokio::select! {
                    _ = int.recv() => Some(Duration::from_secs(5)),
                    _ = term.recv() => Some(grace + Duration::from_secs(5)),
                }
            });
            if let Some(limit) = limit {
                std::thread::sleep(limit);
                eprintln!("shutdown did not complete in {limit:?}: exiting");
                std::process::exit(1);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no shutdown watchdog");
    }
}

/// After SIGTERM, Pingora stops accepting and waits its whole grace period. The drainer
/// ends the process as soon as no request is in flight, so an idle gateway stops at once
/// while in-flight streams still get up to the grace period to finish.
struct Drainer {
    state: Arc<AppState>,
    grace: Duration,
}

#[async_trait]
impl BackgroundService for Drainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let started = Instant::now();
        tracing::info!(grace = ?self.grace, "shutting down: waiting for in-flight requests");
        let mut idle_checks = 0;
        while started.elapsed() < self.grace {
            if self.state.metrics.in_flight.get() == 0 {
                idle_checks += 1;
                if idle_checks >= 3 {
                    break;
                }
            } else {
                idle_checks = 0;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A scratch directory of this process's alone goes with it.
        if let Some(dir) = self
            .state
            .batch
            .as_deref()
            .and_then(|b| b.private_scratch())
        {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        // The last requests' spans reach the collector (bounded by the export timeout).
        if let Some(tracer) = self.state.tracer.load_full() {
            let limit = tracer.config().timeout + Duration::from_secs(1);
            let flush = tokio::task::spawn_blocking(move || tracer.flush());
            let _ = tokio::time::timeout(limit, flush).await;
        }
        tracing::info!(
            in_flight = self.state.metrics.in_flight.get(),
            "shutdown complete"
        );
        std::process::exit(0);
    }
}

/// Write a PEM bundle of the system roots plus `extra` to a file of this process's own (a
/// random name in the temp dir, owner-only, created exclusively: no other user can put a
/// CA of theirs in its place), removed when it is dropped: the upstream connector takes
/// one CA file, and the extra CA must add to the system roots, not replace them.
fn write_ca_bundle(extra: &PathBuf) -> Result<tempfile::NamedTempFile, String> {
    let extra_pem =
        std::fs::read_to_string(extra).map_err(|e| format!("upstream.extra_ca_file: {e}"))?;
    let mut pem = String::new();
    let native =
        pingora::tls::load_native_certs().map_err(|e| format!("loading system CA roots: {e}"))?;
    for cert in native {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.push_str(&extra_pem);
    let mut file = tempfile::Builder::new()
        .prefix("ai-rate-limiter-ca-")
        .suffix(".pem")
        .tempfile()
        .map_err(|e| format!("writing CA bundle: {e}"))?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .map_err(|e| format!("writing CA bundle {}: {e}", file.path().display()))?;
    Ok(file)
}

/// The batch store the config asks for (see `batch.store`).
fn batch_store(
    config: &Config,
    upgrade: bool,
) -> Result<Arc<dyn crate::batch::backend::Backend>, String> {
    use crate::config::schema::{BatchStoreKind, LimitPolicy};
    let b = &config.batch;
    let redis = match b.store {
        BatchStoreKind::Redis => true,
        BatchStoreKind::Sqlite => false,
        BatchStoreKind::Auto => config.limits.policy != LimitPolicy::Local,
    };
    Ok(if redis {
        Arc::new(crate::batch::redis::RedisBatches::new(&config.limits)?)
    } else if !upgrade && !crate::batch::store::Store::exists(&b.data_dir) {
        // Created on first use: a gateway whose batch module is unused writes nothing.
        Arc::new(crate::batch::store::Lazy::new(&b.data_dir))
    } else {
        let store = Arc::new(crate::batch::store::Store::open(&b.data_dir, upgrade)?);
        if upgrade {
            // The old process runs its requests for up to its grace period; what it left
            // running after that was interrupted.
            let s = store.clone();
            let wait = config.server.shutdown_grace_period + Duration::from_secs(5);
            std::thread::spawn(move || {
                std::thread::sleep(wait);
                match s.adopt_interrupted() {
                    Ok(n) if n > 0 => tracing::warn!(
                        requests = n,
                        "batch requests the old process left running go back to pending"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "adopting interrupted batch requests"),
                }
            });
        }
        Arc::new(crate::batch::store::Sqlite::new(store))
    })
}

/// The Responses API store of `responses.store`.
fn response_store(
    config: &Config,
    config_path: Option<&std::path::Path>,
) -> Result<Option<Arc<dyn crate::response_store::ResponseStore>>, String> {
    use crate::config::schema::{LimitPolicy, ResponseStoreKind};
    let r = &config.responses;
    let redis = match r.store {
        ResponseStoreKind::Off => return Ok(None),
        ResponseStoreKind::Redis => true,
        ResponseStoreKind::Sqlite => false,
        ResponseStoreKind::Auto => config.limits.policy != LimitPolicy::Local,
    };
    Ok(Some(if redis {
        Arc::new(crate::response_store::redis::RedisResponses::new(
            &config.limits,
            r.retention,
        ))
    } else {
        // The store belongs to the config file that first opened it.
        let owner = config_path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        if r.data_dir.join("responses.sqlite").exists() {
            Arc::new(crate::response_store::sqlite::SqliteResponses::open(
                &r.data_dir,
                owner.as_deref(),
            )?)
        } else {
            // Created on first use: a gateway that stores no response writes nothing.
            Arc::new(crate::response_store::lazy::LazyResponses::new(
                &r.data_dir,
                owner.as_deref(),
            ))
        }
    }))
}

/// Where a graceful upgrade passes the listening sockets.
pub fn upgrade_sock(config: &Config) -> PathBuf {
    config.server.upgrade_sock.clone().unwrap_or_else(|| {
        let port = config.server.listen.rsplit(':').next().unwrap_or("9080");
        std::env::temp_dir().join(format!("ai-rate-limiter-{port}.sock"))
    })
}
