//! The APISIX objects the Admin API keeps, as the gateway config the importer
//! (`import-apisix`'s own code) makes of them: pure, for the overlay and the APISIX routes.

use super::store::ObjectRow;
use crate::config::schema::{Config, Secret};
use serde_json::Value;

/// The resources of the subset.
pub const RESOURCES: &[&str] = &["consumers", "routes", "upstreams", "plugin_metadata"];

/// The store's kind for a resource (`apisix.routes`).
pub fn kind(resource: &str) -> String {
    format!("apisix.{resource}")
}

/// The APISIX standalone document of what is stored (credentials folded in below).
fn document(objects: &[ObjectRow]) -> Value {
    let mut doc = serde_json::Map::new();
    for r in RESOURCES {
        let items: Vec<Value> = objects
            .iter()
            .filter(|o| o.kind == kind(r))
            .filter_map(|o| serde_json::from_str(&o.body).ok())
            .collect();
        if !items.is_empty() {
            doc.insert((*r).to_string(), Value::Array(items));
        }
    }
    Value::Object(doc)
}

/// The gateway config the stored APISIX objects make (the importer's), with each
/// credential's key added to its consumer; and what the importer could not map.
pub fn imported(objects: &[ObjectRow]) -> Result<(Config, Vec<crate::import::Unmapped>), String> {
    let doc = serde_yaml_ng::to_value(document(objects)).map_err(|e| e.to_string())?;
    let (config, unmapped) = crate::import::apisix::map_config(&doc)?;
    let mut config: Config = serde_yaml_ng::from_value(config).map_err(|e| e.to_string())?;
    for cred in objects.iter().filter(|o| o.kind == "apisix.credentials") {
        let Some((user, _)) = cred.name.split_once(':') else {
            continue;
        };
        let v: Value = serde_json::from_str(&cred.body).unwrap_or(Value::Null);
        if let (Some(key), Some(c)) = (
            v["plugins"]["key-auth"]["key"].as_str(),
            config.consumers.iter_mut().find(|c| c.name == user),
        ) {
            c.keys.push(Secret::new(key));
        }
    }
    Ok((config, unmapped))
}
