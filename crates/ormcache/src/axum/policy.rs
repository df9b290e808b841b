//! The HTTP rules of the response cache: which requests may be answered from it,
//! which responses may be stored, the cache key, and the validators (`ETag`,
//! `If-None-Match`).

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use xxhash_rust::xxh3::xxh3_128;

use super::secret::CallerSecret;

/// The header that says whether a response came from the cache.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Paths plus queries longer than this are hashed in the key.
const MAX_READABLE_KEY: usize = 256;

/// What the layer is configured with (one per route).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) ttl: Option<std::time::Duration>,
    /// Declared vary headers, sorted and deduplicated.
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) max_body_bytes: usize,
    pub(crate) statuses: Vec<StatusCode>,
    /// Set when keyed by caller: the key the caller part of the cache key is
    /// hashed with.
    pub(crate) keyed_by_caller: Option<CallerSecret>,
    pub(crate) tags: Vec<String>,
    pub(crate) sort_query: bool,
    pub(crate) invalidate_on_write: bool,
    pub(crate) lock: bool,
    /// The `Vary` value the layer sets: the declared headers, plus `authorization`
    /// and `cookie` when keyed by caller. `None` when empty.
    pub(crate) vary_value: Option<HeaderValue>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: None,
            vary: Vec::new(),
            max_body_bytes: 1024 * 1024,
            statuses: vec![StatusCode::OK],
            keyed_by_caller: None,
            tags: Vec::new(),
            sort_query: true,
            invalidate_on_write: true,
            lock: false,
            vary_value: None,
        }
    }
}

impl Config {
    /// Recomputes what derives from the vary settings.
    pub(crate) fn refresh_vary(&mut self) {
        self.vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        self.vary.dedup();
        let names = self.effective_vary();
        self.vary_value = if names.is_empty() {
            None
        } else {
            HeaderValue::from_str(&names.join(", ")).ok()
        };
    }

    /// The names the stored responses vary on, sorted.
    fn effective_vary(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.vary.iter().map(HeaderName::as_str).collect();
        if self.keyed_by_caller.is_some() {
            names.extend(["authorization", "cookie"]);
        }
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// How one request meets the cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Not a cacheable request (method other than GET/HEAD, `no-store`, credentials
    /// without `keyed_by_caller`): straight to the handler, nothing stored.
    Bypass,
    /// GET or HEAD that must not be answered from the cache (`no-cache`,
    /// `max-age=0`): straight to the handler.
    Revalidate,
    /// Look the key up (GET: read through; HEAD: answer from a GET entry if any).
    Lookup { key: String, head: bool },
}

/// Decides how `req` meets the cache.
pub(crate) fn plan<B>(req: &Request<B>, config: &Config) -> Plan {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Plan::Bypass,
    };
    let headers = req.headers();
    if has_directive(headers, |d, _| d == "no-store") {
        return Plan::Bypass;
    }
    let credentials =
        headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE);
    if credentials && config.keyed_by_caller.is_none() {
        return Plan::Bypass;
    }
    let no_cache = has_directive(headers, |d, v| {
        d == "no-cache" || (d == "max-age" && v.is_some_and(is_zero))
    }) || (!headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")));
    if no_cache {
        return Plan::Revalidate;
    }
    let uri = req
        .extensions()
        .get::<::axum::extract::OriginalUri>()
        .map_or(req.uri(), |o| &o.0);
    Plan::Lookup {
        key: key(uri, headers, config),
        head,
    }
}

