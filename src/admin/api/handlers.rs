//! The Admin API's routes: each checks, then (for a write) stores the change with its audit
//! entry and applies the new snapshot, all under the model's lock, so writes are serial.

use super::consumers::{self, Create, NewKey, Rotate, Spec};
use super::store::{Change, ConsumerRow, KeyRow, Snapshot};
use super::{now, openapi, reply, AdminApi, ApiError, Caller, Request};
use http::{Method, Response};
use serde_json::{json, Value};

type Answer = Result<Response<Vec<u8>>, ApiError>;

/// Dispatch one request.
pub async fn route(api: &AdminApi, caller: &Caller, req: &Request) -> Answer {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, seg.as_slice()) {
        (&Method::GET, ["openapi.json"]) => Ok(reply(200, &openapi::document())),
        (&Method::GET, ["status"]) => status(api).await,
        (&Method::GET, ["audit"]) => audit(api, req).await,
        (&Method::GET, ["consumers"]) => list(api, req).await,
        (&Method::POST, ["consumers"]) => create(api, caller, req).await,
        (&Method::GET, ["consumers", n]) => get(api, n).await,
        (&Method::PUT, ["consumers", n]) => replace(api, caller, req, n, false).await,
        (&Method::PATCH, ["consumers", n]) => replace(api, caller, req, n, true).await,
        (&Method::DELETE, ["consumers", n]) => delete(api, caller, req, n).await,
        (&Method::GET, ["consumers", n, "keys"]) => keys(api, n).await,
        (&Method::GET, ["consumers", n, "usage"]) => usage(api, n).await,
        (&Method::POST, ["consumers", n, "keys"]) => new_key(api, caller, req, n).await,
        (&Method::DELETE, ["consumers", n, "keys", id]) => {
            revoke(api, caller, req, n, id, None).await
        }
        (&Method::POST, ["consumers", n, "keys", id, "rotate"]) => {
            let r: Rotate = consumers::parse(&req.body)?;
            if r.grace_seconds > 30 * 86_400 {
                return Err(ApiError::invalid("at most 30 days", "grace_seconds"));
            }
            revoke(api, caller, req, n, id, Some(r.grace_seconds)).await
        }
        _ => Err(ApiError::new(
            404,
            "not_found_error",
            format!(
                "no route {} /admin/{} (see /admin/openapi.json)",
                req.method,
                req.segments.join("/")
            ),
        )),
    }
}

async fn status(api: &AdminApi) -> Answer {
    let applied = api.model().lock().await.version;
    let rt = api.state.runtime.load();
    let mut out = json!({"store": api.store().name(), "instance": super::instance_id(),
        "applied_version": applied, "config_generation": rt.generation});
    if let super::store::Store::Redis(r) = api.store() {
        out["store_version"] = json!(r.version().await.ok());
        let instances = r.instances().await.unwrap_or_default();
        out["instances"] = instances
            .into_iter()
            .map(|(id, v)| json!({"instance": id, "applied_version": v}))
            .collect();
    } else {
        out["store_version"] = json!(applied);
    }
    Ok(reply(200, &out))
}

fn limit_of(req: &Request, default: u64) -> Result<u64, ApiError> {
    match req.param("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("limit must be 1 to 1000", "limit")),
    }
}

async fn audit(api: &AdminApi, req: &Request) -> Answer {
    let limit = limit_of(req, 100)?;
    let after = match req.param("after") {
        None => 0,
        Some(a) => a
            .parse()
            .map_err(|_| ApiError::invalid("after must be an entry's seq", "after"))?,
    };
    let rows = api
        .store()
        .audit(after, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(reply(200, &json!({"object": "list", "data": rows})))
}

/// The file's consumer of that name, if any.
fn in_file(api: &AdminApi, name: &str) -> bool {
    api.state
        .file_config
        .load()
        .consumers
        .iter()
        .any(|c| c.name == name)
}

fn keys_of<'a>(snap: &'a Snapshot, name: &str) -> Vec<&'a KeyRow> {
    snap.keys.iter().filter(|k| k.consumer == name).collect()
}

