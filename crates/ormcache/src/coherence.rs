//! The invalidation stream of [`HybridCache`](crate::HybridCache): messages, sequence
//! tracking with gap detection, and the backlog of invalidations that could not reach
//! Redis.
//!
//! Every instance publishes on `{prefix}:__oc:inv` a message per write, delete,
//! expire, clear or pattern clear, in the same round trip as the write itself, plus a
//! heartbeat. Each message carries the sender's random instance id and a sequence
//! number. A receiver that sees a number jump and the missing ones not arrive within
//! a grace period has lost a message (Redis pub/sub is at-most-once) and flushes its
//! L1. An instance that stops hearing its own heartbeats knows its subscription is
//! dead even if no disconnect was reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::tenant::TenantId;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a message invalidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// These keys.
    #[serde(rename = "k")]
    Keys(Vec<String>),
    /// The keys matching this glob.
    #[serde(rename = "p")]
    Pattern(String),
    /// Everything under the prefix.
    #[serde(rename = "c")]
    Clear,
    /// The entries carrying this tag.
    #[serde(rename = "t")]
    Tag(String),
    /// Nothing: proves the stream is alive and carries the sequence forward.
    #[serde(rename = "h")]
    Heartbeat,
}

/// One message on the invalidation channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// Sender instance id.
    pub(crate) i: u64,
    /// Sender sequence number.
    pub(crate) s: u64,
    /// The invalidation.
    pub(crate) o: Op,
    /// The sender's tenant, if the call was made in a tenant scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) t: Option<String>,
    /// The sender is closing: stop waiting for its acknowledgements (heartbeats
    /// only; readers that predate the field ignore it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) b: bool,
    /// The sender's stream just came up (its L1 was flushed): wait for it again
    /// even if it let a confirmation time out (heartbeats only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) j: bool,
}

/// An acknowledgement, published on `{channel}:ack:{sender}`: instance `i` has
/// applied every message of that sender up to sequence `a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The acknowledging instance.
    pub(crate) i: u64,
    /// The sender's highest sequence number applied with nothing missing below it.
    pub(crate) a: u64,
}

/// What the receiver must do after a message's sequence number is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqVerdict {
    /// In order (or a late arrival that fills a hole).
    Fine,
    /// So many messages are missing that waiting is pointless: flush now.
    Gap,
}

#[derive(Debug)]
struct Sender {
    max_seen: u64,
    missing: BTreeMap<u64, Instant>,
    last_heard: Instant,
    /// Highest invalidation (not heartbeat) received from this sender.
    owed: u64,
    /// Highest sequence acknowledged to this sender.
    acked: u64,
}

impl Sender {
    /// Every message up to this one has been applied (or flushed over).
    fn watermark(&self) -> u64 {
        self.missing
            .first_key_value()
            .map_or(self.max_seen, |(first, _)| first - 1)
    }
}

/// Per-sender sequence tracking.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    senders: HashMap<u64, Sender>,
}

/// More holes than this at once is a gap without waiting.
const MAX_MISSING: usize = 1024;

impl Sequences {
    pub(crate) fn observe(&mut self, sender: u64, seq: u64, now: Instant) -> SeqVerdict {
        let Some(s) = self.senders.get_mut(&sender) else {
            self.senders.insert(
                sender,
                Sender {
                    max_seen: seq,
                    missing: BTreeMap::new(),
                    last_heard: now,
                    owed: 0,
                    acked: 0,
                },
            );
            return SeqVerdict::Fine;
        };
        s.last_heard = now;
        if seq > s.max_seen {
            let first_missing = s.max_seen + 1;
            if seq - first_missing > MAX_MISSING as u64 {
                s.max_seen = seq;
                s.missing.clear();
                return SeqVerdict::Gap;
            }
            for m in first_missing..seq {
                s.missing.insert(m, now);
            }
            s.max_seen = seq;
            if s.missing.len() > MAX_MISSING {
                s.missing.clear();
                return SeqVerdict::Gap;
            }
        } else {
            s.missing.remove(&seq);
        }
        SeqVerdict::Fine
    }

    /// A message addressed to this instance alone (`Protocol::Fleet`): the
    /// sender's other messages went elsewhere, so a jump in its numbers is no hole.
    pub(crate) fn observe_direct(&mut self, sender: u64, seq: u64, now: Instant) {
        let s = self.senders.entry(sender).or_insert(Sender {
            max_seen: seq,
            missing: BTreeMap::new(),
            last_heard: now,
            owed: 0,
            acked: 0,
        });
        s.last_heard = now;
        s.max_seen = s.max_seen.max(seq);
        s.missing.clear();
    }

