//! The L1's counters (atomics on the hot path) and its [`LocalStats`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};

use super::QueryCache;
use crate::stats::{LocalStats, hit_rate};

/// A counter in cache-line-sized stripes: a hit on two cores never bounces one line
/// between them, and on the threads that own a stripe it is no atomic
/// read-modify-write either.
///
/// The first [`OWNED`] threads of the process (numbered in order of first count)
/// each own a stripe: only that thread writes it, so an increment is a relaxed
/// load and store (no `lock` prefix, no lost update). Later threads share the
/// [`SHARED`] other stripes and add atomically. Its `fetch_add` and `load` take an
/// (ignored) ordering, as `AtomicU64`'s do, so that it replaces one in place.
#[derive(Default)]
pub(crate) struct Striped {
    owned: [Padded; OWNED],
    shared: [Padded; SHARED],
}

/// One stripe, alone on its cache line (two lines: the adjacent-line prefetcher).
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

const OWNED: usize = 16;
const SHARED: usize = 4;

impl std::fmt::Debug for Striped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.sum().fmt(f)
    }
}

/// The number of the current thread (in order of first use; never reused).
#[inline]
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    NUMBER
        .try_with(|n| {
            if n.get() == usize::MAX {
                n.set(NEXT.fetch_add(1, Relaxed));
            }
            n.get()
        })
        .unwrap_or(usize::MAX)
}

impl Striped {
    /// Adds `n` (the ordering is always relaxed).
    #[inline]
    pub(crate) fn fetch_add(&self, n: u64, _: Ordering) {
        let t = thread_number();
        match self.owned.get(t) {
            // Only thread `t` writes this stripe.
            Some(own) => own.0.store(own.0.load(Relaxed).wrapping_add(n), Relaxed),
            None => {
                self.shared[t % SHARED].0.fetch_add(n, Relaxed);
            }
        }
    }

    /// The sum of the stripes (the ordering is always relaxed).
    pub(crate) fn load(&self, _: Ordering) -> u64 {
        self.sum()
    }

    #[inline]
    fn incr(&self) {
        self.fetch_add(1, Relaxed);
    }

    fn sum(&self) -> u64 {
        self.owned
            .iter()
            .chain(&self.shared)
            .fold(0u64, |n, p| n.wrapping_add(p.0.load(Relaxed)))
    }
}

#[derive(Debug, Default)]
pub(super) struct LocalCounters {
    pub(super) hits: Striped,
    pub(super) misses: Striped,
    pub(super) sets: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) type_mismatches: AtomicU64,
    /// The metrics handles (feature `metrics`; nothing without it).
    pub(super) meter: crate::observe::L1Cell,
}

impl LocalCounters {
    #[inline]
    pub(super) fn hit(&self) {
        self.hits.incr();
        self.meter.get().level.hits.increment(1);
    }

    #[inline]
    pub(super) fn miss(&self) {
        self.misses.incr();
        self.meter.get().level.misses.increment(1);
    }

    /// A hit on a cached "not found" (also counted by [`hit`](Self::hit)).
    pub(super) fn negative_hit(&self) {
        self.meter.get().level.negative_hits.increment(1);
    }

    /// A value of another type: a miss, counted as such too.
    pub(super) fn mismatch(&self) {
        self.type_mismatches.fetch_add(1, Relaxed);
        self.misses.incr();
        let m = &self.meter.get().level;
        m.misses.increment(1);
        m.mismatch();
    }

    /// A write stored; `entries` and `weight` are the map's sizes after it (read
    /// only with metrics on).
    #[inline]
    pub(super) fn set(&self, sizes: impl FnOnce() -> (u64, u64)) {
        self.sets.fetch_add(1, Relaxed);
        if crate::observe::ON {
            let m = self.meter.get();
            m.level.sets.increment(1);
            let (entries, weight) = sizes();
            m.entries.set(entries as f64);
            m.weight.set(weight as f64);
        }
    }

    /// A delete that removed a live entry.
    pub(super) fn deleted(&self) {
        self.meter.get().level.deletes.increment(1);
    }
}

impl QueryCache {
    /// Labels this L1's metrics `cache` (a `HybridCache`'s prefix) unless it was
    /// used before (its handles are registered at first use).
    pub(crate) fn name_metrics(&self, cache: &std::sync::Arc<str>) {
        self.inner.counters.meter.name(cache);
    }

    /// Counters and sizes, synchronously ([`get_stats`](Self::get_stats) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// `size` counts the entries held, which may include entries a tag
    /// invalidation or a clear already voided (they are never returned, and go
    /// when overwritten, expired or evicted).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("a", 1u8, None).unwrap();
    /// cache.get_sync::<u8>("a");
    /// cache.get_sync::<u8>("b");
    /// let s = cache.get_stats_sync();
    /// assert_eq!((s.size, s.hits, s.misses, s.hit_rate), (1, 1, 1, 50.0));
    /// ```
    pub fn get_stats_sync(&self) -> LocalStats {
        let map = &self.inner.map;
        let c = &self.inner.counters;
        if crate::observe::ON {
            let m = c.meter.get();
            m.entries.set(map.len() as f64);
            m.weight.set(map.weight() as f64);
        }
        let (hits, misses) = (c.hits.sum(), c.misses.sum());
        LocalStats {
            size: map.len(),
            max_size: self.inner.max_size,
            hits,
            misses,
            hit_rate: hit_rate(hits, misses),
            default_ttl: self.inner.default_ttl,
            sets: c.sets.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            type_mismatches: c.type_mismatches.load(Relaxed),
            weighted_bytes: self.inner.max_bytes.map(|_| map.weight()),
            max_bytes: self.inner.max_bytes,
        }
    }
}
