//! The batch module: OpenAI's Files and Batches API on the proxy's base URL, executed by
//! the gateway itself through its own routing and limits, so every provider can run
//! batches.
//!
//! `submit → store → dispatch → collect → export`:
//! - the HTTP surface (`/v1/files`, `/v1/batches`) belongs to the proxy listener (its `batches` module), which calls into this one;
//! - [`backend`]: what a store provides; [`store`]: SQLite in the data dir, one row per
//!   request, results written once; [`redis`]: the same in Redis, shared by instances;
//! - [`dispatch`]: a background service that validates, runs and ends batches, and
//!   deletes what the retention schedule says is over;
//! - [`validate`]: an input file checked line by line with bounded memory;
//! - [`execute`]: one request through admission, routing and the upstream call;
//! - [`webhook`]: signed notifications of progress and of the end of a batch;
//! - [`client`]: the `ai-rate-limiter batch` commands.

pub mod backend;
pub mod client;
pub mod dispatch;
pub mod execute;
pub mod model;
pub mod redis;
pub mod store;
pub mod validate;
pub mod webhook;
