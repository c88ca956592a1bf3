//! What every write of the Admin API shares: storing a change and applying the snapshot
//! it makes, dry runs, audit rows, and the lookups and refusals of consumers.

use super::store::{Change, KeyRow, Snapshot};
use super::{reply, AdminApi, ApiError, Caller, Request};
use http::Response;
use serde_json::{json, Value};

/// A route's answer.
pub type Answer = Result<Response<Vec<u8>>, ApiError>;

/// The file's consumer of that name, if any.
pub fn in_file(api: &AdminApi, name: &str) -> bool {
    api.state
        .file_config
        .load()
        .consumers
        .iter()
        .any(|c| c.name == name)
}

pub fn keys_of<'a>(snap: &'a Snapshot, name: &str) -> Vec<&'a KeyRow> {
    snap.keys.iter().filter(|k| k.consumer == name).collect()
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::new(404, "not_found_error", format!("no consumer {name:?}"))
}

pub fn read_only(name: &str) -> ApiError {
    ApiError::new(
        409,
        "conflict_error",
        format!(
            "the consumer {name:?} is defined in gateway.yaml (source: file): it is read-only here"
        ),
    )
}

/// Store `change` and apply the snapshot it makes (`snap`, updated here with the new
/// version); answer `status` with `object`.
pub async fn commit(
    api: &AdminApi,
    snap: &mut Snapshot,
    change: Change,
    status: u16,
    object: Value,
) -> Answer {
    let version = api
        .store()
        .apply(change)
        .await
        .map_err(ApiError::internal)?;
    let Some(version) = version else {
        return Err(ApiError::new(
            409,
            "conflict_error",
            "a consumer of that name was just created (by another instance)",
        ));
    };
    // Another instance wrote in between (the shared store): this one's view lacks that
    // change, so it stays one version behind and reloads at its next sync.
    snap.version = if version == snap.version + 1 {
        version
    } else {
        version.saturating_sub(1)
    };
    api.applied(snap);
    Ok(reply(status, &object))
}

pub fn dry(action: &str, object: Value) -> Answer {
    Ok(reply(
        200,
        &json!({"dry_run": true, "action": action, "object": object}),
    ))
}

pub fn audit_row(
    caller: &Caller,
    action: &str,
    object: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> (String, String, String, Option<String>, Option<String>) {
    (
        caller.id.clone(),
        action.to_string(),
        object.to_string(),
        before.map(str::to_string),
        after.map(str::to_string),
    )
}

/// A consumer's ETag: its version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// `resp` with the ETag of `version`.
pub fn with_etag(mut resp: Response<Vec<u8>>, version: u64) -> Response<Vec<u8>> {
    if let Ok(v) = http::HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

/// A 412 unless `If-Match` (when sent) names the consumer's current version (or `*`).
pub fn precondition(req: &Request, version: u64) -> Result<(), ApiError> {
    match req.if_match.as_deref().map(str::trim) {
        None | Some("*") => Ok(()),
        Some(m) if m.trim_start_matches("W/") == etag(version) => Ok(()),
        Some(m) => Err(ApiError::new(
            412,
            "precondition_failed",
            format!(
                "If-Match {m} is stale: the consumer is at {}",
                etag(version)
            ),
        )),
    }
}

/// RFC 7396: `patch` merged into `target`.
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge_patch(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}
