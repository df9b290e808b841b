//! `hybrid_l1_get`: a `HybridCache` L1 hit against a plain `QueryCache` hit, one
//! thread, same async loop.

use std::hint::black_box;
use std::time::Duration;

use ormcache::QueryCache;
use serde_json::json;

use super::{
    Env, Error, L1_OPS, LATENCY_SAMPLES, ROUNDS, ROW_ID, Result, Row, TTL, current_thread, row,
};
use crate::stats::{Measured, alternate, sample_each_async, tight_loop_async};

pub(super) fn hybrid_l1_get(env: &Env) -> Result<Measured> {
    const KEY: &str = "hybrid:l1";
    // Built inside the shared runtime, so that its subscriber and heartbeat keep
    // running on that runtime's workers while the loop below runs on this thread.
    let hybrid = env.rt.block_on(async {
        let cache = env.hybrid().await?;
        cache.set(KEY, row(), None).await?;
        // Under the fleet protocol the writer keeps no copy, and Redis reports the
        // write back to it: read (from L2, filling L1) until L1 holds the key and
        // keeps it.
        for _ in 0..100 {
            if cache.l1().exists_sync(KEY) {
                break;
            }
            cache.get::<Row>(KEY).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, Error>(cache)
    })?;
    if !hybrid.l1().exists_sync(KEY) {
        return Err("hybrid_l1_get: reads did not fill L1".into());
    }
    let misses_before = hybrid.l1().get_stats_sync().misses;
    let plain = QueryCache::new(10_000, TTL)?;
    plain.set_sync(KEY, row(), None)?;

    let rt = current_thread()?;
    let (h, q) = (&hybrid, &plain);
    let ours_get = move || async move {
        matches!(h.get::<Row>(black_box(KEY)).await, Ok(Some(row)) if black_box(&row).id == ROW_ID)
    };
    let plain_get = move || async move {
        matches!(q.get_sync::<Row>(black_box(KEY)), Some(row) if black_box(&row).id == ROW_ID)
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop_async(&rt, L1_OPS, ours_get),
        || tight_loop_async(&rt, L1_OPS, plain_get),
    );
    let ours_latency = sample_each_async(&rt, LATENCY_SAMPLES, ours_get);
    let baseline_latency = sample_each_async(&rt, LATENCY_SAMPLES, plain_get);

    // Every get must have been an L1 hit: no L1 miss, still coherent, no flush.
    let misses = hybrid.l1().get_stats_sync().misses - misses_before;
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
