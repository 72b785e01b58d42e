//! An in-memory object store with S3's listing semantics, request counters and fault injection.
//!
//! It exists so the core can be tested without a network: unit tests assert how many requests
//! an operation made ("a cached stat makes 0 requests"), and model tests inject failures at
//! chosen operations. It must not drift from S3, so the contract suite in
//! `tests/contract.rs` runs the same cases against it and against a real server. The
//! points that matter most, and are easy to get wrong:
//!
//! * keys sort byte-wise (`a-` < `a/` < `a0`), and a delimiter rolls every key that has it after
//!   the prefix into one common prefix, counted once toward `max_keys`;
//! * a continuation token that stopped on a common prefix resumes after every key under it;
//! * an ETag changes on every write, so a reader pinned to the old one is refused.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::{
    Expect, ListPage, ListRequest, ObjectMeta, ObjectStore, PendingUpload, PutResult, StoreError,
    StoreResult, UserMeta,
};

pub use super::Op;

#[derive(Clone, Debug)]
struct Object {
    data: Bytes,
    etag: String,
    last_modified: SystemTime,
    meta: UserMeta,
}

#[derive(Debug)]
struct Upload {
    key: String,
    meta: UserMeta,
    parts: BTreeMap<i32, (Bytes, String)>,
    initiated: SystemTime,
}

/// A rule that makes matching requests fail.
#[derive(Clone, Debug)]
struct Fault {
    op: Op,
    key_contains: Option<String>,
    /// Only this exact key (with `key_contains` unset).
    key_exact: Option<String>,
    remaining: u32,
    error: StoreError,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
    faults: Vec<Fault>,
    delays: HashMap<Op, std::time::Duration>,
    gates: Vec<(Op, Option<String>, When, Gate)>,
    /// Answer every listing as truncated, with this continuation token (a broken server).
    sticky_token: Option<String>,
    /// Ignore `If-Match` and `If-None-Match` on writes, as Garage 2.5.0 does.
    ignore_conditions: bool,
}

impl State {
    /// Checks a conditional write against the key's current version.
    fn check(&self, key: &str, expect: &Expect) -> StoreResult<()> {
        if self.ignore_conditions {
            return Ok(());
        }
        let current = self.objects.get(key).map(|o| o.etag.as_str());
        match (expect, current) {
            (Expect::Etag(_), None) => Err(StoreError::NotFound),
            _ if expect.holds(current) => Ok(()),
            _ => Err(StoreError::PreconditionFailed),
        }
    }
}

/// Where a [`Gate`] holds a request: before it takes effect, or after (the change is made,
/// the answer not given yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

