//! How a [`RedisUrl`] becomes redis-rs clients: addresses, credentials, TCP
//! settings and TLS certificates, checked once against the features compiled in.

use redis::io::tcp::TcpSettings;

use crate::config::{DistributedConfig, RedisUrl, Topology};
use crate::error::{Error, Result};

/// A parsed URL with everything needed to open connections to its servers.
pub(super) struct Transport {
    url: RedisUrl,
    tcp: TcpSettings,
    #[cfg(feature = "tls")]
    certs: Option<redis::TlsCertificates>,
}

/// The feature a URL form needs, if it is not compiled in.
fn missing_feature(url: &RedisUrl) -> Option<&'static str> {
    if url.is_tls() && !cfg!(feature = "tls") {
        return Some("tls");
    }
    match url.topology() {
        Topology::Cluster if !cfg!(feature = "cluster") => Some("cluster"),
        Topology::Sentinel if !cfg!(feature = "sentinel") => Some("sentinel"),
        _ => None,
    }
}

impl Transport {
    pub(super) fn new(config: &DistributedConfig, tcp: TcpSettings) -> Result<Self> {
        let url = config.url()?.clone();
        if let Some(feature) = missing_feature(&url) {
            return Err(Error::invalid(
                "create",
                format!("{url} needs ormcache's `{feature}` feature"),
            ));
        }
        #[cfg(feature = "tls")]
        let certs = if url.is_tls() {
            config.tls.certificates()?
        } else {
            None
        };
        Ok(Self {
            url,
            tcp,
            #[cfg(feature = "tls")]
            certs,
        })
    }

    pub(super) fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The URL as shown in messages (secrets redacted).
    pub(super) fn address(&self) -> String {
        self.url.to_string()
    }

    #[cfg(any(feature = "cluster", feature = "sentinel"))]
    pub(super) fn tcp(&self) -> &TcpSettings {
        &self.tcp
    }

    /// The certificates of a TLS URL with a custom CA or client certificate.
    #[cfg(all(feature = "tls", any(feature = "cluster", feature = "sentinel")))]
    pub(super) fn certs(&self) -> Option<&redis::TlsCertificates> {
        self.certs.as_ref()
    }

    /// The connection to one host of the URL (the first when `host` is `None`).
    pub(super) fn info(&self, host: Option<&crate::config::Host>) -> Result<redis::ConnectionInfo> {
        Ok(self
            .url
            .connection_info(host)?
            .set_tcp_settings(self.tcp.clone()))
    }

    /// A client for one host of the URL (the first when `host` is `None`).
    pub(super) fn client(&self, host: Option<&crate::config::Host>) -> Result<redis::Client> {
        let info = self.info(host)?;
        let bad = |e: redis::RedisError| {
            Error::invalid("create", format!("cannot use {}: {e}", self.address()))
        };
        #[cfg(feature = "tls")]
        if let Some(certs) = &self.certs {
            return redis::Client::build_with_tls(info, certs.clone()).map_err(bad);
        }
        redis::Client::open(info).map_err(bad)
    }

    /// Clients for every host of the URL (the cluster's seeds).
    #[cfg(feature = "cluster")]
    pub(super) fn clients(&self) -> Result<Vec<redis::Client>> {
        self.url
            .tcp_hosts()
            .iter()
            .map(|h| self.client(Some(h)))
            .collect()
    }
}
