use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[cached(cache = CACHE)]
async fn user((id, name): (u64, String)) -> String {
    format!("user #{id} {name}")
}

fn main() {}
