//! `Inner`'s own work: L1 fills under the invalidation epochs, numbered messages,
//! applying what arrives, replaying the backlog.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use super::pending::Pending;
use super::{HybridCache, HybridStats, Inner};
use crate::cache::CacheValue;
use crate::coherence::{Backlog, Message, Op};
use crate::distributed::{Fleet, Found, Notice, Reached};
use crate::error::{Error, Result};
use crate::local::LocalTicket;

/// How often, at most, an outage's queued invalidations are logged (with their
/// count).
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A numbered message handed to Redis: what its confirmation waits for.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) seq: u64,
    /// `Protocol::Fleet`: who the message reached, once it was delivered.
    reached: Option<Arc<std::sync::Mutex<Reached>>>,
}

/// What a heartbeat tells the other instances besides "alive".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Running,
    /// The stream just came up, L1 flushed.
    Joined,
    /// Closing: stop waiting for this instance.
    Closing,
}

impl Inner {
    /// Messages go by sharded pub/sub (`Protocol::Fleet` on a cluster).
    pub(super) fn sharded(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| f.sharded)
    }

    pub(super) fn ticket(&self, key: &str) -> LocalTicket {
        self.l1.epochs().ticket(key)
    }

    /// Whether no write, delete or flush touched `key` since `t` was taken (the L1
    /// checks pattern clears, tag invalidations and scope clears itself: the entry
    /// carries `t` as its stamp).
    pub(super) fn still_valid(&self, key: &str, t: LocalTicket) -> bool {
        self.coherent.load(SeqCst) && self.l1.epochs().unchanged(key, t)
    }

    /// Stores an L2 hit in L1 unless an invalidation raced it.
    pub(super) fn fill<T: CacheValue>(&self, key: &str, found: &Found<T>, t: LocalTicket) {
        let ttl = found
            .remaining
            .map_or(self.l1_max_ttl, |r| r.min(self.l1_max_ttl));
        if ttl.is_zero() {
            return;
        }
        let stored = self.l1.put_origin(
            key,
            Arc::clone(&found.value),
            ttl,
            found.remaining,
            t,
            found.bytes,
            found.tags.clone(),
            || self.still_valid(key, t),
        );
        if !stored {
            self.counters.fills_discarded.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn notice(&self, op: Op) -> Notice {
        self.numbered_notice(op, Lifecycle::Running).0
    }

    /// A message and what a confirmation of it waits for. Under the broadcast
    /// protocol it goes to the channel; under the fleet protocol a write's message
    /// goes to the holders of its keys, a heartbeat to this instance's own inbox,
    /// anything else (and a goodbye) to the channel.
    pub(super) fn numbered_notice(&self, op: Op, stage: Lifecycle) -> (Notice, Sent) {
        let seq = self.seq.fetch_add(1, SeqCst) + 1;
        let mut channel = &self.channel;
        let fleet = match (&self.fleet, &op) {
            (None, _) => None,
            (Some(f), Op::Heartbeat) => {
                if stage != Lifecycle::Closing {
                    channel = &f.inbox;
                }
                None
            }
            (Some(f), op) => {
                let registries = match op {
                    Op::Keys(keys) => keys.iter().map(|k| self.l2.holders_key(k)).collect(),
                    _ => Vec::new(),
                };
                Some(Fleet {
                    registries,
                    me: self.id,
                    inbox: f.inboxes.clone(),
                    reached: Arc::default(),
                })
            }
        };
        let msg = Message {
            i: self.id,
            s: seq,
            o: op,
            t: crate::tenant::current().map(|t| t.as_str().to_owned()),
            b: stage == Lifecycle::Closing,
            j: stage == Lifecycle::Joined,
        };
        let sent = Sent {
            seq,
            reached: fleet.as_ref().map(|f| Arc::clone(&f.reached)),
        };
        let notice = Notice {
            channel: channel.clone(),
            payload: serde_json::to_vec(&msg).unwrap_or_default(),
            sharded: self.sharded(),
            fleet,
        };
        (notice, sent)
    }

    /// Publishes the message of `pending` alone (after an L2 call that answered
    /// `n`): `n` and the message's sequence number. The number is taken now, not
    /// before a long clear, so that no later write's number overtakes it.
    pub(super) async fn publish_numbered<N>(
        &self,
        what: &'static str,
        pending: &mut Pending<'_>,
        n: N,
    ) -> Result<(N, Sent)> {
        let (notice, sent) = pending.number();
        self.l2.publish(what, notice).await.map(|()| (n, sent))
    }

    /// `result`, once every instance that must has applied message `sent`, if it
    /// is `Ok`.
    pub(super) async fn confirmed<R>(&self, sent: Sent, result: Result<R>) -> Result<R> {
        if result.is_ok() {
            self.confirm(sent).await;
        }
        result
    }

    /// Waits for the acknowledgements of message `sent` (see [`confirmed`](Self::confirmed)).
    pub(super) async fn confirm(&self, sent: Sent) {
        match sent.reached {
            None => self.confirm_all(sent.seq).await,
            Some(reached) => {
                let (Some(timeout), true) = (self.confirm_timeout, self.coherent.load(SeqCst))
                else {
                    return;
                };
                let reached = reached.lock().map(|r| r.clone()).unwrap_or_default();
                self.confirm_reached(sent.seq, reached, timeout).await;
            }
        }
    }

    /// Evicts this process's copy of `key` (ordered after any fill in flight).
    pub(super) fn evict_local(&self, key: &str) -> bool {
        self.l1.epochs().bump(key);
        self.l1.remove_locked(key)
    }

    /// Matching entries are misses at once; the walk that removes them runs off
    /// this task (the subscriber acknowledges without waiting for it).
    pub(super) fn evict_pattern(&self, pattern: &str) {
        let clear = self.l1.start_pattern_clear(pattern);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || clear.run())),
            Err(_) => {
                clear.run();
            }
        }
    }

    pub(super) fn evict_tag(&self, tag: &str) {
        self.l1.evict_tag(tag);
    }

    /// Clears this process's L1 for the current scope: a tenant's entries, or (no
    /// tenant) everything.
    pub(super) fn clear_local(&self) {
        if crate::tenant::current().is_some() {
            self.l1.evict_scope();
        } else {
            self.flush_l1();
        }
    }

    pub(super) fn flush_l1(&self) {
        self.l1.epochs().bump_global();
        self.l1.invalidate_all();
        self.counters.flushes.fetch_add(1, Relaxed);
        self.events.record(crate::telemetry::EventKind::Flush);
        // The cause is logged where it is known (at `info`/`warn`); a clear by
        // another instance flushes too, as often as they clear: `debug`.
        tracing::debug!(channel = %self.channel, "L1 flushed");
    }

    /// After a write went (or failed to go) to L2: updates this process's L1.
    ///
    /// `before` was taken before the write was sent: an invalidation of the key
    /// that arrived since (another instance's write, or Redis reporting any
    /// client's) may have been ordered after this write in Redis, so the value
    /// written is not kept.
    pub(super) fn after_write<T: CacheValue>(
        &self,
        key: &str,
        result: Result<(Arc<T>, u64, Duration)>,
        tags: Option<Arc<[String]>>,
        before: LocalTicket,
    ) -> Result<()> {
        match result {
            // Under the fleet protocol the writer keeps no copy: it would be
            // neither registered nor tracked (Redis reports the write back to
            // this instance, and its next read registers and is tracked).
            Ok(_) if self.fleet.is_some() || !self.l1.epochs().unchanged(key, before) => {
                self.counters.sent.fetch_add(1, Relaxed);
                self.evict_local(key);
                Ok(())
            }
            Ok((value, bytes, ttl)) => {
                self.counters.sent.fetch_add(1, Relaxed);
                // Bump after the L2 write: a fill that read the old value loses.
                self.l1.epochs().bump(key);
                let t = self.ticket(key);
                self.l1.put_origin(
                    key,
                    value,
                    ttl.min(self.l1_max_ttl),
                    Some(ttl),
                    t,
                    bytes,
                    tags,
                    || self.l1.epochs().unchanged(key, t),
                );
                Ok(())
            }
            Err(e) if e.is_unavailable() => {
                self.evict_local(key);
                self.degraded_write(&e, |b, max| b.add_keys([key], max));
                Err(e)
            }
            Err(e) => {
                self.evict_local(key);
                Err(e)
            }
        }
    }

    /// After an invalidation went (or failed to go) to L2: the L2 answer, or the
    /// error with the keys queued for replay.
    pub(super) fn after_invalidation<'a, R>(
        &self,
        result: Result<R>,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<R> {
        match result {
            Ok(v) => {
                self.counters.sent.fetch_add(1, Relaxed);
                Ok(v)
            }
            Err(e) if e.is_invalid_input() => Err(e),
            Err(e) => {
                self.degraded_write(&e, |b, max| b.add_keys(keys, max));
                Err(e)
            }
        }
    }

    /// Records an L2 failure: the invalidation joins the backlog (if the failure was
    /// an outage), L1 goes degraded until recovery.
    pub(super) fn degraded_write(&self, e: &Error, add: impl FnOnce(&mut Backlog, usize) -> bool) {
        self.counters.fallbacks.fetch_add(1, Relaxed);
        if !e.is_unavailable() {
            return;
        }
        if let Some(n) = self
            .queued
            .count(OUTAGE_LOG_EVERY, std::time::Instant::now())
        {
            tracing::warn!(
                queued = n,
                every = ?OUTAGE_LOG_EVERY,
                error = %e,
                "Redis unavailable: invalidations queued for replay (count since the previous line)"
            );
        }
        if let Ok(mut b) = self.backlog.lock()
            && add(&mut b, self.max_backlog)
        {
            {
                self.counters.backlog_overflows.fetch_add(1, Relaxed);
                tracing::warn!(
                    max = self.max_backlog,
                    "invalidation backlog overflowed: the prefix will be cleared"
                );
            }
        }
        self.backlog_pending.store(true, SeqCst);
        self.wake_recovery.notify_one();
    }
}

crate::cache::impl_cache_via_inherent!(HybridCache, HybridStats);
