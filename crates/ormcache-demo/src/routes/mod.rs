//! The HTTP interface. Users and products share one set of generic handlers
//! ([`Resource`] says what differs between them); `ops` holds the health check.

mod ops;
mod products;
mod users;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ormcache::AnyCache;
use ormcache::axum::{ResponseCacheLayer, TenantLayer};
use ormcache::sea_orm::{DbError, EntityCache, Fetched, tenant_filter};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    Iterable, ModelTrait, PrimaryKeyToColumn, PrimaryKeyTrait, QueryOrder, QuerySelect, Select,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::entities::now_millis;
use crate::error::{self, ApiError};
use crate::extract::{Json, Path, Query};

pub(crate) use products::Products;
pub(crate) use users::Users;

/// What every handler reaches: the database, the cache and the entity caches.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) db: DatabaseConnection,
    pub(crate) cache: AnyCache,
    pub(crate) users: EntityCache<crate::entities::user::Entity, AnyCache>,
    pub(crate) products: EntityCache<crate::entities::product::Entity, AnyCache>,
    pub(crate) cache_ttl: std::time::Duration,
}

impl axum::extract::FromRef<AppState> for AnyCache {
    fn from_ref(state: &AppState) -> Self {
        state.cache.clone()
    }
}

/// The largest `limit` of a list.
pub(crate) const MAX_LIMIT: u64 = 1000;
/// The `limit` of a list when none is given.
pub(crate) const DEFAULT_LIMIT: u64 = 100;

/// What differs between the users and the products routes.
pub(crate) trait Resource: Send + Sync + 'static {
    /// The SeaORM entity.
    type Entity: EntityTrait<Model = Self::Model, ActiveModel = Self::Active, PrimaryKey = Self::Key>;
    /// Its row: the response body and the cached value.
    type Model: ModelTrait<Entity = Self::Entity>
        + IntoActiveModel<Self::Active>
        + ormcache::CacheValue
        + Clone
        + Serialize;
    /// Its active model, whose hooks send the signals.
    type Active: ActiveModelTrait<Entity = Self::Entity> + ActiveModelBehavior + Send + Sync;
    /// Its primary key (an `i64` id).
    type Key: PrimaryKeyTrait<ValueType = i64>
        + PrimaryKeyToColumn<Column = <Self::Entity as EntityTrait>::Column>;
    /// The `POST` body.
    type Create: DeserializeOwned + Send + 'static;
    /// The `PATCH` body: every field optional.
    type Patch: DeserializeOwned + Send + 'static;

    /// `"User"`, for messages.
    const NAME: &'static str;

    /// The entity's cache in the state.
    fn cache(state: &AppState) -> &EntityCache<Self::Entity, AnyCache>;
    /// The `tenant_id` column.
    fn tenant_column() -> <Self::Entity as EntityTrait>::Column;
    /// A validated new row.
    fn create(
        input: Self::Create,
        tenant: Option<String>,
        created_at: i64,
    ) -> Result<Self::Active, ApiError>;
    /// Applies a validated patch; whether anything changed.
    fn patch(row: &mut Self::Active, patch: Self::Patch) -> Result<bool, ApiError>;
}

/// The service's routes.
pub(crate) fn router(state: AppState) -> Router {
    // `GET /products` is cached as a whole HTTP response (with `X-Cache`, `ETag`,
    // `Age`), per query string and tenant, tagged with the products' list tag
    // (`products:list`): the entity cache's signal receivers drop every stored page
    // with one tag invalidation on each save and delete.
    let products_response_cache = ResponseCacheLayer::new(state.cache.clone())
        .ttl(state.cache_ttl)
        .tags([state.products.list_tag().to_owned()]);
    Router::new()
        .route("/health", get(ops::health))
        .route("/cache/stats", get(ormcache::axum::stats::<AnyCache>))
        // The live dashboard page, and the JSON it polls at /cache/dashboard/snapshot.
        .nest(
            "/cache/dashboard",
            ormcache::axum::dashboard(state.cache.clone()),
        )
        .route("/users", get(list::<Users>).post(create::<Users>))
        .route(
            "/users/{id}",
            get(read::<Users>)
                .patch(update::<Users>)
                .delete(remove::<Users>),
        )
        .route(
            "/products",
            get(list_uncached::<Products>)
                .layer(products_response_cache)
                .post(create::<Products>),
        )
        .route(
            "/products/{id}",
            get(read::<Products>)
                .patch(update::<Products>)
                .delete(remove::<Products>),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(TenantLayer::header(HeaderName::from_static("x-tenant-id")))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// The `tracing` target of the access log: one `DEBUG` line per request, off by
/// default; `RUST_LOG=info,ormcache_demo::access=debug` turns it on.
pub(crate) const ACCESS_LOG: &str = "ormcache_demo::access";

/// Logs each request at `DEBUG` under [`ACCESS_LOG`]: method, path, status,
/// duration. When that level is off (the default) a request costs one check of a
/// cached flag: no path copied, no clock read, nothing written.
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !tracing::enabled!(target: ACCESS_LOG, tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        target: ACCESS_LOG,
        %method,
        path,
        status = response.status().as_u16(),
        x_cache = response.headers().get("x-cache").and_then(|v| v.to_str().ok()),
        "{:.1?}",
        started.elapsed()
    );
    response
}

/// `?limit=&offset=` of a list.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Page {
    /// `(limit, offset)`, checked: `limit` 1 to 1,000 (default 100), `offset` 0 to
    /// `i64::MAX` (default 0).
    fn checked(&self) -> Result<(u64, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        if i64::try_from(offset).is_err() {
            return Err(ApiError::bad_request(format!(
                "offset must be at most {}, got {offset}",
                i64::MAX
            )));
        }
        Ok((limit, offset))
    }
}

