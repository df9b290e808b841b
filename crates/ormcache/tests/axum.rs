//! The axum integration over real HTTP (axum::serve on 127.0.0.1, reqwest) and
//! real `redis-server` processes.
#![cfg(feature = "axum")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ormcache::axum::{CallerSecret, ResponseCacheLayer, TenantLayer};
use ormcache::{Cache, DistributedCache, QueryCache};
use redis::AsyncCommands;
use support::RedisServer;
use support::web::*;

#[tokio::test]
async fn miss_then_hit_with_age_and_etag_on_every_cache_kind() {
    let server = RedisServer::start();
    let kinds = every_kind(&server).await;
    for cache in kinds {
        let kind = cache.kind();
        let runs = Runs::default();
        let url = serve_r(&runs, "hello", cache).await;
        let first = fetch(&url, &[]).await;
        assert_eq!(
            (first.status, first.x_cache(), first.body.as_str()),
            (StatusCode::OK, "MISS", "hello"),
            "{kind}"
        );
        assert_eq!(first.header("age"), None, "{kind}");
        let etag = first.header("etag").unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{kind}: {etag}");
        assert_eq!(
            first.header("content-type"),
            Some("text/plain; charset=utf-8")
        );

        let second = fetch(&url, &[]).await;
        assert_eq!(
            (second.status, second.x_cache(), second.body.as_str()),
            (StatusCode::OK, "HIT", "hello"),
            "{kind}"
        );
        assert_eq!(second.header("etag"), Some(etag.as_str()), "{kind}");
        assert_eq!(
            second.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let age: u64 = second.header("age").unwrap().parse().unwrap();
        assert!(age < 60, "{kind}: age {age}");
        assert_eq!(second.header("vary"), None);
        assert_eq!(runs.get(), 1, "{kind}");
    }
}

#[tokio::test]
async fn age_counts_seconds_since_stored() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let url = serve_r(&runs, "x", cache).await;
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    eventually("Age >= 1", async || {
        let r = fetch(&url, &[]).await;
        assert_eq!(r.x_cache(), "HIT");
        r.header("age").unwrap().parse::<u64>().unwrap() >= 1
    })
    .await;
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn if_none_match_gets_304_and_etags_agree_across_processes() {
    let server = RedisServer::start();
    // Two "processes": independent routers and caches on one redis-server.
    let shared_a = redis_cache(&server, "shared").await;
    let shared_b = redis_cache(&server, "shared").await;
    let own_b = redis_cache(&server, "own").await;
    let (runs_a, runs_b, runs_own) = (Runs::default(), Runs::default(), Runs::default());
    let a = serve_r(&runs_a, "same body", shared_a).await;
    let b = serve_r(&runs_b, "same body", shared_b).await;
    let own = serve_r(&runs_own, "same body", own_b).await;

    let first = fetch(&a, &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    let etag = first.header("etag").unwrap().to_owned();
    // B shares A's entry; `own` computes its own, from the same body: same ETag.
    let from_b = fetch(&b, &[]).await;
    assert_eq!(
        (from_b.x_cache(), from_b.header("etag")),
        ("HIT", Some(etag.as_str()))
    );
    let computed = fetch(&own, &[]).await;
    assert_eq!(
        (computed.x_cache(), computed.header("etag")),
        ("MISS", Some(etag.as_str()))
    );
    assert_eq!((runs_a.get(), runs_b.get(), runs_own.get()), (1, 0, 1));

    // 304 on a hit, for the tag itself, a weak form, a list and `*`.
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = fetch(&b, &[("if-none-match", inm)]).await;
        assert_eq!(
            (r.status, r.x_cache(), r.body.as_str(), r.header("etag")),
            (StatusCode::NOT_MODIFIED, "HIT", "", Some(etag.as_str())),
            "{inm}"
        );
    }
    let other = fetch(&b, &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "same body")
    );

    // 304 on a miss too: a fresh process answers a validator it never issued.
    let fresh = serve_r(
        &Runs::default(),
        "same body",
        redis_cache(&server, "fresh").await,
    )
    .await;
    let r = fetch(&fresh, &[("if-none-match", etag.as_str())]).await;
    assert_eq!(
        (r.status, r.x_cache(), r.body.as_str()),
        (StatusCode::NOT_MODIFIED, "MISS", "")
    );
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let server = RedisServer::start();
    let runs = Runs::default();
    let url = serve_r(&runs, "hello", redis_cache(&server, "app").await).await;
    let client = reqwest::Client::new();
    let cold = send(client.head(&url)).await;
    assert_eq!((cold.status, cold.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    let warm = send(client.head(&url)).await;
    assert_eq!(
        (
            warm.status,
            warm.x_cache(),
            warm.body.as_str(),
            warm.header("content-length")
        ),
        (StatusCode::OK, "HIT", "", Some("5"))
    );
    assert_eq!(runs.get(), 2);
}

#[tokio::test]
async fn declared_vary_headers_key_entries_and_are_announced() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let layer = ResponseCacheLayer::new(cache).vary([header::ACCEPT_LANGUAGE]);
    let app = counted(&runs, "/greet", layer, |headers| async move {
        match headers.get(header::ACCEPT_LANGUAGE).map(|v| v.as_bytes()) {
            Some(b"fr") => "bonjour",
            _ => "hello",
        }
    });
    let url = format!("{}/greet", serve(app).await);
    let en = fetch(&url, &[("accept-language", "en")]).await;
    let fr = fetch(&url, &[("accept-language", "fr")]).await;
    assert_eq!((en.x_cache(), en.body.as_str()), ("MISS", "hello"));
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("MISS", "bonjour"));
    assert_eq!(en.header("vary"), Some("accept-language"));
    let en2 = fetch(&url, &[("accept-language", "en")]).await;
    let fr2 = fetch(&url, &[("accept-language", "fr")]).await;
    assert_eq!((en2.x_cache(), en2.body.as_str()), ("HIT", "hello"));
    assert_eq!((fr2.x_cache(), fr2.body.as_str()), ("HIT", "bonjour"));
    assert_eq!(fr2.header("vary"), Some("accept-language"));
    // No header at all is a value of its own.
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(runs.get(), 3);
    // Responses that do not come from the cache announce the same Vary.
    let fresh = fetch(
        &url,
        &[("accept-language", "fr"), ("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(
        (fresh.x_cache(), fresh.body.as_str(), fresh.header("vary")),
        ("MISS", "bonjour", Some("accept-language"))
    );
}

/// Builds a handler's response.
type MakeResponse = fn() -> axum::response::Response;

/// A route at `/r` whose response is built by `make` (counted), cached by `layer`;
/// the number of runs after two GETs with `headers`, and both replies.
async fn twice<C: Cache>(
    layer: ResponseCacheLayer<C>,
    headers: &[(&str, &str)],
    make: MakeResponse,
) -> (usize, Reply, Reply) {
    let runs = Runs::default();
    let app = counted(&runs, "/r", layer, move |_| async move { make() });
    let url = format!("{}/r", serve(app).await);
    let first = fetch(&url, headers).await;
    let second = fetch(&url, headers).await;
    (runs.get(), first, second)
}

#[tokio::test]
async fn responses_that_are_not_stored() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let layer = || ResponseCacheLayer::new(cache.clone());
    let cases: [(&str, MakeResponse); 8] = [
        ("own Vary differs", || {
            ([(header::VARY, "accept-encoding")], "x").into_response()
        }),
        ("Vary: *", || ([(header::VARY, "*")], "x").into_response()),
        ("streamed body", || {
            let chunks = futures_util::stream::iter(["a", "b"].map(Ok::<_, std::io::Error>));
            Body::from_stream(chunks).into_response()
        }),
        ("non-200", || {
            (StatusCode::NOT_FOUND, "gone").into_response()
        }),
        ("Set-Cookie", || {
            ([(header::SET_COOKIE, "session=1")], "x").into_response()
        }),
        ("Cache-Control: no-store", || {
            ([(header::CACHE_CONTROL, "no-store")], "x").into_response()
        }),
        ("Cache-Control: private", || {
            ([(header::CACHE_CONTROL, "private, max-age=60")], "x").into_response()
        }),
        ("Cache-Control: no-cache", || {
            ([(header::CACHE_CONTROL, "no-cache")], "x").into_response()
        }),
    ];
    for (what, make) in cases {
        let (runs, first, second) = twice(layer(), &[], make).await;
        assert_eq!(
            (runs, first.x_cache(), second.x_cache()),
            (2, "MISS", "MISS"),
            "{what}"
        );
        assert_eq!(first.body, second.body, "{what}");
    }
    // The streamed body arrived whole, untouched.
    let (_, streamed, _) = twice(layer(), &[], cases[2].1).await;
    assert_eq!(streamed.body, "ab");
    // A non-200 status is stored when the route says so.
    let (runs, _, second) = twice(layer().statuses([StatusCode::NOT_FOUND]), &[], cases[3].1).await;
    assert_eq!(
        (runs, second.status, second.x_cache()),
        (1, StatusCode::NOT_FOUND, "HIT")
    );
    // A matching own Vary is fine.
    let (runs, _, second) = twice(layer().vary([header::ACCEPT_ENCODING]), &[], cases[0].1).await;
    assert_eq!((runs, second.x_cache()), (1, "HIT"));
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_not_stored() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let (runs, first, second) = twice(
        ResponseCacheLayer::new(cache.clone()).max_body_bytes(10),
        &[],
        || "12345678901".into_response(),
    )
    .await;
    assert_eq!(
        (runs, second.x_cache(), first.body.as_str()),
        (2, "MISS", "12345678901")
    );
    let (runs, _, second) = twice(
        ResponseCacheLayer::new(cache).max_body_bytes(10),
        &[],
        || "1234567890".into_response(),
    )
    .await;
    assert_eq!(
        (runs, second.x_cache(), second.body.as_str()),
        (1, "HIT", "1234567890")
    );
}

#[tokio::test]
async fn request_no_cache_and_no_store() {
    let server = RedisServer::start();
    let runs = Runs::default();
    let url = serve_r(&runs, "x", redis_cache(&server, "app").await).await;
    // no-store on a cold key: answered, not stored.
    let r = fetch(&url, &[("cache-control", "no-store")]).await;
    assert_eq!((r.x_cache(), runs.get()), ("MISS", 1));
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
    assert_eq!(runs.get(), 2);
    // With an entry: none of these is answered from it; the entry stays.
    for (n, v) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
        ("cache-control", "no-store"),
    ] {
        let before = runs.get();
        let r = fetch(&url, &[(n, v)]).await;
        assert_eq!((r.x_cache(), runs.get()), ("MISS", before + 1), "{n}: {v}");
    }
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
}

