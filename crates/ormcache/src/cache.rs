//! The [`Cache`] trait shared by every cache kind, and the small types it speaks.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::convert::Infallible;

use crate::error::Result;
use crate::memo::{self, ComputeError, ComputeOptions};

/// What can be cached: anything serde can write and read back, shareable across
/// tasks. Implemented for every such type.
///
/// Values come back as `Arc<T>`: an L1 hit hands out the stored value without
/// decoding bytes or deep-cloning it.
pub trait CacheValue: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T> CacheValue for T where T: Serialize + DeserializeOwned + Send + Sync + 'static {}

/// The remaining lifetime of a key, as Redis's `PTTL` answers it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// No such key (or it expired).
    Missing,
    /// The key exists and never expires (only keys written by someone else: every
    /// ormcache write expires).
    NoExpiry,
    /// The key expires after this long.
    Remaining(Duration),
}

impl Ttl {
    /// The remaining time, if the key exists and expires.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Self::Remaining(d) => Some(d),
            Self::Missing | Self::NoExpiry => None,
        }
    }

    /// Whether the key exists.
    pub fn exists(self) -> bool {
        !matches!(self, Self::Missing)
    }
}

/// The operations every cache offers: [`QueryCache`](crate::QueryCache) (in-process),
/// [`DistributedCache`](crate::DistributedCache) (Redis) and
/// [`AnyCache`](crate::AnyCache) (either, chosen at run time). Code written against
/// `Cache` moves from a local to a distributed cache by changing one line, the
/// constructor (the seed's "Migration from Local Cache").
///
/// Keys are strings stored at `{key_prefix}:{key}` (Redis) or as given (L1). A `None`
/// TTL means the cache's default; a zero TTL is an [`InvalidInput`] error.
///
/// # Errors, per type
///
/// | call | `QueryCache` | `DistributedCache` | `HybridCache` |
/// | --- | --- | --- | --- |
/// | `get`, `get_many` | a missing or foreign-typed entry is a miss; [`InvalidInput`] for a bad key | Redis errors ([`Connection`], [`Timeout`], [`CircuitOpen`], [`Server`]) are returned; undecodable bytes are a counted miss (or [`Decode`] with `return_decode_errors`) | fail open: Redis errors are counted, the answer comes from L1 (young entries) or is a miss; [`InvalidInput`] only |
/// | `set`, `set_many` | [`InvalidInput`] only | [`InvalidInput`], [`Encode`], [`ValueTooLarge`], and Redis errors | the same; on a Redis error the key is also queued for invalidation |
/// | `delete`, `expire`, `clear`, `clear_pattern`, `delete_many` | [`InvalidInput`] only | [`InvalidInput`] and Redis errors | the same; on a Redis error the invalidation is queued and applied when Redis is back |
/// | `exists`, `ttl` | never | Redis errors | fail open (L1's answer) |
/// | `get_stats` | never | Redis errors | never (`l2` is `None`) |
/// | `get_or_compute*`, `#[cached]` | invalid key/TTL/tag only | the same: Redis failures fail open (the loader's value is returned, not stored) | the same |
/// | `set_with_tags`, `invalidate_tag` | invalid input only | invalid input and Redis errors | the same; a failed tag invalidation queues a clear of the prefix |
///
/// No call panics. Read-through paths that fail open are built on top of this trait.
///
/// # Sealed
///
/// Only ormcache's own caches implement `Cache`: its contract is more than its
/// signatures (how each kind fails, stays coherent, and drives
/// [`get_or_compute`](Cache::get_or_compute)'s leases through a hidden method), and
/// sealing it lets methods be added without breaking anyone. Write code generic over
/// `C: Cache`, or wrap a cache in a type of your own.
///
/// ```compile_fail
/// #[derive(Clone)]
/// struct MyCache;
/// impl ormcache::Cache for MyCache { /* … */ } // error: `Sealed` is not implemented
/// ```
///
/// [`InvalidInput`]: crate::ErrorKind::InvalidInput
/// [`Connection`]: crate::ErrorKind::Connection
/// [`Timeout`]: crate::ErrorKind::Timeout
/// [`CircuitOpen`]: crate::ErrorKind::CircuitOpen
/// [`Server`]: crate::ErrorKind::Server
/// [`Decode`]: crate::ErrorKind::Decode
/// [`Encode`]: crate::ErrorKind::Encode
/// [`ValueTooLarge`]: crate::ErrorKind::ValueTooLarge
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ormcache::{Cache, QueryCache};
///
/// async fn cached_name(cache: &impl Cache, id: u64) -> ormcache::Result<Arc<String>> {
///     let key = format!("user:{id}:name");
///     if let Some(name) = cache.get::<String>(&key).await? {
///         return Ok(name);
///     }
///     let name = format!("user #{id}"); // the database query
///     cache.set(&key, name.clone(), Some(Duration::from_secs(60))).await?;
///     Ok(Arc::new(name))
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
/// assert_eq!(*cached_name(&cache, 1).await.unwrap(), "user #1");
/// assert!(cache.exists("user:1:name").await.unwrap());
/// # });
/// ```
pub trait Cache: sealed::Sealed + Clone + Send + Sync + 'static {
    /// What [`get_stats`](Cache::get_stats) returns.
    type Stats: Serialize + Debug + Send + 'static;

    /// The value at `key`, or `None` on a miss. A cached `None` (`T = Option<U>`)
    /// comes back as `Some(None)`: "not found" can be cached.
    fn get<T: CacheValue>(&self, key: &str) -> impl Future<Output = Result<Option<Arc<T>>>> + Send;

    /// Stores `value` at `key` for `ttl` (`None`: the default TTL).
    fn set<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes `key`; whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Whether `key` holds a live entry.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The remaining lifetime of `key`.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Ttl>> + Send;

    /// Sets a new TTL on an existing key; whether the key existed.
    fn expire(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Removes every entry under the prefix (reserved and tenant keys excepted);
    /// the number removed.
    fn clear(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Removes the entries whose key matches the Redis glob `pattern` (under the
    /// prefix, whatever the pattern); the number removed. Use
    /// [`escape_glob`](crate::escape_glob) for user input.
    fn clear_pattern(&self, pattern: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The values at `keys`, in order (one round trip for Redis).
    fn get_many<T: CacheValue, K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<Vec<Option<Arc<T>>>>> + Send;

    /// Stores every `(key, value)` pair with one TTL (one round trip for Redis).
    fn set_many<T: CacheValue, K: AsRef<str> + Send>(
        &self,
        entries: Vec<(K, T)>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes `keys`; how many existed (one round trip for Redis).
    fn delete_many<K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Counters and sizes, in the seed's shape.
    fn get_stats(&self) -> impl Future<Output = Result<Self::Stats>> + Send;

    /// Checks that the cache answers; the round-trip time.
    fn ping(&self) -> impl Future<Output = Result<Duration>> + Send;

    /// Flushes what is pending (stats) and releases connections. Later calls fail
    /// with [`Closed`](crate::ErrorKind::Closed) (Redis) or keep working (L1).
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// Stores `value` with tags; [`invalidate_tag`](Cache::invalidate_tag) of any of
    /// them drops it, in O(1) on Redis. Tagged entries are stored in an envelope (the
    /// Python package cannot read them). A tag is 1 to 1024 bytes and does not start
    /// with `__oc` (reserved); an entry carries at most 254 tags on Redis.
    fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops every entry tagged `tag`, in every level and (for
    /// [`HybridCache`](crate::HybridCache)) every process.
    fn invalidate_tag(&self, tag: &str) -> impl Future<Output = Result<()>> + Send;

    /// The value at `key`, or the loader's, stored for `ttl` (`None`: the default).
    /// Concurrent misses of one key in this process run the loader once; the others
    /// wait for its value. Fails open: if Redis is down, the loader's value is
    /// returned (and not stored). A value loaded while the key was invalidated
    /// (anywhere) is returned but not stored.
    ///
    /// # Errors
    /// Invalid key or TTL only.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ormcache::{Cache, QueryCache};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    /// let user = cache.get_or_compute("user:1", None, || async { "from the database".to_string() }).await.unwrap();
    /// assert_eq!(*user, "from the database");
    /// let again = cache.get_or_compute("user:1", None, || async { "never runs".to_string() }).await.unwrap();
    /// assert_eq!(*again, "from the database");
    /// # });
    /// ```
    fn get_or_compute<T, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T> + Send,
    {
        self.get_or_compute_with(key, ComputeOptions::new().ttl_opt(ttl), loader)
    }

    /// [`get_or_compute`](Cache::get_or_compute) for loaders that can fail: an
    /// error is never cached and reaches every caller waiting on the same load.
    ///
    /// # Errors
    /// [`ComputeError::Load`] with the loader's error; [`ComputeError::Cache`] for
    /// an invalid key or TTL.
    fn try_get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>, ComputeError<E>>> + Send
    where
        T: CacheValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        self.try_get_or_compute_with(key, ComputeOptions::new().ttl_opt(ttl), loader)
    }

    /// [`get_or_compute`](Cache::get_or_compute) with options: a cluster-wide lock,
    /// early refresh, tags.
    ///
    /// # Errors
    /// Invalid key, TTL or tag only.
    fn get_or_compute_with<T, F, Fut>(
        &self,
        key: &str,
        options: ComputeOptions,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T> + Send,
    {
        async move {
            let ttl = memo::validate(key, &options, self.__default_ttl())?;
            match self
                .__compute::<T, Infallible, _, _>(key, ttl, &options, move || async move {
                    Ok(loader().await)
                })
                .await
            {
                Ok(v) => Ok(v),
                Err(never) => match *never {},
            }
        }
    }

    /// [`try_get_or_compute`](Cache::try_get_or_compute) with options.
    ///
    /// # Errors
    /// As [`try_get_or_compute`](Cache::try_get_or_compute).
    fn try_get_or_compute_with<T, E, F, Fut>(
        &self,
        key: &str,
        options: ComputeOptions,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>, ComputeError<E>>> + Send
    where
        T: CacheValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        async move {
            let ttl =
                memo::validate(key, &options, self.__default_ttl()).map_err(ComputeError::Cache)?;
            self.__compute(key, ttl, &options, loader)
                .await
                .map_err(ComputeError::Load)
        }
    }

    /// The read-through driver on validated input (what `#[cached]` calls).
    #[doc(hidden)]
    fn __compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        options: &ComputeOptions,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>, Arc<E>>> + Send
    where
        T: CacheValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send;

    /// The default TTL.
    #[doc(hidden)]
    fn __default_ttl(&self) -> Duration;
}

mod sealed {
    /// The private supertrait of [`Cache`](super::Cache): nameable only here.
    pub trait Sealed {}

    impl Sealed for crate::QueryCache {}
    impl Sealed for crate::DistributedCache {}
    impl Sealed for crate::HybridCache {}
    impl Sealed for crate::AnyCache {}
}

/// Implements [`Cache`] for a type whose inherent async methods have the trait's
/// names and signatures (the Redis-backed caches), so the two never drift apart.
macro_rules! impl_cache_via_inherent {
    ($ty:ty, $stats:ty) => {
        impl $crate::cache::Cache for $ty {
            type Stats = $stats;

            fn get<T: $crate::cache::CacheValue>(
                &self,
                key: &str,
            ) -> impl ::std::future::Future<Output = $crate::Result<Option<::std::sync::Arc<T>>>> + Send {
                // An async block: it borrows `self` and `key` for lifetimes of their
                // own, where an inherent `get` may take one for both.
                async move { <$ty>::get(self, key).await }
            }

            fn set<T: $crate::cache::CacheValue>(
                &self,
                key: &str,
                value: T,
                ttl: Option<::std::time::Duration>,
            ) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                <$ty>::set(self, key, value, ttl)
            }

            fn delete(&self, key: &str) -> impl ::std::future::Future<Output = $crate::Result<bool>> + Send {
                <$ty>::delete(self, key)
            }

            fn exists(&self, key: &str) -> impl ::std::future::Future<Output = $crate::Result<bool>> + Send {
                <$ty>::exists(self, key)
            }

            fn ttl(&self, key: &str) -> impl ::std::future::Future<Output = $crate::Result<$crate::cache::Ttl>> + Send {
                <$ty>::ttl(self, key)
            }

            fn expire(
                &self,
                key: &str,
                ttl: ::std::time::Duration,
            ) -> impl ::std::future::Future<Output = $crate::Result<bool>> + Send {
                <$ty>::expire(self, key, ttl)
            }

            fn clear(&self) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send {
                <$ty>::clear(self)
            }

            fn clear_pattern(&self, pattern: &str) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send {
                <$ty>::clear_pattern(self, pattern)
            }

            fn get_many<T: $crate::cache::CacheValue, K: AsRef<str> + Sync>(
                &self,
                keys: &[K],
            ) -> impl ::std::future::Future<Output = $crate::Result<Vec<Option<::std::sync::Arc<T>>>>> + Send {
                <$ty>::get_many(self, keys)
            }

            fn set_many<T: $crate::cache::CacheValue, K: AsRef<str> + Send>(
                &self,
                entries: Vec<(K, T)>,
                ttl: Option<::std::time::Duration>,
            ) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                <$ty>::set_many(self, entries, ttl)
            }

            fn delete_many<K: AsRef<str> + Sync>(
                &self,
                keys: &[K],
            ) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send {
                <$ty>::delete_many(self, keys)
            }

            fn get_stats(&self) -> impl ::std::future::Future<Output = $crate::Result<$stats>> + Send {
                <$ty>::get_stats(self)
            }

            fn ping(&self) -> impl ::std::future::Future<Output = $crate::Result<::std::time::Duration>> + Send {
                <$ty>::ping(self)
            }

            fn close(&self) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                <$ty>::close(self)
            }

            fn set_with_tags<T: $crate::cache::CacheValue, S: AsRef<str> + Sync>(
                &self,
                key: &str,
                value: T,
                ttl: Option<::std::time::Duration>,
                tags: &[S],
            ) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                <$ty>::set_with_tags(self, key, value, ttl, tags)
            }

            fn invalidate_tag(&self, tag: &str) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                <$ty>::invalidate_tag(self, tag)
            }

            fn __compute<T, E, F, Fut>(
                &self,
                key: &str,
                ttl: ::std::time::Duration,
                options: &$crate::memo::ComputeOptions,
                loader: F,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<::std::sync::Arc<T>, ::std::sync::Arc<E>>> + Send
            where
                T: $crate::cache::CacheValue,
                E: Send + Sync + 'static,
                F: FnOnce() -> Fut + Send,
                Fut: ::std::future::Future<Output = ::std::result::Result<T, E>> + Send,
            {
                $crate::memo::run(self, key, ttl, options, loader)
            }

            fn __default_ttl(&self) -> ::std::time::Duration {
                <$ty>::default_ttl(self)
            }
        }
    };
}

pub(crate) use impl_cache_via_inherent;
