//! The runtime's view of what the Admin API stores (`crate::config::overlay`): enabled,
//! unexpired consumers with their active keys as digests, the providers and models, and
//! what the APISIX objects import to; and when that view next changes by the clock.

use super::consumers::Spec;
use super::store::{KeyRow, Snapshot};
use crate::config::overlay::Overlay;
use crate::config::schema::{ConsumerConfig, Secret};

/// The runtime's view of what is stored at `now`: enabled, unexpired consumers with their
/// active keys as digests; and the next time that view changes by the clock alone.
pub fn build(s: &Snapshot, now: u64) -> (Overlay, Option<u64>) {
    let mut next: Option<u64> = None;
    let mut soon = |t: u64| {
        if t > now {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    let mut consumers = Vec::with_capacity(s.consumers.len());
    // Each consumer's keys, found once (not a scan of every key per consumer).
    let mut by_consumer: std::collections::HashMap<&str, Vec<&KeyRow>> =
        std::collections::HashMap::new();
    for k in &s.keys {
        by_consumer.entry(k.consumer.as_str()).or_default().push(k);
    }
    for row in &s.consumers {
        let Ok(spec) = serde_json::from_str::<Spec>(&row.spec) else {
            tracing::error!(consumer = %row.name, "admin store: unreadable consumer spec, skipped");
            continue;
        };
        if let Some(e) = spec.expires_at {
            soon(e);
        }
        let live = !spec.disabled && spec.expires_at.is_none_or(|e| e > now);
        let keys = by_consumer
            .get(row.name.as_str())
            .into_iter()
            .flatten()
            .filter(|k| k.revoked_at.is_none())
            .filter(|k| {
                if let Some(e) = k.expires_at {
                    soon(e);
                }
                live && k.expires_at.is_none_or(|e| e > now)
            })
            .map(|k| Secret::new(format!("sha256:{}", k.digest)))
            .collect();
        consumers.push(ConsumerConfig {
            name: row.name.clone(),
            keys,
            basic_auth: Vec::new(),
            limits: spec.limits,
            models: spec.models,
        });
    }
    let mut providers = Vec::new();
    let mut models = Vec::new();
    let mut routes = Vec::new();
    for o in &s.objects {
        let parsed = match o.kind.as_str() {
            "provider" => serde_json::from_str(&o.body).map(|p| providers.push(p)),
            "model" => serde_json::from_str(&o.body).map(|m| models.push(m)),
            _ => continue,
        };
        if let Err(e) = parsed {
            tracing::error!(object = %o.name, "admin store: unreadable {}, skipped: {e}", o.kind);
        }
    }
    // APISIX objects (the compatible subset), through the importer.
    if s.objects.iter().any(|o| o.kind.starts_with("apisix.")) {
        match super::apisix_import::imported(&s.objects) {
            Ok((c, _)) => {
                consumers.extend(c.consumers);
                providers.extend(c.providers);
                models.extend(c.models);
                routes.extend(c.routes);
            }
            Err(e) => tracing::error!("admin store: the APISIX objects do not import: {e}"),
        }
    }
    let overlay = Overlay {
        version: s.version,
        consumers,
        providers,
        models,
        routes,
    };
    (overlay, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::store::ConsumerRow;

    #[test]
    fn the_overlay_holds_only_live_keys_and_knows_when_it_changes() {
        let spec = |disabled: bool| {
            serde_json::to_string(&Spec {
                disabled,
                ..Spec::default()
            })
            .unwrap()
        };
        let row = |name: &str, disabled| ConsumerRow {
            name: name.into(),
            spec: spec(disabled),
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        let key = |id: &str, consumer: &str, expires, revoked| KeyRow {
            id: id.into(),
            consumer: consumer.into(),
            digest: "ab".repeat(32),
            prefix: "sk-gw-ab".into(),
            created_at: 0,
            expires_at: expires,
            revoked_at: revoked,
        };
        let s = Snapshot {
            version: 3,
            consumers: vec![row("a", false), row("off", true)],
            objects: Vec::new(),
            keys: vec![
                key("k1", "a", None, None),
                key("k2", "a", Some(150), None),
                key("k3", "a", None, Some(5)),
                key("k4", "off", None, None),
            ],
        };
        let (o, next) = build(&s, 100);
        assert_eq!(o.version, 3);
        assert_eq!(o.consumers[0].keys.len(), 2, "k1 and k2 (until 150)");
        assert!(o.consumers[1].keys.is_empty(), "a disabled consumer's keys");
        assert_eq!(next, Some(150));
        let (o, next) = build(&s, 150);
        assert_eq!(o.consumers[0].keys.len(), 1);
        assert_eq!(next, None);
    }
}
