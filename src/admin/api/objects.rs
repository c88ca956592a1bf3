//! Providers and models through the Admin API (the original design's "queues": a model
//! with its deployments, limits, prices and fallback). Each is `gateway.yaml`'s own
//! schema, checked by the file's validation on the config it would make; a provider's
//! credentials are write-only (no view shows `api_key`, AWS keys or header values), its
//! URL must parse and reach only public addresses (or `admin.provider_allow_networks`),
//! and a `credentials_file` (a path on the gateway's host) cannot be set here.

use super::store::{Change, ObjectRow};
use super::write::{audit_row, commit, dry, Answer};
use super::{now, reply, AdminApi, ApiError, Caller, Request};
use crate::config::schema::{ModelConfig, ProviderSpec};
use serde_json::{json, Value};

/// `provider` or `model`, from the path's `providers` / `models`.
pub fn kind_of(plural: &str) -> Option<&'static str> {
    match plural {
        "providers" => Some("provider"),
        "models" => Some("model"),
        _ => None,
    }
}

/// A stored object as the API shows it: secrets left out.
fn view(o: &ObjectRow) -> Value {
    let mut body: Value = serde_json::from_str(&o.body).unwrap_or(Value::Null);
    if let Some(b) = body.as_object_mut() {
        for secret in [
            "api_key",
            "access_key_id",
            "secret_access_key",
            "session_token",
        ] {
            if b.remove(secret).is_some() {
                b.insert(format!("{secret}_set"), json!(true));
            }
        }
        if let Some(Value::Object(h)) = b.get_mut("headers") {
            for v in h.values_mut() {
                *v = json!("<write-only>");
            }
        }
    }
    json!({"object": o.kind, "name": o.name, "source": "api", "spec": body,
        "created_at": o.created_at, "updated_at": o.updated_at, "version": o.version})
}

/// Whether the file defines a `kind` called `name`.
fn in_file(api: &AdminApi, kind: &str, name: &str) -> bool {
    let f = api.state.file_config.load();
    match kind {
        "provider" => f.providers.iter().any(|p| p.name == name),
        _ => f.models.iter().any(|m| m.name == name),
    }
}

pub async fn list(api: &AdminApi, req: &Request, kind: &str) -> Answer {
    let limit = match req.param("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("limit must be 1 to 1000", "limit"))?,
    };
    let after = req.param("after").unwrap_or("");
    let snap = api.model().lock().await;
    let f = api.state.file_config.load();
    let file: Vec<Value> = match kind {
        "provider" => f
            .providers
            .iter()
            .map(|p| json!({"object": "provider", "name": p.name, "source": "file"}))
            .collect(),
        _ => f
            .models
            .iter()
            .map(|m| json!({"object": "model", "name": m.name, "source": "file"}))
            .collect(),
    };
    let api_made = snap.objects.iter().filter(|o| o.kind == kind).map(view);
    let mut data: Vec<Value> = file
        .into_iter()
        .chain(api_made)
        .filter(|v| v["name"].as_str().is_some_and(|n| n > after))
        .collect();
    data.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let has_more = data.len() > limit;
    data.truncate(limit);
    let last = data.last().map(|v| v["name"].clone());
    Ok(reply(
        200,
        &json!({"object": "list", "data": data, "has_more": has_more, "last": last}),
    ))
}

pub async fn get(api: &AdminApi, kind: &str, name: &str) -> Answer {
    super::consumers::check_name(name)?;
    let snap = api.model().lock().await;
    match snap
        .objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
    {
        Some(o) => Ok(super::write::with_etag(reply(200, &view(o)), o.version)),
        None if in_file(api, kind, name) => Ok(reply(
            200,
            &json!({"object": kind, "name": name, "source": "file"}),
        )),
        None => Err(ApiError::new(
            404,
            "not_found_error",
            format!("no {kind} {name:?}"),
        )),
    }
}

/// Parse a body as the kind's schema (unknown fields named), with the name it must carry.
fn parse(kind: &str, body: &[u8], name: Option<&str>) -> Result<(String, Value), ApiError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}"), ""))?;
    let Some(o) = v.as_object_mut() else {
        return Err(ApiError::invalid("the body must be a JSON object", ""));
    };
    if let Some(n) = name {
        o.entry("name").or_insert_with(|| json!(n));
    }
    let named = o
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_some_and(|n| n != named) {
        return Err(ApiError::invalid(
            "the body's name differs from the path's",
            "name",
        ));
    }
    if o.contains_key("credentials_file") {
        return Err(ApiError::invalid(
            "credentials_file (a path on the gateway's host) cannot be set through the Admin API",
            "credentials_file",
        ));
    }
    let text = v.to_string();
    let checked = match kind {
        "provider" => super::consumers::parse::<ProviderSpec>(text.as_bytes()).map(|_| ()),
        _ => super::consumers::parse::<ModelConfig>(text.as_bytes()).map(|_| ()),
    };
    checked?;
    Ok((named, v))
}

