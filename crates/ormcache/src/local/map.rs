//! The L1's own map: shards of a hash table under a read-write lock, bounded by
//! weight, with CLOCK eviction on insert.
//!
//! A hit takes its shard's read lock, finds the key (hashed once: the same hash
//! picks the shard and probes the table), runs the caller's check on the entry
//! under the lock (deadline, epochs, type) and marks the entry referenced with a
//! relaxed store (only if it was not already: a hot entry's line stays shared).
//! Nothing is cloned but what the check returns.
//!
//! An insert takes the write lock; when the shard is over its weight it evicts:
//! the hand walks the shard's ring of entries, clearing the mark of referenced
//! ones and evicting the first unreferenced one (an expired entry goes whatever
//! its mark). So an entry read since the hand last passed survives one more
//! round: a scan of new keys evicts the keys read, not the hot ones.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use quanta::Instant;

use super::Entry;

type Hasher = foldhash::fast::RandomState;

/// One stored entry, with its key and place in the shard's ring.
struct Node {
    key: Box<str>,
    hash: u64,
    entry: Entry,
    /// Read since the hand last passed.
    referenced: AtomicBool,
    /// Its index in [`Shard::ring`].
    pos: usize,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Node>,
    /// The hashes of the nodes, in the order the hand visits them; a node's `pos`
    /// is its index here.
    ring: Vec<u64>,
    hand: usize,
    weight: u64,
}

/// A shard alone on its cache lines (two: the adjacent-line prefetcher).
#[repr(align(128))]
struct Padded(RwLock<Shard>);

/// Why an entry left the map without being asked to.
pub(super) enum Evicted {
    /// For room, while live.
    Size(Entry),
    /// For room, or refused, after its deadline.
    Expired(Entry),
}

/// The map (see the module docs).
pub(super) struct Map {
    shards: Box<[Padded]>,
    hasher: Hasher,
    /// The most weight a shard holds: the capacity over the shards, rounded down.
    shard_capacity: u64,
    by_bytes: bool,
    len: AtomicU64,
    weight: AtomicU64,
}

