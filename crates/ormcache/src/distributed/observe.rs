//! What the dashboard page (`axum::dashboard`) shows of a [`DistributedCache`]:
//! read from atomics, no round trip.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::DistributedCache;
use crate::BreakerState;
use crate::telemetry::Summary;

/// This process's view of the L2.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct L2View {
    /// Round trips to Redis (every command and pipeline that reached the network).
    pub(crate) round_trips: Summary,
    /// The circuit breaker.
    pub(crate) breaker: BreakerState,
    /// How many times it opened.
    pub(crate) breaker_opened: u32,
    /// This process's L2 hits, misses, writes and errors.
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) sets: u64,
    pub(crate) errors: u64,
}

impl DistributedCache {
    pub(crate) fn observe(&self) -> L2View {
        let inner = &self.inner;
        let c = &inner.counters;
        L2View {
            round_trips: inner.latency.read(),
            breaker: inner.breaker.state(),
            breaker_opened: inner.breaker.times_opened(),
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            sets: c.sets.load(Relaxed),
            errors: c.errors.load(Relaxed),
        }
    }
}
