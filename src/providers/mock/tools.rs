//! The mock's tool calls and structured outputs: when a chat request requires a call
//! (`tool_choice` `"required"` or a named function), the mock calls a function instead of
//! answering text, with arguments made from the function's JSON schema; when it asks for
//! JSON (`response_format`), the answer is JSON that fits the schema. So tool flows and
//! `parse()` helpers can be tried on every surface without a provider.
//!
//! A model in the mock's `agent_models` also drives an agent loop ([`agent_step`]): a user
//! turn with tools offered gets a call, a tool result an answer quoting it.

use crate::canonical::AiRequest;
use serde_json::{json, Map, Value};

/// A tool call the mock makes.
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON string, as chat carries them.
    pub arguments: String,
}

impl Call {
    /// Completion tokens the call counts for.
    pub fn tokens(&self) -> u64 {
        super::estimate_tokens(&self.arguments) + 1
    }
}

/// The call a request requires, if any: the named function, or the first function tool
/// when any call is required.
pub fn required(req: &AiRequest, seed: u64) -> Option<Call> {
    let parse = |name: &str| -> Value {
        req.field(name)
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null)
    };
    let choice = parse("tool_choice");
    let tools = parse("tools");
    let functions = tools.as_array()?.iter().filter(|t| t["type"] == "function");
    let named = choice["function"]["name"].as_str();
    let tool = match (choice.as_str(), named) {
        (_, Some(name)) => functions.clone().find(|t| t["function"]["name"] == name)?,
        (Some("required"), _) => functions.clone().next()?,
        _ => return None,
    };
    let f = &tool["function"];
    Some(Call {
        id: format!("call_mock{seed:016x}"),
        name: f["name"].as_str()?.to_string(),
        arguments: example(&f["parameters"], "mock", 0).to_string(),
    })
}

/// What an agent model does next.
pub enum AgentStep {
    /// A user turn: call a tool.
    Call(Call),
    /// A tool answered: report what it said.
    Report(String),
}

/// Most characters of a tool result an agent's report quotes.
const REPORT_CHARS: usize = 400;

/// The text of a chat message's content (text parts joined).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The agent's next step for a chat request with tools offered and `tool_choice` `auto`
/// (or none): after a tool result (a `tool` message since the last assistant turn), a
/// report quoting it; after a user turn, a call of the tool the user names (else the
/// first), its string arguments the user's first `backticked` text (else "mock").
pub fn agent_step(req: &AiRequest, seed: u64) -> Option<AgentStep> {
    let choice: Value = req
        .field("tool_choice")
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null);
    if !(choice.is_null() || choice == "auto") {
        return None;
    }
    let tools: Value = serde_json::from_str(req.field("tools")?.get()).ok()?;
    let functions: Vec<&Value> = tools
        .as_array()?
        .iter()
        .filter(|t| t["type"] == "function")
        .map(|t| &t["function"])
        .collect();
    let mut user = None;
    for raw in req.items("messages")?.iter().rev() {
        let m: Value = serde_json::from_str(raw.get()).ok()?;
        match m["role"].as_str() {
            Some("tool") => {
                let text: String = text_of(&m["content"]).chars().take(REPORT_CHARS).collect();
                return Some(AgentStep::Report(format!("Tool result: {text}")));
            }
            Some("assistant") => break,
            Some("user") if user.is_none() => user = Some(text_of(&m["content"])),
            _ => {}
        }
    }
    let user = user?;
    let named = |f: &&Value| {
        let name = f["name"].as_str().unwrap_or_default();
        user.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .any(|w| !w.is_empty() && w == name)
    };
    let f = functions
        .iter()
        .copied()
        .find(named)
        .or(functions.first().copied())?;
    let fill = user
        .split('`')
        .nth(1)
        .filter(|s| !s.is_empty())
        .unwrap_or("mock");
    Some(AgentStep::Call(Call {
        id: format!("call_mock{seed:016x}"),
        name: f["name"].as_str()?.to_string(),
        arguments: example(&f["parameters"], fill, 0).to_string(),
    }))
}

