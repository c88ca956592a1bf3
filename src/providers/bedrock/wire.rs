//! Bedrock's Converse request as typed values, written by [`super::translate`]. Names are
//! Converse's camelCase; a content block, a tool entry and a tool choice are objects of
//! one key, which serde's externally tagged enums write as they are.

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

/// One content block.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Block<'a> {
    Text(Cow<'a, str>),
    Image(ImageBlock<'a>),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
}

#[derive(Debug, Serialize)]
pub struct ImageBlock<'a> {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: &'static str,
    pub source: ImageBytes<'a>,
}

#[derive(Debug, Serialize)]
pub struct ImageBytes<'a> {
    /// Base64, as the data URL carried it.
    pub bytes: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub input: Value,
    pub name: String,
    pub tool_use_id: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub content: [TextBlock; 1],
    pub tool_use_id: Value,
}

/// A text block where Converse takes text only (a tool result, the system prompt).
#[derive(Debug, Serialize)]
pub struct TextBlock {
    pub text: String,
}

/// The fields of a Converse body after `messages`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestTail {
    pub inference_config: InferenceConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<[TextBlock; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
}

/// Sampling settings; numbers the client sent are passed as they are.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfig {
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    pub tools: Vec<Tool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    ToolSpec(ToolSpec),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: InputSchema,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct InputSchema {
    pub json: Value,
}

/// What the model may call: `{"any": {}}`, `{"auto": {}}` or `{"tool": {"name": …}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoice {
    Any {},
    Auto {},
    Tool { name: Value },
}

/// Structured output: a JSON schema (as text) the answer must follow.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputConfig {
    pub text_format: TextFormat,
}

#[derive(Debug, Serialize)]
pub struct TextFormat {
    pub structure: Structure,
    /// Always `json_schema`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Structure {
    pub json_schema: JsonSchema,
}

#[derive(Debug, Serialize)]
pub struct JsonSchema {
    pub name: Value,
    pub schema: String,
}
