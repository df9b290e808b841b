//! [`ResponseCacheLayer`]: caches GET responses of the routes it wraps.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ::axum::body::Body;
use bytes::Bytes;
use futures_util::future::{self, Either};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

use super::entry::{Render, StoredResponse};
use super::error_response;
use super::policy::{self, Config, Plan};
use super::secret::CallerSecret;
use crate::cache::Cache;
use crate::memo::{ComputeError, ComputeOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`tower_layer::Layer`] that caches the GET responses of the routes it wraps in
/// any [`Cache`], shared by every process that uses the same Redis.
///
/// Apply it per route with [`Router::route_layer`](::axum::Router::route_layer) or
/// [`MethodRouter::layer`](::axum::routing::MethodRouter::layer); apply
/// [`TenantLayer`](super::TenantLayer) outside it (with `Router::layer`) so that
/// tenants get their own entries.
///
/// # What is cached
///
/// - **Requests**: only `GET` is read through the cache; a `HEAD` is answered from the
///   GET entry when there is one (and passed on otherwise). A request with
///   `Cache-Control: no-store` is neither answered from nor stored in the cache;
///   `no-cache`, `max-age=0` (or `Pragma: no-cache`) is not answered from it (its
///   response is not stored either: see below). A request carrying `Authorization`
///   or `Cookie` bypasses the cache, unless the route is
///   [`keyed_by_caller`](Self::keyed_by_caller).
/// - **Responses** are stored when their status is one of
///   [`statuses`](Self::statuses) (`200` by default), they set no cookie, their
///   `Cache-Control` has no `no-store`, `no-cache`, `max-age=0`, `s-maxage=0` or
///   `private` (`private` is allowed when keyed by caller), their own `Vary` (if
///   any) names exactly the route's [`vary`](Self::vary) headers, and their body's
///   size is known in advance and at most [`max_body_bytes`](Self::max_body_bytes)
///   (1 MiB by default): a streamed body passes through untouched.
/// - **The key** is the method, the path, the query (parameters sorted by name, see
///   [`sort_query`](Self::sort_query)), the values of the declared vary headers and,
///   when keyed by caller, a hash of the caller's credentials keyed with the
///   deployment's [`CallerSecret`](super::CallerSecret): `http:GET:/products?page=2`
///   (plus `#{hash}` with vary headers or callers; long paths are hashed). Inside a
///   [`tenant::scope`](crate::tenant::scope) the cache keeps it in the tenant's
///   namespace, so tenants never share entries. Behind
///   [`Router::nest`](::axum::Router::nest) the full original path is used.
/// - **Lifetime**: the route's [`ttl`](Self::ttl), or the cache's default. The
///   response's own `max-age` is replayed to clients (with `Age`, so downstream
///   caches see it age) but does not shorten the entry.
///
/// # What the client sees
///
/// `X-Cache: HIT` or `MISS`; on a hit, `Age` (seconds since stored); a strong `ETag`
/// (the handler's own, or the XXH3-128 of the body: the same in every process), and
/// `304 Not Modified` when `If-None-Match` matches it; `Vary` naming the declared
/// headers.
///
/// # Failures, concurrency, invalidation
///
/// A cache failure (Redis down) never fails a request: the handler answers, the
/// error is counted by the cache and logged. A corrupt entry is a miss (the handler
/// answers, the entry is deleted). Concurrent misses of one key in a process run the
/// handler once (the cache's `get_or_compute` single flight): the others wait for
/// its response, or run the handler themselves if that response turns out not to
/// be storable. Across processes, each may run the handler once for a cold key,
/// unless the route takes a [`lock`](Self::lock). A miss costs the lookup and a lease round trip
/// before the handler runs; the response is sent as soon as the handler's body is
/// buffered, and the store finishes in a background task that keeps the tenant.
///
/// Stored responses carry the route's [`tags`](Self::tags): `cache.invalidate_tag(tag)`
/// drops every one of them in O(1), and a response the handler computed before such
/// an invalidation is never stored after it (the fill holds a lease taken before the
/// handler ran). A successful (2xx) `POST`, `PUT`, `PATCH` or `DELETE` through the
/// layer invalidates its tags before the response is sent
/// ([`invalidate_on_write`](Self::invalidate_on_write)).
///
/// A `no-cache` request's fresh response is not stored, because storing it outside
/// the read-through would bypass that lease and could store a response older than
/// a concurrent invalidation.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{Router, routing::get, http::header};
/// use ormcache::{DistributedCache, axum::ResponseCacheLayer};
///
/// # async fn demo() -> ormcache::Result<()> {
/// let cache = DistributedCache::builder().redis_url("redis://localhost:6379").build().await?;
/// let app: Router = Router::new()
///     .route("/products", get(|| async { "[\"anvil\"]" }).post(|| async { "created" }))
///     .route_layer(
///         ResponseCacheLayer::new(cache.clone())
///             .ttl(Duration::from_secs(60))
///             .vary([header::ACCEPT_LANGUAGE])
///             .tags(["products:list"]),
///     );
/// // Elsewhere, after a write that bypasses this route:
/// # use ormcache::Cache;
/// cache.invalidate_tag("products:list").await?;
/// # let _ = app; Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct ResponseCacheLayer<C> {
    cache: C,
    config: Arc<Config>,
}

