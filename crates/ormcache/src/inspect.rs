//! Looking inside a cache from the outside: what an entry holds (whatever codec
//! wrote it, its tags and whether they are still current), the stats hash, and the
//! invalidation channel of [`HybridCache`](crate::HybridCache) with the instances
//! on it. This is what the operator CLI (`ormcache`, crate `ormcache-cli`) is built
//! on; it is public so that other tools need not copy the formats.
//!
//! Everything here reads, except [`peers`] with a probe (see there). Writes that
//! the running instances must see (delete, clear, invalidate a tag) go through a
//! [`HybridCache`](crate::HybridCache), not through this module.
//!
//! Keys are the user's keys (without the prefix) and follow the current
//! [`tenant::scope`](crate::tenant::scope), as every cache call does.
//!
//! The formats shown (DESIGN contracts 1, 2 and 9) change only with those contracts:
//!
//! | what | where | format |
//! | --- | --- | --- |
//! | an entry | `{prefix}:{key}` | [`Encoding`]'s wire format, optionally inside the tag envelope |
//! | a tag's token | `{prefix}:__oc:tag:{tag}` (the namespace token: tag `""`) | a decimal `u64`; an entry stamped with another token is stale |
//! | the stats hash | `{prefix}:stats` | Redis hash of decimal counters (`hits`, `misses`, `sets`, `errors`, …) |
//! | invalidations, heartbeats | channel `{prefix}:__oc:inv` | JSON, see [`Invalidation`] |
//! | acknowledgements | channel `{prefix}:__oc:inv:ack:{sender}` | JSON, see [`Acknowledgement`] |

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};

use crate::cache::Ttl;
use crate::codec::{Codec, Encoding, TAGGED, unwrap_tagged};
use crate::coherence::{Ack, Message, Op};
use crate::distributed::{DistributedCache, Notice};
use crate::error::{Error, ErrorKind, Result, from_redis};
use crate::glob::escape_glob;
use crate::key;

const MSGPACK: u8 = 0x01;
const LZ4: u8 = 0x02;

/// How a stored value is laid out (DESIGN contract 2).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The codec that wrote the value.
    pub codec: Codec,
    /// LZ4-compressed.
    pub compressed: bool,
    /// Inside the tag envelope (tags, or namespace versioning).
    pub tagged: bool,
    /// Stored size in bytes.
    pub bytes: usize,
}

/// A stored value taken apart: [`decode_stored`]'s answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The layout.
    pub format: Format,
    /// The `(tag, token)` stamps of a tagged entry (tag `""` is the namespace
    /// token of namespace versioning); empty when untagged.
    pub stamps: Vec<(String, u64)>,
    /// The value, as JSON whatever the codec.
    pub value: serde_json::Value,
}

/// Takes stored bytes apart, whatever codec, compression and envelope wrote them,
/// refusing what is larger than `encoding`'s size limit (before and after
/// decompression). No I/O.
///
/// # Errors
/// [`ErrorKind::Decode`] for bytes no ormcache codec wrote (or not representable
/// as JSON, such as MessagePack binary strings), [`ErrorKind::ValueTooLarge`]
/// above the limit.
///
/// ```
/// use ormcache::{Codec, Compression, Encoding, inspect};
///
/// let enc = Encoding::new(Codec::MessagePack).compression(Compression::Lz4 { min_bytes: 16 });
/// let bytes = enc.encode(&vec!["row"; 50]).unwrap();
/// let d = inspect::decode_stored(&Encoding::default(), &bytes).unwrap();
/// assert_eq!(d.format.codec, Codec::MessagePack);
/// assert!(d.format.compressed && !d.format.tagged);
/// assert_eq!(d.value[49], "row");
///
/// let plain = inspect::decode_stored(&Encoding::default(), br#"{"id":1}"#).unwrap();
/// assert_eq!(plain.format.codec, Codec::Json);
/// assert_eq!(plain.value["id"], 1);
/// ```
pub fn decode_stored(encoding: &Encoding, bytes: &[u8]) -> Result<Decoded> {
    let err = |detail: String| Error::new(ErrorKind::Decode, "inspect").with_detail(detail);
    let (stamps, inner) = match unwrap_tagged(bytes) {
        Ok(Some((stamps, inner))) => (stamps, inner),
        Ok(None) => (Vec::new(), bytes),
        Err(e) => return Err(err(e)),
    };
    let value: serde_json::Value = encoding.decode_for("inspect", None, bytes)?;
    let compressed = inner.first() == Some(&LZ4);
    let first = if compressed {
        // The decode above checked the header, the size and the block.
        let len = inner
            .get(1..5)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        lz4_flex::block::decompress(inner.get(5..).unwrap_or_default(), len)
            .ok()
            .and_then(|p| p.first().copied())
    } else {
        inner.first().copied()
    };
    Ok(Decoded {
        format: Format {
            codec: if first == Some(MSGPACK) {
                Codec::MessagePack
            } else {
                Codec::Json
            },
            compressed,
            tagged: bytes.first() == Some(&TAGGED),
            bytes: bytes.len(),
        },
        stamps,
        value,
    })
}

