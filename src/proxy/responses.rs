//! The Responses API's HTTP surface around the call core: before the call, a previous
//! response's history is joined to the input (`previous_response_id`, for every
//! provider); after it, the Response is stored for its consumer (`store`, default true).
//! Also `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`,
//! which count against the consumer's limits like any request, and read the stored text
//! without building the whole input in memory.
//!
//! A chain's joined history (the stored input and output plus the new input) is bounded
//! by `server.max_body_bytes`, as if the client had sent it whole (400 past it); an input
//! alone over `responses.consumer_quota_bytes` is refused before the upstream call.
//! Translation to and from chat is `crate::surfaces::responses`.

use super::batches::{limit, param, query};
use super::{respond, RequestCtx};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use crate::response_store::{item_id, now, raw_items, Put, RawResponse, ANONYMOUS};
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
    let rt = state.runtime.load();
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
        // The joined history goes upstream as one body: bounded as one.
        let limit = rt.config.server.max_body_bytes;
        let joined = (p.bytes() as usize).saturating_add(req.body_len());
        if joined > limit {
            return Err(GatewayError::BadRequest {
                message: format!(
                    "The conversation is too long: with the history of '{prev}' the request \
                     would be {joined} bytes, over the gateway's limit of {limit} bytes \
                     (server.max_body_bytes). Start a new conversation or send less history."
                ),
                param: Some("previous_response_id"),
                code: Some("context_too_large"),
            });
        }
        let stored = |e: serde_json::Error| GatewayError::Internal(format!("stored response: {e}"));
        let input: Vec<Value> = serde_json::from_str(&p.input).map_err(stored)?;
        let response: Value = serde_json::from_str(&p.response).map_err(stored)?;
        items.extend(input);
        if let Value::Object(mut o) = response {
            if let Some(Value::Array(output)) = o.remove("output") {
                items.extend(output);
            }
        }
    }
    items.extend(input_items(&echo["input"])?);
    let items = with_ids(items);
    // An input that could never be stored is refused before it costs an upstream call.
    if state.responses.is_some() && echo["store"] != json!(false) {
        let quota = rt.config.responses.consumer_quota_bytes;
        let size = serde_json::to_vec(&items).map_or(0, |v| v.len()) as u64;
        if size > quota {
            return Err(GatewayError::BadRequest {
                message: format!(
                    "This response cannot be stored: its input is {size} bytes, over the \
                     per-consumer storage quota of {quota} bytes \
                     (responses.consumer_quota_bytes). Send it with \"store\": false."
                ),
                param: Some("store"),
                code: Some("storage_quota_exceeded"),
            });
        }
    }
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
    let r = RawResponse {
        id,
        consumer: owner(ctx),
        created: response["created_at"].as_u64().unwrap_or_else(now),
        response: response.to_string(),
        input: Value::Array(p.items.clone()).to_string(),
    };
    let bytes = r.bytes();
    match store.put(r, rt.config.responses.consumer_quota_bytes).await {
        Ok(Put::Stored { .. }) => {}
        Ok(Put::Refused { held }) => tracing::warn!(
            request_id = %ctx.request_id,
            bytes,
            held,
            "response not stored: over the consumer's storage quota (responses.consumer_quota_bytes)"
        ),
        Err(e) => {
            tracing::error!(error = %e, request_id = %ctx.request_id, "response not stored")
        }
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
    // A read is a request like any other: the consumer's limits apply.
    let rt = state.runtime.load_full();
    super::passthrough::admit_plain(state, &rt, session, ctx, "", &[]).await?;
    match route {
        Route::Get(id) => {
            let text = match store {
                Some(s) => s.response(&consumer, &id).await.map_err(store_error)?,
                None => None,
            };
            let text = text.ok_or_else(|| not_found(&id))?;
            let h = respond::header(200, "application/json", ctx);
            respond::full(session, ctx, h, Bytes::from(text)).await;
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
            let q = query(session);
            let n = limit(&q, 20, 100)?;
            let r = match store {
                Some(s) => s.get(&consumer, &id).await.map_err(store_error)?,
                None => None,
            };
            let r = r.ok_or_else(|| not_found(&id))?;
            let body = input_page(
                &r.input,
                n,
                param(&q, "order") == Some("asc"),
                param(&q, "after"),
            )
            .map_err(store_error)?;
            let h = respond::header(200, "application/json", ctx);
            respond::full(session, ctx, h, Bytes::from(body)).await;
        }
    }
    Ok(())
}

/// One page of a stored input as the list object's JSON, built from the raw items: only
/// the page's items are copied, and only their ids are parsed.
fn input_page(
    input: &str,
    n: usize,
    asc: bool,
    after: Option<&str>,
) -> crate::response_store::Result<String> {
    let mut items = raw_items(input)?;
    if !asc {
        items.reverse();
    }
    let start = match after {
        Some(after) => items
            .iter()
            .position(|i| item_id(i).as_deref() == Some(after))
            .map_or(items.len(), |at| at + 1),
        None => 0,
    };
    let rest = &items[start..];
    let page = &rest[..rest.len().min(n)];
    let id = |i: Option<&&serde_json::value::RawValue>| {
        i.and_then(|i| item_id(i))
            .map_or(Value::Null, Value::String)
    };
    let mut out =
        String::with_capacity(page.iter().map(|i| i.get().len() + 1).sum::<usize>() + 128);
    out.push_str(r#"{"object":"list","data":["#);
    for (k, item) in page.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push_str(&format!(
        r#"],"first_id":{},"last_id":{},"has_more":{}}}"#,
        id(page.first()),
        id(page.last()),
        rest.len() > n
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::input_page;
    use serde_json::Value;

    #[test]
    fn pages_raw_items() {
        let input = r#"[{"id":"a","n":1},{"id":"b","n":2},{"id":"c","n":3}]"#;
        let v: Value = serde_json::from_str(&input_page(input, 2, false, None).unwrap()).unwrap();
        assert_eq!(v["data"][0]["id"], "c");
        assert_eq!(v["data"][1]["n"], 2);
        assert_eq!(v["first_id"], "c");
        assert_eq!(v["last_id"], "b");
        assert_eq!(v["has_more"], true);
        let v: Value =
            serde_json::from_str(&input_page(input, 20, true, Some("a")).unwrap()).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["has_more"], false);
        let v: Value =
            serde_json::from_str(&input_page(input, 20, true, Some("zz")).unwrap()).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 0);
        assert!(v["first_id"].is_null());
    }
}
