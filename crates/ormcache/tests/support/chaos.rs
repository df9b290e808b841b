//! The chaos suite's load, its truth and the checker (used by `tests/chaos.rs`).
//!
//! **The load.** Each process runs 4 entry writers, 2 row writers and 24 readers on
//! one `HybridCache`; a second OS process (the test binary re-run as
//! [`serve_peer`]) runs the same on its own cache, same prefix.
//!
//! **The truth.** Entry keys `s:{k}` belong to one writer task (in one of the two
//! processes) each, which writes `(k, version)` with `set` or `set_with_tags` and
//! removes it with `delete` (a version too), so the versions of a key are ordered.
//! Keys `c:{g}:{k}` are rows of a database kept by the process that owns group `g`:
//! an update bumps the row's version, then invalidates the cache by `delete`,
//! `invalidate_tag("g{g}")` or (a bulk update of the whole group)
//! `clear_pattern("c:{g}:*")`. The owner reads rows through `get_or_compute` (the
//! loader reads the row; tagged `g{g}`, sometimes with the cluster-wide lock), the
//! other process with `get`. Readers also use `get_many` on entry keys.
//!
//! **The check**, offline, over both processes' logs (times are microseconds of the
//! machine's clock, which both processes share). A read is *wrong* if it returns a
//! value of another key, a removal's version, or a version whose write had not
//! started when the read ended. It is *stale beyond the bound* if it returns a
//! version older than one whose write or invalidation was acknowledged more than
//! [`BOUND`] before the read began. A miss is never wrong: a cache may forget.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ormcache::{
    Cache, ComputeOptions, DistributedCache, DistributedConfig, HybridCache, QueryCache,
};

use super::Rng;

/// `degraded_max_age` of every instance: how long a write can be hidden from an
/// instance that cannot reach Redis (the crate docs' bound for that path).
pub const DEGRADED_MAX_AGE: Duration = Duration::from_millis(300);

/// The staleness bound the checker applies: `DEGRADED_MAX_AGE` plus 200 ms for
/// pub/sub delivery on a loaded two-core machine (the docs' "delivery time" of the
/// unconfirmed paths).
pub const BOUND: Duration = Duration::from_millis(500);

/// The command timeout of every instance.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

/// Entry keys `s:{k}`.
pub const ENTRY_KEYS: u32 = 32;
/// Row groups `c:{g}:…`, each with [`ROWS_PER_GROUP`] rows.
pub const GROUPS: u32 = 4;
pub const ROWS_PER_GROUP: u32 = 4;
const ENTRY_WRITERS: u32 = 4;
const READERS: u32 = 24;
const KEYS: u32 = ENTRY_KEYS + GROUPS * ROWS_PER_GROUP;

/// The value stored at a key: `(key, version)`.
type Value = (u32, u64);

/// Where the cache's Redis is, as the peer process receives it.
#[derive(Debug, Clone)]
pub enum Target {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    fn to_env(&self) -> String {
        match self {
            Self::Single(url) => format!("single {url}"),
            Self::Cluster(urls) => format!("cluster {}", urls.join(",")),
        }
    }

    fn from_env(s: &str) -> Self {
        match s.split_once(' ') {
            Some(("single", url)) => Self::Single(url.to_owned()),
            Some(("cluster", urls)) => Self::Cluster(urls.split(',').map(Into::into).collect()),
            _ => panic!("bad ORMCACHE_CHAOS_PEER {s:?}"),
        }
    }

    fn config(&self, prefix: &str) -> DistributedConfig {
        let config = match self {
            Self::Single(url) => DistributedConfig::new().redis_url(url),
            #[cfg(feature = "cluster")]
            Self::Cluster(urls) => DistributedConfig::new().cluster_nodes(urls.clone()),
            #[cfg(not(feature = "cluster"))]
            Self::Cluster(_) => panic!("a cluster target needs the `cluster` feature"),
        };
        config
            .key_prefix(prefix)
            .default_ttl(Duration::from_secs(300))
            .socket_timeout(COMMAND_TIMEOUT)
    }
}

