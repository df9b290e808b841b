//! [`RedisUrl`]: the one parser of Redis URLs, used wherever a Redis is configured
//! ([`DistributedConfig::redis_url`](super::DistributedConfig::redis_url),
//! [`AnyCache::from_url`](crate::AnyCache::from_url), the demo's `REDIS_URL`, the
//! bench's `--redis-url`), and the redaction of secrets in whatever text claims to
//! be a URL.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::redact_url;
use crate::error::{Error, Result};

/// Default port of a Redis server.
const REDIS_PORT: u16 = 6379;
/// Default port of a Sentinel.
const SENTINEL_PORT: u16 = 26379;

/// What a [`RedisUrl`] points at.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server over TCP (`redis://`, `rediss://`).
    Server,
    /// One server over a unix socket (`redis+unix://`).
    Unix,
    /// A Redis Cluster, by seed nodes (`redis+cluster://`, `rediss+cluster://`).
    Cluster,
    /// A server watched by Sentinels (`redis+sentinel://`, `rediss+sentinel://`).
    Sentinel,
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub(crate) name: String,
    pub(crate) port: u16,
}

#[derive(Clone, PartialEq, Eq)]
enum Target {
    Tcp(Vec<Host>),
    Unix(String),
}

/// A parsed Redis URL: one form per deployment, with the options a URL carries.
///
/// | form | |
/// | --- | --- |
/// | `redis://[user[:password]@]host[:port][/db]` | one server (port 6379 by default) |
/// | `rediss://…` | the same over TLS (feature `tls`) |
/// | `redis+unix:///path/to/redis.sock[?db=N&user=U&pass=P]` | a unix socket (`unix://` is accepted too) |
/// | `redis+cluster://[user[:password]@]host1:port1,host2:port2,…` | a Redis Cluster by seed nodes (feature `cluster`) |
/// | `rediss+cluster://…` | the same over TLS |
/// | `redis+sentinel://[user[:password]@]host1:port1,…/service_name[/db]` | the master named `service_name`, found through Sentinels (port 26379 by default; feature `sentinel`) |
/// | `rediss+sentinel://…` | the same over TLS (to the Sentinels and to the master) |
///
/// User names, passwords and the service name are percent-decoded (`%40` for `@`).
/// The user and password are those of the Redis servers; on a Sentinel URL they are
/// also sent to the Sentinels unless `sentinel_user`/`sentinel_password` say
/// otherwise.
///
/// Query options (`?timeout=250ms&connect_timeout=1s`):
///
/// | option | forms | meaning |
/// | --- | --- | --- |
/// | `timeout` | all | bound on every Redis call (as [`command_timeout`](super::DistributedConfig::command_timeout)); a duration: `250ms`, `1s`, `2m`, `500us` |
/// | `connect_timeout` | all | bound on connecting (as [`socket_connect_timeout`](super::DistributedConfig::socket_connect_timeout)) |
/// | `insecure` | TLS forms | skip certificate verification: only when named, never by default |
/// | `sentinel_user`, `sentinel_password` | Sentinel | credentials of the Sentinels, when they differ from the servers' |
/// | `db`, `user`, `pass` | unix | database, ACL user and password of a unix-socket URL |
///
/// Anything else is an error: an unknown option, a missing or bad port, a database
/// on a cluster, a Sentinel URL without a service name. The error quotes the URL
/// with its password replaced by `***` and says what was expected.
///
/// `Display` and `Debug` show the URL with every secret replaced by `***`;
/// [`to_string_with_secrets`](Self::to_string_with_secrets) shows it whole, and
/// parsing that gives back an equal value.
///
/// ```
/// use ormcache::{RedisUrl, Topology};
///
/// let url: RedisUrl = "redis+sentinel://app:s3cret@10.0.0.1,10.0.0.2:26380/mymaster/2?timeout=100ms"
///     .parse()?;
/// assert_eq!(url.topology(), Topology::Sentinel);
/// assert_eq!(url.service_name(), Some("mymaster"));
/// assert_eq!(url.db(), 2);
/// assert_eq!(url.username(), Some("app"));
/// assert_eq!(
///     url.to_string(),
///     "redis+sentinel://app:***@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?timeout=100ms"
/// );
/// assert_eq!(url.to_string_with_secrets().parse::<RedisUrl>()?, url);
///
/// let err = "redis://:s3cret@host:notaport".parse::<RedisUrl>().unwrap_err();
/// assert!(err.to_string().contains("redis://:***@host:notaport"), "{err}");
/// assert!(!err.to_string().contains("s3cret"));
/// # Ok::<(), ormcache::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    topology: Topology,
    tls: bool,
    target: Target,
    service: Option<String>,
    username: Option<String>,
    password: Option<String>,
    db: u32,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    insecure: bool,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

