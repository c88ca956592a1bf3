//! The Admin API (`/admin/…` on the admin listener, never the public one): consumers and
//! their keys at runtime, persisted in SQLite ([`store`]), applied to the runtime snapshot
//! as an overlay on the file's config (`crate::config::overlay`), every change audited.
//!
//! - Auth: `admin.keys` (`X-API-KEY` or `Authorization: Bearer`), role `admin` (read and
//!   write) or `viewer` (read); none configured: the API is off and says so. Failed
//!   attempts fill a per-address brake (the proxy's shapes).
//! - Errors in one shape, `{"error": {"message", "type", "param"}}`, `param` naming the
//!   field's path.
//! - Every write accepts `?dry_run=true`: validated, answered with what would change,
//!   nothing stored.
//! - Objects from `gateway.yaml` are listed with `source: file` and are read-only here; a
//!   name clash is a 409.

pub mod apisix;
mod apisix_import;
mod checks;
pub mod client;
pub mod consumers;
mod handlers;
pub mod idempotency;
mod keys;
mod objects;
pub mod openapi;
mod overlay;
pub mod store;
pub mod wire;
mod write;

use crate::config::schema::AdminRole;
use crate::limits::auth_failures::{Attempt, AuthFailures, ADDRESS, USER};
use crate::state::AppState;
use http::Response;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use store::{Snapshot, Store};
use wire::{error_reply, read_body, replayed, url_pairs};
pub use wire::{reply, ApiError, Caller, Request};

/// How often an instance compares its applied version with the shared store's.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;

/// Every route, for the router and the OpenAPI document alike: method, path template,
/// whether it writes, summary.
pub const ROUTES: &[(&str, &str, bool, &str)] = &[
    ("GET", "/admin/openapi.json", false, "This document."),
    (
        "GET",
        "/admin/status",
        false,
        "The store version this instance applies.",
    ),
    (
        "GET",
        "/admin/providers",
        false,
        "Providers, the file's and the API's (no credentials).",
    ),
    (
        "POST",
        "/admin/providers",
        true,
        "Create a provider (gateway.yaml's schema).",
    ),
    (
        "GET",
        "/admin/providers/{name}",
        false,
        "One provider (credentials write-only).",
    ),
    (
        "PUT",
        "/admin/providers/{name}",
        true,
        "Replace a provider.",
    ),
    (
        "PATCH",
        "/admin/providers/{name}",
        true,
        "Merge into a provider (JSON merge patch).",
    ),
    (
        "DELETE",
        "/admin/providers/{name}",
        true,
        "Delete a provider no model uses.",
    ),
    (
        "GET",
        "/admin/models",
        false,
        "Models, the file's and the API's.",
    ),
    (
        "POST",
        "/admin/models",
        true,
        "Create a model: deployments, limits, prices, fallback.",
    ),
    ("GET", "/admin/models/{name}", false, "One model."),
    ("PUT", "/admin/models/{name}", true, "Replace a model."),
    (
        "PATCH",
        "/admin/models/{name}",
        true,
        "Merge into a model (JSON merge patch).",
    ),
    ("DELETE", "/admin/models/{name}", true, "Delete a model."),
    (
        "GET",
        "/admin/audit",
        false,
        "Every change: who, what, before and after (no secrets).",
    ),
    (
        "GET",
        "/admin/consumers",
        false,
        "Consumers, the file's and the API's (paged).",
    ),
    ("POST", "/admin/consumers", true, "Create a consumer."),
    ("GET", "/admin/consumers/{name}", false, "One consumer."),
    (
        "PUT",
        "/admin/consumers/{name}",
        true,
        "Replace a consumer's spec.",
    ),
    (
        "PATCH",
        "/admin/consumers/{name}",
        true,
        "Merge into a consumer's spec (JSON merge patch).",
    ),
    (
        "DELETE",
        "/admin/consumers/{name}",
        true,
        "Delete a consumer and its keys.",
    ),
    (
        "GET",
        "/admin/consumers/{name}/keys",
        false,
        "A consumer's keys (ids and prefixes only).",
    ),
    (
        "GET",
        "/admin/consumers/{name}/usage",
        false,
        "Each of its limits: used, limit, remaining (exact across instances with Redis).",
    ),
    (
        "POST",
        "/admin/consumers/{name}/keys",
        true,
        "Create a key: its secret is answered once.",
    ),
    (
        "DELETE",
        "/admin/consumers/{name}/keys/{id}",
        true,
        "Revoke a key.",
    ),
    (
        "POST",
        "/admin/consumers/{name}/keys/{id}/rotate",
        true,
        "A new key; the old one works for grace_seconds more.",
    ),
];

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Admin API of one process.
pub struct AdminApi {
    pub state: Arc<AppState>,
    store: Store,
    /// What is stored (read by GETs; its lock also serialises writes).
    model: tokio::sync::Mutex<Snapshot>,
    /// The next time the overlay changes by the clock (a key or consumer expires); 0: none.
    next_expiry: AtomicU64,
    failures: std::sync::Mutex<AuthFailures>,
    started: std::time::Instant,
    /// When a store fault was last logged (seconds since `started`).
    last_fault: AtomicU64,
    idempotency: std::sync::Mutex<idempotency::Idempotency>,
}

