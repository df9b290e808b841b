//! [`RedisSentinels`]: one master, one replica and three Sentinels watching them,
//! each a process on a free port that a test can kill and restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{
    COUNTER, INSTALL_HINT, RedisServer, ServerOptions, TestCerts, check_installed, free_port,
};

/// The service (master) name the Sentinels watch.
pub const SERVICE: &str = "ormcache";

/// How long the master may be silent before a Sentinel calls it down (ms).
const DOWN_AFTER_MS: u64 = 1000;

/// One Sentinel process: `redis-server <conf> --sentinel`.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    /// The TLS port, when the Sentinels use TLS.
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Sentinel {
    fn start(master_port: u16, password: Option<&str>, certs: Option<&TestCerts>) -> Self {
        let port = free_port();
        let tls_port = certs.map(|_| free_port());
        let dir = std::env::temp_dir().join(format!(
            "ormcache-sentinel-{}-{}-{}",
            std::process::id(),
            port,
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            dir = dir.display(),
            log = dir.join("sentinel.log").display(),
        );
        if let Some(pw) = password {
            // The Sentinels use the servers' password, to reach them and to be
            // reached (a URL's password goes to both unless it says otherwise).
            conf.push_str(&format!(
                "sentinel auth-pass {SERVICE} {pw}\nrequirepass {pw}\n"
            ));
        }
        if let (Some(certs), Some(tls_port)) = (certs, tls_port) {
            // TLS for clients and, with tls-replication, towards the servers.
            let (cert, key) = certs.server();
            conf.push_str(&format!(
                "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                cert.display(),
                key.display(),
                certs.ca().display()
            ));
        }
        let conf_path = dir.join("sentinel.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server --sentinel: {e}. {INSTALL_HINT}"));
        let sentinel = Self {
            port,
            tls_port,
            dir,
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(
                Instant::now() < deadline,
                "a Sentinel did not start; log:\n{}",
                sentinel.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sentinel
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if n > 0)
}

/// A master, a replica and three Sentinels (quorum 2) watching service
/// [`SERVICE`]; every process is killed on drop.
///
/// ```no_run
/// let sentinels = ormcache_testing::RedisSentinels::start(None);
/// println!("{}", sentinels.url()); // redis+sentinel://127.0.0.1:…,…/ormcache
/// let before = sentinels.master_port();
/// sentinels.failover();
/// assert_ne!(sentinels.wait_for_new_master(before), before);
/// ```
#[derive(Debug)]
pub struct RedisSentinels {
    /// Each server with its TLS port when the setup uses TLS.
    servers: Vec<(RedisServer, Option<u16>)>,
    sentinels: Vec<Sentinel>,
    password: Option<String>,
    tls: bool,
}

impl RedisSentinels {
    /// Starts the master, its replica and three Sentinels, and waits until the
    /// Sentinels know the replica (so that a failover can happen). `password`: the
    /// servers and the Sentinels require it.
    ///
    /// # Panics
    /// If a process does not start or the setup is not ready within 30 s.
    pub fn start(password: Option<&str>) -> Self {
        Self::start_with(password, None)
    }

    /// As [`start`](Self::start), with TLS everywhere: the servers and the
    /// Sentinels listen with TLS (beside plain text, for the harness), replication
    /// and the Sentinels' links use it, and [`url`](Self::url) is
    /// `rediss+sentinel://` with the Sentinels' TLS ports.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_tls(certs: &TestCerts, password: Option<&str>) -> Self {
        Self::start_with(password, Some(certs))
    }

    fn start_with(password: Option<&str>, certs: Option<&TestCerts>) -> Self {
        check_installed();
        let server = |replica_of: Option<u16>| {
            let mut args: Vec<String> = Vec::new();
            if let Some(pw) = password {
                for flag in ["--requirepass", "--masterauth"] {
                    args.extend([flag.to_owned(), pw.to_owned()]);
                }
            }
            let tls_port = certs.map(|certs| {
                let port = free_port();
                args.extend(certs.server_args(port, false));
                args.extend(["--tls-replication".to_owned(), "yes".to_owned()]);
                port
            });
            if let Some(port) = replica_of {
                args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned()]);
                args.push(port.to_string());
            }
            let s = RedisServer::start_with(ServerOptions {
                args,
                unix_socket: false,
            });
            (s, tls_port)
        };
        let master = server(None);
        // Replicas and Sentinels reach the master on its TLS port when there is one.
        let master_port = master.1.unwrap_or(master.0.port());
        let replica = server(Some(master_port));
        let sentinels = (0..3)
            .map(|_| Sentinel::start(master_port, password, certs))
            .collect();
        let this = Self {
            servers: vec![master, replica],
            sentinels,
            password: password.map(str::to_owned),
            tls: certs.is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !this.ready() {
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not see the replica within 30 s\n{}",
                this.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// Every Sentinel sees one replica and the other Sentinels.
    fn ready(&self) -> bool {
        self.sentinels.iter().all(|s| {
            self.sentinel_query(s.port, &["SENTINEL", "MASTER", SERVICE])
                .is_ok_and(|reply| {
                    let field = |name: &str| {
                        reply
                            .iter()
                            .position(|v| v == name)
                            .and_then(|i| reply.get(i + 1))
                            .cloned()
                            .unwrap_or_default()
                    };
                    field("num-slaves") == "1" && field("num-other-sentinels") == "2"
                })
        })
    }

    fn sentinel_query(&self, port: u16, args: &[&str]) -> redis::RedisResult<Vec<String>> {
        let client = self.client(port);
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// `redis+sentinel://[:password@]127.0.0.1:{s1},…/ormcache` (`rediss+sentinel://`
    /// with the TLS ports for [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect();
        let scheme = if self.tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!(":{pw}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}{}/{SERVICE}", hosts.join(","))
    }

    /// The master's port as the Sentinels report it now (its TLS port in a TLS
    /// setup; [`server`](Self::server) and [`client`](Self::client) take either).
    ///
    /// # Panics
    /// If no Sentinel answers.
    pub fn master_port(&self) -> u16 {
        for s in &self.sentinels {
            if let Ok(addr) =
                self.sentinel_query(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
                && let Some(port) = addr.get(1).and_then(|p| p.parse().ok())
            {
                return port;
            }
        }
        panic!("no Sentinel answered\n{}", self.logs());
    }

    /// The server (master or replica) on `port`.
    ///
    /// # Panics
    /// If none of the servers has that port.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|(s, tls)| s.port() == port || *tls == Some(port))
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("no server on port {port}"))
    }

    /// The master now.
    pub fn master(&self) -> &RedisServer {
        self.server(self.master_port())
    }

    /// A redis-rs client for the server or Sentinel on `port` (in plain text, on
    /// the same process's plain port for a TLS port), with the password.
    pub fn client(&self, port: u16) -> redis::Client {
        let port = self
            .servers
            .iter()
            .find(|(_, tls)| *tls == Some(port))
            .map(|(s, _)| s.port())
            .or_else(|| {
                self.sentinels
                    .iter()
                    .find(|s| s.tls_port == Some(port))
                    .map(|s| s.port)
            })
            .unwrap_or(port);
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!(":{pw}@"))
            .unwrap_or_default();
        redis::Client::open(format!("redis://{auth}127.0.0.1:{port}")).unwrap()
    }

    /// `SENTINEL FAILOVER` through the first Sentinel that accepts it: a graceful
    /// switch to the replica.
    ///
    /// # Panics
    /// If no Sentinel accepts it.
    pub fn failover(&self) {
        let ok = self.sentinels.iter().any(|s| {
            self.client(s.port)
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(SERVICE)
                        .query::<String>(&mut c)
                })
                .is_ok()
        });
        assert!(
            ok,
            "no Sentinel accepted SENTINEL FAILOVER\n{}",
            self.logs()
        );
    }

    /// Waits (up to 30 s) until the Sentinels report a master other than the one
    /// on `old_port`, and that server says it is a master; its port.
    ///
    /// # Panics
    /// If that does not happen in time.
    pub fn wait_for_new_master(&self, old_port: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = self.master_port();
            if port != old_port && self.is_master(port) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no failover away from port {old_port} within 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_master(&self, port: u16) -> bool {
        self.client(port)
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut c)
            })
            .is_ok_and(|info| info.contains("role:master"))
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let servers = self
            .servers
            .iter()
            .map(|(s, _)| format!("--- server {} log ---\n{}", s.port(), s.log()));
        let sentinels = self
            .sentinels
            .iter()
            .map(|s| format!("--- sentinel {} log ---\n{}", s.port, s.log()));
        servers.chain(sentinels).collect::<Vec<_>>().join("\n")
    }
}