#[tokio::test]
async fn credentials_bypass_unless_keyed_by_caller() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let app = |layer: ResponseCacheLayer<DistributedCache>, runs: &Runs| {
        counted(runs, "/me", layer, |headers| async move {
            headers
                .get(header::AUTHORIZATION)
                .or(headers.get(header::COOKIE))
                .map_or("anonymous".to_owned(), |v| v.to_str().unwrap().to_owned())
        })
    };

    // Shared (default): the anonymous entry is never served to a caller with
    // credentials, and their responses are never stored.
    let runs = Runs::default();
    let url = format!(
        "{}/me",
        serve(app(ResponseCacheLayer::new(cache.clone()), &runs)).await
    );
    assert_eq!(fetch(&url, &[]).await.body, "anonymous");
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
    for creds in [
        ("authorization", "Bearer alice"),
        ("cookie", "session=alice"),
    ] {
        for _ in 0..2 {
            let r = fetch(&url, &[creds]).await;
            assert_eq!((r.x_cache(), r.body.as_str()), ("MISS", creds.1));
        }
    }
    assert_eq!(runs.get(), 5);

    // Keyed by caller: one entry per caller, never crossed.
    let runs = Runs::default();
    let url = format!(
        "{}/me",
        serve(app(
            ResponseCacheLayer::new(cache).keyed_by_caller(secret(1)),
            &runs
        ))
        .await
    );
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let a1 = fetch(&url, &alice).await;
    let b1 = fetch(&url, &bob).await;
    let a2 = fetch(&url, &alice).await;
    let b2 = fetch(&url, &bob).await;
    let anon = fetch(&url, &[]).await;
    assert_eq!(
        [&a1, &b1, &a2, &b2, &anon].map(|r| (r.x_cache(), r.body.as_str())),
        [
            ("MISS", "Bearer alice"),
            ("MISS", "Bearer bob"),
            ("HIT", "Bearer alice"),
            ("HIT", "Bearer bob"),
            ("MISS", "anonymous"),
        ]
    );
    assert_eq!(a2.header("vary"), Some("authorization, cookie"));
    assert_eq!(runs.get(), 3);
}

