//! Metrics (feature `metrics`, on the [`metrics`](https://docs.rs/metrics) facade):
//! every name in one place, and the handles the caches hold.
//!
//! Handles are registered once per cache (at build, or at the L1's first use) with
//! their labels and kept in the cache, so that counting on the hot path is one
//! call on a handle, not a lookup by name. Without the feature every handle here
//! is a zero-sized type whose methods are empty and inlined: nothing is left.
//!
//! Labels: `level` (`l1`, `l2`), `cache` (the key prefix; `local` for a
//! `QueryCache` not inside a `HybridCache`), and where it says so `op`, `kind`,
//! `cause`, `reason`, `to`. Never a key, never a value.

#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ErrorKind;

/// Metric names (Prometheus conventions). The README's table documents each.
pub(crate) mod names {
    /// Reads that found a value (`level`, `cache`).
    pub(crate) const HITS: &str = "ormcache_hits_total";
    /// Reads that found nothing usable (`level`, `cache`).
    pub(crate) const MISSES: &str = "ormcache_misses_total";
    /// Hits on a cached "not found" (`null`/`None`) (`level`, `cache`).
    pub(crate) const NEGATIVE_HITS: &str = "ormcache_negative_hits_total";
    /// Writes (`level`, `cache`).
    pub(crate) const SETS: &str = "ormcache_sets_total";
    /// Deletes that removed an entry (`level`, `cache`).
    pub(crate) const DELETES: &str = "ormcache_deletes_total";
    /// Failed operations (`level`, `cache`, `kind`).
    pub(crate) const ERRORS: &str = "ormcache_errors_total";
    /// Undecodable entries read (`cache`), also counted in misses and errors.
    pub(crate) const DECODE_ERRORS: &str = "ormcache_decode_errors_total";
    /// Redis round trips by operation (`cache`, `op`), seconds.
    pub(crate) const ROUND_TRIP: &str = "ormcache_redis_round_trip_seconds";
    /// Breaker state (`cache`): 0 closed, 1 half-open, 2 open.
    pub(crate) const BREAKER_STATE: &str = "ormcache_breaker_state";
    /// Breaker transitions (`cache`, `to`).
    pub(crate) const BREAKER_TRANSITIONS: &str = "ormcache_breaker_transitions_total";
    /// L1 entries held (`cache`).
    pub(crate) const L1_ENTRIES: &str = "ormcache_l1_entries";
    /// L1 weight in bytes (`cache`), with a byte budget.
    pub(crate) const L1_WEIGHT: &str = "ormcache_l1_weighted_bytes";
    /// L1 entries removed (`cache`, `cause`: `size`, `expired`, `explicit`).
    pub(crate) const L1_EVICTIONS: &str = "ormcache_l1_evictions_total";
    /// Whole-L1 flushes (`cache`).
    pub(crate) const L1_FLUSHES: &str = "ormcache_l1_flushes_total";
    /// Loader runs of `get_or_compute` (`cache`).
    pub(crate) const LOADER_RUNS: &str = "ormcache_loader_runs_total";
    /// Loader errors (`cache`).
    pub(crate) const LOADER_ERRORS: &str = "ormcache_loader_errors_total";
    /// Loader run time (`cache`), seconds.
    pub(crate) const LOADER_SECONDS: &str = "ormcache_loader_seconds";
    /// Waits for another process's lock (`cache`).
    pub(crate) const LOCK_WAITS: &str = "ormcache_lock_waits_total";
    /// Time waited for another process's lock (`cache`), seconds.
    pub(crate) const LOCK_WAIT_SECONDS: &str = "ormcache_lock_wait_seconds";
    /// Values served that may be stale (`cache`, `reason`).
    pub(crate) const STALE_SERVED: &str = "ormcache_stale_served_total";
    /// Fills not stored (`cache`, `reason`).
    pub(crate) const FILLS_DISCARDED: &str = "ormcache_fills_discarded_total";
    /// Reads and writes that Redis could not serve and that fell back (`cache`).
    pub(crate) const FALLBACKS: &str = "ormcache_fallbacks_total";
    /// Invalidation messages published (`cache`).
    pub(crate) const INV_SENT: &str = "ormcache_invalidations_sent_total";
    /// Invalidation messages received from other instances (`cache`).
    pub(crate) const INV_RECEIVED: &str = "ormcache_invalidations_received_total";
    /// Write reply → last live peer's acknowledgement (`cache`), seconds.
    pub(crate) const INV_LAG: &str = "ormcache_invalidation_lag_seconds";
    /// Invalidations every live peer acknowledged (`cache`).
    pub(crate) const INV_CONFIRMED: &str = "ormcache_invalidations_confirmed_total";
    /// Peers that let a confirmation time out (`cache`).
    pub(crate) const INV_UNCONFIRMED: &str = "ormcache_invalidations_unconfirmed_total";
    /// Other live instances on the channel (`cache`).
    pub(crate) const PEERS: &str = "ormcache_peers";
    /// Of those, the ones not waited for (`cache`).
    pub(crate) const PEERS_UNRESPONSIVE: &str = "ormcache_peers_unresponsive";
    /// Lost invalidation messages detected (`cache`).
    pub(crate) const GAPS: &str = "ormcache_gaps_total";
    /// Times the invalidation stream came up (`cache`).
    pub(crate) const RESUBSCRIPTIONS: &str = "ormcache_stream_resubscriptions_total";
    /// 1 while the stream is up and L2 trusted (`cache`).
    pub(crate) const COHERENT: &str = "ormcache_coherent";
    /// Backlog overflows into a clear of the prefix (`cache`).
    pub(crate) const BACKLOG_OVERFLOWS: &str = "ormcache_backlog_overflows_total";
}

