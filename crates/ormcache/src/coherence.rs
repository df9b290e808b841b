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

use std::collections::{BTreeMap, HashMap, HashSet};

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

    /// Starts over (after a resubscription, which flushes L1 anyway).
    pub(crate) fn reset(&mut self) {
        self.senders.clear();
    }
}

/// Invalidations that could not reach Redis, per tenant scope (`None`: unscoped);
/// replayed, each in its scope, before L2 is trusted again.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    pub(crate) scopes: BTreeMap<Option<TenantId>, Part>,
}

/// What one scope has pending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) keys: HashSet<String>,
    pub(crate) patterns: Vec<String>,
    /// Clear the whole scope (asked for, or the backlog overflowed).
    pub(crate) clear: bool,
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

    /// The current task's scope.
    fn part(&mut self) -> &mut Part {
        self.scopes.entry(crate::tenant::current()).or_default()
    }

    /// Adds keys of the current scope; past `max` entries in all, every scope
    /// collapses into "clear the scope", which is always safe. Returns whether it
    /// overflowed now.
    pub(crate) fn add_keys<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a str>,
        max: usize,
    ) -> bool {
        let part = self.part();
        if part.clear {
            return false;
        }
        for k in keys {
            part.keys.insert(k.to_owned());
        }
        self.check_bound(max)
    }

    pub(crate) fn add_pattern(&mut self, pattern: &str, max: usize) -> bool {
        let part = self.part();
        if part.clear {
            return false;
        }
        if !part.patterns.iter().any(|p| p == pattern) {
            part.patterns.push(pattern.to_owned());
        }
        self.check_bound(max)
    }

    /// Clear the current scope.
    pub(crate) fn add_clear(&mut self) {
        self.part().make_clear();
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
        }
    }

    /// Drops what a successful replay delivered (entries added meanwhile stay).
    pub(crate) fn remove(&mut self, done: &Backlog) {
        for (scope, delivered) in &done.scopes {
            let Some(part) = self.scopes.get_mut(scope) else {
                continue;
            };
            if delivered.clear {
                // Everything queued before the clear was covered by it.
                part.clear = false;
            }
            part.keys.retain(|k| !delivered.keys.contains(k));
            part.patterns.retain(|p| !delivered.patterns.contains(p));
        }
        self.scopes.retain(|_, p| p.len() > 0);
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
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"i":7,"s":9,"o":{"k":["user:1"]}}"#);
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
        let h = serde_json::to_string(&Message {
            i: 1,
            s: 2,
            o: Op::Heartbeat,
            t: Some("acme".into()),
        })
        .unwrap();
        assert_eq!(h, r#"{"i":1,"s":2,"o":"h","t":"acme"}"#);
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
    fn backlog_overflows_into_a_clear() {
        let mut b = Backlog::default();
        assert!(!b.add_keys(["a", "b"], 3));
        assert!(!b.add_pattern("user:*", 3));
        assert!(b.add_keys(["c"], 3));
        let part = &b.scopes[&None];
        assert!(part.clear && part.keys.is_empty() && part.patterns.is_empty());
        assert_eq!(b.len(), 1);
        let done = b.snapshot();
        b.add_keys(["later"], 3);
        b.remove(&done);
        assert!(
            b.is_empty(),
            "keys added after a queued clear are covered by it"
        );
    }

    #[test]
    fn replay_removes_only_what_it_delivered() {
        let mut b = Backlog::default();
        b.add_keys(["a"], 10);
        let done = b.snapshot();
        b.add_keys(["b"], 10);
        b.remove(&done);
        assert_eq!(b.scopes[&None].keys.iter().collect::<Vec<_>>(), vec!["b"]);
    }

    #[tokio::test]
    async fn backlog_keeps_scopes_apart() {
        let mut b = Backlog::default();
        b.add_keys(["k"], 10);
        let acme = TenantId::new("acme").unwrap();
        crate::tenant::sync_scope(acme.clone(), || b.add_keys(["k"], 10));
        assert_eq!(b.len(), 2);
        assert!(b.scopes[&Some(acme)].keys.contains("k"));
    }
}
