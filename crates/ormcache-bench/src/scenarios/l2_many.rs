//! `l2_get_many_100` and `l2_set_many_100`: keys per second of one
//! `DistributedCache::get_many` / `set_many` call of 100 keys against the same
//! keys through single `get` / `set` calls, 50 concurrent tasks each, decoding and
//! encoding included — on the run's Redis, then again on a private three-primary
//! Redis Cluster (its ratio is the row's `cluster_ratio`; both must meet the goal).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use ormcache::{DistributedCache, DistributedConfig};
use ormcache_testing::RedisCluster;
use serde_json::json;

use super::{Env, REDIS_ROUND, ROUNDS, Result, Row, TASKS, TTL, row_with_id};
use crate::stats::{Measured, Round, Worker, alternate, concurrent_round, median, round_to};

/// Keys per batch call.
const BATCH: usize = 100;
/// Measured rounds per side on the cluster (it starts its own servers: fewer).
const CLUSTER_ROUNDS: usize = 3;
/// The goal: batch keys/s ÷ single-call keys/s.
pub(super) const GOAL: f64 = 5.0;

fn key(i: usize) -> String {
    format!("many:{i}")
}

fn keys() -> Arc<[String]> {
    (0..BATCH).map(key).collect()
}

/// The row the key `many:{i}` holds.
fn expected(i: usize) -> Row {
    row_with_id(i as u64)
}

struct GetOne {
    cache: DistributedCache,
    keys: Arc<[String]>,
    next: usize,
}

impl Worker for GetOne {
    async fn op(&mut self) -> bool {
        let i = self.next;
        self.next = (i + 1) % BATCH;
        matches!(self.cache.get::<Row>(&self.keys[i]).await,
            Ok(Some(row)) if black_box(&row).id == i as u64)
    }
}

struct GetMany {
    cache: DistributedCache,
    keys: Arc<[String]>,
}

impl Worker for GetMany {
    async fn op(&mut self) -> bool {
        let Ok(rows) = self.cache.get_many::<Row, _>(&self.keys).await else {
            return false;
        };
        rows.len() == BATCH
            && rows
                .iter()
                .enumerate()
                .all(|(i, r)| matches!(r, Some(row) if black_box(row).id == i as u64))
    }
}

struct SetOne {
    cache: DistributedCache,
    keys: Arc<[String]>,
    rows: Arc<[Row]>,
    next: usize,
}

impl Worker for SetOne {
    async fn op(&mut self) -> bool {
        let i = self.next;
        self.next = (i + 1) % BATCH;
        self.cache
            .set_ref(&self.keys[i], &self.rows[i], None)
            .await
            .is_ok()
    }
}

struct SetMany {
    cache: DistributedCache,
    keys: Arc<[String]>,
    rows: Arc<[Row]>,
}

impl Worker for SetMany {
    async fn op(&mut self) -> bool {
        let entries: Vec<(&str, &Row)> = self
            .keys
            .iter()
            .map(String::as_str)
            .zip(self.rows.iter())
            .collect();
        self.cache.set_many(entries, None).await.is_ok()
    }
}

/// Which call the scenario measures.
#[derive(Clone, Copy)]
enum Call {
    Get,
    Set,
}

/// One round of 50 tasks, task `t` running `worker(t)`.
fn tasks<W: Worker>(env: &Env, worker: impl Fn(usize) -> W) -> Round {
    let workers = (0..TASKS).map(worker).collect();
    env.rt.block_on(concurrent_round(workers, REDIS_ROUND))
}

/// One round of 50 tasks: batches (each call counted as its 100 keys) or singles.
fn one_round(env: &Env, cache: &DistributedCache, call: Call, batch: bool) -> Round {
    let keys = keys();
    let rows: Arc<[Row]> = (0..BATCH).map(expected).collect();
    let (cache, keys, rows) = (cache.clone(), &keys, &rows);
    let mut round = match (call, batch) {
        (Call::Get, true) => tasks(env, |_| GetMany {
            cache: cache.clone(),
            keys: Arc::clone(keys),
        }),
        (Call::Get, false) => tasks(env, |t| GetOne {
            cache: cache.clone(),
            keys: Arc::clone(keys),
            next: t % BATCH,
        }),
        (Call::Set, true) => tasks(env, |_| SetMany {
            cache: cache.clone(),
            keys: Arc::clone(keys),
            rows: Arc::clone(rows),
        }),
        (Call::Set, false) => tasks(env, |t| SetOne {
            cache: cache.clone(),
            keys: Arc::clone(keys),
            rows: Arc::clone(rows),
            next: t % BATCH,
        }),
    };
    if batch {
        round.ops *= BATCH as u64;
    }
    round
}

