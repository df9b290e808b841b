//! The demo with `REDIS_URL` set (L1 + Redis): the plain layout in Redis, two
//! processes kept coherent, Redis outages, against real `redis-server` processes.

mod support;

use ormcache_testing::RedisServer;
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Demo, DemoEnv, TestDb, eventually};

async fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let mut con = server.connection().await;
    con.get(key).await.unwrap()
}

#[tokio::test]
async fn entries_are_plain_json_equal_to_the_get_body() {
    let server = RedisServer::start();
    let db = TestDb::sqlite();
    let demo = Demo::start("plain", &DemoEnv::new(&db).redis(server.url(), "plain")).await;

    let health = demo.get("/health").await.expect(200);
    assert_eq!(health["status"], json!("ok"), "{health}");
    assert_eq!(health["cache"]["kind"], json!("hybrid"), "{health}");
    assert_eq!(health["cache"]["status"], json!("ok"), "{health}");

    let user = demo.create_ann().await;
    let id = user["id"].as_i64().unwrap();
    let key = format!("plain:user:{id}");
    assert_eq!(raw_get(&server, &key).await, None);
    let first = demo.get(&format!("/users/{id}")).await;
    assert_eq!(first.expect_cached(200, "MISS"), user);
    // The entry is the body, byte for byte: plain JSON, no envelope.
    let stored = eventually("the entry is in Redis", || async {
        raw_get(&server, &key).await
    })
    .await;
    assert_eq!(
        String::from_utf8(stored).unwrap(),
        String::from_utf8(first.bytes.clone()).unwrap()
    );
    let ttl: i64 = server.connection().await.ttl(&key).await.unwrap();
    assert!((1..=300).contains(&ttl), "{ttl}");
    assert_eq!(
        demo.get(&format!("/users/{id}"))
            .await
            .expect_cached(200, "HIT"),
        user
    );

    // An update deletes the entry (signal receiver), the next read stores the new body.
    let updated = demo
        .patch(&format!("/users/{id}"), json!({"email": "ann@new.io"}))
        .await
        .expect(200);
    assert_eq!(raw_get(&server, &key).await, None);
    let again = demo.get(&format!("/users/{id}")).await;
    assert_eq!(again.expect_cached(200, "MISS"), updated);
    let stored = eventually("the new entry is in Redis", || async {
        raw_get(&server, &key).await
    })
    .await;
    assert_eq!(stored, again.bytes);

    // A tenant's user lives in the tenant's namespace under the prefix.
    let acme = [("x-tenant-id", "acme")];
    let t = demo
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "T", "email": "t@acme.io"})),
            &acme,
        )
        .await
        .expect(201);
    let reply = demo
        .call(Method::GET, &format!("/users/{}", t["id"]), None, &acme)
        .await;
    assert_eq!(reply.expect_cached(200, "MISS"), t);
    let tkey = format!("plain:__oc:t:acme:user:{}", t["id"]);
    let stored = eventually("the tenant entry is in Redis", || async {
        raw_get(&server, &tkey).await
    })
    .await;
    assert_eq!(stored, reply.bytes);
    assert_eq!(
        raw_get(&server, &format!("plain:user:{}", t["id"])).await,
        None
    );

    // List pages live under the prefix too (tagged: in an envelope), and a write
    // invalidates them without touching the key (the tag's token changes).
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([updated])
    );
    let page = eventually("the page is in Redis", || async {
        raw_get(&server, "plain:users:list:100:0").await
    })
    .await;
    assert!(!page.is_empty());
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "HIT"),
        json!([updated])
    );

    // Delete removes the entry.
    demo.delete(&format!("/users/{id}")).await.expect(200);
    assert_eq!(raw_get(&server, &key).await, None);
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([])
    );

    let stats = demo.get("/cache/stats").await.expect(200);
    for field in ["l1", "l2", "combined_hit_rate"] {
        assert!(stats.get(field).is_some(), "{field} missing: {stats}");
    }
}

/// `GET path` through `demo` returns `expected` on the very next read: with
/// confirmed invalidation (the `HybridCache` default) a write returns only once
/// every other live instance has evicted its copies. A cache that is not
/// invalidated, or invalidated only eventually, fails this.
#[track_caller]
fn fresh<'a>(
    demo: &'a Demo,
    path: &'a str,
    status: u16,
    expected: Value,
) -> impl std::future::Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let reply = demo.get(path).await;
        assert!(
            reply.status.as_u16() == status && reply.json() == expected,
            "{caller}: {path} on {} answers {} {}, expected {status} {expected}",
            demo.name,
            reply.status,
            String::from_utf8_lossy(&reply.bytes)
        );
    }
}

