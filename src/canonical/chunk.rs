//! The OpenAI `chat.completion.chunk` as a typed value: what the translating providers
//! (Anthropic, Gemini, Bedrock) write for an OpenAI client, and what the surfaces
//! (Messages, Responses) read — from those translations without a round trip through
//! text, and from an OpenAI-dialect upstream parsed once, straight from its bytes.
//!
//! Fields are declared in the order they are written (sorted, as the gateway writes every
//! JSON object it builds), so a typed chunk is byte for byte what a built tree was.
//! Reading is lenient (see [`super::lenient`]): a field of another type reads as absent.

use super::lenient;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// One `chat.completion.chunk` (or an error event of an OpenAI-dialect stream).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, deserialize_with = "lenient::count_or_zero")]
    pub created: u64,
    /// An error event's object (read only: translations write errors apart).
    #[serde(default, skip_serializing, deserialize_with = "object")]
    pub error: Option<Value>,
    #[serde(default, deserialize_with = "shared_str")]
    pub id: Arc<str>,
    #[serde(default, deserialize_with = "shared_str")]
    pub model: Arc<str>,
    #[serde(default, deserialize_with = "ignore", serialize_with = "chunk_object")]
    pub object: (),
    /// The provider's usage object, whole (its fields vary by provider; accounting and
    /// traces read it once per stream).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object"
    )]
    pub usage: Option<Value>,
}

/// What every chunk of one translated stream carries: its id, created time and model.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub id: Arc<str>,
    pub created: u64,
    pub model: Arc<str>,
}

impl Stamp {
    /// The stamp of a stream of `model` created at `created`, its id set once known.
    pub fn new(model: &str, created: u64) -> Stamp {
        Stamp {
            id: Arc::from(""),
            created,
            model: Arc::from(model),
        }
    }

    /// A chunk of one choice (index 0) adding `delta`.
    pub fn chunk(&self, delta: ChunkDelta, finish_reason: Option<&'static str>) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta, finish_reason)
    }
}

/// A choice's piece.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub delta: ChunkDelta,
    #[serde(default, deserialize_with = "static_str")]
    pub finish_reason: Option<Cow<'static, str>>,
    #[serde(default, deserialize_with = "lenient::count_or_zero")]
    pub index: u64,
    /// Always written `null`; not read.
    #[serde(default, deserialize_with = "ignore", serialize_with = "null")]
    pub logprobs: (),
}

/// What a choice adds: text, reasoning, tool-call pieces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkDelta {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub content: Option<String>,
    /// Reasoning under the name some servers use (vLLM, OpenRouter); read only.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub reasoning: Option<String>,
    /// Reasoning under DeepSeek's name, which the translations write.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub reasoning_content: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub refusal: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "static_str"
    )]
    pub role: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ChunkToolCall>,
}

/// A tool call's piece: the first names it, the next ones add to its arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkToolCall {
    #[serde(default)]
    pub function: ChunkFunction,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::count_or_zero")]
    pub index: u64,
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "static_str"
    )]
    pub kind: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkFunction {
    /// A piece of the arguments' JSON text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub arguments: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub name: Option<String>,
}

impl ChatChunk {
    /// A chunk of one choice (index 0) adding `delta`, for the stream `id` of `model`.
    pub fn delta(
        id: &Arc<str>,
        created: u64,
        model: &Arc<str>,
        delta: ChunkDelta,
        finish_reason: Option<&'static str>,
    ) -> ChatChunk {
        ChatChunk {
            choices: vec![ChunkChoice {
                delta,
                finish_reason: finish_reason.map(Cow::Borrowed),
                index: 0,
                logprobs: (),
            }],
            created,
            error: None,
            id: id.clone(),
            model: model.clone(),
            object: (),
            usage: None,
        }
    }

    /// The chunk read from an event's `data` (`None`: not a JSON object of this shape).
    pub fn read(data: &[u8]) -> Option<ChatChunk> {
        serde_json::from_slice(data).ok()
    }

    /// A chunk written as a tree (tests).
    #[cfg(test)]
    pub fn of(v: &Value) -> ChatChunk {
        ChatChunk::read(v.to_string().as_bytes()).expect("a chunk object")
    }

