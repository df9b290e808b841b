//! The scenarios, each against its raw baseline. To add one: write a
//! `fn(&Env) -> Result<Measured>` and list it in [`ALL`].

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ormcache::{
    BreakerConfig, BreakerState, Cache, Codec, DistributedCache, Encoding, ErrorKind, HybridCache,
    QueryCache,
};
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;
use redis::io::tcp::TcpSettings;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::stats::{
    Measured, RatioOf, Round, Worker, alternate, concurrent_round, median, nanos, percentile_us,
    round_to, sample_each, sample_each_async, tight_loop, tight_loop_async,
};

/// Errors that end a scenario (setup failures, wrong answers).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Measured rounds per side (after one warm-up round each).
const ROUNDS: usize = 7;
/// Length of one Redis round.
const REDIS_ROUND: Duration = Duration::from_secs(1);
/// Concurrent tasks in the Redis scenarios.
const TASKS: usize = 50;
/// Operations per L1 round (tens of nanoseconds each).
const L1_OPS: u64 = 2_000_000;
/// Operations per `cached_hit` round (a key hash, a get and a clone: about half a
/// microsecond each).
const CACHED_OPS: u64 = 500_000;
/// Operations per codec round (about a microsecond each).
const CODEC_OPS: u64 = 200_000;
/// Per-op latency samples of each side of a tight-loop scenario.
const LATENCY_SAMPLES: usize = 200_000;
/// TTL of everything written (ours: the default, 300 s; baseline: the same).
const TTL: Duration = Duration::from_secs(300);
/// How long a `HybridCache` may take to become coherent at setup.
const COHERENT_WAIT: Duration = Duration::from_secs(5);
/// Invalidation samples per round of `hybrid_invalidation` (7 rounds: 2,100).
const INVALIDATION_SAMPLES: usize = 300;
/// Bound on one invalidation sample; a sample that takes longer is a timeout.
const INVALIDATION_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two checks of an eviction (the OS adds its timer slack, ~50 µs).
const POLL_SLEEP: Duration = Duration::from_micros(20);
/// Sequential writes per round of `hybrid_confirmed_write`.
const CONFIRM_SAMPLES: usize = 300;
/// The confirmation timeout of `hybrid_confirmed_write` (the default).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
/// Operations per round of `outage` (about a microsecond each).
const OUTAGE_OPS: u64 = 200_000;

/// A benchmark scenario and the baseline it is measured against.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// Short name of the baseline (the JSON `baseline` field).
    pub(crate) baseline: &'static str,
    pub(crate) needs_redis: bool,
    /// The ratio the issue asks for, if any.
    pub(crate) goal_ratio: Option<f64>,
    /// The p99 latency (µs) the issue asks for, if any: `meets_goal` needs p99 below it.
    pub(crate) goal_p99_us: Option<f64>,
    pub(crate) run: fn(&Env) -> Result<Measured>,
}

/// Every scenario, in run order.
pub(crate) const ALL: &[Scenario] = &[
    Scenario {
        name: "l2_get",
        baseline: "redis-rs GET + serde_json",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: l2_get,
    },
    Scenario {
        name: "l2_set",
        baseline: "redis-rs SET PX + serde_json",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: l2_set,
    },
    Scenario {
        name: "l1_get",
        baseline: "moka::sync::Cache get",
        needs_redis: false,
        goal_ratio: Some(0.8),
        goal_p99_us: None,
        run: l1_get,
    },
    Scenario {
        name: "hybrid_l1_get",
        baseline: "QueryCache get (same async loop)",
        needs_redis: true,
        goal_ratio: Some(0.667),
        goal_p99_us: None,
        run: hybrid_l1_get,
    },
    Scenario {
        name: "cached_hit",
        baseline: "hash key + QueryCache get + clone",
        needs_redis: false,
        goal_ratio: Some(0.833),
        goal_p99_us: None,
        run: cached_hit,
    },
    Scenario {
        name: "hybrid_invalidation",
        baseline: "redis-rs PUBLISH → subscriber",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: Some(5_000.0),
        run: hybrid_invalidation,
    },
    Scenario {
        name: "hybrid_confirmed_write",
        baseline: "HybridCache set without confirmation",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: hybrid_confirmed_write,
    },
    Scenario {
        name: "outage",
        baseline: "QueryCache miss (same async loop)",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: Some(1_000.0),
        run: outage,
    },
    Scenario {
        name: "dead_redis",
        baseline: "QueryCache miss + load + store",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: Some(10_000.0),
        run: crate::dead_redis::dead_redis,
    },
    Scenario {
        name: "codec_json",
        baseline: "serde_json to_vec+from_slice",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: codec_json,
    },
    Scenario {
        name: "codec_msgpack",
        baseline: "rmp_serde to_vec_named+from_slice",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: codec_msgpack,
    },
    Scenario {
        name: "stampede",
        baseline: "naive get → load → set",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: stampede,
    },
    // Last: it grows the keyspace to a million keys (removed again at its end).
    Scenario {
        name: "tag_vs_pattern",
        baseline: "clear_pattern(\"grp:*\")",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: tag_vs_pattern,
    },
];

/// What every scenario may use.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) rt: tokio::runtime::Runtime,
    /// Set when a selected scenario needs Redis.
    pub(crate) redis_url: Option<String>,
    /// Every Redis key written lives under `{prefix}:`.
    pub(crate) prefix: String,
}

impl Env {
    fn redis_url(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .ok_or_else(|| "this scenario needs Redis".into())
    }

    /// A `DistributedCache` with default settings under the run's prefix.
    async fn distributed(&self) -> Result<DistributedCache> {
        Ok(DistributedCache::builder()
            .redis_url(self.redis_url()?)
            .key_prefix(&self.prefix)
            .build()
            .await?)
    }

    /// The baseline's client: TCP_NODELAY, as ormcache sets it.
    fn raw_client(&self) -> Result<redis::Client> {
        let info = self
            .redis_url()?
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        Ok(redis::Client::open(info)?)
    }

    /// The baseline's connection: the kind ormcache uses (`ConnectionManager`), with
    /// the same TCP_NODELAY setting, so the ratio measures ormcache and not Nagle.
    async fn raw_connection(&self) -> Result<ConnectionManager> {
        Ok(self.raw_client()?.get_connection_manager().await?)
    }

    /// A coherent `HybridCache` over a fresh L1 and a default L2 under the run's
    /// prefix (its background tasks run on `self.rt`: call this inside it).
    async fn hybrid(&self) -> Result<HybridCache> {
        let l2 = self.distributed().await?;
        self.hybrid_over(l2, Some(CONFIRM_TIMEOUT)).await
    }

    /// [`hybrid`](Self::hybrid) over `l2`, with `confirm` as its confirmation timeout.
    async fn hybrid_over(
        &self,
        l2: DistributedCache,
        confirm: Option<Duration>,
    ) -> Result<HybridCache> {
        let cache = HybridCache::builder(QueryCache::new(10_000, TTL)?, l2)
            .l1_max_ttl(TTL)
            .confirm_invalidations(confirm)
            .build();
        if !cache.wait_coherent(COHERENT_WAIT).await {
            return Err(format!("HybridCache not coherent within {COHERENT_WAIT:?}").into());
        }
        Ok(cache)
    }
}

/// The runtime that drives the async tight loops: one thread, the caller's.
fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A ~200-byte database row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
    created_at: String,
}

const ROW_ID: u64 = 123_456;

fn row() -> Row {
    row_with_id(ROW_ID)
}

fn row_with_id(id: u64) -> Row {
    Row {
        id,
        name: "Augusta Ada King, Countess of Lovelace".into(),
        email: "ada.lovelace@example.com".into(),
        active: true,
        score: 98.25,
        tags: vec![
            "admin".into(),
            "beta".into(),
            "eu-west".into(),
            "analytical-engine".into(),
        ],
        created_at: "2026-11-25T21:38:52Z".into(),
    }
}

// ---------------------------------------------------------------------------
// L2: DistributedCache against raw redis-rs, 50 concurrent tasks.

