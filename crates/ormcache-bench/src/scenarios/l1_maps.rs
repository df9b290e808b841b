//! `l1_maps`: the concurrent maps an L1 can be built on, side by side in one run —
//! hits of moka sync, quick_cache, a sharded `RwLock<HashMap>` and `QueryCache`
//! itself, on 1 and 2 threads. Every raw map holds `Arc` values with their own
//! deadline, checked against the clock `QueryCache` reads on every hit.
//!
//! The row's `ours` is quick_cache on one thread, its baseline moka on one thread;
//! the `maps` field holds every candidate's figures.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant as StdInstant};

use ormcache::QueryCache;
use quanta::Instant;
use serde_json::{Value, json};

use super::{Env, L1_OPS, LATENCY_SAMPLES, ROUNDS, Result, Row, TTL, row_with_id};
use crate::stats::{Measured, Round, median, percentile_us, round_to, sample_each};

/// Keys held and read in turn by each thread (the second thread starts half-way).
const KEYS: usize = 1_000;
/// Capacity of every bounded map.
const CAPACITY: u64 = 10_000;

type Hasher = foldhash::fast::RandomState;
/// A value as a raw map holds it: the shared row and its deadline.
type Slot = (Arc<Row>, Instant);

/// A hit path under test: the value at `key` if its deadline has not passed.
pub(super) trait Candidate: Sync {
    fn get(&self, key: &str) -> Option<Arc<Row>>;
}

fn live(slot: Slot) -> Option<Arc<Row>> {
    (slot.1 > Instant::now()).then_some(slot.0)
}

/// moka's expiry of each entry at its own deadline (as the L1 configures it).
struct Deadline;

impl moka::Expiry<String, Slot> for Deadline {
    fn expire_after_create(&self, _: &String, v: &Slot, _: StdInstant) -> Option<Duration> {
        Some(v.1.saturating_duration_since(Instant::now()))
    }
}

struct Moka(moka::sync::Cache<String, Slot, Hasher>);

impl Candidate for Moka {
    fn get(&self, key: &str) -> Option<Arc<Row>> {
        self.0.get(key).and_then(live)
    }
}

struct Quick(quick_cache::sync::Cache<String, Slot, quick_cache::UnitWeighter, Hasher>);

impl Candidate for Quick {
    fn get(&self, key: &str) -> Option<Arc<Row>> {
        self.0.get(key).and_then(live)
    }
}

/// 16 `RwLock<HashMap>` shards: the hit path of a map with no eviction at all (a
/// floor for what a bounded map costs, not a candidate for the bounds).
struct Sharded(Box<[RwLock<HashMap<String, Slot, Hasher>>]>, Hasher);

impl Sharded {
    fn shard(&self, key: &str) -> &RwLock<HashMap<String, Slot, Hasher>> {
        use std::hash::BuildHasher;
        &self.0[(self.1.hash_one(key) as usize) % self.0.len()]
    }
}

impl Candidate for Sharded {
    fn get(&self, key: &str) -> Option<Arc<Row>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        let (value, deadline) = shard.get(key)?;
        (*deadline > Instant::now()).then(|| Arc::clone(value))
    }
}

struct Ours(QueryCache);

impl Candidate for Ours {
    fn get(&self, key: &str) -> Option<Arc<Row>> {
        self.0.get_sync::<Row>(key)
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("row:{i}")).collect()
}

/// The raw maps, each holding `keys` (`row:{i}` holds the row of id `i`).
pub(super) fn raw_maps(keys: &[String]) -> Vec<(&'static str, Box<dyn Candidate>)> {
    let deadline = Instant::now() + TTL;
    let slot = |i: usize| (Arc::new(row_with_id(i as u64)), deadline);
    let moka = moka::sync::Cache::builder()
        .max_capacity(CAPACITY)
        .expire_after(Deadline)
        .build_with_hasher(Hasher::default());
    let quick = quick_cache::sync::Cache::with(
        CAPACITY as usize,
        CAPACITY,
        quick_cache::UnitWeighter,
        Hasher::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    );
    let hasher = Hasher::default();
    let sharded = Sharded(
        (0..16)
            .map(|_| RwLock::new(HashMap::with_hasher(hasher.clone())))
            .collect(),
        hasher,
    );
    for (i, k) in keys.iter().enumerate() {
        moka.insert(k.clone(), slot(i));
        quick.insert(k.clone(), slot(i));
        sharded
            .shard(k)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k.clone(), slot(i));
    }
    vec![
        ("moka::sync::Cache", Box::new(Moka(moka))),
        ("quick_cache::sync::Cache", Box::new(Quick(quick))),
        ("sharded RwLock<HashMap> (unbounded)", Box::new(sharded)),
    ]
}

