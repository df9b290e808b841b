//! ACL users: the commands ormcache needs, per feature (the README lists the same),
//! proven by running each feature's operations as a user allowed exactly those
//! commands on its own prefix and channels; a wrong password and a missing command
//! are errors of their own kind that name the operation.
#![allow(clippy::print_stdout)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
#[cfg(feature = "cluster")]
use std::time::Instant;

use ormcache::{Cache, ComputeOptions, DistributedCache, ErrorKind, HybridCache, QueryCache};
use support::RedisServer;
#[cfg(feature = "cluster")]
use support::poll_then_drop;

/// Every cache: reads, writes, batches, TTLs, clears, tags, stats, ping,
/// `get_or_compute` (the Lua scripts run `GET`, `SET`, `DEL`, `EXISTS`, `PTTL`,
/// `PUBLISH`: ACL checks commands inside scripts too). `AUTH` is always allowed.
const PLAIN: &[&str] = &[
    "del", "eval", "exists", "get", "hincrby", "incr", "mget", "pexpire", "ping", "pttl", "scan",
    "set", "unlink", "dbsize",
];

/// `HybridCache`, beside [`PLAIN`]: invalidation messages and their
/// acknowledgements, the server's identity; under the default `Protocol::Fleet`
/// also the holder registries (in its scripts), tracking, and `HELLO` (its
/// subscriber speaks RESP3).
const HYBRID: &[&str] = &[
    "publish",
    "subscribe",
    "info",
    "sadd",
    "smembers",
    "client|tracking",
    "client|caching",
    "client|id",
    "hello",
];

/// `ComputeOptions::lock(true)` (one load per cluster), beside [`PLAIN`]: nothing.
const LOCKS: &[&str] = &[];

/// A Redis Cluster, beside [`PLAIN`]: the slot map (redis-rs and ormcache), each
/// primary's identity, and `CLUSTER NODES` (a clear repeats its pass while a slot
/// migrates).
#[cfg(feature = "cluster")]
const CLUSTER: &[&str] = &["cluster|slots", "cluster|nodes", "info"];

/// A `HybridCache` on a cluster, beside [`PLAIN`], [`CLUSTER`] and [`HYBRID`]: the
/// fleet protocol's sharded channels (inboxes, acknowledgements, clears).
#[cfg(feature = "cluster")]
const FLEET_ON_A_CLUSTER: &[&str] = &["spublish", "ssubscribe"];

/// A user `app` with password `apppw` that may run `commands` on the keys and
/// channels under `prefix:` only.
async fn restricted_user(server: &RedisServer, prefix: &str, commands: &[&[&str]]) {
    let mut admin = server.connection().await;
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("app")
        .arg("reset")
        .arg("on")
        .arg(">apppw")
        .arg(format!("~{prefix}:*"))
        .arg(format!("&{prefix}:*"))
        .arg("-@all");
    for c in commands.iter().flat_map(|c| c.iter()) {
        setuser.arg(format!("+{c}"));
    }
    let _: () = setuser.query_async(&mut admin).await.unwrap();
}

/// The `ACL LOG` (what was denied), for failure messages.
async fn acl_log(server: &RedisServer) -> String {
    let mut admin = server.connection().await;
    let log: redis::Value = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    format!("{log:?}")
}

