//! [`DistributedCache`]: the Redis L2.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::FromRedisValue;
use redis::aio::ConnectionLike as _;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};

use crate::breaker::{Breaker, BreakerState};
use crate::cache::{CacheValue, Ttl};
use crate::codec::Encoding;
use crate::config::DistributedConfig;
use crate::error::{Error, ErrorKind, Result, from_redis};
use crate::glob::escape_glob;
use crate::key::{self, full_key};
use crate::stats::{Counters, DistributedStats, STAT_FIELDS, Stat, hit_rate};

/// Where tenants' entries live under the prefix (counted in `keys_count`).
const TENANT_NAMESPACE: &str = "__oc:t:";

/// Extra time a batch gets per command or argument past the first few.
const BATCH_ALLOWANCE: Duration = Duration::from_micros(50);
/// Arguments of the largest single-key command a pipeline holds (`SET k v PX ms`).
const PLAIN_ARGS: usize = 4;

/// How often, at most, undecodable entries are logged (with their count).
const DECODE_LOG_EVERY: Duration = Duration::from_secs(10);

/// SCAN batch size for pattern clears and key counting.
const SCAN_COUNT: usize = 1000;
/// `keys_count` samples at most this many SCAN pages before estimating.
const KEYS_COUNT_PAGES: usize = 8;

#[cfg(feature = "cluster")]
mod cluster;
mod coalesce;
mod coherent;
pub(crate) use coherent::{Found, Redirect, Subscriber};
mod builder;
pub use builder::DistributedBuilder;
mod conn;
use conn::{Conn, Link, Node};
mod fill;
pub(crate) use fill::Announce;
mod health;
mod inspect;
mod keyspace;
#[cfg(feature = "axum")]
mod observe;
#[cfg(feature = "axum")]
pub(crate) use observe::L2View;
#[cfg(feature = "sentinel")]
mod sentinel;
mod transport;

enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
    /// A pipeline whose last reply is the answer; an error reply to any command
    /// fails it (as [`Pipe`](Self::Pipe)), but no tuple of replies is built.
    Last(&'a redis::Pipeline),
    /// A command for one server (a cluster primary).
    On(&'a Node, &'a redis::Cmd),
}

/// A message to publish along with a write (coherence of `HybridCache`).
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) channel: String,
    pub(crate) payload: Vec<u8>,
    /// Sharded pub/sub (`SPUBLISH`: `Protocol::Fleet` on a cluster).
    pub(crate) sharded: bool,
    /// `Protocol::Fleet`: who the message goes to, and who it reached.
    pub(crate) fleet: Option<Fleet>,
}

impl Notice {
    /// A message for every subscriber of `channel`.
    pub(crate) fn broadcast(channel: String, payload: Vec<u8>, sharded: bool) -> Self {
        Self {
            channel,
            payload,
            sharded,
            fleet: None,
        }
    }

    /// Whether delivery takes a second round trip after the one that carries the
    /// notice (`Protocol::Fleet` on a cluster: the holders the registries named
    /// are sent the message with `SPUBLISH`).
    pub(crate) fn delivers_later(&self) -> bool {
        self.sharded
            && self
                .fleet
                .as_ref()
                .is_some_and(|f| !f.registries.is_empty())
    }

    pub(crate) fn publish_command(&self) -> &'static str {
        if self.sharded { "SPUBLISH" } else { "PUBLISH" }
    }
}

/// How a [`Notice`] of `Protocol::Fleet` is delivered.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    /// The holder registries of the keys the message names (their holders'
    /// inboxes get it), or empty: every subscriber of the channel gets it.
    pub(crate) registries: Vec<String>,
    /// The sender (never messaged).
    pub(crate) me: u64,
    /// The inbox channel of holder `h` is this followed by `h`.
    pub(crate) inbox: String,
    /// Filled by the round trip that delivered the message; shared with the
    /// writer, which waits for the acknowledgements of those it reached.
    pub(crate) reached: Arc<std::sync::Mutex<Reached>>,
}

/// Who a [`Fleet`] message reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Reached {
    /// Not delivered (yet).
    #[default]
    Unknown,
    /// These registered holders, each subscribed when it was sent.
    Holders(Vec<u64>),
    /// This many subscribers of the channel, the sender included.
    Subscribers(u64),
}

impl Fleet {
    pub(crate) fn set(&self, reached: Reached) {
        if let Ok(mut r) = self.reached.lock() {
            *r = reached;
        }
    }
}

/// The holder ids in a reply of [`NOTIFY_SCRIPT`] or [`HOLDERS_SCRIPT`].
pub(crate) fn holder_ids(reply: &redis::Value) -> Vec<u64> {
    let ids: Vec<String> = redis::from_redis_value_ref(reply).unwrap_or_default();
    ids.iter().filter_map(|id| id.parse().ok()).collect()
}

