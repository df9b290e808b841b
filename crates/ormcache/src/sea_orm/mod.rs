//! SeaORM integration (feature `sea-orm`): lifecycle signals from
//! `ActiveModelBehavior`, transaction-aware invalidation, cached entity reads and the
//! tenant filter.
//!
//! - [`signal_hooks!`] is one line in an entity's `impl ActiveModelBehavior`: every
//!   `insert`, `update`, `save` and `delete` of an `ActiveModel` (or `Model`) then
//!   sends `pre_save`, `post_save`, `pre_delete` and `post_delete` through a
//!   [`Signals`](crate::signals::Signals) registry. Receivers' failures never fail
//!   the database call.
//! - [`transaction`] wraps SeaORM's `transaction`: inside it, `post_*` receivers run
//!   at once and again after the commit, and not again after a rollback.
//! - [`EntityCache`] reads an entity by primary key (key `{model}:{id}`) and in pages
//!   (keys `{models}:list:{limit}:{offset}`, tagged `{models}:list`) through the
//!   lease-protected [`get_or_compute`](crate::Cache::get_or_compute), and
//!   [`EntityCache::connect`] invalidates both on every save and delete.
//! - [`tenant_filter`] restricts a query to the current [`tenant`](crate::tenant).
//!
//! Bulk statements (`Entity::insert_many`, `update_many`, `delete_many`, and
//! `Entity::insert(..).exec(..)`) do not run `ActiveModelBehavior` hooks: after one,
//! call [`EntityCache::invalidate_all`] (or [`invalidate`](EntityCache::invalidate)
//! and [`invalidate_lists`](EntityCache::invalidate_lists)).
//!
//! Inside this module the SeaORM crate is `::sea_orm`.
//!
//! ```
//! use std::sync::LazyLock;
//! use std::time::Duration;
//! use ormcache::signals::Signals;
//! use ormcache::sea_orm::EntityCache;
//! use ormcache::QueryCache;
//! use sea_orm::{ActiveModelTrait, ActiveValue::Set, Database};
//!
//! static SIGNALS: LazyLock<Signals> = LazyLock::new(Signals::new);
//!
//! mod user {
//!     use sea_orm::entity::prelude::*;
//!
//!     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
//!     #[sea_orm(table_name = "users")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         pub name: String,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {
//!         ormcache::sea_orm::signal_hooks!(&super::SIGNALS);
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::connect("sqlite::memory:").await?;
//! # sea_orm::ConnectionTrait::execute_unprepared(&db, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)").await?;
//! let cache = QueryCache::new(10_000, Duration::from_secs(60))?;
//! let users = EntityCache::<user::Entity, _>::new(cache, "user", "users").ttl(Duration::from_secs(300));
//! users.connect(&SIGNALS);
//!
//! let ann = user::ActiveModel { name: Set("Ann".into()), ..Default::default() }.insert(&db).await?;
//! let read = users.find_by_id(&db, ann.id).await?; // the database, then cached at user:{id}
//! assert!(!read.from_cache);
//! let again = users.find_by_id(&db, ann.id).await?; // the cache
//! assert!(again.from_cache);
//!
//! let mut edit: user::ActiveModel = ann.into();
//! edit.name = Set("Anne".into());
//! let anne = edit.update(&db).await?; // post_save: user:{id} and every users:list page dropped
//! let fresh = users.find_by_id(&db, anne.id).await?;
//! assert_eq!((fresh.value, fresh.from_cache), (Some(anne), false));
//! # Ok(()) }
//! # fn main() {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! # }
//! ```

mod entity;
mod error;
mod filter;
mod hooks;
mod key;

/// SeaORM's transaction error, returned by [`transaction`]: `Connection` when
/// `BEGIN`/`COMMIT` failed, `Transaction` with the closure's error (rolled back).
pub use ::sea_orm::TransactionError;
pub use entity::{EntityCache, Fetched};
pub use error::DbError;
pub use filter::tenant_filter;
pub use hooks::{after_delete, after_save, before_delete, before_save, transaction};

#[doc(inline)]
pub use crate::__ormcache_sea_orm_signal_hooks as signal_hooks;

#[doc(hidden)]
pub mod __private {
    //! What [`signal_hooks!`](super::signal_hooks) expands to; not a public API.
    pub use super::hooks::{
        HookFuture, ModelOf, after_delete, after_save, before_delete, before_save, registry,
    };
    pub use ::sea_orm;
    pub use std::boxed::Box;
}
