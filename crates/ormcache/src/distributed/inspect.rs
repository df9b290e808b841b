//! What [`crate::inspect`] needs from inside the L2: raw reads of an entry, of tag
//! tokens and of the stats hash, and counting what a pattern clear would remove.

use super::{DistributedCache, Request, full_key, is_reserved_bytes};
use crate::error::Result;
use crate::glob::escape_glob;
use crate::key;

impl DistributedCache {
    /// `GET` and `PTTL` of `key` (in the current tenant scope), one round trip:
    /// the stored bytes as they are, and the raw `PTTL` answer.
    pub(crate) async fn raw_entry(
        &self,
        op: &'static str,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, i64)> {
        let full = full_key(&self.inner.prefix, key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        self.call(op, Some(key), Request::Pipe(&pipe)).await
    }

    /// The current token of each tag (in the current tenant scope; `""` is the
    /// namespace), `None` where there is none.
    pub(crate) async fn current_tag_tokens(
        &self,
        op: &'static str,
        tags: &[String],
    ) -> Result<Vec<Option<u64>>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for t in tags {
            mget.arg(key::tag_key(&self.inner.prefix, t));
        }
        let tokens: Vec<Option<String>> = self.query(op, None, &mget).await?;
        Ok(tokens
            .into_iter()
            .map(|t| t.and_then(|t| t.parse().ok()))
            .collect())
    }

    /// Every field of the stats hash `{prefix}:stats`, as stored.
    pub(crate) async fn stats_fields(&self, op: &'static str) -> Result<Vec<(String, String)>> {
        let mut fields: Vec<(String, String)> = self
            .query(op, None, redis::cmd("HGETALL").arg(&self.inner.stats_key))
            .await?;
        fields.sort();
        Ok(fields)
    }

    /// How many keys `clear_pattern(pattern)` would remove now (in the current
    /// tenant scope): the same `SCAN` and the same filter, without the `UNLINK`.
    pub(crate) async fn count_matching(&self, op: &'static str, pattern: &str) -> Result<u64> {
        let ns = crate::tenant::current_namespace().unwrap_or_default();
        let full_pattern = format!("{}{}{}", self.inner.scan_prefix, escape_glob(&ns), pattern);
        let own = format!("{}:{}", self.inner.prefix, ns);
        let mut scan = self.scan(op, full_pattern).await?;
        let mut n = 0u64;
        while let Some(keys) = scan.next().await? {
            n += keys
                .iter()
                .filter(|k| {
                    k.strip_prefix(own.as_bytes())
                        .is_some_and(|rest| !is_reserved_bytes(rest))
                })
                .count() as u64;
        }
        Ok(n)
    }
}
