//! Completing asyncio futures from the tokio runtime without taking the GIL there.
//!
//! pyo3-async-runtimes completes each future from a tokio thread: it takes the GIL
//! and calls `loop.call_soon_threadsafe`, so every reply waits for the event loop
//! thread to let the GIL go (up to the interpreter's switch interval when it is
//! busy) and writes to the loop's self-pipe. Here a finished call is queued in Rust
//! and one byte on a socket wakes the loop (only when the queue was empty); the loop
//! drains the queue in one callback, under the GIL it already holds, and converts
//! and sets every result. Tokio threads never touch the GIL.

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyAny;

use crate::entry::Out;
use crate::to_py_err;

/// A finished call: its future and its result (converted on the loop's thread).
type Done = (Py<PyAny>, ormcache::Result<Out>);

/// The queue of one event loop.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Vec<Done>>,
    notified: AtomicBool,
    wake: UnixStream,
}

impl Shared {
    fn push(&self, done: Done) {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        q.push(done);
        drop(q);
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A full socket buffer means a wake-up is already pending.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The completion queue of one event loop (stored on the loop object).
#[pyclass(module = "ormcache._ormcache")]
#[derive(Debug)]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    read: UnixStream,
}

#[pymethods]
impl Completer {
    /// The loop's reader callback: sets the result of every finished call.
    fn _drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.read).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        self.shared.notified.store(false, Ordering::Release);
        let done = {
            let mut q = match self.shared.queue.lock() {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *q)
        };
        for (fut, result) in done {
            // One failure (a future cancelled meanwhile, an exception from a
            // decoder) must not leave the others of the batch pending.
            let _ = settle(py, fut.bind(py), result);
        }
        Ok(())
    }
}

/// Sets the outcome of one call on its future, unless its caller cancelled it.
fn settle(py: Python<'_>, fut: &Bound<'_, PyAny>, result: ormcache::Result<Out>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let outcome = match result {
        Ok(out) => out.into_pyobject(py),
        Err(e) => Err(to_py_err(&e)),
    };
    match outcome {
        Ok(v) => fut.call_method1("set_result", (v,))?,
        Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
    };
    Ok(())
}

const ATTR: &str = "_ormcache_completer";

/// The completer of `event_loop`, created and registered on first use; `None` for
/// a loop that cannot carry it (no instance `__dict__`, e.g. uvloop's).
fn completer(event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Shared>>> {
    if let Ok(c) = event_loop.getattr(ATTR)
        && let Ok(c) = c.cast::<Completer>()
    {
        return Ok(Some(Arc::clone(&c.borrow().shared)));
    }
    if !event_loop.hasattr("__dict__")? {
        return Ok(None);
    }
    let (read, wake) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    wake.set_nonblocking(true)?;
    let fd = read.as_raw_fd();
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        notified: AtomicBool::new(false),
        wake,
    });
    let c = Bound::new(
        event_loop.py(),
        Completer {
            shared: Arc::clone(&shared),
            read,
        },
    )?;
    event_loop.call_method1("add_reader", (fd, c.getattr("_drain")?))?;
    event_loop.setattr(ATTR, c)?;
    Ok(Some(shared))
}

/// `fut` as an asyncio future of the running loop, run on the module's runtime and
/// completed through the loop's queue (through pyo3-async-runtimes on a loop that
/// cannot hold a queue).
pub(crate) fn spawn<'py, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ormcache::Result<Out>> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let Some(shared) = completer(&event_loop)? else {
        return pyo3_async_runtimes::tokio::future_into_py(py, async move {
            fut.await.map_err(|e| to_py_err(&e))
        });
    };
    let py_fut = event_loop.call_method0("create_future")?;
    let handle = py_fut.clone().unbind();
    pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let result = fut.await;
        shared.push((handle, result));
    });
    Ok(py_fut)
}
