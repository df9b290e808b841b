//! `products`: `id`, `name`, `price`, `description`, `in_stock`, `tenant_id`
//! (nullable), `created_at`.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row of `products`, as returned by `GET /products/{id}` and cached at
/// `product:{id}`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "products")]
pub(crate) struct Model {
    /// Assigned by the database.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Product name, 1 to 200 characters.
    pub name: String,
    /// Price, finite and not negative.
    pub price: f64,
    /// Free text, at most 2,000 characters.
    pub description: Option<String>,
    /// Whether it can be ordered (default `true`).
    pub in_stock: bool,
    /// The tenant that owns the row (`X-Tenant-ID` at creation), if any.
    pub tenant_id: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

/// Every insert, update and delete sends the lifecycle signals through
/// [`SIGNALS`](crate::entities::SIGNALS).
impl ActiveModelBehavior for ActiveModel {
    ormcache::sea_orm::signal_hooks!(&crate::entities::SIGNALS);
}
