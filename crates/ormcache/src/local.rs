//! [`QueryCache`]: the in-process L1, on moka's sync cache.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A TSC-based clock where the CPU has a stable one (about half the cost of
/// `std::time::Instant::now` on an L1 hit), the OS clock elsewhere.
use quanta::Instant;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use serde::Serialize;

use crate::cache::{Cache, CacheValue, Ttl};
use crate::error::{Error, Result};
use crate::glob::GlobPattern;
use crate::glob::escape_glob;
use crate::key;
use crate::memo::{
    ComputeOptions, Epochs, Fill, FillTicket, Flights, LocalTicket, Lookup, Selector,
};
use crate::stats::{LocalStats, hit_rate};
use crate::tenant;

type Value = Arc<dyn Any + Send + Sync>;
type Hasher = foldhash::fast::RandomState;

#[derive(Clone)]
struct Entry {
    value: Value,
    expires_at: Instant,
    /// When the value was stored: a degraded `HybridCache` serves only young entries.
    inserted_at: Instant,
    /// The invalidation epochs when the value was read: an entry from before a
    /// clear, or from before a matching pattern clear or tag invalidation, is a miss.
    stamp: LocalTicket,
    weight: u32,
    /// Tags, for `invalidate_tag`.
    tags: Option<Arc<[String]>>,
    /// When the value expires where it came from (a `HybridCache` L2 entry): early
    /// refresh decides on that, not on the shorter L1 lifetime.
    origin_expires_at: Option<Instant>,
}

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

#[derive(Debug, Default)]
struct LocalCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    evictions: AtomicU64,
    type_mismatches: AtomicU64,
}

struct Inner {
    map: moka::sync::Cache<String, Entry, Hasher>,
    max_size: u64,
    max_bytes: Option<u64>,
    /// With a byte budget, the least weight an entry is charged, so that the entry
    /// bound holds too: `max_bytes / max_size`.
    min_weight: u32,
    default_ttl: Duration,
    counters: Arc<LocalCounters>,
    /// Orders `get_or_compute` fills against invalidations.
    epochs: Epochs,
    flights: Flights,
}

/// The in-process L1: bounded by entries (and optionally bytes), per-entry TTL exact
/// to the millisecond, typed values, no I/O.
///
/// Values are stored as `Arc<T>`; a hit hands out a clone of that `Arc` (no decoding,
/// no deep clone). Reading a key with another type than it was written with is a
/// miss, counted in `type_mismatches`. Eviction is moka's TinyLFU; expiry is checked
/// against each entry's own deadline on every read, so an expired entry is never
/// returned.
///
/// The methods here are synchronous; the [`Cache`] trait offers the same operations
/// as `async` methods, so code moves to [`DistributedCache`](crate::DistributedCache)
/// or [`HybridCache`](crate::HybridCache) unchanged.
///
/// ```
/// use std::time::Duration;
/// use ormcache::{QueryCache, Ttl};
///
/// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
/// cache.set("user:1", "John".to_string(), None).unwrap();
/// assert_eq!(cache.get::<String>("user:1").as_deref().map(String::as_str), Some("John"));
/// assert!(matches!(cache.ttl("user:1"), Ttl::Remaining(_)));
/// assert_eq!(cache.clear_pattern("user:*"), 1);
/// assert_eq!(cache.get::<String>("user:1"), None);
/// ```
#[derive(Clone)]
pub struct QueryCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryCache")
            .field("max_size", &self.inner.max_size)
            .field("max_bytes", &self.inner.max_bytes)
            .field("default_ttl", &self.inner.default_ttl)
            .field("entries", &self.inner.map.entry_count())
            .finish()
    }
}

/// Builds a [`QueryCache`]; see [`QueryCache::builder`].
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

impl QueryCacheBuilder {
    /// The most entries held (default 1000, as in the seed).
    pub fn max_size(mut self, entries: u64) -> Self {
        self.max_size = entries;
        self
    }

