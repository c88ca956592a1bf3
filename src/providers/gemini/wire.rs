//! Gemini's `generateContent` and `batchEmbedContents` requests as typed values, written
//! by [`super::translate`] (the Gemini API and Vertex AI take the same bodies). Names are
//! Gemini's camelCase; a part is an object of one key, which serde's externally tagged
//! enum writes as it is.

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

/// One part of a content.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Part<'a> {
    Text(Cow<'a, str>),
    InlineData(Blob<'a>),
    FileData(FileData<'a>),
    FunctionCall(FunctionCall),
    FunctionResponse(FunctionResponse),
}

/// Inline bytes (base64).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    pub mime_type: &'a str,
    pub data: &'a str,
}

/// A file Gemini fetches itself (`gs://`, `https://`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData<'a> {
    pub mime_type: &'static str,
    pub file_uri: &'a str,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub args: Value,
}

/// A tool's result: Gemini wants the function's name and an object.
#[derive(Debug, Serialize)]
pub struct FunctionResponse {
    pub name: String,
    pub response: ToolOutput,
}

#[derive(Debug, Serialize)]
pub struct ToolOutput {
    pub content: String,
}

/// The fields of a `generateContent` body after `contents`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestTail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<[Tools; 1]>,
}

/// The system prompt, as one text part.
#[derive(Debug, Serialize)]
pub struct SystemInstruction {
    pub parts: [Part<'static>; 1],
}

/// Sampling and output settings; numbers the client sent are passed as they are.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    pub include_thoughts: bool,
    pub thinking_budget: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tools {
    pub function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub name: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<[Value; 1]>,
    pub mode: &'static str,
}

/// One input of a `batchEmbedContents` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedRequest<'a> {
    pub content: EmbedContent<'a>,
    pub model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct EmbedContent<'a> {
    pub parts: [Part<'a>; 1],
}
