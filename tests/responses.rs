//! The Responses API against the real binary: translated to chat for an OpenAI-compatible
//! upstream (what it receives checked field by field), native on an OpenAI upstream, the
//! stored responses (previous_response_id, retrieve, delete, input items, consumer
//! isolation), and the response store contract on SQLite and on a real Redis.

mod common;

use ai_rate_limiter::response_store::{
    redis::RedisResponses, sqlite::SqliteResponses, Put, RawResponse, ResponseStore,
};
use common::chat_upstream::{upstream, UPSTREAM_KEY};
use common::fixture_server::{last, recording, Recorded};
use common::{send, sse_events, Gw, Resp};
use serde_json::{json, Value};

const KEY: &str = "sk-client";
const OTHER: &str = "sk-other";

fn gateway() -> (Gw, Recorded) {
    let (port, seen) = recording(upstream);
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: ["{KEY}"]}}, {{name: d, keys: ["{OTHER}"]}}]
providers:
  - {{name: compat, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: "{UPSTREAM_KEY}"}}
  - {{name: openai, kind: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: "{UPSTREAM_KEY}"}}
models:
  - {{name: chat, deployments: [{{provider: compat, model: up-text}}]}}
  - {{name: short, deployments: [{{provider: compat, model: up-short}}]}}
  - {{name: tools, deployments: [{{provider: compat, model: up-tools}}]}}
  - {{name: limited, deployments: [{{provider: compat, model: up-limited}}]}}
  - {{name: gpt, deployments: [{{provider: openai, model: gpt-up}}]}}
reload: {{watch: false}}
"#
    ));
    (gw, seen)
}

fn call(gw: &Gw, method: &str, path: &str, key: &str, body: Option<&Value>) -> Resp {
    let auth = format!("Bearer {key}");
    send(method, &gw.url(path), &[("authorization", &auth)], body)
}

fn create(gw: &Gw, body: Value) -> Resp {
    call(gw, "POST", "/v1/responses", KEY, Some(&body))
}

