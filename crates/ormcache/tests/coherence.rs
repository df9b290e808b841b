//! Confirmed invalidation in `HybridCache`: once a write through one instance has
//! returned, the very next read through any other live instance is fresh. Real
//! `redis-server` processes; the other instances run on runtimes of their own,
//! kept busy, so that without confirmation their stale copies show.
#![allow(clippy::print_stdout)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ormcache::tenant::{self, TenantId};
use ormcache::{
    Cache, CoherenceStats, DistributedCache, DistributedConfig, HybridCache, Protocol, QueryCache,
};
use support::{RedisServer, config};
use tokio::sync::oneshot;

/// A generous "not a hang" bound for anything that should take milliseconds.
const NOT_A_HANG: Duration = Duration::from_secs(30);

/// An instance on `server` (prefix `app`; a generous command timeout: the machine
/// is loaded), not yet waited for.
async fn instance(
    l2: DistributedConfig,
    heartbeat: Duration,
    confirm: Option<Duration>,
    protocol: Protocol,
) -> HybridCache {
    let l1 = QueryCache::new(10_000, Duration::from_secs(60)).unwrap();
    let l2 = DistributedCache::create(l2).await.unwrap();
    HybridCache::builder(l1, l2)
        .heartbeat_interval(heartbeat)
        .confirm_invalidations(confirm)
        .protocol(protocol)
        .build()
        .unwrap()
}

fn l2_config(server: &RedisServer) -> DistributedConfig {
    config(server, "app").socket_timeout(Duration::from_secs(2))
}

async fn build(
    server: &RedisServer,
    heartbeat: Duration,
    confirm: Option<Duration>,
    protocol: Protocol,
) -> HybridCache {
    let c = instance(l2_config(server), heartbeat, confirm, protocol).await;
    assert!(c.wait_coherent(NOT_A_HANG).await, "never became coherent");
    c
}

/// An instance on a current-thread runtime of its own, in its own thread. A task
/// blocks that thread in bursts (`busy`), so the instance handles its messages
/// late, as a loaded process does; `freeze` blocks it until `thaw`.
struct Peer {
    name: &'static str,
    cache: HybridCache,
    rt: tokio::runtime::Handle,
    frozen: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    async fn start(
        name: &'static str,
        server: &RedisServer,
        heartbeat: Duration,
        confirm: Option<Duration>,
        busy: Duration,
        protocol: Protocol,
    ) -> Peer {
        let (handle_tx, handle_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            handle_tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        let rt = handle_rx.await.unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let cache = rt
            .spawn(instance(l2_config(server), heartbeat, confirm, protocol))
            .await
            .unwrap();
        let f = Arc::clone(&frozen);
        rt.spawn(async move {
            loop {
                if f.load(Ordering::SeqCst) {
                    // Frozen: the runtime runs nothing else.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                if busy.is_zero() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    // A burst, then a moment for whatever is ready to run.
                    std::thread::sleep(busy);
                    tokio::task::yield_now().await;
                }
            }
        });
        let peer = Peer {
            name,
            cache,
            rt,
            frozen,
            stop: Some(stop),
            thread: Some(thread),
        };
        let c = peer.cache.clone();
        assert!(
            peer.run(async move { c.wait_coherent(NOT_A_HANG).await })
                .await,
            "{name} never became coherent"
        );
        peer
    }

    /// Runs `fut` on this instance's runtime.
    async fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        tokio::time::timeout(NOT_A_HANG, self.rt.spawn(fut))
            .await
            .unwrap_or_else(|_| panic!("{} hangs", self.name))
            .unwrap()
    }

    /// `get` through this instance, in `scope`'s tenant if any.
    async fn get(&self, key: &str, scope: Option<&TenantId>) -> Option<u32> {
        let c = self.cache.clone();
        let key = key.to_owned();
        let read = async move { c.get::<u32>(&key).await.unwrap().map(|v| *v) };
        match scope.cloned() {
            Some(t) => self.run(tenant::scope(t, read)).await,
            None => self.run(read).await,
        }
    }