/// Delivers a `Protocol::Fleet` message of a write to the registered holders of
/// its keys (`KEYS`: their registries; `ARGV`: the sender, the inbox prefix, the
/// message): each registry is read and emptied, and every holder but the sender
/// still subscribed to its inbox gets the message. Returns the holders it reached.
/// It runs after the write in the same round trip: a reader registers before it
/// reads, so a reader that could have read the old value is in the registry by
/// now, and one that registers later reads the new value.
pub(crate) const NOTIFY_SCRIPT: &str = r"
local reached, seen = {}, {}
for _, reg in ipairs(KEYS) do
  for _, h in ipairs(redis.call('SMEMBERS', reg)) do
    if h ~= ARGV[1] and not seen[h] then
      seen[h] = true
      if redis.call('PUBLISH', ARGV[2] .. h, ARGV[3]) > 0 then
        reached[#reached + 1] = h
      end
    end
  end
  redis.call('DEL', reg)
end
return reached
";

/// [`NOTIFY_SCRIPT`] on a cluster, for one registry: the holders' inboxes are
/// sharded channels in other slots, so it only reads and empties the registry and
/// returns the holders; the writer then sends each one the message with
/// `SPUBLISH` in a second round trip.
pub(crate) const HOLDERS_SCRIPT: &str = r"
local holders = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return holders
";

/// A reader of `Protocol::Fleet` that is about to copy keys into its L1: it
/// registers as their holder before it reads (see [`NOTIFY_SCRIPT`]) and, where
/// `tracking` (opt-in tracking on a single server), announces the read with
/// `CLIENT CACHING YES` so that Redis tracks it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    pub(crate) me: u64,
    /// How long a registration lasts: longer than the L1 copy.
    pub(crate) ttl_ms: u64,
    pub(crate) tracking: bool,
}

/// The round trip failed because `CLIENT CACHING` found tracking off on its
/// connection: the connection was replaced since tracking was turned on.
pub(crate) fn is_tracking_off(e: &Error) -> bool {
    use std::error::Error as _;
    e.kind() == ErrorKind::Server
        && e.source()
            .and_then(|s| s.downcast_ref::<redis::RedisError>())
            .and_then(|r| r.detail())
            .is_some_and(|d| d.contains("CACHING"))
}

struct Inner {
    /// Namespace versioning: entries carry the namespace token; `clear` is O(1).
    namespaced: bool,
    /// Clients for the invalidation subscriber: the server, or the cluster's seeds
    /// (used in turn).
    pubsub: Vec<redis::Client>,
    next_pubsub: AtomicUsize,
    /// A cluster's seeds, for a subscriber connection of its own.
    #[cfg(feature = "cluster")]
    seeds: Option<conn::ClusterSeeds>,
    /// Cluster layout of internal keys: slot-tagged leases, no clear generation
    /// (see `cluster.rs`).
    slot_tags: bool,
    flights: crate::memo::Flights,
    breaker: Breaker,
    /// Whether the server is known to be unreachable (fail fast, see `health.rs`).
    health: health::Health,
    conns: Vec<Conn>,
    next: AtomicUsize,
    prefix: String,
    /// `escape_glob(prefix) + ":"`: what every SCAN pattern starts with.
    scan_prefix: String,
    stats_key: String,
    encoding: Encoding,
    default_ttl: Duration,
    timeout: Duration,
    return_decode_errors: bool,
    counters: Counters,
    /// Round-trip times of `call` (the dashboard's Redis latency).
    latency: crate::telemetry::Histogram,
    /// Undecodable entries met, for the aggregated warning (one line per
    /// interval, not one per read).
    decode_log: crate::coherence::Tally,
    closed: AtomicBool,
    address: String,
    tasks: crate::tasks::Tasks,
    /// Set with `coalesce_gets`: concurrent `get`s share `MGET`s.
    coalescer: Option<coalesce::Coalescer>,
}