    /// Whether any hole has stayed open longer than `grace` (a lost message); the
    /// holes are forgotten either way once reported.
    pub(crate) fn overdue(&mut self, grace: Duration, now: Instant) -> bool {
        let mut lost = false;
        for s in self.senders.values_mut() {
            let before = s.missing.len();
            s.missing
                .retain(|_, at| now.saturating_duration_since(*at) < grace);
            lost |= s.missing.len() != before;
        }
        lost
    }

    /// Forgets senders silent for longer than `idle` (they stopped or restarted with
    /// a new id).
    pub(crate) fn prune(&mut self, idle: Duration, now: Instant) {
        self.senders
            .retain(|_, s| now.saturating_duration_since(s.last_heard) < idle);
    }

    /// Records that `sender`'s invalidation `seq` has been applied and is owed an
    /// acknowledgement.
    pub(crate) fn owe(&mut self, sender: u64, seq: u64) {
        if let Some(s) = self.senders.get_mut(&sender) {
            s.owed = s.owed.max(seq);
        }
    }

    /// The acknowledgements to send now, `(sender, watermark)`: for each sender owed
    /// one whose watermark moved since the last. Marks them sent.
    pub(crate) fn acks_due(&mut self) -> Vec<(u64, u64)> {
        let mut due = Vec::new();
        for (id, s) in &mut self.senders {
            let w = s.watermark();
            if s.owed > s.acked && w > s.acked {
                s.acked = w;
                due.push((*id, w));
            }
        }
        due
    }

    /// Starts over (after a resubscription, which flushes L1 anyway).
    pub(crate) fn reset(&mut self) {
        self.senders.clear();
    }
}

/// What this instance knows of the other instances on its channel, as a writer
/// waiting for their acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    peers: HashMap<u64, Peer>,
}

#[derive(Debug)]
struct Peer {
    last_heard: Instant,
    /// Highest of our sequence numbers it acknowledged.
    acked: u64,
    /// It let a confirmation time out: not waited for until it acknowledges again.
    unresponsive: bool,
}

impl Peers {
    /// `id` published something (a message or an acknowledgement) at `now`.
    pub(crate) fn heard(&mut self, id: u64, now: Instant) -> &mut Self {
        self.peers
            .entry(id)
            .and_modify(|p| p.last_heard = now)
            .or_insert(Peer {
                last_heard: now,
                acked: 0,
                unresponsive: false,
            });
        self
    }

    /// `id` acknowledged our messages up to `seq`.
    pub(crate) fn acked(&mut self, id: u64, seq: u64, now: Instant) {
        let p = self.peers.entry(id).or_insert(Peer {
            last_heard: now,
            acked: 0,
            unresponsive: false,
        });
        p.last_heard = now;
        p.acked = p.acked.max(seq);
        p.unresponsive = false;
    }

    /// `id`'s stream just came up: it is waited for again.
    pub(crate) fn joined(&mut self, id: u64, now: Instant) {
        self.acked(id, 0, now);
    }

    /// Waits for every peer again (our own stream just came back: the timeouts may
    /// have been ours, acknowledgements we could not hear).
    pub(crate) fn forgive_all(&mut self) {
        for p in self.peers.values_mut() {
            p.unresponsive = false;
        }
    }

    /// `id` said it is closing.
    pub(crate) fn left(&mut self, id: u64) {
        self.peers.remove(&id);
    }

    /// Whether a confirmation of `seq` must still wait for `id`: it is live (heard
    /// within `window`), responsive, and has not acknowledged `seq`.
    pub(crate) fn owes(&self, id: u64, seq: u64, window: Duration, now: Instant) -> bool {
        self.peers.get(&id).is_some_and(|p| {
            !p.unresponsive && p.acked < seq && now.saturating_duration_since(p.last_heard) < window
        })
    }

    /// Whether a confirmation of `seq` by holder `id` is still awaited
    /// (`Protocol::Fleet`: `id` was subscribed when the message went out, so it is
    /// waited for unless it let a confirmation time out before).
    pub(crate) fn waits_for(&self, id: u64, seq: u64) -> bool {
        self.peers
            .get(&id)
            .is_none_or(|p| !p.unresponsive && p.acked < seq)
    }

    /// How many peers acknowledged `seq` (or a later message).
    pub(crate) fn acked_count(&self, seq: u64) -> usize {
        self.peers.values().filter(|p| p.acked >= seq).count()
    }

