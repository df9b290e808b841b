#![cfg(feature = "cluster")]
#![allow(clippy::print_stdout)]
//! Every `DistributedCache` operation, memoization and `HybridCache` coherence on a
//! real three-primary Redis Cluster (`redis-cli --cluster create`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ormcache::tenant::{self, TenantId};
use ormcache::{Cache, ComputeOptions, DistributedCache, HybridCache, Protocol, QueryCache, Ttl};
use support::{ClusterOptions, RedisCluster, cluster_cache, cluster_config};

/// The keys stored on each node (raw, every prefix).
fn keys_per_node(cluster: &RedisCluster) -> Vec<BTreeSet<String>> {
    (0..cluster.nodes().len())
        .map(|i| {
            let mut conn = cluster.client(i).get_connection().unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
            keys.into_iter().collect()
        })
        .collect()
}

fn with_prefix(keys: &BTreeSet<String>, prefix: &str) -> usize {
    keys.iter().filter(|k| k.starts_with(prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_operations_and_batches_across_slots() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "app").await;
    assert!(c.ping().await.unwrap() < Duration::from_secs(5));

    c.set("user:1", "John".to_string(), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        c.get::<String>("user:1")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("John")
    );
    assert!(c.exists("user:1").await.unwrap());
    assert!(
        matches!(c.ttl("user:1").await.unwrap(), Ttl::Remaining(d) if d <= Duration::from_secs(60) && d > Duration::from_secs(50))
    );
    assert!(c.expire("user:1", Duration::from_secs(600)).await.unwrap());
    assert!(
        matches!(c.ttl("user:1").await.unwrap(), Ttl::Remaining(d) if d > Duration::from_secs(500))
    );
    assert!(c.delete("user:1").await.unwrap());
    assert!(!c.delete("user:1").await.unwrap());
    assert_eq!(c.get::<String>("user:1").await.unwrap(), None);
    assert_eq!(c.ttl("user:1").await.unwrap(), Ttl::Missing);

    // 200 keys: they hash to many slots on all three nodes.
    let entries: Vec<(String, u32)> = (0..200).map(|i| (format!("item:{i}"), i)).collect();
    c.set_many(entries.clone(), None).await.unwrap();
    let per_node = keys_per_node(&cluster);
    for (i, keys) in per_node.iter().enumerate() {
        assert!(
            with_prefix(keys, "app:item:") > 20,
            "node {i} holds {keys:?}"
        );
    }
    let names: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let mut asked = names.clone();
    asked.push("missing".into());
    let got = c.get_many::<u32, _>(&asked).await.unwrap();
    let mut want: Vec<Option<u32>> = (0..200).map(Some).collect();
    want.push(None);
    assert_eq!(
        got.into_iter().map(|v| v.map(|v| *v)).collect::<Vec<_>>(),
        want
    );
    // Coalesced reads: the batches' `MGET`s span every primary too.
    let co = DistributedCache::create(cluster_config(&cluster, "app").coalesce_gets(true))
        .await
        .unwrap();
    let reads = asked.iter().map(|k| co.get::<u32>(k));
    let got = futures_util::future::join_all(reads).await;
    assert_eq!(
        got.into_iter()
            .map(|v| v.unwrap().map(|v| *v))
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(c.delete_many(&names[..100]).await.unwrap(), 100);
    let got = c.get_many::<u32, _>(&names).await.unwrap();
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 100);
    assert!(got[..100].iter().all(Option::is_none));

    // Stats: the hash is shared, keys are counted on every primary.
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.keys_count, 100);
    assert!(stats.keys_count_exact);
    assert!(stats.sets >= 201, "{stats:?}");
    c.close().await.unwrap();
    assert!(
        c.get::<u32>("item:150")
            .await
            .unwrap_err()
            .to_string()
            .contains("closed")
    );
}