/// The raw maps and `QueryCache`, each holding `keys`.
fn candidates(keys: &[String]) -> Result<Vec<(&'static str, Box<dyn Candidate>)>> {
    let mut all = raw_maps(keys);
    let ours = QueryCache::new(CAPACITY, TTL)?;
    for (i, k) in keys.iter().enumerate() {
        ours.set_sync(k, row_with_id(i as u64), None)?;
    }
    all.push(("ormcache QueryCache::get_sync", Box::new(Ours(ours))));
    Ok(all)
}

/// `threads` threads each read `L1_OPS` keys in turn, started together; the round
/// is timed from the start to the last thread's end. A read that misses is an error.
fn round(map: &dyn Candidate, keys: &[String], threads: usize) -> Round {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut misses = 0u64;
                    let mut i = t * KEYS / 2;
                    barrier.wait();
                    for _ in 0..L1_OPS {
                        i = if i + 1 == KEYS { 0 } else { i + 1 };
                        misses += u64::from(black_box(map.get(black_box(&keys[i]))).is_none());
                    }
                    misses
                })
            })
            .collect();
        let start = StdInstant::now();
        barrier.wait();
        let misses: u64 = workers
            .into_iter()
            .map(|w| w.join().unwrap_or(L1_OPS))
            .sum();
        let elapsed = start.elapsed();
        let total = L1_OPS * threads as u64;
        Round {
            ops: total - misses,
            errors: misses,
            elapsed,
            samples: Vec::new(),
        }
    })
}

fn ops_per_sec(r: &Round) -> f64 {
    r.ops as f64 / r.elapsed.as_secs_f64()
}

pub(super) fn l1_maps(_env: &Env) -> Result<Measured> {
    let keys = keys();
    let maps = candidates(&keys)?;
    const THREADS: [usize; 2] = [1, 2];
    // rounds[map][threads]; one warm-up of each first, then the rounds interleave
    // every map and thread count, so that a noisy moment hits them all.
    let mut rounds: Vec<[Vec<Round>; 2]> = maps.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for (_, map) in &maps {
        for t in THREADS {
            round(map.as_ref(), &keys, t);
        }
    }
    for _ in 0..ROUNDS {
        for (m, (_, map)) in maps.iter().enumerate() {
            for (ti, t) in THREADS.into_iter().enumerate() {
                rounds[m][ti].push(round(map.as_ref(), &keys, t));
            }
        }
    }
    let mut latencies = Vec::new();
    for (_, map) in &maps {
        let mut i = 0;
        let mut lat = sample_each(LATENCY_SAMPLES, || {
            i = if i + 1 == KEYS { 0 } else { i + 1 };
            black_box(map.get(black_box(&keys[i])));
        });
        lat.sort_unstable();
        latencies.push(lat);
    }
    let mut table: Vec<Value> = Vec::new();
    let mut notes = Vec::new();
    for (m, (name, _)) in maps.iter().enumerate() {
        let lat = &latencies[m];
        let median_ops: Vec<f64> = rounds[m]
            .iter()
            .map(|r| median(r.iter().map(ops_per_sec).collect()))
            .collect();
        let errors: u64 = rounds[m].iter().flatten().map(|r| r.errors).sum();
        if errors != 0 {
            return Err(format!("l1_maps: {name} missed {errors} reads of live keys").into());
        }
        table.push(json!({
            "map": name,
            "ops_per_sec_1_thread": round_to(median_ops[0], 1),
            "ops_per_sec_2_threads": round_to(median_ops[1], 1),
            "scaling_2_threads": round_to(median_ops[1] / median_ops[0], 3),
            "p50_us": percentile_us(lat, 0.50),
            "p99_us": percentile_us(lat, 0.99),
        }));
        notes.push(format!(
            "{name}: {:.1}M/s 1t, {:.1}M/s 2t",
            median_ops[0] / 1e6,
            median_ops[1] / 1e6
        ));
    }
    // The row: quick_cache (index 1) against moka (index 0), one thread.
    let mut it = rounds.into_iter();
    let [moka_1, _] = it.next().ok_or("l1_maps: no moka rounds")?;
    let [quick_1, _] = it.next().ok_or("l1_maps: no quick_cache rounds")?;
    Ok(Measured {
        ours: quick_1,
        baseline: moka_1,
        ours_latency: Some(latencies[1].clone()),
        baseline_latency: Some(latencies[0].clone()),
        extras: vec![
            ("keys", json!(KEYS)),
            (
                "driver",
                json!("std threads, each reading the keys in turn; ops/s is the median of rounds"),
            ),
            ("maps", Value::Array(table)),
        ],
        notes,
        ..Measured::default()
    })
}
