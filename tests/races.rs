//! Races and failures around the namespace, driven through the core over the in-memory store.
//!
//! Each case orders concurrent operations exactly with the store's gates (a request held
//! before or after it takes effect until the test opens the gate), or makes one request fail,
//! and then checks the two things that matter: what S3 holds, and that the mount shows what
//! S3 holds. Every case here failed on the code before the namespace had one owner (issue 11);
//! tests/MODEL.md says which of them the model test finds by itself.

use pailfs::fs::handles::NewFile;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use pailfs::fs::inode::ROOT;
use pailfs::fs::{Fs, FsConfig};
use pailfs::store::StoreError;
use pailfs::store::memory::{MemoryStore, Op, When};

struct T {
    fs: Arc<Fs<MemoryStore>>,
    _spool: tempfile::TempDir,
}

fn io_error() -> StoreError {
    StoreError::Other("injected".into())
}

impl T {
    fn new() -> T {
        Self::with_ttl(Duration::from_secs(60))
    }

    fn with_ttl(ttl: Duration) -> T {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = FsConfig::new("", pailfs::cache_dir::MountDir::at(spool.path()));
        cfg.part_size = 5 * 1024 * 1024;
        cfg.metadata_ttl = ttl;
        T {
            fs: Fs::new(MemoryStore::new(), cfg).unwrap(),
            _spool: spool,
        }
    }

    fn s(&self) -> &MemoryStore {
        self.fs.store()
    }

    async fn ino(&self, path: &str) -> Result<u64, i32> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self
                .fs
                .lookup(ino, OsStr::new(part))
                .await
                .map_err(|e| e.errno())?
                .ino;
        }
        Ok(ino)
    }

    async fn parent(&self, path: &str) -> (u64, String) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        (self.ino(dir).await.unwrap(), name.to_string())
    }

    async fn mkdir(&self, path: &str) {
        let (p, n) = self.parent(path).await;
        self.fs
            .mkdir(p, OsStr::new(&n), 0o755, 0, 0, 0)
            .await
            .unwrap();
    }

    /// Creates `path` and returns the open handle.
    async fn create(&self, path: &str) -> u64 {
        let (p, n) = self.parent(path).await;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;
        self.fs
            .create(p, OsStr::new(&n), NewFile::plain(flags))
            .await
            .unwrap()
            .1
    }

    async fn write_file(&self, path: &str, data: &[u8]) {
        let fh = self.create(path).await;
        self.fs.write(fh, 0, data).await.unwrap();
        self.fs.flush(fh).await.unwrap();
        self.fs.release(fh).await.unwrap();
    }

    async fn open(&self, path: &str, flags: i32) -> u64 {
        let ino = self.ino(path).await.unwrap();
        self.fs.open(ino, flags).await.unwrap().fh
    }

    async fn close(&self, fh: u64) -> Result<(), i32> {
        let f = self.fs.flush(fh).await.map_err(|e| e.errno());
        let r = self.fs.release(fh).await.map_err(|e| e.errno());
        f.and(r)
    }

    async fn read_all(&self, path: &str) -> Result<Vec<u8>, i32> {
        let ino = self.ino(path).await?;
        let fh = self
            .fs
            .open(ino, libc::O_RDONLY)
            .await
            .map_err(|e| e.errno())?
            .fh;
        let mut out = Vec::new();
        loop {
            let chunk = self
                .fs
                .read(fh, out.len() as u64, 1 << 20)
                .await
                .map_err(|e| e.errno())?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.fs.release(fh).await.map_err(|e| e.errno())?;
        Ok(out)
    }

    async fn names(&self, dir: &str) -> Vec<String> {
        let ino = self.ino(dir).await.unwrap();
        let fh = self.fs.opendir(ino).unwrap();
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.fs.readdir(fh, off, 100, false).await.unwrap();
            if batch.is_empty() {
                break;
            }
            for e in batch {
                off = e.offset;
                if e.name != "." && e.name != ".." {
                    out.push(e.name);
                }
            }
        }
        self.fs.releasedir(fh);
        out.sort();
        out
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), i32> {
        let (p1, n1) = self.parent(from).await;
        let (p2, n2) = self.parent(to).await;
        self.fs
            .rename(p1, OsStr::new(&n1), p2, OsStr::new(&n2), 0)
            .await
            .map_err(|e| e.errno())
    }

    async fn unlink(&self, path: &str) -> Result<(), i32> {
        let (p, n) = self.parent(path).await;
        self.fs
            .unlink(p, OsStr::new(&n))
            .await
            .map_err(|e| e.errno())
    }

    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.s()
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect()
    }
}

fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(f)
}

/// Issue 11, point 1: a renamed directory whose listing was cached finds its files, and an
/// append to one keeps what it held.
#[tokio::test]
async fn a_renamed_directory_with_a_cached_listing_keeps_its_files() {
    let t = T::with_ttl(Duration::from_secs(1));
    t.mkdir("d").await;
    for i in 0..20 {
        t.write_file(&format!("d/f{i:02}"), format!("old {i}\n").as_bytes())
            .await;
    }
    // What the mount learned at each upload expires; the listing is then fetched afresh.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(t.names("d").await.len(), 20);
    t.rename("d", "d2").await.unwrap();
    assert_eq!(t.read_all("d2/f10").await.unwrap(), b"old 10\n");
    let fh = t.open("d2/f11", libc::O_WRONLY | libc::O_APPEND).await;
    t.fs.write(fh, 7, b"new\n").await.unwrap();
    t.close(fh).await.unwrap();
    assert_eq!(t.s().peek("d2/f11").unwrap().as_ref(), b"old 11\nnew\n");
    assert!(t.keys_under("d/").is_empty(), "{:?}", t.keys_under("d/"));
}

/// Point 4: a close of a file inside a directory that is being renamed, landing after the
/// rename copied the file and before it deleted the original, is neither lost nor reported
/// stored when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_during_a_directory_rename_is_not_lost() {
    let t = Arc::new(T::new());
    t.mkdir("d").await;
    t.write_file("d/f", b"old").await;
    let fh = t.open("d/f", libc::O_RDWR).await;
    let gate = t.s().gate(Op::Copy, Some("e/f"), When::After);
    let t2 = t.clone();
    let rename = spawn(async move { t2.rename("d", "e").await });
    gate.reached(1).await;
    t.fs.write(fh, 0, b"new").await.unwrap();
    let t3 = t.clone();
    let close = spawn(async move { t3.close(fh).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    let renamed = rename.await.unwrap();
    let closed = close.await.unwrap();
    assert_eq!(renamed, Ok(()));
    assert!(t.keys_under("d/").is_empty(), "{:?}", t.keys_under("d/"));
    match closed {
        Ok(()) => assert_eq!(t.s().peek("e/f").unwrap().as_ref(), b"new"),
        Err(e) => panic!("close failed ({e}) though nothing was wrong with the upload"),
    }
    assert_eq!(t.read_all("e/f").await.unwrap(), b"new");
}

/// Point 4: a file created and stored in a directory while it is being renamed ends up
/// under the new name, not stranded under the old prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_created_during_a_directory_rename_is_not_stranded() {
    let t = Arc::new(T::new());
    t.mkdir("d").await;
    t.write_file("d/f", b"f").await;
    let gate = t.s().gate(Op::Copy, Some("e/f"), When::After);
    let t2 = t.clone();
    let rename = spawn(async move { t2.rename("d", "e").await });
    gate.reached(1).await;
    let t3 = t.clone();
    let create = spawn(async move {
        let fh = t3.create("d/new").await;
        t3.fs.write(fh, 0, b"created").await.unwrap();
        t3.close(fh).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    assert_eq!(rename.await.unwrap(), Ok(()));
    assert_eq!(create.await.unwrap(), Ok(()));
    assert!(t.keys_under("d/").is_empty(), "{:?}", t.keys_under("d/"));
    assert_eq!(t.read_all("e/new").await.unwrap(), b"created");
    assert_eq!(t.names("e").await, vec!["f", "new"]);
}

/// Point 4: an unlink whose DELETE fails leaves the file in place, and writes through a
/// descriptor still open on it are stored.
#[tokio::test]
async fn an_unlink_that_fails_keeps_the_open_file_stored() {
    let t = T::new();
    t.write_file("f", b"a").await;
    let fh = t.open("f", libc::O_RDWR).await;
    t.s().fail(Op::Delete, Some("f"), 1, io_error());
    assert!(t.unlink("f").await.is_err());
    t.fs.write(fh, 0, b"b").await.unwrap();
    assert_eq!(t.close(fh).await, Ok(()));
    assert_eq!(t.s().peek("f").unwrap().as_ref(), b"b");
    assert_eq!(t.read_all("f").await.unwrap(), b"b");
}

/// Point 4: unlink of a new file while its first upload is in flight removes it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlink_during_the_first_upload_removes_the_file() {
    let t = Arc::new(T::new());
    let fh = t.create("f").await;
    t.fs.write(fh, 0, b"data").await.unwrap();
    let gate = t.s().gate(Op::Put, Some("f"), When::Before);
    let t2 = t.clone();
    let close = spawn(async move { t2.close(fh).await });
    gate.reached(1).await;
    let t3 = t.clone();
    let unlink = spawn(async move { t3.unlink("f").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    let _ = close.await.unwrap();
    assert_eq!(unlink.await.unwrap(), Ok(()));
    assert!(t.s().peek("f").is_none(), "the unlinked file came back");
    assert_eq!(t.ino("f").await, Err(libc::ENOENT));
}

/// Point 4: a rename of a new file while its first upload is in flight moves the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_during_the_first_upload_moves_the_object() {
    let t = Arc::new(T::new());
    let fh = t.create("f").await;
    t.fs.write(fh, 0, b"data").await.unwrap();
    let gate = t.s().gate(Op::Put, Some("f"), When::Before);
    let t2 = t.clone();
    let close = spawn(async move { t2.close(fh).await });
    gate.reached(1).await;
    let t3 = t.clone();
    let rename = spawn(async move { t3.rename("f", "g").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    assert_eq!(close.await.unwrap(), Ok(()));
    assert_eq!(rename.await.unwrap(), Ok(()));
    assert!(t.s().peek("f").is_none(), "the old name is still in S3");
    assert_eq!(t.s().peek("g").unwrap().as_ref(), b"data");
    assert_eq!(t.read_all("g").await.unwrap(), b"data");
}

/// Point 4: setxattr on an open file checks S3's metadata limit at once.
#[tokio::test]
async fn setxattr_on_an_open_file_checks_the_metadata_limit() {
    let t = T::new();
    let fh = t.create("f").await;
    let ino = t.ino("f").await.unwrap();
    let big = vec![b'x'; 3000];
    let r = t.fs.setxattr(ino, OsStr::new("user.big"), &big, 0).await;
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::E2BIG));
    assert_eq!(t.close(fh).await, Ok(()));
}

/// Point 4: a setxattr made while the file's upload is in flight is stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setxattr_during_an_upload_is_kept() {
    let t = Arc::new(T::new());
    let fh = t.create("f").await;
    t.fs.write(fh, 0, b"data").await.unwrap();
    let ino = t.ino("f").await.unwrap();
    let gate = t.s().gate(Op::Put, Some("f"), When::Before);
    let t2 = t.clone();
    let flush = spawn(async move { t2.fs.flush(fh).await.map_err(|e| e.errno()) });
    gate.reached(1).await;
    t.fs.setxattr(ino, OsStr::new("user.a"), b"1", 0)
        .await
        .unwrap();
    gate.open();
    assert_eq!(flush.await.unwrap(), Ok(()));
    assert_eq!(t.close(fh).await, Ok(()));
    let meta = t.s().peek_meta("f").unwrap();
    assert!(
        meta.get("xattr").is_some_and(|x| x.contains("user.a")),
        "{meta:?}"
    );
}

/// Point 4: a directory rename that fails while copying leaves an existing empty target
/// directory as it was (its marker, with its attributes).
#[tokio::test]
async fn a_failed_directory_rename_keeps_an_empty_target() {
    let t = T::new();
    t.mkdir("a").await;
    t.write_file("a/x", b"x").await;
    t.write_file("a/y", b"y").await;
    let (p, _) = t.parent("b").await;
    t.fs.mkdir(p, OsStr::new("b"), 0o700, 0, 0, 0)
        .await
        .unwrap();
    t.s().fail(Op::Copy, Some("b/y"), 1, io_error());
    assert!(t.rename("a", "b").await.is_err());
    let marker = t.s().peek_meta("b/").expect("the target's marker is gone");
    assert_eq!(marker.get("mode").map(String::as_str), Some("16832"));
    assert_eq!(t.keys_under("b/"), vec!["b/"]);
    assert_eq!(t.keys_under("a/"), vec!["a/", "a/x", "a/y"]);
    assert_eq!(t.names("a").await, vec!["x", "y"]);
    assert!(t.names("b").await.is_empty());
}

/// Point 4: a directory rename that fails while deleting the originals leaves the mount
/// showing what S3 holds: the complete new tree and what is left of the old one.
#[tokio::test]
async fn a_directory_rename_failing_while_deleting_shows_what_s3_holds() {
    let t = T::new();
    t.mkdir("a").await;
    t.write_file("a/x", b"x").await;
    t.write_file("a/y", b"y").await;
    assert_eq!(t.names("a").await, vec!["x", "y"]);
    t.s().fail(Op::Delete, Some("a/y"), 1, io_error());
    assert!(t.rename("a", "b").await.is_err());
    assert_eq!(t.keys_under("b/"), vec!["b/", "b/x", "b/y"]);
    assert_eq!(t.keys_under("a/"), vec!["a/y"]);
    assert_eq!(t.names("b").await, vec!["x", "y"]);
    assert_eq!(t.names("a").await, vec!["y"]);
    assert_eq!(t.read_all("b/x").await.unwrap(), b"x");
    assert_eq!(t.read_all("a/y").await.unwrap(), b"y");
}

/// Point 2: a shell redirect (open, dup2, close of the first descriptor before anything is
/// written) stores one object, never an empty one first; `touch` of a new file stores the
/// empty object at the last close.
#[tokio::test]
async fn a_shell_redirect_stores_one_object() {
    let t = T::new();
    let fh = t.create("redir").await;
    t.fs.flush(fh).await.unwrap();
    assert!(
        t.s().peek("redir").is_none(),
        "an empty object was stored before the write"
    );
    t.fs.write(fh, 0, b"hi\n").await.unwrap();
    t.close(fh).await.unwrap();
    assert_eq!(t.s().count(Op::Put), 1);
    assert_eq!(t.s().peek("redir").unwrap().as_ref(), b"hi\n");

    let fh = t.create("touched").await;
    t.close(fh).await.unwrap();
    assert_eq!(t.s().count(Op::Put), 2);
    assert_eq!(t.s().peek("touched").unwrap().len(), 0);
}

/// Point 3: a file another client replaced is read in its new version by a new open that
/// has not returned any data yet, instead of failing with ESTALE.
#[tokio::test]
async fn a_new_open_reads_a_version_another_client_stored() {
    let t = T::new();
    t.write_file("f", b"short").await;
    assert!(t.ino("f").await.is_ok());
    t.s().insert("f", "a longer version of the file");
    assert_eq!(
        t.read_all("f").await.unwrap(),
        b"a longer version of the file"
    );
}

/// A truncation of a file whose last descriptor is being released (its upload in flight) is
/// stored, not applied to open state that the release then detaches and nobody uploads
/// (pjdfstest's `truncate::extend_file_shrink_sparse` met this: `touch`, then `truncate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_racing_the_last_release_is_stored() {
    let t = Arc::new(T::new());
    let fh = t.create("f").await;
    t.fs.flush(fh).await.unwrap();
    let gate = t.s().gate(Op::Put, Some("f"), When::Before);
    let t2 = t.clone();
    let release = spawn(async move { t2.fs.release(fh).await.map_err(|e| e.errno()) });
    gate.reached(1).await;
    let ino = t.ino("f").await.unwrap();
    let t3 = t.clone();
    let truncate = spawn(async move {
        let sa = pailfs::fs::setattr::SetAttr {
            size: Some(100),
            ..Default::default()
        };
        t3.fs
            .setattr(ino, sa)
            .await
            .map(|_| ())
            .map_err(|e| e.errno())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    assert_eq!(release.await.unwrap(), Ok(()));
    assert_eq!(truncate.await.unwrap(), Ok(()));
    assert_eq!(t.s().peek("f").unwrap().len(), 100);
    let sa = pailfs::fs::setattr::SetAttr {
        size: Some(5),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(t.s().peek("f").unwrap().len(), 5);
    assert_eq!(t.read_all("f").await.unwrap(), vec![0; 5]);
}
