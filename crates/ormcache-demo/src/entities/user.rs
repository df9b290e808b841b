//! `users`: `id`, `name`, `email`, `tenant_id` (nullable), `created_at`.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row of `users`, as returned by `GET /users/{id}` and cached at `user:{id}`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "users")]
pub(crate) struct Model {
    /// Assigned by the database.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Address with an `@`, at most 254 characters.
    pub email: String,
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