/// This process's id among the instances sharing a store (a random hex string).
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| hex::encode(rand::random::<[u8; 8]>()))
}

impl AdminApi {
    /// The API over its store (blocking: at startup), its stored objects applied. `None`
    /// when no admin key is configured and nothing was ever stored (SQLite) or the store
    /// is not explicitly `redis`.
    pub fn open(state: Arc<AppState>) -> Result<Option<Arc<AdminApi>>, String> {
        use crate::config::schema::{BatchStoreKind, LimitPolicy};
        let config = state.file_config.load_full();
        let shared_policy = matches!(
            config.limits.policy,
            LimitPolicy::Redis | LimitPolicy::RedisCluster
        );
        let redis = match config.admin.store {
            BatchStoreKind::Redis => true,
            BatchStoreKind::Sqlite => false,
            BatchStoreKind::Auto => shared_policy,
        };
        let keys = !config.admin.keys.is_empty();
        let (store, snap) = if redis {
            if !keys && config.admin.store != BatchStoreKind::Redis {
                return Ok(None);
            }
            // The first load on a runtime of its own (the server's is not running yet);
            // the store's own connection is made later, on the server's.
            let first = store::redis::Redis::new(&config.limits);
            let snap = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("admin store: {e}"))?
                .block_on(first.load())
                .unwrap_or_else(|e| {
                    tracing::error!(
                        "{e}: starting without the Admin API's objects until it answers"
                    );
                    Snapshot::default()
                });
            (Store::Redis(store::redis::Redis::new(&config.limits)), snap)
        } else {
            let dir = &config.admin.data_dir;
            if !keys && !dir.join("admin.db").exists() {
                return Ok(None);
            }
            let s = store::sqlite::Sqlite::open(dir)?;
            let snap = s.load_blocking()?;
            (Store::Sqlite(s), snap)
        };
        let api = Arc::new(AdminApi {
            state,
            store,
            model: tokio::sync::Mutex::new(Snapshot::default()),
            next_expiry: AtomicU64::new(0),
            failures: std::sync::Mutex::new(AuthFailures::new(ADDRESS, USER)),
            started: std::time::Instant::now(),
            last_fault: AtomicU64::new(0),
            idempotency: Default::default(),
        });
        api.apply(&snap);
        if let Ok(mut m) = api.model.try_lock() {
            *m = snap;
        }
        Ok(Some(api))
    }

    /// Make `snap` the runtime's overlay (a new snapshot generation).
    fn apply(&self, snap: &Snapshot) {
        let (overlay, next) = overlay::build(snap, now());
        self.next_expiry.store(next.unwrap_or(0), Ordering::Relaxed);
        self.state.overlay.store(Arc::new(overlay));
        self.state.rebuild();
    }

    /// Re-apply when a key or consumer has expired since the last overlay, and (with the
    /// shared store) when another instance changed the store: called every [`SYNC_EVERY`].
    pub async fn tick(&self) {
        if let Store::Redis(r) = &self.store {
            self.sync(r).await;
        }
        let next = self.next_expiry.load(Ordering::Relaxed);
        if next != 0 && now() >= next {
            let snap = self.model.lock().await;
            self.apply(&snap);
        }
    }

    /// Reload from the shared store when it is ahead of this instance.
    async fn sync(&self, r: &store::redis::Redis) {
        let applied = self.model.lock().await.version;
        match r.version().await {
            Ok(v) if v > applied => match r.load().await {
                Ok(snap) => {
                    let mut m = self.model.lock().await;
                    if snap.version > m.version {
                        self.apply(&snap);
                        *m = snap;
                    }
                }
                Err(e) => self.fault(&e),
            },
            Ok(v) if v < applied => self.fault(&format!(
                "the shared admin store is at version {v}, behind this instance's {applied}: \
                 Redis lost its data; keeping what this instance applies"
            )),
            Ok(_) => {}
            Err(e) => self.fault(&e),
        }
        let applied = self.model.lock().await.version;
        if let Err(e) = r.report(instance_id(), applied).await {
            self.fault(&e);
        }
    }

    /// Log a store fault, at most every 10 s.
    fn fault(&self, e: &str) {
        let t = self.started.elapsed().as_secs();
        if self.last_fault.swap(t, Ordering::Relaxed) + 10 <= t || t < 10 {
            tracing::error!("admin store: {e}");
        }
    }

    /// Answer one request on `/admin/…`.
    pub async fn serve(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let apisix = session
            .req_header()
            .uri
            .path()
            .starts_with("/apisix/admin/");
        match self.handle(session).await {
            Ok(r) => r,
            // APISIX's shape for its compatible subset.
            Err(e) if apisix => apisix::error_reply(&e),
            Err(e) => error_reply(&e),
        }
    }

    /// Route a request to the Admin API or its APISIX-compatible subset.
    async fn dispatch(&self, caller: &Caller, req: &Request, apisix: bool) -> handlers::Answer {
        if apisix {
            apisix::route(self, caller, req).await
        } else {
            handlers::route(self, caller, req).await
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Result<Response<Vec<u8>>, ApiError> {
        let caller = self.authenticate(session)?;
        let h = session.req_header();
        let method = h.method.clone();
        let path = h.uri.path().to_string();
        let query = h.uri.query().map(url_pairs).unwrap_or_default();
        let writes = method != http::Method::GET;
        if writes && caller.role != AdminRole::Admin {
            return Err(ApiError::new(
                403,
                "permission_error",
                format!(
                    "the admin key {:?} is a viewer: it may only read",
                    caller.id
                ),
            ));
        }
        let header = |n: &str| {
            h.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (if_match, idem) = (header("if-match"), header("idempotency-key"));
        let body = read_body(session).await?;
        let apisix = path.starts_with("/apisix/admin/");
        let rest = path
            .strip_prefix("/apisix/admin/")
            .or_else(|| path.strip_prefix("/admin/"))
            .unwrap_or_default();
        let segments = rest.split('/').map(str::to_string).collect();
        let full_path = format!(
            "{path}?{}",
            query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let req = Request {
            method,
            segments,
            query,
            body,
            if_match,
        };
        let Some(idem) = idem.filter(|_| writes) else {
            return self.dispatch(&caller, &req, apisix).await;
        };
        if idem.is_empty() || idem.len() > 255 || !idem.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "Idempotency-Key must be 1 to 255 visible characters",
                "Idempotency-Key",
            ));
        }
        let fp = idempotency::fingerprint(req.method.as_str(), &full_path, &req.body);
        let seen = self
            .idem()
            .check(&caller.id, &idem, fp, std::time::Instant::now());
        match seen {
            idempotency::Seen::Replay(k) => return Ok(replayed(&k)),
            idempotency::Seen::Mismatch => {
                return Err(ApiError::new(
                    422,
                    "invalid_request_error",
                    "this Idempotency-Key was used for another request",
                ))
            }
            idempotency::Seen::New => {}
        }
        let answer = self.dispatch(&caller, &req, apisix).await;
        let (status, body) = match &answer {
            Ok(r) => (r.status().as_u16(), r.body().clone()),
            Err(e) => (e.status, error_reply(e).body().clone()),
        };
        if status < 500 {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let secret = v["key"].is_string();
            let created = secret.then(|| v["id"].as_str().unwrap_or_default().to_string());
            let body = (!secret).then_some(body);
            self.idem().keep(
                &caller.id,
                &idem,
                fp,
                std::time::Instant::now(),
                status,
                body,
                created,
            );
        }
        answer
    }

    fn idem(&self) -> std::sync::MutexGuard<'_, idempotency::Idempotency> {
        self.idempotency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller's admin key, or why not.
    fn authenticate(&self, session: &ServerSession) -> Result<Caller, ApiError> {
        // The snapshot itself, not a copy of its config (which holds every consumer).
        let rt = self.state.runtime.load();
        let keys = &rt.config.admin.keys;
        if keys.is_empty() {
            return Err(ApiError::new(
                404,
                "not_found_error",
                "the Admin API is off: set admin.keys in the config",
            ));
        }
        let h = session.req_header();
        let presented = h
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                h.headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        let addr = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let attempt = Attempt { addr, user: None };
        let t = self.started.elapsed().as_secs_f64();
        let wait = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&attempt, t);
        if wait > 0.0 {
            return Err(ApiError::new(
                429,
                "rate_limit_error",
                format!("too many failed admin logins from this address; retry in {wait:.0} s"),
            ));
        }
        let digest = presented.map(crate::config::digest::of_key);
        let found = keys.iter().find(|k| {
            crate::config::digest::of_entry(k.key.expose()).is_ok_and(|d| Some(d) == digest)
        });
        match found {
            Some(k) => Ok(Caller {
                id: k.id.clone(),
                role: k.role,
            }),
            None => {
                self.failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed(&attempt, t);
                Err(ApiError::new(
                    401,
                    "authentication_error",
                    "an admin key is needed (X-API-KEY or Authorization: Bearer)",
                ))
            }
        }
    }
}

impl AdminApi {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn model(&self) -> &tokio::sync::Mutex<Snapshot> {
        &self.model
    }

    /// Make a changed snapshot the runtime's.
    pub fn applied(&self, snap: &Snapshot) {
        self.apply(snap);
    }
}

/// Keeps the instance in step: expiries, and the shared store's changes (every
/// [`SYNC_EVERY`]).
pub struct Expiry(pub Arc<AdminApi>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Expiry {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let changed = tokio::sync::Notify::new();
        // A shared store's change notifications wake the sync at once (the poll stays,
        // for a missed notification and after a reconnect).
        let listen = async {
            let Store::Redis(r) = &self.0.store else {
                return std::future::pending::<()>().await;
            };
            if !r.notifies() {
                return std::future::pending::<()>().await;
            }
            loop {
                if let Err(e) = r.notifications(&changed).await {
                    self.0.fault(&e);
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        };
        let sync = async {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SYNC_EVERY) => {}
                    () = changed.notified() => {}
                }
                self.0.tick().await;
            }
        };
        tokio::select! {
            _ = shutdown.changed() => {}
            () = listen => {}
            () = sync => {}
        }
    }
}
