//! `get_or_compute` (single flight, cluster lock, leases, early refresh, fail open)
//! and tags, against real `redis-server` processes.
#![allow(clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ormcache::{Cache, ComputeError, ComputeOptions, DistributedCache, HybridCache, QueryCache};
use redis::AsyncCommands;
use support::{RedisServer, command_calls, config};

async fn distributed(server: &RedisServer, prefix: &str) -> DistributedCache {
    DistributedCache::create(config(server, prefix).socket_timeout(Duration::from_secs(2)))
        .await
        .unwrap()
}

async fn hybrid(server: &RedisServer, prefix: &str) -> HybridCache {
    let c = HybridCache::builder(
        QueryCache::new(10_000, Duration::from_secs(60)).unwrap(),
        distributed(server, prefix).await,
    )
    .heartbeat_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    assert!(c.wait_coherent(Duration::from_secs(5)).await);
    c
}

/// 1,000 concurrent cold calls run the loader once.
async fn stampede<C: Cache>(cache: &C, key: &str) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, runs, key) = (cache.clone(), Arc::clone(&runs), key.to_string());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute(&key, None, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    "loaded".to_string()
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(*t.await.unwrap(), "loaded");
    }
    runs.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    let server = RedisServer::start();
    assert_eq!(
        stampede(&QueryCache::new(100, Duration::from_secs(60)).unwrap(), "k").await,
        1
    );
    assert_eq!(stampede(&distributed(&server, "d").await, "k").await, 1);
    assert_eq!(stampede(&hybrid(&server, "h").await, "k").await, 1);
    // And the value was stored: the next call does not load.
    let c = distributed(&server, "d").await;
    let again = c
        .get_or_compute("k", None, || async { "reloaded".to_string() })
        .await
        .unwrap();
    assert_eq!(*again, "loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_errors_reach_every_waiter_and_are_not_cached() {
    let server = RedisServer::start();
    for cache in [
        ormcache::AnyCache::from(QueryCache::new(100, Duration::from_secs(60)).unwrap()),
        ormcache::AnyCache::from(distributed(&server, "d").await),
        ormcache::AnyCache::from(hybrid(&server, "h").await),
    ] {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tasks.push(tokio::spawn(async move {
                cache
                    .try_get_or_compute::<String, String, _, _>("user:1", None, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err("database is down".to_string())
                    })
                    .await
            }));
        }
        let mut errors = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Err(ComputeError::Load(e)) => errors.push(e),
                other => panic!("{} expected a load error, got {other:?}", cache.kind()),
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{}", cache.kind());
        assert!(
            errors
                .iter()
                .all(|e| Arc::ptr_eq(e, &errors[0]) && **e == "database is down")
        );
        assert_eq!(
            cache.get::<String>("user:1").await.unwrap(),
            None,
            "{}: an error was cached",
            cache.kind()
        );
        // The next call loads again and succeeds.
        let v = cache
            .get_or_compute("user:1", None, || async { "ok".to_string() })
            .await
            .unwrap();
        assert_eq!(*v, "ok");
    }
}

