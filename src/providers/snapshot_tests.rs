//! Snapshot tests (`insta`) of the chat request as each translating provider receives it
//! (Anthropic's Messages, Gemini's `generateContent`, Bedrock's Converse), on one
//! agent-shaped conversation: system and developer messages, an image, tool calls with
//! their results, tools, `tool_choice`, stop sequences, sampling parameters. A snapshot
//! that changes must be explained in its commit.

use crate::canonical::{AiRequest, Endpoint};
use bytes::Bytes;
use serde_json::{json, Value};

fn chat() -> AiRequest {
    let body = json!({"model": "public", "stream": true, "max_completion_tokens": 300,
        "temperature": 1.4, "top_p": 0.9, "stop": ["END"], "user": "u-1",
        "parallel_tool_calls": false, "tool_choice": "required",
        "tools": [
            {"type": "function", "function": {"name": "exec_command", "description": "Run",
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                            "required": ["cmd"]}}},
            {"type": "function", "function": {"name": "wait"}}],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "wait", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": "And?"}]});
    AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_string())).unwrap()
}

fn json_of(bytes: Vec<u8>) -> Value {
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn chat_to_anthropic_messages() {
    let fixed = super::anthropic::Fixed {
        model: Some("claude-x"),
        anthropic_version: None,
    };
    insta::assert_json_snapshot!(json_of(
        super::anthropic::request(&chat(), fixed, 64).unwrap()
    ));
}

#[test]
fn chat_to_gemini_generate_content() {
    insta::assert_json_snapshot!(json_of(super::gemini::translate::request(&chat()).unwrap()));
}

#[test]
fn chat_to_bedrock_converse() {
    insta::assert_json_snapshot!(json_of(
        super::bedrock::translate::request(&chat(), 64).unwrap()
    ));
}

/// A provider's stream translation of `events` (each an upstream event's `data`), as the
/// SSE text an OpenAI client reads, byte for byte (made-up ids as `<id>`).
fn stream_text(provider: &dyn super::Provider, events: &[String]) -> String {
    let mut t = provider.stream_translator("public", 1_700_000_000).unwrap();
    let mut out = String::new();
    for data in events {
        for e in t.event(data.as_bytes()) {
            out.push_str(std::str::from_utf8(&e.to_sse()).unwrap());
        }
    }
    // Bedrock's made-up id: 16 hex digits after its prefix.
    let parts: Vec<&str> = out.split("chatcmpl-bedrock-").collect();
    let rest = parts[1..].iter().map(|p| format!("<id>{}", &p[16..]));
    std::iter::once(parts[0].to_string())
        .chain(rest)
        .collect::<Vec<_>>()
        .join("chatcmpl-bedrock-")
}

/// The `data` of each event of a fixture stream.
fn fixture_events(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn anthropic_streams_to_chat_chunks() {
    let text = [
        "stream_text.sse",
        "stream_tool_use.sse",
        "stream_overloaded.sse",
    ]
    .map(|f| {
        stream_text(
            &super::Anthropic,
            &fixture_events(&format!("anthropic/{f}")),
        )
    });
    insta::assert_snapshot!(text.join("----\n"));
}

#[test]
fn gemini_streams_to_chat_chunks() {
    let text = ["stream_text.sse", "stream_call.sse"].map(|f| {
        stream_text(
            &super::gemini::Gemini,
            &fixture_events(&format!("gemini/{f}")),
        )
    });
    insta::assert_snapshot!(text.join("----\n"));
}

#[test]
fn bedrock_streams_to_chat_chunks() {
    let events = [
        json!({"event": "messageStart", "payload": {"role": "assistant"}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0,
            "delta": {"reasoningContent": {"text": "hmm"}}}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 0,
            "delta": {"text": "Hi \"there\""}}}),
        json!({"event": "contentBlockStart", "payload": {"contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "f"}}}}),
        json!({"event": "contentBlockDelta", "payload": {"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "{\"a\":1}"}}}}),
        json!({"event": "contentBlockStop", "payload": {"contentBlockIndex": 1}}),
        json!({"event": "messageStop", "payload": {"stopReason": "tool_use"}}),
        json!({"event": "metadata", "payload": {"usage": {"inputTokens": 7,
            "outputTokens": 3, "totalTokens": 10}}}),
    ]
    .map(|e| e.to_string());
    let throttled = [json!({"exception": "throttlingException", "message": "slow down"})]
        .map(|e| e.to_string());
    let text = [&events[..], &throttled[..]].map(|e| stream_text(&super::bedrock::Bedrock, e));
    insta::assert_snapshot!(text.join("----\n"));
}
