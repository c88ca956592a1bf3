//! The Redis response store: one hash per response with the retention as its TTL, and
//! per consumer an index (by creation) and the sizes the quota counts, kept in one
//! script (`lua-compat/responses/put.lua`) so concurrent writers cannot overshoot.

use super::{ResponseStore, Result, StoredResponse};
use crate::config::schema::{LimitPolicy, LimitsConfig};
use crate::limits::redis::Conn;
use async_trait::async_trait;
use redis::Script;
use std::time::Duration;
use tokio::sync::OnceCell;

const PUT: &str = include_str!("../../lua-compat/responses/put.lua");

pub struct RedisResponses {
    policy: LimitPolicy,
    urls: Vec<String>,
    timeout: Duration,
    conn: OnceCell<Conn>,
    /// Key prefix (one hash tag on a cluster, so a script's keys share a slot).
    prefix: String,
    retention: Duration,
    put: Script,
}

impl RedisResponses {
    pub fn new(limits: &LimitsConfig, retention: Duration) -> RedisResponses {
        let r = &limits.redis;
        let urls = match limits.policy {
            LimitPolicy::RedisCluster => r.nodes.iter().map(|n| n.expose().to_string()).collect(),
            _ => r.url.iter().map(|u| u.expose().to_string()).collect(),
        };
        let prefix = match limits.policy {
            LimitPolicy::RedisCluster => format!("{{{}ai-rate-limiter-responses}}:", r.key_prefix),
            _ => format!("{}responses:", r.key_prefix),
        };
        RedisResponses {
            policy: limits.policy,
            urls,
            timeout: r.timeout.max(Duration::from_secs(5)),
            conn: OnceCell::new(),
            prefix,
            retention,
            put: Script::new(PUT),
        }
    }

    async fn conn(&self) -> Result<&Conn> {
        Ok(self
            .conn
            .get_or_try_init(|| Conn::open(self.policy, &self.urls, self.timeout))
            .await?)
    }

    fn item(&self, id: &str) -> String {
        format!("{}r:{id}", self.prefix)
    }
}

#[async_trait]
impl ResponseStore for RedisResponses {
    async fn put(&self, r: StoredResponse, quota: u64) -> Result<()> {
        let bytes = r.bytes();
        let ttl = self.retention.as_secs().max(1);
        let cutoff = r.created.saturating_sub(ttl);
        let mut inv = self.put.prepare_invoke();
        inv.key(self.item(&r.id))
            .key(format!("{}owner:{}", self.prefix, r.consumer))
            .key(format!("{}sizes:{}", self.prefix, r.consumer))
            .arg(&r.consumer)
            .arg(r.created)
            .arg(bytes)
            .arg(r.response.to_string())
            .arg(serde_json::Value::Array(r.input).to_string())
            .arg(ttl)
            .arg(quota)
            .arg(&r.id)
            .arg(format!("{}r:", self.prefix))
            .arg(cutoff);
        let _: i64 = self.conn().await?.invoke(&inv).await?;
        Ok(())
    }

    async fn get(&self, consumer: &str, id: &str) -> Result<Option<StoredResponse>> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.item(id))
            .arg("consumer")
            .arg("created")
            .arg("response")
            .arg("input");
        let v: Vec<Option<String>> = self.conn().await?.query(&cmd).await?;
        let [Some(owner), Some(created), Some(response), Some(input)] =
            <[Option<String>; 4]>::try_from(v).unwrap_or_default()
        else {
            return Ok(None);
        };
        if owner != consumer {
            return Ok(None);
        }
        Ok(Some(StoredResponse {
            id: id.to_string(),
            consumer: owner,
            created: created.parse().unwrap_or(0),
            response: serde_json::from_str(&response).unwrap_or_default(),
            input: serde_json::from_str(&input).unwrap_or_default(),
        }))
    }

    async fn delete(&self, consumer: &str, id: &str) -> Result<bool> {
        if self.get(consumer, id).await?.is_none() {
            return Ok(false);
        }
        let mut p = redis::pipe();
        p.cmd("DEL").arg(self.item(id)).ignore();
        p.cmd("ZREM")
            .arg(format!("{}owner:{consumer}", self.prefix))
            .arg(id)
            .ignore();
        p.cmd("HDEL")
            .arg(format!("{}sizes:{consumer}", self.prefix))
            .arg(id)
            .ignore();
        let () = self.conn().await?.pipe(&p).await?;
        Ok(true)
    }

    /// Responses expire on their own (their TTL); each consumer's index forgets them at
    /// its next write.
    async fn sweep(&self, _before: u64) -> Result<u64> {
        Ok(0)
    }
}
