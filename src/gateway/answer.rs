//! The answer phase of the call core: what an upstream's answer becomes for the client, in
//! one place for the proxy and the batch dispatcher.
//!
//! - [`pivot`]: which request a route's deployments get — the client's own, or for a
//!   surface (Messages, Responses) some deployment does not serve, also its chat form;
//! - [`surface_of`]: whether a deployment's answer goes back through that surface's
//!   translation (it was sent the chat form);
//! - [`whole`]: a whole answer in the provider's API turned into the client's (OpenAI's,
//!   or the surface's), with its usage read onto the call and, when the provider ignored
//!   the completion cap it was sent, ended as a length limit and charged what is relayed;
//! - [`stream`]: a streamed answer event by event ([`stream::StreamRelay`]), over the
//!   bounded event splitter of [`sse`];
//! - [`relayed`]: what a stream relayed, counted from its events, and its end at the cap;
//! - [`throttled_mid_stream`]: a stream the provider ended with its rate-limit error cools
//!   the deployment down as a 429 would.

pub mod relayed;
pub mod sse;
pub mod stream;

use super::upstream::{classify, Verdict};
use super::{CallCtx, GatewayState};
use crate::canonical::usage_read::{self, UsageRead};
use crate::canonical::{AiRequest, Endpoint, Usage};
use crate::errors::GatewayError;
use crate::providers::Provider;
use crate::providers::UpstreamErrorKind;
use crate::runtime::ModelRoute;
use crate::surfaces::Echo;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

/// A whole answer as the client gets it.
#[derive(Debug)]
pub struct Answered {
    pub status: u16,
    pub body: Bytes,
    /// The provider's own bytes, in the client's API (its content type applies).
    pub as_sent: bool,
    /// A Responses surface answer's Response object (to store).
    pub object: Option<Value>,
}

/// Give `req` its chat form when some deployment of `route` does not serve its surface
/// itself (those deployments are sent the chat form; the others the request as it is).
pub fn pivot(route: &ModelRoute, req: &mut AiRequest) -> Result<(), GatewayError> {
    if route
        .deployments
        .iter()
        .any(|d| !d.provider.api.serves(req.endpoint))
    {
        req.pivot = crate::surfaces::pivot(req)?.map(Box::new);
    }
    Ok(())
}

/// The surface whose translation a deployment's answer goes back through: the client's
/// endpoint when `provider` does not serve it (it was sent the chat form), else none.
pub fn surface_of(provider: &dyn Provider, endpoint: Endpoint) -> Option<Endpoint> {
    (!provider.serves(endpoint)).then_some(endpoint)
}

/// Whether `provider` answers a client of `endpoint` in that API itself (Messages to
/// Anthropic, Responses to OpenAI): its answer is passed through, not translated.
pub fn native(provider: &dyn Provider, endpoint: Endpoint) -> bool {
    provider.serves(endpoint) && matches!(endpoint, Endpoint::Messages | Endpoint::Responses)
}

/// A whole upstream answer (`status`, `body`, in `provider`'s API) as the client gets it:
/// OpenAI's shape, or `surface`'s (with `echo`, the Responses request's echoed fields).
/// Its usage is noted on `ctx`. `Err`: the body is no answer of the provider's API.
pub fn whole(
    ctx: &mut CallCtx,
    provider: &dyn Provider,
    surface: Option<Endpoint>,
    echo: &Echo,
    (status, body): (u16, Bytes),
    model: &str,
    created: u64,
) -> Result<Answered, GatewayError> {
    let mut answer = provider.whole_answer(status, body, model, created)?;
    if answer.status < 400 {
        let fields = answer_fields(&answer.body, ctx.traced());
        let mut usage = fields.usage;
        // Past the cap it was sent (its usage says so; only then is it read whole again):
        // ended as a length limit, charged what is relayed.
        let completion = usage.and_then(|u| u.completion_tokens);
        if matches!((ctx.completion_cap, completion), (Some(cap), Some(used)) if used > cap) {
            if let Some(capped) = relayed::cap_whole(&answer.body, ctx.completion_cap) {
                (answer.body, ctx.error) = (capped, Some("upstream_over_cap"));
                usage = answer_fields(&answer.body, false).usage;
            }
        }
        match usage {
            // Chat's three counts and nothing else (nor a price to bill by): its numeric
            // fields are the usage's own, derived where a `cost_expr` needs them.
            Some(u) if u.plain && ctx.price.is_none() && ctx.usage_fields.is_none() => {
                ctx.usage = Some(u.usage);
            }
            // Anything else is read as a tree, for every field it has.
            Some(_) | None if fields.has_usage => {
                if let Some(raw) = usage_tree(&answer.body) {
                    ctx.usage = Usage::from_openai(&raw);
                    ctx.note_usage_fields(&raw);
                }
            }
            _ => {}
        }
        if ctx.traced() {
            note_response(ctx, &answer.body);
        }
        // As the provider names it (a translated answer carries the public name).
        if answer.as_sent {
            ctx.note_response_model(fields.model.as_deref());
        }
    }
    Ok(match surface {
        Some(e) => {
            let a = crate::surfaces::answer(e, echo, answer.status, answer.body, model);
            Answered {
                status: a.status,
                body: a.body,
                as_sent: false,
                object: a.object,
            }
        }
        None => Answered {
            status: answer.status,
            body: answer.body,
            as_sent: answer.as_sent,
            object: None,
        },
    })
}

