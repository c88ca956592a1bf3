//! Bedrock's ConverseStream: the binary `application/vnd.amazon.eventstream` framing
//! (decoded incrementally by [`EventStreamDecoder`], CRCs checked, frames split across
//! reads kept) and its events translated to OpenAI chunks ([`ConverseStream`]).

use super::translate::{finish_reason, usage};
use crate::canonical::chunk::{ChunkDelta, Stamp};
use crate::canonical::lenient;
use crate::errors::openai_error_body;
use crate::providers::api::{BodyDecoder, ChatEvent, EventTranslator};
use crate::providers::{UpstreamErrorKind, UpstreamFailure};
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::Message;
use bytes::{Buf, Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// Largest frame accepted (APISIX caps at 16 MiB too).
const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Turns event-stream frames into SSE events whose data is
/// `{"event": <:event-type>, "payload": <JSON>}`, or `{"exception": <type>, "message"}`
/// for exception and error frames, so the stream phase handles them like any SSE.
#[derive(Default)]
pub struct EventStreamDecoder {
    buf: BytesMut,
}

fn header<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

fn protocol(detail: String) -> UpstreamFailure {
    UpstreamFailure::new(UpstreamErrorKind::Protocol, detail)
}

impl EventStreamDecoder {
    /// The SSE event for one frame. An event's payload is spliced in as it came when it is
    /// one line of valid JSON (checked without building it), else written again compactly.
    fn event(m: &Message) -> Bytes {
        let payload = m.payload().as_ref();
        let error = match header(m, ":message-type") {
            Some("event") => {
                let kind = header(m, ":event-type").unwrap_or("");
                let mut out = Vec::with_capacity(payload.len() + kind.len() + 40);
                out.extend_from_slice(b"data: {\"event\":");
                // A &str always serializes.
                let _ = serde_json::to_writer(&mut out, kind);
                out.extend_from_slice(b",\"payload\":");
                let one_line = !payload.iter().any(|b| matches!(b, b'\n' | b'\r'));
                if one_line && serde_json::from_slice::<IgnoredAny>(payload).is_ok() {
                    out.extend_from_slice(payload);
                } else {
                    let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                    let _ = serde_json::to_writer(&mut out, &v);
                }
                out.extend_from_slice(b"}\n\n");
                return Bytes::from(out);
            }
            Some("exception") => {
                let said = serde_json::from_slice::<Said>(payload).ok();
                StreamError {
                    exception: header(m, ":exception-type").unwrap_or("exception"),
                    message: said
                        .and_then(|s| s.message)
                        .map_or(Cow::Borrowed("upstream exception"), Cow::Owned),
                }
            }
            _ => StreamError {
                exception: header(m, ":error-code").unwrap_or("error"),
                message: Cow::Borrowed(header(m, ":error-message").unwrap_or("upstream error")),
            },
        };
        Bytes::from(crate::canonical::write::sse(None, &error))
    }
}

/// An exception or error frame, as the decoder passes it on to the stream translation.
#[derive(serde::Serialize)]
struct StreamError<'a> {
    exception: &'a str,
    message: Cow<'a, str>,
}

/// An exception frame's payload: its message, when it is a string.
#[derive(Deserialize)]
struct Said {
    #[serde(default, deserialize_with = "lenient::string")]
    message: Option<String>,
}

impl BodyDecoder for EventStreamDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, UpstreamFailure> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // A frame starts with its total length: bounded before anything is buffered for
        // it; `read_message_from` checks both CRCs.
        while self.buf.len() >= 4 {
            let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            if !(16..=MAX_FRAME).contains(&total) {
                return Err(protocol(format!("event-stream frame of {total} bytes")));
            }
            if self.buf.len() < total as usize {
                break;
            }
            let frame = self.buf.split_to(total as usize).freeze();
            let m = read_message_from(frame)
                .map_err(|e| protocol(format!("event-stream frame: {e}")))?;
            out.push(Self::event(&m));
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<(), UpstreamFailure> {
        if self.buf.has_remaining() {
            return Err(protocol("the event stream ended inside a frame".into()));
        }
        Ok(())
    }
}

/// ConverseStream events → OpenAI chunks, a usage chunk and `data: [DONE]` (usage comes
/// in `metadata`, after `messageStop`).
pub struct ConverseStream {
    stamp: Stamp,
    /// Bedrock block index → OpenAI tool-call index (OpenAI numbers only the calls).
    tools: Vec<(u64, usize)>,
    finish: &'static str,
    ended: bool,
    throttled: bool,
}

