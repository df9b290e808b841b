//! [`DistributedConfig`]: every option of the seed's `DistributedCache.create(...)`.

use std::fmt;
use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::codec::{Codec, Compression, DEFAULT_MAX_VALUE_BYTES, Encoding};
use crate::distributed::DistributedCache;
use crate::error::Result;

/// Configuration of a [`DistributedCache`]; also its builder
/// ([`DistributedCache::builder`] returns one, [`build`](DistributedConfig::build)
/// connects).
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | `redis_url` | `redis://127.0.0.1:6379` | `redis://[user:password@]host:port[/db]`, `redis+unix:///path.sock`, `unix:///path.sock` |
/// | `cluster_nodes` | none | seed nodes of a Redis Cluster (feature `cluster`); replaces `redis_url` |
/// | `default_ttl` | 300 s | TTL of writes that give none |
/// | `key_prefix` | `ormcache` | entries live at `{key_prefix}:{key}` |
/// | `serializer` | [`Codec::Json`] | codec for writes (reads detect the codec) |
/// | `compression` | none | LZ4 above a size threshold |
/// | `max_connections` | 1 | multiplexed connections, used round-robin (see below) |
/// | `socket_timeout` / `command_timeout` | 250 ms | bound on every Redis call (a batch gets 50 µs more per command or key past the first 8) |
/// | `socket_connect_timeout` | 1 s | bound on connecting |
/// | `socket_keepalive` | on | TCP keepalive probes on idle connections |
/// | `health_check_interval` | off | a background `PING` this often, so a dead connection is found and replaced before a request meets it |
/// | `max_value_bytes` | 8 MiB | larger values are refused on write and read |
/// | `return_decode_errors` | off | `get` returns [`Decode`](crate::ErrorKind::Decode) errors instead of counting a miss |
/// | `stats_flush_interval` | 1 s | how often counters are added to `{key_prefix}:stats` |
/// | `connect_lazily` | off | `create` does not wait for Redis; calls fail until it answers |
/// | `namespace_versioning` | off | O(1) `clear()` through a namespace token (entries are enveloped) |
/// | `circuit_breaker` | 5 failures, 1 s | after that many consecutive connection errors or timeouts, calls fail fast with [`CircuitOpen`](crate::ErrorKind::CircuitOpen) until a probe succeeds |
///
/// **`max_connections`.** redis-rs connections are multiplexed: one connection carries
/// any number of concurrent requests, pipelined. A pool of 50 sockets, as the seed
/// suggests for redis-py, is not needed; one connection saturates a Redis core. Values
/// above 1 open that many multiplexed connections and spread calls over them, which
/// can help when a single connection's socket becomes the bottleneck.
///
/// **`decode_responses`** (seed) has no equivalent: values are bytes that the codec
/// decodes into your type.
///
/// The URL's password never appears in `Debug` output, errors or logs.
///
/// ```no_run
/// use std::time::Duration;
/// use ormcache::{Codec, DistributedCache, DistributedConfig};
///
/// # async fn demo() -> ormcache::Result<()> {
/// let cache = DistributedCache::create(
///     DistributedConfig::new()
///         .redis_url("redis://localhost:6379/0")
///         .default_ttl(Duration::from_secs(300))
///         .key_prefix("myapp")
///         .serializer(Codec::Json)
///         .max_connections(2)
///         .socket_timeout(Duration::from_millis(250))
///         .socket_connect_timeout(Duration::from_secs(1))
///         .socket_keepalive(true)
///         .health_check_interval(Duration::from_secs(30)),
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct DistributedConfig {
    pub(crate) redis_url: String,
    /// Seed nodes of a Redis Cluster; empty: a single server at `redis_url`.
    pub(crate) cluster_nodes: Vec<String>,
    pub(crate) default_ttl: Duration,
    pub(crate) key_prefix: String,
    pub(crate) codec: Codec,
    pub(crate) compression: Compression,
    pub(crate) max_connections: usize,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: bool,
    pub(crate) health_check_interval: Option<Duration>,
    pub(crate) max_value_bytes: usize,
    pub(crate) return_decode_errors: bool,
    pub(crate) stats_flush_interval: Duration,
    pub(crate) connect_lazily: bool,
    pub(crate) breaker: BreakerConfig,
    pub(crate) namespaced: bool,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            default_ttl: Duration::from_secs(300),
            key_prefix: "ormcache".into(),
            codec: Codec::Json,
            compression: Compression::None,
            max_connections: 1,
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            keepalive: true,
            health_check_interval: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            return_decode_errors: false,
            stats_flush_interval: Duration::from_secs(1),
            connect_lazily: false,
            breaker: BreakerConfig::default(),
            namespaced: false,
        }
    }
}