/// The cache key of a GET request:
/// `http:GET:{path}[?{query}][#{hash of the vary values and caller}]`.
///
/// The path and query are kept readable (so `clear_pattern("http:GET:/products*")`
/// works) unless together longer than 256 bytes, in which case they become
/// `~{XXH3-128}`. A path never contains `?` or `#` and a query never contains `#`,
/// so no request can produce another's key. The tenant is not in this key: the cache
/// puts every key of a tenant scope in that tenant's namespace.
pub(crate) fn key(uri: &Uri, headers: &HeaderMap, config: &Config) -> String {
    let path = uri.path();
    let query = uri
        .query()
        .map(|q| normalize_query(q, config.sort_query))
        .unwrap_or_default();
    let readable_len = path.len() + 1 + query.len();
    let mut key = String::with_capacity(9 + readable_len.min(MAX_READABLE_KEY) + 34);
    key.push_str("http:GET:");
    if readable_len > MAX_READABLE_KEY {
        let mut both = Vec::with_capacity(readable_len);
        both.extend_from_slice(path.as_bytes());
        both.push(b'?');
        both.extend_from_slice(query.as_bytes());
        key.push('~');
        push_hex(&mut key, xxh3_128(&both));
    } else {
        key.push_str(path);
        if !query.is_empty() {
            key.push('?');
            key.push_str(&query);
        }
    }
    if !config.vary.is_empty() || config.keyed_by_caller.is_some() {
        // Length-prefixed, so that no two sets of values encode alike.
        let mut canon = Vec::new();
        let mut section = |name: &[u8], values: header::GetAll<'_, HeaderValue>| {
            canon.extend_from_slice(&(name.len() as u32).to_le_bytes());
            canon.extend_from_slice(name);
            canon.extend_from_slice(&(values.iter().count() as u32).to_le_bytes());
            for v in values {
                canon.extend_from_slice(&(v.len() as u32).to_le_bytes());
                canon.extend_from_slice(v.as_bytes());
            }
        };
        for name in &config.vary {
            section(name.as_str().as_bytes(), headers.get_all(name));
        }
        key.push('#');
        match &config.keyed_by_caller {
            Some(secret) => {
                section(
                    b"\0caller:authorization",
                    headers.get_all(header::AUTHORIZATION),
                );
                section(b"\0caller:cookie", headers.get_all(header::COOKIE));
                // Keyed: whoever reads the key names cannot test guesses of a
                // credential against them.
                push_hex(&mut key, secret.mac(&canon));
            }
            None => push_hex(&mut key, xxh3_128(&canon)),
        }
    }
    key
}

/// The query with empty parameters dropped and, with `sort`, parameters in the
/// order of their names (a stable sort: repeated names keep their order, which is
/// all a handler reading `a=1&a=2` as a list can see). Nothing is decoded, so `%41`
/// and `A` stay different entries.
fn normalize_query(query: &str, sort: bool) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if sort {
        pairs.sort_by_key(|p| p.split_once('=').map_or(*p, |(name, _)| name));
    }
    pairs.join("&")
}

fn push_hex(s: &mut String, h: u128) {
    let _ = write!(s, "{h:032x}");
}

/// The strong `ETag` of a body: its XXH3-128, the same in every process.
pub(crate) fn etag_of(body: &[u8]) -> String {
    let mut s = String::with_capacity(34);
    s.push('"');
    push_hex(&mut s, xxh3_128(body));
    s.push('"');
    s
}

/// Whether `If-None-Match` (all its values) matches `etag`, with the weak
/// comparison RFC 9110 prescribes for it: `W/` prefixes are ignored, `*` matches
/// any current representation.
pub(crate) fn none_match(values: &[HeaderValue], etag: &str) -> bool {
    let ours = opaque(etag);
    values.iter().any(|v| {
        let mut rest = v.as_bytes();
        loop {
            rest = trim_list_start(rest);
            if rest.is_empty() {
                return false;
            }
            if rest[0] == b'*' {
                return true;
            }
            let Some((tag, after)) = next_entity_tag(rest) else {
                return false;
            };
            if tag == ours {
                return true;
            }
            rest = after;
        }
    })
}

/// Skips whitespace and list commas.
fn trim_list_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b',', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Splits `[W/]"opaque"` off the front: the quoted opaque tag and the rest.
fn next_entity_tag(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b"W/").unwrap_or(s);
    let inner = s.strip_prefix(b"\"")?;
    let end = inner.iter().position(|&b| b == b'"')?;
    Some((&s[..end + 2], &inner[end + 1..]))
}

/// The quoted opaque part of an entity tag (without `W/`).
fn opaque(etag: &str) -> &[u8] {
    let b = etag.as_bytes();
    b.strip_prefix(b"W/").unwrap_or(b)
}

