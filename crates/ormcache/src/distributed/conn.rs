//! The connection of a [`DistributedCache`](super::DistributedCache): one server
//! (redis-rs `ConnectionManager`) or a Redis Cluster (redis-rs
//! `cluster_async::ClusterConnection`), behind one `ConnectionLike` so that every
//! operation is written once.
//!
//! On a cluster, a pipeline whose keys all hash to one slot goes whole to that
//! slot's node. Any other pipeline is split: the
//! commands are grouped by slot and the groups are sent concurrently (each group
//! in order, as one pipeline, over the node's multiplexed connection). A multi-key
//! command (`MGET`, `UNLINK`) whose keys span slots becomes one command per slot,
//! each in its slot's group, and the replies are recombined. Then the commands
//! without a key (`PUBLISH`, `INFO`) run one after the other, in pipeline order: a
//! `PUBLISH` that follows a write is sent only once the write has been applied.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::io::tcp::TcpSettings;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::transport::Transport;
use crate::config::DistributedConfig;
use crate::error::{Error, ErrorKind, Result, from_redis};

/// A server that a `SCAN` (or another per-server command) runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// The single server.
    Only,
    /// One primary of a cluster, by address.
    #[cfg(feature = "cluster")]
    Primary(String, u16),
}

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
    /// The master of a Sentinel service, followed across failovers.
    #[cfg(feature = "sentinel")]
    Sentinel(super::sentinel::SentinelConn),
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Only => f.write_str("the server"),
            #[cfg(feature = "cluster")]
            Self::Primary(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

impl Conn {
    #[cfg(feature = "cluster")]
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `cmd` on one server (a cluster primary by address).
    pub(super) async fn on_node(&mut self, node: &Node, cmd: &Cmd) -> redis::RedisResult<Value> {
        match (self, node) {
            #[cfg(feature = "cluster")]
            (Self::Cluster(c), Node::Primary(host, port)) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                c.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await
            }
            (conn, _) => cmd.query_async::<Value>(conn).await,
        }
    }

    /// A client for the server this connection talks to now, when that can change
    /// (the master of a Sentinel service); `None` otherwise.
    pub(super) fn current_client(&self) -> Option<redis::Client> {
        match self {
            #[cfg(feature = "sentinel")]
            Self::Sentinel(s) => s.current_client(),
            _ => None,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "sentinel")]
            Self::Sentinel(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => {
                if matches!(cluster::plan(cmd), cluster::Plan::Split(_)) {
                    let conn = c.clone();
                    Box::pin(async move {
                        let mut one = redis::pipe();
                        one.add_command(cmd.clone());
                        let mut replies = cluster::split_pipeline(conn, &one).await?;
                        Ok(replies.pop().unwrap_or(Value::Nil))
                    })
                } else {
                    c.req_packed_command(cmd)
                }
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => {
                if pipeline.is_transaction()
                    || offset != 0
                    || count != pipeline.len()
                    || cluster::one_slot(pipeline)
                {
                    // redis-rs sends it whole, in order, to the slot's node.
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(cluster::split_pipeline(c.clone(), pipeline))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "sentinel")]
            Self::Sentinel(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// What `create` connected.
pub(super) struct Link {
    pub(super) conns: Vec<Conn>,
    /// Clients for the invalidation subscriber (one per cluster seed).
    pub(super) pubsub: Vec<redis::Client>,
    pub(super) address: String,
    pub(super) slot_tags: bool,
    /// A cluster's seeds, for a subscriber connection.
    #[cfg(feature = "cluster")]
    pub(super) seeds: Option<ClusterSeeds>,
}

/// Connects to whatever the URL names: one server, a cluster, a Sentinel service.
pub(super) async fn connect(config: &DistributedConfig, tcp: TcpSettings) -> Result<Link> {
    let transport = Transport::new(config, tcp)?;
    match transport.url().topology() {
        #[cfg(feature = "cluster")]
        crate::config::Topology::Cluster => connect_cluster(config, &transport).await,
        #[cfg(feature = "sentinel")]
        crate::config::Topology::Sentinel => super::sentinel::connect(config, &transport).await,
        // `Transport::new` refused the forms whose feature is missing.
        _ => connect_single(config, &transport).await,
    }
}

/// Awaits `connecting` within the connect timeout, naming `address` on failure.
pub(super) async fn connect_within<T>(
    config: &DistributedConfig,
    address: &str,
    connecting: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => {
            Err(from_redis("create", e).with_detail(format!("cannot connect to {address}")))
        }
        Err(_) => Err(
            Error::new(ErrorKind::Timeout, "create").with_detail(format!(
                "cannot connect to {address} within {:?}",
                config.connect_timeout
            )),
        ),
    }
}

async fn connect_single(config: &DistributedConfig, transport: &Transport) -> Result<Link> {
    let address = transport.address();
    let client = transport.client(None)?;
    let manager_config = super::health::manager_config(config);
    let mut conns = Vec::with_capacity(config.max_connections);
    for _ in 0..config.max_connections {
        let conn = if config.connect_lazily {
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|e| {
                    from_redis("create", e).with_detail(format!("cannot connect to {address}"))
                })?
        } else {
            let connecting =
                ConnectionManager::new_with_config(client.clone(), manager_config.clone());
            connect_within(config, &address, connecting).await?
        };
        conns.push(Conn::Single(conn));
    }
    Ok(Link {
        conns,
        pubsub: vec![client],
        address,
        slot_tags: false,
        #[cfg(feature = "cluster")]
        seeds: None,
    })
}

#[cfg(feature = "cluster")]
async fn connect_cluster(config: &DistributedConfig, transport: &Transport) -> Result<Link> {
    let address = format!("cluster {}", transport.address());
    let slot_tags = super::cluster::needs_slot_tags(&config.key_prefix)?;
    let infos = transport
        .url()
        .tcp_hosts()
        .iter()
        .map(|h| transport.info(Some(h)))
        .collect::<Result<Vec<_>>>()?;
    let pubsub = transport.clients()?;
    let seeds = ClusterSeeds {
        infos,
        #[cfg(feature = "tls")]
        certs: transport.certs().cloned(),
        insecure: transport.url().is_insecure(),
        tcp: transport.tcp().clone(),
        connect_timeout: config.connect_timeout,
        response_timeout: config.command_timeout,
    };
    let client = seeds
        .builder()
        .build()
        .map_err(|e| Error::invalid("create", format!("bad cluster_nodes {address}: {e}")))?;
    let cluster_config = seeds.config();
    let mut conns = Vec::with_capacity(config.max_connections);
    for _ in 0..config.max_connections {
        let conn = if config.connect_lazily {
            client.get_pending_async_connection_with_config(cluster_config.clone())
        } else {
            let connecting = client.get_async_connection_with_config(cluster_config.clone());
            connect_within(config, &address, connecting).await?
        };
        conns.push(Conn::Cluster(conn));
    }
    Ok(Link {
        conns,
        pubsub,
        address,
        slot_tags,
        seeds: Some(seeds),
    })
}

/// What the cluster connections are built from, kept to build a subscriber
/// connection of its own (`Protocol::Fleet`: RESP3, sharded pub/sub, tracking
/// redirected to it on every primary).
#[cfg(feature = "cluster")]
#[derive(Clone)]
pub(super) struct ClusterSeeds {
    infos: Vec<redis::ConnectionInfo>,
    #[cfg(feature = "tls")]
    certs: Option<redis::TlsCertificates>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    insecure: bool,
    tcp: TcpSettings,
    connect_timeout: std::time::Duration,
    response_timeout: std::time::Duration,
}

#[cfg(feature = "cluster")]
impl ClusterSeeds {
    fn builder(&self) -> redis::cluster::ClusterClientBuilder {
        let builder = redis::cluster::ClusterClientBuilder::new(self.infos.clone());
        #[cfg(feature = "tls")]
        let builder = match &self.certs {
            Some(certs) if self.insecure => {
                builder.tls(redis::TlsMode::Insecure).certs(certs.clone())
            }
            Some(certs) => builder.certs(certs.clone()),
            None => builder,
        };
        builder
            .tcp_settings(self.tcp.clone())
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
    }

    fn config(&self) -> redis::cluster::ClusterConfig {
        redis::cluster::ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout)
    }

    /// A RESP3 connection whose pushes (messages, tracking invalidations,
    /// disconnections) go to `pushes`. It starts from the seeds and `primaries`
    /// (the nodes the cluster reports now: the seeds may all be gone after a
    /// failover).
    pub(super) async fn subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
        primaries: &[Node],
    ) -> Result<redis::cluster_async::ClusterConnection> {
        let mut seeds = self.clone();
        if let Some(first) = self.infos.first() {
            for node in primaries {
                let Node::Primary(host, port) = node else {
                    continue;
                };
                let addr = match first.addr() {
                    redis::ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => redis::ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => redis::ConnectionAddr::Tcp(host.clone(), *port),
                };
                seeds.infos.push(first.clone().set_addr(addr));
            }
        }
        let client = seeds
            .builder()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
            .map_err(|e| crate::error::from_redis("subscribe", e))?;
        client
            .get_async_connection_with_config(self.config())
            .await
            .map_err(|e| crate::error::from_redis("subscribe", e))
    }
}

