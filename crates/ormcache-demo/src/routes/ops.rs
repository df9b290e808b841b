//! `GET /health`. (`GET /cache/stats` is `ormcache::axum::stats`.)

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use ormcache::axum::cache_health;

/// `200` with the database's and the cache's status (`503` if the database does not
/// answer). A cache that does not answer makes the service `degraded`, not down:
/// reads go to the database.
pub(super) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let started = Instant::now();
    let db = state.db.ping().await;
    let db_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cache = cache_health(&state.cache).await;
    let (status, overall) = match (&db, cache.status == "ok") {
        (Err(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        (Ok(()), true) => (StatusCode::OK, "ok"),
        (Ok(()), false) => (StatusCode::OK, "degraded"),
    };
    let database = json!({
        "status": if db.is_ok() { "ok" } else { "down" },
        "backend": format!("{:?}", state.db.get_database_backend()).to_lowercase(),
        "latency_ms": db_latency_ms,
        "error": db.err().map(|e| e.to_string()),
    });
    (
        status,
        Json(json!({ "status": overall, "database": database, "cache": cache })),
    )
}