/// Commands the server ran since the last `CONFIG RESETSTAT`.
async fn commands_run(server: &RedisServer) -> BTreeSet<String> {
    let mut admin = server.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

async fn reset_stats(server: &RedisServer) {
    let mut admin = server.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// A `HybridCache` over `l2` with fast heartbeats, coherent (or the ACL logs of
/// `servers` say why not).
async fn coherent<'a>(
    l2: DistributedCache,
    servers: impl IntoIterator<Item = &'a RedisServer>,
) -> HybridCache {
    let h = HybridCache::builder(QueryCache::new(100, Duration::from_secs(60)).unwrap(), l2)
        .heartbeat_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    if !h.wait_coherent(Duration::from_secs(10)).await {
        let mut logs = String::new();
        for s in servers {
            logs.push_str(&acl_log(s).await);
        }
        panic!("never coherent: {logs}");
    }
    h
}

/// The cluster's user `app` on prefix `acl`.
#[cfg(feature = "cluster")]
async fn cluster_app(cluster: &ormcache_testing::RedisCluster) -> DistributedCache {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    DistributedCache::builder()
        .redis_url(format!("redis+cluster://app:apppw@{}", hosts.join(",")))
        .key_prefix("acl")
        .build()
        .await
        .unwrap()
}

async fn as_app(server: &RedisServer, prefix: &str) -> DistributedCache {
    DistributedCache::builder()
        .redis_url(format!("redis://app:apppw@127.0.0.1:{}", server.port()))
        .key_prefix(prefix)
        .stats_flush_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap()
}

/// Every operation of a plain cache; panics on the first error.
async fn plain_operations<C: Cache>(c: &C) {
    c.set("a", 1u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("a").await.unwrap().as_deref(), Some(&1));
    c.set_many(vec![("b", 2u32), ("c", 3u32)], None)
        .await
        .unwrap();
    assert_eq!(
        c.get_many::<u32, _>(&["a", "b", "x"]).await.unwrap().len(),
        3
    );
    assert!(c.exists("b").await.unwrap());
    c.ttl("b").await.unwrap();
    assert!(c.expire("b", Duration::from_secs(60)).await.unwrap());
    assert!(c.delete("a").await.unwrap());
    assert_eq!(c.delete_many(&["b"]).await.unwrap(), 1);
    c.set_with_tags("t", 4u32, None, &["group"]).await.unwrap();
    assert_eq!(c.get::<u32>("t").await.unwrap().as_deref(), Some(&4));
    c.invalidate_tag("group").await.unwrap();
    assert_eq!(c.get::<u32>("t").await.unwrap(), None);
    let v = c
        .get_or_compute("computed", None, || async { 5u32 })
        .await
        .unwrap();
    assert_eq!(*v, 5);
    c.clear_pattern("c*").await.unwrap();
    c.clear().await.unwrap();
    c.ping().await.unwrap();
    c.get_stats().await.unwrap();
}

async fn lock_operations(c: &DistributedCache) {
    let options = ComputeOptions::new().lock(true);
    let v = c
        .get_or_compute_with("locked", options, || async { 6u32 })
        .await
        .unwrap();
    assert_eq!(*v, 6);
}

/// Runs `scenario` as the restricted user allowed `allowed`; the server ran only
/// allowed commands (beside the test's own admin calls) and the cache counted no
/// error.
async fn check(name: &str, allowed: &[&[&str]], scenario: impl AsyncFnOnce(&RedisServer)) {
    let server = RedisServer::start();
    restricted_user(&server, "acl", allowed).await;
    reset_stats(&server).await;
    scenario(&server).await;
    let ran = commands_run(&server).await;
    println!("{name}: ran {ran:?}");
    let allowed: BTreeSet<String> = allowed
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| (*c).to_owned())
        .chain(["auth", "acl|log", "info", "config|resetstat"].map(str::to_owned))
        .collect();
    let extra: Vec<&String> = ran.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "{name} ran commands outside its list: {extra:?}\nACL LOG: {}",
        acl_log(&server).await
    );
}

#[tokio::test]
async fn a_plain_cache_needs_only_its_listed_commands() {
    check("plain", &[PLAIN], async |server| {
        let c = as_app(server, "acl").await;
        plain_operations(&c).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let stats = c.get_stats().await.unwrap();
        assert_eq!(stats.errors, 0, "{}", acl_log(server).await);
        assert!(stats.sets > 0, "the stats flush reached Redis: {stats:?}");
    })
    .await;
}

#[tokio::test]
async fn locks_need_only_the_plain_commands() {
    check("locks", &[PLAIN, LOCKS], async |server| {
        let c = as_app(server, "acl").await;
        lock_operations(&c).await;
        assert_eq!(
            c.get_stats().await.unwrap().errors,
            0,
            "{}",
            acl_log(server).await
        );
    })
    .await;
}

