use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[cached(cache = CACHE, key_prefix = users)]
async fn user(id: u64) -> String {
    format!("user #{id}")
}

fn main() {}
