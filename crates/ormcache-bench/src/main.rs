//! Load-benchmark harness for ormcache: every scenario is measured against a raw
//! baseline (redis-rs, moka, serde, a plain `QueryCache`) in the same run, in
//! alternating rounds, and the ratio ours/baseline of throughput is reported (higher
//! is better; a scenario may compare something else, which its `ratio_definition`
//! says).
//!
//! ```text
//! cargo run --release -p ormcache-bench -- [--redis-url URL] [--json] [--only NAME]
//! ```
//!
//! Without `--redis-url` a private `redis-server` is started for the run. Everything
//! written lives under a random key prefix `ormcache-bench-<hex>:` and is removed
//! afterwards with `SCAN` + `UNLINK` (never `FLUSHDB`).
//!
//! | module | holds |
//! | --- | --- |
//! | `scenarios` | the scenario list, the row, each scenario and its baseline |
//! | `dead_redis` | the first reads after Redis is killed, against a local miss |
//! | `stats` | rounds, alternation, percentiles, the report row |
#![allow(clippy::print_stdout)]

mod dead_redis;
mod scenarios;
mod stats;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use ormcache::DistributedConfig;
use ormcache_testing::RedisServer;

use scenarios::{ALL, Env, Result, Scenario};
use stats::Report;

const USAGE: &str = "usage: ormcache-bench [--redis-url URL] [--json] [--only NAME]

  --redis-url URL  Redis to use (default: start a private redis-server)
  --json           one JSON object per scenario per line instead of a table
  --only NAME      run one scenario";

#[derive(Debug, Default)]
struct Args {
    redis_url: Option<String>,
    json: bool,
    only: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut inline = inline;
        let mut value = |name: &str| {
            inline
                .take()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--redis-url" => args.redis_url = Some(value("--redis-url")?),
            "--only" => args.only = Some(value("--only")?),
            "--json" => args.json = true,
            "-h" | "--help" => {
                println!("{USAGE}\n\nscenarios: {}", names());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

fn names() -> String {
    ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// `ormcache-bench-` and 16 random hex digits.
fn random_prefix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("ormcache-bench-{:016x}", h.finish())
}

/// Keys per `SCAN` step of the cleanup.
const CLEANUP_SCAN_COUNT: u64 = 10_000;
/// Keys per `UNLINK` of the cleanup.
const CLEANUP_UNLINK_BATCH: usize = 1_000;

/// Removes every key under `{prefix}:` (and the stats hash, named explicitly).
/// Each round trip carries the `UNLINK`s (of at most 1,000 keys each) of what the
/// previous `SCAN` found and the next `SCAN`: a million keys take a few seconds.
async fn cleanup(url: &str, prefix: &str) -> Result<u64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let pattern = format!("{}:*", ormcache::escape_glob(prefix));
    let mut cursor = 0u64;
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut removed = 0u64;
    loop {
        let mut pipe = redis::pipe();
        for batch in found.chunks(CLEANUP_UNLINK_BATCH) {
            pipe.cmd("UNLINK").arg(batch);
        }
        pipe.cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(CLEANUP_SCAN_COUNT);
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let scan = replies.pop().ok_or("cleanup: no SCAN reply")?;
        for unlinked in &replies {
            removed += redis::from_redis_value_ref::<u64>(unlinked)?;
        }
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(scan)?;
        found = keys;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut last = redis::pipe();
    for batch in found.chunks(CLEANUP_UNLINK_BATCH) {
        last.cmd("UNLINK").arg(batch);
    }
    last.cmd("UNLINK").arg(format!("{prefix}:stats"));
    let counts: Vec<u64> = last.query_async(&mut conn).await?;
    removed += counts.iter().sum::<u64>();
    Ok(removed)
}

fn run(env: &Env, selected: &[&Scenario], json: bool) -> Result<()> {
    if !json {
        println!("{}", Report::table_header());
    }
    for scenario in selected {
        eprintln!("running {} …", scenario.name);
        let measured = (scenario.run)(env).map_err(|e| format!("{}: {e}", scenario.name))?;
        let report = Report::new(
            scenario.name,
            scenario.baseline,
            scenario.goal_ratio,
            scenario.goal_p99_us,
            measured,
        );
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.table_row());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ormcache-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner() -> Result<()> {
    let args = parse_args()?;
    let selected: Vec<&Scenario> = match &args.only {
        None => ALL.iter().collect(),
        Some(name) => match ALL.iter().find(|s| s.name == name) {
            Some(s) => vec![s],
            None => return Err(format!("no scenario {name:?}; scenarios: {}", names()).into()),
        },
    };

    let needs_redis = selected.iter().any(|s| s.needs_redis);
    let mut server = None;
    let redis_url = match (&args.redis_url, needs_redis) {
        (_, false) => None,
        (Some(url), true) => {
            let shown = DistributedConfig::new().redis_url(url).redacted_url();
            eprintln!("redis: {shown} (--redis-url)");
            Some(url.clone())
        }
        (None, true) => {
            let s = RedisServer::start();
            eprintln!(
                "redis: private redis-server at {} (no --redis-url given)",
                s.url()
            );
            let url = s.url();
            server = Some(s);
            Some(url)
        }
    };
    let env = Env {
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        redis_url,
        prefix: random_prefix(),
    };
    if env.redis_url.is_some() {
        eprintln!("key prefix: {}:", env.prefix);
    }

    // Clean up whatever happens, panics included, then report.
    let outcome = catch_unwind(AssertUnwindSafe(|| run(&env, &selected, args.json)));
    if let Some(url) = &env.redis_url {
        match env.rt.block_on(cleanup(url, &env.prefix)) {
            Ok(n) => eprintln!("cleanup: removed {n} keys under {}:", env.prefix),
            Err(e) => eprintln!("cleanup under {}: failed: {e}", env.prefix),
        }
    }
    drop(env);
    drop(server);
    match outcome {
        Ok(result) => result,
        Err(panic) => resume_unwind(panic),
    }
}
