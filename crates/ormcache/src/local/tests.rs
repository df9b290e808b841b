//! Unit tests of the L1: its synchronous API, bounds, and what invalidations void.

use super::*;
use crate::memo::Fill;

fn cache() -> QueryCache {
    QueryCache::new(100, Duration::from_secs(60)).unwrap()
}

#[test]
fn hit_returns_the_same_arc() {
    let c = cache();
    let v = Arc::new(vec![1u8; 1000]);
    c.insert("set", "k", Arc::clone(&v), None, None).unwrap();
    let got = c.get_sync::<Vec<u8>>("k").unwrap();
    assert!(Arc::ptr_eq(&v, &got));
}

#[test]
fn type_mismatch_is_a_counted_miss() {
    let c = cache();
    c.set_sync("k", 1u32, None).unwrap();
    assert_eq!(c.get_sync::<String>("k"), None);
    let s = c.get_stats_sync();
    assert_eq!((s.hits, s.misses, s.type_mismatches), (0, 1, 1));
}

#[test]
fn cached_none_is_not_a_miss() {
    let c = cache();
    c.set_sync::<Option<String>>("absent", None, None).unwrap();
    assert_eq!(
        c.get_sync::<Option<String>>("absent").as_deref(),
        Some(&None)
    );
    assert_eq!(c.get_sync::<Option<String>>("other"), None);
}

#[test]
fn expiry_is_exact() {
    let c = cache();
    c.set_sync("k", 1u8, Some(Duration::from_millis(30)))
        .unwrap();
    assert!(c.exists_sync("k"));
    std::thread::sleep(Duration::from_millis(31));
    assert_eq!(c.get_sync::<u8>("k"), None);
    assert!(!c.exists_sync("k"));
    assert_eq!(c.ttl_sync("k"), Ttl::Missing);
    assert!(!c.delete_sync("k"));
}

#[test]
fn expire_extends_and_refuses_zero() {
    let c = cache();
    c.set_sync("k", 1u8, Some(Duration::from_millis(20)))
        .unwrap();
    assert!(c.expire_sync("k", Duration::from_secs(10)).unwrap());
    std::thread::sleep(Duration::from_millis(25));
    assert_eq!(c.get_sync::<u8>("k").as_deref(), Some(&1));
    assert!(c.ttl_sync("k").remaining().unwrap() > Duration::from_secs(9));
    assert!(!c.expire_sync("missing", Duration::from_secs(1)).unwrap());
    assert!(
        c.expire_sync("k", Duration::ZERO)
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        c.set_sync("k", 1u8, Some(Duration::ZERO))
            .unwrap_err()
            .is_invalid_input()
    );
}

#[test]
fn clear_pattern_uses_redis_globs_and_spares_reserved() {
    let c = cache();
    for k in ["user:1", "user:2", "user:10", "post:1", "a*b", "axb"] {
        c.set_sync(k, 0u8, None).unwrap();
    }
    assert_eq!(c.clear_pattern_sync("user:?"), 2);
    assert!(c.exists_sync("user:10"));
    assert_eq!(c.clear_pattern_sync(&crate::escape_glob("a*b")), 1);
    assert!(c.exists_sync("axb"));
    assert_eq!(c.clear_sync(), 3);
    assert_eq!(c.get_stats_sync().size, 0);
}

#[test]
fn entry_bound_holds() {
    let c = QueryCache::new(10, Duration::from_secs(60)).unwrap();
    for i in 0..1000 {
        c.set_sync(&format!("k{i}"), i, None).unwrap();
    }
    c.run_pending_tasks();
    let s = c.get_stats_sync();
    assert!(s.size <= 10, "{s:?}");
    // Every key written is either held or counted as evicted.
    assert_eq!(s.size + s.evictions, 1000, "{s:?}");
}

