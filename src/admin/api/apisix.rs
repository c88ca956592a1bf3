//! The APISIX-compatible subset of the Admin API, for automation that migrates from
//! APISIX: `PUT`/`GET`/`DELETE /apisix/admin/{consumers, routes, upstreams,
//! plugin_metadata}/{id}` and `/apisix/admin/consumers/{username}/credentials/{id}`, with
//! `X-API-KEY`, answering in APISIX's shapes (`{"key", "value"}`, `{"total", "list"}`,
//! `400 {"error_msg"}`). The objects are kept as APISIX sent them (keys replaced by their
//! digest) and the whole set goes through the importer (`import-apisix`'s own code) into
//! the runtime, so a replayed script behaves as importing the same objects from a file; an
//! object the importer cannot map is refused with the importer's reason.

use super::apisix_import::{imported, kind, RESOURCES};
use super::store::{Change, ObjectRow, Snapshot};
use super::write::{audit_row, Answer};
use super::{now, AdminApi, ApiError, Caller, Request};
use http::{Method, Response};
use serde_json::{json, Value};

fn apisix_error(status: u16, message: impl Into<String>) -> ApiError {
    ApiError::new(status, "apisix", message)
}

/// APISIX's error body for `e`.
pub fn error_body(e: &ApiError) -> Value {
    json!({"error_msg": e.message})
}

/// An APISIX object with its keys (key-auth's `key`, basic-auth's `password`) replaced by
/// their digests, so no readable key is stored.
fn without_keys(mut v: Value) -> Value {
    if let Some(plugins) = v.get_mut("plugins").and_then(Value::as_object_mut) {
        if let Some(k) = plugins.get_mut("key-auth").and_then(|p| p.get_mut("key")) {
            if let Some(key) = k.as_str().filter(|k| !k.starts_with("sha256:")) {
                *k = json!(format!(
                    "sha256:{}",
                    hex::encode(crate::config::digest::of_key(key))
                ));
            }
        }
    }
    v
}

/// What a `GET` shows: provider credentials of `ai-proxy` left out.
fn shown(mut v: Value) -> Value {
    for plugin in ["ai-proxy", "ai-proxy-multi"] {
        if let Some(p) = v.get_mut("plugins").and_then(|p| p.get_mut(plugin)) {
            redact_auth(p);
        }
    }
    v
}

fn redact_auth(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if k == "auth" {
                    *val = json!("<write-only>");
                } else {
                    redact_auth(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_auth),
        _ => {}
    }
}

fn entry(resource: &str, id: &str, v: Value) -> Value {
    json!({"key": format!("/apisix/{resource}/{id}"), "value": shown(v)})
}

/// Answer one `/apisix/admin/…` request.
pub async fn route(api: &AdminApi, caller: &Caller, req: &Request) -> Answer {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let (resource, id) = match seg.as_slice() {
        [r] if RESOURCES.contains(r) => (r.to_string(), None),
        [r, id] if RESOURCES.contains(r) => (r.to_string(), Some(id.to_string())),
        ["consumers", u, "credentials"] => ("credentials".into(), Some(format!("{u}:"))),
        ["consumers", u, "credentials", c] => ("credentials".into(), Some(format!("{u}:{c}"))),
        _ => return Err(apisix_error(404, "404 Route Not Found")),
    };
    if let Some(id) = &id {
        for part in id.split(':').filter(|p| !p.is_empty()) {
            super::consumers::check_name(part).map_err(|_| apisix_error(400, "invalid id"))?;
        }
    }
    let kind = kind(&resource);
    match (&req.method, id) {
        (&Method::GET, None) => list(api, &resource, &kind, "").await,
        (&Method::GET, Some(id)) if id.ends_with(':') => list(api, &resource, &kind, &id).await,
        (&Method::GET, Some(id)) => {
            let snap = api.model().lock().await;
            let o = snap.objects.iter().find(|o| o.kind == kind && o.name == id);
            match o.and_then(|o| serde_json::from_str::<Value>(&o.body).ok()) {
                Some(v) => Ok(super::reply(200, &entry(&resource, &id, v))),
                None => Err(apisix_error(404, "Key not found")),
            }
        }
        (&Method::PUT, Some(id)) if !id.ends_with(':') => {
            put(api, caller, req, &resource, &kind, &id).await
        }
        (&Method::DELETE, Some(id)) if !id.ends_with(':') => {
            delete(api, caller, &resource, &kind, &id).await
        }
        _ => Err(apisix_error(405, "method not allowed here")),
    }
}

