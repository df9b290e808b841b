//! A two-level cache for async Rust services: an in-process L1 ([`QueryCache`]), a
//! Redis L2 shared by every process ([`DistributedCache`]), and the two kept coherent
//! across processes ([`HybridCache`]), behind one [`Cache`] trait.
//!
//! It is the Rust implementation of the system documented in the Python package's
//! "Distributed Caching with Redis", with that design's weaknesses fixed: stats cost
//! no round trip, a cached "not found" is not a miss, nothing read from the cache is
//! ever executed, every Redis call is bounded by a timeout, and undecodable entries
//! are counted misses rather than crashes.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use ormcache::{Cache, DistributedCache};
//!
//! # async fn demo() -> ormcache::Result<()> {
//! let cache = DistributedCache::builder()
//!     .redis_url("redis://localhost:6379")
//!     .default_ttl(Duration::from_secs(300))
//!     .build()
//!     .await?;
//!
//! cache.set("user:1", serde_json::json!({"id": 1, "name": "John"}), Some(Duration::from_secs(60))).await?;
//! let user = cache.get::<serde_json::Value>("user:1").await?;
//! println!("{user:?}");
//! cache.delete("user:1").await?;
//! cache.clear().await?;
//! println!("{}", serde_json::to_string(&cache.get_stats().await?).unwrap());
//! # Ok(()) }
//! ```
//!
//! Moving from the local cache is a one-line change: code written against the
//! [`Cache`] trait takes a [`QueryCache`], a [`DistributedCache`] or an [`AnyCache`]
//! chosen at run time.
//!
//! # Read-through and memoization
//!
//! [`Cache::get_or_compute`] (and its `try_` and `_with` variants) reads through
//! any cache: concurrent misses of one key load once per process, or once per
//! cluster with [`ComputeOptions::lock`]; [`ComputeOptions::refresh_ahead`] refreshes
//! hot keys before they expire; a value loaded while its key was invalidated is
//! returned but never stored (fills hold a lease that invalidations revoke); loader
//! errors reach every waiter and are never cached; Redis failures fail open.
//!
//! The `#[cached]` attribute (feature `macros`, on by default) does the same for an
//! async function, the seed's `@cache.cached(ttl=..., key_prefix=..., key_builder=...)`:
//!
//! ```
//! use std::sync::LazyLock;
//! use std::time::Duration;
//! use ormcache::{QueryCache, cached};
//!
//! static CACHE: LazyLock<QueryCache> =
//!     LazyLock::new(|| QueryCache::new(1_000, Duration::from_secs(60)).unwrap());
//!
//! #[cached(cache = CACHE, ttl = 120, key_prefix = "users")]
//! async fn user_name(id: u64) -> String {
//!     format!("user #{id}") // the database query
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! assert_eq!(user_name(7).await, "user #7"); // computed
//! assert_eq!(user_name(7).await, "user #7"); // cached
//! assert!(user_name_invalidate(7).await.unwrap()); // generated companion
//! # });
//! ```
//!
//! Tags ([`Cache::set_with_tags`], [`Cache::invalidate_tag`]) drop a group of entries
//! in O(1), and [`DistributedConfig::namespace_versioning`] makes `clear()` O(1).
//!
//! # Tenants and signals
//!
//! Inside [`tenant::scope`] every key, tag, lease and clear belongs to that tenant
//! (`{prefix}:__oc:t:{tenant}:{key}`); no tenant reaches another's entries and
//! unscoped clears never touch them. [`signals::Signals`] carries the seed's
//! `post_save`/`post_delete` receivers: typed per model, run in order, awaited, and
//! never able to fail the database call.
//!
//! # Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `macros` | yes | the `#[cached]` attribute (crate `ormcache-macros`) |
//! | `axum` | no | `ormcache::axum`: the response-cache layer, the tenant middleware, `stats` and `health` handlers, the live `dashboard` page |
//! | `cluster` | no | Redis Cluster: `redis+cluster://` URLs, `DistributedConfig::cluster_nodes` |
//! | `tls` | no | `rediss://` (every form) with rustls on `ring`: system roots, a custom CA, client certificates (`TlsConfig`) |
//! | `sentinel` | no | `redis+sentinel://`: the master is discovered through Sentinels and followed across failovers |
//! | `sea-orm` | no | `ormcache::sea_orm`: signals from `ActiveModelBehavior` hooks, transactions that replay them after the commit, cached entity reads |
//! | `metrics` | no | counters, gauges and histograms named `ormcache_…` on the [`metrics`](https://docs.rs/metrics) facade (any recorder: Prometheus, StatsD, …); without it they compile to nothing |
//! | `fuzzing` | no | not an API: internals for the fuzz targets (crate `ormcache-fuzz`) in the hidden module `__fuzz` |
//!
//! # Metrics and tracing
//!
//! With the `metrics` feature every cache reports hits, misses, cached "not found"
//! hits, sets, deletes and errors by kind per level (`l1`, `l2`), Redis round-trip
//! latency by operation, breaker state and transitions, L1 size and evictions by
//! cause, loader runs and lock waits, and the coherence figures of a
//! [`HybridCache`] (invalidations sent, received and their lag, peers, gaps,
//! flushes). Labels are the level, the key prefix (`cache`) and a few fixed names,
//! never a key. A cache registers its metrics when it is built (an L1 at its first
//! use), so install the recorder before building caches. The README's "Metrics and
//! tracing" has the table of names.
//!
//! Tracing: each Redis round trip runs in a `debug` span `ormcache.redis` (fields
//! `op`, `prefix`, `outcome`, `elapsed_us`; never a key, a value or a password),
//! each loader run in `ormcache.load` and each wait for another process's lock in
//! `ormcache.lock_wait`. Breaker transitions, the invalidation stream going down and
//! coming back, lost messages and flushes are events at `info`/`warn`; those that
//! can repeat per request (undecodable entries, writes queued during an outage) are
//! logged once per 10 s with their count.
//!
//! ```
//! // With `metrics` on, install any recorder first (here: none, so nothing records).
//! let cache = ormcache::QueryCache::default();
//! cache.set_sync("k", 1u8, None).unwrap();
//! assert_eq!(cache.get_sync::<u8>("k").as_deref(), Some(&1)); // ormcache_hits_total{level="l1"} + 1
//! ```
//!
//! # Wire format and compatibility
//!
//! Entries live at `{key_prefix}:{key}`. With the default [`Codec::Json`] the value is
//! plain UTF-8 JSON, exactly what the Python package's JSON serializer writes, so both
//! can share one Redis. [`Codec::MessagePack`] and [`Compression::Lz4`] add a one-byte
//! header that no JSON text starts with; readers detect the codec from it. Counters are
//! flushed into the hash `{key_prefix}:stats` with the Python package's field names.
//!
//! # Consistency
//!
//! The database is the truth; the cache's job is never to answer with data older than
//! the last acknowledged write beyond a stated bound. For each path:
//!
//! - **`DistributedCache`**: one copy, in Redis. A read after an acknowledged write
//!   returns it (or a miss). No staleness beyond Redis's own.
//! - **`QueryCache`** alone: process-local; only this process writes it.
//! - **`HybridCache`, normal operation.** Every write, delete, expire, clear,
//!   pattern clear, `set_many`, `delete_many`, `set_with_tags` and `invalidate_tag`
//!   is sent to Redis *with* its invalidation message in the same round trip. Each
//!   instance that gets the message evicts its L1 copies, then acknowledges it on
//!   `{prefix}:__oc:inv:ack:{writer}`, and the call returns only once every
//!   instance it waits for has acknowledged (confirmed invalidation,
//!   [`HybridBuilder::confirm_invalidations`], on by default). So: **once a write
//!   has returned `Ok`, the next read through any live instance is fresh**, not
//!   merely "within milliseconds". A process reads its own writes at once. Who gets
//!   the message and who is waited for is the [`Protocol`]'s choice:
//!   - [`Protocol::Fleet`] (the default, on a single server, Sentinel and Cluster):
//!     a write of keys goes to the instances
//!     that hold them. An instance adds itself to a key's holder registry in Redis
//!     (`{prefix}:__oc:h:{key}`) *before* it reads the key, in the same round trip;
//!     the writer's script runs *after* its write, reads and empties the registry
//!     and publishes the message to each holder's inbox
//!     (`{prefix}:__oc:inv:to:{id}`). A reader whose read could return the old
//!     value registered before the write, so it is messaged; one that registers
//!     after it reads the new value. The writer waits for the holders `PUBLISH`
//!     reached (subscribed at that moment), and drops its own copy (it reads its
//!     writes from L2; its next read fills L1 again). Clears, pattern clears and tag
//!     invalidations go to every instance on `{prefix}:__oc:inv` and wait for as
//!     many acknowledgements as there were other subscribers.
//!   - [`Protocol::Broadcast`]: every message goes to every instance on
//!     `{prefix}:__oc:inv`, and the writer waits for every *live* peer.
//! - **What confirmation does not cover.** Under the broadcast protocol, live means
//!   heard (a message, heartbeat or acknowledgement) within three heartbeat
//!   intervals plus the command timeout (default 1.75 s; instances sharing a prefix
//!   should share the heartbeat interval), and an acknowledgement covers a message
//!   only when nothing before it from that writer is missing. (1) Broadcast: an
//!   instance whose stream came up so recently that its announcement had not
//!   reached the writer yet: it announces itself before its L1 takes any fill, so
//!   its possible staleness is bounded by the pub/sub delivery time. (Fleet has no
//!   such window: registration is part of the read.) (2) A peer that let a
//!   confirmation time out (default 1 s; counted in `coherence.unconfirmed` and
//!   logged): until it acknowledges again (or either one's stream restarts), writes
//!   do not wait for it, and its copies are stale for the delivery time plus however
//!   long it stays stuck (at most `l1_max_ttl`; a peer that hears nothing of its own
//!   heartbeats for three intervals notices its dead stream and flushes). (3) A
//!   writer whose own stream is down does not wait (it cannot hear the
//!   acknowledgements): the bound is the delivery time. (4) With confirmation off,
//!   the bound is the delivery time (milliseconds on a LAN; over 100 ms was seen on a
//!   saturated machine). (5) Fleet: a holder registry evicted by Redis
//!   (`maxmemory`) while its holders keep their copies; Redis tracking (below) then
//!   evicts them within the delivery time, unconfirmed. On a cluster, a holder
//!   whose inbox's shard cannot be reached is not waited for (logged); that shard's
//!   failure ends its subscription, which flushes it. A write that returns an error
//!   is not confirmed; see "Writes during an outage". An instance alone on its
//!   channel never waits.
//! - **Writes by other Redis clients** (another service, `redis-cli`, a script,
//!   Redis's own eviction and expiry): under the fleet protocol every L2 connection
//!   runs `CLIENT TRACKING ON REDIRECT <subscriber>` (opt-in on a single server:
//!   each read that feeds L1 is announced), so Redis reports each change of a key
//!   that instance read, on its subscriber connection, and the copy is dropped: the
//!   bound is the delivery time (`foreign_write` bench). A nil report (`FLUSHDB`,
//!   `FLUSHALL`) flushes L1. Not `NOLOOP`: with it Redis also keeps quiet about an
//!   eviction that the instance's own command set off. Tracking is lost with a
//!   connection: a replaced subscriber connection is a resubscription (L1 flushed);
//!   a replaced L2 connection is found by the first announced read on it (refused:
//!   tracking is off there) or its new `CLIENT ID` at the next heartbeat, which
//!   turns tracking on again and flushes L1. On a cluster, where reads are not
//!   announced, only the heartbeat finds it: for one heartbeat interval at most,
//!   such writes reach copies read over the old connection only through
//!   `l1_max_ttl`. Without permission for `CLIENT TRACKING` (a warning is logged),
//!   and always under the broadcast protocol, the bound for such writes is
//!   `l1_max_ttl`.
//! - **Fill races.** An L1 fill from L2 takes a ticket of the invalidation epochs
//!   (per key, global, the tag-and-scope clock, pattern clears) before reading Redis
//!   and stores its value only if no invalidation since then touches it, under the
//!   key's lock that invalidations also take; an invalidation that arrives while a
//!   fill is in flight always wins. An L1 hit checks only the generations of its own
//!   scope and tags (atomics, no shared lock): however many other tags are
//!   invalidated, an untouched entry stays a hit.
//! - **Lost messages.** Redis pub/sub is at-most-once, and loses messages only with
//!   the connection. Under the broadcast protocol messages carry a per-sender
//!   sequence number; a hole not filled within two heartbeat intervals (default
//!   500 ms) is a lost message and the L1 is flushed (under the fleet protocol each
//!   instance gets only some of a sender's messages, so there are no holes to
//!   see). An instance that stops receiving its own heartbeats (every 500 ms)
//!   treats its subscription as dead; so does one whose subscriber connection
//!   reports a disconnection or, on a cluster, a sharded subscription dropped by a
//!   slot move. A change of Redis `run_id` or `master_replid` (restart, failover)
//!   triggers the same recovery as a disconnect. As a last line, L1 copies live at
//!   most `l1_max_ttl` (default 30 s) and never longer than the L2 entry.
//! - **Stream down** (disconnect, `CLIENT KILL`, Redis restart): L1 is not trusted.
//!   Reads go to L2; while the stream is down, fills are not stored. When the stream
//!   returns, the instance replays its backlog, flushes its L1, and only then trusts
//!   L1 again. No staleness while Redis itself answers.
//! - **Redis unreachable by this instance**: reads fall back to L1 entries younger
//!   than `degraded_max_age` (default 2 s), else miss. If another instance can still
//!   write to Redis meanwhile (a partial outage, or the moments after Redis returns
//!   while this instance's breaker is still open), its write can be hidden from this
//!   instance for at most `degraded_max_age`. That is the bound; set it to zero for
//!   none (L1 never answers while Redis is unreachable).
//! - **Writes during an outage** return an error (the shared cache did not take
//!   them) and evict the local copy. Their keys, and any delete, expire, clear or
//!   pattern clear that failed, join a bounded backlog (default 10,000 entries; past
//!   that it becomes "clear the prefix"). A write whose reply timed out may still be
//!   executed by Redis later, so its key joins the backlog too. The backlog is
//!   replayed (with invalidation messages) before this instance reads L2 again; until
//!   then its reads miss.
//! - **Cancelled calls** (a future dropped at any `.await`: a caller's `timeout` or
//!   `select!`, a client that went away). A write, delete, expire, clear, pattern
//!   clear, batch call or tag invalidation that may have reached Redis is treated as
//!   done: this process evicts what it named at once (so it still reads its own
//!   writes: from L2, which holds the old or the new value), and a task of the
//!   cache publishes the call's invalidation message (a message never sent would
//!   be a hole in the sequence, which flushes every peer) and evicts again once it
//!   is out, in case the request landed after the first eviction. Peers therefore
//!   drop their copies within the delivery time of that message; if Redis cannot
//!   take it, the invalidation joins the backlog. A cancelled call is not
//!   confirmed. A cancelled `get_or_compute` gives its lease (the cluster-wide lock
//!   with `lock(true)`) back at once, from a task of the cache, so that other
//!   processes do not wait out `lock_wait`; the task stops with the cache's
//!   `close`. Each public async fn says in its docs how it behaves when cancelled.
//!
//! # Failure behaviour
//!
//! Every Redis call has a timeout (250 ms by default; connecting 1 s). After 5
//! consecutive connection errors or timeouts a circuit breaker opens and calls fail at
//! once with [`ErrorKind::CircuitOpen`] until a probe, 1 s later, succeeds (a probe
//! whose call is dropped gives its slot back: the next call probes). A refused
//! connection is known at once: later calls fail in microseconds with
//! [`ErrorKind::Connection`] while one background task reconnects, so only a silent
//! Redis costs the timeout, and only until the breaker opens. Errors are
//! one [`Error`] type with an [`ErrorKind`]; messages name the operation and the key,
//! never the value or a password. See the table on [`Cache`] for which calls return
//! which errors; [`HybridCache`] reads never fail on Redis.
//!
//! # Layout
//!
//! | module | holds |
//! | --- | --- |
//! | `cache` | the [`Cache`] trait, [`CacheValue`], [`Ttl`] |
//! | `local` | [`QueryCache`], the L1 on its own map (`local/map`: sharded, CLOCK eviction): `local/future` its async API, `local/builder`, `local/stats` its counters, `local/epochs` what tag invalidations, clears and writes void (per-tag and per-scope generations) |
//! | `distributed`, `config` | [`DistributedCache`], its [`DistributedBuilder`] (`distributed/builder`) and [`DistributedConfig`] |
//! | `config/url`, `config/redact`, `config/tls` | [`RedisUrl`], the one parser of Redis URLs; hiding secrets in any text that may be a URL; `TlsConfig` |
//! | `distributed/transport`, `distributed/sentinel` | how a URL becomes redis-rs clients (addresses, credentials, TLS); the Sentinel connection that follows failovers |
//! | `hybrid` | [`HybridCache`]: read and write paths; `hybrid/builder` settings and start-up, `hybrid/inner` applying messages, `hybrid/fill` fills, `hybrid/stats` its stats shapes, `hybrid/tasks` the subscriber, heartbeats and recovery, `hybrid/ack` confirmed invalidation, `hybrid/pending` what a cancelled write leaves to do |
//! | `coherence` | invalidation messages, acknowledgements, sequence tracking, peers, the backlog |
//! | `breaker` | the circuit breaker ([`BreakerConfig`]); `distributed/health` failing fast while Redis is unreachable |
//! | `memo` | `get_or_compute`: single flight, leases (held by a guard), early refresh, [`ComputeOptions`] |
//! | `tasks` | a cache's background tasks and the clean-up work of cancelled calls, stopped by `close` |
//! | `distributed/fill` | Redis leases, the lock, tags, namespace versioning |
//! | `distributed/conn`, `distributed/cluster`, `distributed/keyspace` | one connection for a server or a cluster (pipelines split per slot); slot tags and primaries; clears and key counts on every primary |
//! | `distributed/coherent` | what [`HybridCache`] needs of Redis: writes with their invalidation message, publishing, server identity |
//! | `private` | what `#[cached]` expands to |
//! | `tenant` | the task-scoped current tenant that isolates keys ([`tenant::scope`]) |
//! | `signals` | typed per-model `pre/post_save`/`pre/post_delete` receivers ([`signals::Signals`]) |
//! | `axum` | the response-cache layer, `TenantLayer`, `stats`/`health` handlers, `axum/dashboard` the live page (its HTML, CSS and script compiled in) and its JSON snapshot (feature `axum`) |
//! | `telemetry`, `distributed/observe`, `hybrid/observe` | what the dashboard reads beside the stats: Redis round-trip and invalidation-lag histograms, the ring of recent gaps, flushes and stream changes (always kept, atomics only), and the views of them |
//! | `sea_orm` | `signal_hooks!`, `transaction`, `EntityCache`, `tenant_filter` (feature `sea-orm`) |
//! | `any` | [`AnyCache`], the run-time choice |
//! | `codec` | [`Codec`], [`Compression`], [`Encoding`]: bytes on the wire |
//! | `glob` | Redis glob matching and [`escape_glob`] |
//! | `key` | key layout, reserved names, TTL rules |
//! | `stats` | counters and the stats shapes |
//! | `observe` | metric names and the handles each cache holds (feature `metrics`; no-ops without it) |
//! | `error` | [`Error`], [`ErrorKind`] |
//! | [`inspect`], `distributed/inspect` | reading entries, the stats hash and the invalidation channel from the outside (the operator CLI's base) |
//! | `fuzz` | what the fuzz targets reach (feature `fuzzing`, hidden) |
#![cfg_attr(not(test), forbid(clippy::panic))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod any;
mod breaker;
mod cache;
mod codec;
mod coherence;
mod config;
mod distributed;
mod error;
mod glob;
mod hybrid;
pub mod inspect;
mod key;
mod local;
mod memo;
mod observe;
#[doc(hidden)]
pub mod __private {
    //! Used by `#[cached]`'s expansion; not a public API.
    pub use crate::private::*;
}
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    //! Used by the `ormcache-fuzz` targets (feature `fuzzing`); not a public API.
    pub use crate::fuzz::*;
}
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod private;
#[cfg(feature = "sea-orm")]
pub mod sea_orm;
pub mod signals;
mod stats;
mod tasks;
mod telemetry;
pub mod tenant;

pub use any::{AnyCache, AnyStats};
pub use breaker::{BreakerConfig, BreakerState};
pub use cache::{Cache, CacheValue, Ttl};
pub use codec::{Codec, Compression, DEFAULT_MAX_VALUE_BYTES, Encoding};
#[cfg(feature = "tls")]
pub use config::TlsConfig;
pub use config::{DistributedConfig, RedisUrl, Topology};
pub use distributed::{DistributedBuilder, DistributedCache};
pub use error::{Error, ErrorKind, Result};
pub use glob::escape_glob;
pub use hybrid::{CoherenceStats, HybridBuilder, HybridCache, HybridStats, Protocol};
pub use key::MAX_TTL;
pub use local::{QueryCache, QueryCacheBuilder};
pub use memo::{ComputeError, ComputeOptions};
#[cfg(feature = "macros")]
pub use ormcache_macros::cached;
pub use stats::{DistributedStats, LocalStats, ProcessCounters};

#[cfg(all(
    doctest,
    feature = "axum",
    feature = "sea-orm",
    feature = "cluster",
    feature = "tls"
))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
