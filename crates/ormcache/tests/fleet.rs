//! `Protocol::Fleet` against real `redis-server` processes: writes by any Redis
//! client (`SET`, `DEL`, `EXPIRE`, `FLUSHDB`, `MSET`/`UNLINK`, `maxmemory`
//! eviction) evict every L1 copy; a confirmed write is fresh on every holder when it
//! returns; a write of a key nobody else holds costs no acknowledgement; fills
//! publish nothing. One test checks that `Protocol::Broadcast` still works.
//!
//! Every instance uses `l1_max_ttl` = 60 s, so a copy that nothing evicts outlives
//! each test's bounded polls: the tests fail where Fleet would leave a stale copy.

mod support;

use std::time::{Duration, Instant};

use ormcache::{Cache, DistributedCache, HybridCache, Protocol, QueryCache};
use redis::aio::MultiplexedConnection;
use support::{RedisServer, ServerOptions, config};

/// Longer than any test runs: only an eviction removes an L1 copy.
const L1_TTL: Duration = Duration::from_secs(60);
/// Bound of every poll: generous (an eviction takes milliseconds), and far below
/// [`L1_TTL`].
const EVENTUALLY: Duration = Duration::from_secs(2);

async fn instance(server: &RedisServer, protocol: Protocol) -> HybridCache {
    let l1 = QueryCache::new(10_000, L1_TTL).unwrap();
    let l2 = DistributedCache::create(config(server, "app"))
        .await
        .unwrap();
    let c = HybridCache::builder(l1, l2)
        .l1_max_ttl(L1_TTL)
        .protocol(protocol)
        .build()
        .unwrap();
    assert!(
        c.wait_coherent(Duration::from_secs(5)).await,
        "never became coherent; server log:\n{}",
        server.log()
    );
    c
}

/// `n` Fleet instances on prefix `app`.
async fn fleet(server: &RedisServer, n: usize) -> Vec<HybridCache> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(instance(server, Protocol::Fleet).await);
    }
    all
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Polls `f` until it holds, for at most [`EVENTUALLY`].
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + EVENTUALLY;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `key` through `c` until c's L1 holds it with `value` (a fill may lose a
/// race with an invalidation still in flight).
async fn hold(c: &HybridCache, key: &str, value: u32) {
    eventually(&format!("L1 holds {key} = {value}"), async || {
        c.get::<u32>(key).await.unwrap().as_deref() == Some(&value) && c.l1().exists_sync(key)
    })
    .await;
}

/// Writes 1 to every key through the first instance, then every instance holds
/// every key in L1.
async fn seed(all: &[HybridCache], keys: &[&str]) {
    for key in keys {
        all[0].set(key, 1u32, None).await.unwrap();
    }
    hold_all(all, keys, 1).await;
}

/// [`hold`] of every key through every instance.
async fn hold_all(all: &[HybridCache], keys: &[&str], value: u32) {
    for key in keys {
        for c in all {
            hold(c, key, value).await;
        }
    }
}

/// Every instance reads `expected` (`None`: a miss) for every key, eventually.
async fn every_serves(all: &[HybridCache], keys: &[&str], expected: Option<u32>, after: &str) {
    for key in keys {
        for (i, c) in all.iter().enumerate() {
            eventually(
                &format!("instance {i} reads {key} as {expected:?} after {after}"),
                async || c.get::<u32>(key).await.unwrap().as_deref() == expected.as_ref(),
            )
            .await;
        }
    }
}

/// The bytes ormcache stores for `value` (written under a scratch key, read raw),
/// for foreign writes that the instances can decode.
async fn encoded(c: &HybridCache, raw: &mut MultiplexedConnection, value: u32) -> Vec<u8> {
    let scratch = format!("scratch:{value}");
    c.l2().set(&scratch, value, None).await.unwrap();
    redis::cmd("GET")
        .arg(c.l2().redis_key(&scratch))
        .query_async(raw)
        .await
        .unwrap()
}

/// `cmdstat_publish` calls so far (every `PUBLISH`, scripts' included).
async fn publishes(raw: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().unwrap())
}

async fn deliveries(c: &HybridCache) -> u64 {
    c.get_stats().await.unwrap().coherence.deliveries
}

#[tokio::test]
async fn foreign_set_evicts_every_copy() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    seed(&all, &["user:1"]).await;
    let new = encoded(&all[0], &mut raw, 2).await;
    let () = redis::cmd("SET")
        .arg(all[0].l2().redis_key("user:1"))
        .arg(new)
        .query_async(&mut raw)
        .await
        .unwrap();
    every_serves(&all, &["user:1"], Some(2), "SET").await;
    let evicted: u64 = {
        let mut sum = 0;
        for c in &all {
            sum += c.get_stats().await.unwrap().coherence.tracked_evictions;
        }
        sum
    };
    assert!(evicted >= 3, "tracked_evictions {evicted}, want ≥ 3");
}