/// The provider ended a stream with its rate-limit error (the client got it as an error
/// event): the key is over its limits, as a 429 would say, so the deployment cools down as
/// after a 429 and the next requests go to another one.
pub fn throttled_mid_stream(state: &GatewayState, ctx: &mut CallCtx) {
    let provider = ctx.provider.as_deref().unwrap_or("none");
    state
        .metrics
        .upstream_errors
        .with_label_values(&[provider, UpstreamErrorKind::Status429.label()])
        .inc();
    ctx.error = Some("stream_throttled");
    if let (
        Some(d),
        Verdict::Failed {
            cooldown: Some((length, why)),
            ..
        },
    ) = (&ctx.deployment, classify(429, None))
    {
        state.cooldowns.start(d, length, why);
    }
}

/// An OpenAI-dialect answer's `usage` object and `model` (the provider's own name for the
/// model that answered), read without building the rest of the tree.
/// A traced answer's id and finish reasons (chat's `choices[].finish_reason`, Anthropic's
/// `stop_reason`, a Response's `status`).
fn note_response(ctx: &mut CallCtx, body: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Choice {
        finish_reason: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Only {
        id: Option<String>,
        #[serde(default)]
        choices: Vec<Choice>,
        stop_reason: Option<String>,
        status: Option<String>,
    }
    if let Ok(o) = serde_json::from_slice::<Only>(body) {
        ctx.note_response(o.id.as_deref(), o.stop_reason.or(o.status).as_deref());
        for c in o.choices {
            ctx.note_response(None, c.finish_reason.as_deref());
        }
    }
}

/// What the answer phase reads of an OpenAI-dialect answer.
struct AnswerFields {
    /// Its `usage`, when read straight from the bytes.
    usage: Option<UsageRead>,
    /// It has a `usage` object (read as a tree when `usage` is `None`).
    has_usage: bool,
    /// The provider's own name for the model that answered, when asked for.
    model: Option<String>,
}

/// An OpenAI-dialect answer's `usage` object and, when `want_model`, its `model`, read
/// without building the rest of the tree (nor, mostly, the usage's: see [`UsageRead`]).
fn answer_fields(body: &[u8], want_model: bool) -> AnswerFields {
    #[derive(serde::Deserialize)]
    struct Only<'a> {
        #[serde(borrow)]
        usage: Option<&'a RawValue>,
        #[serde(borrow)]
        model: Option<&'a RawValue>,
    }
    let Ok(o) = serde_json::from_slice::<Only<'_>>(body) else {
        return AnswerFields {
            usage: None,
            has_usage: false,
            model: None,
        };
    };
    let usage = o.usage.filter(|u| u.get().starts_with('{'));
    AnswerFields {
        usage: usage.and_then(|u| usage_read::read(u.get())),
        has_usage: usage.is_some(),
        model: o
            .model
            .filter(|_| want_model)
            .and_then(|m| serde_json::from_str(m.get()).ok()),
    }
}

