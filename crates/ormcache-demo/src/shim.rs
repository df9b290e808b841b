//! INTERIM local equivalents of the pinned `ormcache::sea_orm` items that its branch
//! had not yet merged when this was written. Same names and shapes
//! as the pinned interfaces; replaced by the real ones on merge.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use ormcache::signals::{DeleteEvent, SaveEvent, Signals};
use ormcache::tenant;
use ormcache::{Cache, ComputeError, ComputeOptions};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter,
    QueryOrder, QuerySelect, Select,
};

/// A value and whether it came from the cache.
#[derive(Debug, Clone)]
pub(crate) struct Fetched<T> {
    pub(crate) value: T,
    pub(crate) from_cache: bool,
}

/// A database (or cache input) error of a cached read.
#[derive(Debug)]
pub(crate) enum DbError {
    Db(std::sync::Arc<sea_orm::DbErr>),
    Cache(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Db(e) => write!(f, "database: {e}"),
            Self::Cache(e) => write!(f, "cache: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<ComputeError<sea_orm::DbErr>> for DbError {
    fn from(e: ComputeError<sea_orm::DbErr>) -> Self {
        match e {
            ComputeError::Load(e) => Self::Db(e),
            ComputeError::Cache(e) => Self::Cache(e.to_string()),
            _ => Self::Cache("unknown compute error".to_owned()),
        }
    }
}

/// The id of a row, for cache keys.
pub(crate) trait Identified {
    fn id(&self) -> i64;
}

/// `column = <current tenant>`, or `column IS NULL` outside any tenant scope.
pub(crate) fn tenant_filter<E: EntityTrait>(select: Select<E>, column: E::Column) -> Select<E> {
    match tenant::current() {
        Some(t) => select.filter(column.eq(t.as_str())),
        None => select.filter(column.is_null()),
    }
}

/// Cached reads of one entity: `{model}:{id}` (plain layout) and
/// `{models}:list:{limit}:{offset}` tagged `{models}:list`.
pub(crate) struct EntityCache<E: EntityTrait, C: Cache> {
    cache: C,
    model: &'static str,
    plural: &'static str,
    ttl: Option<Duration>,
    tenant_column: Option<E::Column>,
    _entity: PhantomData<fn() -> E>,
}

impl<E: EntityTrait, C: Cache> Clone for EntityCache<E, C> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            model: self.model,
            plural: self.plural,
            ttl: self.ttl,
            tenant_column: self.tenant_column,
            _entity: PhantomData,
        }
    }
}

impl<E: EntityTrait, C: Cache> fmt::Debug for EntityCache<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityCache")
            .field("model", &self.model)
            .finish()
    }
}

impl<E, C> EntityCache<E, C>
where
    E: EntityTrait,
    E::Model: ormcache::CacheValue + Identified + Clone,
    C: Cache,
{
    pub(crate) fn new(cache: C, model: &'static str, plural: &'static str) -> Self {
        Self {
            cache,
            model,
            plural,
            ttl: None,
            tenant_column: None,
            _entity: PhantomData,
        }
    }

    pub(crate) fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub(crate) fn tenant_column(mut self, column: E::Column) -> Self {
        self.tenant_column = Some(column);
        self
    }

    fn scoped(&self, select: Select<E>) -> Select<E> {
        match self.tenant_column {
            Some(c) => tenant_filter(select, c),
            None => select,
        }
    }

    pub(crate) async fn find_by_id(
        &self,
        db: &DatabaseConnection,
        id: i64,
    ) -> Result<Fetched<Option<E::Model>>, DbError>
    where
        <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: From<i64>,
    {
        let ran = Arc::new(AtomicBool::new(false));
        let key = format!("{}:{id}", self.model);
        let (select, db, flag) = (self.scoped(E::find_by_id(id)), db.clone(), ran.clone());
        let value = self
            .cache
            .try_get_or_compute(&key, self.ttl, move || async move {
                flag.store(true, Relaxed);
                select.one(&db).await
            })
            .await?;
        Ok(Fetched {
            value: (*value).clone(),
            from_cache: !ran.load(Relaxed),
        })
    }

    pub(crate) async fn list(
        &self,
        db: &DatabaseConnection,
        limit: u64,
        offset: u64,
    ) -> Result<Fetched<Vec<E::Model>>, DbError> {
        let ran = Arc::new(AtomicBool::new(false));
        let key = format!("{}:list:{limit}:{offset}", self.plural);
        let options = ComputeOptions::new()
            .ttl_opt(self.ttl)
            .tags([format!("{}:list", self.plural)]);
        let mut select = self.scoped(E::find());
        for pk in E::PrimaryKey::iter() {
            select = select.order_by_asc(pk.into_column());
        }
        let select = select.limit(limit).offset(offset);
        let (db, flag) = (db.clone(), ran.clone());
        let value = self
            .cache
            .try_get_or_compute_with(&key, options, move || async move {
                flag.store(true, Relaxed);
                select.all(&db).await
            })
            .await?;
        Ok(Fetched {
            value: (*value).clone(),
            from_cache: !ran.load(Relaxed),
        })
    }

    pub(crate) async fn invalidate(&self, id: i64) -> ormcache::Result<()> {
        self.cache.delete(&format!("{}:{id}", self.model)).await?;
        Ok(())
    }

    pub(crate) async fn invalidate_lists(&self) -> ormcache::Result<()> {
        self.cache
            .invalidate_tag(&format!("{}:list", self.plural))
            .await
    }

    /// Drops the row's entry and every list page. Both are tried even when the
    /// first fails (Redis down): the local copies go either way.
    async fn invalidate_row(&self, id: i64) -> Result<(), ormcache::signals::BoxError> {
        let row = self.invalidate(id).await;
        let lists = self.invalidate_lists().await;
        row?;
        lists?;
        Ok(())
    }

    pub(crate) fn connect(&self, signals: &Signals)
    where
        E::Model: Send + Sync + 'static,
    {
        let this = self.clone();
        signals.on_post_save(move |e: SaveEvent<E::Model>| {
            let this = this.clone();
            async move { this.invalidate_row(e.instance.id()).await }
        });
        let this = self.clone();
        signals.on_post_delete(move |e: DeleteEvent<E::Model>| {
            let this = this.clone();
            async move { this.invalidate_row(e.instance.id()).await }
        });
    }
}