async fn list(api: &AdminApi, req: &Request) -> Answer {
    let limit = usize::try_from(limit_of(req, 100)?).unwrap_or(100);
    let after = req.param("after").unwrap_or("");
    let snap = api.model().lock().await;
    let file = api.state.file_config.load();
    let mut all: Vec<(String, Value)> = file
        .consumers
        .iter()
        .map(|c| (c.name.clone(), consumers::file_view(c)))
        .chain(
            snap.consumers
                .iter()
                .map(|r| (r.name.clone(), consumers::view(r, &keys_of(&snap, &r.name)))),
        )
        .filter(|(n, _)| n.as_str() > after)
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let has_more = all.len() > limit;
    all.truncate(limit);
    let last = all.last().map(|(n, _)| n.clone());
    let data: Vec<Value> = all.into_iter().map(|(_, v)| v).collect();
    Ok(reply(
        200,
        &json!({"object": "list", "data": data, "has_more": has_more, "last": last}),
    ))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(404, "not_found_error", format!("no consumer {name:?}"))
}

fn read_only(name: &str) -> ApiError {
    ApiError::new(
        409,
        "conflict_error",
        format!(
            "the consumer {name:?} is defined in gateway.yaml (source: file): it is read-only here"
        ),
    )
}

async fn get(api: &AdminApi, name: &str) -> Answer {
    consumers::check_name(name)?;
    let snap = api.model().lock().await;
    if let Some(r) = snap.consumers.iter().find(|r| r.name == name) {
        return Ok(reply(200, &consumers::view(r, &keys_of(&snap, name))));
    }
    let file = api.state.file_config.load();
    match file.consumers.iter().find(|c| c.name == name) {
        Some(c) => Ok(reply(200, &consumers::file_view(c))),
        None => Err(not_found(name)),
    }
}