/// A stamp of an entry (a tag, or the namespace token) and whether it still holds.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagState {
    /// The tag (`""` for the namespace token of namespace versioning).
    pub name: String,
    /// The token the entry was written under.
    pub token: u64,
    /// The tag's token now (`None`: gone, evicted or flushed).
    pub current: Option<u64>,
}

impl TagState {
    /// Whether the entry is still valid as far as this stamp goes.
    pub fn is_current(&self) -> bool {
        self.current == Some(self.token)
    }
}

/// One entry as stored in Redis: [`entry`]'s answer.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Entry {
    /// The Redis key (`{prefix}:{key}`, or the tenant's).
    pub redis_key: String,
    /// The remaining lifetime.
    pub ttl: Ttl,
    /// Stored size in bytes.
    pub bytes: usize,
    /// The value taken apart, or why it could not be (bytes no ormcache codec wrote).
    pub decoded: std::result::Result<Decoded, Error>,
    /// The entry's tags with their state (the namespace stamp is in `namespace`).
    pub tags: Vec<TagState>,
    /// The namespace stamp, with namespace versioning.
    pub namespace: Option<TagState>,
}

impl Entry {
    /// Whether a cache read would return it: decodable and every stamp current.
    pub fn is_fresh(&self) -> bool {
        self.decoded.is_ok()
            && self.tags.iter().all(TagState::is_current)
            && self.namespace.as_ref().is_none_or(TagState::is_current)
    }
}

/// Reads `key` as stored (in the current tenant scope): the value whatever codec
/// wrote it, its TTL, its tags and whether each is still current. Two round trips
/// for a tagged entry, one otherwise. Changes nothing (a stale entry is shown, not
/// removed) and counts nothing in the stats.
///
/// # Errors
/// An invalid key; Redis errors and timeouts (a key holding another Redis type is
/// a [`Server`](ErrorKind::Server) error).
///
/// # Cancel safety
/// Cancel-safe (it only reads).
///
/// ```no_run
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// if let Some(e) = ormcache::inspect::entry(&cache, "user:1").await? {
///     println!("{} {:?} fresh={}", e.redis_key, e.ttl, e.is_fresh());
/// }
/// # Ok(()) }
/// ```
pub async fn entry(cache: &DistributedCache, key: &str) -> Result<Option<Entry>> {
    key::validate("inspect", key)?;
    let (bytes, pttl) = cache.raw_entry("inspect", key).await?;
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let ttl = match pttl {
        -2 => Ttl::Missing,
        ms if ms < 0 => Ttl::NoExpiry,
        ms => Ttl::Remaining(Duration::from_millis(ms as u64)),
    };
    let decoded = decode_stored(&cache.encoding(), &bytes).map_err(|e| e.with_key(key));
    let stamps = match (&decoded, unwrap_tagged(&bytes)) {
        (Ok(d), _) => d.stamps.clone(),
        (Err(_), Ok(Some((s, _)))) => s,
        (Err(_), _) => Vec::new(),
    };
    let names: Vec<String> = stamps.iter().map(|(t, _)| t.clone()).collect();
    let current = cache.current_tag_tokens("inspect", &names).await?;
    let mut tags = Vec::with_capacity(stamps.len());
    let mut namespace = None;
    for ((name, token), current) in stamps.into_iter().zip(current) {
        let state = TagState {
            name,
            token,
            current,
        };
        if state.name.is_empty() {
            namespace = Some(state);
        } else {
            tags.push(state);
        }
    }
    Ok(Some(Entry {
        redis_key: cache.redis_key(key),
        ttl,
        bytes: bytes.len(),
        decoded,
        tags,
        namespace,
    }))
}

