//! [`Protocol::Fleet`](super::Protocol::Fleet): coherence whose cost does not grow
//! with the number of instances that do not hold a key, and that sees writes made
//! by any Redis client.
//!
//! - **Holders.** An instance that copies a key into its L1 first adds its id to
//!   the key's registry in Redis (`{prefix}:__oc:h:{key}`, a set that outlives the
//!   copy), in the round trip that reads the key, before the read. A write runs,
//!   after the write itself and in the same round trip, a script that empties the
//!   registry and publishes the write's numbered message on the inbox channel of
//!   each holder still subscribed (`PUBLISH` answers how many got it). The writer
//!   waits for the acknowledgements of exactly the holders reached, and keeps no
//!   copy of what it wrote (its next read registers it). A write of a key nobody
//!   else holds costs no message and no acknowledgement; a read-through fill
//!   publishes nothing.
//! - **Any client's writes.** Every L2 connection runs `CLIENT TRACKING ON
//!   REDIRECT <subscriber> OPTIN`, and every read that feeds L1 is announced with
//!   `CLIENT CACHING YES` (a fill's store is followed by such a read): Redis
//!   remembers the keys, and when any client changes, deletes or expires one of
//!   them, or Redis evicts it, it sends the subscriber connection (RESP3) an
//!   invalidation naming the keys, and L1 drops its copies. (Not `NOLOOP`: Redis
//!   would then also keep quiet about evictions that this instance's own commands
//!   set off, under `maxmemory`.) A nil invalidation (`FLUSHDB`, `FLUSHALL`) flushes
//!   L1. Tracking lives and dies with a connection: when the subscriber's is
//!   replaced, L1 is flushed (as on every resubscription) and tracking pointed at
//!   the new one; an L2 connection replaced since tracking was turned on is found
//!   by its first announced read (which fails: tracking is off on it) or by its new
//!   id (checked with every heartbeat), tracked again, and L1 flushed, since what
//!   was read through the old one is no longer tracked.
//! - **Heartbeats** go to their sender's inbox only: they prove the instance's own
//!   stream alive, and cost one delivery each, not one per instance.
//! - Clears, pattern clears and tag invalidations, which name no key, are still
//!   published to every instance; the writer waits for as many acknowledgements
//!   as `PUBLISH` reports other subscribers.
//! - **Redis Cluster.** Registries carry a hash tag that puts them in their
//!   entry's slot. Inboxes, acknowledgement channels and the channel for clears
//!   are sharded channels (`SSUBSCRIBE`, `SPUBLISH`): a message travels to the
//!   one shard that owns the channel instead of over the whole cluster bus. The
//!   holders script runs per key in the entry's slot and returns the holders; the
//!   writer then sends each one the message with `SPUBLISH` (a second round
//!   trip). Each primary tracks every key read from it (a batch is split across
//!   primaries, so reads cannot be announced), redirected to the subscriber's
//!   connection to that primary; a slot migration deletes the keys on the old
//!   primary, which Redis reports as an invalidation.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{FleetState, Inner};
use crate::distributed::{Holder, Reached, Subscriber};
use crate::error::{Error, ErrorKind, Result};
use crate::telemetry::EventKind;

/// A subscriber connection of the fleet protocol and the pushes it receives.
struct Subscription {
    /// Kept open for as long as the stream runs (dropping it closes it).
    _conn: Subscriber,
    pushes: UnboundedReceiver<PushInfo>,
}

/// Opens the subscriber connection and subscribes to the broadcast channel, this
/// instance's inbox and its acknowledgement channel; records where tracking is
/// to be redirected.
async fn subscribe(inner: &Inner, fleet: &FleetState) -> Result<Subscription> {
    let (tx, pushes) = tokio::sync::mpsc::unbounded_channel();
    let sub = inner
        .l2
        .fleet_subscriber(
            tx,
            &[
                inner.channel.as_str(),
                fleet.inbox.as_str(),
                inner.ack_channel.as_str(),
            ],
        )
        .await?;
    if let Ok(mut r) = fleet.redirect.lock() {
        r.clone_from(&sub.redirect);
    }
    Ok(Subscription { _conn: sub, pushes })
}

