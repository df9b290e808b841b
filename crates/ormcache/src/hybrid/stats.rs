//! The statistics of a [`HybridCache`](super::HybridCache).

use serde::Serialize;

use crate::stats::{DistributedStats, LocalStats};

/// Statistics of a [`HybridCache`](crate::HybridCache), in the seed's shape:
/// `{"l1": {...}, "l2": {...}, "combined_hit_rate": ...}` plus coherence figures.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HybridStats {
    /// The L1's statistics.
    pub l1: LocalStats,
    /// The L2's statistics (`None` while Redis cannot be asked).
    pub l2: Option<DistributedStats>,
    /// Reads answered by L1 or L2, in percent of all reads (an L1 hit is counted
    /// once, by the L1: reads of [`HybridCache::l1`](crate::HybridCache::l1)
    /// itself count too).
    pub combined_hit_rate: f64,
    /// Coherence and failure figures of this instance.
    pub coherence: CoherenceStats,
}

/// Coherence and failure figures of one [`HybridCache`](crate::HybridCache) instance.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoherenceStats {
    /// The invalidation stream is up and L2 trusted.
    pub coherent: bool,
    /// Invalidation messages published.
    pub invalidations_sent: u64,
    /// Invalidation messages received from other instances.
    pub invalidations_received: u64,
    /// Whole-L1 flushes (resubscription, lost message, restart, remote clear).
    pub flushes: u64,
    /// Lost messages detected.
    pub gaps: u64,
    /// Reads and writes that Redis could not serve and that fell back.
    pub fallbacks: u64,
    /// L1 fills dropped because an invalidation raced them.
    pub fills_discarded: u64,
    /// Invalidations waiting for Redis.
    pub backlog: usize,
    /// Times the backlog overflowed into a clear of the prefix.
    pub backlog_overflows: u64,
    /// Times the invalidation stream was (re)established.
    pub resubscriptions: u64,
    /// Writes wait for the other instances to apply their invalidations
    /// ([`HybridBuilder::confirm_invalidations`](crate::HybridBuilder::confirm_invalidations)).
    pub confirm_invalidations: bool,
    /// Other instances on the channel heard within the liveness window (under
    /// [`Protocol::Fleet`](crate::Protocol::Fleet), where heartbeats are not
    /// broadcast: those that acknowledged or sent something).
    pub peers: usize,
    /// Of those, the ones not waited for since they let a confirmation time out
    /// (until they acknowledge again).
    pub peers_unresponsive: usize,
    /// Invalidations that every instance waited for acknowledged before the write
    /// returned (writes that waited for nobody are not counted).
    pub confirmed: u64,
    /// Times a peer did not acknowledge an invalidation within the timeout.
    pub unconfirmed: u64,
    /// Pub/sub messages and Redis tracking pushes this instance's subscriber read
    /// (what the fleet delivered to it: invalidations, acknowledgements,
    /// heartbeats).
    pub deliveries: u64,
    /// L1 keys evicted because Redis reported a write by any client
    /// ([`Protocol::Fleet`](crate::Protocol::Fleet)'s `CLIENT TRACKING`).
    pub tracked_evictions: u64,
}
