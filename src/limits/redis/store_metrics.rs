//! The shared store's metrics (registered in `src/metrics.rs`).

/// Metrics of the shared store.
#[derive(Clone)]
pub struct RedisMetrics {
    /// `gateway_redis_duration_seconds{op}`: one observation per round trip.
    pub duration: prometheus::HistogramVec,
    /// `gateway_redis_errors_total{op}`.
    pub errors: prometheus::IntCounterVec,
    /// `gateway_limiter_degraded`: 1 while Redis cannot be reached.
    pub degraded: prometheus::IntGauge,
    /// `gateway_limiter_lease_units`: quota lease units held and not yet spent (the most
    /// other instances can be refused while the fleet is under a limit).
    pub lease_units: prometheus::IntGauge,
    /// `gateway_limiter_leased_total`: admissions decided from quota leases, without Redis.
    pub leased: prometheus::IntCounter,
    /// `gateway_limiter_lease_misses_total{kind}`: checks whose lease had no room, which
    /// sent their request to Redis.
    pub lease_misses: prometheus::IntCounterVec,
    /// `gateway_limiter_blocks_returned_total{via}`: token blocks given back, riding an
    /// admission call (`admission`) or in a release call (`release`).
    pub blocks_returned: prometheus::IntCounterVec,
    /// `gateway_limiter_lease_waits_total{outcome}`: requests that missed while their key's
    /// lease ask was in flight and waited for its answer: admitted from what it brought
    /// (`leased`) or sent to Redis after all (`redis`).
    pub lease_waits: prometheus::IntCounterVec,
}
