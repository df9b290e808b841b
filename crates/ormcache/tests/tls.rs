//! TLS against real `redis-server --tls-port` processes with certificates made at
//! test time: a custom CA, mutual TLS, a cluster, HybridCache coherence over TLS
//! pub/sub, and the failures a wrong CA or a refused client certificate give.
#![cfg(all(feature = "tls", feature = "cluster"))]

mod support;

use std::time::Duration;

use ormcache::{DistributedCache, ErrorKind, HybridCache, QueryCache, TlsConfig};
use ormcache_testing::{TestCerts, TlsRedisCluster, TlsRedisServer};
use redis::AsyncCommands;

fn trusted(certs: &TestCerts) -> TlsConfig {
    TlsConfig::new().ca_file(certs.ca())
}

async fn cache(url: &str, tls: TlsConfig, prefix: &str) -> ormcache::Result<DistributedCache> {
    DistributedCache::builder()
        .redis_url(url)
        .tls(tls)
        .key_prefix(prefix)
        .socket_connect_timeout(Duration::from_secs(2))
        .build()
        .await
}

#[tokio::test]
async fn get_and_set_over_tls_with_a_custom_ca() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, false, &[]);
    let c = cache(&server.url(), trusted(&certs), "tls").await.unwrap();
    c.set("user:1", "Ada".to_string(), None).await.unwrap();
    assert_eq!(
        c.get::<String>("user:1").await.unwrap().as_deref(),
        Some(&"Ada".to_string())
    );
    // It went to that server: the plain-text port of the same process has it.
    let mut raw = server.server().connection().await;
    let stored: Option<String> = raw.get("tls:user:1").await.unwrap();
    assert_eq!(stored.as_deref(), Some("\"Ada\""));
    assert!(c.delete("user:1").await.unwrap());
    assert_eq!(c.address(), server.url());
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error_naming_the_address() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, false, &[]);
    let err = cache(
        &server.url(),
        TlsConfig::new().ca_file(certs.other_ca()),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{}", server.tls_port())),
        "{msg}"
    );
    assert!(msg.contains("certificate"), "{msg}");
    // Without any CA the system roots alone do not trust the test CA either:
    // verification is on by default.
    let err = cache(&server.url(), TlsConfig::new(), "x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn insecure_skips_verification_only_when_named() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, false, &[]);
    let url = format!("{}?insecure", server.url());
    let c = cache(&url, TlsConfig::new(), "insecure").await.unwrap();
    c.set("k", 1u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap().as_deref(), Some(&1));
}

#[tokio::test]
async fn mutual_tls_accepts_the_client_certificate_and_refuses_others() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, true, &[]);
    let (cert, key) = certs.client();
    let c = cache(
        &server.url(),
        trusted(&certs).client_cert_files(cert, key),
        "mtls",
    )
    .await
    .unwrap();
    c.set("k", 2u32, None).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap().as_deref(), Some(&2));

    // A certificate from a CA the server does not trust: refused.
    let (cert, key) = certs.rogue_client();
    let err = cache(
        &server.url(),
        trusted(&certs).client_cert_files(cert, key),
        "mtls",
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", server.tls_port())),
        "{err}"
    );
    // No certificate at all: refused too.
    let err = cache(&server.url(), trusted(&certs), "mtls")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn unreadable_certificate_files_are_input_errors_naming_the_file() {
    let err = cache(
        "rediss://127.0.0.1:1",
        TlsConfig::new().ca_file("/nonexistent/ormcache-ca.pem"),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("/nonexistent/ormcache-ca.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn hybrid_caches_stay_coherent_over_tls_pubsub() {
    let certs = TestCerts::generate();
    let server = TlsRedisServer::start(&certs, true, &[]);
    let (cert, key) = certs.client();
    let tls = trusted(&certs).client_cert_files(cert, key);
    let hybrid = async || {
        let l2 = cache(&server.url(), tls.clone(), "coherent").await.unwrap();
        let h = HybridCache::builder(QueryCache::new(1000, Duration::from_secs(60)).unwrap(), l2)
            .heartbeat_interval(Duration::from_millis(100))
            .build()
            .unwrap();
        assert!(
            h.wait_coherent(Duration::from_secs(5)).await,
            "never coherent"
        );
        h
    };
    let a = hybrid().await;
    let b = hybrid().await;
    a.set("k", 1u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&1));
    assert!(b.l1().exists_sync("k"), "b holds k in its L1");
    // A's write returns once B applied the invalidation (confirmed over TLS
    // pub/sub): B reads the new value at once.
    a.set("k", 2u32, None).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap().as_deref(), Some(&2));
    assert!(
        b.get_stats()
            .await
            .unwrap()
            .coherence
            .invalidations_received
            >= 1
    );
}

#[tokio::test]
async fn a_cluster_over_tls() {
    let certs = TestCerts::generate();
    let cluster = TlsRedisCluster::start(&certs);
    let c = cache(&cluster.url(), trusted(&certs), "tlscluster")
        .await
        .unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    c.set_many(keys.iter().map(|k| (k.clone(), k.len())).collect(), None)
        .await
        .unwrap();
    let got = c.get_many::<usize, _>(&keys).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|v| v.as_deref().copied())
            .collect::<Vec<_>>(),
        keys.iter().map(|k| Some(k.len())).collect::<Vec<_>>()
    );
    // The keys were spread over the nodes (reached through TLS redirections).
    let mut holders = 0;
    for node in cluster.nodes() {
        let mut raw = node.server().connection().await;
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut raw).await.unwrap();
        holders += u64::from(n > 0);
    }
    assert_eq!(holders, 3, "50 keys land on all three primaries");
    assert_eq!(c.clear().await.unwrap(), 50);
}

/// `rediss+sentinel://`: TLS to the Sentinels and to the master they name, and a
/// failover followed over TLS.
#[cfg(feature = "sentinel")]
#[tokio::test]
async fn sentinel_over_tls() {
    let certs = TestCerts::generate();
    let sentinels = ormcache_testing::RedisSentinels::start_tls(&certs, Some("s3cret"));
    assert!(sentinels.url().starts_with("rediss+sentinel://"));
    let c = cache(&sentinels.url(), trusted(&certs), "tlssentinel")
        .await
        .unwrap();
    c.set("k", 1u32, None).await.unwrap();
    let old = sentinels.master_port();
    sentinels.failover();
    let new = sentinels.wait_for_new_master(old);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0u32;
    loop {
        i += 1;
        if c.set("k", i, None).await.is_ok() {
            let mut raw = sentinels
                .client(new)
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let on_new: Option<u32> = raw.get("tlssentinel:k").await.unwrap();
            if on_new == Some(i) {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{}", sentinels.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.get::<u32>("k").await.unwrap().as_deref(), Some(&i));
}
