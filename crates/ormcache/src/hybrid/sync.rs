//! The synchronous L1 hit of a [`HybridCache`]: for callers (the Python package)
//! that answer an L1 hit without entering an async runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use super::HybridCache;
use crate::cache::CacheValue;
use crate::key;

impl HybridCache {
    /// The value at `key` if L1 holds it and is trusted right now (the
    /// invalidation stream is up), without I/O and without a runtime; `None`
    /// otherwise, and then nothing is counted: call [`get`](Self::get), which
    /// counts the read once. A hit is counted as [`get`](Self::get) counts it.
    ///
    /// This answers exactly what `get` would answer from L1 at this moment.
    ///
    /// ```
    /// # async fn demo(cache: ormcache::HybridCache) -> ormcache::Result<()> {
    /// let name = match cache.get_l1::<String>("user:1:name") {
    ///     Some(hit) => Some(hit),
    ///     None => cache.get::<String>("user:1:name").await?,
    /// };
    /// # let _ = name; Ok(()) }
    /// ```
    pub fn get_l1<T: CacheValue>(&self, key: &str) -> Option<Arc<T>> {
        if key::validate("get", key).is_err() {
            return None;
        }
        let inner = &self.inner;
        if !inner.coherent.load(SeqCst) {
            return None;
        }
        inner.l1.peek_hit::<T>(key)
    }
}
