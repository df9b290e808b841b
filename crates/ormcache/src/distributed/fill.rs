//! Read-through support for [`DistributedCache`]: leases against stale fills, the
//! cluster-wide lock, tags (O(1) invalidation by token), and the `Fill` driver hooks.
//!
//! Keys (all in the reserved namespace):
//! - `{prefix}:__oc:lease:{key}`: a random token while a fill of `key` runs; removed
//!   by every write, expire and delete of `key`. A fill stores only if its token is
//!   still there.
//! - `{prefix}:__oc:gen:`: a random token, replaced by every clear and pattern clear
//!   (created by the first lease if missing); a fill stores only if it is unchanged.
//!   A token, not a counter: an evicted counter would start again at a value an old
//!   lease saw, and let that lease store what a clear removed.
//! - `{prefix}:__oc:tag:{tag}`: the tag's current random token. Tagged entries carry
//!   the tokens they were written under and are misses once a token changed or is
//!   gone (evicted, or someone cleared the database) — no per-tag member lists that
//!   could leak, nothing to scan.
//!
//! On a Redis Cluster the lease key carries a hash tag of its entry's slot and there
//! is no generation: clears remove the matching leases instead (see
//! [`DistributedCache`]'s section *Redis Cluster*).

use std::sync::Arc;
use std::time::Duration;

use super::{DistributedCache, Notice, Request, full_key};
use crate::cache::CacheValue;
use crate::codec::{unwrap_tagged, wrap_tagged};
use crate::error::{Error, ErrorKind, Result};
use crate::key;
use crate::memo::{Fill, FillTicket, Flights, Lease, Lookup, random_token};
use crate::stats::Stat;

/// Stores the value if the lease is still ours (every write, expire, delete and
/// clear through ormcache removes it: that is the version check), the clear
/// generation (if given: the slot-tagged cluster layout has none) unchanged and
/// (for a first fill) nobody wrote the key meanwhile; for an early refresh, also
/// if the TTL did not grow (what a write by another Redis client, which leaves the
/// lease alone, usually does). Publishes the notice when it stores.
const FILL_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if KEYS[3] and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[2] then return 0 end
if ARGV[5] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
else
  if redis.call('PTTL', KEYS[1]) > tonumber(ARGV[5]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return 1
";

/// What a fill's store tells the other instances.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Announce<'a> {
    /// Nothing (a `DistributedCache` has no L1 to keep coherent).
    Nothing,
    /// This message, published if the value is stored (`Protocol::Broadcast`).
    Publish(&'a Notice),
    /// That this instance holds the value (`Protocol::Fleet`): registered before
    /// the store, tracked by a read after it.
    Hold(&'a super::Holder),
}

/// A read-through lookup that starts the fill on a miss, in one round trip: the
/// entry and its remaining TTL; on a miss, the lease taken with `NX` (a lease
/// already there, another fill's, is left alone: the caller then takes it the usual
/// way) and the clear generation (if given; created with a random token when
/// missing, as the two-round-trip lease does, so an evicted generation reads as
/// changed).
const LOOKUP_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1]), 0, false} end
local got = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
local gen = false
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[3], 'NX')
  gen = redis.call('GET', KEYS[3])
end
if got then return {false, -2, 1, gen} end
return {false, -2, 0, gen}
";

