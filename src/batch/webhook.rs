//! Webhooks of a batch: a JSON POST `{"event", "batch"}` on progress steps and when the
//! batch ends, signed with `batch.webhook_secret` (`X-Signature: sha256=<hex HMAC-SHA256
//! of the body>`), retried with backoff; each delivery's outcome is kept on the batch.

use super::backend::Backend;
use crate::egress::EgressPolicy;
use crate::gateway::GatewayState;
use crate::providers::http::{HttpCall, Timeouts};
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue};
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

const ATTEMPTS: u32 = 5;
/// What `webhook.last.error` says when the target was refused or could not be reached.
const REFUSED: &str = "refused by the egress policy";
const UNREACHABLE: &str = "unreachable";

/// The `X-Signature` value of `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Deliver one event (in the background), recording the outcome on the batch.
pub fn deliver(
    state: Arc<GatewayState>,
    store: Arc<dyn Backend>,
    batch_id: String,
    url: String,
    event: String,
) {
    tokio::spawn(async move {
        let batch = store
            .batch_any(&batch_id)
            .await
            .ok()
            .flatten()
            .map(|b| b.object());
        let body = json!({"event": event, "batch": batch}).to_string();
        let (secret, policy, scrubber) = {
            let rt = state.runtime.load();
            let b = &rt.config.batch;
            (
                b.webhook_secret.clone(),
                EgressPolicy::new(&b.webhook_allow_networks),
                rt.scrubber.clone(),
            )
        };
        let mut last = (None, None::<String>);
        let mut attempts = 0;
        for attempt in 0..ATTEMPTS {
            attempts = attempt + 1;
            // Checked again at every delivery, on the address then connected to: the
            // name may resolve elsewhere now, or the config may have closed the network.
            let target = match policy.parse(&url) {
                Ok(base) => policy.resolve(&base).await.map(|addr| (base, addr)),
                Err(e) => Err(e),
            };
            let (base, addr) = match target {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(batch = %batch_id, reason = %e, "webhook refused by the egress policy");
                    last = (None, Some(REFUSED.to_string()));
                    break;
                }
            };
            let mut headers = vec![
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (
                    USER_AGENT,
                    HeaderValue::from_static(concat!(
                        "ai-rate-limiter/",
                        env!("CARGO_PKG_VERSION")
                    )),
                ),
            ];
            if let Some(s) = &secret {
                let sig = HeaderValue::try_from(signature(s.expose(), body.as_bytes()))
                    .expect("hex is a valid header value");
                headers.push((HeaderName::from_static("x-signature"), sig));
            }
            let sent = state
                .http
                .send_at(
                    addr,
                    HttpCall {
                        base: &base,
                        path: "",
                        headers,
                        body: bytes::Bytes::from(body.clone()),
                        timeouts: Timeouts {
                            connect: Duration::from_secs(5),
                            read: Duration::from_secs(10),
                            idle: Duration::from_secs(30),
                        },
                        scrubber: scrubber.clone(),
                    },
                )
                .await;
            match sent {
                Ok(mut r) => {
                    let _ = r.body.read_all(1024 * 1024).await;
                    last = (Some(r.status), None);
                    if (200..300).contains(&r.status) {
                        break;
                    }
                }
                // Never the raw error: which port is closed or slow is not the
                // consumer's business.
                Err(_) => last = (None, Some(UNREACHABLE.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let error = match &last {
            (Some(s), _) if (200..300).contains(s) => None,
            (Some(s), _) => Some(format!("status {s}")),
            (None, e) => e.clone(),
        };
        let result = if error.is_none() {
            "delivered"
        } else {
            "failed"
        };
        state
            .metrics
            .batch_webhooks
            .with_label_values(&[result])
            .inc();
        if let Err(e) = store
            .webhook_delivered(&batch_id, &event, last.0, attempts, error.as_deref())
            .await
        {
            tracing::error!(error = %e, "recording a webhook delivery");
        }
    });
}