/// The subscriber task of the fleet protocol: subscribes, points tracking at the
/// subscriber connection, recovers (replay, flush), then applies what arrives;
/// starts over whenever the connection ends or the watchdog says it is dead.
pub(super) async fn subscriber_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some(fleet) = inner.fleet.as_ref() else {
            return;
        };
        inner.coherent.store(false, SeqCst);
        let resubscribe = Arc::clone(&inner.resubscribe);
        // Connecting (to every primary, on a cluster), subscribing and turning
        // tracking on take several round trips.
        let connect_timeout = inner
            .l2
            .command_timeout()
            .saturating_mul(8)
            .max(Duration::from_secs(2));
        let started = tokio::time::timeout(connect_timeout, async {
            let sub = subscribe(&inner, fleet).await?;
            inner.retrack().await;
            Ok::<_, Error>(sub)
        })
        .await
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "subscribe")));
        let mut sub = match started {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(error = %e, "invalidation subscribe failed");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
                continue;
            }
        };
        if let Err(e) = inner.recover().await {
            tracing::debug!(error = %e, "recovery after subscribe failed; retrying");
            drop(inner);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            continue;
        }
        backoff = Duration::from_millis(20);
        inner.counters.resubscriptions.fetch_add(1, Relaxed);
        inner.events.record(EventKind::StreamUp);
        tracing::info!(channel = %inner.channel, "invalidation stream up: L1 coherent");
        drop(inner);
        loop {
            tokio::select! {
                push = sub.pushes.recv() => {
                    let Some(push) = push else { break };
                    let Some(inner) = weak.upgrade() else { return };
                    if !inner.on_push(&push) {
                        break;
                    }
                }
                () = resubscribe.notified() => break,
            }
        }
        if let Some(inner) = weak.upgrade() {
            inner.coherent.store(false, SeqCst);
            inner.events.record(EventKind::StreamLost);
            inner.meter.coherent.set(0.0);
            tracing::warn!(channel = %inner.channel, "invalidation stream lost: L1 degraded until it is back");
        }
    }
}

impl Inner {
    /// Applies one push of the subscriber connection; `false` when the connection
    /// is gone.
    fn on_push(&self, push: &PushInfo) -> bool {
        match push.kind {
            PushKind::Disconnection => return false,
            // A sharded subscription the cluster dropped (its slot moved): what
            // was published meanwhile is lost.
            PushKind::SUnsubscribe => return false,
            PushKind::Message | PushKind::SMessage => {
                self.counters.deliveries.fetch_add(1, Relaxed);
                let (Some(channel), Some(payload)) = (push.data.first(), push.data.get(1)) else {
                    return true;
                };
                let payload = bytes_of(payload).unwrap_or_default();
                if bytes_of(channel) == Some(self.ack_channel.as_bytes()) {
                    self.on_ack(payload);
                } else {
                    self.on_message(payload);
                }
            }
            PushKind::Invalidate => {
                self.counters.deliveries.fetch_add(1, Relaxed);
                match push.data.first() {
                    Some(Value::Array(keys)) => {
                        for k in keys {
                            match bytes_of(k) {
                                Some(k) => self.on_tracked(k),
                                None => self.flush_tracked("unreadable key in an invalidation"),
                            }
                        }
                    }
                    _ => self.flush_tracked("the database was flushed"),
                }
            }
            _ => {}
        }
        true
    }

    /// Redis says `full` (a key of any client's) changed: drops this process's
    /// copy. Internal keys (leases, registries, generations) are ignored.
    fn on_tracked(&self, full: &[u8]) {
        let prefix = self.l2.prefix().as_bytes();
        let Some(rest) = full.strip_prefix(prefix).and_then(|r| r.strip_prefix(b":")) else {
            return;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return;
        };
        let evict = |key: &str| {
            if self.evict_local(key) {
                self.counters.tracked_evictions.fetch_add(1, Relaxed);
            }
        };
        let ns = format!("{}:", crate::key::RESERVED_NAMESPACE);
        match rest.strip_prefix(&ns) {
            None => evict(rest),
            Some(internal) => {
                let Some(scoped) = internal.strip_prefix("t:") else {
                    return;
                };
                let Some((tenant, key)) = scoped.split_once(':') else {
                    return;
                };
                match crate::tenant::TenantId::new(tenant) {
                    Ok(t) => crate::tenant::sync_scope(t, || evict(key)),
                    Err(_) => self.flush_tracked("invalidation of a key of an invalid tenant"),
                }
            }
        }
    }

    fn flush_tracked(&self, why: &'static str) {
        tracing::info!(why, "Redis invalidated every tracked key: flushing L1");
        self.flush_l1();
    }

    /// Points tracking of every L2 connection at the subscriber connection. A
    /// connection replaced since tracking was last turned on flushes L1: what was
    /// read through the old one is no longer tracked. Without the permission (an
    /// ACL user without `CLIENT`), the protocol runs untracked: writes through
    /// ormcache are still confirmed, writes by other clients reach L1 copies only
    /// when they expire.
    pub(super) async fn retrack(&self) {
        let Some(fleet) = &self.fleet else { return };
        let Some(redirect) = fleet.redirect.lock().ok().and_then(|r| r.clone()) else {
            return;
        };
        match self.l2.track_all(&redirect).await {
            Ok(ids) => {
                let changed = fleet
                    .tracked
                    .lock()
                    .map(|mut t| {
                        let changed = !t.is_empty() && *t != ids;
                        *t = ids;
                        changed
                    })
                    .unwrap_or(true);
                if changed {
                    tracing::info!(
                        "an L2 connection was replaced: its tracking is lost, flushing L1"
                    );
                    self.flush_l1();
                }
                fleet.tracking.store(true, SeqCst);
            }
            Err(e) => {
                if fleet.tracking.swap(false, SeqCst) || e.kind() == ErrorKind::NoPermission {
                    tracing::warn!(
                        error = %e,
                        "CLIENT TRACKING unavailable: writes by other Redis clients reach L1 copies only when they expire"
                    );
                }
            }
        }
    }

