//! The mock's tool calls and structured outputs: when a chat request requires a call
//! (`tool_choice` `"required"` or a named function), the mock calls a function instead of
//! answering text, with arguments made from the function's JSON schema; when it asks for
//! JSON (`response_format`), the answer is JSON that fits the schema. So tool flows and
//! `parse()` helpers can be tried on every surface without a provider.

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
    /// The assistant message that makes the call.
    pub fn message(&self) -> Value {
        json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
               "tool_calls": [{"id": self.id, "type": "function",
                               "function": {"name": self.name, "arguments": self.arguments}}]})
    }

    /// The stream deltas that make the call: the call opened with its id and name, then
    /// its arguments in two fragments (as providers split them).
    pub fn deltas(&self) -> Vec<Value> {
        let a = &self.arguments;
        let mut cut = a.len() / 2;
        while !a.is_char_boundary(cut) {
            cut -= 1;
        }
        let open = json!({"tool_calls": [{"index": 0, "id": self.id, "type": "function",
                                          "function": {"name": self.name, "arguments": ""}}]});
        let part = |s: &str| json!({"tool_calls": [{"index": 0, "function": {"arguments": s}}]});
        vec![open, part(&a[..cut]), part(&a[cut..])]
    }

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
        arguments: example(&f["parameters"], 0).to_string(),
    })
}

/// The answer to a chat request that asks for structured output (`response_format`
/// `json_schema` or `json_object`): JSON that fits its schema, in pieces of a few bytes
/// (the stream's deltas).
pub fn structured(req: &AiRequest) -> Option<Vec<String>> {
    let format: Value = req
        .field("response_format")
        .and_then(|r| serde_json::from_str(r.get()).ok())?;
    let text = match format["type"].as_str()? {
        "json_schema" => example(&format["json_schema"]["schema"], 0).to_string(),
        "json_object" => json!({"mock": true}).to_string(),
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

/// A value that fits a JSON schema (the first enum value, else one of its type; objects
/// get their required properties, or all of them when none are listed).
fn example(schema: &Value, depth: usize) -> Value {
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
        Some("string") => json!("mock"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(&schema["items"], depth + 1)]),
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
                out.insert(k.to_string(), example(s, depth + 1));
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
}
