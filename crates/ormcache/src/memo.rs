//! `get_or_compute`: read-through with single flight (per process, and optionally per
//! cluster), leases against stale fills, and early refresh.
//!
//! The flow for one call:
//!
//! 1. Look the key up (fail open: a Redis error is counted and treated as a miss).
//!    A hit close to expiry (`refresh_ahead`) lets exactly one caller in the process
//!    refresh it inline while everyone else keeps getting the current value.
//! 2. On a miss, join the key's flight: the first caller leads, the others wait
//!    for its outcome (value or error, shared as `Arc`).
//! 3. The leader takes a fill ticket: local invalidation epochs and, on Redis, a
//!    lease (`{prefix}:__oc:lease:{key}` holding a random token). With `lock`, the
//!    lease is taken with `NX` and doubles as a cluster-wide lock: other processes
//!    wait (bounded) for the value instead of computing it.
//! 4. The loader runs. Its value is stored only if no invalidation happened since
//!    the ticket: every write, delete, expire and clear of the key removes the lease,
//!    and the store is a script that checks the token first. A value read from the
//!    database before a concurrent write is therefore never cached after it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::field::Empty;

use crate::cache::CacheValue;
use crate::error::{Error, Result};
use crate::key;
use crate::local::LocalTicket;

/// Options of [`Cache::get_or_compute_with`](crate::Cache::get_or_compute_with).
///
/// ```
/// use std::time::Duration;
/// let opts = ormcache::ComputeOptions::new()
///     .ttl(Duration::from_secs(300))
///     .lock(true)                 // one loader run across all processes
///     .refresh_ahead(0.2)         // refresh in the last 20 % of the TTL
///     .tags(["users"]);
/// # let _ = opts;
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct ComputeOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) lock: bool,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) refresh_ahead: Option<f64>,
    pub(crate) tags: Vec<String>,
    pub(crate) ttl_for: Option<TtlRule>,
}

/// The rule of [`ComputeOptions::ttl_for`], type-erased so that the options stay
/// one type whatever value a call computes.
#[derive(Clone)]
pub(crate) struct TtlRule(Arc<TtlFn>);

/// A value (as `Any`) to its TTL, if the rule picks one.
type TtlFn = dyn Fn(&dyn Any) -> Option<Duration> + Send + Sync;

impl fmt::Debug for TtlRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TtlRule(..)")
    }
}

impl Default for ComputeOptions {
    fn default() -> Self {
        Self {
            ttl: None,
            lock: false,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(5),
            refresh_ahead: None,
            tags: Vec::new(),
            ttl_for: None,
        }
    }
}

impl ComputeOptions {
    /// No lock, no early refresh, the cache's default TTL.
    pub fn new() -> Self {
        Self::default()
    }

