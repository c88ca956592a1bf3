//! API surfaces over the chat pivot: a client may call any surface on any model. When a
//! deployment's provider serves the surface itself (Anthropic for `/v1/messages`), the
//! request goes as it is; otherwise it goes as the OpenAI chat request this module
//! translates it to (the *pivot*, which every provider serves), and the chat answer comes
//! back translated to the surface. Each surface is one module of pure translations:
//!
//! - [`messages`]: Anthropic Messages ⟷ chat.
//!
//! The matrix surface × provider is thus one inbound adapter per surface (here) and one
//! outbound adapter per provider (`crate::providers`), composed by the call core.

pub mod messages;

use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use bytes::Bytes;
use serde_json::Value;

/// Turns an OpenAI chat chunk stream into a surface's events.
pub trait ChunkTranslator: Send {
    /// The events for one chunk's `data` (`None`: the chat stream's `[DONE]`).
    fn chunk(&mut self, data: Option<&Value>) -> Vec<Bytes>;
    /// The event that tells the client the upstream broke off.
    fn cut(&mut self, message: &str) -> Vec<Bytes>;
    /// Whether the surface's stream is complete.
    fn ended(&self) -> bool;
}

/// The chat request for a surface request (`None`: chat itself, or a surface with no
/// chat form such as embeddings).
pub fn pivot(req: &AiRequest) -> Result<Option<AiRequest>, GatewayError> {
    let chat = match req.endpoint {
        Endpoint::Messages => messages::to_chat(&req.json()?)?,
        _ => return Ok(None),
    };
    AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(chat.to_string())).map(Some)
}

/// A whole chat answer (the provider's, in the OpenAI dialect) as the surface's client
/// sees it: status and JSON body.
pub fn answer(endpoint: Endpoint, status: u16, chat: Bytes, model: &str) -> (u16, Bytes) {
    match endpoint {
        Endpoint::Messages if status >= 400 => (status, messages::error_from_openai(status, &chat)),
        Endpoint::Messages => match serde_json::from_slice::<Value>(&chat) {
            Ok(c) => (
                status,
                Bytes::from(messages::from_chat(&c, model).to_string()),
            ),
            Err(_) => (
                502,
                crate::errors::anthropic_error_body(
                    "api_error",
                    "The upstream sent an invalid response.",
                ),
            ),
        },
        _ => (status, chat),
    }
}

/// The stream translator of a surface for a chat stream (`None`: chat itself).
pub fn stream(endpoint: Endpoint, model: &str) -> Option<Box<dyn ChunkTranslator>> {
    match endpoint {
        Endpoint::Messages => Some(Box::new(messages::ChunkStream::new(model))),
        _ => None,
    }
}
