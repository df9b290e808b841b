use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[derive(Debug)]
struct DbError;

#[cached(cache = CACHE)]
async fn user(id: u64) -> Result<String, DbError> {
    Ok(format!("user #{id}"))
}

fn main() {}