/// Deletes a key if it still holds the given value: a lease that is still ours, an
/// entry still as it was read stale.
const DELETE_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl DistributedCache {
    pub(super) fn lease_key(&self, key: &str) -> String {
        #[cfg(feature = "cluster")]
        if self.inner.slot_tags {
            return super::cluster::lease_key(&self.inner.prefix, key);
        }
        key::lease_key(&self.inner.prefix, key)
    }

    fn tag_key(&self, tag: &str) -> String {
        key::tag_key(&self.inner.prefix, tag)
    }

    /// Adds to `pipe` what creates missing tag tokens and reads all of them; the
    /// replies are `tags.len()` ignored SETs then one MGET.
    fn push_tag_tokens(&self, pipe: &mut redis::Pipeline, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        for t in tags {
            pipe.cmd("SET")
                .arg(self.tag_key(t))
                .arg(random_token().to_string())
                .arg("NX")
                .ignore();
        }
        let mut mget = redis::cmd("MGET");
        for t in tags {
            mget.arg(self.tag_key(t));
        }
        pipe.add_command(mget);
    }

    fn parse_tokens(op: &'static str, tokens: Vec<Option<String>>) -> Result<Vec<u64>> {
        tokens
            .into_iter()
            .map(|t| {
                t.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
                    Error::new(ErrorKind::Server, op)
                        .with_detail("tag token vanished while it was read")
                })
            })
            .collect()
    }

    /// Stores `value` at `key` tagged with `tags`; [`invalidate_tag`](Self::invalidate_tag)
    /// of any of them makes it a miss, in O(1). Two round trips (tokens, then the
    /// write). Tagged entries live in an envelope the Python package cannot read.
    ///
    /// # Errors
    /// As [`set`](Self::set); an empty tag or one over 1 KiB.
    pub async fn set_with_tags<T: CacheValue, S: AsRef<str> + Sync>(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<()> {
        let (bytes, ttl) = self
            .encode_tagged("set_with_tags", key, &value, ttl, tags)
            .await?;
        self.set_bytes(key, &bytes, ttl, None).await
    }

    /// Validates and encodes a value for `key`, stamped with its tags' tokens and,
    /// with namespace versioning, the namespace token (one round trip then; none
    /// for a plain value).
    pub(crate) async fn encode_tagged<T: serde::Serialize + ?Sized + Sync, S: AsRef<str> + Sync>(
        &self,
        op: &'static str,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[S],
    ) -> Result<(Vec<u8>, Duration)> {
        key::validate(op, key)?;
        let ttl = ttl.unwrap_or(self.inner.default_ttl);
        key::validate_ttl(op, key, ttl)?;
        let inner = self.inner.encoding.encode_for(op, Some(key), value)?;
        let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_owned()).collect();
        match self.stamps(op, &tags).await? {
            None => Ok((inner, ttl)),
            Some((names, tokens)) => Ok((wrap_tagged(&names, &tokens, &inner), ttl)),
        }
    }

    /// The tag names and tokens to stamp an entry with: the user's tags (validated)
    /// plus the namespace when versioning is on; `None` when there are none.
    pub(crate) async fn stamps(
        &self,
        op: &'static str,
        tags: &[String],
    ) -> Result<Option<(Vec<String>, Vec<u64>)>> {
        key::validate_tags(op, tags)?;
        let names = self.stamp_names(tags);
        if names.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        self.push_tag_tokens(&mut pipe, &names);
        let (tokens,): (Vec<Option<String>>,) = self.query_pipe(op, &pipe).await?;
        Ok(Some((names, Self::parse_tokens(op, tokens)?)))
    }

    /// The user's tags plus, with namespace versioning, the namespace (the tag
    /// named "", which no user tag can be).
    pub(crate) fn stamp_names(&self, tags: &[String]) -> Vec<String> {
        let mut names = Vec::with_capacity(tags.len() + 1);
        if self.inner.namespaced {
            names.push(String::new());
        }
        names.extend(tags.iter().cloned());
        names
    }

    /// With namespace versioning: replaces the namespace token (every entry is a
    /// miss at once, O(1)) and removes the orphaned entries in the background.
    pub(crate) async fn clear_namespace(&self, op: &'static str) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.tag_key("")).arg(random_token().to_string());
        self.query::<()>(op, None, &cmd).await?;
        let weak = Arc::downgrade(&self.inner);
        // The sweep keeps the caller's tenant: it cleans that namespace only.
        crate::tenant::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let cache = DistributedCache { inner };
            if let Err(e) = cache.sweep_orphans().await {
                tracing::debug!(error = %e, "background sweep after a namespace clear stopped");
            }
        });
        Ok(())
    }

    /// Removes entries under the prefix whose namespace token is not the current
    /// one (or that have none): the background half of an O(1) clear.
    async fn sweep_orphans(&self) -> Result<u64> {
        let current: Option<String> = self
            .query("sweep", None, redis::cmd("GET").arg(self.tag_key("")))
            .await?;
        let current = current.and_then(|c| c.parse::<u64>().ok());
        let ns = crate::tenant::current_namespace().unwrap_or_default();
        let pattern = format!(
            "{}{}*",
            self.inner.scan_prefix,
            crate::glob::escape_glob(&ns)
        );
        let own = format!("{}:{}", self.inner.prefix, ns);
        let mut scan = self.scan("sweep", pattern).await?;
        let mut removed = 0u64;
        while let Some(keys) = scan.next().await? {
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| {
                    k.strip_prefix(own.as_bytes())
                        .is_some_and(|rest| !super::is_reserved_bytes(rest))
                })
                .collect();
            if keys.is_empty() {
                continue;
            }
            let values: Vec<Option<Vec<u8>>> = self
                .query("sweep", None, redis::cmd("MGET").arg(&keys))
                .await?;
            let orphans: Vec<&Vec<u8>> = keys
                .iter()
                .zip(&values)
                .filter(|(_, v)| {
                    v.as_deref().is_some_and(|bytes| {
                        let ns = unwrap_tagged(bytes).ok().flatten().and_then(|(stamps, _)| {
                            stamps
                                .into_iter()
                                .find(|(t, _)| t.is_empty())
                                .map(|(_, tok)| tok)
                        });
                        ns.is_none() || ns != current
                    })
                })
                .map(|(k, _)| k)
                .collect();
            if !orphans.is_empty() {
                let n: u64 = self
                    .query("sweep", None, redis::cmd("UNLINK").arg(&orphans))
                    .await?;
                removed += n;
            }
        }
        Ok(removed)
    }

    /// Drops every entry tagged `tag` by replacing the tag's token: O(1), whatever
    /// the number of entries or the size of the keyspace.
    ///
    /// # Errors
    /// An invalid tag; Redis errors and timeouts.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.invalidate_tag_notify(tag, None).await
    }

    pub(crate) async fn invalidate_tag_notify(
        &self,
        tag: &str,
        notice: Option<&Notice>,
    ) -> Result<()> {
        key::validate_tag("invalidate_tag", tag)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.tag_key(tag)).arg(random_token().to_string());
        self.exec::<()>("invalidate_tag", None, cmd, notice).await
    }

    /// Decodes stored bytes, checking the tag tokens of a tagged entry (one more
    /// round trip); a stale or undecodable entry is a counted miss.
    pub(crate) async fn resolve<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<Arc<T>>> {
        Ok(self.resolve_tagged(op, key, bytes).await?.map(|(v, _)| v))
    }

    /// [`resolve`](Self::resolve), also returning the entry's tags.
    pub(crate) async fn resolve_tagged<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<(Arc<T>, Option<Arc<[String]>>)>> {
        let Ok(Some((stamps, _))) = unwrap_tagged(bytes) else {
            return Ok(self
                .decode_or_evict(op, key, bytes)
                .await?
                .map(|v| (v, None)));
        };
        let mut mget = redis::cmd("MGET");
        for (tag, _) in &stamps {
            mget.arg(self.tag_key(tag));
        }
        let current: Vec<Option<String>> = self.query(op, Some(key), &mget).await?;
        let fresh = stamps.iter().zip(&current).all(|((_, want), have)| {
            have.as_deref().and_then(|h| h.parse::<u64>().ok()) == Some(*want)
        });
        if fresh {
            let tags: Arc<[String]> = stamps.into_iter().map(|(t, _)| t).collect();
            Ok(self
                .decode_or_evict(op, key, bytes)
                .await?
                .map(|v| (v, Some(tags))))
        } else {
            self.inner.counters.add(Stat::Miss, 1);
            self.evict_stale(op, key, bytes).await;
            Ok(None)
        }
    }

    /// Decodes an entry; an undecodable one (corrupt, or written as another type) is
    /// a counted miss and is also removed if it still holds those bytes: fills never
    /// overwrite an entry, so it would otherwise keep its key uncached until it
    /// expires. With `return_decode_errors` the error is returned and the entry kept.
    async fn decode_or_evict<T: CacheValue>(
        &self,
        op: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<Arc<T>>> {
        let value = self.decode_entry(op, key, bytes)?;
        if value.is_none() {
            self.evict_stale(op, key, bytes).await;
        }
        Ok(value)
    }

    /// Removes an entry found stale (a tag or the namespace was invalidated) if it
    /// still holds those bytes, so that the next fill can store (a fill does not
    /// overwrite an entry it did not see go). One round trip, on stale reads only;
    /// a failure only leaves the entry to expire.
    async fn evict_stale(&self, op: &'static str, key: &str, bytes: &[u8]) {
        self.delete_if(op, key, &full_key(&self.inner.prefix, key), bytes)
            .await;
    }

    /// Runs [`DELETE_IF_SCRIPT`]; a failure is only logged.
    async fn delete_if(&self, op: &'static str, key: &str, redis_key: &str, value: &[u8]) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(DELETE_IF_SCRIPT).arg(1).arg(redis_key).arg(value);
        if let Err(e) = self.query::<i64>(op, Some(key), &eval).await {
            tracing::debug!(error = %e, "conditional delete failed; the key will expire");
        }
    }

    /// Takes a lease (and, with tags, their tokens) for a fill; see the module docs.
    pub(crate) async fn lease(
        &self,
        key: &str,
        lease_ttl: Duration,
        exclusive: bool,
        tags: &[String],
    ) -> FillTicket {
        let tags = &self.stamp_names(tags);
        let token = format!("{:016x}", random_token());
        let mut pipe = redis::pipe();
        let mut set = redis::cmd("SET");
        set.arg(self.lease_key(key))
            .arg(&token)
            .arg("PX")
            .arg(key::ttl_millis(lease_ttl));
        if exclusive {
            set.arg("NX");
        }
        pipe.add_command(set);
        // The slot-tagged cluster layout has no clear generation.
        let with_generation = !self.inner.slot_tags;
        if with_generation {
            // The generation is a random token, created when missing, so that a fill
            // never counts on it being absent: evicted, it reads as changed.
            let generation = key::generation_key(&self.inner.prefix);
            pipe.cmd("SET")
                .arg(&generation)
                .arg(random_token().to_string())
                .arg("NX")
                .ignore();
            pipe.cmd("GET").arg(generation);
        }
        self.push_tag_tokens(&mut pipe, tags);
        let reply: Result<Vec<redis::Value>> = self
            .call("get_or_compute", Some(key), Request::Pipe(&pipe))
            .await;
        let values = match reply {
            Ok(values) => values,
            Err(e) => {
                // Redis is failing: the value will be returned but not stored. A
                // request that timed out may still run once Redis answers: give
                // back whatever lease it takes (queued behind it, token-checked).
                if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Connection) {
                    let (cache, key) = (self.clone(), key.to_owned());
                    let lease = Lease {
                        token,
                        ..Lease::default()
                    };
                    self.inner
                        .tasks
                        .spawn(crate::tenant::current(), async move {
                            cache.release(&key, &lease).await;
                        });
                }
                return FillTicket::default();
            }
        };
        let acquired = !matches!(values.first(), Some(redis::Value::Nil) | None);
        let generation: Option<String> = if with_generation {
            values
                .get(1)
                .and_then(|v| redis::from_redis_value_ref::<Option<String>>(v).ok())
                .flatten()
        } else {
            None
        };
        let tag_tokens = match values.get(1 + usize::from(with_generation)) {
            Some(v) if !tags.is_empty() => {
                match redis::from_redis_value_ref::<Vec<Option<String>>>(v)
                    .ok()
                    .map(|t| Self::parse_tokens("get_or_compute", t))
                {
                    Some(Ok(t)) => t,
                    _ => return FillTicket::default(),
                }
            }
            _ => Vec::new(),
        };
        if exclusive && !acquired {
            return FillTicket {
                contended: true,
                ..FillTicket::default()
            };
        }
        FillTicket {
            local: None,
            lease: Some(Lease {
                token,
                // Gone already (evicted): no generation matches "-", no store.
                generation: generation.unwrap_or_else(|| "-".into()),
                tag_tokens,
                refresh_of: None,
            }),
            contended: false,
        }
    }

    /// [`Fill::lookup_or_begin`]: one round trip for the lookup and, on a miss, the
    /// lease. Only for fills without a lock and without stamps (tags, namespace
    /// versioning), whose lease needs nothing but a token and the generation;
    /// the others look up and take their lease in two round trips.
    pub(crate) async fn lookup_leasing<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
        options: &crate::memo::ComputeOptions,
    ) -> (Lookup<T>, Option<FillTicket>) {
        match self.lookup_leasing_found::<T>(key, options, None).await {
            None => (self.lookup(key, with_ttl).await, None),
            Some(Ok((Some(found), _))) => (
                Lookup::Hit(found.value, found.remaining.filter(|_| with_ttl)),
                None,
            ),
            Some(Ok((None, ticket))) => (Lookup::Miss, ticket),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read-through lookup failed; loading");
                (Lookup::Miss, None)
            }
        }
    }

    /// The entry as found (value, remaining TTL, tags) or, on a miss, the lease
    /// the same round trip took (`None` inside when another fill holds it). `None`
    /// when `options` need the two-round-trip path (a lock, tags, namespace
    /// versioning). Used by [`DistributedCache`]'s and `HybridCache`'s
    /// `lookup_or_begin`.
    pub(crate) async fn lookup_leasing_found<T: CacheValue>(
        &self,
        key: &str,
        options: &crate::memo::ComputeOptions,
        holder: Option<&super::Holder>,
    ) -> Option<Result<(Option<super::coherent::Found<T>>, Option<FillTicket>)>> {
        if options.lock || !self.stamp_names(&options.tags).is_empty() {
            return None;
        }
        let token = format!("{:016x}", random_token());
        let with_generation = !self.inner.slot_tags;
        let mut eval = redis::cmd("EVAL");
        eval.arg(LOOKUP_SCRIPT)
            .arg(if with_generation { 3 } else { 2 })
            .arg(full_key(&self.inner.prefix, key))
            .arg(self.lease_key(key));
        if with_generation {
            eval.arg(key::generation_key(&self.inner.prefix));
        }
        eval.arg(&token)
            .arg(key::ttl_millis(options.lock_ttl))
            .arg(random_token().to_string());
        // Dropped while the script is on its way (or failing with a timeout, after
        // which it may still run), the lease it may take is given back: queued
        // behind it, token-checked. A lease it did take is the caller's to guard.
        let in_flight = LeaseInFlight {
            cache: self,
            key,
            token: &token,
            armed: true,
        };
        type Reply = (Option<Vec<u8>>, i64, Option<i64>, Option<String>);
        let reply = match holder {
            Some(h) => {
                let mut pipe = redis::pipe();
                self.push_holder(&mut pipe, key, h);
                pipe.add_command(eval);
                self.call::<(Reply,)>("get_or_compute", Some(key), Request::Pipe(&pipe))
                    .await
                    .map(|(r,)| r)
            }
            None => {
                self.query::<Reply>("get_or_compute", Some(key), &eval)
                    .await
            }
        };
        let (bytes, pttl, leased, generation) = match reply {
            Ok(r) => {
                in_flight.disarm();
                r
            }
            Err(e) if super::is_wrong_type(&e) => {
                // The script stopped at its first `GET`: no lease was taken.
                in_flight.disarm();
                return Some(self.get_holding::<T>(key, holder).await.map(|f| (f, None)));
            }
            Err(e) => return Some(Err(e)),
        };
        let remaining = (pttl >= 0).then(|| Duration::from_millis(pttl as u64));
        let Some(bytes) = bytes.filter(|_| remaining != Some(Duration::ZERO)) else {
            self.inner.counters.add(Stat::Miss, 1);
            let ticket = (leased == Some(1)).then(|| FillTicket {
                local: None,
                lease: Some(Lease {
                    token,
                    // Gone already (evicted): no generation matches "-", no store.
                    generation: generation.unwrap_or_else(|| "-".into()),
                    tag_tokens: Vec::new(),
                    refresh_of: None,
                }),
                contended: false,
            });
            return Some(Ok((None, ticket)));
        };
        let size = bytes.len() as u64;
        Some(
            self.resolve_tagged::<T>("get", key, &bytes)
                .await
                .map(|found| {
                    let found = found.map(|(value, tags)| super::coherent::Found {
                        value,
                        bytes: size,
                        remaining,
                        tags,
                    });
                    (found, None)
                }),
        )
    }

    /// Stores a fill's value if its lease still holds; whether it stored.
    pub(crate) async fn store_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        tags: &[String],
        lease: &Lease,
        announce: Announce<'_>,
    ) -> bool {
        let (notice, holder) = match announce {
            Announce::Nothing => (None, None),
            Announce::Publish(n) => (Some(n), None),
            Announce::Hold(h) => (None, Some(h)),
        };
        let Ok(inner) = self
            .inner
            .encoding
            .encode_for("get_or_compute", Some(key), value)
        else {
            return false;
        };
        let names = self.stamp_names(tags);
        let bytes = if names.is_empty() {
            inner
        } else {
            wrap_tagged(&names, &lease.tag_tokens, &inner)
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg(FILL_SCRIPT);
        if self.inner.slot_tags {
            // Entry and lease share a slot; clears remove leases instead.
            eval.arg(2)
                .arg(full_key(&self.inner.prefix, key))
                .arg(self.lease_key(key));
        } else {
            eval.arg(3)
                .arg(full_key(&self.inner.prefix, key))
                .arg(self.lease_key(key))
                .arg(key::generation_key(&self.inner.prefix));
        }
        eval.arg(&lease.token)
            .arg(&lease.generation)
            .arg(bytes)
            .arg(key::ttl_millis(ttl))
            .arg(
                lease
                    .refresh_of
                    .map(|ms| ms.to_string())
                    .unwrap_or_default(),
            );
        match notice {
            Some(n) => eval.arg(&n.channel).arg(&n.payload),
            None => eval.arg("").arg(""),
        };
        let stored = match holder {
            Some(h) => {
                // Registered before it stores (a write after the store messages
                // it).
                let mut pipe = redis::pipe();
                let registry = self.holders_key(key);
                pipe.cmd("SADD").arg(&registry).arg(h.me).ignore();
                pipe.cmd("PEXPIRE").arg(&registry).arg(h.ttl_ms).ignore();
                pipe.add_command(eval);
                // Tracked from a read after the store: a read before it would
                // make the store report the key changed to this instance.
                super::coherent::push_tracked(&mut pipe, h);
                pipe.cmd("PTTL")
                    .arg(full_key(&self.inner.prefix, key))
                    .ignore();
                self.call::<(i64,)>("get_or_compute", Some(key), Request::Pipe(&pipe))
                    .await
                    .map(|(n,)| n)
            }
            None => self.query::<i64>("get_or_compute", Some(key), &eval).await,
        };
        match stored {
            Ok(1) => {
                self.inner.counters.add(Stat::Set, 1);
                true
            }
            Ok(_) => {
                // The lease was lost (an invalidation, a write, a clear since).
                self.inner.counters.meter.memo.lease_lost.increment(1);
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "read-through store failed; value returned uncached");
                false
            }
        }
    }

    /// Releases a lease after a failed load.
    pub(crate) async fn release(&self, key: &str, lease: &Lease) {
        self.delete_if(
            "get_or_compute",
            key,
            &self.lease_key(key),
            lease.token.as_bytes(),
        )
        .await;
    }
}

