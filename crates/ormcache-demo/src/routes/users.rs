//! `/users`: `{"name", "email"}`.

use sea_orm::ActiveValue::{NotSet, Set};
use serde::Deserialize;

use super::{AppState, Resource, text};
use crate::entities::user;
use crate::error::ApiError;
use ormcache::sea_orm::EntityCache;

/// The users routes.
#[derive(Debug)]
pub(crate) struct Users;

/// `POST /users`.
#[derive(Debug, Deserialize)]
pub(crate) struct NewUser {
    name: String,
    email: String,
}

/// `PATCH /users/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct UserPatch {
    name: Option<String>,
    email: Option<String>,
}

fn email(value: &str) -> Result<String, ApiError> {
    let value = text("email", value, 254)?;
    match value.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(value),
        _ => Err(ApiError::invalid("email must look like name@domain")),
    }
}

impl Resource for Users {
    type Entity = user::Entity;
    type Model = user::Model;
    type Active = user::ActiveModel;
    type Key = user::PrimaryKey;
    type Create = NewUser;
    type Patch = UserPatch;

    const NAME: &'static str = "User";

    fn cache(state: &AppState) -> &EntityCache<user::Entity, ormcache::AnyCache> {
        &state.users
    }

    fn tenant_column() -> user::Column {
        user::Column::TenantId
    }

    fn create(
        input: NewUser,
        tenant: Option<String>,
        created_at: i64,
    ) -> Result<user::ActiveModel, ApiError> {
        Ok(user::ActiveModel {
            id: NotSet,
            name: Set(text("name", &input.name, 200)?),
            email: Set(email(&input.email)?),
            tenant_id: Set(tenant),
            created_at: Set(created_at),
        })
    }

    fn patch(row: &mut user::ActiveModel, patch: UserPatch) -> Result<bool, ApiError> {
        let mut changed = false;
        if let Some(name) = patch.name {
            row.name = Set(text("name", &name, 200)?);
            changed = true;
        }
        if let Some(value) = patch.email {
            row.email = Set(email(&value)?);
            changed = true;
        }
        Ok(changed)
    }
}
