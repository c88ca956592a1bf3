//! Chat chunks → the Responses event stream, keeping the invariants both SDKs check
//! (`shared/reference/responses-api.md` §4.5): `response.created` first, `sequence_number`
//! from 0 without gaps, items appended in `output_index` order, each item-scoped event
//! naming its item, `*.done` events and the terminal event carrying the whole text,
//! arguments, output and usage. No `[DONE]` is sent.

use super::events::{Event, OutputText, SummaryText};
use super::tools::{call_item, ToolNames};
use super::{message_item, new_id, reasoning_item, status_of, Echo, OutputItem, Response};
use crate::canonical::chat::{Chunk, ChunkCall};
use crate::canonical::chunk::ChatChunk;
use crate::surfaces::ChunkTranslator;
use bytes::Bytes;
use serde_json::Value;

/// The item being streamed.
enum Open {
    None,
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    /// A tool call, for this chat tool-call index (`name`: its chat function; a custom
    /// tool's input is sent whole when the call ends, as it is read out of JSON).
    Call {
        index: u64,
        id: String,
        call_id: Value,
        name: Value,
        custom: bool,
        arguments: String,
    },
}

/// `event` as SSE, numbered from `seq` (which moves on).
fn send(seq: &mut u64, event: &Event<'_>, out: &mut Vec<Bytes>) {
    out.push(event.to_sse(*seq));
    *seq += 1;
}

/// One Responses stream being built from a chat stream.
pub struct ResponseStream {
    response: Response,
    /// The chat names of the request's tools.
    names: ToolNames,
    seq: u64,
    open: Open,
    /// Completed output items, in order.
    output: Vec<OutputItem>,
    finish: Option<String>,
    usage: Value,
    started: bool,
    ended: bool,
}

impl ResponseStream {
    /// A stream for the request `echo`, as response `id` of the public `model`.
    pub fn new(echo: &Echo, id: &str, model: &str, created: u64) -> ResponseStream {
        ResponseStream {
            response: Response::new(&echo.head, id, model, created),
            names: echo.tools.clone(),
            seq: 0,
            open: Open::None,
            output: Vec::new(),
            finish: None,
            usage: Value::Null,
            started: false,
            ended: false,
        }
    }

    /// The final Response (after the terminal event), to store.
    pub fn final_response(&self) -> Option<&Response> {
        (self.ended && self.response.status != "in_progress").then_some(&self.response)
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = &self.response;
        send(&mut self.seq, &Event::Created { response }, out);
        send(&mut self.seq, &Event::InProgress { response }, out);
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    fn add(&mut self, open: Open, item: OutputItem, out: &mut Vec<Bytes>) {
        self.close(out);
        let output_index = self.index();
        let added = Event::ItemAdded {
            output_index,
            item: &item,
        };
        send(&mut self.seq, &added, out);
        self.open = open;
    }

    /// Finish the open item: its `.done` events with the whole content.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let i = self.index();
        let item = match std::mem::replace(&mut self.open, Open::None) {
            Open::None => return,
            Open::Reasoning { id, text } => {
                let (item_id, text) = (id.as_str(), text.as_str());
                let done = Event::SummaryTextDone {
                    item_id,
                    output_index: i,
                    summary_index: 0,
                    text,
                };
                send(&mut self.seq, &done, out);
                let part_done = Event::SummaryPartDone {
                    item_id,
                    output_index: i,
                    summary_index: 0,
                    part: SummaryText::new(text),
                };
                send(&mut self.seq, &part_done, out);
                reasoning_item(item_id, text)
            }
            Open::Message { id, text } => {
                let (item_id, text) = (id.as_str(), text.as_str());
                let done = Event::TextDone {
                    item_id,
                    output_index: i,
                    content_index: 0,
                    text,
                    logprobs: [],
                };
                send(&mut self.seq, &done, out);
                let part_done = Event::ContentPartDone {
                    item_id,
                    output_index: i,
                    content_index: 0,
                    part: OutputText::new(text),
                };
                send(&mut self.seq, &part_done, out);
                let (status, _) = status_of(self.finish.as_deref());
                message_item(item_id, text, super::item_status(status))
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                let item = call_item(&self.names, &id, &call_id, &name, &arguments, "completed");
                let item_id = id.as_str();
                if let OutputItem::CustomToolCall { input, .. } = &item {
                    let delta = Event::CustomInputDelta {
                        item_id,
                        output_index: i,
                        delta: input,
                    };
                    send(&mut self.seq, &delta, out);
                    let done = Event::CustomInputDone {
                        item_id,
                        output_index: i,
                        input,
                    };
                    send(&mut self.seq, &done, out);
                } else if let OutputItem::FunctionCall { name, .. } = &item {
                    let done = Event::ArgumentsDone {
                        item_id,
                        output_index: i,
                        name,
                        arguments: &arguments,
                    };
                    send(&mut self.seq, &done, out);
                }
                item
            }
        };
        let done = Event::ItemDone {
            output_index: i,
            item: &item,
        };
        send(&mut self.seq, &done, out);
        self.output.push(item);
    }