/// `response` with `X-Cache: HIT` or `MISS`.
fn with_x_cache(mut response: Response, from_cache: bool) -> Response {
    let value = if from_cache { "HIT" } else { "MISS" };
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(value));
    response
}

/// A `200` JSON response of a cached read, with `X-Cache`.
fn fetched<T: Serialize>(fetched: &Fetched<T>) -> Response {
    with_x_cache(
        axum::Json(&fetched.value).into_response(),
        fetched.from_cache,
    )
}

fn not_found<R: Resource>(id: i64) -> ApiError {
    ApiError::not_found(format!("{} {id} not found", R::NAME))
}

fn read_failed(e: &DbError) -> ApiError {
    ApiError::internal("cached read", e)
}

/// `GET /{models}?limit=&offset=`.
async fn list<R: Resource>(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page.checked()?;
    let page = R::cache(&state)
        .list(&state.db, limit, offset)
        .await
        .map_err(|e| read_failed(&e))?;
    Ok(fetched(&page))
}

/// `GET /{models}?limit=&offset=` straight from the database, for a route whose
/// whole response is cached by a [`ResponseCacheLayer`].
async fn list_uncached<R: Resource>(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<axum::Json<Vec<R::Model>>, ApiError> {
    let (limit, offset) = page.checked()?;
    let mut select = tenant_filter(R::Entity::find(), R::tenant_column());
    for key in <R::Key as Iterable>::iter() {
        select = select.order_by_asc(key.into_column());
    }
    Ok(axum::Json(
        select.limit(limit).offset(offset).all(&state.db).await?,
    ))
}

/// `GET /{models}/{id}`: `200` or `404` ("not found" is cached too), with `X-Cache`.
async fn read<R: Resource>(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let row = R::cache(&state)
        .find_by_id(&state.db, id)
        .await
        .map_err(|e| read_failed(&e))?;
    Ok(match row.value {
        Some(_) => fetched(&row),
        None => with_x_cache(not_found::<R>(id).into_response(), row.from_cache),
    })
}

/// `POST /{models}` → `201` with the row.
async fn create<R: Resource>(
    State(state): State<AppState>,
    Json(input): Json<R::Create>,
) -> Result<(StatusCode, axum::Json<R::Model>), ApiError> {
    let tenant = ormcache::tenant::current().map(|t| t.as_str().to_owned());
    let row = R::create(input, tenant, now_millis())?;
    let model = row.insert(&state.db).await?;
    Ok((StatusCode::CREATED, axum::Json(model)))
}

/// The row `id` of the current tenant, read from the database (not the cache: it
/// is about to be written).
async fn load<R: Resource>(db: &DatabaseConnection, id: i64) -> Result<R::Model, ApiError> {
    let select: Select<R::Entity> = R::Entity::find_by_id(id);
    tenant_filter(select, R::tenant_column())
        .one(db)
        .await?
        .ok_or_else(|| not_found::<R>(id))
}

/// `PATCH /{models}/{id}` → `200` with the row.
async fn update<R: Resource>(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(patch): Json<R::Patch>,
) -> Result<axum::Json<R::Model>, ApiError> {
    let current = load::<R>(&state.db, id).await?;
    let mut row = current.clone().into_active_model();
    if !R::patch(&mut row, patch)? {
        return Ok(axum::Json(current));
    }
    let model = row.update(&state.db).await?;
    Ok(axum::Json(model))
}

/// `DELETE /{models}/{id}` → `200 {"message": "User deleted"}`.
async fn remove<R: Resource>(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let current = load::<R>(&state.db, id).await?;
    let result = current.into_active_model().delete(&state.db).await?;
    if result.rows_affected == 0 {
        return Err(not_found::<R>(id));
    }
    Ok(axum::Json(
        serde_json::json!({ "message": format!("{} deleted", R::NAME) }),
    ))
}

/// Checks a required text field: trimmed, 1 to `max` characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > max {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(trimmed.to_owned())
}
