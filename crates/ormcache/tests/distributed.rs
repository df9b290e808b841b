//! `DistributedCache` against real `redis-server` processes.
#![allow(clippy::print_stdout, clippy::type_complexity)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ormcache::{
    BreakerConfig, BreakerState, Cache, Codec, Compression, ComputeOptions, DistributedCache,
    ErrorKind, Ttl,
};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::{RedisServer, ServerOptions, cache, command_calls, config};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

#[tokio::test]
async fn quick_start_operations() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;

    assert_eq!(c.get::<User>("user:1").await.unwrap(), None);
    c.set("user:1", user(1), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        c.get::<User>("user:1").await.unwrap().as_deref(),
        Some(&user(1))
    );
    assert!(c.exists("user:1").await.unwrap());
    assert!(c.delete("user:1").await.unwrap());
    assert!(!c.delete("user:1").await.unwrap());
    assert!(!c.exists("user:1").await.unwrap());

    c.set("user:2", user(2), None).await.unwrap();
    c.set("user:3", user(3), None).await.unwrap();
    assert_eq!(c.clear().await.unwrap(), 2);
    assert_eq!(c.get::<User>("user:2").await.unwrap(), None);
}

#[tokio::test]
async fn plain_json_layout_is_shared_with_the_python_package() {
    let server = RedisServer::start();
    let c = cache(&server, "myapp").await;
    let mut raw = server.connection().await;

    // Ours is plain JSON at {prefix}:{key} with a TTL.
    c.set("user:1", serde_json::json!({"id": 1, "name": "John"}), None)
        .await
        .unwrap();
    let stored: Vec<u8> = raw.get("myapp:user:1").await.unwrap();
    assert_eq!(stored, br#"{"id":1,"name":"John"}"#);
    let pttl: i64 = raw.pttl("myapp:user:1").await.unwrap();
    assert!(pttl > 299_000 && pttl <= 300_000, "{pttl}");

    // What Python's json.dumps wrote reads here (its default separators have spaces).
    let _: () = raw
        .set_ex("myapp:user:2", r#"{"id": 2, "name": "Zoë"}"#, 60)
        .await
        .unwrap();
    let u: Arc<User> = c.get("user:2").await.unwrap().unwrap();
    assert_eq!(
        *u,
        User {
            id: 2,
            name: "Zoë".into()
        }
    );
}

#[tokio::test]
async fn cached_none_is_distinct_from_a_miss() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    c.set::<Option<User>>("user:404", None, None).await.unwrap();
    assert_eq!(
        c.get::<Option<User>>("user:404").await.unwrap().as_deref(),
        Some(&None)
    );
    assert_eq!(c.get::<Option<User>>("user:405").await.unwrap(), None);
}

#[tokio::test]
async fn ttl_expire_and_zero_ttl() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    assert_eq!(c.ttl("k").await.unwrap(), Ttl::Missing);
    c.set("k", 1u8, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    let Ttl::Remaining(left) = c.ttl("k").await.unwrap() else {
        panic!("no TTL")
    };
    assert!(
        left <= Duration::from_millis(1500) && left > Duration::from_millis(1000),
        "{left:?}"
    );

    assert!(c.expire("k", Duration::from_secs(3600)).await.unwrap());
    assert!(c.ttl("k").await.unwrap().remaining().unwrap() > Duration::from_secs(3599));
    assert!(!c.expire("missing", Duration::from_secs(1)).await.unwrap());

    let mut raw = server.connection().await;
    let _: () = raw.set("app:forever", "1").await.unwrap();
    assert_eq!(c.ttl("forever").await.unwrap(), Ttl::NoExpiry);

    for err in [
        c.set("k", 1u8, Some(Duration::ZERO)).await.unwrap_err(),
        c.expire("k", Duration::ZERO).await.unwrap_err(),
        c.set_many(vec![("a", 1u8)], Some(Duration::ZERO))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }

    c.set("short", 1u8, Some(Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(c.get::<u8>("short").await.unwrap(), None);
}

#[tokio::test]
async fn awkward_keys_round_trip() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    let big = "k".repeat(1 << 20);
    let keys = [
        "*",
        "?",
        "[",
        "]",
        "\\",
        "a*b?c[d]e\\f",
        "with space",
        "new\nline",
        "tab\there",
        "ключ",
        "鍵🔑",
        big.as_str(),
    ];
    for (i, k) in keys.iter().enumerate() {
        c.set(k, i as u64, None).await.unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            c.get::<u64>(k).await.unwrap().as_deref(),
            Some(&(i as u64)),
            "{:?}",
            &k[..k.len().min(20)]
        );
        assert!(c.exists(k).await.unwrap());
    }
    // Glob characters in a key do not act as a pattern when deleting it literally.
    assert_eq!(
        c.clear_pattern(&ormcache::escape_glob("a*b?c[d]e\\f"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.get::<u64>("*").await.unwrap().as_deref(), Some(&0));
    assert!(c.delete("*").await.unwrap());
    assert_eq!(c.get::<u64>("?").await.unwrap().as_deref(), Some(&1));
    assert!(c.delete(&big).await.unwrap());

    let err = c.get::<u64>("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "invalid input in `get` of key \"\": key must not be empty"
    );
    let err = c.set("", 1u8, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Error messages shorten huge keys.
    let err = c.set(&format!("__oc{big}"), 1u8, None).await.unwrap_err();
    assert!(err.to_string().len() < 600, "{}", err.to_string().len());
}

#[tokio::test]
async fn reserved_keys_are_refused_and_survive_clears() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    for k in ["stats", "__oc:tag:x", "__oc"] {
        assert_eq!(
            c.set(k, 1u8, None).await.unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{k}"
        );
    }
    let mut raw = server.connection().await;
    let _: () = raw.set("app:__oc:t:acme:user:1", "1").await.unwrap();
    let _: () = raw.hset("app:stats", "hits", 5).await.unwrap();
    c.set("stats:daily", 1u8, None).await.unwrap();
    assert_eq!(c.clear_pattern("*").await.unwrap(), 1);
    assert_eq!(c.clear_pattern("stats").await.unwrap(), 0);
    assert_eq!(c.clear_pattern("__oc*").await.unwrap(), 0);
    assert_eq!(c.clear().await.unwrap(), 0);
    let exists: (bool, bool) = redis::pipe()
        .exists("app:__oc:t:acme:user:1")
        .exists("app:stats")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, (true, true));
}

#[tokio::test]
async fn patterns_cannot_reach_outside_the_prefix() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    let mut raw = server.connection().await;
    for k in ["other:1", "appx:1", "ap:1", "app", "*", "x", "APP:1"] {
        let _: () = raw.set(k, "victim").await.unwrap();
    }
    c.set("mine", 1u8, None).await.unwrap();
    for pattern in [
        "*", "../*", "\\", "[", "]*", "*:*", "\\*", "?*", "[a-z]*", "**", "app:*", "*app*", "\0*",
    ] {
        c.clear_pattern(pattern).await.unwrap();
    }
    c.clear().await.unwrap();
    let victims: usize = raw
        .exists(&["other:1", "appx:1", "ap:1", "app", "*", "x", "APP:1"])
        .await
        .unwrap();
    assert_eq!(victims, 7, "keys outside the prefix were deleted");
    assert!(!raw.exists::<_, bool>("app:mine").await.unwrap());

    // A prefix with glob characters is matched literally.
    let odd = cache(&server, "a*").await;
    let _: () = raw.set("ab:1", "victim").await.unwrap();
    odd.set("1", 1u8, None).await.unwrap();
    assert_eq!(odd.clear().await.unwrap(), 1);
    assert!(raw.exists::<_, bool>("ab:1").await.unwrap());
}

#[tokio::test]
async fn clear_pattern_counts_and_batches() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    let entries: Vec<(String, u32)> = (0..2500).map(|i| (format!("user:{i}"), i)).collect();
    c.set_many(entries, None).await.unwrap();
    c.set("session:2024-01", 1u8, None).await.unwrap();
    c.set("session:2025-01", 1u8, None).await.unwrap();
    assert_eq!(c.clear_pattern("session:2024-*").await.unwrap(), 1);
    assert_eq!(c.clear_pattern("user:1?").await.unwrap(), 10);
    assert_eq!(c.clear_pattern("user:*").await.unwrap(), 2490);
    assert_eq!(c.clear().await.unwrap(), 1);
}

