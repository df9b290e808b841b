//! A circuit breaker that keeps a dead or frozen Redis off the request path.
//!
//! Closed: calls go through; consecutive connection errors and timeouts are counted.
//! At `threshold` the breaker opens: calls fail at once with
//! [`CircuitOpen`](crate::ErrorKind::CircuitOpen), without touching the network.
//! After `cooldown` one call is let through as a probe (half-open); its success
//! closes the breaker, its failure opens it for another cooldown. The probe slot is
//! held by a guard ([`Permit`]): a probe whose call is dropped before Redis answers
//! (a caller's timeout, a disconnected client) gives the slot back, and the next
//! call probes.

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
    /// The state gauge and transition counters (feature `metrics`).
    meter: crate::observe::BreakerMeter,
}

/// Leave to make one call to Redis, from [`Breaker::allow`].
///
/// A probe permit holds the breaker's only probe slot. The call settles it with
/// [`success`](Self::success) or [`failure`](Self::failure); a permit dropped
/// without a verdict (the call's future was dropped mid-call) gives the slot back,
/// so that the next call probes again instead of the breaker staying half-open
/// forever.
#[derive(Debug)]
#[must_use = "a permit must be settled with success() or failure()"]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// Whether this call is a probe (its outcome decides the breaker's state).
    #[cfg(test)]
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Redis answered: closes the breaker (resets the failure count).
    pub(crate) fn success(mut self) {
        self.settled = true;
        self.breaker.on_success(self.probe);
    }

    /// A connection error or timeout: counts toward opening the breaker.
    pub(crate) fn failure(mut self) {
        self.settled = true;
        self.breaker.on_failure(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            // No verdict: the breaker stays open (its cooldown already ran out),
            // and the next call takes the probe slot.
            self.breaker.probing.store(false, Ordering::Release);
            self.breaker.meter.state.set(2.0);
        }
    }
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
            meter: crate::observe::BreakerMeter::default(),
        }
    }

    /// The same breaker, reporting its state and transitions as metrics.
    pub(crate) fn metered(mut self, meter: crate::observe::BreakerMeter) -> Self {
        self.meter = meter;
        self
    }

    /// May a call go to Redis now? `Err` carries the time left before a probe.
    pub(crate) fn allow(&self) -> Result<Permit<'_>, Duration> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            settled: false,
        };
        if !self.config.enabled || self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(permit(false));
        }
        let opened = self.opened_at.lock().ok().and_then(|g| *g);
        let waited = opened.map_or(self.config.cooldown, |t| t.elapsed());
        if waited < self.config.cooldown {
            return Err(self.config.cooldown.saturating_sub(waited));
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.meter.half_open();
            tracing::debug!("circuit breaker half-open: probing Redis");
            Ok(permit(true))
        } else {
            Err(Duration::ZERO)
        }
    }

    /// Closes the breaker: Redis was seen answering (by a call, or on another
    /// connection).
    pub(crate) fn close(&self) {
        self.on_success(true);
    }

    fn on_success(&self, probe: bool) {
        if !self.config.enabled {
            return;
        }
        // Read first: a store on every success would pull the line that `allow`
        // reads on every call away from the other cores.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if probe || self.state.load(Ordering::Relaxed) != CLOSED {
            self.probing.store(false, Ordering::Release);
            if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
                self.meter.closed();
                tracing::info!("Redis answers again: circuit breaker closed");
            }
        }
    }

    /// Records a connection error or timeout.
    fn on_failure(&self, probe: bool) {
        if !self.config.enabled {
            return;
        }
        let failures = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                Some(f.saturating_add(1))
            })
            .map_or(u32::MAX, |f| f.saturating_add(1));
        if probe || failures >= self.config.threshold {
            if let Ok(mut at) = self.opened_at.lock() {
                *at = Some(Instant::now());
            }
            if self.state.swap(OPEN, Ordering::AcqRel) == CLOSED {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                self.meter.opened();
                tracing::warn!(failures, "Redis failing: circuit breaker open");
            } else if probe {
                // Half-open back to open: at most once per cooldown, so `debug`.
                self.meter.opened();
                tracing::debug!("probe failed: circuit breaker open again");
            }
            if probe {
                self.probing.store(false, Ordering::Release);
            }
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
            b.allow().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.allow().unwrap_err(), Duration::from_secs(2));

        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(b.allow().unwrap_err(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        let probe = b.allow().unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only one probe at a time.
        assert!(b.allow().is_err());
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(2)).await;
        b.allow().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.allow().unwrap().is_probe());
        assert_eq!(b.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_gives_its_slot_back() {
        let b = breaker();
        for _ in 0..3 {
            b.allow().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = b.allow().unwrap();
        assert!(probe.is_probe());
        assert!(b.allow().is_err(), "one probe at a time");
        // The call was cancelled: no verdict.
        drop(probe);
        assert_eq!(b.state(), BreakerState::Open);
        let again = b.allow().expect("the next call probes at once");
        assert!(again.is_probe());
        again.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let b = breaker();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        b.allow().unwrap().success();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_cooldowns_do_not_panic() {
        let b = Breaker::new(BreakerConfig::new().threshold(1).cooldown(Duration::MAX));
        b.allow().unwrap().failure();
        assert!(b.allow().unwrap_err() > Duration::from_secs(3600));
        b.close();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_never_opens() {
        let b = Breaker::new(BreakerConfig::disabled());
        for _ in 0..100 {
            b.allow().unwrap().failure();
        }
        assert!(!b.allow().unwrap().is_probe());
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
