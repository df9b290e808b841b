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

use crate::cache::CacheValue;
use crate::error::{Error, Result};
use crate::key;

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

/// Local invalidation epochs seen when a fill started: per-key stripe, global,
/// selective. Entries are stamped with `global` and `selective`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalTicket {
    pub(crate) stripe: u64,
    pub(crate) global: u64,
    pub(crate) selective: u64,
}

/// Invalidation epochs of one cache: a counter per key stripe, bumped by every
/// write or delete of a key in it, and a global one bumped by clears. A fill that
/// saw the same values when it started and when it stores (under the key's lock)
/// raced no invalidation.
///
/// Pattern clears and tag invalidations are "selective": they bump their own
/// counter and log their predicate; an L1 entry stamped before one of them is
/// checked against the log on read (and is a miss if the log no longer reaches back
/// that far). No fill can slip a stale value past a selective invalidation, and
/// unrelated entries survive it.
pub(crate) struct Epochs {
    stripes: Box<[std::sync::atomic::AtomicU64]>,
    global: std::sync::atomic::AtomicU64,
    selective: std::sync::atomic::AtomicU64,
    log: Mutex<std::collections::VecDeque<(u64, Selector)>>,
    hasher: foldhash::fast::FixedState,
}

/// What a selective invalidation removed.
#[derive(Debug, Clone)]
pub(crate) enum Selector {
    /// Stored keys of a scope (see `Scope`) matching the glob.
    Pattern(String, crate::glob::GlobPattern),
    /// Entries with this stored tag.
    Tag(String),
    /// Every key of a scope: the unscoped keys (`""`), or a tenant's namespace.
    Scope(String),
}

impl Selector {
    fn hits(&self, key: &str, tags: Option<&[String]>) -> bool {
        match self {
            Self::Pattern(ns, g) => in_scope(ns, key) && g.matches(key),
            Self::Tag(t) => tags.is_some_and(|ts| ts.iter().any(|x| x == t)),
            Self::Scope(ns) => in_scope(ns, key),
        }
    }
}

/// Whether a stored key belongs to the scope with namespace `ns` (`""`: the
/// unscoped keys, which excludes every reserved and tenant key).
pub(crate) fn in_scope(ns: &str, stored: &str) -> bool {
    stored
        .strip_prefix(ns)
        .is_some_and(|rest| !crate::key::is_reserved(rest))
}

/// Selective invalidations remembered for entries stamped before them.
const SELECTIVE_LOG: usize = 256;

const STRIPES: usize = 4096;

impl Default for Epochs {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            global: std::sync::atomic::AtomicU64::new(1),
            selective: std::sync::atomic::AtomicU64::new(0),
            log: Mutex::new(std::collections::VecDeque::new()),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
        }
    }
}

impl fmt::Debug for Epochs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epochs")
            .field("global", &self.global())
            .finish()
    }
}

impl Epochs {
    fn stripe(&self, key: &str) -> &std::sync::atomic::AtomicU64 {
        use std::hash::BuildHasher;
        let key = crate::tenant::physical(key);
        &self.stripes[(self.hasher.hash_one(&*key) as usize) % STRIPES]
    }

