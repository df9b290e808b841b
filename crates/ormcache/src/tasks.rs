//! Background tasks owned by a cache: aborted when the cache closes or its last
//! handle drops.

use std::sync::Mutex;

use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub(crate) struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    pub(crate) fn extend(&self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        if let Ok(mut held) = self.0.lock() {
            held.extend(tasks);
        }
    }

    pub(crate) fn abort_all(&self) {
        if let Ok(mut held) = self.0.lock() {
            for t in held.drain(..) {
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