fn secret(n: u8) -> CallerSecret {
    CallerSecret::new([n; 32]).unwrap()
}

/// Every key in the Redis.
async fn all_keys(server: &RedisServer) -> Vec<String> {
    let mut raw = server.connection().await;
    let mut keys: Vec<String> = raw.keys("*").await.unwrap();
    keys.sort();
    keys
}

/// Two processes (two caches on one Redis) with the same secret share a caller's
/// entry; a process with another secret does not. No key holds the credential or
/// an unkeyed hash of it.
#[tokio::test]
async fn caller_keys_are_keyed_by_the_deployment_secret() {
    let server = RedisServer::start();
    let runs = Runs::default();
    let me = |headers: axum::http::HeaderMap| async move {
        headers
            .get(header::AUTHORIZATION)
            .map_or("anonymous".to_owned(), |v| v.to_str().unwrap().to_owned())
    };
    let mut urls = Vec::new();
    for n in [1, 1, 2] {
        let cache = redis_cache(&server, "app").await;
        let layer = ResponseCacheLayer::new(cache).keyed_by_caller(secret(n));
        urls.push(format!(
            "{}/me",
            serve(counted(&runs, "/me", layer, me)).await
        ));
    }
    let credential = "Bearer hunter2-f00d";
    let alice = [("authorization", credential)];
    let got: Vec<(String, String)> = {
        let mut v = Vec::new();
        for url in [&urls[0], &urls[1], &urls[2], &urls[1]] {
            let r = fetch(url, &alice).await;
            v.push((r.x_cache().to_owned(), r.body));
        }
        v
    };
    let (miss, hit) = ("MISS".to_owned(), "HIT".to_owned());
    let body = credential.to_owned();
    assert_eq!(
        got,
        [
            (miss.clone(), body.clone()), // process 1 stores it
            (hit.clone(), body.clone()),  // process 2, same secret: shared
            (miss, body.clone()),         // process 3, another secret: its own
            (hit, body),
        ]
    );
    assert_eq!(runs.get(), 2);

    // What an unkeyed hash of the caller part would put in the key: the
    // length-prefixed credential sections, and the bare header value.
    let mut canon = Vec::new();
    for (name, values) in [
        (&b"\0caller:authorization"[..], vec![credential.as_bytes()]),
        (&b"\0caller:cookie"[..], vec![]),
    ] {
        canon.extend_from_slice(&(name.len() as u32).to_le_bytes());
        canon.extend_from_slice(name);
        canon.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for v in values {
            canon.extend_from_slice(&(v.len() as u32).to_le_bytes());
            canon.extend_from_slice(v);
        }
    }
    let unkeyed = [
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&canon)),
        format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(credential.as_bytes())
        ),
    ];
    let keys = all_keys(&server).await;
    let entries: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("app:http:GET:/me#"))
        .collect();
    assert_eq!(entries.len(), 2, "one entry per secret: {keys:?}");
    for k in &keys {
        assert!(!k.contains("hunter2"), "{k}");
        for h in &unkeyed {
            assert!(!k.contains(h.as_str()), "{k} holds the unkeyed hash {h}");
        }
    }
}