/// The Redis L2: shared by every process, container and server that uses the same
/// Redis and `key_prefix`.
///
/// Built with [`DistributedCache::create`] or [`DistributedCache::builder`]. Every
/// call is bounded by the command timeout (250 ms by default) and returns an
/// [`Error`] on failure; nothing panics and nothing hangs. Entries are stored at
/// `{key_prefix}:{key}`; with the default JSON codec the bytes are plain JSON, so the
/// Python package's `DistributedCache` reads and writes the same entries.
///
/// Statistics cost no round trip: counters are atomics, flushed in the background
/// into the hash `{key_prefix}:stats`.
///
/// # Failure and cancellation
///
/// A refused connection marks the server down at once: later calls fail
/// immediately with a [`Connection`](ErrorKind::Connection) error (no reconnect
/// retries inside a call) while one background task reconnects; each
/// such failure counts toward the circuit breaker, which the reconnection closes
/// again. A silent server costs each call the command timeout until the breaker
/// opens. Every `async fn` here is cancel-safe in the sense of DESIGN contract 13:
/// dropping its future at any `.await` leaves no state behind (a breaker probe is
/// given back by its guard, so the next call probes). A write dropped after it was
/// sent has an unknown outcome, as after a timeout: it may still be applied.
///
/// # Redis Cluster
///
/// With the `cluster` feature, [`DistributedConfig::cluster_nodes`] points the cache
/// at a Redis Cluster. Every operation behaves as on one server; what differs:
///
/// - **Keys.** Entries stay at `{key_prefix}:{key}` (plain JSON, readable by the
///   Python package), in whatever slot Redis hashes them to. Lease keys, which a
///   fill's store script reads together with the entry, carry a hash tag that maps
///   them to their entry's slot: `{key_prefix}:__oc:lease:{TTTT}:{key}` (`TTTT`:
///   four letters or digits, from a table with one tag per slot). Tag tokens, the
///   namespace token and the stats hash keep their single-server keys: no script
///   reads them together with another key. A `key_prefix` that contains a complete
///   hash tag (`"{myapp}"`) pins the whole cache to one slot (one node) and keeps
///   the single-server layout; a prefix with a `{` that opens no complete,
///   non-empty hash tag is refused by `create`.
/// - **Batches.** `get_many` (one `MGET`), `delete_many` (one `UNLINK`),
///   `set_many` and every other pipeline are split by slot by ormcache (a multi-key
///   command becomes one command per slot) and grouped by the primary that serves
///   each slot: one pipeline per primary, sent concurrently, so a batch costs about
///   one round trip and one request per node. The slot → primary map is read with
///   `CLUSTER SLOTS` at connect time and again in the background (at least once a
///   second while batches run, and after a group met an error); a group that meets
///   a slot that moved is sent again one pipeline per slot, which redis-rs
///   redirects. Commands without a key or spanning slots (`PUBLISH`, an `MGET` of
///   tag tokens) run after the rest, in order: an invalidation message is never
///   published before the write it announces.
/// - **Clears.** `clear`, `clear_pattern`, `get_stats`' `keys_count` and the
///   background sweep of namespace versioning run `SCAN` (and `UNLINK`) on every
///   primary in turn, confined to the prefix (and tenant) as on one server.
/// - **No stale fill after a clear.** On one server a clear bumps a generation key
///   that the fill script checks. No key shares a slot with every entry, so on a
///   cluster a clear first removes the leases of the keys it matches (a `SCAN` of
///   the lease keys on every primary), and only then the entries. A fill whose
///   lease was taken before the clear either stored before its lease was removed,
///   so before the entries pass began, which then finds and removes the value; or
///   finds its lease gone and does not store. (`SCAN` returns every key present
///   for the whole scan; a slot migration during a clear voids that guarantee.)
///   Deletes remove a key's lease in the same slot, before the entry; tag and
///   namespace checks are token stamps read at lease time, so they need no
///   co-location.
/// - **Identity.** The restart/failover detection of [`HybridCache`](crate::HybridCache)
///   compares the run id and replication id of every primary: a restart of any of
///   them triggers recovery. The invalidation subscriber listens on one node
///   (`PUBLISH` reaches every node of a cluster); each resubscription moves on to
///   the next of the seed nodes and the primaries the cluster reports, so losing
///   that node (even the only seed) does not stop coherence.
/// - **Failure.** A dead primary makes the calls that reach it fail (connection
///   errors, timeouts, or `CLUSTERDOWN` server errors once the cluster notices) within
///   the command timeout, and the circuit breaker, which is per cache, not per node,
///   opens after repeated connection failures or timeouts. When the node is back
///   (or a replica took over), calls succeed again after the next probe.
///
/// ```no_run
/// use std::time::Duration;
/// use ormcache::DistributedCache;
///
/// # async fn demo() -> ormcache::Result<()> {
/// let cache = DistributedCache::builder()
///     .redis_url("redis://localhost:6379")
///     .default_ttl(Duration::from_secs(300))
///     .build()
///     .await?;
///
/// cache.set("user:1", serde_json::json!({"id": 1, "name": "John"}), Some(Duration::from_secs(60))).await?;
/// let user = cache.get::<serde_json::Value>("user:1").await?;
/// assert_eq!(user.unwrap()["name"], "John");
/// assert!(cache.delete("user:1").await?);
/// cache.clear().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DistributedCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for DistributedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedCache")
            .field("address", &self.inner.address)
            .field("prefix", &self.inner.prefix)
            .field("connections", &self.inner.conns.len())
            .field("closed", &self.inner.closed.load(Relaxed))
            .finish()
    }
}

fn validate_config(c: &DistributedConfig) -> Result<()> {
    key::validate_prefix(&c.key_prefix)?;
    key::validate_ttl("create", "default_ttl", c.default_ttl).map_err(|_| {
        Error::invalid(
            "create",
            format!(
                "default_ttl {:?} must be between 1 ms and {:?}",
                c.default_ttl,
                key::MAX_TTL
            ),
        )
    })?;
    if c.max_connections == 0 {
        return Err(Error::invalid(
            "create",
            "max_connections must be at least 1",
        ));
    }
    if c.command_timeout.is_zero() || c.connect_timeout.is_zero() {
        return Err(Error::invalid(
            "create",
            "timeouts must be greater than zero",
        ));
    }
    if c.stats_flush_interval.is_zero() || c.health_check_interval.is_some_and(|d| d.is_zero()) {
        return Err(Error::invalid(
            "create",
            "intervals must be greater than zero",
        ));
    }
    if c.max_value_bytes == 0 {
        return Err(Error::invalid(
            "create",
            "max_value_bytes must be at least 1",
        ));
    }
    Ok(())
}

