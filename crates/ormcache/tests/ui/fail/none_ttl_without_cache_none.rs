use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[cached(cache = CACHE, none_ttl = 5)]
async fn user(id: u64) -> Option<String> {
    Some(format!("user #{id}"))
}

fn main() {}