#[test]
fn expired_entries_are_freed_and_not_counted_as_evictions() {
    let c = QueryCache::new(64, Duration::from_secs(60)).unwrap();
    for i in 0..10 {
        c.set_sync(&format!("k{i}"), i, Some(Duration::from_millis(5)))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(10));
    for i in 0..10 {
        assert_eq!(c.get_sync::<i32>(&format!("k{i}")), None);
    }
    let s = c.get_stats_sync();
    assert_eq!((s.size, s.evictions, s.misses), (0, 0, 10), "{s:?}");
}

#[test]
fn byte_budget_and_entry_bound_both_hold() {
    let c = QueryCache::builder()
        .max_size(50)
        .max_bytes(10_000)
        .build()
        .unwrap();
    for i in 0..500 {
        c.set_sync(&format!("big{i}"), "x".repeat(1000), None)
            .unwrap();
    }
    c.run_pending_tasks();
    let s = c.get_stats_sync();
    assert!(s.weighted_bytes.unwrap() <= 10_000, "{s:?}");
    assert!(s.size <= 10, "{s:?}");
    for i in 0..500 {
        c.set_sync(&format!("small{i}"), 1u8, None).unwrap();
    }
    c.run_pending_tasks();
    assert!(c.get_stats_sync().size <= 50, "{:?}", c.get_stats_sync());
}

#[test]
fn invalid_construction_is_an_error() {
    assert!(QueryCache::new(0, Duration::from_secs(1)).is_err());
    assert!(QueryCache::new(1, Duration::ZERO).is_err());
    assert!(QueryCache::builder().max_bytes(0).build().is_err());
}

#[test]
fn stats_shape() {
    let c = cache();
    c.set_sync("a", 1u8, None).unwrap();
    c.get_sync::<u8>("a");
    c.get_sync::<u8>("b");
    let json = serde_json::to_value(c.get_stats_sync()).unwrap();
    assert_eq!(json["size"], 1);
    assert_eq!(json["max_size"], 100);
    assert_eq!(json["hits"], 1);
    assert_eq!(json["misses"], 1);
    assert_eq!(json["hit_rate"], 50.0);
    assert_eq!(json["default_ttl"], 60);
}

#[test]
fn hits_survive_ten_thousand_unrelated_tag_invalidations() {
    let c = cache();
    c.set_with_tags_sync("tagged", 1u8, None, &["t"]).unwrap();
    c.set_sync("plain", 2u8, None).unwrap();
    for i in 0..10_000 {
        c.evict_tag(&format!("other:{i}"));
    }
    for i in 0..10_000 {
        assert_eq!(c.invalidate_tag_sync(&format!("more:{i}")).unwrap(), 0);
    }
    assert_eq!(c.get_sync::<u8>("tagged").as_deref(), Some(&1));
    assert_eq!(c.get_sync::<u8>("plain").as_deref(), Some(&2));
    let s = c.get_stats_sync();
    assert_eq!((s.hits, s.misses), (2, 0));
}

#[test]
fn a_tag_invalidation_voids_exactly_its_entries_without_a_walk() {
    let c = cache();
    c.set_with_tags_sync("a", 1u8, None, &["t", "u"]).unwrap();
    c.set_with_tags_sync("b", 2u8, None, &["u"]).unwrap();
    c.set_sync("c", 3u8, None).unwrap();
    // The O(1) form: nothing removed from the map, the entry is void at once.
    c.evict_tag("t");
    assert_eq!(c.get_sync::<u8>("a"), None);
    assert!(!c.exists_sync("a"));
    assert_eq!(c.ttl_sync("a"), Ttl::Missing);
    assert!(!c.expire_sync("a", Duration::from_secs(5)).unwrap());
    assert_eq!(c.get_sync::<u8>("b").as_deref(), Some(&2));
    assert_eq!(c.get_sync::<u8>("c").as_deref(), Some(&3));
    // A void entry is not counted again, and a new write of the key is a hit.
    assert_eq!(c.invalidate_tag_sync("t").unwrap(), 0);
    assert_eq!(c.invalidate_tag_sync("u").unwrap(), 1);
    c.set_with_tags_sync("a", 4u8, None, &["t"]).unwrap();
    assert_eq!(c.get_sync::<u8>("a").as_deref(), Some(&4));
}