    /// TTL of the computed value (default: the cache's).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// TTL, or the cache's default for `None`.
    pub fn ttl_opt(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Cluster-wide single flight through a Redis lock: one process computes, the
    /// others wait for its value (up to `lock_wait`, then compute themselves).
    pub fn lock(mut self, on: bool) -> Self {
        self.lock = on;
        self
    }

    /// How long a lock holder may take before the lock expires and another process
    /// takes over (default 10 s).
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long other processes wait for a lock holder (default 5 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Refresh a hit whose remaining TTL is below this fraction of the TTL (0 to 1;
    /// e.g. 0.2): one caller recomputes while the others keep the current value, so
    /// expiry never causes a stampede or a miss for hot keys.
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(fraction.clamp(0.0, 1.0));
        self
    }

    /// Tags for the computed value (see `invalidate_tag`).
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Chooses the TTL from the computed value: `rule` returns the TTL for this
    /// value, or `None` for the TTL of [`ttl`](Self::ttl) (or the cache's default).
    /// `Some(Duration::ZERO)` returns the value without caching it. The value is
    /// stored once, with its own TTL: a cached "not found" with a short TTL costs one
    /// write, not a write and an `expire`. The rule applies when the call computes a
    /// `T` (calls computing another type ignore it). With
    /// [`refresh_ahead`](Self::refresh_ahead), the fraction is of the value's TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User;
    /// // Rows for 5 minutes, a missing row for 5 seconds.
    /// let opts = ormcache::ComputeOptions::new()
    ///     .ttl(Duration::from_secs(300))
    ///     .ttl_for(|row: &Option<User>| row.is_none().then_some(Duration::from_secs(5)));
    /// # let _ = opts;
    /// ```
    pub fn ttl_for<T: Any>(
        mut self,
        rule: impl Fn(&T) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.ttl_for = Some(TtlRule(Arc::new(move |v: &dyn Any| {
            v.downcast_ref::<T>().and_then(&rule)
        })));
        self
    }

    /// The TTL to store `value` with: the rule's choice (at most
    /// [`MAX_TTL`](key::MAX_TTL)), else `ttl`.
    pub(crate) fn ttl_of<T: Any>(&self, value: &T, ttl: Duration) -> Duration {
        self.ttl_for
            .as_ref()
            .and_then(|rule| (rule.0)(value))
            .map_or(ttl, |chosen| chosen.min(key::MAX_TTL))
    }
}

/// The error of [`Cache::try_get_or_compute_with`](crate::Cache::try_get_or_compute_with).
#[non_exhaustive]
pub enum ComputeError<E> {
    /// The loader failed; every caller waiting on the same load gets the same error.
    /// Nothing was cached.
    Load(Arc<E>),
    /// The call itself was invalid (bad key, zero TTL). Redis failures are never
    /// reported here: read-through fails open.
    Cache(Error),
}

impl<E> Clone for ComputeError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Load(e) => Self::Load(Arc::clone(e)),
            Self::Cache(e) => Self::Cache(e.clone()),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for ComputeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => f.debug_tuple("Load").field(e).finish(),
            Self::Cache(e) => f.debug_tuple("Cache").field(e).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for ComputeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => write!(f, "loader failed: {e}"),
            Self::Cache(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ComputeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Load(e) => Some(&**e),
            Self::Cache(e) => Some(e),
        }
    }
}

type Shared = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
enum Outcome {
    Value(Shared),
    Error(Shared),
}

/// In-process single flight: one load per key at a time.
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Sender<Option<Outcome>>>>,
    /// Loads completed, per key stripe: a caller that missed before a load of its
    /// key completed, and joins after it, looks again instead of loading again.
    done: Box<[std::sync::atomic::AtomicU64]>,
    hasher: foldhash::fast::FixedState,
}

const DONE_STRIPES: usize = 1024;

impl Default for Flights {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            done: (0..DONE_STRIPES)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(0xf11e),
        }
    }
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Flights").field("in_flight", &n).finish()
    }
}

enum Joined<'a> {
    Leader(Lead<'a>),
    Follower(watch::Receiver<Option<Outcome>>),
}

/// The leader's duty: publish an outcome. Dropped without one (the leader's future
/// was cancelled), it wakes the followers, who retry.
struct Lead<'a> {
    flights: &'a Flights,
    key: String,
    tx: watch::Sender<Option<Outcome>>,
}

impl Lead<'_> {
    fn finish(self, outcome: Outcome) {
        self.flights
            .completed(&self.key)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.map.lock()
            && map
                .get(&self.key)
                .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            map.remove(&self.key);
        }
    }
}

impl Flights {
    fn completed(&self, key: &str) -> &std::sync::atomic::AtomicU64 {
        use std::hash::BuildHasher;
        &self.done[(self.hasher.hash_one(key) as usize) % DONE_STRIPES]
    }

