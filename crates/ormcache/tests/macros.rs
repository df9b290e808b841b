//! `#[cached]`: keys, skipping, methods, return types, tags, companions, single
//! flight, a Redis-backed cache, and the compile errors (trybuild, `tests/ui`).
#![cfg(feature = "macros")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ormcache::{Cache, DistributedCache, QueryCache, cached};
use serde::{Deserialize, Serialize};
use support::RedisServer;

static CACHE: LazyLock<QueryCache> =
    LazyLock::new(|| QueryCache::new(10_000, Duration::from_secs(60)).unwrap());

fn local() -> QueryCache {
    QueryCache::new(1_000, Duration::from_secs(60)).unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

// ---------------------------------------------------------------------------------
// The default key.

#[cached(cache = CACHE)]
async fn golden(id: u64, name: String) -> String {
    format!("{id}:{name}")
}

#[cached(cache = CACHE, key_prefix = "v1")]
async fn golden_prefixed(id: u64) -> u64 {
    id
}

#[cached(cache = CACHE)]
async fn no_args() -> u32 {
    7
}

/// The default key is `{module path}::{fn}:{XXH3-128 of the MessagePack-encoded
/// argument tuple}`: fixed strings here, so a change in the encoding, the hash or the
/// layout (which would orphan every entry written by running services) fails this
/// test.
#[tokio::test]
async fn default_key_is_stable() {
    assert_eq!(
        golden_cache_key(&42, &"alice".to_string()).as_deref(),
        Some("macros::golden:f3a07a8ca299ce75d2d449dbab6ff0ac")
    );
    assert_eq!(
        golden_prefixed_cache_key(&42).as_deref(),
        Some("v1:macros::golden_prefixed:2e7a2cc2161b552febd1e8d14e44df05")
    );
    assert_eq!(
        no_args_cache_key().as_deref(),
        Some("macros::no_args:80702dc0c878209e05264b395baf644c")
    );

    // The call stores under exactly that key.
    assert_eq!(golden(42, "alice".to_string()).await, "42:alice");
    let stored = Cache::get::<String>(
        &*CACHE,
        &golden_cache_key(&42, &"alice".to_string()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stored.as_deref().map(String::as_str), Some("42:alice"));
    assert_eq!(golden_prefixed(42).await, 42);
    assert_eq!(no_args().await, 7);
    assert!(
        Cache::exists(&*CACHE, &no_args_cache_key().unwrap())
            .await
            .unwrap()
    );
}

// ---------------------------------------------------------------------------------
// Loader runs once; skip.

static ONCE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = CACHE, ttl = 60)]
async fn counted(id: u64) -> User {
    ONCE_CALLS.fetch_add(1, Ordering::SeqCst);
    User {
        id,
        name: format!("user #{id}"),
    }
}

#[tokio::test]
async fn body_runs_once_per_key() {
    for _ in 0..5 {
        assert_eq!(
            counted(1).await,
            User {
                id: 1,
                name: "user #1".into()
            }
        );
    }
    assert_eq!(ONCE_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(counted(2).await.id, 2);
    assert_eq!(ONCE_CALLS.load(Ordering::SeqCst), 2);
}

/// Not serializable: stands for a database connection.
#[derive(Debug)]
struct Db {
    calls: AtomicUsize,
}

#[cached(cache = cache, skip(cache, db))]
async fn with_db(cache: &QueryCache, db: &Db, id: u64) -> u64 {
    db.calls.fetch_add(1, Ordering::SeqCst);
    id * 10
}

#[cached(cache = cache, skip_all)]
async fn skip_everything(cache: &QueryCache, id: u64) -> u64 {
    id
}

#[tokio::test]
async fn skipped_arguments_are_not_in_the_key() {
    let cache = local();
    let (db1, db2) = (
        Db {
            calls: AtomicUsize::new(0),
        },
        Db {
            calls: AtomicUsize::new(0),
        },
    );
    assert_eq!(with_db(&cache, &db1, 3).await, 30);
    assert_eq!(with_db(&cache, &db2, 3).await, 30);
    assert_eq!(
        db1.calls.load(Ordering::SeqCst) + db2.calls.load(Ordering::SeqCst),
        1
    );
    assert_eq!(with_db_cache_key(&3), with_db_cache_key(&3));
    assert_ne!(with_db_cache_key(&3), with_db_cache_key(&4));

    // skip_all: one entry whatever the arguments.
    assert_eq!(skip_everything(&cache, 1).await, 1);
    assert_eq!(skip_everything(&cache, 2).await, 1);
    assert_eq!(
        skip_everything_cache_key(),
        Some("macros::skip_everything:80702dc0c878209e05264b395baf644c".to_string())
    );
}

// ---------------------------------------------------------------------------------
// Methods.

#[derive(Debug)]
struct Repo {
    cache: QueryCache,
    calls: AtomicUsize,
}

impl Repo {
    /// A user by id.
    #[cached(cache = self.cache)]
    async fn user(&self, id: u64) -> User {
        self.calls.fetch_add(1, Ordering::SeqCst);
        User {
            id,
            name: "from repo".into(),
        }
    }

    /// The same name as `Other::user`: their keys differ by type.
    #[cached(cache = self.cache, key = format!("repo:{}:{id}", self.cache.get_stats_sync().max_size))]
    async fn by_key(&self, id: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        id
    }
}

#[derive(Debug)]
struct Other {
    cache: QueryCache,
}

impl Other {
    #[cached(cache = self.cache)]
    async fn user(&self, id: u64) -> User {
        User {
            id,
            name: "from other".into(),
        }
    }
}

#[tokio::test]
async fn methods_with_self() {
    let repo = Repo {
        cache: local(),
        calls: AtomicUsize::new(0),
    };
    assert_eq!(repo.user(1).await.name, "from repo");
    assert_eq!(repo.user(1).await.name, "from repo");
    assert_eq!(repo.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        repo.user_cache_key(&1).unwrap(),
        format!("macros::Repo::user:{}", golden_hash_of_1())
    );

    // Same cache, same method name, same arguments, another type: another entry.
    let other = Other {
        cache: repo.cache.clone(),
    };
    assert_eq!(other.user(1).await.name, "from other");
    assert_ne!(other.user_cache_key(&1), repo.user_cache_key(&1));

    assert_eq!(repo.by_key(5).await, 5);
    assert_eq!(repo.by_key(5).await, 5);
    assert_eq!(repo.calls.load(Ordering::SeqCst), 2);
    assert_eq!(repo.by_key_cache_key(&5).as_deref(), Some("repo:1000:5"));
    assert!(repo.by_key_invalidate(5).await.unwrap());
    assert!(repo.user_invalidate(1).await.unwrap());
    assert!(!repo.user_invalidate(1).await.unwrap());
}

fn golden_hash_of_1() -> String {
    let key = golden_prefixed_cache_key(&1).unwrap();
    key.rsplit(':').next().unwrap().to_string()
}

// ---------------------------------------------------------------------------------
// `key = ...`.

static KEYED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = CACHE, key = format!("user:{id}"))]
async fn keyed(id: u64, verbose: bool) -> String {
    KEYED_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{id}:{verbose}")
}

