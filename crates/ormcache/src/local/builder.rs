//! [`QueryCacheBuilder`]: bounds, default TTL, and the moka map they configure.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use moka::notification::RemovalCause;
use quanta::Instant;

use super::epochs::Epochs;
use super::stats::LocalCounters;
use super::{Entry, Hasher, Inner, QueryCache};
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

/// Expiry of each entry at its own deadline.
struct PerEntryExpiry;

impl moka::Expiry<String, Entry> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(Instant::now()))
    }
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
        let listener_counters = Arc::clone(&counters);
        let builder = moka::sync::Cache::builder()
            .expire_after(PerEntryExpiry)
            .eviction_listener(move |_k, _v, cause| {
                listener_counters.meter.get().evicted(cause);
                if cause == RemovalCause::Size {
                    listener_counters.evictions.fetch_add(1, Relaxed);
                }
            });
        let (map, min_weight) = match self.max_bytes {
            None => (
                builder
                    .max_capacity(self.max_size)
                    .build_with_hasher(Hasher::default()),
                1,
            ),
            Some(0) => return Err(Error::invalid("build", "max_bytes must be at least 1")),
            Some(bytes) => {
                let min_weight = (bytes.div_ceil(self.max_size)).clamp(1, u32::MAX as u64) as u32;
                let map = builder
                    .max_capacity(bytes)
                    .weigher(|_k, e: &Entry| e.meta.weight)
                    .build_with_hasher(Hasher::default());
                (map, min_weight)
            }
        };
        Ok(QueryCache {
            inner: Arc::new(Inner {
                map,
                max_size: self.max_size,
                max_bytes: self.max_bytes,
                min_weight,
                default_ttl: self.default_ttl,
                counters,
                epochs: Epochs::default(),
                flights: Flights::default(),
            }),
        })
    }
}

impl Default for QueryCache {
    fn default() -> Self {
        // The default builder is valid by construction; fall back to the smallest
        // valid cache rather than panic should that ever change.
        QueryCacheBuilder::default()
            .build()
            .unwrap_or_else(|_| QueryCache {
                inner: Arc::new(Inner {
                    map: moka::sync::Cache::builder()
                        .max_capacity(1)
                        .build_with_hasher(Hasher::default()),
                    max_size: 1,
                    max_bytes: None,
                    min_weight: 1,
                    default_ttl: Duration::from_secs(60),
                    counters: Arc::default(),
                    epochs: Epochs::default(),
                    flights: Flights::default(),
                }),
            })
    }
}
