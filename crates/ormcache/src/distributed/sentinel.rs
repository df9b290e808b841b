//! Redis Sentinel (feature `sentinel`): the connection to the master of a Sentinel
//! service, found through the Sentinels and followed across failovers without a
//! restart.
//!
//! The master's address comes from redis-rs's `SentinelClient` (which asks each
//! Sentinel in turn and checks with `ROLE` that the node it names is a master).
//! Calls go to a `ConnectionManager` for that master. The address is looked up
//! again in the background as soon as a Sentinel announces `+switch-master`, at
//! least every [`RECHECK`], and at once (at most every [`MIN_LOOKUP_GAP`]) when a
//! call fails in a way a failover explains: the connection broke or timed out, or
//! the server answers `READONLY` (a demoted master) or `MASTERDOWN`. When the Sentinels name another master, new
//! connections to it replace the old ones; calls in flight on the old ones finish
//! or fail as they would have. `HybridCache`'s restart/failover recovery then sees
//! the new server's run id and replication id and flushes its L1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};

use super::conn::{Conn, Link};
use super::health::manager_config;
use super::transport::Transport;
use crate::config::DistributedConfig;
use crate::error::{Error, Result};

/// How often the master's address is checked when nothing failed.
const RECHECK: Duration = Duration::from_secs(2);
/// The least time between two lookups triggered by failing calls.
const MIN_LOOKUP_GAP: Duration = Duration::from_millis(100);

/// The master now: its client and one connection per `max_connections`.
struct Master {
    client: redis::Client,
    address: String,
    managers: Vec<ConnectionManager>,
}

struct Shared {
    /// Read on every call without a lock shared across calls.
    master: ArcSwapOption<Master>,
    lookup: tokio::sync::Mutex<SentinelClient>,
    manager_config: ConnectionManagerConfig,
    connect_timeout: Duration,
    connections: usize,
    db: i64,
    service: String,
    /// The URL, redacted, for messages.
    address: String,
    looking: AtomicBool,
    last_lookup: Mutex<Option<Instant>>,
}

/// One of the connections to the current master of a Sentinel service.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    shared: Arc<Shared>,
    index: usize,
}

/// Whether `e` may mean the master moved.
fn failover_suspected(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

fn no_master_yet() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "no master of the Sentinel service is known yet",
    ))
}

impl SentinelConn {
    fn manager(&self) -> Option<ConnectionManager> {
        let master = self.shared.master.load();
        let managers = &master.as_ref()?.managers;
        managers.get(self.index % managers.len().max(1)).cloned()
    }

    /// A client for the current master (for the invalidation subscriber).
    pub(super) fn current_client(&self) -> Option<redis::Client> {
        self.shared.master.load().as_ref().map(|m| m.client.clone())
    }

    pub(super) fn get_db(&self) -> i64 {
        self.shared.db
    }

    /// Runs `send` on the current master's connection; a failure a failover
    /// explains starts a lookup of the master.
    fn call<'a, T: Send + 'a>(
        &self,
        send: impl FnOnce(ConnectionManager) -> RedisFuture<'a, T> + Send + 'a,
    ) -> RedisFuture<'a, T> {
        let shared = Arc::clone(&self.shared);
        let manager = self.manager();
        Box::pin(async move {
            let Some(manager) = manager else {
                Shared::look_up_soon(&shared);
                return Err(no_master_yet());
            };
            let reply = send(manager).await;
            if let Err(e) = &reply
                && failover_suspected(e)
            {
                Shared::look_up_soon(&shared);
            }
            reply
        })
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.call(move |mut m| Box::pin(async move { m.req_packed_command(cmd).await }))
    }

    pub(super) fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.call(move |mut m| {
            Box::pin(async move { m.req_packed_commands(pipeline, offset, count).await })
        })
    }
}

impl Shared {
    /// Starts a lookup in the background unless one runs or one ran very recently.
    fn look_up_soon(this: &Arc<Self>) {
        let recent = this
            .last_lookup
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < MIN_LOOKUP_GAP);
        if recent || this.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            this.looking.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(this);
        runtime.spawn(async move {
            if let Some(shared) = weak.upgrade() {
                if let Err(e) = shared.look_up().await {
                    tracing::debug!(error = %e, service = %shared.service, "Sentinel lookup failed");
                }
                shared.looking.store(false, Ordering::Release);
            }
        });
    }

    /// Asks the Sentinels for the master; connects to it if it moved. Whether it
    /// moved.
    async fn look_up(&self) -> Result<bool> {
        if let Ok(mut t) = self.last_lookup.lock() {
            *t = Some(Instant::now());
        }
        let found = tokio::time::timeout(self.connect_timeout, async {
            self.lookup.lock().await.async_get_client().await
        })
        .await;
        let client = match found {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(crate::error::from_redis("sentinel", e).with_detail(format!(
                    "no master for service {:?} from the Sentinels of {}",
                    self.service, self.address
                )));
            }
            Err(_) => {
                return Err(
                    Error::new(crate::ErrorKind::Timeout, "sentinel").with_detail(format!(
                        "the Sentinels of {} named no master for {:?} within {:?}",
                        self.address, self.service, self.connect_timeout
                    )),
                );
            }
        };
        let address = client.get_connection_info().addr().to_string();
        let previous = self.master.load().as_ref().map(|m| m.address.clone());
        if previous.as_deref() == Some(address.as_str()) {
            return Ok(false);
        }
        let mut managers = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let connecting =
                ConnectionManager::new_with_config(client.clone(), self.manager_config.clone());
            let manager = match tokio::time::timeout(self.connect_timeout, connecting).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    return Err(crate::error::from_redis("sentinel", e).with_detail(format!(
                        "cannot connect to the master at {address} (of {})",
                        self.address
                    )));
                }
                Err(_) => {
                    return Err(
                        Error::new(crate::ErrorKind::Timeout, "sentinel").with_detail(format!(
                            "cannot connect to the master at {address} (of {})",
                            self.address
                        )),
                    );
                }
            };
            managers.push(manager);
        }
        match &previous {
            Some(old) => tracing::warn!(
                service = %self.service, from = %old, to = %address,
                "Sentinel failover: following the new master"
            ),
            None => {
                tracing::info!(service = %self.service, master = %address, "Sentinel master found")
            }
        }
        self.master.store(Some(Arc::new(Master {
            client,
            address,
            managers,
        })));
        Ok(true)
    }
}