#[tokio::test]
async fn per_route_ttl_expires_with_the_real_clock() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let short = Runs::default();
    let long = Runs::default();
    let app = counted_route(
        &short,
        "short",
        ResponseCacheLayer::new(cache.clone()).ttl(Duration::from_secs(1)),
    )
    .merge(counted(
        &long,
        "/long",
        ResponseCacheLayer::new(cache).ttl(Duration::from_secs(300)),
        |_| async { "long" },
    ));
    let base = serve(app).await;
    let (url, long_url) = (format!("{base}/r"), format!("{base}/long"));
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(fetch(&long_url, &[]).await.x_cache(), "MISS");
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
    eventually("the 1 s entry to expire", async || {
        fetch(&url, &[]).await.x_cache() == "MISS"
    })
    .await;
    assert_eq!(fetch(&long_url, &[]).await.x_cache(), "HIT");
    assert_eq!((short.get(), long.get()), (2, 1));
}

#[tokio::test]
async fn tags_invalidate_stored_responses_and_writes_through_the_layer_do_too() {
    let server = RedisServer::start();
    for cache in every_kind(&server).await {
        let kind = cache.kind();
        let version = Arc::new(AtomicUsize::new(1));
        let (read, write) = (version.clone(), version.clone());
        let app = Router::new()
            .route(
                "/products",
                get(move || {
                    let v = read.load(Ordering::SeqCst);
                    async move { format!("v{v}") }
                })
                .post(move || {
                    write.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::CREATED }
                }),
            )
            .route_layer(ResponseCacheLayer::new(cache.clone()).tags(["products:list"]));
        let url = format!("{}/products", serve(app).await);
        assert_eq!(fetch(&url, &[]).await.body, "v1", "{kind}");
        assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT", "{kind}");

        // A write elsewhere, then the app's invalidation.
        version.fetch_add(1, Ordering::SeqCst);
        assert_eq!(fetch(&url, &[]).await.body, "v1", "{kind}");
        cache.invalidate_tag("products:list").await.unwrap();
        let r = fetch(&url, &[]).await;
        assert_eq!((r.x_cache(), r.body.as_str()), ("MISS", "v2"), "{kind}");
        // The fresh response is cached again.
        let r = fetch(&url, &[]).await;
        assert_eq!((r.x_cache(), r.body.as_str()), ("HIT", "v2"), "{kind}");

        // A write through the layer invalidates before it answers.
        let created = send(reqwest::Client::new().post(&url)).await;
        assert_eq!(
            (created.status, created.header("x-cache")),
            (StatusCode::CREATED, None),
            "{kind}"
        );
        let r = fetch(&url, &[]).await;
        assert_eq!((r.x_cache(), r.body.as_str()), ("MISS", "v3"), "{kind}");
        assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT", "{kind}");
    }
}

