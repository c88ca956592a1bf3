//! OpenAI's Responses API (`POST /v1/responses`) for models whose provider does not
//! speak it (every provider but OpenAI itself): the request becomes a chat request, the
//! chat answer a Response object, the chat stream Responses' typed events ([`stream`]).
//! The mapping follows `shared/reference/responses-api.md` §7 (direction A).
//!
//! Tools in every form clients send them are carried ([`tools`]). Losses: built-in tools
//! (`web_search`, `file_search`, …) and their call items, `reasoning`, `item_reference`
//! and `compaction` input items, `include`, `truncation: auto` and `prompt` have no chat
//! equivalent and are dropped (the README's table); an input item of a type not known
//! here is refused, naming it. `input_file` parts go as chat `file` parts (providers
//! that take none refuse them).

mod events;
mod object;
mod request;
pub mod stream;
pub mod tools;

pub use object::{status_of, OutputItem, Response};
pub use request::to_chat;

use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use serde_json::{json, Value};
use tools::{ChatTools, ToolNames};

/// What a Responses answer needs of its request: the fields the Response echoes (the
/// body but its input) and the chat names its tools were sent under.
#[derive(Debug, Clone)]
pub struct Echo {
    pub head: Value,
    pub tools: ToolNames,
}

/// The echo of a request that is no Responses request.
pub static NO_ECHO: Echo = Echo {
    head: Value::Null,
    tools: ToolNames::EMPTY,
};

impl Echo {
    /// The echo of `req` (its input already holding any previous response's history).
    pub fn of(req: &AiRequest) -> Result<Echo, GatewayError> {
        Ok(Echo {
            head: Value::Object(req.head(&["input"])?),
            tools: ChatTools::of(req)?.names,
        })
    }
}

/// A fresh id with a prefix (`resp_`, `msg_`, `fc_`, `rs_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Each input item in turn, as a tree of its own (a string input is one user message):
/// the input is never held as one tree.
pub fn for_each_input(
    req: &AiRequest,
    mut f: impl FnMut(Value) -> Result<(), GatewayError>,
) -> Result<(), GatewayError> {
    let not_list = || GatewayError::invalid("'input' must be a string or an array.", "input");
    let Some(raw) = req.field("input").map(|r| r.get()) else {
        return Ok(());
    };
    match raw.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(raw).map_err(|_| not_list())?;
            f(json!({"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": s}]}))
        }
        Some(b'[') => {
            for item in req.items("input").ok_or_else(not_list)? {
                f(serde_json::from_str(item.get()).map_err(|_| not_list())?)?;
            }
            Ok(())
        }
        _ if raw == "null" => Ok(()),
        _ => Err(not_list()),
    }
}

/// The id an input item is listed under when it came without one: derived from the
/// response that stored it and its place in that response's input, so every read (and a
/// later response that chains it) sees the same id while the store keeps items as sent.
pub fn derived_id(kind: Option<&str>, response_id: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let prefix = match kind.unwrap_or("message") {
        "function_call" => "fc_",
        "function_call_output" => "fco_",
        "custom_tool_call" => "ctc_",
        "custom_tool_call_output" => "ctco_",
        "reasoning" => "rs_",
        _ => "msg_",
    };
    let digest = Sha256::digest(format!("{response_id}/{index}").as_bytes());
    format!("{prefix}{}", hex::encode(&digest[..12]))
}

/// An input item as listed: with its id ([`derived_id`] unless it came with one), a
/// status, and typed content parts.
pub fn with_id(mut item: Value, response_id: &str, index: usize) -> Value {
    if let Some(o) = item.as_object_mut() {
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_string();
        if !o.contains_key("id") {
            let id = derived_id(Some(&kind), response_id, index);
            o.insert("id".into(), json!(id));
        }
        o.entry("type").or_insert_with(|| json!("message"));
        if kind == "message" {
            if let Some(Value::String(s)) = o.get("content").cloned() {
                let part = if o.get("role").and_then(Value::as_str) == Some("assistant") {
                    json!({"type": "output_text", "text": s, "annotations": []})
                } else {
                    json!({"type": "input_text", "text": s})
                };
                o.insert("content".into(), json!([part]));
            }
            o.entry("status").or_insert_with(|| json!("completed"));
        }
    }
    item
}

/// The status of a message item in a response of `status` (cut short: incomplete).
pub fn item_status(status: &str) -> &'static str {
    if status == "incomplete" {
        "incomplete"
    } else {
        "completed"
    }
}

/// A message output item with its whole text.
pub fn message_item(id: &str, text: &str, status: &'static str) -> OutputItem {
    OutputItem::message(id, Some(text), status)
}

/// A reasoning output item (its text as a summary).
pub fn reasoning_item(id: &str, text: &str) -> OutputItem {
    OutputItem::reasoning(id, Some(text))
}

