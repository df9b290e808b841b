//! `cached_hit`: a `#[cached]` hit against the same get written by hand, one
//! thread, same async loop.

use std::hint::black_box;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use ormcache::QueryCache;
use serde_json::json;

use super::{
    Env, LATENCY_SAMPLES, ROUNDS, ROW_ID, Result, Row, TTL, current_thread, row, row_with_id,
};
use crate::stats::{
    Measured, alternate, median, round_to, sample_each_async, tight_loop, tight_loop_async,
};

/// Operations per `cached_hit` round (a key hash, a get and a clone: about half a
/// microsecond each).
const CACHED_OPS: u64 = 500_000;

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
    cache.get_sync::<Row>(&key).map(|row| (*row).clone())
}

pub(super) fn cached_hit(_env: &Env) -> Result<Measured> {
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
    let misses = cache.get_stats_sync().misses;
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
