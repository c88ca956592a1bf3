//! Pass-through routes (`routes:` in the config, e.g. imported APISIX routes without
//! ai-proxy): a request for a path that no OpenAI API endpoint serves, but a route does, is
//! authenticated when the route asks for it, admitted under the consumer's and the route's
//! limits (the same admission call as AI requests), and then proxied as it is by Pingora's
//! own proxy flow: [`peer`] gives `upstream_peer` the node picked by weight, and the
//! response streams back untouched but for the quota headers.

use super::RequestCtx;
use crate::config::key::KeyContext;
use crate::config::schema::PassHost;
use crate::errors::GatewayError;
use crate::gateway::admit;
use crate::limits::admission::{Admitted, Check, Denied};
use crate::metrics::Outcome;
use crate::runtime::PassRoute;
use crate::runtime::Runtime;
use crate::state::AppState;
use crate::url::BaseUrl;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

/// Where a pass-through request goes.
pub struct Pass {
    pub node: BaseUrl,
    pub addr: std::net::SocketAddr,
    pub pass_host: PassHost,
    pub hide_credentials: bool,
    pub rewrite: Option<std::sync::Arc<crate::runtime::pass::Rewrite>>,
}

/// Admit a request for `route` and pick its node; `ctx.pass` is set when it may go.
pub async fn prepare(
    state: &AppState,
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &PassRoute,
) -> Result<(), GatewayError> {
    ctx.endpoint = "passthrough";
    ctx.model = Some(route.name.clone());
    if let Some(r) = &route.restriction {
        r.check(ctx.consumer.as_deref())?;
    }
    let node = route
        .pick()
        .ok_or_else(|| GatewayError::NoDeployment(route.name.to_string()))?
        .clone();
    // Nodes are addresses, or names resolved by the gateway's cached async resolver
    // (never a blocking lookup on the proxy's threads).
    let addr = crate::dns::lookup(&node.host, node.port)
        .await
        .ok()
        .and_then(|a| a.first().copied())
        .ok_or_else(|| {
            GatewayError::UpstreamUnavailable(format!("cannot resolve {}", node.host))
        })?;
    admit_plain(state, rt, session, ctx, &route.name, &route.limits).await?;
    ctx.pass = Some(Pass {
        node,
        addr,
        pass_host: route.pass_host,
        hide_credentials: route.hide_credentials,
        rewrite: route.rewrite.clone(),
    });
    Ok(())
}

/// Admit a request that carries no tokens (a pass-through request, a stored-response
/// read) under the consumer's limits and `extra` rules, as `model` for key templates.
pub async fn admit_plain(
    state: &AppState,
    rt: &Runtime,
    session: &Session,
    ctx: &mut RequestCtx,
    model: &str,
    extra: &[crate::limits::rules::Rule],
) -> Result<(), GatewayError> {
    let consumer_rules = ctx
        .consumer
        .as_deref()
        .map_or(&[][..], |c| rt.consumer_limits(c));
    let remote = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    let cx = KeyContext {
        consumer: ctx.consumer.as_deref(),
        remote_addr: remote.as_deref(),
        model,
        headers: &session.req_header().headers,
    };
    let required: Vec<Check<'_>> =
        crate::limits::admission::checks(consumer_rules.iter().chain(extra), &cx)
            .map_err(admit::unresolved)?;
    let result = state
        .limiter
        .admit(&required, &[], Default::default())
        .await;
    match result {
        Ok(Admitted { ticket, .. }) => {
            for c in &required {
                state
                    .metrics
                    .limit_decision(c.rule.algorithm(), c.rule.scope, Outcome::Admitted);
            }
            ctx.quotas.extend(ticket.quotas.iter().cloned());
            ctx.tickets.push(ticket);
        }
        Err(Denied::Unavailable(why)) => return Err(GatewayError::LimiterUnavailable(why)),
        Err(Denied::Limited(r) | Denied::NoAlternative(r, _)) => {
            let check = required.iter().find(|c| c.rule.id == r.rule);
            if let Some(c) = check {
                state
                    .metrics
                    .limit_decision(c.rule.algorithm(), c.rule.scope, Outcome::Rejected);
            }
            let limit = r.rule.clone();
            return Err(admit::rejected(r, limit, check.map(|c| &c.rule.answer)));
        }
    }
    let delay = admit::delay_ms(ctx);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(())
}

/// The upstream peer of an admitted pass-through request.
pub fn peer(pass: &Pass) -> Box<HttpPeer> {
    let n = &pass.node;
    Box::new(HttpPeer::new(pass.addr, n.tls, n.host.clone()))
}

/// The headers a consumer's credential travels in ([`super::auth`] reads each).
pub const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "apikey"];

/// The request as it goes upstream: the node's `Host` with `pass_host: node`; without
/// the consumer's credentials with `hide_credentials`; then the route's `rewrite` (path,
/// method, host, headers: add, set, remove, as APISIX's proxy-rewrite orders them).
pub fn request_headers(pass: &Pass, req: &mut pingora::http::RequestHeader) {
    if pass.pass_host == PassHost::Node {
        let _ = req.insert_header("host", pass.node.authority.as_str());
    }
    if pass.hide_credentials {
        for h in CREDENTIAL_HEADERS {
            req.remove_header(h);
        }
    }
    let Some(rw) = &pass.rewrite else {
        return;
    };
    if let Some(pq) = rw.path_and_query(req.uri.path(), req.uri.query()) {
        // Validated as a path (or built from one by a regex): a failure keeps the path.
        if let Ok(uri) = http::Uri::try_from(pq) {
            req.set_uri(uri);
        }
    }
    if let Some(m) = rw.method.as_deref() {
        if let Ok(m) = http::Method::from_bytes(m.as_bytes()) {
            req.set_method(m);
        }
    }
    if let Some(host) = &rw.host {
        let _ = req.insert_header("host", host.as_str());
    }
    for (k, v) in &rw.headers.add {
        let _ = req.append_header(k.clone(), v.as_str());
    }
    for (k, v) in &rw.headers.set {
        let _ = req.insert_header(k.clone(), v.as_str());
    }
    for k in &rw.headers.remove {
        req.remove_header(k.as_str());
    }
}
