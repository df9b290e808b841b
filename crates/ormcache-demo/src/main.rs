//! The demo service: the seed's FastAPI integration example, in axum and SeaORM.
//!
//! Users and products over HTTP, read through ormcache and invalidated by SeaORM
//! lifecycle signals. Settings come from the environment (see [`config::Config`]):
//! `HOST`, `PORT`, `DATABASE_URL`, `REDIS_URL` (every form of `ormcache::RedisUrl`:
//! one server, TLS, unix socket, Cluster, Sentinel), `REDIS_TLS_CA_FILE`,
//! `REDIS_TLS_CERT_FILE` + `REDIS_TLS_KEY_FILE` (PEM files for `rediss…://`),
//! `CACHE_PREFIX`, `CACHE_TTL`, and `RUST_LOG` (a `tracing` filter, default `info`;
//! the per-request access log is `ormcache_demo::access` at `debug`, off by default:
//! `RUST_LOG=info,ormcache_demo::access=debug` turns it on).
//!
//! | route | |
//! | --- | --- |
//! | `GET /health` | database and cache status |
//! | `GET /cache/stats` | the cache's statistics, in the seed's shape |
//! | `GET /cache/dashboard` | a live page of hit rates, latency, breaker, peers (polls `/cache/dashboard/snapshot`) |
//! | `GET /metrics` | every `ormcache_…` metric, Prometheus text format |
//! | `POST /users`, `GET /users?limit=&offset=` | create (201), list (`limit` 1–1000, default 100) |
//! | `GET`, `PATCH`, `DELETE /users/{id}` | read (`X-Cache: HIT\|MISS`), partial update, delete |
//! | the same under `/products` | |
//!
//! `X-Tenant-ID` scopes a request's cache keys and rows to a tenant. Every error is
//! a 4xx/5xx with a JSON body `{"error": "…"}`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod cache;
mod config;
mod db;
mod entities;
mod error;
mod extract;
mod metrics;
mod routes;

use std::future::IntoFuture;
use std::process::ExitCode;

use ormcache::Cache;
use ormcache::sea_orm::EntityCache;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::routes::AppState;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up failure, with what was being done.
type StartError = Box<dyn std::error::Error + Send + Sync>;

fn context<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StartError {
    move |e| format!("{what}: {e}").into()
}

/// Starts the service and serves until SIGINT or SIGTERM.
async fn run(config: Config) -> Result<(), StartError> {
    tracing::info!(?config, "starting");
    // Before the cache: its metrics are registered when it is built.
    let metrics = metrics::install().map_err(context("installing the metrics recorder"))?;
    let db = db::connect(&config.database_url)
        .await
        .map_err(context("connecting to the database"))?;
    db::create_tables(&db)
        .await
        .map_err(context("creating the tables"))?;
    let cache = cache::build(&config)
        .await
        .map_err(context("building the cache"))?;

    let users = EntityCache::new(cache.clone(), "user", "users")
        .ttl(config.cache_ttl)
        .tenant_column(entities::user::Column::TenantId);
    let products = EntityCache::new(cache.clone(), "product", "products")
        .ttl(config.cache_ttl)
        .tenant_column(entities::product::Column::TenantId);
    users.connect(&entities::SIGNALS);
    products.connect(&entities::SIGNALS);

    match db::warm_users(&db, &users).await {
        Ok(n) => tracing::info!("cache warmed with {n} users"),
        Err(e) => tracing::warn!(error = %e, "cache warm-up failed"),
    }

    let state = AppState {
        db: db.clone(),
        cache: cache.clone(),
        users,
        products,
        cache_ttl: config.cache_ttl,
    };
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(context("binding the listener"))?;
    let address = listener
        .local_addr()
        .map_err(context("reading the listener's address"))?;
    tracing::info!("listening on http://{address}");
    let (stopping, stop_requested) = tokio::sync::oneshot::channel::<()>();
    let app = routes::router(state).merge(metrics::route(metrics));
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping.send(());
        })
        .into_future();
    // After the signal, in-flight requests get SHUTDOWN_GRACE to finish: a client
    // that never finishes its request must not keep the process alive.
    let grace = async {
        if stop_requested.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve => {
            served.map_err(context("serving"))?;
            tracing::info!("in-flight requests finished; closing the cache and the database");
        }
        () = grace => tracing::warn!(
            "requests still in flight {SHUTDOWN_GRACE:?} after the signal; closing the cache and the database anyway"
        ),
    }

    if let Err(e) = cache.close().await {
        tracing::warn!(error = %e, "closing the cache");
    }
    db.close().await.map_err(context("closing the database"))?;
    tracing::info!("stopped");
    Ok(())
}

/// How long in-flight requests may run after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