/// An answer's `usage` object as a tree (every field of it, for `cost_expr` and prices).
fn usage_tree(body: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Only {
        usage: Option<Value>,
    }
    serde_json::from_slice::<Only>(body)
        .ok()?
        .usage
        .filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::ProviderKind;
    use crate::gateway::CallCtx;
    use crate::providers::registry;

    fn ctx() -> CallCtx {
        CallCtx::new("req-1".into())
    }

    /// A 200 answer `body` from `provider` as the client gets it.
    fn answer(
        c: &mut CallCtx,
        provider: &dyn Provider,
        surface: Option<Endpoint>,
        body: &'static str,
    ) -> Answered {
        whole(
            c,
            provider,
            surface,
            &crate::surfaces::NO_ECHO,
            (200, Bytes::from(body)),
            "m",
            1,
        )
        .unwrap()
    }

    #[test]
    fn usage_and_model_are_read_from_an_openai_answer() {
        let body = r#"{"id":"c","object":"chat.completion","model":"gpt-4o-2024","choices":[],
            "usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let mut c = ctx();
        let openai = registry(ProviderKind::Openai);
        let a = answer(&mut c, openai, None, body);
        assert_eq!((a.status, a.as_sent), (200, true));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 3));
    }

    #[test]
    fn an_answer_past_its_cap_is_ended_as_a_length_limit() {
        let body = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":10,"total_tokens":12}}"#;
        let mut c = ctx();
        c.completion_cap = Some(4);
        let openai = registry(ProviderKind::OpenaiCompatible);
        let a = answer(&mut c, openai, None, body);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["choices"][0]["message"]["content"], "aaaaaaaaaaaaaaaa");
        assert_eq!(c.usage.unwrap().completion_tokens, 4);
        assert_eq!(c.error, Some("upstream_over_cap"));
    }

    #[test]
    fn a_surface_gets_its_answer_from_the_chat_one() {
        let body = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
        let mut c = ctx();
        let chat = registry(ProviderKind::OpenaiCompatible);
        let surface = surface_of(chat, Endpoint::Messages);
        assert_eq!(surface, Some(Endpoint::Messages));
        let a = answer(&mut c, chat, surface, body);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["usage"]["output_tokens"], 1);
        assert!(!a.as_sent);
        assert_eq!(c.usage.unwrap().prompt_tokens, 2);
    }

    #[test]
    fn usage_from_json_body() {
        let body = br#"{"id":"x","model":"m-2024","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let f = answer_fields(body, true);
        assert_eq!(f.model.as_deref(), Some("m-2024"));
        assert!(f.has_usage && !f.usage.unwrap().plain);
        assert_eq!(
            f.usage.unwrap().usage,
            Usage {
                prompt_tokens: 8,
                completion_tokens: 0,
                total_tokens: Some(8)
            }
        );
        assert_eq!(answer_fields(body, false).model, None);
        let none = answer_fields(b"{}", true);
        assert!(none.usage.is_none() && !none.has_usage && none.model.is_none());
        // An odd `model` costs nothing of the usage.
        let odd = answer_fields(br#"{"model":5,"usage":{"prompt_tokens":1}}"#, true);
        assert_eq!(odd.usage.unwrap().usage.prompt_tokens, 1);
        assert!(odd.model.is_none());
    }

    #[test]
    fn usage_fields_are_kept_for_all_but_the_chat_trio() {
        let openai = registry(ProviderKind::OpenaiCompatible);
        let trio = r#"{"id":"c","model":"m","choices":[],
            "usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
        let mut c = ctx();
        answer(&mut c, openai, None, trio);
        assert_eq!(c.usage.unwrap().total(), 3);
        // Derived from the usage where a cost expression asks for them.
        assert!(c.usage_fields.is_none());
        let more = r#"{"id":"c","model":"m","choices":[],
            "usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3,"cost":0.5}}"#;
        let mut c = ctx();
        answer(&mut c, openai, None, more);
        assert_eq!(c.usage.unwrap().total(), 3);
        assert_eq!(c.usage_fields.as_ref().unwrap()["cost"], 0.5);
        // A usage the straight reading does not take is read as a tree.
        let dup = r#"{"id":"c","model":"m","choices":[],
            "usage":{"prompt_tokens":2,"prompt_tokens":4,"completion_tokens":1}}"#;
        let mut c = ctx();
        answer(&mut c, openai, None, dup);
        assert_eq!(c.usage.unwrap().prompt_tokens, 4);
    }
}