/// Store `change` and apply the snapshot it makes (`snap`, updated here with the new
/// version); answer `status` with `object`.
async fn commit(
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

fn dry(action: &str, object: Value) -> Answer {
    Ok(reply(
        200,
        &json!({"dry_run": true, "action": action, "object": object}),
    ))
}

async fn create(api: &AdminApi, caller: &Caller, req: &Request) -> Answer {
    let (name, spec) = consumers::parse::<Create>(&req.body)?.split();
    consumers::check_name(&name)?;
    let mut snap = api.model().lock().await;
    if in_file(api, &name) || snap.consumers.iter().any(|r| r.name == name) {
        return Err(ApiError::new(
            409,
            "conflict_error",
            format!("a consumer {name:?} exists already"),
        ));
    }
    if snap.consumers.len() >= consumers::MAX_CONSUMERS {
        return Err(ApiError::new(
            409,
            "conflict_error",
            "the store holds its most consumers",
        ));
    }
    checked(api, &name, &spec).await?;
    let t = now();
    let row = ConsumerRow {
        name: name.clone(),
        spec: serde_json::to_string(&spec).map_err(ApiError::internal)?,
        created_at: t,
        updated_at: t,
        version: 1,
    };
    let view = consumers::view(&row, &[]);
    if req.dry_run() {
        return dry("create", view);
    }
    let change = Change {
        upsert_consumer: Some(row.clone()),
        create: true,
        audit: audit_row(caller, "consumer.create", &name, None, Some(&row.spec)),
        ..Change::default()
    };
    snap.consumers.push(row);
    commit(api, &mut snap, change, 201, view).await
}

/// [`consumers::check_spec`] on the blocking pool (the config's checks may read files).
async fn checked(api: &AdminApi, name: &str, spec: &Spec) -> Result<(), ApiError> {
    let (name, spec, file) = (
        name.to_string(),
        spec.clone(),
        api.state.file_config.load_full(),
    );
    tokio::task::spawn_blocking(move || consumers::check_spec(&name, &spec, &file))
        .await
        .map_err(ApiError::internal)?
}

fn audit_row(
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

/// RFC 7396: `patch` merged into `target`.
fn merge_patch(target: &mut Value, patch: Value) {
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

async fn replace(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    name: &str,
    patch: bool,
) -> Answer {
    consumers::check_name(name)?;
    if in_file(api, name) {
        return Err(read_only(name));
    }
    let mut snap = api.model().lock().await;
    let Some(i) = snap.consumers.iter().position(|r| r.name == name) else {
        return Err(not_found(name));
    };
    let before = snap.consumers[i].spec.clone();
    let spec: Spec = if patch {
        let p: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}"), ""))?;
        if !p.is_object() {
            return Err(ApiError::invalid("a merge patch must be a JSON object", ""));
        }
        let mut current: Value = serde_json::from_str(&before).map_err(ApiError::internal)?;
        merge_patch(&mut current, p);
        consumers::parse(current.to_string().as_bytes())?
    } else {
        consumers::parse(&req.body)?
    };
    checked(api, name, &spec).await?;
    let mut row = snap.consumers[i].clone();
    row.spec = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    row.updated_at = now();
    row.version += 1;
    let view = consumers::view(&row, &keys_of(&snap, name));
    if req.dry_run() {
        return dry(if patch { "patch" } else { "replace" }, view);
    }
    let change = Change {
        upsert_consumer: Some(row.clone()),
        audit: audit_row(
            caller,
            "consumer.update",
            name,
            Some(&before),
            Some(&row.spec),
        ),
        ..Change::default()
    };
    snap.consumers[i] = row;
    commit(api, &mut snap, change, 200, view).await
}

async fn delete(api: &AdminApi, caller: &Caller, req: &Request, name: &str) -> Answer {
    consumers::check_name(name)?;
    if in_file(api, name) {
        return Err(read_only(name));
    }
    let mut snap = api.model().lock().await;
    let Some(i) = snap.consumers.iter().position(|r| r.name == name) else {
        return Err(not_found(name));
    };
    let object = json!({"object": "consumer", "name": name, "deleted": true});
    if req.dry_run() {
        return dry("delete", object);
    }
    let before = snap.consumers[i].spec.clone();
    let change = Change {
        delete_consumer: Some(name.to_string()),
        audit: audit_row(caller, "consumer.delete", name, Some(&before), None),
        ..Change::default()
    };
    snap.consumers.remove(i);
    snap.keys.retain(|k| k.consumer != name);
    commit(api, &mut snap, change, 200, object).await
}

async fn keys(api: &AdminApi, name: &str) -> Answer {
    consumers::check_name(name)?;
    let snap = api.model().lock().await;
    if !snap.consumers.iter().any(|r| r.name == name) {
        return Err(if in_file(api, name) {
            read_only(name)
        } else {
            not_found(name)
        });
    }
    let data: Vec<Value> = keys_of(&snap, name)
        .into_iter()
        .map(consumers::key_view)
        .collect();
    Ok(reply(200, &json!({"object": "list", "data": data})))
}

/// A key row for `secret` of consumer `name`.
fn key_row(name: &str, secret: &str, expires_at: Option<u64>) -> KeyRow {
    KeyRow {
        id: format!("key_{}", hex::encode(rand::random::<[u8; 8]>())),
        consumer: name.to_string(),
        digest: hex::encode(crate::config::digest::of_key(secret)),
        prefix: secret.chars().take(10).collect(),
        created_at: now(),
        expires_at,
        revoked_at: None,
    }
}

async fn new_key(api: &AdminApi, caller: &Caller, req: &Request, name: &str) -> Answer {
    consumers::check_name(name)?;
    let body: NewKey = consumers::parse(&req.body)?;
    if body.expires_at.is_some_and(|e| e <= now()) {
        return Err(ApiError::invalid(
            "expires_at must be in the future",
            "expires_at",
        ));
    }
    let mut snap = api.model().lock().await;
    if !snap.consumers.iter().any(|r| r.name == name) {
        return Err(if in_file(api, name) {
            read_only(name)
        } else {
            not_found(name)
        });
    }
    if keys_of(&snap, name).len() >= consumers::MAX_KEYS_PER_CONSUMER {
        return Err(ApiError::new(
            409,
            "conflict_error",
            "this consumer holds its most keys (64): revoke or delete some",
        ));
    }
    let secret = match body.key {
        Some(k) if (20..=256).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => k,
        Some(_) => {
            return Err(ApiError::invalid(
                "an imported key must be 20 to 256 visible ASCII characters",
                "key",
            ))
        }
        None => consumers::generate_key(),
    };
    if api.state.runtime.load().consumer_for_key(&secret).is_some() {
        return Err(ApiError::new(
            409,
            "conflict_error",
            "that key belongs to a consumer already",
        ));
    }
    let row = key_row(name, &secret, body.expires_at);
    let mut object = consumers::key_view(&row);
    object["key"] = json!(secret);
    object["note"] = json!("the key is shown this once; only its digest is stored");
    if req.dry_run() {
        object["key"] = Value::Null;
        return dry("create_key", object);
    }
    let after = consumers::key_view(&row).to_string();
    let change = Change {
        insert_key: Some(row.clone()),
        audit: audit_row(
            caller,
            "key.create",
            &format!("{name}/{}", row.id),
            None,
            Some(&after),
        ),
        ..Change::default()
    };
    snap.keys.push(row);
    commit(api, &mut snap, change, 201, object).await
}

/// Revoke a key now (`grace: None`), or rotate it: a new key, the old one expiring
/// `grace` seconds from now.
async fn revoke(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    name: &str,
    id: &str,
    grace: Option<u64>,
) -> Answer {
    consumers::check_name(name)?;
    consumers::check_name(id)?;
    let mut snap = api.model().lock().await;
    let Some(i) = snap
        .keys
        .iter()
        .position(|k| k.consumer == name && k.id == id && k.revoked_at.is_none())
    else {
        return Err(ApiError::new(
            404,
            "not_found_error",
            format!("no active key {id:?} of {name:?}"),
        ));
    };
    let before = consumers::key_view(&snap.keys[i]).to_string();
    let t = now();
    let mut old = snap.keys[i].clone();
    let (action, fresh) = match grace {
        None => {
            old.revoked_at = Some(t);
            ("key.revoke", None)
        }
        Some(g) => {
            old.expires_at = Some(old.expires_at.map_or(t + g, |e| e.min(t + g)));
            let secret = consumers::generate_key();
            let row = key_row(name, &secret, None);
            ("key.rotate", Some((secret, row)))
        }
    };
    let mut object = match &fresh {
        Some((secret, row)) => {
            let mut o = consumers::key_view(row);
            o["key"] = json!(secret);
            o["replaces"] = consumers::key_view(&old);
            o
        }
        None => consumers::key_view(&old),
    };
    if req.dry_run() {
        object["key"] = Value::Null;
        return dry(action, object);
    }
    let change = Change {
        update_key: Some(old.clone()),
        insert_key: fresh.as_ref().map(|(_, r)| r.clone()),
        audit: audit_row(
            caller,
            action,
            &format!("{name}/{id}"),
            Some(&before),
            Some(&consumers::key_view(&old).to_string()),
        ),
        ..Change::default()
    };
    snap.keys[i] = old;
    if let Some((_, row)) = fresh {
        snap.keys.push(row);
    }
    commit(api, &mut snap, change, 200, object).await
}

/// A consumer's limits and what is in use (exact across instances with a shared policy).
async fn usage(api: &AdminApi, name: &str) -> Answer {
    consumers::check_name(name)?;
    let known = in_file(api, name)
        || api
            .model()
            .lock()
            .await
            .consumers
            .iter()
            .any(|r| r.name == name);
    if !known {
        return Err(not_found(name));
    }
    let rt = api.state.runtime.load();
    let rules: Vec<_> = rt.consumer_limits(name).iter().collect();
    let limits = crate::gateway::usage::usages(&api.state, &rules).await;
    Ok(reply(
        200,
        &json!({"object": "consumer.usage", "consumer": name, "limits": limits}),
    ))
}