/// Batches are grouped by the slot map read at connect time; slots that moved
/// since then are redirected, and the batch still reads and writes every key.
///
/// Known issue, hence ignored: in about one run in three, the first batch after
/// the move times out and so does the next one, as redis-rs redirects the
/// pipelines that met a MOVED (the same happens with one pipeline per slot, the
/// splitting before grouping by primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known issue: a batch after a resharding can time out (also with per-slot pipelines)"]
async fn batches_follow_slots_that_moved_since_the_map_was_read() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "mv").await;
    let names: Vec<String> = (0..200).map(|i| format!("item:{i}")).collect();
    let entries = |base: u32| -> Vec<(String, u32)> {
        names
            .iter()
            .zip(base..)
            .map(|(k, v)| (k.clone(), v))
            .collect()
    };
    c.set_many(entries(0), None).await.unwrap();
    // Three slots of the batch move to another primary.
    tokio::task::block_in_place(|| {
        for key in ["mv:item:0", "mv:item:1", "mv:item:2"] {
            let slot = cluster.key_slot(key);
            cluster.migrate_slot(slot, (cluster.slot_owner(slot) + 1) % 3);
        }
    });
    let values = |got: Vec<Option<Arc<u32>>>| -> Vec<Option<u32>> {
        got.into_iter().map(|v| v.map(|v| *v)).collect()
    };
    let want = |base: u32| -> Vec<Option<u32>> { (base..base + 200).map(Some).collect() };
    // The first batch after the move may fail within the command timeout (see
    // above); the map is then read again.
    let first = match c.get_many(&names).await {
        Ok(got) => got,
        Err(e) => {
            println!("first batch after the move: {e}");
            c.get_many(&names).await.unwrap()
        }
    };
    assert_eq!(values(first), want(0));
    c.set_many(entries(1000), None).await.unwrap();
    assert_eq!(values(c.get_many(&names).await.unwrap()), want(1000));
    for (k, v) in entries(1000).iter().take(3) {
        assert_eq!(c.get::<u32>(k).await.unwrap().map(|v| *v), Some(*v));
    }
    // (A batch redirected while its map was stale may have removed some keys
    // in an attempt before the one that counts.)
    let removed = c.delete_many(&names[..100]).await.unwrap();
    assert!(removed <= 100, "{removed}");
    let got = values(c.get_many(&names).await.unwrap());
    assert_eq!(got[..100], vec![None; 100]);
    assert_eq!(got[100..], want(1000)[100..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clears_reach_every_primary_and_stay_in_the_prefix() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "app").await;
    let other = cluster_cache(&cluster, "other").await;
    for i in 0..150 {
        c.set(&format!("user:{i}"), i, None).await.unwrap();
        c.set(&format!("post:{i}"), i, None).await.unwrap();
        other.set(&format!("user:{i}"), i, None).await.unwrap();
    }
    let acme = TenantId::new("acme").unwrap();
    tenant::scope(acme.clone(), async {
        c.set("user:1", 1, None).await.unwrap();
    })
    .await;
    assert_eq!(c.clear_pattern("user:*").await.unwrap(), 150);
    let per_node = keys_per_node(&cluster);
    for keys in &per_node {
        assert_eq!(with_prefix(keys, "app:user:"), 0);
        assert!(with_prefix(keys, "app:post:") > 10);
        assert!(with_prefix(keys, "other:user:") > 10);
    }
    assert_eq!(c.clear().await.unwrap(), 150);
    let per_node = keys_per_node(&cluster);
    for keys in &per_node {
        assert_eq!(with_prefix(keys, "app:post:"), 0);
        assert!(with_prefix(keys, "other:user:") > 10);
    }
    // Tenants are not touched by an unscoped clear.
    let kept = tenant::scope(acme.clone(), async {
        c.get::<i32>("user:1").await.unwrap()
    })
    .await;
    assert_eq!(kept.map(|v| *v), Some(1));
    assert_eq!(tenant::clear_tenant(&c, acme).await.unwrap(), 1);
    assert_eq!(
        other.get::<i32>("user:7").await.unwrap().map(|v| *v),
        Some(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "d").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, runs) = (c.clone(), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("k", None, || async {
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
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Stored: the next call does not load.
    let again = c
        .get_or_compute("k", None, || async { "reloaded".to_string() })
        .await
        .unwrap();
    assert_eq!(*again, "loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_runs_the_loader_once_across_three_instances() {
    let cluster = RedisCluster::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        // Three caches with their own connections: three "processes".
        let c = cluster_cache(&cluster, "lock").await;
        for _ in 0..50 {
            let (c, runs) = (c.clone(), Arc::clone(&runs));
            tasks.push(tokio::spawn(async move {
                c.get_or_compute_with("report", ComputeOptions::new().lock(true), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "report".to_string()
                })
                .await
                .unwrap()
            }));
        }
    }
    for t in tasks {
        assert_eq!(*t.await.unwrap(), "report");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A dead holder (a lease nobody releases) is taken over once it expires.
    let c = cluster_cache(&cluster, "lock").await;
    let held = c.get_or_compute_with(
        "dead",
        ComputeOptions::new()
            .lock(true)
            .lock_ttl(Duration::from_millis(300)),
        || async {
            // The "holder" never finishes: this call is dropped below.
            std::future::pending::<u32>().await
        },
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), held)
            .await
            .is_err()
    );
    let v = c
        .get_or_compute_with(
            "dead",
            ComputeOptions::new()
                .lock(true)
                .lock_wait(Duration::from_secs(10)),
            || async { 7u32 },
        )
        .await
        .unwrap();
    assert_eq!(*v, 7);
}

/// Steady reads of a hot key across its expiry: with early refresh it never
/// expires (one miss: the first load). Also: a lazily connected cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_keeps_hot_keys_from_expiring() {
    let cluster = RedisCluster::start();
    let c = DistributedCache::create(cluster_config(&cluster, "r").connect_lazily(true))
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let opts = || {
        ComputeOptions::new()
            .ttl(Duration::from_millis(400))
            .refresh_ahead(0.5)
    };
    let deadline = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < deadline {
        let runs = Arc::clone(&runs);
        let v = c
            .get_or_compute_with("hot", opts(), || async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                n
            })
            .await
            .unwrap();
        assert!(*v >= 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs >= 3, "the key was never refreshed ({runs} loads)");
    assert_eq!(
        c.get_stats().await.unwrap().local.misses,
        1,
        "a reader found the key expired"
    );
}