#[tokio::test]
async fn tenants_get_their_own_entries() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let layer = ResponseCacheLayer::new(cache.clone());
    let app = counted(&runs, "/products", layer, |_| async {
        let t = ormcache::tenant::current();
        t.map_or("everyone".to_owned(), |t| format!("products of {t}"))
    })
    .layer(TenantLayer::try_header("x-tenant-id").unwrap());
    let url = format!("{}/products", serve(app).await);
    let acme = [("x-tenant-id", "acme")];
    let globex = [("x-tenant-id", "globex")];
    let replies = [
        fetch(&url, &acme).await,
        fetch(&url, &globex).await,
        fetch(&url, &[]).await,
        fetch(&url, &acme).await,
        fetch(&url, &globex).await,
        fetch(&url, &[]).await,
    ];
    assert_eq!(
        replies.each_ref().map(|r| (r.x_cache(), r.body.as_str())),
        [
            ("MISS", "products of acme"),
            ("MISS", "products of globex"),
            ("MISS", "everyone"),
            ("HIT", "products of acme"),
            ("HIT", "products of globex"),
            ("HIT", "everyone"),
        ]
    );
    assert_eq!(runs.get(), 3);
    // The entries live in the tenants' namespaces in Redis.
    let mut con = server.connection().await;
    let mut keys: Vec<String> = con.keys("app:*http:*").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "app:__oc:t:acme:http:GET:/products",
            "app:__oc:t:globex:http:GET:/products",
            "app:http:GET:/products",
        ]
    );
}

