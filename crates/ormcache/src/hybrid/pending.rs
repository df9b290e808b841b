//! Cancellation of a write: [`Pending`], the guard every invalidating call holds
//! while its L2 request is in flight.
//!
//! A call's future may be dropped at any `.await` (a caller's timeout, a client
//! that went away). Its request may or may not have reached Redis, so the write is
//! treated as done: this process evicts what it changed at once (it ignores its own
//! messages, so nobody else would), and a task of the cache publishes the call's
//! message (a numbered message never sent would be a hole in the sequence that
//! makes every peer flush its L1 and hold its acknowledgements back; sent twice, it
//! is applied twice, which is harmless), then evicts again, in case the request
//! landed after the first eviction and a fill in between read the old value. If
//! Redis cannot take the message, the invalidation joins the backlog like any
//! failed write.

use std::sync::Arc;

use super::inner::Sent;
use super::{Inner, Lifecycle};
use crate::coherence::{Backlog, Op};
use crate::distributed::Notice;
use crate::tenant::TenantId;

/// See the module docs. Armed until [`done`](Self::done).
pub(super) struct Pending<'a> {
    inner: &'a Arc<Inner>,
    op: Op,
    /// The numbered message the call sends (or sent); `None` until it is taken
    /// (clears number theirs once L2 is cleared), then a fresh one is published.
    notice: Option<Notice>,
    tenant: Option<TenantId>,
    armed: bool,
}

impl Inner {
    /// Guards the invalidation `op`, whose message is numbered later
    /// ([`Pending::number`]).
    pub(super) fn pending(self: &Arc<Self>, op: Op) -> Pending<'_> {
        Pending {
            inner: self,
            op,
            notice: None,
            tenant: crate::tenant::current(),
            armed: true,
        }
    }

    /// Numbers the message of the invalidating write `op`: the guard, which carries
    /// the message, and its sequence number.
    pub(super) fn write<'a>(self: &'a Arc<Self>, op: Op) -> (Pending<'a>, Sent) {
        let (notice, sent) = self.numbered_notice(op.clone(), Lifecycle::Running);
        let mut pending = self.pending(op);
        pending.notice = Some(notice);
        (pending, sent)
    }

    /// Applies `op` to this process's L1 (in the current tenant scope).
    pub(super) fn apply_local(&self, op: &Op) {
        match op {
            Op::Keys(keys) => {
                for k in keys {
                    self.evict_local(k);
                }
            }
            Op::Pattern(p) => {
                self.evict_pattern(p);
            }
            Op::Clear => self.clear_local(),
            Op::Tag(t) => self.evict_tag(t),
            Op::Heartbeat => {}
        }
    }
}

impl Pending<'_> {
    /// The message the call sends.
    pub(super) fn message(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    /// Numbers the message now (after the L2 work of a clear): the message and its
    /// sequence number.
    pub(super) fn number(&mut self) -> (&Notice, Sent) {
        let (notice, sent) = self
            .inner
            .numbered_notice(self.op.clone(), Lifecycle::Running);
        (self.notice.insert(notice), sent)
    }

    /// The L2 call returned: the caller handles the outcome itself.
    pub(super) fn done(mut self) {
        self.armed = false;
    }
}

/// Queues `op` for replay: keys and patterns as such, a tag or a clear as a clear
/// of the scope (a tag cannot be replayed without its token).
pub(super) fn queue(op: &Op, backlog: &mut Backlog, max: usize) -> bool {
    match op {
        Op::Keys(keys) => backlog.add_keys(keys.iter().map(String::as_str), max),
        Op::Pattern(p) => backlog.add_pattern(p, max),
        Op::Clear | Op::Tag(_) => {
            backlog.add_clear();
            false
        }
        Op::Heartbeat => false,
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let op = std::mem::replace(&mut self.op, Op::Heartbeat);
        let tenant = self.tenant.take();
        match &tenant {
            Some(t) => crate::tenant::sync_scope(t.clone(), || self.inner.apply_local(&op)),
            None => self.inner.apply_local(&op),
        }
        let inner = Arc::clone(self.inner);
        let notice = self.notice.take();
        // Not started (the cache closed): the peers see the hole and flush, which
        // is safe.
        self.inner.tasks.spawn(tenant, async move {
            let notice = notice.unwrap_or_else(|| inner.notice(op.clone()));
            match inner.l2.publish("cancelled write", &notice).await {
                Ok(()) => inner.apply_local(&op),
                Err(e) => inner.degraded_write(&e, |b, max| queue(&op, b, max)),
            }
        });
    }
}
