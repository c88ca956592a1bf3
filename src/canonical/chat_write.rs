//! The OpenAI chat request's messages as the surfaces write them (Messages and Responses →
//! chat): messages, content parts and tool calls as typed values, serialized one at a time
//! ([`super::write`]). The counterpart of [`super::chat`], which reads the same request.
//! Values a client sent that chat carries as they are (a text, a call's id or arguments)
//! stay JSON values, so an odd type reaches the provider unchanged, as before.

use serde::Serialize;
use serde_json::Value;

/// The fields of a chat request before its `messages`, as the surfaces write them.
#[derive(Debug, Serialize)]
pub struct ChatRequestHead {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    pub model: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ChatToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ChatTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

impl ChatRequestHead {
    /// A head naming `model`, nothing else set.
    pub fn new(model: Value) -> ChatRequestHead {
        ChatRequestHead {
            max_tokens: None,
            model,
            parallel_tool_calls: None,
            reasoning_effort: None,
            response_format: None,
            stop: None,
            stream: None,
            stream_options: None,
            temperature: None,
            tool_choice: None,
            tools: None,
            top_p: None,
            user: None,
        }
    }

    /// Ask for a stream, with its usage chunk (the surfaces report usage at the end).
    pub fn streaming(&mut self) {
        self.stream = Some(true);
        self.stream_options = Some(StreamOptions {
            include_usage: true,
        });
    }
}

/// Chat's `tool_choice`: a mode, or one named function.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChatToolChoice {
    /// `"auto"`, `"required"`, `"none"` (or what the client wrote, passed on).
    Mode(Value),
    Function {
        function: FunctionName,
        /// Always `function`.
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

impl ChatToolChoice {
    /// The choice of the function `name`.
    pub fn function(name: Value) -> ChatToolChoice {
        ChatToolChoice::Function {
            function: FunctionName { name },
            kind: "function",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FunctionName {
    pub name: Value,
}

/// Chat's `response_format` for structured output: `json_schema` (with the schema) or
/// `json_object`.
#[derive(Debug, Serialize)]
pub struct ResponseFormat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A `json_schema` format: the client's name, schema and options as it sent them.
#[derive(Debug, Serialize)]
pub struct JsonSchemaFormat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Value>,
    pub name: Value,
    pub schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<Value>,
}

/// A function tool as chat offers it.
#[derive(Debug, Serialize)]
pub struct ChatTool {
    pub function: ChatFunction,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChatFunction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub name: Value,
    pub parameters: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ChatTool {
    /// A function tool.
    pub fn function(
        name: impl Into<Value>,
        description: Option<String>,
        parameters: Value,
        strict: Option<bool>,
    ) -> ChatTool {
        ChatTool {
            function: ChatFunction {
                description,
                name: name.into(),
                parameters,
                strict,
            },
            kind: "function",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: UserContent,
    },
    Assistant {
        /// `null` for tool calls alone.
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: Value,
        content: String,
    },
}

/// A user message's content: a text, or parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UserContent {
    Text(Value),
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: Value },
    ImageUrl { image_url: ImageUrl },
    File { file: FileRef },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A file: by id (or URL), or inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FileRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// An assistant's function call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub function: FunctionCall,
    pub id: Value,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    /// The arguments' JSON text.
    pub arguments: Value,
    pub name: Value,
}

impl ToolCall {
    /// A call of function `name` with `arguments` (JSON text), its id `id`.
    pub fn function(id: Value, name: impl Into<Value>, arguments: impl Into<Value>) -> ToolCall {
        ToolCall {
            function: FunctionCall {
                arguments: arguments.into(),
                name: name.into(),
            },
            id,
            kind: "function",
        }
    }
}

impl ContentPart {
    /// An image part for `url` (a `data:` URL or one the provider fetches).
    pub fn image(url: String, detail: Option<String>) -> ContentPart {
        ContentPart::ImageUrl {
            image_url: ImageUrl { url, detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_write_as_chat_has_them() {
        let call = ToolCall::function(json!("c1"), "f", "{}");
        let m = [
            ChatMessage::System {
                content: "s".into(),
            },
            ChatMessage::User {
                content: UserContent::Parts(vec![
                    ContentPart::Text { text: json!("hi") },
                    ContentPart::image("data:image/png;base64,AA".into(), None),
                ]),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![call],
            },
            ChatMessage::Tool {
                tool_call_id: json!("c1"),
                content: "ok".into(),
            },
        ];
        assert_eq!(
            serde_json::to_value(m).unwrap(),
            json!([{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                    "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}])
        );
    }
}