const FORMS: &str = "redis://, rediss://, redis+unix://, redis+cluster://, rediss+cluster://, \
                     redis+sentinel:// or rediss+sentinel://";

/// Characters percent-encoded nowhere (RFC 3986 "unreserved").
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a '%' that is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8".to_owned())
}

/// Parses `250ms`, `1s`, `2m`, `500us`.
fn parse_duration(s: &str) -> Option<Duration> {
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..digits].parse().ok()?;
    let d = match &s[digits..] {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// The shortest exact form of `d` in `parse_duration`'s units.
fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn parse_host(s: &str, default_port: u16) -> std::result::Result<Host, String> {
    let (name, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("host {s:?} opens '[' without ']'"))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        match rest {
            "" => (addr, None),
            _ => match rest.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return Err(format!("unexpected {rest:?} after [{addr}]")),
            },
        }
    } else {
        match s.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        }
    };
    if name.is_empty() {
        return Err("a host is empty".to_owned());
    }
    if !s.starts_with('[')
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{name:?} is not a host name or address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port {p:?} of {name} is not a number 1-65535")),
        },
    };
    Ok(Host {
        name: name.to_owned(),
        port,
    })
}

fn parse_db(s: &str) -> std::result::Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("database {s:?} is not a number 0-{}", u32::MAX))
}

