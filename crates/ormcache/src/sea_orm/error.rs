//! [`DbError`]: what a cached entity read returns on failure.

use std::fmt;
use std::sync::Arc;

use ::sea_orm::DbErr;

use crate::error::Error;
use crate::memo::ComputeError;

/// The error of [`EntityCache`](super::EntityCache) reads: the database failed (the
/// SeaORM error, shared by every caller that waited on the same load), or the cache
/// refused the call as invalid input (an id that cannot be a key, a zero TTL).
///
/// Redis failures are never reported here: reads fail open and go to the database.
///
/// ```
/// use ormcache::sea_orm::DbError;
/// let err = DbError::from(sea_orm::DbErr::Custom("no such table: users".into()));
/// assert!(err.db_err().is_some());
/// assert_eq!(err.to_string(), "database error: Custom Error: no such table: users");
/// ```
#[derive(Clone)]
pub struct DbError {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Db(Arc<DbErr>),
    Cache(Error),
}

impl DbError {
    /// The SeaORM error, if the database failed.
    ///
    /// ```
    /// use ormcache::sea_orm::DbError;
    /// let err = DbError::from(sea_orm::DbErr::RecordNotFound("user 7".into()));
    /// assert!(matches!(err.db_err(), Some(sea_orm::DbErr::RecordNotFound(_))));
    /// assert!(err.cache_err().is_none());
    /// ```
    pub fn db_err(&self) -> Option<&DbErr> {
        match &self.repr {
            Repr::Db(e) => Some(e),
            Repr::Cache(_) => None,
        }
    }

    /// The cache's error, if the call was refused as invalid input.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ormcache::{ErrorKind, QueryCache, sea_orm::DbError};
    /// let cache = QueryCache::new(10, Duration::from_secs(60)).unwrap();
    /// let err = DbError::from(cache.set_sync("", 1u8, None).unwrap_err());
    /// assert_eq!(err.cache_err().map(|e| e.kind()), Some(ErrorKind::InvalidInput));
    /// ```
    pub fn cache_err(&self) -> Option<&Error> {
        match &self.repr {
            Repr::Db(_) => None,
            Repr::Cache(e) => Some(e),
        }
    }
}

impl From<DbErr> for DbError {
    fn from(e: DbErr) -> Self {
        Self {
            repr: Repr::Db(Arc::new(e)),
        }
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        Self {
            repr: Repr::Cache(e),
        }
    }
}

impl From<ComputeError<DbErr>> for DbError {
    fn from(e: ComputeError<DbErr>) -> Self {
        let repr = match e {
            ComputeError::Load(e) => Repr::Db(e),
            ComputeError::Cache(e) => Repr::Cache(e),
        };
        Self { repr }
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Db(e) => f.debug_tuple("DbError::Db").field(e).finish(),
            Repr::Cache(e) => f.debug_tuple("DbError::Cache").field(e).finish(),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Db(e) => write!(f, "database error: {e}"),
            Repr::Cache(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Db(e) => Some(&**e),
            Repr::Cache(e) => Some(e),
        }
    }
}
