//! The immutable runtime snapshot built from a validated [`Config`]. The request path
//! reads it through an `ArcSwap`, so a reload never blocks or tears a request: each request
//! keeps the snapshot it started with.

use crate::config::provider::{KindConfig, ProviderConfig};
use crate::config::schema::{Config, ProviderKind, RoutingStrategy, Secret};
use crate::limits::rules::Rule;
use crate::url::BaseUrl;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub mod pass;
mod routes;
mod target;
pub use routes::{Matched, UriMatcher};
pub use target::Target;

#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// What differs in its API (request mapping, headers, answer translation).
    pub api: &'static dyn crate::providers::Provider,
    pub target: Target,
    /// Azure: the classic API's `api-version` (unset: the `/openai/v1` API).
    pub api_version: Option<String>,
    /// Pass the provider's rate-limit headers on to clients.
    pub pass_ratelimit_headers: bool,
    /// Cloud credentials its requests are signed or authorised with (Bedrock, Vertex).
    pub credentials: Option<crate::providers::api::Credentials>,
}

/// One enabled deployment of a model.
#[derive(Debug)]
pub struct Deployment {
    /// Identity of the provider key behind it (`deployment:<provider>:<model>:<key digest>`):
    /// limit counters and cool-downs follow it across reloads.
    pub id: Arc<str>,
    pub provider: Arc<Provider>,
    /// Model name sent upstream.
    pub model: String,
    /// On an AI route or a pattern model without a configured model: the request's model
    /// goes upstream, less the pattern's text around its `*` (`trim`: bytes before, after).
    pub client_model: bool,
    pub trim: (usize, usize),
    /// Top-level body fields forced on every request (APISIX ai-proxy `options`).
    pub options: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    pub api_key: Option<Secret>,
    /// The provider key's own limits.
    pub limits: Vec<Rule>,
    /// With the model's fallback policy: higher first, then weighted round robin.
    pub priority: i64,
    pub weight: u32,
    /// USD per million tokens (the deployment's `price` over its model's), when both input
    /// and output are given.
    pub price: Option<crate::config::schema::EffectivePrice>,
}

#[derive(Debug)]
pub struct ModelRoute {
    pub name: Arc<str>,
    pub owned_by: String,
    /// Enabled deployments only; empty when every provider key is unset.
    pub deployments: Vec<Deployment>,
    pub limits: Vec<Rule>,
    /// Which consumers may use it.
    pub restriction: Option<crate::config::schema::ConsumerRestriction>,
    /// Served at its own paths (an APISIX AI route), not by name on the OpenAI API.
    pub route: Option<UriMatcher>,
    /// On an AI route: whether callers need a consumer key.
    pub auth: bool,
    /// APISIX ai-proxy-multi's choice and fallback between the deployments.
    pub fallback: Option<crate::config::schema::FallbackConfig>,
    next: AtomicUsize,
}

impl ModelRoute {
    /// With a fallback policy: every deployment in APISIX's order for one request —
    /// priorities from high to low, inside one a weighted round robin start followed by
    /// the rest of that priority (weight-0 deployments are never picked).
    pub fn fallback_order(&self) -> Vec<&Deployment> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let mut prios: Vec<i64> = self.deployments.iter().map(|d| d.priority).collect();
        prios.sort_unstable_by(|a, b| b.cmp(a));
        prios.dedup();
        let mut out = Vec::with_capacity(self.deployments.len());
        for p in prios {
            let group: Vec<&Deployment> = self
                .deployments
                .iter()
                .filter(|d| d.priority == p && d.weight > 0)
                .collect();
            let total: u64 = group.iter().map(|d| u64::from(d.weight)).sum();
            if total == 0 {
                continue;
            }
            let mut at = n % total;
            let start = group
                .iter()
                .position(|d| {
                    let w = u64::from(d.weight);
                    if at < w {
                        return true;
                    }
                    at -= w;
                    false
                })
                .unwrap_or(0);
            out.extend((0..group.len()).map(|i| group[(start + i) % group.len()]));
        }
        out
    }

    /// Whether the deployments span several priorities (APISIX's priority balancer).
    pub fn has_priorities(&self) -> bool {
        self.deployments
            .windows(2)
            .any(|w| w[0].priority != w[1].priority)
    }

    /// The deployments to try for one request, in order: at most `retries + 1`, each once.
    pub fn attempts(
        &self,
        strategy: RoutingStrategy,
        retries: u32,
    ) -> impl Iterator<Item = &Deployment> {
        let n = self.deployments.len();
        let start = match strategy {
            RoutingStrategy::RoundRobin if n > 1 => self.next.fetch_add(1, Ordering::Relaxed) % n,
            _ => 0,
        };
        let count = n.min(retries as usize + 1);
        (0..count).map(move |i| &self.deployments[(start + i) % n])
    }
}

