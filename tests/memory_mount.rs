//! The real FUSE filesystem mounted over the in-memory store, in this process: what the
//! kernel shows applications (errnos at close and fsync, declined calls) tested fast and with
//! failures injected where they are hard to cause on a real server. Needs root and /dev/fuse,
//! not Garage.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pailfs::cli::{Cli, Command};
use pailfs::config::{MountConfig, is_mounted};
use pailfs::run::{Host, Ready, serve};
use pailfs::store::StoreError;
use pailfs::store::memory::{MemoryStore, Op};

/// A mount of a memory store, served by a thread of this process; unmounted on drop.
struct MemMount {
    store: Arc<MemoryStore>,
    dir: PathBuf,
    served: Option<std::thread::JoinHandle<Result<(), pailfs::error::CliError>>>,
    _tmp: tempfile::TempDir,
}

impl MemMount {
    fn new(extra: &[&str]) -> MemMount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let cache = tmp.path().join("cache");
        let mut argv = vec!["pailfs", "mount", "memory-bucket", dir.to_str().unwrap()];
        argv.extend(["--foreground", "--cache-dir", cache.to_str().unwrap()]);
        argv.extend(extra);
        let Command::Mount(args) = Cli::parse_from(argv).command else {
            unreachable!("a mount command")
        };
        let cfg = MountConfig::from_args(&args).unwrap();
        let store = Arc::new(MemoryStore::new());
        let shared = store.clone();
        let served = std::thread::spawn(move || {
            let mut host = Host {
                pipe: None,
                on_signals: false,
            };
            serve(&cfg, Ready(shared), &mut host)
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let abs = std::fs::canonicalize(&dir).unwrap();
        while !is_mounted(&abs) {
            assert!(
                !served.is_finished(),
                "the mount ended: {:?}",
                served.join().unwrap()
            );
            assert!(Instant::now() < deadline, "no mount after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        MemMount {
            store,
            dir: abs,
            served: Some(served),
            _tmp: tmp,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for MemMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        if let Some(t) = self.served.take() {
            let r = t.join().unwrap();
            if !std::thread::panicking() {
                r.unwrap();
            }
        }
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn files_written_through_the_kernel_reach_the_memory_store() {
    let m = MemMount::new(&[]);
    std::fs::create_dir(m.p("d")).unwrap();
    std::fs::write(m.p("d/a.txt"), b"hello").unwrap();
    assert_eq!(m.store.peek("d/a.txt").as_deref(), Some(&b"hello"[..]));
    let names: Vec<_> = std::fs::read_dir(m.p("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["a.txt"]);
    assert_eq!(std::fs::read(m.p("d/a.txt")).unwrap(), b"hello");
}

#[test]
fn a_refused_upload_fails_fsync_and_stores_nothing() {
    let m = MemMount::new(&[]);
    m.store.fail(
        Op::Put,
        Some("refused"),
        10,
        StoreError::AccessDenied("the policy says no".into()),
    );
    let mut f = std::fs::File::create(m.p("refused.txt")).unwrap();
    f.write_all(b"data that cannot be stored").unwrap();
    let e = f.sync_all().unwrap_err();
    assert_eq!(errno(&e), libc::EACCES, "{e}");
    drop(f);
    assert_eq!(m.store.peek("refused.txt"), None);
    assert!(m.store.count(Op::Put) >= 1);
}

#[test]
fn a_throttled_read_is_eio_and_reads_work_once_it_ends() {
    let m = MemMount::new(&[]);
    m.store.insert("slow.bin", vec![7u8; 4096]);
    m.store.fail(
        Op::Get,
        Some("slow"),
        1000,
        StoreError::Throttled("SlowDown".into()),
    );
    let first = std::fs::read(m.p("slow.bin"));
    assert_eq!(errno(&first.unwrap_err()), libc::EIO);
    m.store.clear_faults();
    assert_eq!(std::fs::read(m.p("slow.bin")).unwrap(), vec![7u8; 4096]);
}

#[test]
fn declined_calls_answer_a_definite_errno() {
    let m = MemMount::new(&[]);
    std::fs::write(m.p("f"), b"x").unwrap();
    let link = std::fs::hard_link(m.p("f"), m.p("g")).unwrap_err();
    assert_eq!(errno(&link), libc::EPERM, "{link}");
    // mknod of a regular file is a create: stored before it returns.
    let plain = std::ffi::CString::new(m.p("plain").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(plain.as_ptr(), libc::S_IFREG | 0o600, 0) },
        0
    );
    assert_eq!(m.store.peek("plain").as_deref(), Some(&b""[..]));
    assert!(
        !std::fs::metadata(m.p("plain"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

fn c_path(p: PathBuf) -> std::ffi::CString {
    std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap()
}

/// What `rsync -a` and backups copy: FIFOs, sockets and device nodes are stored as s3fs
/// stores them (an empty object, the type in `mode`, the device number in `rdev`), shown with
/// their type and number, and never usable as devices (the mount is `nodev`).
#[test]
fn fifos_sockets_and_device_nodes_are_stored_with_their_type() {
    let m = MemMount::new(&[]);
    assert_eq!(
        unsafe { libc::mkfifo(c_path(m.p("fifo")).as_ptr(), 0o640) },
        0
    );
    let dev = libc::makedev(1, 3);
    let null = c_path(m.p("null"));
    assert_eq!(
        unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o644, dev) },
        0
    );
    let _sock = std::os::unix::net::UnixListener::bind(m.p("sock")).unwrap();
    for (key, mode) in [
        ("fifo", libc::S_IFIFO | 0o640),
        ("null", libc::S_IFCHR | 0o644),
    ] {
        assert_eq!(m.store.peek(key).as_deref(), Some(&b""[..]), "{key}");
        let meta = m.store.peek_meta(key).unwrap();
        assert_eq!(meta["mode"], mode.to_string(), "{key}");
    }
    assert_eq!(m.store.peek_meta("null").unwrap()["rdev"], dev.to_string());
    assert!(
        std::fs::metadata(m.p("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::metadata(m.p("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    let null_meta = std::fs::metadata(m.p("null")).unwrap();
    assert!(null_meta.file_type().is_char_device());
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&null_meta), dev);
    let open = std::fs::File::open(m.p("null")).unwrap_err();
    assert_eq!(errno(&open), libc::EACCES, "nodev: {open}");
    let listed: Vec<_> = std::fs::read_dir(m.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_type().unwrap())
        .collect();
    assert!(listed.iter().any(|t| t.is_fifo()) && listed.iter().any(|t| t.is_char_device()));
}

/// Names longer than 255 bytes work as far as their key fits in S3's 1,024 bytes (as in s3fs);
/// one whose key would not answers `ENAMETOOLONG` and stores nothing, and `statfs` reports
/// FUSE's 1,024-byte name limit.
#[test]
fn names_up_to_1024_bytes_work_where_the_key_fits() {
    let m = MemMount::new(&[]);
    let long = "n".repeat(600);
    std::fs::write(m.p(&long), b"long name").unwrap();
    assert_eq!(m.store.peek(&long).as_deref(), Some(&b"long name"[..]));
    std::fs::create_dir(m.p("d")).unwrap();
    let too_long = format!("d/{}", "x".repeat(1023));
    let e = std::fs::write(m.p(&too_long), b"x").unwrap_err();
    assert_eq!(errno(&e), libc::ENAMETOOLONG, "{e}");
    let e = std::fs::create_dir(m.p(&"y".repeat(1024))).unwrap_err();
    assert_eq!(
        errno(&e),
        libc::ENAMETOOLONG,
        "a marker needs one byte more: {e}"
    );
    assert!(
        m.store
            .keys()
            .iter()
            .all(|k| !k.contains("xxxx") && !k.contains("yyyy"))
    );
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let path = c_path(m.p(""));
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_namemax, 1024);
}

/// A directory's link count is 2 plus its subdirectories, as find and pjdfstest expect.
#[test]
fn a_directory_counts_its_subdirectories_in_its_link_count() {
    use std::os::unix::fs::MetadataExt;
    let m = MemMount::new(&[]);
    std::fs::create_dir(m.p("d")).unwrap();
    assert_eq!(std::fs::metadata(m.p("d")).unwrap().nlink(), 2);
    std::fs::create_dir(m.p("d/a")).unwrap();
    std::fs::create_dir(m.p("d/b")).unwrap();
    std::fs::write(m.p("d/f"), b"").unwrap();
    assert_eq!(std::fs::metadata(m.p("d")).unwrap().nlink(), 4);
    std::fs::remove_dir(m.p("d/a")).unwrap();
    assert_eq!(std::fs::metadata(m.p("d")).unwrap().nlink(), 3);
}

#[test]
fn a_read_only_mount_refuses_writes_with_erofs() {
    let m = MemMount::new(&["--read-only"]);
    m.store.insert("kept", "as it was");
    let e = std::fs::write(m.p("new"), b"x").unwrap_err();
    assert_eq!(errno(&e), libc::EROFS, "{e}");
    assert_eq!(std::fs::read(m.p("kept")).unwrap(), b"as it was");
    assert_eq!(m.store.keys(), vec!["kept".to_string()]);
}
