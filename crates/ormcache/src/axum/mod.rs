//! axum integration (feature `axum`): a response cache, tenants from a request
//! header, and ready-made cache endpoints.
//!
//! - [`ResponseCacheLayer`]: a tower layer that caches `GET` responses of the routes
//!   it wraps in any [`Cache`](crate::Cache) (HTTP semantics: `Vary`, `ETag`/`304`,
//!   `Cache-Control`, credentials, `X-Cache`, `Age`; tags for O(1) invalidation).
//! - [`TenantLayer`]: runs each request in the tenant named by a header
//!   ([`tenant::scope`](crate::tenant::scope)), so cached entries are per tenant.
//! - [`dashboard`]: a live page of hit rates, latency, breaker, peers and
//!   invalidation lag, with the JSON it polls; nothing loaded from elsewhere.
//! - [`stats`], [`health`]: handlers taking the cache as [`State`](::axum::extract::State);
//!   [`cache_health`] for your own health endpoint.
//!
//! The cache is an ordinary axum state: any `C: Cache` is a cheap `Clone`, so a
//! handler takes `State<C>` (or `State<AppState>` with `C: FromRef<AppState>`).
//! Every JSON error body of this module is `{"error": "<message>"}`.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, extract::State, routing::get};
//! use ormcache::{Cache, DistributedCache};
//! use ormcache::axum::{ResponseCacheLayer, TenantLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = DistributedCache::builder().redis_url("redis://localhost:6379").build().await?;
//!
//! async fn products(State(cache): State<DistributedCache>) -> String {
//!     "[\"anvil\"]".to_string() // the database query
//! }
//!
//! let app = Router::new()
//!     .route("/products", get(products))
//!     .route_layer(ResponseCacheLayer::new(cache.clone()).ttl(Duration::from_secs(60)).tags(["products:list"]))
//!     .route("/cache/stats", get(ormcache::axum::stats::<DistributedCache>))
//!     .route("/health", get(ormcache::axum::health::<DistributedCache>))
//!     .layer(TenantLayer::try_header("x-tenant-id")?)
//!     .with_state(cache.clone());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! cache.close().await?; // flushes the stats batch
//! # Ok(()) }
//! ```

mod dashboard;
mod entry;
mod handlers;
mod layer;
mod policy;
mod secret;
mod tenant;

pub use dashboard::dashboard;
pub use handlers::{CacheHealth, cache_health, health, stats};
pub use layer::{ResponseCache, ResponseCacheLayer, ResponseFuture};
pub use secret::CallerSecret;
pub use tenant::{TenantLayer, TenantService};

use ::axum::body::Body;
use ::axum::response::{IntoResponse, Json};
use http::{Response, StatusCode};

/// `status` with the JSON body `{"error": message}`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
