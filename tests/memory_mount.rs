//! The real FUSE filesystem mounted over the in-memory store, in this process: what the
//! kernel shows applications (errnos at close and fsync, declined calls) tested fast and with
//! failures injected where they are hard to cause on a real server. Needs root and /dev/fuse,
//! not Garage.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
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
    let fifo = std::ffi::CString::new(m.p("fifo").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(errno(&std::io::Error::last_os_error()), libc::EPERM);
    assert!(!Path::new(&m.p("fifo")).exists());
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

#[test]
fn a_read_only_mount_refuses_writes_with_erofs() {
    let m = MemMount::new(&["--read-only"]);
    m.store.insert("kept", "as it was");
    let e = std::fs::write(m.p("new"), b"x").unwrap_err();
    assert_eq!(errno(&e), libc::EROFS, "{e}");
    assert_eq!(std::fs::read(m.p("kept")).unwrap(), b"as it was");
    assert_eq!(m.store.keys(), vec!["kept".to_string()]);
}
