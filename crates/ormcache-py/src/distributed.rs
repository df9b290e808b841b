//! `ormcache._ormcache.DistributedCache`: the Redis cache, and the async operations
//! every cache kind shares (generic over [`ormcache::Cache`]).

use std::future::Future;
use std::sync::OnceLock;

use ormcache::{Cache, ComputeError, ComputeOptions, DistributedCache, Ttl};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyAny;

use crate::entry::{JsonEntry, Mode, MsgpackEntry, Out, PickleEntry, PyEntry};
use crate::{current_tenant, hooks, scoped, seconds, to_py_err, ttl_opt};

/// Runs `$body` with `$E` the entry type of `$mode`.
macro_rules! by_mode {
    ($mode:expr, $E:ident => $body:expr) => {
        match $mode {
            Mode::Json => {
                type $E = JsonEntry;
                $body
            }
            Mode::Pickle => {
                type $E = PickleEntry;
                $body
            }
            Mode::Msgpack => {
                type $E = MsgpackEntry;
                $body
            }
        }
    };
}
pub(crate) use by_mode;

/// `fut` as a Python awaitable, in the caller's tenant, on the module's runtime.
pub(crate) fn run<'py, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ormcache::Result<Out>> + Send + 'static,
{
    let tenant = current_tenant(py)?;
    crate::complete::spawn(py, scoped(tenant, fut))
}

/// The async operations of any cache, Python values in and out.
pub(crate) struct Ops<C>(pub(crate) C, pub(crate) Mode);