impl<C> fmt::Debug for ResponseCacheLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C: Cache> ResponseCacheLayer<C> {
    /// Caches in `cache` with its default TTL, `200` responses only, no vary headers,
    /// bodies up to 1 MiB, no tags, callers with credentials bypassing the cache.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ormcache::{QueryCache, axum::ResponseCacheLayer};
    /// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let layer = ResponseCacheLayer::new(cache);
    /// # let _ = layer;
    /// ```
    pub fn new(cache: C) -> Self {
        Self {
            cache,
            config: Arc::new(Config::default()),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        f(config);
        config.refresh_vary();
        self
    }

    /// How long responses of this route stay cached (default: the cache's default
    /// TTL). A zero TTL disables storing (and is logged).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache).ttl(Duration::from_secs(30));
    /// # let _ = layer;
    /// ```
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.ttl = Some(ttl))
    }

    /// The request headers the response depends on: their values are part of the key,
    /// and responses get a `Vary` naming them. A response whose own `Vary` differs is
    /// not stored.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use axum::http::header;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache)
    ///     .vary([header::ACCEPT, header::ACCEPT_LANGUAGE]);
    /// # let _ = layer;
    /// ```
    pub fn vary(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.with(|c| c.vary = headers.into_iter().collect())
    }

    /// The largest body stored (default 1 MiB); larger bodies pass through uncached.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache).max_body_bytes(64 * 1024);
    /// # let _ = layer;
    /// ```
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.with(|c| c.max_body_bytes = max)
    }

    /// The response statuses that are stored (default `[200]`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use axum::http::StatusCode;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache)
    ///     .statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
    /// # let _ = layer;
    /// ```
    pub fn statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.with(|c| c.statuses = statuses.into_iter().collect())
    }

    /// Requests with `Authorization` or `Cookie` are served from and stored in the
    /// cache, in entries of their own: the key includes a hash of those headers,
    /// keyed with `secret` (see [`CallerSecret`] for why and where it comes from;
    /// the credentials themselves are never stored), responses get
    /// `Vary: authorization, cookie`, and `Cache-Control: private` responses are
    /// stored. Without this, such requests bypass the cache.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ormcache::axum::{CallerSecret, ResponseCacheLayer};
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// // The same bytes in every process of the deployment, from its secret store.
    /// let secret = CallerSecret::new(b"32 bytes from the secret store!!").unwrap();
    /// let layer = ResponseCacheLayer::new(cache).keyed_by_caller(secret);
    /// # let _ = layer;
    /// ```
    pub fn keyed_by_caller(self, secret: CallerSecret) -> Self {
        self.with(|c| c.keyed_by_caller = Some(secret))
    }

    /// Tags of every stored response: [`Cache::invalidate_tag`] of any drops them.
    ///
    /// ```no_run
    /// use ormcache::{Cache, DistributedCache};
    /// # async fn demo(cache: DistributedCache) -> ormcache::Result<()> {
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache.clone()).tags(["products:list"]);
    /// cache.invalidate_tag("products:list").await?; // after a write
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn tags<S: Into<String>>(self, tags: impl IntoIterator<Item = S>) -> Self {
        self.with(|c| c.tags = tags.into_iter().map(Into::into).collect())
    }

    /// Whether query parameters are sorted by name in the key (default `true`):
    /// `?b=2&a=1` and `?a=1&b=2` then share an entry. Repeated names keep their
    /// order; nothing is percent-decoded. Turn it off for handlers that read the
    /// raw query string in order.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache).sort_query(false);
    /// # let _ = layer;
    /// ```
    pub fn sort_query(self, sort: bool) -> Self {
        self.with(|c| c.sort_query = sort)
    }

    /// Cluster-wide single flight (default `false`): on a cold key, one process runs
    /// the handler while the others wait for its stored response (up to 5 s, then
    /// run it themselves), through a Redis lock ([`ComputeOptions::lock`]). For
    /// expensive routes; it costs nothing on hits.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache).lock(true);
    /// # let _ = layer;
    /// ```
    pub fn lock(self, on: bool) -> Self {
        self.with(|c| c.lock = on)
    }

    /// Whether a 2xx `POST`, `PUT`, `PATCH` or `DELETE` through the layer invalidates
    /// its [`tags`](Self::tags) before its response is sent (default `true`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = ormcache::QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let layer = ormcache::axum::ResponseCacheLayer::new(cache)
    ///     .tags(["products:list"])
    ///     .invalidate_on_write(false);
    /// # let _ = layer;
    /// ```
    pub fn invalidate_on_write(self, on: bool) -> Self {
        self.with(|c| c.invalidate_on_write = on)
    }
}

