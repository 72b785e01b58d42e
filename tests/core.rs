//! The core driven without the kernel, over the in-memory store: request counts, failure
//! injection, and the upload strategies (one PUT, early parts, server-side copies).

use pailfs::fs::handles::NewFile;
use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;
use pailfs::fs::inode::ROOT;
use pailfs::fs::{Fs, FsConfig};
use pailfs::store::memory::{MemoryStore, Op};
use pailfs::store::{ObjectStore, StoreError, UserMeta};

use crate::common;

const MIB: usize = 1024 * 1024;

struct T {
    fs: Arc<Fs<MemoryStore>>,
    _spool: tempfile::TempDir,
}

impl T {
    fn new() -> T {
        Self::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut FsConfig)) -> T {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = FsConfig::new("", pailfs::cache_dir::MountDir::at(spool.path()));
        cfg.part_size = 5 * MIB as u64;
        cfg.metadata_ttl = std::time::Duration::from_secs(60);
        f(&mut cfg);
        T {
            fs: Fs::new(MemoryStore::new(), cfg).unwrap(),
            _spool: spool,
        }
    }

    fn s(&self) -> &MemoryStore {
        self.fs.store()
    }

    async fn ino(&self, path: &str) -> u64 {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.fs.lookup(ino, OsStr::new(part)).await.unwrap().ino;
        }
        ino
    }

    async fn create(&self, name: &str) -> u64 {
        let (_, fh) = self
            .fs
            .create(
                ROOT,
                OsStr::new(name),
                NewFile::plain(libc::O_WRONLY | libc::O_CREAT),
            )
            .await
            .unwrap();
        fh
    }

    async fn write_file(&self, name: &str, data: &[u8]) {
        let fh = self.create(name).await;
        self.fs.write(fh, 0, data).await.unwrap();
        self.fs.flush(fh).await.unwrap();
        self.fs.release(fh).await.unwrap();
    }

    async fn read_all(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path).await;
        let fh = self.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(fh, out.len() as u64, 1 << 20).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.fs.release(fh).await.unwrap();
        out
    }

    async fn names(&self, dir: &str) -> Vec<String> {
        let ino = self.ino(dir).await;
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
        out
    }
}

#[tokio::test]
async fn a_cached_stat_makes_no_request() {
    let t = T::new();
    t.s().insert("a.txt", "hello");
    let ino = t.ino("a.txt").await;
    let before = t.s().total_requests();
    let attr = t.fs.getattr(ino).await.unwrap();
    assert_eq!(attr.stat.size, 5);
    t.fs.lookup(ROOT, OsStr::new("a.txt")).await.unwrap();
    assert_eq!(
        t.s().total_requests(),
        before,
        "cached lookups and stats must not ask S3"
    );
}

/// Every open asks S3 for the version it reads (close-to-open across hosts), however fresh
/// what the mount knows; `--open-ttl` lets an open trust what S3 said that recently.
#[tokio::test]
async fn every_open_asks_s3_unless_an_open_ttl_is_set() {
    for (open_ttl, heads_per_open) in [(0, 1), (60, 0)] {
        let t = T::with(|c| c.open_ttl = std::time::Duration::from_secs(open_ttl));
        t.s().insert("a.txt", "hello");
        t.ino("a.txt").await;
        let before = t.s().count(Op::Head);
        for _ in 0..3 {
            assert_eq!(t.read_all("a.txt").await, b"hello");
        }
        let heads = t.s().count(Op::Head) - before;
        assert_eq!(heads, 3 * heads_per_open, "--open-ttl {open_ttl}");
    }
}

