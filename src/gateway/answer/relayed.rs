//! What a stream has relayed of its answer, counted from the events themselves: the text
//! of chat chunks' deltas (content, reasoning, tool arguments, refusals), of Anthropic's
//! `content_block_delta` events and of the Responses API's `*.delta` events — only the
//! deltas, so nothing is counted twice. It stands in for the usage an answer never
//! reported (a client that left, an upstream that broke off, a provider that ignored its
//! cap): one token per four bytes, the gateway's estimate for prompts too. A chat stream
//! that goes past the cap a hard limit sent is ended there as a length limit
//! ([`note`], [`length_end`]); a whole answer past it is cut the same way
//! ([`cap_whole`]).

use crate::canonical::chunk::{ChatChunk, ChunkDelta};
use crate::providers::api::ChatEvent;
use bytes::Bytes;
use memchr::memmem;
use serde_json::Value;
use std::sync::{Arc, LazyLock};

/// Searchers built once: building one costs more than searching a short event.
fn finders(needles: &[&'static [u8]]) -> Vec<memmem::Finder<'static>> {
    needles.iter().map(|&n| memmem::Finder::new(n)).collect()
}

/// What tells the three kinds of event apart, then the fields each kind's text is in.
static KINDS: LazyLock<Vec<memmem::Finder<'static>>> = LazyLock::new(|| {
    finders(&[
        b"chat.completion.chunk",
        b"\"content_block_delta\"",
        b".delta\"",
    ])
});
static FIELDS: LazyLock<[Vec<memmem::Finder<'static>>; 3]> = LazyLock::new(|| {
    [
        finders(&[
            b"\"content\":\"",
            b"\"reasoning_content\":\"",
            b"\"reasoning\":\"",
            b"\"arguments\":\"",
            b"\"refusal\":\"",
        ]),
        finders(&[b"\"text\":\"", b"\"partial_json\":\"", b"\"thinking\":\""]),
        finders(&[b"\"delta\":\""]),
    ]
});

/// Text bytes of one event's deltas.
pub fn text_bytes(event: &[u8]) -> u64 {
    let Some(kind) = KINDS.iter().position(|k| k.find(event).is_some()) else {
        return 0;
    };
    FIELDS[kind]
        .iter()
        .flat_map(|f| f.find_iter(event).map(move |at| at + f.needle().len()))
        .map(|start| string_len(&event[start..]))
        .sum()
}

/// Text bytes of one event of a chat (or passed-through) stream.
pub fn event_text_bytes(event: &ChatEvent) -> u64 {
    match event {
        ChatEvent::Raw(b) => text_bytes(b),
        ChatEvent::Chunk(c) => c.text_bytes(),
        ChatEvent::Error(_) | ChatEvent::Done => 0,
    }
}

/// Bytes of a JSON string's body up to its closing quote (escapes counted as written).
fn string_len(s: &[u8]) -> u64 {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i as u64,
            _ => i += 1,
        }
    }
    s.len() as u64
}

/// Tokens for `bytes` of text (at least one when any was relayed).
pub fn tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// Count one upstream event's worth of relayed events into `ctx`: the estimate charged
/// for a stream that did not end whole, and the events that carried text (a lower bound
/// on the tokens: providers stream whole tokens, at least one in each such event).
/// Whether the stream is now past the cap it was sent (`choices` completions of
/// `completion_cap` tokens): the provider ignored it.
pub fn note(ctx: &mut crate::gateway::CallCtx, events: &[ChatEvent], choices: u64) -> bool {
    for e in events {
        let bytes = event_text_bytes(e);
        if bytes > 0 {
            ctx.relayed_tokens = ctx.relayed_tokens.saturating_add(tokens(bytes));
            ctx.relayed_events += 1;
            if ctx.relayed_events == 1 {
                ctx.trace_first_chunk();
            }
        }
    }
    ctx.completion_cap
        .is_some_and(|cap| ctx.relayed_events > cap.saturating_mul(choices))
}