/// Create (`name: None`: the name is in the body) or replace a provider or model.
pub async fn put(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    kind: &str,
    name: Option<&str>,
) -> Answer {
    if let Some(n) = name {
        super::consumers::check_name(n)?;
    }
    // A merge patch applies to what is stored (a 404 when nothing is).
    let patched;
    let raw: &[u8] = if req.method == http::Method::PATCH {
        let snap = api.model().lock().await;
        let n = name.unwrap_or_default();
        let Some(o) = snap.objects.iter().find(|o| o.kind == kind && o.name == n) else {
            return Err(ApiError::new(
                404,
                "not_found_error",
                format!("no {kind} {n:?}"),
            ));
        };
        let p: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}"), ""))?;
        if !p.is_object() {
            return Err(ApiError::invalid("a merge patch must be a JSON object", ""));
        }
        let mut current: Value = serde_json::from_str(&o.body).map_err(ApiError::internal)?;
        super::write::merge_patch(&mut current, p);
        patched = current.to_string().into_bytes();
        &patched
    } else {
        &req.body
    };
    let (name, body) = parse(kind, raw, name)?;
    super::consumers::check_name(&name)?;
    if in_file(api, kind, &name) {
        return Err(ApiError::new(
            409,
            "conflict_error",
            format!("the {kind} {name:?} is defined in gateway.yaml: it is read-only here"),
        ));
    }
    if kind == "provider" {
        super::checks::egress(api, &body).await?;
    }
    let create = req.method == http::Method::POST;
    let mut snap = api.model().lock().await;
    let at = snap
        .objects
        .iter()
        .position(|o| o.kind == kind && o.name == name);
    let t = now();
    let row = match (at, create) {
        (Some(_), true) => {
            return Err(ApiError::new(
                409,
                "conflict_error",
                format!("a {kind} {name:?} exists already"),
            ))
        }
        (None, false) => {
            return Err(ApiError::new(
                404,
                "not_found_error",
                format!("no {kind} {name:?}"),
            ))
        }
        (Some(i), false) => {
            super::write::precondition(req, snap.objects[i].version)?;
            ObjectRow {
                body: body.to_string(),
                updated_at: t,
                version: snap.objects[i].version + 1,
                ..snap.objects[i].clone()
            }
        }
        (None, true) => ObjectRow {
            kind: kind.to_string(),
            name: name.clone(),
            body: body.to_string(),
            created_at: t,
            updated_at: t,
            version: 1,
        },
    };
    let mut next = snap.clone();
    match at {
        Some(i) => next.objects[i] = row.clone(),
        None => next.objects.push(row.clone()),
    }
    super::checks::config(api, &next).await?;
    let shown = view(&row);
    if req.dry_run() {
        return dry(if create { "create" } else { "replace" }, shown);
    }
    let before = at.map(|i| view(&snap.objects[i]).to_string());
    let change = Change {
        upsert_object: Some(row),
        create,
        audit: audit_row(
            caller,
            &format!("{kind}.{}", if create { "create" } else { "replace" }),
            &name,
            before.as_deref(),
            Some(&shown.to_string()),
        ),
        ..Change::default()
    };
    *snap = next;
    commit(
        api,
        &mut snap,
        change,
        if create { 201 } else { 200 },
        shown,
    )
    .await
}

pub async fn delete(
    api: &AdminApi,
    caller: &Caller,
    req: &Request,
    kind: &str,
    name: &str,
) -> Answer {
    super::consumers::check_name(name)?;
    if in_file(api, kind, name) {
        return Err(ApiError::new(
            409,
            "conflict_error",
            format!("the {kind} {name:?} is defined in gateway.yaml: it is read-only here"),
        ));
    }
    let mut snap = api.model().lock().await;
    let Some(i) = snap
        .objects
        .iter()
        .position(|o| o.kind == kind && o.name == name)
    else {
        return Err(ApiError::new(
            404,
            "not_found_error",
            format!("no {kind} {name:?}"),
        ));
    };
    super::write::precondition(req, snap.objects[i].version)?;
    let mut next = snap.clone();
    let gone = next.objects.remove(i);
    // A provider a model still uses cannot go.
    super::checks::config(api, &next).await.map_err(|e| {
        ApiError::new(
            409,
            "conflict_error",
            format!("{} ({})", e.message, e.param.unwrap_or_default()),
        )
    })?;
    let object = json!({"object": kind, "name": name, "deleted": true});
    if req.dry_run() {
        return dry("delete", object);
    }
    let change = Change {
        delete_object: Some((kind.to_string(), name.to_string())),
        audit: audit_row(
            caller,
            &format!("{kind}.delete"),
            name,
            Some(&view(&gone).to_string()),
            None,
        ),
        ..Change::default()
    };
    *snap = next;
    commit(api, &mut snap, change, 200, object).await
}
