//! [`QueryCache`]: the in-process L1, on its own sharded map (`map.rs`).
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the cache, its synchronous API (`*_sync`), fills |
//! | `future.rs` | the async API: the [`Cache`] methods, also inherent |
//! | `builder.rs` | [`QueryCacheBuilder`] and the map it configures |
//! | `map.rs` | the map: sharded, read-locked hits, CLOCK eviction on insert |
//! | `clear.rs` | clears of a scope, a pattern, a tag |
//! | `stats.rs` | counters and `get_stats_sync` |
//! | `epochs.rs` | invalidation bookkeeping: what a clear, a tag or a write voids |

mod builder;
mod clear;
mod epochs;
mod future;
mod map;
mod peek;
mod stats;

use std::any::Any;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A TSC-based clock where the CPU has a stable one (about half the cost of
/// `std::time::Instant::now` on an L1 hit), the OS clock elsewhere.
use quanta::Instant;

use serde::Serialize;

use crate::cache::{CacheValue, Ttl};
use crate::error::Result;
use crate::key;
use crate::memo::{Fill, FillTicket, Flights, Lookup};
use crate::observe::Removal;
use crate::tenant;

pub use builder::QueryCacheBuilder;
use epochs::Stamp;
pub(crate) use epochs::{Epochs, LocalTicket};
use map::{Evicted, Map};
use stats::LocalCounters;
pub(crate) use stats::Striped;

type Value = Arc<dyn Any + Send + Sync>;

/// What the map holds. A hit reads it under its shard's read lock and clones only
/// the value's `Arc`.
#[derive(Clone)]
struct Entry {
    value: Value,
    expires_at: Instant,
    meta: Meta,
}

#[derive(Clone)]
struct Meta {
    /// Which store this is (unique in the cache): a removal that must take only the
    /// entry it found compares it.
    id: u64,
    /// When the value was stored: a degraded `HybridCache` serves only young entries.
    inserted_at: Instant,
    /// The epochs, scope and tags it was stored under: a hit checks them.
    stamp: Stamp,
    weight: u32,
    /// When the value expires where it came from (a `HybridCache` L2 entry; the
    /// entry's own deadline for a value of this process): early refresh decides on
    /// that, not on the shorter L1 lifetime.
    origin_expires_at: Instant,
    /// Whether `origin_expires_at` is an origin's (else it follows `expires_at`).
    has_origin: bool,
    /// A cached "not found" (`None`): its hits are also counted as such (found
    /// only with the `metrics` feature; `false` without).
    null: bool,
}

struct Inner {
    map: Map,
    /// The keys' locks, in stripes: a store checks what it must under the key's
    /// lock and a removal takes the same lock, so a fill that lost a race with an
    /// invalidation never lands after it. A hit takes none.
    locks: KeyLocks,
    max_size: u64,
    max_bytes: Option<u64>,
    /// With a byte budget, the least weight an entry is charged, so that the entry
    /// bound holds too: `max_bytes / max_size`.
    min_weight: u32,
    default_ttl: Duration,
    counters: Arc<LocalCounters>,
    /// The next [`Meta::id`].
    next_id: std::sync::atomic::AtomicU64,
    /// What invalidations voided; orders fills against them.
    epochs: Epochs,
    flights: Flights,
    /// The clock every deadline is set and checked by: quanta's TSC clock (the
    /// one `quanta::Instant::now` reads) held here, which spares each read the
    /// thread-local lookup of a mock clock that `Instant::now` makes first.
    clock: quanta::Clock,
}

/// The in-process L1: bounded by entries (and optionally bytes), per-entry TTL exact
/// to the millisecond, typed values, no I/O.
///
/// Values are stored as `Arc<T>`; a hit hands out a clone of that `Arc` (no decoding,
/// no deep clone). Reading a key with another type than it was written with is a
/// miss, counted in `type_mismatches`. The map is the L1's own: shards of a hash
/// table, CLOCK eviction on insert (an entry read since the hand last passed
/// survives it, so hot entries outlast a scan of new keys); expiry is checked
/// against each entry's own deadline on every read, under the shard's read lock, so
/// an expired entry is never returned. A hit takes only the read side of its
/// shard's lock (readers never wait for each other) and copies nothing but the
/// value's `Arc`, whatever was invalidated before: tag invalidations and clears
/// void entries through per-tag and per-scope generations that only the entries
/// carrying them read.
///
/// Two APIs, the same operations: the async methods (`get`, `set`, …) are those of
/// the [`Cache`](crate::Cache) trait, so code moves to
/// [`DistributedCache`](crate::DistributedCache) or
/// [`HybridCache`](crate::HybridCache) unchanged; each has a synchronous twin named
/// `…_sync` that answers at once (nothing here waits).
///
/// ```
/// use std::time::Duration;
/// use ormcache::{QueryCache, Ttl};
///
/// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
/// cache.set_sync("user:1", "John".to_string(), None).unwrap();
/// assert_eq!(cache.get_sync::<String>("user:1").as_deref().map(String::as_str), Some("John"));
/// assert!(matches!(cache.ttl_sync("user:1"), Ttl::Remaining(_)));
/// assert_eq!(cache.clear_pattern_sync("user:*"), 1);
/// assert_eq!(cache.get_sync::<String>("user:1"), None);
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
            .field("entries", &self.inner.map.len())
            .finish()
    }
}

