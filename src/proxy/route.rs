//! Route phase: which API a request is for, and which model route serves it. Also answers
//! the model listing endpoints, which need no upstream.

use super::body;
use super::{auth, passthrough, respond, stream, RequestCtx};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use crate::gateway::admit;
use crate::runtime::{Matched, ModelRoute, Runtime};
use crate::state::AppState;
use percent_encoding::percent_decode_str;
use pingora::proxy::Session;
use serde_json::json;

/// Created timestamp reported for configured models.
const MODEL_CREATED: u64 = 1_700_000_000;

/// The APIs of the proxy listener.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiRoute {
    Ai(Endpoint),
    ListModels,
    GetModel(String),
    /// `POST /v1/messages/count_tokens`: an estimate, for any model.
    CountTokens,
    /// A stored Responses API response: retrieve, delete, input items.
    StoredResponse(super::responses::Route),
    /// The Files and Batches API.
    Batch(super::batches::Route),
    /// `GET /v1/me`: the caller's own limits and what is left of them.
    Me,
}

impl ApiRoute {
    pub fn parse(method: &http::Method, path: &str) -> Result<ApiRoute, GatewayError> {
        let trimmed = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let get = method == http::Method::GET;
        let post = method == http::Method::POST;
        if let Some(b) = super::batches::Route::parse(method, trimmed) {
            return Ok(ApiRoute::Batch(b));
        }
        if let Some(r) = super::responses::Route::parse(method, trimmed) {
            return Ok(ApiRoute::StoredResponse(r));
        }
        let route = match trimmed {
            "/v1/chat/completions" if post => Some(ApiRoute::Ai(Endpoint::ChatCompletions)),
            "/v1/completions" if post => Some(ApiRoute::Ai(Endpoint::Completions)),
            "/v1/embeddings" if post => Some(ApiRoute::Ai(Endpoint::Embeddings)),
            "/v1/messages" if post => Some(ApiRoute::Ai(Endpoint::Messages)),
            "/v1/messages/count_tokens" if post => Some(ApiRoute::CountTokens),
            "/v1/responses" if post => Some(ApiRoute::Ai(Endpoint::Responses)),
            "/v1/models" if get => Some(ApiRoute::ListModels),
            "/v1/me" if get => Some(ApiRoute::Me),
            p if get => p
                .strip_prefix("/v1/models/")
                .filter(|id| !id.is_empty())
                .map(|id| {
                    ApiRoute::GetModel(percent_decode_str(id).decode_utf8_lossy().into_owned())
                }),
            _ => None,
        };
        route.ok_or_else(|| GatewayError::UnknownRoute {
            method: method.to_string(),
            path: path.to_string(),
        })
    }

    /// Bounded endpoint label.
    pub fn label(&self) -> &'static str {
        match self {
            ApiRoute::Ai(Endpoint::ChatCompletions) => "chat_completions",
            ApiRoute::Ai(Endpoint::Completions) => "completions",
            ApiRoute::Ai(Endpoint::Embeddings) => "embeddings",
            ApiRoute::Ai(Endpoint::Messages) => "messages",
            ApiRoute::Ai(Endpoint::Responses) => "responses",
            ApiRoute::ListModels | ApiRoute::GetModel(_) => "models",
            // Anthropic's API: its errors come in Anthropic's shape.
            ApiRoute::CountTokens => "messages",
            ApiRoute::Me => "me",
            ApiRoute::StoredResponse(_) => "responses",
            ApiRoute::Batch(b) => b.label(),
        }
    }

    /// The route's path template (`http.route` in traces).
    pub fn template(&self) -> &'static str {
        match self {
            ApiRoute::Ai(e) => e.route(),
            ApiRoute::ListModels => "/v1/models",
            ApiRoute::GetModel(_) => "/v1/models/{model}",
            ApiRoute::CountTokens => "/v1/messages/count_tokens",
            ApiRoute::Me => "/v1/me",
            ApiRoute::StoredResponse(super::responses::Route::InputItems(_)) => {
                "/v1/responses/{response_id}/input_items"
            }
            ApiRoute::StoredResponse(_) => "/v1/responses/{response_id}",
            ApiRoute::Batch(b) => b.template(),
        }
    }
}

