//! `l1_get`: a `QueryCache` hit against a raw moka hit, one thread.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ormcache::QueryCache;

use super::{Env, L1_OPS, LATENCY_SAMPLES, ROUNDS, Result, Row, TTL, row};
use crate::stats::{Measured, alternate, sample_each, tight_loop};

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

pub(super) fn l1_get(_env: &Env) -> Result<Measured> {
    const KEY: &str = "row:1";
    let ours = QueryCache::new(10_000, TTL)?;
    ours.set_sync(KEY, row(), None)?;
    let raw: moka::sync::Cache<String, Arc<Row>> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .expire_after(FixedTtl(TTL))
        .build();
    raw.insert(KEY.to_owned(), Arc::new(row()));

    let mut ours_get = || {
        black_box(ours.get_sync::<Row>(black_box(KEY)));
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

    let misses = ours.get_stats_sync().misses;
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
