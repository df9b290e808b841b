//! [`HybridCache`]: L1 + L2, kept coherent across processes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cache::{CacheValue, Ttl};
use crate::coherence::{Backlog, Op, Peers, Sequences};
use crate::distributed::DistributedCache;
use crate::error::Result;
use crate::key;
use crate::local::LocalTicket;
use crate::local::QueryCache;
use crate::local::Striped;
use crate::observe::{Counted, HybridMeter};
use crate::stats::hit_rate;

mod ack;
mod builder;
mod fill;
mod fleet;
mod inner;
#[cfg(feature = "axum")]
mod observe;
#[cfg(feature = "axum")]
pub(crate) use observe::{CoherenceView, HybridReads};
mod pending;
mod stats;
mod sync;
mod tasks;

pub use builder::{HybridBuilder, Protocol};
use inner::Lifecycle;
pub use stats::{CoherenceStats, HybridStats};

/// What [`Protocol::Fleet`] adds to an instance.
#[derive(Debug)]
struct FleetState {
    /// The inboxes of all instances: this followed by an instance id.
    inboxes: String,
    /// This instance's inbox: the messages of writes to keys it holds, and its own
    /// heartbeats.
    inbox: String,
    /// `CLIENT TRACKING` is on for the L2's connections, redirected to the
    /// subscriber connection: reads are tracked (`CLIENT CACHING YES`).
    tracking: AtomicBool,
    /// The L2 connections' ids when tracking was turned on: a different id later
    /// means a replaced connection, whose tracking (and the copies read through
    /// it) is lost.
    tracked: Mutex<Vec<i64>>,
    /// Where tracking is redirected: the subscriber connection.
    redirect: Mutex<Option<crate::distributed::Redirect>>,
    /// On a cluster: sharded pub/sub, and every read tracked (not opt-in).
    sharded: bool,
}

/// The instance's counters; those that are also metrics are [`Counted`].
#[derive(Debug, Default)]
struct Counters {
    /// Gets not answered by an L1 hit (striped: no shared line, no `lock`
    /// prefix). L1 hits are the L1's own count: a hit counts once, in the L1.
    gets_past_l1: Striped,
    l2_hits: AtomicU64,
    fallbacks: Counted,
    fills_discarded: Counted,
    sent: Counted,
    received: Counted,
    flushes: Counted,
    gaps: Counted,
    backlog_overflows: Counted,
    resubscriptions: Counted,
    confirmed: Counted,
    unconfirmed: Counted,
    /// Every pub/sub message and tracking push the subscriber connection read.
    deliveries: AtomicU64,
    /// Keys evicted by Redis tracking pushes (writes by any client).
    tracked_evictions: AtomicU64,
}

impl Inner {
    /// Hits in L1: the L1's count (reads of it through
    /// [`HybridCache::l1`] included).
    fn l1_hits(&self) -> u64 {
        self.l1.hit_count()
    }

    /// Every get, L1 hits included.
    fn gets(&self) -> u64 {
        self.counters
            .gets_past_l1
            .load(Relaxed)
            .wrapping_add(self.l1_hits())
    }
}

impl Counters {
    /// Counters whose metrics carry the label `cache`.
    fn metered(cache: &Arc<str>) -> Self {
        use crate::observe::names as n;
        let m = |name| Counted::new(HybridMeter::counter(name, cache, &[]));
        Self {
            gets_past_l1: Striped::default(),
            l2_hits: AtomicU64::new(0),
            fallbacks: m(n::FALLBACKS),
            fills_discarded: Counted::new(HybridMeter::counter(
                n::FILLS_DISCARDED,
                cache,
                &[("reason", "invalidated")],
            )),
            sent: m(n::INV_SENT),
            received: m(n::INV_RECEIVED),
            flushes: m(n::L1_FLUSHES),
            gaps: m(n::GAPS),
            backlog_overflows: m(n::BACKLOG_OVERFLOWS),
            resubscriptions: m(n::RESUBSCRIPTIONS),
            confirmed: m(n::INV_CONFIRMED),
            unconfirmed: m(n::INV_UNCONFIRMED),
            deliveries: AtomicU64::new(0),
            tracked_evictions: AtomicU64::new(0),
        }
    }
}

