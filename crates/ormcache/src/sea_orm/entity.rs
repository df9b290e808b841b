//! [`EntityCache`]: cached reads of one entity, by primary key and in pages, and the
//! receivers that invalidate them.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::sea_orm::sea_query::ValueTuple;
use ::sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Iterable, ModelTrait, PrimaryKeyToColumn,
    PrimaryKeyTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::cache::{Cache, CacheValue};
use crate::error::Result;
use crate::glob::escape_glob;
use crate::memo::ComputeOptions;
use crate::signals::{BoxError, DeleteEvent, SaveEvent, Signals};
use crate::tenant::{self, TenantId};

use super::DbError;
use super::filter::{tenant_filter, tenant_of};
use super::key::id_key;

/// How long a missing row is cached by default (see [`EntityCache::not_found_ttl`]).
const DEFAULT_NOT_FOUND_TTL: Duration = Duration::from_secs(5);

/// A read result and where it came from.
///
/// ```
/// use ormcache::sea_orm::Fetched;
/// fn x_cache<T>(f: &Fetched<T>) -> &'static str {
///     if f.from_cache { "HIT" } else { "MISS" }
/// }
/// # let _ = x_cache::<()>;
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<T> {
    /// The value read.
    pub value: T,
    /// `false` when this call ran the database query, `true` when the value came from
    /// the cache (or from a concurrent call's query, which this call waited for).
    pub from_cache: bool,
}

impl<T> Fetched<T> {
    /// Applies `f` to the value, keeping where it came from.
    ///
    /// ```
    /// # use ormcache::sea_orm::Fetched;
    /// # fn demo(users: Fetched<Vec<String>>) {
    /// let count = users.map(|v| v.len());
    /// # let _ = count; }
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fetched<U> {
        Fetched {
            value: f(self.value),
            from_cache: self.from_cache,
        }
    }
}

/// Cached reads of one SeaORM entity `E` through any [`Cache`] `C`.
///
/// - [`find_by_id`](Self::find_by_id) reads one row at key `{model}:{id}` in the
///   **plain** layout: the `Model`'s serde JSON, no envelope (with
///   [`Codec::Json`](crate::Codec::Json), what the Python package writes and reads).
///   A missing row is cached as JSON `null` for [`not_found_ttl`](Self::not_found_ttl)
///   (5 s by default, never longer than the TTL), so that looking up an id that does
///   not exist does not reach the database on every call, while a row inserted by a
///   statement that skips the hooks shows up within seconds.
/// - [`list`](Self::list) reads a page at `{models}:list:{limit}:{offset}` (rows in
///   primary key order), tagged `{models}:list`: [`invalidate_lists`](Self::invalidate_lists)
///   drops every page in O(1).
/// - Both go through the lease-protected [`get_or_compute`](Cache::get_or_compute):
///   concurrent misses run one query, and a row read before a concurrent save is
///   returned to its caller but never stored after that save's invalidation. They
///   fail open: with Redis down, they read the database.
/// - [`connect`](Self::connect) registers `post_save`/`post_delete` receivers (fed by
///   [`signal_hooks!`](super::signal_hooks)) that drop `{model}:{id}` and every page.
/// - [`tenant_column`](Self::tenant_column) restricts rows to the current tenant
///   ([`tenant_filter`]); inside [`tenant::scope`] the keys are the tenant's too.
///
/// Entries are keyed by the primary key's values: integers and strings as they are,
/// other types as SeaORM prints them; a composite key joins its parts with `:`.
/// `E::Model` must implement `serde::Serialize` and `Deserialize`. A cheap `Clone`.
///
/// ```no_run
/// # use std::time::Duration;
/// # mod user {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
/// #     #[sea_orm(table_name = "users")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub tenant: Option<String>, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use ormcache::sea_orm::EntityCache;
/// use ormcache::{HybridCache, signals::Signals};
///
/// # async fn demo(cache: HybridCache, signals: Signals, db: sea_orm::DatabaseConnection) -> Result<(), ormcache::sea_orm::DbError> {
/// let users = EntityCache::<user::Entity, _>::new(cache, "user", "users")
///     .ttl(Duration::from_secs(300))
///     .tenant_column(user::Column::Tenant);
/// users.connect(&signals);
///
/// let one = users.find_by_id(&db, 7).await?;            // Fetched<Option<user::Model>>
/// let page = users.list(&db, 20, 0).await?;             // Fetched<Vec<user::Model>>
/// println!("{} {}", one.from_cache, page.value.len());
/// # Ok(()) }
/// ```
pub struct EntityCache<E: EntityTrait, C: Cache> {
    cache: C,
    names: Arc<Names>,
    ttl: Option<Duration>,
    not_found_ttl: Duration,
    tenant_column: Option<E::Column>,
    entity: PhantomData<fn() -> E>,
}