#[cached(cache = CACHE, key_prefix = "app", key = id)]
async fn keyed_prefixed(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn explicit_key() {
    assert_eq!(keyed(9, true).await, "9:true");
    // `verbose` is not part of the key.
    assert_eq!(keyed(9, false).await, "9:true");
    assert_eq!(KEYED_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(keyed_cache_key(&9, &false).as_deref(), Some("user:9"));
    let stored = Cache::get::<String>(&*CACHE, "user:9").await.unwrap();
    assert_eq!(stored.as_deref().map(String::as_str), Some("9:true"));

    assert_eq!(keyed_prefixed(4).await, 4);
    assert_eq!(keyed_prefixed_cache_key(&4).as_deref(), Some("app:4"));
    assert!(Cache::exists(&*CACHE, "app:4").await.unwrap());
}

// ---------------------------------------------------------------------------------
// Return types.

#[derive(Debug, Clone, PartialEq)]
struct NotFound(u64);

#[derive(Debug, Clone, PartialEq)]
struct AppError(String);

impl From<NotFound> for AppError {
    fn from(e: NotFound) -> Self {
        Self(format!("{} not found", e.0))
    }
}

fn find(id: u64) -> Result<u64, NotFound> {
    if id == 0 { Err(NotFound(id)) } else { Ok(id) }
}

#[cached(cache = cache, skip(cache, calls))]
async fn fallible(cache: &QueryCache, calls: &AtomicUsize, id: u64) -> Result<u64, AppError> {
    calls.fetch_add(1, Ordering::SeqCst);
    let found = find(id)?; // `?` converts through `From`
    Ok(found * 2)
}

#[tokio::test]
async fn result_errors_are_returned_and_not_cached() {
    let (cache, calls) = (local(), AtomicUsize::new(0));
    assert_eq!(
        fallible(&cache, &calls, 0).await,
        Err(AppError("0 not found".into()))
    );
    assert_eq!(
        fallible(&cache, &calls, 0).await,
        Err(AppError("0 not found".into()))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        !Cache::exists(&cache, &fallible_cache_key(&0).unwrap())
            .await
            .unwrap()
    );

    assert_eq!(fallible(&cache, &calls, 4).await, Ok(8));
    assert_eq!(fallible(&cache, &calls, 4).await, Ok(8));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stored = Cache::get::<u64>(&cache, &fallible_cache_key(&4).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&8));
}

#[cached(cache = cache, skip(cache, calls))]
async fn lookup(cache: &QueryCache, calls: &AtomicUsize, id: u64) -> Option<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    (id != 0).then(|| User {
        id,
        name: "found".into(),
    })
}

#[cached(cache = cache, skip(cache, calls), cache_none = true, none_ttl = 30)]
async fn lookup_cache_none(cache: &QueryCache, calls: &AtomicUsize, id: u64) -> Option<User> {
    calls.fetch_add(1, Ordering::SeqCst);
    (id != 0).then(|| User {
        id,
        name: "found".into(),
    })
}