/// Every field of the cluster-wide stats hash `{prefix}:stats` (the Python
/// package's `hits`, `misses`, `sets`, `errors`, and whatever else is counted
/// there), sorted by name, values as stored. One `HGETALL`; flushes nothing.
///
/// # Errors
/// Redis errors and timeouts.
///
/// # Cancel safety
/// Cancel-safe (it only reads).
///
/// ```no_run
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// for (field, value) in ormcache::inspect::stats_hash(&cache).await? {
///     println!("{field} = {value}");
/// }
/// # Ok(()) }
/// ```
pub async fn stats_hash(cache: &DistributedCache) -> Result<Vec<(String, String)>> {
    cache.stats_fields("stats").await
}

/// How many keys [`clear_pattern(pattern)`](DistributedCache::clear_pattern) would
/// remove now, in the current tenant scope: the same `SCAN` (every primary of a
/// cluster) and the same rules (never reserved keys, never a tenant's from outside
/// its scope), without deleting. Keys written meanwhile are not counted.
///
/// # Errors
/// Redis errors and timeouts.
///
/// # Cancel safety
/// Cancel-safe (it only reads).
///
/// ```no_run
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// let n = ormcache::inspect::count_matching(&cache, "user:*").await?;
/// println!("clear_pattern(\"user:*\") would remove {n} keys");
/// # Ok(()) }
/// ```
pub async fn count_matching(cache: &DistributedCache, pattern: &str) -> Result<u64> {
    cache.count_matching("count_matching", pattern).await
}

/// The invalidation channel of the [`HybridCache`](crate::HybridCache)s sharing
/// `prefix`: `{prefix}:__oc:inv`.
///
/// ```
/// assert_eq!(ormcache::inspect::channel("myapp"), "myapp:__oc:inv");
/// ```
pub fn channel(prefix: &str) -> String {
    // `HybridBuilder::build` names its channel with this function.
    format!("{prefix}:{}:inv", key::RESERVED_NAMESPACE)
}

/// Where the instances on `channel` acknowledge `sender`'s messages (the one
/// definition: `hybrid/ack.rs` publishes on it too).
pub(crate) fn ack_channel(channel: &str, sender: u64) -> String {
    format!("{channel}:ack:{sender}")
}

/// What an invalidation message invalidates.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationOp {
    /// These keys (a write, delete or expire).
    Keys(Vec<String>),
    /// The keys matching this glob (`clear_pattern`).
    Pattern(String),
    /// Everything under the prefix (`clear`).
    Clear,
    /// The entries carrying this tag (`invalidate_tag`).
    Tag(String),
    /// Nothing: a heartbeat.
    Heartbeat,
}

/// One message on the invalidation channel.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The sending instance's random id (new at every start).
    pub sender: u64,
    /// The sender's sequence number (a jump means a lost message).
    pub seq: u64,
    /// What it invalidates.
    pub op: InvalidationOp,
    /// The tenant scope of the call, if any.
    pub tenant: Option<String>,
    /// The sender's stream just came up (a heartbeat).
    pub joined: bool,
    /// The sender is closing (a heartbeat).
    pub closing: bool,
}

/// "Instance `peer` has applied every message of `sender` up to `upto`."
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledgement {
    /// The acknowledging instance.
    pub peer: u64,
    /// The instance whose messages are acknowledged.
    pub sender: u64,
    /// Its highest sequence number applied with nothing missing below.
    pub upto: u64,
}