impl<S, C: Cache> Layer<S> for ResponseCacheLayer<C> {
    type Service = ResponseCache<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache {
            inner,
            cache: self.cache.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of [`ResponseCacheLayer`].
#[derive(Clone)]
pub struct ResponseCache<S, C> {
    inner: S,
    cache: C,
    config: Arc<Config>,
}

impl<S, C> fmt::Debug for ResponseCache<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The future of [`ResponseCache`].
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    C: Cache,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let inner = take_ready(&mut self.inner);
        let cache = self.cache.clone();
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            match policy::plan(&req, &config) {
                Plan::Bypass => {
                    let method = req.method().clone();
                    let res = inner_call(inner, req).await?;
                    if is_write(&method) {
                        if res.status().is_success() && config.invalidate_on_write {
                            invalidate_tags(&cache, &config.tags).await;
                        }
                        Ok(res)
                    } else if method == http::Method::GET || method == http::Method::HEAD {
                        Ok(mark_miss(&config, res))
                    } else {
                        Ok(res)
                    }
                }
                Plan::Revalidate => inner_call(inner, req)
                    .await
                    .map(|res| mark_miss(&config, res)),
                Plan::Lookup { key, head: true } => head(inner, req, &cache, &key, &config).await,
                Plan::Lookup { key, head: false } => {
                    read_through(inner, req, cache, key, config).await
                }
            }
        })
    }
}

/// The service that was driven to readiness, leaving a clone in its place (the
/// usual tower idiom for services called from a `'static` future).
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

