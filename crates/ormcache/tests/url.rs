//! The one URL parser: every form round-trips through its canonical text, and no
//! password leaks through `Debug`, `Display`, `redacted_url` or `create`'s error,
//! whatever form the URL takes, well-formed or not.

mod support;

use std::time::Duration;

use ormcache::{DistributedCache, DistributedConfig, RedisUrl, Topology};
use support::Rng;

const SECRET: &str = "hunter2-SECRET";

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every form, with the secret as password (and as Sentinel password), pointed at
/// addresses where nothing answers; plus the malformed forms issue 9 found leaking.
fn forms(port: u16) -> Vec<String> {
    let p = port;
    vec![
        format!("redis://:{SECRET}@127.0.0.1:{p}"),
        format!("redis://app:{SECRET}@127.0.0.1:{p}/3"),
        format!("rediss://app:{SECRET}@127.0.0.1:{p}"),
        format!("rediss://app:{SECRET}@127.0.0.1:{p}?insecure"),
        format!("redis+unix:///nonexistent/ormcache/redis.sock?pass={SECRET}"),
        format!("redis+unix:///nonexistent/redis.sock?user=app&pass={SECRET}&db=2"),
        format!("unix:///nonexistent/redis.sock?password={SECRET}"),
        format!("redis+cluster://app:{SECRET}@127.0.0.1:{p},127.0.0.1:{p}"),
        format!("rediss+cluster://:{SECRET}@127.0.0.1:{p}"),
        format!("redis+sentinel://app:{SECRET}@127.0.0.1:{p}/mymaster"),
        format!("redis+sentinel://127.0.0.1:{p}/mymaster/1?sentinel_password={SECRET}"),
        format!("rediss+sentinel://app:{SECRET}@127.0.0.1:{p}/mymaster"),
        // The password percent-encoded with characters that need it.
        format!("redis://app:{SECRET}%40%2F%3A%23@127.0.0.1:{p}"),
        // Forms without a scheme, and malformed ones.
        format!(":{SECRET}@127.0.0.1:{p}"),
        format!("app:{SECRET}@127.0.0.1:{p}"),
        format!("redis://app:{SECRET}@127.0.0.1:notaport"),
        format!("redis://app:{SECRET}@127.0.0.1:{p}?bogus=1"),
        format!("redis://app:{SECRET}@127.0.0.1:{p}#insecure"),
        format!("redis+sentinel://app:{SECRET}@127.0.0.1:{p}"),
        format!("redis+cluster://app:{SECRET}@127.0.0.1:{p}/5"),
        format!("http://app:{SECRET}@127.0.0.1:{p}"),
        format!("redis://app:{SECRET}/with/slash@127.0.0.1:{p}"),
        format!("redis+unix:///x.sock?pass={SECRET}&pass={SECRET}"),
    ]
}

fn assert_secret_free(what: &str, form: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("hunter2"),
        "{what} of {form:?} shows the password: {text}"
    );
}

#[tokio::test]
async fn no_url_form_leaks_its_password() {
    let port = dead_port();
    let mut created_errors = 0;
    for form in forms(port) {
        let config = DistributedConfig::new()
            .redis_url(&form)
            .socket_connect_timeout(Duration::from_millis(300));
        assert_secret_free("config Debug", &form, &format!("{config:?}"));
        assert_secret_free("redacted_url", &form, &config.redacted_url());
        assert!(config.redacted_url().contains("***"), "{form}");
        let builder = DistributedCache::builder().redis_url(&form);
        assert_secret_free("builder Debug", &form, &format!("{builder:?}"));
        if let Ok(url) = RedisUrl::parse(&form) {
            assert_secret_free("RedisUrl Display", &form, &url.to_string());
            assert_secret_free("RedisUrl Debug", &form, &format!("{url:?}"));
            assert!(url.to_string_with_secrets().contains("hunter2"), "{form}");
        }
        let err = DistributedCache::create(config).await.unwrap_err();
        assert_secret_free("create's error", &form, &err.to_string());
        assert_secret_free("create's error Debug", &form, &format!("{err:?}"));
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            assert_secret_free("create's error source", &form, &s.to_string());
            source = s.source();
        }
        created_errors += 1;
    }
    assert_eq!(created_errors, forms(port).len());
}

#[tokio::test]
async fn malformed_urls_are_input_errors_that_quote_the_redacted_url() {
    let err = DistributedCache::builder()
        .redis_url(format!("redis://app:{SECRET}@127.0.0.1:notaport"))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ormcache::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "invalid input in `redis_url`: cannot use \"redis://app:***@127.0.0.1:notaport\": \
         port \"notaport\" of 127.0.0.1 is not a number 1-65535"
    );
    let err = DistributedCache::builder()
        .redis_url("redis+sentinel://10.0.0.1:26379")
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid input in `redis_url`: cannot use \"redis+sentinel://10.0.0.1:26379\": \
         expected redis+sentinel://host:port,…/service_name[/db]"
    );
}