/// Decodes a message of the invalidation channel.
///
/// # Errors
/// [`ErrorKind::Decode`] for anything else (a running instance flushes its L1 on
/// such a message).
///
/// ```
/// use ormcache::inspect::{self, InvalidationOp};
///
/// let m = inspect::decode_invalidation(br#"{"i":7,"s":3,"o":{"k":["user:1"]}}"#).unwrap();
/// assert_eq!((m.sender, m.seq), (7, 3));
/// assert_eq!(m.op, InvalidationOp::Keys(vec!["user:1".into()]));
/// assert!(inspect::decode_invalidation(b"garbage").is_err());
/// ```
pub fn decode_invalidation(payload: &[u8]) -> Result<Invalidation> {
    let m: Message = serde_json::from_slice(payload).map_err(|e| {
        Error::new(ErrorKind::Decode, "decode_invalidation")
            .with_detail("not an invalidation message")
            .with_source(e)
    })?;
    Ok(Invalidation {
        sender: m.i,
        seq: m.s,
        op: match m.o {
            Op::Keys(k) => InvalidationOp::Keys(k),
            Op::Pattern(p) => InvalidationOp::Pattern(p),
            Op::Clear => InvalidationOp::Clear,
            Op::Tag(t) => InvalidationOp::Tag(t),
            Op::Heartbeat => InvalidationOp::Heartbeat,
        },
        tenant: m.t,
        joined: m.j,
        closing: m.b,
    })
}

/// What a [`Listener`] hears.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// An invalidation or a heartbeat.
    Invalidation(Invalidation),
    /// An acknowledgement.
    Ack(Acknowledgement),
    /// A message that is neither (the instances flush their L1 on one).
    Unreadable {
        /// Where it was published.
        channel: String,
    },
}

/// A subscription to a prefix's invalidation channel and to every acknowledgement
/// channel under it: [`listen`]'s answer.
pub struct Listener {
    channel: String,
    /// Every message heard: its channel and payload.
    stream: Pin<Box<dyn Stream<Item = (String, Vec<u8>)> + Send>>,
    /// On a Redis Cluster, the connection of the sharded subscriptions (open
    /// while this lives).
    _sharded: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Subscribes to the invalidation channel of `cache`'s prefix (and, by pattern, to
/// its acknowledgement channels and the instances' inboxes of
/// [`Protocol::Fleet`](crate::Protocol::Fleet)), through the server (or a cluster
/// node, or the Sentinel's master) the cache's own subscriber would use. Changes
/// nothing: a listener is not an instance, nobody waits for it. On a Redis
/// Cluster, where fleet instances use sharded channels (which have no pattern
/// subscriptions), it also subscribes to the sharded broadcast channel and to
/// every inbox and acknowledgement channel subscribed to when it starts: an
/// instance started later is heard only when it publishes to the broadcast
/// channel.
///
/// # Errors
/// A connection error or timeout (bounded by the command timeout, at least 1 s).
///
/// # Cancel safety
/// Cancel-safe: dropped, the subscription connection closes.
///
/// ```no_run
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// let mut listener = ormcache::inspect::listen(&cache).await?;
/// while let Some(event) = listener.next().await {
///     println!("{event:?}");
/// }
/// # Ok(()) }
/// ```
pub async fn listen(cache: &DistributedCache) -> Result<Listener> {
    listen_as(cache, None).await
}

/// [`listen`]; with `me`, also to the acknowledgements sent to `me` (a probe's).
async fn listen_as(cache: &DistributedCache, me: Option<u64>) -> Result<Listener> {
    let channel = channel(cache.prefix());
    let client = cache.pubsub_client().await?;
    let acks = format!("{}:ack:*", escape_glob(&channel));
    // `Protocol::Fleet`: each instance's inbox (its heartbeats, and the writes to
    // keys it holds).
    let inboxes = format!("{}:to:*", escape_glob(&channel));
    let within = cache.command_timeout().max(Duration::from_secs(1));
    let timed_out = |what: &str| {
        Error::new(ErrorKind::Timeout, "listen").with_detail(format!(
            "{what} at {} took over {within:?}",
            cache.address()
        ))
    };
    let subscribed = tokio::time::timeout(within, async {
        let mut ps = client.get_async_pubsub().await?;
        ps.subscribe(&channel).await?;
        ps.psubscribe(&[acks.as_str(), inboxes.as_str()]).await?;
        Ok::<_, redis::RedisError>(ps)
    })
    .await;
    let ps = match subscribed {
        Ok(Ok(ps)) => ps,
        Ok(Err(e)) => return Err(from_redis("listen", e).with_detail(cache.address().to_owned())),
        Err(_) => return Err(timed_out("subscribing")),
    };
    let plain = ps.into_on_message().map(|m| {
        (
            m.get_channel_name().to_owned(),
            m.get_payload_bytes().to_vec(),
        )
    });
    // On a cluster, fleet instances use sharded channels: the broadcast one, and
    // the inboxes and acknowledgement channels subscribed to now.
    #[cfg(feature = "cluster")]
    if cache.is_cluster() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fixed: Vec<String> = std::iter::once(channel.clone())
            .chain(me.map(|me| ack_channel(&channel, me)))
            .collect();
        let sharded = tokio::time::timeout(
            within.saturating_mul(4),
            cache.sharded_listener(tx, &fixed, &[inboxes, acks]),
        )
        .await
        .map_err(|_| timed_out("subscribing to the sharded channels"))??;
        let pushes = futures_util::stream::unfold(rx, |mut rx| async move {
            let push = rx.recv().await?;
            Some((push, rx))
        })
        .filter_map(|push: redis::PushInfo| async move {
            if push.kind != redis::PushKind::SMessage {
                return None;
            }
            let mut data = push.data.into_iter();
            let channel: String = redis::from_redis_value(data.next()?).ok()?;
            let payload: Vec<u8> = redis::from_redis_value(data.next()?).ok()?;
            Some((channel, payload))
        });
        return Ok(Listener {
            channel,
            stream: Box::pin(futures_util::stream::select(plain, pushes)),
            _sharded: sharded,
        });
    }
    let _ = me;
    Ok(Listener {
        channel,
        stream: Box::pin(plain),
        _sharded: None,
    })
}