#[tokio::test]
async fn an_invalid_tenant_is_a_400_with_a_json_error() {
    let runs = Runs::default();
    let app = counted_route(
        &runs,
        "x",
        ResponseCacheLayer::new(QueryCache::new(100, Duration::from_secs(60)).unwrap()),
    )
    .layer(TenantLayer::try_header("x-tenant-id").unwrap());
    let url = format!("{}/r", serve(app).await);
    for bad in ["a:b", "*", &"a".repeat(65)] {
        let r = fetch(&url, &[("x-tenant-id", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.starts_with("header x-tenant-id is not a valid tenant id"),
            "{msg}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1);
    }
    let twice = send(
        reqwest::Client::new()
            .get(&url)
            .header("x-tenant-id", "a")
            .header("x-tenant-id", "b"),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&twice.body).unwrap(),
        serde_json::json!({"error": "header x-tenant-id must be given once"})
    );
    assert_eq!(runs.get(), 0);
}

#[tokio::test]
async fn redis_down_never_fails_a_request() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let url = serve_r(&runs, "from the handler", cache).await;
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
    server.kill();
    for i in 0..8 {
        let r = fetch(&url, &[]).await;
        assert_eq!(
            (r.status, r.x_cache(), r.body.as_str()),
            (StatusCode::OK, "MISS", "from the handler"),
            "request {i}"
        );
    }
    assert_eq!(runs.get(), 9);
}

#[tokio::test]
async fn corrupt_entries_are_misses() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let url = serve_r(&runs, "good", cache).await;
    let mut con = server.connection().await;
    let planted = [
        r#"not json"#,
        r#"{"status":1000,"headers":[],"body":"bad","stored_at_ms":0,"etag":"\"e\""}"#,
        r#"{"status":200,"headers":[["bad name","v"]],"body":"bad","stored_at_ms":0,"etag":"\"e\""}"#,
    ];
    for (i, bad) in planted.into_iter().enumerate() {
        let _: () = con.set("app:http:GET:/r", bad).await.unwrap();
        let r = fetch(&url, &[]).await;
        assert_eq!(
            (r.status, r.x_cache(), r.body.as_str()),
            (StatusCode::OK, "MISS", "good"),
            "{bad}"
        );
        assert_eq!(runs.get(), i + 1);
    }
    // The last corrupt entry is deleted; the next request stores a good one.
    eventually("the corrupt entry to go", async || {
        !con.exists::<_, bool>("app:http:GET:/r").await.unwrap()
    })
    .await;
    assert_eq!(fetch(&url, &[]).await.x_cache(), "MISS");
    assert_eq!(fetch(&url, &[]).await.x_cache(), "HIT");
}