#[tokio::test]
async fn a_fill_racing_a_tag_invalidation_is_not_stored() {
    let c = cache();
    let tags = vec!["t".to_owned()];
    let ticket = c
        .begin_fill("k", Duration::from_secs(1), false, &tags)
        .await;
    c.invalidate_tag("t").await.unwrap();
    c.end_fill("k", &Arc::new(1u8), Duration::from_secs(60), &tags, ticket)
        .await;
    assert_eq!(c.get_stats_sync().size, 0);
    assert_eq!(c.get_sync::<u8>("k"), None);
    // An unrelated invalidation does not stop a fill.
    let ticket = c
        .begin_fill("k", Duration::from_secs(1), false, &tags)
        .await;
    c.invalidate_tag("other").await.unwrap();
    c.end_fill("k", &Arc::new(2u8), Duration::from_secs(60), &tags, ticket)
        .await;
    assert_eq!(c.get_sync::<u8>("k").as_deref(), Some(&2));
}

#[tokio::test]
async fn a_fill_racing_a_pattern_or_scope_clear_is_not_stored() {
    let c = cache();
    let ticket = c
        .begin_fill("user:1", Duration::from_secs(1), false, &[])
        .await;
    let other = c
        .begin_fill("post:1", Duration::from_secs(1), false, &[])
        .await;
    assert_eq!(c.clear_pattern_sync("user:*"), 0);
    c.end_fill(
        "user:1",
        &Arc::new(1u8),
        Duration::from_secs(60),
        &[],
        ticket,
    )
    .await;
    c.end_fill(
        "post:1",
        &Arc::new(2u8),
        Duration::from_secs(60),
        &[],
        other,
    )
    .await;
    assert_eq!(c.get_sync::<u8>("user:1"), None);
    assert_eq!(c.get_sync::<u8>("post:1").as_deref(), Some(&2));

    let ticket = c.begin_fill("k", Duration::from_secs(1), false, &[]).await;
    assert_eq!(c.clear_sync(), 1);
    c.end_fill("k", &Arc::new(3u8), Duration::from_secs(60), &[], ticket)
        .await;
    assert_eq!(c.get_sync::<u8>("k"), None);
}

#[tokio::test]
async fn tenant_scopes_are_voided_apart() {
    use crate::tenant::{TenantId, scope};
    let c = cache();
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    c.set_sync("k", 0u8, None).unwrap();
    scope(acme.clone(), async { c.set_sync("k", 1u8, None).unwrap() }).await;
    scope(globex.clone(), async {
        c.set_sync("k", 2u8, None).unwrap()
    })
    .await;
    // The O(1) form the subscriber applies: acme's entries are void, no walk.
    scope(acme.clone(), async { c.evict_scope() }).await;
    let got = |t: TenantId| {
        let c = c.clone();
        async move { scope(t, async move { c.get_sync::<u8>("k") }).await }
    };
    assert_eq!(got(acme.clone()).await, None);
    assert_eq!(got(globex.clone()).await.as_deref(), Some(&2));
    assert_eq!(c.get_sync::<u8>("k").as_deref(), Some(&0));
    scope(acme.clone(), async { c.set_sync("k", 3u8, None).unwrap() }).await;
    assert_eq!(got(acme).await.as_deref(), Some(&3));
    // The unscoped clear spares every tenant.
    assert_eq!(c.clear_sync(), 1);
    assert_eq!(got(globex).await.as_deref(), Some(&2));
}

#[test]
fn a_flush_voids_everything() {
    let c = cache();
    c.set_sync("k", 1u8, None).unwrap();
    c.epochs().bump_global();
    assert_eq!(c.get_sync::<u8>("k"), None);
    c.set_sync("k", 2u8, None).unwrap();
    assert_eq!(c.get_sync::<u8>("k").as_deref(), Some(&2));
}

