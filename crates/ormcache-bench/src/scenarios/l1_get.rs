//! `l1_get`: a `QueryCache` hit against a raw moka hit, one thread; the same hit on
//! the other raw maps of `l1_maps` (same key, same per-entry deadline check) is
//! measured in the same rounds, and `QueryCache` must reach 0.9× the fastest.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ormcache::QueryCache;
use serde_json::json;

use super::l1_maps::raw_maps;
use super::{Env, L1_OPS, LATENCY_SAMPLES, ROUNDS, Result, Row, TTL, row};
use crate::stats::{Measured, Round, median, round_to, sample_each, tight_loop};

/// Of the fastest raw map, what `QueryCache` must reach.
const GOAL_VS_FASTEST: f64 = 0.9;

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

fn per_sec(r: &Round) -> f64 {
    r.ops as f64 / r.elapsed.as_secs_f64()
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
    // moka (again, with the deadline in the value), quick_cache, sharded map.
    let others: Vec<_> = raw_maps(&[KEY.to_owned()]).into_iter().skip(1).collect();

    let mut ours_get = || {
        black_box(ours.get_sync::<Row>(black_box(KEY)));
    };
    let mut raw_get = || {
        black_box(raw.get(black_box(KEY)));
    };
    // Rounds in turn: ours, moka, then each other raw map; one warm-up of each.
    let (mut ours_rounds, mut baseline) = (Vec::new(), Vec::new());
    let mut other_rounds: Vec<Vec<Round>> = others.iter().map(|_| Vec::new()).collect();
    for i in 0..=ROUNDS {
        let a = tight_loop(L1_OPS, &mut ours_get);
        let b = tight_loop(L1_OPS, &mut raw_get);
        let rest: Vec<Round> = others
            .iter()
            .map(|(_, m)| {
                tight_loop(L1_OPS, || {
                    black_box(m.get(black_box(KEY)));
                })
            })
            .collect();
        if i > 0 {
            ours_rounds.push(a);
            baseline.push(b);
            for (o, r) in other_rounds.iter_mut().zip(rest) {
                o.push(r);
            }
        }
    }
    let ours_latency = sample_each(LATENCY_SAMPLES, &mut ours_get);
    let baseline_latency = sample_each(LATENCY_SAMPLES, &mut raw_get);

    let misses = ours.get_stats_sync().misses;
    if misses != 0 || raw.get(KEY).is_none() || others.iter().any(|(_, m)| m.get(KEY).is_none()) {
        return Err(format!("l1_get: the key was not a hit every time ({misses} misses)").into());
    }
    // Per raw map: the median over round pairs of ours ÷ it.
    let mut vs = Vec::new();
    let mut worst = f64::INFINITY;
    for ((name, _), rounds) in others.iter().zip(&other_rounds) {
        let r = round_to(
            median(
                ours_rounds
                    .iter()
                    .zip(rounds)
                    .map(|(a, b)| per_sec(a) / per_sec(b))
                    .collect(),
            ),
            3,
        );
        worst = worst.min(r);
        let ops = median(rounds.iter().map(per_sec).collect());
        vs.push(json!({ "map": name, "ops_per_sec": round_to(ops, 1), "ours_over_it": r }));
    }
    Ok(Measured {
        ours: ours_rounds,
        baseline,
        ours_latency: Some(ours_latency),
        baseline_latency: Some(baseline_latency),
        goal_also: Some(worst >= GOAL_VS_FASTEST),
        extras: vec![
            ("raw_maps", json!(vs)),
            ("ratio_vs_fastest_raw_map", json!(worst)),
            ("goal_vs_fastest_raw_map", json!(GOAL_VS_FASTEST)),
        ],
        notes: vec![format!(
            "vs fastest raw map (same deadline check): {worst:.2}"
        )],
        ..Measured::default()
    })
}
