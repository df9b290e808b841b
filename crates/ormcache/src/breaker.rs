//! A circuit breaker that keeps a dead or frozen Redis off the request path.
//!
//! Closed: calls go through; consecutive connection errors and timeouts are counted.
//! At `threshold` the breaker opens: calls fail at once with
//! [`CircuitOpen`](crate::ErrorKind::CircuitOpen), without touching the network.
//! After `cooldown` one call is let through as a probe (half-open); its success
//! closes the breaker, its failure opens it for another cooldown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Settings of the circuit breaker of a [`DistributedCache`](crate::DistributedCache).
///
/// ```
/// use std::time::Duration;
/// let breaker = ormcache::BreakerConfig::new()
///     .threshold(3)
///     .cooldown(Duration::from_millis(500));
/// # let _ = breaker;
/// ```
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub(crate) threshold: u32,
    pub(crate) cooldown: Duration,
    pub(crate) enabled: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            cooldown: Duration::from_secs(1),
            enabled: true,
        }
    }
}

impl BreakerConfig {
    /// Defaults: opens after 5 consecutive connection errors or timeouts, probes
    /// again after 1 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consecutive failures that open the breaker (at least 1).
    pub fn threshold(mut self, failures: u32) -> Self {
        self.threshold = failures.max(1);
        self
    }

    /// How long the breaker stays open before a probe.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// No breaker: every call goes to Redis.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The state of a circuit breaker, as stats and errors show it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls fail fast.
    Open,
    /// A probe call is in flight.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: AtomicU8,
    failures: AtomicU32,
    probing: AtomicBool,
    opened_at: Mutex<Option<Instant>>,
    opened_total: AtomicU32,
}

/// Whether a call is a probe (its outcome decides the breaker's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Normal,
    Probe,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            opened_at: Mutex::new(None),
            opened_total: AtomicU32::new(0),
        }
    }

    /// May a call go to Redis now? `Err` carries the time left before a probe.
    pub(crate) fn allow(&self) -> Result<Permit, Duration> {
        if !self.config.enabled || self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(Permit::Normal);
        }
        let opened = self.opened_at.lock().ok().and_then(|g| *g);
        let waited = opened.map_or(self.config.cooldown, |t| t.elapsed());
        if waited < self.config.cooldown {
            return Err(self.config.cooldown - waited);
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Ok(Permit::Probe)
        } else {
            Err(Duration::ZERO)
        }
    }

    pub(crate) fn on_success(&self, permit: Permit) {
        if !self.config.enabled {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        if permit == Permit::Probe || self.state.load(Ordering::Relaxed) != CLOSED {
            self.state.store(CLOSED, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::info!("Redis answers again: circuit breaker closed");
        }
    }

    /// Records a connection error or timeout.
    pub(crate) fn on_failure(&self, permit: Permit) {
        if !self.config.enabled {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if permit == Permit::Probe || failures >= self.config.threshold {
            if let Ok(mut at) = self.opened_at.lock() {
                *at = Some(Instant::now());
            }
            if self.state.swap(OPEN, Ordering::AcqRel) == CLOSED {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(failures, "Redis failing: circuit breaker open");
            }
            self.probing.store(false, Ordering::Release);
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        if self.state.load(Ordering::Acquire) == CLOSED {
            BreakerState::Closed
        } else if self.probing.load(Ordering::Acquire) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Open
        }
    }

    pub(crate) fn times_opened(&self) -> u32 {
        self.opened_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            BreakerConfig::new()
                .threshold(3)
                .cooldown(Duration::from_secs(2)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_after_cooldown() {
        let b = breaker();
        for _ in 0..2 {
            let p = b.allow().unwrap();
            b.on_failure(p);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(b.allow().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.allow().unwrap_err(), Duration::from_secs(2));

        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(b.allow().unwrap_err(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        let probe = b.allow().unwrap();
        assert_eq!(probe, Permit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only one probe at a time.
        assert!(b.allow().is_err());
        b.on_failure(probe);
        assert_eq!(b.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = b.allow().unwrap();
        b.on_success(probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.allow().unwrap(), Permit::Normal);
        assert_eq!(b.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let b = breaker();
        b.on_failure(Permit::Normal);
        b.on_failure(Permit::Normal);
        b.on_success(Permit::Normal);
        b.on_failure(Permit::Normal);
        b.on_failure(Permit::Normal);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_never_opens() {
        let b = Breaker::new(BreakerConfig::disabled());
        for _ in 0..100 {
            b.on_failure(Permit::Normal);
        }
        assert_eq!(b.allow().unwrap(), Permit::Normal);
    }
}