    /// The peers a confirmation of `seq` waits for.
    pub(crate) fn owing(&self, seq: u64, window: Duration, now: Instant) -> Vec<u64> {
        self.peers
            .keys()
            .copied()
            .filter(|id| self.owes(*id, seq, window, now))
            .collect()
    }

    /// Marks the peers that let a confirmation time out; how many were marked now.
    pub(crate) fn give_up(&mut self, ids: &[u64]) -> u64 {
        let mut marked = 0;
        for id in ids {
            if let Some(p) = self.peers.get_mut(id)
                && !p.unresponsive
            {
                p.unresponsive = true;
                marked += 1;
            }
        }
        marked
    }

    /// `(live, unresponsive among them)`.
    pub(crate) fn count(&self, window: Duration, now: Instant) -> (usize, usize) {
        self.peers
            .values()
            .filter(|p| now.saturating_duration_since(p.last_heard) < window)
            .fold((0, 0), |(live, unresp), p| {
                (live + 1, unresp + usize::from(p.unresponsive))
            })
    }

    /// Every known peer, for display: `(id, silent for, highest acknowledged,
    /// unresponsive)`.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn list(&self, now: Instant) -> Vec<(u64, Duration, u64, bool)> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let silent = now.saturating_duration_since(p.last_heard);
                (*id, silent, p.acked, p.unresponsive)
            })
            .collect()
    }

    /// Forgets peers silent for longer than `idle`.
    pub(crate) fn prune(&mut self, idle: Duration, now: Instant) {
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_heard) < idle);
    }
}

/// Invalidations that could not reach Redis, per tenant scope (`None`: unscoped);
/// replayed, each in its scope, before L2 is trusted again.
///
/// Every addition is stamped, so that a replay removes only what it delivered: a
/// key, pattern or clear added again (or anything added under a queued clear) while
/// a replay ran stays for the next one — its write may have landed after the
/// replay's delete.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    pub(crate) scopes: BTreeMap<Option<TenantId>, Part>,
    stamp: u64,
}

/// What one scope has pending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// Keys, each with the stamp of its latest addition.
    pub(crate) keys: HashMap<String, u64>,
    /// Patterns, likewise.
    pub(crate) patterns: HashMap<String, u64>,
    /// Clear the whole scope (asked for, or the backlog overflowed).
    pub(crate) clear: bool,
    /// The stamp of the latest addition of any kind.
    changed: u64,
}

impl Part {
    fn len(&self) -> usize {
        self.keys.len() + self.patterns.len() + usize::from(self.clear)
    }

    fn make_clear(&mut self) {
        self.clear = true;
        self.keys.clear();
        self.patterns.clear();
    }
}

impl Backlog {
    pub(crate) fn is_empty(&self) -> bool {
        self.scopes.values().all(|p| p.len() == 0)
    }

    pub(crate) fn len(&self) -> usize {
        self.scopes.values().map(Part::len).sum()
    }

    /// The current task's scope, marked as changed now; and the stamp.
    fn part(&mut self) -> (&mut Part, u64) {
        self.stamp += 1;
        let part = self.scopes.entry(crate::tenant::current()).or_default();
        part.changed = self.stamp;
        (part, self.stamp)
    }

    /// Adds keys of the current scope; past `max` entries in all, every scope
    /// collapses into "clear the scope", which is always safe. Returns whether it
    /// overflowed now.
    pub(crate) fn add_keys<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a str>,
        max: usize,
    ) -> bool {
        let (part, stamp) = self.part();
        if part.clear {
            // Covered by the clear (which, having changed, outlives a replay
            // running now).
            return false;
        }
        for k in keys {
            part.keys.insert(k.to_owned(), stamp);
        }
        self.check_bound(max)
    }

    pub(crate) fn add_pattern(&mut self, pattern: &str, max: usize) -> bool {
        let (part, stamp) = self.part();
        if part.clear {
            return false;
        }
        part.patterns.insert(pattern.to_owned(), stamp);
        self.check_bound(max)
    }

    /// Clear the current scope.
    pub(crate) fn add_clear(&mut self) {
        self.part().0.make_clear();
    }

    fn check_bound(&mut self, max: usize) -> bool {
        if self.len() > max {
            for part in self.scopes.values_mut() {
                part.make_clear();
            }
            true
        } else {
            false
        }
    }

    /// A copy to replay.
    pub(crate) fn snapshot(&self) -> Backlog {
        Backlog {
            scopes: self.scopes.clone(),
            stamp: self.stamp,
        }
    }

    /// Drops what a successful replay delivered (entries added meanwhile stay).
    pub(crate) fn remove(&mut self, done: &Backlog) {
        for (scope, delivered) in &done.scopes {
            let Some(part) = self.scopes.get_mut(scope) else {
                continue;
            };
            if delivered.clear && part.changed == delivered.changed {
                // Everything queued before the clear was covered by it; anything
                // queued since may have landed after it.
                part.clear = false;
            }
            part.keys.retain(|k, s| delivered.keys.get(k) != Some(s));
            part.patterns
                .retain(|p, s| delivered.patterns.get(p) != Some(s));
        }
        self.scopes.retain(|_, p| p.len() > 0);
    }
}