/// Serve one request through every phase.
pub async fn serve(
    state: &AppState,
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let encoded_slash = normalize_path(session)?;
    // The endpoint is known before auth so that even a 401 comes in its API's shape.
    let header = session.req_header();
    let api = ApiRoute::parse(&header.method, header.uri.path());
    let host = header
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .or(header.uri.host());
    // A pass-through route serves what the OpenAI API does not, and also an API path it
    // names exactly (as APISIX prefers the exact route). A prefix route (`/v1/*`, `/*`)
    // gives way to the gateway's own API when the config serves models by name — their
    // endpoints are the more specific routes — and receives those paths when it serves
    // none (it fronts an OpenAI-compatible server). AI routes (models at their own paths)
    // match the same way.
    let matched = rt
        .route_match(&header.method, host, header.uri.path())
        .filter(|(_, exact)| api.is_err() || *exact || !rt.serves_models());
    if encoded_slash && (matched.is_some() || api.is_err()) {
        return Err(path_error(super::path::PathError::EncodedSlash));
    }
    match matched {
        Some((Matched::Pass(r), _)) => {
            if let Some(cors) = &r.cors {
                let header = session.req_header();
                let text = |n: &str| header.headers.get(n).and_then(|v| v.to_str().ok());
                ctx.cors = crate::runtime::pass::cors_headers(
                    cors,
                    text("origin"),
                    text("access-control-request-headers"),
                );
                // A preflight is answered at once, before auth and limits (APISIX's cors
                // runs first and ends OPTIONS with 200).
                if header.method == http::Method::OPTIONS {
                    ctx.endpoint = "passthrough";
                    ctx.model = Some(r.name.clone());
                    let h = respond::header(200, "text/plain", ctx);
                    respond::full(session, ctx, h, bytes::Bytes::new()).await;
                    return Ok(());
                }
            }
            if r.auth {
                ctx.consumer = auth::authenticate(state, session, rt)?;
            }
            return passthrough::prepare(state, rt, session, ctx, r).await;
        }
        Some((Matched::Ai(route), _)) => {
            ctx.endpoint = "chat_completions";
            if route.auth {
                ctx.consumer = auth::authenticate(state, session, rt)?;
            }
            let (endpoint, raw) = super::ai_route::read(rt, session).await?;
            ctx.endpoint = ApiRoute::Ai(endpoint).label();
            let raw = super::ai_route::with_route_model(route, raw)?;
            return serve_ai(state, rt, session, ctx, endpoint, raw, Some(route)).await;
        }
        None => {}
    }
    if let Ok(a) = &api {
        ctx.endpoint = a.label();
        ctx.route = Some(a.template());
    }
    ctx.consumer = auth::authenticate(state, session, rt)?;
    let api = api?;
    match api {
        ApiRoute::ListModels => {
            let data: Vec<_> = rt
                .listed_models
                .iter()
                .filter_map(|name| rt.model(name).map(|m| (name, m)))
                // A consumer sees only the models it may use.
                .filter(|(name, _)| rt.consumer_may_use(ctx.consumer.as_deref(), name))
                .filter(|(_, m)| {
                    m.restriction
                        .as_ref()
                        .is_none_or(|r| r.check(ctx.consumer.as_deref()).is_ok())
                })
                .map(|(name, m)| model_object(name, &m.owned_by))
                .collect();
            respond::json(session, ctx, &json!({"object": "list", "data": data})).await;
        }
        ApiRoute::GetModel(id) => {
            let m = rt
                .model(&id)
                .filter(|m| !m.deployments.is_empty())
                .filter(|m| rt.consumer_may_use(ctx.consumer.as_deref(), &m.name))
                .ok_or_else(|| GatewayError::ModelNotFound(id.clone()))?;
            // As asked: an alias or a name a pattern matched is a model of its own.
            respond::json(session, ctx, &model_object(&id, &m.owned_by)).await;
        }
        // Boxed (rare paths): their state does not size every request's future.
        ApiRoute::Batch(b) => Box::pin(super::batches::serve(state, session, ctx, b)).await?,
        ApiRoute::StoredResponse(r) => {
            Box::pin(super::responses::serve(state, session, ctx, r)).await?
        }
        ApiRoute::CountTokens => {
            let raw = body::read_body(session, rt.config.server.max_body_bytes).await?;
            let body: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}"), None))?;
            let model = body["model"].as_str().unwrap_or_default();
            rt.model(model)
                .filter(|m| !m.deployments.is_empty())
                .ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))?;
            let tokens = crate::surfaces::messages::count_tokens(&body);
            respond::json(session, ctx, &json!({"input_tokens": tokens})).await;
        }
        ApiRoute::Ai(endpoint) => {
            let raw = body::read_body(session, rt.config.server.max_body_bytes).await?;
            serve_ai(state, rt, session, ctx, endpoint, raw, None).await?;
        }
        ApiRoute::Me => {
            let Some(name) = ctx.consumer.clone() else {
                return Err(GatewayError::NotFound(
                    "no consumer: authentication is off".into(),
                ));
            };
            let rules: Vec<_> = rt.consumer_limits(&name).iter().collect();
            let limits = crate::gateway::usage::usages(state, &rules).await;
            let me = json!({"object": "consumer.usage", "consumer": &*name, "limits": limits});
            respond::json(session, ctx, &me).await;
        }
    }
    Ok(())
}

