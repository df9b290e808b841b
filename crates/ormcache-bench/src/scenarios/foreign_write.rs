//! `foreign_write`: two `HybridCache` instances hold a key in L1; a plain redis-rs
//! connection (another service, `redis-cli`) overwrites it with `SET`. Measured:
//! from just before the `SET` is issued until neither instance serves the old
//! value, [`Protocol::Fleet`] (Redis client tracking evicts the copies) against
//! [`Protocol::Broadcast`] (nothing evicts them: they live out `l1_max_ttl`).
//!
//! Both sides use `l1_max_ttl` = [`L1_MAX_TTL`]. Broadcast's rounds take that long
//! each, so it runs [`BROADCAST_ROUNDS`] of them; a Fleet round that has not seen
//! both copies gone within [`FLEET_CAP`] counts as "not evicted within" it, and
//! after [`GIVE_UP_AFTER`] such rounds in a row Fleet's side stops (the protocol
//! does not evict at all).

use std::time::{Duration, Instant};

use ormcache::{HybridCache, Protocol};
use redis::aio::ConnectionManager;
use serde_json::json;

use super::fleet_scaling::{instance, protocol_name};
use super::{Env, Result, Row, row_with_id};
use crate::stats::{Measured, Round, nanos, percentile_us};

/// `l1_max_ttl` of both sides.
const L1_MAX_TTL: Duration = Duration::from_secs(2);
/// Fleet's rounds.
const FLEET_ROUNDS: usize = 200;
/// Broadcast's rounds (each lasts up to `l1_max_ttl`).
const BROADCAST_ROUNDS: usize = 5;
/// A Fleet round that takes longer is "not evicted within" this.
const FLEET_CAP: Duration = Duration::from_secs(1);
/// A Broadcast round that takes longer is "not evicted within" this (beyond
/// `l1_max_ttl`: Broadcast's copies do go, when their L1 TTL ends).
const BROADCAST_CAP: Duration = Duration::from_secs(3);
/// Fleet's side stops after this many rounds in a row not evicted (or not held).
const GIVE_UP_AFTER: u64 = 5;
/// Pause between two polls (as in `hybrid_invalidation`: a spinning poller competes
/// with the subscriber task and redis-server for this machine's cores).
const POLL_SLEEP: Duration = Duration::from_micros(20);
/// TTL of the foreign `SET` (`PX`), like an ormcache write's.
const FOREIGN_TTL_MS: u64 = 300_000;

const KEY: &str = "foreign:k";

/// One side: two holders and the foreign writer.
struct Side {
    a: HybridCache,
    b: HybridCache,
    raw: ConnectionManager,
    /// The Redis key of [`KEY`] and two encoded rows (ids 1 and 2) to alternate.
    redis_key: String,
    encoded: [Vec<u8>; 2],
    /// The id the holders serve now.
    current: u64,
    samples: Vec<u64>,
    /// Rounds not evicted within the cap.
    not_evicted: u64,
    /// Rounds skipped because a holder could not take the key into L1.
    hold_failures: u64,
    rounds: u64,
}

impl Side {
    async fn start(env: &Env, p: Protocol) -> Result<Self> {
        let prefix = format!("{}:foreign-{}", env.prefix, protocol_name(p));
        let a = instance(env, &prefix, p, L1_MAX_TTL).await?;
        let b = instance(env, &prefix, p, L1_MAX_TTL).await?;
        let mut raw = env.raw_connection().await?;
        // The bytes ormcache stores for each row, read back raw.
        let mut encoded: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for (i, slot) in encoded.iter_mut().enumerate() {
            let scratch = format!("foreign:enc:{i}");
            a.l2()
                .set(&scratch, row_with_id(i as u64 + 1), None)
                .await?;
            *slot = redis::cmd("GET")
                .arg(a.l2().redis_key(&scratch))
                .query_async(&mut raw)
                .await?;
        }
        a.l2().set(KEY, row_with_id(1), None).await?;
        Ok(Self {
            redis_key: a.l2().redis_key(KEY),
            a,
            b,
            raw,
            encoded,
            current: 1,
            samples: Vec::new(),
            not_evicted: 0,
            hold_failures: 0,
            rounds: 0,
        })
    }

