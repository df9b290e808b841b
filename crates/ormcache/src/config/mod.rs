//! [`DistributedConfig`]: every option of the seed's `DistributedCache.create(...)`;
//! [`RedisUrl`], the one URL parser (`url.rs`); TLS settings (`tls.rs`).
//!
//! This module describes a connection; it does not make one (that is
//! `distributed::conn`).

use std::fmt;
use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::codec::{Codec, Compression, DEFAULT_MAX_VALUE_BYTES, Encoding};
use crate::error::{Error, Result};

mod redact;
#[cfg(feature = "tls")]
mod tls;
mod url;
pub(crate) use redact::redact_url;
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub(crate) use url::Host;
pub use url::{RedisUrl, Topology};

/// Configuration of a [`DistributedCache`](crate::DistributedCache), passed to
/// [`DistributedCache::create`](crate::DistributedCache::create).
/// [`DistributedCache::builder`](crate::DistributedCache::builder) has the same
/// setters and connects with `build()`.
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | `redis_url` | `redis://127.0.0.1:6379` | any [`RedisUrl`] form: one server (`redis://`, `rediss://`, `redis+unix://`), a cluster (`redis+cluster://`), Sentinel (`redis+sentinel://`) |
/// | `cluster_nodes` | none | seed nodes of a Redis Cluster (feature `cluster`); the same as a `redis+cluster://` URL |
/// | `tls` | system roots | CA and client certificate for `rediss…://` (feature `tls`) |
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
/// | `coalesce_gets` | off | concurrent `get`s share `MGET`s (see below) |
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
/// **`coalesce_gets`.** With it on, a `get` that finds another read already
/// waiting on Redis does not send its own `GET`: it queues, and when that read
/// comes back, everything queued goes out as one `MGET`. A lone read still sends
/// its `GET` at once; under concurrency Redis runs one command for many keys and
/// the client parses one reply, which raises throughput (see `BENCHMARKS.md`,
/// `l2_get_coalesced`). The price: a queued read waits for the read ahead of it
/// (at most one round trip) before its own goes out. Each read still decodes in
/// its caller's task, and each gets the batch's error if the batch fails. One
/// difference: a key that holds a list or a hash reads as a miss in a batch (`MGET`
/// answers nil for it), where a lone `GET` counts an undecodable entry.
///
/// **`decode_responses`** (seed) has no equivalent: values are bytes that the codec
/// decodes into your type.
///
/// The URL's query options (`?timeout=250ms&connect_timeout=1s`) set the same
/// options as the setters; whichever is called last wins.
///
/// The URL's passwords never appear in `Debug` output, errors or logs, whatever
/// form the URL takes, even when it is malformed.
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
    url: UrlSetting,
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsConfig,
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
    pub(crate) coalesce_gets: bool,
    pub(crate) stats_flush_interval: Duration,
    pub(crate) connect_lazily: bool,
    pub(crate) breaker: BreakerConfig,
    pub(crate) namespaced: bool,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            url: UrlSetting::parse("redis://127.0.0.1:6379"),
            #[cfg(feature = "tls")]
            tls: TlsConfig::default(),
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
            coalesce_gets: false,
            stats_flush_interval: Duration::from_secs(1),
            connect_lazily: false,
            breaker: BreakerConfig::default(),
            namespaced: false,
        }
    }
}