fn path_error(e: super::path::PathError) -> GatewayError {
    GatewayError::BadRequest {
        message: format!("Invalid request path: {}.", e.message()),
        param: None,
        code: Some("invalid_path"),
    }
}

/// Replace the request's path by its normal form ([`super::path`]), which routing, auth
/// and the upstream all see; refuse a path that cannot be made safe. Whether the path
/// keeps an encoded slash (which only the gateway's own API may take).
fn normalize_path(session: &mut Session) -> Result<bool, GatewayError> {
    use super::path::{normalize, PathError};
    let uri = &session.req_header().uri;
    let (normal, slash) = match normalize(uri.path(), false) {
        Ok(p) => (p, false),
        Err(PathError::EncodedSlash) => (normalize(uri.path(), true).map_err(path_error)?, true),
        Err(e) => return Err(path_error(e)),
    };
    let normal = match normal {
        std::borrow::Cow::Borrowed(_) => return Ok(slash),
        std::borrow::Cow::Owned(p) => p,
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| GatewayError::MalformedRequest("bad request path"))?,
    );
    let new = http::Uri::from_parts(parts)
        .map_err(|_| GatewayError::MalformedRequest("bad request path"))?;
    session.req_header_mut().set_uri(new);
    Ok(slash)
}

/// The client's `anthropic-beta` header: comma-separated beta names (at most 1 KiB of
/// letters, digits, `-`, `_`, `.`, `,` and spaces), passed on to Anthropic deployments.
fn anthropic_beta(session: &Session) -> Result<Option<http::HeaderValue>, GatewayError> {
    let Some(v) = session.req_header().headers.get("anthropic-beta") else {
        return Ok(None);
    };
    let ok = v.len() <= 1024
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_., ".contains(b));
    if !ok {
        return Err(GatewayError::invalid(
            "anthropic-beta: expected comma-separated beta names",
            "anthropic-beta",
        ));
    }
    Ok(Some(v.clone()))
}