#[inline]
fn read(s: &Padded) -> RwLockReadGuard<'_, Shard> {
    // Nothing under the lock panics halfway through a change: the data is valid
    // whatever panicked.
    s.0.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(s: &Padded) -> RwLockWriteGuard<'_, Shard> {
    s.0.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Map {
    /// A map of `shards` shards (a power of two) sharing `capacity` (entries, or
    /// bytes when `by_bytes`).
    pub(super) fn new(shards: usize, capacity: u64, by_bytes: bool) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards)
                .map(|_| Padded(RwLock::new(Shard::default())))
                .collect(),
            hasher: Hasher::default(),
            shard_capacity: capacity / shards as u64,
            by_bytes,
            len: AtomicU64::new(0),
            weight: AtomicU64::new(0),
        }
    }

    #[inline]
    fn locate(&self, key: &str) -> (u64, &Padded) {
        let hash = self.hasher.hash_one(key);
        // The table probes with the low bits and tags with the top 7: the shard
        // takes bits from the middle.
        let i = (hash >> 32) as usize & (self.shards.len() - 1);
        (hash, &self.shards[i])
    }

    fn weigh(&self, e: &Entry) -> u64 {
        if self.by_bytes {
            u64::from(e.meta.weight)
        } else {
            1
        }
    }

    /// What `check` makes of the entry at `key`, under the shard's read lock; the
    /// entry is marked referenced. `None` if there is no entry.
    #[inline]
    pub(super) fn get_with<R>(&self, key: &str, check: impl FnOnce(&Entry) -> R) -> Option<R> {
        let (hash, shard) = self.locate(key);
        let shard = read(shard);
        let node = shard.table.find(hash, |n| &*n.key == key)?;
        if !node.referenced.load(Relaxed) {
            node.referenced.store(true, Relaxed);
        }
        Some(check(&node.entry))
    }

    /// Stores `entry` at `key` (replacing what was there), then evicts until the
    /// shard is within its weight; what it evicted (with `entry` itself if it
    /// alone outweighs a shard: then the key holds nothing). The entries are
    /// dropped by the caller, out of the lock.
    pub(super) fn insert(&self, key: &str, entry: Entry, now: Instant) -> Vec<Evicted> {
        let weight = self.weigh(&entry);
        let (hash, shard) = self.locate(key);
        let mut s = write(shard);
        let mut out = Vec::new();
        if weight > self.shard_capacity {
            if let Some(old) = self.take(&mut s, hash, key) {
                drop(old);
            }
            out.push(if entry.expires_at > now {
                Evicted::Size(entry)
            } else {
                Evicted::Expired(entry)
            });
            return out;
        }
        let replaced = match s.table.find_mut(hash, |n| &*n.key == key) {
            Some(node) => {
                let old = std::mem::replace(&mut node.entry, entry);
                Some(old)
            }
            None => {
                let pos = s.ring.len();
                s.ring.push(hash);
                s.table.insert_unique(
                    hash,
                    Node {
                        key: key.into(),
                        hash,
                        entry,
                        referenced: AtomicBool::new(false),
                        pos,
                    },
                    |n| n.hash,
                );
                self.len.fetch_add(1, Relaxed);
                None
            }
        };
        let old_weight = replaced.as_ref().map_or(0, |e| self.weigh(e));
        s.weight = s.weight + weight - old_weight;
        self.weight.fetch_add(weight, Relaxed);
        self.weight.fetch_sub(old_weight, Relaxed);
        drop(replaced);
        while s.weight > self.shard_capacity {
            match self.evict_one(&mut s, hash, now) {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    /// Evicts the entry the hand stops at, never the one of hash `keep` (the one
    /// just stored) unless it is alone.
    fn evict_one(&self, s: &mut Shard, keep: u64, now: Instant) -> Option<Evicted> {
        let len = s.ring.len();
        if len == 0 {
            return None;
        }
        // Two rounds clear every mark: the third finds an entry to evict.
        for _ in 0..(2 * len + 1) {
            if s.hand >= s.ring.len() {
                s.hand = 0;
            }
            let pos = s.hand;
            let hash = s.ring[pos];
            let node = s.table.find(hash, |n| n.pos == pos)?;
            let expired = node.entry.expires_at <= now;
            let spare = hash == keep && len > 1 && !expired;
            if !expired && (spare || node.referenced.swap(false, Relaxed)) {
                s.hand += 1;
                continue;
            }
            let node = self.remove_at(s, hash, pos)?;
            // The last entry (often the newest) moved into `pos`: the hand passes
            // it, so that it gets a round like any other before it can go.
            s.hand = pos + 1;
            return Some(if expired {
                Evicted::Expired(node.entry)
            } else {
                Evicted::Size(node.entry)
            });
        }
        None
    }

    /// Unlinks the node at ring index `pos` (hash `hash`).
    fn remove_at(&self, s: &mut Shard, hash: u64, pos: usize) -> Option<Node> {
        let (node, _) = s.table.find_entry(hash, |n| n.pos == pos).ok()?.remove();
        s.ring.swap_remove(pos);
        if let Some(&moved) = s.ring.get(pos) {
            let last = s.ring.len();
            if let Some(n) = s.table.find_mut(moved, |n| n.pos == last) {
                n.pos = pos;
            }
        }
        let w = self.weigh(&node.entry);
        s.weight -= w;
        self.weight.fetch_sub(w, Relaxed);
        self.len.fetch_sub(1, Relaxed);
        Some(node)
    }

    /// Removes the node at `key`, if any.
    fn take(&self, s: &mut Shard, hash: u64, key: &str) -> Option<Entry> {
        let pos = s.table.find(hash, |n| &*n.key == key)?.pos;
        self.remove_at(s, hash, pos).map(|n| n.entry)
    }

    /// Removes the entry at `key` if `pred` holds for it; the entry removed.
    pub(super) fn remove_if(&self, key: &str, pred: impl FnOnce(&Entry) -> bool) -> Option<Entry> {
        let (hash, shard) = self.locate(key);
        let mut s = write(shard);
        let node = s.table.find(hash, |n| &*n.key == key)?;
        if !pred(&node.entry) {
            return None;
        }
        self.take(&mut s, hash, key)
    }

    /// Changes the entry at `key` in place if `f` says so (it returns whether it
    /// did); whether it did.
    pub(super) fn update(&self, key: &str, f: impl FnOnce(&mut Entry) -> bool) -> bool {
        let (hash, shard) = self.locate(key);
        let mut s = write(shard);
        s.table
            .find_mut(hash, |n| &*n.key == key)
            .is_some_and(|n| f(&mut n.entry))
    }

    /// Drops every entry.
    pub(super) fn clear(&self) {
        for shard in &self.shards[..] {
            let old = {
                let mut s = write(shard);
                let w = s.weight;
                let n = s.table.len() as u64;
                self.weight.fetch_sub(w, Relaxed);
                self.len.fetch_sub(n, Relaxed);
                std::mem::take(&mut *s)
            };
            drop(old);
        }
    }

    /// The stored keys and a copy of their entries for which `pred` holds, shard
    /// by shard (a snapshot of each shard, not of the map).
    pub(super) fn collect(
        &self,
        mut pred: impl FnMut(&str, &Entry) -> bool,
    ) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        for shard in &self.shards[..] {
            let s = read(shard);
            out.extend(
                s.table
                    .iter()
                    .filter(|n| pred(&n.key, &n.entry))
                    .map(|n| (String::from(&*n.key), n.entry.clone())),
            );
        }
        out
    }

    /// The entries held.
    pub(super) fn len(&self) -> u64 {
        self.len.load(Relaxed)
    }

    /// Their weight.
    pub(super) fn weight(&self) -> u64 {
        self.weight.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::epochs::Epochs;
    use super::super::{Entry, Meta};
    use super::*;

    fn entry(id: u64, weight: u32, ttl: Duration) -> Entry {
        let e = Epochs::default();
        let now = Instant::now();
        Entry {
            value: Arc::new(id),
            expires_at: now + ttl,
            meta: Meta {
                id,
                inserted_at: now,
                stamp: e.stamp(e.ticket("k"), None, &[]),
                weight,
                origin_expires_at: now + ttl,
                has_origin: false,
                null: false,
            },
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn id_at(m: &Map, key: &str) -> Option<u64> {
        m.get_with(key, |e| e.meta.id)
    }

    /// The sums the map keeps agree with its shards, and every shard is in bound.
    fn check_bounds(m: &Map) {
        let (mut len, mut weight) = (0, 0);
        for shard in &m.shards[..] {
            let s = read(shard);
            let w: u64 = s.table.iter().map(|n| m.weigh(&n.entry)).sum();
            assert_eq!(w, s.weight);
            assert!(
                s.weight <= m.shard_capacity,
                "{} > {}",
                s.weight,
                m.shard_capacity
            );
            assert_eq!(s.ring.len(), s.table.len());
            for (pos, &h) in s.ring.iter().enumerate() {
                assert!(s.table.find(h, |n| n.pos == pos).is_some());
            }
            len += s.table.len() as u64;
            weight += s.weight;
        }
        assert_eq!((m.len(), m.weight()), (len, weight));
    }

    #[test]
    fn entry_and_byte_bounds_hold_under_concurrent_inserts() {
        for by_bytes in [false, true] {
            let m = Map::new(4, 400, by_bytes);
            let evicted = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (m, evicted) = (&m, &evicted);
                    s.spawn(move || {
                        for i in 0..5_000u64 {
                            let id = t * 1_000_000 + i;
                            let w = 1 + (id % 17) as u32;
                            let out =
                                m.insert(&format!("k{id}"), entry(id, w, HOUR), Instant::now());
                            evicted.fetch_add(out.len() as u64, Relaxed);
                            if i % 3 == 0 {
                                m.remove_if(&format!("k{}", id / 2), |_| true);
                            }
                        }
                    });
                }
            });
            check_bounds(&m);
            assert!(m.len() > 0 && m.weight() <= 400);
            assert!(evicted.load(Relaxed) > 0);
        }
    }

    #[test]
    fn eviction_picks_unreferenced_entries() {
        let m = Map::new(1, 10, false);
        for i in 0..10 {
            assert!(
                m.insert(&format!("k{i}"), entry(i, 1, HOUR), Instant::now())
                    .is_empty()
            );
        }
        // Read the first half: the next five inserts evict the other half.
        for i in 0..5 {
            assert_eq!(id_at(&m, &format!("k{i}")), Some(i));
        }
        for i in 10..15 {
            let out = m.insert(&format!("k{i}"), entry(i, 1, HOUR), Instant::now());
            let [Evicted::Size(e)] = &out[..] else {
                panic!("one entry evicted for room");
            };
            assert!((5..10).contains(&e.meta.id), "evicted {}", e.meta.id);
        }
        for i in 0..5 {
            assert_eq!(id_at(&m, &format!("k{i}")), Some(i));
        }
        check_bounds(&m);
    }

    #[test]
    fn expired_entries_go_first_and_are_told_apart() {
        let m = Map::new(1, 3, false);
        m.insert("old", entry(1, 1, Duration::from_millis(1)), Instant::now());
        m.insert("a", entry(2, 1, HOUR), Instant::now());
        m.insert("b", entry(3, 1, HOUR), Instant::now());
        std::thread::sleep(Duration::from_millis(3));
        // Referenced or not, the expired entry is the one to go.
        assert_eq!(id_at(&m, "old"), Some(1));
        let out = m.insert("c", entry(4, 1, HOUR), Instant::now());
        assert!(matches!(&out[..], [Evicted::Expired(e)] if e.meta.id == 1));
    }

    #[test]
    fn an_entry_heavier_than_a_shard_is_refused_and_voids_the_key() {
        let m = Map::new(2, 100, true);
        m.insert("k", entry(1, 10, HOUR), Instant::now());
        let out = m.insert("k", entry(2, 51, HOUR), Instant::now());
        assert!(matches!(&out[..], [Evicted::Size(e)] if e.meta.id == 2));
        assert_eq!(id_at(&m, "k"), None);
        check_bounds(&m);
        assert_eq!((m.len(), m.weight()), (0, 0));
    }

    #[test]
    fn remove_if_update_clear_and_collect() {
        let m = Map::new(2, 100, false);
        for i in 0..10 {
            m.insert(&format!("k{i}"), entry(i, 1, HOUR), Instant::now());
        }
        assert!(m.remove_if("k1", |e| e.meta.id == 99).is_none());
        assert_eq!(
            m.remove_if("k1", |e| e.meta.id == 1).map(|e| e.meta.id),
            Some(1)
        );
        assert!(m.update("k2", |e| {
            e.meta.id = 20;
            true
        }));
        assert!(!m.update("k1", |_| true));
        assert_eq!(id_at(&m, "k2"), Some(20));
        let mut keys: Vec<String> = m
            .collect(|_, e| e.meta.id >= 5)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, ["k2", "k5", "k6", "k7", "k8", "k9"]);
        check_bounds(&m);
        m.clear();
        assert_eq!((m.len(), m.weight()), (0, 0));
        assert_eq!(id_at(&m, "k2"), None);
    }

    /// A model check: random inserts, removes and reads against a `HashMap`; what
    /// the map holds is always what was last stored, and the bounds hold.
    #[test]
    fn agrees_with_a_model() {
        let m = Map::new(4, 64, true);
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for id in 0..20_000u64 {
            let r = next();
            let key = format!("k{}", r % 200);
            match r % 5 {
                0 => {
                    m.remove_if(&key, |_| true);
                    model.remove(&key);
                }
                1 | 2 => {
                    let held = id_at(&m, &key);
                    assert!(held.is_none() || held == model.get(&key).copied(), "{key}");
                }
                _ => {
                    let out = m.insert(
                        &key,
                        entry(id, 1 + (r >> 32) as u32 % 20, HOUR),
                        Instant::now(),
                    );
                    model.insert(key.clone(), id);
                    for e in out {
                        let (Evicted::Size(e) | Evicted::Expired(e)) = e;
                        model.retain(|_, v| *v != e.meta.id);
                    }
                }
            }
        }
        check_bounds(&m);
        // Every entry held is in the model, and the model holds nothing evicted.
        assert_eq!(m.len(), model.len() as u64);
        for (k, v) in &model {
            assert_eq!(id_at(&m, k), Some(*v));
        }
    }
}