/// A lease that a lookup script may be taking: dropped while armed (the call was
/// cancelled, or the script's reply did not come), it gives the lease back from a
/// task of the cache.
struct LeaseInFlight<'a> {
    cache: &'a DistributedCache,
    key: &'a str,
    token: &'a str,
    armed: bool,
}

impl LeaseInFlight<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for LeaseInFlight<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (cache, key) = (self.cache.clone(), self.key.to_owned());
        let lease = Lease {
            token: self.token.to_owned(),
            ..Lease::default()
        };
        // Not started (the cache closed): the lease expires with its TTL.
        self.cache
            .inner
            .tasks
            .spawn(crate::tenant::current(), async move {
                cache.release(&key, &lease).await;
            });
    }
}

impl Fill for DistributedCache {
    fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    fn meter(&self) -> &crate::observe::MemoMeter {
        &self.inner.counters.meter.memo
    }

    fn cleanup_tasks(&self) -> Option<&crate::tasks::Tasks> {
        Some(&self.inner.tasks)
    }

    async fn lookup<T: CacheValue>(&self, key: &str, with_ttl: bool) -> Lookup<T> {
        if !with_ttl {
            return match self.get::<T>(key).await {
                Ok(Some(v)) => Lookup::Hit(v, None),
                Ok(None) => Lookup::Miss,
                Err(e) => {
                    tracing::debug!(error = %e, "read-through lookup failed; loading");
                    Lookup::Miss
                }
            };
        }
        match self.get_with_ttl::<T>(key).await {
            Ok(Some(found)) => Lookup::Hit(found.value, found.remaining),
            Ok(None) => Lookup::Miss,
            Err(e) => {
                tracing::debug!(error = %e, "read-through lookup failed; loading");
                Lookup::Miss
            }
        }
    }

    async fn begin_fill(
        &self,
        key: &str,
        lease_ttl: Duration,
        exclusive: bool,
        tags: &[String],
    ) -> FillTicket {
        self.lease(key, lease_ttl, exclusive, tags).await
    }

    async fn end_fill<T: CacheValue>(
        &self,
        key: &str,
        value: &Arc<T>,
        ttl: Duration,
        tags: &[String],
        ticket: FillTicket,
    ) {
        if let Some(lease) = &ticket.lease {
            self.store_fill(key, &**value, ttl, tags, lease, Announce::Nothing)
                .await;
        }
    }

    async fn abort_fill(&self, key: &str, ticket: FillTicket) {
        if let Some(lease) = &ticket.lease {
            self.release(key, lease).await;
        }
    }

    async fn lookup_or_begin<T: CacheValue>(
        &self,
        key: &str,
        with_ttl: bool,
        options: &crate::memo::ComputeOptions,
    ) -> (Lookup<T>, Option<FillTicket>) {
        self.lookup_leasing(key, with_ttl, options).await
    }
}
