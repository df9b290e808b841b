//! `fleet_scaling`: what coherence costs as the fleet grows, [`Protocol::Fleet`]
//! against [`Protocol::Broadcast`] in the same run, for 2, 8, 32 and 64
//! `HybridCache` instances (each its own `DistributedCache` and connections, all in
//! this process) on one Redis.
//!
//! Per fleet size and protocol, on a prefix of its own and with only that fleet
//! alive (so that `INFO` counts it alone):
//!
//! 1. **Idle**: Redis commands, `PUBLISH`es and pub/sub deliveries (the sum of every
//!    instance's `coherence.deliveries`) over [`IDLE`], per second.
//! 2. **Writes**: [`WRITES`] confirmed `set`s, each of its own key, which exactly
//!    two instances hold in L1 — the writer and the next instance (all the keys
//!    are read into both L1s before the first write). Per write: latency, Redis
//!    commands (`total_commands_processed` across the write only, from a separate
//!    connection); after each write, both holders read the key (a stale read is one
//!    not answering the value just written). Deliveries are summed over the whole
//!    batch of writes.
//! 3. **Fills**: [`FILLS`] read-through fills (`get_or_compute` of a missing key)
//!    through the instances in turn: commands across each, and [`FILL_SETTLE`]
//!    after it; `PUBLISH`es counted exactly on a `MONITOR` of the window, leaving
//!    out heartbeats (whatever a fill publishes, and the acknowledgements it draws,
//!    counts).
//!
//! The heartbeats keep running throughout, so every window also holds some idle
//! traffic: the `net` figures subtract the idle rate times the window's length
//! (the raw ones are reported too).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use ormcache::{Cache, DistributedCache, HybridCache, Protocol, QueryCache};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

use super::{COHERENT_WAIT, Env, Result, Row, TTL, row_with_id};
use crate::stats::{Measured, Round, nanos, percentile_us, round_to};

/// Fleet sizes, smallest first (the targets compare the largest with the smallest).
const SIZES: [usize; 4] = [2, 8, 32, 64];
/// Confirmed writes measured per fleet size and protocol.
const WRITES: usize = 200;
/// Writes before those, not measured (connections and tasks warm up).
const WARMUP: usize = 20;
/// Read-through fills measured per fleet size and protocol.
const FILLS: usize = 30;
/// How long a fill's window stays open after `get_or_compute` returned: a fill
/// does not wait for what its message sets off (Broadcast: every other instance's
/// acknowledgement), which belongs to its cost all the same.
const FILL_SETTLE: Duration = Duration::from_millis(10);
/// The idle window.
const IDLE: Duration = Duration::from_secs(2);
/// Let the fleet's hellos and first heartbeats pass before measuring.
const SETTLE: Duration = Duration::from_millis(600);
/// How long a Fleet instance may take to report its peers; Fleet's heartbeats go
/// to their sender only, so it may never report them, and its writes do not wait
/// for them (Broadcast's do: there, not hearing every peer is an error).
const FLEET_PEERS_WAIT: Duration = Duration::from_millis(1500);

/// Targets of issue 11, Fleet's figures at 64 instances against its own at 2.
const GOAL_COMMANDS_GROWTH: f64 = 1.5;
const GOAL_P99_GROWTH: f64 = 2.0;

/// A `HybridCache` under `prefix` with `protocol` and `l1_max_ttl`, the default
/// confirmation (1 s), coherent before it is returned.
pub(super) async fn instance(
    env: &Env,
    prefix: &str,
    protocol: Protocol,
    l1_max_ttl: Duration,
) -> Result<HybridCache> {
    let l2 = DistributedCache::builder()
        .redis_url(env.redis_url()?)
        .tls(env.tls())
        .key_prefix(prefix)
        .build()
        .await?;
    let cache = HybridCache::builder(QueryCache::new(10_000, TTL)?, l2)
        .l1_max_ttl(l1_max_ttl)
        .protocol(protocol)
        .build()?;
    if !cache.wait_coherent(COHERENT_WAIT).await {
        return Err(format!("{prefix}: HybridCache not coherent within {COHERENT_WAIT:?}").into());
    }
    Ok(cache)
}

pub(super) fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Broadcast => "broadcast",
        _ => "fleet",
    }
}

