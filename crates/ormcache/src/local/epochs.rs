//! The L1's invalidation bookkeeping: which stored entries an invalidation voids,
//! and which fills in flight it must stop.
//!
//! Every entry carries a [`Stamp`]: the epochs seen when its value was read, and the
//! generation cells of its scope (the unscoped keys or one tenant) and of its tags.
//! A hit reads only atomics that belong to the entry's own scope and tags, never a
//! lock shared across keys:
//!
//! - a flush (`bump_global`) voids every entry (one global counter);
//! - a tag invalidation or a clear of a scope raises that tag's or scope's cell to a
//!   fresh value of one shared clock; an entry is void when one of its cells is newer
//!   than the clock it was stamped with. Entries of other tags and scopes are never
//!   touched, however many invalidations happen;
//! - a pattern clear removes the matching entries itself (a walk of the map, which
//!   a `HybridCache` runs off its subscriber task) and is logged for the fills that
//!   started before it, which check the log when they store. While a walk is under
//!   way (and only then) a hit also checks the entry against the clears still
//!   walking; otherwise it reads one global counter of walks in progress.
//!
//! A fill that started before an invalidation never stores a value it voids: the
//! store checks the per-key stripe (writes and deletes of the key), the global epoch,
//! the entry's cells and the pattern log under the key's lock (`QueryCache`'s
//! key lock stripes).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::glob::GlobPattern;

/// Epochs seen when a fill or a write started. The entry it stores is stamped with
/// it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalTicket {
    /// The key's stripe: writes and deletes of the keys in it.
    pub(crate) stripe: u64,
    /// Flushes.
    pub(crate) global: u64,
    /// The clock of tag invalidations and scope clears.
    pub(crate) clock: u64,
    /// Pattern clears announced.
    pub(crate) patterns: u64,
}

/// The generation of one tag or scope: the clock value of its last invalidation.
#[derive(Debug)]
pub(crate) struct Generation {
    name: String,
    last: AtomicU64,
}

impl Generation {
    fn new(name: &str, last: u64) -> Self {
        Self {
            name: name.to_owned(),
            last: AtomicU64::new(last),
        }
    }

    /// The stored tag or scope namespace.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether an entry stamped at `clock` survived every invalidation of this name.
    #[inline]
    fn allows(&self, clock: u64) -> bool {
        self.last.load(SeqCst) <= clock
    }
}

/// What an entry was stored under. Cloned on every hit: an unscoped, untagged
/// entry's stamp holds no `Arc`, so that clone costs no atomic operation.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    pub(crate) ticket: LocalTicket,
    /// The tenant's scope; `None` for an unscoped key.
    scope: Option<Arc<Generation>>,
    /// `None` for an untagged entry. A thin pointer (not `Arc<[_]>`): the stamp is
    /// copied on every hit.
    tags: Option<Arc<Vec<Arc<Generation>>>>,
}

impl Stamp {
    /// Whether the entry carries the stored tag `tag`.
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .iter()
            .flat_map(|t| t.iter())
            .any(|t| t.name() == tag)
    }
}

/// Name → generation cells of one kind (tags, or tenant scopes), in shards.
///
/// A cell lives as long as an entry holds it, plus until its shard is next pruned.
/// An invalidation of a name with no cell raises the shard's floor instead, and a
/// new cell starts at the floor: an entry stamped before that invalidation and
/// stored after it (a fill that learnt its tags from L2) is void, as it must be.
/// So the cells stay as many as the names held, whatever the number invalidated.
struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::FixedState,
}

#[derive(Default)]
struct Shard {
    cells: HashMap<String, Arc<Generation>>,
    /// The newest invalidation of a name that has no cell here.
    floor: u64,
    /// Prune when this many cells are held.
    prune_at: usize,
}

const REGISTRY_SHARDS: usize = 64;
/// The fewest cells a shard holds before it prunes.
const PRUNE_MIN: usize = 64;

