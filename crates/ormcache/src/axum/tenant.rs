//! [`TenantLayer`]: the current tenant from a request header.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::body::Body;
use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body::Body as HttpBody;
use tower_layer::Layer;
use tower_service::Service;

use super::error_response;
use super::layer::{ResponseFuture, take_ready};
use crate::tenant::{self, TenantId};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`tower_layer::Layer`] that runs each request inside
/// [`tenant::scope`](crate::tenant::scope) of the tenant named by a request header,
/// so that every cache call the request makes (including
/// [`ResponseCacheLayer`](super::ResponseCacheLayer)'s) uses that tenant's keys.
///
/// - header absent: the request runs unscoped;
/// - header present with a valid [`TenantId`]: scoped to it;
/// - invalid id (bad characters, too long, not UTF-8) or the header given more than
///   once: `400 Bad Request` with `{"error": "…"}`, and the handler does not run.
///
/// Add it with [`Router::layer`](::axum::Router::layer) so that it wraps the routes
/// (and their response caches).
///
/// ```
/// use axum::{Router, routing::get};
/// use ormcache::axum::TenantLayer;
///
/// let app: Router = Router::new()
///     .route("/whoami", get(|| async {
///         ormcache::tenant::current().map_or("no tenant".to_string(), |t| t.to_string())
///     }))
///     .layer(TenantLayer::header("x-tenant-id"));
/// # let _ = app;
/// ```
#[must_use]
#[derive(Clone)]
pub struct TenantLayer {
    header: Result<HeaderName, Arc<str>>,
}

impl fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantLayer")
            .field("header", &self.header)
            .finish()
    }
}

impl TenantLayer {
    /// Reads the tenant from the header `name` (case-insensitive).
    ///
    /// A name that is not a valid header name makes every request fail with `500`
    /// and `{"error": …}` naming the problem; use [`try_header`](Self::try_header) to
    /// check it up front.
    ///
    /// ```
    /// let layer = ormcache::axum::TenantLayer::header("x-tenant-id");
    /// # let _ = layer;
    /// ```
    pub fn header(name: &str) -> Self {
        Self {
            header: HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("tenant header name {name:?} is not a valid header name").into()
            }),
        }
    }

    /// [`header`](Self::header), refusing an invalid name.
    ///
    /// # Errors
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) when `name` is not a valid
    /// header name.
    ///
    /// ```
    /// assert!(ormcache::axum::TenantLayer::try_header("x-tenant-id").is_ok());
    /// assert!(ormcache::axum::TenantLayer::try_header("x tenant").is_err());
    /// ```
    pub fn try_header(name: &str) -> crate::Result<Self> {
        let layer = Self::header(name);
        match &layer.header {
            Ok(_) => Ok(layer),
            Err(msg) => Err(crate::Error::invalid("tenant header", msg.to_string())),
        }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            header: self.header.clone(),
        }
    }
}

/// The service of [`TenantLayer`].
#[derive(Clone)]
pub struct TenantService<S> {
    inner: S,
    header: Result<HeaderName, Arc<str>>,
}

impl<S> fmt::Debug for TenantService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantService")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// The tenant a request names: `Ok(None)` without the header.
fn tenant_of<B>(req: &Request<B>, header: &HeaderName) -> Result<Option<TenantId>, String> {
    let mut values = req.headers().get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("header {header} must be given once"));
    }
    let id = value
        .to_str()
        .map_err(|_| format!("header {header} is not a valid tenant id: not ASCII"))?;
    TenantId::new(id)
        .map(Some)
        .map_err(|e| format!("header {header} is not a valid tenant id: {e}"))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TenantService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let header = match &self.header {
            Ok(h) => h,
            Err(msg) => {
                let res = error_response(StatusCode::INTERNAL_SERVER_ERROR, msg);
                return Box::pin(async move { Ok(res) });
            }
        };
        match tenant_of(&req, header) {
            Err(msg) => {
                let res = error_response(StatusCode::BAD_REQUEST, &msg);
                Box::pin(async move { Ok(res) })
            }
            Ok(None) => {
                let fut = inner.call(req);
                Box::pin(async move { Ok(fut.await?.map(Body::new)) })
            }
            Ok(Some(id)) => {
                // `call` may start work synchronously: it runs in the scope too.
                let fut = tenant::sync_scope(id.clone(), || inner.call(req));
                Box::pin(tenant::scope(
                    id,
                    async move { Ok(fut.await?.map(Body::new)) },
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_from_headers() {
        let h = HeaderName::from_static("x-tenant-id");
        let req = |vals: &[&str]| {
            let mut b = Request::get("/");
            for v in vals {
                b = b.header("x-tenant-id", *v);
            }
            b.body(()).unwrap()
        };
        assert_eq!(tenant_of(&req(&[]), &h), Ok(None));
        assert_eq!(
            tenant_of(&req(&["acme"]), &h),
            Ok(Some(TenantId::new("acme").unwrap()))
        );
        assert!(
            tenant_of(&req(&["a:b"]), &h)
                .unwrap_err()
                .contains("x-tenant-id")
        );
        assert!(tenant_of(&req(&["a", "b"]), &h).is_err());
        assert!(TenantLayer::try_header("x tenant").is_err());
    }
}