struct Inner {
    l1: QueryCache,
    l2: DistributedCache,
    id: u64,
    channel: String,
    /// Where the other instances acknowledge our messages.
    ack_channel: String,
    seq: AtomicU64,
    /// The invalidation stream is up and L2 is trusted.
    coherent: AtomicBool,
    sequences: Mutex<Sequences>,
    /// The other instances, as waited for by our writes.
    peers: Mutex<Peers>,
    /// Notified on every acknowledgement addressed to us.
    acked: Notify,
    /// Wakes the task that sends our acknowledgements.
    wake_acker: Arc<Notify>,
    confirm_timeout: Option<Duration>,
    backlog: Mutex<Backlog>,
    backlog_pending: AtomicBool,
    /// Invalidations queued during the current outage, for the aggregated warning.
    queued: crate::coherence::Tally,
    replay_lock: tokio::sync::Mutex<()>,
    wake_recovery: Arc<Notify>,
    resubscribe: Arc<Notify>,
    own_heartbeat: Mutex<Instant>,
    identity: Mutex<Option<String>>,
    counters: Counters,
    /// Recent gaps, flushes and stream changes (the dashboard's event list).
    events: crate::telemetry::Events,
    /// Write → every peer acknowledged, per confirmed write (invalidation lag).
    lag: crate::telemetry::Histogram,
    /// Metrics beyond the counters (feature `metrics`).
    meter: HybridMeter,
    tasks: crate::tasks::Tasks,
    degraded_max_age: Duration,
    l1_max_ttl: Duration,
    heartbeat_interval: Duration,
    max_backlog: usize,
    flights: crate::memo::Flights,
    /// `Some` under [`Protocol::Fleet`].
    fleet: Option<FleetState>,
}

/// L1 + L2, coherent across processes: the seed's `HybridCache(l1, l2)` without its
/// stale L1s.
///
/// Reads go L1 → L2 → miss; an L2 hit fills L1 with a TTL no longer than the entry's
/// remaining L2 TTL (and [`l1_max_ttl`](HybridBuilder::l1_max_ttl)). Every write,
/// delete, expire, clear and pattern clear goes to Redis together with an
/// invalidation message (same round trip), which the other instances apply to their
/// L1 and acknowledge; the call returns once they have (or after
/// [`confirm_invalidations`](HybridBuilder::confirm_invalidations)' timeout,
/// 1 s by default). So once a write has returned, the next read through any live
/// instance is fresh. See the crate docs, "Consistency", for the exact bound, what
/// it does not cover (an instance that joined a moment ago, a peer that timed out),
/// and why it holds.
///
/// Which instances get a message is the [`Protocol`]'s choice. Under the default,
/// [`Protocol::Fleet`], a write of a key goes only to the instances that hold it in
/// L1 (they registered when they read it) and only they acknowledge, fills publish
/// nothing, and Redis `CLIENT TRACKING` evicts L1 copies when any other Redis
/// client writes, deletes or expires a key or Redis evicts it; the cost of a write
/// does not grow with the fleet. Under [`Protocol::Broadcast`] every instance gets
/// and acknowledges every message.
///
/// Reads never fail on Redis: they fall back to L1 (entries younger than
/// `degraded_max_age`) or miss. Writes and invalidations report Redis failures (the
/// shared cache did not take them) but are not lost: the affected keys join a
/// backlog that is replayed, and every L1 copy evicted, before L2 is trusted again.
///
/// On a Redis Cluster (an L2 built with `cluster_nodes`) the same holds. Under the
/// fleet protocol messages use sharded pub/sub (each channel lives on one shard)
/// and each primary tracks the keys read from it; under the broadcast protocol
/// messages are published through any node and Redis forwards them to every node.
/// When a node the subscriber depends on goes away, the stream ends (or the
/// heartbeat watchdog notices the silence), L1 degrades to `degraded_max_age`
/// and the subscriber connects again. Recovery (replay, L1 flush) runs once it is
/// subscribed again and the reachable primaries answer `INFO`; the identity
/// compared afterwards is every primary's run and replication id, so a primary
/// that comes back restarted, or a replica promoted in its place, triggers the
/// recovery again. The staleness bound is the single-server one.
///
/// ```no_run
/// use std::time::Duration;
/// use ormcache::{DistributedCache, HybridCache, QueryCache};
///
/// # async fn demo() -> ormcache::Result<()> {
/// let l1 = QueryCache::new(1_000, Duration::from_secs(60))?;
/// let l2 = DistributedCache::builder()
///     .redis_url("redis://localhost:6379")
///     .connect_lazily(true) // start even while Redis is down
///     .build()
///     .await?;
/// let cache = HybridCache::new(l1, l2)?;
/// cache.set("user:1", "John".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("user:1").await?.as_deref().map(String::as_str), Some("John"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HybridCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for HybridCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridCache")
            .field("l1", &self.inner.l1)
            .field("l2", &self.inner.l2)
            .field("coherent", &self.inner.coherent.load(Relaxed))
            .finish()
    }
}

