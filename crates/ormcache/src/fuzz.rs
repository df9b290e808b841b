//! Internals reachable by the fuzz targets (crate `ormcache-fuzz`), behind the
//! non-default feature `fuzzing`. Not a public API: it changes whenever the
//! internals do, and is hidden from the docs.
//!
//! Each function here is a thin door onto exactly the code a production path runs
//! on bytes it does not control (an entry read from Redis, a message PUBLISHed on
//! the invalidation channel, a URL from configuration), so a finding here is a
//! finding there.

use std::time::{Duration, Instant};

use crate::coherence::{Ack, Message, Op, Peers, SeqVerdict, Sequences};
use crate::config::{DistributedConfig, redact_url};
use crate::error::Result;
use crate::tenant::{self, TenantId};

pub use crate::codec::Encoding;

/// Wraps an encoded value with its tags' tokens (the tagged-entry envelope).
pub fn wrap_tagged(tags: &[String], tokens: &[u64], inner: &[u8]) -> Vec<u8> {
    crate::codec::wrap_tagged(tags, tokens, inner)
}

/// A tagged entry's `(tag, token)` stamps and its inner value.
pub type Unwrapped = (Vec<(String, u64)>, Vec<u8>);

/// Splits a tagged entry: `Ok(None)` for an untagged value, `Err` for a corrupt
/// envelope.
pub fn unwrap_tagged(bytes: &[u8]) -> std::result::Result<Option<Unwrapped>, String> {
    crate::codec::unwrap_tagged(bytes).map(|o| o.map(|(stamps, inner)| (stamps, inner.to_vec())))
}

/// A compiled Redis glob, as the L1 uses it.
#[derive(Debug, Clone)]
pub struct Glob(crate::glob::GlobPattern);

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Self {
        Self(crate::glob::GlobPattern::new(pattern))
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &[u8]) -> bool {
        self.0.matches_bytes(key)
    }

    /// The one string the pattern matches, if it has no wildcard.
    pub fn literal(&self) -> Option<&[u8]> {
        self.0.literal()
    }
}

/// [`escape_glob`](crate::escape_glob).
pub fn escape_glob(input: &str) -> String {
    crate::glob::escape_glob(input)
}

/// Runs `f` in `tenant`'s scope (validated), or unscoped for `None`.
fn in_scope<R>(tenant: Option<&str>, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match tenant {
        None => f(),
        Some(t) => {
            let t = TenantId::new(t)?;
            tenant::sync_scope(t, f)
        }
    }
}

/// The Redis keys a user key occupies, `[entry, lease]`, for `key` in `tenant`'s
/// scope (`None`: unscoped); `Err` where the key or tenant id is refused.
pub fn entry_names(prefix: &str, tenant: Option<&str>, key: &str) -> Result<[String; 2]> {
    in_scope(tenant, || {
        crate::key::validate("fuzz", key)?;
        Ok([
            crate::key::full_key(prefix, key),
            crate::key::lease_key(prefix, key),
        ])
    })
}

/// The Redis key of `tag`'s token in `tenant`'s scope; `Err` where refused.
pub fn tag_name(prefix: &str, tenant: Option<&str>, tag: &str) -> Result<String> {
    in_scope(tenant, || {
        crate::key::validate_tag("fuzz", tag)?;
        Ok(crate::key::tag_key(prefix, tag))
    })
}

/// The Redis key of the clear generation in `tenant`'s scope.
pub fn generation_name(prefix: &str, tenant: Option<&str>) -> Result<String> {
    in_scope(tenant, || Ok(crate::key::generation_key(prefix)))
}

/// The key of the cluster-wide stats hash.
pub fn stats_name(prefix: &str) -> String {
    format!("{prefix}:{}", crate::key::STATS_KEY)
}

/// What an invalidation message invalidates (a mirror of the wire type).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FuzzOp {
    Keys(Vec<String>),
    Pattern(String),
    Clear,
    Tag(String),
    Heartbeat,
}

/// An invalidation message (a mirror of the wire type).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FuzzMessage {
    pub sender: u64,
    pub seq: u64,
    pub op: FuzzOp,
    pub tenant: Option<String>,
    pub bye: bool,
    pub joined: bool,
}

impl From<FuzzMessage> for Message {
    fn from(m: FuzzMessage) -> Self {
        Message {
            i: m.sender,
            s: m.seq,
            o: match m.op {
                FuzzOp::Keys(k) => Op::Keys(k),
                FuzzOp::Pattern(p) => Op::Pattern(p),
                FuzzOp::Clear => Op::Clear,
                FuzzOp::Tag(t) => Op::Tag(t),
                FuzzOp::Heartbeat => Op::Heartbeat,
            },
            t: m.tenant,
            b: m.bye,
            j: m.joined,
        }
    }
}

impl From<Message> for FuzzMessage {
    fn from(m: Message) -> Self {
        FuzzMessage {
            sender: m.i,
            seq: m.s,
            op: match m.o {
                Op::Keys(k) => FuzzOp::Keys(k),
                Op::Pattern(p) => FuzzOp::Pattern(p),
                Op::Clear => FuzzOp::Clear,
                Op::Tag(t) => FuzzOp::Tag(t),
                Op::Heartbeat => FuzzOp::Heartbeat,
            },
            tenant: m.t,
            bye: m.b,
            joined: m.j,
        }
    }
}

/// The message as published on the channel.
pub fn encode_message(m: FuzzMessage) -> Vec<u8> {
    serde_json::to_vec(&Message::from(m)).unwrap_or_default()
}

