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
use crate::canonical::write::ArrayOut;
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use crate::response_store::{item_id, now, raw_items, Put, RawResponse, ANONYMOUS};
use crate::state::AppState;
use crate::surfaces::responses::tools::ChatTools;
use crate::surfaces::responses::{derived_id, for_each_input, with_id, Echo};
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use pingora::proxy::Session;
use serde_json::value::RawValue;
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
    /// What the Response echoes: the client's body but its input, and its tools' chat
    /// names.
    pub echo: Echo,
    /// Every input item the model sees, with ids, as a JSON array, to store with the
    /// response (`None`: it will not be stored). Taken (not copied) by [`keep`], once.
    pub items: std::sync::Mutex<Option<String>>,
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
    let echo = Value::Object(req.head(&["input"])?);
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
    let prev = echo["previous_response_id"].as_str();
    // With a previous response, the upstream gets the joined history as its input.
    let mut upstream = prev.map(|_| {
        let mut head = echo.as_object().cloned().unwrap_or_default();
        head.remove("previous_response_id");
        ArrayOut::field(&head, "input")
    });
    // The input as stored: built only when the response will be.
    let stored = state.responses.is_some() && echo["store"] != json!(false);
    let mut items = stored.then(ArrayOut::array);
    if let Some(prev) = prev {
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
        #[derive(serde::Deserialize)]
        struct Output<'a> {
            #[serde(borrow)]
            output: Option<Vec<&'a RawValue>>,
        }
        let output: Output<'_> = serde_json::from_str(&p.response).map_err(stored)?;
        let history = raw_items(&p.input).map_err(store_error)?;
        // The history's items keep the ids they were listed under in the previous
        // response; its output items have their own.
        let mut joined = |item: Value| {
            if let Some(i) = items.as_mut() {
                i.push(&item);
            }
            if let Some(u) = upstream.as_mut() {
                if let Some(i) = upstream_item(&item) {
                    u.push(&i);
                }
            }
        };
        for (index, raw) in history.into_iter().enumerate() {
            let item = serde_json::from_str(raw.get()).map_err(stored)?;
            joined(with_id(item, &p.id, index));
        }
        for raw in output.output.unwrap_or_default() {
            joined(serde_json::from_str(raw.get()).map_err(stored)?);
        }
    }
    // New items are stored as sent; their ids are derived when listed.
    for_each_input(&req, |item| {
        if let Some(u) = upstream.as_mut() {
            if let Some(i) = upstream_item(&item) {
                u.push(&i);
            }
        }
        if let Some(i) = items.as_mut() {
            i.push(&item);
        }
        Ok(())
    })?;
    let items = items.map(ArrayOut::finish_text);
    // An input that could never be stored is refused before it costs an upstream call.
    if let Some(items) = &items {
        let quota = rt.config.responses.consumer_quota_bytes;
        let size = items.len() as u64;
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
    let req = match upstream {
        Some(u) => AiRequest::parse(Endpoint::Responses, Bytes::from(u.finish()))?,
        None => req,
    };
    let items = std::sync::Mutex::new(items);
    // The tools of the whole history (`additional_tools` items of earlier turns too).
    let tools = ChatTools::of(&req)?.names;
    let echo = Echo { head: echo, tools };
    Ok((req, Prepared { echo, items }))
}

/// Keep the Response the client gets (unless it asked for `store: false`).
pub async fn keep(state: &AppState, ctx: &RequestCtx, p: &Prepared, response: Value) {
    let Some(store) = &state.responses else {
        return;
    };
    let Some(items) = p.items.lock().ok().and_then(|mut i| i.take()) else {
        return;
    };
    let Some(id) = response["id"].as_str().map(str::to_string) else {
        return;
    };
    let rt = state.runtime.load();
    let r = RawResponse {
        id,
        consumer: owner(ctx),
        created: response["created_at"].as_u64().unwrap_or_else(now),
        response: response.to_string(),
        input: items,
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
                &r.id,
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
/// the page's items are parsed whole (the others only for their ids).
fn input_page(
    input: &str,
    response_id: &str,
    n: usize,
    asc: bool,
    after: Option<&str>,
) -> crate::response_store::Result<String> {
    let items = raw_items(input)?;
    let id = |at: usize| listed_id(items[at], response_id, at);
    let mut order: Vec<usize> = (0..items.len()).collect();
    if !asc {
        order.reverse();
    }
    let start = match after {
        Some(after) => order
            .iter()
            .position(|&at| id(at) == after)
            .map_or(order.len(), |k| k + 1),
        None => 0,
    };
    let rest = &order[start..];
    let page = &rest[..rest.len().min(n)];
    let mut data = ArrayOut::field(&serde_json::Map::new(), "data");
    for &at in page {
        let item: Value = serde_json::from_str(items[at].get()).map_err(|e| {
            crate::response_store::ResponseStoreError::Other(format!("stored input: {e}"))
        })?;
        data.push(&with_id(item, response_id, at));
    }
    let mut out = data.finish_text();
    out.pop(); // the closing brace: the list's other fields follow
    let id = |at: Option<&usize>| at.map_or(Value::Null, |&at| Value::String(id(at)));
    out.push_str(&format!(
        r#","object":"list","first_id":{},"last_id":{},"has_more":{}}}"#,
        id(page.first()),
        id(page.last()),
        rest.len() > n
    ));
    Ok(out)
}

/// The id a stored input item is listed under (its own, or derived from its place).
fn listed_id(item: &RawValue, response_id: &str, at: usize) -> String {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    item_id(item).unwrap_or_else(|| {
        let kind = serde_json::from_str::<Kind>(item.get())
            .ok()
            .and_then(|k| k.kind);
        derived_id(kind.as_deref(), response_id, at)
    })
}

#[cfg(test)]
mod tests {
    use super::input_page;
    use serde_json::Value;

    #[test]
    fn pages_raw_items() {
        let input = r#"[{"id":"a","n":1},{"id":"b","n":2},{"id":"c","n":3}]"#;
        let page = |n, asc, after| input_page(input, "resp_1", n, asc, after).unwrap();
        let v: Value = serde_json::from_str(&page(2, false, None)).unwrap();
        assert_eq!(v["data"][0]["id"], "c");
        assert_eq!(v["data"][1]["n"], 2);
        assert_eq!(v["first_id"], "c");
        assert_eq!(v["last_id"], "b");
        assert_eq!(v["has_more"], true);
        let v: Value = serde_json::from_str(&page(20, true, Some("a"))).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["has_more"], false);
        let v: Value = serde_json::from_str(&page(20, true, Some("zz"))).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 0);
        assert!(v["first_id"].is_null());
    }

    #[test]
    fn items_stored_as_sent_are_listed_with_stable_ids() {
        let input = r#"[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c"}]"#;
        let page = |after| input_page(input, "resp_9", 1, true, after).unwrap();
        let first: Value = serde_json::from_str(&page(None)).unwrap();
        let id = first["data"][0]["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("msg_"));
        assert_eq!(first["first_id"], id.as_str());
        assert_eq!(first["data"][0]["content"][0]["type"], "input_text");
        assert_eq!(first["data"][0]["status"], "completed");
        // The same id on every read, so it pages.
        let next: Value = serde_json::from_str(&page(Some(&id))).unwrap();
        assert!(next["data"][0]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(next["has_more"], false);
    }
}