#[tokio::test]
async fn foreign_del_evicts_every_copy() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    seed(&all, &["user:1"]).await;
    let deleted: u64 = redis::cmd("DEL")
        .arg(all[0].l2().redis_key("user:1"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    every_serves(&all, &["user:1"], None, "DEL").await;
}

#[tokio::test]
async fn foreign_expire_evicts_every_copy() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    seed(&all, &["user:1", "user:2"]).await;
    // PEXPIRE to 1 ms: Redis expires the key (actively: nothing reads it from
    // Redis while the L1 copies answer) and reports it. EXPIRE 0 (seconds): the
    // key goes at once.
    for (command, key, ttl) in [("PEXPIRE", "user:1", 1), ("EXPIRE", "user:2", 0)] {
        let set: bool = redis::cmd(command)
            .arg(all[0].l2().redis_key(key))
            .arg(ttl)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(set, "{command} {key}");
    }
    every_serves(&all, &["user:1", "user:2"], None, "expiry").await;
}

#[tokio::test]
async fn foreign_flushdb_flushes_every_l1() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    let keys = ["user:1", "user:2", "post:9"];
    seed(&all, &keys).await;
    let () = redis::cmd("FLUSHDB").query_async(&mut raw).await.unwrap();
    // Without reading (a read would refill nothing anyway: L2 is empty): every L1
    // copy goes.
    for (i, c) in all.iter().enumerate() {
        eventually(&format!("instance {i}'s L1 flushed"), async || {
            keys.iter().all(|k| !c.l1().exists_sync(k))
        })
        .await;
        for key in keys {
            assert_eq!(c.get::<u32>(key).await.unwrap(), None, "{key} through {i}");
        }
    }
}

#[tokio::test]
async fn maxmemory_eviction_evicts_the_l1_copy() {
    let server = RedisServer::start_with(ServerOptions {
        args: [
            "--maxmemory",
            "4mb",
            "--maxmemory-policy",
            "allkeys-lru",
            "--maxmemory-samples",
            "10",
        ]
        .map(String::from)
        .to_vec(),
        ..ServerOptions::default()
    });
    let all = fleet(&server, 2).await;
    let mut raw = raw(&server).await;
    seed(&all, &["user:1"]).await;
    let before = all[1]
        .get_stats()
        .await
        .unwrap()
        .coherence
        .tracked_evictions;
    let tracked = all[0].l2().redis_key("user:1");
    // Fill Redis (outside the prefix) until it evicts the tracked key: 100 keys of
    // 4 KiB a round trip, at most 64 MiB in all.
    let filler = vec![b'x'; 4096];
    let mut evicted = false;
    for batch in 0..160 {
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("SET")
                .arg(format!("filler:{batch}:{i}"))
                .arg(&filler)
                .ignore();
        }
        pipe.cmd("EXISTS").arg(&tracked);
        let (exists,): (u64,) = pipe.query_async(&mut raw).await.unwrap();
        if exists == 0 {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "Redis never evicted {tracked}");
    for (i, c) in all.iter().enumerate() {
        eventually(&format!("instance {i}'s L1 copy evicted"), async || {
            !c.l1().exists_sync("user:1")
        })
        .await;
        assert_eq!(c.get::<u32>("user:1").await.unwrap(), None, "through {i}");
    }
    let after = all[1]
        .get_stats()
        .await
        .unwrap()
        .coherence
        .tracked_evictions;
    assert!(after > before, "tracked_evictions {before} → {after}");
}

#[tokio::test]
async fn one_command_several_keys() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    let keys = ["k:1", "k:2", "k:3"];
    seed(&all, &keys).await;
    // MSET: one invalidation carrying the three keys.
    let new = encoded(&all[0], &mut raw, 2).await;
    let mut mset = redis::cmd("MSET");
    for key in keys {
        mset.arg(all[0].l2().redis_key(key)).arg(&new);
    }
    let () = mset.query_async(&mut raw).await.unwrap();
    every_serves(&all, &keys, Some(2), "MSET").await;
    // Hold them again (the reads above refilled L1 with 2), then UNLINK all three.
    hold_all(&all, &keys, 2).await;
    let mut unlink = redis::cmd("UNLINK");
    for key in keys {
        unlink.arg(all[0].l2().redis_key(key));
    }
    let removed: u64 = unlink.query_async(&mut raw).await.unwrap();
    assert_eq!(removed, 3);
    every_serves(&all, &keys, None, "UNLINK").await;
}

