//! Snapshot tests (`insta`) of both surfaces' translations, on requests shaped like the
//! ones Claude Code and Codex send: request → chat, chat answer → surface, chat stream →
//! surface events. Ids the gateway makes up are replaced by `<id>` so the snapshots are
//! stable; a snapshot that changes must be explained in its commit.

use super::responses::{self, Echo};
use super::{messages, ChunkTranslator};
use crate::canonical::chunk::ChatChunk;
use crate::canonical::{AiRequest, Endpoint};
use bytes::Bytes;
use serde_json::{json, Value};

/// Ids the gateway makes up (`msg_…`, `resp_…`, `fc_…`, …) as `<id>`.
fn stable(v: Value) -> Value {
    match v {
        Value::String(s) => {
            let made_up = ["msg_", "resp_", "fc_", "ctc_", "rs_", "toolu_"]
                .iter()
                .any(|p| s.starts_with(p) && s.len() > p.len() + 12);
            Value::String(if made_up { "<id>".into() } else { s })
        }
        Value::Array(a) => Value::Array(a.into_iter().map(stable).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, stable(v))).collect()),
        other => other,
    }
}

fn chat_of(endpoint: Endpoint, body: &Value) -> Value {
    let req = AiRequest::parse(endpoint, Bytes::from(body.to_string())).unwrap();
    let chat = match endpoint {
        Endpoint::Messages => messages::to_chat(&req),
        _ => responses::to_chat(&req),
    };
    serde_json::from_slice(&chat.unwrap()).unwrap()
}

fn claude_code_request() -> Value {
    json!({"model": "claude-opus-5-5", "max_tokens": 128000, "stream": true,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
                   {"type": "text", "text": "You are a Claude agent.",
                    "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "metadata": {"user_id": "{\"device_id\":\"d1\"}"},
        "stop_sequences": ["</done>"], "temperature": 1,
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "tools": [
            {"name": "Bash", "description": "Run a command",
             "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object", "properties": {"command": {"type": "string"}},
                "required": ["command"], "additionalProperties": false}},
            {"name": "Cron", "description": "Later", "defer_loading": true,
             "input_schema": {"type": "object", "properties": {}}},
            {"type": "web_search_20250305", "name": "web_search"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>r</system-reminder>"},
                {"type": "text", "text": "run ls", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}],
             "output_config": {"effort": "medium"}},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Running it."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01",
                 "content": [{"type": "text", "text": "a.txt"}]},
                {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": true,
                 "content": "no such file"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
                {"type": "text", "text": "and now?"}]}]})
}

fn codex_request() -> Value {
    json!({"model": "gpt-6.2-sol", "stream": true, "store": false, "instructions": "Be Codex.",
        "tool_choice": "auto", "parallel_tool_calls": false, "max_output_tokens": 4096,
        "reasoning": {"effort": "low", "context": "all_turns"},
        "text": {"format": {"type": "json_schema", "name": "out", "strict": true,
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
        "tools": [{"type": "web_search", "external_web_access": false}],
        "input": [
            {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [
                {"type": "namespace", "name": "functions", "description": "Local", "tools": [
                    {"type": "custom", "name": "exec", "description": "Run JavaScript",
                     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
                    {"type": "function", "name": "wait", "strict": false,
                     "parameters": {"type": "object", "properties": {"cell_id": {"type": "string"}}}}]},
                {"type": "namespace", "name": "clock", "tools": [
                    {"type": "function", "name": "sleep", "parameters": {"type": "object",
                     "properties": {"duration_ms": {"type": "number"}}}}]}]},
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "what is in this picture?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
                 "detail": "low"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {"type": "custom_tool_call", "call_id": "call_1", "namespace": "functions",
             "name": "exec", "input": "text(1)"},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "1"},
            {"type": "function_call", "call_id": "call_2", "namespace": "clock",
             "name": "sleep", "arguments": "{\"duration_ms\":5}"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "slept"}]},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "done", "annotations": []}]}]})
}

fn chat_answer() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "reasoning_content": "thinking",
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "exec",
                 "arguments": "{\"input\":\"text(2)\"}"}},
                {"id": "call_10", "type": "function", "function": {"name": "Bash",
                 "arguments": "{\"command\":\"ls\"}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 5}}})
}

fn chat_stream() -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-2", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"reasoning_content": "hm"}), Value::Null),
        chunk(json!({"content": "Run"}), Value::Null),
        chunk(json!({"content": "ning."}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_3", "type": "function",
                "function": {"name": "exec", "arguments": "{\"inp"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ut\":\"ls\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-2", "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}),
    ]
}

/// A chat stream through a surface's translator, as its events' data.
fn events(mut t: Box<dyn ChunkTranslator>) -> Value {
    let mut out = Vec::new();
    for c in chat_stream() {
        out.extend(t.chunk(Some(&ChatChunk::of(&c))));
    }
    out.extend(t.chunk(None));
    let events: Vec<Value> = super::parse_events(&out)
        .into_iter()
        .map(|(name, data)| json!({"event": name, "data": stable(data)}))
        .collect();
    Value::Array(events)
}

#[test]
fn messages_request_to_chat() {
    insta::assert_json_snapshot!(chat_of(Endpoint::Messages, &claude_code_request()));
}

#[test]
fn responses_request_to_chat() {
    insta::assert_json_snapshot!(chat_of(Endpoint::Responses, &codex_request()));
}

#[test]
fn chat_answer_to_message() {
    insta::assert_json_snapshot!(stable(
        serde_json::to_value(messages::from_chat(&chat_answer(), "claude-x")).unwrap()
    ));
}

#[test]
fn chat_answer_to_response() {
    let req = AiRequest::parse(
        Endpoint::Responses,
        Bytes::from(codex_request().to_string()),
    );
    let echo = Echo::of(&req.unwrap()).unwrap();
    let r = responses::from_chat(&chat_answer(), &echo, "resp_0123456789abcdef", "gpt-x", 7);
    insta::assert_json_snapshot!(stable(r.to_value()));
}

#[test]
fn chat_stream_to_message_events() {
    let t = super::stream(Endpoint::Messages, &super::NO_ECHO, "claude-x", 42).unwrap();
    insta::assert_json_snapshot!(events(t));
}

#[test]
fn chat_stream_to_response_events() {
    let req = AiRequest::parse(
        Endpoint::Responses,
        Bytes::from(codex_request().to_string()),
    );
    let echo = Echo::of(&req.unwrap()).unwrap();
    let t = super::stream(Endpoint::Responses, &echo, "gpt-x", 42).unwrap();
    let mut e = events(t);
    // The stream's timestamps are the clock's.
    for ev in e.as_array_mut().into_iter().flatten() {
        if let Some(r) = ev["data"].get_mut("response") {
            r["created_at"] = json!(0);
            if !r["completed_at"].is_null() {
                r["completed_at"] = json!(0);
            }
        }
    }
    insta::assert_json_snapshot!(e);
}
