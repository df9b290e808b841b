//! `hybrid_confirmed_write`: A.set with a peer that must acknowledge, against A.set
//! whose invalidation is not confirmed.

use std::time::{Duration, Instant};

use ormcache::{DistributedCache, HybridCache};
use serde_json::json;

use super::{COHERENT_WAIT, CONFIRM_TIMEOUT, Env, Error, ROUNDS, Result, Row, row_with_id};
use crate::stats::{Measured, Round, alternate, nanos};

/// The key A writes and B reads.
const KEY: &str = "hybrid:confirm";

/// Sequential writes per round of `hybrid_confirmed_write`.
const CONFIRM_SAMPLES: usize = 300;

/// What one side of `hybrid_confirmed_write` saw.
#[derive(Debug)]
struct ConfirmPair {
    a: HybridCache,
    b: HybridCache,
    last_id: u64,
    /// B's read right after a write returned was not that write's value.
    stale_reads: u64,
}

impl ConfirmPair {
    /// Two instances on `prefix`, the writer knowing its peer, with `confirm`.
    async fn start(env: &Env, prefix: &str, confirm: Option<Duration>) -> Result<Self> {
        let url = env.redis_url()?;
        let l2 = || {
            DistributedCache::builder()
                .redis_url(url)
                .tls(env.tls())
                .key_prefix(prefix)
                .build()
        };
        let a = env.hybrid_over(l2().await?, confirm).await?;
        let b = env.hybrid_over(l2().await?, confirm).await?;
        // Warm up until B reads A's write: under the fleet protocol (the default) A
        // learns of B when B reads the key and registers as its holder, not from a
        // heartbeat, so there is no peer count to wait for.
        let deadline = Instant::now() + COHERENT_WAIT;
        for id in 1.. {
            a.set(KEY, row_with_id(id), None).await?;
            let read = b.get::<Row>(KEY).await?;
            if id > 2 && read.is_some_and(|row| row.id == id) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{prefix}: B never read A's write").into());
            }
        }
        Ok(Self {
            a,
            b,
            last_id: 1_000,
            stale_reads: 0,
        })
    }

    /// [`CONFIRM_SAMPLES`] writes through A, each timed; after each (untimed) B
    /// reads the key, so that it holds a copy the next write must evict.
    fn round(&mut self, rt: &tokio::runtime::Runtime) -> Round {
        rt.block_on(async {
            let mut round = Round {
                samples: Vec::with_capacity(CONFIRM_SAMPLES),
                ..Round::default()
            };
            let start = Instant::now();
            for _ in 0..CONFIRM_SAMPLES {
                self.last_id += 1;
                let issued = Instant::now();
                let written = self.a.set(KEY, row_with_id(self.last_id), None).await;
                round.samples.push(nanos(issued.elapsed()));
                if written.is_err() {
                    round.errors += 1;
                    continue;
                }
                round.ops += 1;
                let read = self.b.get::<Row>(KEY).await;
                if !matches!(&read, Ok(Some(row)) if row.id == self.last_id) {
                    self.stale_reads += 1;
                }
            }
            round.elapsed = start.elapsed();
            round
        })
    }

    async fn close(&self) -> Result<ormcache::CoherenceStats> {
        let stats = self.a.get_stats().await?.coherence;
        self.a.close().await?;
        self.b.close().await?;
        Ok(stats)
    }
}

pub(super) fn hybrid_confirmed_write(env: &Env) -> Result<Measured> {
    let (mut ours_pair, mut base_pair) = env.rt.block_on(async {
        // A prefix (so a channel) each: the two pairs do not hear each other or any
        // other scenario's instances.
        let ours = ConfirmPair::start(
            env,
            &format!("{}:confirmed", env.prefix),
            Some(CONFIRM_TIMEOUT),
        )
        .await?;
        let base = ConfirmPair::start(env, &format!("{}:unconfirmed", env.prefix), None).await?;
        Ok::<_, Error>((ours, base))
    })?;
    let (ours, baseline) = alternate(
        ROUNDS,
        || ours_pair.round(&env.rt),
        || base_pair.round(&env.rt),
    );
    let (a_stats, base_stats) = env
        .rt
        .block_on(async { Ok::<_, Error>((ours_pair.close().await?, base_pair.close().await?)) })?;
    Ok(Measured {
        ours,
        baseline,
        ratio_definition: Some(
            "median over round pairs of ours ops/s / baseline ops/s, both sequential \
             A.set of one ~200-byte row with one peer B; ours waits for B's \
             acknowledgement (confirm_invalidations(Some(1 s)), the default), baseline does \
             not (None): the inverse ratio of mean write latencies, 1.0 = confirmation is free",
        ),
        goal_also: Some(ours_pair.stale_reads == 0 && a_stats.unconfirmed == 0),
        notes: vec![format!(
            "stale reads by B right after the write: {} confirmed / {} unconfirmed",
            ours_pair.stale_reads, base_pair.stale_reads
        )],
        extras: vec![
            (
                "latency_definition",
                json!("A.set issued → returned (ours: includes B's acknowledgement)"),
            ),
            ("stale_reads", json!(ours_pair.stale_reads)),
            ("baseline_stale_reads", json!(base_pair.stale_reads)),
            ("confirmed", json!(a_stats.confirmed)),
            ("unconfirmed", json!(a_stats.unconfirmed)),
            ("baseline_confirmed", json!(base_stats.confirmed)),
        ],
        ..Measured::default()
    })
}