/// Two demo processes, one Redis, one database: what one writes, the other's very
/// next read returns (see [`fresh`]).
async fn coherence(db: &TestDb, tag: &str) {
    let server = RedisServer::start();
    let env = DemoEnv::new(db).redis(server.url(), tag);
    let a = Demo::start(&format!("{tag}-a"), &env).await;
    let b = Demo::start(&format!("{tag}-b"), &env).await;

    let user = a.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    assert_eq!(b.get(&path).await.expect_cached(200, "MISS"), user);
    assert_eq!(b.get(&path).await.expect_cached(200, "HIT"), user);
    // Filled by B, read by A from Redis.
    assert_eq!(a.get(&path).await.expect_cached(200, "HIT"), user);
    assert_eq!(b.get("/users").await.expect(200), json!([user]));
    assert_eq!(
        b.get("/users").await.expect_cached(200, "HIT"),
        json!([user])
    );

    // Updates through A: B's next read returns them (entry and list).
    for round in 0..5 {
        let name = format!("Ann {round}");
        let updated = a.patch(&path, json!({"name": name})).await.expect(200);
        assert_eq!(updated["name"], json!(name));
        fresh(&b, &path, 200, updated.clone()).await;
        fresh(&b, "/users", 200, json!([updated])).await;
        assert_eq!(b.get(&path).await.expect_cached(200, "HIT"), updated);
        // And the other way round.
        let name = format!("Anne {round}");
        let updated = b.patch(&path, json!({"name": name})).await.expect(200);
        fresh(&a, &path, 200, updated).await;
    }

    // Products: the response cache of B is fresh after writes through A.
    let p = a
        .post("/products", json!({"name": "Anvil", "price": 10}))
        .await
        .expect(201);
    assert_eq!(b.get("/products").await.expect(200), json!([p]));
    assert_eq!(
        b.get("/products").await.expect_cached(200, "HIT"),
        json!([p])
    );
    let p2 = a
        .patch(&format!("/products/{}", p["id"]), json!({"price": 12.5}))
        .await
        .expect(200);
    fresh(&b, "/products", 200, json!([p2])).await;
    let q = a
        .post("/products", json!({"name": "Rope", "price": 1}))
        .await
        .expect(201);
    fresh(&b, "/products", 200, json!([p2, q])).await;

    // Deletes through A: B answers 404.
    a.delete(&path).await.expect(200);
    fresh(
        &b,
        &path,
        404,
        json!({"error": format!("User {} not found", user["id"])}),
    )
    .await;
    fresh(&b, "/users", 200, json!([])).await;
    a.delete(&format!("/products/{}", p["id"]))
        .await
        .expect(200);
    fresh(&b, "/products", 200, json!([q])).await;
    let gone = format!("/products/{}", p["id"]);
    fresh(
        &b,
        &gone,
        404,
        json!({"error": format!("Product {} not found", p["id"])}),
    )
    .await;
}

#[tokio::test]
async fn two_processes_are_coherent_on_sqlite() {
    let db = TestDb::sqlite();
    coherence(&db, "coh-sqlite").await;
}

#[tokio::test]
async fn two_processes_are_coherent_on_postgres() {
    let Some(db) = TestDb::postgres("two_processes_are_coherent_on_postgres").await else {
        return;
    };
    coherence(&db, "coh-pg").await;
}

/// A Redis, a SQLite database, a demo using both (prefix `tag`), and Ann created
/// through it: her body and path.
async fn with_redis_and_ann(tag: &str) -> (RedisServer, TestDb, Demo, Value, String) {
    let server = RedisServer::start();
    let db = TestDb::sqlite();
    let demo = Demo::start(tag, &DemoEnv::new(&db).redis(server.url(), tag)).await;
    let user = demo.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    (server, db, demo, user, path)
}

