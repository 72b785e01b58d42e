//! Model-based tests of the core: random sequences of filesystem operations and of
//! out-of-band S3 changes ("another client"), checked after every step against a small
//! reference model of what S3 must hold and what the mount must show.
//!
//! The model is a map of S3 keys to objects, plus at most one file held open across steps
//! (its unflushed content is visible in the mount but not in S3). The mount's view is derived
//! from the keys with the documented rules (a directory is any prefix; a directory shadows a
//! file of the same name). Errors are predicted too, errno for errno.
//!
//! It runs in two modes. Without TTLs, every answer comes from S3 and the mount must match the
//! model after every step. With the default TTLs (5 s for names and attributes, 1 s for
//! absent names) and a clock the test moves (`Tick`: the negative TTL runs out, `Expire`:
//! everything does), the mount must still show its own changes exactly at every step; after
//! another client's change it may lag until `Expire`, but a `Read` of a file another client
//! overwrote returns one whole version, and the new one once the negative TTL has run out.
//! Faults are injected too: the next DELETE or COPY of one key fails, and the model says what
//! S3 and the mount hold afterwards.
//!
//! Failures found by the search are kept below as named regression tests; tests/MODEL.md says
//! which bugs the search finds on which code.

use pailfs::fs::handles::NewFile;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pailfs::fs::attr::Kind;
use pailfs::fs::inode::ROOT;
use pailfs::fs::names::fold;
use pailfs::fs::setattr::SetAttr;
use pailfs::fs::{Fs, FsConfig};
use pailfs::store::StoreError;
use pailfs::store::memory::{MemoryStore, Op as StoreOp};
use proptest::prelude::*;

use crate::common;

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Debug)]
enum Op {
    /// open(O_CREAT|O_TRUNC|O_WRONLY), write, close.
    Write {
        path: String,
        data: Vec<u8>,
    },
    /// open(O_RDWR), pwrite at `off`, close.
    WriteAt {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    /// open(O_APPEND) and write at the end, close.
    Append {
        path: String,
        data: Vec<u8>,
    },
    /// truncate(2) by path.
    Truncate {
        path: String,
        len: u64,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Chmod {
        path: String,
        mode: u16,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Another client PUTs the key.
    OobPut {
        path: String,
        data: Vec<u8>,
    },
    /// Another client DELETEs the key.
    OobDelete {
        path: String,
    },
    /// Opens (creating if needed) the one held handle.
    Open {
        path: String,
    },
    HWrite {
        off: u64,
        data: Vec<u8>,
    },
    HFsync,
    HClose,
    /// open(O_RDONLY), read everything, close.
    Read {
        path: String,
    },
    /// A plain readdir of a directory (names only, no lookups), as `ls` without `-l` makes.
    List {
        path: String,
    },
    /// The clock moves past the negative TTL.
    Tick,
    /// The clock moves past every TTL.
    Expire,
    /// The next DELETE of the path's key (or of its directory marker) fails.
    FailDelete {
        path: String,
    },
    /// The next COPY onto the path's key (or onto its directory marker) fails.
    FailCopy {
        path: String,
    },
}

/// A fault armed for the next operation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    Delete(String),
    Copy(String),
}

/// What a `Read` must return.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadExpect {
    Exact(Vec<u8>),
    /// Another client overwrote it and the negative TTL has not run out: either version, whole.
    OneOf(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ObjKind {
    File,
    Symlink,
    Marker,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Obj {
    kind: ObjKind,
    data: Vec<u8>,
    mode: u16,
}

#[derive(Clone, Debug)]
struct Held {
    path: String,
    data: Vec<u8>,
    mode: u16,
    dirty: bool,
    /// A mode change not stored yet (its self-copy failed): stored at the next fsync or close.
    meta_pending: bool,
    /// Created by the open and never written: a close of another descriptor stores nothing.
    never_written: bool,
    unlinked: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    s3: BTreeMap<String, Obj>,
    held: Option<Held>,
    /// Case-insensitive mode: names resolve to the winner of their case-folded group.
    ci: bool,
    /// TTL mode (see the module documentation).
    ttl: bool,
    /// The fault armed for the next operation.
    fault: Option<Fault>,
    /// TTL mode: another client created, deleted or replaced something other than a file's
    /// content; until `Expire` the mount may show anything it learned before.
    unsettled: bool,
    /// TTL mode: files another client overwrote since the last `Expire`: their content
    /// before, and whether the negative TTL ran out since.
    overwritten: BTreeMap<String, (Vec<u8>, bool)>,
}

/// What the mount shows at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Dir(u16),
    File(u16, Vec<u8>),
    Symlink(String),
}

type R = Result<(), i32>;

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(a, _)| a)
}

impl Model {
    /// S3 overlaid with the held file's local content.
    fn view(&self) -> BTreeMap<String, Obj> {
        let mut v = self.s3.clone();
        if let Some(h) = &self.held
            && !h.unlinked
        {
            v.insert(
                h.path.clone(),
                Obj {
                    kind: ObjKind::File,
                    data: h.data.clone(),
                    mode: h.mode,
                },
            );
        }
        v
    }

    fn folded(&self, s: &str) -> String {
        if self.ci {
            fold(s, false)
        } else {
            s.to_string()
        }
    }

    /// The names in stored directory `dir` ("" is the root), each with "is a directory".
    fn children(&self, dir: &str) -> BTreeMap<String, bool> {
        let pre = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out: BTreeMap<String, bool> = BTreeMap::new();
        for k in self.view().keys() {
            let Some(rest) = k.strip_prefix(&pre) else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let (seg, deeper) = match rest.split_once('/') {
                Some((a, _)) => (a, true),
                None => (rest, false),
            };
            *out.entry(seg.to_string()).or_default() |= deeper;
        }
        // A file being written here wins over a directory another client made of its name
        // (the mount knows better than S3 until the file is closed).
        if let Some(h) = &self.held
            && !h.unlinked
            && parent_of(&h.path) == dir
        {
            let name = h.path.rsplit('/').next().unwrap_or(&h.path).to_string();
            out.insert(name, false);
        }
        out
    }

