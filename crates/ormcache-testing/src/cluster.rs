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
///
/// use ormcache_testing::ClusterOptions;
/// let with_failover = ormcache_testing::RedisCluster::start_with(
///     &ClusterOptions::new().replicas(1).password("secret"),
/// );
/// # drop(with_failover);
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    password: Option<String>,
}

/// Options for [`RedisCluster::start_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Replicas per primary (`--cluster-replicas`), so that a killed primary fails
    /// over.
    pub replicas: usize,
    /// A password every node requires (`requirepass`, `masterauth`); the URLs carry
    /// it.
    pub password: Option<String>,
}

impl ClusterOptions {
    /// No replicas, no password.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replicas per primary.
    #[must_use]
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// A password every node requires.
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not form
    /// (the message includes every node's log).
    pub fn start() -> Self {
        Self::start_with(&ClusterOptions::default())
    }

    /// Starts a cluster with replicas or a password.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(options: &ClusterOptions) -> Self {
        check_installed();
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            // A replica's first sync starts at once instead of after 5 s: a
            // replica that never synced cannot be promoted.
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        if let Some(pw) = &options.password {
            for flag in ["--requirepass", "--masterauth"] {
                args.extend([flag.to_owned(), pw.clone()]);
            }
        }
        let server_options = ServerOptions {
            args,
            unix_socket: false,
        };
        let nodes: Vec<RedisServer> = (0..3 * (1 + options.replicas))
            .map(|_| RedisServer::start_with(server_options.clone()))
            .collect();
        let cluster = Self {
            nodes,
            password: options.password.clone(),
        };
        let mut create = Command::new("redis-cli");
        if let Some(pw) = &options.password {
            create.args(["--no-auth-warning", "-a", pw]);
        }
        let out = create
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port())),
            )
            .args([
                "--cluster-replicas",
                &options.replicas.to_string(),
                "--cluster-yes",
            ])
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
        if options.replicas > 0 {
            cluster.wait_replicas_synced();
        }
        cluster
    }

    /// Waits (up to 30 s) until every running replica reports its link to its
    /// primary up: a replica that never completed a sync is not eligible for
    /// failover, so a test that kills a primary right after the cluster formed
    /// would wait for a promotion that never comes.
    ///
    /// # Panics
    /// If that does not happen in time (with every node's log).
    pub fn wait_replicas_synced(&self) {
        self.wait_for("every replica synced with its primary", || {
            let lagging: Vec<u16> = self
                .running()
                .filter(|&i| {
                    let info = self.replication_info(i);
                    info.contains("role:slave") && !info.contains("master_link_status:up")
                })
                .map(|i| self.nodes[i].port())
                .collect();
            if lagging.is_empty() {
                Ok(())
            } else {
                Err(format!("replicas {lagging:?} not synced"))
            }
        });
    }

    /// Waits (up to 30 s) until every running node reports `cluster_state:ok` and
    /// three primaries serve the slots.
    ///
    /// # Panics
    /// If that does not happen in time (with every node's log).
    pub fn wait_ok(&self) {
        self.wait_for("cluster_state:ok", || {
            let states: Vec<String> = self
                .running()
                .map(|i| cluster_info(&self.client(i)))
                .collect();
            if states
                .iter()
                .all(|s| s.contains("cluster_state:ok") && s.contains("cluster_size:3"))
            {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        });
    }

    /// Polls `check` every 50 ms for up to 30 s; panics with its last complaint
    /// and every node's log.
    fn wait_for(&self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let complaint = match check() {
                Ok(()) => return,
                Err(c) => c,
            };
            if Instant::now() > deadline {
                panic!(
                    "the cluster did not reach {what} within 30 s: {complaint}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The indices of the nodes that run.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    /// Node `i`'s `INFO replication` (empty if it does not answer).
    fn replication_info(&self, i: usize) -> String {
        self.client(i)
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut c)
            })
            .unwrap_or_default()
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The first node's URL (a seed for clients), with the password if any.
    pub fn url(&self) -> String {
        self.node_url(0)
    }

    /// Node `i`'s URL, with the password if any.
    pub fn node_url(&self, i: usize) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.nodes[i].port()),
            None => self.nodes[i].url(),
        }
    }

    /// Every node's URL, with the password if any.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    /// The indices of the running nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        self.running()
            .filter(|&i| self.replication_info(i).contains("role:master"))
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

    /// A redis-rs client for node `i`, with the password if any (commands to keys
    /// of other nodes get `MOVED`).
    pub fn client(&self, i: usize) -> redis::Client {
        redis::Client::open(self.node_url(i)).unwrap()
    }
}

