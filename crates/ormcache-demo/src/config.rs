//! The service's settings, read from the environment once at start-up.

use std::fmt;
use std::time::Duration;

use ormcache::{RedisUrl, TlsConfig};

/// Where the service listens, which database and cache it uses.
#[derive(Clone)]
pub(crate) struct Config {
    /// `HOST`: the address to bind (default `127.0.0.1`).
    pub(crate) host: String,
    /// `PORT`: the port to bind (default `8000`; `0` picks a free one).
    pub(crate) port: u16,
    /// `DATABASE_URL`: `sqlite://…` or `postgres://…` (default: the SQLite file
    /// `ormcache-demo.db` in the working directory, created if missing).
    pub(crate) database_url: String,
    /// `REDIS_URL`: unset or empty → in-process cache only; set → L1 + Redis. Any
    /// form ormcache's one parser takes: `redis://`, `rediss://`, `redis+unix://`,
    /// `redis+cluster://`, `rediss+cluster://`, `redis+sentinel://…/service`,
    /// `rediss+sentinel://…`.
    pub(crate) redis_url: Option<RedisUrl>,
    /// `REDIS_TLS_CA_FILE` (a CA to trust beside the system roots),
    /// `REDIS_TLS_CERT_FILE` + `REDIS_TLS_KEY_FILE` (a client certificate): PEM
    /// files for the `rediss…://` forms.
    pub(crate) tls: TlsConfig,
    /// `CACHE_PREFIX`: every Redis key starts with `{prefix}:` (default `ormcache-demo`).
    pub(crate) cache_prefix: String,
    /// `CACHE_TTL`: seconds an entry lives (default `300`).
    pub(crate) cache_ttl: Duration,
}

/// The longest `CACHE_TTL` accepted: 30 days.
const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;

/// A setting that could not be used: which variable, and why.
#[derive(Debug)]
pub(crate) struct ConfigError {
    var: &'static str,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs can carry passwords: the database URL shows only its scheme, the
        // Redis URL is shown redacted.
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &scheme(&self.database_url))
            .field("redis", &self.redis_url.as_ref().map(ToString::to_string))
            .field("tls", &self.tls)
            .field("cache_prefix", &self.cache_prefix)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// `scheme://` of a URL, without credentials, host or path.
pub(crate) fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("?", |(s, _)| s)
}

impl Config {
    /// Reads the settings from the process environment.
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // An empty variable counts as unset.
        let get = |var| lookup(var).filter(|v| !v.trim().is_empty());
        let err = |var, message: String| ConfigError { var, message };

        let host = get("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = match get("PORT") {
            None => 8000,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|e| err("PORT", format!("{p:?} is not a port number 0-65535 ({e})")))?,
        };
        let database_url = match get("DATABASE_URL") {
            None => "sqlite://ormcache-demo.db?mode=rwc".to_owned(),
            Some(url) => normalize_database_url(url.trim()).map_err(|m| err("DATABASE_URL", m))?,
        };
        let redis_url = get("REDIS_URL")
            .map(|u| RedisUrl::parse(&u))
            .transpose()
            .map_err(|e| err("REDIS_URL", e.to_string()))?;
        let tls = TlsConfig::from_lookup(|var| lookup(tls_var(var)?))
            .map_err(|e| err("REDIS_TLS_CERT_FILE", e.to_string()))?;
        let cache_prefix = get("CACHE_PREFIX").unwrap_or_else(|| "ormcache-demo".to_owned());
        if cache_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                "CACHE_PREFIX",
                format!("{cache_prefix:?} contains whitespace"),
            ));
        }
        let cache_ttl = match get("CACHE_TTL") {
            None => Duration::from_secs(300),
            Some(t) => match t.trim().parse::<u64>() {
                Ok(secs @ 1..=MAX_CACHE_TTL_SECS) => Duration::from_secs(secs),
                _ => {
                    return Err(err(
                        "CACHE_TTL",
                        format!("{t:?} is not a number of seconds 1-{MAX_CACHE_TTL_SECS}"),
                    ));
                }
            },
        };
        Ok(Self {
            host,
            port,
            database_url,
            redis_url,
            tls,
            cache_prefix,
            cache_ttl,
        })
    }
}

