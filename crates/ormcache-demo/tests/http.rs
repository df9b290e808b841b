//! The HTTP interface of the demo on its embedded defaults (SQLite, in-process
//! cache), over real HTTP against the real binary.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Demo, DemoEnv, PATIENCE, TestDb};

async fn demo(name: &str) -> (TestDb, Demo) {
    let db = TestDb::sqlite();
    let demo = Demo::start(name, &DemoEnv::new(&db)).await;
    (db, demo)
}

/// `body` without its `created_at`, which the test cannot know in advance.
fn fields(body: &Value) -> Value {
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove("created_at");
    b
}

#[tokio::test]
async fn users_crud_with_x_cache_and_list_invalidation() {
    let (_db, demo) = demo("users").await;
    users_crud(&demo).await;
}

async fn users_crud(demo: &Demo) {
    let created = demo.create_ann().await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        fields(&created),
        json!({"id": id, "name": "Ann", "email": "ann@example.com", "tenant_id": null})
    );
    assert!(created["created_at"].as_i64().unwrap() > 0);

    // MISS, then HIT with the same body.
    let path = format!("/users/{id}");
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), created);
    assert_eq!(demo.get(&path).await.expect_cached(200, "HIT"), created);

    // Lists: MISS, HIT; a create makes the next page fresh.
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([created])
    );
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "HIT"),
        json!([created])
    );
    let bob = demo
        .post("/users", json!({"name": "Bob", "email": "bob@example.com"}))
        .await
        .expect(201);
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([created, bob])
    );
    assert_eq!(
        demo.get("/users?limit=1&offset=1")
            .await
            .expect_cached(200, "MISS"),
        json!([bob])
    );
    assert_eq!(
        demo.get("/users?limit=1&offset=1")
            .await
            .expect_cached(200, "HIT"),
        json!([bob])
    );

    // A partial update: the entry and every page are invalidated.
    let updated = demo.patch(&path, json!({"name": "Anne"})).await.expect(200);
    let mut expected = created.clone();
    expected["name"] = json!("Anne");
    assert_eq!(updated, expected);
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), expected);
    assert_eq!(demo.get(&path).await.expect_cached(200, "HIT"), expected);
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([expected, bob])
    );
    assert_eq!(
        demo.get("/users?limit=1&offset=1")
            .await
            .expect_cached(200, "MISS"),
        json!([bob])
    );
    // An empty patch changes nothing.
    assert_eq!(demo.patch(&path, json!({})).await.expect(200), expected);

    // Delete: 200 with the seed's message, then 404 everywhere.
    assert_eq!(
        demo.delete(&path).await.expect(200),
        json!({"message": "User deleted"})
    );
    let gone = demo.get(&path).await.expect(404);
    assert_eq!(gone, json!({"error": format!("User {id} not found")}));
    assert_eq!(
        demo.get("/users").await.expect_cached(200, "MISS"),
        json!([bob])
    );
    demo.delete(&path).await.expect(404);
    demo.patch(&path, json!({"name": "X"})).await.expect(404);
    // "Not found" is cached too, and says so.
    assert_eq!(
        demo.get("/users/999999").await.expect_cached(404, "MISS"),
        json!({"error": "User 999999 not found"})
    );
    demo.get("/users/999999").await.expect_cached(404, "HIT");
}

#[tokio::test]
async fn products_list_behind_the_response_cache_is_fresh_after_every_write() {
    let (_db, demo) = demo("products").await;
    products_crud(&demo).await;
}