/// What a read found at a key (see [`QueryCache::probe`]).
enum Probe<R> {
    /// A live entry, and what the reader took from it.
    Live(R),
    /// No live entry: none, one voided by an invalidation, or one too old.
    Miss,
    /// An entry past its deadline (its id): the reader may free it.
    Expired(u64),
}

/// Stripes of key locks (see [`Inner::locks`]).
struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
    hasher: foldhash::fast::FixedState,
}

/// Key lock stripes: a few times the cores, so that two writers rarely share one.
const KEY_LOCKS: usize = 256;

impl Default for KeyLocks {
    fn default() -> Self {
        Self {
            stripes: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x10c5),
        }
    }
}

impl KeyLocks {
    /// The lock of the stored `key`; nothing may be called on the cache under it
    /// but the map itself.
    fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(key) as usize) % self.stripes.len();
        // The lock guards no data: a panic under it leaves nothing to repair.
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the bytes a serializer writes, without keeping them.
struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len() as u64);
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

impl QueryCache {
    /// A cache of at most `max_size` entries whose writes live `default_ttl` unless
    /// told otherwise.
    ///
    /// # Errors
    /// As [`QueryCacheBuilder::build`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(100, Duration::from_secs(5)).unwrap();
    /// assert_eq!(cache.get_stats_sync().max_size, 100);
    /// ```
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
    /// assert_eq!(cache.get_stats_sync().max_size, 10_000);
    /// ```
    pub fn builder() -> QueryCacheBuilder {
        QueryCacheBuilder::default()
    }

    /// The default TTL.
    ///
    /// ```
    /// assert_eq!(ormcache::QueryCache::default().default_ttl().as_secs(), 60);
    /// ```
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    /// The time by the cache's clock.
    #[inline]
    fn now(&self) -> Instant {
        self.inner.clock.now()
    }

    /// What `take` makes of the live entry at the stored `key` (one that is
    /// unexpired, voided by no invalidation and, with `max_age`, stored less than
    /// that long ago), under its shard's read lock.
    #[inline]
    fn probe<R>(
        &self,
        key: &str,
        max_age: Option<Duration>,
        take: impl FnOnce(&Entry, Instant) -> R,
    ) -> Probe<R> {
        let now = self.now();
        let epochs = &self.inner.epochs;
        let found = self.inner.map.get_with(key, |e| {
            if e.expires_at <= now {
                return Probe::Expired(e.meta.id);
            }
            if !epochs.valid(&e.meta.stamp)
                || epochs.pending_clear(key, &e.meta.stamp)
                || max_age
                    .is_some_and(|age| now.saturating_duration_since(e.meta.inserted_at) >= age)
            {
                return Probe::Miss;
            }
            Probe::Live(take(e, now))
        });
        found.unwrap_or(Probe::Miss)
    }

