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
    slot_tagged(prefix, "lease", key)
}

/// The holder registry of `key` (`Protocol::Fleet`) in the slot-tagged layout: in
/// the entry's slot, like its lease.
pub(super) fn holders_key(prefix: &str, key: &str) -> String {
    slot_tagged(prefix, "h", key)
}

/// `{prefix}:__oc:{kind}:{TTTT}:{ns}{key}`, in the slot of `key`'s entry.
fn slot_tagged(prefix: &str, kind: &str, key: &str) -> String {
    let entry = crate::key::full_key(prefix, key);
    let physical = crate::tenant::physical(key);
    let tag = SLOT_TAGS
        .get(&Slot::for_key(&entry))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("");
    format!(
        "{prefix}:{}:{kind}:{{{tag}}}:{physical}",
        crate::key::RESERVED_NAMESPACE
    )
}

/// The `{ns}{key}` part of a slot-tagged lease key, given the bytes after
/// `{prefix}:__oc:lease:`.
pub(super) fn lease_target(rest: &[u8]) -> Option<&[u8]> {
    // "{TTTT}:"
    (rest.len() > 7 && rest[0] == b'{' && rest[5] == b'}' && rest[6] == b':').then(|| &rest[7..])
}

/// The slot ranges of a `CLUSTER SLOTS` reply: first and last slot, and the
/// primary that serves them.
fn slot_ranges(reply: &Value) -> Result<Vec<(u16, u16, Node)>> {
    let bad = || {
        Error::new(crate::ErrorKind::Server, "cluster")
            .with_detail("unexpected CLUSTER SLOTS reply")
    };
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let slot = |i: usize| {
            parts
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<u16>(v).ok())
                .filter(|&s| usize::from(s) < SLOTS)
                .ok_or_else(bad)
        };
        let (first, last) = (slot(0)?, slot(1)?);
        let Some(Value::Array(primary)) = parts.get(2) else {
            return Err(bad());
        };
        let host: String = primary
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let port: u16 = primary
            .get(1)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        out.push((first, last, Node::Primary(host, port)));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The primaries in a `CLUSTER SLOTS` reply.
pub(super) fn primaries(reply: &Value) -> Result<Vec<Node>> {
    Ok(primary_slots(reply)?.into_iter().map(|(n, _)| n).collect())
}

/// Whether the primaries in a `CLUSTER SLOTS` reply are exactly `nodes`, each
/// still serving the slot it was reached by: `false` after a failover, a new or
/// removed primary, or a slot migration that moved one of those slots.
pub(super) fn same_primaries(reply: &Value, nodes: &[(Node, u16)]) -> Result<bool> {
    let ranges = slot_ranges(reply)?;
    let now = primaries(reply)?;
    let serves = |node: &Node, slot: u16| {
        ranges
            .iter()
            .any(|(first, last, n)| n == node && (*first..=*last).contains(&slot))
    };
    Ok(now.len() == nodes.len()
        && now.iter().all(|n| nodes.iter().any(|(m, _)| m == n))
        && nodes.iter().all(|(n, slot)| serves(n, *slot)))
}

/// The primaries in a `CLUSTER SLOTS` reply, each with one slot it serves (by
/// which redis-rs routes to it, connecting if it has to).
pub(super) fn primary_slots(reply: &Value) -> Result<Vec<(Node, u16)>> {
    let mut nodes: Vec<(Node, u16)> = Vec::new();
    for (first, _, node) in slot_ranges(reply)? {
        if !nodes.iter().any(|(n, _)| *n == node) {
            nodes.push((node, first));
        }
    }
    Ok(nodes)
}