#[test]
fn a_pattern_clear_is_a_miss_before_its_walk_and_gone_after() {
    let c = cache();
    for k in ["user:1", "user:2", "post:1"] {
        c.set_sync(k, 1u8, None).unwrap();
    }
    let clear = c.start_pattern_clear("user:*");
    // Announced, not walked: the matching entries are misses, the others hits.
    assert_eq!(c.get_sync::<u8>("user:1"), None);
    assert!(!c.exists_sync("user:2"));
    assert_eq!(c.get_sync::<u8>("post:1").as_deref(), Some(&1));
    // A write after the announcement is a hit (the walk, concurrent with it, may
    // still remove it).
    c.set_sync("user:3", 3u8, None).unwrap();
    assert_eq!(c.get_sync::<u8>("user:3").as_deref(), Some(&3));
    assert_eq!(clear.run(), 3);
    assert_eq!(c.get_stats_sync().size, 1);
    // Dropped without running, a clear still walks.
    c.set_sync("user:4", 4u8, None).unwrap();
    drop(c.start_pattern_clear("user:*"));
    assert_eq!(c.get_stats_sync().size, 1);
    assert!(c.exists_sync("post:1"));
}

#[test]
fn an_expired_entry_is_never_returned_while_writes_replace_it() {
    // A writer stores version after version, each living 1 ms; readers check that
    // no version is returned by a read that started after its deadline.
    let c = cache();
    let deadlines = Mutex::new(Vec::<Instant>::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let start = Instant::now();
                    if let Some(v) = c.get_sync::<usize>("k") {
                        let d = deadlines.lock().unwrap().get(*v).copied();
                        assert!(
                            d.is_none_or(|d| start < d),
                            "version {v} read after its deadline"
                        );
                    }
                }
            });
        }
        for v in 0..300usize {
            c.set_sync("k", v, Some(Duration::from_millis(1))).unwrap();
            // The entry's deadline is at most this.
            deadlines
                .lock()
                .unwrap()
                .push(Instant::now() + Duration::from_millis(1));
            if v % 3 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn a_fill_racing_a_delete_never_lands_after_it() {
    let c = cache();
    for i in 0..300u32 {
        let key = format!("k{i}");
        let ticket = c.epochs().ticket(&key);
        std::thread::scope(|s| {
            s.spawn(|| {
                c.put_origin(
                    &key,
                    Arc::new(i),
                    Duration::from_secs(60),
                    None,
                    ticket,
                    1,
                    None,
                    || c.epochs().unchanged(&key, ticket),
                );
            });
            s.spawn(|| c.delete_sync(&key));
        });
        // Whichever came first, the delete wins.
        assert_eq!(c.get_sync::<u32>(&key), None, "{key}");
    }
}

#[test]
fn freeing_an_expired_entry_spares_a_new_write_of_the_key() {
    let c = cache();
    for i in 0..200u32 {
        c.set_sync("k", i, Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        std::thread::scope(|s| {
            s.spawn(|| c.get_sync::<u32>("k"));
            s.spawn(|| c.set_sync("k", i + 1000, None).unwrap());
        });
        assert_eq!(c.get_sync::<u32>("k").as_deref(), Some(&(i + 1000)));
    }
}

#[test]
fn hot_entries_outlast_a_scan() {
    // 64 entries are two shards of 32, and the hash decides which shard a key
    // lands in: with 16 hot keys and 16 scan keys a round, even a shard that got
    // all of both has room for them (the map is CLOCK: an entry read since the
    // hand last passed gets a second chance, one per revolution; a round that
    // put more new keys into a shard than it has slots beside its hot ones
    // would make the hand come round again within the round).
    let c = QueryCache::new(64, Duration::from_secs(60)).unwrap();
    for i in 0..16u32 {
        c.set_sync(&format!("hot{i}"), i, None).unwrap();
    }
    for round in 0..20u32 {
        for i in 0..16u32 {
            assert_eq!(
                c.get_sync::<u32>(&format!("hot{i}")).as_deref(),
                Some(&i),
                "round {round}"
            );
        }
        for j in 0..16u32 {
            c.set_sync(&format!("scan{round}:{j}"), j, None).unwrap();
        }
    }
    let s = c.get_stats_sync();
    assert!(s.size <= 64 && s.evictions > 0, "{s:?}");
}
