//! The chaos suite: two OS processes, 30 tasks each, load a `HybridCache` pair on a
//! real Redis while it is hurt — its connections killed (`CLIENT KILL`), restarted
//! with no data, squeezed by `maxmemory` with `allkeys-lru` (so that entries *and*
//! internal keys are evicted), frozen by `DEBUG SLEEP`; on a Redis Cluster, slots
//! migrate and primaries fail over. Every read is checked against the truth (see
//! `support/chaos.rs`): wrong values and reads staler than the documented bound
//! must be zero. Each scenario prints one line:
//!
//! ```text
//! cargo test -p ormcache --all-features --test chaos -- --nocapture
//! ```
//!
//! Scenarios run one at a time (they share two cores with their peer processes).
#![allow(clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use ormcache::{ComputeOptions, HybridCache};
use redis::AsyncCommands;
use support::chaos::{self, BOUND, Ending, Load, Peer, Target, recovery};
use support::{RedisServer, ServerOptions};

/// The least number of operations a scenario must have run for its verdict to
/// count.
const MIN_OPS: u64 = 500;

/// One scenario at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The peer process: `Peer::start` re-runs this binary with only this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the second process of the chaos scenarios, which start it themselves"]
async fn chaos_peer() {
    chaos::serve_peer().await;
}

/// What a fault script reports.
#[derive(Debug, Default)]
struct Faults {
    /// How many faults were injected.
    count: u64,
    /// From each fault's end to the first coherent write and read through process 0.
    recoveries: Vec<Duration>,
    /// Scenario-specific figures for the summary line.
    note: String,
}

/// Runs `faults` while both processes load `target` on prefix `chaos`, then checks
/// every read and prints the summary line.
async fn scenario(name: &str, target: &Target, faults: impl AsyncFnOnce(&HybridCache) -> Faults) {
    let _one_at_a_time = SERIAL.lock().await;
    let cache = chaos::instance(target, "chaos").await;
    let peer = tokio::task::block_in_place(|| Peer::start("chaos_peer", target, "chaos"));
    let load = Load::start(&cache, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.ops();
    let faults = faults(&cache).await;
    // Load after the last recovery, so that what recovery left behind is read.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = load.ops() - before;
    let mut log = load.stop().await;
    let (peer_log, peer_end) = tokio::task::block_in_place(|| peer.finish());
    let own_end = Ending::of(&cache).await;
    log.merge(peer_log);
    let v = chaos::check(&log);
    let mut rec = faults.recoveries.clone();
    rec.sort_unstable();
    let (max, median) = match rec.len() {
        0 => ("-".to_owned(), "-".to_owned()),
        n => (format!("{:?}", rec[n - 1]), format!("{:?}", rec[n / 2])),
    };
    println!(
        "chaos {name}: ops {} ({} reads, {} writes) errors {} fallbacks {}+{} misses {} \
         wrong {} stale-beyond-{BOUND:?} {} (stale within it {}) faults {} recovery max {max} \
         median {median}{}",
        v.reads + v.writes,
        v.reads,
        v.writes,
        log.errors,
        own_end.fallbacks,
        peer_end.fallbacks,
        v.misses,
        v.wrong,
        v.stale_beyond_bound,
        v.stale_within_bound,
        faults.count,
        if faults.note.is_empty() {
            String::new()
        } else {
            format!("; {}", faults.note)
        },
    );
    assert!(
        during >= MIN_OPS && v.reads >= MIN_OPS && v.writes >= MIN_OPS / 10,
        "{name}: too little load ran ({during} operations during the faults)"
    );
    assert!(faults.count > 0, "{name}: no fault was injected");
    for (process, end) in [own_end, peer_end].iter().enumerate() {
        assert!(
            end.recovered,
            "{name}: process {process} was not coherent with an empty backlog 10 s after the load"
        );
    }
    assert_eq!(v.wrong, 0, "{name}: wrong values: {:#?}", v.examples);
    assert_eq!(
        v.stale_beyond_bound, 0,
        "{name}: stale reads beyond {BOUND:?} (by process 0, 1: {:?}): {:#?}",
        v.stale_by_process, v.examples
    );
}

/// The suite can fail: with entry writes that bypass the invalidation (through the
/// plain L2), L1 copies stay stale and the checker counts them. (Under the
/// broadcast protocol: the fleet protocol hears such writes through Redis
/// tracking, see `tests/fleet.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sees_stale_reads_when_invalidation_is_bypassed() {
    let _one_at_a_time = SERIAL.lock().await;
    let server = RedisServer::start();
    let cache = chaos::instance_with(
        &Target::Single(server.url()),
        "chaos",
        Some(ormcache::Protocol::Broadcast),
    )
    .await;
    let load = Load::start_bypassing_invalidation(&cache);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = chaos::check(&load.stop().await);
    println!(
        "chaos negative control: {} reads, stale beyond {BOUND:?} {}",
        v.reads, v.stale_beyond_bound
    );
    assert!(v.stale_beyond_bound > 0, "the checker saw no stale read");
}

