//! `ormcache::signals`: typed lifecycle receivers invalidating a real `QueryCache`
//! (no Redis needed), failure handling, and the transaction buffer.

mod support;

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ormcache::signals::{BoxError, DeleteEvent, KindStats, SaveEvent, SignalKind, Signals};
use ormcache::{Cache, QueryCache};

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Product {
    id: u64,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user #{id}"),
    }
}

fn cache() -> QueryCache {
    QueryCache::new(10_000, Duration::from_secs(60)).unwrap()
}

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A post_save receiver that deletes `user:{id}` through the async `Cache` API.
fn invalidate_user<C: Cache>(signals: &Signals, cache: &C) {
    let cache = cache.clone();
    signals.on_post_save(move |e: SaveEvent<User>| {
        let cache = cache.clone();
        async move {
            Cache::delete(&cache, &format!("user:{}", e.instance.id)).await?;
            Ok(())
        }
    });
}

#[tokio::test]
async fn receivers_run_in_registration_order_each_awaited() {
    let signals = Signals::new();
    let log = log();
    for (name, delay) in [("first", 30), ("second", 0), ("third", 10)] {
        let log = Arc::clone(&log);
        signals.on_post_save(move |e: SaveEvent<User>| {
            let log = Arc::clone(&log);
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("{name} start {}", e.instance.id));
                tokio::time::sleep(Duration::from_millis(delay)).await;
                log.lock().unwrap().push(format!("{name} end"));
                Ok(())
            }
        });
    }

    let report = signals.send_post_save(&user(1), true).await;

    assert_eq!((report.delivered(), report.failed()), (3, 0));
    assert_eq!(
        entries(&log),
        [
            "first start 1",
            "first end",
            "second start 1",
            "second end",
            "third start 1",
            "third end"
        ]
    );
    assert_eq!(signals.receiver_count::<User>(SignalKind::PostSave), 3);
}

#[tokio::test]
async fn receivers_are_typed_per_model_and_kind() {
    let cache = cache();
    let signals = Signals::new();
    invalidate_user(&signals, &cache);
    let c = cache.clone();
    signals.on_post_delete(move |e: DeleteEvent<Product>| {
        let cache = c.clone();
        async move {
            Cache::delete(&cache, &format!("product:{}", e.instance.id)).await?;
            Ok(())
        }
    });
    cache.set_sync("user:1", "Ann".to_string(), None).unwrap();
    cache.set_sync("product:1", 42u32, None).unwrap();

    // A Product save and a User delete have no receivers.
    let report = signals.send_post_save(&Product { id: 1 }, false).await;
    assert_eq!(report.delivered(), 0);
    let report = signals.send_post_delete(&user(1)).await;
    assert_eq!(report.delivered(), 0);
    assert!(cache.exists_sync("user:1"));
    assert!(cache.exists_sync("product:1"));

    // Each model reaches only its own receivers.
    assert_eq!(signals.send_post_save(&user(1), false).await.delivered(), 1);
    assert!(!cache.exists_sync("user:1"));
    assert!(cache.exists_sync("product:1"));
    assert_eq!(
        signals
            .send_post_delete(&Product { id: 1 })
            .await
            .delivered(),
        1
    );
    assert!(!cache.exists_sync("product:1"));

    assert_eq!(signals.receiver_count::<Product>(SignalKind::PostSave), 0);
    assert_eq!(signals.receiver_count::<Product>(SignalKind::PostDelete), 1);
    assert_eq!(signals.receiver_count::<User>(SignalKind::PostSave), 1);
}

#[tokio::test]
async fn events_carry_the_instance_and_created() {
    let signals = Signals::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    signals.on_post_save(move |e: SaveEvent<User>| {
        s.lock()
            .unwrap()
            .push((User::clone(&e.instance), e.created));
        async { Ok(()) }
    });

    signals.send_post_save(&user(1), true).await;
    signals.send_post_save(&user(2), false).await;

    assert_eq!(*seen.lock().unwrap(), [(user(1), true), (user(2), false)]);
}