/// Server-wide counters read with one `INFO stats commandstats`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ServerCounts {
    pub(super) commands: u64,
    pub(super) publishes: u64,
}

impl ServerCounts {
    pub(super) async fn read(conn: &mut ConnectionManager) -> Result<Self> {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("commandstats")
            .query_async(conn)
            .await?;
        let mut counts = Self::default();
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                counts.commands = v.trim().parse()?;
            } else if let Some(v) = line.strip_prefix("cmdstat_publish:calls=") {
                counts.publishes = v.split(',').next().unwrap_or_default().parse()?;
            }
        }
        Ok(counts)
    }

    /// What happened between `self` and `later`, not counting the `INFO` that read
    /// `self` (counted by the time `later` is read).
    pub(super) fn until(self, later: Self) -> Self {
        Self {
            commands: later.commands.saturating_sub(self.commands + 1),
            publishes: later.publishes.saturating_sub(self.publishes),
        }
    }
}

/// Sum of `coherence.deliveries` over the fleet.
/// Counts, from now on, the `PUBLISH`es Redis runs (scripts' included) that are
/// not heartbeats (messages whose op is `"h"`), on a `MONITOR` connection of its
/// own; the task stops with the next line after the counter is dropped.
async fn monitor_publishes(env: &Env) -> Result<Arc<AtomicU64>> {
    let client = redis::Client::open(env.redis_url()?)?;
    let monitor = client.get_async_monitor().await?;
    let count = Arc::new(AtomicU64::new(0));
    let counted = Arc::downgrade(&count);
    tokio::spawn(async move {
        let mut lines = monitor.into_on_message::<String>();
        while let Some(line) = lines.next().await {
            let Some(count) = counted.upgrade() else {
                return;
            };
            let lower = line.to_ascii_lowercase();
            if lower.contains("] \"publish\"") && !line.contains(r#"\"o\":\"h\""#) {
                count.fetch_add(1, Relaxed);
            }
        }
    });
    Ok(count)
}

async fn deliveries(fleet: &[HybridCache]) -> Result<u64> {
    let mut sum = 0;
    for stats in join_all(fleet.iter().map(HybridCache::get_stats)).await {
        sum += stats?.coherence.deliveries;
    }
    Ok(sum)
}

/// Idle rates of one fleet, per second.
#[derive(Debug, Clone, Copy, Default)]
struct Idle {
    commands: f64,
    publishes: f64,
    deliveries: f64,
}

/// What one fleet size under one protocol measured.
#[derive(Debug)]
struct FleetRun {
    n: usize,
    protocol: Protocol,
    idle: Idle,
    /// Write latencies (ns), sorted.
    latencies: Vec<u64>,
    /// Wall time of the write batch (writes, their `INFO`s and the reads after).
    writes_elapsed: Duration,
    write_errors: u64,
    /// Writes measured (the latencies' count).
    writes: u64,
    /// Σ raw commands across the writes, and Σ of the windows' lengths.
    write_commands: u64,
    write_windows: Duration,
    /// Raw deliveries over the whole write batch.
    write_deliveries: u64,
    stale_reads: u64,
    /// A holder's read did not leave the key in its L1 before the writes.
    fill_failures: u64,
    fills: u64,
    fill_errors: u64,
    fill_commands: u64,
    fill_publishes: u64,
    /// Fills whose window saw at least one `PUBLISH`.
    fills_with_publish: u64,
    fill_windows: Duration,
    confirmed: u64,
    unconfirmed: u64,
    tracked_evictions: u64,
}

impl FleetRun {
    fn commands_per_write(&self) -> f64 {
        self.write_commands as f64 / self.writes.max(1) as f64
    }

    fn net_commands_per_write(&self) -> f64 {
        let noise = self.idle.commands * self.write_windows.as_secs_f64();
        (self.write_commands as f64 - noise).max(0.0) / self.writes.max(1) as f64
    }

    fn deliveries_per_write(&self) -> f64 {
        self.write_deliveries as f64 / self.writes.max(1) as f64
    }

    fn net_deliveries_per_write(&self) -> f64 {
        let noise = self.idle.deliveries * self.writes_elapsed.as_secs_f64();
        (self.write_deliveries as f64 - noise).max(0.0) / self.writes.max(1) as f64
    }