#[test]
fn translated_whole_responses_and_their_requests() {
    let (gw, seen) = gateway();
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true},
        {"type": "web_search"}]);
    let schema = json!({"type": "object", "properties": {"v": {"type": "integer"}}});
    let r = create(
        &gw,
        json!({"model": "chat", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 20,
               "temperature": 0.5, "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"},
               "text": {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": true}},
               "reasoning": {"effort": "low"}, "metadata": {"team": "a"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let resp = r.json();
    assert_eq!(resp["object"], "response");
    assert!(resp["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(resp["status"], "completed");
    assert_eq!(resp["model"], "chat");
    assert_eq!(resp["instructions"], "Be brief.");
    assert_eq!(resp["metadata"], json!({"team": "a"}));
    assert_eq!(resp["tools"], tools, "the request's tools echoed");
    let out = &resp["output"][0];
    assert_eq!(
        (out["type"].as_str(), out["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(out["content"][0]["text"], "Hello");
    assert_eq!(
        resp["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
               "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
    );
    let sent = last(&seen);
    assert_eq!(sent.target, "/v1/chat/completions");
    assert_eq!(
        sent.json(),
        json!({"model": "up-text", "max_tokens": 20, "temperature": 0.5,
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": true}},
               "reasoning_effort": "low"})
    );
    // A cut-off answer is incomplete, with its reason.
    let r = create(&gw, json!({"model": "short", "input": "Hi"}));
    let resp = r.json();
    assert_eq!(resp["status"], "incomplete");
    assert_eq!(
        resp["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(resp["output"][0]["status"], "incomplete");
    // Upstream errors keep OpenAI's shape and Retry-After.
    let r = create(&gw, json!({"model": "limited", "input": "Hi"}));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("7"));
    // What the gateway cannot do is refused before any upstream call.
    let before = seen.lock().unwrap().len();
    let r = create(
        &gw,
        json!({"model": "chat", "input": "Hi", "background": true}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("background"))
    );
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[test]
fn translated_streams_keep_the_sdk_invariants() {
    let (gw, seen) = gateway();
    let r = create(&gw, json!({"model": "chat", "input": "Hi", "stream": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains("[DONE]"),
        "no [DONE] on a Responses stream"
    );
    let ev = sse_events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (kind, d)) in ev.iter().enumerate() {
        assert_eq!(d["type"], kind.as_str());
        assert_eq!(
            d["sequence_number"], i as u64,
            "numbered from 0 without gaps"
        );
    }
    let item_id = ev[2].1["item"]["id"].clone();
    assert!(ev[3..9]
        .iter()
        .all(|(_, d)| d.get("item_id").is_none_or(|i| *i == item_id)));
    assert_eq!(ev[6].1["text"], "Hello");
    let done = &ev[9].1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["usage"]["total_tokens"], 15);
    assert_eq!(
        last(&seen).json()["stream_options"],
        json!({"include_usage": true})
    );

    // A function call: no message item, arguments whole in the done events.
    let r = create(
        &gw,
        json!({"model": "tools", "input": "Weather?", "stream": true,
               "tools": [{"type": "function", "name": "get_weather", "parameters": null, "strict": null}]}),
    );
    let ev = sse_events(&r.body);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[2].1["item"]["arguments"], "");
    assert_eq!(ev[2].1["item"]["call_id"], "call_1");
    assert_eq!(ev[5].1["arguments"], r#"{"city":"Oslo"}"#);
    assert_eq!(ev[5].1["name"], "get_weather");
    assert_eq!(
        ev[7].1["response"]["output"][0]["arguments"],
        r#"{"city":"Oslo"}"#
    );
}

#[test]
fn stored_responses_chain_for_every_provider_and_stay_with_their_consumer() {
    let (gw, seen) = gateway();
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let first = create(
        &gw,
        json!({"model": "tools", "instructions": "Turn one only.", "input": "Weather in Oslo?", "tools": tools}),
    )
    .json();
    let fc = &first["output"][0];
    assert_eq!(fc["type"], "function_call");
    let id = first["id"].as_str().unwrap();
    // Turn two: only the tool output; the gateway joins the stored history.
    let second = create(
        &gw,
        json!({"model": "tools", "previous_response_id": id, "tools": tools,
               "input": [{"type": "function_call_output", "call_id": fc["call_id"], "output": "-3C"}]}),
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["previous_response_id"], id);
    assert_eq!(
        last(&seen).json()["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
               {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "-3C"}]),
        "history joined, turn one's instructions not carried over"
    );
    // Retrieve, input items (paged), delete.
    let got = call(&gw, "GET", &format!("/v1/responses/{id}"), KEY, None);
    assert_eq!(got.json(), first);
    let second_id = second.json()["id"].as_str().unwrap().to_string();
    let items = call(
        &gw,
        "GET",
        &format!("/v1/responses/{second_id}/input_items?order=asc"),
        KEY,
        None,
    )
    .json();
    let kinds: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "function_call", "function_call_output"]);
    assert!(items["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["id"].is_string()));
    let page = call(
        &gw,
        "GET",
        &format!("/v1/responses/{second_id}/input_items?limit=1"),
        KEY,
        None,
    )
    .json();
    assert_eq!(
        (page["data"][0]["type"].as_str(), page["has_more"].as_bool()),
        (Some("function_call_output"), Some(true))
    );
    let after = page["last_id"].as_str().unwrap();
    let next = call(
        &gw,
        "GET",
        &format!("/v1/responses/{second_id}/input_items?limit=1&after={after}"),
        KEY,
        None,
    )
    .json();
    assert_eq!(next["data"][0]["type"], "function_call");
    // Another consumer sees nothing of it.
    assert_eq!(
        call(&gw, "GET", &format!("/v1/responses/{id}"), OTHER, None).status,
        404
    );
    assert_eq!(
        call(&gw, "DELETE", &format!("/v1/responses/{id}"), OTHER, None).status,
        404
    );
    let r = call(
        &gw,
        "POST",
        "/v1/responses",
        OTHER,
        Some(&json!({"model": "chat", "input": "x", "previous_response_id": id})),
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("previous_response_not_found"))
    );
    // Deleted, it is gone.
    let d = call(&gw, "DELETE", &format!("/v1/responses/{id}"), KEY, None);
    assert_eq!(
        d.json(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(
        call(&gw, "GET", &format!("/v1/responses/{id}"), KEY, None).status,
        404
    );
    // store: false keeps nothing.
    let unstored = create(&gw, json!({"model": "chat", "input": "Hi", "store": false})).json();
    let path = format!("/v1/responses/{}", unstored["id"].as_str().unwrap());
    assert_eq!(call(&gw, "GET", &path, KEY, None).status, 404);
    // A streamed response is stored too.
    let streamed = create(&gw, json!({"model": "chat", "input": "Hi", "stream": true}));
    let ev = sse_events(&streamed.body);
    let sid = ev[0].1["response"]["id"].as_str().unwrap();
    let got = call(&gw, "GET", &format!("/v1/responses/{sid}"), KEY, None).json();
    assert_eq!(got["output"][0]["content"][0]["text"], "Hello");
}

#[test]
fn native_responses_on_openai_pass_through_and_are_stored() {
    let (gw, seen) = gateway();
    let r = create(&gw, json!({"model": "gpt", "input": "Hi", "store": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], "resp_upstream1");
    let sent = last(&seen);
    assert_eq!(sent.target, "/v1/responses");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        sent.json(),
        json!({"model": "gpt-up", "input": "Hi", "store": true})
    );
    // Chained: the history goes upstream as input items, without the gateway's ids.
    let r = create(
        &gw,
        json!({"model": "gpt", "input": "More", "previous_response_id": "resp_upstream1"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = last(&seen).json();
    assert!(sent.get("previous_response_id").is_none());
    assert_eq!(
        sent["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Native", "annotations": []}]},
               {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "More"}]}])
    );
    // Streams pass through event by event; usage is accounted from response.completed.
    let r = create(&gw, json!({"model": "gpt", "input": "Hi", "stream": true}));
    let kinds: Vec<String> = sse_events(&r.body).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    assert_eq!(
        gw.wait_metric(
            "gateway_tokens_total",
            &[("model", "gpt"), ("kind", "completion")],
            6.0
        ),
        6.0,
        "2 tokens from each of three answers"
    );
}

fn stored(id: &str, consumer: &str, created: u64, pad: usize) -> RawResponse {
    RawResponse {
        id: id.into(),
        consumer: consumer.into(),
        created,
        response: json!({"id": id, "object": "response", "pad": "x".repeat(pad)}).to_string(),
        input: json!([{"type": "message", "id": "msg_1", "role": "user", "content": "hi"}])
            .to_string(),
    }
}

/// The store contract: owner-scoped reads and deletes, the per-consumer quota dropping
/// the owner's oldest responses only, the retention sweep.
async fn contract(store: &dyn ResponseStore, sweeps: bool) {
    let now = ai_rate_limiter::response_store::now();
    store
        .put(stored("r1", "a", now - 30, 1000), 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        store.get("a", "r1").await.unwrap(),
        Some(stored("r1", "a", now - 30, 1000))
    );
    assert_eq!(
        store.get("b", "r1").await.unwrap(),
        None,
        "another consumer's"
    );
    assert!(!store.delete("b", "r1").await.unwrap());
    let one = stored("rx", "a", 0, 1000).bytes(); // ids of the same length
    store
        .put(stored("r2", "a", now - 20, 1000), 3 * one)
        .await
        .unwrap();
    store
        .put(stored("b1", "b", now - 25, 1000), 3 * one)
        .await
        .unwrap();
    store
        .put(stored("r3", "a", now - 10, 1000), 3 * one)
        .await
        .unwrap();
    assert!(
        store.get("a", "r1").await.unwrap().is_some(),
        "within the quota"
    );
    store
        .put(stored("r4", "a", now, 1000), 3 * one)
        .await
        .unwrap();
    assert_eq!(
        store.get("a", "r1").await.unwrap(),
        None,
        "the oldest goes first"
    );
    for (c, id) in [("a", "r2"), ("a", "r3"), ("a", "r4"), ("b", "b1")] {
        assert!(store.get(c, id).await.unwrap().is_some(), "{id} kept");
    }
    assert_eq!(store.held("a").await.unwrap(), 3 * one, "the running total");
    assert!(store.delete("a", "r4").await.unwrap());
    assert_eq!(store.get("a", "r4").await.unwrap(), None);
    assert_eq!(
        store.held("a").await.unwrap(),
        2 * one,
        "a delete gives its bytes back"
    );
    assert!(store
        .response("a", "r3")
        .await
        .unwrap()
        .is_some_and(|r| r.contains("\"r3\"")));
    assert_eq!(store.response("b", "r3").await.unwrap(), None);
    // The quota is a bound: a response alone over it is refused, and so is one that
    // would need more than MAX_EVICTIONS of the owner's responses to go (nothing goes).
    let big = stored("big", "a", now, 4 * 1000);
    assert!(matches!(
        store.put(big, 3 * one).await.unwrap(),
        Put::Refused { .. }
    ));
    assert_eq!(store.held("a").await.unwrap(), 2 * one);
    let max = ai_rate_limiter::response_store::MAX_EVICTIONS;
    let tiny = stored("t0", "c", now, 0).bytes();
    let mut sum = 0;
    for i in 0..max + 10 {
        let r = stored(&format!("t{i}"), "c", now, 0);
        sum += r.bytes();
        let put = store.put(r, 1 << 30).await.unwrap();
        assert!(matches!(put, Put::Stored { .. }));
    }
    let held = store.held("c").await.unwrap();
    assert_eq!(held, sum);
    // Fits only if every tiny one goes: more than MAX_EVICTIONS, so refused.
    let huge = stored("h", "c", now, 4000);
    let quota = huge.bytes() + 5 * tiny;
    assert!(matches!(
        store.put(huge, quota).await.unwrap(),
        Put::Refused { .. }
    ));
    assert_eq!(store.held("c").await.unwrap(), held, "nothing was evicted");
    assert!(store.get("c", "t0").await.unwrap().is_some());
    // Fits after evicting some: held never exceeds the quota.
    let mid = stored("m", "c", now, 0);
    let quota = held;
    match store.put(mid, quota).await.unwrap() {
        Put::Stored { held, evicted } => {
            assert!(held <= quota, "{held} > {quota}");
            assert_eq!(evicted, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("c", "t0").await.unwrap(), None, "the oldest went");
    if sweeps {
        assert_eq!(
            store.sweep(now - 15).await.unwrap(),
            2,
            "r2 and b1 are past the retention"
        );
        assert!(store.get("a", "r3").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn the_store_contract_on_sqlite_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    contract(&SqliteResponses::open(dir.path(), None).unwrap(), true).await;
    let redis = common::redis::Redis::start();
    let limits: ai_rate_limiter::config::schema::LimitsConfig = serde_yaml_ng::from_str(&format!(
        "{{policy: redis, redis: {{url: \"{}\"}}}}",
        redis.url()
    ))
    .unwrap();
    let store = RedisResponses::new(&limits, std::time::Duration::from_secs(3600));
    // Redis responses expire by their TTL instead of a sweep.
    contract(&store, false).await;
    let ttl = redis.cmd(&["TTL", "responses:r:r3"]).unwrap_or_default();
    let secs: i64 = ttl.trim().trim_start_matches(':').parse().unwrap_or(-1);
    assert!(secs > 3000, "{ttl:?}");
}