impl Listener {
    /// The invalidation channel listened to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next message; `None` once the subscription is lost (the connection
    /// closed).
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is taken from the stream only when returned.
    pub async fn next(&mut self) -> Option<ChannelEvent> {
        let (name, payload) = self.stream.next().await?;
        let payload = payload.as_slice();
        let ack_head = format!("{}:ack:", self.channel);
        let inbox_head = format!("{}:to:", self.channel);
        Some(if name == self.channel || name.starts_with(&inbox_head) {
            match decode_invalidation(payload) {
                Ok(m) => ChannelEvent::Invalidation(m),
                Err(_) => ChannelEvent::Unreadable { channel: name },
            }
        } else {
            let sender = name
                .strip_prefix(&ack_head)
                .and_then(|s| s.parse::<u64>().ok());
            match (sender, serde_json::from_slice::<Ack>(payload)) {
                (Some(sender), Ok(a)) => ChannelEvent::Ack(Acknowledgement {
                    peer: a.i,
                    sender,
                    upto: a.a,
                }),
                _ => ChannelEvent::Unreadable { channel: name },
            }
        })
    }

    /// [`next`](Self::next), waiting at most until `deadline`; `Ok(None)` when it
    /// passed.
    async fn next_until(&mut self, deadline: tokio::time::Instant) -> Option<Option<ChannelEvent>> {
        tokio::time::timeout_at(deadline, self.next()).await.ok()
    }
}

/// An instance heard on the invalidation channel: [`peers`]' answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its random id (new at every start).
    pub id: u64,
    /// How long before [`peers`] returned it last published on the channel (a
    /// heartbeat or an invalidation; for an instance heard only acknowledging,
    /// its first acknowledgement).
    pub last_heard: Duration,
    /// Messages and acknowledgements heard from it.
    pub messages: u64,
    /// Its highest sequence number heard (0 if only its acknowledgements were).
    pub last_seq: u64,
    /// Whether it said it is closing.
    pub closing: bool,
    /// The probe's answer: `Some(Ok(latency))` if it acknowledged, `Some(Err(()))`
    /// if it did not within the timeout (unconfirmed), `None` if it was not probed
    /// (no probe, or first heard after the probe was sent).
    pub confirmed: Option<std::result::Result<Duration, ()>>,
}

