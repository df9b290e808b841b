//! How Python values are stored: serialized on the caller's thread into bytes the
//! Rust codec passes through, with the Python object kept beside them so that an
//! L1 hit hands it back without decoding.

use std::fmt;
use std::sync::{Arc, OnceLock};

use pyo3::BoundObject;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::hooks;

/// The serializer of a cache, as the seed names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plain JSON (Python's `json` module), the Rust side's `Codec::Json`.
    Json,
    /// Python pickle bytes, stored as a MessagePack binary.
    Pickle,
    /// MessagePack (the `msgpack` package), the Rust side's `Codec::MessagePack`.
    Msgpack,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> PyResult<Self> {
        match s {
            "json" => Ok(Self::Json),
            "pickle" => Ok(Self::Pickle),
            "msgpack" => Ok(Self::Msgpack),
            other => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "serializer must be \"json\", \"pickle\" or \"msgpack\", not {other:?}"
            ))),
        }
    }

    pub(crate) fn codec(self) -> ormcache::Codec {
        match self {
            Self::Json => ormcache::Codec::Json,
            Self::Pickle | Self::Msgpack => ormcache::Codec::MessagePack,
        }
    }
}

/// A cached Python value of one serializer.
pub(crate) trait PyEntry: ormcache::CacheValue + Sized {
    /// Serializes `value` (on the caller's thread); `keep` keeps the object for L1 hits.
    fn encode(py: Python<'_>, value: &Bound<'_, PyAny>, keep: bool) -> PyResult<Self>;
    /// The Python object (decoded once, then shared).
    fn object(&self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

fn cached(
    py: Python<'_>,
    slot: &OnceLock<Py<PyAny>>,
    decode: impl FnOnce() -> PyResult<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    if let Some(o) = slot.get() {
        return Ok(o.clone_ref(py));
    }
    let o = decode()?;
    let _ = slot.set(o.clone_ref(py));
    Ok(o)
}

fn keep_slot(value: &Bound<'_, PyAny>, keep: bool) -> OnceLock<Py<PyAny>> {
    let slot = OnceLock::new();
    if keep {
        let _ = slot.set(value.clone().unbind());
    }
    slot
}

/// A JSON value: the text Python's `json.dumps` wrote, passed through serde_json
/// untouched (what the Rust side's `Codec::Json` and the original package store).
pub(crate) struct JsonEntry {
    raw: Box<RawValue>,
    obj: OnceLock<Py<PyAny>>,
}

impl fmt::Debug for JsonEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonEntry")
            .field("len", &self.raw.get().len())
            .finish()
    }
}

impl Serialize for JsonEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            raw: Box::<RawValue>::deserialize(d)?,
            obj: OnceLock::new(),
        })
    }
}

impl PyEntry for JsonEntry {
    fn encode(py: Python<'_>, value: &Bound<'_, PyAny>, keep: bool) -> PyResult<Self> {
        let text = hooks()?.json_dumps.bind(py).call1((value,))?;
        let text: String = text.extract()?;
        let raw = RawValue::from_string(text).map_err(|e| {
            PyTypeError::new_err(format!("json serializer wrote invalid JSON: {e}"))
        })?;
        Ok(Self {
            raw,
            obj: keep_slot(value, keep),
        })
    }

    fn object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        cached(py, &self.obj, || {
            Ok(hooks()?
                .json_loads
                .bind(py)
                .call1((self.raw.get(),))?
                .unbind())
        })
    }
}

/// A pickled value, stored as a MessagePack binary (only Python reads it).
pub(crate) struct PickleEntry {
    bytes: serde_bytes::ByteBuf,
    obj: OnceLock<Py<PyAny>>,
}

impl fmt::Debug for PickleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickleEntry")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Serialize for PickleEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.bytes.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PickleEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            bytes: serde_bytes::ByteBuf::deserialize(d)?,
            obj: OnceLock::new(),
        })
    }
}

impl PyEntry for PickleEntry {
    fn encode(py: Python<'_>, value: &Bound<'_, PyAny>, keep: bool) -> PyResult<Self> {
        let b = hooks()?.pickle_dumps.bind(py).call1((value,))?;
        let b = b.cast::<PyBytes>()?;
        Ok(Self {
            bytes: serde_bytes::ByteBuf::from(b.as_bytes().to_vec()),
            obj: keep_slot(value, keep),
        })
    }