impl HybridCache {
    /// Combines an L1 and an L2 with the default settings.
    ///
    /// # Errors
    /// As [`HybridBuilder::build`]: outside a tokio runtime.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(l2: ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let l1 = ormcache::QueryCache::new(1_000, Duration::from_secs(60))?;
    /// let cache = ormcache::HybridCache::new(l1, l2)?;
    /// # Ok(()) }
    /// ```
    pub fn new(l1: QueryCache, l2: DistributedCache) -> Result<Self> {
        Self::builder(l1, l2).build()
    }

    /// A builder over an L1 and an L2.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(l1: ormcache::QueryCache, l2: ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let cache = ormcache::HybridCache::builder(l1, l2)
    ///     .degraded_max_age(Duration::from_secs(1))
    ///     .l1_max_ttl(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(l1: QueryCache, l2: DistributedCache) -> HybridBuilder {
        HybridBuilder {
            l1,
            l2,
            degraded_max_age: Duration::from_secs(2),
            l1_max_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_millis(500),
            max_backlog: 10_000,
            confirm_timeout: Some(Duration::from_secs(1)),
            protocol: None,
        }
    }

    /// The L1.
    pub fn l1(&self) -> &QueryCache {
        &self.inner.l1
    }

    /// The L2.
    pub fn l2(&self) -> &DistributedCache {
        &self.inner.l2
    }

    /// Whether the invalidation stream is up and L2 trusted (else L1 is degraded).
    pub fn is_coherent(&self) -> bool {
        self.inner.coherent.load(SeqCst)
    }

    /// Waits until the cache is coherent, up to `timeout` (`Duration::MAX`: no
    /// limit); whether it is.
    ///
    /// # Cancel safety
    /// Cancel-safe (it only reads a flag).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(cache: ormcache::HybridCache) {
    /// if !cache.wait_coherent(Duration::from_secs(5)).await {
    ///     eprintln!("invalidation stream not up yet: L1 serves young entries only");
    /// }
    /// # }
    /// ```
    pub async fn wait_coherent(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        while !self.is_coherent() {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The value at `key`: L1, then L2 (filling L1), else `None`.
    ///
    /// While the invalidation stream is down, L1 is not trusted: L2 answers, and
    /// only if Redis fails does L1 serve entries younger than `degraded_max_age`.
    /// Redis failures are counted, never returned.
    ///
    /// # Errors
    /// Invalid key only.
    ///
    /// # Cancel safety
    /// Cancel-safe; a dropped read changes nothing (L1 is filled
    /// only with a complete L2 answer).
    pub fn get<'a, T: CacheValue>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Arc<T>>>> + Send + 'a {
        Get {
            cache: self,
            key,
            past_l1: None,
        }
    }

    /// The L1 hit of [`get`](Self::get), or `Err(coherent)` to go past L1.
    #[inline]
    fn get_from_l1<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>, bool> {
        let inner = &self.inner;
        let coherent = inner.coherent.load(SeqCst);
        if coherent && let Some(v) = inner.l1.get_checked::<T>(key, None) {
            return Ok(Some(v));
        }
        Err(coherent)
    }

    /// [`get`](Self::get) after L1 did not answer.
    async fn get_past_l1<T: CacheValue>(
        &self,
        key: &str,
        coherent: bool,
    ) -> Result<Option<Arc<T>>> {
        let inner = &self.inner;
        inner.counters.gets_past_l1.fetch_add(1, Relaxed);
        if inner.backlog_pending.load(SeqCst) {
            // An invalidation has not reached Redis yet: L2 may hold what it removes.
            inner.counters.fallbacks.fetch_add(1, Relaxed);
            inner.wake_recovery.notify_one();
            return Ok(self.degraded_l1(key, coherent));
        }
        let ticket = inner.ticket(key);
        let reply = inner
            .read_holding(
                |holder| async move { inner.l2.get_holding::<T>(key, holder.as_ref()).await },
            )
            .await;
        match reply {
            Ok(Some(found)) => {
                inner.counters.l2_hits.fetch_add(1, Relaxed);
                if coherent {
                    inner.fill(key, &found, ticket);
                }
                Ok(Some(found.value))
            }
            Ok(None) => Ok(None),
            Err(e) if e.is_invalid_input() => Err(e),
            Err(e) => {
                inner.counters.fallbacks.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "L2 read failed; falling back to L1");
                Ok(self.degraded_l1(key, coherent))
            }
        }
    }

    /// The L1 answer when L2 cannot be used: young entries only.
    fn degraded_l1<T: CacheValue>(&self, key: &str, coherent: bool) -> Option<Arc<T>> {
        if coherent {
            // L1 was already asked and missed.
            return None;
        }
        let inner = &self.inner;
        let v = inner.l1.get_checked::<T>(key, Some(inner.degraded_max_age));
        if v.is_some() {
            inner.meter.stale_degraded.increment(1);
        }
        v
    }

    /// Stores `value` in L2 and L1 and evicts every other instance's L1 copy.
    ///
    /// # Errors
    /// Invalid key or TTL, encode errors, oversized values; Redis failures (the
    /// write did not reach the shared cache, or its outcome is unknown): then this
    /// process's L1 copy is evicted and the key joins the backlog, so that whatever
    /// L2 holds for it is removed, and every L1 copy evicted, once Redis is back.
    ///
    /// # Cancel safety
    /// Dropped before its request can have left (while encoding),
    /// nothing happened. Dropped later, the write is treated as done: this
    /// process's copy is evicted at once (its next read goes to L2, which holds
    /// the old or the new value), the invalidation message is published from a
    /// task of the cache (so every peer evicts, and no gap in the message
    /// numbers makes them flush), and nothing is confirmed.
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        key::validate("set", key)?;
        let inner = &self.inner;
        let ttl = ttl.unwrap_or(inner.l2.default_ttl());
        key::validate_ttl("set", key, ttl)?;
        let (bytes, ttl) = inner
            .l2
            .encode_tagged::<T, &str>("set", key, &value, Some(ttl), &[])
            .await?;
        let value = Arc::new(value);
        let before = inner.ticket(key);
        let (pending, seq) = inner.write(Op::Keys(vec![key.to_owned()]));
        let result = inner
            .l2
            .set_bytes(key, &bytes, ttl, pending.message())
            .await;
        pending.done();
        let result = inner.after_write(
            key,
            result.map(|()| (value, bytes.len() as u64, ttl)),
            None,
            before,
        );
        inner.confirmed(seq, result).await
    }

    /// Removes `key` everywhere; whether it existed in L2.
    ///
    /// # Errors
    /// Invalid key; Redis failures (the invalidation is queued and applied when
    /// Redis is back).
    ///
    /// # Cancel safety
    /// Once its request may have left, a dropped call is treated
    /// as done: this process evicts at once and the invalidation message is
    /// published from a task of the cache (every peer evicts; no gap in the
    /// message numbers); nothing is confirmed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        key::validate("delete", key)?;
        let inner = &self.inner;
        let (pending, seq) = inner.write(Op::Keys(vec![key.to_owned()]));
        let result = inner.l2.delete_notify(key, pending.message()).await;
        pending.done();
        inner.evict_local(key);
        let result = inner.after_invalidation(result, [key]);
        inner.confirmed(seq, result).await
    }

    /// Sets a new TTL in L2 and evicts L1 copies (they refetch the new TTL).
    ///
    /// # Errors
    /// Invalid key or TTL; Redis failures (the key is queued for invalidation).
    ///
    /// # Cancel safety
    /// Once its request may have left, a dropped call is treated
    /// as done: this process evicts at once and the invalidation message is
    /// published from a task of the cache (every peer evicts; no gap in the
    /// message numbers); nothing is confirmed.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        key::validate("expire", key)?;
        key::validate_ttl("expire", key, ttl)?;
        let inner = &self.inner;
        let (pending, seq) = inner.write(Op::Keys(vec![key.to_owned()]));
        let result = inner.l2.expire_notify(key, ttl, pending.message()).await;
        pending.done();
        inner.evict_local(key);
        let result = inner.after_invalidation(result, [key]);
        inner.confirmed(seq, result).await
    }

    /// Whether `key` exists (L1 when coherent, else L2; L1 if Redis fails).
    ///
    /// # Errors
    /// Invalid key only.
    ///
    /// # Cancel safety
    /// Cancel-safe (it only reads).
    pub async fn exists(&self, key: &str) -> Result<bool> {
        key::validate("exists", key)?;
        let inner = &self.inner;
        if inner.coherent.load(SeqCst) && inner.l1.exists_sync(key) {
            return Ok(true);
        }
        match inner.l2.exists(key).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_invalid_input() => Err(e),
            Err(_) => {
                inner.counters.fallbacks.fetch_add(1, Relaxed);
                Ok(inner.l1.exists_sync(key))
            }
        }
    }

    /// The remaining lifetime in L2 (L1's if Redis fails).
    ///
    /// # Errors
    /// Invalid key only.
    ///
    /// # Cancel safety
    /// Cancel-safe (it only reads).
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        key::validate("ttl", key)?;
        match self.inner.l2.ttl(key).await {
            Ok(t) => Ok(t),
            Err(e) if e.is_invalid_input() => Err(e),
            Err(_) => {
                self.inner.counters.fallbacks.fetch_add(1, Relaxed);
                Ok(self.inner.l1.ttl_sync(key))
            }
        }
    }

    /// Clears the prefix in L2, then every instance's L1.
    ///
    /// # Errors
    /// Redis failures (the clear is queued and applied when Redis is back).
    ///
    /// # Cancel safety
    /// Dropped while L2 is being cleared (batches already sent
    /// stay removed), this process clears its L1 at once and the clear's message
    /// is published from a task of the cache, so every peer drops its copies too;
    /// nothing is confirmed.
    pub async fn clear(&self) -> Result<u64> {
        let inner = &self.inner;
        let mut pending = inner.pending(Op::Clear);
        let result = match inner.l2.clear_all("clear").await {
            Ok(n) => inner.publish_numbered("clear", &mut pending, n).await,
            Err(e) => Err(e),
        };
        pending.done();
        inner.counters.sent.fetch_add(1, Relaxed);
        inner.clear_local();
        match result {
            Ok((n, seq)) => inner.confirmed(seq, Ok(n)).await,
            Err(e) => {
                inner.degraded_write(&e, |b, _| {
                    b.add_clear();
                    false
                });
                Err(e)
            }
        }
    }

    /// Clears the keys matching `pattern` in L2, then in every instance's L1.
    ///
    /// # Errors
    /// Redis failures (the pattern is queued and applied when Redis is back).
    ///
    /// # Cancel safety
    /// Dropped while L2 is being cleared (batches already sent
    /// stay removed), this process clears its L1 at once and the clear's message
    /// is published from a task of the cache, so every peer drops its copies too;
    /// nothing is confirmed.
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64> {
        let inner = &self.inner;
        let mut pending = inner.pending(Op::Pattern(pattern.to_owned()));
        let result = match inner.l2.clear_matching("clear_pattern", pattern).await {
            Ok(n) => {
                inner
                    .publish_numbered("clear_pattern", &mut pending, n)
                    .await
            }
            Err(e) => Err(e),
        };
        pending.done();
        inner.counters.sent.fetch_add(1, Relaxed);
        inner.evict_pattern(pattern);
        match result {
            Ok((n, seq)) => inner.confirmed(seq, Ok(n)).await,
            Err(e) => {
                inner.degraded_write(&e, |b, max| b.add_pattern(pattern, max));
                Err(e)
            }
        }
    }

    /// The values at `keys`: L1 first, the rest from L2 in one round trip.
    ///
    /// # Errors
    /// Invalid key only.
    ///
    /// # Cancel safety
    /// Cancel-safe; a dropped read changes nothing (L1 is filled
    /// only with a complete L2 answer).
    pub async fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Arc<T>>>> {
        for k in keys {
            key::validate("get_many", k.as_ref())?;
        }
        let inner = &self.inner;
        let coherent = inner.coherent.load(SeqCst);
        let mut out: Vec<Option<Arc<T>>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<(usize, &str, LocalTicket)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            // As `get`: L1 only while coherent; else L2 first.
            let hit = if coherent {
                inner.l1.get_checked::<T>(k.as_ref(), None)
            } else {
                None
            };
            if hit.is_none() {
                inner.counters.gets_past_l1.fetch_add(1, Relaxed);
                missing.push((i, k.as_ref(), inner.ticket(k.as_ref())));
            }
            out.push(hit);
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let degraded = |mut out: Vec<Option<Arc<T>>>, missing: &[(usize, &str, LocalTicket)]| {
            for (i, k, _) in missing {
                out[*i] = self.degraded_l1(k, coherent);
            }
            out
        };
        if inner.backlog_pending.load(SeqCst) {
            inner.counters.fallbacks.fetch_add(1, Relaxed);
            inner.wake_recovery.notify_one();
            return Ok(degraded(out, &missing));
        }
        let names: Vec<&str> = missing.iter().map(|m| m.1).collect();
        let names = &names;
        let reply = inner
            .read_holding(|holder| async move {
                inner
                    .l2
                    .get_many_with_ttl::<T>(names, holder.as_ref())
                    .await
            })
            .await;
        match reply {
            Ok(found) => {
                for ((i, k, ticket), hit) in missing.into_iter().zip(found) {
                    if let Some(found) = hit {
                        inner.counters.l2_hits.fetch_add(1, Relaxed);
                        if coherent {
                            inner.fill(k, &found, ticket);
                        }
                        out[i] = Some(found.value);
                    }
                }
                Ok(out)
            }
            Err(e) if e.is_invalid_input() => Err(e),
            Err(_) => {
                inner.counters.fallbacks.fetch_add(1, Relaxed);
                Ok(degraded(out, &missing))
            }
        }
    }

    /// Stores every pair in L2 (one round trip, one invalidation message) and L1.
    ///
    /// # Errors
    /// Invalid key or TTL, encode errors, oversized values (nothing is written).
    ///
    /// # Cancel safety
    /// Dropped before its request can have left (while encoding),
    /// nothing happened. Dropped later, the write is treated as done: this
    /// process's copy is evicted at once (its next read goes to L2, which holds
    /// the old or the new value), the invalidation message is published from a
    /// task of the cache (so every peer evicts, and no gap in the message
    /// numbers makes them flush), and nothing is confirmed.
    pub async fn set_many<T: CacheValue, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let inner = &self.inner;
        let ttl = ttl.unwrap_or(inner.l2.default_ttl());
        let mut encoded = Vec::with_capacity(entries.len());
        for (k, v) in &entries {
            key::validate("set_many", k.as_ref())?;
            key::validate_ttl("set_many", k.as_ref(), ttl)?;
            encoded.push((k.as_ref(), inner.l2.encode("set_many", k.as_ref(), v)?));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        if let Some((names, tokens)) = inner.l2.stamps("set_many", &[]).await? {
            for (_, bytes) in &mut encoded {
                *bytes = crate::codec::wrap_tagged(&names, &tokens, bytes);
            }
        }
        let before: Vec<LocalTicket> = encoded.iter().map(|(k, _)| inner.ticket(k)).collect();
        let (pending, seq) = inner.write(Op::Keys(
            encoded.iter().map(|(k, _)| (*k).to_owned()).collect(),
        ));
        let result = inner
            .l2
            .set_many_bytes(&encoded, ttl, pending.message())
            .await;
        pending.done();
        let sizes: Vec<u64> = encoded.iter().map(|(_, b)| b.len() as u64).collect();
        drop(encoded);
        match result {
            Ok(()) => {
                inner.counters.sent.fetch_add(1, Relaxed);
                for (((k, v), bytes), before) in entries.into_iter().zip(sizes).zip(before) {
                    inner.after_write(k.as_ref(), Ok((Arc::new(v), bytes, ttl)), None, before)?;
                }
                inner.confirm(seq).await;
                Ok(())
            }
            Err(e) => {
                let mut first_error = Ok(());
                for ((k, _), before) in entries.iter().zip(&before) {
                    let r = inner.after_write::<T>(k.as_ref(), Err(e.clone()), None, *before);
                    if first_error.is_ok() {
                        first_error = r;
                    }
                }
                first_error
            }
        }
    }

    /// Removes `keys` everywhere; how many existed in L2.
    ///
    /// # Errors
    /// Invalid key; Redis failures (the keys are queued for invalidation).
    ///
    /// # Cancel safety
    /// Once its request may have left, a dropped call is treated
    /// as done: this process evicts at once and the invalidation message is
    /// published from a task of the cache (every peer evicts; no gap in the
    /// message numbers); nothing is confirmed.
    pub async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<u64> {
        for k in keys {
            key::validate("delete_many", k.as_ref())?;
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &self.inner;
        let (pending, seq) = inner.write(Op::Keys(
            keys.iter().map(|k| k.as_ref().to_owned()).collect(),
        ));
        let result = inner.l2.delete_many_notify(keys, pending.message()).await;
        pending.done();
        for k in keys {
            inner.evict_local(k.as_ref());
        }
        let result = inner.after_invalidation(result, keys.iter().map(AsRef::as_ref));
        inner.confirmed(seq, result).await
    }

    /// Stores a tagged value in L2 and L1 and evicts other instances' copies.
    ///
    /// # Errors
    /// As [`set`](Self::set); an invalid tag.
    ///
    /// # Cancel safety
    /// Dropped before its request can have left (while encoding),
    /// nothing happened. Dropped later, the write is treated as done: this
    /// process's copy is evicted at once (its next read goes to L2, which holds
    /// the old or the new value), the invalidation message is published from a
    /// task of the cache (so every peer evicts, and no gap in the message
    /// numbers makes them flush), and nothing is confirmed.
    pub async fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        let inner = &self.inner;
        let (bytes, ttl) = inner
            .l2
            .encode_tagged("set_with_tags", key, &value, ttl, tags)
            .await?;
        let before = inner.ticket(key);
        let (pending, seq) = inner.write(Op::Keys(vec![key.to_owned()]));
        let result = inner
            .l2
            .set_bytes(key, &bytes, ttl, pending.message())
            .await;
        pending.done();
        let tags: Arc<[String]> = tags.iter().map(|t| t.as_ref().to_owned()).collect();
        let result = inner.after_write(
            key,
            result.map(|()| (Arc::new(value), bytes.len() as u64, ttl)),
            Some(tags),
            before,
        );
        inner.confirmed(seq, result).await
    }

    /// Drops every entry tagged `tag` in L2 (O(1): a new token) and in every
    /// instance's L1.
    ///
    /// # Errors
    /// An invalid tag; Redis failures (then the whole prefix is queued for clearing:
    /// a tag cannot be replayed without its token).
    ///
    /// # Cancel safety
    /// Once its request may have left, a dropped call is treated
    /// as done: this process evicts at once and the invalidation message is
    /// published from a task of the cache (every peer evicts; no gap in the
    /// message numbers); nothing is confirmed.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let inner = &self.inner;
        let (pending, seq) = inner.write(Op::Tag(tag.to_owned()));
        let result = inner.l2.invalidate_tag_notify(tag, pending.message()).await;
        pending.done();
        inner.evict_tag(tag);
        match result {
            Ok(()) => {
                inner.counters.sent.fetch_add(1, Relaxed);
                inner.confirm(seq).await;
                Ok(())
            }
            Err(e) if e.is_invalid_input() => Err(e),
            Err(e) => {
                inner.degraded_write(&e, |b, _| {
                    b.add_clear();
                    false
                });
                Err(e)
            }
        }
    }

    /// The default TTL (the L2's).
    pub fn default_ttl(&self) -> Duration {
        self.inner.l2.default_ttl()
    }

    /// Both levels' statistics and the combined hit rate.
    ///
    /// # Errors
    /// None: when Redis cannot be asked, `l2` is `None`.
    ///
    /// # Cancel safety
    /// Cancel-safe (it only reads).
    pub async fn get_stats(&self) -> Result<HybridStats> {
        let inner = &self.inner;
        let l2 = inner.l2.get_stats().await.ok();
        let c = &inner.counters;
        let gets = inner.gets();
        let hits = inner.l1_hits() + c.l2_hits.load(Relaxed);
        let backlog = inner.backlog.lock().map(|b| b.len()).unwrap_or_default();
        let (peers, peers_unresponsive) = inner
            .peers
            .lock()
            .map(|p| p.count(inner.liveness_window(), Instant::now()))
            .unwrap_or_default();
        Ok(HybridStats {
            l1: inner.l1.get_stats_sync(),
            l2,
            combined_hit_rate: hit_rate(hits, gets.saturating_sub(hits)),
            coherence: CoherenceStats {
                coherent: inner.coherent.load(SeqCst),
                invalidations_sent: c.sent.load(Relaxed),
                invalidations_received: c.received.load(Relaxed),
                flushes: c.flushes.load(Relaxed),
                gaps: c.gaps.load(Relaxed),
                fallbacks: c.fallbacks.load(Relaxed),
                fills_discarded: c.fills_discarded.load(Relaxed),
                backlog,
                backlog_overflows: c.backlog_overflows.load(Relaxed),
                resubscriptions: c.resubscriptions.load(Relaxed),
                confirm_invalidations: inner.confirm_timeout.is_some(),
                peers,
                peers_unresponsive,
                confirmed: c.confirmed.load(Relaxed),
                unconfirmed: c.unconfirmed.load(Relaxed),
                deliveries: c.deliveries.load(Relaxed),
                tracked_evictions: c.tracked_evictions.load(Relaxed),
            },
        })
    }

    /// Pings Redis (the circuit breaker applies).
    ///
    /// # Errors
    /// Redis errors, timeouts, an open breaker.
    ///
    /// # Cancel safety
    /// Cancel-safe (it only reads).
    pub async fn ping(&self) -> Result<Duration> {
        self.inner.l2.ping().await
    }

    /// Stops the background tasks and closes the L2.
    ///
    /// # Errors
    /// As [`DistributedCache::close`].
    ///
    /// # Cancel safety
    /// The background tasks stop at once; the goodbye message and
    /// closing the L2 run to completion in a task of their own even if this future
    /// is dropped.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        // Stopped first, so that a dropped `close` leaves nothing running either.
        inner.tasks.abort_all();
        inner.coherent.store(false, SeqCst);
        // The other instances stop waiting for us at once, not after the liveness
        // window.
        let (bye, _) = inner.numbered_notice(Op::Heartbeat, Lifecycle::Closing);
        let l2 = inner.l2.clone();
        let finish = async move {
            let _ = l2.publish("close", &bye).await;
            l2.close().await
        };
        // In a task of its own: the goodbye and the L2's close complete even if
        // this future is dropped.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.spawn(finish).await.unwrap_or(Ok(())),
            Err(_) => finish.await,
        }
    }
}

