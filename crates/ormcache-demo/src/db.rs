//! The database: connection, tables, warm-up.

use std::collections::BTreeMap;
use std::time::Duration;

use ormcache::sea_orm::EntityCache;
use ormcache::tenant::{self, TenantId};
use ormcache::{AnyCache, Cache};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, QueryOrder,
    QuerySelect, Schema,
};

use crate::config::scheme;
use crate::entities::{product, user};

/// How many users the cache is warmed with at start.
pub(crate) const WARM_USERS: u64 = 100;

/// How long a SQLite statement waits for a lock held by another process (another
/// demo instance on the same file) before it fails with "database is locked".
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url` (SQLite or PostgreSQL).
///
/// SQLite is opened for a service's load rather than with the library defaults (a
/// rollback journal and `synchronous=FULL`: every commit waits for several `fsync`s
/// while readers wait for the commit):
/// - `journal_mode=WAL`: readers never wait for a writer, a commit appends to the log;
/// - `synchronous=NORMAL`: a commit does not `fsync` (the log is synced at
///   checkpoints); a power loss can undo the last commits but never corrupts the
///   file (<https://www.sqlite.org/wal.html#performance_considerations>);
/// - `busy_timeout` [`SQLITE_BUSY_TIMEOUT`], for other processes on the same file;
/// - one connection: SQLite has one writer at a time anyway, and with one
///   connection this process's writers queue in the pool instead of spinning in
///   SQLite's busy handler (which sleeps in steps of up to 100 ms); with WAL and no
///   `fsync` a statement takes microseconds, so reads queue behind little. The
///   connection is not pinged before each use (it is a local file).
pub(crate) async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options.sqlx_logging(false);
    if scheme(url) == "sqlite" {
        options
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
            });
    }
    let db = Database::connect(options).await?;
    tracing::info!(database = scheme(url), "database connected");
    Ok(db)
}

/// Creates the `users` and `products` tables if they do not exist.
pub(crate) async fn create_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    db.execute(
        schema
            .create_table_from_entity(user::Entity)
            .if_not_exists(),
    )
    .await?;
    db.execute(
        schema
            .create_table_from_entity(product::Entity)
            .if_not_exists(),
    )
    .await?;
    Ok(())
}

/// Caches the [`WARM_USERS`] most recent users at `user:{id}` (the entity cache's
/// key), each in its tenant's namespace, exactly as `GET /users/{id}` would. Returns
/// how many were cached; cache errors are logged, not returned (the cache is an
/// optimisation).
pub(crate) async fn warm_users(
    db: &DatabaseConnection,
    users: &EntityCache<user::Entity, AnyCache>,
) -> Result<usize, DbErr> {
    let cache = users.cache();
    let recent = user::Entity::find()
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id)
        .limit(WARM_USERS)
        .all(db)
        .await?;
    let mut by_tenant: BTreeMap<Option<String>, Vec<(String, Option<user::Model>)>> =
        BTreeMap::new();
    for u in recent {
        match users.id_key(u.id) {
            Ok(key) => by_tenant
                .entry(u.tenant_id.clone())
                .or_default()
                .push((key, Some(u))),
            Err(e) => tracing::warn!(error = %e, "cache warm-up skipped user {}", u.id),
        }
    }
    let mut cached = 0;
    for (tenant_id, entries) in by_tenant {
        let n = entries.len();
        let result = match tenant_id.as_deref().map(TenantId::new) {
            None => cache.set_many(entries, None).await,
            Some(Ok(t)) => tenant::scope(t, cache.set_many(entries, None)).await,
            Some(Err(e)) => Err(e),
        };
        match result {
            Ok(()) => cached += n,
            Err(e) => tracing::warn!(error = %e, "cache warm-up skipped {n} users"),
        }
    }
    Ok(cached)
}