    fn object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        cached(py, &self.obj, || {
            let b = PyBytes::new(py, &self.bytes);
            Ok(hooks()?.pickle_loads.bind(py).call1((b,))?.unbind())
        })
    }
}

/// A MessagePack value: the bytes the `msgpack` package wrote, transcoded into
/// whatever the Rust codec writes (MessagePack with named fields), so Rust
/// services read it as their own types.
pub(crate) struct MsgpackEntry {
    raw: Vec<u8>,
    obj: OnceLock<Py<PyAny>>,
}

impl fmt::Debug for MsgpackEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgpackEntry")
            .field("len", &self.raw.len())
            .finish()
    }
}

impl Serialize for MsgpackEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = rmp_serde::Deserializer::from_read_ref(&self.raw[..]);
        serde_transcode::transcode(&mut de, s).map_err(S::Error::custom)
    }
}

impl<'de> Deserialize<'de> for MsgpackEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut raw = Vec::with_capacity(128);
        let mut ser = rmp_serde::Serializer::new(&mut raw).with_struct_map();
        serde_transcode::transcode(d, &mut ser).map_err(D::Error::custom)?;
        Ok(Self {
            raw,
            obj: OnceLock::new(),
        })
    }
}

impl PyEntry for MsgpackEntry {
    fn encode(py: Python<'_>, value: &Bound<'_, PyAny>, keep: bool) -> PyResult<Self> {
        let pack = hooks()?.msgpack_packb.as_ref().ok_or_else(|| {
            PyTypeError::new_err(
                "serializer=\"msgpack\" needs the msgpack package (pip install msgpack)",
            )
        })?;
        let b = pack.bind(py).call1((value,))?;
        let b = b.cast::<PyBytes>()?;
        Ok(Self {
            raw: b.as_bytes().to_vec(),
            obj: keep_slot(value, keep),
        })
    }

    fn object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        cached(py, &self.obj, || {
            let unpack = hooks()?.msgpack_unpackb.as_ref().ok_or_else(|| {
                PyTypeError::new_err(
                    "serializer=\"msgpack\" needs the msgpack package (pip install msgpack)",
                )
            })?;
            let b = PyBytes::new(py, &self.raw);
            Ok(unpack.bind(py).call1((b,))?.unbind())
        })
    }
}

/// An object in a standalone `QueryCache` (never serialized: the L1 keeps it).
pub(crate) struct LocalObj(pub(crate) Py<PyAny>);

impl fmt::Debug for LocalObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalObj")
    }
}

impl Serialize for LocalObj {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("a QueryCache object is not serialized"))
    }
}

impl<'de> Deserialize<'de> for LocalObj {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom("a QueryCache object is not deserialized"))
    }
}

/// What an async call returns to Python, converted under the GIL that
/// pyo3-async-runtimes takes to complete the future anyway.
pub(crate) struct Out(Convert);

/// Builds the Python value under the GIL.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Out")
    }
}

impl Out {
    pub(crate) fn new(f: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// A value or `None`.
    pub(crate) fn value<E: PyEntry>(v: Option<Arc<E>>) -> Self {
        Self::new(move |py| match v {
            Some(e) => e.object(py),
            None => Ok(py.None()),
        })
    }

    /// A list of values or `None`s.
    pub(crate) fn values<E: PyEntry>(vs: Vec<Option<Arc<E>>>) -> Self {
        Self::new(move |py| {
            let mut out = Vec::with_capacity(vs.len());
            for v in vs {
                out.push(match v {
                    Some(e) => e.object(py)?,
                    None => py.None(),
                });
            }
            Ok(pyo3::types::PyList::new(py, out)?.into_any().unbind())
        })
    }

    /// Anything convertible.
    pub(crate) fn of<T>(v: T) -> Self
    where
        T: for<'py> IntoPyObject<'py> + Send + 'static,
    {
        Self::new(move |py| {
            v.into_pyobject(py)
                .map(|b| b.into_any().unbind())
                .map_err(Into::into)
        })
    }
}

impl<'py> IntoPyObject<'py> for Out {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        (self.0)(py).map(|o| o.into_bound(py))
    }
}