async fn list(api: &AdminApi, resource: &str, kind: &str, prefix: &str) -> Answer {
    let snap = api.model().lock().await;
    let list: Vec<Value> = snap
        .objects
        .iter()
        .filter(|o| o.kind == kind && o.name.starts_with(prefix))
        .filter_map(|o| {
            Some(entry(
                resource,
                &o.name,
                serde_json::from_str(&o.body).ok()?,
            ))
        })
        .collect();
    Ok(super::reply(
        200,
        &json!({"total": list.len(), "list": list}),
    ))
}

/// The first thing the importer could not map in `object` (`consumers[alice]`,
/// `routes[id=1]`, …).
fn unmapped_for(unmapped: &[crate::import::Unmapped], resource: &str, id: &str) -> Option<String> {
    let user = id.split(':').next().unwrap_or(id);
    let markers = [
        format!("{resource}[id={id}]"),
        format!("{resource}[{id}]"),
        format!("consumers[{user}]"),
    ];
    unmapped
        .iter()
        .find(|u| markers.iter().any(|m| u.at.starts_with(m.as_str())))
        .map(|u| format!("{}: {}", u.at, u.what))
}

async fn put(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    resource: &str,
    kind: &str,
    id: &str,
) -> Answer {
    let mut v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| apisix_error(400, format!("invalid JSON: {e}")))?;
    let Some(o) = v.as_object_mut() else {
        return Err(apisix_error(
            400,
            "invalid configuration: the body must be an object",
        ));
    };
    match resource {
        "consumers" => {
            o.insert("username".into(), json!(id));
        }
        "credentials" => {}
        _ => {
            o.insert("id".into(), json!(id));
        }
    }
    let v = without_keys(v);
    let mut snap = api.model().lock().await;
    let t = now();
    let at = snap
        .objects
        .iter()
        .position(|o| o.kind == kind && o.name == id);
    let row = ObjectRow {
        kind: kind.to_string(),
        name: id.to_string(),
        body: v.to_string(),
        created_at: at.map_or(t, |i| snap.objects[i].created_at),
        updated_at: t,
        version: at.map_or(1, |i| snap.objects[i].version + 1),
    };
    let mut next: Snapshot = snap.clone();
    match at {
        Some(i) => next.objects[i] = row.clone(),
        None => next.objects.push(row.clone()),
    }
    let (config, unmapped) = imported(&next.objects).map_err(|e| apisix_error(400, e))?;
    if let Some(why) = unmapped_for(&unmapped, resource, id) {
        return Err(apisix_error(
            400,
            format!("cannot be applied by this gateway: {why}"),
        ));
    }
    // The providers it makes reach only public addresses (or the allowed networks).
    for p in &config.providers {
        let url = json!({"base_url": p.base_url});
        super::checks::egress(api, &url)
            .await
            .map_err(|e| apisix_error(400, format!("{}: {}", p.name, e.message)))?;
    }
    checked(api, &next).await?;
    let change = Change {
        upsert_object: Some(row),
        audit: audit_row(
            caller,
            &format!("{kind}.put"),
            id,
            None,
            Some(&shown(v.clone()).to_string()),
        ),
        ..Change::default()
    };
    *snap = next;
    let status = if at.is_some() { 200 } else { 201 };
    let answer = entry(resource, id, v);
    super::write::commit(api, &mut snap, change, status, answer).await
}

async fn delete(api: &AdminApi, caller: &Caller, resource: &str, kind: &str, id: &str) -> Answer {
    let mut snap = api.model().lock().await;
    let Some(i) = snap
        .objects
        .iter()
        .position(|o| o.kind == kind && o.name == id)
    else {
        return Err(apisix_error(404, "Key not found"));
    };
    let mut next = snap.clone();
    next.objects.remove(i);
    checked(api, &next).await?;
    let change = Change {
        delete_object: Some((kind.to_string(), id.to_string())),
        audit: audit_row(caller, &format!("{kind}.delete"), id, None, None),
        ..Change::default()
    };
    *snap = next;
    let answer = json!({"deleted": "1", "key": format!("/apisix/{resource}/{id}")});
    super::write::commit(api, &mut snap, change, 200, answer).await
}

/// The config the store would make after `next`, checked as the file is (APISIX's error).
async fn checked(api: &AdminApi, next: &Snapshot) -> Result<(), ApiError> {
    super::checks::config(api, next).await.map_err(|e| {
        let at = e.param.unwrap_or_default();
        apisix_error(400, format!("{at}: {}", e.message))
    })
}

/// An APISIX-shaped error answer.
pub fn error_reply(e: &ApiError) -> Response<Vec<u8>> {
    super::reply(e.status, &error_body(e))
}