/// Follows the master while the cache lives: listens for `+switch-master` on one
/// Sentinel and looks the master up at once when a failover is announced, and at
/// least every [`RECHECK`] (the announcement can be missed while the Sentinel
/// connection is down).
async fn watch_loop(weak: Weak<Shared>) {
    let mut switches: Option<redis::aio::PubSub> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        if switches.is_none() {
            switches = shared.subscribe_to_switches().await;
        }
        drop(shared);
        let heard = match &mut switches {
            Some(ps) => {
                let next = tokio::time::timeout(RECHECK, ps.on_message().next()).await;
                next.ok().map(|msg| msg.is_some())
            }
            None => {
                tokio::time::sleep(RECHECK).await;
                None
            }
        };
        let announced = match heard {
            Some(true) => true,
            // The subscription ended: subscribe again.
            Some(false) => {
                switches = None;
                false
            }
            None => false,
        };
        let Some(shared) = weak.upgrade() else { return };
        if announced {
            if let Err(e) = shared.look_up().await {
                tracing::debug!(error = %e, "Sentinel lookup after +switch-master failed");
            }
        } else {
            Shared::look_up_soon(&shared);
        }
    }
}

impl Shared {
    /// A subscription to `+switch-master` on a Sentinel (`None` if none answers).
    async fn subscribe_to_switches(&self) -> Option<redis::aio::PubSub> {
        let subscribing = async {
            let client = self.lookup.lock().await.async_get_sentinel_client().await?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(self.connect_timeout, subscribing).await {
            Ok(Ok(ps)) => Some(ps),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot subscribe to +switch-master");
                None
            }
            Err(_) => None,
        }
    }
}

fn builder(transport: &Transport, service: &str) -> Result<SentinelClientBuilder> {
    let url = transport.url();
    let address = transport.address();
    let bad = |e: redis::RedisError| Error::invalid("create", format!("cannot use {address}: {e}"));
    let sentinels = url.tcp_hosts().iter().map(|h| {
        if url.is_tls() {
            ConnectionAddr::TcpTls {
                host: h.name.clone(),
                port: h.port,
                insecure: url.is_insecure(),
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(h.name.clone(), h.port)
        }
    });
    let mut b = SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)
        .map_err(bad)?
        .set_client_to_sentinel_tcp_settings(transport.tcp().clone())
        .set_client_to_redis_tcp_settings(transport.tcp().clone())
        .set_client_to_redis_db(i64::from(url.db()));
    let (sentinel_user, sentinel_password) = url.sentinel_credentials();
    if let Some(u) = sentinel_user {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = sentinel_password {
        b = b.set_client_to_sentinel_password(p);
    }
    if let Some(u) = url.username() {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = url.password() {
        b = b.set_client_to_redis_password(p);
    }
    if url.is_tls() {
        let mode = if url.is_insecure() {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        b = b
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_sentinel_tls_mode(mode);
        #[cfg(feature = "tls")]
        if let Some(certs) = transport.certs() {
            b = b
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs.clone());
        }
    }
    Ok(b)
}

/// Finds the master through the Sentinels (unless `connect_lazily`) and connects.
pub(super) async fn connect(config: &DistributedConfig, transport: &Transport) -> Result<Link> {
    let url = transport.url();
    let address = transport.address();
    let service = url.service_name().unwrap_or_default().to_owned();
    let lookup = builder(transport, &service)?
        .build()
        .map_err(|e| Error::invalid("create", format!("cannot use {address}: {e}")))?;
    let shared = Arc::new(Shared {
        master: ArcSwapOption::empty(),
        lookup: tokio::sync::Mutex::new(lookup),
        manager_config: manager_config(config),
        connect_timeout: config.connect_timeout,
        connections: config.max_connections.max(1),
        db: i64::from(url.db()),
        service,
        address: address.clone(),
        looking: AtomicBool::new(false),
        last_lookup: Mutex::new(None),
    });
    if config.connect_lazily {
        Shared::look_up_soon(&shared);
    } else {
        shared.look_up().await?;
    }
    tokio::spawn(watch_loop(Arc::downgrade(&shared)));
    let conns = (0..config.max_connections.max(1))
        .map(|index| {
            Conn::Sentinel(SentinelConn {
                shared: Arc::clone(&shared),
                index,
            })
        })
        .collect();
    Ok(Link {
        conns,
        // The invalidation subscriber asks the connection for the current master.
        pubsub: Vec::new(),
        address,
        slot_tags: false,
        #[cfg(feature = "cluster")]
        seeds: None,
    })
}
