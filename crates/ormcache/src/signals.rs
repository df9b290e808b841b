//! Model lifecycle signals: typed, async receivers that invalidate the cache when a
//! row is saved or deleted (the seed's `@receiver(post_save, sender=User)`).
//!
//! A [`Signals`] registry is built at start-up, receivers are connected per model
//! type, and the code that writes the database sends [`pre_save`](Signals::send_pre_save),
//! [`post_save`](Signals::send_post_save), [`pre_delete`](Signals::send_pre_delete) and
//! [`post_delete`](Signals::send_post_delete) around its ORM calls. A send runs the
//! receivers of that model and that signal one after the other, in registration
//! order, and returns when the last one has finished: the cache is invalidated before
//! the response is sent.
//!
//! A send never fails. A receiver that returns an error (or panics) is logged with
//! `tracing::warn!` (signal, model type, receiver index and name), counted in
//! [`Signals::stats`] and reported in the returned [`SendReport`]; the receivers after
//! it still run. The row is already written when `post_save` runs: failing the
//! database call because the cache failed would invite a retry that writes it twice.
//!
//! Inside a database transaction, send through a [`TxSignals`]
//! ([`Signals::transaction`]): `post_save` and `post_delete` receivers run at once and
//! again after the commit, and not again after a rollback. The SeaORM integration
//! wraps this around its transactions; any other database layer can call it directly.
//!
//! There is no global registry: pass a [`Signals`] (a cheap clone) to whatever needs
//! it, like any other handle (axum `State`, a field of a repository struct).
//!
//! ```
//! use std::time::Duration;
//! use ormcache::signals::{DeleteEvent, SaveEvent, Signals};
//! use ormcache::{Cache, QueryCache};
//!
//! #[derive(Clone)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! /// Start-up wiring, written once for whichever cache the service uses.
//! fn connect_user_receivers<C: Cache>(signals: &Signals, cache: C) {
//!     let c = cache.clone();
//!     signals.on_post_save(move |e: SaveEvent<User>| {
//!         let cache = c.clone();
//!         async move {
//!             cache.delete(&format!("user:{}", e.instance.id)).await?;
//!             Ok(())
//!         }
//!     });
//!     signals.on_post_delete(move |e: DeleteEvent<User>| {
//!         let cache = cache.clone();
//!         async move {
//!             cache.delete(&format!("user:{}", e.instance.id)).await?;
//!             Ok(())
//!         }
//!     });
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
//! let signals = Signals::new();
//! connect_user_receivers(&signals, cache.clone());
//!
//! cache.set_sync("user:7", "Ann".to_string(), None).unwrap();
//! let user = User { id: 7, name: "Anne".into() };
//! // ... UPDATE users SET name = 'Anne' WHERE id = 7 ...
//! let report = signals.send_post_save(&user, false).await;
//! assert!(report.is_ok());
//! assert!(!cache.exists_sync("user:7"));
//! # });
//! ```

mod event;
mod report;
mod transaction;

pub use event::{DeleteEvent, SaveEvent, SignalKind};
pub use report::{KindStats, SendReport, SignalStats};
pub use transaction::TxSignals;

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;

use report::Counters;

/// The error a receiver returns: any error, boxed. `?` converts into it, so a
/// receiver can propagate an [`ormcache::Error`](crate::Error) or a database error
/// alike.
///
/// ```
/// use ormcache::signals::BoxError;
/// let e: BoxError = "cache unreachable".into();
/// assert_eq!(e.to_string(), "cache unreachable");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

type ReceiverFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;
/// One connected receiver, type-erased down to its event type.
struct Receiver<E> {
    name: &'static str,
    call: Arc<dyn Fn(E) -> ReceiverFuture + Send + Sync>,
}

impl<E> Clone for Receiver<E> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            call: Arc::clone(&self.call),
        }
    }
}

/// The receivers of one model type. Copied on write: a send holds an `Arc` of the
/// list it started with and never blocks a registration (or the other way round).
struct ModelReceivers<M> {
    pre_save: Vec<Receiver<SaveEvent<M>>>,
    post_save: Vec<Receiver<SaveEvent<M>>>,
    pre_delete: Vec<Receiver<DeleteEvent<M>>>,
    post_delete: Vec<Receiver<DeleteEvent<M>>>,
}