    fn completions(&self, key: &str) -> u64 {
        self.completed(key)
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn join(&self, key: &str) -> Joined<'_> {
        let Ok(mut map) = self.map.lock() else {
            // A poisoned map cannot coordinate: lead alone.
            let (tx, _) = watch::channel(None);
            return Joined::Leader(Lead {
                flights: self,
                key: key.to_owned(),
                tx,
            });
        };
        if let Some(tx) = map.get(key) {
            return Joined::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(None);
        map.insert(key.to_owned(), tx.clone());
        Joined::Leader(Lead {
            flights: self,
            key: key.to_owned(),
            tx,
        })
    }

    /// Leads if nobody does; `None` if a load of `key` is already running.
    fn try_lead(&self, key: &str) -> Option<Lead<'_>> {
        match self.join(key) {
            Joined::Leader(l) => Some(l),
            Joined::Follower(_) => None,
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup<T> {
    Hit(Arc<T>, Option<Duration>),
    Miss,
}

/// A Redis lease: the token in `{prefix}:__oc:lease:{key}` and the clear
/// generation when it was taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lease {
    pub(crate) token: String,
    pub(crate) generation: String,
    /// Tag tokens to stamp the entry with, in the order of the tags.
    pub(crate) tag_tokens: Vec<u64>,
    /// For an early refresh: the remaining TTL seen, in ms. A write since then
    /// (which resets the TTL) wins over the refresh.
    pub(crate) refresh_of: Option<u64>,
}

/// Proof of where a fill started.
#[derive(Debug, Clone, Default)]
pub(crate) struct FillTicket {
    pub(crate) local: Option<LocalTicket>,
    /// `None` on Redis-backed caches means the lease could not be taken: the value
    /// is returned but not stored.
    pub(crate) lease: Option<Lease>,
    /// With `lock`: another process holds the lease.
    pub(crate) contended: bool,
}

/// What a cache provides so that [`run`] can read through it.
pub(crate) trait Fill: Clone + Send + Sync + 'static {
    fn flights(&self) -> &Flights;
    /// Loader and lock metrics (feature `metrics`).
    fn meter(&self) -> &crate::observe::MemoMeter;
    /// The value (and, with `with_ttl`, its remaining TTL). Redis failures are a
    /// miss (counted).
    fn lookup<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
    ) -> impl Future<Output = Lookup<T>> + Send;
    /// Starts a fill; the lease lives `lease_ttl`; with `exclusive` it is taken only
    /// if nobody holds it.
    fn begin_fill(
        &self,
        key: &str,
        lease_ttl: Duration,
        exclusive: bool,
        tags: &[String],
    ) -> impl Future<Output = FillTicket> + Send;
    /// Stores the loader's value unless an invalidation happened since `ticket`.
    fn end_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &Arc<T>,
        ttl: Duration,
        tags: &[String],
        ticket: FillTicket,
    ) -> impl Future<Output = ()> + Send;
    /// Gives up a fill (the loader failed): releases the lease if still ours.
    fn abort_fill(&self, key: &str, ticket: FillTicket) -> impl Future<Output = ()> + Send;
    /// [`lookup`](Self::lookup) that, on a miss, may also start the fill in the same
    /// round trip (a cold miss then costs two: this and the store). The ticket is
    /// `None` when it did not (the caller calls [`begin_fill`](Self::begin_fill)).
    fn lookup_or_begin<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
        options: &ComputeOptions,
    ) -> impl Future<Output = (Lookup<T>, Option<FillTicket>)> + Send {
        let _ = options;
        async move { (self.lookup(key, with_ttl).await, None) }
    }

    /// Where the clean-up of a cancelled call runs (giving a lease back): the
    /// cache's own tasks, stopped by its shutdown. `None` for a cache with no lease
    /// to give back (no Redis).
    fn cleanup_tasks(&self) -> Option<&crate::tasks::Tasks> {
        None
    }
}

/// A fill ticket held by a call. Dropped while still armed (the call's future was
/// cancelled in the loader, or while storing), it gives the Redis lease back in a
/// task of the cache, so that no other process waits `lock_wait` or `lock_ttl` for
/// a loader that no longer runs. (The token check makes a late release harmless:
/// it removes only our own lease.)
pub(crate) struct Held<C: Fill> {
    cache: C,
    key: String,
    ticket: FillTicket,
    /// Cleared once the call gave the lease back itself (or stored through it).
    armed: bool,
    tenant: Option<crate::tenant::TenantId>,
}

