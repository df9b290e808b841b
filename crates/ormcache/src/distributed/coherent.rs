//! The parts of [`DistributedCache`] that [`HybridCache`](crate::HybridCache) builds
//! on: writes that carry an invalidation message in the same round trip, reads that
//! also return the remaining TTL, and the server's identity.

use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;

use super::{
    DistributedCache, HOLDERS_SCRIPT, Holder, NOTIFY_SCRIPT, Notice, Reached, Request, full_key,
    is_wrong_type,
};
use crate::cache::CacheValue;
use crate::error::Result;
use crate::key;
use crate::stats::Stat;

/// An L2 hit with what an L1 fill needs.
#[derive(Debug)]
pub(crate) struct Found<T> {
    pub(crate) value: Arc<T>,
    /// Stored size.
    pub(crate) bytes: u64,
    /// Remaining TTL (`None`: no expiry).
    pub(crate) remaining: Option<Duration>,
    /// The entry's tags, if it has any.
    pub(crate) tags: Option<Arc<[String]>>,
}

impl DistributedCache {
    /// Closes the breaker: Redis was just seen answering on another connection.
    pub(crate) fn reset_breaker(&self) {
        self.inner.breaker.close();
    }

    /// Stores already encoded bytes (validated key and TTL), publishing `notice`
    /// in the same round trip. Removes the key's lease first, like every write: a
    /// fill or refresh that started before this write does not store over it.
    pub(crate) async fn set_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        ttl: Duration,
        notice: Option<&Notice>,
    ) -> Result<()> {
        let full = full_key(&self.inner.prefix, key);
        // Sized once (the value is most of it): no regrowth while it is built.
        let mut cmd = redis::Cmd::with_capacity(5, 3 + full.len() + bytes.len() + 2 + 20);
        cmd.arg("SET")
            .arg(&full)
            .arg(bytes)
            .arg("PX")
            .arg(key::ttl_millis(ttl));
        self.exec_with::<()>("set", Some(key), cmd, Some(self.unlink_lease(key)), notice)
            .await?;
        self.inner.counters.add(Stat::Set, 1);
        Ok(())
    }

    /// Runs `cmd`, followed by `PUBLISH` of `notice` in the same round trip.
    pub(crate) async fn exec<T: FromRedisValue>(
        &self,
        op: &'static str,
        key: Option<&str>,
        cmd: redis::Cmd,
        notice: Option<&Notice>,
    ) -> Result<T> {
        self.exec_with(op, key, cmd, None, notice).await
    }

    /// Runs `also` (reply ignored), then `cmd`, then `PUBLISH` of `notice`: one
    /// round trip. (`also` goes first: a delete removes the lease before the entry,
    /// so that no fill can store between the two.)
    async fn exec_with<T: FromRedisValue>(
        &self,
        op: &'static str,
        key: Option<&str>,
        cmd: redis::Cmd,
        also: Option<redis::Cmd>,
        notice: Option<&Notice>,
    ) -> Result<T> {
        if also.is_none() && notice.is_none() {
            return self.query(op, key, &cmd).await;
        }
        let also = match (also, notice) {
            (Some(also), None) => {
                // The common write (`set`): the lease's `UNLINK` and the write,
                // whose reply is the answer.
                let mut pipe = redis::Pipeline::with_capacity(2);
                pipe.add_command(also).add_command(cmd);
                return self.call(op, key, Request::Last(&pipe)).await;
            }
            (also, _) => also,
        };
        let mut pipe = redis::pipe();
        if let Some(also) = also {
            pipe.add_command(also).ignore();
        }
        pipe.add_command(cmd);
        match notice.filter(|n| push_notice(&mut pipe, n)) {
            Some(n) => {
                let mut replies = self
                    .run_delivering(op, key, &pipe, &[(n, 1, usize::MAX)])
                    .await?;
                if replies.is_empty() {
                    return Err(crate::Error::new(crate::ErrorKind::Server, op)
                        .with_detail("a pipeline reply is missing"));
                }
                let first = replies.remove(0);
                let v = redis::from_redis_value::<T>(first)
                    .map_err(|e| crate::error::from_redis(op, e.into()))?;
                Ok(v)
            }
            None => {
                let (v,): (T,) = self.call(op, key, Request::Pipe(&pipe)).await?;
                Ok(v)
            }
        }
    }

    /// Completes the delivery of a `Protocol::Fleet` message from the replies of
    /// what [`push_notice`] added: records who it reached, and on a cluster sends
    /// it to each holder the registries named (`SPUBLISH` to its inbox, whose
    /// shard is its own). A holder that cannot be sent the message is logged and
    /// not waited for; its inbox's node is out of reach, and when that node comes
    /// back the holder's subscription will have been lost with it (which flushes
    /// its L1). (Run by [`run_delivering`](Self::run_delivering), from a task a
    /// dropped caller does not stop.)
    pub(crate) async fn deliver(&self, n: &Notice, replies: &[redis::Value]) {
        let Some(fleet) = &n.fleet else { return };
        if fleet.registries.is_empty() {
            let count = replies
                .first()
                .and_then(|r| redis::from_redis_value_ref::<u64>(r).ok())
                .unwrap_or(0);
            fleet.set(Reached::Subscribers(count));
            return;
        }
        let mut holders: Vec<u64> = replies.iter().flat_map(super::holder_ids).collect();
        holders.sort_unstable();
        holders.dedup();
        holders.retain(|h| *h != fleet.me);
        if !n.sharded {
            // Already published by the script, to those still subscribed.
            fleet.set(Reached::Holders(holders));
            return;
        }
        let sends = holders.iter().map(|h| async move {
            let mut cmd = redis::cmd("SPUBLISH");
            cmd.arg(format!("{}{h}", fleet.inbox)).arg(&n.payload);
            match self.query::<u64>("publish", None, &cmd).await {
                Ok(receivers) => (receivers > 0).then_some(*h),
                Err(e) => {
                    tracing::warn!(error = %e, holder = h, "invalidation not delivered to a holder's inbox");
                    None
                }
            }
        });
        let reached = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        fleet.set(Reached::Holders(reached));
    }

    /// `UNLINK` of `key`'s lease: what every write runs before it writes, so that
    /// a fill (or refresh) whose lease was taken before the write does not store.
    pub(super) fn unlink_lease(&self, key: &str) -> redis::Cmd {
        let lease = self.lease_key(key);
        let mut cmd = redis::Cmd::with_capacity(2, 6 + lease.len());
        cmd.arg("UNLINK").arg(lease);
        cmd
    }

    /// Publishes `notice` alone.
    pub(crate) async fn publish(&self, op: &'static str, notice: &Notice) -> Result<()> {
        self.publish_all(op, std::slice::from_ref(notice)).await
    }

    /// Publishes every notice in one round trip (acknowledgements).
    pub(crate) async fn publish_all(&self, op: &'static str, notices: &[Notice]) -> Result<()> {
        let mut pipe = redis::pipe();
        let read: Vec<(&Notice, usize)> = notices
            .iter()
            .filter(|n| push_notice(&mut pipe, n))
            .map(|n| (n, replies_of(n)))
            .collect();
        let mut start = 0;
        let parts: Vec<(&Notice, usize, usize)> = read
            .into_iter()
            .map(|(n, count)| {
                start += count;
                (n, start - count, count)
            })
            .collect();
        self.run_delivering(op, None, &pipe, &parts).await?;
        Ok(())
    }

    /// Runs `pipe`, whose replies from `start` on (`count` of them) belong to each
    /// notice, then completes each notice's delivery ([`deliver`](Self::deliver)).
    /// When a delivery takes a second round trip (the fleet protocol on a
    /// cluster), both round trips run in a task of their own: the first empties
    /// the holder registries, so a caller dropped between the two would leave
    /// the holders unmessaged, their copies stale until they expire.
    async fn run_delivering(
        &self,
        op: &'static str,
        key: Option<&str>,
        pipe: &redis::Pipeline,
        notices: &[(&Notice, usize, usize)],
    ) -> Result<Vec<redis::Value>> {
        async fn run(
            cache: &DistributedCache,
            op: &'static str,
            key: Option<&str>,
            pipe: &redis::Pipeline,
            notices: &[(&Notice, usize, usize)],
        ) -> Result<Vec<redis::Value>> {
            let replies: Vec<redis::Value> = cache.call(op, key, Request::Pipe(pipe)).await?;
            for (n, start, count) in notices {
                let start = (*start).min(replies.len());
                let end = start.saturating_add(*count).min(replies.len());
                cache.deliver(n, &replies[start..end]).await;
            }
            Ok(replies)
        }
        if !notices.iter().any(|(n, _, _)| n.delivers_later()) {
            return run(self, op, key, pipe, notices).await;
        }
        let cache = self.clone();
        let key = key.map(str::to_owned);
        let pipe = pipe.clone();
        let owned: Vec<(Notice, usize, usize)> = notices
            .iter()
            .map(|(n, start, count)| ((*n).clone(), *start, *count))
            .collect();
        tokio::spawn(async move {
            let notices: Vec<(&Notice, usize, usize)> =
                owned.iter().map(|(n, s, c)| (n, *s, *c)).collect();
            run(&cache, op, key.as_deref(), &pipe, &notices).await
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::Error::new(crate::ErrorKind::Connection, op)
                .with_detail(format!("the round trip's task failed: {e}")))
        })
    }

    /// The registry of the instances holding `key` in L1 (`Protocol::Fleet`), in
    /// the entry's slot on a cluster.
    pub(crate) fn holders_key(&self, key: &str) -> String {
        #[cfg(feature = "cluster")]
        if self.inner.slot_tags {
            return super::cluster::holders_key(&self.inner.prefix, key);
        }
        key::holders_key(&self.inner.prefix, key)
    }

    /// `GET` and `PTTL` in one round trip: the value, its stored size and its
    /// remaining lifetime (`None`: no expiry).
    pub(crate) async fn get_with_ttl<T: CacheValue>(&self, key: &str) -> Result<Option<Found<T>>> {
        self.get_holding::<T>(key, None).await
    }

    /// [`get_with_ttl`](Self::get_with_ttl) by a reader that may copy the value
    /// into its L1 (`Protocol::Fleet`): registered and tracked first.
    pub(crate) async fn get_holding<T: CacheValue>(
        &self,
        key: &str,
        holder: Option<&Holder>,
    ) -> Result<Option<Found<T>>> {
        let full = full_key(&self.inner.prefix, key);
        let mut pipe = redis::pipe();
        if let Some(h) = holder {
            self.push_holder(&mut pipe, key, h);
        }
        pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        let reply = self
            .call::<(Option<Vec<u8>>, i64)>("get", Some(key), Request::Pipe(&pipe))
            .await;
        let (bytes, pttl) = match reply {
            Ok(r) => r,
            Err(e) if is_wrong_type(&e) => {
                return self.decode_entry::<T>("get", key, &[]).map(|_| None);
            }
            Err(e) => return Err(e),
        };
        let Some(bytes) = bytes else {
            self.inner.counters.add(Stat::Miss, 1);
            return Ok(None);
        };
        let remaining = (pttl >= 0).then(|| Duration::from_millis(pttl as u64));
        if remaining == Some(Duration::ZERO) {
            self.inner.counters.add(Stat::Miss, 1);
            return Ok(None);
        }
        Ok(self
            .resolve_tagged("get", key, &bytes)
            .await?
            .map(|(value, tags)| Found {
                value,
                bytes: bytes.len() as u64,
                remaining,
                tags,
            }))
    }

    pub(crate) async fn delete_notify(&self, key: &str, notice: Option<&Notice>) -> Result<bool> {
        key::validate("delete", key)?;
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(full_key(&self.inner.prefix, key));
        // A fill of this key that started before the delete must not store.
        let n: u64 = self
            .exec_with(
                "delete",
                Some(key),
                cmd,
                Some(self.unlink_lease(key)),
                notice,
            )
            .await?;
        self.inner.counters.meter.level.deletes.increment(n);
        Ok(n > 0)
    }

    pub(crate) async fn expire_notify(
        &self,
        key: &str,
        ttl: Duration,
        notice: Option<&Notice>,
    ) -> Result<bool> {
        key::validate("expire", key)?;
        key::validate_ttl("expire", key, ttl)?;
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(full_key(&self.inner.prefix, key))
            .arg(key::ttl_millis(ttl));
        // A refresh that started before must not store over the new TTL.
        let n: u64 = self
            .exec_with(
                "expire",
                Some(key),
                cmd,
                Some(self.unlink_lease(key)),
                notice,
            )
            .await?;
        self.inner.counters.meter.level.deletes.increment(n);
        Ok(n > 0)
    }

    /// Registers `h` as a holder of `key` before the read that follows, and, when
    /// it is tracked, has Redis track that read (ignored replies; on a connection
    /// whose tracking is off the round trip fails: see
    /// [`is_tracking_off`](super::is_tracking_off)).
    pub(crate) fn push_holder(&self, pipe: &mut redis::Pipeline, key: &str, h: &Holder) {
        let registry = self.holders_key(key);
        pipe.cmd("SADD").arg(&registry).arg(h.me).ignore();
        pipe.cmd("PEXPIRE").arg(&registry).arg(h.ttl_ms).ignore();
        push_tracked(pipe, h);
    }

    /// The subscriber connection of `Protocol::Fleet`: RESP3, so that pub/sub
    /// messages and tracking invalidations arrive as pushes (to `pushes`, which
    /// also hears of its disconnection), subscribed to `channels` (sharded on a
    /// cluster). Its id on each server is where tracking is redirected.
    pub(crate) async fn fleet_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
        channels: &[&str],
    ) -> Result<Subscriber> {
        let failed = |e: redis::RedisError| crate::error::from_redis("subscribe", e);
        #[cfg(feature = "cluster")]
        if let Some(seeds) = &self.inner.seeds {
            let primaries = self.primary_slots("subscribe").await?;
            let nodes: Vec<_> = primaries.iter().map(|(n, _)| n.clone()).collect();
            let mut conn = seeds.subscriber(pushes, &nodes).await?;
            let mut redirects = Some(Vec::new());
            for (node, slot) in primaries {
                let id = on_slot(&mut conn, slot, redis::cmd("CLIENT").arg("ID"))
                    .await
                    .and_then(|v| redis::from_redis_value::<i64>(v).map_err(Into::into))
                    .map_err(|e| failed(e).with_detail(format!("CLIENT ID at {node}")));
                match untracked_if_denied(id)? {
                    Some(id) => {
                        if let Some(r) = &mut redirects {
                            r.push((node, slot, id));
                        }
                    }
                    None => redirects = None,
                }
            }
            // One at a time: each sharded channel lives on its own slot's node.
            for channel in channels {
                conn.ssubscribe(*channel)
                    .await
                    .map_err(|e| failed(e).with_detail(format!("SSUBSCRIBE {channel}")))?;
            }
            return Ok(Subscriber {
                _conn: Box::new(conn),
                redirect: redirects.map(Redirect::Nodes),
            });
        }
        let client = self.pubsub_client().await?;
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let resp3 = redis::Client::open(info.set_redis_settings(settings)).map_err(failed)?;
        let timeout = Some(self.inner.timeout.max(Duration::from_millis(500)));
        let config = redis::AsyncConnectionConfig::new()
            .set_push_sender(pushes)
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let mut conn = resp3
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(failed)?;
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut conn)
            .await
            .map_err(failed);
        let id = untracked_if_denied(id)?;
        conn.subscribe(channels).await.map_err(failed)?;
        Ok(Subscriber {
            _conn: Box::new(conn),
            redirect: id.map(Redirect::Server),
        })
    }

    /// On a Redis Cluster, a RESP3 connection whose pushes go to `pushes`,
    /// subscribed to the sharded channels `channels` and to every sharded channel
    /// that matches one of `patterns` and has a subscriber on some primary now
    /// (sharded pub/sub has no pattern subscriptions): what a listener needs to
    /// hear the fleet protocol's inboxes and acknowledgements. `None` elsewhere.
    #[cfg(feature = "cluster")]
    pub(crate) async fn sharded_listener(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
        channels: &[String],
        patterns: &[String],
    ) -> Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        let Some(seeds) = &self.inner.seeds else {
            return Ok(None);
        };
        let failed = |e: redis::RedisError| crate::error::from_redis("listen", e);
        let primaries = self.primary_slots("listen").await?;
        let nodes: Vec<_> = primaries.iter().map(|(n, _)| n.clone()).collect();
        let mut conn = seeds.subscriber(pushes, &nodes).await?;
        let mut all: Vec<String> = channels.to_vec();
        for (node, slot) in &primaries {
            for pattern in patterns {
                let found = on_slot(
                    &mut conn,
                    *slot,
                    redis::cmd("PUBSUB").arg("SHARDCHANNELS").arg(pattern),
                )
                .await
                .and_then(|v| redis::from_redis_value::<Vec<String>>(v).map_err(Into::into))
                .map_err(|e| failed(e).with_detail(format!("PUBSUB SHARDCHANNELS at {node}")))?;
                all.extend(found);
            }
        }
        all.sort_unstable();
        all.dedup();
        for channel in &all {
            conn.ssubscribe(channel)
                .await
                .map_err(|e| failed(e).with_detail(format!("SSUBSCRIBE {channel}")))?;
        }
        Ok(Some(Box::new(conn)))
    }

    /// Turns on `CLIENT TRACKING` on every connection of this cache, redirected to
    /// the subscriber connection: on a single server opt-in (a read announced with
    /// `CLIENT CACHING YES` is tracked), on a cluster every read (a batch is split
    /// across nodes, so no announcement can precede its reads; each primary tracks
    /// its own keys, redirected to the subscriber's connection to that primary).
    /// Redis then sends the subscriber an invalidation when any client changes a
    /// tracked key — this instance included: `NOLOOP` would also hide evictions
    /// that its own commands set off. Returns the connections' ids (per primary on a
    /// cluster), which change when a connection is replaced and its tracking lost.
    pub(crate) async fn track_all(&self, redirect: &Redirect) -> Result<Vec<i64>> {
        let turn_on = |id: i64, optin: bool| {
            let mut cmd = redis::cmd("CLIENT");
            cmd.arg("TRACKING").arg("ON").arg("REDIRECT").arg(id);
            if optin {
                cmd.arg("OPTIN");
            }
            cmd
        };
        match redirect {
            Redirect::Server(id) => {
                let mut pipe = redis::pipe();
                pipe.add_command(turn_on(*id, true))
                    .ignore()
                    .cmd("CLIENT")
                    .arg("ID");
                self.on_every_connection("track", &pipe).await
            }
            #[cfg(feature = "cluster")]
            Redirect::Nodes(nodes) => {
                let mut ids = Vec::new();
                for (_, slot, id) in nodes {
                    self.on_every_node("track", *slot, &turn_on(*id, false))
                        .await?;
                }
                for (_, slot, _) in nodes {
                    ids.extend(
                        self.on_every_node("track", *slot, redis::cmd("CLIENT").arg("ID"))
                            .await?,
                    );
                }
                Ok(ids)
            }
        }
    }

    /// The ids of this cache's connections (see [`track_all`](Self::track_all));
    /// `None` on a cluster whose primaries are no longer those tracking was set
    /// up on (a failover, a primary added or removed, one of their slots moved):
    /// the subscriber has to start over on the cluster as it is now.
    pub(crate) async fn connection_ids(&self, redirect: &Redirect) -> Result<Option<Vec<i64>>> {
        match redirect {
            Redirect::Server(_) => {
                let mut pipe = redis::pipe();
                pipe.cmd("CLIENT").arg("ID");
                self.on_every_connection("track", &pipe).await.map(Some)
            }
            #[cfg(feature = "cluster")]
            Redirect::Nodes(nodes) => {
                let reply: redis::Value = self
                    .query("track", None, redis::cmd("CLUSTER").arg("SLOTS"))
                    .await?;
                let tracked: Vec<_> = nodes
                    .iter()
                    .map(|(n, slot, _)| (n.clone(), *slot))
                    .collect();
                if !super::cluster::same_primaries(&reply, &tracked)? {
                    return Ok(None);
                }
                let mut ids = Vec::new();
                for (_, slot, _) in nodes {
                    ids.extend(
                        self.on_every_node("track", *slot, redis::cmd("CLIENT").arg("ID"))
                            .await?,
                    );
                }
                Ok(Some(ids))
            }
        }
    }

    /// Runs `pipe`, which answers one integer, on each connection in turn.
    async fn on_every_connection(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(self.inner.conns.len());
        for conn in &self.inner.conns {
            let mut conn = conn.clone();
            let reply =
                tokio::time::timeout(self.inner.timeout, pipe.query_async::<(i64,)>(&mut conn))
                    .await;
            match reply {
                Ok(Ok((id,))) => ids.push(id),
                Ok(Err(e)) => return Err(crate::error::from_redis(op, e)),
                Err(_) => return Err(self.timed_out(op)),
            }
        }
        Ok(ids)
    }

    /// Runs `cmd` on the primary serving `slot` through each connection; its
    /// integer replies (0 for others).
    #[cfg(feature = "cluster")]
    async fn on_every_node(
        &self,
        op: &'static str,
        slot: u16,
        cmd: &redis::Cmd,
    ) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(self.inner.conns.len());
        for conn in &self.inner.conns {
            let super::Conn::Cluster(c) = conn else {
                continue;
            };
            let reply = tokio::time::timeout(
                self.inner.timeout,
                c.route_command(cmd.clone(), slot_route(slot)),
            )
            .await;
            match reply {
                Ok(Ok(v)) => out.push(redis::from_redis_value_ref::<i64>(&v).unwrap_or(0)),
                Ok(Err(e)) => return Err(crate::error::from_redis(op, e)),
                Err(_) => return Err(self.timed_out(op)),
            }
        }
        Ok(out)
    }

    fn timed_out(&self, op: &'static str) -> crate::Error {
        crate::Error::new(crate::ErrorKind::Timeout, op)
            .with_detail(format!("no reply within {:?}", self.inner.timeout))
    }

    /// `set_many` of encoded values, with `notice` in the same round trip.
    pub(crate) async fn set_many_bytes(
        &self,
        entries: &[(&str, Vec<u8>)],
        ttl: Duration,
        notice: Option<&Notice>,
    ) -> Result<()> {
        let ms = key::ttl_millis(ttl);
        let mut pipe = redis::pipe();
        for (k, bytes) in entries {
            pipe.add_command(self.unlink_lease(k)).ignore();
            pipe.cmd("SET")
                .arg(full_key(&self.inner.prefix, k))
                .arg(bytes)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        match notice.filter(|n| push_notice(&mut pipe, n)) {
            Some(n) => {
                self.run_delivering("set_many", None, &pipe, &[(n, 0, usize::MAX)])
                    .await?;
            }
            None => self.query_pipe::<()>("set_many", &pipe).await?,
        }
        self.inner.counters.add(Stat::Set, entries.len() as u64);
        Ok(())
    }

    /// The server's identity: `run_id` and `master_replid` (changes on restart and
    /// failover).
    /// On a cluster: every primary's, so that a restart or failover of any of them
    /// is seen.
    pub(crate) async fn server_identity(&self) -> Result<String> {
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            let reply: redis::Value = self
                .query("server_identity", None, &redis::cmd("INFO"))
                .await?;
            return super::cluster::identity(reply);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("replication");
        let (server, replication): (String, String) =
            self.query_pipe("server_identity", &pipe).await?;
        Ok(format!(
            "{}/{}",
            info_field(&server, "run_id"),
            info_field(&replication, "master_replid")
        ))
    }

    /// `get_with_ttl` for many keys in one pipelined round trip.
    pub(crate) async fn get_many_with_ttl<T: CacheValue>(
        &self,
        keys: &[&str],
        holder: Option<&Holder>,
    ) -> Result<Vec<Option<Found<T>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            let full = full_key(&self.inner.prefix, k);
            if let Some(h) = holder {
                self.push_holder(&mut pipe, k, h);
            }
            pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        }
        let replies: Vec<redis::Value> = self.query_pipe("get_many", &pipe).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, pair) in keys.iter().zip(replies.chunks(2)) {
            let bytes: Option<Vec<u8>> = match pair.first() {
                Some(v) => redis::from_redis_value_ref(v).unwrap_or(None),
                None => None,
            };
            let pttl: i64 = pair
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(-2);
            let Some(bytes) = bytes else {
                self.inner.counters.add(Stat::Miss, 1);
                out.push(None);
                continue;
            };
            let remaining = (pttl >= 0).then(|| Duration::from_millis(pttl as u64));
            out.push(
                self.resolve_tagged("get_many", k, &bytes)
                    .await?
                    .map(|(value, tags)| Found {
                        value,
                        bytes: bytes.len() as u64,
                        remaining,
                        tags,
                    }),
            );
        }
        Ok(out)
    }

    /// A redis-rs client for the invalidation subscriber: the server; on a cluster,
    /// in turn (each call moves on, so that a resubscription after a node went away
    /// tries another one) the seed nodes and the primaries the cluster reports, all
    /// with the seeds' credentials. `PUBLISH` reaches every node of a cluster, so
    /// subscribing through any one of them is enough.
    ///
    /// Behind Sentinel: the current master, or an error while none is known.
    pub(crate) async fn pubsub_client(&self) -> Result<redis::Client> {
        if let Some(client) = self.inner.conns.first().and_then(|c| c.current_client()) {
            return Ok(client);
        }
        let seeds = &self.inner.pubsub;
        if seeds.is_empty() {
            return Err(
                crate::Error::new(crate::ErrorKind::Connection, "subscribe").with_detail(format!(
                    "no server to subscribe to at {}",
                    self.inner.address
                )),
            );
        }
        let turn = self
            .inner
            .next_pubsub
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        #[cfg(feature = "cluster")]
        if self.is_cluster()
            && let Ok(nodes) = self.primaries("subscribe").await
        {
            let mut candidates = seeds.clone();
            candidates.extend(super::cluster::clients_beyond(seeds, &nodes));
            return Ok(candidates[turn % candidates.len()].clone());
        }
        Ok(seeds[turn % seeds.len()].clone())
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn encode<T: serde::Serialize + ?Sized>(
        &self,
        op: &'static str,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>> {
        self.inner.encoding.encode_for(op, Some(key), value)
    }

    pub(crate) async fn delete_many_notify<K: AsRef<str> + Sync>(
        &self,
        keys: &[K],
        notice: Option<&Notice>,
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("UNLINK");
        let mut leases = redis::cmd("UNLINK");
        for k in keys {
            key::validate("delete_many", k.as_ref())?;
            cmd.arg(full_key(&self.inner.prefix, k.as_ref()));
            leases.arg(self.lease_key(k.as_ref()));
        }
        let n: u64 = self
            .exec_with("delete_many", None, cmd, Some(leases), notice)
            .await?;
        self.inner.counters.meter.level.deletes.increment(n);
        Ok(n)
    }
}

