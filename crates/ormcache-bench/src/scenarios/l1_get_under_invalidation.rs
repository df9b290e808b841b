//! `l1_get_under_invalidation`: `QueryCache` hits while another thread invalidates
//! 1,000 unrelated tags a second, against the same hits with no invalidation, one
//! reading thread; and the hit rate before and after 10,000 unrelated tag
//! invalidations.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use ormcache::QueryCache;
use serde_json::json;

use super::{
    Env, Error, L1_OPS, LATENCY_SAMPLES, ROUNDS, Result, Row, TTL, current_thread, row_with_id,
};
use crate::stats::{Measured, alternate, round_to, sample_each, tight_loop};

/// Tagged keys read in turn.
const KEYS: u64 = 1_000;
/// Invalidations per second while "ours" runs.
const INVALIDATIONS_PER_SEC: u64 = 1_000;
/// Unrelated tag invalidations before the hit rate is measured again.
const UNRELATED: u64 = 10_000;

fn key(i: u64) -> String {
    format!("row:{i}")
}

/// Invalidates a new unrelated tag every millisecond while `active`, from its own
/// thread (through the `Cache` form, as `EntityCache` does on every save); ends when
/// `stop` is set.
struct Invalidator {
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<Result<()>>>,
}

impl Invalidator {
    fn start(cache: &QueryCache) -> Self {
        let active = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (a, s, d, cache) = (
            Arc::clone(&active),
            Arc::clone(&stop),
            Arc::clone(&done),
            cache.clone(),
        );
        let period = Duration::from_secs(1) / INVALIDATIONS_PER_SEC as u32;
        let thread = thread::spawn(move || {
            let rt = current_thread()?;
            let mut next = Instant::now();
            while !s.load(SeqCst) {
                if !a.load(SeqCst) {
                    thread::sleep(Duration::from_micros(200));
                    next = Instant::now();
                    continue;
                }
                next += period;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let n = d.fetch_add(1, SeqCst);
                rt.block_on(ormcache::Cache::invalidate_tag(
                    &cache,
                    &format!("other:{n}"),
                ))?;
            }
            Ok(())
        });
        Self {
            active,
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, SeqCst);
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                Err("l1_get_under_invalidation: the invalidating thread panicked".into())
            }
            None => Ok(()),
        }
    }
}

/// The percentage of [`KEYS`] that read back as their row.
fn hit_rate(cache: &QueryCache) -> f64 {
    let hits = (0..KEYS)
        .filter(|&i| {
            cache
                .get_sync::<Row>(&key(i))
                .is_some_and(|r| *r == row_with_id(i))
        })
        .count();
    round_to(hits as f64 * 100.0 / KEYS as f64, 2)
}

pub(super) fn l1_get_under_invalidation(_env: &Env) -> Result<Measured> {
    let cache = QueryCache::new(10 * KEYS, TTL)?;
    for i in 0..KEYS {
        cache.set_with_tags_sync(&key(i), row_with_id(i), None, &["rows", &key(i)])?;
    }
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let next = Cell::new(0usize);
    let get = || {
        let i = next.get();
        next.set((i + 1) % keys.len());
        black_box(cache.get_sync::<Row>(black_box(&keys[i])));
    };

    let invalidator = Invalidator::start(&cache);
    let mut active_time = Duration::ZERO;
    let (ours, baseline) = alternate(
        ROUNDS,
        || {
            invalidator.active.store(true, SeqCst);
            let start = Instant::now();
            let round = tight_loop(L1_OPS, &get);
            active_time += start.elapsed();
            invalidator.active.store(false, SeqCst);
            round
        },
        || tight_loop(L1_OPS, &get),
    );
    let sent = invalidator.done.load(SeqCst);
    invalidator.active.store(true, SeqCst);
    let ours_latency = sample_each(LATENCY_SAMPLES, &get);
    invalidator.active.store(false, SeqCst);
    let baseline_latency = sample_each(LATENCY_SAMPLES, &get);
    invalidator.stop()?;
    let misses = cache.get_stats_sync().misses;

    let before = hit_rate(&cache);
    let rt = current_thread()?;
    rt.block_on(async {
        for n in 0..UNRELATED {
            ormcache::Cache::invalidate_tag(&cache, &format!("unrelated:{n}")).await?;
        }
        Ok::<_, Error>(())
    })?;
    let after = hit_rate(&cache);
    // A tag that is carried still voids its entries.
    cache.invalidate_tag_sync(&key(0))?;
    if cache.get_sync::<Row>(&key(0)).is_some() {
        return Err("l1_get_under_invalidation: an invalidated tag still hit".into());
    }

    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        ratio_definition: Some(
            "median over round pairs of hit ops/s while another thread invalidates 1,000 unrelated \
             tags/s / hit ops/s without; higher is better",
        ),
        goal_also: Some(misses == 0 && after == before),
        extras: vec![
            ("keys", json!(KEYS)),
            (
                "invalidations_per_sec",
                json!(round_to(
                    sent as f64 / active_time.as_secs_f64().max(1e-9),
                    0
                )),
            ),
            ("misses_during_rounds", json!(misses)),
            ("hit_rate_before_pct", json!(before)),
            ("hit_rate_after_10k_invalidations_pct", json!(after)),
        ],
        ..Measured::default()
    })
}