/// A tracing subscriber that keeps every event as `LEVEL field=value ...`.
struct Capture(Log);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        write!(self.0, " {}={:?}", field.name(), value).unwrap();
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        write!(self.0, " {}={}", field.name(), value).unwrap();
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn failing_receiver_is_logged_counted_and_does_not_stop_the_others() {
    let logs = log();
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&logs)));

    let cache = cache();
    let signals = Signals::new();
    let ran = log();
    // 0: a cache error (an empty key is invalid input), propagated with `?`.
    let c = cache.clone();
    let r = Arc::clone(&ran);
    signals.on_post_save(move |_: SaveEvent<User>| {
        let (cache, ran) = (c.clone(), Arc::clone(&r));
        async move {
            ran.lock().unwrap().push("0".to_string());
            Cache::set(&cache, "", 1u32, None).await?;
            Ok(())
        }
    });
    // 1: invalidates the user.
    invalidate_user(&signals, &cache);
    // 2: a plain error.
    let r = Arc::clone(&ran);
    signals.on_post_save(move |_: SaveEvent<User>| {
        let ran = Arc::clone(&r);
        async move {
            ran.lock().unwrap().push("2".to_string());
            Err::<(), BoxError>("search index unreachable".into())
        }
    });
    // 3: still runs.
    let r = Arc::clone(&ran);
    signals.on_post_save(move |_: SaveEvent<User>| {
        let ran = Arc::clone(&r);
        async move {
            ran.lock().unwrap().push("3".to_string());
            Ok(())
        }
    });
    cache.set_sync("user:5", "stale".to_string(), None).unwrap();

    let report = signals.send_post_save(&user(5), false).await;

    assert_eq!((report.delivered(), report.failed()), (4, 2));
    assert!(!report.is_ok());
    assert_eq!(entries(&ran), ["0", "2", "3"]);
    assert!(!cache.exists_sync("user:5"));
    let stats = signals.stats();
    assert_eq!(stats.post_save, signals.stats().kind(SignalKind::PostSave),);
    assert_eq!(
        (
            stats.post_save.sends,
            stats.post_save.deliveries,
            stats.post_save.failures
        ),
        (1, 4, 2)
    );
    assert_eq!(stats.pre_save, KindStats::default());
    assert_eq!(stats.failures(), 2);

    let warnings: Vec<String> = entries(&logs)
        .into_iter()
        .filter(|l| l.starts_with("WARN") && l.contains("signal receiver failed"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    let model = std::any::type_name::<User>();
    assert!(warnings[0].contains("signal=post_save"), "{}", warnings[0]);
    assert!(
        warnings[0].contains(&format!("model={model}")),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("receiver=0"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("invalid input in `set`"),
        "{}",
        warnings[0]
    );
    assert!(warnings[1].contains("receiver=2"), "{}", warnings[1]);
    assert!(
        warnings[1].contains("search index unreachable"),
        "{}",
        warnings[1]
    );
}

#[tokio::test]
async fn panicking_receiver_is_a_failure_not_a_crash() {
    let signals = Signals::new();
    signals.on_pre_delete(|_: DeleteEvent<User>| async { panic!("receiver bug") });
    signals.on_pre_delete(|_: DeleteEvent<User>| async { Ok(()) });

    let report = signals.send_pre_delete(&user(1)).await;

    assert_eq!((report.delivered(), report.failed()), (2, 1));
    assert_eq!(signals.stats().pre_delete.failures, 1);
}

/// What an ORM integration does around a write.
async fn save(signals: &Signals, db: &Mutex<Vec<User>>, u: &User, log: &Log) {
    let created = !db.lock().unwrap().iter().any(|r| r.id == u.id);
    signals.send_pre_save(u, created).await;
    log.lock().unwrap().push(format!("write {}", u.id));
    db.lock().unwrap().retain(|r| r.id != u.id);
    db.lock().unwrap().push(u.clone());
    signals.send_post_save(u, created).await;
}

#[tokio::test]
async fn pre_runs_before_the_write_and_post_after() {
    let signals = Signals::new();
    let db = Arc::new(Mutex::new(Vec::new()));
    let log = log();
    for kind in ["pre", "post"] {
        let (db, log) = (Arc::clone(&db), Arc::clone(&log));
        let receiver = move |e: SaveEvent<User>| {
            let in_db = db.lock().unwrap().contains(&*e.instance);
            log.lock().unwrap().push(format!(
                "{kind} {} created={} in_db={in_db}",
                e.instance.id, e.created
            ));
            async { Ok(()) }
        };
        if kind == "pre" {
            signals.on_pre_save(receiver);
        } else {
            signals.on_post_save(receiver);
        }
    }

    save(&signals, &db, &user(1), &log).await;
    save(&signals, &db, &user(1), &log).await;

    assert_eq!(
        entries(&log),
        [
            "pre 1 created=true in_db=false",
            "write 1",
            "post 1 created=true in_db=true",
            "pre 1 created=false in_db=true",
            "write 1",
            "post 1 created=false in_db=true",
        ]
    );
}

#[tokio::test]
async fn transaction_invalidates_at_once_and_again_after_commit() {
    let cache = cache();
    let signals = Signals::new();
    invalidate_user(&signals, &cache);
    let c = cache.clone();
    signals.on_post_delete(move |e: DeleteEvent<User>| {
        let cache = c.clone();
        async move {
            Cache::delete(&cache, &format!("user:{}", e.instance.id)).await?;
            Ok(())
        }
    });
    let pre = log();
    let p = Arc::clone(&pre);
    signals.on_pre_save(move |e: SaveEvent<User>| {
        p.lock().unwrap().push(format!("pre {}", e.instance.id));
        async { Ok(()) }
    });
    cache.set_sync("user:1", "old".to_string(), None).unwrap();
    cache.set_sync("user:2", "old".to_string(), None).unwrap();

    let tx = signals.transaction();
    tx.send_pre_save(&user(1), false).await;
    assert_eq!(tx.send_post_save(&user(1), false).await.delivered(), 1);
    assert_eq!(tx.send_post_delete(&user(2)).await.delivered(), 1);
    // A model without receivers is not queued.
    assert_eq!(
        tx.send_post_save(&Product { id: 1 }, true)
            .await
            .delivered(),
        0
    );
    assert_eq!(tx.pending(), 2);
    // Invalidated at once...
    assert!(!cache.exists_sync("user:1"));
    assert!(!cache.exists_sync("user:2"));
    // ...then refilled with the pre-commit rows by a concurrent reader.
    cache.set_sync("user:1", "old".to_string(), None).unwrap();
    cache.set_sync("user:2", "old".to_string(), None).unwrap();

    let report = tx.committed().await;

    assert_eq!((report.delivered(), report.failed()), (2, 0));
    assert!(!cache.exists_sync("user:1"));
    assert!(!cache.exists_sync("user:2"));
    // pre_save ran once, not replayed.
    assert_eq!(entries(&pre), ["pre 1"]);
    let stats = signals.stats();
    assert_eq!((stats.post_save.sends, stats.post_save.deliveries), (3, 2));
    assert_eq!(
        (stats.post_delete.sends, stats.post_delete.deliveries),
        (2, 2)
    );
}

#[tokio::test]
async fn transaction_replays_in_send_order() {
    let signals = Signals::new();
    let log = log();
    let l = Arc::clone(&log);
    signals.on_post_save(move |e: SaveEvent<User>| {
        l.lock().unwrap().push(format!("save {}", e.instance.id));
        async { Ok(()) }
    });
    let l = Arc::clone(&log);
    signals.on_post_delete(move |e: DeleteEvent<User>| {
        l.lock().unwrap().push(format!("delete {}", e.instance.id));
        async { Ok(()) }
    });

    let tx = signals.transaction();
    tx.send_post_save(&user(1), true).await;
    tx.send_post_delete(&user(2)).await;
    tx.send_post_save(&user(3), false).await;
    log.lock().unwrap().push("commit".to_string());
    tx.committed().await;

    assert_eq!(
        entries(&log),
        [
            "save 1", "delete 2", "save 3", "commit", "save 1", "delete 2", "save 3"
        ]
    );
}

#[tokio::test]
async fn nothing_is_replayed_after_a_rollback() {
    let cache = cache();
    let signals = Signals::new();
    invalidate_user(&signals, &cache);
    cache.set_sync("user:1", "old".to_string(), None).unwrap();

    let tx = signals.transaction();
    tx.send_post_save(&user(1), false).await;
    assert!(!cache.exists_sync("user:1"));
    // The row was not changed; a reader caches it again.
    cache.set_sync("user:1", "old".to_string(), None).unwrap();
    tx.rolled_back();

    assert!(cache.exists_sync("user:1"));
    assert_eq!(signals.stats().post_save.deliveries, 1);

    // Dropping the buffer (an early `?` return) is a rollback too.
    {
        let tx = signals.transaction();
        tx.send_post_save(&user(1), false).await;
    }
    cache.set_sync("user:1", "old".to_string(), None).unwrap();
    assert!(cache.exists_sync("user:1"));
    assert_eq!(signals.stats().post_save.deliveries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_from_many_tasks() {
    const TASKS: u64 = 200;
    let cache = cache();
    let signals = Signals::new();
    invalidate_user(&signals, &cache);
    let c = cache.clone();
    signals.on_post_delete(move |e: DeleteEvent<User>| {
        let cache = c.clone();
        async move {
            tokio::task::yield_now().await;
            Cache::delete(&cache, &format!("user:{}", e.instance.id)).await?;
            Ok(())
        }
    });
    for id in 0..TASKS {
        cache.set_sync(&format!("user:{id}"), id, None).unwrap();
    }

    let mut tasks = Vec::new();
    for id in 0..TASKS {
        let signals = signals.clone();
        tasks.push(tokio::spawn(async move {
            let u = user(id);
            if id % 2 == 0 {
                signals.send_post_save(&u, false).await
            } else {
                let tx = signals.transaction();
                let now = tx.send_post_delete(&u).await;
                let replay = tx.committed().await;
                assert_eq!(replay, now);
                now
            }
        }));
    }
    // Connecting while sends are in flight blocks nobody.
    signals.on_pre_delete(|_: DeleteEvent<User>| async { Ok(()) });
    for task in tasks {
        let report = task.await.unwrap();
        assert_eq!((report.delivered(), report.failed()), (1, 0));
    }

    for id in 0..TASKS {
        assert!(!cache.exists_sync(&format!("user:{id}")), "user:{id}");
    }
    let stats = signals.stats();
    assert_eq!(stats.post_save.deliveries, TASKS / 2);
    assert_eq!(stats.post_delete.deliveries, TASKS); // half sent once, replayed once
    assert_eq!(stats.failures(), 0);
}