/// Generated parts of a URL, to write in a random (non-canonical) spelling and to
/// compare with what the parser found.
#[derive(Debug)]
struct Parts {
    topology: Topology,
    tls: bool,
    hosts: Vec<(String, u16)>,
    path: String,
    username: Option<String>,
    password: Option<String>,
    db: u32,
    service: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    insecure: bool,
}

const NAME_CHARS: &[char] = &[
    'a', 'Z', '0', '9', '-', '_', '.', '~', '@', ':', '/', '?', '#', '&', '=', '%', ' ', '+', ',',
    '[', ']', 'é', '鍵', '!', '*',
];

fn text(rng: &mut Rng, chars: &[char], max: u64) -> String {
    (0..1 + rng.below(max)).map(|_| *rng.pick(chars)).collect()
}

/// Percent-encodes everything but ASCII letters and digits, sometimes; else only
/// what must be encoded.
fn spell(rng: &mut Rng, s: &str) -> String {
    let all = rng.below(2) == 0;
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || (!all && matches!(c, '-' | '_' | '.' | '~')) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        }
    }
    out
}

fn duration(rng: &mut Rng) -> (Duration, String) {
    match rng.below(4) {
        0 => {
            let n = 1 + rng.below(100_000);
            (Duration::from_micros(n), format!("{n}us"))
        }
        1 => {
            let n = 1 + rng.below(100_000);
            (Duration::from_millis(n), format!("{n}ms"))
        }
        2 => {
            let n = 1 + rng.below(1000);
            (Duration::from_secs(n), format!("{n}s"))
        }
        _ => {
            let n = 1 + rng.below(100);
            (Duration::from_secs(n * 60), format!("{n}m"))
        }
    }
}

fn generate(rng: &mut Rng) -> (Parts, String) {
    let topology = *rng.pick(&[
        Topology::Server,
        Topology::Unix,
        Topology::Cluster,
        Topology::Sentinel,
    ]);
    let tls = topology != Topology::Unix && rng.below(2) == 0;
    let default_port = if topology == Topology::Sentinel {
        26379
    } else {
        6379
    };
    let host_count = match topology {
        Topology::Server => 1,
        Topology::Unix => 0,
        _ => 1 + rng.below(4),
    };
    let mut hosts = Vec::new();
    let mut host_texts = Vec::new();
    for _ in 0..host_count {
        let name = match rng.below(3) {
            0 => format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.below(256)
            ),
            1 => format!(
                "{}:{:x}::{}",
                rng.below(0xffff),
                rng.below(0xffff),
                rng.below(9)
            ),
            _ => text(rng, &['a', 'b', 'z', 'Q', '0', '7', '-', '.', '_'], 20),
        };
        let shown = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.clone()
        };
        let port = if rng.below(3) == 0 {
            host_texts.push(shown);
            default_port
        } else {
            let port = 1 + rng.below(65535) as u16;
            host_texts.push(format!("{shown}:{port}"));
            port
        };
        hosts.push((name, port));
    }
    let username = (rng.below(2) == 0).then(|| text(rng, NAME_CHARS, 12));
    let password = (rng.below(2) == 0).then(|| text(rng, NAME_CHARS, 24));
    let db = if topology == Topology::Cluster || rng.below(2) == 0 {
        0
    } else {
        rng.below(u64::from(u32::MAX)) as u32
    };
    let service = (topology == Topology::Sentinel).then(|| text(rng, NAME_CHARS, 12));
    let path = format!(
        "/{}",
        text(rng, &['a', 'b', '-', '.', '_', '/', ' ', 'é'], 30)
    );
    let mut query: Vec<String> = Vec::new();
    let (timeout, connect_timeout) = (rng.below(2) == 0, rng.below(2) == 0);
    let timeout = timeout.then(|| {
        let (d, t) = duration(rng);
        query.push(format!("timeout={t}"));
        d
    });
    let connect_timeout = connect_timeout.then(|| {
        let (d, t) = duration(rng);
        query.push(format!("connect_timeout={t}"));
        d
    });
    let insecure = tls && rng.below(3) == 0;
    if insecure {
        query.push(
            if rng.below(2) == 0 {
                "insecure"
            } else {
                "insecure=true"
            }
            .to_owned(),
        );
    }
    let scheme = match (topology, tls) {
        (Topology::Server, false) => "redis",
        (Topology::Server, true) => "rediss",
        (Topology::Unix, _) => *rng.pick(&["redis+unix", "unix", "REDIS+UNIX"]),
        (Topology::Cluster, false) => "redis+cluster",
        (Topology::Cluster, true) => "rediss+cluster",
        (Topology::Sentinel, false) => "redis+sentinel",
        (Topology::Sentinel, true) => "rediss+sentinel",
        _ => unreachable!(),
    };
    let mut url = format!("{scheme}://");
    if topology == Topology::Unix {
        url.push_str(&spell(rng, &path).replace("%2f", "/").replace("%2F", "/"));
        if db != 0 {
            query.push(format!("db={db}"));
        }
        if let Some(u) = &username {
            query.push(format!("user={}", spell(rng, u)));
        }
        if let Some(p) = &password {
            query.push(format!(
                "{}={}",
                rng.pick(&["pass", "password"]),
                spell(rng, p)
            ));
        }
    } else {
        match (&username, &password) {
            (None, None) => {}
            (u, p) => {
                if let Some(u) = u {
                    url.push_str(&spell(rng, u));
                }
                if let Some(p) = p {
                    url.push(':');
                    url.push_str(&spell(rng, p));
                }
                url.push('@');
            }
        }
        url.push_str(&host_texts.join(","));
        if let Some(s) = &service {
            url.push('/');
            url.push_str(&spell(rng, s));
        }
        if db != 0 {
            url.push_str(&format!("/{db}"));
        } else if topology != Topology::Sentinel && rng.below(3) == 0 {
            url.push_str(if rng.below(2) == 0 { "/" } else { "/0" });
        }
    }
    // Options in any order.
    for i in (1..query.len()).rev() {
        query.swap(i, rng.below(i as u64 + 1) as usize);
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let parts = Parts {
        topology,
        tls,
        hosts,
        path,
        username,
        password,
        db,
        service,
        timeout,
        connect_timeout,
        insecure,
    };
    (parts, url)
}

