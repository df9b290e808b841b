//! Walking the keyspace of a [`DistributedCache`]: clears and pattern clears
//! (`SCAN` + `UNLINK`) and key counting, on the one server or on every primary of
//! a cluster.

#[cfg(feature = "cluster")]
use super::cluster;
use super::conn::Node;
use super::{
    DistributedCache, KEYS_COUNT_PAGES, Request, SCAN_COUNT, TENANT_NAMESPACE, is_reserved_bytes,
};
use crate::error::Result;
use crate::glob::escape_glob;
use crate::key;

/// How many passes a cluster clear makes while slots keep moving under it.
#[cfg(feature = "cluster")]
const CLEAR_PASSES: usize = 20;

impl DistributedCache {
    /// Removes the keys matching `pattern` (and, on a cluster, their fills' leases).
    ///
    /// On a cluster the primaries are scanned one after the other, so a key that
    /// migrates from a primary not yet scanned to one already scanned would escape
    /// the clear: a pass counts only if no slot was migrating and no primary's
    /// slots or config epoch changed while it ran; else
    /// it is repeated, and after `CLEAR_PASSES` passes the clear fails (its outcome is
    /// then unknown, as for a timeout).
    pub(crate) async fn clear_matching(&self, op: &'static str, pattern: &str) -> Result<u64> {
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            let mut removed = 0u64;
            for _ in 0..CLEAR_PASSES {
                let before = self.slot_layout(op).await?;
                removed += self.clear_matching_once(op, pattern).await?;
                let after = self.slot_layout(op).await?;
                if before == after && !before.1 {
                    return Ok(removed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            return Err(
                crate::error::Error::new(crate::error::ErrorKind::Server, op)
                    .with_detail("slots kept migrating during the clear; keys may have escaped it"),
            );
        }
        self.clear_matching_once(op, pattern).await
    }

    /// Each primary's id, config epoch and slots, and whether any has a slot in
    /// migration (its own `CLUSTER NODES` line shows `[slot->-id]` or `[slot-<-id]`).
    #[cfg(feature = "cluster")]
    async fn slot_layout(&self, op: &'static str) -> Result<(Vec<String>, bool)> {
        let (mut epochs, mut moving) = (Vec::new(), false);
        for node in self.primaries(op).await? {
            let nodes: String = self
                .call(
                    op,
                    None,
                    Request::On(&node, redis::cmd("CLUSTER").arg("NODES")),
                )
                .await?;
            if let Some(me) = nodes.lines().find(|l| l.contains("myself")) {
                moving |= me.contains('[');
                // Id, config epoch and slots (an import does not always bump the
                // epoch: not when the importing node has the greatest already).
                let f: Vec<&str> = me.split(' ').collect();
                let id = f.first().copied().unwrap_or_default();
                let epoch = f.get(6).copied().unwrap_or_default();
                let slots = f.get(8..).unwrap_or_default().join(" ");
                epochs.push(format!("{id} {epoch} {slots}"));
            }
        }
        Ok((epochs, moving))
    }

    async fn clear_matching_once(&self, op: &'static str, pattern: &str) -> Result<u64> {
        // Inside a tenant scope: that tenant's namespace only; outside: the unscoped
        // keys only (never a tenant's, never ormcache's own).
        let ns = crate::tenant::current_namespace().unwrap_or_default();
        // Fills that started before this clear must not store what it removes.
        if self.inner.slot_tags {
            // Cluster: no key shares a slot with every entry, so instead of bumping
            // the clear generation the matching leases are removed, all of them
            // before the first entry (see the `Redis Cluster` docs).
            let head = format!("{}:{}:lease:", self.inner.prefix, key::RESERVED_NAMESPACE);
            let leases = format!(
                "{}{}:lease:{{????}}:{}{}",
                self.inner.scan_prefix,
                key::RESERVED_NAMESPACE,
                escape_glob(&ns),
                pattern
            );
            self.unlink_scanned(op, leases, |k| {
                lease_of(k, &head).is_some_and(|target| {
                    target
                        .strip_prefix(ns.as_bytes())
                        .is_some_and(|rest| !is_reserved_bytes(rest))
                })
            })
            .await?;
        } else {
            self.bump_generation(op).await?;
        }
        let full_pattern = format!("{}{}{}", self.inner.scan_prefix, escape_glob(&ns), pattern);
        let own = format!("{}:{}", self.inner.prefix, ns);
        self.unlink_scanned(op, full_pattern, |k| {
            k.strip_prefix(own.as_bytes())
                .is_some_and(|rest| !is_reserved_bytes(rest))
        })
        .await
    }

    /// Replaces the clear generation with a new random token: fills that started
    /// before fail to store (see `fill.rs`).
    pub(super) async fn bump_generation(&self, op: &'static str) -> Result<()> {
        let mut set = redis::cmd("SET");
        set.arg(key::generation_key(&self.inner.prefix))
            .arg(crate::memo::random_token().to_string());
        self.query::<()>(op, None, &set).await
    }

    /// `UNLINK`s the keys matching `pattern` (on every primary) that `doomed`
    /// accepts; how many were removed.
    async fn unlink_scanned(
        &self,
        op: &'static str,
        pattern: String,
        doomed: impl Fn(&[u8]) -> bool,
    ) -> Result<u64> {
        let mut scan = self.scan(op, pattern).await?;
        let mut removed = 0u64;
        while let Some(keys) = scan.next().await? {
            let keys: Vec<&Vec<u8>> = keys.iter().filter(|k| doomed(k)).collect();
            if !keys.is_empty() {
                let n: u64 = self
                    .query(op, None, redis::cmd("UNLINK").arg(&keys))
                    .await?;
                removed += n;
            }
        }
        Ok(removed)
    }

    /// The servers that hold keys: the one server, or every cluster primary.
    pub(super) async fn primaries(&self, op: &'static str) -> Result<Vec<Node>> {
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            let reply: redis::Value = self
                .query(op, None, redis::cmd("CLUSTER").arg("SLOTS"))
                .await?;
            return cluster::primaries(&reply);
        }
        let _ = op;
        Ok(vec![Node::Only])
    }

    /// Every cluster primary with one slot it serves.
    #[cfg(feature = "cluster")]
    pub(super) async fn primary_slots(&self, op: &'static str) -> Result<Vec<(Node, u16)>> {
        let reply: redis::Value = self
            .query(op, None, redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        cluster::primary_slots(&reply)
    }

    /// Whether this cache talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        #[cfg(feature = "cluster")]
        return self
            .inner
            .conns
            .first()
            .is_some_and(super::Conn::is_cluster);
        #[cfg(not(feature = "cluster"))]
        false
    }

    /// One `SCAN` page on `node`.
    async fn scan_page(
        &self,
        op: &'static str,
        node: &Node,
        cursor: u64,
        pattern: Option<&str>,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor);
        if let Some(p) = pattern {
            scan.arg("MATCH").arg(p);
        }
        scan.arg("COUNT").arg(SCAN_COUNT);
        self.call(op, None, Request::On(node, &scan)).await
    }