/// The answer to a chat request that asks for structured output (`response_format`
/// `json_schema` or `json_object`): JSON that fits its schema, in pieces of a few bytes
/// (the stream's deltas).
pub fn structured(req: &AiRequest) -> Option<Vec<String>> {
    let format: Value = req
        .field("response_format")
        .and_then(|r| serde_json::from_str(r.get()).ok())?;
    let text = match format["type"].as_str()? {
        "json_schema" => example(&format["json_schema"]["schema"], "mock", 0).to_string(),
        "json_object" => r#"{"mock":true}"#.to_string(),
        _ => return None,
    };
    let mut pieces = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(8);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        pieces.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    Some(pieces)
}

/// A value that fits a JSON schema (the first enum value, else one of its type, strings
/// being `fill`; objects get their required properties, or all of them when none are
/// listed).
fn example(schema: &Value, fill: &str, depth: usize) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if depth > 8 {
        return Value::Null;
    }
    let kind = match &schema["type"] {
        Value::Array(types) => types.iter().find(|t| *t != "null").cloned(),
        t => Some(t.clone()),
    };
    match kind.as_ref().and_then(Value::as_str) {
        Some("string") => json!(fill),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(&schema["items"], fill, depth + 1)]),
        Some("null") => Value::Null,
        _ => {
            let props = schema["properties"].as_object();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_else(|| {
                    props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default()
                });
            let mut out = Map::new();
            for k in required {
                let s = props.and_then(|p| p.get(k)).unwrap_or(&Value::Null);
                out.insert(k.to_string(), example(s, fill, depth + 1));
            }
            Value::Object(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;

    fn req(extra: &str) -> AiRequest {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],
            "tools":[{{"type":"function","function":{{"name":"a","parameters":{{"type":"object"}}}}}},
                     {{"type":"function","function":{{"name":"get_weather","parameters":{{"type":"object",
                       "properties":{{"city":{{"type":"string"}},"unit":{{"enum":["c","f"]}},"days":{{"type":"integer"}}}},
                       "required":["city","unit"]}}}}}}]{extra}}}"#
        );
        AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body)).unwrap()
    }

    #[test]
    fn calls_only_when_required_with_schema_shaped_arguments() {
        assert!(required(&req(""), 1).is_none(), "auto: text answer");
        assert!(required(&req(r#","tool_choice":"auto""#), 1).is_none());
        let c = required(&req(r#","tool_choice":"required""#), 1).unwrap();
        assert_eq!((c.name.as_str(), c.arguments.as_str()), ("a", "{}"));
        let c = required(
            &req(r#","tool_choice":{"type":"function","function":{"name":"get_weather"}}"#),
            255,
        )
        .unwrap();
        assert_eq!(c.name, "get_weather");
        assert_eq!(c.id, "call_mock00000000000000ff");
        assert_eq!(c.arguments, r#"{"city":"mock","unit":"c"}"#);
    }

    fn chat(body: Value) -> AiRequest {
        AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn an_agent_calls_the_named_tool_then_reports_its_result() {
        let tools = json!([
            {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "exec_command", "parameters": {
                "type": "object", "properties": {"cmd": {"type": "string"},
                "timeout": {"type": "integer"}}, "required": ["cmd"]}}}]);
        let turn = chat(json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "Use exec_command to run `echo hi`"},
            {"role": "system", "content": "a reminder after the user"}]}));
        let Some(AgentStep::Call(c)) = agent_step(&turn, 1) else {
            panic!("a user turn gets a call")
        };
        assert_eq!(
            (c.name.as_str(), c.arguments.as_str()),
            ("exec_command", r#"{"cmd":"echo hi"}"#)
        );
        let answered = chat(json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "run it"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "42-gw"},
            {"role": "user", "content": [{"type": "text", "text": "<reminder>"}]}]}));
        let Some(AgentStep::Report(r)) = agent_step(&answered, 1) else {
            panic!("a tool result gets a report")
        };
        assert_eq!(r, "Tool result: 42-gw");
        // The first tool when none is named; none when a call is not the model's choice.
        let plain = chat(json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "hello"}]}));
        let Some(AgentStep::Call(c)) = agent_step(&plain, 1) else {
            panic!()
        };
        assert_eq!(c.name, "read");
        let none = chat(json!({"model": "m", "tools": tools, "tool_choice": "none",
            "messages": [{"role": "user", "content": "hello"}]}));
        assert!(agent_step(&none, 1).is_none());
        let no_tools = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        assert!(agent_step(&no_tools, 1).is_none());
    }
}