    /// A byte budget: entries are weighed by the length of their JSON encoding (or
    /// the size given to [`QueryCache::set_weighted`]). Both bounds hold.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The TTL of writes that give none (default 60 s, as in the seed).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a zero or too long
    /// `default_ttl`, a zero `max_size` or a zero `max_bytes`.
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
                    .weigher(|_k, e: &Entry| e.weight)
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

/// Counts the bytes a serializer writes, without keeping them.
struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut counter = ByteCounter(0);
    // A value that does not serialize is charged as one byte; it could not reach
    // Redis anyway, and the L1 holds it fine.
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 1,
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

impl QueryCache {
    /// A cache of at most `max_size` entries whose writes live `default_ttl` unless
    /// told otherwise.
    ///
    /// # Errors
    /// As [`QueryCacheBuilder::build`].
    pub fn new(max_size: u64, default_ttl: Duration) -> Result<Self> {
        Self::builder()
            .max_size(max_size)
            .default_ttl(default_ttl)
            .build()
    }

    /// A builder with the seed's defaults (1000 entries, 60 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::builder()
    ///     .max_size(10_000)
    ///     .max_bytes(64 * 1024 * 1024)
    ///     .default_ttl(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(cache.get_stats().max_size, 10_000);
    /// ```
    pub fn builder() -> QueryCacheBuilder {
        QueryCacheBuilder::default()
    }

    /// The default TTL.
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    fn live(&self, key: &str) -> Option<Entry> {
        let key = &*tenant::physical(key);
        let entry = self.inner.map.get(key)?;
        if entry.expires_at > Instant::now() && self.valid(key, &entry) {
            Some(entry)
        } else {
            None
        }
    }

    /// The value at `key` if it is live and of type `T`.
    #[inline]
    pub fn get<T: CacheValue>(&self, key: &str) -> Option<Arc<T>> {
        self.get_checked(key, None)
    }

    #[inline]
    fn valid(&self, key: &str, e: &Entry) -> bool {
        self.inner
            .epochs
            .valid(key, e.tags.as_deref(), e.stamp.global, e.stamp.selective)
    }

    /// The invalidation epochs (shared with an owning `HybridCache`).
    pub(crate) fn epochs(&self) -> &Epochs {
        &self.inner.epochs
    }

    /// `get`; with `max_age` the entry must have been stored less than that long ago.
    pub(crate) fn get_checked<T: CacheValue>(
        &self,
        key: &str,
        max_age: Option<Duration>,
    ) -> Option<Arc<T>> {
        let c = &self.inner.counters;
        let key = &*tenant::physical(key);
        let Some(entry) = self.inner.map.get(key) else {
            c.misses.fetch_add(1, Relaxed);
            return None;
        };
        let now = Instant::now();
        let fresh = entry.expires_at > now
            && self.valid(key, &entry)
            && max_age.is_none_or(|age| now.saturating_duration_since(entry.inserted_at) < age);
        if !fresh {
            c.misses.fetch_add(1, Relaxed);
            return None;
        }
        match entry.value.downcast::<T>() {
            Ok(v) => {
                c.hits.fetch_add(1, Relaxed);
                Some(v)
            }
            Err(_) => {
                c.type_mismatches.fetch_add(1, Relaxed);
                c.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Stores `value` at `key` for `ttl` (`None`: the default).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an empty or reserved key
    /// or a zero TTL.
    pub fn set<T: CacheValue>(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        self.set_arc(key, Arc::new(value), ttl)
    }

    /// Stores an already shared value (no copy).
    ///
    /// # Errors
    /// As [`QueryCache::set`].
    pub fn set_arc<T: CacheValue>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let weight = match self.inner.max_bytes {
            Some(_) => json_len(&*value),
            None => 1,
        };
        self.insert("set", key, value, ttl, weight)
    }

    /// Stores `value` charging `bytes` against the byte budget instead of its JSON
    /// length (when the caller knows the size already, e.g. the encoded L2 bytes).
    ///
    /// # Errors
    /// As [`QueryCache::set`].
    pub fn set_weighted<T: CacheValue>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl: Option<Duration>,
        bytes: u64,
    ) -> Result<()> {
        self.insert("set", key, value, ttl, bytes)
    }

    fn insert<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        value: Arc<T>,
        ttl: Option<Duration>,
        bytes: u64,
    ) -> Result<()> {
        key::validate(op, key)?;
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        key::validate_ttl(op, key, ttl)?;
        // A write invalidates fills in flight; the key's lock orders it after any
        // fill that already checked.
        self.inner.epochs.bump(key);
        let stamp = self.inner.epochs.ticket(key);
        self.put_guarded(key, value, ttl, stamp, bytes, || true);
        Ok(())
    }

