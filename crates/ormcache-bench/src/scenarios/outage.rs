//! `outage`: calls with the circuit breaker open, against a `QueryCache` miss.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ormcache::{BreakerConfig, BreakerState, DistributedCache, ErrorKind, HybridCache, QueryCache};
use serde_json::json;

use super::{Env, Error, LATENCY_SAMPLES, ROUNDS, Result, Row, TTL, current_thread};
use crate::stats::{
    Measured, Round, alternate, percentile_us, sample_each_async, tight_loop_async,
};

/// Operations per round of `outage` (about a microsecond each).
const OUTAGE_OPS: u64 = 200_000;

pub(super) fn outage(env: &Env) -> Result<Measured> {
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
        let hybrid = HybridCache::new(QueryCache::new(10_000, TTL)?, l2.clone())?;
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
    let plain_miss = move || async move { q.get_sync::<Row>(black_box(MISSING)).is_none() };

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