#[tokio::test]
async fn a_miss_is_remembered() {
    let t = T::new();
    assert_eq!(
        t.fs.lookup(ROOT, OsStr::new("nope"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    let before = t.s().total_requests();
    assert_eq!(
        t.fs.lookup(ROOT, OsStr::new("nope"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    assert_eq!(t.s().total_requests(), before);
}

#[tokio::test]
async fn a_lookup_is_one_round_trip_of_head_and_list() {
    let t = T::new();
    t.s().insert("f", "x");
    t.fs.lookup(ROOT, OsStr::new("f")).await.unwrap();
    assert_eq!((t.s().count(Op::Head), t.s().count(Op::List)), (1, 1));
}

#[tokio::test]
async fn small_files_are_one_put_at_close_and_invisible_before() {
    let t = T::new();
    let fh = t.create("new.txt").await;
    t.fs.write(fh, 0, b"some data").await.unwrap();
    assert!(
        t.s().peek("new.txt").is_none(),
        "nothing in S3 before close"
    );
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(
        t.s().peek("new.txt").unwrap(),
        Bytes::from_static(b"some data")
    );
    assert_eq!(t.s().count(Op::Put), 1);
    assert_eq!(t.s().count(Op::CreateMultipart), 0);
    let meta = t.s().peek_meta("new.txt").unwrap();
    assert_eq!(meta["mode"], (libc::S_IFREG | 0o644).to_string());
}

#[tokio::test]
async fn large_files_upload_parts_while_writing() {
    let t = T::new();
    let data = common::pseudo_random(13 * MIB, 3);
    let fh = t.create("big").await;
    for (i, chunk) in data.chunks(MIB).enumerate() {
        t.fs.write(fh, (i * MIB) as u64, chunk).await.unwrap();
    }
    // Parts 1 and 2 (5 MiB each) are complete; they go up before close.
    for _ in 0..200 {
        if t.s().count(Op::UploadPart) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        t.s().count(Op::UploadPart) >= 2,
        "no part uploaded before close"
    );
    assert!(t.s().peek("big").is_none());
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(t.s().peek("big").unwrap(), Bytes::from(data));
    assert_eq!(t.s().count(Op::UploadPart), 3, "each part uploaded once");
    assert_eq!(t.s().open_uploads(), 0);
}

#[tokio::test]
async fn a_failed_upload_returns_the_error_and_keeps_the_old_object() {
    let t = T::new();
    t.s().insert("doc", "version 1");
    let ino = t.ino("doc").await;
    let fh =
        t.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap()
            .fh;
    t.fs.write(fh, 0, b"version 2, longer").await.unwrap();
    t.s().fail(
        Op::Put,
        Some("doc"),
        10,
        StoreError::Unreachable("injected".into()),
    );
    let err = t.fs.flush(fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    // The failure is final for this open file: a second close of a dup'ed descriptor, or a
    // write through it, gets the error again instead of silently succeeding.
    assert_eq!(t.fs.flush(fh).await.unwrap_err().errno(), libc::EIO);
    assert_eq!(
        t.fs.write(fh, 0, b"more").await.unwrap_err().errno(),
        libc::EIO
    );
    t.fs.release(fh).await.unwrap();
    let failed_dir = pailfs::cache_dir::MountDir::at(t._spool.path()).failed();
    let kept: Vec<_> = std::fs::read_dir(&failed_dir).unwrap().collect();
    assert_eq!(
        kept.len(),
        1,
        "the data that could not be stored is kept aside"
    );
    t.s().clear_faults();
    assert_eq!(t.s().peek("doc").unwrap(), Bytes::from_static(b"version 1"));
    // Nothing of the failed write is served as if stored.
    assert_eq!(t.read_all("doc").await, b"version 1");
}

#[tokio::test]
async fn a_flush_racing_a_failing_flush_gets_the_error_too() {
    // Two descriptors on one open file (dup, or a child that inherited it) closed together:
    // the second close waits for the first one's upload and must not report success when
    // that upload failed.
    let t = T::new();
    let fh = t.create("new.txt").await;
    t.fs.write(fh, 0, b"data").await.unwrap();
    t.s().delay(Op::Put, std::time::Duration::from_millis(200));
    t.s().fail(
        Op::Put,
        None,
        1,
        StoreError::AccessDenied("injected".into()),
    );
    let (a, b) = tokio::join!(t.fs.flush(fh), t.fs.flush(fh));
    assert_eq!(a.unwrap_err().errno(), libc::EACCES);
    assert_eq!(b.unwrap_err().errno(), libc::EACCES);
    assert!(t.s().peek("new.txt").is_none());
}

#[tokio::test]
async fn a_failed_part_aborts_the_multipart_upload() {
    let t = T::new();
    t.s().insert("big", "old");
    let ino = t.ino("big").await;
    let fh =
        t.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap()
            .fh;
    t.s().fail(
        Op::UploadPart,
        None,
        100,
        StoreError::Other("injected".into()),
    );
    t.fs.write(fh, 0, &common::pseudo_random(11 * MIB, 1))
        .await
        .unwrap();
    assert!(t.fs.flush(fh).await.is_err());
    let _ = t.fs.release(fh).await;
    assert_eq!(t.s().open_uploads(), 0, "the failed upload was aborted");
    assert!(t.s().count(Op::AbortMultipart) >= 1);
    assert_eq!(t.s().count(Op::CompleteMultipart), 0);
    assert_eq!(t.s().peek("big").unwrap(), Bytes::from_static(b"old"));
}

#[tokio::test]
async fn editing_a_large_object_copies_unchanged_parts() {
    let t = T::new();
    let data = common::pseudo_random(16 * MIB, 9);
    t.s().insert("db", data.clone());
    let ino = t.ino("db").await;
    let fh = t.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
    t.fs.write(fh, (6 * MIB + 10) as u64, b"PATCH")
        .await
        .unwrap();
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    let mut want = data;
    want[6 * MIB + 10..6 * MIB + 15].copy_from_slice(b"PATCH");
    assert_eq!(t.s().peek("db").unwrap(), Bytes::from(want));
    assert_eq!(
        t.s().count(Op::UploadPart),
        1,
        "only the changed part is uploaded"
    );
    assert_eq!(
        t.s().count(Op::UploadPartCopy),
        3,
        "the others are copied server-side"
    );
    // The changed part's untouched bytes were fetched, not the whole object.
    assert_eq!(t.s().count(Op::Get), 2);
}

#[tokio::test]
async fn reads_are_pinned_to_the_version_opened() {
    let t = T::new();
    let v1 = common::pseudo_random(20 * MIB, 1);
    t.s().insert("f", v1.clone());
    let ino = t.ino("f").await;
    let fh = t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    assert_eq!(&t.fs.read(fh, 0, 5).await.unwrap()[..], &v1[..5]);
    t.s().insert("f", common::pseudo_random(20 * MIB, 2));
    // What is cached belongs to the version opened: still that version's bytes.
    assert_eq!(&t.fs.read(fh, 5, 5).await.unwrap()[..], &v1[5..10]);
    // What must come from S3 now cannot: the object changed.
    let err = t.fs.read(fh, 15 * MIB as u64, 7).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE);
    t.fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn an_unlinked_open_file_stays_usable_and_is_not_uploaded() {
    let t = T::new();
    let fh = t.create("tmp").await;
    t.fs.write(fh, 0, b"scratch").await.unwrap();
    t.fs.unlink(ROOT, OsStr::new("tmp")).await.unwrap();
    assert_eq!(&t.fs.read(fh, 0, 100).await.unwrap()[..], b"scratch");
    t.fs.write(fh, 7, b"!").await.unwrap();
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert!(t.s().keys().is_empty(), "{:?}", t.s().keys());
    assert_eq!(
        t.fs.lookup(ROOT, OsStr::new("tmp"))
            .await
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn directories_shadow_files_and_list_across_pages() {
    let t = T::new();
    for k in ["a", "a-b", "a.txt", "a/x", "b"] {
        t.s().insert(k, "x");
    }
    for i in 0..2500 {
        t.s().insert(&format!("many/f{i:04}"), "x");
    }
    assert_eq!(t.names("").await, vec!["a-b", "a.txt", "a", "b", "many"]);
    assert!(
        t.fs.lookup(ROOT, OsStr::new("a")).await.unwrap().stat.kind == pailfs::fs::attr::Kind::Dir
    );
    let many = t.names("many").await;
    assert_eq!(many.len(), 2500);
    assert!(t.s().count(Op::List) >= 3);
}

#[tokio::test]
async fn unrepresentable_keys_are_skipped_and_reported() {
    let t = T::new();
    for k in [
        "ok",
        "bad//x",
        "./dot",
        "../up",
        &"n".repeat(1100),
        "d/",
        "d/in",
    ] {
        t.s().insert(k, "x");
    }
    t.s().insert("marker-with-data/", "data");
    let names = t.names("").await;
    // "bad//x" implies a directory "bad" whose only entry has an empty name.
    assert_eq!(names, vec!["bad", "d", "marker-with-data", "ok"]);
    assert!(t.names("bad").await.is_empty());
    let skipped = t.fs.skipped_keys();
    assert!(skipped.contains(&"bad//".to_string()), "{skipped:?}");
    assert!(skipped.iter().any(|k| k.starts_with("nnn")), "{skipped:?}");
    let _ = t.names("marker-with-data").await;
    assert!(
        t.fs.skipped_keys()
            .contains(&"marker-with-data/".to_string())
    );
}

#[tokio::test]
async fn renames_copy_then_delete() {
    let t = T::new();
    t.write_file("a", b"content a").await;
    t.fs.rename(ROOT, OsStr::new("a"), ROOT, OsStr::new("b"), 0)
        .await
        .unwrap();
    assert_eq!(t.s().keys(), vec!["b"]);
    assert_eq!(t.read_all("b").await, b"content a");
    t.fs.mkdir(ROOT, OsStr::new("d"), 0o755, 0, 0, 0)
        .await
        .unwrap();
    let d = t.ino("d").await;
    for i in 0..5 {
        let (_, fh) =
            t.fs.create(
                d,
                OsStr::new(&format!("f{i}")),
                NewFile::plain(libc::O_WRONLY),
            )
            .await
            .unwrap();
        t.fs.write(fh, 0, format!("file {i}").as_bytes())
            .await
            .unwrap();
        t.fs.release(fh).await.unwrap();
    }
    t.fs.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"), 0)
        .await
        .unwrap();
    let mut keys = t.s().keys();
    keys.sort();
    assert_eq!(
        keys,
        vec!["b", "e/", "e/f0", "e/f1", "e/f2", "e/f3", "e/f4"]
    );
    assert_eq!(t.read_all("e/f3").await, b"file 3");
    let err =
        t.fs.rename(ROOT, OsStr::new("b"), ROOT, OsStr::new("e"), 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EISDIR);
    let noreplace =
        t.fs.rename(
            ROOT,
            OsStr::new("e/f0"),
            ROOT,
            OsStr::new("b"),
            libc::RENAME_NOREPLACE,
        )
        .await;
    assert!(noreplace.is_err());
}

#[tokio::test]
async fn renaming_a_directory_over_the_limit_is_refused() {
    let t = T::with(|c| c.max_rename_objects = 3);
    for i in 0..4 {
        t.s().insert(&format!("d/{i}"), "x");
    }
    let err =
        t.fs.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"), 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains("--max-rename-objects"));
    assert_eq!(t.s().keys().len(), 4);
}

#[tokio::test]
async fn a_failed_directory_rename_loses_nothing() {
    let t = T::new();
    for i in 0..6 {
        t.s().insert(&format!("d/{i}"), format!("{i}"));
    }
    t.s().fail(
        Op::Copy,
        Some("e/3"),
        100,
        StoreError::Other("injected".into()),
    );
    assert!(
        t.fs.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"), 0)
            .await
            .is_err()
    );
    let mut keys = t.s().keys();
    keys.sort();
    assert_eq!(keys, (0..6).map(|i| format!("d/{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn read_only_mounts_refuse_changes() {
    let t = T::with(|c| c.read_only = true);
    t.s().insert("f", "x");
    let err =
        t.fs.create(ROOT, OsStr::new("g"), NewFile::plain(libc::O_WRONLY))
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EROFS);
    let ino = t.ino("f").await;
    assert_eq!(
        t.fs.open(ino, libc::O_RDWR).await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        t.fs.unlink(ROOT, OsStr::new("f"))
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(t.read_all("f").await, b"x");
}

#[tokio::test]
async fn truncate_then_extend_reads_zeros_not_old_bytes() {
    let t = T::new();
    t.s().insert("f", "abcdefghij");
    let ino = t.ino("f").await;
    let fh = t.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
    let sa = pailfs::fs::setattr::SetAttr {
        size: Some(3),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    let sa = pailfs::fs::setattr::SetAttr {
        size: Some(6),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(&t.fs.read(fh, 0, 100).await.unwrap()[..], b"abc\0\0\0");
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(t.s().peek("f").unwrap(), Bytes::from_static(b"abc\0\0\0"));
}

/// `open(O_TRUNC)` of an existing file reaches the core as an open and a truncation without
/// the handle, like truncate(2) by path: nothing is stored until the new content is.
#[tokio::test]
async fn a_truncating_open_stores_no_empty_object() {
    let t = T::new();
    t.s().insert("f", "old content");
    let ino = t.ino("f").await;
    let fh = t.fs.open(ino, libc::O_WRONLY).await.unwrap().fh;
    let sa = pailfs::fs::setattr::SetAttr {
        size: Some(0),
        mtime: Some(std::time::SystemTime::now()),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(t.s().count(Op::Put), 0);
    assert_eq!(t.s().peek("f").unwrap(), Bytes::from_static(b"old content"));
    t.fs.write(fh, 0, b"new").await.unwrap();
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(t.s().count(Op::Put), 1);
    assert_eq!(t.s().peek("f").unwrap(), Bytes::from_static(b"new"));
}

#[tokio::test]
async fn chmod_is_a_self_copy_and_persists() {
    let t = T::new();
    t.s().insert("f", "data");
    let ino = t.ino("f").await;
    let sa = pailfs::fs::setattr::SetAttr {
        mode: Some(0o600),
        uid: Some(42),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(t.s().count(Op::Copy), 1);
    assert_eq!(t.s().count(Op::Put), 0);
    let meta: UserMeta = t.s().peek_meta("f").unwrap();
    assert_eq!(meta["mode"], (libc::S_IFREG | 0o600).to_string());
    assert_eq!(meta["uid"], "42");
    // A fresh mount of the same store sees it.
    let spool = tempfile::tempdir().unwrap();
    let fs2 = Fs::new(
        MemoryStore::new(),
        FsConfig::new("", pailfs::cache_dir::MountDir::at(spool.path())),
    )
    .unwrap();
    fs2.store()
        .put("f", Bytes::from_static(b"data"), &meta)
        .await
        .unwrap();
    let a = fs2.lookup(ROOT, OsStr::new("f")).await.unwrap();
    assert_eq!((a.stat.perm, a.stat.uid), (0o600, 42));
}

#[tokio::test]
async fn sequential_reads_prefetch_and_cached_blocks_make_no_request() {
    let t = T::new();
    let data = common::pseudo_random(24 * MIB, 4);
    t.s().insert("big", data.clone());
    assert_eq!(t.read_all("big").await, data);
    let gets = t.s().count(Op::Get);
    // Read-ahead fetches several blocks per GET.
    assert!(gets < 24, "{gets} GETs for 24 blocks");
    // A second read of the start is served from the block cache.
    let ino = t.ino("big").await;
    let fh = t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let before = t.s().total_requests();
    let head = t.fs.read(fh, 0, 4096).await.unwrap();
    assert_eq!(&head[..], &data[..4096]);
    assert!(t.fs.block_cache().hits() > 0);
    assert!(t.fs.block_cache().bytes() <= t.fs.block_cache().cap());
    t.fs.release(fh).await.unwrap();
    let _ = before;
}

/// A small congruential generator: the same offsets on every run.
fn offsets(seed: u64, n: usize, span: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 16) % span
        })
        .collect()
}

/// An object far larger than the caches: scattered 4 KiB reads shrink the unit fetched to
/// the read (amplification 1 after a few reads), reads clustered in one region grow it to a
/// block (the region costs a few GETs), and every byte returned is right.
#[tokio::test]
async fn random_reads_learn_the_unit_from_the_pattern() {
    // 64 MiB of memory leaves a 4 MiB block cache: a 32 MiB object does not fit.
    let t = T::with(|c| c.memory_limit = 64 << 20);
    let data = common::pseudo_random(32 * MIB, 5);
    t.s().insert("db", data.clone());
    let ino = t.ino("db").await;
    let fh = t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let read = |off: u64| {
        let fs = t.fs.clone();
        async move { fs.read(fh, off, 4096).await.unwrap() }
    };
    let pages = offsets(7, 60, (32 * MIB / 4096) as u64);
    for (i, page) in pages.iter().enumerate() {
        let off = page * 4096;
        if i == 40 {
            let (f0, r0) = t.fs.read_amplification();
            for page in &pages[40..] {
                let got = read(page * 4096).await;
                assert_eq!(&got[..], &data[(page * 4096) as usize..][..4096]);
            }
            let (f1, r1) = t.fs.read_amplification();
            assert_eq!(r1 - r0, 20 * 4096);
            assert!(
                f1 - f0 <= 4 * 20 * 4096,
                "scattered reads fetch at most 4x what they read: {} bytes",
                f1 - f0
            );
            break;
        }
        let got = read(off).await;
        assert_eq!(&got[..], &data[off as usize..][..4096]);
    }
    let gets = t.s().count(Op::Get);
    // 32 reads 8 KiB apart in one region: the unit grows to a block.
    for i in 0..32u64 {
        let off = 20 * MIB as u64 + i * 8192;
        assert_eq!(&read(off).await[..], &data[off as usize..][..4096]);
    }
    let region = t.s().count(Op::Get) - gets;
    assert!(region <= 6, "{region} GETs for 32 reads within 256 KiB");
    t.fs.release(fh).await.unwrap();
}

/// The caches can hold the object: random reads fetch whole blocks in groups, so every
/// byte is fetched once and later reads are hits; a small object comes whole at once.
#[tokio::test]
async fn random_reads_of_an_object_the_caches_hold_turn_into_hits() {
    let t = T::new();
    let data = common::pseudo_random(16 * MIB, 6);
    t.s().insert("f", data.clone());
    let small = common::pseudo_random(3 * MIB + 5, 7);
    t.s().insert("small", small.clone());
    let fh =
        t.fs.open(t.ino("f").await, libc::O_RDONLY)
            .await
            .unwrap()
            .fh;
    for off in offsets(3, 300, (16 * MIB - 4096) as u64) {
        let got = t.fs.read(fh, off, 4096).await.unwrap();
        assert_eq!(&got[..], &data[off as usize..][..4096]);
    }
    // Groups of four blocks, and a block for a read that happened to look sequential.
    assert!(t.s().count(Op::Get) <= 8, "{} GETs", t.s().count(Op::Get));
    let (fetched, _) = t.fs.read_amplification();
    assert!(
        fetched <= 16 * MIB as u64,
        "each byte at most once: {fetched}"
    );
    let before = t.s().count(Op::Get);
    for off in offsets(4, 100, (16 * MIB - 4096) as u64) {
        let got = t.fs.read(fh, off, 4096).await.unwrap();
        assert_eq!(&got[..], &data[off as usize..][..4096]);
    }
    assert_eq!(t.s().count(Op::Get), before, "all hits now");
    t.fs.release(fh).await.unwrap();
    let fh =
        t.fs.open(t.ino("small").await, libc::O_RDONLY)
            .await
            .unwrap()
            .fh;
    let mut after_first = 0;
    for off in [2 * MIB as u64 + 9, 17, MIB as u64, 3 * MIB as u64] {
        let got = t.fs.read(fh, off, 4096).await.unwrap();
        let end = (off as usize + 4096).min(small.len());
        assert_eq!(&got[..], &small[off as usize..end]);
        if after_first == 0 {
            after_first = t.s().count(Op::Get);
        }
    }
    // (Opening it after another file of its directory may prefetch its first block too.)
    assert_eq!(
        t.s().count(Op::Get),
        after_first,
        "a small object whole at once"
    );
    t.fs.release(fh).await.unwrap();
}

/// Readers of one file on handles of their own are served at once, and a unit two of
/// them want at the same time is fetched once.
#[tokio::test]
async fn concurrent_random_readers_share_fetches_and_run_in_parallel() {
    let t = T::with(|c| c.memory_limit = 64 << 20);
    let data = common::pseudo_random(32 * MIB, 8);
    t.s().insert("f", data.clone());
    let ino = t.ino("f").await;
    let fhs = [
        t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh,
        t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh,
    ];
    t.s().delay(Op::Get, std::time::Duration::from_millis(200));
    let start = std::time::Instant::now();
    let (a, b, c) = tokio::join!(
        t.fs.read(fhs[0], 5 * MIB as u64, 4096),
        t.fs.read(fhs[1], 5 * MIB as u64 + 100, 4096),
        t.fs.read(fhs[1], 29 * MIB as u64, 4096),
    );
    assert!(
        start.elapsed() < std::time::Duration::from_millis(390),
        "in parallel"
    );
    assert_eq!(&a.unwrap()[..], &data[5 * MIB..][..4096]);
    assert_eq!(&b.unwrap()[..], &data[5 * MIB + 100..][..4096]);
    assert_eq!(&c.unwrap()[..], &data[29 * MIB..][..4096]);
    assert_eq!(
        t.s().count(Op::Get),
        2,
        "the shared unit once, the other once"
    );
    for fh in fhs {
        t.fs.release(fh).await.unwrap();
    }
}

#[tokio::test]
async fn an_overwrite_is_never_served_from_the_old_cache() {
    // TTL 0: every open asks S3 for the current ETag.
    let t = T::with(|c| c.metadata_ttl = std::time::Duration::ZERO);
    let v1 = common::pseudo_random(3 * MIB, 1);
    t.s().insert("f", v1.clone());
    assert_eq!(t.read_all("f").await, v1);
    assert!(
        t.fs.block_cache().bytes() > 0,
        "the first version is cached"
    );
    let v2 = common::pseudo_random(3 * MIB, 2);
    t.s().insert("f", v2.clone());
    assert_eq!(
        t.read_all("f").await,
        v2,
        "the new version, not cached blocks of the old"
    );
}

#[tokio::test]
async fn objects_over_the_single_copy_limit_are_copied_in_parts() {
    // S3 copies at most 5 GiB at once; the limit is lowered here to exercise the other path.
    let t = T::with(|c| c.max_single_copy = 6 * MIB as u64);
    let data = common::pseudo_random(13 * MIB, 5);
    t.s().insert("big", data.clone());
    t.fs.rename(ROOT, OsStr::new("big"), ROOT, OsStr::new("moved"), 0)
        .await
        .unwrap();
    assert_eq!(t.s().count(Op::Copy), 0);
    assert_eq!(t.s().count(Op::UploadPartCopy), 3);
    assert_eq!(t.s().peek("moved").unwrap(), Bytes::from(data.clone()));
    assert!(t.s().peek("big").is_none());
    let ino = t.ino("moved").await;
    let sa = pailfs::fs::setattr::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(
        t.s().count(Op::UploadPartCopy),
        6,
        "chmod is a multipart self-copy too"
    );
    assert_eq!(t.s().peek("moved").unwrap(), Bytes::from(data));
    assert_eq!(t.s().open_uploads(), 0);
}

#[tokio::test]
async fn a_full_spool_makes_writes_wait_then_fail_with_enospc() {
    let t = T::with(|c| {
        c.max_spool_bytes = 64 * 1024;
        c.spool_wait = std::time::Duration::from_millis(200);
    });
    let a = t.create("a").await;
    t.fs.write(a, 0, &[1u8; 60 * 1024]).await.unwrap();
    let b = t.create("b").await;
    let err = t.fs.write(b, 0, &[2u8; 8 * 1024]).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    // Closing the first file uploads it and frees its spool; the second can write now.
    t.fs.flush(a).await.unwrap();
    t.fs.release(a).await.unwrap();
    t.fs.write(b, 0, &[2u8; 8 * 1024]).await.unwrap();
    t.fs.flush(b).await.unwrap();
    t.fs.release(b).await.unwrap();
    assert_eq!(t.s().peek("b").unwrap().len(), 8 * 1024);
}

#[tokio::test]
async fn reading_a_directory_file_by_file_fetches_the_next_small_files_ahead() {
    let t = T::new();
    for i in 0..40 {
        t.s()
            .insert(&format!("d/f{i:02}"), format!("content of file {i}"));
    }
    t.s().insert("d/g-big", vec![7u8; 3 << 20]);
    assert_eq!(t.names("d").await.len(), 41, "the listing is cached");
    let gets = |t: &T| t.s().count(Op::Get);
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));

    // Opening files out of order prefetches nothing.
    assert_eq!(t.read_all("d/f20").await, b"content of file 20");
    assert_eq!(t.read_all("d/f03").await, b"content of file 3");
    settle().await;
    assert_eq!(gets(&t), 2);

    // Two in order: the next 16 small files are fetched (f20 is cached already)...
    assert_eq!(t.read_all("d/f04").await, b"content of file 4");
    settle().await;
    assert_eq!(gets(&t), 3 + 15);
    // ...and reading them costs no GET; reading on keeps 16 ahead, never the same one twice.
    for i in 5..=20 {
        assert_eq!(
            t.read_all(&format!("d/f{i:02}")).await,
            format!("content of file {i}").as_bytes()
        );
    }
    settle().await;
    assert_eq!(
        gets(&t),
        3 + 15 + 16,
        "no GET for f05..f20; f21..f36 ahead now"
    );
    for i in 21..40 {
        t.read_all(&format!("d/f{i:02}")).await;
    }
    settle().await;
    // Each file read (f03..f39) fetched exactly once, and g-big, within 16 of the last
    // ones, never: files larger than a block are not fetched ahead.
    assert_eq!(gets(&t), 37);
}

#[tokio::test]
async fn a_file_changed_since_the_listing_is_not_served_from_what_was_fetched_ahead() {
    let t = T::with(|c| c.metadata_ttl = std::time::Duration::from_millis(300));
    for i in 0..6 {
        t.s().insert(&format!("d/f{i}"), format!("old {i}"));
    }
    assert_eq!(t.names("d").await.len(), 6);
    t.read_all("d/f0").await;
    t.read_all("d/f1").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let gets = t.s().count(Op::Get);
    assert_eq!(gets, 6, "f2..f5 fetched ahead");
    // Another client replaces f3; once the metadata TTL has passed, the open sees it.
    t.s().insert("d/f3", "new content");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(t.read_all("d/f3").await, b"new content");
    assert_eq!(t.read_all("d/f2").await, b"old 2");
}

#[tokio::test]
async fn files_created_in_a_new_directory_need_no_lookup_request() {
    let t = T::new();
    let d =
        t.fs.mkdir(ROOT, OsStr::new("new"), 0o755, 0o022, 0, 0)
            .await
            .unwrap()
            .ino;
    let (heads, lists) = (t.s().count(Op::Head), t.s().count(Op::List));
    for i in 0..10 {
        let name = format!("f{i}");
        assert_eq!(
            t.fs.lookup(d, OsStr::new(&name)).await.unwrap_err().errno(),
            libc::ENOENT
        );
        let (_, fh) =
            t.fs.create(d, OsStr::new(&name), NewFile::plain(libc::O_WRONLY))
                .await
                .unwrap();
        t.fs.write(fh, 0, name.as_bytes()).await.unwrap();
        t.fs.flush(fh).await.unwrap();
        t.fs.release(fh).await.unwrap();
    }
    assert_eq!(t.s().count(Op::Head), heads, "no HEAD for the new names");
    assert_eq!(t.s().count(Op::List), lists, "no LIST for the new names");
    assert_eq!(t.s().count(Op::Put), 11, "the marker and one PUT per file");
    assert_eq!(t.names("new").await.len(), 10);
    assert_eq!(t.read_all("new/f7").await, b"f7");
}

#[tokio::test]
async fn many_lookups_in_one_directory_list_it_once_instead_of_probing_each_name() {
    let t = T::with(|c| c.fast_listing = true);
    for i in 0..300 {
        t.s().insert(&format!("d/f{i:03}"), "x");
    }
    let d = t.ino("d").await;
    let lookup = |name: String| {
        let fs = &t.fs;
        async move { fs.lookup(d, OsStr::new(&name)).await }
    };
    for i in 0..16 {
        lookup(format!("f{i:03}")).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let before = t.s().total_requests();
    for i in 16..300 {
        assert_eq!(lookup(format!("f{i:03}")).await.unwrap().stat.size, 1);
    }
    assert_eq!(
        lookup("absent".into()).await.unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        t.s().total_requests(),
        before,
        "after 16 probes the listing answers every lookup"
    );
}

#[tokio::test]
async fn lookups_in_exact_mode_after_the_listing_cost_no_list() {
    let t = T::new();
    for i in 0..100 {
        t.s().insert(&format!("d/f{i:03}"), "x");
    }
    let d = t.ino("d").await;
    for i in 0..16 {
        t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let lists = t.s().count(Op::List);
    for i in 16..100 {
        t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
            .await
            .unwrap();
    }
    assert_eq!(t.s().count(Op::List), lists, "no LIST per name any more");
}

#[tokio::test]
async fn attributes_set_before_the_first_close_ride_along_with_its_put() {
    // What `tar -x` does for every file: write, futimens, fchown, fchmod, close. The kernel
    // sends the three without the handle; they are stored with the one PUT at close.
    let t = T::new();
    let fh = t.create("f").await;
    let ino = t.ino("f").await;
    t.fs.write(fh, 0, b"hello").await.unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for sa in [
        pailfs::fs::setattr::SetAttr {
            mtime: Some(mtime),
            ..Default::default()
        },
        pailfs::fs::setattr::SetAttr {
            uid: Some(7),
            gid: Some(8),
            ..Default::default()
        },
        pailfs::fs::setattr::SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    ] {
        t.fs.setattr(ino, sa).await.unwrap();
    }
    assert_eq!(
        t.s().total_requests() - t.s().count(Op::Head) - t.s().count(Op::List),
        0
    );
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(t.s().count(Op::Put), 1);
    assert_eq!(t.s().count(Op::Copy), 0);
    let meta: UserMeta = t.s().peek_meta("f").unwrap();
    assert_eq!(meta["mode"], (libc::S_IFREG | 0o640).to_string());
    assert_eq!((meta["uid"].as_str(), meta["gid"].as_str()), ("7", "8"));
    let a = t.fs.getattr(ino).await.unwrap();
    assert_eq!(a.stat.mtime, mtime);
    // On a file with nothing left to upload, a change is stored at once.
    t.fs.setattr(
        ino,
        pailfs::fs::setattr::SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(t.s().count(Op::Copy), 1);
}

#[tokio::test]
async fn blocks_kept_on_disk_serve_a_remount_without_a_get() {
    let disk = tempfile::tempdir().unwrap();
    let mount_dir = pailfs::cache_dir::MountDir::at(disk.path());
    let dir = mount_dir.blocks();
    let with_disk = |c: &mut pailfs::fs::FsConfig| {
        c.dir = mount_dir.clone();
        c.disk_cache_size = 64 << 20;
    };
    let data: Vec<u8> = (0..3 * MIB + 100).map(|i| (i % 251) as u8).collect();
    let t = T::with(with_disk);
    t.s().insert("big", data.clone());
    assert_eq!(t.read_all("big").await, data);
    assert!(t.s().count(Op::Get) > 0);
    // The four blocks reach the disk in the background (each written to a hidden temporary
    // name, then renamed: only renamed ones count).
    let blocks = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    for _ in 0..200 {
        if blocks() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(blocks(), 4);
    drop(t);
    // A new mount over the same object (same key and ETag) reads it from disk.
    let t = T::with(with_disk);
    t.s().insert("big", data.clone());
    assert_eq!(t.read_all("big").await, data);
    assert_eq!(t.s().count(Op::Get), 0, "every block came from the disk");
    drop(t);
    // Another version of the object (another ETag) is read from S3.
    let t = T::with(with_disk);
    t.s().insert("other", "shifts the ETags");
    t.s().insert("big", vec![9u8; 2 * MIB]);
    assert_eq!(t.read_all("big").await, vec![9u8; 2 * MIB]);
    assert!(t.s().count(Op::Get) > 0);
}

/// A server that hands out a continuation token it gave before would make a listing go round
/// forever: the listing fails with EIO instead, and says why.
#[tokio::test]
async fn a_listing_that_repeats_a_token_fails_instead_of_going_round() {
    let t = T::new();
    t.s().insert("d/a", "x");
    t.s().insert("d/b", "y");
    let ino = t.ino("d").await;
    t.s().sticky_token(Some("again"));
    let fh = t.fs.opendir(ino).unwrap();
    let mut off = 0;
    let mut err = None;
    for _ in 0..100 {
        match t.fs.readdir(fh, off, 10, false).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => off = b.last().unwrap().offset,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("the listing went on");
    assert_eq!(e.errno(), libc::EIO);
    assert!(
        e.to_string().contains("continuation token it gave before"),
        "{}",
        e
    );
    let mut pages = pailfs::store::Pages::new(pailfs::store::ListRequest::flat("d/"));
    assert!(pages.next(t.s()).await.unwrap().is_some());
    assert!(pages.next(t.s()).await.is_err());
}

/// A directory rename whose new name would push a file created below it, and not uploaded
/// yet, past S3's 1,024-byte key is refused with `ENAMETOOLONG` before anything moves.
#[tokio::test]
async fn a_directory_rename_checks_the_keys_of_files_not_uploaded_yet() {
    let t = T::new();
    t.fs.mkdir(ROOT, OsStr::new("d"), 0o755, 0, 0, 0)
        .await
        .unwrap();
    let d = t.ino("d").await;
    let long = "f".repeat(1000);
    let (_, fh) =
        t.fs.create(d, OsStr::new(&long), NewFile::plain(libc::O_WRONLY))
            .await
            .unwrap();
    t.fs.write(fh, 0, b"unsaved").await.unwrap();
    let new = "n".repeat(30);
    let e =
        t.fs.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new(&new), 0)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::ENAMETOOLONG, "{e}");
    assert!(t.s().keys().iter().all(|k| !k.starts_with("nnn")));
    t.fs.flush(fh).await.unwrap();
    t.fs.release(fh).await.unwrap();
    assert_eq!(t.read_all(&format!("d/{long}")).await, b"unsaved");
}

/// `d/f000`.. `d/f{n-1}` in the store, each looked up once (so the mount knows them), then
/// the clock moved past the TTL.
async fn known_then_expired(t: &T, n: usize) -> u64 {
    for i in 0..n {
        t.s().insert(&format!("d/f{i:03}"), format!("file {i}"));
    }
    let d = t.ino("d").await;
    for i in 0..n {
        t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
            .await
            .unwrap();
    }
    t.fs.namespace()
        .clock()
        .advance(std::time::Duration::from_secs(61));
    d
}

/// A warm `stat` storm after the TTL ran out: one LIST page confirms up to 900 known files
/// (same ETag, same date), not a HEAD each; the attributes are the same.
#[tokio::test]
async fn expired_entries_of_a_big_directory_are_confirmed_by_listing() {
    let t = T::new();
    let d = known_then_expired(&t, 300).await;
    let (heads, lists) = (t.s().count(Op::Head), t.s().count(Op::List));
    for i in 0..300 {
        let a =
            t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
                .await
                .unwrap();
        assert_eq!(a.stat.size, format!("file {i}").len() as u64);
    }
    assert_eq!(t.s().count(Op::Head) - heads, 0, "no HEAD");
    assert_eq!(
        t.s().count(Op::List) - lists,
        1,
        "one page of 1,000 covers 300 names"
    );
}

/// What the listing shows changed is not confirmed: a new version (new ETag) and a copy onto
/// itself with new metadata (same ETag, later date) are asked with a HEAD and shown as S3 has
/// them; the rest is confirmed.
#[tokio::test]
async fn a_listing_never_confirms_an_entry_changed_elsewhere() {
    let t = T::new();
    let d = known_then_expired(&t, 100).await;
    t.s().insert("d/f005", "changed elsewhere");
    let mode: UserMeta = [("mode".to_string(), "33261".to_string())].into(); // 0755
    t.s().restamp("d/f006", mode);
    let heads = t.s().count(Op::Head);
    for i in 0..100 {
        t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
            .await
            .unwrap();
    }
    let f005 = t.fs.lookup(d, OsStr::new("f005")).await.unwrap();
    let f006 = t.fs.lookup(d, OsStr::new("f006")).await.unwrap();
    assert_eq!(f005.stat.size, 17);
    assert_eq!(f006.stat.perm, 0o755);
    assert_eq!(
        t.s().count(Op::Head) - heads,
        2,
        "a HEAD for each changed entry only"
    );
}

/// Opening a file checks its version with one HEAD (close-to-open), in a big directory too:
/// that check is for one file, so it never becomes a listing of the directory (which cost a
/// LIST page of every sibling per open: reading 1,000 small files ran at an eighth of the speed).
#[tokio::test]
async fn an_open_in_a_big_directory_is_checked_with_one_head_not_a_listing() {
    let t = T::new();
    for i in 0..300 {
        t.s().insert(&format!("d/f{i:03}"), format!("file {i}"));
    }
    let d = t.ino("d").await;
    let mut inos = Vec::new();
    for i in 0..300 {
        inos.push(
            t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
                .await
                .unwrap()
                .ino,
        );
    }
    // The lookups' HEADs ahead (`prefetch_meta`) finish first.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (heads, lists) = (t.s().count(Op::Head), t.s().count(Op::List));
    for ino in inos {
        let fh = t.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
        t.fs.release(fh).await.unwrap();
    }
    assert_eq!(t.s().count(Op::List) - lists, 0, "no listing");
    assert_eq!(t.s().count(Op::Head) - heads, 300, "a HEAD per open");
}

/// A `chmod` after the TTL reads the file's own stored metadata first (it rewrites all of
/// it): one HEAD, not a listing of its big directory.
#[tokio::test]
async fn a_chmod_in_a_big_directory_reads_its_metadata_with_one_head() {
    let t = T::new();
    let d = known_then_expired(&t, 300).await;
    let ino = t.fs.lookup(d, OsStr::new("f150")).await.unwrap().ino;
    t.fs.namespace()
        .clock()
        .advance(std::time::Duration::from_secs(61));
    let (heads, lists) = (t.s().count(Op::Head), t.s().count(Op::List));
    let sa = pailfs::fs::setattr::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    t.fs.setattr(ino, sa).await.unwrap();
    assert_eq!(t.s().count(Op::List) - lists, 0, "no listing");
    assert_eq!(t.s().count(Op::Head) - heads, 1, "one HEAD");
    assert_eq!(
        t.s().peek_meta("d/f150").unwrap()["mode"],
        (libc::S_IFREG | 0o600).to_string()
    );
}

/// A small directory is asked name by name: a page of 1,000 costs more than a few HEADs.
#[tokio::test]
async fn expired_entries_of_a_small_directory_are_asked_with_a_head() {
    let t = T::new();
    let d = known_then_expired(&t, 10).await;
    let heads = t.s().count(Op::Head);
    for i in 0..10 {
        t.fs.lookup(d, OsStr::new(&format!("f{i:03}")))
            .await
            .unwrap();
    }
    assert_eq!(t.s().count(Op::Head) - heads, 10);
}

/// `readdirplus` HEADs files ahead of the kernel, but no further than 1,000 entries, and the
/// kernel going on with plain `readdir` (as `find` and `ls` do after the first reply) stops
/// them: a listing of names never costs a HEAD per file.
#[tokio::test]
async fn heads_ahead_stop_when_the_kernel_reads_names_only() {
    let t = T::new();
    for i in 0..3000 {
        t.s().insert(&format!("d/f{i:04}"), "x");
    }
    let d = t.ino("d").await;
    let fh = t.fs.opendir(d).unwrap();
    let first = t.fs.readdir(fh, 0, 20, true).await.unwrap();
    let mut off = first.last().unwrap().offset;
    loop {
        let batch = t.fs.readdir(fh, off, 100, false).await.unwrap();
        let Some(last) = batch.last() else { break };
        off = last.offset;
    }
    t.fs.releasedir(fh);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let heads = t.s().count(Op::Head);
    assert!(heads <= 1000, "{heads} HEADs for a listing of names");
}

/// `readdirplus` shows a `chmod` made elsewhere on a file the mount knows: a copy onto itself
/// keeps a single-part object's ETag, but the listing's date moved, so the entry is asked
/// again instead of kept.
#[tokio::test]
async fn readdirplus_sees_a_chmod_made_elsewhere() {
    let t = T::new();
    for i in 0..3 {
        t.s().insert(&format!("d/f{i}"), "x");
    }
    let d = t.ino("d").await;
    for i in 0..3 {
        t.fs.lookup(d, OsStr::new(&format!("f{i}"))).await.unwrap();
    }
    let mode: UserMeta = [("mode".to_string(), "33261".to_string())].into(); // 0755
    t.s().restamp("d/f1", mode);
    let fh = t.fs.opendir(d).unwrap();
    let entries = t.fs.readdir(fh, 0, 10, true).await.unwrap();
    t.fs.releasedir(fh);
    let f1 = entries.iter().find(|e| e.name == "f1").unwrap();
    assert_eq!(f1.attr.stat.perm, 0o755);
    let f0 = entries.iter().find(|e| e.name == "f0").unwrap();
    assert_eq!(f0.attr.stat.perm, 0o644);
}