impl<M> Default for ModelReceivers<M> {
    fn default() -> Self {
        Self {
            pre_save: Vec::new(),
            post_save: Vec::new(),
            pre_delete: Vec::new(),
            post_delete: Vec::new(),
        }
    }
}

impl<M> Clone for ModelReceivers<M> {
    fn clone(&self) -> Self {
        Self {
            pre_save: self.pre_save.clone(),
            post_save: self.post_save.clone(),
            pre_delete: self.pre_delete.clone(),
            post_delete: self.post_delete.clone(),
        }
    }
}

impl<M> ModelReceivers<M> {
    fn count(&self, kind: SignalKind) -> usize {
        match kind {
            SignalKind::PreSave => self.pre_save.len(),
            SignalKind::PostSave => self.post_save.len(),
            SignalKind::PreDelete => self.pre_delete.len(),
            SignalKind::PostDelete => self.post_delete.len(),
        }
    }
}

type AnyReceivers = Arc<dyn Any + Send + Sync>;

struct Inner {
    /// `TypeId::of::<M>()` → `Arc<ModelReceivers<M>>`.
    models: RwLock<HashMap<TypeId, AnyReceivers>>,
    counters: [Counters; 4],
}

/// A registry of lifecycle receivers, per model type. A cheap `Clone` (an `Arc`
/// inside); clones share receivers and counters.
///
/// Connect receivers at start-up with [`on_pre_save`](Self::on_pre_save),
/// [`on_post_save`](Self::on_post_save), [`on_pre_delete`](Self::on_pre_delete) and
/// [`on_post_delete`](Self::on_post_delete). The model type is taken from the
/// receiver's argument (`|e: SaveEvent<User>| ...`), or given with a turbofish
/// (`on_post_save::<User, _, _>(...)`). A receiver returns a `Send + 'static` future
/// resolving to `Result<(), BoxError>`; clone what it needs (the cache handle) into it.
///
/// See the [module documentation](self) for the whole picture.
///
/// ```
/// use ormcache::signals::{SaveEvent, Signals};
///
/// #[derive(Clone)]
/// struct User { id: u64 }
///
/// async fn audit(e: SaveEvent<User>) -> Result<(), ormcache::signals::BoxError> {
///     println!("user {} saved", e.instance.id);
///     Ok(())
/// }
///
/// let signals = Signals::new();
/// signals
///     .on_post_save(audit)
///     .on_post_save(|e: SaveEvent<User>| async move {
///         assert!(e.instance.id > 0);
///         Ok(())
///     });
/// assert_eq!(signals.receiver_count::<User>(ormcache::signals::SignalKind::PostSave), 2);
/// ```
#[derive(Clone)]
pub struct Signals {
    inner: Arc<Inner>,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let models = self
            .inner
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Signals")
            .field("models", &models)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Signals {
    /// An empty registry.
    ///
    /// ```
    /// let signals = ormcache::signals::Signals::new();
    /// assert_eq!(signals.stats().failures(), 0);
    /// ```
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                models: RwLock::new(HashMap::new()),
                counters: Default::default(),
            }),
        }
    }

    /// Connects a receiver run before a model of type `M` is saved.
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { email: String }
    ///
    /// let signals = Signals::new();
    /// signals.on_pre_save(|e: SaveEvent<User>| async move {
    ///     println!("saving {}", e.instance.email);
    ///     Ok(())
    /// });
    /// ```
    pub fn on_pre_save<M, F, Fut>(&self, receiver: F) -> &Self
    where
        M: Send + Sync + 'static,
        F: Fn(SaveEvent<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.connect::<M, _>(|r| &mut r.pre_save, erase(receiver))
    }

    /// Connects a receiver run after a model of type `M` was saved (inserted when
    /// `created`, else updated).
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// let signals = Signals::new();
    /// signals.on_post_save::<User, _, _>(|e| async move {
    ///     println!("user {} saved (new: {})", e.instance.id, e.created);
    ///     Ok(())
    /// });
    /// ```
    pub fn on_post_save<M, F, Fut>(&self, receiver: F) -> &Self
    where
        M: Send + Sync + 'static,
        F: Fn(SaveEvent<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.connect::<M, _>(|r| &mut r.post_save, erase(receiver))
    }

    /// Connects a receiver run before a model of type `M` is deleted.
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// let signals = Signals::new();
    /// signals.on_pre_delete(|e: DeleteEvent<User>| async move {
    ///     println!("deleting user {}", e.instance.id);
    ///     Ok(())
    /// });
    /// ```
    pub fn on_pre_delete<M, F, Fut>(&self, receiver: F) -> &Self
    where
        M: Send + Sync + 'static,
        F: Fn(DeleteEvent<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.connect::<M, _>(|r| &mut r.pre_delete, erase(receiver))
    }

    /// Connects a receiver run after a model of type `M` was deleted.
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// let signals = Signals::new();
    /// signals.on_post_delete(|e: DeleteEvent<User>| async move {
    ///     println!("user {} deleted", e.instance.id);
    ///     Ok(())
    /// });
    /// ```
    pub fn on_post_delete<M, F, Fut>(&self, receiver: F) -> &Self
    where
        M: Send + Sync + 'static,
        F: Fn(DeleteEvent<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.connect::<M, _>(|r| &mut r.post_delete, erase(receiver))
    }

    /// How many receivers of `kind` are connected for model type `M`.
    ///
    /// ```
    /// use ormcache::signals::{SignalKind, Signals};
    /// struct User;
    /// assert_eq!(Signals::new().receiver_count::<User>(SignalKind::PostSave), 0);
    /// ```
    pub fn receiver_count<M: Send + Sync + 'static>(&self, kind: SignalKind) -> usize {
        self.receivers::<M>().map_or(0, |r| r.count(kind))
    }

    /// Runs the `pre_save` receivers of `M`, in registration order, each awaited
    /// before the next. Never fails: see [`SendReport`].
    ///
    /// The model is cloned once (into the event's `Arc`) when there are receivers,
    /// not at all when there are none.
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_pre_save(|e: SaveEvent<User>| async move {
    ///     assert!(e.created);
    ///     Ok(())
    /// });
    /// let report = signals.send_pre_save(&User { id: 1 }, true).await;
    /// assert_eq!(report.delivered(), 1);
    /// # });
    /// ```
    pub async fn send_pre_save<M>(&self, instance: &M, created: bool) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.send_save(SignalKind::PreSave, || Arc::new(instance.clone()), created)
            .await
    }

    /// Runs the `post_save` receivers of `M`, in registration order, each awaited
    /// before the next. Never fails: see [`SendReport`].
    ///
    /// ```
    /// use ormcache::signals::{SaveEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_post_save(|e: SaveEvent<User>| async move {
    ///     assert_eq!(e.instance.id, 1);
    ///     Ok(())
    /// });
    /// assert!(signals.send_post_save(&User { id: 1 }, false).await.is_ok());
    /// # });
    /// ```
    pub async fn send_post_save<M>(&self, instance: &M, created: bool) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.send_save(SignalKind::PostSave, || Arc::new(instance.clone()), created)
            .await
    }

    /// Runs the `pre_delete` receivers of `M`, in registration order, each awaited
    /// before the next. Never fails: see [`SendReport`].
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_pre_delete(|_: DeleteEvent<User>| async { Ok(()) });
    /// assert_eq!(signals.send_pre_delete(&User { id: 1 }).await.delivered(), 1);
    /// # });
    /// ```
    pub async fn send_pre_delete<M>(&self, instance: &M) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.send_delete(SignalKind::PreDelete, || Arc::new(instance.clone()))
            .await
    }

    /// Runs the `post_delete` receivers of `M`, in registration order, each awaited
    /// before the next. Never fails: see [`SendReport`].
    ///
    /// ```
    /// use ormcache::signals::{DeleteEvent, Signals};
    /// #[derive(Clone)]
    /// struct User { id: u64 }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.on_post_delete(|_: DeleteEvent<User>| async { Ok(()) });
    /// assert_eq!(signals.send_post_delete(&User { id: 1 }).await.delivered(), 1);
    /// # });
    /// ```
    pub async fn send_post_delete<M>(&self, instance: &M) -> SendReport
    where
        M: Clone + Send + Sync + 'static,
    {
        self.send_delete(SignalKind::PostDelete, || Arc::new(instance.clone()))
            .await
    }

    /// A buffer for the signals of one database transaction: see [`TxSignals`].
    ///
    /// ```
    /// let signals = ormcache::signals::Signals::new();
    /// let tx = signals.transaction();
    /// assert_eq!(tx.pending(), 0);
    /// ```
    pub fn transaction(&self) -> TxSignals {
        TxSignals::new(self.clone())
    }

    /// The counters of every signal kind since the registry was created.
    ///
    /// ```
    /// use ormcache::signals::Signals;
    /// #[derive(Clone)]
    /// struct User;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let signals = Signals::new();
    /// signals.send_post_delete(&User).await; // no receivers: a send, no delivery
    /// let stats = signals.stats();
    /// assert_eq!((stats.post_delete.sends, stats.post_delete.deliveries), (1, 0));
    /// # });
    /// ```
    pub fn stats(&self) -> SignalStats {
        let c = &self.inner.counters;
        SignalStats {
            pre_save: c[SignalKind::PreSave.index()].snapshot(),
            post_save: c[SignalKind::PostSave.index()].snapshot(),
            pre_delete: c[SignalKind::PreDelete.index()].snapshot(),
            post_delete: c[SignalKind::PostDelete.index()].snapshot(),
        }
    }

    /// Whether `self` and `other` are handles of one registry.
    #[cfg_attr(not(feature = "sea-orm"), allow(dead_code))]
    pub(crate) fn same_registry(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn connect<M, E>(
        &self,
        list: impl FnOnce(&mut ModelReceivers<M>) -> &mut Vec<Receiver<E>>,
        receiver: Receiver<E>,
    ) -> &Self
    where
        M: Send + Sync + 'static,
    {
        let mut models = self
            .inner
            .models
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut receivers = models
            .get(&TypeId::of::<M>())
            .and_then(|r| r.downcast_ref::<ModelReceivers<M>>())
            .cloned()
            .unwrap_or_default();
        list(&mut receivers).push(receiver);
        models.insert(TypeId::of::<M>(), Arc::new(receivers));
        self
    }

    /// The receivers of `M`, as they are now.
    fn receivers<M: Send + Sync + 'static>(&self) -> Option<Arc<ModelReceivers<M>>> {
        let any = self
            .inner
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&TypeId::of::<M>())
            .cloned()?;
        any.downcast::<ModelReceivers<M>>().ok()
    }

    fn counters(&self, kind: SignalKind) -> &Counters {
        &self.inner.counters[kind.index()]
    }

    /// Sends a save event; `instance` is called only when there are receivers.
    async fn send_save<M>(
        &self,
        kind: SignalKind,
        instance: impl FnOnce() -> Arc<M>,
        created: bool,
    ) -> SendReport
    where
        M: Send + Sync + 'static,
    {
        self.counters(kind).sends.fetch_add(1, Relaxed);
        let Some(receivers) = self.receivers::<M>() else {
            return SendReport::default();
        };
        let list = save_list(&receivers, kind);
        if list.is_empty() {
            return SendReport::default();
        }
        let event = SaveEvent {
            instance: instance(),
            created,
        };
        self.run::<M, _>(kind, list, &event).await
    }

    /// Sends a delete event; `instance` is called only when there are receivers.
    async fn send_delete<M>(
        &self,
        kind: SignalKind,
        instance: impl FnOnce() -> Arc<M>,
    ) -> SendReport
    where
        M: Send + Sync + 'static,
    {
        self.counters(kind).sends.fetch_add(1, Relaxed);
        let Some(receivers) = self.receivers::<M>() else {
            return SendReport::default();
        };
        let list = delete_list(&receivers, kind);
        if list.is_empty() {
            return SendReport::default();
        }
        let event = DeleteEvent {
            instance: instance(),
        };
        self.run::<M, _>(kind, list, &event).await
    }

    /// Runs `receivers` one after the other with a clone of `event` each; logs and
    /// counts failures and panics, never propagates them.
    async fn run<M, E: Clone>(
        &self,
        kind: SignalKind,
        receivers: &[Receiver<E>],
        event: &E,
    ) -> SendReport {
        let counters = self.counters(kind);
        let mut report = SendReport::default();
        for (index, receiver) in receivers.iter().enumerate() {
            counters.deliveries.fetch_add(1, Relaxed);
            report.delivered += 1;
            let failure = match call(receiver, event.clone()).await {
                Ok(()) => continue,
                Err(failure) => failure,
            };
            counters.failures.fetch_add(1, Relaxed);
            report.failed += 1;
            tracing::warn!(
                signal = %kind,
                model = type_name::<M>(),
                receiver = index,
                receiver_name = receiver.name,
                error = %failure,
                "signal receiver failed; the database call is not failed",
            );
        }
        report
    }
}

