//! Every option, every return kind, the forms of the `cache` expression, and bodies
//! with `?`, `return` and inner attributes.
#![deny(warnings, missing_docs, unreachable_pub)]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ormcache::{AnyCache, Cache, QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

fn make_cache() -> QueryCache {
    CACHE.clone()
}

/// Application state passed by value.
#[derive(Debug, Clone)]
pub struct State {
    cache: Arc<QueryCache>,
}

/// An error type that can be cloned for every waiter.
#[derive(Debug, Clone)]
pub struct AppError(String);

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        Self(e.to_string())
    }
}

/// A one-parameter alias, like `anyhow::Result`.
pub mod app {
    /// The app's result.
    pub type Result<T> = std::result::Result<T, super::AppError>;
}

/// Not serializable: skipped.
#[derive(Debug)]
pub struct Conn;

/// All the options at once.
#[cached(
    cache = CACHE,
    ttl = Duration::from_secs(300),
    key_prefix = "v2",
    skip(conn, _unused),
    tags = ["users", format!("user:{id}"), id],
    lock,
    early_refresh = 0.1,
)]
pub async fn everything(conn: &Conn, id: u64, _unused: impl Send + Sync) -> app::Result<String> {
    #![allow(clippy::let_and_return)]
    let s = format!("{conn:?}:{id}");
    s.parse::<u64>()?; // `?` converts into AppError
    Ok(s)
}

/// `cache_none` with a shorter TTL for `None`; the state is moved into the body
/// after the cache expression borrowed it.
#[cached(cache = state.cache, skip(state), cache_none = true, none_ttl = Duration::from_secs(5), early_refresh)]
pub(crate) async fn maybe(state: State, mut id: u64) -> Option<u64> {
    id += 1;
    if id > 10 {
        return None;
    }
    drop(state);
    Some(id)
}

/// No return type, a temporary cache, `lock = false`, `cache_none = false`.
#[cached(cache = make_cache(), lock = false)]
async fn unit(id: u32) {
    let _ = id;
}

/// A reference to a cache, an `AnyCache`, a generic cache.
#[cached(cache = cache, skip(cache), cache_none = false)]
async fn any(cache: &AnyCache, id: i64) -> Option<i64> {
    Some(id)
}

/// A generic cache type; the key companion takes only `id` and infers nothing.
#[cached(cache = cache, skip(cache), ttl = 30u64)]
async fn generic<C>(cache: &C, id: u8) -> u8
where
    C: Cache,
{
    id
}

/// Unit-like return written as a path.
#[cached(cache = CACHE)]
async fn results(id: u8) -> std::result::Result<Vec<u8>, Arc<str>> {
    Ok(vec![id])
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = everything(&Conn, 1, ()).await;
        let _ = everything_cache_key(&1);
        let _ = everything_invalidate(&Conn, 1, ()).await;
        let state = State {
            cache: Arc::new(CACHE.clone()),
        };
        assert_eq!(maybe(state.clone(), 1).await, Some(2));
        let _ = maybe_cache_key(&1);
        let _ = maybe_invalidate(state, 1).await;
        unit(1).await;
        let _ = unit_cache_key(&1);
        let _ = unit_invalidate(1).await;
        let any_cache = AnyCache::Local(CACHE.clone());
        assert_eq!(any(&any_cache, 1).await, Some(1));
        let _ = any_cache_key(&1);
        let _ = any_invalidate(&any_cache, 1).await;
        assert_eq!(generic(&*CACHE, 1).await, 1);
        let _ = generic_cache_key(&1);
        let _ = generic_invalidate(&*CACHE, 1).await;
        assert_eq!(results(1).await, Ok(vec![1]));
        let _ = results_cache_key(&1);
        let _ = results_invalidate(1).await;
    });
}