#[derive(Debug)]
struct Names {
    model: String,
    list_tag: String,
}

impl<E: EntityTrait, C: Cache> Clone for EntityCache<E, C> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            names: Arc::clone(&self.names),
            ttl: self.ttl,
            not_found_ttl: self.not_found_ttl,
            tenant_column: self.tenant_column,
            entity: PhantomData,
        }
    }
}

impl<E: EntityTrait, C: Cache> fmt::Debug for EntityCache<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityCache")
            .field("entity", &std::any::type_name::<E>())
            .field("model", &self.names.model)
            .field("list_tag", &self.names.list_tag)
            .field("ttl", &self.ttl)
            .field("not_found_ttl", &self.not_found_ttl)
            .field("tenant_column", &self.tenant_column)
            .finish_non_exhaustive()
    }
}

impl<E, C> EntityCache<E, C>
where
    E: EntityTrait,
    E::Model: CacheValue,
    C: Cache,
{
    /// Cached reads of `E` in `cache`, with keys `{model}:{id}` and
    /// `{models}:list:{limit}:{offset}` (e.g. `"user"`, `"users"`), the cache's
    /// default TTL and no tenant column.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users");
    /// assert_eq!(users.id_key(7).unwrap(), "user:7");
    /// assert_eq!(users.list_key(20, 40), "users:list:20:40");
    /// assert_eq!(users.list_tag(), "users:list");
    /// ```
    #[must_use]
    pub fn new(cache: C, model: &str, models: &str) -> Self {
        Self {
            cache,
            names: Arc::new(Names {
                model: model.to_owned(),
                list_tag: format!("{models}:list"),
            }),
            ttl: None,
            not_found_ttl: DEFAULT_NOT_FOUND_TTL,
            tenant_column: None,
            entity: PhantomData,
        }
    }

    /// The TTL of cached rows and pages (default: the cache's).
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users")
    ///     .ttl(Duration::from_secs(300));
    /// # let _ = users;
    /// ```
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long a missing row stays cached as "not found" (default 5 s; capped at
    /// the TTL). Saves through the hooks drop it at once; this bounds how long a row
    /// inserted by a bulk statement, without [`invalidate`](Self::invalidate), reads
    /// as missing. `Duration::ZERO` keeps no "not found": it is returned but not
    /// stored (concurrent callers of that read still share its query). The "not
    /// found" is written once, with this TTL (no second write to shorten it).
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users")
    ///     .not_found_ttl(Duration::from_secs(1));
    /// # let _ = users;
    /// ```
    #[must_use]
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.not_found_ttl = ttl;
        self
    }

    /// Restricts every read to the rows of the current tenant: `column = <tenant id>`
    /// inside [`tenant::scope`], `column IS NULL` outside (see [`tenant_filter`]). The
    /// column holds the tenant id as text.
    ///
    /// The receivers of [`connect`](Self::connect) then also invalidate in the scope
    /// of the saved row's tenant, so a save made outside that tenant's scope (an
    /// admin task) still reaches the tenant's entries. (A save that moves a row to
    /// another tenant reaches the new tenant's entries, not the old one's: call
    /// [`invalidate`](Self::invalidate) in the old tenant's scope.)
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub tenant: Option<String> }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use std::time::Duration;
    /// let cache = ormcache::QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users")
    ///     .tenant_column(user::Column::Tenant);
    /// # let _ = users;
    /// ```
    #[must_use]
    pub fn tenant_column(mut self, column: E::Column) -> Self {
        self.tenant_column = Some(column);
        self
    }

    /// The cache this reads through.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # let cache = ormcache::QueryCache::new(1_000, std::time::Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users");
    /// users.cache().set_sync("user:motd", "hello".to_string(), None).unwrap();
    /// ```
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The key of the row with primary key `id`: `{model}:{id}`.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) when a part of the key is
    /// NULL.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # let cache = ormcache::QueryCache::new(1_000, std::time::Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users");
    /// assert_eq!(users.id_key(42).unwrap(), "user:42");
    /// ```
    pub fn id_key<I>(&self, id: I) -> Result<String>
    where
        I: Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    {
        id_key(&self.names.model, id.into().into())
    }

    /// The key of a page: `{models}:list:{limit}:{offset}`.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # let cache = ormcache::QueryCache::new(1_000, std::time::Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users");
    /// assert_eq!(users.list_key(10, 0), "users:list:10:0");
    /// ```
    pub fn list_key(&self, limit: u64, offset: u64) -> String {
        format!("{}:{limit}:{offset}", self.names.list_tag)
    }

    /// The tag of every page: `{models}:list`.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # let cache = ormcache::QueryCache::new(1_000, std::time::Duration::from_secs(60)).unwrap();
    /// let users = ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users");
    /// assert_eq!(users.list_tag(), "users:list");
    /// ```
    pub fn list_tag(&self) -> &str {
        &self.names.list_tag
    }

    /// The row with primary key `id` (of the current tenant, with a
    /// [`tenant_column`](Self::tenant_column)), from the cache or the database.
    ///
    /// A miss runs the query once however many callers miss together, stores the
    /// row (or "not found") unless the key was invalidated meanwhile, and returns it.
    ///
    /// `db` is a connection handle the loader can own a clone of (a
    /// `DatabaseConnection`, which is a pool handle). Not a `DatabaseTransaction`, on
    /// purpose: a read inside a transaction sees rows that are not committed, and
    /// the cache must never store those. Read through the transaction directly.
    ///
    /// # Errors
    /// The database's error (never cached); invalid input (a NULL id, a zero TTL).
    /// Cache failures are not errors: the query runs and its row is returned.
    ///
    /// ```no_run
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # async fn demo(users: ormcache::sea_orm::EntityCache<user::Entity, ormcache::HybridCache>, db: sea_orm::DatabaseConnection) -> Result<(), ormcache::sea_orm::DbError> {
    /// let user = users.find_by_id(&db, 7).await?;
    /// let header = if user.from_cache { "HIT" } else { "MISS" };
    /// match user.value {
    ///     Some(u) => println!("{header}: user {}", u.id),
    ///     None => println!("{header}: 404"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn find_by_id<D, I>(
        &self,
        db: &D,
        id: I,
    ) -> std::result::Result<Fetched<Option<E::Model>>, DbError>
    where
        D: ConnectionTrait + Clone + Send + 'static,
        I: Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    {
        let values: ValueTuple = id.into().into();
        let key = id_key(&self.names.model, values.clone())?;
        let mut select = E::find();
        for (pk, value) in E::PrimaryKey::iter().zip(values) {
            select = select.filter(pk.into_column().eq(value));
        }
        let select = self.scoped(select);
        let ran = Arc::new(AtomicBool::new(false));
        let options = ComputeOptions::new()
            .ttl_opt(self.ttl)
            .ttl_for(self.not_found_rule());
        let row = self
            .cache
            .try_get_or_compute_with(&key, options, {
                let (ran, db) = (Arc::clone(&ran), db.clone());
                move || async move {
                    ran.store(true, Ordering::Relaxed);
                    select.one(&db).await
                }
            })
            .await?;
        let ran = ran.load(Ordering::Relaxed);
        Ok(Fetched {
            value: Arc::unwrap_or_clone(row),
            from_cache: !ran,
        })
    }

    /// A page of rows in primary key order (of the current tenant, with a
    /// [`tenant_column`](Self::tenant_column)), from the cache or the database.
    /// Cached at `{models}:list:{limit}:{offset}`, tagged `{models}:list`.
    ///
    /// # Errors
    /// As [`find_by_id`](Self::find_by_id).
    ///
    /// ```no_run
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # async fn demo(users: ormcache::sea_orm::EntityCache<user::Entity, ormcache::HybridCache>, db: sea_orm::DatabaseConnection) -> Result<(), ormcache::sea_orm::DbError> {
    /// let second_page = users.list(&db, 20, 20).await?;
    /// for user in &second_page.value {
    ///     println!("{}", user.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list<D>(
        &self,
        db: &D,
        limit: u64,
        offset: u64,
    ) -> std::result::Result<Fetched<Vec<E::Model>>, DbError>
    where
        D: ConnectionTrait + Clone + Send + 'static,
    {
        let key = self.list_key(limit, offset);
        let mut select = self.scoped(E::find());
        for pk in E::PrimaryKey::iter() {
            select = select.order_by_asc(pk.into_column());
        }
        let select = select.limit(limit).offset(offset);
        let options = ComputeOptions::new()
            .ttl_opt(self.ttl)
            .tags([self.names.list_tag.as_str()]);
        let ran = Arc::new(AtomicBool::new(false));
        let rows = self
            .cache
            .try_get_or_compute_with(&key, options, {
                let (ran, db) = (Arc::clone(&ran), db.clone());
                move || async move {
                    ran.store(true, Ordering::Relaxed);
                    select.all(&db).await
                }
            })
            .await?;
        Ok(Fetched {
            value: Arc::unwrap_or_clone(rows),
            from_cache: !ran.load(Ordering::Relaxed),
        })
    }

    /// Drops the cached row `id` (in the current tenant's scope); whether it was
    /// cached. For updates and deletes that bypass the hooks (`update_many`,
    /// `delete_many`, `delete_by_id`, raw SQL) of known rows; call
    /// [`invalidate_lists`](Self::invalidate_lists) too.
    ///
    /// # Errors
    /// The cache's `delete` errors (see [`Cache`]); a NULL id.
    ///
    /// ```no_run
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use sea_orm::EntityTrait;
    /// # async fn demo(users: ormcache::sea_orm::EntityCache<user::Entity, ormcache::HybridCache>, db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// user::Entity::delete_by_id(7).exec(&db).await?; // no hooks
    /// users.invalidate(7).await?;
    /// users.invalidate_lists().await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate<I>(&self, id: I) -> Result<bool>
    where
        I: Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    {
        let key = self.id_key(id)?;
        self.cache.delete(&key).await
    }

    /// Drops every cached page (in the current tenant's scope), in O(1): one
    /// `invalidate_tag` of `{models}:list`.
    ///
    /// # Errors
    /// The cache's `invalidate_tag` errors.
    ///
    /// ```no_run
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub name: String }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use sea_orm::{ActiveValue::Set, EntityTrait};
    /// # async fn demo(users: ormcache::sea_orm::EntityCache<user::Entity, ormcache::HybridCache>, db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// user::Entity::insert(user::ActiveModel { name: Set("Bo".into()), ..Default::default() }).exec(&db).await?;
    /// users.invalidate_lists().await?; // a new row: no cached row to drop, every page is stale
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_lists(&self) -> Result<()> {
        self.cache.invalidate_tag(&self.names.list_tag).await
    }

    /// Drops every cached row and page of the entity (in the current tenant's
    /// scope): the documented call after a bulk `update_many`/`delete_many`/
    /// `insert_many`, which run no hooks. Rows go with one pattern clear of
    /// `{model}:*` (`SCAN`, proportional to the keyspace), pages with one
    /// `invalidate_tag`. Returns how many rows were dropped.
    ///
    /// # Errors
    /// The cache's `clear_pattern` and `invalidate_tag` errors.
    ///
    /// ```no_run
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub active: bool }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use sea_orm::{EntityTrait, sea_query::Expr};
    /// # async fn demo(users: ormcache::sea_orm::EntityCache<user::Entity, ormcache::HybridCache>, db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// user::Entity::update_many()
    ///     .col_expr(user::Column::Active, Expr::value(false))
    ///     .exec(&db)
    ///     .await?;
    /// users.invalidate_all().await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_all(&self) -> Result<u64> {
        // Pages first: a list read that starts now sees the rows' new state or misses.
        self.invalidate_lists().await?;
        let pattern = format!("{}:*", escape_glob(&self.names.model));
        self.cache.clear_pattern(&pattern).await
    }

    /// Connects the receivers that keep this entity's entries fresh: on `post_save`
    /// (a `Model`) and `post_delete` (a `Model`, or an `ActiveModel` whose primary
    /// key is set) they drop `{model}:{id}` and every page. They run inside the
    /// saving task, so in its tenant scope (and, with a
    /// [`tenant_column`](Self::tenant_column), in the saved row's tenant's too).
    /// A failure (Redis down) is logged and counted by `signals`, never returned to
    /// the code that saved.
    ///
    /// Connect once per registry: each call adds receivers.
    ///
    /// ```
    /// # mod user {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "users")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32 }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use std::time::Duration;
    /// use ormcache::signals::{SignalKind, Signals};
    ///
    /// let cache = ormcache::QueryCache::new(1_000, Duration::from_secs(60)).unwrap();
    /// let signals = Signals::new();
    /// ormcache::sea_orm::EntityCache::<user::Entity, _>::new(cache, "user", "users").connect(&signals);
    /// assert_eq!(signals.receiver_count::<user::Model>(SignalKind::PostSave), 1);
    /// assert_eq!(signals.receiver_count::<user::Model>(SignalKind::PostDelete), 1);
    /// assert_eq!(signals.receiver_count::<user::ActiveModel>(SignalKind::PostDelete), 1);
    /// ```
    pub fn connect(&self, signals: &Signals) -> &Self
    where
        E::Model: Clone,
        E::ActiveModel: Send + Sync + 'static,
    {
        let this = self.clone();
        signals.on_post_save(move |e: SaveEvent<E::Model>| {
            let this = this.clone();
            async move { this.evict_model(&e.instance).await }
        });
        let this = self.clone();
        signals.on_post_delete(move |e: DeleteEvent<E::Model>| {
            let this = this.clone();
            async move { this.evict_model(&e.instance).await }
        });
        let this = self.clone();
        signals.on_post_delete(move |e: DeleteEvent<E::ActiveModel>| {
            let this = this.clone();
            async move { this.evict_active(&e.instance).await }
        });
        self
    }

    fn scoped(&self, select: Select<E>) -> Select<E> {
        match self.tenant_column {
            Some(column) => tenant_filter(select, column),
            None => select,
        }
    }

    /// The TTL of a "not found" (`None` for a row: the row TTL): `not_found_ttl`,
    /// never longer than the row TTL; zero stores nothing.
    fn not_found_rule(&self) -> impl Fn(&Option<E::Model>) -> Option<Duration> + use<E, C> {
        let ttl = self.ttl.unwrap_or_else(|| self.cache.__default_ttl());
        let not_found = self.not_found_ttl;
        move |row| (row.is_none() && not_found < ttl).then_some(not_found)
    }

    async fn evict_model(&self, model: &E::Model) -> std::result::Result<(), BoxError> {
        let key = id_key(&self.names.model, model.get_primary_key_value())?;
        let row_tenant = self.tenant_column.and_then(|c| tenant_of(&model.get(c)));
        self.evict(Some(key), row_tenant).await
    }

    async fn evict_active(&self, model: &E::ActiveModel) -> std::result::Result<(), BoxError> {
        use ::sea_orm::ActiveModelTrait;
        let key = model
            .get_primary_key_value()
            .map(|id| id_key(&self.names.model, id))
            .transpose()?;
        let row_tenant = self
            .tenant_column
            .and_then(|c| model.get(c).into_value())
            .and_then(|v| tenant_of(&v));
        let missing = key.is_none();
        self.evict(key, row_tenant).await?;
        if missing {
            return Err(format!(
                "post_delete of a {} without its primary key: pages dropped, the row's entry cannot be found",
                self.names.model
            )
            .into());
        }
        Ok(())
    }

    /// Drops `key` and the pages in the current scope, and in `row_tenant`'s when it
    /// is another.
    async fn evict(
        &self,
        key: Option<String>,
        row_tenant: Option<TenantId>,
    ) -> std::result::Result<(), BoxError> {
        self.evict_here(key.as_deref()).await?;
        if let Some(t) = row_tenant
            && tenant::current().as_ref() != Some(&t)
        {
            tenant::scope(t, self.evict_here(key.as_deref())).await?;
        }
        Ok(())
    }

    /// Both steps run even if one fails; the row's error is returned first. They run
    /// concurrently (two writes in flight on the multiplexed connection: a save costs
    /// one round trip of latency, not two); each is a whole invalidation of its own,
    /// and both happen after the database write, so their order does not matter.
    async fn evict_here(&self, key: Option<&str>) -> Result<()> {
        let row = async {
            match key {
                Some(key) => self.cache.delete(key).await.map(drop),
                None => Ok(()),
            }
        };
        let (row, pages) = tokio::join!(row, self.invalidate_lists());
        row.and(pages)
    }
}