/// An instance as every chaos process builds it: 100 ms heartbeats, the short
/// [`DEGRADED_MAX_AGE`], the [`COMMAND_TIMEOUT`], the topology's default
/// protocol; coherent before it returns.
pub async fn instance(target: &Target, prefix: &str) -> HybridCache {
    instance_with(target, prefix, None).await
}

/// [`instance`] with this coherence protocol.
pub async fn instance_with(
    target: &Target,
    prefix: &str,
    protocol: Option<ormcache::Protocol>,
) -> HybridCache {
    let l2 = DistributedCache::create(target.config(prefix))
        .await
        .unwrap();
    let mut builder = HybridCache::builder(
        QueryCache::new(10_000, Duration::from_secs(60)).unwrap(),
        l2,
    )
    .heartbeat_interval(Duration::from_millis(100))
    .degraded_max_age(DEGRADED_MAX_AGE);
    if let Some(p) = protocol {
        builder = builder.protocol(p);
    }
    let c = builder.build().unwrap();
    assert!(
        c.wait_coherent(Duration::from_secs(10)).await,
        "a chaos instance never became coherent"
    );
    c
}

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn name(k: u32) -> String {
    if k < ENTRY_KEYS {
        format!("s:{k}")
    } else {
        format!("c:{}:{k}", group(k))
    }
}

fn group(k: u32) -> u32 {
    (k - ENTRY_KEYS) / ROWS_PER_GROUP
}

fn rows_of(g: u32) -> std::ops::Range<u32> {
    ENTRY_KEYS + g * ROWS_PER_GROUP..ENTRY_KEYS + (g + 1) * ROWS_PER_GROUP
}

/// Every Redis key name (after the prefix) that the load uses: entries, rows and
/// the names of its tags, for tests that move their slots.
pub fn key_names() -> Vec<String> {
    (0..KEYS).map(name).collect()
}

/// The tags the load uses.
pub fn tag_names() -> Vec<String> {
    (0..GROUPS)
        .map(|g| format!("g{g}"))
        .chain((0..4).map(|t| format!("s{t}")))
        .collect()
}

/// A write of the truth: an entry write or removal, or a row update (whose
/// acknowledgement is the invalidation's).
#[derive(Debug, Clone)]
pub struct Write {
    pub key: u32,
    pub version: u64,
    /// A removal: `(key, version)` is never a value.
    pub removal: bool,
    /// How: `s` set, `t` set with tags, `d` delete, `b` set bypassing the
    /// invalidation; a row update invalidated by `D` delete, `T` tag, `C` pattern.
    pub how: char,
    pub started: u64,
    /// When the call returned `Ok`; `None` for an error (unknown outcome).
    pub acked: Option<u64>,
}

/// A read and what it returned.
#[derive(Debug, Clone)]
pub struct Read {
    /// The process that read (0 or 1).
    pub process: u32,
    pub key: u32,
    pub began: u64,
    pub ended: u64,
    pub got: Option<Value>,
}

/// What one process did.
#[derive(Debug, Default)]
pub struct Log {
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
    /// Calls that returned an error.
    pub errors: u64,
}

impl Log {
    pub fn merge(&mut self, other: Self) {
        self.writes.extend(other.writes);
        self.reads.extend(other.reads);
        self.errors += other.errors;
    }

    fn to_text(&self) -> String {
        let mut out = format!("E {}\n", self.errors);
        for w in &self.writes {
            let acked = w.acked.map_or("-".to_owned(), |a| a.to_string());
            let line = format!(
                "W {} {} {} {} {acked} {}\n",
                w.key,
                w.version,
                u8::from(w.removal),
                w.started,
                w.how
            );
            out.push_str(&line);
        }
        for r in &self.reads {
            let got = r.got.map_or("-".to_owned(), |(k, v)| format!("{k},{v}"));
            let line = format!("R {} {} {} {got} {}\n", r.key, r.began, r.ended, r.process);
            out.push_str(&line);
        }
        out
    }