    fn entry<T: CacheValue>(
        &self,
        value: Arc<T>,
        ttl: Duration,
        stamp: LocalTicket,
        bytes: u64,
    ) -> Entry {
        let now = Instant::now();
        Entry {
            value,
            expires_at: now + ttl,
            inserted_at: now,
            stamp,
            weight: bytes.clamp(self.inner.min_weight as u64, u32::MAX as u64) as u32,
            tags: None,
            origin_expires_at: None,
        }
    }

    /// Stores under the key's lock if `guard` still holds when the lock is held; the
    /// same lock orders [`remove_locked`](Self::remove_locked), so a fill that lost a
    /// race with an invalidation never lands after it. Key and TTL are pre-validated.
    pub(crate) fn put_guarded<T: CacheValue>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl: Duration,
        stamp: LocalTicket,
        bytes: u64,
        guard: impl FnOnce() -> bool,
    ) -> bool {
        self.put_tagged(key, value, ttl, stamp, bytes, None, guard)
    }

    /// [`put_guarded`](Self::put_guarded) with tags.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_tagged<T: CacheValue>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl: Duration,
        stamp: LocalTicket,
        bytes: u64,
        tags: Option<Arc<[String]>>,
        guard: impl FnOnce() -> bool,
    ) -> bool {
        let mut entry = self.entry(value, ttl, stamp, bytes);
        entry.tags = physical_tags(tags);
        self.put_entry(key, entry, guard)
    }

    /// [`put_tagged`](Self::put_tagged) of a copy whose source expires after
    /// `origin_ttl`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_origin<T: CacheValue>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl: Duration,
        origin_ttl: Option<Duration>,
        stamp: LocalTicket,
        bytes: u64,
        tags: Option<Arc<[String]>>,
        guard: impl FnOnce() -> bool,
    ) -> bool {
        let mut entry = self.entry(value, ttl, stamp, bytes);
        entry.tags = physical_tags(tags);
        entry.origin_expires_at = origin_ttl.map(|t| entry.inserted_at + t);
        self.put_entry(key, entry, guard)
    }

    fn put_entry(&self, key: &str, entry: Entry, guard: impl FnOnce() -> bool) -> bool {
        let result = self
            .inner
            .map
            .entry(tenant::physical(key).into_owned())
            .and_compute_with(|_| if guard() { Op::Put(entry) } else { Op::Nop });
        let stored = matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        );
        if stored {
            self.inner.counters.sets.fetch_add(1, Relaxed);
        }
        stored
    }

    /// The value and the remaining lifetime at its origin (for early refresh).
    pub(crate) fn get_with_origin_ttl<T: CacheValue>(
        &self,
        key: &str,
    ) -> Option<(Arc<T>, Duration)> {
        let e = self.live(key)?;
        let deadline = e.origin_expires_at.unwrap_or(e.expires_at);
        let v = e.value.downcast::<T>().ok()?;
        Some((v, deadline.saturating_duration_since(Instant::now())))
    }

    /// Removes under the key's lock (see [`put_guarded`](Self::put_guarded)); whether a
    /// live entry was there.
    pub(crate) fn remove_locked(&self, key: &str) -> bool {
        self.remove_physical(&tenant::physical(key))
    }

    /// [`remove_locked`](Self::remove_locked) of a key as stored.
    fn remove_physical(&self, key: &str) -> bool {
        let now = Instant::now();
        let result =
            self.inner
                .map
                .entry(key.to_owned())
                .and_compute_with(|current| match current {
                    Some(_) => Op::Remove,
                    None => Op::Nop,
                });
        matches!(result, moka::ops::compute::CompResult::Removed(e) if e.value().expires_at > now)
    }

    /// Removes the entries of the current scope matching the Redis glob `pattern`,
    /// each under its lock, after voiding fills in flight; how many were live.
    pub(crate) fn evict_pattern(&self, pattern: &str) -> u64 {
        let scope = Scope::current();
        let glob = GlobPattern::new(&format!("{}{pattern}", escape_glob(&scope.ns)));
        self.inner
            .epochs
            .invalidate_selective(Selector::Pattern(scope.ns.clone(), glob.clone()));
        let keys: Vec<Arc<String>> = self
            .inner
            .map
            .iter()
            .filter(|(k, _)| scope.contains(k) && glob.matches(k))
            .map(|(k, _)| k)
            .collect();
        keys.iter().filter(|k| self.remove_physical(k)).count() as u64
    }

    /// Removes the entries of the current scope carrying `tag`, each under its lock,
    /// after voiding fills in flight; how many were live.
    pub(crate) fn evict_tag(&self, tag: &str) -> u64 {
        let tag = tenant::physical(tag).into_owned();
        self.inner
            .epochs
            .invalidate_selective(Selector::Tag(tag.clone()));
        let keys: Vec<Arc<String>> = self
            .inner
            .map
            .iter()
            .filter(|(_, e)| e.tags.as_deref().is_some_and(|t| t.contains(&tag)))
            .map(|(k, _)| k)
            .collect();
        keys.iter().filter(|k| self.remove_physical(k)).count() as u64
    }

    /// Stores `value` with tags: [`invalidate_tag`](Self::invalidate_tag) of any of
    /// them removes it.
    ///
    /// # Errors
    /// As [`set`](Self::set); an empty tag or one over 1 KiB.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(100, Duration::from_secs(60)).unwrap();
    /// cache.set_with_tags("user:1", 1u32, None, &["users"]).unwrap();
    /// cache.set("post:1", 2u32, None).unwrap();
    /// assert_eq!(cache.invalidate_tag("users").unwrap(), 1);
    /// assert!(!cache.exists("user:1") && cache.exists("post:1"));
    /// ```
    pub fn set_with_tags<T: CacheValue, S: AsRef<str>>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        key::validate("set_with_tags", key)?;
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        key::validate_ttl("set_with_tags", key, ttl)?;
        for t in tags {
            key::validate_tag("set_with_tags", t.as_ref())?;
        }
        let value = Arc::new(value);
        let bytes = match self.inner.max_bytes {
            Some(_) => json_len(&*value),
            None => 1,
        };
        let tags: Arc<[String]> = tags.iter().map(|t| t.as_ref().to_owned()).collect();
        self.inner.epochs.bump(key);
        let stamp = self.inner.epochs.ticket(key);
        self.put_tagged(key, value, ttl, stamp, bytes, Some(tags), || true);
        Ok(())
    }

    /// Removes every entry tagged `tag`; how many. In the L1 this walks the entries;
    /// in Redis ([`DistributedCache::invalidate_tag`](crate::DistributedCache::invalidate_tag))
    /// it is O(1).
    ///
    /// # Errors
    /// An empty tag or one over 1 KiB.
    pub fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        key::validate_tag("invalidate_tag", tag)?;
        // Entries stamped before this (fills in flight included) that carry the tag
        // are misses from now on; the walk frees their memory.
        Ok(self.evict_tag(tag))
    }

    /// Drops every entry at once (moka invalidates lazily).
    pub(crate) fn invalidate_all(&self) {
        self.inner.map.invalidate_all();
    }

    /// Removes `key`; whether a live entry was there.
    pub fn delete(&self, key: &str) -> bool {
        self.inner.epochs.bump(key);
        self.remove_locked(key)
    }

    /// Whether `key` holds a live entry (of any type).
    pub fn exists(&self, key: &str) -> bool {
        self.live(key).is_some()
    }

    /// The remaining lifetime of `key`.
    pub fn ttl(&self, key: &str) -> Ttl {
        match self.live(key) {
            Some(e) => Ttl::Remaining(e.expires_at.saturating_duration_since(Instant::now())),
            None => Ttl::Missing,
        }
    }

    /// Gives a live entry a new TTL from now; whether it existed.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a zero TTL.
    pub fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        key::validate_ttl("expire", key, ttl)?;
        let now = Instant::now();
        let result = self
            .inner
            .map
            .entry(tenant::physical(key).into_owned())
            .and_compute_with(|current| match current {
                Some(e) if e.value().expires_at > now => {
                    let mut updated = e.into_value();
                    updated.expires_at = now + ttl;
                    Op::Put(updated)
                }
                _ => Op::Nop,
            });
        Ok(matches!(
            result,
            moka::ops::compute::CompResult::ReplacedWith(_)
        ))
    }

    /// Removes every entry of the current scope (the unscoped entries, or the
    /// current tenant's); the number of live entries removed.
    pub fn clear(&self) -> u64 {
        let scope = Scope::current();
        self.inner
            .epochs
            .invalidate_selective(Selector::Scope(scope.ns.clone()));
        self.remove_where(|k| scope.contains(k))
    }

    /// Removes the entries matching the Redis glob `pattern` (reserved keys
    /// excepted); the number of live entries removed.
    pub fn clear_pattern(&self, pattern: &str) -> u64 {
        let glob = GlobPattern::new(pattern);
        if let Some(lit) = glob.literal() {
            // No wildcard: one lookup, not a walk.
            return match std::str::from_utf8(lit) {
                Ok(k) if !key::is_reserved(k) => u64::from(self.delete(k)),
                _ => 0,
            };
        }
        self.evict_pattern(pattern)
    }

    /// Removes the stored keys for which `pred` holds; the number of live entries
    /// removed.
    fn remove_where(&self, pred: impl Fn(&str) -> bool) -> u64 {
        let now = Instant::now();
        let mut removed = 0;
        for (k, _) in self.inner.map.iter() {
            if pred(k.as_str())
                && self
                    .inner
                    .map
                    .remove(k.as_str())
                    .is_some_and(|e| e.expires_at > now)
            {
                removed += 1;
            }
        }
        removed
    }

    /// The values at `keys`, in order.
    pub fn get_many<T: CacheValue, K: AsRef<str>>(&self, keys: &[K]) -> Vec<Option<Arc<T>>> {
        keys.iter().map(|k| self.get(k.as_ref())).collect()
    }

    /// Removes `keys`; how many were live.
    pub fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> u64 {
        keys.iter().filter(|k| self.delete(k.as_ref())).count() as u64
    }

    /// Counters and sizes.
    pub fn get_stats(&self) -> LocalStats {
        let map = &self.inner.map;
        map.run_pending_tasks();
        let c = &self.inner.counters;
        let (hits, misses) = (c.hits.load(Relaxed), c.misses.load(Relaxed));
        LocalStats {
            size: map.entry_count(),
            max_size: self.inner.max_size,
            hits,
            misses,
            hit_rate: hit_rate(hits, misses),
            default_ttl: self.inner.default_ttl,
            sets: c.sets.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            type_mismatches: c.type_mismatches.load(Relaxed),
            weighted_bytes: self.inner.max_bytes.map(|_| map.weighted_size()),
            max_bytes: self.inner.max_bytes,
        }
    }

    /// Runs moka's pending maintenance (evictions) now; tests and stats use it.
    pub fn run_pending_tasks(&self) {
        self.inner.map.run_pending_tasks();
    }
}

