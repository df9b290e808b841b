//! The cache, chosen at start-up: in-process only, or L1 + Redis.

use ormcache::{AnyCache, Cache, DistributedCache, HybridCache, QueryCache};

use crate::config::Config;

/// Entries the in-process cache (the L1) holds at most.
const L1_ENTRIES: u64 = 10_000;

/// `REDIS_URL` unset: a [`QueryCache`]. Set: a [`HybridCache`] whose Redis connects
/// lazily, so a Redis that is down at start does not stop the service: it serves
/// from the database and uses Redis once it answers. Its invalidations are
/// confirmed (the `HybridCache` default): a write returns only once every other
/// instance sharing `REDIS_URL` has evicted its copies, so the very next GET through
/// any of them is fresh.
pub(crate) async fn build(config: &Config) -> ormcache::Result<AnyCache> {
    let l1 = QueryCache::new(L1_ENTRIES, config.cache_ttl)?;
    let Some(url) = &config.redis_url else {
        tracing::info!("cache: in-process only (REDIS_URL unset)");
        return Ok(l1.into());
    };
    let l2 = DistributedCache::builder()
        .redis_url(url.to_string_with_secrets())
        .tls(config.tls.clone())
        .key_prefix(config.cache_prefix.as_str())
        .default_ttl(config.cache_ttl)
        .connect_lazily(true)
        .build()
        .await?;
    let cache: AnyCache = HybridCache::new(l1, l2)?.into();
    match cache.ping().await {
        Ok(rtt) => tracing::info!(
            prefix = %config.cache_prefix,
            redis = %url,
            "cache: in-process L1 + Redis (answered in {rtt:?})"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cache DEGRADED: Redis does not answer; serving from the database until it does"
        ),
    }
    Ok(cache)
}
