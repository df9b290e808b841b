//! `hybrid_invalidation`: A's set → B's L1 copy evicted, against raw PUBLISH →
//! subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::json;

use super::{Env, Error, ROUNDS, Result, Row, row_with_id};
use crate::stats::{Measured, RatioOf, Round, alternate, nanos, percentile_us};

/// Invalidation samples per round of `hybrid_invalidation` (7 rounds: 2,100).
const INVALIDATION_SAMPLES: usize = 300;
/// Bound on one invalidation sample; a sample that takes longer is a timeout.
const INVALIDATION_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two checks of an eviction (the OS adds its timer slack, ~50 µs).
const POLL_SLEEP: Duration = Duration::from_micros(20);

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

pub(super) fn hybrid_invalidation(env: &Env) -> Result<Measured> {
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
            if !b.l1().exists_sync(KEY) {
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
            match poll_until(issued, || !b.l1().exists_sync(KEY)) {
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
                    "B.l1().exists_sync(k) seen false (baseline: the subscriber task has counted \
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
