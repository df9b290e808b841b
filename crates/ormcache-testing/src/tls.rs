//! TLS test support: certificates generated at test time with the `openssl` command
//! (a CA, a server certificate for `127.0.0.1`/`localhost`, a client certificate,
//! and a second, untrusted CA with its own client certificate), and `redis-server`
//! processes and clusters that listen with TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{COUNTER, RedisServer, ServerOptions, free_port};

/// A directory of PEM files made for one test; removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl: {e}. Install it: `sudo apt-get install -y openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key.
fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// A self-signed CA `name.crt` with key `name.key`.
fn ca(dir: &Path, name: &str) {
    key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=ormcache test {name}"),
        ],
    );
}

/// A certificate `name.crt` (key `name.key`) signed by CA `ca`, with extensions
/// `ext` (an openssl extension config).
fn signed(dir: &Path, name: &str, ca: &str, ext: &str) {
    key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=ormcache test {name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl TestCerts {
    /// Generates every certificate (takes a few hundred milliseconds).
    ///
    /// # Panics
    /// If `openssl` is missing or fails.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ormcache-certs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        ca(&dir, "ca");
        ca(&dir, "other-ca");
        signed(
            &dir,
            "server",
            "ca",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";
        signed(&dir, "client", "ca", client_ext);
        signed(&dir, "rogue-client", "other-ca", client_ext);
        Self { dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA that signed nothing the server uses (a wrong CA for a client).
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The server's certificate and key (for `127.0.0.1` and `localhost`).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.crt"), self.dir.join("server.key"))
    }

    /// A client certificate and key signed by [`ca`](Self::ca).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.crt"), self.dir.join("client.key"))
    }

    /// A client certificate and key signed by [`other_ca`](Self::other_ca), which
    /// a server that checks clients refuses.
    pub fn rogue_client(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("rogue-client.crt"),
            self.dir.join("rogue-client.key"),
        )
    }

    /// `redis-server` arguments to listen with TLS on `tls_port` with these
    /// certificates; `verify_clients`: require a client certificate signed by the CA.
    pub fn server_args(&self, tls_port: u16, verify_clients: bool) -> Vec<String> {
        let (cert, key) = self.server();
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(self.ca()),
            "--tls-auth-clients".into(),
            if verify_clients { "yes" } else { "no" }.into(),
        ]
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` that listens with TLS (and, for the harness's own checks, in
/// plain text on [`RedisServer::port`]).
#[derive(Debug)]
pub struct TlsRedisServer {
    server: RedisServer,
    tls_port: u16,
}

impl TlsRedisServer {
    /// Starts a server with `certs`; `verify_clients`: it requires a client
    /// certificate signed by the test CA (mutual TLS). `extra`: more arguments.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start(certs: &TestCerts, verify_clients: bool, extra: &[&str]) -> Self {
        let tls_port = free_port();
        let mut args = certs.server_args(tls_port, verify_clients);
        args.extend(extra.iter().map(ToString::to_string));
        let server = RedisServer::start_with(ServerOptions {
            args,
            unix_socket: false,
        });
        Self { server, tls_port }
    }

    /// The TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// `rediss://127.0.0.1:{tls_port}`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The process, with its plain-text port, log, kill and restart.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }
}

/// A Redis Cluster of three primaries whose clients and cluster bus use TLS.
#[derive(Debug)]
pub struct TlsRedisCluster {
    nodes: Vec<TlsRedisServer>,
}

impl TlsRedisCluster {
    /// Starts three TLS nodes, joins them with `redis-cli --tls --cluster create`
    /// and waits until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If the cluster does not form (with every node's log).
    pub fn start(certs: &TestCerts) -> Self {
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
        ];
        let nodes: Vec<TlsRedisServer> = (0..3)
            .map(|_| TlsRedisServer::start(certs, false, &extra))
            .collect();
        let cluster = Self { nodes };
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(certs.ca())
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.tls_port())),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}. {}", crate::INSTALL_HINT));
        assert!(
            out.status.success(),
            "redis-cli --tls --cluster create failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    n.server()
                        .client()
                        .get_connection_with_timeout(Duration::from_secs(1))
                        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                        .unwrap_or_else(|e| format!("unreachable: {e}"))
                })
                .collect();
            if states
                .iter()
                .all(|s| s.contains("cluster_state:ok") && s.contains("cluster_size:3"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the TLS cluster did not reach cluster_state:ok within 30 s: {states:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rediss+cluster://127.0.0.1:{tls port},…` of every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.tls_port()))
            .collect();
        format!("rediss+cluster://{}", hosts.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[TlsRedisServer] {
        &self.nodes
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} log ---\n{}", n.tls_port(), n.server().log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