/// A pass-through route, compiled.
#[derive(Debug)]
pub struct PassRoute {
    pub name: Arc<str>,
    matcher: UriMatcher,
    pub auth: bool,
    /// Strip the consumer's credential headers before the backend sees the request.
    pub hide_credentials: bool,
    pub nodes: Vec<(BaseUrl, u32)>,
    pub pass_host: crate::config::schema::PassHost,
    pub limits: Vec<Rule>,
    /// Which consumers may use it.
    pub restriction: Option<crate::config::schema::ConsumerRestriction>,
    /// What the backend receives instead of the client's path, host, method, headers.
    pub rewrite: Option<Arc<pass::Rewrite>>,
    /// Cross-origin answers for browsers.
    pub cors: Option<Arc<crate::config::schema::CorsConfig>>,
    next: AtomicUsize,
}

impl PassRoute {
    /// The next node by smooth weighted round robin over the total weight.
    pub fn pick(&self) -> Option<&BaseUrl> {
        let total: u64 = self.nodes.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut n = self.next.fetch_add(1, Ordering::Relaxed) as u64 % total;
        for (b, w) in &self.nodes {
            if n < u64::from(*w) {
                return Some(b);
            }
            n -= u64::from(*w);
        }
        None
    }
}

/// The snapshot.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    /// Increments on every successful reload.
    pub generation: u64,
    consumers: HashMap<[u8; 32], Arc<str>>,
    consumer_limits: HashMap<Arc<str>, Vec<Rule>>,
    /// The models each consumer with a `models` list may use.
    consumer_models: HashMap<Arc<str>, std::collections::HashSet<String>>,
    /// Some limit key reads request headers (so requests must keep a copy of theirs).
    pub limits_use_headers: bool,
    models: HashMap<String, ModelRoute>,
    /// Alias → model name.
    aliases: HashMap<String, String>,
    /// Pattern models (`openai/*`) in config order: (text before `*`, after, name).
    patterns: Vec<(String, String, String)>,
    /// Models with at least one enabled deployment, in config order.
    pub listed_models: Vec<Arc<str>>,
    routes: Vec<PassRoute>,
    /// Models served at their own paths, in config order.
    ai_routes: Vec<Arc<str>>,
    /// Every provider key of the config, masked in every byte read from an upstream.
    pub scrubber: Arc<crate::providers::scrub::Scrubber>,
}