/// The last of a pipeline's replies, converted; the first error reply among them
/// fails it.
fn last_reply<T: FromRedisValue>(replies: Vec<redis::Value>) -> redis::RedisResult<T> {
    let mut last = None;
    for reply in replies {
        last = Some(reply.extract_error()?);
    }
    let last = last.ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a pipeline reply is missing",
        ))
    })?;
    T::from_redis_value(last).map_err(Into::into)
}

impl DistributedCache {
    /// A builder with the defaults; `build().await` connects.
    ///
    /// ```no_run
    /// # async fn demo() -> ormcache::Result<()> {
    /// let cache = ormcache::DistributedCache::builder()
    ///     .redis_url("redis://localhost:6379")
    ///     .key_prefix("myapp")
    ///     .build()
    ///     .await?;
    /// # let _ = cache; Ok(()) }
    /// ```
    pub fn builder() -> DistributedBuilder {
        DistributedBuilder::default()
    }

    /// Connects to Redis (unless `connect_lazily`) and checks it answers `PING`.
    /// Must run inside a Tokio runtime (with time and I/O enabled). Cancel-safe:
    /// dropped, it leaves nothing running.
    ///
    /// # Errors
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a bad URL or option (the URL
    /// quoted with its password redacted), a URL form whose feature is not
    /// compiled in, or when polled outside a Tokio runtime;
    /// [`Connection`](ErrorKind::Connection) or
    /// [`Timeout`](ErrorKind::Timeout), naming the address (password redacted), when
    /// Redis cannot be reached within `socket_connect_timeout` or its TLS
    /// certificate is not trusted; [`Auth`](ErrorKind::Auth) when it refuses the
    /// credentials.
    pub async fn create(config: DistributedConfig) -> Result<Self> {
        validate_config(&config)?;
        // Connections, timeouts and the background tasks need Tokio: an error,
        // not a panic, when polled elsewhere.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::invalid(
                "create",
                "must run inside a Tokio runtime (with the time and I/O drivers enabled)",
            ));
        }
        let mut tcp = TcpSettings::default().set_nodelay(true);
        if config.keepalive {
            tcp = tcp.set_keepalive(TcpKeepalive::new().with_time(Duration::from_secs(60)));
        }
        let link = conn::connect(&config, tcp).await?;
        let Link {
            conns,
            pubsub,
            address,
            slot_tags,
            #[cfg(feature = "cluster")]
            seeds,
        } = link;

        // The `cache` label of this cache's metrics.
        let metric_label: Arc<str> = Arc::from(config.key_prefix.as_str());
        let inner = Arc::new(Inner {
            namespaced: config.namespaced,
            pubsub,
            next_pubsub: AtomicUsize::new(0),
            #[cfg(feature = "cluster")]
            seeds,
            slot_tags,
            flights: crate::memo::Flights::default(),
            breaker: Breaker::new(config.breaker)
                .metered(crate::observe::BreakerMeter::new(&metric_label)),
            health: health::Health::default(),
            conns,
            next: AtomicUsize::new(0),
            scan_prefix: format!("{}:", escape_glob(&config.key_prefix)),
            stats_key: full_key(&config.key_prefix, key::STATS_KEY),
            prefix: config.key_prefix.clone(),
            encoding: config.encoding(),
            default_ttl: config.default_ttl,
            timeout: config.command_timeout,
            return_decode_errors: config.return_decode_errors,
            coalescer: config.coalesce_gets.then(coalesce::Coalescer::default),
            latency: crate::telemetry::Histogram::default(),
            counters: Counters::metered(&metric_label),
            decode_log: crate::coherence::Tally::default(),
            closed: AtomicBool::new(false),
            address,
            tasks: crate::tasks::Tasks::default(),
        });
        let cache = Self { inner };
        if !config.connect_lazily {
            cache.ping().await.map_err(|e| {
                e.with_detail(format!("{} did not answer PING", cache.inner.address))
            })?;
        }
        cache.spawn_background(&config);
        Ok(cache)
    }

    fn spawn_background(&self, config: &DistributedConfig) {
        let mut tasks = Vec::new();
        let weak = Arc::downgrade(&self.inner);
        tasks.push(tokio::spawn(flush_loop(weak, config.stats_flush_interval)));
        if let Some(every) = config.health_check_interval {
            tasks.push(tokio::spawn(health::health_loop(
                Arc::downgrade(&self.inner),
                every,
            )));
        }
        self.inner.tasks.extend(tasks);
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The default TTL.
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    /// The encoding used for writes.
    pub fn encoding(&self) -> Encoding {
        self.inner.encoding
    }

    /// The Redis address, password redacted.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The full Redis key for `key`: `{key_prefix}:{key}`, or the tenant's
    /// `{key_prefix}:__oc:t:{tenant}:{key}` inside a [`tenant::scope`](crate::tenant::scope).
    ///
    /// Public for work on the Redis beside the cache: inspecting an entry with
    /// `redis-cli`, an operator tool, a load test that writes around the cache. The
    /// layout is DESIGN contract 1 and changes only with it.
    ///
    /// ```no_run
    /// # async fn demo(cache: ormcache::DistributedCache) {
    /// assert_eq!(cache.redis_key("user:1"), "myapp:user:1"); // key_prefix "myapp"
    /// # }
    /// ```
    pub fn redis_key(&self, key: &str) -> String {
        full_key(&self.inner.prefix, key)
    }

    fn conn(&self) -> Conn {
        let conns = &self.inner.conns;
        let i = if conns.len() == 1 {
            0
        } else {
            self.inner.next.fetch_add(1, Relaxed) % conns.len()
        };
        conns[i].clone()
    }

    fn fail(&self, err: Error) -> Error {
        self.inner.counters.add(Stat::Error, 1);
        self.inner.counters.meter.level.error(err.kind());
        err
    }

    /// Runs one command under the command timeout and the circuit breaker.
    async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        key: Option<&str>,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.call(op, key, Request::Cmd(cmd)).await
    }

    /// Runs a pipeline (one round trip) under the command timeout and the breaker.
    async fn query_pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        self.call(op, None, Request::Pipe(pipe)).await
    }

    async fn call<T: FromRedisValue>(
        &self,
        op: &'static str,
        key: Option<&str>,
        req: Request<'_>,
    ) -> Result<T> {
        let keyed = |e: Error| match key {
            Some(k) => e.with_key(k),
            None => e,
        };
        if self.inner.closed.load(Relaxed) {
            return Err(keyed(Error::new(ErrorKind::Closed, op)));
        }
        let permit =
            match self.inner.breaker.allow() {
                Ok(p) => p,
                Err(wait) => {
                    return Err(self.fail(keyed(
                        Error::new(ErrorKind::CircuitOpen, op).with_detail(format!(
                            "Redis at {} keeps failing; next probe in {wait:?}",
                            self.inner.address
                        )),
                    )));
                }
            };
        if self.inner.health.is_down() {
            // A connection error was seen and the reconnection has not succeeded:
            // fail at once (and count it), without waiting on the network.
            permit.failure();
            return Err(self.fail(keyed(self.down_error(op))));
        }
        let mut conn = self.conn();
        // Batches get more time: the command timeout bounds a round trip, not the
        // work of thousands of commands in one.
        let size = match req {
            Request::Cmd(c) | Request::On(_, c) => c.args_iter().len(),
            // A command each, and the keys of a multi-key one (`UNLINK` of every
            // lease of a `set_many`) beyond the few arguments of a plain command.
            Request::Pipe(p) | Request::Last(p) => p
                .cmd_iter()
                .map(|c| c.args_iter().len().saturating_sub(PLAIN_ARGS).max(1))
                .sum(),
        };
        let extra = u32::try_from(size.saturating_sub(8)).unwrap_or(u32::MAX);
        let timeout = self
            .inner
            .timeout
            .saturating_add(BATCH_ALLOWANCE.saturating_mul(extra));
        // One span per round trip (`debug`): the operation and the key prefix,
        // never a key or a value; the outcome and the time once it is known.
        let span = tracing::debug_span!(
            "ormcache.redis",
            op,
            prefix = %self.inner.prefix,
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        // One clock for the dashboard's histogram, the metric and the span.
        let started = std::time::Instant::now();
        // Our timer bounds every call and gives a batch its allowance. The
        // single-server and Sentinel connections have no timeout of their own
        // (one timer a call); a cluster's connection has one for its nodes, but a
        // request can also wait inside redis-rs (redirections, slot-map
        // refreshes) beyond any node's reply: ours bounds that too.
        let round_trip = move || async move {
            match req {
                Request::Cmd(c) => c.query_async::<T>(&mut conn).await,
                Request::Pipe(p) => p.query_async::<T>(&mut conn).await,
                Request::Last(p) => conn
                    .req_packed_commands(p, 0, p.len())
                    .await
                    .and_then(last_reply),
                Request::On(node, c) => conn
                    .on_node(node, c)
                    .await
                    .and_then(|v| T::from_redis_value(v).map_err(Into::into)),
            }
        };
        // (Made in the branch that awaits it, so that the branches share their
        // space in this future.)
        let bounded = move || tokio::time::timeout(timeout, round_trip());
        let reply = if span.is_disabled() {
            bounded().await
        } else {
            tracing::Instrument::instrument(bounded(), span.clone()).await
        };
        let took = started.elapsed();
        self.inner.latency.record(took);
        let timed_out = |after: Duration| {
            keyed(
                Error::new(ErrorKind::Timeout, op)
                    .with_detail(format!("no reply within {after:?}")),
            )
        };
        let result = match reply {
            Ok(Ok(v)) => Ok(v),
            // A cluster connection's own timeout (the command timeout).
            Ok(Err(e)) if e.is_timeout() => Err(timed_out(self.inner.timeout)),
            Ok(Err(e)) => Err(keyed(from_redis(op, e))),
            Err(_) => Err(timed_out(timeout)),
        };
        if crate::observe::ON || !span.is_disabled() {
            self.inner.counters.meter.round_trip(op, took);
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => crate::observe::kind_label(e.kind()),
            };
            span.record("outcome", outcome);
            span.record(
                "elapsed_us",
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            );
        }
        // (Dropped before this point, the permit gives back a probe slot it holds.)
        match &result {
            Ok(_) => permit.success(),
            Err(e) if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout) => {
                if e.kind() == ErrorKind::Connection {
                    self.on_connection_error(e);
                }
                permit.failure();
            }
            // Redis answered (an error reply, or a reply of another shape): it is up.
            Err(_) => permit.success(),
        }
        result.map_err(|e| self.fail(e))
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    fn decode_entry<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<Arc<T>>> {
        let c = &self.inner.counters;
        match self.inner.encoding.decode_for(op, Some(key), bytes) {
            Ok(v) => {
                c.add(Stat::Hit, 1);
                if crate::observe::is_null_bytes(bytes) {
                    c.meter.level.negative_hits.increment(1);
                }
                Ok(Some(Arc::new(v)))
            }
            Err(e) => {
                c.add(Stat::Miss, 1);
                c.add(Stat::Error, 1);
                c.decode_errors.fetch_add(1, Relaxed);
                c.meter.level.error(ErrorKind::Decode);
                c.meter.decode_errors.increment(1);
                // Every read of a bad entry meets it again: one line per interval.
                if let Some(n) = self
                    .inner
                    .decode_log
                    .count(DECODE_LOG_EVERY, std::time::Instant::now())
                {
                    tracing::warn!(
                        count = n,
                        every = ?DECODE_LOG_EVERY,
                        error = %e,
                        "undecodable cache entries counted as misses (count since the previous line)"
                    );
                }
                if self.inner.return_decode_errors {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The value at `key`, or `None` on a miss. Undecodable bytes are a counted miss
    /// (or an error with `return_decode_errors`).
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>> {
        key::validate("get", key)?;
        let full = full_key(&self.inner.prefix, key);
        let reply = match &self.inner.coalescer {
            None => self.get_reply(key, &full).await,
            Some(co) => self.get_coalesced(co, key, full).await,
        };
        match reply {
            Ok(Some(bytes)) => self.resolve("get", key, &bytes).await,
            Ok(None) => {
                self.inner.counters.add(Stat::Miss, 1);
                Ok(None)
            }
            Err(e) if is_wrong_type(&e) => {
                // Someone stored a list or hash here: not ours, not decodable.
                self.decode_entry("get", key, &[])
            }
            Err(e) => Err(e),
        }
    }

    /// The bytes at the full key `full` (of `key`): one `GET`.
    async fn get_reply(&self, key: &str, full: &str) -> Result<Option<Vec<u8>>> {
        let mut cmd = redis::Cmd::with_capacity(2, 3 + full.len());
        cmd.arg("GET").arg(full);
        self.query("get", Some(key), &cmd).await
    }

    /// Stores `value` at `key` for `ttl` (`None`: the default TTL). Also removes the
    /// key's fill lease in the same round trip, so that a `get_or_compute` fill or
    /// early refresh that started before does not store over this value.
    ///
    /// Cancel-safe; dropped after sending, the write may still be applied.
    ///
    /// # Errors
    /// Invalid key or TTL; encode errors; values over `max_value_bytes`; Redis
    /// errors and timeouts (after a timeout the write may still happen).
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.set_ref(key, &value, ttl).await
    }

    /// Stores a borrowed value (no move, no clone).
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn set_ref<T: serde::Serialize + ?Sized + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let (bytes, ttl) = self
            .encode_tagged::<T, &str>("set", key, value, ttl, &[])
            .await?;
        self.set_bytes(key, &bytes, ttl, None).await
    }

    /// Removes `key`; whether it existed.
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.delete_notify(key, None).await
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        key::validate("exists", key)?;
        let full = full_key(&self.inner.prefix, key);
        let n: u64 = self
            .query("exists", Some(key), redis::cmd("EXISTS").arg(&full))
            .await?;
        Ok(n > 0)
    }

    /// The remaining lifetime of `key` (`PTTL`).
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        key::validate("ttl", key)?;
        let full = full_key(&self.inner.prefix, key);
        let ms: i64 = self
            .query("ttl", Some(key), redis::cmd("PTTL").arg(&full))
            .await?;
        Ok(match ms {
            -2 => Ttl::Missing,
            ms if ms < 0 => Ttl::NoExpiry,
            ms => Ttl::Remaining(Duration::from_millis(ms as u64)),
        })
    }

    /// Sets a new TTL on `key` (`PEXPIRE`); whether the key existed. Removes the
    /// key's fill lease first, like [`set`](Self::set).
    ///
    /// Cancel-safe; dropped after sending, the expire may still be applied.
    ///
    /// # Errors
    /// Invalid key or TTL; Redis errors and timeouts.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.expire_notify(key, ttl, None).await
    }

    /// Removes every entry under the prefix (reserved keys and tenants excepted);
    /// the number removed. `SCAN` + `UNLINK` in batches, never `KEYS`.
    ///
    /// # Errors
    /// Redis errors and timeouts (entries removed before the error stay removed).
    pub async fn clear(&self) -> Result<u64> {
        self.clear_all("clear").await
    }

    /// `clear`: O(1) with namespace versioning (returns 0: the entries are removed
    /// in the background), else `SCAN` + `UNLINK`.
    pub(crate) async fn clear_all(&self, op: &'static str) -> Result<u64> {
        if self.inner.namespaced {
            // Fills in flight must not store into the new namespace either. (On a
            // cluster there is no generation: their entries carry the old
            // namespace token and are misses.)
            if !self.inner.slot_tags {
                self.bump_generation(op).await?;
            }
            self.clear_namespace(op).await?;
            return Ok(0);
        }
        self.clear_matching(op, "*").await
    }

    /// Removes the entries whose key (after the prefix) matches the Redis glob
    /// `pattern`; the number removed. The pattern cannot reach outside the prefix,
    /// and never removes reserved keys. Use [`escape_glob`] for user input.
    ///
    /// # Errors
    /// Redis errors and timeouts (entries removed before the error stay removed).
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64> {
        self.clear_matching("clear_pattern", pattern).await
    }

    /// The values at `keys`, in order: one `MGET` (on a cluster, one pipeline of
    /// per-slot `MGET`s to each primary). Undecodable or stale entries are counted
    /// misses, as in [`get`](Self::get).
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Arc<T>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut redis_keys = BatchKeys::new(&self.inner.prefix);
        let mut len = 0usize;
        for k in keys {
            key::validate("get_many", k.as_ref())?;
            len = len.saturating_add(redis_keys.len(k.as_ref()));
        }
        // Sized once: no regrowth of a command of hundreds of keys.
        let mut cmd = redis::Cmd::with_capacity(keys.len() + 1, len.saturating_add(4));
        cmd.arg("MGET");
        for k in keys {
            cmd.arg(redis_keys.full(k.as_ref()));
        }
        let replies: Vec<Option<Vec<u8>>> = self.query("get_many", None, &cmd).await?;
        let mut out = Vec::with_capacity(keys.len());
        let mut misses = 0;
        for (k, reply) in keys.iter().zip(replies) {
            out.push(match reply {
                Some(bytes) => self.resolve("get_many", k.as_ref(), &bytes).await?,
                None => {
                    misses += 1;
                    None
                }
            });
        }
        if misses > 0 {
            self.inner.counters.add(Stat::Miss, misses);
        }
        Ok(out)
    }

    /// Stores every pair with one TTL: one pipelined round trip (which also removes
    /// their fill leases, as [`set`](Self::set) does). The values are only encoded:
    /// borrowed ones (`(&str, &Row)`) need no clone.
    ///
    /// Cancel-safe; dropped after sending, some or all writes may be applied.
    ///
    /// ```no_run
    /// # async fn demo(cache: &ormcache::DistributedCache) -> ormcache::Result<()> {
    /// let rows = vec![("user:1".to_owned(), "ada"), ("user:2".to_owned(), "grace")];
    /// let entries: Vec<(&str, &&str)> = rows.iter().map(|(k, v)| (k.as_str(), v)).collect();
    /// cache.set_many(entries, None).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Invalid key or TTL, encode errors and oversized values (nothing is written);
    /// Redis errors and timeouts.
    pub async fn set_many<T: serde::Serialize + Send + Sync, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        let ms = key::ttl_millis(ttl).to_string();
        for (k, _) in &entries {
            key::validate("set_many", k.as_ref())?;
            key::validate_ttl("set_many", k.as_ref(), ttl)?;
        }
        let stamps = self.stamps("set_many", &[]).await?;
        // Every lease in one `UNLINK` ahead of the writes (on a cluster it is split
        // by slot, each part ahead of its slot's writes): half the commands of an
        // `UNLINK` per key, for Redis to run.
        let leases: Vec<String> = entries
            .iter()
            .map(|(k, _)| self.lease_key(k.as_ref()))
            .collect();
        let len = leases.iter().map(String::len).sum::<usize>();
        let mut unlink = redis::Cmd::with_capacity(leases.len() + 1, len.saturating_add(6));
        unlink.arg("UNLINK");
        for lease in &leases {
            unlink.arg(lease.as_str());
        }
        let mut pipe = redis::Pipeline::with_capacity(entries.len() + 1);
        pipe.add_command(unlink).ignore();
        let mut redis_keys = BatchKeys::new(&self.inner.prefix);
        for (k, v) in &entries {
            let k = k.as_ref();
            let bytes = self.inner.encoding.encode_for("set_many", Some(k), v)?;
            let bytes = match &stamps {
                Some((names, tokens)) => crate::codec::wrap_tagged(names, tokens, &bytes),
                None => bytes,
            };
            // Sized once, like the `MGET` of `get_many`.
            let len = 3 + redis_keys.len(k) + bytes.len() + 2 + ms.len();
            let mut set = redis::Cmd::with_capacity(5, len);
            set.arg("SET")
                .arg(redis_keys.full(k))
                .arg(bytes.as_slice())
                .arg("PX")
                .arg(ms.as_str());
            pipe.add_command(set).ignore();
        }
        self.query_pipe::<()>("set_many", &pipe).await?;
        self.inner.counters.add(Stat::Set, entries.len() as u64);
        Ok(())
    }

    /// Removes `keys`: one `UNLINK`; how many existed.
    ///
    /// # Errors
    /// Invalid key; Redis errors and timeouts.
    pub async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<u64> {
        self.delete_many_notify(keys, None).await
    }

    /// Adds this process's unflushed counters to `{key_prefix}:stats` and returns
    /// the cluster-wide totals, in one round trip.
    async fn flush_stats(&self, op: &'static str) -> Result<[u64; 4]> {
        let deltas = self.inner.counters.take_pending();
        let mut pipe = redis::pipe();
        for (field, d) in STAT_FIELDS.iter().zip(deltas) {
            pipe.cmd("HINCRBY")
                .arg(&self.inner.stats_key)
                .arg(*field)
                .arg(d);
        }
        match self.query_pipe::<Vec<i64>>(op, &pipe).await {
            Ok(totals) if totals.len() == 4 => Ok(std::array::from_fn(|i| totals[i].max(0) as u64)),
            Ok(_) => Err(Error::new(ErrorKind::Server, op).with_detail("unexpected HINCRBY reply")),
            Err(e) => {
                self.inner.counters.restore(deltas);
                Err(e)
            }
        }
    }

    /// Cluster-wide counters (every process's flushed counters plus this one's
    /// unflushed ones) and the number of entries.
    ///
    /// # Errors
    /// Redis errors and timeouts.
    pub async fn get_stats(&self) -> Result<DistributedStats> {
        let [hits, misses, sets, errors] = self.flush_stats("get_stats").await?;
        let (keys_count, keys_count_exact) = self.count_keys().await?;
        let c = &self.inner.counters;
        Ok(DistributedStats {
            hits,
            misses,
            sets,
            errors,
            hit_rate: hit_rate(hits, misses),
            keys_count,
            keys_count_exact,
            default_ttl: self.inner.default_ttl,
            decode_errors: c.decode_errors.load(Relaxed),
            breaker: self.inner.breaker.state(),
            breaker_opened: self.inner.breaker.times_opened(),
            local: c.process(),
        })
    }

    /// Flushes the counters and stops background work. Later calls fail with
    /// [`Closed`](ErrorKind::Closed). Connections close when the last clone drops.
    ///
    /// # Errors
    /// The final stats flush failed (the cache is closed all the same).
    pub async fn close(&self) -> Result<()> {
        let flushed = if self.inner.counters.pending() == [0; 4] {
            Ok(())
        } else {
            self.flush_stats("close").await.map(|_| ())
        };
        self.inner.closed.store(true, Relaxed);
        self.inner.tasks.abort_all();
        flushed
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Relaxed)
    }
}