    fn reasoning(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            let id = new_id("rs_");
            let item = OutputItem::reasoning(&id, None);
            self.add(
                Open::Reasoning {
                    id: id.clone(),
                    text: String::new(),
                },
                item,
                out,
            );
            let added = Event::SummaryPartAdded {
                item_id: &id,
                output_index: self.index(),
                summary_index: 0,
                part: SummaryText::new(""),
            };
            send(&mut self.seq, &added, out);
        }
        let output_index = self.index();
        if let Open::Reasoning { id, text } = &mut self.open {
            text.push_str(delta);
            let event = Event::SummaryTextDelta {
                item_id: id,
                output_index,
                summary_index: 0,
                delta,
            };
            send(&mut self.seq, &event, out);
        }
    }

    fn text(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Open::Message { .. }) {
            let id = new_id("msg_");
            let item = OutputItem::message(&id, None, "in_progress");
            self.add(
                Open::Message {
                    id: id.clone(),
                    text: String::new(),
                },
                item,
                out,
            );
            let added = Event::ContentPartAdded {
                item_id: &id,
                output_index: self.index(),
                content_index: 0,
                part: OutputText::new(""),
            };
            send(&mut self.seq, &added, out);
        }
        let output_index = self.index();
        if let Open::Message { id, text } = &mut self.open {
            text.push_str(delta);
            let event = Event::TextDelta {
                item_id: id,
                output_index,
                content_index: 0,
                delta,
                logprobs: [],
            };
            send(&mut self.seq, &event, out);
        }
    }

    fn call(&mut self, c: &ChunkCall<'_>, out: &mut Vec<Bytes>) {
        let index = c.index;
        if !matches!(self.open, Open::Call { index: open, .. } if open == index) {
            let (call_id, name) = (Value::from(c.id), Value::from(c.name));
            let id = new_id(self.names.id_prefix(&name));
            let item = call_item(&self.names, &id, &call_id, &name, "", "in_progress");
            let open = Open::Call {
                index,
                id,
                call_id,
                custom: matches!(item, OutputItem::CustomToolCall { .. }),
                name,
                arguments: String::new(),
            };
            self.add(open, item, out);
        }
        let Some(a) = c.arguments else {
            return;
        };
        let output_index = self.index();
        if let Open::Call {
            id,
            arguments,
            custom,
            ..
        } = &mut self.open
        {
            arguments.push_str(a);
            if *custom {
                return;
            }
            let event = Event::ArgumentsDelta {
                item_id: id,
                output_index,
                delta: a,
            };
            send(&mut self.seq, &event, out);
        }
    }

    /// Close everything and send the terminal event with the whole response.
    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close(out);
        let created = self.response.created_at;
        let output = self.output.clone();
        let finish = self.finish.as_deref();
        self.response.complete(finish, output, &self.usage, created);
        let response = &self.response;
        let terminal = if response.status == "completed" {
            Event::Completed { response }
        } else {
            Event::Incomplete { response }
        };
        send(&mut self.seq, &terminal, out);
        self.ended = true;
    }

    /// An `error` event, flat as OpenAI sends it plus a nested copy so that both SDKs
    /// raise (§4.6).
    fn error(&mut self, code: &str, message: &str, out: &mut Vec<Bytes>) {
        send(&mut self.seq, &Event::error(code, message), out);
        self.response.status = "failed";
        self.ended = true;
    }
}