/// A loader that read the database before an invalidation must not store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_during_a_load_wins() {
    let cluster = RedisCluster::start();
    let plain = cluster_cache(&cluster, "d").await;
    let hybrid = HybridCache::builder(
        QueryCache::new(100, Duration::from_secs(60)).unwrap(),
        cluster_cache(&cluster, "h").await,
    )
    .heartbeat_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    assert!(hybrid.wait_coherent(Duration::from_secs(10)).await);
    let caches = [
        ("distributed", ormcache::AnyCache::from(plain)),
        ("hybrid", ormcache::AnyCache::from(hybrid)),
    ];
    for (name, cache) in &caches {
        for how in ["delete", "clear", "clear_pattern", "tag"] {
            let key = format!("user:{how}");
            let invalidate = async {
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
                    _ => cache.invalidate_tag("users").await.unwrap(),
                }
            };
            let label = format!("{name}/{how}");
            support::assert_invalidation_during_a_load_wins(
                &label,
                cache,
                &key,
                ComputeOptions::new().tags(["users"]),
                invalidate,
            )
            .await;
        }
        support::assert_a_load_is_stored(name, cache).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_spanning_many_slots_invalidate_exactly_their_entries() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "t").await;
    for i in 0..300u32 {
        let tag = format!("group:{}", i % 3);
        c.set_with_tags(&format!("tagged:{i}"), i, None, &[tag.as_str(), "all"])
            .await
            .unwrap();
        c.set(&format!("plain:{i}"), i, None).await.unwrap();
    }
    // Read-through with tags too.
    let v = c
        .get_or_compute_with(
            "computed",
            ComputeOptions::new().tags(["group:1"]),
            || async { 1u32 },
        )
        .await
        .unwrap();
    assert_eq!(*v, 1);
    assert_eq!(c.get::<u32>("computed").await.unwrap().map(|v| *v), Some(1));

    c.invalidate_tag("group:1").await.unwrap();
    for i in 0..300u32 {
        let got = c
            .get::<u32>(&format!("tagged:{i}"))
            .await
            .unwrap()
            .map(|v| *v);
        assert_eq!(got, (i % 3 != 1).then_some(i), "tagged:{i}");
        assert_eq!(
            c.get::<u32>(&format!("plain:{i}"))
                .await
                .unwrap()
                .map(|v| *v),
            Some(i)
        );
    }
    assert_eq!(c.get::<u32>("computed").await.unwrap(), None);
    // Computed again, and stored again under the new token.
    let v = c
        .get_or_compute_with(
            "computed",
            ComputeOptions::new().tags(["group:1"]),
            || async { 2u32 },
        )
        .await
        .unwrap();
    assert_eq!(*v, 2);
    assert_eq!(c.get::<u32>("computed").await.unwrap().map(|v| *v), Some(2));
    c.invalidate_tag("all").await.unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("tagged:{i}")).collect();
    assert!(
        c.get_many::<u32, _>(&names)
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_versioning_clears_in_o1() {
    let cluster = RedisCluster::start();
    let c = DistributedCache::create(cluster_config(&cluster, "ns").namespace_versioning(true))
        .await
        .unwrap();
    for i in 0..100u32 {
        c.set(&format!("k:{i}"), i, None).await.unwrap();
    }
    assert_eq!(c.get::<u32>("k:5").await.unwrap().map(|v| *v), Some(5));
    assert_eq!(c.clear().await.unwrap(), 0);
    for i in 0..100u32 {
        assert_eq!(c.get::<u32>(&format!("k:{i}")).await.unwrap(), None);
    }
    c.set("k:5", 55u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("k:5").await.unwrap().map(|v| *v), Some(55));
    // The background sweep removes the orphans from every primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: usize = keys_per_node(&cluster)
            .iter()
            .map(|k| with_prefix(k, "ns:k:"))
            .sum();
        if left == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} entries left after the sweep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let cluster = RedisCluster::start();
    let c = cluster_cache(&cluster, "app").await;
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    for (t, v) in [(&acme, 1u32), (&globex, 2u32)] {
        tenant::scope(t.clone(), async {
            c.set("products", v, None).await.unwrap();
            let got = c
                .get_or_compute_with(
                    "computed",
                    ComputeOptions::new().tags(["p"]),
                    || async move { v * 10 },
                )
                .await
                .unwrap();
            assert_eq!(*got, v * 10);
        })
        .await;
    }
    assert_eq!(c.get::<u32>("products").await.unwrap(), None);
    let read = |t: TenantId, key: &'static str| {
        let c = c.clone();
        tenant::scope(
            t,
            async move { c.get::<u32>(key).await.unwrap().map(|v| *v) },
        )
    };
    assert_eq!(read(acme.clone(), "products").await, Some(1));
    assert_eq!(read(globex.clone(), "products").await, Some(2));
    tenant::scope(acme.clone(), async { c.invalidate_tag("p").await.unwrap() }).await;
    assert_eq!(read(acme.clone(), "computed").await, None);
    assert_eq!(read(globex.clone(), "computed").await, Some(20));
    // "products" ("computed" went when it was read stale).
    assert_eq!(tenant::clear_tenant(&c, acme.clone()).await.unwrap(), 1);
    assert_eq!(read(acme, "products").await, None);
    assert_eq!(read(globex, "products").await, Some(2));
}

