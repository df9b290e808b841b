//! [`dashboard`]: a live page of what a cache is doing, served by the binary itself.

use std::sync::LazyLock;

use ::axum::Router;
use ::axum::response::{IntoResponse, Json, Response};
use ::axum::routing::get;
use http::header;
use serde::Serialize;

use crate::AnyCache;
use crate::distributed::L2View;
use crate::hybrid::{CoherenceView, HybridReads};
use crate::telemetry::{Event, unix_ms};

/// The page: HTML with its CSS and script inlined (nothing else to fetch but the
/// snapshots).
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("page.html")
        .replacen("/*CSS*/", include_str!("page.css"), 1)
        .replacen("/*JS*/", include_str!("page.js"), 1)
});

/// The page may run its own inline script and style and fetch from its own origin;
/// nothing else (no CDN, no external font or image).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'self'";

/// A live dashboard of `cache`: a page at the router's root and the JSON it polls
/// at `snapshot`, to mount under any path.
///
/// The page shows, updated every second: the hit rate per level (L1; L2 of the
/// reads that reached it) over time, reads, writes and Redis round trips per
/// second, the L1's size, Redis round-trip latency (mean, p50, p99), the circuit
/// breaker, whether the invalidation stream is up, the other instances on the
/// channel with their last heartbeat and acknowledged sequence, the invalidation
/// lag (a write until every live peer applied it), unconfirmed peers, the backlog,
/// and the recent gaps, L1 flushes and stream changes. What does not apply to the
/// kind of cache (a [`QueryCache`](crate::QueryCache) has no Redis) shows as such.
///
/// Everything is served by the binary: HTML, CSS and script are compiled in, the
/// charts are drawn as SVG by the page's own script, and the page's
/// `Content-Security-Policy` forbids loading anything from elsewhere. `?every=500`
/// polls every 500 ms instead of every second.
///
/// Building a snapshot reads counters (atomics) and the peer table; it makes no
/// round trip to Redis and costs the request path nothing. The state it reads is
/// always kept (no feature): a latency histogram per Redis round trip and per
/// confirmed write, and the last 64 coherence events.
///
/// # `GET snapshot`
///
/// A JSON object; counters are cumulative since the cache was built (the page
/// derives rates and percentiles from two consecutive snapshots):
///
/// | field | |
/// | --- | --- |
/// | `kind` | `"local"`, `"distributed"` or `"hybrid"` |
/// | `time_ms` | when it was taken, ms since the Unix epoch |
/// | `reads` | `{total, l1_hits, l2_hits}` (`null` for a level the cache does not have; a hybrid cache's `l1_hits` is its L1's count) |
/// | `writes` | writes (for a hybrid cache: writes, deletes and clears that reached Redis) |
/// | `l1` | `{size, max_size, weighted_bytes, max_bytes, evictions}` or `null` |
/// | `l2` | `{round_trips, breaker, breaker_opened, hits, misses, sets, errors}` or `null` |
/// | `coherence` | hybrid only: `{coherent, instance, seq, peers: [{id, last_heard_ms, live, acked, unresponsive}], peers_live, peers_unresponsive, confirmed, unconfirmed, invalidations_sent, invalidations_received, flushes, gaps, fallbacks, backlog, lag}` |
/// | `events` | the last 64 of `{at_ms, kind}`, `kind` one of `flush`, `gap`, `stream_up`, `stream_lost` |
/// | `events_total` | events recorded in all |
///
/// `round_trips` and `lag` are histograms: `{count, sum_us, buckets}` where
/// `buckets[i]` counts durations under 2^i µs (and at least 2^(i-1) µs).
///
/// ```
/// use std::time::Duration;
/// use axum::Router;
/// use ormcache::QueryCache;
///
/// // Any cache: a HybridCache, a DistributedCache, a QueryCache or an AnyCache.
/// let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
/// let app: Router = Router::new().nest("/cache/dashboard", ormcache::axum::dashboard(cache));
/// // GET /cache/dashboard           the page
/// // GET /cache/dashboard/snapshot  the JSON it polls
/// # let _ = app;
/// ```
pub fn dashboard<S>(cache: impl Into<AnyCache>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let cache = cache.into();
    Router::new().route("/", get(page)).route(
        "/snapshot",
        get(move || {
            let snapshot = Snapshot::of(&cache);
            async move { snapshot_response(&snapshot) }
        }),
    )
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

fn snapshot_response(snapshot: &Snapshot) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(snapshot)).into_response()
}

