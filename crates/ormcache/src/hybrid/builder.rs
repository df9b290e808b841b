//! [`HybridBuilder`]: the settings of a [`HybridCache`], and starting its tasks.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ack::{self, ack_loop};
use super::tasks::{heartbeat_loop, recovery_loop, subscriber_loop};
use super::{Counters, FleetState, HybridCache, Inner};
use crate::coherence::{Backlog, Peers, Sequences};
use crate::distributed::DistributedCache;
use crate::error::{Error, ErrorKind, Result};
use crate::local::QueryCache;
use crate::memo::random_token;

/// Settings of a [`HybridCache`]; see [`HybridCache::builder`].
#[must_use]
#[derive(Debug)]
pub struct HybridBuilder {
    pub(super) l1: QueryCache,
    pub(super) l2: DistributedCache,
    pub(super) degraded_max_age: Duration,
    pub(super) l1_max_ttl: Duration,
    pub(super) heartbeat_interval: Duration,
    pub(super) max_backlog: usize,
    pub(super) confirm_timeout: Option<Duration>,
    /// `None`: the default for the L2's topology.
    pub(super) protocol: Option<Protocol>,
}

/// How the instances of a [`HybridCache`] fleet keep their L1 copies coherent; see
/// [`HybridBuilder::protocol`]. The two do not interoperate: every instance on one
/// prefix must use the same one.
///
/// What each costs is measured by the `fleet_scaling` and `foreign_write` bench
/// scenarios (README, "Benchmarks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Every instance hears every write's numbered message and acknowledges it;
    /// every instance hears every heartbeat. Costs grow with the fleet: about three
    /// Redis commands per write for each instance, and heartbeat deliveries grow
    /// with the square of the fleet.
    Broadcast,
    /// Writes reach only the instances that hold the key in L1 (each registers
    /// itself in Redis when it reads a key, in the same round trip), and only they
    /// acknowledge; a read-through fill publishes nothing; heartbeats go to their
    /// sender only. Redis server-assisted client-side caching (`CLIENT TRACKING`,
    /// redirected to the subscriber connection) also evicts L1 copies, within
    /// milliseconds, when any other Redis client writes, deletes or expires a key,
    /// when Redis evicts or expires it, and on `FLUSHDB`. Clears, pattern clears and
    /// tag invalidations still go to, and are acknowledged by, every instance. On a
    /// Redis Cluster the messages use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
    ///
    /// Needs `CLIENT` (`TRACKING`, `CACHING`, `ID`), `HELLO` (the subscriber speaks RESP3),
    /// `SADD`, `SMEMBERS` (in scripts); on a cluster `SPUBLISH` and `SSUBSCRIBE`
    /// (README, "ACL users"). Without `CLIENT TRACKING` it runs untracked: writes
    /// through ormcache are still confirmed, writes by other clients reach L1
    /// copies when they expire (a warning says so).
    Fleet,
}

impl HybridBuilder {
    /// While the invalidation stream is down, L1 serves only entries younger than
    /// this (default 2 s).
    pub fn degraded_max_age(mut self, age: Duration) -> Self {
        self.degraded_max_age = age;
        self
    }

    /// The longest an L1 copy lives, whatever the entry's TTL (default 30 s): the
    /// bound on staleness should an invalidation be lost undetected.
    pub fn l1_max_ttl(mut self, ttl: Duration) -> Self {
        self.l1_max_ttl = ttl;
        self
    }