#[tokio::test]
async fn concurrent_misses_run_the_handler_once() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let runs = Runs::default();
    let app = counted(&runs, "/slow", ResponseCacheLayer::new(cache), |_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "slow"
    });
    let url = format!("{}/slow", serve(app).await);
    let replies = futures_util::future::join_all((0..20).map(|_| fetch(&url, &[]))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK && r.body == "slow")
    );
    assert_eq!(replies.iter().filter(|r| r.x_cache() == "MISS").count(), 1);
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn with_a_lock_one_process_runs_the_handler() {
    let server = RedisServer::start();
    let runs = Runs::default();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let layer = ResponseCacheLayer::new(redis_cache(&server, "app").await).lock(true);
        let app = counted(&runs, "/slow", layer, |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        });
        urls.push(format!("{}/slow", serve(app).await));
    }
    let replies = futures_util::future::join_all((0..30).map(|i| fetch(&urls[i % 3], &[]))).await;
    assert!(replies.iter().all(|r| r.body == "slow"));
    assert_eq!(replies.iter().filter(|r| r.x_cache() == "MISS").count(), 1);
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn nested_routers_key_by_the_full_path() {
    let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
    // One nested router with `route_layer`, one with `MethodRouter::layer`.
    let a = Router::new()
        .route("/items", get(|| async { "a" }))
        .route_layer(ResponseCacheLayer::new(cache.clone()));
    let b = Router::new().route(
        "/items",
        get(|| async { "b" }).layer(ResponseCacheLayer::new(cache.clone())),
    );
    let url = serve(Router::new().nest("/a", a).nest("/b", b)).await;
    let replies = [
        fetch(&format!("{url}/a/items"), &[]).await,
        fetch(&format!("{url}/b/items"), &[]).await,
        fetch(&format!("{url}/a/items"), &[]).await,
        fetch(&format!("{url}/b/items"), &[]).await,
    ];
    assert_eq!(
        replies.each_ref().map(|r| (r.x_cache(), r.body.as_str())),
        [("MISS", "a"), ("MISS", "b"), ("HIT", "a"), ("HIT", "b")]
    );
    assert!(cache.exists_sync("http:GET:/a/items"));
    assert!(cache.exists_sync("http:GET:/b/items"));
}

#[tokio::test]
async fn query_parameters_are_normalized() {
    let server = RedisServer::start();
    let runs = Runs::default();
    let url = serve_r(&runs, "x", redis_cache(&server, "app").await).await;
    assert_eq!(
        fetch(&format!("{url}?b=2&a=1"), &[]).await.x_cache(),
        "MISS"
    );
    assert_eq!(fetch(&format!("{url}?a=1&b=2"), &[]).await.x_cache(), "HIT");
    assert_eq!(
        fetch(&format!("{url}?a=1&b=3"), &[]).await.x_cache(),
        "MISS"
    );
    // Long queries are hashed: the key stays short.
    let long = "x".repeat(5_000);
    assert_eq!(
        fetch(&format!("{url}?q={long}"), &[]).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        fetch(&format!("{url}?q={long}"), &[]).await.x_cache(),
        "HIT"
    );
    let mut con = server.connection().await;
    let keys: Vec<String> = con.keys("app:http:GET:~*").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].len() < 60, "{}", keys[0]);
}

