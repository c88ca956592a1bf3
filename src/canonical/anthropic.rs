//! Anthropic's Messages dialect as typed values, read and written by serde: the Message
//! answer, its content blocks, its usage and the stream's named events. One model serves
//! both directions: the Anthropic provider reads upstream answers and events into it
//! (`crate::providers::anthropic`), and the Messages surface writes its answers and events
//! from it (`crate::surfaces::messages`), so a field name exists once.
//!
//! Reading is lenient where Anthropic adds things: unknown block, delta and event types
//! read as `Other`, missing fields take defaults, and a token count that is not an
//! unsigned integer reads as absent (never as a failed event). Strings borrow from what
//! is read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A Message: a whole answer, or the start of a stream (`message_start`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Message<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// Always `message`.
    #[serde(rename = "type", default, borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub role: Cow<'a, str>,
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
    #[serde(default, borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub stop_sequence: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Usage,
}

impl<'a> Message<'a> {
    /// An assistant Message as the gateway writes it.
    pub fn assistant(
        id: String,
        model: &'a str,
        content: Vec<Block<'a>>,
        stop_reason: Option<&'static str>,
        usage: Usage,
    ) -> Message<'a> {
        Message {
            id: Some(Cow::Owned(id)),
            kind: Cow::Borrowed("message"),
            role: Cow::Borrowed("assistant"),
            model: Cow::Borrowed(model),
            content,
            stop_reason: stop_reason.map(Cow::Borrowed),
            stop_sequence: None,
            usage,
        }
    }
}

/// One content block.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Value,
    },
    /// An image (requests).
    Image {
        #[serde(borrow)]
        source: ImageSource<'a>,
    },
    /// A tool's result, as text (requests).
    ToolResult {
        #[serde(default, borrow)]
        tool_use_id: Cow<'a, str>,
        #[serde(default, borrow)]
        content: Cow<'a, str>,
    },
    /// Thinking, redacted thinking, server tools' blocks: read, never written.
    #[serde(other)]
    Other,
}

/// Where an image block's bytes are.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource<'a> {
    Base64 {
        #[serde(borrow)]
        media_type: Cow<'a, str>,
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    Url {
        #[serde(borrow)]
        url: Cow<'a, str>,
    },
}

/// Token counts. Each is optional: `message_start` has input and output, `message_delta`
/// often the output alone, and the cache counts appear when caching was used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(
        default,
        deserialize_with = "super::lenient::count",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_tokens: Option<u64>,
    #[serde(
        default,
        deserialize_with = "super::lenient::count",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_tokens: Option<u64>,
    #[serde(
        default,
        deserialize_with = "super::lenient::count",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(
        default,
        deserialize_with = "super::lenient::count",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// The prompt as OpenAI counts it: input plus cache writes and reads (saturating).
    pub fn prompt(&self) -> u64 {
        [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(n.unwrap_or(0)))
    }

    /// The completion tokens (0 when absent).
    pub fn output(&self) -> u64 {
        self.output_tokens.unwrap_or(0)
    }
}

/// A piece of the open block.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta<'a> {
    TextDelta {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    InputJsonDelta {
        #[serde(borrow)]
        partial_json: Cow<'a, str>,
    },
    /// Thinking and signature deltas: no chat equivalent.
    #[serde(other)]
    Other,
}

/// `message_delta`'s `delta`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StopDelta<'a> {
    #[serde(default, borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub stop_sequence: Option<Cow<'a, str>>,
}

/// An error event's (or error answer's) `error`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ErrorDetail<'a> {
    #[serde(
        rename = "type",
        default,
        borrow,
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

/// One event of a Messages stream; its `type` is also the SSE event name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    MessageStart {
        #[serde(borrow)]
        message: Message<'a>,
    },
    ContentBlockStart {
        #[serde(default, deserialize_with = "super::lenient::count_or_zero")]
        index: u64,
        #[serde(borrow)]
        content_block: Block<'a>,
    },
    ContentBlockDelta {
        #[serde(default, deserialize_with = "super::lenient::count_or_zero")]
        index: u64,
        #[serde(borrow)]
        delta: Delta<'a>,
    },
    ContentBlockStop {
        #[serde(default, deserialize_with = "super::lenient::count_or_zero")]
        index: u64,
    },
    MessageDelta {
        #[serde(default, borrow)]
        delta: StopDelta<'a>,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop,
    Error {
        #[serde(default, borrow)]
        error: ErrorDetail<'a>,
    },
    /// `ping` and event types added later.
    #[serde(other)]
    Other,
}

