//! Every error the service answers with: a status and a JSON body
//! `{"error": "<message>"}`. axum's own rejections (bad JSON, a non-numeric id, a
//! bad query string) are plain text; the extractors in [`crate::extract`] turn them
//! into this.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `400 Bad Request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `422 Unprocessable Entity`: well-formed JSON with a value out of range.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// `404 Not Found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `500`, logged with its cause; the body does not carry the cause.
    pub(crate) fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what} failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        match e {
            // The row went away between reading and writing it (a concurrent delete).
            sea_orm::DbErr::RecordNotUpdated | sea_orm::DbErr::RecordNotFound(_) => {
                Self::not_found("no such row (deleted meanwhile)")
            }
            e => Self::internal("database query", &e),
        }
    }
}

/// The fallback of unknown paths: `404` in JSON.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// The fallback of known paths with an unsupported method: `405` in JSON.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
