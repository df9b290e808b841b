//! Ready-made `stats` and `health` handlers, and [`cache_health`] for apps that
//! build their own health endpoint.

use std::any::Any;
use std::time::Instant;

use ::axum::Json;
use ::axum::extract::State;
use ::axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use super::error_response;
use crate::cache::Cache;
use crate::{AnyCache, DistributedCache, HybridCache, QueryCache};

/// `GET` handler: `200` with the cache's statistics as JSON ([`Cache::get_stats`]),
/// or `503` with `{"error": "…"}` when they cannot be read (Redis down, for a
/// [`DistributedCache`]).
///
/// The cache comes from the router's state: any state `S` with `C: FromRef<S>`.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use ormcache::DistributedCache;
///
/// # async fn demo() -> ormcache::Result<()> {
/// let cache = DistributedCache::builder().redis_url("redis://localhost:6379").build().await?;
/// let app: Router = Router::new()
///     .route("/cache/stats", get(ormcache::axum::stats::<DistributedCache>))
///     .route("/cache/health", get(ormcache::axum::health::<DistributedCache>))
///     .with_state(cache);
/// # let _ = app; Ok(()) }
/// ```
pub async fn stats<C: Cache>(State(cache): State<C>) -> Response {
    match cache.get_stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `GET` handler: the cache's [`CacheHealth`] as JSON, always with `200`.
///
/// A degraded cache does not fail the health check: ormcache fails open (requests
/// are still answered, by the handlers), so taking the instance out of rotation
/// would only add load. Build your own endpoint with [`cache_health`] to answer
/// otherwise.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use ormcache::QueryCache;
///
/// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
/// let app: Router = Router::new()
///     .route("/health", get(ormcache::axum::health::<QueryCache>))
///     .with_state(cache);
/// # let _ = app;
/// ```
pub async fn health<C: Cache>(State(cache): State<C>) -> Json<CacheHealth> {
    Json(cache_health(&cache).await)
}

/// The health of a cache, as [`health`] reports it.
///
/// ```json
/// {"status": "ok", "kind": "distributed", "latency_ms": 0.21, "error": null}
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheHealth {
    /// `"ok"` when the cache answered a ping, `"degraded"` when it did not.
    pub status: &'static str,
    /// `"local"`, `"distributed"`, `"hybrid"`, or the type's full name for other caches.
    pub kind: &'static str,
    /// How long the ping took (until its failure, when it failed), in milliseconds.
    pub latency_ms: f64,
    /// Why the cache is degraded.
    pub error: Option<String>,
}

/// Pings `cache` ([`Cache::ping`]): ok, or degraded with the error. Never fails.
///
/// ```
/// # use std::time::Duration;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
/// let health = ormcache::axum::cache_health(&cache).await;
/// assert_eq!((health.status, health.kind, health.error), ("ok", "local", None));
/// # });
/// ```
pub async fn cache_health<C: Cache>(cache: &C) -> CacheHealth {
    let started = Instant::now();
    let result = cache.ping().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, error) = match result {
        Ok(_) => ("ok", None),
        Err(e) => ("degraded", Some(e.to_string())),
    };
    CacheHealth {
        status,
        kind: kind_of(cache),
        latency_ms,
        error,
    }
}

fn kind_of<C: Cache>(cache: &C) -> &'static str {
    let any: &dyn Any = cache;
    if let Some(c) = any.downcast_ref::<AnyCache>() {
        c.kind()
    } else if any.is::<QueryCache>() {
        "local"
    } else if any.is::<DistributedCache>() {
        "distributed"
    } else if any.is::<HybridCache>() {
        "hybrid"
    } else {
        std::any::type_name::<C>()
    }
}