/// The TLS variables by name (`lookup` takes `&'static str`).
fn tls_var(var: &str) -> Option<&'static str> {
    [
        "REDIS_TLS_CA_FILE",
        "REDIS_TLS_CERT_FILE",
        "REDIS_TLS_KEY_FILE",
    ]
    .into_iter()
    .find(|v| *v == var)
}

/// Checks the scheme; a SQLite URL without `mode=` gets `mode=rwc` so that the file
/// is created at start.
fn normalize_database_url(url: &str) -> Result<String, String> {
    match scheme(url) {
        "sqlite" if url.contains("mode=") => Ok(url.to_owned()),
        "sqlite" if url.contains('?') => Ok(format!("{url}&mode=rwc")),
        "sqlite" => Ok(format!("{url}?mode=rwc")),
        "postgres" | "postgresql" => Ok(url.to_owned()),
        other => Err(format!("expected sqlite:// or postgres://, got {other}://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&'static str, String> =
            vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 8000);
        assert_eq!(c.database_url, "sqlite://ormcache-demo.db?mode=rwc");
        assert_eq!(c.redis_url, None);
        assert_eq!(c.cache_prefix, "ormcache-demo");
        assert_eq!(c.cache_ttl, Duration::from_secs(300));
    }

    #[test]
    fn values_are_read_and_normalized() {
        let c = config(&[
            ("HOST", "0.0.0.0"),
            ("PORT", "9000"),
            ("DATABASE_URL", "sqlite:///tmp/x.db"),
            ("REDIS_URL", "redis://127.0.0.1:6379/1"),
            ("CACHE_PREFIX", "app"),
            ("CACHE_TTL", "60"),
        ])
        .unwrap();
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 9000);
        assert_eq!(c.database_url, "sqlite:///tmp/x.db?mode=rwc");
        assert_eq!(
            c.redis_url.map(|u| u.to_string()).as_deref(),
            Some("redis://127.0.0.1:6379/1")
        );
        assert_eq!(c.cache_prefix, "app");
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        let c = config(&[("DATABASE_URL", "sqlite://x.db?foo=1"), ("REDIS_URL", "")]).unwrap();
        assert_eq!(c.database_url, "sqlite://x.db?foo=1&mode=rwc");
        assert_eq!(c.redis_url, None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "70000"),
            ("PORT", "http"),
            ("CACHE_TTL", "0"),
            ("CACHE_TTL", "-5"),
            ("CACHE_TTL", "99999999999"),
            ("DATABASE_URL", "mysql://localhost/db"),
            ("REDIS_URL", "http://localhost"),
            ("REDIS_URL", "redis+sentinel://127.0.0.1:26379"),
            ("REDIS_TLS_CERT_FILE", "/etc/client.pem"),
            ("CACHE_PREFIX", "a b"),
        ] {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{value}");
            assert!(!e.to_string().contains("s3cret"));
            assert!(
                e.to_string().starts_with(&format!("invalid {var}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn every_redis_url_form_is_accepted() {
        for url in [
            "redis://:s3cret@127.0.0.1:6379/1",
            "rediss://app:s3cret@cache.internal:6380",
            "redis+unix:///run/redis.sock?pass=s3cret",
            "redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7000",
            "rediss+cluster://10.0.0.1:7000",
            "redis+sentinel://app:s3cret@10.0.0.1,10.0.0.2:26380/mymaster/2",
            "rediss+sentinel://10.0.0.1/mymaster?sentinel_password=s3cret",
        ] {
            let c = config(&[
                ("REDIS_URL", url),
                ("REDIS_TLS_CA_FILE", "/etc/ca.pem"),
                ("REDIS_TLS_CERT_FILE", "/etc/client.pem"),
                ("REDIS_TLS_KEY_FILE", "/etc/client.key"),
            ])
            .unwrap();
            let shown = format!("{c:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("/etc/ca.pem"), "{shown}");
            assert!(c.redis_url.is_some());
        }
        let e = config(&[("REDIS_URL", "redis://:s3cret@h:x")]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("redis://:***@h:x"), "{e}");
    }

    #[test]
    fn debug_hides_urls() {
        let c = config(&[("REDIS_URL", "redis://:secret@host:6379")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
