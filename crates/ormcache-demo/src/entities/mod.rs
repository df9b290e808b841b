//! The SeaORM entities: `users` and `products`. Each `Model` is both the HTTP body and
//! the cached value (plain JSON), so a cache hit returns byte-for-byte what the
//! database read would.

pub(crate) mod product;
pub(crate) mod user;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ormcache::signals::Signals;

/// The signal registry of the service: the entities' hooks send through it, the
/// entity caches' receivers listen on it.
pub(crate) static SIGNALS: LazyLock<Signals> = LazyLock::new(Signals::new);

/// Milliseconds since the Unix epoch, for `created_at`.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
