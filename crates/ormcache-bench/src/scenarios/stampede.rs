//! `stampede`: many concurrent cold reads of one key, `get_or_compute` against the
//! naive get → load → set.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use ormcache::Cache;
use serde_json::json;

use super::{Env, Error, ROUNDS, Result, Row, median_ms, row_with_id};
use crate::stats::{Measured, Round, alternate, median, nanos, percentile_us, round_to};

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

pub(super) fn stampede(env: &Env) -> Result<Measured> {
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