impl Cache for QueryCache {
    type Stats = LocalStats;

    async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>> {
        key::validate("get", key)?;
        Ok(QueryCache::get(self, key))
    }

    async fn set<T: CacheValue>(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        QueryCache::set(self, key, value, ttl)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(QueryCache::delete(self, key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(QueryCache::exists(self, key))
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        Ok(QueryCache::ttl(self, key))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        QueryCache::expire(self, key, ttl)
    }

    async fn clear(&self) -> Result<u64> {
        Ok(QueryCache::clear(self))
    }

    async fn clear_pattern(&self, pattern: &str) -> Result<u64> {
        Ok(QueryCache::clear_pattern(self, pattern))
    }

    async fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Arc<T>>>> {
        for k in keys {
            key::validate("get_many", k.as_ref())?;
        }
        Ok(QueryCache::get_many(self, keys))
    }

    async fn set_many<T: CacheValue, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        for (k, _) in &entries {
            key::validate("set_many", k.as_ref())?;
        }
        for (k, v) in entries {
            QueryCache::set(self, k.as_ref(), v, ttl)?;
        }
        Ok(())
    }

    async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<u64> {
        Ok(QueryCache::delete_many(self, keys))
    }

    async fn get_stats(&self) -> Result<LocalStats> {
        Ok(QueryCache::get_stats(self))
    }

    async fn ping(&self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    async fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        QueryCache::set_with_tags(self, key, value, ttl, tags)
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        QueryCache::invalidate_tag(self, tag).map(|_| ())
    }

    fn __compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        options: &ComputeOptions,
        loader: F,
    ) -> impl Future<Output = std::result::Result<Arc<T>, Arc<E>>> + Send
    where
        T: CacheValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, E>> + Send,
    {
        crate::memo::run(self, key, ttl, options, loader)
    }