fn is_write(method: &http::Method) -> bool {
    use http::Method;
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

async fn invalidate_tags<C: Cache>(cache: &C, tags: &[String]) {
    for tag in tags {
        if let Err(e) = cache.invalidate_tag(tag).await {
            tracing::warn!(tag, error = %e, "response cache: tag invalidation after a write failed");
        }
    }
}

/// Calls the handler; its response with an axum body.
async fn inner_call<S, ReqBody, ResBody>(
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    Ok(inner.call(req).await?.map(Body::new))
}

/// A GET/HEAD response that did not come from the cache: `X-Cache: MISS`, and the
/// route's `Vary` if the handler set none.
fn mark_miss(config: &Config, mut res: Response<Body>) -> Response<Body> {
    let headers = res.headers_mut();
    headers.insert(policy::X_CACHE, HeaderValue::from_static("MISS"));
    if let Some(vary) = &config.vary_value
        && !headers.contains_key(header::VARY)
    {
        headers.insert(header::VARY, vary.clone());
    }
    res
}

fn if_none_match<B>(req: &Request<B>) -> Vec<HeaderValue> {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .cloned()
        .collect()
}

/// A HEAD: answered from the GET entry if there is a good one, else by the handler.
async fn head<S, C, ReqBody, ResBody>(
    inner: S,
    req: Request<ReqBody>,
    cache: &C,
    key: &str,
    config: &Config,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Cache,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    match cache.get::<StoredResponse>(key).await {
        Ok(Some(entry)) => {
            if let Some(res) = serve_hit(cache, key, &entry, true, &if_none_match(&req)) {
                return Ok(res);
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(key, error = %e, "response cache: lookup failed, passing through")
        }
    }
    inner_call(inner, req)
        .await
        .map(|res| mark_miss(config, res))
}

/// Replays a cached entry; `None` if it is corrupt (then it is deleted, in the
/// background, and the request is a miss).
fn serve_hit<C: Cache>(
    cache: &C,
    key: &str,
    entry: &StoredResponse,
    head: bool,
    if_none_match: &[HeaderValue],
) -> Option<Response<Body>> {
    let how = Render {
        hit: true,
        head,
        if_none_match,
    };
    match entry.render(how) {
        Ok(res) => Some(res),
        Err(corrupt) => {
            tracing::warn!(
                key,
                what = corrupt.0,
                "response cache: corrupt entry treated as a miss"
            );
            let cache = cache.clone();
            let key = key.to_owned();
            crate::tenant::spawn(async move {
                let _ = cache.delete(&key).await;
            });
            None
        }
    }
}

/// What the handler produced, as the request that ran it sees it.
enum Fresh<E> {
    /// A storable response (also stored).
    Stored(StoredResponse),
    /// A response that is not stored.
    Passed(Response<Body>),
    /// The handler service failed.
    Failed(E),
}

/// The loader's "nothing to store": waiting requests run the handler themselves.
#[derive(Debug)]
struct NotStored;

/// A GET: read through the cache with single flight.
async fn read_through<S, C, ReqBody, ResBody>(
    inner: S,
    req: Request<ReqBody>,
    cache: C,
    key: String,
    config: Arc<Config>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    C: Cache,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let inm = if_none_match(&req);
    // The handler and its request, for whichever of the loader or the pass-through
    // path needs them.
    let slot = Arc::new(Mutex::new(Some((inner, req))));
    let (tx, mut rx) = oneshot::channel::<Fresh<S::Error>>();
    let mut options = ComputeOptions::new()
        .tags(config.tags.iter().cloned())
        .lock(config.lock);
    if let Some(ttl) = config.ttl {
        options = options.ttl(ttl);
    }
    let loader = {
        let slot = Arc::clone(&slot);
        let config = Arc::clone(&config);
        move || async move {
            let Some((inner, req)) = take(&slot) else {
                return Err(NotStored);
            };
            match fetch(inner, req, &config).await {
                Fresh::Stored(entry) => {
                    let _ = tx.send(Fresh::Stored(entry.clone()));
                    Ok(entry)
                }
                other => {
                    let _ = tx.send(other);
                    Err(NotStored)
                }
            }
        }
    };
    let fill_cache = cache.clone();
    let fill_key = key.clone();
    let mut fill = Box::pin(async move {
        fill_cache
            .try_get_or_compute_with(&fill_key, options, loader)
            .await
    });
    // The handler runs inside `fill`, polled by this task. As soon as it has
    // produced its response, that response is sent and the store continues in the
    // background.
    let first = match future::select(&mut rx, &mut fill).await {
        Either::Left((fresh, _)) => Either::Left(fresh),
        Either::Right((outcome, _)) => Either::Right(outcome),
    };
    let outcome = match first {
        Either::Left(Ok(fresh)) => {
            crate::tenant::spawn(fill);
            return render_fresh(&config, fresh, &inm);
        }
        // The loader was dropped without running: a hit, or another request's
        // flight.
        Either::Left(Err(_)) => fill.await,
        Either::Right(outcome) => outcome,
    };
    if let Ok(fresh) = rx.try_recv() {
        return render_fresh(&config, fresh, &inm);
    }
    match outcome {
        Ok(entry) => {
            if let Some(res) = serve_hit(&cache, &key, &entry, false, &inm) {
                return Ok(res);
            }
        }
        // The flight this request joined produced nothing storable.
        Err(ComputeError::Load(_)) => {}
        Err(ComputeError::Cache(e)) => {
            tracing::warn!(key, error = %e, "response cache: not cached (invalid configuration)");
        }
    }
    match take(&slot) {
        Some((inner, req)) => inner_call(inner, req)
            .await
            .map(|res| mark_miss(&config, res)),
        None => Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response cache: the handler's response was lost",
        )),
    }
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().ok().and_then(|mut s| s.take())
}

/// The response of the request whose handler ran.
fn render_fresh<E>(
    config: &Config,
    fresh: Fresh<E>,
    inm: &[HeaderValue],
) -> Result<Response<Body>, E> {
    match fresh {
        Fresh::Stored(entry) => {
            let how = Render {
                hit: false,
                head: false,
                if_none_match: inm,
            };
            Ok(entry.render(how).unwrap_or_else(|_| {
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "response cache: the handler's response could not be replayed",
                )
            }))
        }
        Fresh::Passed(res) => Ok(mark_miss(config, res)),
        Fresh::Failed(e) => Err(e),
    }
}

/// Runs the handler and, if its response may be stored, buffers its body.
async fn fetch<S, ReqBody, ResBody>(
    mut inner: S,
    req: Request<ReqBody>,
    config: &Config,
) -> Fresh<S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let res = match inner.call(req).await {
        Ok(res) => res,
        Err(e) => return Fresh::Failed(e),
    };
    let size = res.body().size_hint().exact();
    let fits = size.is_some_and(|n| n <= config.max_body_bytes as u64);
    if !fits || !policy::storable(res.status(), res.headers(), config) {
        return Fresh::Passed(res.map(Body::new));
    }
    let (parts, body) = res.into_parts();
    match Limited::new(body, config.max_body_bytes).collect().await {
        Ok(collected) => Fresh::Stored(StoredResponse::new(
            parts.status,
            &parts.headers,
            collected.to_bytes(),
            config.vary_value.as_ref(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "response cache: the handler's body failed");
            Fresh::Passed(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the response body failed",
            ))
        }
    }
}
