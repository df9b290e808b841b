//! The background work of a [`HybridCache`](super::HybridCache): the invalidation
//! subscriber, the heartbeat and watchdog, and backlog recovery.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Notify;

use super::{Inner, Lifecycle};
use crate::coherence::{Message, Op, Part, SeqVerdict};
use crate::error::{Error, Result};
use crate::telemetry::EventKind;

/// Subscribes to the invalidation channel, recovers (replay, flush) on every
/// (re)subscription, applies messages; resubscribes whenever the stream ends or the
/// heartbeat watchdog says it is dead.
pub(super) async fn subscriber_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        inner.coherent.store(false, SeqCst);
        let resubscribe = Arc::clone(&inner.resubscribe);
        let connect_timeout = inner.l2.command_timeout().max(Duration::from_millis(500));
        let client = match inner.l2.pubsub_client().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "no server to subscribe to yet");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
                continue;
            }
        };
        let channels = [inner.channel.clone(), inner.ack_channel.clone()];
        let subscribed = tokio::time::timeout(connect_timeout, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "invalidation subscribe failed");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
                continue;
            }
            Err(_) => {
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
        let mut stream = pubsub.into_on_message();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.counters.deliveries.fetch_add(1, Relaxed);
                        if msg.get_channel_name() == inner.ack_channel {
                            inner.on_ack(msg.get_payload_bytes());
                        } else {
                            inner.on_message(msg.get_payload_bytes());
                        }
                    }
                    None => break,
                },
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

/// Publishes heartbeats; watches for our own coming back, for lost messages and for
/// a restarted or failed-over Redis.
pub(super) async fn heartbeat_loop(weak: Weak<Inner>) {
    loop {
        let every = match weak.upgrade() {
            Some(inner) => inner.heartbeat_interval,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        let _ = inner
            .l2
            .publish("heartbeat", &inner.notice(Op::Heartbeat))
            .await;
        inner.check_tracking().await;
        let now = Instant::now();
        inner.observe_gauges(now);
        if inner.coherent.load(SeqCst) {
            let silent = inner
                .own_heartbeat
                .lock()
                .map(|t| now.saturating_duration_since(*t))
                .unwrap_or_default();
            if silent > inner.liveness_window() {
                tracing::warn!(?silent, "own heartbeats stopped arriving: resubscribing");
                inner.coherent.store(false, SeqCst);
                inner.resubscribe.notify_one();
                continue;
            }
            let lost = inner
                .sequences
                .lock()
                .map(|mut s| {
                    let lost = s.overdue(every.saturating_mul(2), now);
                    s.prune(every.saturating_mul(20), now);
                    lost
                })
                .unwrap_or(false);
            if let Ok(mut p) = inner.peers.lock() {
                p.prune(every.saturating_mul(20), now);
            }
            if lost {
                tracing::warn!("an invalidation message was lost: flushing L1");
                inner.counters.gaps.fetch_add(1, Relaxed);
                inner.events.record(EventKind::Gap);
                inner.flush_l1();
                // The flush applied what the holes stood for.
                inner.wake_acker.notify_one();
            }
            if let Ok(id) = inner.l2.server_identity().await {
                let known = inner.identity.lock().ok().and_then(|g| g.clone());
                if known.as_deref().is_some_and(|k| k != id) {
                    tracing::warn!("Redis restarted or failed over: recovering");
                    inner.coherent.store(false, SeqCst);
                    inner.resubscribe.notify_one();
                }
            }
        }
    }
}

/// Replays the backlog whenever there is one and Redis answers.
pub(super) async fn recovery_loop(weak: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(250), wake.notified()).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.backlog_pending.load(SeqCst)
            && let Err(e) = inner.replay_backlog().await
        {
            tracing::debug!(error = %e, "backlog replay failed; will retry");
        }
    }
}

impl Inner {
    /// Runs on every (re)subscription, before L2 is trusted: replays invalidations
    /// that could not be delivered, learns the server's identity, flushes L1.
    pub(super) async fn recover(&self) -> Result<()> {
        // The subscription just succeeded: Redis answers, whatever the breaker says.
        self.l2.reset_breaker();
        self.replay_backlog().await?;
        let id = self.l2.server_identity().await?;
        if let Ok(mut known) = self.identity.lock() {
            *known = Some(id);
        }
        if let Ok(mut s) = self.sequences.lock() {
            s.reset();
        }
        if let Ok(mut p) = self.peers.lock() {
            p.forgive_all();
        }
        if let Ok(mut t) = self.own_heartbeat.lock() {
            *t = Instant::now();
        }
        self.flush_l1();
        // Announce this instance before its L1 takes fills, so that writers wait
        // for it from now on (under the fleet protocol it registers as a holder of
        // what it reads instead, and this goes to its own inbox).
        let (hello, _) = self.numbered_notice(Op::Heartbeat, Lifecycle::Joined);
        self.l2.publish("heartbeat", &hello).await?;
        self.coherent.store(true, SeqCst);
        self.meter.coherent.set(1.0);
        Ok(())
    }