    /// Both instances read the key until it is in their L1 with the current value.
    async fn hold(&self) -> Result<bool> {
        for c in [&self.a, &self.b] {
            let mut held = false;
            for _ in 0..50 {
                let read = c.get::<Row>(KEY).await?;
                if matches!(&read, Some(row) if row.id == self.current) && c.l1().exists_sync(KEY) {
                    held = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if !held {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One round: hold, foreign `SET`, poll both until neither serves the old row.
    /// Whether the copies went within `cap` (a round whose holders could not take
    /// the current value, because an old copy is still there, did not).
    fn round(&mut self, env: &Env, cap: Duration) -> Result<bool> {
        self.rounds += 1;
        if !env.rt.block_on(self.hold())? {
            self.hold_failures += 1;
            return Ok(false);
        }
        let old = self.current;
        let new = 3 - old; // 1 ↔ 2
        let bytes = &self.encoded[(new - 1) as usize];
        let issued = Instant::now();
        let () = env.rt.block_on(
            redis::cmd("SET")
                .arg(&self.redis_key)
                .arg(bytes)
                .arg("PX")
                .arg(FOREIGN_TTL_MS)
                .query_async(&mut self.raw),
        )?;
        self.current = new;
        let serves_old = |c: &HybridCache| matches!(env.rt.block_on(c.get::<Row>(KEY)), Ok(Some(row)) if row.id == old);
        let (mut a_gone, mut b_gone) = (false, false);
        loop {
            a_gone = a_gone || !serves_old(&self.a);
            b_gone = b_gone || !serves_old(&self.b);
            if a_gone && b_gone {
                self.samples.push(nanos(issued.elapsed()));
                return Ok(true);
            }
            if issued.elapsed() > cap {
                self.not_evicted += 1;
                return Ok(false);
            }
            std::thread::sleep(POLL_SLEEP);
        }
    }

    /// Runs up to `rounds` rounds (stopping after [`GIVE_UP_AFTER`] misses in a row).
    fn run(&mut self, env: &Env, rounds: usize, cap: Duration) -> Result<Round> {
        let started = Instant::now();
        let mut missed_in_a_row = 0;
        for _ in 0..rounds {
            if self.round(env, cap)? {
                missed_in_a_row = 0;
            } else {
                missed_in_a_row += 1;
                if missed_in_a_row >= GIVE_UP_AFTER {
                    break;
                }
            }
        }
        let mut samples = self.samples.clone();
        samples.sort_unstable();
        Ok(Round {
            ops: samples.len() as u64,
            errors: self.not_evicted + self.hold_failures,
            elapsed: started.elapsed(),
            samples,
        })
    }

    /// Tracked evictions and deliveries of both instances; closes them.
    async fn close(&self) -> Result<(u64, u64)> {
        let (a, b) = (self.a.get_stats().await?, self.b.get_stats().await?);
        self.a.close().await?;
        self.b.close().await?;
        Ok((
            a.coherence.tracked_evictions + b.coherence.tracked_evictions,
            a.coherence.deliveries + b.coherence.deliveries,
        ))
    }
}

pub(super) fn foreign_write(env: &Env) -> Result<Measured> {
    let mut fleet = env.rt.block_on(Side::start(env, Protocol::Fleet))?;
    eprintln!("  foreign_write: fleet, up to {FLEET_ROUNDS} rounds");
    let ours = fleet.run(env, FLEET_ROUNDS, FLEET_CAP)?;
    let fleet_stats = env.rt.block_on(fleet.close())?;
    let mut broadcast = env.rt.block_on(Side::start(env, Protocol::Broadcast))?;
    eprintln!("  foreign_write: broadcast, {BROADCAST_ROUNDS} rounds (each up to l1_max_ttl)");
    let baseline = broadcast.run(env, BROADCAST_ROUNDS, BROADCAST_CAP)?;
    let broadcast_stats = env.rt.block_on(broadcast.close())?;

    let p99 = |r: &Round| percentile_us(&r.samples, 0.99);
    let ratio = p99(&baseline) / p99(&ours);
    let cap_ms = |cap: Duration| cap.as_millis();
    Ok(Measured {
        goal_also: Some(fleet.not_evicted == 0 && fleet.hold_failures == 0),
        notes: vec![
            format!(
                "fleet: not evicted within {} ms in {}/{} rounds, old copy still held at the \
                 start in {}",
                cap_ms(FLEET_CAP),
                fleet.not_evicted,
                fleet.rounds,
                fleet.hold_failures
            ),
            format!(
                "broadcast: not evicted within {} ms in {}/{} rounds (l1_max_ttl {} ms)",
                cap_ms(BROADCAST_CAP),
                broadcast.not_evicted,
                broadcast.rounds,
                L1_MAX_TTL.as_millis()
            ),
        ],
        ratios: Some(vec![ratio]),
        ratio_definition: Some(
            "Broadcast p99 / Fleet p99 of: foreign SET issued → neither holder's get serves \
             the old value (higher is better)",
        ),
        extras: vec![
            (
                "latency_definition",
                json!(
                    "just before a raw redis-rs SET key new PX 300000 is issued → both holders' \
                     get (polled, 20 µs sleep between polls) no longer answer the old row"
                ),
            ),
            ("l1_max_ttl_ms", json!(L1_MAX_TTL.as_millis())),
            ("rounds_run", json!(fleet.rounds)),
            ("baseline_rounds_run", json!(broadcast.rounds)),
            ("cap_ms", json!(cap_ms(FLEET_CAP))),
            ("baseline_cap_ms", json!(cap_ms(BROADCAST_CAP))),
            ("not_evicted_within_cap", json!(fleet.not_evicted)),
            (
                "baseline_not_evicted_within_cap",
                json!(broadcast.not_evicted),
            ),
            ("hold_failures", json!(fleet.hold_failures)),
            ("baseline_hold_failures", json!(broadcast.hold_failures)),
            ("tracked_evictions", json!(fleet_stats.0)),
            ("baseline_tracked_evictions", json!(broadcast_stats.0)),
            ("deliveries", json!(fleet_stats.1)),
            ("baseline_deliveries", json!(broadcast_stats.1)),
        ],
        ours: vec![ours],
        baseline: vec![baseline],
        ..Measured::default()
    })
}