/// The future of [`HybridCache::get`], written by hand so that an L1 hit (its
/// first poll) inlines into the caller: no state machine of its own, no call.
/// Lazy like an `async fn`: nothing is read before the first poll.
struct Get<'a, T> {
    cache: &'a HybridCache,
    key: &'a str,
    /// The rest of the call once L1 did not answer (boxed: inline, the L2 path's
    /// state would make every get's future, an L1 hit's too, as large as its own).
    past_l1: Option<BoxedGet<'a, T>>,
}

/// [`HybridCache::get`] past L1.
type BoxedGet<'a, T> = Pin<Box<dyn Future<Output = Result<Option<Arc<T>>>> + Send + 'a>>;

impl<T: CacheValue> Future for Get<'_, T> {
    type Output = Result<Option<Arc<T>>>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(rest) = &mut self.past_l1 {
            return rest.as_mut().poll(cx);
        }
        let key = self.key;
        // The key's checks, inline: only an empty key, one starting with `_` (the
        // reserved `__oc…`) or one as long as the reserved `stats` takes the call.
        if matches!(key.as_bytes().first(), None | Some(b'_')) || key.len() == key::STATS_KEY.len()
        {
            key::validate("get", key)?;
        }
        match self.cache.get_from_l1(key) {
            Ok(hit) => Poll::Ready(Ok(hit)),
            Err(coherent) => self.go_past_l1(coherent, cx),
        }
    }
}

impl<T: CacheValue> Get<'_, T> {
    /// Starts the rest of the call (out of line: the hit path stays small).
    #[cold]
    #[inline(never)]
    fn go_past_l1(&mut self, coherent: bool, cx: &mut Context<'_>) -> Poll<Result<Option<Arc<T>>>> {
        let (cache, key) = (self.cache, self.key);
        self.past_l1
            .insert(Box::pin(cache.get_past_l1(key, coherent)))
            .as_mut()
            .poll(cx)
    }
}
