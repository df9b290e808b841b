//! `dead_redis`: the first reads after Redis is killed (`SIGKILL`), against a local
//! miss.
//!
//! Each round starts a fresh `DistributedCache` (default settings: 250 ms command
//! timeout, breaker threshold 5) on a private `redis-server`, checks that a read
//! works, kills the server, then times the next [`READS`] read-through calls
//! (`get_or_compute` of distinct keys: the loader answers, the cache fails open),
//! one after the other, from the very first. The server is restarted between
//! rounds. The baseline is the same loop on a `QueryCache` (a miss, the loader,
//! the store). The goal is the issue's: p99 below 10 ms from the first request after
//! Redis dies (a refused connection is known at once; only a silent Redis may cost
//! the command timeout, until the breaker opens).

use std::time::{Duration, Instant};

use ormcache::{BreakerState, Cache, DistributedCache, QueryCache};
use ormcache_testing::RedisServer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Env, Result};
use crate::stats::{Measured, RatioOf, Round, alternate, median, nanos, percentile_us};

/// Rounds per side (after one warm-up round each).
const ROUNDS: usize = 7;
/// Reads timed per round, from the first after the kill.
const READS: u64 = 64;
/// TTL of what the baseline stores.
const TTL: Duration = Duration::from_secs(300);

/// A small row, as a database would return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
}

fn load(id: u64) -> Row {
    Row {
        id,
        name: format!("row {id}"),
    }
}

/// What one round against the killed server saw, besides its latencies.
#[derive(Debug, Default)]
struct Seen {
    /// Reads until the breaker was open (`None`: it never opened).
    reads_to_open: Option<u64>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// One round: a fresh cache, a kill, [`READS`] timed reads, a restart.
fn dead_round(
    rt: &tokio::runtime::Runtime,
    server: &RedisServer,
    prefix: &str,
) -> Result<(Round, Seen)> {
    let cache = rt.block_on(async {
        let cache = DistributedCache::builder()
            .redis_url(server.url())
            .key_prefix(prefix)
            .build()
            .await?;
        cache.set("warm", load(0), None).await?;
        if cache.get::<Row>("warm").await?.is_none() {
            return Err::<_, crate::scenarios::Error>("the warm-up read missed".into());
        }
        Ok(cache)
    })?;
    server.kill();
    let (round, seen) = rt.block_on(async {
        let mut round = Round::default();
        let mut seen = Seen::default();
        let start = Instant::now();
        for i in 0..READS {
            let t = Instant::now();
            let got = cache
                .get_or_compute(&format!("row:{i}"), None, || async move { load(i) })
                .await;
            round.samples.push(nanos(t.elapsed()));
            match got {
                Ok(row) if row.id == i => round.ops += 1,
                _ => round.errors += 1,
            }
            if seen.reads_to_open.is_none() && cache.breaker_state() != BreakerState::Closed {
                seen.reads_to_open = Some(i + 1);
            }
        }
        round.elapsed = start.elapsed();
        (round, seen)
    });
    // Its last stats flush cannot reach the dead server: that error is expected.
    let _ = rt.block_on(cache.close());
    drop(cache);
    server.restart();
    Ok((round, seen))
}

/// The baseline round: the same loop over a `QueryCache` (miss, load, store).
fn miss_round(rt: &tokio::runtime::Runtime, round_no: u64) -> Result<Round> {
    let cache = QueryCache::new(10_000, TTL)?;
    Ok(rt.block_on(async {
        let mut round = Round::default();
        let start = Instant::now();
        for i in 0..READS {
            let t = Instant::now();
            let got = cache
                .get_or_compute(
                    &format!("row:{round_no}:{i}"),
                    None,
                    || async move { load(i) },
                )
                .await;
            round.samples.push(nanos(t.elapsed()));
            match got {
                Ok(row) if row.id == i => round.ops += 1,
                _ => round.errors += 1,
            }
        }
        round.elapsed = start.elapsed();
        round
    }))
}

pub(super) fn dead_redis(env: &Env) -> Result<Measured> {
    let rt = runtime()?;
    let server = RedisServer::start();
    let mut seen = Vec::new();
    let mut failure = None;
    let mut baseline_no = 0u64;
    let (ours, baseline) = alternate(
        ROUNDS,
        || match dead_round(&rt, &server, &env.prefix) {
            Ok((round, s)) => {
                seen.push(s);
                round
            }
            Err(e) => {
                failure.get_or_insert(e);
                Round::default()
            }
        },
        || {
            baseline_no += 1;
            miss_round(&rt, baseline_no).unwrap_or_default()
        },
    );
    if let Some(e) = failure {
        return Err(format!("dead_redis: {e}").into());
    }
    // The warm-up round's `Seen` is not reported.
    let seen = &seen[1..];
    let opened: Vec<f64> = seen
        .iter()
        .filter_map(|s| s.reads_to_open.map(|n| n as f64))
        .collect();
    let mut first_reads: Vec<u64> = ours
        .iter()
        .filter_map(|r| r.samples.first().copied())
        .collect();
    first_reads.sort_unstable();
    let mut all: Vec<u64> = ours
        .iter()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    all.sort_unstable();
    let errors: u64 = ours.iter().map(|r| r.errors).sum();
    Ok(Measured {
        ours,
        baseline,
        ratio_of: RatioOf::InverseP99,
        ratio_definition: Some(
            "median over round pairs of baseline p99 (QueryCache miss + load + store) / ours \
             p99 (DistributedCache::get_or_compute, the first 64 reads after SIGKILL of \
             Redis): the cost of a dead Redis in local misses; higher is better",
        ),
        goal_also: Some(errors == 0 && opened.len() == seen.len()),
        notes: vec![format!(
            "first read after the kill p50 {} µs, max {} µs; breaker open after {} reads",
            percentile_us(&first_reads, 0.5),
            percentile_us(&first_reads, 1.0),
            median(opened.clone())
        )],
        extras: vec![
            (
                "ours",
                json!(format!(
                    "DistributedCache (defaults) get_or_compute of {READS} distinct keys, one \
                     after the other, from the first call after SIGKILL of its redis-server"
                )),
            ),
            ("first_read_p50_us", json!(percentile_us(&first_reads, 0.5))),
            ("first_read_max_us", json!(percentile_us(&first_reads, 1.0))),
            ("max_us", json!(percentile_us(&all, 1.0))),
            ("reads_to_open_median", json!(median(opened.clone()))),
            ("rounds_breaker_opened", json!(opened.len())),
        ],
        ..Measured::default()
    })
}