#[cfg(feature = "cluster")]
mod cluster {
    use std::collections::HashMap;

    use futures_util::future::try_join_all;
    use redis::aio::ConnectionLike;
    use redis::cluster_async::ClusterConnection;
    use redis::cluster_routing::Slot;
    use redis::{Cmd, Pipeline, RedisResult, Value};

    /// How a command reaches the cluster. Knows the commands ormcache sends.
    #[derive(Debug, PartialEq)]
    pub(super) enum Plan {
        /// Every key in one slot.
        Slot(Slot),
        /// A multi-key command whose keys span slots: sent as one command per slot
        /// and recombined (never as a fan-out that could skip a node redis-rs has
        /// no connection to).
        Split(Combine),
        /// No key (or an invalid cross-slot script): sent alone, after the rest.
        Later,
    }

    /// How the parts of a split command are recombined.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) enum Combine {
        /// `MGET`: the values, in key order.
        Values,
        /// `UNLINK`, `DEL`, `EXISTS`: the sum.
        Count,
    }

    fn args(cmd: &Cmd) -> Vec<&[u8]> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes,
                _ => b"0",
            })
            .collect()
    }

    pub(super) fn plan(cmd: &Cmd) -> Plan {
        let args = args(cmd);
        let Some(name) = args.first().map(|n| n.to_ascii_uppercase()) else {
            return Plan::Later;
        };
        let (keys, combine) = match name.as_slice() {
            b"PUBLISH" | b"PING" | b"INFO" | b"DBSIZE" | b"SCAN" | b"CLUSTER" => {
                return Plan::Later;
            }
            b"EVAL" | b"EVALSHA" => {
                let n = args
                    .get(2)
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                (args.get(3..3 + n).unwrap_or_default(), None)
            }
            b"MGET" => (args.get(1..).unwrap_or_default(), Some(Combine::Values)),
            b"UNLINK" | b"DEL" | b"EXISTS" => {
                (args.get(1..).unwrap_or_default(), Some(Combine::Count))
            }
            _ => (args.get(1..2).unwrap_or_default(), None),
        };
        match (same_slot(keys), combine) {
            (Some(slot), _) => Plan::Slot(slot),
            (None, Some(c)) if !keys.is_empty() => Plan::Split(c),
            (None, _) => Plan::Later,
        }
    }

    /// Whether every command of `pipeline` has its keys in one and the same slot.
    /// (redis-rs would route a keyless `PUBLISH` by its channel name, as if it
    /// were a key: such pipelines are split.)
    pub(super) fn one_slot(pipeline: &Pipeline) -> bool {
        let mut seen = None;
        pipeline.cmd_iter().all(|cmd| match plan(cmd) {
            Plan::Later | Plan::Split(_) => false,
            Plan::Slot(slot) => *seen.get_or_insert(slot) == slot,
        })
    }

    fn same_slot(keys: &[&[u8]]) -> Option<Slot> {
        let first = Slot::for_key(keys.first()?);
        keys.iter()
            .all(|k| Slot::for_key(k) == first)
            .then_some(first)
    }

    /// Where a command's reply comes from.
    enum Route {
        /// This position of the slot's pipeline.
        Whole(Slot, usize),
        /// Parts (slot, position, indices of the keys they carry) of `keys` keys.
        Split(Combine, Vec<(Slot, usize, Vec<usize>)>, usize),
        Later,
    }

    /// Runs a non-transactional pipeline on a cluster (see the module docs); the
    /// replies are in pipeline order, as if it had been one pipeline.
    pub(super) async fn split_pipeline(
        conn: ClusterConnection,
        pipeline: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        let mut groups: HashMap<Slot, Pipeline> = HashMap::new();
        let mut push = |slot: Slot, cmd: Cmd| {
            let pipe = groups.entry(slot).or_insert_with(redis::pipe);
            pipe.add_command(cmd);
            pipe.len() - 1
        };
        let mut routes = Vec::with_capacity(pipeline.len());
        for cmd in pipeline.cmd_iter() {
            routes.push(match plan(cmd) {
                Plan::Slot(slot) => Route::Whole(slot, push(slot, cmd.clone())),
                Plan::Later => Route::Later,
                Plan::Split(combine) => {
                    let args = args(cmd);
                    let keys = &args[1..];
                    let mut by_slot: Vec<(Slot, Vec<usize>)> = Vec::new();
                    for (i, k) in keys.iter().enumerate() {
                        let slot = Slot::for_key(k);
                        match by_slot.iter_mut().find(|(s, _)| *s == slot) {
                            Some((_, indices)) => indices.push(i),
                            None => by_slot.push((slot, vec![i])),
                        }
                    }
                    let parts = by_slot
                        .into_iter()
                        .map(|(slot, indices)| {
                            let mut part = Cmd::new();
                            part.arg(args[0]);
                            for &i in &indices {
                                part.arg(keys[i]);
                            }
                            (slot, push(slot, part), indices)
                        })
                        .collect();
                    Route::Split(combine, parts, keys.len())
                }
            });
        }
        let sends = groups.into_iter().map(|(slot, pipe)| {
            let mut conn = conn.clone();
            async move {
                let replies = conn.req_packed_commands(&pipe, 0, pipe.len()).await?;
                Ok::<_, redis::RedisError>((slot, replies))
            }
        });
        let mut replies: HashMap<Slot, Vec<Value>> =
            try_join_all(sends).await?.into_iter().collect();
        let mut take = |slot: Slot, pos: usize| {
            replies
                .get_mut(&slot)
                .and_then(|r| r.get_mut(pos))
                .map(|v| std::mem::replace(v, Value::Nil))
                .unwrap_or(Value::Nil)
        };
        let mut conn = conn;
        let mut out = Vec::with_capacity(routes.len());
        for (cmd, route) in pipeline.cmd_iter().zip(routes) {
            out.push(match route {
                Route::Whole(slot, pos) => take(slot, pos),
                Route::Later => conn.req_packed_command(cmd).await?,
                Route::Split(combine, parts, keys) => {
                    let parts = parts
                        .into_iter()
                        .map(|(slot, pos, indices)| (take(slot, pos), indices));
                    recombine(combine, parts, keys)
                }
            });
        }
        Ok(out)
    }

    /// One reply from the parts of a split command (an error reply of a part is
    /// the reply).
    fn recombine(
        combine: Combine,
        parts: impl Iterator<Item = (Value, Vec<usize>)>,
        keys: usize,
    ) -> Value {
        let mut values = vec![Value::Nil; if combine == Combine::Values { keys } else { 0 }];
        let mut count = 0i64;
        for (reply, indices) in parts {
            match (combine, reply) {
                (Combine::Values, Value::Array(vs)) => {
                    for (i, v) in indices.into_iter().zip(vs) {
                        values[i] = v;
                    }
                }
                (Combine::Count, Value::Int(n)) => count += n,
                (_, other) => return other,
            }
        }
        match combine {
            Combine::Values => Value::Array(values),
            Combine::Count => Value::Int(count),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn commands_are_planned_by_the_slot_of_their_keys() {
            let slot = |k: &str| Plan::Slot(Slot::for_key(k));
            assert_eq!(plan(redis::cmd("GET").arg("a")), slot("a"));
            assert_eq!(plan(redis::cmd("PUBLISH").arg("ch").arg("x")), Plan::Later);
            assert_eq!(plan(redis::cmd("MGET").arg("{t}1").arg("{t}2")), slot("t"));
            // "a" and "b" hash to different slots.
            assert_ne!(Slot::for_key("a"), Slot::for_key("b"));
            assert_eq!(
                plan(redis::cmd("MGET").arg("a").arg("b")),
                Plan::Split(Combine::Values)
            );
            assert_eq!(
                plan(redis::cmd("UNLINK").arg("a").arg("b")),
                Plan::Split(Combine::Count)
            );
            assert_eq!(
                plan(
                    redis::cmd("EVAL")
                        .arg("return 1")
                        .arg(2)
                        .arg("{x}a")
                        .arg("{x}b")
                        .arg("v")
                ),
                slot("x")
            );
            assert_eq!(plan(redis::cmd("EVAL").arg("return 1").arg(0)), Plan::Later);
        }

        #[test]
        fn pipelines_of_one_slot_are_not_split() {
            let mut p = redis::pipe();
            p.cmd("UNLINK")
                .arg("{k}lease")
                .cmd("UNLINK")
                .arg("{k}")
                .cmd("PUBLISH")
                .arg("ch")
                .arg("m");
            assert!(!one_slot(&p), "PUBLISH is sent after the rest");
            let mut q = redis::pipe();
            q.cmd("GET").arg("{k}").cmd("PTTL").arg("{k}");
            assert!(one_slot(&q));
            q.cmd("GET").arg("other");
            assert!(!one_slot(&q));
            let mut m = redis::pipe();
            m.cmd("MGET").arg("a").arg("b");
            assert!(!one_slot(&m));
        }

        #[test]
        fn split_replies_are_recombined_in_key_order() {
            let parts = vec![
                (Value::Array(vec![Value::Int(1), Value::Int(3)]), vec![0, 2]),
                (Value::Array(vec![Value::Int(2)]), vec![1]),
            ];
            assert_eq!(
                recombine(Combine::Values, parts.into_iter(), 3),
                Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
            );
            let parts = vec![(Value::Int(2), vec![0, 1]), (Value::Int(1), vec![2])];
            assert_eq!(
                recombine(Combine::Count, parts.into_iter(), 3),
                Value::Int(3)
            );
        }
    }
}