async fn products_crud(demo: &Demo) {
    let anvil = demo
        .post(
            "/products",
            json!({"name": "Anvil", "price": 19.5, "description": "heavy", "in_stock": true}),
        )
        .await
        .expect(201);
    let id = anvil["id"].as_i64().unwrap();
    assert_eq!(
        fields(&anvil),
        json!({"id": id, "name": "Anvil", "price": 19.5, "description": "heavy",
               "in_stock": true, "tenant_id": null})
    );
    let path = format!("/products/{id}");
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), anvil);
    assert_eq!(demo.get(&path).await.expect_cached(200, "HIT"), anvil);

    assert_eq!(
        demo.get("/products").await.expect_cached(200, "MISS"),
        json!([anvil])
    );
    assert_eq!(
        demo.get("/products").await.expect_cached(200, "HIT"),
        json!([anvil])
    );

    // Create: fresh list. `in_stock` defaults to true, `description` to null.
    let rope = demo
        .post("/products", json!({"name": "Rope", "price": 3}))
        .await
        .expect(201);
    assert_eq!(rope["in_stock"], json!(true));
    assert_eq!(rope["description"], Value::Null);
    assert_eq!(rope["price"], json!(3.0));
    assert_eq!(
        demo.get("/products").await.expect_cached(200, "MISS"),
        json!([anvil, rope])
    );
    assert_eq!(
        demo.get("/products").await.expect_cached(200, "HIT"),
        json!([anvil, rope])
    );

    // Update: fresh list and entry.
    let patched = demo
        .patch(&path, json!({"price": 21.0, "in_stock": false}))
        .await
        .expect(200);
    let mut expected = anvil.clone();
    expected["price"] = json!(21.0);
    expected["in_stock"] = json!(false);
    assert_eq!(patched, expected);
    assert_eq!(
        demo.get("/products").await.expect_cached(200, "MISS"),
        json!([expected, rope])
    );
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), expected);
    // `description: null` clears it; absent fields stay.
    let cleared = demo
        .patch(&path, json!({"description": null}))
        .await
        .expect(200);
    expected["description"] = Value::Null;
    assert_eq!(cleared, expected);
    let described = demo
        .patch(&path, json!({"description": "forged"}))
        .await
        .expect(200);
    expected["description"] = json!("forged");
    assert_eq!(described, expected);
    assert_eq!(demo.get(&path).await.expect_cached(200, "MISS"), expected);

    // Delete: fresh list.
    assert_eq!(
        demo.delete(&path).await.expect(200),
        json!({"message": "Product deleted"})
    );
    assert_eq!(
        demo.get("/products").await.expect_cached(200, "MISS"),
        json!([rope])
    );
    demo.get(&path).await.expect(404);
}

