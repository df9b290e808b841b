//! Failures: one line on stderr, an exit code, never a password.

use std::io::Write;

use ormcache::{Error, ErrorKind};

/// Redis failed: unreachable, timeout, refused credentials, error reply.
pub(crate) const REDIS: u8 = 1;
/// Bad arguments, URL, key or tenant id (clap's own usage errors exit 2 too).
pub(crate) const USAGE: u8 = 2;
/// A clear was not confirmed.
pub(crate) const NOT_CONFIRMED: u8 = 3;
/// `get`/`ttl` of a key that does not exist.
pub(crate) const NOT_FOUND: u8 = 4;

/// Why the command failed, and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn redis(message: impl Into<String>) -> Self {
        Self {
            code: REDIS,
            message: message.into(),
        }
    }

    pub(crate) fn not_confirmed(message: impl Into<String>) -> Self {
        Self {
            code: NOT_CONFIRMED,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidInput => USAGE,
            _ => REDIS,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// Prints `f` as one line on stderr. The library never puts a password in a
/// message; as a second guard, the password of `url` (as typed) is masked too.
pub(crate) fn report(url: &str, f: &Failure) {
    let mut line = f.message.replace(['\n', '\r'], " ");
    if let Some(secret) = password_of(url)
        && secret.len() >= 3
    {
        line = line.replace(secret, "***");
    }
    let _ = writeln!(std::io::stderr().lock(), "ormcache: {line}");
}

/// The password in `scheme://user:password@host…` (or a `pass=` query option).
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    if let Some(at) = rest.rfind('@')
        && let Some((_, pw)) = rest[..at].split_once(':')
    {
        return Some(pw);
    }
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.to_ascii_lowercase().contains("pass").then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_every_url_form() {
        assert_eq!(password_of("redis://:s3cret@h:1"), Some("s3cret"));
        assert_eq!(password_of("rediss+cluster://u:p@ss@a:1,b:2"), Some("p@ss"));
        assert_eq!(
            password_of("redis+unix:///x.sock?user=u&pass=pw1"),
            Some("pw1")
        );
        assert_eq!(password_of("redis://h:6379"), None);
    }
}
