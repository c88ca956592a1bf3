//! The metrics/admin listener: `/metrics` (Prometheus text format), `/health` (the process
//! is alive), `/ready` (a config is loaded and the gateway can serve), and the status page
//! ([`status`]: `/status`, `/status.json`) behind the admin key, and the Admin API
//! ([`api`]: `/admin/…`) behind the admin keys.

pub mod api;
pub mod status;

use crate::state::AppState;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

pub struct AdminApp {
    pub state: Arc<AppState>,
    /// The Admin API (`None`: off, and nothing was ever stored).
    pub api: Option<Arc<api::AdminApi>>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        if path.starts_with("/admin/") || path == "/admin" || path.starts_with("/apisix/admin/") {
            return match &self.api {
                Some(api) => api.serve(session).await,
                None => api::reply(
                    404,
                    &json!({"error": {"message": "the Admin API is off: set admin.keys in the config",
                        "type": "not_found_error", "param": null}}),
                ),
            };
        }
        if path == "/status" || path == "/status.json" {
            let h = session.req_header();
            let auth = h
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let query = h.uri.query().map(str::to_string);
            if !status::authorized(&self.state, auth.as_deref(), query.as_deref()) {
                return reply(
                    401,
                    "application/json",
                    br#"{"error":"the status page needs admin.key (Authorization: Bearer <key> or ?key=)"}"#
                        .to_vec(),
                );
            }
            return if path == "/status" {
                reply(
                    200,
                    "text/html; charset=utf-8",
                    status::PAGE.as_bytes().to_vec(),
                )
            } else {
                let body = status::snapshot(&self.state).await.to_string();
                reply(200, "application/json", body.into_bytes())
            };
        }
        match path.as_str() {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4",
                self.state.metrics.render(),
            ),
            "/health" | "/healthz" => {
                reply(200, "application/json", br#"{"status":"ok"}"#.to_vec())
            }
            "/ready" | "/readyz" => {
                let rt = self.state.runtime.load();
                // Not ready while the shared limit store is down and may not be bypassed.
                let ready = self.state.limiter.ready();
                let body = json!({"status": if ready { "ready" } else { "limiter_unavailable" },
                                  "config_generation": rt.generation,
                                  "models": rt.listed_models.len()});
                reply(
                    if ready { 200 } else { 503 },
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        }
    }
}
