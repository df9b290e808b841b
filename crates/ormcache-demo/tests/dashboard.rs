//! The live dashboard at `/cache/dashboard`: its JSON snapshot over plain HTTP, and
//! the page in a real headless Chromium (through chromedriver) while load runs
//! against two demo processes sharing one `redis-server`.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ormcache_testing::RedisServer;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Demo, DemoEnv, PATIENCE, TestDb, eventually};

/// Two demos on one Redis and prefix: each sees the other as a peer.
async fn pair(server: &RedisServer, prefix: &str) -> (TestDb, Demo, Demo) {
    let db = TestDb::sqlite();
    let env = DemoEnv::new(&db).redis(server.url(), prefix);
    let a = Demo::start(&format!("{prefix}-a"), &env).await;
    let b = Demo::start(&format!("{prefix}-b"), &env).await;
    (db, a, b)
}

async fn snapshot(demo: &Demo) -> Value {
    let reply = demo.get("/cache/dashboard/snapshot").await;
    reply.expect(200)
}

/// Waits until `demo`'s cache is coherent; its instance id.
async fn coherent_instance(demo: &Demo) -> String {
    eventually("the cache is coherent", || async {
        let s = snapshot(demo).await;
        (s["coherence"]["coherent"] == json!(true))
            .then(|| s["coherence"]["instance"].as_str().unwrap().to_owned())
    })
    .await
}

/// Reads, writes and misses against `demo` until `stop`; the number of requests.
fn load(demo: Arc<Demo>, ids: Vec<i64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let id = ids[(n as usize) % ids.len()];
            if n % 25 == 24 {
                demo.call(
                    Method::PATCH,
                    &format!("/users/{id}"),
                    Some(json!({"name": format!("user {n}")})),
                    &[],
                )
                .await;
            } else if n % 10 == 9 {
                demo.get(&format!("/users/{}", 1_000_000 + n % 50)).await;
            } else {
                demo.get(&format!("/users/{id}")).await;
            }
            n += 1;
            if n.is_multiple_of(64) {
                // Leave the 2-core machine some room for the browser.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    })
}

async fn create_users(demo: &Demo, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let user = demo
            .post(
                "/users",
                json!({"name": format!("U{i}"), "email": format!("u{i}@example.com")}),
            )
            .await
            .expect(201);
        ids.push(user["id"].as_i64().unwrap());
    }
    ids
}

