//! Tenant isolation (DESIGN.md contract 1) on every cache kind, against real
//! `redis-server` processes.

mod support;

use std::time::Duration;

use ormcache::tenant::{self, TenantId};
use ormcache::{AnyCache, Cache, DistributedCache, HybridCache, QueryCache, Ttl};
use redis::AsyncCommands;
use support::{RedisServer, Rng, config};

async fn caches(server: &RedisServer) -> Vec<AnyCache> {
    let l2 = DistributedCache::create(config(server, "app").socket_timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    let hybrid = HybridCache::builder(
        QueryCache::new(10_000, Duration::from_secs(60)).unwrap(),
        DistributedCache::create(config(server, "hyb").socket_timeout(Duration::from_secs(2)))
            .await
            .unwrap(),
    )
    .heartbeat_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    assert!(hybrid.wait_coherent(Duration::from_secs(5)).await);
    vec![
        QueryCache::new(10_000, Duration::from_secs(60))
            .unwrap()
            .into(),
        l2.into(),
        hybrid.into(),
    ]
}

fn random_tenant(rng: &mut Rng) -> TenantId {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    let len = 1 + rng.below(12) as usize;
    let id: String = (0..len)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
        .collect();
    TenantId::new(&id).unwrap()
}

/// Property: for random pairs of tenants and random keys (including keys that look
/// like another tenant's namespace), no tenant reads, overwrites or clears another's
/// entries, and unscoped calls see none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_whatever_their_ids() {
    let server = RedisServer::start();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for cache in caches(&server).await {
        for round in 0..20 {
            let a = random_tenant(&mut rng);
            let mut b = random_tenant(&mut rng);
            while b == a {
                b = random_tenant(&mut rng);
            }
            let key = match round % 4 {
                0 => "user:1".to_string(),
                1 => format!("__x:t:{b}:user:1"),
                2 => format!("t:{b}:*"),
                _ => format!("{}:k", rng.next()),
            };
            tenant::scope(a.clone(), cache.set(&key, format!("a-{round}"), None))
                .await
                .unwrap();
            // b and the unscoped namespace do not see it.
            assert_eq!(
                tenant::scope(b.clone(), cache.get::<String>(&key))
                    .await
                    .unwrap(),
                None,
                "{} {a} {b} {key}",
                cache.kind()
            );
            assert_eq!(
                cache.get::<String>(&key).await.unwrap(),
                None,
                "{} unscoped {key}",
                cache.kind()
            );
            // b writes the same key: a's value is untouched.
            tenant::scope(b.clone(), cache.set(&key, format!("b-{round}"), None))
                .await
                .unwrap();
            let seen = tenant::scope(a.clone(), cache.get::<String>(&key))
                .await
                .unwrap();
            assert_eq!(
                seen.as_deref().map(String::as_str),
                Some(format!("a-{round}").as_str())
            );
            // b's clears, and an unscoped clear, leave a's entry.
            tenant::scope(b.clone(), cache.clear_pattern("*"))
                .await
                .unwrap();
            tenant::scope(b.clone(), cache.clear()).await.unwrap();
            cache.clear().await.unwrap();
            cache.clear_pattern("*").await.unwrap();
            assert!(
                tenant::scope(a.clone(), cache.exists(&key)).await.unwrap(),
                "{} {key}",
                cache.kind()
            );
            assert_eq!(
                tenant::scope(b.clone(), cache.get::<String>(&key))
                    .await
                    .unwrap(),
                None
            );
            // clear_tenant(a) removes a's entries only.
            tenant::scope(b.clone(), cache.set("keep", 1u8, None))
                .await
                .unwrap();
            tenant::clear_tenant(&cache, a.clone()).await.unwrap();
            assert!(
                !tenant::scope(a.clone(), cache.exists(&key)).await.unwrap(),
                "{}",
                cache.kind()
            );
            assert!(
                tenant::scope(b.clone(), cache.exists("keep"))
                    .await
                    .unwrap(),
                "{}",
                cache.kind()
            );
            tenant::clear_tenant(&cache, b).await.unwrap();
        }
    }
}