/// Property: for 20,000 generated URLs in random spellings, parsing finds the
/// generated parts, and `parse(to_string_with_secrets(x)) == x`. The redacted
/// `Display` never shows the password and parses to the same URL but for it.
#[test]
fn generated_urls_round_trip_through_their_canonical_form() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut by_topology = [0usize; 4];
    for case in 0..20_000 {
        let (parts, text) = generate(&mut rng);
        let url = RedisUrl::parse(&text)
            .unwrap_or_else(|e| panic!("case {case}: {text:?} did not parse: {e}"));
        let ctx = || format!("case {case}: {text:?} → {url:?} from {parts:?}");
        assert_eq!(url.topology(), parts.topology, "{}", ctx());
        assert_eq!(url.is_tls(), parts.tls, "{}", ctx());
        let hosts: Vec<(String, u16)> = url.hosts().map(|(h, p)| (h.to_owned(), p)).collect();
        assert_eq!(hosts, parts.hosts, "{}", ctx());
        if parts.topology == Topology::Unix {
            assert_eq!(url.socket_path(), Some(parts.path.as_str()), "{}", ctx());
        }
        assert_eq!(url.username(), parts.username.as_deref(), "{}", ctx());
        assert_eq!(url.has_password(), parts.password.is_some(), "{}", ctx());
        assert_eq!(url.db(), parts.db, "{}", ctx());
        assert_eq!(url.service_name(), parts.service.as_deref(), "{}", ctx());
        assert_eq!(url.command_timeout(), parts.timeout, "{}", ctx());
        assert_eq!(url.connect_timeout(), parts.connect_timeout, "{}", ctx());
        assert_eq!(url.is_insecure(), parts.insecure, "{}", ctx());

        let canonical = url.to_string_with_secrets();
        let again = RedisUrl::parse(&canonical)
            .unwrap_or_else(|e| panic!("{}: canonical {canonical:?} did not parse: {e}", ctx()));
        assert_eq!(again, url, "{}: canonical {canonical:?}", ctx());
        assert_eq!(again.to_string_with_secrets(), canonical, "{}", ctx());
        if let Some(pw) = &parts.password {
            let shown = url.to_string();
            assert!(shown.contains("***"), "{}", ctx());
            if pw.len() >= 4 {
                assert!(!shown.contains(pw.as_str()), "{}: {shown}", ctx());
            }
        }
        by_topology[match parts.topology {
            Topology::Server => 0,
            Topology::Unix => 1,
            Topology::Cluster => 2,
            _ => 3,
        }] += 1;
    }
    // The generator reached every form.
    assert!(by_topology.iter().all(|&n| n > 1000), "{by_topology:?}");
}

/// Damaged URLs (a character dropped, doubled or replaced) never panic the parser,
/// and what parses still round-trips.
#[test]
fn damaged_urls_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut parsed = 0;
    let mut refused = 0;
    for _ in 0..20_000 {
        let (_, text) = generate(&mut rng);
        let mut chars: Vec<char> = text.chars().collect();
        let at = rng.below(chars.len() as u64) as usize;
        match rng.below(3) {
            0 => {
                chars.remove(at);
            }
            1 => chars.insert(at, chars[at]),
            _ => chars[at] = *rng.pick(&['@', ':', '/', '?', '&', '=', '%', '[', ']', ',', '#']),
        }
        let damaged: String = chars.into_iter().collect();
        match RedisUrl::parse(&damaged) {
            Ok(url) => {
                parsed += 1;
                assert_eq!(
                    RedisUrl::parse(&url.to_string_with_secrets()).unwrap(),
                    url,
                    "{damaged:?}"
                );
            }
            Err(e) => {
                refused += 1;
                assert!(e.is_invalid_input(), "{damaged:?}: {e}");
            }
        }
    }
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}