/// Writes the 100 rows (for the reads) and checks they read back.
async fn seed(cache: &DistributedCache) -> Result<()> {
    let entries: Vec<(String, Row)> = (0..BATCH).map(|i| (key(i), expected(i))).collect();
    cache.set_many(entries, Some(TTL)).await?;
    let back = cache.get_many::<Row, _>(&keys()).await?;
    if back
        .iter()
        .enumerate()
        .any(|(i, r)| r.as_deref() != Some(&expected(i)))
    {
        return Err("l2_many: the seeded rows do not read back".into());
    }
    Ok(())
}

fn measure(env: &Env, cache: &DistributedCache, call: Call, rounds: usize) -> Result<Measured> {
    env.rt.block_on(seed(cache))?;
    let (ours, baseline) = alternate(
        rounds,
        || one_round(env, cache, call, true),
        || one_round(env, cache, call, false),
    );
    Ok(Measured {
        ours,
        baseline,
        ratio_definition: Some(
            "median over round pairs of batch keys/s ÷ single-call keys/s (ops_per_sec counts keys; p50/p99 are per call); higher is better",
        ),
        ..Measured::default()
    })
}

fn ratio(m: &Measured) -> f64 {
    let per_pair = m
        .ours
        .iter()
        .zip(&m.baseline)
        .map(|(a, b)| {
            (a.ops as f64 / a.elapsed.as_secs_f64()) / (b.ops as f64 / b.elapsed.as_secs_f64())
        })
        .collect();
    round_to(median(per_pair), 3)
}

fn keys_per_sec(rounds: &[Round]) -> f64 {
    let ops: u64 = rounds.iter().map(|r| r.ops).sum();
    let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    round_to(ops as f64 / secs, 1)
}

/// The same measurement on a private three-primary cluster.
fn on_cluster(env: &Env, call: Call) -> Result<Measured> {
    let cluster = RedisCluster::start();
    let cache = env.rt.block_on(DistributedCache::create(
        DistributedConfig::new()
            .cluster_nodes(cluster.urls())
            .key_prefix(&env.prefix)
            .default_ttl(TTL)
            .socket_timeout(Duration::from_secs(2)),
    ))?;
    let measured = measure(env, &cache, call, CLUSTER_ROUNDS);
    env.rt.block_on(cache.close())?;
    drop(cluster);
    measured
}

fn scenario(env: &Env, call: Call) -> Result<Measured> {
    let cache = env.rt.block_on(env.distributed())?;
    let mut m = measure(env, &cache, call, ROUNDS)?;
    env.rt.block_on(cache.close())?;
    let cluster = on_cluster(env, call)?;
    let cluster_ratio = ratio(&cluster);
    let errors: u64 = cluster
        .ours
        .iter()
        .chain(&cluster.baseline)
        .map(|r| r.errors)
        .sum();
    if errors != 0 {
        return Err(format!("l2_many: {errors} failed calls on the cluster").into());
    }
    m.goal_also = Some(cluster_ratio >= GOAL);
    m.extras = vec![
        ("batch", json!(BATCH)),
        ("tasks", json!(TASKS)),
        ("cluster_primaries", json!(3)),
        ("cluster_ratio", json!(cluster_ratio)),
        ("cluster_ops_per_sec", json!(keys_per_sec(&cluster.ours))),
        (
            "cluster_baseline_ops_per_sec",
            json!(keys_per_sec(&cluster.baseline)),
        ),
        ("cluster_rounds", json!(CLUSTER_ROUNDS)),
    ];
    m.notes = vec![format!("3-primary cluster: {cluster_ratio:.2}×")];
    Ok(m)
}

pub(super) fn l2_get_many_100(env: &Env) -> Result<Measured> {
    scenario(env, Call::Get)
}

pub(super) fn l2_set_many_100(env: &Env) -> Result<Measured> {
    scenario(env, Call::Set)
}
