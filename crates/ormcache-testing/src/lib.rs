//! Test support shared by ormcache's tests, benches and bench harness: real
//! `redis-server` processes, each on a free port in its own temporary directory, that
//! a test can kill, pause (`SIGSTOP`), resume and restart on the same port.
//!
//! ```no_run
//! let server = ormcache_testing::RedisServer::start();
//! println!("{}", server.url());
//! server.pause();
//! server.resume();
//! server.kill();
//! server.restart();
//! ```
//!
//! [`RedisCluster`] starts three such servers with `cluster-enabled yes` and joins
//! them with `redis-cli --cluster create`.
//!
//! If `redis-server` is not installed, [`RedisServer::start`] panics with a message
//! that says how to install it: tests never skip silently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to install the server, shown when it is missing.
pub const INSTALL_HINT: &str = "redis-server was not found on PATH. Install it: \
`sudo apt-get install -y redis-server` (Debian/Ubuntu), `brew install redis` (macOS); \
`bash .ci/run` installs it automatically on Debian/Ubuntu.";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Picks a port that is free now, in 20000..50000, whose cluster bus port
/// (port + 10000) is free too (and below 65536).
pub fn free_port() -> u16 {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ (std::process::id() << 8)
        ^ COUNTER
            .fetch_add(7919, Ordering::Relaxed)
            .wrapping_mul(2_654_435_761);
    let mut x = seed | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = 20000 + (x % 30000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port found in 20000..50000");
}

fn check_installed() {
    match Command::new("redis-server").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!("{INSTALL_HINT}"),
    }
}

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra `redis-server` arguments, e.g. `["--requirepass", "secret"]`.
    pub args: Vec<String>,
    /// Also listen on a unix socket in the server's directory.
    pub unix_socket: bool,
}

/// A `redis-server` process owned by a test; killed and cleaned up on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    options: ServerOptions,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is missing (with an install hint) or does not start.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with extra options.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[allow(clippy::needless_pass_by_value)]
    pub fn start_with(options: ServerOptions) -> Self {
        check_installed();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "ormcache-redis-{}-{}-{}",
                std::process::id(),
                port,
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let server = Self {
                port,
                dir,
                options: options.clone(),
                child: Mutex::new(None),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start after 5 attempts; last log:\n{last_log}");
    }

    fn spawn(&self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path());
        if self.options.unix_socket {
            cmd.arg("--unixsocket")
                .arg(self.socket_path())
                .args(["--unixsocketperm", "700"]);
        }
        cmd.args(&self.options.args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}. {INSTALL_HINT}"))?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers_ping() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "redis-server exited with {status}; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(format!(
            "redis-server did not answer within 10 s; log:\n{}",
            self.log()
        ))
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        // A server with a password answers -NOAUTH: it is up all the same.
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH")))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The unix socket path (listened on when `unix_socket` was asked for).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .unwrap();
            assert!(status.success(), "kill {sig} {pid} failed");
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit. Data is lost.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs).
    ///
    /// # Panics
    /// If it does not come back within 10 s.
    pub fn restart(&self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if Instant::now() > deadline => {
                    panic!("redis-server did not restart: {log}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A redis-rs client for this server (for planting raw bytes and checking what
    /// the cache wrote).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// A redis-rs multiplexed connection.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

mod cluster;
pub use cluster::{ClusterOptions, RedisCluster};
mod sentinel;
pub use sentinel::{RedisSentinels, SERVICE as SENTINEL_SERVICE};
mod tls;
pub use tls::{TestCerts, TlsRedisCluster, TlsRedisServer};

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server would ignore SIGTERM; SIGKILL works on stopped processes.
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                println!("--- redis-server log (port {}) ---\n{}", self.port, log);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