impl ChunkTranslator for ResponseStream {
    fn chunk(&mut self, data: Option<&ChatChunk>) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Some(c) = data else {
            self.finish(&mut out); // `data: [DONE]`
            return out;
        };
        let c = Chunk::of(c);
        if let Some(e) = c.error {
            self.start(&mut out);
            let code = e["code"].as_str().unwrap_or("server_error").to_string();
            let message = e["message"]
                .as_str()
                .unwrap_or("upstream error")
                .to_string();
            self.error(&code, &message, &mut out);
            return out;
        }
        self.start(&mut out);
        if let Some(u) = c.usage {
            self.usage = u.clone();
        }
        if !c.has_choice {
            return out;
        }
        if let Some(r) = c.reasoning {
            self.reasoning(r, &mut out);
        }
        if let Some(t) = c.text {
            self.text(t, &mut out);
        }
        for call in &c.calls {
            self.call(call, &mut out);
        }
        if let Some(f) = c.finish_reason {
            self.finish = Some(f.to_string());
        }
        out
    }

    fn cut(&mut self, message: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.error("server_error", message, &mut out);
        out
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn final_object(&self) -> Option<Value> {
        self.final_response().map(Response::to_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::canonical::{AiRequest, Endpoint};
    use crate::surfaces::parse_events as parse;

    fn echo(body: Value) -> Echo {
        let req = AiRequest::parse(Endpoint::Responses, Bytes::from(body.to_string()));
        Echo::of(&req.unwrap()).unwrap()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn a_chat_stream_becomes_a_gapless_response_stream() {
        let mut s = ResponseStream::new(
            &echo(json!({"model": "m", "input": "hi"})),
            "resp_1",
            "m",
            7,
        );
        let mut out = Vec::new();
        for c in [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"reasoning_content": "think"}), None),
            chunk(json!({"content": "Hel"}), None),
            chunk(json!({"content": "lo"}), None),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
        ] {
            out.extend(s.chunk(Some(&ChatChunk::of(&c))));
        }
        out.extend(s.chunk(None));
        assert!(s.ended());
        let events = parse(&out);
        // Named as their type, numbered from 0 without gaps.
        for (i, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], json!(name));
            assert_eq!(data["sequence_number"], json!(i));
        }
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..2], ["response.created", "response.in_progress"]);
        assert_eq!(names.last(), Some(&"response.completed"));
        let text_done = events
            .iter()
            .find(|(n, _)| n == "response.output_text.done")
            .unwrap();
        assert_eq!(text_done.1["text"], "Hello");
        let args_done = events
            .iter()
            .find(|(n, _)| n == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(args_done.1["arguments"], "{\"a\":1}");
        // Items in output order: reasoning, message, call; the usage in Responses' words.
        let done = &events.last().unwrap().1["response"];
        let kinds: Vec<&str> = done["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call"]);
        assert_eq!(done["usage"]["input_tokens"], 3);
        assert_eq!(done["usage"]["output_tokens"], 5);
        assert_eq!(s.final_response().unwrap().status, "completed");
    }

    #[test]
    fn an_upstream_error_or_a_cut_ends_the_stream_as_failed() {
        let mut s = ResponseStream::new(
            &echo(json!({"model": "m", "input": "hi"})),
            "resp_2",
            "m",
            7,
        );
        let out = s.chunk(Some(&ChatChunk::of(
            &json!({"error": {"message": "boom", "code": "server_error"}}),
        )));
        let events = parse(&out);
        assert_eq!(events[0].0, "response.created");
        assert!(s.ended());
        assert!(events
            .iter()
            .any(|(n, _)| n == "response.failed" || n == "error"));
        assert!(s
            .chunk(Some(&ChatChunk::of(&chunk(
                json!({"content": "late"}),
                None
            ))))
            .is_empty());
        let mut cut = ResponseStream::new(
            &echo(json!({"model": "m", "input": "hi"})),
            "resp_3",
            "m",
            7,
        );
        let events = parse(&cut.cut("the upstream broke off"));
        assert!(events
            .iter()
            .any(|(_, d)| d.to_string().contains("the upstream broke off")));
    }

    #[test]
    fn a_custom_tool_call_streams_its_input_whole() {
        let body = json!({"model": "m", "input": "hi", "tools": [
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar",
             "syntax": "lark", "definition": "start: /.+/"}}]});
        let mut s = ResponseStream::new(&echo(body), "resp_4", "m", 7);
        let mut out = Vec::new();
        for c in [
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                "function": {"name": "apply_patch", "arguments": "{\"input\":"}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"*** Begin\"}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
        ] {
            out.extend(s.chunk(Some(&ChatChunk::of(&c))));
        }
        out.extend(s.chunk(None));
        let events = parse(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"response.function_call_arguments.delta"));
        let added = events
            .iter()
            .find(|(n, _)| n == "response.output_item.added")
            .unwrap();
        assert_eq!(added.1["item"]["type"], "custom_tool_call");
        let done = events
            .iter()
            .find(|(n, _)| n == "response.custom_tool_call_input.done")
            .unwrap();
        assert_eq!(done.1["input"], "*** Begin");
        let item = &events.last().unwrap().1["response"]["output"][0];
        assert_eq!(
            (item["type"].as_str(), item["input"].as_str()),
            (Some("custom_tool_call"), Some("*** Begin"))
        );
        assert_eq!(item["call_id"], "call_9");
    }
}