    /// What `take` makes of the live entry at `key` (as the caller names it); an
    /// expired one is freed.
    fn live<R>(&self, key: &str, take: impl FnOnce(&Entry, Instant) -> R) -> Option<R> {
        if key::is_reserved_name(key) {
            return None;
        }
        let key = tenant::physical(key);
        match self.probe(&key, None, take) {
            Probe::Live(r) => Some(r),
            Probe::Miss => None,
            Probe::Expired(id) => {
                self.drop_expired(&key, id);
                None
            }
        }
    }

    /// Frees the entry `id`, found expired at the stored `key`, if it is still
    /// there and still expired (the map evicts by size only; an expired entry goes
    /// when read, or when evicted).
    #[cold]
    fn drop_expired(&self, key: &str, id: u64) {
        let expired = |cur: &Entry| cur.meta.id == id && cur.expires_at <= self.now();
        if self.remove_if(key, expired).is_some() {
            self.inner.counters.meter.get().evicted(Removal::Expired);
        }
    }

    /// Whether `e`, stored at `key`, is unexpired and void by no invalidation.
    #[inline]
    fn is_live(&self, key: &str, e: &Entry, now: Instant) -> bool {
        let epochs = &self.inner.epochs;
        e.expires_at > now
            && epochs.valid(&e.meta.stamp)
            && !epochs.pending_clear(key, &e.meta.stamp)
    }

    /// The value at `key` if it is live and of type `T` ([`get`](Self::get) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// An empty or reserved key (`stats`, `__oc…`) is never found, here or by the
    /// other `_sync` calls (where [`get`](Self::get) refuses it): a tenant's entries
    /// are stored under `__oc:t:{tenant}:`, and only that tenant's scope reaches them.
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", 7u32, None).unwrap();
    /// assert_eq!(cache.get_sync::<u32>("k").as_deref(), Some(&7));
    /// assert_eq!(cache.get_sync::<String>("k"), None); // another type: a miss
    /// ```
    #[inline]
    pub fn get_sync<T: CacheValue>(&self, key: &str) -> Option<Arc<T>> {
        self.get_checked(key, None)
    }

    /// The invalidation epochs (shared with an owning `HybridCache`).
    pub(crate) fn epochs(&self) -> &Epochs {
        &self.inner.epochs
    }

    /// `get`; with `max_age` the entry must have been stored less than that long ago.
    #[inline]
    pub(crate) fn get_checked<T: CacheValue>(
        &self,
        key: &str,
        max_age: Option<Duration>,
    ) -> Option<Arc<T>> {
        if key::is_reserved_name(key) {
            return None;
        }
        let c = &self.inner.counters;
        let key = tenant::physical(key);
        match self.probe(&key, max_age, |e, _| {
            (Arc::clone(&e.value).downcast::<T>().ok(), e.meta.null)
        }) {
            Probe::Live((Some(v), null)) => {
                c.hit();
                if crate::observe::ON && null {
                    c.negative_hit();
                }
                Some(v)
            }
            Probe::Live((None, _)) => {
                c.mismatch();
                None
            }
            Probe::Miss => {
                c.miss();
                None
            }
            Probe::Expired(id) => {
                c.miss();
                self.drop_expired(&key, id);
                None
            }
        }
    }

