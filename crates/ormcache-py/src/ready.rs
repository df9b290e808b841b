//! An awaitable that is already complete: an L1 hit answered inside `await`,
//! without a trip through the tokio runtime or the event loop.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// `await Ready(v)` is `v` at once.
#[pyclass(module = "ormcache._ormcache")]
#[derive(Debug)]
pub(crate) struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub(crate) fn new(value: Py<PyAny>) -> Self {
        Self { value: Some(value) }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let v = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((v,)))
    }

    fn send(&mut self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<()> {
        self.__next__(py)
    }

    fn close(&mut self) {
        self.value = None;
    }
}
