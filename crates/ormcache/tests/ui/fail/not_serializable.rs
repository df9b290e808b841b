use std::sync::LazyLock;
use std::time::Duration;

use ormcache::{QueryCache, cached};

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(100, Duration::from_secs(60)).unwrap());

#[derive(Clone)]
struct Connection;

#[cached(cache = CACHE)]
async fn connect(id: u64) -> Connection {
    let _ = id;
    Connection
}

#[cached(cache = CACHE)]
async fn try_connect(id: u64) -> Result<Connection, String> {
    let _ = id;
    Ok(Connection)
}

#[cached(cache = CACHE)]
async fn maybe_connect(id: u64) -> Option<Connection> {
    let _ = id;
    Some(Connection)
}

fn main() {}