/// One field of an `INFO` reply.
pub(super) fn info_field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Appends the delivery of `n` to `pipe`: a `PUBLISH`, or what messages the
/// holders of its keys. Whether its replies must be read ([`replies_of`] of
/// them, for [`DistributedCache::deliver`]).
fn push_notice(pipe: &mut redis::Pipeline, n: &Notice) -> bool {
    let publish = n.publish_command();
    match &n.fleet {
        None => {
            pipe.cmd(publish).arg(&n.channel).arg(&n.payload).ignore();
            false
        }
        Some(f) if f.registries.is_empty() => {
            pipe.cmd(publish).arg(&n.channel).arg(&n.payload);
            true
        }
        Some(f) if n.sharded => {
            for registry in &f.registries {
                pipe.cmd("EVAL").arg(HOLDERS_SCRIPT).arg(1).arg(registry);
            }
            true
        }
        Some(f) => {
            let mut eval = redis::cmd("EVAL");
            eval.arg(NOTIFY_SCRIPT).arg(f.registries.len());
            for registry in &f.registries {
                eval.arg(registry);
            }
            eval.arg(f.me).arg(&f.inbox).arg(&n.payload);
            pipe.add_command(eval);
            true
        }
    }
}

/// How many replies [`push_notice`] asked for.
fn replies_of(n: &Notice) -> usize {
    match &n.fleet {
        Some(f) if n.sharded && !f.registries.is_empty() => f.registries.len(),
        _ => 1,
    }
}

