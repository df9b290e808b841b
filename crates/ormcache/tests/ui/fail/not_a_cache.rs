use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

/// Where the cache connects to; not a cache.
struct Settings {
    redis_url: String,
}

static SETTINGS: Settings = Settings {
    redis_url: String::new(),
};

#[cached(cache = SETTINGS)]
async fn user(id: u64) -> String {
    format!("user #{id}")
}

fn main() {
    let _ = &SETTINGS.redis_url;
    let _ = &*CACHE;
}
