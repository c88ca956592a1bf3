//! The Admin API's routes: each checks, then (for a write) stores the change with its audit
//! entry and applies the new snapshot, all under the model's lock, so writes are serial.

use super::consumers::{self, Create, Rotate, Spec};
use super::store::{Change, ConsumerRow, KeyRow, Snapshot};
use super::{keys, now, objects, openapi, reply, AdminApi, ApiError, Caller, Request};
use http::Method;
use serde_json::{json, Value};

pub(super) use super::write::Answer;
use super::write::{
    audit_row, commit, dry, in_file, keys_of, merge_patch, not_found, precondition, read_only,
    with_etag,
};

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
        (&Method::GET, ["consumers", n, "keys"]) => keys::list(api, n).await,
        (&Method::GET, ["consumers", n, "usage"]) => usage(api, n).await,
        (&Method::GET, [k]) if objects::kind_of(k).is_some() => {
            objects::list(api, req, objects::kind_of(k).unwrap_or_default()).await
        }
        (&Method::POST, [k]) if objects::kind_of(k).is_some() => {
            objects::put(
                api,
                caller,
                req,
                objects::kind_of(k).unwrap_or_default(),
                None,
            )
            .await
        }
        (&Method::GET, [k, n]) if objects::kind_of(k).is_some() => {
            objects::get(api, objects::kind_of(k).unwrap_or_default(), n).await
        }
        (&Method::PUT | &Method::PATCH, [k, n]) if objects::kind_of(k).is_some() => {
            objects::put(
                api,
                caller,
                req,
                objects::kind_of(k).unwrap_or_default(),
                Some(n),
            )
            .await
        }
        (&Method::DELETE, [k, n]) if objects::kind_of(k).is_some() => {
            objects::delete(api, caller, req, objects::kind_of(k).unwrap_or_default(), n).await
        }
        (&Method::POST, ["consumers", n, "keys"]) => keys::create(api, caller, req, n).await,
        (&Method::DELETE, ["consumers", n, "keys", id]) => {
            keys::revoke(api, caller, req, n, id, None).await
        }
        (&Method::POST, ["consumers", n, "keys", id, "rotate"]) => {
            let r: Rotate = consumers::parse(&req.body)?;
            if r.grace_seconds > 30 * 86_400 {
                return Err(ApiError::invalid("at most 30 days", "grace_seconds"));
            }
            keys::revoke(api, caller, req, n, id, Some(r.grace_seconds)).await
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

async fn list(api: &AdminApi, req: &Request) -> Answer {
    let limit = usize::try_from(limit_of(req, 100)?).unwrap_or(100);
    let after = req.param("after").unwrap_or("");
    let snap = api.model().lock().await;
    let file = api.state.file_config.load();
    // The page's names first; views (with their keys) only for them.
    let mut page: Vec<(&str, Option<&ConsumerRow>)> = file
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), None))
        .chain(snap.consumers.iter().map(|r| (r.name.as_str(), Some(r))))
        .filter(|(n, _)| *n > after)
        .collect();
    page.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let has_more = page.len() > limit;
    page.truncate(limit);
    let mut keys: std::collections::HashMap<&str, Vec<&KeyRow>> = page
        .iter()
        .filter(|(_, r)| r.is_some())
        .map(|(n, _)| (*n, Vec::new()))
        .collect();
    for k in &snap.keys {
        if let Some(list) = keys.get_mut(k.consumer.as_str()) {
            list.push(k);
        }
    }
    let last = page.last().map(|(n, _)| n.to_string());
    let data: Vec<Value> = page
        .iter()
        .map(|(n, row)| match row {
            Some(r) => consumers::view(r, keys.get(n).map_or(&[][..], Vec::as_slice)),
            None => file
                .consumers
                .iter()
                .find(|c| c.name == *n)
                .map_or(Value::Null, consumers::file_view),
        })
        .collect();
    Ok(reply(
        200,
        &json!({"object": "list", "data": data, "has_more": has_more, "last": last}),
    ))
}

async fn get(api: &AdminApi, name: &str) -> Answer {
    consumers::check_name(name)?;
    let snap = api.model().lock().await;
    if let Some(r) = snap.consumers.iter().find(|r| r.name == name) {
        let view = consumers::view(r, &keys_of(&snap, name));
        return Ok(with_etag(reply(200, &view), r.version));
    }
    let file = api.state.file_config.load();
    match file.consumers.iter().find(|c| c.name == name) {
        Some(c) => Ok(reply(200, &consumers::file_view(c))),
        None => Err(not_found(name)),
    }
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

async fn replace(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    name: &str,
    patch: bool,
) -> Answer {
    let (mut snap, i) = writable(api, req, name).await?;
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
    let version = row.version;
    snap.consumers[i] = row;
    commit(api, &mut snap, change, 200, view)
        .await
        .map(|r| with_etag(r, version))
}

/// The API consumer `name` for a write: the locked snapshot and its place (a 409 for the
/// file's, a 404 for none, a 412 for a stale `If-Match`).
async fn writable<'a>(
    api: &'a AdminApi,
    req: &Request,
    name: &str,
) -> Result<(tokio::sync::MutexGuard<'a, Snapshot>, usize), ApiError> {
    consumers::check_name(name)?;
    if in_file(api, name) {
        return Err(read_only(name));
    }
    let snap = api.model().lock().await;
    let Some(i) = snap.consumers.iter().position(|r| r.name == name) else {
        return Err(not_found(name));
    };
    precondition(req, snap.consumers[i].version)?;
    Ok((snap, i))
}

async fn delete(api: &AdminApi, caller: &Caller, req: &Request, name: &str) -> Answer {
    let (mut snap, i) = writable(api, req, name).await?;
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
