//! The Response object as the Responses surface writes it, typed: what the gateway sets
//! (id, status, output, usage) as typed fields, and the fields that echo the request as
//! the client sent them (JSON values), with OpenAI's defaults where it sent none. The
//! store keeps it as JSON.

use serde::Serialize;
use serde_json::{json, Value};

/// A Response.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    pub created_at: u64,
    /// Always `null`: a failed stream says why in its `error` event.
    pub error: Option<()>,
    pub id: String,
    pub incomplete_details: Option<Incomplete>,
    pub instructions: Value,
    pub max_output_tokens: Value,
    pub metadata: Value,
    pub model: String,
    /// Always `response`.
    pub object: &'static str,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: Value,
    pub previous_response_id: Value,
    pub reasoning: Value,
    pub status: &'static str,
    pub store: Value,
    pub temperature: Value,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Value,
    pub top_p: Value,
    pub truncation: Value,
    pub usage: Option<ResponseUsage>,
    pub user: Value,
}

/// Why a Response is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Incomplete {
    pub reason: &'static str,
}

/// A Response's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InputDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutputDetails {
    pub reasoning_tokens: u64,
}

impl Response {
    /// A Response in progress to the request `body` (its fields but the input), as
    /// response `id` of the public `model`.
    pub fn new(body: &Value, id: &str, model: &str, created: u64) -> Response {
        let or = |k: &str, d: Value| {
            if body[k].is_null() {
                d
            } else {
                body[k].clone()
            }
        };
        Response {
            completed_at: None,
            created_at: created,
            error: None,
            id: id.to_string(),
            incomplete_details: None,
            instructions: or("instructions", Value::Null),
            max_output_tokens: or("max_output_tokens", Value::Null),
            metadata: or("metadata", json!({})),
            model: model.to_string(),
            object: "response",
            output: Vec::new(),
            parallel_tool_calls: or("parallel_tool_calls", json!(true)),
            previous_response_id: or("previous_response_id", Value::Null),
            reasoning: or("reasoning", json!({"effort": null, "summary": null})),
            status: "in_progress",
            store: or("store", json!(true)),
            temperature: or("temperature", json!(1.0)),
            text: or("text", json!({"format": {"type": "text"}})),
            tool_choice: or("tool_choice", json!("auto")),
            tools: or("tools", json!([])),
            top_p: or("top_p", json!(1.0)),
            truncation: or("truncation", json!("disabled")),
            usage: None,
            user: or("user", Value::Null),
        }
    }

    /// Complete it (`completed` or `incomplete`, as `finish` says) with its output and
    /// the chat answer's usage, at `completed_at`.
    pub fn complete(
        &mut self,
        finish: Option<&str>,
        output: Vec<OutputItem>,
        chat_usage: &Value,
        completed_at: u64,
    ) {
        let (status, incomplete) = status_of(finish);
        self.status = status;
        self.incomplete_details = incomplete;
        self.output = output;
        self.usage = Some(ResponseUsage::of(chat_usage));
        self.completed_at = Some(completed_at);
    }

    /// As JSON, for the store and the answer's body.
    pub fn to_value(&self) -> Value {
        // A struct of strings, numbers and trees always converts.
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl ResponseUsage {
    /// Chat usage → Responses usage (no completion count: the total less the prompt).
    pub fn of(u: &Value) -> ResponseUsage {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let input = n(&u["prompt_tokens"]);
        let output = match u["completion_tokens"].as_u64() {
            Some(c) => c,
            None => n(&u["total_tokens"]).saturating_sub(input),
        };
        ResponseUsage {
            input_tokens: input,
            input_tokens_details: InputDetails {
                cached_tokens: n(&u["prompt_tokens_details"]["cached_tokens"]),
                cache_write_tokens: 0,
            },
            output_tokens: output,
            output_tokens_details: OutputDetails {
                reasoning_tokens: n(&u["completion_tokens_details"]["reasoning_tokens"]),
            },
            total_tokens: input.saturating_add(output),
        }
    }
}

/// Status and `incomplete_details` for a chat `finish_reason`.
pub fn status_of(finish: Option<&str>) -> (&'static str, Option<Incomplete>) {
    match finish {
        Some("length") => (
            "incomplete",
            Some(Incomplete {
                reason: "max_output_tokens",
            }),
        ),
        Some("content_filter") => (
            "incomplete",
            Some(Incomplete {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}

/// One output item of a Response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: &'static str,
        /// Always `assistant`.
        role: &'static str,
        content: Vec<OutputPart>,
    },
    Reasoning {
        id: String,
        summary: Vec<SummaryPart>,
    },
    FunctionCall {
        id: String,
        status: &'static str,
        call_id: Value,
        name: Value,
        arguments: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    CustomToolCall {
        id: String,
        status: &'static str,
        call_id: Value,
        name: Value,
        input: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
}

/// A message's output text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputPart {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    pub annotations: [(); 0],
    pub logprobs: [(); 0],
}

/// A reasoning item's summary text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryPart {
    /// Always `summary_text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

impl OutputItem {
    /// An assistant message: its text (none while it streams) and status.
    pub fn message(id: &str, text: Option<&str>, status: &'static str) -> OutputItem {
        OutputItem::Message {
            id: id.to_string(),
            status,
            role: "assistant",
            content: text
                .map(|t| OutputPart {
                    kind: "output_text",
                    text: t.to_string(),
                    annotations: [],
                    logprobs: [],
                })
                .into_iter()
                .collect(),
        }
    }

    /// A reasoning item: its text as a summary (none while it streams).
    pub fn reasoning(id: &str, text: Option<&str>) -> OutputItem {
        OutputItem::Reasoning {
            id: id.to_string(),
            summary: text
                .map(|t| SummaryPart {
                    kind: "summary_text",
                    text: t.to_string(),
                })
                .into_iter()
                .collect(),
        }
    }
}
