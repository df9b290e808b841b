//! What the dashboard page (`axum::dashboard`) shows of a [`HybridCache`]'s
//! coherence: read from atomics and the peer table, no round trip.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Instant;

use serde::Serialize;

use super::HybridCache;
use crate::telemetry::{Event, Summary};

/// Reads and writes through a [`HybridCache`], cumulative.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HybridReads {
    pub(crate) reads: u64,
    pub(crate) l1_hits: u64,
    pub(crate) l2_hits: u64,
    /// Writes, deletes and clears that reached Redis (each published its message).
    pub(crate) writes: u64,
}

/// One other instance on the channel.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerView {
    /// Its instance id, in hex.
    pub(crate) id: String,
    /// Milliseconds since its last message or acknowledgement.
    pub(crate) last_heard_ms: u64,
    /// Whether it is within the liveness window (writes wait for it).
    pub(crate) live: bool,
    /// The highest of our sequence numbers it acknowledged.
    pub(crate) acked: u64,
    /// It let a confirmation time out and is not waited for until it acknowledges.
    pub(crate) unresponsive: bool,
}

/// This instance's coherence.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CoherenceView {
    pub(crate) coherent: bool,
    /// This instance's id, in hex.
    pub(crate) instance: String,
    /// Our own last sequence number.
    pub(crate) seq: u64,
    pub(crate) peers: Vec<PeerView>,
    pub(crate) peers_live: usize,
    pub(crate) peers_unresponsive: usize,
    pub(crate) confirmed: u64,
    pub(crate) unconfirmed: u64,
    pub(crate) invalidations_sent: u64,
    pub(crate) invalidations_received: u64,
    pub(crate) flushes: u64,
    pub(crate) gaps: u64,
    pub(crate) fallbacks: u64,
    pub(crate) backlog: usize,
    /// Write → every live peer acknowledged, per confirmed write.
    pub(crate) lag: Summary,
}

impl HybridCache {
    pub(crate) fn observe(&self) -> (HybridReads, CoherenceView, (Vec<Event>, u64)) {
        let inner = &self.inner;
        let c = &inner.counters;
        let reads = HybridReads {
            reads: inner.gets(),
            l1_hits: inner.l1_hits(),
            l2_hits: c.l2_hits.load(Relaxed),
            writes: c.sent.load(Relaxed),
        };
        let window = inner.liveness_window();
        let now = Instant::now();
        let (mut peers, (peers_live, peers_unresponsive)) = inner
            .peers
            .lock()
            .map(|p| (p.list(now), p.count(window, now)))
            .unwrap_or_default();
        peers.sort_unstable_by_key(|p| p.1);
        let peers = peers
            .into_iter()
            .map(|(id, silent, acked, unresponsive)| PeerView {
                id: format!("{id:016x}"),
                last_heard_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                live: silent < window,
                acked,
                unresponsive,
            })
            .collect();
        let coherence = CoherenceView {
            coherent: inner.coherent.load(SeqCst),
            instance: format!("{:016x}", inner.id),
            seq: inner.seq.load(Relaxed),
            peers,
            peers_live,
            peers_unresponsive,
            confirmed: c.confirmed.load(Relaxed),
            unconfirmed: c.unconfirmed.load(Relaxed),
            invalidations_sent: c.sent.load(Relaxed),
            invalidations_received: c.received.load(Relaxed),
            flushes: c.flushes.load(Relaxed),
            gaps: c.gaps.load(Relaxed),
            fallbacks: c.fallbacks.load(Relaxed),
            backlog: inner.backlog.lock().map(|b| b.len()).unwrap_or_default(),
            lag: inner.lag.read(),
        };
        (reads, coherence, inner.events.recent())
    }
}
