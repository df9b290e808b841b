//! A lookup that counts only hits, for callers that go on to a full lookup on a miss.

use std::sync::Arc;

use super::{Probe, QueryCache};
use crate::cache::CacheValue;
use crate::tenant;

impl QueryCache {
    /// The live value at `key` of type `T`, counted as a hit (as
    /// [`get_checked`](Self::get_checked) counts one, a negative hit included); a
    /// miss, an expired or voided entry and a foreign type count nothing (the
    /// caller's full lookup that follows counts them once). A name in the reserved
    /// namespace finds nothing.
    pub(crate) fn peek_hit<T: CacheValue>(&self, key: &str) -> Option<Arc<T>> {
        if crate::key::is_reserved_name(key) {
            return None;
        }
        let key = tenant::physical(key);
        let Probe::Live((Some(v), null)) = self.probe(&key, None, |e, _| {
            (Arc::clone(&e.value).downcast::<T>().ok(), e.meta.null)
        }) else {
            return None;
        };
        let c = &self.inner.counters;
        c.hit();
        if crate::observe::ON && null {
            c.negative_hit();
        }
        Some(v)
    }
}
