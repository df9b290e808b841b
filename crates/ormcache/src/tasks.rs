//! Background tasks owned by a cache: aborted when the cache closes or its last
//! handle drops. Also the clean-up work of cancelled calls (a lease to give back, a
//! message to publish), which must not outlive the cache either.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use crate::tenant::TenantId;

#[derive(Debug, Default)]
pub(crate) struct Tasks(Mutex<Held>);

#[derive(Debug, Default)]
struct Held {
    handles: Vec<JoinHandle<()>>,
    /// `abort_all` ran: the cache is shut down and starts nothing new.
    closed: bool,
}

impl Tasks {
    pub(crate) fn extend(&self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        if let Ok(mut held) = self.0.lock() {
            held.handles.extend(tasks);
        }
    }

    /// Runs `work` in a task of its own, in `tenant`'s scope (tokio task-locals do
    /// not follow a spawn), aborted with the others when the cache closes. Returns
    /// whether it started: not outside a tokio runtime, nor once the cache closed.
    /// Safe to call from `Drop`.
    pub(crate) fn spawn(
        &self,
        tenant: Option<TenantId>,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let Ok(mut held) = self.0.lock() else {
            return false;
        };
        if held.closed {
            return false;
        }
        // Finished clean-ups leave, so that the list stays as long as the work in
        // flight.
        held.handles.retain(|h| !h.is_finished());
        let handle = match tenant {
            Some(t) => rt.spawn(crate::tenant::scope(t, work)),
            None => rt.spawn(work),
        };
        held.handles.push(handle);
        true
    }

    pub(crate) fn abort_all(&self) {
        if let Ok(mut held) = self.0.lock() {
            held.closed = true;
            for t in held.handles.drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_starts_after_close_or_outside_a_runtime() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(tasks.spawn(None, async move {
            let _ = tx.send(crate::tenant::current());
        }));
        assert_eq!(rx.await.unwrap(), None);
        let acme = TenantId::new("acme").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(tasks.spawn(Some(acme.clone()), async move {
            let _ = tx.send(crate::tenant::current());
        }));
        assert_eq!(rx.await.unwrap(), Some(acme), "the tenant follows the task");
        tasks.abort_all();
        assert!(!tasks.spawn(None, async {}));
        let outside = std::thread::spawn(|| Tasks::default().spawn(None, async {}));
        assert!(!outside.join().unwrap());
    }
}
