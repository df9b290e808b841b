//! Key layout (DESIGN.md contract 1).
//!
//! | what | stored at |
//! | --- | --- |
//! | an entry | `{prefix}:{key}` |
//! | cluster-wide stats (the Python package's hash) | `{prefix}:stats` |
//! | internal keys (tags, locks, versions, tenants) | `{prefix}:__oc:…` |
//!
//! User keys may contain any bytes but must not be empty, must not be `stats`, and
//! must not start with the reserved marker `__oc`. Unscoped `clear`/`clear_pattern`
//! skip the reserved namespace and `stats`, whatever the pattern.

use std::time::Duration;

use crate::error::{Error, Result};

/// The first segment of every internal key under the prefix. Not exported: callers
/// learn it from the `InvalidInput` error of a key that starts with it.
pub(crate) const RESERVED_NAMESPACE: &str = "__oc";

/// The field layout of the stats hash is the Python package's.
pub(crate) const STATS_KEY: &str = "stats";

/// The longest TTL accepted: about 34 years, far below what Redis accepts.
pub const MAX_TTL: Duration = Duration::from_millis(1 << 40);

/// Whether `key` (without the prefix) is reserved for ormcache's own use.
pub(crate) fn is_reserved(key: &str) -> bool {
    key == STATS_KEY || key.starts_with(RESERVED_NAMESPACE)
}

/// Whether a name looked up in an L1 is in the reserved namespace, where the L1
/// stores tenants' entries (`__oc:t:{tenant}:{key}`): such a name must find
/// nothing. (An empty key and `stats` are never stored, so they need no check.)
/// A length check and one 4-byte compare.
#[inline(always)]
pub(crate) fn is_reserved_name(key: &str) -> bool {
    key.starts_with(RESERVED_NAMESPACE)
}

/// Checks a user key for an operation.
pub(crate) fn validate(op: &'static str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(op, "key must not be empty").with_key(key));
    }
    if is_reserved(key) {
        return Err(Error::invalid(
            op,
            format!("keys `{STATS_KEY}` and `{RESERVED_NAMESPACE}…` are reserved for ormcache"),
        )
        .with_key(key));
    }
    Ok(())
}

/// Checks a TTL: zero is an input error, not "forever" (contract 3).
pub(crate) fn validate_ttl(op: &'static str, key: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::invalid(op, "TTL must be greater than zero").with_key(key));
    }
    if ttl > MAX_TTL {
        return Err(
            Error::invalid(op, format!("TTL {ttl:?} exceeds the maximum {MAX_TTL:?}"))
                .with_key(key),
        );
    }
    Ok(())
}

/// Checks a tag name: 1 byte to 1 KiB, not starting with the reserved marker
/// `__oc` (a tenant's tags live under `__oc:t:{tenant}:`: an unscoped tag named
/// like that would be the tenant's).
pub(crate) fn validate_tag(op: &'static str, tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > 1024 {
        return Err(Error::invalid(
            op,
            format!("tag {tag:?} must be 1 to 1024 bytes"),
        ));
    }
    if tag.starts_with(RESERVED_NAMESPACE) {
        return Err(Error::invalid(
            op,
            format!(
                "tag {tag:?}: tags starting with `{RESERVED_NAMESPACE}` are reserved for ormcache"
            ),
        ));
    }
    Ok(())
}

/// The most tags one entry may carry: the tag envelope counts its stamps in one
/// byte, and namespace versioning adds a stamp of its own.
pub(crate) const MAX_TAGS: usize = 254;

/// Checks the tags of one entry: each as [`validate_tag`], and at most
/// [`MAX_TAGS`] of them.
pub(crate) fn validate_tags<S: AsRef<str>>(op: &'static str, tags: &[S]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(
            op,
            format!("{} tags on one entry; at most {MAX_TAGS}", tags.len()),
        ));
    }
    tags.iter().try_for_each(|t| validate_tag(op, t.as_ref()))
}

/// Where ormcache keeps its own per-key and per-tag state under the prefix.
/// (Per tenant inside a tenant scope.)
pub(crate) fn lease_key(prefix: &str, key: &str) -> String {
    reserved(prefix, "lease:", &crate::tenant::physical(key))
}