    /// How often each instance publishes a heartbeat (default 500 ms): on the
    /// invalidation channel under [`Protocol::Broadcast`], where a lost message is
    /// detected within about two intervals; to its own inbox under
    /// [`Protocol::Fleet`], where it also checks that Redis still tracks what the
    /// L2 connections read. A dead subscription is detected within about three.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every;
        self
    }

    /// Invalidations kept while Redis is unreachable (default 10,000); past that the
    /// backlog becomes "clear the whole prefix", which is always safe.
    pub fn max_backlog(mut self, entries: usize) -> Self {
        self.max_backlog = entries;
        self
    }

    /// Confirmed invalidation (default: on, waiting at most 1 s): every call that
    /// invalidates (`set`, `delete`, `expire`, `clear`, `clear_pattern`,
    /// `set_many`, `delete_many`, `set_with_tags`, `invalidate_tag`) returns only
    /// once every other live instance on the channel has evicted its L1 copies, so
    /// that the next read through any of them is fresh — or once `timeout` has
    /// passed. `None` turns it off: writes return as soon as Redis has them and the
    /// other instances catch up within the pub/sub delivery time.
    ///
    /// Under [`Protocol::Fleet`] a write waits for the instances that held the
    /// key and were subscribed when the message went out; a clear, pattern clear
    /// or tag invalidation for as many acknowledgements as there were other
    /// subscribers. Under [`Protocol::Broadcast`] it waits for every live peer: a
    /// peer is live if it was heard within three heartbeat intervals plus the
    /// command timeout. A peer that lets the timeout pass is counted
    /// ([`CoherenceStats::unconfirmed`](crate::CoherenceStats::unconfirmed)), logged, and not waited for again until it
    /// acknowledges something: a frozen peer costs one timeout, not one per write.
    /// The write still returns `Ok` (Redis took it). An instance alone on the
    /// channel, or whose own stream is down, never waits. What this costs is in
    /// the `hybrid_invalidation` bench (one extra pub/sub hop on each write,
    /// nothing on reads).
    ///
    /// The default is on because a read-your-write across instances is what users
    /// of a coherent cache expect; the timeout is well above the delivery times
    /// seen on a saturated machine (about 100 ms) and small enough that a crashed
    /// peer costs the writes of the next second at most one second each.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(l1: ormcache::QueryCache, l2: ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let cache = ormcache::HybridCache::builder(l1, l2)
    ///     .confirm_invalidations(Some(Duration::from_millis(500)))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn confirm_invalidations(mut self, timeout: Option<Duration>) -> Self {
        self.confirm_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// The coherence protocol. Every instance on one prefix must use the same one.
    ///
    /// The default is [`Protocol::Fleet`] everywhere: on a single server, behind
    /// Sentinel and on a Redis Cluster (sharded pub/sub, tracking on every
    /// primary). [`Protocol::Broadcast`] sends every message to every instance;
    /// choose it to interoperate with instances that use it.
    ///
    /// ```no_run
    /// # async fn demo(l1: ormcache::QueryCache, l2: ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let cache = ormcache::HybridCache::builder(l1, l2)
    ///     .protocol(ormcache::Protocol::Broadcast)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Builds the cache and starts its background tasks (subscriber, heartbeat,
    /// recovery, acknowledgements).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) outside a tokio runtime:
    /// without its tasks the cache could never become coherent.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(l1: ormcache::QueryCache, l2: ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let cache = ormcache::HybridCache::builder(l1, l2)
    ///     .heartbeat_interval(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<HybridCache> {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Err(Error::new(ErrorKind::InvalidInput, "HybridBuilder::build").with_detail(
                "called outside a tokio runtime: the invalidation tasks cannot start, so the cache could never be coherent",
            ));
        };
        let channel = crate::inspect::channel(self.l2.prefix());
        let id = random_token();
        let cache: Arc<str> = Arc::from(self.l2.prefix());
        // The L1 reports under this prefix (unless it was used on its own before).
        self.l1.name_metrics(&cache);
        let protocol = self.protocol.unwrap_or(Protocol::Fleet);
        let fleet = (protocol == Protocol::Fleet).then(|| {
            let inboxes = format!("{channel}:to:");
            FleetState {
                inbox: format!("{inboxes}{id}"),
                inboxes,
                tracking: AtomicBool::new(false),
                tracked: Mutex::new(Vec::new()),
                redirect: Mutex::new(None),
                sharded: self.l2.is_cluster(),
            }
        });
        let inner = Arc::new(Inner {
            fleet,
            id,
            ack_channel: ack::ack_channel(&channel, id),
            channel,
            seq: AtomicU64::new(0),
            coherent: AtomicBool::new(false),
            sequences: Mutex::new(Sequences::default()),
            peers: Mutex::new(Peers::default()),
            acked: Notify::new(),
            wake_acker: Arc::new(Notify::new()),
            confirm_timeout: self.confirm_timeout,
            backlog: Mutex::new(Backlog::default()),
            backlog_pending: AtomicBool::new(false),
            queued: crate::coherence::Tally::default(),
            replay_lock: tokio::sync::Mutex::new(()),
            wake_recovery: Arc::new(Notify::new()),
            resubscribe: Arc::new(Notify::new()),
            own_heartbeat: Mutex::new(Instant::now()),
            identity: Mutex::new(None),
            counters: Counters::metered(&cache),
            meter: crate::observe::HybridMeter::new(&cache),
            events: crate::telemetry::Events::default(),
            lag: crate::telemetry::Histogram::default(),
            tasks: crate::tasks::Tasks::default(),
            degraded_max_age: self.degraded_max_age,
            l1_max_ttl: self.l1_max_ttl,
            heartbeat_interval: self.heartbeat_interval.max(Duration::from_millis(10)),
            max_backlog: self.max_backlog.max(1),
            flights: crate::memo::Flights::default(),
            l1: self.l1,
            l2: self.l2,
        });
        let tasks = vec![
            if inner.fleet.is_some() {
                rt.spawn(super::fleet::subscriber_loop(Arc::downgrade(&inner)))
            } else {
                rt.spawn(subscriber_loop(Arc::downgrade(&inner)))
            },
            rt.spawn(heartbeat_loop(Arc::downgrade(&inner))),
            rt.spawn(recovery_loop(
                Arc::downgrade(&inner),
                Arc::clone(&inner.wake_recovery),
            )),
            rt.spawn(ack_loop(
                Arc::downgrade(&inner),
                Arc::clone(&inner.wake_acker),
            )),
        ];
        inner.tasks.extend(tasks);
        Ok(HybridCache { inner })
    }
}
