//! A fake OpenAI-compatible upstream for the surface tests: chat answers chosen by the
//! upstream model (`up-text`, `up-short` cut by length, `up-tools` calling a function,
//! `up-limited` answering 429), streams with a usage chunk, and OpenAI's own Responses
//! API on `/v1/responses`. It answers only [`UPSTREAM_KEY`].

use super::fixture_server::{Reply, Request};
use serde_json::{json, Value};

pub const UPSTREAM_KEY: &str = "sk-upstream-0123456789";

fn chunk(delta: Value, finish: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "up",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

const USAGE: &str = r#"{"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 3}}"#;

fn usage_chunk() -> String {
    format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "up",
               "choices": [], "usage": serde_json::from_str::<Value>(USAGE).unwrap()})
    )
}

/// A chat-only upstream (chat answers by upstream model) that also plays OpenAI's own
/// Responses API on `/v1/responses`.
pub fn upstream(req: &Request) -> Reply {
    if req.header("authorization") != Some(&format!("Bearer {UPSTREAM_KEY}")) {
        return Reply::json(
            "401 Unauthorized",
            r#"{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
    }
    let body = req.json();
    let stream = body["stream"] == json!(true);
    if req.target == "/v1/responses" {
        let response = json!({"id": "resp_upstream1", "object": "response", "created_at": 5,
            "status": "completed", "model": "gpt-up", "output": [{"type": "message", "id": "msg_up1",
            "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Native", "annotations": []}]}],
            "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": []});
        if stream {
            let ev = |seq: u64, kind: &str, extra: Value| {
                let mut d = extra;
                d["type"] = json!(kind);
                d["sequence_number"] = json!(seq);
                format!("event: {kind}\ndata: {d}\n\n")
            };
            return Reply::events(
                [
                    ev(0, "response.created", json!({"response": {"id": "resp_upstream1", "object": "response", "status": "in_progress", "output": []}})),
                    ev(1, "response.output_text.delta", json!({"item_id": "msg_up1", "output_index": 0, "content_index": 0, "delta": "Native"})),
                    ev(2, "response.completed", json!({"response": response})),
                ]
                .concat(),
            );
        }
        return Reply::json("200 OK", response.to_string());
    }
    match body["model"].as_str() {
        Some("up-limited") => Reply::json(
            "429 Too Many Requests",
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        )
        .with("retry-after", "7"),
        Some("up-tools") if stream => Reply::events(
            [
                chunk(json!({"role": "assistant", "content": null}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}), Value::Null),
                chunk(json!({}), json!("tool_calls")),
                usage_chunk(),
            ]
            .concat(),
        ),
        Some("up-tools") => Reply::json(
            "200 OK",
            json!({"id": "chatcmpl-8", "object": "chat.completion", "created": 1, "model": "up",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                    "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
                "usage": serde_json::from_str::<Value>(USAGE).unwrap()})
            .to_string(),
        ),
        _ if stream => Reply::events(
            [
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Hel"}), Value::Null),
                chunk(json!({"content": "lo"}), Value::Null),
                chunk(json!({}), json!("stop")),
                usage_chunk(),
            ]
            .concat(),
        ),
        other => Reply::json(
            "200 OK",
            json!({"id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "up",
                "choices": [{"index": 0, "finish_reason": if other == Some("up-short") { "length" } else { "stop" },
                    "message": {"role": "assistant", "content": "Hello"}}],
                "usage": serde_json::from_str::<Value>(USAGE).unwrap()})
            .to_string(),
        ),
    }
}
