//! `ormcache._ormcache.QueryCache`: the in-process L1 with the seed's synchronous API.

use ormcache::{QueryCache, Ttl};
use pyo3::prelude::*;

use crate::entry::LocalObj;
use crate::{current_tenant, hooks, in_tenant, seconds, to_py_err, ttl_opt};

/// The in-process cache (`ormcache.QueryCache` is its Python subclass).
#[pyclass(frozen, subclass, module = "ormcache._ormcache", name = "QueryCache")]
#[derive(Debug)]
pub(crate) struct PyLocal {
    pub(crate) cache: QueryCache,
}

#[pymethods]
impl PyLocal {
    /// `max_size` entries at most, `default_ttl` seconds by default.
    #[new]
    #[pyo3(signature = (default_ttl=300.0, max_size=1000))]
    fn new(default_ttl: f64, max_size: u64) -> PyResult<Self> {
        let cache = QueryCache::new(max_size, seconds("default_ttl", default_ttl)?)
            .map_err(|e| to_py_err(&e))?;
        Ok(Self { cache })
    }

    /// The value at `key`, or `None`.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        let t = current_tenant(py)?;
        Ok(
            match in_tenant(t, || self.cache.get_sync::<LocalObj>(key)) {
                Some(v) => v.0.clone_ref(py),
                None => py.None(),
            },
        )
    }

    /// Stores `value` at `key` for `ttl` seconds (`None`: the default).
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(&self, py: Python<'_>, key: &str, value: Py<PyAny>, ttl: Option<f64>) -> PyResult<()> {
        let t = current_tenant(py)?;
        let ttl = ttl_opt(ttl)?;
        in_tenant(t, || self.cache.set_sync(key, LocalObj(value), ttl)).map_err(|e| to_py_err(&e))
    }

    /// Removes `key`; whether it was there.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let t = current_tenant(py)?;
        Ok(in_tenant(t, || self.cache.delete_sync(key)))
    }

    /// Whether `key` is live.
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let t = current_tenant(py)?;
        Ok(in_tenant(t, || self.cache.exists_sync(key)))
    }

    /// Remaining seconds; -2 missing.
    fn ttl(&self, py: Python<'_>, key: &str) -> PyResult<i64> {
        let t = current_tenant(py)?;
        Ok(match in_tenant(t, || self.cache.ttl_sync(key)) {
            Ttl::Remaining(d) => {
                i64::try_from(d.as_millis().saturating_add(500) / 1000).unwrap_or(i64::MAX)
            }
            Ttl::NoExpiry => -1,
            _ => -2,
        })
    }

    /// Removes every entry; the count.
    fn clear(&self) -> u64 {
        self.cache.clear_sync()
    }

    /// Removes the entries matching a Redis glob; the count.
    fn _clear_glob(&self, py: Python<'_>, pattern: &str) -> PyResult<u64> {
        let t = current_tenant(py)?;
        Ok(in_tenant(t, || self.cache.clear_pattern_sync(pattern)))
    }

    /// The Rust stats, as a dict.
    fn _stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = self.cache.get_stats_sync();
        let text = serde_json::to_string(&s).unwrap_or_else(|_| "{}".to_owned());
        Ok(hooks()?.json_loads.bind(py).call1((text,))?.unbind())
    }

    /// The default TTL in seconds.
    #[getter]
    fn default_ttl(&self) -> f64 {
        self.cache.default_ttl().as_secs_f64()
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.cache.get_stats_sync().size).unwrap_or(usize::MAX)
    }
}