#[tokio::test]
async fn every_bad_input_gets_a_4xx_with_a_json_error() {
    let (_db, demo) = demo("bad-input").await;
    let user = demo.create_ann().await;
    let user_path = format!("/users/{}", user["id"]);

    let raw =
        |method: Method, path: &str, body: &'static str, content_type: Option<&'static str>| {
            let mut req = demo.http.request(method, demo.url(path)).body(body);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            req
        };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "invalid JSON",
            raw(Method::POST, "/users", "{\"name\": ", json_ct),
            400,
        ),
        (
            "not an object",
            raw(Method::POST, "/users", "[1, 2]", json_ct),
            422,
        ),
        (
            "missing field",
            raw(Method::POST, "/users", "{\"name\": \"A\"}", json_ct),
            422,
        ),
        (
            "mistyped field",
            raw(
                Method::POST,
                "/users",
                "{\"name\": 1, \"email\": \"a@b\"}",
                json_ct,
            ),
            422,
        ),
        (
            "empty name",
            raw(
                Method::POST,
                "/users",
                "{\"name\": \" \", \"email\": \"a@b\"}",
                json_ct,
            ),
            422,
        ),
        (
            "bad email",
            raw(
                Method::POST,
                "/users",
                "{\"name\": \"A\", \"email\": \"nope\"}",
                json_ct,
            ),
            422,
        ),
        (
            "no content type",
            raw(
                Method::POST,
                "/users",
                "{\"name\": \"A\", \"email\": \"a@b\"}",
                None,
            ),
            415,
        ),
        ("empty body", raw(Method::POST, "/users", "", json_ct), 400),
        (
            "patch mistyped",
            raw(Method::PATCH, &user_path, "{\"email\": 5}", json_ct),
            422,
        ),
        (
            "patch invalid JSON",
            raw(Method::PATCH, &user_path, "nope", json_ct),
            400,
        ),
        (
            "negative price",
            raw(
                Method::POST,
                "/products",
                "{\"name\": \"A\", \"price\": -1}",
                json_ct,
            ),
            422,
        ),
        (
            "price as text",
            raw(
                Method::POST,
                "/products",
                "{\"name\": \"A\", \"price\": \"1\"}",
                json_ct,
            ),
            422,
        ),
        (
            "in_stock as text",
            raw(
                Method::POST,
                "/products",
                "{\"name\": \"A\", \"price\": 1, \"in_stock\": \"yes\"}",
                json_ct,
            ),
            422,
        ),
        (
            "huge price",
            raw(
                Method::POST,
                "/products",
                "{\"name\": \"A\", \"price\": 1e300}",
                json_ct,
            ),
            422,
        ),
        (
            "non-numeric id",
            raw(Method::GET, "/users/abc", "", None),
            400,
        ),
        (
            "id beyond i64",
            raw(Method::GET, "/users/99999999999999999999999", "", None),
            400,
        ),
        (
            "non-numeric id on patch",
            raw(Method::PATCH, "/products/x", "{}", json_ct),
            400,
        ),
        (
            "non-numeric id on delete",
            raw(Method::DELETE, "/users/1.5", "", None),
            400,
        ),
        (
            "limit zero",
            raw(Method::GET, "/users?limit=0", "", None),
            400,
        ),
        (
            "negative limit",
            raw(Method::GET, "/users?limit=-1", "", None),
            400,
        ),
        (
            "huge limit",
            raw(Method::GET, "/users?limit=1000001", "", None),
            400,
        ),
        (
            "limit beyond u64",
            raw(
                Method::GET,
                "/users?limit=99999999999999999999999",
                "",
                None,
            ),
            400,
        ),
        (
            "non-numeric limit",
            raw(Method::GET, "/products?limit=ten", "", None),
            400,
        ),
        (
            "negative offset",
            raw(Method::GET, "/users?offset=-1", "", None),
            400,
        ),
        (
            "offset beyond i64",
            raw(
                Method::GET,
                "/products?offset=18446744073709551615",
                "",
                None,
            ),
            400,
        ),
        (
            "invalid tenant",
            raw(Method::GET, "/users", "", None).header("x-tenant-id", "a:b*"),
            400,
        ),
        (
            "too long tenant",
            raw(Method::GET, "/users", "", None).header("x-tenant-id", "t".repeat(65)),
            400,
        ),
        ("unknown route", raw(Method::GET, "/nope", "", None), 404),
        (
            "unsupported method",
            raw(Method::PUT, "/users", "", None),
            405,
        ),
    ];
    for (what, request, status) in cases {
        let reply = request.send().await.unwrap();
        let got = reply.status().as_u16();
        let ct = reply
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = reply.text().await.unwrap();
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(ct.as_deref(), Some("application/json"), "{what}: {body}");
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(!message.is_empty(), "{what}");
        assert_eq!(json.as_object().unwrap().len(), 1, "{what}: {body}");
    }
    // Still alive, nothing was written by the bad requests.
    assert_eq!(demo.try_exit(), None);
    assert_eq!(demo.get("/users").await.expect(200), json!([user]));
    assert_eq!(demo.get("/products").await.expect(200), json!([]));
}

#[tokio::test]
async fn tenants_see_only_their_rows_and_entries() {
    let (_db, demo) = demo("tenants").await;
    tenants(&demo).await;
}