/// An AI request: parsed, checked against its model route (`ai_route`, or the model its
/// body names), sent through the call core and relayed.
async fn serve_ai(
    state: &AppState,
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
    raw: bytes::Bytes,
    ai_route: Option<&ModelRoute>,
) -> Result<(), GatewayError> {
    let (mut req, prepared) = if endpoint == Endpoint::Responses {
        let (req, p) = Box::pin(super::responses::prepare(state, ctx, raw)).await?;
        (req, Some(p))
    } else {
        (AiRequest::parse(endpoint, raw)?, None)
    };
    if endpoint == Endpoint::Messages {
        req.anthropic_beta = anthropic_beta(session)?;
    }
    ctx.stream = req.stream;
    let route = match ai_route {
        Some(r) => r,
        None => rt
            .model(&req.model)
            .ok_or_else(|| GatewayError::ModelNotFound(req.model.clone()))?,
    };
    if !rt.consumer_may_use(ctx.consumer.as_deref(), &route.name) {
        return Err(GatewayError::ModelNotFound(req.model.clone()));
    }
    ctx.model = Some(route.name.clone());
    if let Some(r) = &route.restriction {
        r.check(ctx.consumer.as_deref())?;
    }
    if route.deployments.is_empty() {
        return Err(GatewayError::NoDeployment(route.name.to_string()));
    }
    // A surface some deployment does not serve itself goes there as chat.
    crate::gateway::answer::pivot(route, &mut req)?;
    let remote = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    // Cloned only when some limit key reads headers.
    let headers = if rt.limits_use_headers {
        session.req_header().headers.clone()
    } else {
        http::HeaderMap::new()
    };
    let subject = admit::Subject::new(ctx, rt, &req, remote, headers);
    // The call (admission, queueing, failover: about 11 KiB of future state) is boxed, so
    // that it is freed when the answer starts: what stays for a stream's whole life is
    // only the relay's state (see benches/streams.sh).
    let call = Box::pin(crate::gateway::call(state, rt, route, &req, ctx, &subject));
    let called = tokio::select! {
        biased;
        r = call => r,
        // The client left while its request waited (in a queue, or for the upstream's
        // answer): the call is dropped, and what it held is released when the request
        // is accounted.
        () = super::client_closed(session) => {
            ctx.status = 499;
            ctx.error = Some("client_disconnected");
            return Ok(());
        }
    };
    let (response, deployment) = called?;
    drop(subject);
    if deployment.provider.pass_ratelimit_headers {
        ctx.provider_headers = response.ratelimit_headers.clone();
    }
    let api = deployment.provider.api;
    stream::relay(state, session, ctx, &req, response, api, prepared.as_ref()).await;
    Ok(())
}

fn model_object(id: &str, owned_by: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": owned_by})
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn parses_routes() {
        assert_eq!(
            ApiRoute::parse(&Method::POST, "/v1/chat/completions").unwrap(),
            ApiRoute::Ai(Endpoint::ChatCompletions)
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/v1/models/").unwrap(),
            ApiRoute::ListModels
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/v1/models/meta-llama%2FLlama-3-8B").unwrap(),
            ApiRoute::GetModel("meta-llama/Llama-3-8B".into())
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/v1/models/meta-llama/Llama-3-8B").unwrap(),
            ApiRoute::GetModel("meta-llama/Llama-3-8B".into())
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/v1/models/ft:gpt-4o:org:x:abc").unwrap(),
            ApiRoute::GetModel("ft:gpt-4o:org:x:abc".into())
        );
        let e = ApiRoute::parse(&Method::GET, "/v1/chat/completions").unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(e.to_string(), "Invalid URL (GET /v1/chat/completions)");
        assert_eq!(
            ApiRoute::parse(&Method::POST, "/v1/responses").unwrap(),
            ApiRoute::Ai(Endpoint::Responses)
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/v1/responses/resp_1/input_items").unwrap(),
            ApiRoute::StoredResponse(super::super::responses::Route::InputItems("resp_1".into()))
        );
        assert!(ApiRoute::parse(&Method::PUT, "/v1/responses/resp_1").is_err());
    }
}