    fn from_text(text: &str) -> Self {
        let mut log = Self::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            match f[0] {
                "E" => log.errors = n(1),
                "W" => log.writes.push(Write {
                    key: u32::try_from(n(1)).unwrap(),
                    version: n(2),
                    removal: f[3] == "1",
                    started: n(4),
                    acked: (f[5] != "-").then(|| n(5)),
                    how: f[6].chars().next().unwrap(),
                }),
                "R" => log.reads.push(Read {
                    process: u32::try_from(n(5)).unwrap(),
                    key: u32::try_from(n(1)).unwrap(),
                    began: n(2),
                    ended: n(3),
                    got: f[4]
                        .split_once(',')
                        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())),
                }),
                other => panic!("bad log line {other:?}"),
            }
        }
        log
    }
}

/// The load of one process; [`stop`](Self::stop) ends it and returns its log.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Log>>,
}

impl Load {
    /// Starts the load of `process` (0 or 1) on `cache`.
    pub fn start(cache: &HybridCache, process: u32) -> Self {
        Self::start_with(cache, process, false)
    }

    /// The negative control: the load of process 0 whose entry writers set values
    /// through `cache.l2()`, the plain `DistributedCache` that sends no
    /// invalidation, so that L1 copies stay stale and the checker must see it.
    pub fn start_bypassing_invalidation(cache: &HybridCache) -> Self {
        Self::start_with(cache, 0, true)
    }

    fn start_with(cache: &HybridCache, process: u32, bypass: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        // The rows of this process's groups; version 0 is the initial row.
        let db: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let mut tasks = Vec::new();
        let seed = now_us() ^ (u64::from(process) << 40);
        let ctx = |task: u64| Ctx {
            cache: cache.clone(),
            stop: Arc::clone(&stop),
            ops: Arc::clone(&ops),
            db: Arc::clone(&db),
            rng: Rng((seed ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
            log: Log::default(),
            bypass,
        };
        for w in 0..ENTRY_WRITERS {
            let keys: Vec<u32> = (0..ENTRY_KEYS)
                .filter(|k| k % 2 == process && (k / 2) % ENTRY_WRITERS == w)
                .collect();
            tasks.push(tokio::spawn(ctx(u64::from(w)).write_entries(keys)));
        }
        for g in (0..GROUPS).filter(|g| g % 2 == process) {
            tasks.push(tokio::spawn(ctx(100 + u64::from(g)).write_rows(g)));
        }
        for r in 0..READERS {
            tasks.push(tokio::spawn(ctx(200 + u64::from(r)).read(process)));
        }
        Self { stop, ops, tasks }
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Relaxed)
    }

    /// Stops every task; their merged log.
    pub async fn stop(self) -> Log {
        self.stop.store(true, SeqCst);
        let mut log = Log::default();
        for t in self.tasks {
            log.merge(t.await.unwrap());
        }
        log
    }
}

struct Ctx {
    cache: HybridCache,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    db: Arc<Vec<AtomicU64>>,
    rng: Rng,
    log: Log,
    /// Entry writes through the L2 alone (the negative control).
    bypass: bool,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(SeqCst)
    }

    fn done(&mut self, ok: bool) {
        self.ops.fetch_add(1, Relaxed);
        if !ok {
            self.log.errors += 1;
        }
    }

