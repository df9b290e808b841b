//! [`DistributedBuilder`]: what [`DistributedCache::builder`] returns.

use std::time::Duration;

use super::DistributedCache;
use crate::breaker::BreakerConfig;
use crate::codec::{Codec, Compression};
use crate::config::DistributedConfig;
use crate::error::Result;

/// Builds a [`DistributedCache`]: the setters of [`DistributedConfig`] (each
/// documented there, with the table of defaults), then [`build`](Self::build)
/// connects.
///
/// ```no_run
/// use std::time::Duration;
/// use ormcache::DistributedCache;
///
/// # async fn demo() -> ormcache::Result<()> {
/// let cache = DistributedCache::builder()
///     .redis_url("rediss://app:secret@cache.internal:6380/0?timeout=100ms")
///     .key_prefix("myapp")
///     .default_ttl(Duration::from_secs(60))
///     .build()
///     .await?;
/// # let _ = cache; Ok(()) }
/// ```
#[must_use]
#[derive(Debug, Clone, Default)]
pub struct DistributedBuilder {
    config: DistributedConfig,
}

impl From<DistributedConfig> for DistributedBuilder {
    fn from(config: DistributedConfig) -> Self {
        Self { config }
    }
}

/// One builder setter per config setter, each forwarding to it.
macro_rules! forward {
    ($($(#[$attr:meta])* $name:ident($arg:ident: $ty:ty);)*) => {
        impl DistributedBuilder {
            $(
                $(#[$attr])*
                #[doc = concat!("See [`DistributedConfig::", stringify!($name), "`].")]
                pub fn $name(mut self, $arg: $ty) -> Self {
                    self.config = self.config.$name($arg);
                    self
                }
            )*
        }
    };
}

forward! {
    redis_url(url: impl AsRef<str>);
    #[cfg(feature = "tls")]
    tls(tls: crate::config::TlsConfig);
    default_ttl(ttl: Duration);
    key_prefix(prefix: impl Into<String>);
    serializer(codec: Codec);
    compression(compression: Compression);
    max_connections(n: usize);
    socket_timeout(timeout: Duration);
    command_timeout(timeout: Duration);
    socket_connect_timeout(timeout: Duration);
    socket_keepalive(on: bool);
    health_check_interval(every: Duration);
    max_value_bytes(bytes: usize);
    return_decode_errors(on: bool);
    coalesce_gets(on: bool);
    stats_flush_interval(every: Duration);
    connect_lazily(on: bool);
    circuit_breaker(breaker: BreakerConfig);
    namespace_versioning(on: bool);
}

impl DistributedBuilder {
    /// See [`DistributedConfig::cluster_nodes`].
    #[cfg(feature = "cluster")]
    pub fn cluster_nodes<S: AsRef<str>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.config = self.config.cluster_nodes(nodes);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &DistributedConfig {
        &self.config
    }

    /// Connects: [`DistributedCache::create`] with this configuration.
    ///
    /// # Errors
    /// As [`DistributedCache::create`]: [`InvalidInput`](crate::ErrorKind::InvalidInput)
    /// for a malformed URL or option, a connection error or timeout naming the
    /// address (password redacted), [`Auth`](crate::ErrorKind::Auth) for refused
    /// credentials.
    pub async fn build(self) -> Result<DistributedCache> {
        DistributedCache::create(self.config).await
    }
}