impl fmt::Debug for DistributedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("DistributedConfig");
        s.field("redis_url", &self.redacted_url());
        #[cfg(feature = "tls")]
        s.field("tls", &self.tls);
        s.field("default_ttl", &self.default_ttl)
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
            .field("coalesce_gets", &self.coalesce_gets)
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

    /// The Redis to use: any form of [`RedisUrl`]. Its query options (`timeout`,
    /// `connect_timeout`) set [`command_timeout`](Self::command_timeout) and
    /// [`socket_connect_timeout`](Self::socket_connect_timeout). A malformed URL
    /// makes `create` fail with [`InvalidInput`](crate::ErrorKind::InvalidInput),
    /// quoting the URL with its password redacted.
    ///
    /// ```
    /// use ormcache::DistributedConfig;
    ///
    /// let config = DistributedConfig::new()
    ///     .redis_url("redis+cluster://app:secret@10.0.0.1:7000,10.0.0.2:7000?timeout=100ms");
    /// assert_eq!(
    ///     config.redacted_url(),
    ///     "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7000?timeout=100ms"
    /// );
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    pub fn redis_url(mut self, url: impl AsRef<str>) -> Self {
        self.url = UrlSetting::parse(url.as_ref());
        if let UrlSetting::Parsed(u) = &self.url {
            if let Some(t) = u.command_timeout() {
                self.command_timeout = t;
            }
            if let Some(t) = u.connect_timeout() {
                self.connect_timeout = t;
            }
        }
        self
    }

    /// TLS settings for `rediss://`, `rediss+cluster://` and `rediss+sentinel://`
    /// URLs: a CA to trust beside the system roots, a client certificate.
    ///
    /// ```no_run
    /// use ormcache::{DistributedConfig, TlsConfig};
    ///
    /// # fn demo() -> ormcache::Result<()> {
    /// let config = DistributedConfig::new()
    ///     .redis_url("rediss://cache.internal:6380")
    ///     .tls(TlsConfig::new().ca_file("/etc/redis/ca.pem").client_cert_files("/etc/redis/client.pem", "/etc/redis/client.key"));
    /// # let _ = config; Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Use a Redis Cluster instead of a single server: `nodes` are seed URLs
    /// (`redis://[user:password@]host:port`, one or more; the rest of the cluster is
    /// discovered from them). The same as one `redis+cluster://host1,host2` URL:
    /// the password, ACL user and TLS come from the first seed. An empty list
    /// changes nothing.
    ///
    /// Every operation works on a cluster; the differences (batch round trips, the
    /// layout of internal keys, what `key_prefix` may contain) are described in
    /// [`DistributedCache`](crate::DistributedCache)'s section *Redis Cluster*.
    ///
    /// ```no_run
    /// use ormcache::DistributedConfig;
    ///
    /// # async fn demo() -> ormcache::Result<()> {
    /// let cache = ormcache::DistributedCache::builder()
    ///     .cluster_nodes(["redis://:secret@10.0.0.1:7000", "redis://:secret@10.0.0.2:7000"])
    ///     .key_prefix("myapp")
    ///     .build()
    ///     .await?;
    /// # let _ = cache; Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster_nodes<S: AsRef<str>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        let seeds: Vec<UrlSetting> = nodes
            .into_iter()
            .map(|n| UrlSetting::parse(n.as_ref()))
            .collect();
        if seeds.is_empty() {
            return self;
        }
        let mut parsed = Vec::with_capacity(seeds.len());
        for seed in seeds {
            match seed {
                UrlSetting::Parsed(u) => parsed.push(u),
                invalid @ UrlSetting::Invalid { .. } => {
                    self.url = invalid;
                    return self;
                }
            }
        }
        self.url = match RedisUrl::cluster_of(&parsed) {
            Ok(u) => UrlSetting::Parsed(u),
            Err(error) => UrlSetting::Invalid {
                shown: parsed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                error,
            },
        };
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

    /// Concurrent `get`s share `MGET`s (see the type's documentation).
    ///
    /// ```no_run
    /// use ormcache::DistributedCache;
    ///
    /// # async fn demo() -> ormcache::Result<()> {
    /// let cache = DistributedCache::builder().coalesce_gets(true).build().await?;
    /// let reads = (0..64).map(|i| {
    ///     let cache = cache.clone();
    ///     tokio::spawn(async move { cache.get::<String>(&format!("user:{i}")).await })
    /// });
    /// for read in reads {
    ///     let _user = read.await.expect("no panic")?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn coalesce_gets(mut self, on: bool) -> Self {
        self.coalesce_gets = on;
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

    /// The URL with every password replaced by `***` (a malformed URL too).
    ///
    /// ```
    /// let config = ormcache::DistributedConfig::new().redis_url("redis+unix:///run/redis.sock?pass=pw");
    /// assert_eq!(config.redacted_url(), "redis+unix:///run/redis.sock?pass=***");
    /// ```
    pub fn redacted_url(&self) -> String {
        match &self.url {
            UrlSetting::Parsed(u) => u.to_string(),
            UrlSetting::Invalid { shown, .. } => shown.clone(),
        }
    }

    /// The parsed URL, or the error that parsing it gave.
    pub(crate) fn url(&self) -> Result<&RedisUrl> {
        match &self.url {
            UrlSetting::Parsed(u) => Ok(u),
            UrlSetting::Invalid { error, .. } => Err(Error::clone(error)),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        Encoding::new(self.codec)
            .compression(self.compression)
            .max_value_bytes(self.max_value_bytes)
    }
}

/// The URL as given: parsed, or the parse error with the URL redacted.
#[derive(Clone)]
enum UrlSetting {
    Parsed(RedisUrl),
    Invalid { shown: String, error: Error },
}

impl UrlSetting {
    fn parse(url: &str) -> Self {
        match RedisUrl::parse(url) {
            Ok(u) => Self::Parsed(u),
            Err(error) => Self::Invalid {
                shown: redact_url(url.trim()),
                error,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        for url in [
            "redis://u:hunter2@h:1",
            "redis+unix:///run/redis.sock?pass=hunter2",
            ":hunter2@host:6379",
            "user:hunter2@host:6379",
            "redis://u:hunter2@h:notaport",
        ] {
            let config = DistributedConfig::new().redis_url(url);
            let dbg = format!("{config:?}");
            assert!(!dbg.contains("hunter2"), "{dbg}");
            assert!(dbg.contains("***"), "{dbg}");
            assert!(!config.redacted_url().contains("hunter2"));
        }
    }

    #[test]
    fn url_options_set_timeouts_and_later_setters_win() {
        let c = DistributedConfig::new().redis_url("redis://h?timeout=50ms&connect_timeout=2s");
        assert_eq!(c.command_timeout, Duration::from_millis(50));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        let c = c.command_timeout(Duration::from_millis(70));
        assert_eq!(c.command_timeout, Duration::from_millis(70));
    }
}
