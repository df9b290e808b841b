//! Cancellation (contract 13): every public future of every cache kind, polled N
//! times with the real task context and then dropped, for every N until it
//! completes on its own, against a live Redis and a frozen one (SIGSTOP). After each
//! drop: the process reads its own writes, the peer serves nothing the call changed
//! beyond the delivery bound, no peer flushes for a hole, no lease outlives its
//! call, and the breaker probes again after a dropped probe.
#![allow(clippy::print_stdout)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ormcache::{
    BreakerConfig, BreakerState, Cache, ComputeOptions, DistributedCache, HybridCache, QueryCache,
};
use support::{RedisServer, config, poll_then_drop};

type Op = for<'a> fn(&'a HybridCache, usize) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
type L2Op =
    for<'a> fn(&'a DistributedCache, usize) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

const K: &str = "k";
/// Beyond this, an op that never completes on its own is a hang.
const MAX_POLLS: usize = 200;

/// Polls until `f` holds, up to `bound` (a stranded lease lives 60 s here, a stale
/// L1 copy 60 s: far beyond).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, bound: Duration, mut f: F) {
    let deadline = Instant::now() + bound;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A command timeout generous enough for a loaded machine; short only where Redis
/// is frozen on purpose (each frozen round waits it out).
fn timeout_for(prefix: &str) -> Duration {
    if prefix == "fz" || prefix == "dx" {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    }
}

fn l2_config(server: &RedisServer, prefix: &str) -> ormcache::DistributedConfig {
    // The breaker never opens here (its own test is below): a probe dropped by a
    // frozen-Redis round must not decide the other checks.
    config(server, prefix)
        .socket_timeout(timeout_for(prefix))
        .circuit_breaker(BreakerConfig::new().threshold(1_000_000))
}

async fn hybrid(server: &RedisServer, prefix: &str) -> HybridCache {
    let l1 = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    let l2 = DistributedCache::create(l2_config(server, prefix))
        .await
        .unwrap();
    let c = HybridCache::builder(l1, l2)
        .heartbeat_interval(Duration::from_millis(100))
        .l1_max_ttl(Duration::from_secs(60))
        .confirm_invalidations(Some(Duration::from_secs(3)))
        .build()
        .unwrap();
    assert!(c.wait_coherent(Duration::from_secs(10)).await);
    c
}

/// The lease (and lock) keys under `prefix`.
async fn leases(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = server.connection().await;
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:__oc:lease*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

fn locked() -> ComputeOptions {
    ComputeOptions::new()
        .lock(true)
        .lock_ttl(Duration::from_secs(60))
        .lock_wait(Duration::from_secs(60))
}

/// Every hit is due for an early refresh: the refresh path (lease, loader, store)
/// runs on a present key.
fn refreshing() -> ComputeOptions {
    locked().refresh_ahead(1.0)
}

async fn slow_value(n: usize) -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    format!("computed{n}")
}