    /// Reads `key` until this instance's L1 holds `want` (a fill may lose a race
    /// with an invalidation still in flight).
    async fn hold(&self, key: &str, scope: Option<&TenantId>, want: u32) {
        let deadline = Instant::now() + NOT_A_HANG;
        loop {
            let got = self.get(key, scope).await;
            let c = self.cache.clone();
            let k = key.to_owned();
            let scope = scope.cloned();
            let held = self
                .run(async move {
                    match scope {
                        Some(t) => tenant::sync_scope(t, || c.l1().exists_sync(&k)),
                        None => c.l1().exists_sync(&k),
                    }
                })
                .await;
            if got == Some(want) && held {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never cached {key}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.thaw();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn coherence(c: &HybridCache) -> CoherenceStats {
    c.get_stats().await.unwrap().coherence
}

/// Polls `f` until it holds, up to [`NOT_A_HANG`].
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + NOT_A_HANG;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs both protocols' variants of a test: `name::broadcast` and `name::fleet`.
macro_rules! both_protocols {
    ($($(#[$attr:meta])* async fn $name:ident($p:ident) $body:block)*) => {$(
        async fn $name($p: Protocol) $body
        mod $name {
            use super::*;
            $(#[$attr])*
            async fn broadcast() {
                super::$name(Protocol::Broadcast).await;
            }
            $(#[$attr])*
            async fn fleet() {
                super::$name(Protocol::Fleet).await;
            }
        }
    )*};
}

/// Writes `poke` through `a` until `known(stats of a)` holds: the peers read it
/// first, so that under the fleet protocol they hold it and acknowledge (under
/// the broadcast one every peer acknowledges every write, and announces itself).
async fn poke_until<F: Fn(&CoherenceStats) -> bool>(a: &HybridCache, peers: &[&Peer], known: F) {
    eventually("peers known", async || {
        for p in peers {
            p.get("poke", None).await;
        }
        a.set("poke", 0u32, None).await.unwrap();
        known(&coherence(a).await)
    })
    .await;
}

/// A write through `a` that must be seen by the next read everywhere.
#[derive(Debug, Clone, Copy)]
enum Write {
    Set,
    SetWithTags,
    InvalidateTag,
    Delete,
    SetMany,
    DeleteMany,
    Expire,
    ClearPattern,
    Clear,
    TenantSet,
}

impl Write {
    const ALL: [Write; 10] = [
        Write::Set,
        Write::SetWithTags,
        Write::InvalidateTag,
        Write::Delete,
        Write::SetMany,
        Write::DeleteMany,
        Write::Expire,
        Write::ClearPattern,
        Write::Clear,
        Write::TenantSet,
    ];

    fn scope(self) -> Option<TenantId> {
        matches!(self, Write::TenantSet).then(|| TenantId::new("acme").unwrap())
    }

    /// Does the write through `a` (the peers hold `old` at `key`); what a read of
    /// `key` must answer now.
    async fn apply(self, a: &HybridCache, key: &str, old: u32, new: u32) -> Option<u32> {
        let ttl = Some(Duration::from_secs(300));
        match self {
            Write::Set => a.set(key, new, ttl).await.unwrap(),
            Write::SetWithTags => a.set_with_tags(key, new, ttl, &["t"]).await.unwrap(),
            Write::InvalidateTag => {
                a.invalidate_tag("t").await.unwrap();
                return None;
            }
            Write::Delete => {
                assert!(a.delete(key).await.unwrap());
                return None;
            }
            Write::SetMany => a.set_many(vec![(key, new)], ttl).await.unwrap(),
            Write::DeleteMany => {
                assert_eq!(a.delete_many(&[key]).await.unwrap(), 1);
                return None;
            }
            Write::Expire => {
                // The copies are evicted (they refetch the new TTL); the value stays.
                assert!(a.expire(key, Duration::from_secs(200)).await.unwrap());
                return Some(old);
            }
            Write::ClearPattern => {
                assert_eq!(a.clear_pattern(key).await.unwrap(), 1);
                return None;
            }
            Write::Clear => {
                a.clear().await.unwrap();
                return None;
            }
            Write::TenantSet => {
                tenant::scope(self.scope().unwrap(), a.set(key, new, ttl))
                    .await
                    .unwrap();
            }
        }
        Some(new)
    }

    /// What the entry must be before the write (tag invalidation needs a tagged
    /// entry).
    async fn prepare(self, a: &HybridCache, key: &str, old: u32) {
        let ttl = Some(Duration::from_secs(300));
        match self {
            Write::InvalidateTag => a.set_with_tags(key, old, ttl, &["t"]).await.unwrap(),
            Write::TenantSet => tenant::scope(self.scope().unwrap(), a.set(key, old, ttl))
                .await
                .unwrap(),
            _ => a.set(key, old, ttl).await.unwrap(),
        }
    }
}

/// `rounds` rounds of: every peer caches `key`, `a` writes, every peer reads at
/// once. Returns the stale reads, with what was expected and read.
async fn writes_then_reads(
    a: &HybridCache,
    peers: &[&Peer],
    writes: &[Write],
    rounds: u32,
) -> Vec<String> {
    let mut stale = Vec::new();
    for round in 0..rounds {
        let write = writes[round as usize % writes.len()];
        let key = format!("k{}", round % 3);
        let scope = write.scope();
        let old = round * 2;
        write.prepare(a, &key, old).await;
        for p in peers {
            p.hold(&key, scope.as_ref(), old).await;
        }
        let want = tokio::time::timeout(NOT_A_HANG, write.apply(a, &key, old, old + 1))
            .await
            .expect("a write hangs");
        for p in peers {
            let got = p.get(&key, scope.as_ref()).await;
            if got != want {
                stale.push(format!(
                    "round {round}, {write:?}: {} read {got:?}, expected {want:?}",
                    p.name
                ));
            }
        }
    }
    stale
}

both_protocols! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_read_through_every_other_instance_is_fresh(p) {
    let server = RedisServer::start();
    let hb = Duration::from_millis(200);
    let confirm = Some(Duration::from_secs(10));
    let a = build(&server, hb, confirm, p).await;
    let b = Peer::start("b", &server, hb, confirm, Duration::from_millis(20), p).await;
    let c = Peer::start("c", &server, hb, confirm, Duration::from_millis(7), p).await;
    poke_until(&a, &[&b, &c], |s| s.peers == 2).await;
    let before = coherence(&a).await.confirmed;

    let stale = writes_then_reads(&a, &[&b, &c], &Write::ALL, 120).await;
    assert_eq!(stale, Vec::<String>::new());

    let stats = coherence(&a).await;
    println!("writer: {stats:?}");
    assert_eq!(
        (stats.unconfirmed, stats.peers, stats.peers_unresponsive),
        (0, 2, 0)
    );
    let confirmed = stats.confirmed - before;
    if p == Protocol::Broadcast {
        // Every write was confirmed by both (the set-up writes too).
        assert_eq!(confirmed, 240, "{stats:?}");
    } else {
        // Every write of a key they held (each round's write; a set-up write
        // only once they had read the key in an earlier round).
        assert!(confirmed >= 120, "{stats:?}");
    }
}

/// The same test fails without confirmation: this is what the acknowledgements buy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_confirmation_a_busy_instance_serves_stale_reads(p) {
    let server = RedisServer::start();
    let hb = Duration::from_millis(200);
    let a = build(&server, hb, None, p).await;
    let b = Peer::start("b", &server, hb, None, Duration::from_millis(20), p).await;
    let stale = writes_then_reads(&a, &[&b], &[Write::Set], 40).await;
    println!("{} stale reads of 40: {stale:?}", stale.len());
    assert!(!stale.is_empty(), "no stale read without confirmation");
    let stats = coherence(&a).await;
    assert_eq!(
        (
            stats.confirm_invalidations,
            stats.confirmed,
            stats.unconfirmed
        ),
        (false, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_dead_peer_is_waited_for_once_then_dropped(p) {
    let server = RedisServer::start();
    let hb = Duration::from_millis(100);
    // The liveness window (3 heartbeats + the 2 s command timeout) is far longer
    // than the confirmation timeout: a frozen peer is seen to time out.
    let confirm = Some(Duration::from_millis(500));
    let a = build(&server, hb, confirm, p).await;
    let b = Peer::start("b", &server, hb, confirm, Duration::ZERO, p).await;
    let c = Peer::start("c", &server, hb, confirm, Duration::ZERO, p).await;
    poke_until(&a, &[&b, &c], |s| s.peers == 2).await;

    // c freezes holding the keys written next: the first write waits for it
    // until the timeout, the next ones do not; b stays confirmed throughout.
    for k in ["k0", "k1", "k2"] {
        c.get(k, None).await;
    }
    c.freeze();
    let stale = writes_then_reads(&a, &[&b], &[Write::Set, Write::Delete], 20).await;
    assert_eq!(stale, Vec::<String>::new());
    let stats = coherence(&a).await;
    assert_eq!(stats.unconfirmed, 1, "{stats:?}");
    // Marked, unless it already left the liveness window (a very slow run).
    assert!(
        stats.peers_unresponsive == 1 || stats.peers == 1,
        "{stats:?}"
    );
    // (b is kept heard: under the fleet protocol only acknowledgements are.)
    poke_until(&a, &[&b], |s| s.peers == 1).await;
    assert_eq!(coherence(&a).await.peers_unresponsive, 0);

    // c thaws: it is waited for again and reads fresh at once.
    c.thaw();
    // It is waited for again once it acknowledges something (or announces that
    // its stream restarted): keep writing.
    poke_until(&a, &[&b, &c], |s| s.peers == 2 && s.peers_unresponsive == 0).await;
    let stale = writes_then_reads(&a, &[&b, &c], &Write::ALL, 20).await;
    assert_eq!(stale, Vec::<String>::new());
    assert_eq!(coherence(&a).await.unconfirmed, 1);

    // c dies without closing: writes still return (waiting at most the timeout
    // once) and b stays fresh; c drops out.
    drop(c);
    let stale = writes_then_reads(&a, &[&b], &[Write::Set], 10).await;
    assert_eq!(stale, Vec::<String>::new());
    poke_until(&a, &[&b], |s| s.peers == 1).await;
    let unconfirmed = coherence(&a).await.unconfirmed;
    assert!(
        (1..=2).contains(&unconfirmed),
        "at most one timeout for the dead peer: {unconfirmed}"
    );

    // b closes: a stops waiting for it at once (it said goodbye).
    let cb = b.cache.clone();
    b.run(async move { cb.close().await.unwrap() }).await;
    eventually("b said goodbye", async || coherence(&a).await.peers == 0).await;
    for i in 0..10u32 {
        a.set("k", i, None).await.unwrap();
    }
    assert_eq!(coherence(&a).await.unconfirmed, unconfirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_streams_never_hang_writes_and_peers_come_back(p) {
    let server = RedisServer::start();
    let hb = Duration::from_millis(100);
    let confirm = Some(Duration::from_millis(500));
    let a = build(&server, hb, confirm, p).await;
    let b = Peer::start("b", &server, hb, confirm, Duration::from_millis(3), p).await;
    poke_until(&a, &[&b], |s| s.peers == 1).await;
    b.get("hot", None).await;
    let mut raw = server.connection().await;
    for i in 0..60u32 {
        if i % 10 == 3 {
            assert!(support::kill_pubsub(&mut raw).await >= 1);
        }
        tokio::time::timeout(NOT_A_HANG, a.set("hot", i, None))
            .await
            .expect("a write hangs")
            .unwrap();
    }
    // Both streams are back, b is waited for again, and the next read is fresh.
    assert!(a.wait_coherent(NOT_A_HANG).await);
    // b is waited for again once it acknowledges something (its announcement
    // may have been sent while a's own stream was down): keep writing.
    poke_until(&a, &[&b], |s| s.peers == 1 && s.peers_unresponsive == 0).await;
    let stale = writes_then_reads(&a, &[&b], &Write::ALL, 20).await;
    assert_eq!(stale, Vec::<String>::new());
}

#[tokio::test]
async fn an_instance_alone_never_waits(p) {
    let server = RedisServer::start();
    // A confirmation that would time out after a minute: any wait hangs the test.
    let a = build(
        &server,
        Duration::from_millis(100),
        Some(Duration::from_secs(60)),
        p,
    )
    .await;
    // Another prefix is another channel: not a peer.
    let other = HybridCache::builder(
        QueryCache::new(100, Duration::from_secs(60)).unwrap(),
        support::cache(&server, "other").await,
    )
    .protocol(p)
    .build()
    .unwrap();
    assert!(other.wait_coherent(NOT_A_HANG).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(NOT_A_HANG, async {
        for i in 0..50u32 {
            a.set("k", i, None).await.unwrap();
            a.delete("k").await.unwrap();
            a.clear().await.unwrap();
        }
    })
    .await
    .expect("a lone instance waited for acknowledgements");
    let stats = coherence(&a).await;
    assert_eq!(
        (
            stats.confirm_invalidations,
            stats.peers,
            stats.confirmed,
            stats.unconfirmed
        ),
        (true, 0, 0, 0)
    );
}

/// A read-through fill whose lease a delete revoked stores nothing; its message is
/// sent anyway, so its sequence number is no hole: no instance takes it for a
/// lost message (which would flush its L1 and hold its acknowledgements back).
#[tokio::test]
async fn a_fill_that_lost_its_lease_leaves_no_hole(p) {
    let server = RedisServer::start();
    let hb = Duration::from_millis(100);
    let confirm = Some(Duration::from_secs(10));
    let a = build(&server, hb, confirm, p).await;
    let b = build(&server, hb, confirm, p).await;
    if p == Protocol::Broadcast {
        eventually("a sees b", async || coherence(&a).await.peers == 1).await;
    }
    for round in 0..5u32 {
        let (loaded, ()) = tokio::join!(
            a.get_or_compute("k", None, || async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                round
            }),
            async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                b.delete("k").await.unwrap();
            }
        );
        assert_eq!(*loaded.unwrap(), round);
        assert_eq!(b.l2().get::<u32>("k").await.unwrap(), None, "not stored");
    }
    // A hole is reported as a lost message after two heartbeat intervals.
    tokio::time::sleep(hb * 6).await;
    a.set("k", 9u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&9));
    let (sa, sb) = (coherence(&a).await, coherence(&b).await);
    assert_eq!(
        (sb.gaps, sa.unconfirmed, sb.unconfirmed),
        (0, 0, 0),
        "{sb:?}"
    );
}

}

/// Makes `recover` fail (it asks `INFO`): the instances on `server` lose their
/// stream and stay incoherent while Redis serves every other command.
async fn block_recovery(raw: &mut redis::aio::MultiplexedConnection, blocked: bool) {
    let rule = if blocked { "-info" } else { "+info" };
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(rule)
        .query_async(raw)
        .await
        .unwrap();
}

both_protocols! {
#[tokio::test]
async fn get_many_goes_to_l2_while_the_stream_is_down(p) {
    let server = RedisServer::start();
    let l2 =
        DistributedCache::create(config(&server, "app").socket_timeout(Duration::from_millis(200)))
            .await
            .unwrap();
    let reader = HybridCache::builder(QueryCache::new(100, Duration::from_secs(60)).unwrap(), l2)
        .heartbeat_interval(Duration::from_millis(100))
        // L1 would answer for a minute if asked: it must not be while L2 answers.
        .degraded_max_age(Duration::from_secs(60))
        .protocol(p)
        .build()
        .unwrap();
    assert!(reader.wait_coherent(Duration::from_secs(5)).await);
    reader.set("k", 1u32, None).await.unwrap();
    // (Under the fleet protocol the writer's own copy comes with its next read.)
    assert_eq!(reader.get::<u32>("k").await.unwrap().as_deref(), Some(&1));
    assert_eq!(reader.l1().get_sync::<u32>("k").as_deref(), Some(&1));
    let mut raw = server.connection().await;
    block_recovery(&mut raw, true).await;
    assert!(support::kill_pubsub(&mut raw).await >= 1);
    eventually("stream down", async || !reader.is_coherent()).await;
    // Another client changes the entry; the reader's stream cannot tell it.
    let _: () = redis::cmd("SET")
        .arg("app:k")
        .arg("2")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        reader.l1().get_sync::<u32>("k").as_deref(),
        Some(&1),
        "L1 still old"
    );
    assert!(!reader.is_coherent());
    assert_eq!(reader.get::<u32>("k").await.unwrap().as_deref(), Some(&2));
    let many = reader.get_many::<u32, _>(&["k", "none"]).await.unwrap();
    assert_eq!(many[0].as_deref(), Some(&2), "get_many served L1");
    assert_eq!(many[1], None);
    // With Redis unreachable too, both fall back to young L1 entries alike.
    server.pause();
    let one = reader.get::<u32>("k").await.unwrap();
    let many = reader.get_many::<u32, _>(&["k"]).await.unwrap();
    server.resume();
    assert_eq!(one.as_deref(), Some(&1));
    assert_eq!(many[0].as_deref(), Some(&1));
    block_recovery(&mut raw, false).await;
    assert!(reader.wait_coherent(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn extreme_settings_never_panic(p) {
    let server = RedisServer::start();
    let peer = build(
        &server,
        Duration::from_millis(100),
        Some(Duration::from_secs(1)),
        p,
    )
    .await;
    let l2 =
        DistributedCache::create(config(&server, "app").socket_timeout(Duration::from_millis(200)))
            .await
            .unwrap();
    // "Forever" is a valid setting everywhere.
    let c = HybridCache::builder(QueryCache::new(100, Duration::from_secs(60)).unwrap(), l2)
        .heartbeat_interval(Duration::MAX)
        .confirm_invalidations(Some(Duration::MAX))
        .degraded_max_age(Duration::MAX)
        .l1_max_ttl(Duration::MAX)
        .protocol(p)
        .build()
        .unwrap();
    assert!(c.wait_coherent(Duration::MAX).await);
    assert!(peer.wait_coherent(Duration::MAX).await);
    // The write waits for the peer's acknowledgement, with no deadline: under the
    // broadcast protocol once the peer has heard the instance's announcement,
    // under the fleet one because the peer holds the key.
    if p == Protocol::Broadcast {
        eventually("peer heard", async || {
            peer.get_stats().await.unwrap().coherence.peers >= 1
        })
        .await;
    } else {
        assert_eq!(peer.get::<u8>("k").await.unwrap(), None);
    }
    c.set("k", 1u8, None).await.unwrap();
    assert_eq!(peer.get::<u8>("k").await.unwrap().as_deref(), Some(&1));
    let stats = c.get_stats().await.unwrap().coherence;
    assert!(stats.coherent);

    // A lock holder in another process, and a waiter with no deadline: the waiter
    // gets the holder's value.
    let forever = ormcache::ComputeOptions::new()
        .lock(true)
        .lock_wait(Duration::MAX)
        .lock_ttl(Duration::from_secs(60));
    let release = Arc::new(tokio::sync::Notify::new());
    let (holder, go) = (peer.clone(), Arc::clone(&release));
    let opts = forever.clone();
    let held = tokio::spawn(async move {
        holder
            .get_or_compute_with("locked", opts, || async move {
                go.notified().await;
                "holder".to_string()
            })
            .await
            .unwrap()
    });
    let mut raw = server.connection().await;
    eventually("lock taken", async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("app:__oc:lease*")
            .query_async(&mut raw)
            .await
            .unwrap();
        !keys.is_empty()
    })
    .await;
    let waiter = {
        let c = c.clone();
        let opts = forever.clone();
        tokio::spawn(async move {
            c.get_or_compute_with("locked", opts, || async { "waiter".to_string() })
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_one();
    assert_eq!(held.await.unwrap().as_str(), "holder");
    assert_eq!(waiter.await.unwrap().as_str(), "holder");
}

}
#[test]
fn build_outside_a_runtime_is_an_error() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let l2 = rt
        .block_on(DistributedCache::create(config(&server, "app")))
        .unwrap();
    let l1 = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    // Not inside `rt`: no task could start, so the cache could never be coherent.
    let err = HybridCache::new(l1.clone(), l2.clone()).unwrap_err();
    assert_eq!(err.kind(), ormcache::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    let _inside = rt.enter();
    assert!(HybridCache::new(l1, l2).is_ok());
}
