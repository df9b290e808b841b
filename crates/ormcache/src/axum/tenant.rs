//! [`TenantLayer`]: the current tenant from a request header.

use std::fmt;
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
///     .layer(TenantLayer::try_header("x-tenant-id").unwrap());
/// # let _ = app;
/// ```
#[must_use]
#[derive(Clone)]
pub struct TenantLayer {
    header: HeaderName,
}

impl fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantLayer")
            .field("header", &self.header)
            .finish()
    }
}

impl TenantLayer {
    /// Reads the tenant from the header `name`. A [`HeaderName`] is valid by
    /// construction, so a misspelt name cannot turn into an error on every request;
    /// for a name from configuration use [`try_header`](Self::try_header).
    ///
    /// ```
    /// use axum::http::HeaderName;
    /// let layer = ormcache::axum::TenantLayer::header(HeaderName::from_static("x-tenant-id"));
    /// # let _ = layer;
    /// ```
    pub fn header(name: HeaderName) -> Self {
        Self { header: name }
    }

    /// Reads the tenant from the header `name` (case-insensitive), refusing a name
    /// that is not a valid header name.
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
        HeaderName::from_bytes(name.as_bytes())
            .map(Self::header)
            .map_err(|_| {
                crate::Error::invalid(
                    "tenant header",
                    format!("{name:?} is not a valid header name"),
                )
            })
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
    header: HeaderName,
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
        match tenant_of(&req, &self.header) {
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
        for bad in ["x tenant", "", "x:y", "é", "x\n"] {
            assert_eq!(
                TenantLayer::try_header(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        assert_eq!(
            TenantLayer::try_header("X-Tenant-Id").unwrap().header,
            HeaderName::from_static("x-tenant-id")
        );
    }
}
