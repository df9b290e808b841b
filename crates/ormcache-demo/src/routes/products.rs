//! `/products`: `{"name", "price", "description", "in_stock"}`.

use sea_orm::ActiveValue::{NotSet, Set};
use serde::Deserialize;

use super::{AppState, Resource, text};
use crate::entities::product;
use crate::error::ApiError;
use ormcache::sea_orm::EntityCache;

/// The products routes.
#[derive(Debug)]
pub(crate) struct Products;

/// `POST /products`.
#[derive(Debug, Deserialize)]
pub(crate) struct NewProduct {
    name: String,
    price: f64,
    description: Option<String>,
    in_stock: Option<bool>,
}

/// `PATCH /products/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ProductPatch {
    name: Option<String>,
    price: Option<f64>,
    /// Absent: unchanged; `null`: cleared; text: set.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    in_stock: Option<bool>,
}

/// A field that is present, `null` or not: `Some(value)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn price(value: f64) -> Result<f64, ApiError> {
    if value.is_finite() && (0.0..=1e15).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid("price must be a number from 0 to 1e15"))
    }
}

fn description(value: String) -> Result<String, ApiError> {
    if value.chars().count() > 2000 {
        return Err(ApiError::invalid(
            "description must be at most 2000 characters",
        ));
    }
    Ok(value)
}

impl Resource for Products {
    type Entity = product::Entity;
    type Model = product::Model;
    type Active = product::ActiveModel;
    type Key = product::PrimaryKey;
    type Create = NewProduct;
    type Patch = ProductPatch;

    const NAME: &'static str = "Product";

    fn cache(state: &AppState) -> &EntityCache<product::Entity, ormcache::AnyCache> {
        &state.products
    }

    fn tenant_column() -> product::Column {
        product::Column::TenantId
    }

    fn create(
        input: NewProduct,
        tenant: Option<String>,
        created_at: i64,
    ) -> Result<product::ActiveModel, ApiError> {
        Ok(product::ActiveModel {
            id: NotSet,
            name: Set(text("name", &input.name, 200)?),
            price: Set(price(input.price)?),
            description: Set(input.description.map(description).transpose()?),
            in_stock: Set(input.in_stock.unwrap_or(true)),
            tenant_id: Set(tenant),
            created_at: Set(created_at),
        })
    }

    fn patch(row: &mut product::ActiveModel, patch: ProductPatch) -> Result<bool, ApiError> {
        let mut changed = false;
        if let Some(name) = patch.name {
            row.name = Set(text("name", &name, 200)?);
            changed = true;
        }
        if let Some(value) = patch.price {
            row.price = Set(price(value)?);
            changed = true;
        }
        if let Some(value) = patch.description {
            row.description = Set(value.map(description).transpose()?);
            changed = true;
        }
        if let Some(value) = patch.in_stock {
            row.in_stock = Set(value);
            changed = true;
        }
        Ok(changed)
    }
}