#[tokio::test]
async fn confirmed_write_is_fresh_on_every_holder() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let (a, holders) = (&all[0], &all[1..]);
    a.set("user:1", 0u32, None).await.unwrap();
    for v in 1..=20u32 {
        for c in holders {
            hold(c, "user:1", v - 1).await;
        }
        a.set("user:1", v, None).await.unwrap();
        // Right after the write returned: no polling.
        for (i, c) in holders.iter().enumerate() {
            assert_eq!(
                c.get::<u32>("user:1").await.unwrap().as_deref(),
                Some(&v),
                "write {v}, holder {}",
                i + 1
            );
        }
    }
    let unconfirmed = a.get_stats().await.unwrap().coherence.unconfirmed;
    assert_eq!(unconfirmed, 0);
}

#[tokio::test]
async fn write_of_a_key_nobody_else_holds_costs_no_acknowledgement() {
    let server = RedisServer::start();
    let all = fleet(&server, 3).await;
    let mut raw = raw(&server).await;
    let (a, others) = (&all[0], &all[1..]);
    // Let the start-up traffic (hellos) pass.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each write is judged on its own; a heartbeat may fall into a window now and
    // then, so most (not all) windows must be quiet. Broadcast: every window has
    // one message to each other instance and one acknowledgement from each.
    const WRITES: usize = 10;
    let (mut quiet_peers, mut no_acks) = (0, 0);
    for w in 0..WRITES {
        let key = format!("alone:{w}");
        let mut before = 0;
        for c in others {
            before += deliveries(c).await;
        }
        let published = publishes(&mut raw).await;
        a.set(&key, 1u32, None).await.unwrap();
        let published = publishes(&mut raw).await - published;
        let mut after = 0;
        for c in others {
            after += deliveries(c).await;
        }
        quiet_peers += usize::from(after == before);
        // At most the write's own message; no PUBLISH from the other instances.
        no_acks += usize::from(published <= 1);
    }
    assert!(
        quiet_peers * 2 > WRITES,
        "the other instances heard {} of {WRITES} writes of keys they do not hold",
        WRITES - quiet_peers
    );
    assert!(
        no_acks * 2 > WRITES,
        "{} of {WRITES} writes published more than their own message (acknowledgements)",
        WRITES - no_acks
    );
}

#[tokio::test]
async fn fills_publish_nothing() {
    let server = RedisServer::start();
    let all = fleet(&server, 2).await;
    let mut raw = raw(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A heartbeat may fall into a fill's window now and then; Broadcast publishes
    // in every fill.
    const FILLS: u32 = 10;
    let mut with_publish = 0;
    for f in 0..FILLS {
        let key = format!("fill:{f}");
        let before = publishes(&mut raw).await;
        let v = all[f as usize % 2]
            .get_or_compute(&key, None, || async move { f })
            .await
            .unwrap();
        assert_eq!(*v, f);
        with_publish += u32::from(publishes(&mut raw).await > before);
        // Stored in L2: the other instance reads it.
        let other = &all[(f as usize + 1) % 2];
        assert_eq!(other.get::<u32>(&key).await.unwrap().as_deref(), Some(&f));
    }
    assert!(
        with_publish <= 2,
        "{with_publish} of {FILLS} read-through fills saw a PUBLISH"
    );
}

#[tokio::test]
async fn broadcast_confirmed_write_is_visible_through_the_other_instance() {
    let server = RedisServer::start();
    let a = instance(&server, Protocol::Broadcast).await;
    let b = instance(&server, Protocol::Broadcast).await;
    eventually("the writer hears its peer", async || {
        a.get_stats().await.unwrap().coherence.peers == 1
    })
    .await;
    a.set("user:1", 0u32, None).await.unwrap();
    let delivered = deliveries(&b).await;
    for v in 1..=10u32 {
        hold(&b, "user:1", v - 1).await;
        a.set("user:1", v, None).await.unwrap();
        assert_eq!(b.get::<u32>("user:1").await.unwrap().as_deref(), Some(&v));
    }
    let stats = a.get_stats().await.unwrap().coherence;
    assert!(stats.confirmed >= 10, "confirmed {}", stats.confirmed);
    assert_eq!(stats.unconfirmed, 0);
    // Broadcast: b heard every write (and acknowledged it).
    assert!(deliveries(&b).await >= delivered + 10);
}