#[tokio::test]
async fn batch_operations() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    c.set_many(
        vec![("user:1", user(1)), ("user:2", user(2))],
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let got = c
        .get_many::<User, _>(&["user:1", "user:9", "user:2"])
        .await
        .unwrap();
    let got: Vec<Option<User>> = got.into_iter().map(|v| v.map(|a| (*a).clone())).collect();
    assert_eq!(got, vec![Some(user(1)), None, Some(user(2))]);
    assert!(c.ttl("user:2").await.unwrap().remaining().unwrap() <= Duration::from_secs(30));
    assert_eq!(
        c.delete_many(&["user:1", "user:2", "user:3"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(c.get_many::<User, &str>(&[]).await.unwrap(), vec![]);
    // One bad key refuses the whole batch before anything is sent.
    let err = c
        .set_many(vec![("ok", 1u8), ("", 2u8)], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!c.exists("ok").await.unwrap());
}

#[tokio::test]
async fn corrupt_entries_are_counted_misses() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    let mut raw = server.connection().await;
    let good = serde_json::to_vec(&user(1)).unwrap();
    let mp = ormcache::Encoding::new(Codec::MessagePack)
        .encode(&user(1))
        .unwrap();
    let planted: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xff\x00\x13garbage".to_vec()),
        ("truncated_json", good[..good.len() / 2].to_vec()),
        ("truncated_msgpack", mp[..mp.len() - 3].to_vec()),
        ("bad_lz4", vec![0x02, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("wrong_type", br#"{"id":"not a number","name":5}"#.to_vec()),
        ("empty", Vec::new()),
    ];
    for (k, bytes) in &planted {
        let _: () = raw.set(format!("app:{k}"), bytes.as_slice()).await.unwrap();
    }
    let _: () = raw.rpush("app:a_list", "x").await.unwrap();
    for (k, _) in &planted {
        assert_eq!(c.get::<User>(k).await.unwrap(), None, "{k}");
    }
    assert_eq!(c.get::<User>("a_list").await.unwrap(), None);
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.decode_errors, 7);
    assert_eq!(stats.misses, 7);
    assert_eq!(stats.hits, 0);
    // Each undecodable entry was removed when read, so that a fill can store again.
    for (k, _) in &planted {
        let left: bool = raw.exists(format!("app:{k}")).await.unwrap();
        assert!(!left, "{k} was not removed");
    }

    // A read-through path overwrites the corrupt entry.
    c.set("garbage", user(1), None).await.unwrap();
    assert_eq!(
        c.get::<User>("garbage").await.unwrap().as_deref(),
        Some(&user(1))
    );

    // By option, the error itself (and the entry is kept).
    for (k, bytes) in &planted {
        let _: () = raw.set(format!("app:{k}"), bytes.as_slice()).await.unwrap();
    }
    let strict = DistributedCache::create(config(&server, "app").return_decode_errors(true))
        .await
        .unwrap();
    let err = strict.get::<User>("truncated_json").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(err.to_string().contains("truncated_json"), "{err}");
    let batch = strict
        .get_many::<User, _>(&["wrong_type"])
        .await
        .unwrap_err();
    assert_eq!(batch.kind(), ErrorKind::Decode);
    let kept: bool = raw.exists("app:truncated_json").await.unwrap();
    assert!(kept);
}

#[tokio::test]
async fn values_over_max_value_bytes_are_refused_both_ways() {
    let server = RedisServer::start();
    let c = DistributedCache::create(config(&server, "app").max_value_bytes(1024))
        .await
        .unwrap();
    let err = c.set("big", "x".repeat(2000), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge);
    assert!(err.to_string().contains("big"), "{err}");
    assert!(
        !err.to_string().contains("xxxx"),
        "the value leaked into the message: {err}"
    );
    assert!(!c.exists("big").await.unwrap());

    let mut raw = server.connection().await;
    let _: () = raw
        .set("app:big", serde_json::to_vec(&"y".repeat(5000)).unwrap())
        .await
        .unwrap();
    assert_eq!(c.get::<String>("big").await.unwrap(), None);
    assert_eq!(c.get_stats().await.unwrap().decode_errors, 1);
}

#[tokio::test]
async fn every_codec_round_trips_through_redis_and_reads_the_others() {
    let server = RedisServer::start();
    let writers = [
        (Codec::Json, Compression::None),
        (Codec::MessagePack, Compression::None),
        (Codec::Json, Compression::Lz4 { min_bytes: 64 }),
        (Codec::MessagePack, Compression::Lz4 { min_bytes: 64 }),
    ];
    let long = User {
        id: 9,
        name: "long name ".repeat(50),
    };
    for (i, (codec, compression)) in writers.iter().enumerate() {
        let w = DistributedCache::create(
            config(&server, "app")
                .serializer(*codec)
                .compression(*compression),
        )
        .await
        .unwrap();
        w.set(&format!("long:{i}"), long.clone(), None)
            .await
            .unwrap();
        w.set(&format!("short:{i}"), user(1), None).await.unwrap();
    }
    let mut raw = server.connection().await;
    let first: Vec<u8> = raw.get("app:long:3").await.unwrap();
    assert_eq!(first[0], 0x02, "LZ4 header expected");
    let reader = cache(&server, "app").await;
    for i in 0..writers.len() {
        assert_eq!(
            reader
                .get::<User>(&format!("long:{i}"))
                .await
                .unwrap()
                .as_deref(),
            Some(&long)
        );
        assert_eq!(
            reader
                .get::<User>(&format!("short:{i}"))
                .await
                .unwrap()
                .as_deref(),
            Some(&user(1))
        );
    }
}

#[tokio::test]
async fn stats_are_cluster_wide_and_in_the_seed_shape() {
    let server = RedisServer::start();
    let a = cache(&server, "app").await;
    let b = cache(&server, "app").await;
    a.set("k", 1u8, None).await.unwrap();
    a.get::<u8>("k").await.unwrap();
    b.get::<u8>("k").await.unwrap();
    b.get::<u8>("missing").await.unwrap();

    // Each process sees the others' counters once they are flushed (get_stats
    // flushes its own; the background flush does it every second).
    a.get_stats().await.unwrap();
    let stats = b.get_stats().await.unwrap();
    assert_eq!(
        (stats.hits, stats.misses, stats.sets),
        (2, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.hit_rate, 66.67);
    assert_eq!(stats.keys_count, 1);
    assert!(stats.keys_count_exact);
    assert_eq!(stats.local.hits, 1);

    let json = serde_json::to_value(&stats).unwrap();
    for field in [
        "hits",
        "misses",
        "sets",
        "errors",
        "hit_rate",
        "keys_count",
        "default_ttl",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
    assert_eq!(json["default_ttl"], 300);

    // The counters live in the Python package's hash.
    let mut raw = server.connection().await;
    let hits: u64 = raw.hget("app:stats", "hits").await.unwrap();
    assert_eq!(hits, 2);

    // The background flush gets there without get_stats.
    let fast = DistributedCache::create(
        config(&server, "fast").stats_flush_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    fast.get::<u8>("nothing").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let misses: u64 = raw.hget("fast:stats", "misses").await.unwrap();
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn stats_with_a_million_unrelated_keys_are_sampled() {
    let server = RedisServer::start_with(ServerOptions {
        args: vec!["--enable-debug-command".into(), "yes".into()],
        ..ServerOptions::default()
    });
    // Blocking on purpose: populating takes longer than an async response timeout.
    let mut raw = server.client().get_connection().unwrap();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .query(&mut raw)
        .unwrap();
    // Setup only: a generous timeout for 20,000 writes in one pipeline on a busy
    // 2-core machine.
    let c =
        DistributedCache::create(config(&server, "app").socket_timeout(Duration::from_secs(10)))
            .await
            .unwrap();
    let entries: Vec<(String, u8)> = (0..20_000).map(|i| (format!("k{i}"), 1)).collect();
    c.set_many(entries, None).await.unwrap();

    let start = Instant::now();
    let stats = c.get_stats().await.unwrap();
    let took = start.elapsed();
    println!(
        "get_stats with 1,020,000 keys: {took:?}, keys_count {} (estimate)",
        stats.keys_count
    );
    assert!(!stats.keys_count_exact);
    // A sample of 8,000 keys: the estimate is within a wide band of the truth.
    assert!((5_000..60_000).contains(&stats.keys_count), "{stats:?}");
    assert_eq!(stats.sets, 20_000);
}

#[tokio::test]
async fn unreachable_redis_at_create_names_the_address_not_the_password() {
    let port = ormcache_testing::free_port();
    let start = Instant::now();
    let err = DistributedCache::create(
        ormcache::DistributedConfig::new()
            .redis_url(format!("redis://bob:hunter2@127.0.0.1:{port}/0")),
    )
    .await
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(err.is_unavailable(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{msg}"
    );

    let err = DistributedCache::create(ormcache::DistributedConfig::new().redis_url("http://nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = DistributedCache::create(ormcache::DistributedConfig::new().key_prefix(""))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err =
        DistributedCache::create(ormcache::DistributedConfig::new().default_ttl(Duration::ZERO))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn killed_redis_fails_fast_and_recovers() {
    let server = RedisServer::start();
    // A breaker that, once open, would never probe again by itself within the
    // test: only the background reconnection can close it.
    let breaker = BreakerConfig::new()
        .threshold(3)
        .cooldown(Duration::from_secs(3600));
    let c = DistributedCache::create(config(&server, "app").circuit_breaker(breaker))
        .await
        .unwrap();
    c.set("k", 1u8, None).await.unwrap();
    server.kill();
    // The first call sees the connection drop (or the reconnection refused); the
    // second at the latest sees the refusal.
    for _ in 0..2 {
        let err = c.get::<u8>("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    }
    // The refused connection is known: the next call fails at once, without
    // waiting on a reconnection, and counts toward the breaker.
    let err = c.get::<u8>("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(
        err.to_string().contains("reconnecting in the background"),
        "{err}"
    );
    assert_eq!(c.breaker_state(), BreakerState::Open);
    let open = c.get::<u8>("k").await.unwrap_err();
    assert_eq!(open.kind(), ErrorKind::CircuitOpen, "{open:?}");
    // Read-through fails open.
    let v: Arc<u8> = c.get_or_compute("k", None, || async { 7u8 }).await.unwrap();
    assert_eq!(*v, 7);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.set("k", 2u8, None).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_unavailable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
    assert_eq!(c.breaker_state(), BreakerState::Closed);
    assert_eq!(c.get::<u8>("k").await.unwrap().as_deref(), Some(&2));
}

#[tokio::test]
async fn a_probe_dropped_mid_call_lets_the_next_call_probe() {
    let server = RedisServer::start();
    let breaker = BreakerConfig::new()
        .threshold(1)
        .cooldown(Duration::from_millis(50));
    let c = DistributedCache::create(
        config(&server, "app")
            .socket_timeout(Duration::from_millis(300))
            .circuit_breaker(breaker),
    )
    .await
    .unwrap();
    c.set("k", 1u8, None).await.unwrap();
    server.pause();
    let err = c.get::<u8>("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert_eq!(c.breaker_state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The probe waits on the frozen server (it could only time out after 300 ms)
    // and is dropped after 20 ms, as a caller's `timeout` or a disconnected
    // client drops a request.
    let dropped = tokio::time::timeout(Duration::from_millis(20), c.get::<u8>("k")).await;
    assert!(dropped.is_err(), "the probe should still be waiting");
    assert_eq!(
        c.breaker_state(),
        BreakerState::Open,
        "the dropped probe gave its slot back"
    );
    server.resume();
    // The cooldown ran out long ago: the next call is a probe, which closes it.
    assert_eq!(c.get::<u8>("k").await.unwrap().as_deref(), Some(&1));
    assert_eq!(c.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn extreme_settings_do_not_panic() {
    let server = RedisServer::start();
    let c = DistributedCache::create(
        config(&server, "app")
            .socket_timeout(Duration::MAX)
            .socket_connect_timeout(Duration::MAX)
            .health_check_interval(Duration::MAX)
            .stats_flush_interval(Duration::MAX)
            .circuit_breaker(BreakerConfig::new().cooldown(Duration::MAX)),
    )
    .await
    .unwrap();
    // A batch big enough to get the per-command allowance on top of the timeout.
    let entries: Vec<(String, u32)> = (0..2_000).map(|i| (format!("k{i}"), i)).collect();
    c.set_many(entries, None).await.unwrap();
    let keys: Vec<String> = (0..2_000).map(|i| format!("k{i}")).collect();
    let got = c.get_many::<u32, _>(&keys).await.unwrap();
    assert_eq!(got.iter().flatten().count(), 2_000);
    // (A TTL over the maximum is an input error, not a panic.)
    let err = c.expire("k1", Duration::MAX).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    let v: Arc<u8> = c
        .get_or_compute_with(
            "computed",
            ComputeOptions::new().lock(true).lock_ttl(Duration::MAX),
            || async { 3u8 },
        )
        .await
        .unwrap();
    assert_eq!(*v, 3);
    assert_eq!(c.get::<u8>("computed").await.unwrap().as_deref(), Some(&3));
    assert!(matches!(
        c.ttl("computed").await.unwrap(),
        Ttl::Remaining(_)
    ));
}

#[test]
fn create_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let server = RedisServer::start();
    // Polled by something other than Tokio (here: by hand, once).
    let mut create = std::pin::pin!(DistributedCache::create(
        config(&server, "app").connect_lazily(true)
    ));
    match create
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
            assert!(e.to_string().contains("Tokio runtime"), "{e}");
        }
        Poll::Ready(Ok(_)) => panic!("created without a runtime"),
        Poll::Pending => panic!("waits for a runtime that is not there"),
    }
}

#[tokio::test]
async fn paused_redis_times_out() {
    let server = RedisServer::start();
    let c =
        DistributedCache::create(config(&server, "app").socket_timeout(Duration::from_millis(150)))
            .await
            .unwrap();
    c.set("k", 1u8, None).await.unwrap();
    server.pause();
    let start = Instant::now();
    let err = c.get::<u8>("k").await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(err.to_string().contains("`get` of key \"k\""), "{err}");
    // An operation already in flight when the server freezes times out too.
    let c2 = c.clone();
    let inflight = tokio::spawn(async move { c2.clear().await });
    assert_eq!(
        inflight.await.unwrap().unwrap_err().kind(),
        ErrorKind::Timeout
    );
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.get::<u8>("k").await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.get::<u8>("k").await.unwrap().as_deref(), Some(&1));
    assert!(c.get_stats().await.unwrap().errors >= 2);
}

#[tokio::test]
async fn lazy_connect_starts_without_redis() {
    let server = RedisServer::start();
    server.kill();
    let c = DistributedCache::create(config(&server, "app").connect_lazily(true))
        .await
        .unwrap();
    assert!(c.get::<u8>("k").await.unwrap_err().is_unavailable());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.set("k", 1u8, None).await.is_err() {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.get::<u8>("k").await.unwrap().as_deref(), Some(&1));
}

#[tokio::test]
async fn passwords_acl_users_db_index_and_unix_sockets() {
    let server = RedisServer::start_with(ServerOptions {
        args: vec![
            "--requirepass".into(),
            "s3cret".into(),
            "--user".into(),
            "alice".into(),
            "on".into(),
            ">wonder".into(),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ],
        unix_socket: true,
    });
    let port = server.port();
    let with_password = format!("redis://:s3cret@127.0.0.1:{port}/3");
    let c = DistributedCache::create(config(&server, "app").redis_url(&with_password))
        .await
        .unwrap();
    c.set("k", 1u8, None).await.unwrap();
    assert!(!format!("{c:?}").contains("s3cret"));

    let alice = DistributedCache::create(
        config(&server, "app").redis_url(format!("redis://alice:wonder@127.0.0.1:{port}/3")),
    )
    .await
    .unwrap();
    assert_eq!(alice.get::<u8>("k").await.unwrap().as_deref(), Some(&1));

    // The entry is in db 3, not db 0.
    let db0 = DistributedCache::create(
        config(&server, "app").redis_url(format!("redis://alice:wonder@127.0.0.1:{port}/0")),
    )
    .await
    .unwrap();
    assert_eq!(db0.get::<u8>("k").await.unwrap(), None);

    let wrong = DistributedCache::create(
        config(&server, "app").redis_url(format!("redis://alice:nope@127.0.0.1:{port}")),
    )
    .await
    .unwrap_err();
    assert!(
        !wrong.to_string().contains("nope") && !format!("{wrong:?}").contains(":nope@"),
        "{wrong}"
    );

    let sock = server.socket_path();
    let unix = DistributedCache::create(
        config(&server, "app")
            .redis_url(format!("redis+unix://{}?db=3&pass=s3cret", sock.display())),
    )
    .await
    .unwrap();
    assert_eq!(unix.get::<u8>("k").await.unwrap().as_deref(), Some(&1));
}

#[tokio::test]
async fn several_connections_and_concurrent_tasks() {
    let server = RedisServer::start();
    let c = DistributedCache::create(config(&server, "app").max_connections(4))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let k = format!("t{t}:{i}");
                c.set(&k, t * 100 + i, None).await.unwrap();
                assert_eq!(
                    c.get::<u64>(&k).await.unwrap().as_deref(),
                    Some(&(t * 100 + i))
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get_stats().await.unwrap().keys_count, 1000);
}

#[tokio::test]
async fn close_flushes_and_refuses_later_calls() {
    let server = RedisServer::start();
    let c = cache(&server, "app").await;
    c.get::<u8>("k").await.unwrap();
    c.close().await.unwrap();
    assert!(c.is_closed());
    assert_eq!(
        c.get::<u8>("k").await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    let mut raw = server.connection().await;
    let misses: u64 = raw.hget("app:stats", "misses").await.unwrap();
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn health_check_and_ping() {
    let server = RedisServer::start();
    let c = DistributedCache::create(
        config(&server, "app").health_check_interval(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert!(c.ping().await.unwrap() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.pause();
    assert_eq!(c.ping().await.unwrap_err().kind(), ErrorKind::Timeout);
    server.resume();
}

/// The L1's glob matcher agrees with Redis's on random patterns and keys.
/// The matcher is internal; the feature `fuzzing` reaches it.
#[cfg(feature = "fuzzing")]
#[tokio::test]
async fn glob_matcher_agrees_with_redis() {
    let server = RedisServer::start();
    let mut raw = server.connection().await;
    let alphabet = ["a", "b", "c", "-", "^", "*", "?", "[", "]", "\\", ":", "é"];
    let mut rng = support::Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys = Vec::new();
    for _ in 0..300 {
        let len = 1 + rng.below(6);
        let key: String = (0..len).map(|_| *rng.pick(&alphabet)).collect();
        keys.push(key);
    }
    keys.sort();
    keys.dedup();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.set(format!("g:{k}"), 1).ignore();
    }
    let _: () = pipe.query_async(&mut raw).await.unwrap();
    let mut checked = 0;
    for _ in 0..400 {
        let len = 1 + rng.below(7);
        let pattern: String = (0..len).map(|_| *rng.pick(&alphabet)).collect();
        let full = format!("g:{pattern}");
        let mut redis_says: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&full)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut raw)
                .await
                .unwrap();
            redis_says.extend(batch.into_iter().map(|k| k[2..].to_string()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        redis_says.sort();
        let glob = ormcache::__fuzz::Glob::new(&full);
        let ours: Vec<String> = keys
            .iter()
            .filter(|k| glob.matches(format!("g:{k}").as_bytes()))
            .cloned()
            .collect();
        assert_eq!(ours, redis_says, "pattern {pattern:?}");
        checked += 1;
    }
    assert_eq!(checked, 400);
}

/// The same code runs on every cache kind through the trait.
#[tokio::test]
async fn any_cache_switches_kind_by_url() {
    let server = RedisServer::start();
    for url in [None, Some(server.url())] {
        let c = ormcache::AnyCache::from_url(url.as_deref(), Duration::from_secs(60))
            .await
            .unwrap();
        exercise(&c).await;
        let stats = serde_json::to_value(c.get_stats().await.unwrap()).unwrap();
        assert_eq!(stats["hits"], 2, "{} {stats}", c.kind());
    }
    exercise(&ormcache::QueryCache::new(100, Duration::from_secs(60)).unwrap()).await;
    exercise(&cache(&server, "direct").await).await;
}

async fn exercise(c: &impl Cache) {
    c.set("user:1", user(1), None).await.unwrap();
    assert_eq!(
        c.get::<User>("user:1").await.unwrap().as_deref(),
        Some(&user(1))
    );
    c.set_many(vec![("user:2", user(2)), ("post:1", user(3))], None)
        .await
        .unwrap();
    assert_eq!(
        c.get_many::<User, _>(&["user:2"]).await.unwrap()[0].as_deref(),
        Some(&user(2))
    );
    assert!(c.exists("user:2").await.unwrap());
    assert!(c.expire("user:2", Duration::from_secs(5)).await.unwrap());
    assert!(c.ttl("user:2").await.unwrap().remaining().unwrap() <= Duration::from_secs(5));
    assert_eq!(c.clear_pattern("user:*").await.unwrap(), 2);
    assert!(c.delete("post:1").await.unwrap());
    assert_eq!(c.delete_many(&["post:1"]).await.unwrap(), 0);
    c.set("x", 1u8, None).await.unwrap();
    assert_eq!(c.clear().await.unwrap(), 1);
    c.ping().await.unwrap();
}

/// A batch gets more time than one command: the command timeout bounds a round
/// trip, and each command of a batch adds an allowance (50 µs). Batches whose
/// replies take many times the command timeout succeed; before, the connection's
/// own response timeout (the command timeout) failed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_more_than_the_command_timeout() {
    const COMMAND_TIMEOUT: Duration = Duration::from_millis(20);
    let server = RedisServer::start();
    let c = DistributedCache::create(config(&server, "big").command_timeout(COMMAND_TIMEOUT))
        .await
        .unwrap();
    let n = 50_000;
    let entries: Vec<(String, String)> =
        (0..n).map(|i| (format!("k{i}"), "x".repeat(200))).collect();
    let started = std::time::Instant::now();
    c.set_many(entries, None).await.unwrap();
    let set_took = started.elapsed();
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let started = std::time::Instant::now();
    let got = c.get_many::<String, _>(&keys).await.unwrap();
    let get_took = started.elapsed();
    println!("{n} keys: set_many {set_took:?}, get_many {get_took:?}");
    assert_eq!(got.iter().flatten().count(), n);
    // Each took longer than one command may: the allowance was what let it finish.
    assert!(
        set_took > COMMAND_TIMEOUT && get_took > COMMAND_TIMEOUT,
        "the batches were too quick to need the allowance: {set_took:?}, {get_took:?}"
    );
    // One command still gets the command timeout, no allowance.
    server.pause();
    let err = c.get::<String>("k1").await.unwrap_err();
    server.resume();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.to_string().contains("20ms"), "{err}");
}

/// `set` sends the lease's `UNLINK` and the `SET` in one round trip and answers
/// with the `SET`'s reply: an error reply from Redis (here out of memory under
/// `noeviction`) is the call's error, and nothing is stored.
#[tokio::test]
async fn a_write_redis_refuses_is_an_error() {
    let server = RedisServer::start();
    let c = cache(&server, "oom").await;
    c.set("before", 1u32, None).await.unwrap();
    let mut admin = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let err = c.set("refused", 2u32, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err:?}");
    assert!(err.to_string().contains("OOM"), "{err}");
    assert!(
        err.to_string().contains("refused"),
        "the key is named: {err}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(c.get::<u32>("refused").await.unwrap(), None);
    // The breaker counts an answer, even an error, as Redis being up.
    assert_eq!(c.breaker_state(), BreakerState::Closed);
    c.set("after", 3u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("after").await.unwrap().as_deref(), Some(&3));
}

/// `coalesce_gets`: of 100 reads at once, the first sends a `GET` and the 99 that
/// find it out share an `MGET`; each gets its own key's answer, misses and bad entries
/// included.
///
/// One thread: the first poll of the 100 reads runs before any reply can be
/// handled, so every read after the first joins the queue. (On two threads the
/// first read can come back while the others are still being polled the first
/// time; the later ones then start a round of their own, and a fresh-clone CI
/// run counted 13 `GET`s where this test allows 10.)
#[tokio::test]
async fn coalesced_gets_share_mgets_and_each_gets_its_own_answer() {
    const READS: u64 = 100;
    const ROUNDS: u64 = 5;
    let server = RedisServer::start();
    let c = DistributedCache::create(config(&server, "co").coalesce_gets(true))
        .await
        .unwrap();
    for i in (0..READS).filter(|i| i % 10 != 0) {
        c.set(&format!("u:{i}"), user(i), None).await.unwrap();
    }
    // Every tenth is missing, but for two: bytes that are not a `User` (planted
    // again each round: a read evicts them), and a list.
    let mut raw = server.connection().await;
    let _: () = raw.rpush("co:u:20", "x").await.unwrap();
    let gets = command_calls(&mut raw, "get").await;
    let mgets = command_calls(&mut raw, "mget").await;
    for round in 0..ROUNDS {
        let _: () = raw.set("co:u:10", b"\xff not json").await.unwrap();
        let reads = (0..READS).map(|i| {
            let c = &c;
            async move { c.get::<User>(&format!("u:{i}")).await }
        });
        let got = futures_util::future::join_all(reads).await;
        for (i, g) in (0..READS).zip(got) {
            let g = g.unwrap_or_else(|e| panic!("round {round}, u:{i}: {e}"));
            let want = (i % 10 != 0).then(|| user(i));
            assert_eq!(g.as_deref(), want.as_ref(), "round {round}, u:{i}");
        }
    }
    let gets = command_calls(&mut raw, "get").await - gets;
    let mgets = command_calls(&mut raw, "mget").await - mgets;
    println!("{} reads: {gets} GET, {mgets} MGET", READS * ROUNDS);
    // One a round, and the one in the script that evicts the bad entry.
    assert!(
        gets <= 2 * ROUNDS,
        "{gets} GETs: the reads were not coalesced"
    );
    assert!(mgets >= ROUNDS, "{mgets} MGETs for {ROUNDS} rounds");
    // The bad entry was met once a round and counted, never returned.
    assert!(!raw.exists::<_, bool>("co:u:10").await.unwrap(), "evicted");
    assert_eq!(c.get_stats().await.unwrap().decode_errors, ROUNDS);
}

/// `coalesce_gets` on a frozen Redis: every read, alone or batched, fails within
/// its timeout with an error that names its own key; once Redis answers again,
/// so do the reads. (One thread, as above: one read on the wire, the others in
/// one batch.)
#[tokio::test]
async fn coalesced_gets_fail_each_with_its_own_key_and_recover() {
    let server = RedisServer::start();
    let c = DistributedCache::create(
        config(&server, "cf")
            .coalesce_gets(true)
            .socket_timeout(Duration::from_millis(200))
            .circuit_breaker(BreakerConfig::new().threshold(1_000_000)),
    )
    .await
    .unwrap();
    c.set("k:1", user(1), None).await.unwrap();
    let read_all = || {
        futures_util::future::join_all((0..30).map(|i| {
            let c = &c;
            async move { (i, c.get::<User>(&format!("k:{i}")).await) }
        }))
    };
    server.pause();
    let started = Instant::now();
    let got = read_all().await;
    let took = started.elapsed();
    server.resume();
    for (i, g) in got {
        let e = g.expect_err("Redis is frozen");
        assert_eq!(e.kind(), ErrorKind::Timeout, "k:{i}: {e}");
        assert_eq!(e.key(), Some(format!("k:{i}").as_str()), "{e}");
    }
    // Two timeouts in turn at most (the read on the wire, then the batch),
    // with room for a loaded machine.
    assert!(took < Duration::from_secs(5), "the reads took {took:?}");
    // An error counted for each read (the batch's round trip counts its first);
    // a background stats flush may have failed too.
    let errors = c.get_stats().await.unwrap().local.errors;
    assert!(errors >= 30, "{errors} errors counted for 30 failed reads");
    for (i, g) in read_all().await {
        let want = (i == 1).then(|| user(1));
        assert_eq!(g.unwrap().as_deref(), want.as_ref(), "k:{i}");
    }
}