/// The end of a chat stream at a length limit, sent in place of what an upstream relayed
/// past its cap.
pub fn length_end() -> Vec<ChatEvent> {
    vec![
        ChatEvent::Chunk(ChatChunk::delta(
            &Arc::from("chatcmpl-capped"),
            0,
            &Arc::from(""),
            ChunkDelta::default(),
            Some("length"),
        )),
        ChatEvent::Done,
    ]
}

/// A whole chat or completions answer whose completion is past the cap it was sent
/// (`cap` tokens per choice: the provider ignored it), ended as at a length limit: each
/// choice's text cut to about `cap` tokens (four bytes each), `finish_reason: "length"`,
/// and the usage what was relayed. `None`: within the cap, or not such an answer.
pub fn cap_whole(body: &[u8], cap: Option<u64>) -> Option<Bytes> {
    let cap = cap?;
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let choices = v["choices"].as_array_mut()?;
    let allowed = cap.saturating_mul(choices.len().max(1) as u64);
    if v["usage"]["completion_tokens"].as_u64()? <= allowed {
        return None;
    }
    let keep = usize::try_from(cap.saturating_mul(4)).unwrap_or(usize::MAX);
    let cut = |text: Option<&mut Value>| {
        if let Some(text) = text {
            let Some(t) = text.as_str() else { return };
            let mut end = t.len().min(keep);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            *text = Value::String(t[..end].to_string());
        }
    };
    for c in v["choices"].as_array_mut()? {
        cut(c.get_mut("message").and_then(|m| m.get_mut("content")));
        cut(c.get_mut("text"));
        c["finish_reason"] = "length".into();
    }
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    v["usage"]["completion_tokens"] = allowed.into();
    v["usage"]["total_tokens"] = prompt.saturating_add(allowed).into();
    Some(Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_deltas_only() {
        let chat = br#"data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"hello \"x\""}}]}"#;
        assert_eq!(text_bytes(chat), 11);
        let call = br#"data: {"object":"chat.completion.chunk","choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(text_bytes(call), 9);
        let anthropic = br#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}"#;
        assert_eq!(text_bytes(anthropic), 8);
        let responses = br#"data: {"type":"response.output_text.delta","delta":"abc"}"#;
        assert_eq!(text_bytes(responses), 3);
        // The closing events repeat the text: not counted.
        let done = br#"data: {"type":"response.output_text.done","text":"abc"}"#;
        assert_eq!(text_bytes(done), 0);
        assert_eq!(text_bytes(b"data: [DONE]"), 0);
        assert_eq!((tokens(0), tokens(1), tokens(8)), (0, 1, 2));
    }

    #[test]
    fn a_typed_chunk_counts_as_its_written_form() {
        let chunk = ChatChunk::read(
            br#"{"object": "chat.completion.chunk", "choices": [
            {"delta": {"content": "hello", "reasoning_content": "why",
                "tool_calls": [{"function": {"arguments": "{}"}}]}}]}"#,
        )
        .unwrap();
        let written = ChatEvent::Chunk(chunk.clone()).to_sse();
        assert_eq!(chunk.text_bytes(), 10);
        assert_eq!(text_bytes(&written), 10);
        assert_eq!(event_text_bytes(&ChatEvent::Done), 0);
    }

    #[test]
    fn whole_answers_past_their_cap_end_as_a_length_limit() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"abcdefghijkl"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":9,"total_tokens":11}}"#;
        let v: Value = serde_json::from_slice(&cap_whole(body, Some(2)).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "abcdefgh");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            (
                v["usage"]["completion_tokens"].as_u64(),
                v["usage"]["total_tokens"].as_u64()
            ),
            (Some(2), Some(4))
        );
        assert!(cap_whole(body, Some(9)).is_none());
        assert!(cap_whole(body, None).is_none());
    }
}