const GET_KEY: &str = "row:get";

struct CacheGet {
    cache: DistributedCache,
}

impl Worker for CacheGet {
    async fn op(&mut self) -> bool {
        matches!(self.cache.get::<Row>(GET_KEY).await, Ok(Some(row)) if black_box(&row).id == ROW_ID)
    }
}

struct RawGet {
    conn: ConnectionManager,
    key: Arc<str>,
}

impl Worker for RawGet {
    async fn op(&mut self) -> bool {
        let reply = redis::cmd("GET")
            .arg(&*self.key)
            .query_async::<Option<Vec<u8>>>(&mut self.conn)
            .await;
        let Ok(Some(bytes)) = reply else { return false };
        matches!(serde_json::from_slice::<Row>(&bytes), Ok(row) if black_box(&row).id == ROW_ID)
    }
}

fn l2_get(env: &Env) -> Result<Measured> {
    let (cache, conn, key) = env.rt.block_on(async {
        let cache = env.distributed().await?;
        let conn = env.raw_connection().await?;
        cache.set(GET_KEY, row(), None).await?;
        let key = Arc::<str>::from(cache.redis_key(GET_KEY));
        Ok::<_, Error>((cache, conn, key))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            let workers = (0..TASKS)
                .map(|_| CacheGet {
                    cache: cache.clone(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
        || {
            let workers = (0..TASKS)
                .map(|_| RawGet {
                    conn: conn.clone(),
                    key: Arc::clone(&key),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
    );
    env.rt.block_on(cache.close())?;
    Ok(Measured {
        ours,
        baseline,
        ..Measured::default()
    })
}

struct CacheSet {
    cache: DistributedCache,
    key: String,
    row: Row,
}

impl Worker for CacheSet {
    async fn op(&mut self) -> bool {
        self.cache
            .set(&self.key, self.row.clone(), None)
            .await
            .is_ok()
    }
}

struct RawSet {
    conn: ConnectionManager,
    key: String,
    row: Row,
}

impl Worker for RawSet {
    async fn op(&mut self) -> bool {
        let Ok(bytes) = serde_json::to_vec(&self.row) else {
            return false;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key)
            .arg(bytes)
            .arg("PX")
            .arg(TTL.as_millis() as u64);
        cmd.query_async::<()>(&mut self.conn).await.is_ok()
    }
}

fn set_key(task: usize) -> String {
    format!("row:set:{task}")
}

fn l2_set(env: &Env) -> Result<Measured> {
    let (cache, conn) = env.rt.block_on(async {
        Ok::<_, Error>((env.distributed().await?, env.raw_connection().await?))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            let workers = (0..TASKS)
                .map(|t| CacheSet {
                    cache: cache.clone(),
                    key: set_key(t),
                    row: row(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
        || {
            let workers = (0..TASKS)
                .map(|t| RawSet {
                    conn: conn.clone(),
                    key: cache.redis_key(&set_key(t)),
                    row: row(),
                })
                .collect();
            env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
        },
    );
    // Both sides wrote the same keys; what is there must read back as the row.
    env.rt.block_on(async {
        let back = cache.get::<Row>(&set_key(0)).await?;
        if back.as_deref() != Some(&row()) {
            return Err::<(), Error>(format!("l2_set: read back {back:?}").into());
        }
        Ok(cache.close().await?)
    })?;
    Ok(Measured {
        ours,
        baseline,
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// L1: QueryCache against raw moka, one thread.

/// The baseline's per-entry expiry: a fixed TTL, as a raw moka user would write it.
struct FixedTtl(Duration);

impl moka::Expiry<String, Arc<Row>> for FixedTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        _value: &Arc<Row>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.0)
    }
}

fn l1_get(_env: &Env) -> Result<Measured> {
    const KEY: &str = "row:1";
    let ours = QueryCache::new(10_000, TTL)?;
    ours.set(KEY, row(), None)?;
    let raw: moka::sync::Cache<String, Arc<Row>> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .expire_after(FixedTtl(TTL))
        .build();
    raw.insert(KEY.to_owned(), Arc::new(row()));

    let mut ours_get = || {
        black_box(ours.get::<Row>(black_box(KEY)));
    };
    let mut raw_get = || {
        black_box(raw.get(black_box(KEY)));
    };
    let (ours_rounds, baseline) = alternate(
        ROUNDS,
        || tight_loop(L1_OPS, &mut ours_get),
        || tight_loop(L1_OPS, &mut raw_get),
    );
    let ours_latency = sample_each(LATENCY_SAMPLES, &mut ours_get);
    let baseline_latency = sample_each(LATENCY_SAMPLES, &mut raw_get);

    let misses = ours.get_stats().misses;
    if misses != 0 || raw.get(KEY).is_none() {
        return Err(format!("l1_get: the key was not a hit every time ({misses} misses)").into());
    }
    Ok(Measured {
        ours: ours_rounds,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// HybridCache L1 hit against a plain QueryCache hit, one thread, same async loop.

fn hybrid_l1_get(env: &Env) -> Result<Measured> {
    const KEY: &str = "hybrid:l1";
    // Built inside the shared runtime, so that its subscriber and heartbeat keep
    // running on that runtime's workers while the loop below runs on this thread.
    let hybrid = env.rt.block_on(async {
        let cache = env.hybrid().await?;
        cache.set(KEY, row(), None).await?;
        Ok::<_, Error>(cache)
    })?;
    if !hybrid.l1().exists(KEY) {
        return Err("hybrid_l1_get: the set did not fill L1".into());
    }
    let plain = QueryCache::new(10_000, TTL)?;
    plain.set(KEY, row(), None)?;

    let rt = current_thread()?;
    let (h, q) = (&hybrid, &plain);
    let ours_get = move || async move {
        matches!(h.get::<Row>(black_box(KEY)).await, Ok(Some(row)) if black_box(&row).id == ROW_ID)
    };
    let plain_get = move || async move {
        matches!(q.get::<Row>(black_box(KEY)), Some(row) if black_box(&row).id == ROW_ID)
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop_async(&rt, L1_OPS, ours_get),
        || tight_loop_async(&rt, L1_OPS, plain_get),
    );
    let ours_latency = sample_each_async(&rt, LATENCY_SAMPLES, ours_get);
    let baseline_latency = sample_each_async(&rt, LATENCY_SAMPLES, plain_get);

    // Every get must have been an L1 hit: no L1 miss, still coherent, no flush.
    let misses = hybrid.l1().get_stats().misses;
    let stats = env.rt.block_on(hybrid.get_stats())?;
    let coherent = hybrid.is_coherent();
    env.rt.block_on(hybrid.close())?;
    if misses != 0 || !coherent {
        return Err(format!(
            "hybrid_l1_get: not an L1 hit every time ({misses} L1 misses, coherent: {coherent})"
        )
        .into());
    }
    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        extras: vec![
            (
                "driver",
                json!("current-thread tokio runtime, one .await per op, both sides"),
            ),
            ("l2_hits", json!(stats.l2.map_or(0, |s| s.hits))),
            ("flushes", json!(stats.coherence.flushes)),
        ],
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// A `#[cached]` hit against the same get written by hand, one thread, same async loop.

/// The second argument of [`cached_row`].
const CACHED_REGION: &str = "eu-west";
/// The path `#[cached]` puts in the key of [`cached_row`] (a free function:
/// `module_path!()::name`); checked against its `cached_row_cache_key`.
const CACHED_PATH: &str = concat!(module_path!(), "::cached_row");

/// The cache of [`cached_row`] (the macro evaluates `cache = ...` on every call).
static CACHED_CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(10_000, TTL).expect("a valid QueryCache"));
/// How often the body of [`cached_row`] ran.
static CACHED_BODY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A row by id and region; the body stands for a database query.
#[ormcache::cached(cache = CACHED_CACHE)]
async fn cached_row(id: u64, region: &str) -> Row {
    CACHED_BODY_RUNS.fetch_add(1, SeqCst);
    row_with_id(id)
}

/// What a hit of `cached_row(id, region)` does, written by hand: the same key (the
/// hash of the arguments under the same path), a get, an owned clone of the row.
fn hand_written_get(cache: &QueryCache, id: u64, region: &str) -> Option<Row> {
    let hash = ormcache::__private::stable_hash(&(&id, &region))?;
    let key = ormcache::__private::default_key(None, CACHED_PATH, &hash);
    cache.get::<Row>(&key).map(|row| (*row).clone())
}

fn cached_hit(_env: &Env) -> Result<Measured> {
    let rt = current_thread()?;
    let cache: &QueryCache = &CACHED_CACHE;

    // The first call runs the body and fills the cache; from then on every call must
    // be a hit, with the key the hand-written side builds.
    let first = rt.block_on(cached_row(ROW_ID, CACHED_REGION));
    let again = rt.block_on(cached_row(ROW_ID, CACHED_REGION));
    let ours_key = cached_row_cache_key(&ROW_ID, &CACHED_REGION);
    let hash = ormcache::__private::stable_hash(&(&ROW_ID, &CACHED_REGION));
    let hand_key = hash.map(|h| ormcache::__private::default_key(None, CACHED_PATH, &h));
    let hand = hand_written_get(cache, ROW_ID, CACHED_REGION);
    let runs = CACHED_BODY_RUNS.load(SeqCst);
    if ours_key.is_none() || ours_key != hand_key {
        return Err(format!("cached_hit: keys differ: {ours_key:?} vs {hand_key:?}").into());
    }
    if runs != 1 || first != row() || again != first || hand.as_ref() != Some(&first) {
        return Err(format!(
            "cached_hit: before measuring, the body ran {runs} times (not 1) or a row differed"
        )
        .into());
    }

    let ours_get = || async {
        let row = cached_row(black_box(ROW_ID), black_box(CACHED_REGION)).await;
        black_box(&row).id == ROW_ID
    };
    let hand_get = || async {
        let row = hand_written_get(cache, black_box(ROW_ID), black_box(CACHED_REGION));
        matches!(row, Some(row) if black_box(&row).id == ROW_ID)
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop_async(&rt, CACHED_OPS, ours_get),
        || tight_loop_async(&rt, CACHED_OPS, hand_get),
    );
    let ours_latency = sample_each_async(&rt, LATENCY_SAMPLES, ours_get);
    let baseline_latency = sample_each_async(&rt, LATENCY_SAMPLES, hand_get);

    // The key hashing alone, which both sides do once per op.
    let mut hash_once = || {
        black_box(ormcache::__private::stable_hash(&(
            &black_box(ROW_ID),
            &black_box(CACHED_REGION),
        )));
    };
    tight_loop(CACHED_OPS, &mut hash_once);
    let key_hash_ns = median(
        (0..ROUNDS)
            .map(|_| {
                let r = tight_loop(CACHED_OPS, &mut hash_once);
                r.elapsed.as_secs_f64() * 1e9 / r.ops as f64
            })
            .collect(),
    );

    let runs = CACHED_BODY_RUNS.load(SeqCst);
    let misses = cache.get_stats().misses;
    let removed = rt.block_on(cached_row_invalidate(ROW_ID, CACHED_REGION))?;
    if runs != 1 || !removed {
        return Err(format!(
            "cached_hit: the body ran {runs} times (not 1), or the entry was gone ({removed})"
        )
        .into());
    }
    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        extras: vec![
            (
                "driver",
                json!("current-thread tokio runtime, one .await per op, both sides"),
            ),
            ("key_hash_ns", json!(round_to(key_hash_ns, 1))),
            ("body_runs", json!(runs)),
            ("misses", json!(misses)),
        ],
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// Invalidation: A's set → B's L1 copy evicted, against raw PUBLISH → subscriber.

/// Polls `done`, sleeping [`POLL_SLEEP`] between checks, until it is true or
/// [`INVALIDATION_TIMEOUT`] has passed since `since`; when `done` was first seen
/// true, or `None` on timeout.
///
/// Sleeping rather than spinning on `yield_now`: on a small machine a spinning
/// poller competes for the cores with the subscriber task and redis-server, which
/// measured worse at p50 and p99 than the sleep's granularity costs.
fn poll_until(since: Instant, mut done: impl FnMut() -> bool) -> Option<Instant> {
    loop {
        if done() {
            return Some(Instant::now());
        }
        if since.elapsed() > INVALIDATION_TIMEOUT {
            return None;
        }
        std::thread::sleep(POLL_SLEEP);
    }
}

/// What one side of `hybrid_invalidation` saw besides its latency samples.
#[derive(Debug, Default)]
struct InvalidationCounts {
    /// Latency from the write returning (ns), the secondary measure.
    from_return: Vec<u64>,
    timeouts: u64,
    /// B's read did not fill its L1 (ours only).
    fill_failures: u64,
    /// B's read did not return the value last written (ours only).
    stale_reads: u64,
}

fn hybrid_invalidation(env: &Env) -> Result<Measured> {
    const KEY: &str = "hybrid:inv";
    let channel = format!("{}:bench-pubsub", env.prefix);
    let received = Arc::new(AtomicU64::new(0));
    let (a, b, mut conn, subscriber) = env.rt.block_on(async {
        let a = env.hybrid().await?;
        let b = env.hybrid().await?;
        a.set(KEY, row_with_id(0), None).await?;
        // The baseline: a plain redis-rs subscriber that counts messages.
        let mut pubsub = env.raw_client()?.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        let counter = Arc::clone(&received);
        let subscriber = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while messages.next().await.is_some() {
                counter.fetch_add(1, SeqCst);
            }
        });
        Ok::<_, Error>((a, b, env.raw_connection().await?, subscriber))
    })?;

    let mut last_id = 0u64;
    let mut ours_counts = InvalidationCounts::default();
    let mut base_counts = InvalidationCounts::default();
    // About the size of ormcache's invalidation message for one key.
    let payload = format!(r#"{{"i":1234567890123456789,"s":1,"o":{{"Keys":["{KEY}"]}}}}"#);

    let ours_round = |last_id: &mut u64, counts: &mut InvalidationCounts| {
        let mut round = Round {
            samples: Vec::with_capacity(INVALIDATION_SAMPLES),
            ..Round::default()
        };
        let start = Instant::now();
        for _ in 0..INVALIDATION_SAMPLES {
            // B reads the key: an L2 hit that fills B's L1.
            let read = env.rt.block_on(b.get::<Row>(KEY));
            if !matches!(&read, Ok(Some(row)) if row.id == *last_id) {
                counts.stale_reads += 1;
            }
            if !b.l1().exists(KEY) {
                counts.fill_failures += 1;
                round.errors += 1;
                continue;
            }
            *last_id += 1;
            let issued = Instant::now();
            let written = env.rt.block_on(a.set(KEY, row_with_id(*last_id), None));
            let returned = Instant::now();
            if written.is_err() {
                round.errors += 1;
                continue;
            }
            match poll_until(issued, || !b.l1().exists(KEY)) {
                Some(evicted) => {
                    round.ops += 1;
                    round.samples.push(nanos(evicted - issued));
                    counts
                        .from_return
                        .push(nanos(evicted.saturating_duration_since(returned)));
                }
                None => {
                    counts.timeouts += 1;
                    round.errors += 1;
                }
            }
        }
        round.elapsed = start.elapsed();
        round
    };
    let base_round = |conn: &mut ConnectionManager, counts: &mut InvalidationCounts| {
        let mut round = Round {
            samples: Vec::with_capacity(INVALIDATION_SAMPLES),
            ..Round::default()
        };
        let start = Instant::now();
        for _ in 0..INVALIDATION_SAMPLES {
            let before = received.load(SeqCst);
            let issued = Instant::now();
            let published = env.rt.block_on(
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&payload)
                    .query_async::<u64>(conn),
            );
            let returned = Instant::now();
            if !matches!(published, Ok(1)) {
                round.errors += 1;
                continue;
            }
            match poll_until(issued, || received.load(SeqCst) > before) {
                Some(seen) => {
                    round.ops += 1;
                    round.samples.push(nanos(seen - issued));
                    counts
                        .from_return
                        .push(nanos(seen.saturating_duration_since(returned)));
                }
                None => {
                    counts.timeouts += 1;
                    round.errors += 1;
                }
            }
        }
        round.elapsed = start.elapsed();
        round
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || ours_round(&mut last_id, &mut ours_counts),
        || base_round(&mut conn, &mut base_counts),
    );
    // The warm-up rounds' secondary samples are dropped with their rounds.
    let measured = |counts: &mut InvalidationCounts, rounds: &[Round]| {
        let kept: usize = rounds.iter().map(|r| r.samples.len()).sum();
        let skip = counts.from_return.len() - kept;
        counts.from_return.drain(..skip);
        counts.from_return.sort_unstable();
    };
    measured(&mut ours_counts, &ours);
    measured(&mut base_counts, &baseline);

    subscriber.abort();
    let (a_stats, b_stats) = env.rt.block_on(async {
        let stats = (a.get_stats().await?, b.get_stats().await?);
        a.close().await?;
        b.close().await?;
        Ok::<_, Error>(stats)
    })?;
    let b_coherence = &b_stats.coherence;
    let (ours_fr, base_fr) = (&ours_counts.from_return, &base_counts.from_return);
    Ok(Measured {
        ours,
        baseline,
        ratio_of: RatioOf::InverseP99,
        ratio_definition: Some(
            "median over round pairs of baseline p99 / ours p99, where ours = A.set issued → \
             key gone from B's L1 and baseline = PUBLISH issued → message counted by a \
             redis-rs subscriber task; higher is better (1.0: as fast as raw pub/sub)",
        ),
        goal_also: Some(ours_counts.timeouts == 0),
        notes: vec![
            format!(
                "from return p50/p99 {}/{} µs",
                percentile_us(ours_fr, 0.50),
                percentile_us(ours_fr, 0.99)
            ),
            format!("timeouts {}/{}", ours_counts.timeouts, base_counts.timeouts),
        ],
        extras: vec![
            (
                "latency_from",
                json!("just before A.set is issued (baseline: just before PUBLISH is issued)"),
            ),
            (
                "latency_until",
                json!(
                    "B.l1().exists(k) seen false (baseline: the subscriber task has counted \
                     the message)"
                ),
            ),
            (
                "poll",
                json!(
                    "bench thread checks, then std::thread::sleep(20 µs) between checks; 1 s timeout"
                ),
            ),
            (
                "ops_definition",
                json!(
                    "samples; ops_per_sec = samples per second of round time, each sample \
                       including B's read (an L2 hit) and A's set"
                ),
            ),
            ("from_return_p50_us", json!(percentile_us(ours_fr, 0.50))),
            ("from_return_p99_us", json!(percentile_us(ours_fr, 0.99))),
            (
                "baseline_from_return_p50_us",
                json!(percentile_us(base_fr, 0.50)),
            ),
            (
                "baseline_from_return_p99_us",
                json!(percentile_us(base_fr, 0.99)),
            ),
            ("timeouts", json!(ours_counts.timeouts)),
            ("baseline_timeouts", json!(base_counts.timeouts)),
            ("fill_failures", json!(ours_counts.fill_failures)),
            ("stale_reads", json!(ours_counts.stale_reads)),
            (
                // A.set returns once B acknowledged (the default): B's copy is gone
                // by then, so `from_return` is the poll's own delay.
                "confirm_invalidations",
                json!(a_stats.coherence.confirm_invalidations),
            ),
            (
                "a_invalidations_sent",
                json!(a_stats.coherence.invalidations_sent),
            ),
            (
                "b_invalidations_received",
                json!(b_coherence.invalidations_received),
            ),
            ("b_flushes", json!(b_coherence.flushes)),
            ("b_gaps", json!(b_coherence.gaps)),
            ("b_fills_discarded", json!(b_coherence.fills_discarded)),
        ],
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// Confirmed writes: A.set with a peer that must acknowledge, against A.set whose
// invalidation is not confirmed.

/// What one side of `hybrid_confirmed_write` saw.
#[derive(Debug)]
struct ConfirmPair {
    a: HybridCache,
    b: HybridCache,
    last_id: u64,
    /// B's read right after a write returned was not that write's value.
    stale_reads: u64,
}

impl ConfirmPair {
    /// Two instances on `prefix`, the writer knowing its peer, with `confirm`.
    async fn start(env: &Env, prefix: &str, confirm: Option<Duration>) -> Result<Self> {
        let url = env.redis_url()?;
        let l2 = || {
            DistributedCache::builder()
                .redis_url(url)
                .key_prefix(prefix)
                .build()
        };
        let a = env.hybrid_over(l2().await?, confirm).await?;
        let b = env.hybrid_over(l2().await?, confirm).await?;
        let deadline = Instant::now() + COHERENT_WAIT;
        while a.get_stats().await?.coherence.peers != 1 {
            if Instant::now() > deadline {
                return Err(format!("{prefix}: the writer never heard its peer").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            a,
            b,
            last_id: 0,
            stale_reads: 0,
        })
    }

    /// [`CONFIRM_SAMPLES`] writes through A, each timed; after each (untimed) B
    /// reads the key, so that it holds a copy the next write must evict.
    fn round(&mut self, rt: &tokio::runtime::Runtime) -> Round {
        const KEY: &str = "hybrid:confirm";
        rt.block_on(async {
            let mut round = Round {
                samples: Vec::with_capacity(CONFIRM_SAMPLES),
                ..Round::default()
            };
            let start = Instant::now();
            for _ in 0..CONFIRM_SAMPLES {
                self.last_id += 1;
                let issued = Instant::now();
                let written = self.a.set(KEY, row_with_id(self.last_id), None).await;
                round.samples.push(nanos(issued.elapsed()));
                if written.is_err() {
                    round.errors += 1;
                    continue;
                }
                round.ops += 1;
                let read = self.b.get::<Row>(KEY).await;
                if !matches!(&read, Ok(Some(row)) if row.id == self.last_id) {
                    self.stale_reads += 1;
                }
            }
            round.elapsed = start.elapsed();
            round
        })
    }

    async fn close(&self) -> Result<ormcache::CoherenceStats> {
        let stats = self.a.get_stats().await?.coherence;
        self.a.close().await?;
        self.b.close().await?;
        Ok(stats)
    }
}

fn hybrid_confirmed_write(env: &Env) -> Result<Measured> {
    let (mut ours_pair, mut base_pair) = env.rt.block_on(async {
        // A prefix (so a channel) each: the two pairs do not hear each other or any
        // other scenario's instances.
        let ours = ConfirmPair::start(
            env,
            &format!("{}:confirmed", env.prefix),
            Some(CONFIRM_TIMEOUT),
        )
        .await?;
        let base = ConfirmPair::start(env, &format!("{}:unconfirmed", env.prefix), None).await?;
        Ok::<_, Error>((ours, base))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || ours_pair.round(&env.rt),
        || base_pair.round(&env.rt),
    );
    let (a_stats, base_stats) = env
        .rt
        .block_on(async { Ok::<_, Error>((ours_pair.close().await?, base_pair.close().await?)) })?;
    Ok(Measured {
        ours,
        baseline,
        ratio_definition: Some(
            "median over round pairs of ours ops/s / baseline ops/s, both sequential \
             A.set of one ~200-byte row with one peer B; ours waits for B's \
             acknowledgement (confirm_invalidations(Some(1 s)), the default), baseline does \
             not (None): the inverse ratio of mean write latencies, 1.0 = confirmation is free",
        ),
        goal_also: Some(ours_pair.stale_reads == 0 && a_stats.unconfirmed == 0),
        notes: vec![format!(
            "stale reads by B right after the write: {} confirmed / {} unconfirmed",
            ours_pair.stale_reads, base_pair.stale_reads
        )],
        extras: vec![
            (
                "latency_definition",
                json!("A.set issued → returned (ours: includes B's acknowledgement)"),
            ),
            ("stale_reads", json!(ours_pair.stale_reads)),
            ("baseline_stale_reads", json!(base_pair.stale_reads)),
            ("confirmed", json!(a_stats.confirmed)),
            ("unconfirmed", json!(a_stats.unconfirmed)),
            ("baseline_confirmed", json!(base_stats.confirmed)),
        ],
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// Outage: calls with the circuit breaker open, against a QueryCache miss.

fn outage(env: &Env) -> Result<Measured> {
    const KEY: &str = "outage:row";
    const MISSING: &str = "outage:missing";
    const COOLDOWN: Duration = Duration::from_secs(60);
    // A port nothing listens on: bound once, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let opening = Instant::now();
    let (l2, hybrid, calls_to_open) = env.rt.block_on(async {
        let l2 = DistributedCache::builder()
            .redis_url(&url)
            .key_prefix(&env.prefix)
            .connect_lazily(true)
            .socket_timeout(Duration::from_millis(50))
            .circuit_breaker(BreakerConfig::new().threshold(1).cooldown(COOLDOWN))
            .build()
            .await?;
        let mut calls = 0u32;
        while l2.breaker_state() != BreakerState::Open {
            if calls == 20 {
                return Err::<_, Error>("the breaker did not open after 20 failed calls".into());
            }
            calls += 1;
            if l2.get::<Row>(KEY).await.is_ok() {
                return Err(format!("something answers on {url}").into());
            }
        }
        let hybrid = HybridCache::new(QueryCache::new(10_000, TTL)?, l2.clone());
        Ok((l2, hybrid, calls))
    })?;
    let time_to_open = opening.elapsed();
    let plain = QueryCache::new(10_000, TTL)?;

    let rt = current_thread()?;
    let (c, h, q) = (&l2, &hybrid, &plain);
    let l2_get = move || async move {
        matches!(c.get::<Row>(black_box(KEY)).await, Err(e) if e.kind() == ErrorKind::CircuitOpen)
    };
    let hybrid_get = move || async move { matches!(h.get::<Row>(black_box(KEY)).await, Ok(None)) };
    let plain_miss = move || async move { q.get::<Row>(black_box(MISSING)).is_none() };

    let measuring = Instant::now();
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop_async(&rt, OUTAGE_OPS, l2_get),
        || tight_loop_async(&rt, OUTAGE_OPS, plain_miss),
    );
    let ours_latency = sample_each_async(&rt, LATENCY_SAMPLES, l2_get);
    let baseline_latency = sample_each_async(&rt, LATENCY_SAMPLES, plain_miss);
    // The same through a HybridCache over that L2: fallback to L1, a miss.
    tight_loop_async(&rt, OUTAGE_OPS, hybrid_get);
    let hybrid_rounds: Vec<Round> = (0..ROUNDS)
        .map(|_| tight_loop_async(&rt, OUTAGE_OPS, hybrid_get))
        .collect();
    let mut hybrid_latency = sample_each_async(&rt, LATENCY_SAMPLES, hybrid_get);
    hybrid_latency.sort_unstable();
    let measured_for = measuring.elapsed();

    let still_open = l2.breaker_state() == BreakerState::Open;
    let stats = env.rt.block_on(hybrid.get_stats())?;
    // Fails (CircuitOpen: its last stats flush cannot reach Redis), as it should.
    let _ = env.rt.block_on(hybrid.close());
    if !still_open {
        return Err("outage: the breaker closed during the measurement".into());
    }
    let hybrid_ops: u64 = hybrid_rounds.iter().map(|r| r.ops).sum();
    let hybrid_errors: u64 = hybrid_rounds.iter().map(|r| r.errors).sum();
    let hybrid_elapsed: Duration = hybrid_rounds.iter().map(|r| r.elapsed).sum();
    let hybrid_ops_per_sec = (hybrid_ops as f64 / hybrid_elapsed.as_secs_f64()).round();
    let hybrid_p50 = percentile_us(&hybrid_latency, 0.50);
    let hybrid_p99 = percentile_us(&hybrid_latency, 0.99);
    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        ratio_definition: Some(
            "median over round pairs of ours ops/s (DistributedCache::get, breaker open) / \
             baseline ops/s (QueryCache miss): the cost of a breaker-open call in L1 misses; \
             higher is better",
        ),
        goal_also: Some(hybrid_p99 < 1_000.0 && hybrid_errors == 0),
        notes: vec![format!("hybrid p50/p99 {hybrid_p50}/{hybrid_p99} µs")],
        extras: vec![
            (
                "goal_applies_to",
                json!("p99_us (DistributedCache::get) and hybrid_p99_us (HybridCache::get)"),
            ),
            (
                "ours",
                json!(format!(
                    "DistributedCache::get on 127.0.0.1:{port} (nothing listening), breaker \
                     open (threshold 1, cooldown {COOLDOWN:?}): Err(CircuitOpen)"
                )),
            ),
            (
                "hybrid",
                json!("HybridCache::get over that L2: Ok(None) by fallback"),
            ),
            ("hybrid_ops", json!(hybrid_ops)),
            ("hybrid_ops_per_sec", json!(hybrid_ops_per_sec)),
            ("hybrid_p50_us", json!(hybrid_p50)),
            ("hybrid_p99_us", json!(hybrid_p99)),
            ("hybrid_errors", json!(hybrid_errors)),
            ("hybrid_fallbacks", json!(stats.coherence.fallbacks)),
            ("calls_to_open", json!(calls_to_open)),
            (
                "time_to_open_ms",
                json!((time_to_open.as_secs_f64() * 1e5).round() / 100.0),
            ),
            (
                "measured_s",
                json!((measured_for.as_secs_f64() * 100.0).round() / 100.0),
            ),
            ("breaker_open_throughout", json!(still_open)),
        ],
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// Codecs: ormcache::Encoding against the raw serde crates, encode + decode.

fn codec(
    encoding: Encoding,
    raw_encode: fn(&Row) -> Vec<u8>,
    raw_decode: fn(&[u8]) -> Option<Row>,
) -> Result<Measured> {
    let row = row();
    let bytes = encoding.encode(&row)?;
    let raw_bytes = raw_encode(&row);
    if encoding.decode::<Row>(&bytes)? != row || raw_decode(&raw_bytes).as_ref() != Some(&row) {
        return Err("codec: a round trip changed the row".into());
    }
    let mut ours_op = || {
        let bytes = encoding.encode(black_box(&row)).expect("encode");
        black_box(encoding.decode::<Row>(black_box(&bytes)).expect("decode"));
    };
    let mut raw_op = || {
        let bytes = raw_encode(black_box(&row));
        black_box(raw_decode(black_box(&bytes)).expect("decode"));
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop(CODEC_OPS, &mut ours_op),
        || tight_loop(CODEC_OPS, &mut raw_op),
    );
    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(sample_each(LATENCY_SAMPLES, &mut ours_op)),
        baseline_latency: Some(sample_each(LATENCY_SAMPLES, &mut raw_op)),
        bytes: Some(bytes.len()),
        baseline_bytes: Some(raw_bytes.len()),
        ..Measured::default()
    })
}

fn codec_json(_env: &Env) -> Result<Measured> {
    codec(
        Encoding::new(Codec::Json),
        |row| serde_json::to_vec(row).expect("encode"),
        |bytes| serde_json::from_slice(bytes).ok(),
    )
}

fn codec_msgpack(_env: &Env) -> Result<Measured> {
    codec(
        Encoding::new(Codec::MessagePack),
        |row| rmp_serde::to_vec_named(row).expect("encode"),
        |bytes| rmp_serde::from_slice(bytes).ok(),
    )
}

// ---------------------------------------------------------------------------
// Stampede: many concurrent cold reads of one key, get_or_compute against the naive
// get → load → set.

/// Concurrent callers per stampede.
const STAMPEDE_CALLERS: usize = 1_000;
/// The simulated database query behind every load.
const STAMPEDE_LOAD: Duration = Duration::from_millis(20);

/// The loader: counts its run, "queries the database", answers row `id`.
async fn load_row(runs: Arc<AtomicUsize>, id: u64) -> Row {
    runs.fetch_add(1, SeqCst);
    tokio::time::sleep(STAMPEDE_LOAD).await;
    row_with_id(id)
}

/// Ours: one `get_or_compute`.
async fn read_through<C: Cache>(cache: C, key: Arc<str>, runs: Arc<AtomicUsize>, id: u64) -> bool {
    let got = cache
        .get_or_compute(&key, None, move || load_row(runs, id))
        .await;
    matches!(got, Ok(row) if row.id == id)
}

/// The baseline: the seed's pattern, `get`, and on a miss load and `set`.
async fn naive_read<C: Cache>(cache: C, key: Arc<str>, runs: Arc<AtomicUsize>, id: u64) -> bool {
    match cache.get::<Row>(&key).await {
        Ok(Some(row)) => row.id == id,
        Ok(None) => {
            let row = load_row(runs, id).await;
            cache.set(&key, row, None).await.is_ok()
        }
        Err(_) => false,
    }
}

/// One stampede: [`STAMPEDE_CALLERS`] tasks spawned at once, each timing its own
/// call; the round's time is until the last has its answer.
async fn stampede_round<Fut>(mut call: impl FnMut() -> Fut) -> Round
where
    Fut: Future<Output = bool> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..STAMPEDE_CALLERS)
        .map(|_| {
            let call = call();
            tokio::spawn(async move {
                let began = Instant::now();
                let ok = call.await;
                (ok, nanos(began.elapsed()))
            })
        })
        .collect();
    let mut round = Round {
        samples: Vec::with_capacity(STAMPEDE_CALLERS),
        ..Round::default()
    };
    for task in tasks {
        match task.await {
            Ok((true, ns)) => {
                round.ops += 1;
                round.samples.push(ns);
            }
            _ => round.errors += 1,
        }
    }
    round.elapsed = start.elapsed();
    round
}

/// Loader runs of the measured rounds (the first, the warm-up's, dropped).
fn measured_runs(mut runs: Vec<usize>) -> Vec<usize> {
    runs.remove(0);
    runs
}

/// `3`, or `2–3` when the rounds differ.
fn span(runs: &[usize]) -> String {
    let (lo, hi) = (runs.iter().min(), runs.iter().max());
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo != hi => format!("{lo}–{hi}"),
        (Some(lo), _) => lo.to_string(),
        _ => "-".into(),
    }
}

/// Median of the rounds' times, in ms.
fn median_ms(rounds: &[Round]) -> f64 {
    round_to(
        median(
            rounds
                .iter()
                .map(|r| r.elapsed.as_secs_f64() * 1e3)
                .collect(),
        ),
        3,
    )
}

fn stampede(env: &Env) -> Result<Measured> {
    let (cache, hybrid) = env
        .rt
        .block_on(async { Ok::<_, Error>((env.distributed().await?, env.hybrid().await?)) })?;
    let runs = Arc::new(AtomicUsize::new(0));
    // A fresh key (and row id) for every stampede.
    let counter = Cell::new(0u64);
    let fresh = |side: &str| {
        let n = counter.get() + 1;
        counter.set(n);
        (Arc::<str>::from(format!("stampede:{side}:{n}")), n)
    };
    let (mut ours_runs, mut hybrid_runs, mut base_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut hybrid_rounds = Vec::new();
    // Stampedes after which the key did not hold the loaded row.
    let (mut not_stored, mut base_not_stored) = (0u64, 0u64);
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            let (key, id) = fresh("l2");
            let round = env.rt.block_on(stampede_round(|| {
                read_through(cache.clone(), Arc::clone(&key), Arc::clone(&runs), id)
            }));
            ours_runs.push(runs.swap(0, SeqCst));
            let stored = env.rt.block_on(cache.get::<Row>(&key));
            not_stored += u64::from(!matches!(stored, Ok(Some(r)) if r.id == id));
            // The same through a HybridCache (its own key), right after.
            let (key, id) = fresh("hybrid");
            hybrid_rounds.push(env.rt.block_on(stampede_round(|| {
                read_through(hybrid.clone(), Arc::clone(&key), Arc::clone(&runs), id)
            })));
            hybrid_runs.push(runs.swap(0, SeqCst));
            let stored = env.rt.block_on(hybrid.l2().get::<Row>(&key));
            not_stored += u64::from(!matches!(stored, Ok(Some(r)) if r.id == id));
            round
        },
        || {
            let (key, id) = fresh("naive");
            let round = env.rt.block_on(stampede_round(|| {
                naive_read(cache.clone(), Arc::clone(&key), Arc::clone(&runs), id)
            }));
            base_runs.push(runs.swap(0, SeqCst));
            let stored = env.rt.block_on(cache.get::<Row>(&key));
            base_not_stored += u64::from(!matches!(stored, Ok(Some(r)) if r.id == id));
            round
        },
    );
    env.rt.block_on(async {
        hybrid.close().await?;
        cache.close().await
    })?;
    let (ours_runs, hybrid_runs, base_runs) = (
        measured_runs(ours_runs),
        measured_runs(hybrid_runs),
        measured_runs(base_runs),
    );
    hybrid_rounds.remove(0);
    let ratios = ours_runs
        .iter()
        .zip(&base_runs)
        .map(|(&o, &b)| b as f64 / o.max(1) as f64)
        .collect();
    let throughput_ratio = median(
        ours.iter()
            .zip(&baseline)
            .map(|(a, b)| {
                (a.ops as f64 / a.elapsed.as_secs_f64()) / (b.ops as f64 / b.elapsed.as_secs_f64())
            })
            .collect(),
    );
    let mut hybrid_samples: Vec<u64> = hybrid_rounds
        .iter()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    hybrid_samples.sort_unstable();
    let hybrid_ops: u64 = hybrid_rounds.iter().map(|r| r.ops).sum();
    let hybrid_elapsed: Duration = hybrid_rounds.iter().map(|r| r.elapsed).sum();
    let single_flight = ours_runs.iter().chain(&hybrid_runs).all(|&n| n == 1) && not_stored == 0;
    let total = |runs: &[usize]| runs.iter().sum::<usize>();
    Ok(Measured {
        ratio_definition: Some(
            "median over round pairs of baseline loader runs / ours loader runs per stampede \
             (1,000 concurrent cold calls of one fresh key); higher is better (ideal: 1,000)",
        ),
        ratios: Some(ratios),
        notes: vec![
            format!(
                "loader runs/round {} (hybrid {}, baseline {})",
                span(&ours_runs),
                span(&hybrid_runs),
                span(&base_runs)
            ),
            format!(
                "all done in {} ms (baseline {} ms)",
                median_ms(&ours),
                median_ms(&baseline)
            ),
        ],
        extras: vec![
            (
                "ours",
                json!(
                    "DistributedCache::get_or_compute(key, None, loader) from 1,000 tokio tasks \
                     on the 2-worker runtime, one fresh cold key per round"
                ),
            ),
            (
                "loader",
                json!(format!(
                    "fetch_add on an AtomicUsize, then tokio::time::sleep({STAMPEDE_LOAD:?})"
                )),
            ),
            ("callers", json!(STAMPEDE_CALLERS)),
            (
                "ops_definition",
                json!(
                    "completed calls; ops_per_sec = 1,000 / time until the last of a round's \
                     calls returned; p50/p99 = per-call latency from the task's start"
                ),
            ),
            ("loader_runs", json!(total(&ours_runs))),
            ("loader_runs_per_round", json!(ours_runs)),
            ("baseline_loader_runs", json!(total(&base_runs))),
            ("baseline_loader_runs_per_round", json!(base_runs)),
            ("single_flight_held", json!(single_flight)),
            ("not_stored", json!(not_stored)),
            ("baseline_not_stored", json!(base_not_stored)),
            ("all_done_ms", json!(median_ms(&ours))),
            ("baseline_all_done_ms", json!(median_ms(&baseline))),
            ("throughput_ratio", json!(round_to(throughput_ratio, 3))),
            (
                "hybrid",
                json!("the same stampede through a coherent HybridCache, right after ours"),
            ),
            ("hybrid_loader_runs", json!(total(&hybrid_runs))),
            ("hybrid_loader_runs_per_round", json!(hybrid_runs)),
            (
                "hybrid_ops_per_sec",
                json!(round_to(
                    hybrid_ops as f64 / hybrid_elapsed.as_secs_f64(),
                    1
                )),
            ),
            ("hybrid_p50_us", json!(percentile_us(&hybrid_samples, 0.50))),
            ("hybrid_p99_us", json!(percentile_us(&hybrid_samples, 0.99))),
            ("hybrid_all_done_ms", json!(median_ms(&hybrid_rounds))),
            (
                "hybrid_errors",
                json!(hybrid_rounds.iter().map(|r| r.errors).sum::<u64>()),
            ),
        ],
        ours,
        baseline,
        ..Measured::default()
    })
}

// ---------------------------------------------------------------------------
// Tag invalidation against a pattern clear of an equal group, at two keyspace sizes.

/// Keys in the invalidated group (each side has its own copy).
const GROUP_KEYS: u64 = 10_000;
/// Unrelated keys around the group: first measurement, then second.
const UNRELATED_SMALL: u64 = 10_000;
const UNRELATED_LARGE: u64 = 1_000_000;
/// Keys per `set_many` (one pipeline) when writing the baseline's group: more
/// than this from several tasks can exceed the cache's 250 ms call timeout.
const WRITE_BATCH: u64 = 1_000;
/// Concurrent `set_many` tasks when writing the baseline's group.
const WRITERS: u64 = 4;
/// `SET`s per raw pipeline when populating the unrelated keys.
const RAW_BATCH: u64 = 5_000;
/// Concurrent raw writers when populating the unrelated keys.
const RAW_WRITERS: u64 = 2;
/// Keys read back to check an invalidation (spread over the range).
const VERIFY_SAMPLE: u64 = 100;
/// Keys per `UNLINK` when removing what the scenario wrote.
const UNLINK_BATCH: usize = 1_000;
const TAG: &str = "grp";
const GROUP_PATTERN: &str = "grp:*";

fn unrelated_key(i: u64) -> String {
    format!("u:{i}")
}

fn tagged_key(i: u64) -> String {
    format!("tagged:{i}")
}

/// The baseline's untagged copy of the group, matched by [`GROUP_PATTERN`].
fn pattern_key(i: u64) -> String {
    format!("grp:{i}")
}

/// Writes `name(i) = i` for every `i` in `range` through the cache's `set_many`, in
/// batches of [`WRITE_BATCH`], from [`WRITERS`] tasks.
async fn write_plain(
    cache: &DistributedCache,
    name: fn(u64) -> String,
    range: Range<u64>,
) -> Result<()> {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let cache = cache.clone();
            let range = range.clone();
            tokio::spawn(async move {
                let mut start = range.start + w * WRITE_BATCH;
                while start < range.end {
                    let end = (start + WRITE_BATCH).min(range.end);
                    let entries: Vec<(String, u64)> = (start..end).map(|i| (name(i), i)).collect();
                    cache.set_many(entries, None).await?;
                    start += WRITERS * WRITE_BATCH;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Writes `unrelated_key(i) = i` for every `i` in `range` as the cache would
/// (its encoding, its key, its default TTL) but in raw pipelines of [`RAW_BATCH`]
/// `SET … PX`, from [`RAW_WRITERS`] tasks: fast enough for a million keys.
async fn write_unrelated(
    cache: &DistributedCache,
    conn: &ConnectionManager,
    range: Range<u64>,
) -> Result<()> {
    let ttl_ms = u64::try_from(cache.default_ttl().as_millis())?;
    let tasks: Vec<_> = (0..RAW_WRITERS)
        .map(|w| {
            let (cache, mut conn, range) = (cache.clone(), conn.clone(), range.clone());
            let encoding = cache.encoding();
            tokio::spawn(async move {
                let mut start = range.start + w * RAW_BATCH;
                while start < range.end {
                    let mut pipe = redis::pipe();
                    for i in start..(start + RAW_BATCH).min(range.end) {
                        pipe.cmd("SET")
                            .arg(cache.redis_key(&unrelated_key(i)))
                            .arg(encoding.encode(&i)?)
                            .arg("PX")
                            .arg(ttl_ms)
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await?;
                    start += RAW_WRITERS * RAW_BATCH;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Writes `tagged_key(i) = i` tagged [`TAG`] for the whole group, from [`TASKS`]
/// tasks (`set_with_tags` takes two round trips).
async fn write_tagged(cache: &DistributedCache) -> Result<()> {
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for i in (t..GROUP_KEYS).step_by(TASKS) {
                    cache.set_with_tags(&tagged_key(i), i, None, &[TAG]).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// How many of [`VERIFY_SAMPLE`] keys `name(i)`, spread over `0..n` (first and
/// last included), read back as `i`.
async fn sample_hits(cache: &DistributedCache, name: fn(u64) -> String, n: u64) -> Result<u64> {
    let ids: Vec<u64> = (0..VERIFY_SAMPLE)
        .map(|s| s * (n - 1) / (VERIFY_SAMPLE - 1))
        .collect();
    let keys: Vec<String> = ids.iter().map(|&i| name(i)).collect();
    let got = cache.get_many::<u64, _>(&keys).await?;
    Ok(ids
        .iter()
        .zip(got)
        .filter(|(i, v)| v.as_deref() == Some(*i))
        .count() as u64)
}

/// Checks that the sample of the group read back fully `before` and not at all
/// `after` the invalidation, and that the unrelated keys all did after it.
fn check_invalidation(side: &str, before: u64, after: u64, unrelated: u64) -> Result<()> {
    if before != VERIFY_SAMPLE || after != 0 || unrelated != VERIFY_SAMPLE {
        return Err(format!(
            "{side}: of {VERIFY_SAMPLE} sampled keys, {before} group keys hit before the \
             invalidation, {after} after it, and {unrelated} unrelated keys after it \
             (want {VERIFY_SAMPLE}, 0, {VERIFY_SAMPLE})"
        )
        .into());
    }
    Ok(())
}

/// One round of ours: tag the group anew, then time `invalidate_tag`.
async fn tag_round(cache: &DistributedCache, unrelated: u64) -> Result<(Round, Duration)> {
    let writing = Instant::now();
    write_tagged(cache).await?;
    let written_in = writing.elapsed();
    let before = sample_hits(cache, tagged_key, GROUP_KEYS).await?;
    let start = Instant::now();
    cache.invalidate_tag(TAG).await?;
    let elapsed = start.elapsed();
    let after = sample_hits(cache, tagged_key, GROUP_KEYS).await?;
    let unrelated = sample_hits(cache, unrelated_key, unrelated).await?;
    check_invalidation("invalidate_tag", before, after, unrelated)?;
    let round = Round {
        ops: GROUP_KEYS,
        errors: 0,
        elapsed,
        samples: vec![nanos(elapsed)],
    };
    Ok((round, written_in))
}

/// One round of the baseline: write the untagged copy, then time `clear_pattern`;
/// also the keyspace it scanned (`DBSIZE` just before).
async fn pattern_round(
    cache: &DistributedCache,
    mut conn: ConnectionManager,
    unrelated: u64,
) -> Result<(Round, u64)> {
    write_plain(cache, pattern_key, 0..GROUP_KEYS).await?;
    let before = sample_hits(cache, pattern_key, GROUP_KEYS).await?;
    let keyspace: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let start = Instant::now();
    let removed = cache.clear_pattern(GROUP_PATTERN).await?;
    let elapsed = start.elapsed();
    let after = sample_hits(cache, pattern_key, GROUP_KEYS).await?;
    let unrelated = sample_hits(cache, unrelated_key, unrelated).await?;
    check_invalidation("clear_pattern", before, after, unrelated)?;
    if removed != GROUP_KEYS {
        return Err(format!("clear_pattern removed {removed} keys, not {GROUP_KEYS}").into());
    }
    let round = Round {
        ops: removed,
        errors: 0,
        elapsed,
        samples: vec![nanos(elapsed)],
    };
    Ok((round, keyspace))
}

/// Removes every key the scenario wrote, by name (`UNLINK`s of [`UNLINK_BATCH`]
/// keys, 16 to a pipeline); the number removed. The tag's token, a reserved key,
/// is left to the harness's cleanup of the prefix.
async fn unlink_written(cache: &DistributedCache, conn: &mut ConnectionManager) -> Result<u64> {
    let names = (0..UNRELATED_LARGE)
        .map(unrelated_key)
        .chain((0..GROUP_KEYS).map(tagged_key))
        .chain((0..GROUP_KEYS).map(pattern_key));
    let keys: Vec<String> = names.map(|k| cache.redis_key(&k)).collect();
    let mut removed = 0u64;
    for group in keys.chunks(UNLINK_BATCH * 16) {
        let mut pipe = redis::pipe();
        for batch in group.chunks(UNLINK_BATCH) {
            pipe.cmd("UNLINK").arg(batch);
        }
        let counts: Vec<u64> = pipe.query_async(conn).await?;
        removed += counts.iter().sum::<u64>();
    }
    Ok(removed)
}

/// Phase results of `tag_vs_pattern`.
#[derive(Debug)]
struct TagPhase {
    tag: Vec<Round>,
    pattern: Vec<Round>,
    /// `DBSIZE` just before the baseline's pattern clears (the largest seen).
    dbsize: u64,
    /// Time to populate the phase's unrelated keys.
    populate: Duration,
    /// Time to write the tagged group, per measured round.
    tag_writes: Vec<Duration>,
}

/// Populates the unrelated keys up to `unrelated`, then measures alternating rounds.
fn tag_phase(
    env: &Env,
    cache: &DistributedCache,
    conn: &ConnectionManager,
    unrelated: Range<u64>,
) -> Result<TagPhase> {
    let size = unrelated.end;
    let populating = Instant::now();
    env.rt.block_on(write_unrelated(cache, conn, unrelated))?;
    let populate = populating.elapsed();
    let mut dbsize = 0u64;
    // A failed round ends the phase with its error once the rounds are done.
    let mut failure: Option<Error> = None;
    let mut tag_writes = Vec::new();
    let (tag, pattern) = {
        let failure = std::cell::RefCell::new(&mut failure);
        let keep = |r: Result<Round>| {
            r.unwrap_or_else(|e| {
                failure.borrow_mut().get_or_insert(e);
                Round {
                    errors: 1,
                    ..Round::default()
                }
            })
        };
        alternate(
            ROUNDS,
            || {
                keep(env.rt.block_on(tag_round(cache, size)).map(|(round, w)| {
                    tag_writes.push(w);
                    round
                }))
            },
            || {
                keep(
                    env.rt
                        .block_on(pattern_round(cache, conn.clone(), size))
                        .map(|(round, keys)| {
                            dbsize = dbsize.max(keys);
                            round
                        }),
                )
            },
        )
    };
    if let Some(e) = failure {
        return Err(e);
    }
    tag_writes.remove(0);
    Ok(TagPhase {
        tag,
        pattern,
        dbsize,
        populate,
        tag_writes,
    })
}

fn tag_vs_pattern(env: &Env) -> Result<Measured> {
    let (cache, mut conn) = env.rt.block_on(async {
        Ok::<_, Error>((env.distributed().await?, env.raw_connection().await?))
    })?;
    let phases = tag_phase(env, &cache, &conn, 0..UNRELATED_SMALL).and_then(|small| {
        let large = tag_phase(env, &cache, &conn, UNRELATED_SMALL..UNRELATED_LARGE)?;
        Ok((small, large))
    });
    // Whatever happened: remove the million keys before the next scenario.
    let removing = Instant::now();
    let removed = env.rt.block_on(unlink_written(&cache, &mut conn));
    let removed_in = removing.elapsed();
    env.rt.block_on(cache.close())?;
    let (small, large) = phases?;
    let removed = removed?;

    let pair_ratio = |p: &TagPhase| {
        round_to(
            median(
                p.tag
                    .iter()
                    .zip(&p.pattern)
                    .map(|(t, b)| b.elapsed.as_secs_f64() / t.elapsed.as_secs_f64())
                    .collect(),
            ),
            3,
        )
    };
    let (tag_small, tag_large) = (median_ms(&small.tag), median_ms(&large.tag));
    let (pattern_small, pattern_large) = (median_ms(&small.pattern), median_ms(&large.pattern));
    let tag_write_ms = median(
        large
            .tag_writes
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    Ok(Measured {
        ratio_definition: Some(
            "median over round pairs, at the large keyspace, of clear_pattern(\"grp:*\") time / \
             invalidate_tag(\"grp\") time, each invalidating 10,000 keys (equal ops, so also \
             ours ops/s / baseline ops/s); higher is better",
        ),
        notes: vec![
            format!("tag {tag_small}→{tag_large} ms, pattern {pattern_small}→{pattern_large} ms"),
            format!("keyspace {}→{}", small.dbsize, large.dbsize),
        ],
        extras: vec![
            (
                "ours",
                json!(
                    "DistributedCache::invalidate_tag(\"grp\") with 10,000 live entries written \
                     by set_with_tags(k, v, None, &[\"grp\"]): one SET of the tag's token; the \
                     entries become misses and stay in Redis until their TTL"
                ),
            ),
            (
                "baseline_how",
                json!(
                    "DistributedCache::clear_pattern(\"grp:*\") of an untagged copy of the 10,000 \
                     entries: SCAN of the whole keyspace (COUNT 1000) + UNLINK"
                ),
            ),
            (
                "ops_definition",
                json!(
                    "keys invalidated; one invalidation per round; p50/p99 = that call's time \
                     over the large-keyspace rounds (7 samples: p99 is the slowest)"
                ),
            ),
            ("group_keys", json!(GROUP_KEYS)),
            ("unrelated_keys_small", json!(UNRELATED_SMALL)),
            ("unrelated_keys_large", json!(UNRELATED_LARGE)),
            ("dbsize_at_clear_small", json!(small.dbsize)),
            ("dbsize_at_clear_large", json!(large.dbsize)),
            ("tag_ms", json!(tag_large)),
            ("pattern_ms", json!(pattern_large)),
            ("tag_ms_small", json!(tag_small)),
            ("tag_ms_large", json!(tag_large)),
            ("pattern_ms_small", json!(pattern_small)),
            ("pattern_ms_large", json!(pattern_large)),
            ("tag_growth", json!(round_to(tag_large / tag_small, 3))),
            (
                "pattern_growth",
                json!(round_to(pattern_large / pattern_small, 3)),
            ),
            ("ratio_small", json!(pair_ratio(&small))),
            ("ratio_large", json!(pair_ratio(&large))),
            (
                "verified",
                json!(format!(
                    "every round: {VERIFY_SAMPLE} sampled group keys hit before and miss after \
                     (get_many), {VERIFY_SAMPLE} sampled unrelated keys still hit, clear_pattern \
                     removed exactly {GROUP_KEYS}"
                )),
            ),
            ("tag_write_ms", json!(round_to(tag_write_ms, 1))),
            (
                "populate_s_small",
                json!(round_to(small.populate.as_secs_f64(), 2)),
            ),
            (
                "populate_s_large",
                json!(round_to(large.populate.as_secs_f64(), 2)),
            ),
            ("removed_keys", json!(removed)),
            ("remove_s", json!(round_to(removed_in.as_secs_f64(), 2))),
        ],
        ours: large.tag,
        baseline: large.pattern,
        ..Measured::default()
    })
}