/// Every public async operation of `HybridCache`, by name; `true` for the clears,
/// which flush the peer's L1 by design.
fn hybrid_ops() -> Vec<(&'static str, bool, Op)> {
    vec![
        ("set", false, |c, n| {
            Box::pin(async move {
                let _ = c.set(K, format!("new{n}"), None).await;
            })
        }),
        ("set_with_tags", false, |c, n| {
            Box::pin(async move {
                let _ = c.set_with_tags(K, format!("new{n}"), None, &["t"]).await;
            })
        }),
        ("set_many", false, |c, n| {
            Box::pin(async move {
                let _ = c
                    .set_many(vec![(K, format!("new{n}")), ("other", "x".into())], None)
                    .await;
            })
        }),
        ("delete", false, |c, _| {
            Box::pin(async move {
                let _ = c.delete(K).await;
            })
        }),
        ("delete_many", false, |c, _| {
            Box::pin(async move {
                let _ = c.delete_many(&[K, "other"]).await;
            })
        }),
        ("expire", false, |c, _| {
            Box::pin(async move {
                let _ = c.expire(K, Duration::from_secs(30)).await;
            })
        }),
        ("invalidate_tag", false, |c, _| {
            Box::pin(async move {
                let _ = c.invalidate_tag("t").await;
            })
        }),
        ("get", false, |c, _| {
            Box::pin(async move {
                let _ = c.get::<String>(K).await;
            })
        }),
        ("get_many", false, |c, _| {
            Box::pin(async move {
                let _ = c.get_many::<String, _>(&[K, "other"]).await;
            })
        }),
        ("exists", false, |c, _| {
            Box::pin(async move {
                let _ = c.exists(K).await;
            })
        }),
        ("ttl", false, |c, _| {
            Box::pin(async move {
                let _ = c.ttl(K).await;
            })
        }),
        ("get_stats", false, |c, _| {
            Box::pin(async move {
                let _ = c.get_stats().await;
            })
        }),
        ("get_or_compute", false, |c, n| {
            Box::pin(async move {
                let _ = c
                    .get_or_compute_with(K, ComputeOptions::new(), || slow_value(n))
                    .await;
            })
        }),
        ("get_or_compute locked", false, |c, n| {
            Box::pin(async move {
                let _ = c.get_or_compute_with(K, locked(), || slow_value(n)).await;
            })
        }),
        ("get_or_compute refresh", false, |c, n| {
            Box::pin(async move {
                let _ = c
                    .get_or_compute_with(K, refreshing(), || slow_value(n))
                    .await;
            })
        }),
        ("ping", false, |c, _| {
            Box::pin(async move {
                let _ = c.ping().await;
            })
        }),
        ("clear_pattern", true, |c, _| {
            Box::pin(async move {
                let _ = c.clear_pattern("k*").await;
            })
        }),
        ("clear", true, |c, _| {
            Box::pin(async move {
                let _ = c.clear().await;
            })
        }),
    ]
}

/// Before each round: `K` holds an old value (tagged `t`) in L2 and in both L1s
/// (or, for `get_or_compute`, is missing everywhere).
async fn prepare(a: &HybridCache, b: &HybridCache, name: &str, n: usize) {
    if name.starts_with("get_or_compute") && name != "get_or_compute refresh" {
        a.delete(K).await.unwrap();
        return;
    }
    a.set_with_tags(K, format!("old{n}"), None, &["t"])
        .await
        .unwrap();
    // (Under the fleet protocol the writer's copy comes with its next read.)
    assert_eq!(
        a.get::<String>(K).await.unwrap().as_deref(),
        Some(&format!("old{n}"))
    );
    assert!(
        a.l1().get_sync::<String>(K).is_some(),
        "the writer's L1 holds it"
    );
    assert_eq!(
        b.get::<String>(K).await.unwrap().as_deref(),
        Some(&format!("old{n}"))
    );
    assert!(
        b.l1().get_sync::<String>(K).is_some(),
        "the peer's L1 holds it"
    );
}

/// What each instance serves for `K` agrees with what Redis holds.
async fn agree(a: &HybridCache, b: &HybridCache, what: &str, bound: Duration) {
    for (who, c) in [("writer", a), ("peer", b)] {
        eventually(
            &format!("{who} serves what Redis holds after {what}"),
            bound,
            async || {
                let redis = c.l2().get::<String>(K).await;
                let served = c.get::<String>(K).await.unwrap();
                matches!(redis, Ok(r) if r == served)
            },
        )
        .await;
    }
}

async fn no_lease(server: &RedisServer, prefix: &str, what: &str, bound: Duration) {
    eventually(&format!("no lease outlives {what}"), bound, async || {
        leases(server, prefix).await.is_empty()
    })
    .await;
}

