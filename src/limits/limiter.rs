//! The limiter: the one admission entry point of the proxy and the batch dispatcher.
//!
//! It sends each admission call to the configured store — in-process ([`super::local`])
//! or shared ([`super::redis`]) — and owns what happens when Redis cannot be reached:
//! with `allow_degradation` the call is decided by this instance's local counters (the
//! `gateway_limiter_degraded` gauge and the error log say so: limits then hold per
//! instance, not across the fleet); without it the answer is a 503. While Redis is down
//! no request waits for it: the store is probed in the background and used again as
//! soon as it answers.

use super::admission::{Admitted, Check, Denied, Estimate, Ticket};
use super::local::{self, LocalStore};
use super::redis::{RedisMetrics, RedisStore};
use super::slots::SlotMetrics;
use super::synced_admit;
use crate::config::schema::{LimitPolicy, LimitsConfig};
use std::sync::Arc;

pub struct Limiter {
    /// The in-process counters (the `local` policy, and the fallback of the others).
    pub local: Arc<LocalStore>,
    redis: Option<Arc<RedisStore>>,
    allow_degradation: bool,
}

impl Limiter {
    pub fn new(config: &LimitsConfig, metrics: RedisMetrics, local: SlotMetrics) -> Limiter {
        let redis = match config.policy {
            LimitPolicy::Local => None,
            LimitPolicy::Redis | LimitPolicy::RedisCluster => {
                Some(RedisStore::new(config, metrics, local.keys.clone()))
            }
        };
        Limiter {
            local: Arc::new(LocalStore::new(config.local_max_keys, local)),
            redis,
            allow_degradation: config.allow_degradation,
        }
    }

    /// The shared store, whose background work must be run (see [`RedisStore::run`]).
    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// Whether requests can be admitted now (for `/ready`).
    pub fn ready(&self) -> bool {
        self.allow_degradation || self.redis.as_ref().is_none_or(|r| r.is_up())
    }

    /// Evaluate the required group, then the first alternative that passes (see
    /// [`super::admission`]).
    pub async fn admit(
        &self,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        estimate: Estimate,
    ) -> Result<Admitted, Denied> {
        if required.is_empty() && alternatives.iter().all(Vec::is_empty) {
            return Ok(Admitted {
                ticket: Ticket::free(),
                choice: (!alternatives.is_empty()).then_some(0),
                skipped: Vec::new(),
            });
        }
        if let Some(r) = &self.redis {
            if !r.is_up() {
                r.first_connection().await;
            }
            let fault = if r.is_up() {
                let decision = match r.synced() {
                    Some(s) => synced_admit::admit(r, s, required, alternatives, estimate).await,
                    None => r.admit(required, alternatives, estimate).await,
                };
                match decision {
                    Ok(decision) => return decision,
                    Err(f) => f.0,
                }
            } else {
                "Redis is unreachable".to_string()
            };
            if !self.allow_degradation {
                return Err(Denied::Unavailable(fault));
            }
        }
        local::admit(&self.local, required, alternatives, estimate)
    }
}