#[tokio::test]
async fn keys_live_in_the_tenant_namespace_and_spawn_keeps_the_tenant() {
    let server = RedisServer::start();
    let c = DistributedCache::create(config(&server, "app"))
        .await
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    tenant::scope(acme.clone(), async {
        c.set("user:1", 1u8, None).await.unwrap();
        let c2 = c.clone();
        tenant::spawn(async move { c2.set("spawned", 2u8, None).await.unwrap() })
            .await
            .unwrap();
        c.get_or_compute("computed", None, || async { 3u8 })
            .await
            .unwrap();
        c.set_with_tags("tagged", 4u8, None, &["users"])
            .await
            .unwrap();
    })
    .await;
    let mut raw = server.connection().await;
    for k in ["user:1", "spawned", "computed", "tagged"] {
        assert!(
            raw.exists::<_, bool>(format!("app:__oc:t:acme:{k}"))
                .await
                .unwrap(),
            "{k}"
        );
        assert!(
            !raw.exists::<_, bool>(format!("app:{k}")).await.unwrap(),
            "{k} written unscoped"
        );
    }
    // The tenant's tags are its own.
    let globex = TenantId::new("globex").unwrap();
    tenant::scope(
        globex.clone(),
        c.set_with_tags("tagged", 5u8, None, &["users"]),
    )
    .await
    .unwrap();
    tenant::scope(acme.clone(), c.invalidate_tag("users"))
        .await
        .unwrap();
    assert_eq!(
        tenant::scope(acme, c.get::<u8>("tagged")).await.unwrap(),
        None
    );
    assert_eq!(
        tenant::scope(globex, c.get::<u8>("tagged"))
            .await
            .unwrap()
            .as_deref(),
        Some(&5)
    );
    // A plain tokio::spawn does not carry the tenant (documented): use tenant::spawn.
    let lost = tenant::scope(TenantId::new("x").unwrap(), async {
        tokio::spawn(async { tenant::current() }).await.unwrap()
    })
    .await;
    assert_eq!(lost, None);
}