/// Counts an event that repeats per request during an outage (a write queued for
/// replay) and says when to log it: the first at once, then at most one line per
/// interval, carrying the count since the previous line — not one line per
/// request (STYLE 27).
#[derive(Debug, Default)]
pub(crate) struct Tally(Mutex<TallyState>);

#[derive(Debug, Default)]
struct TallyState {
    unlogged: u64,
    last_line: Option<Instant>,
}

impl Tally {
    /// Counts one event at `now`; `Some(count)` when a line is due, with the events
    /// it stands for.
    pub(crate) fn count(&self, every: Duration, now: Instant) -> Option<u64> {
        let Ok(mut s) = self.0.lock() else {
            return None;
        };
        s.unlogged = s.unlogged.saturating_add(1);
        let due = s
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        if !due {
            return None;
        }
        s.last_line = Some(now);
        Some(std::mem::take(&mut s.unlogged))
    }

    /// The outage is over: the events not logged yet, and the next one logs at once.
    pub(crate) fn finish(&self) -> u64 {
        self.0
            .lock()
            .map(|mut s| {
                s.last_line = None;
                std::mem::take(&mut s.unlogged)
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_compact_json() {
        let m = Message {
            i: 7,
            s: 9,
            o: Op::Keys(vec!["user:1".into()]),
            t: None,
            b: false,
            j: false,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"i":7,"s":9,"o":{"k":["user:1"]}}"#);
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
        let h = serde_json::to_string(&Message {
            i: 1,
            s: 2,
            o: Op::Heartbeat,
            t: Some("acme".into()),
            b: false,
            j: true,
        })
        .unwrap();
        assert_eq!(h, r#"{"i":1,"s":2,"o":"h","t":"acme","j":true}"#);
    }

    #[test]
    fn reordering_is_not_a_gap_but_a_lost_message_is() {
        let t0 = Instant::now();
        let mut seqs = Sequences::default();
        assert_eq!(seqs.observe(1, 10, t0), SeqVerdict::Fine);
        assert_eq!(seqs.observe(1, 12, t0), SeqVerdict::Fine);
        assert_eq!(seqs.observe(1, 11, t0), SeqVerdict::Fine);
        assert!(!seqs.overdue(Duration::from_millis(100), t0 + Duration::from_secs(1)));
        assert_eq!(seqs.observe(1, 14, t0), SeqVerdict::Fine);
        assert!(!seqs.overdue(Duration::from_millis(100), t0 + Duration::from_millis(50)));
        assert!(seqs.overdue(Duration::from_millis(100), t0 + Duration::from_millis(150)));
        // Reported once.
        assert!(!seqs.overdue(Duration::from_millis(100), t0 + Duration::from_millis(200)));
        assert_eq!(seqs.observe(1, 10_000, t0), SeqVerdict::Gap);
    }

    #[test]
    fn acks_cover_only_what_was_applied_without_holes() {
        let t0 = Instant::now();
        let mut seqs = Sequences::default();
        seqs.observe(1, 5, t0);
        assert_eq!(seqs.acks_due(), vec![], "nothing owed");
        seqs.owe(1, 5);
        assert_eq!(seqs.acks_due(), vec![(1, 5)]);
        assert_eq!(seqs.acks_due(), vec![], "sent once");
        // 7 arrives before 6: only 5 is covered until 6 comes (a heartbeat will do).
        seqs.observe(1, 7, t0);
        seqs.owe(1, 7);
        assert_eq!(seqs.acks_due(), vec![]);
        seqs.observe(1, 6, t0);
        assert_eq!(seqs.acks_due(), vec![(1, 7)]);
        // A hole given up on (the L1 was flushed over it) no longer holds acks back.
        seqs.observe(1, 9, t0);
        seqs.owe(1, 9);
        assert_eq!(seqs.acks_due(), vec![]);
        assert!(seqs.overdue(Duration::from_millis(10), t0 + Duration::from_secs(1)));
        assert_eq!(seqs.acks_due(), vec![(1, 9)]);
        // Heartbeats alone are never acknowledged.
        seqs.observe(1, 10, t0);
        assert_eq!(seqs.acks_due(), vec![]);
    }

    #[test]
    fn peers_are_waited_for_while_live_and_responsive() {
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        let mut peers = Peers::default();
        peers.heard(1, t0).heard(2, t0);
        let mut owing = peers.owing(3, window, t0);
        owing.sort_unstable();
        assert_eq!(owing, vec![1, 2]);
        peers.acked(1, 4, t0);
        assert_eq!(peers.owing(3, window, t0), vec![2]);
        // 2 times out: marked once, then not waited for until it acknowledges.
        assert_eq!(peers.give_up(&[2]), 1);
        assert_eq!(peers.give_up(&[2]), 0);
        assert_eq!(peers.owing(5, window, t0), vec![1]);
        assert_eq!(peers.count(window, t0), (2, 1));
        peers.acked(2, 3, t0);
        let mut owing = peers.owing(5, window, t0);
        owing.sort_unstable();
        assert_eq!(owing, vec![1, 2]);
        // Our own stream came back: every peer is waited for again.
        assert_eq!(peers.give_up(&[1, 2]), 2);
        assert_eq!(peers.count(window, t0), (2, 2));
        peers.forgive_all();
        assert_eq!(peers.count(window, t0), (2, 0));
        // Silent peers stop counting, then are forgotten; a closing one at once.
        let later = t0 + Duration::from_secs(2);
        peers.heard(3, later);
        assert_eq!(peers.owing(5, window, later), vec![3]);
        peers.prune(window, later);
        assert_eq!(peers.count(window, later), (1, 0));
        peers.left(3);
        assert_eq!(peers.count(window, later), (0, 0));
    }

    #[test]
    fn backlog_overflows_into_a_clear() {
        let mut b = Backlog::default();
        assert!(!b.add_keys(["a", "b"], 3));
        assert!(!b.add_pattern("user:*", 3));
        assert!(b.add_keys(["c"], 3));
        let part = &b.scopes[&None];
        assert!(part.clear && part.keys.is_empty() && part.patterns.is_empty());
        assert_eq!(b.len(), 1);
        let done = b.snapshot();
        b.remove(&done);
        assert!(b.is_empty(), "a delivered clear with nothing after it");
    }

    #[test]
    fn a_write_failing_while_a_clear_replays_is_not_lost() {
        // The clear is being replayed (snapshot taken) when another write times
        // out: its outcome may land after the replay's clear, so a clear (which
        // covers it) stays queued.
        let mut b = Backlog::default();
        b.add_clear();
        let done = b.snapshot();
        b.add_keys(["later"], 3);
        b.remove(&done);
        assert!(!b.is_empty(), "the failed write escaped invalidation");
        assert!(b.scopes[&None].clear);
        // The next replay delivers it.
        let done = b.snapshot();
        b.remove(&done);
        assert!(b.is_empty());
    }

    #[test]
    fn replay_removes_only_what_it_delivered() {
        let mut b = Backlog::default();
        b.add_keys(["a", "again"], 10);
        b.add_pattern("p:*", 10);
        let done = b.snapshot();
        b.add_keys(["b", "again"], 10);
        b.add_pattern("p:*", 10);
        b.remove(&done);
        let mut left: Vec<_> = b.scopes[&None].keys.keys().cloned().collect();
        left.sort();
        assert_eq!(left, vec!["again", "b"], "a key added again stays queued");
        assert!(b.scopes[&None].patterns.contains_key("p:*"));
    }

    #[test]
    fn outage_events_are_logged_once_per_interval_with_their_count() {
        let t = Tally::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(t.count(every, t0), Some(1), "the first logs at once");
        for i in 1..=999 {
            assert_eq!(t.count(every, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.count(every, t0 + every), Some(1000));
        assert_eq!(t.count(every, t0 + every), None);
        assert_eq!(t.finish(), 1);
        assert_eq!(
            t.count(every, t0 + every),
            Some(1),
            "a new outage logs at once"
        );
        // Whatever the clock or the interval says, nothing panics.
        assert_eq!(t.count(Duration::MAX, t0), None);
    }

    #[tokio::test]
    async fn backlog_keeps_scopes_apart() {
        let mut b = Backlog::default();
        b.add_keys(["k"], 10);
        let acme = TenantId::new("acme").unwrap();
        crate::tenant::sync_scope(acme.clone(), || b.add_keys(["k"], 10));
        assert_eq!(b.len(), 2);
        assert!(b.scopes[&Some(acme)].keys.contains_key("k"));
    }
}
