//! What the `#[cached]` macro expands to. Not a public API: names and signatures
//! may change in any release.
#![allow(missing_docs, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use crate::{Cache, CacheValue, ComputeError, ComputeOptions};

/// A hash of the serialized arguments that is the same in every process, build and
/// platform: XXH3-128 of their MessagePack encoding, as 32 hex digits. `None` if
/// the arguments do not serialize (the call then runs uncached).
pub fn stable_hash<A: Serialize + ?Sized>(args: &A) -> Option<String> {
    let bytes = rmp_serde::to_vec(args).ok()?;
    Some(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)))
}

/// The default key: `{key_prefix}:{path}:{hash}` (without the prefix part when there
/// is none).
pub fn default_key(key_prefix: Option<&str>, path: &str, hash: &str) -> String {
    match key_prefix {
        Some(p) => format!("{p}:{path}:{hash}"),
        None => format!("{path}:{hash}"),
    }
}

/// `ttl = 60` (seconds) or `ttl = Duration::from_millis(500)`.
pub trait IntoTtl {
    fn into_ttl(self) -> Duration;
}

impl IntoTtl for Duration {
    fn into_ttl(self) -> Duration {
        self
    }
}

macro_rules! secs {
    ($($t:ty),*) => {$(
        impl IntoTtl for $t {
            #[allow(clippy::cast_sign_loss, clippy::cast_lossless)]
            fn into_ttl(self) -> Duration {
                // A negative TTL becomes zero, which the cache refuses (the call
                // then runs uncached and the mistake is logged).
                Duration::from_secs(self.max(0) as u64)
            }
        }
    )*};
}
secs!(i32, i64, u32, u64, usize);

pub fn ttl(t: impl IntoTtl) -> Duration {
    t.into_ttl()
}

/// The key and TTL of a `#[cached]` call, or `None` (logged) if the call cannot be
/// cached: its arguments did not serialize, or the key or TTL is invalid.
fn usable<C: Cache>(
    cache: &C,
    key: Option<String>,
    options: &ComputeOptions,
) -> Option<(String, Duration)> {
    let key = key?;
    match crate::memo::validate(&key, options, cache.__default_ttl()) {
        Ok(ttl) => Some((key, ttl)),
        Err(e) => {
            tracing::warn!(error = %e, "#[cached] call runs uncached");
            None
        }
    }
}

/// `#[cached]` on a function returning `T`.
pub async fn cached<C, T, F, Fut>(
    cache: &C,
    key: Option<String>,
    options: ComputeOptions,
    f: F,
) -> T
where
    C: Cache,
    T: CacheValue + Clone,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T> + Send,
{
    let Some((key, ttl)) = usable(cache, key, &options) else {
        return f().await;
    };
    match cache
        .__compute::<T, std::convert::Infallible, _, _>(&key, ttl, &options, move || async move {
            Ok(f().await)
        })
        .await
    {
        Ok(v) => Arc::unwrap_or_clone(v),
        Err(never) => match *never {},
    }
}

/// `#[cached]` on a function returning `Result<T, E>`: `Err` is never cached and
/// every caller waiting on the same load gets a clone of it.
pub async fn try_cached<C, T, E, F, Fut>(
    cache: &C,
    key: Option<String>,
    options: ComputeOptions,
    f: F,
) -> Result<T, E>
where
    C: Cache,
    T: CacheValue + Clone,
    E: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let Some((key, ttl)) = usable(cache, key, &options) else {
        return f().await;
    };
    match cache.__compute(&key, ttl, &options, f).await {
        Ok(v) => Ok(Arc::unwrap_or_clone(v)),
        Err(e) => Err(Arc::unwrap_or_clone(e)),
    }
}

/// `#[cached]` on a function returning `Option<T>`. `None` is cached only with
/// `cache_none = true`, for `none_ttl` (default: the same TTL; zero: not cached).
/// The TTL is chosen before the one write (no `expire` afterwards, and nothing is
/// written on a hit).
pub async fn cached_option<C, T, F, Fut>(
    cache: &C,
    key: Option<String>,
    options: ComputeOptions,
    cache_none: bool,
    none_ttl: Option<Duration>,
    f: F,
) -> Option<T>
where
    C: Cache,
    T: CacheValue + Clone,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Option<T>> + Send,
{
    if !cache_none {
        #[derive(Clone)]
        struct NotFound;
        return try_cached(
            cache,
            key,
            options,
            || async move { f().await.ok_or(NotFound) },
        )
        .await
        .ok();
    }
    let options = match none_ttl {
        Some(ttl) => options.ttl_for(move |v: &Option<T>| v.is_none().then_some(ttl)),
        None => options,
    };
    cached(cache, key, options, f).await
}