/// The instances on the invalidation channel of `cache`'s prefix, heard within
/// `listen` (heartbeats come every 500 ms by default: listen for at least two
/// intervals), sorted by id.
///
/// With `probe: Some(timeout)`, it then checks that each instance confirms
/// invalidations as a writer's would be confirmed: it publishes one message that
/// invalidates nothing, under an id of its own, waits up to `timeout` for their
/// acknowledgements ([`Peer::confirmed`]), acknowledges meanwhile whatever the
/// instances publish (so that no writer waits for it), and then says goodbye so
/// that nobody waits for it afterwards. The instances count the probe as one
/// invalidation received. Without a probe nothing is published.
///
/// # Errors
/// As [`listen`]; a failed publish of the probe.
///
/// # Cancel safety
/// Dropped after the probe was published, the goodbye is published from a task,
/// so no instance keeps waiting for the probe.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn demo(cache: ormcache::DistributedCache) -> ormcache::Result<()> {
/// let peers = ormcache::inspect::peers(&cache, Duration::from_secs(1), Some(Duration::from_secs(1))).await?;
/// let unconfirmed = peers.iter().filter(|p| p.confirmed == Some(Err(()))).count();
/// println!("{} instances, {unconfirmed} unconfirmed", peers.len());
/// # Ok(()) }
/// ```
pub async fn peers(
    cache: &DistributedCache,
    listen_for: Duration,
    probe: Option<Duration>,
) -> Result<Vec<Peer>> {
    let me = crate::memo::random_token();
    let mut listener = listen_as(cache, Some(me)).await?;
    let mut seen: HashMap<u64, (Instant, Peer)> = HashMap::new();
    let deadline = deadline_after(listen_for);
    while let Some(Some(event)) = listener.next_until(deadline).await {
        note(&mut seen, &event, None);
    }
    if let Some(timeout) = probe {
        probe_peers(cache, me, &mut listener, &mut seen, timeout).await?;
    }
    let now = Instant::now();
    let mut out: Vec<Peer> = seen
        .into_values()
        .map(|(at, mut p)| {
            p.last_heard = now.saturating_duration_since(at);
            p
        })
        .collect();
    out.sort_by_key(|p| p.id);
    Ok(out)
}

fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// Records what `event` says about the instance that sent it (not `me`).
fn note(seen: &mut HashMap<u64, (Instant, Peer)>, event: &ChannelEvent, me: Option<u64>) {
    let (id, seq, closing) = match event {
        ChannelEvent::Invalidation(m) => (m.sender, m.seq, m.closing),
        ChannelEvent::Ack(a) => (a.peer, 0, false),
        ChannelEvent::Unreadable { .. } => return,
    };
    if Some(id) == me {
        return;
    }
    let (at, p) = seen.entry(id).or_insert_with(|| {
        (
            Instant::now(),
            Peer {
                id,
                last_heard: Duration::ZERO,
                messages: 0,
                last_seq: 0,
                closing: false,
                confirmed: None,
            },
        )
    });
    // The last message it published (heartbeats come on a timer); an
    // acknowledgement only proves it alive when nothing else was heard.
    if !matches!(event, ChannelEvent::Ack(_)) {
        *at = Instant::now();
    }
    p.messages += 1;
    p.last_seq = p.last_seq.max(seq);
    p.closing |= closing;
}

