//! `get_or_compute` through a [`HybridCache`]: lookups L1 → L2, leases on Redis,
//! fills stored in L2 (with their invalidation message) and in L1.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use super::HybridCache;
use crate::cache::CacheValue;
use crate::coherence::Op;
use crate::distributed::{Announce, Holder};
use crate::memo::{ComputeOptions, Fill, FillTicket, Flights, Lookup};

impl Fill for HybridCache {
    fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    fn meter(&self) -> &crate::observe::MemoMeter {
        &self.inner.meter.memo
    }

    fn cleanup_tasks(&self) -> Option<&crate::tasks::Tasks> {
        Some(&self.inner.tasks)
    }

    async fn lookup<T: CacheValue>(&self, key: &str, with_ttl: bool) -> Lookup<T> {
        self.lookup_with::<T>(key, with_ttl, None).await.0
    }

    async fn lookup_or_begin<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
        options: &ComputeOptions,
    ) -> (Lookup<T>, Option<FillTicket>) {
        self.lookup_with::<T>(key, with_ttl, Some(options)).await
    }

    async fn begin_fill(
        &self,
        key: &str,
        lease_ttl: Duration,
        exclusive: bool,
        tags: &[String],
    ) -> FillTicket {
        let local = self.inner.ticket(key);
        if self.inner.backlog_pending.load(SeqCst) {
            // L2 is not trusted yet: compute, return, store nowhere.
            return FillTicket::default();
        }
        let mut ticket = self.inner.l2.lease(key, lease_ttl, exclusive, tags).await;
        ticket.local = Some(local);
        ticket
    }

    async fn end_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &Arc<T>,
        ttl: Duration,
        tags: &[String],
        ticket: FillTicket,
    ) {
        let inner = &self.inner;
        let (Some(lease), Some(local)) = (&ticket.lease, ticket.local) else {
            return;
        };
        if inner.fleet.is_some() {
            // Nobody else can hold what was missing: no message. This instance
            // registers (and is tracked) in the round trip that stores.
            let stored = inner
                .read_holding(|holder| async move {
                    let announce = announce(holder.as_ref());
                    Ok(inner
                        .l2
                        .store_fill(key, &**value, ttl, tags, lease, announce)
                        .await)
                })
                .await;
            if stored.unwrap_or(false) {
                inner.put_fill(key, value, ttl, tags, local);
            }
            return;
        }
        let (pending, _) = inner.write(Op::Keys(vec![key.to_owned()]));
        let Some(notice) = pending.message() else {
            return;
        };
        if !inner
            .l2
            .store_fill(key, &**value, ttl, tags, lease, Announce::Publish(notice))
            .await
        {
            // Not stored, so not published: send the message anyway (an eviction is
            // always safe), or its number would be a hole that the other instances
            // take for a lost message, holding their acknowledgements back until
            // they flush.
            let _ = inner.l2.publish("get_or_compute", notice).await;
            pending.done();
            return;
        }
        pending.done();
        inner.counters.sent.fetch_add(1, Relaxed);
        inner.put_fill(key, value, ttl, tags, local);
    }

    async fn abort_fill(&self, key: &str, ticket: FillTicket) {
        if let Some(lease) = &ticket.lease {
            self.inner.l2.release(key, lease).await;
        }
    }
}

/// A fleet fill's store: registered as this instance's, when it can be.
fn announce(holder: Option<&Holder>) -> Announce<'_> {
    holder.map_or(Announce::Nothing, Announce::Hold)
}

impl super::Inner {
    /// A computed value this instance stored in L2, into L1 unless an
    /// invalidation raced it.
    fn put_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &Arc<T>,
        ttl: Duration,
        tags: &[String],
        local: crate::local::LocalTicket,
    ) {
        let tags = (!tags.is_empty()).then(|| tags.iter().cloned().collect::<Arc<[String]>>());
        self.l1.put_origin(
            key,
            Arc::clone(value),
            ttl.min(self.l1_max_ttl),
            Some(ttl),
            local,
            1,
            tags,
            || self.still_valid(key, local),
        );
    }
}

impl HybridCache {
    /// L1, then L2. With `leasing` (a read-through call), a miss in L2 also takes
    /// the fill's lease in the same round trip where the options allow it
    /// ([`DistributedCache::lookup_leasing_found`](crate::DistributedCache)), so a
    /// cold miss costs two round trips: this one and the store.
    async fn lookup_with<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
        leasing: Option<&ComputeOptions>,
    ) -> (Lookup<T>, Option<FillTicket>) {
        let inner = &self.inner;
        let coherent = inner.coherent.load(SeqCst);
        if coherent {
            let hit = if with_ttl {
                inner
                    .l1
                    .get_with_origin_ttl::<T>(key)
                    .map(|(v, left)| (v, Some(left)))
            } else {
                inner.l1.get_checked::<T>(key, None).map(|v| (v, None))
            };
            if let Some((v, left)) = hit {
                if left.is_some() {
                    // `get_with_origin_ttl` does not count (`get_checked` does).
                    inner.l1.count_hit();
                }
                return (Lookup::Hit(v, left), None);
            }
        }
        inner.counters.gets_past_l1.fetch_add(1, Relaxed);
        if inner.backlog_pending.load(SeqCst) {
            inner.counters.fallbacks.fetch_add(1, Relaxed);
            inner.wake_recovery.notify_one();
            return (self.degraded_lookup::<T>(key, coherent), None);
        }
        // Taken before L2 is asked: it both guards the L1 copy of a hit and is the
        // local half of a fill's ticket.
        let ticket = inner.ticket(key);
        let reply = inner
            .read_holding(|holder| async move {
                let leased = match leasing {
                    Some(options) => {
                        inner
                            .l2
                            .lookup_leasing_found::<T>(key, options, holder.as_ref())
                            .await
                    }
                    None => None,
                };
                match leased {
                    Some(reply) => reply,
                    None => inner
                        .l2
                        .get_holding::<T>(key, holder.as_ref())
                        .await
                        .map(|f| (f, None)),
                }
            })
            .await;
        match reply {
            Ok((Some(found), _)) => {
                inner.counters.l2_hits.fetch_add(1, Relaxed);
                if coherent {
                    inner.fill(key, &found, ticket);
                }
                (Lookup::Hit(found.value, found.remaining), None)
            }
            Ok((None, lease)) => {
                let lease = lease.map(|mut t| {
                    t.local = Some(ticket);
                    t
                });
                (Lookup::Miss, lease)
            }
            Err(_) => {
                inner.counters.fallbacks.fetch_add(1, Relaxed);
                (self.degraded_lookup::<T>(key, coherent), None)
            }
        }
    }

    /// What L1 may still answer while L2 cannot be trusted (`degraded_max_age`).
    fn degraded_lookup<T: CacheValue>(&self, key: &str, coherent: bool) -> Lookup<T> {
        match self.degraded_l1::<T>(key, coherent) {
            Some(v) => Lookup::Hit(v, None),
            None => Lookup::Miss,
        }
    }
}
