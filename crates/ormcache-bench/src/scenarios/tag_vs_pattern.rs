//! `tag_vs_pattern`: tag invalidation against a pattern clear of an equal group, at
//! two keyspace sizes.

use std::ops::Range;
use std::time::{Duration, Instant};

use ormcache::DistributedCache;
use redis::aio::ConnectionManager;
use serde_json::json;

use super::{Env, Error, ROUNDS, Result, TASKS, median_ms};
use crate::stats::{Measured, Round, alternate, median, nanos, round_to};

/// Keys in the invalidated group (each side has its own copy).
const GROUP_KEYS: u64 = 10_000;
/// Unrelated keys around the group: first measurement, then second.
const UNRELATED_SMALL: u64 = 10_000;
const UNRELATED_LARGE: u64 = 1_000_000;
/// Keys per `set_many` (one pipeline) when writing the baseline's group: more
/// than this from several tasks can exceed the cache's 250 ms call timeout.
const WRITE_BATCH: u64 = 1_000;
/// Concurrent `set_many` tasks when writing the baseline's group.
const WRITERS: u64 = 4;
/// `SET`s per raw pipeline when populating the unrelated keys.
const RAW_BATCH: u64 = 5_000;
/// Concurrent raw writers when populating the unrelated keys.
const RAW_WRITERS: u64 = 2;
/// Keys read back to check an invalidation (spread over the range).
const VERIFY_SAMPLE: u64 = 100;
/// Keys per `UNLINK` when removing what the scenario wrote.
const UNLINK_BATCH: usize = 1_000;
const TAG: &str = "grp";
const GROUP_PATTERN: &str = "grp:*";

fn unrelated_key(i: u64) -> String {
    format!("u:{i}")
}

fn tagged_key(i: u64) -> String {
    format!("tagged:{i}")
}

/// The baseline's untagged copy of the group, matched by [`GROUP_PATTERN`].
fn pattern_key(i: u64) -> String {
    format!("grp:{i}")
}