/// The Redis keys of a batch, written into one buffer in turn (the tenant's
/// namespace read once): [`full_key`] without an allocation per key.
struct BatchKeys<'a> {
    prefix: &'a str,
    namespace: Option<String>,
    buf: String,
}

impl<'a> BatchKeys<'a> {
    fn new(prefix: &'a str) -> Self {
        Self {
            prefix,
            namespace: crate::tenant::current_namespace(),
            buf: String::new(),
        }
    }

    /// The length of `key`'s Redis key.
    fn len(&self, key: &str) -> usize {
        self.prefix.len() + 1 + self.namespace.as_ref().map_or(0, String::len) + key.len()
    }

    /// `key`'s Redis key: `{prefix}:{namespace}{key}`, as [`full_key`] writes it.
    fn full(&mut self, key: &str) -> &str {
        self.buf.clear();
        self.buf.push_str(self.prefix);
        self.buf.push(':');
        self.buf.push_str(self.namespace.as_deref().unwrap_or(""));
        self.buf.push_str(key);
        &self.buf
    }
}

pub(super) fn is_reserved_bytes(rest: &[u8]) -> bool {
    rest == key::STATS_KEY.as_bytes() || rest.starts_with(key::RESERVED_NAMESPACE.as_bytes())
}

fn is_wrong_type(e: &Error) -> bool {
    use std::error::Error as _;
    e.kind() == ErrorKind::Server
        && e.source()
            .and_then(|s| s.downcast_ref::<redis::RedisError>())
            .and_then(|r| r.code())
            == Some("WRONGTYPE")
}

async fn flush_loop(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let cache = DistributedCache { inner };
        if cache.inner.counters.pending() != [0; 4]
            && let Err(e) = cache.flush_stats("flush_stats").await
        {
            tracing::debug!(error = %e, "stats flush failed; will retry");
        }
    }
}

crate::cache::impl_cache_via_inherent!(DistributedCache, DistributedStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_keys_are_full_keys() {
        let check = || {
            let mut keys = BatchKeys::new("app");
            for k in ["user:1", "k", "ключ"] {
                assert_eq!(keys.len(k), full_key("app", k).len());
                assert_eq!(keys.full(k), full_key("app", k));
            }
        };
        check();
        let tenant = crate::tenant::TenantId::new("acme").unwrap();
        crate::tenant::scope(tenant, async { check() }).await;
    }
}
