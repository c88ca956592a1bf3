//! ai-rate-limiter: an OpenAI-compatible LLM gateway on Pingora.
//!
//! The request path (`proxy`): auth → body → route → upstream → stream → account.
//! Configuration (`config`) is an immutable snapshot swapped on reload. Providers
//! (`providers`) carry out one deployment's request. `server::build_server` assembles a
//! process for `main` and for tests.

pub mod admin;
pub mod batch;
pub mod cli;
pub mod config;
pub mod egress;
pub mod errors;
pub mod gateway;
pub mod import;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tls;
