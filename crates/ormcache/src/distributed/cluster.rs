//! Redis Cluster specifics of [`DistributedCache`](super::DistributedCache): the
//! slot-tagged layout of lease keys, the primaries, the servers' identity.
//!
//! A fill's store is one Lua script over the entry and its lease, so both must hash
//! to the same slot. On a cluster the lease of `{prefix}:{key}` therefore lives at
//! `{prefix}:__oc:lease:{TTTT}:{key}`, where `TTTT` is a four-character hash tag
//! chosen (from a table computed once, one tag per slot) so that it hashes to the
//! entry's slot, whatever the key contains. Entries, tag tokens and the stats hash
//! keep the single-server layout.
//!
//! A prefix that itself contains a hash tag (`{myapp}`) pins every key of the cache
//! to one slot; the single-server layout is then used unchanged. A prefix with a
//! `{` that does not open a complete, non-empty hash tag is refused, because it
//! would make the slot of internal keys depend on the user's key.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Value;
use redis::cluster_routing::Slot;

use super::coherent::info_field;
use super::conn::Node;
use crate::error::{Error, Result};

const SLOTS: usize = 16384;

/// One tag per slot: `SLOT_TAGS[slot]` hashes to `slot`.
static SLOT_TAGS: LazyLock<HashMap<Slot, [u8; 4]>> = LazyLock::new(|| {
    const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut tags = HashMap::with_capacity(SLOTS);
    let mut n = 0usize;
    while tags.len() < SLOTS && n < 62usize.pow(4) {
        let tag = [
            ALPHABET[n / (62 * 62 * 62) % 62],
            ALPHABET[n / (62 * 62) % 62],
            ALPHABET[n / 62 % 62],
            ALPHABET[n % 62],
        ];
        tags.entry(Slot::for_key(tag)).or_insert(tag);
        n += 1;
    }
    tags
});

/// Whether internal keys need slot tags with this prefix (`Ok(false)`: the prefix
/// pins every key to one slot).
pub(super) fn needs_slot_tags(prefix: &str) -> Result<bool> {
    let Some(open) = prefix.find('{') else {
        return Ok(true);
    };
    match prefix[open + 1..].find('}') {
        Some(len) if len > 0 => Ok(false),
        _ => Err(Error::invalid(
            "create",
            format!(
                "on a Redis Cluster, a key_prefix with '{{' must contain a complete, non-empty \
                 hash tag (like \"{{myapp}}\"); {prefix:?} does not"
            ),
        )),
    }
}

/// The lease key of `key` in the slot-tagged layout (see the module docs).
pub(super) fn lease_key(prefix: &str, key: &str) -> String {
    let entry = crate::key::full_key(prefix, key);
    let physical = crate::tenant::physical(key);
    let tag = SLOT_TAGS
        .get(&Slot::for_key(&entry))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("");
    format!(
        "{prefix}:{}:lease:{{{tag}}}:{physical}",
        crate::key::RESERVED_NAMESPACE
    )
}

/// The holder registry of `key` (`Protocol::Fleet`) in the slot-tagged layout: in
/// the entry's slot, like its lease.
pub(super) fn holders_key(prefix: &str, key: &str) -> String {
    let entry = crate::key::full_key(prefix, key);
    let physical = crate::tenant::physical(key);
    let tag = SLOT_TAGS
        .get(&Slot::for_key(&entry))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("");
    format!(
        "{prefix}:{}:h:{{{tag}}}:{physical}",
        crate::key::RESERVED_NAMESPACE
    )
}

/// The `{ns}{key}` part of a slot-tagged lease key, given the bytes after
/// `{prefix}:__oc:lease:`.
pub(super) fn lease_target(rest: &[u8]) -> Option<&[u8]> {
    // "{TTTT}:"
    (rest.len() > 7 && rest[0] == b'{' && rest[5] == b'}' && rest[6] == b':').then(|| &rest[7..])
}

/// The primaries in a `CLUSTER SLOTS` reply.
pub(super) fn primaries(reply: &Value) -> Result<Vec<Node>> {
    Ok(primary_slots(reply)?.into_iter().map(|(n, _)| n).collect())
}

