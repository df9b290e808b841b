//! The async API of [`QueryCache`]: the [`Cache`](crate::Cache) methods, also
//! inherent so that they need no import and never shadow the trait. Each answers at
//! once; its synchronous twin is the `…_sync` method of the same name.

use std::sync::Arc;
use std::time::Duration;

use super::QueryCache;
use crate::cache::{CacheValue, Ttl};
use crate::error::Result;
use crate::key;
use crate::stats::LocalStats;

impl QueryCache {
    /// The value at `key` if it is live and of type `T`. Cancel-safe (it completes
    /// on its first poll).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an empty or reserved key.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("k", 7u32, None).await.unwrap();
    /// assert_eq!(cache.get::<u32>("k").await.unwrap().as_deref(), Some(&7));
    /// # });
    /// ```
    pub async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>> {
        key::validate("get", key)?;
        Ok(self.get_sync(key))
    }

    /// Stores `value` at `key` for `ttl` (`None`: the default). Cancel-safe.
    ///
    /// # Errors
    /// As [`set_sync`](Self::set_sync).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("k", "v".to_string(), None).await.unwrap();
    /// assert!(cache.exists("k").await.unwrap());
    /// # });
    /// ```
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.set_sync(key, value, ttl)
    }

    /// Removes `key`; whether a live entry was there. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("k", 1u8, None).await.unwrap();
    /// assert!(cache.delete("k").await.unwrap());
    /// # });
    /// ```
    pub async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_sync(key))
    }

    /// Whether `key` holds a live entry. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert!(!cache.exists("k").await.unwrap());
    /// # });
    /// ```
    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.exists_sync(key))
    }

    /// The remaining lifetime of `key`. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert_eq!(cache.ttl("k").await.unwrap(), ormcache::Ttl::Missing);
    /// # });
    /// ```
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        Ok(self.ttl_sync(key))
    }

    /// Gives a live entry a new TTL from now; whether it existed. Cancel-safe.
    ///
    /// # Errors
    /// As [`expire_sync`](Self::expire_sync).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("k", 1u8, None).await.unwrap();
    /// assert!(cache.expire("k", Duration::from_secs(5)).await.unwrap());
    /// # });
    /// ```
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.expire_sync(key, ttl)
    }

    /// Removes every entry of the current scope; how many were live. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("k", 1u8, None).await.unwrap();
    /// assert_eq!(cache.clear().await.unwrap(), 1);
    /// # });
    /// ```
    pub async fn clear(&self) -> Result<u64> {
        Ok(self.clear_sync())
    }

    /// Removes the entries matching the Redis glob `pattern`; how many were live.
    /// Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("user:1", 1u8, None).await.unwrap();
    /// assert_eq!(cache.clear_pattern("user:*").await.unwrap(), 1);
    /// # });
    /// ```
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64> {
        Ok(self.clear_pattern_sync(pattern))
    }

    /// The values at `keys`, in order. Cancel-safe.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an empty or reserved key.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set("a", 1u8, None).await.unwrap();
    /// let got = cache.get_many::<u8, _>(&["a", "b"]).await.unwrap();
    /// assert_eq!((got[0].as_deref(), got[1].as_deref()), (Some(&1), None));
    /// # });
    /// ```
    pub async fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<Arc<T>>>> {
        for k in keys {
            key::validate("get_many", k.as_ref())?;
        }
        Ok(self.get_many_sync(keys))
    }

    /// Stores every `(key, value)` with one TTL; all keys are checked before any is
    /// written. Cancel-safe.
    ///
    /// # Errors
    /// As [`set_sync`](Self::set_sync).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_many(vec![("a", 1u8), ("b", 2u8)], None).await.unwrap();
    /// assert_eq!(cache.get_stats().await.unwrap().size, 2);
    /// # });
    /// ```
    pub async fn set_many<T: CacheValue, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        for (k, _) in &entries {
            key::validate("set_many", k.as_ref())?;
        }
        for (k, v) in entries {
            self.set_sync(k.as_ref(), v, ttl)?;
        }
        Ok(())
    }

    /// Removes `keys`; how many were live. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert_eq!(cache.delete_many(&["a", "b"]).await.unwrap(), 0);
    /// # });
    /// ```
    pub async fn delete_many<K: AsRef<str> + Sync>(&self, keys: &[K]) -> Result<u64> {
        Ok(self.delete_many_sync(keys))
    }

    /// Counters and sizes. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert_eq!(cache.get_stats().await.unwrap().max_size, 1000);
    /// # });
    /// ```
    pub async fn get_stats(&self) -> Result<LocalStats> {
        Ok(self.get_stats_sync())
    }

    /// Always zero: there is nothing to reach. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert!(cache.ping().await.unwrap().is_zero());
    /// # });
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    /// Nothing to close; entries stay. Cancel-safe.
    ///
    /// # Errors
    /// None; the `Result` is the [`Cache`](crate::Cache) signature.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// ormcache::QueryCache::default().close().await.unwrap();
    /// # });
    /// ```
    pub async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Stores `value` with tags. Cancel-safe.
    ///
    /// # Errors
    /// As [`set_with_tags_sync`](Self::set_with_tags_sync).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_with_tags("user:1", 1u8, None, &["users"]).await.unwrap();
    /// cache.invalidate_tag("users").await.unwrap();
    /// assert!(!cache.exists("user:1").await.unwrap());
    /// # });
    /// ```
    pub async fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        self.set_with_tags_sync(key, value, ttl, tags)
    }

    /// Voids every entry tagged `tag`, in O(1): no walk, and no count (the entries
    /// go when overwritten, expired or evicted; [`invalidate_tag_sync`](Self::invalidate_tag_sync)
    /// removes and counts them). Cancel-safe.
    ///
    /// # Errors
    /// An empty tag or one over 1 KiB.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = ormcache::QueryCache::default();
    /// assert!(cache.invalidate_tag("").await.unwrap_err().is_invalid_input());
    /// # });
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        key::validate_tag("invalidate_tag", tag)?;
        self.evict_tag(tag);
        Ok(())
    }
}

crate::cache::impl_cache_via_inherent!(QueryCache, LocalStats);
