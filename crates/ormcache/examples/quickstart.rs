//! The seed's Quick Start: set, get, delete, clear and stats against `REDIS_URL`
//! (default `redis://127.0.0.1:6379`), or, with `REDIS_URL=private`, against a
//! `redis-server` of its own on a free port.
//!
//! ```sh
//! cargo run --example quickstart -p ormcache
//! REDIS_URL=private cargo run --example quickstart -p ormcache
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use ormcache::DistributedCache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[tokio::main]
async fn main() -> ormcache::Result<()> {
    let mut _private = None;
    let url = match std::env::var("REDIS_URL").as_deref() {
        Ok("private") => {
            let server = ormcache_testing::RedisServer::start();
            let url = server.url();
            _private = Some(server);
            url
        }
        Ok(url) => url.to_owned(),
        Err(_) => "redis://127.0.0.1:6379".into(),
    };
    println!("Redis at {url}");
    let cache = DistributedCache::builder()
        .redis_url(url)
        .key_prefix("ormcache-quickstart")
        .default_ttl(Duration::from_secs(300))
        .build()
        .await?;

    cache
        .set(
            "user:1",
            User {
                id: 1,
                name: "John".into(),
            },
            Some(Duration::from_secs(60)),
        )
        .await?;
    let user = cache.get::<User>("user:1").await?;
    println!("get user:1 -> {user:?}");

    let deleted = cache.delete("user:1").await?;
    println!("delete user:1 -> {deleted}");
    println!(
        "get user:1 after delete -> {:?}",
        cache.get::<User>("user:1").await?
    );

    cache
        .set(
            "user:2",
            User {
                id: 2,
                name: "Jane".into(),
            },
            None,
        )
        .await?;
    println!("clear -> {} keys removed", cache.clear().await?);

    let stats = cache.get_stats().await?;
    println!(
        "stats -> {}",
        serde_json::to_string_pretty(&stats).unwrap_or_default()
    );
    cache.close().await?;
    Ok(())
}