impl RedisCluster {
    fn query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        let mut conn = self
            .client(i)
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("node {i} unreachable: {e}"));
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("node {i}: {e}\n{}", self.logs()))
    }

    /// Node `i`'s cluster node id (`CLUSTER MYID`).
    pub fn node_id(&self, i: usize) -> String {
        self.query(i, redis::cmd("CLUSTER").arg("MYID"))
    }

    /// The slot of a raw key name (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        let i = self.primaries()[0];
        self.query(i, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
    }

    /// The node that serves `slot`, as a running primary sees the cluster.
    ///
    /// # Panics
    /// If no node serves it.
    pub fn slot_owner(&self, slot: u16) -> usize {
        let i = self.primaries()[0];
        match self.owner_seen_by(i, slot) {
            Some(id) => self.index_of_id(&id),
            None => panic!("no node serves slot {slot} (as node {i} sees it)"),
        }
    }

    /// The id of the node that node `i` says serves `slot` (`CLUSTER NODES`).
    fn owner_seen_by(&self, i: usize, slot: u16) -> Option<String> {
        let nodes: String = self.query(i, redis::cmd("CLUSTER").arg("NODES"));
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-').map(str::parse::<u16>);
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            serves.then(|| fields[0].to_owned())
        })
    }

    fn index_of_id(&self, id: &str) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].is_running() && self.node_id(i) == id)
            .unwrap_or_else(|| panic!("no running node has id {id}"))
    }

    /// Moves `slot` to primary `to` the way `redis-cli --cluster reshard` does,
    /// while clients keep using it: `IMPORTING` on the target, `MIGRATING` on the
    /// source (clients get `ASK` for keys already moved), `MIGRATE` of its keys in
    /// batches of 10, then `SETSLOT … NODE` on every primary. Nothing to do when
    /// `to` serves it already.
    ///
    /// # Panics
    /// If a step fails (with every node's log).
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.slot_owner(slot);
        if from == to {
            return;
        }
        self.begin_migration(slot, to);
        loop {
            let keys: Vec<Vec<u8>> = self.query(
                from,
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(10),
            );
            if keys.is_empty() {
                break;
            }
            self.migrate_keys(from, to, &keys);
        }
        self.end_migration(slot, from, to);
    }

    /// The first step of [`migrate_slot`](Self::migrate_slot): `slot` is marked
    /// importing on node `to` and migrating on its owner, which it returns. Until
    /// [`end_migration`](Self::end_migration), the owner answers commands for keys
    /// it no longer holds with `ASK` redirections to `to`.
    pub fn begin_migration(&self, slot: u16, to: usize) -> usize {
        let from = self.slot_owner(slot);
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.set_slot(to, slot, "IMPORTING", &from_id);
        self.set_slot(from, slot, "MIGRATING", &to_id);
        from
    }

    /// Moves `keys` (raw names) from node `from` to node `to` (`MIGRATE`).
    ///
    /// # Panics
    /// If `to` already holds one of them (`BUSYKEY`): a key must live on one node.
    pub fn migrate_keys(&self, from: usize, to: usize, keys: &[impl redis::ToRedisArgs]) {
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(self.nodes[to].port())
            .arg("")
            .arg(0)
            .arg(5000);
        if let Some(pw) = &self.password {
            migrate.arg("AUTH").arg(pw);
        }
        migrate.arg("KEYS").arg(keys);
        let _: redis::Value = self.query(from, &migrate);
    }

    /// The last step of [`migrate_slot`](Self::migrate_slot): every primary
    /// assigns `slot` to node `to`.
    ///
    /// A gossip message that the old owner sent before its own `SETSLOT` can still
    /// hand the slot back to it on a node that had taken the new assignment (seen
    /// here: the two nodes each naming the other, every key of the slot answered
    /// with `MOVED` for good). So the assignment is repeated on every primary that
    /// disagrees until all of them name `to`, twice in a row 50 ms apart.
    ///
    /// # Panics
    /// If they do not agree within 30 s.
    pub fn end_migration(&self, slot: u16, from: usize, to: usize) {
        let to_id = self.node_id(to);
        self.set_slot(to, slot, "NODE", &to_id);
        self.set_slot(from, slot, "NODE", &to_id);
        for i in self.primaries() {
            if i != from && i != to {
                self.set_slot(i, slot, "NODE", &to_id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut agreed = 0;
        while agreed < 2 {
            std::thread::sleep(Duration::from_millis(50));
            let mut others: Vec<usize> = self
                .primaries()
                .into_iter()
                .filter(|&i| self.owner_seen_by(i, slot).as_deref() != Some(to_id.as_str()))
                .collect();
            if others.is_empty() {
                agreed += 1;
                continue;
            }
            agreed = 0;
            assert!(
                Instant::now() < deadline,
                "slot {slot}: nodes {others:?} still do not name node {to} its owner\n{}",
                self.logs()
            );
            eprintln!(
                "slot {slot}: nodes {others:?} do not name node {to} its owner; assigning again"
            );
            // The new owner first, as in the first pass.
            others.sort_by_key(|&i| i != to);
            for i in others {
                self.set_slot(i, slot, "NODE", &to_id);
            }
        }
    }

    /// The number of keys node `i` holds in `slot` (`CLUSTER COUNTKEYSINSLOT`).
    pub fn keys_in_slot(&self, i: usize, slot: u16) -> usize {
        self.query(i, redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot))
    }

    fn set_slot(&self, node: usize, slot: u16, state: &str, id: &str) {
        let () = self.query(
            node,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id),
        );
    }

    /// The running replica of primary `primary`, if any.
    pub fn replica_of(&self, primary: usize) -> Option<usize> {
        let port = format!("master_port:{}", self.nodes[primary].port());
        (0..self.nodes.len()).find(|&i| {
            i != primary
                && self.nodes[i].is_running()
                && self
                    .query::<String>(i, redis::cmd("INFO").arg("replication"))
                    .lines()
                    .any(|l| l.trim() == port)
        })
    }

    /// A manual failover (`CLUSTER FAILOVER` on `replica`, which waits for the
    /// replica to catch up with its primary, so no acknowledged write is lost);
    /// returns once `replica` is a primary and the cluster is healthy.
    ///
    /// # Panics
    /// If that does not happen within 30 s (with every node's log).
    pub fn failover(&self, replica: usize) {
        let () = self.query(replica, redis::cmd("CLUSTER").arg("FAILOVER"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .query::<String>(replica, redis::cmd("INFO").arg("replication"))
            .contains("role:master")
        {
            assert!(
                Instant::now() < deadline,
                "node {replica} did not become a primary within 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_ok();
    }
}

/// `CLUSTER INFO` of a node, or the error as text.
fn cluster_info(node: &redis::Client) -> String {
    let info = node.get_connection_with_timeout(Duration::from_secs(1));
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
