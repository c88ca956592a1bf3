//! The plumbing every Redis-backed store shares (batches, stored responses): which Redis
//! to reach (the limits' `redis.url` or cluster `nodes`), one connection made on first use,
//! and the store's key prefix under `redis.key_prefix` — on a cluster one hash tag, so each
//! store's scripts find all their keys in one slot.

use super::Conn;
use crate::config::schema::{LimitPolicy, LimitsConfig};
use redis::RedisResult;
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct StoreConn {
    policy: LimitPolicy,
    urls: Vec<String>,
    timeout: Duration,
    conn: OnceCell<Conn>,
    prefix: String,
}

impl StoreConn {
    /// The store `name` (`batch`, `responses`): its keys start with the limits' key prefix
    /// and `name`. A store's calls may wait longer than a limit check: at least 5 s.
    pub fn new(limits: &LimitsConfig, name: &str) -> StoreConn {
        let r = &limits.redis;
        let (urls, prefix) = match limits.policy {
            LimitPolicy::RedisCluster => (
                r.nodes.iter().map(|n| n.expose().to_string()).collect(),
                format!("{{{}ai-rate-limiter-{name}}}:", r.key_prefix),
            ),
            _ => (
                r.url.iter().map(|u| u.expose().to_string()).collect(),
                format!("{}{name}:", r.key_prefix),
            ),
        };
        StoreConn {
            policy: limits.policy,
            urls,
            timeout: r.timeout.max(Duration::from_secs(5)),
            conn: OnceCell::new(),
            prefix,
        }
    }

    /// The connection, made by the first call that needs it.
    pub async fn get(&self) -> RedisResult<&Conn> {
        self.conn
            .get_or_try_init(|| Conn::open(self.policy, &self.urls, self.timeout))
            .await
    }

    /// The store's key `rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(yaml: &str) -> LimitsConfig {
        serde_yaml_ng::from_str(yaml).expect("limits config")
    }

    #[test]
    fn keys_share_one_hash_tag_on_a_cluster_only() {
        let single = limits("{policy: redis, redis: {url: 'redis://h/0', key_prefix: 'p-'}}");
        assert_eq!(StoreConn::new(&single, "batch").key("q:m"), "p-batch:q:m");
        let cluster =
            limits("{policy: redis-cluster, redis: {nodes: ['redis://h:1'], key_prefix: 'p-'}}");
        assert_eq!(
            StoreConn::new(&cluster, "responses").key("r:1"),
            "{p-ai-rate-limiter-responses}:r:1"
        );
    }
}