/// Wrong values are counted: another key's value, a removal's version, a version
/// not yet written.
#[test]
fn the_checker_counts_wrong_values() {
    let write = |version, removal, started| chaos::Write {
        key: 1,
        version,
        removal,
        how: 's',
        started,
        acked: Some(started + 10),
    };
    let read = |got| chaos::Read {
        process: 0,
        key: 1,
        began: 100,
        ended: 110,
        got: Some(got),
    };
    let log = chaos::Log {
        writes: vec![
            write(1, false, 50),
            write(2, true, 60),
            write(3, false, 105),
            write(4, false, 200),
        ],
        reads: vec![
            read((1, 3)),
            read((2, 1)),
            read((1, 2)),
            read((1, 4)),
            read((1, 9)),
        ],
        errors: 0,
    };
    let v = chaos::check(&log);
    assert_eq!(
        (v.reads, v.wrong, v.stale_beyond_bound),
        (5, 4, 0),
        "{:#?}",
        v.examples
    );
}

/// A server that accepts `DEBUG` (Redis 7 refuses it by default).
fn server() -> RedisServer {
    RedisServer::start_with(ServerOptions {
        args: vec!["--enable-debug-command".into(), "yes".into()],
        ..ServerOptions::default()
    })
}

/// The test's own connection to the server, never killed by its `CLIENT KILL`s.
struct Admin {
    conn: redis::aio::MultiplexedConnection,
    id: i64,
}

impl Admin {
    async fn new(server: &RedisServer) -> Self {
        let mut conn = server.connection().await;
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .unwrap();
        Self { conn, id }
    }