#[tokio::test]
async fn a_hybrid_cache_needs_only_its_listed_commands() {
    check("hybrid", &[PLAIN, HYBRID], async |server| {
        let a = coherent(as_app(server, "acl").await, [server]).await;
        let b = coherent(as_app(server, "acl").await, [server]).await;
        plain_operations(&a).await;
        a.set("shared", 1u32, None).await.unwrap();
        assert_eq!(b.get::<u32>("shared").await.unwrap().as_deref(), Some(&1));
        a.set("shared", 2u32, None).await.unwrap();
        assert_eq!(b.get::<u32>("shared").await.unwrap().as_deref(), Some(&2));
        // Heartbeats and the identity check run a few times.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for h in [&a, &b] {
            let stats = h.get_stats().await.unwrap();
            assert!(stats.coherence.coherent, "{stats:?}");
            assert_eq!(stats.coherence.fallbacks, 0, "{}", acl_log(server).await);
        }
    })
    .await;
}

/// Without `CLIENT` the fleet protocol runs untracked (a warning) rather than not
/// at all: writes through ormcache are still confirmed on every holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_cache_without_client_runs_untracked() {
    let untracked: Vec<&str> = HYBRID
        .iter()
        .copied()
        .filter(|c| !c.starts_with("client|"))
        .collect();
    let server = &RedisServer::start();
    restricted_user(server, "acl", &[PLAIN, &untracked]).await;
    {
        let a = coherent(as_app(server, "acl").await, [server]).await;
        let b = coherent(as_app(server, "acl").await, [server]).await;
        for v in 1..=5u32 {
            a.set("shared", v, None).await.unwrap();
            assert_eq!(b.get::<u32>("shared").await.unwrap().as_deref(), Some(&v));
            assert_eq!(b.get::<u32>("shared").await.unwrap().as_deref(), Some(&v));
        }
        let stats = b.get_stats().await.unwrap();
        assert!(stats.coherence.coherent, "{stats:?}");
        assert!(stats.l1.hits > 0, "b served from L1: {stats:?}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_naming_the_operation() {
    let server = RedisServer::start();
    restricted_user(&server, "acl", &[PLAIN]).await;
    let err = DistributedCache::builder()
        .redis_url(format!("redis://app:wrong@127.0.0.1:{}", server.port()))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.is_access_denied());
    assert!(
        err.to_string().starts_with("authentication failed in `"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn a_missing_command_is_a_permission_error_naming_the_operation() {
    let server = RedisServer::start();
    // Everything but EXISTS.
    let without_exists: Vec<&str> = PLAIN.iter().copied().filter(|c| *c != "exists").collect();
    restricted_user(&server, "acl", &[&without_exists]).await;
    let c = as_app(&server, "acl").await;
    c.set("k", 1u32, None).await.unwrap();
    let err = c.exists("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoPermission, "{err}");
    assert!(err.is_access_denied());
    assert_eq!(err.operation(), "exists");
    assert!(
        err.to_string()
            .starts_with("permission denied in `exists` of key \"k\""),
        "{err}"
    );
    // A key outside the prefix is refused the same way, by Redis.
    let mut app = redis::Client::open(format!("redis://app:apppw@127.0.0.1:{}", server.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let outside: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("other:k").query_async(&mut app).await;
    assert_eq!(outside.unwrap_err().code(), Some("NOPERM"));
}

#[cfg(feature = "cluster")]
#[tokio::test]
async fn a_cluster_needs_only_its_listed_commands() {
    let cluster = ormcache_testing::RedisCluster::start();
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    // A prefix with a hash tag keeps every key on one slot's node; without one the
    // keys spread over the three primaries, which the ACL pattern below allows.
    for prefix in ["acl", "{acl}"] {
        for node in cluster.nodes() {
            restricted_user(node, prefix, &[PLAIN, CLUSTER]).await;
        }
        let c = DistributedCache::builder()
            .redis_url(format!("redis+cluster://app:apppw@{}", hosts.join(",")))
            .key_prefix(prefix)
            .stats_flush_interval(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        plain_operations(&c).await;
        lock_operations(&c).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let stats = c.get_stats().await.unwrap();
        let mut logs = String::new();
        for node in cluster.nodes() {
            logs.push_str(&acl_log(node).await);
        }
        assert_eq!(stats.errors, 0, "{prefix}: {logs}");
    }
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_cache_on_a_cluster_needs_only_its_listed_commands() {
    let cluster = ormcache_testing::RedisCluster::start();
    let allowed = [PLAIN, CLUSTER, HYBRID, FLEET_ON_A_CLUSTER];
    for node in cluster.nodes() {
        restricted_user(node, "acl", &allowed).await;
        reset_stats(node).await;
    }
    let a = coherent(cluster_app(&cluster).await, cluster.nodes()).await;
    let b = coherent(cluster_app(&cluster).await, cluster.nodes()).await;
    for i in 0..10u32 {
        let k = format!("shared:{i}");
        a.set(&k, i, None).await.unwrap();
        assert_eq!(b.get::<u32>(&k).await.unwrap().as_deref(), Some(&i));
        a.set(&k, i + 1, None).await.unwrap();
        assert_eq!(b.get::<u32>(&k).await.unwrap().as_deref(), Some(&(i + 1)));
    }
    a.clear().await.unwrap();
    // Heartbeats and the tracking check run a few times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut logs = String::new();
    for node in cluster.nodes() {
        logs.push_str(&acl_log(node).await);
    }
    // Nothing was denied (tracking included, which would otherwise be turned
    // off with a warning).
    assert!(!logs.contains("reason"), "ACL LOG: {logs}");
    for h in [&a, &b] {
        let stats = h.get_stats().await.unwrap();
        assert!(stats.coherence.coherent, "{stats:?}");
        assert_eq!(stats.coherence.fallbacks, 0, "{logs}");
        assert_eq!(stats.coherence.unconfirmed, 0, "{logs}");
    }
    let allowed: BTreeSet<String> = allowed
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| (*c).to_owned())
        .chain(["auth", "acl|log", "info", "config|resetstat", "acl|setuser"].map(str::to_owned))
        .collect();
    for node in cluster.nodes() {
        let ran = commands_run(node).await;
        let extra: Vec<&String> = ran.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "node {} ran {extra:?}\nACL LOG: {logs}",
            node.port()
        );
    }
}

/// On a cluster without `CLIENT` (tracking off: writes reach holders only as
/// messages), the holders of a key hear of a write through the writer's `SPUBLISH`,
/// sent in a second round trip after the script that emptied their registry. A
/// writer dropped at any point after its write still has them sent the message:
/// the holder never serves the old value once the new one is in Redis (beyond
/// delivery; its L1 copy would otherwise live 60 s).
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_writer_still_reaches_untracked_holders_on_a_cluster() {
    let cluster = ormcache_testing::RedisCluster::start();
    let untracked: Vec<&str> = HYBRID
        .iter()
        .copied()
        .filter(|c| !c.starts_with("client|"))
        .collect();
    for node in cluster.nodes() {
        restricted_user(
            node,
            "acl",
            &[PLAIN, CLUSTER, &untracked, FLEET_ON_A_CLUSTER],
        )
        .await;
    }
    let a = coherent(cluster_app(&cluster).await, cluster.nodes()).await;
    let b = coherent(cluster_app(&cluster).await, cluster.nodes()).await;
    let mut dropped = 0;
    for polls in 1..=200usize {
        let old = u32::try_from(polls).unwrap() * 10;
        a.set("k", old, None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(b.get::<u32>("k").await.unwrap().as_deref() == Some(&old)
            && b.l1().exists_sync("k"))
        {
            assert!(Instant::now() < deadline, "b never held k = {old}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = poll_then_drop(a.set("k", old + 1, None), polls).await;
        // A dropped write may still be on its way to Redis.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stored = a.l2().get::<u32>("k").await.unwrap().map(|v| *v);
        if stored == Some(old + 1) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let seen = b.get::<u32>("k").await.unwrap().map(|v| *v);
                if seen == Some(old + 1) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "after {polls} polls: b still serves {seen:?}, Redis holds {stored:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(done) = done {
            // Finished within `polls` polls: every smaller count dropped it pending.
            println!("the write finished within {polls} polls");
            if let Err(e) = done {
                panic!("the write failed within {polls} polls: {e:?}");
            }
            break;
        }
        dropped += 1;
    }
    // The write is pending after its first poll (both round trips run in a task
    // of the cache) and usually after its second (the holders' acknowledgement);
    // when the acknowledgement is in before the second poll, the write is done
    // there (seen in about one run in ten).
    assert!(dropped >= 1, "the write never stayed pending");
    let stats = a.get_stats().await.unwrap();
    println!("dropped writes: {dropped}; {:?}", stats.coherence);
}
