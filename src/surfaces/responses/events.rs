//! The Responses API's stream events as typed values (`shared/reference/responses-api.md`
//! §4.5), written by [`super::stream`]: one variant per event type, its `type` the tag,
//! `sequence_number` added as each is sent. The objects the events carry whole (the
//! Response, an output item) are the typed values of `super::object`.

use super::{OutputItem, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// One event of a Responses stream.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub enum Event<'a> {
    #[serde(rename = "response.created")]
    Created { response: &'a Response },
    #[serde(rename = "response.in_progress")]
    InProgress { response: &'a Response },
    #[serde(rename = "response.completed")]
    Completed { response: &'a Response },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: &'a Response },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        output_index: usize,
        item: &'a OutputItem,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        output_index: usize,
        item: &'a OutputItem,
    },
    #[serde(rename = "response.reasoning_summary_part.added")]
    SummaryPartAdded {
        item_id: &'a str,
        output_index: usize,
        summary_index: u32,
        part: SummaryText<'a>,
    },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    SummaryTextDelta {
        item_id: &'a str,
        output_index: usize,
        summary_index: u32,
        delta: &'a str,
    },
    #[serde(rename = "response.reasoning_summary_text.done")]
    SummaryTextDone {
        item_id: &'a str,
        output_index: usize,
        summary_index: u32,
        text: &'a str,
    },
    #[serde(rename = "response.reasoning_summary_part.done")]
    SummaryPartDone {
        item_id: &'a str,
        output_index: usize,
        summary_index: u32,
        part: SummaryText<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        delta: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        text: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: &'a str,
        output_index: usize,
        content_index: u32,
        part: OutputText<'a>,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta {
        item_id: &'a str,
        output_index: usize,
        delta: &'a str,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgumentsDone {
        item_id: &'a str,
        output_index: usize,
        name: &'a Value,
        arguments: &'a str,
    },
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomInputDelta {
        item_id: &'a str,
        output_index: usize,
        delta: &'a str,
    },
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomInputDone {
        item_id: &'a str,
        output_index: usize,
        input: &'a str,
    },
    /// Flat as OpenAI sends it, plus a nested copy so that both SDKs raise (§4.6).
    #[serde(rename = "error")]
    Error {
        code: &'a str,
        message: &'a str,
        param: Option<()>,
        error: ErrorObject<'a>,
    },
}

/// A reasoning summary's text part.
#[derive(Debug, Serialize)]
pub struct SummaryText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> SummaryText<'a> {
    pub fn new(text: &'a str) -> SummaryText<'a> {
        SummaryText {
            kind: "summary_text",
            text,
        }
    }
}

/// A message's output text part.
#[derive(Debug, Serialize)]
pub struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

impl<'a> OutputText<'a> {
    pub fn new(text: &'a str) -> OutputText<'a> {
        OutputText {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

/// The nested copy of an `error` event.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
    param: Option<()>,
}

impl<'a> Event<'a> {
    /// An `error` event.
    pub fn error(code: &'a str, message: &'a str) -> Event<'a> {
        Event::Error {
            code,
            message,
            param: None,
            error: ErrorObject {
                kind: "server_error",
                code,
                message,
                param: None,
            },
        }
    }

    /// The event's type: also its SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Created { .. } => "response.created",
            Event::InProgress { .. } => "response.in_progress",
            Event::Completed { .. } => "response.completed",
            Event::Incomplete { .. } => "response.incomplete",
            Event::ItemAdded { .. } => "response.output_item.added",
            Event::ItemDone { .. } => "response.output_item.done",
            Event::SummaryPartAdded { .. } => "response.reasoning_summary_part.added",
            Event::SummaryTextDelta { .. } => "response.reasoning_summary_text.delta",
            Event::SummaryTextDone { .. } => "response.reasoning_summary_text.done",
            Event::SummaryPartDone { .. } => "response.reasoning_summary_part.done",
            Event::ContentPartAdded { .. } => "response.content_part.added",
            Event::TextDelta { .. } => "response.output_text.delta",
            Event::TextDone { .. } => "response.output_text.done",
            Event::ContentPartDone { .. } => "response.content_part.done",
            Event::ArgumentsDelta { .. } => "response.function_call_arguments.delta",
            Event::ArgumentsDone { .. } => "response.function_call_arguments.done",
            Event::CustomInputDelta { .. } => "response.custom_tool_call_input.delta",
            Event::CustomInputDone { .. } => "response.custom_tool_call_input.done",
            Event::Error { .. } => "error",
        }
    }

    /// The event as SSE, numbered `sequence_number`.
    pub fn to_sse(&self, sequence_number: u64) -> Bytes {
        #[derive(Serialize)]
        struct Numbered<'e, 'a> {
            #[serde(flatten)]
            event: &'e Event<'a>,
            sequence_number: u64,
        }
        let numbered = Numbered {
            event: self,
            sequence_number,
        };
        Bytes::from(crate::canonical::write::sse(Some(self.name()), &numbered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event's SSE name is its `type`, and its data carries its number.
    #[test]
    fn names_match_types_and_events_are_numbered() {
        let (v, s) = (Value::Null, "x");
        let r = Response::new(&v, "resp_1", "m", 1);
        let item = OutputItem::message("msg_1", Some(s), "completed");
        let (output_index, item_id) = (1, s);
        let events = [
            Event::Created { response: &r },
            Event::InProgress { response: &r },
            Event::Completed { response: &r },
            Event::Incomplete { response: &r },
            Event::ItemAdded {
                output_index,
                item: &item,
            },
            Event::ItemDone {
                output_index,
                item: &item,
            },
            Event::SummaryPartAdded {
                item_id,
                output_index,
                summary_index: 0,
                part: SummaryText::new(s),
            },
            Event::SummaryTextDelta {
                item_id,
                output_index,
                summary_index: 0,
                delta: s,
            },
            Event::SummaryTextDone {
                item_id,
                output_index,
                summary_index: 0,
                text: s,
            },
            Event::SummaryPartDone {
                item_id,
                output_index,
                summary_index: 0,
                part: SummaryText::new(s),
            },
            Event::ContentPartAdded {
                item_id,
                output_index,
                content_index: 0,
                part: OutputText::new(s),
            },
            Event::TextDelta {
                item_id,
                output_index,
                content_index: 0,
                delta: s,
                logprobs: [],
            },
            Event::TextDone {
                item_id,
                output_index,
                content_index: 0,
                text: s,
                logprobs: [],
            },
            Event::ContentPartDone {
                item_id,
                output_index,
                content_index: 0,
                part: OutputText::new(s),
            },
            Event::ArgumentsDelta {
                item_id,
                output_index,
                delta: s,
            },
            Event::ArgumentsDone {
                item_id,
                output_index,
                name: &v,
                arguments: s,
            },
            Event::CustomInputDelta {
                item_id,
                output_index,
                delta: s,
            },
            Event::CustomInputDone {
                item_id,
                output_index,
                input: s,
            },
            Event::error("server_error", "boom"),
        ];
        for (i, e) in events.iter().enumerate() {
            let sse = e.to_sse(i as u64);
            let text = std::str::from_utf8(&sse).unwrap();
            let (head, data) = text.split_once("\ndata: ").unwrap();
            assert_eq!(head, format!("event: {}", e.name()));
            let data: Value = serde_json::from_str(data.trim_end()).unwrap();
            assert_eq!(data["type"], e.name());
            assert_eq!(data["sequence_number"], i);
        }
        let error = serde_json::to_value(Event::error("c", "m")).unwrap();
        assert_eq!(error["error"]["type"], "server_error");
        assert_eq!(
            (&error["param"], &error["error"]["code"]),
            (&Value::Null, &Value::from("c"))
        );
    }
}