#[tokio::test]
async fn option_with_and_without_cache_none() {
    let (cache, calls) = (local(), AtomicUsize::new(0));
    // Without cache_none: a None is not stored.
    assert_eq!(lookup(&cache, &calls, 0).await, None);
    assert_eq!(lookup(&cache, &calls, 0).await, None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(lookup(&cache, &calls, 1).await.unwrap().id, 1);
    assert_eq!(lookup(&cache, &calls, 1).await.unwrap().id, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // With cache_none: "not found" is cached too, for none_ttl.
    let calls = AtomicUsize::new(0);
    assert_eq!(lookup_cache_none(&cache, &calls, 0).await, None);
    assert_eq!(lookup_cache_none(&cache, &calls, 0).await, None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let key = lookup_cache_none_cache_key(&0).unwrap();
    let ttl = Cache::ttl(&cache, &key).await.unwrap().remaining().unwrap();
    assert!(ttl <= Duration::from_secs(30), "{ttl:?}");
    assert_eq!(lookup_cache_none(&cache, &calls, 2).await.unwrap().id, 2);
    assert_eq!(lookup_cache_none(&cache, &calls, 2).await.unwrap().id, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------
// Tags, options, invalidation.

#[cached(cache = cache, skip(cache, calls), tags = ["users", format!("user:{id}")], ttl = Duration::from_secs(120), early_refresh, lock)]
async fn tagged(cache: &QueryCache, calls: &AtomicUsize, id: u64) -> u64 {
    calls.fetch_add(1, Ordering::SeqCst);
    id
}

#[tokio::test]
async fn tags_and_invalidate_tag() {
    let (cache, calls) = (local(), AtomicUsize::new(0));
    assert_eq!(tagged(&cache, &calls, 1).await, 1);
    assert_eq!(tagged(&cache, &calls, 2).await, 2);
    assert_eq!(tagged(&cache, &calls, 1).await, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let ttl = Cache::ttl(&cache, &tagged_cache_key(&1).unwrap())
        .await
        .unwrap()
        .remaining()
        .unwrap();
    assert!(ttl > Duration::from_secs(60) && ttl <= Duration::from_secs(120));

    // One entry by its own tag, then all by the shared one.
    Cache::invalidate_tag(&cache, "user:1").await.unwrap();
    assert_eq!(tagged(&cache, &calls, 1).await, 1);
    assert_eq!(tagged(&cache, &calls, 2).await, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    Cache::invalidate_tag(&cache, "users").await.unwrap();
    assert_eq!(tagged(&cache, &calls, 1).await, 1);
    assert_eq!(tagged(&cache, &calls, 2).await, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn invalidate_companion() {
    let (cache, calls) = (local(), AtomicUsize::new(0));
    assert_eq!(lookup(&cache, &calls, 5).await.unwrap().id, 5);
    assert!(lookup_invalidate(&cache, &calls, 5).await.unwrap());
    assert!(!lookup_invalidate(&cache, &calls, 5).await.unwrap());
    assert_eq!(lookup(&cache, &calls, 5).await.unwrap().id, 5);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------
// Single flight.

static FLIGHT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = CACHE)]
async fn slow(id: u64) -> u64 {
    FLIGHT_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    id + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_run_the_body_once() {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        tasks.spawn(slow(77));
    }
    let results = tasks.join_all().await;
    assert_eq!(results, vec![78; 100]);
    assert_eq!(FLIGHT_CALLS.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------
// Generic functions: the companions infer their parameters.

#[cached(cache = cache, skip(cache))]
async fn generic<C: Cache, T>(cache: &C, value: T) -> T
where
    T: Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + 'static,
{
    value
}

#[tokio::test]
async fn generic_functions() {
    let cache = local();
    assert_eq!(generic(&cache, "x".to_string()).await, "x");
    assert_eq!(generic(&cache, 3u8).await, 3);
    assert!(generic_cache_key(&3u8).is_some());
    assert!(generic_invalidate(&cache, 3u8).await.unwrap());
}

// ---------------------------------------------------------------------------------
// A Redis-backed cache: two instances (two "processes") share entries.

#[cached(cache = cache, skip(cache, calls), ttl = 60)]
async fn shared(cache: &DistributedCache, calls: &AtomicUsize, id: u64) -> Result<User, String> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(User {
        id,
        name: "from the database".into(),
    })
}

#[tokio::test]
async fn distributed_cache_shares_entries() {
    let server = RedisServer::start();
    let a = support::cache(&server, "macros").await;
    let b = support::cache(&server, "macros").await;
    let calls = Arc::new(AtomicUsize::new(0));

    let user = shared(&a, &calls, 1).await.unwrap();
    assert_eq!(shared(&b, &calls, 1).await.unwrap(), user);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The entry is at `{prefix}:{key}` in Redis.
    let key = shared_cache_key(&1).unwrap();
    let mut conn = server.connection().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("macros:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists);

    assert!(shared_invalidate(&b, &calls, 1).await.unwrap());
    assert_eq!(shared(&a, &calls, 1).await.unwrap(), user);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------
// Compile errors.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