/// Whether a response may be stored: a status the route caches, no `Set-Cookie`,
/// no `Cache-Control: no-store`, `no-cache`, `max-age=0`, `s-maxage=0` or `private`
/// (`private` is allowed when the route keys entries by caller), and its own `Vary`
/// (if any) naming exactly the declared headers.
pub(crate) fn storable(status: StatusCode, headers: &HeaderMap, config: &Config) -> bool {
    if !config.statuses.contains(&status) || headers.contains_key(header::SET_COOKIE) {
        return false;
    }
    if has_directive(headers, |d, v| {
        d == "no-store"
            || d == "no-cache"
            || (d == "private" && config.keyed_by_caller.is_none())
            || ((d == "max-age" || d == "s-maxage") && v.is_some_and(is_zero))
    }) {
        return false;
    }
    if headers.contains_key(header::VARY) {
        let mut own: Vec<String> = headers
            .get_all(header::VARY)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("*").split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        own.sort_unstable();
        own.dedup();
        if own != config.effective_vary() {
            return false;
        }
    }
    true
}

/// Whether a directive's value is zero seconds (`0`, `"0"`, `00`).
fn is_zero(value: &str) -> bool {
    let digits = value.trim_matches('"');
    !digits.is_empty() && digits.bytes().all(|b| b == b'0')
}

/// Whether a `Cache-Control` directive of `headers` satisfies `pred(name, value)`
/// (names lower-cased). Values are not unquoted.
fn has_directive(headers: &HeaderMap, pred: impl Fn(&str, Option<&str>) -> bool) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n, Some(v.trim())),
                None => (d, None),
            };
            pred(&name.trim().to_ascii_lowercase(), value)
        })
}

/// Whether a response header is stored and replayed: not hop-by-hop (RFC 9110
/// §7.6.1, including those the `Connection` header names), not one the layer sets
/// itself (`Age`, `X-Cache`, `ETag`), not `Content-Length` (the body says it), not
/// `Set-Cookie`.
pub(crate) fn replayable(name: &HeaderName, headers: &HeaderMap) -> bool {
    const DROPPED: [HeaderName; 11] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::AGE,
        header::CONTENT_LENGTH,
        header::SET_COOKIE,
    ];
    if DROPPED.contains(name) || name == X_CACHE || name == header::ETAG {
        return false;
    }
    !headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The headers a `304 Not Modified` keeps (RFC 9110 §15.4.5).