/// Writes `name(i) = i` for every `i` in `range` through the cache's `set_many`, in
/// batches of [`WRITE_BATCH`], from [`WRITERS`] tasks.
async fn write_plain(
    cache: &DistributedCache,
    name: fn(u64) -> String,
    range: Range<u64>,
) -> Result<()> {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let cache = cache.clone();
            let range = range.clone();
            tokio::spawn(async move {
                let mut start = range.start + w * WRITE_BATCH;
                while start < range.end {
                    let end = (start + WRITE_BATCH).min(range.end);
                    let entries: Vec<(String, u64)> = (start..end).map(|i| (name(i), i)).collect();
                    cache.set_many(entries, None).await?;
                    start += WRITERS * WRITE_BATCH;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Writes `unrelated_key(i) = i` for every `i` in `range` as the cache would
/// (its encoding, its key, its default TTL) but in raw pipelines of [`RAW_BATCH`]
/// `SET … PX`, from [`RAW_WRITERS`] tasks: fast enough for a million keys.
async fn write_unrelated(
    cache: &DistributedCache,
    conn: &ConnectionManager,
    range: Range<u64>,
) -> Result<()> {
    let ttl_ms = u64::try_from(cache.default_ttl().as_millis())?;
    let tasks: Vec<_> = (0..RAW_WRITERS)
        .map(|w| {
            let (cache, mut conn, range) = (cache.clone(), conn.clone(), range.clone());
            let encoding = cache.encoding();
            tokio::spawn(async move {
                let mut start = range.start + w * RAW_BATCH;
                while start < range.end {
                    let mut pipe = redis::pipe();
                    for i in start..(start + RAW_BATCH).min(range.end) {
                        pipe.cmd("SET")
                            .arg(cache.redis_key(&unrelated_key(i)))
                            .arg(encoding.encode(&i)?)
                            .arg("PX")
                            .arg(ttl_ms)
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await?;
                    start += RAW_WRITERS * RAW_BATCH;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Writes `tagged_key(i) = i` tagged [`TAG`] for the whole group, from [`TASKS`]
/// tasks (`set_with_tags` takes two round trips).
async fn write_tagged(cache: &DistributedCache) -> Result<()> {
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for i in (t..GROUP_KEYS).step_by(TASKS) {
                    cache.set_with_tags(&tagged_key(i), i, None, &[TAG]).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// How many of [`VERIFY_SAMPLE`] keys `name(i)`, spread over `0..n` (first and
/// last included), read back as `i`.
async fn sample_hits(cache: &DistributedCache, name: fn(u64) -> String, n: u64) -> Result<u64> {
    let ids: Vec<u64> = (0..VERIFY_SAMPLE)
        .map(|s| s * (n - 1) / (VERIFY_SAMPLE - 1))
        .collect();
    let keys: Vec<String> = ids.iter().map(|&i| name(i)).collect();
    let got = cache.get_many::<u64, _>(&keys).await?;
    Ok(ids
        .iter()
        .zip(got)
        .filter(|(i, v)| v.as_deref() == Some(*i))
        .count() as u64)
}

/// Checks that the sample of the group read back fully `before` and not at all
/// `after` the invalidation, and that the unrelated keys all did after it.
fn check_invalidation(side: &str, before: u64, after: u64, unrelated: u64) -> Result<()> {
    if before != VERIFY_SAMPLE || after != 0 || unrelated != VERIFY_SAMPLE {
        return Err(format!(
            "{side}: of {VERIFY_SAMPLE} sampled keys, {before} group keys hit before the \
             invalidation, {after} after it, and {unrelated} unrelated keys after it \
             (want {VERIFY_SAMPLE}, 0, {VERIFY_SAMPLE})"
        )
        .into());
    }
    Ok(())
}

/// One round of ours: tag the group anew, then time `invalidate_tag`.
async fn tag_round(cache: &DistributedCache, unrelated: u64) -> Result<(Round, Duration)> {
    let writing = Instant::now();
    write_tagged(cache).await?;
    let written_in = writing.elapsed();
    let before = sample_hits(cache, tagged_key, GROUP_KEYS).await?;
    let start = Instant::now();
    cache.invalidate_tag(TAG).await?;
    let elapsed = start.elapsed();
    let after = sample_hits(cache, tagged_key, GROUP_KEYS).await?;
    let unrelated = sample_hits(cache, unrelated_key, unrelated).await?;
    check_invalidation("invalidate_tag", before, after, unrelated)?;
    let round = Round {
        ops: GROUP_KEYS,
        errors: 0,
        elapsed,
        samples: vec![nanos(elapsed)],
    };
    Ok((round, written_in))
}

/// One round of the baseline: write the untagged copy, then time `clear_pattern`;
/// also the keyspace it scanned (`DBSIZE` just before).
async fn pattern_round(
    cache: &DistributedCache,
    mut conn: ConnectionManager,
    unrelated: u64,
) -> Result<(Round, u64)> {
    write_plain(cache, pattern_key, 0..GROUP_KEYS).await?;
    let before = sample_hits(cache, pattern_key, GROUP_KEYS).await?;
    let keyspace: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let start = Instant::now();
    let removed = cache.clear_pattern(GROUP_PATTERN).await?;
    let elapsed = start.elapsed();
    let after = sample_hits(cache, pattern_key, GROUP_KEYS).await?;
    let unrelated = sample_hits(cache, unrelated_key, unrelated).await?;
    check_invalidation("clear_pattern", before, after, unrelated)?;
    if removed != GROUP_KEYS {
        return Err(format!("clear_pattern removed {removed} keys, not {GROUP_KEYS}").into());
    }
    let round = Round {
        ops: removed,
        errors: 0,
        elapsed,
        samples: vec![nanos(elapsed)],
    };
    Ok((round, keyspace))
}

/// Removes every key the scenario wrote, by name (`UNLINK`s of [`UNLINK_BATCH`]
/// keys, 16 to a pipeline); the number removed. The tag's token, a reserved key,
/// is left to the harness's cleanup of the prefix.
async fn unlink_written(cache: &DistributedCache, conn: &mut ConnectionManager) -> Result<u64> {
    let names = (0..UNRELATED_LARGE)
        .map(unrelated_key)
        .chain((0..GROUP_KEYS).map(tagged_key))
        .chain((0..GROUP_KEYS).map(pattern_key));
    let keys: Vec<String> = names.map(|k| cache.redis_key(&k)).collect();
    let mut removed = 0u64;
    for group in keys.chunks(UNLINK_BATCH * 16) {
        let mut pipe = redis::pipe();
        for batch in group.chunks(UNLINK_BATCH) {
            pipe.cmd("UNLINK").arg(batch);
        }
        let counts: Vec<u64> = pipe.query_async(conn).await?;
        removed += counts.iter().sum::<u64>();
    }
    Ok(removed)
}

/// Phase results of `tag_vs_pattern`.
#[derive(Debug)]
struct TagPhase {
    tag: Vec<Round>,
    pattern: Vec<Round>,
    /// `DBSIZE` just before the baseline's pattern clears (the largest seen).
    dbsize: u64,
    /// Time to populate the phase's unrelated keys.
    populate: Duration,
    /// Time to write the tagged group, per measured round.
    tag_writes: Vec<Duration>,
}

/// Populates the unrelated keys up to `unrelated`, then measures alternating rounds.
fn tag_phase(
    env: &Env,
    cache: &DistributedCache,
    conn: &ConnectionManager,
    unrelated: Range<u64>,
) -> Result<TagPhase> {
    let size = unrelated.end;
    let populating = Instant::now();
    env.rt.block_on(write_unrelated(cache, conn, unrelated))?;
    let populate = populating.elapsed();
    let mut dbsize = 0u64;
    // A failed round ends the phase with its error once the rounds are done.
    let mut failure: Option<Error> = None;
    let mut tag_writes = Vec::new();
    let (tag, pattern) = {
        let failure = std::cell::RefCell::new(&mut failure);
        let keep = |r: Result<Round>| {
            r.unwrap_or_else(|e| {
                failure.borrow_mut().get_or_insert(e);
                Round {
                    errors: 1,
                    ..Round::default()
                }
            })
        };
        alternate(
            ROUNDS,
            || {
                keep(env.rt.block_on(tag_round(cache, size)).map(|(round, w)| {
                    tag_writes.push(w);
                    round
                }))
            },
            || {
                keep(
                    env.rt
                        .block_on(pattern_round(cache, conn.clone(), size))
                        .map(|(round, keys)| {
                            dbsize = dbsize.max(keys);
                            round
                        }),
                )
            },
        )
    };
    if let Some(e) = failure {
        return Err(e);
    }
    tag_writes.remove(0);
    Ok(TagPhase {
        tag,
        pattern,
        dbsize,
        populate,
        tag_writes,
    })
}

pub(super) fn tag_vs_pattern(env: &Env) -> Result<Measured> {
    let (cache, mut conn) = env.rt.block_on(async {
        // The populating connection waits as long as its 5,000-`SET` pipelines take:
        // redis-rs' default 500 ms reply timeout failed them on a loaded machine.
        let populate = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
        let conn = env
            .raw_client()?
            .get_connection_manager_with_config(populate)
            .await?;
        Ok::<_, Error>((env.distributed().await?, conn))
    })?;
    let phases = tag_phase(env, &cache, &conn, 0..UNRELATED_SMALL).and_then(|small| {
        let large = tag_phase(env, &cache, &conn, UNRELATED_SMALL..UNRELATED_LARGE)?;
        Ok((small, large))
    });
    // Whatever happened: remove the million keys before the next scenario.
    let removing = Instant::now();
    let removed = env.rt.block_on(unlink_written(&cache, &mut conn));
    let removed_in = removing.elapsed();
    env.rt.block_on(cache.close())?;
    let (small, large) = phases?;
    let removed = removed?;

    let pair_ratio = |p: &TagPhase| {
        round_to(
            median(
                p.tag
                    .iter()
                    .zip(&p.pattern)
                    .map(|(t, b)| b.elapsed.as_secs_f64() / t.elapsed.as_secs_f64())
                    .collect(),
            ),
            3,
        )
    };
    let (tag_small, tag_large) = (median_ms(&small.tag), median_ms(&large.tag));
    let (pattern_small, pattern_large) = (median_ms(&small.pattern), median_ms(&large.pattern));
    let tag_write_ms = median(
        large
            .tag_writes
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    Ok(Measured {
        ratio_definition: Some(
            "median over round pairs, at the large keyspace, of clear_pattern(\"grp:*\") time / \
             invalidate_tag(\"grp\") time, each invalidating 10,000 keys (equal ops, so also \
             ours ops/s / baseline ops/s); higher is better",
        ),
        notes: vec![
            format!("tag {tag_small}→{tag_large} ms, pattern {pattern_small}→{pattern_large} ms"),
            format!("keyspace {}→{}", small.dbsize, large.dbsize),
        ],
        extras: vec![
            (
                "ours",
                json!(
                    "DistributedCache::invalidate_tag(\"grp\") with 10,000 live entries written \
                     by set_with_tags(k, v, None, &[\"grp\"]): one SET of the tag's token; the \
                     entries become misses and stay in Redis until their TTL"
                ),
            ),
            (
                "baseline_how",
                json!(
                    "DistributedCache::clear_pattern(\"grp:*\") of an untagged copy of the 10,000 \
                     entries: SCAN of the whole keyspace (COUNT 1000) + UNLINK"
                ),
            ),
            (
                "ops_definition",
                json!(
                    "keys invalidated; one invalidation per round; p50/p99 = that call's time \
                     over the large-keyspace rounds (7 samples: p99 is the slowest)"
                ),
            ),
            ("group_keys", json!(GROUP_KEYS)),
            ("unrelated_keys_small", json!(UNRELATED_SMALL)),
            ("unrelated_keys_large", json!(UNRELATED_LARGE)),
            ("dbsize_at_clear_small", json!(small.dbsize)),
            ("dbsize_at_clear_large", json!(large.dbsize)),
            ("tag_ms", json!(tag_large)),
            ("pattern_ms", json!(pattern_large)),
            ("tag_ms_small", json!(tag_small)),
            ("tag_ms_large", json!(tag_large)),
            ("pattern_ms_small", json!(pattern_small)),
            ("pattern_ms_large", json!(pattern_large)),
            ("tag_growth", json!(round_to(tag_large / tag_small, 3))),
            (
                "pattern_growth",
                json!(round_to(pattern_large / pattern_small, 3)),
            ),
            ("ratio_small", json!(pair_ratio(&small))),
            ("ratio_large", json!(pair_ratio(&large))),
            (
                "verified",
                json!(format!(
                    "every round: {VERIFY_SAMPLE} sampled group keys hit before and miss after \
                     (get_many), {VERIFY_SAMPLE} sampled unrelated keys still hit, clear_pattern \
                     removed exactly {GROUP_KEYS}"
                )),
            ),
            ("tag_write_ms", json!(round_to(tag_write_ms, 1))),
            (
                "populate_s_small",
                json!(round_to(small.populate.as_secs_f64(), 2)),
            ),
            (
                "populate_s_large",
                json!(round_to(large.populate.as_secs_f64(), 2)),
            ),
            ("removed_keys", json!(removed)),
            ("remove_s", json!(round_to(removed_in.as_secs_f64(), 2))),
        ],
        ours: large.tag,
        baseline: large.pattern,
        ..Measured::default()
    })
}