impl<C: Fill> Held<C> {
    fn new(
        cache: C,
        key: String,
        ticket: FillTicket,
        tenant: Option<crate::tenant::TenantId>,
    ) -> Self {
        Self {
            cache,
            key,
            ticket,
            armed: true,
            tenant,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }

    /// Stores `value` through the ticket, with the TTL [`ComputeOptions::ttl_for`]
    /// picks for it (`ttl` by default); a zero TTL stores nothing and gives the
    /// lease back. The guard stays armed until the store returns.
    async fn store<T: CacheValue>(self, value: &Arc<T>, ttl: Duration, options: &ComputeOptions) {
        match options.ttl_of(&**value, ttl) {
            Duration::ZERO => self.release().await,
            ttl => {
                let ticket = self.ticket.clone();
                self.cache
                    .end_fill(&self.key, value, ttl, &options.tags, ticket)
                    .await;
                self.disarm();
            }
        }
    }

    /// Gives the lease back now (the guard stays armed until that returns).
    async fn release(self) {
        if self.ticket.lease.is_some() {
            let ticket = self.ticket.clone();
            self.cache.abort_fill(&self.key, ticket).await;
        }
        self.disarm();
    }
}

impl<C: Fill> Drop for Held<C> {
    fn drop(&mut self) {
        if !self.armed || self.ticket.lease.is_none() {
            return;
        }
        let Some(tasks) = self.cache.cleanup_tasks() else {
            return;
        };
        let cache = self.cache.clone();
        let key = std::mem::take(&mut self.key);
        let ticket = std::mem::take(&mut self.ticket);
        // Not started (the cache closed, no runtime): the lease expires with its TTL.
        tasks.spawn(self.tenant.take(), async move {
            cache.abort_fill(&key, ticket).await;
        });
    }
}

/// Starts a fill (`begin_fill`) so that the lease it may take on Redis is given
/// back even if this call is dropped while the request is on its way: the request
/// runs in a task of the cache and hands its ticket over as a [`Held`], which
/// releases the lease when nobody is left to receive it.
async fn acquire<C: Fill>(
    cache: &C,
    key: &str,
    lease_ttl: Duration,
    exclusive: bool,
    tags: &[String],
) -> Held<C> {
    let tenant = crate::tenant::current();
    let held = |ticket| Held::new(cache.clone(), key.to_owned(), ticket, tenant.clone());
    let Some(tasks) = cache.cleanup_tasks() else {
        return held(cache.begin_fill(key, lease_ttl, exclusive, tags).await);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (c, k, t, scope) = (cache.clone(), key.to_owned(), tags.to_vec(), tenant.clone());
    let started = tasks.spawn(tenant.clone(), async move {
        let ticket = c.begin_fill(&k, lease_ttl, exclusive, &t).await;
        // Refused (the caller is gone) or never received: dropped, so released.
        let _ = tx.send(Held::new(c, k, ticket, scope));
    });
    if !started {
        // The cache is closed: compute, store nowhere.
        return held(FillTicket::default());
    }
    match rx.await {
        Ok(h) => h,
        Err(_) => held(FillTicket::default()),
    }
}

/// A random 64-bit token (lease and tag tokens). Not cryptographic: it only has to
/// differ between writers.
pub(crate) fn random_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn downcast<T: Send + Sync + 'static>(v: Shared) -> Option<Arc<T>> {
    v.downcast::<T>().ok()
}

/// Checks a `get_or_compute` call; the TTL to use.
pub(crate) fn validate(
    key: &str,
    options: &ComputeOptions,
    default_ttl: Duration,
) -> Result<Duration> {
    key::validate("get_or_compute", key)?;
    let ttl = options.ttl.unwrap_or(default_ttl);
    key::validate_ttl("get_or_compute", key, ttl)?;
    for tag in &options.tags {
        key::validate_tag("get_or_compute", tag)?;
    }
    Ok(ttl)
}

/// The read-through driver shared by every cache kind (input already validated).
pub(crate) async fn run<C, T, E, F, Fut>(
    cache: &C,
    key: &str,
    ttl: Duration,
    options: &ComputeOptions,
    loader: F,
) -> Result<Arc<T>, Arc<E>>
where
    C: Fill,
    T: CacheValue,
    E: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    loop {
        let completions = cache.flights().completions(key);
        let with_ttl = options.refresh_ahead.is_some();
        let (found, leased) = cache.lookup_or_begin::<T>(key, with_ttl, options).await;
        // A lease the lookup took is held by a guard from here on, like one from
        // `acquire`: dropped with this future, it is given back.
        let tenant = crate::tenant::current();
        let mut leased = leased.map(|t| Held::new(cache.clone(), key.to_owned(), t, tenant));
        if let Lookup::Hit(v, remaining) = found {
            let due = match (options.refresh_ahead, remaining) {
                (Some(f), Some(left)) => {
                    left.as_secs_f64() < options.ttl_of(&*v, ttl).as_secs_f64() * f
                }
                _ => false,
            };
            if !due {
                return Ok(v);
            }
            // Near expiry: one caller per process refreshes inline, the rest keep
            // the current value; with `lock`, one per cluster.
            let Some(lead) = cache.flights().try_lead(&format!("\u{0}refresh\u{0}{key}")) else {
                cache.meter().stale_refresh.increment(1);
                return Ok(v);
            };
            let mut held = acquire(cache, key, options.lock_ttl, options.lock, &options.tags).await;
            if held.ticket.contended {
                drop(lead);
                cache.meter().stale_refresh.increment(1);
                return Ok(v);
            }
            if let (Some(lease), Some(left)) = (held.ticket.lease.as_mut(), remaining) {
                let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                lease.refresh_of = Some(ms.saturating_add(1));
            }
            return match load(cache.meter(), loader).await {
                Ok(fresh) => {
                    let fresh = Arc::new(fresh);
                    held.store(&fresh, ttl, options).await;
                    lead.finish(Outcome::Value(fresh.clone()));
                    Ok(fresh)
                }
                Err(_) => {
                    // A failed refresh keeps serving the current value.
                    held.release().await;
                    cache.meter().stale_refresh.increment(1);
                    Ok(v)
                }
            };
        }
        match cache.flights().join(key) {
            Joined::Follower(mut rx) => {
                if let Some(held) = leased.take() {
                    // Started a fill that this process's leader makes instead.
                    held.release().await;
                }
                let outcome = loop {
                    if let Some(o) = rx.borrow_and_update().clone() {
                        break Some(o);
                    }
                    if rx.changed().await.is_err() {
                        break rx.borrow().clone();
                    }
                };
                match outcome {
                    Some(Outcome::Value(v)) => {
                        if let Some(v) = downcast::<T>(v) {
                            return Ok(v);
                        }
                    }
                    Some(Outcome::Error(e)) => {
                        if let Some(e) = downcast::<E>(e) {
                            return Err(e);
                        }
                    }
                    // The leader was cancelled: try again (maybe as the leader).
                    None => {}
                }
                // The leader was cancelled, or computed another type under this
                // key: compute our own (the loader has not run: followers never
                // run it before this point).
                continue;
            }
            Joined::Leader(lead) => {
                if cache.flights().completions(key) != completions {
                    // A load finished between our lookup and now: look again.
                    drop(lead);
                    if let Some(held) = leased.take() {
                        held.release().await;
                    }
                    continue;
                }
                // From here on the lease (the cluster-wide lock with `lock`) is
                // held by a guard: a caller that drops this future (a timeout, a
                // client that went away) gives it back at once.
                let held = match leased.take() {
                    Some(held) => held,
                    None => {
                        acquire(cache, key, options.lock_ttl, options.lock, &options.tags).await
                    }
                };
                let ready = if held.ticket.contended {
                    // Another process is computing: wait for its value, bounded.
                    drop(held);
                    lock_wait(cache.meter(), wait_for_holder::<C, T>(cache, key, options)).await
                } else if options.lock {
                    after_lock::<C, T>(key, held).await
                } else {
                    Err(held)
                };
                let held = match ready {
                    Ok(v) => {
                        lead.finish(Outcome::Value(v.clone()));
                        return Ok(v);
                    }
                    Err(own) => own,
                };
                return match load(cache.meter(), loader).await {
                    Ok(v) => {
                        let v = Arc::new(v);
                        held.store(&v, ttl, options).await;
                        lead.finish(Outcome::Value(v.clone()));
                        Ok(v)
                    }
                    Err(e) => {
                        held.release().await;
                        let e = Arc::new(e);
                        lead.finish(Outcome::Error(e.clone()));
                        Err(e)
                    }
                };
            }
        }
    }
}