async fn tenants(demo: &Demo) {
    let acme = [("x-tenant-id", "acme")];
    let globex = [("x-tenant-id", "globex")];

    let a = demo
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "A", "email": "a@acme.io"})),
            &acme,
        )
        .await
        .expect(201);
    assert_eq!(a["tenant_id"], json!("acme"));
    let g = demo
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "G", "email": "g@globex.io"})),
            &globex,
        )
        .await
        .expect(201);
    let none = demo
        .post("/users", json!({"name": "N", "email": "n@example.com"}))
        .await
        .expect(201);
    assert_eq!(none["tenant_id"], Value::Null);

    let path = format!("/users/{}", a["id"]);
    assert_eq!(
        demo.call(Method::GET, &path, None, &acme)
            .await
            .expect_cached(200, "MISS"),
        a
    );
    assert_eq!(
        demo.call(Method::GET, &path, None, &acme)
            .await
            .expect_cached(200, "HIT"),
        a
    );
    // Another tenant, and no tenant, neither see the row nor reach the entry.
    demo.call(Method::GET, &path, None, &globex)
        .await
        .expect(404);
    demo.get(&path).await.expect(404);
    demo.call(Method::PATCH, &path, Some(json!({"name": "X"})), &globex)
        .await
        .expect(404);
    demo.call(Method::DELETE, &path, None, &globex)
        .await
        .expect(404);

    assert_eq!(
        demo.call(Method::GET, "/users", None, &acme)
            .await
            .expect(200),
        json!([a])
    );
    assert_eq!(
        demo.call(Method::GET, "/users", None, &globex)
            .await
            .expect(200),
        json!([g])
    );
    assert_eq!(demo.get("/users").await.expect(200), json!([none]));

    // Products (response cache) too, per tenant.
    let pa = demo
        .call(
            Method::POST,
            "/products",
            Some(json!({"name": "P", "price": 1})),
            &acme,
        )
        .await
        .expect(201);
    assert_eq!(
        demo.call(Method::GET, "/products", None, &acme)
            .await
            .expect_cached(200, "MISS"),
        json!([pa])
    );
    assert_eq!(
        demo.call(Method::GET, "/products", None, &acme)
            .await
            .expect_cached(200, "HIT"),
        json!([pa])
    );
    assert_eq!(
        demo.call(Method::GET, "/products", None, &globex)
            .await
            .expect_cached(200, "MISS"),
        json!([])
    );
    assert_eq!(demo.get("/products").await.expect(200), json!([]));

    // A write in one tenant refreshes its own lists.
    demo.call(Method::PATCH, &path, Some(json!({"name": "A2"})), &acme)
        .await
        .expect(200);
    let listed = demo
        .call(Method::GET, "/users", None, &acme)
        .await
        .expect(200);
    assert_eq!(listed[0]["name"], json!("A2"));
}

#[tokio::test]
async fn health_and_stats_answer_in_json() {
    let (_db, demo) = demo("ops").await;
    let health = demo.get("/health").await.expect(200);
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(health["database"]["status"], json!("ok"));
    assert_eq!(health["database"]["backend"], json!("sqlite"));
    assert_eq!(health["cache"]["status"], json!("ok"));
    assert_eq!(health["cache"]["kind"], json!("local"));

    let user = demo.create_ann().await;
    let path = format!("/users/{}", user["id"]);
    demo.get(&path).await.expect_cached(200, "MISS");
    demo.get(&path).await.expect_cached(200, "HIT");
    let stats = demo.get("/cache/stats").await.expect(200);
    for field in ["hits", "misses", "sets", "hit_rate", "size", "default_ttl"] {
        assert!(stats.get(field).is_some(), "{field} missing: {stats}");
    }
    assert!(stats["hits"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["default_ttl"], json!(300));
}

#[tokio::test]
async fn start_up_warms_the_cache_with_recent_users() {
    let db = TestDb::sqlite();
    let env = DemoEnv::new(&db);
    let first = Demo::start("warm-1", &env).await;
    let plain = first.create_ann().await;
    let tenant = first
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "T", "email": "t@acme.io"})),
            &[("x-tenant-id", "acme")],
        )
        .await
        .expect(201);
    first.terminate();
    assert!(first.wait_exit().await.success(), "{}", first.log());

    let second = Demo::start("warm-2", &env).await;
    assert!(
        second.log().contains("cache warmed with 2 users"),
        "{}",
        second.log()
    );
    assert_eq!(
        second
            .get(&format!("/users/{}", plain["id"]))
            .await
            .expect_cached(200, "HIT"),
        plain
    );
    assert_eq!(
        second
            .call(
                Method::GET,
                &format!("/users/{}", tenant["id"]),
                None,
                &[("x-tenant-id", "acme")]
            )
            .await
            .expect_cached(200, "HIT"),
        tenant
    );
}