    /// From the heartbeat task: an L2 connection replaced since tracking was
    /// turned on (its id changed) is tracked again, and L1 flushed. On a cluster
    /// whose primaries changed (a failover, a primary added, a slot moved), the
    /// subscriber starts over: its connections, redirections and tracking all
    /// depend on which node serves what.
    pub(super) async fn check_tracking(&self) {
        let Some(fleet) = &self.fleet else { return };
        let Some(redirect) = fleet.redirect.lock().ok().and_then(|r| r.clone()) else {
            return;
        };
        if !fleet.tracking.load(SeqCst) {
            self.retrack().await;
            return;
        }
        let ids = match self.l2.connection_ids(&redirect).await {
            Ok(Some(ids)) => ids,
            Ok(None) => {
                tracing::info!(
                    "the cluster's primaries changed: subscribing and tracking on them anew"
                );
                self.resubscribe.notify_one();
                return;
            }
            Err(_) => return,
        };
        let same = fleet.tracked.lock().map(|t| *t == ids).unwrap_or(false);
        if !same {
            self.retrack().await;
        }
    }

    /// How this instance registers and tracks a read that may fill L1 (`None`
    /// under the broadcast protocol).
    pub(super) fn holder(&self) -> Option<Holder> {
        let fleet = self.fleet.as_ref()?;
        Some(Holder {
            me: self.id,
            // The registration must outlive the copy, whose lifetime starts once
            // the reply is back.
            ttl_ms: crate::key::ttl_millis(
                self.l1_max_ttl
                    .saturating_add(self.l2.command_timeout())
                    .saturating_add(Duration::from_secs(1)),
            ),
            tracking: !fleet.sharded && fleet.tracking.load(SeqCst),
        })
    }

    /// Runs `read` (an L2 read that may fill L1) as this instance's holder. When
    /// it finds tracking off on its connection (replaced since tracking was turned
    /// on), tracking is turned on again, L1 flushed, and the read runs once more.
    pub(super) async fn read_holding<R, Fut>(
        &self,
        read: impl Fn(Option<Holder>) -> Fut,
    ) -> Result<R>
    where
        Fut: std::future::Future<Output = Result<R>>,
    {
        let holder = self.holder();
        // Boxed: the read's future sits in every read path's (an allocation
        // beside a round trip).
        match Box::pin(read(holder)).await {
            Err(e)
                if holder.is_some_and(|h| h.tracking)
                    && crate::distributed::is_tracking_off(&e) =>
            {
                Box::pin(self.retrack()).await;
                Box::pin(read(self.holder())).await
            }
            other => other,
        }
    }

    /// Waits until every holder the message reached has applied it, or the
    /// confirmation timeout passes (fleet protocol).
    pub(super) async fn confirm_reached(&self, seq: u64, reached: Reached, timeout: Duration) {
        // A message to every subscriber waits for as many acknowledgements as
        // there were other subscribers when it was published.
        let (mut holders, others) = match reached {
            Reached::Unknown => return,
            Reached::Holders(ids) if ids.is_empty() => return,
            Reached::Holders(ids) => (Some(ids), 0),
            Reached::Subscribers(n) if n <= 1 => return,
            Reached::Subscribers(n) => (None, usize::try_from(n - 1).unwrap_or(usize::MAX)),
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            let done = match self.peers.lock() {
                Ok(p) => match &mut holders {
                    Some(ids) => {
                        ids.retain(|id| p.waits_for(*id, seq));
                        ids.is_empty()
                    }
                    None => p.acked_count(seq) >= others,
                },
                Err(_) => return,
            };
            if done {
                self.counters.confirmed.fetch_add(1, Relaxed);
                let lag = started.elapsed();
                self.lag.record(lag);
                self.meter.inv_lag.record(lag.as_secs_f64());
                return;
            }
            if !self.coherent.load(SeqCst) {
                return;
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let wait = deadline.map_or(self.heartbeat_interval, |d| {
                self.heartbeat_interval
                    .min(d.saturating_duration_since(now))
            });
            let _ = tokio::time::timeout(wait, acked).await;
        }
        let marked = match &holders {
            Some(ids) => self
                .peers
                .lock()
                .map(|mut p| p.give_up(ids))
                .unwrap_or_default(),
            None => 1,
        };
        self.counters.unconfirmed.fetch_add(marked, Relaxed);
        tracing::warn!(
            holders = ?holders,
            ?timeout,
            seq,
            "invalidation not acknowledged in time; not waiting for these holders until they acknowledge again"
        );
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}
