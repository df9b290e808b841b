//! [`RedisCluster`]: three `redis-server` primaries joined into a Redis Cluster.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{RedisServer, ServerOptions, check_installed};

/// How long a node may be unreachable before the others mark it failed (ms). Short,
/// so that a test that kills a node sees the cluster react quickly.
const NODE_TIMEOUT_MS: u64 = 2000;

/// A Redis Cluster of three primaries (and optionally replicas) owned by a test,
/// each node a [`RedisServer`] on a free port below 55536 (its cluster bus listens
/// on port + 10000). Created with `redis-cli --cluster create`; every node is
/// killed on drop.
///
/// ```no_run
/// let cluster = ormcache_testing::RedisCluster::start();
/// println!("{:?}", cluster.urls());
/// cluster.kill(0);
/// cluster.restart(0);
/// cluster.wait_ok();
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not form
    /// (the message includes every node's log).
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// Starts three primaries with `replicas` replicas each (`--cluster-replicas`),
    /// so that a killed primary fails over.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with_replicas(replicas: usize) -> Self {
        check_installed();
        let options = ServerOptions {
            args: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
            ]
            .iter()
            .map(ToString::to_string)
            .collect(),
            unix_socket: false,
        };
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with(options.clone()))
            .collect();
        let cluster = Self { nodes };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port())),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "redis-cli --cluster create failed ({}):\n{}\n{}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                cluster.logs()
            ),
            Err(e) => panic!("cannot run redis-cli: {e}. {}", crate::INSTALL_HINT),
        }
        cluster.wait_ok();
        cluster
    }

    /// Waits (up to 30 s) until every running node reports `cluster_state:ok` and
    /// three primaries serve the slots.
    ///
    /// # Panics
    /// If that does not happen in time (with every node's log).
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(cluster_info)
                .collect();
            if states
                .iter()
                .all(|s| s.contains("cluster_state:ok") && s.contains("cluster_size:3"))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the cluster did not reach cluster_state:ok within 30 s: {states:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The first node's URL (a seed for clients).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The indices of the running nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let node = &self.nodes[i];
                node.is_running()
                    && node
                        .client()
                        .get_connection_with_timeout(Duration::from_secs(1))
                        .and_then(|mut c| {
                            redis::cmd("INFO")
                                .arg("replication")
                                .query::<String>(&mut c)
                        })
                        .is_ok_and(|info| info.contains("role:master"))
            })
            .collect()
    }

    /// Kills node `i` (`SIGKILL`); its data is lost.
    pub fn kill(&self, i: usize) {
        self.nodes[i].kill();
    }

    /// Freezes node `i` (`SIGSTOP`).
    pub fn pause(&self, i: usize) {
        self.nodes[i].pause();
    }

    /// Thaws node `i` (`SIGCONT`).
    pub fn resume(&self, i: usize) {
        self.nodes[i].resume();
    }

    /// Starts node `i` again on its port with its cluster configuration, so it
    /// rejoins with its slots (empty). Call [`wait_ok`](Self::wait_ok) to wait for
    /// the cluster to be healthy again.
    pub fn restart(&self, i: usize) {
        self.nodes[i].restart();
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} log ---\n{}", n.port(), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A redis-rs client for node `i` (commands to keys of other nodes get `MOVED`).
    pub fn client(&self, i: usize) -> redis::Client {
        self.nodes[i].client()
    }
}

/// `CLUSTER INFO` of a node, or the error as text.
fn cluster_info(node: &RedisServer) -> String {
    let info = node
        .client()
        .get_connection_with_timeout(Duration::from_secs(1));
    match info.and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c)) {
        Ok(s) => s,
        Err(e) => format!("unreachable: {e}"),
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Each node prints its own log when it drops during a panic.
            println!("--- the cluster's nodes follow ---");
        }
    }
}
