//! The Responses API's HTTP surface around the call core: before the call, a previous
//! response's history is joined to the input (`previous_response_id`, for every
//! provider); after it, the Response is stored for its consumer (`store`, default true).
//! Also `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`.
//! Translation to and from chat is `crate::surfaces::responses`.

use super::batches::{limit, param, query};
use super::{respond, RequestCtx};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use crate::response_store::{now, StoredResponse, ANONYMOUS};
use crate::state::AppState;
use crate::surfaces::responses::{input_items, with_ids};
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use pingora::proxy::Session;
use serde_json::{json, Value};

/// The stored-response routes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Get(String),
    Delete(String),
    InputItems(String),
}

impl Route {
    pub fn parse(method: &http::Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/responses/")?;
        let id = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let seg: Vec<&str> = rest.split('/').collect();
        Some(match (method, seg.as_slice()) {
            (&http::Method::GET, [r]) if !r.is_empty() => Route::Get(id(r)),
            (&http::Method::DELETE, [r]) if !r.is_empty() => Route::Delete(id(r)),
            (&http::Method::GET, [r, "input_items"]) if !r.is_empty() => Route::InputItems(id(r)),
            _ => return None,
        })
    }
}

/// What a Responses call keeps beside its request.
pub struct Prepared {
    /// The client's body, which the Response echoes.
    pub echo: Value,
    /// Every input item the model sees, with ids (stored with the response).
    pub items: Vec<Value>,
}

fn owner(ctx: &RequestCtx) -> String {
    ctx.consumer
        .as_deref()
        .map_or_else(|| ANONYMOUS.to_string(), str::to_string)
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("Response with id '{id}' not found."))
}

fn store_error(e: crate::response_store::ResponseStoreError) -> GatewayError {
    GatewayError::Internal(e.to_string())
}

/// An input item as sent upstream to a provider that speaks the Responses API: the
/// gateway's own ids and statuses left out (the provider does not know them); reasoning
/// items only with their encrypted content.
fn upstream_item(item: &Value) -> Option<Value> {
    let mut item = item.clone();
    let o = item.as_object_mut()?;
    if o.get("type").and_then(Value::as_str) == Some("reasoning") {
        return o.contains_key("encrypted_content").then_some(item);
    }
    o.remove("id");
    o.remove("status");
    Some(item)
}

/// Join the previous response's history, check what the gateway cannot do, and build the
/// request for the call core (history joined, `previous_response_id` removed).
pub async fn prepare(
    state: &AppState,
    ctx: &RequestCtx,
    raw: Bytes,
) -> Result<(AiRequest, Prepared), GatewayError> {
    let req = AiRequest::parse(Endpoint::Responses, raw)?;
    let echo = req.json()?;
    for (field, what) in [
        ("background", "background responses"),
        ("conversation", "conversations"),
    ] {
        if !echo[field].is_null() && echo[field] != json!(false) {
            return Err(GatewayError::bad_request(
                format!("{what} are not supported by this gateway."),
                Some(if field == "background" {
                    "background"
                } else {
                    "conversation"
                }),
            ));
        }
    }
    let mut items = Vec::new();
    if let Some(prev) = echo["previous_response_id"].as_str() {
        let found = match &state.responses {
            Some(store) => store.get(&owner(ctx), prev).await.map_err(store_error)?,
            None => None,
        };
        let Some(p) = found else {
            return Err(GatewayError::BadRequest {
                message: format!("Previous response with id '{prev}' not found."),
                param: Some("previous_response_id"),
                code: Some("previous_response_not_found"),
            });
        };
        items.extend(p.input);
        items.extend(p.response["output"].as_array().cloned().unwrap_or_default());
    }
    items.extend(input_items(&echo["input"])?);
    let items = with_ids(items);
    if echo["previous_response_id"].is_null() {
        return Ok((req, Prepared { echo, items }));
    }
    let mut upstream = echo.clone();
    if let Some(o) = upstream.as_object_mut() {
        o.remove("previous_response_id");
        o.insert(
            "input".into(),
            Value::Array(items.iter().filter_map(upstream_item).collect()),
        );
    }
    let req = AiRequest::parse(Endpoint::Responses, Bytes::from(upstream.to_string()))?;
    Ok((req, Prepared { echo, items }))
}

/// Keep the Response the client gets (unless it asked for `store: false`).
pub async fn keep(state: &AppState, ctx: &RequestCtx, p: &Prepared, response: Value) {
    let Some(store) = &state.responses else {
        return;
    };
    if p.echo["store"] == json!(false) {
        return;
    }
    let Some(id) = response["id"].as_str().map(str::to_string) else {
        return;
    };
    let rt = state.runtime.load();
    let r = StoredResponse {
        id,
        consumer: owner(ctx),
        created: response["created_at"].as_u64().unwrap_or_else(now),
        response,
        input: p.items.clone(),
    };
    if let Err(e) = store.put(r, rt.config.responses.consumer_quota_bytes).await {
        tracing::error!(error = %e, request_id = %ctx.request_id, "response not stored");
    }
}

/// Serve a stored-response route.
pub async fn serve(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Route,
) -> Result<(), GatewayError> {
    let store = state.responses.as_deref();
    let consumer = owner(ctx);
    let found = |id: &str| {
        let id = id.to_string();
        let consumer = consumer.clone();
        async move {
            match store {
                Some(s) => s.get(&consumer, &id).await.map_err(store_error),
                None => Ok(None),
            }
        }
    };
    match route {
        Route::Get(id) => {
            let r = found(&id).await?.ok_or_else(|| not_found(&id))?;
            respond::json(session, ctx, &r.response).await;
        }
        Route::Delete(id) => {
            let deleted = match store {
                Some(s) => s.delete(&consumer, &id).await.map_err(store_error)?,
                None => false,
            };
            if !deleted {
                return Err(not_found(&id));
            }
            respond::json(
                session,
                ctx,
                &json!({"id": id, "object": "response", "deleted": true}),
            )
            .await;
        }
        Route::InputItems(id) => {
            let r = found(&id).await?.ok_or_else(|| not_found(&id))?;
            let q = query(session);
            let n = limit(&q, 20, 100)?;
            let mut items = r.input;
            if param(&q, "order") != Some("asc") {
                items.reverse();
            }
            if let Some(after) = param(&q, "after") {
                let at = items.iter().position(|i| i["id"] == after);
                items = at.map_or_else(Vec::new, |at| items.split_off(at + 1));
            }
            let has_more = items.len() > n;
            items.truncate(n);
            let first = items
                .first()
                .map(|i| i["id"].clone())
                .unwrap_or(Value::Null);
            let last = items.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            respond::json(
                session,
                ctx,
                &json!({"object": "list", "data": items, "first_id": first, "last_id": last,
                        "has_more": has_more}),
            )
            .await;
        }
    }
    Ok(())
}