#[tokio::test]
async fn snapshot_reports_levels_latency_peers_lag_and_events() {
    let server = RedisServer::start();
    let (_db, a, b) = pair(&server, "dash-json").await;

    // The page: HTML that loads nothing from elsewhere.
    let page = a.get("/cache/dashboard").await;
    assert_eq!(page.status.as_u16(), 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(page.bytes.clone()).unwrap();
    assert!(html.contains("id=\"chart-hits\""), "{html}");
    assert!(html.contains("path + 'snapshot'"), "relative snapshot URL");
    let csp = a
        .http
        .get(a.url("/cache/dashboard"))
        .send()
        .await
        .unwrap()
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        csp.as_deref()
            .is_some_and(|c| c.starts_with("default-src 'none'")),
        "{csp:?}"
    );

    // Both instances are coherent and see each other: under the fleet protocol a
    // hears b once b acknowledges a write of a user that b holds.
    let b_id = coherent_instance(&b).await;
    let user = a.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    let s = eventually("a is coherent and hears b", || async {
        b.get(&path).await.expect(200);
        a.patch(&path, json!({"name": "Ann"})).await.expect(200);
        let s = snapshot(&a).await;
        let hears_b = s["coherence"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == json!(b_id) && p["live"] == json!(true));
        (s["coherence"]["coherent"] == json!(true) && hears_b).then_some(s)
    })
    .await;
    assert_eq!(s["kind"], json!("hybrid"), "{s}");
    assert_eq!(s["l2"]["breaker"], json!("closed"), "{s}");
    assert_eq!(
        s["l2"]["round_trips"]["buckets"].as_array().unwrap().len(),
        26
    );
    assert_eq!(s["coherence"]["peers_live"], json!(1), "{s}");
    assert_eq!(s["coherence"]["unconfirmed"], json!(0), "{s}");
    assert_eq!(s["l1"]["max_size"], json!(10_000), "{s}");
    // Subscribing flushed the L1 once the stream was up.
    let kinds: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"stream_up") && kinds.contains(&"flush"),
        "{s}"
    );
    assert!(s["time_ms"].as_u64().unwrap() > 1_700_000_000_000);

    // Requests move the counters: a miss read from the database, then an L1 hit;
    // a write waits for b's acknowledgement (invalidation lag).
    let before = snapshot(&a).await;
    let user = a.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    a.get(&path).await.expect_cached(200, "MISS");
    a.get(&path).await.expect_cached(200, "HIT");
    // (The fleet protocol: the fill's own store is reported back and drops the
    // copy it took, so the second read may come from L2 and the third from L1.)
    a.get(&path).await.expect_cached(200, "HIT");
    let cached = snapshot(&a).await;
    assert!(cached["l1"]["size"].as_u64().unwrap() >= 1, "{cached}");
    a.patch(&path, json!({"name": "Anne"})).await.expect(200);
    let after = snapshot(&a).await;
    let n = |s: &Value, path: &[&str]| {
        path.iter()
            .fold(s, |v, k| &v[*k])
            .as_u64()
            .unwrap_or_else(|| panic!("{path:?} in {s}"))
    };
    assert!(
        n(&after, &["reads", "total"]) >= n(&before, &["reads", "total"]) + 2,
        "{before}\n{after}"
    );
    assert!(
        n(&after, &["reads", "l1_hits"]) > n(&before, &["reads", "l1_hits"]),
        "{after}"
    );
    assert!(n(&after, &["writes"]) > n(&before, &["writes"]), "{after}");
    assert!(
        n(&after, &["l2", "round_trips", "count"]) > n(&before, &["l2", "round_trips", "count"]),
        "{after}"
    );
    let rt = &after["l2"]["round_trips"];
    let bucketed: u64 = rt["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert_eq!(bucketed, n(rt, &["count"]), "{rt}");
    assert!(
        n(&after, &["coherence", "lag", "count"]) > n(&before, &["coherence", "lag", "count"]),
        "a confirmed write records its lag: {after}"
    );
    assert!(
        n(&after, &["coherence", "confirmed"]) > n(&before, &["coherence", "confirmed"]),
        "{after}"
    );

    // b applied a's invalidations.
    let received = eventually("b received a's invalidations", || async {
        let s = snapshot(&b).await;
        let r = n(&s, &["coherence", "invalidations_received"]);
        (r > 0).then_some(r)
    })
    .await;
    assert!(received > 0);

    // A message nobody can read on the channel (it may have stood for an
    // invalidation): the L1 flush it causes is in the event list. (Gaps in a
    // sender's numbers are the broadcast protocol's; the demo runs the fleet one,
    // where each instance gets only some of a sender's messages.)
    let flushes_before = n(&snapshot(&a).await, &["coherence", "flushes"]);
    let mut con = server.connection().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("dash-json:__oc:inv")
        .arg("not a message")
        .query_async(&mut con)
        .await
        .unwrap();
    let s = eventually("a's snapshot shows the flush", || async {
        let s = snapshot(&a).await;
        (n(&s, &["coherence", "flushes"]) > flushes_before).then_some(s)
    })
    .await;
    let events: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"flush"), "{s}");
    assert!(n(&s, &["coherence", "flushes"]) >= 2, "{s}");

    // Redis dies: the breaker opens and the stream is lost, as the page shows.
    server.kill();
    let s = eventually("the breaker opens", || async {
        a.get(&path).await;
        let s = snapshot(&a).await;
        (s["l2"]["breaker"] == json!("open")).then_some(s)
    })
    .await;
    assert!(n(&s, &["l2", "breaker_opened"]) >= 1, "{s}");
    let s = eventually("the stream is lost", || async {
        let s = snapshot(&a).await;
        (s["coherence"]["coherent"] == json!(false)
            && s["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == json!("stream_lost")))
        .then_some(s)
    })
    .await;
    assert_eq!(s["kind"], json!("hybrid"));
}

// ---------------------------------------------------------------------------
// The page in a real browser.

/// `chromium` and `chromedriver`, installed from Debian's archive when missing.
fn browser() -> (String, String) {
    fn which(cmd: &str) -> Option<String> {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !path.is_empty()).then_some(path)
    }
    let missing: Vec<&str> = [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ]
    .into_iter()
    .filter(|(cmd, _)| which(cmd).is_none())
    .map(|(_, pkg)| pkg)
    .collect();
    if !missing.is_empty() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let sudo = if root { "" } else { "sudo " };
        let script = format!(
            "{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq {} >/dev/null",
            missing.join(" ")
        );
        let status = Command::new("sh").args(["-c", &script]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this test needs a browser: `{}` failed; install Debian's {} and rerun",
            script,
            missing.join(" and ")
        );
    }
    (
        which("chromium").expect("chromium installed but not on PATH"),
        which("chromedriver").expect("chromedriver installed but not on PATH"),
    )
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session of one headless Chromium.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Driver {
    async fn start(chromedriver: &str) -> Self {
        let port = ormcache_testing::free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(PATIENCE)
                .build()
                .unwrap(),
        };
        eventually("chromedriver answers", || async {
            let r = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            (body["value"]["ready"] == json!(true)).then_some(())
        })
        .await;
        driver
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let reply: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .json()
            .await
            .unwrap();
        assert!(
            reply["value"]["error"].is_null(),
            "WebDriver {method} {path}: {reply}"
        );
        reply["value"].clone()
    }

    async fn session(&self, chromium: &str, user_data: &std::path::Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1080", "--hide-scrollbars",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        }}});
        let value = self.send(Method::POST, "/session", Some(caps)).await;
        Session {
            driver: self,
            id: value["sessionId"].as_str().unwrap().to_owned(),
        }
    }
}