    async fn replay_backlog(&self) -> Result<()> {
        let _one_at_a_time = self.replay_lock.lock().await;
        // Replay a copy; entries leave the backlog only once Redis has them.
        let taken = match self.backlog.lock() {
            Ok(b) => b.snapshot(),
            Err(_) => return Ok(()),
        };
        if taken.is_empty() {
            self.backlog_pending.store(false, SeqCst);
            return Ok(());
        }
        for (scope, part) in &taken.scopes {
            // Each scope's invalidations are replayed in that scope: keys and
            // messages name what the original callers named.
            match scope {
                Some(t) => crate::tenant::scope(t.clone(), self.replay_part(part)).await?,
                None => self.replay_part(part).await?,
            }
        }
        let empty = self
            .backlog
            .lock()
            .map(|mut b| {
                b.remove(&taken);
                b.is_empty()
            })
            .unwrap_or(true);
        if empty {
            self.backlog_pending.store(false, SeqCst);
        }
        let not_logged = self.queued.finish();
        tracing::info!(
            queued_since_last_warning = not_logged,
            "invalidation backlog replayed"
        );
        Ok(())
    }

    async fn replay_part(&self, part: &Part) -> Result<()> {
        if part.clear {
            self.l2.clear_all("replay").await?;
            self.l2.publish("replay", &self.notice(Op::Clear)).await?;
            return Ok(());
        }
        let keys: Vec<&str> = part.keys.keys().map(String::as_str).collect();
        for chunk in keys.chunks(500) {
            let notice = self.notice(Op::Keys(chunk.iter().map(|k| (*k).to_owned()).collect()));
            self.l2.delete_many_notify(chunk, Some(&notice)).await?;
        }
        for p in part.patterns.keys() {
            self.l2.clear_matching("replay", p).await?;
            self.l2
                .publish("replay", &self.notice(Op::Pattern(p.clone())))
                .await?;
        }
        Ok::<(), Error>(())
    }

    pub(super) fn on_message(&self, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<Message>(payload) else {
            // Not ours to read: it may have stood for an invalidation.
            tracing::warn!("unreadable message on the invalidation channel: flushing L1");
            self.flush_l1();
            return;
        };
        if msg.i == self.id {
            if msg.o == Op::Heartbeat
                && let Ok(mut t) = self.own_heartbeat.lock()
            {
                *t = Instant::now();
            }
            return;
        }
        let now = Instant::now();
        if let Ok(mut p) = self.peers.lock() {
            if msg.b {
                p.left(msg.i);
            } else if msg.j {
                p.joined(msg.i, now);
            } else {
                p.heard(msg.i, now);
            }
        }
        if msg.b {
            self.acked.notify_waiters();
        }
        let verdict = self
            .sequences
            .lock()
            .map(|mut s| {
                if self.fleet.is_some() {
                    // Each instance gets only some of a sender's messages.
                    s.observe_direct(msg.i, msg.s, now);
                    SeqVerdict::Fine
                } else {
                    s.observe(msg.i, msg.s, now)
                }
            })
            .unwrap_or(SeqVerdict::Gap);
        if verdict == SeqVerdict::Gap {
            self.counters.gaps.fetch_add(1, Relaxed);
            self.events.record(EventKind::Gap);
            self.flush_l1();
        }
        let invalidation = msg.o != Op::Heartbeat;
        // Apply it in the sender's tenant scope: keys, patterns and tags are named
        // as the sender's caller named them.
        match msg.t.as_deref().map(crate::tenant::TenantId::new) {
            None => self.apply(&msg.o),
            Some(Ok(t)) => crate::tenant::sync_scope(t, || self.apply(&msg.o)),
            Some(Err(_)) => {
                tracing::warn!("invalidation for an invalid tenant id: flushing L1");
                self.flush_l1();
            }
        }
        // Applied: acknowledge it (a heartbeat may complete an earlier one by
        // filling the hole before it).
        if invalidation && let Ok(mut s) = self.sequences.lock() {
            s.owe(msg.i, msg.s);
        }
        self.wake_acker.notify_one();
    }

    fn apply(&self, op: &Op) {
        if *op != Op::Heartbeat {
            self.counters.received.fetch_add(1, Relaxed);
        }
        self.apply_local(op);
    }
}