async fn hybrid(cluster: &RedisCluster, prefix: &str) -> HybridCache {
    hybrid_with(cluster_config(cluster, prefix)).await
}

/// A `HybridCache` with the cluster's default protocol.
async fn hybrid_with(config: ormcache::DistributedConfig) -> HybridCache {
    hybrid_as(config, None).await
}

async fn hybrid_as(config: ormcache::DistributedConfig, protocol: Option<Protocol>) -> HybridCache {
    let mut builder = HybridCache::builder(
        QueryCache::new(1000, Duration::from_secs(60)).unwrap(),
        DistributedCache::create(config).await.unwrap(),
    )
    .heartbeat_interval(Duration::from_millis(100));
    if let Some(p) = protocol {
        builder = builder.protocol(p);
    }
    let c = builder.build().unwrap();
    assert!(c.wait_coherent(Duration::from_secs(10)).await);
    c
}

/// The node with a subscriber of `channel` (pub/sub state is per node; the fleet
/// protocol's channels are sharded).
fn subscribed_node(cluster: &RedisCluster, channel: &str, protocol: Protocol) -> usize {
    let numsub = match protocol {
        Protocol::Broadcast => "NUMSUB",
        _ => "SHARDNUMSUB",
    };
    let counts: Vec<i64> = (0..cluster.nodes().len())
        .map(|i| {
            let mut conn = cluster.client(i).get_connection().unwrap();
            let (_, count): (String, i64) = redis::cmd("PUBSUB")
                .arg(numsub)
                .arg(channel)
                .query(&mut conn)
                .unwrap();
            count
        })
        .collect();
    let found: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0).collect();
    assert_eq!(found.len(), 1, "subscribers per node: {counts:?}");
    found[0]
}

