//! Rate limiting: the APISIX limit plugins' algorithms, made exact.
//!
//! Each algorithm is a pure function of its configuration, its stored state and the time
//! (`now_ms`, milliseconds on a monotonic clock), so it is unit-tested with a fake clock and
//! the same code serves every store (in-process now, Redis scripts mirror it):
//!
//! - [`req`]: limit-req, the leaky bucket in milli-requests (`rate`, `burst`, `nodelay`).
//! - [`conn`]: limit-conn, concurrency with a delay band between `conn` and `conn + burst`.
//! - [`count`]: limit-count, a fixed window opened by the first request.
//! - [`tokens`]: token limits per window with reservations at admission, reconciled with
//!   the real usage when the response ends.
//!
//! [`admission`] defines the one admission call (every rule that applies to a request,
//! evaluated at once); [`limiter`] sends it to a store: [`local`] (in-process) or
//! [`redis`] (shared by every gateway instance, one `EVALSHA` per call; [`synced`] decides
//! count rules locally and syncs them periodically when `sync_interval` is set). [`rules`] and
//! [`key`] compile the config; [`queue`] holds requests that wait for headroom; [`priority`]
//! keeps batch work to the headroom realtime traffic leaves.
//!
//! Semantics follow `shared/reference/limits-semantics.md` (APISIX 3.18); where APISIX has
//! a known bug the correct behaviour is implemented and documented on the item.

pub mod admission;
pub mod auth_failures;
pub mod conn;
pub mod count;
pub mod lease;
pub mod limiter;
pub mod local;
pub mod priority;
pub mod queue;
pub mod redis;
pub mod req;
pub mod rules;
pub mod slots;
pub mod synced;
pub mod synced_admit;
pub mod tokens;
