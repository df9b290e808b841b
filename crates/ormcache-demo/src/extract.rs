//! `Json`, `Path` and `Query` extractors whose rejections are JSON [`ApiError`]s
//! with axum's status (400, 415, 422, 413) and message.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body of type `T`.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

/// Path parameters of type `T`.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

/// A query string of type `T`.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

fn rejected(status: axum::http::StatusCode, text: String) -> ApiError {
    ApiError::new(status, text)
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e @ JsonRejection::MissingJsonContentType(_)) => Err(rejected(
                e.status(),
                "expected a JSON body with `Content-Type: application/json`".to_owned(),
            )),
            Err(e) => Err(rejected(e.status(), e.body_text())),
        }
    }
}

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e: PathRejection| rejected(e.status(), e.body_text()))
    }
}

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| rejected(e.status(), e.body_text()))
    }
}
