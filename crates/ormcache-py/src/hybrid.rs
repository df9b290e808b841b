//! `ormcache._ormcache.HybridCache`: the Rust `HybridCache` (L1 + Redis, coherent
//! with every instance on the prefix, Python or Rust).

use std::time::Duration;

use ormcache::HybridCache;
use pyo3::prelude::*;

use crate::distributed::{Ops, PyDistributed, by_mode, run};
use crate::entry::{JsonEntry, Mode, MsgpackEntry, Out, PickleEntry, PyEntry};
use crate::local::PyLocal;
use crate::ready::Ready;
use crate::{current_tenant, in_tenant, seconds};

/// L1 + L2 (`ormcache.HybridCache` is its Python subclass).
#[pyclass(frozen, subclass, module = "ormcache._ormcache", name = "HybridCache")]
#[derive(Debug)]
pub(crate) struct PyHybrid {
    cache: HybridCache,
    mode: Mode,
}

impl PyHybrid {
    fn ops(&self) -> PyResult<Ops<HybridCache>> {
        Ok(Ops(self.cache.clone(), self.mode))
    }

    /// The L1 answer as a completed awaitable, if L1 holds `key` now.
    fn l1_hit<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let tenant = current_tenant(py)?;
        by_mode!(self.mode, E => {
            match in_tenant(tenant, || self.cache.get_l1::<E>(key)) {
                Some(v) => Ok(Some(Bound::new(py, Ready::new(v.object(py)?))?.into_any())),
                None => Ok(None),
            }
        })
    }
}

crate::methods::cache_methods!(PyHybrid, keep = true, {
    /// Combines an L1 and a connected L2. `degraded_max_age` (seconds) bounds the
    /// age of L1 answers while Redis is unreachable; `l1_max_ttl` caps L1 copies;
    /// `protocol` is the coherence protocol, `"fleet"` (the default) or
    /// `"broadcast"`: every instance on one prefix must use the same.
    #[new]
    #[pyo3(signature = (l1, l2, degraded_max_age=None, l1_max_ttl=None, protocol=None))]
    fn new(
        l1: PyRef<'_, PyLocal>,
        l2: PyRef<'_, PyDistributed>,
        degraded_max_age: Option<f64>,
        l1_max_ttl: Option<f64>,
        protocol: Option<&str>,
    ) -> PyResult<Self> {
        let (l2c, mode) = l2.cache()?;
        let mut b = HybridCache::builder(l1.cache.clone(), l2c.clone());
        match protocol {
            None | Some("fleet") => {}
            Some("broadcast") => b = b.protocol(ormcache::Protocol::Broadcast),
            Some(other) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "protocol must be \"fleet\" or \"broadcast\", not {other:?}"
                )));
            }
        }
        if let Some(a) = degraded_max_age {
            b = b.degraded_max_age(if a <= 0.0 {
                Duration::ZERO
            } else {
                seconds("degraded_max_age", a)?
            });
        }
        if let Some(t) = l1_max_ttl {
            b = b.l1_max_ttl(seconds("l1_max_ttl", t)?);
        }
        let _rt = pyo3_async_runtimes::tokio::get_runtime().enter();
        let cache = b.build().map_err(|e| crate::to_py_err(&e))?;
        Ok(Self { cache, mode })
    }

    /// The value at `key`: L1 (answered inside the `await`, no runtime hop), then
    /// Redis. Never raises on a Redis failure (falls back to young L1 entries).
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        if let Some(hit) = self.l1_hit(py, key)? {
            return Ok(hit);
        }
        self.ops()?.get(py, key.to_owned())
    }

    /// The L1 value at `key` now, counted as a hit, or `ormcache._MISS`: a plain
    /// call (no awaitable, no Redis), for the package's `async def get`, whose hit
    /// path is then one Python coroutine and this call.
    fn _get_l1<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let tenant = current_tenant(py)?;
        by_mode!(self.mode, E => {
            match in_tenant(tenant, || self.cache.get_l1::<E>(key)) {
                Some(v) => Ok(v.object(py)?.into_bound(py)),
                None => Ok(crate::hooks()?.miss.bind(py).clone()),
            }
        })
    }

    /// Read-through with single flight; an L1 hit completes inside the `await`.
    #[pyo3(signature = (key, loader, ttl=None, lock=false))]
    fn get_or_compute<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        loader: Py<PyAny>,
        ttl: Option<f64>,
        lock: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(hit) = self.l1_hit(py, key)? {
            return Ok(hit);
        }
        self.ops()?
            .get_or_compute(py, key.to_owned(), loader, ttl, lock)
    }

    /// Whether the invalidation stream is up (L1 trusted).
    #[getter]
    fn is_coherent(&self) -> bool {
        self.cache.is_coherent()
    }

    /// Waits until the invalidation stream is up, at most `timeout` seconds; whether it is.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_coherent<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.cache.clone();
        let t = seconds("timeout", timeout)?;
        run(py, async move { Ok(Out::of(c.wait_coherent(t).await)) })
    }

    /// The default TTL in seconds.
    #[getter]
    fn default_ttl(&self) -> f64 {
        self.cache.default_ttl().as_secs_f64()
    }
});
