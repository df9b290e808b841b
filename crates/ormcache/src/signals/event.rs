//! The signal kinds and the events receivers get.

use std::fmt;
use std::sync::Arc;

/// Which lifecycle signal.
///
/// ```
/// use ormcache::signals::SignalKind;
/// assert_eq!(SignalKind::PostSave.to_string(), "post_save");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// Before a row is inserted or updated.
    PreSave,
    /// After a row was inserted or updated.
    PostSave,
    /// Before a row is deleted.
    PreDelete,
    /// After a row was deleted.
    PostDelete,
}

impl SignalKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::PreSave => "pre_save",
            Self::PostSave => "post_save",
            Self::PreDelete => "pre_delete",
            Self::PostDelete => "post_delete",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Self::PreSave => 0,
            Self::PostSave => 1,
            Self::PreDelete => 2,
            Self::PostDelete => 3,
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `pre_save` and `post_save` receivers get: the model and whether the save
/// inserts a new row (`created`; in `pre_save`, whether it is about to).
///
/// The instance is shared (`Arc`): each receiver gets its own clone of the event and
/// can move it into its future.
///
/// ```
/// use ormcache::signals::{SaveEvent, Signals};
///
/// #[derive(Clone)]
/// struct Product { sku: String }
///
/// let signals = Signals::new();
/// signals.on_post_save(|e: SaveEvent<Product>| async move {
///     if e.created {
///         println!("new product {}", e.instance.sku);
///     }
///     Ok(())
/// });
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub struct SaveEvent<M> {
    /// The saved (or about to be saved) model.
    pub instance: Arc<M>,
    /// Whether the save inserts a new row rather than updating one.
    pub created: bool,
}

impl<M> Clone for SaveEvent<M> {
    fn clone(&self) -> Self {
        Self {
            instance: Arc::clone(&self.instance),
            created: self.created,
        }
    }
}

/// What `pre_delete` and `post_delete` receivers get: the model being (or just)
/// deleted.
///
/// ```
/// use ormcache::signals::{DeleteEvent, Signals};
///
/// #[derive(Clone)]
/// struct Product { sku: String }
///
/// let signals = Signals::new();
/// signals.on_post_delete(|e: DeleteEvent<Product>| async move {
///     println!("product {} is gone", e.instance.sku);
///     Ok(())
/// });
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub struct DeleteEvent<M> {
    /// The deleted (or about to be deleted) model.
    pub instance: Arc<M>,
}

impl<M> Clone for DeleteEvent<M> {
    fn clone(&self) -> Self {
        Self {
            instance: Arc::clone(&self.instance),
        }
    }
}