/// The registry of the instances holding `key` in L1 (`Protocol::Fleet`).
pub(crate) fn holders_key(prefix: &str, key: &str) -> String {
    reserved(prefix, "h:", &crate::tenant::physical(key))
}

/// `{prefix}:{RESERVED_NAMESPACE}:{kind}{name}`, sized once (these are built on
/// every write: `format!` costs several times as much).
fn reserved(prefix: &str, kind: &str, name: &str) -> String {
    let mut s = String::with_capacity(
        prefix.len() + RESERVED_NAMESPACE.len() + kind.len() + name.len() + 2,
    );
    for part in [prefix, ":", RESERVED_NAMESPACE, ":", kind, name] {
        s.push_str(part);
    }
    s
}

pub(crate) fn tag_key(prefix: &str, tag: &str) -> String {
    let tag = crate::tenant::physical(tag);
    format!("{prefix}:{RESERVED_NAMESPACE}:tag:{tag}")
}

pub(crate) fn generation_key(prefix: &str) -> String {
    let scope = crate::tenant::physical("");
    format!("{prefix}:{RESERVED_NAMESPACE}:gen:{scope}")
}

/// Checks a key prefix.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::invalid("create", "key_prefix must not be empty"));
    }
    Ok(())
}

/// Milliseconds for Redis `PX`/`PEXPIRE`, rounded up so that a sub-millisecond TTL
/// does not become zero.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_millis();
    let ms = if Duration::from_millis(ms as u64) < ttl {
        ms + 1
    } else {
        ms
    };
    ms.min(MAX_TTL.as_millis()) as u64
}

/// Builds `{prefix}:{key}`.
///
/// Inside a [`tenant::scope`](crate::tenant::scope) the key lives in the tenant's
/// namespace: `{prefix}:__oc:t:{tenant}:{key}`.
pub(crate) fn full_key(prefix: &str, key: &str) -> String {
    let ns = crate::tenant::current_namespace();
    let ns = ns.as_deref().unwrap_or("");
    let mut s = String::with_capacity(prefix.len() + 1 + ns.len() + key.len());
    s.push_str(prefix);
    s.push(':');
    s.push_str(ns);
    s.push_str(key);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_empty_keys_are_refused() {
        for key in ["", "stats", "__oc", "__oc:tag:x", "__ocx", "__oc:t:acme:k"] {
            assert!(
                validate("set", key).unwrap_err().is_invalid_input(),
                "{key:?}"
            );
            assert_eq!(is_reserved_name(key), key.starts_with("__oc"), "{key:?}");
        }
        for key in [
            "stats:1", "user:1", " ", "_oc", "a\nb", "ключ", "*?[]\\", "Stats", "_", "users",
        ] {
            validate("set", key).unwrap();
            assert!(!is_reserved_name(key), "{key:?}");
        }
    }

    #[test]
    fn ttl_rules() {
        assert!(validate_ttl("set", "k", Duration::ZERO).is_err());
        assert!(validate_ttl("set", "k", MAX_TTL + Duration::from_millis(1)).is_err());
        validate_ttl("set", "k", Duration::from_nanos(1)).unwrap();
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
    }

    #[test]
    fn tags_cannot_forge_a_tenant_s() {
        for tag in ["__oc:t:acme:users", "__oc", "__ocx"] {
            assert!(
                validate_tag("t", tag).unwrap_err().is_invalid_input(),
                "{tag}"
            );
        }
        for tag in ["users", "_oc", "x__oc", "stats"] {
            validate_tag("t", tag).unwrap();
        }
        validate_tags("t", &["a"; MAX_TAGS]).unwrap();
        assert!(
            validate_tags("t", &["a"; MAX_TAGS + 1])
                .unwrap_err()
                .is_invalid_input()
        );
    }

    #[test]
    fn full_key_layout() {
        assert_eq!(full_key("app", "user:1"), "app:user:1");
    }

    #[test]
    fn reserved_key_layout() {
        assert_eq!(lease_key("app", "user:1"), "app:__oc:lease:user:1");
        assert_eq!(holders_key("app", "user:1"), "app:__oc:h:user:1");
    }
}
