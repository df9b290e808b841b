//! [`QueryCacheBuilder`]: bounds, default TTL, and the map they configure.

use std::sync::Arc;
use std::time::Duration;

use super::epochs::Epochs;
use super::map::Map;
use super::stats::LocalCounters;
use super::{Inner, KeyLocks, QueryCache};
use crate::error::{Error, Result};
use crate::key;
use crate::memo::Flights;

/// Builds a [`QueryCache`]; see [`QueryCache::builder`].
///
/// ```
/// use std::time::Duration;
/// let cache = ormcache::QueryCacheBuilder::default()
///     .max_size(500)
///     .default_ttl(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(cache.default_ttl(), Duration::from_secs(5));
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct QueryCacheBuilder {
    max_size: u64,
    max_bytes: Option<u64>,
    default_ttl: Duration,
}

impl Default for QueryCacheBuilder {
    fn default() -> Self {
        Self {
            max_size: 1000,
            max_bytes: None,
            default_ttl: Duration::from_secs(60),
        }
    }
}

/// Shards of the map: a few per core, fewer for a small
/// cache so that each holds at least [`MIN_SHARD_ITEMS`] entries.
fn shards(max_size: u64) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mut shards = cores.saturating_mul(4).next_power_of_two();
    while shards > 1 && max_size / shards < MIN_SHARD_ITEMS {
        shards /= 2;
    }
    shards
}

const MIN_SHARD_ITEMS: u64 = 32;
/// The map for `capacity` (entries, or bytes with a byte budget) over `shards`
/// shards. Each shard holds an equal share, so the capacity is rounded down to a
/// multiple of the shards: the bound is never exceeded.
fn map(max_size: u64, capacity: u64, by_bytes: bool) -> Map {
    let mut shards = shards(max_size);
    while shards > 1 && capacity / shards == 0 {
        shards /= 2;
    }
    Map::new(shards as usize, capacity, by_bytes)
}

impl QueryCacheBuilder {
    /// The most entries held (default 1000, as in the seed).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::builder().max_size(10).build().unwrap();
    /// assert_eq!(cache.get_stats_sync().max_size, 10);
    /// ```
    pub fn max_size(mut self, entries: u64) -> Self {
        self.max_size = entries;
        self
    }

    /// A byte budget: entries are weighed by the length of their JSON encoding (a
    /// `HybridCache` charges the encoded size of the L2 value instead). Both bounds
    /// hold.
    ///
    /// ```
    /// let cache = ormcache::QueryCache::builder().max_bytes(1 << 20).build().unwrap();
    /// assert_eq!(cache.get_stats_sync().max_bytes, Some(1 << 20));
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The TTL of writes that give none (default 60 s, as in the seed).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::builder()
    ///     .default_ttl(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(cache.default_ttl(), Duration::from_secs(30));
    /// ```
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a zero or too long
    /// `default_ttl`, a zero `max_size` or a zero `max_bytes`.
    ///
    /// ```
    /// assert!(ormcache::QueryCache::builder().max_size(0).build().is_err());
    /// ```
    pub fn build(self) -> Result<QueryCache> {
        key::validate_ttl("build", "default_ttl", self.default_ttl).map_err(|_| {
            Error::invalid(
                "build",
                format!(
                    "default_ttl {:?} must be between 1 ms and {:?}",
                    self.default_ttl,
                    key::MAX_TTL
                ),
            )
        })?;
        if self.max_size == 0 {
            return Err(Error::invalid("build", "max_size must be at least 1"));
        }
        let counters = Arc::new(LocalCounters::default());
        let (map, min_weight) = match self.max_bytes {
            None => (map(self.max_size, self.max_size, false), 1),
            Some(0) => return Err(Error::invalid("build", "max_bytes must be at least 1")),
            Some(bytes) => {
                let min_weight = (bytes.div_ceil(self.max_size)).clamp(1, u32::MAX as u64) as u32;
                (map(self.max_size, bytes, true), min_weight)
            }
        };
        Ok(QueryCache {
            inner: Arc::new(Inner {
                map,
                locks: KeyLocks::default(),
                max_size: self.max_size,
                max_bytes: self.max_bytes,
                min_weight,
                default_ttl: self.default_ttl,
                counters,
                next_id: Default::default(),
                epochs: Epochs::default(),
                flights: Flights::default(),
                clock: quanta::Clock::new(),
            }),
        })
    }
}

impl Default for QueryCache {
    fn default() -> Self {
        // The default builder is valid by construction; fall back to the smallest
        // map rather than panic should that ever change.
        QueryCacheBuilder::default()
            .build()
            .unwrap_or_else(|_| QueryCache {
                inner: Arc::new(Inner {
                    map: Map::new(1, 1, false),
                    locks: KeyLocks::default(),
                    max_size: 1,
                    max_bytes: None,
                    min_weight: 1,
                    default_ttl: Duration::from_secs(60),
                    counters: Arc::new(LocalCounters::default()),
                    next_id: Default::default(),
                    epochs: Epochs::default(),
                    flights: Flights::default(),
                    clock: quanta::Clock::new(),
                }),
            })
    }
}