impl Session<'_> {
    async fn open(&self, url: &str) {
        self.driver
            .send(
                Method::POST,
                &format!("/session/{}/url", self.id),
                Some(json!({ "url": url })),
            )
            .await;
    }

    /// Runs `script` (a function body) in the page; what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.driver
            .send(
                Method::POST,
                &format!("/session/{}/execute/sync", self.id),
                Some(json!({ "script": script, "args": [] })),
            )
            .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self
            .driver
            .send(
                Method::GET,
                &format!("/session/{}/screenshot", self.id),
                None,
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    async fn close(self) {
        self.driver
            .send(Method::DELETE, &format!("/session/{}", self.id), None)
            .await;
    }
}

/// What the test reads off the page: the DOM's text and chart geometry.
const READ_PAGE: &str = "
    const t = (id) => document.getElementById(id).textContent;
    const pts = (id) => { const el = document.getElementById(id); return el ? el.getAttribute('points') : null; };
    return {
        polls: Number(t('polls')),
        status: t('status'),
        reads: t('reads-total'),
        round_trips: t('round-trips'),
        read_rate: t('read-rate'),
        l1_hit_rate: t('l1-hit-rate'),
        l1_size: t('l1-size'),
        redis_latency: t('redis-latency'),
        breaker: t('breaker'),
        coherent: t('coherent'),
        peers: Array.from(document.querySelectorAll('#peers tr')).map((r) => r.textContent),
        events: document.querySelectorAll('#events li').length,
        hits_line: pts('chart-hits-l1'),
        ops_line: pts('chart-ops-reads'),
        redis_line: pts('chart-redis-rtAvgMs'),
    };";