/// Reads per level, cumulative.
#[derive(Debug, Serialize)]
struct Reads {
    total: u64,
    l1_hits: Option<u64>,
    l2_hits: Option<u64>,
}

/// The L1's size and bounds.
#[derive(Debug, Serialize)]
struct L1View {
    size: u64,
    max_size: u64,
    weighted_bytes: Option<u64>,
    max_bytes: Option<u64>,
    evictions: u64,
}

/// What `GET snapshot` answers (see [`dashboard`]).
#[derive(Debug, Serialize)]
struct Snapshot {
    kind: &'static str,
    time_ms: u64,
    reads: Reads,
    writes: u64,
    l1: Option<L1View>,
    l2: Option<L2View>,
    coherence: Option<CoherenceView>,
    events: Vec<Event>,
    events_total: u64,
}

impl Snapshot {
    fn of(cache: &AnyCache) -> Self {
        let l1_of = |l1: &crate::QueryCache| {
            let s = l1.get_stats_sync();
            let view = L1View {
                size: s.size,
                max_size: s.max_size,
                weighted_bytes: s.weighted_bytes,
                max_bytes: s.max_bytes,
                evictions: s.evictions,
            };
            (view, s.hits, s.misses, s.sets)
        };
        let time_ms = unix_ms();
        match cache {
            AnyCache::Local(l1) => {
                let (view, hits, misses, sets) = l1_of(l1);
                Self {
                    kind: "local",
                    time_ms,
                    reads: Reads {
                        total: hits.saturating_add(misses),
                        l1_hits: Some(hits),
                        l2_hits: None,
                    },
                    writes: sets,
                    l1: Some(view),
                    l2: None,
                    coherence: None,
                    events: Vec::new(),
                    events_total: 0,
                }
            }
            AnyCache::Distributed(l2) => {
                let view = l2.observe();
                Self {
                    kind: "distributed",
                    time_ms,
                    reads: Reads {
                        total: view.hits.saturating_add(view.misses),
                        l1_hits: None,
                        l2_hits: Some(view.hits),
                    },
                    writes: view.sets,
                    l1: None,
                    l2: Some(view),
                    coherence: None,
                    events: Vec::new(),
                    events_total: 0,
                }
            }
            AnyCache::Hybrid(h) => {
                let (
                    HybridReads {
                        reads,
                        l1_hits,
                        l2_hits,
                        writes,
                    },
                    coherence,
                    (events, events_total),
                ) = h.observe();
                Self {
                    kind: "hybrid",
                    time_ms,
                    reads: Reads {
                        total: reads,
                        l1_hits: Some(l1_hits),
                        l2_hits: Some(l2_hits),
                    },
                    writes,
                    l1: Some(l1_of(h.l1()).0),
                    l2: Some(h.l2().observe()),
                    coherence: Some(coherence),
                    events,
                    events_total,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_page_inlines_its_style_and_script_and_loads_nothing_else() {
        let page = PAGE.as_str();
        assert!(!page.contains("/*CSS*/") && !page.contains("/*JS*/"));
        assert!(page.contains("--l1:") && page.contains("function chart("));
        for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
            let hits: Vec<_> = page
                .match_indices(external)
                .map(|(i, _)| &page[i.saturating_sub(40)..(i + 40).min(page.len())])
                .filter(|ctx| !ctx.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{external}: {hits:?}");
        }
    }

    #[test]
    fn a_local_cache_reports_its_reads_and_size() {
        let l1 = crate::QueryCache::new(100, Duration::from_secs(60)).unwrap();
        l1.set_sync("a", 1u8, None).unwrap();
        l1.get_sync::<u8>("a");
        l1.get_sync::<u8>("b");
        let s = serde_json::to_value(Snapshot::of(&l1.into())).unwrap();
        assert_eq!(s["kind"], "local");
        assert_eq!(
            s["reads"],
            serde_json::json!({"total": 2, "l1_hits": 1, "l2_hits": null})
        );
        assert_eq!(s["writes"], 1);
        assert_eq!(s["l1"]["size"], 1);
        assert_eq!(s["l1"]["max_size"], 100);
        assert_eq!(s["l2"], serde_json::Value::Null);
        assert_eq!(s["coherence"], serde_json::Value::Null);
    }
}