    fn __default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }
}

/// Tags as stored: in the current tenant's namespace.
fn physical_tags(tags: Option<Arc<[String]>>) -> Option<Arc<[String]>> {
    match tenant::current_namespace() {
        None => tags,
        Some(ns) => tags.map(|ts| ts.iter().map(|t| format!("{ns}{t}")).collect()),
    }
}

/// The keys a clear may touch: the unscoped ones (no reserved key), or those of
/// the current tenant.
struct Scope {
    ns: String,
}

impl Scope {
    fn current() -> Self {
        Self {
            ns: tenant::current_namespace().unwrap_or_default(),
        }
    }

    fn contains(&self, stored: &str) -> bool {
        crate::memo::in_scope(&self.ns, stored)
    }
}

impl Fill for QueryCache {
    fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    async fn lookup<T: CacheValue>(&self, key: &str, with_ttl: bool) -> Lookup<T> {
        match self.live(key) {
            Some(e) => match e.value.downcast::<T>() {
                Ok(v) => {
                    self.inner.counters.hits.fetch_add(1, Relaxed);
                    let left =
                        with_ttl.then(|| e.expires_at.saturating_duration_since(Instant::now()));
                    Lookup::Hit(v, left)
                }
                Err(_) => {
                    self.inner.counters.type_mismatches.fetch_add(1, Relaxed);
                    self.inner.counters.misses.fetch_add(1, Relaxed);
                    Lookup::Miss
                }
            },
            None => {
                self.inner.counters.misses.fetch_add(1, Relaxed);
                Lookup::Miss
            }
        }
    }

