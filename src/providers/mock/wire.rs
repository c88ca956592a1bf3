//! The mock's answers as OpenAI writes them: chat and text completions, their stream
//! chunks (with `system_fingerprint` and the `"usage": null` an upstream asked for usage
//! sends), embeddings. Typed values, fields in the order OpenAI's own answers have them
//! (alphabetical, as a JSON map writes them), plus the mock's `mock` field that lets a test
//! check what reached the provider.

use crate::canonical::chunk::{ChunkChoice, ChunkDelta, ChunkFunction, ChunkToolCall};
use serde::Serialize;
use std::borrow::Cow;

/// Every answer's fingerprint.
const FINGERPRINT: &str = "fp_mock";

/// Token counts of an answer.
#[derive(Serialize)]
pub struct Usage {
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            completion_tokens: completion,
            prompt_tokens: prompt,
            total_tokens: prompt.saturating_add(completion),
        }
    }
}

/// What the mock saw of the prompt.
#[derive(Serialize)]
pub struct MockInfo {
    pub prompt_bytes: usize,
    pub prompt_sha256: String,
}

/// What every answer and chunk of one call shares.
pub struct Head<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
}

/// A whole answer: a chat or text completion with its one choice.
#[derive(Serialize)]
pub struct Answer<'a, C> {
    choices: [C; 1],
    created: u64,
    id: &'a str,
    mock: MockInfo,
    model: &'a str,
    object: &'static str,
    system_fingerprint: &'static str,
    usage: Usage,
}

impl<'a, C> Answer<'a, C> {
    pub fn new(head: Head<'a>, choice: C, usage: Usage, mock: MockInfo) -> Answer<'a, C> {
        Answer {
            choices: [choice],
            created: head.created,
            id: head.id,
            mock,
            model: head.model,
            object: head.object,
            system_fingerprint: FINGERPRINT,
            usage,
        }
    }
}

/// A chat completion's choice.
#[derive(Serialize)]
pub struct ChatChoice<'a> {
    pub finish_reason: &'static str,
    pub index: u32,
    pub logprobs: Option<()>,
    pub message: Message<'a>,
}

/// The assistant's message: text, or a tool call.
#[derive(Serialize)]
pub struct Message<'a> {
    annotations: [(); 0],
    content: Option<&'a str>,
    refusal: Option<()>,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

impl<'a> Message<'a> {
    pub fn text(content: &'a str) -> Message<'a> {
        Message {
            annotations: [],
            content: Some(content),
            refusal: None,
            role: "assistant",
            tool_calls: None,
        }
    }

    pub fn call(id: &'a str, name: &'a str, arguments: &'a str) -> Message<'a> {
        Message {
            annotations: [],
            content: None,
            refusal: None,
            role: "assistant",
            tool_calls: Some([ToolCall {
                function: Function { arguments, name },
                id,
                kind: "function",
            }]),
        }
    }
}

#[derive(Serialize)]
struct ToolCall<'a> {
    function: Function<'a>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Function<'a> {
    arguments: &'a str,
    name: &'a str,
}

/// A text completion's choice (whole or streamed: `finish_reason` is null until the end).
#[derive(Serialize)]
pub struct TextChoice<'a> {
    pub finish_reason: Option<&'static str>,
    pub index: u32,
    pub logprobs: Option<()>,
    pub text: &'a str,
}

/// A stream chunk: one choice, or none and the usage (the last chunk).
#[derive(Serialize)]
pub struct Chunk<'a, C> {
    choices: C,
    created: u64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    system_fingerprint: &'static str,
    usage: Option<Usage>,
}

impl<'a> Head<'a> {
    /// A chunk of `choice`.
    pub fn chunk<C: Serialize>(&self, choice: C) -> Chunk<'a, [C; 1]> {
        self.chunk_of([choice], None)
    }

    /// The last chunk: no choice, the usage.
    pub fn last(&self, usage: Usage) -> Chunk<'a, [(); 0]> {
        self.chunk_of([], Some(usage))
    }

    fn chunk_of<C>(&self, choices: C, usage: Option<Usage>) -> Chunk<'a, C> {
        Chunk {
            choices,
            created: self.created,
            id: self.id,
            model: self.model,
            object: self.object,
            system_fingerprint: FINGERPRINT,
            usage,
        }
    }
}

/// A chat chunk's choice with `delta`.
pub fn delta_choice(delta: ChunkDelta, finish: Option<&'static str>) -> ChunkChoice {
    ChunkChoice {
        delta,
        finish_reason: finish.map(Cow::Borrowed),
        index: 0,
        logprobs: (),
    }
}

/// The deltas that make a tool call: opened with its id and name, then its arguments in
/// two fragments (as providers split them).
pub fn call_deltas(id: &str, name: &str, arguments: &str) -> [ChunkDelta; 3] {
    let mut cut = arguments.len() / 2;
    while !arguments.is_char_boundary(cut) {
        cut -= 1;
    }
    let call = |function: ChunkFunction, opening: bool| ChunkDelta {
        tool_calls: vec![ChunkToolCall {
            function,
            id: opening.then(|| id.to_string()),
            index: 0,
            kind: opening.then_some(Cow::Borrowed("function")),
        }],
        ..ChunkDelta::default()
    };
    let part = |s: &str| {
        call(
            ChunkFunction {
                arguments: Some(s.to_string()),
                name: None,
            },
            false,
        )
    };
    [
        call(
            ChunkFunction {
                arguments: Some(String::new()),
                name: Some(name.to_string()),
            },
            true,
        ),
        part(&arguments[..cut]),
        part(&arguments[cut..]),
    ]
}

/// An embeddings answer.
#[derive(Serialize)]
pub struct Embeddings<'a> {
    pub data: Vec<Embedding>,
    pub mock: MockInfo,
    pub model: &'a str,
    pub object: &'static str,
    pub usage: EmbeddingUsage,
}

/// One input's vector: floats, or their little-endian bytes in base64.
#[derive(Serialize)]
pub struct Embedding {
    pub embedding: Vector,
    pub index: usize,
    pub object: &'static str,
}

/// The floats are the vector's `f32`s written as `f64`s (`-0.3890334963798523`).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Vector {
    Floats(Vec<f64>),
    Base64(String),
}

#[derive(Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}