impl<'a> Event<'a> {
    /// An upstream event's data as a typed event (`Other` when it is not one).
    pub fn read(data: &'a [u8]) -> Event<'a> {
        Event::read_delta(data).unwrap_or_else(|| Event::read_tagged(data))
    }

    /// The derived reading: serde buffers an internally tagged enum's fields before it
    /// knows the variant (and the delta's again), which is most of an event's cost.
    fn read_tagged(data: &'a [u8]) -> Event<'a> {
        serde_json::from_slice(data).unwrap_or(Event::Other)
    }

    /// Most events of a stream, `content_block_delta` with a text, JSON or other delta,
    /// read in one pass into plain structs; `None` for any other event or anything this
    /// reading refuses, which the derived reading then reads (a unit test checks both
    /// give the same event).
    fn read_delta(data: &'a [u8]) -> Option<Event<'a>> {
        #[derive(Deserialize)]
        struct Flat<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default, deserialize_with = "super::lenient::count_or_zero")]
            index: u64,
            #[serde(borrow)]
            delta: FlatDelta<'a>,
        }
        #[derive(Deserialize)]
        struct FlatDelta<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default, borrow)]
            text: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            partial_json: Option<Cow<'a, str>>,
        }
        let f: Flat<'a> = serde_json::from_slice(data).ok()?;
        if f.kind != "content_block_delta" {
            return None;
        }
        let delta = match f.delta.kind.as_ref() {
            "text_delta" => Delta::TextDelta {
                text: f.delta.text?,
            },
            "input_json_delta" => Delta::InputJsonDelta {
                partial_json: f.delta.partial_json?,
            },
            _ => Delta::Other,
        };
        Some(Event::ContentBlockDelta {
            index: f.index,
            delta,
        })
    }

    /// An event already read as a tree (`Other` when it is not one).
    pub fn of(data: &'a Value) -> Event<'a> {
        Event::deserialize(data).unwrap_or(Event::Other)
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
            Event::Other => "ping",
        }
    }

    /// An error event of `kind` saying `message`.
    pub fn error(kind: &'a str, message: &'a str) -> Event<'a> {
        Event::Error {
            error: ErrorDetail {
                kind: Some(Cow::Borrowed(kind)),
                message: Some(Cow::Borrowed(message)),
            },
        }
    }

    /// The event as SSE: `event: <name>`, its JSON data and the blank line.
    pub fn to_sse(&self) -> Bytes {
        Bytes::from(super::write::sse(Some(self.name()), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_leniently_and_write_back_the_same() {
        let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}});
        let e = Event::of(&start);
        let Event::MessageStart { message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((message.usage.prompt(), message.usage.output()), (25, 1));
        assert_eq!(serde_json::to_value(&e).unwrap(), start);
        let text = start.to_string();
        let read = Event::read(text.as_bytes());
        assert_eq!(serde_json::to_value(&read).unwrap(), start);
        // A count that is no unsigned integer is absent, not a broken event.
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": -3}});
        let Event::MessageDelta { delta, usage } = Event::of(&delta) else {
            panic!()
        };
        assert_eq!(
            (delta.stop_reason.as_deref(), usage.output_tokens),
            (Some("end_turn"), None)
        );
        for other in [
            json!({"type": "ping"}),
            json!({"type": "new_kind", "x": 1}),
            json!(7),
        ] {
            assert!(matches!(Event::of(&other), Event::Other), "{other}");
        }
        let thinking = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hm"}});
        assert!(matches!(
            Event::of(&thinking),
            Event::ContentBlockDelta {
                delta: Delta::Other,
                ..
            }
        ));
    }

    /// The one-pass reading of delta events gives what the derived reading gives, for
    /// well-formed and odd events alike.
    #[test]
    fn delta_events_read_in_one_pass_as_the_derived_reading_does() {
        let deltas = [
            r#"{"type":"text_delta","text":"Hello"}"#,
            r#"{"type":"text_delta","text":"a \"quoted\" \u00e9 line\n"}"#,
            r#"{"text":"first","type":"text_delta"}"#,
            r#"{"type":"input_json_delta","partial_json":"{\"a\":"}"#,
            r#"{"type":"input_json_delta","partial_json":""}"#,
            r#"{"type":"thinking_delta","thinking":"hm"}"#,
            r#"{"type":"signature_delta","signature":"abc"}"#,
            r#"{"type":"text_delta"}"#,
            r#"{"type":"text_delta","text":7}"#,
            r#"{"type":"text_delta","text":null}"#,
            r#"{"type":"text_delta","text":"a","text":"b"}"#,
            r#"{"type":"text_delta","text":"a","partial_json":3}"#,
            r#"{"type":"input_json_delta","text":"x"}"#,
            r#"{"type":"thinking_delta","text":"x"}"#,
            r#"{"type":"thinking_delta","text":5}"#,
            r#"{"type":7,"text":"x"}"#,
            r#"{"text":"x"}"#,
            r#"[]"#,
            r#"null"#,
        ];
        let indexes = ["0", "3", "-1", "\"2\"", "1.5", "null"];
        let mut n = 0;
        for d in deltas {
            for i in indexes {
                for event in [
                    format!(r#"{{"type":"content_block_delta","index":{i},"delta":{d}}}"#),
                    format!(r#"{{"index":{i},"delta":{d},"type":"content_block_delta"}}"#),
                    format!(r#"{{"type":"content_block_delta","delta":{d}}}"#),
                    format!(r#"{{"type":"content_block_delta","index":{i},"delta":{d},"x":[1]}}"#),
                    format!(r#"{{"type":"content_block_delta","type":"ping","delta":{d}}}"#),
                    format!(r#"{{"type":"content_block_start","index":{i},"delta":{d}}}"#),
                ] {
                    let fast = format!("{:?}", Event::read(event.as_bytes()));
                    let derived = format!("{:?}", Event::read_tagged(event.as_bytes()));
                    assert_eq!(fast, derived, "{event}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, deltas.len() * indexes.len() * 6);
        // The hot events do take the one pass.
        assert!(Event::read_delta(br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#).is_some());
    }

    #[test]
    fn usage_sums_the_prompt_saturating() {
        let u: Usage = serde_json::from_value(json!({"input_tokens": u64::MAX,
            "cache_read_input_tokens": 5, "output_tokens": 2}))
        .unwrap();
        assert_eq!((u.prompt(), u.output()), (u64::MAX, 2));
        let sse = Event::error("api_error", "x").to_sse();
        assert_eq!(
            &sse[..],
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n"
        );
    }
}
