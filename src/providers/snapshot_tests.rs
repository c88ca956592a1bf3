//! Snapshot tests (`insta`) of the chat request as each translating provider receives it
//! (Anthropic's Messages, Gemini's `generateContent`, Bedrock's Converse), on one
//! agent-shaped conversation: system and developer messages, an image, tool calls with
//! their results, tools, `tool_choice`, stop sequences, sampling parameters. A snapshot
//! that changes must be explained in its commit.

use crate::canonical::{AiRequest, Endpoint};
use bytes::Bytes;
use serde_json::{json, Map, Value};

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
    let mut fixed = Map::new();
    fixed.insert("model".into(), json!("claude-x"));
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
