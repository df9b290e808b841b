//! The SeaORM integration against real databases and real `redis-server`s: every
//! scenario runs on SQLite (a temporary file) and on PostgreSQL
//! (`ORMCACHE_TEST_DATABASE_URL`, each test in a schema of its own, dropped
//! afterwards; without the variable the PostgreSQL tests say SKIPPED on stderr).
#![cfg(feature = "sea-orm")]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ormcache::sea_orm::{EntityCache, TransactionError, transaction};
use ormcache::signals::{DeleteEvent, SaveEvent, Signals};
use ormcache::tenant::{self, TenantId};
use ormcache::{Cache, DistributedCache, HybridCache, QueryCache};
use redis::AsyncCommands;
use sea_orm::prelude::async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DbBackend, DbErr, EntityTrait, ExecResult, QueryResult, Statement,
};
use support::{RedisServer, command_calls, config};
use tokio::sync::Notify;

#[allow(unreachable_pub)]
mod user {
    use sea_orm::entity::prelude::*;

    #[derive(
        Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize,
    )]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant: Option<String>,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {
        ormcache::sea_orm::signal_hooks!(&super::test_signals());
    }
}

/// The same hooks in an impl that carries `#[async_trait]` (as impls with hooks of
/// their own do): the generated methods match either way.
#[allow(unreachable_pub)]
mod tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    #[async_trait::async_trait]
    impl ActiveModelBehavior for ActiveModel {
        ormcache::sea_orm::signal_hooks!(&super::test_signals());
    }
}

tokio::task_local! {
    /// The registry of the running test: tests run in parallel in one process.
    static SIGNALS: Signals;
}

/// Saves outside a test's scope go to a registry nobody listens to.
static NOBODY: LazyLock<Signals> = LazyLock::new(Signals::new);

fn test_signals() -> Signals {
    SIGNALS
        .try_with(Clone::clone)
        .unwrap_or_else(|_| NOBODY.clone())
}

/// One test's database, registry and helpers.
struct Ctx {
    db: DatabaseConnection,
    signals: Signals,
    /// Connects more pools to the same database (for the race test's reader).
    url: String,
    search_path: Option<String>,
}