impl Runtime {
    pub fn build(config: Config, generation: u64) -> Runtime {
        for w in crate::config::prices::spend_warnings(&config) {
            tracing::warn!("{w}");
        }
        let consumers = config
            .consumers
            .iter()
            .flat_map(|c| {
                let name: Arc<str> = c.name.as_str().into();
                let basic = c
                    .basic_auth
                    .iter()
                    .map(|b| basic_digest(&b.username, b.password.expose()));
                // Validation has checked every `sha256:` entry.
                c.keys
                    .iter()
                    .filter_map(|k| crate::config::digest::of_entry(k.expose()).ok())
                    .chain(basic)
                    .map(move |d| (d, name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Validation has sorted every provider's settings; one that still cannot be is
        // left out (logged), and its deployments with it.
        let typed: Vec<ProviderConfig> = config
            .providers
            .iter()
            .filter_map(|p| {
                ProviderConfig::from_spec(p, &p.name)
                    .map_err(|e| tracing::error!(provider = %p.name, "config: {e:?}"))
                    .ok()
            })
            .collect();
        let providers: HashMap<&str, Arc<Provider>> = typed
            .iter()
            .map(|p| {
                let api = crate::providers::registry(p.kind.kind());
                let target = Target::of(p, api);
                (
                    p.name.as_str(),
                    Arc::new(Provider {
                        name: p.name.as_str().into(),
                        kind: p.kind.kind(),
                        api,
                        target,
                        api_version: match &p.kind {
                            KindConfig::Azure { api_version } => api_version.clone(),
                            _ => None,
                        },
                        pass_ratelimit_headers: p.pass_ratelimit_headers,
                        // Validation has checked them; a failure here leaves the provider
                        // without credentials, and its upstream refuses it (logged).
                        credentials: api.credentials(p).unwrap_or_else(|e| {
                            tracing::error!(provider = %p.name, "credentials: {e}");
                            None
                        }),
                    }),
                )
            })
            .collect();
        let key_of: HashMap<&str, &Option<Secret>> = config
            .providers
            .iter()
            .map(|p| (p.name.as_str(), &p.api_key))
            .collect();
        let mut models = HashMap::new();
        let mut listed_models = Vec::new();
        let mut aliases = HashMap::new();
        let mut patterns = Vec::new();
        for m in &config.models {
            let pattern = m.name.split_once('*').filter(|_| m.route.is_none());
            let deployments: Vec<Deployment> = m
                .deployments
                .iter()
                .filter_map(|d| {
                    let provider = providers.get(d.provider.as_str())?.clone();
                    let api_key = d
                        .api_key
                        .clone()
                        .or_else(|| key_of.get(d.provider.as_str()).and_then(|k| (*k).clone()));
                    // A key that is present but empty (an unset `${VAR:-}`) switches it off.
                    if api_key.as_ref().is_some_and(Secret::is_empty) {
                        return None;
                    }
                    // On an AI route or a pattern without a model, the request's own goes
                    // upstream (a pattern's: the part its `*` stands for).
                    let client_model =
                        d.model.is_none() && (m.route.is_some() || pattern.is_some());
                    let trim = pattern.map_or((0, 0), |(a, b)| (a.len(), b.len()));
                    let model = d.model.clone().unwrap_or_else(|| m.name.clone());
                    // The provider key's identity: its limits follow the key, whichever
                    // public model routes to it (a digest prefix, never the key).
                    let key_id = api_key.as_ref().map_or_else(
                        || "nokey".to_string(),
                        |k| hex::encode(&Sha256::digest(k.expose().as_bytes())[..6]),
                    );
                    let scope = format!("deployment:{}:{model}:{key_id}", d.provider);
                    Some(Deployment {
                        id: scope.as_str().into(),
                        provider,
                        limits: Rule::compile_all(&scope, &d.limits),
                        model,
                        client_model,
                        trim,
                        options: (!d.options.is_empty()).then(|| Arc::new(d.options.clone())),
                        api_key,
                        priority: d.priority,
                        weight: d.weight,
                        price: crate::config::schema::Price::of(m.price.as_ref(), d.price.as_ref())
                            .and_then(|p| p.effective()),
                    })
                })
                .collect();
            let owned_by = m.owned_by.clone().unwrap_or_else(|| {
                deployments
                    .first()
                    .map(|d| d.provider.kind.as_str().to_string())
                    .unwrap_or_else(|| "ai-rate-limiter".into())
            });
            let name: Arc<str> = m.name.as_str().into();
            if !deployments.is_empty() && m.route.is_none() {
                listed_models.push(name.clone());
                listed_models.extend(m.aliases.iter().map(|a| Arc::from(a.as_str())));
            }
            for a in &m.aliases {
                aliases.insert(a.clone(), m.name.clone());
            }
            if let Some((before, after)) = pattern {
                patterns.push((before.to_string(), after.to_string(), m.name.clone()));
            }
            models.insert(
                m.name.clone(),
                ModelRoute {
                    limits: Rule::compile_all(&format!("model:{}", m.name), &m.limits),
                    name,
                    owned_by,
                    deployments,
                    restriction: m.consumer_restriction.clone(),
                    route: m
                        .route
                        .as_ref()
                        .map(|r| UriMatcher::new(&r.uris, &r.methods, &r.hosts)),
                    fallback: m.fallback.clone(),
                    auth: m.route.as_ref().is_none_or(|r| r.auth),
                    next: AtomicUsize::new(0),
                },
            );
        }
        let ai_routes: Vec<Arc<str>> = config
            .models
            .iter()
            .filter(|m| m.route.is_some())
            .map(|m| m.name.as_str().into())
            .collect();
        let consumer_limits: HashMap<Arc<str>, Vec<Rule>> = config
            .consumers
            .iter()
            .map(|c| {
                let rules = Rule::compile_all(&format!("consumer:{}", c.name), &c.limits);
                (c.name.as_str().into(), rules)
            })
            .collect();
        let consumer_models = config
            .consumers
            .iter()
            .filter(|c| !c.models.is_empty())
            .map(|c| (c.name.as_str().into(), c.models.iter().cloned().collect()))
            .collect();
        let routes: Vec<PassRoute> = config
            .routes
            .iter()
            .map(|r| PassRoute {
                name: r.name.as_str().into(),
                matcher: UriMatcher::new(&r.uris, &r.methods, &r.hosts),
                auth: r.auth,
                hide_credentials: r.hide_credentials,
                nodes: r
                    .upstream
                    .nodes
                    .iter()
                    .filter_map(|n| Some((BaseUrl::parse(&n.url).ok()?, n.weight)))
                    .collect(),
                pass_host: r.upstream.pass_host,
                limits: Rule::compile_all(&format!("route:{}", r.name), &r.limits),
                restriction: r.consumer_restriction.clone(),
                rewrite: r
                    .rewrite
                    .as_ref()
                    .map(|c| Arc::new(pass::Rewrite::compile(c))),
                cors: r.cors.clone().map(Arc::new),
                next: AtomicUsize::new(0),
            })
            .collect();
        let limits_use_headers = consumer_limits
            .values()
            .flatten()
            .chain(routes.iter().flat_map(|r| r.limits.iter()))
            .chain(models.values().flat_map(|m: &ModelRoute| {
                m.limits
                    .iter()
                    .chain(m.deployments.iter().flat_map(|d| d.limits.iter()))
            }))
            .any(Rule::uses_headers);
        let scrubber = Arc::new(crate::providers::scrub::Scrubber::new(
            typed
                .iter()
                .flat_map(ProviderConfig::secrets)
                .chain(
                    config
                        .models
                        .iter()
                        .flat_map(|m| m.deployments.iter())
                        .filter_map(|d| d.api_key.as_ref()),
                )
                .map(Secret::expose),
        ));
        Runtime {
            limits_use_headers,
            scrubber,
            config,
            generation,
            consumers,
            models,
            aliases,
            patterns,
            listed_models,
            consumer_limits,
            consumer_models,
            routes,
            ai_routes,
        }
    }

    /// The route serving a request's path, if any (pass-through or AI route: the best
    /// match, an exact path, else the longest prefix; the first in config order on a tie),
    /// and whether it matched the path exactly (not by a prefix).
    pub fn route_match(
        &self,
        method: &http::Method,
        host: Option<&str>,
        path: &str,
    ) -> Option<(Matched<'_>, bool)> {
        let pass = self.routes.iter().map(|r| (&r.matcher, Matched::Pass(r)));
        let ai = self
            .ai_routes
            .iter()
            .filter_map(|name| self.models.get(&**name))
            .filter_map(|m| Some((m.route.as_ref()?, Matched::Ai(m))));
        routes::best(pass.chain(ai), method, host, path)
    }

    /// The pass-through route serving a request, if any.
    pub fn pass_route(
        &self,
        method: &http::Method,
        host: Option<&str>,
        path: &str,
    ) -> Option<&PassRoute> {
        match self.route_match(method, host, path)? {
            (Matched::Pass(r), _) => Some(r),
            _ => None,
        }
    }

    /// Whether the config serves any model on the OpenAI API (by name).
    pub fn serves_models(&self) -> bool {
        self.models.values().any(|m| m.route.is_none())
    }

    /// The consumer owning a gateway key. Keys are compared by digest, so lookups take the
    /// same time whatever the key.
    pub fn consumer_for_key(&self, key: &str) -> Option<Arc<str>> {
        self.consumers
            .get(&crate::config::digest::of_key(key))
            .cloned()
    }

    /// The consumer owning an HTTP Basic credential (compared by digest, as keys are).
    pub fn consumer_for_basic(&self, username: &str, password: &str) -> Option<Arc<str>> {
        self.consumers
            .get(&basic_digest(username, password))
            .cloned()
    }

    /// Whether `consumer` may use the model `route` (its `models` list, when it has one).
    pub fn consumer_may_use(&self, consumer: Option<&str>, route: &str) -> bool {
        consumer
            .and_then(|c| self.consumer_models.get(c))
            .is_none_or(|allowed| allowed.contains(route))
    }

    /// The limits of a consumer.
    pub fn consumer_limits(&self, name: &str) -> &[Rule] {
        self.consumer_limits.get(name).map_or(&[], Vec::as_slice)
    }

    /// A model of the OpenAI API, by name (AI routes are served at their paths only).
    /// By name, alias, or the first pattern (`openai/*`) that matches it.
    pub fn model(&self, name: &str) -> Option<&ModelRoute> {
        let exact = self.models.get(name).filter(|m| m.route.is_none());
        let found = exact
            .or_else(|| self.models.get(self.aliases.get(name)?))
            .or_else(|| {
                let (_, _, model) = self.patterns.iter().find(|(before, after, _)| {
                    name.len() > before.len() + after.len()
                        && name.starts_with(before.as_str())
                        && name.ends_with(after.as_str())
                })?;
                self.models.get(model)
            });
        found.filter(|m| m.route.is_none())
    }

    /// Every model, AI routes included, in config order (the status page).
    pub fn all_models(&self) -> impl Iterator<Item = &ModelRoute> {
        self.config
            .models
            .iter()
            .filter_map(|m| self.models.get(&m.name))
    }
}

/// The digest a Basic credential is stored under (apart from every API key's).
fn basic_digest(username: &str, password: &str) -> [u8; 32] {
    crate::config::digest::of_key(&format!("basic\u{0}{username}\u{0}{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str_with_env;

    #[test]
    fn disabled_providers_and_round_robin() {
        let yaml = r#"
auth: {enabled: false}
providers:
  - {name: real, kind: openai, api_key: "${OPENAI_API_KEY:-}"}
  - {name: m1, kind: mock}
  - {name: m2, kind: mock}
models:
  - {name: gpt, deployments: [{provider: real}]}
  - {name: pool, deployments: [{provider: m1}, {provider: m2}, {provider: real}]}
"#;
        let c = parse_str_with_env(yaml, "t", &|_| None, crate::providers::check).unwrap();
        let rt = Runtime::build(c, 1);
        assert_eq!(
            rt.listed_models.iter().map(|m| &**m).collect::<Vec<_>>(),
            vec!["pool"]
        );
        assert!(rt.model("gpt").unwrap().deployments.is_empty());
        let pool = rt.model("pool").unwrap();
        let first: Vec<_> = pool
            .attempts(RoutingStrategy::RoundRobin, 5)
            .map(|d| d.provider.name.to_string())
            .collect();
        let second: Vec<_> = pool
            .attempts(RoutingStrategy::RoundRobin, 0)
            .map(|d| d.provider.name.to_string())
            .collect();
        assert_eq!(first, vec!["m1", "m2"]);
        assert_eq!(second, vec!["m2"]);
        let with_key = parse_str_with_env(
            yaml,
            "t",
            &|v| (v == "OPENAI_API_KEY").then(|| "sk-x".into()),
            crate::providers::check,
        )
        .unwrap();
        assert_eq!(Runtime::build(with_key, 2).listed_models.len(), 2);
    }
}
