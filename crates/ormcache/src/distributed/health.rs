//! Health: `ping`, the periodic health check, and failing fast while the server is
//! unreachable (DESIGN contract 14).
//!
//! redis-rs' `ConnectionManager` reconnects on the first call after a connection
//! dropped, and every later call awaits that reconnection. With retries inside the
//! reconnection, a refused connection (a dead Redis) cost each call the whole retry
//! schedule, cut short only by the command timeout. So:
//!
//! - the managers make one connection attempt per reconnection, no in-call retries
//!   ([`manager_config`]);
//! - a refused connection (or a missing unix socket) marks the server *down*: from
//!   then on calls fail at once with a [`Connection`](crate::ErrorKind::Connection)
//!   error, without touching the network, and count toward the circuit breaker. A
//!   connection that merely dropped (`CLIENT KILL`, a network blip) fails the call
//!   that saw it; the next call reconnects (one attempt) and, if the server
//!   answers, goes through — only a refusal there marks the server down;
//! - one background task per cache reconnects, `PING`ing every connection with a
//!   growing pause (5 ms, doubling, at most 500 ms); when all of them answer, the
//!   server is *up* again and the breaker closes.
//!
//! A silent server (frozen, or packets dropped) produces timeouts, not connection
//! errors: its calls cost the command timeout until the breaker opens.
//!
//! On a Redis Cluster the down flag is not used (one dead primary must not fail the
//! calls that reach the others): redis-rs' cluster connection keeps its own
//! retries, which also carry `MOVED`/`ASK` redirections.

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManagerConfig;

use super::{DistributedCache, Inner};
use crate::config::DistributedConfig;
use crate::error::{Error, ErrorKind, Result};

/// First pause of the background reconnection; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The configuration of every single-server `ConnectionManager`: the connect
/// timeout, and no retries inside a call (see the module docs). No response
/// timeout: every call through it is bounded by `DistributedCache`'s own, which
/// gives a batch more than the command timeout (one timer a call, not two).
pub(super) fn manager_config(config: &DistributedConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(None)
        .set_number_of_retries(0)
}

/// Whether the server is known to be unreachable.
#[derive(Debug, Default)]
pub(super) struct Health {
    down: AtomicBool,
    reconnecting: AtomicBool,
}

impl Health {
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

impl DistributedCache {
    /// `PING`; the round-trip time. On a cluster: `PING` to every primary that
    /// `CLUSTER SLOTS` names, one after the other (the time is for all of them), so
    /// that a dead primary makes it fail.
    ///
    /// # Errors
    /// Redis errors and timeouts (on a cluster, naming the primary).
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        let ping = redis::cmd("PING");
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            for node in self.primaries("ping").await? {
                let reply: String = self
                    .call("ping", None, super::Request::On(&node, &ping))
                    .await
                    .map_err(|e| e.with_detail(format!("primary {node}")))?;
                check_pong(&reply)?;
            }
            return Ok(start.elapsed());
        }
        let reply: String = self.query("ping", None, &ping).await?;
        check_pong(&reply)?;
        Ok(start.elapsed())
    }

    /// The error of a call made while the server is down.
    pub(super) fn down_error(&self, op: &'static str) -> Error {
        Error::new(ErrorKind::Connection, op).with_detail(format!(
            "Redis at {} is unreachable; reconnecting in the background",
            self.inner.address
        ))
    }

    /// A call failed with a connection error: if the connection was refused, marks
    /// the server down and starts the background reconnection (once). Without a
    /// Tokio runtime to run it on, the server is not marked down (calls then find
    /// out for themselves).
    pub(super) fn on_connection_error(&self, err: &Error) {
        #[cfg(feature = "cluster")]
        if self.is_cluster() {
            return;
        }
        let refused = std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<redis::RedisError>())
            .is_some_and(redis::RedisError::is_connection_refusal);
        if !refused {
            return;
        }
        let health = &self.inner.health;
        if health
            .reconnecting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            health.reconnecting.store(false, Ordering::Release);
            return;
        };
        health.down.store(true, Ordering::Release);
        tracing::warn!(
            address = %self.inner.address,
            "Redis refuses connections: calls fail fast while reconnecting in the background"
        );
        let task = runtime.spawn(reconnect(std::sync::Arc::downgrade(&self.inner)));
        self.inner.tasks.extend([task]);
    }

    /// One `PING` on every connection, bypassing the breaker and the down flag.
    async fn ping_every_connection(&self) -> bool {
        for conn in &self.inner.conns {
            let mut conn = conn.clone();
            let ping = redis::cmd("PING");
            let reply =
                tokio::time::timeout(self.inner.timeout, ping.query_async::<String>(&mut conn))
                    .await;
            if !matches!(reply, Ok(Ok(ref pong)) if pong == "PONG") {
                return false;
            }
        }
        true
    }
}

/// The background reconnection: ends when every connection answers (or the cache
/// is dropped or closed).
async fn reconnect(weak: Weak<Inner>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let cache = DistributedCache { inner };
        if cache.is_closed() {
            return;
        }
        if cache.ping_every_connection().await {
            let health = &cache.inner.health;
            health.down.store(false, Ordering::Release);
            health.reconnecting.store(false, Ordering::Release);
            cache.inner.breaker.close();
            tracing::info!(address = %cache.inner.address, "Redis reachable again");
            return;
        }
        drop(cache);
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(MAX_PAUSE);
    }
}

fn check_pong(reply: &str) -> Result<()> {
    if reply == "PONG" {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Server, "ping")
            .with_detail(format!("unexpected reply {reply:?}")))
    }
}

/// The optional periodic health check (`health_check_interval`).
pub(super) async fn health_loop(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let cache = DistributedCache { inner };
        if let Err(e) = cache.ping().await {
            tracing::warn!(error = %e, address = %cache.inner.address, "Redis health check failed");
        }
    }
}