    /// Kills every client of `kind` (`normal`, `pubsub`) but this one; how many.
    async fn kill(&mut self, kind: &str) -> u64 {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg(kind)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let mut killed = 0;
        for id in list
            .lines()
            .filter_map(|l| {
                l.strip_prefix("id=")?
                    .split(' ')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .filter(|&id| id != self.id)
        {
            let n: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            killed += n;
        }
        killed
    }

    async fn info(&mut self, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in INFO"))
    }

    async fn config_set(&mut self, name: &str, value: &str) {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }
}

async fn resubscriptions(cache: &HybridCache) -> u64 {
    cache.get_stats().await.unwrap().coherence.resubscriptions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_of_the_data_connections() {
    let server = server();
    let mut admin = Admin::new(&server).await;
    scenario(
        "CLIENT KILL data connections",
        &Target::Single(server.url()),
        async |cache| {
            let mut f = Faults::default();
            let mut killed = 0;
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                killed += admin.kill("normal").await;
                f.count += 1;
                f.recoveries
                    .push(recovery(cache, Instant::now(), async || true).await);
            }
            assert!(killed >= 6, "only {killed} data connections killed");
            f.note = format!("{killed} connections killed");
            f
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_of_the_pubsub_connections() {
    let server = server();
    let mut admin = Admin::new(&server).await;
    scenario(
        "CLIENT KILL pub/sub connections",
        &Target::Single(server.url()),
        async |cache| {
            let mut f = Faults::default();
            let mut killed = 0;
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let before = resubscriptions(cache).await;
                killed += admin.kill("pubsub").await;
                let at = Instant::now();
                f.count += 1;
                f.recoveries.push(
                    recovery(cache, at, async || resubscriptions(cache).await > before).await,
                );
            }
            // Both processes' subscribers, each time.
            assert!(killed >= 12, "only {killed} subscriptions killed");
            f.note = format!("{killed} subscriptions killed");
            f
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_no_data() {
    let server = server();
    scenario(
        "restart with no data",
        &Target::Single(server.url()),
        async |cache| {
            let mut f = Faults::default();
            let flushes = cache.get_stats().await.unwrap().coherence.flushes;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tokio::task::block_in_place(|| server.restart());
                f.count += 1;
                f.recoveries
                    .push(recovery(cache, Instant::now(), async || true).await);
            }
            let flushes = cache.get_stats().await.unwrap().coherence.flushes - flushes;
            assert!(flushes >= 1, "a restart did not flush L1");
            f.note = format!("{flushes} L1 flushes in process 0");
            f
        },
    )
    .await;
}

/// Counts the keys Redis evicts (keyspace notifications), by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Evicted {
    entries: u64,
    tags: u64,
    leases: u64,
    generation: u64,
    other_internal: u64,
    ballast: u64,
}

async fn count_evictions(
    server: &RedisServer,
) -> (
    tokio::task::JoinHandle<Evicted>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut ps = server.client().get_async_pubsub().await.unwrap();
    ps.subscribe("__keyevent@0__:evicted").await.unwrap();
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut e = Evicted::default();
        let mut messages = ps.on_message();
        loop {
            tokio::select! {
                _ = &mut stop => return e,
                m = messages.next() => {
                    let Some(m) = m else { return e };
                    let key: String = m.get_payload().unwrap();
                    let slot = match key.strip_prefix("chaos:") {
                        None => &mut e.ballast,
                        Some(k) if k.starts_with("__oc:tag:") => &mut e.tags,
                        Some(k) if k.starts_with("__oc:lease:") => &mut e.leases,
                        Some(k) if k.starts_with("__oc:gen") => &mut e.generation,
                        Some(k) if k.starts_with("__oc") => &mut e.other_internal,
                        Some(_) => &mut e.entries,
                    };
                    *slot += 1;
                }
            }
        }
    });
    (task, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_allkeys_lru_evicts_entries_and_internal_keys() {
    let server = server();
    let mut admin = Admin::new(&server).await;
    admin.config_set("notify-keyspace-events", "Ee").await;
    let (counting, stop_counting) = count_evictions(&server).await;
    let mut evicted = Evicted::default();
    scenario(
        "maxmemory allkeys-lru",
        &Target::Single(server.url()),
        async |_cache| {
            let mut f = Faults::default();
            // One sample per eviction: the LRU approximation picks nearly at random,
            // so hot internal keys (tag tokens, the generation, leases) go too.
            admin.config_set("maxmemory-policy", "allkeys-lru").await;
            admin.config_set("maxmemory-samples", "1").await;
            let used = admin.info("used_memory").await;
            admin
                .config_set("maxmemory", &(used + 2 * 1024 * 1024).to_string())
                .await;
            // Ballast written as fast as Redis takes it keeps memory at the limit.
            let mut raw = server.connection().await;
            let ballast = vec![b'x'; 16 * 1024];
            let until = Instant::now() + Duration::from_secs(4);
            let mut n = 0u64;
            while Instant::now() < until {
                let mut pipe = redis::pipe();
                for _ in 0..16 {
                    pipe.set(format!("ballast:{n}"), &ballast).ignore();
                    n += 1;
                }
                let () = pipe.query_async(&mut raw).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            f.count = admin.info("evicted_keys").await;
            admin.config_set("maxmemory", "0").await;
            let _ = stop_counting.send(());
            let e = counting.await.unwrap();
            f.note = format!(
                "evicted {} entries, {} internal keys ({} tag tokens, {} leases, {} generation, \
                 {} other) and {} of {n} ballast keys",
                e.entries,
                e.tags + e.leases + e.generation + e.other_internal,
                e.tags,
                e.leases,
                e.generation,
                e.other_internal,
                e.ballast
            );
            evicted = e;
            f
        },
    )
    .await;
    let e = evicted;
    assert!(e.entries > 0, "no entry was evicted: {e:?}");
    assert!(
        e.tags + e.leases + e.generation > 0,
        "no internal key was evicted: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_freezes_redis() {
    let server = server();
    scenario(
        "DEBUG SLEEP 0.5",
        &Target::Single(server.url()),
        async |cache| {
            let mut f = Faults::default();
            let errors_before = cache.l2().get_stats().await.unwrap().local.errors;
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                // A connection of its own, without a response timeout.
                tokio::task::block_in_place(|| {
                    let mut conn = server.client().get_connection().unwrap();
                    let () = redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg("0.5")
                        .query(&mut conn)
                        .unwrap();
                });
                f.count += 1;
                f.recoveries
                    .push(recovery(cache, Instant::now(), async || true).await);
            }
            let errors = cache.l2().get_stats().await.unwrap().local.errors - errors_before;
            assert!(errors > 0, "the frozen server caused no error");
            f.note = format!("{errors} L2 errors in process 0");
            f
        },
    )
    .await;
}

/// An internal key evicted between a fill's lease and its store must not let the
/// fill store a value read before a clear. Here the clear generation, which every
/// `clear_pattern` bumps, is evicted (deleted, as eviction does) after the clear:
/// once while the fill's lease saw no generation, once with a second clear that
/// brings the counter back to what the lease saw.
#[tokio::test]
async fn an_evicted_generation_never_validates_a_fill_from_before_a_clear() {
    const GENERATION: &str = "gen:__oc:gen:";
    let server = RedisServer::start();
    let cache = chaos::instance(&Target::Single(server.url()), "gen").await;
    let mut raw = server.connection().await;
    support::assert_invalidation_during_a_load_wins(
        "generation evicted after a clear",
        &cache,
        "row:1",
        ComputeOptions::new(),
        async {
            cache.clear_pattern("row:*").await.unwrap();
            let removed: u64 = raw.clone().del(GENERATION).await.unwrap();
            assert_eq!(removed, 1, "the clear generation lives at {GENERATION}");
        },
    )
    .await;
    // The lease sees generation 1; clear, eviction, clear: 1 again.
    let _: u64 = raw.del(GENERATION).await.unwrap();
    cache.clear_pattern("nothing:*").await.unwrap();
    support::assert_invalidation_during_a_load_wins(
        "generation evicted between two clears",
        &cache,
        "row:2",
        ComputeOptions::new(),
        async {
            cache.clear_pattern("row:*").await.unwrap();
            let _: u64 = raw.clone().del(GENERATION).await.unwrap();
            cache.clear_pattern("nothing:*").await.unwrap();
        },
    )
    .await;
}

#[cfg(feature = "cluster")]
mod cluster {
    use std::time::{Duration, Instant};

    use super::{Faults, scenario};
    use crate::support::chaos::{self, Target, recovery};
    use crate::support::{ClusterOptions, RedisCluster};

    /// The slots of every key the load uses (entries, rows, tag tokens; leases share
    /// their entry's slot).
    fn load_slots(cluster: &RedisCluster) -> Vec<u16> {
        let mut slots: Vec<u16> = chaos::key_names()
            .iter()
            .map(|k| format!("chaos:{k}"))
            .chain(
                chaos::tag_names()
                    .iter()
                    .map(|t| format!("chaos:__oc:tag:{t}")),
            )
            .map(|k| cluster.key_slot(&k))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_slot_migration_under_load() {
        let cluster = RedisCluster::start();
        let slots = tokio::task::block_in_place(|| load_slots(&cluster));
        scenario(
            "cluster slot migration",
            &Target::Cluster(cluster.urls()),
            async |cache| {
                let mut f = Faults::default();
                // Every slot the load touches moves to the next primary, twice.
                for round in 1..=2 {
                    for &slot in &slots {
                        tokio::task::block_in_place(|| {
                            let to = (cluster.slot_owner(slot) + 1) % 3;
                            cluster.migrate_slot(slot, to);
                        });
                        f.count += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    f.recoveries
                        .push(recovery(cache, Instant::now(), async || true).await);
                    f.note = format!("{} slots moved {round} times", slots.len());
                }
                f
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_failover_under_load() {
        let cluster = RedisCluster::start_with(&ClusterOptions::new().replicas(1));
        scenario(
            "cluster failover",
            &Target::Cluster(cluster.urls()),
            async |cache| {
                let mut f = Faults::default();
                let mut promoted = Vec::new();
                // Each primary in turn is replaced by its replica.
                for primary in tokio::task::block_in_place(|| cluster.primaries()) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let replica = tokio::task::block_in_place(|| {
                        let replica = cluster
                            .replica_of(primary)
                            .expect("every primary has a replica");
                        cluster.failover(replica);
                        replica
                    });
                    promoted.push(replica);
                    f.count += 1;
                    f.recoveries
                        .push(recovery(cache, Instant::now(), async || true).await);
                }
                let primaries = tokio::task::block_in_place(|| cluster.primaries());
                assert!(
                    promoted.iter().all(|r| primaries.contains(r)),
                    "{promoted:?} are not all primaries: {primaries:?}"
                );
                f.note = format!("replicas {promoted:?} promoted");
                f
            },
        )
        .await;
    }
}