/// A loader that read the database before a write must not store what it read
/// once the key was invalidated meanwhile (delete, clear, pattern clear, tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_during_a_load_wins() {
    let server = RedisServer::start();
    let other_process = hybrid(&server, "h").await;
    let caches = [
        (
            "local",
            ormcache::AnyCache::from(QueryCache::new(100, Duration::from_secs(60)).unwrap()),
        ),
        (
            "distributed",
            ormcache::AnyCache::from(distributed(&server, "d").await),
        ),
        (
            "hybrid",
            ormcache::AnyCache::from(hybrid(&server, "h").await),
        ),
    ];
    for (name, cache) in &caches {
        for how in ["delete", "clear", "clear_pattern", "delete_elsewhere"] {
            if how == "delete_elsewhere" && *name != "hybrid" {
                continue;
            }
            let key = format!("user:{how}");
            let invalidate = async {
                // The write lands in the database, then the cache is invalidated.
                match how {
                    "delete" => {
                        cache.delete(&key).await.unwrap();
                    }
                    "clear" => {
                        cache.clear().await.unwrap();
                    }
                    "clear_pattern" => {
                        cache.clear_pattern("user:*").await.unwrap();
                    }
                    _ => {
                        other_process.delete(&key).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let label = format!("{name}/{how}");
            support::assert_invalidation_during_a_load_wins(
                &label,
                cache,
                &key,
                ComputeOptions::new(),
                invalidate,
            )
            .await;
        }
        support::assert_a_load_is_stored(name, cache).await;
    }
}

/// Steady reads of a hot key across its expiry: with early refresh the key never
/// expires, so no reader misses (stats count one miss: the first load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_keeps_hot_keys_from_expiring() {
    let server = RedisServer::start();
    let local = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    let redis = distributed(&server, "d").await;
    for cache in [
        ormcache::AnyCache::from(local.clone()),
        ormcache::AnyCache::from(redis.clone()),
    ] {
        let runs = Arc::new(AtomicUsize::new(0));
        let opts = || {
            ComputeOptions::new()
                .ttl(Duration::from_millis(400))
                .refresh_ahead(0.5)
        };
        let deadline = Instant::now() + Duration::from_millis(2000);
        let mut reads = 0;
        while Instant::now() < deadline {
            let runs = Arc::clone(&runs);
            let v = cache
                .get_or_compute_with("hot", opts(), || async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n
                })
                .await
                .unwrap();
            assert!(*v >= 1);
            reads += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let runs = runs.load(Ordering::SeqCst);
        println!("{}: {reads} reads, {runs} loads", cache.kind());
        assert!(
            runs >= 3,
            "{}: the key was never refreshed ({runs} loads)",
            cache.kind()
        );
        let misses = match &cache {
            ormcache::AnyCache::Local(c) => c.get_stats_sync().misses,
            ormcache::AnyCache::Distributed(c) => c.get_stats().await.unwrap().local.misses,
            _ => unreachable!(),
        };
        assert_eq!(
            misses,
            1,
            "{}: a reader found the key expired",
            cache.kind()
        );
    }
}

#[tokio::test]
async fn fails_open_when_redis_is_down() {
    let server = RedisServer::start();
    let c =
        DistributedCache::create(config(&server, "d").socket_timeout(Duration::from_millis(100)))
            .await
            .unwrap();
    server.kill();
    let v = c
        .get_or_compute("k", None, || async { 42u32 })
        .await
        .unwrap();
    assert_eq!(*v, 42);
    let v = c
        .get_or_compute_with("k", ComputeOptions::new().lock(true), || async { 43u32 })
        .await
        .unwrap();
    assert_eq!(*v, 43);
    assert!(c.get_stats().await.is_err());
    // Invalid input is still an error.
    assert!(
        c.get_or_compute("", None, || async { 1u8 })
            .await
            .unwrap_err()
            .is_invalid_input()
    );
}

#[tokio::test]
async fn tags_invalidate_exactly_their_entries() {
    let server = RedisServer::start();
    let c = distributed(&server, "d").await;
    let mut raw = server.connection().await;
    // 100,000 unrelated keys, written raw in pipelines.
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.set(format!("d:plain:{}", chunk * 1000 + i), "1")
                .ignore();
        }
        let _: () = pipe.query_async(&mut raw).await.unwrap();
    }
    // 10,000 tagged entries, 50 writers.
    let mut tasks = Vec::new();
    for w in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..10_000).step_by(50) {
                c.set_with_tags(&format!("grp:{i}"), i, None, &["grp"])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    c.set_with_tags("other", 1u32, None, &["other-tag"])
        .await
        .unwrap();
    assert_eq!(c.get::<u32>("grp:7").await.unwrap().as_deref(), Some(&7));

    let start = Instant::now();
    c.invalidate_tag("grp").await.unwrap();
    println!(
        "invalidate_tag of 10,000 among 110,000 keys: {:?}",
        start.elapsed()
    );

    let keys: Vec<String> = (0..10_000).map(|i| format!("grp:{i}")).collect();
    for chunk in keys.chunks(1000) {
        let got = c.get_many::<u32, _>(chunk).await.unwrap();
        assert!(got.iter().all(Option::is_none), "a tagged entry survived");
    }
    assert_eq!(c.get::<u32>("other").await.unwrap().as_deref(), Some(&1));
    let mut cursor = 0u64;
    let mut plain = 0usize;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("d:plain:*")
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut raw)
            .await
            .unwrap();
        plain += batch.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(plain, 100_000, "unrelated keys were touched");
    // New entries under the tag are valid again.
    c.set_with_tags("grp:1", 1u32, None, &["grp"])
        .await
        .unwrap();
    assert_eq!(c.get::<u32>("grp:1").await.unwrap().as_deref(), Some(&1));
    // A missing token (evicted, flushed) makes the entries misses, never hits.
    let _: () = raw.del("d:__oc:tag:grp").await.unwrap();
    assert_eq!(c.get::<u32>("grp:1").await.unwrap(), None);
}

