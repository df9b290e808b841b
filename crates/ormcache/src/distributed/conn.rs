//! The connection of a [`DistributedCache`](super::DistributedCache): one server
//! (redis-rs `ConnectionManager`) or a Redis Cluster (redis-rs
//! `cluster_async::ClusterConnection`), behind one `ConnectionLike` so that every
//! operation is written once.
//!
//! On a cluster, a pipeline whose keys all hash to one slot goes whole to that
//! slot's node. Any other pipeline is split: the commands are grouped by the
//! primary that serves their slot (one pipeline per primary, sent concurrently,
//! each slot's commands in order). A multi-key command (`MGET`, `UNLINK`) whose
//! keys span slots becomes one command per slot, each in its slot's group, and
//! the replies are recombined. Then the commands without a key (`PUBLISH`,
//! `INFO`) run one after the other, in pipeline order: a `PUBLISH` that follows a
//! write is sent only once the write has been applied. The slot → primary map
//! comes from `CLUSTER SLOTS` and is read again when a group meets a redirection
//! (see [`cluster::split`]).

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
    Cluster(cluster::ClusterConn),
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
            Self::Cluster(c) => c.req_packed_command(cmd),
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
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
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
    // One slot map for every connection: they talk to the same cluster.
    let view = std::sync::Arc::new(cluster::SlotView::default());
    let mut conns = Vec::with_capacity(config.max_connections);
    for _ in 0..config.max_connections {
        let conn = if config.connect_lazily {
            client.get_pending_async_connection_with_config(cluster_config.clone())
        } else {
            let connecting = client.get_async_connection_with_config(cluster_config.clone());
            connect_within(config, &address, connecting).await?
        };
        conns.push(cluster::ClusterConn::new(
            conn,
            std::sync::Arc::clone(&view),
        ));
    }
    if !config.connect_lazily
        && let Some(first) = conns.first()
    {
        // So that the first batch is already grouped by primary (on failure,
        // the map is read in the background later).
        first.load_slot_map(config.connect_timeout).await;
    }
    Ok(Link {
        conns: conns.into_iter().map(Conn::Cluster).collect(),
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
pub(super) mod cluster;