/// The `kind` label of an error.
pub(crate) fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connection => "connection",
        ErrorKind::Timeout => "timeout",
        ErrorKind::CircuitOpen => "circuit_open",
        ErrorKind::Encode => "encode",
        ErrorKind::Decode => "decode",
        ErrorKind::ValueTooLarge => "value_too_large",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Server => "server",
        ErrorKind::Closed => "closed",
        ErrorKind::Auth => "auth",
        ErrorKind::NoPermission => "no_permission",
    }
}

/// The kind labels, one handle each (`kind_label` is exhaustive: a new kind
/// must be named here too, which a unit test checks).
const KINDS: [&str; 11] = [
    "connection",
    "timeout",
    "circuit_open",
    "encode",
    "decode",
    "value_too_large",
    "invalid_input",
    "server",
    "closed",
    "auth",
    "no_permission",
];

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::Arc;

    /// A registered counter (a no-op one by default).
    #[derive(Debug, Clone)]
    pub(crate) struct Counter(metrics::Counter);
    impl Default for Counter {
        fn default() -> Self {
            Self(metrics::Counter::noop())
        }
    }
    impl Counter {
        #[inline]
        pub(crate) fn increment(&self, n: u64) {
            self.0.increment(n);
        }
    }

    /// A registered gauge (a no-op one by default).
    #[derive(Debug, Clone)]
    pub(crate) struct Gauge(metrics::Gauge);
    impl Default for Gauge {
        fn default() -> Self {
            Self(metrics::Gauge::noop())
        }
    }
    impl Gauge {
        #[inline]
        pub(crate) fn set(&self, v: f64) {
            self.0.set(v);
        }
    }

    /// A registered histogram (a no-op one by default).
    #[derive(Debug, Clone)]
    pub(crate) struct Histogram(metrics::Histogram);
    impl Default for Histogram {
        fn default() -> Self {
            Self(metrics::Histogram::noop())
        }
    }
    impl Histogram {
        #[inline]
        pub(crate) fn record(&self, v: f64) {
            self.0.record(v);
        }
    }

    /// Labels as the facade takes them.
    pub(crate) type Labels = Vec<metrics::Label>;

    pub(crate) fn labels(cache: &Arc<str>, extra: &[(&'static str, &'static str)]) -> Labels {
        let mut l = Vec::with_capacity(extra.len() + 1);
        l.push(metrics::Label::new("cache", cache.to_string()));
        for (k, v) in extra {
            l.push(metrics::Label::from_static_parts(k, v));
        }
        l
    }

    pub(crate) fn counter(name: &'static str, labels: Labels) -> Counter {
        Counter(metrics::counter!(name, labels))
    }

    pub(crate) fn gauge(name: &'static str, labels: Labels) -> Gauge {
        Gauge(metrics::gauge!(name, labels))
    }

    pub(crate) fn histogram(name: &'static str, labels: Labels) -> Histogram {
        Histogram(metrics::histogram!(name, labels))
    }

    /// Whether metrics are compiled in.
    pub(crate) const ON: bool = true;
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::sync::Arc;

    /// A counter that counts nothing (feature `metrics` off).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Counter;
    impl Counter {
        #[inline(always)]
        pub(crate) fn increment(&self, _: u64) {}
    }

    /// A gauge that records nothing (feature `metrics` off).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Gauge;
    impl Gauge {
        #[inline(always)]
        pub(crate) fn set(&self, _: f64) {}
    }

    /// A histogram that records nothing (feature `metrics` off).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Histogram;
    impl Histogram {
        #[inline(always)]
        pub(crate) fn record(&self, _: f64) {}
    }

    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Labels;

    #[inline(always)]
    pub(crate) fn labels(_: &Arc<str>, _: &[(&'static str, &'static str)]) -> Labels {
        Labels
    }
    #[inline(always)]
    pub(crate) fn counter(_: &'static str, _: Labels) -> Counter {
        Counter
    }
    #[inline(always)]
    pub(crate) fn gauge(_: &'static str, _: Labels) -> Gauge {
        Gauge
    }
    #[inline(always)]
    pub(crate) fn histogram(_: &'static str, _: Labels) -> Histogram {
        Histogram
    }

    pub(crate) const ON: bool = false;
}

