//! A two-level cache for async Rust services: an in-process L1 ([`QueryCache`]), a
//! Redis L2 shared by every process ([`DistributedCache`]), behind one [`Cache`]
//! trait.
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
//! # Wire format and compatibility
//!
//! Entries live at `{key_prefix}:{key}`. With the default [`Codec::Json`] the value is
//! plain UTF-8 JSON, exactly what the Python package's JSON serializer writes, so both
//! can share one Redis. [`Codec::MessagePack`] and [`Compression::Lz4`] add a one-byte
//! header that no JSON text starts with; readers detect the codec from it. Counters are
//! flushed into the hash `{key_prefix}:stats` with the Python package's field names.
//!
//! # Failure behaviour
//!
//! Every Redis call has a timeout (250 ms by default; connecting 1 s). Errors are one
//! [`Error`] type with an [`ErrorKind`]; messages name the operation and the key, never
//! the value or a password. See the table on [`Cache`] for which calls return which
//! errors.
//!
//! # Layout
//!
//! | module | holds |
//! | --- | --- |
//! | `cache` | the [`Cache`] trait, [`CacheValue`], [`Ttl`] |
//! | `local` | [`QueryCache`], the L1 on moka |
//! | `distributed`, `config` | [`DistributedCache`] and its [`DistributedConfig`] |
//! | `any` | [`AnyCache`], the run-time choice |
//! | `codec` | [`Codec`], [`Compression`], [`Encoding`]: bytes on the wire |
//! | `glob` | Redis glob matching and [`escape_glob`] |
//! | `key` | key layout, reserved names, TTL rules |
//! | `stats` | counters and the stats shapes |
//! | `error` | [`Error`], [`ErrorKind`] |
#![cfg_attr(not(test), forbid(clippy::panic))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod any;
mod cache;
mod codec;
mod config;
mod distributed;
mod error;
mod glob;
mod key;
mod local;
mod stats;

pub use any::{AnyCache, AnyStats};
pub use cache::{Cache, CacheValue, Ttl};
pub use codec::{Codec, Compression, DEFAULT_MAX_VALUE_BYTES, Encoding};
pub use config::DistributedConfig;
pub use distributed::DistributedCache;
pub use error::{Error, ErrorKind, Result};
pub use glob::{GlobPattern, escape_glob, glob_match};
pub use key::{MAX_TTL, RESERVED_NAMESPACE};
pub use local::{QueryCache, QueryCacheBuilder};
pub use stats::{DistributedStats, LocalStats, ProcessCounters};

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