impl ConverseStream {
    pub fn new(model: &str, created: u64) -> ConverseStream {
        ConverseStream {
            stamp: Stamp {
                id: Arc::from(format!(
                    "chatcmpl-bedrock-{}",
                    hex::encode(rand::random::<[u8; 8]>())
                )),
                ..Stamp::new(model, created)
            },
            tools: Vec::new(),
            finish: "stop",
            ended: false,
            throttled: false,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish: Option<&'static str>) -> ChatEvent {
        ChatEvent::Chunk(self.stamp.chunk(delta, finish))
    }
}

/// One decoded frame as [`EventStreamDecoder`] writes it: an event and its payload, or an
/// exception. Read once, typed, strings borrowed; a field of another type reads as absent.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    exception: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<Payload<'a>>,
}

/// The fields of ConverseStream's events the translation reads.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(default, deserialize_with = "lenient::count_or_zero")]
    content_block_index: u64,
    #[serde(default, borrow)]
    start: Option<BlockStart<'a>>,
    #[serde(default, borrow)]
    delta: Option<BlockDelta<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart<'a> {
    #[serde(default, borrow)]
    tool_use: Option<ToolUseStart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart<'a> {
    #[serde(default, deserialize_with = "lenient::string")]
    tool_use_id: Option<String>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<TextOf<'a>>,
    #[serde(default, borrow)]
    tool_use: Option<InputOf<'a>>,
}

#[derive(Deserialize)]
struct TextOf<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InputOf<'a> {
    #[serde(default, borrow)]
    input: Option<Cow<'a, str>>,
}