    /// The stored name `name` resolves to in stored directory `dir`: itself, or in
    /// case-insensitive mode the winner among the names that fold alike.
    fn stored_child(&self, dir: &str, name: &str) -> Option<(String, bool)> {
        let kids = self.children(dir);
        if !self.ci {
            return kids.get(name).map(|d| (name.to_string(), *d));
        }
        let f = fold(name, false);
        kids.into_iter()
            .filter(|(n, _)| fold(n, false) == f)
            .min_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
            })
    }

    /// `path` with every existing component replaced by its stored spelling.
    fn canon_path(&self, path: &str) -> String {
        let mut cur = String::new();
        for seg in path.split('/') {
            let name = match self.stored_child(&cur, seg) {
                Some((n, _)) => n,
                None => seg.to_string(),
            };
            cur = if cur.is_empty() {
                name
            } else {
                format!("{cur}/{name}")
            };
        }
        cur
    }

    fn kind(&self, path: &str) -> Option<Kind> {
        if path.is_empty() {
            return Some(Kind::Dir);
        }
        if self.is_held(path) {
            return Some(Kind::File);
        }
        let v = self.view();
        let pre = format!("{path}/");
        if v.range(pre.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&pre))
        {
            return Some(Kind::Dir);
        }
        v.get(path).map(|o| {
            if o.kind == ObjKind::Symlink {
                Kind::Symlink
            } else {
                Kind::File
            }
        })
    }

    /// The errno of resolving the parent directory of `path`, as a path walk would.
    fn parent_err(&self, path: &str) -> R {
        let parent = parent_of(path);
        if parent.is_empty() {
            return Ok(());
        }
        let mut cur = String::new();
        for seg in parent.split('/') {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(seg);
            match self.kind(&cur) {
                None => return Err(libc::ENOENT),
                Some(Kind::Dir) => {}
                Some(_) => {
                    // Looking up a name inside a file.
                    return Err(libc::ENOTDIR);
                }
            }
        }
        Ok(())
    }

    fn dir_empty(&self, path: &str) -> bool {
        let pre = format!("{path}/");
        self.view()
            .keys()
            .all(|k| !k.starts_with(&pre) || *k == pre)
    }

    fn mode_of(&self, path: &str) -> u16 {
        self.view().get(path).map_or(0o644, |o| o.mode)
    }

    fn is_held(&self, path: &str) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| !h.unlinked && h.path == path)
    }

    /// True when `path` is the held file, one of its ancestors or below it. Another client
    /// changing those while a file is held is not modelled: which of its view and S3's wins
    /// is unspecified until the file is closed.
    fn touches_held(&self, path: &str) -> bool {
        if self.ci {
            // Another spelling of any directory above the held file changes which one is
            // shown; keep another client out of the held file's whole top-level directory.
            let top = |p: &str| self.folded(p.split('/').next().unwrap_or(""));
            return self
                .held
                .as_ref()
                .is_some_and(|h| !h.unlinked && top(&h.path) == top(path));
        }
        let path = self.folded(path);
        self.held.as_ref().is_some_and(|h| {
            let hp = self.folded(&h.path);
            !h.unlinked
                && (hp == path
                    || hp.starts_with(&format!("{path}/"))
                    || path.starts_with(&format!("{hp}/")))
        })
    }

    /// Applies a change to a regular file's content: the held file if it is that one (then
    /// stored, as a close through another handle flushes the shared state), else S3.
    fn edit(&mut self, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if self.is_held(path) {
            let h = self.held.as_mut().unwrap();
            f(&mut h.data);
            h.dirty = false;
            let obj = Obj {
                kind: ObjKind::File,
                data: h.data.clone(),
                mode: h.mode,
            };
            self.s3.insert(path.to_string(), obj);
        } else {
            let mode = self.mode_of(path);
            let mut data = self
                .s3
                .get(path)
                .map(|o| o.data.clone())
                .unwrap_or_default();
            f(&mut data);
            self.s3.insert(
                path.to_string(),
                Obj {
                    kind: ObjKind::File,
                    data,
                    mode,
                },
            );
        }
    }

    fn file_target(&self, path: &str) -> R {
        self.parent_err(path)?;
        match self.kind(path) {
            None => Err(libc::ENOENT),
            Some(Kind::Dir) => Err(libc::EISDIR),
            Some(Kind::Symlink) => Err(libc::ELOOP),
            Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                unreachable!("the model makes no special files")
            }
            Some(Kind::File) => Ok(()),
        }
    }

    /// Ops that cannot apply now (no held file, or another client touching the held file).
    fn skip(&self, op: &Op) -> bool {
        let lagging = self.unsettled || !self.overwritten.is_empty();
        match op {
            Op::OobPut { path, .. } | Op::OobDelete { path } => self.touches_held(path),
            Op::FailDelete { .. } | Op::FailCopy { .. } => self.ci || lagging,
            Op::Tick | Op::Expire => false,
            // Until everything expired, only reads of what another client changed are
            // predictable (and only when nothing but file contents changed).
            Op::Read { .. } => self.unsettled,
            Op::List { .. } => self.ci || self.unsettled || !self.overwritten.is_empty(),
            _ if lagging => true,
            Op::Open { .. } => self.held.is_some(),
            Op::HWrite { .. } | Op::HFsync | Op::HClose => self.held.is_none(),
            _ => false,
        }
    }

    /// The names a listing of directory `path` must show.
    fn expect_list(&self, path: &str) -> Vec<String> {
        let pre = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.expected_tree()
            .keys()
            .filter_map(|k| k.strip_prefix(&pre))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// What a `Read` of `path` must return (when it succeeds).
    fn expect_read(&self, path: &str) -> ReadExpect {
        let now = self
            .view()
            .get(path)
            .map(|o| o.data.clone())
            .unwrap_or_default();
        match self.overwritten.get(path) {
            Some((before, false)) => ReadExpect::OneOf(before.clone(), now),
            _ => ReadExpect::Exact(now),
        }
    }

    /// Another client's change, in TTL mode: a plain overwrite of a file's content keeps reads
    /// predictable; anything else unsettles the mount's view until `Expire`.
    fn note_oob(&mut self, op: &Op) {
        if !self.ttl {
            return;
        }
        match op {
            Op::OobPut { path, .. }
                if self.kind(path) == Some(Kind::File) && self.s3.contains_key(path) =>
            {
                let before = self.s3[path.as_str()].data.clone();
                self.overwritten
                    .entry(path.clone())
                    .and_modify(|(_, ticked)| *ticked = false)
                    .or_insert((before, false));
            }
            _ => self.unsettled = true,
        }
    }

    /// Applies `op`; returns what the filesystem must answer, or `None` to skip the op.
    fn apply(&mut self, op: &Op) -> Option<R> {
        if self.skip(op) {
            return None;
        }
        let op = self.canonical(op);
        if matches!(op, Op::OobPut { .. } | Op::OobDelete { .. }) {
            self.note_oob(&op);
        }
        let r = match self.apply_fault(&op) {
            Some(r) => r,
            None => self.apply_inner(&op),
        };
        if !matches!(op, Op::FailDelete { .. } | Op::FailCopy { .. }) {
            self.fault = None;
        }
        Some(r)
    }

    /// True when the armed fault (on a path's key and its marker `path/`) is on `key`.
    fn faulty(&self, delete: bool, key: &str) -> bool {
        let on = |p: &String| p == key || format!("{p}/") == key;
        match &self.fault {
            Some(Fault::Delete(p)) if delete => on(p),
            Some(Fault::Copy(p)) if !delete => on(p),
            _ => false,
        }
    }

    /// Predicts an operation that meets the armed fault; `None` when it does not meet it.
    fn apply_fault(&mut self, op: &Op) -> Option<R> {
        self.fault.as_ref()?;
        match op {
            Op::Unlink { path } => {
                let stored = self.s3.contains_key(path);
                (self.parent_err(path).is_ok()
                    && matches!(self.kind(path), Some(Kind::File | Kind::Symlink))
                    && stored
                    && self.faulty(true, path))
                .then_some(Err(libc::EIO))
            }
            Op::Rmdir { path } => (self.parent_err(path).is_ok()
                && self.kind(path) == Some(Kind::Dir)
                && self.dir_empty(path)
                && self.faulty(true, &format!("{path}/")))
            .then_some(Err(libc::EIO)),
            Op::Rename { from, to } => self.rename_with_fault(from, to),
            Op::Chmod { path, mode } => self.chmod_with_fault(path, *mode),
            Op::HFsync | Op::HClose => self.close_with_fault(matches!(op, Op::HClose)),
            _ => None,
        }
    }

    /// A rename that meets the armed fault (see `apply_fault`).
    fn rename_with_fault(&mut self, from: &str, to: &str) -> Option<R> {
        let mut dry = self.clone();
        dry.fault = None;
        if dry.rename_exact(from, to).is_err() || from == to {
            return None;
        }
        match self.kind(from)? {
            Kind::Dir => {
                let pre = format!("{from}/");
                let keys: Vec<String> = self
                    .s3
                    .keys()
                    .filter(|k| k.starts_with(&pre))
                    .cloned()
                    .collect();
                let copy_fails = keys
                    .iter()
                    .any(|k| self.faulty(false, &format!("{to}/{}", &k[pre.len()..])));
                let delete_fails = keys.iter().find(|k| self.faulty(true, k)).cloned();
                if copy_fails {
                    // The held file below is stored first; the copies are removed again.
                    self.flush_held_below(from);
                    return Some(Err(libc::EIO));
                }
                let kept = delete_fails?;
                let obj = self.s3[kept.as_str()].clone();
                self.rename_exact(from, to).ok()?;
                self.s3.insert(kept, obj);
                Some(Err(libc::EIO))
            }
            _ if !self.s3.contains_key(from) => {
                // A file not uploaded yet: the object it replaces is deleted first.
                (self.faulty(true, to) && self.s3.contains_key(to)).then_some(Err(libc::EIO))
            }
            _ => {
                if self.faulty(false, to) {
                    self.flush_held_at(from);
                    return Some(Err(libc::EIO));
                }
                if !self.faulty(true, from) {
                    return None;
                }
                self.flush_held_at(from);
                let obj = self.s3[from].clone();
                self.rename_exact(from, to).ok()?;
                self.s3.insert(from.to_string(), obj);
                Some(Err(libc::EIO))
            }
        }
    }

    /// chmod of a file whose self-copy fails.
    fn chmod_with_fault(&mut self, path: &str, mode: u16) -> Option<R> {
        if self.parent_err(path).is_err()
            || self.kind(path) != Some(Kind::File)
            || !self.s3.contains_key(path)
            || !self.faulty(false, path)
        {
            return None;
        }
        if self.is_held(path) {
            let h = self.held.as_mut().unwrap();
            if h.dirty {
                return None; // rides along with the data: no copy now
            }
            h.mode = mode;
            h.meta_pending = true;
        }
        Some(Err(libc::EIO))
    }

    /// fsync or close of the held file when its pending mode change must be copied and fails.
    fn close_with_fault(&mut self, close: bool) -> Option<R> {
        let h = self.held.as_ref()?;
        if h.unlinked || h.dirty || !h.meta_pending || !self.faulty(false, &h.path) {
            return None;
        }
        if close {
            self.held = None;
        }
        Some(Err(libc::EIO))
    }

    /// The held file, if at `path` and stored before, is uploaded (a rename stores it first).
    fn flush_held_at(&mut self, path: &str) {
        if self.s3.contains_key(path)
            && let Some(h) = self.held.as_mut()
            && !h.unlinked
            && h.path == path
            && (h.dirty || h.meta_pending)
        {
            let obj = Obj {
                kind: ObjKind::File,
                data: h.data.clone(),
                mode: h.mode,
            };
            h.dirty = false;
            h.meta_pending = false;
            self.s3.insert(path.to_string(), obj);
        }
    }

    /// The held file, if below directory `dir` and stored before, is uploaded.
    fn flush_held_below(&mut self, dir: &str) {
        let held = self.held.as_ref().map(|h| h.path.clone());
        if let Some(p) = held
            && p.starts_with(&format!("{dir}/"))
        {
            self.flush_held_at(&p);
        }
    }

    /// The op with its paths in stored spelling (another client's ops use raw keys).
    fn canonical(&self, op: &Op) -> Op {
        let c = |p: &String| self.canon_path(p);
        match op.clone() {
            Op::Write { path, data } => Op::Write {
                path: c(&path),
                data,
            },
            Op::WriteAt { path, off, data } => Op::WriteAt {
                path: c(&path),
                off,
                data,
            },
            Op::Append { path, data } => Op::Append {
                path: c(&path),
                data,
            },
            Op::Truncate { path, len } => Op::Truncate {
                path: c(&path),
                len,
            },
            Op::Mkdir { path } => Op::Mkdir { path: c(&path) },
            Op::Rmdir { path } => Op::Rmdir { path: c(&path) },
            Op::Unlink { path } => Op::Unlink { path: c(&path) },
            Op::Chmod { path, mode } => Op::Chmod {
                path: c(&path),
                mode,
            },
            Op::Symlink { path, target } => Op::Symlink {
                path: c(&path),
                target,
            },
            Op::Open { path } => Op::Open { path: c(&path) },
            Op::Read { path } => Op::Read { path: c(&path) },
            Op::List { path } => Op::List { path: c(&path) },
            // The target keeps its spelling; `rename` resolves it.
            Op::Rename { from, to } => Op::Rename { from: c(&from), to },
            other => other,
        }
    }

    fn apply_inner(&mut self, op: &Op) -> R {
        match op {
            Op::Write { path, data } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    Some(Kind::Dir) => Err(libc::EISDIR),
                    Some(Kind::Symlink) => Err(libc::ELOOP),
                    Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                        unreachable!("the model makes no special files")
                    }
                    _ => {
                        self.edit(path, |d| *d = data.clone());
                        Ok(())
                    }
                }
            }
            Op::WriteAt { path, off, data } => self.file_target(path).map(|_| {
                self.edit(path, |d| write_at(d, *off, data));
            }),
            Op::Append { path, data } => self.file_target(path).map(|_| {
                self.edit(path, |d| d.extend_from_slice(data));
            }),
            Op::Truncate { path, len } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) => Err(libc::EISDIR),
                    Some(Kind::Symlink) => Err(libc::EINVAL),
                    Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                        unreachable!("the model makes no special files")
                    }
                    Some(Kind::File) if self.is_held(path) => {
                        // An open file's truncation is stored with its next upload.
                        let h = self.held.as_mut().unwrap();
                        h.data.resize(*len as usize, 0);
                        h.dirty = true;
                        h.never_written &= *len == 0;
                        Ok(())
                    }
                    Some(Kind::File) => {
                        self.edit(path, |d| d.resize(*len as usize, 0));
                        Ok(())
                    }
                }
            }
            Op::Mkdir { path } => {
                self.parent_err(path)?;
                if self.kind(path).is_some() {
                    Err(libc::EEXIST)
                } else {
                    self.s3.insert(
                        format!("{path}/"),
                        Obj {
                            kind: ObjKind::Marker,
                            data: vec![],
                            mode: 0o755,
                        },
                    );
                    Ok(())
                }
            }
            Op::Rmdir { path } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) if !self.dir_empty(path) => Err(libc::ENOTEMPTY),
                    Some(Kind::Dir) => {
                        self.s3.remove(&format!("{path}/"));
                        Ok(())
                    }
                    Some(_) => Err(libc::ENOTDIR),
                }
            }
            Op::Unlink { path } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) => Err(libc::EISDIR),
                    Some(_) => {
                        self.s3.remove(path);
                        if self.is_held(path) {
                            self.held.as_mut().unwrap().unlinked = true;
                        }
                        Ok(())
                    }
                }
            }
            Op::Rename { from, to } => self.rename(from, to),
            Op::Chmod { path, mode } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) => {
                        let key = format!("{path}/");
                        self.s3.insert(
                            key,
                            Obj {
                                kind: ObjKind::Marker,
                                data: vec![],
                                mode: *mode,
                            },
                        );
                        Ok(())
                    }
                    Some(Kind::Symlink) => Ok(()), // kernel refuses chmod on links; not generated
                    Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                        unreachable!("the model makes no special files")
                    }
                    Some(Kind::File) => {
                        if self.is_held(path) {
                            let h = self.held.as_mut().unwrap();
                            h.mode = *mode;
                            // With data not uploaded yet, the change rides along with it.
                            if h.dirty {
                                return Ok(());
                            }
                        }
                        let m = *mode;
                        self.edit(path, |_| {});
                        self.s3.get_mut(path).unwrap().mode = m;
                        Ok(())
                    }
                }
            }
            Op::Symlink { path, target } => {
                self.parent_err(path)?;
                if self.kind(path).is_some() {
                    Err(libc::EEXIST)
                } else {
                    let obj = Obj {
                        kind: ObjKind::Symlink,
                        data: target.clone().into_bytes(),
                        mode: 0o777,
                    };
                    self.s3.insert(path.clone(), obj);
                    Ok(())
                }
            }
            Op::OobPut { path, data } => {
                self.s3.insert(
                    path.clone(),
                    Obj {
                        kind: ObjKind::File,
                        data: data.clone(),
                        mode: 0o644,
                    },
                );
                Ok(())
            }
            Op::OobDelete { path } => {
                self.s3.remove(path);
                Ok(())
            }
            Op::Open { path } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    Some(Kind::Dir) => Err(libc::EISDIR),
                    Some(Kind::Symlink) => Err(libc::ELOOP),
                    Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                        unreachable!("the model makes no special files")
                    }
                    Some(Kind::File) => {
                        let o = self.s3[path.as_str()].clone();
                        self.held = Some(Held {
                            path: path.clone(),
                            data: o.data,
                            mode: o.mode,
                            dirty: false,
                            meta_pending: false,
                            never_written: false,
                            unlinked: false,
                        });
                        Ok(())
                    }
                    None => {
                        self.held = Some(Held {
                            path: path.clone(),
                            data: vec![],
                            mode: 0o644,
                            dirty: true,
                            meta_pending: false,
                            never_written: true,
                            unlinked: false,
                        });
                        Ok(())
                    }
                }
            }
            Op::HWrite { off, data } => {
                let h = self.held.as_mut().expect("not skipped");
                write_at(&mut h.data, *off, data);
                h.dirty = true;
                h.never_written = false;
                Ok(())
            }
            Op::Read { path } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) => Err(libc::EISDIR),
                    Some(Kind::Symlink) => Err(libc::ELOOP),
                    Some(Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice) => {
                        unreachable!("the model makes no special files")
                    }
                    Some(Kind::File) => {
                        // Its close flushes what the held file shares with it.
                        if let Some(h) = self.held.as_mut()
                            && !h.unlinked
                            && h.path == *path
                            && ((h.dirty && !h.never_written) || h.meta_pending)
                        {
                            let obj = Obj {
                                kind: ObjKind::File,
                                data: h.data.clone(),
                                mode: h.mode,
                            };
                            h.dirty = false;
                            h.meta_pending = false;
                            self.s3.insert(path.clone(), obj);
                        }
                        Ok(())
                    }
                }
            }
            Op::List { path } => {
                self.parent_err(path)?;
                match self.kind(path) {
                    None => Err(libc::ENOENT),
                    Some(Kind::Dir) => Ok(()),
                    Some(_) => Err(libc::ENOTDIR),
                }
            }
            Op::Tick => {
                for (_, ticked) in self.overwritten.values_mut() {
                    *ticked = true;
                }
                Ok(())
            }
            Op::Expire => {
                self.unsettled = false;
                self.overwritten.clear();
                Ok(())
            }
            Op::FailDelete { path } => {
                self.fault = Some(Fault::Delete(path.clone()));
                Ok(())
            }
            Op::FailCopy { path } => {
                self.fault = Some(Fault::Copy(path.clone()));
                Ok(())
            }
            Op::HFsync | Op::HClose => {
                let h = self.held.as_mut().expect("not skipped");
                let pending = std::mem::take(&mut h.meta_pending);
                if (h.dirty || pending) && !h.unlinked {
                    let obj = Obj {
                        kind: ObjKind::File,
                        data: h.data.clone(),
                        mode: h.mode,
                    };
                    self.s3.insert(h.path.clone(), obj);
                }
                h.dirty = false;
                if matches!(op, Op::HClose) {
                    self.held = None;
                }
                Ok(())
            }
        }
    }

    fn rename(&mut self, from: &str, to_raw: &str) -> R {
        // The target's parent in stored spelling, its name as given.
        let to_parent = self.canon_path(parent_of(to_raw));
        let to_name = to_raw.rsplit('/').next().unwrap_or(to_raw);
        let to_owned = if to_parent.is_empty() || !to_raw.contains('/') {
            to_name.to_string()
        } else {
            format!("{to_parent}/{to_name}")
        };
        let to = to_owned.as_str();
        if self.ci {
            self.parent_err(from)?;
            self.parent_err(to)?;
            if self.kind(from).is_none() {
                return Err(libc::ENOENT);
            }
            if let Some((stored, _)) = self.stored_child(&to_parent, to_name) {
                let stored_path = if to_parent.is_empty() {
                    stored.clone()
                } else {
                    format!("{to_parent}/{stored}")
                };
                if stored_path == from {
                    // Only the case changes (or nothing at all). Whatever hidden entry has
                    // the new spelling exactly is not a target.
                    if stored == to_name {
                        return Ok(());
                    }
                    return self.rename_checked(from, to, true);
                } else if stored != to_name {
                    // Another spelling of an existing entry: it is replaced (its own key, or
                    // its marker, goes away) and the result has the spelling given.
                    let mut dry = self.clone();
                    dry.rename_exact(from, &stored_path)?;
                    let held_local = self.held.as_ref().is_some_and(|h| {
                        !h.unlinked && h.path == from && !self.s3.contains_key(from)
                    });
                    let src_marker = self.s3.contains_key(&format!("{from}/"));
                    self.rename_exact(from, &stored_path)?;
                    if !src_marker {
                        // The replaced directory's own marker goes with it.
                        self.s3.remove(&format!("{stored_path}/"));
                    }
                    if held_local {
                        // A file not uploaded yet moves in memory; the replaced key goes.
                        self.s3.remove(&stored_path);
                        if let Some(h) = self.held.as_mut() {
                            h.path = to.to_string();
                        }
                    } else {
                        self.move_entry(&stored_path, to);
                    }
                    return Ok(());
                }
            }
        }
        self.rename_exact(from, to)
    }

    /// Moves the keys of entry `from` to `to` (after a rename that landed on another spelling).
    /// A directory's keys are those below it: an object with the directory's own name is
    /// another entry (hidden by the directory) and stays where it is.
    fn move_entry(&mut self, from: &str, to: &str) {
        if self.kind(from) != Some(Kind::Dir)
            && let Some(o) = self.s3.remove(from)
        {
            self.s3.insert(to.to_string(), o);
        }
        let pre = format!("{from}/");
        let moved: Vec<(String, Obj)> = self
            .s3
            .iter()
            .filter(|(k, _)| k.starts_with(&pre))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (k, o) in moved {
            self.s3.remove(&k);
            self.s3.insert(format!("{to}/{}", &k[pre.len()..]), o);
        }
        if let Some(h) = self.held.as_mut() {
            if h.path == from {
                h.path = to.to_string();
            } else if let Some(rest) = h.path.strip_prefix(&pre) {
                h.path = format!("{to}/{rest}");
            }
        }
    }

    fn rename_exact(&mut self, from: &str, to: &str) -> R {
        self.rename_checked(from, to, false)
    }

    fn rename_checked(&mut self, from: &str, to: &str, target_absent: bool) -> R {
        (|| {
            self.parent_err(from)?;
            self.parent_err(to)?;
            let src = self.kind(from).ok_or(libc::ENOENT)?;
            if from == to {
                return Ok(());
            }
            let dst = if target_absent { None } else { self.kind(to) };
            match (src, dst) {
                (Kind::Dir, Some(Kind::Dir)) if !self.dir_empty(to) => return Err(libc::ENOTEMPTY),
                (Kind::Dir, Some(Kind::File | Kind::Symlink)) => return Err(libc::ENOTDIR),
                (Kind::File | Kind::Symlink, Some(Kind::Dir)) => return Err(libc::EISDIR),
                _ => {}
            }
            if src == Kind::Dir {
                if to.starts_with(&format!("{from}/")) {
                    return Err(libc::EINVAL);
                }
                // The held file below is flushed first, then moves along.
                if let Some(h) = self.held.as_mut()
                    && !h.unlinked
                    && h.path.starts_with(&format!("{from}/"))
                {
                    // Flushed first if it was ever stored; a new file just moves in memory.
                    if h.dirty && self.s3.contains_key(&h.path) {
                        self.s3.insert(
                            h.path.clone(),
                            Obj {
                                kind: ObjKind::File,
                                data: h.data.clone(),
                                mode: h.mode,
                            },
                        );
                        h.dirty = false;
                    }
                    h.path = format!("{to}{}", &h.path[from.len()..]);
                }
                let pre = format!("{from}/");
                let moved: Vec<(String, Obj)> = self
                    .s3
                    .iter()
                    .filter(|(k, _)| k.starts_with(&pre))
                    .map(|(k, o)| (k.clone(), o.clone()))
                    .collect();
                for (k, o) in moved {
                    self.s3.remove(&k);
                    self.s3.insert(format!("{to}/{}", &k[pre.len()..]), o);
                }
            } else {
                // A held file at `to` is replaced: it lives on, unlinked.
                if let Some(h) = self.held.as_mut()
                    && !h.unlinked
                    && h.path == to
                {
                    h.unlinked = true;
                }
                if let Some(h) = self.held.as_mut()
                    && !h.unlinked
                    && h.path == from
                {
                    h.path = to.to_string();
                    if !self.s3.contains_key(from) {
                        // Never stored: renamed in memory only; what it replaces is deleted.
                        self.s3.remove(to);
                        return Ok(());
                    }
                    if h.dirty {
                        let obj = Obj {
                            kind: ObjKind::File,
                            data: h.data.clone(),
                            mode: h.mode,
                        };
                        self.s3.insert(from.to_string(), obj);
                        h.dirty = false;
                    }
                }
                if let Some(o) = self.s3.remove(from) {
                    self.s3.insert(to.to_string(), o);
                }
            }
            Ok(())
        })()
    }

    /// The tree the mount must show: every name, or in case-insensitive mode one winner per
    /// group of names that fold alike (the others hidden with what is under them).
    fn expected_tree(&self) -> BTreeMap<String, Seen> {
        let v = self.view();
        let mut out = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let kids = self.children(&dir);
            let mut shown: BTreeMap<String, (String, bool)> = BTreeMap::new();
            for (name, is_dir) in kids {
                let key = self.folded(&name);
                let better = match shown.get(&key) {
                    None => true,
                    Some((n, d)) => {
                        (is_dir, std::cmp::Reverse(name.as_bytes()))
                            > (*d, std::cmp::Reverse(n.as_bytes()))
                    }
                };
                if better {
                    shown.insert(key, (name, is_dir));
                }
            }
            for (name, is_dir) in shown.into_values() {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                if is_dir {
                    let mode = v.get(&format!("{path}/")).map_or(0o755, |m| m.mode);
                    out.insert(path.clone(), Seen::Dir(mode));
                    stack.push(path);
                } else if let Some(o) = v.get(&path) {
                    out.insert(
                        path,
                        match o.kind {
                            ObjKind::Symlink => {
                                Seen::Symlink(String::from_utf8_lossy(&o.data).into_owned())
                            }
                            _ => Seen::File(o.mode, o.data.clone()),
                        },
                    );
                }
            }
        }
        out
    }
}