#[tokio::test]
async fn sigterm_finishes_the_in_flight_request_then_exits_0() {
    let (_db, demo) = demo("sigterm").await;
    // A request whose body is still arriving when SIGTERM comes. The connection
    // first carries a whole request, so it is known to be accepted and served.
    let body = br#"{"name": "Late", "email": "late@example.com"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", demo.port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET /users HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut stream);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    write!(
        stream,
        "POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    // Let the server parse the head; not a correctness sleep: if it has not, the
    // request is lost and the assertion below says so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    demo.terminate();
    support::eventually("the demo logs the SIGTERM", || async {
        demo.log().contains("SIGTERM received").then_some(())
    })
    .await;
    stream.write_all(&body[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "{response}\nlog:\n{}",
        demo.log()
    );
    assert!(response.contains("\"name\":\"Late\""), "{response}");
    let status = demo.wait_exit().await;
    assert!(status.success(), "exit {status}; log:\n{}", demo.log());
    let log = demo.log();
    assert!(log.contains("closing the cache and the database"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_with_exit_code_2_naming_it() {
    let db = TestDb::sqlite();
    for (var, value) in [
        ("PORT", "eighty"),
        ("CACHE_TTL", "0"),
        ("DATABASE_URL", "mysql://x/y"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ormcache-demo"))
            .env("DATABASE_URL", &db.url)
            .env(var, value)
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {var}")),
            "{var}={value}: {stderr}"
        );
    }
}

#[tokio::test]
async fn sigint_stops_the_service_cleanly() {
    let (_db, demo) = demo("sigint").await;
    demo.get("/users").await.expect(200);
    demo.signal("-INT");
    let status = demo.wait_exit().await;
    assert!(status.success(), "exit {status}; log:\n{}", demo.log());
    let log = demo.log();
    assert!(log.contains("SIGINT received"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// The CRUD, response-cache and tenant flows again on PostgreSQL (each in a schema
/// of its own), when `ORMCACHE_TEST_DATABASE_URL` is set.
#[tokio::test]
async fn the_same_flows_on_postgres() {
    let test = "the_same_flows_on_postgres";
    for (tag, flow) in [("pg-users", 0), ("pg-products", 1), ("pg-tenants", 2)] {
        let Some(db) = TestDb::postgres(test).await else {
            return;
        };
        let demo = Demo::start(tag, &DemoEnv::new(&db)).await;
        let health = demo.get("/health").await.expect(200);
        assert_eq!(health["database"]["backend"], json!("postgres"), "{health}");
        match flow {
            0 => users_crud(&demo).await,
            1 => products_crud(&demo).await,
            _ => tenants(&demo).await,
        }
    }
}

/// One HTTP/1.1 response with a `content-length` body, read off `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head"
        );
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

/// The SQLite file is in WAL mode once the demo has started: bytes 18 and 19 of a
/// SQLite file's header are its write and read format versions, 1 for a rollback
/// journal (the library default) and 2 for WAL (<https://www.sqlite.org/fileformat.html>).
#[tokio::test]
async fn sqlite_is_opened_in_wal_mode() {
    let (db, demo) = demo("wal").await;
    demo.create_ann().await;
    let path = db
        .url
        .strip_prefix("sqlite://")
        .and_then(|p| p.split('?').next())
        .unwrap();
    let header = std::fs::read(path).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!((header[18], header[19]), (2, 2), "not in WAL mode");
}

/// One access-log line per request only when `ormcache_demo::access` is at `debug`;
/// at `info` (the binary's filter when `RUST_LOG` is unset) none. (The other tests
/// run with `ormcache=debug`, which matches the `ormcache_demo` targets too.)
#[tokio::test]
async fn the_access_log_is_off_by_default_and_on_at_debug() {
    let db = TestDb::sqlite();
    let quiet = Demo::start("access-off", &DemoEnv::new(&db).rust_log("info")).await;
    quiet.get("/users/424242").await.expect(404);
    quiet.get("/health").await.expect(200);
    let log = quiet.log();
    assert!(!log.contains("/users/424242"), "{log}");
    drop(quiet);

    let env = DemoEnv::new(&db).rust_log("info,ormcache_demo::access=debug");
    let loud = Demo::start("access-on", &env).await;
    loud.get("/users/424242").await.expect(404);
    support::eventually("the access line of GET /users/424242", || async {
        let log = loud.log();
        log.lines()
            .any(|l| {
                l.contains("ormcache_demo::access")
                    && l.contains("/users/424242")
                    && l.contains("status=404")
            })
            .then_some(())
    })
    .await;
}
