//! The Redis response store: one hash per response with the retention as its TTL, and
//! per consumer an index (by creation), the sizes of its responses and their running
//! total, kept by one script (`lua-compat/responses/put.lua`) so concurrent writers on
//! every instance cannot overshoot. A put's work is bounded (at most
//! [`super::MAX_EVICTIONS`] evictions and 64 expired entries forgotten), so one
//! consumer's store never slows the Redis that also decides everyone's limits.

use super::{Put, RawResponse, ResponseStore, Result, MAX_EVICTIONS};
use crate::config::schema::LimitsConfig;
use crate::limits::redis::{Conn, StoreConn};
use async_trait::async_trait;
use redis::Script;
use std::time::Duration;

const PUT: &str = include_str!("../../lua-compat/responses/put.lua");
const DELETE: &str = include_str!("../../lua-compat/responses/delete.lua");

pub struct RedisResponses {
    redis: StoreConn,
    retention: Duration,
    put: Script,
    delete: Script,
}

impl RedisResponses {
    pub fn new(limits: &LimitsConfig, retention: Duration) -> RedisResponses {
        RedisResponses {
            redis: StoreConn::new(limits, "responses"),
            retention,
            put: Script::new(PUT),
            delete: Script::new(DELETE),
        }
    }

    async fn conn(&self) -> Result<&Conn> {
        Ok(self.redis.get().await?)
    }

    fn item(&self, id: &str) -> String {
        self.redis.key(&format!("r:{id}"))
    }

    /// The consumer's index, sizes and total.
    fn owner_keys(&self, consumer: &str) -> [String; 3] {
        [
            self.redis.key(&format!("owner:{consumer}")),
            self.redis.key(&format!("sizes:{consumer}")),
            self.redis.key(&format!("held:{consumer}")),
        ]
    }
}

#[async_trait]
impl ResponseStore for RedisResponses {
    async fn put(&self, r: RawResponse, quota: u64) -> Result<Put> {
        let bytes = r.bytes();
        let ttl = self.retention.as_secs().max(1);
        let cutoff = r.created.saturating_sub(ttl);
        let [owner, sizes, held] = self.owner_keys(&r.consumer);
        let mut inv = self.put.prepare_invoke();
        inv.key(self.item(&r.id))
            .key(owner)
            .key(sizes)
            .key(held)
            .arg(&r.consumer)
            .arg(r.created)
            .arg(bytes)
            .arg(r.response)
            .arg(r.input)
            .arg(ttl)
            .arg(quota)
            .arg(&r.id)
            .arg(self.redis.key("r:"))
            .arg(cutoff)
            .arg(MAX_EVICTIONS);
        let v: Vec<i64> = self.conn().await?.invoke(&inv).await?;
        let held = v.get(1).copied().unwrap_or(0).max(0) as u64;
        Ok(match v.first() {
            Some(1) => Put::Stored {
                held,
                evicted: v.get(2).copied().unwrap_or(0).max(0) as usize,
            },
            _ => Put::Refused { held },
        })
    }

    async fn get(&self, consumer: &str, id: &str) -> Result<Option<RawResponse>> {
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
        Ok(Some(RawResponse {
            id: id.to_string(),
            consumer: owner,
            created: created.parse().unwrap_or(0),
            response,
            input,
        }))
    }

    async fn response(&self, consumer: &str, id: &str) -> Result<Option<String>> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.item(id)).arg("consumer").arg("response");
        let v: Vec<Option<String>> = self.conn().await?.query(&cmd).await?;
        Ok(
            match <[Option<String>; 2]>::try_from(v).unwrap_or_default() {
                [Some(owner), Some(response)] if owner == consumer => Some(response),
                _ => None,
            },
        )
    }

    async fn delete(&self, consumer: &str, id: &str) -> Result<bool> {
        let [owner, sizes, held] = self.owner_keys(consumer);
        let mut inv = self.delete.prepare_invoke();
        inv.key(self.item(id))
            .key(owner)
            .key(sizes)
            .key(held)
            .arg(consumer)
            .arg(id);
        let n: i64 = self.conn().await?.invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Responses expire on their own (their TTL); each consumer's index and total forget
    /// them at its next writes.
    async fn sweep(&self, _before: u64) -> Result<u64> {
        Ok(0)
    }

    async fn held(&self, consumer: &str) -> Result<u64> {
        let [_, _, held] = self.owner_keys(consumer);
        let v: Option<u64> = self
            .conn()
            .await?
            .query(redis::cmd("GET").arg(held))
            .await?;
        Ok(v.unwrap_or(0))
    }
}