#[tokio::test]
async fn hybrid_invalidations_carry_the_tenant_across_instances() {
    let server = RedisServer::start();
    let make = async || {
        let c = HybridCache::builder(
            QueryCache::new(100, Duration::from_secs(60)).unwrap(),
            DistributedCache::create(config(&server, "h"))
                .await
                .unwrap(),
        )
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
        assert!(c.wait_coherent(Duration::from_secs(5)).await);
        c
    };
    let (a, b) = (make().await, make().await);
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    tenant::scope(acme.clone(), a.set("k", 1u8, None))
        .await
        .unwrap();
    tenant::scope(globex.clone(), a.set("k", 9u8, None))
        .await
        .unwrap();
    for t in [&acme, &globex] {
        tenant::scope(t.clone(), b.get::<u8>("k")).await.unwrap();
    }
    tenant::scope(acme.clone(), a.set("k", 2u8, None))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = tenant::scope(acme.clone(), b.get::<u8>("k")).await.unwrap();
        if v.as_deref() == Some(&2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acme's write did not reach b"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        tenant::scope(globex.clone(), b.get::<u8>("k"))
            .await
            .unwrap()
            .as_deref(),
        Some(&9)
    );
    // An unscoped entry, in b's L1 too.
    a.set("k", 5u8, None).await.unwrap();
    assert_eq!(b.get::<u8>("k").await.unwrap().as_deref(), Some(&5));
    assert!(tenant::sync_scope(globex.clone(), || b
        .l1()
        .exists_sync("k")));
    // A tenant's clear reaches the other instance for that tenant only.
    tenant::scope(acme.clone(), a.clear()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tenant::scope(acme.clone(), b.get::<u8>("k"))
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "acme's clear did not reach b"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // b's L1 still holds the other tenant's entry and the unscoped one: the clear
    // voided acme's scope only.
    assert!(tenant::sync_scope(globex.clone(), || b
        .l1()
        .exists_sync("k")));
    assert!(b.l1().exists_sync("k"));
    assert!(!tenant::sync_scope(acme.clone(), || b
        .l1()
        .exists_sync("k")));
    assert_eq!(
        tenant::scope(globex, b.get::<u8>("k"))
            .await
            .unwrap()
            .as_deref(),
        Some(&9)
    );
    assert_eq!(b.get::<u8>("k").await.unwrap().as_deref(), Some(&5));
}

/// A tenant's entry is stored under `__oc:t:{tenant}:{key}`. Spelled out unscoped,
/// that name reaches nothing through any call, the L1's `_sync` ones included
/// (they once read, aged and deleted the tenant's entry): reads miss, `expire` is
/// refused, deletes remove nothing, and the entry is still the tenant's.
#[tokio::test]
async fn a_tenant_s_stored_name_reaches_nothing_unscoped() {
    let acme = TenantId::new("acme").unwrap();
    let raw = "__oc:t:acme:secret";
    let l1 = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    tenant::sync_scope(acme.clone(), || {
        l1.set_sync("secret", "acme's".to_string(), None)
    })
    .unwrap();
    assert_eq!(l1.get_sync::<String>(raw), None);
    assert_eq!(l1.get_many_sync::<String, _>(&[raw]), vec![None]);
    assert!(!l1.exists_sync(raw));
    assert_eq!(l1.ttl_sync(raw), Ttl::Missing);
    let refused = l1.expire_sync(raw, Duration::from_millis(1)).unwrap_err();
    assert!(refused.is_invalid_input(), "{refused}");
    assert!(!l1.delete_sync(raw));
    assert_eq!(l1.delete_many_sync(&[raw]), 0);
    for bad in ["", "stats", "__oc"] {
        assert_eq!(l1.get_sync::<String>(bad), None, "{bad:?}");
        assert!(!l1.exists_sync(bad) && !l1.delete_sync(bad), "{bad:?}");
    }
    let refused = Cache::get::<String>(&l1, raw).await.unwrap_err();
    assert!(refused.is_invalid_input(), "{refused}");
    // Still acme's, with the TTL it was stored with.
    let (value, ttl) = tenant::sync_scope(acme.clone(), || {
        (l1.get_sync::<String>("secret"), l1.ttl_sync("secret"))
    });
    assert_eq!(value.as_deref().map(String::as_str), Some("acme's"));
    assert!(
        matches!(ttl, Ttl::Remaining(left) if left > Duration::from_secs(50)),
        "{ttl:?}"
    );

    // A HybridCache whose L1 holds acme's copy: its `get` refuses the name, its
    // L1 does not find it.
    let server = RedisServer::start();
    let hybrid = HybridCache::builder(
        QueryCache::new(100, Duration::from_secs(60)).unwrap(),
        DistributedCache::create(config(&server, "raw"))
            .await
            .unwrap(),
    )
    .build()
    .unwrap();
    assert!(hybrid.wait_coherent(Duration::from_secs(5)).await);
    tenant::scope(
        acme.clone(),
        hybrid.set("secret", "acme's".to_string(), None),
    )
    .await
    .unwrap();
    // The writer keeps no copy under the fleet protocol: a read fills L1.
    let in_l1 = tenant::scope(acme.clone(), async {
        for _ in 0..100 {
            if hybrid.l1().exists_sync("secret") {
                return true;
            }
            hybrid.get::<String>("secret").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    })
    .await;
    assert!(in_l1, "acme's read did not fill L1");
    let refused = hybrid.get::<String>(raw).await.unwrap_err();
    assert!(refused.is_invalid_input(), "{refused}");
    assert_eq!(hybrid.l1().get_sync::<String>(raw), None);
    let hit = tenant::scope(acme, hybrid.get::<String>("secret"))
        .await
        .unwrap();
    assert_eq!(hit.as_deref().map(String::as_str), Some("acme's"));
    hybrid.close().await.unwrap();
}
