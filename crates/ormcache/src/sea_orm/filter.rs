//! [`tenant_filter`]: the current tenant's rows only.

use ::sea_orm::sea_query::Value;
use ::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Select};

use crate::tenant::{self, TenantId};

/// Adds the current tenant's condition to `select`: `column = <tenant id>` inside
/// [`tenant::scope`], `column IS NULL` outside it (rows that belong to no tenant).
/// The column holds the tenant id as text.
///
/// ```
/// # mod product {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "products")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub tenant_id: Option<String> }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use ormcache::sea_orm::tenant_filter;
/// use ormcache::tenant::{self, TenantId};
/// use sea_orm::{DbBackend, EntityTrait, QueryTrait};
///
/// let sql = tenant::sync_scope(TenantId::new("acme").unwrap(), || {
///     tenant_filter(product::Entity::find(), product::Column::TenantId)
///         .build(DbBackend::Postgres)
///         .to_string()
/// });
/// assert!(sql.ends_with(r#"WHERE "products"."tenant_id" = 'acme'"#), "{sql}");
/// let sql = tenant_filter(product::Entity::find(), product::Column::TenantId)
///     .build(DbBackend::Postgres)
///     .to_string();
/// assert!(sql.ends_with(r#"WHERE "products"."tenant_id" IS NULL"#), "{sql}");
/// ```
pub fn tenant_filter<E: EntityTrait>(select: Select<E>, column: E::Column) -> Select<E> {
    match tenant::current() {
        Some(t) => select.filter(column.eq(t.as_str())),
        None => select.filter(column.is_null()),
    }
}

/// The tenant a row belongs to, from its tenant column.
pub(super) fn tenant_of(value: &Value) -> Option<TenantId> {
    match value {
        Value::String(Some(s)) => TenantId::new(s).ok(),
        _ => None,
    }
}
