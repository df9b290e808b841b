//! Statistics: lock-free counters on the hot path, and the serializable shapes that
//! `get_stats()` returns (the seed's field names, plus a few extra).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Percent with two decimals, as the Python package reports it.
pub(crate) fn hit_rate(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        return 0.0;
    }
    (hits as f64 * 10_000.0 / total as f64).round() / 100.0
}

/// Serializes a TTL as whole seconds when it is whole (`300`), else fractional.
pub(crate) fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_u64(d.as_secs())
    } else {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Statistics of a [`QueryCache`](crate::QueryCache) (the L1).
///
/// Serializes with the seed's field names:
/// `{"size", "max_size", "hits", "misses", "hit_rate", "default_ttl", ...}`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalStats {
    /// Entries held (expired entries not yet swept may be included).
    pub size: u64,
    /// The entry bound.
    pub max_size: u64,
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or an expired entry, or a value of another type).
    pub misses: u64,
    /// `hits / (hits + misses)` in percent, two decimals.
    pub hit_rate: f64,
    /// Default TTL in seconds.
    #[serde(serialize_with = "ser_secs")]
    pub default_ttl: Duration,
    /// Writes.
    pub sets: u64,
    /// Entries evicted to respect the size or byte bound.
    pub evictions: u64,
    /// Reads that found a value stored under another Rust type (counted as misses).
    pub type_mismatches: u64,
    /// Sum of entry weights in bytes, when a byte budget is set.
    pub weighted_bytes: Option<u64>,
    /// The byte budget, if one is set.
    pub max_bytes: Option<u64>,
}

/// Statistics of a [`DistributedCache`](crate::DistributedCache) (the L2).
///
/// `hits`, `misses`, `sets` and `errors` are cluster-wide: every process flushes its
/// counters into the hash `{key_prefix}:stats` (the Python package's layout), and
/// `get_stats()` adds what this process has not flushed yet. `keys_count` is exact
/// for small keyspaces and sampled for large ones (`keys_count_exact` says which).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistributedStats {
    /// Reads that found a value, all processes.
    pub hits: u64,
    /// Reads that found nothing (or undecodable bytes), all processes.
    pub misses: u64,
    /// Writes, all processes.
    pub sets: u64,
    /// Failed operations (Redis errors, timeouts, undecodable bytes), all processes.
    pub errors: u64,
    /// `hits / (hits + misses)` in percent, two decimals.
    pub hit_rate: f64,
    /// Entries under the prefix (reserved keys excluded).
    pub keys_count: u64,
    /// Whether `keys_count` was counted rather than estimated from a sample.
    pub keys_count_exact: bool,
    /// Default TTL in seconds.
    #[serde(serialize_with = "ser_secs")]
    pub default_ttl: Duration,
    /// Undecodable values met by this process (each also counted as a miss).
    pub decode_errors: u64,
    /// This process's circuit breaker.
    pub breaker: crate::BreakerState,
    /// How many times this process's breaker opened.
    pub breaker_opened: u32,
    /// This process's own counters, not merged.
    pub local: ProcessCounters,
}

/// One process's counters: the type of [`DistributedStats::local`], exported so that
/// the field's type can be named (in a function that takes it, a struct that
/// stores it). It has no constructor: only `get_stats` makes one.
///
/// ```no_run
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// let mine: ormcache::ProcessCounters = cache.get_stats().await?.local;
/// println!("this process: {} hits, {} misses", mine.hits, mine.misses);
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessCounters {
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Writes.
    pub sets: u64,
    /// Errors.
    pub errors: u64,
}

/// Counters of a distributed cache: totals for this process, and the part not yet
/// flushed to Redis.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pending: [AtomicU64; 4],
    /// The metrics handles (feature `metrics`; nothing without it).
    pub(crate) meter: crate::observe::L2Meter,
}

/// Index into the pending counters, in the order of [`STAT_FIELDS`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stat {
    Hit = 0,
    Miss = 1,
    Set = 2,
    Error = 3,
}

/// The fields of the stats hash, as the Python package names them.
pub(crate) const STAT_FIELDS: [&str; 4] = ["hits", "misses", "sets", "errors"];

impl Counters {
    /// Counters whose metrics carry the label `cache`.
    pub(crate) fn metered(cache: &std::sync::Arc<str>) -> Self {
        Self {
            meter: crate::observe::L2Meter::new(cache),
            ..Self::default()
        }
    }

    /// Counts `n` of `stat` (errors reach the metrics by kind, from the caller).
    pub(crate) fn add(&self, stat: Stat, n: u64) {
        let m = &self.meter.level;
        let total = match stat {
            Stat::Hit => {
                m.hits.increment(n);
                &self.hits
            }
            Stat::Miss => {
                m.misses.increment(n);
                &self.misses
            }
            Stat::Set => {
                m.sets.increment(n);
                &self.sets
            }
            Stat::Error => &self.errors,
        };
        total.fetch_add(n, Relaxed);
        self.pending[stat as usize].fetch_add(n, Relaxed);
    }

    /// Takes the unflushed deltas (to be given back with [`Counters::restore`] if the
    /// flush fails).
    pub(crate) fn take_pending(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.pending[i].swap(0, Relaxed))
    }

    pub(crate) fn restore(&self, deltas: [u64; 4]) {
        for (slot, d) in self.pending.iter().zip(deltas) {
            slot.fetch_add(d, Relaxed);
        }
    }

    pub(crate) fn pending(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.pending[i].load(Relaxed))
    }

    pub(crate) fn process(&self) -> ProcessCounters {
        ProcessCounters {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            sets: self.sets.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_is_percent_with_two_decimals() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(1542, 238), 86.63);
        assert_eq!(hit_rate(2, 1), 66.67);
    }

    #[test]
    fn pending_counters_round_trip() {
        let c = Counters::default();
        c.add(Stat::Hit, 3);
        c.add(Stat::Error, 1);
        let taken = c.take_pending();
        assert_eq!(taken, [3, 0, 0, 1]);
        assert_eq!(c.pending(), [0; 4]);
        c.restore(taken);
        assert_eq!(c.pending(), [3, 0, 0, 1]);
        assert_eq!(c.process().hits, 3);
    }

    #[test]
    fn default_ttl_serializes_as_seconds() {
        #[derive(Serialize)]
        struct T {
            #[serde(serialize_with = "ser_secs")]
            d: Duration,
        }
        assert_eq!(
            serde_json::to_string(&T {
                d: Duration::from_secs(300)
            })
            .unwrap(),
            r#"{"d":300}"#
        );
        assert_eq!(
            serde_json::to_string(&T {
                d: Duration::from_millis(1500)
            })
            .unwrap(),
            r#"{"d":1.5}"#
        );
    }
}
