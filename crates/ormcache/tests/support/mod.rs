//! Shared helpers for the integration tests: real redis-server processes come from
//! `ormcache-testing`.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

pub use ormcache_testing::{RedisServer, ServerOptions};

use ormcache::{DistributedCache, DistributedConfig};

/// A config for `server` with a prefix of its own.
pub fn config(server: &RedisServer, prefix: &str) -> DistributedConfig {
    DistributedConfig::new()
        .redis_url(server.url())
        .key_prefix(prefix)
        .default_ttl(Duration::from_secs(300))
}

/// A connected cache for `server`.
pub async fn cache(server: &RedisServer, prefix: &str) -> DistributedCache {
    DistributedCache::create(config(server, prefix))
        .await
        .unwrap()
}

/// A deterministic xorshift generator for property-style tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(feature = "cluster")]
pub use ormcache_testing::{ClusterOptions, RedisCluster};

/// A config for a Redis Cluster (every node as a seed) with a prefix of its own and
/// a command timeout generous enough for a loaded machine.
#[cfg(feature = "cluster")]
pub fn cluster_config(cluster: &RedisCluster, prefix: &str) -> DistributedConfig {
    DistributedConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix(prefix)
        .default_ttl(Duration::from_secs(300))
        .socket_timeout(Duration::from_secs(2))
}

/// A connected cache for `cluster`.
#[cfg(feature = "cluster")]
pub async fn cluster_cache(cluster: &RedisCluster, prefix: &str) -> DistributedCache {
    DistributedCache::create(cluster_config(cluster, prefix))
        .await
        .unwrap()
}
