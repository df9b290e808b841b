//! A stored response: what is kept in the cache and how it is replayed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ::axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::policy;

/// One cached response. Serialized with the cache's codec; under the default JSON
/// codec a UTF-8 body is stored as a JSON string, so `redis-cli GET` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    /// The status code.
    pub(crate) status: u16,
    /// The end-to-end headers worth replaying, names lower-case, in order (without
    /// `ETag`, which is `etag`).
    pub(crate) headers: Vec<(String, Blob)>,
    /// The whole body.
    pub(crate) body: Blob,
    /// When the response was stored, in milliseconds since the Unix epoch (for `Age`).
    pub(crate) stored_at_ms: u64,
    /// The strong validator, quotes included.
    pub(crate) etag: String,
}

/// Why a stored entry could not be replayed: it is treated as a miss.
#[derive(Debug)]
pub(crate) struct Corrupt(pub(crate) &'static str);

/// What [`StoredResponse::render`] produces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Render<'a> {
    /// Served from the cache (`X-Cache: HIT` and `Age`) or fresh (`MISS`).
    pub(crate) hit: bool,
    /// A `HEAD` request: headers only.
    pub(crate) head: bool,
    /// The request's `If-None-Match` values.
    pub(crate) if_none_match: &'a [HeaderValue],
}

impl StoredResponse {
    /// Builds the entry of a fresh response whose headers passed the storage rules.
    /// `vary` is the `Vary` value the layer declares (if any): it is set when the
    /// response has none.
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        vary: Option<&HeaderValue>,
    ) -> Self {
        let mut etag = None;
        let mut kept = Vec::with_capacity(headers.len() + 1);
        for (name, value) in headers {
            if name == header::ETAG {
                etag = Some(value.clone());
            } else if policy::replayable(name, headers) {
                kept.push((
                    name.as_str().to_owned(),
                    Blob(Bytes::copy_from_slice(value.as_bytes())),
                ));
            }
        }
        if !headers.contains_key(header::VARY)
            && let Some(vary) = vary
        {
            kept.push((
                header::VARY.as_str().to_owned(),
                Blob(Bytes::copy_from_slice(vary.as_bytes())),
            ));
        }
        let etag = etag
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| policy::etag_of(&body));
        Self {
            status: status.as_u16(),
            headers: kept,
            body: Blob(body),
            stored_at_ms: now_ms(),
            etag,
        }
    }

    /// Replays the entry: its status and headers, `ETag`, `X-Cache`, `Age` on a hit,
    /// and the body (none for `HEAD`), or `304 Not Modified` when `If-None-Match`
    /// matches.
    pub(crate) fn render(&self, how: Render<'_>) -> Result<Response<Body>, Corrupt> {
        let status = StatusCode::from_u16(self.status).map_err(|_| Corrupt("status"))?;
        let etag = HeaderValue::from_str(&self.etag).map_err(|_| Corrupt("etag"))?;
        let not_modified = policy::none_match(how.if_none_match, &self.etag);
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 4);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Corrupt("header"))?;
            let value = HeaderValue::from_maybe_shared(value.0.clone())
                .map_err(|_| Corrupt("header value"))?;
            if not_modified && !policy::kept_on_304(&name) {
                continue;
            }
            headers.append(name, value);
        }
        headers.insert(header::ETAG, etag);
        headers.insert(
            policy::X_CACHE,
            HeaderValue::from_static(if how.hit { "HIT" } else { "MISS" }),
        );
        if how.hit {
            let age = now_ms().saturating_sub(self.stored_at_ms) / 1000;
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        let (status, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, Body::empty())
        } else if how.head {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.0.len()));
            (status, Body::empty())
        } else {
            (status, Body::from(self.body.0.clone()))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Milliseconds since the Unix epoch (wall clock: entries are shared between
/// processes).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Bytes that serialize as a string when they are UTF-8 (bodies and header values
/// almost always are) and as bytes otherwise; a clone shares the buffer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Blob(pub(crate) Bytes);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;

        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(v.as_bytes())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Blob, E> {
                Ok(Blob(Bytes::from(v)))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(v)))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(Bytes::from(v)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Blob(Bytes::from(bytes)))
            }
        }

        d.deserialize_any(BlobVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static [u8]) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        StoredResponse::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(body),
            Some(&HeaderValue::from_static("accept-language")),
        )
    }

    #[test]
    fn round_trips_through_json_and_messagepack() {
        for body in [&b"hello"[..], &[0xff, 0x00, 0xfe][..]] {
            let e = entry(body);
            let json = serde_json::to_vec(&e).unwrap();
            assert_eq!(serde_json::from_slice::<StoredResponse>(&json).unwrap(), e);
            let mp = rmp_serde::to_vec_named(&e).unwrap();
            assert_eq!(rmp_serde::from_slice::<StoredResponse>(&mp).unwrap(), e);
        }
        let text = serde_json::to_string(&entry(b"hello")).unwrap();
        assert!(text.contains(r#""body":"hello""#), "{text}");
    }

    #[test]
    fn keeps_end_to_end_headers_and_declares_vary() {
        let e = entry(b"hello");
        let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "vary"]);
        assert_eq!(e.etag, policy::etag_of(b"hello"));
    }

    const HIT: Render<'static> = Render {
        hit: true,
        head: false,
        if_none_match: &[],
    };

    #[test]
    fn corrupt_entries_are_refused() {
        let mut e = entry(b"x");
        e.status = 1000;
        assert!(e.render(HIT).is_err());
        for (name, value) in [("bad name", &b"v"[..]), ("x-ok", &b"a\nb"[..])] {
            let mut e = entry(b"x");
            e.headers
                .push((name.into(), Blob(Bytes::copy_from_slice(value))));
            assert!(e.render(HIT).is_err(), "{name}");
        }
    }

    #[test]
    fn renders_hits_heads_and_not_modified() {
        let e = entry(b"hello");
        let r = e.render(HIT).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cache"], "HIT");
        assert_eq!(r.headers()["age"], "0");
        assert_eq!(r.headers()["vary"], "accept-language");
        assert_eq!(r.headers()["etag"], e.etag.as_str());

        let r = e
            .render(Render {
                hit: false,
                head: true,
                ..HIT
            })
            .unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert!(r.headers().get("age").is_none());
        assert_eq!(r.headers()["content-length"], "5");

        let inm = [HeaderValue::from_str(&e.etag).unwrap()];
        let r = e
            .render(Render {
                if_none_match: &inm,
                ..HIT
            })
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(r.headers().get("content-type").is_none());
        assert_eq!(r.headers()["vary"], "accept-language");
    }
}