    async fn write_entries(mut self, keys: Vec<u32>) -> Log {
        let mut versions = vec![0u64; keys.len()];
        while self.running() {
            let i = self.rng.below(keys.len() as u64) as usize;
            let k = keys[i];
            versions[i] += 1;
            let (v, key) = (versions[i], name(k));
            let started = now_us();
            let dice = self.rng.below(20);
            let tag = format!("s{}", k % 4);
            let (how, result) = match dice {
                _ if self.bypass => ('b', self.cache.l2().set(&key, (k, v), None).await),
                0..=10 => ('s', self.cache.set(&key, (k, v), None).await),
                11..=14 => (
                    't',
                    self.cache.set_with_tags(&key, (k, v), None, &[&tag]).await,
                ),
                _ => ('d', self.cache.delete(&key).await.map(drop)),
            };
            let acked = result.is_ok().then(now_us);
            self.done(acked.is_some());
            self.log.writes.push(Write {
                key: k,
                version: v,
                removal: how == 'd',
                how,
                started,
                acked,
            });
            if dice == 19 {
                // A tag invalidation of entries: misses, never a truth change.
                let ok = self.cache.invalidate_tag(&tag).await.is_ok();
                self.done(ok);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.log
    }

    async fn write_rows(mut self, g: u32) -> Log {
        let rows: Vec<u32> = rows_of(g).collect();
        while self.running() {
            let dice = self.rng.below(10);
            let updated: Vec<u32> = if dice >= 8 {
                rows.clone()
            } else {
                vec![*self.rng.pick(&rows)]
            };
            let started = now_us();
            let versions: Vec<u64> = updated
                .iter()
                .map(|&k| self.db[k as usize].fetch_add(1, SeqCst) + 1)
                .collect();
            let (how, result) = match dice {
                0..=4 => ('D', self.cache.delete(&name(updated[0])).await.map(drop)),
                5..=7 => ('T', self.cache.invalidate_tag(&format!("g{g}")).await),
                _ => (
                    'C',
                    self.cache
                        .clear_pattern(&format!("c:{g}:*"))
                        .await
                        .map(drop),
                ),
            };
            let acked = result.is_ok().then(now_us);
            self.done(acked.is_some());
            for (&key, version) in updated.iter().zip(versions) {
                self.log.writes.push(Write {
                    key,
                    version,
                    removal: false,
                    how,
                    started,
                    acked,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log
    }

    async fn read(mut self, process: u32) -> Log {
        while self.running() {
            let k = self.rng.below(u64::from(KEYS)) as u32;
            let began = now_us();
            if k < ENTRY_KEYS && self.rng.below(10) == 0 {
                let ks = [k, (k + 1) % ENTRY_KEYS, (k + 7) % ENTRY_KEYS];
                let names: Vec<String> = ks.iter().map(|&k| name(k)).collect();
                let got = self.cache.get_many::<Value, _>(&names).await;
                let ended = now_us();
                self.done(got.is_ok());
                if let Ok(got) = got {
                    for (k, v) in ks.into_iter().zip(got) {
                        let got = v.map(|v| *v);
                        self.log.reads.push(Read {
                            process,
                            key: k,
                            began,
                            ended,
                            got,
                        });
                    }
                }
            } else {
                let got = if k >= ENTRY_KEYS && group(k) % 2 == process {
                    let db = Arc::clone(&self.db);
                    let mut options = ComputeOptions::new().tags([format!("g{}", group(k))]);
                    if self.rng.below(4) == 0 {
                        options = options
                            .lock(true)
                            .lock_ttl(Duration::from_secs(2))
                            .lock_wait(Duration::from_millis(500));
                    }
                    self.cache
                        .get_or_compute_with(&name(k), options, || async move {
                            let row = (k, db[k as usize].load(SeqCst));
                            // A query takes a moment: invalidations race the fill.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            row
                        })
                        .await
                        .map(|v| Some(*v))
                } else {
                    self.cache
                        .get::<Value>(&name(k))
                        .await
                        .map(|v| v.map(|v| *v))
                };
                let ended = now_us();
                self.done(got.is_ok());
                if let Ok(got) = got {
                    self.log.reads.push(Read {
                        process,
                        key: k,
                        began,
                        ended,
                        got,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.log
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub reads: u64,
    pub writes: u64,
    pub misses: u64,
    pub wrong: u64,
    /// Older than a write acknowledged more than [`BOUND`] before the read began.
    pub stale_beyond_bound: u64,
    /// The stale reads beyond the bound of process 0 and of process 1.
    pub stale_by_process: [u64; 2],
    /// Older than a write acknowledged before the read began, but within the bound.
    pub stale_within_bound: u64,
    /// A few of the wrong and stale reads, for the failure message.
    pub examples: Vec<String>,
}

/// Checks every read of `log` (both processes merged) against every write.
pub fn check(log: &Log) -> Verdict {
    let bound = u64::try_from(BOUND.as_micros()).unwrap();
    let mut writes: HashMap<(u32, u64), &Write> = HashMap::new();
    // Per key: (acknowledged at, version), by time, and the running maximum version.
    let mut acks: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    let initial: Vec<Write> = (ENTRY_KEYS..KEYS)
        .map(|key| Write {
            key,
            version: 0,
            removal: false,
            how: 'D',
            started: 0,
            acked: Some(0),
        })
        .collect();
    for w in log.writes.iter().chain(&initial) {
        writes.insert((w.key, w.version), w);
        if let Some(at) = w.acked {
            acks.entry(w.key).or_default().push((at, w.version));
        }
    }
    for list in acks.values_mut() {
        list.sort_unstable();
        let mut max = 0;
        for entry in list.iter_mut() {
            max = max.max(entry.1);
            entry.1 = max;
        }
    }
    let floor = |key: u32, before: u64| {
        acks.get(&key).map_or(0, |list| {
            let n = list.partition_point(|&(at, _)| at < before);
            if n == 0 { 0 } else { list[n - 1].1 }
        })
    };
    let mut verdict = Verdict {
        reads: log.reads.len() as u64,
        writes: log.writes.len() as u64,
        ..Verdict::default()
    };
    for r in &log.reads {
        let Some((k, v)) = r.got else {
            verdict.misses += 1;
            continue;
        };
        let valid = k == r.key
            && writes
                .get(&(k, v))
                .is_some_and(|w| !w.removal && w.started <= r.ended);
        let hard = floor(r.key, r.began.saturating_sub(bound));
        let soft = floor(r.key, r.began);
        let what = if !valid {
            verdict.wrong += 1;
            "WRONG"
        } else if v < hard {
            verdict.stale_beyond_bound += 1;
            verdict.stale_by_process[usize::from(r.process == 1)] += 1;
            "STALE"
        } else {
            if v < soft {
                verdict.stale_within_bound += 1;
            }
            continue;
        };
        if verdict.examples.len() < 8 {
            let ago = |version: u64| {
                writes.get(&(r.key, version)).map_or(String::new(), |w| {
                    let at = |t: Option<u64>| {
                        t.map_or("failed".to_owned(), |t| {
                            format!("{} ms", (i128::from(r.began) - i128::from(t)) / 1000)
                        })
                    };
                    format!(
                        " ({} started {} before the read, acknowledged {})",
                        w.how,
                        at(Some(w.started)),
                        at(w.acked)
                    )
                })
            };
            verdict.examples.push(format!(
                "{what}: process {} read {} = ({k}, {v}){} in {} µs; acknowledged before it: \
                 v{soft}, more than {BOUND:?} before it: v{hard}{}",
                r.process,
                name(r.key),
                ago(v),
                r.ended - r.began,
                ago(hard)
            ));
        }
    }
    verdict
}

/// Waits until `probe` is coherent, `ready` holds and a write and a read through
/// it succeed; how long that took since `since`.
///
/// # Panics
/// After 30 s.
pub async fn recovery(
    probe: &HybridCache,
    since: Instant,
    ready: impl AsyncFn() -> bool,
) -> Duration {
    loop {
        // What the probe still waits for, for the message if it never recovers.
        let waiting = if !probe.is_coherent() {
            "coherence".to_owned()
        } else if !ready().await {
            "the scenario's own readiness check".to_owned()
        } else {
            match probe.set("probe", 1u8, None).await {
                Err(e) => format!("a set: {e}"),
                Ok(()) => match probe.get::<u8>("probe").await {
                    Ok(Some(_)) => return since.elapsed(),
                    Ok(None) => "a get that finds the probe's own write".to_owned(),
                    Err(e) => format!("a get: {e}"),
                },
            }
        };
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no recovery within 30 s; still waiting for {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- the second process -------------------------------------------------------

/// The peer process: this test binary re-run with only the ignored test that calls
/// [`serve_peer`].
#[derive(Debug)]
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
}

/// How a process ends a scenario: its fallbacks, and whether it recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub fallbacks: u64,
    /// Coherent, with an empty backlog, within 10 s of the load's end.
    pub recovered: bool,
}

impl Ending {
    /// Waits (up to 10 s) until `cache` is coherent with an empty backlog.
    pub async fn of(cache: &HybridCache) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = cache.get_stats().await.unwrap().coherence;
            let recovered = c.coherent && c.backlog == 0;
            if recovered || Instant::now() > deadline {
                return Self {
                    fallbacks: c.fallbacks,
                    recovered,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Peer {
    /// Starts `test` of this binary as the peer, on `target` and `prefix`, and waits
    /// until its instance is coherent and its load runs.
    pub fn start(test: &str, target: &Target, prefix: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "ormcache-chaos-{}-{}.log",
            std::process::id(),
            now_us()
        ));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("ORMCACHE_CHAOS_PEER", target.to_env())
            .env("ORMCACHE_CHAOS_PREFIX", prefix)
            .env("ORMCACHE_CHAOS_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            child,
            stdin,
            stdout,
            log,
        };
        peer.until("ready");
        peer
    }

    fn until(&mut self, word: &str) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the peer process exited before saying {word:?}"
            );
            // libtest may print "test chaos_peer ... " on the same line first.
            if let Some((_, rest)) = line.split_once(word) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Stops the peer's load; its log and how it ended.
    pub fn finish(mut self) -> (Log, Ending) {
        writeln!(self.stdin, "stop").unwrap();
        self.stdin.flush().unwrap();
        let done = self.until("done");
        let ending = match done.split(' ').collect::<Vec<_>>().as_slice() {
            [fallbacks, recovered] => Ending {
                fallbacks: fallbacks.parse().unwrap(),
                recovered: *recovered == "recovered",
            },
            _ => panic!("bad peer report {done:?}"),
        };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the peer process failed: {status}");
        let text = std::fs::read_to_string(&self.log).unwrap();
        (Log::from_text(&text), ending)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The body of the peer process: runs process 1's load until told to stop, then
/// writes its log where the parent asked.
///
/// # Panics
/// When run without the environment the scenarios set (that is, by hand).
pub async fn serve_peer() {
    let Ok(target) = std::env::var("ORMCACHE_CHAOS_PEER") else {
        panic!("the chaos peer runs only as the second process of a chaos scenario");
    };
    let target = Target::from_env(&target);
    let prefix = std::env::var("ORMCACHE_CHAOS_PREFIX").unwrap();
    let log_path = std::env::var("ORMCACHE_CHAOS_LOG").unwrap();
    let cache = instance(&target, &prefix).await;
    let load = Load::start(&cache, 1);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.trim() == "stop" {
            break;
        }
    }
    let log = load.stop().await;
    std::fs::write(&log_path, log.to_text()).unwrap();
    let ending = Ending::of(&cache).await;
    let state = if ending.recovered {
        "recovered"
    } else {
        "degraded"
    };
    writeln!(out, "done {} {state}", ending.fallbacks).unwrap();
    out.flush().unwrap();
}