async fn probe_peers(
    cache: &DistributedCache,
    me: u64,
    listener: &mut Listener,
    seen: &mut HashMap<u64, (Instant, Peer)>,
    timeout: Duration,
) -> Result<()> {
    let message = |seq: u64, op: Op, closing: bool| {
        (
            listener.channel.clone(),
            serde_json::to_vec(&Message {
                i: me,
                s: seq,
                o: op,
                t: None,
                b: closing,
                j: false,
            })
            .unwrap_or_default(),
        )
    };
    let probe = message(1, Op::Keys(Vec::new()), false);
    let bye = message(2, Op::Heartbeat, true);
    for (_, p) in seen.values_mut() {
        if !p.closing {
            p.confirmed = Some(Err(()));
        }
    }
    // From the moment the probe may have left, a goodbye is owed: if this future
    // is dropped, the guard publishes it from a task.
    let mut goodbye_owed = Goodbye {
        cache: cache.clone(),
        bye: Some(bye),
    };
    let sent = Instant::now();
    announce(cache, &probe).await?;
    let deadline = deadline_after(timeout);
    let waiting = |seen: &HashMap<u64, (Instant, Peer)>| {
        seen.values()
            .any(|(_, p)| p.confirmed == Some(Err(())) && !p.closing)
    };
    let mut result = Ok(());
    while waiting(seen) {
        let Some(Some(event)) = listener.next_until(deadline).await else {
            break;
        };
        note(seen, &event, Some(me));
        match event {
            ChannelEvent::Ack(a) if a.sender == me && a.upto >= 1 => {
                if let Some((_, p)) = seen.get_mut(&a.peer)
                    && p.confirmed.is_some()
                {
                    p.confirmed = Some(Ok(sent.elapsed()));
                }
            }
            ChannelEvent::Invalidation(m)
                if m.sender != me && m.op != InvalidationOp::Heartbeat =>
            {
                // Nothing cached here: applied at once. Acknowledged, so that a
                // writer that heard the probe does not wait for us.
                let ack = (
                    ack_channel(&listener.channel, m.sender),
                    serde_json::to_vec(&Ack { i: me, a: m.seq }).unwrap_or_default(),
                );
                if let Err(e) = announce(cache, &ack).await {
                    result = Err(e);
                    break;
                }
            }
            _ => {}
        }
    }
    // Whatever happened, nobody waits for the probe from now on.
    let goodbye = match goodbye_owed.bye.take() {
        Some(bye) => announce(cache, &bye).await,
        None => Ok(()),
    };
    result.and(goodbye)
}

/// The probe's goodbye, published from a task if the probe is dropped before it
/// said it (STYLE 26): the instances then stop waiting for the probe at once
/// rather than after their liveness window.
struct Goodbye {
    cache: DistributedCache,
    bye: Option<(String, Vec<u8>)>,
}

/// Publishes `payload` on `channel`, and on a Redis Cluster also on the sharded
/// channel of that name: instances of either protocol hear it once.
async fn announce(cache: &DistributedCache, (channel, payload): &(String, Vec<u8>)) -> Result<()> {
    let notice = |sharded| Notice::broadcast(channel.clone(), payload.clone(), sharded);
    cache.publish("probe", &notice(false)).await?;
    if cache.is_cluster() {
        cache.publish("probe", &notice(true)).await?;
    }
    Ok(())
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        if let Some(bye) = self.bye.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let cache = self.cache.clone();
            rt.spawn(async move {
                let _ = announce(&cache, &bye).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wrap_tagged;

    #[test]
    fn decode_stored_sees_through_every_layer() {
        let json = Encoding::default()
            .encode(&serde_json::json!({"a": 1}))
            .unwrap();
        let tagged = wrap_tagged(&["users".into(), String::new()], &[7, 9], &json);
        let d = decode_stored(&Encoding::default(), &tagged).unwrap();
        assert_eq!(
            d.format,
            Format {
                codec: Codec::Json,
                compressed: false,
                tagged: true,
                bytes: tagged.len()
            }
        );
        assert_eq!(d.stamps, vec![("users".into(), 7), (String::new(), 9)]);
        assert_eq!(d.value, serde_json::json!({"a": 1}));
        // Truncated envelopes and garbage are errors, not panics.
        for bad in [&tagged[..3], b"\x02\xff", b"\x01\xc1", b"{"] {
            assert_eq!(
                decode_stored(&Encoding::default(), bad).unwrap_err().kind(),
                ErrorKind::Decode
            );
        }
    }

    #[test]
    fn messages_round_trip_through_the_public_shape() {
        let m = Message {
            i: 1,
            s: 2,
            o: Op::Tag("users".into()),
            t: Some("acme".into()),
            b: false,
            j: true,
        };
        let d = decode_invalidation(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(
            d,
            Invalidation {
                sender: 1,
                seq: 2,
                op: InvalidationOp::Tag("users".into()),
                tenant: Some("acme".into()),
                joined: true,
                closing: false
            }
        );
    }
}
