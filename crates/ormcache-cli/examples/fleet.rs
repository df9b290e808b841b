//! Two HybridCache instances sharing prefix `app` on `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), with a few entries of each kind and a write every
//! two seconds: something for `ormcache` to look at. Runs for `FLEET_SECS`
//! seconds (default 120).
//!
//! ```sh
//! cargo run -p ormcache-cli --example fleet &
//! cargo run -p ormcache-cli -- --url redis://127.0.0.1:6379 --prefix app peers
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use ormcache::tenant::{self, TenantId};
use ormcache::{Codec, Compression, DistributedCache, HybridCache, QueryCache};
use serde_json::json;

async fn instance(url: &str) -> HybridCache {
    let l2 = DistributedCache::builder()
        .redis_url(url)
        .key_prefix("app")
        .serializer(Codec::MessagePack)
        .compression(Compression::Lz4 { min_bytes: 64 })
        .build()
        .await
        .unwrap();
    let cache =
        HybridCache::new(QueryCache::new(1000, Duration::from_secs(300)).unwrap(), l2).unwrap();
    assert!(cache.wait_coherent(Duration::from_secs(5)).await);
    cache
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secs: u64 = std::env::var("FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let (a, b) = (instance(&url).await, instance(&url).await);
    let hour = Some(Duration::from_secs(3600));
    a.set_with_tags(
        "user:1",
        json!({"id": 1, "name": "Ada", "email": "ada@example.com"}),
        hour,
        &["users", "team:7"],
    )
    .await
    .unwrap();
    a.set("user:2", json!({"id": 2, "name": "Grace"}), hour)
        .await
        .unwrap();
    a.set("report:2026", vec!["row".to_string(); 200], hour)
        .await
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    tenant::scope(acme, a.set("cart", json!({"items": 3}), hour))
        .await
        .unwrap();
    b.get::<serde_json::Value>("user:1").await.unwrap();
    println!("fleet up: two instances on prefix `app`");
    for n in 0..secs / 2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        a.set(&format!("visits:{}", n % 3), n, hour).await.unwrap();
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}