/// Runs `op` dropped after 1, 2, 3… polls until it completes on its own; checks
/// after every round. `frozen`: Redis is paused for the poll-and-drop.
async fn every_cancellation_point(
    server: &RedisServer,
    prefix: &str,
    a: &HybridCache,
    b: &HybridCache,
    (name, _, op): (&'static str, bool, Op),
    frozen: bool,
) -> usize {
    let bound = if frozen {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    for n in 1..MAX_POLLS {
        prepare(a, b, name, n).await;
        if frozen {
            server.pause();
        }
        let done = poll_then_drop(op(a, n), n).await.is_some();
        if frozen {
            server.resume();
            assert!(a.wait_coherent(bound).await && b.wait_coherent(bound).await);
        }
        let what = format!("{name} dropped after {n} polls (frozen: {frozen})");
        agree(a, b, &what, bound).await;
        no_lease(server, prefix, &what, bound).await;
        if done {
            println!("{name}: completed on its own at poll {n} (frozen: {frozen})");
            return n;
        }
    }
    panic!("{name} never completed within {MAX_POLLS} polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_operations_dropped_at_every_await_on_a_live_redis() {
    let server = RedisServer::start();
    let a = hybrid(&server, "cx").await;
    let b = hybrid(&server, "cx").await;
    // Both see each other before the rounds start.
    a.set("warm", 1u8, None).await.unwrap();
    b.set("warm", 2u8, None).await.unwrap();
    let before = b.get_stats().await.unwrap().coherence;
    let mut polls = 0;
    for (name, clears, op) in hybrid_ops() {
        if clears {
            continue;
        }
        polls += every_cancellation_point(&server, "cx", &a, &b, (name, clears, op), false).await;
    }
    // A hole in the writer's sequence shows within two heartbeat intervals.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = b.get_stats().await.unwrap().coherence;
    assert_eq!(
        after.gaps, before.gaps,
        "the peer saw a hole in the sequence"
    );
    // A stall of the loaded machine may cost a resubscription (which flushes):
    // any other flush is spurious.
    assert_eq!(
        after.flushes - before.flushes,
        after.resubscriptions - before.resubscriptions,
        "the peer flushed its L1"
    );
    for (name, clears, op) in hybrid_ops() {
        if clears {
            polls +=
                every_cancellation_point(&server, "cx", &a, &b, (name, clears, op), false).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = b.get_stats().await.unwrap().coherence;
    assert_eq!(
        after.gaps, before.gaps,
        "the peer saw a hole in the sequence"
    );
    assert!(
        polls > hybrid_ops().len(),
        "some operation was cancelled mid-way"
    );
    println!("{polls} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_writes_and_locks_dropped_while_redis_is_frozen() {
    let server = RedisServer::start();
    let a = hybrid(&server, "fz").await;
    let b = hybrid(&server, "fz").await;
    for (name, clears, op) in hybrid_ops() {
        if [
            "set",
            "delete",
            "invalidate_tag",
            "clear_pattern",
            "get_or_compute locked",
        ]
        .contains(&name)
        {
            every_cancellation_point(&server, "fz", &a, &b, (name, clears, op), true).await;
        }
    }
}

fn l2_ops() -> Vec<(&'static str, L2Op)> {
    vec![
        ("set", |c, n| {
            Box::pin(async move {
                let _ = c.set(K, format!("new{n}"), None).await;
            })
        }),
        ("delete", |c, _| {
            Box::pin(async move {
                let _ = c.delete(K).await;
            })
        }),
        ("clear", |c, _| {
            Box::pin(async move {
                let _ = c.clear().await;
            })
        }),
        ("clear_pattern", |c, _| {
            Box::pin(async move {
                let _ = c.clear_pattern("k*").await;
            })
        }),
        ("expire", |c, _| {
            Box::pin(async move {
                let _ = c.expire(K, Duration::from_secs(30)).await;
            })
        }),
        ("set_many", |c, n| {
            Box::pin(async move {
                let _ = c.set_many(vec![(K, format!("new{n}"))], None).await;
            })
        }),
        ("delete_many", |c, _| {
            Box::pin(async move {
                let _ = c.delete_many(&[K]).await;
            })
        }),
        ("set_with_tags", |c, n| {
            Box::pin(async move {
                let _ = c.set_with_tags(K, format!("new{n}"), None, &["t"]).await;
            })
        }),
        ("invalidate_tag", |c, _| {
            Box::pin(async move {
                let _ = c.invalidate_tag("t").await;
            })
        }),
        ("get", |c, _| {
            Box::pin(async move {
                let _ = c.get::<String>(K).await;
            })
        }),
        ("get_many", |c, _| {
            Box::pin(async move {
                let _ = c.get_many::<String, _>(&[K]).await;
            })
        }),
        ("exists", |c, _| {
            Box::pin(async move {
                let _ = c.exists(K).await;
            })
        }),
        ("ttl", |c, _| {
            Box::pin(async move {
                let _ = c.ttl(K).await;
            })
        }),
        ("get_stats", |c, _| {
            Box::pin(async move {
                let _ = c.get_stats().await;
            })
        }),
        ("ping", |c, _| {
            Box::pin(async move {
                let _ = c.ping().await;
            })
        }),
        ("get_or_compute refresh", |c, n| {
            Box::pin(async move {
                let _ = c
                    .get_or_compute_with(K, refreshing(), || slow_value(n))
                    .await;
            })
        }),
        ("get_or_compute", |c, n| {
            Box::pin(async move {
                let _ = c
                    .get_or_compute_with(K, ComputeOptions::new(), || slow_value(n))
                    .await;
            })
        }),
        ("get_or_compute locked", |c, n| {
            Box::pin(async move {
                let _ = c.get_or_compute_with(K, locked(), || slow_value(n)).await;
            })
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_operations_dropped_at_every_await() {
    let server = RedisServer::start();
    let a = DistributedCache::create(l2_config(&server, "dx"))
        .await
        .unwrap();
    let other = DistributedCache::create(l2_config(&server, "dx"))
        .await
        .unwrap();
    for frozen in [false, true] {
        for (name, op) in l2_ops() {
            let mut completed = false;
            for n in 1..MAX_POLLS {
                if name.starts_with("get_or_compute") && name != "get_or_compute refresh" {
                    a.delete(K).await.unwrap();
                } else {
                    a.set(K, format!("old{n}"), None).await.unwrap();
                }
                if frozen {
                    server.pause();
                }
                completed = poll_then_drop(op(&a, n), n).await.is_some();
                if frozen {
                    server.resume();
                }
                let what = format!("{name} dropped after {n} polls (frozen: {frozen})");
                no_lease(&server, "dx", &what, Duration::from_secs(5)).await;
                // The lock is free: another process computes at once (a stranded
                // lock would make it wait `lock_wait`, 60 s).
                let got = tokio::time::timeout(
                    Duration::from_secs(5),
                    other.get_or_compute_with("free", locked(), || slow_value(n)),
                )
                .await;
                assert!(matches!(got, Ok(Ok(_))), "{what}: the lock stayed taken");
                other.delete("free").await.unwrap();
                if completed {
                    break;
                }
            }
            assert!(completed, "{name} never completed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_cache_get_or_compute_dropped_at_every_await() {
    let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut completed = false;
    for n in 1..MAX_POLLS {
        cache.delete_sync(K);
        let counted = Arc::clone(&runs);
        // With `lock(true)` too: on the L1 alone it is the same single flight.
        let options = if n % 2 == 0 {
            locked()
        } else {
            ComputeOptions::new()
        };
        let op = cache.get_or_compute_with(K, options, || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            slow_value(n).await
        });
        completed = poll_then_drop(op, n).await.is_some();
        if completed {
            break;
        }
        // Nothing stuck: the next caller leads at once and computes.
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_compute(K, None, || async { "next".to_string() }),
        )
        .await;
        assert_eq!(
            next.expect("a dropped leader blocked the key")
                .unwrap()
                .as_str(),
            "next",
            "dropped after {n} polls"
        );
    }
    assert!(completed && runs.load(Ordering::SeqCst) > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_leader_dropped_mid_load_frees_the_lock_for_other_processes() {
    // As `ResponseCacheLayer::lock(true)` sees it when a client disconnects: the
    // leader is dropped in its loader; a follower in another process gets the lock
    // at once instead of after `lock_wait`.
    let server = RedisServer::start();
    let leader = hybrid(&server, "lk").await;
    let other = hybrid(&server, "lk").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&started);
    let load = leader.get_or_compute_with(K, locked(), || async move {
        signal.notify_one();
        std::future::pending::<String>().await
    });
    let dropped = tokio::select! {
        _ = load => false,
        () = started.notified() => true,
    };
    assert!(dropped);
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        other.get_or_compute_with(K, locked(), || async { "other".to_string() }),
    )
    .await
    .expect("the dropped leader's lock held the other process back");
    assert_eq!(got.unwrap().as_str(), "other");
    no_lease(&server, "lk", "the leader", Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_breaker_probe_does_not_stick() {
    let server = RedisServer::start();
    let cache = DistributedCache::create(
        config(&server, "br")
            .socket_timeout(Duration::from_millis(100))
            .circuit_breaker(
                BreakerConfig::new()
                    .threshold(2)
                    .cooldown(Duration::from_millis(200)),
            ),
    )
    .await
    .unwrap();
    server.pause();
    for _ in 0..3 {
        let _ = cache.get::<String>(K).await;
    }
    assert_eq!(cache.breaker_state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cooldown passed: this call is the probe. It is dropped before Redis
    // answers.
    assert!(poll_then_drop(cache.get::<String>(K), 1).await.is_none());
    server.resume();
    eventually(
        "the breaker probes again after a dropped probe",
        Duration::from_secs(5),
        async || cache.ping().await.is_ok(),
    )
    .await;
}

/// `coalesce_gets`: forty reads at once (one on the wire, the rest queued for an
/// `MGET`) polled N times and dropped, for every N until they complete on a live
/// Redis, and for the first few on a frozen one. After each drop no read is
/// stranded and no slot stays taken: forty new reads complete, each with its own
/// key's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_gets_dropped_at_every_await_strand_no_read() {
    const READS: usize = 40;
    let server = RedisServer::start();
    let c = DistributedCache::create(l2_config(&server, "cz").coalesce_gets(true))
        .await
        .unwrap();
    for i in 0..READS {
        c.set(&format!("k{i}"), i, None).await.unwrap();
    }
    let reads = |c: &DistributedCache| {
        let c = c.clone();
        async move {
            let reads = (0..READS).map(|i| {
                let c = &c;
                async move { c.get::<usize>(&format!("k{i}")).await }
            });
            futures_util::future::join_all(reads).await
        }
    };
    for frozen in [false, true] {
        let mut completed = false;
        for n in 1..MAX_POLLS {
            if frozen {
                server.pause();
            }
            completed = poll_then_drop(reads(&c), n).await.is_some();
            if frozen {
                server.resume();
            }
            let what = format!("{READS} reads dropped after {n} polls (frozen: {frozen})");
            let again = tokio::time::timeout(Duration::from_secs(10), reads(&c))
                .await
                .unwrap_or_else(|_| panic!("{what}: later reads never completed"));
            for (i, got) in again.into_iter().enumerate() {
                let got = got.unwrap_or_else(|e| panic!("{what}: k{i}: {e}"));
                assert_eq!(got.as_deref(), Some(&i), "{what}: k{i}");
            }
            // Frozen rounds wait out timeouts: a few drop points are enough.
            if completed || (frozen && n == 3) {
                break;
            }
        }
        assert!(completed || frozen, "the reads never completed");
    }
}

/// `coalesce_gets`: reads dropped on a runtime of their own, which then shuts down
/// with their batch's task spawned but never run. The lost task gives its slot back
/// and lets the queue go: reads on another runtime are not left queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lost_with_its_runtime_strands_no_read() {
    const READS: usize = 40;
    let server = RedisServer::start();
    let c = DistributedCache::create(l2_config(&server, "cr").coalesce_gets(true))
        .await
        .unwrap();
    for i in 0..READS {
        c.set(&format!("k{i}"), i, None).await.unwrap();
    }
    let reads = |c: DistributedCache| async move {
        let reads = (0..READS).map(|i| {
            let c = &c;
            async move { c.get::<usize>(&format!("k{i}")).await }
        });
        futures_util::future::join_all(reads).await
    };
    let other = c.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // One poll: the first read's `GET` is out, the others queued. Dropped, the
        // first read spawns the batch's task on this runtime, which is then shut
        // down before the task runs.
        let completed = rt.block_on(poll_then_drop(reads(other), 1));
        assert!(completed.is_none(), "the reads finished in one poll");
        drop(rt);
    })
    .join()
    .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), reads(c.clone()))
        .await
        .expect("reads were left queued behind the lost batch");
    for (i, got) in again.into_iter().enumerate() {
        assert_eq!(got.unwrap().as_deref(), Some(&i), "k{i}");
    }
}
