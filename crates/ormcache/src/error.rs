//! The one error type of the crate.

use std::fmt;
use std::sync::Arc;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly. Match on this rather than on messages.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Redis could not be reached, or the connection broke.
    Connection,
    /// A Redis call did not answer within its timeout.
    Timeout,
    /// The circuit breaker is open: Redis was skipped without a call.
    CircuitOpen,
    /// A value could not be encoded.
    Encode,
    /// Stored bytes could not be decoded into the requested type.
    Decode,
    /// A value is larger than `max_value_bytes`.
    ValueTooLarge,
    /// The caller passed something the cache refuses (empty key, zero TTL, reserved key, ...).
    InvalidInput,
    /// Redis answered with an error reply.
    Server,
    /// The cache was closed with `close()`.
    Closed,
    /// Redis refused the credentials: a wrong password or ACL user (`WRONGPASS`),
    /// or none given to a server that requires one (`NOAUTH`).
    Auth,
    /// The ACL user may not run a command that the operation needs (`NOPERM`); the
    /// README lists the commands each feature uses.
    NoPermission,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection error",
            Self::Timeout => "timed out",
            Self::CircuitOpen => "circuit breaker open",
            Self::Encode => "encode error",
            Self::Decode => "decode error",
            Self::ValueTooLarge => "value too large",
            Self::InvalidInput => "invalid input",
            Self::Server => "server error",
            Self::Closed => "cache closed",
            Self::Auth => "authentication failed",
            Self::NoPermission => "permission denied",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An ormcache error: a [`kind`](Error::kind), the operation, the key when there is
/// one, and the underlying cause as [`source`](std::error::Error::source).
///
/// Messages name the operation and the key, never the value and never a password.
///
/// ```
/// use ormcache::{ErrorKind, QueryCache};
/// let cache = QueryCache::new(100, std::time::Duration::from_secs(60)).unwrap();
/// let err = cache.set_sync("", 1u32, None).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.to_string(), "invalid input in `set` of key \"\": key must not be empty");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    op: &'static str,
    key: Option<String>,
    detail: Option<String>,
    source: Option<Source>,
}

/// Keys are shown in messages, but a huge key would make a huge message.
const MAX_KEY_IN_MESSAGE: usize = 200;

impl Error {
    pub(crate) fn new(kind: ErrorKind, op: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                op,
                key: None,
                detail: None,
                source: None,
            }),
        }
    }

    fn map_inner(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let old = &self.inner;
                let mut inner = Inner {
                    kind: old.kind,
                    op: old.op,
                    key: old.key.clone(),
                    detail: old.detail.clone(),
                    source: old.source.clone(),
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    pub(crate) fn with_key(self, key: &str) -> Self {
        let shown = if key.len() > MAX_KEY_IN_MESSAGE {
            let mut end = MAX_KEY_IN_MESSAGE;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &key[..end], key.len())
        } else {
            key.to_owned()
        };
        self.map_inner(|i| i.key = Some(shown))
    }

    pub(crate) fn with_detail(self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        self.map_inner(|i| i.detail = Some(detail))
    }

    pub(crate) fn with_source(
        self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.map_inner(|i| i.source = Some(Arc::new(source)))
    }

    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, op).with_detail(detail)
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The operation that failed (`get`, `set`, `clear_pattern`, ...).
    pub fn operation(&self) -> &'static str {
        self.inner.op
    }

    /// The key the operation was about, if any (long keys are shortened).
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// Redis could not be reached, the connection broke, or the breaker is open:
    /// the cache is unavailable rather than the request being wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::CircuitOpen | ErrorKind::Closed
        )
    }

    /// The call timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Stored bytes could not be decoded.
    pub fn is_decode(&self) -> bool {
        self.kind() == ErrorKind::Decode
    }

    /// Redis refused the credentials or the ACL user lacks a command: a
    /// configuration problem, not an outage.
    ///
    /// ```
    /// # async fn demo() {
    /// let err = ormcache::DistributedCache::builder()
    ///     .redis_url("redis://app:wrong@localhost:6379")
    ///     .build()
    ///     .await
    ///     .unwrap_err();
    /// if err.is_access_denied() {
    ///     eprintln!("check REDIS_URL's user and password: {err}");
    /// }
    /// # }
    /// ```
    pub fn is_access_denied(&self) -> bool {
        matches!(self.kind(), ErrorKind::Auth | ErrorKind::NoPermission)
    }

    /// The caller passed invalid input.
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        write!(f, "{} in `{}`", i.kind, i.op)?;
        if let Some(key) = &i.key {
            write!(f, " of key {key:?}")?;
        }
        if let Some(detail) = &i.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(source) = &i.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Error")
            .field("kind", &i.kind)
            .field("op", &i.op)
            .field("key", &i.key)
            .field("detail", &i.detail)
            .field("source", &i.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Classifies a redis-rs error. Messages of redis-rs never carry passwords, but they
/// can carry the address; that is fine and useful.
pub(crate) fn from_redis(op: &'static str, err: redis::RedisError) -> Error {
    let code = err.code();
    let kind = if err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code, Some("WRONGPASS" | "NOAUTH"))
    {
        ErrorKind::Auth
    } else if code == Some("NOPERM") {
        ErrorKind::NoPermission
    } else if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
    {
        ErrorKind::Connection
    } else {
        ErrorKind::Server
    };
    Error::new(kind, op).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_operation_and_key() {
        let e = Error::new(ErrorKind::Decode, "get")
            .with_key("user:1")
            .with_detail("not JSON");
        assert_eq!(
            e.to_string(),
            "decode error in `get` of key \"user:1\": not JSON"
        );
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert_eq!(e.key(), Some("user:1"));
    }

    #[test]
    fn long_keys_are_shortened() {
        let key = "é".repeat(1000);
        let e = Error::new(ErrorKind::Timeout, "get").with_key(&key);
        let shown = e.key().unwrap();
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.ends_with("(2000 bytes)"), "{shown}");
    }

    #[test]
    fn error_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Error>();
    }
}
