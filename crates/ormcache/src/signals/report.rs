//! What a send reports, and the counters behind [`Signals::stats`](super::Signals::stats).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::SignalKind;

/// The outcome of one send (or of the replay in [`TxSignals::committed`](super::TxSignals::committed)): how many
/// receivers ran and how many of them failed. Failures are already logged and
/// counted; the report is for callers that want to act on them too.
///
/// ```
/// use ormcache::signals::{SaveEvent, Signals};
///
/// #[derive(Clone)]
/// struct User { id: u64 }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signals = Signals::new();
/// signals.on_post_save(|_: SaveEvent<User>| async { Ok(()) });
/// signals.on_post_save(|_: SaveEvent<User>| async { Err("redis is down".into()) });
///
/// let report = signals.send_post_save(&User { id: 1 }, true).await;
/// assert_eq!((report.delivered(), report.failed()), (2, 1));
/// assert!(!report.is_ok());
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendReport {
    pub(super) delivered: usize,
    pub(super) failed: usize,
}

impl SendReport {
    /// Receivers that ran (failed ones included).
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// Receivers that returned an error or panicked.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Whether every receiver succeeded (true when there were none).
    pub fn is_ok(&self) -> bool {
        self.failed == 0
    }

    pub(super) fn add(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.failed += other.failed;
    }
}

/// Counters of one signal kind, since the registry was created.
///
/// ```
/// use ormcache::signals::Signals;
/// let stats = Signals::new().stats();
/// assert_eq!(stats.post_save.sends, 0);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KindStats {
    /// Sends, with or without receivers.
    pub sends: u64,
    /// Receiver calls (failed ones included).
    pub deliveries: u64,
    /// Receiver calls that returned an error or panicked.
    pub failures: u64,
}

/// Counters of a [`Signals`](super::Signals) registry, per signal kind (clones share them).
///
/// ```
/// use ormcache::signals::{DeleteEvent, Signals};
///
/// #[derive(Clone)]
/// struct User { id: u64 }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let signals = Signals::new();
/// signals.on_post_delete(|_: DeleteEvent<User>| async { Err("boom".into()) });
/// signals.send_post_delete(&User { id: 1 }).await;
///
/// let stats = signals.stats();
/// assert_eq!(stats.post_delete.deliveries, 1);
/// assert_eq!(stats.post_delete.failures, 1);
/// assert_eq!(stats.failures(), 1);
/// # });
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SignalStats {
    /// `pre_save` counters.
    pub pre_save: KindStats,
    /// `post_save` counters.
    pub post_save: KindStats,
    /// `pre_delete` counters.
    pub pre_delete: KindStats,
    /// `post_delete` counters.
    pub post_delete: KindStats,
}

impl SignalStats {
    /// The counters of one kind.
    ///
    /// ```
    /// use ormcache::signals::{SignalKind, Signals};
    /// let stats = Signals::new().stats();
    /// assert_eq!(stats.kind(SignalKind::PreSave), stats.pre_save);
    /// ```
    pub fn kind(&self, kind: SignalKind) -> KindStats {
        match kind {
            SignalKind::PreSave => self.pre_save,
            SignalKind::PostSave => self.post_save,
            SignalKind::PreDelete => self.pre_delete,
            SignalKind::PostDelete => self.post_delete,
        }
    }

    /// Failed receiver calls, all kinds.
    ///
    /// ```
    /// use ormcache::signals::Signals;
    /// assert_eq!(Signals::new().stats().failures(), 0);
    /// ```
    pub fn failures(&self) -> u64 {
        self.pre_save.failures
            + self.post_save.failures
            + self.pre_delete.failures
            + self.post_delete.failures
    }
}

/// The live counters of one signal kind.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sends: AtomicU64,
    pub(super) deliveries: AtomicU64,
    pub(super) failures: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> KindStats {
        KindStats {
            sends: self.sends.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}