impl EventTranslator for ConverseStream {
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        if self.ended {
            return Vec::new();
        }
        let Ok(frame) = serde_json::from_slice::<Frame<'_>>(data) else {
            return Vec::new();
        };
        if let Some(kind) = frame.exception.as_deref() {
            self.ended = true;
            let message = format!("{kind}: {}", frame.message.as_deref().unwrap_or_default());
            self.throttled = kind == "throttlingException";
            let etype = if self.throttled {
                "requests"
            } else {
                "server_error"
            };
            let body = openai_error_body(&message, etype, None, None);
            return vec![ChatEvent::Error(body)];
        }
        let p = frame.payload.unwrap_or_default();
        match frame.event.as_deref().unwrap_or_default() {
            "messageStart" => vec![self.chunk(ChunkDelta::start(), None)],
            "contentBlockStart" => {
                let Some(t) = p.start.and_then(|s| s.tool_use) else {
                    return Vec::new();
                };
                let index = self.tools.len();
                self.tools.push((p.content_block_index, index));
                let call = ChunkDelta::call(index as u64, t.tool_use_id, t.name.into(), "".into());
                vec![self.chunk(call, None)]
            }
            "contentBlockDelta" => {
                let d = p.delta.unwrap_or_default();
                if let Some(t) = d.text {
                    return vec![self.chunk(ChunkDelta::text(t), None)];
                }
                if let Some(r) = d.reasoning_content.and_then(|r| r.text) {
                    return vec![self.chunk(ChunkDelta::reasoning(r), None)];
                }
                let block = p.content_block_index;
                match (
                    d.tool_use.and_then(|t| t.input),
                    self.tools.iter().find(|(b, _)| *b == block),
                ) {
                    (Some(input), Some(&(_, index))) if !input.is_empty() => {
                        vec![self.chunk(ChunkDelta::arguments(index as u64, input), None)]
                    }
                    _ => Vec::new(),
                }
            }
            "messageStop" => {
                self.finish = finish_reason(p.stop_reason.as_deref().unwrap_or(""));
                vec![self.chunk(ChunkDelta::default(), Some(self.finish))]
            }
            "metadata" => {
                self.ended = true;
                let u = usage(&p.usage).chunk(&self.stamp);
                vec![u, ChatEvent::Done]
            }
            _ => Vec::new(), // contentBlockStop
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn throttled(&self) -> bool {
        self.throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's byte-level example (§c.6): a `contentBlockDelta` frame, as dumped.
    fn frame() -> Vec<u8> {
        let dump = "00 00 00 9f 00 00 00 57 c3 7b ab ff 0b 3a 65 76
            65 6e 74 2d 74 79 70 65 07 00 11 63 6f 6e 74 65
            6e 74 42 6c 6f 63 6b 44 65 6c 74 61 0d 3a 63 6f
            6e 74 65 6e 74 2d 74 79 70 65 07 00 10 61 70 70
            6c 69 63 61 74 69 6f 6e 2f 6a 73 6f 6e 0d 3a 6d
            65 73 73 61 67 65 2d 74 79 70 65 07 00 05 65 76
            65 6e 74 7b 22 63 6f 6e 74 65 6e 74 42 6c 6f 63
            6b 49 6e 64 65 78 22 3a 30 2c 22 64 65 6c 74 61
            22 3a 7b 22 74 65 78 74 22 3a 22 48 69 22 7d 2c
            22 70 22 3a 22 61 62 63 64 22 7d f2 ac e5 ff";
        dump.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_frames_split_at_every_offset_and_rejects_bad_crcs() {
        let f = frame();
        assert_eq!(f.len(), 159);
        let want = "data: {\"event\":\"contentBlockDelta\",\"payload\":{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"},\"p\":\"abcd\"}}\n\n";
        for cut in 0..f.len() {
            let mut d = EventStreamDecoder::default();
            let mut out = d.feed(&f[..cut]).unwrap();
            out.extend(d.feed(&f[cut..]).unwrap());
            assert_eq!(out.len(), 1, "cut at {cut}");
            assert_eq!(std::str::from_utf8(&out[0]).unwrap(), want);
            d.finish().unwrap();
        }
        // Two frames in one read give two events.
        let two = [f.clone(), f.clone()].concat();
        assert_eq!(EventStreamDecoder::default().feed(&two).unwrap().len(), 2);
        // A damaged prelude CRC, a damaged message CRC, an impossible length.
        for i in [8, 158] {
            let mut bad = f.clone();
            bad[i] ^= 0xff;
            assert!(
                EventStreamDecoder::default().feed(&bad).is_err(),
                "byte {i}"
            );
        }
        let mut short = f.clone();
        short[3] = 8;
        assert!(EventStreamDecoder::default().feed(&short).is_err());
        // A stream that stops inside a frame is an error, not a silent end.
        let mut d = EventStreamDecoder::default();
        d.feed(&f[..100]).unwrap();
        assert!(d.finish().is_err());
    }

    #[test]
    fn a_throttling_exception_ends_the_stream_as_a_rate_limit() {
        let mut t = ConverseStream::new("m", 1);
        let out = t.event(br#"{"exception": "throttlingException", "message": "Too many tokens"}"#);
        assert!(t.ended() && t.throttled());
        let sse = out[0].to_sse();
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(text.contains(r#""type":"requests""#), "{text}");
        let mut other = ConverseStream::new("m", 1);
        other.event(br#"{"exception": "internalServerException", "message": "x"}"#);
        assert!(other.ended() && !other.throttled());
    }

    /// A payload goes in as it came only when it is one line of valid JSON; otherwise it
    /// is written again (or `null`), so a hostile frame cannot break the SSE framing.
    #[test]
    fn payloads_are_spliced_only_when_safe() {
        use aws_smithy_eventstream::frame::write_message_to;
        use aws_smithy_types::event_stream::{Header, HeaderValue};
        let frame = |name: &str, payload: &[u8]| {
            let m = Message::new(payload.to_vec())
                .add_header(Header::new(
                    ":event-type",
                    HeaderValue::String(name.to_string().into()),
                ))
                .add_header(Header::new(
                    ":message-type",
                    HeaderValue::String("event".into()),
                ));
            let mut out = Vec::new();
            write_message_to(&m, &mut out).unwrap();
            out
        };
        let data = |name: &str, payload: &[u8]| {
            let out = EventStreamDecoder::default()
                .feed(&frame(name, payload))
                .unwrap();
            String::from_utf8(out[0].to_vec()).unwrap()
        };
        assert_eq!(
            data("messageStop", br#"{"stopReason":"end_turn"}"#),
            "data: {\"event\":\"messageStop\",\"payload\":{\"stopReason\":\"end_turn\"}}\n\n"
        );
        let multi = data("x\"y", b"{\n\"a\":\n1}");
        assert_eq!(
            multi,
            "data: {\"event\":\"x\\\"y\",\"payload\":{\"a\":1}}\n\n"
        );
        let bad = data("m", b"{\"a\":");
        assert!(bad.ends_with(",\"payload\":null}\n\n"), "{bad}");
        for event in [multi, bad] {
            assert_eq!(event.matches('\n').count(), 2, "one data line: {event}");
        }
    }

    /// An exception frame's message is taken only when it is a string; a payload of
    /// another shape, broken JSON or a line break in the message keep the event one line.
    #[test]
    fn exception_frames_of_any_payload_are_one_event() {
        let exception = |payload: &[u8]| {
            let m = Message::new(payload.to_vec())
                .add_header(aws_smithy_types::event_stream::Header::new(
                    ":message-type",
                    aws_smithy_types::event_stream::HeaderValue::String("exception".into()),
                ))
                .add_header(aws_smithy_types::event_stream::Header::new(
                    ":exception-type",
                    aws_smithy_types::event_stream::HeaderValue::String(
                        "throttlingException".into(),
                    ),
                ));
            String::from_utf8(EventStreamDecoder::event(&m).to_vec()).unwrap()
        };
        assert_eq!(
            exception(br#"{"message":"slow\ndown"}"#),
            "data: {\"exception\":\"throttlingException\",\"message\":\"slow\\ndown\"}\n\n"
        );
        for payload in [
            &br#"{"message":42}"#[..],
            b"[1,2]",
            b"{\"message\":",
            b"",
            b"{\"message\":\"a\nb\"}",
        ] {
            let event = exception(payload);
            assert!(
                event.contains(r#""message":"upstream exception""#),
                "{event}"
            );
            assert_eq!(event.matches('\n').count(), 2, "{event}");
        }
    }
}
