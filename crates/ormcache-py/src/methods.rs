//! The Python methods every Redis-backed cache class shares, generated for each
//! class over its `ops()` (an [`Ops`](crate::distributed::Ops)).

/// `#[pymethods] impl $ty { $extra; the shared methods }`; `keep`: whether written
/// values keep their Python object (for L1 hits).
macro_rules! cache_methods {
    ($ty:ty, keep = $keep:expr, { $($extra:tt)* }) => {
        #[pyo3::pymethods]
        impl $ty {
            $($extra)*

            /// Stores `value` at `key` for `ttl` seconds (`None`: the default).
            #[pyo3(signature = (key, value, ttl=None))]
            fn set<'py>(
                &self,
                py: pyo3::Python<'py>,
                key: String,
                value: &pyo3::Bound<'py, pyo3::PyAny>,
                ttl: Option<f64>,
            ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.set(py, key, value, ttl, $keep)
            }

            /// Removes `key`; whether it existed (in Redis).
            fn delete<'py>(&self, py: pyo3::Python<'py>, key: String) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.delete(py, key)
            }

            /// Whether `key` exists.
            fn exists<'py>(&self, py: pyo3::Python<'py>, key: String) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.exists(py, key)
            }

            /// Remaining seconds; -1 without expiry; -2 missing.
            fn ttl<'py>(&self, py: pyo3::Python<'py>, key: String) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.ttl(py, key)
            }

            /// A new TTL (seconds) for an existing key; whether it existed.
            fn expire<'py>(&self, py: pyo3::Python<'py>, key: String, ttl: f64) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.expire(py, key, ttl)
            }

            /// Removes every entry under the prefix; the count.
            fn clear<'py>(&self, py: pyo3::Python<'py>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.clear(py)
            }

            /// Removes the entries matching a Redis glob; the count.
            fn clear_pattern<'py>(&self, py: pyo3::Python<'py>, pattern: String) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.clear_pattern(py, pattern)
            }

            /// The values at `keys`, in order (one round trip).
            fn get_many<'py>(&self, py: pyo3::Python<'py>, keys: Vec<String>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.get_many(py, keys)
            }

            /// Stores `(key, value)` pairs with one TTL (one round trip); the count.
            #[pyo3(signature = (entries, ttl=None))]
            fn _set_many<'py>(
                &self,
                py: pyo3::Python<'py>,
                entries: Vec<(String, pyo3::Bound<'py, pyo3::PyAny>)>,
                ttl: Option<f64>,
            ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.set_many(py, entries, ttl, $keep)
            }

            /// Removes `keys`; how many existed (one round trip).
            fn delete_many<'py>(&self, py: pyo3::Python<'py>, keys: Vec<String>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.delete_many(py, keys)
            }

            /// Stores `value` with tags.
            #[pyo3(signature = (key, value, tags, ttl=None))]
            fn set_with_tags<'py>(
                &self,
                py: pyo3::Python<'py>,
                key: String,
                value: &pyo3::Bound<'py, pyo3::PyAny>,
                tags: Vec<String>,
                ttl: Option<f64>,
            ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.set_with_tags(py, key, value, tags, ttl, $keep)
            }

            /// Drops every entry tagged `tag`.
            fn invalidate_tag<'py>(&self, py: pyo3::Python<'py>, tag: String) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.invalidate_tag(py, tag)
            }

            /// Whether Redis answers (never raises).
            fn ping<'py>(&self, py: pyo3::Python<'py>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.ping(py)
            }

            /// Flushes the stats, stops background tasks, releases the connections;
            /// never raises.
            fn close<'py>(&self, py: pyo3::Python<'py>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.close(py)
            }

            /// The Rust stats, as a dict.
            fn _stats<'py>(&self, py: pyo3::Python<'py>) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
                self.ops()?.stats(py)
            }
        }
    };
}
pub(crate) use cache_methods;
