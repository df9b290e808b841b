//! Always-on observations that the statistics do not hold, for the dashboard page
//! (`axum::dashboard`): a latency histogram (Redis round trips, invalidation lag)
//! and a bounded ring of recent coherence events (gaps, flushes, stream up/lost).
//!
//! Atomics only, no lock and no allocation when recording; nothing here is on the
//! L1 hit path. Readers compute rates and percentiles from the differences between
//! two reads, so reading changes nothing and any number of readers can poll.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Histogram buckets: bucket `i` counts durations in `[2^(i-1), 2^i)` µs (bucket 0:
/// under 1 µs; the last one: everything from 2^(BUCKETS-2) µs, about 17 s, up).
pub(crate) const BUCKETS: usize = 26;

/// Total and a log₂ histogram of durations (the count is the buckets' sum: one
/// shared line fewer written per record).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    sum_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// A read of a [`Histogram`]: cumulative since the cache was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct Summary {
    /// Durations recorded.
    pub(crate) count: u64,
    /// Their sum, in microseconds.
    pub(crate) sum_us: u64,
    /// `buckets[i]`: durations under `2^i` µs (and at least `2^(i-1)`).
    pub(crate) buckets: Vec<u64>,
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    // 0 → 0, 1 → 1, 2..=3 → 2, 4..=7 → 3, …
    let bits = (u64::BITS - us.leading_zeros()) as usize;
    bits.min(BUCKETS - 1)
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
        self.buckets[bucket(us)].fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn read(&self) -> Summary {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        Summary {
            count: buckets.iter().sum(),
            sum_us: self.sum_us.load(Relaxed),
            buckets,
        }
    }
}

/// What happened to a [`HybridCache`](crate::HybridCache)'s coherence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum EventKind {
    /// The whole L1 was flushed.
    Flush = 1,
    /// A lost invalidation message was detected.
    Gap = 2,
    /// The invalidation stream came up (after recovery).
    StreamUp = 3,
    /// The invalidation stream was lost: L1 degraded.
    StreamLost = 4,
}

impl EventKind {
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Flush,
            2 => Self::Gap,
            3 => Self::StreamUp,
            4 => Self::StreamLost,
            _ => return None,
        })
    }

    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Self::Flush => "flush",
            Self::Gap => "gap",
            Self::StreamUp => "stream_up",
            Self::StreamLost => "stream_lost",
        }
    }
}

/// How many recent events are kept.
pub(crate) const RECENT_EVENTS: usize = 64;

/// The last [`RECENT_EVENTS`] events, each a word: wall-clock milliseconds since
/// the Unix epoch, shifted left 8 bits, or'ed with its kind (0: an empty slot).
#[derive(Debug)]
pub(crate) struct Events {
    next: AtomicU64,
    slots: [AtomicU64; RECENT_EVENTS],
}

impl Default for Events {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// `flush`, `gap`, `stream_up` or `stream_lost`.
    pub(crate) kind: &'static str,
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Events {
    /// Records `kind` now.
    pub(crate) fn record(&self, kind: EventKind) {
        // 56 bits of milliseconds last two million years.
        let word = (unix_ms().min(u64::MAX >> 8) << 8) | kind as u64;
        let i = self.next.fetch_add(1, Relaxed);
        self.slots[(i % RECENT_EVENTS as u64) as usize].store(word, Relaxed);
    }

    /// The recent events, oldest first, and how many were recorded in all.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn recent(&self) -> (Vec<Event>, u64) {
        let total = self.next.load(Relaxed);
        let mut out: Vec<Event> = (total.saturating_sub(RECENT_EVENTS as u64)..total)
            .filter_map(|i| {
                let word = self.slots[(i % RECENT_EVENTS as u64) as usize].load(Relaxed);
                let kind = EventKind::from_u8((word & 0xff) as u8)?;
                Some(Event {
                    at_ms: word >> 8,
                    kind: kind.name(),
                })
            })
            .collect();
        // A writer racing this read may have stored a newer event in an older
        // slot: order by time.
        out.sort_by_key(|e| e.at_ms);
        (out, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_power_of_two_bucket() {
        let h = Histogram::default();
        for us in [0, 1, 3, 4, 1000, 1023, 1024] {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::MAX);
        let s = h.read();
        assert_eq!(s.count, 8);
        let mut expected = vec![0u64; BUCKETS];
        expected[0] = 1; // 0
        expected[1] = 1; // 1
        expected[2] = 1; // 3
        expected[3] = 1; // 4
        expected[10] = 2; // 1000, 1023
        expected[11] = 1; // 1024
        expected[BUCKETS - 1] = 1; // Duration::MAX, without a panic
        assert_eq!(s.buckets, expected);
    }

    #[test]
    fn the_ring_keeps_the_last_events_in_order() {
        let e = Events::default();
        assert_eq!(e.recent(), (vec![], 0));
        e.record(EventKind::Gap);
        e.record(EventKind::Flush);
        let (events, total) = e.recent();
        assert_eq!(total, 2);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["gap", "flush"]);
        assert!(events[0].at_ms > 1_700_000_000_000, "{events:?}");
        for _ in 0..200 {
            e.record(EventKind::StreamUp);
        }
        let (events, total) = e.recent();
        assert_eq!(total, 202);
        assert_eq!(events.len(), RECENT_EVENTS);
        assert!(events.iter().all(|e| e.kind == "stream_up"));
    }
}