/// The subscriber connection of `Protocol::Fleet` (see
/// [`DistributedCache::fleet_subscriber`]): open while this lives.
pub(crate) struct Subscriber {
    _conn: Box<dyn std::any::Any + Send + Sync>,
    /// `None` when the user may not run `CLIENT`: the protocol runs untracked.
    pub(crate) redirect: Option<Redirect>,
}

/// The subscriber's `CLIENT ID`; `None` if the ACL user may not ask it (then it
/// may not turn tracking on either: the fleet protocol runs untracked, with a
/// warning, rather than not at all).
fn untracked_if_denied(id: Result<i64>) -> Result<Option<i64>> {
    match id {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.kind() == crate::ErrorKind::NoPermission => {
            tracing::warn!(
                error = %e,
                "CLIENT not permitted: writes by other Redis clients reach L1 copies only when they expire"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where tracking invalidations are redirected: the subscriber connection's id,
/// per primary on a cluster (with a slot it serves, to route by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    Server(i64),
    #[cfg(feature = "cluster")]
    Nodes(Vec<(super::conn::Node, u16, i64)>),
}

/// Runs `cmd` on the primary serving `slot` (redis-rs connects to it if it has
/// no connection yet).
#[cfg(feature = "cluster")]
async fn on_slot(
    conn: &mut redis::cluster_async::ClusterConnection,
    slot: u16,
    cmd: &redis::Cmd,
) -> redis::RedisResult<redis::Value> {
    // An error reply (say `NOPERM`) comes back as a value: made an error here.
    conn.route_command(cmd.clone(), slot_route(slot))
        .await
        .and_then(redis::Value::extract_error)
}

/// To the primary serving `slot`.
#[cfg(feature = "cluster")]
fn slot_route(slot: u16) -> redis::cluster_routing::RoutingInfo {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )))
}

/// `CLIENT CACHING YES` before the next command, when `h` is tracked (opt-in).
pub(crate) fn push_tracked(pipe: &mut redis::Pipeline, h: &Holder) {
    if h.tracking {
        pipe.cmd("CLIENT").arg("CACHING").arg("YES").ignore();
    }
}