impl fmt::Debug for DistributedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("default_ttl", &self.default_ttl)
            .field("key_prefix", &self.key_prefix)
            .field("codec", &self.codec)
            .field("compression", &self.compression)
            .field("max_connections", &self.max_connections)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("health_check_interval", &self.health_check_interval)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("return_decode_errors", &self.return_decode_errors)
            .field("stats_flush_interval", &self.stats_flush_interval)
            .field("connect_lazily", &self.connect_lazily)
            .field("breaker", &self.breaker)
            .field("namespace_versioning", &self.namespaced)
            .finish()
    }
}

impl DistributedConfig {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// The Redis to use.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = url.into();
        self
    }

    /// Use a Redis Cluster instead of a single server: `nodes` are seed URLs
    /// (`redis://[user:password@]host:port`, one or more; the rest of the cluster is
    /// discovered from them). The password and ACL user come from the URLs (all
    /// seeds must carry the same); timeouts, the circuit breaker, `connect_lazily`
    /// and `max_connections` apply as for a single server. An empty list means a
    /// single server at [`redis_url`](Self::redis_url).
    ///
    /// Every operation works on a cluster; the differences (batch round trips, the
    /// layout of internal keys, what `key_prefix` may contain) are described in
    /// [`DistributedCache`]'s section *Redis Cluster*.
    ///
    /// ```no_run
    /// use ormcache::DistributedConfig;
    ///
    /// # async fn demo() -> ormcache::Result<()> {
    /// let cache = DistributedConfig::new()
    ///     .cluster_nodes(["redis://:secret@10.0.0.1:7000", "redis://:secret@10.0.0.2:7000"])
    ///     .key_prefix("myapp")
    ///     .build()
    ///     .await?;
    /// # let _ = cache; Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster_nodes<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// TTL of writes that give none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The namespace: entries live at `{key_prefix}:{key}`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The codec for writes (the seed's `serializer`).
    pub fn serializer(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Compression of large values.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Number of multiplexed connections (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// The bound on every Redis call (the seed's name; same as
    /// [`command_timeout`](Self::command_timeout)).
    pub fn socket_timeout(self, timeout: Duration) -> Self {
        self.command_timeout(timeout)
    }

    /// The bound on every Redis call.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The bound on connecting.
    pub fn socket_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// TCP keepalive on the connections.
    pub fn socket_keepalive(mut self, on: bool) -> Self {
        self.keepalive = on;
        self
    }

    /// A background `PING` this often.
    pub fn health_check_interval(mut self, every: Duration) -> Self {
        self.health_check_interval = Some(every);
        self
    }

    /// Largest stored value, refused on write and on read.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Return decode errors from `get` instead of counting a miss.
    pub fn return_decode_errors(mut self, on: bool) -> Self {
        self.return_decode_errors = on;
        self
    }

    /// How often counters are flushed into `{key_prefix}:stats`.
    pub fn stats_flush_interval(mut self, every: Duration) -> Self {
        self.stats_flush_interval = every;
        self
    }

    /// Do not wait for Redis in `create`: the cache is returned at once and calls
    /// fail with connection errors until Redis answers.
    pub fn connect_lazily(mut self, on: bool) -> Self {
        self.connect_lazily = on;
        self
    }

    /// The circuit breaker (default: open after 5 consecutive connection errors or
    /// timeouts, probe after 1 s).
    pub fn circuit_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Namespace versioning: every entry carries the namespace's random token and
    /// `clear()` replaces the token — O(1) whatever the keyspace; the orphaned
    /// entries are misses at once and are removed by a background `SCAN`. Costs one
    /// more round trip per write (the token is read) and per read of an entry.
    /// Entries are then stored in an envelope the Python package cannot read.
    pub fn namespace_versioning(mut self, on: bool) -> Self {
        self.namespaced = on;
        self
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The URL with any password replaced by `***` (for a cluster, the seed URLs,
    /// comma-separated).
    pub fn redacted_url(&self) -> String {
        if self.cluster_nodes.is_empty() {
            redact_url(&self.redis_url)
        } else {
            self.cluster_nodes
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        Encoding::new(self.codec)
            .compression(self.compression)
            .max_value_bytes(self.max_value_bytes)
    }

    /// Connects; same as [`DistributedCache::create`].
    ///
    /// # Errors
    /// As [`DistributedCache::create`].
    pub async fn build(self) -> Result<DistributedCache> {
        DistributedCache::create(self).await
    }
}

/// Replaces the password of `scheme://user:password@host` (or `scheme://:password@`)
/// with `***`. Anything that does not look like a URL is returned with everything
/// after `://` up to `@` hidden, to be safe.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let shown_user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        shown_user,
        &rest[at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(
            redact_url("rediss://bob:p@ss:w0rd@h:1"),
            "rediss://bob:***@h:1"
        );
        assert_eq!(redact_url("redis://alice@h"), "redis://alice@h");
        let dbg = format!(
            "{:?}",
            DistributedConfig::new().redis_url("redis://u:hunter2@h:1")
        );
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
