//! [`TxSignals`]: the signals of one database transaction, replayed after its commit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use super::{SendReport, SignalKind, Signals};

type ReportFuture = Pin<Box<dyn Future<Output = SendReport> + Send + 'static>>;

/// The signals of one database transaction.
///
/// SeaORM has no commit hook, so the code that owns the transaction tells this
/// buffer how it ended. Inside the transaction, send through it instead of through
/// [`Signals`]:
///
/// - `pre_save` and `pre_delete` run at once, once.
/// - `post_save` and `post_delete` run at once (later reads in the same request miss
///   the stale entry, even if the process dies before the replay) **and** are queued; [`committed`](Self::committed) replays the queue,
///   in order, after the commit. The replay is what makes the invalidation stick: a
///   reader that refilled the cache from the database between the first run and the
///   commit saw the old row.
/// - [`rolled_back`](Self::rolled_back), or dropping the buffer (what happens on an
///   early `?` return, like SeaORM's rollback on drop), discards the queue: after a
///   rollback the first run only cost a cache miss.
///
/// Queued events are replayed to the receivers connected at replay time. The SeaORM
/// integration (feature `sea-orm`) wraps this around its transactions.
///
/// ```
/// use std::time::Duration;
/// use ormcache::QueryCache;
/// use ormcache::signals::{SaveEvent, Signals};
///
/// #[derive(Clone)]
/// struct User { id: u64 }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
/// let signals = Signals::new();
/// let c = cache.clone();
/// signals.on_post_save(move |e: SaveEvent<User>| {
///     c.delete_sync(&format!("user:{}", e.instance.id)); // QueryCache answers synchronously too
///     async { Ok(()) }
/// });
///
/// let tx = signals.transaction();
/// // let txn = db.begin().await?; ... UPDATE users ... (through txn)
/// tx.send_post_save(&User { id: 1 }, false).await; // invalidates now
/// cache.set_sync("user:1", "stale".to_string(), None).unwrap(); // a concurrent refill
/// // txn.commit().await?;
/// let report = tx.committed().await; // invalidates again
/// assert_eq!(report.delivered(), 1);
/// assert!(!cache.exists_sync("user:1"));
/// # });
/// ```
pub struct TxSignals {
    signals: Signals,
    queue: Mutex<Vec<ReportFuture>>,
}

impl fmt::Debug for TxSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxSignals")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl TxSignals {
    pub(super) fn new(signals: Signals) -> Self {
        Self {
            signals,
            queue: Mutex::new(Vec::new()),
        }
    }

    /// Runs the `pre_save` receivers at once (not replayed after the commit).
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_pre_save(|_: SaveEvent<User>| async { Ok(()) });
    /// let tx = signals.transaction();
    /// assert_eq!(tx.send_pre_save(&User, true).await.delivered(), 1);
    /// assert_eq!(tx.pending(), 0);
    /// # });
    /// ```
    pub async fn send_pre_save<M>(&self, instance: &M, created: bool) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.signals.send_pre_save(instance, created).await
    }

    /// Runs the `post_save` receivers at once and queues the event for
    /// [`committed`](Self::committed).
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_post_save(|_: SaveEvent<User>| async { Ok(()) });
    /// let tx = signals.transaction();
    /// assert_eq!(tx.send_post_save(&User, true).await.delivered(), 1);
    /// assert_eq!(tx.pending(), 1);
    /// assert_eq!(tx.committed().await.delivered(), 1);
    /// # });
    /// ```
    pub async fn send_post_save<M>(&self, instance: &M, created: bool) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        let kind = SignalKind::PostSave;
        let mut shared = None;
        let report = self
            .signals
            .send_save(
                kind,
                || Arc::clone(shared.insert(Arc::new(instance.clone()))),
                created,
            )
            .await;
        if let Some(instance) = shared {
            let signals = self.signals.clone();
            self.defer(Box::pin(async move {
                signals.send_save(kind, || instance, created).await
            }));
        }
        report
    }

    /// Runs the `pre_delete` receivers at once (not replayed after the commit).
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_pre_delete(|_: DeleteEvent<User>| async { Ok(()) });
    /// let tx = signals.transaction();
    /// assert_eq!(tx.send_pre_delete(&User).await.delivered(), 1);
    /// assert_eq!(tx.pending(), 0);
    /// # });
    /// ```
    pub async fn send_pre_delete<M>(&self, instance: &M) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.signals.send_pre_delete(instance).await
    }

    /// Runs the `post_delete` receivers at once and queues the event for
    /// [`committed`](Self::committed).
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_post_delete(|_: DeleteEvent<User>| async { Ok(()) });
    /// let tx = signals.transaction();
    /// tx.send_post_delete(&User).await;
    /// tx.rolled_back(); // nothing is replayed
    /// assert_eq!(signals.stats().post_delete.deliveries, 1);
    /// # });
    /// ```
    pub async fn send_post_delete<M>(&self, instance: &M) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        let kind = SignalKind::PostDelete;
        let mut shared = None;
        let report = self
            .signals
            .send_delete(kind, || {
                Arc::clone(shared.insert(Arc::new(instance.clone())))
            })
            .await;
        if let Some(instance) = shared {
            let signals = self.signals.clone();
            self.defer(Box::pin(async move {
                signals.send_delete(kind, || instance).await
            }));
        }
        report
    }

    /// Events queued for replay after the commit (events of models with no
    /// receivers are not queued).
    ///
    /// ```
    /// let tx = ormcache::signals::Signals::new().transaction();
    /// assert_eq!(tx.pending(), 0);
    /// ```
    pub fn pending(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The transaction committed: replays the queued `post_save` and `post_delete`
    /// events, in the order they were sent, and returns the combined report. Call it
    /// after the commit returned `Ok`.
    ///
    /// ```
    /// let signals = ormcache::signals::Signals::new();
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let report = signals.transaction().committed().await;
    /// assert_eq!(report.delivered(), 0);
    /// # });
    /// ```
    pub async fn committed(self) -> SendReport {
        self.replay().await
    }

    /// Replays and empties the queue (what [`committed`](Self::committed) does, for
    /// a buffer that is shared).
    pub(crate) async fn replay(&self) -> SendReport {
        let queue = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut report = SendReport::default();
        for replay in queue {
            report.add(replay.await);
        }
        report
    }

    /// Moves `inner`'s queue to the end of this one: a nested transaction committed,
    /// and its events wait for the outer commit.
    #[cfg_attr(not(feature = "sea-orm"), allow(dead_code))]
    pub(crate) fn absorb(&self, inner: &Self) {
        let moved =
            std::mem::take(&mut *inner.queue.lock().unwrap_or_else(PoisonError::into_inner));
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(moved);
    }

    /// Whether this buffer belongs to `signals` (the same registry, not a copy).
    #[cfg_attr(not(feature = "sea-orm"), allow(dead_code))]
    pub(crate) fn belongs_to(&self, signals: &Signals) -> bool {
        self.signals.same_registry(signals)
    }

    /// The transaction rolled back: discards the queue. Dropping the buffer does the
    /// same; this spells it out.
    ///
    /// ```
    /// let signals = ormcache::signals::Signals::new();
    /// signals.transaction().rolled_back();
    /// ```
    pub fn rolled_back(self) {
        drop(self);
    }

    fn defer(&self, replay: ReportFuture) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(replay);
    }
}