/// The primaries in a `CLUSTER SLOTS` reply, each with one slot it serves (by
/// which redis-rs routes to it, connecting if it has to).
pub(super) fn primary_slots(reply: &Value) -> Result<Vec<(Node, u16)>> {
    let bad = || {
        Error::new(crate::ErrorKind::Server, "cluster")
            .with_detail("unexpected CLUSTER SLOTS reply")
    };
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut nodes = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let Some(Value::Array(primary)) = parts.get(2) else {
            return Err(bad());
        };
        let slot: u16 = parts
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let host: String = primary
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let port: u16 = primary
            .get(1)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let node = Node::Primary(host, port);
        if !nodes.iter().any(|(n, _)| *n == node) {
            nodes.push((node, slot));
        }
    }
    if nodes.is_empty() {
        return Err(bad());
    }
    Ok(nodes)
}

/// Clients for the `nodes` that are not among `seeds`, with the first seed's
/// settings (credentials, TLS, TCP).
pub(super) fn clients_beyond(seeds: &[redis::Client], nodes: &[Node]) -> Vec<redis::Client> {
    use redis::ConnectionAddr;
    let Some(seed) = seeds.first() else {
        return Vec::new();
    };
    let known = |host: &str, port: u16| {
        seeds.iter().any(|s| match s.get_connection_info().addr() {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => h == host && *p == port,
            _ => false,
        })
    };
    nodes
        .iter()
        .filter_map(|node| {
            let Node::Primary(host, port) = node else {
                return None;
            };
            if known(host, *port) {
                return None;
            }
            let info = seed.get_connection_info().clone();
            let addr = match info.addr().clone() {
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure,
                    tls_params,
                },
                _ => ConnectionAddr::Tcp(host.clone(), *port),
            };
            redis::Client::open(info.set_addr(addr)).ok()
        })
        .collect()
}

/// The identity of a cluster from `INFO` on every primary (a map of address to
/// reply): each primary's run id and replication id, sorted, so that a restart or
/// failover of any primary changes it.
pub(super) fn identity(reply: Value) -> Result<String> {
    let bad = || {
        Error::new(crate::ErrorKind::Server, "server_identity").with_detail("unexpected INFO reply")
    };
    let Value::Map(per_node) = reply else {
        return Err(bad());
    };
    let mut ids = Vec::with_capacity(per_node.len());
    for (addr, info) in per_node {
        let addr: String = redis::from_redis_value(addr).map_err(|_| bad())?;
        let info: String = redis::from_redis_value(info).map_err(|_| bad())?;
        ids.push(format!(
            "{addr}={}/{}",
            info_field(&info, "run_id"),
            info_field(&info, "master_replid")
        ));
    }
    ids.sort();
    Ok(ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        assert_eq!(SLOT_TAGS.len(), SLOTS);
        for (slot, tag) in SLOT_TAGS.iter() {
            assert_eq!(Slot::for_key(tag), *slot);
        }
    }

    #[test]
    fn leases_share_their_entry_slot() {
        for key in ["user:1", "a{b}c", "{x}", "}{", "ключ", "{}k"] {
            let lease = lease_key("app", key);
            assert_eq!(
                Slot::for_key(&lease),
                Slot::for_key(crate::key::full_key("app", key)),
                "{lease}"
            );
            let rest = lease.strip_prefix("app:__oc:lease:").unwrap();
            assert_eq!(lease_target(rest.as_bytes()), Some(key.as_bytes()));
        }
    }

    #[test]
    fn prefixes_with_braces() {
        assert!(needs_slot_tags("app").unwrap());
        assert!(needs_slot_tags("app}").unwrap());
        assert!(!needs_slot_tags("{app}").unwrap());
        assert!(!needs_slot_tags("x{a}y{").unwrap());
        assert!(needs_slot_tags("a{").unwrap_err().is_invalid_input());
        assert!(needs_slot_tags("a{}b").unwrap_err().is_invalid_input());
    }
}