#[tokio::test]
async fn tags_evict_other_processes_l1_copies() {
    let server = RedisServer::start();
    let a = hybrid(&server, "h").await;
    let b = hybrid(&server, "h").await;
    a.set_with_tags("user:1", 1u32, None, &["users"])
        .await
        .unwrap();
    a.set("post:1", 2u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("user:1").await.unwrap().as_deref(), Some(&1));
    b.get::<u32>("post:1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.l1().exists_sync("user:1") {
        assert!(Instant::now() < deadline);
        b.get::<u32>("user:1").await.unwrap();
    }
    a.invalidate_tag("users").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.l1().exists_sync("user:1") {
        assert!(
            Instant::now() < deadline,
            "tag invalidation did not reach b"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.get::<u32>("user:1").await.unwrap(), None);
    assert_eq!(b.get::<u32>("post:1").await.unwrap().as_deref(), Some(&2));
    // The L1 alone supports tags too.
    let l1 = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    Cache::set_with_tags(&l1, "x", 1u8, None, &["t"])
        .await
        .unwrap();
    Cache::invalidate_tag(&l1, "t").await.unwrap();
    assert!(!l1.exists_sync("x"));
}

// ---- cluster-wide single flight across OS processes --------------------------

/// A peer process of `lock_runs_the_loader_once_across_three_processes`, which
/// runs it (`--ignored --exact lock_peer`); not a test of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a peer process: lock_runs_the_loader_once_across_three_processes runs it"]
async fn lock_peer() {
    let url = std::env::var("ORMCACHE_LOCK_PEER_URL")
        .expect("lock_peer is started by lock_runs_the_loader_once_across_three_processes, with ORMCACHE_LOCK_PEER_URL set");
    let c = DistributedCache::create(
        ormcache::DistributedConfig::new()
            .redis_url(&url)
            .key_prefix("lock"),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute_with("report", ComputeOptions::new().lock(true), || async move {
                // The "database query": counted in Redis, across processes.
                let client = redis::Client::open(url).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: i64 = conn.incr("lock-test:loader-runs", 1).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "report".to_string()
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(*t.await.unwrap(), "report");
    }
}

#[test]
fn lock_runs_the_loader_once_across_three_processes() {
    let server = RedisServer::start();
    let mut peers: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "lock_peer",
                    "--test-threads",
                    "1",
                    "--quiet",
                ])
                .env("ORMCACHE_LOCK_PEER_URL", server.url())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in &mut peers {
        assert!(p.wait().unwrap().success(), "a peer failed");
    }
    let mut conn = server.client().get_connection().unwrap();
    let runs: i64 = redis::Commands::get(&mut conn, "lock-test:loader-runs").unwrap();
    assert_eq!(
        runs, 1,
        "3 processes x 100 tasks ran the loader {runs} times"
    );
}

#[tokio::test]
async fn a_dead_lock_holder_is_taken_over() {
    let server = RedisServer::start();
    let c = distributed(&server, "d").await;
    // A process took the lease and died: its lease expires after 300 ms.
    let mut raw = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg("d:__oc:lease:report")
        .arg("dead-holder")
        .arg("PX")
        .arg(300)
        .query_async(&mut raw)
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let v = c
        .get_or_compute_with("report", ComputeOptions::new().lock(true), || async move {
            r.fetch_add(1, Ordering::SeqCst);
            "computed".to_string()
        })
        .await
        .unwrap();
    assert_eq!(*v, "computed");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.get::<String>("report")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("computed")
    );
}

