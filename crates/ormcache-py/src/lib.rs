//! The Python module `ormcache._ormcache`: the Rust core of the Python package
//! `ormcache` (see `python/ormcache/__init__.py` for the public, seed-compatible API).
//!
//! Every async call runs on one tokio runtime owned by the module
//! (pyo3-async-runtimes); values are serialized on the caller's thread and cross
//! into Rust as bytes the Rust codec reads (plain JSON by default, DESIGN contract 2).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

mod complete;
mod distributed;
mod entry;
mod hybrid;
mod local;
mod methods;
mod ready;

/// Python callables and classes the Rust side uses, given once by the package.
#[derive(Debug)]
pub(crate) struct Hooks {
    pub(crate) json_dumps: Py<PyAny>,
    pub(crate) json_loads: Py<PyAny>,
    pub(crate) pickle_dumps: Py<PyAny>,
    pub(crate) pickle_loads: Py<PyAny>,
    pub(crate) msgpack_packb: Option<Py<PyAny>>,
    pub(crate) msgpack_unpackb: Option<Py<PyAny>>,
    pub(crate) tenant_var: Py<PyAny>,
    pub(crate) errors: Py<PyDict>,
    pub(crate) base_error: Py<PyAny>,
    /// The package's "not in L1" sentinel (`ormcache._MISS`).
    pub(crate) miss: Py<PyAny>,
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();
/// Set once `set_current_tenant` has been called: until then no call reads the
/// context variable.
static TENANTS_USED: AtomicBool = AtomicBool::new(false);

pub(crate) fn hooks() -> PyResult<&'static Hooks> {
    HOOKS.get().ok_or_else(|| {
        PyRuntimeError::new_err("ormcache._ormcache used before the package registered its hooks")
    })
}

/// A Python exception for an ormcache error: the class registered for its kind
/// (a subclass of `ormcache.CacheError`), with the kind and the message.
pub(crate) fn to_py_err(e: &ormcache::Error) -> PyErr {
    let kind = format!("{:?}", e.kind());
    let message = e.to_string();
    Python::attach(|py| {
        let Ok(h) = hooks() else {
            return PyRuntimeError::new_err(message.clone());
        };
        let errors = h.errors.bind(py);
        let cls = match errors.get_item(&kind) {
            Ok(Some(c)) => c,
            _ => h.base_error.bind(py).clone(),
        };
        match cls.call1((kind.as_str(), message.as_str())) {
            Ok(v) => PyErr::from_value(v),
            Err(err) => err,
        }
    })
}

/// Seconds (a Python number) as a `Duration`: positive and finite.
pub(crate) fn seconds(what: &str, secs: f64) -> PyResult<Duration> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds, not {secs}"
        )));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| PyValueError::new_err(format!("{what} is out of range: {secs}")))
}

/// An optional TTL in seconds.
pub(crate) fn ttl_opt(ttl: Option<f64>) -> PyResult<Option<Duration>> {
    ttl.map(|t| seconds("ttl", t)).transpose()
}

/// The tenant of the calling context (`ormcache.set_current_tenant`), if any.
pub(crate) fn current_tenant(py: Python<'_>) -> PyResult<Option<ormcache::tenant::TenantId>> {
    if !TENANTS_USED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let var = hooks()?.tenant_var.bind(py);
    let mut out: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `var` is the package's ContextVar (registered by `_register`), the GIL
    // is held, and `out` receives a new reference (or NULL when the variable has no
    // value and no default), owned below.
    let rc = unsafe { pyo3::ffi::PyContextVar_Get(var.as_ptr(), std::ptr::null_mut(), &mut out) };
    if rc < 0 {
        return Err(PyErr::fetch(py));
    }
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: `out` is a new, non-NULL reference.
    let v = unsafe { Bound::from_owned_ptr(py, out) };
    if v.is_none() {
        return Ok(None);
    }
    let s: String = v.str()?.extract()?;
    let id = ormcache::tenant::TenantId::new(&s).map_err(|e| to_py_err(&e))?;
    Ok(Some(id))
}

/// Runs `f` in the caller's tenant (for synchronous L1 calls).
pub(crate) fn in_tenant<R>(tenant: Option<ormcache::tenant::TenantId>, f: impl FnOnce() -> R) -> R {
    match tenant {
        Some(t) => ormcache::tenant::sync_scope(t, f),
        None => f(),
    }
}

/// `fut` in the caller's tenant.
pub(crate) async fn scoped<F: Future>(
    tenant: Option<ormcache::tenant::TenantId>,
    fut: F,
) -> F::Output {
    match tenant {
        Some(t) => ormcache::tenant::scope(t, fut).await,
        None => fut.await,
    }
}

/// Registers the package's hooks (called once by `ormcache/__init__.py`).
#[pyfunction]
fn _register(hooks: &Bound<'_, PyDict>) -> PyResult<()> {
    let get = |name: &str| -> PyResult<Py<PyAny>> {
        hooks
            .get_item(name)?
            .map(Bound::unbind)
            .ok_or_else(|| PyValueError::new_err(format!("missing hook {name}")))
    };
    let opt = |name: &str| -> PyResult<Option<Py<PyAny>>> {
        Ok(hooks
            .get_item(name)?
            .filter(|v| !v.is_none())
            .map(Bound::unbind))
    };
    let errors = get("errors")?;
    let errors = errors.bind(hooks.py()).cast::<PyDict>()?.clone().unbind();
    let h = Hooks {
        json_dumps: get("json_dumps")?,
        json_loads: get("json_loads")?,
        pickle_dumps: get("pickle_dumps")?,
        pickle_loads: get("pickle_loads")?,
        msgpack_packb: opt("msgpack_packb")?,
        msgpack_unpackb: opt("msgpack_unpackb")?,
        tenant_var: get("tenant_var")?,
        errors,
        base_error: get("base_error")?,
        miss: get("miss")?,
    };
    let _ = HOOKS.set(h);
    Ok(())
}

/// Called by `set_current_tenant`: from now on, calls read the tenant variable.
#[pyfunction]
fn _tenants_used() {
    TENANTS_USED.store(true, Ordering::Relaxed);
}

/// Escapes Redis glob characters so that `text` matches literally.
#[pyfunction]
fn escape_glob(text: &str) -> String {
    ormcache::escape_glob(text)
}

/// Checks a Redis URL with the Rust parser; the URL with its secrets hidden.
#[pyfunction]
fn redact_url(url: &str) -> PyResult<String> {
    ormcache::RedisUrl::parse(url)
        .map(|u| u.to_string())
        .map_err(|e| to_py_err(&e))
}

#[pymodule]
fn _ormcache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .enable_all()
        .thread_name("ormcache");
    pyo3_async_runtimes::tokio::init(builder);
    m.add_function(wrap_pyfunction!(_register, m)?)?;
    m.add_function(wrap_pyfunction!(_tenants_used, m)?)?;
    m.add_function(wrap_pyfunction!(escape_glob, m)?)?;
    m.add_function(wrap_pyfunction!(redact_url, m)?)?;
    m.add_class::<distributed::PyDistributed>()?;
    m.add_class::<hybrid::PyHybrid>()?;
    m.add_class::<local::PyLocal>()?;
    m.add_class::<ready::Ready>()?;
    m.add_class::<complete::Completer>()?;
    m.add(
        "__version__",
        PyString::new(m.py(), env!("CARGO_PKG_VERSION")),
    )?;
    Ok(())
}