pub(crate) use imp::{Counter, Gauge, Histogram, ON};
use imp::{counter, gauge, histogram, labels};

use std::sync::Arc;

fn c(name: &'static str, cache: &Arc<str>, extra: &[(&'static str, &'static str)]) -> Counter {
    counter(name, labels(cache, extra))
}

/// An `AtomicU64` counter (what `get_stats` reports) that also increments a
/// metric: call sites keep `fetch_add`/`load` as they were.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    n: AtomicU64,
    metric: Counter,
}

impl Counted {
    pub(crate) fn new(metric: Counter) -> Self {
        Self {
            n: AtomicU64::new(0),
            metric,
        }
    }

    #[inline]
    pub(crate) fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        self.metric.increment(n);
        self.n.fetch_add(n, order)
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.n.load(order)
    }
}

/// The counters every level has.
#[derive(Debug, Default)]
pub(crate) struct LevelMeter {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) negative_hits: Counter,
    pub(crate) sets: Counter,
    pub(crate) deletes: Counter,
    errors: [Counter; KINDS.len()],
}

impl LevelMeter {
    pub(crate) fn new(level: &'static str, cache: &Arc<str>) -> Self {
        let l = [("level", level)];
        Self {
            hits: c(names::HITS, cache, &l),
            misses: c(names::MISSES, cache, &l),
            negative_hits: c(names::NEGATIVE_HITS, cache, &l),
            sets: c(names::SETS, cache, &l),
            deletes: c(names::DELETES, cache, &l),
            errors: KINDS.map(|k| c(names::ERRORS, cache, &[("level", level), ("kind", k)])),
        }
    }

    #[inline]
    pub(crate) fn error(&self, kind: ErrorKind) {
        let label = kind_label(kind);
        let i = KINDS
            .iter()
            .position(|k| *k == label)
            .unwrap_or(KINDS.len() - 1);
        self.errors[i].increment(1);
    }

    /// A type mismatch on the L1: counted as an error of kind `decode`.
    #[inline]
    pub(crate) fn mismatch(&self) {
        self.error(ErrorKind::Decode);
    }
}

/// Why an entry left the L1 (the `cause` label of `ormcache_l1_evictions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Evicted by the size or byte bound while unexpired.
    Size = 0,
    /// Its TTL had passed (freed when read, or evicted once expired).
    Expired = 1,
    /// Deleted, or invalidated by a key message.
    Explicit = 2,
}

/// The L1's meter: its level counters, evictions by cause, size gauges.
#[derive(Debug, Default)]
pub(crate) struct L1Meter {
    pub(crate) level: LevelMeter,
    evictions: [Counter; 3],
    pub(crate) entries: Gauge,
    pub(crate) weight: Gauge,
    pub(crate) memo: MemoMeter,
}

impl L1Meter {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        Self {
            level: LevelMeter::new("l1", cache),
            evictions: ["size", "expired", "explicit"]
                .map(|cause| c(names::L1_EVICTIONS, cache, &[("cause", cause)])),
            entries: gauge(names::L1_ENTRIES, labels(cache, &[])),
            weight: gauge(names::L1_WEIGHT, labels(cache, &[])),
            memo: MemoMeter::new(cache),
        }
    }

    pub(crate) fn evicted(&self, cause: Removal) {
        self.evictions[cause as usize].increment(1);
    }
}