    async fn begin_fill(
        &self,
        key: &str,
        _lease_ttl: Duration,
        _exclusive: bool,
        _tags: &[String],
    ) -> FillTicket {
        FillTicket {
            local: Some(self.inner.epochs.ticket(key)),
            ..FillTicket::default()
        }
    }

    async fn end_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &Arc<T>,
        ttl: Duration,
        tags: &[String],
        ticket: FillTicket,
    ) {
        let Some(t) = ticket.local else { return };
        let bytes = match self.inner.max_bytes {
            Some(_) => json_len(&**value),
            None => 1,
        };
        let tags = (!tags.is_empty()).then(|| tags.iter().cloned().collect::<Arc<[String]>>());
        self.put_tagged(key, Arc::clone(value), ttl, t, bytes, tags, || {
            self.inner.epochs.unchanged(key, t)
        });
    }

    async fn abort_fill(&self, _key: &str, _ticket: FillTicket) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> QueryCache {
        QueryCache::new(100, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn hit_returns_the_same_arc() {
        let c = cache();
        let v = Arc::new(vec![1u8; 1000]);
        c.set_arc("k", Arc::clone(&v), None).unwrap();
        let got = c.get::<Vec<u8>>("k").unwrap();
        assert!(Arc::ptr_eq(&v, &got));
    }

    #[test]
    fn type_mismatch_is_a_counted_miss() {
        let c = cache();
        c.set("k", 1u32, None).unwrap();
        assert_eq!(c.get::<String>("k"), None);
        let s = c.get_stats();
        assert_eq!((s.hits, s.misses, s.type_mismatches), (0, 1, 1));
    }

    #[test]
    fn cached_none_is_not_a_miss() {
        let c = cache();
        c.set::<Option<String>>("absent", None, None).unwrap();
        assert_eq!(c.get::<Option<String>>("absent").as_deref(), Some(&None));
        assert_eq!(c.get::<Option<String>>("other"), None);
    }

    #[test]
    fn expiry_is_exact() {
        let c = cache();
        c.set("k", 1u8, Some(Duration::from_millis(30))).unwrap();
        assert!(c.exists("k"));
        std::thread::sleep(Duration::from_millis(31));
        assert_eq!(c.get::<u8>("k"), None);
        assert!(!c.exists("k"));
        assert_eq!(c.ttl("k"), Ttl::Missing);
        assert!(!c.delete("k"));
    }

    #[test]
    fn expire_extends_and_refuses_zero() {
        let c = cache();
        c.set("k", 1u8, Some(Duration::from_millis(20))).unwrap();
        assert!(c.expire("k", Duration::from_secs(10)).unwrap());
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(c.get::<u8>("k").as_deref(), Some(&1));
        assert!(c.ttl("k").remaining().unwrap() > Duration::from_secs(9));
        assert!(!c.expire("missing", Duration::from_secs(1)).unwrap());
        assert!(
            c.expire("k", Duration::ZERO)
                .unwrap_err()
                .is_invalid_input()
        );
        assert!(
            c.set("k", 1u8, Some(Duration::ZERO))
                .unwrap_err()
                .is_invalid_input()
        );
    }

    #[test]
    fn clear_pattern_uses_redis_globs_and_spares_reserved() {
        let c = cache();
        for k in ["user:1", "user:2", "user:10", "post:1", "a*b", "axb"] {
            c.set(k, 0u8, None).unwrap();
        }
        assert_eq!(c.clear_pattern("user:?"), 2);
        assert!(c.exists("user:10"));
        assert_eq!(c.clear_pattern(&crate::escape_glob("a*b")), 1);
        assert!(c.exists("axb"));
        assert_eq!(c.clear(), 3);
        assert_eq!(c.get_stats().size, 0);
    }

    #[test]
    fn entry_bound_holds() {
        let c = QueryCache::new(10, Duration::from_secs(60)).unwrap();
        for i in 0..1000 {
            c.set(&format!("k{i}"), i, None).unwrap();
        }
        c.run_pending_tasks();
        assert!(c.get_stats().size <= 10, "{:?}", c.get_stats());
    }

    #[test]
    fn byte_budget_and_entry_bound_both_hold() {
        let c = QueryCache::builder()
            .max_size(50)
            .max_bytes(10_000)
            .build()
            .unwrap();
        for i in 0..500 {
            c.set(&format!("big{i}"), "x".repeat(1000), None).unwrap();
        }
        c.run_pending_tasks();
        let s = c.get_stats();
        assert!(s.weighted_bytes.unwrap() <= 10_000, "{s:?}");
        assert!(s.size <= 10, "{s:?}");
        for i in 0..500 {
            c.set(&format!("small{i}"), 1u8, None).unwrap();
        }
        c.run_pending_tasks();
        assert!(c.get_stats().size <= 50, "{:?}", c.get_stats());
    }

    #[test]
    fn invalid_construction_is_an_error() {
        assert!(QueryCache::new(0, Duration::from_secs(1)).is_err());
        assert!(QueryCache::new(1, Duration::ZERO).is_err());
        assert!(QueryCache::builder().max_bytes(0).build().is_err());
    }

    #[test]
    fn stats_shape() {
        let c = cache();
        c.set("a", 1u8, None).unwrap();
        c.get::<u8>("a");
        c.get::<u8>("b");
        let json = serde_json::to_value(c.get_stats()).unwrap();
        assert_eq!(json["size"], 1);
        assert_eq!(json["max_size"], 100);
        assert_eq!(json["hits"], 1);
        assert_eq!(json["misses"], 1);
        assert_eq!(json["hit_rate"], 50.0);
        assert_eq!(json["default_ttl"], 60);
    }
}
