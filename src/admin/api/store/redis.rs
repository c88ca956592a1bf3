//! The Admin API's store in the limits' Redis, shared by every instance: consumers and keys
//! in two hashes (keys as digests), the audit log in a list (the last 100,000 entries),
//! and a version counter bumped by every change in the same script. Each instance polls
//! the version ([`Redis::version`], every 250 ms) and reloads everything when it is
//! behind, so a change reaches every instance within a second, and an instance that lost
//! Redis resyncs in full once it is back. Each instance also records the version it
//! applies, for `GET /admin/status`.

use super::{AuditRow, Change, ConsumerRow, KeyRow, ObjectRow, Snapshot};
use crate::config::schema::LimitsConfig;
use crate::limits::redis::StoreConn;
use redis::Script;

/// One change: the consumer row (refused when it must be new and exists), a deletion with
/// its keys, up to two key rows, the audit entry; the new version.
const APPLY: &str = r#"
local c, k, v, a, o = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if ARGV[3] == '1' and ARGV[1] ~= '' and redis.call('HEXISTS', c, ARGV[1]) == 1 then return -1 end
if ARGV[3] == '1' and ARGV[10] ~= '' and redis.call('HEXISTS', o, ARGV[10]) == 1 then return -1 end
if ARGV[10] ~= '' then redis.call('HSET', o, ARGV[10], ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HDEL', o, ARGV[12]) end
if ARGV[1] ~= '' then redis.call('HSET', c, ARGV[1], ARGV[2]) end
if ARGV[4] ~= '' then
  redis.call('HDEL', c, ARGV[4])
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    if cjson.decode(all[i + 1]).consumer == ARGV[4] then redis.call('HDEL', k, all[i]) end
  end
end
if ARGV[5] ~= '' then redis.call('HSET', k, ARGV[5], ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', k, ARGV[7], ARGV[8]) end
local ver = redis.call('INCR', v)
redis.call('RPUSH', a, '{"seq":' .. ver .. ',' .. string.sub(ARGV[9], 2))
redis.call('LTRIM', a, -100000, -1)
redis.call('PUBLISH', ARGV[13], ver)
return ver
"#;

pub struct Redis {
    conn: StoreConn,
    apply: Script,
    /// A single Redis's URL, for the change notifications (none on a cluster: the
    /// version poll alone).
    notify_url: Option<String>,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("admin store (redis): {e}")
}

impl Redis {
    pub fn new(limits: &LimitsConfig) -> Redis {
        let single = limits.policy != crate::config::schema::LimitPolicy::RedisCluster;
        Redis {
            conn: StoreConn::new(limits, "admin"),
            apply: Script::new(APPLY),
            notify_url: limits
                .redis
                .url
                .as_ref()
                .filter(|_| single)
                .map(|u| u.expose().to_string()),
        }
    }

    fn keys(&self) -> [String; 5] {
        ["c", "k", "v", "a", "o"].map(|k| self.conn.key(k))
    }

    pub async fn apply(&self, change: Change) -> Result<Option<u64>, String> {
        let (cname, cjson) = match &change.upsert_consumer {
            Some(r) => (r.name.clone(), to_json(r)),
            None => (String::new(), String::new()),
        };
        let mut key_rows = change.insert_key.iter().chain(change.update_key.iter());
        let (k1, k1j) = key_rows.next().map_or((String::new(), String::new()), |k| {
            (k.id.clone(), to_json(k))
        });
        let (k2, k2j) = key_rows.next().map_or((String::new(), String::new()), |k| {
            (k.id.clone(), to_json(k))
        });
        let (actor, action, object, before, after) = &change.audit;
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        };
        let entry = serde_json::json!({"at": crate::admin::api::now(), "actor": actor,
            "action": action, "object": object, "before": parse(before), "after": parse(after)});
        let (ofield, ojson) = match &change.upsert_object {
            Some(o) => (ObjectRow::field(&o.kind, &o.name), to_json(o)),
            None => (String::new(), String::new()),
        };
        let odel = change
            .delete_object
            .as_ref()
            .map_or(String::new(), |(kind, name)| ObjectRow::field(kind, name));
        let [c, k, v, a, o] = self.keys();
        let mut inv = self.apply.prepare_invoke();
        inv.key(c).key(k).key(v).key(a).key(o);
        inv.arg(cname)
            .arg(cjson)
            .arg(if change.create { "1" } else { "0" })
            .arg(change.delete_consumer.clone().unwrap_or_default())
            .arg(k1)
            .arg(k1j)
            .arg(k2)
            .arg(k2j)
            .arg(entry.to_string())
            .arg(ofield)
            .arg(ojson)
            .arg(odel)
            .arg(self.conn.key("changed"));
        let conn = self.conn.get().await.map_err(err)?;
        let ver: i64 = conn.invoke(&inv).await.map_err(err)?;
        Ok(u64::try_from(ver).ok())
    }

    /// Wait for change notifications, waking `changed` at each, until the connection
    /// fails (the caller reconnects; the version poll covers what a gap missed).
    pub async fn notifications(&self, changed: &tokio::sync::Notify) -> Result<(), String> {
        use futures_util::StreamExt;
        let Some(url) = &self.notify_url else {
            return Err("no notifications on a cluster".into());
        };
        let client = redis::Client::open(url.as_str()).map_err(err)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(err)?;
        pubsub
            .subscribe(self.conn.key("changed"))
            .await
            .map_err(err)?;
        let mut messages = pubsub.on_message();
        while messages.next().await.is_some() {
            changed.notify_one();
        }
        Err("the notification connection closed".into())
    }

    /// Whether this store sends change notifications (a single Redis).
    pub fn notifies(&self) -> bool {
        self.notify_url.is_some()
    }

    /// The store's version (0: nothing stored, or a Redis that lost its data).
    pub async fn version(&self) -> Result<u64, String> {
        let conn = self.conn.get().await.map_err(err)?;
        let v: Option<u64> = conn
            .query(redis::cmd("GET").arg(self.conn.key("v")))
            .await
            .map_err(err)?;
        Ok(v.unwrap_or(0))
    }

    /// Everything stored.
    pub async fn load(&self) -> Result<Snapshot, String> {
        let [c, k, v, _, o] = self.keys();
        let conn = self.conn.get().await.map_err(err)?;
        let mut p = redis::pipe();
        p.cmd("HVALS").arg(c).cmd("HVALS").arg(k).cmd("GET").arg(v);
        p.cmd("HVALS").arg(o);
        let (consumers, keys, version, objects): (
            Vec<String>,
            Vec<String>,
            Option<u64>,
            Vec<String>,
        ) = conn.pipe(&p).await.map_err(err)?;
        let mut snap = Snapshot {
            version: version.unwrap_or(0),
            ..Snapshot::default()
        };
        for c in consumers {
            match serde_json::from_str::<ConsumerRow>(&c) {
                Ok(r) => snap.consumers.push(r),
                Err(e) => tracing::error!("admin store (redis): a consumer does not parse: {e}"),
            }
        }
        for k in keys {
            match serde_json::from_str::<KeyRow>(&k) {
                Ok(r) => snap.keys.push(r),
                Err(e) => tracing::error!("admin store (redis): a key does not parse: {e}"),
            }
        }
        for o in objects {
            match serde_json::from_str::<ObjectRow>(&o) {
                Ok(r) => snap.objects.push(r),
                Err(e) => tracing::error!("admin store (redis): an object does not parse: {e}"),
            }
        }
        snap.consumers.sort_by(|a, b| a.name.cmp(&b.name));
        snap.objects
            .sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        Ok(snap)
    }

    pub async fn audit(&self, after: u64, limit: u64) -> Result<Vec<AuditRow>, String> {
        let conn = self.conn.get().await.map_err(err)?;
        let all: Vec<String> = conn
            .query(redis::cmd("LRANGE").arg(self.conn.key("a")).arg(0).arg(-1))
            .await
            .map_err(err)?;
        Ok(all
            .iter()
            .filter_map(|e| serde_json::from_str::<AuditRow>(e).ok())
            .filter(|e| e.seq > after)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// Record that `instance` applies `version` (for `GET /admin/status`).
    pub async fn report(&self, instance: &str, version: u64) -> Result<(), String> {
        let conn = self.conn.get().await.map_err(err)?;
        let value = format!("{version} {}", crate::admin::api::now());
        conn.query::<()>(
            redis::cmd("HSET")
                .arg(self.conn.key("i"))
                .arg(instance)
                .arg(value),
        )
        .await
        .map_err(err)
    }

    /// Each instance seen in the last 10 s and the version it applies.
    pub async fn instances(&self) -> Result<Vec<(String, u64)>, String> {
        let conn = self.conn.get().await.map_err(err)?;
        let all: Vec<(String, String)> = conn
            .query(redis::cmd("HGETALL").arg(self.conn.key("i")))
            .await
            .map_err(err)?;
        let now = crate::admin::api::now();
        Ok(all
            .into_iter()
            .filter_map(|(id, v)| {
                let (ver, at) = v.split_once(' ')?;
                let at: u64 = at.parse().ok()?;
                (now.saturating_sub(at) <= 10).then(|| (id, ver.parse().unwrap_or(0)))
            })
            .collect())
    }
}

/// A row as stored: its JSON.
fn to_json<T: serde::Serialize>(row: &T) -> String {
    serde_json::to_string(row).unwrap_or_default()
}