/// Runs the loader in a `debug` span (`ormcache.load`, with its outcome and time),
/// counting the run, its errors and its duration.
async fn load<T, E, F, Fut>(meter: &crate::observe::MemoMeter, loader: F) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    meter.loader_runs.increment(1);
    let span = tracing::debug_span!("ormcache.load", outcome = Empty, elapsed_us = Empty);
    let result = observed(span, &meter.loader_seconds, loader(), |r| match r {
        Ok(_) => "ok",
        Err(_) => "error",
    })
    .await;
    if result.is_err() {
        meter.loader_errors.increment(1);
    }
    result
}

/// Waits for another process's lock holder in a `debug` span
/// (`ormcache.lock_wait`, with whether the value came and the time waited).
async fn lock_wait<V, H, Fut>(meter: &crate::observe::MemoMeter, wait: Fut) -> Result<V, H>
where
    Fut: Future<Output = Result<V, H>>,
{
    meter.lock_waits.increment(1);
    let span = tracing::debug_span!("ormcache.lock_wait", outcome = Empty, elapsed_us = Empty);
    // `value`: the holder's value arrived; `own_load`: this call loads itself.
    observed(span, &meter.lock_wait_seconds, wait, |r| match r {
        Ok(_) => "value",
        Err(_) => "own_load",
    })
    .await
}

