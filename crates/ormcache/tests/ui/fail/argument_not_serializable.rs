use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[derive(Debug)]
struct Db;

#[cached(cache = CACHE)]
async fn user(db: &Db, id: u64) -> String {
    format!("{db:?} #{id}")
}

fn main() {}