impl<C: Cache> Ops<C> {
    pub(crate) fn get<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        by_mode!(self.1, E => run(py, async move { Ok(Out::value(c.get::<E>(&key).await?)) }))
    }

    pub(crate) fn set<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: &Bound<'py, PyAny>,
        ttl: Option<f64>,
        keep: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        let ttl = ttl_opt(ttl)?;
        by_mode!(self.1, E => {
            let v = E::encode(py, value, keep)?;
            run(py, async move {
                c.set(&key, v, ttl).await?;
                Ok(Out::of(true))
            })
        })
    }

    pub(crate) fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move { Ok(Out::of(c.delete(&key).await?)) })
    }

    pub(crate) fn exists<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move { Ok(Out::of(c.exists(&key).await?)) })
    }

    pub(crate) fn ttl<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move {
            let secs: i64 = match c.ttl(&key).await? {
                Ttl::Missing => -2,
                Ttl::NoExpiry => -1,
                Ttl::Remaining(d) => {
                    i64::try_from(d.as_millis().saturating_add(500) / 1000).unwrap_or(i64::MAX)
                }
                _ => -2,
            };
            Ok(Out::of(secs))
        })
    }

    pub(crate) fn expire<'py>(
        &self,
        py: Python<'py>,
        key: String,
        ttl: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        let ttl = seconds("ttl", ttl)?;
        run(py, async move { Ok(Out::of(c.expire(&key, ttl).await?)) })
    }

    pub(crate) fn clear<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move { Ok(Out::of(c.clear().await?)) })
    }

    pub(crate) fn clear_pattern<'py>(
        &self,
        py: Python<'py>,
        pattern: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(
            py,
            async move { Ok(Out::of(c.clear_pattern(&pattern).await?)) },
        )
    }

    pub(crate) fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        by_mode!(self.1, E => run(py, async move { Ok(Out::values(c.get_many::<E, _>(&keys).await?)) }))
    }

    pub(crate) fn set_many<'py>(
        &self,
        py: Python<'py>,
        entries: Vec<(String, Bound<'py, PyAny>)>,
        ttl: Option<f64>,
        keep: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        let ttl = ttl_opt(ttl)?;
        by_mode!(self.1, E => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                out.push((k, E::encode(py, &v, keep)?));
            }
            let n = out.len();
            run(py, async move {
                c.set_many(out, ttl).await?;
                Ok(Out::of(n))
            })
        })
    }

    pub(crate) fn delete_many<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move { Ok(Out::of(c.delete_many(&keys).await?)) })
    }

    pub(crate) fn set_with_tags<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: &Bound<'py, PyAny>,
        tags: Vec<String>,
        ttl: Option<f64>,
        keep: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        let ttl = ttl_opt(ttl)?;
        by_mode!(self.1, E => {
            let v = E::encode(py, value, keep)?;
            run(py, async move {
                c.set_with_tags(&key, v, ttl, &tags).await?;
                Ok(Out::of(true))
            })
        })
    }

    pub(crate) fn invalidate_tag<'py>(
        &self,
        py: Python<'py>,
        tag: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move {
            c.invalidate_tag(&tag).await?;
            Ok(Out::of(()))
        })
    }

    pub(crate) fn ping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move { Ok(Out::of(c.ping().await.is_ok())) })
    }

    pub(crate) fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move {
            // As the original: closing never raises (stats that could not be
            // flushed to a dead Redis are dropped).
            let _ = c.close().await;
            Ok(Out::of(()))
        })
    }

    /// The stats as a dict (through JSON: the Rust shape, reshaped in Python).
    pub(crate) fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        run(py, async move {
            let s = c.get_stats().await?;
            let text = serde_json::to_string(&s).unwrap_or_else(|_| "{}".to_owned());
            Ok(Out::new(move |py| {
                Ok(hooks()?.json_loads.bind(py).call1((text,))?.unbind())
            }))
        })
    }

    /// Read-through: the value at `key`, or `await loader()`'s, stored; concurrent
    /// misses in this process (and with `lock`, in the cluster) load once. Redis
    /// failures fail open; the loader's exception reaches every waiter.
    pub(crate) fn get_or_compute<'py>(
        &self,
        py: Python<'py>,
        key: String,
        loader: Py<PyAny>,
        ttl: Option<f64>,
        lock: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        let options = ComputeOptions::new().ttl_opt(ttl_opt(ttl)?).lock(lock);
        let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
        let tenant = current_tenant(py)?;
        by_mode!(self.1, E => {
            pyo3_async_runtimes::tokio::future_into_py(py, scoped(tenant, async move {
                let r = c
                    .try_get_or_compute_with::<E, PyErr, _, _>(&key, options, move || async move {
                        let fut = Python::attach(|py| {
                            let awaitable = loader.bind(py).call0()?;
                            pyo3_async_runtimes::into_future_with_locals(&locals, awaitable)
                        })?;
                        let obj = fut.await?;
                        Python::attach(|py| E::encode(py, obj.bind(py), true))
                    })
                    .await;
                match r {
                    Ok(v) => Ok(Out::value(Some(v))),
                    Err(ComputeError::Load(e)) => Err(Python::attach(|py| e.clone_ref(py))),
                    Err(ComputeError::Cache(e)) => Err(to_py_err(&e)),
                    Err(_) => Err(PyRuntimeError::new_err("get_or_compute failed")),
                }
            }))
        })
    }
}

/// The Redis cache (`ormcache.DistributedCache` is its Python subclass).
#[pyclass(
    frozen,
    subclass,
    module = "ormcache._ormcache",
    name = "DistributedCache"
)]
#[derive(Debug, Default)]
pub(crate) struct PyDistributed {
    inner: OnceLock<(DistributedCache, Mode)>,
}

impl PyDistributed {
    pub(crate) fn cache(&self) -> PyResult<(&DistributedCache, Mode)> {
        self.inner
            .get()
            .map(|(c, m)| (c, *m))
            .ok_or_else(|| PyRuntimeError::new_err("DistributedCache is not connected: create it with `await DistributedCache.create(...)`"))
    }

    fn ops(&self) -> PyResult<Ops<DistributedCache>> {
        let (c, m) = self.cache()?;
        Ok(Ops(c.clone(), m))
    }
}

