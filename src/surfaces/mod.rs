//! API surfaces over the chat pivot: a client may call any surface on any model. When a
//! deployment's provider serves the surface itself (Anthropic for `/v1/messages`), the
//! request goes as it is; otherwise it goes as the OpenAI chat request this module
//! translates it to (the *pivot*, which every provider serves), and the chat answer comes
//! back translated to the surface. Each surface is one module of pure translations:
//!
//! - [`messages`]: Anthropic Messages ⟷ chat.
//! - [`responses`]: OpenAI's Responses API ⟷ chat.
//!
//! The matrix surface × provider is thus one inbound adapter per surface (here) and one
//! outbound adapter per provider (`crate::providers`), composed by the call core.

pub mod messages;
pub mod responses;
#[cfg(test)]
mod snapshot_tests;

use crate::canonical::chunk::ChatChunk;
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use bytes::Bytes;
pub use responses::{Echo, NO_ECHO};
use serde_json::Value;

/// Turns an OpenAI chat chunk stream into a surface's events.
pub trait ChunkTranslator: Send {
    /// The events for one chunk (`None`: the chat stream's `[DONE]`).
    fn chunk(&mut self, chunk: Option<&ChatChunk>) -> Vec<Bytes>;
    /// The event that tells the client the upstream broke off.
    fn cut(&mut self, message: &str) -> Vec<Bytes>;
    /// Whether the surface's stream is complete.
    fn ended(&self) -> bool;
    /// The object the stream built, once complete (the Response to store).
    fn final_object(&self) -> Option<Value> {
        None
    }
}

/// The chat request for a surface request (`None`: chat itself, or a surface with no
/// chat form such as embeddings). A Responses request's `input` must already hold any
/// previous response's history (see [`responses::expand`]).
pub fn pivot(req: &AiRequest) -> Result<Option<AiRequest>, GatewayError> {
    let chat = match req.endpoint {
        Endpoint::Messages => messages::to_chat(req)?,
        Endpoint::Responses => responses::to_chat(req)?,
        _ => return Ok(None),
    };
    AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(chat)).map(Some)
}

/// A whole answer as the surface's client sees it.
pub struct SurfaceAnswer {
    pub status: u16,
    pub body: Bytes,
    /// The Response object to store (Responses API successes).
    pub object: Option<Value>,
}

/// A whole chat answer (the provider's, in the OpenAI dialect) as the surface's client
/// sees it; `echo` is the client's request body (the Responses API echoes it).
pub fn answer(
    endpoint: Endpoint,
    echo: &Echo,
    status: u16,
    chat: Bytes,
    model: &str,
) -> SurfaceAnswer {
    let plain = |status, body| SurfaceAnswer {
        status,
        body,
        object: None,
    };
    let parsed = serde_json::from_slice::<Value>(&chat);
    match (endpoint, parsed) {
        (Endpoint::Messages, _) if status >= 400 => {
            plain(status, messages::error_from_openai(status, &chat))
        }
        (Endpoint::Messages, Ok(c)) => plain(
            status,
            Bytes::from(serde_json::to_vec(&messages::from_chat(&c, model)).unwrap_or_default()),
        ),
        (Endpoint::Messages, Err(_)) => plain(
            502,
            crate::errors::anthropic_error_body(
                "api_error",
                "The upstream sent an invalid response.",
            ),
        ),
        // Errors are already in OpenAI's shape, which the Responses API shares.
        (Endpoint::Responses, _) if status >= 400 => plain(status, chat),
        (Endpoint::Responses, Ok(c)) => {
            let r = responses::from_chat(&c, echo, &responses::new_id("resp_"), model, unix_now())
                .to_value();
            SurfaceAnswer {
                status,
                body: Bytes::from(r.to_string()),
                object: Some(r),
            }
        }
        (Endpoint::Responses, Err(_)) => plain(
            502,
            GatewayError::UpstreamProtocol("not a chat completion".into()).body(),
        ),
        _ => plain(status, chat),
    }
}

/// The stream translator of a surface for a chat stream (`None`: chat itself);
/// `input_tokens`: the prompt's estimate, which Messages streams report at their start
/// (Anthropic sends the input count in `message_start`; clients showing context read it
/// there), corrected by the provider's count at their end.
pub fn stream(
    endpoint: Endpoint,
    echo: &Echo,
    model: &str,
    input_tokens: u64,
) -> Option<Box<dyn ChunkTranslator>> {
    match endpoint {
        Endpoint::Messages => Some(Box::new(messages::ChunkStream::new(model, input_tokens))),
        Endpoint::Responses => Some(Box::new(responses::stream::ResponseStream::new(
            echo,
            &responses::new_id("resp_"),
            model,
            unix_now(),
        ))),
        _ => None,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Each written SSE event as (its `event:` name, its data): for the surfaces' tests.
#[cfg(test)]
pub(crate) fn parse_events(out: &[Bytes]) -> Vec<(String, Value)> {
    out.iter()
        .map(|e| {
            let text = std::str::from_utf8(e).expect("UTF-8 event");
            let (head, data) = text.split_once("\ndata: ").expect("an event with data");
            let name = head.trim_start_matches("event: ").to_string();
            (
                name,
                serde_json::from_str(data.trim_end()).expect("JSON data"),
            )
        })
        .collect()
}
