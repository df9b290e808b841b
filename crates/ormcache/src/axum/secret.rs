//! [`CallerSecret`]: the per-deployment key of the caller part of response-cache keys.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The shortest secret accepted: 128 bits.
const MIN_SECRET_BYTES: usize = 16;

/// The secret that keys the hash of a caller's `Authorization` and `Cookie` values
/// in the cache keys of a [`keyed_by_caller`](super::ResponseCacheLayer::keyed_by_caller)
/// route (HMAC-SHA256, truncated to 128 bits).
///
/// Key names are visible to anyone who can run `SCAN` on the Redis; an unkeyed hash
/// there would let them test guesses of a password or session token offline. With a
/// secret they cannot. Give every process of one deployment the same secret (from
/// your secret store or an environment variable, e.g. 32 bytes of
/// `openssl rand -hex 32`): processes with the same secret share entries, processes
/// with different secrets never do. There is no built-in default: a random
/// per-process secret would silently stop processes from sharing entries, and a
/// fixed one would be no secret. Changing the secret starts every caller's entries
/// afresh; the old ones expire with their TTL.
///
/// ```
/// use ormcache::axum::CallerSecret;
///
/// let secret = CallerSecret::new(b"0123456789abcdef0123456789abcdef").unwrap();
/// assert!(CallerSecret::new(b"short").is_err());
/// assert_eq!(format!("{secret:?}"), "CallerSecret(***)");
/// ```
#[derive(Clone)]
pub struct CallerSecret(Arc<[u8]>);

impl CallerSecret {
    /// A secret of at least 16 bytes.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) for fewer than 16 bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::invalid(
                "caller secret",
                format!("a caller secret needs at least {MIN_SECRET_BYTES} bytes"),
            ));
        }
        Ok(Self(secret.into()))
    }

    /// The keyed hash of `data`.
    pub(crate) fn mac(&self, data: &[u8]) -> u128 {
        let mut out = [0u8; 16];
        // HMAC takes keys of any length: the error arm cannot happen.
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            mac.update(data);
            let tag = mac.finalize().into_bytes();
            out.copy_from_slice(&tag[..16]);
        }
        u128::from_be_bytes(out)
    }
}

impl fmt::Debug for CallerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerSecret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_depend_on_the_secret_and_the_data() {
        let a = CallerSecret::new([1u8; 16]).unwrap();
        let b = CallerSecret::new([2u8; 16]).unwrap();
        assert_eq!(a.mac(b"x"), CallerSecret::new([1u8; 16]).unwrap().mac(b"x"));
        assert_ne!(a.mac(b"x"), b.mac(b"x"));
        assert_ne!(a.mac(b"x"), a.mac(b"y"));
        // RFC 4231 test case 2 (key "Jefe"), first 128 bits: HMAC-SHA256 itself.
        let jefe = CallerSecret(Arc::from(&b"Jefe"[..]));
        assert_eq!(
            jefe.mac(b"what do ya want for nothing?"),
            0x5bdcc146bf60754e6a042426089575c7
        );
        assert_eq!(
            CallerSecret::new([0u8; 15]).unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
    }
}