crate::methods::cache_methods!(PyDistributed, keep = false, {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Connects (the body of `DistributedCache.create`).
    #[pyo3(signature = (redis_url, default_ttl, key_prefix, serializer, max_connections=None, socket_timeout=None, socket_connect_timeout=None, socket_keepalive=None, health_check_interval=None, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None, coalesce_gets=false))]
    #[allow(clippy::too_many_arguments)]
    fn _connect<'py>(
        slf: Bound<'py, Self>,
        redis_url: String,
        default_ttl: f64,
        key_prefix: String,
        serializer: &str,
        max_connections: Option<usize>,
        socket_timeout: Option<f64>,
        socket_connect_timeout: Option<f64>,
        socket_keepalive: Option<bool>,
        health_check_interval: Option<f64>,
        ssl_ca_certs: Option<String>,
        ssl_certfile: Option<String>,
        ssl_keyfile: Option<String>,
        coalesce_gets: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mode = Mode::parse(serializer)?;
        let mut config = ormcache::DistributedConfig::new()
            .redis_url(&redis_url)
            .default_ttl(seconds("default_ttl", default_ttl)?)
            .key_prefix(key_prefix)
            .serializer(mode.codec())
            .coalesce_gets(coalesce_gets);
        if let Some(n) = max_connections {
            config = config.max_connections(n.max(1));
        }
        if let Some(t) = socket_timeout {
            config = config.socket_timeout(seconds("socket_timeout", t)?);
        }
        if let Some(t) = socket_connect_timeout {
            config = config.socket_connect_timeout(seconds("socket_connect_timeout", t)?);
        }
        if let Some(on) = socket_keepalive {
            config = config.socket_keepalive(on);
        }
        if let Some(t) = health_check_interval.filter(|t| *t > 0.0) {
            config = config.health_check_interval(seconds("health_check_interval", t)?);
        }
        config = config.tls(tls_config(ssl_ca_certs, ssl_certfile, ssl_keyfile)?);
        let me: Py<Self> = slf.unbind();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let cache = DistributedCache::create(config)
                .await
                .map_err(|e| to_py_err(&e))?;
            if me.get().inner.set((cache, mode)).is_err() {
                return Err(PyRuntimeError::new_err(
                    "DistributedCache is already connected",
                ));
            }
            Ok(())
        })
    }

    /// The value at `key`, or `None`.
    fn get<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        self.ops()?.get(py, key)
    }

    /// Read-through with single flight.
    #[pyo3(signature = (key, loader, ttl=None, lock=false))]
    fn get_or_compute<'py>(
        &self,
        py: Python<'py>,
        key: String,
        loader: Py<PyAny>,
        ttl: Option<f64>,
        lock: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.ops()?.get_or_compute(py, key, loader, ttl, lock)
    }

    /// The default TTL in seconds.
    #[getter]
    fn default_ttl(&self) -> PyResult<f64> {
        Ok(self.cache()?.0.default_ttl().as_secs_f64())
    }

    /// The key prefix.
    #[getter]
    fn key_prefix(&self) -> PyResult<String> {
        Ok(self.cache()?.0.prefix().to_owned())
    }

    /// The Redis key of `key` (`{prefix}:{key}`).
    fn redis_key(&self, key: &str) -> PyResult<String> {
        Ok(self.cache()?.0.redis_key(key))
    }

    /// The breaker's state, as text.
    #[getter]
    fn breaker_state(&self) -> PyResult<String> {
        Ok(format!("{:?}", self.cache()?.0.breaker_state()))
    }
});

/// The TLS files of a `rediss://` connection: redis-py's `ssl_ca_certs`,
/// `ssl_certfile` and `ssl_keyfile`; each one not given is read from
/// `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE` (as Rust
/// services read them).
fn tls_config(
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> PyResult<ormcache::TlsConfig> {
    let given = |var: &str| match var {
        "REDIS_TLS_CA_FILE" => ca.clone(),
        "REDIS_TLS_CERT_FILE" => cert.clone(),
        "REDIS_TLS_KEY_FILE" => key.clone(),
        _ => None,
    };
    ormcache::TlsConfig::from_lookup(|var| {
        given(var)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| std::env::var(var).ok())
    })
    .map_err(|e| to_py_err(&e))
}
