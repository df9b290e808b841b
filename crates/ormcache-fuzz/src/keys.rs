//! Key and tenant encoding (DESIGN.md contract 1): no two distinct names, of any
//! kind (entry, lease, tag token, clear generation, stats), in any scope, share a
//! Redis key, and nothing escapes its prefix or tenant namespace.

use std::collections::HashMap;

use ormcache::__fuzz::{entry_names, generation_name, stats_name, tag_name};

use crate::{Check, Rng, Target, ensure};

/// Key layout.
pub const TARGET: Target = Target {
    name: "keys",
    about: "key and tenant encoding: distinct (tenant, key or tag, kind) never share a Redis key; names stay under the prefix and the tenant's namespace",
    case,
};

/// Pieces of keys, tags and tenant ids that try to forge one another's layout.
const PIECES: &[&str] = &[
    "__oc",
    ":",
    "t",
    "t:",
    "lease",
    "tag",
    "gen",
    "stats",
    "acme",
    "a",
    "b",
    "-",
    "_",
    "*",
    "{",
    "}",
    "é",
    "\n",
    " ",
    "__o",
    "c",
    "__oc:t:",
    "__oc:t:acme:",
    "lease:",
    "tag:",
    "gen:",
];

fn name(rng: &mut Rng, max: usize) -> String {
    (0..rng.len(max)).map(|_| *rng.pick(PIECES)).collect()
}

fn tenant(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => None,
        1 => Some(["acme", "a", "t", "oc", "__oc", "a-b", "a_b"][rng.below(7)].to_owned()),
        _ => Some(name(rng, 3)),
    }
}

/// What a Redis key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Entry(Option<String>, String),
    Lease(Option<String>, String),
    Tag(Option<String>, String),
    Generation(Option<String>),
    Stats,
}

fn claim(seen: &mut HashMap<String, Origin>, key: String, origin: Origin) -> Check {
    match seen.get(&key) {
        Some(prev) if *prev != origin => Err(format!(
            "{prev:?} and {origin:?} share the Redis key {key:?}"
        )),
        Some(_) => Ok(()),
        None => {
            seen.insert(key, origin);
            Ok(())
        }
    }
}

fn case(rng: &mut Rng) -> Check {
    let prefix = ["app", "a", "x:y", "__oc", "p{1}"][rng.below(5)];
    let head = format!("{prefix}:");
    let reserved = format!("{prefix}:__oc");
    let mut seen = HashMap::new();
    claim(&mut seen, stats_name(prefix), Origin::Stats)?;
    for _ in 0..64 {
        let t = tenant(rng);
        let valid_tenant = t
            .as_deref()
            .is_none_or(|t| ormcache::tenant::TenantId::new(t).is_ok());
        let ns = t.as_ref().map(|t| format!("{prefix}:__oc:t:{t}:"));
        match rng.below(3) {
            0 | 1 => {
                let key = name(rng, 5);
                let Ok([entry, lease]) = entry_names(prefix, t.as_deref(), &key) else {
                    continue;
                };
                ensure(valid_tenant, || format!("tenant {t:?} accepted"))?;
                ensure(
                    entry.starts_with(&head) && lease.starts_with(&reserved),
                    || format!("{entry:?} / {lease:?} outside the prefix {prefix:?}"),
                )?;
                match &ns {
                    Some(ns) => ensure(entry.starts_with(ns.as_str()), || {
                        format!("tenant {t:?} key {key:?} stored outside its namespace: {entry:?}")
                    })?,
                    None => ensure(
                        !entry.starts_with(&reserved) && entry != stats_name(prefix),
                        || format!("unscoped key {key:?} reaches the reserved names: {entry:?}"),
                    )?,
                }
                claim(&mut seen, entry, Origin::Entry(t.clone(), key.clone()))?;
                claim(&mut seen, lease, Origin::Lease(t, key))?;
            }
            _ => {
                let tag = name(rng, 5);
                if let Ok(g) = generation_name(prefix, t.as_deref()) {
                    ensure(g.starts_with(&reserved), || {
                        format!("generation {g:?} outside")
                    })?;
                    claim(&mut seen, g, Origin::Generation(t.clone()))?;
                }
                let Ok(k) = tag_name(prefix, t.as_deref(), &tag) else {
                    continue;
                };
                ensure(valid_tenant, || format!("tenant {t:?} accepted"))?;
                ensure(k.starts_with(&reserved), || {
                    format!("tag key {k:?} outside")
                })?;
                claim(&mut seen, k, Origin::Tag(t, tag))?;
            }
        }
    }
    Ok(())
}