fn write_at(d: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if d.len() < end {
        d.resize(end, 0);
    }
    d[off as usize..end].copy_from_slice(data);
}

/// The filesystem under test and its one held handle.
struct Sut {
    fs: Arc<Fs<MemoryStore>>,
    held: Option<u64>,
    /// What the last `Read` returned.
    last_read: Option<Vec<u8>>,
    /// What the last `List` returned.
    last_list: Option<Vec<String>>,
    _spool: tempfile::TempDir,
}

/// TTL mode's settings, and how far `Tick` and `Expire` move the clock.
const TTL: Duration = Duration::from_secs(5);
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(1100);
const EXPIRE: Duration = Duration::from_secs(6);

fn errno(e: pailfs::fs::error::FsError) -> i32 {
    e.errno()
}

impl Sut {
    fn new(ci: bool, ttl: bool) -> Sut {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = FsConfig::new("", pailfs::cache_dir::MountDir::at(spool.path()));
        cfg.case_insensitive = ci;
        (cfg.metadata_ttl, cfg.negative_ttl) = if ttl {
            (TTL, NEGATIVE_TTL)
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        cfg.part_size = 5 * MIB;
        Sut {
            fs: Fs::new(MemoryStore::new(), cfg).unwrap(),
            held: None,
            last_read: None,
            last_list: None,
            _spool: spool,
        }
    }

    /// Moves the mount's clock (TTLs run out).
    fn advance(&self, d: Duration) {
        self.fs.namespace().clock().advance(d);
    }

    /// Arms a fault on `key` and on the directory marker `key/`.
    fn arm(&self, op: StoreOp, key: &str) {
        let e = || StoreError::Other("injected".into());
        self.fs.store().fail_key(op, key, 1, e());
        self.fs.store().fail_key(op, &format!("{key}/"), 1, e());
    }

    async fn walk_to(&self, path: &str) -> Result<u64, i32> {
        let mut ino = ROOT;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            ino = self
                .fs
                .lookup(ino, OsStr::new(seg))
                .await
                .map_err(errno)?
                .ino;
        }
        Ok(ino)
    }