#[tokio::test]
async fn stats_and_health_handlers() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "app").await;
    let app = Router::new()
        .route(
            "/cache/stats",
            get(ormcache::axum::stats::<DistributedCache>),
        )
        .route("/health", get(ormcache::axum::health::<DistributedCache>))
        .with_state(cache.clone());
    let url = serve(app).await;
    cache.set("k", 1u32, None).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap().as_deref(), Some(&1));

    let stats = fetch(&format!("{url}/cache/stats"), &[]).await;
    assert_eq!(stats.status, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    let expected = serde_json::to_value(cache.get_stats().await.unwrap()).unwrap();
    for field in ["hits", "misses", "sets", "errors"] {
        assert!(stats[field].is_u64(), "{field}: {stats}");
    }
    assert_eq!(stats["sets"], expected["sets"]);

    let health = fetch(&format!("{url}/health"), &[]).await;
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(
        (&health["status"], &health["kind"], &health["error"]),
        (
            &"ok".into(),
            &"distributed".into(),
            &serde_json::Value::Null
        )
    );
    assert!(health["latency_ms"].as_f64().unwrap() >= 0.0);

    server.kill();
    let health = fetch(&format!("{url}/health"), &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["error"].as_str().unwrap().contains("ping"),
        "{health}"
    );
    let stats = fetch(&format!("{url}/cache/stats"), &[]).await;
    assert_eq!(stats.status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn handlers_take_the_cache_from_any_state() {
    #[derive(Clone)]
    struct AppState {
        cache: QueryCache,
        name: &'static str,
    }
    impl axum::extract::FromRef<AppState> for QueryCache {
        fn from_ref(s: &AppState) -> Self {
            s.cache.clone()
        }
    }
    let state = AppState {
        cache: QueryCache::new(100, Duration::from_secs(60)).unwrap(),
        name: "app",
    };
    assert_eq!(state.name, "app");
    let app = Router::new()
        .route("/health", get(ormcache::axum::health::<QueryCache>))
        .route("/stats", get(ormcache::axum::stats::<QueryCache>))
        .with_state(state);
    let url = serve(app).await;
    let health: serde_json::Value =
        serde_json::from_str(&fetch(&format!("{url}/health"), &[]).await.body).unwrap();
    assert_eq!(
        (&health["status"], &health["kind"]),
        (&"ok".into(), &"local".into())
    );
    let stats: serde_json::Value =
        serde_json::from_str(&fetch(&format!("{url}/stats"), &[]).await.body).unwrap();
    assert_eq!(stats["max_size"], 100);
}

#[tokio::test]
async fn dashboard_serves_every_cache_kind_under_any_path() {
    let server = RedisServer::start();
    for cache in every_kind(&server).await {
        let kind = cache.kind();
        cache.set("dash", 1u32, None).await.unwrap();
        assert_eq!(cache.get::<u32>("dash").await.unwrap().as_deref(), Some(&1));
        let nested =
            serve(Router::new().nest("/ops/cache-view", ormcache::axum::dashboard(cache.clone())))
                .await;
        let at_root = serve(Router::new().merge(ormcache::axum::dashboard(cache.clone()))).await;
        for (page, snapshot) in [
            (
                format!("{nested}/ops/cache-view"),
                format!("{nested}/ops/cache-view/snapshot"),
            ),
            (format!("{at_root}/"), format!("{at_root}/snapshot")),
        ] {
            let html = fetch(&page, &[]).await;
            assert_eq!(html.status, StatusCode::OK, "{kind} {page}");
            assert_eq!(
                html.header("content-type"),
                Some("text/html; charset=utf-8")
            );
            assert!(html.body.contains("path + 'snapshot'"), "{kind}");
            let reply = fetch(&snapshot, &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{kind} {snapshot}");
            assert_eq!(reply.header("cache-control"), Some("no-store"));
            let s: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(s["kind"], kind, "{s}");
            assert!(s["reads"]["total"].as_u64().unwrap() >= 1, "{kind}: {s}");
            assert!(s["writes"].as_u64().unwrap() >= 1, "{kind}: {s}");
            let has = |field: &str| !s[field].is_null();
            assert_eq!(
                (has("l1"), has("l2"), has("coherence")),
                match kind {
                    "local" => (true, false, false),
                    "distributed" => (false, true, false),
                    _ => (true, true, true),
                },
                "{s}"
            );
            if has("l2") {
                assert!(
                    s["l2"]["round_trips"]["count"].as_u64().unwrap() >= 2,
                    "{kind}: {s}"
                );
                assert_eq!(s["l2"]["breaker"], "closed", "{s}");
            }
        }
    }
}