/// Runs `fut` in `span`, then records its time in `seconds` and on the span with
/// its `outcome` (no clock read when neither records).
async fn observed<R>(
    span: tracing::Span,
    seconds: &crate::observe::Histogram,
    fut: impl Future<Output = R>,
    outcome: impl FnOnce(&R) -> &'static str,
) -> R {
    let start = crate::observe::timed(&span);
    let result = tracing::Instrument::instrument(fut, span.clone()).await;
    if let Some(start) = start {
        let took = start.elapsed();
        seconds.record(took.as_secs_f64());
        span.record("outcome", outcome(&result));
        span.record(
            "elapsed_us",
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
    }
    result
}

/// Right after taking the lock: the value, if a holder in another process stored
/// it (and let the lock go) between our miss and our lock — the lock is released
/// and nothing is loaded; else the ticket to load with.
async fn after_lock<C: Fill, T: CacheValue>(key: &str, held: Held<C>) -> Result<Arc<T>, Held<C>> {
    match held.cache.lookup::<T>(key, false).await {
        Lookup::Hit(v, _) => {
            held.release().await;
            Ok(v)
        }
        Lookup::Miss => Err(held),
    }
}

/// Polls for the value a lock holder in another process is computing. `Err` carries
/// a ticket of our own: the holder let go without a value (finished without storing,
/// died, or an invalidation removed its lease) or the wait ran out.
async fn wait_for_holder<C: Fill, T: CacheValue>(
    cache: &C,
    key: &str,
    options: &ComputeOptions,
) -> Result<Arc<T>, Held<C>> {
    // `lock_wait` may be "forever" (`Duration::MAX`): no deadline then.
    let deadline = tokio::time::Instant::now().checked_add(options.lock_wait);
    let mut pause = Duration::from_millis(2);
    while deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        if let Lookup::Hit(v, _) = cache.lookup::<T>(key, false).await {
            return Ok(v);
        }
        let probe = acquire(cache, key, options.lock_ttl, true, &options.tags).await;
        if !probe.ticket.contended {
            return after_lock(key, probe).await;
        }
    }
    Err(acquire(cache, key, options.lock_ttl, false, &options.tags).await)
}