#[tokio::test]
async fn namespace_versioning_clears_in_constant_time() {
    let server = RedisServer::start();
    let c = DistributedCache::create(
        config(&server, "ns")
            .namespace_versioning(true)
            .socket_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let entries: Vec<(String, u32)> = (0..20_000).map(|i| (format!("k{i}"), i)).collect();
    for chunk in entries.chunks(2000) {
        c.set_many(chunk.to_vec(), None).await.unwrap();
    }
    c.set("single", 1u32, None).await.unwrap();
    let computed = c
        .get_or_compute("computed", None, || async { 5u32 })
        .await
        .unwrap();
    assert_eq!(*computed, 5);
    assert_eq!(c.get::<u32>("k7").await.unwrap().as_deref(), Some(&7));
    assert_eq!(c.get::<u32>("computed").await.unwrap().as_deref(), Some(&5));

    let mut raw = server.connection().await;
    let _: () = raw.set("unrelated", "1").await.unwrap();
    let start = Instant::now();
    assert_eq!(c.clear().await.unwrap(), 0);
    println!("namespace clear of 20,002 entries: {:?}", start.elapsed());
    // Every entry is a miss at once...
    for k in ["k7", "k19999", "single", "computed"] {
        assert_eq!(c.get::<u32>(k).await.unwrap(), None, "{k}");
    }
    // ...new ones are valid...
    c.set("after", 2u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("after").await.unwrap().as_deref(), Some(&2));
    // ...and the orphans are swept in the background, the new entry and unrelated
    // keys stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: usize = raw
            .exists(&["ns:k7", "ns:k19999", "ns:single"])
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "orphans were not swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(raw.exists::<_, bool>("ns:after").await.unwrap());
    assert!(raw.exists::<_, bool>("unrelated").await.unwrap());
}

/// Counts the loader runs of `get_or_compute` calls on `key` that load `value`.
async fn load_counting<C: Cache>(cache: &C, key: &str, value: &str, runs: &AtomicUsize) -> String {
    let v = cache
        .get_or_compute(key, None, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            value.to_string()
        })
        .await
        .unwrap();
    (*v).clone()
}

#[tokio::test]
async fn an_undecodable_entry_is_replaced_by_the_next_fill() {
    let server = RedisServer::start();
    let cache = distributed(&server, "corrupt").await;
    let mut raw = server.connection().await;
    let _: () = raw
        .set_ex("corrupt:k", b"\xff\x00 not a value".as_slice(), 300)
        .await
        .unwrap();

    let runs = AtomicUsize::new(0);
    assert_eq!(load_counting(&cache, "k", "fresh", &runs).await, "fresh");
    assert_eq!(load_counting(&cache, "k", "never", &runs).await, "fresh");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the corrupt entry kept the key uncached"
    );
    let stored: Vec<u8> = raw.get("corrupt:k").await.unwrap();
    assert_eq!(stored, b"\"fresh\"".to_vec());
    assert_eq!(cache.get_stats().await.unwrap().decode_errors, 1);
}

