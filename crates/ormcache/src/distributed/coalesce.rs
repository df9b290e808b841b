//! Coalesced reads (`coalesce_gets`): concurrent `get`s share `MGET`s.
//!
//! A `get` that finds no read on the wire ([`IN_FLIGHT`]) sends its own `GET`, as
//! without coalescing: a lone read waits for nothing. One that finds a read out
//! joins a queue instead. When a read on the wire comes back, whatever
//! queued meanwhile goes out as one `MGET`, from a task of the cache (its own
//! caller returns at once), and each waiter gets its key's part of the reply to
//! decode in its own task. Under load Redis then runs one command for many keys,
//! and the client parses one reply; the batches grow with the load by themselves.
//!
//! No waiter is stranded. The queue is joined only while every slot is taken, and
//! a slot is given back only when the queue is empty, so a non-empty queue always
//! has a read on the wire that will send it. A slot's guard hands the queue on even
//! when its future is dropped mid-flight. A waiter whose batch is lost (the cache
//! closed, or the runtime shut down, with the batch's task in it) reads alone.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::DistributedCache;
use crate::error::{Error, ErrorKind, Result};

/// Reads on the wire at once (a `GET` or a batch's `MGET`); beyond them, reads wait
/// for the next `MGET`. One: while a read is out, the next batch fills. (With two,
/// `l2_get_coalesced` measured 1.17 of raw redis-rs on a 2-core machine; with one,
/// 1.19-1.56 in 9 runs, median 1.39: the batches are twice as large.)
pub(crate) const IN_FLIGHT: usize = 1;
/// Keys in one `MGET` at most; later ones wait for the next batch.
const MAX_BATCH: usize = 512;

/// A coalesced read's answer: the entry's bytes, or `None` for no string there.
type Reply = Result<Option<Vec<u8>>>;

/// The queue of reads waiting for a batch, and the slots on the wire.
#[derive(Debug, Default)]
pub(crate) struct Coalescer(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    queue: Vec<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    /// The full Redis key.
    key: String,
    reply: oneshot::Sender<Reply>,
}

/// What a read does: send its own `GET` (a slot is held), or wait in a batch.
enum Turn {
    Send(String),
    Wait(oneshot::Receiver<Reply>),
}

impl Coalescer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics under this lock; a poisoned one holds consistent state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, key: String) -> Turn {
        let mut s = self.lock();
        if s.in_flight < IN_FLIGHT {
            s.in_flight += 1;
            return Turn::Send(key);
        }
        let (reply, rx) = oneshot::channel();
        s.queue.push(Waiter { key, reply });
        Turn::Wait(rx)
    }

    /// For a slot whose read is done: the next batch to send, or `None` (and the
    /// slot given back) when nobody waits.
    fn next(&self) -> Option<Vec<Waiter>> {
        let mut s = self.lock();
        if s.queue.is_empty() {
            s.in_flight = s.in_flight.saturating_sub(1);
            return None;
        }
        if s.queue.len() <= MAX_BATCH {
            return Some(std::mem::take(&mut s.queue));
        }
        Some(s.queue.drain(..MAX_BATCH).collect())
    }

    /// For a batch's slot lost before its work was done: the slot given back, and
    /// every queued read let go (each then reads alone).
    fn abandon(&self) {
        let queue = {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            std::mem::take(&mut s.queue)
        };
        // Outside the lock: each waiter wakes to a closed channel and reads alone.
        drop(queue);
    }

    /// Reads on the wire and reads waiting (for tests).
    #[cfg(test)]
    fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.in_flight, s.queue.len())
    }
}

/// A lone read's slot on the wire: when dropped (done or cancelled), what waits is
/// sent.
struct Slot<'a> {
    cache: &'a DistributedCache,
    held: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.cache.hand_on();
        }
    }
}

/// The slot of a batch task, owned by the task's future from before it is
/// spawned: dropped before the queue is empty (the task never started, or was
/// aborted with the cache or with its runtime), it gives the slot back and lets
/// every queued read go alone. It never spawns from `Drop`, where the task
/// list's lock may be held.
struct BatchSlot {
    cache: DistributedCache,
    held: bool,
}

impl BatchSlot {
    /// Sends `batch`, then every batch that queued meanwhile.
    async fn send(mut self, mut batch: Vec<Waiter>) {
        loop {
            self.cache.send_batch(batch).await;
            match self
                .cache
                .inner
                .coalescer
                .as_ref()
                .and_then(Coalescer::next)
            {
                Some(more) => batch = more,
                None => {
                    self.held = false;
                    return;
                }
            }
        }
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        if self.held
            && let Some(co) = self.cache.inner.coalescer.as_ref()
        {
            co.abandon();
        }
    }
}