    /// A walk over the keys matching `pattern` on every primary.
    pub(super) async fn scan(&self, op: &'static str, pattern: String) -> Result<Scan<'_>> {
        Ok(Scan {
            nodes: self.primaries(op).await?,
            cache: self,
            op,
            pattern,
            node: 0,
            cursor: 0,
        })
    }

    /// Counts entries under the prefix: exactly when the keyspace is small, from a
    /// sample of `SCAN` pages otherwise (so that a million unrelated keys cost a few
    /// milliseconds, not a walk of the keyspace).
    pub(super) async fn count_keys(&self) -> Result<(u64, bool)> {
        let own = format!("{}:", self.inner.prefix);
        let (mut total, mut exact) = (0u64, true);
        for node in self.primaries("get_stats").await? {
            let (n, e) = self.count_keys_on(&node, &own).await?;
            total += n;
            exact &= e;
        }
        Ok((total, exact))
    }

    async fn count_keys_on(&self, node: &Node, own: &str) -> Result<(u64, bool)> {
        let (mut cursor, mut examined, mut matched) = (0u64, 0u64, 0u64);
        for _ in 0..KEYS_COUNT_PAGES {
            let (next, keys) = self.scan_page("get_stats", node, cursor, None).await?;
            examined += keys.len() as u64;
            matched += keys
                .iter()
                .filter(|k| {
                    k.strip_prefix(own.as_bytes()).is_some_and(|rest| {
                        !is_reserved_bytes(rest) || rest.starts_with(TENANT_NAMESPACE.as_bytes())
                    })
                })
                .count() as u64;
            if next == 0 {
                return Ok((matched, true));
            }
            cursor = next;
        }
        let total: u64 = self
            .call("get_stats", None, Request::On(node, &redis::cmd("DBSIZE")))
            .await?;
        if examined == 0 {
            return Ok((0, false));
        }
        Ok((
            (matched as f64 / examined as f64 * total as f64).round() as u64,
            false,
        ))
    }
}

/// Walks the keys matching a pattern on every primary, a page at a time.
pub(super) struct Scan<'a> {
    cache: &'a DistributedCache,
    op: &'static str,
    pattern: String,
    nodes: Vec<Node>,
    node: usize,
    cursor: u64,
}

impl Scan<'_> {
    /// The next page (possibly empty); `None` once every primary is walked.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(node) = self.nodes.get(self.node) else {
            return Ok(None);
        };
        let (next, keys) = self
            .cache
            .scan_page(self.op, node, self.cursor, Some(&self.pattern))
            .await?;
        if next == 0 {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(keys))
    }
}

/// The `{ns}{key}` a lease key stands for, given `{prefix}:__oc:lease:` (the
/// slot-tagged layout of a cluster).
fn lease_of<'k>(key: &'k [u8], head: &str) -> Option<&'k [u8]> {
    let rest = key.strip_prefix(head.as_bytes())?;
    #[cfg(feature = "cluster")]
    {
        cluster::lease_target(rest)
    }
    #[cfg(not(feature = "cluster"))]
    Some(rest)
}