    fn publishes_per_fill(&self) -> f64 {
        self.fill_publishes as f64 / self.fills.max(1) as f64
    }

    /// Exact (heartbeats are left out on the `MONITOR`): the same as
    /// [`publishes_per_fill`](Self::publishes_per_fill).
    fn net_publishes_per_fill(&self) -> f64 {
        self.publishes_per_fill()
    }

    fn net_commands_per_fill(&self) -> f64 {
        let noise = self.idle.commands * self.fill_windows.as_secs_f64();
        (self.fill_commands as f64 - noise).max(0.0) / self.fills.max(1) as f64
    }

    fn p50_us(&self) -> f64 {
        percentile_us(&self.latencies, 0.50)
    }

    fn p99_us(&self) -> f64 {
        percentile_us(&self.latencies, 0.99)
    }

    fn round(&self) -> Round {
        Round {
            ops: self.writes,
            errors: self.write_errors,
            elapsed: self.writes_elapsed,
            samples: self.latencies.clone(),
        }
    }

    fn json(&self) -> Value {
        let r = |x: f64| round_to(x, 2);
        json!({
            "instances": self.n,
            "protocol": protocol_name(self.protocol),
            "write_p50_us": self.p50_us(),
            "write_p99_us": self.p99_us(),
            "writes": self.writes,
            "write_errors": self.write_errors,
            "commands_per_write": r(self.commands_per_write()),
            "net_commands_per_write": r(self.net_commands_per_write()),
            "deliveries_per_write": r(self.deliveries_per_write()),
            "net_deliveries_per_write": r(self.net_deliveries_per_write()),
            "stale_reads": self.stale_reads,
            "fill_failures": self.fill_failures,
            "fills": self.fills,
            "fill_errors": self.fill_errors,
            "publishes_per_fill": r(self.publishes_per_fill()),
            "net_publishes_per_fill": r(self.net_publishes_per_fill()),
            "fills_with_publish": self.fills_with_publish,
            "net_commands_per_fill": r(self.net_commands_per_fill()),
            "idle_commands_per_sec": r(self.idle.commands),
            "idle_publishes_per_sec": r(self.idle.publishes),
            "idle_deliveries_per_sec": r(self.idle.deliveries),
            "confirmed": self.confirmed,
            "unconfirmed": self.unconfirmed,
            "tracked_evictions": self.tracked_evictions,
        })
    }
}

