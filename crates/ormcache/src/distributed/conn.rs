//! The connection of a [`DistributedCache`](super::DistributedCache): one server
//! (redis-rs `ConnectionManager`) or a Redis Cluster (redis-rs
//! `cluster_async::ClusterConnection`), behind one `ConnectionLike` so that every
//! operation is written once.
//!
//! On a cluster, a pipeline whose commands hash to several slots is split: the
//! single-slot commands are grouped by slot and the groups are sent concurrently
//! (each group in order, as one pipeline, over the node's multiplexed connection);
//! then the commands that span slots or have no key (`MGET` of keys in several
//! slots, `PUBLISH`, `INFO`) run one after the other, in pipeline order. So a
//! `PUBLISH` that follows a write is sent only once the write has been applied.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A server that a `SCAN` (or another per-server command) runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
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
}

impl Conn {
    #[cfg(feature = "cluster")]
    pub(super) fn is_cluster(&self) -> bool {
        !matches!(self, Self::Single(_))
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
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
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
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => {
                if pipeline.is_transaction() || offset != 0 || count != pipeline.len() {
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
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.get_db(),
        }
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

    /// The slot all of `cmd`'s keys hash to; `None` for a command without keys or
    /// whose keys span slots. Knows the commands ormcache sends.
    fn single_slot(cmd: &Cmd) -> Option<Slot> {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes,
                _ => b"0",
            })
            .collect();
        let keys = match args.first()?.to_ascii_uppercase().as_slice() {
            b"PUBLISH" | b"PING" | b"INFO" | b"DBSIZE" | b"SCAN" | b"CLUSTER" => return None,
            b"EVAL" | b"EVALSHA" => {
                let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
                args.get(3..3 + n)?
            }
            b"MGET" | b"UNLINK" | b"DEL" | b"EXISTS" => args.get(1..)?,
            _ => args.get(1..2)?,
        };
        same_slot(keys.iter().copied())
    }

    fn same_slot<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Option<Slot> {
        let mut slot = None;
        for k in keys {
            let s = Slot::for_key(k);
            match slot {
                None => slot = Some(s),
                Some(first) if first != s => return None,
                Some(_) => {}
            }
        }
        slot
    }

    /// Runs a non-transactional pipeline on a cluster (see the module docs); the
    /// replies are in pipeline order, as if it had been one pipeline.
    pub(super) async fn split_pipeline(
        conn: ClusterConnection,
        pipeline: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
        let mut groups: HashMap<Slot, Vec<usize>> = HashMap::new();
        let mut later = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            match single_slot(c) {
                Some(slot) => groups.entry(slot).or_default().push(i),
                None => later.push(i),
            }
        }
        let mut out = vec![Value::Nil; cmds.len()];
        let sends = groups.into_values().map(|indices| {
            let mut conn = conn.clone();
            let mut pipe = redis::pipe();
            for &i in &indices {
                pipe.add_command(cmds[i].clone());
            }
            async move {
                let replies = conn.req_packed_commands(&pipe, 0, indices.len()).await?;
                Ok::<_, redis::RedisError>((indices, replies))
            }
        });
        for (indices, replies) in try_join_all(sends).await? {
            for (i, v) in indices.into_iter().zip(replies) {
                out[i] = v;
            }
        }
        let mut conn = conn;
        for i in later {
            out[i] = conn.req_packed_command(cmds[i]).await?;
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn commands_are_grouped_by_the_slot_of_their_keys() {
            let slot = |c: &Cmd| single_slot(c);
            assert_eq!(slot(redis::cmd("GET").arg("a")), Some(Slot::for_key("a")));
            assert_eq!(slot(redis::cmd("PUBLISH").arg("ch").arg("x")), None);
            assert_eq!(
                slot(redis::cmd("MGET").arg("{t}1").arg("{t}2")),
                Some(Slot::for_key("t"))
            );
            // "a" and "b" hash to different slots.
            assert_ne!(Slot::for_key("a"), Slot::for_key("b"));
            assert_eq!(slot(redis::cmd("MGET").arg("a").arg("b")), None);
            assert_eq!(
                slot(
                    redis::cmd("EVAL")
                        .arg("return 1")
                        .arg(2)
                        .arg("{x}a")
                        .arg("{x}b")
                        .arg("v")
                ),
                Some(Slot::for_key("x"))
            );
            assert_eq!(slot(redis::cmd("EVAL").arg("return 1").arg(0)), None);
        }
    }
}