fn some_nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl RedisUrl {
    /// Parses a URL (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) naming the URL (password
    /// redacted) and what was expected.
    ///
    /// ```
    /// let url = ormcache::RedisUrl::parse("rediss://default:pw@cache.internal:6380/1")?;
    /// assert!(url.is_tls());
    /// assert_eq!(url.to_string(), "rediss://default:***@cache.internal:6380/1");
    /// # Ok::<(), ormcache::Error>(())
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        Self::parse_inner(url).map_err(|expected| {
            Error::invalid(
                "redis_url",
                format!("cannot use {:?}: {expected}", redact_url(url)),
            )
        })
    }

    fn parse_inner(url: &str) -> std::result::Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("expected a URL starting with {FORMS}"));
        };
        let (topology, tls) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (Topology::Server, false),
            "rediss" => (Topology::Server, true),
            "redis+unix" | "unix" => (Topology::Unix, false),
            "redis+cluster" => (Topology::Cluster, false),
            "rediss+cluster" => (Topology::Cluster, true),
            "redis+sentinel" => (Topology::Sentinel, false),
            "rediss+sentinel" => (Topology::Sentinel, true),
            other => return Err(format!("unknown scheme {other}://, expected {FORMS}")),
        };
        if rest.contains('#') {
            return Err(
                "a '#' fragment is not used (write ?insecure to skip TLS verification; \
                 percent-encode '#' in a password as %23)"
                    .to_owned(),
            );
        }
        let (hier, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let mut out = Self {
            topology,
            tls,
            target: Target::Tcp(Vec::new()),
            service: None,
            username: None,
            password: None,
            db: 0,
            timeout: None,
            connect_timeout: None,
            insecure: false,
            sentinel_username: None,
            sentinel_password: None,
        };
        if topology == Topology::Unix {
            let Some(path) = hier.strip_prefix('/') else {
                return Err("expected redis+unix:///absolute/path.sock".to_owned());
            };
            let path = format!("/{}", decode(path)?);
            if path.len() < 2 {
                return Err("expected redis+unix:///absolute/path.sock (no path given)".to_owned());
            }
            out.target = Target::Unix(path);
        } else {
            out.parse_network(hier)?;
        }
        if let Some(query) = query {
            out.parse_query(query)?;
        }
        Ok(out)
    }

    fn parse_network(&mut self, hier: &str) -> std::result::Result<(), String> {
        // The last '@' ends the credentials, so an unencoded '@' or '/' in a password
        // still parses.
        let (userinfo, after) = match hier.rfind('@') {
            Some(at) => (Some(&hier[..at]), &hier[at + 1..]),
            None => (None, hier),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            self.username = some_nonempty(decode(user)?);
            self.password = match password {
                Some(p) => some_nonempty(decode(p)?),
                None => None,
            };
        }
        let (hosts, path) = match after.find('/') {
            Some(slash) => (&after[..slash], &after[slash..]),
            None => (after, ""),
        };
        let default_port = if self.topology == Topology::Sentinel {
            SENTINEL_PORT
        } else {
            REDIS_PORT
        };
        let hosts = hosts
            .split(',')
            .map(|h| parse_host(h, default_port))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let segments: Vec<&str> = match path.strip_prefix('/') {
            None | Some("") => Vec::new(),
            Some(p) => p.split('/').collect(),
        };
        match self.topology {
            Topology::Server => {
                if hosts.len() != 1 {
                    return Err(format!(
                        "{} hosts given; one server takes one host (several are \
                         redis+cluster:// or redis+sentinel://)",
                        hosts.len()
                    ));
                }
                match segments.as_slice() {
                    [] => {}
                    [db] => self.db = parse_db(db)?,
                    _ => return Err(format!("expected /db after the host, got {path:?}")),
                }
            }
            Topology::Cluster => match segments.as_slice() {
                [] | ["0"] => {}
                _ => {
                    return Err(format!(
                        "a Redis Cluster has only database 0, got path {path:?}"
                    ));
                }
            },
            Topology::Sentinel => match segments.as_slice() {
                [service] | [service, _] if !service.is_empty() => {
                    self.service = Some(decode(service)?);
                    if let Some(db) = segments.get(1) {
                        self.db = parse_db(db)?;
                    }
                }
                _ => {
                    return Err(
                        "expected redis+sentinel://host:port,…/service_name[/db]".to_owned()
                    );
                }
            },
            Topology::Unix => {}
        }
        self.target = Target::Tcp(hosts);
        Ok(())
    }

    fn parse_query(&mut self, query: &str) -> std::result::Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(decode(v)?)),
                None => (pair, None),
            };
            if seen.contains(&key) {
                return Err(format!("option {key} is given twice"));
            }
            seen.push(key);
            let need = |what: &str| {
                value
                    .clone()
                    .ok_or_else(|| format!("option {key} needs a value ({what})"))
            };
            let only = |allowed: bool, forms: &str| {
                if allowed {
                    Ok(())
                } else {
                    Err(format!("option {key} applies to {forms} URLs only"))
                }
            };
            let duration = |v: String| {
                parse_duration(&v).ok_or_else(|| {
                    format!("{key}={v:?} is not a duration like 250ms, 1s, 2m or 500us")
                })
            };
            let unix = self.topology == Topology::Unix;
            let sentinel = self.topology == Topology::Sentinel;
            match key {
                "timeout" => self.timeout = Some(duration(need("a duration")?)?),
                "connect_timeout" => self.connect_timeout = Some(duration(need("a duration")?)?),
                "insecure" => {
                    only(self.tls, "TLS (rediss…://)")?;
                    self.insecure = match value.as_deref() {
                        None | Some("" | "true" | "1") => true,
                        Some("false" | "0") => false,
                        Some(v) => return Err(format!("insecure={v:?}: expected true or false")),
                    };
                }
                "sentinel_user" => {
                    only(sentinel, "Sentinel")?;
                    self.sentinel_username = some_nonempty(need("a user name")?);
                }
                "sentinel_password" => {
                    only(sentinel, "Sentinel")?;
                    self.sentinel_password = some_nonempty(need("a password")?);
                }
                "db" => {
                    only(unix, "unix-socket (other forms write /db in the path)")?;
                    self.db = parse_db(&need("a number")?)?;
                }
                "user" => {
                    only(unix, "unix-socket (other forms write user@host)")?;
                    self.username = some_nonempty(need("a user name")?);
                }
                "pass" | "password" => {
                    only(unix, "unix-socket (other forms write :password@host)")?;
                    self.password = some_nonempty(need("a password")?);
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?}; expected timeout, connect_timeout, insecure, \
                         sentinel_user, sentinel_password, or (unix) db, user, pass"
                    ));
                }
            }
        }
        Ok(())
    }

    /// One `redis+cluster://` URL from seed URLs of single servers (credentials,
    /// TLS and options from the first).
    #[cfg(feature = "cluster")]
    pub(crate) fn cluster_of(seeds: &[Self]) -> Result<Self> {
        let mut hosts = Vec::new();
        for seed in seeds {
            if seed.topology != Topology::Server {
                return Err(Error::invalid(
                    "cluster_nodes",
                    format!("cannot use {seed}: expected redis:// or rediss:// seed nodes"),
                ));
            }
            hosts.extend(seed.tcp_hosts().iter().cloned());
        }
        let Some(first) = seeds.first() else {
            return Err(Error::invalid("cluster_nodes", "no seed nodes"));
        };
        Ok(Self {
            topology: Topology::Cluster,
            target: Target::Tcp(hosts),
            db: 0,
            ..first.clone()
        })
    }

    /// What the URL points at.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Whether connections use TLS (`rediss…://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether certificate verification is skipped (`?insecure`).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The ACL user of the Redis servers, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether the URL carries a password (which is never shown).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The database (0 unless the URL names one).
    pub fn db(&self) -> u32 {
        self.db
    }

    /// The Sentinel service (master) name of a Sentinel URL.
    pub fn service_name(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// `?timeout=`, if given.
    pub fn command_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// `?connect_timeout=`, if given.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The hosts and ports: the server, the cluster's seeds or the Sentinels (none
    /// for a unix socket).
    pub fn hosts(&self) -> impl Iterator<Item = (&str, u16)> {
        let hosts: &[Host] = match &self.target {
            Target::Tcp(h) => h,
            Target::Unix(_) => &[],
        };
        hosts.iter().map(|h| (h.name.as_str(), h.port))
    }

    /// The socket path of a unix-socket URL.
    pub fn socket_path(&self) -> Option<&str> {
        match &self.target {
            Target::Unix(p) => Some(p),
            Target::Tcp(_) => None,
        }
    }

    /// The whole URL, passwords included, in the canonical form (parsing it gives
    /// back an equal value). Never log it.
    pub fn to_string_with_secrets(&self) -> String {
        self.render(false)
    }

    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    pub(crate) fn sentinel_credentials(&self) -> (Option<&str>, Option<&str>) {
        (
            self.sentinel_username.as_deref().or(self.username()),
            self.sentinel_password.as_deref().or(self.password()),
        )
    }

    pub(crate) fn tcp_hosts(&self) -> &[Host] {
        match &self.target {
            Target::Tcp(h) => h,
            Target::Unix(_) => &[],
        }
    }

    fn render(&self, redact: bool) -> String {
        let secret = |s: &str| {
            if redact {
                "***".to_owned()
            } else {
                encode(s, unreserved)
            }
        };
        let scheme = match (self.topology, self.tls) {
            (Topology::Server, false) => "redis",
            (Topology::Server, true) => "rediss",
            (Topology::Unix, _) => "redis+unix",
            (Topology::Cluster, false) => "redis+cluster",
            (Topology::Cluster, true) => "rediss+cluster",
            (Topology::Sentinel, false) => "redis+sentinel",
            (Topology::Sentinel, true) => "rediss+sentinel",
        };
        let mut out = format!("{scheme}://");
        let mut query: Vec<String> = Vec::new();
        match &self.target {
            Target::Unix(path) => {
                out.push_str(&encode(path, |b| unreserved(b) || b == b'/'));
                if self.db != 0 {
                    query.push(format!("db={}", self.db));
                }
                if let Some(u) = &self.username {
                    query.push(format!("user={}", encode(u, unreserved)));
                }
                if let Some(p) = &self.password {
                    query.push(format!("pass={}", secret(p)));
                }
            }
            Target::Tcp(hosts) => {
                match (&self.username, &self.password) {
                    (None, None) => {}
                    (u, p) => {
                        if let Some(u) = u {
                            out.push_str(&encode(u, unreserved));
                        }
                        if let Some(p) = p {
                            out.push(':');
                            out.push_str(&secret(p));
                        }
                        out.push('@');
                    }
                }
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|h| {
                        if h.name.contains(':') {
                            format!("[{}]:{}", h.name, h.port)
                        } else {
                            format!("{}:{}", h.name, h.port)
                        }
                    })
                    .collect();
                out.push_str(&hosts.join(","));
                if let Some(service) = &self.service {
                    out.push('/');
                    out.push_str(&encode(service, unreserved));
                }
                if self.db != 0 {
                    out.push_str(&format!("/{}", self.db));
                }
            }
        }
        if let Some(t) = self.timeout {
            query.push(format!("timeout={}", format_duration(t)));
        }
        if let Some(t) = self.connect_timeout {
            query.push(format!("connect_timeout={}", format_duration(t)));
        }
        if self.insecure {
            query.push("insecure".to_owned());
        }
        if let Some(u) = &self.sentinel_username {
            query.push(format!("sentinel_user={}", encode(u, unreserved)));
        }
        if let Some(p) = &self.sentinel_password {
            query.push(format!("sentinel_password={}", secret(p)));
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }

    /// The redis-rs connection to `host` (or to the socket), with this URL's
    /// credentials and database; TLS when the URL says so.
    pub(crate) fn connection_info(&self, host: Option<&Host>) -> Result<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo as _;
        let addr = match (&self.target, host.or(self.tcp_hosts().first())) {
            (Target::Unix(path), _) => redis::ConnectionAddr::Unix(path.into()),
            (Target::Tcp(_), Some(h)) if self.tls => redis::ConnectionAddr::TcpTls {
                host: h.name.clone(),
                port: h.port,
                insecure: self.insecure,
                tls_params: None,
            },
            (Target::Tcp(_), Some(h)) => redis::ConnectionAddr::Tcp(h.name.clone(), h.port),
            (Target::Tcp(_), None) => {
                return Err(Error::invalid("create", format!("{self} names no host")));
            }
        };
        let info = addr
            .into_connection_info()
            .map_err(|e| Error::invalid("create", format!("cannot use {self}: {e}")))?;
        Ok(info.set_redis_settings(self.redis_settings()))
    }

    /// Credentials and database for the Redis servers.
    pub(crate) fn redis_settings(&self) -> redis::RedisConnectionInfo {
        let mut redis = redis::RedisConnectionInfo::default().set_db(i64::from(self.db));
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        redis
    }
}