#[tokio::test]
async fn a_redis_outage_degrades_to_the_database() {
    let (server, _db, demo, user, path) = with_redis_and_ann("outage").await;
    demo.get(&path).await.expect_cached(200, "MISS");
    demo.get(&path).await.expect_cached(200, "HIT");
    demo.get("/products").await.expect(200);

    server.kill();
    // Every route still answers, from the database, with the right bodies.
    for _ in 0..3 {
        assert_eq!(demo.get(&path).await.expect(200), user);
        assert_eq!(demo.get("/users").await.expect(200), json!([user]));
    }
    let updated = demo.patch(&path, json!({"name": "Anne"})).await.expect(200);
    assert_eq!(demo.get(&path).await.expect(200), updated);
    let bob = demo
        .post("/users", json!({"name": "Bob", "email": "bob@example.com"}))
        .await
        .expect(201);
    assert_eq!(demo.get("/users").await.expect(200), json!([updated, bob]));
    let p = demo
        .post("/products", json!({"name": "P", "price": 1}))
        .await
        .expect(201);
    assert_eq!(demo.get("/products").await.expect(200), json!([p]));
    demo.delete(&format!("/users/{}", bob["id"]))
        .await
        .expect(200);
    demo.get(&format!("/users/{}", bob["id"])).await.expect(404);
    let health = demo.get("/health").await.expect(200);
    assert_eq!(health["status"], json!("degraded"), "{health}");
    assert_eq!(health["cache"]["status"], json!("degraded"), "{health}");
    assert!(health["cache"]["error"].is_string(), "{health}");
    demo.get("/cache/stats").await.expect(200);

    // Redis back: the cache is used again.
    server.restart();
    eventually("the cache is healthy again", || async {
        let h = demo.get("/health").await.expect(200);
        (h["cache"]["status"] == json!("ok")).then_some(())
    })
    .await;
    let key = format!("outage:user:{}", user["id"]);
    eventually("reads are cached in Redis again", || async {
        let r = demo.get(&path).await;
        assert_eq!(r.expect(200), updated);
        (r.x_cache.as_deref() == Some("HIT") && raw_get(&server, &key).await.is_some())
            .then_some(())
    })
    .await;
    assert_eq!(demo.try_exit(), None);
}

#[tokio::test]
async fn starts_with_redis_down_and_uses_it_once_it_answers() {
    let server = RedisServer::start();
    server.kill();
    let db = TestDb::sqlite();
    let demo = Demo::start("late-redis", &DemoEnv::new(&db).redis(server.url(), "late")).await;
    assert!(demo.log().contains("DEGRADED"), "{}", demo.log());
    let health = demo.get("/health").await.expect(200);
    assert_eq!(health["cache"]["status"], json!("degraded"), "{health}");

    let user = demo.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    assert_eq!(demo.get(&path).await.expect(200), user);
    assert_eq!(demo.get("/users").await.expect(200), json!([user]));

    server.restart();
    let key = format!("late:user:{}", user["id"]);
    eventually("the demo uses Redis once it answers", || async {
        let r = demo.get(&path).await;
        assert_eq!(r.expect(200), user);
        let stored = raw_get(&server, &key).await;
        (r.x_cache.as_deref() == Some("HIT") && stored.is_some()).then_some(stored)
    })
    .await;
    let health = demo.get("/health").await.expect(200);
    assert_eq!(health["status"], json!("ok"), "{health}");
    let _: Value = health;
}

#[tokio::test]
async fn a_frozen_redis_degrades_to_the_database() {
    let (server, _db, demo, user, path) = with_redis_and_ann("frozen").await;
    demo.get(&path).await.expect_cached(200, "MISS");

    // SIGSTOP: connections stay open, nothing answers; every call times out.
    server.pause();
    for _ in 0..8 {
        assert_eq!(demo.get(&path).await.expect(200), user);
        assert_eq!(demo.get("/products").await.expect(200), json!([]));
    }
    let updated = demo.patch(&path, json!({"name": "Anne"})).await.expect(200);
    assert_eq!(demo.get(&path).await.expect(200), updated);
    assert_eq!(demo.get("/users").await.expect(200), json!([updated]));
    assert_eq!(
        demo.get("/health").await.expect(200)["cache"]["status"],
        json!("degraded")
    );

    server.resume();
    eventually("reads are cached in Redis again", || async {
        let r = demo.get(&path).await;
        assert_eq!(r.expect(200), updated);
        (r.x_cache.as_deref() == Some("HIT")).then_some(())
    })
    .await;
}
