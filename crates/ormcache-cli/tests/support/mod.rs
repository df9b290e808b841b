//! Running the built `ormcache` binary against real servers and HybridCaches of
//! the test process.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ormcache::{DistributedCache, HybridCache, QueryCache};
pub use ormcache_testing::{RedisCluster, RedisServer};

/// Heartbeats of the test instances: the CLI listens for a few of them.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// What the CLI is told to listen for (several heartbeats).
pub const LISTEN: &str = "500ms";

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

/// Runs `ormcache --url URL --prefix PREFIX --listen 500ms ARGS…` with stdin
/// closed (not a terminal), off the async runtime.
pub async fn cli(url: &str, prefix: &str, args: &[&str]) -> Run {
    let mut full = vec!["--url", url, "--prefix", prefix, "--listen", LISTEN];
    full.extend_from_slice(args);
    run(&full, &[]).await
}

/// Runs the binary with exactly `args` and `env`.
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ormcache"));
        cmd.args(&args)
            .env_remove("REDIS_URL")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

/// An L2 on `url` (any form) under `prefix`.
pub async fn l2(url: &str, prefix: &str) -> DistributedCache {
    DistributedCache::builder()
        .redis_url(url)
        .key_prefix(prefix)
        .default_ttl(Duration::from_secs(300))
        .build()
        .await
        .unwrap()
}

/// A coherent HybridCache on `url` under `prefix`, with fast heartbeats.
pub async fn hybrid(url: &str, prefix: &str) -> HybridCache {
    hybrid_on(l2(url, prefix).await).await
}

/// A coherent HybridCache over `l2`, with fast heartbeats.
pub async fn hybrid_on(l2: DistributedCache) -> HybridCache {
    hybrid_speaking(l2, ormcache::Protocol::Fleet).await
}

/// [`hybrid_on`] under `protocol`.
pub async fn hybrid_speaking(l2: DistributedCache, protocol: ormcache::Protocol) -> HybridCache {
    let l1 = QueryCache::new(1000, Duration::from_secs(300)).unwrap();
    let cache = HybridCache::builder(l1, l2)
        .heartbeat_interval(HEARTBEAT)
        .protocol(protocol)
        .build()
        .unwrap();
    assert!(cache.wait_coherent(Duration::from_secs(10)).await);
    cache
}

/// `redis+cluster://` URL of every node of `cluster`.
pub fn cluster_url(cluster: &RedisCluster) -> String {
    let seeds: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    format!("redis+cluster://{}", seeds.join(","))
}
