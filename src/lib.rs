//! ai-rate-limiter: an OpenAI-compatible LLM gateway on Pingora.
//!
//! The map:
//! - [`proxy`]: the Pingora adapter and the HTTP surfaces (the connection front, auth,
//!   body, routing, relaying answers, the Files/Batches API, pass-through routes);
//! - [`canonical`]: the canonical request every surface parses into and every provider
//!   maps from;
//! - [`gateway`]: the call core both the proxy and the batch dispatcher use — admission,
//!   deployment choice, the upstream attempt and failover —
//!   over a plain context with no Pingora type (it replaced `proxy::admit`,
//!   `proxy::upstream` and the request model of `proxy::body`);
//! - [`providers`]: the upstream HTTP client and one module per provider behind the
//!   `Provider` trait, chosen by `providers::registry`;
//! - [`limits`]: the limit algorithms, rules and stores (local, Redis, synced), and the
//!   queueing and batch-priority policy;
//! - [`batch`]: the batch model, stores (SQLite on the blocking pool, Redis), validation,
//!   dispatch and webhooks — a client of `gateway`, it does not depend on `proxy`;
//! - [`config`] (schema → validation; a leaf), [`runtime`] (the immutable snapshot
//!   compiled from it), [`state`] (the process state and the hot reload that swaps the
//!   snapshot; it replaced `config::reload` and the old all-in-one `GatewayState`),
//!   [`import`] (APISIX), [`admin`] (metrics, health, status page), [`egress`] (where
//!   client-named URLs may go), [`errors`] (one error enum), [`upgrade`] (SIGQUIT hands the
//!   listeners only to a socket no other user could have placed).
//!
//! No two modules depend on each other, directly or not (`scripts/deps.py`, run by the
//! test command).
//!
//! `server::build_server` assembles a process for `main` and for tests.

// Nothing the gateway handles may panic it through unwrap(): outside input is answered
// with an error, and an invariant is an `expect` that says which. (Tests may unwrap.)
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod batch;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod cost;
pub mod dns;
pub mod egress;
pub mod errors;
pub mod gateway;
pub mod history;
pub mod import;
pub mod json_keys;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod owner_only;
pub mod providers;
pub mod proxy;
pub mod quota;
pub mod response_store;
pub mod runtime;
pub mod server;
pub mod state;
pub mod surfaces;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod url;