/// Why a receiver failed.
enum Failure {
    Error(BoxError),
    Panic(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => write!(f, "{e}"),
            Self::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Calls one receiver and awaits its future, turning a panic (in the call or in any
/// poll) into a [`Failure`]: a broken receiver must not unwind through the code that
/// has just written the database.
async fn call<E>(receiver: &Receiver<E>, event: E) -> Result<(), Failure> {
    let mut future = match catch_unwind(AssertUnwindSafe(|| (receiver.call)(event))) {
        Ok(future) => future,
        Err(panic) => return Err(Failure::Panic(panic_message(&*panic))),
    };
    let outcome = std::future::poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(message) => Err(Failure::Panic(message)),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn erase<E, F, Fut>(receiver: F) -> Receiver<E>
where
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    Receiver {
        name: type_name::<F>(),
        call: Arc::new(move |event| Box::pin(receiver(event)) as ReceiverFuture),
    }
}

fn save_list<M>(receivers: &ModelReceivers<M>, kind: SignalKind) -> &[Receiver<SaveEvent<M>>] {
    match kind {
        SignalKind::PreSave => &receivers.pre_save,
        SignalKind::PostSave => &receivers.post_save,
        SignalKind::PreDelete | SignalKind::PostDelete => &[],
    }
}

fn delete_list<M>(receivers: &ModelReceivers<M>, kind: SignalKind) -> &[Receiver<DeleteEvent<M>>] {
    match kind {
        SignalKind::PreDelete => &receivers.pre_delete,
        SignalKind::PostDelete => &receivers.post_delete,
        SignalKind::PreSave | SignalKind::PostSave => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct User;

    #[test]
    fn handles_are_send_sync_clone() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Signals>();
        check::<TxSignals>();
        check::<SaveEvent<User>>();
        let s = Signals::new();
        let tx = s.transaction();
        fn is_send<F: Send>(_: &F) {}
        is_send(&async move { s.send_post_save(&User, true).await });
        is_send(&async move {
            tx.send_post_delete(&User).await;
            tx.committed().await
        });
    }

    #[tokio::test]
    async fn panicking_receiver_is_a_counted_failure() {
        let signals = Signals::new();
        signals.on_post_save(|_: SaveEvent<User>| async { panic!("in the future") });
        signals.on_post_save(
            |_: SaveEvent<User>| -> std::future::Ready<Result<(), BoxError>> {
                panic!("in the call")
            },
        );
        signals.on_post_save(|_: SaveEvent<User>| async { Ok(()) });
        let report = signals.send_post_save(&User, false).await;
        assert_eq!((report.delivered(), report.failed()), (3, 2));
        assert_eq!(signals.stats().post_save.failures, 2);
    }

    #[tokio::test]
    async fn rolled_back_transaction_discards_queue() {
        let signals = Signals::new();
        signals.on_post_delete(|_: DeleteEvent<User>| async { Ok(()) });
        let tx = signals.transaction();
        tx.send_post_delete(&User).await;
        assert_eq!(tx.pending(), 1);
        drop(tx);
        assert_eq!(signals.stats().post_delete.deliveries, 1);
    }
}
