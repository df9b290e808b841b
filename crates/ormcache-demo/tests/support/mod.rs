//! Runs the real `ormcache-demo` binary: on a free port, with its own database, its
//! stderr kept in a file and printed when the test fails, killed on drop.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// "Not a hang" bound for anything the demo does (start, answer, stop).
pub const PATIENCE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory of its own, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ormcache-demo-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database for one test: a SQLite file in its own directory, or a schema of its
/// own (dropped on drop) in the PostgreSQL database of `ORMCACHE_TEST_DATABASE_URL`,
/// which the demo reaches through `options[search_path]` in its `DATABASE_URL`.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    dir: TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = TempDir::new("db");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("demo.db").display());
        Self {
            url,
            dir,
            postgres: None,
        }
    }

    /// `None` (and a loud SKIPPED line) without `ORMCACHE_TEST_DATABASE_URL`.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var("ORMCACHE_TEST_DATABASE_URL") else {
            // Straight to the process's stderr, past the test harness's capture.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test} on PostgreSQL: set ORMCACHE_TEST_DATABASE_URL=postgres://user:pass@host/db \
                 (the test works in a schema of its own there, dropped afterwards)"
            );
            return None;
        };
        let schema = format!(
            "ormcache_demo_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        postgres_sql(&admin_url, &format!("CREATE SCHEMA {schema}")).await;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options[search_path]={schema}");
        Some(Self {
            url,
            dir: TempDir::new("pg"),
            postgres: Some((admin_url, schema)),
        })
    }
}

async fn postgres_sql(url: &str, sql: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(url).await.unwrap();
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await.unwrap();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.postgres.take() else {
            return;
        };
        // Drop is synchronous: a small runtime of its own on a plain thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(postgres_sql(
                    &admin_url,
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ));
        })
        .join();
    }
}

/// A running demo process.
#[derive(Debug)]
pub struct Demo {
    pub name: String,
    pub port: u16,
    child: Mutex<Option<Child>>,
    log: PathBuf,
    _dir: TempDir,
    pub http: reqwest::Client,
}

/// Settings of a demo process.
#[derive(Debug, Clone, Default)]
pub struct DemoEnv {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub prefix: Option<String>,
    /// `RUST_LOG` (default `info,ormcache=debug`).
    pub rust_log: Option<String>,
}

impl DemoEnv {
    pub fn new(db: &TestDb) -> Self {
        Self {
            database_url: db.url.clone(),
            ..Self::default()
        }
    }

    pub fn redis(mut self, url: String, prefix: &str) -> Self {
        self.redis_url = Some(url);
        self.prefix = Some(prefix.to_owned());
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_owned());
        self
    }
}

impl Demo {
    /// Starts the binary and waits until `GET /health` answers `200`.
    pub async fn start(name: &str, env: &DemoEnv) -> Self {
        let demo = Self::spawn(name, env);
        demo.wait_ready().await;
        demo
    }

    /// Starts the binary without waiting.
    pub fn spawn(name: &str, env: &DemoEnv) -> Self {
        let dir = TempDir::new(name);
        let log = dir.path().join("stderr.log");
        let port = ormcache_testing::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ormcache-demo"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &env.database_url)
            .env(
                "RUST_LOG",
                env.rust_log.as_deref().unwrap_or("info,ormcache=debug"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = &env.redis_url {
            cmd.env("REDIS_URL", url);
        }
        if let Some(prefix) = &env.prefix {
            cmd.env("CACHE_PREFIX", prefix);
        }
        let child = cmd.spawn().expect("cannot start the ormcache-demo binary");
        Self {
            name: name.to_owned(),
            port,
            child: Mutex::new(Some(child)),
            log,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(PATIENCE)
                .build()
                .unwrap(),
        }
    }

    /// The process's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().unwrap().id()
    }

    /// Exit status, if it has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().unwrap())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited with {status} at start; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(r) = self.http.get(self.url("/health")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {PATIENCE:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `SIGTERM`.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends `sig` (`-INT`, `-TERM`, …).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (up to [`PATIENCE`]) for the process to exit.
    pub async fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One request; the status, the `X-Cache` header and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method.clone(), self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let response = req.send().await.unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}; log:\n{}",
                self.name,
                self.log()
            )
        });
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }

    /// `POST /users` of Ann (`201`); the created user.
    pub async fn create_ann(&self) -> Value {
        self.post(
            "/users",
            serde_json::json!({"name": "Ann", "email": "ann@example.com"}),
        )
        .await
        .expect(201)
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None, &[]).await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} (port {}) stderr ---\n{}",
                self.name,
                self.port,
                self.log()
            );
        }
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub x_cache: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Self {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (x_cache, content_type) = (header("x-cache"), header("content-type"));
        let status = response.status();
        let bytes = response.bytes().await.unwrap().to_vec();
        Self {
            status,
            x_cache,
            content_type,
            bytes,
        }
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        self.json()
    }

    /// Asserts the status and `X-Cache` and returns the JSON body.
    #[track_caller]
    pub fn expect_cached(&self, status: u16, x_cache: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(self.x_cache.as_deref(), Some(x_cache), "body: {body}");
        body
    }
}

/// Polls `f` until it returns `Some`, up to [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
