//! `l1_get_metrics`: a `QueryCache` hit whose metrics handles record into a
//! Prometheus recorder, against the same hit on a second cache whose handles were
//! registered with no recorder (no-ops), one thread.
//!
//! Both sides run the same binary, built with ormcache's `metrics` feature, so
//! the ratio is what recording costs a hit (`ormcache_hits_total` incremented on
//! a registered atomic counter). The baseline still pays what the feature adds
//! when nothing records (a `OnceLock` read and a branch on a no-op handle); what
//! that costs against a build without the feature is measured separately, with
//! `l1_get` built with and without it (README, "Metrics and tracing").

use std::hint::black_box;

use metrics_exporter_prometheus::PrometheusBuilder;
use ormcache::QueryCache;

use super::{Env, Result, Row, TTL, row, tight_pair};
use crate::stats::Measured;

pub(super) fn l1_get_metrics(_env: &Env) -> Result<Measured> {
    const KEY: &str = "row:1";
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let ours = QueryCache::new(10_000, TTL)?;
    // An L1 registers its handles at first use: under this recorder, without
    // installing it for the rest of the process (the other scenarios).
    metrics::with_local_recorder(&recorder, || ours.set_sync(KEY, row(), None))?;
    let silent = QueryCache::new(10_000, TTL)?;
    silent.set_sync(KEY, row(), None)?;

    let measured = tight_pair(
        || {
            black_box(ours.get_sync::<Row>(black_box(KEY)));
        },
        || {
            black_box(silent.get_sync::<Row>(black_box(KEY)));
        },
    );
    // The hits were recorded, every one of them.
    let hits = ours.get_stats_sync().hits;
    let recorded = recorded_hits(&handle.render());
    if recorded != Some(hits) || silent.get_stats_sync().misses != 0 {
        return Err(format!(
            "l1_get_metrics: {hits} hits, recorded {recorded:?} in ormcache_hits_total"
        )
        .into());
    }
    Ok(measured)
}

/// The value of `ormcache_hits_total{…level="l1"…}` in a Prometheus text page.
fn recorded_hits(page: &str) -> Option<u64> {
    page.lines()
        .find(|l| l.starts_with("ormcache_hits_total{") && l.contains("level=\"l1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}