    /// Resolves the parent directory as the kernel's path walk does: it must be a directory.
    async fn parent_and_name<'a>(&self, path: &'a str) -> Result<(u64, &'a str), i32> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let ino = self.walk_to(parent).await?;
        if ino != ROOT && self.fs.getattr(ino).await.map_err(errno)?.stat.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok((ino, name))
    }

    async fn with_file(&self, path: &str, flags: i32, f: impl AsyncFnOnce(u64) -> R) -> R {
        let ino = self.walk_to(path).await?;
        let fh = self.fs.open(ino, flags).await.map_err(errno)?.fh;
        let r = f(fh).await;
        let flushed = self.fs.flush(fh).await.map_err(errno);
        let released = self.fs.release(fh).await.map_err(errno);
        r.and(flushed).and(released)
    }

    async fn run(&mut self, op: &Op) -> R {
        let fs = self.fs.clone();
        match op {
            Op::Write { path, data } => {
                let (p, n) = self.parent_and_name(path).await?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                let (_, fh) = fs
                    .create(p, OsStr::new(n), NewFile::plain(flags))
                    .await
                    .map_err(errno)?;
                let w = fs.write(fh, 0, data).await.map(|_| ()).map_err(errno);
                let f = fs.flush(fh).await.map_err(errno);
                let r = fs.release(fh).await.map_err(errno);
                w.and(f).and(r)
            }
            Op::WriteAt { path, off, data } => {
                self.with_file(path, libc::O_RDWR, async |fh| {
                    fs.write(fh, *off, data).await.map(|_| ()).map_err(errno)
                })
                .await
            }
            Op::Append { path, data } => {
                self.with_file(path, libc::O_WRONLY | libc::O_APPEND, async |fh| {
                    // The kernel turns O_APPEND into writes at the current size.
                    let ino = self.walk_to(path).await?;
                    let size = fs.getattr(ino).await.map_err(errno)?.stat.size;
                    fs.write(fh, size, data).await.map(|_| ()).map_err(errno)
                })
                .await
            }
            Op::Truncate { path, len } => {
                let ino = self.walk_to(path).await?;
                fs.setattr(
                    ino,
                    SetAttr {
                        size: Some(*len),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
                .map_err(errno)
            }
            Op::Mkdir { path } => {
                let (p, n) = self.parent_and_name(path).await?;
                fs.mkdir(p, OsStr::new(n), 0o755, 0, 0, 0)
                    .await
                    .map(|_| ())
                    .map_err(errno)
            }
            Op::Rmdir { path } => {
                let (p, n) = self.parent_and_name(path).await?;
                fs.rmdir(p, OsStr::new(n)).await.map_err(errno)
            }
            Op::Unlink { path } => {
                let (p, n) = self.parent_and_name(path).await?;
                fs.unlink(p, OsStr::new(n)).await.map_err(errno)
            }
            Op::Rename { from, to } => {
                let (p1, n1) = self.parent_and_name(from).await?;
                let (p2, n2) = self.parent_and_name(to).await?;
                fs.rename(p1, OsStr::new(n1), p2, OsStr::new(n2), 0)
                    .await
                    .map_err(errno)
            }
            Op::Chmod { path, mode } => {
                let ino = self.walk_to(path).await?;
                fs.setattr(
                    ino,
                    SetAttr {
                        mode: Some(*mode as u32),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
                .map_err(errno)
            }
            Op::Symlink { path, target } => {
                let (p, n) = self.parent_and_name(path).await?;
                fs.symlink(p, OsStr::new(n), std::path::Path::new(target), 0, 0)
                    .await
                    .map(|_| ())
                    .map_err(errno)
            }
            // Another client: straight into the store, past any fault armed for the mount.
            Op::OobPut { path, data } => {
                fs.store().insert(path, Bytes::from(data.clone()));
                Ok(())
            }
            Op::OobDelete { path } => {
                fs.store().remove(path);
                Ok(())
            }
            Op::Open { path } => {
                let (p, n) = self.parent_and_name(path).await?;
                let flags = libc::O_RDWR | libc::O_CREAT;
                let (_, fh) = fs
                    .create(p, OsStr::new(n), NewFile::plain(flags))
                    .await
                    .map_err(errno)?;
                self.held = Some(fh);
                Ok(())
            }
            Op::HWrite { off, data } => fs
                .write(self.held.unwrap(), *off, data)
                .await
                .map(|_| ())
                .map_err(errno),
            Op::HFsync => fs.fsync(self.held.unwrap()).await.map_err(errno),
            Op::HClose => {
                let fh = self.held.take().unwrap();
                let f = fs.flush(fh).await.map_err(errno);
                f.and(fs.release(fh).await.map_err(errno))
            }
            Op::Read { path } => {
                let mut data = Vec::new();
                let r = self
                    .with_file(path, libc::O_RDONLY, async |fh| {
                        loop {
                            let chunk = fs
                                .read(fh, data.len() as u64, 1 << 20)
                                .await
                                .map_err(errno)?;
                            if chunk.is_empty() {
                                return Ok(());
                            }
                            data.extend_from_slice(&chunk);
                        }
                    })
                    .await;
                self.last_read = Some(data);
                r
            }
            Op::List { path } => {
                let ino = self.walk_to(path).await?;
                let dh = fs.opendir(ino).map_err(errno)?;
                let mut names = Vec::new();
                let mut off = 0;
                loop {
                    let batch = fs.readdir(dh, off, 5, false).await.map_err(errno)?;
                    if batch.is_empty() {
                        break;
                    }
                    for e in batch {
                        off = e.offset;
                        if e.name != "." && e.name != ".." {
                            names.push(e.name);
                        }
                    }
                }
                fs.releasedir(dh);
                names.sort();
                self.last_list = Some(names);
                Ok(())
            }
            Op::Tick => {
                self.advance(TICK);
                Ok(())
            }
            Op::Expire => {
                self.advance(EXPIRE);
                Ok(())
            }
            Op::FailDelete { path } => {
                self.arm(StoreOp::Delete, path);
                Ok(())
            }
            Op::FailCopy { path } => {
                self.arm(StoreOp::Copy, path);
                Ok(())
            }
        }
    }

    /// Everything the mount shows, read through the core.
    async fn tree(&self) -> BTreeMap<String, Seen> {
        let mut out = BTreeMap::new();
        let mut stack = vec![(ROOT, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            let dh = self.fs.opendir(ino).unwrap();
            let mut names = Vec::new();
            let mut off = 0;
            loop {
                let batch = self.fs.readdir(dh, off, 7, false).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    off = e.offset;
                    if e.name != "." && e.name != ".." {
                        names.push(e.name);
                    }
                }
            }
            self.fs.releasedir(dh);
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                names.len(),
                "duplicate names in {prefix:?}: {names:?}"
            );
            for name in names {
                let a = self.fs.lookup(ino, OsStr::new(&name)).await.unwrap();
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                match a.stat.kind {
                    Kind::Dir => {
                        out.insert(path.clone(), Seen::Dir(a.stat.perm));
                        stack.push((a.ino, path));
                    }
                    Kind::Symlink => {
                        let t = self.fs.readlink(a.ino).await.unwrap();
                        out.insert(path, Seen::Symlink(String::from_utf8(t).unwrap()));
                    }
                    Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => {
                        panic!("{path}: the model makes no special files")
                    }
                    Kind::File => {
                        let fh = self.fs.open(a.ino, libc::O_RDONLY).await.unwrap().fh;
                        let mut data = Vec::new();
                        loop {
                            let chunk = self.fs.read(fh, data.len() as u64, 4 << 20).await.unwrap();
                            if chunk.is_empty() {
                                break;
                            }
                            data.extend_from_slice(&chunk);
                        }
                        self.fs.release(fh).await.unwrap();
                        assert_eq!(data.len() as u64, a.stat.size, "size of {path}");
                        out.insert(path, Seen::File(a.stat.perm, data));
                    }
                }
            }
        }
        out
    }

    /// S3's content, in model terms.
    fn s3(&self) -> BTreeMap<String, Obj> {
        let s = self.fs.store();
        s.keys()
            .into_iter()
            .map(|k| {
                let meta = s.peek_meta(&k).unwrap();
                let mode = meta.get("mode").and_then(|m| m.parse::<u32>().ok());
                let kind = if k.ends_with('/') {
                    ObjKind::Marker
                } else if mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK) {
                    ObjKind::Symlink
                } else {
                    ObjKind::File
                };
                let perm = mode.map_or(if k.ends_with('/') { 0o755 } else { 0o644 }, |m| {
                    (m & 0o7777) as u16
                });
                let data = s.peek(&k).unwrap().to_vec();
                (
                    k,
                    Obj {
                        kind,
                        data,
                        mode: perm,
                    },
                )
            })
            .collect()
    }
}

fn describe(t: &BTreeMap<String, Seen>) -> Vec<String> {
    t.iter()
        .map(|(k, v)| match v {
            Seen::Dir(m) => format!("{k}/ {m:o}"),
            Seen::File(m, d) => format!("{k} {m:o} {} bytes {}", d.len(), common::sha256(d)),
            Seen::Symlink(t) => format!("{k} -> {t}"),
        })
        .collect()
}

fn check(ops: &[Op]) {
    check_mode(ops, false, false);
}

fn check_ci(ops: &[Op]) {
    check_mode(ops, true, false);
}

fn check_ttl(ops: &[Op]) {
    check_mode(ops, false, true);
}

fn check_mode(ops: &[Op], ci: bool, ttl: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sut = Sut::new(ci, ttl);
        let mut model = Model {
            ci,
            ttl,
            ..Model::default()
        };
        for (step, op) in ops.iter().enumerate() {
            // Symlinks refuse chmod in the kernel; the model does not generate that.
            if let Op::Chmod { path, .. } = op
                && model.kind(&model.canon_path(path)) == Some(Kind::Symlink)
            {
                continue;
            }
            let expect_read = match op {
                Op::Read { path } => Some(model.expect_read(&model.canon_path(path))),
                _ => None,
            };
            let expect_list = match op {
                Op::List { path } => Some(model.expect_list(path)),
                _ => None,
            };
            let Some(want) = model.apply(op) else {
                continue;
            };
            let got = sut.run(op).await;
            if !matches!(op, Op::FailDelete { .. } | Op::FailCopy { .. }) {
                sut.fs.store().clear_faults();
            }
            assert_eq!(got, want, "step {step}: {op:?}");
            if let (Some(expect), Ok(())) = (expect_read, &got) {
                let read = sut.last_read.take().unwrap_or_default();
                let ok = match &expect {
                    ReadExpect::Exact(d) => read == *d,
                    ReadExpect::OneOf(a, b) => read == *a || read == *b,
                };
                assert!(ok, "step {step}: {op:?} read {read:?}, expected {expect:?}");
            }
            if let (Some(expect), Ok(())) = (expect_list, &got) {
                let listed = sut.last_list.take().unwrap_or_default();
                assert_eq!(listed, expect, "step {step}: {op:?}");
            }
            // The whole tree is compared after every change; not after a step that only reads
            // or moves the clock, so what the mount cached at that step (a listing, expired
            // entries) meets the next change as it is.
            let passive = matches!(
                op,
                Op::Tick | Op::Expire | Op::List { .. } | Op::Read { .. }
            );
            if !passive && !model.unsettled && model.overwritten.is_empty() {
                let (t_got, t_want) = (sut.tree().await, model.expected_tree());
                assert_eq!(
                    describe(&t_got),
                    describe(&t_want),
                    "tree after step {step}: {op:?}"
                );
            }
            let s3 = sut.s3();
            assert_eq!(
                s3.iter()
                    .map(|(k, o)| (k.clone(), o.kind.clone(), o.mode, common::sha256(&o.data)))
                    .collect::<Vec<_>>(),
                model
                    .s3
                    .iter()
                    .map(|(k, o)| (k.clone(), o.kind.clone(), o.mode, common::sha256(&o.data)))
                    .collect::<Vec<_>>(),
                "S3 after step {step}: {op:?}"
            );
        }
        if let Some(fh) = sut.held.take() {
            let _ = sut.fs.release(fh).await;
        }
        assert_eq!(
            sut.fs.store().open_uploads(),
            0,
            "multipart uploads left open"
        );
    });
}