/// Holds matching requests until opened, so a test can order concurrent operations
/// exactly (an upload landing while a rename is between its copies and its deletes).
#[derive(Clone)]
pub struct Gate {
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    held: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            open: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            held: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Lets every held and later request through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits until `n` requests reached the gate in all.
    pub async fn reached(&self, n: u64) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|h| *h >= n).await;
    }

    async fn pass(&self) {
        self.held.send_modify(|h| *h += 1);
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|o| *o).await;
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    counters: [AtomicU64; 12],
    next_id: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes writes ignore their conditions (a server without conditional writes).
    pub fn ignore_conditions(&self) {
        self.lock().ignore_conditions = true;
    }

    /// How many requests of `op` were made so far.
    pub fn count(&self, op: Op) -> u64 {
        self.counters[Self::index(op)].load(Ordering::SeqCst)
    }

    /// Requests of every kind made so far.
    pub fn total_requests(&self) -> u64 {
        Op::ALL.iter().map(|op| self.count(*op)).sum()
    }

    /// Makes the next `times` requests of `op` (on keys containing `key_contains`, if given)
    /// fail with `error`.
    pub fn fail(&self, op: Op, key_contains: Option<&str>, times: u32, error: StoreError) {
        self.lock().faults.push(Fault {
            op,
            key_contains: key_contains.map(str::to_string),
            key_exact: None,
            remaining: times,
            error,
        });
    }

    /// Makes the next `times` requests of `op` on exactly `key` fail with `error`.
    pub fn fail_key(&self, op: Op, key: &str, times: u32, error: StoreError) {
        self.lock().faults.push(Fault {
            op,
            key_contains: None,
            key_exact: Some(key.to_string()),
            remaining: times,
            error,
        });
    }

    /// Makes every request of `op` take `d` before it is answered (to widen races).
    pub fn delay(&self, op: Op, d: std::time::Duration) {
        self.lock().delays.insert(op, d);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The bytes stored under `key`, read without counting a request (for test assertions).
    pub fn peek(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).map(|o| o.data.clone())
    }

    /// The ETag of `key`, without counting a request.
    pub fn peek_etag(&self, key: &str) -> Option<String> {
        self.lock().objects.get(key).map(|o| o.etag.clone())
    }

    /// The user metadata stored under `key`, without counting a request.
    pub fn peek_meta(&self, key: &str) -> Option<UserMeta> {
        self.lock().objects.get(key).map(|o| o.meta.clone())
    }

    /// Every key, in order, without counting a request.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Open multipart uploads, without counting a request.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Writes an object directly, as another S3 client would, without counting a request.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        let etag = self.new_etag();
        self.lock().objects.insert(
            key.to_string(),
            Object {
                data: data.into(),
                etag,
                last_modified: SystemTime::now(),
                meta: UserMeta::new(),
            },
        );
    }

    /// Replaces the metadata of `key` keeping its ETag and moving its date a second on, as S3
    /// does when another client copies a single-part object onto itself (a `chmod`
    /// elsewhere), without counting a request.
    pub fn restamp(&self, key: &str, meta: UserMeta) {
        let mut state = self.lock();
        let o = state.objects.get_mut(key).expect("restamp: no such key");
        o.meta = meta;
        o.last_modified =
            o.last_modified.max(SystemTime::now()) + std::time::Duration::from_secs(1);
    }

    /// Makes every listing claim more pages behind the continuation token `token`, as a
    /// broken server might.
    pub fn sticky_token(&self, token: Option<&str>) {
        self.lock().sticky_token = token.map(str::to_string);
    }

    /// Holds requests of `op` (on keys containing `key_contains`) at `when` until the returned
    /// gate is opened.
    pub fn gate(&self, op: Op, key_contains: Option<&str>, when: When) -> Gate {
        let g = Gate::new();
        self.lock()
            .gates
            .push((op, key_contains.map(str::to_string), when, g.clone()));
        g
    }

    async fn hold(&self, op: Op, key: &str, when: When) {
        let gates: Vec<Gate> = self
            .lock()
            .gates
            .iter()
            .filter(|(o, k, w, _)| {
                *o == op && *w == when && k.as_deref().is_none_or(|k| key.contains(k))
            })
            .map(|(_, _, _, g)| g.clone())
            .collect();
        for g in gates {
            g.pass().await;
        }
    }

    /// Deletes an object directly, as another S3 client would, without counting a request.
    pub fn remove(&self, key: &str) {
        self.lock().objects.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a test assertion; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(op: Op) -> usize {
        op.index()
    }

    fn new_etag(&self) -> String {
        format!("\"m{:016x}\"", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    /// Counts the request and applies the first matching fault.
    async fn enter(&self, op: Op, key: &str) -> StoreResult<()> {
        self.counters[Self::index(op)].fetch_add(1, Ordering::SeqCst);
        let delay = self.lock().delays.get(&op).copied();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.hold(op, key, When::Before).await;
        let mut state = self.lock();
        let hit = state.faults.iter_mut().find(|f| {
            f.op == op
                && f.remaining > 0
                && f.key_contains.as_deref().is_none_or(|k| key.contains(k))
                && f.key_exact.as_deref().is_none_or(|k| key == k)
        });
        if let Some(fault) = hit {
            fault.remaining -= 1;
            let error = fault.error.clone();
            state.faults.retain(|f| f.remaining > 0);
            return Err(error);
        }
        Ok(())
    }

    fn list_locked(state: &State, req: &ListRequest) -> ListPage {
        let max = if req.max_keys == 0 {
            1000
        } else {
            req.max_keys.min(1000)
        } as usize;
        let mut page = ListPage::default();
        let after = match (&req.token, &req.start_after) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let mut count = 0usize;
        let mut last: Option<String> = None;
        for (key, obj) in state.objects.range(req.prefix.clone()..) {
            if !key.starts_with(&req.prefix) {
                break;
            }
            if let Some(a) = &after {
                if key.as_str() <= a.as_str() {
                    continue;
                }
                // A token that stopped on a common prefix skips everything under it.
                if req.delimiter.as_deref().is_some_and(|d| a.ends_with(d)) && key.starts_with(a) {
                    continue;
                }
            }
            let rest = &key[req.prefix.len()..];
            let rolled = req
                .delimiter
                .as_deref()
                .filter(|d| !d.is_empty())
                .and_then(|d| {
                    rest.find(d)
                        .map(|i| format!("{}{}", req.prefix, &rest[..i + d.len()]))
                });
            if let Some(p) = &rolled
                && page.prefixes.last() == Some(p)
            {
                continue;
            }
            if count == max {
                page.next_token = last;
                return page;
            }
            count += 1;
            match rolled {
                Some(p) => {
                    last = Some(p.clone());
                    page.prefixes.push(p);
                }
                None => {
                    last = Some(key.clone());
                    page.objects.push(ObjectMeta {
                        key: key.clone(),
                        size: obj.data.len() as u64,
                        etag: obj.etag.clone(),
                        last_modified: obj.last_modified,
                        user_meta: None,
                    });
                }
            }
        }
        page
    }
}

impl ObjectStore for MemoryStore {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.enter(Op::Head, key).await?;
        let state = self.lock();
        let obj = state.objects.get(key).ok_or(StoreError::NotFound)?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: obj.data.len() as u64,
            etag: obj.etag.clone(),
            last_modified: obj.last_modified,
            user_meta: Some(obj.meta.clone()),
        })
    }

    async fn list(&self, req: &ListRequest) -> StoreResult<ListPage> {
        self.enter(Op::List, &req.prefix).await?;
        let state = self.lock();
        let mut page = Self::list_locked(&state, req);
        if let Some(t) = &state.sticky_token {
            page.next_token = Some(t.clone());
        }
        Ok(page)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.enter(Op::Get, key).await?;
        let state = self.lock();
        let obj = state.objects.get(key).ok_or(StoreError::NotFound)?;
        if if_match.is_some_and(|e| e != obj.etag) {
            return Err(StoreError::PreconditionFailed);
        }
        let len = obj.data.len() as u64;
        if range.start >= len && !(range.start == 0 && len == 0) {
            // S3 answers 416 InvalidRange; the core never asks for this.
            return Err(StoreError::Other("InvalidRange".into()));
        }
        let end = range.end.min(len);
        Ok(obj.data.slice(range.start as usize..end as usize))
    }

    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        self.enter(Op::Put, key).await?;
        let etag = self.new_etag();
        {
            let mut state = self.lock();
            state.check(key, expect)?;
            state.objects.insert(
                key.to_string(),
                Object {
                    data: body,
                    etag: etag.clone(),
                    last_modified: SystemTime::now(),
                    meta: meta.clone(),
                },
            );
        }
        self.hold(Op::Put, key, When::After).await;
        Ok(PutResult { etag })
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        self.enter(Op::CreateMultipart, key).await?;
        let id = format!("u{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.lock().uploads.insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                meta: meta.clone(),
                parts: BTreeMap::new(),
                initiated: SystemTime::now(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        self.enter(Op::UploadPart, key).await?;
        let etag = self.new_etag();
        let mut state = self.lock();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or(StoreError::NoSuchUpload)?;
        upload.parts.insert(part, (body, etag.clone()));
        Ok(etag)
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        src_key: &str,
        range: Range<u64>,
        src_etag: &str,
    ) -> StoreResult<String> {
        self.enter(Op::UploadPartCopy, key).await?;
        let etag = self.new_etag();
        let mut state = self.lock();
        let src = state.objects.get(src_key).ok_or(StoreError::NotFound)?;
        if src.etag != src_etag {
            return Err(StoreError::PreconditionFailed);
        }
        if range.end > src.data.len() as u64 || range.start >= range.end {
            return Err(StoreError::Other("InvalidRange".into()));
        }
        let data = src.data.slice(range.start as usize..range.end as usize);
        let upload = state
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or(StoreError::NoSuchUpload)?;
        upload.parts.insert(part, (data, etag.clone()));
        Ok(etag)
    }

    async fn complete_multipart_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        self.enter(Op::CompleteMultipart, key).await?;
        let etag = self.new_etag();
        let mut state = self.lock();
        state.check(key, expect)?;
        let upload = state
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or(StoreError::NoSuchUpload)?;
        let mut data = BytesMut::new();
        let mut previous = 0;
        for (i, (number, part_etag)) in parts.iter().enumerate() {
            let (bytes, stored_etag) = upload
                .parts
                .get(number)
                .ok_or_else(|| StoreError::Other(format!("InvalidPart {number}")))?;
            if stored_etag != part_etag || *number <= previous {
                return Err(StoreError::Other(format!("InvalidPart {number}")));
            }
            if i + 1 < parts.len() && (bytes.len() as u64) < super::MIN_PART_SIZE {
                return Err(StoreError::Other("EntityTooSmall".into()));
            }
            previous = *number;
            data.extend_from_slice(bytes);
        }
        let meta = upload.meta.clone();
        state.uploads.remove(upload_id);
        state.objects.insert(
            key.to_string(),
            Object {
                data: data.freeze(),
                etag: etag.clone(),
                last_modified: SystemTime::now(),
                meta,
            },
        );
        Ok(PutResult { etag })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.enter(Op::AbortMultipart, key).await?;
        let mut state = self.lock();
        match state.uploads.get(upload_id) {
            Some(u) if u.key == key => {
                state.uploads.remove(upload_id);
                Ok(())
            }
            _ => Err(StoreError::NoSuchUpload),
        }
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        self.enter(Op::ListUploads, prefix).await?;
        let state = self.lock();
        let mut out: Vec<PendingUpload> = state
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key).then(a.upload_id.cmp(&b.upload_id)));
        Ok(out)
    }

    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        meta: Option<&UserMeta>,
        src_etag: Option<&str>,
    ) -> StoreResult<PutResult> {
        self.enter(Op::Copy, dst_key).await?;
        let etag = self.new_etag();
        {
            let mut state = self.lock();
            let src = state.objects.get(src_key).ok_or(StoreError::NotFound)?;
            if src_etag.is_some_and(|e| e != src.etag) {
                return Err(StoreError::PreconditionFailed);
            }
            let object = Object {
                data: src.data.clone(),
                etag: etag.clone(),
                last_modified: SystemTime::now(),
                meta: meta.cloned().unwrap_or_else(|| src.meta.clone()),
            };
            state.objects.insert(dst_key.to_string(), object);
        }
        self.hold(Op::Copy, dst_key, When::After).await;
        Ok(PutResult { etag })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.enter(Op::Delete, key).await?;
        self.lock().objects.remove(key);
        self.hold(Op::Delete, key, When::After).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(page: &ListPage) -> Vec<String> {
        let mut v: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        v.extend(page.prefixes.iter().cloned());
        v.sort();
        v
    }

    #[tokio::test]
    async fn delimiter_rolls_up_and_pages_resume_after_prefix() {
        let s = MemoryStore::new();
        for k in ["d/a", "d/a-", "d/a/1", "d/a/2", "d/b", "d/c/x"] {
            s.insert(k, "x");
        }
        let mut req = ListRequest::dir("d/");
        req.max_keys = 2;
        let p1 = s.list(&req).await.unwrap();
        assert_eq!(names(&p1), vec!["d/a", "d/a-"]);
        req.token = p1.next_token.clone();
        let p2 = s.list(&req).await.unwrap();
        assert_eq!(names(&p2), vec!["d/a/", "d/b"]);
        req.token = p2.next_token.clone();
        let p3 = s.list(&req).await.unwrap();
        assert_eq!(names(&p3), vec!["d/c/"]);
        assert_eq!(p3.next_token, None);
        assert_eq!(s.count(Op::List), 3);
    }

    #[tokio::test]
    async fn faults_fire_the_given_number_of_times() {
        let s = MemoryStore::new();
        s.fail(Op::Put, Some("x"), 1, StoreError::Timeout("t".into()));
        let m = UserMeta::new();
        assert!(s.put("y", Bytes::new(), &m).await.is_ok());
        assert!(s.put("x", Bytes::new(), &m).await.is_err());
        assert!(s.put("x", Bytes::new(), &m).await.is_ok());
    }

    #[tokio::test]
    async fn if_match_refuses_a_replaced_object() {
        let s = MemoryStore::new();
        s.insert("k", "one");
        let etag = s.head("k").await.unwrap().etag;
        s.insert("k", "two");
        let err = s.get_range("k", 0..3, Some(&etag)).await.unwrap_err();
        assert_eq!(err, StoreError::PreconditionFailed);
    }
}