/// Where an L1 registers its handles: at first use, under the name `local`, or
/// under a `HybridCache`'s prefix when one takes the L1 before its first use.
/// (Without the feature, the meter itself: a zero-sized value.)
#[derive(Debug, Default)]
pub(crate) struct L1Cell {
    #[cfg(feature = "metrics")]
    cell: std::sync::OnceLock<L1Meter>,
    #[cfg(not(feature = "metrics"))]
    cell: L1Meter,
}

impl L1Cell {
    #[inline(always)]
    pub(crate) fn get(&self) -> &L1Meter {
        #[cfg(feature = "metrics")]
        {
            self.cell.get_or_init(|| L1Meter::new(&Arc::from("local")))
        }
        #[cfg(not(feature = "metrics"))]
        {
            &self.cell
        }
    }

    /// Names the L1 `cache` (a `HybridCache`'s prefix) unless it was used already.
    pub(crate) fn name(&self, cache: &Arc<str>) {
        #[cfg(feature = "metrics")]
        {
            let _ = self.cell.set(L1Meter::new(cache));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = cache;
    }
}

/// The L2's meter: level counters, decode errors, the breaker, round trips.
#[derive(Debug, Default)]
pub(crate) struct L2Meter {
    pub(crate) level: LevelMeter,
    pub(crate) decode_errors: Counter,
    pub(crate) memo: MemoMeter,
    #[cfg(feature = "metrics")]
    cache: Arc<str>,
    /// Round-trip histograms by operation, registered at an operation's first use.
    #[cfg(feature = "metrics")]
    round_trips: std::sync::RwLock<Vec<(&'static str, Histogram)>>,
}

impl L2Meter {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        Self {
            level: LevelMeter::new("l2", cache),
            decode_errors: c(names::DECODE_ERRORS, cache, &[]),
            memo: MemoMeter::new(cache),
            #[cfg(feature = "metrics")]
            cache: Arc::clone(cache),
            #[cfg(feature = "metrics")]
            round_trips: std::sync::RwLock::default(),
        }
    }

    /// Records a round trip of `op` that took `took`.
    #[inline]
    pub(crate) fn round_trip(&self, op: &'static str, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        {
            let secs = took.as_secs_f64();
            if let Ok(h) = self.round_trips.read()
                && let Some((_, h)) = h.iter().find(|(o, _)| *o == op)
            {
                h.record(secs);
                return;
            }
            let h = histogram(names::ROUND_TRIP, labels(&self.cache, &[("op", op)]));
            h.record(secs);
            if let Ok(mut all) = self.round_trips.write()
                && !all.iter().any(|(o, _)| *o == op)
            {
                all.push((op, h));
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (op, took);
    }
}

/// The breaker's gauge and transitions.
#[derive(Debug, Default)]
pub(crate) struct BreakerMeter {
    pub(crate) state: Gauge,
    to_closed: Counter,
    to_open: Counter,
    to_half_open: Counter,
}

impl BreakerMeter {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        let m = Self {
            state: gauge(names::BREAKER_STATE, labels(cache, &[])),
            to_closed: c(names::BREAKER_TRANSITIONS, cache, &[("to", "closed")]),
            to_open: c(names::BREAKER_TRANSITIONS, cache, &[("to", "open")]),
            to_half_open: c(names::BREAKER_TRANSITIONS, cache, &[("to", "half_open")]),
        };
        m.state.set(0.0);
        m
    }

    pub(crate) fn closed(&self) {
        self.state.set(0.0);
        self.to_closed.increment(1);
    }

    pub(crate) fn half_open(&self) {
        self.state.set(1.0);
        self.to_half_open.increment(1);
    }

    pub(crate) fn opened(&self) {
        self.state.set(2.0);
        self.to_open.increment(1);
    }
}

/// `get_or_compute`'s meter (any cache kind).
#[derive(Debug, Default)]
pub(crate) struct MemoMeter {
    pub(crate) loader_runs: Counter,
    pub(crate) loader_errors: Counter,
    pub(crate) loader_seconds: Histogram,
    pub(crate) lock_waits: Counter,
    pub(crate) lock_wait_seconds: Histogram,
    pub(crate) stale_refresh: Counter,
    pub(crate) lease_lost: Counter,
}

impl MemoMeter {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        Self {
            loader_runs: c(names::LOADER_RUNS, cache, &[]),
            loader_errors: c(names::LOADER_ERRORS, cache, &[]),
            loader_seconds: histogram(names::LOADER_SECONDS, labels(cache, &[])),
            lock_waits: c(names::LOCK_WAITS, cache, &[]),
            lock_wait_seconds: histogram(names::LOCK_WAIT_SECONDS, labels(cache, &[])),
            stale_refresh: c(names::STALE_SERVED, cache, &[("reason", "refresh_ahead")]),
            lease_lost: c(names::FILLS_DISCARDED, cache, &[("reason", "lease_lost")]),
        }
    }
}