/// The message as the subscriber parses it; `None` for a payload it flushes over.
pub fn decode_message(payload: &[u8]) -> Option<FuzzMessage> {
    serde_json::from_slice::<Message>(payload)
        .ok()
        .map(Into::into)
}

/// An acknowledgement as published, `(instance, sequence)`.
pub fn encode_ack(instance: u64, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&Ack {
        i: instance,
        a: seq,
    })
    .unwrap_or_default()
}

/// An acknowledgement as parsed; `None` when ignored.
pub fn decode_ack(payload: &[u8]) -> Option<(u64, u64)> {
    serde_json::from_slice::<Ack>(payload)
        .ok()
        .map(|a| (a.i, a.a))
}

/// What one message did to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Unreadable: the L1 is flushed.
    Unreadable,
    /// Its own message.
    Own,
    /// Applied; `gap` if the sequence check flushed the L1, `bad_tenant` if the
    /// tenant id was refused (the L1 is flushed).
    Applied {
        /// A sequence gap was detected.
        gap: bool,
        /// The tenant id was invalid.
        bad_tenant: bool,
    },
}

/// The receiving side of the invalidation channel without Redis: the same parsing,
/// peer and sequence bookkeeping and tenant checks as the subscriber, applying the
/// invalidation to a real L1.
#[derive(Debug)]
pub struct Receiver {
    id: u64,
    peers: Peers,
    sequences: Sequences,
    l1: crate::local::QueryCache,
    now: Instant,
}

impl Receiver {
    /// A receiver with instance id `id`.
    ///
    /// # Errors
    /// None in practice: the L1's settings are valid.
    pub fn new(id: u64) -> Result<Self> {
        Ok(Self {
            id,
            peers: Peers::default(),
            sequences: Sequences::default(),
            l1: crate::local::QueryCache::new(64, Duration::from_secs(60))?,
            now: Instant::now(),
        })
    }

    /// The L1 the invalidations are applied to.
    pub fn l1(&self) -> &crate::local::QueryCache {
        &self.l1
    }

    /// Lets `d` pass on the receiver's clock (saturating).
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.checked_add(d).unwrap_or(self.now);
        let _ = self.sequences.overdue(Duration::from_millis(500), self.now);
        self.sequences.prune(Duration::from_secs(30), self.now);
        self.peers.prune(Duration::from_secs(30), self.now);
    }

    /// Handles one payload from the invalidation channel.
    pub fn on_message(&mut self, payload: &[u8]) -> Received {
        let Ok(msg) = serde_json::from_slice::<Message>(payload) else {
            return Received::Unreadable;
        };
        if msg.i == self.id {
            return Received::Own;
        }
        let now = self.now;
        if msg.b {
            self.peers.left(msg.i);
        } else if msg.j {
            self.peers.joined(msg.i, now);
        } else {
            self.peers.heard(msg.i, now);
        }
        let gap = self.sequences.observe(msg.i, msg.s, now) == SeqVerdict::Gap;
        let invalidation = msg.o != Op::Heartbeat;
        let l1 = &self.l1;
        let apply = |op: Op| {
            use crate::cache::Cache;
            use futures_util::FutureExt;
            // The L1's futures complete at once.
            let _ = match op {
                Op::Keys(keys) => {
                    for k in &keys {
                        let _ = Cache::delete(l1, k).now_or_never();
                    }
                    Some(())
                }
                Op::Pattern(p) => Cache::clear_pattern(l1, &p).now_or_never().map(drop),
                Op::Clear => Cache::clear(l1).now_or_never().map(drop),
                Op::Tag(t) => Cache::invalidate_tag(l1, &t).now_or_never().map(drop),
                Op::Heartbeat => Some(()),
            };
        };
        let bad_tenant = match msg.t.as_deref().map(TenantId::new) {
            None => {
                apply(msg.o);
                false
            }
            Some(Ok(t)) => {
                tenant::sync_scope(t, || apply(msg.o));
                false
            }
            Some(Err(_)) => true,
        };
        if invalidation {
            self.sequences.owe(msg.i, msg.s);
        }
        let _ = self.sequences.acks_due();
        let _ = self.peers.owing(msg.s, Duration::from_secs(2), now);
        Received::Applied { gap, bad_tenant }
    }

    /// Handles one payload from this instance's acknowledgement channel.
    pub fn on_ack(&mut self, payload: &[u8]) -> bool {
        let Ok(ack) = serde_json::from_slice::<Ack>(payload) else {
            return false;
        };
        self.peers.acked(ack.i, ack.a, self.now);
        let _ = self.peers.count(Duration::from_secs(2), self.now);
        true
    }
}

/// Every text a Redis URL reaches a person through, as the library builds it today:
/// the redacted address (`DistributedCache::address`, error details), the config's
/// `Debug`, `DistributedConfig::redacted_url`, and the error a bad URL gives at
/// `create`.
///
/// This is the one adapter the `url` fuzz target calls: point it at the URL parser
/// when that changes.
pub fn url_surface(url: &str) -> Vec<String> {
    let config = DistributedConfig::new().redis_url(url);
    let mut out = vec![
        format!("{config:?}"),
        config.redacted_url(),
        redact_url(url),
    ];
    // The one parser every entry point uses (`config/url.rs`): what it shows of a
    // URL, and the error `create` reports for one it cannot use.
    match crate::config::RedisUrl::parse(url) {
        Ok(u) => {
            out.push(u.to_string());
            out.push(format!("{u:?}"));
        }
        Err(e) => {
            out.push(e.to_string());
            out.push(format!("{e:?}"));
        }
    }
    out
}
