//! Metrics (feature `metrics`): the counters, gauges and histograms the caches
//! report through the `metrics` facade, read back from a recorder on a
//! `metrics-util` registry, after operations against real `redis-server` processes.
//!
//! The recorder is global (handles are registered when a cache is built, on
//! whatever task or thread that is), so each test isolates itself by its own key
//! prefix, which is the `cache` label of everything it counts. (`metrics-util`'s
//! `DebuggingRecorder` resets every value it reports, so tests running side by
//! side would read each other's resets; this recorder only reads.)
#![cfg(feature = "metrics")]

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use ormcache::{BreakerConfig, Cache, ComputeOptions, DistributedCache, HybridCache, QueryCache};
use redis::AsyncCommands;
use support::{RedisServer, config};

struct TestRecorder(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The registry behind the recorder, installed once for the whole test binary.
fn registry() -> &'static Registry<Key, AtomicStorage> {
    static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        metrics::set_global_recorder(TestRecorder(Arc::clone(&registry))).unwrap();
        registry
    })
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(n, v)| key.labels().any(|l| l.key() == *n && l.value() == *v))
}

/// The metrics named `name` whose labels include all of `labels`: counters and
/// gauges summed, histograms as their sample count.
fn read(name: &str, labels: &[(&str, &str)]) -> f64 {
    use std::sync::atomic::Ordering::SeqCst;
    let r = registry();
    let mut total = 0.0;
    for (k, c) in r.get_counter_handles() {
        if matches(&k, name, labels) {
            total += c.load(SeqCst) as f64;
        }
    }
    for (k, g) in r.get_gauge_handles() {
        if matches(&k, name, labels) {
            total += f64::from_bits(g.load(SeqCst));
        }
    }
    for (k, h) in r.get_histogram_handles() {
        if matches(&k, name, labels) {
            total += h.data().len() as f64;
        }
    }
    total
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn l2_counts_hits_misses_sets_deletes_decode_errors_and_round_trips() {
    registry();
    let server = RedisServer::start();
    let p = "m_l2";
    let cache = DistributedCache::create(config(&server, p)).await.unwrap();
    let l2 = |name| read(name, &[("cache", p), ("level", "l2")]);

    cache.set("a", 1u32, None).await.unwrap();
    cache.set("none", None::<u32>, None).await.unwrap();
    assert_eq!(cache.get::<u32>("a").await.unwrap().as_deref(), Some(&1));
    assert_eq!(cache.get::<u32>("missing").await.unwrap(), None);
    assert_eq!(
        cache.get::<Option<u32>>("none").await.unwrap().as_deref(),
        Some(&None)
    );
    assert!(cache.delete("a").await.unwrap());
    assert!(!cache.delete("a").await.unwrap());
    let mut raw = server.connection().await;
    let _: () = raw.set("m_l2:bad", "{not json").await.unwrap();
    assert_eq!(cache.get::<u32>("bad").await.unwrap(), None);

    assert_eq!(l2("ormcache_sets_total"), 2.0);
    assert_eq!(l2("ormcache_hits_total"), 2.0);
    assert_eq!(l2("ormcache_negative_hits_total"), 1.0);
    // The plain miss and the undecodable entry.
    assert_eq!(l2("ormcache_misses_total"), 2.0);
    assert_eq!(l2("ormcache_deletes_total"), 1.0);
    assert_eq!(
        read(
            "ormcache_errors_total",
            &[("cache", p), ("level", "l2"), ("kind", "decode")]
        ),
        1.0
    );
    assert_eq!(read("ormcache_decode_errors_total", &[("cache", p)]), 1.0);
    // Four GETs, one round trip each, and the eviction of the undecodable entry
    // (a conditional delete, made for the `get`).
    assert_eq!(
        read(
            "ormcache_redis_round_trip_seconds",
            &[("cache", p), ("op", "get")]
        ),
        5.0
    );
    assert!(
        read(
            "ormcache_redis_round_trip_seconds",
            &[("cache", p), ("op", "set")]
        ) >= 2.0
    );
    assert_eq!(read("ormcache_breaker_state", &[("cache", p)]), 0.0);
}

#[tokio::test]
async fn l1_counts_hits_misses_mismatches_sets_deletes_and_evictions_by_cause() {
    registry();
    // A QueryCache on its own reports as `cache="local"` (only this test makes one).
    let l1 = QueryCache::new(10, Duration::from_secs(60)).unwrap();
    let m = |name| read(name, &[("cache", "local"), ("level", "l1")]);
    l1.set_sync("a", 1u32, None).unwrap();
    assert_eq!(l1.get_sync::<u32>("a").as_deref(), Some(&1));
    assert_eq!(l1.get_sync::<u32>("b"), None);
    assert_eq!(l1.get_sync::<String>("a"), None); // another type
    assert!(l1.delete_sync("a"));
    assert!(!l1.delete_sync("a"));
    l1.set_sync("none", None::<u32>, None).unwrap();
    assert_eq!(l1.get_sync::<Option<u32>>("none").as_deref(), Some(&None));
    assert_eq!(m("ormcache_hits_total"), 2.0);
    assert_eq!(m("ormcache_negative_hits_total"), 1.0);
    assert_eq!(m("ormcache_misses_total"), 2.0);
    assert_eq!(m("ormcache_sets_total"), 2.0);
    assert_eq!(m("ormcache_deletes_total"), 1.0);
    assert_eq!(
        read(
            "ormcache_errors_total",
            &[("cache", "local"), ("level", "l1"), ("kind", "decode")]
        ),
        1.0
    );
    assert_eq!(
        read(
            "ormcache_l1_evictions_total",
            &[("cache", "local"), ("cause", "explicit")]
        ),
        1.0
    );

    for i in 0..200u32 {
        l1.set_sync(&format!("k{i}"), i, None).unwrap();
    }
    let size = l1.get_stats_sync().size;
    assert!(size <= 10, "{size}");
    assert_eq!(
        read("ormcache_l1_entries", &[("cache", "local")]),
        size as f64
    );
    assert!(
        read(
            "ormcache_l1_evictions_total",
            &[("cache", "local"), ("cause", "size")]
        ) >= 190.0
    );
}

#[tokio::test]
async fn breaker_transitions_and_connection_errors_on_a_killed_server() {
    registry();
    let server = RedisServer::start();
    let p = "m_brk";
    let cache = DistributedCache::create(
        config(&server, p)
            .socket_timeout(Duration::from_millis(100))
            .circuit_breaker(
                BreakerConfig::new()
                    .threshold(2)
                    .cooldown(Duration::from_secs(60)),
            ),
    )
    .await
    .unwrap();
    cache.set("k", 1u32, None).await.unwrap();
    server.kill();
    for _ in 0..5 {
        assert!(cache.get::<u32>("k").await.is_err());
    }
    let errors = |kind| {
        read(
            "ormcache_errors_total",
            &[("cache", p), ("level", "l2"), ("kind", kind)],
        )
    };
    assert!(
        errors("connection") + errors("timeout") >= 2.0,
        "connection {} timeout {}",
        errors("connection"),
        errors("timeout")
    );
    assert!(errors("circuit_open") >= 1.0);
    assert_eq!(
        read(
            "ormcache_breaker_transitions_total",
            &[("cache", p), ("to", "open")]
        ),
        1.0
    );
    assert_eq!(read("ormcache_breaker_state", &[("cache", p)]), 2.0);
}

#[tokio::test]
async fn loader_runs_errors_and_lock_waits() {
    registry();
    let server = RedisServer::start();
    let p = "m_memo";
    let a = DistributedCache::create(config(&server, p)).await.unwrap();
    let b = DistributedCache::create(config(&server, p)).await.unwrap();
    let opts = ComputeOptions::new().lock(true);
    let slow = {
        let a = a.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            a.get_or_compute_with("report", opts, || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                7u32
            })
            .await
            .unwrap()
        })
    };
    // `a` holds the lock: `b` waits for its value instead of loading.
    eventually("a's lease", || {
        read("ormcache_loader_runs_total", &[("cache", p)]) == 1.0
    })
    .await;
    let got = b
        .get_or_compute_with("report", opts, || async { 8u32 })
        .await
        .unwrap();
    assert_eq!(*got, 7);
    assert_eq!(*slow.await.unwrap(), 7);
    assert_eq!(read("ormcache_loader_runs_total", &[("cache", p)]), 1.0);
    assert_eq!(read("ormcache_lock_waits_total", &[("cache", p)]), 1.0);
    assert_eq!(read("ormcache_lock_wait_seconds", &[("cache", p)]), 1.0);

    let failed = a
        .try_get_or_compute("broken", None, || async { Err::<u32, _>("db down") })
        .await;
    assert!(failed.is_err());
    assert_eq!(read("ormcache_loader_runs_total", &[("cache", p)]), 2.0);
    assert_eq!(read("ormcache_loader_errors_total", &[("cache", p)]), 1.0);
}