/// Starts `n` instances, waits until they hear each other (Broadcast) and lets them
/// settle.
async fn start_fleet(env: &Env, prefix: &str, n: usize, p: Protocol) -> Result<Vec<HybridCache>> {
    let mut fleet = Vec::with_capacity(n);
    for started in join_all((0..n).map(|_| instance(env, prefix, p, TTL))).await {
        fleet.push(started?);
    }
    let wait = match p {
        Protocol::Broadcast => COHERENT_WAIT,
        _ => FLEET_PEERS_WAIT,
    };
    let deadline = Instant::now() + wait;
    loop {
        let mut all_heard = true;
        for stats in join_all(fleet.iter().map(HybridCache::get_stats)).await {
            all_heard &= stats?.coherence.peers == n - 1;
        }
        if all_heard {
            break;
        }
        if Instant::now() > deadline {
            if p == Protocol::Broadcast {
                return Err(format!("{prefix}: the instances never all heard each other").into());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    Ok(fleet)
}

/// Reads `key` through `c` until it is in c's L1 (a fill may lose a race with an
/// invalidation still in flight); whether it got there.
async fn hold(c: &HybridCache, key: &str) -> Result<bool> {
    for _ in 0..50 {
        c.get::<Row>(key).await?;
        if c.l1().exists_sync(key) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(false)
}

async fn measure(env: &Env, n: usize, p: Protocol) -> Result<FleetRun> {
    let prefix = format!("{}:fleet-{n}-{}", env.prefix, protocol_name(p));
    let fleet = start_fleet(env, &prefix, n, p).await?;
    let mut raw = env.raw_connection().await?;

    // 1. Idle.
    let d0 = deliveries(&fleet).await?;
    let c0 = ServerCounts::read(&mut raw).await?;
    let started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let c1 = ServerCounts::read(&mut raw).await?;
    let idle_secs = started.elapsed().as_secs_f64();
    let d1 = deliveries(&fleet).await?;
    let idle_counts = c0.until(c1);
    let idle = Idle {
        commands: idle_counts.commands as f64 / idle_secs,
        publishes: idle_counts.publishes as f64 / idle_secs,
        deliveries: d1.saturating_sub(d0) as f64 / idle_secs,
    };

    let mut run = FleetRun {
        n,
        protocol: p,
        idle,
        latencies: Vec::with_capacity(WRITES),
        writes_elapsed: Duration::ZERO,
        write_errors: 0,
        writes: 0,
        write_commands: 0,
        write_windows: Duration::ZERO,
        write_deliveries: 0,
        stale_reads: 0,
        fill_failures: 0,
        fills: 0,
        fill_errors: 0,
        fill_commands: 0,
        fill_publishes: 0,
        fills_with_publish: 0,
        fill_windows: Duration::ZERO,
        confirmed: 0,
        unconfirmed: 0,
        tracked_evictions: 0,
    };

    // 2. Writes: every key in L2 (written raw, no message) and in its two holders'
    // L1 first.
    let key = |i: usize| format!("w:{i}");
    let holders = |i: usize| (i % n, (i + 1) % n);
    let mut held = vec![false; WARMUP + WRITES];
    for (i, h) in held.iter_mut().enumerate() {
        let (w, other) = holders(i);
        fleet[w].l2().set(&key(i), row_with_id(0), None).await?;
        *h = hold(&fleet[w], &key(i)).await? && hold(&fleet[other], &key(i)).await?;
        run.fill_failures += u64::from(!*h);
    }
    for (i, _) in held.iter().enumerate().take(WARMUP).filter(|(_, h)| **h) {
        fleet[i % n].set(&key(i), row_with_id(1), None).await?;
    }
    let d0 = deliveries(&fleet).await?;
    let started = Instant::now();
    for (i, held) in held.iter().enumerate().skip(WARMUP) {
        if !held {
            continue;
        }
        let (w, other) = holders(i);
        let id = i as u64 + 1;
        let before = ServerCounts::read(&mut raw).await?;
        let window = Instant::now();
        let issued = Instant::now();
        let written = fleet[w].set(&key(i), row_with_id(id), None).await;
        let latency = issued.elapsed();
        let after = ServerCounts::read(&mut raw).await?;
        run.write_windows += window.elapsed();
        if written.is_err() {
            run.write_errors += 1;
            continue;
        }
        run.writes += 1;
        run.latencies.push(nanos(latency));
        run.write_commands += before.until(after).commands;
        for holder in [&fleet[w], &fleet[other]] {
            let read = holder.get::<Row>(&key(i)).await;
            if !matches!(&read, Ok(Some(row)) if row.id == id) {
                run.stale_reads += 1;
            }
        }
    }
    run.writes_elapsed = started.elapsed();
    run.write_deliveries = deliveries(&fleet).await?.saturating_sub(d0);
    run.latencies.sort_unstable();

    // 3. Read-through fills of missing keys.
    let published = monitor_publishes(env).await?;
    for f in 0..FILLS {
        let c = &fleet[f % n];
        let key = format!("fill:{f}");
        let before = ServerCounts::read(&mut raw).await?;
        let published_before = published.load(Relaxed);
        let window = Instant::now();
        let filled = c
            .get_or_compute(&key, None, || async move { row_with_id(f as u64) })
            .await;
        tokio::time::sleep(FILL_SETTLE).await;
        let after = ServerCounts::read(&mut raw).await?;
        run.fill_windows += window.elapsed();
        if !matches!(&filled, Ok(row) if row.id == f as u64) {
            run.fill_errors += 1;
            continue;
        }
        let counts = before.until(after);
        let publishes = published.load(Relaxed).saturating_sub(published_before);
        run.fills += 1;
        run.fill_commands += counts.commands;
        run.fill_publishes += publishes;
        run.fills_with_publish += u64::from(publishes > 0);
    }

    for stats in join_all(fleet.iter().map(HybridCache::get_stats)).await {
        let c = stats?.coherence;
        run.confirmed += c.confirmed;
        run.unconfirmed += c.unconfirmed;
        run.tracked_evictions += c.tracked_evictions;
    }
    for closed in join_all(fleet.iter().map(HybridCache::close)).await {
        closed?;
    }
    Ok(run)
}

/// The per-size table (markdown), printed on stderr so that `--json` stays one
/// object a line on stdout.
fn table(runs: &[FleetRun]) -> String {
    let mut t = String::from(
        "\nfleet_scaling (writes: the writer and one other instance hold the key; net = minus idle traffic)\n\
         | instances | protocol | write p50 µs | write p99 µs | cmds/write (net) | deliveries/write (net) \
         | stale | PUBLISH/fill (net) | idle cmds/s | idle deliveries/s |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in runs {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.0} | {:.1} ({:.1}) | {:.1} ({:.1}) | {} | {:.2} ({:.2}) | {:.0} | {:.0} |",
            r.n,
            protocol_name(r.protocol),
            r.p50_us(),
            r.p99_us(),
            r.commands_per_write(),
            r.net_commands_per_write(),
            r.deliveries_per_write(),
            r.net_deliveries_per_write(),
            r.stale_reads,
            r.publishes_per_fill(),
            r.net_publishes_per_fill(),
            r.idle.commands,
            r.idle.deliveries,
        );
    }
    t
}

/// Fleet ÷ Broadcast per fleet size (lower is better for Fleet), as JSON and as
/// a markdown table.
fn versus(runs: &[FleetRun]) -> (Value, String) {
    let mut t = String::from(
        "\nFleet ÷ Broadcast, same run (< 1: Fleet costs less)\n\
         | instances | cmds/write | deliveries/write | write p99 | PUBLISH/fill | idle cmds/s | idle deliveries/s |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut rows = Vec::new();
    for n in SIZES {
        let pick = |p: Protocol| runs.iter().find(|r| r.n == n && r.protocol == p);
        let (Some(f), Some(b)) = (pick(Protocol::Fleet), pick(Protocol::Broadcast)) else {
            continue;
        };
        let q = |a: f64, b: f64| round_to(a / b, 3);
        let figures = [
            q(f.net_commands_per_write(), b.net_commands_per_write()),
            q(f.net_deliveries_per_write(), b.net_deliveries_per_write()),
            q(f.p99_us(), b.p99_us()),
            q(f.net_publishes_per_fill(), b.net_publishes_per_fill()),
            q(f.idle.commands, b.idle.commands),
            q(f.idle.deliveries, b.idle.deliveries),
        ];
        let _ = writeln!(
            t,
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            figures[0], figures[1], figures[2], figures[3], figures[4], figures[5]
        );
        rows.push(json!({
            "instances": n,
            "net_commands_per_write": figures[0],
            "net_deliveries_per_write": figures[1],
            "write_p99": figures[2],
            "net_publishes_per_fill": figures[3],
            "idle_commands_per_sec": figures[4],
            "idle_deliveries_per_sec": figures[5],
        }));
    }
    (Value::Array(rows), t)
}

pub(super) fn fleet_scaling(env: &Env) -> Result<Measured> {
    let mut runs = Vec::with_capacity(SIZES.len() * 2);
    for n in SIZES {
        // Alternate which protocol goes first, so neither always runs on a server
        // that has just been through the other.
        let order = if n % 4 == 0 {
            [Protocol::Broadcast, Protocol::Fleet]
        } else {
            [Protocol::Fleet, Protocol::Broadcast]
        };
        for p in order {
            eprintln!("  fleet_scaling: {n} instances, {}", protocol_name(p));
            runs.push(env.rt.block_on(measure(env, n, p))?);
        }
    }
    let (versus_json, versus_table) = versus(&runs);
    eprintln!("{}{versus_table}", table(&runs));

    let find = |n: usize, p: Protocol| runs.iter().find(|r| r.n == n && r.protocol == p);
    let (small, large) = (SIZES[0], SIZES[SIZES.len() - 1]);
    let (Some(f_small), Some(f_large), Some(b_small), Some(b_large)) = (
        find(small, Protocol::Fleet),
        find(large, Protocol::Fleet),
        find(small, Protocol::Broadcast),
        find(large, Protocol::Broadcast),
    ) else {
        return Err("fleet_scaling: a fleet size was not measured".into());
    };
    let commands_growth = f_large.net_commands_per_write() / f_small.net_commands_per_write();
    let p99_growth = f_large.p99_us() / f_small.p99_us();
    let broadcast_commands_growth =
        b_large.net_commands_per_write() / b_small.net_commands_per_write();
    let broadcast_p99_growth = b_large.p99_us() / b_small.p99_us();
    let fleet_fill_publishes = runs
        .iter()
        .filter(|r| r.protocol == Protocol::Fleet)
        .map(FleetRun::net_publishes_per_fill)
        .fold(0.0, f64::max);
    let stale_reads: u64 = runs.iter().map(|r| r.stale_reads).sum();
    let errors: u64 = runs.iter().map(|r| r.write_errors + r.fill_errors).sum();
    // Fills publish nothing: allow for a heartbeat the subtraction missed, not for
    // one PUBLISH a fill.
    let fills_publish_nothing = fleet_fill_publishes < 0.1;
    let goal = commands_growth <= GOAL_COMMANDS_GROWTH
        && p99_growth <= GOAL_P99_GROWTH
        && fills_publish_nothing
        && stale_reads == 0
        && errors == 0;
    let ratio = b_large.net_commands_per_write() / f_large.net_commands_per_write();

    Ok(Measured {
        ours: vec![f_large.round()],
        baseline: vec![b_large.round()],
        ratios: Some(vec![ratio]),
        ratio_definition: Some(
            "Broadcast net Redis commands per confirmed write / Fleet's, both at 64 instances, \
             same run (higher is better; 1.0 = Fleet saves nothing). ops_per_sec, p50_us, \
             p99_us: Fleet's writes at 64 instances (baseline_*: Broadcast's); ops_per_sec \
             counts the write batch's wall time, reads after each write included. Every \
             size and protocol is in `fleet`, Fleet ÷ Broadcast per size in `fleet_over_broadcast`",
        ),
        goal_also: Some(goal),
        notes: vec![
            format!(
                "Fleet 64÷2: cmds/write {commands_growth:.2} (≤{GOAL_COMMANDS_GROWTH}), \
                 p99 {p99_growth:.2} (≤{GOAL_P99_GROWTH}); Broadcast 64÷2: \
                 {broadcast_commands_growth:.2}, {broadcast_p99_growth:.2}"
            ),
            format!(
                "Fleet PUBLISH/fill (net, worst size) {fleet_fill_publishes:.2}; stale reads \
                 {stale_reads}"
            ),
        ],
        extras: vec![
            (
                "setup",
                json!(format!(
                    "per fleet size {SIZES:?} and protocol, its own prefix and only that fleet \
                     alive: {WRITES} confirmed set()s (after {WARMUP} unmeasured) of keys held in L1 by \
                     exactly 2 instances (the writer and the next one); {FILLS} get_or_compute fills of missing \
                     keys, each window open {} ms after the fill returned; {} s idle",
                    FILL_SETTLE.as_millis(),
                    IDLE.as_secs()
                )),
            ),
            (
                "commands_definition",
                json!(
                    "INFO stats total_commands_processed delta across the write only (from a \
                     separate connection, its own INFO not counted); net: minus the idle \
                     commands/s times the window"
                ),
            ),
            (
                "deliveries_definition",
                json!(
                    "sum over every instance of coherence.deliveries over the write batch / \
                     writes; net: minus the idle deliveries/s times the batch's length"
                ),
            ),
            (
                "fleet_commands_growth_64_over_2",
                json!(round_to(commands_growth, 3)),
            ),
            ("fleet_p99_growth_64_over_2", json!(round_to(p99_growth, 3))),
            (
                "broadcast_commands_growth_64_over_2",
                json!(round_to(broadcast_commands_growth, 3)),
            ),
            (
                "broadcast_p99_growth_64_over_2",
                json!(round_to(broadcast_p99_growth, 3)),
            ),
            ("goal_commands_growth", json!(GOAL_COMMANDS_GROWTH)),
            ("goal_p99_growth", json!(GOAL_P99_GROWTH)),
            (
                "fleet_net_publishes_per_fill_max",
                json!(round_to(fleet_fill_publishes, 3)),
            ),
            ("stale_reads", json!(stale_reads)),
            ("fleet_over_broadcast", versus_json),
            (
                "fleet",
                Value::Array(runs.iter().map(FleetRun::json).collect()),
            ),
        ],
        ..Measured::default()
    })
}
