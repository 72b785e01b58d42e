//! HEADs ahead of `readdirplus`: the stored attributes of a listed directory's files, fetched
//! as soon as a LIST page arrives, in listing order, many at once, so `ls -l` of a directory
//! the attribute cache does not know streams at the server's HEAD rate instead of waiting,
//! reply after reply, for the slowest HEAD of each small batch the kernel asks for.
//!
//! A [`HeadAhead`] belongs to one open directory handle: it is started with the keys of each
//! page and answers `take(key)` with the HEAD's result, waiting if it is still in flight;
//! a key it was never given is `None` (the caller asks itself). At most [`IN_FLIGHT`] HEADs
//! run at once per handle; closing the handle stops the rest. Results wait in memory only
//! until taken; the handle starts them at most 1,000 entries ahead of what the kernel took,
//! and drops them when the kernel goes on without attributes (plain `readdir`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};
use tokio::sync::{Notify, Semaphore};

use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// HEADs in flight at once for one directory handle.
pub const IN_FLIGHT: usize = 64;

type Answer = Result<ObjectMeta, StoreError>;

#[derive(Default)]
struct Shared {
    /// Keys started and not taken yet: `None` while the HEAD is in flight.
    answers: Mutex<HashMap<String, Option<Answer>>>,
    done: Notify,
}

/// The HEADs ahead of one directory handle.
pub struct HeadAhead {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The namespace's stamp when the first of these HEADs was started (see `namespace`,
    /// invariant 3): their answers are no newer than that.
    oldest: Mutex<Option<u64>>,
}

impl Default for HeadAhead {
    fn default() -> Self {
        HeadAhead {
            shared: Arc::default(),
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
            tasks: Mutex::default(),
            oldest: Mutex::default(),
        }
    }
}

impl HeadAhead {
    /// Starts HEADs of `keys`, in their order, asked at the namespace's `stamp`.
    pub fn start<S: ObjectStore + 'static>(&self, store: Arc<S>, keys: Vec<String>, stamp: u64) {
        if keys.is_empty() {
            return;
        }
        self.oldest
            .lock()
            .expect("head-ahead stamp")
            .get_or_insert(stamp);
        {
            let mut a = self.shared.answers.lock().expect("head-ahead");
            for k in &keys {
                a.insert(k.clone(), None);
            }
        }
        let (shared, permits) = (self.shared.clone(), self.permits.clone());
        let task = tokio::spawn(async move {
            stream::iter(keys)
                .map(|key| {
                    let (store, permits) = (store.clone(), permits.clone());
                    async move {
                        let _p = permits.acquire_owned().await;
                        let answer = store.head(&key).await;
                        (key, answer)
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|(key, answer)| {
                    let shared = shared.clone();
                    async move {
                        let mut a = shared.answers.lock().expect("head-ahead");
                        if let Some(slot) = a.get_mut(&key) {
                            *slot = Some(answer);
                        }
                        drop(a);
                        shared.done.notify_waiters();
                    }
                })
                .await;
        });
        let mut tasks = self.tasks.lock().expect("head-ahead tasks");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// The stamp of the first question these HEADs answer, if any was started.
    pub fn oldest_stamp(&self) -> Option<u64> {
        *self.oldest.lock().expect("head-ahead stamp")
    }

    /// The answer of the HEAD of `key`, once it is there; `None` when it was never started.
    pub async fn take(&self, key: &str) -> Option<Answer> {
        loop {
            let notified = self.shared.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut a = self.shared.answers.lock().expect("head-ahead");
                match a.get(key) {
                    None => return None,
                    Some(Some(_)) => return a.remove(key).flatten(),
                    Some(None) => {}
                }
            }
            notified.await;
        }
    }
}

impl Drop for HeadAhead {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().expect("head-ahead tasks").iter() {
            t.abort();
        }
    }
}
