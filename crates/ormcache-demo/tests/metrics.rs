//! `GET /metrics`: the Prometheus page of the demo with Redis (L1 + L2), scraped
//! before and after requests against a real `redis-server`: the counters move.

mod support;

use ormcache_testing::RedisServer;
use serde_json::json;
use support::{Demo, DemoEnv, TestDb};

/// The sum of the samples of `name` whose labels include every `k="v"` of
/// `labels` on a Prometheus text page.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| v.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[tokio::test]
async fn metrics_page_counts_hits_misses_sets_and_round_trips() {
    let server = RedisServer::start();
    let db = TestDb::sqlite();
    let demo = Demo::start("metrics", &DemoEnv::new(&db).redis(server.url(), "mx")).await;

    let scrape = || async {
        let reply = demo.get("/metrics").await;
        assert_eq!(reply.status.as_u16(), 200);
        assert!(
            reply
                .content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("text/plain")),
            "{:?}",
            reply.content_type
        );
        String::from_utf8(reply.bytes).unwrap()
    };
    let before = scrape().await;
    // Every ormcache metric is named `ormcache_…`.
    let names: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    assert!(!names.is_empty(), "{before}");
    assert!(
        names.iter().all(|n| n.starts_with("ormcache_")),
        "{names:?}"
    );

    let user = demo.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), user);
    assert_eq!(demo.get(&path).await.expect_cached(200, "HIT"), user);
    // (Under the fleet protocol Redis reports the fill's own store back to the
    // instance, which drops the copy it just took: the second read may come from
    // L2, the third from L1.)
    assert_eq!(demo.get(&path).await.expect_cached(200, "HIT"), user);
    let after = scrape().await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (value(&before, name, labels), value(&after, name, labels));
        assert!(a > b, "{name}{labels:?}: {b} → {a}\n{after}");
    };
    let l1 = [("cache", "mx"), ("level", "l1")];
    let l2 = [("cache", "mx"), ("level", "l2")];
    moved("ormcache_hits_total", &l1);
    moved("ormcache_misses_total", &l2);
    moved("ormcache_sets_total", &l2);
    // A read goes through `EntityCache`'s read-through: op `get_or_compute`.
    moved(
        "ormcache_redis_round_trip_seconds_count",
        &[("cache", "mx"), ("op", "get_or_compute")],
    );
    assert_eq!(
        value(&after, "ormcache_breaker_state", &[("cache", "mx")]),
        0.0
    );
    assert_eq!(demo.get("/health").await.expect(200)["status"], json!("ok"));
}