impl Shard {
    /// Drops the cells no entry holds, folding their generations into the floor.
    fn prune(&mut self) {
        let mut floor = self.floor;
        self.cells.retain(|_, cell| {
            let held = Arc::strong_count(cell) > 1;
            if !held {
                floor = floor.max(cell.last.load(SeqCst));
            }
            held
        });
        self.floor = floor;
        self.prune_at = (self.cells.len() * 2).max(PRUNE_MIN);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks are counters, valid whatever panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    fn new(seed: u64) -> Self {
        Self {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
        }
    }

    fn shard(&self, name: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(self.hasher.hash_one(name) as usize) % REGISTRY_SHARDS])
    }

    /// The cell of `name`, created at the shard's floor if there is none.
    fn cell(&self, name: &str) -> Arc<Generation> {
        let mut shard = self.shard(name);
        if let Some(cell) = shard.cells.get(name) {
            return Arc::clone(cell);
        }
        if shard.cells.len() >= shard.prune_at {
            shard.prune();
        }
        let cell = Arc::new(Generation::new(name, shard.floor));
        shard.cells.insert(name.to_owned(), Arc::clone(&cell));
        cell
    }

    /// Voids what `name` holds: its generation (or the shard's floor) becomes a
    /// fresh clock value.
    fn invalidate(&self, name: &str, clock: &AtomicU64) {
        let mut shard = self.shard(name);
        let at = clock.fetch_add(1, SeqCst) + 1;
        match shard.cells.get(name) {
            Some(cell) => {
                cell.last.fetch_max(at, SeqCst);
            }
            None => shard.floor = shard.floor.max(at),
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).cells.len()).sum()
    }
}

/// A pattern clear, remembered for the fills that started before it.
struct Cleared {
    seq: u64,
    ns: String,
    glob: GlobPattern,
    /// Its walk has not finished: entries it matches are still in the map.
    walking: bool,
}

impl Cleared {
    fn matches(&self, key: &str) -> bool {
        in_scope(&self.ns, key) && self.glob.matches(key)
    }
}

/// Pattern clears remembered for fills in flight; a fill that started before the
/// oldest one is not stored.
const PATTERN_LOG: usize = 256;

const STRIPES: usize = 4096;

/// The invalidation epochs of one L1 (see the module docs).
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    global: AtomicU64,
    clock: AtomicU64,
    /// The scope of the unscoped keys.
    root: Generation,
    tenants: Registry,
    tags: Registry,
    patterns: AtomicU64,
    /// Pattern clears whose walk has not finished.
    walking: AtomicU64,
    pattern_log: Mutex<VecDeque<Cleared>>,
    hasher: foldhash::fast::FixedState,
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            global: AtomicU64::new(1),
            clock: AtomicU64::new(0),
            root: Generation::new("", 0),
            tenants: Registry::new(0x7e4a),
            tags: Registry::new(0x7a95),
            patterns: AtomicU64::new(0),
            walking: AtomicU64::new(0),
            pattern_log: Mutex::new(VecDeque::new()),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
        }
    }
}

impl fmt::Debug for Epochs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epochs")
            .field("global", &self.global())
            .field("clock", &self.clock.load(SeqCst))
            .field("patterns", &self.patterns.load(SeqCst))
            .field("tag_cells", &self.tags.len())
            .field("tenant_cells", &self.tenants.len())
            .finish()
    }
}

/// Whether a stored key belongs to the scope with namespace `ns` (`""`: the
/// unscoped keys, which excludes every reserved and tenant key).
pub(crate) fn in_scope(ns: &str, stored: &str) -> bool {
    stored
        .strip_prefix(ns)
        .is_some_and(|rest| !crate::key::is_reserved(rest))
}