// ----- the search -----

fn path_from(segs: Vec<&'static str>) -> impl Strategy<Value = String> {
    let seg = prop::sample::select(segs);
    prop::collection::vec(seg, 1..=3).prop_map(|v| v.join("/"))
}

fn path() -> impl Strategy<Value = String> {
    path_from(vec!["a", "b", "c"])
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(Vec::new()),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![9 => 0u64..64, 1 => (5 * MIB - 3)..(11 * MIB)]
}

fn op_with(path: fn() -> BoxedStrategy<String>) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), data()).prop_map(|(path, data)| Op::Write { path, data }),
        2 => (path(), offset(), data()).prop_map(|(path, off, data)| Op::WriteAt { path, off, data }),
        1 => (path(), data()).prop_map(|(path, data)| Op::Append { path, data }),
        1 => (path(), prop_oneof![0u64..50, Just(6 * MIB)]).prop_map(|(path, len)| Op::Truncate { path, len }),
        3 => path().prop_map(|path| Op::Mkdir { path }),
        1 => path().prop_map(|path| Op::Rmdir { path }),
        1 => path().prop_map(|path| Op::Unlink { path }),
        2 => (path(), path()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (path(), prop::sample::select(vec![0o600u16, 0o640, 0o755, 0o444])).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (path(), "[a-z]{1,8}").prop_map(|(path, target)| Op::Symlink { path, target }),
        2 => (path(), data()).prop_map(|(path, data)| Op::OobPut { path, data }),
        1 => path().prop_map(|path| Op::OobDelete { path }),
        1 => path().prop_map(|path| Op::Open { path }),
        2 => (offset(), data()).prop_map(|(off, data)| Op::HWrite { off, data }),
        1 => Just(Op::HFsync),
        1 => Just(Op::HClose),
        2 => path().prop_map(|path| Op::Read { path }),
        1 => prop_oneof![Just(String::new()), path()].prop_map(|path| Op::List { path }),
        1 => Just(Op::Tick),
        1 => Just(Op::Expire),
        1 => path().prop_map(|path| Op::FailDelete { path }),
        1 => path().prop_map(|path| Op::FailCopy { path }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    op_with(|| path().boxed())
}

/// Names that collide ignoring case, and one that does not.
fn ci_path() -> impl Strategy<Value = String> {
    path_from(vec!["a", "A", "b"])
}

fn ci_op() -> impl Strategy<Value = Op> {
    op_with(|| ci_path().boxed())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_core_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        check(&ops);
    }

    #[test]
    fn the_case_insensitive_core_matches_the_model(ops in prop::collection::vec(ci_op(), 1..40)) {
        check_ci(&ops);
    }

    #[test]
    fn the_core_with_ttls_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        check_ttl(&ops);
    }
}

