//! Revalidating expired entries by listing (a warm `stat` storm): when a lookup or `getattr`
//! finds a known file of a big directory past its TTL, the page of the directory holding it and
//! the next ones (`namespace::revalidation::PAGES`, listed at once, each starting after a known
//! name) confirm every entry they show unchanged, so the lookups that follow are answered from
//! memory instead of with a HEAD each. What the listing cannot confirm is asked with a HEAD as
//! before, so nothing is trusted longer than the TTL without S3 saying so.
//!
//! One revalidation runs per directory at a time: questions arriving meanwhile wait for it
//! and then find their entry fresh (or ask with a HEAD). [`Gates`] owns that bookkeeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};

use super::Fs;
use super::inode::Ino;
use super::namespace::revalidation::Revalidate;
use crate::store::{ListRequest, ObjectStore};

/// Pages listed at once by one revalidation.
const IN_FLIGHT: usize = 8;

/// One lock per directory being revalidated.
#[derive(Default)]
pub struct Gates {
    gates: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
}

impl Gates {
    fn gate(&self, dir: Ino) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.gates.lock().expect("gates");
        g.entry(dir).or_default().clone()
    }

    /// Drops the gate of `dir` when nobody else holds or waits on it.
    fn release(&self, dir: Ino, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut g = self.gates.lock().expect("gates");
        if Arc::strong_count(&gate) == 2 {
            g.remove(&dir);
        }
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Revalidates the expired file `name` of `dir`, and the known files after it, by listing.
    /// True when `name` may be fresh now (ask the namespace again); false when a HEAD is the
    /// way (a small directory, an entry the listing cannot confirm).
    pub(crate) async fn revalidate_by_listing(&self, dir: Ino, name: &str) -> bool {
        if self.config.case_insensitive || self.config.metadata_ttl.is_zero() {
            return false;
        }
        let gate = self.revalidations.gate(dir);
        let held = gate.lock().await;
        let answer = match self.ns.revalidation_plan(dir, name) {
            Revalidate::Fresh => true,
            Revalidate::No => false,
            Revalidate::List(asked, starts) => {
                let confirmed = stream::iter(starts)
                    .map(|start_after| {
                        let mut req = ListRequest::dir(&asked.dir_key);
                        req.start_after = start_after.clone();
                        async move { (start_after, self.store.list(&req).await) }
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .fold(0, |n, (start_after, page)| {
                        let asked = &asked;
                        async move {
                            match page {
                                Ok(p) => n + self.ns.revalidate(asked, start_after.as_deref(), &p),
                                Err(e) => {
                                    log::debug!("revalidating {:?}: {e}", asked.dir_key);
                                    n
                                }
                            }
                        }
                    })
                    .await;
                log::debug!(
                    "{:?}: {confirmed} entries confirmed by listing",
                    asked.dir_key
                );
                confirmed > 0
            }
        };
        drop(held);
        self.revalidations.release(dir, gate);
        answer
    }
}