impl Epochs {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        let key = crate::tenant::physical(key);
        &self.stripes[(self.hasher.hash_one(&*key) as usize) % STRIPES]
    }

    /// A write or delete of `key` (as the caller names it): fills of it in flight
    /// are not stored.
    pub(crate) fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, SeqCst);
    }

    /// A flush: every entry stored so far is void, every fill in flight too.
    pub(crate) fn bump_global(&self) -> u64 {
        self.global.fetch_add(1, SeqCst) + 1
    }

    #[inline]
    pub(crate) fn global(&self) -> u64 {
        self.global.load(SeqCst)
    }

    fn stripe_of(&self, key: &str) -> u64 {
        self.stripe(key).load(SeqCst)
    }

    /// The epochs a fill or write of `key` starts from.
    pub(crate) fn ticket(&self, key: &str) -> LocalTicket {
        LocalTicket {
            stripe: self.stripe_of(key),
            global: self.global(),
            clock: self.clock.load(SeqCst),
            patterns: self.patterns.load(SeqCst),
        }
    }

    /// Whether nothing bumped `key`'s stripe or the global epoch since `t`.
    pub(crate) fn unchanged(&self, key: &str, t: LocalTicket) -> bool {
        self.stripe_of(key) == t.stripe && self.global() == t.global
    }

    /// The stamp of an entry stored from `ticket` in the current scope (`ns`:
    /// `None` for unscoped keys) with stored `tags`.
    pub(crate) fn stamp(&self, ticket: LocalTicket, ns: Option<&str>, tags: &[String]) -> Stamp {
        Stamp {
            ticket,
            scope: ns.map(|ns| self.tenants.cell(ns)),
            tags: (!tags.is_empty())
                .then(|| Arc::new(tags.iter().map(|t| self.tags.cell(t)).collect())),
        }
    }

    /// Whether an entry stamped `s` is still valid: the hit path. Atomics only.
    #[inline]
    pub(crate) fn valid(&self, s: &Stamp) -> bool {
        let clock = s.ticket.clock;
        s.ticket.global == self.global()
            && s.scope.as_deref().unwrap_or(&self.root).allows(clock)
            && s.tags
                .iter()
                .flat_map(|t| t.iter())
                .all(|t| t.allows(clock))
    }

    /// Whether an entry stamped `s` may be stored at the stored key `key` (under the
    /// key's lock): valid, and not matched by a pattern clear announced after its
    /// ticket.
    pub(crate) fn admits(&self, key: &str, s: &Stamp) -> bool {
        self.valid(s) && !self.pattern_cleared_since(key, s.ticket.patterns)
    }

    /// Voids the entries carrying the stored `tag`.
    pub(crate) fn invalidate_tag(&self, tag: &str) {
        self.tags.invalidate(tag, &self.clock);
    }

    /// Voids the entries of a scope: the unscoped keys (`""`) or a tenant's
    /// namespace.
    pub(crate) fn invalidate_scope(&self, ns: &str) {
        if ns.is_empty() {
            let at = self.clock.fetch_add(1, SeqCst) + 1;
            self.root.last.fetch_max(at, SeqCst);
        } else {
            self.tenants.invalidate(ns, &self.clock);
        }
    }

    /// Announces a pattern clear of the stored keys of scope `ns` matching `glob`,
    /// before its walk: fills that started earlier will not store a key it matches,
    /// and until [`walked`](Self::walked) hits on entries it matches are misses. Its
    /// number.
    pub(crate) fn announce_pattern(&self, ns: &str, glob: &GlobPattern) -> u64 {
        let mut log = lock(&self.pattern_log);
        let seq = self.patterns.fetch_add(1, SeqCst) + 1;
        self.walking.fetch_add(1, SeqCst);
        log.push_back(Cleared {
            seq,
            ns: ns.to_owned(),
            glob: glob.clone(),
            walking: true,
        });
        while log.len() > PATTERN_LOG && log.front().is_some_and(|c| !c.walking) {
            log.pop_front();
        }
        seq
    }

    /// The walk of pattern clear `seq` removed every entry it matched.
    pub(crate) fn walked(&self, seq: u64) {
        let mut log = lock(&self.pattern_log);
        if let Some(c) = log.iter_mut().find(|c| c.seq == seq && c.walking) {
            c.walking = false;
            self.walking.fetch_sub(1, SeqCst);
        }
    }

    /// Whether an entry stamped `s` at the stored `key` is matched by a pattern
    /// clear whose walk has not reached it yet: the hit path, one atomic load when
    /// no walk is under way.
    #[inline]
    pub(crate) fn pending_clear(&self, key: &str, s: &Stamp) -> bool {
        if self.walking.load(SeqCst) == 0 {
            return false;
        }
        let since = s.ticket.patterns;
        lock(&self.pattern_log)
            .iter()
            .any(|c| c.walking && c.seq > since && c.matches(key))
    }

    /// Whether a pattern clear announced after `since` matches the stored `key` (or
    /// the log no longer reaches back that far).
    pub(crate) fn pattern_cleared_since(&self, key: &str, since: u64) -> bool {
        if self.patterns.load(SeqCst) == since {
            return false;
        }
        let log = lock(&self.pattern_log);
        if log.front().is_none_or(|c| c.seq > since + 1) {
            return true;
        }
        log.iter().any(|c| c.seq > since && c.matches(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_tag_voids_only_its_entries_however_many_others_are_invalidated() {
        let e = Epochs::default();
        let kept = e.stamp(e.ticket("a"), None, &tags(&["t"]));
        let voided = e.stamp(e.ticket("b"), None, &tags(&["u", "t2"]));
        for i in 0..10_000 {
            e.invalidate_tag(&format!("other{i}"));
        }
        assert!(e.valid(&kept) && e.valid(&voided));
        e.invalidate_tag("t2");
        assert!(e.valid(&kept));
        assert!(!e.valid(&voided));
        // The cells held are those of live stamps, not of every name invalidated.
        assert_eq!(e.tags.len(), 3);
    }

    #[test]
    fn a_fill_that_learns_its_tags_late_is_void_after_an_invalidation() {
        let e = Epochs::default();
        let t = e.ticket("k");
        // No entry holds "t" yet: the invalidation has no cell to raise.
        e.invalidate_tag("t");
        let late = e.stamp(t, None, &tags(&["t"]));
        assert!(!e.valid(&late));
        assert!(!e.admits("k", &late));
        let after = e.stamp(e.ticket("k"), None, &tags(&["t"]));
        assert!(e.valid(&after));
    }

    #[test]
    fn a_pruned_cell_keeps_its_invalidation() {
        let e = Epochs::default();
        let t = e.ticket("k");
        drop(e.stamp(t, None, &tags(&["t"])));
        e.invalidate_tag("t");
        for i in 0..(REGISTRY_SHARDS * PRUNE_MIN * 4) {
            drop(e.stamp(e.ticket("x"), None, &tags(&[&format!("n{i}")])));
        }
        assert!(e.tags.len() < REGISTRY_SHARDS * PRUNE_MIN * 4);
        assert!(!e.valid(&e.stamp(t, None, &tags(&["t"]))));
    }

    #[test]
    fn scopes_are_independent() {
        let e = Epochs::default();
        let root = e.stamp(e.ticket("a"), None, &[]);
        let acme = e.stamp(e.ticket("b"), Some("ns-acme:"), &[]);
        let globex = e.stamp(e.ticket("c"), Some("ns-globex:"), &[]);
        e.invalidate_scope("ns-acme:");
        assert!(e.valid(&root) && !e.valid(&acme) && e.valid(&globex));
        e.invalidate_scope("");
        assert!(!e.valid(&root) && e.valid(&globex));
        e.bump_global();
        assert!(!e.valid(&globex));
    }

    #[test]
    fn patterns_stop_fills_that_started_before_them() {
        let e = Epochs::default();
        let s = e.stamp(e.ticket("user:1"), None, &[]);
        let seq = e.announce_pattern("", &GlobPattern::new("user:*"));
        assert!(!e.admits("user:1", &s));
        assert!(e.admits("post:1", &s));
        // While its walk runs, a hit on a matching entry is a miss...
        assert!(e.pending_clear("user:1", &s) && !e.pending_clear("post:1", &s));
        e.walked(seq);
        // ...and afterwards the walk has removed it: nothing to check on read.
        assert!(!e.pending_clear("user:1", &s));
        assert!(e.valid(&s));
        let fresh = e.stamp(e.ticket("user:1"), None, &[]);
        assert!(e.admits("user:1", &fresh));
        for _ in 0..PATTERN_LOG {
            let seq = e.announce_pattern("", &GlobPattern::new("other:*"));
            e.walked(seq);
        }
        // Too old for the log: refused, whatever it is.
        assert!(!e.admits("post:1", &s));
    }

    #[test]
    fn writes_and_flushes_change_tickets() {
        let e = Epochs::default();
        let t = e.ticket("k");
        assert!(e.unchanged("k", t));
        e.bump("k");
        assert!(!e.unchanged("k", t));
        let t = e.ticket("k");
        e.bump_global();
        assert!(!e.unchanged("k", t));
    }
}