impl Ctx {
    async fn insert(&self, tenant: Option<&str>, name: &str) -> user::Model {
        user::ActiveModel {
            tenant: Set(tenant.map(str::to_owned)),
            name: Set(name.to_owned()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .unwrap()
    }

    async fn rename(&self, row: &user::Model, name: &str) -> user::Model {
        let mut edit: user::ActiveModel = row.clone().into();
        edit.name = Set(name.to_owned());
        edit.update(&self.db).await.unwrap()
    }

    async fn second_pool(&self) -> DatabaseConnection {
        connect(&self.url, self.search_path.as_deref(), 2).await
    }
}

async fn connect(url: &str, search_path: Option<&str>, pool: u32) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(pool)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    if let Some(path) = search_path {
        options.set_schema_search_path(path.to_owned());
    }
    Database::connect(options).await.unwrap()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `scenario` in a task with the test's registry, then propagates its panic
/// (after the caller cleaned up).
async fn run_scenario<F, Fut>(ctx: Ctx, scenario: F) -> std::thread::Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let signals = ctx.signals.clone();
    let task = tokio::spawn(SIGNALS.scope(signals, scenario(ctx)));
    task.await.map_err(|e| e.into_panic())
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let path = std::env::temp_dir().join(format!("{}.sqlite", unique("ormcache")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = connect(&url, None, 4).await;
    db.execute_unprepared(
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NULL, name TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let ctx = Ctx {
        db,
        signals: Signals::new(),
        url,
        search_path: None,
    };
    let outcome = run_scenario(ctx, scenario).await;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn on_postgres<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(url) = std::env::var("ORMCACHE_TEST_DATABASE_URL") else {
        // Straight to the process's stderr: libtest captures `eprintln!` of passing
        // tests, and this line must be seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: ORMCACHE_TEST_DATABASE_URL not set; PostgreSQL test {test} did not run \
             (.ci/run sets it; e.g. postgres://postgres@127.0.0.1:5432/ormcache_test)"
        );
        return;
    };
    let schema = unique("oc_test");
    let admin = connect(&url, None, 1).await;
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let db = connect(&url, Some(&schema), 4).await;
    db.execute_unprepared(
        "CREATE TABLE users (id SERIAL PRIMARY KEY, tenant TEXT NULL, name TEXT NOT NULL)",
    )
    .await
    .unwrap();
    let ctx = Ctx {
        db: db.clone(),
        signals: Signals::new(),
        url,
        search_path: Some(schema.clone()),
    };
    let outcome = run_scenario(ctx, scenario).await;
    let _ = db.close().await;
    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Each scenario becomes `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_postgres(stringify!($name), super::$name).await;
                }
            )*
        }
    };
}

on_both!(
    hooks_fire_in_order_with_created,
    receiver_failure_is_counted_and_the_write_succeeds,
    find_by_id_caches_the_plain_row_and_saves_invalidate_it,
    hybrid_instances_see_each_others_saves,
    lists_are_invalidated_on_insert,
    bulk_update_needs_the_documented_call,
    transaction_replays_after_commit_and_not_after_rollback,
    reader_of_the_old_row_cannot_store_it_after_the_commit,
    tenant_filter_isolates_rows_and_keys,
    redis_killed_reads_and_writes_still_work,
    a_not_found_is_one_write_with_its_short_ttl,
);

fn local_cache() -> QueryCache {
    QueryCache::new(1_000, Duration::from_secs(60)).unwrap()
}

fn users<C: Cache>(cache: C) -> EntityCache<user::Entity, C> {
    EntityCache::new(cache, "user", "users").ttl(Duration::from_secs(120))
}

/// Waits (bounded, not a timing assertion) until `check` holds.
async fn eventually<Fut: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> Fut) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn hooks_fire_in_order_with_created(ctx: Ctx) {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = Arc::clone(&log);
    ctx.signals
        .on_pre_save(move |e: SaveEvent<user::ActiveModel>| {
            let entry = format!("pre_save created={} name={:?}", e.created, e.instance.name);
            l.lock().unwrap().push(entry);
            async { Ok(()) }
        });
    let l = Arc::clone(&log);
    ctx.signals.on_post_save(move |e: SaveEvent<user::Model>| {
        let entry = format!(
            "post_save created={} {}:{}",
            e.created, e.instance.id, e.instance.name
        );
        l.lock().unwrap().push(entry);
        async { Ok(()) }
    });
    let l = Arc::clone(&log);
    ctx.signals
        .on_pre_delete(move |e: DeleteEvent<user::ActiveModel>| {
            l.lock()
                .unwrap()
                .push(format!("pre_delete {:?}", e.instance.id));
            async { Ok(()) }
        });
    let l = Arc::clone(&log);
    ctx.signals
        .on_post_delete(move |e: DeleteEvent<user::Model>| {
            l.lock()
                .unwrap()
                .push(format!("post_delete model {}", e.instance.id));
            async { Ok(()) }
        });
    let l = Arc::clone(&log);
    ctx.signals
        .on_post_delete(move |e: DeleteEvent<user::ActiveModel>| {
            l.lock()
                .unwrap()
                .push(format!("post_delete active {:?}", e.instance.id));
            async { Ok(()) }
        });

    let ann = ctx.insert(None, "Ann").await;
    let ann = ctx.rename(&ann, "Anne").await;
    let bo = ctx.insert(None, "Bo").await;
    // save() of a new ActiveModel inserts: created = true.
    let cy = user::ActiveModel {
        name: Set("Cy".into()),
        ..Default::default()
    }
    .save(&ctx.db)
    .await
    .unwrap();
    let cy_id = cy.id.clone().unwrap();
    sea_orm::ModelTrait::delete(ann.clone(), &ctx.db)
        .await
        .unwrap();
    // An ActiveModel holding only the key: post_delete carries the ActiveModel.
    user::ActiveModel {
        id: Set(bo.id),
        ..Default::default()
    }
    .delete(&ctx.db)
    .await
    .unwrap();

    let l = Arc::clone(&log);
    ctx.signals.on_post_save(move |e: SaveEvent<tag::Model>| {
        l.lock()
            .unwrap()
            .push(format!("post_save tag {}", e.instance.name));
        async { Ok(()) }
    });
    ctx.db
        .execute_unprepared("CREATE TABLE tags (name TEXT PRIMARY KEY)")
        .await
        .unwrap();
    tag::ActiveModel {
        name: Set("rust".into()),
    }
    .insert(&ctx.db)
    .await
    .unwrap();

    let a = ann.id;
    let b = bo.id;
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "pre_save created=true name=Set(\"Ann\")".to_string(),
            format!("post_save created=true {a}:Ann"),
            "pre_save created=false name=Set(\"Anne\")".to_string(),
            format!("post_save created=false {a}:Anne"),
            "pre_save created=true name=Set(\"Bo\")".to_string(),
            format!("post_save created=true {b}:Bo"),
            "pre_save created=true name=Set(\"Cy\")".to_string(),
            format!("post_save created=true {cy_id}:Cy"),
            format!("pre_delete Unchanged({a})"),
            format!("post_delete model {a}"),
            format!("pre_delete Set({b})"),
            format!("post_delete active Set({b})"),
            "post_save tag rust".to_string(),
        ]
    );
    let stats = ctx.signals.stats();
    assert_eq!(
        (
            stats.pre_save.sends,
            stats.post_save.sends,
            stats.pre_delete.sends,
            stats.post_delete.sends
        ),
        (4 + 1, 4 + 1, 2, 2)
    );
    assert_eq!(stats.failures(), 0);
}

async fn receiver_failure_is_counted_and_the_write_succeeds(ctx: Ctx) {
    ctx.signals
        .on_post_save(|_: SaveEvent<user::Model>| async { Err("cache unreachable".into()) });
    ctx.signals
        .on_post_delete(|_: DeleteEvent<user::Model>| async { panic!("receiver bug") });
    let ann = ctx.insert(None, "Ann").await;
    let read = user::Entity::find_by_id(ann.id).one(&ctx.db).await.unwrap();
    assert_eq!(read, Some(ann.clone()));
    sea_orm::ModelTrait::delete(ann.clone(), &ctx.db)
        .await
        .unwrap();
    assert_eq!(
        user::Entity::find_by_id(ann.id).one(&ctx.db).await.unwrap(),
        None
    );
    let stats = ctx.signals.stats();
    assert_eq!(
        (stats.post_save.failures, stats.post_delete.failures),
        (1, 1)
    );
}

async fn find_by_id_caches_the_plain_row_and_saves_invalidate_it(ctx: Ctx) {
    let server = RedisServer::start();
    let prefix = "app";
    let cache = DistributedCache::create(config(&server, prefix))
        .await
        .unwrap();
    let users = users(cache.clone());
    users.connect(&ctx.signals);
    let mut raw = server.connection().await;

    let ann = ctx.insert(None, "Ann").await;
    let key = format!("{prefix}:user:{}", ann.id);
    let first = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(
        (first.value.as_ref(), first.from_cache),
        (Some(&ann), false)
    );
    let second = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(
        (second.value.as_ref(), second.from_cache),
        (Some(&ann), true)
    );
    // The plain layout: the Model's JSON at {prefix}:user:{id}, nothing else.
    let stored: Option<String> = raw.get(&key).await.unwrap();
    assert_eq!(stored, Some(serde_json::to_string(&ann).unwrap()));

    // An update through the hooks drops it; the next read has the new row.
    let anne = ctx.rename(&ann, "Anne").await;
    assert_eq!(raw.get::<_, Option<String>>(&key).await.unwrap(), None);
    let third = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(
        (third.value.as_ref(), third.from_cache),
        (Some(&anne), false)
    );

    // A delete drops it too; a missing row is cached as JSON null, briefly.
    sea_orm::ModelTrait::delete(anne, &ctx.db).await.unwrap();
    assert_eq!(raw.get::<_, Option<String>>(&key).await.unwrap(), None);
    let gone = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!((gone.value, gone.from_cache), (None, false));
    let gone = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!((gone.value, gone.from_cache), (None, true));
    assert_eq!(
        raw.get::<_, Option<String>>(&key).await.unwrap().as_deref(),
        Some("null")
    );
    let pttl: i64 = raw.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "not-found TTL {pttl} ms");
    // With not_found_ttl(ZERO) no "not found" is kept.
    let uncached = users.clone().not_found_ttl(Duration::ZERO);
    let missing = uncached.find_by_id(&ctx.db, 12_345).await.unwrap();
    assert_eq!((missing.value, missing.from_cache), (None, false));
    assert_eq!(
        raw.get::<_, Option<String>>(format!("{prefix}:user:12345"))
            .await
            .unwrap(),
        None
    );
    // Inserting that id through the hooks drops its cached "not found".
    assert_eq!(users.find_by_id(&ctx.db, 999).await.unwrap().value, None);
    let bo = user::ActiveModel {
        id: Set(999),
        tenant: Set(None),
        name: Set("Bo".into()),
    }
    .insert(&ctx.db)
    .await
    .unwrap();
    let bo_read = users.find_by_id(&ctx.db, 999).await.unwrap();
    assert_eq!((bo_read.value, bo_read.from_cache), (Some(bo), false));
    assert_eq!(ctx.signals.stats().failures(), 0);
}

async fn hybrid_instances_see_each_others_saves(ctx: Ctx) {
    let server = RedisServer::start();
    let make = async || {
        let c = HybridCache::builder(
            local_cache(),
            DistributedCache::create(config(&server, "h"))
                .await
                .unwrap(),
        )
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
        assert!(c.wait_coherent(Duration::from_secs(10)).await);
        c
    };
    // Two "processes": A reads, B writes (its own registry, connected to its cache).
    let (a, b) = (users(make().await), users(make().await));
    b.connect(&ctx.signals);

    let ann = ctx.insert(None, "Ann").await;
    assert!(!a.find_by_id(&ctx.db, ann.id).await.unwrap().from_cache);
    let hit = a.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!((hit.value.as_ref(), hit.from_cache), (Some(&ann), true));
    let page = a.list(&ctx.db, 10, 0).await.unwrap();
    assert_eq!(page.value, vec![ann.clone()]);

    let anne = ctx.rename(&ann, "Anne").await;
    let db = ctx.db.clone();
    eventually("A reads B's update", || async {
        a.find_by_id(&db, ann.id).await.unwrap().value.as_ref() == Some(&anne)
    })
    .await;
    eventually("A's pages see B's update", || async {
        a.list(&db, 10, 0).await.unwrap().value == vec![anne.clone()]
    })
    .await;
    sea_orm::ModelTrait::delete(anne, &ctx.db).await.unwrap();
    eventually("A reads B's delete", || async {
        a.find_by_id(&db, ann.id).await.unwrap().value.is_none()
    })
    .await;
    assert_eq!(ctx.signals.stats().failures(), 0);
}

async fn lists_are_invalidated_on_insert(ctx: Ctx) {
    let users = users(local_cache());
    users.connect(&ctx.signals);
    let ann = ctx.insert(None, "Ann").await;
    let page = users.list(&ctx.db, 2, 0).await.unwrap();
    assert_eq!(
        (page.value.clone(), page.from_cache),
        (vec![ann.clone()], false)
    );
    assert!(users.list(&ctx.db, 2, 0).await.unwrap().from_cache);
    assert!(users.cache().exists_sync("users:list:2:0"));

    let bo = ctx.insert(None, "Bo").await;
    let cy = ctx.insert(None, "Cy").await;
    let page = users.list(&ctx.db, 2, 0).await.unwrap();
    assert_eq!(
        (page.value, page.from_cache),
        (vec![ann.clone(), bo.clone()], false)
    );
    let next = users.list(&ctx.db, 2, 2).await.unwrap();
    assert_eq!(next.value, vec![cy.clone()]);
    // A rename drops every page too.
    let bob = ctx.rename(&bo, "Bob").await;
    let page = users.list(&ctx.db, 2, 0).await.unwrap();
    assert_eq!((page.value, page.from_cache), (vec![ann, bob], false));
}

async fn bulk_update_needs_the_documented_call(ctx: Ctx) {
    let users = users(local_cache());
    users.connect(&ctx.signals);
    let ann = ctx.insert(None, "Ann").await;
    let bo = ctx.insert(None, "Bo").await;
    users.find_by_id(&ctx.db, ann.id).await.unwrap();
    users.find_by_id(&ctx.db, bo.id).await.unwrap();
    users.list(&ctx.db, 10, 0).await.unwrap();

    user::Entity::update_many()
        .col_expr(user::Column::Name, Expr::value("Renamed"))
        .exec(&ctx.db)
        .await
        .unwrap();
    // No hooks ran: the cache still holds the old rows.
    let stale = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(
        (stale.value.unwrap().name, stale.from_cache),
        ("Ann".to_string(), true)
    );

    assert_eq!(users.invalidate_all().await.unwrap(), 2);
    let fresh = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(
        (fresh.value.unwrap().name, fresh.from_cache),
        ("Renamed".to_string(), false)
    );
    let page = users.list(&ctx.db, 10, 0).await.unwrap();
    assert!(!page.from_cache);
    assert_eq!(
        page.value
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["Renamed", "Renamed"]
    );

    // delete_by_id bypasses the hooks too: invalidate(id) + invalidate_lists().
    user::Entity::delete_by_id(bo.id)
        .exec(&ctx.db)
        .await
        .unwrap();
    users.find_by_id(&ctx.db, bo.id).await.unwrap();
    assert!(users.invalidate(bo.id).await.unwrap());
    users.invalidate_lists().await.unwrap();
    assert_eq!(users.find_by_id(&ctx.db, bo.id).await.unwrap().value, None);
    assert_eq!(users.list(&ctx.db, 10, 0).await.unwrap().value.len(), 1);
}

async fn transaction_replays_after_commit_and_not_after_rollback(ctx: Ctx) {
    let users = users(local_cache());
    users.connect(&ctx.signals);
    let ann = ctx.insert(None, "Ann").await;
    let key = users.id_key(ann.id).unwrap();

    // Commit: the entry refilled (with the old row) inside the transaction is
    // dropped again after the commit.
    let cache = users.cache().clone();
    let (c, k, old) = (cache.clone(), key.clone(), ann.clone());
    let mut edit: user::ActiveModel = ann.clone().into();
    edit.name = Set("Anne".into());
    let anne = transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move {
            let anne = edit.update(txn).await?;
            assert!(!c.exists_sync(&k), "the first run invalidates at once");
            c.set_sync(&k, Some(old), None).unwrap(); // a concurrent reader's refill
            Ok::<_, DbErr>(anne)
        })
    })
    .await
    .unwrap();
    assert_eq!(anne.name, "Anne");
    assert!(!cache.exists_sync(&key), "replayed after the commit");
    assert_eq!(ctx.signals.stats().post_save.deliveries, 2 + 1); // insert, run, replay

    // Rollback: post_save ran once inside, nothing after; the row is unchanged.
    let fetched = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(fetched.value.as_ref(), Some(&anne));
    let (c, k) = (cache.clone(), key.clone());
    let mut edit: user::ActiveModel = anne.clone().into();
    edit.name = Set("Rolled back".into());
    let before = ctx.signals.stats().post_save.deliveries;
    let outcome = transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move {
            edit.update(txn).await.unwrap();
            c.set_sync(&k, Some(anne_refill()), None).unwrap();
            Err::<(), _>(DbErr::Custom("abort".into()))
        })
    })
    .await;
    assert!(
        matches!(outcome, Err(TransactionError::Transaction(DbErr::Custom(ref m))) if m == "abort")
    );
    assert_eq!(ctx.signals.stats().post_save.deliveries, before + 1);
    assert!(cache.exists_sync(&key), "nothing replayed after a rollback");
    let row = user::Entity::find_by_id(ann.id).one(&ctx.db).await.unwrap();
    assert_eq!(row.as_ref(), Some(&anne));

    // A nested transaction's events wait for the outer commit.
    cache.delete_sync(&key);
    let (c, k) = (cache.clone(), key.clone());
    let signals = ctx.signals.clone();
    let mut edit: user::ActiveModel = anne.clone().into();
    edit.name = Set("Nested".into());
    transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move {
            transaction(txn, &signals, |inner| {
                Box::pin(async move { edit.update(inner).await })
            })
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
            c.set_sync(&k, Some(anne_refill()), None).unwrap();
            Ok::<_, DbErr>(())
        })
    })
    .await
    .unwrap();
    assert!(!cache.exists_sync(&key), "replayed after the outer commit");
}

fn anne_refill() -> user::Model {
    user::Model {
        id: 0,
        tenant: None,
        name: "refill".into(),
    }
}

/// A real connection whose reads stop, once armed, after the database answered and
/// before the caller gets the rows: the reader holds the old row while a writer
/// commits.
#[derive(Clone)]
struct Gated {
    inner: DatabaseConnection,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    reached: Notify,
    release: Notify,
}

impl Gated {
    async fn pass(&self) {
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.reached.notify_one();
            self.gate.release.notified().await;
        }
    }
}

#[async_trait]
impl ConnectionTrait for Gated {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.inner.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.inner.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let rows = self.inner.query_one_raw(stmt).await;
        self.pass().await;
        rows
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self.inner.query_all_raw(stmt).await;
        self.pass().await;
        rows
    }
}

/// The commit race: writer B updates inside `transaction` (the first invalidation
/// runs), reader A then misses, reads the old row (B has not committed) and is held;
/// B commits and the replay invalidates; A's loader returns the old row. A's caller
/// gets it, but the cache must not keep it.
async fn reader_of_the_old_row_cannot_store_it_after_the_commit(ctx: Ctx) {
    let server = RedisServer::start();
    let cache = DistributedCache::create(config(&server, "race"))
        .await
        .unwrap();
    let users = users(cache.clone());
    users.connect(&ctx.signals);
    let ann = ctx.insert(None, "Ann").await;
    let key = users.id_key(ann.id).unwrap();

    let reader_db = Gated {
        inner: ctx.second_pool().await,
        gate: Arc::default(),
    };
    let gate = Arc::clone(&reader_db.gate);
    let (reader_users, id, held_db) = (users.clone(), ann.id, reader_db.clone());
    let mut edit: user::ActiveModel = ann.clone().into();
    edit.name = Set("Anne".into());
    let reader = transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move {
            edit.update(txn).await?;
            gate.armed.store(true, Ordering::SeqCst);
            let reader = tokio::spawn(async move { reader_users.find_by_id(&held_db, id).await });
            tokio::time::timeout(Duration::from_secs(30), gate.reached.notified())
                .await
                .expect("the reader did not reach the database");
            Ok::<_, DbErr>((reader, gate))
        })
    })
    .await;
    let (reader, gate) = reader.unwrap();
    // Committed and replayed. Now the reader's loader returns the old row.
    gate.release.notify_one();
    let read = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader hung")
        .unwrap()
        .unwrap();
    assert_eq!((read.value.as_ref(), read.from_cache), (Some(&ann), false));
    assert_eq!(
        cache.get::<Option<user::Model>>(&key).await.unwrap(),
        None,
        "the old row was stored after the commit"
    );
    let next = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(next.value.clone().map(|u| u.name), Some("Anne".to_string()));
    assert!(!next.from_cache);

    // The other order: A reads the old row and is held before B even begins; B
    // updates and commits; A's loader returns. Not stored either.
    let anne = next.value.unwrap();
    users.invalidate(anne.id).await.unwrap();
    reader_db.gate.armed.store(true, Ordering::SeqCst);
    let reader = tokio::spawn({
        let (users, reader_db) = (users.clone(), reader_db.clone());
        async move { users.find_by_id(&reader_db, anne.id).await }
    });
    tokio::time::timeout(Duration::from_secs(30), reader_db.gate.reached.notified())
        .await
        .expect("the reader did not reach the database");
    let mut edit: user::ActiveModel = anne.clone().into();
    edit.name = Set("Anna".into());
    transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move { edit.update(txn).await })
    })
    .await
    .unwrap();
    reader_db.gate.release.notify_one();
    let read = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader hung")
        .unwrap()
        .unwrap();
    assert_eq!(read.value.as_ref(), Some(&anne));
    assert_eq!(cache.get::<Option<user::Model>>(&key).await.unwrap(), None);
    let next = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!(next.value.map(|u| u.name), Some("Anna".to_string()));
}

async fn tenant_filter_isolates_rows_and_keys(ctx: Ctx) {
    let server = RedisServer::start();
    let cache = DistributedCache::create(config(&server, "mt"))
        .await
        .unwrap();
    let users = users(cache.clone()).tenant_column(user::Column::Tenant);
    users.connect(&ctx.signals);
    let mut raw = server.connection().await;
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();

    let a = ctx.insert(Some("acme"), "Ann of acme").await;
    let g = ctx.insert(Some("globex"), "Gus of globex").await;
    let shared = ctx.insert(None, "nobody's").await;

    let db = &ctx.db;
    let in_acme = |id| tenant::scope(acme.clone(), users.find_by_id(db, id));
    assert_eq!(in_acme(a.id).await.unwrap().value.as_ref(), Some(&a));
    assert_eq!(
        in_acme(g.id).await.unwrap().value,
        None,
        "another tenant's row"
    );
    assert_eq!(
        in_acme(shared.id).await.unwrap().value,
        None,
        "an unscoped row"
    );
    let page = tenant::scope(globex.clone(), users.list(db, 10, 0))
        .await
        .unwrap();
    assert_eq!(page.value, vec![g.clone()]);
    let page = users.list(db, 10, 0).await.unwrap();
    assert_eq!(page.value, vec![shared.clone()]);
    assert_eq!(users.find_by_id(db, a.id).await.unwrap().value, None);

    // Keys live in the tenant's namespace (plain row JSON there).
    let acme_key = format!("mt:__oc:t:acme:user:{}", a.id);
    let stored: Option<String> = raw.get(&acme_key).await.unwrap();
    assert_eq!(stored, Some(serde_json::to_string(&a).unwrap()));
    assert_eq!(
        raw.get::<_, Option<String>>(format!("mt:user:{}", a.id))
            .await
            .unwrap()
            .as_deref(),
        Some("null"),
        "the unscoped read cached its own \"not found\""
    );

    // A save inside acme's scope invalidates acme's entry: the receivers run in the
    // saving task.
    let renamed = tenant::scope(acme.clone(), ctx.rename(&a, "Ann renamed")).await;
    assert_eq!(raw.get::<_, Option<String>>(&acme_key).await.unwrap(), None);
    assert_eq!(in_acme(a.id).await.unwrap().value.as_ref(), Some(&renamed));
    // A save outside the scope (an admin task) reaches the row tenant's entry too.
    let again = ctx.rename(&renamed, "Ann by admin").await;
    assert_eq!(raw.get::<_, Option<String>>(&acme_key).await.unwrap(), None);
    assert_eq!(in_acme(a.id).await.unwrap().value.as_ref(), Some(&again));
    // globex's entries were not touched by acme's saves.
    let gpage = tenant::scope(globex.clone(), users.list(db, 10, 0))
        .await
        .unwrap();
    assert_eq!((gpage.value, gpage.from_cache), (vec![g], true));

    // Without a tenant column, the receivers act in the saving task's scope only:
    // a save inside acme's scope drops acme's entry, also from a task spawned with
    // tenant::spawn (which keeps the tenant), and touches no unscoped key.
    let plain = EntityCache::<user::Entity, _>::new(local_cache(), "user", "users");
    plain.connect(&ctx.signals);
    let key = plain.id_key(shared.id).unwrap();
    let cached_in =
        |t: &TenantId| tenant::sync_scope(t.clone(), || plain.cache().exists_sync(&key));
    tenant::scope(acme.clone(), plain.find_by_id(db, shared.id))
        .await
        .unwrap();
    assert!(cached_in(&acme));
    assert!(
        !plain.cache().exists_sync(&key),
        "read in acme's scope, stored unscoped"
    );
    let signals = ctx.signals.clone();
    let (db2, row) = (ctx.db.clone(), shared.clone());
    tenant::scope(acme.clone(), async move {
        tenant::spawn(SIGNALS.scope(signals, async move {
            let mut edit: user::ActiveModel = row.into();
            edit.name = Set("renamed in a spawned task".into());
            edit.update(&db2).await.unwrap()
        }))
        .await
        .unwrap()
    })
    .await;
    assert!(
        !cached_in(&acme),
        "the spawned save did not reach acme's entry"
    );
    assert!(!plain.cache().exists_sync(&key), "an unscoped key appeared");
    let read = tenant::scope(acme.clone(), plain.find_by_id(db, shared.id))
        .await
        .unwrap();
    assert_eq!(
        (read.value.map(|u| u.name), read.from_cache),
        (Some("renamed in a spawned task".to_string()), false)
    );
    assert_eq!(ctx.signals.stats().failures(), 0);
}

async fn redis_killed_reads_and_writes_still_work(ctx: Ctx) {
    let server = RedisServer::start();
    let cache = DistributedCache::create(
        config(&server, "down")
            .socket_timeout(Duration::from_millis(200))
            .socket_connect_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let users = users(cache);
    users.connect(&ctx.signals);
    let ann = ctx.insert(None, "Ann").await;
    assert!(
        users
            .find_by_id(&ctx.db, ann.id)
            .await
            .unwrap()
            .value
            .is_some()
    );

    server.kill();
    // Writes succeed; the receivers' failures are counted, not returned.
    let anne = ctx.rename(&ann, "Anne").await;
    let bo = ctx.insert(None, "Bo").await;
    assert!(ctx.signals.stats().post_save.failures >= 2);
    // Reads go to the database.
    let read = users.find_by_id(&ctx.db, ann.id).await.unwrap();
    assert_eq!((read.value, read.from_cache), (Some(anne.clone()), false));
    let page = users.list(&ctx.db, 10, 0).await.unwrap();
    assert_eq!(page.value, vec![anne.clone(), bo.clone()]);
    sea_orm::ModelTrait::delete(bo.clone(), &ctx.db)
        .await
        .unwrap();
    assert!(ctx.signals.stats().post_delete.failures >= 1);
    assert_eq!(users.find_by_id(&ctx.db, bo.id).await.unwrap().value, None);
    // And a transaction commits.
    let mut edit: user::ActiveModel = anne.into();
    edit.name = Set("Anna".into());
    let anna = transaction(&ctx.db, &ctx.signals, |txn| {
        Box::pin(async move { edit.update(txn).await })
    })
    .await
    .unwrap();
    assert_eq!(
        users.find_by_id(&ctx.db, ann.id).await.unwrap().value,
        Some(anna)
    );
}

async fn a_not_found_is_one_write_with_its_short_ttl(ctx: Ctx) {
    let server = RedisServer::start();
    // The broadcast protocol: under the fleet one each read also renews the
    // reader's holder registration with a PEXPIRE of its own.
    let cache = HybridCache::builder(
        local_cache(),
        DistributedCache::create(config(&server, "nf"))
            .await
            .unwrap(),
    )
    .protocol(ormcache::Protocol::Broadcast)
    .build()
    .unwrap();
    assert!(cache.wait_coherent(Duration::from_secs(5)).await);
    let users = users(cache);
    users.connect(&ctx.signals);
    let mut raw = server.connection().await;
    let pexpires = command_calls(&mut raw, "pexpire").await;
    let missing = users.find_by_id(&ctx.db, 4_242).await.unwrap();
    assert_eq!((missing.value, missing.from_cache), (None, false));
    let pttl: i64 = raw.pttl("nf:user:4242").await.unwrap();
    assert!(pttl > 0 && pttl <= 5_000, "not-found TTL {pttl} ms");
    // Stored once with its own TTL: no PEXPIRE (which a HybridCache would also
    // broadcast to every peer).
    assert_eq!(command_calls(&mut raw, "pexpire").await, pexpires);
    let again = users.find_by_id(&ctx.db, 4_242).await.unwrap();
    assert_eq!((again.value, again.from_cache), (None, true));
}