    /// Stores `value` at `key` for `ttl` (`None`: the default) ([`set`](Self::set)
    /// is the [`Cache`](crate::Cache) form).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an empty or reserved key
    /// or a zero TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", "v".to_string(), Some(Duration::from_secs(5))).unwrap();
    /// assert!(cache.set_sync("k", 1u8, Some(Duration::ZERO)).unwrap_err().is_invalid_input());
    /// ```
    pub fn set_sync<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.insert("set", key, Arc::new(value), ttl, None)
    }

    /// Stores a shared value: a write of this process (validated, voids fills of the
    /// key in flight).
    fn insert<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        value: Arc<T>,
        ttl: Option<Duration>,
        tags: Option<&[String]>,
    ) -> Result<()> {
        key::validate(op, key)?;
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        key::validate_ttl(op, key, ttl)?;
        for t in tags.unwrap_or_default() {
            key::validate_tag(op, t)?;
        }
        let bytes = self.weight_of(&*value);
        // A write invalidates fills in flight; the key's lock orders it after any
        // fill that already checked.
        self.inner.epochs.bump(key);
        let stamp = self.inner.epochs.ticket(key);
        let entry = self.entry(value, ttl, None, stamp, bytes, tags);
        self.put_entry(key, entry, || true);
        Ok(())
    }

    /// The weight of a value in the byte budget: its JSON length (1 without one).
    fn weight_of<T: Serialize + ?Sized>(&self, value: &T) -> u64 {
        match self.inner.max_bytes {
            Some(_) => json_len(value),
            None => 1,
        }
    }

    /// An entry of the current scope, stamped `ticket`, with `tags` as the caller
    /// names them.
    fn entry<T: CacheValue>(
        &self,
        value: Arc<T>,
        ttl: Duration,
        origin_ttl: Option<Duration>,
        ticket: LocalTicket,
        bytes: u64,
        tags: Option<&[String]>,
    ) -> Entry {
        let now = self.now();
        let ns = tenant::current_namespace();
        let tags: Vec<String> = match &ns {
            None => tags.unwrap_or_default().to_vec(),
            Some(ns) => tags
                .unwrap_or_default()
                .iter()
                .map(|t| format!("{ns}{t}"))
                .collect(),
        };
        let null = crate::observe::ON && crate::observe::serializes_to_null(&*value);
        let expires_at = now + ttl;
        Entry {
            value,
            expires_at,
            meta: Meta {
                id: self
                    .inner
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                inserted_at: now,
                stamp: self.inner.epochs.stamp(ticket, ns.as_deref(), &tags),
                weight: bytes.clamp(self.inner.min_weight as u64, u32::MAX as u64) as u32,
                origin_expires_at: origin_ttl.map_or(expires_at, |t| now + t),
                has_origin: origin_ttl.is_some(),
                null,
            },
        }
    }

    /// Stores a copy (of an L2 value whose source expires after `origin_ttl`) under
    /// the key's lock if `guard` still holds then and no invalidation since `stamp`
    /// voided it; the same lock orders [`remove_locked`](Self::remove_locked), so a
    /// fill that lost a race with an invalidation never lands after it. Key and TTL
    /// are pre-validated. Whether it was stored.
    // `tags` by value: the `HybridCache` callers hand over what they hold.
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
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
        let entry = self.entry(value, ttl, origin_ttl, stamp, bytes, tags.as_deref());
        self.put_entry(key, entry, guard)
    }

    fn put_entry(&self, key: &str, entry: Entry, guard: impl FnOnce() -> bool) -> bool {
        let stored_key = tenant::physical(key).into_owned();
        let epochs = &self.inner.epochs;
        let (id, patterns) = (entry.meta.id, entry.meta.stamp.ticket.patterns);
        let evicted = {
            let _locked = self.inner.locks.lock(&stored_key);
            if !(guard() && epochs.admits(&stored_key, &entry.meta.stamp)) {
                return false;
            }
            self.inner.map.insert(&stored_key, entry, self.now())
        };
        // Counted (and dropped) out of the key's lock.
        let mut refused = false;
        for e in evicted {
            let c = &self.inner.counters;
            match e {
                Evicted::Size(e) => {
                    refused |= e.meta.id == id;
                    c.evictions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    c.meter.get().evicted(Removal::Size);
                }
                Evicted::Expired(e) => {
                    refused |= e.meta.id == id;
                    c.meter.get().evicted(Removal::Expired);
                }
            }
        }
        if refused {
            // Heavier than a shard holds: counted as evicted at once.
            return false;
        }
        // A pattern clear announced just after the check may have walked past the
        // key before the value landed: it removes the value itself then.
        if epochs.pattern_cleared_since(&stored_key, patterns) {
            self.remove_if(&stored_key, |e| e.meta.id == id);
            return false;
        }
        let map = &self.inner.map;
        self.inner.counters.set(|| (map.len(), map.weight()));
        true
    }

    /// Every hit so far.
    pub(crate) fn hit_count(&self) -> u64 {
        self.inner
            .counters
            .hits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a hit found by a lookup that does not count
    /// ([`get_with_origin_ttl`](Self::get_with_origin_ttl)).
    pub(crate) fn count_hit(&self) {
        self.inner.counters.hit();
    }

    /// The value and the remaining lifetime at its origin (for early refresh).
    pub(crate) fn get_with_origin_ttl<T: CacheValue>(
        &self,
        key: &str,
    ) -> Option<(Arc<T>, Duration)> {
        let (v, left) = self.live(key, |e, now| {
            let left = e.meta.origin_expires_at.saturating_duration_since(now);
            (Arc::clone(&e.value).downcast::<T>().ok(), left)
        })?;
        Some((v?, left))
    }

    /// Removes under the key's lock (see [`put_origin`](Self::put_origin)); whether
    /// a live entry was there.
    pub(crate) fn remove_locked(&self, key: &str) -> bool {
        self.remove_physical(&tenant::physical(key))
    }

    /// [`remove_locked`](Self::remove_locked) of a key as stored.
    fn remove_physical(&self, key: &str) -> bool {
        let now = self.now();
        match self.remove_if(key, |_| true) {
            Some(e) => {
                self.inner.counters.meter.get().evicted(Removal::Explicit);
                self.is_live(key, &e, now)
            }
            None => false,
        }
    }

    /// Removes the entry at the stored `key` if `pred` holds for it, under its lock;
    /// the entry removed.
    fn remove_if(&self, key: &str, pred: impl FnOnce(&Entry) -> bool) -> Option<Entry> {
        let _locked = self.inner.locks.lock(key);
        self.inner.map.remove_if(key, pred)
    }

    /// Stores `value` with tags: [`invalidate_tag_sync`](Self::invalidate_tag_sync)
    /// of any of them removes it ([`set_with_tags`](Self::set_with_tags) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// # Errors
    /// As [`set_sync`](Self::set_sync); an empty tag or one over 1 KiB.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(100, Duration::from_secs(60)).unwrap();
    /// cache.set_with_tags_sync("user:1", 1u32, None, &["users"]).unwrap();
    /// cache.set_sync("post:1", 2u32, None).unwrap();
    /// assert_eq!(cache.invalidate_tag_sync("users").unwrap(), 1);
    /// assert!(!cache.exists_sync("user:1") && cache.exists_sync("post:1"));
    /// ```
    pub fn set_with_tags_sync<T: CacheValue, S: AsRef<str>>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_owned()).collect();
        self.insert("set_with_tags", key, Arc::new(value), ttl, Some(&tags))
    }

    /// Drops every entry at once.
    pub(crate) fn invalidate_all(&self) {
        self.inner.map.clear();
    }

    /// Removes `key`; whether a live entry was there ([`delete`](Self::delete) is
    /// the [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", 1u8, None).unwrap();
    /// assert!(cache.delete_sync("k"));
    /// assert!(!cache.delete_sync("k"));
    /// ```
    pub fn delete_sync(&self, key: &str) -> bool {
        if key::is_reserved_name(key) {
            return false;
        }
        self.inner.epochs.bump(key);
        let removed = self.remove_locked(key);
        if removed {
            self.inner.counters.deleted();
        }
        removed
    }

    /// Whether `key` holds a live entry (of any type) ([`exists`](Self::exists) is
    /// the [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", 1u8, None).unwrap();
    /// assert!(cache.exists_sync("k") && !cache.exists_sync("other"));
    /// ```
    pub fn exists_sync(&self, key: &str) -> bool {
        self.live(key, |_, _| ()).is_some()
    }

    /// The remaining lifetime of `key` ([`ttl`](Self::ttl) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// use ormcache::Ttl;
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", 1u8, None).unwrap();
    /// assert!(matches!(cache.ttl_sync("k"), Ttl::Remaining(_)));
    /// assert_eq!(cache.ttl_sync("other"), Ttl::Missing);
    /// ```
    pub fn ttl_sync(&self, key: &str) -> Ttl {
        match self.live(key, |e, now| e.expires_at.saturating_duration_since(now)) {
            Some(left) => Ttl::Remaining(left),
            None => Ttl::Missing,
        }
    }

    /// Gives a live entry a new TTL from now; whether it existed
    /// ([`expire`](Self::expire) is the [`Cache`](crate::Cache) form).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for a zero TTL or an empty
    /// or reserved key.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("k", 1u8, None).unwrap();
    /// assert!(cache.expire_sync("k", Duration::from_secs(600)).unwrap());
    /// assert!(!cache.expire_sync("other", Duration::from_secs(1)).unwrap());
    /// ```
    pub fn expire_sync(&self, key: &str, ttl: Duration) -> Result<bool> {
        key::validate("expire", key)?;
        key::validate_ttl("expire", key, ttl)?;
        let now = self.now();
        let stored = tenant::physical(key);
        let _locked = self.inner.locks.lock(&stored);
        // In place, under the shard's write lock: the entry keeps its id.
        Ok(self.inner.map.update(&stored, |e| {
            if !self.is_live(&stored, e, now) {
                return false;
            }
            e.expires_at = now + ttl;
            if !e.meta.has_origin {
                e.meta.origin_expires_at = e.expires_at;
            }
            true
        }))
    }

    /// The values at `keys`, in order ([`get_many`](Self::get_many) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("a", 1u8, None).unwrap();
    /// let got = cache.get_many_sync::<u8, _>(&["a", "b"]);
    /// assert_eq!(got[0].as_deref(), Some(&1));
    /// assert_eq!(got[1], None);
    /// ```
    pub fn get_many_sync<T: CacheValue, K: AsRef<str>>(&self, keys: &[K]) -> Vec<Option<Arc<T>>> {
        keys.iter().map(|k| self.get_sync(k.as_ref())).collect()
    }

    /// Removes `keys`; how many were live ([`delete_many`](Self::delete_many) is the
    /// [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("a", 1u8, None).unwrap();
    /// assert_eq!(cache.delete_many_sync(&["a", "b"]), 1);
    /// ```
    pub fn delete_many_sync<K: AsRef<str>>(&self, keys: &[K]) -> u64 {
        keys.iter().filter(|k| self.delete_sync(k.as_ref())).count() as u64
    }

    /// Nothing to run: the map evicts on insert. Kept for the tests written
    /// against a map that evicted later.
    #[cfg(test)]
    fn run_pending_tasks(&self) {}
}

impl Fill for QueryCache {
    fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    fn meter(&self) -> &crate::observe::MemoMeter {
        &self.inner.counters.meter.get().memo
    }

    async fn lookup<T: CacheValue>(&self, key: &str, with_ttl: bool) -> Lookup<T> {
        let c = &self.inner.counters;
        let found = self.live(key, |e, now| {
            let left = with_ttl.then(|| e.expires_at.saturating_duration_since(now));
            (Arc::clone(&e.value).downcast::<T>().ok(), e.meta.null, left)
        });
        match found {
            Some((Some(v), null, left)) => {
                c.hit();
                if crate::observe::ON && null {
                    c.negative_hit();
                }
                Lookup::Hit(v, left)
            }
            Some((None, ..)) => {
                c.mismatch();
                Lookup::Miss
            }
            None => {
                c.miss();
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
        let bytes = self.weight_of(&**value);
        let tags = (!tags.is_empty()).then_some(tags);
        let entry = self.entry(Arc::clone(value), ttl, None, t, bytes, tags);
        self.put_entry(key, entry, || self.inner.epochs.unchanged(key, t));
    }

    async fn abort_fill(&self, _key: &str, _ticket: FillTicket) {}
}

#[cfg(test)]
mod tests;