    pub(crate) fn bump(&self, key: &str) {
        self.stripe(key)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn bump_global(&self) -> u64 {
        self.global
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    pub(crate) fn global(&self) -> u64 {
        self.global.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn stripe_of(&self, key: &str) -> u64 {
        self.stripe(key).load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn ticket(&self, key: &str) -> LocalTicket {
        LocalTicket {
            stripe: self.stripe_of(key),
            global: self.global(),
            selective: self.selective.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Logs a pattern clear or tag invalidation.
    pub(crate) fn invalidate_selective(&self, selector: Selector) {
        if let Ok(mut log) = self.log.lock() {
            let e = self
                .selective
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            log.push_back((e, selector));
            while log.len() > SELECTIVE_LOG {
                log.pop_front();
            }
        } else {
            // Cannot log: void everything instead.
            self.bump_global();
        }
    }

    /// Whether an entry stamped `(global, selective)` for `key` with `tags` is still
    /// valid.
    pub(crate) fn valid(
        &self,
        key: &str,
        tags: Option<&[String]>,
        global: u64,
        selective: u64,
    ) -> bool {
        if global != self.global() {
            return false;
        }
        if selective == self.selective.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        let Ok(log) = self.log.lock() else {
            return false;
        };
        if log.front().is_none_or(|(e, _)| *e > selective + 1) {
            return false;
        }
        !log.iter()
            .any(|(e, sel)| *e > selective && sel.hits(key, tags))
    }

    /// Whether nothing bumped `key`'s stripe or the global epoch since `t`.
    pub(crate) fn unchanged(&self, key: &str, t: LocalTicket) -> bool {
        self.stripe_of(key) == t.stripe && self.global() == t.global
    }
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
        let (found, mut leased) = cache.lookup_or_begin::<T>(key, with_ttl, options).await;
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
                return Ok(v);
            };
            let mut ticket = cache
                .begin_fill(key, options.lock_ttl, options.lock, &options.tags)
                .await;
            if ticket.contended {
                drop(lead);
                return Ok(v);
            }
            if let (Some(lease), Some(left)) = (ticket.lease.as_mut(), remaining) {
                lease.refresh_of = Some(left.as_millis() as u64 + 1);
            }
            return match loader().await {
                Ok(fresh) => {
                    let fresh = Arc::new(fresh);
                    store(cache, key, &fresh, ttl, options, ticket).await;
                    lead.finish(Outcome::Value(fresh.clone()));
                    Ok(fresh)
                }
                Err(_) => {
                    // A failed refresh keeps serving the current value.
                    cache.abort_fill(key, ticket).await;
                    Ok(v)
                }
            };
        }
        match cache.flights().join(key) {
            Joined::Follower(mut rx) => {
                if let Some(ticket) = leased.take() {
                    // Started a fill that this process's leader makes instead.
                    cache.abort_fill(key, ticket).await;
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
                    if let Some(ticket) = leased.take() {
                        cache.abort_fill(key, ticket).await;
                    }
                    continue;
                }
                let ticket = match leased.take() {
                    Some(ticket) => ticket,
                    None => {
                        cache
                            .begin_fill(key, options.lock_ttl, options.lock, &options.tags)
                            .await
                    }
                };
                let ready = if ticket.contended {
                    // Another process is computing: wait for its value, bounded.
                    wait_for_holder::<C, T>(cache, key, options).await
                } else if options.lock {
                    after_lock::<C, T>(cache, key, ticket).await
                } else {
                    Err(ticket)
                };
                let ticket = match ready {
                    Ok(v) => {
                        lead.finish(Outcome::Value(v.clone()));
                        return Ok(v);
                    }
                    Err(own) => own,
                };
                return match loader().await {
                    Ok(v) => {
                        let v = Arc::new(v);
                        store(cache, key, &v, ttl, options, ticket).await;
                        lead.finish(Outcome::Value(v.clone()));
                        Ok(v)
                    }
                    Err(e) => {
                        cache.abort_fill(key, ticket).await;
                        let e = Arc::new(e);
                        lead.finish(Outcome::Error(e.clone()));
                        Err(e)
                    }
                };
            }
        }
    }
}

/// Stores a loader's value with the TTL [`ComputeOptions::ttl_for`] picks for it
/// (`ttl` by default); a zero TTL stores nothing and gives the lease back.
async fn store<C: Fill, T: CacheValue>(
    cache: &C,
    key: &str,
    value: &Arc<T>,
    ttl: Duration,
    options: &ComputeOptions,
    ticket: FillTicket,
) {
    match options.ttl_of(&**value, ttl) {
        Duration::ZERO => cache.abort_fill(key, ticket).await,
        ttl => cache.end_fill(key, value, ttl, &options.tags, ticket).await,
    }
}

/// Right after taking the lock: the value, if a holder in another process stored
/// it (and let the lock go) between our miss and our lock — the lock is released
/// and nothing is loaded; else the ticket to load with.
async fn after_lock<C: Fill, T: CacheValue>(
    cache: &C,
    key: &str,
    ticket: FillTicket,
) -> Result<Arc<T>, FillTicket> {
    match cache.lookup::<T>(key, false).await {
        Lookup::Hit(v, _) => {
            cache.abort_fill(key, ticket).await;
            Ok(v)
        }
        Lookup::Miss => Err(ticket),
    }
}

/// Polls for the value a lock holder in another process is computing. `Err` carries
/// a ticket of our own: the holder let go without a value (finished without storing,
/// died, or an invalidation removed its lease) or the wait ran out.
async fn wait_for_holder<C: Fill, T: CacheValue>(
    cache: &C,
    key: &str,
    options: &ComputeOptions,
) -> Result<Arc<T>, FillTicket> {
    let deadline = tokio::time::Instant::now() + options.lock_wait;
    let mut pause = Duration::from_millis(2);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        if let Lookup::Hit(v, _) = cache.lookup::<T>(key, false).await {
            return Ok(v);
        }
        let probe = cache
            .begin_fill(key, options.lock_ttl, true, &options.tags)
            .await;
        if !probe.contended {
            return after_lock(cache, key, probe).await;
        }
    }
    Err(cache
        .begin_fill(key, options.lock_ttl, false, &options.tags)
        .await)
}