impl DistributedCache {
    /// The bytes at the full key `full` (of `key`), read alone or in a batch.
    pub(super) async fn get_coalesced(
        &self,
        co: &Coalescer,
        key: &str,
        full: String,
    ) -> Result<Option<Vec<u8>>> {
        match co.join(full) {
            Turn::Send(full) => {
                let _slot = Slot {
                    cache: self,
                    held: true,
                };
                self.get_reply(key, &full).await
            }
            Turn::Wait(rx) => match rx.await {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(e)) => Err(e.with_key(key)),
                // The batch was lost: read alone.
                Err(_) => {
                    let full = crate::key::full_key(&self.inner.prefix, key);
                    self.get_reply(key, &full).await
                }
            },
        }
    }

    /// Sends what waits in a task of the cache, or gives the slot back.
    fn hand_on(&self) {
        let Some(batch) = self.inner.coalescer.as_ref().and_then(Coalescer::next) else {
            return;
        };
        let slot = BatchSlot {
            cache: self.clone(),
            held: true,
        };
        // Not started (no runtime here, or the cache closed), the task's slot is
        // dropped with it and lets the queued reads go alone.
        self.inner.tasks.spawn(None, slot.send(batch));
    }

    async fn send_batch(&self, mut batch: Vec<Waiter>) {
        // Readers that gave up need no key read for them.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let len = batch.iter().map(|w| w.key.len()).sum::<usize>();
        let mut cmd = redis::Cmd::with_capacity(batch.len() + 1, len.saturating_add(4));
        cmd.arg("MGET");
        for w in &batch {
            cmd.arg(w.key.as_str());
        }
        let failed = match self.query::<Vec<Option<Vec<u8>>>>("get", None, &cmd).await {
            Ok(values) if values.len() == batch.len() => {
                for (w, v) in batch.into_iter().zip(values) {
                    let _ = w.reply.send(Ok(v));
                }
                return;
            }
            Ok(values) => self.fail(Error::new(ErrorKind::Server, "get").with_detail(format!(
                "MGET of {} keys answered {} values",
                batch.len(),
                values.len()
            ))),
            Err(e) => e,
        };
        // One failed read each (the round trip counted the first).
        for (i, w) in batch.into_iter().enumerate() {
            let e = if i == 0 {
                failed.clone()
            } else {
                self.fail(failed.clone())
            };
            let _ = w.reply.send(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_only_joined_while_every_slot_is_out_and_is_handed_on_whole() {
        let co = Coalescer::default();
        for i in 0..IN_FLIGHT {
            assert!(matches!(co.join(format!("k{i}")), Turn::Send(_)));
        }
        let waiting: Vec<_> = (0..3)
            .map(|i| match co.join(format!("w{i}")) {
                Turn::Wait(rx) => rx,
                Turn::Send(_) => panic!("a slot beyond {IN_FLIGHT}"),
            })
            .collect();
        assert_eq!(co.load(), (IN_FLIGHT, 3));
        // The first slot done takes the whole queue and keeps its slot.
        let batch = co.next().expect("the queue");
        let keys: Vec<_> = batch.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["w0", "w1", "w2"]);
        assert_eq!(co.load(), (IN_FLIGHT, 0));
        // Nothing waits: each slot done is given back.
        for left in (0..IN_FLIGHT).rev() {
            assert!(co.next().is_none());
            assert_eq!(co.load(), (left, 0));
        }
        // A lost batch: its waiters see their sender gone, and read alone.
        drop(batch);
        for mut rx in waiting {
            assert!(rx.try_recv().is_err());
        }
        assert!(co.next().is_none(), "never below zero");
        assert_eq!(co.load(), (0, 0));
    }

    #[test]
    fn an_abandoned_batch_slot_is_given_back_and_lets_its_queue_go() {
        let co = Coalescer::default();
        assert!(matches!(co.join("k".into()), Turn::Send(_)));
        let waiting: Vec<_> = (0..3)
            .map(|i| match co.join(format!("w{i}")) {
                Turn::Wait(rx) => rx,
                Turn::Send(_) => panic!("a slot beyond {IN_FLIGHT}"),
            })
            .collect();
        co.abandon();
        assert_eq!(co.load(), (0, 0));
        for mut rx in waiting {
            assert!(matches!(
                rx.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ));
        }
        // The next read sends its own `GET`.
        assert!(matches!(co.join("k".into()), Turn::Send(_)));
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_keys_first_come_first_served() {
        let co = Coalescer::default();
        for i in 0..IN_FLIGHT {
            let _ = co.join(format!("k{i}"));
        }
        let _rx: Vec<_> = (0..MAX_BATCH + 5)
            .map(|i| co.join(format!("w{i}")))
            .collect();
        let first = co.next().unwrap();
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(first[0].key, "w0");
        let second = co.next().unwrap();
        assert_eq!(second.len(), 5);
        assert_eq!(second[0].key, format!("w{MAX_BATCH}"));
    }
}
