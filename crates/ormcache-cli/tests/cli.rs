//! The `ormcache` binary against real redis-servers and HybridCaches of this
//! process.

mod support;

use std::process::Stdio;
use std::time::Duration;

use ormcache::tenant::{self, TenantId};
use ormcache::{Codec, Compression, DistributedCache};
use ormcache_testing::{RedisSentinels, ServerOptions, TestCerts, TlsRedisServer};
use serde_json::json;
use support::{
    RedisCluster, RedisServer, cli, cluster_url, hybrid, hybrid_on, hybrid_speaking, l2, run,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const MINUTE: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_decodes_every_codec_with_ttl_and_tags() {
    let server = RedisServer::start();
    let url = server.url();
    let a = hybrid(&url, "app").await;
    a.set_with_tags(
        "user:1",
        json!({"id": 1, "name": "Ada"}),
        MINUTE,
        &["users", "team:7"],
    )
    .await
    .unwrap();

    let r = cli(&url, "app", &["--json", "get", "user:1"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(j["value"], json!({"id": 1, "name": "Ada"}));
    assert_eq!(j["redis_key"], "app:user:1");
    assert_eq!(j["ttl"], "remaining");
    let ms = j["ttl_ms"].as_u64().unwrap();
    assert!(ms > 0 && ms <= 60_000, "{j}");
    assert_eq!(
        j["format"],
        json!({"codec": "json", "compressed": false, "tagged": true})
    );
    let tags: Vec<(String, bool)> = j["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(tags, vec![("users".into(), true), ("team:7".into(), true)]);
    assert_eq!(j["fresh"], true);

    // Invalidated through the library: the CLI shows the stale stamp.
    a.invalidate_tag("team:7").await.unwrap();
    let j = cli(&url, "app", &["--json", "get", "user:1"]).await.json();
    assert_eq!(j["fresh"], false, "{j}");
    assert_eq!(j["tags"][1]["current"], false, "{j}");

    // MessagePack, compressed, written by another configuration.
    let packed = DistributedCache::builder()
        .redis_url(&url)
        .key_prefix("app")
        .serializer(Codec::MessagePack)
        .compression(Compression::Lz4 { min_bytes: 16 })
        .build()
        .await
        .unwrap();
    packed
        .set("rows", vec!["row".to_string(); 100], MINUTE)
        .await
        .unwrap();
    let j = cli(&url, "app", &["--json", "get", "rows"]).await.json();
    assert_eq!(
        j["format"],
        json!({"codec": "msgpack", "compressed": true, "tagged": false})
    );
    assert_eq!(j["value"], json!(vec!["row"; 100]));
    assert_eq!(j["tags"], json!([]));

    // A tenant's key, and the text form.
    let acme = TenantId::new("acme").unwrap();
    tenant::scope(acme, a.set("cart", 3u32, MINUTE))
        .await
        .unwrap();
    let r = cli(&url, "app", &["get", "cart", "--tenant", "acme"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stdout.contains("app:__oc:t:acme:cart"), "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("value") && l.ends_with(" 3")),
        "{}",
        r.stdout
    );

    // Bytes no codec wrote are shown as undecodable, not a failure; another
    // Redis type is one line and exit 1.
    let mut raw = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg("app:junk")
        .arg(b"\x02\xff\xff\xff\x7f")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("app:junk2")
        .arg(b"\x01\xc1")
        .query_async(&mut raw)
        .await
        .unwrap();
    for (key, error) in [("junk", "value too large"), ("junk2", "decode error")] {
        let r = cli(&url, "app", &["--json", "get", key]).await;
        assert_eq!(r.code, 0, "{r:#?}");
        let j = r.json();
        assert_eq!(
            (j["fresh"].clone(), j["value"].clone()),
            (json!(false), json!(null)),
            "{j}"
        );
        assert!(
            j["decode_error"].as_str().unwrap().starts_with(error),
            "{j}"
        );
    }
    let _: () = redis::cmd("RPUSH")
        .arg("app:list")
        .arg("x")
        .query_async(&mut raw)
        .await
        .unwrap();
    let r = cli(&url, "app", &["get", "list"]).await;
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{r:#?}");
    assert!(
        r.stderr.contains("WRONGTYPE") && r.stdout.is_empty(),
        "{r:#?}"
    );

    // Missing keys exit 4; ttl answers like the library.
    let r = cli(&url, "app", &["get", "cart"]).await;
    assert_eq!((r.code, r.stdout.trim()), (4, "not found: app:cart"));
    let j = cli(&url, "app", &["--json", "ttl", "user:1"]).await.json();
    assert_eq!(j["ttl"], "remaining");
    assert!(j["ttl_ms"].as_u64().unwrap() <= 60_000);
    assert_eq!(cli(&url, "app", &["ttl", "nope"]).await.code, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_evicts_the_l1_copy_of_every_running_instance() {
    let server = RedisServer::start();
    let url = server.url();
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    a.set("user:1", "old".to_string(), MINUTE).await.unwrap();
    // B holds it in its L1.
    assert_eq!(
        b.get::<String>("user:1")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("old")
    );
    assert_eq!(b.get_stats().await.unwrap().l1.size, 1);

    let r = cli(&url, "app", &["--json", "del", "user:1"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(
        (
            j["deleted"].clone(),
            j["instances"].clone(),
            j["unconfirmed"].clone()
        ),
        (json!(true), json!(2), json!(0)),
        "both instances confirmed: {j}"
    );
    // Confirmed: B's next read does not serve its old copy.
    assert_eq!(b.get::<String>("user:1").await.unwrap(), None);
    assert_eq!(a.get::<String>("user:1").await.unwrap(), None);

    let r = cli(&url, "app", &["del", "user:1"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("not found"), "{}", r.stdout);
}

/// Services on the broadcast protocol: `--protocol broadcast` writes as they do,
/// and every live instance confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_follows_the_services_protocol() {
    let server = RedisServer::start();
    let url = server.url();
    let broadcast = ormcache::Protocol::Broadcast;
    let a = hybrid_speaking(l2(&url, "app").await, broadcast).await;
    let b = hybrid_speaking(l2(&url, "app").await, broadcast).await;
    a.set("user:1", 1u32, MINUTE).await.unwrap();
    assert_eq!(b.get::<u32>("user:1").await.unwrap().as_deref(), Some(&1));
    assert!(b.l1().exists_sync("user:1"));

    let r = cli(
        &url,
        "app",
        &["--json", "--protocol", "broadcast", "del", "user:1"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(
        (j["instances"].clone(), j["unconfirmed"].clone()),
        (json!(2), json!(0)),
        "{j}"
    );
    assert!(!b.l1().exists_sync("user:1"), "B's copy survived: {j}");
    assert_eq!(b.get::<u32>("user:1").await.unwrap(), None);

    let r = cli(&url, "app", &["--protocol", "gossip", "del", "user:1"]).await;
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("fleet or broadcast"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_counts_refuses_without_yes_and_clears_everywhere() {
    let server = RedisServer::start();
    let url = server.url();
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    for k in ["user:1", "user:2", "user:3", "order:1"] {
        a.set(k, k.to_string(), MINUTE).await.unwrap();
        b.get::<String>(k).await.unwrap().unwrap();
    }
    let acme = TenantId::new("acme").unwrap();
    tenant::scope(acme.clone(), a.set("user:9", 9u32, MINUTE))
        .await
        .unwrap();

    // No terminal, no --yes: refused, one line, nothing deleted.
    let r = cli(&url, "app", &["clear", "--pattern", "user:*"]).await;
    assert_eq!(r.code, 3, "{r:#?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
    assert!(
        r.stderr.contains("delete 3 keys matching `user:*`") && r.stderr.contains("--yes"),
        "{}",
        r.stderr
    );
    assert!(a.l2().exists("user:1").await.unwrap());

    let r = cli(
        &url,
        "app",
        &["--json", "clear", "--pattern", "user:*", "--yes"],
    )
    .await;
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(
        (
            j["matched"].clone(),
            j["cleared"].clone(),
            j["unconfirmed"].clone()
        ),
        (json!(3), json!(3), json!(0)),
        "{j}"
    );
    for k in ["user:1", "user:2", "user:3"] {
        assert_eq!(b.get::<String>(k).await.unwrap(), None, "{k}");
        assert!(!a.l2().exists(k).await.unwrap());
    }
    assert_eq!(
        b.get::<String>("order:1")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("order:1")
    );
    // The tenant's key does not match an unscoped pattern.
    assert_eq!(
        tenant::scope(acme, b.get::<u32>("user:9"))
            .await
            .unwrap()
            .as_deref(),
        Some(&9)
    );

    // The same pattern in the tenant's namespace.
    let j = cli(
        &url,
        "app",
        &[
            "--json",
            "clear",
            "--pattern",
            "user:*",
            "--tenant",
            "acme",
            "--yes",
        ],
    )
    .await
    .json();
    assert_eq!(
        (
            j["matched"].clone(),
            j["cleared"].clone(),
            j["tenant"].clone()
        ),
        (json!(1), json!(1), json!("acme")),
        "{j}"
    );
    assert_eq!(
        tenant::scope(TenantId::new("acme").unwrap(), b.get::<u32>("user:9"))
            .await
            .unwrap(),
        None
    );

    let r = cli(&url, "app", &["clear", "--pattern", "nothing:*"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("nothing cleared"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_tag_and_clear_tenant_reach_every_instance() {
    let server = RedisServer::start();
    let url = server.url();
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    a.set_with_tags("p:1", 1u32, MINUTE, &["products"])
        .await
        .unwrap();
    a.set("plain", 2u32, MINUTE).await.unwrap();
    assert_eq!(b.get::<u32>("p:1").await.unwrap().as_deref(), Some(&1));
    assert_eq!(b.get::<u32>("plain").await.unwrap().as_deref(), Some(&2));

    let j = cli(&url, "app", &["--json", "invalidate-tag", "products"])
        .await
        .json();
    assert_eq!(
        (
            j["invalidated"].clone(),
            j["instances"].clone(),
            j["unconfirmed"].clone()
        ),
        (json!(true), json!(2), json!(0)),
        "{j}"
    );
    assert_eq!(b.get::<u32>("p:1").await.unwrap(), None);
    assert_eq!(b.get::<u32>("plain").await.unwrap().as_deref(), Some(&2));

    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    for k in ["a", "b"] {
        tenant::scope(acme.clone(), a.set(k, 1u32, MINUTE))
            .await
            .unwrap();
        tenant::scope(acme.clone(), b.get::<u32>(k))
            .await
            .unwrap()
            .unwrap();
    }
    tenant::scope(globex.clone(), a.set("a", 5u32, MINUTE))
        .await
        .unwrap();

    let r = cli(&url, "app", &["clear-tenant", "acme"]).await;
    assert_eq!(r.code, 3, "asks first: {r:#?}");
    let r = cli(&url, "app", &["--json", "clear-tenant", "acme", "--yes"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(
        (j["matched"].clone(), j["cleared"].clone()),
        (json!(2), json!(2)),
        "{j}"
    );
    for k in ["a", "b"] {
        assert_eq!(
            tenant::scope(acme.clone(), b.get::<u32>(k)).await.unwrap(),
            None,
            "{k}"
        );
    }
    assert_eq!(
        tenant::scope(globex, b.get::<u32>("a"))
            .await
            .unwrap()
            .as_deref(),
        Some(&5)
    );
    assert_eq!(b.get::<u32>("plain").await.unwrap().as_deref(), Some(&2));

    let r = cli(&url, "app", &["clear-tenant", "no:such"]).await;
    assert_eq!(r.code, 2, "an invalid tenant id is a usage error: {r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_lists_the_live_instances_and_the_unconfirmed_one() {
    let server = RedisServer::start();
    let url = server.url();
    let _a = hybrid(&url, "app").await;
    let _b = hybrid(&url, "app").await;
    // An instance that heartbeats but never acknowledges anything (a frozen
    // process would look like this).
    let mut raw = server.connection().await;
    let mute = tokio::spawn(async move {
        for seq in 1u64.. {
            let msg = format!(r#"{{"i":42,"s":{seq},"o":"h"}}"#);
            let _: Result<i64, _> = redis::cmd("PUBLISH")
                .arg("app:__oc:inv")
                .arg(msg)
                .query_async(&mut raw)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let r = cli(&url, "app", &["--json", "peers"]).await;
    mute.abort();
    assert_eq!(r.code, 0, "{r:#?}");
    let j = r.json();
    assert_eq!(
        (j["live"].clone(), j["unconfirmed"].clone()),
        (json!(3), json!(1)),
        "{j}"
    );
    let peers = j["peers"].as_array().unwrap();
    let mute = peers.iter().find(|p| p["id"] == 42).unwrap();
    assert_eq!(mute["confirmed"], false);
    assert!(mute["last_heard_ms"].as_f64().unwrap() < 1000.0);
    let confirmed = peers.iter().filter(|p| p["confirmed"] == true).count();
    assert_eq!(confirmed, 2, "{j}");

    // Listening only: nothing published, nothing confirmed or not.
    let j = cli(&url, "app", &["--json", "peers", "--no-probe"])
        .await
        .json();
    assert_eq!(j["live"], 2, "the mute instance stopped: {j}");
    assert!(
        j["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["confirmed"].is_null())
    );

    // stats shows the hash and the same instances.
    let j = cli(&url, "app", &["--json", "stats"]).await.json();
    assert_eq!(j["stats_key"], "app:stats");
    assert_eq!(j["peers"].as_array().unwrap().len(), 2, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_the_cluster_wide_hash() {
    let server = RedisServer::start();
    let url = server.url();
    let cache = l2(&url, "app").await;
    cache.set("k", 1u32, MINUTE).await.unwrap();
    cache.get::<u32>("k").await.unwrap().unwrap();
    cache.get::<u32>("missing").await.unwrap();
    cache.get_stats().await.unwrap(); // flushes this process's counters
    let mut raw = server.connection().await;
    let _: () = redis::cmd("HSET")
        .arg("app:stats")
        .arg("extra_field")
        .arg(7)
        .query_async(&mut raw)
        .await
        .unwrap();

    let j = cli(&url, "app", &["--json", "stats"]).await.json();
    assert_eq!(
        j["stats"],
        json!({"hits": 1, "misses": 1, "sets": 1, "errors": 0, "extra_field": 7}),
        "{j}"
    );
    assert_eq!(j["hit_rate"], 50.0);
    assert_eq!(j["keys_count"], 1);
    let r = cli(&url, "app", &["stats"]).await;
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("hits") && l.ends_with(" 1")),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_writes_of_a_hybrid_cache() {
    let server = RedisServer::start();
    let url = server.url();
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    // B holds the key: under the fleet protocol a write is sent to its holders.
    a.set("user:1", 0u32, MINUTE).await.unwrap();
    assert_eq!(b.get::<u32>("user:1").await.unwrap().as_deref(), Some(&0));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ormcache"))
        .args([
            "--url", &url, "--prefix", "app", "--json", "watch", "--count", "3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("watching app:__oc:inv"), "{ready}");

    a.set("user:1", 1u32, MINUTE).await.unwrap();
    a.clear_pattern("session:*").await.unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // The write, B's acknowledgement of it (with its lag), then the clear
    // (acknowledgements of the write may come before or after the clear).
    let write = &events[0];
    assert_eq!(
        (
            write["event"].clone(),
            write["op"].clone(),
            write["keys"].clone()
        ),
        (json!("invalidation"), json!("keys"), json!(["user:1"])),
        "{events:?}"
    );
    let sender = write["sender"].as_u64().unwrap();
    let ack = events
        .iter()
        .find(|e| e["event"] == "ack")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(
        (ack["sender"].as_u64(), ack["upto"].as_u64()),
        (Some(sender), write["seq"].as_u64()),
        "{events:?}"
    );
    assert!(ack["lag_ms"].as_f64().unwrap() >= 0.0);
    let clear = events
        .iter()
        .find(|e| e["op"] == "pattern")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(
        (clear["pattern"].clone(), clear["sender"].as_u64()),
        (json!("session:*"), Some(sender))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_redis_fail_in_one_line() {
    // Malformed, with a password: a usage error that does not show it.
    let r = run(
        &[
            "--url",
            "redis://:s3cret-pw@127.0.0.1:notaport",
            "--prefix",
            "app",
            "stats",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 2, "{r:#?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
    assert!(
        r.stderr.starts_with("ormcache: ") && r.stderr.contains("notaport"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("s3cret-pw") && r.stdout.is_empty(),
        "{r:#?}"
    );

    // Nothing listening, URL from REDIS_URL: a Redis failure, named, exit 1.
    let port = ormcache_testing::free_port();
    let url = format!("redis://:s3cret-pw@127.0.0.1:{port}");
    for args in [
        vec!["--prefix", "app", "get", "k"],
        vec!["--prefix", "app", "del", "k"],
        vec!["--prefix", "app", "watch"],
    ] {
        let r = run(&args, &[("REDIS_URL", &url)]).await;
        assert_eq!(r.code, 1, "{r:#?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
        assert!(
            r.stderr.contains(&format!("127.0.0.1:{port}")),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("s3cret-pw") && !r.stderr.contains("panicked"),
            "{}",
            r.stderr
        );
    }

    // No URL at all; a reserved key.
    let r = run(&["--prefix", "app", "stats"], &[]).await;
    assert_eq!(r.code, 2);
    let server = RedisServer::start();
    let r = cli(&server.url(), "app", &["get", "__oc:tag:x"]).await;
    assert_eq!((r.code, r.stderr.lines().count()), (2, 1), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_form_gets_deletes_and_clears() {
    let cluster = RedisCluster::start();
    let url = cluster_url(&cluster);
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    for i in 0..20 {
        let k = format!("user:{i}");
        a.set_with_tags(&k, i, MINUTE, &["users"]).await.unwrap();
        b.get::<i32>(&k).await.unwrap().unwrap();
    }
    a.set("keep", 1i32, MINUTE).await.unwrap();

    // The fleet instances' inboxes and acknowledgement channels are sharded:
    // peers hears their heartbeats there, and both acknowledge the probe.
    let j = cli(&url, "app", &["--json", "peers"]).await.json();
    assert_eq!(
        (j["live"].clone(), j["unconfirmed"].clone()),
        (json!(2), json!(0)),
        "{j}"
    );

    let j = cli(&url, "app", &["--json", "get", "user:7"]).await.json();
    assert_eq!(
        (j["value"].clone(), j["fresh"].clone()),
        (json!(7), json!(true)),
        "{j}"
    );
    assert_eq!(j["tags"][0]["name"], "users");

    let j = cli(&url, "app", &["--json", "del", "user:7"]).await.json();
    assert_eq!(
        (j["deleted"].clone(), j["unconfirmed"].clone()),
        (json!(true), json!(0)),
        "{j}"
    );
    assert_eq!(b.get::<i32>("user:7").await.unwrap(), None);

    let j = cli(
        &url,
        "app",
        &["--json", "clear", "--pattern", "user:*", "--yes"],
    )
    .await
    .json();
    assert_eq!(
        (j["matched"].clone(), j["cleared"].clone()),
        (json!(19), json!(19)),
        "{j}"
    );
    for i in 0..20 {
        assert_eq!(b.get::<i32>(&format!("user:{i}")).await.unwrap(), None);
    }
    assert_eq!(b.get::<i32>("keep").await.unwrap().as_deref(), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_form_with_a_password_works_and_never_shows_it() {
    let server = RedisServer::start_with(ServerOptions {
        args: vec!["--requirepass".into(), "s3cret-pw".into()],
        unix_socket: true,
    });
    let sock = server.socket_path();
    let url = format!("redis+unix://{}?pass=s3cret-pw", sock.display());
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    a.set("k", 1u8, MINUTE).await.unwrap();
    assert_eq!(b.get::<u8>("k").await.unwrap().as_deref(), Some(&1));

    let j = cli(&url, "app", &["--json", "get", "k"]).await.json();
    assert_eq!(j["value"], 1);
    let r = cli(&url, "app", &["del", "k"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(
        r.stdout
            .starts_with("deleted app:k (confirmed by 2 live instances)"),
        "{}",
        r.stdout
    );
    assert_eq!(b.get::<u8>("k").await.unwrap(), None);

    // The wrong password: refused, one line, no password of either kind.
    let wrong = format!("redis+unix://{}?pass=not-the-pw", sock.display());
    let r = cli(&wrong, "app", &["stats"]).await;
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{r:#?}");
    assert!(r.stderr.contains("authentication failed"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("not-the-pw") && !r.stderr.contains("s3cret-pw"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_form_with_a_client_certificate_works() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, true, &[]);
    let url = server.url();
    let (cert, key) = certs.client();
    let tls = || {
        ormcache::TlsConfig::new()
            .ca_file(certs.ca())
            .client_cert_files(&cert, &key)
    };
    let connect = || async {
        DistributedCache::builder()
            .redis_url(&url)
            .tls(tls())
            .key_prefix("app")
            .build()
            .await
            .unwrap()
    };
    let a = hybrid_on(connect().await).await;
    let b = hybrid_on(connect().await).await;
    a.set("k", 1u8, MINUTE).await.unwrap();
    assert_eq!(b.get::<u8>("k").await.unwrap().as_deref(), Some(&1));

    let (ca, cert, key) = (
        certs.ca().display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let with_certs = [
        "--tls-ca",
        ca.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    let mut args = with_certs.to_vec();
    args.extend(["--json", "get", "k"]);
    assert_eq!(cli(&url, "app", &args).await.json()["value"], 1);
    let mut args = with_certs.to_vec();
    args.extend(["--json", "del", "k"]);
    let j = cli(&url, "app", &args).await.json();
    assert_eq!(
        (j["deleted"].clone(), j["instances"].clone()),
        (json!(true), json!(2)),
        "{j}"
    );
    assert_eq!(b.get::<u8>("k").await.unwrap(), None);

    // Without the CA the server's certificate is not trusted: one line, exit 1.
    let r = cli(&url, "app", &["stats"]).await;
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{r:#?}");
    assert!(r.stderr.contains(&url), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_form_gets_and_deletes() {
    let sentinels = RedisSentinels::start(Some("s3cret-pw"));
    let url = sentinels.url();
    let a = hybrid(&url, "app").await;
    let b = hybrid(&url, "app").await;
    a.set("k", 1u8, MINUTE).await.unwrap();
    assert_eq!(b.get::<u8>("k").await.unwrap().as_deref(), Some(&1));

    let j = cli(&url, "app", &["--json", "get", "k"]).await.json();
    assert_eq!(j["value"], 1, "{j}");
    let j = cli(&url, "app", &["--json", "del", "k"]).await.json();
    assert_eq!(
        (j["deleted"].clone(), j["instances"].clone()),
        (json!(true), json!(2)),
        "{j}"
    );
    assert_eq!(b.get::<u8>("k").await.unwrap(), None);
    let j = cli(&url, "app", &["--json", "peers"]).await.json();
    assert_eq!(
        (j["live"].clone(), j["unconfirmed"].clone()),
        (json!(2), json!(0)),
        "{j}"
    );
}