async fn resubscriptions(c: &HybridCache) -> u64 {
    c.get_stats().await.unwrap().coherence.resubscriptions
}

/// Polls until `c`'s invalidation stream was established again after `before`
/// subscriptions (its node went away: it subscribed elsewhere).
async fn resubscribed(c: &HybridCache, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while resubscriptions(c).await <= before {
        assert!(
            Instant::now() < deadline,
            "never resubscribed after its node died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `b` reads `want` at `key`.
async fn eventually_reads(b: &HybridCache, key: &str, want: Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = b.get::<u32>(key).await.ok().flatten().map(|v| *v);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_caches_stay_coherent_and_recover_from_a_lost_node() {
    stay_coherent_and_recover_from_a_lost_node(Protocol::Fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_hybrid_caches_stay_coherent_and_recover_from_a_lost_node() {
    stay_coherent_and_recover_from_a_lost_node(Protocol::Broadcast).await;
}

async fn stay_coherent_and_recover_from_a_lost_node(protocol: Protocol) {
    let cluster = RedisCluster::start();
    let b = hybrid_as(cluster_config(&cluster, "h"), Some(protocol)).await;
    // Pub/sub state is per node: the one with b's subscription to the channel
    // every instance hears.
    let listening = subscribed_node(&cluster, "h:__oc:inv", protocol);
    let a = hybrid_as(cluster_config(&cluster, "h"), Some(protocol)).await;
    for i in 0..50u32 {
        a.set(&format!("k:{i}"), i, None).await.unwrap();
    }
    for i in 0..50u32 {
        // Now in b's L1.
        assert_eq!(
            b.get::<u32>(&format!("k:{i}")).await.unwrap().map(|v| *v),
            Some(i)
        );
    }
    for i in 0..50u32 {
        a.set(&format!("k:{i}"), i + 100, None).await.unwrap();
    }
    for i in 0..50u32 {
        eventually_reads(&b, &format!("k:{i}"), Some(i + 100)).await;
    }
    a.delete("k:0").await.unwrap();
    eventually_reads(&b, "k:0", None).await;
    a.clear_pattern("k:1*").await.unwrap();
    eventually_reads(&b, "k:1", None).await;
    eventually_reads(&b, "k:15", None).await;
    eventually_reads(&b, "k:2", Some(102)).await;

    // The node b's subscription is on goes away: b notices and resubscribes
    // elsewhere; once the node is back (the cluster is down without it) both are
    // coherent again.
    let before = resubscriptions(&b).await;
    cluster.kill(listening);
    if protocol == Protocol::Broadcast {
        // Any node carries the broadcast channel.
        resubscribed(&b, before).await;
    } else {
        // The fleet protocol's channels are sharded and tracking runs on every
        // primary: the stream is down until the node (and the cluster) is back.
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.is_coherent() {
            assert!(Instant::now() < deadline, "b never noticed its node died");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.restart(listening);
    cluster.wait_ok();
    resubscribed(&b, before).await;
    assert!(a.wait_coherent(Duration::from_secs(30)).await);
    assert!(b.wait_coherent(Duration::from_secs(30)).await);
    a.set("after", 1u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("after").await.unwrap().map(|v| *v), Some(1));
    a.set("after", 2u32, None).await.unwrap();
    eventually_reads(&b, "after", Some(2)).await;
}

/// Reads `key` through `c` until c's L1 holds it with `value` (a fill may lose a
/// race with an invalidation still in flight).
async fn hold(c: &HybridCache, key: &str, value: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(c.get::<u32>(key).await.unwrap().as_deref() == Some(&value) && c.l1().exists_sync(key))
    {
        assert!(Instant::now() < deadline, "L1 never held {key} = {value}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `cmd` on the primary that serves `key`'s slot.
fn on_owner<T: redis::FromRedisValue>(cluster: &RedisCluster, key: &str, cmd: &redis::Cmd) -> T {
    let owner = cluster.slot_owner(cluster.key_slot(key));
    let mut conn = cluster.client(owner).get_connection().unwrap();
    cmd.query(&mut conn).unwrap()
}

/// Under the fleet protocol, L1 copies stay coherent while their slots move
/// between primaries: the move deletes each key on its old primary, which Redis
/// reports as an invalidation; copies read from the new primary are registered
/// and tracked there, so a write through another instance is fresh at once and a
/// write by another Redis client evicts them; an instance whose inbox's slot
/// moved is unsubscribed by Redis, subscribes again on the new owner and is
/// reached there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_copies_stay_coherent_while_slots_move() {
    let cluster = RedisCluster::start();
    let a = hybrid_as(cluster_config(&cluster, "mv"), Some(Protocol::Fleet)).await;
    let b = hybrid_as(cluster_config(&cluster, "mv"), Some(Protocol::Fleet)).await;
    let keys: Vec<String> = (0..12).map(|i| format!("k:{i}")).collect();
    for (i, k) in (0u32..).zip(&keys) {
        a.set(k, i, None).await.unwrap();
        hold(&b, k, i).await;
    }
    tokio::task::block_in_place(|| {
        for k in &keys {
            let slot = cluster.key_slot(&format!("mv:{k}"));
            cluster.migrate_slot(slot, (cluster.slot_owner(slot) + 1) % 3);
        }
    });
    for (i, k) in (0u32..).zip(&keys) {
        hold(&b, k, i).await;
        a.set(k, i + 100, None).await.unwrap();
        assert_eq!(
            b.get::<u32>(k).await.unwrap().as_deref(),
            Some(&(i + 100)),
            "{k}: a confirmed write after its slot moved"
        );
    }

    // Another Redis client writes on the new owners.
    a.l2().set("scratch", 7u32, None).await.unwrap();
    let scratch = a.l2().redis_key("scratch");
    let seven: Vec<u8> = tokio::task::block_in_place(|| {
        on_owner(&cluster, &scratch, redis::cmd("GET").arg(&scratch))
    });
    for (i, k) in (0u32..).zip(&keys) {
        hold(&b, k, i + 100).await;
        let full = b.l2().redis_key(k);
        let () = tokio::task::block_in_place(|| {
            on_owner(&cluster, &full, redis::cmd("SET").arg(&full).arg(&seven))
        });
        eventually_reads(&b, k, Some(7)).await;
    }

    // The inboxes' slots move: Redis unsubscribes both instances, which
    // subscribe again where the channels live now.
    let before = resubscriptions(&b).await;
    tokio::task::block_in_place(|| {
        let inboxes: Vec<String> = (0..3)
            .flat_map(|i| {
                let mut conn = cluster.client(i).get_connection().unwrap();
                redis::cmd("PUBSUB")
                    .arg("SHARDCHANNELS")
                    .arg("mv:__oc:inv:to:*")
                    .query::<Vec<String>>(&mut conn)
                    .unwrap()
            })
            .collect();
        assert_eq!(inboxes.len(), 2, "{inboxes:?}");
        for inbox in &inboxes {
            let slot = cluster.key_slot(inbox);
            cluster.migrate_slot(slot, (cluster.slot_owner(slot) + 1) % 3);
        }
    });
    resubscribed(&b, before).await;
    assert!(a.wait_coherent(Duration::from_secs(30)).await);
    assert!(b.wait_coherent(Duration::from_secs(30)).await);
    hold(&b, "k:0", 7).await;
    a.set("k:0", 8u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k:0").await.unwrap().as_deref(), Some(&8));
}

/// A pipeline that meets a slot in the middle of its migration never copies a
/// key to the importing node: there, the registry of an entry's holders (which
/// the old owner still has) would become a second copy, and moving it would fail
/// with `BUSYKEY` (`redis-cli --cluster reshard` stops there). The reader's
/// pipeline registers on the old owner, then its read of the entry (moved
/// already) is redirected with `ASK`, and redis-rs sends the whole pipeline
/// again to the new owner, after `ASKING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_redirected_mid_migration_leaves_no_second_copy() {
    let cluster = RedisCluster::start();
    let a = hybrid_as(cluster_config(&cluster, "busy"), Some(Protocol::Fleet)).await;
    let b = hybrid_as(cluster_config(&cluster, "busy"), Some(Protocol::Fleet)).await;
    let c = hybrid_as(cluster_config(&cluster, "busy"), Some(Protocol::Fleet)).await;
    a.set("k", 1u32, None).await.unwrap();
    hold(&b, "k", 1).await;
    let entry = a.l2().redis_key("k");
    let slot = cluster.key_slot(&entry);
    let to = (cluster.slot_owner(slot) + 1) % 3;
    let from = tokio::task::block_in_place(|| {
        let from = cluster.begin_migration(slot, to);
        assert!(
            cluster.keys_in_slot(from, slot) >= 2,
            "the holder registry shares the entry's slot"
        );
        cluster.migrate_keys(from, to, &[&entry]);
        from
    });
    // Redirected (the pipeline may fail while the slot is split: its keys are
    // on two nodes).
    let read = c.get::<u32>("k").await;
    println!("read mid-migration: {read:?}");
    tokio::task::block_in_place(|| {
        assert_eq!(
            cluster.keys_in_slot(to, slot),
            1,
            "the importing node holds more than the entry moved to it"
        );
        loop {
            let keys: Vec<Vec<u8>> = cluster
                .client(from)
                .get_connection()
                .and_then(|mut conn| {
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(10)
                        .query(&mut conn)
                })
                .unwrap();
            if keys.is_empty() {
                break;
            }
            cluster.migrate_keys(from, to, &keys);
        }
        cluster.end_migration(slot, from, to);
    });
    a.set("k", 2u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&2));
    assert_eq!(c.get::<u32>("k").await.unwrap().as_deref(), Some(&2));
}

/// With replicas, a killed primary fails over; caches configured with that node as
/// their only seed resubscribe through a node the cluster reports and are coherent
/// again without the node ever coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_hybrid_caches_recover_from_a_failover_with_a_single_seed() {
    recover_from_a_failover_with_a_single_seed(Protocol::Fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_hybrid_caches_recover_from_a_failover_with_a_single_seed() {
    recover_from_a_failover_with_a_single_seed(Protocol::Broadcast).await;
}

async fn recover_from_a_failover_with_a_single_seed(protocol: Protocol) {
    let cluster = RedisCluster::start_with(&ClusterOptions::new().replicas(1));
    let seed = cluster.primaries()[0];
    let config = || {
        ormcache::DistributedConfig::new()
            .cluster_nodes([cluster.node_url(seed)])
            .key_prefix("fo")
            .socket_timeout(Duration::from_secs(2))
    };
    let a = hybrid_as(config(), Some(protocol)).await;
    let b = hybrid_as(config(), Some(protocol)).await;
    a.set("k", 1u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().map(|v| *v), Some(1));
    a.set("k", 2u32, None).await.unwrap();
    eventually_reads(&b, "k", Some(2)).await;

    let before = resubscriptions(&b).await;
    cluster.kill(seed);
    resubscribed(&b, before).await;
    cluster.wait_ok();
    assert!(!cluster.primaries().contains(&seed));
    assert!(
        a.wait_coherent(Duration::from_secs(30)).await,
        "a stayed degraded"
    );
    assert!(
        b.wait_coherent(Duration::from_secs(30)).await,
        "b stayed degraded"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.set("after", 1u32, None).await.is_err() {
        assert!(Instant::now() < deadline, "writes never worked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually_reads(&b, "after", Some(1)).await;
    a.set("after", 2u32, None).await.unwrap();
    eventually_reads(&b, "after", Some(2)).await;
    // The replica had the entry: it survived the failover.
    assert_eq!(b.get::<u32>("k").await.unwrap().map(|v| *v), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_calls_fast_and_the_cache_recovers() {
    let cluster = RedisCluster::start();
    let c = DistributedCache::create(
        cluster_config(&cluster, "f").socket_timeout(Duration::from_millis(250)),
    )
    .await
    .unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("k:{i}")).collect();
    for k in &keys {
        c.set(k, 1u32, None).await.unwrap();
    }
    cluster.kill(1);
    let started = Instant::now();
    let err = c.ping().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "ping hung");
    println!("ping with a dead primary: {err}");
    assert!(
        matches!(
            err.kind(),
            ormcache::ErrorKind::Connection
                | ormcache::ErrorKind::Timeout
                | ormcache::ErrorKind::Server
        ),
        "{err}"
    );
    let mut errors = 0;
    for k in &keys {
        let started = Instant::now();
        let r = c.set(k, 2u32, None).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{k}: a hang");
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
            errors += 1;
        }
        let started = Instant::now();
        let _ = c.get::<u32>(k).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{k}: a hang");
    }
    assert!(errors > 0, "no call failed with a primary down");
    // Read-through fails open.
    let v = c
        .get_or_compute("k:0", None, || async { 9u32 })
        .await
        .unwrap();
    assert_eq!(*v, 9);

    cluster.restart(1);
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    'recovered: loop {
        let mut all = true;
        for k in &keys {
            if c.set(k, 3u32, None).await.is_err() {
                all = false;
                break;
            }
        }
        if all {
            break 'recovered;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not recover:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for k in &keys {
        assert_eq!(c.get::<u32>(k).await.unwrap().map(|v| *v), Some(3));
    }
    c.ping().await.unwrap();
}

/// The password comes from the seed URLs; it never shows in errors or `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_cluster() {
    let cluster = RedisCluster::start_with(&ClusterOptions::new().password("s3cret-pw"));
    let c = cluster_cache(&cluster, "pw").await;
    for i in 0..50u32 {
        c.set(&format!("k:{i}"), i, None).await.unwrap();
    }
    assert_eq!(c.get::<u32>("k:7").await.unwrap().map(|v| *v), Some(7));
    assert_eq!(c.clear().await.unwrap(), 50);
    assert!(!format!("{c:?}").contains("s3cret-pw"));
    let h = hybrid(&cluster, "pw").await;
    h.set("x", 1u32, None).await.unwrap();

    let wrong: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("s3cret-pw", "wrong-pw"))
        .collect();
    let err = DistributedCache::create(
        ormcache::DistributedConfig::new()
            .cluster_nodes(wrong)
            .socket_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
}

#[tokio::test]
async fn a_prefix_with_a_broken_hash_tag_is_refused() {
    let cluster = RedisCluster::start();
    let err = DistributedCache::create(cluster_config(&cluster, "app{"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    // A complete hash tag pins the cache to one slot, with every feature.
    let c = cluster_cache(&cluster, "{app}").await;
    c.set_with_tags("k", 1u32, None, &["t"]).await.unwrap();
    let v = c
        .get_or_compute("computed", None, || async { 2u32 })
        .await
        .unwrap();
    assert_eq!(*v, 2);
    assert_eq!(c.get::<u32>("computed").await.unwrap().map(|v| *v), Some(2));
    c.invalidate_tag("t").await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap(), None);
    // "computed" ("k" went when it was read stale), in the one slot the prefix pins.
    assert_eq!(c.clear().await.unwrap(), 1);
    let per_node = keys_per_node(&cluster);
    assert_eq!(
        per_node
            .iter()
            .filter(|k| k.iter().any(|k| k.starts_with("{app}:")))
            .count(),
        1,
        "{per_node:?}"
    );
}
