//! Confirmed invalidation: a write returns once every other live instance has
//! applied its invalidation message (or a timeout passed).
//!
//! Each receiver, after evicting what a message names, publishes on
//! `{channel}:ack:{sender}` the sender's highest sequence number below which it
//! has applied everything (one acknowledgement per sender for all the messages it
//! drained at once; heartbeats are never acknowledged on their own). Each instance
//! hears the acknowledgements addressed to it on the subscription it already has.
//! A writer waits until every peer heard within the liveness window has
//! acknowledged its message's number. A peer that lets the timeout pass is counted
//! (`unconfirmed`), logged, and not waited for again until it acknowledges
//! something, so a frozen peer costs one timeout, not one per write.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Inner;
use crate::coherence::Ack;
use crate::distributed::Notice;
pub(super) use crate::inspect::ack_channel;

impl Inner {
    /// Sets the gauges that are states rather than events: the stream, the peers
    /// (from the heartbeat task; nothing without metrics).
    pub(super) fn observe_gauges(&self, now: Instant) {
        if !crate::observe::ON {
            return;
        }
        let coherent = self.coherent.load(SeqCst);
        self.meter.coherent.set(if coherent { 1.0 } else { 0.0 });
        if let Ok(p) = self.peers.lock() {
            let (live, unresponsive) = p.count(self.liveness_window(), now);
            self.meter.peers.set(live as f64);
            self.meter.peers_unresponsive.set(unresponsive as f64);
        }
    }

    /// How long after its last message or acknowledgement a peer still counts as
    /// live: three heartbeat intervals plus the command timeout (a loaded peer's
    /// heartbeats run late; waiting for a dead one costs at most one timeout).
    pub(super) fn liveness_window(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(3)
            .saturating_add(self.l2.command_timeout())
    }

    /// Waits until every live, responsive peer has applied our message `seq`, or
    /// the confirmation timeout passes. Returns at once when confirmation is off,
    /// when this instance's own stream is down (it could not hear the
    /// acknowledgements), or when it is alone on the channel.
    pub(super) async fn confirm_all(&self, seq: u64) {
        let Some(timeout) = self.confirm_timeout else {
            return;
        };
        if !self.coherent.load(SeqCst) {
            return;
        }
        let window = self.liveness_window();
        let (mut waiting, alone) = match self.peers.lock() {
            Ok(p) => {
                let now = Instant::now();
                let (live, unresponsive) = p.count(window, now);
                (p.owing(seq, window, now), live == unresponsive)
            }
            Err(_) => return,
        };
        if alone {
            return;
        }
        let started = Instant::now();
        // A timeout of `Duration::MAX` waits for as long as the peers are live.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if let Ok(p) = self.peers.lock() {
                let now = Instant::now();
                waiting.retain(|id| p.owes(*id, seq, window, now));
            }
            if waiting.is_empty() {
                self.counters.confirmed.fetch_add(1, Relaxed);
                // The dashboard's histogram and `ormcache_invalidation_lag_seconds`.
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
            // Wake on an acknowledgement, or now and then to drop peers that
            // went silent.
            let wait = deadline.map_or(self.heartbeat_interval, |d| {
                self.heartbeat_interval
                    .min(d.saturating_duration_since(now))
            });
            let _ = tokio::time::timeout(wait, acked).await;
        }
        let marked = self
            .peers
            .lock()
            .map(|mut p| p.give_up(&waiting))
            .unwrap_or_default();
        self.counters.unconfirmed.fetch_add(marked, Relaxed);
        tracing::warn!(
            peers = ?waiting,
            ?timeout,
            seq,
            "invalidation not acknowledged in time; not waiting for these peers until they acknowledge again"
        );
    }

    /// An acknowledgement addressed to us arrived.
    pub(super) fn on_ack(&self, payload: &[u8]) {
        let Ok(ack) = serde_json::from_slice::<Ack>(payload) else {
            tracing::debug!("unreadable acknowledgement ignored");
            return;
        };
        if let Ok(mut p) = self.peers.lock() {
            p.acked(ack.i, ack.a, Instant::now());
        }
        self.acked.notify_waiters();
    }

    /// Publishes the acknowledgements that are due, one round trip for all.
    async fn send_acks(&self) {
        let due = match self.sequences.lock() {
            Ok(mut s) => s.acks_due(),
            Err(_) => return,
        };
        if due.is_empty() {
            return;
        }
        let notices: Vec<Notice> = due
            .into_iter()
            .map(|(sender, seq)| {
                Notice::broadcast(
                    ack_channel(&self.channel, sender),
                    serde_json::to_vec(&Ack { i: self.id, a: seq }).unwrap_or_default(),
                    self.sharded(),
                )
            })
            .collect();
        if let Err(e) = self.l2.publish_all("ack", &notices).await {
            // The senders time out on us and stop waiting until we acknowledge again.
            tracing::debug!(error = %e, "acknowledgements not sent");
        }
    }
}

/// Sends acknowledgements whenever the subscriber has applied messages: apart from
/// it, so that evictions never wait for the network, and coalesced, since every
/// message drained meanwhile is covered by one acknowledgement per sender.
pub(super) async fn ack_loop(weak: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(inner) = weak.upgrade() else { return };
        inner.send_acks().await;
    }
}