/// A `chat.completion` → the Response for the request `echo`, as response `id`.
pub fn from_chat(chat: &Value, echo: &Echo, id: &str, model: &str, created: u64) -> Response {
    let a = crate::canonical::chat::Answer::of(chat);
    let mut output = Vec::new();
    if let Some(r) = a.reasoning {
        output.push(reasoning_item(&new_id("rs_"), r));
    }
    let (status, _) = status_of(a.finish_reason);
    if let Some(t) = a.text {
        output.push(message_item(&new_id("msg_"), t, item_status(status)));
    }
    for call in &a.calls {
        let args = call.arguments.unwrap_or("");
        let id = new_id(echo.tools.id_prefix(call.name));
        let item = tools::call_item(&echo.tools, &id, call.id, call.name, args, "completed");
        output.push(item);
    }
    let mut r = Response::new(&echo.head, id, model, created);
    r.complete(a.finish_reason, output, a.usage, created);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;

    fn chat(body: Value) -> Result<Value, GatewayError> {
        let req = AiRequest::parse(Endpoint::Responses, Bytes::from(body.to_string()))?;
        Ok(serde_json::from_slice(&to_chat(&req)?).unwrap())
    }

    #[test]
    fn consecutive_calls_join_one_assistant_message() {
        let c = chat(
            json!({"model": "m", "instructions": "sys", "max_output_tokens": 9,
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "output": "no call id: dropped"}]}),
        )
        .unwrap();
        assert_eq!(c["max_tokens"], 9);
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "1"})
        );
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let c = chat(json!({"model": "m", "input": "hello"})).unwrap();
        assert_eq!(c["messages"][0]["content"][0]["text"], "hello");
        let e = chat(json!({"model": "m", "input": 5})).unwrap_err();
        assert_eq!(e.status(), 400);
        let e = chat(json!({"model": "m", "input": []})).unwrap_err();
        assert!(e.to_string().contains("input"));
    }

    #[test]
    fn stored_items_get_ids_and_typed_parts() {
        let i = with_id(json!({"role": "assistant", "content": "ok"}), "resp_1", 3);
        assert_eq!(i["id"], derived_id(None, "resp_1", 3));
        assert!(i["id"].as_str().unwrap().starts_with("msg_"));
        assert_ne!(derived_id(None, "resp_1", 3), derived_id(None, "resp_1", 4));
        let kept = with_id(json!({"id": "mine", "type": "function_call"}), "resp_1", 0);
        assert_eq!(kept["id"], "mine");
        assert_eq!(i["content"][0]["type"], "output_text");
        assert_eq!(i["status"], "completed");
    }

    fn codex_turn() -> Value {
        json!({"model": "m", "tool_choice": {"type": "custom", "name": "exec"}, "input": [
            {"type": "additional_tools", "role": "developer", "tools": [
                {"type": "namespace", "name": "functions", "tools": [
                    {"type": "custom", "name": "exec", "format": {"type": "text"}},
                    {"type": "function", "name": "wait", "parameters": {}}]}]},
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "run ls"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "custom_tool_call", "call_id": "c1", "namespace": "functions",
             "name": "exec", "input": "ls"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "a.txt"},
            {"type": "function_call", "call_id": "c2", "namespace": "functions",
             "name": "wait", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c2", "output": "ok"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}]})
    }

    #[test]
    fn codex_tools_and_their_calls_reach_the_chat_request() {
        let c = chat(codex_turn()).unwrap();
        let names: Vec<&str> = c["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["exec", "wait"]);
        assert_eq!(c["tool_choice"]["function"]["name"], "exec");
        let m = c["messages"].as_array().unwrap();
        let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "tool", "assistant", "tool"]
        );
        let exec = &m[2]["tool_calls"][0]["function"];
        assert_eq!(exec["name"], "exec");
        assert_eq!(exec["arguments"], "{\"input\":\"ls\"}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
        );
        assert_eq!(m[4]["tool_calls"][0]["function"]["name"], "wait");
    }

    #[test]
    fn an_unknown_input_item_is_refused_naming_it() {
        let e = chat(json!({"model": "m", "input": [{"type": "hologram", "x": 1}]})).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("hologram"), "{e}");
    }

    #[test]
    fn chat_calls_come_back_as_the_client_defined_them() {
        let req = AiRequest::parse(Endpoint::Responses, Bytes::from(codex_turn().to_string()));
        let echo = Echo::of(&req.unwrap()).unwrap();
        let answer = json!({"choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "exec",
                 "arguments": "{\"input\":\"cat a.txt\"}"}},
                {"id": "c4", "type": "function", "function": {"name": "wait", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
        let r = from_chat(&answer, &echo, "resp_1", "m", 1).to_value();
        let out = r["output"].as_array().unwrap();
        assert_eq!(out[0]["type"], "custom_tool_call");
        assert_eq!(out[0]["input"], "cat a.txt");
        assert_eq!(out[0]["namespace"], "functions");
        assert!(out[0]["id"].as_str().unwrap().starts_with("ctc_"));
        assert_eq!(out[1]["type"], "function_call");
        assert_eq!(
            (out[1]["name"].as_str(), out[1]["namespace"].as_str()),
            (Some("wait"), Some("functions"))
        );
        assert_eq!(r["status"], "completed");
    }

    #[test]
    fn text_format_becomes_chat_response_format() {
        let sent = |format: Value| {
            let body = json!({"model": "m", "input": "hi", "text": {"format": format}});
            chat(body).unwrap().get("response_format").cloned()
        };
        assert_eq!(
            sent(
                json!({"type": "json_schema", "name": "n", "schema": {"type": "object"},
                "strict": true, "description": null})
            ),
            Some(json!({"type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}}))
        );
        assert_eq!(
            sent(json!({"type": "json_object"})),
            Some(json!({"type": "json_object"}))
        );
        assert_eq!(sent(json!({"type": "text"})), None);
    }
}
