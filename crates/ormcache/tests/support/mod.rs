//! Shared helpers for the integration tests: real redis-server processes come from
//! `ormcache-testing`.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

pub use ormcache_testing::{RedisServer, ServerOptions};

pub mod chaos;

use ormcache::{Cache, ComputeOptions, DistributedCache, DistributedConfig};

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

/// `CLIENT KILL TYPE pubsub` through `raw`: every subscription connection of the
/// server drops (as on a network blip); how many there were.
pub async fn kill_pubsub(raw: &mut impl redis::aio::ConnectionLike) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(raw)
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

/// HTTP helpers of the axum tests: a server on a free port, a client, counted
/// handlers.
#[cfg(feature = "axum")]
pub mod web {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use ormcache::axum::ResponseCacheLayer;
    use ormcache::{AnyCache, Cache, DistributedCache, HybridCache, QueryCache};

    use super::{RedisServer, config};

    /// Serves `app` on a free port; its base URL.
    pub async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A cache on `server` with a generous command timeout (the machine is loaded).
    pub async fn redis_cache(server: &RedisServer, prefix: &str) -> DistributedCache {
        DistributedCache::create(config(server, prefix).socket_timeout(Duration::from_secs(2)))
            .await
            .unwrap()
    }

    #[derive(Debug)]
    pub struct Reply {
        pub status: StatusCode,
        pub headers: HeaderMap,
        pub body: String,
    }

    impl Reply {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }

        pub fn x_cache(&self) -> &str {
            self.header("x-cache").unwrap_or("<none>")
        }
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn fetch(url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = reqwest::Client::new().get(url);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        send(req).await
    }

    /// A counter of handler runs.
    #[derive(Clone, Default)]
    pub struct Runs(pub Arc<AtomicUsize>);

    impl Runs {
        pub fn bump(&self) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst) + 1
        }

        pub fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A GET route at `path` whose handler (counted in `runs`) is `handler`, cached
    /// by `layer`.
    pub fn counted<C, F, Fut>(
        runs: &Runs,
        path: &str,
        layer: ResponseCacheLayer<C>,
        handler: F,
    ) -> Router
    where
        C: Cache,
        F: Fn(HeaderMap) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output: IntoResponse> + Send + 'static,
    {
        let runs = runs.clone();
        Router::new()
            .route(
                path,
                get(move |headers: HeaderMap| {
                    runs.bump();
                    handler(headers)
                }),
            )
            .route_layer(layer)
    }

    /// A route at `/r` answering `body` (counted), cached by `layer`.
    pub fn counted_route<C: Cache>(
        runs: &Runs,
        body: &'static str,
        layer: ResponseCacheLayer<C>,
    ) -> Router {
        counted(runs, "/r", layer, move |_| async move { body })
    }

    /// Serves [`counted_route`] with a default layer on `cache`; the route's URL.
    pub async fn serve_r<C: Cache>(runs: &Runs, body: &'static str, cache: C) -> String {
        let base = serve(counted_route(runs, body, ResponseCacheLayer::new(cache))).await;
        format!("{base}/r")
    }

    /// Polls until `f` holds, up to a generous "not a hang" bound.
    pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One cache of each kind on `server`.
    pub async fn every_kind(server: &RedisServer) -> Vec<AnyCache> {
        let hybrid = HybridCache::builder(
            QueryCache::new(1_000, Duration::from_secs(60)).unwrap(),
            redis_cache(server, "hyb").await,
        )
        .build()
        .unwrap();
        assert!(hybrid.wait_coherent(Duration::from_secs(10)).await);
        vec![
            QueryCache::new(1_000, Duration::from_secs(60))
                .unwrap()
                .into(),
            redis_cache(server, "app").await.into(),
            hybrid.into(),
        ]
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

/// The no-stale-fill check: a `get_or_compute_with` of `key` whose loader reads
/// "old" (the row before a write) and waits; meanwhile `invalidate` runs (the write's
/// invalidation); then the loader returns. The caller still gets "old", but the
/// cache must not have stored it.
pub async fn assert_invalidation_during_a_load_wins<C: Cache>(
    label: &str,
    cache: &C,
    key: &str,
    options: ComputeOptions,
    invalidate: impl std::future::Future<Output = ()>,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let loading = {
        let (cache, key) = (cache.clone(), key.to_string());
        tokio::spawn(async move {
            cache
                .get_or_compute_with(&key, options, || async move {
                    let old_row = "old".to_string(); // read before the write
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    old_row
                })
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
    invalidate.await;
    release_tx.send(()).unwrap();
    assert_eq!(
        *loading.await.unwrap(),
        "old",
        "{label}: the caller still gets its value"
    );
    assert_eq!(
        cache.get::<String>(key).await.unwrap(),
        None,
        "{label}: a value read before the invalidation was stored"
    );
}

/// Without an invalidation, `get_or_compute` stores what it loaded.
pub async fn assert_a_load_is_stored<C: Cache>(label: &str, cache: &C) {
    let v = cache
        .get_or_compute("user:plain", None, || async { "v".to_string() })
        .await
        .unwrap();
    assert_eq!(*v, "v");
    assert_eq!(
        cache
            .get::<String>("user:plain")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("v"),
        "{label}"
    );
}

/// Polls `op` with the caller's task context until it completes or has returned
/// `Pending` `n` times; then drops it. Its output if it completed.
pub async fn poll_then_drop<F: std::future::Future>(op: F, n: usize) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    let mut pending = 0;
    std::future::poll_fn(|cx| match op.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => {
            pending += 1;
            if pending >= n {
                std::task::Poll::Ready(None)
            } else {
                std::task::Poll::Pending
            }
        }
    })
    .await
}

/// How many times the server ran `command` (lower case), from `INFO commandstats`.
pub async fn command_calls(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    let head = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}
