//! [`AnyCache`]: a cache kind chosen at run time.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cache::{Cache, CacheValue, Ttl};
use crate::config::DistributedConfig;
use crate::distributed::DistributedCache;
use crate::error::Result;
use crate::hybrid::{HybridCache, HybridStats};
use crate::local::QueryCache;
use crate::memo::ComputeOptions;
use crate::stats::{DistributedStats, LocalStats};

/// A cache whose kind is picked at run time, e.g. from an environment variable:
/// `Cache`'s generic methods keep it from being a trait object, so this enum is the
/// way to hold "some cache".
///
/// ```
/// use std::time::Duration;
/// use ormcache::{AnyCache, Cache};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // REDIS_URL unset: in-process cache; set: Redis.
/// let url = std::env::var("ORMCACHE_DOC_NO_SUCH_VAR").ok();
/// let cache = AnyCache::from_url(url.as_deref(), Duration::from_secs(300)).await.unwrap();
/// assert_eq!(cache.kind(), "local");
/// cache.set("k", 1u32, None).await.unwrap();
/// assert_eq!(cache.get::<u32>("k").await.unwrap().as_deref(), Some(&1));
/// # });
/// ```
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum AnyCache {
    /// In-process only.
    Local(QueryCache),
    /// Redis.
    Distributed(DistributedCache),
    /// L1 + Redis, coherent across processes.
    Hybrid(HybridCache),
}

/// Statistics of an [`AnyCache`]: those of the cache inside, serialized as they are.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyStats {
    /// From a [`QueryCache`].
    Local(LocalStats),
    /// From a [`DistributedCache`].
    Distributed(DistributedStats),
    /// From a [`HybridCache`].
    Hybrid(Box<HybridStats>),
}

impl From<QueryCache> for AnyCache {
    fn from(c: QueryCache) -> Self {
        Self::Local(c)
    }
}

impl From<DistributedCache> for AnyCache {
    fn from(c: DistributedCache) -> Self {
        Self::Distributed(c)
    }
}

impl From<HybridCache> for AnyCache {
    fn from(c: HybridCache) -> Self {
        Self::Hybrid(c)
    }
}

impl AnyCache {
    /// `None`, an empty string or `memory://`: a [`QueryCache`] with 10,000 entries;
    /// anything else: a [`DistributedCache`] at that URL, in any form of
    /// [`RedisUrl`](crate::RedisUrl) (one server, TLS, unix socket, Cluster,
    /// Sentinel).
    ///
    /// # Errors
    /// As [`DistributedCache::create`].
    pub async fn from_url(url: Option<&str>, default_ttl: Duration) -> Result<Self> {
        match url.map(str::trim) {
            None | Some("" | "memory://") => Ok(Self::Local(QueryCache::new(10_000, default_ttl)?)),
            Some(url) => Ok(Self::Distributed(
                DistributedCache::create(
                    DistributedConfig::new()
                        .redis_url(url)
                        .default_ttl(default_ttl),
                )
                .await?,
            )),
        }
    }

    /// `"local"`, `"distributed"` or `"hybrid"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Distributed(_) => "distributed",
            Self::Hybrid(_) => "hybrid",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            AnyCache::Local($c) => $call,
            AnyCache::Distributed($c) => $call,
            AnyCache::Hybrid($c) => $call,
        }
    };
}

impl Cache for AnyCache {
    type Stats = AnyStats;

    async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>> {
        dispatch!(self, c => Cache::get(c, key).await)
    }

    async fn set<T: CacheValue>(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        dispatch!(self, c => Cache::set(c, key, value, ttl).await)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        dispatch!(self, c => Cache::delete(c, key).await)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        dispatch!(self, c => Cache::exists(c, key).await)
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        dispatch!(self, c => Cache::ttl(c, key).await)
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        dispatch!(self, c => Cache::expire(c, key, ttl).await)
    }

    async fn clear(&self) -> Result<u64> {
        dispatch!(self, c => Cache::clear(c).await)
    }

    async fn clear_pattern(&self, pattern: &str) -> Result<u64> {
        dispatch!(self, c => Cache::clear_pattern(c, pattern).await)
    }

    async fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Arc<T>>>> {
        dispatch!(self, c => Cache::get_many(c, keys).await)
    }

    async fn set_many<T: CacheValue, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        dispatch!(self, c => Cache::set_many(c, entries, ttl).await)
    }

    async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<u64> {
        dispatch!(self, c => Cache::delete_many(c, keys).await)
    }

    async fn get_stats(&self) -> Result<AnyStats> {
        match self {
            Self::Local(c) => Ok(AnyStats::Local(c.get_stats_sync())),
            Self::Distributed(c) => Ok(AnyStats::Distributed(c.get_stats().await?)),
            Self::Hybrid(c) => Ok(AnyStats::Hybrid(Box::new(c.get_stats().await?))),
        }
    }

    async fn ping(&self) -> Result<Duration> {
        dispatch!(self, c => Cache::ping(c).await)
    }

    async fn close(&self) -> Result<()> {
        dispatch!(self, c => Cache::close(c).await)
    }

    async fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        dispatch!(self, c => Cache::set_with_tags(c, key, value, ttl, tags).await)
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        dispatch!(self, c => Cache::invalidate_tag(c, tag).await)
    }

    async fn __compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        options: &ComputeOptions,
        loader: F,
    ) -> std::result::Result<Arc<T>, Arc<E>>
    where
        T: CacheValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = std::result::Result<T, E>> + Send,
    {
        dispatch!(self, c => Cache::__compute(c, key, ttl, options, loader).await)
    }

    fn __default_ttl(&self) -> Duration {
        dispatch!(self, c => Cache::__default_ttl(c))
    }
}