#[tokio::test]
async fn after_a_tag_invalidation_the_next_fill_stores_again() {
    let server = RedisServer::start();
    let cache = distributed(&server, "retag").await;
    let runs = AtomicUsize::new(0);
    let load = |value: &'static str| {
        let (cache, runs) = (&cache, &runs);
        async move {
            let v = cache
                .get_or_compute_with("k", ComputeOptions::new().tags(["t"]), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    value.to_string()
                })
                .await
                .unwrap();
            (*v).clone()
        }
    };
    assert_eq!(load("one").await, "one");
    cache.invalidate_tag("t").await.unwrap();
    assert_eq!(load("two").await, "two");
    assert_eq!(
        load("three").await,
        "two",
        "the fill after the invalidation was not stored"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Starts an early refresh of `key` whose loader returns `stale` once released;
/// returns when the loader runs, with the gate that releases it.
async fn blocked_refresh(
    c: &DistributedCache,
    key: &str,
    stale: &str,
) -> (Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn({
        let (c, key, stale) = (c.clone(), key.to_owned(), stale.to_owned());
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        async move {
            // Every hit is due: its remaining TTL is below the full 10 s.
            let opts = ComputeOptions::new()
                .ttl(Duration::from_secs(10))
                .refresh_ahead(1.0);
            c.get_or_compute_with(&key, opts, || async move {
                entered.notify_one();
                gate.notified().await;
                stale
            })
            .await
            .unwrap();
        }
    });
    entered.notified().await;
    (gate, task)
}

#[tokio::test]
async fn a_refresh_never_overwrites_a_write_made_during_it() {
    let server = RedisServer::start();
    let c = distributed(&server, "app").await;
    let mut raw = server.connection().await;

    // A write with a shorter TTL than the entry had.
    c.set("k", "old".to_string(), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let (gate, refresh) = blocked_refresh(&c, "k", "read before the write").await;
    c.set("k", "new".to_string(), Some(Duration::from_secs(2)))
        .await
        .unwrap();
    gate.notify_one();
    refresh.await.unwrap();
    assert_eq!(
        c.get::<String>("k")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("new")
    );

    // An expire that shortens the TTL: the refresh does not restore the old one.
    c.set("e", "old".to_string(), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let (gate, refresh) = blocked_refresh(&c, "e", "read before the expire").await;
    assert!(c.expire("e", Duration::from_secs(1)).await.unwrap());
    gate.notify_one();
    refresh.await.unwrap();
    assert_eq!(
        c.get::<String>("e")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("old")
    );
    let pttl: i64 = raw.pttl("app:e").await.unwrap();
    assert!(pttl <= 1000, "the expire was undone: {pttl} ms left");
}

#[tokio::test]
async fn every_write_removes_the_lease() {
    let server = RedisServer::start();
    let c = distributed(&server, "app").await;
    let mut raw = server.connection().await;
    for (i, write) in ["set", "set_many", "expire", "delete"]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{i}");
        let lease = format!("app:__oc:lease:{key}");
        c.set(&key, "old".to_string(), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        let (gate, refresh) = blocked_refresh(&c, &key, "stale").await;
        assert!(raw.exists::<_, bool>(&lease).await.unwrap(), "{write}");
        match write {
            "set" => c.set(&key, "new".to_string(), None).await.unwrap(),
            "set_many" => c
                .set_many(vec![(key.clone(), "new".to_string())], None)
                .await
                .unwrap(),
            "expire" => assert!(c.expire(&key, Duration::from_secs(60)).await.unwrap()),
            _ => assert!(c.delete(&key).await.unwrap()),
        }
        assert!(
            !raw.exists::<_, bool>(&lease).await.unwrap(),
            "`{write}` left the lease"
        );
        gate.notify_one();
        refresh.await.unwrap();
        let stored: Option<String> = raw.get(format!("app:{key}")).await.unwrap();
        assert!(
            stored.is_none_or(|s| !s.contains("stale")),
            "the refresh stored over `{write}`"
        );
    }
}

#[tokio::test]
async fn a_value_chosen_ttl_is_one_write() {
    let server = RedisServer::start();
    let c = distributed(&server, "app").await;
    let mut raw = server.connection().await;
    let opts = || {
        ComputeOptions::new()
            .ttl(Duration::from_secs(300))
            .ttl_for(|v: &Option<u32>| v.is_none().then_some(Duration::from_secs(5)))
    };
    let (sets, pexpires) = (
        command_calls(&mut raw, "set").await,
        command_calls(&mut raw, "pexpire").await,
    );
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let v: Arc<Option<u32>> = c
            .get_or_compute_with("missing", opts(), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                None
            })
            .await
            .unwrap();
        assert_eq!(*v, None);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the None was cached");
    let pttl: i64 = raw.pttl("app:missing").await.unwrap();
    assert!(pttl > 0 && pttl <= 5000, "{pttl}");
    assert_eq!(command_calls(&mut raw, "pexpire").await, pexpires);
    // The lease, the clear generation's create-if-missing (`SET NX`, a no-op once
    // it exists) and the fill script's SET are the only SETs (the scripts' count as
    // `set` too): no second write for the TTL.
    assert_eq!(command_calls(&mut raw, "set").await - sets, 3);

    // A found value keeps the options' TTL; a zero TTL stores nothing.
    c.get_or_compute_with("found", opts(), || async { Some(1u32) })
        .await
        .unwrap();
    let pttl: i64 = raw.pttl("app:found").await.unwrap();
    assert!(pttl > 5000, "{pttl}");
    let never = ComputeOptions::new().ttl_for(|_: &u8| Some(Duration::ZERO));
    c.get_or_compute_with("uncached", never, || async { 1u8 })
        .await
        .unwrap();
    assert!(!raw.exists::<_, bool>("app:uncached").await.unwrap());
    assert!(
        !raw.exists::<_, bool>("app:__oc:lease:uncached")
            .await
            .unwrap()
    );
    // A rule's Duration::MAX is capped, not a panic.
    let forever = ComputeOptions::new().ttl_for(|_: &u8| Some(Duration::MAX));
    c.get_or_compute_with("long", forever, || async { 2u8 })
        .await
        .unwrap();
    assert!(raw.pttl::<_, i64>("app:long").await.unwrap() > 0);
}

#[cfg(feature = "macros")]
#[ormcache::cached(cache = cache, skip(cache, runs), cache_none = true, none_ttl = 5)]
async fn find_row(cache: &DistributedCache, runs: &AtomicUsize, id: u32) -> Option<u32> {
    runs.fetch_add(1, Ordering::SeqCst);
    (id != 0).then_some(id)
}

#[cfg(feature = "macros")]
#[tokio::test]
async fn cached_none_ttl_is_set_once_and_hits_write_nothing() {
    let server = RedisServer::start();
    let c = distributed(&server, "app").await;
    let mut raw = server.connection().await;
    let runs = AtomicUsize::new(0);
    assert_eq!(find_row(&c, &runs, 0).await, None);
    let (pexpires, publishes, sets) = (
        command_calls(&mut raw, "pexpire").await,
        command_calls(&mut raw, "publish").await,
        command_calls(&mut raw, "set").await,
    );
    for _ in 0..5 {
        assert_eq!(find_row(&c, &runs, 0).await, None);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        command_calls(&mut raw, "pexpire").await,
        pexpires,
        "hits wrote"
    );
    assert_eq!(command_calls(&mut raw, "publish").await, publishes);
    assert_eq!(command_calls(&mut raw, "set").await, sets);
    let key = find_row_cache_key(&0).unwrap();
    let pttl: i64 = raw.pttl(c.redis_key(&key)).await.unwrap();
    assert!(pttl > 0 && pttl <= 5000, "{pttl}");
    // The miss that stored it took no PEXPIRE either.
    assert_eq!(pexpires, 0);
}

/// A TCP proxy in front of `server` that counts round trips: a trip starts when
/// the client sends after its last request was answered (a pipeline is one trip).
/// Its URL and the counter.
async fn counting_proxy(server: &RedisServer) -> (String, Arc<AtomicUsize>) {
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let upstream = format!("127.0.0.1:{}", server.port());
    let trips = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&trips);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let trips = Arc::clone(&trips);
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let answered = AtomicBool::new(true);
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if answered.swap(false, Ordering::SeqCst) {
                            trips.fetch_add(1, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        answered.store(true, Ordering::SeqCst);
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    (url, counter)
}

#[tokio::test]
async fn a_cold_miss_takes_two_round_trips_and_a_hit_one() {
    let server = RedisServer::start();
    let (url, trips) = counting_proxy(&server).await;
    let c = DistributedCache::create(
        config(&server, "app")
            .redis_url(url)
            .stats_flush_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let count = || trips.load(Ordering::SeqCst);
    let before = count();
    let v: Arc<u32> = c
        .get_or_compute("cold", None, || async { 7 })
        .await
        .unwrap();
    assert_eq!(*v, 7);
    assert_eq!(count() - before, 2, "lookup with lease, then the store");
    let before = count();
    let v: Arc<u32> = c
        .get_or_compute("cold", None, || async { 8 })
        .await
        .unwrap();
    assert_eq!(*v, 7);
    assert_eq!(count() - before, 1, "a hit");
    // A fill whose lease another process holds still stores, in three trips.
    let mut raw = server.connection().await;
    let _: () = raw
        .set_ex("app:__oc:lease:held", "someone else", 10)
        .await
        .unwrap();
    let before = count();
    let v: Arc<u32> = c
        .get_or_compute("held", None, || async { 9 })
        .await
        .unwrap();
    assert_eq!(*v, 9);
    assert_eq!(count() - before, 3);
    assert_eq!(c.get::<u32>("held").await.unwrap().as_deref(), Some(&9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_cold_miss_takes_two_round_trips() {
    let server = RedisServer::start();
    let (url, trips) = counting_proxy(&server).await;
    let l2 = DistributedCache::create(
        config(&server, "app")
            .redis_url(url)
            .stats_flush_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    // No heartbeats during the count: only the calls' own round trips.
    let c = HybridCache::builder(QueryCache::new(100, Duration::from_secs(60)).unwrap(), l2)
        .heartbeat_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(c.wait_coherent(Duration::from_secs(5)).await);
    let count = || trips.load(Ordering::SeqCst);
    let before = count();
    let v: Arc<u32> = c
        .get_or_compute("cold", None, || async { 7 })
        .await
        .unwrap();
    assert_eq!(*v, 7);
    assert_eq!(
        count() - before,
        2,
        "lookup (L1 miss, then L2 with the lease), then the store"
    );
    let before = count();
    let v: Arc<u32> = c
        .get_or_compute("cold", None, || async { 8 })
        .await
        .unwrap();
    assert_eq!(*v, 7);
    assert_eq!(count() - before, 0, "an L1 hit");
}
