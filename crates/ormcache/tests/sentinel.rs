//! Redis Sentinel against real processes: one master, one replica, three
//! Sentinels. The cache finds the master through the Sentinels and follows a
//! failover (graceful `SENTINEL FAILOVER`, then a killed master) under load,
//! without a restart; `HybridCache` recovers so that no stale L1 entry survives.
#![cfg(feature = "sentinel")]
#![allow(clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ormcache::{DistributedCache, ErrorKind, HybridCache, QueryCache};
use ormcache_testing::RedisSentinels;
use redis::AsyncCommands;

async fn l2(url: &str, prefix: &str) -> DistributedCache {
    DistributedCache::builder()
        .redis_url(url)
        .key_prefix(prefix)
        .socket_timeout(Duration::from_millis(250))
        .build()
        .await
        .unwrap()
}

async fn hybrid(url: &str, prefix: &str) -> HybridCache {
    let h = HybridCache::builder(
        QueryCache::new(1000, Duration::from_secs(60)).unwrap(),
        l2(url, prefix).await,
    )
    .heartbeat_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    assert!(
        h.wait_coherent(Duration::from_secs(5)).await,
        "never coherent"
    );
    h
}

#[tokio::test]
async fn the_master_is_found_through_the_sentinels() {
    let sentinels = RedisSentinels::start(Some("s3cret"));
    let c = l2(&sentinels.url(), "found").await;
    c.set("k", 7u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap().as_deref(), Some(&7));
    let mut master = sentinels
        .client(sentinels.master_port())
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: Option<String> = master.get("found:k").await.unwrap();
    assert_eq!(raw.as_deref(), Some("7"));
    assert!(!format!("{c:?}").contains("s3cret"));
    // A service name the Sentinels do not know is an error naming it.
    let url = sentinels.url().replace("/ormcache", "/nosuchservice");
    let err = DistributedCache::builder()
        .redis_url(&url)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nosuchservice"), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// Load from several tasks on a plain `DistributedCache`; counts successes and
/// errors and remembers the last success.
struct Load {
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cache: &DistributedCache) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..8)
            .map(|t| {
                let (cache, ok, errors, stop) =
                    (cache.clone(), ok.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Relaxed) {
                        i += 1;
                        let key = format!("load:{t}:{}", i % 50);
                        let r = match i % 2 {
                            0 => cache.set(&key, i, None).await.map(drop),
                            _ => cache.get::<u64>(&key).await.map(drop),
                        };
                        match r {
                            Ok(()) => ok.fetch_add(1, Relaxed),
                            Err(_) => errors.fetch_add(1, Relaxed),
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            ok,
            errors,
            stop,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.ok.load(Relaxed), self.errors.load(Relaxed))
    }
}

/// Waits until a write through `cache` succeeds and lands on the master on
/// `master_port`; how long that took from `since`, and the errors on the way.
async fn resumed(
    sentinels: &RedisSentinels,
    cache: &DistributedCache,
    master_port: u16,
    since: Instant,
) -> (Duration, Vec<ErrorKind>) {
    let mut errors = Vec::new();
    let mut master = sentinels
        .client(master_port)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0u64.. {
        assert!(
            Instant::now() < deadline,
            "operations did not resume within 30 s; errors: {errors:?}\n{}",
            sentinels.logs()
        );
        match cache.set("probe", i, None).await {
            Ok(()) => {
                let on_master: Option<u64> = master.get("sentinel:probe").await.unwrap();
                if on_master == Some(i) {
                    return (since.elapsed(), errors);
                }
            }
            Err(e) => {
                if errors.last() != Some(&e.kind()) {
                    errors.push(e.kind());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// `h` recovers (flushes its L1) after the failover: an entry it holds that the
/// new master has changed without any message is not served again.
async fn no_stale_entry_survives(
    sentinels: &RedisSentinels,
    h: &HybridCache,
    key: &str,
    flushes_before: u64,
    new_master: u16,
) {
    // Changed on the new master behind every instance's back.
    let mut master = sentinels
        .client(new_master)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = master.set(format!("sentinel:{key}"), "99").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = h.get_stats().await.unwrap();
        if stats.coherence.flushes > flushes_before && stats.coherence.coherent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the failover: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.get::<u32>(key).await.unwrap().as_deref(), Some(&99));
}

#[tokio::test]
async fn failovers_are_followed_under_load_without_a_restart() {
    let sentinels = RedisSentinels::start(None);
    let url = sentinels.url();
    let cache = l2(&url, "sentinel").await;
    let writer = hybrid(&url, "sentinel").await;
    let reader = hybrid(&url, "sentinel").await;
    let load = Load::start(&cache);

    for (round, how) in ["SENTINEL FAILOVER", "SIGKILL of the master"]
        .into_iter()
        .enumerate()
    {
        let key = format!("stale{round}");
        writer.set(&key, 1u32, None).await.unwrap();
        assert_eq!(reader.get::<u32>(&key).await.unwrap().as_deref(), Some(&1));
        assert!(reader.l1().exists_sync(&key));
        let flushes_before = reader.get_stats().await.unwrap().coherence.flushes;
        let old = sentinels.master_port();
        let errors_before = load.errors.load(Relaxed);
        let started = Instant::now();
        if round == 0 {
            sentinels.failover();
        } else {
            sentinels.server(old).kill();
        }
        let new = sentinels.wait_for_new_master(old);
        let promoted = started.elapsed();
        let (resume, kinds) = resumed(&sentinels, &cache, new, started).await;
        println!(
            "{how}: master {old} -> {new}; promoted after {promoted:?}, operations resumed \
             after {resume:?}; errors seen by the load: {}, by the probe: {kinds:?}",
            load.errors.load(Relaxed) - errors_before
        );
        no_stale_entry_survives(&sentinels, &reader, &key, flushes_before, new).await;
    }
    let (ok, errors) = load.stop().await;
    println!("load: {ok} operations succeeded, {errors} failed");
    assert!(ok > 0);
    // The load is served by the last master: nothing was restarted.
    assert_eq!(
        cache.get::<u32>("stale1").await.unwrap().as_deref(),
        Some(&99)
    );
}
