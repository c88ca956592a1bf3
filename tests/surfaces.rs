//! API surfaces on models whose provider does not speak them, against the real binary:
//! the request reaches an OpenAI-compatible fake upstream as a chat request (checked
//! field by field), and the chat answer comes back in the surface's own shape.

mod common;

use common::chat_upstream::{upstream, UPSTREAM_KEY};
use common::fixture_server::{last, recording, Recorded};
use common::{send, sse_events, Gw, Resp};
use serde_json::{json, Value};

const KEY: &str = "sk-client";

fn gateway() -> (Gw, Recorded) {
    let (port, seen) = recording(upstream);
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: compat, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: "{UPSTREAM_KEY}"}}
models:
  - {{name: chat, deployments: [{{provider: compat, model: up-text}}]}}
  - {{name: short, deployments: [{{provider: compat, model: up-short}}]}}
  - {{name: tools, deployments: [{{provider: compat, model: up-tools}}]}}
  - {{name: limited, deployments: [{{provider: compat, model: up-limited}}]}}
reload: {{watch: false}}
"#
    ));
    (gw, seen)
}

fn post(gw: &Gw, path: &str, body: &Value) -> Resp {
    let headers = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    send("POST", &gw.url(path), &headers, Some(body))
}

#[test]
fn messages_on_a_chat_provider_whole_answers() {
    let (gw, seen) = gateway();
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "short", "max_tokens": 5, "system": [{"type": "text", "text": "Be brief."}],
                "stop_sequences": ["END"], "temperature": 0.3, "metadata": {"user_id": "u1"},
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "short");
    assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(
        m["usage"]["input_tokens"], 8,
        "11 prompt tokens, 3 of them cached"
    );
    assert_eq!(m["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(m["usage"]["output_tokens"], 4);
    let sent = last(&seen);
    assert_eq!(sent.target, "/v1/chat/completions");
    assert_eq!(
        sent.json(),
        json!({"model": "up-short", "max_tokens": 5, "stop": ["END"], "temperature": 0.3, "user": "u1",
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]}]})
    );
    // Tokens are accounted from the chat usage.
    assert_eq!(
        gw.wait_metric(
            "gateway_tokens_total",
            &[("model", "short"), ("kind", "completion")],
            4.0
        ),
        4.0
    );
    // Upstream errors come back in Anthropic's shape, Retry-After kept.
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "limited", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
    );
    assert_eq!(r.header("retry-after"), Some("7"));
    // A request the surface cannot carry is the client's error, before any upstream call.
    let before = seen.lock().unwrap().len();
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(seen.lock().unwrap().len(), before);
    // count_tokens answers an estimate for any model, without an upstream call.
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "chat", "messages": [{"role": "user", "content": "Hello there"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[test]
fn messages_on_a_chat_provider_streams_and_tool_use() {
    let (gw, seen) = gateway();
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "chat", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = sse_events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"], name.as_str(), "event name equals data type");
    }
    assert_eq!(
        ev[2].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(ev[5].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(ev[5].1["usage"]["output_tokens"], 4);
    // The input count is in message_start already (the estimate; Anthropic sends it
    // there, and clients showing context read it there), the provider's in message_delta.
    let start = ev[0].1["message"]["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(start > 0, "{:?}", ev[0].1);
    let sent = last(&seen).json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // Tool use: tools and tool_choice mapped; the call streams as a tool_use block.
    let tools = json!([{"name": "get_weather", "description": "Weather",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "tools", "max_tokens": 50, "stream": true, "tools": tools,
                "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
                "messages": [{"role": "user", "content": "Weather in Oslo?"}]}),
    );
    let ev = sse_events(&r.body);
    assert_eq!(
        ev[1].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
    );
    let args: String = ev
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Oslo"}"#);
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");
    let sent = last(&seen).json();
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(sent["parallel_tool_calls"], false);

    // The round trip: the tool result goes back as a tool message after the call.
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "tools", "max_tokens": 50, "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "-3C"},
                {"type": "text", "text": "And tomorrow?"}]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}})
    );
    assert_eq!(
        last(&seen).json()["messages"],
        json!([{"role": "user", "content": "Weather in Oslo?"},
               {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "-3C"},
               {"role": "user", "content": "And tomorrow?"}])
    );
}