/// What a `HybridCache` counts beyond its levels.
#[derive(Debug, Default)]
pub(crate) struct HybridMeter {
    pub(crate) stale_degraded: Counter,
    pub(crate) inv_lag: Histogram,
    pub(crate) peers: Gauge,
    pub(crate) peers_unresponsive: Gauge,
    pub(crate) coherent: Gauge,
    pub(crate) memo: MemoMeter,
}

impl HybridMeter {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        Self {
            stale_degraded: c(names::STALE_SERVED, cache, &[("reason", "degraded")]),
            inv_lag: histogram(names::INV_LAG, labels(cache, &[])),
            peers: gauge(names::PEERS, labels(cache, &[])),
            peers_unresponsive: gauge(names::PEERS_UNRESPONSIVE, labels(cache, &[])),
            coherent: gauge(names::COHERENT, labels(cache, &[])),
            memo: MemoMeter::new(cache),
        }
    }

    /// A counter of the hybrid's own (`Counted` fields of its counters).
    pub(crate) fn counter(
        name: &'static str,
        cache: &Arc<str>,
        extra: &[(&'static str, &'static str)],
    ) -> Counter {
        c(name, cache, extra)
    }
}

/// Whether a timer is worth starting: metrics are on, or `span` is recorded.
#[inline(always)]
pub(crate) fn timed(span: &tracing::Span) -> Option<std::time::Instant> {
    (ON || !span.is_disabled()).then(std::time::Instant::now)
}

/// Whether `value` serializes as JSON `null` (a cached "not found"): stops at the
/// fifth byte written, so a large value costs its first write only.
pub(crate) fn serializes_to_null<T: serde::Serialize + ?Sized>(value: &T) -> bool {
    struct First(Vec<u8>);
    impl std::io::Write for First {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > 4 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut first = First(Vec::with_capacity(4));
    serde_json::to_writer(&mut first, value).is_ok() && first.0 == b"null"
}

/// Whether `bytes` (an L2 value as stored) is a cached "not found": JSON `null`
/// or MessagePack nil behind the one-byte header.
#[inline]
pub(crate) fn is_null_bytes(bytes: &[u8]) -> bool {
    bytes == b"null" || bytes == [0x01, 0xc0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "metrics"))]
    fn without_the_feature_the_handles_take_no_space() {
        use std::mem::size_of;
        assert_eq!(size_of::<L1Cell>(), 0);
        assert_eq!(size_of::<L2Meter>(), 0);
        assert_eq!(size_of::<HybridMeter>(), 0);
        assert_eq!(size_of::<BreakerMeter>(), 0);
        assert_eq!(size_of::<Counted>(), size_of::<AtomicU64>());
    }

    #[test]
    fn none_and_unit_serialize_to_null_and_nothing_else_does() {
        assert!(serializes_to_null(&None::<String>));
        assert!(serializes_to_null(&()));
        for v in [
            serde_json::json!(0),
            serde_json::json!("null"),
            serde_json::json!([null]),
        ] {
            assert!(!serializes_to_null(&v), "{v}");
        }
        assert!(!serializes_to_null(&Some(vec![1u8; 1000])));
    }

    #[test]
    fn every_kind_label_has_its_own_handle() {
        for kind in [
            ErrorKind::Connection,
            ErrorKind::Timeout,
            ErrorKind::CircuitOpen,
            ErrorKind::Encode,
            ErrorKind::Decode,
            ErrorKind::ValueTooLarge,
            ErrorKind::InvalidInput,
            ErrorKind::Server,
            ErrorKind::Closed,
            ErrorKind::Auth,
            ErrorKind::NoPermission,
        ] {
            let label = kind_label(kind);
            assert_ne!(label, "other", "{kind:?}");
            assert!(KINDS.contains(&label), "{kind:?}");
        }
    }

    #[test]
    fn a_cached_none_is_recognised_in_both_codecs() {
        use crate::codec::{Codec, Encoding};
        for codec in [Codec::Json, Codec::MessagePack] {
            let e = Encoding::new(codec);
            assert!(is_null_bytes(&e.encode(&None::<u32>).unwrap()), "{codec:?}");
            assert!(!is_null_bytes(&e.encode(&Some(0u32)).unwrap()), "{codec:?}");
        }
    }
}