    /// The chunk as SSE (`data: …` and its blank line).
    pub fn to_sse(&self) -> Vec<u8> {
        super::write::sse(None, self)
    }

    /// Bytes of text its deltas carry (content, reasoning, refusal, tool-call arguments).
    pub fn text_bytes(&self) -> u64 {
        let len = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() as u64);
        self.choices
            .iter()
            .map(|c| {
                let d = &c.delta;
                let calls: u64 = d
                    .tool_calls
                    .iter()
                    .map(|t| len(&t.function.arguments))
                    .sum();
                len(&d.content)
                    + len(&d.reasoning_content)
                    + len(&d.reasoning)
                    + len(&d.refusal)
                    + calls
            })
            .sum()
    }
}

impl ChunkDelta {
    /// The first delta of a stream: the assistant's role and empty content.
    pub fn start() -> ChunkDelta {
        ChunkDelta {
            content: Some(String::new()),
            role: Some(Cow::Borrowed("assistant")),
            ..ChunkDelta::default()
        }
    }

    /// A piece of text.
    pub fn text(text: impl Into<String>) -> ChunkDelta {
        ChunkDelta {
            content: Some(text.into()),
            ..ChunkDelta::default()
        }
    }

    /// A piece of reasoning.
    pub fn reasoning(text: impl Into<String>) -> ChunkDelta {
        ChunkDelta {
            reasoning_content: Some(text.into()),
            ..ChunkDelta::default()
        }
    }

    /// The start of tool call `index`: its id, its function's name and `arguments`.
    pub fn call(index: u64, id: Option<String>, name: String, arguments: String) -> ChunkDelta {
        ChunkDelta {
            tool_calls: vec![ChunkToolCall {
                function: ChunkFunction {
                    arguments: Some(arguments),
                    name: Some(name),
                },
                id,
                index,
                kind: Some(Cow::Borrowed("function")),
            }],
            ..ChunkDelta::default()
        }
    }

    /// More of tool call `index`'s arguments.
    pub fn arguments(index: u64, arguments: impl Into<String>) -> ChunkDelta {
        ChunkDelta {
            tool_calls: vec![ChunkToolCall {
                function: ChunkFunction {
                    arguments: Some(arguments.into()),
                    name: None,
                },
                id: None,
                index,
                kind: None,
            }],
            ..ChunkDelta::default()
        }
    }
}

fn chunk_object<S: Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("chat.completion.chunk")
}

fn null<S: Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
    s.serialize_unit()
}

fn ignore<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| ())
}

fn shared_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    Ok(Arc::from(lenient::string(d)?.unwrap_or_default()))
}

fn static_str<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'static, str>>, D::Error> {
    Ok(lenient::string(d)?.map(Cow::Owned))
}

/// A JSON object, else absent.
fn object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(Value::is_object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_as_the_trees_did_and_reads_leniently() {
        let (id, model): (Arc<str>, Arc<str>) = ("c1".into(), "m".into());
        let c = ChatChunk::delta(&id, 9, &model, ChunkDelta::start(), None);
        assert_eq!(
            String::from_utf8(c.to_sse()).unwrap(),
            "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":9,\"id\":\"c1\",\"model\":\"m\",\"object\":\"chat.completion.chunk\"}\n\n"
        );
        let read = ChatChunk::read(br#"{"id":"x","choices":[{"index":"0","delta":{"content":null,"refusal":"no","tool_calls":[{"index":1,"id":7,"function":{"arguments":"{}"}}]},"finish_reason":"stop","logprobs":{"content":[]}}],"usage":{"prompt_tokens":1},"error":"flat","extra":[1]}"#).unwrap();
        let d = &read.choices[0].delta;
        assert_eq!(
            (d.content.as_deref(), d.refusal.as_deref()),
            (None, Some("no"))
        );
        assert_eq!(
            (d.tool_calls[0].index, d.tool_calls[0].id.as_deref()),
            (1, None)
        );
        assert_eq!(read.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(read.usage.as_ref().unwrap()["prompt_tokens"], 1);
        assert!(read.error.is_none());
        assert_eq!(read.text_bytes(), 4);
        assert!(ChatChunk::read(b"[1]").is_none());
    }
}
