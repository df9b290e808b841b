//! [`TlsConfig`]: what a `rediss…://` connection trusts and presents.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// PEM bytes, given or read from a file when the cache connects.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Self::Bytes(b) => Ok(b.clone()),
            Self::File(path) => std::fs::read(path).map_err(|e| {
                Error::invalid(
                    "create",
                    format!("cannot read the TLS {what} {}", path.display()),
                )
                .with_source(e)
            }),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Bytes(b) => write!(f, "<{} bytes of PEM>", b.len()),
        }
    }
}

/// TLS settings of `rediss://`, `rediss+cluster://` and `rediss+sentinel://` URLs
/// (feature `tls`, rustls with the `ring` provider).
///
/// By default the server's certificate is checked against the system's roots. A
/// custom CA ([`ca_file`](Self::ca_file)) is trusted beside them; a client
/// certificate ([`client_cert_files`](Self::client_cert_files)) is presented to
/// servers that ask for one (mutual TLS, `tls-auth-clients yes`). Verification is
/// skipped only when the URL says `?insecure`.
///
/// Files are read when the cache connects; an unreadable file or bad PEM fails
/// `create` with [`InvalidInput`](crate::ErrorKind::InvalidInput) naming the file.
/// `Debug` shows file paths, never key material.
///
/// ```
/// use ormcache::TlsConfig;
///
/// let tls = TlsConfig::new()
///     .ca_file("/etc/redis/ca.pem")
///     .client_cert_files("/etc/redis/client.pem", "/etc/redis/client.key");
/// assert!(format!("{tls:?}").contains("/etc/redis/ca.pem"));
/// ```
#[must_use]
#[derive(Clone, Default)]
pub struct TlsConfig {
    ca: Option<Pem>,
    client: Option<(Pem, Pem)>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca)
            .field("client_cert", &self.client.as_ref().map(|(cert, _)| cert))
            .field(
                "client_key",
                &self.client.as_ref().map(|(_, key)| match key {
                    Pem::File(p) => p.display().to_string(),
                    Pem::Bytes(_) => "<redacted>".to_owned(),
                }),
            )
            .finish()
    }
}

/// The environment variables [`TlsConfig::from_env`] reads.
const TLS_ENV_VARS: [&str; 3] = [
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
];

impl TlsConfig {
    /// System roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// From the environment: `REDIS_TLS_CA_FILE` (PEM, a CA to trust beside the
    /// system roots), `REDIS_TLS_CERT_FILE` + `REDIS_TLS_KEY_FILE` (PEM, a client
    /// certificate and its key). Unset or empty variables are not used.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) when only one of
    /// `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE` is set.
    ///
    /// ```
    /// let tls = ormcache::TlsConfig::from_lookup(|var| {
    ///     (var == "REDIS_TLS_CA_FILE").then(|| "/etc/redis/ca.pem".to_owned())
    /// })?;
    /// assert!(format!("{tls:?}").contains("ca.pem"));
    /// # Ok::<(), ormcache::Error>(())
    /// ```
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |var| lookup(var).filter(|v| !v.trim().is_empty());
        let [ca, cert, key] = TLS_ENV_VARS.map(get);
        let mut tls = Self::new();
        if let Some(ca) = ca {
            tls = tls.ca_file(ca.trim());
        }
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(tls.client_cert_files(cert.trim(), key.trim())),
            (None, None) => Ok(tls),
            _ => Err(Error::invalid(
                "tls",
                "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither",
            )),
        }
    }

    /// Trust the CA(s) in this PEM file beside the system roots.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(Pem::File(path.as_ref().to_owned()));
        self
    }

    /// Trust the CA(s) in these PEM bytes beside the system roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Present this client certificate (PEM chain) and key (PEM) to servers that
    /// ask for one.
    pub fn client_cert_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.client = Some((
            Pem::File(cert.as_ref().to_owned()),
            Pem::File(key.as_ref().to_owned()),
        ));
        self
    }

    /// As [`client_cert_files`](Self::client_cert_files), from PEM bytes.
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// The certificates for redis-rs: `None` when nothing but the system roots is
    /// used.
    pub(crate) fn certificates(&self) -> Result<Option<redis::TlsCertificates>> {
        ensure_crypto_provider();
        if self.ca.is_none() && self.client.is_none() {
            return Ok(None);
        }
        let root_cert = match &self.ca {
            None => None,
            Some(ca) => {
                // redis-rs trusts a given CA *instead of* the system roots: hand it
                // both.
                let mut bundle = system_roots_pem();
                bundle.extend(ca.read("CA file")?);
                Some(bundle)
            }
        };
        let client_tls = match &self.client {
            None => None,
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.read("client certificate")?,
                client_key: key.read("client key")?,
            }),
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// rustls needs a process-wide crypto provider; with several compiled in (another
/// crate may enable `aws-lc-rs`) it refuses to pick one. Install `ring` unless the
/// application installed one.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: there is a provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The system's trusted roots as PEM (none when they cannot be loaded: a custom
/// CA alone is then trusted).
fn system_roots_pem() -> Vec<u8> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut out = Vec::new();
    for cert in loaded.certs {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in base64(cert.as_ref()).as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
    }

    #[test]
    fn env_needs_cert_and_key_together() {
        let only_cert = TlsConfig::from_lookup(|v| (v == "REDIS_TLS_CERT_FILE").then(String::new));
        assert!(only_cert.is_ok(), "an empty variable is unset");
        let only_cert =
            TlsConfig::from_lookup(|v| (v == "REDIS_TLS_CERT_FILE").then(|| "c.pem".to_owned()));
        assert!(only_cert.unwrap_err().is_invalid_input());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let tls = TlsConfig::new().client_cert_pem("CERT", "-----BEGIN PRIVATE KEY----- s3cret");
        let dbg = format!("{tls:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
}