// ----- regressions found by the search, kept by name -----

fn p(s: &str) -> String {
    s.to_string()
}

#[test]
fn regression_rename_dir_holding_an_unflushed_new_file() {
    check(&[
        Op::OobPut {
            path: p("c/c"),
            data: vec![],
        },
        Op::Open { path: p("c/a") },
        Op::Rename {
            from: p("c"),
            to: p("a"),
        },
    ]);
}

#[test]
fn regression_directory_kept_alive_by_an_unflushed_file() {
    check(&[
        Op::OobPut {
            path: p("c/c"),
            data: vec![],
        },
        Op::Open { path: p("c/a") },
        Op::OobDelete { path: p("c/c") },
    ]);
}

#[test]
fn regression_ci_create_after_another_client_deleted_a_spelling() {
    check_ci(&[
        Op::OobPut {
            path: p("A"),
            data: vec![],
        },
        Op::OobDelete { path: p("A") },
        Op::Open { path: p("a") },
    ]);
}

#[test]
fn regression_ci_open_in_a_directory_with_a_hidden_twin() {
    check_ci(&[
        Op::Mkdir { path: p("A") },
        Op::OobPut {
            path: p("a/a"),
            data: vec![],
        },
        Op::Open { path: p("a/a") },
    ]);
}

#[test]
fn regression_ci_rename_onto_itself_when_a_directory_wins() {
    check_ci(&[
        Op::OobPut {
            path: p("a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("A/a"),
            data: vec![],
        },
        Op::Rename {
            from: p("a"),
            to: p("a"),
        },
    ]);
}

#[test]
fn regression_ci_rename_a_hidden_directory_onto_its_winner() {
    check_ci(&[
        Op::OobPut {
            path: p("a/a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("A"),
            data: vec![],
        },
        Op::Rename {
            from: p("a"),
            to: p("A"),
        },
    ]);
}

#[test]
fn regression_rmdir_of_a_directory_holding_only_an_unflushed_file_deeper_down() {
    let ops = [
        Op::OobPut {
            path: p("a/a/a"),
            data: vec![],
        },
        Op::Open { path: p("a/a/b") },
        Op::Unlink { path: p("a/a/a") },
        Op::Rmdir { path: p("a") },
    ];
    check(&ops);
    check_ci(&ops);
}

#[test]
fn regression_ci_rename_an_unflushed_file_onto_another_spelling() {
    check_ci(&[
        Op::Open { path: p("b") },
        Op::Symlink {
            path: p("A"),
            target: p("a"),
        },
        Op::Rename {
            from: p("b"),
            to: p("a"),
        },
    ]);
}

#[test]
fn regression_unlink_next_to_an_unflushed_file_when_a_file_shares_the_directory_name() {
    check(&[
        Op::OobPut {
            path: p("b/c"),
            data: vec![],
        },
        Op::Write {
            path: p("b/a"),
            data: vec![],
        },
        Op::OobDelete { path: p("b/c") },
        Op::OobPut {
            path: p("b"),
            data: vec![],
        },
        Op::Open { path: p("b/b") },
        Op::Unlink { path: p("b/a") },
    ]);
}

#[test]
fn regression_shadowed_file_reappears_under_an_unflushed_file() {
    check(&[
        Op::Write {
            path: p("a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("a/b/a"),
            data: vec![],
        },
        Op::Open { path: p("a/c") },
        Op::OobDelete { path: p("a/b/a") },
    ]);
}

#[test]
fn regression_unlink_an_unflushed_file_renamed_over_a_symlink() {
    let ops = [
        Op::Symlink {
            path: p("a"),
            target: p("a"),
        },
        Op::Open { path: p("b") },
        Op::Rename {
            from: p("b"),
            to: p("a"),
        },
        Op::Unlink { path: p("a") },
    ];
    check(&ops);
    check_ci(&ops);
}

#[test]
fn regression_ci_case_only_rename_onto_a_hidden_twin_that_holds_a_file() {
    check_ci(&[
        Op::OobPut {
            path: p("a/b/a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("A/a"),
            data: vec![],
        },
        Op::Open { path: p("a/b") },
        Op::Rename {
            from: p("a"),
            to: p("a"),
        },
    ]);
}

#[test]
fn regression_ci_rename_onto_a_directory_kept_by_its_marker_only() {
    check_ci(&[
        Op::OobPut {
            path: p("b/A/a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("a/a/a"),
            data: vec![],
        },
        Op::Chmod {
            path: p("b/a"),
            mode: 0o600,
        },
        Op::Unlink { path: p("b/a/a") },
        Op::Rename {
            from: p("a"),
            to: p("b/a"),
        },
    ]);
}

#[test]
fn regression_ci_rename_onto_another_spelling_of_an_unflushed_file() {
    check_ci(&[
        Op::OobPut {
            path: p("b/a"),
            data: vec![],
        },
        Op::Open { path: p("A") },
        Op::Rename {
            from: p("b/a"),
            to: p("a"),
        },
    ]);
}

#[test]
fn regression_ci_rename_into_a_directory_that_loses_to_a_twin() {
    check_ci(&[
        Op::Open { path: p("A") },
        Op::HClose,
        Op::OobPut {
            path: p("a/a"),
            data: vec![],
        },
        Op::Open { path: p("b") },
        Op::OobPut {
            path: p("A/a/a"),
            data: vec![],
        },
        Op::Rename {
            from: p("b"),
            to: p("a/a/a"),
        },
    ]);
}

#[test]
fn regression_reader_close_stores_what_the_held_file_shares() {
    check(&[
        Op::Open { path: p("c") },
        Op::HWrite {
            off: 0,
            data: vec![],
        },
        Op::Read { path: p("c") },
    ]);
}

#[test]
fn regression_truncating_the_held_file_by_path_waits_for_its_upload() {
    check(&[
        Op::Open { path: p("b") },
        Op::Truncate {
            path: p("b"),
            len: 1,
        },
        Op::Read { path: p("b") },
    ]);
}

#[test]
fn regression_ttl_implicit_directories_emptied_by_a_rename_disappear() {
    check_ttl(&[
        Op::OobPut {
            path: p("b/b/a"),
            data: vec![],
        },
        Op::Expire,
        Op::Rename {
            from: p("b/b/a"),
            to: p("c"),
        },
    ]);
}

#[test]
fn regression_ttl_a_shadowed_file_shows_again_after_its_directory_moves() {
    check_ttl(&[
        Op::OobPut {
            path: p("c"),
            data: vec![],
        },
        Op::OobPut {
            path: p("c/a"),
            data: vec![],
        },
        Op::Expire,
        Op::Rename {
            from: p("c"),
            to: p("b"),
        },
    ]);
}

#[test]
fn regression_a_failed_directory_copy_keeps_everything() {
    check(&[
        Op::Mkdir { path: p("c") },
        Op::FailCopy { path: p("b") },
        Op::Rename {
            from: p("c"),
            to: p("b"),
        },
    ]);
}

#[test]
fn regression_a_failed_self_copy_fails_chmod() {
    check(&[
        Op::Write {
            path: p("a"),
            data: vec![],
        },
        Op::FailCopy { path: p("a") },
        Op::Chmod {
            path: p("a"),
            mode: 0o600,
        },
    ]);
}

#[test]
fn regression_ttl_a_renamed_directory_listed_without_lookups_keeps_its_files() {
    check_ttl(&[
        Op::Mkdir { path: p("a") },
        Op::Write {
            path: p("a/b"),
            data: vec![1, 2, 3],
        },
        Op::Expire,
        Op::List { path: p("a") },
        Op::Rename {
            from: p("a"),
            to: p("c"),
        },
        Op::Append {
            path: p("c/b"),
            data: vec![4],
        },
    ]);
}

#[test]
fn regression_ttl_another_clients_overwrite_is_read_after_the_negative_ttl() {
    check_ttl(&[
        Op::Write {
            path: p("a"),
            data: vec![0],
        },
        Op::OobPut {
            path: p("a"),
            data: vec![],
        },
        Op::Tick,
        Op::Read { path: p("a") },
    ]);
}

#[test]
fn regression_ttl_an_unlinked_last_key_takes_its_implicit_directory_along() {
    check_ttl(&[
        Op::OobPut {
            path: p("c/b"),
            data: vec![],
        },
        Op::Expire,
        Op::Unlink { path: p("c/b") },
        Op::Read { path: p("c") },
    ]);
}

#[test]
fn regression_a_failed_unlink_of_the_held_file_keeps_its_writes() {
    check(&[
        Op::Write {
            path: p("a"),
            data: vec![1],
        },
        Op::Open { path: p("a") },
        Op::FailDelete { path: p("a") },
        Op::Unlink { path: p("a") },
        Op::HWrite {
            off: 0,
            data: vec![2],
        },
        Op::HClose,
    ]);
}

/// The model moved the object a directory hides along with the directory; pailfs leaves
/// another entry's key alone (the model was wrong, not the core).
#[test]
fn regression_ci_rename_a_directory_onto_an_empty_one_that_shadows_a_file() {
    check_ci(&[
        Op::Mkdir { path: p("a") },
        Op::OobPut {
            path: p("a"),
            data: vec![],
        },
        Op::OobPut {
            path: p("b/b/a"),
            data: vec![],
        },
        Op::Rename {
            from: p("b"),
            to: p("A"),
        },
    ]);
}
