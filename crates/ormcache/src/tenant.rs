//! Multi-tenancy: a task-scoped current tenant that isolates cache keys (DESIGN.md
//! contract 1), the seed's `set_current_tenant(id)`.
//!
//! Inside [`scope`], every cache call stores and finds its keys in the tenant's
//! namespace, `{prefix}:__oc:t:{tenant}:{key}`; tags, leases, the namespace token and
//! clears are per tenant too. No tenant can read, write or clear another's keys, and
//! an unscoped `clear`/`clear_pattern` never touches any tenant's keys (use
//! [`clear_tenant`] for one tenant). Tenant ids are validated, so an id cannot
//! smuggle a separator or a glob character into the namespace.
//!
//! The tenant is resolved when a call is made. tokio task-locals do not follow
//! `tokio::spawn`: use [`spawn`] to keep the tenant in a new task.
//!
//! ```
//! use std::time::Duration;
//! use ormcache::{Cache, QueryCache, tenant::{self, TenantId}};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
//! let acme = TenantId::new("acme").unwrap();
//! tenant::scope(acme.clone(), async {
//!     Cache::set(&cache, "products:all", vec!["anvil".to_string()], None).await.unwrap();
//! })
//! .await;
//! // Outside the scope (or in another tenant's) the key does not exist.
//! assert_eq!(Cache::get::<Vec<String>>(&cache, "products:all").await.unwrap(), None);
//! let again = tenant::scope(acme, async { Cache::get::<Vec<String>>(&cache, "products:all").await }).await;
//! assert_eq!(again.unwrap().unwrap().len(), 1);
//! # });
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Release},
};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::key::RESERVED_NAMESPACE;

tokio::task_local! {
    static CURRENT: TenantId;
}

/// Whether any tenant scope was ever entered in this process: until then every
/// key is unscoped, and the L1 hit path skips the task-local lookup (one load).
static SCOPED: AtomicBool = AtomicBool::new(false);

/// The longest tenant id accepted.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A validated tenant id: 1 to 64 ASCII letters, digits, `_` or `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for an empty or too long id,
    /// or one with a character other than ASCII letters, digits, `_` and `-`.
    ///
    /// ```
    /// use ormcache::tenant::TenantId;
    /// assert!(TenantId::new("acme-42").is_ok());
    /// assert!(TenantId::new("acme:*").is_err());
    /// assert!(TenantId::new("").is_err());
    /// ```
    pub fn new(id: &str) -> Result<Self> {
        if id.is_empty() || id.len() > MAX_TENANT_ID_LEN {
            return Err(Error::invalid(
                "tenant",
                format!("tenant id must be 1 to {MAX_TENANT_ID_LEN} characters"),
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(Error::invalid(
                "tenant",
                format!(
                    "tenant id contains {c:?}: only ASCII letters, digits, '_' and '-' are allowed"
                ),
            ));
        }
        Ok(Self(id.into()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TenantId").field(&&*self.0).finish()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TenantId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Runs `future` with `tenant` as the current tenant.
pub fn scope<F: Future>(tenant: TenantId, future: F) -> impl Future<Output = F::Output> {
    SCOPED.store(true, Release);
    CURRENT.scope(tenant, future)
}

/// Runs `f` with `tenant` as the current tenant (synchronous code).
pub fn sync_scope<R>(tenant: TenantId, f: impl FnOnce() -> R) -> R {
    SCOPED.store(true, Release);
    CURRENT.sync_scope(tenant, f)
}

/// The current tenant, if any.
pub fn current() -> Option<TenantId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `tokio::spawn` that keeps the current tenant in the new task.
///
/// ```
/// use ormcache::tenant::{self, TenantId};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let seen = tenant::scope(TenantId::new("acme").unwrap(), async {
///     tenant::spawn(async { tenant::current() }).await.unwrap()
/// })
/// .await;
/// assert_eq!(seen.unwrap().as_str(), "acme");
/// # });
/// ```
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(t) => tokio::spawn(CURRENT.scope(t, future)),
        None => tokio::spawn(future),
    }
}

/// Removes every entry of `tenant` (and only those).
///
/// # Errors
/// As the cache's `clear`.
pub async fn clear_tenant<C: Cache>(cache: &C, tenant: TenantId) -> Result<u64> {
    scope(tenant, cache.clear()).await
}

/// The key namespace of a tenant: `__oc:t:{tenant}:`.
pub(crate) fn namespace(tenant: &TenantId) -> String {
    format!("{RESERVED_NAMESPACE}:t:{tenant}:")
}

/// The current tenant's namespace, if any.
pub(crate) fn current_namespace() -> Option<String> {
    if !SCOPED.load(Acquire) {
        return None;
    }
    CURRENT.try_with(namespace).ok()
}

/// `name` as stored: in the current tenant's namespace, if any.
#[inline]
pub(crate) fn physical(name: &str) -> Cow<'_, str> {
    if !SCOPED.load(Acquire) {
        return Cow::Borrowed(name);
    }
    match current_namespace() {
        Some(ns) => Cow::Owned(format!("{ns}{name}")),
        None => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in ["a", "acme", "ACME_2", "x-y", &"a".repeat(64)] {
            TenantId::new(ok).unwrap();
        }
        for bad in [
            "",
            "a:b",
            "a*",
            "a b",
            "é",
            "a\n",
            "__oc:t:x",
            &"a".repeat(65),
            "a/b",
            "[x]",
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn physical_names_follow_the_scope() {
        assert_eq!(physical("k"), "k");
        let t = TenantId::new("acme").unwrap();
        let inside = scope(t, async { physical("k").into_owned() }).await;
        assert_eq!(inside, "__oc:t:acme:k");
        assert_eq!(physical("k"), "k");
    }
}