impl FromStr for RedisUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with every secret replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.render(true)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for d in [
            Duration::from_micros(1),
            Duration::from_millis(250),
            Duration::from_secs(1),
            Duration::from_millis(1500),
            Duration::from_secs(120),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in [
            "",
            "1",
            "ms",
            "1h",
            "0s",
            "-1s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn forms_parse_into_their_parts() {
        let u = RedisUrl::parse("redis://h").unwrap();
        assert_eq!(u.topology(), Topology::Server);
        assert_eq!(u.hosts().collect::<Vec<_>>(), [("h", 6379)]);
        let u = RedisUrl::parse("rediss+cluster://u:p%40w@a:1,[::1]:2").unwrap();
        assert_eq!(u.topology(), Topology::Cluster);
        assert!(u.is_tls());
        assert_eq!(u.password(), Some("p@w"));
        assert_eq!(u.hosts().collect::<Vec<_>>(), [("a", 1), ("::1", 2)]);
        let u = RedisUrl::parse("redis+unix:///run/redis.sock?db=3&pass=x").unwrap();
        assert_eq!(u.socket_path(), Some("/run/redis.sock"));
        assert_eq!((u.db(), u.password()), (3, Some("x")));
        let u = RedisUrl::parse("redis+sentinel://s1,s2:1/mymaster?sentinel_password=q").unwrap();
        assert_eq!(u.hosts().collect::<Vec<_>>(), [("s1", 26379), ("s2", 1)]);
        assert_eq!(u.sentinel_credentials(), (None, Some("q")));
    }

    #[test]
    fn malformed_urls_say_what_was_expected() {
        for (raw, expected) in [
            ("localhost:6379", "expected a URL starting with redis://"),
            ("http://h", "unknown scheme http://"),
            ("redis://h:0", "not a number 1-65535"),
            ("redis://h:99999", "not a number 1-65535"),
            ("redis://a,b", "one server takes one host"),
            ("redis://h/x", "database \"x\" is not a number"),
            ("redis+cluster://h/1", "only database 0"),
            ("redis+sentinel://h", "service_name[/db]"),
            ("redis://h?db=1", "unix-socket"),
            ("redis://h?timeout=5", "not a duration"),
            ("redis://h?insecure", "TLS"),
            ("redis://h?nope=1", "unknown option"),
            ("redis://h#insecure", "fragment"),
            ("redis://h?timeout=1s&timeout=2s", "given twice"),
            ("redis://:pw@", "a host is empty"),
            ("redis://bad host", "is not a host name"),
            ("redis+unix://", "absolute/path"),
            ("redis://%zz@h", "two hex digits"),
        ] {
            let e = RedisUrl::parse(raw).unwrap_err();
            assert!(e.is_invalid_input());
            assert!(e.to_string().contains(expected), "{raw}: {e}");
        }
    }
}
