//! Reading a directory's small files one after another (`cat dir/*`, `cp -r` or `rsync` out
//! of the mount, `tar -c`): each file is one small GET, and an application reading them in turn
//! waits for each GET before it asks for the next file, so it runs at the server's round-trip
//! time, not its throughput. Read-ahead within a file cannot help; read-ahead across files can.
//!
//! When a file is opened for reading shortly after another file of the same directory that
//! comes a little before it in name order, the next `AHEAD` files of the directory's cached
//! listing that fit in one block are fetched into the block cache in the background, a few at
//! a time (the read-ahead permits bound the bytes in flight), so their opens find the data
//! there. Each fetch is keyed and pinned by the ETag the listing showed: a file that changed
//! since the listing opens at another ETag and misses, so nothing stale is ever served. Only
//! a fresh listing is used, and random opens in a large directory trigger nothing.

use super::Fs;
use super::inode::Ino;
use super::openfile::Base;
use crate::cache::BLOCK;
use crate::store::ObjectStore;

/// How many files ahead of the one being opened are fetched.
pub const AHEAD: usize = 16;

/// Directories whose last opened-for-reading name is remembered.
pub const CURSORS: usize = 64;

impl<S: ObjectStore> Fs<S> {
    /// Called when `name` in `dir` is opened for reading (not writing, not truncating).
    pub(crate) fn note_read_open(&self, dir: Ino, name: &str) {
        let Some(prev) = self.reader.note_open(dir, name) else {
            return;
        };
        if prev.as_str() >= name {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        for m in self.ns.files_after(dir, &prev, name, AHEAD, BLOCK) {
            let b = Base {
                key: m.key,
                etag: m.etag,
                len: m.size,
            };
            me.start_fetches(&b, 0, 1, 1);
        }
    }
}