pub(crate) fn kept_on_304(name: &HeaderName) -> bool {
    [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::EXPIRES,
        header::VARY,
    ]
    .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn key_of(uri: &str, headers: &[(&str, &str)], config: &Config) -> String {
        match plan(&get(uri, headers), config) {
            Plan::Lookup { key, .. } => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_readable_normalized_and_unambiguous() {
        let c = Config::default();
        assert_eq!(key_of("/p", &[], &c), "http:GET:/p");
        assert_eq!(key_of("/p?", &[], &c), "http:GET:/p");
        assert_eq!(
            key_of("/p?b=2&a=1&&a=0", &[], &c),
            "http:GET:/p?a=1&a=0&b=2"
        );
        let unsorted = Config {
            sort_query: false,
            ..Config::default()
        };
        assert_eq!(key_of("/p?b=2&a=1", &[], &unsorted), "http:GET:/p?b=2&a=1");
        let long = format!("/p?q={}", "x".repeat(300));
        let k = key_of(&long, &[], &c);
        assert!(k.starts_with("http:GET:~") && k.len() == 9 + 1 + 32, "{k}");
        assert_ne!(k, key_of(&format!("{long}y"), &[], &c));
    }

    #[test]
    fn vary_values_and_callers_make_distinct_keys() {
        let mut c = Config {
            vary: vec![header::ACCEPT_LANGUAGE],
            ..Config::default()
        };
        c.refresh_vary();
        let en = key_of("/p", &[("accept-language", "en")], &c);
        let fr = key_of("/p", &[("accept-language", "fr")], &c);
        let none = key_of("/p", &[], &c);
        assert!(en.starts_with("http:GET:/p#"));
        assert_ne!(en, fr);
        assert_ne!(en, none);
        assert_eq!(en, key_of("/p", &[("accept-language", "en")], &c));

        let mut c = Config {
            keyed_by_caller: Some(CallerSecret::new([7u8; 32]).unwrap()),
            ..Config::default()
        };
        c.refresh_vary();
        assert_eq!(c.vary_value.as_ref().unwrap(), "authorization, cookie");
        let a = key_of("/p", &[("authorization", "Bearer a")], &c);
        let b = key_of("/p", &[("authorization", "Bearer b")], &c);
        let cookie = key_of("/p", &[("cookie", "Bearer a")], &c);
        assert_ne!(a, b);
        assert_ne!(a, cookie);
        assert!(!a.contains("Bearer"));
        // The same secret gives the same key (in every process); another, another.
        let mut same = c.clone();
        same.keyed_by_caller = Some(CallerSecret::new([7u8; 32]).unwrap());
        assert_eq!(a, key_of("/p", &[("authorization", "Bearer a")], &same));
        let mut other = c.clone();
        other.keyed_by_caller = Some(CallerSecret::new([8u8; 32]).unwrap());
        assert_ne!(a, key_of("/p", &[("authorization", "Bearer a")], &other));
    }

    #[test]
    fn requests_that_bypass_or_revalidate() {
        let c = Config::default();
        assert_eq!(
            plan(&Request::post("/p").body(()).unwrap(), &c),
            Plan::Bypass
        );
        assert_eq!(
            plan(&get("/p", &[("cache-control", "no-store")]), &c),
            Plan::Bypass
        );
        assert_eq!(
            plan(&get("/p", &[("authorization", "x")]), &c),
            Plan::Bypass
        );
        assert_eq!(plan(&get("/p", &[("cookie", "a=b")]), &c), Plan::Bypass);
        for cc in ["no-cache", "max-age=0", "Max-Age=\"0\", foo"] {
            assert_eq!(
                plan(&get("/p", &[("cache-control", cc)]), &c),
                Plan::Revalidate
            );
        }
        assert_eq!(
            plan(&get("/p", &[("pragma", "no-cache")]), &c),
            Plan::Revalidate
        );
        assert_eq!(
            plan(&Request::head("/p").body(()).unwrap(), &c),
            Plan::Lookup {
                key: "http:GET:/p".into(),
                head: true
            }
        );
    }

    #[test]
    fn storable_responses() {
        let mut c = Config {
            vary: vec![header::ACCEPT],
            ..Config::default()
        };
        c.refresh_vary();
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        assert!(storable(StatusCode::OK, &h(&[]), &c));
        assert!(storable(StatusCode::OK, &h(&[("vary", "Accept")]), &c));
        assert!(!storable(StatusCode::NOT_FOUND, &h(&[]), &c));
        assert!(!storable(StatusCode::OK, &h(&[("set-cookie", "a=b")]), &c));
        assert!(!storable(
            StatusCode::OK,
            &h(&[("vary", "accept, cookie")]),
            &c
        ));
        assert!(!storable(StatusCode::OK, &h(&[("vary", "*")]), &c));
        for cc in [
            "no-store",
            "private",
            "no-cache",
            "public, Private=\"x\"",
            "max-age=0",
            "public, s-maxage=0",
        ] {
            assert!(
                !storable(StatusCode::OK, &h(&[("cache-control", cc)]), &c),
                "{cc}"
            );
        }
        assert!(storable(
            StatusCode::OK,
            &h(&[("cache-control", "public, max-age=60")]),
            &c
        ));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let etag = etag_of(b"x");
        let v = |s: &str| vec![HeaderValue::from_str(s).unwrap()];
        assert!(none_match(&v(&etag), &etag));
        assert!(none_match(&v(&format!("W/{etag}")), &etag));
        assert!(none_match(&v(&format!("\"a,b\", {etag}")), &etag));
        assert!(none_match(&v("*"), &etag));
        assert!(!none_match(&v("\"other\""), &etag));
        assert!(!none_match(&v("garbage"), &etag));
        assert!(!none_match(&[], &etag));
        let two = [
            HeaderValue::from_static("\"a\""),
            HeaderValue::from_str(&etag).unwrap(),
        ];
        assert!(none_match(&two, &etag));
    }

    #[test]
    fn hop_by_hop_headers_are_not_replayed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        assert!(!replayable(&HeaderName::from_static("x-hop"), &h));
        assert!(!replayable(&header::TRANSFER_ENCODING, &h));
        assert!(replayable(&header::CONTENT_TYPE, &h));
    }
}
