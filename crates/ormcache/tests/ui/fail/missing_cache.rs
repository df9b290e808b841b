use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[cached(ttl = 60)]
async fn user(id: u64) -> String {
    format!("user #{id}")
}

fn main() {}
