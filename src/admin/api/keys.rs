//! A consumer's keys through the Admin API: list (ids and prefixes only), create (the
//! secret answered once, only its digest stored), revoke, rotate with a grace period.

use super::consumers::{self, NewKey};
use super::store::{Change, KeyRow};
use super::write::{audit_row, commit, dry, in_file, keys_of, not_found, read_only, Answer};
use super::{now, reply, AdminApi, ApiError, Caller, Request};
use serde_json::{json, Value};

pub async fn list(api: &AdminApi, name: &str) -> Answer {
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

pub async fn create(api: &AdminApi, caller: &Caller, req: &Request, name: &str) -> Answer {
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
pub async fn revoke(
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