fn number(v: &Value) -> u64 {
    v.as_str()
        .unwrap_or_default()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number on the page: {v}"))
}

fn points(v: &Value) -> usize {
    v.as_str().map_or(0, |p| p.split_whitespace().count())
}

#[tokio::test]
async fn the_page_updates_live_in_headless_chromium() {
    let (chromium, chromedriver) = browser();
    let server = RedisServer::start();
    let (_db, a, b) = pair(&server, "dash-page").await;
    let a = Arc::new(a);
    let b_id = coherent_instance(&b).await;
    let ids = create_users(&a, 40).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load_a = load(Arc::clone(&a), ids.clone(), Arc::clone(&stop));
    // Some load on b too: a hears its invalidations.
    let b = Arc::new(b);
    let load_b = load(Arc::clone(&b), ids, Arc::clone(&stop));

    let driver = Driver::start(&chromedriver).await;
    let profile = std::env::temp_dir().join(format!("ormcache-dashboard-{}", std::process::id()));
    let session = driver.session(&chromium, &profile).await;
    session.open(&a.url("/cache/dashboard?every=500")).await;

    // First read: the page has polled at least twice on its own (so the charts
    // have points).
    let first = eventually("the page polled twice and drew its charts", || async {
        let v = session.eval(READ_PAGE).await;
        (v["polls"].as_u64().unwrap_or(0) >= 3 && points(&v["ops_line"]) >= 2).then_some(v)
    })
    .await;
    // Second read, a few polls later, same page (no reload).
    let started = Instant::now();
    let second = eventually("the page polled three more times", || async {
        let v = session.eval(READ_PAGE).await;
        (v["polls"].as_u64().unwrap_or(0) >= first["polls"].as_u64().unwrap() + 3
            && started.elapsed() > Duration::from_secs(2))
        .then_some(v)
    })
    .await;

    // `DASHBOARD_SCREENSHOT_AFTER=40` lets the charts fill up before the
    // screenshot (how the README's was taken).
    if let Some(secs) = std::env::var("DASHBOARD_SCREENSHOT_AFTER")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let shot = session.screenshot().await;
    session.close().await;
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    for l in [load_a, load_b] {
        requests += l.await.unwrap();
    }
    assert!(requests > 0);

    // The numbers and the charts changed between the two reads.
    assert!(
        number(&second["reads"]) > number(&first["reads"]),
        "reads did not move:\n{first}\n{second}"
    );
    assert!(
        number(&second["round_trips"]) > number(&first["round_trips"]),
        "Redis round trips did not move:\n{first}\n{second}"
    );
    assert_ne!(
        first["ops_line"], second["ops_line"],
        "the ops chart did not change"
    );
    assert!(
        points(&second["ops_line"]) > points(&first["ops_line"]),
        "{second}"
    );
    assert!(points(&second["hits_line"]) >= 2, "{second}");
    assert!(points(&second["redis_line"]) >= 2, "{second}");
    // Live values, not placeholders.
    for (field, shows) in [
        ("status", "updated "),
        ("l1_hit_rate", " %"),
        ("redis_latency", " ms"),
        ("l1_size", " / 10,000"),
    ] {
        let value = second[field].as_str().unwrap();
        assert!(value.contains(shows), "{field}: {value:?} in {second}");
    }
    assert_eq!(second["breaker"], json!("breaker closed"), "{second}");
    assert_eq!(second["coherent"], json!("coherent"), "{second}");
    let peers = second["peers"].as_array().unwrap();
    assert!(
        peers.len() == 1 && peers[0].as_str().unwrap().contains(&b_id),
        "b in the peer table: {second}"
    );
    assert!(second["events"].as_u64().unwrap() >= 2, "{second}");

    // The screenshot, for the eye.
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &shot).unwrap();
    eprintln!("screenshot: {}", out.display());
    let _ = std::fs::remove_dir_all(&profile);
}