async fn hybrid(server: &RedisServer, prefix: &str) -> HybridCache {
    let l1 = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    let l2 = DistributedCache::create(config(server, prefix))
        .await
        .unwrap();
    let c = HybridCache::builder(l1, l2)
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(c.wait_coherent(Duration::from_secs(5)).await);
    c
}

#[tokio::test]
async fn hybrid_reports_l1_under_its_prefix_and_invalidations_between_instances() {
    registry();
    let server = RedisServer::start();
    let p = "m_hyb";
    let a = hybrid(&server, p).await;
    let b = hybrid(&server, p).await;
    // (Both instances share the labels: a gauge holds the last value either set.)
    assert_eq!(read("ormcache_coherent", &[("cache", p)]), 1.0);

    a.set("k", 1u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&1)); // L2, fills L1
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&1)); // L1
    let l1 = |name| read(name, &[("cache", p), ("level", "l1")]);
    assert!(l1("ormcache_hits_total") >= 1.0);
    // (Under the fleet protocol the writer keeps no copy of what it wrote.)
    assert!(l1("ormcache_sets_total") >= 1.0, "b's fill");
    let received_before = read("ormcache_invalidations_received_total", &[("cache", p)]);

    a.set("k", 2u32, None).await.unwrap();
    // Confirmed: b applied it before `set` returned.
    assert!(read("ormcache_invalidations_received_total", &[("cache", p)]) > received_before);
    assert!(read("ormcache_invalidations_sent_total", &[("cache", p)]) >= 2.0);
    assert!(read("ormcache_invalidations_confirmed_total", &[("cache", p)]) >= 1.0);
    assert!(read("ormcache_invalidation_lag_seconds", &[("cache", p)]) >= 1.0);
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&2));
    // b, which held the key, acknowledged: a heard it (the peers gauge is set with
    // the heartbeats).
    eventually("peers", || read("ormcache_peers", &[("cache", p)]) >= 1.0).await;
    // Each instance flushed its L1 once when its stream came up.
    assert!(read("ormcache_l1_flushes_total", &[("cache", p)]) >= 2.0);
    let _: Arc<u32> = b.get("k").await.unwrap().unwrap();
}

/// `HybridCache::get_l1` (the Python package's hit without a runtime) counts a hit
/// of a cached `None` as `get` does: a hit and a negative hit.
#[tokio::test]
async fn get_l1_counts_a_negative_hit_as_get_does() {
    registry();
    let server = RedisServer::start();
    let p = "m_neg";
    let c = hybrid(&server, p).await;
    let l1 = |name| read(name, &[("cache", p), ("level", "l1")]);
    c.l1().set_sync("none", None::<u32>, None).unwrap();
    let hit = c.get_l1::<Option<u32>>("none").unwrap();
    assert_eq!(*hit, None);
    assert_eq!(l1("ormcache_hits_total"), 1.0);
    assert_eq!(l1("ormcache_negative_hits_total"), 1.0);
    let hit = c.get::<Option<u32>>("none").await.unwrap().unwrap();
    assert_eq!(*hit, None);
    assert_eq!(l1("ormcache_hits_total"), 2.0);
    assert_eq!(l1("ormcache_negative_hits_total"), 2.0);
    c.close().await.unwrap();
}
