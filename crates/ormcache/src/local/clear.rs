//! Clears: of a scope (all unscoped keys, or a tenant's), of a pattern, of a tag.
//! Each voids what it clears at once through the epochs; a walk of the map frees
//! the memory (and counts, for the synchronous forms).

use super::epochs::in_scope;
use super::{Entry, QueryCache};
use crate::error::Result;
use crate::glob::{GlobPattern, escape_glob};
use crate::key;
use crate::tenant;

impl QueryCache {
    /// Removes every entry of the current scope (the unscoped entries, or the
    /// current tenant's); the number of live entries removed ([`clear`](Self::clear)
    /// is the [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_sync("a", 1u8, None).unwrap();
    /// cache.set_sync("b", 2u8, None).unwrap();
    /// assert_eq!(cache.clear_sync(), 2);
    /// ```
    pub fn clear_sync(&self) -> u64 {
        let scope = Scope::current();
        let found = self.collect(|k, _| scope.contains(k));
        self.evict_scope();
        self.remove_collected(found)
    }

    /// Removes the entries matching the Redis glob `pattern` (reserved keys
    /// excepted); the number of live entries removed
    /// ([`clear_pattern`](Self::clear_pattern) is the [`Cache`](crate::Cache) form).
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// for k in ["user:1", "user:2", "post:1"] {
    ///     cache.set_sync(k, 0u8, None).unwrap();
    /// }
    /// assert_eq!(cache.clear_pattern_sync("user:*"), 2);
    /// assert!(cache.exists_sync("post:1"));
    /// ```
    pub fn clear_pattern_sync(&self, pattern: &str) -> u64 {
        let glob = GlobPattern::new(pattern);
        if let Some(lit) = glob.literal() {
            // No wildcard: one lookup, not a walk.
            return match std::str::from_utf8(lit) {
                Ok(k) if !key::is_reserved(k) => u64::from(self.delete_sync(k)),
                _ => 0,
            };
        }
        self.evict_pattern(pattern)
    }

    /// Starts a clear of the entries of the current scope matching the Redis glob
    /// `pattern`: from now on they are misses and fills in flight will not store
    /// them; the walk that removes them runs when the returned clear is run or
    /// dropped.
    pub(crate) fn start_pattern_clear(&self, pattern: &str) -> PatternClear {
        let scope = Scope::current();
        let glob = GlobPattern::new(&format!("{}{pattern}", escape_glob(&scope.ns)));
        let seq = self.inner.epochs.announce_pattern(&scope.ns, &glob);
        PatternClear {
            cache: self.clone(),
            seq,
            scope,
            glob,
            walked: false,
        }
    }

    /// Removes the entries of the current scope matching the Redis glob `pattern`,
    /// each under its lock, after stopping fills in flight; how many were live.
    pub(crate) fn evict_pattern(&self, pattern: &str) -> u64 {
        self.start_pattern_clear(pattern).run()
    }

    /// Voids every entry of the current scope carrying `tag`, and the fills in
    /// flight that would store one: O(1), no walk. The entries go when overwritten,
    /// expired or evicted.
    pub(crate) fn evict_tag(&self, tag: &str) {
        self.inner.epochs.invalidate_tag(&tenant::physical(tag));
    }

    /// Voids every entry of the current scope (the unscoped keys, or the current
    /// tenant's): O(1), no walk.
    pub(crate) fn evict_scope(&self) {
        self.inner.epochs.invalidate_scope(&Scope::current().ns);
    }

    /// The stored keys and entries for which `pred` holds, and whether each was live.
    fn collect(&self, pred: impl Fn(&str, &Entry) -> bool) -> Vec<(String, Entry, bool)> {
        let now = self.now();
        self.inner
            .map
            .collect(pred)
            .into_iter()
            .map(|(k, e)| {
                let live = self.is_live(&k, &e, now);
                (k, e, live)
            })
            .collect()
    }

    /// Removes what [`collect`](Self::collect) found, each entry only if it is still
    /// the one found; how many of those were live.
    fn remove_collected(&self, found: Vec<(String, Entry, bool)>) -> u64 {
        found
            .into_iter()
            .filter(|(k, e, live)| {
                self.remove_if(k, |cur| cur.meta.id == e.meta.id).is_some() && *live
            })
            .count() as u64
    }

    /// Removes every entry tagged `tag`; how many were live
    /// ([`invalidate_tag`](Self::invalidate_tag), the [`Cache`](crate::Cache) form,
    /// does not count them). The entries are void at once; counting them walks the
    /// L1. In Redis
    /// ([`DistributedCache::invalidate_tag`](crate::DistributedCache::invalidate_tag))
    /// it is O(1).
    ///
    /// # Errors
    /// An empty tag or one over 1 KiB.
    ///
    /// ```
    /// let cache = ormcache::QueryCache::default();
    /// cache.set_with_tags_sync("a", 1u8, None, &["t"]).unwrap();
    /// assert_eq!(cache.invalidate_tag_sync("t").unwrap(), 1);
    /// assert_eq!(cache.get_sync::<u8>("a"), None);
    /// ```
    pub fn invalidate_tag_sync(&self, tag: &str) -> Result<u64> {
        key::validate_tag("invalidate_tag", tag)?;
        let stored = tenant::physical(tag);
        let found = self.collect(|_, e| e.meta.stamp.has_tag(&stored));
        // Entries (and fills in flight) that carry the tag are void from here on;
        // removing them frees their memory.
        self.evict_tag(tag);
        Ok(self.remove_collected(found))
    }
}

/// A pattern clear announced by [`QueryCache::start_pattern_clear`]: its walk
/// removes the matching entries, under their locks, when it is run or dropped
/// (until then, the entries it matches are misses).
pub(crate) struct PatternClear {
    cache: QueryCache,
    seq: u64,
    scope: Scope,
    glob: GlobPattern,
    walked: bool,
}

impl PatternClear {
    /// Walks now; how many live entries it removed.
    pub(crate) fn run(mut self) -> u64 {
        self.walk()
    }

    fn walk(&mut self) -> u64 {
        if std::mem::replace(&mut self.walked, true) {
            return 0;
        }
        let cache = &self.cache;
        let keys: Vec<String> = cache
            .inner
            .map
            .collect(|k, _| self.scope.contains(k) && self.glob.matches(k))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // Counted before the clear is marked walked: until then its entries are
        // misses, so `remove_physical` would count none. Count what it matched.
        let now = cache.now();
        let mut removed = 0;
        for k in &keys {
            if let Some(e) = cache.remove_if(k, |_| true)
                && e.expires_at > now
                && cache.inner.epochs.valid(&e.meta.stamp)
            {
                removed += 1;
            }
        }
        cache.inner.epochs.walked(self.seq);
        removed
    }
}

impl Drop for PatternClear {
    fn drop(&mut self) {
        // Never left half done: the entries it matches must go.
        self.walk();
    }
}

/// The keys a clear may touch: the unscoped ones (no reserved key), or those of
/// the current tenant.
struct Scope {
    ns: String,
}

impl Scope {
    fn current() -> Self {
        Self {
            ns: tenant::current_namespace().unwrap_or_default(),
        }
    }

    fn contains(&self, stored: &str) -> bool {
        in_scope(&self.ns, stored)
    }
}