/// The slot of a key as Redis computes it: CRC16 (XMODEM) of its hash tag (the
/// first non-empty `{…}`), or of the whole key, modulo 16384. The same as redis-rs'
/// `Slot::for_key`, as a number.
pub(super) fn slot_of(key: &[u8]) -> u16 {
    const TABLE: [u16; 256] = {
        let mut table = [0u16; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u16) << 8;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            Some(&rest[..close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    let crc = hashed.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    });
    crc % SLOTS as u16
}

/// Which primary serves each slot, from one `CLUSTER SLOTS` reply: what a split
/// pipeline is grouped by, so that it costs one request per primary. A map gone
/// stale costs speed, never correctness: every group is still routed by redis-rs
/// (by the slot of its first command), and a node that no longer serves a slot
/// answers with a redirection (see the splitter in `conn.rs`).
#[derive(Debug)]
pub(super) struct SlotMap {
    /// `owners[slot]`: the index of the slot's primary, or `NO_OWNER`.
    owners: Box<[u16]>,
}

impl SlotMap {
    const NO_OWNER: u16 = u16::MAX;

    /// The map in a `CLUSTER SLOTS` reply.
    pub(super) fn from_reply(reply: &Value) -> Result<Self> {
        let mut owners = vec![Self::NO_OWNER; SLOTS].into_boxed_slice();
        let mut nodes: Vec<Node> = Vec::new();
        for (first, last, node) in slot_ranges(reply)? {
            let index = match nodes.iter().position(|n| *n == node) {
                Some(i) => i,
                None => {
                    nodes.push(node);
                    nodes.len() - 1
                }
            };
            let index = u16::try_from(index).unwrap_or(Self::NO_OWNER);
            for owner in owners
                .get_mut(usize::from(first)..=usize::from(last))
                .unwrap_or_default()
            {
                *owner = index;
            }
        }
        Ok(Self { owners })
    }

    /// The index of the primary that serves `slot`, if the reply named one.
    pub(super) fn owner(&self, slot: u16) -> Option<u16> {
        self.owners
            .get(usize::from(slot))
            .copied()
            .filter(|&o| o != Self::NO_OWNER)
    }
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
    fn slots_are_computed_as_redis_computes_them() {
        for key in [
            "", "a", "b", "user:1", "{x}a", "a{x}b", "{}k", "{", "}{", "a{b", "{a}{b}", "ключ",
        ] {
            assert_eq!(
                Slot::new(slot_of(key.as_bytes())),
                Some(Slot::for_key(key)),
                "{key:?}"
            );
        }
        // The example of the Redis Cluster specification.
        assert_eq!(slot_of(b"123456789"), 0x31c3);
    }

    fn slots_reply(ranges: &[(i64, i64, &str, i64)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(first, last, host, port)| {
                    Value::Array(vec![
                        Value::Int(first),
                        Value::Int(last),
                        Value::Array(vec![
                            Value::BulkString(host.as_bytes().to_vec()),
                            Value::Int(port),
                            Value::BulkString(b"id".to_vec()),
                        ]),
                    ])
                })
                .collect(),
        )
    }

    #[test]
    fn slot_maps_name_the_primary_of_each_slot() {
        let reply = slots_reply(&[
            (0, 5460, "10.0.0.1", 7000),
            (5461, 10922, "10.0.0.2", 7001),
            (10923, 16000, "10.0.0.3", 7002),
            (16001, 16383, "10.0.0.1", 7000),
        ]);
        let map = SlotMap::from_reply(&reply).unwrap();
        assert_eq!(
            [0, 5460, 5461, 10922, 10923, 16000, 16001, 16383].map(|s| map.owner(s)),
            [0, 0, 1, 1, 2, 2, 0, 0].map(Some)
        );
        assert_eq!(map.owner(16384), None);
        assert_eq!(
            primaries(&reply).unwrap(),
            vec![
                Node::Primary("10.0.0.1".into(), 7000),
                Node::Primary("10.0.0.2".into(), 7001),
                Node::Primary("10.0.0.3".into(), 7002),
            ]
        );
        // Slots no range names have no owner.
        let partial = SlotMap::from_reply(&slots_reply(&[(0, 99, "h", 1)])).unwrap();
        assert_eq!((partial.owner(99), partial.owner(100)), (Some(0), None));
        for bad in [
            Value::Nil,
            Value::Array(vec![]),
            slots_reply(&[(0, 16384, "h", 1)]),
            slots_reply(&[(-1, 5, "h", 1)]),
        ] {
            assert!(SlotMap::from_reply(&bad).is_err(), "{bad:?}");
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
