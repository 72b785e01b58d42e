//! A mount is a trust boundary (issue 12): local users on one side, whoever can write to the
//! bucket on the other. Each case here checks one thing a review found open, on a real mount.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use pailfs::store::{ObjectStore, UserMeta};

use crate::common::*;

fn put(env: &S3Env, key: &str, data: &[u8], meta: &[(&str, String)]) {
    let meta: UserMeta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let rt = rt();
    let store = rt.block_on(env.store());
    rt.block_on(store.put(key, data.to_vec().into(), &meta))
        .unwrap();
}

/// Every directory and file under `root`, with its mode bits.
fn modes(root: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path().display().to_string(), m.mode() & 0o777, m.is_dir()));
        }
    }
    out
}

/// The cache directory holds what users write: 0700 directories and 0600 files, even for an
/// open file being written (its spool) and with the disk block cache; a cache directory others
/// could read is made private at mount, with a notice.
#[test]
fn cached_data_is_private() {
    let prefix = unique_prefix("private");
    put(
        &S3Env::get(),
        &format!("{prefix}big"),
        &pseudo_random(3 << 20, 1),
        &[],
    );
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = cache.path().join("pailfs.log");
    let source = format!("{}:{prefix}", S3Env::get().bucket);
    let mnt = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pailfs_bin())
        .args(["mount", &source])
        .arg(mnt.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("--log-file")
        .arg(&log)
        .args(["--disk-cache-size", "64M"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("now private (0700)"), "no notice: {stderr}");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(mnt.path().join("secret.txt"))
        .unwrap();
    use std::io::Write;
    f.write_all(b"being written").unwrap();
    let _ = std::fs::read(mnt.path().join("big")).unwrap();
    let found = modes(cache.path());
    let files = found.iter().filter(|(_, _, d)| !d).count();
    assert!(
        files >= 4,
        "spool, journal, block, lock and log expected: {found:?}"
    );
    for (path, mode, dir) in &found {
        let want = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} is {mode:o}");
    }
    assert_eq!(
        std::fs::metadata(cache.path()).unwrap().mode() & 0o777,
        0o700
    );
    drop(f);
    sh(&format!("umount {}", mnt.path().display()));
}

/// A cache directory another user owns is refused, with the way out.
#[test]
fn a_cache_directory_of_another_user_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(cache.path(), Some(65534), Some(65534)).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pailfs_bin())
        .args(["mount", &S3Env::get().bucket])
        .arg(mnt.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to uid 65534") && err.contains("--cache-dir"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Setuid and setgid bits and owners in object metadata come from whoever can write to the
/// bucket: the bits are not shown unless asked for, owners can be ignored.
#[test]
fn stored_setuid_bits_and_owners_are_not_trusted_blindly() {
    let env = S3Env::get();
    let prefix = unique_prefix("setuid");
    let mode = (libc::S_IFREG | 0o6755).to_string();
    put(
        &env,
        &format!("{prefix}suid"),
        b"#!/bin/sh\n",
        &[("mode", mode), ("uid", "0".into()), ("gid", "0".into())],
    );
    let stat = |extra: &[&str]| {
        let m = Mount::with_args(&prefix, extra);
        let md = std::fs::metadata(m.p("suid")).unwrap();
        (md.mode() & 0o7777, md.uid())
    };
    assert_eq!(stat(&[]), (0o755, 0));
    assert_eq!(stat(&["--keep-setuid-bits"]), (0o6755, 0));
    assert_eq!(
        stat(&["--ignore-stored-owners", "--uid", "4321"]),
        (0o755, 4321)
    );
}

/// An object that claims to be a symlink but is larger than any path is refused, never read
/// into memory; everything else in the directory still lists.
#[test]
fn a_huge_fake_symlink_is_refused() {
    let env = S3Env::get();
    let prefix = unique_prefix("fakelink");
    let mode = (libc::S_IFLNK | 0o777).to_string();
    put(
        &env,
        &format!("{prefix}link"),
        &vec![b'a'; 8192],
        &[("mode", mode)],
    );
    put(&env, &format!("{prefix}plain"), b"ok", &[]);
    let m = Mount::new(&prefix);
    let err = std::fs::read_link(m.p("link")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let ls = std::process::Command::new("ls")
        .arg("-l")
        .arg(m.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("plain"));
    assert_eq!(std::fs::read(m.p("plain")).unwrap(), b"ok");
}

/// SIGHUP (logrotate, a closed terminal) reopens the log file and the mount goes on.
#[test]
fn sighup_reopens_the_log_file() {
    let m = Mount::new(&unique_prefix("hup"));
    std::fs::write(m.p("before"), "x").unwrap();
    let rotated = m.log.with_extension("log.1");
    std::fs::rename(&m.log, &rotated).unwrap();
    unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !m.log.exists() {
        assert!(std::time::Instant::now() < deadline, "no new log file");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(m.p("after"), "y").unwrap();
    assert_eq!(std::fs::read_to_string(m.p("after")).unwrap(), "y");
    assert!(m.log_text().contains("reopened the log file"));
    assert_eq!(std::fs::metadata(&m.log).unwrap().mode() & 0o777, 0o600);
}

/// A directory of 100,000 keys listed under `--memory-limit 64M` stays under it, in the
/// default mode (`ls`, `ls -l`) and in case-insensitive mode (`ls`), where a listing too large
/// for the budget is not held whole. Before, the listing cache and the inode table were
/// outside the budget: `ls -l` of 200,000 keys took 165 MiB, case-insensitive `ls` 338 MiB.
#[test]
fn a_huge_directory_is_listed_within_the_memory_limit() {
    const N: usize = 100_000;
    let env = S3Env::get();
    let prefix = "t/big100k/";
    let rt = rt();
    let store = rt.block_on(env.store());
    let last = format!("{prefix}f{:06}", N - 1);
    if rt.block_on(store.head(&last)).is_err() {
        use futures::stream::{self, StreamExt};
        rt.block_on(async {
            stream::iter(0..N)
                .map(|i| {
                    let store = &store;
                    async move {
                        let key = format!("{prefix}f{i:06}");
                        store.put(&key, "".into(), &UserMeta::new()).await.unwrap();
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
        });
    }
    for (extra, long) in [(&[][..], true), (&["--case-insensitive"][..], false)] {
        let mut args = vec!["--memory-limit", "64M"];
        args.extend_from_slice(extra);
        let m = Mount::with_args(prefix, &args);
        let names = std::fs::read_dir(m.path()).unwrap().count();
        assert_eq!(names, N);
        if long {
            let out = std::process::Command::new("ls")
                .arg("-l")
                .arg(m.path())
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), N + 1);
        }
        let peak = m.peak_rss();
        assert!(peak < 64 << 20, "{extra:?}: peak RSS {} MiB", peak >> 20);
    }
}
